"""Closed-loop HTTP/1.1 keep-alive load generator on gevent, with per-chunk timing.

    .venv/bin/python bench/loadgen.py            # JSON lines: one command in, one result out

Runs as its own process, monkey-patched here only, so its CPU never shares a GIL with
the proxy or with the orchestrator (bench/proxy_bench.py), which drives it over
stdin/stdout. The client is deliberately minimal: raw sockets, one request template per
phase, a chunked-transfer parser that timestamps every HTTP chunk as it completes. That
is what lets the bench count chunks per stream (coalescing would show up as fewer,
larger chunks) and measure the gaps between them, which no off-the-shelf tool reports.

Command (one JSON object per line):
    {"op": "run", "host": "127.0.0.1", "port": 8080, "path": "/v1beta/...", "key": "...",
     "body": "{...}", "stream": true, "concurrency": 32, "warmup": 0.5, "duration": 2.0,
     "once": false, "timeout": 30, "max_warmup": 5}
    {"op": "quit"}

With "once" every connection sends exactly one request at the same moment and closes
(the 1,000-open-streams burst). Otherwise each connection loops, reusing its socket
(keep-alive). The measured window opens once `warmup` seconds have passed AND every
connection has finished its first request (at c=256 the connect storm alone can take a
second through the proxy, and would otherwise leak into p99), or after `max_warmup`
seconds whatever happened, and lasts `duration` seconds. Throughput counts completions inside the
window; latencies are those of
requests that started inside it.
"""
from __future__ import annotations

if __name__ == "__main__":  # patch before anything imports socket; never when imported
    from gevent import monkey

    monkey.patch_all()

import json
import resource
import socket
import sys
import time
from typing import Any

import gevent
import gevent.event

perf = time.perf_counter


class Closed(Exception):
    """The server closed the connection before the response was complete."""


