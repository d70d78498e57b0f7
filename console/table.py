"""A DataTable that is updated by key: changed cells, new rows and gone rows, never a reload."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from .fmt import fit

# A cell is plain text or (text, Rich style).
Cell = Union[str, tuple[str, str]]
RowData = tuple[str, tuple[Cell, ...]]


@dataclass(frozen=True)
class Column:
    """One column: key, header label, width in characters, right-aligned or not."""

    key: str
    label: str
    width: int
    right: bool = False


class KeyedText(Text):
    """Text of a row's first cell, carrying the row key so DataTable.sort can order by it."""

    row_key: str = ""


class KeyedTable(DataTable):
    """A table whose rows are synced from (key, cells) lists.

    Columns have fixed widths and no padding; every cell is fitted to its width plus one
    separating space here, so the layout is predictable at 80 columns and cells never hold
    markup (an error message with brackets stays literal).
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
        self._shown: dict[str, tuple[Cell, ...]] = {}

    def on_mount(self) -> None:
        for c in self.specs:
            self.add_column(self._label(c, ""), width=c.width + 1, key=c.key)

    def _label(self, c: Column, mark: str) -> Text:
        return Text(fit(c.label + mark, c.width, right=c.right) + " ", style="bold", no_wrap=True)

    def mark_column(self, key: str | None, mark: str = "") -> None:
        """Show `mark` (e.g. a sort arrow) after one column's label and none after the others."""
        for c in self.specs:
            column = self.columns.get(ColumnKey(c.key))
            if column is not None:
                column.label = self._label(c, mark if c.key == key else "")
        self.refresh()

    def relabel(self, key: str, label: str) -> None:
        """Change one column's header text."""
        for i, c in enumerate(self.specs):
            if c.key == key:
                self.specs[i] = Column(c.key, label, c.width, c.right)
                column = self.columns.get(ColumnKey(key))
                if column is not None:
                    column.label = self._label(self.specs[i], "")
        self.refresh()

    def _cell(self, index: int, cell: Cell, row_key: str | None = None) -> Text:
        text, style = (cell, "") if isinstance(cell, str) else cell
        spec = self.specs[index]
        body = fit(text, spec.width, right=spec.right) + " "
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

    def sync(self, rows: Sequence[RowData], *, follow: str | None = None) -> bool:
        """Make the table show `rows` in that order, touching only what changed; True if anything did.

        The cursor stays on the same row key as rows come and go. `follow="top"` keeps a cursor
        that sits on the first row there (a newest-first live tail), `follow="bottom"` the same
        for the last row (a log).
        """
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
        if changed and self.keys_in_order() != order:
            rank = {key: i for i, key in enumerate(order)}
            self.sort(self.specs[0].key, key=lambda cell: rank[cell.row_key])
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
        self.clear()
