"""The batched writer: nothing lost, counters summed, safe next to other connections."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.store import Writer, add_key, enable_key, migrate, open_db
from proxy.store import db as store_db
from proxy.store.util import mask_key, minute_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def path(db_url):
    migrate(open_db(db_url))
    return db_url


@pytest.fixture
def reader(path):
    database = open_db(path)
    yield database
    database.close()


OK_COUNT = "SELECT count(*), count(CASE WHEN status = 200 THEN 1 END) FROM requests"


def started(path, **kwargs) -> Writer:
    writer = Writer(path, **kwargs)
    writer.start()
    return writer


def request_rows(db) -> dict[str, dict]:
    return {r["id"]: r for r in db.query("SELECT * FROM requests ORDER BY seq")}


def test_requests_start_then_finish(path, reader):
    writer = started(path, interval=0.01)
    n = 400
    t0 = time.time()
    for i in range(n):
        writer.request_started({
            "id": f"req-{i}", "started_at": t0 + i, "user_id": 7, "user_label": "alice", "dialect": "openai",
            "method": "POST", "path": "/v1/chat/completions", "model": "gemini-x", "stream": True,
            "worker_pid": 123,
        })
        if i == n // 2:
            assert writer.flush()  # half the starts are committed before their finish arrives
            inflight = request_rows(reader)
            assert len(inflight) == n // 2 + 1
            assert all(r["status"] is None for r in inflight.values())
    for i in range(n):
        writer.request_finished({
            "id": f"req-{i}", "ended_at": t0 + i + 1, "status": 200 if i % 2 else 429, "attempts": 2,
            "attempts_detail": [{"key_id": 1, "status": 429}, {"key_id": 2, "status": 200}],
            "key_id": 2, "key_masked": "fake…0002", "ttfb_ms": 12.5, "duration_ms": 99.0,
            "tokens_in": 10, "tokens_out": 20, "user_label": None,
        })
    writer.close()
    rows = request_rows(reader)
    assert len(rows) == n
    for i in range(n):
        r = rows[f"req-{i}"]
        assert r["status"] == (200 if i % 2 else 429)
        assert r["started_at"] == t0 + i and r["ended_at"] == t0 + i + 1
        assert (r["user_label"], r["stream"], r["attempts"], r["worker_pid"]) == ("alice", 1, 2, 123)
        assert json.loads(r["attempts_detail"])[1]["status"] == 200


def test_start_and_finish_in_one_batch_is_one_row(path, reader):
    writer = Writer(path)  # not started: both ops will be in the first batch
    writer.request_started({"id": "a", "started_at": 1.0, "model": "m"})
    writer.request_finished({"id": "a", "status": 200, "ended_at": 2.0})
    assert writer.depth == 2
    writer.start()
    assert writer.flush()
    assert writer.depth == 0
    rows = list(reader.query("SELECT seq, id, started_at, ended_at, status, model, attempts FROM requests"))
    assert rows == [{"seq": 1, "id": "a", "started_at": 1.0, "ended_at": 2.0, "status": 200, "model": "m",
                     "attempts": 0}]
    writer.close()


def test_finish_without_start(path, reader):
    writer = started(path)
    writer.request_finished({"id": "lonely", "status": 502, "error_class": "upstream", "started_at": 5.0})
    writer.close()
    assert request_rows(reader)["lonely"]["status"] == 502
    assert request_rows(reader)["lonely"]["attempts"] == 0


def test_late_start_never_overwrites_a_finish(path, reader):
    writer = started(path)
    writer.request_finished({"id": "x", "status": 200, "attempts": 3})
    assert writer.flush()
    writer.request_started({"id": "x", "attempts": 0})
    writer.close()
    assert (request_rows(reader)["x"]["status"], request_rows(reader)["x"]["attempts"]) == (200, 3)


FIRST = dict(key_id=2, key_masked="fake…0002", ttfb_ms=41.5, attempts=2,
             attempts_detail=[{"key_id": 1, "status": 429}, {"key_id": 2, "status": 200}])


def test_first_byte_fills_an_in_flight_row(path, reader):
    writer = started(path)
    writer.request_started({"id": "s", "started_at": 1.0, "model": "m", "stream": True})
    assert writer.flush()
    writer.request_first_byte("s", **FIRST)
    assert writer.flush()
    row = request_rows(reader)["s"]
    assert row["status"] is None  # still in flight, now with its key and first byte
    assert (row["key_id"], row["key_masked"], row["ttfb_ms"], row["attempts"]) == (2, "fake…0002", 41.5, 2)
    assert json.loads(row["attempts_detail"])[0]["status"] == 429
    writer.request_finished({"id": "s", "status": 200, "duration_ms": 900.0, "attempts": 2})
    writer.close()
    row = request_rows(reader)["s"]
    assert (row["status"], row["key_masked"], row["ttfb_ms"], row["duration_ms"]) == (200, "fake…0002", 41.5, 900.0)


def test_first_byte_in_the_start_batch_is_one_insert(path, reader):
    writer = Writer(path)  # not started: both ops land in the first batch
    writer.request_started({"id": "s", "started_at": 1.0, "model": "m"})
    writer.request_first_byte("s", **FIRST)
    writer.start()
    writer.close()
    row = request_rows(reader)["s"]
    assert (row["status"], row["key_id"], row["ttfb_ms"], row["started_at"]) == (None, 2, 41.5, 1.0)


def test_first_byte_never_overwrites_a_finish(path, reader):
    writer = started(path)
    writer.request_started({"id": "a", "started_at": 1.0})
    writer.request_finished({"id": "a", "status": 502, "key_id": 3, "key_masked": "fake…0003", "attempts": 3})
    assert writer.flush()
    writer.request_first_byte("a", **FIRST)  # late: the finish is already written
    writer.request_started({"id": "b", "started_at": 1.0})
    writer.request_finished({"id": "b", "status": 200, "key_id": 3, "ttfb_ms": 7.0, "attempts": 1})
    writer.request_first_byte("b", **FIRST)  # same batch as its finish, queued after it
    writer.close()
    rows = request_rows(reader)
    assert (rows["a"]["status"], rows["a"]["key_id"], rows["a"]["attempts"]) == (502, 3, 3)
    assert (rows["b"]["status"], rows["b"]["key_id"], rows["b"]["ttfb_ms"], rows["b"]["attempts"]) == (200, 3, 7.0, 1)


def _request_ops(rid: str) -> list[tuple]:
    """A start, then two finishes (the second says more), as a caller might queue them."""
    detail = [{"key_id": 1, "status": 429}, {"key_id": 2, "status": 200}]
    return [
        ("request_started", {"id": rid, "started_at": 1.0, "model": "m", "stream": True,
                             "user_label": "alice", "worker_pid": 9, "no_such_column": "x",
                             "error_message": "from the start"}),
        ("request_finished", {"id": rid, "status": 200, "user_label": None, "attempts": 2,
                              "attempts_detail": detail, "key_id": 2, "key_masked": "fake…0002",
                              "ttfb_ms": 4.5, "duration_ms": 5.0, "error_message": None}),
        ("request_finished", {"id": rid, "status": 500, "tokens_in": 3, "cost_usd": None,
                              "stream": False}),
    ]


def test_a_request_merged_in_one_batch_is_the_row_separate_batches_write(path, reader):
    writer = Writer(path)  # not started: the first request's ops all land in one batch
    for op in _request_ops("one"):
        writer.put(op)
    writer.start()
    assert writer.flush()
    for op in _request_ops("apart"):
        writer.put(op)
        assert writer.flush()  # each op its own batch: an insert, then two upserts
    writer.close()
    rows = request_rows(reader)
    one, apart = ({k: v for k, v in rows[rid].items() if k not in ("seq", "id")} for rid in ("one", "apart"))
    assert one == apart
    # What the finish left out (None) is the start's; what it says wins; lists become JSON.
    assert (one["user_label"], one["started_at"], one["model"], one["worker_pid"]) == ("alice", 1.0, "m", 9)
    assert (one["status"], one["attempts"], one["tokens_in"], one["stream"]) == (500, 2, 3, 0)
    assert one["error_message"] == "from the start" and one["cost_usd"] is None
    assert json.loads(one["attempts_detail"]) == [{"key_id": 1, "status": 429}, {"key_id": 2, "status": 200}]


def test_ops_are_left_as_queued(path):
    ops = _request_ops("a")
    queued = json.dumps(ops)
    writer = started(path)
    for op in ops:
        writer.put(op)
    writer.request_first_byte("a", **FIRST)
    writer.close()
    assert json.dumps(ops) == queued  # a batch that must be redone starts from the same ops


def test_key_shapes_are_masked_on_every_way_a_request_row_is_written(path, reader):
    key = "AIza" + "Sy" + "k-9_Z" * 7 + "abc"  # Google's shape, built here so no scanner flags it
    quoted = f"Consumer 'api_key:{key}' has been suspended."
    detail = [{"key_id": 1, "reason": quoted}]
    writer = Writer(path)  # not started: the first batch holds a, b, the start of c and d
    writer.request_started({"id": "a", "started_at": 1.0})
    writer.request_finished({"id": "a", "status": 403, "error_message": quoted, "attempts_detail": detail})
    writer.request_started({"id": "b", "started_at": 1.0})
    writer.request_first_byte("b", key_id=1, key_masked="fake…0001", ttfb_ms=1.0, attempts=1,
                              attempts_detail=detail)
    writer.request_started({"id": "c", "started_at": 1.0})
    writer.request_finished({"id": "d", "status": 403, "attempts_detail": detail})
    writer.request_finished({"id": "d", "error_message": quoted})
    writer.start()
    assert writer.flush()
    writer.request_first_byte("c", key_id=1, key_masked="fake…0001", ttfb_ms=1.0, attempts=1,
                              attempts_detail=detail)  # an update of the row in flight
    writer.request_finished({"id": "e", "status": 403, "error_message": quoted})  # a lone finish
    writer.close()
    rows = request_rows(reader)
    stored = json.dumps({rid: (r["error_message"], r["attempts_detail"]) for rid, r in rows.items()},
                        ensure_ascii=False)
    assert key not in stored
    masked = mask_key(key)
    assert {rid: [masked in (text or "") for text in (r["error_message"], r["attempts_detail"])]
            for rid, r in rows.items()} == {"a": [True, True], "b": [False, True], "c": [False, True],
                                            "d": [True, True], "e": [True, False]}


def test_attempts_aggregate_into_minutes(path, reader):
    writer = started(path, interval=0.01)
    base = 1_700_000_000.0
    expected: dict[tuple, dict[str, int]] = {}

    def attempt(ts, key_id, model, user_id, dialect, outcome, final, t_in=0, t_out=0):
        writer.attempt(ts=ts, key_id=key_id, model=model, user_id=user_id, dialect=dialect,
                       outcome=outcome, final=final, tokens_in=t_in, tokens_out=t_out)
        k = (minute_of(ts), key_id or 0, model or "", user_id or 0, dialect or "native")
        e = expected.setdefault(k, {})
        e[outcome] = e.get(outcome, 0) + 1
        if final:
            e["requests"] = e.get("requests", 0) + 1
            e["tokens_in"] = e.get("tokens_in", 0) + t_in
            e["tokens_out"] = e.get("tokens_out", 0) + t_out

    for i in range(300):
        ts = base + i * 7  # spreads over ~35 minutes
        attempt(ts, 1, "gemini-a", 5, "native", "rate_limited", False)
        attempt(ts, 2, "gemini-a", 5, "native", "ok", True, 100, 50)
        attempt(ts, None, None, None, None, "rejected", True)
        attempt(ts, 3, "gemini-b", 6, "openai", "key_dead", False)
        if i % 3 == 0:
            attempt(ts, 4, "gemini-b", 6, "openai", "upstream_error", True)
            attempt(ts, 4, "gemini-b", 6, "openai", "client_error", True, 7, 0)
        if i == 150:
            writer.flush()  # later batches must add to rows earlier batches created
    writer.close()
    counters = ["requests", "ok", "rate_limited", "key_dead", "upstream_error", "client_error",
                "rejected", "tokens_in", "tokens_out"]
    got = {
        (r["minute"], r["key_id"], r["model"], r["user_id"], r["dialect"]): {c: r[c] for c in counters if r[c]}
        for r in reader.query("SELECT * FROM stats_minute")
    }
    assert got == {k: {c: v for c, v in e.items() if v} for k, e in expected.items()}
    assert reader.conn.execute("SELECT sum(requests) FROM stats_minute").fetchone()[0] == 300 * 2 + 100 * 2


def test_unknown_outcome_fails_fast(path):
    writer = Writer(path)
    with pytest.raises(ValueError, match="unknown outcome"):
        writer.attempt(ts=0, key_id=1, model="m", user_id=1, dialect="native", outcome="great", final=True)


def test_key_cooled_keeps_the_longest(path, reader):
    writer = started(path, interval=0.01)
    t = time.time()
    writer.key_cooled(1, "m", t + 100, "per-day", "quota day")
    writer.key_cooled(1, "m", t + 10, "per-minute", "quota minute")  # shorter, same batch
    writer.key_cooled(1, "other", t + 5, "per-minute", "e")
    assert writer.flush()
    writer.key_cooled(1, "m", t + 50, "per-minute", "later error")  # shorter, later batch
    assert writer.flush()
    rows = {r["model"]: r for r in reader.query("SELECT * FROM key_health")}
    assert rows["m"]["cool_until"] == pytest.approx(t + 100)
    assert rows["m"]["reason"] == "per-day"
    assert rows["m"]["last_error"] == "later error"
    writer.key_cooled(1, "m", t + 500, "per-day", "longer")
    writer.close()
    row = reader.conn.execute("SELECT cool_until, reason FROM key_health WHERE model = 'm'").fetchone()
    assert row == (pytest.approx(t + 500), "per-day")


def test_key_used_and_invalid(path, reader):
    key_id = add_key(reader, "fake-key-0001")
    updated_at = reader["google_keys"].get(key_id)["updated_at"]
    writer = started(path)
    t = time.time()
    writer.key_used(key_id, t + 1)
    writer.key_used(key_id, t + 3, error="429 quota")
    writer.key_used(key_id, t + 2)
    writer.key_invalid(key_id, "API_KEY_INVALID", t + 4)
    writer.key_invalid(key_id, "second reason is ignored", t + 5)
    writer.close()
    row = reader["google_keys"].get(key_id)
    assert row["last_used_at"] == t + 3 and row["last_error"] == "429 quota"
    assert (row["invalid_reason"], row["invalid_at"]) == ("API_KEY_INVALID", t + 4)
    assert row["updated_at"] == updated_at  # only operators touch updated_at


def test_operator_change_beats_stale_queued_failures(path, reader):
    key_id = add_key(reader, "fake-key-0001")
    seen_at = time.time()
    time.sleep(0.01)
    enable_key(reader, key_id)  # the operator acts after the failures were seen...
    writer = started(path)
    writer.key_invalid(key_id, "API_KEY_INVALID", seen_at)  # ...but before they were written
    writer.put(("key_cooled", key_id, "m", time.time() + 60, "r", "e", seen_at))
    writer.close()
    assert reader["google_keys"].get(key_id)["invalid_reason"] is None
    assert reader["key_health"].count == 0


def test_events_and_pins(path, reader):
    writer = started(path)
    writer.event("warning", "key fake…0001 rate limited", request_id="r1", status=429, key_id=1, model="m", ts=10.0)
    writer.event("info", "hello")
    writer.pin("files/abc", 1)
    writer.pin("files/abc", 2)
    writer.close()
    events = list(reader.query("SELECT ts, level, message, request_id, status, key_id, model FROM events ORDER BY id"))
    assert events[0] == {"ts": 10.0, "level": "warning", "message": "key fake…0001 rate limited",
                         "request_id": "r1", "status": 429, "key_id": 1, "model": "m"}
    assert events[1]["message"] == "hello" and events[1]["ts"] > 0
    assert [(p["name"], p["key_id"]) for p in reader.query("SELECT * FROM pins")] == [("files/abc", 2)]


def test_close_flushes_everything(path, reader):
    writer = started(path, interval=30, max_batch=700)  # close must not wait for the interval
    n = 5000
    for i in range(n):
        writer.request_started({"id": f"r{i}", "started_at": float(i)})
        writer.attempt(ts=1e9, key_id=1, model="m", user_id=1, dialect="native", outcome="ok", final=True)
        writer.request_finished({"id": f"r{i}", "status": 200})
    start = time.monotonic()
    writer.close()
    assert time.monotonic() - start < 20
    assert reader.conn.execute(OK_COUNT).fetchone() == (n, n)
    assert reader.conn.execute("SELECT sum(requests) FROM stats_minute").fetchone()[0] == n
    writer.close()  # idempotent


def test_close_without_start_writes_what_was_queued(path, reader):
    writer = Writer(path)
    writer.event("info", "queued before start")
    writer.close()
    assert reader["events"].count == 1


def test_writes_while_a_reader_holds_a_read_transaction(path, reader):
    if "://" in str(path):
        pytest.skip("SQLite's file locks; PostgreSQL readers never block writers")
    reader.conn.execute("BEGIN")
    assert reader.conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 0
    writer = started(path, interval=0.01)
    for i in range(100):
        writer.request_started({"id": f"r{i}"})
    assert writer.flush(timeout=5)
    # The open snapshot still sees the old state; a fresh connection sees the writes.
    assert reader.conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 0
    other = open_db(path, readonly=True)
    assert other.conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 100
    reader.conn.execute("COMMIT")
    writer.close()


def test_locked_database_is_retried_not_dropped(path, reader, monkeypatch):
    if "://" in str(path):
        pytest.skip("SQLite's file locks; PostgreSQL readers never block writers")
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_MS", 20)  # make "database is locked" come quickly
    writer = started(path, interval=0.01)
    blocker = open_db(path)
    blocker.conn.execute("BEGIN IMMEDIATE")
    for i in range(50):
        writer.request_started({"id": f"r{i}"})
    assert not writer.flush(timeout=0.5)  # blocked, but the ops are kept
    blocker.conn.execute("COMMIT")
    assert writer.flush(timeout=10)
    writer.close()
    assert reader["requests"].count == 50


def test_a_bad_op_is_dropped_alone(path, reader, caplog):
    writer = started(path)
    writer.request_started({"id": "good-1"})
    writer.put(("no_such_op", 1))
    writer.request_started({"started_at": 1.0})  # no id: cannot be stored
    writer.event("info", "still written")
    with caplog.at_level(logging.ERROR, logger="proxy.store.writer"):
        writer.close()
    assert set(request_rows(reader)) == {"good-1"}
    assert reader["events"].count == 1
    assert "dropped 2 bad ops" in caplog.text


def test_heartbeat_upserts_the_workers_row(path, reader):
    calls = []

    def heartbeat():
        calls.append(1)
        return {"inflight": 3, "served": len(calls), "state": "stopping", "ignored": "x"}

    writer = started(path, interval=0.01, heartbeat=heartbeat)
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:  # two beats: the row was upserted
        time.sleep(0.02)
    writer.close()
    rows = list(reader.query("SELECT * FROM workers"))
    assert len(rows) == 1
    row = rows[0]
    assert row["inflight"] == 3 and row["served"] == len(calls) >= 2 and row["state"] == "stopping"
    assert row["version"] and row["last_seen"] >= row["started_at"] > 0


CHILD = """
import sys, time
from proxy.store import Writer
path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = Writer(path, interval=0.01)
w.start()
for i in range(n):
    w.request_started({"id": f"{tag}-{i}", "started_at": time.time()})
    w.attempt(ts=1e9, key_id=1, model="m", user_id=1, dialect="native", outcome="ok", final=True, tokens_in=1)
    w.event("info", f"{tag} {i}")
    if i % 50 == 0:
        time.sleep(0.001)
    w.request_finished({"id": f"{tag}-{i}", "status": 200})
