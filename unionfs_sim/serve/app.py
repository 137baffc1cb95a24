"""The OCI distribution-spec v1.1 HTTP API (end-1 ... end-13, plus the catalog) over a registry.

Routes are matched on the raw request path, before any normalisation, and every repository
name is checked against the spec's grammar before it reaches the store: ``/v2/a/../b/...``
is NAME_INVALID, never repository ``b``. Blobs stream in (hashed as they arrive, into a
temporary file) and out (``web.FileResponse``: sendfile, with Range). Errors are the
spec's JSON ``{"errors": [{"code", "message", "detail"}]}`` with its status codes.
Where distribution 2.8.2 departs from the spec (registry/handlers/*.go), this follows the
spec; ``tests/test_serve_conformance.py`` lists each difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, Protocol

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import ETag
from multidict import CIMultiDict

from ..distribution import MAX_MANIFEST_SIZE, check_digest, check_name
from ..errors import (
    BlobUnknown,
    DigestInvalid,
    DigestMismatch,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestTooBig,
    ManifestUnknown,
    NameInvalid,
    RepositoryUnknown,
    TagInvalid,
    UploadInvalid,
    UploadUnknown,
)
from ..mediatypes import MT_INDEX
from .auth import AuthFailed, Htpasswd

__all__ = ["Backend", "UploadSession", "make_app"]

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


class UploadSession(Protocol):
    """An upload session as the server drives it (``registry.Upload`` is one)."""

    id: str
    repo: str
    offset: int

    def writing(self, start: int | None) -> contextlib.AbstractContextManager[Any]:
        """Hold the session for one request's body starting at ``start``."""

    def mark(self) -> tuple[int, Any]:
        """The state :meth:`rollback` returns to."""

    def rollback(self, mark: tuple[int, Any]) -> None:
        """Forget what was written since ``mark``."""

    def write(self, data: bytes) -> None:
        """Append ``data``."""

    def finish(self, digest: str) -> str:
        """Check ``digest`` and store the blob."""

    def cancel(self) -> None:
        """Drop the session."""


class Backend(Protocol):
    """What the server needs of a registry: the distribution API's operations on raw
    repository names (``registry.Registry`` is one). The server depends on this, not on
    the model, so the model can offer ``reg.serve()`` without an import cycle."""

    root: Path | None

    def repositories(self) -> list[str]: ...
    def list_tags(self, repo: str) -> list[str]: ...
    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]: ...
    def put_manifest(self, repo: str, reference: str, data: bytes,
                     content_type: str | None) -> tuple[str, str | None]: ...
    def delete_manifest(self, repo: str, reference: str) -> None: ...
    def stat_blob(self, repo: str, digest: str) -> int: ...
    def open_blob(self, repo: str, digest: str) -> tuple[int, Path | IO[bytes]]: ...
    def delete_blob(self, repo: str, digest: str) -> None: ...
    def mount_blob(self, repo: str, digest: str, source: str | None) -> bool: ...
    def start_upload(self, repo: str) -> UploadSession: ...
    def get_upload(self, repo: str, uid: str) -> UploadSession: ...
    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]: ...

_log = logging.getLogger(__name__)

#: Default bound on one upload's bytes (every chunk together).
MAX_UPLOAD = 64 << 30
_API_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
_READ = 1 << 20

# One route per endpoint of spec.md's table; <name> may hold slashes, so the fixed
# suffix decides (as distribution's router does: registry/api/v2/routes.go).
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"/v2/?"), "base"),
    (re.compile(r"/v2/_catalog"), "catalog"),
    (re.compile(r"/v2/(?P<name>.+)/tags/list"), "tags"),
    (re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)"), "manifest"),
    (re.compile(r"/v2/(?P<name>.+)/blobs/uploads/?"), "uploads"),
    (re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<uid>[^/]+)"), "upload"),
    (re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)"), "blob"),
    (re.compile(r"/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)"), "referrers"),
]


