"""Files (resumable, multipart and raw uploads) and cachedContents, each owned by one key."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import string
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from proxy.fake import answers, catalog, protojson, validate
from proxy.fake import google_errors as errors
from proxy.fake.web import Fail, Request, Response, json_response, page

if TYPE_CHECKING:
    from proxy.fake.app import FakeApp

FILE_TTL_S = 48 * 3600  # Google keeps uploaded files for 48 hours
DEFAULT_CACHE_TTL_S = 3600.0
_ALPHABET = string.ascii_lowercase + string.digits


def _rid(length: int) -> str:
    """Return a random lowercase id like Google's file and cache ids."""
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in os.urandom(length))


def rfc3339(ts: float) -> str:
    """Format a Unix time the way Google's resources do (UTC, microseconds, Z)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rpc(version: str, service: str, method: str) -> str:
    return f"google.ai.generativelanguage.{version}.{service}.{method}"


# --- files --------------------------------------------------------------------------------

def upload(app: FakeApp, req: Request, version: str) -> Response:
    """POST /upload/v1beta/files: start a resumable session, or take a multipart/raw upload.

    With `?upload_id=` it is a chunk of a resumable session, which the session id
    authorises (Google's upload URLs carry no API key).
    """
    upload_id = req.query.get("upload_id")
    if upload_id:
        return _upload_chunk(app, req, upload_id)
    key, _, _ = app.gate(req, model_call=False, rpc=_rpc(version, "FileService", "CreateFile"))
    protocol = req.header("x-goog-upload-protocol").lower()
    if protocol == "resumable":
        if req.header("x-goog-upload-command").lower().strip() != "start":
            raise Fail(errors.bad_request("A resumable upload must begin with "
                                          "X-Goog-Upload-Command: start."))
        meta = _metadata(req.json_body(empty={}))
        declared = req.header("x-goog-upload-header-content-length").strip()
        mime = (req.header("x-goog-upload-header-content-type") or meta.get("mimeType")
                or "application/octet-stream")
        session_id = _rid(32)
        app.state.put("uploads", session_id, {
            "owner": key, "meta": meta, "mime": mime,
            "size": int(declared) if declared.isdigit() else None, "received": 0,
            "hash": hashlib.sha256(), "version": version, "base": req.base_url}, limit=1000)
        url = f"{req.base_url}/upload/{version}/files?upload_id={session_id}&upload_protocol=resumable"
        return Response(200, [("X-Goog-Upload-Status", "active"), ("X-Goog-Upload-URL", url),
                              ("X-Goog-Upload-Control-URL", url),
                              ("X-Goog-Upload-Chunk-Granularity", "8388608"),
                              ("Content-Type", "text/plain; charset=utf-8")], b"")
    content_type = req.header("content-type")
    if protocol == "multipart" or content_type.lower().startswith("multipart/"):
        meta, data, mime = _multipart(req)
    else:
        meta, data, mime = {}, req.body, content_type or "application/octet-stream"
    file = _create_file(app, key, meta, mime, len(data), hashlib.sha256(data), version, req.base_url)
    return json_response(200, {"file": file}, [("X-Goog-Upload-Status", "final")])


def _metadata(body: Any) -> dict[str, Any]:
    """Pull display name, MIME type and name out of `{"file": {...}}`, either spelling."""
    file = body.get("file", {}) if isinstance(body, dict) else {}
    if not isinstance(file, dict):
        raise Fail(errors.bad_request("Invalid JSON payload received. 'file' must be an object."))
    out = {}
    for camel in ("displayName", "mimeType", "name"):
        value = file.get(camel, file.get(protojson.snake(camel)))
        if value:
            out[camel] = value
    return out


def _multipart(req: Request) -> tuple[dict[str, Any], bytes, str]:
    """Split a multipart/related upload into (metadata, file bytes, MIME type)."""
    content_type = req.header("content-type")
    boundary = ""
    for piece in content_type.split(";"):
        name, _, value = piece.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise Fail(errors.bad_request("Multipart upload without a boundary."))
    sections = [s for s in req.body.split(b"--" + boundary.encode())[1:]
                if s.strip() not in (b"", b"--")]
    parsed = []
    for section in sections:
        head, _, payload = section.lstrip(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parsed.append((headers, payload[:-2] if payload.endswith(b"\r\n") else payload))
    if len(parsed) != 2:
        raise Fail(errors.bad_request("Multipart upload needs a metadata part and a media part."))
    try:
        meta = _metadata(json.loads(parsed[0][1] or b"{}"))
    except ValueError:
        raise Fail(errors.bad_request("Invalid JSON payload received in the metadata part.")) from None
    mime = parsed[1][0].get("content-type") or meta.get("mimeType") or "application/octet-stream"
    return meta, parsed[1][1], mime


def _upload_chunk(app: FakeApp, req: Request, session_id: str) -> Response:
    with app.state.lock:
        session = app.state.uploads.get(session_id)
    if session is None:
        raise Fail(errors.error(404, "Upload session not found, or it has been finalized."),
                   [("X-Goog-Upload-Status", "final")])
    commands = {c.strip() for c in req.header("x-goog-upload-command").lower().split(",") if c.strip()}
    progress = [("X-Goog-Upload-Size-Received", str(session["received"]))]
    if "cancel" in commands:
        app.state.pop("uploads", session_id)
        return Response(200, [("X-Goog-Upload-Status", "cancelled")], b"")
    if "query" in commands:
        return Response(200, [("X-Goog-Upload-Status", "active"), *progress], b"")
    if not commands & {"upload", "finalize"}:
        raise Fail(errors.bad_request("X-Goog-Upload-Command must be upload, finalize, query or "
                                      "cancel."), [("X-Goog-Upload-Status", "active"), *progress])
    if "upload" in commands:
        offset = req.header("x-goog-upload-offset").strip()
        if not offset.isdigit() or int(offset) != session["received"]:
            raise Fail(errors.bad_request(f"Invalid X-Goog-Upload-Offset {offset!r}: "
                                          f"{session['received']} bytes were received so far."),
                       [("X-Goog-Upload-Status", "active"), *progress])
        session["received"] += len(req.body)
        session["hash"].update(req.body)
    if "finalize" not in commands:
        return Response(200, [("X-Goog-Upload-Status", "active"),
                              ("X-Goog-Upload-Size-Received", str(session["received"]))], b"")
    app.state.pop("uploads", session_id)
    if session["size"] is not None and session["received"] != session["size"]:
        raise Fail(errors.bad_request(f"Upload finalized with {session['received']} bytes but "
                                      f"{session['size']} were announced."),
                   [("X-Goog-Upload-Status", "final")])
    file = _create_file(app, session["owner"], session["meta"], session["mime"],
                        session["received"], session["hash"], session["version"], session["base"])
    return json_response(200, {"file": file}, [("X-Goog-Upload-Status", "final")])


def _create_file(app: FakeApp, key: str, meta: dict[str, Any], mime: str, size: int,
                 digest: Any, version: str, base: str) -> dict[str, Any]:
    name = meta.get("name", "")
    file_id = name.split("/", 1)[1] if name.startswith("files/") else (name or _rid(12))
    now = time.time()
    resource: dict[str, Any] = {"name": f"files/{file_id}"}
    if meta.get("displayName"):
        resource["displayName"] = meta["displayName"]
    resource.update({
        "mimeType": mime, "sizeBytes": str(size), "createTime": rfc3339(now),
        "updateTime": rfc3339(now), "expirationTime": rfc3339(now + FILE_TTL_S),
        # Google base64-encodes the hex digest, not the raw one.
        "sha256Hash": base64.b64encode(digest.hexdigest().encode()).decode(),
        "uri": f"{base}/{version}/files/{file_id}", "state": "ACTIVE", "source": "UPLOADED",
    })
    app.state.put("files", file_id, {"owner": key, "resource": resource, "expires": now + FILE_TTL_S})
    return resource


def _file_for(app: FakeApp, key: str, file_id: str) -> dict[str, Any]:
    with app.state.lock:
        item = app.state.files.get(file_id)
    if item is None or item["expires"] < time.time():
        raise Fail(errors.error(404, f"File files/{file_id} not found."))
    if item["owner"] != key:
        raise Fail(errors.file_forbidden(file_id))
    return item


def list_files(app: FakeApp, req: Request, version: str) -> Response:
    """GET /v1beta/files: this key's files, paged."""
    key, _, _ = app.gate(req, model_call=False, rpc=_rpc(version, "FileService", "ListFiles"))
    items = [i["resource"] for i in app.state.owned_list("files", key)]
    files, token = page(items, req, 10, 100)
    body: dict[str, Any] = {"files": files} if files else {}
    if token:
        body["nextPageToken"] = token
    return json_response(200, body)


def get_file(app: FakeApp, req: Request, version: str, file_id: str) -> Response:
    """GET /v1beta/files/{id}: 403 for another key's file, 404 for an unknown one."""
    key, _, _ = app.gate(req, model_call=False, rpc=_rpc(version, "FileService", "GetFile"))
    return json_response(200, _file_for(app, key, file_id)["resource"])


def delete_file(app: FakeApp, req: Request, version: str, file_id: str) -> Response:
    """DELETE /v1beta/files/{id}."""
    key, _, _ = app.gate(req, model_call=False, rpc=_rpc(version, "FileService", "DeleteFile"))
    _file_for(app, key, file_id)
    app.state.pop("files", file_id)
    return json_response(200, {})


# --- cachedContents -----------------------------------------------------------------------

def _expiry(parsed: dict[str, Any], now: float) -> float:
    if "expireTime" in parsed:
        return datetime.fromisoformat(parsed["expireTime"].replace("Z", "+00:00")).timestamp()
    if "ttl" in parsed:
        return now + protojson.duration_seconds(parsed["ttl"])
    return now + DEFAULT_CACHE_TTL_S


def create_cache(app: FakeApp, req: Request, version: str) -> Response:
    """POST /v1beta/cachedContents: store contents/system/tools for later generate calls."""
    key, _, _ = app.gate(req, model_call=False,
                         rpc=_rpc(version, "CacheService", "CreateCachedContent"))
    parsed, violations = protojson.parse("CachedContent", req.json_body(empty={}), version)
    if violations:
        raise Fail(errors.field_violations(violations))
    problems: list[tuple[str, str]] = []
    model = parsed.get("model", "")
    if not model:
        problems.append(("cached_content.model", "model is required"))
    failed = validate.check_contents(parsed.get("contents", []), "cached_content.contents", problems)
    if failed:
        raise Fail(failed)
    if "systemInstruction" in parsed:
        validate.check_parts(parsed["systemInstruction"].get("parts", []),
                             "cached_content.system_instruction.parts", problems)
    validate.check_tools(parsed, problems)
    if "ttl" in parsed and "expireTime" in parsed:
        problems.append(("cached_content", "only one of ttl and expire_time can be set"))
    if problems:
        raise Fail(errors.request_checks("CreateCachedContentRequest", problems))
    model_id = model.split("/", 1)[1] if model.startswith("models/") else model
    info = catalog.get(model_id)
    if info is None or "createCachedContent" not in info["supportedGenerationMethods"]:
        raise Fail(errors.model_not_found(model_id, version, "createCachedContent"))
    app.check_files(key, parsed.get("contents", []))
    now = time.time()
    expires = _expiry(parsed, now)
    content = {k: parsed[k] for k in ("contents", "systemInstruction", "tools", "toolConfig")
               if k in parsed}
    cache_id = _rid(16)
    resource: dict[str, Any] = {"name": f"cachedContents/{cache_id}", "model": f"models/{model_id}",
                                "createTime": rfc3339(now), "updateTime": rfc3339(now),
                                "expireTime": rfc3339(expires)}
    if parsed.get("displayName"):
        resource["displayName"] = parsed["displayName"]
    resource["usageMetadata"] = {"totalTokenCount": answers.prompt_tokens(content)}
    app.state.put("caches", cache_id, {"owner": key, "resource": resource, "content": content,
                                       "expires": expires})
    return json_response(200, resource)


def _cache_item(app: FakeApp, req: Request, version: str, cache_id: str, method: str) -> tuple[str, dict[str, Any]]:
    key, _, _ = app.gate(req, model_call=False, rpc=_rpc(version, "CacheService", method))
    item = app.state.owned("caches", cache_id, key)
    if item is None:
        raise Fail(errors.cache_forbidden(cache_id))
    return key, item


def list_caches(app: FakeApp, req: Request, version: str) -> Response:
    """GET /v1beta/cachedContents: this key's live caches, paged."""
    key, _, _ = app.gate(req, model_call=False, rpc=_rpc(version, "CacheService", "ListCachedContents"))
    items = [i["resource"] for i in app.state.owned_list("caches", key)]
    caches, token = page(items, req, 100, 1000)
    body: dict[str, Any] = {"cachedContents": caches} if caches else {}
    if token:
        body["nextPageToken"] = token
    return json_response(200, body)


def get_cache(app: FakeApp, req: Request, version: str, cache_id: str) -> Response:
    """GET /v1beta/cachedContents/{id} (owner only)."""
    return json_response(200, _cache_item(app, req, version, cache_id, "GetCachedContent")[1]["resource"])


def update_cache(app: FakeApp, req: Request, version: str, cache_id: str) -> Response:
    """PATCH /v1beta/cachedContents/{id}: only the expiry (ttl or expireTime) may change."""
    _, item = _cache_item(app, req, version, cache_id, "UpdateCachedContent")
    parsed, violations = protojson.parse("CachedContent", req.json_body(empty={}), version)
    if violations:
        raise Fail(errors.field_violations(violations))
    extra = set(parsed) - {"ttl", "expireTime", "name"}
    if extra or not ({"ttl", "expireTime"} & set(parsed)):
        raise Fail(errors.bad_request("Only ttl or expire_time can be updated on a CachedContent."))
    now = time.time()
    expires = _expiry(parsed, now)
    with app.state.lock:
        item["expires"] = expires
        item["resource"] = {**item["resource"], "updateTime": rfc3339(now),
                            "expireTime": rfc3339(expires)}
    return json_response(200, item["resource"])


def delete_cache(app: FakeApp, req: Request, version: str, cache_id: str) -> Response:
    """DELETE /v1beta/cachedContents/{id} (owner only)."""
    _cache_item(app, req, version, cache_id, "DeleteCachedContent")
    app.state.pop("caches", cache_id)
    return json_response(200, {})
