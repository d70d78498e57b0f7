"""Translate OpenAI Responses API requests and answers to and from Gemini generateContent.

Stateless by design: `previous_response_id` is refused, clients (Codex CLI with
`store = false`) send the whole conversation as input items every time.
"""
from __future__ import annotations

from typing import Any

from .chat import candidate_parts, sampling_config, text_of
from .errors import TranslationError
from .fields import expect_dict, expect_list, expect_str, fail, is_int, is_number
from .generation import google_extras, parse_effort, structured_output, thinking_config
from .history import History
from .media import audio_part, file_part, url_part
from .models import normalise_model
from .response_items import (ResponsesOptions, function_call_item, message_item, outcome,
                             reasoning_item, response_object, is_blocked)
from .signatures import encode_call_id, new_id, signature_of
from .tools import (check_name, check_unique, function_call_json, function_call_part, function_declaration,
                    parse_arguments, tool_choice_config)
from .usage import responses_usage
from .sse import sse_event

__all__ = ["ResponsesOptions", "ResponsesStreamTranslator", "gemini_to_response",
           "responses_request_to_gemini", "sse_event"]

_SUMMARIES = ("auto", "concise", "detailed")


class _Input:
    """Turns Responses input items into History turns."""

    def __init__(self, history: History, fetched: dict[str, tuple[str, bytes]] | None) -> None:
        self.history = history
        self.fetched = fetched
        self.cache: dict[str, dict[str, Any]] = {}

    def media(self, part: dict[str, Any], kind: str, path: str) -> dict[str, Any]:
        if kind == "input_image":
            url = part.get("image_url")
            if url is None and part.get("file_id") is not None:
                raise fail(f"{path}.file_id", "uploaded file ids are not supported; "
                                              "send image_url as a data: URI or http(s) URL")
            if isinstance(url, dict):
                url = url.get("url")
            return url_part(url, f"{path}.image_url", self.fetched, self.cache)
        if kind == "input_file":
            if part.get("file_data") is not None:
                return file_part(part.get("file_data"), part.get("filename"), path)
            if part.get("file_url") is not None:
                return url_part(part.get("file_url"), f"{path}.file_url", self.fetched, self.cache,
                                image=False)
            raise fail(path, "needs file_data or file_url (uploaded file ids are not supported)")
        return audio_part(part.get("input_audio"), f"{path}.input_audio")

    def parts(self, content: Any, path: str) -> list[dict[str, Any]]:
        if content is None:
            return []
        if isinstance(content, str):
            return [{"text": content}] if content else []
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(expect_list(content, path)):
            ppath = f"{path}[{j}]"
            part = expect_dict(part, ppath)
            kind = part.get("type")
            if kind in ("input_text", "output_text", "text"):
                text = expect_str(part.get("text"), f"{ppath}.text")
                if text:
                    parts.append({"text": text})
            elif kind == "refusal":
                text = expect_str(part.get("refusal"), f"{ppath}.refusal")
                if text:
                    parts.append({"text": text})
            elif kind in ("input_image", "input_file", "input_audio"):
                parts.append(self.media(part, kind, ppath))
            else:
                raise fail(f"{ppath}.type", f"unsupported content part type {kind!r}")
        return parts

    def output(self, value: Any, path: str) -> tuple[str, list[dict[str, Any]]]:
        """Split a function_call_output's output into (text, media parts)."""
        if value is None:
            return "", []
        if isinstance(value, str):
            return value, []
        texts, media = [], []
        for j, part in enumerate(expect_list(value, path)):
            ppath = f"{path}[{j}]"
            part = expect_dict(part, ppath)
            kind = part.get("type")
            if kind in ("input_text", "output_text", "text"):
                texts.append(expect_str(part.get("text"), f"{ppath}.text"))
            elif kind in ("input_image", "input_file"):
                media.append(self.media(part, kind, ppath))
            else:
                raise fail(f"{ppath}.type", f"unsupported output part type {kind!r}")
        return "".join(texts), media

    def item(self, item: Any, path: str) -> None:
        item = expect_dict(item, path)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                self.history.add_system(text_of(item.get("content"), f"{path}.content"))
            elif role == "user":
                self.history.add("user", self.parts(item.get("content"), f"{path}.content"))
            elif role == "assistant":
                self.history.add_model_turn(self.parts(item.get("content"), f"{path}.content"), [])
            else:
                raise fail(f"{path}.role", f"unknown role {role!r}")
        elif kind == "function_call":
            call_id = expect_str(item.get("call_id"), f"{path}.call_id", nonempty=True)
            name = check_name(item.get("name"), f"{path}.name")
            args = parse_arguments(item.get("arguments"), f"{path}.arguments")
            part = function_call_part(name, args, signature_of(item, call_id))
            self.history.add_model_turn([part], [(call_id, name)])
        elif kind == "function_call_output":
            call_id = expect_str(item.get("call_id"), f"{path}.call_id", nonempty=True)
            name, order = self.history.call_name(call_id, f"{path}.call_id")
            text, media = self.output(item.get("output"), f"{path}.output")
            self.history.add_result(order, name, text, media)
        elif kind == "item_reference":
            raise fail(path, "item references need stored responses, which this proxy does "
                             "not keep; send the items themselves")
        elif not isinstance(kind, str):
            raise fail(f"{path}.type", "must be a string")
        # reasoning items (and built-in tool calls we never declared) carry nothing Gemini can use


