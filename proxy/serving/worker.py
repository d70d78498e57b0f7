"""The gevent worker: bounded request heads, JSON refusals, and a graceful stop that waits
for requests, not for idle keep-alive sockets.

gunicorn gives a connection its whole keep-alive timeout (75 s, to outlive Traefik's idle
connections) to send a request head, so a few hundred half-sent heads could hold every
connection slot of a worker. Here a connection waits up to the keep-alive timeout while
idle, but once it speaks (or right after it connects) its head must arrive within
HEAD_TIMEOUT_SECONDS, and a body the app left unread is drained within that time too.

gunicorn's own refusals (a malformed request line, a URL or headers over its limits) are
HTML; here they are Google's JSON error envelope, with an X-Request-Id like every answer.

gunicorn's gevent worker waits, on SIGTERM, until every connection greenlet ends. An idle
keep-alive connection (Traefik keeps many) ends only at its keep-alive timeout, so a stop
would sit out the whole graceful timeout and the arbiter would then SIGKILL the worker,
possibly before the writer flushed. Here, once the requests in flight (streams included)
are done, idle connections are shut for reading, which ends them at once.

SIGUSR2 from the master (a stop with STOP_UNREADY_SECONDS) only marks the worker as stopping:
/ready answers 503 while requests are still served, until the master's SIGTERM follows.

Per request, the worker does less than gunicorn's: its config is read from plain attributes
(gunicorn looks every setting up through __getattr__, some 25 times a request), answers
leave in one write (see response.py), and a connection waiting for its next request waits
in the recv that brings the request, so that a head which arrived whole is parsed without
arming a timer for it.
"""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from datetime import timedelta
from typing import Any

import gevent
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.body import LengthReader
from gunicorn.http.errors import (ConfigurationProblem, ExpectationFailed, ForbiddenProxyRequest,
                                  InvalidResponseHeader, InvalidResponseHeaderName,
                                  LimitRequestHeaders, LimitRequestLine, ParseException,
                                  UnsupportedTransferCoding)
from gunicorn.workers.ggevent import GeventWorker

from proxy.exchange import Counters, new_request_id
from proxy.serving.response import ProxyResponse
from proxy.settings import Settings, load_settings
from proxy.translate.errors import GOOGLE_STATUS, gemini_error_body

# Leave the writer time to flush before the arbiter's own graceful timeout kills us.
FLUSH_MARGIN = 3.0
# Seconds to keep reading (and discarding) after answering a request whose body failed, so
# that closing does not reset the connection before the client has read the answer.
LINGER = 1.0
DRAIN_STEP = 1 << 16
RECV_SIZE = 1 << 16  # one read brings a whole head and, usually, its body
HEAD_END = b"\r\n\r\n"
NO_TIMEOUT = contextlib.nullcontext()

# gunicorn's refusals: (exception classes, status, reason, what the client should do)
REFUSALS: list[tuple[tuple[type[BaseException], ...], int, str, str]] = [
    ((LimitRequestLine,), 414, "URI Too Long",
     "The request line is too long ({exc}); send long inputs in the request body."),
    ((LimitRequestHeaders,), 431, "Request Header Fields Too Large",
     "The request headers are too many or too large ({exc}); send fewer or shorter headers."),
    ((UnsupportedTransferCoding,), 501, "Not Implemented",
     "{exc}; send the body with a Content-Length or chunked."),
    ((ExpectationFailed,), 417, "Expectation Failed",
     "{exc}; only 'Expect: 100-continue' is understood."),
    ((ForbiddenProxyRequest,), 403, "Forbidden",
     "This peer may not send a PROXY protocol header ({exc})."),
    ((ParseException,), 400, "Bad Request",
     "The request is not valid HTTP/1.1 ({exc}); check the client, or what sits between it "
     "and the proxy."),
]
# gunicorn's parse errors that are the proxy's fault, not the client's
SERVER_FAULTS = (InvalidResponseHeader, InvalidResponseHeaderName, ConfigurationProblem)


def refusal(exc: BaseException) -> tuple[int, str, str]:
    """Return (status, reason, message) for an error gunicorn hands to handle_error."""
    if not isinstance(exc, SERVER_FAULTS):
        for kinds, status, reason, message in REFUSALS:
            if isinstance(exc, kinds):
                return status, reason, message.format(exc=str(exc)[:200] or type(exc).__name__)
    return (500, "Internal Server Error", "The proxy failed to handle this request; the "
            "traceback is in the proxy's log.")


