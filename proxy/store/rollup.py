"""Sum the per-minute stats by hour, remembering the hours that can no longer change.

A week of `stats_minute` can hold hundreds of thousands of rows. Readers that refresh every
second (the console's Keys, Users and Stats panes) would rescan them all on every tick; a
Rollup scans each settled hour once and afterwards only re-reads the hour still being
written. Hours are UTC hours (minute // 60); Pacific midnight falls on a whole UTC hour, so
"today" in Google's sense is a whole number of them.
"""
from __future__ import annotations

import time
from typing import Any

from sqlite_utils import Database

from .schema import STATS_COUNTERS
from .util import minute_of

Counters = list[int]
GroupSums = dict[Any, Counters]

# Group columns a caller may ask for; "all" sums everything into one group keyed 0.
GROUPS: dict[str, str] = {"all": "0", "key_id": "key_id", "model": "model", "user_id": "user_id",
                          "host": "host"}
INDEX = {name: i for i, name in enumerate(STATS_COUNTERS)}
# The writer commits every ~0.15 s and may still add to the previous minute just after it
# ends; an hour counts as settled once it ended this many minutes ago.
SETTLE_MINUTES = 2
_SUMS = ", ".join(f"sum({c})" for c in STATS_COUNTERS)


def zero() -> Counters:
    """Return a counter vector of zeros (ordered as STATS_COUNTERS)."""
    return [0] * len(STATS_COUNTERS)


def add_into(total: Counters, more: Counters) -> Counters:
    """Add `more` into `total` in place and return it."""
    for i, value in enumerate(more):
        total[i] += value
    return total


def minute_sums(db: Database, group: str, lo_minute: int, hi_minute: int) -> dict[int, GroupSums]:
    """Return {minute: {group value: counters}} for minutes in [lo_minute, hi_minute), uncached."""
    return _grouped(db, "minute", group, lo_minute, hi_minute)


def _grouped(db: Database, bucket: str, group: str, lo_minute: int, hi_minute: int) -> dict[int, GroupSums]:
    column = GROUPS[group]
    # The range on `minute` is served by the primary key's index, whose first column it is.
    rows = db.conn.execute(
        f"SELECT {bucket} AS b, {column} AS g, {_SUMS} FROM stats_minute "
        "WHERE minute >= ? AND minute < ? GROUP BY b, g",
        (lo_minute, hi_minute),
    ).fetchall()
    out: dict[int, GroupSums] = {}
    for b, g, *counts in rows:
        out.setdefault(int(b), {})[g] = [int(c or 0) for c in counts]
    return out


def _flat(db: Database, group: str, lo_minute: int, hi_minute: int) -> GroupSums:
    if hi_minute <= lo_minute:
        return {}
    rows = db.conn.execute(
        f"SELECT {GROUPS[group]} AS g, {_SUMS} FROM stats_minute "
        "WHERE minute >= ? AND minute < ? GROUP BY g",
        (lo_minute, hi_minute),
    ).fetchall()
    return {g: [int(c or 0) for c in counts] for g, *counts in rows}


class Rollup:
    """Cache hourly sums of stats_minute per grouping column; re-read only unsettled hours.

    Not thread-safe: give each reading thread its own (the console reads from one worker at
    a time). Operator actions that delete history (reset a key) should call `clear()`; the
    cache also forgets everything every `ttl` seconds so another tool's reset shows up.
    """

    def __init__(self, ttl: float = 300.0, keep_hours: int = 8 * 24) -> None:
        self.ttl = ttl
        self.keep_hours = keep_hours
        self._hours: dict[str, dict[int, GroupSums]] = {}
        self._born = time.monotonic()

    def clear(self) -> None:
        """Forget every cached hour."""
        self._hours.clear()
        self._born = time.monotonic()

    def hourly(self, db: Database, group: str, lo_hour: int, hi_hour: int, now: float) -> dict[int, GroupSums]:
        """Return {hour: {group value: counters}} for every hour in [lo_hour, hi_hour)."""
        if group not in GROUPS:
            raise ValueError(f"unknown group {group!r}")
        if time.monotonic() - self._born > self.ttl:
            self.clear()
        settled = (minute_of(now) - SETTLE_MINUTES) // 60
        cache = self._hours.setdefault(group, {})
        missing = [h for h in range(lo_hour, min(hi_hour, settled)) if h not in cache]
        if missing:
            lo, hi = missing[0], missing[-1] + 1
            found = _grouped(db, "minute / 60", group, lo * 60, hi * 60)
            for h in range(lo, hi):
                cache[h] = found.get(h, {})
            self._trim(cache, settled)
        fresh: dict[int, GroupSums] = {}
        start = max(lo_hour, settled)
        if start < hi_hour:
            fresh = _grouped(db, "minute / 60", group, start * 60, hi_hour * 60)
        return {h: (cache.get(h) if h < settled else fresh.get(h)) or {} for h in range(lo_hour, hi_hour)}

    def sums(self, db: Database, group: str, lo_minute: int, hi_minute: int, now: float) -> GroupSums:
        """Return {group value: counters} summed over minutes [lo_minute, hi_minute).

        Whole hours come from the cache; the partial hours at either end are read directly
        (at most 59 minutes each, so cheap).
        """
        if hi_minute <= lo_minute:
            return {}
        first = -(-lo_minute // 60)  # first whole hour inside the range
        last = hi_minute // 60  # hours before this end inside the range
        total: GroupSums = {}
        if first >= last:
            return _flat(db, group, lo_minute, hi_minute)
        for part in (_flat(db, group, lo_minute, first * 60), _flat(db, group, last * 60, hi_minute)):
            for g, counts in part.items():
                add_into(total.setdefault(g, zero()), counts)
        for hour in self.hourly(db, group, first, last, now).values():
            for g, counts in hour.items():
                add_into(total.setdefault(g, zero()), counts)
        return total

    def _trim(self, cache: dict[int, GroupSums], settled: int) -> None:
        oldest = settled - self.keep_hours
        for h in [h for h in cache if h < oldest]:
            del cache[h]
