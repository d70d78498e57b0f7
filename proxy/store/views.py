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
from .limits import Limit, held_by_pair, in_force
from .rollup import INDEX, Counters, GroupSums, Rollup, add_into, minute_sums, zero
from .schema import OUTCOMES
from .quota_usage import in_window, key_usage_today
from .util import ELLIPSIS, minute_of, next_pacific_midnight, pacific_day, pacific_day_start

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
# The header's request rate: short, so it follows a load that just started or stopped.
RATE_WINDOW = 10.0
# Recent failures per key are shown over these two spans (minutes, current one included).
SHORT_MINUTES, LONG_MINUTES = 5, 60
# A key is sick when, in the last SHORT_MINUTES, at least SICK_MIN_TRIES tries were
# answered (ok, dead or upstream trouble) and most of them failed.
SICK_MIN_TRIES = 3
# Rate limits are not sickness: the key is resting and says when it is back (state cooling).
SICK_FAULTS = ("key_dead", "upstream_error")
# What counts against a key in its ok%: client errors and refusals are not its fault.
KEY_FAULTS = ("rate_limited", "key_dead", "upstream_error")
FAILURES = tuple(o for o in OUTCOMES if o != "ok")
# The pool-health strip: models with traffic this recent are "in use"; what clients got
# (429, 5xx) is counted over CLIENT_WINDOW seconds.
IN_USE_MINUTES = 60
CLIENT_WINDOW = 60.0

# Columns for the request listing; the detail view reads the rest.
_LIST_COLUMNS = (
    "seq, id, started_at, ended_at, user_id, user_label, dialect, method, path, model, key_id, "
    "key_masked, status, attempts, stream, ttfb_ms, duration_ms, tokens_in, tokens_out, error_class, "
    "error_message, worker_pid, host"
)
LEVELS = ("debug", "info", "warning", "error", "critical")
SPANS = ("hour", "day", "week")

StatusRange = tuple[int, int]


@dataclass(frozen=True)
class RequestFilter:
    """Narrow the request listing; empty fields match everything, several values any of them.

    keys and users are references (id, label, masked form or its last characters) resolved
    against the small keys/users tables, so the big table is searched by indexed id.
    statuses are inclusive ranges; in_flight adds rows that have no status yet; refused keeps
    the requests answered without any upstream attempt (wrong key, bad body, limits).
    """

    models: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    statuses: tuple[StatusRange, ...] = ()
    in_flight: bool = False
    text: str = ""
    refused: bool = False
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventFilter:
    """Narrow the event log: levels (exact names), status ranges, hosts, free text."""

    levels: tuple[str, ...] = ()
    statuses: tuple[StatusRange, ...] = ()
    text: str = ""
    hosts: tuple[str, ...] = ()


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
            "SELECT id FROM google_keys WHERE CAST(id AS TEXT) = ? OR lower(label) = lower(?) "
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
        clauses.append(f"key_id IN ({_marks(ids)})" if ids else "1 = 0")
        params += ids
    if f.users:
        ids = resolve_users(db, f.users)
        clauses.append(f"user_id IN ({_marks(ids)})" if ids else "1 = 0")
        params += ids
    if f.hosts:
        clauses.append(f"host IN ({_marks(f.hosts)})")
        params += list(f.hosts)
    if status and (f.statuses or f.in_flight):
        clause, more = _status_clause(f.statuses, f.in_flight)
        clauses.append(clause)
        params += more
    if f.refused:
        clauses.append("attempts = 0")
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


def live_workers(db: Database, now: float) -> dict[tuple[str, int], float]:
    """Return {(host, pid): started_at} of the workers whose heartbeat is fresh."""
    return {(r["host"], r["pid"]): r["started_at"] or 0.0 for r in fetch_all(
        db, "SELECT host, pid, started_at FROM workers WHERE last_seen >= ?", (now - HEARTBEAT_FRESH,))}


