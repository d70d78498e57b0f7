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


def hosts_text(hosts: list[dict[str, Any]], *, short: bool) -> Text:
    """Return ` │ web1 ×2 · web2 down`: each host, its live workers, whether it is up.

    With `short`, only the counts: ` │ hosts 1 up 1 down` (a narrow terminal)."""
    out = Text(" │", style="dim")
    if short:
        up = sum(1 for h in hosts if h["up"])
        out.append(" hosts", style="dim")
        out.append(f" {up}", style="bold green" if up else "")
        out.append(" up")
        if len(hosts) - up:
            out.append(f" {len(hosts) - up}", style="bold red")
            out.append(" down")
        return out
    for i, h in enumerate(hosts):
        out.append(" · " if i else " ", style="dim")
        out.append(h["host"] or "?", style="bold")
        if not h["up"]:
            out.append(" down", style="bold red")
        elif h["stopping"] == h["workers"]:
            out.append(" stopping", style="bold yellow")
        else:
            out.append(f" ×{h['workers']}", style="green")
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
        hosts = status.get("hosts") or []
        several = len(hosts) > 1
        if status["up"]:
            stopping = status.get("state") == "stopping"
            line.append(*((" ● stopping", "bold yellow") if stopping else (" ● up", "bold green")))
            line.append(f" v{status['version'] or '?'}")
            if status["workers"] > 1 and not several:  # several hosts: each says its own
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
        width = self.size.width or 80
        keys = keys_text(status["keys"], drop_zeros=False)
        if several:
            # Several hosts share the database: name each, or count them when that does not fit.
            named = hosts_text(hosts, short=False)
            fits = line.cell_len + named.cell_len + keys_text(status["keys"], drop_zeros=True).cell_len <= width
            line.append_text(named if fits else hosts_text(hosts, short=True))
        if line.cell_len + keys.cell_len > width:
            keys = keys_text(status["keys"], drop_zeros=True)  # narrow: only the counts that matter
        line.append_text(keys)
        self.update(line)
