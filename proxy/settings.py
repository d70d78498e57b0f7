"""One validated Settings object, read from the environment and `.env`."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping


class SettingsError(ValueError):
    """A setting has a value the proxy cannot use; the message names the setting."""


def _pipe_list(raw: str) -> list[str]:
    """Split a pipe- (or comma-/newline-) separated list, dropping blanks and duplicates."""
    # A dict keeps order and finds duplicates in O(1): GOOGLE_KEYS may hold 10,000 keys.
    items: dict[str, None] = {}
    for part in raw.replace("\n", "|").replace(",", "|").split("|"):
        part = part.strip()
        if part:
            items.setdefault(part, None)
    return list(items)


def _aliases(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _pipe_list(raw):
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"expected name=model, got {item!r}")
        out[name.strip()] = target.strip().removeprefix("models/")
    return out


def _bind(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:5001")
    return raw


def _networks(raw: str) -> list[str]:
    for item in _pipe_list(raw):
        ipaddress.ip_network(item, strict=False)
    return _pipe_list(raw)


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _number(kind: Callable[[str], Any], *, zero_ok: bool) -> Callable[[str], Any]:
    """Parse a number that must be above zero (or at least zero, with `zero_ok`)."""
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value < 0 or (value == 0 and not zero_ok):
            raise ValueError("must not be negative" if zero_ok else "must be greater than zero")
        return value
    return parse


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return _number(kind, zero_ok=False)


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return _number(kind, zero_ok=True)


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def _default_workers() -> int:
    """One worker per core plus one: a burst that lands on a busy worker's hub then has
    somewhere else to go (measured: 84-87 % of direct throughput at 32 clients on 2 cores,
    against 75-81 % with one worker per core)."""
    return (os.cpu_count() or 1) + 1


def setting(env: str, parse: Callable[[str], Any], default: Any, doc: str) -> Any:
    """Declare a field read from environment variable `env`."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default),
                     metadata={"env": env, "parse": parse, "doc": doc})
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Everything the proxy can be told; each field names its environment variable."""

    user_keys: list[str] = setting("USER_KEYS", _pipe_list, [],
                                   "Keys clients use to reach the proxy (pipe-separated).")
    google_keys: list[str] = setting("GOOGLE_KEYS", _pipe_list, [],
                                     "Google AI Studio keys merged into the pool at start.")
    remove_google_keys: list[str] = setting("REMOVE_GOOGLE_KEYS", _pipe_list, [],
                                            "Google keys to mark removed at start.")
    log_level: str = setting("LOG_LEVEL", _log_level, "INFO", "DEBUG, INFO, WARNING or ERROR.")
    db_path: str = setting("PROXY_DB", str, "data/keys.db",
                           "SQLite database file, or postgresql://user:pass@host:port/db shared by several hosts.")
    host_name: str = setting("PROXY_HOST_NAME", str, "",
                             "This host's name in the shared database (default: the hostname).")
    bind: str = setting("PROXY_BIND", _bind, "127.0.0.1:5001", "HOST:PORT to listen on.")
    workers: int = setting("PROXY_WORKERS", _positive(int), _default_workers(),
                           "gunicorn worker processes (default: cores + 1).")
    worker_connections: int = setting("PROXY_WORKER_CONNECTIONS", _positive(int), 2000,
                                      "Concurrent connections per worker (gevent).")
    upstream_url: str = setting("UPSTREAM_URL", _url, "https://generativelanguage.googleapis.com",
                                "The Gemini API base URL.")
    connect_timeout: float = setting("UPSTREAM_CONNECT_TIMEOUT", _positive(float), 5.0,
                                     "Seconds to open a connection upstream.")
    read_timeout: float = setting("UPSTREAM_READ_TIMEOUT", _positive(float), 300.0,
                                  "Seconds of upstream silence before giving up.")
    max_body_mb: float = setting("MAX_REQUEST_BODY_MB", _positive(float), 32.0,
                                 "Largest request body accepted, in MiB.")
    max_buffered_body_mb: float = setting(
        "MAX_BUFFERED_BODY_MB", _positive(float), 64.0,
        "Request-body MiB one worker holds at once; more waits briefly, then gets 503.")
    body_timeout: float = setting("BODY_TIMEOUT_SECONDS", _positive(float), 30.0,
                                  "Seconds a client gets to send a request body in full (then 408).")
    head_timeout: float = setting("HEAD_TIMEOUT_SECONDS", _positive(float), 5.0,
                                  "Seconds a client gets to send a request's headers.")
    max_attempts: int = setting("RETRY_MAX_ATTEMPTS", _positive(int), 3,
                                "Keys tried per request before giving up.")
    cooling_wait: float = setting("MAX_COOLDOWN_WAIT", _non_negative(float), 3.0,
                                  "Seconds to wait for a key when all are cooling.")
    trusted_proxies: list[str] = setting("TRUSTED_PROXIES", _networks, ["127.0.0.1/32", "::1/128"],
                                         "Peers whose X-Forwarded-* headers are believed.")
    model_aliases: dict[str, str] = setting("MODEL_ALIASES", _aliases, {},
                                            "name=model pairs for OpenAI clients.")
    cors_origins: list[str] = setting("CORS_ORIGINS", _pipe_list, [],
                                      "Origins allowed by CORS (empty: CORS off; * for any).")
    image_fetch_private: bool = setting("IMAGE_FETCH_PRIVATE", _bool, False,
                                        "Let image_url and file_url fetches reach private addresses.")
    prices_file: str = setting("PRICES_FILE", str, "",
                               "Your own price table for cost estimates (empty: the bundled one).")
    metrics_token: str = setting("METRICS_TOKEN", str, "",
                                 "Bearer token for /metrics from other hosts (loopback needs none).")
    retention_days: float = setting("RETENTION_DAYS", _non_negative(float), 30.0,
                                    "Days of request rows and events kept (0: forever).")
    stats_retention_days: float = setting("STATS_RETENTION_DAYS", _non_negative(float), 400.0,
                                          "Days of per-minute statistics kept for charts.")
    pool_refresh: float = setting("POOL_REFRESH_SECONDS", _positive(float), 1.0,
                                  "How often each worker re-reads keys from the database.")
    writer_interval: float = setting("WRITER_INTERVAL_SECONDS", _positive(float), 0.15,
                                     "How often the writer commits a batch.")
    graceful_timeout: float = setting("GRACEFUL_TIMEOUT", _positive(float), 30.0,
                                      "Seconds in-flight requests get to finish on stop.")
    stop_unready: float = setting("STOP_UNREADY_SECONDS", _non_negative(float), 0.0,
                                  "On stop, seconds to go on serving while /ready answers 503 (behind "
                                  "a load balancer that health-checks /ready).")
    demo: bool = setting("PROXY_DEMO", _bool, False, "Set by `gemini-proxy demo`.")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_buffered_body_bytes(self) -> int:
        return int(self.max_buffered_body_mb * 1024 * 1024)

    def replace(self, **changes: Any) -> "Settings":
        """Return a copy with `changes` applied (already-parsed values)."""
        return dataclasses.replace(self, **changes)


def describe() -> list[tuple[str, str, str]]:
    """Return (ENV, default, doc) for every setting, for .env.example and --help."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, list):
            default = "|".join(default)
        elif isinstance(default, dict):
            default = "|".join(f"{k}={v}" for k, v in default.items())
        rows.append((f.metadata["env"], str(default), f.metadata["doc"]))
    return rows


