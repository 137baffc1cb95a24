"""Layer entries to and from OCI tar changesets (``.wh.`` whiteouts, ``.wh..wh..opq``).

This module sits just above :mod:`unionfs_sim.nodes`: it converts between a mapping of
keys to entries and a tar stream, so that ``Layer`` can use it for its digest.

Writing (:func:`write`, :func:`write_blob`) produces the *canonical* tar of a layer:
same entries, same bytes, optionally gzip- or zstd-compressed reproducibly.

Reading (:func:`read`, :func:`read_blob`) accepts the tars real tools write (docker,
containerd, buildah, umoci, go-containerregistry, GNU tar, libarchive), streaming:
compression is detected from the first bytes (gzip, zstd, and also bzip2 and xz as
docker's ``DecompressStream`` does), file data is read entry by entry. Every problem
with the input raises :class:`~unionfs_sim.errors.FormatError` (or its subclasses
:class:`~unionfs_sim.errors.UnsafePath`, :class:`~unionfs_sim.errors.DigestMismatch`)
naming the layer and the entry; nothing from ``tarfile``, ``gzip``, ``zlib`` or
``zstandard`` leaks out.

How a changeset becomes entries (OCI image-spec ``layer.md``; deviations noted):

- ``DIR/.wh.NAME`` (any tar type, any mode, any content: real tools write mode 0000
  files, or hard links to one shared whiteout file) is :data:`WHITEOUT` at
  ``DIR/NAME``; a bare ``.wh.`` is an error, ``.wh..`` / ``.wh...`` are unsafe.
- ``DIR/.wh..wh..opq`` (any type) makes ``DIR`` an opaque :class:`Dir`. When the tar
  has no entry for ``DIR`` itself, the directory gets the metadata of the lower
  directory if the caller passes ``lower_dirs_meta`` (what containerd does: its
  ``mkparent`` copies mode, owner, times and xattrs from the parent snapshot; umoci and
  go-containerregistry also keep the lower directory's metadata), else ``Dir()``
  defaults (0o755, root, mtime 0: containerd's fallback, and moby's graphdriver).
- Whiteouts only apply to lower layers, so a whiteout and an entry for the same path
  in one layer mean "delete below, then create": a directory entry becomes an opaque
  :class:`Dir`, any other entry stands as it is. Entries *below* a whited-out path
  (``.wh.a`` + ``a/b``) recreate ``a`` as an opaque ``Dir()`` (defaults: the lower
  ``a`` is gone, so is its metadata).
- AUFS bookkeeping (a path component ``.wh..wh.plnk``, ``.wh..wh.orph``,
  ``.wh..wh.aufs`` or any other ``.wh..wh.*`` but the opaque marker) is dropped with
  everything below it; hard links into ``.wh..wh.plnk`` still resolve to its files, as
  docker and containerd do.
- Paths: ``./`` prefixes, a leading ``/`` and repeated slashes are normalised; ``..``
  components and NUL bytes raise :class:`UnsafePath`; two entries for one path (after
  normalisation; the spec says MUST NOT) raise :class:`FormatError`; so does an entry
  below a non-directory of the same tar, and an entry below a symlink of the same tar
  raises :class:`UnsafePath` (extracting it would write through the link).
- Hard links (type ``1``) name an *earlier* non-directory entry of the same tar
  (go-containerregistry materialises links to other layers; a layer here cannot refer
  to another, so that is an error) and share its object (identity, see :mod:`nodes`).
- Modes keep permission bits only (some tools write the S_IF* type bits too), and a
  symlink's mode is 0o777 whatever the header says (Linux has no lchmod: that is what
  every extractor produces); uid/gid
  come from the header (uname/gname are ignored); ``mtime`` from the PAX record with
  its sub-second digits, exactly; xattrs from ``SCHILY.xattr.*`` (and libarchive's
  ``LIBARCHIVE.xattr.*``, URL-encoded name, base64 value) as bytes. An xattr name with
  ``=`` (which no PAX keyword can hold) is refused, so that every layer read can be
  written back canonically; so are device numbers beyond what a tar header holds.
- Regular (``0``, ``\\0``) and contiguous (``7``) files are :class:`File`; GNU sparse
  files (SHOULD NOT, says OCI) and other types (volume labels, multi-volume parts, ...)
  are errors.
- An empty stream (0 bytes), or a tar that ends without its zero-block trailer, is
  accepted (Go's ``archive/tar`` does the same); a tar cut inside a header or inside
  a file's data is an error. A header that fails its checksum in the middle of the
  archive is an error (``tarfile`` alone would silently stop there).
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import hashlib
import io
import lzma
import re
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import IO, Any, Literal, Protocol

import attrs

from ..errors import DigestMismatch, FormatError, UnsafePath
from ..nodes import WHITEOUT, Device, Dir, DiskBytes, Entry, Fifo, File, Socket, Symlink, Whiteout
from ..paths import components, join, parents, split

WHITEOUT_PREFIX = ".wh."
"""OCI: a file named ``.wh.NAME`` deletes NAME from the layers below."""
OPAQUE_MARKER = ".wh..wh..opq"
"""OCI: this file in a directory hides everything below that directory in lower layers.
It must be matched before the generic prefix, since it starts with it too."""
AUFS_META_PREFIX = ".wh..wh."
"""AUFS bookkeeping names (``.wh..wh.plnk``, ``.wh..wh.orph``, ``.wh..wh.aufs``): not content."""
AUFS_LINK_DIR = ".wh..wh.plnk"
"""AUFS keeps hard-link targets here; links into it resolve, the directory itself is dropped."""

COMPRESSIONS = (None, "gzip", "zstd")
"""What :func:`write` can produce (OCI media types ``tar``, ``tar+gzip``, ``tar+zstd``)."""
GZIP_LEVEL = 6
"""Fixed gzip level (zlib's default, Go's ``gzip.DefaultCompression``), for reproducible blobs."""
ZSTD_LEVEL = 3
"""Fixed zstd level (zstd's default), for reproducible blobs."""
ZSTD_MISSING = "zstd needs the 'zstandard' package: pip install unionfs_sim[zstd]"

_DEV_MAX = 0o7777777
"""Largest device major/minor a ustar header holds (Linux needs 12/20 bits: always fits)."""
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"
_CHUNK = 1 << 16


class _Writable(Protocol):
    def write(self, b: bytes, /) -> Any: ...


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


# --- writing -------------------------------------------------------------------------


def _xattr_value(v: bytes) -> str:
    # tarfile writes PAX values as UTF-8; surrogateescape lets it carry any bytes
    # (it then marks the header hdrcharset=BINARY).
    return v.decode("utf-8", "surrogateescape")


def _bad_xattr_name(k: str) -> bool:
    """True if no PAX keyword can hold ``SCHILY.xattr.`` + ``k`` (UTF-8, no '=', no NUL)."""
    if not k or "=" in k or "\x00" in k:
        return True
    try:
        k.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _pax_time(mtime_ns: int) -> str:
    """``mtime_ns`` as a PAX decimal, exactly (sign and magnitude: -1.5 is -1.5 s)."""
    sign = "-" if mtime_ns < 0 else ""
    sec, ns = divmod(abs(mtime_ns), 1_000_000_000)
    return f"{sign}{sec}.{ns:09d}".rstrip("0")


def _info(name: str, node: Entry) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.uname = ti.gname = ""
    if isinstance(node, Whiteout):
        ti.type = tarfile.REGTYPE
        ti.mode = 0o644
        return ti
    ti.mode = node.mode
    ti.uid, ti.gid = node.uid, node.gid
    sec, ns = divmod(node.mtime_ns, 1_000_000_000)
    ti.mtime = sec
    pax: dict[str, str] = {}
    if ns:
        pax["mtime"] = _pax_time(node.mtime_ns)
    for k, v in node.xattrs.items():
        if _bad_xattr_name(k):
            raise ValueError(f"/{name}: xattr name {k!r} cannot be stored in a tar"
                             " (a PAX keyword is UTF-8 without '=' or NUL)")
        pax["SCHILY.xattr." + k] = _xattr_value(v)
    ti.pax_headers = pax
    if isinstance(node, File):
        ti.type = tarfile.REGTYPE
        ti.size = len(node.data)
    elif isinstance(node, Dir):
        ti.type = tarfile.DIRTYPE
    elif isinstance(node, Symlink):
        ti.type = tarfile.SYMTYPE
        ti.linkname = node.target
    elif isinstance(node, Fifo):
        ti.type = tarfile.FIFOTYPE
    elif isinstance(node, Device):
        ti.type = tarfile.CHRTYPE if node.dev == "c" else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = node.major, node.minor
    elif isinstance(node, Socket):
        raise ValueError(f"{name}: a socket cannot be stored in a tar layer")
    return ti


def canonical_order(keys: Iterable[str]) -> list[str]:
    """Sort keys so that every directory comes before its contents, reproducibly."""
    return sorted(keys, key=lambda k: k.split("/"))


def tar_names(entries: Mapping[str, Entry]) -> list[tuple[str, Entry]]:
    """The (tar name, entry) pairs of ``entries`` in canonical order.

    Whiteouts become ``.wh.NAME`` and an opaque directory adds ``.wh..wh..opq`` inside
    itself; sorting by name puts whiteouts before their siblings, as OCI recommends.

    Raises:
        ValueError: a key with a component starting with ``.wh.``: it would read back
            as a whiteout (OCI reserves the prefix), and two different layers would
            share one tar and one digest.
    """
    items: list[tuple[str, Entry]] = []
    for k, node in entries.items():
        if WHITEOUT_PREFIX in k and any(p.startswith(WHITEOUT_PREFIX) for p in k.split("/")):
            raise ValueError(f"/{k}: a name starting with {WHITEOUT_PREFIX!r} cannot be stored in an OCI layer"
                             " (it reads back as a whiteout)")
        if isinstance(node, Whiteout):
            parent, name = split(k)
            items.append((join(parent, WHITEOUT_PREFIX + name), node))
            continue
        items.append((k, node))
        if isinstance(node, Dir) and node.opaque:
            items.append((join(k, OPAQUE_MARKER), WHITEOUT))
    items.sort(key=lambda it: it[0].split("/"))
    return items


def _write_tar(entries: Mapping[str, Entry], fileobj: _Writable) -> None:
    first_name: dict[int, str] = {}
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      encoding=_ENCODING, errors=_ERRORS) as tf:
        for name, node in tar_names(entries):
            ti = _info((name or ".") + ("/" if isinstance(node, Dir) else ""), node)
            if isinstance(node, File):
                seen = first_name.get(id(node))
                if seen is not None:
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = seen
                    ti.size = 0
                    tf.addfile(ti)
                    continue
                first_name[id(node)] = name
                data = node.data
                tf.addfile(ti, data.reader() if isinstance(data, DiskBytes) else io.BytesIO(data))
            else:
                tf.addfile(ti)


