"""Manage user keys: who may call the proxy, and their limits.

Only the sha256 of a user key is stored, so a copy of the database does not let anyone in.
"""
from __future__ import annotations

import re
import secrets
from typing import Any, Iterable

from sqlite_utils import Database

from .db import LOCK_MERGE, fetch_all, fetch_one, serialize, snapshot, transaction
from .events import add_event
from .util import (
    InvalidValue,
    StoreError,
    UserNotFound,
    hash_user_key,
    mask_key,
    minute_of,
    now,
    pacific_day_start,
)

KEY_PREFIX = "gp-"
MIN_KEY_LENGTH = 16
_LABEL = re.compile(r"[^\s|]{1,100}")
_PUBLIC = "id, label, masked, status, created_at, updated_at, rpm_limit, tpd_limit, allowed_models"


def generate_key() -> str:
    """Return a fresh user key (gp- and 32 url-safe characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def add_user(db: Database, label: str, key: str | None = None) -> tuple[int, str]:
    """Create a user and return (id, key): the only moment the plain key is available.

    A label that belonged to a removed user is reused: that row comes back with the new key.
    """
    label = _check_label(label)
    key = generate_key() if key is None else key.strip()
    # 16+ characters: the masked form shows 8 of them, so a shorter key would be mostly visible.
    if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
        raise InvalidValue(f"a user key needs at least {MIN_KEY_LENGTH} characters and no spaces")
    key_hash = hash_user_key(key)
    ts = now()
    with transaction(db):
        clash = fetch_one(db, "SELECT id, label, status FROM users WHERE key_hash = ?", (key_hash,))
        # A removed user may get their own key back under their own label; nobody else may.
        if clash is not None and not (clash["label"] == label and clash["status"] == "removed"):
            raise StoreError(f"that key already belongs to user {clash['label']!r}")
        old = fetch_one(db, "SELECT id, status FROM users WHERE label = ?", (label,))
        if old is not None and old["status"] != "removed":
            raise StoreError(f"user {label!r} already exists (id {old['id']})")
        if old is not None:
            db.execute(
                "UPDATE users SET key_hash = ?, masked = ?, status = 'active', updated_at = ? WHERE id = ?",
                (key_hash, mask_key(key), ts, old["id"]),
            )
            user_id = int(old["id"])
        else:
            user_id = _insert(db, label, key_hash, mask_key(key), ts)
        add_event(db, f"user {label} added by operator", ts=ts)
    return user_id, key


def merge_env_users(db: Database, user_keys: Iterable[str]) -> dict[str, int]:
    """Merge USER_KEYS into the table, matching by hash; running it again changes nothing.

    New keys get the label "env-" + the first 6 hex digits of their hash. A key whose user the
    operator removed stays removed.
    """
    ts = now()
    added = 0
    with transaction(db):
        serialize(db, LOCK_MERGE)  # hosts starting together: the second sees the first's users
        for key in dict.fromkeys(k.strip() for k in user_keys or () if k and k.strip()):
            key_hash = hash_user_key(key)
            if fetch_one(db, "SELECT id FROM users WHERE key_hash = ?", (key_hash,)) is not None:
                continue
            label = _free_label(db, key_hash)
            _insert(db, label, key_hash, mask_key(key), ts)
            add_event(db, f"user {label} added from USER_KEYS", ts=ts)
            added += 1
    return {"added": added}


def find_user(db: Database, ref: str | int) -> dict[str, Any] | None:
    """Return the user row `ref` names (an id, or a label), or None."""
    text = str(ref).strip()
    if text.isdigit():
        row = fetch_one(db, f"SELECT {_PUBLIC} FROM users WHERE id = ?", (int(text),))
        if row is not None:
            return row
    return fetch_one(db, f"SELECT {_PUBLIC} FROM users WHERE label = ?", (text,))


def list_users(db: Database, *, include_removed: bool = False) -> list[dict[str, Any]]:
    """Describe every user (never the key) with limits and usage today and over 7 days.

    "Today" starts at the last midnight in America/Los_Angeles, like the key listing; the
    7 days are the last 7×24 hours.
    """
    ts = now()
    day_start = minute_of(pacific_day_start(ts))
    week_start = minute_of(ts - 7 * 86400)
    where = "" if include_removed else "WHERE status != 'removed'"
    with snapshot(db):
        users = fetch_all(db, f"SELECT {_PUBLIC} FROM users {where} ORDER BY id")
        usage = {
            r["user_id"]: r
            for r in fetch_all(
                db,
                "SELECT user_id, "
                "sum(CASE WHEN minute >= :day THEN requests ELSE 0 END) AS requests_today, "
                "sum(CASE WHEN minute >= :day THEN tokens_in + tokens_out ELSE 0 END) AS tokens_today, "
                "sum(requests) AS requests_7d, sum(tokens_in + tokens_out) AS tokens_7d "
                "FROM stats_minute WHERE minute >= :week AND user_id != 0 GROUP BY user_id",
                {"day": day_start, "week": week_start},
            )
        }
    out = []
    for user in users:
        u = usage.get(user["id"], {})
        out.append({
            **user,
            "models": split_models(user["allowed_models"]),
            **{k: u.get(k) or 0 for k in ("requests_today", "tokens_today", "requests_7d", "tokens_7d")},
        })
    return out


def remove_user(db: Database, ref: str | int) -> dict[str, Any]:
    """Revoke a user: their key stops working at the pools' next refresh."""
    ts = now()
    with transaction(db):
        user = _require(db, ref)
        db.execute("UPDATE users SET status = 'removed', updated_at = ? WHERE id = ?", (ts, user["id"]))
        add_event(db, f"user {user['label']} removed by operator", ts=ts)
        return _require(db, user["id"])


