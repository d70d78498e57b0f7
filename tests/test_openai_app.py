"""OpenAI routes through the in-process app: CORS, image URL fetching, recording, framing."""
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import GOOGLE_KEYS, USER_KEY
from proxy.store import db as store_db

AUTH = {"Authorization": f"Bearer {USER_KEY}"}
FLASH = "gemini-2.5-flash"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
                       "awAAAABJRU5ErkJggg==")


def flushed_db(app):
    st = app.extensions["proxy"]
    assert st.writer.flush()
    return store_db.open_db(st.settings.db_path)


def sse_data(raw: bytes) -> list:
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


# -- CORS ----------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/responses",
                                  "/v1/models", "/openai/v1/chat/completions", "/openai/responses"])
def test_cors_preflight_when_configured(app_factory, fake, path):
    client = app_factory(cors_origins=["https://app.example"]).test_client()
    r = client.options(path, headers=PREFLIGHT)
    assert r.status_code in (200, 204)
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
    # and the real request carries it too
    r = client.post("/v1/chat/completions", headers={**AUTH, "Origin": "https://app.example"},
                    json={"model": FLASH, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"retry-after", "x-goog-upload-url", "x-goog-upload-control-url"} <= exposed
    assert fake.requests and all(r["method"] != "OPTIONS" for r in fake.requests)


def test_cors_other_origin_gets_no_header(app_factory, fake):
    client = app_factory(cors_origins=["https://app.example"]).test_client()
    r = client.options("/v1/chat/completions", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_no_cors_headers_by_default(client, fake):
    r = client.options("/v1/chat/completions", headers=PREFLIGHT)
    assert not any(h.lower().startswith("access-control-") for h in r.headers.keys())
    r = client.post("/v1/chat/completions", headers={**AUTH, "Origin": "https://app.example"},
                    json={"model": FLASH, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in r.headers.keys())


# -- image URLs ----------------------------------------------------------------------------

class _Images(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/cat.png":
            body, ctype, status = PNG, "image/png", 200
        elif self.path == "/page.html":
            body, ctype, status = b"<html></html>", "text/html", 200
        else:
            body, ctype, status = b"nope", "text/plain", 404
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def image_chat(url, **extra):
    return {"model": FLASH, **extra, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": url}}]}]}


def test_http_image_url_fetched_when_private_allowed(app_factory, fake, image_server):
    client = app_factory(image_fetch_private=True).test_client()
    r = client.post("/v1/chat/completions", headers=AUTH, json=image_chat(image_server + "/cat.png"))
    assert r.status_code == 200, r.data
    assert f"[image/png {len(PNG)} bytes]" in r.get_json()["choices"][0]["message"]["content"]
    part = fake.requests[-1]["body"]["contents"][0]["parts"][1]
    assert part["inlineData"] == {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}
    # the Responses API fetches input_image URLs the same way
    r = client.post("/v1/responses", headers=AUTH, json={"model": FLASH, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "what"},
                                     {"type": "input_image", "image_url": image_server + "/cat.png"}]}]})
    assert r.status_code == 200, r.data
    assert "[image/png" in r.get_json()["output"][0]["content"][0]["text"]


@pytest.mark.parametrize("path,needle", [("/page.html", "not an image"), ("/missing.png", "could not be fetched")])
def test_http_image_url_bad_targets_are_400(app_factory, fake, image_server, path, needle):
    client = app_factory(image_fetch_private=True).test_client()
    r = client.post("/v1/chat/completions", headers=AUTH, json=image_chat(image_server + path))
    assert r.status_code == 400
    assert needle in r.get_json()["error"]["message"]
    # the far side's status stays unsaid (the URL itself, with its random port, aside)
    assert "404" not in r.get_json()["error"]["message"].replace(image_server, "")
    assert fake.requests == []


def test_private_image_url_refused_by_default(client, fake, image_server):
    r = client.post("/v1/chat/completions", headers=AUTH, json=image_chat(image_server + "/cat.png"))
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["type"] == "invalid_request_error" and "not a public address" in err["message"]
    r = client.post("/v1/responses", headers=AUTH, json={"model": FLASH, "input": [
        {"role": "user", "content": [{"type": "input_image", "image_url": image_server + "/cat.png"}]}]})
    assert r.status_code == 400 and "not a public address" in r.get_json()["error"]["message"]
    assert fake.requests == []


def test_unreachable_image_url_is_400(app_factory, fake):
    client = app_factory(image_fetch_private=True).test_client()
    r = client.post("/v1/chat/completions", headers=AUTH, json=image_chat("http://127.0.0.1:9/x.png"))
    assert r.status_code == 400 and "could not be fetched" in r.get_json()["error"]["message"]


# -- recording -----------------------------------------------------------------------------

def test_requests_are_recorded_with_dialect(app, client, fake):
    chat = {"model": FLASH, "messages": [{"role": "user", "content": "alpha beta gamma delta"}]}
    r = client.post("/v1/chat/completions", headers=AUTH, json=chat)
    usage = r.get_json()["usage"]
    r = client.post("/v1/chat/completions", headers=AUTH,
                    json={**chat, "stream": True, "stream_options": {"include_usage": True}})
    events = sse_data(r.data)
    assert events[-1] == "[DONE]"
    stream_usage = events[-2]["usage"]
    client.post("/openai/v1/responses", headers=AUTH, json={"model": FLASH, "input": "hello"})
    client.post("/v1/embeddings", headers=AUTH, json={"model": "gemini-embedding-001", "input": "x"})
    client.post("/v1/chat/completions", headers=AUTH, json={**chat, "model": "gemini-9-imaginary"})
    client.get("/v1/models", headers=AUTH)
    rows = list(flushed_db(app).query("select * from requests order by seq"))
    assert len(rows) == 6 and {r["dialect"] for r in rows} == {"openai"}
    by = {(r["path"], r["model"], r["stream"]): r for r in rows}
    plain = by[("/v1/chat/completions", FLASH, 0)]
    streamed = by[("/v1/chat/completions", FLASH, 1)]
    resp = by[("/openai/v1/responses", FLASH, 0)]
    emb = by[("/v1/embeddings", "gemini-embedding-001", 0)]
    missing = by[("/v1/chat/completions", "gemini-9-imaginary", 0)]
    models = by[("/v1/models", "", 0)]
    assert plain["path"] == "/v1/chat/completions" and plain["model"] == FLASH
    assert plain["status"] == 200 and plain["stream"] == 0
    assert (plain["tokens_in"], plain["tokens_out"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert plain["key_masked"] and plain["key_masked"] not in GOOGLE_KEYS
    assert streamed["stream"] == 1 and streamed["status"] == 200
    assert (streamed["tokens_in"], streamed["tokens_out"]) == (stream_usage["prompt_tokens"],
                                                               stream_usage["completion_tokens"])
    assert resp["path"] == "/openai/v1/responses" and resp["tokens_out"] > 0
    assert emb["model"] == "gemini-embedding-001" and emb["tokens_in"] > 0 and emb["status"] == 200
    assert missing["status"] == 404 and missing["model"] == "gemini-9-imaginary"
    assert models["status"] == 200
    assert all(r["user_label"] is not None or r["user_id"] is not None for r in rows)


def test_rejected_and_untranslatable_requests(app_factory, fake):
    for key in GOOGLE_KEYS:
        fake.set_key(key, mode="tpm", retry_delay_s=30)  # per-minute 429s
    app = app_factory(cooling_wait=0)
    client = app.test_client()
    body = {"model": FLASH, "messages": [{"role": "user", "content": "x"}]}
    first = client.post("/v1/chat/completions", headers=AUTH, json=body)
    second = client.post("/v1/chat/completions", headers=AUTH, json=body)
    assert first.status_code == second.status_code == 429
    assert 1 <= int(first.headers["Retry-After"]) <= 31
    assert 1 <= int(second.headers["Retry-After"]) <= 31
    rows = list(flushed_db(app).query("select * from requests order by seq"))
    assert [r["status"] for r in rows] == [429, 429]
    assert rows[1]["error_class"] == "rejected" and rows[0]["attempts"] == len(GOOGLE_KEYS)


# -- framing -------------------------------------------------------------------------------

def test_chat_stream_framing(client, fake):
    r = client.post("/v1/chat/completions", headers=AUTH, json={
        "model": FLASH, "stream": True, "messages": [{"role": "user", "content": "a b c d e f"}]})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    raw = r.data.decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = sse_data(r.data)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in events[0]


def test_responses_stream_framing(client, fake):
    r = client.post("/v1/responses", headers=AUTH, json={"model": FLASH, "input": "x y z", "stream": True})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    blocks = [b for b in r.data.decode().split("\n\n") if b]
    names = [b.split("\n")[0].removeprefix("event: ") for b in blocks]
    datas = [json.loads(b.split("\n")[1].removeprefix("data: ")) for b in blocks]
    assert all(d["type"] == n for n, d in zip(names, datas))
    assert names[-1] == "response.completed" and "[DONE]" not in r.data.decode()
    assert datas[-1]["response"]["usage"]["total_tokens"] > 0


def test_wrong_method_on_openai_route_is_openai_error(client, fake):
    r = client.get("/openai/v1/chat/completions", headers=AUTH)
    assert r.status_code == 405 and r.get_json()["error"]["type"] == "invalid_request_error"
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses"):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 405 and r.get_json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []  # not forwarded to Google by the native /v1/ catch-all


def test_missing_auth_is_openai_401(client, fake):
    r = client.post("/v1/chat/completions", json={"model": FLASH, "messages": []})
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "invalid_api_key"
    r = client.post("/v1/responses", headers={"Authorization": "Bearer nope"}, json={})
    assert r.status_code == 401
    assert fake.requests == []


# -- JSON strictness (found by the property tests) -----------------------------------------

@pytest.mark.parametrize("content", ["-Infinity", "NaN", '{"temp": NaN}', "[Infinity]"])
def test_non_json_constants_in_tool_results_stay_text(client, fake, content):
    """Python's json reads NaN/Infinity; Gemini does not. A tool result holding them is text."""
    body = {"model": FLASH, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": content}]}
    r = client.post("/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 200, r.data
    sent = fake.requests[-1]["body"]["contents"][-1]["parts"][0]["functionResponse"]["response"]
    assert sent == {"result": content}
    r = client.post("/v1/responses", headers=AUTH, json={"model": FLASH, "input": [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": content}]})
    assert r.status_code == 200, r.data
    assert fake.requests[-1]["body"]["contents"][-1]["parts"][0]["functionResponse"]["response"] == {
        "result": content}


def test_non_json_constants_in_arguments_or_body_are_400(client, fake):
    body = {"model": FLASH, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "f", "arguments": '{"a": NaN}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"}]}
    r = client.post("/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 400 and "arguments" in r.get_json()["error"]["message"]
    for raw in (b'{"model": "gemini-2.5-flash", "temperature": NaN, "messages": []}',
                b'{"model": "gemini-2.5-flash", "input": "x", "top_p": Infinity}'):
        for path in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings"):
            r = client.post(path, headers=AUTH, data=raw, content_type="application/json")
            assert r.status_code == 400
            assert "not valid JSON" in r.get_json()["error"]["message"]
    assert fake.requests == []
