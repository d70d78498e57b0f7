"""Masking, hashing and clocks."""
from __future__ import annotations

import hashlib
from datetime import datetime
from zoneinfo import ZoneInfo

from proxy.store.util import (
    hash_user_key,
    mask_key,
    minute_of,
    next_pacific_midnight,
    pacific_day_start,
    valid_google_key,
)

LA = ZoneInfo("America/Los_Angeles")


def test_mask_key():
    assert mask_key("fake-key-0001-abcd") == "fake…abcd"
    assert mask_key("short-key1") == "sh…"
    assert mask_key("") == "…"
    for value in ("fake-key-0001-abcd", "short-key1", "abcdefghijk"):
        assert value not in mask_key(value)


def test_hash_user_key():
    assert hash_user_key("gp-secret") == hashlib.sha256(b"gp-secret").hexdigest()


def test_minute_of():
    assert minute_of(0) == 0
    assert minute_of(119.9) == 1
    assert minute_of(1_700_000_000) == 1_700_000_000 // 60


def local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, LA)


def test_next_pacific_midnight_plain_day():
    ts = datetime(2025, 6, 10, 15, 30, tzinfo=LA).timestamp()
    midnight = next_pacific_midnight(ts)
    assert local(midnight) == datetime(2025, 6, 11, 0, 0, tzinfo=LA)
    assert midnight - ts == 8.5 * 3600


def test_next_pacific_midnight_at_midnight_is_the_next_day():
    ts = datetime(2025, 6, 10, 0, 0, tzinfo=LA).timestamp()
    assert next_pacific_midnight(ts) == ts + 86400
    assert pacific_day_start(ts) == ts


def test_next_pacific_midnight_across_dst():
    # 2025-03-09 is 23 hours long in Los Angeles, 2025-11-02 is 25.
    spring = datetime(2025, 3, 9, 1, 0, tzinfo=LA).timestamp()
    assert next_pacific_midnight(spring) - spring == 22 * 3600
    fall = datetime(2025, 11, 2, 0, 30, tzinfo=LA).timestamp()
    assert next_pacific_midnight(fall) - fall == 24.5 * 3600
    assert local(next_pacific_midnight(fall)).hour == 0


def test_valid_google_key():
    assert valid_google_key("fake-key-0001")
    assert valid_google_key("a.b_c-d1")
    assert not valid_google_key("short")
    assert not valid_google_key("has space in it")
    assert not valid_google_key("x" * 257)
    assert not valid_google_key("fake-key-0001\n")
    assert not valid_google_key(None)
