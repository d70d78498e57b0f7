"""A DataTable that is updated by key: changed cells, new rows and gone rows, never a reload."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from .fmt import fit

# A cell is plain text or (text, Rich style).
Cell = Union[str, tuple[str, str]]
RowData = tuple[str, tuple[Cell, ...]]


# Free-text columns: they take what the terminal has beyond 80 columns, unless a Column says;
# names stop growing where no name reaches.
FLEX_KEYS = frozenset({"model", "error", "message", "path", "models", "name"})
DEFAULT_MAX = {"model": 32, "name": 32}
MIN_FLEX = 6  # a flexible column squeezed below its width keeps at least this many characters


@dataclass(frozen=True)
class Column:
    """One column: key, header label, width in characters, right-aligned or not.

    `width` is the width at 80 columns. A flexible column (weight `flex`; None means 1 for
    the free-text keys in FLEX_KEYS, else 0) shares whatever the terminal has beyond that,
    up to `max_width`, and gives some back when there is less. A column of width 0 shows
    only when there is room for it.
    """

    key: str
    label: str
    width: int
    right: bool = False
    flex: int | None = None
    max_width: int | None = None

    @property
    def widest(self) -> int | None:
        """Return the most characters this column takes (None: no limit)."""
        return self.max_width if self.max_width is not None else DEFAULT_MAX.get(self.key)

    @property
    def weight(self) -> int:
        """Return this column's share of spare width (0: fixed)."""
        if self.flex is not None:
            return self.flex
        return 1 if self.key in FLEX_KEYS else 0


def _span(width: int) -> int:
    """Return the cells a column of `width` takes: its text and one separating space."""
    return width + 1 if width > 0 else 0


def layout(columns: Sequence[Column], available: int) -> list[int]:
    """Return each column's width so the row fills `available` cells as far as flex allows.

    Spare cells go one at a time to the flexible column with the smallest share for its
    weight; when short, the widest flexible columns give cells back, down to MIN_FLEX.
    """
    widths = [c.width for c in columns]
    spare = available - sum(_span(w) for w in widths)
    flexible = [i for i, c in enumerate(columns) if c.weight > 0]
    while spare > 0:
        room = [i for i in flexible
                if (columns[i].widest is None or widths[i] < columns[i].widest)
                and _span(widths[i] + 1) - _span(widths[i]) <= spare]
        if not room:
            break
        i = min(room, key=lambda j: ((widths[j] - columns[j].width) / columns[j].weight, j))
        spare -= _span(widths[i] + 1) - _span(widths[i])
        widths[i] += 1
    while spare < 0:
        room = [i for i in flexible if widths[i] > min(columns[i].width, MIN_FLEX)]
        if not room:
            break
        i = max(room, key=lambda j: (widths[j], -j))
        spare += _span(widths[i]) - _span(widths[i] - 1)
        widths[i] -= 1
    return widths


def cell_text(cell: "Cell") -> str:
    """Return the text of a cell, without its style."""
    return cell if isinstance(cell, str) else cell[0]


def text_matcher(line: str) -> Callable[[tuple["Cell", ...]], bool] | None:
    """Return a test for rows whose cells hold every word of `line` (any case); None for no words."""
    words = line.lower().split()
    if not words:
        return None

    def matches(cells: tuple[Cell, ...]) -> bool:
        text = " ".join(cell_text(c) for c in cells).lower()
        return all(w in text for w in words)

    return matches


class KeyedText(Text):
    """Text of a row's first cell, carrying the row key so DataTable.sort can order by it."""

    row_key: str = ""


