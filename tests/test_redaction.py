"""Google keys named by the upstream (a suspended key's message) are masked everywhere.

Google answers a suspended key with `Permission denied: Consumer 'api_key:<the key>' has
been suspended.`; the fake does the same (mode="suspended"). Whatever route, framing or
record it passes through, the key must come out masked. Keys shaped like Google's are
built at run time, so no key-shaped literal sits in the source.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from typing import Any, Iterator

import httpx2
import openai
import pytest
import requests
import responses
import urllib3
from hypothesis import given, settings, strategies as st

from conftest import GOOGLE_KEYS, USER_KEY, make_settings
from test_console_app import SIZE, screen_text, table, until
from console.app import ConsoleApp
from console.modals import TextScreen
from console.panes import KeysPane, LogsPane, RequestsPane
from proxy.outcomes import Kind, Outcome
from proxy.exchange import Exchange
from proxy.pool import KeyPool
from proxy.redact import KEY_SHAPE, redact, redact_header, redact_stream
from proxy.store import Writer, add_key, migrate, open_db
from proxy.store.util import ELLIPSIS, mask_key
from proxy.upstream import Attempt, Call, Reply, Upstream

FLASH = "gemini-2.5-flash"
GEN = f"/v1beta/models/{FLASH}:generateContent"
SSE = f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
ARRAY = f"/v1beta/models/{FLASH}:streamGenerateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
AUTH = {"x-goog-api-key": USER_KEY}


def google_key(tag: str) -> str:
    """Return a key shaped like Google's: AIza + 35 of [0-9A-Za-z_-]."""
    return "AIza" + ("Sy" + tag + "-q_Z9" * 8)[:35]


def suspended(key: str) -> str:
    """Return Google's message for a suspended key, naming `key`."""
    return f"Permission denied: Consumer 'api_key:{key}' has been suspended."


KEYS = [google_key(f"Key{i}") for i in range(8)]


# -- the function ------------------------------------------------------------------------

def test_keys_are_built_in_googles_shape():
    assert all(re.fullmatch(KEY_SHAPE, k) for k in KEYS) and len(set(KEYS)) == len(KEYS)


def test_googles_suspended_message_is_masked_as_text_and_bytes():
    key = KEYS[0]
    masked = suspended(mask_key(key))
    assert mask_key(key) == key[:4] + ELLIPSIS + key[-4:]
    assert redact(suspended(key)) == masked
    assert redact(suspended(key).encode()) == masked.encode()
    # The same with the pool's values given: nothing masked twice.
    assert redact(suspended(key), [key, "fake-key-0001"]) == masked


def test_pool_values_of_any_shape_are_masked_longest_first():
    text = "a fake-key-0001, b fake-key-00012 and c fake-key-0001x"
    out = redact(text, ["fake-key-0001", "fake-key-00012"])
    assert out == "a fake…0001, b fake…0012 and c fake…0001x"
    assert redact(text.encode(), ["fake-key-00012", "fake-key-0001"]) == out.encode()
    # Without the values only the Google shape is caught.
    assert redact(text) is text


def test_text_without_keys_comes_back_untouched():
    text = "AIza is how Google keys begin; 'AIzaShort' is no key."
    assert redact(text, ["fake-key-0001"]) is text
    assert redact(text.encode()) == text.encode()


def test_header_values_stay_latin1():
    url = f"https://upload.example/x?upload_id=1&key={KEYS[1]}"
    out = redact_header(url)
    assert KEYS[1] not in out and out.endswith(KEYS[1][:4] + "..." + KEYS[1][-4:])
    out.encode("latin-1")
    assert redact_header("text/event-stream") == "text/event-stream"


def test_a_key_split_at_any_two_points_is_masked_as_if_whole():
    data = (f'data: {{"error":{{"message":"{suspended(KEYS[2])}"}}}}\n\n'
            "then fake-key-0001 in text\n").encode()
    values = [KEYS[2], "fake-key-0001"]
    whole = redact(data, values)
    assert KEYS[2].encode() not in whole and b"fake-key-0001" not in whole
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1, 2):
            out = list(redact_stream([data[:i], data[i:j], data[j:]], values))
            assert b"".join(out) == whole, (i, j)
            assert b"" not in out


_NEAR_MISSES = ["A", "AI", "AIz", "AIza", "Sy", "fake-", " ", "\n\n", "data: ", '"', "x" * 7, "…"]


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)])]


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from([" " + KEYS[3], " " + KEYS[4], " fake-key-0002",
                                        *_NEAR_MISSES]), max_size=14),
       cuts=st.lists(st.integers(0, 400), max_size=8))
