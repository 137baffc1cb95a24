"""KernelOverlay: the Linux kernel's overlayfs as an oracle for the model.

``KernelOverlay(layers)`` writes each layer to its own directory in the overlayfs on-disk
format, mounts a real overlay (``mount -t overlay``) over them with a fresh upperdir, and
gives an os-style facade, ``k.fs``, with the same API as the model's ``fs`` (DESIGN.md):
paths are absolute paths inside the merged view (``"/etc/hostname"``). On exit the
upperdir is read back into ``k.upper``, a :class:`~unionfs_sim.layer.Layer`.

Every ``k.fs`` call runs in a long-lived worker process forked for this mount that did
``chroot(mountpoint)``: absolute symlinks and ``..`` inside the tree then resolve against
the merged root, never the host's, exactly as they would for a container. Results come
back as plain data; an :class:`OSError` comes back with the kernel's errno, strerror and
the (merged) path, and is re-raised as the matching builtin subclass.

Needs root (CAP_SYS_ADMIN) and overlayfs; otherwise :class:`KernelUnavailable` is raised
with the reason, so tests can ``pytest.skip(str(e))``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import shutil
import socket
import stat as _stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from types import TracebackType
from typing import IO, Any, Self, cast

from ..codec import overlaydir
from ..errors import KernelUnavailable
from ..fs import walk_scandir
from ..layer import Layer
from ..linux import RENAME_EXCHANGE, RENAME_NOREPLACE, libc, mounts_at, renameat2, unmount
from ..nodes import Dir, Entry
from ..options import OverlayOptions
from ..paths import is_within, parents
from .compare import OsView, snapshot

PathArg = str | os.PathLike[str]




# --- mounting ------------------------------------------------------------------------

def mounted_at(path: PathArg) -> bool:
    """True if something is mounted exactly at ``path`` (per /proc/self/mountinfo)."""
    return bool(mounts_at(os.path.realpath(os.fspath(path))))


def _umount(path: str) -> None:
    """Unmount ``path``; if it stays busy, detach it lazily (``umount -l``)."""
    for attempt in range(5):
        err = unmount(path, lazy=False)
        if err == 0 or (err == errno.EINVAL and not mounted_at(path)):
            return
        if err != errno.EBUSY:
            raise OSError(err, f"umount failed: {os.strerror(err)}", path)
        time.sleep(0.02 * (attempt + 1))
    err = unmount(path, lazy=True)
    if err != 0:
        raise OSError(err, f"lazy umount failed: {os.strerror(err)}", path)


# --- the worker (runs chrooted in the mount) ------------------------------------------


_Row = tuple[str, int, "os.stat_result | OSError", "os.stat_result | OSError"]


def _scandir(path: str) -> list[_Row]:
    out: list[_Row] = []
    with os.scandir(path) as it:
        for e in it:
            lst: os.stat_result | OSError
            st: os.stat_result | OSError
            try:
                lst = e.stat(follow_symlinks=False)
            except OSError as err:  # a whiteout readdir lists but lookup refuses (Lower.strays)
                out.append((e.name, e.inode(), err, err))
                continue
            try:
                st = e.stat(follow_symlinks=True) if _stat.S_ISLNK(lst.st_mode) else lst
            except OSError as err:
                st = err
            out.append((e.name, e.inode(), lst, st))
    return out


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_bytes(path: str, data: bytes) -> int:
    with open(path, "wb") as f:
        return f.write(data)


class _Worker:
    """Executes ``os`` calls inside the chroot; keeps the fds of open handles."""

    def __init__(self) -> None:
        self.fds: dict[int, int] = {}
        self.next = 1
        simple: dict[str, Callable[..., Any]] = {
            name: getattr(os, name)
            for name in (
                "stat",
                "lstat",
                "listdir",
                "mkdir",
                "makedirs",
                "rmdir",
                "unlink",
                "remove",
                "rename",
                "replace",
                "symlink",
                "readlink",
                "link",
                "chmod",
                "chown",
                "lchown",
                "utime",
                "truncate",
                "getxattr",
                "setxattr",
                "listxattr",
                "removexattr",
                "mknod",
                "mkfifo",
                "access",
                "statvfs",
            )
        }
        simple.update(
            exists=os.path.exists,
            lexists=os.path.lexists,
            isdir=os.path.isdir,
            isfile=os.path.isfile,
            islink=os.path.islink,
            scandir=_scandir,
            read_bytes=_read_bytes,
            write_bytes=_write_bytes,
            h_open=self.h_open,
            h_read=self.h_read,
            h_readall=self.h_readall,
            h_write=self.h_write,
            h_seek=self.h_seek,
            h_truncate=self.h_truncate,
            h_close=self.h_close,
            h_fstat=self.h_fstat,
            h_fsync=self.h_fsync,
            renameat2=renameat2,
        )
        simple["snapshot"] = lambda top="/": snapshot(OsView(), top)
        self.ops = simple

    def h_open(self, path: str, flags: int, mode: int, refuse_dir: bool, seek_end: bool) -> tuple[int, bool]:
        fd = os.open(path, flags | os.O_CLOEXEC, mode)
        try:
            if refuse_dir and _stat.S_ISDIR(os.fstat(fd).st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            try:
                os.lseek(fd, 0, os.SEEK_END if seek_end else os.SEEK_CUR)
                seekable = True
            except OSError:
                seekable = False
        except BaseException:
            os.close(fd)
            raise
        h = self.next
        self.next += 1
        self.fds[h] = fd
        return h, seekable

    def fd(self, h: int) -> int:
        try:
            return self.fds[h]
        except KeyError:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None

    def h_read(self, h: int, n: int) -> bytes:
        return os.read(self.fd(h), n)

    def h_readall(self, h: int) -> bytes:
        chunks: list[bytes] = []
        while True:
            b = os.read(self.fd(h), 1 << 20)
            if not b:
                return b"".join(chunks)
            chunks.append(b)

    def h_write(self, h: int, data: bytes) -> int:
        return os.write(self.fd(h), data)

    def h_seek(self, h: int, pos: int, whence: int) -> int:
        return os.lseek(self.fd(h), pos, whence)

    def h_truncate(self, h: int, size: int) -> None:
        os.ftruncate(self.fd(h), size)

    def h_fstat(self, h: int) -> os.stat_result:
        return os.fstat(self.fd(h))

    def h_fsync(self, h: int) -> None:
        os.fsync(self.fd(h))

    def h_close(self, h: int) -> None:
        fd = self.fds.pop(h, None)
        if fd is not None:
            os.close(fd)

    def serve(self, conn: Connection) -> None:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                return
            if msg is None:
                conn.send(("ok", None))
                return
            op, args, kwargs, umask = msg
            try:
                os.umask(umask)
                result: tuple[str, Any] = ("ok", self.ops[op](*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
                result = ("err", e)
            try:
                conn.send(result)
            except Exception as e:  # noqa: BLE001 - an unpicklable result or error
                conn.send(("err", RuntimeError(f"kernel worker: cannot return result of {op}: {e!r}")))


Caller = tuple[int, int, tuple[int, ...]]
"""(uid, gid, supplementary groups) a worker acts as."""


def _chroot_and_serve(conn: Connection, root: str, caller: Caller | None = None) -> None:
    """In a worker: chroot into ``root``, drop to ``caller``'s credentials if given
    (setgroups, setresgid, setresuid: no capability is left), say so, serve until EOF."""
    try:
        os.chroot(root)
        os.chdir("/")
        if caller is not None:
            uid, gid, groups = caller
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
    except OSError as e:
        conn.send(("chrootfail", e.errno))
        return
    conn.send(("ready", 0))
    _Worker().serve(conn)


def _mount_and_serve(conn: Connection, base: str, mnt: str, options: str) -> None:
    """Mount the overlay (relative layer paths, from ``base``), chroot into it, serve."""
    os.chdir(base)
    if libc().mount(b"overlay", os.fsencode(mnt), b"overlay", 0, os.fsencode(options)) != 0:
        conn.send(("mountfail", ctypes.get_errno()))
        return
    _chroot_and_serve(conn, mnt)


def _fork_worker(main: Callable[[Connection], None]) -> tuple[int, Connection, str, int]:
    """Fork a worker running ``main(conn)``; ``(pid, conn, status, errno)`` once it reports.

    The worker keeps no descriptor of the parent's but its end of the socket (not a
    FUSE server's /dev/fuse, which would keep a mount alive), and never returns into
    the parent's code.
    """
    parent_sock, child_sock = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            parent_sock.close()
            keep = child_sock.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, 65536)
            main(Connection(child_sock.detach()))
        except BaseException:  # noqa: BLE001 - never return into the parent's code
            code = 1
        finally:
            os._exit(code)
    child_sock.close()
    conn = Connection(parent_sock.detach())
    try:
        status, err = conn.recv()
    except EOFError:
        status, err = "died", errno.EIO
    return pid, conn, status, err


def _reap(pid: int, timeout: float = 5.0) -> None:
    """Wait for a worker to exit (SIGKILL after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return
        time.sleep(0.005)


def _start_chrooted(path: str, caller: Caller | None) -> KernelFS:
    pid, conn, status, err = _fork_worker(lambda c: _chroot_and_serve(c, path, caller))
    if status != "ready":
        conn.close()
        _reap(pid)
        who = "" if caller is None else f" as {caller[0]}:{caller[1]}"
        raise OSError(err, f"chroot into {path}{who} failed: {os.strerror(err)}")
    return KernelFS(conn, root=path, pid=pid)


@contextlib.contextmanager
def chrooted(root: PathArg, *, uid: int | None = None, gid: int | None = None,
             groups: Sequence[int] = ()) -> Iterator[KernelFS]:
    """The os-style facade on any directory tree, for the conformance suite and machines.

    Calls run in a worker process chrooted into ``root``, so absolute symlinks and
    ``..`` resolve inside it as they do in a container: point it at a FUSE mount, an
    unpacked rootfs or your own filesystem and compare it with the model. With ``uid``
    (and ``gid``, ``groups``) the worker drops to those credentials after the chroot,
    as a container process started with ``--user`` does. Needs root (chroot).
    """
    caller = None if uid is None else (uid, uid if gid is None else gid, tuple(groups))
    fs = _start_chrooted(os.fspath(root), caller)
    try:
        yield fs
    finally:
        fs._close()


# --- the facade ----------------------------------------------------------------------


class KernelDirEntry:
    """What ``k.fs.scandir`` yields: the os.DirEntry API over data fetched at scan time."""

    __slots__ = ("_inode", "_lstat", "_stat", "name", "path")

    def __init__(self, name: str, path: str, inode: int, lstat: os.stat_result | OSError,
                 st: os.stat_result | OSError) -> None:
        self.name = name
        self.path = path
        self._inode = inode
        self._lstat = lstat
        self._stat = st

    def inode(self) -> int:
        """The inode number readdir reported (d_ino)."""
        return self._inode

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        """stat (or lstat) result taken during the scan; a dangling link raises its error, and
        so does a whiteout the directory lists but cannot look up."""
        if not follow_symlinks:
            if isinstance(self._lstat, OSError):
                raise self._lstat
            return self._lstat
        if isinstance(self._stat, OSError):
            raise self._stat
        return self._stat

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        """True for a directory (or a link to one, when following)."""
        st = self._lstat if not follow_symlinks else self._stat
        return not isinstance(st, OSError) and _stat.S_ISDIR(st.st_mode)

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        """True for a regular file (or a link to one, when following)."""
        st = self._lstat if not follow_symlinks else self._stat
        return not isinstance(st, OSError) and _stat.S_ISREG(st.st_mode)

    def is_symlink(self) -> bool:
        """True for a symbolic link."""
        return not isinstance(self._lstat, OSError) and _stat.S_ISLNK(self._lstat.st_mode)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"<KernelDirEntry {self.name!r}>"


class _ScandirIterator:
    """A list iterator that also works as a context manager, like os.scandir's."""

    def __init__(self, entries: list[KernelDirEntry]) -> None:
        self._it = iter(entries)

    def __iter__(self) -> Iterator[KernelDirEntry]:
        return self._it

    def __next__(self) -> KernelDirEntry:
        return next(self._it)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the remaining entries."""
        self._it = iter(())


class KernelFile(io.RawIOBase):
    """An unbuffered binary file open in the worker (``os_open`` result, ``open``'s raw layer)."""

    def __init__(
        self, fs: KernelFS, handle: int, name: str, mode: str, readable: bool, writable: bool, seekable: bool
    ) -> None:
        super().__init__()
        self._fs = fs
        self._h = handle
        self.name = name
        self.mode = mode
        self._readable = readable
        self._writable = writable
        self._seekable = seekable

    def _call(self, op: str, *args: Any) -> Any:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        return self._fs._call(op, self._h, *args)

    def readable(self) -> bool:
        """True if opened for reading."""
        return self._readable

    def writable(self) -> bool:
        """True if opened for writing."""
        return self._writable

    def seekable(self) -> bool:
        """True if the kernel allows lseek on it (not a FIFO)."""
        return self._seekable

    def fileno(self) -> int:
        """Not available: the descriptor lives in the worker process."""
        raise io.UnsupportedOperation("the file descriptor lives in the kernel-overlay worker process")

    def readinto(self, b: Any) -> int:
        """Read up to len(b) bytes with one read(2)."""
        data = self._call("h_read", len(b))
        n = len(data)
        memoryview(b).cast("B")[:n] = data
        return n

    def readall(self) -> bytes:
        """Read to EOF."""
        return cast("bytes", self._call("h_readall"))

    def write(self, b: Any) -> int:
        """One write(2); returns the number of bytes written."""
        return cast("int", self._call("h_write", bytes(b)))

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        """lseek(2)."""
        return cast("int", self._call("h_seek", pos, whence))

    def tell(self) -> int:
        """The current offset."""
        return cast("int", self._call("h_seek", 0, os.SEEK_CUR))

    def truncate(self, size: int | None = None) -> int:
        """ftruncate(2) to ``size`` (default: the current offset); the offset stays."""
        if size is None:
            size = self.tell()
        self._call("h_truncate", size)
        return size

    def fstat(self) -> os.stat_result:
        """fstat(2) of the open file."""
        return cast("os.stat_result", self._call("h_fstat"))

    def fsync(self) -> None:
        """fsync(2)."""
        self._call("h_fsync")

    def close(self) -> None:
        """Close the descriptor in the worker (a no-op once closed or the mount is gone)."""
        if not self.closed:
            try:
                if self._fs._alive():
                    self._fs._call("h_close", self._h)
            finally:
                super().close()

    def __repr__(self) -> str:
        return f"<KernelFile name={self.name!r} mode={self.mode!r}>"


def _open_flags(mode: str) -> tuple[int, bool, bool, bool, str]:
    """Builtin open's mode string -> (flags, readable, writable, append, raw mode)."""
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError(f"invalid mode: {mode!r}")
    creating, reading, writing, appending = "x" in modes, "r" in modes, "w" in modes, "a" in modes
    if creating + reading + writing + appending != 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if "b" in modes and "t" in modes:
        raise ValueError("can't have text and binary mode at once")
    plus = "+" in modes
    if creating:
        flags, raw = os.O_EXCL | os.O_CREAT, "xb"
    elif reading:
        flags, raw = 0, "rb"
    elif writing:
        flags, raw = os.O_CREAT | os.O_TRUNC, "wb"
    else:
        flags, raw = os.O_APPEND | os.O_CREAT, "ab"
    if plus:
        flags |= os.O_RDWR
        raw = raw.replace("b", "+b") if raw != "rb" else "rb+"
    elif reading:
        flags |= os.O_RDONLY
    else:
        flags |= os.O_WRONLY
    return flags, reading or plus, not reading or plus, appending, raw


class KernelFS:
    """The os-style API of DESIGN.md, executed by ``os`` inside the real overlay mount."""

    def __init__(self, conn: Connection, *, root: str | None = None, pid: int | None = None) -> None:
        self._conn: Connection | None = conn
        self._lock = threading.RLock()
        self._files: list[weakref.ref[Any]] = []
        self._root = root
        self._pid = pid  # the worker, when this facade owns it
        self._users: list[KernelFS] = []
        self.umask: int = 0o022
        """Applied to new files and dirs, as a process's umask is."""

    def as_user(self, uid: int, gid: int, groups: Sequence[int] = ()) -> KernelFS:
        """A facade on the same tree whose calls run in a worker that chrooted into it and
        then did ``setgroups(groups)``, ``setresgid(gid)`` and ``setresuid(uid)``: the
        kernel checks every call as that process's. Closed with this facade."""
        if self._root is None:
            raise ValueError("this KernelFS does not know its root")
        if self._conn is None:
            raise ValueError("the KernelOverlay is closed")
        other = _start_chrooted(self._root, (uid, gid, tuple(groups)))
        self._users.append(other)
        return other

    # --- plumbing ----------------------------------------------------------------------

    def _alive(self) -> bool:
        return self._conn is not None

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._conn is None:
                raise ValueError("the KernelOverlay is closed")
            try:
                self._conn.send((op, args, kwargs, self.umask))
                status, value = self._conn.recv()
            except (EOFError, OSError) as e:
                self._conn = None
                raise RuntimeError(f"the kernel-overlay worker process died during {op}") from e
        if status == "err":
            raise value
        return value

    def _close(self) -> None:
        """Close every file still open, then stop the worker (and those of :meth:`as_user`)."""
        for u in self._users:
            u._close()
        self._users.clear()
        for ref in reversed(self._files):
            f = ref()
            if f is not None:
                with contextlib.suppress(Exception):  # best effort at teardown
                    f.close()
        self._files.clear()
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.send(None)
                    conn.recv()
                except (EOFError, OSError):
                    pass
                conn.close()
        if self._pid is not None:
            pid, self._pid = self._pid, None
            _reap(pid, 10.0)

    @staticmethod
    def _p(path: PathArg) -> str:
        p = os.fspath(path)
        return os.fsdecode(p) if isinstance(p, bytes) else p

    # --- metadata --------------------------------------------------------------------

    def stat(self, path: PathArg, *, follow_symlinks: bool = True) -> os.stat_result:
        """os.stat."""
        return cast("os.stat_result", self._call("stat", self._p(path), follow_symlinks=follow_symlinks))

    def lstat(self, path: PathArg) -> os.stat_result:
        """os.lstat."""
        return cast("os.stat_result", self._call("lstat", self._p(path)))

    def exists(self, path: PathArg) -> bool:
        """os.path.exists (follows symlinks)."""
        return cast("bool", self._call("exists", self._p(path)))

    def lexists(self, path: PathArg) -> bool:
        """os.path.lexists."""
        return cast("bool", self._call("lexists", self._p(path)))

    def isdir(self, path: PathArg) -> bool:
        """os.path.isdir."""
        return cast("bool", self._call("isdir", self._p(path)))

    def isfile(self, path: PathArg) -> bool:
        """os.path.isfile."""
        return cast("bool", self._call("isfile", self._p(path)))

    def islink(self, path: PathArg) -> bool:
        """os.path.islink."""
        return cast("bool", self._call("islink", self._p(path)))

    def access(self, path: PathArg, mode: int) -> bool:
        """os.access."""
        return cast("bool", self._call("access", self._p(path), mode))

    def statvfs(self, path: PathArg) -> os.statvfs_result:
        """os.statvfs."""
        return cast("os.statvfs_result", self._call("statvfs", self._p(path)))

    def chmod(self, path: PathArg, mode: int, *, follow_symlinks: bool = True) -> None:
        """os.chmod."""
        self._call("chmod", self._p(path), mode, follow_symlinks=follow_symlinks)

    def chown(self, path: PathArg, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """os.chown."""
        self._call("chown", self._p(path), uid, gid, follow_symlinks=follow_symlinks)

    def lchown(self, path: PathArg, uid: int, gid: int) -> None:
        """os.lchown."""
        self._call("lchown", self._p(path), uid, gid)

    def utime(
        self,
        path: PathArg,
        times: tuple[float, float] | None = None,
        *,
        ns: tuple[int, int] | None = None,
        follow_symlinks: bool = True,
    ) -> None:
        """os.utime."""
        kw: dict[str, Any] = {"follow_symlinks": follow_symlinks}
        if ns is not None:
            kw["ns"] = ns
        self._call("utime", self._p(path), times, **kw)

    def truncate(self, path: PathArg, length: int) -> None:
        """os.truncate."""
        self._call("truncate", self._p(path), length)

    def getxattr(self, path: PathArg, attribute: str, *, follow_symlinks: bool = True) -> bytes:
        """os.getxattr."""
        return cast("bytes", self._call("getxattr", self._p(path), attribute, follow_symlinks=follow_symlinks))

    def setxattr(
        self, path: PathArg, attribute: str, value: bytes, flags: int = 0, *, follow_symlinks: bool = True
    ) -> None:
        """os.setxattr."""
        self._call("setxattr", self._p(path), attribute, bytes(value), flags, follow_symlinks=follow_symlinks)

    def listxattr(self, path: PathArg, *, follow_symlinks: bool = True) -> list[str]:
        """os.listxattr."""
        return cast("list[str]", self._call("listxattr", self._p(path), follow_symlinks=follow_symlinks))

    def removexattr(self, path: PathArg, attribute: str, *, follow_symlinks: bool = True) -> None:
        """os.removexattr."""
        self._call("removexattr", self._p(path), attribute, follow_symlinks=follow_symlinks)

    # --- directories -------------------------------------------------------------------

    def listdir(self, path: PathArg = "/") -> list[str]:
        """os.listdir, in the order the kernel's readdir gives."""
        return cast("list[str]", self._call("listdir", self._p(path)))

    def scandir(self, path: PathArg = "/") -> _ScandirIterator:
        """os.scandir; entries carry stat results taken at scan time."""
        p = self._p(path)
        rows = self._call("scandir", p)
        return _ScandirIterator([KernelDirEntry(n, os.path.join(p, n), ino, lst, st) for n, ino, lst, st in rows])

    def walk(
        self,
        top: PathArg = "/",
        topdown: bool = True,
        onerror: Callable[[OSError], None] | None = None,
        followlinks: bool = False,
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        """os.walk over the merged view."""
        return walk_scandir(self.scandir, self._p(top), topdown, onerror, followlinks)

    def mkdir(self, path: PathArg, mode: int = 0o777) -> None:
        """os.mkdir (the umask applies)."""
        self._call("mkdir", self._p(path), mode)

    def makedirs(self, path: PathArg, mode: int = 0o777, exist_ok: bool = False) -> None:
        """os.makedirs (the umask applies)."""
        self._call("makedirs", self._p(path), mode, exist_ok)

    def rmdir(self, path: PathArg) -> None:
        """os.rmdir."""
        self._call("rmdir", self._p(path))

    # --- names -------------------------------------------------------------------------

    def unlink(self, path: PathArg) -> None:
        """os.unlink."""
        self._call("unlink", self._p(path))

    def remove(self, path: PathArg) -> None:
        """os.remove."""
        self._call("remove", self._p(path))

    def rename(self, src: PathArg, dst: PathArg, *, noreplace: bool = False, exchange: bool = False) -> None:
        """os.rename; ``noreplace``/``exchange``: renameat2's RENAME_NOREPLACE/RENAME_EXCHANGE."""
        flags = (RENAME_NOREPLACE if noreplace else 0) | (RENAME_EXCHANGE if exchange else 0)
        if flags:
            self._call("renameat2", self._p(src), self._p(dst), flags)
        else:
            self._call("rename", self._p(src), self._p(dst))

    def replace(self, src: PathArg, dst: PathArg) -> None:
        """os.replace."""
        self._call("replace", self._p(src), self._p(dst))

    def symlink(self, target: str, path: PathArg) -> None:
        """os.symlink: a link at ``path`` pointing to ``target``."""
        self._call("symlink", self._p(target), self._p(path))

    def readlink(self, path: PathArg) -> str:
        """os.readlink."""
        return cast("str", self._call("readlink", self._p(path)))

    def link(self, src: PathArg, dst: PathArg, *, follow_symlinks: bool = True) -> None:
        """os.link: a new name ``dst`` for ``src``."""
        self._call("link", self._p(src), self._p(dst), follow_symlinks=follow_symlinks)

    def mknod(self, path: PathArg, mode: int = 0o600, device: int = 0) -> None:
        """os.mknod (the umask applies)."""
        self._call("mknod", self._p(path), mode, device)

    def mkfifo(self, path: PathArg, mode: int = 0o666) -> None:
        """os.mkfifo (the umask applies)."""
        self._call("mkfifo", self._p(path), mode)

    # --- content -----------------------------------------------------------------------

    def snapshot(self, top: str = "/") -> dict[str, tuple[Any, ...]]:
        """:func:`unionfs_sim.testing.compare.snapshot` of the mount, taken in one call."""
        return cast(dict[str, tuple[Any, ...]], self._call("snapshot", top))

    def read_bytes(self, path: PathArg) -> bytes:
        """The whole content of a file (pathlib's read_bytes)."""
        return cast("bytes", self._call("read_bytes", self._p(path)))

    def write_bytes(self, path: PathArg, data: bytes) -> int:
        """Create or truncate a file and write ``data`` (pathlib's write_bytes)."""
        return cast("int", self._call("write_bytes", self._p(path), bytes(data)))

    def read_text(self, path: PathArg, encoding: str | None = None, errors: str | None = None) -> str:
        """pathlib's read_text (universal newlines)."""
        raw = io.BytesIO(self.read_bytes(path))
        return io.TextIOWrapper(raw, encoding=io.text_encoding(encoding), errors=errors).read()

    def write_text(
        self,
        path: PathArg,
        data: str,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> int:
        """pathlib's write_text; returns the number of characters written."""
        buf = io.BytesIO()
        t = io.TextIOWrapper(buf, encoding=io.text_encoding(encoding), errors=errors, newline=newline)
        n = t.write(data)
        t.flush()
        self.write_bytes(path, buf.getvalue())
        t.detach()
        return n

    def open(
        self,
        path: PathArg,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> IO[Any]:
        """The builtin open on the merged view: a buffered binary or text file object."""
        flags, readable, writable, append, raw_mode = _open_flags(mode)
        binary = "b" in mode
        if binary and (encoding is not None or errors is not None or newline is not None):
            raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
        if binary and buffering == 1:
            buffering = -1
        if not binary and buffering == 0:
            raise ValueError("can't have unbuffered text I/O")
        p = self._p(path)
        h, seekable = self._call("h_open", p, flags, 0o666, True, append)
        raw = KernelFile(self, h, p, raw_mode, readable, writable, seekable)
        result: Any = raw
        try:
            if buffering == 0:
                self._track(raw)
                return cast("IO[Any]", raw)
            line_buffering = buffering == 1
            size = io.DEFAULT_BUFFER_SIZE if buffering in (-1, 1) else buffering
            if "+" in mode:
                buffer: Any = io.BufferedRandom(raw, size)
            elif readable:
                buffer = io.BufferedReader(raw, size)
            else:
                buffer = io.BufferedWriter(raw, size)
            result = buffer
            if binary:
                self._track(buffer)
                return cast("IO[Any]", buffer)
            text = io.TextIOWrapper(buffer, io.text_encoding(encoding), errors, newline, line_buffering)
            text.mode = mode  # type: ignore[misc]
            result = text
            self._track(text)
            return text
        except BaseException:
            result.close()
            raise

    def os_open(self, path: PathArg, flags: int, mode: int = 0o777) -> KernelFile:
        """os.open with ``os.O_*`` flags, as an unbuffered binary file object.

        Unlike the builtin open, a directory opened O_RDONLY succeeds (as os.open does);
        reading from it then fails with EISDIR, as read(2) does.
        """
        p = self._p(path)
        acc = flags & os.O_ACCMODE
        h, seekable = self._call("h_open", p, flags, mode, False, False)
        readable = acc in (os.O_RDONLY, os.O_RDWR)
        writable = acc in (os.O_WRONLY, os.O_RDWR)
        raw_mode = "rb+" if acc == os.O_RDWR else ("rb" if readable else ("ab" if flags & os.O_APPEND else "wb"))
        f = KernelFile(self, h, p, raw_mode, readable, writable, seekable)
        self._track(f)
        return f

    def _track(self, f: Any) -> None:
        self._files = [r for r in self._files if r() is not None]
        self._files.append(weakref.ref(f))


# --- the context manager -------------------------------------------------------------


def _drop_below(meta: dict[str, Dir], k: str, *, keep_self: bool) -> None:
    for other in [o for o in meta if is_within(o, k) and (o != k or not keep_self)]:
        del meta[other]


class KernelOverlay:
    """A real overlayfs mount of ``layers`` (bottom first), with an os-style ``fs`` on it.

    ``with KernelOverlay(layers, options) as k:`` writes the layers out, mounts them
    (read-write with a fresh upperdir, or read-only with ``readonly=True``) and starts
    the chrooted worker behind ``k.fs``. Leaving the block closes open files, stops
    the worker, unmounts (lazily if busy), reads the upperdir back into ``k.upper`` and
    removes every temporary directory, whether or not the block raised.

    Args:
        layers: the image's layers, bottom first.
        options: redirect_dir / index / metacopy, passed to the mount.
        readonly: mount without an upperdir (writes fail with EROFS).
        tmpdir: where to create the temporary directory (default: tempfile's).
        tmpfs: put layers, upper and work on a private tmpfs mounted on that temporary
            directory (fast to fill and to drop); ``False`` uses its own filesystem.
            Directory st_size/st_blocks then follow that filesystem's conventions.
        caller: ``(uid, gid, groups)``: ``fs`` then acts as that process (a worker that
            chrooted into the mount and dropped to those credentials); ``root_fs`` stays
            root's. None (default): ``fs`` is root's.

    Attributes:
        fs: the os-style facade (valid inside the ``with`` block only).
        root_fs: root's facade on the same mount (the same object as ``fs`` without a caller).
        mountpoint: the host path of the mount (inside the block).
        upper: after exit, the upperdir as a Layer; it always includes the upper root
            ``""`` (its metadata is the merged root's). ``None`` when read-only.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        options: OverlayOptions | None = None,
        *,
        readonly: bool = False,
        tmpdir: PathArg | None = None,
        tmpfs: bool = True,
        caller: tuple[int, int, Sequence[int]] | None = None,
    ) -> None:
        self.layers = list(layers)
        self.caller = caller
        self.options = options if options is not None else OverlayOptions()
        self.readonly = readonly
        self.tmpdir = None if tmpdir is None else os.fspath(tmpdir)
        self.tmpfs = tmpfs
        self.upper: Layer | None = None
        self.mountpoint = ""
        self._base: str | None = None
        self._fs: KernelFS | None = None
        self._user_fs: KernelFS | None = None
        self._pid: int | None = None
        self._mounted = False
        self._tmpfs_mounted = False

    @property
    def fs(self) -> KernelFS:
        """The os-style facade on the mount."""
        if self._fs is None:
            raise ValueError("KernelOverlay.fs is only available inside the with block")
        return self._user_fs if self._user_fs is not None else self._fs

    @property
    def root_fs(self) -> KernelFS:
        """Root's os-style facade on the mount (``fs`` itself when no caller was given)."""
        if self._fs is None:
            raise ValueError("KernelOverlay.root_fs is only available inside the with block")
        return self._fs

    @property
    def upperdir(self) -> str:
        """Host path of the upperdir (inside the block)."""
        return os.path.join(self._need_base(), "upper")

    @property
    def workdir(self) -> str:
        """Host path of the workdir (inside the block)."""
        return os.path.join(self._need_base(), "work")

    def _need_base(self) -> str:
        if self._base is None:
            raise ValueError("KernelOverlay is not mounted")
        return self._base

    # --- setup -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if not sys.platform.startswith("linux"):
            raise KernelUnavailable(f"overlayfs needs Linux, this is {sys.platform}")
        if os.geteuid() != 0:
            raise KernelUnavailable(f"mounting overlayfs needs root; euid is {os.geteuid()}")
        libc()
        self._base = tempfile.mkdtemp(prefix="ufs-kernel-", dir=self.tmpdir)
        # A private tmpfs under the temp dir: layer writes and cleanup are far cheaper
        # than on a journaling disk, and unmounting it frees everything. Falls back to
        # the temp dir's own filesystem if it cannot be mounted.
        if self.tmpfs and libc().mount(b"tmpfs", os.fsencode(self._base), b"tmpfs", 0, b"mode=0700") == 0:
            self._tmpfs_mounted = True
        try:
            self._setup()
        except BaseException:
            self._teardown(read_upper=False)
            raise
        return self

    def _setup(self) -> None:
        base = self._need_base()
        meta: dict[str, Dir] = {}
        lowers: list[str] = []
        for i, layer in enumerate(self.layers):
            self._merge_meta(meta, layer)
            name = f"l{i}"
            overlaydir.write(layer, os.path.join(base, name), lower_dirs_meta=meta.get)
            for k in layer:
                for p in parents(k):
                    if p not in layer:
                        meta.setdefault(p, Dir())
            lowers.append(name)
        if self.readonly:
            while len(lowers) < 2:  # the kernel wants 2 lowers without an upper
                name = f"l{len(lowers)}"
                overlaydir.write({}, os.path.join(base, name), lower_dirs_meta=meta.get)
                lowers.insert(0, name)
            opts = [f"lowerdir={':'.join(reversed(lowers))}"]
        else:
            if not lowers:
                overlaydir.write({}, os.path.join(base, "l0"), lower_dirs_meta=meta.get)
                lowers.append("l0")
            overlaydir.write({}, os.path.join(base, "upper"), lower_dirs_meta=meta.get)
            os.mkdir(os.path.join(base, "work"))
            opts = [f"lowerdir={':'.join(reversed(lowers))}", "upperdir=upper", "workdir=work"]
        opts += self.options.mount_options()
        self.mountpoint = os.path.join(base, "mnt")
        os.mkdir(self.mountpoint)
        self._start_worker(base, ",".join(opts))

    @staticmethod
    def _merge_meta(meta: dict[str, Dir], layer: Layer) -> None:
        """Update ``meta`` (key -> merged Dir below) with the explicit entries of ``layer``."""
        for k in sorted(layer, key=lambda k: k.split("/")):
            node: Entry = layer[k]
            if isinstance(node, Dir):
                if node.opaque:
                    _drop_below(meta, k, keep_self=True)
                meta[k] = node
            else:  # a whiteout or a non-directory hides the directory and all below
                _drop_below(meta, k, keep_self=False)

    def _start_worker(self, base: str, options: str) -> None:
        if len(options) > 4000:
            raise OSError(errno.E2BIG, f"overlay mount options too long ({len(options)} bytes > one page)")
        pid, conn, status, err = _fork_worker(lambda c: _mount_and_serve(c, base, self.mountpoint, options))
        self._pid = pid
        if status != "ready":
            conn.close()
            self._reap()
            self._mounted = mounted_at(self.mountpoint)  # so that teardown unmounts it
            if status == "mountfail":
                reason = f"mount -t overlay -o {options} failed: [Errno {err}] {os.strerror(err)}"
                if err in (errno.EPERM, errno.EACCES, errno.ENODEV):
                    raise KernelUnavailable(reason + " (needs CAP_SYS_ADMIN and overlayfs)")
                raise OSError(err, reason + " (see dmesg for the kernel's reason)")
            if status == "died":
                raise RuntimeError("the kernel-overlay worker died before it was ready")
            raise OSError(err, f"chroot into {self.mountpoint} failed: {os.strerror(err)}")
        self._mounted = True
        self._fs = KernelFS(conn, root=self.mountpoint)
        if self.caller is not None:
            uid, gid, groups = self.caller
            self._user_fs = self._fs.as_user(uid, gid, groups)

    def _reap(self) -> None:
        """Wait for the worker (SIGKILL after 5 s)."""
        if self._pid is not None:
            pid, self._pid = self._pid, None
            _reap(pid)

    # --- teardown ------------------------------------------------------------------------

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._teardown(read_upper=not self.readonly, quiet=exc is not None)

    def _metacopy_data(self) -> dict[str, bytes]:
        """Data of metacopy files in the upperdir, read through the mount (the upper has none)."""
        out: dict[str, bytes] = {}
        if self._fs is None or not self.options.metacopy or self._base is None:
            return out
        upper = self.upperdir
        for dirpath, _dirs, files in os.walk(upper):
            for name in files:
                full = os.path.join(dirpath, name)
                try:
                    os.getxattr(full, overlaydir.TRUSTED + "metacopy", follow_symlinks=False)
                except OSError:
                    continue
                k = os.path.relpath(full, upper)
                out[k] = self._fs.read_bytes("/" + k)
        return out

    def _teardown(self, *, read_upper: bool, quiet: bool = False) -> None:
        errors: list[BaseException] = []
        metacopy: dict[str, bytes] = {}
        if read_upper:
            try:
                metacopy = self._metacopy_data()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if self._fs is not None:
            self._fs._close()  # closes the caller's worker too
            self._fs = self._user_fs = None
        self._reap()
        if self._mounted:
            try:
                _umount(self.mountpoint)
                self._mounted = False
            except OSError as e:
                errors.append(e)
        if read_upper and self._base is not None and not self._mounted:
            try:
                entries = overlaydir.read(
                    self.upperdir, userxattr=False, include_root=True, metacopy=metacopy.__getitem__
                )
                self.upper = Layer(entries)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if self._base is not None and not self._mounted:
            if self._tmpfs_mounted:
                try:
                    _umount(self._base)
                    self._tmpfs_mounted = False
                except OSError as e:
                    errors.append(e)
            if not self._tmpfs_mounted:
                shutil.rmtree(self._base, ignore_errors=True)
                self._base = None
        if errors and not quiet:
            raise errors[0]


def kernel_unavailable() -> str | None:
    """Why the kernel's overlayfs cannot be mounted here (a test's skip reason), or None.

    Mounts and unmounts an empty overlay once.
    """
    try:
        with KernelOverlay([]):
            pass
    except KernelUnavailable as e:
        return str(e)
    return None


__all__ = ["KernelDirEntry", "KernelFS", "KernelFile", "KernelOverlay", "KernelUnavailable", "chrooted",
           "kernel_unavailable", "mounted_at"]
