"""Server-sent events: encode outgoing events, parse Gemini's `?alt=sse` stream incrementally."""
from __future__ import annotations

import json
import re
from typing import Any

SSE_DONE = b"data: [DONE]\n\n"
_EOL = re.compile(rb"\r\n|\r|\n")
_FIELDS = (b"data", b"event", b"id", b"retry")
_MAX_RAW_LINES = 10_000  # a JSON body longer than this is not an error body


def dumps(obj: Any) -> bytes:
    """Serialise obj as compact UTF-8 JSON (one dumps call)."""
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8; \u-escapes can.
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def sse(obj: Any) -> bytes:
    """Frame obj as one `data:` event."""
    return b"data: " + dumps(obj) + b"\n\n"


def sse_event(name: str, data: Any) -> bytes:
    """Frame obj as one named event (`event: NAME` + `data: JSON`), as the Responses API does."""
    return b"event: " + name.encode("ascii") + b"\ndata: " + dumps(data) + b"\n\n"


def _malformed(text: str) -> dict[str, Any]:
    return {"error": {"code": 502, "status": "UNKNOWN",
                      "message": f"Upstream sent malformed stream data: {text[:200]!r}"}}


class SSEParser:
    """Incremental parser for upstream SSE bytes → JSON payload dicts.

    Accepts LF, CRLF and CR line ends (also a CRLF split across two network
    chunks), events split anywhere, multi-line `data:`, comments, and bare JSON
    lines outside any field (how errors can arrive mid-stream), which are
    returned as dicts too. Each byte is scanned once; each event parsed once.
    """

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # pieces of the line not yet terminated
        self._skip_lf = False            # the last chunk ended in CR; a leading LF belongs to it
        self._data: list[bytes] = []     # data lines of the event being assembled
        self._raw: list[bytes] = []      # non-field lines (a bare JSON error body)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Consume bytes and return every payload completed by them."""
        out: list[dict[str, Any]] = []
        if not data:
            return out
        start = 0
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                start = 1
        end = len(data)
        for m in _EOL.finditer(data, start):
            piece = data[start:m.start()]
            if self._partial:
                self._partial.append(piece)
                piece = b"".join(self._partial)
                self._partial = []
            self._line(piece, out)
            start = m.end()
            if start == end and m.group() == b"\r":
                self._skip_lf = True
        if start < end:
            self._partial.append(data[start:])
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Flush at end of stream: an unterminated last event still counts."""
        out: list[dict[str, Any]] = []
        if self._partial:
            line = b"".join(self._partial)
            self._partial = []
            self._line(line, out)
        self._dispatch(out)
        return out

    def _line(self, line: bytes, out: list[dict[str, Any]]) -> None:
        if not line:
            self._dispatch(out)
            return
        first = line[:1]
        if first == b":":
            return  # comment / keep-alive
        colon = line.find(b":")
        name = line[:colon] if colon != -1 else line
        if name in _FIELDS and not self._raw:
            if name == b"data":
                value = line[colon + 1:] if colon != -1 else b""
                if value[:1] == b" ":
                    value = value[1:]
                self._data.append(value)
            return
        if self._raw or first in (b"{", b"["):
            self._raw_line(line, out)
        # else: an unknown field, ignored as the SSE spec says

    def _raw_line(self, line: bytes, out: list[dict[str, Any]]) -> None:
        self._raw.append(line)
        stripped = line.strip()
        closing = stripped[-1:] in (b"}", b"]")
        if not closing and len(self._raw) < _MAX_RAW_LINES:
            return
        try:
            value = json.loads(b"\n".join(self._raw))
        except ValueError:
            if len(self._raw) >= _MAX_RAW_LINES:
                out.append(_malformed(self._raw[0].decode("utf-8", "replace")))
                self._raw = []
            return  # not complete yet: wait for more lines
        self._raw = []
        self._emit(value, out)

    def _dispatch(self, out: list[dict[str, Any]]) -> None:
        if self._raw:
            text = b"\n".join(self._raw)
            self._raw = []
            try:
                self._emit(json.loads(text), out)
            except ValueError:
                out.append(_malformed(text.decode("utf-8", "replace")))
        if not self._data:
            return
        text = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        if text.strip() == b"[DONE]":
            return
        try:
            value = json.loads(text)
        except ValueError:
            out.append(_malformed(text.decode("utf-8", "replace")))
            return
        self._emit(value, out)

    @staticmethod
    def _emit(value: Any, out: list[dict[str, Any]]) -> None:
        if isinstance(value, dict):
            out.append(value)
        elif isinstance(value, list):
            # Google sometimes wraps errors in an array: [{"error": {...}}]
            out.extend(v for v in value if isinstance(v, dict))
