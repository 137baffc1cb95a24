"""FUSE: a container's (or an image's) merged view as a real directory.

:class:`Mount` (and :func:`mount`) serve a view with one of two servers (``backend=``):

- ``"kernel"``, the default wherever it can mount (root, or a user with fusermount3):
  :mod:`unionfs_sim.fuse.server` speaks the FUSE protocol on ``/dev/fuse`` itself, with one
  kernel node per inode of the view, READDIRPLUS and long-lived, invalidated caches;
  several times faster, and exact across hard links (see that module).
- ``"libfuse"``: fusepy on libfuse2, described below; the fallback, and the reference the
  tests hold the first one to (they run on both).

``UNIONFS_SIM_FUSE_BACKEND`` chooses for ``"auto"``. The rest of this text is about the
libfuse backend.

The only module that imports fusepy. :class:`OverlayOperations` translates FUSE requests
into calls on the os-style facade (:class:`~unionfs_sim.fs.FileSystem`); the model's
errors are OSErrors carrying the kernel's errno, and fusepy returns ``-e.errno`` for any
OSError, so no translation table is needed. :func:`mount` mounts a view and serves it
from a background thread; use it through ``unionfs_sim.mount`` (see
:mod:`unionfs_sim.fuse.mounting`), which imports this module only when called.

How the mount is driven. fusepy's ``FUSE()`` calls ``fuse_main_real``, which blocks,
installs libfuse's own SIGTERM/SIGHUP handlers into the whole process and reports a
failure to mount only as "exit status 1". This module reuses fusepy's request
translation (the ``FUSE`` methods and its ``fuse_operations`` table) but drives libfuse2
itself, as ``fuse_main`` does inside: ``fuse_mount`` (in the caller's thread, so a failure
raises at once with libfuse's own message), ``fuse_new``, then ``fuse_loop_mt`` in a daemon
thread. Stopping unmounts the kernel mount (which ends the loop), joins the thread and
frees the session. No signal handler is touched.

Caching (the ``-o`` options chosen by :func:`default_options`). A FUSE request costs
tens of microseconds however little Python runs for it (two context switches), so
speed comes from how much the kernel may answer alone:

- An image's view never changes: ``ro,kernel_cache`` and hour-long entry, negative and
  attribute timeouts, and the first open is answered ENOSYS, after which the kernel
  opens files without asking (``no_open``): repeated lookups, stats and reads never
  reach Python.
- A container's view changes, but every change made *through the mount* keeps the
  kernel's caches coherent (it updates its dentries on create, unlink and rename, its
  page cache on write, and drops the attributes of what it changed). Two things it
  cannot know: (1) changes made to the model from Python while mounted
  (``c.fs.write_bytes``), and (2) changes made through another name of a hard-linked
  file (libfuse2's path-based API gives each name its own kernel inode). So:
  ``auto_cache`` (file pages are kept across opens while mtime and size are unchanged),
  ``entry_timeout=1`` and ``negative_timeout=1`` (a name added or removed from Python
  shows up to 1 s later), and ``attr_timeout=0`` (every stat asks the model, so all
  names of a file always show its current attributes and data). ``attr_timeout=1`` is
  2-10 times faster for metadata-heavy work, at the price of up to 1 s of stale
  attributes through other hard links and after changes from Python (pjdfstest then
  fails 47 assertions of ``link/``, which all pass with the default).
- Always: ``use_ino`` (st_ino is the model's), ``atomic_o_trunc`` (``O_TRUNC`` reaches
  the model's open, so copy-up and truncation are one step), ``big_writes`` (128 KiB
  writes). FLUSH and IOCTL are left unimplemented, so the kernel stops sending them.
- ``default_permissions`` whenever anyone but root can reach the mount (``allow_other``,
  or a non-root mounter): the kernel then checks modes and owners against the caller as
  a real filesystem does (the model itself acts as root). A root-only mount leaves it
  off: root passes those checks anyway, and with it the kernel fetches the attributes
  of every directory on a path before each access (``attr_timeout=0``), tripling the
  requests of a ``stat``.

Known limit: ``chown(path, -1, -1)`` reaches no filesystem through FUSE (the kernel
sends no attribute to change), so it does not copy the file up as overlayfs would.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import ctypes
import errno
import logging
import os
import re
import stat as _stat
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

from .. import errors
from ..errors import FuseUnavailable, MountError
from ..fs import FileSystem, Handle
from ..linux import abort_connection, mounts_at
from .semantics import OPEN_FLAGS, Handles, as_caller, check_access, listable_xattrs, statfs, still_mounted

try:
    import fuse as _fusepy  # fusepy; this is the only module that imports it
except (ImportError, OSError) as _e:  # fusepy missing, or no libfuse2 for it to load
    _fusepy = None
    FUSEPY_MISSING: str | None = f"{type(_e).__name__}: {_e}"
else:
    FUSEPY_MISSING = None
"""Why the libfuse backend cannot run here (fusepy or libfuse2 missing), or None."""

# --- file names: bytes that are not UTF-8 survive as surrogates, as os.fsdecode does -----

ENCODING = "unionfs_sim_fsencode"
"""The codec fusepy is told to use for paths: UTF-8 with ``surrogateescape`` both ways."""


def _codec_search(name: str) -> codecs.CodecInfo | None:
    if name != ENCODING:
        return None

    def encode(s: str, errors: str = "strict") -> tuple[bytes, int]:
        return codecs.utf_8_encode(s, "surrogateescape")

    def decode(b: Any, errors: str = "strict") -> tuple[str, int]:
        return codecs.utf_8_decode(b, "surrogateescape", True)

    return codecs.CodecInfo(encode, decode, name=ENCODING)


codecs.register(_codec_search)

# --- constants ------------------------------------------------------------------------

_HIDDEN = re.compile(r"\.fuse_hidden[0-9a-f]{16}")
"""The names libfuse2 (without ``hard_remove``) hides unlinked open files under."""
_MISSING = object()
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2


def _ns(ns: int | None, seconds: float) -> int:
    return ns if ns is not None else int(seconds * 1_000_000_000)


def _attrs(st: os.stat_result) -> dict[str, int]:
    """A stat result as fusepy's attribute dict (times in ns: ``use_ns`` is on).

    Tolerates a stat result built from its 10 visible fields only (``Handle.stat`` of
    an upper file gives one: its ``st_*_ns``, ``st_blocks``, ``st_rdev`` are None).
    """
    return {
        "st_mode": st.st_mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink,
        "st_uid": st.st_uid, "st_gid": st.st_gid, "st_size": st.st_size,
        "st_atime": _ns(st.st_atime_ns, st.st_atime), "st_mtime": _ns(st.st_mtime_ns, st.st_mtime),
        "st_ctime": _ns(st.st_ctime_ns, st.st_ctime), "st_rdev": st.st_rdev or 0,
        "st_blocks": st.st_blocks if st.st_blocks is not None else (st.st_size + 511) // 512, "st_blksize": 4096,
    }


def _fill_stat(st: Any, attrs: dict[str, int]) -> None:
    """Copy an attribute dict from :func:`_attrs` into a (zeroed) ``struct stat``.

    The same result as fusepy's ``set_st_attrs``, which costs about half of a
    getattr request's time in Python: every lookup and stat comes through here.
    """
    st.st_mode = attrs["st_mode"]
    st.st_ino = attrs["st_ino"]
    st.st_nlink = attrs["st_nlink"]
    st.st_uid = attrs["st_uid"]
    st.st_gid = attrs["st_gid"]
    st.st_size = attrs["st_size"]
    st.st_rdev = attrs["st_rdev"]
    st.st_blocks = attrs["st_blocks"]
    st.st_blksize = attrs["st_blksize"]
    st.st_atimespec.tv_sec, st.st_atimespec.tv_nsec = divmod(attrs["st_atime"], 1_000_000_000)
    st.st_mtimespec.tv_sec, st.st_mtimespec.tv_nsec = divmod(attrs["st_mtime"], 1_000_000_000)
    st.st_ctimespec.tv_sec, st.st_ctimespec.tv_nsec = divmod(attrs["st_ctime"], 1_000_000_000)


def _dtype(entry: Any) -> int:
    """The file-type bits of a scandir entry (0: unknown, the reader will lstat)."""
    if entry.is_symlink():
        return _stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return _stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return _stat.S_IFREG
    return 0


def _show_args(args: tuple[Any, ...]) -> str:
    shown = []
    for a in args:
        if isinstance(a, bytes):
            shown.append(f"<{len(a)} bytes>")
        elif isinstance(a, (str, int, float, tuple)) or a is None:
            shown.append(repr(a))
        else:
            fh = getattr(a, "fh", None)
            shown.append(f"fh={fh}" if fh is not None else type(a).__name__)
    return "(" + ", ".join(shown) + ")"


def _show_result(r: Any) -> str:
    if isinstance(r, bytes):
        return f"<{len(r)} bytes>"
    if isinstance(r, list) and len(r) > 8:
        return f"[{len(r)} entries]"
    return repr(r)


# --- the operations ---------------------------------------------------------------------


class OverlayOperations(_fusepy.Operations if _fusepy is not None else object):  # type: ignore[misc]
    """FUSE requests on a merged view, answered by the model's os-style facade.

    Paths from FUSE name the object itself (the kernel resolved every symlink on the
    way), so every call is made with ``follow_symlinks=False``. Open files live in a
    table ``fh -> Handle``; a handle keeps its file after unlink or rename, as a file
    descriptor does. New files and directories belong to the calling process's uid/gid
    (``fuse_get_context``) and get exactly the mode the kernel sends (it applied the
    caller's umask already).

    Open files that lose their last name. libfuse2's path-based API answers a request
    for a file only through a name, and the kernel's fstat carries no file handle; so
    libfuse keeps an unlinked open file under a hidden name (``.fuse_hidden<16 hex>``,
    renamed there instead of unlinked, removed at the last close). The model never
    sees that name: the rename becomes the unlink (whiteout and all), and the hidden
    name is answered from the open handle (fstat gives st_nlink 0, as on any
    filesystem). Only libfuse itself uses those names; a lookup of one from outside
    finds the open file's attributes but nothing else. (With ``hard_remove`` instead,
    fstat of such a file fails with ENOENT.)

    Compound steps (seek + read, swapping the facade's umask/uid/gid for a create) hold
    the facade's lock, so any number of libfuse worker threads, and Python code using
    the same facade, can run at once. (So never touch the mount while holding
    ``fs.lock`` yourself: the request would wait for the lock you hold.)

    Attributes:
        fs: the facade served (a sibling of the one given, sharing its view and lock,
            without the PATH_MAX check: see :meth:`FileSystem.unbounded`).
        readonly: refuse every change with EROFS (also when ``fs`` itself could write).
        no_open: for a view that never changes: answer the first open with ENOSYS,
            after which the kernel opens and closes files without asking (and keeps
            their pages cached); reads then come by path.
        calls: count of requests by operation name (for measurements; approximate when
            several threads serve).
        unexpected: exceptions that were not OSErrors (model bugs); fusepy turned each
            into EINVAL for the caller. Tests assert it stays empty.
    """

    use_ns = True
    """Times are passed as integer nanoseconds."""
    flag_nullpath_ok = 1
    """Operations on an open file may come without a path (if mounted with ``hard_remove``)."""
    flag_utime_omit_ok = 1
    """utimens sees UTIME_NOW / UTIME_OMIT, so ``touch -a`` / ``touch -m`` work."""

    # Requests the model has nothing to do for. Left undefined, libfuse answers ENOSYS
    # (or handles them itself), and the kernel stops sending FLUSH and IOCTL for good:
    # one round trip less for every close(2), and for every Python open() (isatty).
    flush = None
    ioctl = None
    opendir = None
    releasedir = None

    def __init__(self, fs: FileSystem, *, readonly: bool = False, no_open: bool = False) -> None:
        # Same view and lock as ``fs``; paths from the mount's root may exceed PATH_MAX.
        self.fs = fs.unbounded()
        self.readonly = readonly or fs.readonly
        self.no_open = no_open and self.readonly
        self._handles = Handles()
        self._hidden: dict[str, Handle | None] = {}  # libfuse's hidden names -> the open file
        self.calls: collections.Counter[str] = collections.Counter()
        self.unexpected: list[BaseException] = []
        self.initialized = threading.Event()

    trace: logging.Logger | None = None
    """When set, every request and its outcome is logged there at DEBUG level."""

    def __call__(self, op: str, *args: Any) -> Any:
        """Dispatch one request (fusepy calls this for every operation)."""
        self.calls[op] += 1
        try:
            result = getattr(self, op)(*args)
        except OSError as e:
            if self.trace is not None:
                self.trace.debug("%s%s -> %s", op, _show_args(args), errno.errorcode.get(e.errno or 0, e.errno))
            raise
        except Exception as e:
            self.unexpected.append(e)
            if self.trace is not None:
                self.trace.exception("%s%s -> unexpected %r", op, _show_args(args), e)
            raise
        if self.trace is not None:
            self.trace.debug("%s%s -> %s", op, _show_args(args), _show_result(result))
        return result

    # --- helpers -----------------------------------------------------------------------

    def _writable(self, path: str | None) -> None:
        if self.readonly:
            raise errors.ReadOnly(path)

    @contextlib.contextmanager
    def _as_caller(self) -> Iterator[None]:
        """Create as the calling process: its uid/gid, and no second umask."""
        fs = self.fs
        uid, gid, _pid = _fusepy.fuse_get_context()
        with fs.lock, as_caller(fs, uid, gid):
            yield

    def _add(self, h: Handle) -> int:
        return self._handles.add(h)

    def _handle(self, fi: Any) -> Handle:
        return self._handles[fi.fh]

    @property
    def open_handles(self) -> int:
        """How many files are open through the mount."""
        return len(self._handles)

    # --- lifecycle -----------------------------------------------------------------------

    def init(self, path: str) -> None:
        """The kernel's INIT request was answered: the mount serves."""
        self.initialized.set()

    def destroy(self, path: str) -> None:
        """Close every handle still open (the session ends)."""
        self._handles.close_all()

    # --- attributes ----------------------------------------------------------------------

    def getattr(self, path: str | None, fh: Any = None) -> dict[str, int]:
        """lstat; fstat (``fh``: its fuse_file_info) of an open file that has no name left."""
        if path is not None:
            if path in self._hidden:
                hidden = self._hidden[path]
                if hidden is None:
                    raise errors.NotFound(path)
                attrs = _attrs(hidden.stat())
                attrs["st_nlink"] += 1  # libfuse takes one off for the hidden name itself
                return attrs
            return _attrs(self.fs.lstat(path))
        h = self._handles.get(fh.fh) if fh else None
        if h is None:
            raise errors.NotFound(None)
        return _attrs(h.stat())

    def access(self, path: str, amode: int) -> int:
        """access(2) for root (the kernel checks modes itself with default_permissions)."""
        check_access(self.fs.lstat(path), amode, self.readonly)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        """Set permission bits (copy-up of metadata)."""
        self._writable(path)
        self.fs.chmod(path, _stat.S_IMODE(mode), follow_symlinks=False)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        """Set owner and group (-1 keeps one)."""
        self._writable(path)
        self.fs.chown(path, uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """Set atime/mtime in ns; UTIME_NOW and UTIME_OMIT are honoured."""
        self._writable(path)
        fs = self.fs
        with fs.lock:
            if times is None:
                fs.utime(path, follow_symlinks=False)
                return 0
            at, mt = times
            if _UTIME_OMIT in (at, mt):
                st = fs.lstat(path)
                at = st.st_atime_ns if at == _UTIME_OMIT else at
                mt = st.st_mtime_ns if mt == _UTIME_OMIT else mt
            now = time.time_ns()
            at = now if at == _UTIME_NOW else at
            mt = now if mt == _UTIME_NOW else mt
            fs.utime(path, ns=(at, mt), follow_symlinks=False)
        return 0

    def truncate(self, path: str | None, length: int, fh: Any = None) -> int:
        """truncate(2), or ftruncate(2) through an open handle."""
        self._writable(path)
        if fh:
            h = self._handles.get(fh.fh)
            if h is not None and h.writable():
                h.truncate(length)
                return 0
        if path is None:
            raise errors.NotFound(None)
        self.fs.truncate(path, length)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        """Sizes for df: unlimited space, 255-byte names."""
        return statfs(self.readonly)

    # --- xattrs ------------------------------------------------------------------------

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        """An extended attribute's value."""
        return self.fs.getxattr(path, name, follow_symlinks=False)

    def listxattr(self, path: str) -> list[str]:
        """The names of the extended attributes (``trusted.*`` for root only, as overlayfs)."""
        return listable_xattrs(self.fs.listxattr(path, follow_symlinks=False), _fusepy.fuse_get_context()[0])

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        """Set an extended attribute (``options``: XATTR_CREATE / XATTR_REPLACE)."""
        self._writable(path)
        self.fs.setxattr(path, name, value, options, follow_symlinks=False)
        return 0

    def removexattr(self, path: str, name: str) -> int:
        """Remove an extended attribute."""
        self._writable(path)
        self.fs.removexattr(path, name, follow_symlinks=False)
        return 0

    # --- directories -----------------------------------------------------------------------

    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int] | None, int]]:
        """The names of a directory with their inode numbers and types (for d_ino/d_type)."""
        out: list[tuple[str, dict[str, int] | None, int]] = [(".", None, 0), ("..", None, 0)]
        if path is None:  # a removed directory that is still open reads as empty
            return out
        with self.fs.lock:
            for e in self.fs.scandir(path):
                ino = e.inode()
                out.append((e.name, {"st_ino": ino, "st_mode": _dtype(e)} if ino else None, 0))
        return out

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        """The model is the storage: nothing to flush."""
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        """Create a directory owned by the caller."""
        self._writable(path)
        with self._as_caller():
            self.fs.mkdir(path, mode & 0o7777)
        return 0

    def rmdir(self, path: str) -> int:
        """Remove an empty directory (a whiteout if a lower one is there)."""
        self._writable(path)
        self.fs.rmdir(path)
        return 0

    # --- names ---------------------------------------------------------------------------

    def mknod(self, path: str, mode: int, dev: int) -> int:
        """Create a FIFO, socket, device node or regular file."""
        self._writable(path)
        with self._as_caller():
            self.fs.mknod(path, mode, dev)
        return 0

    def unlink(self, path: str) -> int:
        """Remove a name (a whiteout if a lower layer has it)."""
        if self._hidden.pop(path, _MISSING) is not _MISSING:
            return 0  # libfuse drops the hidden name of a file closed for the last time
        self._writable(path)
        self.fs.unlink(path)
        return 0

    def rename(self, old: str, new: str) -> int:
        """Move a name (EXDEV for a lower directory without redirect_dir, as overlayfs)."""
        self._writable(old)
        if _HIDDEN.fullmatch(new.rpartition("/")[2]):
            return self._hide(old, new)
        self.fs.rename(old, new)
        return 0

    def _hide(self, old: str, hidden: str) -> int:
        """libfuse hides an open file it is asked to unlink (or rename over): unlink it."""
        fs = self.fs
        with fs.lock:
            if fs.lexists(hidden):
                fs.rename(old, hidden)  # a real file of that name: an ordinary rename
                return 0
            ino = fs.lstat(old).st_ino
            keep = None
            for h in self._handles.values():
                if not h.closed and h.stat().st_ino == ino:
                    keep = h
                    break
            fs.unlink(old)
            self._hidden[hidden] = keep
        return 0

    def link(self, target: str, source: str) -> int:
        """Hard link: ``target`` becomes a new name of ``source`` (fusepy's argument names)."""
        self._writable(target)
        self.fs.link(source, target)
        return 0

    def symlink(self, target: str, source: str) -> int:
        """Symbolic link at ``target`` pointing to ``source`` (fusepy's argument names)."""
        self._writable(target)
        with self._as_caller():
            self.fs.symlink(source, target)
        return 0

    def readlink(self, path: str) -> str:
        """A symlink's target."""
        return self.fs.readlink(path)

    # --- files ---------------------------------------------------------------------------

    def create(self, path: str, mode: int, fi: Any) -> int:
        """Create and open a regular file (O_CREAT, with the caller's flags)."""
        self._writable(path)
        with self._as_caller():
            h = self.fs.os_open(path, (fi.flags & OPEN_FLAGS) | os.O_CREAT, mode & 0o7777)
        fi.fh = self._add(h)
        return 0

    def open(self, path: str, fi: Any) -> int:
        """Open a file (opening for writing copies it up, as overlayfs does)."""
        if self.no_open:
            raise errors.error(errno.ENOSYS, path)
        flags = fi.flags & OPEN_FLAGS
        if self.readonly and (flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC):
            raise errors.ReadOnly(path)
        fi.fh = self._add(self.fs.os_open(path, flags))
        return 0

    def read(self, path: str | None, size: int, offset: int, fi: Any) -> bytes:
        """pread: up to ``size`` bytes at ``offset`` (by path when files are not opened)."""
        if self.no_open and path is not None and not fi.fh:
            with self.fs.lock, self.fs.os_open(path, os.O_RDONLY) as f:
                f.seek(offset)
                return f.read(size) or b""
        h = self._handle(fi)
        with self.fs.lock:
            h.seek(offset)
            return h.read(size) or b""

    def write(self, path: str | None, data: bytes, offset: int, fi: Any) -> int:
        """pwrite at ``offset`` (at the end for an O_APPEND handle, as the model's handle does)."""
        h = self._handle(fi)
        with self.fs.lock:
            h.seek(offset)
            return h.write(data)

    def fsync(self, path: str | None, datasync: int, fi: Any) -> int:
        """The model is the storage: nothing to flush."""
        return 0

    def release(self, path: str | None, fi: Any) -> int:
        """The last descriptor of an open file closed: drop its handle."""
        h = self._handles.pop(fi.fh)
        if h is not None:
            h.close()
        return 0


