"""The OpenAI API: chat completions, embeddings, models, Responses — translated to native Gemini.

Translating here (rather than forwarding to Google's OpenAI layer) lets the pool read
real usageMetadata, classify errors, and keep Gemini 3 thought signatures.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any, Callable, Iterable, Iterator

from flask import Blueprint, Response, request

from proxy import pins
from proxy.auth import has_gemini_key, presented_key
from proxy.outcomes import Kind
from proxy.exchange import Exchange
from proxy.pool import User
from proxy.relay import StreamFailed, relay_stream
from proxy.routes.native import passthrough, state, stream_response
from proxy.translate.chat import chat_request_to_gemini, gemini_to_chat_completion, urls_to_fetch
from proxy.translate.chat_stream import ChatStreamTranslator
from proxy.translate.embeddings import embeddings_request_to_gemini, gemini_to_embeddings, split_batches
from proxy.translate.errors import (TranslationError, gemini_error_to_openai, openai_error_body,
                                    rate_limit_body)
from proxy.translate.models import gemini_model_to_openai, gemini_models_to_openai, normalise_model
from proxy.translate.params import DROPPED_HEADER, TOLERANT_HEADER
from proxy.translate.responses import gemini_to_response, responses_request_to_gemini
from proxy.translate.responses_stream import ResponsesStreamTranslator
from proxy.translate.sse import SSE_DONE, SSEParser, sse, sse_event
from proxy.translate.tools import TOO_DEEP, loads_strict
from proxy.upstream import Call, PoolUnavailable, Reply, error_message, retry_after
from proxy.url_fetch import fetch_urls
from proxy.tokens import usage_from

bp = Blueprint("openai", __name__)
MODELS_TTL = 60.0  # seconds the upstream model list is reused
# What a generateContent answer holds: candidates, or only promptFeedback for a blocked prompt.
ANSWER_MEMBERS = ("candidates", "promptFeedback")


def openai_error(status: int, message: str, type: str | None = None, *, code: str | None = None,
                 param: str | None = None, retry_after: float | None = None) -> Response:
    """Return an error in OpenAI's envelope."""
    kind = type or ("server_error" if status >= 500 else "invalid_request_error")
    return _json(status, openai_error_body(message, kind, code, param), retry_after)


def _json(status: int, body: Any, retry_after: float | None = None) -> Response:
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    if retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return resp


def _authenticate() -> User | Response:
    user = state().pool.authenticate(presented_key(request.headers, request.args))
    if user is None:
        return openai_error(401, "Missing or unknown proxy key. Pass your user key as "
                                 "Authorization: Bearer <key>.", "invalid_request_error",
                            code="invalid_api_key")
    return user


