"""Send a call upstream through the pool: choose a key, send, classify, retry elsewhere.

Retries happen only before the first byte reaches the client: a non-stream answer is read
whole before anything is returned, and a stream's first chunk is read here, before the
route commits to a status line. After that the stream is relayed as it arrives, and a
failure ends it; it is never restarted on another key (that would duplicate text).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests import exceptions as rq
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, HTTPHeaderDict
from urllib3 import connection as _urllib3_connection
from urllib3.exceptions import (ClosedPoolError, ConnectTimeoutError, LocationValueError,
                                MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError,
                                ResponseError)
from urllib3.exceptions import InvalidHeader as _InvalidHeader
from urllib3.exceptions import ProxyError as _ProxyError
from urllib3.exceptions import SSLError as _SSLError
from urllib3.util import Timeout

from proxy.outcomes import Kind, Outcome, classify, parse_error_body, transport_failure
from proxy.pool import Cooling, KeyPool, KeyState, NoKeys
from proxy.redact import redact, redact_header, redact_stream
from proxy.settings import Settings
from proxy.translate.errors import gemini_error_body
from proxy.translate.tools import loads_strict

log = logging.getLogger("proxy.upstream")

# Request headers that belong to this hop, or carry the client's own credentials.
DROP_REQUEST_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    "authorization", "x-goog-api-key", "x-api-key", "cookie", "accept-encoding",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
    "x-forwarded-server", "x-real-ip", "forwarded", "via", "origin", "referer",
})
DROP_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "content-length",
    "content-encoding", "server", "alt-svc", "set-cookie", "date",
})
# Set by `Upstream._send` on every call, whatever the caller's headers hold.
_SET_HERE = frozenset({"authorization", "x-goog-api-key", "accept-encoding", "content-length"})
ERROR_BODY_LIMIT = 1 << 20
POOL_MAXSIZE = 128


class PoolUnavailable(Exception):
    """No key can take the call; `status` is 429 (all resting) or 503 (none usable)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


@dataclass
class Call:
    """One client request as it will go upstream (the client's credentials already removed)."""

    method: str
    path: str  # e.g. /v1beta/models/gemini-2.5-flash:generateContent
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes | None
    model: str = ""
    stream: bool = False
    pinned: int | None = None
    bearer: bool = False  # Google's OpenAI layer takes the key as a Bearer token
    url: str | None = None  # absolute URL (resumable upload sessions); overrides path
    # For callers that parse the answer: a 2xx non-stream body must be a JSON object without
    # an "error" member and (if any are named) with one of these members. Anything else is
    # Google misbehaving: upstream trouble, retried on another key, never relayed as success.
    expect_json: tuple[str, ...] | None = None


@dataclass
class Attempt:
    """What one try on one key came to (kept in the request row for the console)."""

    key_id: int
    key: str
    status: int
    outcome: str
    reason: str
    ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "key": self.key, "status": self.status,
                "outcome": self.outcome, "reason": self.reason, "ms": self.ms}


class Lease:
    """A key's turn on one attempt: begun when the call goes out, ended exactly once.

    The one owner of `pool.end`: a plain reply's lease ends as soon as its body is read,
    a stream's when the relay finishes with it, however either ends.
    """

    __slots__ = ("_pool", "_key", "_ended")

    def __init__(self, pool: KeyPool, key: KeyState, model: str) -> None:
        self._pool, self._key, self._ended = pool, key, False
        pool.begin(key, model)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._pool.end(self._key)


