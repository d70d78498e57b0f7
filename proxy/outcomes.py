"""Classify an upstream answer into an Outcome: what the pool should do, and whether to retry."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from proxy.store.util import next_pacific_midnight


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
# How much of an error message is searched for quota names and limits.
MESSAGE_SCAN = 8192
# Cap before the float conversion: a 400-digit integer would overflow float().
_FAR = 1e12

_DEAD_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "SERVICE_DISABLED",
                 "CONSUMER_SUSPENDED", "API_KEY_EXPIRED", "API_KEY_HTTP_REFERRER_BLOCKED",
                 "API_KEY_IP_ADDRESS_BLOCKED", "API_KEY_ANDROID_APP_BLOCKED",
                 "API_KEY_IOS_APP_BLOCKED", "ACCESS_TOKEN_TYPE_UNSUPPORTED", "BILLING_DISABLED"}
_DEAD_MESSAGES = re.compile(r"api key (not valid|not found|expired)|has been suspended|"
                            r"consumer .* suspended|api has not been used|is disabled|"
                            r"api key.*(invalid|blocked)", re.I)
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_RETRY_IN = re.compile(r"retry in " + _NUMBER + r"\s*s", re.I)
_DURATION = re.compile(_NUMBER + "s")
_DIGITS = re.compile(_NUMBER)
# "Quota exceeded for metric: generativelanguage.googleapis.com/…_requests, limit: 250, model: …"
_METRIC_LIMIT = re.compile(r"metric:\s*(\S+?),\s*limit:\s*(\d+)", re.I)
_LIMIT = re.compile(r"limit:\s*(\d+)", re.I)
_NO_QUOTA = re.compile(r"limit:\s*0(?!\d)", re.I)


def parse_error_body(body: bytes | str | dict | list | None) -> dict[str, Any]:
    """Return the inner `error` object of a Google error body (array-wrapped or not), or {}."""
    data: Any = body
    if isinstance(body, (bytes, str)):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # garbage, or nested past the parser's depth
            return {}
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data["error"]
    return {}


def _details(error: dict[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def error_reasons(error: dict[str, Any]) -> set[str]:
    return {str(d.get("reason")) for d in _details(error)
            if str(d.get("@type", "")).endswith("ErrorInfo") and d.get("reason")}


def _violations(error: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for d in _details(error):
        if str(d.get("@type", "")).endswith("QuotaFailure"):
            violations = d.get("violations")
            found += [v for v in (violations if isinstance(violations, list) else [])
                      if isinstance(v, dict)]
    return found


def _quota_ids(error: dict[str, Any]) -> list[str]:
    return [str(v.get("quotaId") or "") + " " + str(v.get("quotaMetric") or "")
            for v in _violations(error)]


def quota_kind(name: str) -> str | None:
    """Return which quota a quotaId or metric names: rpm, rpd, tpm, or None if it says not.

    `GenerateRequestsPerDayPerProjectPerModel-FreeTier` is rpd,
    `GenerateContentInputTokensPerModelPerMinute-FreeTier` (or a metric ending in
    `input_token_count`) is tpm, `GenerateRequestsPerMinutePerProjectPerModel` is rpm.
    """
    low = name.lower()
    if "token" in low:
        return "tpm" if "perday" not in low else None  # no per-day token quota is paced
    if "perday" in low or "per_day" in low:
        return "rpd"
    if "perminute" in low or "per_minute" in low:
        return "rpm"
    return None


def _count(value: Any) -> int | None:
    """Read a quotaValue ("250", 250) as a whole number ≥ 0, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 19:
        return int(value.strip())
    return None


def quotas(error: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """Return the (kind, limit) pairs a 429 names: what the pool learns about the key.

    Each QuotaFailure violation gives the kind (from its quotaId) and the limit (its
    quotaValue, else the message's `limit: N` for the same metric, else the message's only
    `limit: N`). A message without details still teaches a token limit, whose metric
    (`…input_token_count`) says its kind; its request metric names no period, so a request
    limit is learned only from a violation.
    """
    message = str(error.get("message") or "")[:MESSAGE_SCAN]
    by_metric = {m.group(1): int(m.group(2)) for m in _METRIC_LIMIT.finditer(message)
                 if len(m.group(2)) < 19}
    lone = _LIMIT.findall(message)
    found: dict[str, int] = {}
    violations = _violations(error)
    for v in violations:
        kind = quota_kind(str(v.get("quotaId") or "") + " " + str(v.get("quotaMetric") or ""))
        if kind is None:
            continue
        limit = _count(v.get("quotaValue"))
        if limit is None:
            limit = by_metric.get(str(v.get("quotaMetric") or ""))
        if limit is None and len(violations) == 1 and len(lone) == 1 and len(lone[0]) < 19:
            limit = int(lone[0])
        if limit is not None:
            found[kind] = min(limit, found.get(kind, limit))
    if not violations:
        for metric, limit in by_metric.items():
            if quota_kind(metric) == "tpm":
                found["tpm"] = limit
    return tuple(sorted(found.items()))


def _seconds(value: Any) -> float | None:
    """Return a JSON number or digit string as seconds, or None for anything else.

    Negative and NaN are nonsense for a delay; huge values pass (capped at _FAR) and are
    clamped by the caller.
    """
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value.strip()):
            return None
        value = float(value)  # digits and a dot only: at worst inf, never an exception
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 0:  # NaN (math.isnan would overflow on a huge int)
        return None
    return float(min(value, _FAR))


def _duration(raw: Any) -> float | None:
    """Read a protobuf Duration: "1.5s", or {"seconds": 1, "nanos": 500000000}."""
    if isinstance(raw, dict):
        seconds = _seconds(raw.get("seconds", 0))
        nanos = _seconds(raw.get("nanos", 0))
        return None if seconds is None or nanos is None else seconds + nanos / 1e9
    if isinstance(raw, str):
        m = _DURATION.fullmatch(raw.strip())
        return _seconds(m.group(1)) if m else None
    return None


def retry_delay(error: dict[str, Any]) -> float | None:
    """Return RetryInfo.retryDelay in seconds, else the "retry in Ns" of the message, else None.

    Anything unreadable (a malformed duration, NaN, a negative) counts as absent; the value
    is not clamped here (classify does that).
    """
    for d in _details(error):
        if str(d.get("@type", "")).endswith("RetryInfo"):
            delay = _duration(d.get("retryDelay"))
            if delay is not None:
                return delay
    m = _RETRY_IN.search(str(error.get("message", "")))
    return _seconds(m.group(1)) if m else None


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
    # Google's quota messages run to a few hundred bytes each; the cap keeps the regular
    # expressions linear on a hostile body.
    full = str(error.get("message") or reason_hint or f"HTTP {status}")[:MESSAGE_SCAN]
    message = full[:300]
    if status == 429:
        named = quotas(error)
        text = " ".join(_quota_ids(error)) + " " + full
        # limit 0: this key's tier gets no quota for the model at all; no use retrying today
        if ("PerDay" in text or "per day" in text.lower() or _NO_QUOTA.search(full)
                or any(limit == 0 for _, limit in named)):
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
