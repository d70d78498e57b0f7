"""Start, watch and stop the bench's processes: the fake upstream, the proxy, the stack
floor, nginx, the load generator.

Every process here is started by the bench and ended by its own pid (terminate, then
kill after a grace period). CPU and memory come straight from /proc, so the numbers
cover gunicorn's master and workers without any help from the proxy itself.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
USER_KEY = "bench-user-key"
GOOGLE_KEYS = [f"bench-key-{i:04d}" for i in range(1, 5)]


# --- /proc ---------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None once it is gone."""
    return cpu_seconds_of(f"/proc/{pid}/stat")


def thread_cpu(pid: int) -> dict[int, float]:
    """utime + stime of each thread of a process, in seconds, keyed by thread id."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        c = cpu_seconds_of(f"/proc/{pid}/task/{tid}/stat")
        if c is not None:
            out[int(tid)] = c
    return out


def cpu_seconds_of(path: str) -> float | None:
    """utime + stime from a /proc stat file (process or thread); None if it is gone."""
    try:
        with open(path, encoding="ascii") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may contain spaces or parentheses: count fields after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def open_sockets(pid: int) -> int:
    """How many sockets a process holds open (client and upstream connections)."""
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[name] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers, for the master)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:  # kernels without CONFIG_PROC_CHILDREN: scan every process's parent
        kids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    kids.append(int(entry))
        return kids


class CpuMeter:
    """CPU seconds a set of processes used between `start()` and `stop()`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {p: c for p in self.pids if (c := cpu_seconds(p)) is not None}

    def stop(self) -> float:
        """Return the total; per-process figures are left in `self.deltas`."""
        self.deltas: dict[int, float] = {}
        for pid, c0 in self.before.items():
            c1 = cpu_seconds(pid)
            if c1 is not None:  # a worker that died mid-phase loses its share (and shows in errors)
                self.deltas[pid] = c1 - c0
        return sum(self.deltas.values())


