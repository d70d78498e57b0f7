"""Format numbers, times and durations into the few characters a column has."""
from __future__ import annotations

import time
from typing import Sequence

from proxy.humanize import count, span  # noqa: F401  (re-exported; shared with the CLI)

ELLIPSIS = "…"
BARS = "▁▂▃▄▅▆▇█"


def fit(text: object, width: int, *, right: bool = False) -> str:
    """Return `text` as exactly `width` characters: cut with an ellipsis, padded with spaces."""
    s = "" if text is None else str(text)
    s = s.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    if len(s) > width:
        s = s[: max(0, width - 1)] + ELLIPSIS if width > 0 else ""
    return s.rjust(width) if right else s.ljust(width)


def clock(ts: float | None) -> str:
    """Return local wall-clock time HH:MM:SS (or a dash)."""
    if not ts:
        return "—"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def stamp(ts: float | None) -> str:
    """Return a local date and time, for detail views."""
    if not ts:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"




def ago(ts: float | None, now: float) -> str:
    """Return how long ago `ts` was, in the largest whole unit (12s, 5m, 3h, 2d)."""
    if not ts:
        return "never"
    s = max(0, int(now - ts))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def ms(value: float | None) -> str:
    """Return milliseconds as 850ms, 1.25s, 12.3s or 2m05s."""
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f}ms"
    if value < 10_000:
        return f"{value / 1000:.2f}s"
    if value < 60_000:
        return f"{value / 1000:.1f}s"
    return span(value / 1000)




def pct(ratio: float | None) -> str:
    """Return a ratio as a whole percentage (or a dash when unknown)."""
    if ratio is None:
        return "—"
    return f"{ratio * 100:.0f}%"


def spark(values: Sequence[float], width: int) -> str:
    """Return a one-line bar chart of `values` squeezed or stretched into `width` characters.

    Bars start from zero (not from the smallest value), so a flat busy line is tall and a
    flat idle line is empty.
    """
    if width <= 0:
        return ""
    if not values:
        return " " * width
    n = len(values)
    cells = []
    for i in range(width):
        lo = i * n // width
        hi = max(lo + 1, (i + 1) * n // width)
        cells.append(max(values[lo:hi]))
    top = max(cells)
    if top <= 0:
        return " " * width
    return "".join(" " if v <= 0 else BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1)))] for v in cells)


def status_style(status: int | None) -> str:
    """Return the colour of a status code."""
    if status is None:
        return "bold cyan"
    if status < 400:
        return "green"
    if status == 429:
        return "bold magenta"
    if status < 500:
        return "yellow"
    return "bold red"
