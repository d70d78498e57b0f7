"""Parse the `/` filter line: `model:gemini-2.5-flash status:5xx user:alice key:…x7Qc host:web1 text`.

Words of the form `name:value` set a field (comma-separated values mean any of them); the
other words, joined, are free text. Quotes keep spaces inside one word. The result becomes
a store filter that is applied in SQL.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from proxy.store.views import LEVELS, EventFilter, RequestFilter, StatusRange

FIELDS = {
    "model": "model", "m": "model",
    "key": "key", "k": "key",
    "user": "user", "u": "user",
    "status": "status", "s": "status", "code": "status",
    "level": "level", "l": "level", "lvl": "level",
    "host": "host", "h": "host",
}
IN_FLIGHT_WORDS = {"inflight", "in-flight", "live", "pending", "flying", "running"}
REFUSED_WORDS = {"refused", "refusal", "refusals", "denied", "rejected"}
_CLASS = re.compile(r"([1-5])xx")
_RANGE = re.compile(r"(\d{3})-(\d{3})")
_LEVEL_ALIASES = {"warn": "warning", "err": "error", "crit": "critical", "fatal": "critical"}

REQUEST_HINT = "model:… key:… user:… host:… status:4xx|429|ok|err|live|refused  text"
EVENT_HINT = "level:warning status:429|5xx host:…  text"
TEXT_HINT = "words any column shows (all of them, any case)"
# The console shows model names without this prefix; a filter may use either form.
MODEL_PREFIX = "gemini-"


@dataclass
class ParsedFilter:
    """What one filter line asks for, before it becomes a store filter."""

    models: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    statuses: list[StatusRange] = field(default_factory=list)
    in_flight: bool = False
    refused: bool = False
    levels: list[str] = field(default_factory=list)
    text: str = ""
    problems: list[str] = field(default_factory=list)

    def requests(self) -> RequestFilter:
        """Return the filter for the request listing."""
        models: list[str] = []
        for name in self.models:
            for form in (name, name if name.startswith(MODEL_PREFIX) else MODEL_PREFIX + name):
                if form not in models:
                    models.append(form)
        # Refused requests carry an error status and no upstream attempt.
        statuses = tuple(self.statuses) or (((400, 599),) if self.refused else ())
        return RequestFilter(
            models=tuple(models), keys=tuple(self.keys), users=tuple(self.users),
            statuses=statuses, in_flight=self.in_flight, text=self.text, refused=self.refused,
            hosts=tuple(self.hosts),
        )

    def events(self) -> EventFilter:
        """Return the filter for the event log."""
        return EventFilter(levels=tuple(self.levels), statuses=tuple(self.statuses), text=self.text,
                           hosts=tuple(self.hosts))


def parse(line: str) -> ParsedFilter:
    """Parse a filter line; values that make no sense are listed in `problems`, not raised."""
    out = ParsedFilter()
    try:
        words = shlex.split(line)
    except ValueError:  # an unbalanced quote: take the words as they are
        words = line.split()
    text: list[str] = []
    for word in words:
        name, sep, value = word.partition(":")
        kind = FIELDS.get(name.lower()) if sep else None
        if kind is None or not value:
            text.append(word)
            continue
        for item in (v.strip() for v in value.split(",")):
            if item:
                _add(out, kind, item)
    out.text = " ".join(text)
    return out


def _add(out: ParsedFilter, kind: str, item: str) -> None:
    if kind == "model":
        out.models.append(item.removeprefix("models/").lower())
    elif kind == "key":
        out.keys.append(item)
    elif kind == "user":
        out.users.append(item)
    elif kind == "host":
        out.hosts.append(item)
    elif kind == "level":
        level = _LEVEL_ALIASES.get(item.lower(), item.lower())
        if level not in LEVELS:
            out.problems.append(f"unknown level {item!r} (debug, info, warning, error)")
            return
        # A level means "this and worse", as in every log viewer.
        out.levels.extend(lv for lv in LEVELS[LEVELS.index(level):] if lv not in out.levels)
    elif kind == "status":
        status = status_ranges(item)
        if status is None:
            out.problems.append(f"unknown status {item!r} (e.g. 429, 4xx, 500-599, ok, err, live)")
        elif status == "in_flight":
            out.in_flight = True
        elif status == "refused":
            out.refused = True
        else:
            out.statuses.extend(status)


def status_ranges(item: str) -> list[StatusRange] | str | None:
    """Return the status ranges a word means, "in_flight", or None when it means nothing."""
    word = item.lower()
    if word in IN_FLIGHT_WORDS:
        return "in_flight"
    if word in REFUSED_WORDS:
        return "refused"
    if word in ("ok", "good", "success"):
        return [(100, 399)]
    if word in ("err", "error", "errors", "fail", "failed", "bad"):
        return [(400, 599)]
    if word.isdigit() and len(word) == 3:
        return [(int(word), int(word))]
    m = _CLASS.fullmatch(word)
    if m:
        base = int(m.group(1)) * 100
        return [(base, base + 99)]
    m = _RANGE.fullmatch(word)
    if m and int(m.group(1)) <= int(m.group(2)):
        return [(int(m.group(1)), int(m.group(2)))]
    return None


def describe(line: str) -> str:
    """Return a filter line normalised for display (empty when there is no filter)."""
    return " ".join(line.split())
