"""The fake Gemini API over real HTTP: routes, key behaviours, stream framings, SDK clients."""
from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from proxy.fake.server import FakeUpstream

FLASH = "gemini-2.5-flash"
KEY = "fake-key-1"
OTHER = "fake-key-2"
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hello there, fake"}]}]}
WEATHER_TOOL = {"functionDeclarations": [
    {"name": "get_weather", "description": "Weather for a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                     "days": {"type": "integer"}},
                    "required": ["city"]}},
    {"name": "get_time", "parameters": {"type": "OBJECT",
                                        "properties": {"zone": {"type": "STRING",
                                                                "enum": ["UTC", "CET"]}}}},
]}


@pytest.fixture(scope="module")
def server() -> Any:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture()
def fake(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    server.configure(latency_ms=0, chunk_delay_ms=0, chunks=4, strict_keys=False, record=True,
                     max_recorded=10_000)
    return server


def call(fake: FakeUpstream, action: str, body: Any = None, *, model: str = FLASH,
         key: str | None = KEY, version: str = "v1beta", query: str = "",
         headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    url = f"{fake.url}/{version}/models/{model}:{action}{query}"
    hdrs = {"x-goog-api-key": key} if key else {}
    hdrs.update(headers or {})
    kwargs.setdefault("timeout", 10)
    return requests.post(url, json=HELLO if body is None else body, headers=hdrs, **kwargs)


def details(resp: requests.Response) -> dict[str, dict[str, Any]]:
    """Map each error detail's short type name to the detail."""
    return {d["@type"].rsplit(".", 1)[1]: d for d in resp.json()["error"].get("details", [])}


def sse_events(resp: requests.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: ")]


def text_of(body: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in body["candidates"][0]["content"]["parts"]
                   if not p.get("thought"))


# --- generateContent ------------------------------------------------------------------------

def test_generate_echoes_the_last_user_text(fake: FakeUpstream) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "first"}]},
                         {"role": "model", "parts": [{"text": "ok"}]},
                         {"role": "user", "parts": [{"text": "second question"}]}]}
    resp = call(fake, "generateContent", body)
    assert resp.status_code == 200
    data = resp.json()
    cand = data["candidates"][0]
    assert cand["content"] == {"parts": [{"text": "Echo: second question"}], "role": "model"}
    assert cand["finishReason"] == "STOP" and cand["index"] == 0
    usage = data["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert data["modelVersion"] == FLASH and data["responseId"]


def test_generate_describes_media_parts(fake: FakeUpstream) -> None:
    png = base64.b64encode(b"\x89PNG" + b"\0" * 96).decode()
    body = {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": png}}]}]}
    assert text_of(call(fake, "generateContent", body).json()) == "Echo: [image/png 100 bytes]"


def test_generate_thoughts_max_tokens_and_block(fake: FakeUpstream) -> None:
    cfg = {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 512}}
    data = call(fake, "generateContent", {**HELLO, "generationConfig": cfg}).json()
    parts = data["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and parts[1] == {"text": "Echo: hello there, fake"}
    usage = data["usageMetadata"]
    assert usage["thoughtsTokenCount"] > 0
    assert usage["totalTokenCount"] == (usage["promptTokenCount"] + usage["candidatesTokenCount"]
                                        + usage["thoughtsTokenCount"])

    data = call(fake, "generateContent", {**HELLO, "generationConfig": {"maxOutputTokens": 2}}).json()
    assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert data["usageMetadata"]["candidatesTokenCount"] <= 2

    data = call(fake, "generateContent", {"contents": [{"parts": [{"text": "please BLOCKME"}]}]}).json()
    assert "candidates" not in data
    assert data["promptFeedback"]["blockReason"] == "SAFETY"


def test_json_mode_follows_the_schema(fake: FakeUpstream) -> None:
    schema = {"type": "OBJECT", "properties": {
        "name": {"type": "STRING"}, "count": {"type": "INTEGER", "minimum": 3},
        "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}},
        "nested": {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}}},
        "required": ["name"]}
    cfg = {"responseMimeType": "application/json", "responseSchema": schema}
    value = json.loads(text_of(call(fake, "generateContent", {**HELLO, "generationConfig": cfg}).json()))
    assert value == {"name": "example", "count": 3, "tags": ["a"], "nested": {"ok": True}}

    json_schema = {"type": "object", "$defs": {"Pet": {"type": "object", "properties": {
        "kind": {"const": "cat"}, "age": {"type": ["integer", "null"]}}, "required": ["kind"],
        "additionalProperties": False}},
        "properties": {"pet": {"$ref": "#/$defs/Pet"},
                       "when": {"type": "string", "format": "date-time"},
                       "maybe": {"anyOf": [{"type": "null"}, {"type": "number"}]}},
        "required": ["pet"], "additionalProperties": False}
    cfg = {"responseMimeType": "application/json", "responseJsonSchema": json_schema}
    value = json.loads(text_of(call(fake, "generateContent", {**HELLO, "generationConfig": cfg}).json()))
    assert value == {"pet": {"kind": "cat", "age": 1}, "when": "2025-01-01T00:00:00Z", "maybe": 1}


def test_function_calls(fake: FakeUpstream) -> None:
    body = {**HELLO, "tools": [WEATHER_TOOL]}
    parts = call(fake, "generateContent", body).json()["candidates"][0]["content"]["parts"]
    assert parts == [{"functionCall": {"name": "get_weather", "args": {"city": "example", "days": 1}}}]

    pinned = {**body, "toolConfig": {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_time"]}}}
    parts = call(fake, "generateContent", pinned).json()["candidates"][0]["content"]["parts"]
    assert parts == [{"functionCall": {"name": "get_time", "args": {"zone": "UTC"}}}]

    parallel = {**body, "contents": [{"parts": [{"text": "do both PARALLEL"}]}]}
    parts = call(fake, "generateContent", parallel).json()["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["name"] for p in parts] == ["get_weather", "get_time"]
    assert not any("thoughtSignature" in p for p in parts)  # 2.5 models: no signatures here

    none = {**body, "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}
    assert text_of(call(fake, "generateContent", none).json()) == "Echo: hello there, fake"

    answered = {"tools": [WEATHER_TOOL], "contents": [
        HELLO["contents"][0],
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                         "response": {"tempC": 3}}}]}]}
    assert text_of(call(fake, "generateContent", answered).json()) == 'Result: {"tempC":3}'


def test_gemini3_thought_signatures(fake: FakeUpstream) -> None:
    model = "gemini-3-pro-preview"
    ask = {"role": "user", "parts": [{"text": "weather and time PARALLEL"}]}
    parts = call(fake, "generateContent", {"contents": [ask], "tools": [WEATHER_TOOL]},
                 model=model).json()["candidates"][0]["content"]["parts"]
    assert len(parts) == 2
    assert base64.b64decode(parts[0]["thoughtSignature"]) and "thoughtSignature" not in parts[1]

    result = {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"tempC": 3}}},
        {"functionResponse": {"name": "get_time", "response": {"now": "12:00"}}}]}
    signed = {"contents": [ask, {"role": "model", "parts": parts}, result], "tools": [WEATHER_TOOL]}
    assert call(fake, "generateContent", signed, model=model).status_code == 200

    stripped = [{k: v for k, v in p.items() if k != "thoughtSignature"} for p in parts]
    unsigned = {"contents": [ask, {"role": "model", "parts": stripped}, result], "tools": [WEATHER_TOOL]}
    resp = call(fake, "generateContent", unsigned, model=model)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert err["message"].startswith("Function call is missing a thought_signature in functionCall parts.")
    assert "function call `default_api:get_weather` , position 2." in err["message"]
    # Earlier turns are not validated once a new user message opened a new turn.
    later = {"contents": [*unsigned["contents"], {"role": "model", "parts": [{"text": "done"}]},
                          {"role": "user", "parts": [{"text": "thanks"}]}]}
    assert call(fake, "generateContent", later, model=model).status_code == 200
    # The same unsigned history is fine on a 2.5 model.
    assert call(fake, "generateContent", unsigned).status_code == 200


