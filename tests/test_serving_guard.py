"""ServingGuard called through WSGI: a body's bytes are charged to the worker's budget until
the server closes the answer, even when the answer's own close fails."""
from __future__ import annotations

import io

import pytest

from proxy.serving.guard import ServingGuard
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
