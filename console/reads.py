"""Read what one refresh tick needs, without any UI: the app's worker and the bench both use it."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from proxy.store import views
from proxy.store.db import fetch_one, open_db, snapshot
from proxy.store.limits import held_by_pair, key_limits
from proxy.store.rollup import INDEX, Rollup, zero
from proxy.store.schema import check_schema
from proxy.store.views import FAILURES  # re-exported for the panes; the list lives in the schema


@dataclass
class StatsData:
    """A span of stats: bucket starts, totals per bucket, and per-group series with names."""

    span: str
    group: str
    starts: list[int]
    total: list[list[int]]
    groups: dict[Any, list[list[int]]]
    names: dict[Any, str] = field(default_factory=dict)
    # Per model, the daily quota left across usable keys (views.quota_budget).
    budget: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class KeyLimits:
    """One key's limits: {model: {kind: value}} set by the operator ("" = every model) and learned."""

    operator: dict[str, dict[str, int]] = field(default_factory=dict)
    learned: dict[str, dict[str, int]] = field(default_factory=dict)


class Reader:
    """Own the console's read-only connection; every read holds a lock, so threads take turns.

    The connection is opened lazily and kept: opening costs a schema check, and a WAL reader
    holds no lock between reads (each read is its own short transaction).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path  # a SQLite path or a postgresql:// URL, as open_db takes it
        self.rollup = Rollup()
        self._db: Database | None = None
        self._lock = threading.Lock()

    def _conn(self) -> Database:
        if self._db is None:
            db = open_db(self.path, readonly=True)
            check_schema(db)
            self._db = db
        return self._db

    def close(self) -> None:
        """Close the connection (it reopens on the next read)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def forget_stats(self) -> None:
        """Drop cached hourly sums (after an action that deleted history)."""
        with self._lock:
            self.rollup.clear()

    def header(self, now: float | None = None) -> dict[str, Any]:
        """Return the proxy's status for the header line."""
        with self._lock:
            return views.proxy_status(self._conn(), now=now or time.time())

    def health(self, now: float | None = None) -> dict[str, Any]:
        """Return the pool's health per model in use, for the strip above every pane."""
        with self._lock:
            return views.pool_health(self._conn(), now=now or time.time())

    def requests(self, flt: views.RequestFilter, now: float | None = None) -> list[dict[str, Any]]:
        """Return the newest requests matching `flt`, in-flight ones included."""
        with self._lock:
            return views.recent_requests(self._conn(), flt, now=now or time.time())

    def events(self, flt: views.EventFilter, after_id: int | None = None) -> list[dict[str, Any]]:
        """Return the newest events matching `flt` (only those after `after_id` when given)."""
        with self._lock:
            return views.recent_events(self._conn(), flt, after_id=after_id)

    def keys(self, now: float | None = None) -> list[dict[str, Any]]:
        """Return every key with health and usage."""
        with self._lock:
            return views.keys_overview(self._conn(), self.rollup, now=now or time.time())

    def budget(self, now: float | None = None) -> list[dict[str, Any]]:
        """Return each model's daily quota left across the usable keys."""
        with self._lock:
            return views.quota_budget(self._conn(), now=now or time.time())

    def users(self, now: float | None = None) -> list[dict[str, Any]]:
        """Return every user with usage and limits."""
        with self._lock:
            return views.users_overview(self._conn(), self.rollup, now=now or time.time())

    def stats(self, group: str, span: str, now: float | None = None) -> StatsData:
        """Return one span of stats grouped by `group` (key_id, model or user_id)."""
        now = now or time.time()
        with self._lock:
            db = self._conn()
            starts, groups = views.stats_series(db, self.rollup, group, span, now=now)
            with snapshot(db):
                names = views.names(db).get(group, {})
            budget = views.quota_budget(db, now=now)
        total = [zero() for _ in starts]
        for series in groups.values():
            for i, counts in enumerate(series):
                for j, v in enumerate(counts):
                    total[i][j] += v
        return StatsData(span, group, starts, total, groups, names, budget)

    def detail(self, request_id: str) -> dict[str, Any] | None:
        """Return every field of one request."""
        with self._lock:
            return views.request_detail(self._conn(), request_id)

    def key_limits(self, key_id: int) -> KeyLimits | None:
        """Return one key's limits by source and model, for the cap dialog (None: key gone)."""
        with self._lock:
            db = self._conn()
            with snapshot(db):
                key = fetch_one(db, "SELECT rpm_cap FROM google_keys WHERE id = ?", (key_id,))
                rows = key_limits(db, [key_id])
        if key is None:
            return None
        out = KeyLimits()
        if key["rpm_cap"]:
            # The per-key cap is the operator's rpm for every model (see proxy.store.limits).
            out.operator.setdefault("", {})["rpm"] = key["rpm_cap"]
        for (_, model), held in held_by_pair(rows).items():
            for (kind, source), limit in held.items():
                by_model = out.operator if source == "operator" else out.learned
                by_model.setdefault(model, {})[kind] = limit.value
        return out

    def key_value(self, key_id: int) -> str | None:
        """Return one key's full value, for a probe."""
        with self._lock:
            return views.key_value(self._conn(), key_id)


def failures(counts: list[int]) -> int:
    """Return the failed attempts in a counter vector."""
    return sum(counts[INDEX[name]] for name in FAILURES)


def tokens(counts: list[int]) -> int:
    """Return tokens in plus out in a counter vector."""
    return counts[INDEX["tokens_in"]] + counts[INDEX["tokens_out"]]


def check_db(path: str | Path) -> None:
    """Open `path` read-only and check its schema; raise StoreError (one line) if unusable."""
    db = open_db(path, readonly=True)
    try:
        check_schema(db)
    finally:
        db.close()
