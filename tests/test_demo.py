"""`gemini-proxy demo`: runs the proxy against the bundled fake, and cleans up after itself."""
import os
import signal
import subprocess
import sys
import time

import requests

from conftest import ROOT, free_port
from proxy.demo import DEMO_USER_KEY
from proxy.store import db as store_db


def test_demo_serves_and_retires_its_keys(tmp_path):
    port = free_port()
    db = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "GOOGLE_", "USER_"))}
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "demo", "--bind", f"127.0.0.1:{port}",
                             "--db", str(db), "--workers", "1", "--quiet", "--env-file", ""],
                            env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = ""
    try:
        deadline = time.time() + 40
        while time.time() < deadline and "Press Ctrl-C" not in out:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            out += line
        assert "Press Ctrl-C" in out, out
        assert DEMO_USER_KEY in out and f"127.0.0.1:{port}" in out
        url = f"http://127.0.0.1:{port}/v1beta/models/gemini-2.5-flash:generateContent"
        body = {"contents": [{"parts": [{"text": "hello demo"}]}]}
        statuses = [requests.post(url, json=body, headers={"x-goog-api-key": DEMO_USER_KEY},
                                  timeout=20).status_code for _ in range(6)]
        assert statuses.count(200) >= 5
    finally:
        proc.send_signal(signal.SIGTERM)  # as systemd or kill would; Ctrl-C takes the same path
        proc.wait(timeout=40)
    conn = store_db.open_db(db)
    keys = {r["value"]: r["status"] for r in conn.query("select value, status from google_keys")}
    assert keys and set(keys.values()) == {"removed"}
    users = list(conn.query("select status from users where label = 'demo'"))
    assert users == [{"status": "removed"}]
    assert proc.returncode == 0
    # no orphans: the proxy and the fake upstream it started are gone too
    assert requests_refused(f"http://127.0.0.1:{port}/health")


def requests_refused(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return True
    return False
