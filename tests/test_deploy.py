"""The production files in systemd-services/: unit files, Traefik configuration, install guide.

They are checked against what the proxy expects (its default bind, graceful timeout,
keep-alive, read timeout, CLI flags), with `systemd-analyze` when it is installed.
"""
from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from proxy.serving.gunicorn_conf import options as gunicorn_options
from proxy.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "systemd-services"
PROXY_UNIT = "gemini-proxy.service"
TRAEFIK_UNIT = "traefik.service"
BACKUP_UNIT = "gemini-proxy-backup.service"
BACKUP_TIMER = "gemini-proxy-backup.timer"
UNITS = [PROXY_UNIT, TRAEFIK_UNIT, BACKUP_UNIT, BACKUP_TIMER]
STATIC = DEPLOY / "traefik" / "traefik.yml"
DYNAMIC_DIR = DEPLOY / "traefik" / "dynamic"
ONE_HOST = DYNAMIC_DIR / "gemini-proxy.yml"
# Installed instead of the one-host file (the same names), never beside it.
TWO_HOSTS = DYNAMIC_DIR / "gemini-proxy-two-hosts.yml"
DYNAMIC_FILES = [ONE_HOST, TWO_HOSTS]
INSTALL = DEPLOY / "INSTALL.md"

# Highest acceptable `systemd-analyze security` exposure (0 = locked down, 10 = exposed).
EXPOSURE_LIMITS = {PROXY_UNIT: 2.0, TRAEFIK_UNIT: 2.5, BACKUP_UNIT: 1.0}

