"""Requests: the live tail of the request log, in-flight rows pinned on top, then newest first."""
from __future__ import annotations

import time
from typing import Any, Callable

from textual.binding import Binding
from textual.widgets import DataTable

from proxy.store.views import LIST_LIMIT

from ..filters import REQUEST_HINT
from ..fmt import clock, count, ms, status_style
from ..table import Cell, Column
from .base import Job, Pane, Sorted

COLUMNS = [
    Column("time", "time", 8),
    Column("user", "user", 8),
    Column("dialect", "api", 3),
    # Model names run to 25 characters without their prefix; more width helps nobody.
    Column("model", "model", 14, max_width=26),
    Column("key", "key", 9),
    Column("status", "st", 3, right=True),
    Column("attempts", "at", 2, right=True),
    Column("ttfb", "ttfb", 5, right=True),
    Column("duration", "dur", 6, right=True),
    Column("tokens", "tok", 5, right=True),
    Column("rate", "tok/s", 5, right=True),
    # No room at 80 columns; wider terminals show the error, or the path of a good answer.
    Column("detail", "error / path", 0, flex=4),
    # Hidden (width 0) until the rows come from more than one host; then HOST_WIDTH.
    Column("host", "host", 0, max_width=16),
]

Row = dict[str, Any]
HOST_WIDTH = 6


def several_hosts(rows: list[Row]) -> bool:
    """Whether `rows` (requests or events) came from more than one host."""
    return len({r.get("host") for r in rows if r.get("host")}) > 1


def _tokens(r: Row) -> int:
    return (r["tokens_in"] or 0) + (r["tokens_out"] or 0)


def _rate(r: Row) -> float:
    seconds = (r["duration_ms"] or 0) / 1000
    return (r["tokens_out"] or 0) / seconds if r["status"] is not None and seconds > 0 else 0.0


def short_path(r: Row) -> str:
    """Return the path with the model (shown beside it) elided: `/v1beta/…:streamGenerateContent`."""
    path, model = r["path"] or "", r["model"]
    return path.replace(f"models/{model}", "…", 1) if model else path


def _detail(r: Row) -> str:
    """Return what went wrong (the message says more than the class), else the path."""
    return r["error_message"] or r["error_class"] or short_path(r)


# Sort keys per column; None sorts first (an ascending sort puts unknowns on top).
SORTS: dict[str, Callable[[Row], Any]] = {
    "time": lambda r: r["seq"],
    "host": lambda r: r.get("host") or "",
    "user": lambda r: (r["user_label"] or "").lower(),
    "dialect": lambda r: r["dialect"] or "",
    "model": lambda r: r["model"] or "",
    "key": lambda r: r["key_masked"] or "",
    "status": lambda r: r["status"] or 0,
    "attempts": lambda r: r["attempts"] or 0,
    "ttfb": lambda r: r["ttfb_ms"] or 0,
    "duration": lambda r: r["duration_ms"] or 0,
    "tokens": _tokens,
    "rate": _rate,
    "detail": _detail,
}
# Counts, codes and times read biggest first; names in order.
DESCENDING = {"time", "status", "attempts", "ttfb", "duration", "tokens", "rate"}


def flying(r: Row) -> bool:
    """Whether a row is in flight: no status yet, and its worker still beats."""
    return r["status"] is None and not r.get("lost")


def request_cells(r: Row, now: float) -> tuple[Cell, ...]:
    """Return the table cells of one request row."""
    status = r["status"]
    detail: Cell
    if status is None and r.get("lost"):
        # Its worker is gone: no answer will come, and no clock should tick for it.
        duration: Cell = ("lost", "yellow")
        status_cell: Cell = ("?", "dim")
        tokens: Cell = "—"
        rate: Cell = "—"
        detail = ("lost: its worker stopped before it finished", "yellow")
    elif status is None:
        duration = (ms((now - (r["started_at"] or now)) * 1000), "cyan")
        status_cell = ("…", status_style(None))
        tokens = "—"
        rate = "—"
        detail = (short_path(r), "dim")
    else:
        duration = ms(r["duration_ms"])
        status_cell = (str(status), status_style(status))
        tokens = count(_tokens(r)) if _tokens(r) else "—"
        rate = f"{_rate(r):.0f}" if _rate(r) else "—"
        detail = (_detail(r), "red" if r["error_class"] or r["error_message"] else "dim")
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
        detail,
        r.get("host") or "—",
    )


