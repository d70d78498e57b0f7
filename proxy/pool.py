"""KeyPool: the in-memory view of Google keys, user keys and pins; choose(model), report(outcome).

Everything here runs on the request path and never touches SQLite. A background OS
thread (`Refresher`) reads the database about once a second and hands a snapshot over;
the snapshot is applied by whichever request comes next, so all mutation happens on one
side (the gevent hub) and needs no locks.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from proxy import realthread
from proxy.outcomes import Kind, Outcome
from proxy.exchange import current_request_id
from proxy.redact import redact
from proxy.store.util import next_pacific_midnight

log = logging.getLogger("proxy.pool")

WINDOW_MINUTES = 10
# Optimistic prior: a key nobody has tried yet scores like a perfect one, so new and
# re-enabled keys get traffic at once instead of being starved by proven keys.
PRIOR_OK = 3.0
# How long a locally seen death or cooldown outranks a database view that does not show
# it yet (the writer persists within a fraction of a second).
LOCAL_GRACE = 10.0


@dataclass
class KeyState:
    """One Google key as the pool sees it."""

    id: int
    value: str
    masked: str
    label: str | None = None
    status: str = "active"
    invalid_reason: str | None = None
    updated_at: float = 0.0
    rpm_cap: int | None = None
    inflight: int = 0
    dead_at: float | None = None  # local death not yet visible in the database view
    # per-minute [minute, ok, failed] buckets of this worker's recent attempts
    window: deque = field(default_factory=lambda: deque(maxlen=WINDOW_MINUTES))
    recent: dict[str, deque] = field(default_factory=dict)  # model → send times (RPM cap)

    @property
    def usable(self) -> bool:
        return self.status == "active" and self.invalid_reason is None

    def success_score(self) -> float:
        ok = failed = 0
        for _, o, f in self.window:
            ok += o
            failed += f
        return (ok + PRIOR_OK) / (ok + failed + PRIOR_OK)

    def count(self, ok: bool, now: float) -> None:
        minute = int(now // 60)
        if not self.window or self.window[-1][0] != minute:
            self.window.append([minute, 0, 0])
        self.window[-1][1 if ok else 2] += 1

    def under_cap(self, model: str, now: float, others: list[float]) -> bool:
        """Whether one more request to `model` stays within this key's RPM cap.

        `others` are the last minute's sends of the other workers (from the database).
        """
        if not self.rpm_cap:
            return True
        sent = self.recent.get(model)
        while sent and sent[0] <= now - 60:
            sent.popleft()
        return (len(sent) if sent else 0) + _in_window(others, now) < self.rpm_cap

    def next_slot(self, model: str, now: float, others: list[float]) -> float:
        """Return when the oldest send in the window leaves it."""
        times = [t for t in (*(self.recent.get(model) or ()), *others) if t > now - 60]
        return min(times) + 60 if times else now

    def mark_sent(self, model: str, now: float) -> None:
        if self.rpm_cap:
            self.recent.setdefault(model, deque()).append(now)


def _in_window(times: list[float], now: float) -> int:
    return sum(1 for t in times if t > now - 60)


@dataclass(frozen=True)
class User:
    """A user key holder, as authenticated."""

    id: int
    label: str
    key_hash: bytes
    rpm_limit: int | None = None
    tpd_limit: int | None = None
    allowed_models: tuple[str, ...] = ()

    def may_use(self, model: str) -> bool:
        """Whether this key's allow-list lets it reach `model` (no list: any model)."""
        return not self.allowed_models or model in self.allowed_models


@dataclass
class Cooling:
    """No key can serve the model now; one returns in `retry_after` seconds."""

    retry_after: float
    reason: str


@dataclass
class Refusal:
    """The user key may not make this request now (a limit of its own, not the pool's)."""

    status: int
    message: str
    retry_after: float | None = None
    spent: bool = False  # a quota for the day is used up (not a per-minute limit)


@dataclass
class NoKeys:
    """No usable key at all (none configured, or all disabled or dead)."""

    reason: str