def _readable(path: Path) -> bool:
    """Whether `path` is a file we may read (a folder we cannot enter counts as no file)."""
    try:
        return path.is_file() and os.access(path, os.R_OK)
    except OSError:
        return False


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: str | Path | None = ".env",
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build Settings from `.env` (if present), then the environment, then `overrides`.

    The environment wins over `.env`; `overrides` (raw strings from command-line flags,
    keyed by environment name) win over both. Raises SettingsError naming the bad setting.
    """
    values: dict[str, str] = {}
    if dotenv and _readable(Path(dotenv)):
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    if overrides:
        values.update({k: str(v) for k, v in overrides.items() if v is not None})
    parsed: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        env = f.metadata["env"]
        if env not in values:
            continue
        try:
            parsed[f.name] = f.metadata["parse"](values[env])
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{env}={values[env]!r} is not valid: {exc}") from None
    return Settings(**parsed)


def load_or_exit(prog: str, overrides: Mapping[str, Any] | None = None,
                 env_file: str | Path | None = ".env") -> Settings:
    """Load settings as every command does, or print the one line that says why not and exit 2.

    `serve`, `demo`, the `keys`/`users`/`db` commands and the console all come through
    here, so they agree on the database and every other setting.
    """
    import sys

    try:
        return load_settings(overrides=overrides, dotenv=env_file or None)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
