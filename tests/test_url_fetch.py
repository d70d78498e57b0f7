"""Fetching image and document URLs: the address rules hold where the connection is made.

Nothing here reaches the internet. A test "internet" stands in for DNS and for
`socket.create_connection`: names resolve from a table, and the one public-looking
address (PUBLIC_IP) is served by a loopback test site; any other non-loopback
connection is refused, and a module-wide guard refuses them at the socket too.
"""
import base64
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

import openai
import pytest

from conftest import USER_KEY
from proxy import url_fetch
from proxy.translate.errors import TranslationError
from proxy.url_fetch import fetch_urls, is_public_address

AUTH = {"Authorization": f"Bearer {USER_KEY}"}
FLASH = "gemini-2.5-flash"
PUBLIC_IP = "93.184.216.34"
CHAT_PATH = "messages[0].content[1].image_url.url"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
                       "awAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SECRET = b"internal-secret-body"

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo
_real_create_connection = socket.create_connection


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Refuse every socket connect that is not to a loopback address."""
    def connect(sock, address):
        if isinstance(address, tuple) and not _loopback(str(address[0])):
            raise ConnectionRefusedError(f"test guard: no connections to {address[0]}")
        return _real_connect(sock, address)
    monkeypatch.setattr(socket.socket, "connect", connect)


# -- a small web site on loopback -----------------------------------------------------------

class _Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, body, ctype, **headers):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if body is not None:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Host")))
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if url.path == "/cat.png":
            self._send(200, PNG, "image/png")
        elif url.path == "/doc.pdf":
            self._send(200, PDF, "application/pdf")
        elif url.path == "/blob":
            self._send(200, PDF, "application/octet-stream")
        elif url.path == "/movie":
            self._send(200, b"\0\0\0\x18ftypmp42", "video/mp4")
        elif url.path == "/big":
            self._send(200, PNG + b"\0" * 4096, "image/png")
        elif url.path == "/big-unsized":
            self.close_connection = True
            self._send(200, None, "image/png", Connection="close")
            self.wfile.write(PNG + b"\0" * 4096)
        elif url.path == "/drip":
            self.close_connection = True
            self._send(200, None, "image/png", Connection="close")
            try:
                for _ in range(1000):  # a byte now and then, each well inside the read timeout
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                pass
        elif parts[0] == "status":
            self._send(int(parts[1]), SECRET, "text/plain")
        elif parts[0] == "chain":
            # /chain/N redirects N times; with ?final=URL the last redirect goes there.
            n = int(parts[1])
            final = unquote(url.query[len("final="):]) if url.query.startswith("final=") else ""
            if n > 0:
                query = f"?{url.query}" if url.query else ""
                self._send(302, b"", "text/plain", Location=f"/chain/{n - 1}{query}")
            elif final:
                self._send(302, b"", "text/plain", Location=final)
            else:
                self._send(200, PNG, "image/png")
        else:
            self._send(404, SECRET, "text/plain")

    def log_message(self, *args):
        pass


def _serve(server):
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def site():
    server = _serve(ThreadingHTTPServer(("127.0.0.1", 0), _Site))
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.port = server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()


# -- a test internet: DNS from a table, PUBLIC_IP served from loopback ----------------------

class Net:
    def __init__(self):
        self.dns: dict = {}        # name → list of addresses, or a callable returning one
        self.lookups: list[str] = []
        self.connects: list[tuple] = []
        self.serves_public = True  # False: PUBLIC_IP connections are seen, then refused

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        if host in self.dns:
            self.lookups.append(host)
            answer = self.dns[host]
            answer = answer() if callable(answer) else answer
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (ip, port) if ":" not in ip else (ip, port, 0, 0)) for ip in answer]
        if host == "localhost":
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        # IP literals, including the odd spellings (127.1, 2130706433); never a DNS query.
        return _real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    def create_connection(self, address, timeout=None, *args, **kwargs):
        self.connects.append(tuple(address[:2]))
        host, port = address[:2]
        if host == PUBLIC_IP and self.serves_public:
            host = "127.0.0.1"
        elif not _loopback(host):
            raise ConnectionRefusedError(f"the test internet has nothing at {host}")
        return _real_create_connection((host, port), timeout)


@pytest.fixture
def net(monkeypatch):
    fake = Net()
    fake.dns["public.test"] = [PUBLIC_IP]
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", fake.create_connection)
    return fake


def refused(url, allow_private=False) -> TranslationError:
    with pytest.raises(TranslationError) as err:
        fetch_urls({url: CHAT_PATH}, allow_private=allow_private)
    assert err.value.param == "messages" and err.value.message.startswith(CHAT_PATH + ": ")
    return err.value


# -- ambiguous URLs ---------------------------------------------------------------------------

@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("form,needle", [
    ("http://127.0.0.1:{port}\\@1.1.1.1/cat.png", "backslash"),
    ("http://127.0.0.1:{port}\\/cat.png", "backslash"),
    ("http://1.1.1.1@127.0.0.1:{port}/cat.png", "user name or password"),
    ("http://user:pw@127.0.0.1:{port}/cat.png", "user name or password"),
    ("http://127.0.0.1:{port}\t/cat.png", "control characters"),
    ("http://127.0.0.1%2f:{port}/cat.png", "not a plain host"),
    ("http://[::1%25lo]:{port}/cat.png", "not a plain host"),
    ("http://bücher.test:{port}/cat.png", "xn-- form"),
])
def test_ambiguous_urls_are_refused_before_any_connection(net, site, form, needle, allow_private):
    err = refused(form.format(port=site.port), allow_private)
    assert needle in err.message and "refusing to fetch" in err.message
    assert net.connects == [] and site.seen == []


def test_the_reported_bypass_is_refused_through_the_app(app_factory, fake, site):
    client = app_factory().test_client()
    url = f"http://127.0.0.1:{site.port}\\@1.1.1.1/cat.png"
    r = client.post("/v1/chat/completions", headers=AUTH, json={"model": FLASH, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": url}}]}]})
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["param"] == "messages" and err["type"] == "invalid_request_error"
    assert "backslash" in err["message"]
    assert site.seen == [] and fake.requests == []


# -- private addresses ------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.1", "2130706433",
                                  "loopback.test", "intranet.test", "mixed.test", "mapped.test"])
def test_private_targets_are_refused_without_connecting(net, site, host):
    net.dns.update({"loopback.test": ["127.0.0.1"], "intranet.test": ["10.1.2.3"],
                    "mixed.test": [PUBLIC_IP, "127.0.0.1"], "mapped.test": ["::ffff:127.0.0.1"]})
    err = refused(f"http://{host}:{site.port}/cat.png")
    assert "not a public address" in err.message
    assert net.connects == [] and site.seen == []


def test_dns_rebinding_connects_only_to_the_checked_address(net, site):
    answers = iter([[PUBLIC_IP]])  # first answer public, every later one loopback
    net.dns["rebind.test"] = lambda: next(answers, ["127.0.0.1"])
    net.serves_public = False  # the attempt is seen, and goes nowhere
    err = refused(f"http://rebind.test:{site.port}/cat.png")
    assert "could not be fetched" in err.message
    assert net.lookups == ["rebind.test"]  # resolved once, then connected to what was checked
    assert net.connects == [(PUBLIC_IP, site.port)]
    assert site.seen == []


def test_connects_to_the_checked_address_with_the_original_host_header(net, site):
    got = fetch_urls({f"http://public.test:{site.port}/cat.png": CHAT_PATH})
    assert got == {f"http://public.test:{site.port}/cat.png": ("image/png", PNG)}
    assert net.connects == [(PUBLIC_IP, site.port)]
    assert site.seen == [("/cat.png", f"public.test:{site.port}")]


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.0.0.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("224.0.0.1", False), ("::1", False),
    ("fd00::1", False), ("fe80::1", False), ("::ffff:10.0.0.1", False), ("64:ff9b::7f00:1", False),
    ("2002:7f00:1::", False), ("::127.0.0.1", False), ("0.0.0.0", False),
])
def test_public_address_rules(address, public):
    assert is_public_address(address) is public


# -- TLS: SNI and certificate checks use the hostname, the socket the checked address -----------

def _certificate(tmp_path, name):
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / "ca.pem", tmp_path / "leaf.pem"


@pytest.fixture
def tls_site(tmp_path, monkeypatch):
    def start(cert_name):
        ca, leaf = _certificate(tmp_path, cert_name)
        monkeypatch.setattr("requests.adapters.DEFAULT_CA_BUNDLE_PATH", str(ca))
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(leaf)
        server.sni = []
        ctx.sni_callback = lambda sock, name, _ctx: server.sni.append(name)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.port = server.server_address[1]
        started.append(_serve(server))
        return server

    started = []
    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_tls_verifies_the_hostname_while_connecting_to_the_checked_address(net, tls_site):
    server = tls_site("public.test")
    url = f"https://public.test:{server.port}/cat.png"
    assert fetch_urls({url: CHAT_PATH}) == {url: ("image/png", PNG)}
    assert server.sni == ["public.test"] and net.connects == [(PUBLIC_IP, server.port)]


def test_tls_refuses_a_certificate_for_another_name(net, tls_site):
    server = tls_site("other.test")
    err = refused(f"https://public.test:{server.port}/cat.png")
    assert "could not be fetched" in err.message and server.seen == []


# -- redirects --------------------------------------------------------------------------------

def test_up_to_three_redirects_are_followed(net, site):
    url = f"{site.url}/chain/3"
    assert fetch_urls({url: CHAT_PATH}, allow_private=True) == {url: ("image/png", PNG)}
    assert [p for p, _ in site.seen] == ["/chain/3", "/chain/2", "/chain/1", "/chain/0"]


def test_a_fourth_redirect_is_refused(net, site):
    err = refused(f"{site.url}/chain/4", allow_private=True)
    assert "redirects more than 3 times" in err.message
    assert len(site.seen) == 4  # the target of the fourth redirect was never asked


@pytest.mark.parametrize("hop", [1, 2, 3])
@pytest.mark.parametrize("final", ["http://127.0.0.1:{port}/cat.png", "http://localhost:{port}/cat.png",
                                   "http://10.1.2.3/cat.png", "http://loopback.test:{port}/cat.png"])
def test_a_redirect_to_a_private_address_is_refused_at_every_hop(net, site, hop, final):
    net.dns["loopback.test"] = ["127.0.0.1"]
    final = final.format(port=site.port)
    err = refused(f"http://public.test:{site.port}/chain/{hop - 1}?final={final}")
    assert f"redirects to {final!r}, which is not a public address" in err.message
    assert len(site.seen) == hop and all(p.startswith("/chain/") for p, _ in site.seen)
    assert all(host == PUBLIC_IP for host, _ in net.connects)


def test_a_redirect_to_an_ambiguous_url_is_refused(net, site):
    final = quote(f"http://127.0.0.1:{site.port}\\@{PUBLIC_IP}/cat.png", safe="")
    err = refused(f"http://public.test:{site.port}/chain/0?final={final}")
    assert "redirects to" in err.message and "backslash" in err.message
    assert [p for p, _ in site.seen] == [f"/chain/0?final={final}"]
    assert net.connects == [(PUBLIC_IP, site.port)]


# -- what comes back --------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 403, 404, 418, 500, 503])
def test_errors_do_not_echo_the_far_side(net, site, status):
    url = f"{site.url}/status/{status}"
    err = refused(url, allow_private=True)
    assert "could not be fetched" in err.message
    assert str(status) not in err.message.replace(url, "")
    assert SECRET.decode() not in err.message


def test_unreachable_port_says_only_could_not_be_fetched(net):
    err = refused("http://127.0.0.1:9/cat.png", allow_private=True)
    assert "could not be fetched" in err.message and "refused" not in err.message.lower()


@pytest.mark.parametrize("path", ["/big", "/big-unsized"])
def test_size_limit(net, site, monkeypatch, path):
    monkeypatch.setattr(url_fetch, "MAX_FETCH_BYTES", 1024)
    err = refused(site.url + path, allow_private=True)
    assert "larger than" in err.message


def test_slow_drip_meets_the_time_budget(net, site, monkeypatch):
    monkeypatch.setattr(url_fetch, "FETCH_BUDGET", 0.3)
    started = time.monotonic()
    err = refused(site.url + "/drip", allow_private=True)
    assert "took longer than 0.3 s" in err.message
    assert time.monotonic() - started < 5


def test_types(net, site):
    got = fetch_urls({site.url + "/doc.pdf": CHAT_PATH, site.url + "/blob": CHAT_PATH},
                     allow_private=True)
    assert got[site.url + "/doc.pdf"] == ("application/pdf", PDF)
    assert got[site.url + "/blob"] == ("application/pdf", PDF)  # octet-stream, recognised
    err = refused(site.url + "/movie", allow_private=True)
    assert "not an image or a document (video/mp4)" in err.message


# -- through the app ----------------------------------------------------------------------------

def responses_body(*parts):
    return {"model": FLASH, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "read this"}, *parts]}]}


def test_responses_file_url_pdf_reaches_gemini_as_inline_data(app_factory, fake, site):
    client = app_factory(image_fetch_private=True).test_client()
    r = client.post("/v1/responses", headers=AUTH, json=responses_body(
        {"type": "input_file", "file_url": site.url + "/doc.pdf"}))
    assert r.status_code == 200, r.data
    assert f"[application/pdf {len(PDF)} bytes]" in r.get_json()["output"][0]["content"][0]["text"]
    part = fake.requests[-1]["body"]["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "application/pdf",
                                   "data": base64.b64encode(PDF).decode()}}


def test_responses_errors_name_input(app_factory, fake, site):
    client = app_factory(image_fetch_private=True).test_client()
    for part, needle in [({"type": "input_image", "image_url": site.url + "/doc.pdf"}, "not an image"),
                         ({"type": "input_file", "file_url": site.url + "/gone"}, "could not be fetched")]:
        r = client.post("/v1/responses", headers=AUTH, json=responses_body(part))
        assert r.status_code == 400
        err = r.get_json()["error"]
        assert err["param"] == "input" and err["message"].startswith("input[0].content[1].")
        assert needle in err["message"]
    assert fake.requests == []


# -- through the openai SDK and the real server ---------------------------------------------------

@pytest.fixture
def oai(shared_live, fake):
    return openai.OpenAI(api_key=USER_KEY, base_url=shared_live.url + "/v1", max_retries=0)


def test_sdk_sees_openai_errors_with_the_right_param(oai, fake, site):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": f"http://127.0.0.1:{site.port}\\@1.1.1.1/x.png"}}]}])
    assert err.value.status_code == 400 and err.value.param == "messages"
    assert err.value.type == "invalid_request_error" and "backslash" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=FLASH, input=[{"role": "user", "content": [
            {"type": "input_file", "file_url": site.url + "/doc.pdf"}]}])
    assert err.value.param == "input" and "not a public address" in err.value.message
    assert site.seen == [] and fake.requests == []


def test_sdk_pdf_file_url_under_gevent(live_factory, fake, site):
    live = live_factory(IMAGE_FETCH_PRIVATE="true")
    client = openai.OpenAI(api_key=USER_KEY, base_url=live.url + "/v1", max_retries=0)
    resp = client.responses.create(model=FLASH, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "summarise"},
        {"type": "input_file", "file_url": f"{site.url}/chain/2?final=/doc.pdf"}]}])
    assert f"[application/pdf {len(PDF)} bytes]" in resp.output_text
    part = fake.requests[-1]["body"]["contents"][0]["parts"][1]
    assert part["inlineData"] == {"mimeType": "application/pdf", "data": base64.b64encode(PDF).decode()}
