"""Learned quota limits and pacing, end to end: the fake enforces Google's quotas, the proxy
learns them from its 429s, shares them through the database and paces itself below them."""
from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from conftest import GOOGLE_KEYS, USER_KEY, operate
from proxy.store import db as store_db
from proxy.store.keys import enable_key, reset_key
from proxy.store.util import next_pacific_midnight
from proxy.store.writer import Writer

MODEL = "gemini-2.5-flash"
GEN = f"/v1beta/models/{MODEL}:generateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "how much is left"}]}]}
H = {"x-goog-api-key": USER_KEY}


def sent(fake, key=None):
    """Return the generate calls the fake received (for one key, or per key)."""
    calls = Counter(r["key"] for r in fake.requests if ":generateContent" in r["path"])
    return calls[key] if key else calls


def key_ids(app) -> dict[str, int]:
    db = store_db.open_db(app.extensions["proxy"].settings.db_path)
    try:
        return {r["value"]: r["id"] for r in db.query("select id, value from google_keys")}
    finally:
        db.close()


def learned_earlier(app, kind: str, value: int, keys=GOOGLE_KEYS) -> None:
    """Record limits as the writer does when a 429 names them (as if learned a while ago)."""
    st = app.extensions["proxy"]
    writer = Writer(st.settings.db_path)
    writer.start()
    ids = key_ids(app)
    for key in keys:
        writer.limit_learned(ids[key], MODEL, kind, value, time.time())
    writer.close()
    assert st.refresher.await_view(time.monotonic(), timeout=5)


