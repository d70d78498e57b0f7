"""The fake Gemini API as a plain WSGI application (no framework: it sits on benchmark paths)."""
from __future__ import annotations

import json
import re
import time
from typing import Any, Callable, Iterable, Iterator

from gevent import sleep as gsleep

from proxy.fake import answers, catalog, openai_layer, protojson, resources, validate
from proxy.fake import google_errors as errors
from proxy.fake.state import DEAD_MODES, Behaviour, Config, State
from proxy.fake.web import (JSON_TYPE, Fail, Request, Response, error_response,
                            json_response, page, paced, partial)

Handler = Callable[..., Response]

HANG_SECONDS = 600.0  # `hang=True` holds a request this long, then answers 504
DEFAULT_DAILY_RETRY_S = 20.38  # Google sends a short RetryInfo even for a spent daily quota
DEFAULT_TPM_RETRY_S = 31.5
_MODEL_ACTIONS = ("generateContent", "streamGenerateContent", "countTokens", "embedContent",
                  "batchEmbedContents")


class FakeApp:
    """The WSGI callable: route, record, gate by key behaviour, answer."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.config: Config = state.config

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path.startswith("/_fake/"):
            return control(self, Request(environ))(start_response)
        req = Request(environ)
        req.key = req.header("x-goog-api-key") or req.query.get("key") or None
        if self.config.record:
            self._record(req)
        try:
            return self._route(req)(start_response)
        except Fail as failure:
            return error_response(req, failure.error, failure.headers)(start_response)

    def _record(self, req: Request) -> None:
        key = req.key
        if key is None and "/openai/" in req.path:
            key = _bearer(req)
        self.state.record({"method": req.method, "path": req.path, "query": dict(req.query),
                           "headers": req.headers(), "key": key, "body": req.json,
                           "ts": time.time()})

    def _route(self, req: Request) -> Response:
        for pattern, methods in ROUTES:
            match = pattern.match(req.path)
            if match is None:
                continue
            handler = methods.get(req.method)
            if handler is None:
                raise Fail(errors.method_not_allowed(req.method, req.path, sorted(methods)))
            return handler(self, req, *match.groups())
        raise Fail(errors.not_found_route(req.path))

    # --- behaviour gate -------------------------------------------------------------------

    def gate(self, req: Request, *, model_call: bool, model: str = "", rpc: str = "",
             native: bool = True) -> tuple[str, Behaviour | None, str]:
        """Authenticate and apply the key's behaviour; return (key, behaviour, mode).

        Raises Fail for every misbehaviour; the mode returned is "ok" or "reset" (the
        latter cuts the body short later).
        """
        if native and _bearer(req) is not None:
            # Google takes any Bearer on a native route for an OAuth token, key or not.
            raise Fail(errors.oauth_expected(rpc or "google.ai.generativelanguage.v1beta.GenerativeService"))
        key = req.key
        if not key:
            raise Fail(errors.unregistered_caller())
        mode = self.state.take_mode(key, model_call)
        behaviour = self.state.behaviour(key)
        if model_call:
            latency = self.config.latency_ms
            if behaviour is not None and behaviour.latency_ms is not None:
                latency = behaviour.latency_ms
            if latency > 0:
                gsleep(latency / 1000.0)
        if mode == "hang":
            hang = behaviour.hang if behaviour is not None else True
            gsleep(HANG_SECONDS if hang is True or not hang else float(hang))
            raise Fail(errors.deadline())
        if mode in DEAD_MODES:
            raise Fail(_dead(mode, key))
        retry_override = behaviour.retry_delay_s if behaviour is not None else None
        if model_call and behaviour is not None and (behaviour.rpm is not None or behaviour.rpd is not None):
            over = self.state.admit(key, model, behaviour)
            if over is not None:
                per, limit, wait = over
                if per == "day":  # Google's RetryInfo on a spent day is short all the same
                    wait = DEFAULT_DAILY_RETRY_S
                raise Fail(errors.quota(model, per=per, limit=limit,
                                        retry_s=wait if retry_override is None else retry_override))
        if mode == "daily":
            limit = behaviour.daily_limit if behaviour is not None else 250
            raise Fail(errors.quota(model, per="day", limit=limit,
                                    retry_s=DEFAULT_DAILY_RETRY_S if retry_override is None else retry_override))
        if mode == "tpm":
            raise Fail(errors.quota(model, per="tokens", limit=250_000,
                                    retry_s=DEFAULT_TPM_RETRY_S if retry_override is None else retry_override))
        if mode == "overload":
            raise Fail(errors.overloaded())
        if mode == "error500":
            raise Fail(errors.internal())
        if mode == "deadline":
            raise Fail(errors.deadline())
        return key, behaviour, mode

    def stream_knobs(self, behaviour: Behaviour | None, mode: str) -> tuple[int, float, int | None]:
        """Return (chunks, delay seconds, chunks before a reset or None) for one stream."""
        chunks, delay = self.config.chunks, self.config.chunk_delay_ms
        reset_after = None
        if behaviour is not None:
            if behaviour.chunks is not None:
                chunks = behaviour.chunks
            if behaviour.chunk_delay_ms is not None:
                delay = behaviour.chunk_delay_ms
        if mode == "reset":
            reset_after = behaviour.reset_after_chunks if behaviour is not None else None
            reset_after = 1 if reset_after is None else reset_after
        return max(1, chunks), delay / 1000.0, reset_after

    def check_files(self, key: str, contents: list[dict[str, Any]]) -> None:
        """Refuse fileData that points at a file this key did not upload (403, not a dead key)."""
        for file_id in validate.file_ids(contents):
            if self.state.owned("files", file_id, key) is None:
                raise Fail(errors.file_forbidden(file_id))


def _bearer(req: Request) -> str | None:
    auth = req.header("authorization")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def _dead(mode: str, key: str) -> errors.Error:
    if mode == "invalid":
        return errors.api_key_invalid()
    if mode == "expired":
        return errors.api_key_expired()
    if mode == "denied":
        return errors.service_disabled(key)
    if mode == "suspended":
        return errors.consumer_suspended(key)
    return errors.location_unsupported()


def _rpc(version: str, service: str, method: str) -> str:
    return f"google.ai.generativelanguage.{version}.{service}.{method}"


# --- models -------------------------------------------------------------------------------

def list_models(app: FakeApp, req: Request, version: str) -> Response:
    """GET /v1beta/models: Google's catalog, paged."""
    app.gate(req, model_call=False, rpc=_rpc(version, "ModelService", "ListModels"))
    models, token = page(catalog.MODELS, req, 50, 1000)
    body: dict[str, Any] = {"models": models}
    if token:
        body["nextPageToken"] = token
    return json_response(200, body)


