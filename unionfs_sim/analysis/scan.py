"""Scan a ``docker save`` archive for analysis without reading file content.

The analyses need each layer's names, types, metadata and sizes, not the bytes: dive
hashes every byte it reads, and loading an image for the model reads and verifies them
all too. :func:`scan` reads only the tar headers of each (uncompressed) layer, seeking
over the data, and gives a :class:`ScannedImage` whose files are :class:`SizedFile`
entries: a size and the place of the content in the archive, read only when two copies
of equal size must be compared. The digests are the archive's own (its config and
manifest), not recomputed: this is a view for analysis, trusted as the archive is.
Anything this fast path does not handle (compressed layers, an OCI layout) is loaded
in full with :mod:`unionfs_sim.formats` instead.
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..errors import FormatError
from ..image import History, Image, ImageConfig, chain_ids, lower_of, sha256
from ..layer import Layer
from ..lower import Lower
from ..nodes import WHITEOUT, Device, Dir, Entry, Fifo, File, Symlink

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


@attrs.frozen
class _Header:
    """What the analysis needs of one tar member (after PAX and GNU long-name records)."""

    name: str
    type: bytes
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    offset_data: int


def _num(field: bytes, what: str, where: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        v = int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
        return v
    text = field.strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise FormatError(f"{where}: bad {what} field {field!r} in a tar header") from None


def _pax(data: bytes, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(data) and data[i:i + 1] != b"\0":
        sp = data.find(b" ", i)
        try:
            n = int(data[i:sp])
        except ValueError:
            raise FormatError(f"{where}: malformed PAX record at byte {i}") from None
        rec = data[sp + 1:i + n - 1]
        k, _, v = rec.partition(b"=")
        out[k.decode("utf-8", "surrogateescape")] = v.decode("utf-8", "surrogateescape")
        i += n
    return out


def _headers(fd: int, start: int, size: int, where: str) -> list[_Header]:
    """The members of the tar at ``start`` of ``fd`` (``size`` bytes), reading 512-byte headers only."""
    out: list[_Header] = []
    pos = 0
    pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    while pos + 512 <= size:
        hdr = os.pread(fd, 512, start + pos)
        if len(hdr) < 512:
            raise FormatError(f"{where}: truncated tar header at byte {pos}")
        if hdr.count(0) == 512:
            break
        want = _num(hdr[148:156], "checksum", where)
        if want != sum(hdr[:148]) + 256 + sum(hdr[156:]):
            raise FormatError(f"{where}: tar header checksum mismatch at byte {pos}")
        typ = hdr[156:157]
        n = _num(hdr[124:136], "size", where)
        data_at = pos + 512
        nxt = data_at + (n + 511) // 512 * 512
        if typ in (b"x", b"g", b"L", b"K"):
            data = os.pread(fd, n, start + data_at)
            if typ == b"x":
                pax = _pax(data, where)
            elif typ == b"L":
                long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif typ == b"K":
                long_link = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            pos = nxt
            continue
        name = hdr[0:100].split(b"\0", 1)[0]
        if hdr[257:262] == b"ustar":
            prefix = hdr[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        link = hdr[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        path = long_name if long_name is not None else name.decode("utf-8", "surrogateescape")
        if "size" in pax:
            n = int(pax["size"])
            nxt = data_at + (n + 511) // 512 * 512
        xattrs = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                  for k, v in pax.items() if k.startswith("SCHILY.xattr.")}
        out.append(_Header(
            name=pax.get("path", path), type=typ if typ != b"\0" else b"0", size=n,
            mode=_num(hdr[100:108], "mode", where), uid=int(pax.get("uid") or _num(hdr[108:116], "uid", where)),
            gid=int(pax.get("gid") or _num(hdr[116:124], "gid", where)),
            mtime=int(float(pax["mtime"])) if "mtime" in pax else _num(hdr[136:148], "mtime", where),
            linkname=pax.get("linkpath", long_link if long_link is not None else link),
            devmajor=_num(hdr[329:337], "devmajor", where), devminor=_num(hdr[337:345], "devminor", where),
            xattrs=xattrs, offset_data=start + data_at))
        pax, long_name, long_link = {}, None, None
        # hard links, symlinks, directories and devices carry no data, whatever the size field says
        pos = nxt if typ in (b"0", b"\0", b"7") else data_at
    return out


def _key(name: str) -> str:
    k = posixpath.normpath("/" + name).lstrip("/")
    return "" if k == "." else k


def _layer(path: str, fd: int, start: int, size: int, where: str) -> Layer:
    """The entries of the layer tar at ``start`` (headers only)."""
    entries: dict[str, Entry] = {}
    opaque: set[str] = set()
    for h in _headers(fd, start, size, where):
        k = _key(h.name)
        parent, base = posixpath.split(k)
        meta: dict[str, Any] = {"mode": h.mode & 0o7777, "uid": h.uid, "gid": h.gid,
                                "mtime_ns": h.mtime * 1_000_000_000, "xattrs": h.xattrs}
        if base == _OPAQUE:
            opaque.add(parent)
            d = entries.get(parent)
            entries[parent] = attrs.evolve(d, opaque=True) if isinstance(d, Dir) else Dir(opaque=True)
            continue
        if base.startswith(_WH):
            entries[posixpath.join(parent, base[len(_WH):])] = WHITEOUT
            continue
        if not k:
            continue
        t = h.type
        if t in (b"0", b"7"):
            entries[k] = SizedFile(length=h.size, path=path, offset=h.offset_data, **meta)
        elif t == b"1":
            target = entries.get(_key(h.linkname))
            if not isinstance(target, File):
                raise FormatError(f"{where}: {h.name}: hard link to {h.linkname}, which is not an earlier file")
            entries[k] = target
        elif t == b"5":
            entries[k] = Dir(opaque=k in opaque, **meta)
        elif t == b"2":
            entries[k] = Symlink(h.linkname, **{**meta, "mode": 0o777})
        elif t == b"6":
            entries[k] = Fifo(**meta)
        elif t in (b"3", b"4"):
            entries[k] = Device("c" if t == b"3" else "b", h.devmajor, h.devminor, **meta)
        else:
            raise FormatError(f"{where}: {h.name}: tar type {t!r} is not a layer entry")
    return Layer(entries)


def _histories(doc: dict[str, Any], n: int) -> list[History]:
    raw = doc.get("history") or []
    out = [History(created_by=h.get("created_by"), comment=h.get("comment"), created=h.get("created"),
                   author=h.get("author"), empty_layer=bool(h.get("empty_layer"))) for h in raw if isinstance(h, dict)]
    out.extend(History() for _ in range(n - sum(1 for h in out if not h.empty_layer)))
    return out


def scan(path: str | os.PathLike[str], tag: str | None = None, *,
         progress: Callable[[int, int, str], None] | None = None) -> ImageLike:
    """The image of the ``docker save`` archive ``path``, headers only where possible (see the module docs).

    ``progress(done, total, what)`` is called before each layer and once at the end.

    Raises:
        FormatError: a malformed archive or layer, naming it; LookupError for an unknown tag.
    """
    from ..formats import docker_archive

    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as outer:
                members = {_key(m.name): m for m in outer.getmembers()}
        except tarfile.TarError:
            return docker_archive.load(path, tag=tag)  # compressed or odd: the full loader says what is wrong

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
            return docker_archive.load(path, tag=tag)
        items = json.loads(read(member("manifest.json")))
        if tag is None and len(items) != 1:
            return docker_archive.load(path, tag=tag)  # let the loader explain the choice
        item = items[0] if tag is None else next((i for i in items if tag in (i.get("RepoTags") or [])), None)
        if item is None:
            return docker_archive.load(path, tag=tag)
        config = read(member(item["Config"]))
        layers = []
        total = len(item["Layers"])
        for i, name in enumerate(item["Layers"]):
            if progress:
                progress(i, total, f"layer {i + 1}/{total}")
            m = member(name)
            f.seek(m.offset_data)
            head = f.read(4)
            if head[:2] == b"\x1f\x8b" or head == b"\x28\xb5\x2f\xfd":
                return docker_archive.load(path, tag=tag)
            layers.append(_layer(path, f.fileno(), m.offset_data, m.size, f"{path}: {name}"))
    if progress:
        progress(total, total, "scanned")
    doc = json.loads(config)
    if len(doc.get("rootfs", {}).get("diff_ids") or []) != len(layers):
        raise FormatError(f"{path}: the config lists {len(doc.get('rootfs', {}).get('diff_ids') or [])} diff_ids "
                          f"for {len(layers)} layers")
    return ScannedImage(layers, config, _histories(doc, len(layers)))
