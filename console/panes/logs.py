"""Logs: the event log as a tail, oldest at the top, following new events unless scrolled back."""
from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.widgets import DataTable

from proxy.store.views import EVENT_LIMIT

from ..detail import event_view
from ..filters import EVENT_HINT
from ..fmt import clock, status_style
from ..table import Cell, Column
from .base import Job, Pane
from .requests import HOST_WIDTH, several_hosts

COLUMNS = [
    Column("time", "time", 8),
    Column("level", "level", 5),
    Column("status", "st", 3, right=True),
    Column("message", "message", 50),
    Column("request", "request", 8),
    Column("host", "host", 0, max_width=16),  # shown when events come from several hosts
]
LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red", "critical": "bold white on red"}


def event_cells(e: dict[str, Any]) -> tuple[Cell, ...]:
    """Return the table cells of one event."""
    level = (e["level"] or "info").lower()
    style = LEVEL_STYLES.get(level, "")
    status = e["status"]
    return (
        clock(e["ts"]),
        ({"warning": "warn", "critical": "crit"}.get(level, level), style),
        (str(status), status_style(status)) if status else "",
        (e["message"] or "", style if level in ("error", "critical") else ""),
        (e["request_id"] or "")[:8],
        e.get("host") or "—",
    )


class LogsPane(Pane):
    """Show the newest events; `/` filters by level, status and text; enter opens one."""

    TITLE = "Logs"
    TABLE_COLUMNS = COLUMNS
    FILTER_HINT = EVENT_HINT
    NOTES = [
        "Filter words: level:warning (that level and worse), status:429|5xx|400-499, host:NAME;",
        "other words search the message (or match a request id exactly).",
        "Events about a request name it (the request column); enter opens that request.",
        "The cursor on the last row follows new events; move up to stop following.",
    ]
    BINDINGS = [
        Binding("enter", "open", "Details (the request, when there is one)", key_display="enter", show=False),
        Binding("G", "follow", "Follow the tail", key_display="G / end", show=False),
    ]

    def __init__(self, *, id: str = "logs") -> None:
        super().__init__(id=id)
        self.entries: dict[int, dict[str, Any]] = {}
        self.last_id: int | None = None

    def on_mount(self) -> None:
        self.describe()

    def filter_changed(self) -> None:
        self.entries.clear()
        self.last_id = None

    def job(self) -> Job | None:
        flt, after = self.parsed.events(), self.last_id
        return lambda reader: (after, reader.events(flt, after_id=after))

    def show(self, data: tuple[int | None, list[dict[str, Any]]]) -> None:
        after, rows = data
        if after is None:
            self.entries.clear()
        for e in rows:
            self.entries[e["id"]] = e
        if len(self.entries) > EVENT_LIMIT:
            for old in sorted(self.entries)[: len(self.entries) - EVENT_LIMIT]:
                del self.entries[old]
        if self.entries:
            self.last_id = max(self.entries)
        elif after is None:
            self.last_id = 0  # nothing yet: from now on, read only what comes
        ordered = [self.entries[i] for i in sorted(self.entries)]
        self.table.set_width("host", HOST_WIDTH if several_hosts(ordered) else 0)
        self.table.sync([(str(e["id"]), event_cells(e)) for e in ordered], follow="bottom")
        self.describe()

    def describe(self) -> None:
        following = self.table.following
        self.set_info(
            (f" {len(self.entries)}", "bold"), " events",
            (" · following" if following else " · scrolled back (G follows)", "dim" if following else "yellow"),
        )

    def action_follow(self) -> None:
        if self.table.row_count:
            self.table.move_cursor(row=self.table.row_count - 1, animate=False)
        self.describe()

    def action_open(self) -> None:
        key = self.table.cursor_key
        if key:
            self._open(int(key))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self._open(int(event.row_key.value))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.describe()

    def _open(self, event_id: int) -> None:
        e = self.entries.get(event_id)
        if e is None:
            return
        if e.get("request_id"):
            self.host.open_request(e["request_id"], fallback=("Event", event_view(e)))
        else:
            self.host.show_text("Event", event_view(e))
