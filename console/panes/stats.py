"""Stats: requests, tokens and errors over time, in total and per key, model or user.

Users and models are counted in requests, as clients saw them; keys in tries (upstream
attempts), as the pool saw them. A request that failed on one key and succeeded on the next
is one ok request for its user, and one failed plus one ok try for the keys.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from proxy.store.rollup import INDEX, Counters
from proxy.store.views import tries

from ..fmt import count, pct, spark
from ..reads import FAILURES, StatsData, failures, tokens
from ..table import Cell, Column
from .base import Job, Pane

SPANS = [("hour", "last hour by minute"), ("day", "last day by hour"), ("week", "last week by day")]
GROUPS = [("key_id", "key"), ("model", "model"), ("user_id", "user key"), ("host", "host")]
TREND_WIDTH = 23
COLUMNS = [
    Column("name", "key", 18),
    Column("requests", "req", 7, right=True),
    Column("ok", "ok%", 5, right=True),
    Column("errors", "err", 6, right=True),
    Column("tokens", "tok", 7, right=True),
    Column("cost", "cost $", 7, right=True),
    Column("trend", "requests over time", TREND_WIDTH),
]
def dollars(amount: float, tokens: int = 0) -> str:
    """Format an estimated cost compactly; "n/a" when tokens were used but nothing was priced.

    Zero cost for real tokens means the proxy had no price for them (no table, or a model it
    does not list): showing $0.00 would claim the traffic was free.
    """
    if amount == 0 and tokens:
        return "n/a"
    if amount >= 100:
        return f"{amount:,.0f}"
    return f"{amount:.2f}" if amount >= 0.01 or amount == 0 else f"{amount:.4f}"


# What each grouping counts, and the labels of its count, ok% and error columns and trend.
UNITS = {"key_id": ("tries", "fail", "tries over time"), "model": ("req", "err", "requests over time"),
         "user_id": ("req", "err", "requests over time"), "host": ("req", "err", "requests over time")}


def failed_requests(counts: Counters) -> int:
    """Return the requests in a counter vector that did not end ok.

    An ok try always ends its request (the proxy stops at the first success), so `ok` counts
    requests that succeeded, and every other request failed whatever its retries did.
    """
    return max(0, counts[INDEX["requests"]] - counts[INDEX["ok"]])


def since(start_minute: int, span: str) -> str:
    """Return where a span starts: the time for the last hour, with the date for day and week."""
    ts = time.localtime(start_minute * 60)
    return time.strftime("%H:%M" if span == "hour" else "%a %d %b %H:%M", ts)


FAILURE_NAMES = {"rate_limited": "rate-limited", "key_dead": "key dead", "upstream_error": "upstream",
                 "client_error": "client", "rejected": "refused"}


def budget_text(budget: list[dict[str, Any]]) -> Text:
    """Return the daily quota left per model: `gemini-2.5-pro: 412 of 1,000 left today across 10 keys`."""
    line = Text(" quota today: ", style="dim", no_wrap=True, overflow="ellipsis")
    shown = [m for m in budget if m["keys"] or m["no_quota"] or m["unknown"]]
    if not shown:
        line.append("no daily limits known yet (the pool learns them from Google's 429s)", style="dim")
        return line
    for i, m in enumerate(shown):
        if i:
            line.append(" · ", style="dim")
        line.append(f"{m['model']}: ", style="bold")
        if m["keys"]:
            low = m["left"] <= m["limit"] * 0.1
            line.append(f"{m['left']:,} of {m['limit']:,} left", style="bold red" if low else "green")
            line.append(f" across {m['keys']} key{'s' if m['keys'] != 1 else ''}", style="dim")
        extra = []
        if m["unknown"]:
            extra.append(f"{m['unknown']} limit unknown")
        if m["no_quota"]:
            extra.append(f"{m['no_quota']} no quota")
        if extra:
            line.append(f"{' ' if m['keys'] else ''}({', '.join(extra)})", style="dim")
    return line


class Spark(Widget):
    """A one-line bar chart from zero, stretched to the widget's width."""

    DEFAULT_CSS = "Spark { height: 1; width: 1fr; }"

    def __init__(self, style: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.values: list[float] = []
        self.bar_style = style

    def set(self, values: list[float]) -> None:
        self.values = values
        self.refresh()

    def render(self) -> Text:
        return Text(spark(self.values, self.size.width), style=self.bar_style, no_wrap=True)


class SparkRow(Horizontal):
    """A label, a sparkline and the total beside it."""

    def __init__(self, label: str, style: str, *, id: str) -> None:
        super().__init__(id=id, classes="spark-row")
        self.label_text = label
        self.bar_style = style

    def compose(self) -> ComposeResult:
        yield Static(Text(self.label_text, style="bold"), classes="spark-label")
        yield Spark(self.bar_style)
        yield Static("", classes="spark-total")

    def set(self, values: list[float], total: Text | str) -> None:
        self.query_one(Spark).set(values)
        self.query_one(".spark-total", Static).update(total)


class StatsPane(Pane):
    """Show one time span, grouped one way; `r` cycles the span, `g` the grouping."""

    TITLE = "Stats"
    TABLE_COLUMNS = COLUMNS
    NOTES = [
        "Counts come from the per-minute buckets the proxy keeps (they outlive pruned requests).",
        "Users and models count requests, as clients saw them: ok% and err are requests that",
        "succeeded and failed, whatever their retries did. Keys count tries (upstream attempts,",
        "retries included): a request that failed on one key and then succeeded on another is",
        "one ok request for its user and one failed try plus one ok try for the keys.",
        "The failed-tries line splits every failed try by class.",
        "quota today: per model, the requests left today across the usable keys whose daily",
        "limit is known (learned from Google's 429s or set with c on the Keys pane); it resets",
        "at midnight Pacific.",
        "Week buckets are 24 hours each, the last ending now.",
    ]
    BINDINGS = [
        Binding("r", "span", "Range: hour / day / week"),
        Binding("g", "group", "Group: key / model / user / host"),
    ]

    def __init__(self, *, id: str = "stats") -> None:
        super().__init__(id=id)
        self.span_index = 0
        self.group_index = 0
        self.reading = True

    def above_table(self) -> Iterable[Widget]:
        yield SparkRow("requests", "bold cyan", id="spark-requests")
        yield SparkRow("tokens", "bold green", id="spark-tokens")
        yield SparkRow("failed", "bold red", id="spark-errors")
        yield Static("", id="breakdown")
        yield Static("", id="budget")

    @property
    def span(self) -> str:
        return SPANS[self.span_index][0]

    @property
    def group(self) -> str:
        return GROUPS[self.group_index][0]

    def on_mount(self) -> None:
        self._label_units()
        self.describe(None)

    def job(self) -> Job | None:
        group, span = self.group, self.span
        return lambda reader: reader.stats(group, span)

    def describe(self, data: StatsData | None) -> None:
        parts: list[tuple[str, str] | str] = [
            (" " + SPANS[self.span_index][1], "bold"), " · per ", (GROUPS[self.group_index][1], "bold"),
        ]
        if data and data.starts:
            parts.append((f" · {since(data.starts[0], data.span)} → now", "dim"))
        if self.reading:
            parts.append(("  reading…", "cyan"))
        parts.append(("   r range · g group", "dim"))
        self.set_info(*parts)

    def show(self, data: StatsData) -> None:
        self.reading = False
        total = data.total
        req = [b[INDEX["requests"]] for b in total]
        tok = [tokens(b) for b in total]
        err = [failed_requests(b) for b in total]
        n_req, n_tok, n_err = sum(req), sum(tok), sum(err)
        per = {"hour": "min", "day": "h", "week": "day"}[data.span]
        rate = n_req / len(req) if req else 0
        per_bucket = f"{rate:.1f}" if rate < 100 else count(rate)
        self.query_one("#spark-requests", SparkRow).set(req, Text(f"{count(n_req)} · {per_bucket}/{per}"))
        tin = sum(b[INDEX["tokens_in"]] for b in total)
        cost = sum(b[INDEX["cost_micros"]] for b in total) / 1e6
        priced = "no price" if cost == 0 and n_tok else f"${dollars(cost)}"
        self.query_one("#spark-tokens", SparkRow).set(
            tok, Text(f"{count(tin)} in {count(n_tok - tin)} out · {priced}"))
        self.query_one("#spark-errors", SparkRow).set(
            err, Text(f"{count(n_err)} req · {pct(n_err / n_req) if n_req else '—'} of requests"))
        line = Text(" failed tries: ", style="dim", no_wrap=True, overflow="ellipsis")
        for name in FAILURES:
            n = sum(b[INDEX[name]] for b in total)
            line.append(f"{FAILURE_NAMES[name]} ", style="dim")
            line.append(count(n), style="bold red" if n and name != "client_error" else "bold" if n else "dim")
            line.append("  ")
        self.query_one("#breakdown", Static).update(line)
        self.query_one("#budget", Static).update(budget_text(data.budget))
        per_key = data.group == "key_id"
        rows = []
        for g, series in data.groups.items():
            rows.append((g, series, sum(tries(b) if per_key else b[INDEX["requests"]] for b in series)))
        rows.sort(key=lambda r: (-r[2], str(r[0])))
        self.table.sync([(f"{self.group}:{g}", self._cells(data, g, series)) for g, series, _ in rows])
        self.describe(data)

    def _cells(self, data: StatsData, g: Any, series: list[list[int]]) -> tuple[Cell, ...]:
        if data.group == "model":
            name = g or "(none)"
        elif data.group == "host":
            name = g or "(before hosts)"  # buckets written before 0007_hosts
        else:
            name = data.names.get(g) or ("(none)" if not g else f"#{g}")
        # Keys see tries; users and models see requests (see the module docstring).
        if data.group == "key_id":
            per_bucket = [tries(b) for b in series]
            err = sum(failures(b) for b in series)
        else:
            per_bucket = [b[INDEX["requests"]] for b in series]
            err = sum(failed_requests(b) for b in series)
        n = sum(per_bucket)
        ok = sum(b[INDEX["ok"]] for b in series)
        return (
            name,
            count(n),
            pct(ok / n) if n else "—",
            (count(err), "red" if err else "dim"),
            count(n_tok := sum(tokens(b) for b in series)),
            dollars(sum(b[INDEX["cost_micros"]] for b in series) / 1e6, n_tok),
            (spark(per_bucket, TREND_WIDTH), "cyan"),
        )

    def _changed_view(self) -> None:
        self.reading = True
        self.table.reset()
        self.table.relabel("name", GROUPS[self.group_index][1])
        self._label_units()
        self.describe(None)
        self.changed()

    def _label_units(self) -> None:
        """Name the count, error and trend columns in the grouping's unit (tries or requests)."""
        unit, err, trend = UNITS[self.group]
        self.table.relabel("requests", unit)
        self.table.relabel("errors", err)
        self.table.relabel("trend", trend)

    def action_span(self) -> None:
        self.span_index = (self.span_index + 1) % len(SPANS)
        self._changed_view()

    def action_group(self) -> None:
        self.group_index = (self.group_index + 1) % len(GROUPS)
        self._changed_view()
