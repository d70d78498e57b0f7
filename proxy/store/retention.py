"""Keep the database bounded: prune old request rows, events and minute buckets in small batches."""
from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from .db import LOCK_RETENTION, exclusive, is_postgres, transaction
from .util import pacific_day

DAY = 86400.0
# Rests that ended this long ago go (the console shows only running ones).
REST_GRACE = 60.0
# The pool's change log is read every second; an hour of it is plenty for a slow reader
# (one that falls further behind reads everything again).
CHANGES_KEEP = 3600.0


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
    backlog without ever holding the write lock for long. On PostgreSQL one host prunes at a
    time: the others find the lock held, delete nothing and try again later.
    """
    with exclusive(db, LOCK_RETENTION) as mine:
        return _prune_all(db, now, policy) if mine else 0


def _prune_all(db: Database, now: float, policy: Retention) -> int:
    deleted = 0
    if policy.requests_days:
        deleted += _prune(db, "requests", "started_at", now - policy.requests_days * DAY, "seq",
                          policy.batch)
    if policy.events_days:
        deleted += _prune(db, "events", "ts", now - policy.events_days * DAY, "id", policy.batch)
    if policy.stats_days:
        deleted += _prune(db, "stats_minute", "minute", (now - policy.stats_days * DAY) // 60,
                          "rowid", policy.batch)
    deleted += _prune(db, "key_health", "cool_until", now - REST_GRACE, "rowid", policy.batch)
    with transaction(db):  # the newest entry stays: readers take their cursor from it
        deleted += db.execute(
            "DELETE FROM key_changes WHERE seq IN (SELECT seq FROM key_changes WHERE ts < ? "
            "AND seq < (SELECT max(seq) FROM key_changes) LIMIT ?)",
            (now - CHANGES_KEEP, policy.batch)).rowcount or 0
        # Usage counters matter for the day Google counts in; yesterday's stay for a late reader.
        deleted += db.execute(
            "DELETE FROM quota_usage WHERE day < ?", (pacific_day(now - DAY),)).rowcount or 0
    return deleted


def close_interrupted(db: Database, now: float, host: str, worker_pid: int | None = None) -> int:
    """Mark this host's requests left in flight as interrupted: by a previous run (a crash, a
    SIGKILL), or, given `worker_pid`, by that one worker process, which has died.

    Only rows `host` wrote: on a shared PostgreSQL database another host's rows in flight
    are still being served. On SQLite (one host) rows from before hosts were recorded are
    this host's too.
    """
    where, params = "status IS NULL AND started_at < ? AND (host = ?", [now, host]
    where += " OR host IS NULL)" if not is_postgres(db) else ")"
    message = "the proxy stopped before it finished"
    if worker_pid is not None:
        where += " AND worker_pid = ?"
        params.append(worker_pid)
        message = "the worker process serving it stopped before it finished"
    with transaction(db):
        cur = db.execute(
            "UPDATE requests SET status = 499, ended_at = coalesce(ended_at, ?), "
            f"error_class = 'interrupted', error_message = ? WHERE {where}",
            (now, message, *params))
        return cur.rowcount or 0
