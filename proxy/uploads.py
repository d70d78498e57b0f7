"""Resumable-upload sessions: signed tokens that stand in for Google's upload URL.

Google answers an upload start with an absolute `x-goog-upload-url`; clients send the
file's bytes there with no API key. The proxy hands out its own URL instead, carrying a
token that names the upstream URL and the key that started the session, signed with the
database's secret. Any worker can verify it without shared memory or a database read,
and nobody can forge one to reach another key.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TOKEN_PARAM = "upload_token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def strip_key(url: str) -> str:
    """Remove any `key=` parameter from an upstream URL."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "key"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def sign(secret: bytes, key_id: int, upstream_url: str) -> str:
    """Return a token binding `upstream_url` to `key_id`."""
    payload = _b64(json.dumps({"k": key_id, "u": strip_key(upstream_url)},
                              separators=(",", ":")).encode())
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:24]
    return f"{payload}.{_b64(mac)}"


def verify(secret: bytes, token: str) -> tuple[int, str] | None:
    """Return (key_id, upstream_url) for a genuine token, else None."""
    payload, _, mac = token.partition(".")
    if not payload or not mac:
        return None
    expected = hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:24]
    try:
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        data = json.loads(_unb64(payload))
        return int(data["k"]), str(data["u"])
    except (ValueError, KeyError, TypeError):
        return None


def proxy_upload_url(base_url: str, path: str, token: str) -> str:
    """Return the URL the client should send the file's bytes to."""
    return f"{base_url.rstrip('/')}{path}?{urlencode({TOKEN_PARAM: token})}"
