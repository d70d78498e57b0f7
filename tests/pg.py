"""A throwaway PostgreSQL cluster for the tests: initdb in a temp folder, one database per test.

The cluster runs as the `postgres` OS user (initdb refuses root) on a free loopback port,
its unix socket in its own folder, with a password so URLs carry one (masking is tested).
Without PostgreSQL binaries the PostgreSQL tests skip and say how to enable them;
REQUIRE_POSTGRES=1 (set by .ci/run) turns that skip into a failure.
"""
from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

PASSWORD = "pg-secret-pass"
_BIN_DIRS = ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"]
_counter = itertools.count()


def _bin_dir() -> Path | None:
    for d in [os.environ.get("PG_BIN", ""), *_BIN_DIRS]:
        if d and (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(f"{reason}; install PostgreSQL (apt-get install postgresql) and psycopg "
                "(pip install -e '.[test]') to run these tests, or set PG_BIN to its bin folder")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One running PostgreSQL server in a temp folder."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="proxy-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "postgres"
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_root:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        self.resume()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def resume(self) -> None:
        """Start the stopped server again on the same port (its databases kept)."""
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w", "start")

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (closing every connection) and start it again on the same port.

        "fast" (what a service manager does) keeps every committed transaction; "immediate"
        is a crash, and with synchronous_commit=off it may lose the last fraction of a second.
        """
        self.stop(mode)
        self.resume()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """Create a fresh, empty database; return its URL."""
        name = f"t{os.getpid()}_{next(_counter)}"
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server for the whole session (skips without PostgreSQL and psycopg)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip_or_fail("psycopg is not installed")
    bindir = _bin_dir()
    if bindir is None:
        _skip_or_fail("no PostgreSQL binaries (initdb, pg_ctl) found")
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        cluster.remove()
        _skip_or_fail(f"PostgreSQL would not start: {exc.stderr or exc.stdout}")
    yield cluster
    cluster.remove()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a fresh PostgreSQL database of its own."""
    return pg_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> str:
    """A database target for store tests: a SQLite path, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "keys.db")
    return request.getfixturevalue("pg_url")
