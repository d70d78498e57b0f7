"""Read token usage from a Gemini answer on the side, without slowing the relay."""
from __future__ import annotations

import json

from proxy.translate.usage import token_counts

_MARK = b'"usageMetadata"'
_TAIL = 16384
_decoder = json.JSONDecoder()


def usage_from(data: bytes) -> tuple[int, int] | None:
    """Return (tokens in, tokens out) from the last `usageMetadata` object in `data`.

    Gemini repeats cumulative usage on every chunk, so the last one is the total. The
    counting rules (tool-use prompt tokens are input, thoughts are output) are those of
    `token_counts`, the one reader of usageMetadata that rows, limits, cost and the OpenAI
    usage objects all share.
    """
    at = data.rfind(_MARK)
    if at < 0:
        return None
    brace = data.find(b"{", at + len(_MARK))
    if brace < 0:
        return None
    try:
        usage, _ = _decoder.raw_decode(data[brace:].decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(usage, dict):
        return None
    prompt, out, _, _, _ = token_counts(usage)
    return prompt, out


class UsageTail:
    """Keep the last few KB of a relayed stream; parse usage once, at the end."""

    __slots__ = ("tail",)

    def __init__(self) -> None:
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        tail = self.tail + chunk
        self.tail = tail[-_TAIL:] if len(tail) > _TAIL else tail

    def result(self) -> tuple[int, int] | None:
        return usage_from(self.tail)
