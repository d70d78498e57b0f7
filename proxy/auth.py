"""Find the user key a client presented; the check itself is KeyPool.authenticate."""
from __future__ import annotations

from typing import Mapping


def presented_key(headers: Mapping[str, str], args: Mapping[str, str]) -> str | None:
    """Return the user key from X-Goog-Api-Key, X-API-Key, ?key= or Authorization: Bearer."""
    for name in ("x-goog-api-key", "x-api-key"):
        value = headers.get(name)
        if value:
            return value.strip()
    value = args.get("key")
    if value:
        return value.strip()
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def has_gemini_key(headers: Mapping[str, str], args: Mapping[str, str]) -> bool:
    """Whether a request carries a key the way native Gemini clients send it."""
    return bool(headers.get("x-goog-api-key") or args.get("key"))
