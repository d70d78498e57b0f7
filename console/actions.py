"""Make the console's changes through the same store functions as the CLI, in short transactions."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from sqlite_utils import Database

from proxy.store.db import open_db
from proxy.store.limits import set_limit
from proxy.store.schema import check_schema


class Actions:
    """Own the console's one read-write connection, opened only when the first change is made.

    Each store function runs its own `BEGIN IMMEDIATE` transaction of a few statements, so the
    proxy's writer waits milliseconds at most; the connection's busy_timeout covers the rare
    moment the writer holds the lock.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path  # a SQLite path or a postgresql:// URL, as open_db takes it
        self._db: Database | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(db, *args)` on the read-write connection and return its result."""
        with self._lock:
            if self._db is None:
                db = open_db(self.path, create=False)
                check_schema(db)
                self._db = db
            return fn(self._db, *args)

    def close(self) -> None:
        """Close the connection if it was opened."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def set_limits(db: Database, ref: str, model: str, changes: dict[str, int]) -> dict[str, int]:
    """Set several operator limits of one key, as `gemini-proxy keys cap` does; return them.

    One `set_limit` each (its own transaction and event), in the order given: a refusal
    stops there, leaving the ones before it set, which the refresh then shows.
    """
    for kind, value in changes.items():
        set_limit(db, ref, kind, value, model)
    return changes
