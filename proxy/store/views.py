"""Read what the console shows: bounded, index-backed queries over the shared database.

Every function here reads a bounded number of rows, whatever the size of the request log:
listings are newest-first with LIMIT (the `seq`/`id` primary keys make that a backwards walk
of the table), filters use the (column, seq) indexes, free-text searches look at a window of
recent rows only, and sums over stats go through a Rollup so that settled hours are read once.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from .db import fetch_all, fetch_one, snapshot
from .rollup import INDEX, GroupSums, Rollup, minute_sums, zero
from .util import ELLIPSIS, minute_of, pacific_day_start

IN_FLIGHT_WINDOW = 600.0  # seconds: older rows without a status are presumed lost, not in flight
LIST_LIMIT = 200
IN_FLIGHT_LIMIT = 100
EVENT_LIMIT = 500
# Free-text filters cannot use an index; they search this many of the newest rows.
SCAN_WINDOW = 100_000
# Above this many distinct status codes a filter falls back to one sorted index range.
MAX_STATUS_PARTS = 400
HEARTBEAT_FRESH = 5.0  # a worker seen within this many seconds counts as up
KEY_WINDOW_MINUTES = 15

# Columns for the request listing; the detail view reads the rest.
_LIST_COLUMNS = (
    "seq, id, started_at, ended_at, user_id, user_label, dialect, method, path, model, key_id, "
    "key_masked, status, attempts, stream, ttfb_ms, duration_ms, tokens_in, tokens_out, error_class, "
    "error_message, worker_pid"
)
LEVELS = ("debug", "info", "warning", "error", "critical")
SPANS = ("hour", "day", "week")

StatusRange = tuple[int, int]


@dataclass(frozen=True)
class RequestFilter:
    """Narrow the request listing; empty fields match everything, several values any of them.

    keys and users are references (id, label, masked form or its last characters) resolved
    against the small keys/users tables, so the big table is searched by indexed id.
    statuses are inclusive ranges; in_flight adds rows that have no status yet.
    """

    models: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    statuses: tuple[StatusRange, ...] = ()
    in_flight: bool = False
    text: str = ""


@dataclass(frozen=True)
class EventFilter:
    """Narrow the event log: levels (exact names), status ranges, free text."""

    levels: tuple[str, ...] = ()
    statuses: tuple[StatusRange, ...] = ()
    text: str = ""


def _escape(text: str) -> str:
    """Escape LIKE's wildcards in `text` (for use with ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(text: str) -> str:
    """Return a LIKE pattern matching `text` anywhere."""
    return f"%{_escape(text)}%"


def _marks(values: list[Any] | tuple[Any, ...]) -> str:
    return ", ".join("?" * len(values))


def resolve_keys(db: Database, refs: tuple[str, ...] | list[str]) -> list[int]:
    """Return ids of the keys any of `refs` names: id, label, masked form, or its visible tail."""
    ids: set[int] = set()
    for ref in refs:
        text = ref.strip().replace("...", ELLIPSIS)
        if not text:
            continue
        tail = text.lstrip(ELLIPSIS)
        rows = db.conn.execute(
            "SELECT id FROM google_keys WHERE CAST(id AS TEXT) = ? OR label = ? COLLATE NOCASE "
            "OR masked = ? OR (length(?) >= 3 AND masked LIKE ? ESCAPE '\\')",
            (text, text, text, tail, "%" + _escape(tail)),
        ).fetchall()
        ids.update(r[0] for r in rows)
    return sorted(ids)


def resolve_users(db: Database, refs: tuple[str, ...] | list[str]) -> list[int]:
    """Return ids of the users any of `refs` names (id, label, or label prefix)."""
    ids: set[int] = set()
    for ref in refs:
        text = ref.strip()
        if not text:
            continue
        rows = db.conn.execute(
            "SELECT id FROM users WHERE CAST(id AS TEXT) = ? OR label LIKE ? ESCAPE '\\'",
            (text, _escape(text) + "%"),
        ).fetchall()
        ids.update(r[0] for r in rows)
    return sorted(ids)


def _status_clause(ranges: tuple[StatusRange, ...], in_flight: bool) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for lo, hi in ranges:
        if lo == hi:
            parts.append("status = ?")
            params.append(lo)
        else:
            parts.append("status BETWEEN ? AND ?")
            params += [lo, hi]
    if in_flight:
        parts.append("status IS NULL")
    return "(" + " OR ".join(parts) + ")", params


