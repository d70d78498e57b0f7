"""Exchange bookkeeping: in-flight counts, memory handed back after a burst, and which request
the pool names in its events."""
from proxy import memory
from proxy.exchange import Counters, Exchange, current_request_id, request_recorded
from proxy.outcomes import Kind


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


# -- which request the pool names in its events --------------------------------------------

class EventLog:
    """A writer that keeps which request each pool event names (and ignores the rest)."""

    def __init__(self) -> None:
        self.named: list[str | None] = []

    def event(self, level, message, **fields) -> None:
        self.named.append(fields["request_id"])

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def troubled_pool():
    """Return a one-key pool logging to an EventLog, and a call reporting upstream trouble."""
    import random

    from proxy.outcomes import Outcome
    from proxy.pool import KeyPool

    pool = KeyPool(EventLog(), rng=random.Random(1))
    pool.apply({"keys": [{"id": 1, "value": "fake-key-0001", "masked": "fake…0001", "label": None,
                          "status": "active", "invalid_reason": None, "updated_at": 0.0,
                          "rpm_cap": None}], "health": [], "users": [], "pins": []})
    return pool, lambda: pool.report(pool.keys[1], "m", Outcome(Kind.UPSTREAM, 503, "overloaded"))


def serve(app):
    """Call `app` behind the serving guard, as a new connection's greenlet (a fresh context)."""
    import contextvars
    import io

    from proxy.serving.guard import ServingGuard
    from proxy.settings import Settings

    headers: list = []
    guard = ServingGuard(app, Settings(db_path=":memory:"))
    environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "2", "wsgi.input": io.BytesIO(b"{}")}

    def run():
        answer = guard(environ, lambda status, h, exc_info=None: headers.extend(h))
        return b"".join(answer)  # a stream is sent after the app returned, in the same greenlet

    return contextvars.Context().run(run), dict(headers)


def test_the_pool_names_the_request_being_served_until_its_finish():
    pool, trouble = troubled_pool()
    seen = {}

    def app(environ, start_response):
        assert not request_recorded() and current_request_id() is None  # no Exchange yet
        ex = Exchange(None, user=None, dialect="native", method="POST", path="/x")
        seen["id"] = ex.id
        trouble()  # an attempt before the answer starts
        start_response("200 OK", [])

        def stream():
            trouble()  # a stream breaking after the app returned
            yield b"ok"
            ex.finish(200)
            trouble()  # nothing after the finish is about the request

        return stream()

    body, headers = serve(app)
    assert body == b"ok"
    assert headers["X-Request-Id"] == seen["id"]  # the row's id is the one the client hears
    assert pool.writer.named == [seen["id"], seen["id"], None]


def test_a_second_exchange_in_one_request_gets_its_own_id_and_the_pool_names_it():
    pool, trouble = troubled_pool()
    ids = []

    def app(environ, start_response):
        first = Exchange(None, user=None, dialect="native", method="POST", path="/x")
        assert request_recorded()  # a refusal now would not be recorded twice
        first.finish(400)
        second = Exchange(None, user=None, dialect="native", method="POST", path="/x")
        trouble()
        ids.extend([first.id, second.id])
        second.finish(200)
        trouble()
        start_response("200 OK", [])
        return [b"ok"]

    _, headers = serve(app)
    first, second = ids
    assert headers["X-Request-Id"] == first and second != first
    assert pool.writer.named == [second, None]


def test_an_exchange_outside_any_guard_is_named_too():
    import contextvars

    pool, trouble = troubled_pool()

    def tool():
        ex = Exchange(None, user=None, dialect="native", method="GET", path="/x")
        trouble()
        ex.finish(200)
        trouble()
        again = Exchange(None, user=None, dialect="native", method="GET", path="/x")
        trouble()
        again.finish(200)
        return ex.id, again.id

    first, second = contextvars.Context().run(tool)
    assert first != second
    assert pool.writer.named == [first, None, second]


def test_through_the_app_events_name_the_row_and_the_x_request_id(app, fake):
    from conftest import GOOGLE_KEYS, USER_KEY

    from proxy.store import open_db

    fake.set_keys({k: {"mode": "overload"} for k in GOOGLE_KEYS})
    client = app.test_client()
    r = client.post("/v1beta/models/gemini-2.5-flash:generateContent", headers={"x-goog-api-key": USER_KEY},
                    json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 503
    st = app.extensions["proxy"]
    assert st.writer.flush()
    db = open_db(st.settings.db_path, readonly=True)
    try:
        events = list(db.query("select request_id from events where message like 'upstream trouble%'"))
        rows = list(db.query("select id from requests"))
    finally:
        db.close()
    assert events and {e["request_id"] for e in events} == {r.headers["X-Request-Id"]}
    assert [row["id"] for row in rows] == [r.headers["X-Request-Id"]]
