"""create_app(): the Flask application and the per-process state behind it."""
from __future__ import annotations

import atexit
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from proxy import __version__, realthread
from proxy.bootstrap import prepare_database
from proxy.exchange import Counters, publish_metrics
from proxy.http import TrustedPeers
from proxy.pool import KeyPool, Refresher
from proxy.prices import Prices
from proxy.settings import Settings, load_settings
from proxy.serving.guard import ServingGuard
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
    trusted: TrustedPeers = field(default_factory=lambda: TrustedPeers(()))
    started_at: float = field(default_factory=time.time)
    closed: bool = False
    cache: dict[str, Any] = field(default_factory=dict)  # small per-worker caches (model list)
    prices: Prices = field(default_factory=Prices)
    metrics_on: bool = True

    def heartbeat(self) -> dict[str, Any]:
        # The writer stamps the host (settings.host_name, else the hostname) itself.
        return {"pid": os.getpid(), "started_at": self.started_at,
                "last_seen": time.time(), "version": __version__, "inflight": Counters.inflight,
                "served": Counters.served, "state": "stopping" if Counters.stopping else "up"}

    def close(self) -> None:
        """Stop background work and flush every queued write (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.refresher.stop()
        if self.metrics_on:
            publish_metrics(self)  # the last counts of a stopping worker
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
    from proxy.routes import native, openai, ops
    from proxy.store import db as store_db
    from proxy.store.retention import Retention, prune_once
    from proxy.store.poolfeed import PoolFeed
    from proxy.store.writer import Writer

    settings = settings or load_settings()
    configure_logging(settings.log_level)
    secret = prepare_database(settings)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if test_config:
        app.config.update(test_config)

    holder: dict[str, ProxyState] = {}
    policy = Retention(requests_days=settings.retention_days,
                       events_days=settings.retention_days,
                       stats_days=settings.stats_retention_days)
    writer = Writer(settings.db_path, interval=settings.writer_interval,
                    heartbeat=lambda: holder["state"].heartbeat(),
                    housekeeping=lambda db: prune_once(db, time.time(), policy),
                    host=settings.host_name)
    pool = KeyPool(writer)
    # The first read is the whole view; the refresher's later reads are only what changed.
    feed = PoolFeed(store_db.open_db(settings.db_path), pool.worker)
    pool.apply(feed.read())
    refresher = Refresher(pool, feed.read, settings.pool_refresh)
    state = ProxyState(settings, pool, writer, Upstream(settings, pool), refresher, secret,
                       TrustedPeers(settings.trusted_proxies),
                       prices=Prices.load(settings.prices_file, quiet=True))
    holder["state"] = state
    _states.append(state)
    writer.start()
    refresher.start()
    _publish_metrics_on_the_hub(state)
    app.extensions["proxy"] = state

    app.url_map.merge_slashes = False  # "//" reaches the routes (and a clear 400), not a 308 page
    app.register_blueprint(ops.bp)
    app.register_blueprint(openai.bp)
    app.register_blueprint(native.bp)
    _register_error_handlers(app)
    if settings.cors_origins:
        _enable_cors(app, settings.cors_origins)
    app.wsgi_app = ServingGuard(app.wsgi_app, settings)  # type: ignore[method-assign]
    return app


def _publish_metrics_on_the_hub(state: ProxyState) -> None:
    """Under gevent, publish the requests' metrics every Tally.FLUSH_SECONDS from a greenlet.

    The hub is where requests count them, so counting needs no lock; a scrape answered by
    another worker sees this one's counts at most that late.
    """
    if realthread.hub_loop() is None:
        return  # one plain process (tests, tools): every request is published at once
    import gevent

    from proxy import metrics

    metrics.TALLY.immediate = False

    def publish() -> None:
        while not state.closed:
            gevent.sleep(metrics.Tally.FLUSH_SECONDS)
            if state.metrics_on and not state.closed:
                try:
                    publish_metrics(state)
                except Exception:  # a full disk under the metrics folder must not stop serving
                    log.exception("publishing metrics failed")

    gevent.spawn(publish)


CORS_EXPOSE = ("Retry-After, X-Goog-Upload-URL, X-Goog-Upload-Control-URL, X-Goog-Upload-Status, "
               "X-Request-Id, X-Proxy-Dropped-Params")


def _enable_cors(app: Flask, origins: list[str]) -> None:
    """Answer browsers from the configured origins (preflight included)."""
    allowed = set(origins)

    @app.after_request
    def cors(resp: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and ("*" in allowed or origin in allowed):
            resp.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
            resp.headers["Vary"] = "Origin"
            resp.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
            if request.method == "OPTIONS":
                resp.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
                resp.headers["Access-Control-Allow-Headers"] = request.headers.get(
                    "Access-Control-Request-Headers", "Authorization, Content-Type, X-Goog-Api-Key")
                resp.headers["Access-Control-Max-Age"] = "600"
        return resp


def _register_error_handlers(app: Flask) -> None:
    from proxy.pipeline import Answered, dialect_for, refuse

    def dialect_error(code: int, message: str, error_class: str) -> Response:
        """Answer in the dialect the path speaks, and record the refusal (once per request)."""
        dialect = dialect_for(request.path)
        return refuse(dialect, dialect.error(code, message), error_class=error_class,
                      message=message)

    @app.errorhandler(Answered)
    def answered(exc: Answered) -> Response:
        return exc.response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            limit = app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
            return dialect_error(413, f"Request body is larger than this proxy accepts "
                                      f"({limit:g} MiB; see MAX_REQUEST_BODY_MB).", "bad_request")
        if code == 404:
            return dialect_error(404, f"No route for {request.method} {request.path}. Native "
                                      "Gemini calls live under /v1beta/ and /v1/, OpenAI ones "
                                      "under /v1/ and /openai/v1/.", "not_found")
        if code == 405:
            return dialect_error(405, f"{request.method} is not allowed on {request.path}.",
                                 "bad_request")
        resp = dialect_error(code, exc.description or exc.name,
                             "bad_request" if code < 500 else "rejected")
        retry = getattr(exc, "retry_after", None)  # set on the 503 for a full body budget
        if isinstance(retry, int):
            resp.headers["Retry-After"] = str(retry)
        return resp

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return dialect_error(500, f"The proxy failed to handle this request ({type(exc).__name__}); "
                                  "the traceback is in the proxy's log. Retrying may work; if it "
                                  "keeps failing, report it with that log line.", "proxy_error")
