"""ProxyResponse: gunicorn's HTTP/1.1 response, written with fewer system calls.

gunicorn sends a response's head in one `sendall` and each body piece in another, and
gevent's `sendall` asks the kernel for the socket's buffer size before every write. A
proxied answer is usually one body piece, so here the head waits for the first body bytes
and leaves with them in one `send`: one system call per answer instead of four. The Date
header is formatted once a second, not once per answer. Framing (Content-Length, chunked,
bodies omitted for HEAD/1xx/204/304), validation and keep-alive decisions stay gunicorn's.
"""
from __future__ import annotations

import time
from typing import Any

from gunicorn import util
from gunicorn.http.wsgi import Response

# Above this, the head goes out on its own rather than being copied in front of the body.
COALESCE_LIMIT = 1 << 16
LAST_CHUNK = b"0\r\n\r\n"

_date: list[Any] = [0, ""]  # (second, its Date header value)


def http_date() -> str:
    """Return the current Date header value, formatted at most once a second."""
    now = int(time.time())
    if now != _date[0]:
        _date[:] = [now, util.http_date(now)]
    return _date[1]


def send(sock: Any, data: bytes) -> None:
    """Write all of `data`: one `send` when the socket takes it whole (the usual case)."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


class ProxyResponse(Response):
    """gunicorn's Response with the head sent together with the first body bytes."""

    pending = b""  # the head, once committed and until it is written

    def default_headers(self) -> list[str]:
        # gunicorn's, with the cached Date
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        headers = [f"HTTP/{self.req.version[0]}.{self.req.version[1]} {self.status}\r\n",
                   f"Server: {self.version}\r\n",
                   f"Date: {http_date()}\r\n",
                   f"Connection: {connection}\r\n"]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def send_headers(self) -> None:
        """Commit the head; it is written with the first body bytes, or at close."""
        if self.headers_sent:
            return
        head = self.default_headers()
        head.extend([f"{k}: {v}\r\n" for k, v in self.headers])
        head.append("\r\n")
        self.pending = "".join(head).encode("latin-1")
        self.headers_sent = True

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        self._write(data)

    def _write(self, data: bytes) -> None:
        head = self.pending
        if head:
            self.pending = b""
            if len(data) > COALESCE_LIMIT:
                send(self.sock, head)
            else:
                data = head + data
        send(self.sock, data)

    def sendfile(self, respiter: Any) -> bool:
        # gunicorn writes the head and the file itself there: the head must be out first
        self.send_headers()
        if self.pending:
            self._write(b"")
        return super().sendfile(respiter)

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        if self.chunked:
            self._write(LAST_CHUNK)
        elif self.pending:
            self._write(b"")
