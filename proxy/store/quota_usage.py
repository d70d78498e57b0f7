"""Running usage counters, shared by every worker: what the pool paces keys and users by.

Each worker process counts its own sends and tokens in memory (the pool, exactly and at
once) and publishes them through its writer as one `quota_usage` row per (Pacific day, key,
model) and per (day, user) that it used: its sends and input tokens in 5-second slots over
the last minute, and its totals for the day. The writer owns its rows outright, so it writes
absolute values (a retried batch cannot count twice), and stamps each batch with a `seq` one
above any before it. A pool reads only the rows with a seq above the last one it saw, adds up
the other workers' rows of those pairs, and keeps its own counts from memory. Nothing here
re-sums a day of history: "today" is a column.

Lag: another worker's sends reach a pool after its writer's next batch (WRITER_INTERVAL) and
the pool's next refresh (POOL_REFRESH), about 1.2 s with the defaults; a slot counts whole
while any part of it is inside the minute, so the count errs high by at most a slot.
"""
from __future__ import annotations

from typing import Any, Iterable

from sqlite_utils import Database

from .db import LOCK_USAGE, fetch_all
from .pg import PgConnection

SLOT = 5.0  # seconds per bucket of recent sends and tokens
WINDOW = 60.0  # the minute Google's per-minute quotas count over
# A row's recent slots are kept this far back (a slot counts while it touches the window).
KEEP = WINDOW + SLOT

Slots = tuple[tuple[float, int, int], ...]  # (slot start, sends, input tokens), oldest first
RowKey = tuple[int, int, str, int, str]  # (day, key_id, model, user_id, worker)

_SQL_UPSERT = (
    "INSERT INTO quota_usage (day, key_id, model, user_id, worker, recent, day_sends, day_tokens_in, "
    "day_tokens_out, updated_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(day, key_id, model, user_id, worker) DO UPDATE SET recent = excluded.recent, "
    "day_sends = excluded.day_sends, day_tokens_in = excluded.day_tokens_in, "
    "day_tokens_out = excluded.day_tokens_out, updated_at = excluded.updated_at, seq = excluded.seq"
)


def encode(slots: Iterable[tuple[float, int, int]]) -> str:
    """Return slots as compact text: `start:sends:tokens` joined by `;`."""
    return ";".join(f"{int(start)}:{sends}:{tokens}" for start, sends, tokens in slots)


def decode(text: str | None) -> list[tuple[float, int, int]]:
    """Read slots written by `encode` (anything malformed is skipped)."""
    out = []
    for part in (text or "").split(";"):
        bits = part.split(":")
        if len(bits) == 3:
            try:
                out.append((float(bits[0]), int(bits[1]), int(bits[2])))
            except ValueError:
                continue
    return out


def in_window(slots: Iterable[tuple[float, int, int]], now: float) -> tuple[int, int]:
    """Return (sends, tokens) in the slots that touch the minute before `now`."""
    sends = tokens = 0
    for start, s, t in slots:
        if start + SLOT > now - WINDOW:
            sends += s
            tokens += t
    return sends, tokens


