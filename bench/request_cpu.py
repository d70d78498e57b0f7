"""CPU per request of the proxy's own path, in one process, for before/after comparisons.

    .venv/bin/python bench/request_cpu.py [--n 3000] [--stream] [--profile out.prof]

The fake upstream runs in its own process (no latency); the app (create_app, with the
serving guard and Prometheus in multiprocess mode, as under gunicorn) is called through
WSGI directly, one request after another, so gunicorn's parsing and the network are left
out and what remains is the proxy's code, Flask, the upstream client and the writer
thread. The figure is the process's CPU time (all threads) per request: far steadier on
a shared machine than wall time. With --profile, cProfile records the calling thread.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

BODY = b'{"contents": [{"role": "user", "parts": [{"text": "benchmark the proxy"}]}]}'


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--profile", metavar="FILE")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="request-cpu-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
    (tmp / "metrics").mkdir()
    fake = subprocess.Popen([sys.executable, "-m", "proxy.fake.server", "--port", "0",
                             "--chunks", "10", "--no-record"], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        url = fake.stdout.readline().rsplit(" ", 1)[-1].strip()  # type: ignore[union-attr]
        return run(args, tmp, url)
    finally:
        fake.terminate()
        fake.wait(5)


def run(args: argparse.Namespace, tmp: Path, url: str) -> int:
    from proxy.app import create_app
    from proxy.settings import Settings

    settings = Settings(db_path=str(tmp / "bench.db"), upstream_url=url,
                        user_keys=["bench-user-key"],
                        google_keys=[f"bench-key-{i:04d}" for i in range(1, 5)],
                        log_level="WARNING")
    app = create_app(settings)
    path = ("/v1beta/models/gemini-2.5-flash:streamGenerateContent" if args.stream
            else "/v1beta/models/gemini-2.5-flash:generateContent")
    query = "alt=sse" if args.stream else ""

    def environ() -> dict:
        return {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": path,
                "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
                "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5555",
                "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(BODY)),
                "HTTP_HOST": "127.0.0.1:8080", "HTTP_X_GOOG_API_KEY": "bench-user-key",
                "HTTP_USER_AGENT": "bench", "HTTP_ACCEPT": "*/*",
                "wsgi.input": io.BytesIO(BODY), "wsgi.url_scheme": "http",
                "wsgi.errors": sys.stderr, "wsgi.multithread": False,
                "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0)}

    status: list[str] = []

    def start_response(s: str, headers: list, exc_info=None):  # noqa: ANN001
        status.append(s)
        return lambda data: None

    def one() -> None:
        body = app(environ(), start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close:
                close()

    from proxy import metrics
    from proxy.exchange import publish_metrics

    state = app.extensions["proxy"]
    metrics.TALLY.immediate = False  # as in a gevent worker, which publishes twice a second

    for _ in range(300):  # warm: pools, imports, caches
        one()
    time.sleep(0.5)
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
    status.clear()
    c0, t0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    for i in range(args.n):
        one()
        if i % 500 == 499:  # about half a second of requests at the rates seen here
            publish_metrics(state)
    if prof:
        prof.disable()
    # The writer commits what these requests queued: its CPU counts too.
    deadline = time.monotonic() + 10
    while state.writer.depth and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    c1, t1 = time.process_time(), time.perf_counter()
    bad = [s for s in status if not s.startswith("200")]
    print(f"{'stream' if args.stream else 'non-stream'}: {args.n} requests, "
          f"{1e6 * (c1 - c0) / args.n:.0f} us CPU per request (process, all threads), "
          f"{1e6 * (t1 - t0) / args.n:.0f} us wall; non-200: {len(bad)} {bad[:1]}")
    if prof:
        prof.dump_stats(args.profile)
    state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
