"""Build Responses API objects: the response envelope and its output items."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .finish import block_reason, incomplete_reason
from .generation import answered_tier
from .signatures import new_id
from .tools import custom_input, function_call_json


@dataclass(slots=True)
class ResponsesOptions:
    """What the answer translation needs to know about a Responses request."""

    model: str                       # Gemini model id the request goes to
    stream: bool = False
    include_reasoning: bool = False  # emit thought summaries as reasoning items
    echo: dict[str, Any] = field(default_factory=dict)  # request settings repeated on the Response
    call_names: dict[str, str] = field(default_factory=dict)  # history call_id → function name
    namespaces: dict[str, str] = field(default_factory=dict)  # function name → its namespace
    custom_tools: set[str] = field(default_factory=set)  # names of custom (free-form) tools
    single_call: bool = False        # parallel_tool_calls: false → one function call per answer
    logprobs: bool = False           # top_logprobs / include message.output_text.logprobs
    top_logprobs: int = 0
    service_tier: str | None = None  # the Gemini tier asked for (None: Google's default)
    dropped: list[str] = field(default_factory=list)  # what drop_params let go


def output_text(text: str, annotations: list[dict[str, Any]] | None = None,
                logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return an output_text content part."""
    return {"type": "output_text", "text": text, "annotations": annotations or [],
            "logprobs": logprobs or []}


def message_item(item_id: str, text: str, status: str,
                 annotations: list[dict[str, Any]] | None = None,
                 logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return an assistant message output item."""
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": [output_text(text, annotations, logprobs)]}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    """Return a reasoning output item holding Gemini's thought summary."""
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}]}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str = "completed", namespace: str | None = None) -> dict[str, Any]:
    """Return a function_call output item (with the namespace its function was declared in)."""
    item = {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}
    if namespace is not None:
        item["namespace"] = namespace
    return item


def call_item(fc: dict[str, Any], call_id: str, options: Any, status: str = "completed",
              item_id: str | None = None) -> dict[str, Any]:
    """Return the output item for a Gemini functionCall: a function or a custom tool call."""
    name = fc["name"]
    namespace = (getattr(options, "namespaces", None) or {}).get(name)
    if name in (getattr(options, "custom_tools", None) or ()):
        item = {"type": "custom_tool_call", "id": item_id or new_id("ctc_"), "call_id": call_id,
                "name": name, "input": custom_input(fc.get("args")) if status == "completed" else "",
                "status": status}
        if namespace is not None:
            item["namespace"] = namespace
        return item
    return function_call_item(item_id or new_id("fc_"), call_id, name,
                              function_call_json(fc.get("args")) if status == "completed" else "",
                              status, namespace)


def web_search_item(queries: list[str], urls: list[str]) -> dict[str, Any]:
    """Return a web_search_call item for the searches Google ran to ground the answer."""
    action: dict[str, Any] = {"type": "search", "query": queries[0] if queries else "",
                              "queries": queries,
                              "sources": [{"type": "url", "url": u} for u in urls]}
    return {"type": "web_search_call", "id": new_id("ws_"), "status": "completed",
            "action": action}


def outcome(resp_reason: Any, blocked: bool) -> tuple[str, dict[str, Any] | None]:
    """Return (status, incomplete_details) for a finishReason / blocked prompt."""
    if blocked:
        return "incomplete", {"reason": "content_filter"}
    reason = incomplete_reason(resp_reason)
    if reason is not None:
        return "incomplete", {"reason": reason}
    return "completed", None


def is_blocked(resp: dict[str, Any]) -> bool:
    """Tell whether Gemini blocked the prompt (no candidates, promptFeedback.blockReason)."""
    return block_reason(resp) is not None


def response_object(response_id: str, created: int, model: str, options: ResponsesOptions, *,
                    status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None = None,
                    incomplete: dict[str, Any] | None = None,
                    error: dict[str, Any] | None = None,
                    tier_meta: Any = None) -> dict[str, Any]:
    """Return a `response` object with the request's settings echoed as OpenAI does.

    `tier_meta` is Gemini's usageMetadata, which may say what tier served the request.
    """
    echo = options.echo if isinstance(getattr(options, "echo", None), dict) else {}
    obj: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "model": model, "output": output, "error": error, "incomplete_details": incomplete,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": echo.get("reasoning"),
        "store": False,
        "temperature": echo.get("temperature"),
        "text": echo.get("text", {"format": {"type": "text"}}),
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools", []),
        "top_p": echo.get("top_p"),
        "top_logprobs": echo.get("top_logprobs"),
        "truncation": "disabled",
        "usage": usage,
        "metadata": echo.get("metadata", {}),
        "service_tier": answered_tier(tier_meta, getattr(options, "service_tier", None)),
    }
    return obj
