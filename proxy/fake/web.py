"""Minimal WSGI plumbing for the fake: requests, responses and the errors handlers raise."""
from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl

from gevent import sleep as gsleep

from proxy.fake.google_errors import Error

JSON_TYPE = "application/json; charset=UTF-8"
_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


class Abort(Exception):
    """Raised inside a response body to drop the connection without a clean end."""


class Fail(Exception):
    """Raised by a handler to answer with a Google error `(status, body)`."""

    def __init__(self, error: Error, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(error[1]["error"]["message"] if isinstance(error[1], dict) else "")
        self.error = error
        self.headers = headers or []


class Request:
    """One incoming request: method, path, query, raw body, lazily parsed JSON."""

    __slots__ = ("environ", "method", "path", "query", "body", "key", "wrap_errors",
                 "_json", "_json_error")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ["REQUEST_METHOD"]
        self.path: str = environ.get("PATH_INFO") or "/"
        qs = environ.get("QUERY_STRING", "")
        self.query: dict[str, str] = dict(parse_qsl(qs, keep_blank_values=True)) if qs else {}
        self.body = b""
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            stream = environ.get("wsgi.input")
            if stream is not None:
                self.body = stream.read()
        self.key: str | None = None
        # The JSON-array stream framing (no alt=sse) and Google's OpenAI layer wrap errors in [].
        self.wrap_errors = False
        self._json: Any = None
        self._json_error: str | None = None
        if self.body:
            try:
                self._json = json.loads(self.body)
            except ValueError:
                snippet = self.body[:60].decode("utf-8", "replace")
                self._json_error = ("Invalid JSON payload received. Unexpected token.\n"
                                    f"{snippet}\n^")

    def header(self, name: str, default: str = "") -> str:
        """Return a request header by its HTTP name (case-insensitive)."""
        upper = name.upper().replace("-", "_")
        if upper in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return self.environ.get(upper, default)
        return self.environ.get("HTTP_" + upper, default)

    def headers(self) -> dict[str, str]:
        """Return all headers with lower-cased names."""
        out = {}
        for name, value in self.environ.items():
            if name.startswith("HTTP_"):
                out[name[5:].replace("_", "-").lower()] = value
            elif name in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                out[name.replace("_", "-").lower()] = value
        return out

    @property
    def json(self) -> Any:
        """Return the parsed body (None when empty or not JSON)."""
        return self._json

    def json_body(self, *, empty: Any = None) -> Any:
        """Return the parsed body or raise Google's invalid-JSON 400; `empty` stands for no body."""
        if self._json_error:
            raise Fail((400, {"error": {"code": 400, "message": self._json_error,
                                        "status": "INVALID_ARGUMENT"}}))
        return empty if not self.body else self._json

    @property
    def base_url(self) -> str:
        """Return scheme://host of this server as the client addressed it."""
        env = self.environ
        host = env.get("HTTP_HOST") or f"{env.get('SERVER_NAME', '127.0.0.1')}:{env.get('SERVER_PORT', '80')}"
        return f"{env.get('wsgi.url_scheme', 'http')}://{host}"


class Response:
    """Status, headers and a body that is bytes or an iterator of bytes (streamed)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[str, str]],
                 body: bytes | Iterable[bytes]) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __call__(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = self.headers
        if isinstance(self.body, bytes):
            headers = headers + [("Content-Length", str(len(self.body)))]
            start_response(_STATUS_LINES.get(self.status, f"{self.status} Unknown"), headers)
            return [self.body]
        start_response(_STATUS_LINES.get(self.status, f"{self.status} Unknown"), headers)
        return self.body


def json_response(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    """Return a compact JSON response."""
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, [("Content-Type", JSON_TYPE), *(headers or [])], data)


def error_response(req: Request | None, error: Error,
                   headers: list[tuple[str, str]] | None = None) -> Response:
    """Return a Google error, array-wrapped where the request's framing wants it."""
    status, body = error
    if req is not None and req.wrap_errors:
        return json_response(status, [body], headers)
    return json_response(status, body, headers)


def page(items: list[Any], req: Request, default: int, maximum: int) -> tuple[list[Any], str | None]:
    """Cut one page out of `items` per pageSize/pageToken (the token is the next offset)."""
    try:
        size = int(req.query.get("pageSize") or default)
        start = int(req.query.get("pageToken") or 0)
    except ValueError:
        raise Fail((400, {"error": {"code": 400, "message": "Invalid page token or page size.",
                                    "status": "INVALID_ARGUMENT"}})) from None
    size = default if size <= 0 else min(size, maximum)
    start = max(0, start)
    return items[start:start + size], (str(start + size) if start + size < len(items) else None)


def paced(pieces: list[bytes], delay: float, reset_after: int | None,
          tail: bytes = b"", piece_bytes: int | None = None) -> Iterator[bytes]:
    """Yield stream pieces `delay` seconds apart, then `tail`.

    With `reset_after` set, drop the connection after that many pieces instead of ending
    cleanly (the client must see a broken body, never a complete one). With `piece_bytes`
    set, each piece goes out in writes of at most that many bytes (one HTTP chunk each),
    so events straddle chunk boundaries as they can behind real networks.
    """
    for i, piece in enumerate(pieces):
        if i and delay:
            gsleep(delay)
        if reset_after is not None and i >= reset_after:
            raise Abort()
        yield from _sliced(piece, piece_bytes)
    if reset_after is not None:
        raise Abort()
    if tail:
        yield from _sliced(tail, piece_bytes)


def _sliced(data: bytes, size: int | None) -> Iterator[bytes]:
    if not size:
        yield data
        return
    for at in range(0, len(data), size):
        yield data[at:at + size]


def partial(data: bytes) -> Iterator[bytes]:
    """Yield half of `data`, then drop the connection (a body cut short)."""
    yield data[: max(1, len(data) // 2)]
    raise Abort()
