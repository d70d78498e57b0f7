"""Accounting: every request becomes a row, with tokens, even across a graceful stop."""
from concurrent.futures import ThreadPoolExecutor

import requests

from conftest import USER_KEY
from proxy.store import db as store_db

BODY = {"contents": [{"role": "user", "parts": [{"text": "count my tokens please"}]}]}


def test_n_requests_in_n_rows_out_after_graceful_stop(live_factory, fake):
    proxy = live_factory(workers=2)
    n = 60

    def one(i):
        method = "streamGenerateContent?alt=sse" if i % 2 else "generateContent"
        r = requests.post(f"{proxy.url}/v1beta/models/gemini-2.5-flash:{method}", json=BODY,
                          headers={"x-goog-api-key": USER_KEY}, timeout=20)
        return r.status_code

    with ThreadPoolExecutor(16) as ex:
        statuses = list(ex.map(one, range(n)))
    assert statuses == [200] * n
    assert proxy.stop() == 0
    db = store_db.open_db(proxy.db)
    rows = list(db.query("select * from requests"))
    assert len(rows) == n
    assert all(r["status"] == 200 and r["tokens_in"] > 0 and r["tokens_out"] > 0 for r in rows)
    assert sum(r["stream"] for r in rows) == n // 2
    assert all(r["key_masked"] and "…" in r["key_masked"] for r in rows)
    stats = next(db.query("select sum(requests) n, sum(ok) ok, sum(tokens_in) t from stats_minute"))
    assert stats["n"] == n and stats["ok"] == n
    assert stats["t"] == sum(r["tokens_in"] for r in rows)


def _rows(app):
    st = app.extensions["proxy"]
    assert st.writer.flush()
    db = store_db.open_db(st.settings.db_path, readonly=True)
    try:
        return list(db.query("select * from requests where status is not null order by started_at"))
    finally:
        db.close()


def test_tool_use_prompt_tokens_count_as_input_in_the_row_and_the_answer(app, fake):
    """Google's own tools add toolUsePromptTokenCount: the row, the limits and the client agree."""
    client = app.test_client()
    r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {USER_KEY}"},
                    json={"model": "gemini-2.5-flash", "web_search_options": {},
                          "messages": [{"role": "user", "content": "what happened today?"}]})
    assert r.status_code == 200, r.json
    usage = r.json["usage"]
    native = client.post("/v1beta/models/gemini-2.5-flash:generateContent",
                         headers={"x-goog-api-key": USER_KEY},
                         json={"tools": [{"googleSearch": {}}], **BODY})
    meta = native.json["usageMetadata"]
    assert meta["toolUsePromptTokenCount"] > 0
    chat_row, native_row = _rows(app)
    assert chat_row["tokens_in"] == usage["prompt_tokens"]
    assert chat_row["tokens_out"] == usage["completion_tokens"]
    assert native_row["tokens_in"] == meta["promptTokenCount"] + meta["toolUsePromptTokenCount"]
    db = store_db.open_db(app.extensions["proxy"].settings.db_path, readonly=True)
    counted = next(db.query("select sum(tokens_in) t from stats_minute"))["t"]
    db.close()
    assert counted == chat_row["tokens_in"] + native_row["tokens_in"]  # what limits and cost read
