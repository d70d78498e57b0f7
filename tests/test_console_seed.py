"""A small seeded database for the console tests, and tests of the reads the panes make."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from proxy.store import add_event, add_key, add_user, migrate, open_db, transaction
from proxy.store.rollup import Rollup
from proxy.store.schema import REQUEST_COLUMNS, STATS_COUNTERS
from proxy.store.util import minute_of, pacific_day_start
from proxy.store.views import (
    EventFilter,
    RequestFilter,
    keys_overview,
    pool_health,
    proxy_status,
    recent_events,
    recent_requests,
    stats_series,
    users_overview,
)

from console.filters import parse

KEYS = {"fake-key-0001": "alpha", "fake-key-0002": "beta", "fake-key-0003": "gamma"}
USERS = {"alice": "fake-user-key-alice-0001", "bob": "fake-user-key-bob-00002"}


def request_row(i: int, now: float, **fields: Any) -> dict[str, Any]:
    """Return a finished request row; `fields` override the defaults."""
    row: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)  # columns later migrations add stay NULL
    row.update({
        "id": f"req-{i:04d}", "started_at": now - 100 + i, "ended_at": now - 99 + i, "user_id": 1,
        "user_label": "alice", "dialect": "native", "method": "POST",
        "path": "/v1beta/models/gemini-2.5-flash:generateContent", "model": "gemini-2.5-flash",
        "key_id": 1, "key_masked": "fake…0001", "status": 200, "attempts": 1,
        "attempts_detail": json.dumps([{"key_id": 1, "key": "fake…0001", "status": 200, "outcome": "ok",
                                        "reason": "", "ms": 800.0}]),
        "stream": 0, "ttfb_ms": 300.0, "duration_ms": 800.0, "tokens_in": 12, "tokens_out": 40,
        "error_class": None, "error_message": None, "worker_pid": 4242,
    })
    row.update(fields)
    return row


def seed_db(path: Path, now: float | None = None) -> dict[str, Any]:
    """Create a database with 3 keys (one cooling, one dead), 2 users, 30 requests, stats and events."""
    now = now or time.time()
    db = open_db(path)
    migrate(db)
    ids = {label: add_key(db, value, label=label) for value, label in KEYS.items()}
    users = {label: add_user(db, label, key)[0] for label, key in USERS.items()}
    rows = []
    for i in range(24):
        rows.append(request_row(i, now))
    rows.append(request_row(24, now, model="gemini-2.5-pro", path="/v1beta/models/gemini-2.5-pro:generateContent",
                            user_id=users["bob"], user_label="bob", key_id=2, key_masked="fake…0002"))
    rows.append(request_row(25, now, status=503, error_class="upstream_error", error_message="the model is overloaded",
                            key_id=2, key_masked="fake…0002", dialect="openai", path="/v1/chat/completions"))
    rows.append(request_row(26, now, status=400, error_class="client_error", error_message="bad [request] body"))
    rows.append(request_row(27, now, status=200, attempts=2, key_id=1, key_masked="fake…0001",
                            attempts_detail=json.dumps([
        {"key_id": 2, "key": "fake…0002", "status": 429, "outcome": "rate_limited", "reason": "per-minute quota",
         "ms": 120.0},
        {"key_id": 1, "key": "fake…0001", "status": 200, "outcome": "ok", "reason": "", "ms": 700.0},
    ])))
    rows.append(request_row(28, now, status=429, error_class="rate_limited", user_id=users["bob"], user_label="bob",
                            model="gemini-2.5-pro", key_id=3, key_masked="fake…0003"))
    rows.append(request_row(29, now, status=None, ended_at=None, duration_ms=None, ttfb_ms=None, tokens_in=None,
                            tokens_out=None, started_at=now - 3, attempts=0, attempts_detail=None, stream=1))
    counters = {c: 0 for c in STATS_COUNTERS}
    with transaction(db):
        cols = ", ".join(REQUEST_COLUMNS)
        db.conn.executemany(f"INSERT INTO requests ({cols}) VALUES ({', '.join(':' + c for c in REQUEST_COLUMNS)})",
                            rows)
        minute = minute_of(now)
        stats = [
            (minute, ids["alpha"], "gemini-2.5-flash", users["alice"], "native",
             {**counters, "requests": 25, "ok": 25, "tokens_in": 300, "tokens_out": 1000,
              "cost_micros": 2_590}),
            (minute - 1, ids["beta"], "gemini-2.5-pro", users["bob"], "native",
             {**counters, "requests": 2, "ok": 1, "rate_limited": 1, "upstream_error": 1, "tokens_in": 24,
              "tokens_out": 80}),
            (minute - 90, ids["gamma"], "gemini-2.5-pro", users["bob"], "openai",
             {**counters, "requests": 1, "rate_limited": 1}),
        ]
        for m, key_id, model, user_id, dialect, counts in stats:
            db.conn.execute(
                f"INSERT INTO stats_minute (minute, key_id, model, user_id, dialect, {', '.join(counts)}) "
                f"VALUES (?, ?, ?, ?, ?, {', '.join('?' * len(counts))})",
                (m, key_id, model, user_id, dialect, *counts.values()),
            )
        db.conn.execute(
            "INSERT INTO key_health (key_id, model, cool_until, reason, updated_at) VALUES (?, ?, ?, ?, ?)",
            (ids["beta"], "gemini-2.5-pro", now + 600, "per-minute quota", now),
        )
        db.conn.execute("UPDATE google_keys SET invalid_reason = 'API_KEY_INVALID', invalid_at = ?, "
                        "last_error = '400 API key not valid' WHERE id = ?", (now, ids["gamma"]))
        add_event(db, "upstream trouble on key fake…0002: overloaded", level="warning", status=503,
                  request_id="req-0025", key_id=ids["beta"], ts=now - 5)
        add_event(db, "key fake…0003 retired: API_KEY_INVALID", level="error", status=400, key_id=ids["gamma"],
                  ts=now - 4)
        add_event(db, "key fake…0002 resting for gemini-2.5-pro", level="info", status=429, key_id=ids["beta"],
                  ts=now - 3)
        db.conn.execute(
            "INSERT INTO workers (host, pid, started_at, last_seen, version, inflight, served) "
            "VALUES ('test', 4242, ?, ?, '0.1.0', 1, 29)", (now - 60, now + 3600),
        )
    db.close()
    return {"keys": ids, "users": users, "now": now}


def put_stats(db: Any, minute: int, key_id: int, model: str, user_id: int, **counts: int) -> None:
    """Add counters to one stats_minute bucket, as the writer would."""
    cols = ", ".join(counts)
    db.conn.execute(
        f"INSERT INTO stats_minute (minute, key_id, model, user_id, dialect, {cols}) "
        f"VALUES (?, ?, ?, ?, 'native', {', '.join('?' * len(counts))}) "
        f"ON CONFLICT(minute, key_id, model, user_id, dialect, host) DO UPDATE SET "
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in counts),
        (minute, key_id, model, user_id, *counts.values()),
    )


def add_sick_key(path: Path, now: float) -> int:
    """Add key "delta", which answered 503 to every try: 6 this minute, 4 (and 2 429s) half an hour ago.

    Every one of those requests went on to another key, so delta ended none of them.
    """
    db = open_db(path)
    try:
        delta = add_key(db, "fake-key-0004", label="delta")
        minute = minute_of(now)
        with transaction(db):
            put_stats(db, minute, delta, "gemini-2.5-flash", 1, upstream_error=6)
            put_stats(db, minute - 30, delta, "gemini-2.5-flash", 1, upstream_error=4, rate_limited=2)
            db.conn.execute("UPDATE google_keys SET last_error = '503 The model is overloaded.' WHERE id = ?",
                            (delta,))
    finally:
        db.close()
    return delta


def add_recent_requests(path: Path, now: float, rows: list[dict[str, Any]]) -> None:
    """Insert request rows (request_row fields) as the writer would."""
    db = open_db(path)
    try:
        cols = ", ".join(REQUEST_COLUMNS)
        with transaction(db):
            db.conn.executemany(
                f"INSERT INTO requests ({cols}) VALUES ({', '.join(':' + c for c in REQUEST_COLUMNS)})", rows)
    finally:
        db.close()


# -- the reads, without the UI ----------------------------------------------------------------------


def test_requests_newest_first_with_in_flight(tmp_path):
    seed_db(tmp_path / "c.db")
    db = open_db(tmp_path / "c.db", readonly=True)
    rows = recent_requests(db, RequestFilter(), now=time.time())
    assert [r["id"] for r in rows][:2] == ["req-0029", "req-0028"]
    assert rows[0]["status"] is None and len(rows) == 30


def test_request_filters_apply_in_sql(tmp_path):
    seed_db(tmp_path / "c.db")
    db = open_db(tmp_path / "c.db", readonly=True)

    def ids(line: str) -> set[str]:
        return {r["id"] for r in recent_requests(db, parse(line).requests(), now=time.time())}

    assert ids("model:gemini-2.5-pro") == {"req-0024", "req-0028"}
    assert ids("status:5xx") == {"req-0025"}
    assert ids("status:4xx") == {"req-0026", "req-0028"}
    assert ids("status:429,503") == {"req-0025", "req-0028"}
    assert ids("status:live") == {"req-0029"}
    assert ids("user:bob") == {"req-0024", "req-0028"}
    assert ids("key:beta") == {"req-0024", "req-0025"}
    assert ids("key:…0003") == ids("key:fake…0003") == ids("key:3") == {"req-0028"}
    assert ids("overloaded") == {"req-0025"}
    assert ids("user:bob status:err") == {"req-0028"}
    assert ids("key:nobody") == set()


def test_filter_parsing():
    p = parse('model:gemini-2.5-flash status:5xx user:alice key:…x7Qc "some text" more')
    assert p.models == ["gemini-2.5-flash"] and p.users == ["alice"] and p.keys == ["…x7Qc"]
    assert p.statuses == [(500, 599)] and p.text == "some text more" and not p.problems
    assert parse("level:warn").levels == ["warning", "error", "critical"]
    assert parse("status:abc").problems and parse("nope:x").text == "nope:x"


def test_events_tail_and_filters(tmp_path):
    seed_db(tmp_path / "c.db")
    db = open_db(tmp_path / "c.db", readonly=True)
    every = recent_events(db, EventFilter())
    assert every == sorted(every, key=lambda e: e["id"])
    assert recent_events(db, EventFilter(), after_id=every[-1]["id"]) == []
    assert [e["status"] for e in recent_events(db, parse("level:warning").events())] == [503, 400]
    assert [e["status"] for e in recent_events(db, parse("status:429").events())] == [429]
    assert len(recent_events(db, parse("retired").events())) == 1


def test_overviews(tmp_path):
    seeded = seed_db(tmp_path / "c.db")
    db = open_db(tmp_path / "c.db", readonly=True)
    now = seeded["now"]
    keys = {k["label"]: k for k in keys_overview(db, Rollup(), now=now)}
    assert keys["alpha"]["state"] == "usable" and keys["alpha"]["requests_today"] == 25
    assert keys["beta"]["state"] == "cooling" and keys["beta"]["success_rate"] == 1 / 3
    assert keys["gamma"]["state"] == "dead"
    assert "value" not in keys["alpha"]
    status = proxy_status(db, now=now)
    assert status["up"] and status["keys"] == {"usable": 1, "cooling": 1, "sick": 0, "dead": 1, "disabled": 0}
    users = {u["label"]: u for u in users_overview(db, Rollup(), now=now)}
    assert users["alice"]["requests_7d"] == 25 and users["bob"]["requests_7d"] == 3
    starts, per = stats_series(db, Rollup(), "model", "hour", now=now)
    assert len(starts) == 60 and sum(b[0] for b in per["gemini-2.5-flash"]) == 25
    starts, per = stats_series(db, Rollup(), "key_id", "week", now=now)
    assert len(starts) == 7 and sum(b[0] for b in per[seeded["keys"]["gamma"]]) == 1


def test_rollup_caches_settled_hours_and_rereads_the_open_one(tmp_path):
    seeded = seed_db(tmp_path / "c.db")
    db = open_db(tmp_path / "c.db")
    now = seeded["now"]
    rollup = Rollup()
    hour = minute_of(now) // 60
    first = rollup.sums(db, "all", (hour - 5) * 60, minute_of(now) + 1, now)[0][0]
    # A settled hour changing behind the cache is not seen until clear(); the open hour is.
    db.conn.execute("INSERT INTO stats_minute (minute, key_id, model, user_id, dialect, requests) "
                    "VALUES (?, 9, 'm', 9, 'native', 100)", ((hour - 3) * 60,))
    db.conn.execute("INSERT INTO stats_minute (minute, key_id, model, user_id, dialect, requests) "
                    "VALUES (?, 9, 'm', 9, 'native', 7)", (minute_of(now),))
    assert rollup.sums(db, "all", (hour - 5) * 60, minute_of(now) + 1, now)[0][0] == first + 7
    rollup.clear()
    assert rollup.sums(db, "all", (hour - 5) * 60, minute_of(now) + 1, now)[0][0] == first + 107


def test_pane_reads_go_through_indexes(tmp_path):
    """Every filtered read of the big tables is an index search, never a scan of the whole table."""
    seeded = seed_db(tmp_path / "c.db")
    db = open_db(tmp_path / "c.db", readonly=True)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    now = seeded["now"]
    for line in ("model:gemini-2.5-pro", "key:beta", "user:bob", "status:5xx", "status:live", "overloaded",
                 "model:gemini-2.5-pro status:4xx"):
        recent_requests(db, parse(line).requests(), now=now)
    recent_events(db, parse("level:error").events())
    recent_events(db, EventFilter(), after_id=1)
    rollup = Rollup()
    keys_overview(db, rollup, now=now)
    users_overview(db, rollup, now=now)
    pool_health(db, now=now)
    for span in ("hour", "day", "week"):
        stats_series(db, rollup, "model", span, now=now)
    proxy_status(db, now=now)
    db.conn.set_trace_callback(None)
    big = ("requests", "events", "stats_minute")
    checked = 0
    for sql in statements:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        plan = [row[3] for row in db.conn.execute("EXPLAIN QUERY PLAN " + sql)]
        for step in plan:
            if any(step.startswith(f"SCAN {table}") for table in big):
                raise AssertionError(f"full scan in {sql!r}: {plan}")
        checked += 1
    assert checked > 20


def test_pool_health_reads_only_recent_rows(tmp_path):
    """The strip's read walks the time index of requests and the minute index of stats, nothing wider."""
    seeded = seed_db(tmp_path / "c.db")
    db = open_db(tmp_path / "c.db", readonly=True)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    pool_health(db, now=seeded["now"])
    db.conn.set_trace_callback(None)
    plans = {sql: " / ".join(row[3] for row in db.conn.execute("EXPLAIN QUERY PLAN " + sql))
             for sql in statements if sql.lstrip().upper().startswith("SELECT")}
    for sql, plan in plans.items():
        if "FROM requests" in sql:
            assert "requests_started_at (started_at>?)" in plan, plan
        if "FROM stats_minute" in sql:
            assert "(minute>? AND minute<?)" in plan, plan
    assert sum("FROM requests" in sql for sql in plans) == 1


