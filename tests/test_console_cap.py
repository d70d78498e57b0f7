"""The Keys pane's cap dialog: every operator limit (rpm, rpd, tpm), for every model or one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_console_app import SIZE, cells, db_keys, recorder, run, table, until
from test_console_seed import seed_db
from textual.widgets import Input

from console.app import ConsoleApp
from console.modals import CapScreen
from console.panes import KeysPane
from proxy.store import open_db
from proxy.store.limits import set_limit

BETA = 2  # the second key of the seeded database


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "console.db"
    seed_db(path)
    return path


def operator_limits(path: Path, key_id: int = BETA) -> dict[tuple[str, str], int]:
    """Return the operator's key_limits rows of a key as {(model, kind): value}."""
    db = open_db(path)
    try:
        rows = db.conn.execute("SELECT model, kind, value FROM key_limits WHERE key_id = ? AND source = 'operator'",
                               (key_id,)).fetchall()
    finally:
        db.close()
    return {(model, kind): value for model, kind, value in rows}


def limit_events(path: Path, key_id: int = BETA) -> list[str]:
    """Return the messages of a key's events about limits and caps, oldest first."""
    db = open_db(path)
    try:
        rows = db.conn.execute("SELECT message FROM events WHERE key_id = ? AND (message LIKE '%limit%' "
                               "OR message LIKE '%capped%') ORDER BY id", (key_id,)).fetchall()
    finally:
        db.close()
    return [r[0] for r in rows]


def fields(app: ConsoleApp) -> dict[str, str]:
    """Return what the cap dialog's fields hold."""
    screen = app.screen
    assert isinstance(screen, CapScreen)
    return {name: screen.query_one(f"#{name}", Input).value for name in ("model", "rpm", "rpd", "tpm")}


async def open_cap(pilot: Any, app: ConsoleApp, *moves: str) -> CapScreen:
    """Show the Keys pane, put the cursor on a key (`moves` from the first), press c."""
    await pilot.press("3")
    t = table(app, KeysPane)
    await until(pilot, lambda: t.row_count == 3)
    await pilot.press("home", *moves, "c")
    await until(pilot, lambda: isinstance(app.screen, CapScreen))
    await pilot.pause()
    return app.screen  # type: ignore[return-value]


async def fill(pilot: Any, app: ConsoleApp, **values: str) -> None:
    """Put text in the dialog's fields, in the order given, letting each change settle."""
    for name, value in values.items():
        app.screen.query_one(f"#{name}", Input).value = value
        await pilot.pause()


def detail(app: ConsoleApp) -> str:
    return str(app.query_one("#key-detail").render())


def test_rpd_and_tpm_for_every_model_are_set_and_shown_when_reopened(db_path):
    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            said = recorder(app)
            await open_cap(pilot, app, "down")  # beta
            assert fields(app) == {"model": "", "rpm": "", "rpd": "", "tpm": ""}
            assert app.focused is app.screen.query_one("#rpm")  # the common case: type, enter
            await fill(pilot, app, rpd="240", tpm="250000")
            await pilot.press("enter")
            await until(pilot, lambda: len(operator_limits(db_path)) == 2)
            assert operator_limits(db_path) == {("", "rpd"): 240, ("", "tpm"): 250000}
            assert db_keys(db_path)["beta"]["rpm_cap"] is None  # rpm was left alone: not written
            events = limit_events(db_path)
            assert len(events) == 2 and all("for every model by operator" in e for e in events)
            await until(pilot, lambda: any(m.endswith(": done") for m in said))
            assert ("fake…0002 (beta): limited to 240 requests/day per model, limited to 250000 "
                    "input tokens/minute per model: done") in said
            # Reopened, the dialog shows what is set now.
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CapScreen))
            await pilot.pause()
            assert fields(app) == {"model": "", "rpm": "", "rpd": "240", "tpm": "250000"}
            scope = str(app.screen.query_one("#scope").render())
            assert "every model: set rpd 240, tpm 250k" in scope
    run(go)