w.close()
"""


def test_concurrent_writers_in_several_processes_lose_nothing(path, reader):
    n = 1500
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"p{k}", str(n)], cwd=ROOT)
        for k in range(2)
    ]
    local = [started(path, interval=0.005) for _ in range(2)]
    for i in range(n):
        for k, w in enumerate(local):
            w.request_started({"id": f"t{k}-{i}"})
            w.attempt(ts=1e9, key_id=1, model="m", user_id=1, dialect="native", outcome="ok", final=True, tokens_in=1)
            w.event("info", f"t{k} {i}")
            w.request_finished({"id": f"t{k}-{i}", "status": 200})
    for w in local:
        w.close()
    for child in children:
        assert child.wait(timeout=60) == 0
    total = 4 * n
    assert reader.conn.execute(OK_COUNT).fetchone() == (total, total)
    assert reader.conn.execute("SELECT requests, ok, tokens_in FROM stats_minute").fetchall() == [(total, total, total)]
    assert reader["events"].count == total


def test_put_is_cheap(path):
    writer = Writer(path)  # not started: measure the queue alone
    n = 200_000
    op = ("event", 0.0, "info", "x", None, None, None, None)
    start = time.perf_counter()
    for _ in range(n):
        writer.put(op)
    put_cost = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        writer.attempt(ts=1e9, key_id=1, model="m", user_id=1, dialect="native", outcome="ok", final=True)
    attempt_cost = (time.perf_counter() - start) / n
    row = {"id": "r", "started_at": 1.0, "model": "m", "user_id": 1, "dialect": "native", "path": "/v1"}
    start = time.perf_counter()
    for _ in range(n):
        writer.request_started(row)
    started_cost = (time.perf_counter() - start) / n
    print(f"\nput {put_cost * 1e6:.3f} µs, attempt {attempt_cost * 1e6:.3f} µs, "
          f"request_started {started_cost * 1e6:.3f} µs")
    assert writer.depth == 3 * n


GEVENT_CHILD = """
from gevent import monkey
monkey.patch_all()
import sys, time, gevent
from proxy.store import Writer, open_db
path = sys.argv[1]
ticks = []
def ticker():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)
gevent.spawn(ticker)
w = Writer(path, interval=0.01)
w.start()
blocker = open_db(path)
for i in range(200):
    w.request_started({"id": f"g{i}"})
