"""The native passthrough's path, model allow-list, upload tokens and pin look-ups."""
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from conftest import USER_KEY, wait_for
from proxy import uploads
from proxy.store import db as store_db
from proxy.store.users import remove_user, set_limits

H = {"x-goog-api-key": USER_KEY}
BODY = {"contents": [{"role": "user", "parts": [{"text": "alpha beta"}]}]}
FLASH = "/v1beta/models/gemini-2.5-flash"
START = {"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
         "X-Goog-Upload-Header-Content-Length": "5",
         "X-Goog-Upload-Header-Content-Type": "text/plain"}


def change_users(app, fn):
    """Apply `fn` to the database, then wait until the pool has read it."""
    st = app.extensions["proxy"]
    db = store_db.open_db(st.settings.db_path)
    try:
        fn(db, next(db.query("select id from users"))["id"])
    finally:
        db.close()
    assert st.refresher.await_view(time.monotonic(), timeout=5)


@pytest.fixture
def flash_only(app):
    change_users(app, lambda db, uid: set_limits(db, uid, models="gemini-2.5-flash"))
    return app.test_client()


def google_error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.data
    assert resp.mimetype == "application/json"
    err = resp.get_json()["error"]
    assert err["code"] == status and err["status"] and err["message"]
    return err


# ---- paths -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/v1beta/models/gemini-2.5-flash/../gemini-2.5-pro:generateContent",
    "/v1beta/models/gemini-2.5-flash%2F..%2Fgemini-2.5-pro:generateContent",
    "/v1beta/models/gemini-2.5-flash/%2e%2e/gemini-2.5-pro:generateContent",
    "/v1beta/models/gemini-2.5-flash/..;x/gemini-2.5-pro:generateContent",
    "/v1beta/models//gemini-2.5-pro:generateContent",
    "/v1beta/models/./gemini-2.5-pro:generateContent",
])
def test_dot_and_empty_segments_are_refused_and_never_forwarded(flash_only, fake, path):
    err = google_error(flash_only.post(path, json=BODY, headers=H), 400)
    assert err["status"] == "INVALID_ARGUMENT" and "segment" in err["message"]
    assert fake.requests == []


def test_a_doubled_slash_is_answered_in_googles_format_not_redirected(client, fake):
    for path in ("/v1beta//models/gemini-2.5-flash:generateContent",
                 "/v1beta/models//gemini-2.5-flash:generateContent"):
        resp = client.post(path, json=BODY, headers=H)
        assert resp.status_code in (400, 404) and "Location" not in resp.headers
        google_error(resp, resp.status_code)
    assert fake.requests == []


@pytest.mark.parametrize("encoded, decoded", [("%3Fkey=smuggled&alt=sse", "?key=smuggled&alt=sse"),
                                              ("%23frag", "#frag")])
def test_encoded_query_characters_stay_in_the_forwarded_path(client, fake, encoded, decoded):
    client.post(f"{FLASH}:generateContent{encoded}", json=BODY, headers=H)
    seen = fake.requests[-1]
    # The fake decodes the path it receives: a "?" or "#" that went out unencoded would
    # have started a query (or been dropped as a fragment) instead.
    assert seen["path"] == f"{FLASH}:generateContent{decoded}"
    assert seen["query"] == {}


# ---- models named in the body ----------------------------------------------------------

@pytest.mark.parametrize("path, body", [
    ("/v1beta/cachedContents", {"model": "models/gemini-2.5-pro", "contents": BODY["contents"]}),
    ("/v1beta/cachedContents", {"model": "gemini-2.5-pro", "contents": BODY["contents"]}),
    (f"{FLASH}:batchEmbedContents",
     {"requests": [{"model": "models/gemini-2.5-pro", "content": {"parts": [{"text": "x"}]}}]}),
    (f"{FLASH}:countTokens",
     {"generateContentRequest": {"model": "models/gemini-2.5-pro", **BODY}}),
    (f"{FLASH}:batchGenerateContent",
     {"batch": {"model": "models/gemini-2.5-pro", "inputConfig": {"requests": {"requests": [
         {"request": BODY, "metadata": {"key": "1"}}]}}}}),
    ("/v1beta/tunedModels", {"baseModel": "models/gemini-2.5-pro"}),
    ("/v1beta/openai/chat/completions",
     {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}),
])
def test_a_model_named_in_the_body_must_be_allowed(flash_only, fake, path, body):
    err = google_error(flash_only.post(path, json=body, headers=H), 403)
    assert "gemini-2.5-pro" in err["message"] and "gemini-2.5-flash" in err["message"]
    assert fake.requests == []


