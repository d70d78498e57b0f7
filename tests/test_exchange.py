"""Exchange bookkeeping: in-flight counts, and memory handed back after a burst."""
from proxy import memory
from proxy.exchange import Counters, Exchange


def test_memory_is_released_once_a_burst_has_drained(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "release", lambda: calls.append(Counters.inflight))
    monkeypatch.setattr(Counters, "peak", 0)
    before = Counters.inflight
    burst = [Exchange(None, user=None, dialect="native", method="POST", path="/x")
             for _ in range(memory.BURST)]
    assert Counters.inflight == before + memory.BURST
    for ex in burst:
        ex.finish(200)
    assert Counters.inflight == before
    if before == 0:
        assert calls == [0]  # once, when nothing was left in flight
    small = [Exchange(None, user=None, dialect="native", method="GET", path="/y") for _ in range(5)]
    for ex in small:
        ex.finish(200)
    assert len(calls) <= 1  # a handful of requests is no burst


def test_finish_is_idempotent():
    ex = Exchange(None, user=None, dialect="openai", method="POST", path="/v1/chat/completions")
    before = Counters.inflight
    ex.finish(200)
    ex.finish(500)
    assert Counters.inflight == before - 1


def test_every_error_class_lands_in_a_stats_counter():
    """One list of counters (store/schema.OUTCOMES): every class the proxy records maps into it."""
    from proxy.exchange import _counter
    from proxy.outcomes import Kind
    from proxy.store.schema import OUTCOMES

    for kind in Kind:
        assert _counter(kind.value) in OUTCOMES
    assert _counter(Kind.RATE_DAY.value) == "rate_limited"
    for refusal in ("unauthorized", "bad_request", "not_found", "user_limit", "rejected"):
        assert _counter(refusal) == "rejected"


def test_request_ids_are_unique_and_increase_with_time():
    """24 hex digits, time first: each new row lands at the end of the requests index."""
    import re
    import time

    from proxy.exchange import new_request_id

    ids = [new_request_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids) and len(set(ids)) == len(ids)
    stamps = [i[:12] for i in ids]
    assert stamps == sorted(stamps)  # taken later, sorted later (to the millisecond)
    assert abs(int(ids[-1][:12], 16) / 1000 - time.time()) < 5


def test_forked_workers_draw_different_request_ids():
    """gunicorn forks its workers from one master: their ids must not repeat each other's."""
    import os

    from proxy.exchange import new_request_id

    new_request_id()  # the parent's generator is in use before the fork, as in a master
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its ids, and leave without running pytest's teardown
        os.write(write, " ".join(new_request_id()[12:] for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    ours = {new_request_id()[12:] for _ in range(50)}
    assert len(theirs) == 50 and not ours & theirs
