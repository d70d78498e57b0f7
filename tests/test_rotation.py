"""Key rotation through the real app: cooling, retiring, retrying, never restarting a stream."""
import time

import requests

from conftest import GOOGLE_KEYS, USER_KEY
from proxy.store import db as store_db

GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
H = {"x-goog-api-key": USER_KEY}


def keys_used(fake):
    return [r["key"] for r in fake.requests if ":generateContent" in r["path"]
            or ":streamGenerateContent" in r["path"]]


def db_rows(app, sql, params=()):
    st = app.extensions["proxy"]
    st.writer.flush()
    db = store_db.open_db(st.settings.db_path)
    try:
        return [dict(r) for r in db.query(sql, params)]
    finally:
        db.close()


def test_per_minute_429_moves_traffic_and_key_returns_after_retry_delay(app, client, fake):
    # A per-minute 429 whose quota (input tokens) this traffic cannot reach: the key rests
    # for RetryInfo's delay, then serves again. (A request quota it could reach would keep
    # it paced for the rest of the minute instead: see test_quota.py.)
    fake.set_key(GOOGLE_KEYS[0], mode="tpm", fail_times=1, retry_delay_s=1)
    # Keys are drawn at random: go on until the tired key has met its quota once.
    for _ in range(200):
        assert client.post(GEN, json=BODY, headers=H).status_code == 200
        if GOOGLE_KEYS[0] in keys_used(fake):
            break
    for _ in range(12):
        assert client.post(GEN, json=BODY, headers=H).status_code == 200
    used = keys_used(fake)
    # The tired key answered one 429, then rested while the others served.
    assert used.count(GOOGLE_KEYS[0]) == 1
    assert set(used) >= set(GOOGLE_KEYS[1:])
    health = db_rows(app, "select * from key_health where model = 'gemini-2.5-flash'")
    assert health and health[0]["reason"] == "rate_limited"
    fake.clear_requests()  # the key's behaviour stays: its one 429 is spent
    deadline = time.monotonic() + 10
    while GOOGLE_KEYS[0] not in keys_used(fake) and time.monotonic() < deadline:
        client.post(GEN, json=BODY, headers=H)
    assert GOOGLE_KEYS[0] in keys_used(fake)  # back after its retryDelay


def test_invalid_key_is_retired_with_its_reason(app, client, fake):
    fake.set_key(GOOGLE_KEYS[1], mode="invalid")
    for _ in range(200):  # until the random spread has tried the dead key once
        assert client.post(GEN, json=BODY, headers=H).status_code == 200
        if GOOGLE_KEYS[1] in keys_used(fake):
            break
    for _ in range(15):
        assert client.post(GEN, json=BODY, headers=H).status_code == 200
    assert keys_used(fake).count(GOOGLE_KEYS[1]) == 1  # tried once, never again
    row = db_rows(app, "select invalid_reason from google_keys where value = ?", [GOOGLE_KEYS[1]])
    assert "API_KEY_INVALID" in row[0]["invalid_reason"]


def test_503_is_retried_on_another_key(app, client, fake):
    for key in GOOGLE_KEYS:
        fake.set_key(key, mode="overload", fail_times=1)
    r = client.post(GEN, json=BODY, headers=H)
    # every key fails once: the proxy tries max_attempts (3) keys, then relays the 503
    assert r.status_code == 503
    assert len(keys_used(fake)) == 3 and len(set(keys_used(fake))) == 3
    fake.reset()
    fake.set_key(GOOGLE_KEYS[0], mode="overload")
    fake.set_key(GOOGLE_KEYS[1], mode="overload")
    for _ in range(5):
        assert client.post(GEN, json=BODY, headers=H).status_code == 200


def test_client_400_is_not_retried_and_charges_no_key(app, client, fake):
    bad = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "bogusField": 1}
    r = client.post(GEN, json=bad, headers=H)
    assert r.status_code == 400
    assert "bogusField" in r.get_json()["error"]["message"]
    assert len(keys_used(fake)) == 1
    keys = db_rows(app, "select invalid_reason from google_keys")
    assert all(k["invalid_reason"] is None for k in keys)
    assert db_rows(app, "select * from key_health") == []
    row = db_rows(app, "select status, attempts, error_class from requests")[0]
    assert row == {"status": 400, "attempts": 1, "error_class": "client_error"}


def test_all_keys_cooling_answers_429_with_retry_after(app, client, fake):
    for key in GOOGLE_KEYS:  # a per-minute 429 on every key, with a 40 s RetryInfo
        fake.set_key(key, mode="tpm", retry_delay_s=40)
    r = client.post(GEN, json=BODY, headers=H)
    assert r.status_code == 429
    r = client.post(GEN, json=BODY, headers=H)  # now answered by the pool itself, at once
    assert r.status_code == 429
    assert 35 <= int(r.headers["Retry-After"]) <= 41
    assert r.get_json()["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_stream_that_breaks_after_first_chunk_is_not_restarted(live_factory, fake):
    proxy = live_factory()
    for key in GOOGLE_KEYS:
        fake.set_key(key, reset_after_chunks=1, chunks=4)
    url = proxy.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    got = b""
    broken = False
    try:
        with requests.post(url, json=BODY, headers=H, stream=True, timeout=10) as r:
            assert r.status_code == 200
            for chunk in r.iter_content(None):
                got += chunk
    except requests.exceptions.ChunkedEncodingError:
        broken = True
    assert broken, "the client must see an incomplete answer, not a clean end"
    assert got.count(b'"text"') == 1  # the first chunk, once: no duplicated text
    assert len(keys_used(fake)) == 1
