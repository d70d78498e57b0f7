"""Odd input and odd upstream answers end in a clear error, never a 500 or a leaked key.

Deeply nested JSON, absurd RetryInfo values, a 200 whose body is an error or garbage, a
stream with no answer in it: each gets an answer in the client's own error format, and
every key the request used goes back to zero in flight.
"""
from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from conftest import USER_KEY, make_settings
from proxy.outcomes import DEFAULT_MINUTE_COOLDOWN, Kind, classify, parse_error_body, retry_delay
from proxy.exchange import Exchange
from proxy.pool import KeyState
from proxy.relay import Passthrough, relay_stream
from proxy.store import db as store_db
from proxy.store.util import next_pacific_midnight
from proxy.translate.tools import TOO_DEEP, loads_strict
from proxy.upstream import Lease, Reply

NOW = 1_780_000_000.0
MIDNIGHT = next_pacific_midnight(NOW)
FLASH = "gemini-2.5-flash"
OPENAI = {"Authorization": f"Bearer {USER_KEY}"}
NATIVE = {"x-goog-api-key": USER_KEY}
DEEP = "[" * 50_000
CHAT = {"model": FLASH, "messages": [{"role": "user", "content": "hi"}]}


def per_minute_429(delay: Any = None, message: str = "Quota exceeded.") -> dict:
    details: list[dict] = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{"quotaId": "GenerateRequestsPerMinutePerProject"}]}]
    if delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": message,
                      "details": details}}


# -- retry_delay / classify: each odd value, clamped ------------------------------------------

@pytest.mark.parametrize("delay,message,expected", [
    ("..s", "", NOW + DEFAULT_MINUTE_COOLDOWN),
    ("1.2.3s", "", NOW + DEFAULT_MINUTE_COOLDOWN),
    ({"seconds": "abc"}, "", NOW + DEFAULT_MINUTE_COOLDOWN),
    ({"seconds": "1e999"}, "", NOW + DEFAULT_MINUTE_COOLDOWN),
    ({"seconds": "7", "nanos": "x"}, "", NOW + DEFAULT_MINUTE_COOLDOWN),
    ("-5s", "", NOW + DEFAULT_MINUTE_COOLDOWN),
    (float("nan"), "", NOW + DEFAULT_MINUTE_COOLDOWN),
    ({"seconds": float("nan")}, "", NOW + DEFAULT_MINUTE_COOLDOWN),
    (None, "", NOW + DEFAULT_MINUTE_COOLDOWN),  # no RetryInfo at all
    ("9999999999999999999999999s", "", MIDNIGHT),
    ({"seconds": float("inf")}, "", MIDNIGHT),
    ({"seconds": 10 ** 400}, "", MIDNIGHT),
    ("0s", "", NOW + 1),
    ({"seconds": 0, "nanos": 1000}, "", NOW + 1),
    # unreadable RetryInfo: the message's "retry in Ns" is the next best thing
    ("..s", "Please retry in 7.5s.", NOW + 7.5),
    ("1.2.3s", "Please retry in 1.2.3s.", NOW + DEFAULT_MINUTE_COOLDOWN),
    (None, "Please retry in 99999999999999999999s.", MIDNIGHT),
    # sane values pass untouched
    ("17s", "", NOW + 17),
    ({"seconds": "3", "nanos": 500000000}, "", NOW + 3.5),
])
def test_odd_retry_delays_are_clamped(delay, message, expected):
    # through the wire form: json.dumps writes NaN/Infinity, which Python's json reads back
    body = json.dumps(per_minute_429(delay, message or "Quota exceeded.")).encode()
    out = classify(429, body, now=NOW)
    assert out.kind is Kind.RATE_MINUTE
    assert out.cool_until == pytest.approx(expected)
    assert NOW + 1 <= out.cool_until <= MIDNIGHT


def test_retry_delay_reports_unreadable_values_as_absent():
    for raw in ("..s", "1.2.3s", {"seconds": "abc"}, {"seconds": "1e999"}, "-5s", float("nan"),
                [], True, 5):
        assert retry_delay({"details": [{"@type": "x.RetryInfo", "retryDelay": raw}]}) is None
    assert retry_delay({"message": "retry in 1.2.3s"}) is None