def _request_where(db: Database, f: RequestFilter, *, status: bool = True) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if f.models:
        clauses.append(f"model IN ({_marks(f.models)})")
        params += list(f.models)
    if f.keys:
        ids = resolve_keys(db, f.keys)
        clauses.append(f"key_id IN ({_marks(ids)})" if ids else "0")
        params += ids
    if f.users:
        ids = resolve_users(db, f.users)
        clauses.append(f"user_id IN ({_marks(ids)})" if ids else "0")
        params += ids
    if status and (f.statuses or f.in_flight):
        clause, more = _status_clause(f.statuses, f.in_flight)
        clauses.append(clause)
        params += more
    if f.text:
        pattern = _like(f.text)
        clauses.append(
            "seq > (SELECT coalesce(max(seq), 0) FROM requests) - ? AND (id = ? OR "
            + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in
                          ("path", "model", "user_label", "key_masked", "error_class", "error_message"))
            + ")"
        )
        params += [SCAN_WINDOW, f.text, *([pattern] * 6)]
    return clauses, params


def _codes(ranges: tuple[StatusRange, ...]) -> list[int]:
    codes: set[int] = set()
    for lo, hi in ranges:
        codes.update(range(max(lo, 100), min(hi, 599) + 1))
    return sorted(codes)


def _newest(db: Database, f: RequestFilter, limit: int) -> list[dict[str, Any]]:
    """Return the newest `limit` rows matching `f`.

    A status range read through the (status, seq) index comes out in status order and would
    need every match sorted (a 4xx filter over a million rows sorts hundreds of thousands).
    Instead, each status code is its own newest-first index walk of at most `limit` rows,
    and only those few are merged.
    """
    codes = _codes(f.statuses)
    if not f.statuses or len(codes) > MAX_STATUS_PARTS:
        clauses, params = _request_where(db, f)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return fetch_all(
            db, f"SELECT {_LIST_COLUMNS} FROM requests {where} ORDER BY seq DESC LIMIT ?", (*params, limit)
        )
    clauses, params = _request_where(db, f, status=False)
    rest = "".join(f" AND {c}" for c in clauses)
    parts = [f"status = {code}" for code in codes] + (["status IS NULL"] if f.in_flight else [])
    sql = " UNION ALL ".join(
        f"SELECT * FROM (SELECT {_LIST_COLUMNS} FROM requests WHERE {part}{rest} ORDER BY seq DESC LIMIT ?)"
        for part in parts
    )
    args: list[Any] = []
    for _ in parts:
        args += [*params, limit]
    return fetch_all(db, f"SELECT * FROM ({sql}) ORDER BY seq DESC LIMIT ?", (*args, limit))


def recent_requests(
    db: Database, f: RequestFilter | None = None, *, now: float, limit: int = LIST_LIMIT
) -> list[dict[str, Any]]:
    """Return the newest `limit` requests matching `f`, plus any still in flight, newest first.

    In-flight rows (no status, started within IN_FLIGHT_WINDOW) are included even when they
    are older than the newest `limit`, so a long stream never drops off the screen. Each row
    gets `lost` (see mark_lost).
    """
    f = f or RequestFilter()
    with snapshot(db):
        rows = _newest(db, f, limit)
        if not f.statuses or f.in_flight:
            clauses, params = _request_where(db, f, status=False)
            flying = fetch_all(
                db,
                # Pin the status index: the planner would otherwise walk a filter column's
                # index and test every row of, say, a model for a missing status.
                f"SELECT {_LIST_COLUMNS} FROM requests INDEXED BY requests_status_seq "
                "WHERE status IS NULL AND started_at > ? "
                + "".join(f" AND {c}" for c in clauses)
                + " ORDER BY seq DESC LIMIT ?",
                (now - IN_FLIGHT_WINDOW, *params, IN_FLIGHT_LIMIT),
            )
            seen = {r["seq"] for r in rows}
            extra = [r for r in flying if r["seq"] not in seen]
            if extra:
                rows = sorted(rows + extra, key=lambda r: r["seq"], reverse=True)
        mark_lost(db, rows, now)
    return rows


def live_workers(db: Database, now: float) -> dict[int, float]:
    """Return {pid: started_at} of the workers whose heartbeat is fresh."""
    return {r["pid"]: r["started_at"] or 0.0 for r in fetch_all(
        db, "SELECT pid, started_at FROM workers WHERE last_seen >= ?", (now - HEARTBEAT_FRESH,))}


def mark_lost(db: Database, rows: list[dict[str, Any]], now: float) -> None:
    """Set `lost` on each row: True for one left unfinished by a worker that is gone.

    A row without a status is in flight only while the worker serving it still beats: a
    killed proxy leaves its rows behind, and a pid reused by a later worker (which started
    after the request did) does not bring them back. Rows that name no worker fall back to
    IN_FLIGHT_WINDOW.
    """
    if not any(r["status"] is None for r in rows):
        for r in rows:
            r["lost"] = False
        return
    alive = live_workers(db, now)
    for r in rows:
        if r["status"] is not None:
            r["lost"] = False
            continue
        started = r.get("started_at") or 0.0
        pid = r.get("worker_pid")
        if pid is None:
            r["lost"] = now - started > IN_FLIGHT_WINDOW
        else:
            r["lost"] = pid not in alive or alive[pid] > started + 1.0  # a second of clock slack