class UsageBook:
    """The writer's own usage rows: folded from the pool's ops, written whole on each batch.

    Lives on the writer thread only. Rows of earlier days are dropped once a newer day
    appears (the database keeps them until retention prunes them).
    """

    def __init__(self) -> None:
        # row key → [{slot start: [sends, tokens]}, day sends, day tokens in, day tokens out]
        self.rows: dict[RowKey, list[Any]] = {}
        self.dirty: set[RowKey] = set()
        self.day = 0

    def add(self, worker: str, day: int, ts: float, key_id: int, model: str, user_id: int,
            sends: int, tokens_in: int, tokens_out: int) -> None:
        """Count one op (sends may be -1: a try Google refused with a 429 does not count)."""
        if day > self.day:
            self.day = day
            for old in [k for k in self.rows if k[0] < day]:
                del self.rows[old]
                self.dirty.discard(old)
        elif day < self.day:
            return  # a late op of yesterday: that day is over
        key = (day, key_id, model, user_id, worker)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [{}, 0, 0, 0]
        start = ts - ts % SLOT
        slot = row[0].get(start)
        if slot is None:
            slot = row[0][start] = [0, 0]
        slot[0] += sends
        slot[1] += tokens_in
        row[1] += sends
        row[2] += tokens_in
        row[3] += tokens_out
        self.dirty.add(key)

    def pending(self, now: float) -> list[tuple[Any, ...]]:
        """Return upsert parameters for every row changed since the last commit (seq last)."""
        out = []
        for key in self.dirty:
            row = self.rows.get(key)
            if row is None:
                continue
            slots = row[0]
            for start in [s for s in slots if s + KEEP <= now]:
                del slots[start]
            recent = encode((start, max(0, s), t) for start, (s, t) in sorted(slots.items()))
            out.append((*key, recent, max(0, row[1]), row[2], row[3], now))
        return out

    def write(self, conn: Any, now: float) -> int:
        """Upsert the changed rows inside the caller's transaction; return how many."""
        rows = self.pending(now)
        if not rows:
            return 0
        if isinstance(conn, PgConnection):
            # Hosts write concurrently: one at a time, so max(seq) + 1 is unique and readers'
            # "seq > last seen" never skips a row committed late.
            conn.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_USAGE,))
        seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM quota_usage").fetchone()[0]
        conn.executemany(_SQL_UPSERT, [(*r, seq) for r in rows])
        return len(rows)

    def committed(self) -> None:
        """Forget which rows changed: the transaction that wrote them committed."""
        self.dirty.clear()


def usage_changes(db: Database, day: int, worker: str, after_seq: int) -> tuple[list[dict[str, Any]], int]:
    """Return the other workers' usage of every pair written after `after_seq`, and the new seq.

    One dict per (key_id, model, user_id) with `slots` (merged, oldest first), `day_sends`,
    `day_tokens_in`, `day_tokens_out`, summed over every worker but `worker`. With
    after_seq 0, every pair used today. Call inside a snapshot.
    """
    top = db.execute("SELECT coalesce(max(seq), 0) FROM quota_usage").fetchone()[0]
    if top <= after_seq and after_seq:
        return [], top
    # The pairs another worker wrote come from the seq index (pinned: the planner would
    # rather walk the whole day through the primary key), their rows from the primary key.
    # A pair only this worker wrote is left out: the others' part of it has not changed.
    rows = fetch_all(db, """
        SELECT u.key_id, u.model, u.user_id, u.recent, u.day_sends, u.day_tokens_in, u.day_tokens_out
        FROM (SELECT DISTINCT key_id, model, user_id FROM quota_usage INDEXED BY quota_usage_seq
              WHERE seq > :after AND day = :day AND worker != :worker) AS c
        JOIN quota_usage AS u ON u.day = :day AND u.key_id = c.key_id AND u.model = c.model
             AND u.user_id = c.user_id
        WHERE u.worker != :worker""", {"day": day, "worker": worker, "after": after_seq})
    return merge(rows), top


def merge(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add up usage rows per (key_id, model, user_id): slots by start, totals by sum."""
    pairs: dict[tuple[int, str, int], dict[str, Any]] = {}
    for r in rows:
        ident = (r["key_id"], r["model"], r["user_id"])
        p = pairs.get(ident)
        if p is None:
            p = pairs[ident] = {"key_id": ident[0], "model": ident[1], "user_id": ident[2],
                                "slots": {}, "day_sends": 0, "day_tokens_in": 0, "day_tokens_out": 0}
        for start, s, t in decode(r["recent"]):
            had = p["slots"].get(start, (0, 0))
            p["slots"][start] = (had[0] + s, had[1] + t)
        p["day_sends"] += r["day_sends"] or 0
        p["day_tokens_in"] += r["day_tokens_in"] or 0
        p["day_tokens_out"] += r["day_tokens_out"] or 0
    for p in pairs.values():
        p["slots"] = tuple((start, s, t) for start, (s, t) in sorted(p["slots"].items()))
    return list(pairs.values())


def key_usage_today(db: Database, day: int) -> list[dict[str, Any]]:
    """Return every (key, model) pair used today with its requests today and in the last minute.

    For display (keys list, the console): summed over every worker. Call inside a snapshot.
    """
    return merge(fetch_all(db, """
        SELECT key_id, model, user_id, recent, day_sends, day_tokens_in, day_tokens_out
        FROM quota_usage WHERE day = ? AND user_id = 0""", (day,)))
