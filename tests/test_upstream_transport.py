"""The upstream client's transport: failures named and classified as through requests' own
adapter, and connections kept or closed as requests kept or closed them.

A raw loopback server plays each fault (refused, connect or read timeout, a hang-up, a
garbled status line, a body cut short or stalled). Every fault is sent twice: through
`Upstream` and through a stock requests session with the client's former settings (no
retries, the same timeouts, the body read from urllib3's response), and both must come to
the same `transport_failure` outcome.
"""
from __future__ import annotations

import datetime
import http.client
import ipaddress
import queue
import random
import re
import socket
import ssl
import threading
from typing import Callable, Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter

from proxy.outcomes import Kind, Outcome, transport_failure
from proxy.pool import KeyPool
from proxy.store.util import mask_key
from proxy.upstream import Call, Upstream
from conftest import make_settings

MODEL = "gemini-2.5-flash"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
TIMEOUT = 0.25  # connect and read: every timeout case waits this long, twice
HEAD_200 = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
OK_BODY = b'{"candidates": []}'


def read_request(conn: socket.socket, buf: bytearray) -> bool:
    """Read one request (head and Content-Length body) off `conn`; False at end of stream."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return False
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < end + length:
        data = conn.recv(65536)
        if not data:
            return False
        buf += data
    del buf[:end + length]
    return True


Behaviour = Callable[[socket.socket, "Loopback", int], None]


class Loopback:
    """A raw TCP server on 127.0.0.1 that runs `behave(conn, server, number)` for each
    connection (numbered from 1), then closes it."""

    def __init__(self, behave: Behaviour, tls: ssl.SSLContext | None = None) -> None:
        self.behave, self.tls = behave, tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http{'s' if tls else ''}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.done = threading.Event()  # set at close: behaviours that hold a connection let go
        self.accepted = 0
        self.hung_up: queue.Queue[int] = queue.Queue()  # connections the client closed, by number
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, self.accepted), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            conn.settimeout(10)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.behave(conn, self, number)
        except OSError:
            pass
        finally:
            conn.close()

    def hold(self) -> None:
        self.done.wait(10)

    def close(self) -> None:
        self.done.set()
        self.sock.close()
        for conn in self.conns:  # a kept-alive connection would hold its thread in recv
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)


@pytest.fixture
def loopback() -> Iterator[Callable[..., Loopback]]:
    servers: list[Loopback] = []

    def build(behave: Behaviour, tls: ssl.SSLContext | None = None) -> Loopback:
        servers.append(Loopback(behave, tls))
        return servers[-1]

    yield build
    for server in servers:
        server.close()


def upstream_for(tmp_path, url: str) -> Upstream:
    pool = KeyPool(None, rng=random.Random(7))
    pool.apply({"keys": [{"id": 1, "value": "fake-key-0001", "masked": "fake…0001",
                          "status": "active"}]})
    settings = make_settings(tmp_path, url, max_attempts=1, connect_timeout=TIMEOUT,
                             read_timeout=TIMEOUT)
    return Upstream(settings, pool)


def call(stream: bool = False) -> Call:
    return Call("POST", STREAM if stream else GENERATE, [("alt", "sse")] if stream else [],
                {"Content-Type": "application/json"}, b"{}", model=MODEL, stream=stream)


def through_requests(url: str, stream: bool) -> Outcome:
    """What requests' stock adapter, set up as the client was, makes of the same fault."""
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", HTTPAdapter(max_retries=0))
    session.mount("https://", HTTPAdapter(max_retries=0))
    target = url + (STREAM + "?alt=sse" if stream else GENERATE)
    try:
        with session.post(target, data=b"{}", headers={"Content-Type": "application/json"},
                          stream=True, timeout=(TIMEOUT, TIMEOUT)) as resp:
            if stream:
                next(resp.raw.stream(None, decode_content=True), b"")
            else:
                resp.raw.read(decode_content=True)
    except Exception as exc:
        return transport_failure(exc)
    finally:
        session.close()
    raise AssertionError("the fault did not fail through requests")


