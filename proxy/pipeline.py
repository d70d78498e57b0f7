"""The one request pipeline every route runs: authenticate, admit, send, answer, record.

Routes are thin adapters: they read their dialect's request, build a `Call`, and say how
an answer is framed. Everything between (the user's limits, the pool, retries, the
Exchange that becomes the request row, refusals in the client's own error format) happens
here once, for native and OpenAI clients alike.

A step that ends the request early raises `Answered` with the response to send; the app
turns it into that response. Whatever ended a request, its row is recorded exactly once,
refusals included (they never reach Google).
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable

from flask import Response, request

from proxy.auth import presented_key
from proxy.exchange import Exchange, request_recorded
from proxy.http import client_address, gemini_error, json_response, openai_error, state, stream_response
from proxy.outcomes import Kind
from proxy.pool import Refusal, User
from proxy.relay import Framing, relay_stream
from proxy.store.util import mask_key
from proxy.translate.errors import gemini_error_to_openai, rate_limit_body
from proxy.translate.tools import loads_strict
from proxy.upstream import Call, PoolUnavailable, Reply, error_message, retry_after


class Answered(Exception):
    """End the request now with `response` (already recorded)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


# -- dialects: how each API family says no ----------------------------------------------------

class Dialect:
    """How one API family words the pipeline's refusals and relays upstream failures."""

    name: str  # "native" or "openai": the request row's dialect
    unauthorized_message: str

    def error(self, status: int, message: str, **kw: Any) -> Response:
        """Return an error in this family's envelope."""
        raise NotImplementedError

    def unauthorized(self) -> Response:
        return self.error(401, self.unauthorized_message)

    def refused(self, refusal: Refusal) -> Response:
        """The user key's own limits said no."""
        raise NotImplementedError

    def unavailable(self, exc: PoolUnavailable, flight: "Flight") -> Response:
        """No key could take the call: every key resting (429) or none usable (503)."""
        raise NotImplementedError

    def upstream_error(self, reply: Reply, model: str) -> Response:
        """Google's own failure, as this family's clients expect it."""
        raise NotImplementedError


class _Native(Dialect):
    """Google's envelope; Google's own answers relayed as they came."""

    name = "native"
    unauthorized_message = ("Missing or unknown proxy key. Pass your user key in the "
                            "x-goog-api-key header, ?key=, or Authorization: Bearer.")

    def error(self, status: int, message: str, **kw: Any) -> Response:
        return gemini_error(status, message, **kw)

    def refused(self, refusal: Refusal) -> Response:
        return self.error(refusal.status, refusal.message, retry_after=refusal.retry_after)

    def unavailable(self, exc: PoolUnavailable, flight: "Flight") -> Response:
        return self.error(exc.status, exc.message, retry_after=exc.retry_after,
                          framing_array=flight.array)

    def upstream_error(self, reply: Reply, model: str) -> Response:
        resp = Response(reply.body, status=reply.status, headers=reply.headers)
        if reply.status == 429 and "Retry-After" not in resp.headers:
            resp.headers["Retry-After"] = str(math.ceil(retry_after(state().pool, model, reply)))
        return resp


class _OpenAI(Dialect):
    """OpenAI's envelope, codes and rate-limit wording."""

    name = "openai"
    unauthorized_message = ("Missing or unknown proxy key. Pass your user key as "
                            "Authorization: Bearer <key>.")

    def error(self, status: int, message: str, **kw: Any) -> Response:
        return openai_error(status, message, **kw)

    def unauthorized(self) -> Response:
        return self.error(401, self.unauthorized_message, code="invalid_api_key")

    def refused(self, refusal: Refusal) -> Response:
        if refusal.status == 429:
            return json_response(429, rate_limit_body(refusal.message, spent=refusal.spent),
                                 refusal.retry_after)
        return self.error(refusal.status, refusal.message, code="model_not_allowed",
                          param="model")

    def unavailable(self, exc: PoolUnavailable, flight: "Flight") -> Response:
        if exc.status == 429:
            message = (f"All Google keys are resting ({exc.message}); retry after "
                       f"{math.ceil(exc.retry_after or 1)} s.")
            return json_response(429, rate_limit_body(message, spent=_day_spent(flight.model)),
                                 exc.retry_after)
        return self.error(503, exc.message, type="server_error", code="no_usable_key")

    def upstream_error(self, reply: Reply, model: str) -> Response:
        wait = retry_after(state().pool, model, reply) if reply.status == 429 else None
        try:
            parsed = loads_strict(reply.body or b"null")
        except ValueError:
            parsed = None
        # The pool's clamped wait, in the message too: RetryInfo itself may be absurd.
        ceiling = math.ceil(wait) if wait is not None else None
        spent = reply.outcome is not None and reply.outcome.kind is Kind.RATE_DAY
        status, body = gemini_error_to_openai(reply.status, parsed, retry_after=ceiling,
                                              spent=spent if reply.status == 429 else None)
        return json_response(status, body, ceiling if status == 429 else None)


