"""Translate OpenAI Chat Completions requests and answers to and from Gemini generateContent."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .audio import is_audio, message_audio, modalities
from .builtins import SEARCH, assemble, search_options
from .errors import TranslationError
from .fields import (expect_dict, expect_list, expect_str, fail, is_int, opt_int,
                     opt_number)
from .finish import block_reason, chat_finish_reason
from .generation import (answered_tier, google_extras, image_detail, media_resolution,
                         parse_effort, service_tier, stop_sequences, structured_output,
                         thinking_config)
from .grounding import chat_annotation, citations
from .history import History
from .logprobs import logprobs_config, token_logprobs
from .media import audio_part, file_part, is_http_url, url_part
from .models import normalise_model
from .outputs import chat_image, code_text, image_of, is_code
from .params import CHAT as CHAT_PARAMS
from .params import Strictness, check_params
from .signatures import encode_call_id, extra_content, requires_signatures, signature_of
from .tools import (check_name, check_unique, function_call_json, function_call_part,
                    function_declaration, parse_arguments, tool_choice_config)
from .usage import chat_usage

_LEGACY_ORDER = (1 << 30, 0)  # results of legacy `function` messages sort last
INT32_MAX = 2**31 - 1  # Gemini's integer fields are int32


@dataclass(slots=True)
class ChatOptions:
    """What the answer translation needs to know about the request."""

    model: str                       # Gemini model id the request goes to
    stream: bool = False
    include_usage: bool = False      # stream_options.include_usage
    include_reasoning: bool = False  # emit thought summaries as reasoning_content
    n: int = 1
    tool_call_names: dict[str, str] = field(default_factory=dict)  # history call id → name
    single_call: bool = False        # parallel_tool_calls: false → one function call per answer
    logprobs: bool = False           # logprobs: true → choices[].logprobs
    top_logprobs: int = 0
    service_tier: str | None = None  # the Gemini tier asked for (None: Google's default)
    audio_format: str | None = None  # modalities audio: wav or pcm16
    dropped: list[str] = field(default_factory=list)  # what drop_params let go


# -- request -----------------------------------------------------------------------------

def text_of(content: Any, path: str) -> str:
    """Return the text of a content that may only hold text (system, tool, assistant)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(expect_list(content, path)):
        if isinstance(part, str):
            texts.append(part)
            continue
        part = expect_dict(part, f"{path}[{j}]")
        kind = part.get("type", "text")
        key = "refusal" if kind == "refusal" else "text"
        if kind not in ("text", "refusal", "input_text", "output_text"):
            raise fail(f"{path}[{j}].type", f"{kind!r} is not allowed here; only text parts are")
        texts.append(expect_str(part.get(key), f"{path}[{j}].{key}"))
    return "".join(texts)


class _Parts:
    """Builds Gemini parts from OpenAI user content, sharing fetched-image encodings."""

    def __init__(self, fetched: dict[str, tuple[str, bytes]] | None) -> None:
        self.fetched = fetched
        self.cache: dict[str, dict[str, Any]] = {}
        self.details: list[str | None] = []  # each image's mediaResolution (None: auto)

    def image(self, spec: Any, path: str) -> dict[str, Any]:
        self.details.append(image_detail(spec, path))
        if isinstance(spec, dict):
            return url_part(spec.get("url"), f"{path}.url", self.fetched, self.cache)
        return url_part(spec, path, self.fetched, self.cache)

    def user(self, content: Any, path: str) -> list[dict[str, Any]]:
        if content is None:
            return []
        if isinstance(content, str):
            return [{"text": content}] if content else []
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(expect_list(content, path)):
            ppath = f"{path}[{j}]"
            if isinstance(part, str):
                if part:
                    parts.append({"text": part})
                continue
            part = expect_dict(part, ppath)
            kind = part.get("type")
            if kind == "text":
                text = expect_str(part.get("text"), f"{ppath}.text")
                if text:
                    parts.append({"text": text})
            elif kind == "image_url":
                parts.append(self.image(part.get("image_url"), f"{ppath}.image_url"))
            elif kind == "input_audio":
                parts.append(audio_part(part.get("input_audio"), f"{ppath}.input_audio"))
            elif kind == "file":
                spec = expect_dict(part.get("file"), f"{ppath}.file")
                if spec.get("file_data") is None and spec.get("file_id") is not None:
                    raise fail(f"{ppath}.file.file_id", "uploaded file ids are not supported; "
                                                        "send the contents as file_data")
                parts.append(file_part(spec.get("file_data"), spec.get("filename"),
                                       f"{ppath}.file"))
            else:
                raise fail(f"{ppath}.type", f"unsupported content part type {kind!r}")
        return parts

    def tool_output(self, content: Any, path: str) -> tuple[str, list[dict[str, Any]]]:
        """Split a tool message's content into (text, image parts)."""
        if content is None:
            return "", []
        if isinstance(content, str):
            return content, []
        texts, media = [], []
        for j, part in enumerate(expect_list(content, path)):
            ppath = f"{path}[{j}]"
            if isinstance(part, str):
                texts.append(part)
                continue
            part = expect_dict(part, ppath)
            kind = part.get("type", "text")
            if kind == "text":
                texts.append(expect_str(part.get("text"), f"{ppath}.text"))
            elif kind == "image_url":
                media.append(self.image(part.get("image_url"), f"{ppath}.image_url"))
            else:
                raise fail(f"{ppath}.type", f"unsupported tool content part type {kind!r}")
        return "".join(texts), media


