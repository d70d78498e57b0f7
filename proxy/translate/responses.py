"""Translate OpenAI Responses API requests and answers to and from Gemini generateContent.

Stateless by design: `previous_response_id` is refused, clients (Codex CLI with
`store = false`) send the whole conversation as input items every time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .builtins import assemble, builtin_tool
from .chat import candidate_parts, sampling_config, text_of
from .errors import TranslationError
from .fields import expect_dict, expect_list, expect_str, fail, is_int, is_number, opt_int
from .generation import (google_extras, image_detail, media_resolution, parse_effort,
                         service_tier, structured_output, thinking_config)
from .grounding import citations, responses_annotation, search_queries
from .history import History
from .logprobs import logprobs_config, split_by_text, token_logprobs
from .media import audio_part, file_part, inline_part, url_part
from .models import normalise_model
from .outputs import code_item, image_item, image_of
from .params import RESPONSES as RESPONSES_PARAMS
from .params import Strictness, check_params
from .response_items import (ResponsesOptions, call_item, is_blocked, message_item, outcome,
                             reasoning_item, response_object, web_search_item)
from .signatures import encode_call_id, new_id, signature_of
from .sse import sse_event
from .tools import (CUSTOM_INPUT, check_name, check_unique, custom_declaration,
                    function_call_part, function_declaration, parse_arguments, tool_choice_config)
from .usage import responses_usage

__all__ = ["ResponsesOptions", "ResponsesStreamTranslator", "gemini_to_response",
           "responses_request_to_gemini", "sse_event"]

_SUMMARIES = ("auto", "concise", "detailed")


class _Input:
    """Turns Responses input items into History turns."""

    def __init__(self, history: History, fetched: dict[str, tuple[str, bytes]] | None) -> None:
        self.history = history
        self.fetched = fetched
        self.cache: dict[str, dict[str, Any]] = {}
        self.details: list[str | None] = []  # each image's mediaResolution (None: auto)

    def media(self, part: dict[str, Any], kind: str, path: str) -> dict[str, Any]:
        if kind == "input_image":
            self.details.append(image_detail(part, path))
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
        elif kind in ("function_call", "custom_tool_call"):
            call_id = expect_str(item.get("call_id"), f"{path}.call_id", nonempty=True)
            name = check_name(item.get("name"), f"{path}.name")
            if kind == "custom_tool_call":
                args = {CUSTOM_INPUT: expect_str(item.get("input"), f"{path}.input")}
            else:
                args = parse_arguments(item.get("arguments"), f"{path}.arguments")
            part = function_call_part(name, args, signature_of(item, call_id))
            self.history.add_model_turn([part], [(call_id, name)])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = expect_str(item.get("call_id"), f"{path}.call_id", nonempty=True)
            name, order = self.history.call_name(call_id, f"{path}.call_id")
            text, media = self.output(item.get("output"), f"{path}.output")
            self.history.add_result(order, name, text, media)
        elif kind == "code_interpreter_call":
            # Gemini's own code run, coming back: its code and result parts, in the model's turn.
            parts = [{"executableCode": {"language": "PYTHON",
                                         "code": expect_str(item.get("code") or "", f"{path}.code")}}]
            logs = [o.get("logs") for o in item.get("outputs") or []
                    if isinstance(o, dict) and isinstance(o.get("logs"), str)]
            if logs or item.get("status") in ("completed", "failed"):
                outcome = "OUTCOME_FAILED" if item.get("status") == "failed" else "OUTCOME_OK"
                parts.append({"codeExecutionResult": {"outcome": outcome, "output": "".join(logs)}})
            self.history.add_model_turn(parts, [])
        elif kind == "image_generation_call":
            result = item.get("result")
            if isinstance(result, str) and result:  # an image the model made, kept for edits
                fmt = item.get("output_format") if isinstance(item.get("output_format"), str) else "png"
                self.history.add_model_turn([inline_part(f"image/{fmt}", result)], [])
        elif kind == "item_reference":
            raise fail(path, "item references need stored responses, which this proxy does "
                             "not keep; send the items themselves")
        elif not isinstance(kind, str):
            raise fail(f"{path}.type", "must be a string")
        # Reasoning items carry nothing Gemini can use (thought signatures ride in call ids);
        # a web_search_call item holds no results, only that a search happened.


def _typed(value: Any, kind: type) -> Any:
    """Return value if it has the given type, else None (echoed fields must validate)."""
    return value if isinstance(value, kind) else None


@dataclass(slots=True)
class _Tools:
    decls: list[dict[str, Any]] = field(default_factory=list)
    builtins: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    echoed: list[dict[str, Any]] = field(default_factory=list)  # repeated on the Response
    namespaces: dict[str, str] = field(default_factory=dict)   # function name → namespace
    custom: set[str] = field(default_factory=set)  # custom (free-form input) tool names


def _function(tool: dict[str, Any], path: str, found: _Tools, namespace: str | None = None,
              context: str | None = None) -> None:
    description = tool.get("description")
    if context and (description is None or isinstance(description, str)):
        # The namespace's own description stays with each of its functions.
        description = f"{description}\n\n({context})" if description else f"({context})"
    if tool.get("type") == "custom":
        decl = custom_declaration(tool.get("name"), description, tool.get("format"), path)
        found.custom.add(decl["name"])
    else:
        decl = function_declaration(tool.get("name"), description, tool.get("parameters"), path)
    found.decls.append(decl)
    if namespace is not None:
        found.namespaces[decl["name"]] = namespace


def _tools(body: dict[str, Any], strict: Strictness) -> _Tools:
    """Read `tools`: functions, namespaces of functions, and built-in tools."""
    found = _Tools()
    tools = body.get("tools")
    if tools is None:
        return found
    for i, tool in enumerate(expect_list(tools, "tools")):
        path = f"tools[{i}]"
        tool = expect_dict(tool, path)
        kind = tool.get("type")
        if kind == "function":
            _function(tool, path, found)
            found.echoed.append({"type": "function", "name": found.decls[-1]["name"],
                                 "description": _typed(tool.get("description"), str),
                                 "parameters": _typed(tool.get("parameters"), dict),
                                 "strict": _typed(tool.get("strict"), bool)})
        elif kind == "custom":
            _function(tool, path, found)
            found.echoed.append(tool)
        elif kind == "namespace":
            # Codex CLI groups functions this way; Gemini sees them flat, the calls that come
            # back carry the namespace again.
            name = expect_str(tool.get("name"), f"{path}.name", nonempty=True)
            about = tool.get("description")
            context = f"{name}: {about}" if isinstance(about, str) and about else name
            for j, fn in enumerate(expect_list(tool.get("tools"), f"{path}.tools")):
                fn = expect_dict(fn, f"{path}.tools[{j}]")
                if fn.get("type", "function") not in ("function", "custom"):
                    strict.unsupported(f"{path}.tools[{j}].type",
                                       f"{fn.get('type')!r} tools have no Gemini counterpart")
                    continue
                _function(fn, f"{path}.tools[{j}]", found, name, context)
            found.echoed.append(tool)
        else:
            gemini = builtin_tool(tool, path, strict)
            if gemini is not None:
                found.builtins.append((str(kind), gemini))
                found.echoed.append(tool)
    check_unique(found.decls, "tools")
    return found


def _logprobs(body: dict[str, Any]) -> tuple[bool, int]:
    """Return (logprobs wanted, how many alternatives) from top_logprobs and include."""
    top = opt_int(body, "top_logprobs", 0, 20) or 0
    include = body.get("include")
    wanted = False
    if include is not None:
        for i, value in enumerate(expect_list(include, "include")):
            value = expect_str(value, f"include[{i}]")
            wanted = wanted or value == "message.output_text.logprobs"
    return wanted or top > 0, top


def responses_request_to_gemini(body: dict[str, Any], *, aliases: dict[str, str] | None = None,
                                fetched_images: dict[str, tuple[str, bytes]] | None = None,
                                tolerant: bool = False,
                                ) -> tuple[str, dict[str, Any], ResponsesOptions]:
    """Translate a Responses API request into (model id, generateContent body, options)."""
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object")
    strict = Strictness(body, tolerant)
    check_params(body, RESPONSES_PARAMS, strict)
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
    found = _tools(body, strict)
    chosen = tool_choice_config(body.get("tool_choice"), found.decls, "tool_choice", flat=True,
                                strict=strict, builtins=found.builtins)
    tools, tool_config = assemble(model, chosen.decls, chosen.builtins, chosen.config, strict,
                                  "tools")
    if tools:
        out["tools"] = tools
    if tool_config is not None:
        out["toolConfig"] = tool_config

    gen = sampling_config(body, model, max_tokens_keys=("max_output_tokens",))
    want_logprobs, top_logprobs = _logprobs(body)
    gen.update(logprobs_config(top_logprobs, want_logprobs))
    resolution = media_resolution(reader.details)
    if resolution:
        gen["mediaResolution"] = resolution
    tier = service_tier(body.get("service_tier"), strict)
    if tier is not None:
        out["serviceTier"] = tier
    text = body.get("text")
    fmt = None
    if text is not None:
        text = expect_dict(text, "text")
        verbosity = text.get("verbosity")
        if verbosity not in (None, "medium"):
            strict.unsupported("text.verbosity", "Gemini has no verbosity control")
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

    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise fail("parallel_tool_calls", "must be a boolean")
    options = ResponsesOptions(
        model=model, stream=body.get("stream") is True, include_reasoning=include_reasoning,
        echo=_echo(body, found.echoed, fmt, effort, summary),
        call_names={k: v[0] for k, v in history.calls.items()},
        namespaces=found.namespaces, custom_tools=found.custom, single_call=parallel is False, logprobs=want_logprobs,
        top_logprobs=top_logprobs, service_tier=tier, dropped=strict.dropped)
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
    elif isinstance(choice, dict) and choice.get("type") in ("function", "custom", "allowed_tools"):
        echo["tool_choice"] = choice
    if isinstance(body.get("top_logprobs"), int):
        echo["top_logprobs"] = body["top_logprobs"]
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


def output_items(cand: Any, options: Any, message_status: str = "completed") -> list[dict[str, Any]]:
    """Turn a candidate's parts into Responses output items, in the order Gemini gave them.

    Text runs become messages (with their citations and logprobs), thoughts reasoning items,
    function calls function_call items (with their namespace), Gemini's code runs
    code_interpreter_call items, images image_generation_call items; the searches that
    grounded the answer lead as a web_search_call item.
    """
    include_reasoning = bool(getattr(options, "include_reasoning", False))
    single = bool(getattr(options, "single_call", False))
    items: list[dict[str, Any]] = []
    texts: list[tuple[int, str]] = []  # (item index, text) of each message
    run_kind: str | None = None
    run: list[str] = []
    code: dict[str, Any] | None = None  # the last code run, waiting for its result
    calls = 0

    def close() -> None:
        nonlocal run_kind
        if run_kind == "message":
            texts.append((len(items), "".join(run)))
            items.append(message_item(new_id("msg_"), "".join(run), message_status))
        elif run_kind == "reasoning":
            items.append(reasoning_item(new_id("rs_"), "".join(run)))
        run.clear()
        run_kind = None

    for part in candidate_parts(cand):
        if not isinstance(part, dict):
            continue
        fc = part.get("functionCall")
        if isinstance(fc, dict):
            if not isinstance(fc.get("name"), str) or (single and calls):
                continue
            close()
            calls += 1
            signature = part.get("thoughtSignature")
            signature = signature if isinstance(signature, str) and signature else None
            items.append(call_item(fc, encode_call_id(signature), options))
            continue
        if isinstance(part.get("executableCode"), dict):
            close()
            code = code_item(part["executableCode"], None)
            items.append(code)
            continue
        if isinstance(part.get("codeExecutionResult"), dict):
            close()
            if code is not None:
                items[items.index(code)] = code_item({"code": code["code"]},
                                                     part["codeExecutionResult"], code["id"])
            else:
                items.append(code_item(None, part["codeExecutionResult"]))
            code = None
            continue
        image = image_of(part)
        if image is not None:
            close()
            items.append(image_item(*image))
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
    _annotate(items, texts, cand, options)
    queries, urls = search_queries(cand)
    if queries or urls:
        items.insert(0, web_search_item(queries, urls))
    return items


def _annotate(items: list[dict[str, Any]], texts: list[tuple[int, str]], cand: Any,
              options: Any) -> None:
    """Put citations and (when asked for) logprobs on the message items' output_text."""
    entries = None
    if getattr(options, "logprobs", False):
        entries = token_logprobs(cand, getattr(options, "top_logprobs", 0))
    shares = split_by_text(entries, [t for _, t in texts]) if entries else []
    for n, (index, text) in enumerate(texts):
        part = items[index]["content"][0]
        part["annotations"] = [responses_annotation(c) for c in citations(cand, text)]
        if n < len(shares):
            part["logprobs"] = shares[n]


def gemini_to_response(resp: dict[str, Any], *, model: str, response_id: str, created: int,
                       options: ResponsesOptions) -> dict[str, Any]:
    """Translate a generateContent answer into a Responses API `response` object."""
    if not isinstance(resp, dict):
        raise TranslationError("upstream answer is not a JSON object", status=502)
    candidates = resp.get("candidates")
    cand = candidates[0] if isinstance(candidates, list) and candidates else None
    reason = cand.get("finishReason") if isinstance(cand, dict) else None
    status, incomplete = outcome(reason, cand is None and is_blocked(resp))
    items = output_items(cand, options, "completed" if status == "completed" else "incomplete")
    return response_object(response_id, created, model, options, status=status, output=items,
                           usage=responses_usage(resp.get("usageMetadata")),
                           incomplete=incomplete, tier_meta=resp.get("usageMetadata"))


# The stream translator lives in its own module; it is part of this API.
from .responses_stream import ResponsesStreamTranslator  # noqa: E402