# --- helpers -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 5) -> Any:
    """GET (or POST `body` as JSON) a loopback URL and return the decoded JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def _read_line(stream: IO[str], timeout: float) -> str:
    """readline() with a deadline (the child may die or hang before it speaks)."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output within {timeout:.0f} s")
    return stream.readline()


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, grace: float = 15) -> None:
    """Signal our own child by pid, wait, and kill it if it outstays `grace`."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


# --- the fake upstream -----------------------------------------------------------------------

class Fake:
    """`python -m proxy.fake.server` on a free loopback port, reconfigurable at run time."""

    def __init__(self, *, latency_ms: float, chunks: int, chunk_delay_ms: float) -> None:
        cmd = [PYTHON, "-m", "proxy.fake.server", "--host", "127.0.0.1", "--port", "0",
               "--latency-ms", str(latency_ms), "--chunks", str(chunks),
               "--chunk-delay-ms", str(chunk_delay_ms), "--no-record"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = _read_line(self.proc.stdout, 20)  # type: ignore[arg-type]
        if "listening on" not in line:
            stop_process(self.proc)
            raise RuntimeError(f"fake upstream did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def configure(self, **knobs: Any) -> None:
        """Change latency_ms / chunk_delay_ms / chunks for every later call."""
        http_json(f"{self.url}/_fake/config", knobs)

    def stop(self) -> None:
        stop_process(self.proc, grace=5)


# --- gunicorn: the proxy ------------------------------------------------------------------

def _settings_names() -> set[str]:
    from proxy.settings import describe

    return {env for env, _, _ in describe()}


class Gunicorn:
    """A gunicorn master started here, with its workers: ready when it answers HTTP and
    every worker is up; stopped by its pid."""

    name = "gunicorn"

    def __init__(self, cmd: list[str], *, port: int, workers: int, cwd: Path,
                 env: dict[str, str], log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workers_wanted = workers
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # never leave a half-started gunicorn behind
            raise

    def answers(self) -> bool:
        """Whether a worker serves; OSError counts as not yet."""
        raise NotImplementedError

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log.name}")
            try:
                if self.answers() and len(self.workers()) == self.workers_wanted:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s; see {self.log.name}")

    def workers(self) -> list[int]:
        return children(self.pid)

    def pids(self) -> list[int]:
        """Master and workers: everything its CPU is charged to."""
        return [self.pid, *self.workers()]

    def stop(self) -> None:
        stop_process(self.proc, grace=20)
        self.log.close()


def clean_env() -> dict[str, str]:
    """This environment without the proxy's settings: a caller's shell might carry some,
    and they would change what is measured."""
    names = _settings_names()
    return {k: v for k, v in os.environ.items() if k not in names}


class Proxy(Gunicorn):
    """`gemini-proxy serve` (gunicorn, gevent workers) with bench settings, in a temp folder."""

    name = "proxy"

    def __init__(self, *, upstream: str, workers: int, connections: int, workdir: Path,
                 log_path: Path, google_keys: list[str] | None = None,
                 db: str | None = None) -> None:
        port = free_port()
        # A clean slate, and a folder without a .env (see clean_env).
        env = clean_env()
        env.update(PROXY_BIND=f"127.0.0.1:{port}", PROXY_WORKERS=str(workers),
                   PROXY_WORKER_CONNECTIONS=str(connections), PROXY_DB=db or str(workdir / "bench.db"),
                   UPSTREAM_URL=upstream, USER_KEYS=USER_KEY,
                   # INFO writes one line per request; that is a logging benchmark, not ours.
                   LOG_LEVEL="WARNING")
        if google_keys is None:
            env["GOOGLE_KEYS"] = "|".join(GOOGLE_KEYS)
        else:
            # Through the folder's .env, as an operator would: Linux refuses a single
            # environment string over 128 KiB, and 10,000 keys are several times that.
            (workdir / ".env").write_text("GOOGLE_KEYS=" + "|".join(google_keys) + "\n")
        script = Path(PYTHON).parent / "gemini-proxy"
        cmd = [str(script), "serve"] if script.exists() else [
            PYTHON, "-c", "import sys; from proxy.cli.main import main; sys.exit(main(['serve']))"]
        super().__init__(cmd, port=port, workers=workers, cwd=workdir, env=env, log_path=log_path)

    def answers(self) -> bool:
        return http_json(f"{self.url}/ready", timeout=2).get("status") == "ready"


# --- the stack floor -------------------------------------------------------------------------

FLOOR_WORKER = "proxy.serving.worker.ProxyWorker"


class Floor(Gunicorn):
    """bench/floor_app.py under gunicorn with the proxy's worker class: the project's stack
    (Flask, gunicorn + gevent, urllib3) passing requests through with none of the proxy's
    work. Workers and connections as the proxy's; keep-alive as the proxy's config sets it."""

    name = "floor"

    def __init__(self, *, upstream: str, workers: int, connections: int, workdir: Path,
                 log_path: Path) -> None:
        port = free_port()
        env = clean_env()  # ProxyWorker reads the proxy's settings (head timeout, body limit)
        env["FLOOR_UPSTREAM_URL"] = upstream
        # floor_app is found on the path; a caller's PYTHONPATH (another tree's proxy) stays.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                          env.get("PYTHONPATH")]))
        cwd = workdir / "floor"  # no .env here: ProxyWorker would read one
        cwd.mkdir(parents=True, exist_ok=True)
        cmd = [PYTHON, "-m", "gunicorn", "-k", FLOOR_WORKER, "-w", str(workers),
               "--worker-connections", str(connections), "-b", f"127.0.0.1:{port}",
               "--keep-alive", "75", "--log-level", "warning", "--no-control-socket",
               "floor_app:app"]
        super().__init__(cmd, port=port, workers=workers, cwd=cwd, env=env, log_path=log_path)

    def answers(self) -> bool:
        # The app has one POST route: any answer at all means a worker has loaded it.
        try:
            urllib.request.urlopen(f"{self.url}/", timeout=2).close()
        except urllib.error.HTTPError:
            pass
        return True


# --- the load generator ----------------------------------------------------------------------

class LoadGen:
    """bench/loadgen.py in its own process, one JSON command and result per line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([PYTHON, str(Path(__file__).with_name("loadgen.py"))],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.pid = self.proc.pid

    def submit(self, cmd: dict[str, Any]) -> None:
        """Start a phase without waiting for it (to attach a profiler meanwhile)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def run(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run one phase and return its result."""
        self.submit(cmd)
        return self.result(timeout)

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the result of the phase last submitted."""
        assert self.proc.stdout is not None
        line = _read_line(self.proc.stdout, timeout)
        if not line:
            raise RuntimeError(f"load generator exited ({self.proc.poll()})")
        result = json.loads(line)
        if not result.get("ok"):
            raise RuntimeError(f"load generator failed: {result.get('error')}")
        return result

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc, grace=2)


def which_py_spy() -> str | None:
    """py-spy from the venv first (pip install py-spy), then PATH."""
    local = Path(PYTHON).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


# --- nginx, a plain reverse proxy -------------------------------------------------------------

NGINX = "/usr/sbin/nginx"

NGINX_CONF = """\
# A plain reverse proxy to the fake: what any proxy in front of it costs at least.
worker_processes 2;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    upstream fake {{
        server 127.0.0.1:{upstream_port};
        keepalive 512;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def which_nginx() -> str | None:
    """Debian's nginx binary, or one on PATH; None when it is not installed."""
    return NGINX if os.access(NGINX, os.X_OK) else shutil.which("nginx")


class Nginx:
    """nginx in the foreground with its own config, pid file and temp paths in `workdir`."""

    def __init__(self, *, binary: str, upstream_port: int, workdir: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.dir = workdir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=self.dir, port=self.port,
                                          upstream_port=upstream_port)
                        .replace("worker_processes 2;", f"worker_processes {workers};"))
        # -e: the error log before the config is read (the default path is not ours).
        self.proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(self.dir),
                                      "-e", str(self.dir / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self.workers_wanted = workers
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {err.strip()[-300:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    if len(self.workers()) == self.workers_wanted:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nginx not listening within {timeout:.0f} s")

    def workers(self) -> list[int]:
        return children(self.pid)

    def pids(self) -> list[int]:
        return [self.pid, *self.workers()]

    def stop(self) -> None:
        # SIGQUIT is nginx's graceful stop; SIGTERM its fast one: either ends the workers.
        stop_process(self.proc, sig=signal.SIGTERM, grace=5)
        if self.proc.stderr:
            self.proc.stderr.close()
