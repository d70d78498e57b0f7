"""Which Google key owns a file or cached content: the one lookup every route uses.

Files and cached contents live in the project of the key that created them; a call that
names one must go out on that key, or Google answers 403.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any, Iterable

PIN_WAIT = 1.5  # at most this long for a fresh pool view (the database is slow or locked)
_PINNED = re.compile(r"(?:files|cachedContents)/[A-Za-z0-9_.-]+")
# Only these fields name a file or cache; prompt text that mentions "files/x" must not.
_PIN_FIELDS = re.compile(rb'"(?:fileUri|file_uri|cachedContent|cached_content|name)"\s*:\s*"([^"]+)"')


def named(path: str, body: bytes | None = None) -> list[str]:
    """Return the files and cached contents a native call names, in its path or its body."""
    names = _PINNED.findall(path)
    if body and (b"files/" in body or b"cachedContents/" in body):
        for value in _PIN_FIELDS.findall(body):
            names += _PINNED.findall(value.decode("utf-8", "replace"))
    return names


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


def remember(st: Any, path: str, status: int, key_id: int | None, body: bytes | None) -> None:
    """Pin a file or cached content an answer just created to the key that created it.

    The pin is committed before the client learns the name: then any worker that meets
    the name later finds it in its next pool view (creations are rare; uses are many).
    """
    if status >= 300 or key_id is None or not body:
        return
    if not (path.endswith("/cachedContents") or "upload" in path or path.endswith("/files")):
        return
    try:
        data = json.loads(body)
    except ValueError:
        return
    obj = data.get("file") if isinstance(data, dict) and "file" in data else data
    name = obj.get("name") if isinstance(obj, dict) else None
    if isinstance(name, str) and name.startswith(("files/", "cachedContents/")):
        st.pool.pins[name] = key_id
        st.writer.pin(name, key_id)
        st.writer.flush(timeout=PIN_WAIT)
