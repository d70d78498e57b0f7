"""Shared fixtures: the fake Gemini upstream, an in-process app, a live gunicorn server."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from proxy.fake.server import FakeUpstream
from proxy.settings import Settings

USER_KEY = "test-user-key-0001"
GOOGLE_KEYS = ["fake-key-0001", "fake-key-0002", "fake-key-0003"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake upstream, with behaviours and records cleared before and after."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()
    fake_server.configure(latency_ms=0, chunk_delay_ms=0, chunks=4)  # tests may slow it down


def make_settings(tmp_path: Path, upstream: str, **changes) -> Settings:
    base = dict(db_path=str(tmp_path / "keys.db"), upstream_url=upstream,
                user_keys=[USER_KEY], google_keys=list(GOOGLE_KEYS), writer_interval=0.05,
                pool_refresh=0.2, cooling_wait=0.0, connect_timeout=2.0, read_timeout=10.0)
    base.update(changes)
    return Settings(**base)


@pytest.fixture
def app_factory(tmp_path: Path, fake: FakeUpstream):
    """Build in-process apps (Flask test client) against the fake; closed at teardown."""
    from proxy.app import create_app

    apps = []

    def build(**changes):
        app = create_app(make_settings(tmp_path, fake.url, **changes))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["proxy"].close()


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def client(app):
    return app.test_client()


def wait_for(probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll `probe` until it returns something truthy; return it (fail after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def written(path: str, *ops: Any) -> None:
    """Run writer calls (name, args…) through a real Writer, as the proxy records them, and
    wait for the commit."""
    from proxy.store.writer import Writer

    w = Writer(path)
    w.start()
    for name, *args in ops:
        getattr(w, name)(*args)
    w.close()


def operate(app: Any, fn: Callable[[Any], Any]) -> None:
    """Change the app's database as an operator would (`fn(db)`), then wait for a pool
    view read after the change."""
    from proxy.store import db as store_db

    st = app.extensions["proxy"]
    db = store_db.open_db(st.settings.db_path)
    try:
        fn(db)
    finally:
        db.close()
    assert st.refresher.await_view(time.monotonic(), timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveProxy:
    """`gemini-proxy serve` (gunicorn + gevent) in a subprocess, on a loopback port."""

    def __init__(self, tmp_path: Path, upstream: str, *, workers: int = 1, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = str(tmp_path / "live.db")
        self.log = tmp_path / f"proxy-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "GOOGLE_"))}
        self.env.update(PROXY_DB=self.db, UPSTREAM_URL=upstream, USER_KEYS=USER_KEY,
                        GOOGLE_KEYS="|".join(GOOGLE_KEYS), PROXY_BIND=f"127.0.0.1:{self.port}",
                        PROXY_WORKERS=str(workers), POOL_REFRESH_SECONDS="0.2",
                        WRITER_INTERVAL_SECONDS="0.05", MAX_COOLDOWN_WAIT="0",
                        UPSTREAM_READ_TIMEOUT="10", GRACEFUL_TIMEOUT="10", LOG_LEVEL="INFO")
        self.env.update(env)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "LiveProxy":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--env-file", ""],
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=str(ROOT))
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.log.read_text()}")
            try:
                if requests.get(self.url + "/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"proxy did not start: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def live_factory(tmp_path: Path, fake: FakeUpstream):
    started = []

    def build(**kw) -> LiveProxy:
        proxy = LiveProxy(tmp_path, fake.url, **kw).start()
        started.append(proxy)
        return proxy

    yield build
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def shared_live(tmp_path_factory, fake_server: FakeUpstream):
    """One live proxy for a whole test module (for the SDK tests, which only read)."""
    proxy = LiveProxy(tmp_path_factory.mktemp("live"), fake_server.url).start()
    yield proxy
    proxy.stop()


# The PostgreSQL cluster and the db_url parameter (SQLite path, PostgreSQL URL) live in pg.py.
from pg import db_url, pg_cluster, pg_url  # noqa: E402,F401
