"""Google-shaped error answers of the fake Gemini API.

Each builder returns `(http_status, body)`. The bodies copy the real envelopes
(see the wire reference, §2), because the proxy classifies keys by their details.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

Error = tuple[int, dict[str, Any]]

_TYPE = "type.googleapis.com/google.rpc."
SERVICE = "generativelanguage.googleapis.com"
RATE_LIMIT_DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"

STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 409: "ABORTED", 413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error(code: int, message: str, status: str | None = None,
          details: list[dict[str, Any]] | None = None) -> Error:
    """Build Google's `{"error": {code, message, status, details?}}` envelope."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status or STATUS[code]}
    if details:
        err["details"] = details
    return code, {"error": err}


def project_number(key: str) -> str:
    """Derive a stable fake project number for a key (Google names the key's project)."""
    return str(100_000_000_000 + int(hashlib.sha256(key.encode()).hexdigest()[:10], 16) % 900_000_000_000)


def api_key_invalid() -> Error:
    """Answer a key Google does not know: 400, not 401."""
    return error(400, "API key not valid. Please pass a valid API key.", details=[{
        "@type": _TYPE + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
        "metadata": {"service": SERVICE}}])


def api_key_expired() -> Error:
    """Answer an expired key (same reason as an invalid one)."""
    return error(400, "API key expired. Please renew the API key.", details=[{
        "@type": _TYPE + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
        "metadata": {"service": SERVICE}}])


def service_disabled(key: str) -> Error:
    """Answer a key whose project has the Generative Language API disabled."""
    project = project_number(key)
    url = f"https://console.developers.google.com/apis/api/{SERVICE}/overview?project={project}"
    message = (f"Generative Language API has not been used in project {project} before or it is "
               f"disabled. Enable it by visiting {url} then retry. If you enabled this API "
               "recently, wait a few minutes for the action to propagate to our systems and retry.")
    return error(403, message, details=[
        {"@type": _TYPE + "ErrorInfo", "reason": "SERVICE_DISABLED", "domain": "googleapis.com",
         "metadata": {"consumer": f"projects/{project}", "service": SERVICE,
                      "activationUrl": url, "serviceTitle": "Generative Language API",
                      "containerInfo": project}},
        {"@type": _TYPE + "LocalizedMessage", "locale": "en-US", "message": message},
        {"@type": _TYPE + "Help", "links": [
            {"description": "Google developers console API activation", "url": url}]},
    ])


def consumer_suspended(key: str) -> Error:
    """Answer a key whose consumer Google has suspended."""
    return error(403, f"Permission denied: Consumer 'api_key:{key}' has been suspended.", details=[{
        "@type": _TYPE + "ErrorInfo", "reason": "CONSUMER_SUSPENDED", "domain": "googleapis.com",
        "metadata": {"consumer": f"projects/{project_number(key)}", "service": SERVICE}}])


def location_unsupported() -> Error:
    """Answer a call from a region the API does not serve."""
    return error(400, "User location is not supported for the API use.", "FAILED_PRECONDITION")


def unregistered_caller() -> Error:
    """Answer a call that carries no API key at all."""
    return error(403, "Method doesn't allow unregistered callers (callers without established "
                      "identity). Please use API Key or other form of API consumer identity to "
                      "call this API.")


def oauth_expected(method: str) -> Error:
    """Answer a native call that carried `Authorization: Bearer` (taken for an OAuth token)."""
    return error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                      "token, login cookie or other valid authentication credential. See "
                      "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                 details=[{"@type": _TYPE + "ErrorInfo", "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                           "domain": "googleapis.com",
                           "metadata": {"service": SERVICE, "method": method}}])


