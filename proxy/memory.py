"""Give memory back to the OS after a burst of connections has passed."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Callable

# A burst of this many requests in flight at once leaves enough freed heap behind to be
# worth handing back; below it, trimming would be work for nothing.
BURST = 200


def _trimmer() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc.malloc_trim if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc: nothing to trim with
        return None


_malloc_trim = _trimmer()


def release() -> None:
    """Collect garbage and return freed heap pages to the OS (glibc's malloc_trim).

    Called when the worker has nothing in flight after a burst, so the short pause
    delays no request; without it, RSS stays at the burst's peak for the process's life.
    """
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
