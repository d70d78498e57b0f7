"""Dialogs: confirm, add a key, cap a key, add a user, set limits, show a secret once, show a long text."""
from __future__ import annotations

import re

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from proxy.store.util import valid_google_key

_USER_LABEL = re.compile(r"[^\s|]{1,100}")


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; only `y` says yes, so a stray enter never removes anything."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape,q", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.question), classes="dialog-body")
            yield Static(Text.from_markup(f"[b]y[/b] {self.yes}   [b]n[/b] / [b]esc[/b] cancel"), classes="dialog-keys")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class AddKeyScreen(ModalScreen[tuple[str, str] | None]):
    """Ask for a Google key (typed hidden) and an optional label; dismiss with (value, label)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text("Add a Google key", style="bold"))
            yield Input(placeholder="key (hidden as you type)", password=True, id="value")
            yield Input(placeholder="label (optional)", id="label", max_length=100)
            yield Static("", id="problem", classes="problem")
            yield Static(Text.from_markup("[b]enter[/b] next / add   [b]esc[/b] cancel"), classes="dialog-keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = self.query_one("#value", Input).value.strip()
        if not valid_google_key(value):
            self.query_one("#problem", Static).update(
                "not a Google API key: expected 8-256 of A-Z a-z 0-9 _ . -"
            )
            self.query_one("#value", Input).focus()
            return
        if event.input.id == "value":
            self.query_one("#problem", Static).update("")
            self.query_one("#label", Input).focus()
            return
        self.dismiss((value, self.query_one("#label", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)


class CapScreen(ModalScreen[int | None]):
    """Ask for a key's requests-per-minute cap (per model); dismiss with it, 0 = no cap."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, rpm: int | None) -> None:
        super().__init__()
        self.key_name, self.rpm = name, rpm

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(f"Requests per minute for {self.key_name}", style="bold"))
            yield Static(Text("Per model, across all workers: the pool paces itself below it instead "
                              "of collecting 429s. Use a little less than the key's Google limit. "
                              "Empty or 0: no cap.", style="dim"))
            yield Input(str(self.rpm or ""), placeholder="requests per minute (empty: no cap)", id="rpm",
                        restrict=r"[0-9]*", max_length=7)
            yield Static(Text.from_markup("[b]enter[/b] save   [b]esc[/b] cancel"), classes="dialog-keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(int(event.value.strip() or "0"))

    def action_cancel(self) -> None:
        self.dismiss(None)


class AddUserScreen(ModalScreen[str | None]):
    """Ask for a new user's label; dismiss with it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text("Add a user (a new key is generated and shown once)", style="bold"))
            yield Input(placeholder="label, e.g. alice", id="label", max_length=100)
            yield Static("", id="problem", classes="problem")
            yield Static(Text.from_markup("[b]enter[/b] add   [b]esc[/b] cancel"), classes="dialog-keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        label = event.value.strip()
        if not _USER_LABEL.fullmatch(label) or label.isdigit():
            self.query_one("#problem", Static).update("a label is 1-100 characters, no spaces or '|', not only digits")
            return
        self.dismiss(label)

    def action_cancel(self) -> None:
        self.dismiss(None)


class LimitsScreen(ModalScreen[tuple[int, int, str] | None]):
    """Edit a user's limits; dismiss with (requests/minute, tokens/day, models), 0 = none."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, label: str, rpm: int | None, tpd: int | None, models: str | None) -> None:
        super().__init__()
        self.label, self.rpm, self.tpd, self.models = label, rpm, tpd, models

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(f"Limits of {self.label} (empty or 0: no limit)", style="bold"))
            yield Input(str(self.rpm or ""), placeholder="requests per minute", id="rpm",
                        restrict=r"[0-9]*")
            yield Input(str(self.tpd or ""), placeholder="tokens per day (midnight Pacific)",
                        id="tpd", restrict=r"[0-9]*")
            yield Input((self.models or "").replace("|", ", "), id="models",
                        placeholder="allowed models, comma-separated (empty: all)")
            yield Static("", id="problem", classes="problem")
            yield Static(Text.from_markup("[b]enter[/b] next / save   [b]esc[/b] cancel"),
                         classes="dialog-keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        order = ["rpm", "tpd", "models"]
        if event.input.id != order[-1]:
            self.query_one(f"#{order[order.index(event.input.id or 'rpm') + 1]}", Input).focus()
            return
        rpm = self.query_one("#rpm", Input).value.strip() or "0"
        tpd = self.query_one("#tpd", Input).value.strip() or "0"
        models = self.query_one("#models", Input).value
        self.dismiss((int(rpm), int(tpd), "|".join(m.strip() for m in models.split(",") if m.strip())))

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """Show a long text (details, help, a new secret) in a scrollable box."""

    BINDINGS = [
        Binding("escape,enter,q", "close", "Close"),
        Binding("up,k", "scroll(-1)", "Up", show=False),
        Binding("down,j", "scroll(1)", "Down", show=False),
        Binding("pageup", "scroll(-10)", "Page up", show=False),
        Binding("pagedown,space", "scroll(10)", "Page down", show=False),
    ]

    def __init__(self, title: str, body: RenderableType, *, classes: str = "") -> None:
        super().__init__(classes=classes)
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(self.body, classes="dialog-body")
            yield Static(Text.from_markup("[b]esc[/b] / [b]enter[/b] close   [b]↑↓[/b] scroll"), classes="dialog-keys")

    def action_scroll(self, lines: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=lines, animate=False)

    def action_close(self) -> None:
        self.dismiss(None)
