r"""FUSE ``-o`` options, parsed and written one way for every entry point.

``-o a,b=c`` strings (from ``unionfs-sim mount -o``, the fuse-overlayfs drop-in, mount(8))
become a dict (``{"a": True, "b": "c"}``) and a dict becomes the list a FUSE library or
the kernel takes. A comma inside a value is escaped as ``\,`` (libfuse's convention); the
drop-in's ``lowerdir`` keeps its ``\:`` escapes for :func:`split_escaped`. Which options a
server accepts is the server's to say (``fuse.server.parse_options``, the drop-in's list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def split_escaped(s: str, sep: str, *, unescape: bool = True) -> list[str]:
    r"""Split ``s`` at ``sep`` except where it is escaped as ``\sep``.

    With ``unescape`` every ``\x`` becomes ``x``; without it only ``\sep`` loses its
    backslash (other escapes are left for a later split).

    >>> split_escaped(r"a\:b:c", ":")
    ['a:b', 'c']
    >>> split_escaped(r"lowerdir=a\:b,ro", ",", unescape=False)
    ['lowerdir=a\\:b', 'ro']
    """
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            cur.append(nxt if unescape or nxt == sep else ch + nxt)
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def parse(values: Iterable[str]) -> dict[str, str | bool]:
    r"""``["lowerdir=a:b,upperdir=u", "ro"]`` -> ``{"lowerdir": "a:b", "upperdir": "u", "ro": True}``.

    Commas separate options unless escaped (``\,``); later values win.
    """
    out: dict[str, str | bool] = {}
    for value in values:
        for part in split_escaped(value, ",", unescape=False):
            if part:
                k, eq, v = part.partition("=")
                out[k] = v if eq else True
    return out


def to_list(options: Mapping[str, Any]) -> list[str]:
    """``{"ro": True, "attr_timeout": 0, "kernel_cache": False}`` -> ``["ro", "attr_timeout=0"]``."""
    out = []
    for k, v in options.items():
        if v is True:
            out.append(k)
        elif v is False or v is None:
            continue
        else:  # libfuse's option parser takes \, for a comma in a value
            out.append(f"{k}=" + str(v).replace("\\", "\\\\").replace(",", "\\,"))
    return out


__all__ = ["parse", "split_escaped", "to_list"]
