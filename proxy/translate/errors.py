"""Error bodies in each client's own dialect."""
from __future__ import annotations

import re
from typing import Any

from .google_errors import error_reasons, is_daily_quota, parse_error_body, retry_delay

# HTTP status → google.rpc status name, as Google's envelope carries it.
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def gemini_error_body(code: int, message: str, status: str | None = None,
                      details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build Google's `{"error": {code, message, status, details?}}` envelope."""
    err: dict[str, Any] = {"code": code, "message": message,
                           "status": status or GOOGLE_STATUS.get(code, "UNKNOWN")}
    if details:
        err["details"] = details
    return {"error": err}


def openai_error_body(message: str, type: str = "invalid_request_error",
                      code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """Build OpenAI's `{"error": {message, type, param, code}}` envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class TranslationError(ValueError):
    """Invalid client input that cannot be translated; becomes a 4xx in the client's dialect."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    def to_openai(self) -> tuple[int, dict[str, Any]]:
        """Return (status, OpenAI error body) for this error."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return self.status, openai_error_body(self.message, kind, self.code, self.param)

    def to_gemini(self) -> tuple[int, dict[str, Any]]:
        """Return (status, Google error envelope) for this error."""
        return self.status, gemini_error_body(self.status, self.message)


# The one mapping for 429s on the OpenAI routes, whoever noticed the limit (Google, the
# pool, or the user key's own limits): what api.openai.com itself sends. A request-rate
# limit is type "requests" / code "rate_limit_exceeded" (the SDK retries it); a spent
# quota, which a retry soon will not cure, is "insufficient_quota" for both.
RATE_LIMITED = ("requests", "rate_limit_exceeded")
QUOTA_SPENT = ("insufficient_quota", "insufficient_quota")


def rate_limit_body(message: str, *, spent: bool) -> dict[str, Any]:
    """Return OpenAI's body for a 429: a rate limit, or (`spent`) a quota used up for the day."""
    kind, code = QUOTA_SPENT if spent else RATE_LIMITED
    return openai_error_body(message, kind, code)


# Gemini's words for a prompt longer than the model's context window: "The input token
# count (1200293) exceeds the maximum number of tokens allowed (1048576)."
_CONTEXT_TOO_LONG = re.compile(r"input token count.*exceeds the maximum", re.I | re.S)
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # the code clients (Codex…) key on


_STATUS_TEXT = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                429: "Too many requests", 500: "Internal error", 502: "Bad gateway",
                503: "Service unavailable", 504: "Gateway timeout"}


def gemini_error_to_openai(status: int, body: bytes | str | dict[str, Any] | list[Any] | None, *,
                           retry_after: float | None = None,
                           spent: bool | None = None) -> tuple[int, dict[str, Any]]:
    """Translate a Google error answer into (status, OpenAI error body).

    The openai SDK picks its exception class from the HTTP status alone and reads
    `error.{message,type,code,param}` from the body, so the status carries the
    meaning and the body mirrors what api.openai.com sends for the same case. For a 429,
    the proxy passes what its pool made of it (`retry_after`, `spent`: the day's quota is
    used up), so the client hears what the pool acts on; without them, the body is read
    as the pool reads it (google_errors), so the two agree on what Google said.
    """
    err = parse_error_body(body)
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = _STATUS_TEXT.get(status, f"Upstream error {status}")
    reasons = error_reasons(err)

    if status == 400 and "API_KEY_INVALID" in reasons:
        return 401, openai_error_body(message, "invalid_request_error", "invalid_api_key")
    if status == 401:
        return 401, openai_error_body(message, "authentication_error", None)
    if status == 403:
        return 403, openai_error_body(message, "permission_error", "permission_denied")
    if status == 404:
        code = "model_not_found" if "model" in message.lower() else "not_found"
        return 404, openai_error_body(message, "invalid_request_error", code)
    if status == 429:
        if retry_after is None:
            retry_after = retry_delay(err)
        if retry_after is not None and "retry" not in message.lower():
            message = f"{message} Please retry in {retry_after:g}s."
        return 429, rate_limit_body(message, spent=is_daily_quota(err) if spent is None else spent)
    if status == 400 and _CONTEXT_TOO_LONG.search(message):
        return 400, openai_error_body(message, "invalid_request_error", CONTEXT_LENGTH_EXCEEDED)
    if status >= 500:
        return status, openai_error_body(message, "server_error", None)
    if 400 <= status < 500:
        return status, openai_error_body(message, "invalid_request_error", None)
    return 502, openai_error_body(message, "server_error", None)
