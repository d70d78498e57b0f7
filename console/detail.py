"""Render one request, or one event, as the text of a detail view."""
from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from proxy.store.util import ELLIPSIS, mask_key

from .fmt import ms, stamp, status_style


def _masked(value: Any) -> str:
    """Return a key as shown on screen: already masked stays, anything else is masked here."""
    text = "" if value is None else str(value)
    return text if (ELLIPSIS in text or not text) else mask_key(text)


def _value(value: Any) -> Text:
    return value if isinstance(value, Text) else Text("—" if value in (None, "") else str(value))


def _fields(rows: list[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True, min_width=10)
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, _value(value))
    return table


def _pairs(rows: list[tuple[str, Any]]) -> Table:
    """Lay fields out two per line, so a request fits an 80×24 screen with its attempts."""
    table = Table.grid(padding=(0, 1), expand=True)
    for _ in range(2):
        table.add_column(style="bold", no_wrap=True)
        table.add_column(ratio=1, overflow="fold")
    for i in range(0, len(rows), 2):
        left = rows[i]
        right = rows[i + 1] if i + 1 < len(rows) else ("", "")
        table.add_row(left[0], _value(left[1]), right[0], _value(right[1]) if right[0] else Text(""))
    return table


def request_view(r: dict[str, Any]) -> RenderableType:
    """Return every field of a request and a table of its attempts."""
    status = r.get("status")
    tin, tout = r.get("tokens_in") or 0, r.get("tokens_out") or 0
    seconds = (r.get("duration_ms") or 0) / 1000
    user = r.get("user_label") or "—"
    if r.get("user_id"):
        user += f" (id {r['user_id']})"
    key = _masked(r.get("key_masked")) or "—"
    if r.get("key_id"):
        key += f" (id {r['key_id']})"
    lost = status is None and bool(r.get("lost"))
    if lost:  # its worker is gone: it will never finish
        state = Text("lost: its worker stopped before it finished", style="yellow")
    else:
        state = Text("in flight" if status is None else str(status), style=status_style(status))
    pairs = _pairs([
        ("started", stamp(r.get("started_at"))),
        ("ended", stamp(r.get("ended_at")) if r.get("ended_at") else "never" if lost else "in flight"),
        ("user", user),
        ("dialect", "OpenAI" if r.get("dialect") == "openai" else "native Gemini"),
        ("model", r.get("model")),
        ("stream", "yes" if r.get("stream") else "no"),
        ("key", key),
        ("status", state),
        ("first byte", ms(r.get("ttfb_ms"))),
        ("duration", ms(r.get("duration_ms"))),
        ("tokens", f"{tin} in · {tout} out"),
        ("tokens/s", f"{tout / seconds:.1f}" if tout and seconds > 0 else None),
        ("attempts", r.get("attempts")),
        ("worker", r.get("worker_pid")),
        ("from", r.get("remote_addr")),
        ("key given", r.get("presented_key")),  # a refused request: the (masked) key it tried
        # Databases migrated for cost estimates carry it; older ones simply lack the column.
        *([("cost", f"${r['cost_usd']:.6f}" if r["cost_usd"] is not None else None)] if "cost_usd" in r else []),
    ])
    wide = _fields([
        ("id", r.get("id")),
        ("request", f"{r.get('method') or ''} {r.get('path') or ''}".strip()),
        ("error", Text(" · ".join(str(p) for p in (r.get("error_class"), r.get("error_message")) if p) or "—",
                       style="red" if r.get("error_class") else "")),
    ])
    attempts = Table(title="attempts", title_justify="left", title_style="bold", expand=True,
                     show_edge=False, pad_edge=False, box=None, header_style="bold dim")
    for name, justify in (("#", "right"), ("key", "left"), ("status", "right"), ("outcome", "left"),
                          ("ms", "right"), ("reason", "left")):
        attempts.add_column(name, justify=justify, overflow="fold", no_wrap=name != "reason")
    for i, a in enumerate(r.get("attempts_list") or [], 1):
        if not isinstance(a, dict):
            continue
        code = a.get("status")
        attempts.add_row(
            str(i), _masked(a.get("key")) or "—",
            Text(str(code) if code is not None else "—", style=status_style(code) if code else ""),
            Text(str(a.get("outcome") or "—"), style="green" if a.get("outcome") == "ok" else "yellow"),
            ms(a.get("ms")), str(a.get("reason") or ""),
        )
    if not attempts.row_count:
        none = "none recorded" if lost else "none yet" if status is None else "none: the proxy answered itself"
        attempts.add_row("", none, "", "", "", "")
    return Group(wide, pairs, Text(""), attempts)


def event_view(e: dict[str, Any]) -> RenderableType:
    """Return every field of an event."""
    return _fields([
        ("id", e.get("id")),
        ("time", stamp(e.get("ts"))),
        ("level", e.get("level")),
        ("status", e.get("status")),
        ("model", e.get("model")),
        ("key id", e.get("key_id")),
        ("request", e.get("request_id")),
        ("message", e.get("message")),
    ])
