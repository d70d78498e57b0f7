"""Build Responses API objects: the response envelope and its output items."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .finish import block_reason, incomplete_reason


@dataclass(slots=True)
class ResponsesOptions:
    """What the answer translation needs to know about a Responses request."""

    model: str                       # Gemini model id the request goes to
    stream: bool = False
    include_reasoning: bool = False  # emit thought summaries as reasoning items
    echo: dict[str, Any] = field(default_factory=dict)  # request settings repeated on the Response
    call_names: dict[str, str] = field(default_factory=dict)  # history call_id → function name


def output_text(text: str) -> dict[str, Any]:
    """Return an output_text content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    """Return an assistant message output item."""
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": [output_text(text)]}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    """Return a reasoning output item holding Gemini's thought summary."""
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}]}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str = "completed") -> dict[str, Any]:
    """Return a function_call output item."""
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


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
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a `response` object with the request's settings echoed as OpenAI does."""
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
        "truncation": "disabled",
        "usage": usage,
        "metadata": echo.get("metadata", {}),
    }
    return obj