# --- streaming ----------------------------------------------------------------------------

def test_sse_stream_chunks_arrive_separately(fake: FakeUpstream) -> None:
    fake.configure(chunk_delay_ms=60)
    resp = call(fake, "streamGenerateContent", query="?alt=sse", stream=True)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    arrivals, events = [], []
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            arrivals.append(time.monotonic())
            events.append(json.loads(line[6:]))
    assert len(events) == 4
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert all(gap > 0.04 for gap in gaps), gaps
    assert "".join(text_of(e) for e in events) == "Echo: hello there, fake"
    assert [e["candidates"][0].get("finishReason") for e in events] == [None, None, None, "STOP"]
    counts = [e["usageMetadata"]["candidatesTokenCount"] for e in events]
    assert counts == sorted(counts) and counts[-1] == call(fake, "generateContent").json()[
        "usageMetadata"]["candidatesTokenCount"]
    assert len({e["responseId"] for e in events}) == 1


def test_json_array_stream_is_incremental(fake: FakeUpstream) -> None:
    fake.set_key(KEY, chunk_delay_ms=60, chunks=3)
    resp = call(fake, "streamGenerateContent", stream=True)
    assert resp.headers["content-type"].startswith("application/json")
    pieces, arrivals = [], []
    for piece in resp.iter_content(None):
        pieces.append(piece)
        arrivals.append(time.monotonic())
    raw = b"".join(pieces)
    assert raw.startswith(b"[{") and raw.endswith(b"\n]") and b"\n,\r\n" in raw
    chunks = json.loads(raw)
    assert len(chunks) == 3 and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert arrivals[-1] - arrivals[0] > 0.1  # not buffered into one write


def test_stream_function_call_arrives_whole(fake: FakeUpstream) -> None:
    resp = call(fake, "streamGenerateContent", {**HELLO, "tools": [WEATHER_TOOL]}, query="?alt=sse")
    events = sse_events(resp)
    assert len(events) == 1
    assert events[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["city"] == "example"


def test_stream_errors_before_start(fake: FakeUpstream) -> None:
    fake.set_key("fake-dead", mode="invalid")
    resp = call(fake, "streamGenerateContent", key="fake-dead")
    assert resp.status_code == 400
    assert resp.json()[0]["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    resp = call(fake, "streamGenerateContent", key="fake-dead", query="?alt=sse")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == 400


def test_reset_after_chunks_breaks_the_body(fake: FakeUpstream) -> None:
    fake.set_key(KEY, reset_after_chunks=2, chunks=4)
    resp = call(fake, "streamGenerateContent", query="?alt=sse", stream=True)
    got = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for line in resp.iter_lines():
            if line.startswith(b"data: "):
                got.append(line)
    assert len(got) == 2
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fake, "streamGenerateContent").content
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fake, "generateContent").content  # a unary body is cut short too
    fake.set_key(KEY, reset_after_chunks=1, fail_times=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fake, "streamGenerateContent", query="?alt=sse").content
    assert len(sse_events(call(fake, "streamGenerateContent", query="?alt=sse"))) == 4


