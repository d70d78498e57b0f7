"""Requests: the live tail of the request log, newest first, in-flight rows included."""
from __future__ import annotations

import time
from typing import Any

from textual.binding import Binding
from textual.widgets import DataTable

from proxy.store.views import IN_FLIGHT_WINDOW, LIST_LIMIT

from ..filters import REQUEST_HINT
from ..fmt import clock, count, ms, status_style
from ..table import Cell, Column
from .base import Job, Pane

COLUMNS = [
    Column("time", "time", 8),
    Column("user", "user", 8),
    Column("dialect", "api", 3),
    Column("model", "model", 14),
    Column("key", "key", 9),
    Column("status", "st", 3, right=True),
    Column("attempts", "at", 2, right=True),
    Column("ttfb", "ttfb", 5, right=True),
    Column("duration", "dur", 6, right=True),
    Column("tokens", "tok", 5, right=True),
    Column("rate", "tok/s", 5, right=True),
]


def request_cells(r: dict[str, Any], now: float) -> tuple[Cell, ...]:
    """Return the table cells of one request row."""
    status = r["status"]
    flying = status is None
    lost = flying and now - (r["started_at"] or 0) > IN_FLIGHT_WINDOW
    if flying:
        elapsed = (now - (r["started_at"] or now)) * 1000
        duration: Cell = ("?" if lost else ms(elapsed), "dim" if lost else "cyan")
        status_cell: Cell = ("?" if lost else "…", "dim" if lost else status_style(None))
        tokens: Cell = "—"
        rate: Cell = "—"
    else:
        duration = ms(r["duration_ms"])
        status_cell = (str(status), status_style(status))
        tin, tout = r["tokens_in"] or 0, r["tokens_out"] or 0
        tokens = count(tin + tout) if tin or tout else "—"
        seconds = (r["duration_ms"] or 0) / 1000
        rate = f"{tout / seconds:.0f}" if tout and seconds > 0 else "—"
    attempts = r["attempts"] or 0
    return (
        clock(r["started_at"]),
        r["user_label"] or "—",
        "oai" if r["dialect"] == "openai" else "gem",
        # Every model here is a Gemini one; the prefix only costs columns (details show it).
        (r["model"] or "—").removeprefix("gemini-"),
        r["key_masked"] or "—",
        status_cell,
        (str(attempts) if attempts else "—", "bold yellow" if attempts > 1 else ""),
        ms(r["ttfb_ms"]),
        duration,
        tokens,
        rate,
    )


class RequestsPane(Pane):
    """Show the newest requests; enter opens one, `/` filters, `p` pauses the tail."""

    TITLE = "Requests"
    TABLE_COLUMNS = COLUMNS
    FILTER_HINT = REQUEST_HINT
    NOTES = [
        "Filter words: model:NAME key:LABEL|…TAIL|ID user:LABEL status:429|4xx|500-599|ok|err|live;",
        "other words search path, model, user, key, error (the newest 100,000 rows).",
        "Several values: status:429,5xx. A cursor on the top row follows new requests.",
    ]
    BINDINGS = [
        Binding("enter", "open", "Details", key_display="enter", show=False,
                tooltip="details: every field, each attempt's key and outcome"),
        Binding("slash", "filter", "Filter", key_display="/", tooltip="filter (enter applies, esc cancels; empty clears)"),
        Binding("escape", "clear_filter", "Clear filter", key_display="esc", show=False),
        Binding("p", "pause", "Pause", tooltip="pause / resume the live tail"),
    ]

    def __init__(self, *, id: str = "requests") -> None:
        super().__init__(id=id)
        self.paused = False
        self.row_total = 0
        self.flying = 0

    def on_mount(self) -> None:
        self.describe()

    def job(self) -> Job | None:
        if self.paused:
            return None
        flt = self.parsed.requests()
        return lambda reader: (time.time(), reader.requests(flt))

    def show(self, data: tuple[float, list[dict[str, Any]]]) -> None:
        now, rows = data
        self.table.sync([(r["id"], request_cells(r, now)) for r in rows], follow="top")
        self.row_total = len(rows)
        self.flying = sum(1 for r in rows if r["status"] is None and now - (r["started_at"] or 0) <= IN_FLIGHT_WINDOW)
        self.describe()

    def describe(self) -> None:
        parts: list[tuple[str, str] | str] = [
            (f" {self.row_total}", "bold"), " newest" if self.row_total >= LIST_LIMIT else " shown",
            (f" · {self.flying} in flight", "cyan" if self.flying else "dim"),
        ]
        if self.paused:
            parts.append(("  ⏸ paused (p resumes)", "bold yellow"))
        parts += self.filter_parts()
        self.set_info(*parts)

    def action_pause(self) -> None:
        """Stop or restart following new requests."""
        self.paused = not self.paused
        self.describe()
        self.host.refresh_tabs()
        if not self.paused:
            self.changed()

    def action_open(self) -> None:
        key = self.table.cursor_key
        if key:
            self.host.open_request(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.host.open_request(event.row_key.value)
