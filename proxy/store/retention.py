"""Keep the database bounded: prune old request rows, events and minute buckets in small batches."""
from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from .db import transaction

DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    """How long each kind of history is kept, in days (0 keeps it forever)."""

    requests_days: float = 30.0
    events_days: float = 30.0
    stats_days: float = 400.0
    batch: int = 2000  # rows per transaction: short enough never to hold up the writer


def _prune(db: Database, table: str, column: str, cutoff: float, key: str, batch: int) -> int:
    with transaction(db):
        cur = db.execute(
            f"DELETE FROM {table} WHERE {key} IN "
            f"(SELECT {key} FROM {table} WHERE {column} < ? LIMIT ?)", (cutoff, batch))
        return cur.rowcount or 0


def prune_once(db: Database, now: float, policy: Retention) -> int:
    """Delete at most one batch per table of what is past its age; return rows deleted.

    Called again and again (the writer does so between its batches), it drains any
    backlog without ever holding the write lock for long.
    """
    deleted = 0
    if policy.requests_days:
        deleted += _prune(db, "requests", "started_at", now - policy.requests_days * DAY, "seq",
                          policy.batch)
    if policy.events_days:
        deleted += _prune(db, "events", "ts", now - policy.events_days * DAY, "id", policy.batch)
    if policy.stats_days:
        deleted += _prune(db, "stats_minute", "minute", (now - policy.stats_days * DAY) // 60,
                          "rowid", policy.batch)
    return deleted


def close_interrupted(db: Database, now: float) -> int:
    """Mark requests left in flight by a previous run (a crash, a SIGKILL) as interrupted."""
    with transaction(db):
        cur = db.execute(
            "UPDATE requests SET status = 499, ended_at = coalesce(ended_at, ?), "
            "error_class = 'interrupted', error_message = 'the proxy stopped before it finished' "
            "WHERE status IS NULL AND started_at < ?", (now, now))
        return cur.rowcount or 0
