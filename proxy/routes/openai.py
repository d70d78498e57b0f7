"""The OpenAI API: chat completions, embeddings, models, Responses — translated to native Gemini.

Translating here (rather than forwarding to Google's OpenAI layer) lets the pool read
real usageMetadata, classify errors, and keep Gemini 3 thought signatures. A thin adapter
over proxy.pipeline: it translates the request, then says how the answer is framed.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Iterable, Iterator

from flask import Blueprint, Response, request

from proxy import pins
from proxy.auth import has_gemini_key
from proxy.http import json_response, openai_error, request_body, state
from proxy.pipeline import OPENAI, Answered, Flight, authenticate, reject, refuse
from proxy.pool import User
from proxy.relay import StreamFailed
from proxy.passthrough import passthrough
from proxy.tokens import usage_from
from proxy.translate.chat import chat_request_to_gemini, gemini_to_chat_completion, urls_to_fetch
from proxy.translate.chat_stream import ChatStreamTranslator
from proxy.translate.embeddings import embeddings_request_to_gemini, gemini_to_embeddings, split_batches
from proxy.translate.errors import TranslationError
from proxy.translate.models import gemini_model_to_openai, gemini_models_to_openai, normalise_model
from proxy.translate.params import DROPPED_HEADER, TOLERANT_HEADER
from proxy.translate.responses import gemini_to_response, responses_request_to_gemini
from proxy.translate.responses_stream import ResponsesStreamTranslator
from proxy.translate.sse import SSE_DONE, SSEParser, sse, sse_event
from proxy.translate.tools import TOO_DEEP, loads_strict
from proxy.upstream import Call
from proxy.url_fetch import fetch_urls

bp = Blueprint("openai", __name__)
MODELS_TTL = 60.0  # seconds the upstream model list is reused
# What a generateContent answer holds: candidates, or only promptFeedback for a blocked prompt.
ANSWER_MEMBERS = ("candidates", "promptFeedback")


def _body(user: User) -> dict[str, Any]:
    raw = request_body()
    try:
        body = loads_strict(raw) if raw else None
    except ValueError as exc:
        raise reject(OPENAI, 400, f"The request body is not valid JSON: {exc}", user=user) from None
    if not isinstance(body, dict):
        raise reject(OPENAI, 400, "The request body must be a JSON object.", user=user)
    return body


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
    try:
        call = _generate(model, gbody, stream)
    except RecursionError:  # parsed, but one level too deep to serialise again
        raise reject(OPENAI, 400, f"The request body is not valid JSON: {TOO_DEEP}", user=user,
                     model=model) from None
    with Flight(OPENAI, user, model=model, stream=stream) as flight:
        reply = flight.send(call)
        if reply.chunks is not None:
            return flight.relay(reply, framing(), 200, [("Content-Type", "text/event-stream")])
        try:
            answer = on_answer(reply.data)  # parsed and checked by the upstream client
        except (ValueError, TranslationError) as exc:
            raise flight.failed(reply, str(exc)) from None
        return flight.answer(json_response(200, answer), reply, usage_from(reply.body or b""))


def _dropped(resp: Response, opts: Any) -> Response:
    """Tell the client what drop_params let go, so nothing is lost unseen."""
    dropped = getattr(opts, "dropped", None)
    if dropped:
        resp.headers[DROPPED_HEADER] = ", ".join(dropped)
    return resp


def _prepare(translate: Callable[..., tuple[str, dict[str, Any], Any]], *, images: bool = False
             ) -> tuple[User, dict[str, Any], str, dict[str, Any], Any]:
    """Authenticate, read the body and translate it; any failure as an OpenAI error."""
    user = authenticate(OPENAI)
    body = _body(user)
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
        raise Answered(refuse(OPENAI, json_response(status, err), error_class="bad_request",
                              message=str(exc), user=user,
                              model=str(body.get("model") or ""))) from None
    except RecursionError:  # a value nested just short of the parser's limit, walked deeper
        raise reject(OPENAI, 400, f"The request body is not valid JSON: {TOO_DEEP}",
                     user=user) from None
    return user, body, model, gbody, opts


@bp.route("/v1/chat/completions", methods=["POST"])
@bp.route("/openai/v1/chat/completions", methods=["POST"])
@bp.route("/openai/chat/completions", methods=["POST"])
def chat_completions() -> Response:
    user, body, model, gbody, opts = _prepare(chat_request_to_gemini, images=True)
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
    user, body, model, gbody, opts = _prepare(responses_request_to_gemini, images=True)
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
    user, body, model, gbody, opts = _prepare(embeddings_request_to_gemini)
    vectors: list[dict[str, Any]] = []
    reply = None
    with Flight(OPENAI, user, model=model) as flight:
        for batch in split_batches(gbody):  # Gemini caps a batch; big inputs take several calls
            reply = flight.send(Call("POST", f"/v1beta/models/{model}:batchEmbedContents", [],
                                     {"Content-Type": "application/json"},
                                     json.dumps(batch).encode(), model=model,
                                     expect_json=("embeddings",)))
            got = reply.data["embeddings"]
            vectors += got if isinstance(got, list) else []
        try:
            answer = gemini_to_embeddings({"embeddings": vectors}, model=str(body.get("model")),
                                          options=opts)
        except TranslationError as exc:
            raise flight.failed(reply, str(exc)) from None
        usage = answer.get("usage") or {}
        return _dropped(flight.answer(json_response(200, answer), reply,
                                      (int(usage.get("prompt_tokens") or 0), 0)), opts)


@bp.route("/v1/chat/completions", methods=["GET", "PUT", "PATCH", "DELETE"])
@bp.route("/v1/embeddings", methods=["GET", "PUT", "PATCH", "DELETE"])
@bp.route("/v1/responses", methods=["GET", "PUT", "PATCH", "DELETE"])
def wrong_method() -> Response:
    """Refuse other methods here, rather than let the native /v1/ catch-all send them to Google."""
    message = f"{request.method} is not allowed on {request.path}; use POST."
    resp = refuse(OPENAI, openai_error(405, message), error_class="bad_request", message=message)
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
    authenticate(OPENAI)
    what = rest.split("/", 1)[0][:100]
    return openai_error(404, f"No response {what!r}: this proxy stores no responses (they are "
                             "answered with store: false), so none can be retrieved, deleted, "
                             "cancelled or listed. Keep the conversation client-side and send "
                             "it whole in `input`.", "invalid_request_error", code="not_found")


def _upstream_models(user: User) -> list[dict[str, Any]]:
    """Return Google's model list, reusing it for MODELS_TTL seconds."""
    st = state()
    cached = st.cache.get("models")
    if cached and time.monotonic() - cached[0] < MODELS_TTL:
        return cached[1]
    with Flight(OPENAI, user, model="") as flight:
        reply = flight.send(Call("GET", "/v1beta/models", [("pageSize", "1000")], {}, None,
                                 expect_json=()))
        flight.answer(Response(status=200), reply)
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
    found = _upstream_models(authenticate(OPENAI))
    return json_response(200, gemini_models_to_openai(found, aliases=state().settings.model_aliases))


@bp.route("/v1/models/<path:model_id>", methods=["GET"])
@bp.route("/openai/v1/models/<path:model_id>", methods=["GET"])
@bp.route("/openai/models/<path:model_id>", methods=["GET"])
def model(model_id: str) -> Response:
    if has_gemini_key(request.headers, request.args) and request.path.startswith("/v1/"):
        return passthrough("/v1/models/" + model_id)
    found = _upstream_models(authenticate(OPENAI))
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
            return json_response(200, entry)
    return openai_error(404, f"The model '{model_id}' does not exist.", code="model_not_found",
                        param="model")
