"""Immutable entries of a layer: File, Dir, Symlink, Fifo, Device, Socket and WHITEOUT.

These are the values a :class:`~unionfs_sim.layer.Layer` maps paths to. They are frozen
attrs classes: equal content compares equal, and a layer shares one object between the
names of a hard-link group. :class:`Hardlink` only appears in input to
``Layer.from_dict``; it is resolved to the shared object there.
"""

from __future__ import annotations

import errno
import io
import os
import stat as _stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import attrs

from .linux import reachable


class FrozenDict(Mapping[str, bytes]):
    """A hashable, read-only mapping of xattr names to values."""

    __slots__ = ("_loaded", "_h", "_load")

    def __init__(self, items: Mapping[str, bytes] | None = None) -> None:
        self._loaded: dict[str, bytes] | None = dict(sorted((items or {}).items()))
        self._h: int | None = None
        self._load: Callable[[], Mapping[str, bytes]] | None = None

    @classmethod
    def lazy(cls, load: Callable[[], Mapping[str, bytes]]) -> FrozenDict:
        """A FrozenDict whose items ``load()`` gives on first use (a lazy lower file's
        xattrs: listing them at mount would cost a syscall per file)."""
        fd = cls.__new__(cls)
        fd._loaded, fd._h, fd._load = None, None, load
        return fd

    @property
    def _d(self) -> dict[str, bytes]:
        d = self._loaded
        if d is None:
            assert self._load is not None
            d = self._loaded = dict(sorted(self._load().items()))
            self._load = None
        return d

    def __getitem__(self, k: str) -> bytes:
        return self._d[k]

    def __contains__(self, k: object) -> bool:
        return k in self._d  # Mapping's would raise and catch a KeyError per miss

    def get(self, k: str, default: Any = None) -> Any:
        return self._d.get(k, default)

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
    if isinstance(value, FrozenDict):
        return value  # before the test for empty, which would load a lazy one
    if not value:
        return EMPTY_XATTRS
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


class _Fds:
    """A few open read-only descriptors of lower files, least recently used closed first.

    Shared by every :class:`DiskBytes`: a mount serving 20,000 lower files must not hold
    20,000 descriptors, yet a sequential read of one file should not reopen it per chunk.
    """

    MAX = 32

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fds: OrderedDict[tuple[str, int, int], int] = OrderedDict()

    def pread(self, blob: DiskBytes, n: int, offset: int) -> bytes:
        # pread under the lock: an evicting thread must not close an fd in use (the
        # GIL serialises the Python side anyway; the read itself is one syscall).
        ident = (blob.path, blob.dev, blob.ino)
        with self.lock:
            fd = self.fds.get(ident)
            if fd is None:
                fd = blob._open()
                self.fds[ident] = fd
                if len(self.fds) > self.MAX:
                    os.close(self.fds.popitem(last=False)[1])
            else:
                self.fds.move_to_end(ident)
            return os.pread(fd, n, offset)

    def clear(self) -> None:
        """Close every cached descriptor."""
        with self.lock:
            while self.fds:
                os.close(self.fds.popitem()[1])


_FDS = _Fds()


def release_disk_files() -> None:
    """Close the few descriptors :class:`DiskBytes` keep open for reading (they reopen on the
    next read): for a caller about to unmount the filesystem lower files live on."""
    _FDS.clear()
_READ = 1 << 20


