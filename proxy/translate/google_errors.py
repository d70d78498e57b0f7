"""Read Google's error bodies: the reasons, quotas and retry delay an error names.

The one reader of them: the pool's verdicts (proxy.outcomes.classify) and the OpenAI
translation of an error the pool gave no verdict on (errors.gemini_error_to_openai) both
read through here, so they cannot disagree about what a body says.
"""
from __future__ import annotations

import json
import re
from typing import Any

# How much of an error message is searched for quota names and limits: Google's quota
# messages run to a few hundred bytes each; the cap keeps the regular expressions linear on
# a hostile body.
MESSAGE_SCAN = 8192
# Cap before the float conversion: a 400-digit integer would overflow float().
_FAR = 1e12

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
    """Return the reasons (API_KEY_INVALID, …) of the error's ErrorInfo details."""
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
    """Return the (kind, limit) pairs a 429 names, kind as quota_kind says.

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


def is_daily_quota(error: dict[str, Any], message: str | None = None,
                   named: tuple[tuple[str, int], ...] | None = None) -> bool:
    """Tell whether a 429 says a per-day quota is spent, or that the key has none (limit 0).

    Either way no retry helps before the day's quotas reset, whatever RetryInfo says.
    `message` stands in for the error's own (classify falls back to a hint when it has
    none); `named` is quotas(error), when the caller has read it already.
    """
    full = (str(error.get("message") or "") if message is None else message)[:MESSAGE_SCAN]
    text = " ".join(_quota_ids(error)) + " " + full
    if "PerDay" in text or "per day" in text.lower() or _NO_QUOTA.search(full):
        return True
    return any(limit == 0 for _, limit in (quotas(error) if named is None else named))


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
    is not clamped here (the pool clamps what it acts on).
    """
    for d in _details(error):
        if str(d.get("@type", "")).endswith("RetryInfo"):
            delay = _duration(d.get("retryDelay"))
            if delay is not None:
                return delay
    m = _RETRY_IN.search(str(error.get("message", "")))
    return _seconds(m.group(1)) if m else None
