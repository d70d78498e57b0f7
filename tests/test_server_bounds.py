"""The gunicorn layer bounds what a client can make it hold, and answers every refusal in JSON.

Against the real server (gunicorn + gevent) over raw sockets: malformed, oversized, short and
never-ending bodies are refused before anything goes upstream; slow request heads are cut;
gunicorn's own refusals are JSON; every answer names its request; a killed worker's requests
are closed by the arbiter; request bodies share a per-worker memory budget.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from typing import Iterator

import pytest
import requests

from conftest import USER_KEY, LiveProxy, wait_for
from proxy.store import db as store_db

GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
LIMIT = 52428  # MAX_REQUEST_BODY_MB=0.05, in bytes
BOUNDS = dict(MAX_REQUEST_BODY_MB="0.05", BODY_TIMEOUT_SECONDS="1", HEAD_TIMEOUT_SECONDS="1")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, fake_server) -> Iterator[LiveProxy]:
    """One live proxy with short body and head timeouts and a 50 KiB body limit."""
    live = LiveProxy(tmp_path_factory.mktemp("bounds"), fake_server.url, **BOUNDS).start()
    yield live
    live.stop()


def body_of(size: int) -> bytes:
    """A valid generateContent body of exactly `size` bytes."""
    shell = b'{"contents":[{"parts":[{"text":""}]}]}'
    return shell.replace(b'""', b'"' + b"x" * (size - len(shell)) + b'"')


def head(path: str = GEN, *extra: str, auth: str = f"x-goog-api-key: {USER_KEY}") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: proxy", auth, "Content-Type: application/json",
             *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(data: bytes, size: int = 16384) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
             for i in range(0, len(data), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def connect(proxy: LiveProxy, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def answer(sock: socket.socket) -> tuple[int, http.client.HTTPMessage, dict]:
    """Read one response from `sock`: (status, headers, parsed JSON body)."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    raw = resp.read()
    return resp.status, resp.headers, json.loads(raw) if raw else {}


def send(proxy: LiveProxy, data: bytes, *, half_close: bool = False):
    with connect(proxy) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return answer(sock)


def google_error(status: int, headers, body: dict, code: int) -> str:
    """Check an answer is Google's JSON error envelope with `code`; return its message."""
    assert status == code, body
    assert headers["Content-Type"].startswith("application/json")
    assert body["error"]["code"] == code and body["error"]["status"]
    assert headers["X-Request-Id"]
    return body["error"]["message"]


def model_calls(fake) -> list[dict]:
    return [r for r in fake.requests if "Content" in r["path"]]


def test_malformed_chunk_size_is_400_in_the_clients_dialect(proxy, fake):
    bad = b"zz\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n"
    message = google_error(*send(proxy, head(GEN, "Transfer-Encoding: chunked") + bad), 400)
    assert "chunked" in message
    status, _, body = send(proxy, head("/v1/chat/completions", "Transfer-Encoding: chunked",
                                       auth=f"Authorization: Bearer {USER_KEY}") + bad)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"  # OpenAI's
    assert model_calls(fake) == []


def test_chunked_body_over_the_limit_is_413_and_nothing_goes_upstream(proxy, fake):
    message = google_error(*send(proxy, head(GEN, "Transfer-Encoding: chunked")
                                 + chunked(body_of(LIMIT + 1))), 413)
    assert "MAX_REQUEST_BODY_MB" in message
    assert model_calls(fake) == []
    # exactly at the limit is still a body, forwarded whole
    status, _, _ = send(proxy, head(GEN, "Transfer-Encoding: chunked") + chunked(body_of(LIMIT)))
    assert status == 200
    [call] = model_calls(fake)
    assert len(json.dumps(call["body"], separators=(",", ":"))) == LIMIT


def test_body_shorter_than_its_content_length_is_400(proxy, fake):
    short = body_of(100)[:60]
    message = google_error(*send(proxy, head(GEN, "Content-Length: 100") + short,
                                 half_close=True), 400)
    assert "60 of the 100 bytes" in message
    assert model_calls(fake) == []


