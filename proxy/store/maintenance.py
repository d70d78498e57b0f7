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


# Tables whose row counts `db check` reports on PostgreSQL.
COUNTED = ("google_keys", "users", "requests", "events", "stats_minute", "pins", "workers")


def pg_check(db: Database) -> list[str]:
    """Check a PostgreSQL database: reachable, schema current; return report lines (problems raise)."""
    from .schema import applied, check_schema

    version = db.execute("SHOW server_version").fetchone()[0]
    check_schema(db)
    lines = [f"connected: PostgreSQL {version}", f"schema: {applied(db)[-1]} ({len(applied(db))} migrations)"]
    for table in COUNTED:
        lines.append(f"{table}: {db.execute(f'SELECT count(*) FROM {table}').fetchone()[0]} rows")
    return lines


def pg_dump_command(url: str, dest: str | Path) -> str:
    """Return the pg_dump command that backs up `url` to `dest`, its password masked."""
    from .pg import mask_url

    return f"pg_dump --format=custom --file={dest} '{mask_url(url)}'"
