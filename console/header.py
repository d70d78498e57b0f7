"""The two lines at the top: the pane tabs, and the proxy's health in a glance."""
from __future__ import annotations

import time
from typing import Any, Sequence

from rich.text import Text
from textual.widgets import Static

from .fmt import ago


class TabLine(Static):
    """Show `1 Requests  2 Logs …` with the current pane highlighted, and the refresh state."""

    _last: tuple[Any, ...] | None = None

    def on_resize(self) -> None:
        if self._last is not None:
            titles, current, interval, paused, read_only = self._last
            self.show(titles, current, interval=interval, paused=paused, read_only=read_only)

    def show(self, titles: Sequence[str], current: int, *, interval: float, paused: bool, read_only: bool) -> None:
        """Draw the tabs, with the refresh state pushed to the right edge."""
        self._last = (titles, current, interval, paused, read_only)
        line = Text(no_wrap=True, overflow="ellipsis")
        for i, title in enumerate(titles):
            style = "bold reverse" if i == current else ""
            line.append(f" {i + 1} ", style=style + " dim" if i != current else style)
            line.append(f"{title} ", style=style)
        flags = []
        if paused:
            flags.append(("⏸ paused", "bold yellow"))
        if read_only:
            flags.append(("read-only", "bold magenta"))
        flags.append((f"↻ {interval:g}s", "dim"))
        right = Text(no_wrap=True)
        for text, style in flags:
            right.append(" " + text, style=style)
        width = self.size.width or 80
        gap = width - line.cell_len - right.cell_len
        if gap >= 1:
            line.append(" " * gap)
            line.append_text(right)
        self.update(line)


# The key counts of the status line: (state, label, style when non-zero).
KEY_PARTS = (("usable", "ok", "bold green"), ("cooling", "cool", "bold yellow"),
             ("sick", "sick", "bold dark_orange"), ("dead", "dead", "bold red"), ("disabled", "off", "dim"))


def keys_text(keys: dict[str, int], *, drop_zeros: bool) -> Text:
    """Return ` │ keys 3 ok 1 cool 1 sick 1 dead`; with drop_zeros, zero counts after ok are left out."""
    out = Text(" │ keys", style="dim")
    for name, label, style in KEY_PARTS:
        n = keys.get(name, 0)
        if not n and name != "usable" and (drop_zeros or name == "disabled"):
            continue
        out.append(" ")
        out.append(str(n), style=style if n else "")
        out.append(f" {label}", style="dim" if name == "disabled" else "")
    return out


class StatusLine(Static):
    """Show up/down, version, request rate, in-flight count and usable/cooling/sick/dead keys."""

    _last: tuple[dict[str, Any] | None, str | None] = (None, None)

    def on_resize(self) -> None:
        self.show(*self._last[:1], error=self._last[1])

    def show(self, status: dict[str, Any] | None, *, error: str | None = None) -> None:
        """Draw the status, or the error that stopped the last read."""
        self._last = (status, error)
        line = Text(no_wrap=True, overflow="ellipsis")
        if error:
            line.append(" ⚠ ", style="bold red")
            line.append(error, style="red")
            self.update(line)
            return
        if status is None:
            self.update(Text(" reading the database…", style="dim"))
            return
        now = time.time()
        if status["up"]:
            stopping = status.get("state") == "stopping"
            line.append(*((" ● stopping", "bold yellow") if stopping else (" ● up", "bold green")))
            line.append(f" v{status['version'] or '?'}")
            if status["workers"] > 1:
                line.append(f" ×{status['workers']}", style="dim")
        else:
            line.append(" ● down", style="bold red")
            seen = status.get("last_seen")
            line.append(f" (seen {ago(seen, now)} ago)" if seen else " (never seen)", style="dim")
        line.append(" │ ", style="dim")
        line.append(f"{status['rate']:.1f}", style="bold")
        # Say the window: a rate is only honest with the span it averages over.
        line.append(f" req/s ({status.get('rate_window', 60):g}s)")
        if status["up"]:
            line.append(f" · {status['inflight']} in flight")
        keys = keys_text(status["keys"], drop_zeros=False)
        if line.cell_len + keys.cell_len > (self.size.width or 80):
            keys = keys_text(status["keys"], drop_zeros=True)  # narrow: only the counts that matter
        line.append_text(keys)
        self.update(line)
