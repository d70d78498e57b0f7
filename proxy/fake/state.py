"""Shared, thread-safe state of one fake upstream: key behaviours, quotas, files, caches, log."""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from proxy import realthread

PACIFIC = ZoneInfo("America/Los_Angeles")  # Google's daily quotas reset at midnight here

# Every mode a key (or one step of its sequence) can be in.
MODES = frozenset({"ok", "invalid", "expired", "denied", "suspended", "location", "daily", "tpm",
                   "overload", "error500", "deadline", "hang", "reset"})
# Modes that describe the key itself, so they answer on every keyed route, not only model calls.
DEAD_MODES = frozenset({"invalid", "expired", "denied", "suspended", "location"})
# Modes whose error can also end a stream that already started (`stream_error`).
STREAM_ERROR_MODES = DEAD_MODES | {"overload", "error500", "deadline"}


@dataclass
class Behaviour:
    """How one key answers; see `FakeUpstream.set_key` for the meaning of each knob."""

    mode: str = "ok"
    rpm: int | None = None
    rpm_window_s: float = 60.0
    rpd: int | None = None
    tpm: int | None = None
    retry_delay_s: float | None = None
    daily_limit: int = 250
    fail_times: int | None = None
    sequence: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    chunk_delay_ms: float | None = None
    chunks: int | None = None
    reset_after_chunks: int | None = None
    hang: bool | float = False
    sse_crlf: bool = False
    stream_error: str | None = None
    piece_bytes: int | None = None

    def __post_init__(self) -> None:
        for mode in [self.mode, *self.sequence]:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
        for name in ("rpm", "rpd", "tpm"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.stream_error is not None and self.stream_error not in STREAM_ERROR_MODES:
            raise ValueError(f"unknown stream_error {self.stream_error!r}; "
                             f"expected one of {sorted(STREAM_ERROR_MODES)}")
        if self.piece_bytes is not None and self.piece_bytes < 1:
            raise ValueError("piece_bytes must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Behaviour":
        """Build from keyword options, refusing unknown ones (typos must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown behaviour option(s) {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)

    @property
    def base(self) -> str:
        """Return the misbehaviour `fail_times` counts down (hang beats mode beats reset)."""
        if self.hang:
            return "hang"
        if self.mode != "ok":
            return self.mode
        return "reset" if self.reset_after_chunks is not None else "ok"


class KeyState:
    """A behaviour plus what it has consumed so far."""

    __slots__ = ("behaviour", "sequence", "fail_left")

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.sequence = list(behaviour.sequence)
        self.fail_left = behaviour.fail_times


@dataclass
class Config:
    """Global knobs, overridable per key."""

    latency_ms: float = 0
    chunk_delay_ms: float = 0
    chunks: int = 4
    strict_keys: bool = False
    record: bool = True
    max_recorded: int = 10_000


class State:
    """Everything the fake remembers, behind one OS-level lock.

    The lock is a real one (not a gevent lock): the server runs on its own thread and
    hub while tests call `set_key` from the main thread. Critical sections never wait.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lock = realthread.lock()
        self.keys: dict[str, KeyState] = {}
        self.windows: dict[tuple[str, str], deque[float]] = {}
        self.days: dict[tuple[str, str], tuple[str, int]] = {}  # → (Pacific date, calls)
        self.token_windows: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        self.refused: Counter[tuple[str, str, str]] = Counter()  # (key, model, per) → 429s
        self.recorded: deque[dict[str, Any]] = deque(maxlen=config.max_recorded)
        self.files: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.caches: dict[str, dict[str, Any]] = {}

    # --- behaviours -----------------------------------------------------------------------

    def set_key(self, key: str, behaviour: Behaviour) -> None:
        """Give `key` a behaviour, restarting its counters and quota windows."""
        with self.lock:
            self.keys[key] = KeyState(behaviour)
            for table in (self.windows, self.days, self.token_windows):
                for pair in [p for p in table if p[0] == key]:
                    del table[pair]

    def behaviour(self, key: str) -> Behaviour | None:
        """Return the behaviour set for `key`, if any."""
        state = self.keys.get(key)
        return state.behaviour if state else None

    def take_mode(self, key: str, model_call: bool) -> str:
        """Decide (and consume) how this request misbehaves.

        Sequences and `fail_times` count model calls only; other routes see a key's
        dead mode when it is permanent, so a probe like `GET /models` tells a dead key.
        """
        with self.lock:
            state = self.keys.get(key)
            if state is None:
                return "invalid" if self.config.strict_keys else "ok"
            base = state.behaviour.base
            if not model_call:
                return base if base in DEAD_MODES and state.fail_left is None else "ok"
            if state.sequence:
                return state.sequence.pop(0)
            if base == "ok" or state.fail_left is None:
                return base
            if state.fail_left > 0:
                state.fail_left -= 1
                return base
            return "ok"

    def admit(self, key: str, model: str, behaviour: Behaviour) -> tuple[str, int, float] | None:
        """Count a model call against the key's quotas for `model`, as Google does.

        Requests per minute (a sliding window of `rpm_window_s`) and per day (Pacific
        calendar day): a call within both is counted in both; one over either is counted in
        neither and refused. Return None when admitted, else (per, limit, seconds to wait)
        with per "minute" or "day".
        """
        now = time.monotonic()
        pair = (key, model)
        with self.lock:
            window = self.windows.setdefault(pair, deque()) if behaviour.rpm is not None else None
            if window is not None:
                while window and window[0] <= now - behaviour.rpm_window_s:
                    window.popleft()
                if len(window) >= behaviour.rpm:  # type: ignore[operator]
                    wait = window[0] + behaviour.rpm_window_s - now if window else behaviour.rpm_window_s
                    self.refused[(key, model, "minute")] += 1
                    return "minute", behaviour.rpm, wait  # type: ignore[return-value]
            day = datetime.now(PACIFIC).date().isoformat()
            if behaviour.rpd is not None:
                seen_day, calls = self.days.get(pair, (day, 0))
                calls = calls if seen_day == day else 0
                if calls >= behaviour.rpd:
                    self.refused[(key, model, "day")] += 1
                    return "day", behaviour.rpd, 0.0
                self.days[pair] = (day, calls + 1)
            if window is not None:
                window.append(now)
            return None

    def admit_tokens(self, key: str, model: str, tpm: int, tokens: int) -> float | None:
        """Count a call's input tokens in the (key, model) minute; seconds to wait if over `tpm`.

        A call refused here gives back what `admit` counted for it: Google refused it whole.
        """
        now = time.monotonic()
        pair = (key, model)
        with self.lock:
            window = self.token_windows.setdefault(pair, deque())
            while window and window[0][0] <= now - 60.0:
                window.popleft()
            if sum(n for _, n in window) + tokens > tpm:
                self.refused[(key, model, "tokens")] += 1
                if self.windows.get(pair):
                    self.windows[pair].pop()
                if pair in self.days:
                    day, calls = self.days[pair]
                    self.days[pair] = (day, max(0, calls - 1))
                return window[0][0] + 60.0 - now if window else 60.0
            window.append((now, tokens))
            return None

    def refusals(self) -> dict[tuple[str, str, str], int]:
        """Return how many quota 429s were answered, per (key, model, per)."""
        with self.lock:
            return dict(self.refused)

    # --- recording ------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        """Remember one request (the deque drops the oldest beyond `max_recorded`)."""
        with self.lock:
            self.recorded.append(entry)

    def recorded_requests(self) -> list[dict[str, Any]]:
        """Return a snapshot of the recorded requests, oldest first."""
        with self.lock:
            return list(self.recorded)

    def resize_log(self, max_recorded: int) -> None:
        """Change how many requests are kept."""
        with self.lock:
            self.config.max_recorded = max_recorded
            self.recorded = deque(self.recorded, maxlen=max_recorded)

    def reset(self) -> None:
        """Forget behaviours, quota windows, recorded requests, files, uploads and caches."""
        with self.lock:
            self.keys.clear()
            self.windows.clear()
            self.days.clear()
            self.token_windows.clear()
            self.refused.clear()
            self.recorded.clear()
            self.files.clear()
            self.uploads.clear()
            self.caches.clear()

    # --- files and caches -----------------------------------------------------------------

    def owned(self, table: str, item_id: str, key: str) -> dict[str, Any] | None:
        """Return a file or cache record if it exists, is owned by `key` and has not expired."""
        with self.lock:
            item = getattr(self, table).get(item_id)
        if item is None or item["owner"] != key or item.get("expires", float("inf")) < time.time():
            return None
        return item

    def owned_list(self, table: str, key: str) -> list[dict[str, Any]]:
        """Return the live records of `table` owned by `key`, oldest first."""
        now = time.time()
        with self.lock:
            items = list(getattr(self, table).values())
        return [i for i in items if i["owner"] == key and i.get("expires", float("inf")) >= now]

    def put(self, table: str, item_id: str, item: dict[str, Any], limit: int = 10_000) -> None:
        """Store a record, dropping the oldest ones beyond `limit` to keep memory bounded."""
        with self.lock:
            items = getattr(self, table)
            items[item_id] = item
            while len(items) > limit:
                del items[next(iter(items))]

    def pop(self, table: str, item_id: str) -> dict[str, Any] | None:
        """Remove and return a record."""
        with self.lock:
            return getattr(self, table).pop(item_id, None)
