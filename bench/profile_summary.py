"""Summarise a py-spy "raw" (collapsed stacks) profile of one proxy worker, per request.

    .venv/bin/python bench/profile_summary.py PROFILE.txt --rate 500 --requests 3000

py-spy samples every thread `rate` times a second and skips idle ones. The bench passes
each thread's CPU from /proc over the same window, and samples only split it; without
that a sample counts as 1/rate s (which overstates CPU on a busy machine). Divided by the
requests the worker served, that gives µs per request.
Three views of the hub thread (where requests run):

  layer   each sample charged to the innermost layer that is not plumbing (gevent sockets,
          re, functools, ...); time inside socket calls is shown apart, per layer
          ("gunicorn: socket send/recv" is the kernel's loopback TCP work for the client's
          response), and what remains under proxy/ is the proxy's own Python;
  proxy   inclusive time of each function in proxy/ (a function counts once per sample);
  calls   inclusive time of each library call made directly from proxy/ code
          (caller -> callee): the price of what the proxy asks its libraries to do.

The raw file is also a valid input for https://www.speedscope.app (collapsed stacks).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?):(?P<line>\d+)\)$")

# Modules that only carry a call (socket plumbing, helpers): a sample whose leaf is here
# belongs to whoever called them.
_TRANSPARENT = ("gevent/", "<string>", "socket.py", "selectors.py", "ssl.py", "re/", "functools.py",
                "typing.py", "enum.py", "abc.py", "contextlib.py", "threading.py", "weakref.py",
                "_weakrefset.py", "copy.py", "dataclasses.py", "collections/", "<frozen",
                "greenlet/", "types.py", "codecs.py", "encodings/")

# (prefix of the file, layer) in the order they are tested against each frame.
_LAYERS = (
    ("logging/", "logging"),
    ("json/", "json"),
    ("sqlite3/", "sqlite3"),
    ("sqlite_utils/", "sqlite3"),
    ("uuid.py", "uuid"),
    ("hashlib.py", "hashing"),
    ("hmac.py", "hashing"),
    ("urllib3/", "upstream client: urllib3"),
    ("http/client.py", "upstream client: http.client"),
    ("email/", "upstream client: http.client"),
    ("requests/", "upstream client: requests"),
    ("urllib/", "upstream client: requests"),
    ("werkzeug/routing/", "Flask/Werkzeug: routing"),
    ("werkzeug/", "Flask/Werkzeug"),
    ("flask/", "Flask/Werkzeug"),
    ("proxy/", "proxy's own code"),
    ("gunicorn/", "gunicorn (parse request, write response)"),
)


@dataclass(frozen=True)
class Frame:
    func: str
    file: str

    @property
    def name(self) -> str:
        return f"{self.func} ({self.file})" if self.file else self.func

    @property
    def own(self) -> bool:
        return self.file.startswith("proxy/")


@dataclass
class Profile:
    """Samples grouped by thread; stacks run root first."""

    hub: list[tuple[list[Frame], int]] = field(default_factory=list)
    threads: Counter = field(default_factory=Counter)  # kind -> samples
    tids: dict[int, str] = field(default_factory=dict)  # thread id -> kind


def parse_frame(text: str) -> Frame:
    m = _FRAME.match(text)
    return Frame(m["func"], m["file"]) if m else Frame(text, "")


HUB = "hub: the main thread, where every request runs"


def thread_kind(frames: list[Frame], main: bool) -> str:
    """Name the thread a sample came from: the hub, or one of the real OS threads."""
    if main:
        return HUB
    files = {f.file for f in frames}
    if "proxy/store/writer.py" in files:
        return "writer thread (SQLite batches)"
    if any(f.func.startswith("Refresher.") for f in frames):
        return "refresher thread (pool view)"
    if any(f.file.startswith("gevent/threadpool") or f.func == "getaddrinfo" for f in frames):
        return "gevent threadpool (DNS lookups)"
    return "other OS threads"


_TID = re.compile(r"^thread \((0x[0-9a-fA-F]+|\d+)\)")


def load(lines: Iterable[str], pid: int | None = None) -> Profile:
    """Parse py-spy raw output recorded with --threads; `pid` names the main thread
    (its thread id equals the process id; without it, the lowest thread id is taken)."""
    rows = []
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        tid = None
        if parts and parts[0].startswith("thread ("):  # --threads puts the thread first
            m = _TID.match(parts[0])
            tid = int(m.group(1), 0) if m else None
            parts = parts[1:]
        rows.append((tid, [parse_frame(p) for p in parts], int(count)))
    tids = {t for t, _, _ in rows if t is not None}
    main = pid if pid is not None else (min(tids) if tids else None)
    prof = Profile()
    for tid, frames, n in rows:
        kind = thread_kind(frames, tid is None or tid == main)
        prof.threads[kind] += n
        if tid is not None:
            # A thread's kind is fixed; an idle-looking sample must not rename it.
            if prof.tids.get(tid) in (None, "other OS threads"):
                prof.tids[tid] = kind
        if kind == HUB:
            prof.hub.append((frames, n))
    return prof


_SOCKET_FILES = ("gevent/_socketcommon.py", "gevent/_socket3.py", "socket.py", "ssl.py")


def layer_of(frames: list[Frame]) -> str:
    """The innermost non-plumbing layer of a stack (see the module docstring); socket
    calls are split out, as they are mostly the kernel's loopback TCP work."""
    socket_io = False
    for f in reversed(frames):
        if f.file.startswith(_TRANSPARENT):
            socket_io = socket_io or f.file.startswith(_SOCKET_FILES)
            continue
        for prefix, layer in _LAYERS:
            if f.file.startswith(prefix):
                return f"{layer}: socket send/recv" if socket_io else layer
        name = f"other: {f.file.split('/')[0]}"
        return f"{name}: socket send/recv" if socket_io else name
    if frames and frames[-1].func == "Hub.run":
        return "gevent hub loop (libev, C)"
    return "gevent / greenlet switching"


