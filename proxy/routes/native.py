"""Native Gemini routes: /v1beta/*, native /v1/*, and /upload/* (resumable uploads)."""
from __future__ import annotations

from flask import Blueprint, Response

from proxy.passthrough import passthrough
from proxy.pipeline import NATIVE, reject

bp = Blueprint("native", __name__)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@bp.route("/v1beta/<path:rest>", methods=METHODS)
def v1beta(rest: str) -> Response:
    return passthrough("/v1beta/" + rest)


@bp.route("/v1/<path:rest>", methods=METHODS)
def v1(rest: str) -> Response:
    return passthrough("/v1/" + rest)


@bp.route("/upload/<version>/<path:rest>", methods=METHODS)
def upload(version: str, rest: str) -> Response:
    if version not in ("v1beta", "v1"):
        raise reject(NATIVE, 404, f"Unknown API version {version!r}.", error_class="not_found")
    return passthrough(f"/upload/{version}/{rest}")
