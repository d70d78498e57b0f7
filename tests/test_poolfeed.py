"""The pool's feed from the database: everything once, then only what changed, index-backed."""
from __future__ import annotations

import time

import pytest

from conftest import written

from proxy.pool import KeyPool
from proxy.store import add_key, add_user, disable_key, migrate, open_db, pin, remove_key
from proxy.store.keys import merge_env_keys
from proxy.store.limits import forget_learned, set_limit
from proxy.store.poolfeed import PoolFeed
from proxy.store.retention import Retention, prune_once
from proxy.store.users import set_limits
from proxy.store.util import pacific_day
from proxy.store.writer import Writer


@pytest.fixture
def path(db_url):
    return db_url


@pytest.fixture
def db(path):
    database = open_db(path)
    migrate(database)
    yield database
    database.close()


def test_first_read_is_everything_then_only_what_changed(db, path):
    a, b, c = (add_key(db, f"fake-key-000{x}") for x in "abc")
    feed = PoolFeed(db, "me")
    first = feed.read()
    assert first["full"] and [k["id"] for k in first["keys"]] == [a, b, c]
    quiet = feed.read()
    assert not quiet["full"] and "keys" not in quiet and "users" not in quiet and quiet["usage"] == []
    disable_key(db, b)
    now = time.time()
    written(path, ("key_cooled", c, "m", now + 60, "rate_limited", "x"),
            ("limit_learned", c, "m", "rpd", 250, now))
    change = feed.read()
    assert {k["id"]: k["status"] for k in change["keys"]} == {b: "disabled", c: "active"}
    assert sorted(change["touched"]) == [b, c]
    assert [(h["key_id"], h["model"]) for h in change["health"]] == [(c, "m")]
    assert [(r["key_id"], r["kind"], r["value"]) for r in change["limits"]] == [(c, "rpd", 250)]
    remove_key(db, a)
    assert [(k["id"], k["status"]) for k in feed.read()["keys"]] == [(a, "removed")]
    forget_learned(db, str(c))  # a deletion is a change too
    change = feed.read()
    assert change["touched"] == [c] and change["limits"] == []


def test_usage_of_other_workers_only(db, path):
    a = add_key(db, "fake-key-000a")
    alice, _ = add_user(db, "alice")
    now = time.time()
    day = pacific_day(now)
    feed = PoolFeed(db, "me")
    feed.read()
    written(path, ("usage", "me", day, now, a, "m", 0, 1, 0, 0),
            ("usage", "other", day, now, a, "m", 0, 2, 40, 9),
            ("usage", "third", day, now, a, "m", 0, 1, 10, 1),
            ("usage", "other", day, now, 0, "", alice, 1, 0, 0))
    rows = {(r["key_id"], r["user_id"]): r for r in feed.read()["usage"]}
    pair = rows[(a, 0)]
    assert (pair["day_sends"], pair["day_tokens_in"], pair["day_tokens_out"]) == (3, 50, 10)
    assert sum(s for _, s, _ in pair["slots"]) == 3
    assert rows[(0, alice)]["day_sends"] == 1
    assert feed.read()["usage"] == []  # nothing new
    written(path, ("usage", "me", day, now, a, "m", 0, 1, 0, 0))
    assert feed.read()["usage"] == []  # only this worker's own row changed: it counts that itself
    written(path, ("usage", "fourth", day, now, a, "m", 0, 1, 0, 0))  # a worker id is one process's
    assert [r["day_sends"] for r in feed.read()["usage"]] == [4]


def test_a_retried_batch_does_not_count_twice(db, path):
    a = add_key(db, "fake-key-000a")
    now = time.time()
    w = Writer(path)
    w.start()
    w.usage("me", pacific_day(now), now, a, "m", 0, 1, 5, 0)
    w.flush()
    w.usage("me", pacific_day(now), now, a, "m", 0, 1, 5, 0)
    w.close()
    row = db.execute("SELECT day_sends, day_tokens_in FROM quota_usage").fetchone()
    assert tuple(row) == (2, 10)  # absolute values from the writer's book, not increments


