"""A container registry: repositories, mutable tags, immutable digests, a blob store.

It behaves as a Docker/OCI distribution registry does, in memory or kept on disk::

    reg = Registry()                                         # in memory
    reg = Registry(root="store/")                            # kept on disk (survives restarts)
    digest = reg.push(image, "example.com/team/app:1.0")    # = image.digest
    reg.pull("example.com/team/app@" + digest)              # by digest
    reg.pull("example.com/team/app")                         # no tag, no digest: latest
    reg.tag("example.com/team/app:1.0", "example.com/team/app:stable")
    reg.delete("example.com/team/app:1.0")                   # removes the tag only
    reg.delete("example.com/team/app@" + digest)             # the manifest and its tags
    reg.gc()                                                 # blobs no manifest references
    with reg.serve(("127.0.0.1", 0)) as server:              # the OCI distribution API over HTTP
        ...                                                  # (unionfs_sim.serve; the `serve` extra)

Names are normalised as Docker does (``nginx`` is ``docker.io/library/nginx``); a name on a
loopback host (``localhost:5000/team/app``, ``127.0.0.1:5000/team/app``) is the repository
``team/app``, the name clients use over HTTP, so ``reg.pull("127.0.0.1:5000/team/app")``
finds what ``docker push 127.0.0.1:5000/team/app`` sent to ``reg.serve()``.
A repository holds manifests (by digest), tags pointing at them, and links to the blobs
pushed into it; moving a tag leaves the old manifest pullable by digest (until deleted).
Blobs (configs and layers) live in one store shared by all repositories, keyed by digest,
so a layer pushed in ten repositories is stored once; pulled images share their
:class:`Layer` objects (pulls copy nothing). Manifests are kept apart from blobs, as the
distribution API keeps them: :attr:`Registry.blobs` counts configs and layers only.

Besides the image-level calls, the registry has the operations of the distribution API
on raw repository names (:meth:`get_manifest`, :meth:`put_manifest`, :meth:`start_upload`,
:meth:`referrers` ...), which ``unionfs_sim.serve`` maps onto HTTP; manifests are stored
byte-exact with their media type, whatever they describe (images, indexes, artifacts).

On disk (``root=``) every change is atomic: blobs are written to a temporary file, fsynced
and renamed into place only after their digest is checked; tags and manifest links are
replaced by rename. A process killed at any moment leaves every completed push intact
and no partial blob visible; uploads abandoned by a dead process are removed when a
registry next opens the root. Several processes may share a root (a server and a
notebook): mutations take a lock file, reads see only completed renames.

Every method is thread-safe: one registry can be used from several threads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import types
import weakref
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs

from .distribution import (
    MAX_MANIFEST_SIZE,
    check_digest,
    check_name,
    check_reference,
    check_tag,
    is_digest,
    parse_manifest,
    referrer_descriptor,
)
from .errors import (
    BlobUnknown,
    DigestInvalid,
    DigestMismatch,
    FormatError,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestTooBig,
    ManifestUnknown,
    NameInvalid,
    RepositoryUnknown,
    TagInvalid,
    UnknownName,
    UploadInvalid,
    UploadUnknown,
)
from .formats.blobs import compression_of, read_layer
from .image import Image, sha256
from .layer import BlobSource, Layer
from .mediatypes import CONFIG_MEDIA_TYPES, INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES
from .reference import Reference, names_domain

if TYPE_CHECKING:
    from .serve import Server

__all__ = [
    "MAX_MANIFEST_SIZE",
    "BlobUnknown",
    "DigestInvalid",
    "ManifestBlobUnknown",
    "ManifestInvalid",
    "ManifestTooBig",
    "ManifestUnknown",
    "NameInvalid",
    "Registry",
    "RepositoryUnknown",
    "TagInvalid",
    "UnknownName",
    "Upload",
    "UploadInvalid",
    "UploadUnknown",
]

RefLike = str | Reference

#: Seconds an uploaded blob no manifest references yet is kept by :meth:`Registry.gc`
#: (a push uploads its blobs first and its manifest last; zot's ``gcDelay`` does the same).
GC_GRACE = 600.0
#: Seconds after which an upload session nobody writes to is dropped.
UPLOAD_IDLE = 3600.0
_LOOPBACK = re.compile(r"(?:localhost|127(?:\.[0-9]{1,3}){3}|\[::1\])(?::[0-9]+)?")
_CHUNK = 1 << 20


# --- names ---------------------------------------------------------------------------------

def _key(r: Reference) -> str:
    """The repository a parsed reference names: the path on a loopback host, else the full name."""
    assert r.path is not None
    if r.domain is not None and _LOOPBACK.fullmatch(r.domain):
        return r.path
    return r.name


# --- storage backends ----------------------------------------------------------------------


@attrs.define
class _MemBlob:
    size: int
    data: bytes | None = None
    layer: Layer | None = None


@attrs.define
class _MemRepo:
    manifests: dict[str, str] = attrs.field(factory=dict)  # digest -> media type
    tags: dict[str, str] = attrs.field(factory=dict)
    blobs: set[str] = attrs.field(factory=set)
    referrers: dict[str, dict[str, dict[str, Any]]] = attrs.field(factory=dict)  # subject -> digest -> descriptor


class _Store:
    """What the registry keeps, in memory or on disk: the few operations everything else uses.

    Mutations are called with the registry's lock held (and, on disk, the root's lock file).
    """

    @property
    def upload_dir(self) -> Path:
        """Where this process writes uploads and blobs before renaming them into place."""
        raise NotImplementedError

    # blobs (configs, layers) and manifests: content-addressed, shared by all repositories
    def blob_size(self, d: str) -> int | None: raise NotImplementedError
    def blob_open(self, d: str) -> IO[bytes]: raise NotImplementedError
    def blob_file(self, d: str) -> Path | None: return None
    def blob_commit(self, tmp: Path, d: str, size: int) -> None: raise NotImplementedError
    def blob_delete(self, d: str) -> None: raise NotImplementedError
    def blob_sizes(self) -> dict[str, int]: raise NotImplementedError
    def manifest_bytes(self, d: str) -> bytes | None: raise NotImplementedError
    def manifest_put(self, d: str, data: bytes) -> None: raise NotImplementedError
    def manifest_digests(self) -> list[str]: raise NotImplementedError
    def manifest_delete(self, d: str) -> None: raise NotImplementedError
    # uploads committed recently (kept by gc for a while)
    def recent_mark(self, d: str) -> None: raise NotImplementedError
    def recent(self) -> dict[str, float]: raise NotImplementedError
    def recent_clear(self, d: str) -> None: raise NotImplementedError
    # repositories
    def repo_names(self) -> list[str]: raise NotImplementedError
    def repo_manifests(self, repo: str) -> dict[str, str]: raise NotImplementedError
    def repo_manifest_add(self, repo: str, d: str, media_type: str) -> None: raise NotImplementedError
    def repo_manifest_remove(self, repo: str, d: str) -> None: raise NotImplementedError
    def repo_tags(self, repo: str) -> dict[str, str]: raise NotImplementedError
    def repo_tag_get(self, repo: str, tag: str) -> str | None: raise NotImplementedError
    def repo_tag_set(self, repo: str, tag: str, d: str) -> None: raise NotImplementedError
    def repo_tag_remove(self, repo: str, tag: str) -> None: raise NotImplementedError
    def repo_has_blob(self, repo: str, d: str) -> bool: raise NotImplementedError
    def repo_blob_link(self, repo: str, d: str) -> None: raise NotImplementedError
    def repo_blob_unlink(self, repo: str, d: str) -> None: raise NotImplementedError
    def repo_referrers(self, repo: str, subject: str) -> list[dict[str, Any]]: raise NotImplementedError
    def repo_referrer_add(self, repo: str, subject: str, desc: dict[str, Any]) -> None: raise NotImplementedError
    def repo_referrer_remove(self, repo: str, subject: str, d: str) -> None: raise NotImplementedError
    def repo_tidy(self, repo: str) -> None: """Forget a repository left with no manifests, tags or blobs."""

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held around every mutation (cross-process on disk)."""
        yield


