"""The console under Textual's pilot at 80×24, over a small seeded database."""
from __future__ import annotations

import asyncio
import re
import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from rich.console import Console
from textual.widgets import Input
from test_console_seed import USERS, add_recent_requests, add_sick_key, put_stats, request_row, seed_db

from console.app import ConsoleApp
from console.header import keys_text
from console.health import HealthStrip, strip_text
from console.modals import AddKeyScreen, AddUserScreen, CapScreen, ConfirmScreen, LimitsScreen, TextScreen
from console.panes import KeysPane, LogsPane, RequestsPane, StatsPane, UsersPane
from console.table import KeyedTable
from proxy.store import add_user, find_key, list_keys, list_users, open_db
from proxy.store.schema import REQUEST_COLUMNS
from proxy.store.util import hash_user_key, minute_of

SIZE = (80, 24)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "console.db"
    seed_db(path)
    return path


def run(test: Callable[[], Any]) -> None:
    asyncio.run(test())


async def until(pilot: Any, cond: Callable[[], Any], timeout: float = 5.0) -> None:
    """Let the app run until `cond()` is true (the poll worker applies results asynchronously)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def table(app: ConsoleApp, pane: type) -> KeyedTable:
    return app.query_one(pane).query_one(KeyedTable)


def keys_of(t: KeyedTable) -> list[str]:
    return t.keys_in_order()


def screen_text(app: ConsoleApp) -> str:
    """Return the text of the TextScreen on top, rendered as a user would read it."""
    screen = app.screen
    assert isinstance(screen, TextScreen)
    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    console.print(screen.body)
    return console.export_text()


def db_keys(path: Path) -> dict[str, dict[str, Any]]:
    db = open_db(path)
    try:
        return {k["label"]: k for k in list_keys(db, include_removed=True)}
    finally:
        db.close()


async def type_into(pilot: Any, app: ConsoleApp, text: str, *, opener: str | None = None) -> None:
    """Open an input (with `opener`), put `text` in the focused input, and press enter.

    Setting the value instead of pressing each key keeps the tests quick; one test types.
    """
    if opener:
        await pilot.press(opener)
    await pilot.pause()
    field = app.focused
    assert isinstance(field, Input), field
    field.value = text
    await pilot.press("enter")


def recorder(app: ConsoleApp) -> list[str]:
    """Record every notification's message (and still show it)."""
    seen: list[str] = []
    original = app.notify

    def notify(message: str, **kw: Any) -> None:
        seen.append(message)
        original(message, **kw)

    app.notify = notify  # type: ignore[method-assign]
    return seen


