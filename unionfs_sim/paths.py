"""Pure path algebra for layer keys and archive entries: normalise, split, join, confine.

Inside the model a path is a *key*: a ``/``-separated string relative to the root, with
no leading or trailing slash, no empty, ``.`` or ``..`` components; the root is ``""``.
Nothing here touches a filesystem or follows a symlink.
"""

from __future__ import annotations

import os

from .errors import FormatError, UnsafePath

NAME_MAX = 255
"""Longest name in bytes that Linux filesystems accept (ENAMETOOLONG beyond)."""
PATH_MAX = 4096
"""Linux PATH_MAX, counting the terminating NUL: a path of 4096 bytes is too long."""


def to_str(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """Return ``path`` as ``str``, decoding bytes the way ``os`` does."""
    p = os.fspath(path)
    return os.fsdecode(p) if isinstance(p, bytes) else p


def key(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """Normalise an archive or layer path into a key, refusing anything that escapes.

    Leading ``/`` and ``./`` are dropped (OCI layers are rooted at ``/`` either way),
    repeated slashes collapse, and ``..`` raises :class:`~unionfs_sim.errors.UnsafePath`.

    >>> key("/etc//hostname")
    'etc/hostname'
    >>> key("./usr/lib/")
    'usr/lib'
    >>> key("/")
    ''
    """
    return "/".join(components(to_str(path)))


def components(s: str, what: str = "path") -> list[str]:
    """The names of an archive or layer path: ``""``, ``.`` dropped; ``..``, NUL and names
    over 255 bytes refused (:class:`~unionfs_sim.errors.UnsafePath` / ``FormatError``).

    >>> components("./a//b/")
    ['a', 'b']
    """
    out = []
    for part in s.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise UnsafePath(f"{what} {s!r} climbs out of its root with '..'")
        if "\x00" in part:
            raise UnsafePath(f"{what} {s!r} contains a NUL byte")
        if len(part) > NAME_MAX // 4 and len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise FormatError(f"{what} {s!r} has a name longer than {NAME_MAX} bytes (no Linux filesystem holds it)")
        out.append(part)
    return out


def split(k: str) -> tuple[str, str]:
    """Split a key into (parent key, name).

    >>> split("etc/hostname")
    ('etc', 'hostname')
    >>> split("etc")
    ('', 'etc')
    """
    i = k.rfind("/")
    if i < 0:
        return "", k
    return k[:i], k[i + 1 :]


def join(parent: str, name: str) -> str:
    """Join a parent key and a name.

    >>> join("", "etc"), join("etc", "hostname")
    ('etc', 'etc/hostname')
    """
    return f"{parent}/{name}" if parent else name


def parents(k: str) -> list[str]:
    """Every ancestor key of ``k``, from the root's child down (the root itself excluded).

    >>> parents("a/b/c")
    ['a', 'a/b']
    """
    out = []
    i = k.find("/")
    while i >= 0:
        out.append(k[:i])
        i = k.find("/", i + 1)
    return out


def is_within(k: str, ancestor: str) -> bool:
    """True if key ``k`` is ``ancestor`` or lies below it.

    >>> is_within("a/b", "a"), is_within("ab", "a"), is_within("a", "")
    (True, False, True)
    """
    return ancestor == "" or k == ancestor or k.startswith(ancestor + "/")


def absolute(k: str) -> str:
    """The key as an absolute path, as users see it.

    >>> absolute("etc/hostname"), absolute("")
    ('/etc/hostname', '/')
    """
    return "/" + k


def confine(target: str, base: str = "") -> str:
    """Resolve a link ``target`` found in directory key ``base`` lexically, within the root.

    Used for hard-link names and archive paths, which are never followed through
    symlinks: a ``..`` that would climb above the root is an error, not clamped.

    >>> confine("../lib/x", "usr/bin")
    'usr/lib/x'
    >>> confine("/etc/passwd", "usr/bin")
    'etc/passwd'
    """
    parts = [] if target.startswith("/") else [p for p in base.split("/") if p]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafePath(f"{target!r} (from {absolute(base)!r}) climbs out of the root")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)
