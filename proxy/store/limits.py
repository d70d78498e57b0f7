"""Each key's quota limits: learned from Google's 429s, or set by the operator.

A limit is per (key, model, kind), kind one of rpm (requests per minute), rpd (requests per
day, counted from midnight Pacific) and tpm (input tokens per minute). The proxy's writer
records what a 429 named (source 'learned'); an operator's limit (source 'operator', model
'' for every model) overrides it. A learned limit of 0 means the key's tier has no quota
for that model: the pool leaves the pair alone until the next midnight Pacific.

The older per-key RPM cap (`google_keys.rpm_cap`, every model) is the operator's rpm limit
for model ''; it stays in its column so existing tools keep reading it.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple

from sqlite_utils import Database

from .db import fetch_all, transaction
from .events import add_event
from .util import InvalidValue, KeyNotFound, now

KINDS: dict[str, str] = {"rpm": "requests/minute", "rpd": "requests/day", "tpm": "input tokens/minute"}


def limit_said(kind: str, value: int, model: str = "") -> str:
    """Say what setting an operator limit did, as the CLI and the console report it.

    The all-model RPM is the per-model cap of the key; the other limits without a model
    apply to each model on its own.
    """
    if kind == "rpm" and not model:
        return f"capped at {value}/min per model" if value else "uncapped"
    if value:
        return f"limited to {value} {KINDS[kind]} " + (f"for {model}" if model else "per model")
    return f"{KINDS[kind]} limit lifted for {model or 'every model'}"


class Limit(NamedTuple):
    """One quota limit of a (key, model)."""

    value: int
    source: str = "learned"  # or "operator"
    at: float = 0.0  # when it was learned or set


# A key's limits for one model (or for every model, ""): {(kind, source): Limit}
Held = Mapping[tuple[str, str], Limit]


def in_force(own: Held, every: Held, rpm_cap: int | None) -> dict[str, Limit]:
    """Return, per kind, the limit that applies to one (key, model).

    The operator's limit for the model wins, then theirs for every model (the RPM cap is
    the rpm one), then the one learned from Google. The pool paces by this and the console
    shows it: one rule for both.
    """
    out: dict[str, Limit] = {}
    for kind in KINDS:
        lim = own.get((kind, "operator")) or every.get((kind, "operator"))
        if lim is None and kind == "rpm" and rpm_cap:
            lim = Limit(rpm_cap, "operator")
        lim = lim or own.get((kind, "learned"))
        if lim is not None:
            out[kind] = lim
    return out


def held_by_pair(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[int, str], dict[tuple[str, str], Limit]]:
    """Group key_limits rows as {(key_id, model): {(kind, source): Limit}}."""
    out: dict[tuple[int, str], dict[tuple[str, str], Limit]] = {}
    for row in rows:
        if row["kind"] in KINDS and row["value"] is not None:
            out.setdefault((row["key_id"], row["model"] or ""), {})[(row["kind"], row["source"])] = \
                Limit(int(row["value"]), row["source"], row.get("learned_at") or 0.0)
    return out


def set_limit(db: Database, ref: str | int, kind: str, value: int, model: str = "") -> dict[str, Any]:
    """Set the operator's limit for a key (for `model`, or every model); 0 lifts it.

    Return the key's public row.
    """
    if kind not in KINDS:
        raise InvalidValue(f"unknown limit {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(f"{kind} must be a whole number ≥ 0 (0 lifts the limit)")
    model = _model(model)
    if kind == "rpm" and not model:
        from .keys import set_rpm_cap  # keys → views → this module: imported when used

        return set_rpm_cap(db, ref, value)
    ts = now()
    with transaction(db):
        row = _key(db, ref)
        if value:
            db.execute(
                "INSERT INTO key_limits (key_id, model, kind, source, value, learned_at, updated_at) "
                "VALUES (?, ?, ?, 'operator', ?, ?, ?) ON CONFLICT(key_id, model, kind, source) "
                "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (row["id"], model, kind, value, ts, ts))
            what = f"limited to {value} {KINDS[kind]}"
        else:
            db.execute("DELETE FROM key_limits WHERE key_id = ? AND model = ? AND kind = ? "
                       "AND source = 'operator'", (row["id"], model, kind))
            what = f"{KINDS[kind]} limit lifted"
        add_event(db, f"key {row['masked']} {what} for {model or 'every model'} by operator",
                  key_id=row["id"], model=model or None, ts=ts)
    return {k: v for k, v in row.items() if k != "value"}


def forget_learned(db: Database, ref: str | int, model: str | None = None) -> int:
    """Forget the limits learned for a key (for one model, or all); return how many went.

    "No quota" marks go too, so the pool tries the pair again at once.
    """
    ts = now()
    with transaction(db):
        row = _key(db, ref)
        sql, params = "DELETE FROM key_limits WHERE key_id = ? AND source = 'learned'", [row["id"]]
        if model:
            sql += " AND model = ?"
            params.append(_model(model))
        gone = db.execute(sql, params).rowcount or 0
        if gone:
            add_event(db, f"key {row['masked']}: {gone} learned limit(s) forgotten by operator"
                      + (f" for {model}" if model else ""), key_id=row["id"], ts=ts)
    return gone


def key_limits(db: Database, key_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Return limit rows (every key's, or those of `key_ids`), ordered by key, model, kind."""
    cols = "key_id, model, kind, source, value, learned_at, updated_at"
    if key_ids is None:
        return fetch_all(db, f"SELECT {cols} FROM key_limits ORDER BY key_id, model, kind, source")
    ids = list(key_ids)
    if not ids:
        return []
    return fetch_all(db, f"SELECT {cols} FROM key_limits WHERE key_id IN ({', '.join('?' * len(ids))}) "
                         "ORDER BY key_id, model, kind, source", ids)


def _key(db: Database, ref: str | int) -> dict[str, Any]:
    from .keys import find_key  # keys → views → this module: imported when used

    row = find_key(db, ref)
    if row is None:
        raise KeyNotFound(f"no key matches {str(ref)!r} (use an id, label or masked form from `keys list`)")
    return row


def _model(model: str | None) -> str:
    model = (model or "").strip().removeprefix("models/")
    if len(model) > 200 or any(c.isspace() for c in model):
        raise InvalidValue(f"not a model name: {model[:40]!r}")
    return model