gevent.sleep(0.3)  # the writer thread is busy writing and then idling; the hub must keep going
before = len(ticks)
gevent.sleep(0.3)
assert len(ticks) - before >= 10, (before, len(ticks))
w.close()
assert open_db(path).conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 200
print("ok", len(ticks))
"""


def test_writer_runs_on_a_real_thread_under_gevent(path):
    out = subprocess.run(
        [sys.executable, "-c", GEVENT_CHILD, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_a_broken_heartbeat_does_not_sink_the_batch(path, reader):
    writer = started(path, interval=0.01, heartbeat=lambda: {"inflight": {"not": "storable"}})
    writer.event("info", "kept")
    writer.close()
    assert reader["events"].count == 1


def test_every_row_carries_the_host_that_wrote_it(path, reader):
    a = started(path, interval=0.01, host="host-a", heartbeat=lambda: {"state": "up"})
    b = started(path, interval=0.01, host="host-b", heartbeat=lambda: {"state": "up"})
    for writer, tag in ((a, "a"), (b, "b")):
        for i in range(3):
            writer.request_started({"id": f"{tag}{i}", "started_at": 1e9})
            writer.request_finished({"id": f"{tag}{i}", "status": 200})
            # The same bucket key from both hosts: two rows, never one contended row.
            writer.attempt(ts=1e9, key_id=1, model="m", user_id=1, dialect="native", outcome="ok",
                           final=True)
        writer.event("info", f"hello from {tag}")
    a.close()
    b.close()
    hosts = {r["id"]: r["host"] for r in reader.query("SELECT id, host FROM requests")}
    assert hosts == {**{f"a{i}": "host-a" for i in range(3)}, **{f"b{i}": "host-b" for i in range(3)}}
    events = {r["message"]: r["host"] for r in reader.query("SELECT message, host FROM events")}
    assert events == {"hello from a": "host-a", "hello from b": "host-b"}
    buckets = {r["host"]: r["requests"] for r in reader.query("SELECT host, requests FROM stats_minute")}
    assert buckets == {"host-a": 3, "host-b": 3}
    assert sorted(r["host"] for r in reader.query("SELECT host FROM workers")) == ["host-a", "host-b"]


def test_the_host_defaults_to_proxy_host_name_then_the_hostname(path, monkeypatch):
    import socket

    monkeypatch.delenv("PROXY_HOST_NAME", raising=False)
    assert Writer(path).host == socket.gethostname()
    monkeypatch.setenv("PROXY_HOST_NAME", "from-env")
    assert Writer(path).host == "from-env"
    assert Writer(path, host="given").host == "given"
