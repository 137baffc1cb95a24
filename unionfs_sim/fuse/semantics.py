"""What both FUSE servers answer the same way, written once.

The /dev/fuse server (:mod:`.server`) and the fusepy fallback (:mod:`.libfuse`) differ in how
requests arrive (a node id and a name, or a path) but not in what a request means: which
open flags reach the model, what statfs reports, how access(2) is answered, how a file is
created as the calling process, how open files are numbered, and what a session offers the
:class:`~unionfs_sim.fuse.mounting.Mount` that runs it.
"""

from __future__ import annotations

import contextlib
import os
import stat as _stat
import threading
from typing import Protocol

from .. import errors
from ..fs import FileSystem, Handle
from ..linux import mounts_at

OPEN_FLAGS = (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_TRUNC | os.O_DIRECTORY | os.O_NOFOLLOW
              | os.O_CREAT | os.O_EXCL | os.O_SYNC | os.O_DSYNC)
"""The open flags passed on to the model (the kernel adds O_LARGEFILE, FMODE_EXEC ...)."""

STATFS_BLOCKS = 1 << 32
"""What statfs reports as total and free blocks (of 4 KiB) and inodes: the model has no size limit."""
BLOCK_SIZE = 4096
NAME_MAX = 255


def statfs(readonly: bool) -> dict[str, int]:
    """statfs(2) of the view: unlimited space and inodes, none free on a read-only mount."""
    free = 0 if readonly else STATFS_BLOCKS
    return {"f_bsize": BLOCK_SIZE, "f_frsize": BLOCK_SIZE, "f_blocks": STATFS_BLOCKS, "f_bfree": free,
            "f_bavail": free, "f_files": STATFS_BLOCKS, "f_ffree": free, "f_favail": free, "f_namemax": NAME_MAX}


def check_access(st: os.stat_result, mask: int, readonly: bool) -> None:
    """access(2) as root asks it (the kernel checks the caller's modes itself with
    ``default_permissions``): EROFS for W_OK on a read-only mount, EACCES for X_OK on a
    file with no execute bit."""
    if mask & os.W_OK and readonly:
        raise errors.ReadOnly(None)
    if mask & os.X_OK and not _stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o111:
        raise errors.AccessDenied(None)


def listable_xattrs(names: list[str], uid: int) -> list[str]:
    """The xattr names listxattr(2) shows the caller: ``trusted.*`` to root only, as
    overlayfs does (``ovl_can_list``)."""
    return names if uid == 0 else [n for n in names if not n.startswith("trusted.")]


class as_caller:  # noqa: N801 - used as a function: ``with as_caller(fs, uid, gid):``
    """Create as the calling process: new files get its uid/gid and no second umask (the
    kernel applied the caller's umask to the mode already). The caller holds ``fs.lock``.

    A class, not a generator context manager: it runs for every create, and the generator
    version took about 7 us of it (measured under load).
    """

    __slots__ = ("fs", "saved", "uid", "gid")

    def __init__(self, fs: FileSystem, uid: int, gid: int) -> None:
        self.fs, self.uid, self.gid = fs, uid, gid

    def __enter__(self) -> None:
        fs = self.fs
        self.saved = fs.umask, fs.uid, fs.gid
        fs.umask, fs.uid, fs.gid = 0, self.uid, self.gid

    def __exit__(self, *exc: object) -> None:
        self.fs.umask, self.fs.uid, self.fs.gid = self.saved


class Handles:
    """The open files of a mount, by the number (``fh``) the kernel passes back."""

    def __init__(self) -> None:
        self._by_fh: dict[int, Handle] = {}
        self._next = 1
        self._lock = threading.Lock()

    def add(self, h: Handle) -> int:
        """Number ``h`` and keep it until :meth:`pop`."""
        with self._lock:
            fh = self._next
            self._next += 1
            self._by_fh[fh] = h
        return fh

    def get(self, fh: int) -> Handle | None:
        """The handle numbered ``fh``, or None."""
        return self._by_fh.get(fh)

    def __getitem__(self, fh: int) -> Handle:
        """The handle numbered ``fh``; EBADF if there is none."""
        try:
            return self._by_fh[fh]
        except KeyError:
            raise errors.BadFileDescriptor(None) from None

    def pop(self, fh: int) -> Handle | None:
        """Forget (and return) the handle numbered ``fh``."""
        return self._by_fh.pop(fh, None)

    def close_all(self) -> None:
        """Close and forget every handle (when the mount ends)."""
        handles = list(self._by_fh.values())
        self._by_fh.clear()
        for h in handles:
            with contextlib.suppress(OSError):
                h.close()

    def __len__(self) -> int:
        return len(self._by_fh)

    def values(self) -> list[Handle]:
        """The open handles."""
        return list(self._by_fh.values())


def still_mounted(mount_id: int | None, realpath: str, serving: bool) -> bool:
    """True while the kernel mount ``mount_id`` at ``realpath`` exists (``serving`` when its
    id is unknown, as for a mount libfuse made)."""
    if mount_id is None:
        return serving
    return any(mid == mount_id for mid, _d, _t in mounts_at(realpath))


class Session(Protocol):
    """A mounted server as :class:`~unionfs_sim.fuse.mounting.Mount` drives it (both servers' sessions)."""

    def mount(self, *, threads: bool = True) -> None:
        """Mount and start serving from background threads."""

    @property
    def serving(self) -> bool:
        """True while a request loop runs."""

    def mounted(self) -> bool:
        """True while the kernel mount exists."""

    def join(self, timeout: float | None) -> bool:
        """Wait for the request loops to end; True if they did."""

    def abort(self) -> bool:
        """Abort the FUSE connection (its users get ENOTCONN); False if it cannot."""

    def free(self) -> None:
        """Release what the session holds once it has ended."""
