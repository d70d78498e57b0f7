"""Online backup and integrity checks of the database."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Callable

from sqlite_utils import Database


def backup(db: Database, dest: str | Path, *, progress: Callable[[int, int], None] | None = None
           ) -> Path:
    """Copy the live database to `dest` consistently while the proxy keeps writing.

    Uses SQLite's online backup API in small steps, so writers are held up for moments,
    not for the whole copy. The copy is created with mode 0600 like the original.
    """
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose a new file name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    target = sqlite3.connect(dest)
    try:
        def step(status: int, remaining: int, total: int) -> None:
            if progress:
                progress(total - remaining, total)

        db.conn.backup(target, pages=256, progress=step)
        target.execute("PRAGMA journal_mode=DELETE")  # a backup is one self-contained file
    finally:
        target.close()
    return dest


def integrity_check(db: Database) -> list[str]:
    """Run SQLite's integrity and foreign-key checks; return the problems (empty when sound)."""
    problems = [row[0] for row in db.execute("PRAGMA integrity_check").fetchall()
                if row[0] != "ok"]
    problems += [f"foreign key: {row}" for row in db.execute("PRAGMA foreign_key_check").fetchall()]
    return problems
