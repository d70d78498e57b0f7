"""The Requests and Logs panes say what is true, and every table uses the width it is given."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from test_console_app import SIZE, keys_of, screen_text, table, type_into, until
from test_console_seed import request_row, seed_db

from console.app import ConsoleApp
from console.modals import TextScreen
from console.panes import KeysPane, LogsPane, RequestsPane, StatsPane, UsersPane
from console.table import Column, layout
from proxy.store import add_event, open_db, transaction
from proxy.store.schema import REQUEST_COLUMNS

WIDE = (120, 40)
LONG = "upstream trouble on key fake…0002: The model is overloaded. Please try again later."


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "console.db"
    seed_db(path)
    return path


def execute(path: Path, sql: str, *args: Any) -> None:
    db = open_db(path)
    try:
        with transaction(db):
            db.conn.execute(sql, args)
    finally:
        db.close()


def insert_requests(path: Path, *rows: dict[str, Any]) -> None:
    db = open_db(path)
    try:
        with transaction(db):
            db.conn.executemany(f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
                                f"VALUES ({', '.join(':' + c for c in REQUEST_COLUMNS)})", rows)
    finally:
        db.close()


def info(app: ConsoleApp, pane: type) -> str:
    return str(app.query_one(pane).query_one(".info").render())


def run(size: tuple[int, int], path: Path, test: Any) -> None:
    async def go() -> None:
        app = ConsoleApp(path, refresh=0.2)
        async with app.run_test(size=size) as pilot:
            await test(app, pilot)

    asyncio.run(go())


# -- width ------------------------------------------------------------------------------------------


def test_layout_gives_spare_width_to_flexible_columns_and_takes_it_back():
    columns = [Column("time", "time", 8), Column("message", "message", 20), Column("detail", "x", 0, flex=2)]
    assert layout(columns, 30) == [8, 20, 0]  # the width at 80 columns: nothing spare
    assert layout(columns, 60) == [8, 30, 19]  # 30 spare: about twice as much to twice the weight
    assert layout(columns, 25) == [8, 15, 0]  # short: the flexible column gives back
    assert layout(columns, 5)[1] == 6  # never below a few characters
    capped = [Column("model", "model", 14, max_width=20), Column("n", "n", 3)]
    assert layout(capped, 100) == [20, 3]


@pytest.mark.parametrize("size", [SIZE, WIDE, (100, 30)])
def test_every_table_fills_the_terminal_without_scrolling_sideways(db_path, size):
    async def test(app: ConsoleApp, pilot: Any) -> None:
        for number, pane, rows in (("1", RequestsPane, 30), ("2", LogsPane, 8), ("3", KeysPane, 3),
                                   ("4", StatsPane, 2), ("5", UsersPane, 2)):
            await pilot.press(number)
            t = table(app, pane)
            await until(pilot, lambda: t.row_count == rows)
            # The width is laid out for the terminal; the scrollbar's column stays free.
            await until(pilot, lambda: t.virtual_size.width <= t.size.width - 1)
            if pane is not StatsPane:  # its names stop growing where no name reaches
                assert t.virtual_size.width == t.size.width - 1, pane

    run(size, db_path, test)


def test_messages_are_cut_at_80_columns_and_whole_at_120(db_path):
    db = open_db(db_path)
    add_event(db, LONG, level="warning", status=503, request_id="req-0025")
    db.close()

    async def look(size: tuple[int, int]) -> str:
        shown = ""

        async def test(app: ConsoleApp, pilot: Any) -> None:
            nonlocal shown
            await pilot.press("2")
            t = table(app, LogsPane)
            await until(pilot, lambda: t.row_count == 9)
            await until(pilot, lambda: t.virtual_size.width == t.size.width - 1)
            shown = t.get_row_at(t.row_count - 1)[3].plain.strip()

        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=size) as pilot:
            await test(app, pilot)
        return shown

    assert asyncio.run(look(SIZE)).endswith("…")
    assert asyncio.run(look(WIDE)) == LONG


def test_wide_requests_show_the_error_or_path(db_path):
    async def test(app: ConsoleApp, pilot: Any) -> None:
        t = table(app, RequestsPane)
        await until(pilot, lambda: t.row_count == 30)
        await until(pilot, lambda: t.virtual_size.width == t.size.width - 1)
        assert t.get_row("req-0025")[11].plain.strip() == "the model is overloaded"
        assert t.get_row("req-0010")[11].plain.strip() == "/v1beta/…:generateContent"  # the model is beside it
        assert t.get_row("req-0029")[11].plain.strip() == "/v1beta/…:generateContent"  # in flight too

    run(WIDE, db_path, test)


# -- filters ----------------------------------------------------------------------------------------


def test_a_model_filter_takes_the_name_as_shown(db_path):
    async def test(app: ConsoleApp, pilot: Any) -> None:
        t = table(app, RequestsPane)
        await until(pilot, lambda: t.row_count == 30)
        assert t.get_row("req-0024")[3].plain.strip() == "2.5-pro"
        await type_into(pilot, app, "model:2.5-pro", opener="slash")
        await until(pilot, lambda: set(keys_of(t)) == {"req-0024", "req-0028"})
        await type_into(pilot, app, "model:gemini-2.5-pro", opener="slash")
        await until(pilot, lambda: set(keys_of(t)) == {"req-0024", "req-0028"})
        await type_into(pilot, app, "model:2.5-PRO,models/gemini-2.5-flash", opener="slash")
        await until(pilot, lambda: t.row_count == 30)

    run(SIZE, db_path, test)


def test_slash_filters_keys_stats_and_users_by_what_they_show(db_path):
    async def test(app: ConsoleApp, pilot: Any) -> None:
        await pilot.press("3")
        keys = table(app, KeysPane)
        await until(pilot, lambda: keys.row_count == 3)
        await type_into(pilot, app, "BETA", opener="slash")
        await until(pilot, lambda: keys.row_count == 1)
        assert keys.get_row_at(0)[1].plain.strip() == "beta"
        await until(pilot, lambda: "filter: BETA (1 of 3)" in info(app, KeysPane))
        await pilot.pause(0.5)  # later polls keep the filter
        assert keys.row_count == 1
        await type_into(pilot, app, "dead api_key", opener="slash")  # every word, anywhere in the row
        await until(pilot, lambda: keys.row_count == 1 and keys.get_row_at(0)[1].plain.strip() == "gamma")
        await pilot.press("escape")
        await until(pilot, lambda: keys.row_count == 3)

        await pilot.press("4")
        stats = table(app, StatsPane)
        await until(pilot, lambda: stats.row_count == 2)
        await type_into(pilot, app, "alpha", opener="slash")
        await until(pilot, lambda: stats.row_count == 1)

        await pilot.press("5")
        users = table(app, UsersPane)
        await until(pilot, lambda: users.row_count == 2)
        await type_into(pilot, app, "bob", opener="slash")
        await until(pilot, lambda: users.row_count == 1 and users.get_row_at(0)[0].plain.strip() == "bob")
        await type_into(pilot, app, "nobody", opener="slash")
        await until(pilot, lambda: users.row_count == 0)
        assert "(0 of 2)" in info(app, UsersPane)

    run(SIZE, db_path, test)


# -- the live tail ----------------------------------------------------------------------------------


def test_in_flight_rows_stay_on_top_of_newer_finished_ones(db_path):
    now = time.time()
    insert_requests(db_path, *(request_row(40 + i, now, started_at=now - 1 + i / 10) for i in range(5)))

    async def test(app: ConsoleApp, pilot: Any) -> None:
        t = table(app, RequestsPane)
        await until(pilot, lambda: t.row_count == 35)
        assert keys_of(t)[:3] == ["req-0029", "req-0044", "req-0043"]
        assert "1 in flight" in info(app, RequestsPane)

    run(SIZE, db_path, test)


def test_requests_sort_by_column_with_in_flight_rows_pinned(db_path):
    async def test(app: ConsoleApp, pilot: Any) -> None:
        pane = app.query_one(RequestsPane)
        t = table(app, RequestsPane)
        await until(pilot, lambda: t.row_count == 30)
        while pane.sort_column != "status":
            await pilot.press("s")
        await until(pilot, lambda: "st▼" in t.columns[t.ordered_columns[5].key].label.plain)
        order = keys_of(t)
        assert order[0] == "req-0029"  # in flight: on top whatever the sort
        assert order[1] == "req-0025" and order[2:4] == ["req-0028", "req-0026"]  # 503, 429, 400
        await pilot.press("S")
        await until(pilot, lambda: keys_of(t)[-1] == "req-0025")
        assert keys_of(t)[0] == "req-0029"
        assert "sort: status ▲" in info(app, RequestsPane)

    run(SIZE, db_path, test)


def test_requests_say_when_the_cursor_left_the_top(db_path):
    async def test(app: ConsoleApp, pilot: Any) -> None:
        t = table(app, RequestsPane)
        await until(pilot, lambda: t.row_count == 30)
        assert "scrolled back" not in info(app, RequestsPane)
        await pilot.press("down", "down")
        await until(pilot, lambda: "scrolled back (G follows)" in info(app, RequestsPane))
        insert_requests(db_path, request_row(50, time.time(), started_at=time.time()))
        await until(pilot, lambda: "req-0050" in keys_of(t))
        assert t.cursor_row != 0  # it stayed where it was
        await pilot.press("G")
        await until(pilot, lambda: t.cursor_row == 0 and "scrolled back" not in info(app, RequestsPane))

    run(SIZE, db_path, test)


def test_rows_of_a_gone_worker_are_lost_not_ticking(db_path):
    execute(db_path, "UPDATE workers SET last_seen = ?", time.time() - 60)

    async def test(app: ConsoleApp, pilot: Any) -> None:
        t = table(app, RequestsPane)
        await until(pilot, lambda: t.row_count == 30)
        row = t.get_row("req-0029")
        assert row[8].plain.strip() == "lost" and row[5].plain.strip() == "?"
        assert keys_of(t)[0] == "req-0029"  # still the newest; just not in flight
        assert "0 in flight" in info(app, RequestsPane)
        await pilot.pause(0.5)
        assert t.get_row("req-0029")[8].plain.strip() == "lost"
        assert "down" in str(app.query_one("#status").render())
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TextScreen))
        assert "lost: its worker stopped" in screen_text(app)

    run(SIZE, db_path, test)


def test_a_pid_reused_by_a_new_worker_does_not_revive_old_rows(db_path):
    execute(db_path, "UPDATE workers SET started_at = ?", time.time())  # 4242 restarted just now
    execute(db_path, "UPDATE requests SET started_at = ? WHERE id = 'req-0029'", time.time() - 30)

    async def test(app: ConsoleApp, pilot: Any) -> None:
        t = table(app, RequestsPane)
        await until(pilot, lambda: t.row_count == 30)
        assert t.get_row("req-0029")[8].plain.strip() == "lost"

    run(SIZE, db_path, test)


def test_the_header_says_stopping_while_the_proxy_drains(db_path):
    execute(db_path, "UPDATE workers SET state = 'stopping'")

    async def test(app: ConsoleApp, pilot: Any) -> None:
        await until(pilot, lambda: app.status is not None)
        status = str(app.query_one("#status").render())
        assert "stopping" in status and " up" not in status
        t = table(app, RequestsPane)
        await until(pilot, lambda: t.row_count == 30)
        assert t.get_row("req-0029")[5].plain.strip() == "…"  # still served while it drains

    run(SIZE, db_path, test)


def test_enter_on_an_event_opens_its_request(db_path):
    async def test(app: ConsoleApp, pilot: Any) -> None:
        await pilot.press("2")
        t = table(app, LogsPane)
        await until(pilot, lambda: t.row_count == 8)
        index = next(i for i in range(t.row_count) if t.get_row_at(i)[4].plain.strip())
        assert t.get_row_at(index)[4].plain.strip() == "req-0025"[:8]
        t.move_cursor(row=index)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TextScreen))
        assert app.screen.title_text == "Request req-0025"
        assert "the model is overloaded" in screen_text(app)

    run(SIZE, db_path, test)
