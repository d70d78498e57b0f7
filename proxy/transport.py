"""The HTTP transport under the upstream client: one request out, urllib3's response back.

`Adapter.send` is the one entry. It takes an `Outgoing` and hands back an `Answer`, named
as requests' PreparedRequest and Response name their parts, so tools built for requests'
adapters (the `responses` test library) stand in for Google here. Beneath it, urllib3's
pools with the connections this proxy tunes (`HTTPConnection`, `HTTPSConnection`); failures
are raised as the requests exceptions that `outcomes.transport_failure` classifies.
"""
from __future__ import annotations

import select
from typing import Any
from urllib.parse import urlsplit

from requests import exceptions as rq
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3 import BaseHTTPResponse, HTTPConnectionPool
from urllib3 import connection as _urllib3_connection
from urllib3.exceptions import (ClosedPoolError, ConnectTimeoutError, LocationValueError,
                                MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError,
                                ResponseError)
from urllib3.exceptions import InvalidHeader as _InvalidHeader
from urllib3.exceptions import ProxyError as _ProxyError
from urllib3.exceptions import SSLError as _SSLError

from proxy.realthread import real_poll


def _split_origin(url: str) -> tuple[str, str] | None:
    """Split "scheme://host:port/path?query" into origin and request target, or None.

    The target is what requests' `path_url` gives for such a URL; anything unusual (no
    path, a fragment, an empty query) is left to requests.
    """
    start = url.find("//")
    slash = url.find("/", start + 2) if start > 0 else -1
    if slash < 0:
        return None
    origin, target = url[:slash], url[slash:]
    if "#" in target or target.endswith("?") or "?" in origin:
        return None
    return origin, target


class Outgoing:
    """One request as the transport sends it, under the names of requests' PreparedRequest."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes | None):
        self.method, self.url, self.headers, self.body = method, url, headers, body

    @property
    def path_url(self) -> str:
        """The request target, as PreparedRequest says it (tools that match requests read it)."""
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class Answer:
    """What the transport hands back: status, headers and urllib3's response to read.

    It holds them under requests.Response's names (and the request it answers), so tools
    built for requests' adapters (the `responses` test library) can stand in for `send`.
    """

    __slots__ = ("status_code", "headers", "raw", "request", "url")

    def __init__(self, request: Outgoing, raw: BaseHTTPResponse) -> None:
        self.status_code, self.headers, self.raw = raw.status, raw.headers, raw
        self.request, self.url = request, request.url

    def close(self) -> None:
        """Close the body and give the connection back, as requests.Response.close does.

        A body read to its end has already returned its connection to the pool, and this
        does nothing more; one left unread has its connection closed, never reused.
        """
        self.raw.close()
        self.raw.release_conn()


class _Lean:
    """urllib3's connection with two costs of each call cut; what goes on the wire is the same.

    - A request's head and its body leave in one write. urllib3 writes the head, then the
      body: two system calls, and on the far side two wake-ups (or a wait for the second
      segment) for a prompt that fits in one. A body given whole (bytes, with its
      Content-Length among the headers, as `Upstream._send` always sends) is held back
      while urllib3 builds the head, and leaves with it. Anything else goes out as urllib3
      sends it.
    - The pool's check that a kept-alive connection is still open (before each reuse) is
      one poll(2) with no timeout, as urllib3 means it. gevent's poll, which urllib3 finds
      in a patched worker, registers a watcher and goes round the hub to answer it: four
      system calls and a turn of the loop before every call upstream.
    """

    _held: bytes | None = None

    @property
    def is_connected(self) -> bool:
        """Whether the connection is open with nothing unread (urllib3's own test)."""
        sock = self.sock  # type: ignore[attr-defined]
        if sock is None:
            return False
        poller = real_poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)  # readable means closed, or bytes nobody asked for

    def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                **kw: Any) -> None:
        if not (isinstance(body, bytes) and body and headers is not None and not kw.get("chunked")
                and headers.get("Content-Length") == str(len(body))):
            return super().request(method, url, body, headers, **kw)  # type: ignore[misc]
        self._held = body
        try:
            super().request(method, url, None, headers, **kw)  # type: ignore[misc]
        finally:
            self._held = None

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        held, self._held = self._held, None
        if held is None or message_body is not None:
            return super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
        # http.client's own framing (head lines joined, a blank line), then the body
        self._buffer.extend((b"", b""))  # type: ignore[attr-defined]
        head = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
        del self._buffer[:]  # type: ignore[attr-defined]
        self.send(head + held)  # type: ignore[attr-defined]


# urllib3's names: a failure's message (kept in request rows and logs) names the class.
class HTTPConnection(_Lean, _urllib3_connection.HTTPConnection):
    pass


