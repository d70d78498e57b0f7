"""Small helpers shared by the store: errors, masking, hashing, clocks."""
from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")
ELLIPSIS = "…"

_GOOGLE_KEY = re.compile(r"[A-Za-z0-9_.\-]{8,256}")


class StoreError(Exception):
    """Raise for anything the store wants to tell a person in one line."""


class NotFound(StoreError):
    """Raise when a reference names no row."""


class KeyNotFound(NotFound):
    """Raise when a Google key reference (id, value, label, masked) matches nothing."""


class UserNotFound(NotFound):
    """Raise when a user reference (id or label) matches nothing."""


class InvalidValue(StoreError, ValueError):
    """Raise when a value given by an operator is malformed."""


def mask_key(value: str) -> str:
    """Return a display form of a secret that never contains the whole value."""
    value = value or ""
    if len(value) <= 10:
        return value[:2] + ELLIPSIS
    return value[:4] + ELLIPSIS + value[-4:]


def hash_user_key(value: str) -> str:
    """Return the sha256 hex digest under which a user key is stored."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def this_host(configured: str = "") -> str:
    """Name this host in the shared database: `configured` (settings.host_name), else the
    PROXY_HOST_NAME environment variable (commands that read no Settings), else the hostname."""
    return configured.strip() or os.environ.get("PROXY_HOST_NAME", "").strip() or socket.gethostname()


def now() -> float:
    """Return the current unix time."""
    return time.time()


def minute_of(ts: float) -> int:
    """Return the stats bucket (unix minute) that `ts` falls in."""
    return int(ts // 60)


def next_pacific_midnight(ts: float) -> float:
    """Return the unix time of the first midnight in America/Los_Angeles after `ts`.

    Google's per-day quotas reset then, so a key spent for the day cools until it.
    """
    local = datetime.fromtimestamp(ts, PACIFIC)
    # Midnight always exists in Los Angeles (DST moves 02:00), so combine is safe.
    tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), PACIFIC)
    return tomorrow.timestamp()


def pacific_day_start(ts: float) -> float:
    """Return the unix time of the last midnight in America/Los_Angeles at or before `ts`."""
    local = datetime.fromtimestamp(ts, PACIFIC)
    return datetime.combine(local.date(), datetime.min.time(), PACIFIC).timestamp()


def pacific_day(ts: float) -> int:
    """Return the Pacific date of `ts` as a number, 20260131: the day Google's quotas count in."""
    local = datetime.fromtimestamp(ts, PACIFIC)
    return local.year * 10000 + local.month * 100 + local.day


def valid_google_key(value: object) -> bool:
    """Tell whether `value` looks like a Google API key (8-256 of [A-Za-z0-9_.-])."""
    return isinstance(value, str) and _GOOGLE_KEY.fullmatch(value) is not None