def _assistant(msg: dict[str, Any], path: str, history: History) -> None:
    parts: list[dict[str, Any]] = []
    text = text_of(msg.get("content"), f"{path}.content")
    if text:
        parts.append({"text": text})
    calls: list[tuple[str | None, str]] = []
    tool_calls = msg.get("tool_calls")
    if tool_calls is not None:
        for k, call in enumerate(expect_list(tool_calls, f"{path}.tool_calls")):
            cpath = f"{path}.tool_calls[{k}]"
            call = expect_dict(call, cpath)
            if call.get("type", "function") != "function":
                raise fail(f"{cpath}.type", f"{call.get('type')!r} tool calls are not supported")
            fn = expect_dict(call.get("function"), f"{cpath}.function")
            name = check_name(fn.get("name"), f"{cpath}.function.name")
            args = parse_arguments(fn.get("arguments"), f"{cpath}.function.arguments")
            call_id = call.get("id")
            if call_id is not None:
                call_id = expect_str(call_id, f"{cpath}.id")
            parts.append(function_call_part(name, args, signature_of(call, call_id)))
            calls.append((call_id, name))
    legacy = msg.get("function_call")
    if legacy is not None and tool_calls is None:
        legacy = expect_dict(legacy, f"{path}.function_call")
        name = check_name(legacy.get("name"), f"{path}.function_call.name")
        args = parse_arguments(legacy.get("arguments"), f"{path}.function_call.arguments")
        parts.append(function_call_part(name, args, None))
        calls.append((None, name))
    history.add_model_turn(parts, calls)


def _messages(messages: Any, history: History, builder: _Parts) -> None:
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages: required, a non-empty array of messages",
                               param="messages")
    for i, msg in enumerate(messages):
        path = f"messages[{i}]"
        msg = expect_dict(msg, path)
        role = msg.get("role")
        if role in ("system", "developer"):
            history.add_system(text_of(msg.get("content"), f"{path}.content"))
        elif role == "user":
            history.add("user", builder.user(msg.get("content"), f"{path}.content"))
        elif role == "assistant":
            _assistant(msg, path, history)
        elif role == "tool":
            call_id = expect_str(msg.get("tool_call_id"), f"{path}.tool_call_id", nonempty=True)
            name, order = history.call_name(call_id, f"{path}.tool_call_id")
            text, media = builder.tool_output(msg.get("content"), f"{path}.content")
            history.add_result(order, name, text, media)
        elif role == "function":
            name = check_name(msg.get("name"), f"{path}.name")
            text, media = builder.tool_output(msg.get("content"), f"{path}.content")
            history.add_result(_LEGACY_ORDER, name, text, media)
        else:
            raise fail(f"{path}.role", f"unknown role {role!r}")


