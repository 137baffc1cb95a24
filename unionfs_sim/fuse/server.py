"""FUSE without libfuse: the kernel's FUSE protocol on ``/dev/fuse``, answered from Python.

Why a second server next to :mod:`.libfuse` (fusepy on libfuse2)? libfuse2's
high-level API names files by path, so every name of a hard-linked file becomes its
own kernel inode, and it has neither READDIRPLUS nor cached directories. Speaking the
protocol directly, this server gives the kernel one node per inode of the merged view
(all names of an upper hard link share it; lower hard links are one node with
``index=on`` and one per name without, as overlayfs hashes its inodes), so the kernel
may cache entries, attributes, directory listings and file pages for as long as
nothing changes them behind its back, and stay exact:

- changes made *through the mount* are ones the kernel makes itself: it updates or drops
  what it cached (dentries on create/unlink/rename, the parent's attributes and
  listing, a file's pages on write, the attributes of what it changed). Where overlayfs
  changes more than the kernel can know (a copy-up of a lower hard link, which may change
  the attributes other names show), the server drops those attributes itself.
- changes made *from Python* while mounted (``c.fs.write_bytes``) are seen through the
  view's change counter (:attr:`Overlay.generation`): before the changing call returns,
  every attribute the kernel cached is dropped, and with ``FUSE_AUTO_INVAL_DATA`` the
  kernel then re-reads a file's pages or a directory's listing whose mtime or size
  changed. Names looked up and not found are not cached (``negative_timeout=0``), so a
  name created from Python shows up at once; a background thread drops every cached
  name within milliseconds, so one removed, renamed or replaced from Python is looked
  up again.

Requests: LOOKUP and READDIRPLUS answer a name with its node and attributes; OPENDIR is
answered ENOSYS, so the kernel opens directories itself and caches their listings
(``FOPEN_CACHE_DIR``); file opens keep the page cache while the file's mtime and size
are what they were (libfuse's ``auto_cache``), always on an image's view. Reads and
writes move up to 1 MiB per request; as root the mount's readahead is raised to that
size too (the kernel starts FUSE mounts at 128 KiB), and a READ hands the kernel a view
of the model's bytes, not a copy. Every handler runs under the view's lock; the
``/dev/fuse`` reads and writes do not, and several threads serve at once.

Mounting needs ``mount(2)``: root (or CAP_SYS_ADMIN). Otherwise ``fusermount3`` (or
``fusermount``) mounts and passes the ``/dev/fuse`` descriptor back over a socket, as
libfuse does.

Known limits:

- A race in the kernel's FUSE client (any server that reports attributes has it;
  fuse-overlayfs shows it under the same stress test): when one name of a hard-linked
  file is unlinked while another process lists or stats the file, a reply carrying the
  file's new st_nlink may be applied before the unlink's own reply, which then lowers
  the count once more. Until the file's attributes are next fetched (any stat does),
  the kernel holds st_nlink one too low, and link(2) of a file left with one name fails
  with ENOENT without reaching the server.
- RENAME_WHITEOUT is refused (EINVAL), as overlayfs refuses it.
- The metadata of an open file that has lost all its names (fchmod, fsetxattr) cannot
  be changed: the model's facade reaches objects by name.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import select
import socket
import stat as _stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from .. import errors
from ..content import Data
from ..errors import FuseUnavailable, MountError
from ..fs import FileSystem, Handle
from ..linux import (
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_RELATIME,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    abort_connection,
    fusectl,
    libc,
    mounts_at,
    renameat2,
    set_readahead,
)
from ..nodes import Node
from ..overlay import Inode, Loc
from .semantics import (
    NAME_MAX,
    OPEN_FLAGS,
    Handles,
    as_caller,
    check_access,
    listable_xattrs,
    statfs,
    still_mounted,
)

log = logging.getLogger(__name__)

# --- the protocol (include/uapi/linux/fuse.h) ------------------------------------------------

LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE = 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT = 20, 21, 22, 23, 24, 25, 26
OPENDIR, READDIR, RELEASEDIR, FSYNCDIR, ACCESS, CREATE, INTERRUPT, DESTROY = 27, 28, 29, 30, 34, 35, 36, 38
BATCH_FORGET, READDIRPLUS, RENAME2 = 42, 44, 45

OPNAMES = {
    LOOKUP: "lookup", FORGET: "forget", GETATTR: "getattr", SETATTR: "setattr", READLINK: "readlink",
    SYMLINK: "symlink", MKNOD: "mknod", MKDIR: "mkdir", UNLINK: "unlink", RMDIR: "rmdir", RENAME: "rename",
    LINK: "link", OPEN: "open", READ: "read", WRITE: "write", STATFS: "statfs", RELEASE: "release",
    FSYNC: "fsync", SETXATTR: "setxattr", GETXATTR: "getxattr", LISTXATTR: "listxattr",
    REMOVEXATTR: "removexattr", FLUSH: "flush", INIT: "init", OPENDIR: "opendir", READDIR: "readdir",
    RELEASEDIR: "releasedir", FSYNCDIR: "fsyncdir", ACCESS: "access", CREATE: "create",
    INTERRUPT: "interrupt", DESTROY: "destroy", BATCH_FORGET: "batch_forget", READDIRPLUS: "readdirplus",
    RENAME2: "rename2", 31: "getlk", 32: "setlk", 33: "setlkw", 37: "bmap", 39: "ioctl", 40: "poll",
    43: "fallocate", 46: "lseek", 47: "copy_file_range", 50: "syncfs", 51: "tmpfile", 52: "statx",
}
"""Opcode -> name, for :attr:`Server.calls` and tracing (others show as ``op<N>``)."""

# INIT flags
ASYNC_READ, ATOMIC_O_TRUNC, BIG_WRITES = 1 << 0, 1 << 3, 1 << 5
AUTO_INVAL_DATA, DO_READDIRPLUS, PARALLEL_DIROPS, MAX_PAGES = 1 << 12, 1 << 13, 1 << 18, 1 << 22
CACHE_SYMLINKS = 1 << 23
INIT_EXT = 1 << 30
PASSTHROUGH_FLAGS2 = 1 << 5  # FUSE_PASSTHROUGH (1 << 37), in flags2

FOPEN_KEEP_CACHE = 2
FOPEN_PASSTHROUGH = 1 << 7
BACKING_OPEN = 0x4010E501  # FUSE_DEV_IOC_BACKING_OPEN: _IOW(229, 1, struct fuse_backing_map)
BACKING_CLOSE = 0x4004E502  # FUSE_DEV_IOC_BACKING_CLOSE: _IOW(229, 2, uint32_t)
GETATTR_FH = 1
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE, FATTR_ATIME, FATTR_MTIME, FATTR_FH = 1, 2, 4, 8, 16, 32, 64
FATTR_ATIME_NOW, FATTR_MTIME_NOW = 128, 256
NOTIFY_INVAL_INODE, NOTIFY_INVAL_ENTRY = 2, 3

_IN = struct.Struct("<IIQQIII4x")  # fuse_in_header
_OUT = struct.Struct("<IiQ")  # fuse_out_header
_ATTR_FMT = "QQQQQQIIIIIIIIII"  # fuse_attr (88 bytes)
_ENTRY = struct.Struct("<QQQQII" + _ATTR_FMT)  # fuse_entry_out (128)
_ATTR_OUT = struct.Struct("<QII" + _ATTR_FMT)  # fuse_attr_out (104)
_DIRENT = struct.Struct("<QQII")  # fuse_dirent without its name (24)
_INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags
_INIT_IN_FLAGS2 = struct.Struct("<16xI")  # flags2 (7.36+)
_INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")  # fuse_init_out (64), up to max_stack_depth
_GETATTR_IN = struct.Struct("<IIQ")
_SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
_OPEN_IN = struct.Struct("<II")
_OPEN_OUT = struct.Struct("<QIi")  # fh, open_flags, backing_id
_BACKING_MAP = struct.Struct("<iIQ")  # struct fuse_backing_map: fd, flags, padding
_CREATE_IN = struct.Struct("<IIII")
_MKNOD_IN = struct.Struct("<IIII")
_MKDIR_IN = struct.Struct("<II")
_RENAME_IN = struct.Struct("<Q")
_RENAME2_IN = struct.Struct("<QII")
_LINK_IN = struct.Struct("<Q")
_READ_IN = struct.Struct("<QQII")  # fh, offset, size, flags (the rest unused here)
_WRITE_IN = struct.Struct("<QQIIQII")  # fuse_write_in (40), then the data
_WRITE_OUT = struct.Struct("<II")
_RELEASE_IN = struct.Struct("<Q")
_XATTR_IN = struct.Struct("<II")  # fuse_setxattr_in (compat size) / fuse_getxattr_in
_ACCESS_IN = struct.Struct("<II")
_FORGET_IN = struct.Struct("<Q")
_BATCH_FORGET_IN = struct.Struct("<II")
_FORGET_ONE = struct.Struct("<QQ")
_STATFS_OUT = struct.Struct("<QQQQQIII4x24x")
_INVAL_INODE = struct.Struct("<Qqq")
_INVAL_ENTRY = struct.Struct("<QII")

_BY_NODE = frozenset({GETATTR, SETATTR, OPEN, READLINK, GETXATTR, LISTXATTR, SETXATTR, REMOVEXATTR, ACCESS,
                      CREATE, MKDIR, MKNOD, SYMLINK, LINK})
"""Requests whose ENOENT can only mean the node they name is gone (not a name in it)."""
_CAP_FSETID = 4
_O_DIRECT = getattr(os, "O_DIRECT", 0)
PT_REREAD_MAX = 1 << 20
"""Largest file over a lower file's bytes given FUSE passthrough (its bytes are read back
into the model when the last handle goes; a larger one is written through the server)."""
PT_DEFERRED = 1
"""Released passthrough files left to finish when the server is idle, at most (each is
refreshed before most requests until then); none when the server has one CPU."""
_PT_QUIET = frozenset({READ, WRITE, RELEASE, RELEASEDIR, GETXATTR, LISTXATTR, FSYNC, FSYNCDIR, STATFS, READLINK,
                       ACCESS, READDIR, OPENDIR})
"""Requests that neither answer with a file's size or times nor change anything. Before any
other, passthrough files are taken in first: a change writes the model's idea of a file
through to its upper file (an xattr set syncs its size too), so that idea must be current."""

CAPABILITY = "security.capability"
_IDLE = (0, False)
ROOT_ID = 1
UNKNOWN_INO = 0xFFFFFFFF
MAX_WRITE = 1 << 20
"""Largest READ/WRITE payload (``max_pages`` = 256)."""
_BUFSIZE = MAX_WRITE + 4096 * 2
FOREVER = 365 * 86400.0
"""The cache timeout that stands for "until told otherwise"."""

_FLAG_OPTIONS = {
    "allow_other", "allow_root", "default_permissions", "ro", "rw", "nonempty", "use_ino", "readdir_ino",
    "atomic_o_trunc", "big_writes", "kernel_cache", "auto_cache", "noauto_cache", "hard_remove",
    "suid", "nosuid", "dev", "nodev", "exec", "noexec", "atime", "noatime", "relatime", "norelatime",
    "strictatime", "nodiratime", "diratime", "lazytime", "sync", "async", "dirsync", "debug", "large_read",
    "intr", "splice_read", "splice_write", "splice_move", "no_remote_lock", "no_remote_posix_lock",
    "no_remote_flock", "direct_io", "nopath", "auto_unmount", "clone_fd",
}
_VALUE_OPTIONS = {
    "fsname", "subtype", "entry_timeout", "negative_timeout", "attr_timeout", "ac_attr_timeout", "max_read",
    "max_write", "max_readahead", "max_background", "congestion_threshold", "umask", "uid", "gid",
    "intr_signal", "modules", "remember", "blksize", "context", "fscontext", "defcontext", "rootcontext",
}
"""The ``-o`` options accepted (those of libfuse and mount(8)); most need nothing here."""


_FSENC, _FSERR = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _decode(b: bytes | memoryview) -> str:
    return bytes(b).decode(_FSENC, _FSERR)  # os.fsdecode, without its checks


def _cstring(body: memoryview) -> str:
    """The first NUL-terminated name of a request body."""
    return bytes(body).partition(b"\0")[0].decode(_FSENC, _FSERR)


def _cstrings(body: memoryview, n: int) -> list[str]:
    """The first ``n`` NUL-terminated names of a request body."""
    parts = bytes(body).split(b"\0", n)
    return [p.decode(_FSENC, _FSERR) for p in parts[:n]]


def _ns(st: os.stat_result, field: str, seconds: float) -> int:
    v = getattr(st, field)
    return v if v is not None else int(seconds * 1_000_000_000)


def _sig(st: os.stat_result) -> tuple[int, int]:
    """(mtime, size): what says whether the kernel's cached pages of a file are current."""
    mt = st.st_mtime_ns
    return (mt if mt is not None else int(st.st_mtime * 1_000_000_000)), st.st_size


