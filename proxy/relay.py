"""Relay an upstream stream to the client, chunk by chunk, and record how it ended.

One mechanism for every dialect: a `Framing` turns upstream bytes into client bytes
(identity for native clients, a translator for OpenAI ones) and says what to send when
the stream ends or breaks. Text that reached the client is never re-sent: a stream that
breaks is ended, not restarted on another key.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Protocol

from proxy.outcomes import Kind, Outcome
from proxy.exchange import Exchange
from proxy.translate.errors import gemini_error_body
from proxy.upstream import Reply
from proxy.tokens import UsageTail


class StreamBroken(Exception):
    """Raised inside a relayed stream so the server drops the connection mid-answer."""


class StreamFailed(Exception):
    """Raised by a framing when the upstream stream reports an error or ends without an
    answer; its message is meant for the client."""


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
    """Return the client's bytes for `reply`; the exchange is recorded however it ends."""
    return RelayedStream(pool, ex, reply, framing)


class RelayedStream:
    """The response iterable of a relayed stream: ends the key even if never iterated.

    A generator's `finally` runs only once it has started. A response closed unread (a
    HEAD request, whose body the server drops; a client gone before the first write)
    would otherwise keep its key counted in flight for good, and its request unrecorded.
    """

    def __init__(self, pool: Any, ex: Exchange, reply: Reply, framing: Framing) -> None:
        self._pool, self._ex, self._reply = pool, ex, reply
        self._chunks = _relay(pool, ex, reply, framing)
        self._started = False

    def __iter__(self) -> "RelayedStream":
        return self

    def __next__(self) -> bytes:
        self._started = True
        return next(self._chunks)

    def close(self) -> None:
        if not self._started:
            self._started = True
            self._reply.release()
            self._ex.finish(499, self._reply, error_class="client_error",
                            error_message="the response was closed before the stream was read")
        self._chunks.close()


def _relay(pool: Any, ex: Exchange, reply: Reply, framing: Framing) -> Iterator[bytes]:
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
        if isinstance(exc, StreamFailed):
            reason = str(exc)[:500]
        else:  # other exception texts are not for clients
            reason = f"upstream stream broke after {sent} chunks: {type(exc).__name__}"
        if reply.key is not None:
            pool.report(reply.key, ex.model, Outcome(Kind.UPSTREAM, 502, reason))
        # 502, not the 200 already sent: the answer ended in an error, and stats say so
        ex.finish(502, reply, tokens=tail.result(), error_class="upstream_error",
                  error_message=reason)
        yield from framing.broken(reason)
        if framing.abort_on_break:
            raise StreamBroken(reason) from None
        return
    finally:
        reply.release()
    ex.finish(reply.status, reply, tokens=tail.result())
