"""Key administration, listings and the pool view."""
from __future__ import annotations

import time

import pytest

from proxy.store import (
    InvalidValue,
    KeyNotFound,
    StoreError,
    add_key,
    add_user,
    disable_key,
    enable_key,
    find_key,
    list_keys,
    merge_env_keys,
    migrate,
    open_db,
    pin,
    pool_view,
    remove_key,
    reset_key,
)
from proxy.store.util import minute_of


@pytest.fixture
def db(db_url):
    database = open_db(db_url)
    migrate(database)
    yield database
    database.close()


def row(db, key_id):
    return db["google_keys"].get(key_id)


def events(db):
    return [r[0] for r in db.conn.execute("SELECT message FROM events ORDER BY id")]


def test_add_key(db):
    key_id = add_key(db, "fake-key-0001-abcd", label="main")
    r = row(db, key_id)
    assert (r["value"], r["masked"], r["label"], r["status"]) == ("fake-key-0001-abcd", "fake…abcd", "main", "active")
    assert r["created_at"] == r["updated_at"] and r["created_at"] > 0
    assert events(db) == ["key fake…abcd added by operator"]


def test_add_key_validates(db):
    with pytest.raises(InvalidValue):
        add_key(db, "bad key")
    with pytest.raises(InvalidValue):
        add_key(db, "")


def test_add_existing_returns_same_id_unchanged(db):
    key_id = add_key(db, "fake-key-0001")
    disable_key(db, key_id)
    before = row(db, key_id)
    assert add_key(db, " fake-key-0001 ", label="other") == key_id
    assert row(db, key_id) == before


def test_readding_removed_key_reactivates_it(db):
    key_id = add_key(db, "fake-key-0001")
    db.execute("UPDATE google_keys SET invalid_reason = 'API_KEY_INVALID' WHERE id = ?", (key_id,))
    remove_key(db, key_id)
    assert add_key(db, "fake-key-0001", label="back") == key_id
    r = row(db, key_id)
    assert (r["status"], r["invalid_reason"], r["label"]) == ("active", None, "back")


def test_find_key_by_every_ref(db):
    key_id = add_key(db, "fake-key-0001-wxyz", label="team-a")
    for ref in (key_id, str(key_id), "fake-key-0001-wxyz", "team-a", "fake…wxyz", "fake...wxyz"):
        assert find_key(db, ref)["id"] == key_id, ref
    assert find_key(db, "nothing-like-it") is None
    assert find_key(db, "999") is None


def test_find_key_ambiguous_label(db):
    add_key(db, "fake-key-0001", label="same")
    add_key(db, "fake-key-0002", label="same")
    with pytest.raises(StoreError, match="several keys"):
        find_key(db, "same")
    remove_key(db, "fake-key-0001")
    assert find_key(db, "same")["value"] == "fake-key-0002"


def test_disable_enable_remove(db):
    key_id = add_key(db, "fake-key-0001-abcd")
    db.execute("UPDATE google_keys SET updated_at = 0 WHERE id = ?", (key_id,))
    assert disable_key(db, "fake…abcd")["status"] == "disabled"
    assert row(db, key_id)["updated_at"] > 0
    db.execute(
        "UPDATE google_keys SET invalid_reason = 'API_KEY_INVALID', invalid_at = 1 WHERE id = ?", (key_id,)
    )
    db.execute("INSERT INTO key_health (key_id, model, cool_until) VALUES (?, 'm', ?)", (key_id, time.time() + 60))
    enabled = enable_key(db, key_id)
    assert (enabled["status"], enabled["invalid_reason"], enabled["invalid_at"]) == ("active", None, None)
    assert "value" not in enabled
    assert db["key_health"].count == 0
    assert remove_key(db, key_id)["status"] == "removed"
    assert events(db)[-3:] == [
        "key fake…abcd disabled by operator",
        "key fake…abcd enabled by operator",
        "key fake…abcd removed by operator",
    ]


def test_unknown_ref(db):
    for action in (enable_key, disable_key, remove_key, reset_key):
        with pytest.raises(KeyNotFound):
            action(db, "no-such-key")
    assert issubclass(KeyNotFound, StoreError)


def test_reset_key(db):
    key_id = add_key(db, "fake-key-0001")
    other = add_key(db, "fake-key-0002")
    disable_key(db, key_id)
    db.execute(
        "UPDATE google_keys SET invalid_reason = 'dead', invalid_at = 1, last_error = 'boom' WHERE id = ?",
        (key_id,),
    )
    db.execute("INSERT INTO key_health (key_id, model, cool_until) VALUES (?, 'm', 1e12)", (key_id,))
    for k in (key_id, other):
        db.execute("INSERT INTO stats_minute (minute, key_id, ok) VALUES (1, ?, 5)", (k,))
    reset_key(db, key_id)
    r = row(db, key_id)
    assert (r["invalid_reason"], r["invalid_at"], r["last_error"], r["status"]) == (None, None, None, "disabled")
    assert db["key_health"].count == 0
    assert [x[0] for x in db.conn.execute("SELECT key_id FROM stats_minute")] == [other]
    assert events(db)[-1] == "key fake…0001 reset by operator"


