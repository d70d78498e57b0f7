"""Remember which Google key owns an uploaded file or a cached content.

A file uploaded with one key is invisible to the others, so later requests that name it must
go out with the same key. The hot path reads pins from the pool view; the writer stores
them with `write_pins`, the one place their SQL lives.
"""
from __future__ import annotations

import sqlite3
from typing import Iterable

from sqlite_utils import Database

from .db import LOCK_PINS, fetch_one, transaction
from .pg import PgConnection
from .util import now

_SQL_UNPIN = "DELETE FROM pins WHERE name = ? AND key_id != ?"
_SQL_PIN = "INSERT INTO pins (name, key_id, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING"


def write_pins(conn: sqlite3.Connection, pins: Iterable[tuple[str, int, float]]) -> None:
    """Store (name, key_id, created_at) pins inside the caller's transaction.

    Pinning to a different key gives the pin a new seq, so pools that only fetch pins newer
    than the last seq they saw still learn about the change; re-pinning to the same key is a
    no-op.
    """
    rows = list(pins)
    if rows and isinstance(conn, PgConnection):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_PINS,))  # seq order = commit order
    conn.executemany(_SQL_UNPIN, [(name, key_id) for name, key_id, _ in rows])
    conn.executemany(_SQL_PIN, rows)


def pin(db: Database, name: str, key_id: int, *, ts: float | None = None) -> None:
    """Record that `name` (e.g. "files/abc123") belongs to key `key_id` (see write_pins)."""
    with transaction(db):
        write_pins(db.conn, [(name, key_id, ts if ts is not None else now())])


def lookup(db: Database, name: str) -> int | None:
    """Return the id of the key `name` is pinned to, or None."""
    row = fetch_one(db, "SELECT key_id FROM pins WHERE name = ?", (name,))
    return None if row is None else int(row["key_id"])
