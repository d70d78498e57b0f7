"""Probe a Google key: list the upstream's models with it and sum up the answer in one line."""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from proxy.outcomes import error_reasons, parse_error_body
from proxy.redact import redact

TIMEOUT = 10.0


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found: HTTP status (None when no answer), a one-line summary, the time taken."""

    status: int | None
    summary: str
    ms: float
    at: float

    @property
    def ok(self) -> bool:
        return self.status == 200


def probe_key(upstream: str, value: str, *, timeout: float = TIMEOUT) -> ProbeResult:
    """Call GET {upstream}/v1beta/models with `value` as the key; never put the value in the result."""
    url = upstream.rstrip("/") + "/v1beta/models?pageSize=1000"
    request = urllib.request.Request(url, headers={"x-goog-api-key": value, "Accept": "application/json"})
    t0 = time.monotonic()
    status: int | None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status = answer.status
            body = _json(answer.read())
        models = body.get("models") if isinstance(body, dict) else None
        if isinstance(models, list):
            more = " (more pages)" if body.get("nextPageToken") else ""
            summary = f"{len(models)} models{more}"
        else:
            summary = "answered, but not with a model list"
    except urllib.error.HTTPError as exc:
        status = exc.code
        summary = _error_summary(exc.code, _json(exc.read()))
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as exc:
        status = None
        reason = getattr(exc, "reason", exc)
        summary = f"no answer from {upstream}: {reason}"
    ms = (time.monotonic() - t0) * 1000
    # An upstream that echoes the key back must not get it onto the screen.
    summary = redact(summary, [value])
    return ProbeResult(status, summary[:200], ms, time.time())


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw.decode("utf-8", "replace") or "null")
    except ValueError:
        return None


def _error_summary(code: int, body: object) -> str:
    """Return "STATUS REASON: message" from a Google error body, or the bare HTTP status."""
    error = parse_error_body(body)  # the proxy's own reader of Google's error bodies
    if not error:
        return f"HTTP {code}"
    reason = min(error_reasons(error), default="")
    head = " ".join(p for p in (str(error.get("status") or ""), reason) if p)
    message = " ".join(str(error.get("message") or "").split())
    return f"{head}: {message}" if head and message else head or message or f"HTTP {code}"
