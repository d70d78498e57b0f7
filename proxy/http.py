"""What every route shares about HTTP: the worker's state, error envelopes, streamed answers."""
from __future__ import annotations

import ipaddress
import json
import math
from typing import Any, Iterable

from flask import Response, current_app, request

from proxy.translate.errors import gemini_error_body, openai_error_body


# Where the serving guard (proxy.serving.guard) leaves its reader of the request body. The
# reader bounds size, completeness and time itself, so the body is read from it directly
# rather than through werkzeug's stream wrappers around it.
GUARDED_BODY = "proxy.guarded_body"


def request_body() -> bytes:
    """Return the whole request body."""
    reader = request.environ.get(GUARDED_BODY)
    return request.get_data(cache=False) if reader is None else reader.read()


def state() -> Any:
    """Return this worker's ProxyState (settings, pool, writer, upstream client)."""
    return current_app.extensions["proxy"]


def json_response(status: int, body: Any, retry_after: float | None = None) -> Response:
    """Return `body` as JSON; a Retry-After in whole seconds (at least 1) when given."""
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    if retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return resp


def gemini_error(status: int, message: str, *, retry_after: float | None = None,
                 framing_array: bool = False) -> Response:
    """Return an error in Google's envelope (array-wrapped for a JSON-array stream)."""
    body: Any = gemini_error_body(status, message)
    return json_response(status, [body] if framing_array else body, retry_after)


def openai_error(status: int, message: str, type: str | None = None, *, code: str | None = None,
                 param: str | None = None, retry_after: float | None = None) -> Response:
    """Return an error in OpenAI's envelope."""
    kind = type or ("server_error" if status >= 500 else "invalid_request_error")
    return json_response(status, openai_error_body(message, kind, code, param), retry_after)


def stream_response(body: Iterable[bytes], status: int, headers: list[tuple[str, str]]) -> Response:
    """Return a streamed response that no proxy in between should buffer."""
    resp = Response(body, status=status,
                    headers=[(k, v) for k, v in headers if k.lower() != "content-length"])
    resp.headers["X-Accel-Buffering"] = "no"
    resp.headers["Cache-Control"] = "no-cache"
    return resp


class TrustedPeers:
    """The reverse proxies whose X-Forwarded-* headers are believed (TRUSTED_PROXIES).

    A worker meets few peer addresses (Traefik's, a few clients'), so each answer is kept:
    parsing an address and testing the networks would otherwise run on every request.
    """

    _REMEMBERED = 4096

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._seen: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        found = self._seen.get(address)
        if found is None:
            try:
                peer = ipaddress.ip_address(address)
            except ValueError:
                found = False
            else:
                found = any(peer in net for net in self.networks)
            if len(self._seen) >= self._REMEMBERED:
                self._seen.clear()
            self._seen[address] = found
        return found


def _trusted_peer() -> bool:
    """Whether the direct peer is a reverse proxy whose X-Forwarded-* headers we believe."""
    return (request.remote_addr or "") in state().trusted


def public_base_url() -> str:
    """Return the base URL clients reach us at, believing X-Forwarded-* only from trusted peers."""
    proto, host = request.scheme, request.host
    if _trusted_peer():
        proto = request.headers.get("X-Forwarded-Proto", proto).split(",")[0].strip()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    return f"{proto}://{host}"


def client_address() -> str:
    """Return the client's address: the reverse proxy's X-Forwarded-For when we trust it."""
    if _trusted_peer():
        forwarded = request.headers.get("X-Forwarded-For", "")
        nearest = forwarded.split(",")[-1].strip()  # the one our proxy added
        if nearest:
            return nearest[:64]
    return request.remote_addr or ""
