"""`gemini-proxy demo`: runs the proxy against the bundled fake, and cleans up after itself."""
import os
import signal
import subprocess
import sys
import time

import requests

from conftest import ROOT, free_port
from proxy.cli.demo import DEMO_USER_KEY
from proxy.store import db as store_db


def run_demo_once(db, port: int) -> str:
    """Run the demo until it has printed its banner, use it, stop it; return what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "GOOGLE_", "USER_", "LOG_"))}
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
        assert statuses.count(200) >= 5, statuses
    finally:
        proc.send_signal(signal.SIGTERM)  # as systemd or kill would; Ctrl-C takes the same path
        rest, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0
    return out + rest


def test_demo_serves_and_retires_its_keys(tmp_path):
    port = free_port()
    db = tmp_path / "demo.db"
    out = run_demo_once(db, port)
    # the banner stays on screen: no line per request under it
    assert "POST /v1beta" not in out and " INFO " not in out
    assert "gemini-console --db" in out
    conn = store_db.open_db(db)
    keys = {r["value"]: r["status"] for r in conn.query("select value, status from google_keys")}
    assert keys and set(keys.values()) == {"removed"}
    users = list(conn.query("select status from users where label = 'demo'"))
    assert users == [{"status": "removed"}]
    conn.close()
    # no orphans: the proxy and the fake upstream it started are gone too
    assert requests_refused(f"http://127.0.0.1:{port}/health")
    # a second demo on the same database brings its retired user and keys back
    run_demo_once(db, free_port())


def test_demo_traffic_ends_when_the_proxy_dies(capsys):
    from proxy.cli.demo import _traffic

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _traffic("http://127.0.0.1:9", dead, "reminder")
    assert "the proxy stopped" in capsys.readouterr().out


def requests_refused(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return True
    return False
