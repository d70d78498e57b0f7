"""Upstream.open's decisions per error class: retry where, mark what, stop when.

`responses` stands in for Google at the client's one transport entry (`Adapter.send`), so
everything above it runs for real and each decision is checked in isolation and fast; the
real app against the fake covers the same paths end to end.
"""
from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
import responses

from proxy import upstream as upstream_module
from proxy.outcomes import Kind
from proxy.pool import KeyPool
from proxy.settings import Settings
from proxy.store.util import next_pacific_midnight
from proxy.upstream import Call, Upstream

BASE = "http://upstream.test"
MODEL = "gemini-2.5-flash"
URL = f"{BASE}/v1beta/models/{MODEL}:generateContent"
OK_BODY = {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"},
                           "finishReason": "STOP"}]}


def make_upstream(tmp_path, keys: int = 3, **changes: Any) -> Upstream:
    pool = KeyPool(None, rng=random.Random(7))
    pool.apply({"keys": [{"id": i, "value": f"fake-key-{i:04d}", "masked": f"fake…{i:04d}",
                          "status": "active"} for i in range(1, keys + 1)]})
    settings = Settings(db_path=str(tmp_path / "unused.db"), upstream_url=BASE,
                        cooling_wait=0.0, **changes)
    return Upstream(settings, pool)


def call(**kw: Any) -> Call:
    return Call("POST", f"/v1beta/models/{MODEL}:generateContent", [],
                {"Content-Type": "application/json"}, b'{"contents": []}', model=MODEL, **kw)


def google_error(code: int, status: str, message: str, *details: dict) -> dict:
    return {"error": {"code": code, "status": status, "message": message, "details": list(details)}}


def quota(quota_id: str) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/requests",
                            "quotaId": quota_id}]}


def retry_info(delay: Any) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


class Script:
    """Answer the n-th upstream request with the n-th scripted answer (the last repeats)."""

    def __init__(self, *answers: tuple[int, Any]):
        self.answers = list(answers)
        self.keys: list[str] = []

    def __call__(self, request) -> tuple[int, dict, str]:
        self.keys.append(request.headers["x-goog-api-key"])
        status, body = self.answers[min(len(self.keys), len(self.answers)) - 1]
        text = body if isinstance(body, str) else json.dumps(body)
        return status, {"Content-Type": "application/json"}, text


# responses patches requests' HTTPAdapter.send by default; the client's adapter has its own.
TRANSPORT = "proxy.transport.Adapter.send"


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False, target=TRANSPORT) as rsps:
        yield rsps


def scripted(mocked, *answers: tuple[int, Any]) -> Script:
    script = Script(*answers)
    mocked.add_callback(responses.POST, URL, callback=script)
    return script


def key_by_value(up: Upstream, value: str):
    return next(k for k in up.pool.keys.values() if k.value == value)


def idle(up: Upstream) -> bool:
    return all(k.inflight == 0 for k in up.pool.keys.values())


def test_dead_key_is_retired_and_the_call_retried_on_another(tmp_path, mocked):
    up = make_upstream(tmp_path)
    dead = google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                        {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                         "reason": "API_KEY_INVALID"})
    script = scripted(mocked, (400, dead), (200, OK_BODY))
    reply = up.open(call())
    assert reply.status == 200
    assert [a.outcome for a in reply.attempts] == ["key_dead", "ok"]
    assert script.keys[0] != script.keys[1]
    first = key_by_value(up, script.keys[0])
    assert not first.usable and "API_KEY_INVALID" in first.invalid_reason
    assert idle(up)


def test_per_minute_429_cools_for_retry_delay_and_retries(tmp_path, mocked):
    up = make_upstream(tmp_path)
    limited = google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.",
                           quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
                           retry_info("17s"))
    script = scripted(mocked, (429, limited), (200, OK_BODY))
    before = time.time()
    reply = up.open(call())
    assert reply.status == 200 and [a.outcome for a in reply.attempts] == ["rate_limited", "ok"]
    tired = key_by_value(up, script.keys[0])
    until, kind, _ = up.pool.cool[(tired.id, MODEL)]
    assert kind == "rate_limited" and before + 17 <= until <= time.time() + 17
    assert tired.usable and idle(up)


def test_per_day_429_cools_until_pacific_midnight_and_retries(tmp_path, mocked):
    up = make_upstream(tmp_path)
    spent = google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.",
                         quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
                         retry_info("20s"))
    script = scripted(mocked, (429, spent), (200, OK_BODY))
    reply = up.open(call())
    assert reply.status == 200 and reply.attempts[0].outcome == "rate_limited_day"
    until, kind, _ = up.pool.cool[(key_by_value(up, script.keys[0]).id, MODEL)]
    assert kind == "rate_limited_day" and until == next_pacific_midnight(time.time())