# --- other model routes -------------------------------------------------------------------

def test_count_tokens(fake: FakeUpstream) -> None:
    plain = call(fake, "countTokens", {"contents": HELLO["contents"]}).json()
    assert plain["totalTokens"] == call(fake, "generateContent").json()["usageMetadata"]["promptTokenCount"]
    wrapped = call(fake, "countTokens", {"generateContentRequest": {
        "model": f"models/{FLASH}", **HELLO, "systemInstruction": {"parts": [{"text": "be terse"}]}}})
    assert wrapped.json()["totalTokens"] > plain["totalTokens"]
    both = call(fake, "countTokens", {"contents": HELLO["contents"], "generateContentRequest": HELLO})
    assert both.status_code == 400


def test_embeddings(fake: FakeUpstream) -> None:
    body = {"content": {"parts": [{"text": "embed me"}]}}
    one = call(fake, "embedContent", body, model="gemini-embedding-001").json()["embedding"]["values"]
    assert len(one) == 3072 and math.isclose(sum(v * v for v in one), 1.0, rel_tol=1e-4)
    assert call(fake, "embedContent", body, model="gemini-embedding-001").json()["embedding"]["values"] == one
    small = call(fake, "embedContent", {**body, "outputDimensionality": 16},
                 model="text-embedding-004").json()["embedding"]["values"]
    assert len(small) == 16
    assert len(call(fake, "embedContent", body, model="text-embedding-004").json()["embedding"]["values"]) == 768
    batch = call(fake, "batchEmbedContents", {"requests": [
        {"model": "models/gemini-embedding-001", **body},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "other"}]},
         "outputDimensionality": 8}]}, model="gemini-embedding-001").json()["embeddings"]
    assert batch[0]["values"] == one and len(batch[1]["values"]) == 8
    mismatch = call(fake, "batchEmbedContents", {"requests": [{"model": "models/text-embedding-004", **body}]},
                    model="gemini-embedding-001")
    assert mismatch.status_code == 400
    assert call(fake, "embedContent", body).status_code == 400  # not an embedding model
    wrong = call(fake, "generateContent", model="text-embedding-004")
    assert wrong.status_code == 404 and "generateContent" in wrong.json()["error"]["message"]