# The sandbox every long-running unit gets (values as written in the unit).
HARDENING = {
    "NoNewPrivileges": "true",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "PrivateDevices": "true",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectKernelLogs": "true",
    "ProtectControlGroups": "true",
    "ProtectClock": "true",
    "ProtectHostname": "true",
    "RestrictNamespaces": "true",
    "RestrictRealtime": "true",
    "RestrictSUIDSGID": "true",
    "LockPersonality": "true",
    "MemoryDenyWriteExecute": "true",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


# --- unit files -------------------------------------------------------------------------

def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Return {section: [(key, value), …]} like systemd reads it: keys may repeat,
    comments only on their own lines, a trailing backslash continues the line."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit(name: str) -> dict[str, list[tuple[str, str]]]:
    return parse_unit((DEPLOY / name).read_text())


def values(name: str, section: str, key: str) -> list[str]:
    return [v for k, v in unit(name).get(section, []) if k == key]


def one(name: str, section: str, key: str) -> str:
    found = values(name, section, key)
    assert len(found) == 1, f"{name}: expected one {key}= in [{section}], found {found}"
    return found[0]


def timespan(text: str) -> float:
    """Seconds in a systemd time span: `45`, `45s`, `1min 30s`, `2m`, `500ms`."""
    units = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "": 1.0, "s": 1.0, "sec": 1.0,
             "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "minutes": 60.0,
             "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0}
    text = text.strip()
    if text == "infinity":
        return math.inf
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    assert parts and "".join(n + u for n, u in parts) == text.replace(" ", ""), text
    return sum(float(n) * units[u] for n, u in parts)


def exec_argv(name: str, key: str = "ExecStart") -> list[str]:
    return shlex.split(one(name, "Service", key).lstrip("-@:+!"))


def test_unit_files_exist() -> None:
    for name in UNITS + ["INSTALL.md"]:
        assert (DEPLOY / name).is_file(), name
    assert STATIC.is_file() and DYNAMIC_DIR.is_dir()


@pytest.mark.parametrize("name", UNITS)
def test_no_comment_after_a_value(name: str) -> None:
    """systemd takes `Key=value # note` as the value `value # note`: comments go on their own line."""
    for number, raw in enumerate((DEPLOY / name).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;[":
            continue
        value = line.partition("=")[2]
        assert not re.search(r"\s[#;]", value), f"{name}:{number}: comment after a value: {raw!r}"
        assert raw == raw.rstrip(), f"{name}:{number}: trailing whitespace"


def test_proxy_unit_runs_serve_from_the_venv_as_its_own_user() -> None:
    from proxy.cli.main import build_parser

    argv = exec_argv(PROXY_UNIT)
    assert argv[0] == "/opt/gemini-proxy/.venv/bin/gemini-proxy"
    assert argv[1] == "serve"
    assert build_parser().parse_args(argv[1:]).func.__name__ == "cmd_serve"
    user = one(PROXY_UNIT, "Service", "User")
    assert user and user != "root"
    assert one(PROXY_UNIT, "Service", "Group") == user
    env_file = one(PROXY_UNIT, "Service", "EnvironmentFile")
    assert env_file.startswith("/etc/"), "a missing env file must fail the start, not be skipped"


def test_proxy_database_lives_in_the_state_directory() -> None:
    state = one(PROXY_UNIT, "Service", "StateDirectory").split()[0]
    state_dir = f"/var/lib/{state}"
    argv = exec_argv(PROXY_UNIT)
    db = argv[argv.index("--db") + 1]
    assert Path(db).parent == Path(state_dir), db
    assert one(PROXY_UNIT, "Service", "StateDirectoryMode") == "0700"
    assert one(PROXY_UNIT, "Service", "WorkingDirectory") == state_dir
    writable = " ".join(values(PROXY_UNIT, "Service", "ReadWritePaths")).split()
    assert writable == [state_dir], "the state directory must be the only writable path"


def test_proxy_unit_stops_gracefully_after_the_proxy_does() -> None:
    settings = Settings()
    assert one(PROXY_UNIT, "Service", "Restart") == "on-failure"
    assert one(PROXY_UNIT, "Service", "KillSignal") == "SIGTERM"
    assert one(PROXY_UNIT, "Service", "KillMode") == "mixed"
    stop = timespan(one(PROXY_UNIT, "Service", "TimeoutStopSec"))
    # gunicorn gives requests GRACEFUL_TIMEOUT, then workers flush the writer: leave room, also
    # for the STOP_UNREADY_SECONDS INSTALL.md recommends with several hosts.
    assert stop >= settings.graceful_timeout + recommended_stop_unready() + 10, (stop, settings.graceful_timeout)


def test_proxy_unit_reloads_by_handing_over_to_a_new_master() -> None:
    """`systemctl reload` runs the handover command on the main pid, from the same venv, with
    a private runtime folder for the environment it passes on, within a start timeout that
    covers the new master's start and the old one's drain."""
    from proxy.serving.handover import main as handover_main

    argv = exec_argv(PROXY_UNIT, "ExecReload")
    assert argv[0] == str(Path(exec_argv(PROXY_UNIT)[0]).parent / "python")
    assert argv[1:4] == ["-m", "proxy.serving.handover", "$MAINPID"]
    with pytest.raises(SystemExit) as parsed:
        handover_main(["--help"])
    assert parsed.value.code == 0
    assert one(PROXY_UNIT, "Service", "RuntimeDirectory") == "gemini-proxy"
    assert one(PROXY_UNIT, "Service", "RuntimeDirectoryMode") == "0700"
    assert one(PROXY_UNIT, "Service", "NotifyAccess") == "main", "the old master hands MAINPID= over"
    start = timespan(one(PROXY_UNIT, "Service", "TimeoutStartSec"))
    assert start >= Settings().graceful_timeout + 20, "the reload command's own limit must fit"


def test_proxy_unit_readiness_matches_gunicorn() -> None:
    """Type=notify waits for READY=1, which gunicorn's arbiter sends once it listens."""
    import inspect

    import gunicorn.arbiter

    if one(PROXY_UNIT, "Service", "Type") == "notify":
        assert "READY=1" in inspect.getsource(gunicorn.arbiter)


def test_proxy_unit_has_file_descriptors_for_every_connection() -> None:
    settings = Settings()
    limit = int(one(PROXY_UNIT, "Service", "LimitNOFILE"))
    # Each worker holds up to worker_connections client sockets, each with an upstream one.
    assert limit >= 2 * settings.workers * settings.worker_connections


@pytest.mark.parametrize("name", [PROXY_UNIT, TRAEFIK_UNIT, BACKUP_UNIT])
def test_units_are_hardened(name: str) -> None:
    for key, expected in HARDENING.items():
        assert one(name, "Service", key) == expected, f"{name}: {key}"
    families = " ".join(values(name, "Service", "RestrictAddressFamilies")).split()
    assert families and not {"AF_PACKET", "AF_BLUETOOTH"} & set(families) and families[0][0] != "~"
    filters = values(name, "Service", "SystemCallFilter")
    assert "@system-service" in filters
    assert any(f.startswith("~") and "@privileged" in f for f in filters)


@pytest.mark.parametrize("name", [PROXY_UNIT, BACKUP_UNIT])
def test_proxy_units_keep_no_capabilities(name: str) -> None:
    assert one(name, "Service", "CapabilityBoundingSet") == ""
    assert one(name, "Service", "AmbientCapabilities") == ""


def test_traefik_unit_keeps_only_the_low_port_capability() -> None:
    assert exec_argv(TRAEFIK_UNIT) == ["/usr/local/bin/traefik", "--configFile=/etc/traefik/traefik.yml"]
    assert one(TRAEFIK_UNIT, "Service", "User") == "traefik"
    assert one(TRAEFIK_UNIT, "Service", "CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert one(TRAEFIK_UNIT, "Service", "AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert one(TRAEFIK_UNIT, "Service", "Restart") == "on-failure"
    # In a user namespace CAP_NET_BIND_SERVICE cannot bind :80/:443 of the host.
    assert values(TRAEFIK_UNIT, "Service", "PrivateUsers") in ([], ["false"])


def test_backup_unit_copies_the_proxy_database_as_the_proxy_user() -> None:
    argv = exec_argv(BACKUP_UNIT)
    script = shlex.split(argv[-1]) if argv[0] == "/bin/sh" else argv
    proxy_argv = exec_argv(PROXY_UNIT)
    assert script[script.index("db"):script.index("db") + 2] == ["db", "backup"]
    assert script[script.index("--db") + 1] == proxy_argv[proxy_argv.index("--db") + 1]
    from proxy.cli.main import build_parser

    build_parser().parse_args(script[script.index("db"):])
    assert one(BACKUP_UNIT, "Service", "User") == one(PROXY_UNIT, "Service", "User")
    assert one(BACKUP_UNIT, "Service", "Type") == "oneshot"
    timer = parse_unit((DEPLOY / BACKUP_TIMER).read_text())
    assert any(k == "OnCalendar" for k, _ in timer["Timer"])
    assert ("WantedBy", "timers.target") in timer["Install"]


# --- systemd-analyze --------------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
BAD_LINE = re.compile(r"Unknown (key|section|lvalue)|Invalid|Failed to parse|[Mm]issing '='"
                      r"|ignoring|Unbalanced|not a valid|Unknown .*specifier|assignment")
# What a machine without the real binaries, users or a running systemd may add.
ENVIRONMENT_LINE = re.compile(r"is not executable|No such file or directory|Failed to connect"
                              r"|System has not been booted|Host is down|not found")


def _sandbox_units(tmp_path: Path, texts: dict[str, str]) -> list[Path]:
    """Write the units to tmp_path, with programs missing on this machine replaced by /bin/true."""
    paths = []
    for name, text in texts.items():
        lines = []
        for line in text.splitlines():
            m = re.match(r"^(Exec\w+=)([-@:+!]*)(\S+)(.*)$", line)
            if m and not Path(m.group(3)).exists():
                line = f"{m.group(1)}{m.group(2)}/bin/true{m.group(4)}"
            lines.append(line)
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _verify(paths: list[Path]) -> tuple[int, list[str]]:
    proc = subprocess.run([ANALYZE, "verify", "--man=no", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, cwd=paths[0].parent)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, lines


def _problems(code: int, lines: list[str]) -> list[str]:
    bad = [ln for ln in lines if BAD_LINE.search(ln)]
    if code != 0:
        bad += [ln for ln in lines if not ENVIRONMENT_LINE.search(ln) and ln not in bad]
        if not bad:
            bad = [f"systemd-analyze verify exited {code}: {lines}"] if not lines else []
    return bad


@needs_analyze
def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check below is not blind: an unknown key and a comment after a value are reported."""
    broken = ("[Unit]\nDescription=broken\n[Service]\nTipe=simple\nExecStart=/bin/true\n"
              "Restart=on-failure # retry\nKillMode=sideways\n")
    code, lines = _verify(_sandbox_units(tmp_path, {"broken.service": broken}))
    problems = _problems(code, lines)
    assert any("Tipe" in p for p in problems), lines
    assert any("on-failure # retry" in p or "Restart" in p for p in problems), lines
    assert any("sideways" in p or "kill mode" in p.lower() for p in problems), lines


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    texts = {name: (DEPLOY / name).read_text() for name in UNITS}
    code, lines = _verify(_sandbox_units(tmp_path, texts))
    assert not _problems(code, lines), "\n".join(lines)


@needs_analyze
@pytest.mark.parametrize("name", sorted(EXPOSURE_LIMITS))
def test_systemd_analyze_security(tmp_path: Path, name: str) -> None:
    texts = {n: (DEPLOY / n).read_text() for n in UNITS}
    paths = {p.name: p for p in _sandbox_units(tmp_path, texts)}
    proc = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(paths[name])],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    if "offline" in out and ("unrecognized" in out or "Unknown option" in out):
        pytest.skip("this systemd-analyze has no --offline security review (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert m, out
    score = float(m.group(1))
    print(f"systemd-analyze security {name}: {score} (limit {EXPOSURE_LIMITS[name]})")
    assert score <= EXPOSURE_LIMITS[name], out


# --- Traefik ----------------------------------------------------------------------------

try:
    import yaml
except ImportError:  # PyYAML comes with the test extras (through `responses`)
    yaml = None


def _load_yaml(path: Path) -> Any:
    if yaml is None:
        pytest.skip("PyYAML is not installed: cannot read the Traefik configuration")
    return yaml.safe_load(path.read_text())


def static_config() -> dict[str, Any]:
    return _load_yaml(STATIC)


def dynamic_configs() -> list[dict[str, Any]]:
    return [_load_yaml(p) for p in DYNAMIC_FILES]


def dynamic_http(path: Path = ONE_HOST) -> dict[str, dict[str, Any]]:
    """The http section of one dynamic file: each is a whole configuration on its own."""
    return _load_yaml(path)["http"]


def public_routers(path: Path = ONE_HOST) -> dict[str, dict[str, Any]]:
    routers = dynamic_http(path)["routers"]
    public = {n: r for n, r in routers.items() if "websecure" in r.get("entryPoints", ["websecure"])}
    assert public, "no router on the websecure entry point"
    return public


def go_duration(value: Any) -> float:
    """Seconds in a Traefik duration: a number of seconds, or Go syntax such as 1m30s, 10ms."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    sign = -1.0 if text.startswith("-") else 1.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text.lstrip("-+"))
    assert parts and "".join(n + u for n, u in parts) == text.lstrip("-+"), text
    return sign * sum(float(n) * scale[u] for n, u in parts)


class Rule:
    """Evaluate a Traefik v3 router rule: Host, Path, PathPrefix, PathRegexp, Method,
    with &&, ||, ! and parentheses."""

    TOKEN = re.compile(r"\s*(?:(&&|\|\||!|\(|\)|,)|(`[^`]*`|\"[^\"]*\")|([A-Za-z]+))")

    def __init__(self, text: str):
        self.tokens: list[tuple[str, str]] = []
        pos, text = 0, text.strip()
        while pos < len(text):
            m = self.TOKEN.match(text, pos)
            assert m and m.end() > pos, f"cannot read rule at {text[pos:]!r}"
            op, string, name = m.groups()
            self.tokens.append(("op", op) if op else ("str", string[1:-1]) if string else ("name", name))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.text = text

    def matches(self, host: str, path: str, method: str = "GET") -> bool:
        self.pos, self.request = 0, (host.lower(), path, method)
        result = self._or()
        assert self.pos == len(self.tokens), f"trailing tokens in {self.text!r}"
        return result

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, kind: str, value: str | None = None) -> str:
        tok = self._peek()
        assert tok and tok[0] == kind and (value is None or tok[1] == value), (tok, kind, value)
        self.pos += 1
        return tok[1]

    def _or(self) -> bool:
        result = self._and()
        while self._peek() == ("op", "||"):
            self._take("op")
            result = self._and() or result
        return result

    def _and(self) -> bool:
        result = self._not()
        while self._peek() == ("op", "&&"):
            self._take("op")
            result = self._not() and result
        return result

    def _not(self) -> bool:
        if self._peek() == ("op", "!"):
            self._take("op")
            return not self._not()
        if self._peek() == ("op", "("):
            self._take("op")
            result = self._or()
            self._take("op", ")")
            return result
        return self._matcher()

    def _matcher(self) -> bool:
        name = self._take("name")
        self._take("op", "(")
        args = [self._take("str")]
        while self._peek() == ("op", ","):
            self._take("op")
            args.append(self._take("str"))
        self._take("op", ")")
        host, path, method = self.request
        if name == "Host":
            return host in (a.lower() for a in args)
        if name == "Path":
            return path in args
        if name == "PathPrefix":
            return any(path.startswith(a) for a in args)
        if name == "PathRegexp":
            return any(re.search(a, path) for a in args)
        if name == "Method":
            return method in args
        raise AssertionError(f"rule matcher {name} is not understood by this test")


def test_rule_evaluator() -> None:
    rule = Rule("Host(`a.example`) && (PathPrefix(`/v1/`) || Path(`/health`)) && !PathPrefix(`/v1/x`)")
    assert rule.matches("A.example", "/v1/models")
    assert rule.matches("a.example", "/health")
    assert not rule.matches("a.example", "/v1/x/y")
    assert not rule.matches("b.example", "/v1/models")
    assert not rule.matches("a.example", "/metrics")


def test_router_sends_to_the_proxy_default_bind() -> None:
    settings = Settings()
    http = dynamic_http()
    for name, router in public_routers().items():
        service = http["services"][router["service"].split("@")[0]]
        servers = service["loadBalancer"]["servers"]
        assert [s["url"] for s in servers] == [f"http://{settings.bind}"], name
        assert service["loadBalancer"].get("passHostHeader", True) is True


def test_forwarded_headers_come_from_a_peer_the_proxy_trusts() -> None:
    import ipaddress

    host = Settings().bind.rpartition(":")[0]
    trusted = [ipaddress.ip_network(n) for n in Settings().trusted_proxies]
    assert any(ipaddress.ip_address(host) in net for net in trusted)
    websecure = static_config()["entryPoints"]["websecure"]
    forwarded = websecure.get("forwardedHeaders") or {}
    assert forwarded.get("insecure") is not True, "clients could forge X-Forwarded-Host"
    assert not {"0.0.0.0/0", "::/0"} & set(forwarded.get("trustedIPs") or [])


@pytest.mark.parametrize("config_file", DYNAMIC_FILES, ids=lambda p: p.name)
def test_public_router_serves_the_api_and_not_the_internal_routes(app, config_file: Path) -> None:
    """Every route of the proxy is public except /metrics and /ready, which Prometheus and
    health checks reach on loopback; checked against the app's real URL map."""
    internal = {"/metrics", "/ready"}
    samples = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"x", rule.rule)
        samples.append(path)
    samples += ["/metrics", "/metrics/", "/ready", "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                "/upload/v1beta/files", "/v1/chat/completions", "/openai/v1/chat/completions"]
    for name, router in public_routers(config_file).items():
        rule = Rule(router["rule"])
        for path in samples:
            public = rule.matches("gemini.example.com", path)
            if path.rstrip("/") in internal:
                assert not public, f"router {name} exposes {path}"
            else:
                assert public, f"router {name} does not route {path}"
        assert not rule.matches("other.example.com", "/v1beta/models"), "rule must pin the host"


@pytest.mark.parametrize("path", DYNAMIC_FILES, ids=lambda p: p.name)
def test_tls_uses_the_resolver_of_the_static_config(path: Path) -> None:
    static = static_config()
    resolvers = static["certificatesResolvers"]
    for name, router in public_routers(path).items():
        resolver = router["tls"]["certResolver"]
        assert resolver in resolvers, name
        acme = resolvers[resolver]["acme"]
        assert acme["email"] and acme["storage"]
        assert {"tlsChallenge", "httpChallenge", "dnsChallenge"} & set(acme)
    storage = Path(resolvers[resolver]["acme"]["storage"])
    state = one(TRAEFIK_UNIT, "Service", "StateDirectory").split()[0]
    assert storage.parent == Path(f"/var/lib/{state}"), "ACME storage must be in Traefik's state directory"


def test_http_redirects_to_https() -> None:
    entry = static_config()["entryPoints"]
    assert entry["websecure"]["address"] == ":443"
    assert entry["web"]["address"] == ":80"
    redirect = entry["web"]["http"]["redirections"]["entryPoint"]
    assert redirect["to"] == "websecure" and redirect.get("scheme", "https") == "https"


def _walk(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


# Middlewares that may sit on the streaming path: retry replays only requests that reached no
# server and passes responses through as they come (tests/test_traefik.py streams through it).
STREAM_SAFE_MIDDLEWARES = {"retry"}


@pytest.mark.parametrize("path", DYNAMIC_FILES, ids=lambda p: p.name)
def test_streams_are_not_buffered(path: Path) -> None:
    for doc in [static_config(), _load_yaml(path)]:
        keys = {k for k, _ in _walk(doc)}
        assert "buffering" not in keys, "the buffering middleware holds streams back"
        assert "compress" not in keys, "the compress middleware batches streamed chunks"
    http = dynamic_http(path)
    for router in public_routers(path).values():
        for name in router.get("middlewares", []):
            kinds = set(http["middlewares"][name.split("@")[0]])
            assert kinds <= STREAM_SAFE_MIDDLEWARES, f"middleware {name} ({kinds}) may hold streams back"
        service = http["services"][router["service"].split("@")[0]]
        flush = (service["loadBalancer"].get("responseForwarding") or {}).get("flushInterval")
        assert flush is not None and go_duration(flush) <= 0.1, flush


@pytest.mark.parametrize("path", DYNAMIC_FILES, ids=lambda p: p.name)
def test_timeouts_fit_long_generations_and_the_proxy_keepalive(path: Path) -> None:
    settings = Settings()
    keepalive = gunicorn_options(settings)["keepalive"]
    responding = static_config()["entryPoints"]["websecure"]["transport"]["respondingTimeouts"]
    for key in ("readTimeout", "writeTimeout"):
        value = go_duration(responding[key])
        assert value == 0 or value >= settings.read_timeout, (key, value)
    http = dynamic_http(path)
    for router in public_routers(path).values():
        service = http["services"][router["service"].split("@")[0]]["loadBalancer"]
        transport = http["serversTransports"][service["serversTransport"].split("@")[0]]
        forwarding = transport["forwardingTimeouts"]
        idle = go_duration(forwarding["idleConnTimeout"])
        assert 0 < idle < keepalive, f"Traefik must drop idle connections before the proxy ({keepalive}s)"
        header = go_duration(forwarding.get("responseHeaderTimeout", 0))
        assert header == 0 or header >= settings.read_timeout
    grace = go_duration(static_config()["entryPoints"]["websecure"]["transport"]["lifeCycle"]["graceTimeOut"])
    assert timespan(one(TRAEFIK_UNIT, "Service", "TimeoutStopSec")) > grace


def _without(doc: Any, drop: set[str]) -> Any:
    """`doc` without the keys named in `drop`, at any depth."""
    if isinstance(doc, dict):
        return {k: _without(v, drop) for k, v in doc.items() if k not in drop}
    if isinstance(doc, list):
        return [_without(v, drop) for v in doc]
    return doc


def recommended_stop_unready() -> float:
    """The STOP_UNREADY_SECONDS INSTALL.md recommends for several hosts."""
    m = re.search(r"^STOP_UNREADY_SECONDS=(\d+(?:\.\d+)?)$", INSTALL.read_text(), re.M)
    assert m, "INSTALL.md must say which STOP_UNREADY_SECONDS to set with several hosts"
    return float(m.group(1))


def test_two_hosts_file_is_the_one_host_file_with_health_checks_and_retries() -> None:
    """Everything but the servers, the health check and the retry middleware is the one-host
    file's, so what tests/test_traefik.py proves of one holds for the other."""
    one, two = _load_yaml(ONE_HOST), _load_yaml(TWO_HOSTS)
    extras = {"servers", "healthCheck", "middlewares"}
    assert _without(two, extras) == _without(one, extras)
    assert set(two["http"]) - {"middlewares"} == set(one["http"])
    for service in two["http"]["services"].values():
        balancer = service["loadBalancer"]
        assert len(balancer["servers"]) == 2
        assert "sticky" not in balancer, "no sticky sessions: either host serves any request"
        check = balancer["healthCheck"]
        assert check["path"] == "/ready", "Traefik must take out a host that is not ready or stopping"
        detect = go_duration(check["interval"]) + go_duration(check["timeout"])
        assert detect <= recommended_stop_unready(), "a stopping host must fail /ready until Traefik noticed"
    for router in two["http"]["routers"].values():
        for name in router.get("middlewares", []):
            assert set(two["http"]["middlewares"][name]) == {"retry"}


def test_static_config_keeps_internals_closed() -> None:
    static = static_config()
    api = static.get("api")
    assert api is None or (not api.get("insecure") and not api.get("dashboard")), "API/dashboard on"
    assert "accessLog" not in static, "the access log would record ?key= user keys"
    for name, entry in static["entryPoints"].items():
        assert name in ("web", "websecure") or entry["address"].startswith("127.0.0.1:"), name


def test_file_provider_reads_the_dynamic_directory_of_this_repository() -> None:
    provider = static_config()["providers"]["file"]
    directory = Path(provider["directory"])
    assert directory.name == DYNAMIC_DIR.name and DYNAMIC_DIR.is_dir()
    assert list(DYNAMIC_DIR.glob("*.yml")), "no dynamic configuration to install"
    guide = INSTALL.read_text()
    assert str(directory) in guide
    assert sorted(DYNAMIC_DIR.glob("*.y*ml")) == sorted(DYNAMIC_FILES), "a new file: check it here too"
    for path in DYNAMIC_FILES:
        assert f"systemd-services/traefik/dynamic/{path.name}" in guide


# --- the install guide ------------------------------------------------------------------

def _guide_commands(program: str) -> list[list[str]]:
    """Arguments of every `…/bin/<program> …` command in the guide's code blocks."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", INSTALL.read_text(), re.S)
    found = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        line = line.replace("$(date +%F)", "DATE").replace("$(date +\\%F)", "DATE")
        for m in re.finditer(rf"/opt/gemini-proxy/\.venv/bin/{program}((?:\s+[^\s|;&)'>]+)*)", line):
            words = shlex.split(m.group(1))
            if '"$@"' not in m.group(1):
                found.append(words)
    return found


def test_guide_commands_exist() -> None:
    """Every gemini-proxy / gemini-console command line in INSTALL.md parses."""
    from console.app import build_parser as console_parser
    from proxy.cli.main import build_parser as proxy_parser

    proxy_cmds = _guide_commands("gemini-proxy")
    console_cmds = _guide_commands("gemini-console")
    assert len(proxy_cmds) >= 5 and console_cmds
    for words in proxy_cmds:
        proxy_parser().parse_args(words)
    for words in console_cmds:
        console_parser().parse_args(words)
    flat = [" ".join(w) for w in proxy_cmds]
    assert any(c.startswith("db backup") for c in flat) and any(c.startswith("db check") for c in flat)


def test_guide_installs_every_file_where_the_units_expect_it() -> None:
    guide = INSTALL.read_text()
    for name in UNITS:
        assert f"systemd-services/{name}" in guide, name
    assert "systemd-services/traefik/traefik.yml /etc/traefik/traefik.yml" in guide
    env_file = one(PROXY_UNIT, "Service", "EnvironmentFile")
    assert env_file in guide
    assert f"PROXY_BIND={Settings().bind}" in guide
    for command in ("systemctl enable --now gemini-proxy", "systemctl enable --now traefik",
                    "curl -fsS http://127.0.0.1:5001/health", "journalctl -u gemini-proxy",
                    "systemctl reload gemini-proxy", "sudo -u gemini-proxy", "127.0.0.1:5001"):
        assert command in guide, command