def _zstandard() -> Any:
    """The ``zstandard`` module, imported on first use (it is an optional dependency)."""
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(ZSTD_MISSING, name="zstandard") from e
    return zstandard


class _Compressor:
    """A write-only stream compressing into ``out``; :meth:`close` finishes the stream
    (writes the gzip trailer / ends the zstd frame) but never closes ``out``."""

    def __init__(self, out: _Writable, compression: str | None) -> None:
        self._plain: _Writable | None = None
        self._gz: gzip.GzipFile | None = None
        self._zw: Any = None
        if compression is None:
            self._plain = out
        elif compression == "gzip":
            # mtime=0 and no file name: the same bytes in, the same blob out.
            self._gz = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=GZIP_LEVEL, mtime=0,  # type: ignore[call-overload]
                                     filename="")
        elif compression == "zstd":
            zstd = _zstandard()
            cctx = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, threads=0)
            self._zw = cctx.stream_writer(out, closefd=False)
        else:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")

    def write(self, b: bytes) -> int:
        if self._plain is not None:
            self._plain.write(b)
        elif self._gz is not None:
            self._gz.write(b)
        else:
            self._zw.write(b)
        return len(b)

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        elif self._zw is not None:
            self._zw.close()


class _HashingWriter:
    """Passes writes on to ``out`` while hashing (sha256) and counting them."""

    def __init__(self, out: _Writable) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.size += len(b)
        self.out.write(b)
        return len(b)

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def write(entries: Mapping[str, Entry], fileobj: IO[bytes] | _Writable, compression: str | None = None) -> None:
    """Write ``entries`` as a canonical, reproducible PAX tar to ``fileobj``.

    Same entries, same bytes: names sorted, times from the nodes, no user/group names.
    The first name of a hard-link group (in that order) carries the data; later names
    are tar hard links to it. ``compression`` is None, ``"gzip"`` (level 6, mtime 0, no
    file name) or ``"zstd"`` (level 3, with checksum; needs the ``zstandard`` package).
    """
    if compression is None:
        _write_tar(entries, fileobj)
        return
    comp = _Compressor(fileobj, compression)
    _write_tar(entries, comp)
    comp.close()


