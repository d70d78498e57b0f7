"""What the database tells the console while requests run on a live proxy (gunicorn + gevent).

A stream in flight names its key and first byte; events name their request; a draining
worker says "stopping"; a killed proxy's rows read as lost, not in flight.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import requests
from conftest import USER_KEY, wait_for

from proxy.store import open_db
from proxy.store.views import HEARTBEAT_FRESH, RequestFilter, proxy_status, recent_requests

BODY = {"contents": [{"role": "user", "parts": [{"text": "tell me a long story about the sea"}]}]}
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"


def query(db_path: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    db = open_db(db_path, readonly=True)
    try:
        return list(db.query(sql, args))
    finally:
        db.close()


def listing(db_path: str, now: float | None = None) -> list[dict[str, Any]]:
    """Return the Requests pane's read."""
    db = open_db(db_path, readonly=True)
    try:
        return recent_requests(db, RequestFilter(), now=now or time.time())
    finally:
        db.close()


def status(db_path: str) -> dict[str, Any]:
    db = open_db(db_path, readonly=True)
    try:
        return proxy_status(db, now=time.time())
    finally:
        db.close()


class SlowStream(threading.Thread):
    """A streaming call read to its end (or until the server goes away) on its own thread."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.chunks, self.status, self.error = url, 0, None, None

    def run(self) -> None:
        try:
            with requests.post(self.url + STREAM, json=BODY, headers={"x-goog-api-key": USER_KEY},
                               stream=True, timeout=30) as r:
                self.status = r.status_code
                for _ in r.iter_content(None):
                    self.chunks += 1
        except requests.RequestException as exc:
            self.error = exc


def in_flight_with_key(db_path: str) -> dict[str, Any] | None:
    rows = query(db_path, "SELECT * FROM requests WHERE status IS NULL AND key_masked IS NOT NULL")
    return rows[0] if rows else None


def test_a_stream_in_flight_shows_its_key_and_first_byte(live_factory, fake):
    fake.configure(chunk_delay_ms=500, chunks=6)
    proxy = live_factory()
    stream = SlowStream(proxy.url)
    stream.start()
    row = wait_for(lambda: in_flight_with_key(proxy.db))
    assert row["key_masked"].startswith("fake…") and row["key_id"]
    assert row["ttfb_ms"] is not None and row["ttfb_ms"] > 0 and row["attempts"] == 1
    assert json.loads(row["attempts_detail"])[0]["status"] == 200
    shown = next(r for r in listing(proxy.db) if r["id"] == row["id"])
    assert shown["status"] is None and not shown["lost"] and shown["key_masked"] == row["key_masked"]
    stream.join(timeout=30)
    assert stream.status == 200 and stream.error is None
    done = wait_for(lambda: query(proxy.db, "SELECT * FROM requests WHERE id = ? AND status IS NOT NULL",
                                  row["id"]))[0]
    assert done["status"] == 200 and done["key_masked"] == row["key_masked"]
    assert done["ttfb_ms"] == row["ttfb_ms"] and done["duration_ms"] > 1000


def test_events_name_the_request_they_happened_in(live_factory, fake):
    # Two keys are overloaded: a request that meets one first logs "upstream trouble".
    fake.set_keys({"fake-key-0001": {"mode": "overload"}, "fake-key-0002": {"mode": "overload"}})
    proxy = live_factory()

    def troubled() -> list[dict[str, Any]]:
        r = requests.post(proxy.url + GENERATE, json=BODY, headers={"x-goog-api-key": USER_KEY}, timeout=30)
        assert r.status_code == 200
        return query(proxy.db, "SELECT * FROM events WHERE message LIKE 'upstream trouble%'")

    def finished(request_id: str) -> dict[str, Any] | None:
        # The event and the request's finish may land in different writer batches.
        rows = query(proxy.db, "SELECT * FROM requests WHERE id = ? AND status IS NOT NULL", request_id)
        return rows[0] if rows else None

    events = wait_for(troubled)
    for event in events:
        assert event["request_id"], event
        row = wait_for(lambda: finished(event["request_id"]))
        tried = json.loads(row["attempts_detail"])
        assert any(a["key_id"] == event["key_id"] and a["status"] == 503 for a in tried)

    # A stream that breaks after its first chunk is logged by the relay, after the route returned.
    fake.reset()
    fake.set_keys({k: {"mode": "reset", "reset_after_chunks": 1} for k in
                   ("fake-key-0001", "fake-key-0002", "fake-key-0003")})
    stream = SlowStream(proxy.url)
    stream.run()
    broke = wait_for(lambda: query(proxy.db, "SELECT * FROM events WHERE message LIKE 'upstream trouble%broke%'"))
    row = wait_for(lambda: finished(broke[0]["request_id"]))
    assert row["stream"] == 1 and row["error_class"] == "upstream_error"


def worker_pids(db_path: str) -> list[int]:
    return [r["pid"] for r in query(db_path, "SELECT pid FROM workers")]


def test_a_draining_proxy_says_stopping(live_factory, fake):
    fake.configure(chunk_delay_ms=400, chunks=8)
    proxy = live_factory()
    stream = SlowStream(proxy.url)
    stream.start()
    wait_for(lambda: in_flight_with_key(proxy.db))
    assert status(proxy.db)["state"] == "up"
    proxy.proc.send_signal(signal.SIGTERM)
    # The worker finishes the stream before it exits; meanwhile its heartbeat says so.
    seen = wait_for(lambda: status(proxy.db)["state"] == "stopping" and status(proxy.db))
    assert seen["up"] and seen["stopping"] == 1
    assert proxy.proc.wait(timeout=30) == 0
    stream.join(timeout=30)
    assert stream.status == 200 and stream.error is None
    assert not query(proxy.db, "SELECT * FROM requests WHERE status IS NULL")


def test_a_killed_proxy_leaves_lost_rows_not_in_flight_ones(live_factory, fake):
    fake.configure(chunk_delay_ms=400, chunks=8)
    proxy = live_factory()
    stream = SlowStream(proxy.url)
    stream.start()
    row = wait_for(lambda: in_flight_with_key(proxy.db))
    assert not next(r for r in listing(proxy.db) if r["id"] == row["id"])["lost"]
    for pid in worker_pids(proxy.db):
        os.kill(pid, signal.SIGKILL)
    os.kill(proxy.proc.pid, signal.SIGKILL)
    proxy.proc.wait(timeout=10)
    stream.join(timeout=30)
    # Once the heartbeat is older than HEARTBEAT_FRESH the row is lost (read "then", not slept for).
    later = time.time() + HEARTBEAT_FRESH + 1
    shown = next(r for r in listing(proxy.db, now=later) if r["id"] == row["id"])
    assert shown["status"] is None and shown["lost"]
