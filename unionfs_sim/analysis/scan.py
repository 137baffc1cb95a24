"""Scan a ``docker save`` archive for analysis without reading file content.

The analyses need each layer's names, types, metadata and sizes, not the bytes: dive
hashes every byte it reads, and loading an image for the model reads and verifies them
all too. :func:`scan` reads only the tar headers of each (uncompressed) layer, seeking
over the data, and gives a :class:`ScannedImage` whose files are :class:`SizedFile`
entries: a size and the place of the content in the archive, read only when two copies
of equal size must be compared. The digests are the archive's own (its config and
manifest), not recomputed: this is a view for analysis, trusted as the archive is.
Anything this fast path does not handle (compressed layers, an OCI layout, a layer tar
with something unusual in it: see :func:`_layer`) is loaded in full with
:mod:`unionfs_sim.formats` instead, so the answer is the loader's either way. With a
second CPU free, a forked child scans some of the layers (see :func:`_scan_layers`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import posixpath
import tarfile
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any
from zlib import adler32

import attrs

from ..codec.tar import _DEV_MAX, _PAX_TIME, _bad_xattr_name
from ..errors import FormatError
from ..image import History, Image, ImageConfig, chain_ids, lower_of, sha256
from ..layer import Layer
from ..lower import Lower
from ..nodes import EMPTY_XATTRS, WHITEOUT, Device, Dir, Entry, Fifo, File, FrozenDict, Symlink
from ..nodes import _xattrs as _frozen_xattrs
from ..paths import components
from ..progress import Progress
from . import _forked

_OPAQUE = ".wh..wh..opq"
_WH = ".wh."


@attrs.frozen(eq=False)
class SizedFile(File):
    """A regular file known by its size and where its content lies (``path``, byte ``offset``)."""

    length: int = attrs.field(default=0, kw_only=True)
    path: str = attrs.field(default="", kw_only=True)
    offset: int = attrs.field(default=0, kw_only=True)

    @property
    def size(self) -> int:
        """Length of the content in bytes (from the tar header)."""
        return self.length

    def read(self) -> bytes:
        """The content, read from the archive."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.length)


_new = object.__new__
_set = object.__setattr__
_FIELDS = ("mode", "uid", "gid", "mtime_ns", "xattrs", "data", "length", "path", "offset")
_ID_MAX = 0xFFFFFFFF


def _sized(length: int, path: str, offset: int, mode: int, uid: int, gid: int, mtime_ns: int,
           xattrs: FrozenDict) -> SizedFile:
    """``SizedFile(...)`` from values already in the converters' form (permission bits, ids
    in range, frozen xattrs): the scan makes one per file, and attrs' ``__init__`` would
    convert and check each field again (twice the time)."""
    f = _new(SizedFile)
    _set(f, "mode", mode)
    _set(f, "uid", uid)
    _set(f, "gid", gid)
    _set(f, "mtime_ns", mtime_ns)
    _set(f, "xattrs", xattrs)
    _set(f, "data", b"")
    _set(f, "length", length)
    _set(f, "path", path)
    _set(f, "offset", offset)
    return f


if tuple(a.name for a in attrs.fields(SizedFile)) != _FIELDS:  # pragma: no cover - a new field in nodes.File
    def _sized(length: int, path: str, offset: int, mode: int, uid: int, gid: int, mtime_ns: int,  # noqa: F811
               xattrs: FrozenDict) -> SizedFile:
        return SizedFile(length=length, path=path, offset=offset, mode=mode, uid=uid, gid=gid, mtime_ns=mtime_ns,
                         xattrs=xattrs)


def same_content(a: File, b: File) -> bool:
    """True if two files hold the same bytes (reading scanned content only when sizes agree)."""
    if a.size != b.size:
        return False
    da = a.read() if isinstance(a, SizedFile) else a.data
    db = b.read() if isinstance(b, SizedFile) else b.data
    return da == db