def test_models_list_paging_and_get(fake: FakeUpstream) -> None:
    hdrs = {"x-goog-api-key": KEY}
    names, token = [], ""
    while True:
        page = requests.get(f"{fake.url}/v1beta/models", params={"pageSize": 4, "pageToken": token},
                            headers=hdrs, timeout=5).json()
        assert len(page["models"]) <= 4
        names += [m["name"] for m in page["models"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    for wanted in ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite",
                   "gemini-3-pro-preview", "gemini-embedding-001", "text-embedding-004"):
        assert f"models/{wanted}" in names
    model = requests.get(f"{fake.url}/v1/models/gemini-2.5-pro", headers=hdrs, timeout=5).json()
    assert model["inputTokenLimit"] > 0 and "generateContent" in model["supportedGenerationMethods"]
    missing = requests.get(f"{fake.url}/v1beta/models/nope-1.0", headers=hdrs, timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"].startswith(
        "models/nope-1.0 is not found for API version v1beta, or is not supported for generateContent")
    assert call(fake, "generateContent", model="nope-1.0").status_code == 404


# --- files and caches ---------------------------------------------------------------------

def test_sdk_upload_then_generate_and_ownership(fake: FakeUpstream, tmp_path: Path) -> None:
    from google import genai

    path = tmp_path / "notes.txt"
    path.write_text("some notes\n" * 50)
    client = genai.Client(api_key=KEY, http_options={"base_url": fake.url})
    uploaded = client.files.upload(file=str(path), config={"display_name": "notes"})
    assert uploaded.name.startswith("files/") and uploaded.state.name == "ACTIVE"
    assert uploaded.size_bytes == path.stat().st_size and uploaded.mime_type == "text/plain"
    answer = client.models.generate_content(model=FLASH, contents=[uploaded, "summarise"])
    assert answer.text.startswith("Echo: [text/plain ") and answer.text.endswith("summarise")

    # The chunk upload went to the announced URL without any API key.
    chunk = [r for r in fake.requests if r["query"].get("upload_id")]
    assert chunk and all(r["key"] is None for r in chunk)
    assert chunk[-1]["headers"]["x-goog-upload-command"] == "upload, finalize"

    file_id = uploaded.name.split("/", 1)[1]
    ref = {"contents": [{"parts": [{"fileData": {"mimeType": "text/plain", "fileUri": uploaded.uri}},
                                   {"text": "hi"}]}]}
    denied = call(fake, "generateContent", ref, key=OTHER)
    assert denied.status_code == 403
    assert denied.json()["error"] == {
        "code": 403, "status": "PERMISSION_DENIED",
        "message": f"You do not have permission to access the File {file_id} or it may not exist."}
    short = {"contents": [{"parts": [{"fileData": {"fileUri": f"files/{file_id}"}}]}]}
    assert call(fake, "generateContent", short).status_code == 200
    other = requests.get(f"{fake.url}/v1beta/files/{file_id}", headers={"x-goog-api-key": OTHER}, timeout=5)
    assert other.status_code == 403
    assert requests.get(f"{fake.url}/v1beta/files", headers={"x-goog-api-key": OTHER}, timeout=5).json() == {}
    assert [f.name for f in client.files.list()] == [uploaded.name]
    client.files.delete(name=uploaded.name)
    gone = requests.get(f"{fake.url}/v1beta/files/{file_id}", headers={"x-goog-api-key": KEY}, timeout=5)
    assert gone.status_code == 404


def test_resumable_upload_protocol(fake: FakeUpstream) -> None:
    data = b"x" * 1000
    start = requests.post(f"{fake.url}/upload/v1beta/files", json={"file": {"display_name": "blob"}},
                          headers={"x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "resumable",
                                   "X-Goog-Upload-Command": "start",
                                   "X-Goog-Upload-Header-Content-Length": str(len(data)),
                                   "X-Goog-Upload-Header-Content-Type": "application/pdf"}, timeout=5)
    assert start.status_code == 200 and start.headers["x-goog-upload-status"] == "active"
    url = start.headers["x-goog-upload-url"]
    assert url.startswith(f"{fake.url}/upload/v1beta/files?upload_id=") and "upload_protocol=resumable" in url
    first = requests.post(url, data=data[:600], timeout=5, headers={
        "X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"})
    assert first.headers["x-goog-upload-status"] == "active"
    bad = requests.post(url, data=data[600:], timeout=5, headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "10"})
    assert bad.status_code == 400
    query = requests.post(url, timeout=5, headers={"X-Goog-Upload-Command": "query"})
    assert query.headers["x-goog-upload-size-received"] == "600"
    final = requests.post(url, data=data[600:], timeout=5, headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "600"})
    assert final.headers["x-goog-upload-status"] == "final"
    file = final.json()["file"]
    assert file["displayName"] == "blob" and file["mimeType"] == "application/pdf"
    assert file["sizeBytes"] == "1000" and file["state"] == "ACTIVE" and file["source"] == "UPLOADED"
    assert file["uri"] == f"{fake.url}/v1beta/{file['name']}"
    assert {"createTime", "updateTime", "expirationTime", "sha256Hash"} <= set(file)

    boundary = "b0undary"
    multipart = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
                 '{"file": {"displayName": "mp"}}\r\n'
                 f"--{boundary}\r\nContent-Type: image/png\r\n\r\n").encode() + b"PNGDATA" + \
        f"\r\n--{boundary}--\r\n".encode()
    resp = requests.post(f"{fake.url}/upload/v1beta/files", data=multipart, timeout=5, headers={
        "x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "multipart",
        "Content-Type": f"multipart/related; boundary={boundary}"})
    assert resp.json()["file"]["mimeType"] == "image/png" and resp.json()["file"]["sizeBytes"] == "7"


