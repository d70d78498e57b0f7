"""Keys: every Google key with its health, usage and cooldowns; add, enable, disable, remove, probe, reset."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable, Static

from proxy.store import add_key, disable_key, enable_key, remove_key, reset_key
from proxy.store.limits import forget_learned, limit_said

from ..actions import set_limits
from ..fmt import ago, count, pct, span
from ..modals import AddKeyScreen, CapChange, CapScreen, ConfirmScreen
from ..probe import ProbeResult
from ..reads import KeyLimits
from ..table import Cell, Column, text_matcher
from .base import Job, Pane, Sorted

# Rows shown at once: a pool of 10,000 keys is sorted and filtered whole, then shown a page
# at a time, so the table (and each refresh of it) stays the size of a screenful or two.
PAGE = 200

COLUMNS = [
    Column("key", "key", 9),
    Column("label", "label", 8),
    Column("state", "state", 8),
    Column("ok", "ok%", 4, right=True),
    Column("tries", "tries", 6, right=True),
    Column("errors", "err5/60", 7, right=True),
    Column("cap", "rpm", 5, right=True),
    Column("day", "today", 7, right=True),
    Column("cooling", "cooling", 9, flex=1, max_width=18),
    Column("error", "last error", 40),
    # Shown from about 90 columns: at 80 the health and error columns need the room.
    Column("used", "used", 0, right=True, flex=1, max_width=4),
    Column("tokens", "tok", 0, right=True, flex=1, max_width=5),
]
STATE_STYLES = {"usable": "green", "cooling": "yellow", "sick": "bold dark_orange", "dead": "bold red",
                "disabled": "dim"}
STATE_ORDER = {"usable": 0, "cooling": 1, "sick": 2, "dead": 3, "disabled": 4}
FAILURE_NAMES = {"rate_limited": "rate-limited", "key_dead": "dead", "upstream_error": "upstream",
                 "client_error": "client", "rejected": "refused"}


def _failed(k: dict[str, Any], window: str) -> int:
    return sum(k[f"failed_{window}"].values())


def _cap_use(k: dict[str, Any]) -> float:
    return (k["rpm_used"] or 0) / k["rpm_limit"] if k.get("rpm_limit") else -1


def _day_use(k: dict[str, Any]) -> float:
    if k.get("no_quota") and not k.get("day_limit"):
        return 2.0
    return (k["day_used"] or 0) / k["day_limit"] if k.get("day_limit") else -1


SORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "key": lambda k: k["id"],
    "label": lambda k: (k["label"] or "").lower(),
    "state": lambda k: STATE_ORDER.get(k["state"], 9),
    "ok": lambda k: -1 if k["success_rate"] is None else k["success_rate"],
    "tries": lambda k: k["attempts_today"],
    "errors": lambda k: (_failed(k, "5m"), _failed(k, "60m")),
    "cap": _cap_use,
    "day": _day_use,
    "cooling": lambda k: max((c["cool_until"] for c in k["cooldowns"]), default=0),
    "error": lambda k: k["last_error"] or "",
    "used": lambda k: k["last_used_at"] or 0,
    "tokens": lambda k: k["tokens_today"],
}
# Counts and times read best biggest/latest first; names and states in order.
DESCENDING = {"ok", "tries", "errors", "cap", "day", "cooling", "used", "tokens"}


def cooling_text(cooldowns: list[dict[str, Any]], now: float) -> str:
    """Return the soonest-ending cooldown as `model 2m10s`, with `+N` for the others."""
    if not cooldowns:
        return ""
    first = min(cooldowns, key=lambda c: c["cool_until"])
    more = f" +{len(cooldowns) - 1}" if len(cooldowns) > 1 else ""
    model = (first["model"] or "all").removeprefix("gemini-")
    return f"{model} {span(first['cool_until'] - now)}{more}"


def failures_text(failed: dict[str, int]) -> str:
    """Return failed tries by class, most first: `upstream 12, rate-limited 3` (or `none`)."""
    if not failed:
        return "none"
    return ", ".join(f"{FAILURE_NAMES.get(name, name)} {count(n)}"
                     for name, n in sorted(failed.items(), key=lambda item: -item[1]))


def key_cells(k: dict[str, Any], now: float) -> tuple[Cell, ...]:
    """Return the table cells of one key."""
    rate = k["success_rate"]
    rate_style = "" if rate is None else "green" if rate >= 0.9 else "yellow" if rate >= 0.5 else "red"
    error = k["invalid_reason"] if k["state"] == "dead" else k["last_error"]
    short, long = _failed(k, "5m"), _failed(k, "60m")
    cap = k.get("rpm_limit", k["rpm_cap"])
    return (
        k["masked"],
        k["label"] or "",
        (k["state"], STATE_STYLES.get(k["state"], "")),
        (pct(rate), rate_style),
        count(k["attempts_today"]),
        (f"{count(short)}/{count(long)}", "bold red" if short else "red" if long else "dim"),
        (f"{k['rpm_used'] or 0}/{cap}" if cap else "—",
         "dim" if not cap else "yellow" if (k["rpm_used"] or 0) >= cap else ""),
        day_cell(k),
        (cooling_text(k["cooldowns"], now), "yellow"),
        (error or "", "red" if k["state"] in ("dead", "sick") else "dim"),
        ago(k["last_used_at"], now) if k["last_used_at"] else "—",
        count(k["tokens_today"]),
    )


def day_cell(k: dict[str, Any]) -> Cell:
    """Return requests today against the daily limit closest to being spent, or "no quota"."""
    limit = k.get("day_limit")
    if limit:
        used = k["day_used"] or 0
        return (f"{count(used)}/{count(limit)}", "bold red" if used >= limit else
                "yellow" if used >= limit * 0.9 else "")
    if k.get("no_quota"):
        return ("no quota", "red")
    return ("—", "dim")


def quota_parts(quotas: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return one (text, style) per model: `2.5-flash day 12/250 min 3/10 tok 1.2k/250k`.

    Limits come from Google's 429s (learned) or the operator; "no quota" is a model the
    key's tier has none for today.
    """
    out = []
    for q in quotas:
        model = q["model"].removeprefix("gemini-")
        if q["no_quota"]:
            out.append((f"{model} no quota", "red"))
            continue
        text = f"{model} day {_of(q['today'], q['rpd'])} min {_of(q['minute'], q['rpm'])}"
        if q["tpm"] or q["tokens_minute"]:
            text += f" tok {_of(q['tokens_minute'], q['tpm'])}"
        spent = (q["rpd"] and q["today"] >= q["rpd"]) or (q["rpm"] and q["minute"] >= q["rpm"])
        out.append((text, "yellow" if spent else ""))
    return out