class _MemoryStore(_Store):
    def __init__(self) -> None:
        self.blobs: dict[str, _MemBlob] = {}
        self.manifests: dict[str, bytes] = {}
        self.repos: dict[str, _MemRepo] = {}
        self._recent: dict[str, float] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def upload_dir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="unionfs-sim-uploads-")
        return Path(self._tmp.name)

    def blob_size(self, d: str) -> int | None:
        b = self.blobs.get(d)
        return None if b is None else b.size

    def blob_open(self, d: str) -> IO[bytes]:
        b = self.blobs[d]
        if b.data is None:
            assert b.layer is not None
            b.data = _layer_blob_bytes(b.layer, d)
        return io.BytesIO(b.data)

    def blob_commit(self, tmp: Path, d: str, size: int) -> None:
        if d not in self.blobs:
            self.blobs[d] = _MemBlob(size, tmp.read_bytes())
        tmp.unlink()

    def blob_delete(self, d: str) -> None:
        self.blobs.pop(d, None)

    def blob_sizes(self) -> dict[str, int]:
        return {d: b.size for d, b in self.blobs.items()}

    def manifest_bytes(self, d: str) -> bytes | None:
        return self.manifests.get(d)

    def manifest_put(self, d: str, data: bytes) -> None:
        self.manifests.setdefault(d, data)

    def manifest_digests(self) -> list[str]:
        return list(self.manifests)

    def manifest_delete(self, d: str) -> None:
        self.manifests.pop(d, None)

    def recent_mark(self, d: str) -> None:
        self._recent[d] = time.time()

    def recent(self) -> dict[str, float]:
        return dict(self._recent)

    def recent_clear(self, d: str) -> None:
        self._recent.pop(d, None)

    def repo_names(self) -> list[str]:
        return [n for n, r in self.repos.items() if r.manifests or r.tags]

    def _r(self, repo: str) -> _MemRepo:
        return self.repos.get(repo) or _MemRepo()

    def repo_manifests(self, repo: str) -> dict[str, str]:
        return dict(self._r(repo).manifests)

    def repo_manifest_add(self, repo: str, d: str, media_type: str) -> None:
        self.repos.setdefault(repo, _MemRepo()).manifests[d] = media_type

    def repo_manifest_remove(self, repo: str, d: str) -> None:
        self._r(repo).manifests.pop(d, None)

    def repo_tags(self, repo: str) -> dict[str, str]:
        return dict(self._r(repo).tags)

    def repo_tag_get(self, repo: str, tag: str) -> str | None:
        return self._r(repo).tags.get(tag)

    def repo_tag_set(self, repo: str, tag: str, d: str) -> None:
        self.repos.setdefault(repo, _MemRepo()).tags[tag] = d

    def repo_tag_remove(self, repo: str, tag: str) -> None:
        self._r(repo).tags.pop(tag, None)

    def repo_has_blob(self, repo: str, d: str) -> bool:
        return d in self._r(repo).blobs

    def repo_blob_link(self, repo: str, d: str) -> None:
        self.repos.setdefault(repo, _MemRepo()).blobs.add(d)

    def repo_blob_unlink(self, repo: str, d: str) -> None:
        self._r(repo).blobs.discard(d)

    def repo_referrers(self, repo: str, subject: str) -> list[dict[str, Any]]:
        return [dict(v) for v in self._r(repo).referrers.get(subject, {}).values()]

    def repo_referrer_add(self, repo: str, subject: str, desc: dict[str, Any]) -> None:
        self.repos.setdefault(repo, _MemRepo()).referrers.setdefault(subject, {})[desc["digest"]] = desc

    def repo_referrer_remove(self, repo: str, subject: str, d: str) -> None:
        refs = self._r(repo).referrers.get(subject)
        if refs is not None:
            refs.pop(d, None)
            if not refs:
                del self._r(repo).referrers[subject]

    def repo_tidy(self, repo: str) -> None:
        r = self.repos.get(repo)
        if r is not None and not (r.manifests or r.tags or r.blobs or r.referrers):
            del self.repos[repo]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` by ``data``: a temporary file beside it, fsynced, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_empty_dirs(start: Path, stop: Path) -> None:
    """rmdir ``start`` and its parents up to (not including) ``stop`` while they are empty."""
    p = start
    while p != stop and stop in p.parents:
        try:
            p.rmdir()
        except OSError:
            return
        p = p.parent


class _DiskStore(_Store):
    """The on-disk layout (a registry root)::

        blobs/sha256/<hex>                     configs and layers
        manifests/sha256/<hex>                 manifests, byte-exact
        repositories/<name>/_manifests/<hex>   the repository holds this manifest (content: media type)
        repositories/<name>/_tags/<tag>        content: the manifest digest
        repositories/<name>/_layers/<hex>      a blob pushed into (or mounted in) the repository
        repositories/<name>/_referrers/<subject hex>/<hex>   a referrer's descriptor (JSON)
        _recent/<hex>                          an uploaded blob no manifest referenced yet (mtime)
        _uploads/<pid>-<random>/               one process's uploads, flock'ed while it lives
        .lock                                  flock'ed around every mutation
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("blobs/sha256", "manifests/sha256", "repositories", "_recent", "_uploads"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lockfile = open(root / ".lock", "a+b")  # noqa: SIM115 - lives as long as the store
        self._flock_depth = 0
        self._clean_abandoned_uploads()
        self._upload_dir = root / "_uploads" / f"{os.getpid()}-{secrets.token_hex(4)}"
        self._upload_dir.mkdir()
        self._upload_lock = open(self._upload_dir / ".owner", "wb")  # noqa: SIM115
        fcntl.flock(self._upload_lock, fcntl.LOCK_EX)
        self._finalizer = weakref.finalize(self, _close_disk_store, self._lockfile, self._upload_lock, self._upload_dir)

    @property
    def upload_dir(self) -> Path:
        return self._upload_dir

    def _clean_abandoned_uploads(self) -> None:
        for d in (self.root / "_uploads").iterdir():
            owner = d / ".owner"
            try:
                f = open(owner, "rb")  # noqa: SIM115
            except FileNotFoundError:
                # A directory without its owner file: a process that died while creating it.
                if time.time() - d.stat().st_mtime > 60:
                    shutil.rmtree(d, ignore_errors=True)
                continue
            with f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EACCES):
                        continue  # its process is alive
                    raise
                shutil.rmtree(d, ignore_errors=True)
        # Temporary files of atomic writes a killed process left (no write takes an hour).
        for sub in ("blobs/sha256", "manifests/sha256", "repositories"):
            for dirpath, _, names in os.walk(self.root / sub):
                for n in names:
                    if n.startswith(".tmp-"):
                        f2 = Path(dirpath, n)
                        with contextlib.suppress(FileNotFoundError):
                            if time.time() - f2.stat().st_mtime > 3600:
                                f2.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._flock_depth == 0:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX)
        self._flock_depth += 1
        try:
            yield
        finally:
            self._flock_depth -= 1
            if self._flock_depth == 0:
                fcntl.flock(self._lockfile, fcntl.LOCK_UN)

    # blobs
    def _blob(self, d: str) -> Path:
        return self.root / "blobs" / "sha256" / check_digest(d)[7:]

    def blob_size(self, d: str) -> int | None:
        try:
            return self._blob(d).stat().st_size
        except FileNotFoundError:
            return None

    def blob_open(self, d: str) -> IO[bytes]:
        return open(self._blob(d), "rb")

    def blob_file(self, d: str) -> Path | None:
        return self._blob(d)

    def blob_commit(self, tmp: Path, d: str, size: int) -> None:
        dst = self._blob(d)
        if dst.exists():
            tmp.unlink()
            return
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)

    def blob_delete(self, d: str) -> None:
        self._blob(d).unlink(missing_ok=True)

    def blob_sizes(self) -> dict[str, int]:
        out = {}
        with os.scandir(self.root / "blobs" / "sha256") as it:
            for e in it:
                if not e.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        out["sha256:" + e.name] = e.stat().st_size
        return out

    # manifests
    def _manifest(self, d: str) -> Path:
        return self.root / "manifests" / "sha256" / check_digest(d)[7:]

    def manifest_bytes(self, d: str) -> bytes | None:
        try:
            return self._manifest(d).read_bytes()
        except FileNotFoundError:
            return None

    def manifest_put(self, d: str, data: bytes) -> None:
        if not self._manifest(d).exists():
            _write_atomically(self._manifest(d), data)

    def manifest_digests(self) -> list[str]:
        d = self.root / "manifests" / "sha256"
        return ["sha256:" + p.name for p in d.iterdir() if not p.name.startswith(".")]

    def manifest_delete(self, d: str) -> None:
        self._manifest(d).unlink(missing_ok=True)

    # recent uploads
    def recent_mark(self, d: str) -> None:
        (self.root / "_recent" / check_digest(d)[7:]).touch()

    def recent(self) -> dict[str, float]:
        out = {}
        for p in (self.root / "_recent").iterdir():
            with contextlib.suppress(FileNotFoundError):
                out["sha256:" + p.name] = p.stat().st_mtime
        return out

    def recent_clear(self, d: str) -> None:
        (self.root / "_recent" / check_digest(d)[7:]).unlink(missing_ok=True)

    # repositories
    def _repo(self, repo: str) -> Path:
        # Names reach here checked (check_name, or a parsed Reference): no "..", no empty parts.
        parts = repo.split("/")
        if any(p in ("", ".", "..") or p.startswith("_") for p in parts):
            raise NameInvalid(f"invalid repository name {repo!r}")
        return self.root.joinpath("repositories", *parts)

    def repo_names(self) -> list[str]:
        base = self.root / "repositories"
        out = []
        for dirpath, dirnames, _ in os.walk(base):
            p = Path(dirpath)
            if any((p / sub).is_dir() and any((p / sub).iterdir()) for sub in ("_manifests", "_tags")):
                out.append(str(p.relative_to(base)))
            dirnames[:] = [n for n in dirnames if not n.startswith("_")]
        return out

    def _files(self, d: Path) -> Iterator[Path]:
        try:
            it = list(d.iterdir())
        except FileNotFoundError:
            return
        for p in it:
            if not p.name.startswith("."):
                yield p

    def repo_manifests(self, repo: str) -> dict[str, str]:
        out = {}
        for p in self._files(self._repo(repo) / "_manifests"):
            with contextlib.suppress(FileNotFoundError):
                out["sha256:" + p.name] = p.read_text()
        return out

    def repo_manifest_add(self, repo: str, d: str, media_type: str) -> None:
        p = self._repo(repo) / "_manifests" / check_digest(d)[7:]
        if not p.exists() or p.read_text() != media_type:
            _write_atomically(p, media_type.encode())

    def repo_manifest_remove(self, repo: str, d: str) -> None:
        (self._repo(repo) / "_manifests" / check_digest(d)[7:]).unlink(missing_ok=True)

    def repo_tags(self, repo: str) -> dict[str, str]:
        out = {}
        for p in self._files(self._repo(repo) / "_tags"):
            with contextlib.suppress(FileNotFoundError):
                out[p.name] = p.read_text()
        return out

    def repo_tag_get(self, repo: str, tag: str) -> str | None:
        try:
            return (self._repo(repo) / "_tags" / check_tag(tag)).read_text()
        except FileNotFoundError:
            return None

    def repo_tag_set(self, repo: str, tag: str, d: str) -> None:
        _write_atomically(self._repo(repo) / "_tags" / check_tag(tag), d.encode())

    def repo_tag_remove(self, repo: str, tag: str) -> None:
        (self._repo(repo) / "_tags" / check_tag(tag)).unlink(missing_ok=True)

    def repo_has_blob(self, repo: str, d: str) -> bool:
        return (self._repo(repo) / "_layers" / check_digest(d)[7:]).exists()

    def repo_blob_link(self, repo: str, d: str) -> None:
        p = self._repo(repo) / "_layers" / check_digest(d)[7:]
        if not p.exists():
            _write_atomically(p, b"")

    def repo_blob_unlink(self, repo: str, d: str) -> None:
        (self._repo(repo) / "_layers" / check_digest(d)[7:]).unlink(missing_ok=True)

    def repo_referrers(self, repo: str, subject: str) -> list[dict[str, Any]]:
        out = []
        for p in self._files(self._repo(repo) / "_referrers" / check_digest(subject)[7:]):
            with contextlib.suppress(FileNotFoundError):
                out.append(json.loads(p.read_bytes()))
        return out

    def repo_referrer_add(self, repo: str, subject: str, desc: dict[str, Any]) -> None:
        p = self._repo(repo) / "_referrers" / check_digest(subject)[7:] / check_digest(desc["digest"])[7:]
        _write_atomically(p, json.dumps(desc, separators=(",", ":")).encode())

    def repo_referrer_remove(self, repo: str, subject: str, d: str) -> None:
        p = self._repo(repo) / "_referrers" / check_digest(subject)[7:] / check_digest(d)[7:]
        p.unlink(missing_ok=True)
        _remove_empty_dirs(p.parent, self._repo(repo))

    def repo_tidy(self, repo: str) -> None:
        base = self._repo(repo)
        for sub in ("_manifests", "_tags", "_layers", "_referrers"):
            _remove_empty_dirs(base / sub, base)
        _remove_empty_dirs(base, self.root / "repositories")


def _close_disk_store(lockfile: IO[bytes], upload_lock: IO[bytes], upload_dir: Path) -> None:
    shutil.rmtree(upload_dir, ignore_errors=True)
    upload_lock.close()
    lockfile.close()


def _layer_blob_bytes(layer: Layer, digest: str) -> bytes:
    """The bytes of the blob ``digest`` a layer pushed as an :class:`Image` came from.

    Its source blob if it still has that digest, else its canonical tar (uncompressed,
    gzip or zstd) if one of those has it.

    Raises:
        DigestMismatch: no way found to make bytes with that digest.
    """
    src = layer.source_blob
    if src is not None and src.digest == digest:
        with contextlib.suppress(OSError), src.open() as f:
            data = f.read()
            if sha256(data) == digest:
                return data
    for compression in (None, "gzip", "zstd"):
        if compression is None and layer.digest != digest:
            continue
        buf = io.BytesIO()
        try:
            layer.to_tar(buf, compression=compression)
        except (ImportError, ValueError):
            continue
        if sha256(buf.getvalue()) == digest:
            return buf.getvalue()
    raise DigestMismatch(f"blob {digest}: the layer it was pushed as can no longer reproduce its bytes")


# --- uploads -------------------------------------------------------------------------------


class Upload:
    """An upload session (the distribution API's ``/blobs/uploads/<id>``): bytes appended to
    a temporary file while hashed, committed as a blob once its digest is checked."""

    def __init__(self, registry: Registry, repo: str, uid: str, path: Path) -> None:
        self.registry = registry
        self.repo = repo
        self.id = uid
        self.path = path
        self.offset = 0
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None = open(path, "wb")  # noqa: SIM115 - closed by finish/cancel
        self.busy = False
        self.touched = time.monotonic()

    def write(self, data: bytes) -> None:
        """Append ``data`` (hashing it as it goes)."""
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)
        self.offset += len(data)
        self.touched = time.monotonic()

    def mark(self) -> tuple[int, Any]:
        """The state to go back to with :meth:`rollback` (offset and hash so far)."""
        return self.offset, self._hash.copy()

    def rollback(self, mark: tuple[int, Any]) -> None:
        """Forget what was written since :meth:`mark` (a chunk that failed half-way)."""
        if self._file is None:
            return
        self._file.flush()
        self._file.truncate(mark[0])
        self._file.seek(mark[0])
        self.offset, self._hash = mark[0], mark[1].copy()

    @contextlib.contextmanager
    def writing(self, start: int | None) -> Iterator[Upload]:
        """Hold the upload for one request's body; ``start`` (a Content-Range's first byte)
        must be the current offset.

        Raises:
            UploadInvalid: the upload is busy with another request, or ``start`` is wrong.
        """
        if self._file is None:
            raise UploadUnknown(f"upload {self.id} is finished or cancelled")
        if self.busy:
            raise UploadInvalid(f"upload {self.id} is busy with another request", self.offset)
        if start is not None and start != self.offset:
            raise UploadInvalid(f"upload {self.id}: a chunk starting at byte {start}, expected byte {self.offset}",
                                self.offset)
        self.busy = True
        try:
            yield self
        finally:
            self.busy = False

    def finish(self, digest: str) -> str:
        """Check the content against ``digest`` and store it as a blob of the repository.

        Raises:
            DigestInvalid: a malformed digest, or content that hashes to another one (the
                upload is then cancelled: nothing is stored).
        """
        check_digest(digest)
        assert self._file is not None
        got = "sha256:" + self._hash.hexdigest()
        if got != digest:
            self.cancel()
            raise DigestInvalid(f"upload {self.id}: content hashes to {got}, not {digest} ({self.offset} bytes)")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.registry._commit_upload(self, digest)
        return digest

    def cancel(self) -> None:
        """Drop the upload and its bytes."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)
        self.registry._uploads.pop(self.id, None)


# --- the registry --------------------------------------------------------------------------


class Registry:
    """An image registry, in memory (``root=None``) or kept in the directory ``root`` (see the module docs)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        """An empty in-memory registry, or the one stored at ``root`` (created if missing).

        Opening a root removes the uploads left there by processes that have died.
        """
        self._lock = threading.RLock()
        self.root = Path(root).resolve() if root is not None else None
        self._store: _Store = _MemoryStore() if self.root is None else _DiskStore(self.root)
        # Layers and images already read, by blob / manifest digest: pulls share them. In
        # memory they are the store; on disk a cache that lets go of what nobody holds.
        self._layers: MutableMapping[str, Layer] = {} if self.root is None else weakref.WeakValueDictionary()
        self._images: MutableMapping[str, Image] = {} if self.root is None else weakref.WeakValueDictionary()
        self._uploads: dict[str, Upload] = {}

    def __repr__(self) -> str:
        where = "in memory" if self.root is None else str(self.root)
        with self._lock:
            return (f"<Registry {where}: {len(self._store.repo_names())} repositories, "
                    f"{len(self._store.manifest_digests())} manifests, {len(self._store.blob_sizes())} blobs>")

    @contextlib.contextmanager
    def _mutating(self) -> Iterator[_Store]:
        with self._lock, self._store.locked():
            yield self._store

    # --- names ------------------------------------------------------------------------------

    @staticmethod
    def _ref(ref: RefLike) -> Reference:
        """``ref`` parsed (Docker normalisation); a digest-only or bad one is a ValueError."""
        r = ref if isinstance(ref, Reference) else Reference.parse(ref)
        if r.path is None:
            raise ValueError(f"{str(r)!r}: a reference needs a repository name")
        return r

    def _repo_exists(self, repo: str) -> None:
        if not self._store.repo_manifests(repo) and not self._store.repo_tags(repo):
            raise RepositoryUnknown(f"unknown repository {repo!r}")

    def _lookup(self, repo: str, reference: str) -> str:
        """The manifest digest ``reference`` (a tag or a digest) names in ``repo``."""
        self._repo_exists(repo)
        if is_digest(reference):
            if reference not in self._store.repo_manifests(repo):
                raise ManifestUnknown(f"unknown manifest {reference} in repository {repo!r}")
            return reference
        digest = self._store.repo_tag_get(repo, reference)
        if digest is None:
            tags = sorted(self._store.repo_tags(repo))
            raise ManifestUnknown(f"unknown tag {reference!r} in repository {repo!r} "
                                  f"(tags: {', '.join(tags) or 'none'})")
        return digest

    @staticmethod
    def _reference_of(r: Reference) -> str:
        return r.digest if r.digest is not None else (r.tag or "latest")

    # --- push / pull ------------------------------------------------------------------------

    def push(self, image: Image, ref: RefLike) -> str:
        """Store ``image`` in the repository of ``ref`` and return its manifest digest.

        ``ref`` may carry a tag (set to this image, moving it if needed), a digest (which
        must be ``image.digest``: no tag is set), or neither (tag ``latest``). Blobs
        already stored (by digest, in any repository) are not stored again.

        Raises:
            ValueError: a bad reference, or a digest that is not ``image.digest``.
        """
        if not isinstance(image, Image):
            raise TypeError(f"push takes an Image, not {type(image).__name__}")
        r = self._ref(ref)
        repo = _key(r)
        digest = image.digest
        if r.digest is not None and r.digest != digest:
            raise ValueError(f"{str(r)!r}: the digest does not match the image's manifest digest {digest}")
        tag = r.tag if r.tag is not None else (None if r.digest is not None else "latest")
        descriptors = image.layer_descriptors
        config = image.config_bytes
        config_digest = sha256(config)
        manifest = image.manifest_bytes
        p = parse_manifest(manifest, None)
        with self._mutating() as st:
            layers: list[Layer] = []
            for layer, desc in zip(image.layers, descriptors, strict=True):
                d = str(desc["digest"])
                stored = self._layers.get(d)
                if stored is None:
                    stored = layer
                    if st.blob_size(d) is None:
                        self._put_layer_blob(st, layer, desc)
                    self._layers[d] = layer
                layers.append(stored)
                st.repo_blob_link(repo, d)
            if st.blob_size(config_digest) is None:
                self._put_blob_bytes(st, config, config_digest)
            st.repo_blob_link(repo, config_digest)
            st.manifest_put(digest, manifest)
            st.repo_manifest_add(repo, digest, p.media_type)
            if tag is not None:
                st.repo_tag_set(repo, tag, digest)
            if digest not in self._images:
                if all(a is b for a, b in zip(layers, image.layers, strict=True)):
                    self._images[digest] = image  # its layers are the stored ones: keep the object
                else:
                    self._images[digest] = Image.from_parts(layers, config, manifest)
        return digest

    def _put_layer_blob(self, st: _Store, layer: Layer, desc: Mapping[str, Any]) -> None:
        digest, size = str(desc["digest"]), int(desc["size"])
        if isinstance(st, _MemoryStore):
            st.blobs[digest] = _MemBlob(size, None, layer)
            return
        data_src = layer.source_blob
        with self._temp_blob() as (f, tmp):
            if data_src is not None and data_src.digest == digest:
                try:
                    with data_src.open() as src:
                        shutil.copyfileobj(src, f, _CHUNK)
                except OSError:
                    f.seek(0)
                    f.truncate()
            if f.tell() == 0 or sha256_file(tmp) != digest:
                f.seek(0)
                f.truncate()
                layer.to_tar(f, compression=compression_of(str(desc.get("mediaType", ""))))
            f.flush()
            got = sha256_file(tmp)
            if got != digest:
                raise DigestMismatch(f"blob {digest}: the layer cannot reproduce its bytes (it gives {got})")
            os.fsync(f.fileno())
            st.blob_commit(tmp, digest, size)

    def _put_blob_bytes(self, st: _Store, data: bytes, digest: str) -> None:
        with self._temp_blob() as (f, tmp):
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            st.blob_commit(tmp, digest, len(data))

    @contextlib.contextmanager
    def _temp_blob(self) -> Iterator[tuple[IO[bytes], Path]]:
        fd, name = tempfile.mkstemp(dir=self._store.upload_dir, prefix="blob-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w+b") as f:
                yield f, tmp
        finally:
            tmp.unlink(missing_ok=True)

    def pull(self, ref: RefLike, platform: str | None = None) -> Image:
        """The image ``ref`` names (by digest, else tag, else ``latest``).

        When that is an image index (or Docker manifest list), ``platform``
        (``"os/arch[/variant]"``, e.g. ``"linux/arm64"``) picks its image; it may be left
        out when the index lists one image only. The image shares the registry's stored
        layer objects; pulling twice gives the same object (on disk: while the first is
        still referenced).

        Raises:
            UnknownName: an unknown repository, tag or digest (a KeyError naming it), or
                no image of that platform in the index.
            ValueError: an artifact, not an image; an index with several images and no
                ``platform`` (the message lists them).
        """
        r = self._ref(ref)
        repo = _key(r)
        with self._lock:
            digest = self._lookup(repo, self._reference_of(r))
            digest = self._select_platform(repo, digest, platform)
            img = self._images.get(digest)
            if img is not None:
                return img
            if self.root is None:  # in memory: quick, and the dicts must not change meanwhile
                img = self._images[digest] = self._read_image(repo, digest)
                return img
        # On disk, read without the lock (a big image takes a while; the server keeps
        # answering). Blobs are immutable: a concurrent gc can at worst make the read fail.
        img = self._read_image(repo, digest)
        with self._lock:
            return self._images.setdefault(digest, img)

    def _select_platform(self, repo: str, digest: str, platform: str | None, depth: int = 0) -> str:
        """``digest`` itself, or for an index the digest of its image for ``platform``."""
        mt = self._store.repo_manifests(repo).get(digest)
        data = self._store.manifest_bytes(digest)
        if data is None or mt not in INDEX_MEDIA_TYPES or depth > 8:
            return digest
        children = [d for d in json.loads(data).get("manifests", []) if isinstance(d, dict)
                    and d.get("mediaType") in (MANIFEST_MEDIA_TYPES | INDEX_MEDIA_TYPES)
                    and (d.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"]

        def name(d: Mapping[str, Any]) -> str:
            p = d.get("platform") or {}
            return "/".join(str(p[k]) for k in ("os", "architecture", "variant") if p.get(k)) or str(d["digest"])

        if platform is None:
            if len(children) != 1:
                raise ValueError(f"{repo}@{digest} is an image index of {len(children)} images; pass platform= one "
                                 f"of {', '.join(name(d) for d in children) or 'none'}")
            return self._select_platform(repo, str(children[0]["digest"]), None, depth + 1)
        want = platform.lower().split("/")
        for d in children:
            got = name(d).lower().split("/")
            if got[:2] == want[:2] and (len(want) < 3 or got[2:3] == want[2:3]):
                return self._select_platform(repo, str(d["digest"]), platform, depth + 1)
        raise ManifestUnknown(f"{repo}@{digest}: no image for platform {platform!r} "
                              f"(platforms: {', '.join(name(d) for d in children)})")

    def _read_image(self, repo: str, digest: str) -> Image:
        data = self._store.manifest_bytes(digest)
        if data is None:
            raise ManifestUnknown(f"unknown manifest {digest} in repository {repo!r}")
        media_type = self._store.repo_manifests(repo).get(digest)
        p = parse_manifest(data, media_type)
        where = f"{repo}@{digest}"
        if p.media_type in INDEX_MEDIA_TYPES:
            raise ValueError(f"{where} is an image index ({p.media_type}); pull one of its manifests by digest: "
                             f"{', '.join(p.children)}")
        doc = json.loads(data)
        if p.media_type not in MANIFEST_MEDIA_TYPES or doc["config"].get("mediaType") not in CONFIG_MEDIA_TYPES:
            raise ValueError(f"{where} is not a container image (media type {p.media_type}, "
                             f"config {doc.get('config', {}).get('mediaType')!r})")
        config = self._read_blob(doc["config"]["digest"])
        diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids") or []
        layers: list[Layer] = []
        if len(diff_ids) != len(doc["layers"]):
            raise FormatError(f"{where}: the config lists {len(diff_ids)} diff_ids for {len(doc['layers'])} layers")
        for i, (desc, diff_id) in enumerate(zip(doc["layers"], diff_ids, strict=True)):
            d = desc["digest"]
            layer = self._layers.get(d)
            if layer is None:
                with self._store.blob_open(d) as f:
                    layer = read_layer(f, f"{where} layers[{i}] ({d})", diff_id, d, desc["size"], layers)[0]
                path = self._store.blob_file(d)
                if path is not None:
                    layer.record_source(BlobSource(str(path), d, desc["size"]))
                layer = self._layers.setdefault(d, layer)
            layers.append(layer)
        return Image.from_parts(layers, config, data)

    def _read_blob(self, d: str) -> bytes:
        size = self._store.blob_size(d)
        if size is None:
            raise BlobUnknown(f"unknown blob {d}")
        with self._store.blob_open(d) as f:
            return f.read()

    def resolve(self, ref: RefLike) -> str:
        """The manifest digest ``ref`` names (by digest, else tag, else ``latest``).

        Raises:
            UnknownName: an unknown repository, tag or digest.
        """
        r = self._ref(ref)
        with self._lock:
            return self._lookup(_key(r), self._reference_of(r))

    # --- tags -------------------------------------------------------------------------------

    def tag(self, src: RefLike, dst: RefLike) -> str:
        """Point the tag ``dst`` at the manifest ``src`` names; return that digest.

        ``dst`` may be in another repository (the manifest and its blobs are then added
        to it, as a cross-repository mount would); a ``dst`` without a tag means
        ``latest``. A tag that pointed elsewhere moves; the manifest it left stays
        pullable by digest.

        Raises:
            UnknownName: ``src`` names nothing.
            ValueError: ``dst`` carries a digest.
        """
        s, d = self._ref(src), self._ref(dst)
        if d.digest is not None:
            raise ValueError(f"{str(d)!r}: the destination of tag() is a tag, not a digest")
        srepo, drepo = _key(s), _key(d)
        with self._mutating() as st:
            digest = self._lookup(srepo, self._reference_of(s))
            if srepo != drepo:
                self._copy_manifest(st, srepo, drepo, digest)
            st.repo_tag_set(drepo, d.tag or "latest", digest)
        return digest

    def _copy_manifest(self, st: _Store, srepo: str, drepo: str, digest: str, depth: int = 0) -> None:
        mt = st.repo_manifests(srepo)[digest]
        data = st.manifest_bytes(digest)
        assert data is not None
        p = parse_manifest(data, mt)
        for b in p.blobs:
            if st.repo_has_blob(srepo, b):
                st.repo_blob_link(drepo, b)
        for c in p.children:
            if depth < 8 and c in st.repo_manifests(srepo):
                self._copy_manifest(st, srepo, drepo, c, depth + 1)
        st.repo_manifest_add(drepo, digest, mt)
        if p.subject is not None:
            st.repo_referrer_add(drepo, p.subject, referrer_descriptor(digest, len(data), p))

    def tags(self, repository: RefLike) -> list[str]:
        """The tags of ``repository`` (a name such as ``example.com/team/app``), sorted.

        Raises:
            UnknownName: an unknown repository.
        """
        r = self._ref(repository)
        with self._lock:
            return self.list_tags(_key(r))

    def repositories(self) -> list[str]:
        """The names of all repositories, sorted (the registry's catalog)."""
        with self._lock:
            return sorted(self._store.repo_names())

    def manifests(self, repository: RefLike) -> list[str]:
        """The manifest digests ``repository`` holds (tagged or not), sorted.

        Raises:
            UnknownName: an unknown repository.
        """
        r = self._ref(repository)
        with self._lock:
            self._repo_exists(_key(r))
            return sorted(self._store.repo_manifests(_key(r)))

    def repo_digests(self, image: Image | str, host: str | None = None) -> list[str]:
        """``docker image inspect``'s RepoDigests for ``image`` (or a manifest digest) here.

        Docker records ``name@digest`` for each repository it pushed the image to or pulled
        it from (never on build or load); this lists every repository of this registry
        that holds the manifest, named as Docker prints them (familiar names). ``host``
        (``"localhost:5000"``) prefixes repositories stored under a path only, as the
        served registry stores what clients push to a loopback address. Sorted; pass the
        list to ``Image.inspect(repo_digests=...)``.
        """
        digest = image if isinstance(image, str) else image.digest
        with self._lock:
            repos = [r for r in self._store.repo_names() if digest in self._store.repo_manifests(r)]
        out = []
        for repo in repos:
            name = f"{host}/{repo}" if host is not None and not names_domain(repo) else repo
            out.append(f"{Reference.parse(name).familiar_name}@{digest}")
        return sorted(out)

    # --- deletion ---------------------------------------------------------------------------

    def delete(self, ref: RefLike) -> None:
        """Delete what ``ref`` names from its repository.

        A tag (or no tag and no digest: ``latest``) removes the tag only; the manifest
        stays, pullable by digest. A digest removes the manifest from the repository with
        every tag of that repository pointing at it. A repository left with nothing is
        removed. Blobs stay until :meth:`gc`.

        Raises:
            UnknownName: an unknown repository, tag or digest.
        """
        r = self._ref(ref)
        self.delete_manifest(_key(r), self._reference_of(r))

    def gc(self, grace: float = GC_GRACE) -> list[str]:
        """Remove every blob no stored manifest references; return their digests, sorted.

        Untagged manifests still count (they are pullable by digest): delete them by
        digest first to free their blobs. Manifests no repository holds are removed too
        (not listed). A blob uploaded over the distribution API less than ``grace``
        seconds ago is kept even when unreferenced: its push may not have sent its
        manifest yet. A manifest is only stored after its blobs are checked under the
        same lock gc holds, so gc never leaves a manifest naming a removed blob.
        """
        with self._mutating() as st:
            held: set[str] = set()
            for repo in self._all_repos():
                held.update(st.repo_manifests(repo))
            live: set[str] = set()
            for m in held:
                data = st.manifest_bytes(m)
                if data is None:
                    continue
                try:
                    live.update(parse_manifest(data, None).blobs)
                except ManifestInvalid:
                    continue
            now = time.time()
            for d, t in st.recent().items():
                if d in live or now - t >= grace:
                    st.recent_clear(d)
                else:
                    live.add(d)
            dead = sorted(d for d in st.blob_sizes() if d not in live)
            for d in dead:
                st.blob_delete(d)
                self._layers.pop(d, None)
            for m in st.manifest_digests():
                if m not in held:
                    st.manifest_delete(m)
                    self._images.pop(m, None)
            return dead

    def _all_repos(self) -> list[str]:
        st = self._store
        if isinstance(st, _MemoryStore):
            return list(st.repos)
        base = st.root / "repositories"  # type: ignore[attr-defined]
        out = []
        for dirpath, dirnames, _ in os.walk(base):
            if "_manifests" in dirnames:
                out.append(str(Path(dirpath).relative_to(base)))
            dirnames[:] = [n for n in dirnames if not n.startswith("_")]
        return out

    # --- storage ----------------------------------------------------------------------------

    @property
    def blobs(self) -> Mapping[str, int]:
        """A read-only snapshot ``{digest: size}`` of the blob store (configs and layers)."""
        with self._lock:
            return types.MappingProxyType(self._store.blob_sizes())

    def blob(self, digest: str) -> Layer | bytes:
        """The stored blob ``digest``: the :class:`Layer` for a layer blob pushed or pulled as
        part of an image, else its bytes (a config, or a blob not read as a layer yet).

        Raises:
            UnknownName: no such blob.
        """
        with self._lock:
            if self._store.blob_size(digest) is None:
                raise BlobUnknown(f"unknown blob {digest}")
            layer = self._layers.get(digest)
            if layer is not None:
                return layer
            return self._read_blob(digest)

    # --- the distribution API (raw repository names, as clients send them) --------------------

    def stat_blob(self, repo: str, digest: str) -> int:
        """The size of blob ``digest`` in repository ``repo``.

        Raises:
            NameInvalid, DigestInvalid: a malformed name or digest.
            BlobUnknown: not there (or not pushed into this repository).
        """
        check_name(repo)
        check_digest(digest)
        with self._lock:
            size = self._store.blob_size(digest)
            if size is None or not self._store.repo_has_blob(repo, digest):
                raise BlobUnknown(f"unknown blob {digest} in repository {repo!r}")
            return size

    def open_blob(self, repo: str, digest: str) -> tuple[int, Path | IO[bytes]]:
        """The size of blob ``digest`` and its file (on disk) or a stream of it (in memory).

        Raises: as :meth:`stat_blob`.
        """
        size = self.stat_blob(repo, digest)
        with self._lock:
            path = self._store.blob_file(digest)
            return size, (path if path is not None else self._store.blob_open(digest))

    def delete_blob(self, repo: str, digest: str) -> None:
        """Unlink blob ``digest`` from ``repo`` (the bytes go at the next :meth:`gc`).

        Raises: as :meth:`stat_blob`.
        """
        self.stat_blob(repo, digest)
        with self._mutating() as st:
            st.repo_blob_unlink(repo, digest)
            st.repo_tidy(repo)

    def mount_blob(self, repo: str, digest: str, source: str | None) -> bool:
        """Link blob ``digest`` of repository ``source`` into ``repo``; False if ``source``
        lacks it (or is None: no mount without a source repository, as distribution)."""
        check_name(repo)
        check_digest(digest)
        if source is None:
            return False
        check_name(source)
        with self._mutating() as st:
            if st.blob_size(digest) is None or not st.repo_has_blob(source, digest):
                return False
            st.repo_blob_link(repo, digest)
            return True

    def start_upload(self, repo: str) -> Upload:
        """A new upload session into ``repo``."""
        check_name(repo)
        uid = secrets.token_hex(16)
        with self._lock:
            now = time.monotonic()
            for old in [u for u in self._uploads.values() if not u.busy and now - u.touched > UPLOAD_IDLE]:
                old.cancel()
            up = Upload(self, repo, uid, self._store.upload_dir / f"upload-{uid}")
            self._uploads[uid] = up
            return up

    def get_upload(self, repo: str, uid: str) -> Upload:
        """The open upload session ``uid`` of ``repo``.

        Raises:
            UploadUnknown: no such session (finished, cancelled, or from before a restart).
        """
        check_name(repo)
        with self._lock:
            up = self._uploads.get(uid)
        if up is None or up.repo != repo:
            raise UploadUnknown(f"unknown upload {uid!r} in repository {repo!r}")
        return up

    def _commit_upload(self, up: Upload, digest: str) -> None:
        with self._mutating() as st:
            self._uploads.pop(up.id, None)
            had = st.blob_size(digest) is not None
            st.blob_commit(up.path, digest, up.offset)
            if not had:
                st.recent_mark(digest)
            st.repo_blob_link(up.repo, digest)

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """The manifest ``reference`` (a tag or a digest) names in ``repo``: ``(bytes, media type, digest)``.

        Raises:
            NameInvalid, DigestInvalid: a malformed name, digest or tag.
            RepositoryUnknown, ManifestUnknown: not there.
        """
        check_name(repo)
        check_reference(reference)
        with self._lock:
            digest = self._lookup(repo, reference)
            data = self._store.manifest_bytes(digest)
            mt = self._store.repo_manifests(repo).get(digest)
            if data is None or mt is None:
                raise ManifestUnknown(f"unknown manifest {digest} in repository {repo!r}")
            return data, mt, digest

    def put_manifest(self, repo: str, reference: str, data: bytes, content_type: str | None) -> tuple[str, str | None]:
        """Store a manifest byte-exact in ``repo`` under ``reference`` (a tag, set to it, or
        its digest); return ``(digest, subject digest or None)``.

        The blobs it names (config, layers) must have been pushed into ``repo``, the
        manifests an index names too; a ``subject`` need not exist (spec: referrers may be
        pushed before their subject).

        Raises:
            NameInvalid, DigestInvalid: a malformed name or tag, or a digest reference that
                is not the digest of ``data``.
            ManifestInvalid: bad JSON or shape, or too big (:class:`ManifestTooBig`).
            ManifestBlobUnknown: a blob or child manifest ``repo`` does not have.
        """
        check_name(repo)
        check_reference(reference)
        digest = sha256(data)
        if is_digest(reference) and reference != digest:
            raise DigestInvalid(f"manifest content hashes to {digest}, not {reference}")
        p = parse_manifest(data, content_type)
        with self._mutating() as st:
            for b in p.blobs:
                size = st.blob_size(b)
                if size is None or not st.repo_has_blob(repo, b):
                    raise ManifestBlobUnknown(f"the manifest names blob {b}, which repository {repo!r} "
                                              f"does not have", b)
                if size != p.sizes[b]:
                    raise ManifestInvalid(f"the manifest says blob {b} has {p.sizes[b]} bytes; it has {size}")
            held = st.repo_manifests(repo)
            for c in p.children:
                if c not in held:
                    raise ManifestBlobUnknown(f"the index names manifest {c}, which repository {repo!r} "
                                              f"does not have", c)
                child = st.manifest_bytes(c)
                if child is not None and len(child) != p.sizes[c]:
                    raise ManifestInvalid(f"the index says manifest {c} has {p.sizes[c]} bytes; it has {len(child)}")
            st.manifest_put(digest, data)
            st.repo_manifest_add(repo, digest, p.media_type)
            for b in p.blobs:
                st.recent_clear(b)
            if p.subject is not None:
                st.repo_referrer_add(repo, p.subject, referrer_descriptor(digest, len(data), p))
            if not is_digest(reference):
                st.repo_tag_set(repo, reference, digest)
        return digest, p.subject

    def delete_manifest(self, repo: str, reference: str) -> None:
        """Delete a tag (the manifest stays) or a manifest by digest (with the tags of
        ``repo`` pointing at it); a repository left with nothing goes away.

        Raises:
            NameInvalid, DigestInvalid: a malformed name, digest or tag.
            RepositoryUnknown, ManifestUnknown: not there.
        """
        check_reference(reference)
        with self._mutating() as st:
            if not is_digest(reference):
                self._repo_exists(repo)
                if st.repo_tag_get(repo, reference) is None:
                    tags = sorted(st.repo_tags(repo))
                    raise ManifestUnknown(f"unknown tag {reference!r} in repository {repo!r} "
                                          f"(tags: {', '.join(tags) or 'none'})")
                st.repo_tag_remove(repo, reference)
            else:
                digest = self._lookup(repo, reference)
                mt = st.repo_manifests(repo).get(digest)
                data = st.manifest_bytes(digest)
                st.repo_manifest_remove(repo, digest)
                for t, d in st.repo_tags(repo).items():
                    if d == digest:
                        st.repo_tag_remove(repo, t)
                if data is not None:
                    with contextlib.suppress(ManifestInvalid):
                        p = parse_manifest(data, mt)
                        if p.subject is not None:
                            st.repo_referrer_remove(repo, p.subject, digest)
                if isinstance(st, _MemoryStore) and not any(digest in r.manifests for r in st.repos.values()):
                    st.manifest_delete(digest)  # in memory nothing else can hold it: free it now
                    self._images.pop(digest, None)
            st.repo_tidy(repo)

    def list_tags(self, repo: str) -> list[str]:
        """The tags of the repository ``repo`` (a raw name), in lexical order.

        Raises:
            RepositoryUnknown: no such repository.
        """
        with self._lock:
            self._repo_exists(repo)
            return sorted(self._store.repo_tags(repo))

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """The descriptors of the manifests in ``repo`` whose ``subject`` is ``digest``
        (only those of ``artifact_type`` if given), ordered by digest."""
        check_name(repo)
        check_digest(digest)
        with self._lock:
            refs = self._store.repo_referrers(repo, digest)
        if artifact_type is not None:
            refs = [d for d in refs if d.get("artifactType") == artifact_type]
        return sorted(refs, key=lambda d: str(d["digest"]))

    def serve(self, address: tuple[str, int] = ("127.0.0.1", 0), **options: Any) -> Server:
        """Serve this registry over the OCI distribution API in a background thread.

        Use as a context manager: ``with reg.serve(("127.0.0.1", 0)) as server:``
        (``server.url``, ``server.port``). Options as :class:`unionfs_sim.serve.Server`
        (``htpasswd=``, ``tls_cert=``/``tls_key=``, ``insecure_public=``). Needs the
        ``serve`` extra (aiohttp).
        """
        from .serve import Server  # the HTTP layer sits above the model: imported on use

        return Server(self, address, **options)

    def _repr_html_(self) -> str:
        """Repositories with their tags and manifests, and the blob store's size, for notebooks."""
        from ._html import human, section, short, table

        with self._lock:
            st = self._store
            rows: list[list[object]] = []
            names = sorted(st.repo_names())
            for name in names:
                by_digest: dict[str, list[str]] = {}
                for t, d in st.repo_tags(name).items():
                    by_digest.setdefault(d, []).append(t)
                for d in sorted(st.repo_manifests(name)):
                    raw = st.manifest_bytes(d)
                    layers = json.loads(raw).get("layers") if raw is not None else None
                    rows.append([name, ", ".join(sorted(by_digest.get(d, []))), short(d),
                                 len(layers) if isinstance(layers, list) else "-"])
            blobs = st.blob_sizes()
        return section(f"Registry: {len(names)} repositories, {len(blobs)} blobs, {human(sum(blobs.values()))}",
                       table(["repository", "tags", "manifest", "layers"], rows, right=(3,), limit=200))




def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(_CHUNK):
            h.update(b)
    return "sha256:" + h.hexdigest()


__all__ += ["check_digest", "check_name", "is_digest", "parse_manifest", "sha256_file"]
