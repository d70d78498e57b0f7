"""Fetch the http(s) image and document URLs named in OpenAI requests, safely.

The address check happens where the connection is made: each connection resolves its
host once, refuses it unless every address is public, and connects to exactly the
address it checked. Nothing can slip between the check and the connect — not a URL
that parses differently in two places, not a DNS answer that changes (rebinding), not
a redirect — and TLS still verifies the certificate for the hostname in the URL.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Mapping
from http.client import HTTPException
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NameResolutionError, NewConnectionError
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

from proxy.translate.errors import TranslationError
from proxy.translate.fields import fail
from proxy.translate.media import mime_from_filename

MAX_FETCH_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT = 10.0   # seconds to connect, and between two reads
FETCH_BUDGET = 30.0    # seconds for one URL in all, redirects included: stops slow drips
MAX_REDIRECTS = 3
_READ_SIZE = 65536
_HEADERS = {"User-Agent": "gemini-api-proxy (fetching a URL named in a request)",
            "Accept": "image/*, application/pdf, text/*;q=0.9, */*;q=0.5",
            # Compressed bodies could expand past the size limit inside one read.
            "Accept-Encoding": "identity"}
_DOCUMENT_TYPES = frozenset({"application/pdf", "application/json", "application/xml",
                             "application/rtf"})
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream",
                            "application/binary", "application/unknown"})
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


class AddressRefused(Exception):
    """A host resolved to an address the fetcher may not reach.

    Deliberately not an OSError: urllib3 and requests would retry or wrap those, and
    this must reach `fetch_urls` as itself.
    """

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, which is not a public address")
        self.host = host
        self.address = address


def is_public_address(address: str) -> bool:
    """Tell whether address is on the public internet (as is any IPv4 address inside it).

    Refusing private, loopback, link-local and multicast targets keeps clients from using
    the proxy to reach its own /metrics, the host's services, or a cloud metadata endpoint.
    IPv6 forms that carry an IPv4 address (mapped, compatible, 6to4, NAT64, Teredo) are
    judged by that IPv4 address too.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            inner.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            inner.append(ip.sixtofour)
        if ip.teredo is not None:
            inner.extend(ip.teredo)
        if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
            inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return all(v4.is_global and not v4.is_multicast for v4 in inner)
    return True


