"""ServingGuard called through WSGI: a body's bytes are charged to the worker's budget until
the server closes the answer, even when the answer's own close fails; a body waiting for
room gets in when another gives its bytes back."""
from __future__ import annotations

import io
import time

import gevent
import pytest

from werkzeug.exceptions import BadRequest

from proxy.serving.guard import BodyBudget, BodyReader, ServingGuard
from proxy.settings import Settings

BODY = b'{"contents": []}'


class Answer:
    """An app's answer whose close() fails, as a broken upstream stream's may."""

    def __iter__(self):
        return iter([b"ok"])

    def close(self) -> None:
        raise RuntimeError("upstream went away")


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", "2"), ("X-Request-Id", "from-the-app")])
    return Answer()


def call(guard: ServingGuard):
    headers: list = []
    environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(BODY)),
               "wsgi.input": io.BytesIO(BODY)}
    answer = guard(environ, lambda status, h, exc_info=None: headers.extend(h))
    return answer, dict(headers)


def test_a_bodys_bytes_are_given_back_when_the_answers_close_fails(tmp_path):
    guard = ServingGuard(app, Settings(db_path=str(tmp_path / "g.db")))
    answer, headers = call(guard)
    assert list(answer) == [b"ok"]
    assert guard.budget.used == len(BODY)  # held while the answer is being sent
    with pytest.raises(RuntimeError):
        answer.close()
    assert guard.budget.used == 0
    assert headers["X-Request-Id"] != "from-the-app"  # the guard's id, once


def test_a_body_waiting_for_room_gets_in_when_another_gives_its_bytes_back():
    budget = BodyBudget(100)
    assert budget.take(80, 0, time.monotonic() + 1)
    budget.give(0)  # nothing returned, nobody woken
    waiter = gevent.spawn(budget.take, 50, 0, time.monotonic() + 5)
    gevent.sleep(0)  # the waiter runs until it blocks for room
    assert budget.waiting == 1 and not waiter.ready()
    budget.give(80)
    assert waiter.get(timeout=2) is True
    assert budget.used == 50 and budget.waiting == 0
    assert not budget.take(60, 0, time.monotonic() + 0.05)  # no room, and nobody frees any


@pytest.mark.parametrize("sizes", [[-1], [None], [10, -1]])
def test_a_body_shorter_than_its_content_length_is_refused_however_it_is_read(tmp_path, sizes):
    budget = BodyBudget(1000)
    reader = BodyReader(io.BytesIO(b"x" * 60), 100, Settings(db_path=str(tmp_path / "g.db")),
                        budget, time.monotonic())
    with pytest.raises(BadRequest, match="60 of the 100 bytes"):
        for size in sizes:
            reader.read(size)
    assert budget.used == 0  # a refused body gives its bytes back