def test_cached_contents_ownership(fake: FakeUpstream) -> None:
    base = f"{fake.url}/v1beta/cachedContents"
    mine, theirs = {"x-goog-api-key": KEY}, {"x-goog-api-key": OTHER}
    created = requests.post(base, headers=mine, timeout=5, json={
        "model": f"models/{FLASH}", "contents": [{"role": "user", "parts": [{"text": "long doc " * 50}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]}, "ttl": "300s"}).json()
    name = created["name"]
    assert name.startswith("cachedContents/") and created["model"] == f"models/{FLASH}"
    assert created["usageMetadata"]["totalTokenCount"] > 50
    cache_id = name.split("/")[1]
    assert requests.get(f"{base}/{cache_id}", headers=mine, timeout=5).json()["name"] == name
    for method in ("get", "delete"):
        assert getattr(requests, method)(f"{base}/{cache_id}", headers=theirs, timeout=5).status_code == 403
    assert requests.patch(f"{base}/{cache_id}", json={"ttl": "60s"}, headers=theirs, timeout=5).status_code == 403
    assert requests.get(base, headers=theirs, timeout=5).json() == {}
    assert [c["name"] for c in requests.get(base, headers=mine, timeout=5).json()["cachedContents"]] == [name]

    use = {**HELLO, "cachedContent": name}
    answer = call(fake, "generateContent", use).json()
    assert answer["usageMetadata"]["cachedContentTokenCount"] > 50
    assert call(fake, "generateContent", use, key=OTHER).status_code == 403
    assert call(fake, "generateContent", use, model="gemini-2.5-pro").status_code == 400
    with_system = {**use, "systemInstruction": {"parts": [{"text": "x"}]}}
    assert call(fake, "generateContent", with_system).status_code == 400

    patched = requests.patch(f"{base}/{cache_id}", json={"ttl": "7200s"}, headers=mine, timeout=5).json()
    assert patched["expireTime"] > created["expireTime"]
    assert requests.delete(f"{base}/{cache_id}", headers=mine, timeout=5).json() == {}
    assert requests.get(f"{base}/{cache_id}", headers=mine, timeout=5).status_code == 403


# --- key behaviours -----------------------------------------------------------------------

def test_rpm_quota_429(fake: FakeUpstream) -> None:
    fake.set_key(KEY, rpm=2)
    assert [call(fake, "generateContent").status_code for _ in range(2)] == [200, 200]
    resp = call(fake, "generateContent")
    assert resp.status_code == 429
    err = resp.json()["error"]
    assert err["status"] == "RESOURCE_EXHAUSTED" and err["code"] == 429
    assert re.search(r"Please retry in \d+\.\d\ds\.$", err["message"])
    info = details(resp)
    violation = info["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaDimensions"] == {"location": "global", "model": FLASH}
    delay = info["RetryInfo"]["retryDelay"]
    assert re.fullmatch(r"\d+s", delay) and 55 <= int(delay[:-1]) <= 60
    assert "Help" in info
    assert call(fake, "generateContent", model="gemini-2.5-pro").status_code == 200  # per model

    fake.set_key(KEY, rpm=1, rpm_window_s=0.5, retry_delay_s=1)
    assert call(fake, "generateContent").status_code == 200
    limited = call(fake, "generateContent")
    assert details(limited)["RetryInfo"]["retryDelay"] == "1s"
    assert limited.json()["error"]["message"].endswith("Please retry in 1.00s.")
    deadline = time.monotonic() + 5
    while (status := call(fake, "generateContent").status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200  # the window slid


def test_daily_quota_prefers_quota_id(fake: FakeUpstream) -> None:
    fake.set_key(KEY, mode="daily")
    resp = call(fake, "generateContent")
    assert resp.status_code == 429
    info = details(resp)
    assert info["QuotaFailure"]["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert info["RetryInfo"]["retryDelay"] == "20s"
    # Non-model routes keep working for a key that is only out of quota.
    assert requests.get(f"{fake.url}/v1beta/models", headers={"x-goog-api-key": KEY}, timeout=5).status_code == 200


def test_dead_key_modes(fake: FakeUpstream) -> None:
    fake.set_key("fake-invalid", mode="invalid")
    resp = call(fake, "generateContent", key="fake-invalid")
    assert resp.status_code == 400
    assert resp.json() == {"error": {
        "code": 400, "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                     "domain": "googleapis.com",
                     "metadata": {"service": "generativelanguage.googleapis.com"}}]}}
    # A dead key is dead on every route, including the listing a proxy probes with.
    assert requests.get(f"{fake.url}/v1beta/models?key=fake-invalid", timeout=5).status_code == 400

    fake.set_key("fake-denied", mode="denied")
    resp = call(fake, "generateContent", key="fake-denied")
    assert resp.status_code == 403 and details(resp)["ErrorInfo"]["reason"] == "SERVICE_DISABLED"

    fake.set_key("fake-suspended", mode="suspended")
    resp = call(fake, "generateContent", key="fake-suspended")
    assert resp.status_code == 403 and details(resp)["ErrorInfo"]["reason"] == "CONSUMER_SUSPENDED"
    assert resp.json()["error"]["message"] == \
        "Permission denied: Consumer 'api_key:fake-suspended' has been suspended."

    fake.configure(strict_keys=True)
    assert call(fake, "generateContent", key="fake-unknown").status_code == 400
    fake.set_key("fake-known")
    assert call(fake, "generateContent", key="fake-known").status_code == 200


def test_overload_error500_fail_times_and_sequence(fake: FakeUpstream) -> None:
    fake.set_key(KEY, mode="overload")
    resp = call(fake, "generateContent")
    assert resp.status_code == 503
    assert resp.json()["error"] == {"code": 503, "status": "UNAVAILABLE",
                                    "message": "The model is overloaded. Please try again later."}
    fake.set_key(KEY, mode="error500", fail_times=2)
    codes = [call(fake, "generateContent").status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert call(fake, "generateContent").status_code == 200
    fake.set_key(KEY, sequence=["overload", "daily", "ok", "invalid"])
    assert [call(fake, "generateContent").status_code for _ in range(5)] == [503, 429, 200, 400, 200]


def test_hang_does_not_block_others(fake: FakeUpstream) -> None:
    fake.set_key("fake-hang", hang=True)
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            call(fake, "generateContent", key="fake-hang", timeout=1.0)
        except requests.exceptions.ReadTimeout as exc:
            errors.append(exc)

    thread = threading.Thread(target=hang)
    started = time.monotonic()
    thread.start()
    deadline = time.monotonic() + 5
    while not any(r["key"] == "fake-hang" for r in fake.requests) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the hanging call is being held by the fake
    assert call(fake, "generateContent").status_code == 200
    assert time.monotonic() - started < 0.8
    thread.join()
    assert len(errors) == 1


def test_latency_and_per_key_overrides(fake: FakeUpstream) -> None:
    fake.set_key("fake-slow", latency_ms=200)
    started = time.monotonic()
    call(fake, "generateContent", key="fake-slow")
    assert time.monotonic() - started >= 0.2
    fake.set_key(KEY, chunks=7)
    long_text = {"contents": [{"parts": [{"text": "a fairly long sentence to split up"}]}]}
    assert len(sse_events(call(fake, "streamGenerateContent", long_text, query="?alt=sse"))) == 7
    fake.set_key(KEY, sse_crlf=True)
    raw = call(fake, "streamGenerateContent", query="?alt=sse").content
    assert raw.count(b"\r\n\r\n") == 4


# --- auth and validation ------------------------------------------------------------------

def test_auth_rules(fake: FakeUpstream) -> None:
    resp = call(fake, "generateContent", key=None)
    assert resp.status_code == 403
    assert resp.json()["error"]["message"].startswith("Method doesn't allow unregistered callers")
    resp = call(fake, "generateContent", headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 401
    assert resp.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "Expected OAuth 2 access token" in resp.json()["error"]["message"]
    assert call(fake, "generateContent", key=None, query=f"?key={KEY}").status_code == 200


@pytest.mark.parametrize("body, fragment", [
    ({**HELLO, "foo": 1}, 'Invalid JSON payload received. Unknown name "foo": Cannot find field.'),
    ({**HELLO, "generationConfig": {"topQ": 1}},
     'Unknown name "topQ" at \'generation_config\': Cannot find field.'),
    ({**HELLO, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}}]}]},
     'Unknown name "additionalProperties" at \'tools[0].function_declarations[0].parameters\': '
     'Cannot find field.'),
    ({**HELLO, "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
        "type": "object", "properties": {"a": {"type": ["string", "null"]}}}}},
     "Proto field is not repeating, cannot start list."),
    ({**HELLO, "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
        "$schema": "x", "type": "object", "properties": {"a": {"const": 1}}}}},
     'Unknown name "$schema"'),
    ({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": "sunny"}}]}]},
     "(type.googleapis.com/google.protobuf.Struct)"),
    ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "!!notb64!!"}}]}]},
     "Base64 decoding failed"),
    ({"contents": [{"parts": [{"text": "hi", "colour": "red"}]}]}, 'Unknown name "colour"'),
])
def test_proto_parse_errors(fake: FakeUpstream, body: dict[str, Any], fragment: str) -> None:
    resp = call(fake, "generateContent", body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT" and fragment in err["message"]
    violations = details(resp)["BadRequest"]["fieldViolations"]
    assert any(fragment in v["description"] for v in violations)


@pytest.mark.parametrize("body, fragment", [
    ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
    ({"contents": [{"parts": []}]}, "contents.parts must not be empty"),
    ({**HELLO, "generationConfig": {"temperature": 3}}, "temperature"),
    ({**HELLO, "generationConfig": {"stopSequences": list("abcdef")}}, "stop_sequences"),
    ({**HELLO, "generationConfig": {"thinkingConfig": {"thinkingBudget": 10, "thinkingLevel": "LOW"}}},
     "thinking_config"),
    ({**HELLO, "generationConfig": {"responseJsonSchema": {"type": "object"}}}, "response_mime_type"),
    ({**HELLO, "generationConfig": {"responseMimeType": "application/json",
                                    "responseSchema": {"type": "STRING"},
                                    "responseJsonSchema": {"type": "string"}}}, "cannot both be set"),
    ({**HELLO, "tools": [{"functionDeclarations": [{"name": "bad name!"}]}]}, "Invalid function name"),
    ({**HELLO, "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"go_back": {"type": "OBJECT", "properties": {}}}}}},
     'response_schema.properties["go_back"].properties: should be non-empty for OBJECT type'),
    ({**HELLO, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["b"]}}]}]},
     "parameters.required[0]: property is not defined"),
    ({**HELLO, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"data": {"properties": {"x": {"type": "STRING"}}}}}}]}]},
     'parameters.properties["data"].properties: only allowed for OBJECT type'),
    ({**HELLO, "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}, "Invalid value"),
    ({**HELLO, "safetySettings": [{"category": "HARM_CATEGORY_NOPE", "threshold": "OFF"}]}, "HarmCategory"),
    ({**HELLO, "cachedContent": "cachedContents/nope"}, "CachedContent not found"),
    ({"contents": [{"parts": [{"fileData": {"fileUri": "files/nope"}}]}]}, "File nope"),
    ({**HELLO, "tools": [{"codeExecution": {}}, WEATHER_TOOL]}, "Tool use with function calling is unsupported"),
    ({**HELLO, "generationConfig": {"logprobs": 3}}, "response_logprobs"),
    ({**HELLO, "generationConfig": {"responseLogprobs": True, "logprobs": 21}}, "[0, 20]"),
    ({**HELLO, "generationConfig": {"responseModalities": ["AUDIO"]}}, "(AUDIO) is not supported"),
    ({**HELLO, "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}, "response modalities"),
])
def test_semantic_errors(fake: FakeUpstream, body: dict[str, Any], fragment: str) -> None:
    resp = call(fake, "generateContent", body)
    assert resp.status_code in (400, 403), resp.text
    assert fragment in resp.json()["error"]["message"]


def test_semantic_errors_model_rules(fake: FakeUpstream) -> None:
    too_long = {"contents": [{"parts": [{"text": "word " * 140_000}]}]}  # 175000 tokens
    refused = call(fake, "generateContent", too_long, model="gemma-3-27b-it")
    assert refused.status_code == 400 and refused.json()["error"]["message"] == (
        "The input token count (175000) exceeds the maximum number of tokens allowed (131072).")
    assert call(fake, "generateContent", too_long).status_code == 200  # a 1M-token window
    tts = "gemini-2.5-flash-preview-tts"
    assert "Supported: AUDIO" in call(fake, "generateContent", model=tts).json()["error"]["message"]
    voice = {**HELLO, "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": {
        "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "alloy"}}}}}
    assert call(fake, "generateContent", voice, model=tts).status_code == 400


def test_answers_carry_what_google_adds(fake: FakeUpstream) -> None:
    body = {**HELLO, "tools": [{"googleSearch": {}}, {"codeExecution": {}}], "serviceTier": "flex",
            "generationConfig": {"responseLogprobs": True, "logprobs": 2}}
    data = call(fake, "generateContent", body).json()
    cand = data["candidates"][0]
    parts = cand["content"]["parts"]
    assert [next(iter(p)) for p in parts] == ["executableCode", "codeExecutionResult", "text"]
    support = cand["groundingMetadata"]["groundingSupports"][0]
    assert parts[2]["text"].encode()[:support["segment"]["endIndex"]].decode() == support["segment"]["text"]
    chosen = cand["logprobsResult"]["chosenCandidates"]
    assert "".join(c["token"] for c in chosen) == parts[2]["text"]
    assert len(cand["logprobsResult"]["topCandidates"][0]["candidates"]) == 2
    assert data["usageMetadata"]["serviceTier"] == "flex"
    drawn = call(fake, "generateContent", model="gemini-2.5-flash-image").json()
    assert drawn["candidates"][0]["content"]["parts"][1]["inlineData"]["mimeType"] == "image/png"
    spoken = call(fake, "generateContent", {**HELLO, "generationConfig": {"responseModalities": ["AUDIO"]}},
                  model="gemini-2.5-flash-preview-tts").json()
    blob = spoken["candidates"][0]["content"]["parts"][0]["inlineData"]
    assert blob["mimeType"] == "audio/L16;codec=pcm;rate=24000"
    assert len(base64.b64decode(blob["data"])) == 2 * len("hello there, fake")


def test_json_escape_hatches_are_accepted(fake: FakeUpstream) -> None:
    loose = {"type": "object", "properties": {"a": {"type": ["string", "null"], "const": "x"}},
             "additionalProperties": False, "$schema": "https://json-schema.org/draft/2020-12/schema"}
    body = {**HELLO, "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": loose}]}]}
    parts = call(fake, "generateContent", body).json()["candidates"][0]["content"]["parts"]
    assert parts == [{"functionCall": {"name": "f", "args": {"a": "x"}}}]
    no_args = {**HELLO, "tools": [{"functionDeclarations": [
        {"name": "ping", "parameters": {"type": "object", "properties": {}}}]}]}
    parts = call(fake, "generateContent", no_args).json()["candidates"][0]["content"]["parts"]
    assert parts == [{"functionCall": {"name": "ping", "args": {}}}]
    snake = {"contents": HELLO["contents"], "generation_config": {"max_output_tokens": 100}}
    assert call(fake, "generateContent", snake).status_code == 200