def test_body_that_never_finishes_is_408_after_the_body_timeout(proxy, fake):
    with connect(proxy) as sock:
        sock.sendall(head(GEN, "Content-Length: 1000") + b'{"contents":')
        t0 = time.monotonic()
        message = google_error(*answer(sock), 408)
        waited = time.monotonic() - t0
    assert "BODY_TIMEOUT_SECONDS" in message
    assert 0.8 <= waited < 5
    assert model_calls(fake) == []


def test_unread_body_keeps_the_connection_usable(proxy, fake):
    """A refusal before the body is read (401) drains it; the next request on the socket works."""
    with connect(proxy) as sock:
        sock.sendall(head(GEN, "Content-Length: 4000", auth="x-goog-api-key: wrong")
                     + body_of(4000))
        google_error(*answer(sock), 401)
        sock.sendall(head(GEN, "Content-Length: 4000") + body_of(4000))
        status, headers, _ = answer(sock)
    assert status == 200 and headers["X-Request-Id"]


def test_gunicorns_own_refusals_are_json(proxy):
    google_error(*send(proxy, b"NOT HTTP AT ALL\r\n\r\n"), 400)
    message = google_error(*send(proxy, f"GET /{'a' * 5000} HTTP/1.1\r\nHost: p\r\n\r\n".encode()),
                           414)
    assert "request line is too long" in message
    many = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(150))
    google_error(*send(proxy, f"GET /health HTTP/1.1\r\nHost: p\r\n{many}\r\n".encode()), 431)


def test_every_answer_carries_the_request_id_of_its_row_and_log_line(proxy, fake):
    r = requests.post(proxy.url + GEN, headers={"x-goog-api-key": USER_KEY},
                      json={"contents": [{"parts": [{"text": "who am I"}]}]}, timeout=10)
    assert r.status_code == 200
    rid = r.headers["X-Request-Id"]
    db = store_db.open_db(proxy.db)
    row = wait_for(lambda: next(db.query("select status from requests where id = ? and status is not null",
                                         [rid]), None))
    assert row["status"] == 200
    wait_for(lambda: f"id={rid} " in proxy.logs())
    with requests.post(proxy.url + STREAM, headers={"x-goog-api-key": USER_KEY}, stream=True,
                       json={"contents": [{"parts": [{"text": "stream"}]}]}, timeout=10) as s:
        assert s.status_code == 200 and s.headers["X-Request-Id"] not in ("", rid)
    others = [requests.get(proxy.url + "/health", timeout=5),
              requests.post(proxy.url + GEN, json={}, timeout=5),  # 401
              requests.get(proxy.url + "/nowhere", timeout=5)]
    ids = {o.headers["X-Request-Id"] for o in others}
    assert len(ids) == 3 and rid not in ids


def test_slow_heads_are_cut_and_real_clients_still_served(tmp_path, fake):
    slots = 4
    proxy = LiveProxy(tmp_path, fake.url, PROXY_WORKER_CONNECTIONS=str(slots),
                      HEAD_TIMEOUT_SECONDS="1").start()
    try:
        slow = [connect(proxy) for _ in range(slots)]
        for sock in slow:  # every connection slot holds a head that never ends
            sock.sendall(b"POST " + GEN.encode() + b" HTTP/1.1\r\nHost: proxy\r\n")
        t0 = time.monotonic()
        assert requests.get(proxy.url + "/health", timeout=10).status_code == 200
        assert time.monotonic() - t0 < 5  # gunicorn alone would hold the slots for 75 s
        for sock in slow:
            assert sock.recv(100) == b""  # closed by the proxy, without an answer
            sock.close()
        # an idle kept-alive connection may stay quiet longer than the head timeout
        with connect(proxy) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
            assert answer(sock)[0] == 200
            time.sleep(2)  # idle past HEAD_TIMEOUT_SECONDS: this is what is being tested
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
            assert answer(sock)[0] == 200
    finally:
        proxy.stop()


