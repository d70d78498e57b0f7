"""Native routes through the app: framings, pins, Google's OpenAI layer, headers, logging."""
import json
import logging
import time


from conftest import GOOGLE_KEYS, USER_KEY
from proxy.store import db as store_db
from proxy.store.util import next_pacific_midnight

H = {"x-goog-api-key": USER_KEY}
BODY = {"contents": [{"role": "user", "parts": [{"text": "alpha beta gamma delta"}]}]}
MODEL = "/v1beta/models/gemini-2.5-flash"


def flushed_db(app):
    st = app.extensions["proxy"]
    st.writer.flush()
    return store_db.open_db(st.settings.db_path)


def test_stream_without_alt_is_a_json_array(client, fake):
    r = client.post(MODEL + ":streamGenerateContent", json=BODY, headers=H)
    assert r.status_code == 200 and r.mimetype == "application/json"
    chunks = json.loads(r.data)
    assert isinstance(chunks, list) and len(chunks) > 1
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks).count("alpha") == 1


def test_sse_stream_records_tokens_from_last_usage(app, client, fake):
    r = client.post(MODEL + ":streamGenerateContent?alt=sse", json=BODY, headers=H)
    events = [json.loads(line[6:]) for line in r.data.decode().splitlines() if line.startswith("data: ")]
    last = events[-1]["usageMetadata"]
    row = next(flushed_db(app).query("select * from requests"))
    assert row["stream"] == 1 and row["status"] == 200
    assert row["tokens_in"] == last["promptTokenCount"]
    assert row["tokens_out"] == last["candidatesTokenCount"] + last.get("thoughtsTokenCount", 0)
    assert row["ttfb_ms"] is not None and row["duration_ms"] >= row["ttfb_ms"]


def test_daily_quota_cools_until_pacific_midnight(app, client, fake):
    fake.set_key(GOOGLE_KEYS[0], mode="daily")
    for _ in range(200):  # until the random spread has met the spent key
        assert client.post(MODEL + ":generateContent", json=BODY, headers=H).status_code == 200
        if any(r["key"] == GOOGLE_KEYS[0] for r in fake.requests):
            break
    row = next(flushed_db(app).query(
        "select h.* from key_health h join google_keys k on k.id = h.key_id where k.value = ?",
        [GOOGLE_KEYS[0]]))
    assert abs(row["cool_until"] - next_pacific_midnight(time.time())) < 5
    assert row["reason"] == "rate_limited_day"


def test_cached_content_is_pinned_to_its_creating_key(client, fake):
    r = client.post("/v1beta/cachedContents", headers=H, json={
        "model": "models/gemini-2.5-flash", "ttl": "300s",
        "contents": [{"role": "user", "parts": [{"text": "a long shared context " * 50}]}]})
    assert r.status_code == 200, r.data
    name = r.get_json()["name"]
    owner = fake.requests[-1]["key"]
    for _ in range(12):
        body = dict(BODY, cachedContent=name)
        assert client.post(MODEL + ":generateContent", json=body, headers=H).status_code == 200
        assert client.get(f"/v1beta/{name}", headers=H).status_code == 200
    assert {r["key"] for r in fake.requests} == {owner}


def test_prompt_text_mentioning_files_is_not_pinned(client, fake):
    body = {"contents": [{"role": "user", "parts": [{"text": "see files/readme-1 please"}]}]}
    t0 = time.monotonic()
    assert client.post(MODEL + ":generateContent", json=body, headers=H).status_code == 200
    assert time.monotonic() - t0 < 1.0  # no wait for a pin that does not exist