def ordered(rows: list[Row], column: str, descending: bool) -> list[Row]:
    """Return rows sorted by `column`, with the requests in flight pinned on top (newest first)."""
    live = sorted((r for r in rows if flying(r)), key=lambda r: r["seq"], reverse=True)
    rest = sorted((r for r in rows if not flying(r)), key=SORTS[column], reverse=descending)
    return live + rest


class RequestsPane(Sorted, Pane):
    """Show the newest requests; enter opens one, `/` filters, `s` sorts, `p` pauses the tail."""

    TITLE = "Requests"
    TABLE_COLUMNS = COLUMNS
    SORT_DESCENDING = DESCENDING
    FILTER_HINT = REQUEST_HINT
    NOTES = [
        "Filter words: model:NAME (as shown, e.g. 2.5-flash) key:LABEL|…TAIL|ID user:LABEL host:NAME",
        "status:429|4xx|500-599|ok|err|live; other words search path, model, user, key, error",
        "(the newest 100,000 rows). Several values: status:429,5xx.",
        "Requests in flight stay on top; lost: its worker stopped (killed) before it answered.",
        "The host column shows when the rows come from more than one host (a shared database).",
        "A cursor on the top row follows new requests; G goes back there.",
    ]
    BINDINGS = [
        Binding("enter", "open", "Details", key_display="enter", show=False,
                tooltip="details: every field, each attempt's key and outcome"),
        Binding("s", "sort", "Sort", tooltip="sort by the next column (requests in flight stay on top)"),
        Binding("S", "reverse", "Reverse the sort", key_display="S", show=False),
        Binding("G", "follow", "Follow new requests", key_display="G", show=False),
        Binding("p", "pause", "Pause", tooltip="pause / resume the live tail"),
    ]

    def __init__(self, *, id: str = "requests") -> None:
        super().__init__(id=id)
        self.paused = False
        self.row_total = 0
        self.flying = 0
        self.sort_column = "time"
        self.descending = True
        self.now = time.time()
        self.rows: list[Row] = []

    def on_mount(self) -> None:
        self.describe()

    def job(self) -> Job | None:
        if self.paused:
            return None
        flt = self.parsed.requests()
        return lambda reader: (time.time(), reader.requests(flt))

    def show(self, data: tuple[float, list[Row]]) -> None:
        self.now, self.rows = data
        rows = ordered(self.rows, self.sort_column, self.descending)
        self.table.set_width("host", HOST_WIDTH if several_hosts(rows) else 0)
        self.table.sync([(r["id"], request_cells(r, self.now)) for r in rows], follow="top")
        self.row_total = len(rows)
        self.flying = sum(1 for r in rows if flying(r))
        self.describe()

    def describe(self) -> None:
        parts: list[tuple[str, str] | str] = [
            (f" {self.row_total}", "bold"), " newest" if self.row_total >= LIST_LIMIT else " shown",
            (f" · {self.flying} in flight", "cyan" if self.flying else "dim"),
        ]
        if self.sort_column != "time" or not self.descending:
            parts.append((f" · sort: {self.sort_column} {'▼' if self.descending else '▲'}", "dim"))
        if self.paused:
            parts.append(("  ⏸ paused (p resumes)", "bold yellow"))
        elif not self.table.following:
            parts.append((" · scrolled back (G follows)", "yellow"))
        self.set_info(*parts)

    def action_pause(self) -> None:
        """Stop or restart following new requests."""
        self.paused = not self.paused
        self.describe()
        self.host.refresh_tabs()
        if not self.paused:
            self.changed()

    def action_follow(self) -> None:
        """Go back to the top row, and follow new requests from there."""
        if self.table.row_count:
            self.table.move_cursor(row=0, animate=False)
        self.describe()

    def _resort(self) -> None:
        default = self.sort_column == "time" and self.descending
        self.table.mark_column(None if default else self.sort_column, "▼" if self.descending else "▲")
        self.show((self.now, self.rows))

    def action_open(self) -> None:
        key = self.table.cursor_key
        if key:
            self.host.open_request(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.host.open_request(event.row_key.value)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.describe()