def test_merge_env_keys_is_idempotent(db):
    first = merge_env_keys(db, ["fake-key-0001", "fake-key-0002", "fake-key-0002", " ", "bad key"], [])
    assert first == {"added": 2, "removed": 0, "skipped": 1}
    assert merge_env_keys(db, ["fake-key-0001", "fake-key-0002"], []) == {"added": 0, "removed": 0, "skipped": 0}
    assert db["google_keys"].count == 2
    assert merge_env_keys(db, ["fake-key-0001", "fake-key-0002"], ["fake-key-0002", "fake-key-9999"]) == {
        "added": 0, "removed": 1, "skipped": 0,
    }
    again = merge_env_keys(db, ["fake-key-0001", "fake-key-0002"], ["fake-key-0002"])
    assert again == {"added": 0, "removed": 0, "skipped": 0}
    assert find_key(db, "fake-key-0002")["status"] == "removed"
    assert find_key(db, "fake-key-0001")["label"] is None


def test_merge_env_keys_respects_operator_choices(db):
    merge_env_keys(db, ["fake-key-0001"], [])
    disable_key(db, "fake-key-0001")
    merge_env_keys(db, ["fake-key-0001"], [])
    assert find_key(db, "fake-key-0001")["status"] == "disabled"


def put_stats(db, key_id, minute, **counts):
    cols = ", ".join(["minute", "key_id", *counts])
    marks = ", ".join("?" * (2 + len(counts)))
    db.execute(f"INSERT INTO stats_minute ({cols}) VALUES ({marks})", (minute, key_id, *counts.values()))


def test_list_keys_success_rate_cooldowns_and_today(db):
    a = add_key(db, "fake-key-000a", label="a")
    b = add_key(db, "fake-key-000b")
    c = add_key(db, "fake-key-000c")
    remove_key(db, c)
    now_minute = minute_of(time.time())
    put_stats(db, a, now_minute, requests=4, ok=3, rate_limited=1, client_error=5, tokens_in=100, tokens_out=20)
    put_stats(db, a, now_minute - 5, ok=1, upstream_error=1, key_dead=0)
    put_stats(db, a, now_minute - 60, ok=0, key_dead=50)  # outside the 15 minute window
    put_stats(db, b, now_minute, client_error=3, rejected=2)
    ts = time.time()
    db.execute("INSERT INTO key_health VALUES (?, 'gemini-pro', ?, 'per-minute', 'x', ?)", (a, ts + 120, ts))
    db.execute("INSERT INTO key_health VALUES (?, 'gemini-old', ?, 'per-minute', 'x', ?)", (a, ts - 1, ts))
    keys = {k["id"]: k for k in list_keys(db)}
    assert set(keys) == {a, b}
    assert keys[a]["success_rate"] == pytest.approx(4 / 6)
    assert keys[b]["success_rate"] is None  # client errors say nothing about the key
    assert [c["model"] for c in keys[a]["cooldowns"]] == ["gemini-pro"]
    assert keys[a]["cooldowns"][0]["cool_until"] == pytest.approx(ts + 120)
    assert keys[b]["cooldowns"] == []
    assert keys[a]["requests_today"] == 4 and keys[a]["tokens_today"] == 120
    assert all("value" not in k for k in keys.values())
    assert {k["id"] for k in list_keys(db, include_removed=True)} == {a, b, c}


def test_pool_view(db):
    a = add_key(db, "fake-key-000a")
    b = add_key(db, "fake-key-000b")
    gone = add_key(db, "fake-key-000c")
    remove_key(db, gone)
    disable_key(db, b)
    ts = time.time()
    db.execute("INSERT INTO key_health VALUES (?, 'm1', ?, 'r', NULL, ?)", (a, ts + 60, ts))
    db.execute("INSERT INTO key_health VALUES (?, 'm2', ?, 'r', NULL, ?)", (a, ts - 60, ts))
    alice, _ = add_user(db, "alice")
    pin(db, "files/one", a)
    pin(db, "files/two", b)
    view = pool_view(db)
    assert {k["id"]: k["status"] for k in view["keys"]} == {a: "active", b: "disabled"}
    assert set(view["keys"][0]) == {
        "id", "value", "masked", "label", "status", "invalid_reason", "invalid_at", "updated_at", "rpm_cap",
    }
    assert view["keys"][0]["value"] == "fake-key-000a"
    assert [(h["key_id"], h["model"]) for h in view["health"]] == [(a, "m1")]
    assert [u["id"] for u in view["users"]] == [alice]
    assert set(view["users"][0]) == {
        "id", "label", "key_hash", "status", "updated_at", "rpm_limit", "tpd_limit", "allowed_models",
    }
    pins = view["pins"]
    assert [(p["name"], p["key_id"]) for p in pins] == [("files/one", a), ("files/two", b)]
    assert pool_view(db, pins_after_seq=pins[0]["seq"])["pins"] == [pins[1]]
    assert pool_view(db, pins_after_seq=pins[1]["seq"])["pins"] == []


def test_pool_view_is_fast_with_thousands_of_rows(db):
    db.execute("BEGIN")
    for i in range(3000):
        db.execute(
            "INSERT INTO google_keys (value, masked, status) VALUES (?, 'x', 'active')", (f"fake-key-{i:06d}",)
        )
    for i in range(3000):
        db.execute("INSERT INTO key_health VALUES (?, 'm', ?, 'r', NULL, 0)", (i + 1, time.time() + 60))
        db.execute("INSERT INTO pins (name, key_id) VALUES (?, ?)", (f"files/{i}", i + 1))
        db.execute("INSERT INTO users (label, key_hash) VALUES (?, ?)", (f"u{i}", f"h{i}"))
    db.execute("COMMIT")
    pool_view(db)
    start = time.perf_counter()
    view = pool_view(db, pins_after_seq=2990)
    elapsed = time.perf_counter() - start
    print(f"pool_view with 3000 keys/health/users: {elapsed * 1000:.1f} ms")
    assert len(view["keys"]) == 3000 and len(view["pins"]) == 10
