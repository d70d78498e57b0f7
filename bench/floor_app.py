"""The stack floor: the cost of the project's stack with none of the proxy's work.

    FLOOR_UPSTREAM_URL=http://127.0.0.1:8787 PYTHONPATH=bench \\
        .venv/bin/gunicorn -k proxy.serving.worker.ProxyWorker -b 127.0.0.1:8080 floor_app:app

The proxy's shape is fixed: a Flask app, served by gunicorn with gevent workers (the
project's own worker class, ProxyWorker), calling upstream through urllib3's connection
pool. This is the smallest idiomatic pass-through on that stack: one POST route that reads
the body, sends it upstream with a fixed key and hands the answer back, streams relayed
chunk by chunk as they come. No auth, no key pool, no database, no per-request logging,
no error mapping. What it costs per request is what any app on this stack pays, and so
what no change to the proxy's own code can go below; bench/proxy_bench.py and
bench/proxy_cpu.py (--floor) measure it beside the proxy.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import flask
import urllib3

UPSTREAM = urlsplit(os.environ.get("FLOOR_UPSTREAM_URL", "http://127.0.0.1:8787"))
# The fake takes any key; a fixed one stands in for the key a real app would add.
HEADERS = {"Content-Type": "application/json", "x-goog-api-key": "floor-fake-key"}

# Built at import, which gunicorn does in each worker after the fork (no --preload): one
# pool per worker, as large as the bench's 256 clients, so no call waits for a connection.
pool = urllib3.HTTPConnectionPool(UPSTREAM.hostname, UPSTREAM.port, maxsize=256,
                                  timeout=urllib3.Timeout(connect=10, read=300))
app = flask.Flask(__name__)


@app.post("/v1beta/models/<path:rest>")
def model_call(rest: str) -> flask.Response:
    """Send the body upstream as it came and answer with what came back."""
    target = flask.request.full_path.rstrip("?")  # path and query, as the client sent them
    body = flask.request.get_data()
    if rest.endswith(":streamGenerateContent"):
        r = pool.urlopen("POST", target, body=body, headers=HEADERS, retries=False,
                         preload_content=False)
        return flask.Response(relay(r), status=r.status, content_type="text/event-stream")
    r = pool.urlopen("POST", target, body=body, headers=HEADERS, retries=False,
                     preload_content=True)
    return flask.Response(r.data, status=r.status, content_type=r.headers.get("Content-Type"))


def relay(r: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """Yield the upstream's chunks as they arrive (one HTTP chunk in, one out)."""
    done = False
    try:
        yield from r.stream(None)
        done = True
    finally:
        if done:
            r.release_conn()
        else:
            r.close()  # a body left half-read must not go back to the pool
