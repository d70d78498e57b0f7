"""Native Gemini REST passthrough: /v1beta/*, native /v1/*, uploads, Google's OpenAI layer."""
from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any, Iterator
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request

from proxy import pins, uploads
from proxy.auth import presented_key
from proxy.exchange import Exchange
from proxy.translate.errors import gemini_error_body
from proxy.translate.tools import loads_strict
from proxy.upstream import (Call, PoolUnavailable, Reply, error_message, filter_request_headers,
                            retry_after)
from proxy.relay import Passthrough, relay_stream
from proxy.tokens import usage_from

bp = Blueprint("native", __name__)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_MODEL = re.compile(r"(?:^|/)(?:models|tunedModels)/([^/:?]+)")
_PINNED = re.compile(r"(?:files|cachedContents)/[A-Za-z0-9_.-]+")
# Only these fields name a file or cache; prompt text that mentions "files/x" must not.
_PIN_FIELDS = re.compile(rb'"(?:fileUri|file_uri|cachedContent|cached_content|name)"\s*:\s*"([^"]+)"')
_PIN_WAIT = pins.PIN_WAIT
# What may stay literal in a forwarded path (RFC 3986 pchar): the rest, "?" and "#"
# among them, is percent-encoded, so a decoded "%3F" cannot start a query upstream.
_PATH_SAFE = "/:@!$&'()*+,;="
# Body fields that choose a model (CachedContent.model, batchEmbedContents requests[].model,
# countTokens generateContentRequest.model, batch.model, tunedModels baseModel, routing's
# modelName, and the OpenAI layer's model), in either JSON spelling.
_MODEL_FIELDS = frozenset({"model", "baseModel", "base_model", "modelName", "model_name"})
# Parts of a request that hold prompts, schemas and function arguments: a "model" key
# inside them chooses nothing. Everything else is searched, so a new field errs towards
# a refusal, never towards a way round the allow-list.
_FREE_FORM = frozenset({"contents", "systemInstruction", "system_instruction", "tools",
                        "responseSchema", "response_schema", "responseJsonSchema",
                        "response_json_schema", "messages"})
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


def path_problem(path: str) -> str | None:
    """Return why a decoded request path must not be forwarded, or None.

    An empty, "." or ".." segment (a doubled slash, or one spelled %2F or %2e) would let
    the path read here name one model while Google, normalising it, serves another.
    """
    for segment in path.split("/")[1:]:
        if segment.split(";")[0] in ("", ".", ".."):
            return (f"The request path {quote(path, safe=_PATH_SAFE)} has an empty, '.' or '..' "
                    "segment; write the resource path out in full, e.g. "
                    "/v1beta/models/gemini-2.5-flash:generateContent.")
    return None


class _Fields(list):
    """A JSON object as its (name, value) pairs: a repeated name is kept, not overwritten."""

    def last(self, name: str) -> Any:
        return next((v for k, v in reversed(self) if k == name), None)


def _model_id(name: str) -> str:
    # Only the prefix goes: whatever follows (a "/..", say) stays, and matches no allow-list.
    return name.removeprefix("models/").removeprefix("tunedModels/")