def test_the_ceiling_is_never_below_a_second():
    just_before = MIDNIGHT - 0.2
    out = classify(429, json.dumps(per_minute_429("9999s")), now=just_before)
    assert out.cool_until == pytest.approx(just_before + 1)


def test_odd_error_bodies_do_not_crash_classify():
    assert parse_error_body(DEEP.encode()) == {}
    assert classify(503, DEEP.encode(), now=NOW).kind is Kind.UPSTREAM
    odd = {"error": {"code": 429, "message": "Quota exceeded.",
                     "details": [{"@type": "x.QuotaFailure", "violations": 5}]}}
    assert classify(429, json.dumps(odd), now=NOW).kind is Kind.RATE_MINUTE


def test_loads_strict_turns_deep_nesting_into_value_error():
    with pytest.raises(ValueError, match="nest too deeply"):
        loads_strict(DEEP)
    with pytest.raises(ValueError, match="nest too deeply"):
        loads_strict(DEEP.encode())


# -- deeply nested client bodies: 400 in the client's format ---------------------------------

def assert_openai_400(r) -> dict:
    assert r.status_code == 400, r.get_data(as_text=True)[:300]
    err = r.get_json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    return err


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"])
def test_deep_json_body_on_openai_routes_is_400(client, fake, path):
    r = client.post(path, data=DEEP, headers={**OPENAI, "Content-Type": "application/json"})
    assert TOO_DEEP in assert_openai_400(r)["message"]
    nested = '{"model": "%s", "input": %s}' % (FLASH, DEEP)  # deep inside a valid start
    r = client.post(path, data=nested, headers={**OPENAI, "Content-Type": "application/json"})
    assert TOO_DEEP in assert_openai_400(r)["message"]
    assert not fake.requests  # nothing went upstream