def test_a_pipelined_head_that_stops_halfway_is_cut_after_the_head_timeout(proxy):
    """A whole head behind an answer is served at once; half a head still has a deadline."""
    whole = b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n"
    with connect(proxy) as sock:
        t0 = time.monotonic()
        sock.sendall(whole + whole + b"GET /health HTTP/1.1\r\nHost:")
        received = b""
        while data := sock.recv(65536):  # until the proxy closes
            received += data
        waited = time.monotonic() - t0
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 2  # and no answer to the half head
    assert 0.8 <= waited < 5


def test_a_head_that_arrives_in_pieces_after_an_idle_wait_is_served(proxy):
    with connect(proxy) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
        assert answer(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        time.sleep(0.3)  # the client pauses mid-head: the second piece is a separate read
        sock.sendall(b"Host: proxy\r\n\r\n")
        status, headers, _ = answer(sock)
    assert status == 200 and headers["Connection"] == "keep-alive" and headers["Date"]


def test_a_stop_does_not_wait_for_idle_keep_alive_connections(live_factory):
    proxy = live_factory(GRACEFUL_TIMEOUT="20")
    with connect(proxy, timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
        assert answer(sock)[0] == 200
        t0 = time.monotonic()
        assert proxy.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 10  # not the graceful timeout
        assert sock.recv(100) == b""
    assert "graceful timeout" not in proxy.logs()


def test_sigkilled_workers_requests_are_closed_by_the_arbiter(live_factory, fake):
    fake.configure(chunks=40, chunk_delay_ms=250)  # a ten-second stream
    proxy = live_factory(workers=1)
    started = threading.Event()

    def stream() -> None:
        try:
            with requests.post(proxy.url + STREAM, headers={"x-goog-api-key": USER_KEY},
                               json={"contents": [{"parts": [{"text": "long"}]}]},
                               stream=True, timeout=20) as r:
                for _ in r.iter_content(None):
                    started.set()
        except requests.RequestException:
            pass  # the worker dies under it

    client = threading.Thread(target=stream, daemon=True)
    client.start()
    assert started.wait(10)
    db = store_db.open_db(proxy.db)
    row = wait_for(lambda: next(db.query(
        "select id, worker_pid from requests where status is null"), None))
    os.kill(row["worker_pid"], signal.SIGKILL)
    closed = wait_for(lambda: next(db.query(
        "select status, error_class from requests where id = ? and status is not null",
        [row["id"]]), None))
    assert closed == {"status": 499, "error_class": "interrupted"}
    assert proxy.proc.poll() is None  # the master lives on, and serves again
    wait_for(lambda: requests.get(proxy.url + "/health", timeout=5).ok)
    client.join(timeout=20)


def test_request_bodies_share_a_per_worker_memory_budget(live_factory, fake):
    fake.configure(chunks=40, chunk_delay_ms=100)
    proxy = live_factory(workers=1, MAX_BUFFERED_BODY_MB="0.06", MAX_REQUEST_BODY_MB="0.05",
                         BODY_TIMEOUT_SECONDS="1")
    big = body_of(40000)
    with connect(proxy) as holder:  # a stream holds its body's 40 kB until it ends
        holder.sendall(head(STREAM, f"Content-Length: {len(big)}") + big)
        holder.recv(1)
        status, headers, body = send(proxy, head(GEN, f"Content-Length: {len(big)}") + big)
        assert status == 503 and body["error"]["status"] == "UNAVAILABLE"
        assert "MAX_BUFFERED_BODY_MB" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1
        small = body_of(1000)  # what fits next to it goes through at once
        status, _, _ = send(proxy, head(GEN, f"Content-Length: {len(small)}") + small)
        assert status == 200
    assert len(model_calls(fake)) == 2
    # with the stream gone, the large body fits again
    assert wait_for(lambda: send(proxy, head(GEN, f"Content-Length: {len(big)}") + big)[0] == 200)
