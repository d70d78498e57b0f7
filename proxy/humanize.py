"""Short human forms of counts and durations, for the CLI and the console."""
from __future__ import annotations


def span(seconds: float | None) -> str:
    """Return a compact length of time, to the nearest second: 45s, 2m10s, 3h05m, 2d04h."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds + 0.5))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def count(n: float | None) -> str:
    """Return a count in at most 5 characters: 999, 1.2k, 12k, 1.2M, 3.4G ("—" for none)."""
    if n is None:
        return "—"
    n = float(n)
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f}{unit}" if abs(value) < 10 else f"{value:.0f}{unit}"
    return f"{n:.0f}"
