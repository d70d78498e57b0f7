"""Refused requests are part of the record: who knocked, with what, and why, with no upstream work."""
from __future__ import annotations

import pytest

from conftest import USER_KEY
from console.filters import parse
from proxy.store import open_db
from proxy.store.views import recent_requests

FLASH = "gemini-2.5-flash"
WRONG = "not-a-real-user-key-12345678"


def rows(app) -> list[dict]:
    st = app.extensions["proxy"]
    assert st.writer.flush()
    db = open_db(st.settings.db_path, readonly=True)
    try:
        return [dict(r) for r in db.query("select * from requests order by seq")]
    finally:
        db.close()


@pytest.mark.parametrize("call, status, error_class", [
    # native: wrong key, unreadable JSON, a bent path, an unknown API version
    (lambda c: c.post(f"/v1beta/models/{FLASH}:generateContent", headers={"x-goog-api-key": WRONG},
                      json={"contents": []}), 401, "unauthorized"),
    (lambda c: c.post(f"/v1beta/models/{FLASH}:generateContent", data="{not json",
                      headers={"x-goog-api-key": USER_KEY, "Content-Type": "application/json"}),
     400, "bad_request"),
    (lambda c: c.get("/v1beta/models/x/../y", headers={"x-goog-api-key": USER_KEY}), 400, "bad_request"),
    (lambda c: c.post("/upload/v9/files", headers={"x-goog-api-key": USER_KEY}), 404, "not_found"),
    # OpenAI: wrong key, a body that is no JSON object, a parameter nobody can honour
    (lambda c: c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {WRONG}"},
                      json={"model": FLASH, "messages": []}), 401, "unauthorized"),
    (lambda c: c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {USER_KEY}"},
                      json=[1, 2]), 400, "bad_request"),
    (lambda c: c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {USER_KEY}"},
                      json={"model": FLASH, "messages": [{"role": "user", "content": "hi"}],
                            "no_such_parameter": 1}), 400, "bad_request"),
    (lambda c: c.get("/no/such/route", headers={"x-goog-api-key": USER_KEY}), 404, "not_found"),
])
def test_a_refusal_leaves_a_row_and_no_upstream_call(app, fake, call, status, error_class):
    client = app.test_client()
    r = call(client)
    assert r.status_code == status
    assert not fake.requests
    [row] = rows(app)
    assert (row["status"], row["error_class"], row["attempts"]) == (status, error_class, 0)
    assert row["id"] == r.headers["X-Request-Id"]
    assert row["remote_addr"] == "127.0.0.1"
    assert row["error_message"]
    if error_class == "unauthorized":
        assert row["presented_key"] == "not-…5678"  # masked: enough to recognise, never the key
        assert WRONG not in str(row)
        assert row["user_id"] in (0, None)
    elif row["user_id"]:
        assert row["presented_key"] is None  # a known user is named by the user columns
    else:  # refused before the key was checked: the key given, masked
        assert row["presented_key"] == "test…0001"
    if error_class == "bad_request" and "chat" in row["path"]:
        assert row["user_label"]  # the user who sent it is known


def test_refusals_can_be_listed_apart_from_served_requests(app, fake):
    client = app.test_client()
    ok = client.post(f"/v1beta/models/{FLASH}:generateContent", headers={"x-goog-api-key": USER_KEY},
                     json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert ok.status_code == 200
    fake.set_key("fake-key-0001", mode="invalid")  # an upstream error is not a refusal
    for _ in range(3):
        client.post(f"/v1beta/models/{FLASH}:generateContent", headers={"x-goog-api-key": WRONG},
                    json={})
    rows(app)  # flushed
    st = app.extensions["proxy"]
    db = open_db(st.settings.db_path, readonly=True)
    try:
        found = recent_requests(db, parse("status:refused").requests(), now=9e9)
        assert [r["status"] for r in found] == [401, 401, 401]
        both = recent_requests(db, parse("status:refused key:nothing").requests(), now=9e9)
        assert both == []
    finally:
        db.close()


def test_a_request_that_failed_inside_the_proxy_leaves_one_row(app, fake, monkeypatch):
    """A request whose Exchange already holds its row is not recorded again by the error handler."""
    st = app.extensions["proxy"]

    def boom(call):
        raise RuntimeError("a bug")

    monkeypatch.setattr(st.upstream, "open", boom)
    r = app.test_client().post(f"/v1beta/models/{FLASH}:generateContent",
                               headers={"x-goog-api-key": USER_KEY},
                               json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 500 and "proxy's log" in r.get_json()["error"]["message"]
    [row] = rows(app)
    assert (row["status"], row["error_class"]) == (500, "proxy_error")
