"""ProxyResponse writes an answer with as few system calls as its framing allows.

gunicorn's Response over a socket that records each write: the head leaves with the first
body bytes, a stream's pieces leave as they come, a body-less answer is its head alone, and
a short `send` is finished with `sendall`.
"""
from __future__ import annotations

import email.utils
import http.client
import io

import pytest
from gunicorn.config import Config
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader

from proxy.serving.response import COALESCE_LIMIT, ProxyResponse


class Socket:
    """Records writes; `send` takes at most `take` bytes, as a full kernel buffer would."""

    def __init__(self, take: int | None = None) -> None:
        self.writes: list[bytes] = []
        self.take = take

    def send(self, data: bytes) -> int:
        n = len(data) if self.take is None else min(self.take, len(data))
        self.writes.append(bytes(data[:n]))
        return n

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def response(method: str = "GET", version: str = "1.1", sock: Socket | None = None):
    raw = f"{method} /x HTTP/{version}\r\nHost: proxy\r\n\r\n".encode()
    req = Request(Config(), IterUnreader([raw]), ("127.0.0.1", 5555))
    sock = sock or Socket()
    return ProxyResponse(req, sock, Config()), sock


def serve(resp: ProxyResponse, status: str, headers: list[tuple[str, str]], body: list[bytes]):
    resp.start_response(status, headers)
    for piece in body:
        resp.write(piece)
    resp.close()


def parsed(wire: bytes, method: str = "GET") -> http.client.HTTPResponse:
    class Wire:
        def makefile(self, mode: str) -> io.BytesIO:
            return io.BytesIO(wire)

    answer = http.client.HTTPResponse(Wire(), method=method)  # type: ignore[arg-type]
    answer.begin()
    return answer


def test_an_answer_of_one_piece_is_one_write_with_its_head():
    resp, sock = response()
    body = b'{"ok": true}'
    serve(resp, "200 OK", [("Content-Type", "application/json"),
                           ("Content-Length", str(len(body)))], [body])
    [write] = sock.writes
    answer = parsed(write)
    assert answer.status == 200 and answer.read() == body
    assert answer.headers["Connection"] == "keep-alive"
    assert email.utils.parsedate_to_datetime(answer.headers["Date"])  # RFC 9110's format


def test_a_stream_sends_each_piece_as_it_comes_and_ends_with_the_last_chunk():
    resp, sock = response()
    resp.start_response("200 OK", [("Content-Type", "text/event-stream")])
    resp.write(b"data: 1\r\n\r\n")
    assert len(sock.writes) == 1  # the head went out with the first event, not later
    resp.write(b"data: 2\r\n\r\n")
    assert len(sock.writes) == 2
    resp.close()
    assert sock.writes[-1] == b"0\r\n\r\n"
    answer = parsed(b"".join(sock.writes))
    assert answer.headers["Transfer-Encoding"] == "chunked"
    assert answer.read() == b"data: 1\r\n\r\ndata: 2\r\n\r\n"


def test_an_empty_stream_still_sends_its_head_and_last_chunk():
    resp, sock = response()
    serve(resp, "200 OK", [("Content-Type", "text/event-stream")], [])
    assert parsed(b"".join(sock.writes)).read() == b""


@pytest.mark.parametrize("method, status", [("HEAD", "200 OK"), ("GET", "204 No Content"),
                                            ("GET", "304 Not Modified")])
def test_an_answer_without_a_body_is_its_head_alone(method, status):
    resp, sock = response(method)
    serve(resp, status, [("Content-Length", "12")] if method == "HEAD" else [], [b"not sent"])
    [write] = sock.writes
    assert write.endswith(b"\r\n\r\n") and b"not sent" not in write


def test_a_large_body_is_not_copied_behind_its_head():
    resp, sock = response()
    body = b"x" * (COALESCE_LIMIT + 1)
    serve(resp, "200 OK", [("Content-Length", str(len(body)))], [body])
    head, sent = sock.writes
    assert head.endswith(b"\r\n\r\n") and sent == body


def test_what_send_did_not_take_is_finished_with_sendall():
    resp, sock = response(sock=Socket(take=10))
    body = b"y" * 500
    serve(resp, "200 OK", [("Content-Length", str(len(body)))], [body])
    assert len(sock.writes[0]) == 10
    assert parsed(b"".join(sock.writes)).read() == body


def test_http_1_0_gets_a_closing_answer_in_one_write():
    resp, sock = response(version="1.0")
    serve(resp, "200 OK", [], [b"a", b"b"])
    answer = parsed(b"".join(sock.writes))
    assert answer.headers["Connection"] == "close" and resp.should_close()
    assert sock.writes[0].endswith(b"\r\n\r\na")  # head with the first piece