def test_fake_answers_quota_429s_like_google(fake):
    key = "fake-key-q001"
    fake.set_key(key, rpd=2)
    url = fake.url + GEN
    got = [requests.post(url, json=BODY, headers={"x-goog-api-key": key}, timeout=5) for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    error = got[2].json()["error"]
    violation = next(d for d in error["details"] if d["@type"].endswith("QuotaFailure"))["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert violation["quotaValue"] == "2" and "limit: 2, model: gemini-2.5-flash" in error["message"]
    assert any(d["@type"].endswith("RetryInfo") for d in error["details"])
    # per model: another model has its own day
    other = fake.url + "/v1beta/models/gemini-2.0-flash:generateContent"
    assert requests.post(other, json=BODY, headers={"x-goog-api-key": key}, timeout=5).status_code == 200
    fake.set_key(key, tpm=1)  # fewer input tokens than any prompt: every call is over
    r = requests.post(url, json=BODY, headers={"x-goog-api-key": key}, timeout=5)
    assert r.status_code == 429 and "InputTokens" in r.text and "limit: 1," in r.json()["error"]["message"]
    assert fake.refusals() == {(key, MODEL, "day"): 1, (key, MODEL, "tokens"): 1}


def test_spent_daily_quota_is_refused_at_once_with_the_true_retry_after(app, client, fake):
    for key in GOOGLE_KEYS:
        fake.set_key(key, rpd=5)
    learned_earlier(app, "rpd", 5)
    statuses = [client.post(GEN, json=BODY, headers=H).status_code for _ in range(15)]
    assert statuses == [200] * 15
    assert sent(fake) == {key: 5 for key in GOOGLE_KEYS}
    r = client.post(GEN, json=BODY, headers=H)
    assert r.status_code == 429
    assert r.get_json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    until_midnight = next_pacific_midnight(time.time()) - time.time()
    assert abs(int(r.headers["Retry-After"]) - until_midnight) < 5
    assert len(fake.requests) == 15 and fake.refusals() == {}  # no upstream call for the 16th


def test_a_daily_429_teaches_the_limit_and_later_requests_stay_home(app, client, fake):
    for key in GOOGLE_KEYS:
        fake.set_key(key, rpd=5)
    assert [client.post(GEN, json=BODY, headers=H).status_code for _ in range(15)] == [200] * 15
    r = client.post(GEN, json=BODY, headers=H)  # every key answers 429 upstream: relayed
    assert r.status_code == 429
    assert sum(fake.refusals().values()) == 3
    before = len(fake.requests)
    r = client.post(GEN, json=BODY, headers=H)
    assert r.status_code == 429 and len(fake.requests) == before
    st = app.extensions["proxy"]
    st.writer.flush()
    db = store_db.open_db(st.settings.db_path)
    rows = list(db.query("select model, kind, source, value from key_limits"))
    assert rows == [{"model": MODEL, "kind": "rpd", "source": "learned", "value": 5}] * 3


def test_learned_limits_pace_a_per_minute_quota_without_429s(app_factory, fake, tmp_path):
    for key in GOOGLE_KEYS:
        fake.set_key(key, rpm=4)
    blind = app_factory(db_path=str(tmp_path / "blind.db"))
    statuses = Counter(blind.test_client().post(GEN, json=BODY, headers=H).status_code
                       for _ in range(20))
    assert sum(fake.refusals().values()) > 0  # without knowing the limit: 429s upstream
    assert statuses[200] == 12

    for key in GOOGLE_KEYS:  # a fresh minute at the fake
        fake.set_key(key, rpm=4)
    fake.clear_requests()
    refused = Counter(fake.refusals())
    paced = app_factory(db_path=str(tmp_path / "paced.db"))
    learned_earlier(paced, "rpm", 4)
    client = paced.test_client()
    statuses = Counter()
    for _ in range(20):
        r = client.post(GEN, json=BODY, headers=H)
        statuses[r.status_code] += 1
        if r.status_code == 429:
            assert 1 <= int(r.headers["Retry-After"]) <= 62
    assert Counter(fake.refusals()) == refused  # no 429: the pool stopped at each key's 4 a minute
    assert statuses == {200: 12, 429: 8}
    assert sent(fake) == {key: 4 for key in GOOGLE_KEYS}


def test_learned_token_limit_paces_by_input_tokens(app_factory, fake):
    key = GOOGLE_KEYS[0]
    app = app_factory(google_keys=[key])
    client = app.test_client()
    first = client.post(GEN, json=BODY, headers=H).get_json()
    per_call = first["usageMetadata"]["promptTokenCount"]
    fake.set_key(key, tpm=per_call * 3)
    learned_earlier(app, "tpm", per_call * 3, keys=[key])
    statuses = [client.post(GEN, json=BODY, headers=H).status_code for _ in range(4)]
    # the first call's tokens count too: two more fit in the minute
    assert statuses == [200, 200, 429, 429]
    assert fake.refusals() == {}


def test_limit_zero_means_no_quota_for_the_model_until_reset(app, client, fake):
    ids = key_ids(app)
    fake.set_key(GOOGLE_KEYS[0], rpm=0)  # Google: "limit: 0" for this key's tier
    for _ in range(200):  # until the random spread has tried that key once
        assert client.post(GEN, json=BODY, headers=H).status_code == 200
        if sent(fake, GOOGLE_KEYS[0]):
            break
    for _ in range(15):
        assert client.post(GEN, json=BODY, headers=H).status_code == 200
    assert sent(fake, GOOGLE_KEYS[0]) == 1  # never again today
    pool = app.extensions["proxy"].pool
    now = time.time()
    assert pool.cooling_until(ids[GOOGLE_KEYS[0]], MODEL, now) >= next_pacific_midnight(now) - 1
    # other models are not affected
    other = "/v1beta/models/gemini-2.0-flash:generateContent"
    fake.set_key(GOOGLE_KEYS[0])
    for _ in range(200):
        client.post(other, json=BODY, headers=H)
        if sent(fake, GOOGLE_KEYS[0]) > 1:
            break
    assert sent(fake, GOOGLE_KEYS[0]) == 2
    # an operator reset forgets it: the key serves the model again
    operate(app, lambda db: reset_key(db, str(ids[GOOGLE_KEYS[0]])))
    assert pool.cooling_until(ids[GOOGLE_KEYS[0]], MODEL, time.time()) == 0.0


def test_learned_limits_are_shared_by_workers_and_survive_a_restart(app_factory, fake):
    fake.set_key(GOOGLE_KEYS[0], rpd=1)
    first = app_factory()
    second = app_factory()  # another worker on the same database
    ids = key_ids(first)
    one = first.test_client()
    for _ in range(200):  # until the first key has used its one call and answered a 429
        assert one.post(GEN, json=BODY, headers=H).status_code == 200
        if fake.refusals():
            break
    assert sent(fake, GOOGLE_KEYS[0]) == 2
    first.extensions["proxy"].writer.flush()
    # The rest (a cooldown until midnight) goes; what was learned and counted stays.
    operate(first, lambda db: enable_key(db, str(ids[GOOGLE_KEYS[0]])))
    assert second.extensions["proxy"].refresher.await_view(time.monotonic(), timeout=5)
    third = app_factory()  # a restart: a new process reads the database afresh
    for app in (second, third):
        client = app.test_client()
        for _ in range(30):
            assert client.post(GEN, json=BODY, headers=H).status_code == 200
    assert sent(fake, GOOGLE_KEYS[0]) == 2  # neither sent it another call
    assert sum(fake.refusals().values()) == 1


@pytest.mark.parametrize("workers", [2])
def test_daily_pacing_holds_across_gunicorn_workers(live_factory, fake, workers):
    for key in GOOGLE_KEYS:
        fake.set_key(key, rpd=3)
    proxy = live_factory(workers=workers)
    db = store_db.open_db(proxy.db)
    ids = {r["value"]: r["id"] for r in db.query("select id, value from google_keys")}
    writer = Writer(proxy.db)
    writer.start()
    for key in GOOGLE_KEYS:
        writer.limit_learned(ids[key], MODEL, "rpd", 3, time.time())
    writer.close()
    time.sleep(0.6)  # both workers' refresh (0.2 s here) has read the limits
    got = Counter()
    for _ in range(12):
        # a fresh connection each time, so the kernel spreads requests over both workers;
        # spaced wider than the writer + refresh lag (about 0.25 s here)
        r = requests.post(proxy.url + GEN, json=BODY, headers={**H, "Connection": "close"}, timeout=10)
        got[r.status_code] += 1
        time.sleep(0.4)
    assert got == {200: 9, 429: 3}
    assert fake.refusals() == {}


def test_metrics_export_the_daily_budget_left(app, client, fake):
    learned_earlier(app, "rpd", 5)
    for _ in range(4):
        assert client.post(GEN, json=BODY, headers=H).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("gemini_proxy_daily_quota")}
    assert lines[f'gemini_proxy_daily_quota_remaining{{model="{MODEL}"}}'] == 11
    assert lines[f'gemini_proxy_daily_quota_limit{{model="{MODEL}"}}'] == 15


def test_the_background_threads_carry_their_names(app):
    """top -H and the pool benchmark tell the refresher and the writer apart by name."""
    import os

    def names() -> set[str]:
        found = set()
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm", encoding="ascii") as f:
                    found.add(f.read().strip())
            except OSError:
                pass
        return found

    deadline = time.monotonic() + 5  # a new thread names itself as it starts to run
    while not {"pool-refresh", "store-writer"} <= names():
        assert time.monotonic() < deadline, names()
        time.sleep(0.01)
