"""Upstream answers → error classes (DESIGN.md, "Error classes")."""
import json

import pytest

from proxy.outcomes import Kind, classify, retry_delay, transport_failure
from proxy.store.util import next_pacific_midnight

NOW = 1_780_000_000.0


def google_error(code, status, message, details=()):
    return json.dumps({"error": {"code": code, "status": status, "message": message,
                                 "details": list(details)}}).encode()


def quota_429(quota_id, delay="38s"):
    details = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": "generativelanguage.googleapis.com/x",
                                "quotaId": quota_id}]}]
    if delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", details)


def test_invalid_key_is_dead_with_reason():
    body = google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                        [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                          "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])
    out = classify(400, body, now=NOW)
    assert out.kind is Kind.KEY_DEAD and out.retryable
    assert "API_KEY_INVALID" in out.reason


@pytest.mark.parametrize("reason", ["SERVICE_DISABLED", "CONSUMER_SUSPENDED", "API_KEY_EXPIRED"])
def test_403_about_the_key_is_dead(reason):
    body = google_error(403, "PERMISSION_DENIED", "Permission denied.",
                        [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}])
    assert classify(403, body, now=NOW).kind is Kind.KEY_DEAD


def test_403_about_a_file_is_the_clients_business():
    body = google_error(403, "PERMISSION_DENIED",
                        "You do not have permission to access the File abc or it may not exist.")
    out = classify(403, body, now=NOW)
    assert out.kind is Kind.CLIENT and not out.retryable


def test_401_is_dead():
    assert classify(401, google_error(401, "UNAUTHENTICATED", "bad"), now=NOW).kind is Kind.KEY_DEAD


def test_per_minute_429_cools_for_retry_delay():
    out = classify(429, quota_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "17s"),
                   now=NOW)
    assert out.kind is Kind.RATE_MINUTE
    assert out.cool_until == pytest.approx(NOW + 17)


def test_per_day_quota_wins_over_short_retry_delay():
    out = classify(429, quota_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "20s"),
                   now=NOW)
    assert out.kind is Kind.RATE_DAY
    assert out.cool_until == next_pacific_midnight(NOW)
    assert out.cool_until > NOW + 20


def test_429_without_retry_info_falls_back_to_message_then_default():
    body = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded. Please retry in 12.5s.")
    assert classify(429, body, now=NOW).cool_until == pytest.approx(NOW + 12.5)
    bare = google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
    assert classify(429, bare, now=NOW).cool_until == pytest.approx(NOW + 60)


def test_array_wrapped_error_bodies_are_read():
    body = json.dumps([json.loads(quota_429("GenerateRequestsPerMinutePerProjectPerModel", "5s"))])
    assert classify(429, body, now=NOW).cool_until == pytest.approx(NOW + 5)


@pytest.mark.parametrize("status", [500, 503, 504])
def test_server_errors_are_upstream_trouble(status):
    out = classify(status, google_error(status, "UNAVAILABLE", "The model is overloaded."), now=NOW)
    assert out.kind is Kind.UPSTREAM and out.retryable and out.cool_until is None


@pytest.mark.parametrize("status,message", [(400, "Invalid JSON payload received."),
                                            (404, "models/nope is not found"),
                                            (413, "too large")])
def test_client_errors_pass_through(status, message):
    out = classify(status, google_error(status, "INVALID_ARGUMENT", message), now=NOW)
    assert out.kind is Kind.CLIENT and not out.retryable


def test_garbage_bodies_do_not_crash():
    assert classify(502, b"<html>bad gateway</html>", now=NOW).kind is Kind.UPSTREAM
    assert classify(400, b"\xff\xfe", now=NOW).kind is Kind.CLIENT
    assert classify(429, None, now=NOW).kind is Kind.RATE_MINUTE


def test_retry_delay_formats():
    assert retry_delay({"details": [{"@type": "x.RetryInfo", "retryDelay": "1.5s"}]}) == 1.5
    assert retry_delay({"details": [{"@type": "x.RetryInfo",
                                     "retryDelay": {"seconds": 3, "nanos": 500000000}}]}) == 3.5
    assert retry_delay({"message": "nothing"}) is None


def test_transport_failures():
    import requests

    assert transport_failure(requests.ConnectTimeout("x")).status == 504
    assert transport_failure(requests.ConnectionError("x")).kind is Kind.UPSTREAM


@pytest.mark.parametrize("per, kind, cls", [("minute", "rpm", Kind.RATE_MINUTE), ("day", "rpd", Kind.RATE_DAY),
                                             ("tokens", "tpm", Kind.RATE_MINUTE)])
def test_a_429_names_the_quota_and_its_limit(per, kind, cls):
    from proxy.fake import google_errors as fake_errors

    status, body = fake_errors.quota("gemini-2.5-pro", per=per, limit=250, retry_s=12)
    out = classify(status, json.dumps(body), now=NOW)
    assert out.kind is cls and out.quotas == ((kind, 250),) and not out.no_quota


def test_limit_zero_is_no_quota_until_midnight_whatever_the_period():
    from proxy.fake import google_errors as fake_errors

    status, body = fake_errors.quota("gemini-2.5-pro", per="minute", limit=0, retry_s=30)
    out = classify(status, json.dumps(body), now=NOW)
    assert out.kind is Kind.RATE_DAY and out.no_quota and out.quotas == (("rpm", 0),)
    assert out.cool_until == next_pacific_midnight(NOW)


def test_quota_limits_from_the_message_when_values_are_missing():
    message = ("You exceeded your current quota.\n* Quota exceeded for metric: "
               "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count, "
               "limit: 250000, model: gemini-2.5-flash\nPlease retry in 3s.")
    # no details at all: the token metric says its kind; a request metric alone would not
    out = classify(429, google_error(429, "RESOURCE_EXHAUSTED", message), now=NOW)
    assert out.quotas == (("tpm", 250000),) and out.kind is Kind.RATE_MINUTE
    # a violation without quotaValue takes the message's limit for its metric
    body = json.dumps({"error": {"code": 429, "message": "x, limit: 15, model: m", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}]}})
    assert classify(429, body, now=NOW).quotas == (("rpm", 15),)
    # nonsense values teach nothing
    body = json.dumps({"error": {"code": 429, "message": "x", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaId": "GenerateRequestsPerDayPerProjectPerModel", "quotaValue": "-3"},
            {"quotaId": "Unknown", "quotaValue": "7"}]}]}})
    out = classify(429, body, now=NOW)
    assert out.quotas == () and out.kind is Kind.RATE_DAY
