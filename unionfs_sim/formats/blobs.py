"""Blobs shared by the image formats: digests, verified streams, blob files, rewritten manifests.

OCI layouts (:mod:`.oci`), docker archives (:mod:`.docker_archive`, whose current format
is an OCI layout in a tar) and the registry's store all address content by digest and
must never accept a blob that does not hash to it; these are the pieces they share.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import DigestMismatch, FormatError
from ..image import Image, sha256
from ..layer import Layer
from ..mediatypes import CONFIG_MEDIA_TYPES, LAYER_MEDIA_TYPE_BY_COMPRESSION, MT_CONFIG, MT_LAYER, MT_MANIFEST
from ..nodes import Dir
from ..paths import parents

MAX_JSON_SIZE = 16 << 20
"""Refuse JSON documents (index, manifest, config) larger than this many bytes."""


DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


_CHUNK = 1 << 20


def check_digest(digest: object, where: str) -> str:
    """The hex part of ``digest`` if it is ``sha256:<64 lowercase hex>``, else FormatError.

    Blob file names are made from digests only after this check, so a crafted digest
    (``sha256:../../x``) can never name a file outside the blob directory.
    """
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise FormatError(f"{where}: unsupported or malformed digest {digest!r} (expected sha256:<64 lowercase hex>)")
    return digest[7:]


class HashingReader:
    """A read-only stream over ``raw`` that hashes and counts what passes through.

    With ``size`` given, reading past it raises :class:`DigestMismatch` at once (a blob
    longer than its descriptor is never consumed whole). :meth:`verify` drains what is
    left and checks size and digest: a verifier that stops early would accept a blob
    with trailing garbage.
    """

    def __init__(self, raw: IO[bytes], name: str, digest: str | None = None, size: int | None = None) -> None:
        self.raw = raw
        self.name = name
        self.digest = digest
        self.size = size
        self.hash = hashlib.sha256()
        self.count = 0
        self.head = b""
        """The first bytes read (up to 4): enough to tell gzip and zstd from a tar."""

    def readable(self) -> bool:
        """Always True: this is a reader."""
        return True

    def seekable(self) -> bool:
        """Always False: the stream is read once, front to back."""
        return False

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all that is left if ``n`` < 0)."""
        if n is None or n < 0:
            parts: list[bytes] = []
            while True:
                b = self.read(_CHUNK)
                if not b:
                    return b"".join(parts)
                parts.append(b)
        b = self.raw.read(n)
        if b:
            self.hash.update(b)
            self.count += len(b)
            if len(self.head) < 4:
                self.head = (self.head + b)[:4]
            if self.size is not None and self.count > self.size:
                what = f"blob {self.digest}" if self.digest else "blob"
                raise DigestMismatch(f"{self.name}: {what} is longer than the {self.size} bytes its descriptor says")
        return b

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Read into ``buf``; the number of bytes read."""
        b = self.read(len(buf))
        buf[: len(b)] = b
        return len(b)

    def close(self) -> None:
        """Nothing to do: the caller owns ``raw``."""

    def hexdigest(self) -> str:
        """``sha256:<hex>`` of what was read so far."""
        return "sha256:" + self.hash.hexdigest()

    def verify(self) -> None:
        """Drain the rest of the stream, then check size and digest.

        Raises:
            DigestMismatch: naming the blob's digest and :attr:`name`.
        """
        while self.read(_CHUNK):
            pass
        if self.size is not None and self.count != self.size:
            raise DigestMismatch(f"{self.name}: blob {self.digest} is {self.count} bytes,"
                                 f" its descriptor says {self.size}")
        if self.digest is not None and self.hexdigest() != self.digest:
            raise DigestMismatch(f"{self.name}: content does not match digest {self.digest}"
                                 f" (it hashes to {self.hexdigest()})")


class HashingWriter:
    """A write-only stream that hashes and counts what is written, passing it on to ``raw``."""

    def __init__(self, raw: IO[bytes] | None) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        """Always True: this is a writer."""
        return True

    def write(self, b: bytes) -> int:
        """Hash, count and pass on ``b``."""
        b = bytes(b)
        self.hash.update(b)
        self.count += len(b)
        if self.raw is not None:
            self.raw.write(b)
        return len(b)

    def flush(self) -> None:
        """Flush ``raw``."""
        if self.raw is not None:
            self.raw.flush()

    def hexdigest(self) -> str:
        """``sha256:<hex>`` of what was written."""
        return "sha256:" + self.hash.hexdigest()


def descriptor(doc: object, where: str) -> dict[str, Any]:
    """Check that ``doc`` is a descriptor (``mediaType``, valid ``digest``, ``size`` >= 0)."""
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: a descriptor must be a JSON object, got {doc!r}")
    check_digest(doc.get("digest"), where)
    size = doc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FormatError(f"{where}: descriptor {doc.get('digest')} has a bad size {size!r}")
    mt = doc.get("mediaType")
    if mt is not None and not isinstance(mt, str):
        raise FormatError(f"{where}: descriptor {doc.get('digest')} has a bad mediaType {mt!r}")
    return doc


def compression_of(media_type: str) -> str | None:
    """The compression a layer media type says: ``None``, ``"gzip"`` or ``"zstd"``."""
    if media_type.endswith(("+gzip", ".gzip")):
        return "gzip"
    if media_type.endswith(("+zstd", ".zstd")):
        return "zstd"
    return None


def sniff_compression(head: bytes) -> str | None:
    """The compression of a blob from its first bytes: ``"gzip"``, ``"zstd"`` or None."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