def seed(db, path, keys=2000):
    merge_env_keys(db, [f"fake-key-{i:06d}" for i in range(keys)], [])
    now = time.time()
    day = pacific_day(now)
    db.conn.executemany("INSERT INTO key_health (key_id, model, cool_until, reason) VALUES (?, 'm', ?, 'r')",
                        [(i, now + (60 if i % 2 else -120)) for i in range(1, keys + 1)])
    for i in range(5):
        add_user(db, f"user{i}")
    written(path, *[("usage", f"w{i % 3}", day, now, i, "m", 0, 1, 3, 1) for i in range(1, keys + 1)],
            *[("limit_learned", i, "m", "rpm", 10, now) for i in range(1, keys, 7)])
    return now


def test_the_refresh_reads_are_index_backed(db, path):
    if getattr(db, "dialect", "sqlite") == "postgres":
        pytest.skip("reads SQLite's query plans")
    seed(db, path)
    feed = PoolFeed(db, "me")
    feed.read()
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    feed.read()  # nothing changed
    disable_key(db, "7")
    set_limit(db, "9", "rpd", 100, "m")
    set_limits(db, "user1", rpm=5)
    pin(db, "files/x", 3)
    now = time.time()
    written(path, ("usage", "w1", pacific_day(now), now, 11, "m", 0, 1, 1, 1),
            ("key_cooled", 12, "m", now + 30, "rate_limited", "x"))
    change = feed.read()
    db.conn.set_trace_callback(None)
    assert {k["id"] for k in change["keys"]} == {7, 9, 12} and len(change["usage"]) == 1
    plans = {}
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            plans[sql] = [row[3] for row in db.conn.execute("EXPLAIN QUERY PLAN " + sql)]
    assert len(plans) >= 10
    for sql, plan in plans.items():
        if "FROM users WHERE status = 'active'" in sql:
            continue  # read whole, and only when a user changed: users are few
        scans = [step for step in plan if step.startswith("SCAN") and step != "SCAN c"]
        assert not scans, f"full scan in {sql!r}: {plan}"


def test_expired_rests_old_changes_and_old_usage_are_pruned(db, path):
    now = seed(db, path, keys=300)
    db.execute("INSERT INTO quota_usage (day, key_id, model, user_id, worker) VALUES (20000101, 1, 'm', 0, 'w')")
    db.execute("UPDATE key_changes SET ts = ? WHERE seq < 100", (now - 7200,))
    while prune_once(db, now, Retention(batch=100)):
        pass
    assert db.execute("SELECT count(*) FROM key_health WHERE cool_until < ?", (now,)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM key_health").fetchone()[0] == 150  # running rests stay
    assert db.execute("SELECT min(seq) FROM key_changes").fetchone()[0] == 100
    assert db.execute("SELECT count(*) FROM quota_usage WHERE day = 20000101").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM quota_usage").fetchone()[0] == 300


def test_a_reader_left_behind_by_pruning_reads_everything_again(db, path):
    add_key(db, "fake-key-000a")
    feed = PoolFeed(db, "me")
    feed.read()
    for i in range(5):
        add_key(db, f"fake-key-100{i}")
    db.execute("DELETE FROM key_changes WHERE seq < (SELECT max(seq) FROM key_changes)")
    again = feed.read()
    assert again["full"] and len(again["keys"]) == 6


def test_ten_thousand_keys_start_in_moments(db):
    values = [f"fake-key-{i:06d}" for i in range(10_000)]
    started = time.perf_counter()
    assert merge_env_keys(db, values, [])["added"] == 10_000
    assert merge_env_keys(db, values, [])["added"] == 0  # every worker runs it at start
    pool = KeyPool(None)
    pool.apply(PoolFeed(db, pool.worker).read())
    assert len(pool.usable) == 10_000 and pool.choose("m").id
    elapsed = time.perf_counter() - started
    print(f"merge twice + first read + apply, 10,000 keys: {elapsed:.2f} s")
    assert elapsed < 10  # seconds, not minutes (about 0.2 s on an idle machine)
    events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert events <= 21  # a line per key for the first few, one for the rest
