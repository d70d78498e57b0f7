"""`gemini-proxy demo`: the proxy against the bundled fake upstream, with demo keys and traffic."""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from proxy.settings import Settings
from proxy.store.pg import is_url

DEMO_USER_KEY = "demo-user-key-0001"
# Five keys with different characters, so the console shows every state a key can be in:
# one healthy (usable), one tired quickly (cooling), one dead, one flaky, and one whose every
# answer is a 503 (sick: the pool still tries it now and then, and each try fails).
DEMO_KEYS = {
    "demo-key-healthy-0001": {},
    "demo-key-tired-0002": {"rpm": 4, "retry_delay_s": 20},
    "demo-key-dead-0003": {"mode": "invalid"},
    "demo-key-flaky-0004": {"sequence": ["overload", "ok", "ok", "overload", "ok", "ok"]},
    "demo-key-sick-0005": {"mode": "overload"},
}
PROMPTS = ["Write a haiku about SQLite.", "Explain gevent in one sentence.",
           "What is a key pool?", "Summarise the plot of Hamlet.", "Say hello in French."]


def _db_for_demo(settings: Settings, explicit: bool) -> str:
    """Use the configured database unless it already holds real keys."""
    if explicit or is_url(settings.db_path) or not Path(settings.db_path).exists():
        return settings.db_path
    from proxy.store import db as store_db, schema
    from proxy.store.keys import list_keys

    db = store_db.open_db(settings.db_path)
    try:
        schema.migrate(db)
        real = [k for k in list_keys(db) if not (k.get("label") or "").startswith("demo")]
    finally:
        db.close()
    if real:
        demo = str(Path(settings.db_path).with_name("demo.db"))
        print(f"{settings.db_path} already holds real keys; the demo uses {demo}")
        return demo
    return settings.db_path


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child when the demo dies, even by SIGKILL (no orphans)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the SIGTERM handler still cleans up
        pass


