"""Dialogs: confirm, add a key, set a key's limits, add a user, set a user's limits, show a secret, show text."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

from proxy.store.util import valid_google_key

from .fmt import count
from .reads import KeyLimits

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


@dataclass(frozen=True)
class CapChange:
    """What the cap dialog asks for: new operator limits of one key for `model` ("" every model)."""

    model: str
    changes: dict[str, int]  # kind (rpm, rpd, tpm) → new value, 0 lifts it; only those changed


# The limit fields, in KINDS order, with the short label each has above its box.
CAP_FIELDS = {"rpm": "requests/min", "rpd": "requests/day", "tpm": "input tokens/min"}


def cap_scope(model: str) -> str:
    """Return the model a cap dialog's model field names, as the store keys it ("" every model)."""
    return model.strip().removeprefix("models/")


class CapScreen(ModalScreen[CapChange | None]):
    """Edit a key's operator limits (rpm, rpd, tpm) for every model or one; dismiss with what changed.

    The fields start with what is set for the scope named in the model field, and follow it
    as the model is typed; a field the operator has typed in keeps its text.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    AUTO_FOCUS = "#rpm"  # the every-model RPM cap is the common case: type a number, enter

    def __init__(self, name: str, limits: KeyLimits, models: Iterable[str] = ()) -> None:
        super().__init__()
        self.key_name, self.limits = name, limits
        self.models = sorted({*models, *limits.operator, *limits.learned} - {""})
        self.shown: dict[str, str] = {}  # what each field was last filled with
        self.edited: set[str] = set()  # fields the operator typed in

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog cap"):
            yield Static(Text(f"Limits of {self.key_name}", style="bold"))
            yield Static(Text(
                "Across all workers: the pool paces the key below these instead of collecting "
                "429s. A model's own limit wins over the every-model one, and both over what "
                "was learned from Google's 429s. Every model: each counts on its own. A day "
                "starts at midnight Pacific. Empty or 0: no limit.",
                style="dim"))
            with Horizontal(classes="cap-model"):
                yield Static("model", classes="cap-label")
                yield Input(placeholder="empty: every model", id="model", restrict=r"\S*", max_length=200,
                            suggester=SuggestFromList(self.models) if self.models else None)
            with Horizontal(classes="cap-limits"):
                for kind, label in CAP_FIELDS.items():
                    with Vertical(classes="cap-limit"):
                        yield Static(label, classes="cap-label")
                        yield Input(id=kind, restrict=r"[0-9]*", max_length=10)
            yield Static("", id="scope")
            yield Static(Text.from_markup("[b]enter[/b] save   [b]tab[/b] next field   [b]esc[/b] cancel"),
                         classes="dialog-keys")

    def on_mount(self) -> None:
        self._fill("")

    def _fill(self, model: str) -> None:
        """Show what is set for `model` in the fields the operator has not typed in, and say so."""
        held = self.limits.operator.get(model, {})
        every = self.limits.operator.get("", {}) if model else {}
        learned = self.limits.learned.get(model, {}) if model else {}
        for kind in CAP_FIELDS:
            self.shown[kind] = str(held.get(kind) or "")
            field = self.query_one(f"#{kind}", Input)
            # Empty, a model's field falls back to the every-model limit, then the learned one.
            field.placeholder = (f"{count(every[kind])}, every model" if every.get(kind) else
                                 f"{count(learned[kind])}, learned" if learned.get(kind) else "no limit")
            if kind not in self.edited:
                field.value = self.shown[kind]
        self.query_one("#scope", Static).update(scope_text(self.limits, model))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        name = event.input.id or ""
        if name == "model":
            self._fill(cap_scope(event.value))
        elif name in CAP_FIELDS:
            # A fill's own change arrives later with the value just shown: not the operator's.
            if event.value != self.shown.get(name):
                self.edited.add(name)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        model = cap_scope(self.query_one("#model", Input).value)
        held = self.limits.operator.get(model, {})
        wanted = {kind: int(self.query_one(f"#{kind}", Input).value.strip() or "0") for kind in CAP_FIELDS}
        self.dismiss(CapChange(model, {kind: value for kind, value in wanted.items()
                                       if value != held.get(kind, 0)}))

    def action_cancel(self) -> None:
        self.dismiss(None)


def scope_text(limits: KeyLimits, model: str) -> Text:
    """Return the line under the cap fields: what is set for this scope, and what else applies."""
    out = Text(no_wrap=False)
    held = limits.operator.get(model, {})
    out.append(f"{model or 'every model'}: ", style="bold")
    out.append("set " + _kinds(held) if held else "nothing set", style="" if held else "dim")
    every = limits.operator.get("", {})
    if model and every:
        out.append(" · every model: " + _kinds(every), style="dim")
    learned = limits.learned.get(model, {}) if model else {}
    if learned:
        out.append(" · learned: " + _kinds(learned), style="dim")
    others = [m for m in sorted(limits.operator) if m not in (model, "")]
    if others:
        out.append(" · also set for " + ", ".join(others), style="dim")
    return out


def _kinds(values: dict[str, int]) -> str:
    """Return `rpm 10, rpd 240` (0 as `no quota`: a learned limit of 0 is a tier without one)."""
    return ", ".join(f"{kind} {count(values[kind]) if values[kind] else 'no quota'}"
                     for kind in CAP_FIELDS if kind in values)


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