@pytest.mark.parametrize("raw", [
    b'{"model": "models/gemini-2.5-flash", "model": "models/gemini-2.5-pro"}',
    b'{"mod\\u0065l": "models/gemini-2.5-pro"}',
    b'{"model": "models/gemini-2.5-flash/../gemini-2.5-pro"}',
])
def test_body_model_tricks_are_refused(flash_only, fake, raw):
    resp = flash_only.post("/v1beta/cachedContents", data=raw,
                           headers={**H, "Content-Type": "application/json"})
    google_error(resp, 403)
    assert fake.requests == []


def test_a_restricted_key_must_send_json_it_can_check(flash_only, fake):
    resp = flash_only.post("/v1beta/cachedContents", data=b"\x0a\x16models/gemini-2.5-pro",
                           headers={**H, "Content-Type": "application/x-protobuf"})
    assert "must be JSON" in google_error(resp, 400)["message"]
    assert fake.requests == []


def test_allowed_body_models_and_prompt_text_go_through(flash_only, fake):
    cache = flash_only.post("/v1beta/cachedContents", headers=H, json={
        "model": "models/gemini-2.5-flash", "contents": BODY["contents"]})
    assert cache.status_code == 200, cache.data
    # "model" inside a prompt (a role, a function's answer) chooses nothing
    turns = [{"role": "user", "parts": [{"text": "which model?"}]},
             {"role": "model", "parts": [{"functionCall": {"name": "pick", "args": {}}}]},
             {"role": "user", "parts": [{"functionResponse": {
                 "name": "pick", "response": {"model": "gemini-2.5-pro"}}}]}]
    resp = flash_only.post(f"{FLASH}:generateContent", json={"contents": turns}, headers=H)
    assert resp.status_code == 200, resp.data
    assert [r["path"] for r in fake.requests] == ["/v1beta/cachedContents",
                                                  f"{FLASH}:generateContent"]


# ---- upload tokens -----------------------------------------------------------------------

def start_upload(client):
    resp = client.post("/upload/v1beta/files", json={"file": {"display_name": "x"}},
                       headers={**START, **H})
    assert resp.status_code == 200, resp.data
    return resp


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)[uploads.TOKEN_PARAM][0]


def flushed_rows(app, sql):
    st = app.extensions["proxy"]
    st.writer.flush()
    return list(store_db.open_db(st.settings.db_path).query(sql))


def test_upload_and_control_urls_both_lead_back_here_and_finish_for_the_user(app, client, fake):
    resp = start_upload(client)
    url, control = resp.headers["x-goog-upload-url"], resp.headers["x-goog-upload-control-url"]
    for u in (url, control):
        assert u.startswith("http://localhost/upload/v1beta/files?upload_token=")
        assert fake.url not in u
    query = client.post(control, headers={"X-Goog-Upload-Command": "query"})
    assert query.status_code == 200 and query.headers["x-goog-upload-size-received"] == "0"
    done = client.post(url, data=b"hello", headers={"X-Goog-Upload-Command": "upload, finalize",
                                                    "X-Goog-Upload-Offset": "0"})
    assert done.status_code == 200 and done.get_json()["file"]["name"].startswith("files/")
    rows = flushed_rows(app, "select user_id, status, path from requests order by started_at")
    assert len(rows) == 3 and all(r["user_id"] and r["status"] == 200 for r in rows)
    assert all(uploads.TOKEN_PARAM not in r["path"] or r["path"].endswith("=…") for r in rows)


def test_an_upload_token_is_no_credential_for_other_calls(client, fake):
    token = token_of(start_upload(client).headers["x-goog-upload-url"])
    fake.clear_requests()
    for path in (f"{FLASH}:generateContent", "/v1beta/files", "/upload/v1/files"):
        resp = client.post(f"{path}?upload_token={token}", json=BODY)
        assert "upload URL it came with" in google_error(resp, 401)["message"]
    assert fake.requests == []


def test_an_expired_upload_token_is_refused_clearly(app, client, fake):
    st = app.extensions["proxy"]
    session_url = start_upload(client).headers["x-goog-upload-url"]
    fake.clear_requests()
    real = uploads.verify(st.secret, token_of(session_url), "/upload/v1beta/files")
    stale = uploads.sign(st.secret, key_id=real.key_id, upstream_url=real.url,
                         user_id=real.user_id, path=real.path,
                         issued_at=time.time() - uploads.TOKEN_TTL - 60)
    resp = client.post(f"/upload/v1beta/files?upload_token={stale}", data=b"hello",
                       headers={"X-Goog-Upload-Command": "upload, finalize",
                                "X-Goog-Upload-Offset": "0"})
    err = google_error(resp, 401)
    assert "expired" in err["message"] and "start the upload again" in err["message"]
    assert fake.requests == []