def test_any_chunking_gives_what_the_whole_body_gives(pieces, cuts):
    """Keys apart from each other (the real case) come out exactly as from the whole body."""
    data = "".join(pieces).encode()
    values = [KEYS[3], "fake-key-0002"]
    out = b"".join(redact_stream(_chunked(data, cuts), values))
    assert out == redact(data, values)
    assert_nowhere([KEYS[3], KEYS[4], "fake-key-0002"], out.decode())


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from([KEYS[3], KEYS[4], "fake-key-0002", *_NEAR_MISSES]),
                       max_size=14),
       cuts=st.lists(st.integers(0, 400), max_size=8))
def test_keys_run_together_never_come_out_whole(pieces, cuts):
    """Keys that overlap each other may be masked at other places than in the whole body
    (a key shape can overlap a pool key that the chunk cut short), but never leak."""
    data = "".join(pieces).encode()
    out = b"".join(redact_stream(_chunked(data, cuts), [KEYS[3], "fake-key-0002"]))
    assert_nowhere([KEYS[3], KEYS[4], "fake-key-0002"], out.decode())


@pytest.mark.parametrize("lead", ["AIza" + "x" * 31, "AIzaAAAIzaAIza" + "x" * 21, "AIza" * 9])
def test_a_key_run_on_from_key_characters_is_not_rebuilt_by_the_mask(lead):
    """Masking 39 characters of a longer run left 'AIza…AIza' + the rest of the next key."""
    text = lead + KEYS[4]
    assert KEYS[4] not in redact(text)
    assert KEYS[4].encode() not in redact(text.encode())
    assert KEYS[4].encode() not in b"".join(redact_stream([text.encode()]))


def test_complete_events_are_never_held_back():
    """Only the unfinished end of an event can wait for the next chunk."""
    pulled: list[int] = []
    event = b'data: {"text":"Hello"}\n\n'
    key = KEYS[5].encode()

    def upstream() -> Iterator[bytes]:
        for i, chunk in enumerate([event, b'data: {"text":"' + key[:20], key[20:] + b'"}\n\n',
                                   b'data: {"text":"ends with AIzaSy']):
            pulled.append(i)
            yield chunk

    stream = redact_stream(upstream(), [KEYS[5]])
    assert next(stream) == event and pulled == [0]  # out before the next chunk is asked for
    assert next(stream) == b'data: {"text":"'  # the key's first half waits
    assert next(stream) == b"".join([mask_key(KEYS[5]).encode(), b'"}\n\n'])
    assert next(stream) == b'data: {"text":"ends with '
    assert next(stream) == b"AIzaSy"  # no key after all: sent when the stream ends
    assert next(stream, None) is None


# -- the upstream client -------------------------------------------------------------------

def test_a_transport_failure_naming_the_key_is_masked(tmp_path):
    key = KEYS[6]
    pool = KeyPool()
    pool.apply({"keys": [{"id": 1, "value": key, "masked": mask_key(key), "status": "active"}]})
    upstream = Upstream(make_settings(tmp_path, "http://upstream.test", max_attempts=1), pool)
    # At the client's transport entry (responses' default target is requests' own adapter).
    with responses.RequestsMock(target="proxy.transport.Adapter.send") as mocked:
        mocked.add(responses.POST, "http://upstream.test" + GEN, body=requests.ConnectionError(
            f"Max retries exceeded with url: {GEN}?key={key} (refused)"))
        reply = upstream.open(Call("POST", GEN, [], {}, json.dumps(BODY).encode(), model=FLASH))
    assert reply.status == 502
    for text in (json.loads(reply.body)["error"]["message"], reply.attempts[0].reason):
        assert key not in text and f"?key={mask_key(key)} (refused)" in text


# -- the recording points, each on its own (defence in depth) --------------------------------

class Recorder:
    """Stands in for the writer: keeps every op it is handed."""

    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kw: self.ops.append((name, args, kw))


