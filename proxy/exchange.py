"""Exchange: one client request from arrival to its request row, stats, metrics and log line."""
from __future__ import annotations

import json
import logging
import os
import random
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from proxy import memory
from proxy.store.schema import OUTCOMES
from proxy.redact import redact

if TYPE_CHECKING:  # kept light: the gunicorn master imports this before gevent patches ssl
    from proxy.pool import KeyPool, User
    from proxy.upstream import Reply

log = logging.getLogger("proxy.request")

def new_request_id() -> str:
    """Return a fresh id: 24 hex digits, the time in ms, then 48 random bits.

    Unique across workers and hosts (two ids share a millisecond and 48 random bits about
    once in 10^14 pairs), cheaper than uuid4, and increasing: each new row lands at the end
    of the requests table's unique index instead of at a random page of it, which on a
    table of a few hundred thousand rows halves the writer's time per row. The random bits
    come from `random`, reseeded from the OS in every forked worker: an id is no secret, and
    this costs no system call.
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(48):012x}"


_COUNTERS = frozenset(OUTCOMES)  # the stats_minute counters an error class can land in


class Counters:
    """Requests in flight and served by this process (streams count until their last byte)."""

    inflight = 0
    served = 0
    peak = 0  # most in flight at once since memory was last released
    stopping = False  # set once the worker was told to stop: it drains, then exits


class Serving:
    """The request a greenlet serves: its id, and how far its Exchange has come."""

    __slots__ = ("id", "recorded", "finished")

    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.recorded = False  # an Exchange records the request's row under this id
        self.finished = False  # that Exchange is finished: what is logged now is not about it


# The request the running greenlet (or thread) serves. Each greenlet has its own context, so
# what the pool logs during an attempt names its request without every caller passing it.
# proxy.serving.guard starts one per request (its id is the X-Request-Id the client sees) and
# never clears it: a stream is still being served after the app returned, and the next
# request on the connection replaces it. An Exchange made outside any guard starts its own.
_serving: ContextVar[Serving | None] = ContextVar("proxy_serving", default=None)


def serve_request() -> str:
    """Start serving a new request in this greenlet; return its id (its X-Request-Id)."""
    serving = Serving(new_request_id())
    _serving.set(serving)
    return serving.id


def request_recorded() -> bool:
    """Whether an Exchange already holds the row of the request being served here."""
    serving = _serving.get()
    return serving is not None and serving.recorded


def current_request_id() -> str | None:
    """Return the id of the request whose Exchange is under way here, or None."""
    serving = _serving.get()
    return serving.id if serving is not None and serving.recorded and not serving.finished else None


def _record() -> Serving:
    """Return what a new Exchange records under: the request being served, if still free."""
    serving = _serving.get()
    if serving is None or serving.recorded:
        # Outside any guard, or a second Exchange in one request: the id column is unique,
        # so it is served under a fresh id (the pool names it from now on).
        serving = Serving(new_request_id())
        _serving.set(serving)
    serving.recorded = True
    return serving


def _counter(error_class: str) -> str:
    """Map an error class to its stats_minute counter (proxy refusals count as rejected)."""
    if error_class == "rate_limited_day":
        return "rate_limited"
    if error_class == "proxy_error":
        return "upstream_error"
    return error_class if error_class in _COUNTERS else "rejected"


def _metrics() -> Any:
    # Imported on first use, in the worker: prometheus_client must load after the
    # master has chosen the multiprocess folder.
    from proxy import metrics

    return metrics


def publish_metrics(sink: "Recorder") -> None:
    """Write this process's counted metrics and its gauges to Prometheus now."""
    _metrics().TALLY.flush(inflight=Counters.inflight, queue=sink.writer.depth,
                           dropped=sink.writer.dropped)


class Recorder(Protocol):
    """What an Exchange records through: the worker's state (proxy.app.ProxyState)."""

    writer: Any  # proxy.store.Writer: queues rows and stats
    pool: "KeyPool"  # counts tokens against user limits; knows the keys to mask
    prices: Any  # proxy.prices.Prices: estimates cost
    metrics_on: bool  # count in Prometheus too


