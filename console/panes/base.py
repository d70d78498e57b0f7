"""What every pane has: an info line, a body, an optional filter bar, and a read/show pair.

A pane never touches the database on the main thread. On each tick the app asks the current
pane for a `job` (a function of the Reader, built from the pane's state at that moment), runs
it in a worker thread, and hands the result back to `show` on the main thread. A pane bumps
`generation` whenever its query changes, so a result read for an older query is dropped.

Every pane has the `/` filter. A pane with a FILTER_HINT turns it into a store query (its
`job` reads `self.parsed`); the others filter the rows they already hold by the text their
cells show, here, so a new pane gets the filter without writing one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Input, Static

from ..filters import TEXT_HINT, ParsedFilter, parse
from ..reads import Reader
from ..table import Column, KeyedTable, text_matcher

if TYPE_CHECKING:
    from ..app import ConsoleApp

Job = Callable[[Reader], Any]

_KEY_NAMES = {
    "question_mark": "?", "slash": "/", "plus": "+", "minus": "-", "equals_sign": "=",
    "escape": "esc", "enter": "enter",
}


def key_label(binding: Binding) -> str:
    """Return how a binding's keys are written in the help: `P / t`, `?`, `esc`."""
    if binding.key_display:
        return binding.key_display
    return " / ".join(_KEY_NAMES.get(k.strip(), k.strip()) for k in binding.key.split(","))


class FilterInput(Input):
    """The one-line filter bar; esc closes it without changing the filter."""

    BINDINGS = [Binding("escape", "close", "Cancel", show=False)]

    def action_close(self) -> None:
        pane = next((a for a in self.ancestors if isinstance(a, Pane)), None)
        if pane is not None:
            pane.close_filter()


class Pane(Vertical):
    """Base of the five panes."""

    TITLE: ClassVar[str] = ""
    # Non-empty: the `/` filter is this syntax, applied by the pane's query; empty: the
    # rows on hand are filtered by the text they show.
    FILTER_HINT: ClassVar[str] = ""
    NOTES: ClassVar[list[str]] = []  # extra lines for the `?` help
    TABLE_COLUMNS: ClassVar[list[Column]] = []  # the pane's main table
    BINDINGS = [
        Binding("slash", "filter", "Filter", key_display="/",
                tooltip="filter (enter applies, esc cancels; empty clears)"),
        Binding("escape", "clear_filter", "Clear filter", key_display="esc", show=False),
    ]

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id, classes="pane")
        self.generation = 0
        self.filter_line = ""
        self.parsed: ParsedFilter = parse("")

    @property
    def host(self) -> "ConsoleApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", classes="info")
        yield from self.body()
        yield FilterInput(placeholder=self.FILTER_HINT or TEXT_HINT, classes="filter")

    def body(self) -> Iterable[Widget]:
        """Yield the pane's widgets: the table, with whatever goes above and below it."""
        yield from self.above_table()
        yield KeyedTable(self.TABLE_COLUMNS, id=f"{self.id}-table")
        yield from self.below_table()

    def above_table(self) -> Iterable[Widget]:
        """Yield widgets shown above the table (none by default)."""
        return ()

    def below_table(self) -> Iterable[Widget]:
        """Yield widgets shown below the table (none by default)."""
        return ()

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    def main_widget(self) -> Widget:
        """Return the widget that takes focus when the pane is shown: the table."""
        return self.table

    def job(self) -> Job | None:
        """Return what to read on this tick (None: nothing this time)."""
        return None

    def show(self, data: Any) -> None:
        """Display what `job` read (main thread)."""

    def changed(self) -> None:
        """Note that the query changed, and refresh now."""
        self.generation += 1
        self.host.poll_now()

    @property
    def filters_here(self) -> bool:
        """Whether `/` filters the rows on hand (True) or the pane's query (False)."""
        return not self.FILTER_HINT

    def set_info(self, *parts: tuple[str, str] | str) -> None:
        """Write the info line from plain or (text, style) parts, and the filter after them."""
        line = Text(no_wrap=True, overflow="ellipsis")
        for part in (*parts, *self.filter_parts()):
            text, style = (part, "") if isinstance(part, str) else part
            line.append(text, style=style)
        self.query_one(".info", Static).update(line)

    def filter_parts(self) -> list[tuple[str, str] | str]:
        """Return info-line parts describing the current filter (empty when none)."""
        if not self.filter_line:
            return []
        parts: list[tuple[str, str] | str] = [(" · filter: ", "dim"), (self.filter_line, "bold cyan")]
        if self.filters_here:
            table = self.table
            parts.append((f" ({table.row_count} of {table.total})", "dim"))
        elif self.parsed.problems:
            parts.append((" ⚠ " + "; ".join(self.parsed.problems), "yellow"))
        return parts

    # -- filter bar -----------------------------------------------------------------------------

    def action_filter(self) -> None:
        """Open the filter bar with the current filter in it."""
        bar = self.query_one(FilterInput)
        bar.value = self.filter_line
        bar.add_class("open")
        bar.focus()
        bar.cursor_position = len(bar.value)

    def close_filter(self) -> None:
        """Hide the filter bar and give focus back to the pane."""
        self.query_one(FilterInput).remove_class("open")
        self.main_widget().focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not isinstance(event.input, FilterInput):
            return
        event.stop()
        self.close_filter()
        self.apply_filter(event.value)

    def action_clear_filter(self) -> None:
        """Drop the filter."""
        if self.filter_line:
            self.apply_filter("")

    def apply_filter(self, line: str) -> None:
        """Use `line` as the filter from now on."""
        self.filter_line = " ".join(line.split())
        if self.filters_here:
            self.table.row_filter = text_matcher(self.filter_line)
            self.table.refilter()
        else:
            self.parsed = parse(self.filter_line)
        self.filter_changed()
        self.changed()

    def filter_changed(self) -> None:
        """React to a new filter before the next read (e.g. forget rows of the old one)."""

    def help_lines(self) -> list[tuple[str, str]]:
        """Return (keys, what they do) for this pane's bindings."""
        return [(key_label(b), b.tooltip or b.description) for b in self._bindings_list() if b.description]

    def _bindings_list(self) -> list[Binding]:
        out: list[Binding] = []
        for cls in reversed(type(self).__mro__):
            for b in cls.__dict__.get("BINDINGS", []):
                if isinstance(b, Binding) and b not in out:
                    out.append(b)
        return out


class Sorted:
    """Sorting by column for a pane: `s` takes the next column, `S` reverses.

    A pane sets the columns that sort descending first (SORT_DESCENDING), its starting
    sort, and `_resort()`, which redraws its rows in the new order.
    """

    TABLE_COLUMNS: ClassVar[list[Column]]
    SORT_DESCENDING: ClassVar[set[str]]
    sort_column: str
    descending: bool

    def action_sort(self) -> None:
        """Sort by the next column."""
        names = [c.key for c in self.TABLE_COLUMNS]
        self.sort_column = names[(names.index(self.sort_column) + 1) % len(names)]
        self.descending = self.sort_column in self.SORT_DESCENDING
        self._resort()

    def action_reverse(self) -> None:
        """Reverse the sort."""
        self.descending = not self.descending
        self._resort()

    def _resort(self) -> None:
        raise NotImplementedError
