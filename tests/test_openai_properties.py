"""Property tests over the OpenAI routes and translators, against the fake upstream.

1. Any well-formed OpenAI request translates to a Gemini body the (strict) fake accepts.
2. No input makes an OpenAI route answer 500: junk JSON, mutated requests, random bytes.

The strategies come from test_translate_properties.py. The fake and the app are shared by
all examples (hypothesis re-runs the test body, not the fixtures), so nothing here makes
keys misbehave.
"""
import json
import os
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from conftest import USER_KEY, make_settings
from proxy.translate.chat import chat_request_to_gemini
from proxy.translate.embeddings import embeddings_request_to_gemini
from proxy.translate.errors import TranslationError
from proxy.translate.responses import responses_request_to_gemini
from test_translate_properties import (DATA_URI, FETCHED, chat_requests, json_values, mutate,
                                       params_schemas, responses_requests, texts)

EXAMPLES = int(os.environ.get("OPENAI_FUZZ_EXAMPLES", "60"))
PROPS = settings(max_examples=EXAMPLES, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])
AUTH = {"Authorization": f"Bearer {USER_KEY}"}
ALIASES = {"gpt-4o": "gemini-2.5-flash"}


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory, fake_server):
    from proxy.app import create_app

    app = create_app(make_settings(Path(tmp_path_factory.mktemp("openai-props")), fake_server.url,
                                   model_aliases=ALIASES, cooling_wait=0.0))
    yield app
    app.extensions["proxy"].close()


@pytest.fixture
def http(shared_app, fake_server):
    fake_server.reset()
    yield shared_app.test_client()
    fake_server.reset()


def send_to_fake(fake_server, model, body):
    return requests.post(f"{fake_server.url}/v1beta/models/{model}:generateContent", json=body,
                         headers={"x-goog-api-key": "fake-key-0001"}, timeout=10)


# -- 1. well-formed requests are accepted upstream -----------------------------------------

def legitimately_refused(body, reply):
    """Requests the real Gemini would refuse too; the fake's answer must then say why."""
    message = reply.json()["error"]["message"]
    # reasoning_effort "none" on a model that only works in thinking mode (2.5 Pro, 3 Pro):
    # the proxy asks for a zero budget and Google answers 400 — the client asked for the
    # impossible, and the 400 passes through to it.
    if "Budget 0 is invalid" in message:
        return body.get("reasoning_effort") == "none"
    return False


@PROPS
@given(chat_requests())
def test_well_formed_chat_requests_are_accepted_upstream(fake_server, body):
    try:
        model, out, _ = chat_request_to_gemini(body, aliases=ALIASES, fetched_images=FETCHED)
    except TranslationError as e:
        assert e.param == "messages" and "nothing to send" in e.message
        return
    reply = send_to_fake(fake_server, model, out)
    assert reply.status_code == 200 or legitimately_refused(body, reply), (reply.text, out)


@PROPS
@given(responses_requests())
def test_well_formed_responses_requests_are_accepted_upstream(fake_server, body):
    try:
        model, out, _ = responses_request_to_gemini(body, aliases=ALIASES, fetched_images=FETCHED)
    except TranslationError as e:
        assert e.param == "input" and "nothing to send" in e.message
        return
    reply = send_to_fake(fake_server, model, out)
    assert reply.status_code == 200, (reply.text, out)


embedding_requests = st.fixed_dictionaries(
    {"model": st.sampled_from(["gemini-embedding-001", "models/gemini-embedding-001"]),
     "input": st.one_of(texts, st.lists(texts, min_size=1, max_size=5))},
    optional={"dimensions": st.integers(1, 3072), "encoding_format": st.sampled_from(["float", "base64"]),
              "user": texts})


@PROPS
@given(embedding_requests)
def test_well_formed_embedding_requests_succeed(http, body):
    r = http.post("/v1/embeddings", headers=AUTH, json=body)
    assert r.status_code == 200, r.data
    data = r.get_json()["data"]
    count = 1 if isinstance(body["input"], str) else len(body["input"])
    assert [d["index"] for d in data] == list(range(count))


@PROPS
@given(chat_requests())
def test_well_formed_chat_requests_through_the_route(http, body):
    """The route end to end: translated, sent, answered, translated back (stream or not)."""
    # the strategy's https://img.test URL cannot be fetched here; data: URIs stand in for it
    raw = json.dumps(body).replace("https://img.test/a.png", DATA_URI)
    body = json.loads(raw)
    r = http.post("/v1/chat/completions", headers=AUTH, json=body)
    data = r.data  # consume the stream: an error inside it must surface here
    if r.status_code == 400:
        message = r.get_json()["error"]["message"]
        assert ("nothing to send" in message or "n: values above 1" in message
                or ("Budget 0 is invalid" in message and body.get("reasoning_effort") == "none")), message
        return
    assert r.status_code == 200, data
    if body.get("stream") is True:
        assert data.endswith(b"data: [DONE]\n\n")
        assert b'"error"' not in data
    else:
        answer = r.get_json()
        assert answer["object"] == "chat.completion" and answer["choices"]
        assert answer["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls", "content_filter")


# -- 2. nothing answers 500 ----------------------------------------------------------------

ROUTES = ["/v1/chat/completions", "/v1/embeddings", "/v1/responses"]


