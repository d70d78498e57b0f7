"""create_app(): the Flask application and the per-process state behind it."""
from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from proxy import __version__
from proxy.bootstrap import prepare_database
from proxy.pool import KeyPool, Refresher
from proxy.settings import Settings, load_settings
from proxy.upstream import Upstream

log = logging.getLogger("proxy")


@dataclass
class ProxyState:
    """What one worker process holds: settings, pool, writer, upstream client."""

    settings: Settings
    pool: KeyPool
    writer: Any
    upstream: Upstream
    refresher: Refresher
    secret: bytes
    trusted: list[Any] = field(default_factory=list)
    inflight: int = 0
    served: int = 0
    started_at: float = field(default_factory=time.time)
    closed: bool = False

    def track(self, delta: int) -> None:
        self.inflight += delta
        if delta < 0:
            self.served += 1

    def heartbeat(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started_at": self.started_at,
                "last_seen": time.time(), "version": __version__, "inflight": self.inflight,
                "served": self.served}

    def close(self) -> None:
        """Stop background work and flush every queued write (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.refresher.stop()
        self.writer.close(timeout=self.settings.graceful_timeout)


_states: list[ProxyState] = []


def close_all() -> None:
    """Flush and stop every state this process created (gunicorn's worker_exit, atexit)."""
    for st in _states:
        st.close()


atexit.register(close_all)


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("proxy").setLevel(level)


def create_app(settings: Settings | None = None, *, test_config: dict[str, Any] | None = None
               ) -> Flask:
    """Build the proxy app: open the store, load the pool, start the writer and refresher."""
    from proxy.routes import native, ops
    from proxy.store import db as store_db, keys as store_keys
    from proxy.store.writer import Writer

    settings = settings or load_settings()
    configure_logging(settings.log_level)
    secret = prepare_database(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if test_config:
        app.config.update(test_config)

    holder: dict[str, ProxyState] = {}
    writer = Writer(settings.db_path, interval=settings.writer_interval,
                    heartbeat=lambda: holder["state"].heartbeat())
    pool = KeyPool(writer)
    reader = store_db.open_db(settings.db_path)
    pool.apply(store_keys.pool_view(reader))
    refresher = Refresher(pool, lambda seq: store_keys.pool_view(reader, pins_after_seq=seq),
                          settings.pool_refresh)
    state = ProxyState(settings, pool, writer, Upstream(settings, pool), refresher, secret,
                       [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies])
    holder["state"] = state
    _states.append(state)
    writer.start()
    refresher.start()
    app.extensions["proxy"] = state

    app.register_blueprint(ops.bp)
    app.register_blueprint(native.bp)
    _register_error_handlers(app)
    if not settings.user_keys and not pool.users:
        log.warning("no user keys: every request will be refused (set USER_KEYS or run "
                    "`gemini-proxy users add NAME`)")
    return app


def _register_error_handlers(app: Flask) -> None:
    from proxy.routes.native import gemini_error

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            limit = app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
            return gemini_error(413, f"Request body is larger than this proxy accepts "
                                     f"({limit:g} MiB; see MAX_REQUEST_BODY_MB).")
        if code == 404:
            return gemini_error(404, f"No route for {request.method} {request.path}. Native "
                                     "Gemini calls live under /v1beta/ and /v1/.")
        if code == 405:
            return gemini_error(405, f"{request.method} is not allowed on {request.path}.")
        return gemini_error(code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return gemini_error(500, f"The proxy failed to handle this request ({type(exc).__name__}).")