class KeyedTable(DataTable):
    """A table whose rows are synced from (key, cells) lists.

    Columns have no padding; every cell is fitted to its column's width plus one separating
    space here, so the layout is predictable at 80 columns and cells never hold markup (an
    error message with brackets stays literal). Flexible columns widen with the terminal
    (see `layout`); a vertical scrollbar's column is always kept free, so rows do not
    reflow when one appears. `row_filter`, when set, hides rows whose cells do not pass.
    """

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; scrollbar-size-vertical: 1; }
    """
    # Row tables: home/end go to the first/last row (DataTable's own scroll sideways).
    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", cell_padding=0, zebra_stripes=False)
        self.specs = list(columns)
        self.widths = [c.width for c in self.specs]
        self.marks: dict[str, str] = {}
        self.row_filter: Callable[[tuple[Cell, ...]], bool] | None = None
        self.total = 0  # rows given to the last sync, before row_filter
        self._all: list[RowData] = []
        self._follow: str | None = None
        self._shown: dict[str, tuple[Cell, ...]] = {}

    def on_mount(self) -> None:
        for i, c in enumerate(self.specs):
            self.add_column(self._label(i), width=_span(self.widths[i]), key=c.key)

    def on_resize(self, event: events.Resize) -> None:
        self.fit_to(event.size.width)

    def fit_to(self, width: int) -> None:
        """Lay the columns out for a table `width` cells wide (scrollbar included)."""
        if width <= 0:
            return
        widths = layout(self.specs, width - self.styles.scrollbar_size_vertical)
        if widths == self.widths:
            return
        changed = [i for i, (a, b) in enumerate(zip(self.widths, widths)) if a != b]
        self.widths = widths
        for i in changed:
            spec = self.specs[i]
            column = self.columns.get(ColumnKey(spec.key))
            if column is None:
                continue
            column.width = _span(widths[i])
            column.label = self._label(i)
            for key, cells in self._shown.items():
                self.update_cell(key, spec.key, self._cell(i, cells[i], key if i == 0 else None))
        # The virtual width follows the new column widths on the next idle.
        self._require_update_dimensions = True
        self.refresh()

    def _label(self, index: int) -> Text:
        c = self.specs[index]
        width = self.widths[index]
        if width <= 0:
            return Text("")
        return Text(fit(c.label + self.marks.get(c.key, ""), width, right=c.right) + " ", style="bold",
                    no_wrap=True)

    def mark_column(self, key: str | None, mark: str = "") -> None:
        """Show `mark` (e.g. a sort arrow) after one column's label and none after the others."""
        self.marks = {key: mark} if key is not None and mark else {}
        for i, c in enumerate(self.specs):
            column = self.columns.get(ColumnKey(c.key))
            if column is not None:
                column.label = self._label(i)
        self.refresh()

    def set_width(self, key: str, width: int) -> None:
        """Give one column a new width at 80 columns (0 hides it) and lay the table out again."""
        for i, c in enumerate(self.specs):
            if c.key == key and c.width != width:
                self.specs[i] = Column(c.key, c.label, width, c.right, c.flex, c.max_width)
                self.fit_to(self.size.width)

    def relabel(self, key: str, label: str) -> None:
        """Change one column's header text."""
        for i, c in enumerate(self.specs):
            if c.key == key:
                self.specs[i] = Column(c.key, label, c.width, c.right, c.flex, c.max_width)
                column = self.columns.get(ColumnKey(key))
                if column is not None:
                    column.label = self._label(i)
        self.refresh()

    def _cell(self, index: int, cell: Cell, row_key: str | None = None) -> Text:
        text, style = (cell, "") if isinstance(cell, str) else cell
        spec = self.specs[index]
        width = self.widths[index]
        body = fit(text, width, right=spec.right) + " " if width > 0 else ""
        if row_key is not None:
            out = KeyedText(body, style=style, no_wrap=True, end="")
            out.row_key = row_key
            return out
        return Text(body, style=style, no_wrap=True, end="")

    @property
    def cursor_key(self) -> str | None:
        """Return the key of the row under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except Exception:
            return None

    def keys_in_order(self) -> list[str]:
        """Return the row keys top to bottom."""
        return [row.key.value for row in self.ordered_rows]

    @property
    def following(self) -> bool:
        """Whether the cursor sits where a live tail is followed (the top or bottom row)."""
        if self._follow == "top":
            return self.cursor_row <= 0
        if self._follow == "bottom":
            return self.cursor_row >= self.row_count - 1
        return True

    def refilter(self) -> bool:
        """Apply `row_filter` anew to the rows of the last sync."""
        return self.sync(self._all, follow=self._follow)

    def sync(self, rows: Sequence[RowData], *, follow: str | None = None) -> bool:
        """Make the table show `rows` in that order, touching only what changed; True if anything did.

        The cursor stays on the same row key as rows come and go. `follow="top"` keeps a cursor
        that sits on the first row there (a newest-first live tail), `follow="bottom"` the same
        for the last row (a log). Rows `row_filter` refuses are left out.
        """
        self._all, self._follow, self.total = list(rows), follow, len(rows)
        if self.row_filter is not None:
            rows = [row for row in rows if self.row_filter(row[1])]
        before_key = self.cursor_key
        at_top = self.cursor_row <= 0
        at_bottom = self.cursor_row >= self.row_count - 1
        wanted = {key for key, _ in rows}
        changed = False
        for gone in [k for k in self._shown if k not in wanted]:
            self.remove_row(gone)
            del self._shown[gone]
            changed = True
        for key, cells in rows:
            old = self._shown.get(key)
            if old is None:
                self.add_row(*(self._cell(i, c, key if i == 0 else None) for i, c in enumerate(cells)), key=key)
                changed = True
            elif old != cells:
                for i, (a, b) in enumerate(zip(old, cells)):
                    if a != b:
                        self.update_cell(key, self.specs[i].key, self._cell(i, b, key if i == 0 else None))
                changed = True
            self._shown[key] = cells
        order = [key for key, _ in rows]
        if self.keys_in_order() != order:  # new rows, or the same rows in a new order (a sort)
            rank = {key: i for i, key in enumerate(order)}
            self.sort(self.specs[0].key, key=lambda cell: rank[cell.row_key])
            changed = True
        if not self.row_count:
            return changed
        if follow == "top" and at_top:
            target = 0
        elif follow == "bottom" and at_bottom:
            target = self.row_count - 1
        elif before_key is not None and before_key in wanted:
            target = self.get_row_index(before_key)
        else:
            target = min(self.cursor_row, self.row_count - 1)
        if target != self.cursor_row:
            self.move_cursor(row=target, animate=False)
        return changed

    def reset(self) -> None:
        """Drop every row (when the query itself changed, e.g. a new filter)."""
        self._shown.clear()
        self._all, self.total = [], 0
        self.clear()