Choice = KeyState | Cooling | NoKeys


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class KeyPool:
    """In-memory pool of keys for one worker process."""

    def __init__(self, writer: Any = None, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.keys: dict[int, KeyState] = {}
        self.cool: dict[tuple[int, str], tuple[float, str, float]] = {}  # → (until, reason, set_at)
        self.users: list[User] = []
        self.pins: dict[str, int] = {}
        self.pins_seq = 0
        # Other workers' recent sends and today's tokens, for caps and user limits.
        self.remote_sends: dict[tuple[int, str], list[float]] = {}
        self.remote_user_sends: dict[int, list[float]] = {}
        self.tokens_today: dict[int, int] = {}
        self.local_user_sends: dict[int, deque] = {}
        self.local_tokens: dict[int, int] = {}
        self._pending: dict[str, Any] | None = None
        self._rng = rng or random.Random()
        self._clock = clock

    # ---- snapshot from the database -------------------------------------------------
    def offer(self, view: dict[str, Any]) -> None:
        """Hand over a fresh database view (from any thread); applied on the next use."""
        self._pending = view

    def sync(self) -> None:
        """Apply a pending database view, if any (cheap no-op otherwise)."""
        view, self._pending = self._pending, None
        if view is not None:
            self.apply(view)

    def apply(self, view: dict[str, Any]) -> None:
        """Merge a database view with what this worker has seen locally."""
        now = self._clock()
        old = self.keys
        keys: dict[int, KeyState] = {}
        for row in view.get("keys", []):
            k = KeyState(id=row["id"], value=row["value"], masked=row["masked"],
                         label=row.get("label"), status=row["status"],
                         invalid_reason=row.get("invalid_reason"),
                         updated_at=row.get("updated_at") or 0.0, rpm_cap=row.get("rpm_cap"))
            prev = old.get(k.id)
            if prev is not None:
                k.inflight, k.recent = prev.inflight, prev.recent
                # An operator action (enable, reset) gives the key a fresh score.
                if k.updated_at <= prev.updated_at:
                    k.window = prev.window
                # A death seen here but not yet in the view stays, unless the operator
                # acted on the key after it (re-enable, reset).
                if (prev.dead_at and k.invalid_reason is None and k.updated_at < prev.dead_at
                        and now - prev.dead_at < LOCAL_GRACE):
                    k.invalid_reason, k.dead_at = prev.invalid_reason, prev.dead_at
            keys[k.id] = k
        cool: dict[tuple[int, str], tuple[float, str, float]] = {}
        for row in view.get("health", []):
            if row["cool_until"] > now:
                cool[(row["key_id"], row["model"])] = (row["cool_until"], row.get("reason") or "",
                                                       0.0)
        for ident, (until, reason, set_at) in self.cool.items():
            k = keys.get(ident[0])
            if until > now and k is not None and k.updated_at < set_at:
                if ident not in cool or cool[ident][0] < until:
                    cool[ident] = (until, reason, set_at)
        users = []
        for row in view.get("users", []):
            models = tuple(m for m in (row.get("allowed_models") or "").split("|") if m)
            users.append(User(row["id"], row["label"], bytes.fromhex(row["key_hash"]),
                              row.get("rpm_limit"), row.get("tpd_limit"), models))
        for row in view.get("pins", []):
            self.pins[row["name"]] = row["key_id"]
            self.pins_seq = max(self.pins_seq, row["seq"])
        if "usage_at" in view:
            self._apply_usage(view)
        self.keys, self.cool, self.users = keys, cool, users

    def _apply_usage(self, view: dict[str, Any]) -> None:
        sends: dict[tuple[int, str], list[float]] = {}
        for row in view.get("key_sends", []):
            sends.setdefault((row["key_id"], row["model"] or ""), []).append(row["started_at"])
        users: dict[int, list[float]] = {}
        for row in view.get("user_sends", []):
            users.setdefault(row["user_id"], []).append(row["started_at"])
        self.remote_sends, self.remote_user_sends = sends, users
        self.tokens_today = {row["user_id"]: int(row["tokens"] or 0)
                             for row in view.get("user_tokens", [])}
        self.local_tokens = {}  # the database now holds what this worker had counted

    # ---- user limits -------------------------------------------------------------------
    def admit(self, user: User, model: str, also: Iterable[str] = ()) -> Refusal | None:
        """Check the user's own limits for a request to `model`; count it if admitted.

        `also` names any other model the request reaches (one named in its body, say):
        each must be on the user's allow-list too.
        """
        barred = [m for m in (model, *also) if m and not user.may_use(m)]
        if barred:
            return Refusal(403, f"this key may not use {barred[0]}; it may use only: "
                                f"{', '.join(user.allowed_models)}")
        now = self._clock()
        if user.tpd_limit:
            used = self.tokens_today.get(user.id, 0) + self.local_tokens.get(user.id, 0)
            if used >= user.tpd_limit:
                return Refusal(429, f"this key used its {user.tpd_limit} tokens for today "
                                    "(the day ends at midnight Pacific)",
                               next_pacific_midnight(now) - now, spent=True)
        if user.rpm_limit:
            mine = self.local_user_sends.setdefault(user.id, deque())
            while mine and mine[0] <= now - 60:
                mine.popleft()
            others = [t for t in self.remote_user_sends.get(user.id, ()) if t > now - 60]
            if len(mine) + len(others) >= user.rpm_limit:
                oldest = min([*mine, *others])
                return Refusal(429, f"this key is limited to {user.rpm_limit} requests per minute",
                               max(0.5, oldest + 60 - now))
            mine.append(now)
        return None

    def add_tokens(self, user_id: int, tokens: int) -> None:
        """Count tokens a finished request used against the user's daily limit."""
        if tokens:
            self.local_tokens[user_id] = self.local_tokens.get(user_id, 0) + tokens

    # ---- authentication ----------------------------------------------------------------
    def authenticate(self, presented: str | None) -> User | None:
        """Return the user whose key matches, comparing every digest in constant time."""
        self.sync()
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for user in self.users:  # no early exit: the time taken says nothing about a match
            if hmac.compare_digest(digest, user.key_hash):
                found = user
        return found

    def user(self, user_id: int) -> User | None:
        """Return the active user with this id (None once disabled or removed)."""
        self.sync()
        return next((u for u in self.users if u.id == user_id), None)

    # ---- choosing --------------------------------------------------------------------
    def cooling_until(self, key_id: int, model: str, now: float) -> float:
        entry = self.cool.get((key_id, model))
        return entry[0] if entry and entry[0] > now else 0.0

    def choose(self, model: str, exclude: set[int] | frozenset[int] = frozenset(),
               pinned: int | None = None) -> Choice:
        """Pick a key for `model`: weighted by success, spread by in-flight load.

        Power of two choices: sample two usable keys and favour the better. Every worker
        picking "the best key" would herd onto one key; two random candidates spread load
        while still steering away from keys that fail.
        """
        self.sync()
        now = self._clock()
        if pinned is not None:
            k = self.keys.get(pinned)
            if k is None or not k.usable:
                return NoKeys("the key that owns this file or cached content is not usable")
            others = self.remote_sends.get((k.id, model), [])
            wait = max(self.cooling_until(k.id, model, now),
                       0.0 if k.under_cap(model, now, others) else k.next_slot(model, now, others))
            return Cooling(wait - now, "the owning key is resting") if wait > now else k
        candidates = []
        soonest = None
        for k in self.keys.values():
            if not k.usable or k.id in exclude:
                continue
            until = self.cooling_until(k.id, model, now)
            if not until and k.rpm_cap:
                others = self.remote_sends.get((k.id, model), [])
                if not k.under_cap(model, now, others):
                    until = k.next_slot(model, now, others)
            if until:
                soonest = until if soonest is None else min(soonest, until)
                continue
            candidates.append(k)
        if not candidates:
            if soonest is not None:
                return Cooling(soonest - now, f"every key is resting for {model}")
            if exclude:
                return NoKeys("every usable key was tried")
            return NoKeys("no usable Google key: add one with `gemini-proxy keys add`")
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        sa = a.success_score() / (1 + a.inflight)
        sb = b.success_score() / (1 + b.inflight)
        # Weighted, not "the better wins": with two keys a slightly worse one would
        # otherwise never be tried again and could never prove it recovered.
        return a if self._rng.random() * (sa + sb) < sa else b

    # ---- outcomes --------------------------------------------------------------------
    def begin(self, key: KeyState, model: str) -> None:
        """Note that a request to `model` is going out on `key`."""
        key.inflight += 1
        key.mark_sent(model, self._clock())

    def end(self, key: KeyState) -> None:
        key.inflight = max(0, key.inflight - 1)

    def report(self, key: KeyState, model: str, outcome: Outcome) -> None:
        """Record an attempt's outcome: update memory now, queue the persistent part."""
        now = self._clock()
        # Rate limits are handled by cooling, not by the score: a rested key is healthy.
        if outcome.kind in (Kind.OK, Kind.UPSTREAM, Kind.KEY_DEAD):
            key.count(outcome.kind is Kind.OK, now)
        w = self.writer
        reason = outcome.reason
        if reason:  # it quotes Google, who may name a key: masked before it is kept or logged
            reason = redact(reason, [k.value for k in self.keys.values()])
        rid = current_request_id() if w else None  # the Logs pane opens that request
        if outcome.kind is Kind.KEY_DEAD:
            key.invalid_reason, key.dead_at = reason, now
            if w:
                w.key_invalid(key.id, reason, now)
                w.event("warning", f"key {key.masked} retired: {reason}",
                        status=outcome.status, key_id=key.id, model=model, request_id=rid)
            log.warning("key %s retired: %s", key.masked, reason)
        elif outcome.kind in (Kind.RATE_MINUTE, Kind.RATE_DAY) and outcome.cool_until:
            self.cool[(key.id, model)] = (outcome.cool_until, outcome.kind.value, now)
            if w:
                w.key_cooled(key.id, model, outcome.cool_until, outcome.kind.value, reason)
                w.event("info", f"key {key.masked} resting for {model} "
                        f"{outcome.cool_until - now:.0f}s ({outcome.kind.value})",
                        status=outcome.status, key_id=key.id, model=model, request_id=rid)
        elif outcome.kind is Kind.UPSTREAM and w:
            w.event("warning", f"upstream trouble on key {key.masked}: {reason}",
                    status=outcome.status, key_id=key.id, model=model, request_id=rid)
        if w:
            w.key_used(key.id, now, None if outcome.kind is Kind.OK else reason)

    # ---- counts for health and metrics ---------------------------------------------------
    def cooling_pairs(self) -> int:
        """Return how many (key, model) pairs are resting now."""
        now = self._clock()
        return sum(1 for until, _, _ in self.cool.values() if until > now)

    def summary(self) -> dict[str, int]:
        """Return how many keys are usable, cooling (for some model) and dead."""
        self.sync()
        now = self._clock()
        cooling_ids = {kid for (kid, _), (until, _, _) in self.cool.items() if until > now}
        usable = sum(1 for k in self.keys.values() if k.usable)
        return {"usable": usable,
                "cooling": sum(1 for k in self.keys.values() if k.usable and k.id in cooling_ids),
                "dead": sum(1 for k in self.keys.values() if k.invalid_reason),
                "disabled": sum(1 for k in self.keys.values() if k.status == "disabled")}


class Refresher:
    """Read the pool view from the database on a real OS thread, about once a second."""

    def __init__(self, pool: KeyPool, load: Callable[[int], dict[str, Any]], interval: float = 1.0):
        self.pool = pool
        self.load = load
        self.interval = interval
        self._stop = False
        # When (time.monotonic) the read behind the last view offered began: the sync
        # point `await_view` waits on.
        self.read_began = 0.0
        # Held while idle; releasing it wakes the thread early. Sleeping on a lock instead
        # of polling keeps the thread from taking the GIL from requests between ticks.
        self._wake = realthread.lock()
        self._wake.acquire()

    def start(self) -> None:
        realthread.start(self._run)

    def stop(self) -> None:
        self._stop = True
        self.poke()

    def poke(self) -> None:
        """Ask for a refresh now rather than at the next tick."""
        try:
            self._wake.release()
        except RuntimeError:
            pass  # already awake

    def await_view(self, since: float, timeout: float) -> bool:
        """Wait until a view read that began at or after `since` (time.monotonic) is offered.

        Pokes the thread, then polls with `time.sleep`, which yields to other requests under
        gevent. Returns False if `timeout` ran out first (the database is slow or locked).
        """
        deadline = time.monotonic() + timeout
        self.poke()
        while self.read_began < since:
            if self._stop or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        self.pool.sync()
        return True

    def _run(self) -> None:
        while not self._stop:
            began = time.monotonic()
            try:
                self.pool.offer(self.load(self.pool.pins_seq))
                # Set after the offer: whoever sees the new time finds the view pending.
                self.read_began = began
            except Exception:  # keep serving from the last good view
                log.exception("pool refresh failed")
            self._wake.acquire(timeout=self.interval)