def get_model(app: FakeApp, req: Request, version: str, model: str) -> Response:
    """GET /v1beta/models/{m}."""
    app.gate(req, model_call=False, rpc=_rpc(version, "ModelService", "GetModel"))
    info = catalog.get(model)
    if info is None:
        raise Fail(errors.model_not_found(model, version))
    return json_response(200, info)


def model_action(app: FakeApp, req: Request, version: str, model: str, action: str) -> Response:
    """POST /v1beta/models/{m}:{action}: generate, stream, count and embed."""
    if action not in _MODEL_ACTIONS:
        raise Fail(errors.not_found_route(req.path))
    stream = action == "streamGenerateContent"
    sse = stream and req.query.get("alt") == "sse"
    req.wrap_errors = stream and not sse
    rpc_name = action[0].upper() + action[1:]
    key, behaviour, mode = app.gate(req, model_call=True, model=model,
                                    rpc=_rpc(version, "GenerativeService", rpc_name))
    info = catalog.get(model)
    methods = info["supportedGenerationMethods"] if info else []
    if action in ("embedContent", "batchEmbedContents"):
        if info is None:
            raise Fail(errors.model_not_found(model, version, action))
        if "embedContent" not in methods:
            raise Fail(errors.bad_request(f"models/{model} is not supported for {action}. Call "
                                          "ListModels to see the list of available models and "
                                          "their supported methods."))
        return _embed(app, req, version, model, action == "batchEmbedContents")
    wanted = "countTokens" if action == "countTokens" else "generateContent"
    if wanted not in methods:
        raise Fail(errors.model_not_found(model, version, wanted))
    body = req.json_body(empty={})
    if action == "countTokens":
        return _count_tokens(app, key, body, version, model)
    parsed, violations = protojson.parse("GenerateContentRequest", body, version)
    if violations:
        raise Fail(errors.field_violations(violations))
    failed = validate.check_generate(parsed, model)
    if failed:
        raise Fail(failed)
    cached = _cache_for(app, key, parsed["cachedContent"], model) if parsed.get("cachedContent") else None
    app.check_files(key, parsed["contents"])
    prompt = answers.prompt_tokens(parsed) + (answers.prompt_tokens(cached) if cached else 0)
    if info and prompt > info["inputTokenLimit"]:
        raise Fail(errors.context_too_long(prompt, info["inputTokenLimit"]))
    answer = answers.generate(parsed, model, cached=cached)
    if behaviour is not None and behaviour.tpm is not None:
        wait = app.state.admit_tokens(key, model, behaviour.tpm, answer.prompt_tokens)
        if wait is not None:
            retry = wait if behaviour.retry_delay_s is None else behaviour.retry_delay_s
            raise Fail(errors.quota(model, per="tokens", limit=behaviour.tpm, retry_s=retry))
    if not stream:
        if mode == "reset":
            data = json.dumps(answer.body(), separators=(",", ":")).encode()
            return Response(200, [("Content-Type", JSON_TYPE), ("Content-Length", str(len(data)))],
                            partial(data))
        return json_response(200, answer.body())
    chunks, delay, reset_after = app.stream_knobs(behaviour, mode)
    pieces = answer.chunks(chunks)
    size = behaviour.piece_bytes if behaviour is not None else None
    if behaviour is not None and behaviour.stream_error:
        # How Google frames an error mid-stream is unverified: here the error envelope
        # is one more element after the first chunk, and the stream ends there.
        pieces = [pieces[0], _failure(behaviour.stream_error, key)[1]]
    if sse:
        crlf = behaviour is not None and behaviour.sse_crlf
        return Response(200, [("Content-Type", "text/event-stream"),
                              ("Content-Disposition", "attachment"),
                              ("X-Content-Type-Options", "nosniff")],
                        _sse(pieces, delay, reset_after, crlf, size))
    return Response(200, [("Content-Type", JSON_TYPE), ("X-Content-Type-Options", "nosniff")],
                    _json_array(pieces, delay, reset_after, size))