def write_blob(entries: Mapping[str, Entry], fileobj: IO[bytes] | _Writable,
               compression: str | None = None) -> tuple[str, str, int]:
    """Write like :func:`write` and return ``(diff_id, blob_digest, blob_size)`` from the
    same single pass: the digest of the uncompressed tar (the OCI diff_id), and the
    digest and size of the bytes written to ``fileobj`` (the manifest's descriptor)."""
    out = _HashingWriter(fileobj)
    if compression is None:
        _write_tar(entries, out)
        return out.digest, out.digest, out.size
    comp = _Compressor(out, compression)
    tar = _HashingWriter(comp)
    _write_tar(entries, tar)
    comp.close()
    return tar.digest, out.digest, out.size


def to_bytes(entries: Mapping[str, Entry], compression: str | None = None) -> bytes:
    """The canonical tar of ``entries`` as bytes (optionally compressed)."""
    buf = io.BytesIO()
    write(entries, buf, compression)
    return buf.getvalue()


# --- reading: streams ---------------------------------------------------------------


class _SourceError(Exception):
    """An OSError of the caller's file object: re-raised as it is, not as a FormatError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Source:
    """The raw blob: lets the first bytes be peeked at, hashes and counts what is read."""

    def __init__(self, raw: _Readable) -> None:
        self._raw = raw
        self._head = b""
        self.h = hashlib.sha256()
        self.size = 0

    def _raw_read(self, n: int) -> bytes:
        try:
            b = self._raw.read(n)
        except OSError as e:
            raise _SourceError(e) from e
        return b or b""

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            b = self._raw_read(n - len(self._head))
            if not b:
                break
            self._head += b
        return self._head[:n]

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            b = self._head + b"".join(iter(lambda: self._raw_read(_CHUNK), b""))
            self._head = b""
        elif self._head:
            b, self._head = self._head[:n], self._head[n:]
        else:
            b = self._raw_read(n)
        self.h.update(b)
        self.size += len(b)
        return b

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class _ZstdReader:
    """Streaming zstd decompression that, unlike ``stream_reader``, notices a stream cut
    inside a frame (it raises EOFError), and reads any number of concatenated frames."""

    def __init__(self, src: _Source) -> None:
        self._src = src
        self._dctx = _zstandard().ZstdDecompressor()
        self._obj: Any = None
        self._buf = bytearray()
        self._eof = False

    def _feed(self, chunk: bytes) -> None:
        while chunk:
            if self._obj is None:
                self._obj = self._dctx.decompressobj()
            self._buf += self._obj.decompress(chunk)
            if self._obj.eof:
                chunk = self._obj.unused_data
                self._obj = None
            else:
                chunk = b""

    def read(self, n: int | None = -1) -> bytes:
        while not self._eof and (n is None or n < 0 or len(self._buf) < n):
            chunk = self._src.read(_CHUNK)
            if not chunk:
                self._eof = True
                if self._obj is not None:
                    raise EOFError("the stream ends in the middle of a zstd frame")
                break
            self._feed(chunk)
        if n is None or n < 0 or n >= len(self._buf):
            out = bytes(self._buf)
            self._buf.clear()
        else:
            out = bytes(self._buf[:n])
            del self._buf[:n]
        return out


class _HashingReader:
    """Reads through ``inner``, hashing (sha256) and counting the bytes: the tar's diff_id."""

    def __init__(self, inner: _Readable) -> None:
        self._inner = inner
        self.h = hashlib.sha256()
        self.size = 0

    def read(self, n: int | None = -1) -> bytes:
        b = self._inner.read(-1 if n is None else n)
        self.h.update(b)
        self.size += len(b)
        return b

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _decompressed(src: _Source) -> tuple[str, _Readable]:
    """Detect the compression from the first bytes: ``(kind, uncompressed stream)``."""
    head = src.peek(10)
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip", gzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[call-overload]
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd", _ZstdReader(src)
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz", lzma.LZMAFile(src)  # type: ignore[arg-type]
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] == b"1AY&SY":
        return "bzip2", bz2.BZ2File(src)  # type: ignore[call-overload]
    return "tar", src


