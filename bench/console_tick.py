"""Time one console refresh tick per pane over a database with 1,000,000 request rows.

    .venv/bin/python bench/console_tick.py [--rows 1000000] [--keep PATH [--reuse]]

Seeds a temporary database (a week of traffic: requests, per-minute stats, events), then
runs the exact reads each pane does on a tick through console.reads.Reader, and prints a
table of milliseconds per pane: the first ("cold") tick, which fills the hourly stats
cache, and the median of the following ("warm") ticks. Numbers, not pass/fail.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from console.reads import Reader  # noqa: E402
from proxy.store import add_key, add_user, migrate, open_db, transaction  # noqa: E402
from proxy.store.schema import REQUEST_COLUMNS, STATS_COUNTERS  # noqa: E402
from proxy.store.util import mask_key  # noqa: E402
from proxy.store.views import EventFilter, RequestFilter  # noqa: E402

MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "text-embedding-004"]
USERS = ["alice", "bob", "carol", "dave", "erin"]
WEEK = 7 * 86400
WARM_RUNS = 7


def seed(path: Path, rows: int, now: float) -> dict[str, int]:
    """Fill `path` with keys, users, `rows` requests over the last week, their stats and events."""
    db = open_db(path)
    migrate(db)
    key_values = [f"fake-key-bench-{i:04d}" for i in range(1, 11)]
    key_ids = [add_key(db, v, label=f"k{i}") for i, v in enumerate(key_values, 1)]
    user_ids = [add_user(db, name)[0] for name in USERS]
    masked = {kid: mask_key(v) for kid, v in zip(key_ids, key_values)}
    rng = random.Random(7)
    step = WEEK / rows
    start = now - WEEK
    stats: dict[tuple[Any, ...], list[int]] = {}
    ci = {c: i for i, c in enumerate(STATS_COUNTERS)}
    details: dict[tuple[int, int], str] = {}  # attempts_detail per (key, status): json.dumps is slow

    def request_rows():
        for i in range(rows):
            t = start + i * step
            key_id = rng.choice(key_ids)
            uid = rng.randrange(len(user_ids))
            model = rng.choice(MODELS)
            dialect = "openai" if rng.random() < 0.3 else "native"
            roll = rng.random()
            status, error_class = 200, None
            if roll < 0.03:
                status, error_class = 429, "rate_limited"
            elif roll < 0.04:
                status, error_class = 503, "upstream_error"
            elif roll < 0.05:
                status, error_class = 400, "client_error"
            in_flight = i >= rows - 5
            tin, tout = rng.randrange(10, 2000), rng.randrange(0, 800)
            duration = rng.uniform(200, 9000)
            detail = details.get((key_id, status))
            if detail is None:
                detail = details[(key_id, status)] = json.dumps([{
                    "key_id": key_id, "key": masked[key_id], "status": status,
                    "outcome": error_class or "ok", "reason": "", "ms": 800.0}])
            counts = stats.setdefault((int(t // 60), key_id, model, user_ids[uid], dialect),
                                      [0] * len(STATS_COUNTERS))
            counts[ci["requests"]] += 1
            counts[ci[error_class or "ok"]] += 1
            counts[ci["tokens_in"]] += tin
            counts[ci["tokens_out"]] += tout
            row = dict.fromkeys(REQUEST_COLUMNS)  # columns of later migrations stay NULL
            row.update(
                id=f"req{i:08d}", started_at=t, ended_at=None if in_flight else t + duration / 1000,
                user_id=user_ids[uid], user_label=USERS[uid], dialect=dialect, method="POST",
                path=f"/v1beta/models/{model}:generateContent", model=model, key_id=key_id,
                key_masked=masked[key_id], status=None if in_flight else status, attempts=1,
                attempts_detail=detail, stream=int(rng.random() < 0.5),
                ttfb_ms=duration / 3, duration_ms=None if in_flight else duration,
                tokens_in=tin, tokens_out=tout, error_class=error_class,
                error_message=None if status == 200 else f"upstream said {status}", worker_pid=4242,
            )
            yield row

    cols = ", ".join(REQUEST_COLUMNS)
    with transaction(db):
        db.conn.executemany(
            f"INSERT INTO requests ({cols}) VALUES ({', '.join(':' + c for c in REQUEST_COLUMNS)})",
            request_rows(),
        )
        db.conn.executemany(
            f"INSERT INTO stats_minute (minute, key_id, model, user_id, dialect, {', '.join(STATS_COUNTERS)}) "
            f"VALUES ({', '.join('?' * (5 + len(STATS_COUNTERS)))})",
            ((*k, *v) for k, v in stats.items()),
        )
        levels = ["info"] * 8 + ["warning", "error"]
        db.conn.executemany(
            "INSERT INTO events (ts, level, message, request_id, status, key_id, model) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((start + i * (WEEK / (rows // 5)), rng.choice(levels), f"event number {i}", f"req{i * 5:08d}",
              rng.choice([None, 429, 503]), rng.choice(key_ids), rng.choice(MODELS)) for i in range(rows // 5)),
        )
        db.conn.executemany(
            "INSERT INTO key_health (key_id, model, cool_until, reason, updated_at) VALUES (?, ?, ?, ?, ?)",
            [(key_ids[0], MODELS[0], now + 40, "per-minute quota", now),
             (key_ids[1], MODELS[1], now + 4000, "per-day quota", now)],
        )
        db.conn.execute(
            "INSERT INTO workers (host, pid, started_at, last_seen, version, inflight, served) "
            "VALUES ('bench', 4242, ?, ?, '0.1.0', 5, ?)", (start, now, rows),
        )
    counts = {t: db.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("requests", "stats_minute", "events")}
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return counts


def ticks(reader: Reader) -> list[tuple[str, Callable[[], Any]]]:
    """Return (name, read) for what each pane reads on one tick, as the console does it."""
    return [
        ("header", lambda: reader.header()),
        ("requests", lambda: reader.requests(RequestFilter())),
        ("requests model:…", lambda: reader.requests(RequestFilter(models=("gemini-2.5-pro",)))),
        ("requests key:…0003", lambda: reader.requests(RequestFilter(keys=("0003",)))),
        ("requests user:alice", lambda: reader.requests(RequestFilter(users=("alice",)))),
        ("requests status:5xx", lambda: reader.requests(RequestFilter(statuses=((500, 599),)))),
        ("requests status:ok", lambda: reader.requests(RequestFilter(statuses=((100, 399),)))),
        ("requests status:err", lambda: reader.requests(RequestFilter(statuses=((400, 599),)))),
        ("requests status:live", lambda: reader.requests(RequestFilter(in_flight=True))),
        ("requests text (no match)", lambda: reader.requests(RequestFilter(text="no such thing"))),
        ("logs (first load)", lambda: reader.events(EventFilter())),
        ("logs (tail)", lambda: reader.events(EventFilter(), after_id=10**12)),
        ("logs level:error", lambda: reader.events(EventFilter(levels=("error", "critical")))),
        ("keys", lambda: reader.keys()),
        ("stats hour", lambda: reader.stats("key_id", "hour")),
        ("stats day", lambda: reader.stats("model", "day")),
        ("stats week", lambda: reader.stats("user_id", "week")),
        ("users", lambda: reader.users()),
    ]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="request rows to seed")
    parser.add_argument("--keep", metavar="PATH", help="seed this file (kept) instead of a temp one")
    parser.add_argument("--reuse", action="store_true", help="time an existing --keep file as it is")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "bench.db"
        if path.exists() and args.reuse:
            print(f"reusing {path}\n")
        elif path.exists():
            print(f"{path} exists; choose a new path (or pass --reuse)", file=sys.stderr)
            return 2
        else:
            t0 = time.perf_counter()
            counts = seed(path, args.rows, time.time())
            print(f"seeded {counts['requests']:,} requests, {counts['stats_minute']:,} stats rows, "
                  f"{counts['events']:,} events in {time.perf_counter() - t0:.1f}s "
                  f"({path.stat().st_size / 2**20:.0f} MiB)\n")
        reader = Reader(path)
        reader.header()  # open the connection outside the timings
        plan = ticks(reader)
        cold = {name: timed(fn) for name, fn in plan}
        warm = {name: statistics.median(timed(fn) for _ in range(WARM_RUNS)) for name, fn in plan}
        print(f"{'pane read':<26} {'cold ms':>9} {'warm ms':>9}")
        for name, _ in plan:
            print(f"{name:<26} {cold[name]:>9.2f} {warm[name]:>9.2f}")
        tick = {"Requests": ["header", "requests"], "Logs": ["header", "logs (tail)"],
                "Keys": ["header", "keys"], "Stats": ["header", "stats hour"], "Users": ["header", "users"]}
        print(f"\n{'one tick (header + pane)':<26} {'warm ms':>9}")
        for pane, parts in tick.items():
            print(f"{pane:<26} {sum(warm[p] for p in parts):>9.2f}")
        reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
