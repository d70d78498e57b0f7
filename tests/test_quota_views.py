"""What the operator sees of each key's quotas: keys list, the console, /metrics."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conftest import written

from console.app import ConsoleApp
from console.modals import ConfirmScreen
from console.panes import KeysPane, StatsPane
from console.panes.keys import PAGE
from console.panes.stats import budget_text
from proxy.store import add_key, migrate, open_db
from proxy.store.keys import merge_env_keys
from proxy.store.rollup import Rollup
from proxy.store.util import pacific_day
from proxy.store.views import keys_overview, quota_budget

PRO, FLASH = "gemini-2.5-pro", "gemini-2.5-flash"


@pytest.fixture
def quota_db(tmp_path) -> Path:
    """Three keys: a learned pro limit of 100/day (12 used, 3 this minute), flash with no
    quota on the second key, and nothing known about the third."""
    path = tmp_path / "q.db"
    db = open_db(path)
    migrate(db)
    a, b, c = (add_key(db, f"fake-key-000{x}") for x in "abc")
    db.close()
    now = time.time()
    day = pacific_day(now)
    written(path, ("limit_learned", a, PRO, "rpd", 100, now), ("limit_learned", a, PRO, "rpm", 5, now),
            ("limit_learned", b, FLASH, "rpm", 0, now), ("limit_learned", b, PRO, "rpd", 100, now),
            *[("usage", "w1", day, now - 600, a, PRO, 0, 1, 10, 2) for _ in range(9)],
            *[("usage", "w2", day, now, a, PRO, 0, 1, 10, 2) for _ in range(3)],
            ("usage", "w1", day, now, b, PRO, 0, 1, 0, 0), ("usage", "w1", day, now, c, FLASH, 0, 4, 0, 0))
    return path


def test_keys_overview_has_each_model_s_quota(quota_db):
    db = open_db(quota_db, readonly=True)
    keys = {k["id"]: k for k in keys_overview(db, Rollup(), now=time.time())}
    pro = next(q for q in keys[1]["quotas"] if q["model"] == PRO)
    assert (pro["today"], pro["rpd"], pro["minute"], pro["rpm"], pro["tokens_minute"]) == (12, 100, 3, 5, 30)
    assert pro["sources"] == {"rpd": "learned", "rpm": "learned"} and not pro["no_quota"]
    assert (keys[1]["day_used"], keys[1]["day_limit"], keys[1]["day_model"]) == (12, 100, PRO)
    assert keys[2]["no_quota"] == [FLASH] and keys[3]["no_quota"] == []
    assert [(q["model"], q["today"], q["rpd"]) for q in keys[3]["quotas"]] == [(FLASH, 4, None)]


def test_budget_per_model_across_usable_keys(quota_db):
    db = open_db(quota_db, readonly=True)
    budget = {m["model"]: m for m in quota_budget(db, now=time.time())}
    assert budget[PRO] == {"model": PRO, "keys": 2, "limit": 200, "used": 13, "left": 187, "unknown": 0,
                           "no_quota": 0}
    assert budget[FLASH]["no_quota"] == 1 and budget[FLASH]["unknown"] == 1
    line = budget_text(list(budget.values())).plain
    assert "gemini-2.5-pro: 187 of 200 left across 2 keys" in line
    assert "gemini-2.5-flash: (1 limit unknown, 1 no quota)" in line


def test_keys_list_shows_today_against_the_daily_limit_and_no_quota(quota_db, capsys):
    from test_admin_cli import build_parser

    def run(*argv):
        args = build_parser().parse_args([*argv, "--db", str(quota_db)])
        code = args.func(args)
        return code, capsys.readouterr().out

    _, out = run("keys", "list")
    header, first, second, third = out.splitlines()
    assert "TODAY/DAY" in header
    assert "12/100" in first.split() and "3/5" in first.split()  # rpm: tries this minute / learned
    assert "no-quota" not in second.split() and "1/100" in second.split()
    assert third.split()[5] == "-"
    _, out = run("keys", "list", "--quotas")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "KEY", "MODEL", "TODAY/DAY", "MINUTE/RPM", "TOKENS/TPM", "LEARNED"]
    assert "1 fake…000a gemini-2.5-pro 12/100 3/5 30 rpm, rpd" == " ".join(lines[1].split())
    assert any(line.split()[2:5] == [FLASH, "no", "quota"] for line in lines)
    _, out = run("keys", "cap", "3", "--rpd", "250", "--model", FLASH)
    assert out == f"key 3 fake…000c limited to 250 requests/day for {FLASH}\n"
    _, out = run("keys", "list", "--state", "usable", "--offset", "2", "--limit", "1")
    assert out.splitlines()[1].split()[:2] == ["3", "fake…000c"] and "4/250" in out.split()
    _, out = run("keys", "limits", "1")
    assert "gemini-2.5-pro" in out and "learned" in out and "requests/day" in out
    _, out = run("keys", "limits", "2", "--forget")
    assert out == "key 2 fake…000b: 2 learned limit(s) forgotten\n"
    _, out = run("keys", "list", "--quotas")
    assert not any("no quota" in line for line in out.splitlines())
    code = build_parser().parse_args(["keys", "cap", "1", "--db", str(quota_db)])
    assert code.func(code) == 2  # which limit? none given


def console(path: Path, test) -> None:
    async def go():
        app = ConsoleApp(path, refresh=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            await test(app, pilot)
    asyncio.run(go())


async def until(pilot, cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def test_console_keys_pane_shows_quotas_and_forgets_learned_ones(quota_db):
    async def test(app, pilot):
        await pilot.press("3")
        pane = app.query_one(KeysPane)
        t = pane.table
        await until(pilot, lambda: t.row_count == 3)
        cells = lambda key: [c.plain.strip() for c in t.get_row(key)]  # noqa: E731
        assert cells("1")[6:8] == ["3/5", "12/100"]
        assert cells("2")[7] == "1/100"
        assert t.virtual_size.width <= t.size.width  # still fits 80 columns
        detail = str(app.query_one("#key-detail").render())
        assert "quota: 2.5-pro day 12/100 min 3/5 tok 30" in detail
        await pilot.press("down")
        await until(pilot, lambda: "2.5-flash no quota" in str(app.query_one("#key-detail").render()))
        await pilot.press("L")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: "no quota" not in str(app.query_one("#key-detail").render())
                    and cells("2")[7] == "—")
        await pilot.press("4")  # key 2 forgot its pro limit too: one key's budget is known
        await until(pilot, lambda: "88 of 100 left across 1 key (1 limit unknown)"
                    in str(app.query_one(StatsPane).query_one("#budget").render()))
    console(quota_db, test)


def test_console_pages_a_big_pool(tmp_path):
    path = tmp_path / "big.db"
    db = open_db(path)
    migrate(db)
    merge_env_keys(db, [f"fake-key-{i:06d}" for i in range(PAGE * 2 + 50)], [])
    db.close()

    async def test(app, pilot):
        await pilot.press("3")
        pane = app.query_one(KeysPane)
        await until(pilot, lambda: pane.table.row_count == PAGE)
        assert pane.table.keys_in_order()[0] == "1"
        await pilot.press("right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: pane.table.row_count == 50)
        assert pane.table.keys_in_order()[0] == str(PAGE * 2 + 1)
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: pane.table.keys_in_order()[0] == str(PAGE + 1))
        # the filter looks at every key, not only the page shown
        pane.apply_filter("fake…0003")
        await until(pilot, lambda: pane.table.row_count == 1 and pane.table.keys_in_order() == ["4"])
        assert pane.matched == 1 and pane.page == 0
    console(path, test)