def quota(model: str, *, per: str, limit: int, retry_s: float) -> Error:
    """Answer a spent quota in the 2026 shape: Help, QuotaFailure, RetryInfo.

    `per` is "minute", "day" or "tokens"; RetryInfo carries whole seconds (truncated, as
    Google does) while the message keeps two decimals.
    """
    if per == "tokens":
        metric = f"{SERVICE}/generate_content_free_tier_input_token_count"
        quota_id = "GenerateContentInputTokensPerModelPerMinute-FreeTier"
    else:
        metric = f"{SERVICE}/generate_content_free_tier_requests"
        quota_id = ("GenerateRequestsPerDayPerProjectPerModel-FreeTier" if per == "day"
                    else "GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    retry_s = max(0.0, retry_s)
    message = ("You exceeded your current quota, please check your plan and billing details. "
               f"For more information on this error, head to: {RATE_LIMIT_DOCS}. To monitor your "
               "current usage, head to: https://ai.dev/usage?tab=rate-limit. \n"
               f"* Quota exceeded for metric: {metric}, limit: {limit}, model: {model}\n"
               f"Please retry in {retry_s:.2f}s.")
    return error(429, message, details=[
        {"@type": _TYPE + "Help", "links": [
            {"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS}]},
        {"@type": _TYPE + "QuotaFailure", "violations": [{
            "quotaMetric": metric, "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": model},
            "quotaValue": str(limit)}]},
        {"@type": _TYPE + "RetryInfo", "retryDelay": f"{math.floor(retry_s)}s"},
    ])


def overloaded() -> Error:
    """Answer 503 the way an overloaded model does."""
    return error(503, "The model is overloaded. Please try again later.")


def internal() -> Error:
    """Answer Gemini's generic 500."""
    return error(500, "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting")


def deadline() -> Error:
    """Answer 504 as when the backend gave up."""
    return error(504, "The request timed out. Please try again.")


def model_not_found(model: str, version: str, method: str = "generateContent") -> Error:
    """Answer an unknown model (or one that does not support `method`)."""
    return error(404, f"models/{model} is not found for API version {version}, or is not "
                      f"supported for {method}. Call ListModels to see the list of available "
                      "models and their supported methods.")


def file_forbidden(file_id: str) -> Error:
    """Answer a file this key does not own (or that does not exist): not a dead key."""
    return error(403, f"You do not have permission to access the File {file_id} or it may not exist.")


def cache_forbidden(cache_id: str) -> Error:
    """Answer a cached content this key does not own (or that does not exist)."""
    return error(403, f"CachedContent not found (or permission denied): cachedContents/{cache_id}")


def bad_request(message: str) -> Error:
    """Answer a plain 400 INVALID_ARGUMENT."""
    return error(400, message)


def context_too_long(count: int, limit: int) -> Error:
    """Answer a prompt longer than the model's inputTokenLimit, in Google's words."""
    return bad_request(f"The input token count ({count}) exceeds the maximum number of tokens "
                       f"allowed ({limit}).")


def field_violations(violations: list[tuple[str, str]]) -> Error:
    """Answer proto-JSON parse failures: one message line and one fieldViolation each."""
    message = "\n".join(desc for _, desc in violations)
    fields = [{"field": f, "description": d} if f else {"description": d} for f, d in violations]
    return error(400, message, details=[{"@type": _TYPE + "BadRequest", "fieldViolations": fields}])


def request_checks(request_type: str, problems: list[tuple[str, str]]) -> Error:
    """Answer semantic checks as Google words them: `* Request.path: text` lines."""
    lines = "".join(f"* {request_type}.{path}: {text}\n" if path else f"* {request_type}: {text}\n"
                    for path, text in problems)
    return error(400, lines)


def not_found_route(path: str) -> Error:
    """Answer a URL no route serves."""
    return error(404, f"The requested URL {path} was not found on this server.")


def method_not_allowed(method: str, path: str, allowed: list[str]) -> Error:
    """Answer a known URL called with the wrong verb."""
    return error(405, f"Method {method} is not allowed for {path}; use {' or '.join(allowed)}.")