def test_a_key_failing_every_try_is_sick_with_its_failures_by_class(tmp_path):
    seeded = seed_db(tmp_path / "c.db")
    now = seeded["now"]
    delta = add_sick_key(tmp_path / "c.db", now)
    db = open_db(tmp_path / "c.db", readonly=True)
    keys = {k["label"]: k for k in keys_overview(db, Rollup(), now=now)}
    sick = keys["delta"]
    assert sick["id"] == delta and sick["state"] == "sick" and sick["sick"] and sick["usable"]
    assert (sick["attempts_5m"], sick["failed_5m"]) == (6, {"upstream_error": 6})
    assert (sick["attempts_60m"], sick["failed_60m"]) == (12, {"upstream_error": 10, "rate_limited": 2})
    # Keys count tries: delta ended no request, yet it was tried; beta ended 2 and was tried 3 times.
    half_hour_ago_today = minute_of(now) - 30 >= minute_of(pacific_day_start(now))
    assert sick["requests_today"] == 0 and sick["attempts_today"] == (12 if half_hour_ago_today else 6)
    assert keys["alpha"]["state"] == "usable" and not keys["alpha"]["sick"]
    if minute_of(now) - 1 >= minute_of(pacific_day_start(now)):
        assert (keys["beta"]["requests_today"], keys["beta"]["attempts_today"]) == (2, 3)
    assert keys["beta"]["failed_5m"] == {"rate_limited": 1, "upstream_error": 1}
    status = proxy_status(db, now=now)
    assert status["keys"] == {"usable": 1, "cooling": 1, "sick": 1, "dead": 1, "disabled": 0}


