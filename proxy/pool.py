"""KeyPool: the in-memory view of Google keys, user keys and pins; choose(model), report(outcome).

Everything here runs on the request path and never touches SQLite. A background OS thread
(`Refresher`) reads what changed in the database about once a second and hands it over;
the change is applied on the gevent hub between requests (or, outside gevent, by the next
call that needs the pool), so all mutation happens on one side and needs no locks.

Choosing costs the same for 10 keys or 10,000. Per model, `ModelKeys.avail` holds the keys
that can take a request for it now: usable (active, not dead), not resting, and under every
limit known for the pair. Everything that can take a key out is a condition on that set,
checked when it changes, never by scanning:

- death, disable, removal, enable: the key leaves or joins every model's set;
- a rest (a 429's cooldown, one another worker saw): the pair leaves until it ends;
- a limit (one an operator set, or one Google named in a 429 and the pool learned: requests
  per minute, requests per day, input tokens per minute) that this worker's and the other
  workers' use has reached: the pair leaves until enough of the minute has passed, or
  until midnight Pacific for a day's quota; a learned limit of 0 ("no quota for this
  model") keeps it out until midnight Pacific.

A pair that left goes on its model's heap with the time it may return; each choice for the
model pops the heap's due entries and checks them again (still over a limit: back on the
heap). The two candidates of the power-of-two choice are drawn straight from the set.
"""
from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import os
import random
import secrets
import socket
import time
from bisect import bisect_right, insort
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from proxy import realthread
from proxy.outcomes import QUOTA_KINDS, QUOTA_NAMES, Kind, Outcome
from proxy.exchange import current_request_id
from proxy.redact import redact
from proxy.store.limits import Limit, held_by_pair, in_force
from proxy.store.quota_usage import SLOT, WINDOW, in_window
from proxy.store.util import next_pacific_midnight, pacific_day

log = logging.getLogger("proxy.pool")

WINDOW_MINUTES = 10
# Optimistic prior: a key nobody has tried yet scores like a perfect one, so new and
# re-enabled keys get traffic at once instead of being starved by proven keys.
PRIOR_OK = 3.0
# How long a locally seen death, cooldown or learned limit outranks a database view that
# does not show it yet (the writer persists within a fraction of a second).
LOCAL_GRACE = 10.0
# This worker's own sends count against a per-minute limit this long: a little over
# Google's minute, because our clock starts when we send and Google's when it receives.
PACE_WINDOW = WINDOW + 1.0
# Per-model sets kept at once; the least recently chosen model's is rebuilt when needed.
MAX_MODELS = 32
# Outcome kinds as module constants: an Enum member looked up on its class costs ~80 ns.
_OK = Kind.OK
_SCORED = (Kind.OK, Kind.UPSTREAM, Kind.KEY_DEAD)  # the kinds that count in a key's score
_RATED = (Kind.RATE_MINUTE, Kind.RATE_DAY)
# Sorts after every (time, tokens, ...) entry of the same time: bisect_right(entries, (t, _AFTER))
# finds the first entry later than t.
_AFTER = 1 << 62


def headroom(value: int, source: str) -> int:
    """Return the use at which the pool stops sending: a learned limit keeps a 2% margin.

    The margin absorbs what other workers sent in the last second or so, which this one
    has not read yet. An operator's limit is taken as it is (they chose their margin).
    """
    return value if source == "operator" else value - value // 50


