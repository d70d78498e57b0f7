"""ServingGuard: the WSGI layer in front of the app that bounds request bodies and names requests.

gunicorn hands the app a body stream that trusts the client. A chunked body over the size
limit is cut silently where werkzeug stops reading, a body shorter than its Content-Length
ends quietly when the client half-closes, a malformed chunk raises gunicorn's own parse
error (a 500), and a body that never finishes is waited for as long as the connection lives.
The guard puts a BodyReader in its place. Reading it refuses those bodies with werkzeug's
HTTP errors, which the app answers in the client's own dialect before anything goes
upstream; it gives the body a deadline; and it charges the body's bytes to the worker's
BodyBudget until the answer is sent, which bounds the memory request bodies take.

The guard also starts serving every request under a new id (proxy.exchange.serve_request):
the Exchange uses it for its row and log line, and every answer carries it as X-Request-Id.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable

import gevent
from gevent.event import Event
from gunicorn.http.body import LengthReader
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import (BadRequest, HTTPException, RequestEntityTooLarge,
                                 RequestTimeout, ServiceUnavailable)

from proxy.exchange import serve_request
from proxy.http import GUARDED_BODY
from proxy.settings import Settings

# Seconds a body waits for room in the budget before it is refused with 503: long enough to
# ride out a burst of large bodies, short enough that a client is told to come back instead
# of hanging.
ROOM_WAIT = 5.0
READ_STEP = 1 << 16  # what a chunked body reserves per read when the app asks for no size

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BodyBudget:
    """The bytes of request bodies one worker holds at once.

    A body is let in while the total stays within `limit`, or when it is the only body held
    (so any body the size limit allows can pass): the total never exceeds
    max(limit, MAX_REQUEST_BODY_MB). Workers are single-threaded (gevent), so no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiting = 0  # bodies waiting for room
        self._freed = Event()

    def take(self, n: int, held: int, deadline: float) -> bool:
        """Reserve `n` more bytes for a body holding `held`; False if no room by `deadline`."""
        while self.used + n > self.limit and self.used > held:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.waiting += 1
            try:
                self._freed.wait(remaining)
            finally:
                self.waiting -= 1
        self.used += n
        return True

    def give(self, n: int) -> None:
        """Return `n` bytes and wake the bodies waiting for room (a new Event only then)."""
        if n <= 0:
            return
        self.used -= n
        if self.waiting:
            freed, self._freed = self._freed, Event()
            freed.set()


