"""Google's own OpenAI-compatible layer (`/v1beta/openai/…`), reduced to an echo.

The key arrives as `Authorization: Bearer <google key>`; errors stay Google-shaped and
array-wrapped, as observed on the real layer.
"""
from __future__ import annotations

import base64
import json
import struct
import time
from typing import TYPE_CHECKING, Any

from proxy.fake import answers, catalog
from proxy.fake import google_errors as errors
from proxy.fake.answers import COMPACT, count_tokens, new_id, sample
from proxy.fake.web import Fail, Request, Response, json_response, paced, partial

if TYPE_CHECKING:
    from proxy.fake.app import FakeApp


def _authorize(app: FakeApp, req: Request, *, model_call: bool, model: str = "") -> tuple[str, Any, str]:
    req.wrap_errors = True
    auth = req.header("authorization")
    if auth[:7].lower() == "bearer ":
        req.key = auth[7:].strip() or None
    return app.gate(req, model_call=model_call, model=model, native=False)


def _model_id(body: Any) -> str:
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        raise Fail(errors.bad_request("model is required"))
    return model.split("/", 1)[1] if model.startswith("models/") else model


def _text_of(content: Any) -> str:
    """Flatten OpenAI message content (string or parts) to text for the echo."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                out.append(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                out.append("[image]")
            elif part.get("type") == "input_audio":
                out.append("[audio]")
            else:
                out.append(f"[{part.get('type', 'part')}]")
        return " ".join(out)
    return "" if content is None else json.dumps(content, separators=COMPACT)


def chat(app: FakeApp, req: Request, version: str) -> Response:
    """POST /v1beta/openai/chat/completions: echo the last user message (or call a tool)."""
    body = req.json_body(empty=None)
    model_guess = body.get("model", "") if isinstance(body, dict) else ""
    model_guess = model_guess.split("/", 1)[-1] if isinstance(model_guess, str) else ""
    _, behaviour, mode = _authorize(app, req, model_call=True, model=model_guess)
    model = _model_id(body)
    info = catalog.get(model)
    if info is None or "generateContent" not in info["supportedGenerationMethods"]:
        raise Fail(errors.model_not_found(model, version))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise Fail(errors.bad_request("messages must be a non-empty list of message objects"))
    last = messages[-1]
    users = [m for m in messages if m.get("role") == "user"]
    said = _text_of(users[-1].get("content")) if users else ""
    said = said if len(said) <= answers.ECHO_LIMIT else said[:answers.ECHO_LIMIT] + "…"
    prompt = sum(count_tokens(_text_of(m.get("content"))) for m in messages)
    text: str | None = None
    calls: list[dict[str, Any]] = []
    finish = "stop"
    tools = [t.get("function", {}) for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice", "auto")
    if last.get("role") == "tool":
        text = "Result: " + _text_of(last.get("content"))
    elif tools and choice != "none" and last.get("role") == "user":
        names = [t.get("name", "") for t in tools]
        if isinstance(choice, dict):
            names = [choice.get("function", {}).get("name", names[0])]
        chosen = names[:2] if "PARALLEL" in said and len(names) >= 2 else names[:1]
        by_name = {t.get("name"): t for t in tools}
        for i, name in enumerate(chosen):
            call: dict[str, Any] = {"id": f"call_{new_id(9)}", "type": "function", "function": {
                "name": name, "arguments": json.dumps(sample(by_name.get(name, {}).get(
                    "parameters", {"type": "object", "properties": {}})), separators=COMPACT)}}
            if i == 0 and catalog.needs_thought_signatures(model):
                call["extra_content"] = {"google": {"thought_signature": new_id(48)}}
            calls.append(call)
        finish = "tool_calls"
    else:
        text = "Echo: " + said
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and text and count_tokens(text) > limit:
        text, finish = text[: limit * 4], "length"
    completion = count_tokens(text or "") + sum(count_tokens(c["function"]["arguments"]) for c in calls)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}
    ident, created = f"chatcmpl-{new_id(12)}", int(time.time())
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        result = {"id": ident, "object": "chat.completion", "created": created, "model": model,
                  "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                  "usage": usage}
        if mode == "reset":
            data = json.dumps(result, separators=COMPACT).encode()
            return Response(200, [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data)))], partial(data))
        return json_response(200, result)
    count, delay, reset_after = app.stream_knobs(behaviour, mode)
    deltas: list[dict[str, Any]] = []
    if text is not None:
        slots = max(1, min(count, len(text)))
        bounds = [len(text) * i // slots for i in range(slots + 1)]
        deltas = [{"content": text[a:b]} for a, b in zip(bounds, bounds[1:])] or [{"content": ""}]
    if calls:
        deltas.append({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
    deltas[0] = {"role": "assistant", **deltas[0]}
    events = []
    for i, delta in enumerate(deltas):
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta,
                              "finish_reason": finish if i == len(deltas) - 1 else None}]}
        events.append(chunk)
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({"id": ident, "object": "chat.completion.chunk", "created": created,
                       "model": model, "choices": [], "usage": usage})
    pieces = [b"data: " + json.dumps(e, separators=COMPACT, ensure_ascii=False).encode() + b"\n\n"
              for e in events]
    return Response(200, [("Content-Type", "text/event-stream")],
                    paced(pieces, delay, reset_after, tail=b"data: [DONE]\n\n"))


def embeddings(app: FakeApp, req: Request, version: str) -> Response:
    """POST /v1beta/openai/embeddings: float or base64 vectors, like OpenAI's."""
    body = req.json_body(empty=None)
    model_guess = body.get("model", "") if isinstance(body, dict) else ""
    _authorize(app, req, model_call=True, model=str(model_guess).split("/", 1)[-1])
    model = _model_id(body)
    if not catalog.is_embedding(model):
        raise Fail(errors.model_not_found(model, version, "embedContent"))
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise Fail(errors.bad_request("input must be a string or a non-empty list of strings"))
    dims = body.get("dimensions") or catalog.EMBED_DIMS.get(model, 768)
    data = []
    for index, text in enumerate(inputs):
        vector: Any = answers.embedding(text, int(dims))
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(count_tokens(t) for t in inputs)
    return json_response(200, {"object": "list", "data": data, "model": model,
                               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _model_entry(model: dict[str, Any]) -> dict[str, Any]:
    return {"id": model["name"], "object": "model", "created": 0, "owned_by": "google"}


def list_models(app: FakeApp, req: Request, version: str) -> Response:
    """GET /v1beta/openai/models."""
    _authorize(app, req, model_call=False)
    return json_response(200, {"object": "list", "data": [_model_entry(m) for m in catalog.MODELS]})


def get_model(app: FakeApp, req: Request, version: str, model: str) -> Response:
    """GET /v1beta/openai/models/{m}."""
    _authorize(app, req, model_call=False)
    info = catalog.get(model)
    if info is None:
        raise Fail(errors.model_not_found(model, version))
    return json_response(200, _model_entry(info))