def _failure(mode: str, key: str) -> errors.Error:
    """Return the error a failing `mode` answers with (dead keys, overload, 500, 504)."""
    if mode in DEAD_MODES:
        return _dead(mode, key)
    return {"overload": errors.overloaded, "error500": errors.internal,
            "deadline": errors.deadline}[mode]()


def _sse(chunks: list[dict[str, Any]], delay: float, reset_after: int | None,
         crlf: bool, piece_bytes: int | None = None) -> Iterator[bytes]:
    """Frame chunks as `data: {json}` events (no `event:`, no [DONE], like Google)."""
    end = b"\r\n\r\n" if crlf else b"\n\n"
    pieces = [b"data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode() + end
              for c in chunks]
    return paced(pieces, delay, reset_after, piece_bytes=piece_bytes)


def _json_array(chunks: list[dict[str, Any]], delay: float, reset_after: int | None,
                piece_bytes: int | None = None) -> Iterator[bytes]:
    """Frame chunks as one pretty JSON array sent piecewise (`[{…}\n,\r\n{…}\n]`)."""
    pieces = [(b"[" if i == 0 else b"\n,\r\n") + json.dumps(c, indent=2, ensure_ascii=False).encode()
              for i, c in enumerate(chunks)]
    return paced(pieces, delay, reset_after, tail=b"\n]", piece_bytes=piece_bytes)