class DiskBytes:
    """The bytes of a regular file on disk, read only when needed (a lazy lower file).

    What ``Layer.from_directory(..., lazy=True)`` (the fuse-overlayfs drop-in's lowers) puts
    in :attr:`File.data` instead of ``bytes``: it has the file's length and reads with
    ``pread(2)`` on slicing, so a mount costs neither the time nor the memory of its lower
    data, and copy-up shares it as it shares ``bytes``. It compares equal to bytes of the
    same content (and hashes as they do), so layer digests and comparisons are unchanged.

    The length is the one stat gave when the directory was read; the bytes are read live
    from that inode, as fuse-overlayfs and the kernel read their lowers (the kernel calls
    changing a lower under a mount undefined, overlayfs.rst "Changes to underlying
    filesystems"). So a change in place that keeps the length shows; a file made shorter
    fails the read with EIO naming the path; a file removed, or replaced by another inode,
    fails with EIO when next opened (a descriptor still open in the small cache of
    :class:`_Fds` keeps reading the inode that was read as the layer). Never zeros or
    another file's data.
    """

    __slots__ = ("path", "size", "dev", "ino", "__weakref__")

    def __init__(self, path: str, size: int, dev: int, ino: int) -> None:
        self.path, self.size, self.dev, self.ino = path, size, dev, ino

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> DiskBytes:
        """The content of the regular file at ``path`` as it is now (not following a symlink)."""
        full = os.path.abspath(os.fspath(path))
        st = os.lstat(full)
        if not _stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", full)
        return cls(full, st.st_size, st.st_dev, st.st_ino)

    def _changed(self, why: str) -> OSError:
        return OSError(errno.EIO, f"lower file {why} since it was read as a layer", self.path)

    def open_fd(self) -> int:
        """A new read-only descriptor of the file (the caller closes it); EIO if it was
        removed or replaced since it was read as a layer."""
        return self._open()

    def _open(self) -> int:
        try:
            with reachable(self.path) as where:
                fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise self._changed("was removed") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise self._changed("was replaced by a symlink") from None
            raise
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.dev, self.ino) or not _stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._changed("was replaced")
        return fd

    def __len__(self) -> int:
        return self.size

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes from ``offset`` (fewer only past the end); EIO if the file got shorter."""
        want = max(0, min(n, self.size - offset))
        if want == 0:
            return b""
        b = _FDS.pread(self, want, offset)
        if len(b) < want:
            out = bytearray(b)
            while len(out) < want:  # a short read is allowed; only EOF means shorter
                more = _FDS.pread(self, want - len(out), offset + len(out))
                if not more:
                    raise self._changed("got shorter")
                out += more
            return bytes(out)
        return b

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice):
            raise TypeError("DiskBytes supports slices only")
        start, stop, step = index.indices(self.size)
        if step != 1:
            raise ValueError("DiskBytes slices must have step 1")
        return self.read(start, stop - start)

    def chunks(self, size: int = _READ) -> Iterator[bytes]:
        """The content in pieces of ``size`` bytes (bounded memory)."""
        for off in range(0, self.size, size):
            yield self.read(off, size)

    def reader(self) -> io.BufferedReader:
        """A binary file object reading the content from the start (for tarfile, copyfileobj)."""
        return io.BufferedReader(_DiskReader(self), _READ)

    def __bytes__(self) -> bytes:
        return self.read(0, self.size)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DiskBytes):
            if (other.dev, other.ino, other.size) == (self.dev, self.ino, self.size):
                return True
            if other.size != self.size:
                return False
            return all(a == b for a, b in zip(self.chunks(), other.chunks(), strict=True))
        if isinstance(other, (bytes, bytearray, memoryview)):
            mv = memoryview(other).cast("B")
            if len(mv) != self.size:
                return False
            return all(mv[o : o + len(b)] == b for o, b in zip(range(0, self.size, _READ), self.chunks(), strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(bytes(self))  # as the equal bytes hash; reads the file (rarely needed)

    def __repr__(self) -> str:
        return f"DiskBytes({self.path!r}, size={self.size})"


class _DiskReader(io.RawIOBase):
    """Sequential raw reads of a :class:`DiskBytes`."""

    def __init__(self, blob: DiskBytes) -> None:
        self.blob, self.pos = blob, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.blob.read(self.pos, len(b))
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


Content = bytes | DiskBytes
"""What :attr:`File.data` holds: bytes in memory, or a lazily read file on disk."""


def _bytes(value: bytes | bytearray | memoryview | DiskBytes) -> Content:
    if isinstance(value, (bytes, DiskBytes)):
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

    ``data`` is ``bytes``, or a :class:`DiskBytes` read from disk when needed.

    Compared by identity: two names holding the same File object are one hard-link group.
    """

    data: Content = attrs.field(default=b"", converter=_bytes)
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

Node = File | Dir | Symlink | Fifo | Socket | Device
"""A real (non-whiteout) entry."""
Entry = File | Dir | Symlink | Fifo | Socket | Device | Whiteout
"""Anything a layer maps a path to."""


def _fields(n: Any) -> tuple[Any, ...]:
    return attrs.astuple(n, recurse=False)
