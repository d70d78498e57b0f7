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


class StatusLine(Static):
    """Show up/down, version, request rate, in-flight count and usable/cooling/dead keys."""

    def show(self, status: dict[str, Any] | None, *, error: str | None = None) -> None:
        """Draw the status, or the error that stopped the last read."""
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
            line.append(*((" ● stopping", "bold yellow") if status.get("state") == "stopping" else (" ● up", "bold green")))
            line.append(f" v{status['version'] or '?'}")
            if status["workers"] > 1:
                line.append(f" ×{status['workers']}", style="dim")
        else:
            line.append(" ● down", style="bold red")
            seen = status.get("last_seen")
            line.append(f" (seen {ago(seen, now)} ago)" if seen else " (never seen)", style="dim")
        line.append(" │ ", style="dim")
        line.append(f"{status['rate']:.1f}", style="bold")
        line.append(" req/s")
        if status["up"]:
            line.append(f" · {status['inflight']} in flight")
        keys = status["keys"]
        line.append(" │ keys ", style="dim")
        line.append(str(keys["usable"]), style="bold green")
        line.append(" ok ")
        line.append(str(keys["cooling"]), style="bold yellow" if keys["cooling"] else "")
        line.append(" cool ")
        line.append(str(keys["dead"]), style="bold red" if keys["dead"] else "")
        line.append(" dead")
        if keys["disabled"]:
            line.append(f" {keys['disabled']} off", style="dim")
        self.update(line)
