"""The shared folder where each gunicorn worker keeps its Prometheus samples.

Kept apart from proxy.metrics: the master must set the folder up before prometheus_client
is imported anywhere, because the library picks its storage at import time.
"""
from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> str:
    """Give this server run a clean samples folder (stale files would add old counts)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, mode=0o700, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="gemini-proxy-metrics-")
        os.environ[MULTIPROC_ENV] = path
    return path


def worker_gone(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn's child_exit hook)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
