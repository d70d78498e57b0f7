"""Persist what the proxy observed, in short batches, from one real OS thread per process.

Request handlers never touch SQLite: they `put` small tuples on an in-memory queue (a deque
append, well under a microsecond) and this writer drains it every `interval` seconds into one
`BEGIN IMMEDIATE` transaction. Counters are summed in memory first, so a busy minute costs one
upsert per (minute, key, model, user, dialect), not one per request.

Ops are tuples whose first item names them; build them with the convenience methods rather
than by hand:

    ("request_started", row)       ("request_finished", row)
    ("request_first_byte", id, key_id, key_masked, ttfb_ms, attempts, attempts_detail)
    ("attempt", minute, key_id, model, user_id, dialect, outcome, final, tokens_in, tokens_out)
    ("key_used", key_id, ts, error)           ("key_invalid", key_id, reason, ts)
    ("key_cooled", key_id, model, cool_until, reason, last_error, ts)
    ("event", ts, level, message, request_id, status, key_id, model)
    ("pin", name, key_id, ts)
    ("usage", worker, day, ts, key_id, model, user_id, sends, tokens_in, tokens_out)
    ("limit_learned", key_id, model, kind, value, ts)

Usage ops are not SQL one by one: they are folded into this process's running counters
(store.quota_usage.UsageBook), whose changed rows each batch writes whole.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlite_utils import Database

from .. import __version__, realthread
from . import pg
from .db import open_db
from .pins import write_pins
from .schema import OUTCOMES, REQUEST_COLUMNS, STATS_COUNTERS, STATS_KEY, migrate
from .quota_usage import UsageBook
from .util import now, this_host

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0
_LOCK_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0)
# A database that cannot take writes (disk full, read-only, I/O error) is retried this often.
_FAILING_BACKOFF = (0.25, 0.5, 1.0, 2.0, 5.0)
MAX_QUEUE = 100_000  # ops kept while the database cannot take them; the oldest go beyond it
# SQLite result codes that say the database cannot take a write now, not that the write is bad.
_UNAVAILABLE = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY,
                          sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL})
# Index of each outcome's counter in a STATS_COUNTERS-ordered list.
_OUTCOME_INDEX = {name: STATS_COUNTERS.index(name) for name in OUTCOMES}
HOUSEKEEPING_EVERY = 30.0  # seconds between retention passes when there is nothing to prune
_REQUESTS, _TOKENS_IN, _TOKENS_OUT, _COST = (
    STATS_COUNTERS.index(c) for c in ("requests", "tokens_in", "tokens_out", "cost_micros"))
_REQUEST_FIELDS = frozenset(REQUEST_COLUMNS)
_QUOTED = ("error_message", "attempts_detail")  # may quote the upstream
# Value types a requests column takes as they are (bool, list and dict are converted).
_PLAIN = frozenset({str, int, float, type(None)})
_BLANK_ROW: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)

_COLS = ", ".join(REQUEST_COLUMNS)
# attempts and stream have column defaults of 0, which an explicit NULL would bypass.
_VALUES = ", ".join(f"coalesce(:{c}, 0)" if c in ("attempts", "stream") else f":{c}" for c in REQUEST_COLUMNS)
_SQL_REQUEST_START = f"INSERT INTO requests ({_COLS}) VALUES ({_VALUES}) ON CONFLICT(id) DO NOTHING"
# A finish fills in the row its start created, or creates it when the start never arrived.
# Values the finish leaves out (None) keep what the start wrote.
_SQL_REQUEST_FINISH = (
    f"INSERT INTO requests ({_COLS}) VALUES ({_VALUES}) ON CONFLICT(id) DO UPDATE SET "
    # The old value is named requests.c: PostgreSQL finds a bare c ambiguous next to excluded.c.
    + ", ".join(f"{c} = coalesce(:{c}, requests.{c})" for c in REQUEST_COLUMNS if c != "id")
)
# A stream's first byte names its key while it is still in flight; a finish already
# written (status set) knows more and is never overwritten.
_SQL_REQUEST_FIRST_BYTE = (
    "UPDATE requests SET key_id = ?, key_masked = ?, ttfb_ms = ?, attempts = ?, attempts_detail = ? "
    "WHERE id = ? AND status IS NULL"
)
# The host comes last in the key: the writer appends its own to each bucket it upserts.
_SQL_STATS = (
    f"INSERT INTO stats_minute ({', '.join(STATS_KEY + STATS_COUNTERS)}) "
    f"VALUES ({', '.join('?' * (len(STATS_KEY) + len(STATS_COUNTERS)))}) "
    f"ON CONFLICT({', '.join(STATS_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = stats_minute.{c} + excluded.{c}" for c in STATS_COUNTERS)
)
_SQL_KEY_USED = (
    "UPDATE google_keys SET last_used_at = max(coalesce(last_used_at, 0), ?), "
    "last_error = coalesce(?, last_error) WHERE id = ?"
)
# An operator who re-enabled or reset a key after the failure was seen wins over the
# failure still sitting in a queue: compare with updated_at, the time of the operator's change.
_SQL_KEY_INVALID = (
    "UPDATE google_keys SET invalid_reason = ?, invalid_at = ? "
    "WHERE id = ? AND invalid_reason IS NULL AND coalesce(updated_at, 0) <= ?"
)
_SQL_KEY_COOLED = (
    "INSERT INTO key_health (key_id, model, cool_until, reason, last_error, updated_at) "
    "SELECT ?, ?, ?, ?, ?, ? "
    "WHERE NOT EXISTS (SELECT 1 FROM google_keys WHERE id = ? AND updated_at > ?) "
    "ON CONFLICT(key_id, model) DO UPDATE SET "
    "reason = CASE WHEN excluded.cool_until >= coalesce(key_health.cool_until, 0) "
    "THEN excluded.reason ELSE key_health.reason END, "
    "cool_until = max(coalesce(key_health.cool_until, 0), excluded.cool_until), "
    "last_error = excluded.last_error, updated_at = excluded.updated_at"
)
# A limit Google named: kept unless the operator reset the key after the 429 was seen.
_SQL_LIMIT_LEARNED = (
    "INSERT INTO key_limits (key_id, model, kind, source, value, learned_at, updated_at) "
    "SELECT ?, ?, ?, 'learned', ?, ?, ? "
    "WHERE NOT EXISTS (SELECT 1 FROM google_keys WHERE id = ? AND updated_at > ?) "
    "ON CONFLICT(key_id, model, kind, source) DO UPDATE SET value = excluded.value, "
    "learned_at = excluded.learned_at, updated_at = excluded.updated_at"
)
_SQL_EVENT = (
    "INSERT INTO events (ts, level, message, request_id, status, key_id, model, host) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_WORKER = (
    "INSERT INTO workers (host, pid, started_at, last_seen, version, inflight, served, state) "
    "VALUES (:host, :pid, :started_at, :last_seen, :version, :inflight, :served, :state) "
    "ON CONFLICT(host, pid) DO UPDATE SET started_at = excluded.started_at, "
    "last_seen = excluded.last_seen, version = excluded.version, "
    "inflight = excluded.inflight, served = excluded.served, state = excluded.state"
)


# Read only when an error is being handled: psycopg's classes are there once a PostgreSQL
# store has loaded it, and a SQLite store never does.
def _operational() -> tuple[type[BaseException], ...]:
    """The errors that may say the database cannot take writes now: SQLite's, and psycopg's
    OperationalError (server down, connection lost) when PostgreSQL is in use."""
    return (sqlite3.OperationalError, *pg.operational_errors())


def _db_errors() -> tuple[type[BaseException], ...]:
    """Any database error, of either backend."""
    return (sqlite3.Error, *pg.database_errors())


class _Flush:
    """A marker in the queue; its lock is released once every op before it is committed."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = realthread.lock()
        self.done.acquire()


