"""Exchange: one client request from arrival to its request row, stats and log line."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: the gunicorn master imports this before gevent patches ssl
    from proxy.pool import User
    from proxy.upstream import Reply

log = logging.getLogger("proxy.request")


class Counters:
    """Requests in flight and served by this process (streams count until their last byte)."""

    inflight = 0
    served = 0


class Exchange:
    """Track one request; `finish()` queues its row and stats, and logs one line."""

    def __init__(self, writer: Any, *, user: "User | None", dialect: str, method: str, path: str,
                 model: str = "", stream: bool = False) -> None:
        self.writer = writer
        self.id = uuid.uuid4().hex
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
        if writer is not None:
            writer.request_started(self._row(status=None))

    def __enter__(self) -> "Exchange":
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        """Record a request the proxy itself failed on; the error still propagates."""
        if exc is not None and not self.finished:
            self.finish(500, None, error_class="proxy_error",
                        error_message=f"{type(exc).__name__}: {str(exc)[:300]}")

    def _row(self, **fields: Any) -> dict[str, Any]:
        row = {"id": self.id, "started_at": self.started, "user_id": self.user.id if self.user else 0,
               "user_label": self.user.label if self.user else None, "dialect": self.dialect,
               "method": self.method, "path": self.path, "model": self.model,
               "stream": int(self.stream), "worker_pid": os.getpid()}
        row.update(fields)
        return row

    def finish(self, status: int, reply: "Reply | None" = None, *, tokens: tuple[int, int] | None = None,
               error_class: str | None = None, error_message: str | None = None) -> None:
        """Record the end of the request (idempotent: the first call wins)."""
        if self.finished:
            return
        self.finished = True
        Counters.inflight -= 1
        Counters.served += 1
        duration = time.monotonic() - self._t0
        key = reply.key if reply else None
        attempts = reply.attempts if reply else []
        ttfb = reply.ttfb if reply else None
        tin, tout = tokens or (0, 0)
        if error_class is None and status >= 400 and reply and reply.outcome:
            error_class = reply.outcome.kind.value
        if error_message is None and error_class and reply and reply.outcome:
            error_message = reply.outcome.reason[:500]
        if self.writer is not None:
            now = time.time()
            final_outcome = "ok" if status < 400 else _counter(error_class or "client_error")
            for a in attempts[:-1]:
                self.writer.attempt(ts=now, key_id=a.key_id, model=self.model, user_id=self._uid,
                                    dialect=self.dialect, outcome=_counter(a.outcome), final=False)
            self.writer.attempt(ts=now, key_id=attempts[-1].key_id if attempts else 0,
                                model=self.model, user_id=self._uid, dialect=self.dialect,
                                outcome=final_outcome, final=True, tokens_in=tin, tokens_out=tout)
            self.writer.request_finished(self._row(
                ended_at=self.started + duration, status=status,
                key_id=key.id if key else None, key_masked=key.masked if key else None,
                attempts=len(attempts),
                attempts_detail=json.dumps([dataclasses.asdict(a) for a in attempts]),
                ttfb_ms=round(ttfb * 1000, 2) if ttfb is not None else None,
                duration_ms=round(duration * 1000, 2), tokens_in=tin, tokens_out=tout,
                error_class=error_class, error_message=error_message))
        if log.isEnabledFor(logging.INFO):
            rate = f"{tout / duration:.1f}" if tout and duration > 0 else "-"
            log.info("%s %s model=%s key=%s status=%s attempts=%d ttfb=%s dur=%.1fms "
                     "tokens=%d/%d tok/s=%s", self.method, self.path, self.model or "-",
                     key.masked if key else "-", status, len(attempts),
                     f"{ttfb * 1000:.1f}ms" if ttfb is not None else "-", duration * 1000,
                     tin, tout, rate)

    @property
    def _uid(self) -> int:
        return self.user.id if self.user else 0


_COUNTERS = {"ok", "rate_limited", "key_dead", "upstream_error", "client_error", "rejected"}


def _counter(error_class: str) -> str:
    """Map an error class to its stats_minute counter (proxy refusals count as rejected)."""
    if error_class == "rate_limited_day":
        return "rate_limited"
    if error_class == "proxy_error":
        return "upstream_error"
    return error_class if error_class in _COUNTERS else "rejected"
