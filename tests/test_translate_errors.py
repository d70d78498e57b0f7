"""Google error bodies → OpenAI error bodies the openai SDK maps to the right exception."""
import httpx2
import openai
import pytest

from proxy.translate.errors import TranslationError, gemini_error_body, gemini_error_to_openai

BAD_KEY = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                     "status": "INVALID_ARGUMENT",
                     "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                  "domain": "googleapis.com",
                                  "metadata": {"service": "generativelanguage.googleapis.com"}}]}}
QUOTA_DAY = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                       "message": "You exceeded your current quota.\n* Quota exceeded for metric: "
                                  "generativelanguage.googleapis.com/generate_content_free_tier_requests, "
                                  "limit: 0, model: gemini-2.5-pro\nPlease retry in 38.86s.",
                       "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                           {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
                           {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}]}}
QUOTA_MINUTE = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Resource has been exhausted",
                          "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                              {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                              {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}


@pytest.mark.parametrize("status, body, out_status, kind, code, exc", [
    (400, BAD_KEY, 401, "invalid_request_error", "invalid_api_key", openai.AuthenticationError),
    (400, [BAD_KEY], 401, "invalid_request_error", "invalid_api_key", openai.AuthenticationError),
    (400, gemini_error_body(400, "Invalid JSON payload"), 400, "invalid_request_error", None, openai.BadRequestError),
    (401, gemini_error_body(401, "Request had invalid authentication credentials."), 401,
     "authentication_error", None, openai.AuthenticationError),
    (403, gemini_error_body(403, "Method doesn't allow unregistered callers"), 403, "permission_error",
     "permission_denied", openai.PermissionDeniedError),
    (404, gemini_error_body(404, "models/gemini-9 is not found for API version v1beta"), 404,
     "invalid_request_error", "model_not_found", openai.NotFoundError),
    (400, gemini_error_body(400, "The input token count (1200293) exceeds the maximum number of "
                                 "tokens allowed (1048576)."), 400, "invalid_request_error",
     "context_length_exceeded", openai.BadRequestError),
    (429, QUOTA_DAY, 429, "insufficient_quota", "insufficient_quota", openai.RateLimitError),
    (429, QUOTA_MINUTE, 429, "requests", "rate_limit_exceeded", openai.RateLimitError),
    (500, gemini_error_body(500, "Internal error encountered."), 500, "server_error", None, openai.InternalServerError),
    (503, [gemini_error_body(503, "The model is overloaded.")], 503, "server_error", None, openai.InternalServerError),
    (504, None, 504, "server_error", None, openai.InternalServerError),
    (502, "garbage", 502, "server_error", None, openai.InternalServerError),
])
def test_mapping_and_sdk_exception(status, body, out_status, kind, code, exc):
    got_status, got = gemini_error_to_openai(status, body)
    assert got_status == out_status
    assert got["error"]["type"] == kind and got["error"]["code"] == code
    assert isinstance(got["error"]["message"], str) and got["error"]["message"]
    client = openai.OpenAI(api_key="sk-test", base_url="http://proxy.test/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(
                               lambda req: httpx2.Response(got_status, json=got))))
    with pytest.raises(exc) as raised:
        client.models.list()
    assert raised.value.code == code and raised.value.type == kind


def test_the_pools_verdict_is_what_the_client_hears():
    # (Google's body itself is read in proxy/translate/google_errors.py; see its tests.)
    _, body = gemini_error_to_openai(429, QUOTA_MINUTE, retry_after=7)
    assert body["error"]["message"].endswith("Please retry in 7s.")
    _, body = gemini_error_to_openai(429, QUOTA_MINUTE, retry_after=60, spent=True)
    assert body["error"]["code"] == "insufficient_quota" and body["error"]["message"].endswith("in 60s.")
    _, body = gemini_error_to_openai(429, QUOTA_DAY, spent=False)
    assert body["error"]["code"] == "rate_limit_exceeded"


def test_translation_error_bodies():
    e = TranslationError("messages: required", param="messages")
    assert e.to_openai() == (400, {"error": {"message": "messages: required", "type": "invalid_request_error",
                                             "param": "messages", "code": None}})
    assert e.to_gemini() == (400, {"error": {"code": 400, "message": "messages: required",
                                             "status": "INVALID_ARGUMENT"}})
    assert isinstance(e, ValueError) and str(e) == "messages: required"