def test_rate_limits_alone_do_not_make_a_key_sick(tmp_path):
    seeded = seed_db(tmp_path / "c.db")
    db = open_db(tmp_path / "c.db")
    put_stats(db, minute_of(seeded["now"]), seeded["keys"]["alpha"], "gemini-2.5-pro", 1, rate_limited=40)
    keys = {k["label"]: k for k in keys_overview(db, Rollup(), now=seeded["now"])}
    assert keys["alpha"]["state"] == "usable" and keys["alpha"]["failed_5m"] == {"rate_limited": 40}


def test_header_rate_follows_the_last_ten_seconds(tmp_path):
    seeded = seed_db(tmp_path / "c.db")
    now = seeded["now"]
    # 24 requests in the last 3 seconds (plus the seeded one in flight): 2.5 req/s over 10 s,
    # where a 60 s average would still say 0.4.
    add_recent_requests(tmp_path / "c.db", now,
                        [request_row(100 + i, now, started_at=now - 3 + i / 8, ended_at=now) for i in range(24)])
    status = proxy_status(open_db(tmp_path / "c.db", readonly=True), now=now)
    assert status["rate_window"] == 10 and status["rate"] == 2.5


def test_pool_health_per_model(tmp_path):
    seeded = seed_db(tmp_path / "c.db")
    now = seeded["now"]
    delta = add_sick_key(tmp_path / "c.db", now)
    add_recent_requests(tmp_path / "c.db", now, [
        request_row(100, now, started_at=now - 20, status=429, model="gemini-2.5-pro", error_class="rate_limited"),
        request_row(101, now, started_at=now - 15, status=503, error_class="upstream_error"),
        request_row(102, now, started_at=now - 10, status=502, error_class="upstream_error"),
        request_row(103, now, started_at=now - 90, status=503, error_class="upstream_error"),  # too old
    ])
    db = open_db(tmp_path / "c.db")
    # delta rests for every model for 30 s; beta (seeded) rests for gemini-2.5-pro for 600 s.
    db.conn.execute("INSERT INTO key_health (key_id, model, cool_until, reason, updated_at) VALUES (?, '', ?, 'x', ?)",
                    (delta, now + 30, now))
    health = pool_health(db, now=now)
    assert health["keys"] == {"total": 4, "usable": 3, "sick": 1, "dead": 1, "disabled": 0}
    flash, pro = health["models"]
    assert flash["model"] == "gemini-2.5-flash" and pro["model"] == "gemini-2.5-pro"  # busiest first
    assert (flash["usable"], flash["total"], flash["resting"]) == (2, 4, 1)
    assert flash["back_at"] == now + 30 and (flash["got_429"], flash["got_5xx"]) == (0, 2)
    assert (pro["usable"], pro["total"], pro["resting"]) == (1, 4, 2)
    assert pro["back_at"] == now + 30 and (pro["got_429"], pro["got_5xx"]) == (1, 0)
