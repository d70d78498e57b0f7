"""Manage the pool of Google keys and read the views of it others need."""
from __future__ import annotations

import logging
from typing import Any, Iterable

from sqlite_utils import Database

from .db import LOCK_MERGE, fetch_all, fetch_one, serialize, snapshot, transaction
from .events import add_event
from .rollup import Rollup
from .util import (
    ELLIPSIS,
    InvalidValue,
    KeyNotFound,
    StoreError,
    mask_key,
    now,
    valid_google_key,
)
from .views import keys_overview

log = logging.getLogger(__name__)

MERGE_EVENTS = 20  # keys merged from GOOGLE_KEYS that get an event line each

# Every column except the secret value: what listings and lookups for display return.
_PUBLIC = (
    "id, masked, label, status, invalid_reason, invalid_at, created_at, updated_at, "
    "last_used_at, last_error, rpm_cap"
)


def add_key(db: Database, value: str, label: str | None = None) -> int:
    """Add a Google key and return its id.

    Re-adding a removed key brings it back (active, dead mark cleared); re-adding a key that is
    present in any other state changes nothing and returns its id.
    """
    value = (value or "").strip()
    if not valid_google_key(value):
        raise InvalidValue(f"not a Google API key: {mask_key(value)!s} (expected 8-256 of A-Z a-z 0-9 _ . -)")
    label = _clean_label(label)
    ts = now()
    with transaction(db):
        row = fetch_one(db, "SELECT id, status FROM google_keys WHERE value = ?", (value,))
        if row is not None:
            if row["status"] != "removed":
                return row["id"]
            db.execute(
                "UPDATE google_keys SET status = 'active', invalid_reason = NULL, invalid_at = NULL, "
                "label = coalesce(?, label), updated_at = ? WHERE id = ?",
                (label, ts, row["id"]),
            )
            db.execute("DELETE FROM key_health WHERE key_id = ?", (row["id"],))
            add_event(db, f"key {mask_key(value)} re-added by operator", key_id=row["id"], ts=ts)
            return row["id"]
        key_id = _insert(db, value, label, ts)
        add_event(db, f"key {mask_key(value)} added by operator", key_id=key_id, ts=ts)
        return key_id


def find_key(db: Database, ref: str | int) -> dict[str, Any] | None:
    """Return the key row (value included) that `ref` names, or None.

    `ref` is tried as an id (all digits), then the full value, the label, and the masked form
    (`AIza…x7Qc`, three dots accepted for the ellipsis). When a label or masked form matches
    several keys the ones not removed win; if that still leaves several, StoreError.
    """
    text = str(ref).strip()
    if not text:
        return None
    if text.isdigit():
        row = fetch_one(db, "SELECT * FROM google_keys WHERE id = ?", (int(text),))
        if row is not None:
            return row
    row = fetch_one(db, "SELECT * FROM google_keys WHERE value = ?", (text,))
    if row is not None:
        return row
    for column, wanted in (("label", text), ("masked", text.replace("...", ELLIPSIS))):
        rows = fetch_all(db, f"SELECT * FROM google_keys WHERE {column} = ? ORDER BY id", (wanted,))
        if len(rows) > 1:
            rows = [r for r in rows if r["status"] != "removed"] or rows
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            ids = ", ".join(str(r["id"]) for r in rows)
            raise StoreError(f"{text!r} matches several keys (ids {ids}); use the id")
    return None


def enable_key(db: Database, ref: str | int) -> dict[str, Any]:
    """Make a key active again, forgetting why it was dead, every cooldown and "no quota" mark."""
    return _operator_change(
        db, ref, "enabled",
        "status = 'active', invalid_reason = NULL, invalid_at = NULL",
        clear_health=True,
        clear_limits="value = 0",
    )


def disable_key(db: Database, ref: str | int) -> dict[str, Any]:
    """Stop choosing a key until it is enabled again (its history is kept)."""
    return _operator_change(db, ref, "disabled", "status = 'disabled'")


def remove_key(db: Database, ref: str | int) -> dict[str, Any]:
    """Retire a key: hidden from listings and the pool; re-adding its value brings it back."""
    return _operator_change(db, ref, "removed", "status = 'removed'")