def set_limits(
    db: Database,
    ref: str | int,
    rpm: int | None = None,
    tpd: int | None = None,
    models: str | Iterable[str] | None = None,
) -> dict[str, Any]:
    """Change a user's limits; None leaves a limit as it is, 0 (or "" / [] for models) lifts it.

    rpm: requests per minute; tpd: tokens per day; models: allowed model names, as a list or
    a "a|b" / "a,b" string, stored pipe-separated.
    """
    sets: dict[str, Any] = {}
    for column, value in (("rpm_limit", rpm), ("tpd_limit", tpd)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidValue(f"{column.split('_')[0]} must be a whole number ≥ 0 (0 = no limit)")
        sets[column] = value or None
    if models is not None:
        names = split_models(models) if isinstance(models, str) else [m.strip() for m in models if m.strip()]
        sets["allowed_models"] = "|".join(dict.fromkeys(names)) or None
    ts = now()
    with transaction(db):
        user = _require(db, ref)
        if sets:
            assignments = ", ".join(f"{c} = ?" for c in sets)
            db.execute(
                f"UPDATE users SET {assignments}, updated_at = ? WHERE id = ?",
                (*sets.values(), ts, user["id"]),
            )
            add_event(db, f"user {user['label']} limits changed by operator", ts=ts)
        return _require(db, user["id"])


def split_models(value: str | None) -> list[str]:
    """Split a stored or typed model list ("a|b", "a,b") into names."""
    if not value:
        return []
    return [m.strip() for m in re.split(r"[|,]", value) if m.strip()]


def _require(db: Database, ref: str | int) -> dict[str, Any]:
    user = find_user(db, ref)
    if user is None:
        raise UserNotFound(f"no user matches {str(ref)!r} (use an id or label from `users list`)")
    return user


def _insert(db: Database, label: str, key_hash: str, masked: str, ts: float) -> int:
    row = db.execute(
        "INSERT INTO users (label, key_hash, masked, status, created_at, updated_at) "
        "VALUES (?, ?, ?, 'active', ?, ?) RETURNING id", (label, key_hash, masked, ts, ts)).fetchone()
    return int(row[0])


def _free_label(db: Database, key_hash: str) -> str:
    """Return "env-" + the shortest prefix of the hash (6 hex or more) no user has as label."""
    for size in range(6, len(key_hash) + 1):
        label = "env-" + key_hash[:size]
        if fetch_one(db, "SELECT 1 AS x FROM users WHERE label = ?", (label,)) is None:
            return label
    raise StoreError("no free label for an environment user")  # pragma: no cover


def _check_label(label: str) -> str:
    label = (label or "").strip()
    if not _LABEL.fullmatch(label):
        raise InvalidValue("a user label needs 1-100 characters without spaces or '|'")
    if label.isdigit():
        # All-digit labels would be taken for ids by every command that accepts a reference.
        raise InvalidValue("a user label cannot be only digits (it would read as an id)")
    return label
