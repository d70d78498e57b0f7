"""Failures through the openai SDK against a live proxy of their own (keys misbehave here).

Each test starts its own gunicorn server (`live_factory`) so cooling keys never leak into
other tests; MAX_COOLDOWN_WAIT is 0 in every live proxy (conftest), so an exhausted pool
answers at once.
"""
import time

import openai
import pytest
import requests

from conftest import GOOGLE_KEYS, USER_KEY
from proxy.store import db as store_db

FLASH = "gemini-2.5-flash"
MSG = [{"role": "user", "content": "one two three four five six seven eight nine ten"}]


def sdk(proxy, **kw):
    return openai.OpenAI(api_key=USER_KEY, base_url=proxy.url + "/v1", max_retries=0, timeout=20, **kw)


def test_all_keys_rate_limited_is_429_with_retry_after(live_factory, fake):
    for key in GOOGLE_KEYS:
        fake.set_key(key, mode="tpm", retry_delay_s=30)  # per-minute 429s
    proxy = live_factory(MAX_COOLDOWN_WAIT="0")
    client = sdk(proxy)
    # first request: every key answers 429 upstream; the last answer is relayed
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model=FLASH, messages=MSG)
    retry = float(err.value.response.headers["retry-after"])
    assert 1 <= retry <= 31
    assert len([r for r in fake.requests if ":generateContent" in r["path"]]) == len(GOOGLE_KEYS)
    # later requests: the pool knows every key rests and refuses without going upstream
    sent = len(fake.requests)
    for call in (lambda: client.chat.completions.create(model=FLASH, messages=MSG),
                 lambda: client.responses.create(model=FLASH, input="x")):
        with pytest.raises(openai.RateLimitError) as err:
            call()
        assert 1 <= float(err.value.response.headers["retry-after"]) <= 31
        assert (err.value.type, err.value.code) == ("requests", "rate_limit_exceeded")
    assert len(fake.requests) == sent
    # the rest is per model: with the keys healthy again, another model answers at once
    for key in GOOGLE_KEYS:
        fake.set_key(key)
    assert client.chat.completions.create(model="gemini-2.0-flash", messages=MSG).choices


def test_spent_daily_quota_is_insufficient_quota_relayed_or_not(live_factory, fake):
    """Google's per-day 429, and the pool's own 429 once it knows, both say insufficient_quota."""
    for key in GOOGLE_KEYS:
        fake.set_key(key, mode="daily")
    client = sdk(live_factory(MAX_COOLDOWN_WAIT="0"))
    calls = [lambda: client.chat.completions.create(model=FLASH, messages=MSG),  # relayed
             lambda: client.chat.completions.create(model=FLASH, messages=MSG),  # the pool's
             lambda: client.responses.create(model=FLASH, input="x", stream=True)]
    for call in calls:
        with pytest.raises(openai.RateLimitError) as err:
            call()
        assert (err.value.type, err.value.code) == ("insufficient_quota", "insufficient_quota")
        assert float(err.value.response.headers["retry-after"]) >= 1
    assert len([r for r in fake.requests if "generateContent" in r["path"]]) == len(GOOGLE_KEYS)


def test_prompt_over_the_context_window_is_context_length_exceeded(live_factory, fake):
    client = sdk(live_factory())
    long = "word " * 140_000  # past gemma-3-27b-it's 131072-token window
    calls = [lambda: client.chat.completions.create(model="gemma-3-27b-it", messages=[
                 {"role": "user", "content": long}]),
             lambda: client.chat.completions.create(model="gemma-3-27b-it", stream=True, messages=[
                 {"role": "user", "content": long}]),
             lambda: client.responses.create(model="gemma-3-27b-it", input=long),
             lambda: client.responses.create(model="gemma-3-27b-it", input=long, stream=True)]
    for call in calls:
        with pytest.raises(openai.BadRequestError) as err:
            call()
        assert err.value.code == "context_length_exceeded"
        assert "exceeds the maximum number of tokens allowed (131072)" in err.value.message


def test_stored_response_routes_answer_json_404(live_factory, fake):
    proxy = live_factory()
    client = sdk(proxy)
    for call in (lambda: client.responses.retrieve("resp_123"),
                 lambda: client.responses.delete("resp_123"),
                 lambda: client.responses.cancel("resp_123"),
                 lambda: client.responses.input_items.list("resp_123")):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.code == "not_found" and "stores no responses" in err.value.message
        assert err.value.response.headers["content-type"] == "application/json"
    r = requests.get(proxy.url + "/v1/responses/resp_123", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert not fake.requests


def test_sdk_retries_honour_retry_after(live_factory, fake):
    """A short RetryInfo: the SDK's own retry (after Retry-After) succeeds once keys return."""
    for key in GOOGLE_KEYS:
        fake.set_key(key, mode="tpm", fail_times=1, retry_delay_s=1)
    proxy = live_factory(MAX_COOLDOWN_WAIT="0")
    client = openai.OpenAI(api_key=USER_KEY, base_url=proxy.url + "/v1", max_retries=2, timeout=20)
    t0 = time.monotonic()
    resp = client.chat.completions.create(model=FLASH, messages=MSG)
    assert resp.choices[0].message.content.startswith("Echo:")
    assert time.monotonic() - t0 < 10


def test_upstream_503_on_every_key_is_5xx(live_factory, fake):
    for key in GOOGLE_KEYS:
        fake.set_key(key, mode="overload")
    proxy = live_factory()
    client = sdk(proxy)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model=FLASH, messages=MSG)
    assert err.value.status_code == 503
    assert err.value.body["type"] == "server_error"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=FLASH, messages=MSG, stream=True)
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="gemini-embedding-001", input="x")
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model=FLASH, input="x", stream=True)
    # one bad key is invisible: the pool retries on another
    for key in GOOGLE_KEYS[1:]:
        fake.set_key(key)
    assert client.chat.completions.create(model=FLASH, messages=MSG).choices[0].message.content


