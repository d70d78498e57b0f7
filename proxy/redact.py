"""Mask Google keys in upstream answers before they are relayed, logged, recorded or shown.

Google names the key in some errors ("Permission denied: Consumer 'api_key:AIza…' has been
suspended.") and other texts can carry one too. Everything upstream sends passes `redact`
on its way in (proxy/upstream.py); the points that record or log it pass it again.

Two things are masked: the exact values given (the pool's keys, whatever their shape) and
anything shaped like a Google key (`AIza` + 35 or more key characters), each to its
`mask_key` form.
Text with nothing to mask costs one substring search per value and one for "AIza", so the
hot path passes only the key its attempt used (see `Upstream._attempt`).
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator, TypeVar

from proxy.store.util import ELLIPSIS, mask_key

# A key and any key characters run on after it, masked as one: masking exactly 39 of a
# longer run could leave a later key's start in the mask's visible tail ("AIza…AIza" +
# the rest of that key), whole again.
KEY_SHAPE = r"AIza[0-9A-Za-z_-]{35,}"
_SHAPE_TEXT = re.compile(KEY_SHAPE)
_SHAPE_BYTES = re.compile(KEY_SHAPE.encode())
# The end of a buffer that the next chunk could complete into "AIza".
_PARTIAL = re.compile(rb"A(?:I(?:z)?)?\Z")
# Bytes a key can hold (valid_google_key's alphabet): a buffer ending in any other byte,
# a line break above all, cannot end inside a key.
_KEY_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.-")

T = TypeVar("T", str, bytes)


def _mask_text(m: re.Match[str]) -> str:
    return mask_key(m.group())


def _mask_bytes(m: re.Match[bytes]) -> bytes:
    return mask_key(m.group().decode()).encode()


def redact(data: T, values: Iterable[str] = ()) -> T:
    """Return `data` with each of `values` and every Google-key-shaped run masked.

    Longer values go first, so a key that contains another is masked whole. Text with
    nothing to mask comes back as the same object, at the cost of a substring search.
    """
    if isinstance(data, bytes):
        for value in sorted(values, key=len, reverse=True):
            raw = value.encode()
            if raw and raw in data:
                data = data.replace(raw, mask_key(value).encode())
        return _SHAPE_BYTES.sub(_mask_bytes, data) if b"AIza" in data else data
    for value in sorted(values, key=len, reverse=True):
        if value and value in data:
            data = data.replace(value, mask_key(value))
    return _SHAPE_TEXT.sub(_mask_text, data) if "AIza" in data else data


def redact_header(value: str, values: Iterable[str] = ()) -> str:
    """Return a header value redacted, keeping it Latin-1 (three dots for the ellipsis)."""
    out = redact(value, values)
    return out if out is value else out.replace(ELLIPSIS, "...")


def redact_stream(chunks: Iterable[bytes], values: Iterable[str] = ()) -> Iterator[bytes]:
    """Yield `chunks` redacted exactly as the whole body would be, however it was cut.

    A chunk that ends inside what could be a key (a run of key characters holding `AIza`,
    a prefix of it, or a prefix of one of `values`) keeps that tail back until the next
    chunk decides it. The tail is made only of key characters, so it never holds a line
    break: a complete SSE event or array element is never delayed, only the unfinished end
    of one. At the end of the stream the tail is sent, redacted. If the upstream breaks,
    the tail is dropped with the rest of the unfinished event.
    """
    values = tuple(v for v in values if v)
    needles = [v.encode() for v in values]
    inner = _KEY_BYTES.union(*needles)
    pending = b""
    for chunk in chunks:
        buf = pending + chunk if pending else chunk
        cut = _hold_from(buf, needles) if buf and buf[-1] in inner else len(buf)
        pending = buf[cut:]
        if cut:
            yield redact(buf[:cut], values)
    if pending:
        yield redact(pending, values)


MAX_HOLD = 1 << 16  # a run of key characters longer than this is no key: stop holding it


def _hold_from(buf: bytes, needles: list[bytes]) -> int:
    """Return where a possibly unfinished key at the end of `buf` starts (len(buf) if none)."""
    end = len(buf)
    run = end
    while run > 0 and buf[run - 1] in _KEY_BYTES and end - run < MAX_HOLD:
        run -= 1
    at = buf.find(b"AIza", run)  # a key here may still grow with the next chunk
    if at != -1:
        cut = at
    else:
        m = _PARTIAL.search(buf, max(0, end - 3))
        cut = m.start() if m else end
    for needle in needles:
        first = needle[:1]
        at = buf.find(first, max(0, end - len(needle) + 1))
        while at != -1 and at < cut:
            if needle.startswith(buf[at:]):
                cut = at
                break
            at = buf.find(first, at + 1)
    return cut