class BodyReader:
    """A request body that is read within a deadline, a size limit and the worker's budget.

    Failures raise werkzeug HTTP errors (400, 408, 413, 503). After one, the connection must
    not carry another request (where the next one starts is unknown), so the server's body
    is marked failed, the flag gunicorn's parser checks before reusing a connection.
    """

    def __init__(self, inner: Any, length: int | None, settings: Settings, budget: BodyBudget,
                 started: float) -> None:
        self.inner = inner
        self.length = length  # None: chunked
        self.limit = settings.max_body_bytes
        self.timeout = settings.body_timeout
        self.deadline = started + settings.body_timeout
        self.budget = budget
        self.received = 0
        self.held = 0
        self.done = False
        self.here = False  # the whole rest of the body is in memory: reads cannot wait

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            if self.length is not None:  # all that is left: usually one read
                parts = []
                while not self.done:
                    parts.append(self.read(self.length - self.received))
                return b"".join(parts)
            return b"".join(iter(lambda: self.read(READ_STEP), b""))
        if self.done or size == 0:
            return b""
        if self.length is not None:
            if self.length > self.limit:
                raise self._fail(RequestEntityTooLarge())
            if not self.held:
                self._reserve(self.length)
            data = self._recv(min(size, self.length - self.received))
            self.received += len(data)
            if len(data) == 0:
                raise self._fail(BadRequest(
                    f"The request body ended after {self.received} of the {self.length} bytes its "
                    "Content-Length announced; send the whole body, or a matching Content-Length."))
            self.done = self.received >= self.length
            return data
        self._reserve(size)
        data = self._recv(size)
        self.budget.give(size - len(data))
        self.held -= size - len(data)
        self.received += len(data)
        if not data:
            self.done = True
        elif self.received > self.limit:
            raise self._fail(RequestEntityTooLarge())
        elif self.received == self.limit:
            # werkzeug stops asking at the limit: look one byte further, so that a longer
            # body is refused instead of being cut here and forwarded
            if self._recv(1):
                raise self._fail(RequestEntityTooLarge())
            self.done = True
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """Read up to a newline (WSGI asks for it; the proxy itself reads whole bodies)."""
        line = bytearray()
        while size is None or size < 0 or len(line) < size:
            byte = self.read(1)
            if not byte:
                break
            line += byte
            if byte == b"\n":
                break
        return bytes(line)

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def release(self) -> None:
        """Give the body's bytes back to the budget (the answer is sent, or the read failed)."""
        self.budget.give(self.held)
        self.held = 0

    def _reserve(self, n: int) -> None:
        if not self.budget.take(n, self.held, min(self.deadline, time.monotonic() + ROOM_WAIT)):
            raise self._fail(ServiceUnavailable(
                "The proxy is holding as many request bodies in memory as it may "
                "(MAX_BUFFERED_BODY_MB); retry in a few seconds.", retry_after=math.ceil(ROOM_WAIT)))
        self.held += n

    def _recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        timer = None
        try:
            if self.here or _arrived(self.inner):
                self.here = True
                return self.inner.read(size)  # no timer: nothing to wait for
            with gevent.Timeout(remaining) as timer:
                return self.inner.read(size)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise self._timed_out() from None
        except ParseException as exc:
            raise self._fail(BadRequest(
                f"The chunked request body is malformed ({str(exc)[:200]}); send valid chunked "
                "encoding, or the body with a Content-Length.")) from None
        except NoMoreData:
            raise self._fail(BadRequest(
                "The chunked request body ended before its last (zero-size) chunk; send the "
                "whole body.")) from None
        except OSError as exc:
            raise self._fail(BadRequest(
                f"The connection failed while the request body was arriving ({exc}); send the "
                "request again.")) from None

    def _timed_out(self) -> HTTPException:
        return self._fail(RequestTimeout(
            f"The request body did not arrive in full within {self.timeout:g} s "
            "(BODY_TIMEOUT_SECONDS); send it without pauses, or send less."))

    def _fail(self, exc: HTTPException) -> HTTPException:
        self.done = True
        self.release()
        if hasattr(self.inner, "failed"):
            self.inner.failed = True
        return exc


def _arrived(inner: Any) -> bool:
    """Whether the rest of gunicorn's request body is already read off the socket (a small
    body usually comes in the same read as its head), so that reading it cannot wait."""
    reader = getattr(inner, "reader", None)
    return type(reader) is LengthReader and reader.length <= reader.unreader.buf.getbuffer().nbytes


class Released:
    """The app's answer, with the body's budget given back once the server closes it."""

    __slots__ = ("answer", "release")

    def __init__(self, answer: Iterable[bytes], release: Callable[[], None]) -> None:
        self.answer = answer
        self.release = release

    def __iter__(self) -> Any:
        return iter(self.answer)

    def close(self) -> None:
        try:
            close = getattr(self.answer, "close", None)
            if close is not None:
                close()
        finally:
            self.release()


def _body_length(environ: dict[str, Any]) -> int | None:
    """Return the body's Content-Length, None for a chunked body, 0 when there is no body."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0  # gunicorn refuses these before the app; werkzeug reads nothing


class ServingGuard:
    """Wrap a WSGI app: guard its request bodies and give every answer an X-Request-Id."""

    def __init__(self, app: WSGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.budget = BodyBudget(settings.max_buffered_body_bytes)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        started = time.monotonic()
        request_id = serve_request()
        body = None
        length = _body_length(environ)
        if length != 0:
            body = BodyReader(environ["wsgi.input"], length, self.settings, self.budget, started)
            environ["wsgi.input"] = environ[GUARDED_BODY] = body

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
            headers.append(("X-Request-Id", request_id))
            return start_response(status, headers, exc_info)

        try:
            answer = self.app(environ, start)
        except BaseException:
            if body is not None:
                body.release()
            raise
        if body is None:
            return answer
        # the body's bytes stay charged until the answer is sent: a stream's upstream
        # request (and so the body) lives as long as the stream
        return Released(answer, body.release)
