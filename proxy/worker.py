"""A gevent worker whose graceful stop waits for requests, not for idle keep-alive sockets.

gunicorn's gevent worker waits, on SIGTERM, until every connection greenlet ends. An idle
keep-alive connection (Traefik keeps many) ends only at its keep-alive timeout, so a stop
would sit out the whole graceful timeout and the arbiter would then SIGKILL the worker,
possibly before the writer flushed. Here, once the requests in flight (streams included)
are done, idle connections are shut for reading, which ends them at once.
"""
from __future__ import annotations

import socket
import time
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker

from proxy.exchange import Counters

# Leave the writer time to flush before the arbiter's own graceful timeout kills us.
FLUSH_MARGIN = 3.0


class ProxyWorker(GeventWorker):
    """GeventWorker that closes idle keep-alive connections once requests have drained."""

    def init_process(self) -> None:
        self.connections: set[Any] = set()
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self.connections.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self.connections.discard(client)

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
