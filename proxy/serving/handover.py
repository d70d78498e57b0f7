"""Upgrade one host without a client noticing: a new gunicorn master, started from the installed
code on the same listening socket, takes over from the running one.

`systemctl reload gemini-proxy` runs `python -m proxy.serving.handover $MAINPID`, which:

1. leaves its own environment for the running master (systemd reads the unit's
   EnvironmentFile afresh for every command it starts), so the new master reads today's
   settings; the file lives in $RUNTIME_DIRECTORY and is removed as soon as it is read;
2. sends SIGUSR2 to the master: gunicorn forks and execs a new master (a fresh interpreter
   from the installed virtual environment) that inherits the listening socket, prepares the
   database (migrations included) and starts its workers;
3. the new master's workers, once their app is loaded, send SIGWINCH to the old master, which
   tells systemd that the new master is now the service's main process and stops gracefully:
   it accepts nothing more and lets its requests and streams finish (GRACEFUL_TIMEOUT).
   Connections arriving meanwhile wait in the shared listen queue for a new worker;
4. exits 0 once the old master is gone, or 1 if the new master exits first (the old one then
   keeps serving, on the old code and settings).

gunicorn's own SIGHUP would fork new workers from the master's memory, where much of the
proxy (and every library) is already imported: old and new code mixed. Here SIGHUP does what
SIGUSR2 does.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from gunicorn import systemd
from gunicorn.arbiter import Arbiter

from proxy.serving.multiproc import MULTIPROC_ENV, OWN_ENV

PARENT_ENV = "GUNICORN_PID"  # gunicorn sets it in a new master: the pid of the master it replaces
ENVIRONMENT_FILE = "reload-environment.json"
# What belongs to this run of the service rather than to the command that asked for the reload.
KEEP_FROM_RUN = ("NOTIFY_SOCKET", "JOURNAL_STREAM", MULTIPROC_ENV, OWN_ENV)
# What systemd or gunicorn set for one process only.
NOT_PASSED = ("MAINPID", "SYSTEMD_EXEC_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "GUNICORN_PID",
              "GUNICORN_FD")
FIND_NEW_MASTER_SECONDS = 15.0  # the fork and exec of the new master; its boot is bounded by --timeout
POLL_SECONDS = 0.02  # often enough to see a new master that fails at once


def inherited() -> bool:
    """Whether this process is a new master taking over from a running one."""
    return PARENT_ENV in os.environ


def runtime_dir() -> Path | None:
    """The service's private runtime folder (systemd's RuntimeDirectory=), if there is one."""
    value = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(value) if value else None


# --- in the master ------------------------------------------------------------------------

def requested_environment(pid: int) -> dict[str, str] | None:
    """Take (read and remove) the environment the reload command left for master `pid`."""
    folder = runtime_dir()
    if folder is None:
        return None
    path = folder / ENVIRONMENT_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    finally:
        path.unlink(missing_ok=True)
    if not isinstance(data, dict) or data.get("for") != pid or not isinstance(data.get("environment"), dict):
        return None
    return {str(k): str(v) for k, v in data["environment"].items()}


def new_master_environment(requested: Mapping[str, str], running: Mapping[str, str]) -> dict[str, str]:
    """The environment for the new master: the reload command's, with this run's own variables."""
    env = {k: v for k, v in requested.items() if k not in KEEP_FROM_RUN and k not in NOT_PASSED}
    env.update({k: running[k] for k in KEEP_FROM_RUN if k in running})
    return env


class HandoverArbiter(Arbiter):
    """gunicorn's arbiter, with the handover described in this module and a stop that can
    first make /ready fail (STOP_UNREADY_SECONDS)."""

    stop_at: float | None = None  # when a stop that waits for STOP_UNREADY_SECONDS goes on

    def start(self) -> None:
        if inherited():
            # Not systemd's main process yet: its READY=1 would be refused (and logged). The old
            # master names this one the main process once a worker serves.
            notify = os.environ.pop("NOTIFY_SOCKET", None)
            try:
                super().start()
            finally:
                if notify is not None:
                    os.environ["NOTIFY_SOCKET"] = notify
        else:
            super().start()

    def reexec(self) -> None:
        requested = requested_environment(os.getpid())
        if requested is None:
            super().reexec()
            return
        running = self.cfg.env_orig
        self.cfg.env_orig = new_master_environment(requested, running)
        try:
            super().reexec()  # the child execs the new master with it; this process goes on
        finally:
            self.cfg.env_orig = running

    def handle_term(self) -> None:
        """SIGTERM: stop gracefully. With STOP_UNREADY_SECONDS, go on serving that long first
        while /ready answers 503, so a load balancer's health check takes this host out before
        it stops accepting. A second SIGTERM stops at once."""
        settings = getattr(self.app, "settings", None)
        delay = settings.stop_unready if settings is not None else 0.0
        if delay <= 0 or self.stop_at is not None:
            raise StopIteration
        self.log.info("Stopping in %.1fs; /ready answers 503 until then", delay)
        self.stop_at = time.monotonic() + delay
        self.kill_workers(signal.SIGUSR2)

    def maybe_promote_master(self) -> None:
        super().maybe_promote_master()
        if self.stop_at is not None and time.monotonic() >= self.stop_at:
            raise StopIteration  # the main loop's handler stops gracefully

    def handle_hup(self) -> None:
        self.log.info("Hang up: starting a new master from the installed code (as on USR2)")
        self.reexec()

    def handle_winch(self) -> None:
        """A worker of the new master serves: hand the service over, then stop gracefully."""
        if not self.reexec_pid:
            self.log.debug("SIGWINCH ignored: no new master")
            return
        self.log.info("New master %s serves; this one (%s) stops accepting and lets its requests "
                      "finish", self.reexec_pid, self.pid)
        systemd.sd_notify(f"MAINPID={self.reexec_pid}", self.log)
        raise StopIteration


# --- in a worker --------------------------------------------------------------------------

def parent_of(pid: int) -> int | None:
    """The parent pid of `pid`, from /proc (None where there is no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def announce_ready(worker: Any) -> None:
    """gunicorn's post_worker_init: in a new master's worker whose app is loaded, ask the old
    master (the new master's parent) to hand over."""
    old = os.environ.get(PARENT_ENV)
    if not old or not old.isdigit():
        return
    parent = parent_of(worker.ppid)
    if parent is not None and parent != int(old):
        return  # the old master is gone already (this pid may be someone else's now)
    try:
        os.kill(int(old), signal.SIGWINCH)
    except ProcessLookupError:
        pass


# --- the reload command -------------------------------------------------------------------

def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def new_master_of(pid: int) -> int | None:
    """The new master that master `pid` started (its child execed with GUNICORN_PID=pid)."""
    marker = f"{PARENT_ENV}={pid}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if parent_of(int(entry.name)) != pid:
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, ValueError):
            continue
    return None