class Conn:
    """One keep-alive client connection with a read buffer and the time of the last read."""

    __slots__ = ("sock", "buf", "t")

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # Requests are one small write, but Nagle would still delay a write that follows
        # an unacknowledged one on a reused connection.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.t = 0.0

    def fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise Closed("connection closed by the server mid-response")
        self.t = perf()
        self.buf += data

    def line(self) -> bytes:
        """Return one CRLF-terminated line (without the CRLF)."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            self.fill()

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Response:
    """What one request came to: status, timings (perf_counter seconds) and framing."""

    __slots__ = ("status", "keep_alive", "t_head", "chunk_times", "body")

    def __init__(self) -> None:
        self.status = 0
        self.keep_alive = True
        self.t_head = 0.0
        self.chunk_times: list[float] = []
        self.body = b""


def read_response(conn: Conn) -> Response:
    """Read one HTTP/1.1 response, timestamping each chunk of a chunked body."""
    r = Response()
    while True:
        i = conn.buf.find(b"\r\n\r\n")
        if i >= 0:
            break
        conn.fill()
    head = bytes(conn.buf[:i]).decode("latin-1")
    del conn.buf[:i + 4]
    r.t_head = conn.t
    lines = head.split("\r\n")
    version, _, rest = lines[0].partition(" ")
    r.status = int(rest[:3])
    length = None
    chunked = False
    r.keep_alive = version == "HTTP/1.1"
    for h in lines[1:]:
        name, _, value = h.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            r.keep_alive = value.lower() == "keep-alive" or (
                r.keep_alive and value.lower() != "close")
    if chunked:
        parts = []
        while True:
            size = int(conn.line().split(b";")[0], 16)
            if size == 0:
                while conn.line():  # trailers, then the empty line
                    pass
                break
            parts.append(conn.exact(size))
            conn.exact(2)
            # The chunk is complete as of the read that delivered its last byte.
            r.chunk_times.append(conn.t)
        r.body = b"".join(parts)
    elif length is not None:
        r.body = conn.exact(length)
    else:  # no framing: the body runs to the end of the connection
        try:
            while True:
                conn.fill()
        except Closed:
            pass
        r.body = bytes(conn.buf)
        conn.buf.clear()
        r.keep_alive = False
    return r


def sse_events(body: bytes) -> int:
    """Count server-sent events (blank-line terminated) in a body."""
    return body.count(b"\n\n") + body.count(b"\r\n\r\n")


class Phase:
    """One load phase: the request template, the clock window, and what was observed."""

    def __init__(self, cmd: dict[str, Any]) -> None:
        self.host: str = cmd["host"]
        self.port: int = int(cmd["port"])
        self.stream: bool = bool(cmd.get("stream"))
        self.concurrency: int = int(cmd["concurrency"])
        self.once: bool = bool(cmd.get("once"))
        self.timeout: float = float(cmd.get("timeout", 30))
        body = cmd["body"].encode()
        # Built once: per-request formatting would be client CPU charged to every phase.
        self.request = (
            f"POST {cmd['path']} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"x-goog-api-key: {cmd['key']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n").encode() + body
        self.t0 = perf()
        self.warmup = float(cmd.get("warmup", 0))
        self.duration = float(cmd.get("duration", 0))
        self.max_warmup = max(self.warmup, float(cmd.get("max_warmup", 5)))
        # Provisional until every connection has had its first answer (see open_window).
        self.warm_end = self.t0 + self.max_warmup
        self.end = self.warm_end + self.duration
        self.unanswered = self.concurrency
        self.all_answered = gevent.event.Event()
        self.t_all_answered: float | None = None  # when the last connection got its first answer
        self.unanswered_at_window = 0
        self.total = 0  # every finished request, warmup and tail included (for CPU/request)
        self.in_window = 0  # successful completions inside the measured window (throughput)
        self.connects = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.lat: list[float] = []
        self.ttfb: list[float] = []
        self.gaps: list[float] = []
        self.frames: dict[int, int] = {}
        self.events: dict[int, int] = {}
        self.last_done = self.t0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def one(self, conn: Conn) -> bool:
        """Send one request on `conn` and record it; return whether conn stays usable."""
        t0 = perf()
        conn.sock.sendall(self.request)
        r = read_response(conn)
        t1 = perf()
        self.total += 1
        self.last_done = max(self.last_done, t1)
        if r.status != 200:
            self.error(f"HTTP {r.status}: {r.body[:200]!r}")
            return r.keep_alive
        times = r.chunk_times
        if self.stream:  # framing is checked on every stream, warmup included
            n = len(times)
            self.frames[n] = self.frames.get(n, 0) + 1
            ev = sse_events(r.body)
            self.events[ev] = self.events.get(ev, 0) + 1
        if self.once or self.warm_end <= t1 <= self.end:
            self.in_window += 1
        if self.once or (self.warm_end <= t0 and t1 <= self.end):
            self.lat.append((t1 - t0) * 1000)
            if self.stream and times:
                self.ttfb.append((times[0] - t0) * 1000)
                self.gaps.extend((b - a) * 1000 for a, b in zip(times, times[1:]))
        return r.keep_alive

    def loop(self) -> None:
        """Closed loop on one connection until the window ends (reconnect if closed)."""
        conn: Conn | None = None
        answered = False
        while perf() < self.end:
            try:
                if conn is None:
                    conn = Conn(self.host, self.port, self.timeout)
                    self.connects += 1
                keep = self.one(conn)
                if not answered:
                    answered = True
                    self.unanswered -= 1
                    if not self.unanswered:
                        self.t_all_answered = perf()
                        self.all_answered.set()
                if not keep:
                    conn.close()
                    conn = None
            except Exception as exc:  # counted, then a fresh connection
                self.error(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
                gevent.sleep(0.01)  # a refusing server must not turn this into a busy loop
        if conn is not None:
            conn.close()

    def open_window(self) -> None:
        """Start the measured window after the warmup and the first answer on every connection."""
        gevent.sleep(self.warmup)
        self.all_answered.wait(timeout=max(0.0, self.t0 + self.max_warmup - perf()))
        self.unanswered_at_window = self.unanswered
        self.warm_end = perf()
        self.end = self.warm_end + self.duration

    def burst(self) -> None:
        """One request on a fresh connection, then close (all greenlets start together)."""
        conn = None
        try:
            conn = Conn(self.host, self.port, self.timeout)
            self.connects += 1
            self.one(conn)
        except Exception as exc:
            self.error(f"{type(exc).__name__}: {exc}")
        finally:
            if conn is not None:
                conn.close()

    def run(self) -> dict[str, Any]:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        target = self.burst if self.once else self.loop
        greenlets = [gevent.spawn(target) for _ in range(self.concurrency)]
        if not self.once:
            gevent.spawn(self.open_window).join()
        # Tail requests get the per-request timeout; anything still stuck after that is
        # a hang worth reporting, not waiting for.
        gevent.joinall(greenlets, timeout=(0 if self.once else self.end - perf()) + self.timeout + 5)
        stuck = sum(1 for g in greenlets if not g.dead)
        if stuck:
            gevent.killall(greenlets, block=False)
            for _ in range(stuck):
                self.error("request still open at the phase timeout")
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        window = (self.last_done - self.t0) if self.once else (self.end - self.warm_end)
        r3 = lambda xs: [round(x, 3) for x in xs]  # noqa: E731 - µs precision keeps JSON small
        return {
            "ok": True, "completed": self.in_window, "total": self.total, "window": window,
            "warmup": (self.warm_end - self.t0) if not self.once else 0.0,
            # Connect storm: seconds until every connection had a first answer (None: not
            # within max_warmup; then `unanswered_at_window` connections were still waiting).
            "first_answer_all": (None if self.t_all_answered is None
                                 else self.t_all_answered - self.t0),
            "unanswered_at_window": self.unanswered_at_window,
            "connects": self.connects, "errors": self.errors, "error_samples": self.error_samples,
            "lat": r3(self.lat), "ttfb": r3(self.ttfb), "gaps": r3(self.gaps),
            "frames": {str(k): v for k, v in self.frames.items()},
            "events": {str(k): v for k, v in self.events.items()},
            "client_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        }


def main() -> int:
    """Serve commands from stdin until {"op": "quit"} or end of input."""
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            break
        try:
            result = Phase(cmd).run()
        except Exception as exc:  # report, keep serving: the orchestrator decides
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(result) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