def test_bad_bodies_routes_and_methods(fake: FakeUpstream) -> None:
    url = f"{fake.url}/v1beta/models/{FLASH}:generateContent"
    hdrs = {"x-goog-api-key": KEY, "Content-Type": "application/json"}
    broken = requests.post(url, data=b"{not json", headers=hdrs, timeout=5)
    assert broken.status_code == 400
    assert broken.json()["error"]["message"].startswith("Invalid JSON payload received.")
    assert requests.post(url, data=b"[1, 2]", headers=hdrs, timeout=5).status_code == 400
    missing = requests.get(f"{fake.url}/v1beta/nothing/here", headers=hdrs, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    wrong = requests.get(url, headers=hdrs, timeout=5)
    assert wrong.status_code == 405 and "error" in wrong.json()


# --- recording and control ----------------------------------------------------------------

def test_recorded_requests(fake: FakeUpstream) -> None:
    call(fake, "generateContent", headers={"X-Custom": "yes"})
    call(fake, "countTokens", {"contents": HELLO["contents"]}, key=None, query=f"?key={OTHER}")
    requests.post(f"{fake.url}/v1beta/openai/chat/completions", timeout=5,
                  headers={"Authorization": "Bearer fake-key-3"},
                  json={"model": FLASH, "messages": [{"role": "user", "content": "hi"}]})
    first, second, third = fake.requests
    assert first["method"] == "POST" and first["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert first["key"] == KEY and first["body"] == HELLO and first["headers"]["x-custom"] == "yes"
    assert first["headers"]["x-goog-api-key"] == KEY and isinstance(first["ts"], float)
    assert second["key"] == OTHER and second["query"] == {"key": OTHER}
    assert third["key"] == "fake-key-3"

    fake.configure(max_recorded=2)
    for _ in range(3):
        call(fake, "countTokens", {"contents": HELLO["contents"]})
    assert len(fake.requests) == 2
    fake.configure(record=False)
    fake.clear_requests()
    call(fake, "generateContent")
    assert fake.requests == []


def test_http_control_endpoints(fake: FakeUpstream) -> None:
    control = f"{fake.url}/_fake"
    assert requests.post(f"{control}/keys", json={"fake-a": {"mode": "invalid"}, "fake-b": {}},
                         timeout=5).json() == {"ok": True, "keys": ["fake-a", "fake-b"]}
    assert call(fake, "generateContent", key="fake-a").status_code == 400
    bad = requests.post(f"{control}/keys", json={"fake-c": {"mood": "grumpy"}}, timeout=5)
    assert bad.status_code == 400 and "mood" in bad.json()["error"]
    assert requests.post(f"{control}/config", json={"chunks": 2}, timeout=5).json()["chunks"] == 2
    assert len(sse_events(call(fake, "streamGenerateContent", query="?alt=sse"))) == 2
    recorded = requests.get(f"{control}/requests", timeout=5).json()
    assert [r["key"] for r in recorded] == ["fake-a", KEY]
    assert requests.post(f"{control}/reset", timeout=5).json() == {"ok": True}
    assert requests.get(f"{control}/requests", timeout=5).json() == []
    assert call(fake, "generateContent", key="fake-a").status_code == 200


# --- OpenAI layer and SDKs ----------------------------------------------------------------

def test_openai_layer(fake: FakeUpstream) -> None:
    url = f"{fake.url}/v1beta/openai/chat/completions"
    bearer = {"Authorization": f"Bearer {KEY}"}
    body = {"model": FLASH, "messages": [{"role": "system", "content": "terse"},
                                         {"role": "user", "content": "hi openai"}]}
    data = requests.post(url, json=body, headers=bearer, timeout=5).json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "Echo: hi openai"
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    stream = requests.post(url, json={**body, "stream": True, "stream_options": {"include_usage": True}},
                           headers=bearer, timeout=5)
    lines = [line for line in stream.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Echo: hi openai"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    models = requests.get(f"{fake.url}/v1beta/openai/models", headers=bearer, timeout=5).json()
    assert {"id": f"models/{FLASH}", "object": "model", "created": 0, "owned_by": "google"} in models["data"]
    fake.set_key(KEY, mode="invalid")
    dead = requests.post(url, json=body, headers=bearer, timeout=5)
    assert dead.status_code == 400 and dead.json()[0]["error"]["details"][0]["reason"] == "API_KEY_INVALID"

    import openai

    fake.set_key(KEY)
    client = openai.OpenAI(api_key=KEY, base_url=f"{fake.url}/v1beta/openai/", max_retries=0)
    completion = client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "sdk"}])
    assert completion.choices[0].message.content == "Echo: sdk"
    vectors = client.embeddings.create(model="gemini-embedding-001", input=["a", "b"], dimensions=4)
    assert [len(v.embedding) for v in vectors.data] == [4, 4]