class ScannedImage:
    """An image read by :func:`scan`: what the analyses use of an :class:`~unionfs_sim.image.Image`."""

    def __init__(self, layers: Sequence[Layer], config_bytes: bytes, history: Sequence[History]) -> None:
        """Made by :func:`scan`."""
        self.layers = tuple(layers)
        self.config_bytes = config_bytes
        self.history = tuple(history)
        self._doc: dict[str, Any] = json.loads(config_bytes)
        self.config = ImageConfig.from_json(self._doc)
        self._lower: Lower | None = None

    def config_json(self) -> dict[str, Any]:
        """The config document, as the archive has it."""
        return json.loads(self.config_bytes)  # type: ignore[no-any-return]

    @property
    def id(self) -> str:
        """sha256 of the config bytes."""
        return sha256(self.config_bytes)

    @property
    def diff_ids(self) -> list[str]:
        """The config's ``rootfs.diff_ids``."""
        return list(self._doc["rootfs"]["diff_ids"])

    @property
    def chain_ids(self) -> list[str]:
        """ChainID of each prefix of the stack."""
        return chain_ids(self.diff_ids)

    @property
    def lower(self) -> Lower:
        """The flattened index of the layers."""
        if self._lower is None:
            self._lower = lower_of(self.layers)
        return self._lower

    def inspect(self, repo_tags: Sequence[str] = (), repo_digests: Sequence[str] = (), **kwargs: Any) -> dict[str, Any]:
        """As :meth:`Image.inspect`."""
        from .inspect import inspect

        return inspect(self, repo_tags, repo_digests, **kwargs)


ImageLike = Image | ScannedImage
"""What the analyses take: a full image, or one scanned for analysis."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (and back on after, if it was on).

    Scanning an image and analysing it make a few objects per file (tens of thousands)
    and free none: the collector, run every few hundred allocations, would walk them again
    and again (a tenth of the analysis time) to find no cycles.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Unusual(Exception):
    """Something in a layer tar the header scan leaves to the full loader (which handles or names it)."""


_PAX_KNOWN = frozenset({"path", "linkpath", "size", "uid", "gid", "mtime", "atime", "ctime", "uname", "gname",
                        "comment", "charset"})
"""PAX keywords the scan reads or, as the loader does, ignores; ``SCHILY.xattr.*`` too. Anything
else that the loader reads (``LIBARCHIVE.xattr.*``, ``GNU.sparse.*``, ``hdrcharset``) sends the
layer to the loader; other vendors' keywords (``SCHILY.dev``, ``LIBARCHIVE.creationtime`` ...)
are ignored by both."""
_PAX_FALLBACK = ("LIBARCHIVE.xattr.", "GNU.sparse.", "hdrcharset")
_STREAM = 4 << 20
"""Bytes of tar asked of the kernel ahead of the scan of a layer not in the page cache (see :func:`_layer`)."""
_CHAINS = 3
"""From this many layers scanned at once, each asks only for its next header's page (see :func:`_layer`)."""
_PAGE = 4096
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
"""``preadv`` flag: fail with EAGAIN instead of waiting for the disk (Linux 4.14); None where absent."""


def _num(field: bytes, what: str, where: str) -> int:
    """A numeric header field as tarfile reads it: octal text up to a NUL, or GNU base-256."""
    try:
        return int(field.replace(b"\0", b" "), 8)  # the usual "0000644\0": fast
    except ValueError:
        pass
    if field[:1] and field[0] & 0x80:
        if field[0] == 0xFF:  # negative base-256: no layer entry has one
            raise _Unusual
        return int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise FormatError(f"{where}: bad {what} field {field!r} in a tar header") from None


def _pax(data: bytes, where: str) -> dict[str, str]:
    """The records of a PAX extended header (``LEN KEY=VALUE\\n``), decoded as tarfile does."""
    out: dict[str, str] = {}
    i = 0
    while i < len(data) and data[i:i + 1] != b"\0":
        sp = data.find(b" ", i)
        try:
            n = int(data[i:sp])
        except ValueError:
            raise FormatError(f"{where}: malformed PAX record at byte {i}") from None
        if n <= 0 or sp < 0 or data[i + n - 1:i + n] != b"\n":
            raise FormatError(f"{where}: malformed PAX record at byte {i}")
        k, eq, v = data[sp + 1:i + n - 1].partition(b"=")
        if not eq:
            raise FormatError(f"{where}: malformed PAX record at byte {i}")
        key = k.decode("utf-8", "surrogateescape")
        if key not in _PAX_KNOWN and not key.startswith("SCHILY.xattr."):
            if key.startswith(_PAX_FALLBACK):
                raise _Unusual
            i += n
            continue
        out[key] = v.decode("utf-8", "surrogateescape")
        i += n
    return out