def attr_fields(st: os.stat_result) -> tuple[int, ...]:
    """A stat result as the 16 fields of ``struct fuse_attr``."""
    at, mt, ct = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
    if at is None or mt is None or ct is None:  # a stat_result built without them
        at = _ns(st, "st_atime_ns", st.st_atime)
        mt = _ns(st, "st_mtime_ns", st.st_mtime)
        ct = _ns(st, "st_ctime_ns", st.st_ctime)
    blocks = st.st_blocks
    if blocks is None:
        blocks = (st.st_size + 511) // 512
    return (st.st_ino, st.st_size, blocks, at // 1_000_000_000, mt // 1_000_000_000, ct // 1_000_000_000,
            at % 1_000_000_000, mt % 1_000_000_000, ct % 1_000_000_000, st.st_mode, st.st_nlink,
            st.st_uid, st.st_gid, (st.st_rdev or 0) & 0xFFFFFFFF, 4096, 0)


def _split(t: float) -> tuple[int, int]:
    t = max(0.0, t)
    s = int(t)
    return s, int((t - s) * 1e9)


# --- the node table ---------------------------------------------------------------------------


class StaleNode(OSError):
    """ESTALE: a node's name now holds another object (the kernel looks the name up again)."""


class _Node:
    """A kernel inode: what the view holds under one or more names (hard links)."""

    __slots__ = ("fmt", "handles", "id", "key", "listing", "loc", "loc_gen", "lookups", "names", "obj", "pt", "sig")

    def __init__(self, nid: int, fmt: int) -> None:
        self.id = nid
        self.names: list[tuple[int, str]] = []  # (parent id, name); the first names the node
        self.lookups = 0
        self.key: Any = None  # the identity shared by all its names (None: only this name)
        self.obj: Any = None  # the upper inode it shows (kept alive: its id must stay unique)
        self.sig: tuple[int, int] | None = None  # (mtime, size) when the kernel last cached pages
        self.listing: list[tuple[str, int, int]] | None = None  # readdir: (name, ino, d_type)
        self.handles: set[int] = set()
        self.fmt = fmt  # the file type (S_IFMT bits): a kernel inode never changes type
        self.loc: Loc | None = None  # its first name, resolved in the names epoch loc_gen (Server._names)
        self.loc_gen = -1
        self.pt: _Pt | None = None  # open with FUSE passthrough (every handle of it is)


def _sgid_without_xgrp(mode: int) -> bool:
    """Setgid without group execute: what only the newer ``setattr_should_drop_sgid`` drops
    on a write by a caller outside the group (see :meth:`Server._drop_sgid`)."""
    return mode & (_stat.S_ISGID | _stat.S_IXGRP) == _stat.S_ISGID


