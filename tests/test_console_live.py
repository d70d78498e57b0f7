"""The console beside a live proxy (gunicorn + gevent, in a subprocess) serving the fake upstream."""
from __future__ import annotations

import asyncio

import requests
from conftest import GOOGLE_KEYS, USER_KEY
from test_console_app import SIZE, table, until

from console.app import ConsoleApp
from console.panes import KeysPane, RequestsPane
from proxy.store import list_keys, open_db

BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def generate(url: str) -> int:
    answer = requests.post(url + "/v1beta/models/gemini-2.5-flash:generateContent", json=BODY,
                           headers={"x-goog-api-key": USER_KEY}, timeout=30)
    return answer.status_code


def key_status(path: str, value: str) -> str:
    db = open_db(path, readonly=True)
    try:
        masked = value[:4] + "…" + value[-4:]
        return next(k["status"] for k in list_keys(db) if k["masked"] == masked)
    finally:
        db.close()


def test_new_requests_appear_and_a_disabled_key_gets_no_more_traffic(live_factory, fake):
    proxy = live_factory()

    async def go():
        app = ConsoleApp(proxy.db, refresh=0.2, upstream=fake.url)
        async with app.run_test(size=SIZE) as pilot:
            rows = table(app, RequestsPane)
            await until(pilot, lambda: app.status is not None and app.status["up"], timeout=10)
            before = rows.row_count
            codes = [await asyncio.to_thread(generate, proxy.url) for _ in range(3)]
            assert codes == [200, 200, 200]
            # New rows arrive finished, with their status, model and masked key.
            await until(pilot, lambda: rows.row_count >= before + 3, timeout=10)
            await until(pilot, lambda: all(rows.get_row_at(i)[5].plain.strip() == "200" for i in range(3)),
                        timeout=10)
            assert rows.get_row_at(0)[3].plain.strip() == "2.5-flash"
            assert rows.get_row_at(0)[4].plain.strip().startswith("fake…")

            await pilot.press("3")
            keys = app.query_one(KeysPane)
            await until(pilot, lambda: keys.table.row_count == len(GOOGLE_KEYS))
            assert keys.current()["masked"] == "fake…0001"
            await pilot.press("d")
            await until(pilot, lambda: key_status(proxy.db, GOOGLE_KEYS[0]) == "disabled")
            await until(pilot, lambda: "disabled" in keys.table.get_row_at(0)[2].plain)
            await asyncio.sleep(1.5)  # the proxy re-reads keys about once a second

            fake.clear_requests()
            codes = [await asyncio.to_thread(generate, proxy.url) for _ in range(8)]
            assert codes == [200] * 8
            used = {r["key"] for r in fake.requests if ":generateContent" in r["path"]}
            assert used and GOOGLE_KEYS[0] not in used
            await pilot.press("1")
            await until(pilot, lambda: rows.row_count >= before + 11, timeout=10)
            assert all(rows.get_row_at(i)[4].plain.strip() != "fake…0001" for i in range(8))

    asyncio.run(go())