def _typed(value: Any, kind: type) -> Any:
    """Return value if it has the given type, else None (echoed fields must validate)."""
    return value if isinstance(value, kind) else None


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (Gemini declarations, the function tools echoed on the response)."""
    decls: list[dict[str, Any]] = []
    echoed: list[dict[str, Any]] = []
    tools = body.get("tools")
    if tools is None:
        return decls, echoed
    for i, tool in enumerate(expect_list(tools, "tools")):
        tool = expect_dict(tool, f"tools[{i}]")
        if tool.get("type") != "function":
            continue  # web_search, custom, local_shell…: no Gemini function counterpart
        decl = function_declaration(tool.get("name"), tool.get("description"),
                                    tool.get("parameters"), f"tools[{i}]")
        decls.append(decl)
        echoed.append({"type": "function", "name": decl["name"],
                       "description": _typed(tool.get("description"), str),
                       "parameters": _typed(tool.get("parameters"), dict),
                       "strict": _typed(tool.get("strict"), bool)})
    check_unique(decls, "tools")
    return decls, echoed


def responses_request_to_gemini(body: dict[str, Any], *, aliases: dict[str, str] | None = None,
                                fetched_images: dict[str, tuple[str, bytes]] | None = None,
                                ) -> tuple[str, dict[str, Any], ResponsesOptions]:
    """Translate a Responses API request into (model id, generateContent body, options)."""
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object")
    if body.get("previous_response_id") is not None:
        raise TranslationError(
            "previous_response_id: not supported; this proxy stores no responses. Keep the "
            "history client-side (store=false) and send it all in input.",
            param="previous_response_id")
    model = normalise_model(body.get("model"), aliases)
    history = History()
    instructions = body.get("instructions")
    if instructions is not None:
        history.add_system(expect_str(instructions, "instructions"))
    reader = _Input(history, fetched_images)
    items = body.get("input")
    if isinstance(items, str):
        if items:
            history.add("user", [{"text": items}])
    elif isinstance(items, list) and items:
        for i, item in enumerate(items):
            reader.item(item, f"input[{i}]")
    else:
        raise TranslationError("input: required, a string or a non-empty array of items",
                               param="input")
    contents, system = history.finish(model, "input")

    out: dict[str, Any] = {"contents": contents}
    if system is not None:
        out["systemInstruction"] = system
    decls, echoed = _tools(body)
    tool_config, decls = tool_choice_config(body.get("tool_choice"), decls, "tool_choice", flat=True)
    if decls:
        out["tools"] = [{"functionDeclarations": decls}]
        if tool_config is not None:
            out["toolConfig"] = tool_config

    gen = sampling_config(body, model, max_tokens_keys=("max_output_tokens",))
    text = body.get("text")
    fmt = None
    if text is not None:
        text = expect_dict(text, "text")
        fmt = text.get("format")
        if fmt is not None:
            fmt = expect_dict(fmt, "text.format")
            gen.update(structured_output(fmt.get("type"), fmt.get("schema"),
                                         type_path="text.format.type",
                                         schema_path="text.format.schema"))
    reasoning = body.get("reasoning")
    effort = summary = None
    if reasoning is not None:
        reasoning = expect_dict(reasoning, "reasoning")
        effort = parse_effort(reasoning.get("effort"), "reasoning.effort")
        summary = reasoning.get("summary")
        if summary is None:
            summary = reasoning.get("generate_summary")
        if summary is not None and summary not in _SUMMARIES and summary != "none":
            raise fail("reasoning.summary", "must be auto, concise, detailed or none")
    extras = google_extras(body)
    thinking, include_reasoning = thinking_config(model, effort, extras, summary in _SUMMARIES,
                                                  effort_implies_thoughts=False)
    if thinking:
        gen["thinkingConfig"] = thinking
    if gen:
        out["generationConfig"] = gen
    if extras.safety_settings is not None:
        out["safetySettings"] = extras.safety_settings
    if extras.cached_content is not None:
        out["cachedContent"] = extras.cached_content

    options = ResponsesOptions(
        model=model, stream=body.get("stream") is True, include_reasoning=include_reasoning,
        echo=_echo(body, echoed, fmt, effort, summary),
        call_names={k: v[0] for k, v in history.calls.items()})
    return model, out, options


def _echo(body: dict[str, Any], tools: list[dict[str, Any]], fmt: dict[str, Any] | None,
          effort: str | None, summary: Any) -> dict[str, Any]:
    """Collect the request settings a Response object repeats back."""
    echo: dict[str, Any] = {"tools": tools}
    for key in ("temperature", "top_p"):
        if is_number(body.get(key)):
            echo[key] = body[key]
    if is_int(body.get("max_output_tokens")):
        echo["max_output_tokens"] = int(body["max_output_tokens"])
    if isinstance(body.get("instructions"), str):
        echo["instructions"] = body["instructions"]
    if isinstance(body.get("parallel_tool_calls"), bool):
        echo["parallel_tool_calls"] = body["parallel_tool_calls"]
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        echo["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") in ("function", "allowed_tools"):
        echo["tool_choice"] = choice
    if effort is not None or summary in _SUMMARIES:
        echo["reasoning"] = {"effort": effort, "summary": summary if summary in _SUMMARIES else None}
    if fmt is not None:
        kind = fmt.get("type")
        if kind == "json_schema":
            echo["text"] = {"format": {"type": "json_schema",
                                       "name": _typed(fmt.get("name"), str) or "response",
                                       "schema": _typed(fmt.get("schema"), dict) or {},
                                       "strict": _typed(fmt.get("strict"), bool)}}
        elif kind in ("text", "json_object"):
            echo["text"] = {"format": {"type": kind}}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values()):
        echo["metadata"] = metadata
    return echo


def output_items(parts: list[Any], include_reasoning: bool,
                 message_status: str = "completed") -> list[dict[str, Any]]:
    """Group Gemini parts into Responses output items, in the order Gemini gave them."""
    items: list[dict[str, Any]] = []
    run_kind: str | None = None
    run: list[str] = []

    def close() -> None:
        nonlocal run_kind
        if run_kind == "message":
            items.append(message_item(new_id("msg_"), "".join(run), message_status))
        elif run_kind == "reasoning":
            items.append(reasoning_item(new_id("rs_"), "".join(run)))
        run.clear()
        run_kind = None

    for part in parts:
        if not isinstance(part, dict):
            continue
        fc = part.get("functionCall")
        if isinstance(fc, dict):
            if not isinstance(fc.get("name"), str):
                continue
            close()
            signature = part.get("thoughtSignature")
            signature = signature if isinstance(signature, str) and signature else None
            items.append(function_call_item(new_id("fc_"), encode_call_id(signature), fc["name"],
                                            function_call_json(fc.get("args"))))
            continue
        text = part.get("text")
        if not isinstance(text, str) or not text:
            continue
        kind = "reasoning" if part.get("thought") is True else "message"
        if kind == "reasoning" and not include_reasoning:
            continue
        if kind != run_kind:
            close()
            run_kind = kind
        run.append(text)
    close()
    return items


def gemini_to_response(resp: dict[str, Any], *, model: str, response_id: str, created: int,
                       options: ResponsesOptions) -> dict[str, Any]:
    """Translate a generateContent answer into a Responses API `response` object."""
    if not isinstance(resp, dict):
        raise TranslationError("upstream answer is not a JSON object", status=502)
    candidates = resp.get("candidates")
    cand = candidates[0] if isinstance(candidates, list) and candidates else None
    reason = cand.get("finishReason") if isinstance(cand, dict) else None
    status, incomplete = outcome(reason, cand is None and is_blocked(resp))
    include_reasoning = bool(getattr(options, "include_reasoning", False))
    items = output_items(candidate_parts(cand), include_reasoning,
                         "completed" if status == "completed" else "incomplete")
    return response_object(response_id, created, model, options, status=status, output=items,
                           usage=responses_usage(resp.get("usageMetadata")),
                           incomplete=incomplete)


# The stream translator lives in its own module; it is part of this API.
from .responses_stream import ResponsesStreamTranslator  # noqa: E402
