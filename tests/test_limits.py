"""Per-user limits and per-key RPM caps: refused in the client's dialect, paced across workers."""
import time
from collections import Counter

import pytest
import requests

from conftest import GOOGLE_KEYS, USER_KEY, operate
from proxy.store import db as store_db
from proxy.store.keys import set_rpm_cap
from proxy.store.users import set_limits

GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "limit me"}]}]}
H = {"x-goog-api-key": USER_KEY}


def user_ref(app):
    db = store_db.open_db(app.extensions["proxy"].settings.db_path)
    return next(db.query("select id from users"))["id"]


def test_user_requests_per_minute(app, client, fake):
    operate(app, lambda db: set_limits(db, user_ref(app), rpm=3))
    statuses = [client.post(GEN, json=BODY, headers=H).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    r = client.post(GEN, json=BODY, headers=H)
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert "3 requests per minute" in r.get_json()["error"]["message"]
    assert len(fake.requests) == 3
    st = app.extensions["proxy"]
    st.writer.flush()
    rows = list(store_db.open_db(st.settings.db_path).query(
        "select error_class, count(*) n from requests where status = 429 group by 1"))
    assert rows == [{"error_class": "user_limit", "n": 3}]


def test_user_tokens_per_day_in_openai_dialect(app, client, fake):
    operate(app, lambda db: set_limits(db, user_ref(app), tpd=10))
    oai = {"Authorization": f"Bearer {USER_KEY}"}
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "count " * 20}]}
    assert client.post("/v1/chat/completions", json=body, headers=oai).status_code == 200
    r = client.post("/v1/chat/completions", json=body, headers=oai)
    assert r.status_code == 429
    err = r.get_json()["error"]
    assert (err["type"], err["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "tokens for today" in err["message"]
    assert int(r.headers["Retry-After"]) > 60  # the next Pacific midnight


def test_allowed_models(app, client, fake):
    operate(app, lambda db: set_limits(db, user_ref(app), models="gemini-2.5-pro"))
    r = client.post(GEN, json=BODY, headers=H)
    assert r.status_code == 403 and "gemini-2.5-pro" in r.get_json()["error"]["message"]
    ok = client.post("/v1beta/models/gemini-2.5-pro:generateContent", json=BODY, headers=H)
    assert ok.status_code == 200
    assert len(fake.requests) == 1


def sends_per_key(fake):
    return Counter(r["key"] for r in fake.requests if ":generateContent" in r["path"])


@pytest.mark.parametrize("keys", [1, 4])
def test_capped_keys_pace_below_googles_quota(app_factory, fake, keys):
    app = app_factory(google_keys=GOOGLE_KEYS[:1] + [f"fake-key-10{i}" for i in range(keys - 1)])
    client = app.test_client()
    for key in [*GOOGLE_KEYS[:1], *(f"fake-key-10{i}" for i in range(keys - 1))]:
        fake.set_key(key, rpm=4)  # Google would answer 429 on the 5th request a minute
    operate(app, lambda db: [set_rpm_cap(db, str(k["id"]), 3)
                               for k in db.query("select id from google_keys")])
    statuses = Counter(client.post(GEN, json=BODY, headers=H).status_code for _ in range(20))
    assert statuses[200] == 3 * keys  # about N times one key's throughput
    assert statuses[429] == 20 - 3 * keys  # refused by the pool itself, with Retry-After
    assert all(n <= 3 for n in sends_per_key(fake).values())
    st = app.extensions["proxy"]
    st.writer.flush()
    db = store_db.open_db(st.settings.db_path)
    assert next(db.query("select coalesce(sum(rate_limited), 0) n from stats_minute"))["n"] == 0


def test_caps_hold_across_workers(live_factory, fake):
    proxy = live_factory(workers=2)
    db = store_db.open_db(proxy.db)
    for k in list(db.query("select id from google_keys")):
        set_rpm_cap(db, str(k["id"]), 2)
    time.sleep(0.6)
    got = Counter()
    for _ in range(10):
        # a fresh connection each time, so the kernel spreads requests over both workers;
        # spaced wider than the writer + refresh lag (about 0.25 s here) that the caps
        # tolerate between workers
        r = requests.post(proxy.url + GEN, json=BODY, headers={**H, "Connection": "close"},
                          timeout=10)
        got[r.status_code] += 1
        time.sleep(0.6)
    assert all(n <= 2 for n in sends_per_key(fake).values()), sends_per_key(fake)
    assert got[200] == 6 and got[429] == 4