def same_text(reason: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x…", reason)  # object addresses differ between the two


# -- the faults ------------------------------------------------------------------------------

def silent(conn: socket.socket, server: Loopback, number: int) -> None:
    read_request(conn, bytearray())
    server.hold()


def hang_up(conn: socket.socket, server: Loopback, number: int) -> None:
    read_request(conn, bytearray())


def garbled(conn: socket.socket, server: Loopback, number: int) -> None:
    read_request(conn, bytearray())
    conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")


def short_body(conn: socket.socket, server: Loopback, number: int) -> None:
    read_request(conn, bytearray())
    conn.sendall(HEAD_200 + b"Content-Length: 100\r\n\r\n" + OK_BODY)


def stalled_body(conn: socket.socket, server: Loopback, number: int) -> None:
    short_body(conn, server, number)
    server.hold()


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)


def broken_stream(conn: socket.socket, server: Loopback, number: int) -> None:
    read_request(conn, bytearray())
    conn.sendall(HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")


def stalled_stream(conn: socket.socket, server: Loopback, number: int) -> None:
    read_request(conn, bytearray())
    conn.sendall(HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n")
    server.hold()


@pytest.mark.parametrize("behave, stream, name, status", [
    (silent, False, "ReadTimeout", 504),
    (hang_up, False, "ConnectionError", 502),
    (garbled, False, "ConnectionError", 502),
    (short_body, False, "ProtocolError", 502),
    (stalled_body, False, "ReadTimeoutError", 504),
    (broken_stream, True, "ProtocolError", 502),
    (stalled_stream, True, "ReadTimeoutError", 504),
])
def test_a_fault_is_classified_as_through_requests(tmp_path, loopback, behave, stream, name,
                                                   status):
    server = loopback(behave)
    up = upstream_for(tmp_path, server.url)
    reply = up.open(call(stream))
    expected = through_requests(server.url, stream)
    assert (expected.status, expected.reason.split(":")[0]) == (status, name)
    assert reply.outcome.kind is Kind.UPSTREAM and reply.status == status
    assert same_text(reply.outcome.reason) == same_text(expected.reason)
    assert reply.chunks is None and reply.key.inflight == 0


def test_a_refused_connection_is_classified_as_through_requests(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    reply = upstream_for(tmp_path, url).open(call())
    expected = through_requests(url, False)
    assert expected.status == 502 and expected.reason.startswith("ConnectionError: ")
    assert (reply.status, same_text(reply.outcome.reason)) == (502, same_text(expected.reason))


def test_a_connect_timeout_is_classified_as_through_requests(tmp_path):
    """A listener whose accept queue is full drops new SYNs: the connect times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue, whatever its size on this kernel
                filler = socket.socket()
                fillers.append(filler)
                filler.settimeout(0.1)
                try:
                    filler.connect(address)
                except TimeoutError:
                    break
            else:
                pytest.skip("this kernel accepted every connection")
            url = f"http://{address[0]}:{address[1]}"
            reply = upstream_for(tmp_path, url).open(call())
            expected = through_requests(url, False)
        finally:
            for filler in fillers:
                filler.close()
    assert expected.status == 504 and expected.reason.startswith("ConnectTimeout: ")
    assert (reply.status, same_text(reply.outcome.reason)) == (504, same_text(expected.reason))


# -- connections: kept after a whole answer, closed after a stream left unread ---------------

def keep_alive(answers: list[bytes]) -> Behaviour:
    """Answer each request on the connection in turn (the last answer repeats) until the
    client closes it, and say so."""

    def behave(conn: socket.socket, server: Loopback, number: int) -> None:
        buf = bytearray()
        n = 0
        while read_request(conn, buf):
            conn.sendall(answers[min(n, len(answers) - 1)])
            n += 1
        server.hung_up.put(number)
    return behave


ANSWER = HEAD_200 + b"Content-Length: %d\r\n\r\n%s" % (len(OK_BODY), OK_BODY)
ERROR_BODY = b'{"error": {"code": 400, "message": "Bad request."}}'
ERROR = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
         b"\r\n%s" % (len(ERROR_BODY), ERROR_BODY))
STREAM_DONE = (HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n"
               + chunked(b'data: {"a": 1}\r\n\r\n', b'data: {"b": 2}\r\n\r\n') + b"0\r\n\r\n")


def test_a_whole_answer_gives_its_connection_back(tmp_path, loopback):
    server = loopback(keep_alive([ANSWER, ERROR, ANSWER]))
    up = upstream_for(tmp_path, server.url)
    assert up.open(call()).status == 200
    assert up.open(call()).status == 400  # an error body, read whole
    assert up.open(call()).status == 200
    assert server.accepted == 1


def test_a_stream_read_to_its_end_gives_its_connection_back(tmp_path, loopback):
    server = loopback(keep_alive([STREAM_DONE, ANSWER]))
    up = upstream_for(tmp_path, server.url)
    reply = up.open(call(stream=True))
    assert b"".join(reply.chunks or ()) == b'data: {"a": 1}\r\n\r\ndata: {"b": 2}\r\n\r\n'
    reply.release()
    assert up.open(call()).status == 200
    assert server.accepted == 1


def test_a_stream_released_unfinished_closes_its_connection(tmp_path, loopback):
    opened = HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b'data: {"a": 1}\r\n\r\n')
    server = loopback(keep_alive([opened]))
    up = upstream_for(tmp_path, server.url)
    reply = up.open(call(stream=True))
    assert reply.status == 200 and reply.key.inflight == 1
    reply.release()
    assert server.hung_up.get(timeout=5) == 1  # closed, not put back half-read
    assert reply.key.inflight == 0
    second = up.open(call(stream=True))
    assert second.status == 200 and server.accepted == 2
    second.release()


def test_a_url_left_to_requests_is_sent_and_answered(tmp_path, loopback):
    """A URL the fast path leaves to requests (an empty query) is still sent and answered."""
    server = loopback(keep_alive([ANSWER]))
    up = upstream_for(tmp_path, server.url)
    odd = Call("POST", GENERATE, [], {"Content-Type": "application/json"}, b"{}", model=MODEL,
               url=server.url + GENERATE + "?")
    reply = up.open(odd)
    assert (reply.status, reply.body) == (200, OK_BODY)


def test_reply_headers_join_repeats_drop_this_hops_and_mask_keys(tmp_path, loopback):
    shaped = "AIza" + "x" * 35  # any Google-shaped key, not only the one this call sent
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nVary: Origin\r\n"
              b"Vary: X-Origin\r\nServer: ESF\r\nConnection: keep-alive\r\n"
              b"X-Echo: key=fake-key-0001\r\nX-Other: " + shaped.encode() + b"\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(OK_BODY), OK_BODY))
    server = loopback(keep_alive([answer]))
    reply = upstream_for(tmp_path, server.url).open(call())
    assert reply.headers == [
        ("Content-Type", "application/json"), ("Vary", "Origin, X-Origin"),
        ("X-Echo", "key=" + mask_key("fake-key-0001").replace("…", "...")),
        ("X-Other", mask_key(shaped).replace("…", "..."))]


def self_signed(tmp_path) -> tuple[ssl.SSLContext, str]:
    """A TLS server context for 127.0.0.1 and the path of its certificate (its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "upstream.crt", tmp_path / "upstream.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)


def test_https_trusts_the_ca_bundle_requests_names_and_refuses_others_alike(
        tmp_path, loopback, monkeypatch):
    context, cert = self_signed(tmp_path)
    server = loopback(keep_alive([ANSWER]), tls=context)
    refused = upstream_for(tmp_path, server.url).open(call())
    expected = through_requests(server.url, False)
    assert expected.status == 502 and expected.reason.startswith("SSLError: ")
    assert (refused.status, refused.outcome.reason) == (502, expected.reason)
    # requests' CA bundle (certifi's) is the one trusted, as it was through requests' adapter
    monkeypatch.setattr("requests.adapters.DEFAULT_CA_BUNDLE_PATH", cert)
    trusted = upstream_for(tmp_path, server.url).open(call())
    assert (trusted.status, trusted.body) == (200, OK_BODY)


def test_a_pool_let_go_and_closed_is_replaced(tmp_path, loopback):
    """The client keeps each origin's urllib3 pool. One the PoolManager has let go of and
    that was closed (as urllib3 1.x closed the pools it evicted) is not used: a new one is."""
    server = loopback(keep_alive([ANSWER]))
    up = upstream_for(tmp_path, server.url)
    assert up.open(call()).status == 200
    in_use = up.adapter.get_connection_with_tls_context(  # as requests looks it up
        requests.Request("POST", server.url + GENERATE).prepare(), True)
    up.adapter.poolmanager.clear()
    in_use.close()
    assert up.open(call()).status == 200
    assert server.hung_up.get(timeout=5) == 1 and server.accepted == 2


def recorded(received: list[bytes]) -> Behaviour:
    """Answer every request with ANSWER, keeping each request's bytes as they arrived."""

    def behave(conn: socket.socket, server: Loopback, number: int) -> None:
        got = bytearray()

        class Tap:  # read_request reads through this: every byte read is kept
            @staticmethod
            def recv(size: int) -> bytes:
                data = conn.recv(size)
                got.extend(data)
                return data

        buf = bytearray()
        while read_request(Tap, buf):  # type: ignore[arg-type]
            received.append(bytes(got[:len(got) - len(buf)]))
            del got[:len(got) - len(buf)]
            conn.sendall(ANSWER)
    return behave


@pytest.fixture
def writes(monkeypatch) -> list[bytes]:
    """What every HTTP connection writes, one entry per write."""
    sent: list[bytes] = []
    send = http.client.HTTPConnection.send
    monkeypatch.setattr(http.client.HTTPConnection, "send",
                        lambda self, data: (sent.append(bytes(data)), send(self, data))[1])
    return sent


def test_a_request_leaves_in_one_write_with_its_body(tmp_path, loopback, writes):
    """Head and body go out in one write (one segment, one wake-up upstream), new
    connection or kept-alive, and arrive whole."""
    received: list[bytes] = []
    server = loopback(recorded(received))
    up = upstream_for(tmp_path, server.url)
    body = b'{"contents": [{"parts": [{"text": "hi"}]}]}'
    for _ in range(2):
        reply = up.open(Call("POST", GENERATE, [], {"Content-Type": "application/json"}, body,
                             model=MODEL))
        assert (reply.status, reply.body) == (200, OK_BODY)
    assert server.accepted == 1
    assert len(writes) == 2 and writes == received
    head, _, sent = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST " + GENERATE.encode() + b" HTTP/1.1\r\n")
    assert b"\r\nContent-Length: %d" % len(body) in head and sent == body


def test_a_body_without_its_length_is_sent_as_urllib3_sends_it(tmp_path, loopback, writes):
    """A body whose Content-Length is not among the headers takes urllib3's own way (head,
    then body), and still arrives whole."""
    received: list[bytes] = []
    server = loopback(recorded(received))
    up = upstream_for(tmp_path, server.url)
    pool = up.adapter.poolmanager.connection_from_url(server.url)
    answer = pool.urlopen("POST", GENERATE, body=b"abc", headers={"X-Test": "1"}, retries=False)
    assert (answer.status, answer.data) == (200, OK_BODY)
    assert len(writes) == 2 and writes[1] == b"abc"
    assert received == [writes[0] + writes[1]]


def test_a_kept_connection_the_server_closed_is_not_reused(tmp_path, loopback):
    """Google may close an idle kept-alive connection: the pool sees it closed before
    reusing it, and the next call goes out on a new one, first time."""

    def answer_once(conn: socket.socket, server: Loopback, number: int) -> None:
        read_request(conn, bytearray())
        conn.sendall(ANSWER)  # keep-alive by its headers, then closed all the same

    server = loopback(answer_once)
    up = upstream_for(tmp_path, server.url)
    assert up.open(call()).status == 200
    server.threads[0].join(5)  # the server has closed the first connection
    reply = up.open(call())
    assert (reply.status, reply.body, len(reply.attempts)) == (200, OK_BODY, 1)
    assert server.accepted == 2


def test_a_kept_connection_with_bytes_nobody_asked_for_is_not_reused(tmp_path, loopback):
    """Bytes waiting on an idle connection (no request asked for them) would be read as the
    next call's answer: such a connection is closed, and the call goes out on a new one."""
    answered, stray = threading.Event(), threading.Event()

    def answer_then_babble(conn: socket.socket, server: Loopback, number: int) -> None:
        read_request(conn, bytearray())
        conn.sendall(ANSWER)
        if number == 1:
            assert answered.wait(5)  # the client has read its answer and kept the connection
            conn.sendall(ERROR)  # unasked: must never become the next call's answer
            stray.set()
            server.hold()

    server = loopback(answer_then_babble)
    up = upstream_for(tmp_path, server.url)
    assert up.open(call()).status == 200
    answered.set()
    assert stray.wait(5)
    reply = up.open(call())
    assert (reply.status, reply.body) == (200, OK_BODY)
    assert server.accepted == 2