class Writer:
    """Batch the proxy's observations into SQLite from a dedicated OS thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        interval: float = 0.15,
        max_batch: int = 5000,
        max_queue: int = MAX_QUEUE,
        heartbeat: Callable[[], dict[str, Any]] | None = None,
        housekeeping: Callable[[Database], int] | None = None,
        host: str = "",
    ) -> None:
        self.path = path if pg.is_url(path) else Path(path)
        # This host's name, stamped by this thread on every row, event, bucket and heartbeat
        # it writes (the request path never carries it).
        self.host = this_host(host)
        # Runs on this thread between batches (retention pruning); returns rows it changed.
        self._housekeeping = housekeeping
        self._next_housekeeping = 0.0
        self.interval = interval
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._heartbeat = heartbeat
        self._queue: deque[tuple[Any, ...]] = deque()
        self._db: Database | None = None
        self._started = False
        self._running = False
        self._closing = False
        self._closed = False
        self._started_at = 0.0
        self._last_heartbeat = 0.0
        self._warned_fields: set[str] = set()
        self._usage = UsageBook()  # this process's quota_usage rows (writer thread only)
        self.last_commit = now()  # when a batch last reached the database (for /ready)
        self.last_error: str | None = None
        self.failing_since: float | None = None  # set while the database refuses writes
        self.unreachable = False  # while failing: the server cannot be reached at all
        self.dropped = 0  # ops given up on: bad data, or beyond max_queue while failing
        self._give_up_at: float | None = None  # set by close(): stop retrying a failing database
        # Held while idle; releasing it wakes the thread before its interval is up.
        self._wake = realthread.lock()
        self._wake.acquire()
        # Held while the thread runs; released as it exits.
        self._done = realthread.lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open a connection (migrating a fresh file) and start the writer thread.

        Call it in the process that will put ops (after a fork, not before: threads do not
        survive fork). Calling it twice does nothing.
        """
        if self._started:
            return
        self._db = open_db(self.path)
        migrate(self._db)
        self._started = True
        self._running = True
        self._started_at = now()
        self._done.acquire()
        realthread.start(self._run, "store-writer")

    def put(self, op: tuple[Any, ...]) -> None:
        """Queue one op; never blocks and never touches SQLite (a deque append is thread-safe)."""
        self._queue.append(op)

    @property
    def alive(self) -> bool:
        """Whether the writer thread is running."""
        return self._running

    @property
    def failing(self) -> bool:
        """Whether the last write failed because the database cannot take writes now."""
        return self.failing_since is not None

    @property
    def problem(self) -> str | None:
        """Say why the database takes no writes now (for /ready), or None while it does."""
        if self.failing_since is None:
            return None
        if self.unreachable:
            return f"the database at {pg.where(str(self.path))} is unreachable: {self.last_error}"
        return f"the database is not writable: {self.last_error}"

    @property
    def depth(self) -> int:
        """Return how many ops are waiting to be written."""
        return len(self._queue)

    def flush(self, timeout: float = 10) -> bool:
        """Wait until every op put so far is committed; False if `timeout` ran out first."""
        if not self._running:
            return not self._queue
        marker = _Flush()
        self._queue.append(("flush", marker))
        self._poke()
        return _wait(marker.done, timeout)

    def close(self, timeout: float = 10) -> None:
        """Write everything still queued, then stop the thread; later calls do nothing.

        Ops put after close are never written.
        """
        if self._closed:
            return
        self._closed = True
        if not self._started:
            if not self._queue:
                return
            self.start()
        self._give_up_at = time.monotonic() + max(0.0, timeout - 0.5)
        self._closing = True
        self._poke()
        if not _wait(self._done, timeout):
            log.warning("store writer: %d ops still unwritten after %.1fs at close", len(self._queue), timeout)
        else:
            self._done.release()

    # -- what the proxy calls ---------------------------------------------------------------

    def request_started(self, row: dict[str, Any]) -> None:
        """Record a request as in flight (its status stays NULL until it finishes)."""
        self._queue.append(("request_started", dict(row)))

    def request_finished(self, row: dict[str, Any]) -> None:
        """Record the final state of a request (same id as its start; the start may be missing)."""
        self._queue.append(("request_finished", dict(row)))

    def request_first_byte(self, request_id: str, *, key_id: int | None, key_masked: str | None,
                           ttfb_ms: float | None, attempts: int,
                           attempts_detail: list[dict[str, Any]] | None = None) -> None:
        """Record the key and time to first byte of a request still in flight (a stream under way).

        A finish for the same request, queued later or already written, wins over this.
        """
        self._queue.append(("request_first_byte", request_id, key_id, key_masked, ttfb_ms, attempts,
                            attempts_detail))

    def attempt(
        self,
        *,
        ts: float,
        key_id: int | None,
        model: str | None,
        user_id: int | None,
        dialect: str | None,
        outcome: str,
        final: bool,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_micros: int = 0,
    ) -> None:
        """Count one upstream attempt in its minute bucket; the final one also counts the request and tokens."""
        try:
            index = _OUTCOME_INDEX[outcome]
        except KeyError:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}") from None
        self._queue.append((
            "attempt", int(ts // 60), key_id or 0, model or "", user_id or 0, dialect or "native",
            index, bool(final), tokens_in or 0, tokens_out or 0, cost_micros or 0,
        ))

    def key_used(self, key_id: int, ts: float, error: str | None = None) -> None:
        """Note that a key was used at `ts` (and the error it got, when there was one)."""
        self._queue.append(("key_used", key_id, ts, error))

    def key_invalid(self, key_id: int, reason: str, ts: float) -> None:
        """Mark a key dead for `reason` (leaves updated_at alone: that stamps operator changes)."""
        self._queue.append(("key_invalid", key_id, reason, ts))

    def key_cooled(self, key_id: int, model: str, cool_until: float, reason: str, last_error: str | None) -> None:
        """Cool (key, model) until `cool_until`; a longer cooldown already stored is kept."""
        self._queue.append(("key_cooled", key_id, model or "", cool_until, reason, last_error, now()))

    def event(
        self,
        level: str,
        message: str,
        *,
        request_id: str | None = None,
        status: int | None = None,
        key_id: int | None = None,
        model: str | None = None,
        ts: float | None = None,
    ) -> None:
        """Append a line to the event log."""
        self._queue.append(("event", ts or now(), level, message, request_id, status, key_id, model))

    def pin(self, name: str, key_id: int) -> None:
        """Remember that an uploaded file or cached content belongs to `key_id`."""
        self._queue.append(("pin", name, key_id, now()))

    def usage(self, worker: str, day: int, ts: float, key_id: int, model: str, user_id: int,
              sends: int = 0, tokens_in: int = 0, tokens_out: int = 0) -> None:
        """Count sends and tokens in this worker's running usage of a (key, model) or a user.

        A (key, model) row has user_id 0; a user's row has key_id 0 and model "". `day` is
        the Pacific date (util.pacific_day) the pool counts in.
        """
        self._queue.append(("usage", worker, day, ts, key_id, model, user_id, sends, tokens_in,
                            tokens_out))

    def limit_learned(self, key_id: int, model: str, kind: str, value: int, ts: float) -> None:
        """Remember the limit a 429 named for (key, model): kind rpm, rpd or tpm."""
        self._queue.append(("limit_learned", key_id, model, kind, value, ts))

    # -- the thread -------------------------------------------------------------------------

    def _poke(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:
            pass  # already awake

    def _run(self) -> None:
        try:
            while True:
                if not self._closing and len(self._queue) < self.max_batch:
                    self._wake.acquire(timeout=self.interval)
                batch = self._take()
                beat = self._beat()
                if batch or beat or self._usage.dirty:
                    self._write(batch, beat)
                if self._closing and not self._queue:
                    break
                self._tidy()
        except BaseException:  # pragma: no cover - a bug here must not pass silently
            log.exception("store writer stopped; %d ops lost", len(self._queue))
        finally:
            if self._db is not None:
                self._db.close()
            self._running = False
            self._done.release()

    def _tidy(self) -> None:
        """Run housekeeping now and then; again soon while it still finds work."""
        if self._housekeeping is None or self._db is None or now() < self._next_housekeeping:
            return
        try:
            busy = self._housekeeping(self._db)
        except _db_errors() as exc:  # locked or busy: try again later, never lose a batch
            log.warning("store writer: housekeeping skipped: %s", exc)
            busy = 0
        self._next_housekeeping = now() + (1.0 if busy else HOUSEKEEPING_EVERY)

    def _take(self) -> list[tuple[Any, ...]]:
        batch = []
        popleft = self._queue.popleft
        for _ in range(min(len(self._queue), self.max_batch)):
            batch.append(popleft())
        return batch

    def _beat(self) -> dict[str, Any] | None:
        """Return the workers row to write now, if a heartbeat is due."""
        if self._heartbeat is None:
            return None
        ts = now()
        if ts - self._last_heartbeat < HEARTBEAT_EVERY and not self._closing:
            return None
        self._last_heartbeat = ts
        try:
            extra = dict(self._heartbeat() or {})
        except Exception:
            log.exception("store writer: heartbeat callback failed")
            extra = {}
        row = {
            "host": self.host, "pid": os.getpid(), "started_at": self._started_at,
            "last_seen": ts, "version": __version__, "inflight": None, "served": None,
            "state": None,
        }
        row.update({k: v for k, v in extra.items() if k in row})
        return row

    def _write(self, batch: list[tuple[Any, ...]], beat: dict[str, Any] | None) -> None:
        """Commit one batch, losing as little as possible.

        Locked: retry shortly. Unable to write at all (disk full, read-only, I/O error):
        keep the batch and everything queued behind it, retry with backoff and report the
        writer as failing until a write succeeds. Anything else: redo the batch op by op
        and drop only the ops that fail.
        """
        for op in batch:  # folded once, before any try: a retried batch must not count twice
            if op[0] == "usage":
                try:
                    self._usage.add(*op[1:])
                except Exception as exc:
                    self.dropped += 1
                    _log_bad_op(op, exc, 1)
        careful = False
        attempt = 0
        while True:
            try:
                self._commit(batch, beat, careful=careful)
                self._committed()
                break
            except _operational() as exc:
                self.last_error = pg.first_line(exc)
                if _is_locked(exc) or _is_unavailable(exc):
                    if self._past_give_up():
                        self._drop(len(batch) + self._trim(0), f"still failing at stop: {exc}")
                        break
                    if _is_unavailable(exc):
                        self._fail(exc, len(batch))
                        dropped = self._trim(max(0, self.max_queue - len(batch)))
                        self._drop(dropped, f"more than {self.max_queue} ops waiting")
                        delay = _FAILING_BACKOFF[min(attempt, len(_FAILING_BACKOFF) - 1)]
                    else:
                        delay = _LOCK_BACKOFF[min(attempt, len(_LOCK_BACKOFF) - 1)]
                        log.warning("store writer: database locked, retrying %d ops in %.2fs",
                                    len(batch), delay)
                    attempt += 1
                    self._sleep(delay)
                    continue
                if careful:
                    self._drop(len(batch), f"batch could not be committed: {exc}")
                    break
                careful = True
            except Exception as exc:
                if careful:
                    self._drop(len(batch), f"batch could not be committed: {exc}")
                    break
                # Something in the batch is bad: redo it op by op to find and drop just that.
                careful = True
        for op in batch:
            if op[0] == "flush":
                op[1].done.release()

    def _committed(self) -> None:
        if self.failing_since is not None:
            log.warning("store writer: writing again after %.0fs of failures (%d ops dropped "
                        "so far)", now() - self.failing_since, self.dropped)
        self.last_commit, self.last_error, self.failing_since = now(), None, None

    def _fail(self, exc: Exception, held: int) -> None:
        """Note that the database refuses writes; one log line when it starts, not per retry."""
        self.unreachable = not isinstance(exc, sqlite3.Error) and pg.is_unreachable(exc)
        if self.failing_since is None:
            self.failing_since = now()
            log.error("store writer: the database cannot take writes (%s); keeping %d ops and "
                      "retrying", exc, held + len(self._queue))

    def _sleep(self, delay: float) -> None:
        """Sleep between retries, but not past the deadline close() set."""
        if self._give_up_at is not None:
            delay = min(delay, max(0.0, self._give_up_at - time.monotonic()))
        realthread.real_sleep(delay)

    def _past_give_up(self) -> bool:
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _trim(self, keep: int) -> int:
        """Drop the oldest queued ops beyond `keep` (flush markers are released, not counted)."""
        dropped = 0
        while len(self._queue) > keep:
            op = self._queue.popleft()
            if op[0] == "flush":
                op[1].done.release()
            else:
                dropped += 1
        return dropped

    def _drop(self, count: int, why: str) -> None:
        """Count ops given up on, with one log line for the lot."""
        if count:
            self.dropped += count
            log.error("store writer: dropped %d ops (%d in all): %s", count, self.dropped, why)

    def _commit(self, batch: list[tuple[Any, ...]], beat: dict[str, Any] | None, *, careful: bool) -> None:
        assert self._db is not None
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if careful:
                self._apply_each(conn, batch)
            else:
                self._apply(conn, batch)
            self._write_usage(conn, careful=careful)
            if beat is not None:
                self._write_beat(conn, beat, careful=careful)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._usage.committed()

    def _write_usage(self, conn: sqlite3.Connection, *, careful: bool) -> None:
        _extra(conn, "usage counters", lambda: self._usage.write(conn, now()), careful=careful)

    def _write_beat(self, conn: sqlite3.Connection, beat: dict[str, Any], *, careful: bool) -> None:
        _extra(conn, "heartbeat", lambda: conn.execute(_SQL_WORKER, beat), careful=careful)

    def _apply_each(self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> None:
        dropped = 0
        for op in batch:
            conn.execute("SAVEPOINT op")
            try:
                self._apply(conn, [op])
            except _operational() as exc:
                if _is_locked(exc) or _is_unavailable(exc):
                    raise
                dropped += 1
                _log_bad_op(op, exc, dropped)
                conn.execute("ROLLBACK TO op")
            except Exception as exc:
                dropped += 1
                _log_bad_op(op, exc, dropped)
                conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        if dropped:
            self.dropped += dropped
            log.error("store writer: dropped %d bad ops of %d", dropped, len(batch))

    def _apply(self, conn: sqlite3.Connection, ops: Iterable[tuple[Any, ...]]) -> None:
        """Fold `ops` into as few statements as possible and run them on `conn`."""
        starts: dict[str, dict[str, Any]] = {}
        finishes: dict[str, dict[str, Any]] = {}
        first_bytes: dict[str, dict[str, Any]] = {}
        stats: dict[tuple[Any, ...], list[int]] = {}
        used: dict[int, list[Any]] = {}
        invalid: dict[int, tuple[Any, ...]] = {}
        cooled: dict[tuple[int, str], list[Any]] = {}
        events: list[tuple[Any, ...]] = []
        pins: dict[str, tuple[int, float]] = {}
        learned: dict[tuple[int, str, str], tuple[Any, ...]] = {}
        for op in ops:
            kind = op[0]
            if kind in ("usage", "flush"):
                continue  # usage ops were folded into the UsageBook before the batch
            if kind == "attempt":
                _, minute, key_id, model, user_id, dialect, index, final, t_in, t_out, cost = op
                counts = stats.get((minute, key_id, model, user_id, dialect))
                if counts is None:
                    counts = stats[(minute, key_id, model, user_id, dialect)] = [0] * len(STATS_COUNTERS)
                counts[index] += 1
                if final:
                    counts[_REQUESTS] += 1
                    counts[_TOKENS_IN] += int(t_in)
                    counts[_TOKENS_OUT] += int(t_out)
                    counts[_COST] += int(cost)
            elif kind == "request_finished":
                row = self._request_fields(op[1])
                rid = row["id"]
                earlier = finishes.get(rid)
                finishes[rid] = row if earlier is None else _merged(earlier, row)
            elif kind == "request_started":
                row = self._request_fields(op[1])
                starts.setdefault(row["id"], row)
            elif kind == "request_first_byte":
                _, rid, key_id, key_masked, ttfb_ms, attempts, detail = op
                if not rid:
                    raise ValueError("first byte without a request id")
                first_bytes[rid] = {
                    "key_id": key_id, "key_masked": key_masked, "ttfb_ms": ttfb_ms,
                    "attempts": int(attempts or 0),
                    # It quotes the upstream like a finish's detail: masked the same way.
                    "attempts_detail": None if detail is None else _clean(json.dumps(detail, separators=(",", ":"))),
                }
            elif kind == "key_used":
                _, key_id, ts, error = op
                seen = used.setdefault(key_id, [ts, None])
                seen[0] = max(seen[0], ts)
                if error is not None:
                    seen[1] = _clean(error)
            elif kind == "key_invalid":
                _, key_id, reason, ts = op
                invalid.setdefault(key_id, (_clean(reason), ts, key_id, ts))
            elif kind == "key_cooled":
                _, key_id, model, cool_until, reason, last_error, ts = op
                reason, last_error = _clean(reason), _clean(last_error)
                cool_until = float(cool_until)
                held = cooled.get((key_id, model))
                if held is None:
                    cooled[(key_id, model)] = [key_id, model, cool_until, reason, last_error, ts, key_id, ts]
                else:
                    if cool_until >= held[2]:
                        held[2], held[3] = cool_until, reason
                    held[4], held[5], held[7] = last_error, ts, ts
            elif kind == "event":
                _, ts, level, message, *rest = op
                events.append((ts, level, _clean(message), *rest, self.host))
            elif kind == "pin":
                _, name, key_id, ts = op
                pins[name] = (key_id, ts)
            elif kind == "limit_learned":
                _, key_id, model, what, value, ts = op
                if what not in ("rpm", "rpd", "tpm") or int(value) < 0:
                    raise ValueError(f"not a limit: {what!r} = {value!r}")
                learned[(key_id, model or "", what)] = (key_id, model or "", what, int(value), ts, ts,
                                                        key_id, ts)
            else:
                raise ValueError(f"unknown op {kind!r}")

        for rid, fields in first_bytes.items():
            if rid in finishes:
                continue  # the finish in this batch says all of it, and more
            if rid in starts:
                # Still one insert for a start in this batch (a new dict: ops stay as queued,
                # for a retry of the batch).
                starts[rid] = {**starts[rid], **fields}
        updates = [(f["key_id"], f["key_masked"], f["ttfb_ms"], f["attempts"], f["attempts_detail"], rid)
                   for rid, f in first_bytes.items() if rid not in finishes and rid not in starts]
        if starts:
            for rid in [rid for rid in starts if rid in finishes]:
                # Both ends in one batch: a single insert of the merged row.
                finishes[rid] = _merged(starts.pop(rid), finishes[rid])
            if starts:
                conn.executemany(_SQL_REQUEST_START, [self._request_row(r) for r in starts.values()])
        if updates:
            conn.executemany(_SQL_REQUEST_FIRST_BYTE, updates)
        if finishes:
            conn.executemany(_SQL_REQUEST_FINISH, [self._request_row(r) for r in finishes.values()])
        if stats:
            conn.executemany(_SQL_STATS, [(*k, self.host, *v) for k, v in stats.items()])
        if used:
            conn.executemany(_SQL_KEY_USED, [(ts, err, key_id) for key_id, (ts, err) in used.items()])
        if invalid:
            conn.executemany(_SQL_KEY_INVALID, list(invalid.values()))
        if cooled:
            conn.executemany(_SQL_KEY_COOLED, list(cooled.values()))
        if events:
            conn.executemany(_SQL_EVENT, events)
        if learned:
            conn.executemany(_SQL_LIMIT_LEARNED, list(learned.values()))
        if pins:
            write_pins(conn, [(name, key_id, ts) for name, (key_id, ts) in pins.items()])

    def _request_fields(self, given: dict[str, Any]) -> dict[str, Any]:
        """Return the columns `given` names, values ready for SQL (`given` itself when they are).

        Only the fields given: the full row is built once per row written (`_request_row`),
        after a request's start and finish are merged, not once per op. `given` is never
        changed: a batch that fails is applied again from the same ops.
        """
        if not given.get("id"):
            raise ValueError("request row without an id")
        # The usual op: known columns holding text, numbers or None, nothing to convert.
        if given.keys() <= _REQUEST_FIELDS and _PLAIN.issuperset(map(type, given.values())):
            return given
        row = {}
        for name, value in given.items():
            if name not in _REQUEST_FIELDS:
                if name not in self._warned_fields:
                    self._warned_fields.add(name)
                    log.warning("store writer: requests has no column %r; value ignored", name)
                continue
            if isinstance(value, (list, dict)):
                value = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, bool):
                value = int(value)
            row[name] = value
        return row

    def _request_row(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Return a requests row with every column present, fields masked where they quote the upstream."""
        row = _BLANK_ROW.copy()
        row.update(fields)
        row["host"] = self.host
        for name in _QUOTED:
            row[name] = _clean(row[name])
        return row


def _merged(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """Return the fields of `later` over those of `earlier`, where `later` says something (not None)."""
    row = {**earlier, **later}
    for name, value in earlier.items():
        if value is not None and row[name] is None:
            row[name] = value
    return row


def _clean(text: Any) -> Any:
    """Mask anything shaped like a Google key in text that quotes the upstream.

    The proxy masks before it queues; this catches what a caller missed, on this thread,
    off the request path.
    """
    # Without values to mask, redact changes only text that holds "AIza": one substring
    # search says whether it can, without a call and an import per field.
    if not isinstance(text, str) or "AIza" not in text:
        return text
    # Imported here: proxy.redact builds on this package's mask_key, so a module-level
    # import would be circular.
    from ..redact import redact

    return redact(text)


def _extra(conn: Any, what: str, write: Callable[[], Any], *, careful: bool) -> None:
    """Write something a batch carries besides its ops (heartbeat, usage counters).

    In a careful pass (the batch failed once), a failure of its own is logged and rolled
    back to a savepoint, so it cannot sink the batch; "locked" or "unavailable" still
    propagate, since the whole batch must then wait.
    """
    if not careful:
        write()
        return
    conn.execute("SAVEPOINT extra")
    try:
        write()
    except _operational() as exc:
        if _is_locked(exc) or _is_unavailable(exc):
            raise
        log.error("store writer: %s not written: %s", what, exc)
        conn.execute("ROLLBACK TO extra")
    except Exception as exc:
        log.error("store writer: %s not written: %s", what, exc)
        conn.execute("ROLLBACK TO extra")
    conn.execute("RELEASE extra")


def _wait(done: Any, timeout: float) -> bool:
    """Wait for an OS lock without freezing gevent: poll, sleeping with whatever `time.sleep` is now.

    Under gunicorn's gevent worker `time.sleep` yields to other greenlets, so a worker that
    flushes at shutdown keeps serving its last requests meanwhile; elsewhere it is a plain sleep.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    while not done.acquire(False):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _is_locked(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.Error):
        return pg.is_contention(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_unavailable(exc: BaseException) -> bool:
    """Whether the database refused because it cannot write now (full, read-only, I/O, gone), not the data."""
    if not isinstance(exc, sqlite3.Error):
        return pg.is_unavailable(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _UNAVAILABLE
    text = str(exc).lower()
    return any(w in text for w in ("disk is full", "readonly", "read-only", "disk i/o", "unable to open"))


def _log_bad_op(op: tuple[Any, ...], exc: Exception, count: int) -> None:
    # Only the first few are logged one by one: a poisoned batch must not flood the log.
    if count <= 5:
        log.error("store writer: dropped op %r: %s", op[0], exc)
