"""Forward a native Gemini call as it came: /v1beta/*, native /v1/*, uploads, Google's OpenAI layer.

The native dialect's adapter over proxy.pipeline: it checks the path and the body a native
client sent, then forwards them as they are and relays Google's answer byte for byte.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from flask import Response, request

from proxy import pins, uploads
from proxy.http import public_base_url, request_body, state
from proxy.pipeline import NATIVE, Flight, authenticate, reject
from proxy.pool import User
from proxy.relay import Passthrough
from proxy.tokens import usage_from
from proxy.translate.tools import loads_strict
from proxy.upstream import Call, Reply, filter_request_headers

_MODEL = re.compile(r"(?:^|/)(?:models|tunedModels)/([^/:?]+)")
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


def _client_params() -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.args.items(multi=True)
            if k not in ("key", uploads.TOKEN_PARAM)]


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


def _upload_user(path: str, token: str) -> tuple[User, uploads.Session]:
    """Return the user and session behind an upload step (its token is its credential)."""
    st = state()
    try:
        session = uploads.verify(st.secret, token, path)
    except uploads.TokenError as exc:
        raise reject(NATIVE, 401, str(exc), error_class="unauthorized") from None
    # The session's user stands behind its steps: limits apply, and a disabled or
    # removed user's uploads stop.
    user = st.pool.user(session.user_id)
    if user is None:
        raise reject(NATIVE, 401, "The user key that started this upload has been disabled or "
                                  "removed, so the upload cannot go on; ask the proxy's operator "
                                  "to re-enable it, then start again.", error_class="unauthorized")
    return user, session


def passthrough(path: str) -> Response:
    """Authenticate, pick a key, forward `path` (as Flask decoded it) upstream, relay the answer."""
    problem = path_problem(path)
    if problem:
        raise reject(NATIVE, 400, problem)
    upload_token = request.args.get(uploads.TOKEN_PARAM)
    session = None
    if upload_token:
        user, session = _upload_user(path, upload_token)
    else:
        user = authenticate(NATIVE)
    bearer = path.startswith(("/v1beta/openai/", "/v1/openai/"))
    body = request_body() if request.method in ("POST", "PUT", "PATCH") else None
    model, stream, sse = model_of(path), ":streamGenerateContent" in path, False
    # A key limited to some models has every model its body names checked, so the body
    # must be readable here (an upload's bytes name none).
    restricted = bool(body and user.allowed_models and not path.startswith("/upload/"))
    parsed: Any = None
    if body and (bearer or restricted):
        try:
            parsed = loads_strict(body, object_pairs_hook=_Fields)
        except ValueError as exc:
            raise reject(NATIVE, 400, f"Invalid JSON payload received: {exc}."
                         + ("" if bearer else " This key may use only some models, so its "
                            "request bodies must be JSON the proxy can check."),
                         user=user, model=model) from None
    if bearer and isinstance(parsed, _Fields):
        model = _model_id(str(parsed.last("model") or ""))
        stream = sse = bool(parsed.last("stream"))
    elif body and parsed is None and request.mimetype in ("application/json", "") \
            and not path.startswith("/upload"):
        problem = _bad_json(body)
        if problem:
            raise reject(NATIVE, 400, problem, user=user, model=model)
    if stream and not bearer:
        sse = request.args.get("alt") == "sse"
    upstream_path = quote(path, safe=_PATH_SAFE)
    named = [*_MODEL.findall(path), *(body_models(parsed) if restricted else ())]
    with Flight(NATIVE, user, model=model, stream=stream, named=named, array=stream and not sse,
                path=upstream_path + ("?upload_token=…" if upload_token else "")) as flight:
        pinned = session.key_id if session else pins.owner(flight.state, pins.named(path, body))
        reply = flight.send(Call(request.method, upstream_path, _client_params(),
                                 filter_request_headers(request.headers), body, model=model,
                                 stream=stream, pinned=pinned, bearer=bearer,
                                 url=session.url if session else None))
        if reply.chunks is not None:
            return flight.relay(reply, Passthrough(sse), reply.status, reply.headers)
        if reply.status < 300:
            _rewrite_upload_urls(flight.state, reply, path, user.id)
        pins.remember(flight.state, path, reply.status, reply.key.id if reply.key else None, reply.body)
        return flight.answer(Response(reply.body, status=reply.status, headers=reply.headers),
                             reply, usage_from(reply.body) if reply.body else None)


# Google's answers to an upload start that point at its session; both must lead back here.
_UPLOAD_URL_HEADERS = frozenset({"x-goog-upload-url", "x-goog-upload-control-url"})


def _rewrite_upload_urls(st: Any, reply: Reply, path: str, user_id: int) -> None:
    """Point the client's next upload steps at us, keeping the key and user that started them."""
    if reply.key is None:
        return
    for i, (name, value) in enumerate(reply.headers):
        if name.lower() in _UPLOAD_URL_HEADERS:
            token = uploads.sign(st.secret, key_id=reply.key.id, upstream_url=value,
                                 user_id=user_id, path=path)
            reply.headers[i] = (name, uploads.proxy_upload_url(
                public_base_url(), quote(path, safe=_PATH_SAFE), token))