def _tools(body: dict[str, Any], model: str, strict: Strictness
           ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    decls: list[dict[str, Any]] = []
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is not None:
        for i, tool in enumerate(expect_list(tools, "tools")):
            tool = expect_dict(tool, f"tools[{i}]")
            kind = tool.get("type", "function")
            if kind != "function":
                strict.unsupported(f"tools[{i}].type", f"{kind!r} tools have no Gemini "
                                                       "counterpart (only function tools do)")
                continue
            fn = expect_dict(tool.get("function"), f"tools[{i}].function")
            decls.append(function_declaration(fn.get("name"), fn.get("description"),
                                              fn.get("parameters"), f"tools[{i}].function"))
        check_unique(decls, "tools")
    elif body.get("functions") is not None:
        # The pre-tools spelling, still sent by some older clients.
        for i, fn in enumerate(expect_list(body["functions"], "functions")):
            fn = expect_dict(fn, f"functions[{i}]")
            decls.append(function_declaration(fn.get("name"), fn.get("description"),
                                              fn.get("parameters"), f"functions[{i}]"))
        check_unique(decls, "functions")
        legacy = body.get("function_call")
        if choice is None and legacy is not None:
            if isinstance(legacy, dict):
                choice = {"type": "function", "function": legacy}
            else:
                choice = legacy
    builtins = []
    search = body.get("web_search_options")
    if search is not None and search_options(expect_dict(search, "web_search_options"),
                                             "web_search_options", strict):
        builtins.append(("web_search", {SEARCH: {}}))
    chosen = tool_choice_config(choice, decls, "tool_choice", flat=False, strict=strict,
                                builtins=builtins)
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        chosen.builtins = [tool for _, tool in builtins]  # web search is no tool to allow in Chat
    return assemble(model, chosen.decls, chosen.builtins, chosen.config, strict,
                    "web_search_options")


def _wrap_int32(value: int) -> int:
    """Fold an OpenAI (int64) seed into Gemini's int32 range."""
    return ((value + 2**31) % 2**32) - 2**31


def sampling_config(body: dict[str, Any], model: str, *,
                    max_tokens_keys: tuple[str, ...]) -> dict[str, Any]:
    """Return generationConfig sampling fields shared by Chat and Responses requests."""
    gen: dict[str, Any] = {}
    temperature = opt_number(body, "temperature", 0, 2)
    if temperature is not None:
        gen["temperature"] = temperature
    top_p = opt_number(body, "top_p", 0, 1)
    if top_p is not None:
        gen["topP"] = top_p
    top_k = opt_int(body, "top_k", 1, INT32_MAX)
    if top_k is not None:
        gen["topK"] = top_k
    for key in max_tokens_keys:
        limit = opt_int(body, key, 1, INT32_MAX)
        if limit is not None:
            gen["maxOutputTokens"] = limit
            break
    for key, gkey in (("presence_penalty", "presencePenalty"),
                      ("frequency_penalty", "frequencyPenalty")):
        value = opt_number(body, key, -2, 2)
        # 0 is the default anyway, and Gemini 3 rejects penalties outright.
        if value and not requires_signatures(model):
            gen[gkey] = value
    seed = body.get("seed")
    if seed is not None:
        if not is_int(seed):
            raise fail("seed", "must be an integer")
        gen["seed"] = _wrap_int32(int(seed))
    return gen


def chat_request_to_gemini(body: dict[str, Any], *, aliases: dict[str, str] | None = None,
                           fetched_images: dict[str, tuple[str, bytes]] | None = None,
                           tolerant: bool = False,
                           ) -> tuple[str, dict[str, Any], ChatOptions]:
    """Translate a Chat Completions request into (model id, generateContent body, options).

    http(s) image URLs must already be in `fetched_images` (url → (mime, bytes));
    `urls_to_fetch` lists them. Invalid input raises TranslationError.
    """
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object")
    strict = Strictness(body, tolerant)
    check_params(body, CHAT_PARAMS, strict)
    model = normalise_model(body.get("model"), aliases)
    history = History()
    builder = _Parts(fetched_images)
    _messages(body.get("messages"), history, builder)
    contents, system = history.finish(model)

    out: dict[str, Any] = {"contents": contents}
    if system is not None:
        out["systemInstruction"] = system
    tools, tool_config = _tools(body, model, strict)
    if tools:
        out["tools"] = tools
    if tool_config is not None:
        out["toolConfig"] = tool_config

    gen = sampling_config(body, model, max_tokens_keys=("max_completion_tokens", "max_tokens"))
    stops = stop_sequences(body.get("stop"))
    if stops:
        gen["stopSequences"] = stops
    stream = body.get("stream") is True
    top_logprobs = opt_int(body, "top_logprobs", 0, 20) or 0
    want_logprobs = body.get("logprobs")
    if want_logprobs is not None and not isinstance(want_logprobs, bool):
        raise fail("logprobs", "must be a boolean")
    if top_logprobs and want_logprobs is not True:
        raise fail("top_logprobs", "needs logprobs: true")
    gen.update(logprobs_config(top_logprobs, want_logprobs is True))
    speech = modalities(body, stream, strict)
    gen.update(speech.config)
    resolution = media_resolution(builder.details)
    if resolution:
        gen["mediaResolution"] = resolution
    tier = service_tier(body.get("service_tier"), strict)
    if tier is not None:
        out["serviceTier"] = tier
    single = _single_call(body)
    n = opt_int(body, "n", 1, 8) or 1
    if n > 1:
        if stream:
            raise fail("n", "values above 1 are not supported with stream")
        gen["candidateCount"] = n
    fmt = body.get("response_format")
    if fmt is not None:
        fmt = expect_dict(fmt, "response_format")
        spec = fmt.get("json_schema")
        schema = None
        if fmt.get("type") == "json_schema" and spec is not None:
            schema = expect_dict(spec, "response_format.json_schema").get("schema")
        gen.update(structured_output(fmt.get("type"), schema, type_path="response_format.type",
                                     schema_path="response_format.json_schema.schema"))
    extras = google_extras(body)
    effort = parse_effort(body.get("reasoning_effort"), "reasoning_effort")
    thinking, include_reasoning = thinking_config(model, effort, extras,
                                                  body.get("include_reasoning") is True)
    if thinking:
        gen["thinkingConfig"] = thinking
    if gen:
        out["generationConfig"] = gen
    if extras.safety_settings is not None:
        out["safetySettings"] = extras.safety_settings
    if extras.cached_content is not None:
        out["cachedContent"] = extras.cached_content

    stream_options = body.get("stream_options")
    include_usage = (stream and isinstance(stream_options, dict)
                     and stream_options.get("include_usage") is True)
    options = ChatOptions(model=model, stream=stream, include_usage=include_usage,
                          include_reasoning=include_reasoning, n=n,
                          tool_call_names={k: v[0] for k, v in history.calls.items()},
                          single_call=single, logprobs=want_logprobs is True,
                          top_logprobs=top_logprobs, service_tier=tier,
                          audio_format=speech.audio_format, dropped=strict.dropped)
    return model, out, options


def _single_call(body: dict[str, Any]) -> bool:
    """Tell whether the client allows only one function call per answer."""
    value = body.get("parallel_tool_calls")
    if value is not None and not isinstance(value, bool):
        raise fail("parallel_tool_calls", "must be a boolean")
    return value is False


def urls_to_fetch(body: Any) -> dict[str, str]:
    """Map each http(s) URL a request names to the field that first names it, in order.

    Works on Chat bodies (`messages[].content[].image_url`) and Responses bodies
    (`input[].content[].image_url` / `file_url`); the field paths match the ones the
    translation reports. Never raises: malformed input is left for the translation to reject.
    """
    urls: dict[str, str] = {}
    if not isinstance(body, dict):
        return urls

    def take(url: Any, path: str) -> None:
        if isinstance(url, dict):
            url, path = url.get("url"), f"{path}.url"
        if isinstance(url, str) and is_http_url(url):
            urls.setdefault(url, path)

    key = "messages" if isinstance(body.get("messages"), list) else "input"
    items = body.get(key)
    if not isinstance(items, list):
        return urls
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        outputs = ("function_call_output", "custom_tool_call_output")
        field = "output" if item.get("type") in outputs else "content"
        content = item.get(field)
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            path = f"{key}[{i}].{field}[{j}]"
            kind = part.get("type")
            if kind in ("image_url", "input_image"):
                take(part.get("image_url"), f"{path}.image_url")
            elif kind == "input_file" and part.get("file_data") is None:
                take(part.get("file_url"), f"{path}.file_url")
    return urls


# -- answer ------------------------------------------------------------------------------

def tool_call(part: dict[str, Any], fc: dict[str, Any]) -> dict[str, Any] | None:
    """Return the OpenAI tool call for a Gemini functionCall part (signature in the id)."""
    name = fc.get("name")
    if not isinstance(name, str):
        return None
    signature = part.get("thoughtSignature")
    if not isinstance(signature, str) or not signature:
        signature = None
    call: dict[str, Any] = {"id": encode_call_id(signature), "type": "function",
                            "function": {"name": name, "arguments": function_call_json(fc.get("args"))}}
    if signature:
        call["extra_content"] = extra_content(signature)
    return call


def candidate_parts(cand: Any) -> list[Any]:
    """Return a candidate's parts list (empty when Gemini sent none)."""
    if not isinstance(cand, dict):
        return []
    content = cand.get("content")
    if not isinstance(content, dict):
        return []
    parts = content.get("parts")
    return parts if isinstance(parts, list) else []


def _message(cand: dict[str, Any], options: Any) -> tuple[dict[str, Any], bool]:
    include_reasoning = bool(getattr(options, "include_reasoning", False))
    single = bool(getattr(options, "single_call", False))
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    audio: list[dict[str, Any]] = []
    for part in candidate_parts(cand):
        if not isinstance(part, dict):
            continue
        fc = part.get("functionCall")
        if isinstance(fc, dict):
            call = tool_call(part, fc)
            if call is not None and not (single and calls):
                calls.append(call)
            continue
        if is_code(part):
            texts.append(code_text(part))
            continue
        image = image_of(part)
        if image is not None:
            images.append(chat_image(*image, len(images)))
            continue
        if is_audio(part):
            audio.append(part)
            continue
        text = part.get("text")
        if isinstance(text, str):
            if part.get("thought") is True:
                if include_reasoning:
                    thoughts.append(text)
            else:
                texts.append(text)
        # toolCall / toolResponse parts are Google's own searches: their results come back
        # as the citations below.
    content = "".join(texts)
    message: dict[str, Any] = {"role": "assistant",
                               "content": content if texts or not (calls or audio or images) else None,
                               "refusal": None}
    if audio:
        message["audio"] = message_audio(audio, getattr(options, "audio_format", None) or "wav",
                                         content)
        message["content"] = None  # OpenAI puts the words of a spoken answer in its transcript
    annotations = [chat_annotation(c) for c in citations(cand, content)]
    if annotations:
        message["annotations"] = annotations
    if images:
        message["images"] = images
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return message, bool(calls)


def choice_logprobs(cand: Any, options: Any) -> dict[str, Any] | None:
    """Return a choice's `logprobs` when the client asked for them and Gemini sent some."""
    if not getattr(options, "logprobs", False):
        return None
    entries = token_logprobs(cand, getattr(options, "top_logprobs", 0))
    return None if entries is None else {"content": entries, "refusal": None}


def gemini_to_chat_completion(resp: dict[str, Any], *, model: str, completion_id: str,
                              created: int, options: ChatOptions) -> dict[str, Any]:
    """Translate a generateContent answer into a `chat.completion` object."""
    if not isinstance(resp, dict):
        raise TranslationError("upstream answer is not a JSON object", status=502)
    choices: list[dict[str, Any]] = []
    candidates = resp.get("candidates")
    if isinstance(candidates, list):
        used: set[int] = set()
        for cand in candidates:
            if not isinstance(cand, dict):
                continue
            index = cand.get("index")
            # Gemini omits `index` when it is 0.
            index = int(index) if is_int(index) and index >= 0 else 0
            if index in used:
                index = max(used) + 1
            used.add(index)
            message, has_calls = _message(cand, options)
            choices.append({"index": index,
                            "message": message, "logprobs": choice_logprobs(cand, options),
                            "finish_reason": chat_finish_reason(cand.get("finishReason"), has_calls)})
        choices.sort(key=lambda c: c["index"])
    if not choices:
        # Blocked prompt: no candidates, only promptFeedback.
        reason = "content_filter" if block_reason(resp) else "stop"
        choices.append({"index": 0, "message": {"role": "assistant", "content": "", "refusal": None},
                        "logprobs": None, "finish_reason": reason})
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": chat_usage(resp.get("usageMetadata")),
            "service_tier": answered_tier(resp.get("usageMetadata"),
                                          getattr(options, "service_tier", None))}