def request_detail(db: Database, request_id: str, *, now: float | None = None) -> dict[str, Any] | None:
    """Return every field of one request, with `attempts_list` parsed from attempts_detail."""
    with snapshot(db):
        row = fetch_one(db, "SELECT * FROM requests WHERE id = ?", (request_id,))
        if row is None:
            return None
        mark_lost(db, [row], now if now is not None else time.time())
    try:
        attempts = json.loads(row.get("attempts_detail") or "[]")
    except ValueError:
        attempts = []
    row["attempts_list"] = attempts if isinstance(attempts, list) else []
    return row


def recent_events(
    db: Database, f: EventFilter | None = None, *, after_id: int | None = None, limit: int = EVENT_LIMIT
) -> list[dict[str, Any]]:
    """Return up to `limit` of the newest events matching `f`, oldest first.

    With `after_id`, only events newer than it: a tail that reads nothing twice.
    """
    f = f or EventFilter()
    clauses: list[str] = []
    params: list[Any] = []
    if after_id is not None:
        clauses.append("id > ?")
        params.append(after_id)
    if f.levels:
        clauses.append(f"level IN ({_marks(f.levels)})")
        params += list(f.levels)
    if f.statuses:
        clause, more = _status_clause(f.statuses, False)
        clauses.append(clause)
        params += more
    if f.text:
        clauses.append("(request_id = ? OR message LIKE ? ESCAPE '\\')")
        params += [f.text, _like(f.text)]
    if f.levels or f.statuses or f.text:
        # Unindexed filters: bound the backwards walk to recent events.
        clauses.append("id > (SELECT coalesce(max(id), 0) FROM events) - ?")
        params.append(SCAN_WINDOW)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = fetch_all(
        db,
        f"SELECT id, ts, level, message, request_id, status, key_id, model FROM events {where} "
        "ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    rows.reverse()
    return rows


def proxy_status(db: Database, *, now: float) -> dict[str, Any]:
    """Summarise the proxy for a header line: up/down, version, rate, in flight, key health."""
    with snapshot(db):
        workers = fetch_all(db, "SELECT host, pid, last_seen, version, inflight, state FROM workers")
        recent = db.conn.execute(
            "SELECT count(*) FROM requests WHERE started_at >= ?", (now - 60,)
        ).fetchone()[0]
        keys = fetch_all(db, "SELECT id, status, invalid_reason FROM google_keys WHERE status != 'removed'")
        cooling = {r[0] for r in db.conn.execute(
            "SELECT DISTINCT key_id FROM key_health WHERE cool_until > ?", (now,)
        )}
    alive = [w for w in workers if (w["last_seen"] or 0) >= now - HEARTBEAT_FRESH]
    newest = max(workers, key=lambda w: w["last_seen"] or 0) if workers else None
    counts = {"usable": 0, "cooling": 0, "dead": 0, "disabled": 0}
    for key in keys:
        counts[key_state(key, key["id"] in cooling)] += 1
    stopping = sum(1 for w in alive if w["state"] == "stopping")
    return {
        "up": bool(alive),
        # down: no fresh heartbeat; stopping: every live worker is draining after SIGTERM.
        "state": "down" if not alive else "stopping" if stopping == len(alive) else "up",
        "stopping": stopping,
        "workers": len(alive),
        "version": (newest or {}).get("version"),
        "last_seen": (newest or {}).get("last_seen"),
        "inflight": sum(w["inflight"] or 0 for w in alive),
        "rate": recent / 60.0,
        "keys": counts,
    }


def key_state(key: dict[str, Any], cooling: bool) -> str:
    """Name a key's state: disabled, dead, cooling (some model resting) or usable."""
    if key["status"] == "disabled":
        return "disabled"
    if key.get("invalid_reason"):
        return "dead"
    return "cooling" if cooling else "usable"


def keys_overview(db: Database, rollup: Rollup, *, now: float,
                  window_minutes: int = KEY_WINDOW_MINUTES) -> list[dict[str, Any]]:
    """Describe every key not removed (never its value) with cooldowns, success rate and today's usage.

    success_rate counts ok against rate-limited, dead and upstream failures over the last
    `window_minutes` (None without such traffic). Today starts at Pacific midnight, when
    Google's daily quotas reset.
    """
    current = minute_of(now)
    with snapshot(db):
        keys = fetch_all(
            db,
            "SELECT id, masked, label, status, invalid_reason, invalid_at, created_at, last_used_at, "
            "last_error, rpm_cap FROM google_keys WHERE status != 'removed' ORDER BY id",
        )
        health = fetch_all(
            db,
            "SELECT key_id, model, cool_until, reason, last_error FROM key_health WHERE cool_until > ? "
            "ORDER BY cool_until",
            (now,),
        )
        window = rollup.sums(db, "key_id", current - window_minutes + 1, current + 1, now)
        today = rollup.sums(db, "key_id", minute_of(pacific_day_start(now)), current + 1, now)
    cooldowns: dict[int, list[dict[str, Any]]] = {}
    for h in health:
        cooldowns.setdefault(h["key_id"], []).append(h)
    out = []
    for key in keys:
        w = window.get(key["id"]) or zero()
        ok = w[INDEX["ok"]]
        bad = w[INDEX["rate_limited"]] + w[INDEX["key_dead"]] + w[INDEX["upstream_error"]]
        d = today.get(key["id"]) or zero()
        mine = cooldowns.get(key["id"], [])
        out.append({
            **key,
            "state": key_state(key, bool(mine)),
            "cooldowns": mine,
            "success_rate": ok / (ok + bad) if ok + bad else None,
            "requests_today": d[INDEX["requests"]],
            "tokens_today": d[INDEX["tokens_in"]] + d[INDEX["tokens_out"]],
        })
    return out


def users_overview(db: Database, rollup: Rollup, *, now: float) -> list[dict[str, Any]]:
    """Describe every user not removed (masked key only) with limits and usage today and over 7 days."""
    current = minute_of(now)
    with snapshot(db):
        users = fetch_all(
            db,
            "SELECT id, label, masked, status, created_at, rpm_limit, tpd_limit, allowed_models "
            "FROM users WHERE status != 'removed' ORDER BY id",
        )
        today = rollup.sums(db, "user_id", minute_of(pacific_day_start(now)), current + 1, now)
        week = rollup.sums(db, "user_id", minute_of(now - 7 * 86400), current + 1, now)
    out = []
    for user in users:
        d = today.get(user["id"]) or zero()
        w = week.get(user["id"]) or zero()
        out.append({
            **user,
            "requests_today": d[INDEX["requests"]],
            "tokens_today": d[INDEX["tokens_in"]] + d[INDEX["tokens_out"]],
            "requests_7d": w[INDEX["requests"]],
            "tokens_7d": w[INDEX["tokens_in"]] + w[INDEX["tokens_out"]],
        })
    return out


def stats_series(db: Database, rollup: Rollup, group: str, span: str, *, now: float
                 ) -> tuple[list[int], dict[Any, list[list[int]]]]:
    """Return (bucket start minutes, {group value: counters per bucket}) for a span.

    hour: 60 one-minute buckets; day: 24 one-hour buckets; week: 7 buckets of 24 hours, the
    last ending with the current hour.
    """
    current = minute_of(now)
    hour = current // 60
    per: dict[Any, list[list[int]]] = {}
    if span == "hour":
        starts = list(range(current - 59, current + 1))
        with snapshot(db):
            found = minute_sums(db, group, starts[0], current + 1)
        buckets = [found.get(m, {}) for m in starts]
    elif span in ("day", "week"):
        hours = 24 if span == "day" else 7 * 24
        size = 1 if span == "day" else 24
        with snapshot(db):
            found = rollup.hourly(db, group, hour - hours + 1, hour + 1, now)
        hour_list = list(range(hour - hours + 1, hour + 1))
        starts = [h * 60 for h in hour_list[::size]]
        buckets = []
        for i in range(0, hours, size):
            merged: GroupSums = {}
            for h in hour_list[i:i + size]:
                for g, counts in found[h].items():
                    total = merged.setdefault(g, zero())
                    for j, v in enumerate(counts):
                        total[j] += v
            buckets.append(merged)
    else:
        raise ValueError(f"unknown span {span!r}; expected one of {', '.join(SPANS)}")
    for i, bucket in enumerate(buckets):
        for g, counts in bucket.items():
            series = per.get(g)
            if series is None:
                series = per[g] = [zero() for _ in buckets]
            series[i] = counts
    return starts, per


def names(db: Database) -> dict[str, dict[Any, str]]:
    """Return display names for group values: {"key_id": {id: label or masked}, "user_id": {id: label}}."""
    keys = {r["id"]: r["label"] or r["masked"] for r in fetch_all(db, "SELECT id, label, masked FROM google_keys")}
    users = {r["id"]: r["label"] for r in fetch_all(db, "SELECT id, label FROM users")}
    return {"key_id": keys, "user_id": users}


def key_value(db: Database, key_id: int) -> str | None:
    """Return the full value of one key (for probing it upstream; never for display)."""
    row = db.conn.execute("SELECT value FROM google_keys WHERE id = ?", (key_id,)).fetchone()
    return None if row is None else row[0]