def limits_said(model: str, changes: dict[str, int]) -> str:
    """Return what a cap change does, in the CLI's words: `capped at 10/min per model, ...`."""
    return ", ".join(limit_said(kind, value, model) for kind, value in changes.items())


def _of(used: int, limit: int | None) -> str:
    return f"{count(used)}/{count(limit)}" if limit else count(used)


class KeysPane(Sorted, Pane):
    """Show the pool; act on the key under the cursor."""

    TITLE = "Keys"
    TABLE_COLUMNS = COLUMNS
    SORT_DESCENDING = DESCENDING
    NOTES = [
        "Keys see attempts: tries counts every upstream try made with the key, retries included",
        "(the Users pane counts requests). tries, tok: today, since midnight Pacific, when",
        "Google's daily quotas reset. ok%: successes against rate limits, dead-key and upstream",
        "failures, last 15 minutes. err5/60: failed tries in the last 5 and 60 minutes (the",
        "panel below splits them by class). sick: most of the last 5 minutes' tries failed",
        "(5xx, timeouts, dead answers); rate limits show as cooling instead. rpm: tries this",
        "minute on the key's busiest model / its requests-per-minute limit (the cap you set, else",
        "the one learned from Google's 429s). today: requests Google counted today on the model",
        "closest to its daily limit / that limit; no quota: the key's tier has none for a model",
        "(the panel lists every model). The pool paces each key below these limits.",
        "Changes reach the running proxy within about a second (it re-reads keys), no restart.",
        f"A big pool is shown {PAGE} keys at a time: ] and [ turn the page; / and s work on all.",
    ]
    BINDINGS = [
        Binding("a", "add", "Add", tooltip="add a key (a form; the key is hidden as you type)"),
        Binding("e", "enable", "Enable", tooltip="enable: active again, dead mark and cooldowns cleared"),
        Binding("d", "disable", "Disable", tooltip="disable the key: the proxy stops choosing it"),
        Binding("r", "remove", "Remove", tooltip="remove the key (asks first)"),
        Binding("P,t", "probe", "Probe", key_display="P/t",
                tooltip="probe: list the upstream's models with this key"),
        Binding("R", "reset", "Reset", key_display="R",
                tooltip="reset: clear dead mark, cooldowns, errors, stats (asks)"),
        Binding("c", "cap", "Cap", tooltip="set or lift the key's limits: requests/minute, requests/day, "
                "input tokens/minute, for every model or one (empty lifts one)"),
        Binding("L", "forget", "Forget limits", key_display="L",
                tooltip="forget the limits learned from Google for this key (asks)"),
        Binding("s", "sort", "Sort", tooltip="sort by the next column"),
        Binding("right_square_bracket", "page(1)", "Next page", key_display="]", show=False,
                tooltip="next page of keys"),
        Binding("left_square_bracket", "page(-1)", "Previous page", key_display="[", show=False,
                tooltip="previous page of keys"),
        Binding("S", "reverse", "Reverse the sort", key_display="S", show=False),
    ]

    def __init__(self, *, id: str = "keys") -> None:
        super().__init__(id=id)
        self.sort_column = "key"
        self.descending = False
        self.key_rows: list[dict[str, Any]] = []  # the page shown, in order
        self.all_keys: list[dict[str, Any]] = []  # every key of the last read
        self.matched = 0  # keys the filter lets through (all of them without one)
        self.page = 0
        self.next_read = 0.0  # time.monotonic() before which the keys are not read again
        self.probes: dict[int, ProbeResult] = {}
        self.probing: set[int] = set()
        self.now = time.time()

    def below_table(self) -> Iterable[Widget]:
        yield Static("", id="key-detail")

    def on_mount(self) -> None:
        self.table.mark_column(self.sort_column, "▼" if self.descending else "▲")
        self.set_info((" reading keys…", "dim"))

    def job(self) -> Job | None:
        # Reading 10,000 keys' figures takes a good part of a second: a big pool is read at
        # most a quarter of the time (sorting, filtering and paging use the last read).
        if self.all_keys and time.monotonic() < self.next_read:
            return None

        def read(reader: Any) -> tuple[float, list[dict[str, Any]]]:
            began = time.monotonic()
            data = (time.time(), reader.keys())
            self.next_read = time.monotonic() + 3 * (time.monotonic() - began)
            return data

        return read

    def show(self, data: tuple[float, list[dict[str, Any]]]) -> None:
        self.now, keys = data
        self.all_keys = keys
        rows = sorted(keys, key=SORTS[self.sort_column], reverse=self.descending)
        match = text_matcher(self.filter_line)
        if match is not None:
            rows = [k for k in rows if match(key_cells(k, self.now))]
        self.matched = len(rows)
        pages = max(1, -(-len(rows) // PAGE))
        self.page = min(self.page, pages - 1)
        self.key_rows = rows[self.page * PAGE:(self.page + 1) * PAGE]
        self.table.sync([(str(k["id"]), key_cells(k, self.now)) for k in self.key_rows])
        states = [k["state"] for k in keys]
        where = []
        if pages > 1:
            first = self.page * PAGE + 1
            where = [(f"   {first}–{first + len(self.key_rows) - 1} of {len(rows)} (] [ page)", "cyan")]
        self.set_info(
            (f" {len(keys)}", "bold"), " keys: ",
            (f"{states.count('usable')} usable", "green"), " · ",
            (f"{states.count('cooling')} cooling", "yellow"), " · ",
            (f"{states.count('sick')} sick", "dark_orange"), " · ",
            (f"{states.count('dead')} dead", "red"), " · ",
            (f"{states.count('disabled')} disabled", "dim"),
            (f"   sort: {self.sort_column} {'▼' if self.descending else '▲'}", "dim"),
            *where,
        )
        self.show_detail()

    def apply_filter(self, line: str) -> None:
        """Filter every key, not only the page shown (the rows are matched in `show`)."""
        self.filter_line = " ".join(line.split())
        self.page = 0
        self._resort()
        self.changed()

    def filter_parts(self) -> list[tuple[str, str] | str]:
        if not self.filter_line:
            return []
        return [(" · filter: ", "dim"), (self.filter_line, "bold cyan"),
                (f" ({self.matched} of {len(self.all_keys)})", "dim")]

    def action_page(self, step: int) -> None:
        pages = max(1, -(-self.matched // PAGE))
        page = min(max(0, self.page + step), pages - 1)
        if page != self.page:
            self.page = page
            self._resort()
            self.table.move_cursor(row=0, animate=False)

    def current(self) -> dict[str, Any] | None:
        """Return the key under the cursor."""
        key = self.table.cursor_key
        return next((k for k in self.key_rows if str(k["id"]) == key), None)

    def show_detail(self) -> None:
        k = self.current()
        out = Text(no_wrap=False, overflow="ellipsis")
        if k is None:
            out.append("no keys yet: press a to add one", style="dim")
            self.query_one("#key-detail", Static).update(out)
            return
        now = self.now
        out.append(f"{k['masked']}", style="bold")
        out.append(f" id {k['id']}")
        if k["label"]:
            out.append(f" · {k['label']}")
        out.append(" · ")
        out.append(k["state"], style=STATE_STYLES.get(k["state"], ""))
        out.append(f" · added {ago(k['created_at'], now)} ago · used {ago(k['last_used_at'], now)}"
                   + (" ago" if k["last_used_at"] else ""), style="dim")
        if k["invalid_reason"]:
            out.append("\ndead: ", style="bold red")
            out.append(k["invalid_reason"])
        # The most urgent lines first: the panel is a few lines high at 80×24.
        out.append("\nfailed tries", style="dim")
        for window in ("5m", "60m"):
            failed = k[f"failed_{window}"]
            out.append(f"{' ·' if window == '60m' else ''} {window}: ", style="dim")
            out.append(failures_text(failed), style="red" if failed else "")
            out.append(f" of {count(k[f'attempts_{window}'])}", style="dim")
        quotas = quota_parts(k.get("quotas") or [])
        if quotas:
            out.append("\nquota: ", style="dim")
            for i, (text, style) in enumerate(quotas):
                out.append(" · " if i else "", style="dim")
                out.append(text, style=style)
        if k["cooldowns"]:
            out.append("\ncooling: ", style="yellow")
            out.append(", ".join(
                f"{c['model'] or 'all models'} {span(c['cool_until'] - now)}"
                + (f" ({c['reason']})" if c["reason"] else "") for c in k["cooldowns"]))
        out.append(f"\ntoday {count(k['attempts_today'])} tries, {count(k['requests_today'])} requests ended "
                   f"here, {count(k['tokens_today'])} tokens · ", style="dim")
        if k["rpm_cap"]:
            out.append(f"cap {k['rpm_cap']}/min per model: {k['rpm_used'] or 0} tries this minute")
            if k["rpm_used_model"]:
                out.append(f" ({k['rpm_used_model']})", style="dim")
        else:
            out.append("no rpm cap (c sets limits)", style="dim")

        if k["last_error"]:
            out.append("\nlast error: ", style="dim")
            out.append(k["last_error"])
        probe = self.probes.get(k["id"])
        out.append("\nprobe: ", style="dim")
        if k["id"] in self.probing:
            out.append("calling the models list…", style="cyan")
        elif probe is None:
            out.append("P or t lists the upstream's models with this key", style="dim")
        else:
            out.append(f"{probe.status or 'no answer'}", style="green" if probe.ok else "bold red")
            out.append(f" · {probe.summary} · {probe.ms:.0f} ms · {ago(probe.at, time.time())} ago")
        self.query_one("#key-detail", Static).update(out)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    # -- actions ------------------------------------------------------------------------------

    def _target(self) -> dict[str, Any] | None:
        k = self.current()
        if k is None:
            self.notify("no key selected", severity="warning")
        return k

    def _key_name(self, k: dict[str, Any]) -> str:
        return f"{k['masked']}" + (f" ({k['label']})" if k["label"] else "")

    def action_add(self) -> None:
        if self.host.refuse("add a key"):
            return

        def added(answer: tuple[str, str] | None) -> None:
            if answer:
                value, label = answer
                self.host.act("add key", add_key, value, label or None)

        self.app.push_screen(AddKeyScreen(), added)

    def action_enable(self) -> None:
        k = self._target()
        if k and not self.host.refuse("enable"):
            self.host.act(f"enable {self._key_name(k)}", enable_key, str(k["id"]))

    def action_disable(self) -> None:
        k = self._target()
        if k and not self.host.refuse("disable"):
            self.host.act(f"disable {self._key_name(k)}", disable_key, str(k["id"]))

    def action_remove(self) -> None:
        k = self._target()
        if not k or self.host.refuse("remove"):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.host.act(f"remove {self._key_name(k)}", remove_key, str(k["id"]))

        self.app.push_screen(ConfirmScreen(
            f"Remove key {self._key_name(k)}?\n\nThe proxy stops using it within a second. "
            "Its history stays; adding the same value again brings it back.", "remove"), answered)

    def action_reset(self) -> None:
        k = self._target()
        if not k or self.host.refuse("reset"):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.host.act(f"reset {self._key_name(k)}", reset_key, str(k["id"]), forget_stats=True)

        self.app.push_screen(ConfirmScreen(
            f"Reset key {self._key_name(k)}?\n\nClears its dead mark, cooldowns and last error, "
            "and deletes its per-minute statistics.", "reset"), answered)

    def action_cap(self) -> None:
        k = self._target()
        if not k or self.host.refuse("set limits"):
            return
        self._read_limits(k)

    @work(thread=True, group="limits", exit_on_error=False)
    def _read_limits(self, k: dict[str, Any]) -> None:
        """Read the key's limits as they are now (not as the last refresh saw them), then ask."""
        try:
            limits = self.host.reader.key_limits(k["id"])
        except Exception as exc:  # the dialog must not take the console down
            self.app.call_from_thread(self.notify, f"cannot read the limits of {self._key_name(k)}: {exc}",
                                      severity="error")
            return
        self.app.call_from_thread(self._ask_limits, k, limits)

    def _ask_limits(self, k: dict[str, Any], limits: KeyLimits | None) -> None:
        name = self._key_name(k)
        if limits is None:
            self.notify(f"{name} is no longer in the database", severity="warning")
            return

        def chosen(change: CapChange | None) -> None:
            if change is None:
                return
            if not change.changes:
                self.notify(f"{name}: no limit changed", timeout=3)
                return
            self.host.act(f"{name}: {limits_said(change.model, change.changes)}", set_limits,
                          str(k["id"]), change.model, change.changes)

        models = [q["model"] for q in k.get("quotas") or []]
        self.app.push_screen(CapScreen(name, limits, models), chosen)

    def action_forget(self) -> None:
        k = self._target()
        if not k or self.host.refuse("forget limits"):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.host.act(f"forget learned limits of {self._key_name(k)}", forget_learned, str(k["id"]))

        self.app.push_screen(ConfirmScreen(
            f"Forget the limits learned for {self._key_name(k)}?\n\nThe pool learns them again from "
            "Google's next 429; \"no quota\" marks go too, so those models are tried again now. "
            "Limits you set (c) stay.", "forget"), answered)

    def action_probe(self) -> None:
        k = self._target()
        if not k or self.host.refuse("probe"):
            return
        self.probing.add(k["id"])
        self.show_detail()
        self.host.probe(k["id"], self._key_name(k))

    def probed(self, key_id: int, result: ProbeResult) -> None:
        """Keep a probe's answer to show under the table."""
        self.probing.discard(key_id)
        self.probes[key_id] = result
        self.show_detail()

    def _resort(self) -> None:
        self.table.mark_column(self.sort_column, "▼" if self.descending else "▲")
        if self.all_keys:
            self.show((self.now, self.all_keys))
