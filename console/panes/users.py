"""Users: the user keys clients call the proxy with, their usage and limits; add and remove."""
from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.text import Text
from textual.binding import Binding

from proxy.store import add_user, remove_user, set_limits

from ..fmt import count
from ..modals import AddUserScreen, ConfirmScreen, LimitsScreen
from ..table import Cell, Column
from .base import Job, Pane

COLUMNS = [
    Column("label", "user", 12),
    Column("key", "key", 9),
    Column("requests_today", "req/d", 6, right=True),
    Column("tokens_today", "tok/d", 6, right=True),
    Column("requests_7d", "req/7d", 6, right=True),
    Column("tokens_7d", "tok/7d", 6, right=True),
    Column("rpm", "rpm≤", 5, right=True),
    Column("tpd", "tok/d≤", 6, right=True),
    Column("models", "models allowed", 30),
]


def user_cells(u: dict[str, Any]) -> tuple[Cell, ...]:
    """Return the table cells of one user."""
    models = (u["allowed_models"] or "").replace("|", ", ")
    return (
        u["label"],
        u["masked"] or "—",
        count(u["requests_today"]),
        count(u["tokens_today"]),
        count(u["requests_7d"]),
        count(u["tokens_7d"]),
        (count(u["rpm_limit"]) if u["rpm_limit"] else "—", "" if u["rpm_limit"] else "dim"),
        (count(u["tpd_limit"]) if u["tpd_limit"] else "—", "" if u["tpd_limit"] else "dim"),
        (models or "all", "" if models else "dim"),
    )


class UsersPane(Pane):
    """Show user keys (masked); add one (its key is shown once) or remove one."""

    TITLE = "Users"
    TABLE_COLUMNS = COLUMNS
    NOTES = [
        "/d: today since midnight Pacific; /7d: the last 7×24 hours.",
        "Only a hash of each user key is stored: a new key is shown once, when it is made.",
        "Limits apply within about a second, across all workers; over one, a client gets 429.",
    ]
    BINDINGS = [
        Binding("a", "add", "Add", tooltip="add a user (the new key is shown once)"),
        Binding("r", "remove", "Remove", tooltip="remove the user (asks first)"),
        Binding("l", "limits", "Limits", tooltip="set requests/minute, tokens/day, allowed models"),
    ]

    def __init__(self, *, id: str = "users") -> None:
        super().__init__(id=id)
        self.user_rows: list[dict[str, Any]] = []

    def on_mount(self) -> None:
        self.set_info((" reading users…", "dim"))

    def job(self) -> Job | None:
        return lambda reader: reader.users(time.time())

    def show(self, users: list[dict[str, Any]]) -> None:
        self.user_rows = users
        self.table.sync([(str(u["id"]), user_cells(u)) for u in users])
        self.set_info((f" {len(users)}", "bold"), " users", ("   a add · l limits · r remove", "dim"))

    def current(self) -> dict[str, Any] | None:
        key = self.table.cursor_key
        return next((u for u in self.user_rows if str(u["id"]) == key), None)

    def action_add(self) -> None:
        if self.host.refuse("add a user"):
            return

        def named(label: str | None) -> None:
            if label:
                self.host.act(f"add user {label}", add_user, label, done=self._show_new_key)

        self.app.push_screen(AddUserScreen(), named)

    def _show_new_key(self, result: tuple[int, str]) -> None:
        _, key = result
        body = Group(
            Text("Give this key to the client; it is not stored and will not be shown again:\n"),
            Text(key, style="bold reverse"),
            Text("\nClients send it as X-Goog-Api-Key, ?key=, or Authorization: Bearer."),
        )
        self.host.show_text("New user key", body)

    def action_limits(self) -> None:
        u = self.current()
        if u is None:
            self.notify("no user selected", severity="warning")
            return
        if self.host.refuse("set limits"):
            return

        def chosen(limits: tuple[int, int, str] | None) -> None:
            if limits is not None:
                rpm, tpd, models = limits
                self.host.act(f"limits of {u['label']}", set_limits, str(u["id"]), rpm, tpd, models)

        self.app.push_screen(LimitsScreen(u["label"], u["rpm_limit"], u["tpd_limit"],
                                          u["allowed_models"]), chosen)

    def action_remove(self) -> None:
        u = self.current()
        if u is None:
            self.notify("no user selected", severity="warning")
            return
        if self.host.refuse("remove"):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.host.act(f"remove user {u['label']}", remove_user, str(u["id"]))

        self.app.push_screen(ConfirmScreen(
            f"Remove user {u['label']} ({u['masked']})?\n\nTheir key stops working within a second.",
            "remove"), answered)
