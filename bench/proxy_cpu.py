"""CPU per request of the real server under one load, for quick before/after pairs.

    .venv/bin/python bench/proxy_cpu.py                  # non-stream, 256 clients, 3 workers
    .venv/bin/python bench/proxy_cpu.py --clients 32 --stream --rounds 3
    PYTHONPATH=/path/to/other/tree .venv/bin/python bench/proxy_cpu.py   # another tree's code
    .venv/bin/python bench/proxy_cpu.py --floor          # the stack floor instead of the proxy

Starts the fake upstream (50 ms before answering), `gemini-proxy serve` in a temporary
folder and the load generator (bench/loadgen.py), warms up once, then runs `--rounds`
measured phases of `--seconds` each and prints, per round, completions per second and the
proxy's CPU (master and workers, from /proc) per request. About 40 s with the defaults.
On a shared machine, alternate the two trees being compared and read the medians.

--floor measures the stack floor (bench/floor_app.py: a bare Flask pass-through on urllib3
under gunicorn with the proxy's worker class, same workers and connections) under the
same load: what any app on the project's stack pays, beside which to read the proxy's pairs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from procs import USER_KEY, CpuMeter, Fake, Floor, LoadGen, Proxy  # noqa: E402

BODY = '{"contents": [{"role": "user", "parts": [{"text": "benchmark the proxy"}]}]}'


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=256, help="keep-alive connections [256]")
    p.add_argument("--stream", action="store_true", help="streamGenerateContent?alt=sse instead")
    p.add_argument("--workers", type=int, default=3, help="proxy (or floor) workers [3, the default on 2 cores]")
    p.add_argument("--floor", action="store_true",
                   help="measure the stack floor (bench/floor_app.py) instead of the proxy")
    p.add_argument("--rounds", type=int, default=2, help="measured phases [2]")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per phase [4]")
    args = p.parse_args()
    fake = Fake(latency_ms=50, chunks=10, chunk_delay_ms=0)
    workdir = Path(tempfile.mkdtemp(prefix="proxy-cpu-"))
    server = loadgen = None
    try:
        kind = Floor if args.floor else Proxy
        server = kind(upstream=fake.url, workers=args.workers, connections=1000, workdir=workdir,
                      log_path=workdir / f"{kind.name}.log")
        loadgen = LoadGen()
        method = "streamGenerateContent?alt=sse" if args.stream else "generateContent"
        cmd = {"op": "run", "host": "127.0.0.1", "port": server.port, "key": USER_KEY, "body": BODY,
               "path": f"/v1beta/models/gemini-2.5-flash:{method}", "stream": args.stream,
               "concurrency": args.clients, "warmup": 1, "duration": args.seconds, "timeout": 30,
               "max_warmup": 5}
        loadgen.run(cmd, 120)  # warm: connections, pools, caches
        for i in range(args.rounds):
            meter = CpuMeter(server.pids())
            meter.start()
            result = loadgen.run(cmd, 120)
            cpu = meter.stop()
            print(f"{server.name} round {i + 1}: {result['completed'] / result['window']:.0f} req/s, "
                  f"{1e6 * cpu / max(1, result['total']):.0f} us CPU per request, "
                  f"errors {result['errors']}", flush=True)
    finally:
        if loadgen is not None:
            loadgen.stop()
        if server is not None:
            server.stop()
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