def uncompressed(fileobj: IO[bytes] | _Readable) -> tuple[str, _Readable]:
    """``(compression, reader of the uncompressed tar)`` for a layer blob of any compression."""
    return _decompressed(_Source(fileobj))


class _Corrupt(Exception):
    """A bad header in the middle of the archive (``tarfile`` would just stop there)."""


class _StrictTarInfo(tarfile.TarInfo):
    """TarInfo that tells a clean end from corruption: a zero block or the end of the
    stream at a header boundary ends the archive; a truncated or invalid header does not."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> _StrictTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EmptyHeaderError:  # type: ignore[attr-defined]
            # The stream ended at a block boundary without the zero-block trailer.
            raise tarfile.EOFHeaderError("end of stream") from None  # type: ignore[attr-defined]
        except tarfile.TruncatedHeaderError as e:  # type: ignore[attr-defined]
            raise _Corrupt(f"cut inside a header at byte {tarfile_.offset} ({e})") from None
        except tarfile.InvalidHeaderError as e:  # type: ignore[attr-defined]
            raise _Corrupt(f"invalid header at byte {tarfile_.offset} ({e})") from None


def _stream_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        tarfile.TarError, _Corrupt, EOFError, OSError, zlib.error, lzma.LZMAError,
        ValueError, UnicodeError, IndexError, KeyError, OverflowError,
    ]
    try:
        import zstandard
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    else:
        errors.append(zstandard.ZstdError)
    return tuple(errors)


def _describe(e: BaseException, kind: str) -> str:
    """Say what went wrong with the stream, in the reader's terms."""
    msg = str(e) or type(e).__name__
    if kind != "tar" and isinstance(e, tarfile.ReadError) and msg.startswith("zlib error"):
        return f"corrupt {kind} stream ({msg})"  # tarfile wraps zlib.error raised while reading through
    if isinstance(e, EOFError) or (isinstance(e, tarfile.ReadError) and "unexpected end" in msg):
        what = f"{kind} stream" if kind != "tar" and isinstance(e, EOFError) else "tar archive"
        return f"truncated {what} ({msg})"
    if isinstance(e, _Corrupt):
        return f"corrupt tar archive: {msg}"
    if isinstance(e, tarfile.TarError):
        return f"not a valid tar archive ({msg})"
    if kind != "tar":
        return f"corrupt {kind} stream ({type(e).__name__}: {msg})"
    return f"corrupt tar archive ({type(e).__name__}: {msg})"