def _cache_for(app: FakeApp, key: str, name: str, model: str) -> dict[str, Any]:
    """Return the cached request parts a generate call names, if this key owns them."""
    cache_id = name.split("/", 1)[1] if name.startswith("cachedContents/") else name
    item = app.state.owned("caches", cache_id, key)
    if item is None:
        raise Fail(errors.cache_forbidden(cache_id))
    if item["resource"]["model"] != f"models/{model}":
        raise Fail(errors.bad_request(f"Model used by GenerateContent request (models/{model}) "
                                      f"and CachedContent ({item['resource']['model']}) has to be "
                                      "the same."))
    return item["content"]


def _count_tokens(app: FakeApp, key: str, body: Any, version: str, model: str) -> Response:
    parsed, violations = protojson.parse("CountTokensRequest", body, version)
    if violations:
        raise Fail(errors.field_violations(violations))
    if "contents" in parsed and "generateContentRequest" in parsed:
        raise Fail(errors.request_checks("CountTokensRequest", [
            ("", "contents and generate_content_request cannot both be set.")]))
    if "generateContentRequest" in parsed:
        inner = parsed["generateContentRequest"]
        failed = validate.check_generate(inner, model)
        if failed:
            raise Fail(failed)
        app.check_files(key, inner["contents"])
        total = answers.prompt_tokens(inner)
        if inner.get("cachedContent"):
            total += answers.prompt_tokens(_cache_for(app, key, inner["cachedContent"], model))
    else:
        problems: list[tuple[str, str]] = []
        failed = validate.check_contents(parsed.get("contents", []), "contents", problems)
        if failed:
            raise Fail(failed)
        if problems:
            raise Fail(errors.request_checks("CountTokensRequest", problems))
        app.check_files(key, parsed.get("contents", []))
        total = answers.contents_tokens(parsed.get("contents", []))
    result: dict[str, Any] = {"totalTokens": total}
    if total:
        result["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": total}]
    return json_response(200, result)


def _embed(app: FakeApp, req: Request, version: str, model: str, batch: bool) -> Response:
    body = req.json_body(empty={})
    default_dims = catalog.EMBED_DIMS.get(model, 768)
    if not batch:
        parsed, violations = protojson.parse("EmbedContentRequest", body, version)
        if violations:
            raise Fail(errors.field_violations(violations))
        values = _embed_one(parsed, "EmbedContentRequest", "", model, default_dims)
        return json_response(200, {"embedding": {"values": values}})
    parsed, violations = protojson.parse("BatchEmbedContentsRequest", body, version)
    if violations:
        raise Fail(errors.field_violations(violations))
    requests_ = parsed.get("requests", [])
    if not requests_:
        raise Fail(errors.request_checks("BatchEmbedContentsRequest",
                                         [("requests", "requests is not specified")]))
    if len(requests_) > 100:
        raise Fail(errors.request_checks("BatchEmbedContentsRequest", [
            ("requests", "at most 100 requests can be in one batch")]))
    out = []
    for i, one in enumerate(requests_):
        if one.get("model", f"models/{model}") != f"models/{model}":
            raise Fail(errors.request_checks("BatchEmbedContentsRequest", [
                (f"requests[{i}].model", f"the model of every request must be the batch's "
                                         f"model (models/{model}), got {one.get('model')}.")]))
        out.append({"values": _embed_one(one, "BatchEmbedContentsRequest", f"requests[{i}].",
                                         model, default_dims)})
    return json_response(200, {"embeddings": out})


def _embed_one(one: dict[str, Any], request_type: str, prefix: str, model: str,
               default_dims: int) -> list[float]:
    content = one.get("content")
    if not content or not content.get("parts"):
        raise Fail(errors.request_checks(request_type, [(f"{prefix}content", "content is not specified")]))
    dims = one.get("outputDimensionality") or default_dims
    if not 1 <= dims <= default_dims:
        raise Fail(errors.request_checks(request_type, [
            (f"{prefix}output_dimensionality", f"must be in the range [1, {default_dims}] for {model}.")]))
    return answers.embedding(answers.content_text(content), dims)