# --- driving libfuse2 --------------------------------------------------------------------


class _FuseArgs(ctypes.Structure):
    _fields_ = [("argc", ctypes.c_int), ("argv", ctypes.POINTER(ctypes.c_char_p)), ("allocated", ctypes.c_int)]


_lib: Any = None

class _LibFuse:
    """The libfuse2 calls fuse_main makes, bound to their FUSE_2.6-era symbol versions.

    libfuse.so.2 exports several versions of ``fuse_new``, ``fuse_mount`` ... for old
    binaries, and an unversioned ``dlsym("fuse_new")`` finds a compat one (its
    ``(Base)`` version has another signature), so each call is looked up with
    ``dlvsym``.
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None)
        dlvsym = libc.dlvsym
        dlvsym.argtypes, dlvsym.restype = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p], ctypes.c_void_p
        handle = _fusepy._libfuse._handle
        vp, args_p = ctypes.c_void_p, ctypes.POINTER(_FuseArgs)
        table: dict[str, tuple[str, Any, list[Any]]] = {
            "fuse_mount": ("FUSE_2.6", vp, [ctypes.c_char_p, args_p]),
            "fuse_new": ("FUSE_2.6", vp, [vp, args_p, ctypes.POINTER(_fusepy.fuse_operations), ctypes.c_size_t, vp]),
            "fuse_unmount": ("FUSE_2.6", None, [ctypes.c_char_p, vp]),
            "fuse_loop_mt": ("FUSE_2.2", ctypes.c_int, [vp]),
            "fuse_loop": ("FUSE_2.2", ctypes.c_int, [vp]),
            "fuse_destroy": ("FUSE_2.2", None, [vp]),
            "fuse_opt_free_args": ("FUSE_2.5", None, [args_p]),
        }
        for name, (version, restype, argtypes) in table.items():
            addr = dlvsym(handle, name.encode(), version.encode())
            if not addr:
                raise FuseUnavailable(f"libfuse has no {name}@{version}: not libfuse 2.6 or later")
            # CFUNCTYPE: the GIL is released during the call (fuse_loop_mt runs for the
            # whole mount while libfuse's threads call back into Python).
            setattr(self, name, ctypes.CFUNCTYPE(restype, *argtypes)(addr))

    fuse_mount: Any
    fuse_new: Any
    fuse_unmount: Any
    fuse_loop_mt: Any
    fuse_loop: Any
    fuse_destroy: Any
    fuse_opt_free_args: Any


def _libfuse() -> Any:
    """libfuse2 (as fusepy loaded it), the calls fuse_main makes."""
    global _lib
    if _lib is None:
        _lib = _LibFuse()
    return _lib


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what C code writes to fd 2 meanwhile (libfuse explains failures there)."""
    out: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace").strip())