def _connect(conn: HTTPConnection, allow_private: bool) -> socket.socket:
    """Resolve conn's host once, check every address, and connect to a checked one."""
    host = getattr(conn, "_dns_host", conn.host).strip("[]")  # what urllib3 would resolve
    try:
        infos = socket.getaddrinfo(host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    if not infos:
        raise NewConnectionError(conn, f"{conn.host} has no addresses")
    addresses = [(str(info[4][0]), int(info[4][1])) for info in infos]
    if not allow_private:
        for address, _ in addresses:
            if not is_public_address(address):
                raise AddressRefused(conn.host, address)
    timeout = conn.timeout if isinstance(conn.timeout, (int, float)) else None
    last: OSError | None = None
    for address in addresses:
        try:
            # An IP literal: create_connection looks nothing up again.
            sock = socket.create_connection(address, timeout)
        except OSError as exc:
            last = exc
            continue
        for option in conn.socket_options or ():
            sock.setsockopt(*option)
        return sock
    if isinstance(last, TimeoutError):
        raise ConnectTimeoutError(conn, f"connecting to {conn.host} timed out")
    raise NewConnectionError(conn, f"could not connect to {conn.host}: {last}")


class _CheckedHTTPConnection(HTTPConnection):
    """An HTTP connection that only reaches addresses `_connect` checked."""

    def __init__(self, *args: Any, allow_private: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private = allow_private

    def _new_conn(self) -> socket.socket:
        return _connect(self, self.allow_private)


class _CheckedHTTPSConnection(HTTPSConnection):
    """As _CheckedHTTPConnection; SNI and certificate checks still use the URL's hostname."""

    def __init__(self, *args: Any, allow_private: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private = allow_private

    def _new_conn(self) -> socket.socket:
        return _connect(self, self.allow_private)


class _CheckedPoolManager(PoolManager):
    """A pool manager whose pools open only checked connections."""

    def __init__(self, *args: Any, allow_private: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private = allow_private

    def _new_pool(self, scheme: str, host: str, port: int,
                  request_context: dict[str, Any] | None = None) -> HTTPConnectionPool:
        if scheme not in ("http", "https"):
            raise ValueError(f"refusing to fetch {scheme} URLs")
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = _CheckedHTTPSConnection if scheme == "https" else _CheckedHTTPConnection
        pool.conn_kw["allow_private"] = self.allow_private
        return pool


class _CheckedAdapter(HTTPAdapter):
    """A requests transport adapter built on _CheckedPoolManager."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        self.poolmanager = _CheckedPoolManager(num_pools=connections, maxsize=maxsize,
                                               block=block, allow_private=self.allow_private,
                                               **pool_kwargs)


def fetch_session(allow_private: bool = False) -> requests.Session:
    """Return a session that fetches only through checked connections, ignoring env proxies."""
    session = requests.Session()
    session.trust_env = False  # an HTTP(S)_PROXY would connect for us, unchecked
    session.headers.clear()
    session.headers.update(_HEADERS)
    adapter = _CheckedAdapter(allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _ambiguity(url: str) -> str | None:
    """Say why url could be read two ways (or is not plain http(s)), or None if it is clean."""
    if any(ch <= " " or ch == "\x7f" for ch in url):
        return "it contains spaces or control characters"
    if "\\" in url:
        return "it contains a backslash"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "it does not parse as a URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "only http and https URLs can be fetched"
    if "@" in parts.netloc:
        return "it carries a user name or password (user@host)"
    if not _plain_host(parts):
        return "its host is not a plain host name or IP address (use the xn-- form of IDN names)"
    try:
        other = parse_url(url)  # what urllib3 will connect to must be what was read here
    except ValueError:
        return "it does not parse as a URL"
    if (other.host or "").strip("[]").lower() != (parts.hostname or "") or other.port != port:
        return "its host parses two ways"
    return None


def _plain_host(parts: SplitResult) -> bool:
    host = parts.hostname or ""
    if "%" in host:
        return False
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)  # no zone ids: they name an interface, not a host
        except ValueError:
            return False
        return True
    return bool(_HOST.fullmatch(host)) and ".." not in host


def _sniff(data: bytes) -> str | None:
    """Recognise the file types worth recognising from their first bytes."""
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _usable(mime: str) -> bool:
    """Tell whether Gemini can take mime as an image or a document."""
    return mime.startswith(("image/", "text/")) or mime in _DOCUMENT_TYPES


def _could_not(path: str, url: str, why: str = "") -> TranslationError:
    # Never the far side's status, headers or body: to a client aiming at internal
    # servers those would make this a port and path scanner.
    return fail(path, f"{url[:100]!r} could not be fetched{why}; make sure the URL is "
                      "publicly reachable, or send the contents inline as a data: URI")


def _too_big(path: str, url: str) -> TranslationError:
    return fail(path, f"{url[:100]!r} is larger than {MAX_FETCH_BYTES >> 20} MiB; "
                      "send a smaller file")


def _read(resp: requests.Response, url: str, path: str, deadline: float) -> tuple[str, bytes]:
    """Read one 200 answer within the size limit and the time budget; return (mime, bytes)."""
    declared = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    generic = declared in _GENERIC_TYPES
    if not generic and not _usable(declared):
        raise fail(path, f"{url[:100]!r} is not an image or a document ({declared}); "
                         "send an image, a PDF or a text file")
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_FETCH_BYTES:
        raise _too_big(path, url)
    data = bytearray()
    while True:
        if time.monotonic() > deadline:
            raise _could_not(path, url, f": it took longer than {FETCH_BUDGET:g} s")
        # read1 returns as soon as anything arrives, so a slow drip meets the deadline check.
        block = resp.raw.read1(_READ_SIZE)
        if not block:
            break
        data += block
        if len(data) > MAX_FETCH_BYTES:
            raise _too_big(path, url)
    mime = declared
    if generic:
        mime = _sniff(bytes(data[:16])) or mime_from_filename(urlsplit(resp.url).path) or ""
        if not _usable(mime):
            raise fail(path, f"{url[:100]!r}: cannot tell what kind of file it is; serve it "
                             "with its Content-Type, or send it inline as a data: URI")
    return mime, bytes(data)


def _fetch(session: requests.Session, url: str, path: str) -> tuple[str, bytes]:
    """Fetch one URL, following up to MAX_REDIRECTS redirects, each hop checked afresh."""
    deadline = time.monotonic() + FETCH_BUDGET
    hop = url
    for hops in range(MAX_REDIRECTS + 1):
        problem = _ambiguity(hop)
        if problem is not None:
            where = f"{url[:100]!r}" if hops == 0 else f"{url[:100]!r} redirects to {hop[:100]!r}"
            raise fail(path, f"refusing to fetch {where}: {problem}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _could_not(path, url, f": it took longer than {FETCH_BUDGET:g} s")
        timeout = min(FETCH_TIMEOUT, remaining)
        try:
            with session.get(hop, stream=True, timeout=(timeout, timeout),
                             allow_redirects=False) as resp:
                target = session.get_redirect_target(resp)
                if target is not None:
                    hop = urljoin(hop, target)
                    continue
                if resp.status_code != 200:
                    raise _could_not(path, url)
                return _read(resp, url, path, deadline)
        except AddressRefused:
            where = f"{url[:100]!r}" if hops == 0 else f"{url[:100]!r} redirects to {hop[:100]!r}, which"
            raise fail(path, f"{where} is not a public address; the proxy only fetches "
                             "from the public internet") from None
        except TranslationError:
            raise
        # Reading resp.raw directly meets urllib3's and http.client's own errors too.
        except (requests.RequestException, HTTPError, HTTPException, OSError, ValueError):
            raise _could_not(path, url) from None
    raise fail(path, f"{url[:100]!r} redirects more than {MAX_REDIRECTS} times; "
                     "give the final URL")


def fetch_urls(urls: Mapping[str, str], *, allow_private: bool = False
               ) -> dict[str, tuple[str, bytes]]:
    """Fetch url → field path pairs; return url → (mime type, bytes).

    Raises TranslationError naming the field of the first URL that cannot be fetched.
    `allow_private` lets fetches reach loopback and private addresses (IMAGE_FETCH_PRIVATE).
    """
    out: dict[str, tuple[str, bytes]] = {}
    with fetch_session(allow_private) as session:
        for url, path in urls.items():
            out[url] = _fetch(session, url, path)
    return out
