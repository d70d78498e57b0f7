"""A real HTTP fake of Google's Gemini API (generativelanguage.googleapis.com).

Used by the proxy's tests, by the benchmarks and by `gemini-proxy demo`. It speaks the
native REST API (`/v1beta` and `/v1`: models, generateContent, both stream framings,
countTokens, embeddings, files with resumable upload, cachedContents) and Google's
OpenAI layer (`/v1beta/openai/…`), answers deterministically ("Echo: …"), and lets each
key misbehave the way real keys do (invalid, disabled, suspended, per-minute and daily
quotas, overload, 500s, hangs, streams cut mid-way).

In-process::

    fake = FakeUpstream(chunk_delay_ms=5)
    url = fake.start()                  # gevent server on its own OS thread and hub
    fake.set_key("fake-key-1", rpm=2)
    ...
    fake.stop()

Out of process: ``python -m proxy.fake.server --port 8787`` (or `serve_forever`),
driven over HTTP with ``POST /_fake/keys``, ``POST /_fake/reset``,
``GET /_fake/requests`` and ``POST /_fake/config``.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from typing import Any

import gevent
import gevent.event
import gevent.pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from proxy import realthread
from proxy.fake.app import FakeApp, apply_config, config_dict
from proxy.fake.state import Behaviour, Config, State
from proxy.fake.web import Abort

__all__ = ["FakeUpstream", "serve_forever", "main"]

_STOP_GRACE_S = 0.25  # idle keep-alive handlers would otherwise hold stop() for the full grace
_BACKLOG = 4096  # the kernel caps it at somaxconn; thousands of streams may connect at once


class _Handler(WSGIHandler):
    """pywsgi handler with Nagle off that can drop a connection mid-body on purpose."""

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        # pywsgi sends headers and body in separate writes; with Nagle on, the second
        # write waits for the client's delayed ACK (~40 ms) on every keep-alive answer
        # and every stream chunk.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP (e.g. a Unix socket)
        super().__init__(sock, address, server, rfile)

    def process_result(self) -> None:
        try:
            super().process_result()
        except Abort:
            # No terminating chunk, no more bytes: the client must see a broken body.
            self.close_connection = True


def _make_server(app: FakeApp, host: str, port: int) -> WSGIServer:
    # log=None: an access log line per request would dominate the benchmark's profile.
    # An unbounded Pool (not bare greenlets) lets stop() cut hanging and keep-alive handlers.
    return WSGIServer((host, port), app, log=None, handler_class=_Handler, backlog=_BACKLOG,
                      spawn=gevent.pool.Pool())


def _connectable(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)


class FakeUpstream:
    """A fake Gemini API: a WSGI app (`.app`) plus a gevent server to run it.

    Global knobs: `latency_ms` (before a model call answers), `chunk_delay_ms` (between
    stream chunks), `chunks` (pieces per stream), `strict_keys` (unknown keys answer as
    invalid), `record` / `max_recorded` (the request log). Each can be overridden per key
    with `set_key`. All methods are thread-safe.
    """

    def __init__(self, *, latency_ms: float = 0, chunk_delay_ms: float = 0, chunks: int = 4,
                 strict_keys: bool = False, record: bool = True,
                 max_recorded: int = 10_000) -> None:
        self.config = Config(latency_ms=latency_ms, chunk_delay_ms=chunk_delay_ms, chunks=chunks,
                             strict_keys=strict_keys, record=record, max_recorded=max_recorded)
        self.state = State(self.config)
        self.app = FakeApp(self.state)
        self.url: str | None = None
        self._loop: Any = None
        self._stop_event: gevent.event.Event | None = None
        self._done: Any = None

    # --- behaviour ------------------------------------------------------------------------

    def set_key(self, key: str, **behaviour: Any) -> None:
        """Make `key` behave as described (replacing earlier settings, restarting counters).

        mode: "ok" (default), "invalid" (400 API_KEY_INVALID), "expired", "denied"
          (403 SERVICE_DISABLED), "suspended" (403 CONSUMER_SUSPENDED), "location"
          (400 FAILED_PRECONDITION), "daily" (429 per-day quota), "tpm" (429 input tokens
          per minute), "overload" (503), "error500", "deadline" (504), "hang", "reset".
        rpm / rpm_window_s: sliding window per (key, model); beyond it 429 per-minute with
          RetryInfo = whole seconds until a slot frees (`retry_delay_s` overrides).
        rpd: requests per (key, model) per Pacific day; beyond it 429 per-day. tpm: input
          tokens per (key, model) per minute; a call that would pass it gets a 429 on the
          input-token quota. Every quota 429 names its quotaId and quotaValue and says
          `limit: N` like Google's (0 makes the model one the key has no quota for);
          `refusals()` counts them.
        daily_limit: the limit quoted in the daily 429 message.
        fail_times: the mode applies to the next N model calls only, then "ok".
        sequence: modes consumed one per model call before anything else.
        latency_ms, chunk_delay_ms, chunks: per-key overrides of the global knobs.
        reset_after_chunks: streams send K chunks, then the connection drops.
        hang: hold model calls until the client gives up (True, or seconds), then 504.
        sse_crlf: end SSE events with CRLF CRLF instead of LF LF.
        stream_error: a failing mode ("suspended", "overload", …) whose Google error is
          sent inside a native stream after its first chunk, ending it (status stays 200).
        piece_bytes: send stream bytes in HTTP chunks of at most N bytes, so events (and
          anything in them) straddle chunk boundaries.
        """
        self.state.set_key(key, Behaviour.from_dict(behaviour))

    def set_keys(self, keys: dict[str, dict[str, Any]]) -> None:
        """Apply `set_key` to each key → behaviour mapping (all validated first)."""
        built = {key: Behaviour.from_dict(opts or {}) for key, opts in keys.items()}
        for key, behaviour in built.items():
            self.state.set_key(key, behaviour)

    def configure(self, **config: Any) -> None:
        """Change global knobs at run time (latency_ms, chunk_delay_ms, chunks, …)."""
        apply_config(self.state, config)

    def reset(self) -> None:
        """Forget key behaviours, quota windows, recorded requests, files and caches."""
        self.state.reset()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Return the recorded requests, oldest first.

        Each is dict(method, path, query, headers (lower-cased names), key, body (parsed
        JSON or None), ts). Calls to /_fake/* are not recorded.
        """
        return self.state.recorded_requests()

    def refusals(self) -> dict[tuple[str, str, str], int]:
        """Return the quota 429s answered so far, per (key, model, "minute" | "day" | "tokens")."""
        return self.state.refusals()

    def clear_requests(self) -> None:
        """Forget the recorded requests only."""
        with self.state.lock:
            self.state.recorded.clear()

    # --- running --------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a background OS thread with its own gevent hub; return the base URL.

        The calling process is not monkey-patched (and stays so); a patched one works too,
        since the thread is a real one.
        """
        if self.url is not None:
            raise RuntimeError(f"fake upstream already running at {self.url}")
        ready, done = realthread.lock(), realthread.lock()
        ready.acquire()
        done.acquire()
        box: dict[str, Any] = {}

        def run() -> None:
            hub = gevent.get_hub()
            try:
                server = _make_server(self.app, host, port)
                server.start()
            except BaseException as exc:  # reported to the caller of start()
                box["error"] = exc
                ready.release()
                hub.destroy(destroy_loop=True)
                done.release()
                return
            stop_event = gevent.event.Event()
            box.update(loop=hub.loop, stop=stop_event, port=server.server_port)
            ready.release()
            try:
                stop_event.wait()
                server.stop(timeout=_STOP_GRACE_S)
            finally:
                hub.destroy(destroy_loop=True)
                done.release()

        realthread.start(run)
        if not ready.acquire(timeout=15):
            raise RuntimeError("fake upstream did not start within 15 s")
        if "error" in box:
            raise box["error"]
        self._loop, self._stop_event, self._done = box["loop"], box["stop"], done
        self.url = f"http://{_connectable(host)}:{box['port']}"
        return self.url

    def stop(self) -> None:
        """Stop the background server (hanging requests are cut) and wait for its thread."""
        if self._loop is None or self._stop_event is None:
            return
        self._loop.run_callback_threadsafe(self._stop_event.set)
        self._done.acquire(timeout=15)
        self._loop = self._stop_event = self._done = None
        self.url = None

    def serve(self, host: str = "127.0.0.1", port: int = 8787, *, announce: bool = True) -> None:
        """Serve in the calling thread until SIGTERM / Ctrl-C (signals: main thread only)."""
        server = _make_server(self.app, host, port)
        server.start()
        self.url = f"http://{_connectable(host)}:{server.server_port}"
        if announce:
            print(f"fake upstream listening on http://{host}:{server.server_port}", flush=True)
        stop = gevent.event.Event()
        handlers = []
        if threading.current_thread() is threading.main_thread():
            handlers = [gevent.signal_handler(sig, stop.set) for sig in (signal.SIGTERM, signal.SIGINT)]
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            for handler in handlers:
                handler.cancel()
            server.stop(timeout=1)
            self.url = None

    def __enter__(self) -> "FakeUpstream":
        if self.url is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FakeUpstream {self.url or 'stopped'} {config_dict(self.config)}>"


def serve_forever(host: str = "127.0.0.1", port: int = 8787, *,
                  keys: dict[str, dict[str, Any]] | None = None, announce: bool = True,
                  **config: Any) -> None:
    """Run a fake in this thread until SIGTERM / Ctrl-C (handy as a subprocess target).

    `config` takes FakeUpstream's keyword arguments; `keys` maps key → behaviour.
    """
    fake = FakeUpstream(**config)
    if keys:
        fake.set_keys(keys)
    fake.serve(host, port, announce=announce)


def _load_keys(path: str) -> dict[str, dict[str, Any]]:
    """Read a keys file: {key: behaviour} or a list of keys (all "ok")."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, list):
        return {str(key): {} for key in data}
    if isinstance(data, dict):
        return {str(key): (value or {}) for key, value in data.items()}
    raise ValueError(f"{path}: expected an object of key → behaviour or a list of keys")


def main(argv: list[str] | None = None) -> int:
    """Command line: run a standalone fake upstream."""
    parser = argparse.ArgumentParser(prog="python -m proxy.fake.server",
                                     description="Serve a fake Gemini API for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--chunk-delay-ms", type=float, default=0)
    parser.add_argument("--keys-file", help="JSON: {key: behaviour} or [key, …]")
    parser.add_argument("--strict-keys", action="store_true",
                        help="answer keys not in --keys-file as invalid")
    parser.add_argument("--no-record", action="store_true", help="do not keep a request log")
    parser.add_argument("--max-recorded", type=int, default=10_000)
    args = parser.parse_args(argv)
    try:
        keys = _load_keys(args.keys_file) if args.keys_file else None
        serve_forever(args.host, args.port, keys=keys, latency_ms=args.latency_ms,
                      chunks=args.chunks, chunk_delay_ms=args.chunk_delay_ms,
                      strict_keys=args.strict_keys, record=not args.no_record,
                      max_recorded=args.max_recorded)
    except (OSError, ValueError) as exc:
        print(f"fake upstream: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