def mark_lost(db: Database, rows: list[dict[str, Any]], now: float) -> None:
    """Set `lost` on each row: True for one left unfinished by a worker that is gone.

    A row without a status is in flight only while the worker serving it still beats: a
    killed proxy leaves its rows behind, and a pid reused by a later worker (which started
    after the request did) does not bring them back. Rows that name no worker fall back to
    IN_FLIGHT_WINDOW. A pid counts on the row's own host (pids recur across hosts); a row
    from before hosts were recorded matches that pid on any host.
    """
    if not any(r["status"] is None for r in rows):
        for r in rows:
            r["lost"] = False
        return
    alive = live_workers(db, now)
    by_pid = {pid: started for (_, pid), started in alive.items()}
    for r in rows:
        if r["status"] is not None:
            r["lost"] = False
            continue
        started = r.get("started_at") or 0.0
        pid = r.get("worker_pid")
        if pid is None:
            r["lost"] = now - started > IN_FLIGHT_WINDOW
        else:
            host = r.get("host")
            since = by_pid.get(pid) if host is None else alive.get((host, pid))
            r["lost"] = since is None or since > started + 1.0  # a second of clock slack


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
    if f.hosts:
        clauses.append(f"host IN ({_marks(f.hosts)})")
        params += list(f.hosts)
    if f.levels or f.statuses or f.text or f.hosts:
        # Unindexed filters: bound the backwards walk to recent events.
        clauses.append("id > (SELECT coalesce(max(id), 0) FROM events) - ?")
        params.append(SCAN_WINDOW)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = fetch_all(
        db,
        f"SELECT id, ts, level, message, request_id, status, key_id, model, host FROM events {where} "
        "ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    rows.reverse()
    return rows


def tries(counts: Counters) -> int:
    """Return the upstream attempts in a counter vector (every outcome, retried or final)."""
    return sum(counts[INDEX[name]] for name in OUTCOMES)


def failed_by_class(counts: Counters) -> dict[str, int]:
    """Return the failed attempts in a counter vector by outcome class (classes with none left out)."""
    return {name: counts[INDEX[name]] for name in FAILURES if counts[INDEX[name]]}


def is_sick(recent: Counters) -> bool:
    """Tell whether most of a key's recent answered tries failed (see SICK_MIN_TRIES)."""
    ok = recent[INDEX["ok"]]
    bad = sum(recent[INDEX[name]] for name in SICK_FAULTS)
    return ok + bad >= SICK_MIN_TRIES and bad > ok


def _sum_minutes(db: Database, group: str, lo_minute: int, hi_minute: int) -> GroupSums:
    """Return {group value: counters} over a few minutes, read straight from stats_minute."""
    total: GroupSums = {}
    for per_group in minute_sums(db, group, lo_minute, hi_minute).values():
        for g, counts in per_group.items():
            add_into(total.setdefault(g, zero()), counts)
    return total


def _pool_keys(db: Database, now: float) -> list[dict[str, Any]]:
    """Return every key not removed with its running cooldowns and its state (sick included).

    Call inside a snapshot.
    """
    current = minute_of(now)
    keys = fetch_all(db, "SELECT id, status, invalid_reason FROM google_keys WHERE status != 'removed'")
    health = fetch_all(db, "SELECT key_id, model, cool_until FROM key_health WHERE cool_until > ?", (now,))
    recent = _sum_minutes(db, "key_id", current - SHORT_MINUTES + 1, current + 1)
    cooldowns: dict[int, list[dict[str, Any]]] = {}
    for h in health:
        cooldowns.setdefault(h["key_id"], []).append(h)
    for key in keys:
        mine = cooldowns.get(key["id"], [])
        sick = is_sick(recent.get(key["id"]) or zero())
        key.update(cooldowns=mine, sick=sick, state=key_state(key, bool(mine), sick))
    return keys


def proxy_status(db: Database, *, now: float) -> dict[str, Any]:
    """Summarise the proxy for a header line: up/down, version, rate, in flight, key health.

    rate is requests started per second over the last `rate_window` seconds.
    """
    with snapshot(db):
        workers = fetch_all(db, "SELECT host, pid, last_seen, version, inflight, state FROM workers")
        recent = db.conn.execute(
            "SELECT count(*) FROM requests WHERE started_at >= ?", (now - RATE_WINDOW,)
        ).fetchone()[0]
        keys = _pool_keys(db, now)
    alive = [w for w in workers if (w["last_seen"] or 0) >= now - HEARTBEAT_FRESH]
    newest = max(workers, key=lambda w: w["last_seen"] or 0) if workers else None
    counts = {"usable": 0, "cooling": 0, "sick": 0, "dead": 0, "disabled": 0}
    for key in keys:
        counts[key["state"]] += 1
    stopping = sum(1 for w in alive if w["state"] == "stopping")
    hosts: dict[str, dict[str, Any]] = {}
    for w in sorted(workers, key=lambda w: w["host"] or ""):
        h = hosts.setdefault(w["host"] or "", {"host": w["host"] or "", "workers": 0, "up": False,
                                               "stopping": 0, "last_seen": 0.0})
        h["last_seen"] = max(h["last_seen"], w["last_seen"] or 0.0)
        if (w["last_seen"] or 0) >= now - HEARTBEAT_FRESH:
            h["up"] = True
            h["workers"] += 1
            h["stopping"] += w["state"] == "stopping"
    return {
        "up": bool(alive),
        # down: no fresh heartbeat; stopping: every live worker is draining after SIGTERM.
        "state": "down" if not alive else "stopping" if stopping == len(alive) else "up",
        "stopping": stopping,
        "workers": len(alive),
        "version": (newest or {}).get("version"),
        "last_seen": (newest or {}).get("last_seen"),
        "inflight": sum(w["inflight"] or 0 for w in alive),
        "rate": recent / RATE_WINDOW,
        "rate_window": RATE_WINDOW,
        "keys": counts,
        # Each host that ever beat: its live workers, up (any fresh heartbeat), last seen.
        "hosts": list(hosts.values()),
    }


def key_state(key: dict[str, Any], cooling: bool, sick: bool = False) -> str:
    """Name a key's state: removed, disabled, dead, sick, cooling (some model resting) or usable.

    Sick (most recent tries failed, see is_sick) outranks cooling: a key failing its tries
    needs the operator; a resting one only needs time.
    """
    if key["status"] == "removed":
        return "removed"
    if key["status"] == "disabled":
        return "disabled"
    if key.get("invalid_reason"):
        return "dead"
    if sick:
        return "sick"
    return "cooling" if cooling else "usable"


def keys_overview(db: Database, rollup: Rollup, *, now: float,
                  window_minutes: int = KEY_WINDOW_MINUTES,
                  include_removed: bool = False) -> list[dict[str, Any]]:
    """Describe every key (never its value) with cooldowns, health, recent failures and usage.

    The one place these per-key figures are computed: the console's Keys pane and
    `gemini-proxy keys list` both show this. Keys see attempts: every try sent with the key
    counts, retried or final.

    - state: see key_state; usable: active and not dead (whatever it is resting for).
    - success_rate: ok against rate-limited, dead and upstream failures over the last
      `window_minutes` (None without such traffic; client errors are not the key's fault).
    - attempts_5m / attempts_60m, failed_5m / failed_60m ({class: count}): tries and failed
      tries over the last 5 and 60 minutes; sick: most of the last 5 minutes' tries failed.
    - attempts_today: tries since midnight Pacific, when Google's daily quotas reset;
      requests_today: requests that ended on the key; tokens_today: their tokens.
    - rpm_used / rpm_used_model / rpm_limit: with a requests-per-minute limit (the cap, or
      one learned), the requests in the last minute on the model closest to its limit
      (limits are per model) and that limit; before any such count is recorded, the cap
      against this minute's tries on the model that used the key most.
    - quotas: per model in use today or with a known limit, what the pool paces by (see
      quota_rows); day_used / day_limit / day_model: the model closest to its daily limit;
      no_quota: the models the key's tier has no quota for today.
    """
    current = minute_of(now)
    where = "" if include_removed else "WHERE status != 'removed'"
    with snapshot(db):
        keys = fetch_all(
            db,
            "SELECT id, masked, label, status, invalid_reason, invalid_at, created_at, updated_at, "
            f"last_used_at, last_error, rpm_cap FROM google_keys {where} ORDER BY id",
        )
        health = fetch_all(
            db,
            "SELECT key_id, model, cool_until, reason, last_error FROM key_health WHERE cool_until > ? "
            "ORDER BY cool_until",
            (now,),
        )
        window = rollup.sums(db, "key_id", current - window_minutes + 1, current + 1, now)
        short = rollup.sums(db, "key_id", current - SHORT_MINUTES + 1, current + 1, now)
        long = rollup.sums(db, "key_id", current - LONG_MINUTES + 1, current + 1, now)
        today = rollup.sums(db, "key_id", minute_of(pacific_day_start(now)), current + 1, now)
        this_minute = db.conn.execute(
            f"SELECT key_id, model, sum({' + '.join(OUTCOMES)}) FROM stats_minute "
            "WHERE minute = ? AND key_id != 0 GROUP BY key_id, model",
            (current,),
        ).fetchall()
        quotas = quota_rows(db, keys, now=now)
    cooldowns: dict[int, list[dict[str, Any]]] = {}
    for h in health:
        cooldowns.setdefault(h["key_id"], []).append(h)
    busiest_of: dict[int, tuple[int, str]] = {}
    for key_id, model, n in this_minute:
        busiest_of[key_id] = max(busiest_of.get(key_id, (0, "")), (n or 0, model or ""))
    out = []
    for key in keys:
        w = window.get(key["id"]) or zero()
        ok = w[INDEX["ok"]]
        bad = sum(w[INDEX[name]] for name in KEY_FAULTS)
        s, h, d = (sums.get(key["id"]) or zero() for sums in (short, long, today))
        mine = cooldowns.get(key["id"], [])
        sick = is_sick(s)
        busiest = busiest_of.get(key["id"], (0, ""))
        per_model = quotas.get(key["id"], [])
        # The model closest to its per-minute limit, counted as the pool counts; without such
        # counts (none recorded yet), the cap against this minute's tries.
        paced = max((q for q in per_model if q["rpm"]), default=None,
                    key=lambda q: (q["minute"] / q["rpm"], q["minute"]))
        if paced is not None:
            busiest, rpm_limit = (paced["minute"], paced["model"]), paced["rpm"]
        else:
            rpm_limit = key["rpm_cap"]
        closest = max((q for q in per_model if q["rpd"]), default=None,
                      key=lambda q: (q["today"] / q["rpd"], q["today"]))
        out.append({
            **key,
            "state": key_state(key, bool(mine), sick),
            "usable": key["status"] == "active" and key["invalid_reason"] is None,
            "sick": sick,
            "cooldowns": mine,
            "success_rate": ok / (ok + bad) if ok + bad else None,
            "attempts_5m": tries(s),
            "failed_5m": failed_by_class(s),
            "attempts_60m": tries(h),
            "failed_60m": failed_by_class(h),
            "attempts_today": tries(d),
            "requests_today": d[INDEX["requests"]],
            "tokens_today": d[INDEX["tokens_in"]] + d[INDEX["tokens_out"]],
            "rpm_used": busiest[0] if rpm_limit else None,
            "rpm_used_model": (busiest[1] or None) if rpm_limit else None,
            "rpm_limit": rpm_limit,
            "quotas": per_model,
            "day_used": closest["today"] if closest else None,
            "day_limit": closest["rpd"] if closest else None,
            "day_model": closest["model"] if closest else None,
            "no_quota": [q["model"] for q in per_model if q["no_quota"]],
        })
    return out


def quota_rows(db: Database, keys: list[dict[str, Any]], *, now: float) -> dict[int, list[dict[str, Any]]]:
    """Return, per key id, one dict per model in use today or with a known limit.

    Each: model; today (requests Google counted today, every worker's), minute (in the last
    minute) and tokens_minute (input tokens in it); rpd, rpm, tpm (the limits in force, None
    when unknown) with `sources` {kind: "learned" | "operator"}; no_quota (a learned limit
    of 0 today: the key's tier has none for the model). Read from key_limits and
    quota_usage (today's rows only). Call inside a snapshot.
    """
    held = held_by_pair(fetch_all(db, "SELECT key_id, model, kind, source, value, learned_at FROM key_limits"))
    used = {(u["key_id"], u["model"]): u for u in key_usage_today(db, pacific_day(now))}
    caps = {k["id"]: k.get("rpm_cap") for k in keys}
    pairs = {pair for pair in (*held, *used) if pair[1] and pair[0] in caps}
    out: dict[int, list[dict[str, Any]]] = {}
    for kid, model in sorted(pairs):
        limits = in_force(held.get((kid, model)) or {}, held.get((kid, "")) or {}, caps[kid])
        use = used.get((kid, model))
        minute, tokens = in_window(use["slots"], now) if use else (0, 0)
        zero = [lim for lim in limits.values() if lim.value == 0 and lim.source == "learned"
                and next_pacific_midnight(lim.at) > now]
        out.setdefault(kid, []).append({
            "model": model,
            "today": use["day_sends"] if use else 0,
            "minute": minute,
            "tokens_minute": tokens,
            **{kind: _positive(limits.get(kind)) for kind in ("rpd", "rpm", "tpm")},
            "sources": {kind: lim.source for kind, lim in limits.items()},
            "no_quota": bool(zero),
        })
    return out


def _positive(lim: Limit | None) -> int | None:
    return lim.value if lim is not None and lim.value > 0 else None


def quota_budget(db: Database, *, now: float) -> list[dict[str, Any]]:
    """Return each model's daily budget across the usable keys, fullest first.

    model, keys (usable keys with a known daily limit for it), limit (their limits added
    up), used (requests today on them, each capped at its limit), left, unknown (usable
    keys used for the model today whose daily limit is not known yet), no_quota (usable
    keys whose tier has no quota for it today).
    """
    with snapshot(db):
        keys = fetch_all(db, "SELECT id, rpm_cap FROM google_keys WHERE status = 'active' "
                             "AND invalid_reason IS NULL")
        per_key = quota_rows(db, keys, now=now)
    models: dict[str, dict[str, Any]] = {}
    for rows in per_key.values():
        for q in rows:
            m = models.setdefault(q["model"], {"model": q["model"], "keys": 0, "limit": 0, "used": 0,
                                               "left": 0, "unknown": 0, "no_quota": 0})
            if q["no_quota"]:
                m["no_quota"] += 1
            elif q["rpd"]:
                m["keys"] += 1
                m["limit"] += q["rpd"]
                m["used"] += min(q["today"], q["rpd"])
                m["left"] += max(0, q["rpd"] - q["today"])
            elif q["today"]:
                m["unknown"] += 1
    return sorted(models.values(), key=lambda m: (-m["limit"], m["model"]))


def pool_health(db: Database, *, now: float) -> dict[str, Any]:
    """Summarise the pool per model in use, for the strip above every pane.

    One snapshot of small reads: the keys table, running cooldowns, the last hour of
    per-minute stats by model (the minute index), and the requests started in the last
    CLIENT_WINDOW seconds (the started_at index) for the 429s and 5xx clients got.

    models (busiest first): model, usable (active keys neither dead nor resting for it),
    total (active keys), resting, back_at (when the soonest resting key returns, or None),
    got_429, got_5xx, requests (last hour). keys: total, usable, sick, dead, disabled.
    """
    current = minute_of(now)
    with snapshot(db):
        keys = _pool_keys(db, now)
        used = dict(db.conn.execute(
            "SELECT model, sum(requests) FROM stats_minute WHERE minute >= ? AND minute <= ? "
            "AND model != '' GROUP BY model",
            (current - IN_USE_MINUTES + 1, current),
        ).fetchall())
        # Pinned to the time index: a condition on model would tempt the planner into walking
        # the whole model index instead of the last minute's rows.
        got = {row[0]: row[1:] for row in db.conn.execute(
            "SELECT model, sum(CASE WHEN status = 429 THEN 1 ELSE 0 END), "
            "sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) FROM requests "
            "INDEXED BY requests_started_at WHERE started_at >= ? GROUP BY model",
            (now - CLIENT_WINDOW,),
        ) if row[0]}
    active = [k for k in keys if k["status"] == "active"]
    alive = [k for k in active if not k["invalid_reason"]]
    names = set(used) | set(got) | {c["model"] for k in alive for c in k["cooldowns"] if c["model"]}
    models = []
    for model in names:
        # A key rests for a model under that model's cooldown or one for every model ("");
        # it is back when the last of them ends.
        resting = [max(c["cool_until"] for c in k["cooldowns"] if c["model"] in (model, "", None))
                   for k in alive if any(c["model"] in (model, "", None) for c in k["cooldowns"])]
        limited, failed = got.get(model, (0, 0))
        models.append({
            "model": model,
            "usable": len(alive) - len(resting),
            "total": len(active),
            "resting": len(resting),
            "back_at": min(resting) if resting else None,
            "got_429": limited or 0,
            "got_5xx": failed or 0,
            "requests": used.get(model) or 0,
        })
    models.sort(key=lambda m: (-m["requests"], m["model"]))
    states = [k["state"] for k in keys]
    return {
        "models": models,
        "keys": {
            "total": len(active),
            "usable": len(alive),
            "sick": states.count("sick"),
            "dead": states.count("dead"),
            "disabled": states.count("disabled"),
        },
    }


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
