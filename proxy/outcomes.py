"""Classify an upstream answer into an Outcome: what the pool should do, and whether to retry."""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from proxy.store.util import next_pacific_midnight
# Google's error bodies are read in one place; parse_error_body and error_reasons are also
# what console/probe.py and upstream.py read them with.
from proxy.translate.google_errors import (MESSAGE_SCAN, error_reasons, is_daily_quota,
                                           parse_error_body, quotas, retry_delay)


class Kind(str, Enum):
    """The error classes of DESIGN.md; the values are the stats column names."""

    OK = "ok"
    KEY_DEAD = "key_dead"
    RATE_MINUTE = "rate_limited"
    RATE_DAY = "rate_limited_day"
    UPSTREAM = "upstream_error"
    CLIENT = "client_error"


# The quotas the pool learns and paces by: requests per minute, requests per day, input
# tokens per minute (each per key and model, as Google counts them).
QUOTA_KINDS: tuple[str, ...] = ("rpm", "rpd", "tpm")
QUOTA_NAMES = {"rpm": "requests per minute", "rpd": "requests per day",
               "tpm": "input tokens per minute"}


@dataclass(frozen=True)
class Outcome:
    """What one upstream attempt came to."""

    kind: Kind
    status: int
    reason: str = ""
    cool_until: float | None = None  # for the rate-limit kinds: when the (key, model) returns
    # For a 429: the quotas it named, as (kind, limit) with kind one of QUOTA_KINDS.
    quotas: tuple[tuple[str, int], ...] = ()

    @property
    def no_quota(self) -> bool:
        """Whether the 429 said the key's tier has no quota at all for the model (limit 0)."""
        return any(limit == 0 for _, limit in self.quotas)

    @property
    def retryable(self) -> bool:
        """Whether another key could do better (never for the client's own mistakes)."""
        return self.kind in (Kind.KEY_DEAD, Kind.RATE_MINUTE, Kind.RATE_DAY, Kind.UPSTREAM)


# Backoff used when a per-minute 429 carries no usable RetryInfo: the rest of a minute window.
DEFAULT_MINUTE_COOLDOWN = 60.0
# The shortest rest: "0s" would have the pool hammer a key that just refused.
MIN_COOLDOWN = 1.0
_DEAD_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "SERVICE_DISABLED",
                 "CONSUMER_SUSPENDED", "API_KEY_EXPIRED", "API_KEY_HTTP_REFERRER_BLOCKED",
                 "API_KEY_IP_ADDRESS_BLOCKED", "API_KEY_ANDROID_APP_BLOCKED",
                 "API_KEY_IOS_APP_BLOCKED", "ACCESS_TOKEN_TYPE_UNSUPPORTED", "BILLING_DISABLED"}
_DEAD_MESSAGES = re.compile(r"api key (not valid|not found|expired)|has been suspended|"
                            r"consumer .* suspended|api has not been used|is disabled|"
                            r"api key.*(invalid|blocked)", re.I)


def cool_until(delay: float | None, now: float) -> float:
    """Return when a per-minute rest ends: `delay` (or the default) clamped to a sane range.

    At least MIN_COOLDOWN, at most until the next Pacific midnight, when every quota resets
    anyway: an absurd retryDelay must not park a key for ever.
    """
    ceiling = max(MIN_COOLDOWN, next_pacific_midnight(now) - now)
    seconds = DEFAULT_MINUTE_COOLDOWN if delay is None else delay
    return now + min(max(seconds, MIN_COOLDOWN), ceiling)


def _is_key_problem(status: int, error: dict[str, Any]) -> bool:
    reasons = error_reasons(error)
    if reasons & _DEAD_REASONS:
        return True
    message = str(error.get("message", ""))
    if status == 401:
        return True
    # Other 403s (a file or cached content this key cannot see, a region rule) are
    # about the request, not the key: retiring a key for them would empty the pool.
    return status in (400, 403) and bool(_DEAD_MESSAGES.search(message))


def classify(status: int, body: bytes | str | dict | list | None, *, now: float,
             reason_hint: str = "") -> Outcome:
    """Map an upstream HTTP status and body to an Outcome.

    Per-day quota wins over a short retryDelay on the same 429: a daily quota does not
    come back in 20 seconds, whatever RetryInfo says.
    """
    if status < 400:
        return Outcome(Kind.OK, status)
    error = parse_error_body(body)
    full = str(error.get("message") or reason_hint or f"HTTP {status}")[:MESSAGE_SCAN]
    message = full[:300]
    if status == 429:
        named = quotas(error)
        # limit 0: this key's tier gets no quota for the model at all; no use retrying today
        if is_daily_quota(error, full, named):
            return Outcome(Kind.RATE_DAY, status, message, next_pacific_midnight(now), named)
        return Outcome(Kind.RATE_MINUTE, status, message, cool_until(retry_delay(error), now),
                       named)
    if status >= 500 or status == 408:
        # Overload is the model's trouble, not the key's: no rest, only a score penalty.
        return Outcome(Kind.UPSTREAM, status, message)
    if _is_key_problem(status, error):
        reasons = sorted(error_reasons(error))
        label = reasons[0] if reasons else (error.get("status") or f"HTTP {status}")
        return Outcome(Kind.KEY_DEAD, status, f"{label}: {message}")
    return Outcome(Kind.CLIENT, status, message)


def transport_failure(exc: BaseException) -> Outcome:
    """Classify a connection error or timeout talking to the upstream."""
    status = 504 if "timeout" in type(exc).__name__.lower() else 502
    return Outcome(Kind.UPSTREAM, status, f"{type(exc).__name__}: {str(exc)[:200]}")
