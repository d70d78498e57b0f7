"""The shared folder where each gunicorn worker keeps its Prometheus samples.

Kept apart from proxy.metrics: the master must set the folder up before prometheus_client
is imported anywhere, because the library picks its storage at import time.
"""
from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OWN_ENV = "GEMINI_PROXY_OWN_METRICS_DIR"  # set to the folder a master made for itself


def prepare(inherited: bool = False) -> tuple[str, bool]:
    """Give this server run its samples folder; return (path, whether this run made it).

    An operator's PROMETHEUS_MULTIPROC_DIR is emptied at a start (stale files would add old
    counts), but not by a new master taking over: the old workers still write there. A folder
    the previous master made for itself stays its own (it removes it when it exits); this
    master makes another one.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.environ.get(OWN_ENV) != path:
        if not inherited:
            shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path, False
    path = tempfile.mkdtemp(prefix="gemini-proxy-metrics-")
    os.environ[MULTIPROC_ENV] = os.environ[OWN_ENV] = path
    return path, True


def worker_gone(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn's child_exit hook)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