@dataclass
class Reply:
    """The answer to relay: status, headers and either a body or a chunk iterator."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None
    chunks: Iterator[bytes] | None = None
    key: KeyState | None = None
    outcome: Outcome | None = None
    attempts: list[Attempt] = field(default_factory=list)
    ttfb: float | None = None  # seconds from start to the first upstream byte
    response: Answer | None = None  # an open stream's upstream answer
    data: Any = None  # the parsed body, when the call set expect_json and it passed
    lease: Lease | None = None

    def close(self) -> None:
        if self.response is not None:
            self.response.close()

    def release(self) -> None:
        """Close the upstream response and give the key back (idempotent)."""
        self.close()
        if self.lease is not None:
            self.lease.end()


def filter_request_headers(headers: Any) -> dict[str, str]:
    """Keep the client's headers that Google should see; drop credentials and hop-by-hop.

    Headers the client names in `Connection` are hop-by-hop too (RFC 9110, 7.6.1).
    """
    drop = DROP_REQUEST_HEADERS
    named = headers.get("Connection")
    if named:
        drop = drop | {h.strip().lower() for h in named.split(",")}
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def _reply_headers(headers: HTTPHeaderDict, key: str) -> list[tuple[str, str]]:
    """Return the headers to relay, repeated ones joined, `key` and key shapes masked.

    One `redact` over all values tells whether any needs masking (it hands back the very
    object when nothing does), so the usual answer costs one search, not one per header.
    """
    kept = [(k, v) for k, v in headers.itermerged() if k.lower() not in DROP_RESPONSE_HEADERS]
    joined = "\n".join(v for _, v in kept)
    if redact(joined, (key,)) is joined:
        return kept
    return [(k, redact_header(v, (key,))) for k, v in kept]


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


class _OneWrite:
    """A connection that sends a request's head and its body in one write.

    urllib3 writes the head, then the body: two system calls, and on the far side two
    wake-ups (or a wait for the second segment) for a prompt that fits in one. A body
    given whole (bytes, with its Content-Length among the headers, as `Upstream._send`
    always sends) is held back while urllib3 builds the head, and leaves with it.
    Anything else goes out as urllib3 sends it.
    """

    _held: bytes | None = None

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
class HTTPConnection(_OneWrite, _urllib3_connection.HTTPConnection):
    pass


class HTTPSConnection(_OneWrite, _urllib3_connection.HTTPSConnection):
    pass


_ONE_WRITE = {"http": HTTPConnection, "https": HTTPSConnection}


class Adapter(HTTPAdapter):
    """requests' adapter cut down to what this proxy sends: `send` is the one transport entry.

    It takes an `Outgoing` and hands back an `Answer`, going straight to urllib3's pool for
    the origin (taken from the PoolManager once, then kept while it is open), with
    requests' own connection, retry and error rules: no proxies or cookies (this proxy
    never uses them), no retries or redirects by urllib3, and urllib3's errors raised as
    the requests exceptions HTTPAdapter.send would raise. Skipped per call: the stock
    adapter's PreparedRequest and Response (a cookie jar and two header dicts each time),
    its pool lookup (a pool key built and normalised every call) and its certificate
    settings (two file checks over HTTPS), set once on each pool instead. Anything unusual
    (a URL requests must parse, proxies, another verify or cert) takes requests' own path.
    Its pools' connections send a request's head and body in one write (`_OneWrite`).
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
        pool.ConnectionCls = _ONE_WRITE[pool.scheme]  # type: ignore[assignment]
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


