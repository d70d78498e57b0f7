"""`gemini-console`: watch and manage the key pool in the terminal, over the proxy's own database.

Polling follows dolphie: one worker thread reads the header and the visible pane, the main
thread applies the result, and only then is the next read scheduled, so a slow read never
piles up behind itself. Writes (key and user actions) go through the store functions the CLI
uses, each in its own short transaction, on their own worker.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.timer import Timer
from textual.widgets import ContentSwitcher, Footer
from textual.worker import Worker, WorkerState

from proxy.store.db import describe
from proxy.store.util import StoreError

from .actions import Actions
from .detail import request_view
from .header import StatusLine, TabLine
from .health import HealthStrip
from .modals import TextScreen
from .panes import PANES, KeysPane, Pane, RequestsPane
from .panes.base import key_label
from .probe import ProbeResult, probe_key
from .reads import Reader, check_db
from .table import KeyedTable

REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
DEFAULT_UPSTREAM = "https://generativelanguage.googleapis.com"


@dataclass
class Tick:
    """What one poll read: the header, and the data of the pane that asked (if it asked)."""

    pane_id: str
    generation: int
    header: dict[str, Any]
    data: Any
    asked: bool
    health: dict[str, Any] | None = None
    at: float = 0.0


class ConsoleApp(App[int]):
    """The console: five panes over one database, refreshed by a polling worker."""

    CSS_PATH = "console.tcss"
    TITLE = "gemini-console"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        *(Binding(str(i + 1), f"pane({i})", pane.TITLE, show=False) for i, pane in enumerate(PANES)),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="list the keys of this pane"),
        Binding("plus,equals_sign", "faster", "Refresh more often", key_display="+", show=False),
        Binding("minus", "slower", "Refresh less often", key_display="-", show=False),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, db_path: str | Path, *, refresh: float = 1.0, read_only: bool = False,
                 upstream: str = DEFAULT_UPSTREAM) -> None:
        super().__init__()
        self.db_path = db_path  # a SQLite path or a postgresql:// URL
        self.reader = Reader(self.db_path)
        self.actions = Actions(self.db_path)
        self.interval = refresh
        self.read_only = read_only
        self.upstream = upstream
        self.status: dict[str, Any] | None = None
        self._timer: Timer | None = None
        self._polling = False
        self._again = False

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Kept as attributes: queries would search whichever screen is on top (a dialog).
        self.tab_line = TabLine(id="tabs")
        self.status_line = StatusLine(id="status")
        self.health_strip = HealthStrip(id="health")
        self.switcher = ContentSwitcher(initial="requests", id="panes")
        self.panes: list[Pane] = [cls() for cls in PANES]
        yield self.tab_line
        yield self.status_line
        yield self.health_strip
        with self.switcher:
            yield from self.panes
        yield Footer()

    @property
    def pane(self) -> Pane:
        """Return the pane on screen."""
        return next((p for p in self.panes if p.id == self.switcher.current), self.panes[0])

    def on_mount(self) -> None:
        self.status_line.show(None)
        self.health_strip.show(None)
        self.refresh_tabs()
        self.pane.main_widget().focus()
        self.poll_now()

    def on_unmount(self) -> None:
        self.reader.close()
        self.actions.close()

    def refresh_tabs(self) -> None:
        """Redraw the tab line (current pane, refresh interval, paused, read-only)."""
        panes = self.panes
        requests = next((p for p in panes if isinstance(p, RequestsPane)), None)
        self.tab_line.show(
            [p.TITLE for p in panes], panes.index(self.pane), interval=self.interval,
            paused=bool(requests and requests.paused), read_only=self.read_only,
        )

    def action_pane(self, index: int) -> None:
        """Switch to the pane with this number (0-based) and read it at once."""
        panes = self.panes
        if not 0 <= index < len(panes):
            return
        self.switcher.current = panes[index].id
        self.refresh_tabs()
        panes[index].main_widget().focus()
        self.poll_now()

    # -- polling -------------------------------------------------------------------------------

    def poll_now(self) -> None:
        """Read now (or as soon as the read under way is done)."""
        if not self.is_running:
            return
        if self._polling:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._polling = True
        pane = self.pane
        self._tick(pane.id or "", pane.generation, pane.job())

    @work(thread=True, group="poll", exit_on_error=False)
    def _tick(self, pane_id: str, generation: int, job: Callable[[Reader], Any] | None) -> Tick:
        now = time.time()
        header = self.reader.header(now)
        health = self.reader.health(now)
        data = job(self.reader) if job is not None else None
        return Tick(pane_id, generation, header, data, job is not None, health, now)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != "poll" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if event.state == WorkerState.SUCCESS and isinstance(worker.result, Tick):
            self._apply(worker.result)
        else:
            self.status_line.show(None, error=f"cannot read {describe(self.db_path)}: "
                                              f"{_one_line(worker.error)}")
        self._polling = False
        if self._again:
            self._again = False
            self.poll_now()
        elif self.is_running:
            self._timer = self.set_timer(self.interval, self.poll_now)

    def _apply(self, tick: Tick) -> None:
        self.status = tick.header
        self.status_line.show(tick.header)
        self.health_strip.show(tick.health, tick.at)
        pane = next((p for p in self.panes if p.id == tick.pane_id), None)
        if pane is None or not tick.asked:
            return
        if pane.generation != tick.generation:
            self._again = True  # read for an older query: read again for the new one
            return
        if not pane.query(KeyedTable):  # a read that lands while the app closes: widgets gone
            return
        pane.show(tick.data)

    def action_faster(self) -> None:
        self._set_interval(-1)

    def action_slower(self) -> None:
        self._set_interval(+1)

    def _set_interval(self, step: int) -> None:
        here = min(range(len(REFRESH_STEPS)), key=lambda i: abs(REFRESH_STEPS[i] - self.interval))
        self.interval = REFRESH_STEPS[max(0, min(len(REFRESH_STEPS) - 1, here + step))]
        self.refresh_tabs()
        self.notify(f"refreshing every {self.interval:g} s", timeout=2)
        self.poll_now()

    # -- actions -------------------------------------------------------------------------------

    def refuse(self, what: str) -> bool:
        """Say no (and why) when started with --read-only; True when refused."""
        if self.read_only:
            self.notify(f"read-only: cannot {what} (the console was started with --read-only)",
                        title="read-only", severity="warning")
            return True
        return False

    def act(self, label: str, fn: Callable[..., Any], *args: Any,
            done: Callable[[Any], None] | None = None, forget_stats: bool = False) -> None:
        """Run store function `fn(db, *args)` on a worker, then say how it went and refresh."""
        if self.refuse(label):
            return
        self._act(label, fn, args, done, forget_stats)

    @work(thread=True, group="act", exit_on_error=False)
    def _act(self, label: str, fn: Callable[..., Any], args: tuple[Any, ...],
             done: Callable[[Any], None] | None, forget_stats: bool) -> None:
        try:
            result = self.actions.call(fn, *args)
        except Exception as exc:  # StoreError, sqlite3.Error, or a bug: say so, keep running
            self.call_from_thread(self._acted, label, None, None, _one_line(exc))
            return
        if forget_stats:
            self.reader.forget_stats()
        self.call_from_thread(self._acted, label, result, done, None)

    def _acted(self, label: str, result: Any, done: Callable[[Any], None] | None, error: str | None) -> None:
        if error:
            self.notify(f"{label}: {error}", title="failed", severity="error", timeout=8)
        else:
            self.notify(f"{label}: done", timeout=3)
            if done is not None:
                done(result)
        self.poll_now()

    def probe(self, key_id: int, name: str) -> None:
        """Ask the upstream's models list with one key, on a worker; the Keys pane shows the answer."""
        self.notify(f"probing {name}…", timeout=2)
        self._probe(key_id, name)

    @work(thread=True, group="probe", exit_on_error=False)
    def _probe(self, key_id: int, name: str) -> None:
        try:
            value = self.reader.key_value(key_id)
            if value is None:
                result = ProbeResult(None, "no such key any more", 0.0, time.time())
            else:
                result = probe_key(self.upstream, value)
            del value  # the only copy outside the database; do not keep it around
        except Exception as exc:  # a probe must never take the console down
            result = ProbeResult(None, _one_line(exc), 0.0, time.time())
        self.call_from_thread(self._probed, key_id, name, result)

    def _probed(self, key_id: int, name: str, result: ProbeResult) -> None:
        for pane in self.panes:
            if isinstance(pane, KeysPane):
                pane.probed(key_id, result)
        self.notify(f"{name}: {result.status or 'no answer'} · {result.summary}", title="probe",
                    severity="information" if result.ok else "error", timeout=8)

    # -- detail and help -----------------------------------------------------------------------

    def show_text(self, title: str, body: RenderableType) -> None:
        """Open a scrollable text view."""
        self.push_screen(TextScreen(title, body))

    def open_request(self, request_id: str, *, fallback: tuple[str, RenderableType] | None = None) -> None:
        """Read one request on a worker and open its detail view."""
        self._read_request(request_id, fallback)

    @work(thread=True, group="detail", exit_on_error=False)
    def _read_request(self, request_id: str, fallback: tuple[str, RenderableType] | None) -> None:
        try:
            row = self.reader.detail(request_id)
        except (StoreError, sqlite3.Error) as exc:
            self.call_from_thread(self.notify, _one_line(exc), severity="error")
            return
        self.call_from_thread(self._show_request, request_id, row, fallback)

    def _show_request(self, request_id: str, row: dict[str, Any] | None,
                      fallback: tuple[str, RenderableType] | None) -> None:
        if row is not None:
            self.show_text(f"Request {request_id}", request_view(row))
        elif fallback is not None:
            self.show_text(*fallback)
        else:
            self.notify(f"request {request_id} is no longer in the log (pruned)", severity="warning")

    def action_help(self) -> None:
        """List the keys of the current pane and the global ones."""
        pane = self.pane
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()

        def section(title: str) -> None:
            table.add_row(Text(title, style="bold underline"), "")

        section(f"{pane.TITLE} pane")
        for keys, what in pane.help_lines():
            table.add_row(keys, what)
        table.add_row("↑ ↓ pgup pgdn", "move")
        section("everywhere")
        table.add_row(" ".join(str(i + 1) for i in range(len(PANES))),
                      "switch pane: " + ", ".join(p.TITLE for p in PANES))
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and not binding.action.startswith("pane("):
                table.add_row(key_label(binding), binding.tooltip or binding.description)
        notes = [Text(line, style="dim") for line in pane.NOTES]
        if self.read_only:
            notes.append(Text("Started with --read-only: actions are refused.", style="magenta"))
        self.show_text(f"Help · {pane.TITLE}", Group(table, Text(""), *notes))