def reset_key(db: Database, ref: str | int) -> dict[str, Any]:
    """Give a key a clean slate: no dead mark, no cooldowns, no last error, no stats history,
    no learned limits (the operator's own limits stay)."""
    return _operator_change(
        db, ref, "reset",
        "invalid_reason = NULL, invalid_at = NULL, last_error = NULL",
        clear_health=True,
        clear_stats=True,
        clear_limits="1 = 1",
    )


def set_rpm_cap(db: Database, ref: str | int, rpm: int) -> dict[str, Any]:
    """Cap the requests per minute the pool sends a key for each model (0 lifts the cap).

    Set it a little below Google's limit for the key's tier, and the pool paces itself
    instead of collecting 429s.
    """
    if isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 0:
        raise InvalidValue("rpm must be a whole number ≥ 0 (0 = no cap)")
    verb = f"capped at {rpm} requests/minute per model" if rpm else "uncapped"
    return _operator_change(db, ref, verb, f"rpm_cap = {rpm or 'NULL'}")


def merge_env_keys(db: Database, google_keys: Iterable[str], remove_keys: Iterable[str]) -> dict[str, int]:
    """Merge GOOGLE_KEYS / REMOVE_GOOGLE_KEYS into the table; running it again changes nothing.

    Keys already known are left as they are whatever their status, so a key the operator
    removed or disabled in the console stays that way across restarts. Malformed entries are
    skipped (counted in "skipped") rather than stopping the proxy from starting. Every worker
    runs this at start: it reads the known values once and inserts the new ones in one
    statement, so 10,000 keys take well under a second.
    """
    ts = now()
    counts = {"added": 0, "removed": 0, "skipped": 0}
    wanted = _unique(google_keys)
    dropped = _unique(remove_keys)
    with transaction(db):
        serialize(db, LOCK_MERGE)  # hosts starting together: the second sees the first's keys
        known = dict(db.execute("SELECT value, id FROM google_keys").fetchall())
        fresh = []
        for value in wanted:
            if not valid_google_key(value):
                counts["skipped"] += 1
                log.warning("GOOGLE_KEYS entry %s is not a valid key; skipped", mask_key(value))
                continue
            if value not in known:
                known[value] = None
                fresh.append(value)
        if fresh:
            db.conn.executemany(
                "INSERT INTO google_keys (value, masked, label, status, created_at, updated_at) "
                "VALUES (?, ?, NULL, 'active', ?, ?)", [(v, mask_key(v), ts, ts) for v in fresh])
            ids = dict(fetch_all_pairs(db, fresh))
            # One event per key reads well for a few; thousands get one line for the rest.
            for value in fresh[:MERGE_EVENTS]:
                add_event(db, f"key {mask_key(value)} added from GOOGLE_KEYS", key_id=ids.get(value), ts=ts)
            if len(fresh) > MERGE_EVENTS:
                add_event(db, f"{len(fresh) - MERGE_EVENTS} more keys added from GOOGLE_KEYS", ts=ts)
            counts["added"] = len(fresh)
        for value in dropped:
            row = fetch_one(db, "SELECT id, status FROM google_keys WHERE value = ?", (value,))
            if row is None or row["status"] == "removed":
                continue
            db.execute(
                "UPDATE google_keys SET status = 'removed', updated_at = ? WHERE id = ?", (ts, row["id"])
            )
            add_event(db, f"key {mask_key(value)} removed by REMOVE_GOOGLE_KEYS", key_id=row["id"], ts=ts)
            counts["removed"] += 1
    return counts


def fetch_all_pairs(db: Database, values: list[str]) -> list[tuple[str, int]]:
    """Return (value, id) for the keys among `values` (in chunks: SQLite caps bound parameters)."""
    out: list[tuple[str, int]] = []
    for i in range(0, len(values), 500):
        chunk = values[i:i + 500]
        out += db.execute(f"SELECT value, id FROM google_keys WHERE value IN ({', '.join('?' * len(chunk))})",
                          chunk).fetchall()
    return out