def _pax_mtime_ns(text: str, where: str) -> int:
    """A PAX ``mtime`` in ns, exactly (as the loader reads it)."""
    m = _PAX_TIME.fullmatch(text.strip())
    if m is None or len(m.group(2)) > 30:
        raise FormatError(f"{where}: bad PAX mtime {text[:40]!r}")
    sign, sec, frac = m.groups()
    ns = int(sec) * 1_000_000_000 + int((frac or "")[:9].ljust(9, "0"))
    return -ns if sign else ns


def _checksum_ok(hdr: bytes, want: int) -> bool:
    """The header's checksum (its own field counted as spaces), unsigned or signed, as tarfile accepts."""
    # adler32's low half is 1 + the byte sum mod 65521: exact for 256 bytes (at most 65280).
    got = (adler32(hdr[:256]) & 0xFFFF) + (adler32(hdr[256:]) & 0xFFFF) - 2 - sum(hdr[148:156]) + 256
    if got == want:
        return True
    signed = sum(b - 256 if b > 127 else b for b in hdr[:148] + hdr[156:]) + 256
    return signed == want


def _clean_key(name: str, where: str) -> str:
    """The layer key of a tar name (``./``, ``/`` and ``//`` dropped); ``..`` and NUL refused as the loader does."""
    k = name.strip("/")
    while k.startswith("./"):
        k = k[2:].lstrip("/")
    if k == ".":
        return ""
    if len(k) > 63 or "//" in k or "." in k and ("/." in k or k.startswith("..")) or "\0" in k:
        try:
            return "/".join(components(name))
        except FormatError as e:
            raise type(e)(f"{where}: {e}") from None
    return k


