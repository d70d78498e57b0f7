"""Pool scale: does a pool of 10,000 keys cost what a pool of 10 does?

    .venv/bin/python bench/pool_bench.py            # about 3 minutes
    .venv/bin/python bench/pool_bench.py --quick    # about 1 minute

Two parts; numbers, not pass/fail.

1. Simulation, in this process, for 100 / 1,000 / 10,000 keys x 1 / 5 / 20 models:
   - choose: KeyPool.choose() in µs per request, inside the real per-request cycle
     (choose, begin, report ok, end; their writer ops go to an unstarted Writer's queue,
     which is what the request path pays), with 2% of the keys resting and 10% with a
     learned limit;
   - refresh: what the pool's refresher costs once a second in steady state while another
     worker serves --sim-rps requests a second through its own (real) Writer: the read
     (PoolFeed.read, on the refresher thread) and the apply (KeyPool.apply, on the hub);
   - start: the first full read and apply, and the pool's memory (tracemalloc).
2. The real server, `gemini-proxy serve` (two gevent workers) with 10 keys and with 10,000
   keys (GOOGLE_KEYS in each folder's .env), both running side by side in front of one
   fake upstream (--latency-ms before answering); c=1 and c=32 non-stream, in ABBA
   rounds; throughput, CPU per request (master + workers, from /proc), RSS per worker, the
   time from start to ready, and the CPU of each worker's pool-refresh thread (named so
   in /proc) per second.

Everything runs on loopback; every process is started here and stopped by its pid.
Results: stdout, and bench/results/pool-REPORT.txt + pool-results.json (ignored by git).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the bench's helpers, and the proxy package

import procs  # noqa: E402
from proxy_bench import PROMPT, Cell, Tally, log, pct  # noqa: E402

from proxy.outcomes import Kind, Outcome  # noqa: E402
from proxy.pool import KeyPool  # noqa: E402
from proxy.store import migrate, open_db  # noqa: E402
from proxy.store.keys import merge_env_keys  # noqa: E402
from proxy.store.poolfeed import PoolFeed  # noqa: E402
from proxy.store.util import pacific_day  # noqa: E402
from proxy.store.writer import Writer  # noqa: E402

TARGETS = {"choose_us": 20.0, "refresh_ms_per_s": 10.0, "throughput_ratio": 0.90,
           "cpu_ratio": 1.2, "rss_mb": 80.0}
OK = Outcome(Kind.OK, 200)


def fake_keys(n: int) -> list[str]:
    """Key-shaped values (39 characters, as Google's are) that the fake accepts."""
    return [f"AIza{'bench':x<10}{i:025d}" for i in range(n)]


# --- 1. simulation -----------------------------------------------------------------------------

def simulate(keys: int, models: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Measure choose and refresh for one pool size and model count."""
    path = workdir / f"sim-{keys}-{models}.db"
    db = open_db(path)
    migrate(db)
    merge_env_keys(db, fake_keys(keys), [])
    names = [f"gemini-sim-{j}" for j in range(models)]
    rng = random.Random(keys * 100 + models)
    now = time.time()
    other = Writer(path)  # another worker, writing as the proxy does
    other.start()
    for kid in rng.sample(range(1, keys + 1), max(1, keys // 50)):
        other.key_cooled(kid, rng.choice(names), now + 3600, "rate_limited", "bench")
    for kid in rng.sample(range(1, keys + 1), max(1, keys // 10)):
        other.limit_learned(kid, rng.choice(names), "rpd", 1_000_000, now)
    other.flush()

    tracemalloc.start()
    local = Writer(path)  # never started: its queue is where the request path's ops go
    pool = KeyPool(local)
    feed = PoolFeed(open_db(path), pool.worker)
    t0 = time.perf_counter()
    pool.apply(feed.read())
    for name in names:
        pool.choose(name)  # each model's set is built on its first choice
    start_s = time.perf_counter() - t0
    pool_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()

    # choose, inside the whole per-request cycle
    n = args.choices
    choose_s = cycle_s = 0.0
    perf = time.perf_counter
    for i in range(n):
        model = names[i % models]
        c0 = perf()
        k = pool.choose(model)
        c1 = perf()
        pool.begin(k, model)
        pool.report(k, model, OK)
        pool.end(k)
        cycle_s += perf() - c0
        choose_s += c1 - c0
        if i % 1000 == 999:
            local._queue.clear()

    # refresh in steady state: another worker's traffic lands each second
    reads, applies = [], []
    day = pacific_day(now)
    for _ in range(args.refreshes):
        ts = time.time()
        for _ in range(args.sim_rps):
            kid = rng.randrange(1, keys + 1)
            other.usage("other", day, ts, kid, rng.choice(names), 0, 1, 50, 20)
        other.usage("other", day, ts, 0, "", 1, args.sim_rps, 0, 0)
        if rng.random() < 0.5:
            other.key_cooled(rng.randrange(1, keys + 1), rng.choice(names), ts + 30, "rate_limited", "x")
        other.flush()
        r0 = perf()
        view = feed.read()
        r1 = perf()
        pool.apply(view)
        r2 = perf()
        reads.append(r1 - r0)
        applies.append(r2 - r1)
    other.close()
    return {
        "keys": keys, "models": models,
        "choose_us": 1e6 * choose_s / n, "cycle_us": 1e6 * cycle_s / n,
        "refresh_read_ms": 1000 * statistics.median(reads),
        "refresh_apply_ms": 1000 * statistics.median(applies),
        "start_s": start_s, "pool_mb": pool_mb,
    }


# --- 2. the real server ------------------------------------------------------------------------

def command(port: int, c: int, duration: float, warmup: float, timeout: float) -> dict[str, Any]:
    cell = Cell("non-stream", False, c)
    return {"op": "run", "host": "127.0.0.1", "port": port, "path": cell.path,
            "key": procs.USER_KEY, "body": PROMPT, "stream": False, "concurrency": c,
            "warmup": warmup, "duration": duration, "once": False, "max_warmup": 5.0,
            "timeout": timeout}


def refresh_cpu(proxy: procs.Proxy) -> dict[int, float]:
    """CPU seconds of each worker's pool-refresh thread so far, by worker pid."""
    out = {}
    for pid in proxy.workers():
        total = 0.0
        for tid, cpu in procs.thread_cpu(pid).items():
            try:
                with open(f"/proc/{pid}/task/{tid}/comm", encoding="ascii") as f:
                    if f.read().strip() == "pool-refresh":
                        total += cpu
            except OSError:
                pass
        out[pid] = total
    return out


def servers(args: argparse.Namespace, workdir: Path, out: Path) -> dict[str, Any]:
    fake = procs.Fake(latency_ms=args.latency_ms, chunks=4, chunk_delay_ms=0)
    gen = procs.LoadGen()
    proxies: dict[str, procs.Proxy] = {}
    result: dict[str, Any] = {"start_s": {}, "cells": {}, "rss_mb": {}, "refresh_ms_per_s": {}}
    try:
        for label, n in (("10 keys", 10), ("10,000 keys", 10_000)):
            folder = workdir / f"server-{n}"
            folder.mkdir()
            t0 = time.monotonic()
            proxies[label] = procs.Proxy(upstream=fake.url, workers=args.workers, connections=2000,
                                         workdir=folder, log_path=out / f"pool-proxy-{n}.log",
                                         google_keys=fake_keys(n))
            result["start_s"][label] = round(time.monotonic() - t0, 2)
            log(f"  {label}: ready in {result['start_s'][label]} s")
        for proxy in proxies.values():  # warm both (connection pools, first-request caches)
            gen.run(command(proxy.port, 4, 0.5, 0.2, 10), timeout=30)
        time.sleep(1.0)  # let the writers flush what the warm-up queued
        for c in args.concurrency:
            tallies = {label: Tally() for label in proxies}
            refresh = {label: 0.0 for label in proxies}
            spent = {label: 0.0 for label in proxies}
            per_round = args.duration / args.rounds
            for rnd in range(args.rounds):
                order = list(proxies) if rnd % 2 == 0 else list(reversed(proxies))
                for label in order:
                    proxy = proxies[label]
                    meter = procs.CpuMeter(proxy.pids())
                    before = refresh_cpu(proxy)
                    meter.start()
                    t0 = time.monotonic()
                    r = gen.run(command(proxy.port, c, per_round, args.warmup, 10),
                                timeout=per_round + args.warmup + 60)
                    tallies[label].add(r, meter.stop())
                    spent[label] += time.monotonic() - t0
                    after = refresh_cpu(proxy)
                    refresh[label] += sum(after.get(p, 0.0) - v for p, v in before.items())
            for label, t in tallies.items():
                s = t.summary()
                s["refresh_ms_per_s_per_worker"] = 1000 * refresh[label] / spent[label] / args.workers
                result["cells"].setdefault(f"c={c}", {})[label] = s
                log(f"  c={c:<3} {label:<12} {t.rps:8.1f} req/s  p50 {pct(t.lat, 50):6.2f} ms  "
                    f"{t.cpu_ms_per_req:.2f} ms CPU/req  refresh "
                    f"{s['refresh_ms_per_s_per_worker']:.2f} ms/s/worker  errors {t.errors}")
        for label, proxy in proxies.items():
            result["rss_mb"][label] = [round(procs.memory_mb(p).get("VmRSS", 0.0), 1)
                                       for p in proxy.workers()]
            # idle: the refresher alone, no traffic
            before = refresh_cpu(proxy)
            time.sleep(args.idle_seconds)
            after = refresh_cpu(proxy)
            result["refresh_ms_per_s"][label] = round(
                1000 * sum(after.get(p, 0.0) - v for p, v in before.items())
                / args.idle_seconds / args.workers, 2)
    finally:
        for proxy in proxies.values():
            proxy.stop()
        gen.stop()
        fake.stop()
    return result


# --- the report --------------------------------------------------------------------------------

def render(sim: list[dict[str, Any]], real: dict[str, Any] | None, args: argparse.Namespace) -> str:
    lines = ["Simulation (one process; choose inside choose/begin/report/end; refresh = read + apply "
             f"once a second while another worker serves {args.sim_rps} req/s)", "",
             "  keys  models  choose µs  cycle µs  refresh read ms  apply ms  first load s  pool MB",
             "  ----  ------  ---------  --------  ---------------  --------  ------------  -------"]
    for r in sim:
        lines.append(f"  {r['keys']:>5}  {r['models']:>6}  {r['choose_us']:>9.2f}  {r['cycle_us']:>8.1f}  "
                     f"{r['refresh_read_ms']:>15.2f}  {r['refresh_apply_ms']:>8.2f}  {r['start_s']:>12.2f}  "
                     f"{r['pool_mb']:>7.1f}")
    worst_choose = max(r["choose_us"] for r in sim)
    worst_refresh = max(r["refresh_read_ms"] + r["refresh_apply_ms"] for r in sim)
    lines += ["", f"  target: choose ≤ {TARGETS['choose_us']:g} µs: worst {worst_choose:.2f} µs "
                  f"{'met' if worst_choose <= TARGETS['choose_us'] else 'MISSED'}",
              f"  target: refresh ≤ {TARGETS['refresh_ms_per_s']:g} ms per second: worst "
              f"{worst_refresh:.2f} ms {'met' if worst_refresh <= TARGETS['refresh_ms_per_s'] else 'MISSED'}"]
    if real:
        lines += ["", f"Real server: gemini-proxy serve, {args.workers} gevent workers, fake upstream "
                      f"{args.latency_ms:g} ms, non-stream, {args.rounds} ABBA rounds of "
                      f"{args.duration / args.rounds:g} s per proxy per cell", "",
                  "  cell   pool          req/s     p50 ms  CPU ms/req  refresh ms/s/worker",
                  "  -----  -----------  --------  ------  ----------  -------------------"]
        for cell, per in real["cells"].items():
            for label, s in per.items():
                lines.append(f"  {cell:<5}  {label:<11}  {s['rps']:>8.1f}  {s['p50_ms']:>6.2f}  "
                             f"{s['cpu_ms_per_req']:>10.3f}  {s['refresh_ms_per_s_per_worker']:>19.2f}")
        lines += ["", "  start to ready: " + ", ".join(f"{k} {v} s" for k, v in real["start_s"].items()),
                  "  RSS per worker after load (MiB): "
                  + ", ".join(f"{k} {v}" for k, v in real["rss_mb"].items()),
                  "  refresh thread idle (ms CPU per s per worker): "
                  + ", ".join(f"{k} {v}" for k, v in real["refresh_ms_per_s"].items())]
        c32 = real["cells"].get("c=32")
        if c32:
            small, big = c32["10 keys"], c32["10,000 keys"]
            ratio = big["rps"] / small["rps"] if small["rps"] else float("nan")
            cpu = big["cpu_ms_per_req"] / small["cpu_ms_per_req"] if small["cpu_ms_per_req"] else float("nan")
            rss = max(real["rss_mb"]["10,000 keys"] or [0])
            lines += [f"  target: c=32 throughput ≥ {TARGETS['throughput_ratio']:.0%} of 10 keys: {ratio:.0%} "
                      f"{'met' if ratio >= TARGETS['throughput_ratio'] else 'MISSED'}",
                      f"  target: CPU per request ≤ {TARGETS['cpu_ratio']:g}x of 10 keys: {cpu:.2f}x "
                      f"{'met' if cpu <= TARGETS['cpu_ratio'] else 'MISSED'}",
                      f"  target: memory per worker ≤ {TARGETS['rss_mb']:g} MB: {rss:.1f} MiB "
                      f"{'met' if rss <= TARGETS['rss_mb'] else 'MISSED'}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer choices, refreshes and seconds")
    p.add_argument("--keys", default="100,1000,10000", help="pool sizes to simulate")
    p.add_argument("--models", default="1,5,20", help="model counts to simulate")
    p.add_argument("--choices", type=int, default=20_000, help="choices per simulated pool")
    p.add_argument("--refreshes", type=int, default=8, help="refreshes per simulated pool")
    p.add_argument("--sim-rps", type=int, default=200, help="the other worker's requests per second")
    p.add_argument("--no-server", action="store_true", help="simulation only")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency-ms", type=float, default=5.0, help="the fake's delay before answering")
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--duration", type=float, default=16.0, help="seconds per proxy per cell")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--idle-seconds", type=float, default=5.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.choices, args.refreshes, args.duration, args.rounds, args.idle_seconds = 5000, 4, 4.0, 2, 2.0
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pool-bench-") as tmp:
        workdir = Path(tmp)
        sim = []
        log("simulation")
        for keys in (int(k) for k in args.keys.split(",")):
            for models in (int(m) for m in args.models.split(",")):
                r = simulate(keys, models, args, workdir)
                log(f"  {keys:>6} keys {models:>2} models: choose {r['choose_us']:.2f} µs, refresh "
                    f"{r['refresh_read_ms']:.2f} + {r['refresh_apply_ms']:.2f} ms, start {r['start_s']:.2f} s")
                sim.append(r)
        real = None
        if not args.no_server:
            log("real servers, side by side")
            real = servers(args, workdir, out)
    report = render(sim, real, args)
    print("\n" + report)
    (out / "pool-REPORT.txt").write_text(report + "\n")
    (out / "pool-results.json").write_text(json.dumps({"simulation": sim, "server": real,
                                                       "args": vars(args)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
