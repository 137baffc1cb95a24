"""Immutable entries of a layer: File, Dir, Symlink, Fifo, Device, Socket and WHITEOUT.

These are the values a :class:`~unionfs_sim.layer.Layer` maps paths to. They are frozen
attrs classes: equal content compares equal, and a layer shares one object between the
names of a hard-link group. :class:`Hardlink` only appears in input to
``Layer.from_dict``; it is resolved to the shared object there.
"""

from __future__ import annotations

import stat as _stat
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Union

import attrs


class FrozenDict(Mapping[str, bytes]):
    """A hashable, read-only mapping of xattr names to values."""

    __slots__ = ("_d", "_h")

    def __init__(self, items: Mapping[str, bytes] | None = None) -> None:
        self._d: dict[str, bytes] = dict(sorted((items or {}).items()))
        self._h: int | None = None

    def __getitem__(self, k: str) -> bytes:
        return self._d[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(tuple(self._d.items()))
        return self._h

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._d == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{k!r}: {v!r}' for k, v in self._d.items())}}}"


EMPTY_XATTRS = FrozenDict()


def _xattrs(value: Mapping[str, bytes | str] | None) -> FrozenDict:
    if not value:
        return EMPTY_XATTRS
    if isinstance(value, FrozenDict):
        return value
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"xattr name must be a non-empty str, got {k!r}")
        out[k] = v.encode() if isinstance(v, str) else bytes(v)
    return FrozenDict(out)


def _perm(mode: int) -> int:
    if not isinstance(mode, int) or mode < 0:
        raise ValueError(f"mode must be a non-negative int, got {mode!r}")
    # File-type bits (S_IFREG ...) are accepted and dropped: the class says the type.
    return _stat.S_IMODE(mode)


def _id(value: int) -> int:
    if not isinstance(value, int) or value < 0 or value > 0xFFFFFFFF:
        raise ValueError(f"uid/gid must be an int in 0..2**32-1, got {value!r}")
    return value


def _bytes(value: bytes | bytearray | memoryview) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"file data must be bytes, got {type(value).__name__}")


@attrs.frozen(eq=False)
class _Base:
    """Metadata every node has; subclasses set the default mode and add their content."""

    mode: int = attrs.field(default=0o644, converter=_perm, kw_only=True)
    uid: int = attrs.field(default=0, converter=_id, kw_only=True)
    gid: int = attrs.field(default=0, converter=_id, kw_only=True)
    mtime_ns: int = attrs.field(default=0, kw_only=True)
    xattrs: FrozenDict = attrs.field(default=EMPTY_XATTRS, converter=_xattrs, kw_only=True)

    kind: ClassVar[str]
    ifmt: ClassVar[int]

    @property
    def st_mode(self) -> int:
        """The full st_mode (type bits and permission bits), as os.stat reports it."""
        return self.ifmt | self.mode

    @property
    def mtime(self) -> float:
        """Modification time in seconds since the epoch."""
        return self.mtime_ns / 1e9

    def same(self, other: object) -> bool:
        """True if ``other`` is the same kind of node with equal content and metadata."""
        return type(other) is type(self) and _fields(self) == _fields(other)


@attrs.frozen(eq=False)
class File(_Base):
    """A regular file: its bytes and metadata (mode includes setuid/setgid/sticky bits).

    Compared by identity: two names holding the same File object are one hard-link group.
    """

    data: bytes = attrs.field(default=b"", converter=_bytes)
    kind: ClassVar[str] = "f"
    ifmt: ClassVar[int] = _stat.S_IFREG

    @property
    def size(self) -> int:
        """Length of the content in bytes."""
        return len(self.data)



@attrs.frozen(eq=False)
class Dir(_Base):
    """A directory entry of a layer. ``opaque`` hides the same directory in lower layers.

    ``redirect`` (overlayfs ``redirect_dir``) is the key of the lower directory whose
    contents this one merges with, set when a merged directory was renamed.
    """

    mode: int = attrs.field(default=0o755, converter=_perm, kw_only=True)
    opaque: bool = attrs.field(default=False, kw_only=True)
    redirect: str | None = attrs.field(default=None, kw_only=True)
    kind: ClassVar[str] = "d"
    ifmt: ClassVar[int] = _stat.S_IFDIR
    size: ClassVar[int] = 0



@attrs.frozen(eq=False)
class Symlink(_Base):
    """A symbolic link to ``target`` (any string; it is not checked or resolved here)."""

    target: str = attrs.field()
    mode: int = attrs.field(default=0o777, converter=_perm, kw_only=True)
    kind: ClassVar[str] = "l"
    ifmt: ClassVar[int] = _stat.S_IFLNK

    @target.validator
    def _check(self, _a: object, value: str) -> None:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise ValueError(f"symlink target must be a non-empty str without NUL, got {value!r}")

    @property
    def size(self) -> int:
        """Length of the target in bytes, as lstat reports it."""
        return len(self.target.encode("utf-8", "surrogateescape"))



@attrs.frozen(eq=False)
class Fifo(_Base):
    """A named pipe."""

    kind: ClassVar[str] = "p"
    ifmt: ClassVar[int] = _stat.S_IFIFO
    size: ClassVar[int] = 0



@attrs.frozen(eq=False)
class Socket(_Base):
    """A UNIX socket node (what ``mknod(S_IFSOCK)`` or ``bind`` leaves behind)."""

    mode: int = attrs.field(default=0o755, converter=_perm, kw_only=True)
    kind: ClassVar[str] = "s"
    ifmt: ClassVar[int] = _stat.S_IFSOCK
    size: ClassVar[int] = 0



def _devkind(value: str) -> str:
    if value not in ("c", "b"):
        raise ValueError(f"device kind must be 'c' or 'b', got {value!r}")
    return value


@attrs.frozen(eq=False)
class Device(_Base):
    """A character (``"c"``) or block (``"b"``) device node with its major and minor."""

    dev: str = attrs.field(converter=_devkind)
    major: int = attrs.field(default=0)
    minor: int = attrs.field(default=0)
    mode: int = attrs.field(default=0o666, converter=_perm, kw_only=True)
    size: ClassVar[int] = 0
    ifmt: ClassVar[int] = _stat.S_IFCHR

    @property
    def kind(self) -> str:  # type: ignore[override]
        """``"c"`` or ``"b"``."""
        return self.dev

    @property
    def st_mode(self) -> int:
        """The full st_mode for this device kind."""
        return (_stat.S_IFCHR if self.dev == "c" else _stat.S_IFBLK) | self.mode

    @property
    def rdev(self) -> int:
        """The device number as st_rdev encodes it."""
        import os

        return os.makedev(self.major, self.minor)



@attrs.frozen
class Hardlink:
    """Input to ``Layer.from_dict`` only: another name for the entry at ``target`` (same layer)."""

    target: str


@attrs.frozen
class Whiteout:
    """Deletes the same path in the layers below (OCI ``.wh.NAME``, kernel 0/0 char device)."""

    kind: ClassVar[str] = "w"

    def __repr__(self) -> str:
        return "WHITEOUT"


WHITEOUT = Whiteout()
"""The one whiteout value: ``{"etc/motd": WHITEOUT}`` deletes etc/motd below."""

Node = Union[File, Dir, Symlink, Fifo, Socket, Device]
"""A real (non-whiteout) entry."""
Entry = Union[File, Dir, Symlink, Fifo, Socket, Device, Whiteout]
"""Anything a layer maps a path to."""


def _fields(n: Any) -> tuple[Any, ...]:
    return attrs.astuple(n, recurse=False)