def error_response(status: int, reason: str, message: str) -> bytes:
    """Return a whole HTTP/1.1 answer carrying Google's error envelope; the connection closes."""
    name = None if status in GOOGLE_STATUS else "INVALID_ARGUMENT" if status < 500 else "INTERNAL"
    body = json.dumps(gemini_error_body(status, message, name)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-Id: {new_request_id()}\r\n\r\n")
    return head.encode("latin-1") + body


def freeze(cfg: Config) -> None:
    """Turn `cfg`'s settings into plain attributes, read without gunicorn's __getattr__.

    A worker never changes its config (a reload starts new workers), and gunicorn reads
    settings on every request: each read is a __getattr__ call, a dict lookup and a get().
    Properties (is_ssl, proc_name, ...) still compute, from the plain attributes.
    """
    cfg.__dict__.update((name, setting.get()) for name, setting in cfg.settings.items())


class ProxyWorker(GeventWorker):
    """GeventWorker with bounded heads, JSON refusals and a drain-then-stop graceful exit."""

    def init_process(self) -> None:
        # ProxyServer carries the settings; plain `gunicorn proxy.wsgi:app` reads them as the
        # app does
        self.prepare(getattr(self.app, "settings", None) or load_settings())
        super().init_process()  # runs the worker until it stops

    def prepare(self, settings: Settings) -> None:
        """Take what the worker needs from `settings` and from its gunicorn config."""
        self.connections: set[Any] = set()
        self.head_timeout = settings.head_timeout
        self.drain_limit = settings.max_body_bytes
        freeze(self.cfg)
        self.idle_timeout = self.cfg.keepalive
        self.head_ready = False

    def timeout_ctx(self) -> Any:
        """Bound the time to receive a request head (gunicorn's default is the keep-alive).

        No timer when the head is already here whole: _await_next found it, in this
        greenlet, just before gunicorn's keep-alive loop asks (nothing runs in between).
        """
        if self.head_ready:
            self.head_ready = False
            return NO_TIMEOUT
        return gevent.Timeout(self.head_timeout, False)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        """Serve one request, then wait (idle, up to the keep-alive) for the next one."""
        try:
            self.serve(listener_name, req, sock, addr)
        except StopIteration:
            self._finish_body(req, sock)
            raise
        except (gevent.GreenletExit, SystemExit):
            pass  # as gunicorn's gevent worker
        if not self._finish_body(req, sock) or not self._await_next(req, sock):
            raise StopIteration()
        return True

    def serve(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        """Run the app for one request: gunicorn's AsyncWorker.handle_request, answering
        through ProxyResponse, and timing the request only when an access log wants it."""
        started = time.monotonic() if self.log.access_log_enabled else 0.0
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            resp, environ = wsgi.create(req, sock, addr, listener_name, self.cfg,
                                        response_class=ProxyResponse)
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            if self.is_already_handled(respiter):
                return
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                if started:
                    self.log.access(resp, req, environ,
                                    timedelta(seconds=time.monotonic() - started))
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                raise StopIteration()
        except StopIteration:
            raise
        except OSError:
            # the caller's (gunicorn's keep-alive loop) to handle, as in gunicorn
            raise
        except (Exception, SystemExit):
            if resp and resp.headers_sent:
                # an answer has begun: another one on the same socket would corrupt it
                self.log.exception("Error handling request")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    def _finish_body(self, req: Any, sock: Any) -> bool:
        """Discard what the app left of the request body; False (after lingering) if we cannot."""
        body = getattr(req, "body", None)
        if body is None:
            return True
        failed = getattr(body, "failed", False)
        reader = getattr(body, "reader", None)
        if (not failed and type(reader) is LengthReader and reader.length == 0
                and not body.buf.tell()):
            return True  # read to its end: nothing to drain
        if not failed:
            drained = 0
            with gevent.Timeout(self.head_timeout, False):
                try:
                    while drained <= self.drain_limit:
                        data = body.read(DRAIN_STEP)
                        if not data:
                            return True
                        drained += len(data)
                except Exception:  # a malformed rest of the body: the connection is done
                    pass
        self._linger(sock)
        return False

    def _linger(self, sock: Any) -> None:
        """Stop sending, then read and discard for a moment, so that closing with unread
        bytes does not reset the connection before the client has read our answer."""
        try:
            sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(LINGER, False):
                while sock.recv(DRAIN_STEP):
                    pass
        except OSError:
            pass

    def _await_next(self, req: Any, sock: Any) -> bool:
        """Wait for the client to speak again, up to the keep-alive; False if it stays quiet
        or closes. What it sends is handed to the parser, and whether that is a whole head
        tells timeout_ctx if the head needs a timer."""
        unreader = req.unreader
        pending = unreader.buf.getvalue()  # a pipelined request may already be here
        if not pending:
            sock.settimeout(self.idle_timeout)
            try:
                pending = sock.recv(RECV_SIZE)
            except TimeoutError:
                return False
            finally:
                sock.settimeout(None)
            if not pending:
                return False
            unreader.unread(pending)
        self.head_ready = HEAD_END in pending
        return True

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer gunicorn's own refusals (and failures before an answer) in JSON, not HTML."""
        if isinstance(exc, (gevent.GreenletExit, SystemExit)):
            return  # the worker is stopping and cut this connection: nobody to answer
        status, reason, message = refusal(exc)
        if status >= 500:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        else:
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            util.write_nonblock(client, error_response(status, reason, message))
        except Exception:
            self.log.debug("Failed to send error message.")

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self.connections.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self.connections.discard(client)

    def init_signals(self) -> None:
        super().init_signals()
        # The master is about to stop (STOP_UNREADY_SECONDS): /ready answers 503 from now on.
        signal.signal(signal.SIGUSR2, self.handle_unready)

    def handle_unready(self, sig: int, frame: Any) -> None:
        Counters.stopping = True

    def run(self) -> None:
        gevent.spawn(self._drain_on_quit)
        super().run()

    def _drain_on_quit(self) -> None:
        while self.alive:
            gevent.sleep(0.2)
        Counters.stopping = True  # the heartbeat tells the console this worker is draining
        deadline = time.monotonic() + max(1.0, self.cfg.graceful_timeout - FLUSH_MARGIN)
        while Counters.inflight > 0 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        for sock in list(self.connections):
            # Shut the OS socket, not gevent's wrapper: the wrapper would cancel the waiting
            # read with an error; the kernel's EOF lets the keep-alive loop end quietly.
            try:
                getattr(sock, "_sock", sock).shutdown(socket.SHUT_RD)
            except OSError:
                pass
