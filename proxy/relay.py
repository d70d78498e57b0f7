"""Relay an upstream stream to the client, chunk by chunk, and record how it ended.

One mechanism for every dialect: a `Framing` turns upstream bytes into client bytes
(identity for native clients, a translator for OpenAI ones) and says what to send when
the stream ends or breaks. Text that reached the client is never re-sent: a stream that
breaks is ended, not restarted on another key.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Protocol

from proxy.errors import Kind, Outcome
from proxy.exchange import Exchange
from proxy.translate.errors import gemini_error_body
from proxy.upstream import Reply
from proxy.usage import UsageTail


class StreamBroken(Exception):
    """Raised inside a relayed stream so the server drops the connection mid-answer."""


class Framing(Protocol):
    """How one dialect frames a relayed stream."""

    abort_on_break: bool  # cut the connection (native) or end cleanly after an error event

    def chunk(self, raw: bytes) -> Iterable[bytes]: ...

    def close(self) -> Iterable[bytes]: ...

    def broken(self, reason: str) -> Iterable[bytes]: ...


class Passthrough:
    """Native framing: upstream bytes as they are."""

    abort_on_break = True

    def __init__(self, sse: bool) -> None:
        self.sse = sse

    def chunk(self, raw: bytes) -> Iterable[bytes]:
        return (raw,)

    def close(self) -> Iterable[bytes]:
        return ()

    def broken(self, reason: str) -> Iterable[bytes]:
        # SSE clients (google-genai) raise on an error event; a JSON array has no place
        # for one, so there the cut connection alone says it.
        if self.sse:
            return (b"data: " + json.dumps(gemini_error_body(502, reason)).encode() + b"\n\n",)
        return ()


def relay_stream(pool: Any, ex: Exchange, reply: Reply, framing: Framing) -> Iterator[bytes]:
    """Yield the client's bytes for `reply`; record the exchange however it ends."""
    tail = UsageTail()
    sent = 0
    try:
        for raw in reply.chunks or ():
            tail.feed(raw)
            sent += 1
            if sent == 1:
                ex.first_byte(reply)
            yield from framing.chunk(raw)
        yield from framing.close()
    except GeneratorExit:  # the client went away; nothing more to send
        ex.finish(499, reply, tokens=tail.result(), error_class="client_error",
                  error_message=f"client closed the connection after {sent} chunks")
        raise
    except Exception as exc:
        reason = f"upstream stream broke after {sent} chunks: {type(exc).__name__}"
        if reply.key is not None:
            pool.report(reply.key, ex.model, Outcome(Kind.UPSTREAM, 502, reason))
        ex.finish(reply.status, reply, tokens=tail.result(), error_class="upstream_error",
                  error_message=reason)
        yield from framing.broken(reason)
        if framing.abort_on_break:
            raise StreamBroken(reason) from None
        return
    finally:
        if reply.key is not None:
            pool.end(reply.key)
        reply.close()
    ex.finish(reply.status, reply, tokens=tail.result())