class HTTPSConnection(_Lean, _urllib3_connection.HTTPSConnection):
    pass


_CONNECTIONS = {"http": HTTPConnection, "https": HTTPSConnection}


class Adapter(HTTPAdapter):
    """requests' adapter cut down to what this proxy sends.

    `send` goes straight to urllib3's pool for the origin (taken from the PoolManager once,
    then kept while it is open), with requests' own connection, retry and error rules: no
    proxies or cookies (this proxy never uses them), no retries or redirects by urllib3,
    and urllib3's errors raised as the requests exceptions HTTPAdapter.send would raise.
    Skipped per call: the stock adapter's PreparedRequest and Response (a cookie jar and
    two header dicts each time), its pool lookup (a pool key built and normalised every
    call) and its certificate settings (two file checks over HTTPS), set once on each pool
    instead. Anything unusual (a URL requests must parse, proxies, another verify or cert)
    takes requests' own path.
    The pools it takes use this module's connections (`_Lean`).
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._pools: dict[str, HTTPConnectionPool] = {}

    def send(self, request: Outgoing, stream: bool = True,  # type: ignore[override]
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> Answer:
        split = _split_origin(request.url)
        if split is None or proxies or verify is not True or cert is not None:
            return super().send(_prepared(request), stream, timeout, verify, cert, proxies)
        origin, target = split
        pool = self._pools.get(origin)
        if pool is None or pool.pool is None:  # a closed pool is never used: take anew
            pool = self._pool(origin, request)
        body, headers = request.body, request.headers
        try:
            raw = pool.urlopen(request.method, target, body=body, headers=headers,
                               redirect=False, assert_same_host=False, preload_content=False,
                               decode_content=False, retries=self.max_retries, timeout=timeout,
                               chunked=body is not None and "Content-Length" not in headers)
        except Exception as exc:
            mapped = _as_requests_error(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        return Answer(request, raw)

    def _pool(self, origin: str, request: Outgoing) -> HTTPConnectionPool:
        """Take the origin's pool from the PoolManager, set up as requests would set it."""
        try:
            host_params, pool_kwargs = self.build_connection_pool_key_attributes(
                request, True, None)
        except ValueError as exc:
            raise rq.InvalidURL(exc, request=request) from exc
        try:
            pool = self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        except LocationValueError as exc:
            raise rq.InvalidURL(exc, request=request) from exc
        self.cert_verify(pool, request.url, True, None)  # pins requests' CA bundle on the pool
        pool.ConnectionCls = _CONNECTIONS[pool.scheme]  # type: ignore[assignment]
        if origin in self._pools or len(self._pools) < 64:  # a few: the API, upload sessions
            self._pools[origin] = pool
        return pool

    def build_response(self, req: Any, resp: Any) -> Answer:  # type: ignore[override]
        return Answer(req, resp)


def _prepared(request: Outgoing) -> PreparedRequest:
    """Return `request` as requests' own adapter path takes it."""
    prepared = PreparedRequest()
    prepared.method, prepared.url = request.method, request.url
    prepared.headers = CaseInsensitiveDict(request.headers)
    prepared.body, prepared.hooks = request.body, {"response": []}
    prepared._cookies, prepared.body_position = None, None
    return prepared


def _as_requests_error(exc: Exception, request: Outgoing) -> Exception:
    """Return the exception requests' HTTPAdapter.send raises for urllib3's `exc`.

    The same mapping, case for case, so `transport_failure` names and classifies a
    failure exactly as it did through requests (a connect timeout is a ConnectTimeout,
    504; a refused connection a ConnectionError, 502). Anything else passes unchanged.
    """
    if isinstance(exc, (ProtocolError, OSError)):
        return rq.ConnectionError(exc, request=request)
    if isinstance(exc, MaxRetryError):
        reason = exc.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            return rq.ConnectTimeout(exc, request=request)
        if isinstance(reason, ResponseError):
            return rq.RetryError(exc, request=request)
        if isinstance(reason, _ProxyError):
            return rq.ProxyError(exc, request=request)
        if isinstance(reason, _SSLError):
            return rq.SSLError(exc, request=request)
        return rq.ConnectionError(exc, request=request)
    if isinstance(exc, ClosedPoolError):
        return rq.ConnectionError(exc, request=request)
    if isinstance(exc, _ProxyError):
        return rq.ProxyError(exc)
    if isinstance(exc, _SSLError):
        return rq.SSLError(exc, request=request)
    if isinstance(exc, ReadTimeoutError):
        return rq.ReadTimeout(exc, request=request)
    if isinstance(exc, _InvalidHeader):
        return rq.InvalidHeader(exc, request=request)
    return exc
