"""Google's error bodies, read in one place: the pool's verdict and the OpenAI answer agree."""
from __future__ import annotations

import json
import re

import pytest

from proxy.fake import google_errors as fake_errors
from proxy.outcomes import DEFAULT_MINUTE_COOLDOWN, Kind, classify
from proxy.translate.errors import gemini_error_to_openai
from proxy.translate.google_errors import (error_reasons, is_daily_quota, parse_error_body,
                                           quotas, retry_delay)

NOW = 1_780_000_000.0
T = "type.googleapis.com/google.rpc."
QUOTA_DAY = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                       "message": "You exceeded your current quota.\n* Quota exceeded for metric: "
                                  "generativelanguage.googleapis.com/generate_content_free_tier_requests, "
                                  "limit: 0, model: gemini-2.5-pro\nPlease retry in 38.86s.",
                       "details": [{"@type": T + "QuotaFailure", "violations": [
                           {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
                           {"@type": T + "RetryInfo", "retryDelay": "38s"}]}}
QUOTA_MINUTE = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Resource has been exhausted",
                          "details": [{"@type": T + "QuotaFailure", "violations": [
                              {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                              {"@type": T + "RetryInfo", "retryDelay": "7s"}]}}


def exhausted(message: str, *details: dict) -> dict:
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": message,
                      "details": list(details)}}


def inner(message: str, *details: dict) -> dict:
    return exhausted(message, *details)["error"]


def violation(quota_id: str, **more: str) -> dict:
    return {"@type": T + "QuotaFailure", "violations": [{"quotaId": quota_id, **more}]}


def test_the_body_is_found_array_wrapped_or_not_and_nothing_else_is_an_error():
    assert parse_error_body(QUOTA_MINUTE) is QUOTA_MINUTE["error"]
    assert parse_error_body([QUOTA_MINUTE]) == QUOTA_MINUTE["error"]
    assert parse_error_body(json.dumps(QUOTA_MINUTE).encode()) == QUOTA_MINUTE["error"]
    for nothing in (None, "garbage", b"[]", {"error": "x"}, [1], "[" * 100_000):
        assert parse_error_body(nothing) == {}


def test_retry_delays():
    assert retry_delay(parse_error_body(QUOTA_DAY)) == 38.0
    assert retry_delay(parse_error_body([QUOTA_MINUTE])) == 7.0
    assert retry_delay(parse_error_body(None)) is None
    assert retry_delay(parse_error_body({"error": "x"})) is None
    # a protobuf Duration as an object, and the message's "retry in" when RetryInfo is absent
    assert retry_delay(inner("x", {"@type": T + "RetryInfo",
                                       "retryDelay": {"seconds": 7, "nanos": 500_000_000}})) == 7.5
    assert retry_delay(inner("Please retry in 3.5s.")) == 3.5
    # only RetryInfo carries the delay: a retryDelay elsewhere is no RetryInfo
    assert retry_delay(inner("x", {"@type": T + "Help", "retryDelay": "9s"})) is None


def test_daily_quotas():
    assert is_daily_quota(parse_error_body(QUOTA_DAY))
    assert not is_daily_quota(parse_error_body(QUOTA_MINUTE))
    assert is_daily_quota(inner("Quota exceeded: requests per day."))
    assert is_daily_quota(inner("Quota exceeded for metric: m, limit:0"))
    assert not is_daily_quota(inner("Quota exceeded for metric: m, limit: 05"))
    # the violation's own quotaValue 0: the key's tier gets no quota for the model at all
    assert is_daily_quota(inner("x", violation("GenerateRequestsPerMinute", quotaValue="0")))
    assert quotas(inner("x", violation("GenerateRequestsPerMinute", quotaValue="0"))) == (("rpm", 0),)


def test_reasons_come_from_error_info_only():
    error = inner("x", {"@type": T + "ErrorInfo", "reason": "API_KEY_INVALID"},
                      {"@type": T + "Help", "reason": "NOT_A_REASON"})
    assert error_reasons(error) == {"API_KEY_INVALID"}


# Each: the body, whether the day is spent, and the delay Google asked for (None: none).
AGREEMENT = [
    pytest.param(QUOTA_DAY, True, None, id="per-day quotaId"),
    pytest.param(QUOTA_MINUTE, False, 7.0, id="RetryInfo"),
    pytest.param(fake_errors.quota("gemini-2.5-pro", per="minute", limit=250, retry_s=12)[1], False, 12.0,
                 id="fake per-minute"),
    pytest.param(fake_errors.quota("gemini-2.5-pro", per="day", limit=250, retry_s=12)[1], True, None,
                 id="fake per-day"),
    pytest.param(fake_errors.quota("gemini-2.5-pro", per="minute", limit=0, retry_s=30)[1], True, None,
                 id="fake limit 0"),
    pytest.param(exhausted("Resource has been exhausted", {"@type": T + "RetryInfo",
                                                           "retryDelay": {"seconds": 4, "nanos": 250_000_000}}),
                 False, 4.25, id="RetryInfo as a Duration object"),
    pytest.param(exhausted("Resource has been exhausted", {"retryDelay": "9s"}), False, None,
                 id="retryDelay outside RetryInfo"),
    pytest.param(exhausted("Resource has been exhausted. Please retry in 3s."), False, 3.0,
                 id="retry in the message"),
    pytest.param(exhausted("Quota exceeded: requests per day for this model."), True, None,
                 id="per day in the message"),
    pytest.param(exhausted("Quota exceeded for metric: m, limit:0"), True, None, id="limit 0 in the message"),
    pytest.param(exhausted("Resource has been exhausted",
                           violation("GenerateRequestsPerMinutePerProjectPerModel", quotaValue="0")),
                 True, None, id="quotaValue 0"),
]


@pytest.mark.parametrize("body, daily, delay", AGREEMENT)
def test_the_openai_429_without_a_verdict_says_what_the_pool_decides(body, daily, delay):
    """A 429 translated without the pool's verdict reads the body as the pool does."""
    out = classify(429, json.dumps(body), now=NOW)
    status, answer = gemini_error_to_openai(429, body)
    assert status == 429
    error = answer["error"]
    spent = (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert spent is daily and (out.kind is Kind.RATE_DAY) is daily
    if daily:
        return
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    hint = re.search(r"retry in (\d+(?:\.\d+)?)\s*s", error["message"], re.I)
    if delay is None:
        assert hint is None and out.cool_until == NOW + DEFAULT_MINUTE_COOLDOWN
    else:
        assert hint and float(hint.group(1)) == pytest.approx(delay)
        assert out.cool_until == pytest.approx(NOW + delay)