class ApiError(Exception):
    """An error response: HTTP status, the spec's code, a message, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.detail = status, code, message, headers or {}, detail


def _error_response(e: ApiError) -> web.Response:
    body = {"errors": [{"code": e.code, "message": e.message, "detail": e.detail}]}
    return web.json_response(body, status=e.status, headers={**_API_HEADER, **e.headers})


def _translate(e: Exception) -> ApiError:
    """The spec's error for an exception of the model."""
    if isinstance(e, ApiError):
        return e
    msg = str(e)
    table: list[tuple[type[Exception], int, str]] = [
        (NameInvalid, 400, "NAME_INVALID"),
        (TagInvalid, 400, "TAG_INVALID"),
        (ManifestBlobUnknown, 400, "MANIFEST_BLOB_UNKNOWN"),
        (ManifestTooBig, 413, "MANIFEST_INVALID"),
        (ManifestInvalid, 400, "MANIFEST_INVALID"),
        (DigestInvalid, 400, "DIGEST_INVALID"),
        (DigestMismatch, 400, "DIGEST_INVALID"),
        (RepositoryUnknown, 404, "NAME_UNKNOWN"),
        (ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
        (BlobUnknown, 404, "BLOB_UNKNOWN"),
        (UploadUnknown, 404, "BLOB_UPLOAD_UNKNOWN"),
    ]
    for cls, status, code in table:
        if isinstance(e, cls):
            detail = {"digest": e.digest} if isinstance(e, ManifestBlobUnknown) else None
            return ApiError(status, code, msg, detail=detail)
    if isinstance(e, UploadInvalid):
        return ApiError(416, "BLOB_UPLOAD_INVALID", msg, {"Range": _range(e.offset)})
    raise e


def _range(offset: int) -> str:
    """The ``Range`` header of an upload holding ``offset`` bytes (``0-0`` when empty, as distribution)."""
    return f"0-{max(offset - 1, 0)}"


def _int_param(request: web.Request, key: str) -> int | None:
    v = request.query.get(key)
    if v is None:
        return None
    if not v.isdigit():
        raise ApiError(400, "PAGINATION_NUMBER_INVALID", f"{key}={v!r}: not a non-negative integer")
    return int(v)


def _page(items: list[str], request: web.Request, path: str) -> tuple[list[str], dict[str, str]]:
    """``items`` (sorted) after ``last``, at most ``n`` of them, and a ``Link`` header to the rest."""
    n = _int_param(request, "n")
    last = request.query.get("last")
    if last is not None:
        items = [t for t in items if t > last]
    if n is None or n >= len(items):
        return items, {}
    page = items[:n]
    if not page:
        return page, {}
    return page, {"Link": f'<{path}?n={n}&last={page[-1]}>; rel="next"'}


class _App:
    """The handlers, bound to one registry."""

    def __init__(self, registry: Backend, htpasswd: Htpasswd | None, max_upload: int) -> None:
        self.reg = registry
        self.auth = htpasswd
        self.max_upload = max_upload

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0]
        try:
            if self.auth is not None:
                await self.auth.check(request.headers.get("Authorization"))
            for pattern, kind in _ROUTES:
                m = pattern.fullmatch(raw)
                if m is None:
                    continue
                args = m.groupdict()
                if "name" in args:
                    check_name(args["name"])
                handler = getattr(self, f"{kind}_{request.method.lower()}", None)
                if handler is None:
                    raise ApiError(405, "UNSUPPORTED", f"{request.method} is not allowed on {kind}")
                resp: web.StreamResponse = await handler(request, args)
                return resp
            raise ApiError(404, "UNSUPPORTED", f"no such endpoint: {raw[:200]}")
        except AuthFailed as e:
            return _error_response(ApiError(401, "UNAUTHORIZED", str(e),
                                            {"WWW-Authenticate": 'Basic realm="unionfs-sim"'}))
        except Exception as e:  # noqa: BLE001 - the model's errors become the spec's
            try:
                return _error_response(_translate(e))
            except Exception:  # noqa: BLE001 - not one of ours (a full disk, a bug): 500, logged
                _log.exception("%s %s", request.method, raw[:200])
                return _error_response(ApiError(500, "UNKNOWN", f"internal error: {type(e).__name__}: {e}"))

    # --- end-1: the API's root -------------------------------------------------------------

    async def base_get(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        return web.json_response({}, headers=_API_HEADER)

    base_head = base_get

    # --- catalog (distribution's extension) ---------------------------------------------------

    async def catalog_get(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        names = [n for n in self.reg.repositories() if _valid_name(n)]
        page, headers = _page(names, request, "/v2/_catalog")
        return web.json_response({"repositories": page}, headers={**_API_HEADER, **headers})

    # --- end-8a/8b: tags ---------------------------------------------------------------------

    async def tags_get(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        name = a["name"]
        page, headers = _page(self.reg.list_tags(name), request, f"/v2/{name}/tags/list")
        return web.json_response({"name": name, "tags": page}, headers={**_API_HEADER, **headers})

    # --- end-3, end-7, end-9: manifests ------------------------------------------------------------

    async def manifest_get(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        data, media_type, digest = self.reg.get_manifest(a["name"], a["reference"])
        headers = {**_API_HEADER, "Docker-Content-Digest": digest, "Content-Type": media_type,
                   "ETag": f'"{digest}"'}
        if _not_modified(request, digest):
            return web.Response(status=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        return web.Response(body=data, status=200, headers=headers)

    manifest_head = manifest_get

    async def manifest_put(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        name, reference = a["name"], a["reference"]
        length = request.content_length
        if length is not None and length > MAX_MANIFEST_SIZE:
            raise ManifestTooBig(f"manifest of {length} bytes: the limit is {MAX_MANIFEST_SIZE}")
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > MAX_MANIFEST_SIZE:
                raise ManifestTooBig(f"manifest over {MAX_MANIFEST_SIZE} bytes")
        digest, subject = await asyncio.to_thread(self.reg.put_manifest, name, reference, bytes(body),
                                                  request.headers.get("Content-Type"))
        headers = {**_API_HEADER, "Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        if subject is not None:
            headers["OCI-Subject"] = subject
        return web.Response(status=201, headers=headers)

    async def manifest_delete(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        await asyncio.to_thread(self.reg.delete_manifest, a["name"], a["reference"])
        return web.Response(status=202, headers=_API_HEADER)

    # --- end-2, end-10: blobs ----------------------------------------------------------------

    async def blob_get(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        name, digest = a["name"], a["digest"]
        headers = {**_API_HEADER, "Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                   "ETag": f'"{digest}"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            size = self.reg.stat_blob(name, digest)
            return web.Response(status=200, headers={**headers, "Content-Length": str(size)})
        size, src = self.reg.open_blob(name, digest)
        if _not_modified(request, digest):
            if not isinstance(src, Path):
                src.close()
            return web.Response(status=304, headers=headers)
        seen = _decide_preconditions(request, digest)
        if seen is None:
            if not isinstance(src, Path):
                src.close()
            return web.Response(status=412, headers=headers)
        _limit_unsent(request)
        if isinstance(src, Path):
            # aiohttp's file sender: sendfile(2), Range answered with 206/416.
            return _BlobFile(src, digest, seen, chunk_size=_READ, headers=headers)
        with src:
            data = src.read()
        return _bytes_with_range(seen, data, headers)

    blob_head = blob_get

    async def blob_delete(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        await asyncio.to_thread(self.reg.delete_blob, a["name"], a["digest"])
        return web.Response(status=202, headers={**_API_HEADER, "Docker-Content-Digest": a["digest"]})

    # --- end-4a/4b, end-11: starting uploads, single-request uploads, mounts -------------------------

    async def uploads_post(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        name = a["name"]
        mount = request.query.get("mount")
        if mount is not None:
            check_digest(mount)
            source = request.query.get("from")
            if await asyncio.to_thread(self.reg.mount_blob, name, mount, source):
                return web.Response(status=201, headers={**_API_HEADER, "Location": f"/v2/{name}/blobs/{mount}",
                                                         "Docker-Content-Digest": mount})
        digest = request.query.get("digest")
        if digest is not None:
            check_digest(digest)
        up = self.reg.start_upload(name)
        if digest is not None:
            try:
                await self._receive(request, up, None)
                with up.writing(None):
                    await asyncio.to_thread(up.finish, digest)
            except BaseException:
                up.cancel()  # a single-request upload has no session to go on with
                raise
            return web.Response(status=201, headers={**_API_HEADER, "Location": f"/v2/{name}/blobs/{digest}",
                                                     "Docker-Content-Digest": digest})
        return web.Response(status=202, headers=self._upload_headers(up))

    def _upload_headers(self, up: UploadSession) -> dict[str, str]:
        return {**_API_HEADER, "Location": f"/v2/{up.repo}/blobs/uploads/{up.id}", "Range": _range(up.offset),
                "Docker-Upload-UUID": up.id}

    async def _receive(self, request: web.Request, up: UploadSession, content_range: str | None) -> None:
        """Stream the request body into ``up``; on any failure the upload is as it was before."""
        start = end = None
        if content_range is not None:
            m = re.fullmatch(r"(?:bytes[= ])?(\d+)-(\d+)(?:/\d+|/\*)?", content_range.strip())
            if m is None:
                raise UploadInvalid(f"bad Content-Range {content_range!r}", up.offset)
            start, end = int(m.group(1)), int(m.group(2))
            if end < start:
                raise UploadInvalid(f"bad Content-Range {content_range!r}", up.offset)
        with up.writing(start):
            before = up.mark()
            try:
                async for chunk in request.content.iter_chunked(_READ):
                    if up.offset + len(chunk) > self.max_upload:
                        raise ApiError(413, "SIZE_INVALID", f"upload over {self.max_upload} bytes")
                    up.write(chunk)
                got = up.offset - before[0]
                if start is not None and end is not None and got != end - start + 1:
                    raise UploadInvalid(f"Content-Range {content_range!r} announces {end - start + 1} bytes, "
                                        f"the body has {got}", before[0])
            except BaseException:
                up.rollback(before)
                raise

    # --- end-5, end-6, end-13: chunks, closing, status -------------------------------------------

    def _upload(self, a: dict[str, str]) -> UploadSession:
        return self.reg.get_upload(a["name"], a["uid"])

    async def upload_get(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        up = self._upload(a)
        return web.Response(status=204, headers=self._upload_headers(up))

    async def upload_patch(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        up = self._upload(a)
        await self._receive(request, up, request.headers.get("Content-Range"))
        return web.Response(status=202, headers=self._upload_headers(up))

    async def upload_put(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        up = self._upload(a)
        digest = request.query.get("digest")
        if digest is None:
            raise DigestInvalid("PUT of an upload needs ?digest=")
        check_digest(digest)
        await self._receive(request, up, request.headers.get("Content-Range"))
        with up.writing(None):  # a second PUT at once is 416, one after this is 404
            await asyncio.to_thread(up.finish, digest)
        return web.Response(status=201, headers={**_API_HEADER, "Location": f"/v2/{a['name']}/blobs/{digest}",
                                                 "Docker-Content-Digest": digest})

    async def upload_delete(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        up = self._upload(a)
        up.cancel()
        return web.Response(status=204, headers=_API_HEADER)

    # --- end-12a/12b: referrers ------------------------------------------------------------------

    async def referrers_get(self, request: web.Request, a: dict[str, str]) -> web.StreamResponse:
        artifact_type = request.query.get("artifactType")
        refs = self.reg.referrers(a["name"], a["digest"], artifact_type)
        headers = {**_API_HEADER}
        if artifact_type is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        body = json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": refs}).encode()
        return web.Response(body=body, headers={**headers, "Content-Type": MT_INDEX})


class _BlobFile(web.FileResponse):
    """aiohttp's file sender (sendfile, Range) whose ETag stays the blob's digest, as
    distribution sends it; aiohttp would put one of the file's mtime and size there.

    It is prepared with ``seen``, the request as :func:`_decide_preconditions` left it, so
    aiohttp does not compare If-Match/If-Range with that mtime-size tag of its own.
    """

    def __init__(self, path: Path, digest: str, seen: web.Request, **kwargs: Any) -> None:
        self._digest = digest
        self._seen = seen
        super().__init__(path, **kwargs)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        return await super().prepare(self._seen)

    @property
    def etag(self) -> ETag | None:
        return web.StreamResponse.etag.fget(self)  # type: ignore[attr-defined,no-any-return]

    @etag.setter
    def etag(self, value: ETag | str | None) -> None:
        web.StreamResponse.etag.fset(self, self._digest)  # type: ignore[attr-defined]


def _decide_preconditions(request: web.Request, digest: str) -> web.Request | None:
    """Decide If-Match and If-Range against the blob's ETag, its digest, as Go's
    ``http.ServeContent`` does for 2.8.2: None when If-Match names only other entities
    (412); else the request to serve, without those headers, and without its Range when
    If-Range names anything else (distribution gives ServeContent no modification time, so
    a date never matches either)."""
    if_match = request.if_match
    if if_match is not None and not any(not t.is_weak and t.value in (digest, "*") for t in if_match):
        return None
    drop = [h for h in ("If-Match", "If-Range") if h in request.headers]
    if "If-Range" in drop and request.headers["If-Range"].strip() != f'"{digest}"':
        drop.append("Range")
    if not drop:
        return request
    headers = CIMultiDict(request.headers)
    for h in drop:
        headers.popall(h, None)
    return request.clone(headers=headers)


def _not_modified(request: web.Request, digest: str) -> bool:
    """If-None-Match names the content's digest (its ETag) or ``*``: answer 304, as
    distribution does for manifests (``etagMatch``) and blobs (``http.ServeContent``)."""
    tags = request.if_none_match
    return tags is not None and any(t.value in (digest, "*") for t in tags)


#: How many bytes a blob response may keep queued in its socket beyond what the client's
#: receive window takes (``TCP_NOTSENT_LOWAT``, as Cloudflare sets it for its HTTP servers).
_UNSENT = 64 << 10


def _limit_unsent(request: web.Request) -> None:
    """Keep a blob's socket from queueing megabytes the client has not made room for.

    Without a limit, sendfile(2) fills the send buffer (up to ``tcp_wmem``'s 4 MiB) and the
    kernel transmits that backlog as the client's window opens: over loopback, inside the
    client's own ACK processing, so a skopeo pull spent ~10% more CPU (in its softirqs)
    than against distribution and, the client being the bottleneck, ran slower. With the
    limit the bytes go out in our own sendfile calls (benchmarks/README.md has the numbers).
    """
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux (and macOS); elsewhere a no-op
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, _UNSENT)


def _valid_name(n: str) -> bool:
    try:
        check_name(n)
    except NameInvalid:
        return False
    return True


def _bytes_with_range(request: web.Request, data: bytes, headers: dict[str, str]) -> web.Response:
    """``data`` whole (200) or the one range a ``Range: bytes=a-b`` header asks for (206/416)."""
    rng = request.headers.get("Range")
    if rng is None:
        return web.Response(body=data, headers=headers)
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
    size = len(data)
    if m is None or (not m.group(1) and not m.group(2)):
        return web.Response(body=data, headers=headers)
    if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        start, end = max(size - int(m.group(2)), 0), size - 1
    if start >= size or end < start:
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    return web.Response(body=data[start:end + 1], status=206,
                        headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"})


def make_app(registry: Backend, htpasswd: Htpasswd | None = None, max_upload: int = MAX_UPLOAD) -> web.Application:
    """The aiohttp application serving ``registry`` (every request goes through one dispatcher)."""
    handlers = _App(registry, htpasswd, max_upload)
    app = web.Application(client_max_size=MAX_MANIFEST_SIZE + 1)
    app.router.add_route("*", "/{tail:.*}", handlers.dispatch)
    return app

