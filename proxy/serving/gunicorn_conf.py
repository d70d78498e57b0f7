"""gunicorn configuration for `gemini-proxy serve`: gevent workers sized from Settings."""
from __future__ import annotations

import ipaddress
import math
from typing import Any

from proxy.serving.handover import announce_ready
from proxy.settings import Settings, load_settings


def options(settings: Settings) -> dict[str, Any]:
    """Return gunicorn settings for `settings`."""
    return {
        "bind": [settings.bind],
        "workers": settings.workers,
        "worker_class": "proxy.serving.worker.ProxyWorker",
        "worker_connections": settings.worker_connections,
        # gevent workers answer the arbiter's heartbeat while requests wait on I/O, so
        # this only catches a wedged worker; long generations are not affected.
        "timeout": 60,
        "graceful_timeout": int(math.ceil(settings.graceful_timeout)),
        "keepalive": 75,  # outlive Traefik's idle keep-alive so it never reuses a closed socket
        "accesslog": None,  # the proxy logs one richer line per request itself
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "proc_name": "gemini-proxy",
        "control_socket_disable": True,  # no socket in $HOME: systemd's ProtectHome forbids it
        "post_worker_init": announce_ready,  # a reload: the old master hands over once we serve
        "worker_exit": worker_exit,
        "child_exit": child_exit,
        # whole networks (gunicorn reads CIDR), as the app believes them
        "forwarded_allow_ips": ",".join(str(ipaddress.ip_network(n, strict=False))
                                        for n in settings.trusted_proxies),
    }


def worker_exit(server: Any, worker: Any) -> None:
    """Flush every queued request row before the worker process ends."""
    from proxy.app import close_all

    close_all()


def child_exit(server: Any, worker: Any) -> None:
    """In the master, once a worker has exited: forget its live gauges, and close the request
    rows it left in flight (it was killed, or outlived the graceful timeout) as interrupted,
    now rather than at the next full restart."""
    from proxy.serving.multiproc import worker_gone
    from proxy.serving.server import close_interrupted

    worker_gone(worker.pid)
    settings = getattr(server.app, "settings", None)  # ProxyServer's; plain gunicorn: read them
    try:
        closed = close_interrupted(settings or load_settings(), worker.pid)  # (this host, pid)
    except Exception as exc:  # the master must outlive a busy or broken database
        server.log.warning("could not close the unfinished requests of worker %s: %s",
                           worker.pid, exc)
        return
    if closed:
        server.log.warning("worker %s left %d request(s) unfinished; marked interrupted",
                           worker.pid, closed)