def list_keys(db: Database, window_minutes: int = 15, *, include_removed: bool = False) -> list[dict[str, Any]]:
    """Describe every key for display (never the value), with health and usage.

    The figures are the console's (views.keys_overview), so the CLI and the console never
    disagree: state (usable, cooling, sick, dead, disabled, removed), success rate over the
    last `window_minutes`, failures over the last 5 and 60 minutes, tries and tokens since
    midnight Pacific (when Google's per-day quotas reset), the RPM limit's use this minute,
    and per model the requests today and this minute against the limits the pool paces by.
    """
    return keys_overview(db, Rollup(), now=now(), window_minutes=max(1, window_minutes),
                         include_removed=include_removed)


def pool_view(db: Database, pins_after_seq: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Return, in one consistent read, the keys, rests, users and pins (a full view).

    The proxy's pool reads through store.poolfeed.PoolFeed instead, which adds limits and
    usage and afterwards reads only what changed. keys: every key not removed, value
    included; health: cooldowns still running; users:
    active users; pins: pins with seq > `pins_after_seq`, oldest first (pass the highest seq
    seen so far to receive only new ones).
    """
    ts = now()
    with snapshot(db):
        return {
            "keys": fetch_all(
                db,
                "SELECT id, value, masked, label, status, invalid_reason, invalid_at, updated_at, rpm_cap "
                "FROM google_keys WHERE status != 'removed' ORDER BY id",
            ),
            "health": fetch_all(
                db, "SELECT key_id, model, cool_until, reason FROM key_health WHERE cool_until > ?", (ts,)
            ),
            "users": fetch_all(
                db,
                "SELECT id, label, key_hash, status, updated_at, rpm_limit, tpd_limit, allowed_models "
                "FROM users WHERE status = 'active' ORDER BY id",
            ),
            "pins": fetch_all(
                db, "SELECT seq, name, key_id FROM pins WHERE seq > ? ORDER BY seq", (pins_after_seq,)
            ),
        }


def _operator_change(
    db: Database,
    ref: str | int,
    verb: str,
    assignments: str,
    *,
    clear_health: bool = False,
    clear_stats: bool = False,
    clear_limits: str | None = None,
) -> dict[str, Any]:
    """Apply one operator action to a key, stamp updated_at and log an event; return the new row."""
    ts = now()
    with transaction(db):
        row = find_key(db, ref)
        if row is None:
            raise KeyNotFound(f"no key matches {str(ref)!r} (use an id, label or masked form from `keys list`)")
        db.execute(f"UPDATE google_keys SET {assignments}, updated_at = ? WHERE id = ?", (ts, row["id"]))
        if clear_health:
            db.execute("DELETE FROM key_health WHERE key_id = ?", (row["id"],))
        if clear_stats:
            db.execute("DELETE FROM stats_minute WHERE key_id = ?", (row["id"],))
        if clear_limits:  # learned ones only, those matching the condition
            db.execute(f"DELETE FROM key_limits WHERE key_id = ? AND source = 'learned' AND {clear_limits}",
                       (row["id"],))
        add_event(db, f"key {row['masked']} {verb} by operator", key_id=row["id"], ts=ts)
        return fetch_one(db, f"SELECT {_PUBLIC} FROM google_keys WHERE id = ?", (row["id"],)) or {}


def _insert(db: Database, value: str, label: str | None, ts: float) -> int:
    # Plain SQL with RETURNING (not sqlite-utils' insert/last_pk): the same on both backends.
    row = db.execute(
        "INSERT INTO google_keys (value, masked, label, status, created_at, updated_at) "
        "VALUES (?, ?, ?, 'active', ?, ?) RETURNING id", (value, mask_key(value), label, ts, ts)).fetchone()
    return int(row[0])


def _clean_label(label: str | None) -> str | None:
    if label is None:
        return None
    label = label.strip()
    if len(label) > 100:
        raise InvalidValue("label is longer than 100 characters")
    return label or None


def _unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values or ():
        value = (value or "").strip()
        if value:
            seen.setdefault(value, None)
    return list(seen)


def census(db: Database) -> dict[str, int]:
    """Count what the pool can use: usable Google keys and active user keys."""
    keys = db.execute("SELECT count(*) FROM google_keys WHERE status = 'active' "
                      "AND invalid_reason IS NULL").fetchone()[0]
    users = db.execute("SELECT count(*) FROM users WHERE status = 'active'").fetchone()[0]
    return {"usable_keys": keys, "users": users}