# --- control (drive a fake in another process over HTTP) ----------------------------------

def control(app: FakeApp, req: Request) -> Response:
    """Serve /_fake/keys, /_fake/reset, /_fake/requests and /_fake/config."""
    action = req.path[len("/_fake/"):].strip("/")
    state = app.state
    try:
        if action == "keys" and req.method == "POST":
            body = req.json_body(empty={})
            if not isinstance(body, dict):
                raise ValueError("body must map keys to behaviours")
            built = {key: Behaviour.from_dict(opts or {}) for key, opts in body.items()}
            for key, behaviour in built.items():
                state.set_key(key, behaviour)
            return json_response(200, {"ok": True, "keys": sorted(built)})
        if action == "reset" and req.method == "POST":
            state.reset()
            return json_response(200, {"ok": True})
        if action == "requests" and req.method == "GET":
            return json_response(200, state.recorded_requests())
        if action == "config" and req.method in ("GET", "POST"):
            if req.method == "POST":
                apply_config(state, req.json_body(empty={}) or {})
            return json_response(200, config_dict(app.config))
    except (ValueError, TypeError) as exc:
        return json_response(400, {"error": str(exc)})
    except Fail as failure:
        return error_response(None, failure.error)
    return json_response(404, {"error": f"unknown control route {req.method} {req.path}"})


_CONFIG_FIELDS = {"latency_ms": float, "chunk_delay_ms": float, "chunks": int,
                  "strict_keys": bool, "record": bool, "max_recorded": int}


def apply_config(state: State, values: dict[str, Any]) -> None:
    """Update global knobs from a mapping, refusing unknown names."""
    unknown = set(values) - set(_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown config option(s) {sorted(unknown)}; expected {sorted(_CONFIG_FIELDS)}")
    for name, value in values.items():
        if name == "max_recorded":
            state.resize_log(int(value))
        else:
            setattr(state.config, name, _CONFIG_FIELDS[name](value))


def config_dict(config: Config) -> dict[str, Any]:
    """Return the global knobs as JSON-ready data."""
    return {name: getattr(config, name) for name in _CONFIG_FIELDS}


ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"^/(v1beta|v1)/models/([A-Za-z0-9._-]+):([A-Za-z]+)$"), {"POST": model_action}),
    (re.compile(r"^/(v1beta|v1)/models$"), {"GET": list_models}),
    (re.compile(r"^/(v1beta|v1)/models/([A-Za-z0-9._-]+)$"), {"GET": get_model}),
    (re.compile(r"^/upload/(v1beta|v1)/files$"), {"POST": resources.upload}),
    (re.compile(r"^/(v1beta|v1)/files$"), {"GET": resources.list_files}),
    (re.compile(r"^/(v1beta|v1)/files/([A-Za-z0-9_-]+)$"),
     {"GET": resources.get_file, "DELETE": resources.delete_file}),
    (re.compile(r"^/(v1beta|v1)/cachedContents$"),
     {"GET": resources.list_caches, "POST": resources.create_cache}),
    (re.compile(r"^/(v1beta|v1)/cachedContents/([A-Za-z0-9_-]+)$"),
     {"GET": resources.get_cache, "PATCH": resources.update_cache,
      "DELETE": resources.delete_cache}),
    (re.compile(r"^/(v1beta|v1)/openai/chat/completions$"), {"POST": openai_layer.chat}),
    (re.compile(r"^/(v1beta|v1)/openai/embeddings$"), {"POST": openai_layer.embeddings}),
    (re.compile(r"^/(v1beta|v1)/openai/models$"), {"GET": openai_layer.list_models}),
    (re.compile(r"^/(v1beta|v1)/openai/models/(?:models/)?([A-Za-z0-9._-]+)$"),
     {"GET": openai_layer.get_model}),
]