class Upstream:
    """The pooled HTTP client and the retry loop."""

    def __init__(self, settings: Settings, pool: KeyPool):
        self.settings = settings
        self.pool = pool
        # Idle connections kept per host: enough for steady load; bursts beyond it open
        # extra connections that are closed after use, so memory stays flat. The adapter
        # never reads the environment, so a stray HTTP_PROXY cannot reroute Gemini traffic.
        self.adapter = Adapter(pool_connections=8, pool_maxsize=POOL_MAXSIZE, max_retries=0)
        self.timeout = Timeout(connect=settings.connect_timeout, read=settings.read_timeout)

    def _choose(self, call: Call, tried: set[int], started: float) -> KeyState:
        """Pick a key, waiting briefly when every key rests but one returns soon."""
        while True:
            choice = self.pool.choose(call.model, tried, call.pinned)
            if isinstance(choice, KeyState):
                return choice
            if isinstance(choice, NoKeys):
                raise PoolUnavailable(503, choice.reason)
            waited = time.monotonic() - started
            if choice.retry_after + waited <= self.settings.cooling_wait:
                time.sleep(max(choice.retry_after, 0.01))  # cooperative under gevent
                continue
            raise PoolUnavailable(429, choice.reason, choice.retry_after)

    def _send(self, call: Call, key: KeyState) -> Answer:
        """Send `call` on `key` through the adapter, the headers a plain dict built here.

        The credentials and the framing headers are this hop's to set: a caller's own
        (in any spelling) never go out beside them.
        """
        headers = {k: v for k, v in call.headers.items() if k.lower() not in _SET_HERE}
        if call.bearer:
            headers["Authorization"] = f"Bearer {key.value}"
        else:
            headers["x-goog-api-key"] = key.value
        headers["Accept-Encoding"] = "identity"
        if call.body is not None or call.method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(call.body or b""))
        url = call.url or self.settings.upstream_url + call.path
        if call.params:
            url += ("&" if "?" in url else "?") + urlencode(call.params)
        return self.adapter.send(Outgoing(call.method, url, headers, call.body),
                                 timeout=self.timeout)

    def open(self, call: Call) -> Reply:
        """Send `call`, retrying on other keys until an answer can be relayed.

        Raises PoolUnavailable when no key can take it. Otherwise the Reply is either a
        success (body read, or stream with its first chunk in hand) or an error that no
        other key would fix (the client's own mistake, or the last of the attempts).
        """
        started = time.monotonic()
        tried: set[int] = set()
        attempts: list[Attempt] = []
        limit = self.settings.max_attempts if call.pinned is None else 1
        last: Reply | None = None
        while len(attempts) < limit:
            try:
                key = self._choose(call, tried, started)
            except PoolUnavailable:
                if last is not None:  # show the last real upstream answer, not our refusal
                    break
                raise
            tried.add(key.id)
            t0 = time.monotonic()
            reply = self._try(call, key, started)
            attempts.append(Attempt(key.id, key.masked, reply.status, reply.outcome.kind.value,
                                    reply.outcome.reason, round((time.monotonic() - t0) * 1000, 1)))
            reply.attempts = attempts
            if reply.outcome.kind is Kind.OK or not reply.outcome.retryable:
                return reply
            last = reply
        assert last is not None
        return last

    def _try(self, call: Call, key: KeyState, started: float) -> Reply:
        """Run one attempt on `key` and report its outcome; the key is busy meanwhile.

        Every begin has its end, whatever raises. Only an open stream handed back to the
        caller keeps the key busy: relay_stream ends it when the stream ends.
        """
        lease = Lease(self.pool, key, call.model)
        reply: Reply | None = None
        handed_over = False
        try:
            reply = self._attempt(call, key, started)
            reply.lease = lease
            if call.expect_json is not None and reply.chunks is None and reply.status < 300:
                reply = _checked(reply, call.expect_json)
            self.pool.report(key, call.model, reply.outcome)
            handed_over = reply.chunks is not None
            return reply
        finally:
            if not handed_over:
                if reply is not None:
                    reply.close()
                lease.end()

    def _attempt(self, call: Call, key: KeyState, started: float) -> Reply:
        """Send `call` on `key` and take in the answer, every Google key in it masked.

        Google can only echo the key this attempt sent, so success bodies and stream
        chunks (the hot path) are checked for that value and the `AIza…` shape alone;
        errors (rare) are checked for every key in the pool.
        """
        mine = (key.value,)
        try:
            resp = self._send(call, key)
        except requests.RequestException as exc:
            outcome = self._failed(exc)
            body = json.dumps(_gateway_error(outcome)).encode()
            return Reply(outcome.status, [("Content-Type", "application/json")], body, key=key,
                         outcome=outcome)
        headers = _reply_headers(resp.headers, key.value)
        if resp.status_code >= 400:
            try:
                body = resp.raw.read(ERROR_BODY_LIMIT, decode_content=True) or b""
            except Exception as exc:  # the error body itself broke off
                body = b""
                log.debug("error body unreadable: %s", redact(str(exc), self._pool_values()))
            finally:
                resp.close()
            body = redact(body, self._pool_values())
            outcome = classify(resp.status_code, body, now=time.time())
            return Reply(resp.status_code, headers, body, key=key, outcome=outcome,
                         ttfb=time.monotonic() - started)
        try:
            if call.stream:
                chunks = redact_stream(resp.raw.stream(None, decode_content=True), mine)
                first = next(chunks, b"")
                ttfb = time.monotonic() - started
                return Reply(resp.status_code, headers, chunks=_prepend(first, chunks),
                             key=key, outcome=_ok(resp.status_code), ttfb=ttfb,
                             response=resp)
            ttfb = time.monotonic() - started
            body = redact(resp.raw.read(decode_content=True) or b"", mine)
            resp.close()
            return Reply(resp.status_code, headers, body, key=key,
                         outcome=_ok(resp.status_code), ttfb=ttfb)
        except Exception as exc:  # broke before a byte went to the client: retryable
            resp.close()
            outcome = self._failed(exc)
            body = json.dumps(_gateway_error(outcome)).encode()
            return Reply(outcome.status, [("Content-Type", "application/json")], body, key=key,
                         outcome=outcome)

    def _pool_values(self) -> tuple[str, ...]:
        return tuple(k.value for k in self.pool.keys.values())

    def _failed(self, exc: BaseException) -> Outcome:
        """Classify a transport failure; its message (a URL, say) may name a key."""
        outcome = transport_failure(exc)
        return Outcome(outcome.kind, outcome.status, redact(outcome.reason, self._pool_values()),
                       outcome.cool_until)