def test_pool_report_masks_the_reason_it_keeps_records_and_logs(caplog):
    writer = Recorder()
    pool = KeyPool(writer)
    pool.apply({"keys": [{"id": i + 1, "value": v, "masked": mask_key(v), "status": "active"}
                         for i, v in enumerate(GOOGLE_KEYS)]})
    key = pool.keys[1]
    # Reasons as a caller that skipped the boundary would hand them over.
    for outcome in (Outcome(Kind.KEY_DEAD, 403, f"CONSUMER_SUSPENDED: {suspended(GOOGLE_KEYS[1])}"),
                    Outcome(Kind.RATE_MINUTE, 429, f"quota for {GOOGLE_KEYS[2]}", time.time() + 30),
                    Outcome(Kind.UPSTREAM, 503, f"overloaded {KEYS[0]}")):
        with caplog.at_level(logging.DEBUG, logger="proxy"):
            pool.report(key, FLASH, outcome)
    text = repr(writer.ops) + repr(key.invalid_reason) + caplog.text
    assert suspended(mask_key(GOOGLE_KEYS[1])) in text and mask_key(KEYS[0]) in text
    assert_nowhere([*GOOGLE_KEYS, KEYS[0]], text)


def test_exchange_masks_the_error_message_and_attempts_it_records():
    writer = Recorder()
    pool = KeyPool()
    pool.apply({"keys": [{"id": 1, "value": GOOGLE_KEYS[0], "masked": mask_key(GOOGLE_KEYS[0]),
                          "status": "active"}]})
    sink = type("Sink", (), {"writer": writer, "pool": pool, "prices": None, "metrics_on": False})()
    ex = Exchange(sink, user=None, dialect="native", method="POST", path=GEN)
    reply = Reply(403, [], b"", attempts=[Attempt(1, mask_key(GOOGLE_KEYS[0]), 403, "key_dead",
                                                  suspended(GOOGLE_KEYS[0]), 1.0)])
    ex.finish(403, reply, error_message=suspended(GOOGLE_KEYS[0]))
    (row,) = [args[0] for name, args, _ in writer.ops if name == "request_finished"]
    assert row["error_message"] == suspended(mask_key(GOOGLE_KEYS[0]))
    assert json.loads(row["attempts_detail"])[0]["reason"] == suspended(mask_key(GOOGLE_KEYS[0]))


def test_the_writer_masks_key_shapes_whoever_queued_them(tmp_path):
    db = open_db(tmp_path / "w.db")
    migrate(db)
    key_id = add_key(db, KEYS[0])
    db.close()
    writer = Writer(tmp_path / "w.db")
    writer.start()
    try:
        writer.event("warning", suspended(KEYS[0]), key_id=key_id)
        writer.key_used(key_id, time.time(), suspended(KEYS[0]))
        writer.key_invalid(key_id, suspended(KEYS[0]), time.time())
        writer.key_cooled(key_id, FLASH, time.time() + 60, "rate_limited", suspended(KEYS[0]))
        writer.request_finished({"id": "r1", "started_at": time.time(), "status": 403,
                                 "error_message": suspended(KEYS[0]),
                                 "attempts_detail": [{"reason": suspended(KEYS[0])}]})
        assert writer.flush()
    finally:
        writer.close()
    conn = sqlite3.connect(tmp_path / "w.db")
    stored = [*conn.execute("SELECT message FROM events WHERE key_id IS NOT NULL"),
              *conn.execute("SELECT last_error, invalid_reason FROM google_keys"),
              *conn.execute("SELECT last_error FROM key_health"),
              *conn.execute("SELECT error_message, attempts_detail FROM requests")]
    conn.close()
    text = json.dumps(stored, ensure_ascii=False)
    assert text.count(suspended(mask_key(KEYS[0]))) == 6  # every column above
    assert_nowhere([KEYS[0]], text)


# -- end to end, in process ----------------------------------------------------------------

@pytest.fixture
def leaky(app_factory, fake, caplog):
    """An app whose Google keys are all suspended; each request spends one (max 1 attempt)."""
    for key in KEYS:
        fake.set_key(key, mode="suspended")
    app = app_factory(google_keys=list(KEYS), max_attempts=1, log_level="DEBUG")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="proxy")
    return app


def last_key(fake) -> str:
    return fake.requests[-1]["key"]


def sdk(app) -> openai.OpenAI:
    """The openai SDK talking to the in-process app (WSGI transport, no sockets)."""
    http = httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url="http://proxy.test")
    return openai.OpenAI(api_key=USER_KEY, base_url="http://proxy.test/v1", http_client=http,
                         max_retries=0)