def _ask(fd: int, at: int, end: int, stream: bool) -> int:
    """Ask the kernel to read ``fd`` from ``at`` (the next :data:`_STREAM` bytes up to ``end``,
    or the page holding ``at``) without waiting; where the request ends."""
    if stream:
        n = min(_STREAM, end - at)
        if n > 0:
            os.posix_fadvise(fd, at, n, os.POSIX_FADV_WILLNEED)
        return at + _STREAM
    os.posix_fadvise(fd, at, 512, os.POSIX_FADV_WILLNEED)
    return (at // _PAGE + 1) * _PAGE


def _layer(path: str, fd: int, start: int, size: int, where: str,
           company: Sequence[int] = (1,)) -> Generator[int, bool, Layer]:
    """The entries of the layer tar at ``start`` of ``fd`` (``size`` bytes), from its 512-byte headers only.

    Reads ustar, GNU (``L``/``K`` long names, base-256 numbers) and PAX (``x``) headers
    and the members OCI layers hold; anything else (a global PAX header, sparse files,
    AUFS bookkeeping, a path twice, entries below a whiteout of the same layer ...)
    raises :class:`_Unusual`, and :func:`scan` loads the archive in full instead.

    A generator (its value is the layer), for archives not in the page cache: each
    header's place is known only from the one before it, so reading header after header
    would wait on the disk once per header (20,000 waits for 20,000 files). Where a header
    is not in the cache, the layer asks the kernel for it (``POSIX_FADV_WILLNEED``, which
    does not wait), and from then on for each next header as soon as it knows where that
    is, and yields the header's offset, so that :func:`scan` goes on with the other layers
    meanwhile (it sends True when all of them wait, and this one then waits for its read).
    With :data:`_CHAINS` or more layers still being scanned (``company[0]``, kept by
    :func:`scan`) their reads overlap, and each asks for the page of its next header only;
    with fewer, a layer asks for the next :data:`_STREAM` bytes of its tar, content and
    all: a lone chain of page reads would leave the disk idle, a stream keeps it busy.
    In the cache, a layer runs to its end without yielding.
    """
    entries: dict[str, Entry] = {}
    opaque: set[str] = set()
    dirs: set[str] = set()  # parent keys of the entries
    pread = os.pread
    nowait = _NOWAIT
    buf = bytearray(512)
    bufs = [buf]
    cold = False  # a header was not in the page cache: ask the kernel ahead from here on
    asked = 0  # the kernel has been asked for the tar up to here
    just_asked = -1  # the header whose page was asked for when the one before it was read
    pos = 0
    pax: dict[str, str] | None = None
    long_name: str | None = None
    long_link: str | None = None
    owners: dict[bytes, tuple[int, int, int]] = {}  # mode, uid and gid fields, parsed once per layer
    while pos + 512 <= size:
        at = start + pos
        got = 0
        if nowait is not None and at != just_asked:  # (a page asked for a moment ago is not in yet)
            try:
                got = os.preadv(fd, bufs, at, nowait)
            except BlockingIOError:
                pass
            except OSError:  # a file system without RWF_NOWAIT: plain reads from here on
                nowait = None
        if got == 512:
            hdr = bytes(buf)
        else:
            if nowait is not None:
                cold = True
                if at >= asked:
                    asked = _ask(fd, at, start + size, company[0] < _CHAINS)
                while not (yield at):  # True: every layer waits, so wait here
                    try:
                        got = os.preadv(fd, bufs, at, nowait)
                    except BlockingIOError:
                        continue
                    if got == 512:
                        break
            hdr = bytes(buf) if got == 512 else pread(fd, 512, at)
        if len(hdr) < 512:
            raise FormatError(f"{where}: truncated tar header at byte {pos}")
        if not hdr[0] and not hdr.strip(b"\0"):
            break
        try:  # the usual octal fields, inline (the scan's time is per header); _num does the rest
            want = int(hdr[148:156].replace(b"\0", b" "), 8)
            n = int(hdr[124:136].replace(b"\0", b" "), 8)
        except ValueError:
            want = _num(hdr[148:156], "checksum", where)
            n = _num(hdr[124:136], "size", where)
        # adler32's low half is 1 + the byte sum mod 65521: the sum itself for an ASCII header
        # (at most 512 * 127 = 65024); _checksum_ok does the rest exactly
        if (not hdr.isascii() or (adler32(hdr) & 0xFFFF) - 1 - sum(hdr[148:156]) + 256 != want) \
                and not _checksum_ok(hdr, want):
            raise FormatError(f"{where}: tar header checksum mismatch at byte {pos}")
        if n < 0:
            raise _Unusual  # the loader names it
        typ = hdr[156:157]
        data_at = pos + 512
        nxt = data_at + (n + 511) // 512 * 512
        if typ in (b"x", b"L", b"K"):
            if nxt > size:
                raise _Unusual  # cut inside the record: the loader names it
            data = pread(fd, n, start + data_at)
            if typ == b"x":
                pax = _pax(data, where)
            elif typ == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            else:
                long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            pos = nxt
            continue
        if long_name is not None:
            name = long_name
        else:
            raw = hdr[0:100].split(b"\0", 1)[0]
            if hdr[345] and hdr[257:263] == b"ustar\0":  # POSIX ustar (GNU headers use the field otherwise)
                raw = hdr[345:500].split(b"\0", 1)[0] + b"/" + raw
            name = raw.decode("utf-8", "surrogateescape")
        if typ == b"\0":
            typ = b"5" if name.endswith("/") else b"0"  # tarfile: an old-style regular file named "x/" is a directory
        ids = hdr[100:124]
        owner = owners.get(ids)
        if owner is None:
            owner = owners[ids] = (_num(ids[:8], "mode", where), _num(ids[8:16], "uid", where),
                                   _num(ids[16:], "gid", where))
        mode, uid, gid = owner
        try:
            mtime_ns = int(hdr[136:148].replace(b"\0", b" "), 8) * 1_000_000_000
        except ValueError:
            mtime_ns = _num(hdr[136:148], "mtime", where) * 1_000_000_000
        xattrs: dict[str, bytes] = {}
        link = long_link
        if pax is not None:
            name = pax.get("path", name)
            link = pax.get("linkpath", link)
            try:
                if "size" in pax:
                    n = int(pax["size"])
                    nxt = data_at + (n + 511) // 512 * 512
                uid = int(pax.get("uid", uid))
                gid = int(pax.get("gid", gid))
            except ValueError:
                raise _Unusual from None
            if "mtime" in pax:
                mtime_ns = _pax_mtime_ns(pax["mtime"], where)
            for pk, pv in pax.items():
                if pk.startswith("SCHILY.xattr."):
                    xn = pk[13:]
                    if _bad_xattr_name(xn):
                        raise _Unusual
                    xattrs[xn] = pv.encode("utf-8", "surrogateescape")
        if link is None and typ in (b"1", b"2"):
            link = hdr[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        pax, long_name, long_link = None, None, None
        # hard links, symlinks, directories and devices carry no data, whatever the size field says
        if typ in (b"0", b"7"):
            if nxt > size:
                raise _Unusual  # content cut short: the loader names it
            pos = nxt
        else:
            pos = data_at
        if cold and pos + 512 <= size:
            nxt_at = start + pos
            if company[0] < _CHAINS:
                if nxt_at + _STREAM // 2 > asked:
                    asked = _ask(fd, max(asked, nxt_at), start + size, True)  # past a big file: from its header
            elif nxt_at >= asked:
                asked = _ask(fd, nxt_at, start + size, False)
                just_asked = nxt_at
        k = _clean_key(name, where)
        if ".wh." in k:
            parent, _, base = k.rpartition("/")
            if ".wh..wh." in k and (base != _OPAQUE or ".wh..wh." in parent) or ".wh." in parent:
                raise _Unusual  # AUFS bookkeeping, or a whiteout's name used as a directory
            if base == _OPAQUE:
                if parent in opaque:
                    raise _Unusual
                opaque.add(parent)
                continue
            if base.startswith(_WH):
                target = base[len(_WH):]
                if target in ("", ".", ".."):
                    raise _Unusual
                w = f"{parent}/{target}" if parent else target
                if w in entries:
                    raise _Unusual
                entries[w] = WHITEOUT
                continue
        if k in entries:
            raise _Unusual  # a path twice, or a whiteout and an entry for one path
        if uid > _ID_MAX or gid > _ID_MAX:
            raise _Unusual  # the loader names it
        if typ in (b"0", b"7"):
            if not k:
                raise _Unusual  # the root as a file: the loader names it
            node: Entry = _sized(n, path, start + data_at, mode & 0o7777, uid, gid, mtime_ns,
                                 _frozen_xattrs(xattrs) if xattrs else EMPTY_XATTRS)
            entries[k] = node
            i = k.rfind("/")
            if i > 0:
                dirs.add(k[:i])
            continue
        meta: dict[str, Any] = {"mode": mode, "uid": uid, "gid": gid, "mtime_ns": mtime_ns, "xattrs": xattrs}
        if typ == b"5":
            node = Dir(**meta)
        elif typ == b"1":
            linked = entries.get(_clean_key(link or "", where))
            if not isinstance(linked, File):
                raise _Unusual  # a link to nothing earlier, a whiteout, a directory or AUFS: the loader names it
            node = linked
        elif typ == b"2":
            if not link:
                raise _Unusual
            node = Symlink(link, **{**meta, "mode": 0o777})
        elif typ == b"6":
            node = Fifo(**meta)
        elif typ in (b"3", b"4"):
            major, minor = _num(hdr[329:337], "devmajor", where), _num(hdr[337:345], "devminor", where)
            if major > _DEV_MAX or minor > _DEV_MAX:
                raise _Unusual
            node = Device("c" if typ == b"3" else "b", major, minor, **meta)
        else:
            raise _Unusual  # sparse, volume labels, global headers, multi-volume parts ...
        if not k and not isinstance(node, Dir):
            raise _Unusual  # the root as a file: the loader names it
        entries[k] = node
        i = k.rfind("/")
        if i > 0:
            dirs.add(k[:i])
    seen: set[str] = set()
    for d in dirs:
        while d and d not in seen:
            seen.add(d)
            e = entries.get(d)
            if e is not None and not isinstance(e, Dir):
                # Below a whiteout of the same layer (the loader deletes, then recreates),
                # or below a file or symlink (the loader names it).
                raise _Unusual
            d = d.rpartition("/")[0]
    for d in opaque:
        e = entries.get(d)
        if e is None:
            entries[d] = Dir(opaque=True)
        elif isinstance(e, Dir):
            entries[d] = attrs.evolve(e, opaque=True)
        else:
            raise _Unusual  # an opaque marker inside a non-directory: the loader names it
    return Layer(entries)


def _key(name: str) -> str:
    k = posixpath.normpath("/" + name).lstrip("/")
    return "" if k == "." else k


def _histories(doc: dict[str, Any], n: int) -> list[History]:
    raw = doc.get("history") or []
    out = [History(created_by=h.get("created_by"), comment=h.get("comment"), created=h.get("created"),
                   author=h.get("author"), empty_layer=bool(h.get("empty_layer"))) for h in raw if isinstance(h, dict)]
    out.extend(History() for _ in range(n - sum(1 for h in out if not h.empty_layer)))
    return out


_FORK_MIN_BYTES = 16 << 20
"""From this many bytes of layer tars (and two layers), :func:`_scan_layers` shares the
layers with a forked child (see :mod:`._forked`): below it, the fork costs more than it saves."""
_Span = tuple[int, int, str]
"""A layer tar's offset and size in the archive, and its name for messages."""


class _Claims:
    """Layer indexes to scan, shared by this process and a forked child: each takes the next
    one from one pipe (two bytes a read, which a pipe never splits between readers)."""

    MAX = 2048
    """Most layers it holds (the pipe is written before anyone reads, in one atomic write)."""

    def __init__(self, n: int) -> None:
        """The indexes ``0 .. n-1``, in order."""
        self._r, w = os.pipe()
        try:
            os.write(w, b"".join(i.to_bytes(2, "big") for i in range(n)))
        finally:
            os.close(w)

    def next(self) -> int | None:
        """The next layer nobody took yet, or None."""
        b = os.read(self._r, 2)
        return int.from_bytes(b, "big") if b else None

    def close(self) -> None:
        """Close this process's end."""
        os.close(self._r)


def _scan_some(path: str, fd: int, spans: Sequence[_Span], claim: Callable[[], int | None],
               done: dict[int, Layer], progress: Progress | None = None, most: int = 0) -> None:
    """Scan the layers ``claim`` gives into ``done`` (by index), side by side where they wait on the disk.

    A layer runs until it waits for a header not in the page cache (see :func:`_layer`);
    when every layer being scanned waits, the next one is claimed (up to ``most`` at a
    time, if given: a process sharing the claims must not take them all at once); else
    this process waits for the disk on the layer that has waited longest (the disk
    answers roughly in the order asked).
    """
    total = len(spans)
    readers: dict[int, Generator[int, bool, Layer]] = {}
    waits: dict[int, int] = {}  # the header offset each layer waits for, longest waiting first
    company = [_CHAINS]  # layers scanned side by side, counting those still to claim as many (see _layer)
    more = True

    def step(i: int, block: bool | None) -> bool:
        """Run layer ``i`` until it waits again or ends; True if it got anywhere."""
        try:
            at = next(readers[i]) if block is None else readers[i].send(block)
        except StopIteration as end:
            done[i] = end.value
            del readers[i]
            waits.pop(i, None)
            company[0] = len(readers) + (_CHAINS if more else 0)
            if progress and len(done) < total:
                progress(len(done), total, f"{len(done)}/{total} layers")
            return True
        if waits.get(i) == at:
            return False
        waits.pop(i, None)  # to the end of the queue
        waits[i] = at
        return True

    def start() -> bool:
        """Claim a layer and run it to its first header not in the page cache; False if none is left."""
        nonlocal more
        if most and len(readers) >= most:
            return False
        i = claim() if more else None
        if i is None:
            more = False
            company[0] = len(readers)
            return False
        at, size, where = spans[i]
        readers[i] = _layer(path, fd, at, size, where, company)
        company[0] = len(readers) + _CHAINS
        step(i, None)
        return True

    while readers or start():
        moved = [step(i, False) for i in list(readers)]
        if readers and not any(moved) and not start():
            step(next(iter(waits)), True)


def _encode(layer: Layer) -> list[tuple[Any, ...]]:
    """``layer`` compactly, for the pipe from a forked child: a tuple per entry, in order; files
    as their fields, a hard link as the key of its first name, a whiteout as None."""
    out: list[tuple[Any, ...]] = []
    first: dict[int, str] = {}
    for k, e in layer.items():
        if type(e) is SizedFile:
            seen = first.get(id(e))
            if seen is None:
                first[id(e)] = k
                out.append((k, e.length, e.offset, e.mode, e.uid, e.gid, e.mtime_ns, dict(e.xattrs)))
            else:
                out.append((k, seen))
        else:
            out.append((k, None if e is WHITEOUT else e))
    return out


def _decode(records: Sequence[tuple[Any, ...]], path: str) -> Layer:
    """The layer :func:`_encode` gave ``records`` for (its files' content in the archive ``path``)."""
    entries: dict[str, Entry] = {}
    for r in records:
        if len(r) == 8:
            k, n, offset, mode, uid, gid, mtime_ns, xattrs = r
            entries[k] = _sized(n, path, offset, mode, uid, gid, mtime_ns,
                                _frozen_xattrs(xattrs) if xattrs else EMPTY_XATTRS)
        else:
            k, e = r
            entries[k] = WHITEOUT if e is None else entries[e] if isinstance(e, str) else e
    return Layer(entries)


def _scan_layers(path: str, fd: int, spans: Sequence[_Span], progress: Progress | None) -> list[Layer]:
    """The layers at ``spans`` of the archive open as ``fd``, each scanned by :func:`_layer`.

    With a second CPU free, enough to scan and the archive in the page cache (see
    :func:`_looks_cached`), a forked child takes layers too (from the same
    :class:`_Claims`, so neither waits while the other has more to do) and sends them
    back encoded; a layer the child did not finish (an error in it, a crash) is scanned
    here after, so the answer, or the error, is a single process's.
    """
    done: dict[int, Layer] = {}
    todo = iter(range(len(spans)))
    if (1 < len(spans) <= _Claims.MAX and sum(s[1] for s in spans) >= _FORK_MIN_BYTES and _forked.available()
            and _looks_cached(fd, spans)):
        claims = _Claims(len(spans))
        half = (len(spans) + 1) // 2
        try:
            with _forked.Forked(lambda: _child_scan(path, fd, spans, claims.next, half)) as helper:
                _scan_some(path, fd, spans, claims.next, done, progress, most=half)
                for i, records in (helper.result() or {}).items():
                    done[i] = _decode(records, path)
        finally:
            claims.close()
        todo = (i for i in range(len(spans)) if i not in done)
    _scan_some(path, fd, spans, lambda: next(todo, None), done, progress)
    return [done[i] for i in range(len(spans))]


_PROBE_PAST = 128 << 10
"""How far into a layer :func:`_looks_cached` looks: past what reading the outer tar's
headers brings into the page cache (its reads and the kernel's readahead after them)."""


def _looks_cached(fd: int, spans: Sequence[_Span]) -> bool:
    """True unless a layer's headers past its first :data:`_PROBE_PAST` bytes are out of the page cache.

    In the cache, the scan is CPU work, which a second process halves. Out of it, the
    scan is disk work instead: one process's layers read side by side (see
    :func:`_layer`) keep the disk as busy as two processes' do, and measured faster
    (cold, the benchmark image: 0.60 s median against 0.70 s forked). Each layer's
    headers are followed from its first (a few reads, none waiting: ``RWF_NOWAIT``) to
    the first one past that mark; a layer that gets no answer in 16 headers (small
    files, odd headers: the scan judges those) does not count.
    """
    if _NOWAIT is None:
        return True
    buf = bytearray(512)
    for at, size, _ in spans:
        pos = 0
        for _ in range(16):
            if pos + 512 > size:
                break
            try:
                if os.preadv(fd, [buf], at + pos, _NOWAIT) != 512:
                    return False
            except BlockingIOError:
                return False
            except OSError:  # a file system without RWF_NOWAIT
                return True
            if pos >= _PROBE_PAST:
                break
            try:
                n = int(buf[124:136].replace(b"\0", b" "), 8)
            except ValueError:
                break
            pos += 512 + ((n + 511) // 512 * 512 if buf[156] in b"07xLK\0" else 0)  # the types with data
    return True


def _child_scan(path: str, fd: int, spans: Sequence[_Span], claim: Callable[[], int | None],
                most: int) -> dict[int, Any]:
    """In the forked child: the layers it scanned, encoded; on any problem, those done before it
    (the parent scans the rest, and meets the problem itself)."""
    done: dict[int, Layer] = {}
    with contextlib.suppress(Exception):
        _scan_some(path, fd, spans, claim, done, most=most)
    return {i: _encode(x) for i, x in done.items()}


def scan(path: str | os.PathLike[str], tag: str | None = None, *,
         progress: Progress | None = None) -> ImageLike:
    """The image of the ``docker save`` archive ``path``, headers only where possible (see the module docs).

    ``progress(done, total, what)`` is called before the layers, as each is done, and once at the end.

    Raises:
        FormatError: a malformed archive or layer, naming it; LookupError for an unknown tag.
    """
    from ..formats import docker_archive

    path = os.fspath(path)
    with gc_paused(), open(path, "rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as outer:
                members = {_key(m.name): m for m in outer.getmembers()}
        except tarfile.TarError:
            return docker_archive.load(path, tag=tag, progress=progress)  # compressed or odd: the loader says what

        def member(name: str) -> tarfile.TarInfo:
            m = members.get(_key(name))
            for _ in range(8):
                if m is None or not m.issym():
                    break
                m = members.get(_key(posixpath.join(posixpath.dirname(_key(name)), m.linkname)))
            if m is None or not m.isreg():
                raise FormatError(f"{path}: no member {name}")
            return m

        def read(m: tarfile.TarInfo) -> bytes:
            f.seek(m.offset_data)
            return f.read(m.size)

        if "manifest.json" not in members:
            return docker_archive.load(path, tag=tag, progress=progress)
        items = json.loads(read(member("manifest.json")))
        if tag is None and len(items) != 1:
            return docker_archive.load(path, tag=tag, progress=progress)  # let the loader explain the choice
        item = items[0] if tag is None else next((i for i in items if tag in (i.get("RepoTags") or [])), None)
        if item is None:
            return docker_archive.load(path, tag=tag, progress=progress)
        config = read(member(item["Config"]))
        spans: list[tuple[int, int, str]] = []
        for name in item["Layers"]:
            m = member(name)
            f.seek(m.offset_data)
            head = f.read(4)
            if head[:2] == b"\x1f\x8b" or head == b"\x28\xb5\x2f\xfd":
                return docker_archive.load(path, tag=tag, progress=progress)
            spans.append((m.offset_data, m.size, f"{path}: {name}"))
        total = len(spans)
        if progress:
            progress(0, total, f"scanning {total} layers")
        try:
            layers = _scan_layers(path, f.fileno(), spans, progress)
        except _Unusual:
            return docker_archive.load(path, tag=tag, progress=progress)  # the unusual (see _layer)
    if progress:
        progress(total, total, "scanned")
    doc = json.loads(config)
    if len(doc.get("rootfs", {}).get("diff_ids") or []) != len(layers):
        raise FormatError(f"{path}: the config lists {len(doc.get('rootfs', {}).get('diff_ids') or [])} diff_ids "
                          f"for {len(layers)} layers")
    return ScannedImage(layers, config, _histories(doc, len(layers)))
