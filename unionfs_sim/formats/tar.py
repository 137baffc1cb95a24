"""Layer entries to and from OCI tar changesets (``.wh.`` whiteouts, ``.wh..wh..opq``).

This module sits just above :mod:`unionfs_sim.nodes`: it converts between a mapping of
keys to entries and a tar stream, so that ``Layer`` can use it for its digest.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Mapping
from typing import IO

from ..nodes import WHITEOUT, Device, Dir, Entry, Fifo, File, Socket, Symlink, Whiteout
from ..paths import join, split

WHITEOUT_PREFIX = ".wh."
"""OCI: a file named ``.wh.NAME`` deletes NAME from the layers below."""
OPAQUE_MARKER = ".wh..wh..opq"
"""OCI: this file in a directory hides everything below that directory in lower layers.
It must be matched before the generic prefix, since it starts with it too."""


def _xattr_value(v: bytes) -> str:
    # tarfile writes PAX values as UTF-8; surrogateescape lets it carry any bytes
    # (it then marks the header hdrcharset=BINARY).
    return v.decode("utf-8", "surrogateescape")


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
    if ns:
        ti.pax_headers["mtime"] = f"{sec}.{ns:09d}".rstrip("0")
    for k, v in node.xattrs.items():
        ti.pax_headers["SCHILY.xattr." + k] = _xattr_value(v)
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
    """
    items: list[tuple[str, Entry]] = []
    for k, node in entries.items():
        if isinstance(node, Whiteout):
            parent, name = split(k)
            items.append((join(parent, WHITEOUT_PREFIX + name), node))
            continue
        items.append((k, node))
        if isinstance(node, Dir) and node.opaque:
            items.append((join(k, OPAQUE_MARKER), WHITEOUT))
    items.sort(key=lambda it: it[0].split("/"))
    return items


def write(entries: Mapping[str, Entry], fileobj: IO[bytes]) -> None:
    """Write ``entries`` as a canonical, reproducible, uncompressed PAX tar to ``fileobj``.

    Same entries, same bytes: names sorted, times from the nodes, no user/group names.
    The first name of a hard-link group (in that order) carries the data; later names
    are tar hard links to it.
    """
    first_name: dict[int, str] = {}
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tf:
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
                tf.addfile(ti, io.BytesIO(node.data))
            else:
                tf.addfile(ti)


def to_bytes(entries: Mapping[str, Entry]) -> bytes:
    """The canonical tar of ``entries`` as bytes."""
    buf = io.BytesIO()
    write(entries, buf)
    return buf.getvalue()


__all__ = ["OPAQUE_MARKER", "WHITEOUT_PREFIX", "canonical_order", "tar_names", "to_bytes", "write"]
