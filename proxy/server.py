"""Run the app under gunicorn with gevent workers (never Flask's development server)."""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Any

from gunicorn.app.base import BaseApplication

from proxy import __version__, multiproc
from proxy.bootstrap import prepare_database
from proxy.gunicorn_conf import options
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


def close_interrupted(db_path: str, worker_pid: int | None = None) -> int:
    """Close request rows left in flight, in the master: all a previous run left (before
    workers start), or those of one worker that has died (given `worker_pid`)."""
    from proxy.store import db as store_db
    from proxy.store.retention import close_interrupted as close

    db = store_db.open_db(db_path)
    try:
        return close(db, time.time(), worker_pid)
    finally:
        db.close()


def _is_loopback(bind: str) -> bool:
    host = bind.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def serve(settings: Settings) -> int:
    """Prepare the database and run gunicorn until stopped."""
    try:
        prepare_database(settings)
        interrupted = close_interrupted(settings.db_path)
    except Exception as exc:  # a clear line, not a traceback: the folder or file is the problem
        print(f"gemini-proxy: cannot open database {settings.db_path}: {exc}", file=sys.stderr)
        return 2
    if interrupted:
        print(f"gemini-proxy: {interrupted} request(s) the last run left unfinished are marked "
              "interrupted", file=sys.stderr)
    print(f"gemini-proxy {__version__} on http://{settings.bind} "
          f"({settings.workers} workers, database {settings.db_path}, "
          f"upstream {settings.upstream_url})", file=sys.stderr, flush=True)
    if not _is_loopback(settings.bind):
        print(f"gemini-proxy: listening on {settings.bind}, not loopback: put Traefik or a "
              "firewall in front of it", file=sys.stderr)
    created = not os.environ.get(multiproc.MULTIPROC_ENV)
    folder = multiproc.prepare()  # before any worker imports prometheus_client
    try:
        ProxyServer(settings).run()
    finally:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
    return 0
