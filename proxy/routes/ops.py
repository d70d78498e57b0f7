"""Operational endpoints: /health (alive), /ready (able to serve), /metrics (Prometheus)."""
from __future__ import annotations

import hmac
import ipaddress
import time

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from proxy import __version__
from proxy.exchange import Counters, publish_metrics

bp = Blueprint("ops", __name__)
WRITER_STALL = 10.0  # seconds without a committed batch while work waits: not ready


@bp.get("/health")
def health() -> ResponseReturnValue:
    return jsonify(status="ok", version=__version__)


@bp.get("/ready")
def ready() -> ResponseReturnValue:
    """Ready when not stopping, the writer is committing and a key is usable (else 503 + reason)."""
    st = current_app.extensions["proxy"]
    keys = st.pool.summary()
    writer = st.writer
    problem = None
    if Counters.stopping:  # a load balancer takes this host out before it stops accepting
        problem = "the proxy is stopping"
    elif not writer.alive:
        problem = "the database writer has stopped"
    elif writer.failing:
        problem = writer.problem
    elif writer.depth and time.time() - writer.last_commit > WRITER_STALL:
        problem = f"the database is not writable: {writer.last_error or 'no commit for a while'}"
    elif keys["usable"] == 0:
        problem = "no usable Google key"
    body = {"status": "unavailable" if problem else "ready", "keys": keys,
            "writer_queue": writer.depth, "writer_dropped": writer.dropped}
    if problem:
        body["reason"] = problem
        return jsonify(body), 503
    return jsonify(body)


def _metrics_allowed() -> bool:
    """Loopback callers that did not come through a reverse proxy, or the configured token."""
    token = current_app.extensions["proxy"].settings.metrics_token
    auth = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(auth.encode(), f"Bearer {token}".encode()):
        return True
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False
    forwarded = any(h in request.headers for h in ("X-Forwarded-For", "X-Real-Ip", "Forwarded"))
    return loopback and not forwarded


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    if not _metrics_allowed():
        return jsonify(error="metrics are served to loopback, or with METRICS_TOKEN"), 403
    from proxy import metrics as m

    st = current_app.extensions["proxy"]
    for state, count in st.pool.summary().items():
        m.KEYS.labels(state).set(count)
    m.COOLDOWNS.set(st.pool.cooling_pairs())
    for model, budget in st.pool.budget().items():
        m.QUOTA_LEFT.labels(model).set(budget["left"])
        m.QUOTA_LIMIT.labels(model).set(budget["limit"])
        m.NO_QUOTA.labels(model).set(budget["no_quota"])
    publish_metrics(st)  # this worker's latest; the others publish every Tally.FLUSH_SECONDS
    body, content_type = m.render()
    return Response(body, content_type=content_type)
