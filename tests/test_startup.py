"""What `gemini-proxy serve` says at start: once, in one line, and the right thing."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import ROOT, LiveProxy


def test_empty_pool_is_said_once_not_per_worker(tmp_path, fake):
    proxy = LiveProxy(tmp_path, fake.url, workers=2, GOOGLE_KEYS="", USER_KEYS="").start()
    proxy.stop()
    logs = proxy.logs()
    assert logs.count("no usable Google keys yet") == 1
    assert logs.count("no user keys") == 1
    assert "gemini-proxy keys add" in logs and "gemini-proxy users add" in logs


def test_a_full_pool_says_nothing_about_keys(tmp_path, fake):
    proxy = LiveProxy(tmp_path, fake.url, workers=1).start()
    proxy.stop()
    assert "no usable Google keys" not in proxy.logs() and "no user keys" not in proxy.logs()


def test_port_in_use_is_one_line_and_exit_1(tmp_path, fake):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "GOOGLE_"))}
        env.update(PROXY_DB=str(tmp_path / "keys.db"), PROXY_BIND=bind, UPSTREAM_URL=fake.url)
        done = subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--env-file", ""],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == f"gemini-proxy: {bind} is in use; stop the other process or pass --bind\n"
    assert done.stdout == ""


def test_readme_start_command_creates_env_readable_only_by_its_owner(tmp_path):
    """The .env the README's command creates will hold Google keys: mode 0600 from the start."""
    import re
    import shutil

    line = next(ln for ln in (ROOT / "README.md").read_text().splitlines()
                if ln.startswith("python3 -m venv") and ln.endswith("gemini-proxy serve"))
    step = re.search(r"\{ \[ -f \.env \] \|\| [^}]*\}", line)
    assert step, line
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    subprocess.run(["bash", "-c", f"umask 022 && {step.group(0)}"], cwd=tmp_path, check=True)
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".env").read_text() == (ROOT / ".env.example").read_text()


def test_a_real_start_retires_what_a_killed_demo_left(tmp_path, fake):
    """The demo's user key is public: after a demo killed outright, `serve` takes it out."""
    from proxy.cli.demo import DEMO_USER_KEY, _add_demo_user, _label_demo_keys
    from proxy.store import open_db

    proxy = LiveProxy(tmp_path, fake.url, workers=1)
    _label_demo_keys(proxy.db)
    _add_demo_user(proxy.db)
    proxy.start()
    import requests

    r = requests.post(proxy.url + "/v1beta/models/gemini-2.5-flash:generateContent",
                      headers={"x-goog-api-key": DEMO_USER_KEY},
                      json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=10)
    assert r.status_code == 401
    proxy.stop()
    db = open_db(proxy.db)
    demo_keys = [r["status"] for r in db.query("select status from google_keys where label like 'demo-%'")]
    assert demo_keys and set(demo_keys) == {"removed"}
    assert [r["status"] for r in db.query("select status from users where label = 'demo'")] == ["removed"]