class _Stream:
    """The tar members of a (possibly compressed) blob, with errors turned into FormatError."""

    def __init__(self, fileobj: _Readable, name: str) -> None:
        self.name = name
        self._errors = _stream_errors()
        self.src = _Source(fileobj)
        self.kind = "tar"
        with self._guard():
            self.kind, raw = _decompressed(self.src)
            self.tar = _HashingReader(raw)
            # Not a `with`: the archive stays open across members() and data() calls.
            self.tf = tarfile.open(fileobj=self.tar, mode="r|", tarinfo=_StrictTarInfo,  # type: ignore[call-overload]  # noqa: SIM115
                                   encoding=_ENCODING, errors=_ERRORS)

    def _guard(self) -> Any:
        return _Guard(self)

    def members(self) -> Iterator[tarfile.TarInfo]:
        while True:
            with self._guard():
                ti = self.tf.next()
            if ti is None:
                return
            yield ti

    def data(self, ti: tarfile.TarInfo) -> bytes:
        """The member's bytes, built in place: one allocation of its size, filled a
        bounded piece at a time (``f.read()`` joins and slices: 3x a big file at peak)."""
        with self._guard():
            f = self.tf.extractfile(ti)
            if f is None or ti.size == 0:
                return b""
            if ti.size <= _CHUNK:
                data: bytes = f.read(ti.size)
                if len(data) != ti.size:
                    raise tarfile.ReadError("unexpected end of data")
                return data
            return _read_exactly(f, ti.size)

    def finish(self) -> None:
        """Read to the end (trailer, padding, anything after): the digests cover it all."""
        with self._guard():
            self.tar.drain()
            self.src.drain()


def _read_exactly(f: IO[bytes], size: int) -> bytes:
    """``size`` bytes of ``f`` as one bytes object, with no whole-size temporary copy.

    A BytesIO grown once to ``size`` lends its buffer for the reads; once the view is
    released, ``getvalue()`` hands over that very buffer (CPython shares it when the sizes
    match), so the peak is the file's size plus one piece.
    """
    buf = io.BytesIO()
    buf.seek(size - 1)
    buf.write(b"\0")
    with buf.getbuffer() as view:
        off = 0
        while off < size:
            piece = f.read(min(_CHUNK, size - off))
            if not piece:
                raise tarfile.ReadError("unexpected end of data")
            view[off : off + len(piece)] = piece
            off += len(piece)
    return buf.getvalue()


