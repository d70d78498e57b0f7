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
from urllib.parse import urlencode

import requests
from urllib3 import HTTPHeaderDict
from urllib3.util import Timeout

from proxy.outcomes import Kind, Outcome, classify, parse_error_body, transport_failure
from proxy.pool import Cooling, KeyPool, KeyState, NoKeys
from proxy.redact import redact, redact_header, redact_stream
from proxy.settings import Settings
from proxy.transport import Adapter, Answer, Outgoing
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