def test_each_pane_renders_its_rows(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            requests = table(app, RequestsPane)
            await until(pilot, lambda: requests.row_count == 30)
            assert keys_of(requests)[:3] == ["req-0029", "req-0028", "req-0027"]
            await pilot.press("2")
            logs = table(app, LogsPane)
            await until(pilot, lambda: logs.row_count == 8)
            await pilot.press("3")
            keys = table(app, KeysPane)
            await until(pilot, lambda: keys.row_count == 3)
            await pilot.press("4")
            stats = table(app, StatsPane)
            await until(pilot, lambda: stats.row_count == 2)
            await pilot.press("5")
            users = table(app, UsersPane)
            await until(pilot, lambda: users.row_count == 2)
            status = str(app.query_one("#status").render())
            assert "up" in status and "1 ok" in status and "1 cool" in status and "1 dead" in status
    run(go)


def test_requests_fit_80_columns_and_show_in_flight(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            t = table(app, RequestsPane)
            await until(pilot, lambda: t.row_count == 30)
            # Every column is visible without scrolling sideways at 80 columns.
            assert t.virtual_size.width <= t.size.width
            flying = t.get_row("req-0029")
            assert flying[5].plain.strip() == "…" and flying[8].plain.strip().endswith("s")
            assert t.get_row("req-0027")[6].plain.strip() == "2"
    run(go)


def test_new_requests_appear_by_key_without_reloading(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            t = table(app, RequestsPane)
            await until(pilot, lambda: t.row_count == 30)
            old_cell = t.get_row("req-0010")[0]
            db = open_db(db_path)
            cols = ", ".join(REQUEST_COLUMNS)
            db.conn.execute(f"INSERT INTO requests ({cols}) VALUES ({', '.join(':' + c for c in REQUEST_COLUMNS)})",
                            request_row(30, time.time(), started_at=time.time()))
            db.conn.execute("UPDATE requests SET status = 200, duration_ms = 1500, ended_at = ? WHERE id = 'req-0029'",
                            (time.time(),))
            db.close()
            await until(pilot, lambda: "req-0030" in keys_of(t))
            assert keys_of(t)[0] == "req-0030"
            await until(pilot, lambda: t.get_row("req-0029")[5].plain.strip() == "200")
            # Unchanged rows keep their cell objects: nothing was cleared and reloaded.
            assert t.get_row("req-0010")[0] is old_cell
    run(go)


def test_requests_filter_narrows_and_clears(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            t = table(app, RequestsPane)
            await until(pilot, lambda: t.row_count == 30)
            await pilot.press("slash")
            await pilot.press(*"status:4xx")
            await pilot.press("enter")
            await until(pilot, lambda: set(keys_of(t)) == {"req-0026", "req-0028"})
            await type_into(pilot, app, "user:bob model:gemini-2.5-pro", opener="slash")
            await until(pilot, lambda: set(keys_of(t)) == {"req-0024", "req-0028"})
            await type_into(pilot, app, "overloaded", opener="slash")
            await until(pilot, lambda: keys_of(t) == ["req-0025"])
            await pilot.press("slash")
            app.focused.value = "status:2xx"
            await pilot.press("escape")  # in the bar: cancels, the filter stays
            assert app.focused is t and app.query_one(RequestsPane).filter_line == "overloaded"
            await pilot.press("escape")  # on the table: drops the filter
            await until(pilot, lambda: t.row_count == 30)
    run(go)


def test_logs_filter_by_level_status_and_text(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            t = table(app, LogsPane)
            await until(pilot, lambda: t.row_count == 8)
            await type_into(pilot, app, "level:warning", opener="slash")
            await until(pilot, lambda: t.row_count == 2)
            await type_into(pilot, app, "status:429", opener="slash")
            await until(pilot, lambda: t.row_count == 1)
            await type_into(pilot, app, "retired", opener="slash")
            await until(pilot, lambda: t.row_count == 1 and "retired" in t.get_row_at(0)[3].plain)
    run(go)


def test_keys_sort_by_column(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            t = table(app, KeysPane)
            await until(pilot, lambda: t.row_count == 3)
            ids = db_keys(db_path)
            alpha, beta, gamma = (str(ids[n]["id"]) for n in ("alpha", "beta", "gamma"))
            assert keys_of(t) == [alpha, beta, gamma]
            await pilot.press("s", "s")  # key → label → state
            await until(pilot, lambda: app.query_one(KeysPane).sort_column == "state")
            assert keys_of(t) == [alpha, beta, gamma]  # usable, cooling, dead
            await pilot.press("s")  # ok%, best first
            await until(pilot, lambda: keys_of(t) == [alpha, beta, gamma])
            await pilot.press("S")  # reversed: no traffic, then worst
            await until(pilot, lambda: keys_of(t) == [gamma, beta, alpha])
            await pilot.press("s")  # tries today, most first
            await until(pilot, lambda: keys_of(t)[0] == alpha)
            assert "tries▼" in t.columns[t.ordered_columns[4].key].label.plain
    run(go)


def test_key_actions_change_the_database(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            t = table(app, KeysPane)
            await until(pilot, lambda: t.row_count == 3)
            # disable, then enable, the first key (alpha)
            await pilot.press("d")
            await until(pilot, lambda: db_keys(db_path)["alpha"]["status"] == "disabled")
            await until(pilot, lambda: "disabled" in t.get_row_at(0)[2].plain)
            await pilot.press("e")
            await until(pilot, lambda: db_keys(db_path)["alpha"]["status"] == "active")
            # reset the dead key (gamma, third row) after confirming
            await pilot.press("down", "down", "R")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await until(pilot, lambda: db_keys(db_path)["gamma"]["invalid_reason"] is None)
            # add a key through the form; the bad value is refused first
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, AddKeyScreen))
            await type_into(pilot, app, "no way")
            assert "not a Google API key" in str(app.screen.query_one("#problem").render())
            await type_into(pilot, app, "fake-key-0009")
            await type_into(pilot, app, "delta")
            await until(pilot, lambda: "delta" in db_keys(db_path))
            await until(pilot, lambda: t.row_count == 4)
            assert db_keys(db_path)["delta"]["masked"] == "fake…0009"
    run(go)


def test_reset_clears_the_keys_stats(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            t = table(app, KeysPane)
            await until(pilot, lambda: t.row_count == 3)
            await until(pilot, lambda: t.get_row_at(0)[4].plain.strip() == "25")
            await pilot.press("R", "y")
            await until(pilot, lambda: t.get_row_at(0)[4].plain.strip() == "0")
            db = open_db(db_path)
            assert db.conn.execute("SELECT count(*) FROM stats_minute WHERE key_id = 1").fetchone()[0] == 0
            db.close()
    run(go)


def test_remove_asks_first(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            t = table(app, KeysPane)
            await until(pilot, lambda: t.row_count == 3)
            await pilot.press("down", "r")  # beta
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "fake…0002" in app.screen.question
            await pilot.press("enter", "n")  # enter is not a yes
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
            await pilot.pause(0.4)
            assert db_keys(db_path)["beta"]["status"] == "active"
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await until(pilot, lambda: db_keys(db_path)["beta"]["status"] == "removed")
            await until(pilot, lambda: t.row_count == 2)
    run(go)


def test_detail_view_shows_every_attempt(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            t = table(app, RequestsPane)
            await until(pilot, lambda: t.row_count == 30)
            await pilot.press("down", "down", "enter")  # req-0027: a 429 on one key, then a 200
            await until(pilot, lambda: isinstance(app.screen, TextScreen))
            text = screen_text(app)
            assert "req-0027" in text and "gemini-2.5-flash" in text and "fake…0001 (id 1)" in text
            lines = [line for line in text.splitlines() if "fake…000" in line and "ms" in line]
            assert "429" in lines[0] and "rate_limited" in lines[0] and "per-minute quota" in lines[0]
            assert "fake…0002" in lines[0] and "fake…0001" in lines[1] and "ok" in lines[1]
            await pilot.press("escape")
            await pilot.press("down", "enter")  # req-0026: the error class and message
            await until(pilot, lambda: isinstance(app.screen, TextScreen))
            text = screen_text(app)
            assert "client_error" in text and "bad [request] body" in text
    run(go)


def test_read_only_refuses_actions(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            said = recorder(app)
            await pilot.press("3")
            t = table(app, KeysPane)
            await until(pilot, lambda: t.row_count == 3)
            for key in ("d", "e", "r", "R", "a", "t", "c"):
                await pilot.press(key)
                assert not isinstance(app.screen, (ConfirmScreen, AddKeyScreen, CapScreen))
            await pilot.press("5", "a", "r")
            assert not isinstance(app.screen, AddUserScreen)
            await pilot.pause(0.3)
            assert len(said) == 9 and all(m.startswith("read-only") for m in said)
            assert "read-only: cannot set limits (the console was started with --read-only)" in said
            assert db_keys(db_path)["alpha"]["status"] == "active"
            assert "read-only" in str(app.query_one("#tabs").render())
    run(go)


def test_users_add_shows_the_key_once_and_remove_asks(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("5")
            t = table(app, UsersPane)
            await until(pilot, lambda: t.row_count == 2)
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, AddUserScreen))
            await type_into(pilot, app, "carol")
            await until(pilot, lambda: isinstance(app.screen, TextScreen))
            shown = next(w for w in screen_text(app).split() if w.startswith("gp-"))
            db = open_db(db_path)
            carol = next(u for u in list_users(db) if u["label"] == "carol")
            assert db.conn.execute("SELECT key_hash FROM users WHERE id = ?", (carol["id"],)).fetchone()[0] \
                == hash_user_key(shown)
            db.close()
            await pilot.press("escape")
            await until(pilot, lambda: t.row_count == 3)
            assert shown not in " ".join(c.plain for c in t.get_row(str(carol["id"])))
            await pilot.press("end", "r")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await until(pilot, lambda: t.row_count == 2)
            db = open_db(db_path)
            assert {u["label"] for u in list_users(db)} == set(USERS)
            db.close()
    run(go)


def test_users_limits_are_set_from_the_console(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("5")
            t = table(app, UsersPane)
            await until(pilot, lambda: t.row_count == 2)
            await pilot.press("home", "l")
            await until(pilot, lambda: isinstance(app.screen, LimitsScreen))
            for value in ("30", "500000", "gemini-2.5-flash, gemini-2.5-pro"):
                await type_into(pilot, app, value)
            await until(pilot, lambda: not isinstance(app.screen, LimitsScreen))
            await pilot.pause(0.5)
            db = open_db(db_path)
            first = min(list_users(db), key=lambda u: u["id"])
            db.close()
            assert (first["rpm_limit"], first["tpd_limit"]) == (30, 500000)
            assert first["allowed_models"] == "gemini-2.5-flash|gemini-2.5-pro"
            await until(pilot, lambda: "500k" in " ".join(c.plain for c in t.get_row(str(first["id"]))))
    run(go)


def test_stats_cycle_range_and_group(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            pane = app.query_one(StatsPane)
            t = table(app, StatsPane)
            await until(pilot, lambda: t.row_count == 2)  # last hour: alpha and beta
            names = {t.get_row(k)[0].plain.strip() for k in keys_of(t)}
            assert names == {"alpha", "beta"}
            alpha = next(k for k in keys_of(t) if t.get_row(k)[0].plain.strip() == "alpha")
            assert t.get_row(alpha)[5].plain.strip() == "0.0026"  # estimated cost, dollars
            beta = next(k for k in keys_of(t) if t.get_row(k)[0].plain.strip() == "beta")
            assert t.get_row(beta)[5].plain.strip() == "n/a"  # tokens with no price: not $0.00
            total = app.query_one("#spark-tokens").query_one(".spark-total").render()
            assert "$0.0026" in str(total)
            await pilot.press("r")  # last day: gamma's old minute joins
            await until(pilot, lambda: pane.span == "day" and t.row_count == 3)
            await pilot.press("g")  # per model
            await until(pilot, lambda: {t.get_row(k)[0].plain.strip() for k in keys_of(t)}
                        == {"gemini-2.5-flash", "gemini-2.5-pro"})
            await pilot.press("g", "r")  # per user key, last week
            await until(pilot, lambda: pane.span == "week" and {t.get_row(k)[0].plain.strip() for k in keys_of(t)}
                        == {"alice", "bob"})
            breakdown = str(app.query_one("#breakdown").render())
            assert "rate-limited 2" in breakdown and "upstream 1" in breakdown
    run(go)


def test_pause_holds_the_tail_and_refresh_keys_change_the_interval(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=1.0)
        async with app.run_test(size=SIZE) as pilot:
            t = table(app, RequestsPane)
            await until(pilot, lambda: t.row_count == 30)
            await pilot.press("minus")
            assert app.interval == 2.0
            await pilot.press("plus", "plus", "plus")
            assert app.interval == 0.25
            await pilot.press("p")
            db = open_db(db_path)
            cols = ", ".join(REQUEST_COLUMNS)
            db.conn.execute(f"INSERT INTO requests ({cols}) VALUES ({', '.join(':' + c for c in REQUEST_COLUMNS)})",
                            request_row(31, time.time()))
            db.close()
            await pilot.pause(0.8)
            assert "req-0031" not in keys_of(t)
            assert "paused" in str(app.query_one("#tabs").render())
            await pilot.press("p")
            await until(pilot, lambda: "req-0031" in keys_of(t))
    run(go)


def test_help_lists_the_current_panes_keys(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3", "question_mark")
            await until(pilot, lambda: isinstance(app.screen, TextScreen))
            text = screen_text(app)
            for word in ("Keys pane", "Probe", "remove the key", "sort by the next column", "Quit", "1 2 3 4 5"):
                assert word.lower() in text.lower(), word
            await pilot.press("escape", "1", "question_mark")
            await until(pilot, lambda: isinstance(app.screen, TextScreen))
            assert "pause" in screen_text(app)
    run(go)


def test_probe_shows_the_upstream_answer(db_path, fake):
    fake.set_key("fake-key-0003", mode="invalid")

    async def go():
        app = ConsoleApp(db_path, refresh=0.2, upstream=fake.url)
        async with app.run_test(size=SIZE) as pilot:
            said = recorder(app)
            await pilot.press("3")
            pane = app.query_one(KeysPane)
            await until(pilot, lambda: pane.table.row_count == 3)
            await pilot.press("t")
            await until(pilot, lambda: 1 in pane.probes)
            assert pane.probes[1].status == 200 and "models" in pane.probes[1].summary
            await pilot.press("down", "down", "P")
            await until(pilot, lambda: 3 in pane.probes)
            assert pane.probes[3].status == 400 and "API_KEY_INVALID" in pane.probes[3].summary
            assert "API_KEY_INVALID" in str(app.query_one("#key-detail").render())
            # The key went upstream in the header, and its value never reached the screen.
            assert [r["key"] for r in fake.requests if r["path"] == "/v1beta/models"] == \
                ["fake-key-0001", "fake-key-0003"]
            assert not any("fake-key-000" in m for m in said)
    run(go)


def test_actions_never_put_a_full_key_on_screen(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            said = recorder(app)
            await pilot.press("3")
            await type_into(pilot, app, "fake-key-secret-0042", opener="a")
            await type_into(pilot, app, "")
            await until(pilot, lambda: table(app, KeysPane).row_count == 4)
            rows = " ".join(c.plain for k in keys_of(table(app, KeysPane)) for c in table(app, KeysPane).get_row(k))
            assert "fake-key-secret-0042" not in rows and "fake…0042" in rows
            assert not any("secret" in m for m in said)
            db = open_db(db_path)
            assert find_key(db, "fake…0042")["value"] == "fake-key-secret-0042"
            db.close()
    run(go)


def test_attempt_keys_are_masked_even_if_stored_whole(tmp_path):
    from console.detail import request_view

    row = {"id": "x", "status": 200, "attempts_list": [
        {"key_id": 1, "key": "fake-key-0001-full", "status": 200, "outcome": "ok", "reason": "", "ms": 5}]}
    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    console.print(request_view(row))
    text = console.export_text()
    assert "fake-key-0001-full" not in text and "fake…full" in text
    assert json.dumps(row)  # the row itself is untouched


def cells(t: KeyedTable, key: str) -> list[str]:
    return [c.plain.strip() for c in t.get_row(key)]


def status_text(app: ConsoleApp) -> str:
    return str(app.query_one("#status").render())


def test_a_key_failing_every_try_shows_sick_with_its_errors(db_path):
    delta = str(add_sick_key(db_path, time.time()))

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            pane = app.query_one(KeysPane)
            t = table(app, KeysPane)
            await until(pilot, lambda: t.row_count == 4)
            row = cells(t, delta)
            assert row[2] == "sick" and row[5] == "6/12"  # failed tries, last 5 / 60 minutes
            # tries count attempts: beta was tried 3 times (one retried request), ended 2.
            assert cells(t, "2")[4] == "3" and cells(t, "1")[4] == "25"
            # The header counts the sick key apart from the usable ones.
            await until(pilot, lambda: "1 ok 1 cool 1 sick 1 dead" in status_text(app))
            await pilot.press("end")
            await until(pilot, lambda: pane.current()["id"] == int(delta))
            detail = str(app.query_one("#key-detail").render())
            assert "5m: upstream 6 of 6 · 60m: upstream 10, rate-limited 2 of 12" in detail
    run(go)


def test_rpm_cap_is_shown_and_set_from_the_keys_pane(db_path):
    db = open_db(db_path)
    # The same tries in this minute and the next: whichever minute the console reads in, it sees 4.
    for minute in (minute_of(time.time()), minute_of(time.time()) + 1):
        put_stats(db, minute, 2, "gemini-2.5-pro", 1, ok=3, rate_limited=1)
    db.close()

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            t = table(app, KeysPane)
            await until(pilot, lambda: t.row_count == 3)
            assert cells(t, "2")[6] == "—"
            await pilot.press("down", "c")  # beta
            await until(pilot, lambda: isinstance(app.screen, CapScreen))
            await type_into(pilot, app, "10")
            await until(pilot, lambda: db_keys(db_path)["beta"]["rpm_cap"] == 10)
            await until(pilot, lambda: cells(t, "2")[6] == "4/10")
            detail = str(app.query_one("#key-detail").render())
            assert "cap 10/min per model: 4 tries this minute (gemini-2.5-pro)" in detail
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CapScreen))
            await type_into(pilot, app, "0")  # lifts the cap
            await until(pilot, lambda: db_keys(db_path)["beta"]["rpm_cap"] is None)
            await until(pilot, lambda: cells(t, "2")[6] == "—")
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, TextScreen))
            assert "set or lift the key's limits: requests/minute, requests/day" in screen_text(app)
    run(go)


def test_stats_count_requests_for_users_and_tries_for_keys(db_path):
    db = open_db(db_path)
    carol = add_user(db, "carol", "fake-user-key-carol-0003")[0]
    # carol's one request: 429 on beta, then answered by alpha.
    put_stats(db, minute_of(time.time()), 2, "gemini-2.5-flash", carol, rate_limited=1)
    put_stats(db, minute_of(time.time()), 1, "gemini-2.5-flash", carol, requests=1, ok=1)
    db.close()

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            t = table(app, StatsPane)
            pane = app.query_one(StatsPane)
            await until(pilot, lambda: t.row_count == 2)
            labels = [t.columns[c.key].label.plain.strip() for c in t.ordered_columns]
            assert labels[1:4] == ["tries", "ok%", "fail"]
            beta = next(k for k in keys_of(t) if cells(t, k)[0] == "beta")
            assert cells(t, beta)[1:4] == ["4", "25%", "3"]  # 4 tries, 1 ok, 3 failed
            await pilot.press("g", "g")  # per user
            await until(pilot, lambda: pane.group == "user_id" and "carol" in {cells(t, k)[0] for k in keys_of(t)})
            labels = [t.columns[c.key].label.plain.strip() for c in t.ordered_columns]
            assert labels[1:4] == ["req", "ok%", "err"]
            row = next(cells(t, k) for k in keys_of(t) if cells(t, k)[0] == "carol")
            assert row[1:4] == ["1", "100%", "0"]  # what carol got: one request, answered
            bob = next(cells(t, k) for k in keys_of(t) if cells(t, k)[0] == "bob")
            assert bob[1:4] == ["2", "50%", "1"]
    run(go)


def test_day_and_week_spans_show_their_date(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            pane = app.query_one(StatsPane)
            info = lambda: str(pane.query_one(".info").render())  # noqa: E731
            await until(pilot, lambda: "→ now" in info() and "reading" not in info())
            hour = minute_of(time.time()) // 60
            for key, span, first_hour in (("r", "day", hour - 23), ("r", "week", hour - 7 * 24 + 1)):
                await pilot.press(key)
                day = time.strftime("%a %d %b", time.localtime(first_hour * 3600))
                await until(pilot, lambda: pane.span == span and f"{day} " in info() and "→ now" in info())
    run(go)


def test_header_rate_is_over_the_last_ten_seconds(db_path):
    now = time.time()
    add_recent_requests(db_path, now, [request_row(100 + i, now, started_at=now - 1) for i in range(24)])

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            # 24 requests a second ago (and one in flight): 2.4-2.5 req/s over 10 s, not 0.4
            # over 60 (the in-flight one, 3 s old, leaves the window on a slow start).
            await until(pilot, lambda: re.search(r"2\.[45] req/s \(10s\)", status_text(app)))
    run(go)


def test_pool_health_strip_sits_above_every_pane(db_path):
    now = time.time()
    add_sick_key(db_path, now)
    add_recent_requests(db_path, now, [
        request_row(100, now, started_at=now - 5, status=429, model="gemini-2.5-pro"),
        request_row(101, now, started_at=now - 5, status=503),
    ])

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            strip = app.query_one(HealthStrip)
            text = lambda: str(strip.render())  # noqa: E731
            await until(pilot, lambda: "2.5-flash" in text())
            line = text().splitlines()[0]
            # the seeded rest ends 600 s after the seed: "10m", or "9m5Ns" a moment later
            assert "2.5-flash 3/4 keys 5xx×1" in line
            assert re.search(r"2\.5-pro 2/4 keys, back (10m|9m5\ds)", line), line
            assert "429×1" in line and line.rstrip().endswith("1 sick · 1 dead") and len(line) <= 80
            for n in "12345":
                await pilot.press(n)
                await pilot.pause()
                assert strip.region.height in (1, 2) and strip.region.y == 2  # under the two header lines
                pane = app.pane
                assert pane.region.y == 2 + strip.region.height
    run(go)


def test_strip_fits_its_width_and_shows_more_models_when_wider():
    now = 1_000_000.0
    models = [{"model": f"gemini-model-{i}", "usable": 3, "total": 4, "resting": 1, "back_at": now + 75,
               "got_429": 12, "got_5xx": 3, "requests": 100 - i} for i in range(8)]
    health = {"models": models, "keys": {"total": 4, "usable": 3, "sick": 0, "dead": 1, "disabled": 0}}
    narrow = strip_text(health, 80, now).plain.splitlines()
    assert len(narrow) == 2 and all(len(line) <= 80 for line in narrow)
    assert narrow[0].startswith(" model-0 3/4 keys, back 1m15s 429×12 5xx×3")
    assert narrow[1].rstrip().endswith("more") and narrow[0].rstrip().endswith("0 sick · 1 dead")
    wide = strip_text(health, 400, now).plain
    assert all(f"model-{i} " in wide for i in range(8)) and "more" not in wide
    shown = lambda text: sum(f"model-{i} " in text for i in range(8))  # noqa: E731
    assert shown(strip_text(health, 120, now).plain) > shown("\n".join(narrow))


def test_status_line_leaves_out_zero_key_counts_only_when_narrow():
    counts = {"usable": 3, "cooling": 0, "sick": 2, "dead": 0, "disabled": 1}
    assert keys_text(counts, drop_zeros=False).plain == " │ keys 3 ok 0 cool 2 sick 0 dead 1 off"
    assert keys_text(counts, drop_zeros=True).plain == " │ keys 3 ok 2 sick 1 off"
    assert keys_text({**counts, "disabled": 0}, drop_zeros=False).plain == " │ keys 3 ok 0 cool 2 sick 0 dead"


def two_hosts(path: Path) -> None:
    """Make the seeded database one that two hosts share: rows, events, buckets and workers of each."""
    now = time.time()
    add_recent_requests(path, now, [request_row(100 + i, now, host="web1" if i % 2 else "web2",
                                                worker_pid=4242) for i in range(4)])
    db = open_db(path)
    try:
        db.execute("UPDATE requests SET host = 'web1' WHERE host IS NULL")
        db.execute("UPDATE events SET host = 'web1'")
        db.execute("UPDATE events SET host = 'web2' WHERE id = (SELECT max(id) FROM events)")
        db.execute("UPDATE stats_minute SET host = 'web1'")
        db.execute("INSERT INTO stats_minute (minute, key_id, model, user_id, dialect, requests, ok, host) "
                   "VALUES (?, 1, 'gemini-2.5-flash', 1, 'native', 9, 9, 'web2')", (minute_of(now),))
        db.execute("UPDATE workers SET host = 'web1'")
        db.execute("INSERT INTO workers (host, pid, started_at, last_seen, version, inflight, served) "
                   "VALUES ('web2', 4242, ?, ?, '1.0', 0, 0)", (now - 600, now - 300))  # down
    finally:
        db.close()


def test_several_hosts_show_a_host_column_a_filter_and_a_grouping(db_path):
    two_hosts(db_path)

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            t = table(app, RequestsPane)
            await until(pilot, lambda: t.row_count == 34)
            await until(pilot, lambda: t.get_row("req-0103")[-1].plain.strip() == "web1")
            assert t.virtual_size.width <= t.size.width  # the host column still fits 80 columns
            status = str(app.query_one("#status").render())
            assert "hosts 1 up 1 down" in status  # 80 columns: counted
            await pilot.resize_terminal(130, 24)
            await until(pilot, lambda: "web1 ×1 · web2 down" in str(app.query_one("#status").render()))
            await pilot.resize_terminal(*SIZE)
            await type_into(pilot, app, "host:web2", opener="slash")
            await until(pilot, lambda: set(keys_of(t)) == {"req-0100", "req-0102"})
            # One host in view: the column makes way again.
            await until(pilot, lambda: t.get_row("req-0100")[-1].plain.strip() == "")
            await pilot.press("2")
            logs = table(app, LogsPane)
            await until(pilot, lambda: logs.row_count == 8)
            hosts = {logs.get_row(k)[-1].plain.strip() for k in keys_of(logs)}
            assert hosts == {"web1", "web2"}
            await type_into(pilot, app, "host:web2", opener="slash")
            await until(pilot, lambda: logs.row_count == 1)
            await pilot.press("4", "g", "g", "g")  # key → model → user → host
            stats = table(app, StatsPane)
            await until(pilot, lambda: {stats.get_row(k)[0].plain.strip() for k in keys_of(stats)}
                        == {"web1", "web2"})
    run(go)


def test_the_status_line_counts_hosts_when_naming_them_does_not_fit():
    from console.header import hosts_text

    hosts = [{"host": f"web{i}", "workers": 2, "up": i != 3, "stopping": 0} for i in range(5)]
    assert hosts_text(hosts, short=False).plain == " │ web0 ×2 · web1 ×2 · web2 ×2 · web3 down · web4 ×2"
    assert hosts_text(hosts, short=True).plain == " │ hosts 4 up 1 down"