def _start_fake() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "proxy.fake.server", "--port", "0",
                             "--latency-ms", "120", "--chunks", "8", "--chunk-delay-ms", "60"],
                            stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    line = proc.stdout.readline() if proc.stdout else ""
    if "http://" not in line:
        proc.kill()
        raise SystemExit("gemini-proxy demo: the fake upstream did not start")
    url = line[line.index("http://"):].strip()
    req = urllib.request.Request(url + "/_fake/keys", data=json.dumps(DEMO_KEYS).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()
    return proc, url


def _label_demo_keys(db_path: str) -> None:
    from proxy.store import db as store_db, schema
    from proxy.store.keys import add_key

    db = store_db.open_db(db_path)
    try:
        schema.migrate(db)
        for value in DEMO_KEYS:
            add_key(db, value, label="demo-" + value.split("-")[2])
    finally:
        db.close()


def retire_leftovers(db_path: str) -> None:
    """Take demo keys and the demo user out, so a real `serve` never sends them to Google.

    The demo user key is printed in the README and on screen: it must never stay valid
    outside a demo, even after a demo that was killed before it could clean up.
    """
    from proxy.store import db as store_db
    from proxy.store.keys import find_key, remove_key
    from proxy.store.users import find_user, remove_user
    from proxy.store.util import mask_key

    db = store_db.open_db(db_path)
    try:
        for value in DEMO_KEYS:
            key = find_key(db, value)
            if key and key["status"] != "removed":
                remove_key(db, value)
        user = find_user(db, "demo")
        if user and user["status"] != "removed" and user["masked"] == mask_key(DEMO_USER_KEY):
            remove_user(db, "demo")
    finally:
        db.close()


def _add_demo_user(db_path: str) -> None:
    from proxy.store import db as store_db
    from proxy.store.users import add_user, find_user
    from proxy.store.util import StoreError

    db = store_db.open_db(db_path)
    try:
        existing = find_user(db, "demo")
        if existing is None or existing.get("status") != "active":
            try:
                add_user(db, "demo", DEMO_USER_KEY)
            except StoreError:
                pass
    finally:
        db.close()


REMIND_EVERY = 30.0  # seconds between one-line reminders of the user key and the console


def _traffic(base: str, proxy: subprocess.Popen, reminder: str) -> None:
    """Send a request every second or so, some streamed, until interrupted or the proxy dies."""
    rng = random.Random()
    remind_at = time.monotonic() + REMIND_EVERY
    while proxy.poll() is None:
        model = rng.choice(["gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-pro"])
        stream = rng.random() < 0.5
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": rng.choice(PROMPTS)}]}]}
        req = urllib.request.Request(f"{base}/v1beta/models/{model}:{method}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "x-goog-api-key": DEMO_USER_KEY})
        try:
            urllib.request.urlopen(req, timeout=30).read()
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= remind_at:
            print(reminder, flush=True)
            remind_at = time.monotonic() + REMIND_EVERY
        time.sleep(rng.uniform(0.3, 1.5))
    print("gemini-proxy demo: the proxy stopped (see above); ending the demo", flush=True)


def _command(name: str) -> str:
    """Return how to run one of this install's commands, as the README writes it."""
    here = Path(sys.executable).parent / name
    if here.exists():
        relative = os.path.relpath(here)
        return relative if not relative.startswith("..") else str(here)
    return name


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings, *, traffic: bool = True, explicit_db: bool = False,
             log_level: str = "WARNING") -> int:
    """Start the fake upstream and the proxy, print how to use them, run until Ctrl-C.

    The proxy logs at WARNING unless told otherwise: a line per demo request would scroll
    the instructions away within seconds (the console shows every request anyway).
    """
    # SIGTERM (systemd, kill) cleans up like Ctrl-C: no orphaned proxy or fake left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    db_path = _db_for_demo(settings, explicit_db)
    if not is_url(db_path):
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    fake, fake_url = _start_fake()
    _label_demo_keys(db_path)
    _add_demo_user(db_path)
    env = dict(os.environ, PROXY_DB=db_path, UPSTREAM_URL=fake_url, PROXY_BIND=settings.bind,
               PROXY_WORKERS=str(settings.workers), PROXY_DEMO="true", LOG_LEVEL=log_level)
    env.pop("GOOGLE_KEYS", None)  # real keys stay out of the demo
    proxy = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--env-file", ""],
                             env=env, preexec_fn=_die_with_parent)
    base = f"http://{settings.bind}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/health", timeout=1).read()
                break
            except (urllib.error.URLError, OSError):
                if proxy.poll() is not None:
                    raise SystemExit("gemini-proxy demo: the proxy did not start (see above)") from None
                time.sleep(0.1)
        console = _command("gemini-console") + ("" if db_path == "data/keys.db"
                                                 else f" --db {db_path}")
        print(f"""
gemini-proxy demo is running on {base} against a fake Gemini API ({fake_url}).
Demo keys: one healthy, one that tires after 4 requests a minute, one dead, one flaky,
and one that answers 503 to everything.
Your user key: {DEMO_USER_KEY}

  curl -s {base}/v1beta/models/gemini-2.5-flash:generateContent \\
    -H 'x-goog-api-key: {DEMO_USER_KEY}' -H 'Content-Type: application/json' \\
    -d '{{"contents":[{{"parts":[{{"text":"Hello"}}]}}]}}'

  Python: genai.Client(api_key="{DEMO_USER_KEY}", http_options={{"base_url": "{base}"}})
  Watch it: {console}
Press Ctrl-C to stop.""", flush=True)
        if traffic:
            _traffic(base, proxy, f"demo on {base} · user key {DEMO_USER_KEY} · watch it: "
                                  f"{console} · Ctrl-C stops")
        else:
            proxy.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (proxy, fake):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (proxy, fake):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        retire_leftovers(db_path)
    return 0
