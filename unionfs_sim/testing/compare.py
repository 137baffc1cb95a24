"""Comparable snapshots of a merged view and of an upper layer, for differential tests.

A snapshot keeps what two correct implementations must agree on (types, permission
bits, owners, sizes, contents, symlink targets, xattrs) and drops what they may not
(inode numbers, times, directory sizes, link counts, overlayfs's own bookkeeping xattrs).
"""

from __future__ import annotations

import os
import stat as _stat
from collections.abc import Mapping
from typing import Any, Protocol

from ..nodes import Device, Dir, Entry, File, Symlink, Whiteout

_HIDDEN_XATTRS = ("trusted.overlay.", "user.overlay.")
_KIND = {_stat.S_IFDIR: "d", _stat.S_IFREG: "f", _stat.S_IFLNK: "l", _stat.S_IFIFO: "p",
         _stat.S_IFSOCK: "s", _stat.S_IFCHR: "c", _stat.S_IFBLK: "b"}


class ViewFS(Protocol):
    """The part of the os-style API a snapshot needs."""

    def lstat(self, path: str) -> os.stat_result: ...
    def listdir(self, path: str) -> list[str]: ...
    def readlink(self, path: str) -> str: ...
    def read_bytes(self, path: str) -> bytes: ...
    def listxattr(self, path: str, *, follow_symlinks: bool = True) -> list[str]: ...
    def getxattr(self, path: str, attribute: str, *, follow_symlinks: bool = True) -> bytes: ...


def _xattrs(fs: ViewFS, p: str) -> tuple[tuple[str, bytes], ...]:
    names = [n for n in fs.listxattr(p, follow_symlinks=False) if not n.startswith(_HIDDEN_XATTRS)]
    return tuple(sorted((n, fs.getxattr(p, n, follow_symlinks=False)) for n in names))


def snapshot(fs: ViewFS, top: str = "/", *, listed_absent: bool = True) -> dict[str, tuple[Any, ...]]:
    """The merged view under ``top`` as ``{path: (kind, mode, uid, gid, content, xattrs)}``.

    ``content`` is the data of a regular file, the target of a symlink, the device
    number of a device node, else None. A symlink's mode is not compared (always 0o777
    on Linux). A name that is listed but cannot be looked up (overlayfs lists whiteouts
    of a non-merged directory) is recorded as ``("listed-but-absent",)``, or left out
    with ``listed_absent=False`` (what a flattened tree would show).
    """
    out: dict[str, tuple[Any, ...]] = {}
    stack = [top]
    while stack:
        p = stack.pop()
        try:
            st = fs.lstat(p)
        except FileNotFoundError:
            # Listed but not found: overlayfs lists whiteouts of a non-merged directory.
            if listed_absent:
                out[p] = ("listed-but-absent",)
            continue
        kind = _KIND[_stat.S_IFMT(st.st_mode)]
        mode = 0o777 if kind == "l" else _stat.S_IMODE(st.st_mode)
        content: Any = None
        if kind == "f":
            content = fs.read_bytes(p)
        elif kind == "l":
            content = fs.readlink(p)
        elif kind in ("c", "b"):
            content = st.st_rdev
        out[p] = (kind, mode, st.st_uid, st.st_gid, content, _xattrs(fs, p))
        if kind == "d":
            base = p.rstrip("/")
            stack.extend(f"{base}/{n}" for n in fs.listdir(p))
    return out


def entry_shape(e: Entry) -> tuple[Any, ...]:
    """A layer entry as comparable data (times and identity dropped)."""
    if isinstance(e, Whiteout):
        return ("w",)
    x = tuple(sorted((k, v) for k, v in e.xattrs.items() if not k.startswith(_HIDDEN_XATTRS)))
    if isinstance(e, File):
        return ("f", e.mode, e.uid, e.gid, e.data, x)
    if isinstance(e, Dir):
        return ("d", e.mode, e.uid, e.gid, e.opaque, e.redirect, x)
    if isinstance(e, Symlink):
        return ("l", e.uid, e.gid, e.target, x)
    if isinstance(e, Device):
        return (e.dev, e.mode, e.uid, e.gid, e.major, e.minor, x)
    return (e.kind, e.mode, e.uid, e.gid, x)


def layer_shape(entries: Mapping[str, Entry], *, root: bool = False) -> dict[str, tuple[Any, ...]]:
    """Every entry of a layer as comparable data; the root ``""`` only if ``root``."""
    return {k: entry_shape(e) for k, e in entries.items() if root or k != ""}


def diff_dicts(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str] = ("model", "other")) -> str:
    """A short human-readable difference of two snapshots ("" if equal)."""
    lines = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if va != vb:
            lines.append(f"  {k}:\n    {names[0]}: {va!r}\n    {names[1]}: {vb!r}")
    return "\n".join(lines)


class OsView:
    """:class:`ViewFS` over the real ``os`` module (used inside the kernel worker's chroot)."""

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def listxattr(self, path: str, *, follow_symlinks: bool = True) -> list[str]:
        return os.listxattr(path, follow_symlinks=follow_symlinks)

    def getxattr(self, path: str, attribute: str, *, follow_symlinks: bool = True) -> bytes:
        return os.getxattr(path, attribute, follow_symlinks=follow_symlinks)