def test_genai_sdk_stream_and_count(fake: FakeUpstream) -> None:
    from google import genai

    client = genai.Client(api_key=KEY, http_options={"base_url": fake.url, "api_version": "v1beta"})
    pieces = [c.text for c in client.models.generate_content_stream(model=FLASH, contents="stream me")]
    assert len(pieces) == 4 and "".join(pieces) == "Echo: stream me"
    assert client.models.count_tokens(model=FLASH, contents="four words right here").total_tokens > 0
    embedded = client.models.embed_content(model="gemini-embedding-001", contents=["x", "y"])
    assert [len(e.values) for e in embedded.embeddings] == [3072, 3072]
    assert fake.requests[0]["path"] == f"/v1beta/models/{FLASH}:streamGenerateContent"
    assert fake.requests[0]["query"] == {"alt": "sse"}


# --- running ------------------------------------------------------------------------------

def test_concurrent_streams(fake: FakeUpstream) -> None:
    fake.configure(chunk_delay_ms=50, record=False)

    def stream(i: int) -> int:
        body = {"contents": [{"parts": [{"text": f"stream number {i}"}]}]}
        with requests.post(f"{fake.url}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse",
                           json=body, headers={"x-goog-api-key": KEY}, stream=True, timeout=20) as resp:
            return len(sse_events(resp))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=300) as pool:
        counts = list(pool.map(stream, range(300)))
    assert counts == [4] * 300
    assert time.monotonic() - started < 10


def test_start_does_not_monkey_patch(server: FakeUpstream) -> None:
    from gevent import monkey

    assert not monkey.is_module_patched("socket")
    assert not monkey.is_module_patched("threading")
    with FakeUpstream() as other:
        assert other.url and other.url != server.url
        assert requests.get(f"{other.url}/v1beta/models", headers={"x-goog-api-key": KEY}, timeout=5).ok
    assert other.url is None


def test_standalone_process(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"fake-bad": {"mode": "invalid"}, "fake-good": {}}))
    proc = subprocess.Popen([sys.executable, "-m", "proxy.fake.server", "--port", "0",
                             "--chunks", "2", "--keys-file", str(keys), "--strict-keys"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"fake upstream listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        url = match.group(1)
        model_url = f"{url}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
        good = requests.post(model_url, json=HELLO, headers={"x-goog-api-key": "fake-good"}, timeout=5)
        assert len(sse_events(good)) == 2
        for key in ("fake-bad", "fake-stranger"):
            bad = requests.post(model_url, json=HELLO, headers={"x-goog-api-key": key}, timeout=5)
            assert bad.status_code == 400
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
