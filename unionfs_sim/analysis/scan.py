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
from collections.abc import Sequence
from typing import IO, Any

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


class _Window:
    """``size`` bytes at ``start`` of an open file, seekable (tarfile skips data by seeking)."""

    def __init__(self, f: IO[bytes], start: int, size: int) -> None:
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        n = left if n < 0 else min(n, left)
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else self.size + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos


def _key(name: str) -> str:
    k = posixpath.normpath("/" + name).lstrip("/")
    return "" if k == "." else k


def _layer(path: str, f: IO[bytes], start: int, size: int, where: str) -> Layer:
    """The entries of the layer tar at ``start`` (headers only)."""
    entries: dict[str, Entry] = {}
    opaque: set[str] = set()
    try:
        with tarfile.open(fileobj=_Window(f, start, size), mode="r:") as tf:  # type: ignore[call-overload]
            infos = list(tf)
        for ti in infos:
            k = _key(ti.name)
            parent, base = posixpath.split(k)
            meta: dict[str, Any] = {"mode": ti.mode & 0o7777, "uid": ti.uid, "gid": ti.gid,
                                    "mtime_ns": int(ti.mtime) * 1_000_000_000,
                                    "xattrs": {n[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                                               for n, v in ti.pax_headers.items() if n.startswith("SCHILY.xattr.")}}
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
            if ti.isreg():
                entries[k] = SizedFile(length=ti.size, path=path, offset=start + ti.offset_data, **meta)
            elif ti.islnk():
                target = entries.get(_key(ti.linkname))
                if not isinstance(target, File):
                    raise FormatError(f"{where}: {ti.name}: hard link to {ti.linkname}, which is not an earlier file")
                entries[k] = target
            elif ti.isdir():
                entries[k] = Dir(opaque=k in opaque, **meta)
            elif ti.issym():
                entries[k] = Symlink(ti.linkname, **{**meta, "mode": 0o777})
            elif ti.isfifo():
                entries[k] = Fifo(**meta)
            elif ti.ischr() or ti.isblk():
                entries[k] = Device("c" if ti.ischr() else "b", ti.devmajor, ti.devminor, **meta)
            else:
                raise FormatError(f"{where}: {ti.name}: tar type {ti.type!r} is not a layer entry")
    except tarfile.TarError as e:
        raise FormatError(f"{where}: not a tar ({e})") from e
    return Layer(entries)


def _histories(doc: dict[str, Any], n: int) -> list[History]:
    raw = doc.get("history") or []
    out = [History(created_by=h.get("created_by"), comment=h.get("comment"), created=h.get("created"),
                   author=h.get("author"), empty_layer=bool(h.get("empty_layer"))) for h in raw if isinstance(h, dict)]
    out.extend(History() for _ in range(n - sum(1 for h in out if not h.empty_layer)))
    return out


def scan(path: str | os.PathLike[str], tag: str | None = None) -> ImageLike:
    """The image of the ``docker save`` archive ``path``, headers only where possible (see the module docs).

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
        for name in item["Layers"]:
            m = member(name)
            f.seek(m.offset_data)
            head = f.read(4)
            if head[:2] == b"\x1f\x8b" or head == b"\x28\xb5\x2f\xfd":
                return docker_archive.load(path, tag=tag)
            layers.append(_layer(path, f, m.offset_data, m.size, f"{path}: {name}"))
    doc = json.loads(config)
    if len(doc.get("rootfs", {}).get("diff_ids") or []) != len(layers):
        raise FormatError(f"{path}: the config lists {len(doc.get('rootfs', {}).get('diff_ids') or [])} diff_ids "
                          f"for {len(layers)} layers")
    return ScannedImage(layers, config, _histories(doc, len(layers)))