def recorded_text(app) -> dict[str, str]:
    """Return every recorded text that can quote the upstream, by table.column."""
    st_ = app.extensions["proxy"]
    assert st_.writer.flush()
    db = sqlite3.connect(st_.settings.db_path)
    try:
        out = {}
        for table_, columns in (("requests", ("error_message", "attempts_detail")),
                                ("events", ("message",)),
                                ("google_keys", ("last_error", "invalid_reason")),
                                ("key_health", ("last_error", "reason"))):
            for column in columns:
                rows = [r[0] for r in db.execute(f"SELECT {column} FROM {table_}") if r[0] is not None]
                if column == "attempts_detail":  # JSON: read it as the console will
                    rows = [json.dumps(json.loads(r), ensure_ascii=False) for r in rows]
                out[f"{table_}.{column}"] = "\n".join(map(str, rows))
        return out
    finally:
        db.close()


def assert_nowhere(keys: list[str], *texts: str) -> None:
    for text in texts:
        for key in keys:
            assert key not in text


def test_native_json_error_is_masked_in_the_answer_logs_and_database(leaky, fake, caplog):
    client = leaky.test_client()
    r = client.post(GEN, json=BODY, headers=AUTH)
    key = last_key(fake)
    assert r.status_code == 403
    err = r.get_json()["error"]
    assert err["message"] == suspended(mask_key(key)) and err["status"] == "PERMISSION_DENIED"
    assert_nowhere(KEYS, r.get_data(as_text=True), json.dumps(dict(r.headers)))
    recorded = recorded_text(leaky)
    assert suspended(mask_key(key)) in recorded["requests.error_message"]
    assert mask_key(key) in recorded["requests.attempts_detail"]
    assert mask_key(key) in recorded["events.message"] and "retired" in recorded["events.message"]
    assert suspended(mask_key(key)) in recorded["google_keys.last_error"]
    assert suspended(mask_key(key)) in recorded["google_keys.invalid_reason"]
    assert_nowhere(KEYS, *recorded.values(), caplog.text)
    assert any(mask_key(key) in m and "retired" in m for m in caplog.messages)


def test_native_stream_errors_before_the_stream_are_masked(leaky, fake, caplog):
    client = leaky.test_client()
    for path in (SSE, ARRAY):
        r = client.post(path, json=BODY, headers=AUTH)
        assert r.status_code == 403
        assert suspended(mask_key(last_key(fake))) in r.get_data(as_text=True)
        assert_nowhere(KEYS, r.get_data(as_text=True))
    assert_nowhere(KEYS, *recorded_text(leaky).values(), caplog.text)


def test_fake_splits_the_key_across_chunks(fake):
    """The mid-stream test below only proves something if no chunk holds the whole key."""
    fake.set_key(KEYS[7], stream_error="suspended", piece_bytes=7)
    http = urllib3.PoolManager()
    resp = http.request("POST", fake.url + SSE, body=json.dumps(BODY).encode(), preload_content=False,
                        headers={"x-goog-api-key": KEYS[7], "Content-Type": "application/json"})
    chunks = list(resp.stream(None))
    assert resp.status == 200 and max(map(len, chunks)) <= 7
    assert KEYS[7].encode() in b"".join(chunks)
    assert not any(KEYS[7].encode() in c for c in chunks)


@pytest.mark.parametrize("path", [SSE, ARRAY])
def test_a_key_in_an_error_mid_stream_is_masked_even_split_across_chunks(app_factory, fake,
                                                                         caplog, path):
    for key in GOOGLE_KEYS:
        fake.set_key(key, stream_error="suspended", piece_bytes=5)
    app = app_factory(log_level="DEBUG")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="proxy")
    r = app.test_client().post(path, json=BODY, headers=AUTH)
    text = r.get_data(as_text=True)
    key = last_key(fake)
    assert r.status_code == 200 and "candidates" in text  # the first chunk, then the error
    assert suspended(mask_key(key)) in text
    assert_nowhere(GOOGLE_KEYS, text, caplog.text, *recorded_text(app).values())


def test_openai_chat_and_responses_errors_are_masked(leaky, fake, caplog):
    client = sdk(leaky)
    calls = [lambda: client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}]),
             lambda: client.chat.completions.create(model=FLASH, stream=True,
                                                    messages=[{"role": "user", "content": "hi"}]),
             lambda: client.responses.create(model=FLASH, input="hi"),
             lambda: client.responses.create(model=FLASH, input="hi", stream=True)]
    for call in calls:
        with pytest.raises(openai.PermissionDeniedError) as err:
            call()
        key = last_key(fake)
        assert err.value.body["message"] == suspended(mask_key(key))
        assert_nowhere(KEYS, err.value.response.text, json.dumps(dict(err.value.response.headers)))
    recorded = recorded_text(leaky)
    assert recorded["requests.error_message"].count("has been suspended") == len(calls)
    assert_nowhere(KEYS, *recorded.values(), caplog.text)


