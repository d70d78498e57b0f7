"""Translate Gemini usageMetadata into OpenAI usage objects."""
from __future__ import annotations

from typing import Any


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e15:
        return 0  # not a count (a string, NaN, infinite or absurd): nothing to bill
    return int(value)


def token_counts(meta: Any) -> tuple[int, int, int, int, int]:
    """Return (prompt, completion, total, reasoning, cached) from usageMetadata.

    candidatesTokenCount excludes thinking, so completion = candidates + thoughts;
    tool-use prompt tokens count as prompt, which keeps prompt + completion = total.
    """
    if not isinstance(meta, dict):
        return 0, 0, 0, 0, 0
    prompt = _count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount")
    thoughts = _count(meta, "thoughtsTokenCount")
    completion = _count(meta, "candidatesTokenCount") + thoughts
    total = _count(meta, "totalTokenCount") or prompt + completion
    return prompt, completion, total, thoughts, _count(meta, "cachedContentTokenCount")


def chat_usage(meta: Any) -> dict[str, Any]:
    """Return the Chat Completions `usage` object."""
    prompt, completion, total, reasoning, cached = token_counts(meta)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def responses_usage(meta: Any) -> dict[str, Any]:
    """Return the Responses API `usage` object."""
    prompt, completion, total, reasoning, cached = token_counts(meta)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }
