"""KeyPool: choosing, cooling, retiring, merging database views, authenticating."""
import hashlib
import random
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from proxy.outcomes import Kind, Outcome
from proxy.pool import PACE_WINDOW, PRIOR_OK, Cooling, KeyPool, NoKeys, Usage, User, UserUsage
from proxy.store.quota_usage import SLOT, WINDOW


class Clock:
    def __init__(self, t=1_780_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


class RecordingWriter:
    """Collects what the pool queues for the database."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *a, **kw: self.calls.append((name, a, kw))


def view(n=3, **extra):
    keys = [{"id": i, "value": f"fake-key-{i:04d}", "masked": f"fake…{i:04d}", "label": None,
             "status": "active", "invalid_reason": None, "updated_at": 0.0, "rpm_cap": None}
            for i in range(1, n + 1)]
    return {"keys": keys, "health": [], "users": [], "pins": [], **extra}


def make(n=3, seed=1, **extra):
    clock = Clock()
    pool = KeyPool(RecordingWriter(), rng=random.Random(seed), clock=clock)
    pool.apply(view(n, **extra))
    return pool, clock


def test_load_spreads_over_every_key():
    pool, _ = make(4)
    picks = Counter(pool.choose("m").id for _ in range(4000))
    assert set(picks) == {1, 2, 3, 4}
    assert min(picks.values()) > 600  # no herding onto one key


def test_failing_key_gets_less_traffic():
    pool, clock = make(3)
    bad = pool.keys[2]
    for _ in range(30):
        pool.report(bad, "m", Outcome(Kind.UPSTREAM, 503, "overloaded"))
    picks = Counter(pool.choose("m").id for _ in range(3000))
    assert picks[2] < picks[1] / 2 and picks[2] < picks[3] / 2


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 200), st.booleans()), max_size=80))
def test_a_keys_score_is_its_share_of_successes_over_its_last_minutes(steps):
    pool, clock = make(1)
    key = pool.keys[1]
    for dt, ok in steps:
        clock.t += dt
        pool.report(key, "m", Outcome(Kind.OK, 200) if ok else Outcome(Kind.UPSTREAM, 503, "x"))
    assert len(key.window) <= 10
    ok, failed = sum(o for _, o, _ in key.window), sum(f for _, _, f in key.window)
    assert key.success_score() == (ok + PRIOR_OK) / (ok + failed + PRIOR_OK)
    v = view(1)
    v["keys"][0]["updated_at"] = clock.t  # the operator resets the key: a fresh score
    pool.apply(v)
    assert key.window == [] and key.success_score() == 1.0


def test_in_flight_load_steers_choice():
    pool, _ = make(2)
    pool.keys[1].inflight = 50
    picks = Counter(pool.choose("m").id for _ in range(1000))
    assert picks[2] > 950


def test_rate_limit_cools_only_that_model_until_retry_delay():
    pool, clock = make(2)
    k1 = pool.keys[1]
    pool.report(k1, "m", Outcome(Kind.RATE_MINUTE, 429, "tired", clock.t + 30))
    assert {pool.choose("m").id for _ in range(100)} == {2}
    assert 1 in {pool.choose("other").id for _ in range(100)}
    clock.t += 31
    assert 1 in {pool.choose("m").id for _ in range(100)}
    assert ("key_cooled", (1, "m", clock.t - 1, "rate_limited", "tired"), {}) in pool.writer.calls


def test_all_cooling_reports_soonest_return():
    pool, clock = make(2)
    pool.report(pool.keys[1], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 30))
    pool.report(pool.keys[2], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 12))
    choice = pool.choose("m")
    assert isinstance(choice, Cooling) and choice.retry_after == pytest.approx(12)


def test_dead_key_is_retired_and_survives_a_stale_view():
    pool, clock = make(2)
    pool.report(pool.keys[1], "m", Outcome(Kind.KEY_DEAD, 400, "API_KEY_INVALID: bad"))
    assert {pool.choose("m").id for _ in range(50)} == {2}
    clock.t += 0.5
    pool.apply(view(2))  # the writer has not persisted the death yet
    assert {pool.choose("m").id for _ in range(50)} == {2}
    assert any(c[0] == "key_invalid" for c in pool.writer.calls)


def test_operator_re_enable_after_death_wins():
    pool, clock = make(2)
    pool.report(pool.keys[1], "m", Outcome(Kind.KEY_DEAD, 400, "API_KEY_INVALID: bad"))
    clock.t += 1
    fresh = view(2)
    fresh["keys"][0]["updated_at"] = clock.t  # re-enabled from the console after the death
    pool.apply(fresh)
    assert 1 in {pool.choose("m").id for _ in range(100)}


def test_operator_reset_clears_local_cooldown():
    pool, clock = make(1)
    pool.report(pool.keys[1], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 300))
    clock.t += 1
    fresh = view(1)
    fresh["keys"][0]["updated_at"] = clock.t
    pool.apply(fresh)
    assert pool.choose("m").id == 1


def test_cooldowns_from_other_workers_apply():
    pool, clock = make(2)
    pool.apply(view(2, health=[{"key_id": 1, "model": "m", "cool_until": clock.t + 60,
                                "reason": "rate_limited"}]))
    assert {pool.choose("m").id for _ in range(50)} == {2}


def test_disabled_and_removed_keys_are_never_chosen():
    pool, _ = make(3)
    v = view(3)
    v["keys"][0]["status"] = "disabled"
    v["keys"][1]["status"] = "removed"
    pool.apply(v)
    assert {pool.choose("m").id for _ in range(50)} == {3}


def test_no_usable_keys():
    pool, _ = make(0)
    assert isinstance(pool.choose("m"), NoKeys)


def test_exclude_tried_keys():
    pool, _ = make(2)
    assert pool.choose("m", exclude={1}).id == 2
    assert isinstance(pool.choose("m", exclude={1, 2}), NoKeys)


def test_pinned_key_is_used_or_waited_for():
    pool, clock = make(3)
    assert all(pool.choose("m", pinned=2).id == 2 for _ in range(20))
    pool.report(pool.keys[2], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 5))
    assert isinstance(pool.choose("m", pinned=2), Cooling)


def test_rpm_cap_paces_a_key():
    pool, clock = make(1)
    v = view(1)
    v["keys"][0]["rpm_cap"] = 2
    pool.apply(v)
    for _ in range(2):
        k = pool.choose("m")
        pool.begin(k, "m")
        pool.end(k)
    choice = pool.choose("m")
    assert isinstance(choice, Cooling) and 0 < choice.retry_after <= 60
    clock.t += 61
    assert pool.choose("m").id == 1


def test_snapshot_offered_from_another_thread_applies_on_next_use():
    pool, _ = make(1)
    pool.offer(view(2))
    assert len(pool.keys) == 1
    pool.choose("m")
    assert len(pool.keys) == 2


def test_authenticate_matches_digest_only():
    key = "gp-user-secret"
    users = [{"id": 7, "label": "alice", "key_hash": hashlib.sha256(key.encode()).hexdigest(),
              "status": "active", "updated_at": 0, "rpm_limit": None, "tpd_limit": None,
              "allowed_models": "gemini-2.5-flash|gemini-2.5-pro"}]
    pool, _ = make(1, users=users)
    user = pool.authenticate(key)
    assert user and user.label == "alice"
    assert user.allowed_models == ("gemini-2.5-flash", "gemini-2.5-pro")
    assert pool.authenticate("gp-user-secreT") is None
    assert pool.authenticate("") is None and pool.authenticate(None) is None


def test_a_matching_key_is_hashed_once_and_a_guess_every_time(monkeypatch):
    import proxy.pool as pool_module

    def users(key):
        return [{"id": 7, "label": "alice", "key_hash": hashlib.sha256(key.encode()).hexdigest(),
                 "status": "active", "updated_at": 0, "rpm_limit": None, "tpd_limit": None}]

    pool, _ = make(1, users=users("gp-user-secret"))
    hashed = Counter()
    real = pool_module._digest
    monkeypatch.setattr(pool_module, "_digest", lambda value: hashed.update([value]) or real(value))
    for _ in range(3):
        assert pool.authenticate("gp-user-secret").id == 7
        assert pool.authenticate("gp-user-guess") is None
    assert hashed == {"gp-user-secret": 1, "gp-user-guess": 3}  # guesses are never kept
    pool.apply({"full": False, "users": users("gp-user-rotated")})  # the operator rotates the key
    assert pool.authenticate("gp-user-secret") is None
    assert pool.authenticate("gp-user-rotated").id == 7
    assert hashed["gp-user-secret"] == 2


def test_summary_counts():
    pool, clock = make(3)
    pool.report(pool.keys[1], "m", Outcome(Kind.KEY_DEAD, 400, "dead"))
    pool.report(pool.keys[2], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 9))
    assert pool.summary() == {"usable": 2, "cooling": 1, "dead": 1, "disabled": 0}


# ---- the per-model available sets ---------------------------------------------------------

def big(n, seed=3):
    clock = Clock()
    pool = KeyPool(RecordingWriter(), rng=random.Random(seed), clock=clock, worker="me")
    pool.apply(view(n))
    return pool, clock


def test_choosing_never_walks_the_keys(monkeypatch):
    pool, clock = big(5000)
    for i in range(1, 40):  # some rest, some are capped: conditions, not scans
        pool.report(pool.keys[i], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 30))
    looked = Counter()
    real = KeyPool.rest_until

    def counted(self, k, model, now):
        looked["rest_until"] += 1
        return real(self, k, model, now)

    monkeypatch.setattr(KeyPool, "rest_until", counted)
    monkeypatch.setattr(type(pool.keys[1]), "usable", property(
        lambda k: looked.update(["usable"]) or (k.status == "active" and k.invalid_reason is None)))
    pool.choose("m")  # the first choice for a model builds its set once
    looked.clear()
    picks = Counter(pool.choose("m").id for _ in range(2000))
    assert sum(looked.values()) == 0
    assert not set(picks) & set(range(1, 40))
    assert len(picks) > 1500  # spread, no herding


def test_a_rest_ends_by_its_timer_without_a_refresh():
    pool, clock = make(2)
    pool.report(pool.keys[1], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 30))
    assert {pool.choose("m").id for _ in range(50)} == {2}
    clock.t += 30.5
    assert 1 in {pool.choose("m").id for _ in range(50)}
    assert pool.models["m"].heap == []


def test_a_429_teaches_limits_and_gives_back_its_send():
    pool, clock = make(2)
    k = pool.keys[1]
    pool.begin(k, "m")
    pool.report(k, "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 5, (("rpm", 2), ("tpm", 99))))
    pool.end(k)
    assert ("limit_learned", (1, "m", "rpm", 2, clock.t), {}) in pool.writer.calls
    assert pool.usage[(1, "m")].today() == 0  # Google did not count the refused call
    assert pool.bounds(k, "m")[:3] == (2, None, 98)  # a learned limit keeps a 2% margin
    clock.t += 6  # rest over; two sends in a minute is the limit
    for _ in range(2):
        pool.begin(k, "m")
        pool.end(k)
    assert {pool.choose("m").id for _ in range(50)} == {2}
    clock.t += 62
    assert 1 in {pool.choose("m").id for _ in range(50)}


def test_no_quota_keeps_the_pair_out_until_midnight_pacific():
    from proxy.store.util import next_pacific_midnight

    pool, clock = make(2)
    pool.report(pool.keys[1], "pro", Outcome(Kind.RATE_DAY, 429, "limit: 0", None, (("rpm", 0),)))
    midnight = next_pacific_midnight(clock.t)
    assert pool.cooling_until(1, "pro", clock.t) == midnight
    assert {pool.choose("pro").id for _ in range(50)} == {2}
    assert 1 in {pool.choose("flash").id for _ in range(50)}
    clock.t = midnight + 1
    assert 1 in {pool.choose("pro").id for _ in range(50)}


def test_daily_limit_counts_other_workers_use():
    pool, clock = make(2)
    pool.apply({"full": False, "touched": [1], "keys": [],
                "limits": [{"key_id": 1, "model": "m", "kind": "rpd", "source": "learned",
                            "value": 10, "learned_at": clock.t}]})
    for _ in range(4):
        pool.begin(pool.keys[1], "m")
    assert 1 in {pool.choose("m").id for _ in range(50)}
    from proxy.store.util import pacific_day

    pool.apply({"full": False, "usage_day": pacific_day(clock.t), "usage": [
        {"key_id": 1, "model": "m", "user_id": 0, "slots": (), "day_sends": 6, "day_tokens_in": 0,
         "day_tokens_out": 0}]})
    choice = {pool.choose("m").id for _ in range(50)}
    assert choice == {2}  # 4 here + 6 elsewhere = its 10 for the day


def test_per_minute_cap_counts_other_workers_recent_sends():
    from proxy.store.util import pacific_day

    pool, clock = make(1)
    v = view(1)
    v["keys"][0]["rpm_cap"] = 3
    pool.apply(v)
    slot = clock.t - clock.t % 5
    pool.apply({"full": False, "usage_day": pacific_day(clock.t), "usage": [
        {"key_id": 1, "model": "m", "user_id": 0, "slots": ((slot, 2, 0),), "day_sends": 2,
         "day_tokens_in": 0, "day_tokens_out": 0}]})
    k = pool.choose("m")
    pool.begin(k, "m")
    choice = pool.choose("m")
    assert isinstance(choice, Cooling) and 55 < choice.retry_after <= 65
    clock.t += 66
    assert pool.choose("m").id == 1


def test_a_change_view_touches_only_the_keys_it_names():
    pool, clock = make(3)
    pool.report(pool.keys[3], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 60))
    changed = dict(view(3)["keys"][1], status="disabled", updated_at=clock.t + 1)
    clock.t += 1
    pool.apply({"full": False, "keys": [changed], "touched": [2], "health": [], "limits": []})
    assert {pool.choose("m").id for _ in range(50)} == {1}  # 2 disabled, 3 still resting
    gone = dict(view(3)["keys"][0], status="removed")
    pool.apply({"full": False, "keys": [gone], "touched": [1], "health": [], "limits": []})
    assert 1 not in pool.keys and isinstance(pool.choose("m"), Cooling)


def test_sets_of_many_models_stay_bounded():
    from proxy.pool import MAX_MODELS

    pool, _ = make(3)
    for i in range(MAX_MODELS + 10):
        assert pool.choose(f"model-{i}").id in (1, 2, 3)
    assert len(pool.models) == MAX_MODELS


def test_users_minute_limit_counts_other_workers():
    from proxy.store.util import pacific_day

    pool, clock = make(1)
    alice = User(7, "alice", b"", rpm_limit=3)
    slot = clock.t - clock.t % 5
    pool.apply({"full": False, "usage_day": pacific_day(clock.t), "usage": [
        {"key_id": 0, "model": "", "user_id": 7, "slots": ((slot, 2, 0),), "day_sends": 2,
         "day_tokens_in": 0, "day_tokens_out": 0}]})
    assert pool.admit(alice, "m") is None
    refused = pool.admit(alice, "m")
    assert refused is not None and refused.status == 429


def test_under_gevent_a_refresh_is_applied_on_the_hub_not_in_a_request():
    """The refresher hands its read to the hub; no request has to call sync() to apply it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        from gevent import monkey; monkey.patch_all()
        import gevent
        from proxy.pool import KeyPool, Refresher
        pool = KeyPool(None)
        views = iter([{"keys": [{"id": 1, "value": "fake-key-0001", "masked": "m", "status": "active"}]}])
        refresher = Refresher(pool, lambda: next(views, {"full": False, "usage": []}), 0.05)
        refresher.start()
        for _ in range(200):
            if pool.keys:
                break
            gevent.sleep(0.01)   # only the hub runs: nobody calls sync()
        refresher.stop()
        print(sorted(pool.keys), len(pool._pending))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["[1]", "0"], done.stderr


def test_a_change_view_keeps_rests_of_calls_without_a_model_apart():
    pool, clock = make(2)
    pool.report(pool.keys[1], "", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 30))
    pool.report(pool.keys[1], "m", Outcome(Kind.RATE_MINUTE, 429, "x", clock.t + 30))
    clock.t += 1
    changed = dict(view(2)["keys"][0], label="renamed")
    pool.apply({"full": False, "keys": [changed], "touched": [1], "health": [], "limits": []})
    assert pool.cooling_until(1, "", clock.t) and pool.cooling_until(1, "m", clock.t)  # seen here, kept
    assert pool.keys[1].label == "renamed"


