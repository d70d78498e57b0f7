"""Resumable-upload sessions: signed tokens that stand in for Google's upload URL.

Google answers an upload start with an absolute `x-goog-upload-url`; clients send the
file's bytes there with no API key. The proxy hands out its own URL instead, carrying a
token that names the upstream URL, the key and the user that started the session, the
proxy path it is valid on and when it expires, signed with the database's secret. Any
worker can verify it without shared memory or a database read, and nobody can forge one
to reach another key or stretch one into a credential for other calls.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TOKEN_PARAM = "upload_token"
# Google keeps an unfinished resumable session for about a day; a token outliving it
# would only ever reach a dead session.
TOKEN_TTL = 24 * 3600.0


@dataclass(frozen=True)
class Session:
    """What a genuine token says: where the bytes go, and on whose behalf."""

    key_id: int
    url: str  # the upstream session URL, without any key
    user_id: int
    path: str  # the proxy path the token was issued for, e.g. /upload/v1beta/files
    expires: float


class TokenError(Exception):
    """The token cannot be used here; the message says what to do."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:24]


def strip_key(url: str) -> str:
    """Remove any `key=` parameter from an upstream URL."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "key"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def sign(secret: bytes, *, key_id: int, upstream_url: str, user_id: int, path: str,
         issued_at: float | None = None) -> str:
    """Return a token for one upload session, valid on `path` for TOKEN_TTL seconds."""
    expires = (time.time() if issued_at is None else issued_at) + TOKEN_TTL
    payload = _b64(json.dumps({"k": key_id, "url": strip_key(upstream_url), "user": user_id,
                               "path": path, "exp": round(expires)},
                              separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(secret, payload))}"


def verify(secret: bytes, token: str, path: str, now: float | None = None) -> Session:
    """Return the session of a genuine, unexpired token used on its own path.

    Raises TokenError otherwise, with a message for the client.
    """
    payload, _, mac = token.partition(".")
    try:
        genuine = bool(payload and mac) and hmac.compare_digest(_unb64(mac), _mac(secret, payload))
        data = json.loads(_unb64(payload)) if genuine else None
        session = Session(int(data["k"]), str(data["url"]), int(data["user"]), str(data["path"]),
                          float(data["exp"])) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        session = None
    if session is None:
        raise TokenError("This upload URL was not issued by this proxy (or was altered); "
                         "start the upload again to get a new one.")
    if (time.time() if now is None else now) >= session.expires:
        raise TokenError("This upload URL has expired (upload sessions last 24 hours); "
                         "start the upload again to get a new one.")
    if path != session.path:
        raise TokenError(f"An upload token is valid only on the upload URL it came with "
                         f"({session.path}); authenticate other calls with your user key.")
    return session


def proxy_upload_url(base_url: str, path: str, token: str) -> str:
    """Return the URL the client should send the file's bytes to."""
    return f"{base_url.rstrip('/')}{path}?{urlencode({TOKEN_PARAM: token})}"