def _one_line(exc: BaseException | None) -> str:
    text = " ".join(str(exc or "unknown error").split())
    return text[:200]


def _refresh_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError("refresh must be between 0.1 and 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="gemini-console",
        description="Watch and manage gemini-api-proxy in the terminal: live requests, the event log, "
                    "Google keys, statistics and user keys, read from the database the proxy writes.",
        epilog="Keys: 1-5 switch panes, ? lists the keys of the current pane, / filters, enter opens "
               "details, + and - change the refresh interval, q quits.",
    )
    parser.add_argument("--db", metavar="PATH",
                        help="SQLite database the proxy writes (default: PROXY_DB from the environment "
                             "or .env, else data/keys.db)")
    parser.add_argument("--refresh", type=_refresh_seconds, default=1.0, metavar="SECONDS",
                        help="seconds between reads of the database (default: 1; + and - change it)")
    parser.add_argument("--read-only", action="store_true",
                        help="only watch: refuse key and user actions")
    parser.add_argument("--upstream", metavar="URL",
                        help="Gemini API base URL that probes call (default: UPSTREAM_URL from the "
                             f"environment or .env, else {DEFAULT_UPSTREAM})")
    parser.add_argument("--env-file", default=".env", metavar="PATH",
                        help="settings file to read if present (default: .env)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console; exit 2 with one line on stderr when the database cannot be used."""
    args = build_parser().parse_args(argv)
    from proxy.settings import load_or_exit

    settings = load_or_exit("gemini-console", {"PROXY_DB": args.db, "UPSTREAM_URL": args.upstream},
                            args.env_file)
    try:
        check_db(settings.db_path)
    except StoreError as exc:
        print(f"gemini-console: {exc}", file=sys.stderr)
        return 2
    app = ConsoleApp(settings.db_path, refresh=args.refresh, read_only=args.read_only,
                     upstream=settings.upstream_url)
    app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