# -- a minute's use: counted by searches, the same as counting every entry --------------------

def _minute(sends, tokens, remote, now, pace):
    """Count a minute the plain way: every entry of this worker, every slot of the others."""
    cut = now - pace
    slots = [(s, t) for start, s, t in remote if start + SLOT > now - WINDOW]
    return (sum(s for s, _ in slots) + sum(1 for t in sends if t > cut),
            sum(t for _, t in slots) + sum(n for t, n in tokens if t > cut))


def _free_at(sends, tokens, remote, now, cap, by_tokens, pace):
    """Walk every entry leaving the minute, in time order, until the count is below `cap`."""
    used = _minute(sends, tokens, remote, now, pace)[1 if by_tokens else 0]
    leaving = sorted([(t + pace, n) for t, n in (tokens if by_tokens else [(t, 1) for t in sends])
                      if t > now - pace]
                     + [(start + SLOT + WINDOW, t if by_tokens else s) for start, s, t in remote
                        if start + SLOT > now - WINDOW])
    for when, n in leaving:
        used -= n
        if used < cap:
            return max(when, now + 0.001)
    return now + WINDOW


# One step of a worker's use: the clock moves (now and then back a little), then it sends,
# counts input tokens, or reads the other workers' slots.
_STEPS = st.lists(st.tuples(st.floats(-3, 25), st.sampled_from(["send", "tokens", "remote", "wait"]),
                            st.integers(0, 5000)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS, caps=st.lists(st.integers(1, 40), min_size=1, max_size=3), user=st.booleans())
def test_a_minutes_use_and_when_a_cap_frees_match_a_count_of_every_entry(steps, caps, user):
    u = (UserUsage if user else Usage)(0)
    now = 1_780_000_000.0
    sends: list[float] = []
    tokens: list[tuple[float, int]] = []
    for dt, what, n in steps:
        now += dt
        if what == "send":
            u.send(now)
            sends.append(now)
        elif what == "tokens":
            u.add_tokens(now, n)
            tokens.append((now, n))
        elif what == "remote":
            slot = now - now % SLOT
            u.remote = ((slot - 2 * SLOT, n % 7, n), (slot - SLOT, 0, n // 3), (slot, 1, n % 11))
        # A count forgets what left the minute (and a little more) for good.
        sends = [t for t in sends if t > now - PACE_WINDOW]
        tokens = [(t, k) for t, k in tokens if t > now - PACE_WINDOW]
        for pace in (None, WINDOW, PACE_WINDOW):
            p = pace or u.pace
            assert u.minute(now, pace) == _minute(sends, tokens, u.remote, now, p)
            for cap in caps:
                for by_tokens in (False, True):
                    assert (u.free_at(now, cap * (300 if by_tokens else 1), by_tokens, pace)
                            == _free_at(sends, tokens, u.remote, now, cap * (300 if by_tokens else 1),
                                        by_tokens, p))


class _Watched(list):
    """A list that counts the entries read from it."""

    read = 0

    def __getitem__(self, i):
        _Watched.read += len(range(*i.indices(len(self)))) if isinstance(i, slice) else 1
        return super().__getitem__(i)

    def __iter__(self):
        for item in super().__iter__():
            _Watched.read += 1
            yield item


def test_a_busy_minute_costs_a_request_a_few_looks_not_a_walk():
    pool, clock = make(1)
    pool.apply({"full": False, "touched": [1], "keys": [],
                "limits": [{"key_id": 1, "model": "m", "kind": kind, "source": "learned",
                            "value": 10**9, "learned_at": clock.t} for kind in ("rpm", "tpm")]})
    alice = User(7, "alice", b"", rpm_limit=10**9)

    def request():
        clock.t += 0.01
        assert pool.admit(alice, "m") is None
        k = pool.choose("m")
        pool.begin(k, "m")
        pool.report(k, "m", Outcome(Kind.OK, 200))
        pool.end(k)
        pool.add_usage(alice.id, k.id, "m", 50, 10)

    for _ in range(5000):  # 50 seconds of traffic, all still inside the minute
        request()
    for u in (pool.usage[(1, "m")], pool.user_usage[alice.id]):
        u.sends, u.tokens = _Watched(u.sends), _Watched(u.tokens)
    assert len(pool.usage[(1, "m")].tokens) == 5000
    _Watched.read = 0
    request()
    assert _Watched.read < 200  # binary searches, not a pass over 5,000 entries
    assert pool.usage[(1, "m")].minute(clock.t) == (5001, 5001 * 50)