def _body() -> dict[str, Any] | Response:
    raw = request.get_data(cache=False)
    try:
        body = loads_strict(raw) if raw else None
    except ValueError as exc:
        return openai_error(400, f"The request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return openai_error(400, "The request body must be a JSON object.")
    return body


def _rate_limited(message: str, *, spent: bool, retry_after: float | None) -> Response:
    """Answer a 429 in the one shape every OpenAI route uses (see rate_limit_body)."""
    return _json(429, rate_limit_body(message, spent=spent), retry_after)


def _quota_spent(model: str) -> bool:
    """Tell whether every key resting for `model` rests because its day's quota is spent."""
    now = time.time()
    reasons = [reason for (_, m), (until, reason, _) in state().pool.cool.items()
               if m == model and until > now]
    return bool(reasons) and all(r == Kind.RATE_DAY.value for r in reasons)


def _rejected(ex: Exchange, exc: PoolUnavailable) -> Response:
    ex.finish(exc.status, None, error_class="rejected", error_message=exc.message)
    if exc.status == 429:
        return _rate_limited(f"All Google keys are resting ({exc.message}); retry after "
                             f"{math.ceil(exc.retry_after or 1)} s.",
                             spent=_quota_spent(ex.model), retry_after=exc.retry_after)
    return openai_error(503, exc.message, "server_error", code="no_usable_key")


def _upstream_error(ex: Exchange, reply: Reply) -> Response:
    try:
        parsed = loads_strict(reply.body or b"null")
    except ValueError:
        parsed = None
    # The pool's clamped wait, in the message too: RetryInfo itself may be absurd.
    wait = math.ceil(retry_after(state().pool, ex.model, reply)) if reply.status == 429 else None
    status, body = gemini_error_to_openai(reply.status, parsed, retry_after=wait)
    ex.finish(reply.status, reply, error_message=error_message(reply))
    return _json(status, body, wait if status == 429 else None)


def _exchange(user: User, model: str, stream: bool) -> Exchange:
    return Exchange(state(), user=user, dialect="openai", method=request.method,
                    path=request.path, model=model, stream=stream)


def _refused(ex: Exchange, user: User, model: str) -> Response | None:
    """Apply the user key's own limits (allowed models, requests/minute, tokens/day)."""
    refusal = state().pool.admit(user, model)
    if refusal is None:
        return None
    ex.finish(refusal.status, None, error_class="user_limit", error_message=refusal.message)
    if refusal.status == 429:
        return _rate_limited(refusal.message, spent=refusal.spent, retry_after=refusal.retry_after)
    return openai_error(refusal.status, refusal.message, "invalid_request_error",
                        code="model_not_allowed", param="model")


def _generate(model: str, body: dict[str, Any], stream: bool) -> Call:
    method = "streamGenerateContent" if stream else "generateContent"
    # A cached content lives in the project of the key that created it: go out on that key.
    pinned = pins.owner(state(), [body.get("cachedContent") or ""])
    return Call("POST", f"/v1beta/models/{model}:{method}", [("alt", "sse")] if stream else [],
                {"Content-Type": "application/json"}, json.dumps(body).encode(), model=model,
                stream=stream, pinned=pinned, expect_json=None if stream else ANSWER_MEMBERS)


class Translated:
    """Framing for OpenAI streams: parse upstream SSE, emit translated events.

    An upstream error event, or a stream that ends without any answer (garbage, nothing at
    all), raises StreamFailed: the client gets an error event, never an empty success.
    """

    abort_on_break = False  # OpenAI clients get an error event, then a clean end

    def __init__(self, feed: Callable[[dict], Iterable[bytes]], close: Callable[[], Iterable[bytes]],
                 broken: Callable[[str], Iterable[bytes]]) -> None:
        self.parser = SSEParser()
        self._feed, self._close, self._broken = feed, close, broken
        self.answered = False

    def chunk(self, raw: bytes) -> Iterable[bytes]:
        return self._events(self.parser.feed(raw))

    def _events(self, events: list[dict[str, Any]]) -> Iterator[bytes]:
        for event in events:
            if "error" in event and "candidates" not in event:
                err = event["error"] if isinstance(event["error"], dict) else {}
                raise StreamFailed("Google sent an error in the stream: "
                                   + str(err.get("message") or "(no message)")[:300])
            if any(m in event for m in ANSWER_MEMBERS):
                self.answered = True
            yield from self._feed(event)

    def close(self) -> Iterator[bytes]:
        yield from self._events(self.parser.finish())  # a last event with no blank line after
        if not self.answered:
            raise StreamFailed("Google ended the stream without an answer (no candidates)")
        yield from self._close()

    def broken(self, reason: str) -> Iterable[bytes]:
        return self._broken(reason)


def _run(user: User, model: str, gbody: dict[str, Any], stream: bool,
         on_answer: Callable[[dict[str, Any]], dict[str, Any]],
         framing: Callable[[], Translated]) -> Response:
    """Send a translated request and answer in OpenAI's dialect, stream or not."""
    st = state()
    try:
        call = _generate(model, gbody, stream)
    except RecursionError:  # parsed, but one level too deep to serialise again
        return openai_error(400, f"The request body is not valid JSON: {TOO_DEEP}")
    ex = _exchange(user, model, stream)
    refused = _refused(ex, user, model)
    if refused is not None:
        return refused
    with ex:
        try:
            reply = st.upstream.open(call)
        except PoolUnavailable as exc:
            return _rejected(ex, exc)
        if reply.status >= 400:
            return _upstream_error(ex, reply)
        if reply.chunks is not None:
            body = relay_stream(st.pool, ex, reply, framing())
            return stream_response(body, 200, [("Content-Type", "text/event-stream")])
        try:
            answer = on_answer(reply.data)  # parsed and checked by the upstream client
        except (ValueError, TranslationError) as exc:
            ex.finish(502, reply, error_class="upstream_error", error_message=str(exc))
            return openai_error(502, f"The upstream answer could not be translated: {exc}")
        ex.finish(reply.status, reply, tokens=usage_from(reply.body or b""))
        return _json(200, answer)


def _dropped(resp: Response, opts: Any) -> Response:
    """Tell the client what drop_params let go, so nothing is lost unseen."""
    dropped = getattr(opts, "dropped", None)
    if dropped:
        resp.headers[DROPPED_HEADER] = ", ".join(dropped)
    return resp


def _prepare(translate: Callable[..., tuple[str, dict[str, Any], Any]], *, images: bool = False
             ) -> tuple[User, dict[str, Any], str, dict[str, Any], Any] | Response:
    """Authenticate, read the body and translate it; any failure as an OpenAI error."""
    user = _authenticate()
    if isinstance(user, Response):
        return user
    body = _body()
    if isinstance(body, Response):
        return body
    st = state()
    extra: dict[str, Any] = {
        "tolerant": request.headers.get(TOLERANT_HEADER, "").strip().lower() == "true"}
    try:
        if images:  # http(s) image and file URLs are fetched here: translators do no I/O
            urls = urls_to_fetch(body)
            extra["fetched_images"] = fetch_urls(
                urls, allow_private=st.settings.image_fetch_private) if urls else None
        model, gbody, opts = translate(body, aliases=st.settings.model_aliases, **extra)
    except TranslationError as exc:
        status, err = exc.to_openai()
        return _json(status, err)
    except RecursionError:  # a value nested just short of the parser's limit, walked deeper
        return openai_error(400, f"The request body is not valid JSON: {TOO_DEEP}")
    return user, body, model, gbody, opts


@bp.route("/v1/chat/completions", methods=["POST"])
@bp.route("/openai/v1/chat/completions", methods=["POST"])
@bp.route("/openai/chat/completions", methods=["POST"])
def chat_completions() -> Response:
    ready = _prepare(chat_request_to_gemini, images=True)
    if isinstance(ready, Response):
        return ready
    user, body, model, gbody, opts = ready
    cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
    shown = str(body.get("model") or model)

    def framing() -> Translated:
        tr = ChatStreamTranslator(shown, cid, created, opts)
        return Translated(lambda ev: map(sse, tr.feed(ev)),
                          lambda: [*map(sse, tr.finish()), SSE_DONE],
                          lambda reason: [sse(tr.error_chunk(502, reason))])

    return _dropped(_run(user, model, gbody, opts.stream,
                         lambda resp: gemini_to_chat_completion(resp, model=shown, completion_id=cid,
                                                                created=created, options=opts),
                         framing), opts)


@bp.route("/v1/responses", methods=["POST"])
@bp.route("/openai/responses", methods=["POST"])
@bp.route("/openai/v1/responses", methods=["POST"])
def responses() -> Response:
    ready = _prepare(responses_request_to_gemini, images=True)
    if isinstance(ready, Response):
        return ready
    user, body, model, gbody, opts = ready
    rid, created = "resp_" + uuid.uuid4().hex[:24], int(time.time())
    shown = str(body.get("model") or model)

    def framing() -> Translated:
        # feed() and finish() open the response (created, in_progress) on their first call
        tr = ResponsesStreamTranslator(shown, rid, created, opts)
        return Translated(lambda ev: [sse_event(*e) for e in tr.feed(ev)],
                          lambda: [sse_event(*e) for e in tr.finish()],
                          lambda reason: [sse_event(*tr.failed_event(reason))])

    return _dropped(_run(user, model, gbody, opts.stream,
                         lambda resp: gemini_to_response(resp, model=shown, response_id=rid,
                                                         created=created, options=opts),
                         framing), opts)


@bp.route("/v1/embeddings", methods=["POST"])
@bp.route("/openai/v1/embeddings", methods=["POST"])
@bp.route("/openai/embeddings", methods=["POST"])
def embeddings() -> Response:
    ready = _prepare(embeddings_request_to_gemini)
    if isinstance(ready, Response):
        return ready
    user, body, model, gbody, opts = ready
    st = state()
    ex = _exchange(user, model, False)
    refused = _refused(ex, user, model)
    if refused is not None:
        return refused
    vectors: list[dict[str, Any]] = []
    reply = None
    with ex:
        for batch in split_batches(gbody):  # Gemini caps a batch; big inputs take several calls
            call = Call("POST", f"/v1beta/models/{model}:batchEmbedContents", [],
                        {"Content-Type": "application/json"}, json.dumps(batch).encode(),
                        model=model, expect_json=("embeddings",))
            try:
                reply = st.upstream.open(call)
            except PoolUnavailable as exc:
                return _rejected(ex, exc)
            if reply.status >= 400:
                return _upstream_error(ex, reply)
            got = reply.data["embeddings"]
            vectors += got if isinstance(got, list) else []
        try:
            answer = gemini_to_embeddings({"embeddings": vectors}, model=str(body.get("model")),
                                          options=opts)
        except TranslationError as exc:
            ex.finish(502, reply, error_class="upstream_error", error_message=str(exc))
            return openai_error(502, f"The upstream answer could not be translated: {exc}")
        usage = answer.get("usage") or {}
        ex.finish(200, reply, tokens=(int(usage.get("prompt_tokens") or 0), 0))
        return _dropped(_json(200, answer), opts)


@bp.route("/v1/chat/completions", methods=["GET", "PUT", "PATCH", "DELETE"])
@bp.route("/v1/embeddings", methods=["GET", "PUT", "PATCH", "DELETE"])
@bp.route("/v1/responses", methods=["GET", "PUT", "PATCH", "DELETE"])
def wrong_method() -> Response:
    """Refuse other methods here, rather than let the native /v1/ catch-all send them to Google."""
    resp = openai_error(405, f"{request.method} is not allowed on {request.path}; use POST.")
    resp.headers["Allow"] = "POST, OPTIONS"
    return resp


@bp.route("/v1/responses/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/openai/v1/responses/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/openai/responses/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def stored_response(rest: str) -> Response:
    """Answer the routes on stored responses (retrieve, delete, cancel, input_items…).

    Nothing is stored (every response says store: false), so there is nothing to find;
    without this route the native /v1/ passthrough would answer Google's plain-text 404.
    """
    user = _authenticate()
    if isinstance(user, Response):
        return user
    what = rest.split("/", 1)[0][:100]
    return openai_error(404, f"No response {what!r}: this proxy stores no responses (they are "
                             "answered with store: false), so none can be retrieved, deleted, "
                             "cancelled or listed. Keep the conversation client-side and send "
                             "it whole in `input`.", "invalid_request_error", code="not_found")


def _upstream_models(user: User) -> list[dict[str, Any]] | Response:
    """Return Google's model list, reusing it for MODELS_TTL seconds."""
    st = state()
    cached = st.cache.get("models")
    if cached and time.monotonic() - cached[0] < MODELS_TTL:
        return cached[1]
    ex = _exchange(user, "", False)
    try:
        reply = st.upstream.open(Call("GET", "/v1beta/models", [("pageSize", "1000")], {}, None,
                                      expect_json=()))
    except PoolUnavailable as exc:
        return _rejected(ex, exc)
    if reply.status >= 400:
        return _upstream_error(ex, reply)
    ex.finish(reply.status, reply)
    models = reply.data.get("models")
    models = [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []
    st.cache["models"] = (time.monotonic(), models)
    return models


@bp.route("/v1/models", methods=["GET"])
@bp.route("/openai/v1/models", methods=["GET"])
@bp.route("/openai/models", methods=["GET"])
def models() -> Response:
    if has_gemini_key(request.headers, request.args) and request.path.startswith("/v1/"):
        return passthrough("/v1/models")  # a native client (google-genai defaults to /v1)
    user = _authenticate()
    if isinstance(user, Response):
        return user
    found = _upstream_models(user)
    if isinstance(found, Response):
        return found
    return _json(200, gemini_models_to_openai(found, aliases=state().settings.model_aliases))


@bp.route("/v1/models/<path:model_id>", methods=["GET"])
@bp.route("/openai/v1/models/<path:model_id>", methods=["GET"])
@bp.route("/openai/models/<path:model_id>", methods=["GET"])
def model(model_id: str) -> Response:
    if has_gemini_key(request.headers, request.args) and request.path.startswith("/v1/"):
        return passthrough("/v1/models/" + model_id)
    user = _authenticate()
    if isinstance(user, Response):
        return user
    found = _upstream_models(user)
    if isinstance(found, Response):
        return found
    aliases = state().settings.model_aliases
    try:
        wanted = normalise_model(model_id, aliases)
    except TranslationError:
        wanted = ""
    for m in found:
        if str(m.get("name", "")).removeprefix("models/") == wanted:
            entry = gemini_model_to_openai(m)
            if model_id in aliases:
                entry["id"] = model_id
            return _json(200, entry)
    return openai_error(404, f"The model '{model_id}' does not exist.", "invalid_request_error",
                        code="model_not_found", param="model")