class _Guard:
    """Context manager mapping stream exceptions to FormatError naming the layer."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if e is None or isinstance(e, FormatError):
            return False
        if isinstance(e, _SourceError):
            raise e.error
        if isinstance(e, self.stream._errors):
            raise FormatError(f"{self.stream.name}: {_describe(e, self.stream.kind)}") from e
        return False


# --- reading: entries ----------------------------------------------------------------

_PAX_TIME = re.compile(r"(-?)([0-9]+)(?:\.([0-9]*))?")


def _mtime_ns(ti: tarfile.TarInfo, where: str) -> int:
    """The entry's mtime in ns: exact from a PAX ``mtime`` record, else the header's."""
    pax = ti.pax_headers.get("mtime")
    if pax is None:
        return int(ti.mtime) * 1_000_000_000
    m = _PAX_TIME.fullmatch(pax.strip())
    if m is None or len(m.group(2)) > 30:  # 10**30 s: far beyond any clock, and int() stays cheap
        raise FormatError(f"{where}: bad PAX mtime {pax[:40]!r}")
    sign, sec, frac = m.groups()
    ns = int(sec) * 1_000_000_000 + int((frac or "")[:9].ljust(9, "0"))
    return -ns if sign else ns


def _b64(value: str) -> bytes:
    v = value.strip().replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(v + "=" * (-len(v) % 4), validate=True)


def _xattrs(ti: tarfile.TarInfo, where: str) -> dict[str, bytes]:
    """xattrs from ``SCHILY.xattr.*`` (raw) and ``LIBARCHIVE.xattr.*`` (encoded) records."""
    out: dict[str, bytes] = {}
    lib: dict[str, bytes] = {}
    for k, v in ti.pax_headers.items():
        if k.startswith("SCHILY.xattr."):
            out[k[len("SCHILY.xattr."):]] = v.encode("utf-8", "surrogateescape")
        elif k.startswith("LIBARCHIVE.xattr."):
            xname = urllib.parse.unquote_to_bytes(k[len("LIBARCHIVE.xattr."):]).decode("utf-8", "surrogateescape")
            try:
                lib[xname] = _b64(v)
            except (binascii.Error, ValueError) as e:
                raise FormatError(f"{where}: bad base64 in PAX record {k!r} ({e})") from e
    for xname, value in lib.items():
        out.setdefault(xname, value)  # SCHILY wins: libarchive writes both, with one value
    for k in out:
        if _bad_xattr_name(k):
            raise FormatError(f"{where}: bad xattr name {k!r} (empty, or with '=', NUL or bytes that are not UTF-8)")
    return out


def _normalise(raw: str, where: str, what: str = "path") -> list[str]:
    """The components of an archive path: ``./``, ``/`` and ``//`` dropped, ``..`` refused."""
    try:
        return components(raw, what)
    except FormatError as e:
        raise type(e)(f"{where}: {e}") from None


def _is_aufs(parts: list[str]) -> bool:
    return any(p.startswith(AUFS_META_PREFIX) and p != OPAQUE_MARKER for p in parts)


