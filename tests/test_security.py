"""Security: user keys never go upstream, Google keys never leak, bad input gets clear errors."""
import json

import requests

from conftest import GOOGLE_KEYS, USER_KEY

GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_user_key_never_reaches_upstream_in_any_form(client, fake):
    client.post(GEN, json=BODY, headers={"x-goog-api-key": USER_KEY})
    client.post(GEN + f"?key={USER_KEY}", json=BODY)
    client.post(GEN, json=BODY, headers={"Authorization": f"Bearer {USER_KEY}"})
    client.post(GEN, json=BODY, headers={"X-API-Key": USER_KEY})
    assert len(fake.requests) == 4
    for r in fake.requests:
        blob = json.dumps(r, default=str)
        assert USER_KEY not in blob
        assert "authorization" not in r["headers"]
        assert "key" not in r["query"]
        assert r["key"] in GOOGLE_KEYS


def test_missing_or_unknown_user_key_is_401_in_googles_envelope(client, fake):
    for headers in ({}, {"x-goog-api-key": "wrong-key"}, {"Authorization": "Bearer nope"}):
        r = client.post(GEN, json=BODY, headers=headers)
        assert r.status_code == 401
        err = r.get_json()["error"]
        assert err["status"] == "UNAUTHENTICATED" and "user key" in err["message"]
    assert fake.requests == []


def test_google_keys_never_appear_in_responses_or_logs(live_factory, fake):
    proxy = live_factory()
    fake.set_key(GOOGLE_KEYS[0], mode="invalid")
    fake.set_key(GOOGLE_KEYS[1], mode="overload")
    bodies = []
    for path in (GEN, "/v1beta/models", "/v1beta/models/nope:generateContent",
                 "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"):
        for _ in range(3):
            r = requests.post(proxy.url + path, json=BODY, headers={"x-goog-api-key": USER_KEY},
                              timeout=10) if "models/" in path else \
                requests.get(proxy.url + path, headers={"x-goog-api-key": USER_KEY}, timeout=10)
            bodies.append(r.text + json.dumps(dict(r.headers)))
    proxy.stop()
    text = "\n".join(bodies) + proxy.logs()
    for key in GOOGLE_KEYS:
        assert key not in text
    assert USER_KEY not in proxy.logs()


def test_bad_json_is_a_clear_400(client, fake):
    r = client.post(GEN, data=b"{not json", headers={"x-goog-api-key": USER_KEY,
                                                     "Content-Type": "application/json"})
    assert r.status_code == 400
    assert "Invalid JSON" in r.get_json()["error"]["message"]
    assert fake.requests == []


def test_unknown_route_is_a_clear_404(client):
    r = client.get("/nowhere", headers={"x-goog-api-key": USER_KEY})
    assert r.status_code == 404
    assert "/v1beta/" in r.get_json()["error"]["message"]


def test_oversized_body_is_413(app_factory):
    client = app_factory(max_body_mb=0.01).test_client()
    r = client.post(GEN, data=b"x" * 20000, headers={"x-goog-api-key": USER_KEY,
                                                     "Content-Type": "application/json"})
    assert r.status_code == 413
    assert "MAX_REQUEST_BODY_MB" in r.get_json()["error"]["message"]


def test_database_file_is_private(app):
    import os
    import stat

    mode = stat.S_IMODE(os.stat(app.extensions["proxy"].settings.db_path).st_mode)
    assert mode == 0o600


def test_server_binds_loopback_by_default():
    from proxy.settings import load_settings

    assert load_settings({}, dotenv=None).bind.startswith("127.0.0.1:")