@dataclass(slots=True)
class KeyState:
    """One Google key as the pool sees it (slots: a pool may hold 10,000 of them)."""

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
    # per-minute (minute, ok, failed) buckets of this worker's recent attempts, oldest first
    # (a plain list, empty until the key's first attempt: small for a key never used here)
    window: list = field(default_factory=list)
    # The sums of `window`'s ok and failed, kept as it changes: every choice reads two scores.
    oks: int = 0
    fails: int = 0

    @property
    def usable(self) -> bool:
        return self.status == "active" and self.invalid_reason is None

    def success_score(self) -> float:
        return (self.oks + PRIOR_OK) / (self.oks + self.fails + PRIOR_OK)

    def count(self, ok: bool, now: float) -> None:
        minute = int(now // 60)
        window = self.window
        if window and window[-1][0] == minute:
            _, o, f = window[-1]
            window[-1] = (minute, o + ok, f + (not ok))
        else:
            window.append((minute, int(ok), int(not ok)))
            if len(window) > WINDOW_MINUTES:
                _, o, f = window.pop(0)
                self.oks -= o
                self.fails -= f
        if ok:
            self.oks += 1
        else:
            self.fails += 1

    def forget_score(self) -> None:
        """Start the score afresh (an operator acted on the key)."""
        self.window = []
        self.oks = self.fails = 0


class Usage:
    """One (key, model) pair's or one user's use today: this worker's exactly, the others' as read.

    `sends` and `tokens` are this worker's recent sends and (time, input tokens, running
    total of input tokens), oldest first, so that a minute's count is two binary searches
    however busy the minute was; `remote` the other workers' recent slots
    (store.quota_usage); the day totals are kept apart for this worker and for the others.
    """

    __slots__ = ("day", "sends", "tokens", "tokens_before", "day_sends", "day_tin", "day_tout",
                 "remote", "r_day_sends", "r_day_tin", "r_day_tout")
    pace = PACE_WINDOW  # how long this worker's own sends count

    def __init__(self, day: int) -> None:
        self.day = day
        self.sends: list[float] = []
        self.tokens: list[tuple[float, int, int]] = []
        self.tokens_before = 0  # the running total of the entries trimmed from `tokens`
        self.day_sends = self.day_tin = self.day_tout = 0
        self.remote: tuple[tuple[float, int, int], ...] = ()
        self.r_day_sends = self.r_day_tin = self.r_day_tout = 0

    def roll(self, day: int) -> None:
        """Start a new Pacific day: the day's totals go back to zero."""
        if day != self.day:
            self.day = day
            self.day_sends = self.day_tin = self.day_tout = 0
            self.r_day_sends = self.r_day_tin = self.r_day_tout = 0

    def send(self, now: float) -> None:
        """Count one send of this worker at `now`."""
        sends = self.sends
        if sends and now < sends[-1]:
            insort(sends, now)  # the clock went back: keep time order for the searches
        else:
            sends.append(now)

    def add_tokens(self, now: float, n: int) -> None:
        """Count `n` input tokens this worker sent at `now`."""
        tokens = self.tokens
        if not tokens or now >= tokens[-1][0]:
            tokens.append((now, n, (tokens[-1][2] if tokens else self.tokens_before) + n))
            return
        # The clock went back: keep time order, and the running totals after it.
        i = bisect_right(tokens, (now, _AFTER))
        total = tokens[i - 1][2] if i else self.tokens_before
        tokens.insert(i, (now, n, 0))
        for j in range(i, len(tokens)):
            t, m, _ = tokens[j]
            total += m
            tokens[j] = (t, m, total)

    def _trim(self, now: float) -> None:
        cut = now - PACE_WINDOW
        if self.sends and self.sends[0] <= cut:
            del self.sends[:bisect_right(self.sends, cut)]
        tokens = self.tokens
        if tokens and tokens[0][0] <= cut:
            i = bisect_right(tokens, (cut, _AFTER))
            self.tokens_before = tokens[i - 1][2]
            del tokens[:i]

    def minute(self, now: float, pace: float | None = None) -> tuple[int, int]:
        """Return (sends, input tokens) in the last minute, this worker's and the others'.

        This worker's own count over `pace` seconds (the class's default when None).
        """
        self._trim(now)
        cut = now - (pace or self.pace)
        sends, tokens = in_window(self.remote, now) if self.remote else (0, 0)
        mine = self.sends
        own = len(mine) - bisect_right(mine, cut) if mine and mine[0] <= cut else len(mine)
        toks = self.tokens
        if toks:
            if toks[0][0] > cut:
                tokens += toks[-1][2] - self.tokens_before
            else:
                tokens += toks[-1][2] - toks[bisect_right(toks, (cut, _AFTER)) - 1][2]
        return sends + own, tokens

    def today(self) -> int:
        """Return the sends of the day so far, every worker's."""
        return self.day_sends + self.r_day_sends

    def tokens_today(self) -> int:
        """Return the tokens (in and out) of the day so far, every worker's."""
        return self.day_tin + self.day_tout + self.r_day_tin + self.r_day_tout

    def free_at(self, now: float, cap: int, tokens: bool, pace: float | None = None) -> float:
        """Return when the minute's sends (or input tokens) fall below `cap` again (> now).

        Sends and tokens leave the minute oldest first: walking them in that order stops at
        the one that brings the count below `cap`, usually the first, however busy the minute.
        """
        pace = pace or self.pace
        used = self.minute(now, pace)[1 if tokens else 0]
        cut = now - pace
        if tokens:
            toks = self.tokens
            mine: Iterable[tuple[float, int]] = (
                (toks[i][0] + pace, toks[i][1])
                for i in range(bisect_right(toks, (cut, _AFTER)), len(toks)))
        else:
            sends = self.sends
            mine = ((sends[i] + pace, 1) for i in range(bisect_right(sends, cut), len(sends)))
        theirs = sorted((start + SLOT + WINDOW, t if tokens else s) for start, s, t in self.remote
                        if start + SLOT > now - WINDOW)
        for when, n in heapq.merge(mine, theirs) if theirs else mine:
            used -= n
            if used < cap:
                return max(when, now + 0.001)
        return now + WINDOW


class UserUsage(Usage):
    """A user's use today: their limits are the proxy's own, counted over exactly a minute."""

    __slots__ = ()
    pace = WINDOW


class IdSet:
    """A set of key ids that hands out a random member in O(1) (a list plus positions)."""

    __slots__ = ("items", "index")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self.items: list[int] = list(ids)
        self.index: dict[int, int] = {k: i for i, k in enumerate(self.items)}

    def add(self, key_id: int) -> None:
        if key_id not in self.index:
            self.index[key_id] = len(self.items)
            self.items.append(key_id)

    def discard(self, key_id: int) -> None:
        i = self.index.pop(key_id, None)
        if i is None:
            return
        last = self.items.pop()
        if last != key_id:
            self.items[i] = last
            self.index[last] = i

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.index

    def __len__(self) -> int:
        return len(self.items)


class ModelKeys:
    """The keys that can take a request for one model now, and those resting until when."""

    __slots__ = ("avail", "resting", "heap")

    def __init__(self, ids: Iterable[int]) -> None:
        self.avail = IdSet(ids)
        self.resting: dict[int, float] = {}
        # (until, key id); an entry whose until no longer matches `resting` is stale
        self.heap: list[tuple[float, int]] = []


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
# (rpm, rpd, tpm) thresholds (None: no limit known), when a "no quota" mark ends, and how
# long this worker's own sends count against the per-minute ones
Bounds = tuple[int | None, int | None, int | None, float, float]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def worker_id() -> str:
    """Name this process in the usage it publishes: host, pid and a random tag (pids recur)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class KeyPool:
    """In-memory pool of keys for one worker process."""

    def __init__(self, writer: Any = None, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time, worker: str | None = None) -> None:
        self.writer = writer
        self.worker = worker or worker_id()
        self.keys: dict[int, KeyState] = {}
        self.usable = IdSet()
        self.models: OrderedDict[str, ModelKeys] = OrderedDict()
        self.cool: dict[tuple[int, str], tuple[float, str, float]] = {}  # → (until, reason, set_at)
        self.limits: dict[tuple[int, str], dict[tuple[str, str], Limit]] = {}  # → {(kind, source): …}
        self.usage: dict[tuple[int, str], Usage] = {}
        self.user_usage: dict[int, UserUsage] = {}
        # model → ids of keys with a rest, limit or use for it: what a new ModelKeys checks
        self._concerned: dict[str, set[int]] = {}
        self._limited: set[int] = set()  # ids of keys with any limit row (learned or set)
        self._bounds: dict[tuple[int, str], Bounds | None] = {}
        self.users: list[User] = []
        self._users_by_id: dict[int, User] = {}
        self._digests: dict[str, bytes] = {}  # user keys that matched → their digest
        self.pins: dict[str, int] = {}
        self.pins_seq = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._rng = rng or random.Random()
        self._clock = clock
        self._day = 0
        self._day_end = 0.0

    # ---- the Pacific day -----------------------------------------------------------------
    def _today(self, now: float) -> int:
        if now >= self._day_end:
            self._day, self._day_end = pacific_day(now), next_pacific_midnight(now)
        return self._day

    def _pair(self, key_id: int, model: str, now: float) -> Usage:
        day = self._today(now)
        u = self.usage.get((key_id, model))
        if u is None:
            u = self.usage[(key_id, model)] = Usage(day)
            self._concern(key_id, model)
        else:
            u.roll(day)
        return u

    def _user_use(self, user_id: int, now: float) -> UserUsage:
        day = self._today(now)
        u = self.user_usage.get(user_id)
        if u is None:
            u = self.user_usage[user_id] = UserUsage(day)
        else:
            u.roll(day)
        return u

    def _concern(self, key_id: int, model: str) -> None:
        self._concerned.setdefault(model, set()).add(key_id)

    # ---- snapshot from the database -------------------------------------------------------
    def offer(self, view: dict[str, Any]) -> None:
        """Hand over a database view or change (from any thread); applied on the next use."""
        self._pending.append(view)

    def sync(self) -> None:
        """Apply pending database views, oldest first (a cheap no-op when there are none)."""
        pending = self._pending
        while pending:
            try:
                view = pending.popleft()
            except IndexError:
                return
            self.apply(view)

    def apply(self, view: dict[str, Any]) -> None:
        """Merge a database view (`full`, the default) or a change with what this worker saw.

        A full view lists every key not removed; keys it leaves out are dropped. A change
        lists changed keys (a removed one is dropped) and, for the ids in `touched`, every
        running rest and every limit. Either way the work is proportional to the rows given.
        """
        now = self._clock()
        full = view.get("full", True)
        rows = view.get("keys")
        if full or rows is not None:
            self._apply_keys(rows or [], full, now)
        touched: Iterable[int] = self.keys if full else view.get("touched") or [r["id"] for r in rows or ()]
        touched = set(touched)
        if full or "health" in view:
            self._apply_health(view.get("health") or [], touched, full, now)
        if full or "limits" in view:
            self._apply_limits(view.get("limits") or [], touched, full, now)
        if full or "users" in view:
            users = []
            for row in view.get("users") or []:
                models = tuple(m for m in (row.get("allowed_models") or "").split("|") if m)
                users.append(User(row["id"], row["label"], bytes.fromhex(row["key_hash"]),
                                  row.get("rpm_limit"), row.get("tpd_limit"), models))
            self.users, self._users_by_id = users, {u.id: u for u in users}
            self._digests.clear()  # no key of a removed or changed user is kept
        for row in view.get("pins") or []:
            self.pins[row["name"]] = row["key_id"]
            self.pins_seq = max(self.pins_seq, row["seq"])
        if "usage" in view:
            self._apply_usage(view, full, now)

    def _apply_keys(self, rows: list[dict[str, Any]], full: bool, now: float) -> None:
        seen = set()
        for row in rows:
            kid = row["id"]
            seen.add(kid)
            k = self.keys.get(kid)
            if row.get("status") == "removed":
                if k is not None:
                    self._drop_key(k)
                continue
            updated = row.get("updated_at") or 0.0
            if k is None:
                k = self.keys[kid] = KeyState(
                    id=kid, value=row["value"], masked=row["masked"], label=row.get("label"),
                    status=row.get("status") or "active", invalid_reason=row.get("invalid_reason"),
                    updated_at=updated, rpm_cap=row.get("rpm_cap"))
            else:
                # An operator action (enable, reset) gives the key a fresh score.
                if updated > k.updated_at:
                    k.forget_score()
                invalid = row.get("invalid_reason")
                # A death seen here but not yet in the view stays, unless the operator acted
                # on the key after it (re-enable, reset).
                if not (k.dead_at and invalid is None and updated < k.dead_at
                        and now - k.dead_at < LOCAL_GRACE):
                    k.invalid_reason, k.dead_at = invalid, None
                if k.rpm_cap != row.get("rpm_cap"):
                    k.rpm_cap = row.get("rpm_cap")
                    self._forget_bounds(kid)
                k.value, k.masked, k.label = row["value"], row["masked"], row.get("label")
                k.status, k.updated_at = row.get("status") or "active", updated
            self._set_usable(k, k.usable, now)
        if full:
            for k in [k for kid, k in self.keys.items() if kid not in seen]:
                self._drop_key(k)

    def _drop_key(self, k: KeyState) -> None:
        self._set_usable(k, False, 0.0)
        self.keys.pop(k.id, None)

    def _apply_health(self, rows: list[dict[str, Any]], touched: set[int], full: bool,
                      now: float) -> None:
        fresh: dict[tuple[int, str], tuple[float, str, float]] = {}
        for row in rows:
            if row["cool_until"] > now:
                fresh[(row["key_id"], row["model"])] = (row["cool_until"], row.get("reason") or "", 0.0)
        # The rests of touched keys are replaced by the view, except rests seen here after
        # the key's last operator change that the view does not show yet.
        old = list(self.cool) if full else self._pairs_of(touched, self.cool)
        for pair in old:
            until, reason, set_at = self.cool.pop(pair)
            k = self.keys.get(pair[0])
            if set_at and until > now and k is not None and k.updated_at < set_at:
                if pair not in fresh or fresh[pair][0] < until:
                    fresh[pair] = (until, reason, set_at)
        for pair, entry in fresh.items():
            self.cool[pair] = entry
            self._concern(*pair)
        for pair in set(old) | set(fresh):
            self._replace(pair[0], pair[1], now)

    def _apply_limits(self, rows: list[dict[str, Any]], touched: set[int], full: bool,
                      now: float) -> None:
        fresh = held_by_pair(rows)
        old = list(self.limits) if full else self._pairs_of(touched, self.limits)
        for pair in old:
            held = self.limits.pop(pair)
            k = self.keys.get(pair[0])
            for (kind, source), lim in held.items():
                # A limit learned here and not yet written stays a little while.
                if (source == "learned" and k is not None and lim.at > k.updated_at
                        and now - lim.at < LOCAL_GRACE and (kind, source) not in fresh.get(pair, {})):
                    fresh.setdefault(pair, {})[(kind, source)] = lim
        for pair, held in fresh.items():
            self.limits[pair] = held
            self._limited.add(pair[0])
            if pair[1]:
                self._concern(*pair)
        for kid in {pair[0] for pair in old} | {pair[0] for pair in fresh}:
            self._forget_bounds(kid)

    def _pairs_of(self, key_ids: set[int], table: dict[tuple[int, str], Any]) -> list[tuple[int, str]]:
        """Return the (key, model) entries of `table` for `key_ids`, without walking the table."""
        models = {*self._concerned, ""}
        return [(kid, model) for model in models for kid in key_ids if (kid, model) in table]

    def _apply_usage(self, view: dict[str, Any], full: bool, now: float) -> None:
        day = view.get("usage_day") or self._today(now)
        if full or view.get("usage_reset"):
            for u in (*self.usage.values(), *self.user_usage.values()):
                u.remote, u.r_day_sends, u.r_day_tin, u.r_day_tout = (), 0, 0, 0
        if day != self._today(now):
            return  # read just before midnight: the day it counts is over
        for row in view["usage"]:
            if row["key_id"]:
                u = self._pair(row["key_id"], row["model"], now)
            else:
                u = self._user_use(row["user_id"], now)
            u.remote = tuple(row["slots"])
            u.r_day_sends = row["day_sends"]
            u.r_day_tin, u.r_day_tout = row["day_tokens_in"], row["day_tokens_out"]
            if row["key_id"]:
                self._replace(row["key_id"], row["model"], now)

    # ---- limits and rests as conditions on the per-model sets -------------------------------
    def _forget_bounds(self, key_id: int) -> None:
        now = self._clock()
        for model, kids in list(self._concerned.items()):  # a few dozen models at most
            if key_id in kids:
                self._bounds.pop((key_id, model), None)
                self._replace(key_id, model, now)

    def bounds(self, k: KeyState, model: str) -> Bounds | None:
        """Return the thresholds the pool paces (k, model) by, or None when it knows no limit.

        For each kind the operator's limit for the model wins, then theirs for every model
        (the RPM cap among them), then the one learned from Google.
        """
        if not k.rpm_cap and k.id not in self._limited:
            return None  # the common case, kept out of the cache
        cached = self._bounds.get((k.id, model), False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        own = self.limits.get((k.id, model)) or {}
        every = (self.limits.get((k.id, "")) or {}) if model else {}
        limits = in_force(own, every, k.rpm_cap)
        out: list[int | None] = []
        zero = 0.0
        pace = WINDOW  # an operator's limit already leaves room; Google's own needs the slack
        for kind in QUOTA_KINDS:
            lim = limits.get(kind)
            if lim is None:
                out.append(None)
            elif lim.value == 0:  # no quota for this model: until the day Google counts in ends
                if lim.source == "learned":
                    zero = max(zero, next_pacific_midnight(lim.at))
                out.append(None)
            else:
                out.append(headroom(lim.value, lim.source))
                if lim.source == "learned" and kind != "rpd":
                    pace = PACE_WINDOW
        found: Bounds | None = None
        if zero or any(v is not None for v in out):
            found = (out[0], out[1], out[2], zero, pace)
        self._bounds[(k.id, model)] = found
        self._concern(k.id, model)  # so that _forget_bounds finds it
        return found

    def rest_until(self, k: KeyState, model: str, now: float) -> float:
        """Return when (k, model) can take a request again: 0.0 if it can now."""
        until = 0.0
        entry = self.cool.get((k.id, model))
        if entry is not None and entry[0] > now:
            until = entry[0]
        b = self.bounds(k, model)
        if b is None:
            return until
        rpm, rpd, tpm, zero, pace = b
        if zero > now:
            return max(until, zero)
        u = self.usage.get((k.id, model))
        if u is None:
            return until
        u.roll(self._today(now))
        if rpd is not None and u.today() >= rpd:
            until = max(until, self._day_end)
        if rpm is not None or tpm is not None:
            sends, tokens = u.minute(now, pace)
            if rpm is not None and sends >= rpm:
                until = max(until, u.free_at(now, rpm, False, pace))
            if tpm is not None and tokens >= tpm:
                until = max(until, u.free_at(now, tpm, True, pace))
        return until

    def _place(self, ms: ModelKeys, k: KeyState, model: str, now: float) -> None:
        """Put a usable key in its model's set, or on its heap until it may return."""
        until = self.rest_until(k, model, now)
        kid = k.id
        if until:
            ms.avail.discard(kid)
            if ms.resting.get(kid) != until:
                ms.resting[kid] = until
                heapq.heappush(ms.heap, (until, kid))
        else:
            ms.resting.pop(kid, None)
            ms.avail.add(kid)

    def _replace(self, key_id: int, model: str, now: float) -> None:
        """Check (key, model) again after something about it changed."""
        ms = self.models.get(model)
        k = self.keys.get(key_id)
        if ms is not None and k is not None and k.usable:
            self._place(ms, k, model, now)

    def _set_usable(self, k: KeyState, usable: bool, now: float) -> None:
        if usable:
            if k.id in self.usable:
                return
            self.usable.add(k.id)
            for model, ms in self.models.items():
                self._place(ms, k, model, now)
        elif k.id in self.usable:
            self.usable.discard(k.id)
            for ms in self.models.values():
                ms.avail.discard(k.id)
                ms.resting.pop(k.id, None)

    def _model(self, model: str, now: float) -> ModelKeys:
        ms = self.models.get(model)
        if ms is not None:
            self.models.move_to_end(model)
            if ms.heap and ms.heap[0][0] <= now:
                self._due(ms, model, now)
            return ms
        # First choice for this model (or its set was evicted): every usable key, then the
        # few with a rest, a limit or a use for it are checked.
        ms = self.models[model] = ModelKeys(self.usable.items)
        for kid in self._concerned.get(model, ()):
            k = self.keys.get(kid)
            if k is not None and k.usable:
                self._place(ms, k, model, now)
        if len(self.models) > MAX_MODELS:
            self.models.popitem(last=False)
        return ms

    def _due(self, ms: ModelKeys, model: str, now: float) -> None:
        heap = ms.heap
        while heap and heap[0][0] <= now:
            until, kid = heapq.heappop(heap)
            if ms.resting.get(kid) != until:
                continue  # stale: the rest changed since this entry was pushed
            del ms.resting[kid]
            k = self.keys.get(kid)
            if k is not None and k.usable:
                self._place(ms, k, model, now)

    def _soonest(self, ms: ModelKeys, exclude: set[int] | frozenset[int]) -> float | None:
        heap = ms.heap
        while heap and ms.resting.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            return None
        if heap[0][1] not in exclude:
            return heap[0][0]
        times = [until for kid, until in ms.resting.items() if kid not in exclude]
        return min(times) if times else None

    # ---- user limits -------------------------------------------------------------------
    def admit(self, user: User, model: str, also: Iterable[str] = ()) -> Refusal | None:
        """Check the user's own limits for a request to `model`; count it if admitted.

        `also` names any other model the request reaches (one named in its body, say):
        each must be on the user's allow-list too.
        """
        if user.allowed_models:  # without a list every model is allowed
            barred = [m for m in (model, *also) if m and not user.may_use(m)]
            if barred:
                return Refusal(403, f"this key may not use {barred[0]}; it may use only: "
                                    f"{', '.join(user.allowed_models)}")
        now = self._clock()
        if not (user.tpd_limit or user.rpm_limit):
            return None
        u = self._user_use(user.id, now)
        if user.tpd_limit and u.tokens_today() >= user.tpd_limit:
            return Refusal(429, f"this key used its {user.tpd_limit} tokens for today "
                                "(the day ends at midnight Pacific)", self._day_end - now,
                           spent=True)
        if user.rpm_limit:
            if u.minute(now)[0] >= user.rpm_limit:
                return Refusal(429, f"this key is limited to {user.rpm_limit} requests per minute",
                               max(0.5, u.free_at(now, user.rpm_limit, False) - now))
            u.send(now)
            u.day_sends += 1
            self._publish(now, 0, "", user.id, sends=1)
        return None

    def add_usage(self, user_id: int | None, key_id: int | None, model: str, tokens_in: int,
                  tokens_out: int) -> None:
        """Count the tokens a finished request used: against its key's and its user's limits."""
        if not (tokens_in or tokens_out):
            return
        now = self._clock()
        if key_id:
            u = self._pair(key_id, model, now)
            if tokens_in:
                u.add_tokens(now, tokens_in)
            u.day_tin += tokens_in
            u.day_tout += tokens_out
            self._publish(now, key_id, model, 0, tokens_in=tokens_in, tokens_out=tokens_out)
            k = self.keys.get(key_id)
            if k is not None and self.bounds(k, model) is not None:  # tokens count only under a limit
                self._replace(key_id, model, now)
        if user_id:
            u = self._user_use(user_id, now)
            u.day_tin += tokens_in
            u.day_tout += tokens_out
            self._publish(now, 0, "", user_id, tokens_in=tokens_in, tokens_out=tokens_out)

    def _publish(self, now: float, key_id: int, model: str, user_id: int, *, sends: int = 0,
                 tokens_in: int = 0, tokens_out: int = 0) -> None:
        if self.writer is not None:
            self.writer.usage(self.worker, self._day, now, key_id, model, user_id, sends,
                              tokens_in, tokens_out)

    # ---- authentication ----------------------------------------------------------------
    def authenticate(self, presented: str | None) -> User | None:
        """Return the user whose key matches, comparing every digest in constant time."""
        self.sync()
        if not presented:
            return None
        # A key that matched before skips hashing (SHA-256 through OpenSSL costs a request
        # about 5 us). The decision is still the comparison below; the memo only says what
        # the digest is. Keyed by the whole string, it answers an exact match or nothing, so
        # a guess learns nothing from it, and guesses are never kept (one entry per user).
        digest = self._digests.get(presented)
        if digest is None:
            digest = _digest(presented)
        found = None
        for user in self.users:  # no early exit: the time taken says nothing about a match
            if hmac.compare_digest(digest, user.key_hash):
                found = user
        if found is not None:
            self._digests[presented] = digest
        return found

    def user(self, user_id: int) -> User | None:
        """Return the active user with this id (None once disabled or removed)."""
        self.sync()
        return self._users_by_id.get(user_id)

    # ---- choosing --------------------------------------------------------------------
    def cooling_until(self, key_id: int, model: str, now: float) -> float:
        """Return when (key, model) can take a request again (0.0: now), rests and limits alike."""
        k = self.keys.get(key_id)
        return self.rest_until(k, model, now) if k is not None else 0.0

    def choose(self, model: str, exclude: set[int] | frozenset[int] = frozenset(),
               pinned: int | None = None) -> Choice:
        """Pick a key for `model`: weighted by success, spread by in-flight load.

        Power of two choices: draw two keys from the model's available set and favour the
        better. Every worker picking "the best key" would herd onto one key; two random
        candidates spread load while still steering away from keys that fail.
        """
        self.sync()
        now = self._clock()
        if pinned is not None:
            k = self.keys.get(pinned)
            if k is None or not k.usable:
                return NoKeys("the key that owns this file or cached content is not usable")
            until = self.rest_until(k, model, now)
            return Cooling(until - now, "the owning key is resting") if until else k
        ms = self._model(model, now)
        a, b = self._draw(ms.avail, exclude)
        if a is None:
            soonest = self._soonest(ms, exclude)
            if soonest is not None:
                return Cooling(soonest - now, f"every key is resting or has used its quota for {model}")
            if exclude and len(self.usable):
                return NoKeys("every usable key was tried")
            return NoKeys("no usable Google key: add one with `gemini-proxy keys add`")
        ka = self.keys[a]
        if b is None:
            return ka
        kb = self.keys[b]
        sa = ka.success_score() / (1 + ka.inflight)
        sb = kb.success_score() / (1 + kb.inflight)
        # Weighted, not "the better wins": with two keys a slightly worse one would
        # otherwise never be tried again and could never prove it recovered.
        return ka if self._rng.random() * (sa + sb) < sa else kb

    def _draw(self, avail: IdSet, exclude: set[int] | frozenset[int]) -> tuple[int | None, int | None]:
        """Draw two distinct ids from `avail` that are not excluded (None where there are none)."""
        items = avail.items
        if exclude:
            if len(items) <= 4 * len(exclude) + 8:  # few left: filter (retries only)
                items = [kid for kid in items if kid not in exclude]
            else:  # many: draw until outside `exclude` (rarely more than one more draw)
                rnd = self._rng.random
                n = len(items)
                a = items[int(rnd() * n)]
                while a in exclude:
                    a = items[int(rnd() * n)]
                b = items[int(rnd() * n)]
                while b in exclude or b == a:
                    b = items[int(rnd() * n)]
                return a, b
        n = len(items)
        if n == 0:
            return None, None
        if n == 1:
            return items[0], None
        rnd = self._rng.random
        i = int(rnd() * n)
        j = int(rnd() * (n - 1))
        return items[i], items[j + 1 if j >= i else j]

    # ---- outcomes --------------------------------------------------------------------
    def begin(self, key: KeyState, model: str) -> None:
        """Note that a request to `model` is going out on `key`; count it against its limits."""
        now = self._clock()
        key.inflight += 1
        u = self._pair(key.id, model, now)
        u.send(now)
        u.day_sends += 1
        self._publish(now, key.id, model, 0, sends=1)
        if self.bounds(key, model) is not None:
            self._replace(key.id, model, now)

    def end(self, key: KeyState) -> None:
        key.inflight = max(0, key.inflight - 1)

    def report(self, key: KeyState, model: str, outcome: Outcome) -> None:
        """Record an attempt's outcome: update memory now, queue the persistent part."""
        now = self._clock()
        kind = outcome.kind
        # Rate limits are handled by cooling, not by the score: a rested key is healthy.
        if kind in _SCORED:
            key.count(kind is _OK, now)
        w = self.writer
        reason = outcome.reason
        if reason:  # it quotes Google, who may name a key: masked before it is kept or logged
            reason = redact(reason, [k.value for k in self.keys.values()])
        # The request the events below name (the Logs pane opens it); a success logs none.
        rid = current_request_id() if w and kind is not _OK else None
        if kind is Kind.KEY_DEAD:
            key.invalid_reason, key.dead_at = reason, now
            self._set_usable(key, False, now)
            if w:
                w.key_invalid(key.id, reason, now)
                w.event("warning", f"key {key.masked} retired: {reason}",
                        status=outcome.status, key_id=key.id, model=model, request_id=rid)
            log.warning("key %s retired: %s", key.masked, reason)
        elif kind in _RATED:
            self._refund(key, model, now)
            if outcome.quotas:
                self._learn(key, model, outcome.quotas, now, rid)
            if outcome.cool_until:
                self.cool[(key.id, model)] = (outcome.cool_until, outcome.kind.value, now)
                self._concern(key.id, model)
                if w:
                    w.key_cooled(key.id, model, outcome.cool_until, outcome.kind.value, reason)
                    w.event("info", f"key {key.masked} resting for {model} "
                            f"{outcome.cool_until - now:.0f}s ({outcome.kind.value})",
                            status=outcome.status, key_id=key.id, model=model, request_id=rid)
            self._replace(key.id, model, now)
        elif kind is Kind.UPSTREAM and w:
            w.event("warning", f"upstream trouble on key {key.masked}: {reason}",
                    status=outcome.status, key_id=key.id, model=model, request_id=rid)
        if w:
            w.key_used(key.id, now, None if kind is _OK else reason)

    def _refund(self, key: KeyState, model: str, now: float) -> None:
        """Take back the send a 429 refused: Google did not count it against the quota."""
        u = self._pair(key.id, model, now)
        if u.sends:
            u.sends.pop()
        u.day_sends -= 1
        self._publish(now, key.id, model, 0, sends=-1)

    def _learn(self, key: KeyState, model: str, quotas: tuple[tuple[str, int], ...], now: float,
               rid: str | None) -> None:
        """Remember the limits a 429 named for (key, model) and tell the other workers."""
        held = self.limits.setdefault((key.id, model), {})
        self._limited.add(key.id)
        for kind, value in quotas:
            if kind not in QUOTA_KINDS:
                continue
            before = held.get((kind, "learned"))
            held[(kind, "learned")] = Limit(value, "learned", now)
            self._concern(key.id, model)
            if self.writer is not None:
                self.writer.limit_learned(key.id, model, kind, value, now)
                if before is None or before.value != value:
                    what = ("no quota for this model (limit 0) until midnight Pacific" if value == 0
                            else f"{value} {QUOTA_NAMES[kind]}")
                    self.writer.event("info", f"key {key.masked} limit learned for {model}: {what}",
                                      status=429, key_id=key.id, model=model, request_id=rid)
        self._forget_bounds(key.id)

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
        return {"usable": len(self.usable),
                "cooling": sum(1 for kid in cooling_ids if kid in self.usable),
                "dead": sum(1 for k in self.keys.values() if k.invalid_reason),
                "disabled": sum(1 for k in self.keys.values() if k.status == "disabled")}

    def budget(self) -> dict[str, dict[str, int]]:
        """Return, per model with known daily limits, the requests left today across keys.

        {model: {"limit": sum of daily limits, "used": requests today on those keys,
        "left": what remains, "keys": keys with a known daily limit, "no_quota": keys
        with none for the model today}}. Not for the request path: it walks every pair.
        """
        now = self._clock()
        self._today(now)
        out: dict[str, dict[str, int]] = {}
        for (kid, model), held in list(self.limits.items()):
            k = self.keys.get(kid)
            if not model or k is None or not k.usable:
                continue
            b = self.bounds(k, model)
            if b is None:
                continue
            m = out.setdefault(model, {"limit": 0, "used": 0, "left": 0, "keys": 0, "no_quota": 0})
            if b[3] > now:
                m["no_quota"] += 1
                continue
            lim = in_force(held, self.limits.get((kid, "")) or {}, k.rpm_cap).get("rpd")
            if lim is None or not lim.value:
                continue
            u = self.usage.get((kid, model))
            if u is not None:
                u.roll(self._day)
            used = u.today() if u is not None else 0
            m["keys"] += 1
            m["limit"] += lim.value
            m["used"] += min(used, lim.value)
            m["left"] += max(0, lim.value - used)
        return out


class Refresher:
    """Read what changed in the database on a real OS thread, about once a second.

    Under gevent the change is applied by a callback on the hub, between requests, so no
    request waits for it; elsewhere the pool's next use applies it.
    """

    def __init__(self, pool: KeyPool, load: Callable[[], dict[str, Any]], interval: float = 1.0):
        self.pool = pool
        self.load = load
        self.interval = interval
        self._stop = False
        self._hub_loop: Any = None
        # When (time.monotonic) the read behind the last view offered began: the sync
        # point `await_view` waits on.
        self.read_began = 0.0
        # Held while idle; releasing it wakes the thread early. Sleeping on a lock instead
        # of polling keeps the thread from taking the GIL from requests between ticks.
        self._wake = realthread.lock()
        self._wake.acquire()

    def start(self) -> None:
        self._hub_loop = realthread.hub_loop()
        realthread.start(self._run, "pool-refresh")

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

    def _apply(self) -> None:
        try:
            self.pool.sync()
        except Exception:  # never let a bad view take the hub down
            log.exception("pool refresh could not be applied")

    def _run(self) -> None:
        while not self._stop:
            began = time.monotonic()
            try:
                view = self.load()
                if _news(view):  # a quiet second hands nothing over
                    self.pool.offer(view)
                    if self._hub_loop is not None:
                        self._hub_loop.run_callback_threadsafe(self._apply)
                # Set after the offer: whoever sees the new time finds the view pending.
                self.read_began = began
            except Exception:  # keep serving from the last good view
                log.exception("pool refresh failed")
            self._wake.acquire(timeout=self.interval)


def _news(view: dict[str, Any]) -> bool:
    """Whether a view read from the database changes anything for the pool."""
    return bool(view.get("full", True) or view.get("usage_reset")
                or any(part in view for part in ("keys", "touched", "health", "limits", "users"))
                or view.get("pins") or view.get("usage"))
