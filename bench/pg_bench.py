"""Two hosts on one PostgreSQL: how fast a key death crosses hosts; writer rows/s, PostgreSQL vs SQLite.

    .venv/bin/python bench/pg_bench.py [--trials 20] [--rows 20000]

Propagation: two `gemini-proxy serve` (host-a, host-b) on a throwaway PostgreSQL cluster
(tests/pg.py) and the fake upstream, with the test settings (WRITER_INTERVAL 0.05 s,
POOL_REFRESH 0.2 s) and one Google key per trial. Each trial turns one key invalid on the
fake, sends through A until the fake has seen that key, and polls B's /ready every 10 ms
until B counts one more dead key: the time between is the propagation (A's 400, A's
writer batch, B's next refresh). Writer: `Writer.request_finished` for N rows, then flush,
on PostgreSQL and on a SQLite file. Needs PostgreSQL binaries and psycopg, like the tests.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from conftest import USER_KEY, LiveProxy  # noqa: E402
from pg import Cluster, _bin_dir  # noqa: E402
from proxy.fake.server import FakeUpstream  # noqa: E402
from proxy.store.writer import Writer  # noqa: E402


def dead_count(proxy: LiveProxy) -> int:
    return requests.get(proxy.url + "/ready", timeout=5).json()["keys"]["dead"]


def propagation(cluster: Cluster, trials: int, workdir: Path) -> list[float]:
    """Return the seconds each key death took to reach host B."""
    fake = FakeUpstream()
    fake.start()
    url = cluster.create_database()
    keys = [f"bench-key-{i:04d}" for i in range(trials + 1)]
    env = dict(PROXY_DB=url, GOOGLE_KEYS="|".join(keys))
    a = LiveProxy(workdir, fake.url, PROXY_HOST_NAME="host-a", **env).start()
    b = LiveProxy(workdir, fake.url, PROXY_HOST_NAME="host-b", **env).start()
    out = []
    try:
        for key in keys[:trials]:
            before = dead_count(b)
            fake.set_key(key, mode="invalid")
            fake.clear_requests()
            while not any(r["key"] == key for r in fake.requests):
                requests.post(f"{a.url}/v1beta/models/gemini-2.5-flash:generateContent",
                              headers={"x-goog-api-key": USER_KEY},
                              json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=30)
            seen = time.monotonic()
            while dead_count(b) <= before:
                assert time.monotonic() - seen < 30, "B never saw the death"
                time.sleep(0.01)
            out.append(time.monotonic() - seen)
    finally:
        a.stop()
        b.stop()
        fake.stop()
    return out


def throughput(cluster: Cluster, workdir: Path, seconds: float, rounds: int) -> tuple[float, float]:
    """Return c=32 non-stream req/s through one host on SQLite and on PostgreSQL.

    Both proxies run side by side in front of one fake (50 ms), measured in ABBA rounds
    (SQLite, PostgreSQL, then PostgreSQL, SQLite) so drift falls on both.
    """
    import procs

    fake = procs.Fake(latency_ms=50, chunks=10, chunk_delay_ms=0)
    fronts = {}
    for name, db in (("sqlite", None), ("postgres", cluster.create_database())):
        folder = workdir / name
        folder.mkdir()
        fronts[name] = procs.Proxy(upstream=fake.url, workers=3, connections=1000, workdir=folder,
                                   log_path=folder / "proxy.log", db=db)
    gen = procs.LoadGen()
    done = {"sqlite": 0.0, "postgres": 0.0}
    try:
        for i in range(rounds):
            order = ["sqlite", "postgres"] if i % 2 == 0 else ["postgres", "sqlite"]
            for name in order:
                r = gen.run({"op": "run", "host": "127.0.0.1", "port": fronts[name].port,
                             "path": "/v1beta/models/gemini-2.5-flash:generateContent",
                             "key": procs.USER_KEY, "body": PROMPT, "stream": False, "concurrency": 32,
                             "warmup": 0.5, "duration": seconds, "max_warmup": 5, "timeout": 30},
                            timeout=seconds + 60)
                done[name] += r["completed"] / r["window"]
    finally:
        gen.stop()
        for front in fronts.values():
            front.stop()
        fake.stop()
    return done["sqlite"] / rounds, done["postgres"] / rounds


PROMPT = '{"contents": [{"role": "user", "parts": [{"text": "benchmark the proxy"}]}]}'


def writer_rate(target: str, rows: int) -> float:
    """Return rows per second the writer commits to `target`."""
    w = Writer(target, interval=0.05)
    w.start()
    started = time.perf_counter()
    for _ in range(rows):
        w.request_finished({"id": uuid.uuid4().hex, "started_at": time.time(), "status": 200,
                            "model": "gemini-2.5-flash", "path": "/v1beta/models/x:generateContent"})
    assert w.flush(timeout=300)
    rate = rows / (time.perf_counter() - started)
    w.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput phase")
    parser.add_argument("--rounds", type=int, default=4, help="throughput phases per backend")
    args = parser.parse_args(argv)
    bindir = _bin_dir()
    if bindir is None:
        print("no PostgreSQL binaries (initdb, pg_ctl); set PG_BIN", file=sys.stderr)
        return 2
    cluster = Cluster(bindir)
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            times = propagation(cluster, args.trials, Path(tmp))
            print(f"key death A→B over {len(times)} trials: median {statistics.median(times) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms")
            pg_rate = writer_rate(cluster.create_database(), args.rows)
            sqlite_rate = writer_rate(str(Path(tmp) / "bench.db"), args.rows)
            print(f"writer, {args.rows} request rows: PostgreSQL {pg_rate:,.0f} rows/s, "
                  f"SQLite {sqlite_rate:,.0f} rows/s")
            lite, pg = throughput(cluster, Path(tmp), args.seconds, args.rounds)
            print(f"native non-stream, c=32, one host: SQLite {lite:,.1f} req/s, PostgreSQL "
                  f"{pg:,.1f} req/s ({100 * pg / lite:.1f}%)")
    finally:
        cluster.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