def test_an_rpm_for_one_model_is_set_then_lifted_by_emptying_it(db_path):
    db = open_db(db_path)
    set_limit(db, str(BETA), "rpm", 9)  # the every-model cap
    set_limit(db, str(BETA), "rpd", 240)
    db.close()

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            said = recorder(app)
            screen = await open_cap(pilot, app, "down")
            assert fields(app) == {"model": "", "rpm": "9", "rpd": "240", "tpm": ""}
            # A field typed in keeps its text when the model changes; the others follow the model.
            await fill(pilot, app, rpm="5", model="models/gemini-2.5-pro")
            assert fields(app) == {"model": "models/gemini-2.5-pro", "rpm": "5", "rpd": "", "tpm": ""}
            assert screen.query_one("#rpd", Input).placeholder == "240, every model"
            await pilot.press("enter")
            await until(pilot, lambda: ("gemini-2.5-pro", "rpm") in operator_limits(db_path))
            assert operator_limits(db_path) == {("", "rpd"): 240, ("gemini-2.5-pro", "rpm"): 5}
            assert db_keys(db_path)["beta"]["rpm_cap"] == 9  # the every-model cap stays
            assert limit_events(db_path)[-1].endswith("limited to 5 requests/minute for gemini-2.5-pro by operator")
            await until(pilot, lambda: any(m.endswith(": done") for m in said))
            assert "fake…0002 (beta): limited to 5 requests/minute for gemini-2.5-pro: done" in said
            # The pane paces by it: the model's own rpm wins over the every-model cap.
            await until(pilot, lambda: "2.5-pro day 0/240 min 0/5" in detail(app))
            assert cells(table(app, KeysPane), str(BETA))[6] == "0/5"

            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CapScreen))
            await pilot.pause()
            await fill(pilot, app, model="gemini-2.5-pro")
            assert fields(app) == {"model": "gemini-2.5-pro", "rpm": "5", "rpd": "", "tpm": ""}
            await fill(pilot, app, rpm="")  # empty lifts it
            await pilot.press("enter")
            await until(pilot, lambda: ("gemini-2.5-pro", "rpm") not in operator_limits(db_path))
            assert operator_limits(db_path) == {("", "rpd"): 240}
            assert db_keys(db_path)["beta"]["rpm_cap"] == 9
            assert limit_events(db_path)[-1].endswith(
                "requests/minute limit lifted for gemini-2.5-pro by operator")
            await until(pilot, lambda: any("limit lifted" in m for m in said))
            assert "fake…0002 (beta): requests/minute limit lifted for gemini-2.5-pro: done" in said
            await until(pilot, lambda: cells(table(app, KeysPane), str(BETA))[6] == "0/9")
    run(go)


def test_esc_writes_nothing_and_enter_without_a_change_writes_nothing(db_path):
    db = open_db(db_path)
    set_limit(db, str(BETA), "rpm", 9)
    db.close()
    before = limit_events(db_path)

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            said = recorder(app)
            await open_cap(pilot, app, "down")
            await fill(pilot, app, rpm="", rpd="100", tpm="5000")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, CapScreen))
            await app.workers.wait_for_complete()
            # Reopened: the saved values, not the ones typed before esc.
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CapScreen))
            await pilot.pause()
            assert fields(app) == {"model": "", "rpm": "9", "rpd": "", "tpm": ""}
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, CapScreen))
            await app.workers.wait_for_complete()
            assert "fake…0002 (beta): no limit changed" in said
            assert not any(m.endswith(": done") for m in said)
        assert operator_limits(db_path) == {}
        assert db_keys(db_path)["beta"]["rpm_cap"] == 9
        assert limit_events(db_path) == before
    run(go)


def test_the_dialog_fits_80_by_24(db_path):
    db = open_db(db_path)
    for kind, value in (("rpm", 9), ("rpd", 240)):
        set_limit(db, str(BETA), kind, value)
    set_limit(db, str(BETA), "tpm", 250000, "gemini-2.5-flash")
    db.close()

    async def go():
        app = ConsoleApp(db_path, refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_cap(pilot, app, "down")
            await fill(pilot, app, model="gemini-2.5-flash")
            dialog = screen.query_one(".dialog")
            region = dialog.region
            assert region.width <= 80 and region.height <= 24
            for widget in screen.query("Input, Static"):  # nothing cut off below the border
                assert widget.region.bottom <= region.bottom and widget.region.right <= region.right
            assert "every model: rpm 9, rpd 240" in str(screen.query_one("#scope").render())
    run(go)