def test_googles_openai_layer_error_is_masked(leaky, fake, caplog):
    r = leaky.test_client().post("/v1beta/openai/chat/completions", headers={
        "Authorization": f"Bearer {USER_KEY}"}, json={"model": FLASH, "messages": [
            {"role": "user", "content": "hi"}]})
    assert r.status_code == 403
    assert suspended(mask_key(last_key(fake))) in r.get_data(as_text=True)
    assert_nowhere(KEYS, r.get_data(as_text=True), caplog.text, *recorded_text(leaky).values())


def test_pool_keys_not_shaped_like_googles_are_masked_too(app_factory, fake, caplog):
    for key in GOOGLE_KEYS:
        fake.set_key(key, mode="suspended")
    app = app_factory(log_level="DEBUG")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="proxy")
    r = app.test_client().post(GEN, json=BODY, headers=AUTH)
    assert r.status_code == 403  # every key tried, the last answer relayed
    assert r.get_json()["error"]["message"] == suspended(mask_key(last_key(fake)))
    recorded = recorded_text(app)
    assert all(mask_key(k) in recorded["events.message"] for k in GOOGLE_KEYS)
    assert_nowhere(GOOGLE_KEYS, r.get_data(as_text=True), caplog.text, *recorded.values())


def test_the_console_shows_only_masked_keys(leaky, fake):
    client = leaky.test_client()
    client.post(GEN, json=BODY, headers=AUTH)
    client.post(SSE, json=BODY, headers=AUTH)
    recorded_text(leaky)  # flushed
    db_path = leaky.extensions["proxy"].settings.db_path
    seen: list[str] = []

    def rows(t: Any) -> list[str]:
        return [" ".join(c.plain if hasattr(c, "plain") else str(c) for c in t.get_row(k))
                for k in t.keys_in_order()]

    async def go() -> None:
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            requests_ = table(app, RequestsPane)
            await until(pilot, lambda: requests_.row_count == 2)
            seen.extend(rows(requests_))
            await pilot.press("enter")  # the request's detail: error message and attempts
            await until(pilot, lambda: isinstance(app.screen, TextScreen))
            seen.append(screen_text(app))
            await pilot.press("escape", "2")
            logs = table(app, LogsPane)
            await until(pilot, lambda: logs.row_count >= 2)
            seen.extend(rows(logs))
            await pilot.press("3")
            keys = table(app, KeysPane)
            await until(pilot, lambda: keys.row_count == len(KEYS))
            seen.extend(rows(keys))
            for _ in range(len(KEYS)):  # each key's detail line: dead reason, last error
                seen.append(str(app.query_one("#key-detail").render()))
                await pilot.press("down")

    asyncio.run(go())
    text = "\n".join(seen)
    assert "Permission denied" in text and "suspended" in text
    assert sum(mask_key(k) in text for k in KEYS) >= 2
    assert_nowhere(KEYS, text)


# -- end to end, the real server -------------------------------------------------------------

def test_gunicorn_server_at_debug_never_shows_the_key(live_factory, fake):
    for key in KEYS:
        fake.set_key(key, mode="suspended")
    proxy = live_factory(GOOGLE_KEYS="|".join(KEYS), RETRY_MAX_ATTEMPTS="1", LOG_LEVEL="DEBUG")
    answers = []
    r = requests.post(proxy.url + GEN, json=BODY, headers=AUTH, timeout=10)
    answers.append(r.text + json.dumps(dict(r.headers)))
    assert r.status_code == 403 and suspended(mask_key(last_key(fake))) in r.text
    client = openai.OpenAI(api_key=USER_KEY, base_url=proxy.url + "/v1", max_retries=0, timeout=10)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["message"] == suspended(mask_key(last_key(fake)))
    answers.append(err.value.response.text)
    proxy.stop()
    logs = proxy.logs()
    assert "retired" in logs and mask_key(last_key(fake)) in logs
    db = sqlite3.connect(proxy.db)
    stored = json.dumps(ensure_ascii=False,
                        obj=db.execute("SELECT error_message, attempts_detail FROM requests").fetchall()
                        + db.execute("SELECT message FROM events").fetchall()
                        + db.execute("SELECT last_error, invalid_reason FROM google_keys").fetchall())
    db.close()
    assert suspended(mask_key(last_key(fake))) in stored
    assert_nowhere(KEYS, logs, stored, *answers)
