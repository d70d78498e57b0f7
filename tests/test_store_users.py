"""User keys: creation, environment merge, limits, and never storing the plain key."""
from __future__ import annotations

import pytest

from proxy.store import (
    InvalidValue,
    StoreError,
    UserNotFound,
    add_user,
    hash_user_key,
    list_users,
    merge_env_users,
    migrate,
    open_db,
    pool_view,
    remove_user,
    set_limits,
)
from proxy.store.util import minute_of, now


@pytest.fixture
def db(db_url):
    database = open_db(db_url)
    migrate(database)
    yield database
    database.close()


def file_bytes(path) -> bytes:
    """Return the database and its WAL, where fresh writes live before a checkpoint."""
    data = b""
    for suffix in ("", "-wal"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            data += p.read_bytes()
    return data


def test_add_user_generates_and_stores_only_the_hash(db, tmp_path):
    user_id, key = add_user(db, "alice")
    assert key.startswith("gp-") and len(key) == 3 + 32
    row = db["users"].get(user_id)
    assert row["key_hash"] == hash_user_key(key)
    assert row["masked"] == key[:4] + "…" + key[-4:]
    assert row["status"] == "active"
    given_id, given = add_user(db, "bob", key="bobs-own-secret-key-123")
    assert given == "bobs-own-secret-key-123"
    if getattr(db, "dialect", "sqlite") == "postgres":
        return  # the rest reads the SQLite file's bytes
    data = file_bytes(tmp_path / "keys.db")
    assert hash_user_key(key).encode() in data
    assert key.encode() not in data
    assert b"bobs-own-secret-key-123" not in data


def test_add_user_rejects_duplicates_and_bad_values(db):
    _, key = add_user(db, "alice")
    with pytest.raises(StoreError, match="already exists"):
        add_user(db, "alice")
    with pytest.raises(StoreError, match="already belongs"):
        add_user(db, "carol", key=key)
    with pytest.raises(InvalidValue):
        add_user(db, "has space")
    with pytest.raises(InvalidValue):
        add_user(db, "123")
    with pytest.raises(InvalidValue):
        add_user(db, "dave", key="short")


def test_removed_label_can_be_reused(db):
    user_id, _ = add_user(db, "alice")
    remove_user(db, "alice")
    again, key = add_user(db, "alice")
    assert again == user_id
    assert db["users"].get(user_id)["key_hash"] == hash_user_key(key)


def test_merge_env_users_is_idempotent(db):
    keys = ["env-user-key-one-1234", "env-user-key-two-5678", "env-user-key-one-1234", ""]
    assert merge_env_users(db, keys) == {"added": 2}
    assert merge_env_users(db, keys) == {"added": 0}
    labels = sorted(u["label"] for u in list_users(db))
    assert labels == sorted("env-" + hash_user_key(k)[:6] for k in keys[:2])
    remove_user(db, labels[0])
    assert merge_env_users(db, keys) == {"added": 0}  # the operator's removal sticks


def test_remove_user(db):
    user_id, _ = add_user(db, "alice")
    assert remove_user(db, user_id)["status"] == "removed"
    assert list_users(db) == []
    assert [u["id"] for u in list_users(db, include_removed=True)] == [user_id]
    assert pool_view(db)["users"] == []
    with pytest.raises(UserNotFound):
        remove_user(db, "nobody")


def test_set_limits(db):
    add_user(db, "alice")
    user = set_limits(db, "alice", rpm=30, tpd=100_000, models="gemini-2.5-flash|gemini-2.5-pro")
    assert (user["rpm_limit"], user["tpd_limit"], user["allowed_models"]) == (
        30, 100_000, "gemini-2.5-flash|gemini-2.5-pro",
    )
    user = set_limits(db, "alice", tpd=0)  # 0 lifts the limit, None leaves one alone
    assert (user["rpm_limit"], user["tpd_limit"]) == (30, None)
    user = set_limits(db, "alice", models=["a", " b ", "a"])
    assert user["allowed_models"] == "a|b"
    assert set_limits(db, "alice", models="x, y")["allowed_models"] == "x|y"
    assert set_limits(db, "alice", models="")["allowed_models"] is None
    with pytest.raises(InvalidValue):
        set_limits(db, "alice", rpm=-1)
    with pytest.raises(UserNotFound):
        set_limits(db, "bob", rpm=1)


def test_list_users_usage(db):
    alice, _ = add_user(db, "alice")
    bob, _ = add_user(db, "bob")
    m = minute_of(now())
    for minute, requests, t_in in ((m, 3, 30), (m - 3 * 24 * 60, 10, 1000), (m - 9 * 24 * 60, 99, 99)):
        db.execute(
            "INSERT INTO stats_minute (minute, key_id, user_id, requests, tokens_in, tokens_out) "
            "VALUES (?, 1, ?, ?, ?, 1)",
            (minute, alice, requests, t_in),
        )
    users = {u["label"]: u for u in list_users(db)}
    a = users["alice"]
    assert (a["requests_today"], a["tokens_today"]) == (3, 31)
    assert (a["requests_7d"], a["tokens_7d"]) == (13, 1032)
    assert users["bob"]["requests_7d"] == 0
    assert "key_hash" not in a