NATIVE: Dialect = _Native()
OPENAI: Dialect = _OpenAI()


_OPENAI_PATHS = ("/openai/", "/v1/chat/", "/v1/embeddings", "/v1/responses")


def dialect_for(path: str) -> Dialect:
    """Return the dialect a path speaks (for answers given before any route ran)."""
    return OPENAI if path.startswith(_OPENAI_PATHS) else NATIVE


def _day_spent(model: str) -> bool:
    """Tell whether every key resting for `model` rests because its day's quota is spent."""
    now = time.time()
    reasons = [reason for (_, m), (until, reason, _) in state().pool.cool.items()
               if m == model and until > now]
    return bool(reasons) and all(r == Kind.RATE_DAY.value for r in reasons)


# -- refusals before anything goes upstream ---------------------------------------------------

def refuse(dialect: Dialect, response: Response, *, error_class: str, message: str,
           user: User | None = None, model: str = "") -> Response:
    """Record a request answered without any upstream work, and return its answer.

    The row keeps who knocked: the client's address and the masked key it presented. A
    request whose row an Exchange already holds (it failed mid-way) is not recorded twice.
    """
    if request_recorded():
        return response
    presented = presented_key(request.headers, request.args)
    ex = Exchange(state(), user=user, dialect=dialect.name, method=request.method,
                  path=request.path, model=model, client=client_address(),
                  presented=mask_key(presented) if presented and user is None else None)
    ex.finish(response.status_code, None, error_class=error_class, error_message=message[:500])
    return response


def reject(dialect: Dialect, status: int, message: str, *, error_class: str = "bad_request",
           user: User | None = None, model: str = "", **kw: Any) -> Answered:
    """Return the Answered to raise for a request refused in `dialect`'s words (recorded)."""
    return Answered(refuse(dialect, dialect.error(status, message, **kw),
                           error_class=error_class, message=message, user=user, model=model))


def authenticate(dialect: Dialect) -> User:
    """Return the user whose key the request presents; refuse (401, recorded) otherwise."""
    user = state().pool.authenticate(presented_key(request.headers, request.args))
    if user is None:
        raise Answered(refuse(dialect, dialect.unauthorized(), error_class="unauthorized",
                              message="missing or unknown user key"))
    return user


# -- one admitted request on its way upstream -------------------------------------------------

class Flight:
    """One admitted request: its Exchange (the row to be), its calls upstream, its answer.

    Use as a context manager: an unexpected exception inside records the request as the
    proxy's own failure (the app then answers 500 in the client's format).
    """

    def __init__(self, dialect: Dialect, user: User, *, model: str, stream: bool = False,
                 path: str | None = None, named: Iterable[str] = (), array: bool = False) -> None:
        self.state = st = state()  # the worker's state, looked up once for the request
        self.dialect, self.model, self.array = dialect, model, array
        self.pool, self.upstream = st.pool, st.upstream
        self.ex = Exchange(st, user=user, dialect=dialect.name, method=request.method,
                           path=path or request.path, model=model, stream=stream,
                           client=client_address())
        refusal = st.pool.admit(user, model, list(named))
        if refusal is not None:
            self.ex.finish(refusal.status, None, error_class="user_limit",
                           error_message=refusal.message)
            raise Answered(dialect.refused(refusal))

    def __enter__(self) -> "Flight":
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self.ex.__exit__(kind, exc, tb)

    def send(self, call: Call) -> Reply:
        """Send `call` through the pool; a failure no key could fix ends the request."""
        try:
            reply = self.upstream.open(call)
        except PoolUnavailable as exc:
            self.ex.finish(exc.status, None, error_class="rejected", error_message=exc.message)
            raise Answered(self.dialect.unavailable(exc, self)) from None
        if reply.status >= 400:
            self.ex.finish(reply.status, reply, error_message=error_message(reply))
            raise Answered(self.dialect.upstream_error(reply, self.model))
        return reply

    def relay(self, reply: Reply, framing: Framing, status: int,
              headers: list[tuple[str, str]]) -> Response:
        """Answer with the reply's stream, framed for the client; recorded when it ends."""
        return stream_response(relay_stream(self.pool, self.ex, reply, framing), status, headers)

    def answer(self, response: Response, reply: Reply | None,
               tokens: tuple[int, int] | None = None) -> Response:
        """Answer with `response` and record the request as served by `reply`."""
        self.ex.finish(response.status_code if reply is None else reply.status, reply,
                       tokens=tokens)
        return response

    def failed(self, reply: Reply | None, message: str) -> Answered:
        """Return the Answered for an upstream answer that could not be used (502)."""
        self.ex.finish(502, reply, error_class="upstream_error", error_message=message)
        return Answered(self.dialect.error(502, f"The upstream answer could not be used: {message}"))
