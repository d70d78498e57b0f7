"""Fetch http(s) image URLs named in OpenAI requests, with size, time and address limits."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests

from proxy.translate.errors import TranslationError

MAX_IMAGE_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT = 10.0


def _public_host(host: str) -> bool:
    """Whether every address `host` resolves to is on the public internet.

    Refusing private, loopback and link-local targets keeps clients from using the proxy
    to reach its own /metrics, the host's services, or a cloud metadata endpoint.
    """
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if not addr.is_global:
            return False
    return bool(infos)


def fetch_images(session: requests.Session, urls: list[str], *, allow_private: bool = False
                 ) -> dict[str, tuple[str, bytes]]:
    """Return url → (mime type, bytes), or raise TranslationError naming the bad URL."""
    out: dict[str, tuple[str, bytes]] = {}
    for url in urls:
        host = urlsplit(url).hostname or ""
        if not allow_private and not _public_host(host):
            raise TranslationError(f"image_url {url[:100]!r}: the host is not a public address",
                                   param="messages")
        try:
            with session.get(url, stream=True, timeout=FETCH_TIMEOUT, allow_redirects=False) as r:
                if r.status_code != 200:
                    raise TranslationError(f"image_url {url[:100]!r}: fetching it answered "
                                           f"HTTP {r.status_code}", param="messages")
                mime = r.headers.get("Content-Type", "").split(";")[0].strip() or "image/jpeg"
                if not mime.startswith("image/"):
                    raise TranslationError(f"image_url {url[:100]!r}: not an image ({mime})",
                                           param="messages")
                data = bytearray()
                for block in r.iter_content(65536):
                    data += block
                    if len(data) > MAX_IMAGE_BYTES:
                        raise TranslationError(f"image_url {url[:100]!r}: larger than "
                                               f"{MAX_IMAGE_BYTES >> 20} MiB", param="messages")
        except requests.RequestException as exc:
            raise TranslationError(f"image_url {url[:100]!r}: could not be fetched "
                                   f"({type(exc).__name__})", param="messages") from None
        out[url] = (mime, bytes(data))
    return out