def leave_environment(folder: Path, pid: int, environment: Mapping[str, str]) -> None:
    """Write `environment` for master `pid`, readable by this user only."""
    tmp = folder / f".{ENVIRONMENT_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"for": pid, "written": time.time(), "environment": dict(environment)}, handle)
    os.replace(tmp, folder / ENVIRONMENT_FILE)


def upgrade(pid: int, timeout: float) -> tuple[bool, str]:
    """Have master `pid` replaced by a new master from the installed code; say how it went."""
    if not alive(pid):
        return False, f"no gemini-proxy master runs as pid {pid}"
    folder = runtime_dir()
    if folder is not None:
        leave_environment(folder, pid, os.environ)
    os.kill(pid, signal.SIGUSR2)
    start = time.monotonic()
    child = None
    while time.monotonic() - start < timeout:
        if child is None:
            child = new_master_of(pid)
            if child is None and time.monotonic() - start > FIND_NEW_MASTER_SECONDS:
                return False, (f"no new master took over: it failed at once, or an earlier reload "
                               f"is still finishing; the running version (pid {pid}) keeps serving; "
                               "its log says why")
        if child is not None and not alive(child):
            return False, (f"the new master {child} exited before taking over: the running version "
                           f"(pid {pid}) keeps serving; its log says why")
        if child is not None and not alive(pid):
            return True, f"master {child} serves the installed version; the old one has finished"
        if child is None and not alive(pid):
            return False, f"master {pid} exited and no new master took over"
        time.sleep(POLL_SECONDS)
    return False, f"the handover from master {pid} to {child} did not finish within {timeout:.0f}s"


def main(argv: list[str] | None = None) -> int:
    from proxy.settings import SettingsError, load_settings

    parser = argparse.ArgumentParser(
        prog="python -m proxy.serving.handover",
        description="Replace a running gemini-proxy master by one from the installed code and "
                    "today's settings, with no client error (systemd's ExecReload=).")
    parser.add_argument("pid", type=int, help="the running master ($MAINPID)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="give up after this long (default: GRACEFUL_TIMEOUT + 20)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()  # as the new master will: refuse a broken setting now
    except SettingsError as exc:
        print(f"gemini-proxy reload: {exc}; the running version keeps serving", file=sys.stderr)
        return 1
    ok, message = upgrade(args.pid, args.timeout or settings.graceful_timeout + 20)
    print(f"gemini-proxy reload: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
