"""Native Gemini REST passthrough: /v1beta/*, native /v1/*, uploads, Google's OpenAI layer."""
from __future__ import annotations

import ipaddress
import json
import math
import re
import time
from typing import Any, Iterator

from flask import Blueprint, Response, current_app, request

from proxy import uploads
from proxy.auth import presented_key
from proxy.exchange import Exchange
from proxy.translate.errors import gemini_error_body
from proxy.translate.tools import loads_strict
from proxy.upstream import (Call, PoolUnavailable, Reply, error_message, filter_request_headers,
                            retry_after)
from proxy.relay import Passthrough, relay_stream
from proxy.usage import usage_from

bp = Blueprint("native", __name__)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_MODEL = re.compile(r"(?:^|/)(?:models|tunedModels)/([^/:?]+)")
_PINNED = re.compile(r"(?:files|cachedContents)/[A-Za-z0-9_.-]+")
# Only these fields name a file or cache; prompt text that mentions "files/x" must not.
_PIN_FIELDS = re.compile(rb'"(?:fileUri|file_uri|cachedContent|cached_content|name)"\s*:\s*"([^"]+)"')
_PIN_WAIT = 1.5  # seconds to wait for another worker's fresh pin to reach this one
_JSON_CHECK_LIMIT = 1 << 16  # larger bodies are left to Google to judge (parsing blocks the hub)


def state() -> Any:
    return current_app.extensions["proxy"]


def gemini_error(status: int, message: str, *, retry_after: float | None = None,
                 framing_array: bool = False) -> Response:
    """Return an error in Google's envelope (array-wrapped for a JSON-array stream)."""
    body: Any = gemini_error_body(status, message)
    if framing_array:
        body = [body]
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    if retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return resp


def model_of(path: str) -> str:
    m = _MODEL.search(path)
    return m.group(1) if m else ""


def public_base_url() -> str:
    """Return the base URL clients reach us at, believing X-Forwarded-* only from trusted peers."""
    st = state()
    proto, host = request.scheme, request.host
    try:
        peer = ipaddress.ip_address(request.remote_addr or "")
        trusted = any(peer in net for net in st.trusted)
    except ValueError:
        trusted = False
    if trusted:
        proto = request.headers.get("X-Forwarded-Proto", proto).split(",")[0].strip()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    return f"{proto}://{host}"


def _client_params() -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.args.items(multi=True)
            if k not in ("key", uploads.TOKEN_PARAM)]


def _find_pin(path: str, body: bytes | None) -> int | None:
    """Return the key that owns a file or cached content the call uses (None: any key)."""
    st = state()
    names = _PINNED.findall(path)
    if body and (b"files/" in body or b"cachedContents/" in body):
        for value in _PIN_FIELDS.findall(body):
            names += _PINNED.findall(value.decode("utf-8", "replace"))
    if not names:
        return None
    deadline = time.monotonic() + _PIN_WAIT
    while True:
        st.pool.sync()
        for name in names:
            if name in st.pool.pins:
                return st.pool.pins[name]
        if time.monotonic() >= deadline:
            return None  # not ours (or very old): any key may try
        st.refresher.poke()
        time.sleep(0.05)


def _bad_json(body: bytes) -> str | None:
    """Say why a small JSON body is unreadable (None when it is fine, or too big to check).

    Larger bodies go to Google unparsed, nested or not: its parser judges them.
    """
    if not body or len(body) > _JSON_CHECK_LIMIT:
        return None
    try:
        loads_strict(body)
    except ValueError as exc:
        return f"Invalid JSON payload received. {exc}"
    return None


def _pin_created(reply: Reply, path: str) -> None:
    """Pin files and cached contents to the key that created them (they live in its project)."""
    if reply.status >= 300 or reply.key is None or not reply.body:
        return
    if not (path.endswith("/cachedContents") or "upload" in path or path.endswith("/files")):
        return
    try:
        data = json.loads(reply.body)
    except ValueError:
        return
    obj = data.get("file") if isinstance(data, dict) and "file" in data else data
    name = obj.get("name") if isinstance(obj, dict) else None
    if isinstance(name, str) and name.startswith(("files/", "cachedContents/")):
        st = state()
        st.pool.pins[name] = reply.key.id
        st.writer.pin(name, reply.key.id)