def lower_dirs(layers: Sequence[Layer]) -> Callable[[str], Dir | None]:
    """For ``Layer.from_tar(lower_dirs_meta=...)``: the directory a key names in the merged
    view of ``layers`` (bottom first), or None. An opaque marker whose directory has no
    entry of its own then keeps the lower directory's metadata, as containerd does."""

    def meta(k: str) -> Dir | None:
        for layer in reversed(layers):
            hidden_below = False
            for a in parents(k):
                n = layer.get(a)
                if n is None:
                    continue
                if not isinstance(n, Dir):
                    return None  # a whiteout or a non-directory over an ancestor
                if n.opaque:
                    hidden_below = True
            n = layer.get(k)
            if n is not None:
                return n if isinstance(n, Dir) else None
            if hidden_below:
                return None
        return None

    return meta


def read_layer(stream: IO[bytes], name: str, diff_id: str, digest: str | None = None,
               size: int | None = None, below: Sequence[Layer] = ()) -> tuple[Layer, dict[str, Any]]:
    """Read a layer blob from ``stream``, verifying its blob digest/size and its diff_id.

    ``name`` (a file or archive member) appears in every error. The blob may be
    uncompressed, gzip or zstd (``Layer.from_tar`` detects which). Returns the layer
    and an OCI descriptor of the blob as read (media type from its compression).
    ``below`` are the layers under this one (for opaque directories without an entry).

    Raises:
        DigestMismatch: the blob's size or digest differs from ``size``/``digest``, or
            its uncompressed content does not hash to ``diff_id``.
        FormatError: the blob is not a valid (compressed) tar layer.
    """
    reader = HashingReader(stream, name, digest, size)
    try:
        layer = Layer.from_tar(reader, expected_diff_id=diff_id, name=name,  # type: ignore[arg-type]
                               lower_dirs_meta=lower_dirs(list(below)) if below else None)
    except DigestMismatch:
        # A corrupt blob often fails as a content mismatch; name the blob if that is it.
        _verify_quietly(reader)
        raise
    except FormatError as e:
        _verify_quietly(reader, e)
        raise
    reader.verify()
    blob = {"mediaType": LAYER_MEDIA_TYPE_BY_COMPRESSION[sniff_compression(reader.head)],
            "digest": reader.hexdigest(), "size": reader.count}
    return layer, blob


def _verify_quietly(reader: HashingReader, cause: BaseException | None = None) -> None:
    """If the blob itself is corrupt, raise that (it explains the parse error); else return."""
    if reader.digest is None and reader.size is None:
        return
    try:
        reader.verify()
    except DigestMismatch as mismatch:
        raise mismatch from cause
    except Exception:  # noqa: BLE001 - the original error is the better report
        return


def export_parts(image: Image, descriptors: Sequence[Mapping[str, Any]],
                 diff_ids: Sequence[str]) -> tuple[bytes, bytes]:
    """The config and manifest bytes to write for ``image`` with these layer blobs.

    When the blobs are the ones the image records (same descriptors, same diff_ids) the
    image's own bytes are returned verbatim, so ``image.id``/``image.digest`` are kept.
    Otherwise (other compression, or a layer whose canonical tar differs from the tar it
    was read from) the config gets the new ``rootfs.diff_ids`` (every other field kept) and
    a new OCI manifest is made (top-level annotations kept).
    """
    config = image.config_bytes
    if list(diff_ids) != image.diff_ids:
        doc = json.loads(config)
        doc["rootfs"] = {**doc.get("rootfs", {}), "type": "layers", "diff_ids": list(diff_ids)}
        config = json.dumps(doc, separators=(",", ":")).encode()
    if config == image.config_bytes and [dict(d) for d in descriptors] == image.layer_descriptors:
        return config, image.manifest_bytes
    old = image.manifest_json()
    cfg_desc = old.get("config")
    cfg_type = cfg_desc.get("mediaType", MT_CONFIG) if isinstance(cfg_desc, dict) else MT_CONFIG
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG if cfg_type in CONFIG_MEDIA_TYPES else cfg_type,
                   "digest": sha256(config), "size": len(config)},
        "layers": [dict(d) for d in descriptors],
    }
    if isinstance(old.get("annotations"), dict):
        manifest["annotations"] = old["annotations"]
    return config, json.dumps(manifest, separators=(",", ":")).encode()


def uncompressed_descriptor(layer: Layer) -> dict[str, Any]:
    """The descriptor of ``layer``'s canonical uncompressed tar."""
    return {"mediaType": MT_LAYER, "digest": layer.digest, "size": layer.tar_size}


def have_blob(blobs: Path, digest: str, size: int) -> bool:
    """True if ``blobs`` already has a regular file for ``digest`` of ``size`` bytes."""
    p = blobs / check_digest(digest, str(blobs))
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return False
    import stat as _stat

    return _stat.S_ISREG(st.st_mode) and st.st_size == size


def write_blob(blobs: Path, produce: Callable[[IO[bytes]], None]) -> tuple[str, int]:
    """Stream a blob into ``blobs``: write it to a temporary file while hashing, then rename
    it to its digest. Returns ``(digest, size)``."""
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            w = HashingWriter(f)
            produce(w)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        digest = w.hexdigest()
        os.chmod(tmp, 0o644)
        if have_blob(blobs, digest, w.count):
            os.unlink(tmp)
        else:
            os.replace(tmp, blobs / digest[7:])
        return digest, w.count
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def put_bytes(blobs: Path, data: bytes) -> str:
    """Store ``data`` as a blob (unless it is there already); return its digest."""
    digest = sha256(data)
    if not have_blob(blobs, digest, len(data)):
        def produce(f: IO[bytes]) -> None:
            f.write(data)

        write_blob(blobs, produce)
    return digest


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A file to write that replaces ``path`` (mode 0644) only if the block ends without
    error: a temporary file in the same directory, renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