class LibfuseSession(_fusepy.FUSE if _fusepy is not None else object):  # type: ignore[misc]
    """One libfuse2 session: fusepy's request translation, driven as fuse_main does.

    fusepy's ``FUSE.__init__`` would call ``fuse_main_real``; this builds the same
    ``fuse_operations`` table and keeps mount, loop and teardown apart.
    """

    def __init__(self, operations: OverlayOperations, mountpoint: str, options: list[str]) -> None:
        # Attributes fusepy's translation methods read (see fusepy's FUSE.__init__).
        self.operations = operations
        self.raw_fi = True
        self.encoding = ENCODING
        self.use_ns = True
        self._FUSE__critical_exception = None
        self.mountpoint = mountpoint
        # Resolved now: once mounted, looking at the mountpoint needs the loop to serve.
        self.realpath = os.path.realpath(mountpoint)
        self.options = options
        ops = _fusepy.fuse_operations()
        for field in _fusepy.fuse_operations._fields_:
            name, prototype = field[:2]
            check = name[1:] if name in ("ftruncate", "fgetattr") else name
            val = getattr(operations, check, None)
            if val is None:
                continue
            if hasattr(prototype, "argtypes"):
                val = prototype(partial(self._wrapper, getattr(self, name)))
            setattr(ops, name, val)
        self._ops = ops  # keeps the ctypes callbacks alive as long as the session
        argv = [b"unionfs-sim"] + ([b"-o", os.fsencode(",".join(options))] if options else [])
        self._argv = (ctypes.c_char_p * len(argv))(*argv)
        self._args = _FuseArgs(len(argv), self._argv, 0)
        self._ch: int | None = None
        self._fuse: int | None = None
        self._thread: threading.Thread | None = None
        self.loop_result: int | None = None
        self.mount_id: int | None = None
        self.device: str | None = None

    # fusepy's translation of the two most frequent requests, without its generic
    # attribute copying (see _fill_stat).

    def fgetattr(self, path: bytes | None, buf: Any, fip: Any) -> int:
        """getattr/fgetattr: the kernel's LOOKUP and GETATTR both end here."""
        ctypes.memset(buf, 0, ctypes.sizeof(_fusepy.c_stat))
        attrs = self.operations("getattr", None if path is None else path.decode(ENCODING),
                                fip.contents if fip else fip)
        _fill_stat(buf.contents, attrs)
        return 0

    def getattr(self, path: bytes, buf: Any) -> int:
        return self.fgetattr(path, buf, None)

    def readdir(self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any) -> int:
        """Fill the directory buffer; only st_ino and the type bits matter to libfuse2 here."""
        items = self.operations("readdir", None if path is None else path.decode(ENCODING), fip.contents.fh)
        st = _fusepy.c_stat()
        for name, attrs, off in items:
            if attrs:
                st.st_ino, st.st_mode = attrs["st_ino"], attrs["st_mode"]
                r = filler(buf, name.encode(ENCODING), st, off)
            else:
                r = filler(buf, name.encode(ENCODING), None, off)
            if r != 0:
                break
        return 0

    def mount(self, *, threads: bool = True) -> None:
        """Mount (in this thread) and start serving (in a daemon thread)."""
        lib = _libfuse()
        mnt = os.fsencode(self.realpath)
        with _captured_stderr() as said:
            ch = lib.fuse_mount(mnt, ctypes.byref(self._args))
            f = lib.fuse_new(ch, ctypes.byref(self._args), ctypes.byref(self._ops), ctypes.sizeof(self._ops), None) \
                if ch else None
            if ch and not f:
                lib.fuse_unmount(mnt, ch)
        if not ch or not f:
            lib.fuse_opt_free_args(ctypes.byref(self._args))
            why = said[0] if said and said[0] else "libfuse gave no reason"
            raise MountError(f"cannot mount FUSE at {self.mountpoint} with -o {','.join(self.options)}: {why}")
        if said and said[0]:
            os.write(2, (said[0] + "\n").encode())
        self._ch, self._fuse = ch, f
        for mid, dev, fstype in reversed(mounts_at(self.realpath)):
            if fstype.startswith("fuse"):
                self.mount_id, self.device = mid, dev
                break
        loop = lib.fuse_loop_mt if threads else lib.fuse_loop
        self._thread = threading.Thread(target=self._serve, args=(loop, f), name=f"fuse:{self.mountpoint}", daemon=True)
        self._thread.start()

    def _serve(self, loop: Any, f: int) -> None:
        self.loop_result = loop(f)

    @property
    def serving(self) -> bool:
        """True while the request loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def mounted(self) -> bool:
        """True while the kernel mount of this session exists."""
        return still_mounted(self.mount_id, self.realpath, self.serving)

    def join(self, timeout: float | None) -> bool:
        """Wait for the loop to end; True if it did."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.serving

    def abort(self) -> bool:
        """Abort the connection (fusectl): every request fails, the loop ends."""
        return self.device is not None and abort_connection(self.device)

    def free(self) -> None:
        """Free the session once the loop has ended (closes /dev/fuse)."""
        if self._fuse is None or self.serving:
            return
        lib = _libfuse()
        f, ch, self._fuse, self._ch = self._fuse, self._ch, None, None
        if self.mounted():
            lib.fuse_unmount(os.fsencode(self.realpath), ch)
        lib.fuse_destroy(f)  # runs the destroy operation; closes the channel with the session
        lib.fuse_opt_free_args(ctypes.byref(self._args))




# --- the mount --------------------------------------------------------------------------









__all__ = ["ENCODING", "FUSEPY_MISSING", "LibfuseSession", "OverlayOperations"]