def views(prof: Profile) -> dict[str, Counter]:
    layers: Counter = Counter()
    own: Counter = Counter()
    calls: Counter = Counter()
    for frames, n in prof.hub:
        layers[layer_of(frames)] += n
        seen_own: set[str] = set()
        seen_calls: set[str] = set()
        for i, f in enumerate(frames):
            if not f.own:
                continue
            seen_own.add(f"{f.func} ({f.file})")
            # Calls back into the server (the worker class wraps gunicorn's handler) are
            # the whole request, not a price the proxy pays; leave them out.
            if (i + 1 < len(frames) and not frames[i + 1].own
                    and not frames[i + 1].file.startswith("gunicorn/")):
                callee = frames[i + 1]
                seen_calls.add(f"{f.func} -> {callee.name}")
        for k in seen_own:
            own[k] += n
        for k in seen_calls:
            calls[k] += n
    return {"layers": layers, "own": own, "calls": calls}


def report(prof: Profile, rate: float, requests: int, top: int = 14,
           thread_cpu: dict[int, float] | None = None) -> str:
    """Render the views as text, in µs of CPU per request.

    With `thread_cpu` (CPU seconds per thread id from /proc over the sampled window) the
    µs come from the kernel's accounting and samples only split them; otherwise a sample
    counts 1/rate s, which overstates CPU on a busy machine (a runnable thread waiting
    for a core still looks active to py-spy).
    """
    n_req = max(1, requests)
    hub_samples = sum(n for _, n in prof.hub)
    kind_cpu: dict[str, float] = {}
    if thread_cpu:
        for tid, cpu in thread_cpu.items():
            kind = prof.tids.get(tid, "other OS threads (not sampled)")
            kind_cpu[kind] = kind_cpu.get(kind, 0.0) + cpu
        source = "/proc CPU per thread, split by samples"
    else:
        kind_cpu = {k: n / rate for k, n in prof.threads.items()}
        source = f"samples x 1/{rate:g} s"
    hub_us = 1e6 * kind_cpu.get(HUB, hub_samples / rate) / n_req
    out = [f"{requests} requests; {sum(prof.threads.values())} samples at {rate:g} Hz; "
           f"µs from {source}; {1e6 * sum(kind_cpu.values()) / n_req:.0f} µs of CPU per request"]

    def table(title: str, rows: list[tuple[str, float, float]]) -> None:
        out.append("")
        out.append(f"{title:<78} {'µs/req':>7} {'share':>6}")
        for name, us, share in rows:
            label = name if len(name) <= 78 else name[:75] + "..."
            out.append(f"{label:<78} {us:7.0f} {100 * share:5.1f}%")

    total_cpu = sum(kind_cpu.values()) or 1.0
    table("threads (share of the worker's CPU)",
          [(k, 1e6 * c / n_req, c / total_cpu)
           for k, c in sorted(kind_cpu.items(), key=lambda kv: -kv[1])])
    v = views(prof)
    for title, key in (("hub: by layer (innermost non-plumbing frame)", "layers"),
                       ("hub: proxy functions, inclusive", "own"),
                       ("hub: library calls made from proxy code, inclusive", "calls")):
        rows = [(name, hub_us * n / max(1, hub_samples), n / max(1, hub_samples))
                for name, n in v[key].most_common(top)]
        table(title + " (share of the hub)", rows)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", help="py-spy record --format raw output")
    parser.add_argument("--rate", type=float, required=True, help="py-spy sampling rate (Hz)")
    parser.add_argument("--requests", type=int, required=True,
                        help="requests the profiled worker served while sampled")
    parser.add_argument("--pid", type=int, help="the profiled process (its main thread is the hub)")
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args(argv)
    with open(args.raw, encoding="utf-8") as f:
        print(report(load(f, args.pid), args.rate, args.requests, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