def test_googles_openai_layer_gets_the_google_key_as_bearer(client, fake):
    r = client.post("/v1beta/openai/chat/completions", headers={"Authorization": f"Bearer {USER_KEY}"},
                    json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.data
    assert r.get_json()["object"] == "chat.completion"
    seen = fake.requests[-1]
    assert seen["headers"]["authorization"] == f"Bearer {seen['key']}" and seen["key"] in GOOGLE_KEYS


def test_hop_by_hop_and_client_credentials_are_not_forwarded(client, fake):
    client.post(MODEL + ":generateContent", json=BODY, headers={
        **H, "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1",
        "Proxy-Authorization": "Basic abc",
        "Cookie": "session=1", "X-Goog-Api-Client": "genai-py/3.4", "X-Forwarded-For": "1.2.3.4"})
    headers = fake.requests[-1]["headers"]
    for name in ("x-secret-hop", "proxy-authorization", "cookie", "x-forwarded-for", "x-api-key"):
        assert name not in headers
    assert "x-secret-hop" not in headers.get("connection", "").lower()
    assert headers["x-goog-api-client"] == "genai-py/3.4"


def test_upload_url_points_back_at_the_proxy_and_honours_trusted_forwarding(client, fake):
    start = {"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
             "X-Goog-Upload-Header-Content-Length": "5",
             "X-Goog-Upload-Header-Content-Type": "text/plain", **H}
    r = client.post("/upload/v1beta/files", json={"file": {"display_name": "x"}}, headers=start)
    url = r.headers["x-goog-upload-url"]
    assert url.startswith("http://localhost/upload/v1beta/files?upload_token=")
    assert fake.url not in url
    fwd = {**start, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "gemini.example.org"}
    r = client.post("/upload/v1beta/files", json={"file": {}}, headers=fwd,
                    environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.headers["x-goog-upload-url"].startswith("https://gemini.example.org/upload/")
    r = client.post("/upload/v1beta/files", json={"file": {}}, headers=fwd,
                    environ_base={"REMOTE_ADDR": "203.0.113.9"})  # untrusted peer
    assert r.headers["x-goog-upload-url"].startswith("http://localhost/upload/")


def test_trusted_peers_answer_the_same_every_time():
    """The remembered answers match a fresh parse: v4, v6, v4-in-v6, junk; and past the bound."""
    from proxy.http import TrustedPeers

    peers = TrustedPeers(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])
    cases = {"127.0.0.1": True, "10.9.8.7": True, "fd00::1": True, "11.0.0.1": False,
             "::ffff:10.0.0.1": False, "not an address": False, "": False}
    for _ in range(2):
        assert {a: a in peers for a in cases} == cases
    for i in range(TrustedPeers._REMEMBERED + 10):  # many clients: the memory stays bounded
        assert f"192.0.2.{i % 250}:{i}" not in peers
    assert len(peers._seen) <= TrustedPeers._REMEMBERED and "10.1.1.1" in peers


def test_forged_upload_token_is_refused(client, fake):
    r = client.post("/upload/v1beta/files?upload_token=eyJrIjoxfQ.AAAA", data=b"hello",
                    headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    assert r.status_code == 401
    assert fake.requests == []


def test_one_info_line_per_request_without_keys(client, fake, caplog):
    caplog.set_level(logging.INFO, logger="proxy.request")
    client.post(MODEL + f":generateContent?key={USER_KEY}", json=BODY)
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.request"]
    assert len(lines) == 1
    line = lines[0]
    for part in ("POST /v1beta/models/gemini-2.5-flash:generateContent", "model=gemini-2.5-flash",
                 "status=200", "attempts=1", "ttfb=", "dur=", "tokens=", "tok/s="):
        assert part in line
    assert USER_KEY not in line and not any(k in line for k in GOOGLE_KEYS)
    assert "key=fake…" in line


def test_keys_changed_from_the_cli_apply_without_restart(app, client, fake):
    from proxy.store.keys import disable_key

    db = flushed_db(app)
    for key in GOOGLE_KEYS[:2]:
        disable_key(db, key)
    time.sleep(0.5)  # the refresher runs every 0.2 s in tests
    fake.clear_requests()
    for _ in range(8):
        client.post(MODEL + ":generateContent", json=BODY, headers=H)
    assert {r["key"] for r in fake.requests} == {GOOGLE_KEYS[2]}


def test_no_usable_key_is_503_with_a_hint(app_factory, fake):
    client = app_factory(google_keys=[]).test_client()
    r = client.post(MODEL + ":generateContent", json=BODY, headers=H)
    assert r.status_code == 503
    assert "gemini-proxy keys add" in r.get_json()["error"]["message"]


def test_health_and_ready(client):
    assert client.get("/health").get_json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["keys"]["usable"] == 3


def test_upstream_timeout_is_retried_then_reported(app_factory, fake):
    client = app_factory(read_timeout=0.5).test_client()
    fake.set_key(GOOGLE_KEYS[0], hang=True)
    fake.set_key(GOOGLE_KEYS[1], hang=True)
    fake.set_key(GOOGLE_KEYS[2], hang=True)
    r = client.post(MODEL + ":generateContent", json=BODY, headers=H)
    assert r.status_code == 504
    assert "Timeout" in r.get_json()["error"]["message"]


def test_an_unexpected_failure_is_a_clear_500_in_each_dialect_and_is_recorded(app, client, fake):
    st = app.extensions["proxy"]

    def broken(call):
        raise RuntimeError("boom")

    st.upstream.open = broken
    native = client.post(MODEL + ":generateContent", json=BODY, headers=H)
    assert native.status_code == 500
    err = native.get_json()["error"]
    assert err["status"] == "INTERNAL" and "proxy's log" in err["message"]
    oai = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {USER_KEY}"},
                      json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]})
    assert oai.status_code == 500
    assert oai.get_json()["error"]["type"] == "server_error"
    rows = list(flushed_db(app).query("select status, error_class from requests"))
    assert rows == [{"status": 500, "error_class": "proxy_error"}] * 2
