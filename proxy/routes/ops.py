"""Operational endpoints: /health (alive) and /ready (able to serve)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from proxy import __version__

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health() -> ResponseReturnValue:
    return jsonify(status="ok", version=__version__)


@bp.get("/ready")
def ready() -> ResponseReturnValue:
    st = current_app.extensions["proxy"]
    keys = st.pool.summary()
    if keys["usable"] == 0:
        return jsonify(status="unavailable", reason="no usable Google key", keys=keys), 503
    return jsonify(status="ready", keys=keys, writer_queue=st.writer.depth)
