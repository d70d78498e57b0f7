"""Which Google key owns a file or cached content: the one lookup every route uses.

Files and cached contents live in the project of the key that created them; a call that
names one must go out on that key, or Google answers 403.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

PIN_WAIT = 1.5  # at most this long for a fresh pool view (the database is slow or locked)


def owner(st: Any, names: Iterable[str]) -> int | None:
    """Return the key that owns one of `names` (files/…, cachedContents/…), or None: any key.

    A pin is committed before the name it pins reaches any client, so a pool view read
    after this request arrived knows every name this proxy handed out. A name missing
    from the current view costs one such read, not a guess at a delay; still missing
    then, it is not ours and goes out on any key.
    """
    names = [n for n in names if n]
    if not names:
        return None
    arrived = time.monotonic()
    st.pool.sync()
    found = _first(st.pool.pins, names)
    if found is None and st.refresher.await_view(arrived, PIN_WAIT):
        found = _first(st.pool.pins, names)
    return found


def _first(pins: dict[str, int], names: list[str]) -> int | None:
    return next((pins[name] for name in names if name in pins), None)