def _in_group_or_capable(ctx: tuple[int, int, int], gid: int) -> bool:
    """``in_group_or_capable`` for the process behind a request: its fsgid, one of its
    supplementary groups (``/proc/PID/status``), or CAP_FSETID. A process already gone
    counts as in the group (nothing is changed on its behalf)."""
    if ctx[1] == gid:
        return True
    try:
        with open(f"/proc/{ctx[2]}/status", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return True
    for line in lines:
        if line.startswith(b"Groups:") and gid in {int(g) for g in line.split()[1:]}:
            return True
        if line.startswith(b"CapEff:") and int(line.split()[1], 16) & (1 << _CAP_FSETID):
            return True
    return False


def _pread_all(fd: int, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of ``fd`` (fewer if the file is shorter now)."""
    parts = []
    while start < end:
        b = os.pread(fd, min(end - start, 1 << 30), start)
        if not b:
            break
        parts.append(b)
        start += len(b)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _UpperBacked(Protocol):
    """A handle writing through to an upper file (``fuse.writethrough.WriteThroughHandle``)."""

    def lend_upper_fd(self) -> int: ...


class _Pt:
    """An upper file the kernel reads and writes itself while it is open (FUSE passthrough):
    its backing id, and what the model has taken in of the kernel's writes.

    The kernel sends no READ or WRITE for it: the bytes go straight to the upper file, which
    is where write-through puts them anyway. The model takes the upper file's size and
    times before it answers for the file or changes anything (GETATTR, LOOKUP, SETXATTR,
    ...), and its bytes soon after the last handle is released (when the server next finds
    no request waiting: :meth:`Server._pt_idle`), or when another node's READ needs them;
    an open before then joins it again. Nothing tells the server where the kernel wrote (mmap, pwrite, an
    O_APPEND cleared by fcntl), so it is always the whole file.
    """

    __slots__ = ("count", "fd", "id", "inode", "seen", "stale")

    def __init__(self, backing: int, fd: int, inode: Inode) -> None:
        self.id = backing
        self.fd = fd  # the upper file's read-write descriptor, lent by the first handle
        self.inode = inode
        self.count = 0  # open handles of the node (all of them passthrough)
        self.seen = (inode.size, inode.mtime_ns, inode.ctime_ns)  # the upper file as last taken in
        self.stale = False  # the model's bytes lag the upper file's (size and times do not)


class Server:
    """Answers the FUSE requests of one mount from the facade of a merged view.

    Attributes:
        fs: the facade served (its PATH_MAX-free sibling: paths from the mount root may be longer).
        readonly: refuse every change with EROFS.
        immutable: the view never changes (an image's): cache everything, never ask twice.
        calls: count of requests by operation name (approximate with several threads).
        unexpected: exceptions that were not OSErrors (model bugs), answered EIO. Tests
            assert it stays empty.
        trace: when set, every request and its outcome is logged there at DEBUG level.
    """

    def __init__(self, fs: FileSystem, *, readonly: bool = False, immutable: bool = False,
                 entry_timeout: float | None = None, attr_timeout: float | None = None,
                 negative_timeout: float | None = None, keep_cache: bool = False) -> None:
        self.fs = fs.unbounded()
        self.passthrough = False
        """Set before mounting: let the kernel read and write upper files itself while they are open (FUSE
        passthrough, Linux 6.9+, CAP_SYS_ADMIN): for a write-through facade, whose handles
        open for writing hold the upper file. Off where the kernel or privileges refuse."""
        self.readonly = readonly or fs.readonly
        self.immutable = immutable
        self.entry_timeout = _split(FOREVER if entry_timeout is None else entry_timeout)
        self.attr_timeout = _split(FOREVER if attr_timeout is None else attr_timeout)
        neg = (FOREVER if immutable else 0.0) if negative_timeout is None else negative_timeout
        self.negative_timeout = _split(neg)
        self.keep_cache = keep_cache or immutable
        self.calls: collections.Counter[str] = collections.Counter()
        self.unexpected: list[BaseException] = []
        self.trace: logging.Logger | None = None
        self.initialized = threading.Event()
        self.proto: tuple[int, int] = (0, 0)
        self.device: str | None = None
        """The mount's device number ("0:53"), set by :class:`Session` before serving."""
        self._lock = self.fs.lock
        self._ov = self.fs.overlay
        root = _Node(ROOT_ID, _stat.S_IFDIR)
        root.lookups = 1
        self._nodes: dict[int, _Node] = {ROOT_ID: root}
        self._dentries: dict[tuple[int, str], int] = {}
        self._keys: dict[Any, int] = {}
        self._aliases: dict[int, set[int]] = {}  # id(upper inode) -> nodes that show it
        self._next_id = ROOT_ID + 1
        self._handles = Handles()
        self._pt_on = False  # passthrough agreed with the kernel at INIT and not refused since
        self._pt_live: dict[int, _Node] = {}  # node id -> node with passthrough handles open
        self._pt_done: collections.deque[_Node] = collections.deque()  # last handle gone, not yet finished
        # On one CPU the client waits while the server finishes anyway: no point deferring.
        self._pt_deferred = PT_DEFERRED if len(os.sched_getaffinity(0)) > 1 else 0
        self._pt_fhs: set[int] = set()
        self._handle_node: dict[int, int] = {}
        self._fd = -1
        self._workers: set[int] = set()
        self._dirty = False  # changed from elsewhere since the last request
        self._serving = _IDLE  # (node id, whether its reply tells the kernel its new attributes)
        self._seen = -1  # overlay.generation when the names epoch was last brought up to date
        self._epoch = 0
        self._outside = threading.Event()
        self._stopping = False
        self._handlers: dict[int, Callable[[_Node, memoryview, tuple[int, int, int]], bytes | memoryview | int]] = {
            LOOKUP: self._lookup, GETATTR: self._getattr, SETATTR: self._setattr, READLINK: self._readlink,
            SYMLINK: self._symlink, MKNOD: self._mknod, MKDIR: self._mkdir, UNLINK: self._unlink,
            RMDIR: self._rmdir, RENAME: self._rename, RENAME2: self._rename2, LINK: self._link,
            OPEN: self._open, READ: self._read, WRITE: self._write, STATFS: self._statfs,
            RELEASE: self._release, FSYNC: self._fsync, FSYNCDIR: self._fsync, SETXATTR: self._setxattr,
            GETXATTR: self._getxattr, LISTXATTR: self._listxattr, REMOVEXATTR: self._removexattr,
            ACCESS: self._access, CREATE: self._create, READDIR: self._readdir, READDIRPLUS: self._readdirplus,
        }

    # --- nodes ------------------------------------------------------------------------------

    @property
    def open_handles(self) -> int:
        """How many files are open through the mount."""
        return len(self._handles)

    def _path(self, node: _Node) -> str | None:
        """A path of the node from the view's root (None once it has no name left)."""
        parts = []
        nodes = self._nodes
        while node.id != ROOT_ID:
            if not node.names:
                return None
            pid, name = node.names[0]
            parts.append(name)
            parent = nodes.get(pid)
            if parent is None:
                return None
            node = parent
        parts.reverse()
        return "/" + "/".join(parts)

    def _need_path(self, node: _Node) -> str:
        p = self._path(node)
        if p is None:
            raise errors.NotFound(None)
        return p

    def _names(self) -> int:
        """The names epoch: it moves with every change of the view (``overlay.generation``)
        except those :meth:`_names_kept` vouched for, so a resolved Loc kept with it stays
        valid while no name it went through can have changed."""
        gen = self._ov.generation
        if gen != self._seen:
            self._seen = gen
            self._epoch += 1
        return self._epoch

    def _names_kept(self) -> None:
        """Called by a handler whose changes, since the request began (:meth:`_names` was
        current then), left every resolved name as it was: a write through a handle, a
        new name made in a directory already in the upper layer (no copy-up). The Locs
        kept stay valid (they hold the inodes, which changed in place)."""
        self._seen = self._ov.generation

    def _node_loc(self, node: _Node) -> Loc | None:
        """The node's first name resolved in the view (None once it has no name left).

        Kept until the view's names may have changed (:meth:`_names`), so LOOKUP and GETATTR of a
        view that does not change never rebuild a path. Raises ENOENT (and the like) when
        the name no longer resolves.
        """
        loc = node.loc
        if loc is not None and node.loc_gen == self._epoch and self._seen == self._ov.generation:
            return loc
        gen = self._names()
        if loc is not None and node.loc_gen == gen:
            return loc
        path = self._path(node)
        if path is None:
            return None
        loc = self.fs.locate(path)
        node.loc, node.loc_gen = loc, gen
        return loc

    def _chained_loc(self, node: _Node) -> Loc | None:
        """The node's first name resolved with the chain of parent Locs a copy-up walks (up
        to one in the upper layer), as ``fs.lookup`` in its parent's Loc gives it; None
        where that is not at hand (the root, no name, a parent Loc without its chain)."""
        if not node.names:
            return None
        pid, name = node.names[0]
        parent = self._nodes.get(pid)
        if parent is None:
            return None
        ploc = self._node_loc(parent)
        if ploc is None or not ploc.is_dir:
            return None
        p: Loc | None = ploc
        while p is not None and p.up is None:  # copy_up walks parents while they are lower only
            if p.parent is None and p.path:
                return None  # a Loc from overlay.fast: no chain to walk
            p = p.parent
        return self.fs.overlay.child(ploc, name)

    def _child_path(self, parent: _Node, name: str) -> str:
        base = self._need_path(parent)
        return base + name if base == "/" else f"{base}/{name}"

    @staticmethod
    def _key(loc: Loc) -> tuple[Any, Any]:
        """(key, object): the identity all names of one kernel inode share, and the upper
        inode the name shows.

        Only names that *are* one upper inode share a node (a hard link made in the upper
        layer, or one whose names were all copied up). A lower name keeps its own node even
        when its data is another name's upper inode (``index=on``): FUSE tells a file
        operation by node only, and overlayfs copies up (links up) the very name opened, so
        the name must follow from the node. Such names are aliases: see :meth:`_touch`.
        """
        up = loc.up
        if up is not None:
            return (None, None) if up.kind == "d" else (("u", id(up)), up)
        return None, loc.ix

    def _set_ident(self, node: _Node, key: Any, obj: Any) -> None:
        if node.key is not None and self._keys.get(node.key) == node.id:
            del self._keys[node.key]
        if node.obj is not None and node.obj is not obj:
            ids = self._aliases.get(id(node.obj))
            if ids is not None:
                ids.discard(node.id)
                if not ids:
                    del self._aliases[id(node.obj)]
        node.key, node.obj = key, obj
        if key is not None:
            self._keys.setdefault(key, node.id)
        if obj is not None:
            self._aliases.setdefault(id(obj), set()).add(node.id)

    def _note_key(self, node: _Node, loc: Loc) -> None:
        """Keep the node's identity current (a copy-up gives a name an upper inode)."""
        key, obj = self._key(loc)
        if key != node.key or obj is not node.obj:
            self._set_ident(node, key, obj)

    def _touch(self, node: _Node | None) -> None:
        """After a change to ``node``'s object: drop the attributes other nodes cached of it.

        The kernel updates the node it changed; other nodes showing the same upper inode
        (lower names of an index=on hard link, or names looked up before they were linked
        up) it cannot know about.
        """
        if node is None or node.obj is None:
            return
        for nid in self._aliases.get(id(node.obj), ()):
            if nid != node.id:
                self._notify_inval_inode(nid)

    def _node_for(self, parent: _Node, name: str, loc: Loc, fmt: int) -> _Node:
        """The node the kernel gets for ``name`` in ``parent`` (counted as one lookup)."""
        dkey = (parent.id, name)
        key, obj = self._key(loc)
        node = None
        nid = self._keys.get(key) if key is not None else None
        if nid is not None:
            node = self._nodes.get(nid)
        if node is None:
            nid = self._dentries.get(dkey)
            old = self._nodes.get(nid) if nid is not None else None
            # The same name as before: the same node, unless it now holds another object
            # (a lower name that got an upper inode was copied up: the same object).
            if old is not None and old.fmt == fmt and (old.key is None or old.key == key):
                node = old
        if node is None:
            node = _Node(self._next_id, fmt)
            self._next_id += 1
            self._nodes[node.id] = node
        if key != node.key or obj is not node.obj:  # _note_key, the key known
            self._set_ident(node, key, obj)
        if dkey not in self._dentries or self._dentries[dkey] != node.id:
            self._unname(dkey)
            self._dentries[dkey] = node.id
            node.names.append(dkey)
            if len(node.names) == 1:
                node.loc = None
        node.lookups += 1
        return node

    def _unname(self, dkey: tuple[int, str]) -> _Node | None:
        """Forget that a name refers to its node (unlink, rmdir, rename over it); that node."""
        nid = self._dentries.pop(dkey, None)
        if nid is None:
            return None
        node = self._nodes.get(nid)
        if node is not None:
            with contextlib.suppress(ValueError):
                node.names.remove(dkey)
            node.loc = None
        return node

    def _forget(self, nid: int, n: int) -> None:
        node = self._nodes.get(nid)
        if node is None or nid == ROOT_ID:
            return
        node.lookups -= n
        if node.lookups > 0:
            return
        del self._nodes[nid]
        for dkey in node.names:
            if self._dentries.get(dkey) == nid:
                del self._dentries[dkey]
        self._set_ident(node, None, None)

    # --- replies ----------------------------------------------------------------------------

    def _stat_loc(self, path: str) -> tuple[Loc, os.stat_result]:
        loc = self.fs.locate(path)
        return loc, self.fs.stat_at(loc)

    def _entry(self, parent: _Node, name: str, path: str) -> bytes:
        loc, st = self._stat_loc(path)
        node = self._node_for(parent, name, loc, _stat.S_IFMT(st.st_mode))
        self._keep_loc(node, parent, name, loc)
        return self._entry_bytes(node.id, st)

    def _keep_loc(self, node: _Node, parent: _Node, name: str, loc: Loc) -> None:
        """Remember ``loc`` as the node's resolved first name (the next GETATTR, GETXATTR
        ... of a node just made or looked up need no path), if that is the name it has."""
        if node.names[0] == (parent.id, name):
            node.loc, node.loc_gen = loc, self._names()

    def _entry_at(self, parent: _Node, name: str) -> bytes | int:
        """LOOKUP's answer: ``name`` looked up in the parent's directory, no path built
        (ENOENT as a number: a create looks its name up first, and raising costs)."""
        ploc = self._node_loc(parent)
        if ploc is None:
            raise errors.NotFound(None)
        if len(name) <= NAME_MAX // 4 and ploc.is_dir:
            found = self.fs.overlay.child(ploc, name)  # what fs.lookup does, the lock held
            if found is None:
                return errno.ENOENT
            loc = found
        else:
            loc = self.fs.lookup(ploc, name)
        st = self.fs.stat_at(loc)
        node = self._node_for(parent, name, loc, _stat.S_IFMT(st.st_mode))
        self._keep_loc(node, parent, name, loc)
        return self._entry_bytes(node.id, st)

    def _entry_bytes(self, nid: int, st: os.stat_result) -> bytes:
        es, ens = self.entry_timeout
        as_, ans = self.attr_timeout
        return _ENTRY.pack(nid, 0, es, as_, ens, ans, *attr_fields(st))

    def _attr_bytes(self, st: os.stat_result) -> bytes:
        as_, ans = self.attr_timeout
        return _ATTR_OUT.pack(as_, ans, 0, *attr_fields(st))

    def _node_stat(self, node: _Node, fh: int | None = None) -> os.stat_result:
        """The node's attributes: through a name, else through an open handle (unlinked)."""
        try:
            loc = self._node_loc(node)
            if loc is not None:
                st = self.fs.stat_at(loc)
                self._check_same(node, loc, st)
        except (FileNotFoundError, StaleNode):
            if not node.handles:
                raise
        else:
            if loc is not None:
                self._note_key(node, loc)
                return st
        h = self._handles.get(fh) if fh else None
        if h is None:
            for f in node.handles:
                h = self._handles.get(f)
                break
        if h is None:
            raise errors.NotFound(None)
        return h.stat()

    def _check_same(self, node: _Node, loc: Loc, st: os.stat_result) -> None:
        """ESTALE if the node's name now holds another object (replaced from Python).

        The kernel then looks the name up again (as after NFS's ESTALE) and gets a new node,
        instead of seeing the old inode change its type.
        """
        if _stat.S_IFMT(st.st_mode) != node.fmt:
            raise StaleNode(errno.ESTALE, os.strerror(errno.ESTALE))
        if node.key is not None and node.key[0] == "u":
            key = self._key(loc)[0]
            if key is not None and key != node.key:
                raise StaleNode(errno.ESTALE, os.strerror(errno.ESTALE))

    def _writable(self) -> None:
        if self.readonly:
            raise errors.ReadOnly(None)

    def _as_caller(self, ctx: tuple[int, int, int]) -> contextlib.AbstractContextManager[None]:
        return as_caller(self.fs, ctx[0], ctx[1])

    def _add_handle(self, node: _Node, h: Handle) -> int:
        fh = self._handles.add(h)
        self._handle_node[fh] = node.id
        node.handles.add(fh)
        return fh

    def _open_flags(self, node: _Node, st: os.stat_result) -> int:
        """FOPEN_KEEP_CACHE while the file's mtime and size are what the kernel cached."""
        if self.keep_cache:
            return FOPEN_KEEP_CACHE
        sig = _sig(st)
        keep = node.sig == sig
        node.sig = sig
        return FOPEN_KEEP_CACHE if keep else 0

    # --- attributes -------------------------------------------------------------------------

    def _lookup(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes | int:
        name = _decode(body[:-1])
        try:
            out = self._entry_at(parent, name)
        except FileNotFoundError:
            out = errno.ENOENT
        if out != errno.ENOENT or self.negative_timeout == (0, 0):
            return out
        s, ns = self.negative_timeout
        return _ENTRY.pack(0, 0, s, 0, ns, 0, *([0] * 16))

    def _getattr(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        flags, _, fh = _GETATTR_IN.unpack_from(body)
        return self._attr_bytes(self._node_stat(node, fh if flags & GETATTR_FH else None))

    def _setattr(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        (valid, _, fh, size, _lo, atime, mtime, _ct, atimens, mtimens, _ctns, mode, _u4, uid, gid,
         _u5) = _SETATTR_IN.unpack_from(body)
        self._writable()
        fs = self.fs
        h = self._handles.get(fh) if valid & FATTR_FH else None
        path = self._path(node)
        if path is None and h is None:
            raise errors.NotFound(None)
        if path is None:  # an open file with no name left: only its data can change
            if valid & FATTR_SIZE and h is not None:
                h.truncate(size)
            return self._attr_bytes(self._node_stat(node, fh))
        if valid & FATTR_MODE:
            loc = self._chained_loc(node) if not valid & ~(FATTR_MODE | FATTR_FH) else None
            if loc is not None:  # chmod: copied up by the Loc, no path resolved twice
                fs.chmod_at(loc, _stat.S_IMODE(mode))
            else:
                fs.chmod(path, _stat.S_IMODE(mode), follow_symlinks=False)
        if valid & (FATTR_UID | FATTR_GID) or not valid & ~FATTR_FH:
            # chown(-1, -1) arrives with nothing to set: it still copies up, as overlayfs does
            fs.chown(path, uid if valid & FATTR_UID else -1, gid if valid & FATTR_GID else -1, follow_symlinks=False)
        if valid & FATTR_SIZE:
            obj: Inode | Node | None = h.inode if h is not None else None
            if obj is None and (loc := self._node_loc(node)) is not None:
                obj = loc.up if loc.up is not None else loc.lo  # a lower file: copied up by the truncate
            if obj is not None and obj.kind == "f" and _sgid_without_xgrp(obj.mode):
                self._drop_sgid(node, obj, ctx)
            if h is not None and h.writable():
                h.truncate(size)
            else:
                fs.truncate(path, size)
        if valid & (FATTR_ATIME | FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW):
            st = fs.lstat(path)
            now = time.time_ns()
            at = now if valid & FATTR_ATIME_NOW else (atime * 1_000_000_000 + atimens if valid & FATTR_ATIME
                                                       else st.st_atime_ns)
            mt = now if valid & FATTR_MTIME_NOW else (mtime * 1_000_000_000 + mtimens if valid & FATTR_MTIME
                                                       else st.st_mtime_ns)
            fs.utime(path, ns=(at, mt), follow_symlinks=False)
        st = self._node_stat(node, fh)
        self._touch(node)
        if valid & FATTR_SIZE:
            node.sig = _sig(st)
        return self._attr_bytes(st)

    def _drop_sgid(self, node: _Node, o: Inode | Node, ctx: tuple[int, int, int]) -> None:
        """A write or truncate of a setgid file without group execute by a caller outside
        its group: the setgid bit goes (``setattr_should_drop_sgid``, Linux 6.2+). The
        kernel's FUSE layer still applies the older rule (setgid goes only with group
        execute), so the server applies this one itself, as the upper filesystem would
        under the kernel's overlayfs."""
        if _in_group_or_capable(ctx, o.gid):
            return
        mode = _stat.S_IMODE(o.mode) & ~_stat.S_ISGID
        path = self._path(node)
        if path is not None:
            self.fs.chmod(path, mode, follow_symlinks=False)
        elif isinstance(o, Inode):
            self._ov.setattr(o, mode=mode)  # no name left: nothing on disk shows it
        self._notify_inval_inode(node.id)

    def _changed(self, node: _Node, path: str) -> None:
        """After a change through ``path``: the node's identity (copied up?), its aliases."""
        with contextlib.suppress(OSError):
            self._note_key(node, self.fs.locate(path))
        self._touch(node)

    def _statfs(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        v = statfs(self.readonly)
        return _STATFS_OUT.pack(v["f_blocks"], v["f_bfree"], v["f_bavail"], v["f_files"], v["f_ffree"],
                                v["f_bsize"], v["f_namemax"], v["f_frsize"])

    def _access(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        mask, _ = _ACCESS_IN.unpack_from(body)
        check_access(self._node_stat(node), mask, self.readonly)
        return b""

    def _readlink(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        return os.fsencode(self.fs.readlink(self._need_path(node)))

    def _fsync(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        """FSYNC/FSYNCDIR: passed to a facade that keeps a durable copy (a write-through upperdir)."""
        sync = getattr(self.fs, "fsync", None)
        if sync is not None:
            (fh,) = _RELEASE_IN.unpack_from(body)  # fuse_fsync_in starts with fh
            sync(self._handles.get(fh), self._path(node))
        return b""

    # --- xattrs -----------------------------------------------------------------------------

    def _setxattr(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        size, flags = _XATTR_IN.unpack_from(body)
        rest = bytes(body[_XATTR_IN.size:])
        name, _, value = rest.partition(b"\0")
        self._writable()
        path = self._need_path(node)
        self.fs.setxattr(path, os.fsdecode(name), value[:size], flags, follow_symlinks=False)
        self._changed(node, path)
        return b""

    @staticmethod
    def _sized(value: bytes, size: int) -> bytes:
        if size == 0:
            return _WRITE_OUT.pack(len(value), 0)  # fuse_getxattr_out: the size needed
        if len(value) > size:
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
        return value

    def _getxattr(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes | int:
        size, _ = _XATTR_IN.unpack_from(body)
        name = _cstring(body[_XATTR_IN.size:])
        if name == CAPABILITY:
            # The kernel asks this before the first write to every file (file_remove_privs);
            # a file without it is answered from the node's name, no path, nothing raised.
            loc = self._node_loc(node)
            if loc is not None and CAPABILITY not in self.fs.overlay.effective(loc).xattrs:
                return errno.ENODATA
        return self._sized(self.fs.getxattr(self._need_path(node), name, follow_symlinks=False), size)

    def _listxattr(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        size, _ = _XATTR_IN.unpack_from(body)
        names = listable_xattrs(self.fs.listxattr(self._need_path(node), follow_symlinks=False), ctx[0])
        return self._sized(b"".join(os.fsencode(n) + b"\0" for n in names), size)

    def _removexattr(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        self._writable()
        path = self._need_path(node)
        self.fs.removexattr(path, _decode(body[:-1]), follow_symlinks=False)
        self._changed(node, path)
        return b""

    # --- names ------------------------------------------------------------------------------

    def _mknod(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        mode, rdev, _umask, _ = _MKNOD_IN.unpack_from(body)
        name = _cstring(body[_MKNOD_IN.size:])
        self._writable()
        path = self._child_path(parent, name)
        with self._as_caller(ctx):
            self.fs.mknod(path, mode, rdev)
        return self._entry(parent, name, path)

    def _mkdir(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        mode, _umask = _MKDIR_IN.unpack_from(body)
        name = _cstring(body[_MKDIR_IN.size:])
        self._writable()
        path = self._child_path(parent, name)
        with self._as_caller(ctx):
            self.fs.mkdir(path, mode & 0o7777)
        return self._entry(parent, name, path)

    def _symlink(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        name, target = _cstrings(body, 2)
        self._writable()
        path = self._child_path(parent, name)
        with self._as_caller(ctx):
            self.fs.symlink(target, path)
        return self._entry(parent, name, path)

    def _unlink(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        name = _decode(body[:-1])
        self._writable()
        self.fs.unlink(self._child_path(parent, name))
        self._touch(self._unname((parent.id, name)))
        return b""

    def _rmdir(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        name = _decode(body[:-1])
        self._writable()
        self.fs.rmdir(self._child_path(parent, name))
        self._unname((parent.id, name))
        return b""

    def _rename(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        (newdir,) = _RENAME_IN.unpack_from(body)
        return self._do_rename(parent, newdir, body[_RENAME_IN.size:], 0)

    def _rename2(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        newdir, flags, _ = _RENAME2_IN.unpack_from(body)
        return self._do_rename(parent, newdir, body[_RENAME2_IN.size:], flags)

    def _do_rename(self, parent: _Node, newdir: int, names: memoryview, flags: int) -> bytes:
        old, new = _cstrings(names, 2)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise errors.InvalidArgument(None)  # RENAME_WHITEOUT: overlayfs refuses it too
        self._writable()
        target = self._nodes.get(newdir)
        if target is None:
            raise errors.NotFound(None)
        src, dst = self._child_path(parent, old), self._child_path(target, new)
        exchange = bool(flags & RENAME_EXCHANGE)
        self.fs.rename(src, dst, noreplace=bool(flags & RENAME_NOREPLACE), exchange=exchange)
        okey, nkey = (parent.id, old), (target.id, new)
        if okey == nkey:
            return b""
        moved, there = self._unname(okey), self._unname(nkey)
        self._touch(moved)  # ctime changed: other nodes of the same inode must not keep it
        self._touch(there)
        for key, node in ((nkey, moved), (okey, there if exchange else None)):
            if node is not None and node.id in self._nodes:
                self._dentries[key] = node.id
                node.names.insert(0, key)
        return b""

    def _link(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        (oldid,) = _LINK_IN.unpack_from(body)
        name = _cstring(body[_LINK_IN.size:])
        self._writable()
        old = self._nodes.get(oldid)
        if old is None:
            raise errors.NotFound(None)
        src = self._need_path(old)
        dst = self._child_path(parent, name)
        self.fs.link(src, dst)
        loc, st = self._stat_loc(dst)
        self._note_key(old, loc)
        if old.key is not None:
            self._keys[old.key] = old.id
        node = self._node_for(parent, name, loc, _stat.S_IFMT(st.st_mode))
        self._touch(old)
        return self._entry_bytes(node.id, st)

    # --- directories ------------------------------------------------------------------------

    def _dir_loc(self, node: _Node) -> Loc | None:
        """The directory the node names now (None once it is gone: it reads as empty)."""
        try:
            d = self._node_loc(node)
        except OSError:
            return None
        return d if d is not None and d.is_dir else None

    def _listing(self, node: _Node, offset: int, d: Loc | None) -> list[tuple[str, int, int]]:
        """The directory's entries (with ``.`` and ``..``), fresh when read from the start."""
        if offset == 0 or node.listing is None:
            listing: list[tuple[str, int, int]] = []
            if d is not None:
                ov = self.fs.overlay
                ino = ov.ino(d)
                listing.append((".", ino, 4))
                listing.append(("..", ino, 4))
                for name in ov.names(d):
                    c = ov.child(d, name)
                    if c is None:  # a whiteout the kernel lists but cannot look up; glibc
                        # skips d_ino 0, so it gets libfuse's "unknown" number
                        listing.append((name, UNKNOWN_INO, _stat.S_IFCHR >> 12))
                    else:
                        listing.append((name, ov.ino(c), _stat.S_IFMT(ov.effective(c).st_mode) >> 12))
            node.listing = listing
        return node.listing

    def _readdir(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        return self._dirents(node, body, plus=False)

    def _readdirplus(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        return self._dirents(node, body, plus=True)

    def _dirents(self, node: _Node, body: memoryview, *, plus: bool) -> bytes:
        """READDIR(PLUS): the entries from ``offset`` that fit in ``size`` bytes; with
        ``plus`` each also carries its node and attributes (``.``, ``..`` and whiteouts none)."""
        _fh, offset, size, _ = _READ_IN.unpack_from(body)
        fs = self.fs
        ov = fs.overlay
        d = self._dir_loc(node)
        listing = self._listing(node, offset, d)
        head = _ENTRY.size + _DIRENT.size if plus else _DIRENT.size
        zero = bytes(_ENTRY.size)
        out = bytearray()
        for i in range(offset, len(listing)):
            name, ino, dtype = listing[i]
            raw = os.fsencode(name)
            rec = head + len(raw)
            padded = (rec + 7) & ~7
            if len(out) + padded > size:
                break
            if plus:
                c = ov.child(d, name) if d is not None and name not in (".", "..") else None
                if c is None:
                    out += zero
                else:
                    st = fs.stat_at(c)
                    child = self._node_for(node, name, c, _stat.S_IFMT(st.st_mode))
                    if child.names[0] == (node.id, name):
                        child.loc, child.loc_gen = c, self._names()
                    out += self._entry_bytes(child.id, st)
            out += _DIRENT.pack(ino, i + 1, len(raw), dtype) + raw + b"\0" * (padded - rec)
        return bytes(out)

    # --- files ------------------------------------------------------------------------------

    def _create(self, parent: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        flags, mode, _umask, _ = _CREATE_IN.unpack_from(body)
        name = _cstring(body[_CREATE_IN.size:])
        self._writable()
        flags = (flags & OPEN_FLAGS) | os.O_CREAT
        ploc = self._node_loc(parent)
        # The plain case by the parent's Loc (no path built and resolved twice); the facade
        # says None where os_open must decide.
        made = self.fs.create_at(ploc, name, flags, mode & 0o7777, ctx[0], ctx[1]) if ploc is not None else None
        if made is not None:
            h, loc = made
            self._names_kept()  # a new name in an upper directory: nothing resolved moved
            st = self.fs.stat_at(loc)
        else:
            path = self._child_path(parent, name)
            with self._as_caller(ctx):
                h = self.fs.os_open(path, flags, mode & 0o7777)
            loc, st = self._stat_loc(path)
        node = self._node_for(parent, name, loc, _stat.S_IFMT(st.st_mode))
        self._keep_loc(node, parent, name, loc)
        fh = self._add_handle(node, h)
        node.sig = _sig(st)
        opened = self._passthrough(node, h, flags, fh) if self._pt_on else None
        return self._entry_bytes(node.id, st) + (opened or _OPEN_OUT.pack(fh, 0, 0))

    def _open(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        flags, _ = _OPEN_IN.unpack_from(body)
        flags &= OPEN_FLAGS
        writing = flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC
        if writing and self.readonly:
            raise errors.ReadOnly(None)
        path = self._need_path(node)
        before = self.fs.overlay.generation
        # A write open of a lower object copies it up: its attributes as the kernel has
        # them, to tell after whether the copy changed any (the model's copy keeps them all).
        loc = self._node_loc(node) if writing else None
        shown = attr_fields(self.fs.stat_at(loc)) if loc is not None and loc.up is None else None
        h = self.fs.os_open(path, flags)
        fh = self._add_handle(node, h)
        st = h.stat()
        open_flags = self._open_flags(node, st)
        if self.fs.overlay.generation != before:
            if shown is None or attr_fields(st) != shown:
                # O_TRUNC, or a copy-up that changed them: the kernel does not know.
                self._notify_inval_inode(node.id)
            self._changed(node, path)
        opened = self._passthrough(node, h, flags, fh) if self._pt_on else None
        return opened or _OPEN_OUT.pack(fh, open_flags, 0)

    def _handle(self, node: _Node, fh: int) -> Handle:
        return self._handles[fh]

    def _read(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes | memoryview:
        fh, offset, size, _ = _READ_IN.unpack_from(body)
        h = self._handle(node, fh)
        if self._pt_live and h.inode is not None:
            self._pt_catch_up(h.inode)  # another node showing a file open with passthrough
        return h.pread(size, offset)

    def _write(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        fh, offset, size, _wflags, _lo, fl, _ = _WRITE_IN.unpack_from(body)
        h = self._handles[fh]
        if (fl ^ h.flags) & os.O_APPEND:  # fcntl(F_SETFL) changed it since the open
            h.set_append(bool(fl & os.O_APPEND))
        o = h.inode
        if o is not None and size and _sgid_without_xgrp(o.mode):
            self._drop_sgid(node, o, ctx)
        # the request buffer itself: the model and the upper file copy what they keep
        n = h.write_at(body[_WRITE_IN.size:_WRITE_IN.size + size], offset)
        self._names_kept()  # data and times of an upper inode (or nothing: a device)
        node.sig = (o.mtime_ns, o.size) if o is not None else _sig(h.stat())  # as _sig(h.stat())
        self._touch(node)
        return _WRITE_OUT.pack(n or 0, 0)

    def _release(self, node: _Node, body: memoryview, ctx: tuple[int, int, int]) -> bytes:
        (fh,) = _RELEASE_IN.unpack_from(body)
        h = self._handles.pop(fh)
        nid = self._handle_node.pop(fh, None)
        owner = self._nodes.get(nid) if nid is not None else None
        if owner is not None:
            owner.handles.discard(fh)
        try:
            if fh in self._pt_fhs:
                self._pt_fhs.discard(fh)
                self._pt_released(owner if owner is not None else node)
        finally:
            if h is not None:
                h.close()
        return b""

    # --- passthrough ------------------------------------------------------------------------

    def _passthrough(self, node: _Node, h: Handle, flags: int, fh: int) -> bytes | None:
        """The reply to an open of ``node`` (handle ``fh``, just added) with passthrough, or
        None: no passthrough, the kernel sends READ and WRITE here.

        A node's first passthrough open needs a handle holding the upper file open for
        writing, no other open handle (the kernel wants every open of a file the same kind),
        no other node showing its inode, and bytes the model holds itself or few of them
        (up to :data:`PT_REREAD_MAX` of a lower file's): the model reads the whole file
        back at the end, which must not put a large lower file into memory. Later opens of
        the node join, whatever their mode: the kernel requires it.
        """
        pt = node.pt
        if pt is not None:
            return self._pt_opened(pt, fh)
        fd = getattr(h, "upper_fd", -1)
        o = h.inode
        if fd < 0 or flags & os.O_ACCMODE == os.O_RDONLY or len(node.handles) != 1 or node.fmt != _stat.S_IFREG \
                or o is None or o.data is None or o.metacopy or flags & _O_DIRECT \
                or _sgid_without_xgrp(o.mode):
            return None  # (setgid without group execute: writes must come here, see _drop_sgid)
        if o.data.over_disk and o.data.size > PT_REREAD_MAX:
            return None
        shown = self._aliases.get(id(o))
        if shown is not None and shown - {node.id}:
            return None
        try:
            backing = fcntl.ioctl(self._fd, BACKING_OPEN, bytearray(_BACKING_MAP.pack(fd, 0, 0)), True)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                return None  # this file only: served without passthrough
            # EPERM (not CAP_SYS_ADMIN), ELOOP (an upper on a stacked filesystem), ...: the
            # same for every file of this mount, so ask no more.
            self._pt_on = False
            log.info("unionfs_sim FUSE: no passthrough (%s); reads and writes go through the server",
                     os.strerror(e.errno or 0))
            return None
        # The handle's descriptor becomes the file's own: this handle (released first or
        # with the others) leaves it open, the finish closes it.
        node.pt = pt = _Pt(int(backing), cast(_UpperBacked, h).lend_upper_fd(), o)
        self._pt_live[node.id] = node
        return self._pt_opened(pt, fh)

    def _pt_opened(self, pt: _Pt, fh: int) -> bytes:
        """The open reply for handle ``fh`` of a passthrough file (counted as one of its handles)."""
        pt.count += 1
        self._pt_fhs.add(fh)
        return _OPEN_OUT.pack(fh, FOPEN_PASSTHROUGH, pt.id)

    def _pt_released(self, node: _Node) -> None:
        """One passthrough handle of ``node`` released; at the last, the model takes the
        file's bytes and the backing id goes."""
        pt = node.pt
        if pt is None:
            return
        pt.count -= 1
        if pt.count > 0:
            return
        # Finished when the request loop finds nothing to answer (RELEASE comes after the
        # client's close returned, so it waits for nobody; the client's next request does),
        # or at once if another waits already: a released file is as one open with
        # passthrough until then (refreshed before requests, rejoined by an open).
        done = self._pt_done
        done.append(node)
        if len(done) > self._pt_deferred:
            self._pt_finish(done.popleft())

    def _pt_finish(self, node: _Node, *, ended: bool = False) -> None:
        """A released passthrough file: the model takes its bytes, the backing id goes
        (unless an open came back to it meanwhile). ``ended``: the connection is gone, and
        with it the kernel's ids and open files, whatever the count."""
        pt = node.pt
        if pt is None or pt.count > 0 and not ended:
            return
        node.pt = None
        self._pt_live.pop(node.id, None)
        try:
            self._pt_take(node, pt, full=True)
        finally:
            if not ended:
                with contextlib.suppress(OSError):
                    fcntl.ioctl(self._fd, BACKING_CLOSE, bytearray(struct.pack("<I", pt.id)), True)
            os.close(pt.fd)

    def _pt_idle(self, waiting: Any) -> None:
        """Between requests: finish the released passthrough files if no request waits
        (``waiting``: this thread's poll of /dev/fuse)."""
        if waiting.poll(0):
            return
        with self._lock:
            # As a request begins: changes since the last one count first (a copy-up by the
            # request just answered moves the names epoch), for the take vouches only for itself.
            self._names()
            done = self._pt_done
            while done:
                try:
                    self._pt_finish(done.popleft())
                except Exception as e:  # no request to answer with it: logged, the loop goes on
                    self.unexpected.append(e)
                    log.exception("unionfs_sim FUSE: finishing a passthrough file failed")

    def _pt_take(self, node: _Node, pt: _Pt, full: bool) -> None:
        """Bring the model's inode up to the upper file the kernel wrote: size and times,
        and with ``full`` the bytes."""
        st = os.fstat(pt.fd)
        seen = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if seen == pt.seen and not (full and pt.stale):
            return
        o = pt.inode
        data = o.data
        assert data is not None
        size = st.st_size
        if full:
            o.data = Data(_pread_all(pt.fd, 0, size))
            pt.stale = False
        else:
            data.truncate(size)  # the bytes are read at the end (no request of the file needs them before)
            pt.stale = True
        o.atime_ns, o.mtime_ns, o.ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        pt.seen = seen
        node.sig = None  # the kernel kept no pages of it: the next open must not keep any
        # Data and times of an upper inode: no name moved, so the names epoch may stay, if
        # it was current before (a copy-up not yet counted must still move it).
        current = self._ov.generation == self._seen
        self._ov.changed()
        if current:
            self._names_kept()
        self._touch(node)

    def _pt_refresh(self) -> None:
        """Before a request that answers with attributes: every passthrough file's size and times."""
        for node in list(self._pt_live.values()):
            if node.pt is not None:
                self._pt_take(node, node.pt, full=False)

    def _pt_catch_up(self, inode: Inode) -> None:
        """The model's bytes of ``inode`` as on disk, if it is open with passthrough."""
        for node in list(self._pt_live.values()):
            if node.pt is not None and node.pt.inode is inode:
                self._pt_take(node, node.pt, full=True)

    def _pt_drop(self) -> None:
        """The connection ended: the model takes what the kernel wrote, and what passthrough
        held is closed (the kernel dropped the ids)."""
        for node in list(self._pt_live.values()):
            with contextlib.suppress(OSError):
                self._pt_finish(node, ended=True)
        self._pt_done.clear()
        self._pt_fhs.clear()

    # --- the loop ---------------------------------------------------------------------------

    def _init(self, body: memoryview) -> bytes:
        major, minor, max_readahead, flags = _INIT_IN.unpack_from(body)
        self.proto = (major, minor)
        if major != 7:
            return _INIT_OUT.pack(7, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # the kernel answers with its own INIT
        want = ASYNC_READ | ATOMIC_O_TRUNC | BIG_WRITES | AUTO_INVAL_DATA | DO_READDIRPLUS | PARALLEL_DIROPS \
            | MAX_PAGES | CACHE_SYMLINKS
        flags2 = _INIT_IN_FLAGS2.unpack_from(body)[0] if flags & INIT_EXT and len(body) >= _INIT_IN_FLAGS2.size else 0
        # Passthrough needs a stacking depth: 1, as the upper file's filesystem is not
        # stacked itself (an upper on overlayfs gets ELOOP at the first open: then none).
        pt = self.passthrough and not self.readonly and bool(flags2 & PASSTHROUGH_FLAGS2)
        self._pt_on = pt
        return _INIT_OUT.pack(7, min(minor, 45), max_readahead, flags & want | (INIT_EXT if pt else 0), 0, 0,
                              MAX_WRITE, 1, MAX_WRITE // 4096, 0, PASSTHROUGH_FLAGS2 if pt else 0, 1 if pt else 0)

    def serve(self, fd: int) -> None:
        """Answer requests on ``fd`` until the connection ends (unmount or abort)."""
        me = threading.get_ident()
        self._workers.add(me)
        buf = bytearray(_BUFSIZE)
        mv = memoryview(buf)
        nodes = self._nodes
        handlers = self._handlers
        lock = self._lock
        ov = self._ov
        pack_out = _OUT.pack
        bufs = [buf]
        pt_live = self._pt_live
        waiting = select.poll()  # per thread: one poll object may not poll in two at once
        waiting.register(fd, select.POLLIN)
        try:
            while True:
                if self._pt_done:
                    self._pt_idle(waiting)
                try:
                    n = os.readv(fd, bufs)
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                        continue  # the request was interrupted before we read it
                    if e.errno in (errno.ENODEV, errno.ECONNABORTED):
                        return  # unmounted, or aborted
                    raise
                if n < _IN.size:
                    continue
                _length, opcode, unique, nid, uid, gid, pid = _IN.unpack_from(buf)
                body = mv[_IN.size:n]
                if opcode == FORGET:
                    with lock:
                        self._forget(nid, _FORGET_IN.unpack_from(body)[0])
                    continue
                if opcode == BATCH_FORGET:
                    count, _ = _BATCH_FORGET_IN.unpack_from(body)
                    with lock:
                        for k in range(count):
                            fnid, fn = _FORGET_ONE.unpack_from(body, _BATCH_FORGET_IN.size + k * _FORGET_ONE.size)
                            self._forget(fnid, fn)
                    continue
                if opcode == INTERRUPT:
                    continue
                name = OPNAMES.get(opcode)
                self.calls[name or f"op{opcode}"] += 1
                err = 0
                out: bytes | memoryview = b""
                if opcode == INIT:
                    out = self._init(body)
                elif opcode == DESTROY:
                    self._reply(fd, unique, 0, b"")
                    return
                else:
                    handler = handlers.get(opcode)
                    if handler is None:
                        err = -errno.ENOSYS
                    else:
                        try:
                            with lock:
                                self._dirty = False  # what the kernel caches from now on is current
                                if ov.generation != self._seen:  # changes made before it count (_names)
                                    self._names()
                                if pt_live and opcode not in _PT_QUIET:
                                    self._pt_refresh()
                                node = nodes.get(nid)
                                if node is None:
                                    raise errors.NotFound(None)
                                # SETATTR's reply carries the new attributes; OPEN drops them
                                self._serving = (nid, opcode in (SETATTR, OPEN))
                                try:
                                    res = handler(node, body, (uid, gid, pid))
                                finally:
                                    self._serving = _IDLE
                                if isinstance(res, int):  # an errno answered without raising
                                    err = -res
                                else:
                                    out = res
                        except FileNotFoundError:
                            # The node (or, creating, its directory) is gone from the view, so
                            # the kernel's name for it is stale (changed from Python, or a
                            # listing raced with an unlink): ESTALE makes the kernel look the
                            # path up again once, which then answers as the view does.
                            err = -(errno.ESTALE if opcode in _BY_NODE else errno.ENOENT)
                        except OSError as e:
                            err = -(e.errno or errno.EIO)
                        except Exception as e:  # a model bug: answer EIO, keep serving
                            self.unexpected.append(e)
                            log.exception("unionfs_sim FUSE %s failed", name)
                            err = -errno.EIO
                if self.trace is not None:
                    self.trace.debug("%s node=%d -> %s", name or opcode, nid,
                                     errno.errorcode.get(-err, err) if err else f"{len(out)} bytes")
                if len(out) <= 65536:
                    try:
                        os.write(fd, pack_out(_OUT.size + len(out), err, unique) + out)
                    except OSError:
                        self._reply(fd, unique, err, out)  # it says what went wrong
                else:
                    self._reply(fd, unique, err, out)
                if opcode == INIT:
                    if self.device is not None:
                        set_readahead(self.device, MAX_WRITE)  # only now: INIT's reply lowers it
                    self.initialized.set()
        finally:
            self._workers.discard(me)

    def _reply(self, fd: int, unique: int, err: int, out: bytes | memoryview) -> None:
        try:
            if len(out) > 65536:
                os.writev(fd, [_OUT.pack(_OUT.size + len(out), err, unique), out])
            else:
                os.write(fd, _OUT.pack(_OUT.size + len(out), err, unique) + out)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV):  # interrupted meanwhile / unmounted
                return
            # The kernel refused the reply (a bug here): the caller must not wait forever.
            self.unexpected.append(e)
            log.error("unionfs_sim FUSE: reply to request %d refused (%s); answering EIO", unique, e)
            with contextlib.suppress(OSError):
                os.write(fd, _OUT.pack(_OUT.size, -errno.EIO, unique))

    # --- invalidation -----------------------------------------------------------------------

    def _notify_inval_inode(self, nid: int) -> None:
        """Drop the kernel's cached attributes of a node (safe from inside a request)."""
        self._notify(NOTIFY_INVAL_INODE, _INVAL_INODE.pack(nid, -1, 0))

    def _notify(self, code: int, payload: bytes) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, _OUT.pack(_OUT.size + len(payload), code, 0) + payload)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                raise

    def _invalidate_all_attrs(self) -> None:
        for nid in list(self._nodes):
            self._notify_inval_inode(nid)

    def watch(self) -> None:
        """Called on every change of the view (under its lock): act on those made elsewhere.

        The first change from elsewhere (Python, another mount) since this server last
        answered a request drops every attribute the kernel cached, before the change's
        call returns: attribute invalidations wait for no lock, so this is safe here.
        Names are dropped by the background thread (see :meth:`invalidator`).
        """
        if threading.get_ident() in self._workers:
            return
        if not self._dirty:
            self._dirty = True
            for node in list(self._nodes.values()):
                node.sig = None
                node.listing = None
            self._invalidate_all_attrs()
        self._outside.set()

    def copied_up(self, loc: Loc) -> None:
        """Called when the view copies something up: drop what the kernel cached of it.

        The kernel knows the object it was asked to change, not the parents overlayfs
        copied up on the way, whose attributes (a merged directory's st_nlink is 1) and
        listing (whiteouts a single layer showed vanish) may change; nor, for a lower
        hard link, its other names (their st_ino and st_nlink may change): then every
        cached attribute goes. Safe inside a request and under the view's lock: no
        request waits holding a directory's page lock.
        """
        lo = loc.lo
        if lo is not None and loc.lpath is not None and not _stat.S_ISDIR(lo.st_mode) \
                and self.fs.overlay.lower.nlink(loc.lpath, lo) > 1:
            self._invalidate_all_attrs()
        nid = ROOT_ID
        path = loc.path
        for name in path.split("/") if path else ():
            found = self._dentries.get((nid, name))
            if found is None:
                return  # the kernel never looked it up: nothing cached
            nid = found
        node = self._nodes.get(nid)
        if node is None:
            return
        node.listing = None
        if node.fmt != _stat.S_IFDIR and self._serving == (nid, True):
            return  # the file the request changes: its reply (or _open) updates the kernel
        self._notify(NOTIFY_INVAL_INODE, _INVAL_INODE.pack(nid, 0 if node.fmt == _stat.S_IFDIR else -1, 0))

    def invalidator(self) -> None:
        """Background thread: after changes made elsewhere, drop every name the kernel cached.

        A name removed, renamed or replaced from Python would otherwise keep its old node
        until the entry timeout.
        """
        while not self._stopping:
            self._outside.wait()
            if self._stopping:
                return
            self._outside.clear()
            with self._lock:
                names = list(self._dentries)
            # Outside the lock: an entry invalidation waits for the directory's lock, which a
            # request in progress may hold while it waits for ours.
            for pid, name in names:
                raw = os.fsencode(name)
                self._notify(NOTIFY_INVAL_ENTRY, _INVAL_ENTRY.pack(pid, len(raw), 0) + raw + b"\0")

    def stop(self) -> None:
        """Let the invalidator thread end."""
        self._stopping = True
        self._outside.set()

    def close_all(self) -> None:
        """Close every handle still open (the session ended)."""
        with self._lock:
            self._pt_drop()
            self._handles.close_all()
            self._handle_node.clear()


# --- mounting ---------------------------------------------------------------------------------





















def parse_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``-o`` options: unknown ones raise MountError, as libfuse refuses them."""
    out = {}
    for k, v in options.items():
        if v is False or v is None:
            continue
        if k not in _FLAG_OPTIONS and k not in _VALUE_OPTIONS:
            raise MountError(f"fuse: unknown option '{k}'" if v is True else f"fuse: unknown option '{k}={v}'")
        out[k] = v
    return out


def mount_flags(opts: Mapping[str, Any]) -> int:
    """mount(2) flags from ``-o`` options (nosuid and nodev unless asked otherwise, as libfuse)."""
    flags = MS_NOSUID | MS_NODEV
    for k, _on, off in (("suid", 0, MS_NOSUID), ("dev", 0, MS_NODEV)):
        if opts.get(k):
            flags &= ~off
    table = {"ro": MS_RDONLY, "noexec": MS_NOEXEC, "sync": MS_SYNCHRONOUS, "dirsync": MS_DIRSYNC,
             "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
             "strictatime": MS_STRICTATIME, "lazytime": MS_LAZYTIME}
    for k, bit in table.items():
        if opts.get(k):
            flags |= bit
    return flags


def kernel_mount(mountpoint: str, opts: Mapping[str, Any]) -> int:
    """Mount FUSE at ``mountpoint``; the ``/dev/fuse`` descriptor serving it.

    As root with mount(2); otherwise through ``fusermount3``/``fusermount``.

    Raises:
        FuseUnavailable: no /dev/fuse, or not root and no fusermount.
        MountError: the kernel or fusermount refused (with its reason).
    """
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailable("/dev/fuse does not exist (no FUSE in this kernel or container; modprobe fuse)")
    if not opts.get("nonempty") and os.path.isdir(mountpoint) and os.listdir(mountpoint):
        raise MountError(f"fuse: mountpoint is not empty: {mountpoint}"
                         " (if you are sure this is safe, use the 'nonempty' mount option)")
    fsname = str(opts.get("fsname", "unionfs-sim"))
    fstype = "fuse." + str(opts["subtype"]) if opts.get("subtype") else "fuse"
    kernel_opts = []
    for k in ("allow_other", "default_permissions"):
        if opts.get(k):
            kernel_opts.append(k)
    for k in ("max_read", "blksize"):
        if opts.get(k) not in (None, False, True):
            kernel_opts.append(f"{k}={opts[k]}")
    if os.geteuid() == 0:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        data = ",".join([f"fd={fd}", "rootmode=40000", f"user_id={os.getuid()}", f"group_id={os.getgid()}",
                         *kernel_opts])
        r = libc().mount(fsname.encode(), os.fsencode(mountpoint), fstype.encode(), mount_flags(opts), data.encode())
        if r != 0:
            e = ctypes.get_errno()
            os.close(fd)
            raise MountError(f"mount -t {fstype} at {mountpoint} failed: {os.strerror(e)}")
        return fd
    return _fusermount(mountpoint, fsname, str(opts.get("subtype") or ""), kernel_opts, opts)


def _fusermount(mountpoint: str, fsname: str, subtype: str, kernel_opts: list[str], opts: Mapping[str, Any]) -> int:
    """Mount as a user: fusermount mounts and sends the /dev/fuse descriptor back (SCM_RIGHTS)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    o = [f"fsname={fsname}", *kernel_opts] + ([f"subtype={subtype}"] if subtype else [])
    for k in ("ro", "noexec", "noatime", "nodiratime", "sync", "dirsync"):
        if opts.get(k):
            o.append(k)
    try:
        for tool in ("fusermount3", "fusermount"):
            try:
                p = subprocess.run([tool, "-o", ",".join(o), "--", mountpoint], pass_fds=(theirs.fileno(),),
                                   env={**os.environ, "_FUSE_COMMFD": str(theirs.fileno())},
                                   capture_output=True, timeout=30, check=False)
            except FileNotFoundError:
                continue
            if p.returncode != 0:
                raise MountError(f"{tool} could not mount {mountpoint}: "
                                 f"{p.stderr.decode(errors='replace').strip() or 'exit status ' + str(p.returncode)}")
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
            if not fds:
                raise MountError(f"{tool} mounted {mountpoint} but sent no /dev/fuse descriptor")
            return fds[0]
        raise FuseUnavailable("not root, and neither fusermount3 nor fusermount is installed")
    finally:
        ours.close()
        theirs.close()


class Session:
    """One mount served by a :class:`Server`: the kernel mount, its threads, its teardown.

    The same interface as the libfuse2 session of :mod:`unionfs_sim.fuse`.
    """

    def __init__(self, server: Server, mountpoint: str, options: Mapping[str, Any]) -> None:
        self.server = server
        self.mountpoint = mountpoint
        self.realpath = os.path.realpath(mountpoint)
        self.opts = parse_options(options)
        self.fd = -1
        self._threads: list[threading.Thread] = []
        self._invalidator: threading.Thread | None = None
        self.mount_id: int | None = None
        self.device: str | None = None
        self._watching = False

    def mount(self, *, threads: bool = True) -> None:
        """Mount (in this thread) and start serving (in daemon threads)."""
        self.fd = kernel_mount(self.realpath, self.opts)
        self.server._fd = self.fd
        for mid, dev, fstype in reversed(mounts_at(self.realpath)):
            if fstype.startswith("fuse"):
                self.mount_id, self.device = mid, dev
                break
        self.server.device = self.device
        ov = self.server.fs.overlay
        ov.watchers.append(self.server.watch)
        ov.copy_watchers.append(self.server.copied_up)
        self._watching = True
        for i in range(4 if threads else 1):
            t = threading.Thread(target=self.server.serve, args=(self.fd,), name=f"fuse:{self.mountpoint}:{i}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        if not self.server.immutable:
            self._invalidator = threading.Thread(target=self.server.invalidator, name=f"fuse-inval:{self.mountpoint}",
                                                 daemon=True)
            self._invalidator.start()

    @property
    def serving(self) -> bool:
        """True while a request thread runs."""
        return any(t.is_alive() for t in self._threads)

    def mounted(self) -> bool:
        """True while the kernel mount of this session exists."""
        return still_mounted(self.mount_id, self.realpath, self.serving)

    def join(self, timeout: float | None) -> bool:
        """Wait for the request threads to end; True if they did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.serving

    def abort(self) -> bool:
        """Abort the connection (fusectl): every request fails, the threads end."""
        return self.device is not None and abort_connection(self.device)

    def free(self) -> None:
        """Release everything once the threads have ended (closes /dev/fuse)."""
        if self.serving:
            return
        if self._watching:
            with contextlib.suppress(ValueError):
                self.server.fs.overlay.watchers.remove(self.server.watch)
            with contextlib.suppress(ValueError):
                self.server.fs.overlay.copy_watchers.remove(self.server.copied_up)
            self._watching = False
        self.server.stop()
        if self._invalidator is not None:
            self._invalidator.join(5)
        self.server.close_all()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.server._fd = -1
            os.close(fd)


def timeouts(options: Mapping[str, Any]) -> dict[str, float | None]:
    """entry/attr/negative timeouts from ``-o`` options (None: the server's default)."""
    out: dict[str, float | None] = {}
    for k in ("entry_timeout", "attr_timeout", "negative_timeout"):
        v = options.get(k)
        out[k] = None if v in (None, False, True) else float(v)
    return out


def kernel_backend_unavailable() -> str | None:
    """Why this server cannot mount here (None: it can)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if os.geteuid() != 0 and not any(os.path.exists(os.path.join(d, t)) for d in os.get_exec_path()
                                     for t in ("fusermount3", "fusermount")):
        return "not root and no fusermount3"
    return None


__all__ = ["MAX_WRITE", "RENAME_EXCHANGE", "RENAME_NOREPLACE", "RENAME_WHITEOUT", "Server", "Session",
           "abort_connection", "attr_fields", "fusectl", "kernel_backend_unavailable", "kernel_mount", "libc",
           "mount_flags", "mounts_at", "parse_options", "renameat2", "timeouts"]