def _checked(reply: Reply, members: tuple[str, ...]) -> Reply:
    """Return `reply` with its parsed body, or a 502 when Google's 2xx answer is no answer."""
    try:
        data = loads_strict(reply.body or b"")
    except ValueError:
        problem: str | None = f"a body that is not JSON ({len(reply.body or b'')} bytes)"
    else:
        problem = _not_an_answer(data, members)
    if problem is None:
        reply.data = data
        return reply
    reason = f"Google answered {reply.status} with {problem}"
    body = json.dumps(gemini_error_body(502, reason)).encode()
    return Reply(502, [("Content-Type", "application/json")], body, key=reply.key,
                 outcome=Outcome(Kind.UPSTREAM, 502, reason), ttfb=reply.ttfb)


def _not_an_answer(data: Any, members: tuple[str, ...]) -> str | None:
    """Say why a parsed 2xx body is not the answer asked for (None when it is)."""
    err = parse_error_body(data)  # also finds an array-wrapped error
    if err or (isinstance(data, dict) and "error" in data):
        return f"an error in place of an answer: {str(err.get('message') or '(no message)')[:300]}"
    if not isinstance(data, dict):
        return "JSON that is not an object"
    if members and not any(m in data for m in members):
        return f"an object holding none of {', '.join(members)}"
    return None


_OK: dict[int, Outcome] = {}


def _ok(status: int) -> Outcome:
    """Return the success outcome for `status`; one per status, shared (Outcome is frozen)."""
    outcome = _OK.get(status)
    if outcome is None:
        outcome = _OK[status] = Outcome(Kind.OK, status)
    return outcome


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _gateway_error(outcome: Outcome) -> dict[str, Any]:
    return gemini_error_body(outcome.status, f"upstream unreachable: {outcome.reason}")


def error_message(reply: Reply) -> str:
    """Return the upstream error message of a failed reply, for logs and the request row."""
    err = parse_error_body(reply.body)
    return str(err.get("message") or (reply.outcome.reason if reply.outcome else ""))[:500]


def retry_after(pool: KeyPool, model: str, reply: Reply) -> float:
    """Seconds until the pool can try `model` again, for a 429 relayed from upstream.

    Google sends no Retry-After header, only RetryInfo in the body; clients (the openai
    SDK among them) read the header.
    """
    choice = pool.choose(model)
    if isinstance(choice, Cooling):
        return choice.retry_after
    if reply.outcome is not None and reply.outcome.cool_until:
        return max(1.0, reply.outcome.cool_until - time.time())
    return 1.0
