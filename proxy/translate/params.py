"""What happens to each OpenAI request parameter: the one table, per route.

Every parameter a client sends is MAPPED to its Gemini meaning, REFUSED with a 400 naming
it (it would change what the answer means, and nothing here can honour it), UNSUPPORTED
(Gemini has no counterpart: a 400 naming it, or dropped when the request says
`drop_params: true`, as litellm does), or ADVISORY (OpenAI itself calls it a hint or
bookkeeping: accepted, no effect). A parameter missing from the table is refused the way
api.openai.com refuses one ("Unrecognized request argument"), unless `drop_params`.
The README's parameter table is checked against these tables by a test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .fields import fail

MAPPED, REFUSED, UNSUPPORTED, ADVISORY = "mapped", "refused", "unsupported", "advisory"
TOLERANT = "drop_params"  # the request field that turns UNSUPPORTED refusals into drops
TOLERANT_HEADER = "X-Proxy-Drop-Params"  # the same, as a request header ("true")
DROPPED_HEADER = "X-Proxy-Dropped-Params"  # the answer's list of what was dropped


@dataclass(frozen=True, slots=True)
class Param:
    """How one request parameter is treated; `harmless` values ask for nothing and pass."""

    treatment: str
    note: str = ""
    harmless: tuple[Any, ...] = ()


class Strictness:
    """Refuses what cannot be honoured, or (drop_params) drops it and remembers what."""

    def __init__(self, body: dict[str, Any], tolerant: bool = False) -> None:
        # `drop_params: true` in the body, or (for clients that cannot add body fields,
        # such as Codex CLI) the route's TOLERANT_HEADER.
        self.tolerant = tolerant or body.get(TOLERANT) is True
        self.dropped: list[str] = []

    def unsupported(self, path: str, problem: str) -> None:
        """Refuse `path` (400 naming it), or drop it when the client allowed that."""
        if self.tolerant:
            self.dropped.append(path)
            return
        raise fail(path, f"{problem}. Remove it, or send \"{TOLERANT}\": true to have the "
                         "proxy drop what Gemini cannot do")


_PENALTY = "{} (an extension on Responses; not sent to Gemini 3, which refuses it)"
_TOP_LOGPROBS = ("responseLogprobs + logprobs (the count); logprobsResult comes back as "
                 "choices[].logprobs / output_text.logprobs")
_TOOL_CHOICE = ("functionCallingConfig (a named function or custom tool → ANY + "
                "allowedFunctionNames); forcing a built-in tool is unsupported")
_SERVICE_TIER = ("serviceTier: flex, priority, default → standard, auto → Google's choice; "
                 "scale is unsupported. The answer's service_tier is the tier Gemini reports")
_STORE = "nothing is stored (responses say store: false)"

_EXTENSIONS = {
    "extra_body": Param(MAPPED, "extension: `extra_body.google` (thinking_config, "
                                "safety_settings, cached_content), as Google's own OpenAI layer"),
    "google": Param(MAPPED, "extension: the same Google options, top level"),
    TOLERANT: Param(MAPPED, "extension: drop what Gemini cannot do instead of refusing it (or "
                            f"send the header `{TOLERANT_HEADER}: true`); the answer's "
                            f"`{DROPPED_HEADER}` header lists what was dropped"),
}
_ADVISORY_COMMON = {
    "user": Param(ADVISORY, "an end-user id for abuse monitoring"),
    "safety_identifier": Param(ADVISORY, "an end-user id for abuse monitoring"),
    "prompt_cache_key": Param(ADVISORY, "a cache-routing hint; Gemini caches implicitly"),
    "prompt_cache_retention": Param(ADVISORY, "a cache-lifetime hint"),
    "prompt_cache_options": Param(ADVISORY, "cache breakpoint hints"),
}

CHAT: dict[str, Param] = {
    "model": Param(MAPPED, "the model in the URL; MODEL_ALIASES apply"),
    "messages": Param(MAPPED, "contents + systemInstruction"),
    "stream": Param(MAPPED, "streamGenerateContent?alt=sse"),
    "stream_options": Param(MAPPED, "include_usage (Chat); include_obfuscation is advisory"),
    "temperature": Param(MAPPED, "temperature"),
    "top_p": Param(MAPPED, "topP"),
    "top_k": Param(MAPPED, "extension: topK"),
    "max_tokens": Param(MAPPED, "maxOutputTokens"),
    "max_completion_tokens": Param(MAPPED, "maxOutputTokens"),
    "stop": Param(MAPPED, "stopSequences (at most 5)"),
    "n": Param(MAPPED, "candidateCount (not with stream)"),
    "seed": Param(MAPPED, "seed (an extension on Responses)"),
    "presence_penalty": Param(MAPPED, _PENALTY.format("presencePenalty")),
    "frequency_penalty": Param(MAPPED, _PENALTY.format("frequencyPenalty")),
    "logprobs": Param(MAPPED, "responseLogprobs; logprobsResult comes back as choices[].logprobs"),
    "top_logprobs": Param(MAPPED, _TOP_LOGPROBS),
    "response_format": Param(MAPPED, "responseMimeType + responseJsonSchema / responseSchema"),
    "tools": Param(MAPPED, "function tools → functionDeclarations; `custom` tools are "
                           "unsupported"),
    "tool_choice": Param(MAPPED, _TOOL_CHOICE),
    "functions": Param(MAPPED, "functionDeclarations (the pre-tools spelling)"),
    "function_call": Param(MAPPED, "functionCallingConfig"),
    "parallel_tool_calls": Param(MAPPED, "false: at most one function call per answer"),
    "web_search_options": Param(MAPPED, "the googleSearch tool (next to functions only on "
                                        "Gemini 3); search_context_size and user_location are "
                                        "advisory; citations come back as url_citation "
                                        "annotations"),
    "reasoning_effort": Param(MAPPED, "thinkingBudget (2.5) / thinkingLevel (3)"),
    "include_reasoning": Param(MAPPED, "extension: thought summaries as reasoning_content"),
    "service_tier": Param(MAPPED, _SERVICE_TIER),
    "modalities": Param(MAPPED, "responseModalities (audio for TTS models, image for image "
                                "models)"),
    "audio": Param(MAPPED, "speechConfig voice; answer as message.audio (wav or pcm16)"),
    "logit_bias": Param(UNSUPPORTED, "Gemini cannot bias tokens", harmless=({},)),
    "verbosity": Param(UNSUPPORTED, "Gemini has no verbosity control", harmless=("medium",)),
    "moderation": Param(UNSUPPORTED, "no moderation pass; use extra_body.google.safety_settings"),
    "prediction": Param(ADVISORY, "a latency hint (predicted output)"),
    "store": Param(ADVISORY, _STORE),
    "metadata": Param(ADVISORY, "tags for stored completions; nothing is stored"),
    **_ADVISORY_COMMON,
    **_EXTENSIONS,
}

RESPONSES: dict[str, Param] = {
    "model": Param(MAPPED, "the model in the URL; MODEL_ALIASES apply"),
    "input": Param(MAPPED, "contents; built-in tool calls coming back become their parts"),
    "instructions": Param(MAPPED, "systemInstruction"),
    "stream": Param(MAPPED, "streamGenerateContent?alt=sse"),
    "stream_options": Param(MAPPED, "include_usage (Chat); include_obfuscation is advisory"),
    "temperature": Param(MAPPED, "temperature"),
    "top_p": Param(MAPPED, "topP"),
    "top_k": Param(MAPPED, "extension: topK"),
    "max_output_tokens": Param(MAPPED, "maxOutputTokens"),
    "seed": Param(MAPPED, "seed (an extension on Responses)"),
    "presence_penalty": Param(MAPPED, _PENALTY.format("presencePenalty")),
    "frequency_penalty": Param(MAPPED, _PENALTY.format("frequencyPenalty")),
    "top_logprobs": Param(MAPPED, _TOP_LOGPROBS),
    "include": Param(MAPPED, "message.output_text.logprobs asks for logprobs; the other values "
                             "are always included or have nothing to include"),
    "text": Param(MAPPED, "format → responseMimeType + schema; verbosity other than medium is "
                          "unsupported"),
    "reasoning": Param(MAPPED, "thinkingConfig; summary → includeThoughts"),
    "tools": Param(MAPPED, "functions, namespaces of functions (calls come back with their "
                           "`namespace`) and custom tools (one string argument; a grammar is "
                           "described to the model, not enforced) → functionDeclarations; "
                           "web_search → googleSearch, code_interpreter → codeExecution (next "
                           "to functions only on Gemini 3); other built-ins are unsupported"),
    "tool_choice": Param(MAPPED, _TOOL_CHOICE),
    "parallel_tool_calls": Param(MAPPED, "false: at most one function call per answer"),
    "service_tier": Param(MAPPED, _SERVICE_TIER),
    "metadata": Param(MAPPED, "echoed on the response"),
    "truncation": Param(UNSUPPORTED, "the proxy never drops input items", harmless=("disabled",)),
    "max_tool_calls": Param(UNSUPPORTED, "Gemini cannot cap its built-in tool calls"),
    "previous_response_id": Param(REFUSED, "no response is stored; send the whole history"),
    "conversation": Param(REFUSED, "no conversation is stored; send the whole history"),
    "background": Param(REFUSED, "every response is answered while the request waits",
                        harmless=(False,)),
    "background_options": Param(UNSUPPORTED, "there is no background mode"),
    "prompt": Param(REFUSED, "stored prompt templates live at OpenAI"),
    "context_management": Param(UNSUPPORTED, "no server-side compaction"),
    "access_programs": Param(UNSUPPORTED, "OpenAI access programs"),
    "image": Param(UNSUPPORTED, "OpenAI image options"),
    "moderation": Param(UNSUPPORTED, "no moderation pass; use extra_body.google.safety_settings"),
    "store": Param(ADVISORY, _STORE),
    **_ADVISORY_COMMON,
    **_EXTENSIONS,
}

EMBEDDINGS: dict[str, Param] = {
    "model": Param(MAPPED, "the model in the URL; MODEL_ALIASES apply"),
    "input": Param(MAPPED, "one request per string (token arrays are refused)"),
    "dimensions": Param(MAPPED, "outputDimensionality"),
    "encoding_format": Param(MAPPED, "float lists or base64 float32"),
    "user": Param(ADVISORY, "an end-user id for abuse monitoring"),
    **_EXTENSIONS,
    "extra_body": Param(MAPPED, "extension: `extra_body.google.task_type` → taskType "
                                "(RETRIEVAL_QUERY, RETRIEVAL_DOCUMENT, …)"),
    "google": Param(MAPPED, "extension: `google.task_type`, top level"),
}

TABLES = {"chat": CHAT, "responses": RESPONSES, "embeddings": EMBEDDINGS}


def check_params(body: dict[str, Any], table: dict[str, Param], strict: Strictness) -> None:
    """Refuse or drop the parameters `table` cannot honour; the translator maps the rest."""
    for key, value in body.items():
        param = table.get(key)
        if param is None:
            strict.unsupported(key, "unrecognized request argument")
        elif value is None or param.treatment in (MAPPED, ADVISORY) or value in param.harmless:
            continue
        elif param.treatment == REFUSED:
            raise fail(key, f"not supported: {param.note}")
        else:
            strict.unsupported(key, f"not supported: {param.note}")


_ROUTE_NAMES = {"chat": "Chat", "responses": "Responses", "embeddings": "Embeddings"}


def markdown_table() -> str:
    """Return the README's parameter table, built from the tables above (a test compares)."""
    rows: dict[str, dict[str, Param]] = {}
    for route, table in TABLES.items():
        for key, param in table.items():
            rows.setdefault(key, {})[route] = param
    lines = ["| Parameter | Chat | Responses | Embeddings | What happens |",
             "|---|---|---|---|---|"]
    for key, by_route in rows.items():
        groups: dict[str, list[str]] = {}  # note → the routes it is said for
        for route, param in by_route.items():
            if param.note:
                groups.setdefault(param.note, []).append(_ROUTE_NAMES[route])
        if len(groups) <= 1:
            note = next(iter(groups), "")
        else:
            note = "; ".join(f"{', '.join(routes)}: {text}" for text, routes in groups.items())
        cells = [by_route[route].treatment if route in by_route else "—" for route in TABLES]
        lines.append(f"| `{key}` | {' | '.join(cells)} | {note} |")
    return "\n".join(lines) + "\n"