def upstream_fails_too(fake_server):
    """Tell whether the fake itself answers its last request with a 5xx.

    The fake is a test double with its own bugs (it crashes on some junk JSON Schemas
    that the proxy rightly passes through as parametersJsonSchema); a 5xx the proxy
    relays from it is the upstream's, not the proxy's.
    """
    seen = fake_server.requests
    if not seen:
        return False  # the proxy answered 5xx without asking the upstream
    last = seen[-1]
    again = requests.post(fake_server.url + last["path"], params=last["query"], json=last["body"],
                          headers={"x-goog-api-key": "fake-key-0001"}, timeout=10)
    return again.status_code >= 500


def assert_not_5xx(r, fake_server=None):
    data = r.data  # streams included
    if r.status_code >= 500 and fake_server is not None and upstream_fails_too(fake_server):
        return
    assert r.status_code < 500, (r.status_code, data[:500])
    if r.status_code >= 400:
        body = json.loads(data)
        assert isinstance(body["error"]["message"], str) and body["error"]["type"]


@PROPS
@given(st.sampled_from(ROUTES), json_values)
def test_junk_json_never_500(http, fake_server, path, junk):
    fake_server.clear_requests()
    assert_not_5xx(http.post(path, headers=AUTH, data=json.dumps(junk), content_type="application/json"),
                   fake_server)


junk_dicts = st.dictionaries(st.sampled_from(["model", "messages", "input", "stream", "tools", "n",
                                              "response_format", "encoding_format", "dimensions",
                                              "instructions", "tool_choice", "stream_options"]),
                             json_values, max_size=6)


@PROPS
@given(st.sampled_from(ROUTES), junk_dicts, st.sampled_from(["gemini-2.5-flash", "gemini-embedding-001",
                                                               "gemini-3-pro-preview", "gpt-4o"]))
def test_junk_dicts_with_real_models_never_500(http, fake_server, path, junk, model):
    junk = {"model": model, **{k: v for k, v in junk.items() if k != "model"}}
    fake_server.clear_requests()
    assert_not_5xx(http.post(path, headers=AUTH, json=junk), fake_server)


@PROPS
@given(st.data(), chat_requests(), json_values)
def test_mutated_chat_requests_never_500(http, fake_server, data, body, junk):
    body = json.loads(json.dumps(body).replace("https://img.test/a.png", DATA_URI))
    fake_server.clear_requests()
    assert_not_5xx(http.post("/v1/chat/completions", headers=AUTH, json=mutate(data, body, junk)),
                   fake_server)


@PROPS
@given(st.data(), responses_requests(), json_values)
def test_mutated_responses_requests_never_500(http, fake_server, data, body, junk):
    body = json.loads(json.dumps(body).replace("https://img.test/a.png", DATA_URI))
    fake_server.clear_requests()
    assert_not_5xx(http.post("/v1/responses", headers=AUTH, json=mutate(data, body, junk)),
                   fake_server)


@PROPS
@given(st.sampled_from(ROUTES), st.binary(max_size=200),
       st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", None]))
def test_random_bytes_never_500(http, path, raw, ctype):
    r = http.post(path, headers=AUTH, data=raw, content_type=ctype)
    assert_not_5xx(r)
    assume(raw.strip())
    assert r.status_code == 400 or raw.strip()[:1] in (b"{",)  # only a JSON object could pass


@PROPS
@given(json_values, params_schemas)
def test_junk_tool_and_response_schemas_never_500(http, fake_server, junk, schema):
    """Any JSON Schema a client may send as tool parameters or response format."""
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    r = http.post("/v1/chat/completions", headers=AUTH, json=body)
    assert_not_5xx(r)
    assert r.status_code in (200, 400), r.data
    fake_server.clear_requests()
    r = http.post("/v1/responses", headers=AUTH, json={
        "model": "gemini-2.5-flash", "input": "hi", "tools": [{"type": "function", "name": "f",
                                                              "parameters": junk}],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": schema}}})
    assert_not_5xx(r, fake_server)


def test_junk_schema_format_is_no_server_error(http, fake_server):
    """The case the property test above met: a `format` that is not a string once crashed
    the fake upstream's sampler; now it is either accepted or refused, never a 5xx."""
    r = http.post("/v1/responses", headers=AUTH, json={
        "model": "gemini-2.5-flash", "input": "hi",
        "tools": [{"type": "function", "name": "f", "parameters": {"format": []}}]})
    assert r.status_code in (200, 400), r.data


def test_well_formed_translations_use_fixed_examples(fake_server):
    """A few hand-written bodies the strategies might miss, each accepted upstream."""
    cases = [
        {"model": "gemini-3-pro-preview", "messages": [{"role": "user", "content": "x"}],
         "reasoning_effort": "high", "presence_penalty": 1, "n": 2},
        {"model": "gemini-2.5-flash", "messages": [{"role": "developer", "content": "be nice"},
                                                   {"role": "user", "content": "x"}],
         "reasoning_effort": "none", "max_completion_tokens": 5, "stop": "a", "seed": 2**40},
        {"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}],
         "response_format": {"type": "json_schema", "json_schema": {"name": "e", "schema": {
             "type": "string", "enum": ["a", "b"]}}}},
        {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}}]}],
         "tools": [{"type": "function", "function": {"name": "noargs"}}], "tool_choice": "required"},
    ]
    for body in cases:
        model, out, _ = chat_request_to_gemini(body)
        reply = send_to_fake(fake_server, model, out)
        assert reply.status_code == 200, (body, out, reply.text)
    model, out, _ = embeddings_request_to_gemini({"model": "gemini-embedding-001", "input": ["a"]})
    assert model == "gemini-embedding-001"
