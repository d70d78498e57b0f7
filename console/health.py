"""The pool-health strip above every pane: for each model in use, can the pool serve it now?

Like the header k9s and htop keep above every view, it answers the first question an operator
has, whatever pane is open: per model, how many keys could take a request now (n/N), when the
soonest resting key is back, and the 429s and 5xx clients got in the last minute; and how many
keys are sick or dead. One or two lines: it fits 80 columns and shows more models when wider.
"""
from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.widgets import Static

from .fmt import count, span

MAX_LINES = 2
SEPARATOR = " │ "


def model_segment(m: dict[str, Any], now: float) -> Text:
    """Return one model's part: `2.5-flash 3/4 keys, back 12s, 429×2 5xx×1`."""
    out = Text(no_wrap=True)
    out.append(m["model"].removeprefix("gemini-"), style="bold")
    usable, total = m["usable"], m["total"]
    style = "bold red" if usable == 0 else "yellow" if m["resting"] else "green"
    out.append(f" {usable}/{total}", style=style)
    out.append(" keys", style="dim")
    if m["back_at"]:
        out.append(", back ", style="dim")
        out.append(span(m["back_at"] - now), style="yellow")
    if m["got_429"]:
        out.append(f" 429×{count(m['got_429'])}", style="bold magenta")
    if m["got_5xx"]:
        out.append(f" 5xx×{count(m['got_5xx'])}", style="bold red")
    return out


def keys_segment(keys: dict[str, int]) -> Text:
    """Return the sick and dead counts, always shown (a zero is news too)."""
    out = Text(no_wrap=True)
    out.append(str(keys["sick"]), style="bold dark_orange" if keys["sick"] else "dim")
    out.append(" sick · ", style="dim")
    out.append(str(keys["dead"]), style="bold red" if keys["dead"] else "dim")
    out.append(" dead", style="dim")
    return out


def strip_text(health: dict[str, Any], width: int, now: float) -> Text:
    """Lay the strip out in at most MAX_LINES lines of `width` cells.

    Models come busiest first; the key counts sit at the right of the first line; models that
    do not fit become `+N more`.
    """
    width = max(width, 20)
    tail = keys_segment(health["keys"])
    segments = [model_segment(m, now) for m in health["models"]]
    if not segments:
        segments = [Text("no model traffic in the last hour", style="dim")]
    lines: list[list[Text]] = [[]]
    room = [width - 1 - tail.cell_len - 1]  # a leading space, and a gap before the counts
    left = list(segments)
    while left:
        seg, line = left[0], lines[-1]
        need = seg.cell_len + (len(SEPARATOR) if line else 0)
        if need <= room[-1] or (not line and len(lines) == MAX_LINES):
            line.append(seg)
            room[-1] -= need
            left.pop(0)
        elif len(lines) < MAX_LINES:
            lines.append([])
            room.append(width - 1)
        else:
            break
    if left:
        # Make room for "+N more" on the last line, dropping models from its end if need be.
        line = lines[-1]
        while line:
            more = Text(f"+{len(left)} more", style="dim")
            if more.cell_len + len(SEPARATOR) <= room[-1]:
                break
            dropped = line.pop()
            room[-1] += dropped.cell_len + (len(SEPARATOR) if line else 0)
            left.insert(0, dropped)
        line.append(Text(f"+{len(left)} more", style="dim"))
    out = Text(no_wrap=True, overflow="ellipsis")
    for i, line in enumerate(lines):
        if i:
            out.append("\n")
        row = Text(" ", no_wrap=True)
        for j, seg in enumerate(line):
            if j:
                row.append(SEPARATOR, style="dim")
            row.append_text(seg)
        if i == 0:
            row.append(" " * max(1, width - row.cell_len - tail.cell_len))
            row.append_text(tail)
        row.truncate(width, overflow="ellipsis")
        out.append_text(row)
    return out


class HealthStrip(Static):
    """Show the pool's health per model; fed by each poll (see views.pool_health)."""

    DEFAULT_CSS = """
    HealthStrip { height: auto; max-height: 2; background: $boost; }
    """

    _health: dict[str, Any] | None = None
    _at: float = 0.0

    def show(self, health: dict[str, Any] | None, now: float | None = None) -> None:
        """Draw `health` (None: not read yet)."""
        self._health, self._at = health, now or time.time()
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        if self._health is None:
            self.update(Text(" reading the pool…", style="dim"))
            return
        self.update(strip_text(self._health, self.size.width or 80, self._at))