def test_deep_json_in_tool_call_arguments_is_400(client, fake):
    body = {"model": FLASH, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": DEEP}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}
    err = assert_openai_400(client.post("/v1/chat/completions", json=body, headers=OPENAI))
    assert "arguments" in err["message"] and TOO_DEEP in err["message"]


def test_deep_json_body_on_native_route_is_400_in_googles_format(client, fake):
    r = client.post(f"/v1beta/models/{FLASH}:generateContent", data=DEEP,
                    headers={**NATIVE, "Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT"
    assert err["message"] == f"Invalid JSON payload received. {TOO_DEEP}"
    assert not fake.requests


def test_deep_json_on_googles_openai_layer_and_for_a_restricted_key_is_400(app_factory, fake):
    from proxy.store import open_db, set_limits

    app = app_factory()
    client = app.test_client()
    r = client.post("/v1beta/openai/chat/completions", data=DEEP,
                    headers={**NATIVE, "Content-Type": "application/json"})
    assert r.status_code == 400 and TOO_DEEP in r.get_json()["error"]["message"]
    st = app.extensions["proxy"]
    db = open_db(st.settings.db_path)
    set_limits(db, 1, models=[FLASH])
    db.close()
    assert st.refresher.await_view(time.monotonic(), 5)
    st.pool.sync()
    deeper = "[" * 100_000  # past the size a plain body is checked at: only the model check reads it
    r = client.post(f"/v1beta/models/{FLASH}:countTokens", data=deeper,
                    headers={**NATIVE, "Content-Type": "application/json"})
    assert r.status_code == 400, r.get_data(as_text=True)
    message = r.get_json()["error"]["message"]
    assert TOO_DEEP in message and "only some models" in message
    assert not fake.requests


@pytest.mark.parametrize("count", ["12", float("inf"), float("nan"), -3, 1e300, True, None])
def test_odd_token_counts_in_an_answer_count_as_nothing(count):
    from proxy.tokens import usage_from

    body = json.dumps({"usageMetadata": {"promptTokenCount": count, "candidatesTokenCount": 5}})
    assert usage_from(body.encode()) == (0, 5)


# -- a misbehaving upstream ------------------------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]


class Misbehaving:
    """A tiny Gemini stand-in on a loopback port that answers whatever `answer` says.

    `answer(method, path, key)` returns (status, headers, body); the body is written and the
    connection closed, so a stream is simply a body without Content-Length.
    """

    def __init__(self, answer: Callable[[str, str, str], Answer]):
        self.answer = answer
        self.seen: list[tuple[str, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                key = self.headers.get("x-goog-api-key", "")
                outer.seen.append((self.command, self.path, key))
                status, headers, body = outer.answer(self.command, self.path, key)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _reply

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bad_upstream(tmp_path) -> Iterator[Callable[..., Any]]:
    """Build (app, test client, server) against a Misbehaving upstream; closed at teardown."""
    from proxy.app import create_app

    made: list[tuple[Any, Misbehaving]] = []

    def build(answer: Callable[[str, str, str], Answer]):
        server = Misbehaving(answer)
        app = create_app(make_settings(tmp_path, server.url))
        made.append((app, server))
        return app, app.test_client(), server

    yield build
    for app, server in made:
        app.extensions["proxy"].close()
        server.close()


def always(status: int, body: Any, content_type: str = "application/json"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda method, path, key: (status, {"Content-Type": content_type}, raw)


def idle(app) -> bool:
    return all(k.inflight == 0 for k in app.extensions["proxy"].pool.keys.values())


def failures(app) -> dict[int, int]:
    return {k.id: sum(f for _, _, f in k.window)
            for k in app.extensions["proxy"].pool.keys.values()}


def rows(app) -> list[dict]:
    st = app.extensions["proxy"]
    assert st.writer.flush()
    db = store_db.open_db(st.settings.db_path)
    try:
        return [dict(r) for r in db.query("select * from requests where status is not null "
                                          "order by seq")]
    finally:
        db.close()


@pytest.mark.parametrize("delay", ["..s", "1.2.3s", {"seconds": "abc"}, {"seconds": "1e999"},
                                   "9999999999999999999999999s", "0s", "-5s"])
def test_odd_retry_info_gives_a_sane_429_and_frees_the_keys(bad_upstream, delay):
    app, client, server = bad_upstream(always(429, per_minute_429(delay)))
    ceiling = math.ceil(next_pacific_midnight(time.time()) - time.time())
    r = client.post("/v1/chat/completions", json=CHAT, headers=OPENAI)
    assert r.status_code == 429
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= ceiling
    if delay in ("0s",):
        assert wait == 1
    elif delay != "9999999999999999999999999s":
        assert wait <= DEFAULT_MINUTE_COOLDOWN
    err = r.get_json()["error"]
    assert err["code"] == "rate_limit_exceeded" and f"retry in {wait}s" in err["message"]
    assert len(server.seen) == 3 and idle(app)
    native = client.post(f"/v1beta/models/{FLASH}:generateContent", json={"contents": []},
                         headers=NATIVE)  # every key rests now: the pool answers itself
    assert native.status_code == 429 and 1 <= int(native.headers["Retry-After"]) <= ceiling
    assert idle(app)


@pytest.mark.parametrize("body,content_type", [
    (b"<html><body>upstream hiccup</body></html>", "text/html"),
    (b"", "application/json"),
    (json.dumps({"error": {"code": 500, "message": "Internal error encountered.",
                           "status": "INTERNAL"}}).encode(), "application/json"),
    (b'{"candidates": [{"content": {"parts": [{"text": "cut of', "application/json"),
])
def test_a_200_that_is_no_answer_is_a_502_in_openai_format(bad_upstream, body, content_type):
    app, client, server = bad_upstream(always(200, body, content_type))
    r = client.post("/v1/chat/completions", json=CHAT, headers=OPENAI)
    assert r.status_code == 502
    err = r.get_json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "server_error"
    assert "Google answered 200" in err["message"]
    assert len(server.seen) == 3  # retried on every key before giving up
    assert failures(app) == {1: 1, 2: 1, 3: 1}  # and each key was charged
    assert idle(app)
    for path, payload in (("/v1/responses", {"model": FLASH, "input": "hi"}),
                          ("/v1/embeddings", {"model": "gemini-embedding-001", "input": "hi"})):
        r = client.post(path, json=payload, headers=OPENAI)
        assert r.status_code == 502 and r.get_json()["error"]["type"] == "server_error"
    models = client.get("/v1/models", headers=OPENAI)
    assert models.status_code == 502 and models.get_json()["error"]["type"] == "server_error"
    assert idle(app)
    row = rows(app)[0]
    assert row["status"] == 502 and row["error_class"] == "upstream_error"
    assert "Google answered 200" in row["error_message"]


def test_a_200_error_body_on_one_key_is_retried_on_another(bad_upstream):
    answer_ok = {"candidates": [{"content": {"parts": [{"text": "hello"}], "role": "model"},
                                 "finishReason": "STOP"}]}
    first: list[str] = []

    def answer(method: str, path: str, key: str) -> Answer:
        if not first or key == first[0]:
            first.append(key)
            return 200, {"Content-Type": "application/json"}, b'{"error": {"message": "hm"}}'
        return 200, {"Content-Type": "application/json"}, json.dumps(answer_ok).encode()

    app, client, server = bad_upstream(answer)
    r = client.post("/v1/chat/completions", json=CHAT, headers=OPENAI)
    assert r.status_code == 200 and r.get_json()["choices"][0]["message"]["content"] == "hello"
    assert len(server.seen) == 2 and idle(app)


def sse_payloads(raw: bytes) -> list[Any]:
    return [json.loads(line[6:]) for line in raw.decode().splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


@pytest.mark.parametrize("stream_body", [
    b"<html>not a stream</html>",
    b"",
    b'data: {"usageMetadata": {"promptTokenCount": 3}}\r\n\r\n',
    b'data: {"error": {"code": 500, "message": "Internal error encountered."}}\r\n\r\n',
    b'{"error": {"code": 503, "message": "The model is overloaded."}}',  # bare JSON, no SSE
])
def test_a_200_stream_with_no_answer_ends_in_an_error_event(bad_upstream, stream_body):
    app, client, _ = bad_upstream(always(200, stream_body, "text/event-stream"))
    r = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=OPENAI)
    assert r.status_code == 200  # the status line went out before the stream was read
    events = sse_payloads(r.get_data())
    assert events and "error" in events[-1], events
    assert not any(c.get("finish_reason") == "stop"
                   for e in events for c in e.get("choices") or [])
    assert b"data: [DONE]" not in r.get_data()
    r = client.post("/v1/responses", json={"model": FLASH, "input": "hi", "stream": True},
                    headers=OPENAI)
    kinds = [line[7:] for line in r.get_data(as_text=True).splitlines()
             if line.startswith("event: ")]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert idle(app)
    assert sum(failures(app).values()) == 2  # each stream charged its key
    recorded = rows(app)
    assert [(x["status"], x["error_class"]) for x in recorded] == [(502, "upstream_error")] * 2


def test_a_stream_whose_last_event_has_no_blank_line_still_counts(bad_upstream):
    body = (b'data: {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"},'
            b' "finishReason": "STOP"}]}')
    app, client, _ = bad_upstream(always(200, body, "text/event-stream"))
    r = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=OPENAI)
    events = sse_payloads(r.get_data())
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == "hi"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert idle(app)


def test_a_stream_response_closed_unread_still_frees_its_key(bad_upstream):
    """HEAD drops the body: the relay generator never starts, so only close() can end the key."""
    app, client, server = bad_upstream(always(200, b"", "text/event-stream"))
    r = client.head(f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", headers=NATIVE)
    r.close()
    assert r.status_code == 200 and server.seen[0][0] == "HEAD"
    assert idle(app)
    assert [(x["status"], x["error_class"]) for x in rows(app)] == [(499, "client_error")]


def test_relay_stream_closed_before_iteration_ends_the_key_once():
    ended: list[Any] = []

    class Pool:
        def begin(self, key: Any, model: str) -> None:
            pass

        def end(self, key: Any) -> None:
            ended.append(key)

    key = KeyState(id=1, value="fake-key-0001", masked="fake…0001")
    reply = Reply(200, [], chunks=iter([b"data: {}\n\n"]), key=key,
                  lease=Lease(Pool(), key, "m"))  # type: ignore[arg-type]
    ex = Exchange(None, user=None, dialect="native", method="POST", path="/x")
    stream = relay_stream(Pool(), ex, reply, Passthrough(sse=True))
    stream.close()
    stream.close()
    assert ended == [key] and ex.finished
    assert list(stream) == []
