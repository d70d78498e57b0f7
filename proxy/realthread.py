"""Start real OS threads and sleep in them, even inside a gevent-patched process.

gunicorn's gevent worker monkey-patches `threading` and `time`, which would turn a
"background thread" into a greenlet on the hub. sqlite3 calls block the whole hub, so
the store's writer and the pool's refresher must run on genuine OS threads.
"""
from __future__ import annotations

import _thread
from typing import Any, Callable

try:  # gevent is a dependency, but keep the store importable without it
    from gevent import monkey as _monkey

    def _original(module: str, name: str) -> Any:
        return _monkey.get_original(module, name)
except ImportError:  # pragma: no cover
    import importlib

    def _original(module: str, name: str) -> Any:
        return getattr(importlib.import_module(module), name)


real_sleep: Callable[[float], None] = _original("time", "sleep")
# select.poll itself: a poll with no timeout asks the kernel directly, without a trip
# through the hub (gevent's poll registers watchers and switches greenlets to answer it).
real_poll: Callable[[], Any] = _original("select", "poll")
_start_new_thread = _original("_thread", "start_new_thread")
_allocate_lock = _original("_thread", "allocate_lock")


def start(target: Callable[[], None], name: str | None = None) -> None:
    """Run `target` on a new OS thread (daemon: it never keeps the process alive).

    `name` (15 characters at most) becomes the OS thread's name, which `top -H`, `ps -L`
    and /proc/PID/task/TID/comm show: the writer and the pool's refresher can be told apart.
    """
    if name is None:
        _start_new_thread(target, ())
    else:
        _start_new_thread(_named, (target, name))


def _named(target: Callable[[], None], name: str) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME (Linux)
    except (OSError, AttributeError):  # not Linux: the thread just keeps its name
        pass
    target()


def lock() -> "_thread.LockType":
    """Return an OS-level lock, usable between a real thread and the hub."""
    return _allocate_lock()


def hub_loop() -> Any:
    """Return the gevent hub's loop when this process runs under gevent's patches (a gunicorn
    worker), else None (tests, tools: one plain process)."""
    try:
        from gevent import get_hub, monkey
    except ImportError:  # pragma: no cover
        return None
    if not monkey.is_module_patched("threading"):
        return None
    return get_hub().loop
