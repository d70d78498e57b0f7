"""Run the app under gunicorn with gevent workers (never Flask's development server)."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import sys
import time
from typing import Any

from gunicorn.app.base import BaseApplication

from proxy import __version__
from proxy.serving import handover, multiproc
from proxy.bootstrap import prepare_database
from proxy.store.pg import ConnectFailed, mask_url
from proxy.serving.gunicorn_conf import options
from proxy.settings import Settings

log = logging.getLogger("proxy")


class ProxyServer(BaseApplication):
    """gunicorn application that builds the Flask app inside each worker, after fork."""

    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for name, value in options(self.settings).items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        # Imported here, in the worker, after gevent has patched the standard library:
        # requests and ssl must see the patched socket module.
        from proxy.app import create_app

        return create_app(self.settings)

    def run(self) -> None:
        # gunicorn's own run(), with the arbiter that upgrades by handing over (see handover)
        try:
            handover.HandoverArbiter(self).run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)


def close_interrupted(settings: Settings, worker_pid: int | None = None) -> int:
    """Close this host's request rows left in flight, in the master: all a previous run
    left (before workers start), or those of one worker that has died (given `worker_pid`)."""
    from proxy.store import db as store_db
    from proxy.store.retention import close_interrupted as close
    from proxy.store.util import this_host

    db = store_db.open_db(settings.db_path)
    try:
        return close(db, time.time(), this_host(settings.host_name), worker_pid)
    finally:
        db.close()


def census(db_path: str) -> dict[str, int]:
    """Count usable Google keys and user keys, once, in the master (not once per worker)."""
    from proxy.store import db as store_db
    from proxy.store.keys import census as count

    db = store_db.open_db(db_path)
    try:
        return count(db)
    finally:
        db.close()


def bind_problem(bind: str) -> str | None:
    """Say why `bind` cannot be listened on (in use, not an address here), or None.

    gunicorn would retry five times and print a banner and a dozen errors first; an operator
    needs the one line. Skipped when the socket is inherited (a graceful reload).
    """
    if os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS"):
        return None
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return f"cannot listen on {bind}: {exc}"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{bind} is in use; stop the other process or pass --bind"
            return f"cannot listen on {bind}: {exc.strerror}"
    return None


def _is_loopback(bind: str) -> bool:
    host = bind.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def serve(settings: Settings) -> int:
    """Prepare the database and run gunicorn until stopped."""
    problem = bind_problem(settings.bind)
    if problem:
        print(f"gemini-proxy: {problem}", file=sys.stderr)
        return 1
    taking_over = handover.inherited()  # a reload: the old master's workers still serve
    try:
        prepare_database(settings)
        if not settings.demo:  # a real start never keeps the demo's public user key
            from proxy.cli.demo import retire_leftovers

            retire_leftovers(settings.db_path)
        # The rows in flight are the old workers' own on a reload; they close them as they finish.
        # Only this host's rows: on a shared PostgreSQL database other hosts' are still served.
        interrupted = 0 if taking_over else close_interrupted(settings)
        pool = census(settings.db_path)
    except ConnectFailed as exc:  # PostgreSQL down or unreachable: host:port and why, one line
        print(f"gemini-proxy: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a clear line, not a traceback: the folder or file is the problem
        print(f"gemini-proxy: cannot open database {mask_url(settings.db_path)}: {exc}", file=sys.stderr)
        return 2
    if interrupted:
        print(f"gemini-proxy: {interrupted} request(s) the last run left unfinished are marked "
              "interrupted", file=sys.stderr)
    print(f"gemini-proxy {__version__} on http://{settings.bind} "
          f"({settings.workers} workers, database {mask_url(settings.db_path)}, "
          f"upstream {settings.upstream_url})", file=sys.stderr, flush=True)
    if not pool["usable_keys"]:
        print("gemini-proxy: no usable Google keys yet: clients get 503 until you add one "
              "(GOOGLE_KEYS in .env, or gemini-proxy keys add VALUE; it applies within a "
              "second)", file=sys.stderr)
    if not pool["users"]:
        print("gemini-proxy: no user keys: every request will be refused until you add one "
              "(USER_KEYS in .env, or gemini-proxy users add NAME)", file=sys.stderr)
    if settings.prices_file:  # the bundled table is always there; a chosen one may not be
        from proxy.prices import Prices

        Prices.load(settings.prices_file)
    if not _is_loopback(settings.bind):
        print(f"gemini-proxy: listening on {settings.bind}, not loopback: put Traefik or a "
              "firewall in front of it", file=sys.stderr)
    folder, made = multiproc.prepare(taking_over)  # before any worker imports prometheus_client
    try:
        ProxyServer(settings).run()
    finally:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
    return 0