def relay(ex: Exchange, reply: Reply, *, sse: bool) -> Response:
    """Turn an upstream Reply into the client's response, recording the exchange."""
    if reply.chunks is None:
        tokens = usage_from(reply.body) if reply.status < 300 and reply.body else None
        ex.finish(reply.status, reply, tokens=tokens,
                  error_message=error_message(reply) if reply.status >= 400 else None)
        resp = Response(reply.body, status=reply.status, headers=reply.headers)
        if reply.status == 429 and "Retry-After" not in resp.headers:
            resp.headers["Retry-After"] = str(math.ceil(retry_after(state().pool, ex.model, reply)))
        return resp
    return stream_response(relay_stream(state().pool, ex, reply, Passthrough(sse)),
                           reply.status, reply.headers)


def stream_response(body: Iterator[bytes], status: int, headers: list[tuple[str, str]]) -> Response:
    """Return a streamed response that no proxy in between should buffer."""
    resp = Response(body, status=status,
                    headers=[(k, v) for k, v in headers if k.lower() != "content-length"])
    resp.headers["X-Accel-Buffering"] = "no"
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def passthrough(path: str) -> Response:
    """Authenticate, pick a key, forward `path` upstream and relay the answer."""
    st = state()
    upload_token = request.args.get(uploads.TOKEN_PARAM)
    session = uploads.verify(st.secret, upload_token) if upload_token else None
    if upload_token and session is None:
        return gemini_error(401, "This upload URL was not issued by this proxy (or was altered); "
                                 "start the upload again to get a new one.")
    user = None
    if session is None:
        user = st.pool.authenticate(presented_key(request.headers, request.args))
        if user is None:
            return unauthorized()
    bearer = path.startswith(("/v1beta/openai/", "/v1/openai/"))
    body = request.get_data(cache=False) if request.method in ("POST", "PUT", "PATCH") else None
    model, stream, sse = model_of(path), ":streamGenerateContent" in path, False
    if body and bearer:
        try:
            parsed = json.loads(body)
        except ValueError:
            return gemini_error(400, "Invalid JSON payload received: the body is not JSON.")
        if isinstance(parsed, dict):
            model = str(parsed.get("model") or "").removeprefix("models/")
            stream = bool(parsed.get("stream"))
            sse = stream
    elif body and request.mimetype in ("application/json", "") and not path.startswith("/upload"):
        problem = _bad_json(body)
        if problem:
            return gemini_error(400, problem)
    if stream and not bearer:
        sse = request.args.get("alt") == "sse"
    pinned = _find_pin(path, body) if session is None else session[0]
    log_path = path if not upload_token else path + "?upload_token=…"
    ex = Exchange(st, user=user, dialect="openai" if bearer else "native", method=request.method,
                  path=log_path,
                  model=model, stream=stream)
    refusal = st.pool.admit(user, model) if user is not None else None
    if refusal is not None:
        ex.finish(refusal.status, None, error_class="user_limit", error_message=refusal.message)
        return gemini_error(refusal.status, refusal.message, retry_after=refusal.retry_after)
    with ex:
        call = Call(request.method, path, _client_params(), filter_request_headers(request.headers),
                    body, model=model, stream=stream, pinned=pinned, bearer=bearer,
                    url=session[1] if session else None)
        try:
            reply = st.upstream.open(call)
        except PoolUnavailable as exc:
            ex.finish(exc.status, None, error_class="rejected", error_message=exc.message)
            return gemini_error(exc.status, exc.message, retry_after=exc.retry_after,
                                framing_array=stream and not sse)
        if reply.status < 300 and reply.chunks is None:
            _rewrite_upload_url(reply, path)
            _pin_created(reply, path)
        return relay(ex, reply, sse=sse)


def _rewrite_upload_url(reply: Reply, path: str) -> None:
    """Point the client's next upload step at us, keeping the key that started the session."""
    st = state()
    for i, (name, value) in enumerate(reply.headers):
        if name.lower() == "x-goog-upload-url" and reply.key is not None:
            token = uploads.sign(st.secret, reply.key.id, value)
            upload_path = path.split("?")[0]
            reply.headers[i] = (name, uploads.proxy_upload_url(public_base_url(), upload_path, token))


def unauthorized() -> Response:
    return gemini_error(401, "Missing or unknown proxy key. Pass your user key in the "
                             "x-goog-api-key header, ?key=, or Authorization: Bearer.")


@bp.route("/v1beta/<path:rest>", methods=METHODS)
def v1beta(rest: str) -> Response:
    return passthrough("/v1beta/" + rest)


@bp.route("/v1/<path:rest>", methods=METHODS)
def v1(rest: str) -> Response:
    return passthrough("/v1/" + rest)


@bp.route("/upload/<version>/<path:rest>", methods=METHODS)
def upload(version: str, rest: str) -> Response:
    if version not in ("v1beta", "v1"):
        return gemini_error(404, f"Unknown API version {version!r}.")
    return passthrough(f"/upload/{version}/{rest}")