def test_5xx_is_retried_a_bounded_number_of_times(tmp_path, mocked):
    up = make_upstream(tmp_path, keys=5, max_attempts=3)
    script = scripted(mocked, (503, google_error(503, "UNAVAILABLE", "The model is overloaded.")))
    reply = up.open(call())
    assert reply.status == 503 and reply.outcome.kind is Kind.UPSTREAM
    assert len(script.keys) == 3 == len(set(script.keys))  # three distinct keys, then stop
    for value in script.keys:  # each counted as a failure, none retired or rested
        key = key_by_value(up, value)
        assert key.usable and sum(f for _, _, f in key.window) == 1
    assert not up.pool.cool and idle(up)


def test_client_4xx_is_not_retried(tmp_path, mocked):
    up = make_upstream(tmp_path)
    script = scripted(mocked, (400, google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload.")))
    reply = up.open(call())
    assert reply.status == 400 and reply.outcome.kind is Kind.CLIENT
    assert len(script.keys) == 1 and len(reply.attempts) == 1
    assert all(k.usable for k in up.pool.keys.values()) and not up.pool.cool and idle(up)


@pytest.mark.parametrize("delay", ["..s", "1.2.3s", {"seconds": "abc"}, {"seconds": "1e999"},
                                   "9999999999999999999999999s", "0s", "-5s"])
def test_odd_retry_delay_still_cools_and_retries(tmp_path, mocked, delay):
    up = make_upstream(tmp_path)
    limited = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.",
                           quota("GenerateRequestsPerMinutePerProjectPerModel"), retry_info(delay))
    script = scripted(mocked, (429, limited), (200, OK_BODY))
    reply = up.open(call())
    assert reply.status == 200
    until, _, _ = up.pool.cool[(key_by_value(up, script.keys[0]).id, MODEL)]
    assert time.time() < until <= next_pacific_midnight(time.time())
    assert idle(up)


@pytest.mark.parametrize("body", ["<html>502 Bad Gateway</html>", "",
                                  json.dumps(google_error(500, "INTERNAL", "Internal error.")),
                                  json.dumps([google_error(503, "UNAVAILABLE", "Overloaded.")]),
                                  "[]", '{"usageMetadata": {"promptTokenCount": 3}}', "[" * 50_000])
def test_a_2xx_that_is_no_answer_is_retried_then_502(tmp_path, mocked, body):
    up = make_upstream(tmp_path)
    script = scripted(mocked, (200, body))
    reply = up.open(call(expect_json=("candidates", "promptFeedback")))
    assert reply.status == 502 and reply.outcome.kind is Kind.UPSTREAM
    assert reply.data is None
    assert json.loads(reply.body)["error"]["status"] == "UNAVAILABLE"
    assert "Google answered 200" in reply.outcome.reason
    assert len(script.keys) == 3  # each key tried, each charged
    assert all(sum(f for _, _, f in k.window) == 1 for k in up.pool.keys.values())
    assert idle(up)


def test_a_2xx_error_body_is_retried_on_another_key(tmp_path, mocked):
    up = make_upstream(tmp_path)
    script = scripted(mocked, (200, google_error(500, "INTERNAL", "Internal error.")),
                      (200, OK_BODY))
    reply = up.open(call(expect_json=("candidates", "promptFeedback")))
    assert reply.status == 200 and reply.data == OK_BODY  # parsed once, for the route
    assert [a.outcome for a in reply.attempts] == ["upstream_error", "ok"]
    assert "Internal error." in reply.attempts[0].reason
    assert script.keys[0] != script.keys[1]


def test_without_expect_json_a_2xx_is_relayed_as_it_is(tmp_path, mocked):
    up = make_upstream(tmp_path)
    scripted(mocked, (200, "not json at all"))
    reply = up.open(call())  # native passthrough: the client judges the body
    assert reply.status == 200 and reply.body == b"not json at all" and reply.data is None


def test_every_begin_has_its_end_when_the_attempt_raises(tmp_path, mocked, monkeypatch):
    up = make_upstream(tmp_path)
    scripted(mocked, (429, google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.")))

    def broken(*args: Any, **kw: Any):
        raise RuntimeError("classification failed")

    monkeypatch.setattr(upstream_module, "classify", broken)
    with pytest.raises(RuntimeError):
        up.open(call())
    assert idle(up)


def test_an_open_stream_keeps_its_key_busy_until_closed(tmp_path, mocked):
    up = make_upstream(tmp_path)
    mocked.add(responses.POST, f"{BASE}/v1beta/models/{MODEL}:streamGenerateContent",
               body=b'data: {"candidates": []}\r\n\r\n', content_type="text/event-stream")
    stream = Call("POST", f"/v1beta/models/{MODEL}:streamGenerateContent", [("alt", "sse")],
                  {}, b"{}", model=MODEL, stream=True)
    reply = up.open(stream)
    assert reply.chunks is not None and reply.key.inflight == 1  # relay_stream ends it
    assert sum(k.inflight for k in up.pool.keys.values()) == 1
    reply.close()
