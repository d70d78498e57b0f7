"""CPU per request of the serving layer alone: the gevent worker and the body guard.

    .venv/bin/python bench/serving_cpu.py [--worker proxy|gevent|pywsgi] [--bare] [--n 20000]
                                          [--clients 64] [--sleep-ms 0] [--profile out.prof]

One process, gevent: a worker object (ProxyWorker by default; gunicorn's GeventWorker or
gevent's pywsgi handler to compare) serves a trivial WSGI app behind the ServingGuard
(--bare: without it) on a loopback listener, and `--clients` keep-alive client greenlets
in the same process send the load generator's request (a POST with a small JSON body)
over and over. The figure is the process's CPU per request. The clients' share is in it
and the same whatever serves, so differences between runs are the serving layer's.
No arbiter, no Flask, no upstream: what is left is gunicorn's parsing, environ, response
writing and keep-alive loop, ProxyWorker's additions, and the guard.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

BODY = b'{"contents": [{"role": "user", "parts": [{"text": "benchmark the proxy"}]}]}'
ANSWER = b'{"candidates": [{"content": {"parts": [{"text": "ok"}]}}]}'


def request_bytes(port: int) -> bytes:
    """The load generator's request (bench/loadgen.py), byte for byte."""
    return (f"POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nx-goog-api-key: bench-user-key\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
            f"Connection: keep-alive\r\n\r\n").encode() + BODY


def make_app(sleep: float):
    """A WSGI app that reads the body and answers a fixed JSON, as Flask would frame it."""
    def app(environ, start_response):
        environ["wsgi.input"].read()
        if sleep:
            gevent.sleep(sleep)
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(ANSWER)))])
        return [ANSWER]
    return app


def make_worker(kind: str, app, settings, listener):
    """Return a started gevent server for `kind`, serving `app` on `listener`."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from proxy.serving.gunicorn_conf import options

    cfg = Config()
    for name, value in options(settings).items():
        if name in cfg.settings and not callable(value):
            cfg.set(name, value)
    log = Logger(cfg)
    if kind == "raw":
        server = StreamServer(listener, handle=raw_handler, spawn=Pool(10000))
        server.start()
        return server
    if kind == "pywsgi":
        from gunicorn.workers.ggevent import GeventPyWSGIWorker as cls
    elif kind == "gevent":
        from gunicorn.workers.ggevent import GeventWorker as cls
    else:
        from proxy.serving.worker import ProxyWorker as cls
    worker = cls(0, os.getppid(), [], app, 60, cfg, log)
    worker.wsgi = app
    if kind == "proxy":
        if hasattr(worker, "prepare"):
            worker.prepare(settings)  # what init_process does before the worker runs
        else:  # an older ProxyWorker, for comparisons
            worker.connections = set()
            worker.head_timeout = settings.head_timeout
            worker.drain_limit = settings.max_body_bytes
    if kind == "pywsgi":
        from gunicorn.http.wsgi import base_environ
        from gunicorn.workers.ggevent import VERSION
        environ = base_environ(worker.cfg)
        environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": VERSION})
        server = cls.server_class(listener, application=app, spawn=Pool(10000), log=log,
                                  handler_class=cls.wsgi_handler, environ=environ)
    else:
        server = StreamServer(listener, handle=partial(worker.handle, listener),
                              spawn=Pool(10000))
    server.start()
    return server


def raw_handler(sock, addr) -> None:
    """The floor: read a request, send a canned answer; no parsing, no WSGI."""
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))
    while True:
        data = sock.recv(65536)
        if not data:
            return
        while not data.endswith(BODY):
            more = sock.recv(65536)
            if not more:
                return
            data += more
        sock.sendall(answer)


class Client:
    """One keep-alive connection that sends the same request and reads whole answers."""

    def __init__(self, port: int, request: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = request
        self.buf = b""

    def one(self) -> int:
        self.sock.sendall(self.request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        head = buf[:end + 2].lower()
        at = head.index(b"content-length:") + 15
        length = int(head[at:head.index(b"\r\n", at)])
        while len(buf) < end + 4 + length:
            buf += self._recv()
        self.buf = buf[end + 4 + length:]
        return int(head[9:12])

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["proxy", "gevent", "pywsgi", "raw"], default="proxy")
    p.add_argument("--bare", action="store_true", help="no ServingGuard")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--sleep-ms", type=float, default=0.0)
    p.add_argument("--profile", metavar="FILE")
    args = p.parse_args()

    from proxy.serving.guard import ServingGuard
    from proxy.settings import Settings

    settings = Settings(db_path=":memory:", user_keys=["bench-user-key"], log_level="WARNING")
    app = make_app(args.sleep_ms / 1000)
    if not args.bare:
        app = ServingGuard(app, settings)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    server = make_worker(args.worker, app, settings, listener)
    request = request_bytes(port)
    clients = [Client(port, request) for _ in range(args.clients)]
    left = [0]
    bad = [0]

    def loop(client: Client) -> None:
        while left[0] > 0:
            left[0] -= 1
            if client.one() != 200:
                bad[0] += 1

    def phase(n: int) -> float:
        left[0] = n
        c0 = time.process_time()
        gevent.joinall([gevent.spawn(loop, c) for c in clients], raise_error=True)
        return time.process_time() - c0

    phase(min(2000, args.n))  # warm
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    cpu = phase(args.n)
    if prof:
        prof.disable()
        prof.dump_stats(args.profile)
    print(f"{args.worker}{' bare' if args.bare else ''}: {args.n} requests over "
          f"{args.clients} connections, {1e6 * cpu / args.n:.1f} us CPU per request; "
          f"non-200: {bad[0]}")
    for client in clients:
        client.sock.close()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