def test_bad_google_key_never_reaches_the_client(live_factory, fake):
    fake.set_key(GOOGLE_KEYS[0], mode="invalid")
    fake.set_key(GOOGLE_KEYS[1], mode="invalid")
    proxy = live_factory()
    client = sdk(proxy)
    for _ in range(4):
        assert client.chat.completions.create(model=FLASH, messages=MSG).choices[0].message.content
    assert fake.requests[-1]["key"] == GOOGLE_KEYS[2]


def test_mid_stream_failure_raises_after_first_content(live_factory, fake):
    for key in GOOGLE_KEYS:
        fake.set_key(key, reset_after_chunks=1)
    proxy = live_factory()
    client = sdk(proxy)
    got = []
    t0 = time.monotonic()
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(model=FLASH, messages=MSG, stream=True):
            for choice in chunk.choices:
                if choice.delta.content:
                    got.append(choice.delta.content)
    assert time.monotonic() - t0 < 10
    assert got and "".join(got).startswith("Echo:")  # the first content came through
    assert "broke" in str(err.value.message)
    # Responses: a response.failed event, then the stream ends
    events = list(client.responses.create(model=FLASH, input=MSG[0]["content"], stream=True))
    types = [e.type for e in events]
    assert "response.output_text.delta" in types
    assert types[-1] == "response.failed"
    assert events[-1].response.status == "failed"
    # the broken streams are recorded as such
    proxy.stop()
    rows = list(store_db.open_db(proxy.db).query(
        "select * from requests where dialect = 'openai' order by seq"))
    assert len(rows) == 2 and all(r["error_class"] == "upstream_error" and r["stream"] == 1
                                  for r in rows)


def test_model_aliases(live_factory, fake):
    proxy = live_factory(MODEL_ALIASES="gpt-4o=gemini-2.5-flash|default=gemini-2.0-flash")
    client = sdk(proxy)
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids and "default" in ids and "gemini-2.5-flash" in ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert resp.model == "gpt-4o" and resp.choices[0].message.content == "Echo: hi"
    assert fake.requests[-1]["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    # `default` answers a request without a model
    r = requests.post(proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {USER_KEY}"},
                      json={"messages": [{"role": "user", "content": "no model"}]})
    assert r.status_code == 200, r.text
    assert fake.requests[-1]["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"


def test_live_requests_are_recorded(live_factory, fake):
    proxy = live_factory()
    client = sdk(proxy)
    client.chat.completions.create(model=FLASH, messages=MSG)
    list(client.chat.completions.create(model=FLASH, messages=MSG, stream=True,
                                        stream_options={"include_usage": True}))
    client.responses.create(model=FLASH, input="hello")
    client.embeddings.create(model="gemini-embedding-001", input=["a", "b"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gemini-9-imaginary", messages=MSG)
    proxy.stop()
    rows = list(store_db.open_db(proxy.db).query(
        "select * from requests where dialect = 'openai' order by seq"))
    by_path = {(r["path"], r["stream"], r["model"]): r for r in rows}
    assert len(rows) == 5
    for path, stream, model in [("/v1/chat/completions", 0, FLASH), ("/v1/chat/completions", 1, FLASH),
                                ("/v1/responses", 0, FLASH), ("/v1/embeddings", 0, "gemini-embedding-001")]:
        row = by_path[(path, stream, model)]
        assert row["status"] == 200 and row["tokens_in"] > 0, row
        assert row["key_masked"] and row["key_id"]
        assert all(k not in row["key_masked"] for k in GOOGLE_KEYS)
        if path != "/v1/embeddings":
            assert row["tokens_out"] > 0
    missing = by_path[("/v1/chat/completions", 0, "gemini-9-imaginary")]
    assert missing["status"] == 404


def test_client_disconnect_mid_stream_is_recorded(live_factory, fake):
    for key in GOOGLE_KEYS:
        fake.set_key(key, chunks=10, chunk_delay_ms=150)
    proxy = live_factory()
    with requests.post(proxy.url + "/v1/chat/completions", stream=True, timeout=10,
                       headers={"Authorization": f"Bearer {USER_KEY}"},
                       json={"model": FLASH, "stream": True, "messages": MSG}) as r:
        assert r.status_code == 200
        first = next(r.iter_lines())
        assert first.startswith(b"data: ")
    time.sleep(2.0)  # the proxy notices on its next write(s)
    proxy.stop()
    (row,) = store_db.open_db(proxy.db).query("select * from requests where dialect = 'openai'")
    assert row["status"] == 499 and row["error_class"] == "client_error", row
    assert row["stream"] == 1


def test_a_429_is_worded_as_the_pool_classified_it(app_factory, fake, monkeypatch):
    """The client hears what the pool acts on: a spent day is insufficient_quota, whatever
    spelling of "limit: 0" Google used (the translator's own reading wants "limit: 0,")."""
    import json as _json

    from proxy.outcomes import classify
    from proxy.upstream import Reply

    body = _json.dumps({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                  "message": "Quota exceeded for metric: x, limit: 0"}}).encode()
    outcome = classify(429, body, now=0)
    assert outcome.kind.value == "rate_limited_day"
    app = app_factory()
    monkeypatch.setattr(app.extensions["proxy"].upstream, "open",
                        lambda call: Reply(429, [("Content-Type", "application/json")], body,
                                           outcome=outcome))
    r = app.test_client().post("/v1/chat/completions", headers={"Authorization": "Bearer " + USER_KEY},
                               json={"model": "gemini-2.5-flash",
                                     "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429
    assert r.get_json()["error"]["code"] == "insufficient_quota"
