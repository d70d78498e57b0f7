"""Map Gemini finish and block reasons onto OpenAI's closed vocabularies."""
from __future__ import annotations

from typing import Any

# Stops for content reasons (OpenAI has one word for all of them).
FILTERED = frozenset((
    "SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER", "NO_IMAGE",
))


def chat_finish_reason(reason: Any, has_tool_calls: bool) -> str:
    """Return the OpenAI chat finish_reason for a Gemini finishReason."""
    if has_tool_calls:
        return "tool_calls"  # Gemini ends function calls with STOP
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "stop"  # STOP, OTHER, MALFORMED_FUNCTION_CALL, unknown… never raw values


def incomplete_reason(reason: Any) -> str | None:
    """Return the Responses API incomplete_details.reason for a finishReason, if incomplete."""
    if reason == "MAX_TOKENS":
        return "max_output_tokens"
    if reason in FILTERED:
        return "content_filter"
    return None


def block_reason(resp: dict[str, Any]) -> str | None:
    """Return promptFeedback.blockReason when Gemini refused the prompt itself."""
    feedback = resp.get("promptFeedback")
    if isinstance(feedback, dict):
        reason = feedback.get("blockReason")
        if isinstance(reason, str) and reason and reason != "BLOCK_REASON_UNSPECIFIED":
            return reason
    return None


def read_chunk(chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, bool, list[dict[str, Any]]]:
    """Return a stream chunk's usage (if any), whether the prompt was blocked, its candidates."""
    meta = chunk.get("usageMetadata")
    candidates = chunk.get("candidates")
    return (meta if isinstance(meta, dict) else None, block_reason(chunk) is not None,
            [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else [])
