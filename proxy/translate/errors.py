"""Error bodies in each client's own dialect."""
from __future__ import annotations

from typing import Any

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
