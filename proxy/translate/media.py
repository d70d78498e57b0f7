"""Turn OpenAI image, audio and file inputs into Gemini `inlineData` parts.

Base64 payloads pass through as the same string object where the client sent
bare base64; data: URIs cost one slice. Nothing here decodes base64: Gemini
validates it anyway, and decoding megabytes per request is the overhead the
proxy must not add.
"""
from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from .fields import fail

# A fixed table instead of `mimetypes`, whose first use reads files from /etc.
MIME_BY_EXTENSION = {
    "pdf": "application/pdf", "txt": "text/plain", "md": "text/markdown",
    "markdown": "text/markdown", "csv": "text/csv", "tsv": "text/tab-separated-values",
    "html": "text/html", "htm": "text/html", "xml": "text/xml", "json": "application/json",
    "js": "text/javascript", "py": "text/x-python", "css": "text/css", "rtf": "text/rtf",
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
    "gif": "image/gif", "heic": "image/heic", "heif": "image/heif", "bmp": "image/bmp",
    "wav": "audio/wav", "mp3": "audio/mp3", "aiff": "audio/aiff", "aac": "audio/aac",
    "ogg": "audio/ogg", "flac": "audio/flac", "m4a": "audio/mp4", "opus": "audio/ogg",
    "mp4": "video/mp4", "mpeg": "video/mpeg", "mov": "video/mov", "avi": "video/avi",
    "webm": "video/webm", "wmv": "video/wmv", "flv": "video/x-flv", "3gp": "video/3gpp",
}
_MIME = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")
_AUDIO_FORMAT = re.compile(r"[a-z0-9]{2,10}")


def inline_part(mime: str, data: str) -> dict[str, Any]:
    """Return a Gemini inlineData part."""
    return {"inlineData": {"mimeType": mime, "data": data}}


def is_http_url(url: str) -> bool:
    """Tell whether url is an absolute http(s) URL."""
    return url[:8].lower().startswith(("http://", "https://"))


def parse_data_uri(uri: str, path: str) -> tuple[str, str]:
    """Split `data:<mime>[;…][;base64],<data>` into (mime, base64 data)."""
    comma = uri.find(",", 0, 512)
    if comma == -1:
        raise fail(path, "malformed data: URI (no comma after the header)")
    params = uri[5:comma].split(";")
    mime = params[0].strip().lower()
    if not mime:
        raise fail(path, "data: URI has no MIME type")
    if not _MIME.fullmatch(mime):
        raise fail(path, f"data: URI has an invalid MIME type {mime!r}")
    if "base64" in (p.strip().lower() for p in params[1:]):
        data = uri[comma + 1:]
    else:
        # Percent-encoded text payload: Gemini wants base64.
        data = base64.b64encode(unquote_to_bytes(uri[comma + 1:])).decode("ascii")
    if not data:
        raise fail(path, "data: URI has no data")
    return mime, data


def mime_from_filename(filename: Any) -> str | None:
    """Guess a MIME type from a file name's extension."""
    if not isinstance(filename, str) or "." not in filename:
        return None
    return MIME_BY_EXTENSION.get(filename.rsplit(".", 1)[1].lower())


def url_part(url: Any, path: str, fetched: dict[str, tuple[str, bytes]] | None,
             cache: dict[str, dict[str, Any]], *, image: bool = True) -> dict[str, Any]:
    """Return the inlineData part for a URL (data: URI, or http(s) already fetched).

    A fetched URL must have yielded an image when `image` is set (image_url fields);
    file_url fields take documents too.
    """
    if not isinstance(url, str) or not url:
        raise fail(path, "must be a non-empty string")
    if url[:5].lower() == "data:":
        return inline_part(*parse_data_uri(url, path))
    if not is_http_url(url):
        raise fail(path, "only data: URIs and http(s) URLs are supported")
    part = cache.get(url)
    if part is None:
        got = fetched.get(url) if fetched else None
        if got is None:
            raise fail(path, f"URL {url[:200]!r} was not fetched")
        try:
            mime, raw = got
            if isinstance(mime, str):
                mime = mime.split(";")[0].strip().lower()
            if (not isinstance(mime, str) or not _MIME.fullmatch(mime)
                    or not isinstance(raw, (bytes, bytearray))):
                raise ValueError
        except (TypeError, ValueError):
            raise fail(path, f"URL {url[:200]!r} did not yield a file") from None
        part = inline_part(mime, base64.b64encode(raw).decode("ascii"))
        cache[url] = part
    mime = part["inlineData"]["mimeType"]
    if image and not mime.startswith("image/"):
        raise fail(path, f"{url[:200]!r} is not an image ({mime}); image URLs must "
                         "point at images")
    return part


def audio_part(audio: Any, path: str) -> dict[str, Any]:
    """Return the inlineData part for an `input_audio` object ({data, format})."""
    if not isinstance(audio, dict):
        raise fail(path, "must be an object")
    data = audio.get("data")
    if not isinstance(data, str) or not data:
        raise fail(f"{path}.data", "must be a non-empty base64 string")
    fmt = audio.get("format")
    if not isinstance(fmt, str) or not _AUDIO_FORMAT.fullmatch(fmt.lower()):
        raise fail(f"{path}.format", "must be an audio format such as \"wav\" or \"mp3\"")
    return inline_part(f"audio/{fmt.lower()}", data)


def file_part(file_data: Any, filename: Any, path: str) -> dict[str, Any]:
    """Return the inlineData part for file contents (a data: URI, or base64 plus a filename)."""
    if not isinstance(file_data, str) or not file_data:
        raise fail(f"{path}.file_data", "must be a non-empty string")
    if file_data[:5].lower() == "data:":
        return inline_part(*parse_data_uri(file_data, f"{path}.file_data"))
    mime = mime_from_filename(filename)
    if mime is None:
        raise fail(path, "cannot tell the file type: send file_data as a data: URI "
                         "or give a filename with a known extension")
    return inline_part(mime, file_data)