class _Reader:
    """Turns tar members into layer entries; see the module docs for the rules."""

    def __init__(self, name: str, lower_dirs_meta: Callable[[str], Dir | None] | None) -> None:
        self.name = name
        self.lower_dirs_meta = lower_dirs_meta
        self.entries: dict[str, Entry] = {}
        self.raw: dict[str, str] = {}  # key -> tar name, for messages
        self.whiteouts: dict[str, str] = {}
        self.opaque: dict[str, str] = {}
        self.aufs: dict[str, File] = {}

    def where(self, raw: str) -> str:
        return f"{self.name}: entry {raw!r}"

    def add(self, ti: tarfile.TarInfo, stream: _Stream) -> None:
        raw = ti.name
        where = self.where(raw)
        parts = _normalise(raw, where)
        if _is_aufs(parts):
            # AUFS bookkeeping: keep plnk files only as hard-link targets.
            if AUFS_LINK_DIR in parts and ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
                self.aufs["/".join(parts)] = self._file(ti, stream, where)
            return
        for p in parts[:-1]:
            if p.startswith(WHITEOUT_PREFIX):
                raise FormatError(f"{where}: a directory name cannot start with {WHITEOUT_PREFIX!r}"
                                  " (a whiteout has no children)")
        k = "/".join(parts)
        base = parts[-1] if parts else ""
        parent = "/".join(parts[:-1])
        if base == OPAQUE_MARKER:
            self._once(self.opaque, parent, raw, "opaque marker for")
            return
        if base.startswith(WHITEOUT_PREFIX):
            target = base[len(WHITEOUT_PREFIX):]
            if target == "":
                raise FormatError(f"{where}: a bare {WHITEOUT_PREFIX!r} whiteout names nothing")
            if target in (".", ".."):
                raise UnsafePath(f"{where}: whites out {target!r} ({'its own directory' if parent else 'the root'})")
            self._once(self.whiteouts, join(parent, target), raw, "whiteout of")
            return
        node = self._node(ti, stream, k, where)
        if k == "" and not isinstance(node, Dir):
            raise FormatError(f"{where}: the root can only be a directory, got a {type(node).__name__}")
        self._once(self.entries, k, raw, "entry for", node)

    def _once(self, table: dict[str, Any], k: str, raw: str, what: str, value: Any = None) -> None:
        seen = self.raw.get(k) if table is self.entries else table.get(k)
        if seen is not None:
            raise FormatError(f"{self.where(raw)}: duplicate {what} /{k} (first as {seen!r});"
                              " an OCI layer MUST NOT repeat a path")
        if table is self.entries:
            self.entries[k] = value
            self.raw[k] = raw
        else:
            table[k] = raw

    def _meta(self, ti: tarfile.TarInfo, where: str) -> dict[str, Any]:
        return {"mode": ti.mode, "uid": ti.uid, "gid": ti.gid, "mtime_ns": _mtime_ns(ti, where),
                "xattrs": _xattrs(ti, where)}

    def _file(self, ti: tarfile.TarInfo, stream: _Stream, where: str) -> File:
        meta = self._meta(ti, where)
        data = stream.data(ti)
        node: File = self._make(File, where, data, **meta)
        return node

    def _make(self, cls: Any, where: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return cls(*args, **kwargs)
        except (ValueError, TypeError) as e:
            raise FormatError(f"{where}: {e}") from e

    def _node(self, ti: tarfile.TarInfo, stream: _Stream, k: str, where: str) -> Entry:
        t = ti.type
        sparse = ti.sparse is not None or t == tarfile.GNUTYPE_SPARSE
        if sparse or any(h.startswith("GNU.sparse.") for h in ti.pax_headers):
            raise FormatError(f"{where}: GNU sparse files are not supported (OCI: sparse files SHOULD NOT be used)")
        if t in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
            return self._file(ti, stream, where)
        if t == tarfile.LNKTYPE:
            return self._link(ti, k, where)
        meta = self._meta(ti, where)
        if t == tarfile.DIRTYPE:
            return self._make(Dir, where, **meta)  # type: ignore[no-any-return]
        if t == tarfile.SYMTYPE:
            if not ti.linkname:
                raise FormatError(f"{where}: symlink with an empty target")
            meta["mode"] = 0o777  # what every extractor gets (no lchmod on Linux), whatever the header says
            return self._make(Symlink, where, ti.linkname, **meta)  # type: ignore[no-any-return]
        if t in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            dev = "c" if t == tarfile.CHRTYPE else "b"
            if not (0 <= ti.devmajor <= _DEV_MAX and 0 <= ti.devminor <= _DEV_MAX):
                raise FormatError(f"{where}: device number {ti.devmajor}:{ti.devminor} out of range")
            return self._make(Device, where, dev, ti.devmajor, ti.devminor, **meta)  # type: ignore[no-any-return]
        if t == tarfile.FIFOTYPE:
            return self._make(Fifo, where, **meta)  # type: ignore[no-any-return]
        raise FormatError(f"{where}: unsupported tar entry type {t!r}")

    def _link(self, ti: tarfile.TarInfo, k: str, where: str) -> Entry:
        raw_target = ti.linkname
        tparts = _normalise(raw_target, where, "hard link target")
        target = "/".join(tparts)
        if target in self.aufs:
            return self.aufs[target]
        node = self.entries.get(target)
        if node is None:
            if tparts and tparts[-1].startswith(WHITEOUT_PREFIX):
                raise FormatError(f"{where}: hard link to {raw_target!r}, a whiteout")
            raise FormatError(f"{where}: hard link to {raw_target!r}, which is not an earlier entry of this layer "
                              f"(a layer cannot link into another one)")
        if isinstance(node, Dir):
            raise FormatError(f"{where}: hard link to {raw_target!r}, a directory")
        return node

    def finish(self) -> dict[str, Entry]:
        """Apply whiteouts and opaque markers (order-independent), then check the tree."""
        entries = self.entries
        implied: set[str] = set(self.opaque)
        for k in (*entries, *self.whiteouts, *self.opaque):
            implied.update(parents(k))
        for w, raw in self.whiteouts.items():
            node = entries.get(w)
            if node is None:
                # A whiteout with something below it in this layer: delete, then recreate.
                entries[w] = Dir(opaque=True) if w in implied else WHITEOUT
                self.raw[w] = raw
            elif isinstance(node, Dir) and not node.opaque:
                entries[w] = attrs.evolve(node, opaque=True)
        for d, raw in self.opaque.items():
            node = entries.get(d)
            if node is None:
                entries[d] = self._lower_dir(d)
                self.raw[d] = raw
            elif isinstance(node, Dir):
                if not node.opaque:
                    entries[d] = attrs.evolve(node, opaque=True)
            else:
                raise FormatError(f"{self.where(raw)}: opaque marker inside /{d},"
                                  f" a {type(node).__name__} of this layer")
        for k in entries:
            for p in parents(k):
                n = entries.get(p)
                if n is None or isinstance(n, Dir):
                    continue
                where = self.where(self.raw.get(k, k))
                if isinstance(n, Symlink):
                    raise UnsafePath(f"{where} climbs out through a symlink: /{p} is a symlink (-> {n.target!r}) "
                                     f"in the same layer, and extracting would write through it")
                raise FormatError(f"{where}: its parent /{p} is a {type(n).__name__} in the same layer")
        return {k: entries[k] for k in canonical_order(entries)}

    def _lower_dir(self, d: str) -> Dir:
        meta = self.lower_dirs_meta(d) if self.lower_dirs_meta is not None else None
        if meta is None:
            return Dir(opaque=True)
        if not isinstance(meta, Dir):
            raise TypeError(f"lower_dirs_meta({d!r}) must return a Dir or None, got {meta!r}")
        return attrs.evolve(meta, opaque=True, redirect=None)


def read_blob(fileobj: IO[bytes] | _Readable, *, name: str = "layer",
              lower_dirs_meta: Callable[[str], Dir | None] | None = None) -> tuple[dict[str, Entry], str, str, int]:
    """Read an OCI layer blob like :func:`read`, and return
    ``(entries, diff_id, blob_digest, blob_size)``: the sha256 of the uncompressed tar
    bytes actually read (the OCI diff_id, all of them, trailer and padding included), and
    of the blob as given. One streaming pass."""
    stream = _Stream(fileobj, name)
    reader = _Reader(name, lower_dirs_meta)
    for ti in stream.members():
        reader.add(ti, stream)
    entries = reader.finish()
    stream.finish()
    return entries, stream.tar.digest, "sha256:" + stream.src.h.hexdigest(), stream.src.size


def read(fileobj: IO[bytes] | _Readable, *, name: str = "layer",
         lower_dirs_meta: Callable[[str], Dir | None] | None = None) -> dict[str, Entry]:
    """Read an OCI changeset tar (plain, gzip, zstd; also bzip2, xz) into layer entries.

    Args:
        fileobj: a binary file object, read once from its current position (it need
            not be seekable).
        name: what to call the layer in error messages.
        lower_dirs_meta: for an opaque marker ``DIR/.wh..wh..opq`` whose ``DIR`` has no
            entry in the tar: called with the key, returns the merged lower
            :class:`Dir` (or ``None``); its metadata is kept, as containerd does.
            Without it the directory is ``Dir(opaque=True)`` with default metadata.

    Raises:
        FormatError: malformed, truncated or corrupt input; the message names ``name``
            and, where there is one, the entry. Its subclass UnsafePath: a path or link
            that would land outside the root.
    """
    return read_blob(fileobj, name=name, lower_dirs_meta=lower_dirs_meta)[0]


def check_diff_id(expected: str) -> None:
    """Refuse an expected diff_id that is not ``sha256:`` and 64 lowercase hex digits
    (ValueError: a caller's mistake, not a format error of the layer)."""
    if not isinstance(expected, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", expected):
        raise ValueError(f"expected diff_id must be 'sha256:' and 64 lowercase hex digits, got {expected!r}")


def check_digest(expected: str, actual: str, name: str) -> None:
    """Raise DigestMismatch naming both digests unless ``actual`` is ``expected``."""
    check_diff_id(expected)
    if expected != actual:
        raise DigestMismatch(f"{name}: the uncompressed tar has diff_id {actual}, expected {expected}")


__all__ = [
    "AUFS_META_PREFIX", "COMPRESSIONS", "OPAQUE_MARKER", "WHITEOUT_PREFIX", "canonical_order", "check_diff_id",
    "check_digest",
    "read", "read_blob", "tar_names", "to_bytes", "write", "write_blob",
]