class Exchange:
    """Track one request; `finish()` queues its row and stats, and logs one line.

    `sink` is the worker's state, a Recorder (None for a bare test: nothing recorded).
    """

    def __init__(self, sink: Recorder | None, *, user: "User | None", dialect: str, method: str, path: str,
                 model: str = "", stream: bool = False, client: str | None = None,
                 presented: str | None = None) -> None:
        self.sink = sink
        self.client = client  # the client's address
        self.presented = presented  # the masked user key of a refused request
        self._serving = _record()
        self.id = self._serving.id
        self.user = user
        self.dialect = dialect
        self.method = method
        self.path = path
        self.model = model
        self.stream = stream
        self.started = time.time()
        self._t0 = time.monotonic()
        self.finished = False
        Counters.inflight += 1
        if Counters.inflight > Counters.peak:
            Counters.peak = Counters.inflight
        if sink is not None:
            sink.writer.request_started(self._row(status=None))

    def __enter__(self) -> "Exchange":
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        """Record a request the proxy itself failed on; the error still propagates."""
        if exc is not None and not self.finished:
            self.finish(500, None, error_class="proxy_error",
                        error_message=f"{type(exc).__name__}: {str(exc)[:300]}")

    def _row(self, **fields: Any) -> dict[str, Any]:
        row = {"id": self.id, "started_at": self.started, "user_id": self._uid,
               "user_label": self.user.label if self.user else None, "dialect": self.dialect,
               "method": self.method, "path": self.path, "model": self.model,
               "stream": int(self.stream), "worker_pid": os.getpid(),
               "remote_addr": self.client, "presented_key": self.presented}
        row.update(fields)
        return row

    @property
    def _uid(self) -> int:
        return self.user.id if self.user else 0

    def first_byte(self, reply: "Reply") -> None:
        """Record the key, attempts and time to first byte as a stream's first chunk goes out.

        The row stays in flight; the console shows them while the stream runs. One queued
        op, no SQL: the writer merges it into the row and never over a finish.
        """
        if self.finished or self.sink is None:
            return
        key = reply.key
        self.sink.writer.request_first_byte(
            self.id, key_id=key.id if key else None, key_masked=key.masked if key else None,
            ttfb_ms=round(reply.ttfb * 1000, 2) if reply.ttfb is not None else None,
            attempts=len(reply.attempts), attempts_detail=[a.as_dict() for a in reply.attempts])

    def finish(self, status: int, reply: "Reply | None" = None, *,
               tokens: tuple[int, int] | None = None, error_class: str | None = None,
               error_message: str | None = None) -> None:
        """Record the end of the request (idempotent: the first call wins)."""
        if self.finished:
            return
        self.finished = True
        self._serving.finished = True  # what this greenlet logs next is not about this request
        Counters.inflight -= 1
        Counters.served += 1
        if Counters.inflight == 0 and Counters.peak >= memory.BURST:
            Counters.peak = 0
            memory.release()
        duration = time.monotonic() - self._t0
        key = reply.key if reply else None
        attempts = reply.attempts if reply else []
        ttfb = reply.ttfb if reply else None
        tin, tout = tokens or (0, 0)
        if reply and reply.outcome and status >= 400:
            error_class = error_class or reply.outcome.kind.value
            error_message = error_message or reply.outcome.reason[:500]
        sink = self.sink
        cost = sink.prices.cost(self.model, tin, tout) if sink is not None and tin + tout else 0.0
        if sink is not None:
            self._record(sink, status, duration, key, attempts, ttfb, tin, tout, cost,
                         error_class, error_message)
        if log.isEnabledFor(logging.INFO):
            rate = f"{tout / duration:.1f}" if tout and duration > 0 else "-"
            log.info("%s %s id=%s model=%s key=%s status=%s attempts=%d ttfb=%s dur=%.1fms "
                     "tokens=%d/%d tok/s=%s", self.method, self.path, self.id, self.model or "-",
                     key.masked if key else "-", status, len(attempts),
                     f"{ttfb * 1000:.1f}ms" if ttfb is not None else "-", duration * 1000,
                     tin, tout, rate)

    def _record(self, sink: Recorder, status: int, duration: float, key: Any, attempts: list,
                ttfb: float | None, tin: int, tout: int, cost: float, error_class: str | None,
                error_message: str | None) -> None:
        writer, now = sink.writer, time.time()
        if tin or tout:  # against the key's per-minute token quota and the user's daily limit
            sink.pool.add_usage(self._uid, key.id if key else None, self.model, tin, tout)
        for a in attempts[:-1]:
            writer.attempt(ts=now, key_id=a.key_id, model=self.model, user_id=self._uid,
                           dialect=self.dialect, outcome=_counter(a.outcome), final=False)
        writer.attempt(ts=now, key_id=attempts[-1].key_id if attempts else 0, model=self.model,
                       user_id=self._uid, dialect=self.dialect,
                       outcome="ok" if status < 400 else _counter(error_class or "client_error"),
                       final=True, tokens_in=tin, tokens_out=tout,
                       cost_micros=round(cost * 1_000_000))
        detail = json.dumps([a.as_dict() for a in attempts])
        if error_message or len(attempts) > 1:  # failures quote Google, who may name a key
            secrets = [k.value for k in sink.pool.keys.values()]
            detail = redact(detail, secrets)
            error_message = redact(error_message, secrets) if error_message else error_message
        writer.request_finished(self._row(
            ended_at=self.started + duration, status=status,
            key_id=key.id if key else None, key_masked=key.masked if key else None,
            attempts=len(attempts), attempts_detail=detail,
            ttfb_ms=round(ttfb * 1000, 2) if ttfb is not None else None,
            duration_ms=round(duration * 1000, 2), tokens_in=tin, tokens_out=tout,
            error_class=error_class, error_message=error_message,
            cost_usd=round(cost, 8) if cost else None))
        if sink.metrics_on:
            tally = _metrics().TALLY
            tally.add(self.dialect, self.model, self.user.label if self.user else "-", status,
                      [a.outcome for a in attempts], duration, ttfb, tin, tout, cost)
            if tally.immediate:
                publish_metrics(sink)