def test_a_removed_users_upload_stops(app, client, fake):
    url = start_upload(client).headers["x-goog-upload-url"]
    fake.clear_requests()
    change_users(app, lambda db, uid: remove_user(db, uid))
    resp = client.post(url, data=b"hello", headers={"X-Goog-Upload-Command": "upload, finalize",
                                                    "X-Goog-Upload-Offset": "0"})
    assert "disabled or removed" in google_error(resp, 401)["message"]
    assert fake.requests == []


def test_the_uploading_users_limits_apply_to_its_steps(app, client, fake):
    change_users(app, lambda db, uid: set_limits(db, uid, rpm=1))
    url = start_upload(client).headers["x-goog-upload-url"]  # the minute's one request
    fake.clear_requests()
    resp = client.post(url, data=b"hello", headers={"X-Goog-Upload-Command": "upload, finalize",
                                                    "X-Goog-Upload-Offset": "0"})
    assert "requests per minute" in google_error(resp, 429)["message"]
    assert fake.requests == []


# ---- pins ------------------------------------------------------------------------------

def count_view_waits(app, monkeypatch):
    refresher = app.extensions["proxy"].refresher
    waits = []
    real = refresher.await_view

    def counted(since, timeout):
        t0 = time.monotonic()
        ok = real(since, timeout)
        waits.append(time.monotonic() - t0)
        return ok

    monkeypatch.setattr(refresher, "await_view", counted)
    return waits


def test_an_unknown_file_costs_one_pool_read_not_a_fixed_wait(app, client, fake, monkeypatch):
    waits = count_view_waits(app, monkeypatch)
    body = {"contents": [{"role": "user", "parts": [
        {"fileData": {"mimeType": "text/plain", "fileUri": f"{fake.url}/v1beta/files/nobodys"}},
        {"text": "summarise"}]}]}
    t0 = time.monotonic()
    resp = client.post(f"{FLASH}:generateContent", json=body, headers=H)
    elapsed = time.monotonic() - t0
    assert resp.status_code == 403  # Google's answer for a file no key of ours owns
    assert len(waits) == 1 and waits[0] < 0.5 and elapsed < 1.0  # the old wait was 1.5 s


def test_a_known_file_goes_to_its_owner_without_waiting(app, client, fake, monkeypatch):
    url = start_upload(client).headers["x-goog-upload-url"]
    file = client.post(url, data=b"hello", headers={"X-Goog-Upload-Command": "upload, finalize",
                                                    "X-Goog-Upload-Offset": "0"}).get_json()["file"]
    owner = fake.requests[-1]["key"]
    waits = count_view_waits(app, monkeypatch)
    body = {"contents": [{"role": "user", "parts": [
        {"fileData": {"mimeType": "text/plain", "fileUri": file["uri"]}}, {"text": "read it"}]}]}
    for _ in range(6):
        assert client.post(f"{FLASH}:generateContent", json=body, headers=H).status_code == 200
    assert waits == []
    assert {r["key"] for r in fake.requests if ":generateContent" in r["path"]} == {owner}


def test_a_file_made_on_one_worker_is_found_at_once_by_another(live_factory, fake):
    # A slow writer: without the commit before the file's name is answered, the other
    # worker's one fresh read would not see the pin yet.
    proxy = live_factory(workers=2, WRITER_INTERVAL_SECONDS="2", POOL_REFRESH_SECONDS="5")
    fresh = {**H, "Connection": "close"}  # new connections, so both workers take requests
    db = store_db.open_db(proxy.db)

    def one_file_made_and_used() -> bool:
        start = requests.post(proxy.url + "/upload/v1beta/files", json={"file": {}},
                              headers={**START, **fresh}, timeout=10)
        done = requests.post(start.headers["x-goog-upload-url"], data=b"hello", timeout=10,
                             headers={"X-Goog-Upload-Command": "upload, finalize",
                                      "X-Goog-Upload-Offset": "0", "Connection": "close"})
        owner = fake.requests[-1]["key"]
        uri = done.json()["file"]["uri"]
        body = {"contents": [{"role": "user", "parts": [
            {"fileData": {"mimeType": "text/plain", "fileUri": uri}}, {"text": "read it"}]}]}
        for _ in range(3):
            resp = requests.post(f"{proxy.url}{FLASH}:generateContent", json=body,
                                 headers=fresh, timeout=10)
            assert resp.status_code == 200, resp.text
            assert fake.requests[-1]["key"] == owner
        # The kernel hands each new connection to either worker: go on until the rows show
        # both served (the pins then crossed between them).
        return len({r["worker_pid"] for r in db.query("select worker_pid from requests")}) == 2

    wait_for(one_file_made_and_used, timeout=60)
    proxy.stop()
