"""Durability: SIGTERM under load loses nothing, SIGKILL leaves a sound database, restart serves."""
import os
import signal
import threading
import time
from pathlib import Path

import requests

from conftest import USER_KEY
from proxy.store import db as store_db
from proxy.store.maintenance import integrity_check

BODY = {"contents": [{"role": "user", "parts": [{"text": "keep me safe please"}]}]}


def load(proxy, stop: threading.Event, done: list, errors: list) -> None:
    """Send requests back to back until told to stop; note each fully received answer."""
    session = requests.Session()
    i = 0
    while not stop.is_set():
        i += 1
        method = "streamGenerateContent?alt=sse" if i % 2 else "generateContent"
        try:
            r = session.post(f"{proxy.url}/v1beta/models/gemini-2.5-flash:{method}", json=BODY,
                             headers={"x-goog-api-key": USER_KEY}, timeout=20)
            if r.status_code == 200:
                done.append(time.monotonic())
            else:
                errors.append(r.status_code)
        except requests.RequestException:
            if stop.is_set():
                return
            time.sleep(0.05)  # the server is going away; keep trying until stopped


def run_load(proxy, seconds: float, clients: int = 8):
    stop, done, errors = threading.Event(), [], []
    threads = [threading.Thread(target=load, args=(proxy, stop, done, errors)) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    return stop, threads, done, errors


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def rows(db_path: str) -> list[dict]:
    return list(store_db.open_db(db_path).query("select status, error_class from requests"))


def test_sigterm_under_load_loses_no_request_rows(live_factory, fake):
    fake.configure(latency_ms=30, chunk_delay_ms=20)
    proxy = live_factory(workers=2)
    stop, threads, done, errors = run_load(proxy, 1.5)
    assert proxy.stop(signal.SIGTERM) == 0
    stop.set()
    for t in threads:
        t.join(timeout=30)
    got = rows(proxy.db)
    assert len(done) > 20
    assert sum(1 for r in got if r["status"] == 200) == len(done)
    assert not [r for r in got if r["status"] is None]  # nothing left half-written
    assert not errors


def test_sigkill_leaves_a_sound_database_and_restart_serves_at_once(live_factory, fake, tmp_path):
    fake.configure(latency_ms=30, chunk_delay_ms=20)
    proxy = live_factory(workers=2)
    stop, threads, done, _ = run_load(proxy, 1.5)
    for pid in children(proxy.proc.pid):
        os.kill(pid, signal.SIGKILL)
    os.kill(proxy.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    proxy.proc.wait(timeout=10)
    assert integrity_check(store_db.open_db(proxy.db)) == []
    saved = sum(1 for r in rows(proxy.db) if r["status"] == 200)
    # at most what the writer had not committed yet: the last few hundred milliseconds
    recent = sum(1 for t in done if t > killed_at - 0.5)
    assert len(done) - recent <= saved <= len(done)

    again = live_factory(workers=2, PROXY_DB=proxy.db)
    t0 = time.monotonic()
    r = requests.post(f"{again.url}/v1beta/models/gemini-2.5-flash:generateContent", json=BODY,
                      headers={"x-goog-api-key": USER_KEY}, timeout=10)
    assert r.status_code == 200 and time.monotonic() - t0 < 2
    assert requests.get(again.url + "/ready", timeout=5).status_code == 200
    again.stop()
    left = rows(proxy.db)
    assert not [r for r in left if r["status"] is None]  # the crash's in-flight rows were closed
    assert "marked interrupted" in again.logs() or all(r["error_class"] != "interrupted" for r in left)