def body_models(parsed: Any) -> list[str]:
    """Return every model a request body (parsed into _Fields) names outside its free-form parts."""
    found: list[str] = []
    stack = [parsed]
    while stack:
        node = stack.pop()
        if isinstance(node, _Fields):
            for name, value in node:
                if name in _MODEL_FIELDS and isinstance(value, str):
                    found.append(_model_id(value))
                elif name not in _FREE_FORM:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found


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
    """Return the key that owns a file or cached content the call names (None: any key)."""
    names = _PINNED.findall(path)
    if body and (b"files/" in body or b"cachedContents/" in body):
        for value in _PIN_FIELDS.findall(body):
            names += _PINNED.findall(value.decode("utf-8", "replace"))
    return pins.owner(state(), names)


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
        # Commit before the client learns the name: then any worker that meets the name
        # later finds it in its next pool view (creations are rare; uses are many).
        st.writer.flush(timeout=_PIN_WAIT)


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
    """Authenticate, pick a key, forward `path` (as Flask decoded it) upstream, relay the answer."""
    st = state()
    problem = path_problem(path)
    if problem:
        return gemini_error(400, problem)
    upload_token = request.args.get(uploads.TOKEN_PARAM)
    session = None
    if upload_token:
        try:
            session = uploads.verify(st.secret, upload_token, path)
        except uploads.TokenError as exc:
            return gemini_error(401, str(exc))
        # The session's user stands behind its steps: limits apply, and a disabled or
        # removed user's uploads stop.
        user = st.pool.user(session.user_id)
        if user is None:
            return gemini_error(401, "The user key that started this upload has been disabled "
                                     "or removed, so the upload cannot go on; ask the proxy's "
                                     "operator to re-enable it, then start again.")
    else:
        user = st.pool.authenticate(presented_key(request.headers, request.args))
        if user is None:
            return unauthorized()
    bearer = path.startswith(("/v1beta/openai/", "/v1/openai/"))
    body = request.get_data(cache=False) if request.method in ("POST", "PUT", "PATCH") else None
    model, stream, sse = model_of(path), ":streamGenerateContent" in path, False
    # A key limited to some models has every model its body names checked, so the body
    # must be readable here (an upload's bytes name none).
    restricted = bool(body and user.allowed_models and not path.startswith("/upload/"))
    parsed: Any = None
    if body and (bearer or restricted):
        try:
            parsed = loads_strict(body, object_pairs_hook=_Fields)
        except ValueError as exc:
            return gemini_error(400, f"Invalid JSON payload received: {exc}."
                                + ("" if bearer else " This key may use only some models, so "
                                   "its request bodies must be JSON the proxy can check."))
    if bearer and isinstance(parsed, _Fields):
        model = _model_id(str(parsed.last("model") or ""))
        stream = sse = bool(parsed.last("stream"))
    elif body and parsed is None and request.mimetype in ("application/json", "") \
            and not path.startswith("/upload"):
        problem = _bad_json(body)
        if problem:
            return gemini_error(400, problem)
    if stream and not bearer:
        sse = request.args.get("alt") == "sse"
    pinned = _find_pin(path, body) if session is None else session.key_id
    upstream_path = quote(path, safe=_PATH_SAFE)
    ex = Exchange(st, user=user, dialect="openai" if bearer else "native", method=request.method,
                  path=upstream_path + ("?upload_token=…" if upload_token else ""),
                  model=model, stream=stream)
    named = [*_MODEL.findall(path), *(body_models(parsed) if restricted else ())]
    refusal = st.pool.admit(user, model, named)
    if refusal is not None:
        ex.finish(refusal.status, None, error_class="user_limit", error_message=refusal.message)
        return gemini_error(refusal.status, refusal.message, retry_after=refusal.retry_after)
    with ex:
        call = Call(request.method, upstream_path, _client_params(),
                    filter_request_headers(request.headers), body, model=model, stream=stream,
                    pinned=pinned, bearer=bearer, url=session.url if session else None)
        try:
            reply = st.upstream.open(call)
        except PoolUnavailable as exc:
            ex.finish(exc.status, None, error_class="rejected", error_message=exc.message)
            return gemini_error(exc.status, exc.message, retry_after=exc.retry_after,
                                framing_array=stream and not sse)
        if reply.status < 300 and reply.chunks is None:
            _rewrite_upload_urls(reply, path, user.id)
            _pin_created(reply, path)
        return relay(ex, reply, sse=sse)


# Google's answers to an upload start that point at its session; both must lead back here.
_UPLOAD_URL_HEADERS = frozenset({"x-goog-upload-url", "x-goog-upload-control-url"})


def _rewrite_upload_urls(reply: Reply, path: str, user_id: int) -> None:
    """Point the client's next upload steps at us, keeping the key and user that started them."""
    st = state()
    if reply.key is None:
        return
    for i, (name, value) in enumerate(reply.headers):
        if name.lower() in _UPLOAD_URL_HEADERS:
            token = uploads.sign(st.secret, key_id=reply.key.id, upstream_url=value,
                                 user_id=user_id, path=path)
            reply.headers[i] = (name, uploads.proxy_upload_url(
                public_base_url(), quote(path, safe=_PATH_SAFE), token))


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
