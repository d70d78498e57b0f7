"""Feed the in-memory pool: the first read is everything, each later one only what changed.

The pool's refresher thread calls `PoolFeed.read()` about once a second. Its cost follows
what changed since the last call, not how many keys exist:

- keys, their rests and their limits: the ids logged in `key_changes` (by triggers) since
  the last seq seen; for each such key its row, its running rests and all its limits;
- usage: the other workers' `quota_usage` rows of pairs written since the last seq seen;
- users: all active users, but only when the table changed (its newest updated_at);
- pins: those with a seq above the last one seen.

Every read is index-backed (see tests/test_poolfeed.py for the query plans).
"""
from __future__ import annotations

import time
from typing import Any

from sqlite_utils import Database

from .db import fetch_all, snapshot
from .quota_usage import usage_changes
from .util import pacific_day

KEY_COLUMNS = "id, value, masked, label, status, invalid_reason, invalid_at, updated_at, rpm_cap"
_CHANGED = "SELECT key_id FROM key_changes WHERE seq > :after"


class PoolFeed:
    """Read the pool's view from `db` as a first full view, then as changes."""

    def __init__(self, db: Database, worker: str) -> None:
        self.db = db
        self.worker = worker  # this worker's own usage rows are left out: it counts them itself
        self.keys_seq: int | None = None
        self.usage_seq = 0
        self.day = 0
        self.pins_seq = 0
        self.users_mark: tuple[Any, ...] | None = None

    def read(self, now: float | None = None) -> dict[str, Any]:
        """Return the next view: `full` True with everything, else only what changed.

        Keys: rows of changed keys (removed ones included, so the pool drops them) and, for
        the ids in `touched`, every running rest and every limit. Usage: `usage_reset` says
        the day turned and every pair not listed has no other worker's use yet.
        """
        ts = time.time() if now is None else now
        day = pacific_day(ts)
        db = self.db
        with snapshot(db):
            # Two statements: SQLite answers a lone min() or max() from the index end.
            top = db.execute("SELECT coalesce(max(seq), 0) FROM key_changes").fetchone()[0]
            oldest = db.execute("SELECT coalesce(min(seq), 0) FROM key_changes").fetchone()[0]
            full = self.keys_seq is None or top < self.keys_seq or oldest > self.keys_seq + 1
            view: dict[str, Any] = {"full": full, "usage_day": day}
            if full:
                view["keys"] = fetch_all(db, f"SELECT {KEY_COLUMNS} FROM google_keys "
                                             "WHERE status != 'removed' ORDER BY id")
                view["health"] = fetch_all(db, "SELECT key_id, model, cool_until, reason FROM key_health "
                                               "WHERE cool_until > ?", (ts,))
                view["limits"] = fetch_all(db, "SELECT key_id, model, kind, source, value, learned_at "
                                               "FROM key_limits")
                self.usage_seq, self.users_mark = 0, None
            elif top > self.keys_seq:
                after = {"after": self.keys_seq, "now": ts}
                view["keys"] = fetch_all(db, f"SELECT {KEY_COLUMNS} FROM google_keys WHERE id IN ({_CHANGED})",
                                         after)
                view["touched"] = [r[0] for r in db.execute(
                    "SELECT DISTINCT key_id FROM key_changes WHERE seq > ?", (self.keys_seq,))]
                view["health"] = fetch_all(db, "SELECT key_id, model, cool_until, reason FROM key_health "
                                               f"WHERE cool_until > :now AND key_id IN ({_CHANGED})", after)
                view["limits"] = fetch_all(db, "SELECT key_id, model, kind, source, value, learned_at "
                                               f"FROM key_limits WHERE key_id IN ({_CHANGED})", after)
            self.keys_seq = top
            if day != self.day:
                self.day, self.usage_seq = day, 0
                view["usage_reset"] = True
            view["usage"], self.usage_seq = usage_changes(db, day, self.worker, self.usage_seq)
            # Every change to a user stamps updated_at (removal included): its newest value
            # says whether to read them again.
            mark = tuple(db.execute("SELECT max(updated_at) FROM users").fetchone())
            if mark != self.users_mark:
                self.users_mark = mark
                view["users"] = fetch_all(
                    db, "SELECT id, label, key_hash, status, updated_at, rpm_limit, tpd_limit, allowed_models "
                        "FROM users WHERE status = 'active' ORDER BY id")
            view["pins"] = fetch_all(db, "SELECT seq, name, key_id FROM pins WHERE seq > ? ORDER BY seq",
                                     (self.pins_seq,))
            if view["pins"]:
                self.pins_seq = view["pins"][-1]["seq"]
        return view
