"""Linux system calls and mount helpers that :mod:`os` lacks, in one place.

mount(2)/umount2(2)/renameat2(2) through ctypes, the mount table (``/proc/self/mountinfo``),
and the FUSE control filesystem (aborting a connection, the readahead of a mount). Used by
both FUSE servers, the fuse-overlayfs drop-in and the kernel oracle in :mod:`.testing`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
"""renameat2(2) flags."""
AT_FDCWD = -100
MNT_DETACH = 2
"""umount2(2): detach now, finish when no longer busy (``umount -l``)."""
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_DIRSYNC = 1, 2, 4, 8, 16, 128
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME = 1024, 2048, 1 << 21, 1 << 24, 1 << 25


def unmount(path: str, *, lazy: bool) -> int:
    """Unmount ``path``: 0, or the errno (EBUSY when something still uses it)."""
    if os.geteuid() == 0:
        if libc().umount2(os.fsencode(path), MNT_DETACH if lazy else 0) == 0:
            return 0
        return ctypes.get_errno()
    for tool in ("fusermount", "fusermount3"):
        try:
            r = subprocess.run([tool, "-u", "-q", *(["-z"] if lazy else []), path], capture_output=True, timeout=30,
                               check=False)
        except FileNotFoundError:
            continue
        return 0 if r.returncode == 0 else errno.EBUSY
    return errno.ENOENT


_LONG = 3000
"""Past this many bytes :func:`reachable` walks to a path instead of naming it whole."""


def too_long(path: str) -> bool:
    """Whether :func:`reachable` would walk to ``path`` (a cheap test for the common case)."""
    return len(path) >= _LONG // 4 and len(os.fsencode(path)) >= _LONG


def open_dir_walking(path: str) -> int:
    """An ``O_PATH`` descriptor of directory ``path`` of any length, opened a few
    components at a time (each step shorter than PATH_MAX), as ``openat`` walks do."""
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    parts = [p for p in path.split("/") if p]
    fd = os.open("/" if path.startswith("/") else ".", flags)
    try:
        step: list[str] = []
        size = 0
        for i, part in enumerate(parts):
            step.append(part)
            size += len(os.fsencode(part)) + 1
            if size >= _LONG or i == len(parts) - 1:
                nfd = os.open("/".join(step), flags, dir_fd=fd)
                os.close(fd)
                fd, step, size = nfd, [], 0
    except BaseException:
        os.close(fd)
        raise
    return fd


class reachable:  # noqa: N801 - used as a function: ``with reachable(path) as where:``
    """``path`` in a form one system call takes: itself, or when it is past PATH_MAX (a lower
    or upper directory's deep tree), its last component under ``/proc/self/fd/N``, N being
    its directory opened by :func:`open_dir_walking` and closed on leaving.

    A class, not a generator context manager: it runs for every lower file read or copied
    up, nearly always for a short path (the generator version cost a few us each time).
    """

    __slots__ = ("fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> str:
        path = self.path
        if not too_long(path):
            return path
        parent, name = os.path.split(path)
        self.fd = open_dir_walking(parent)
        return f"/proc/self/fd/{self.fd}/{name}"

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


_libc: Any = None


def libc() -> Any:
    """The C library with mount(2), umount2(2) and renameat2(2) prototypes (errno kept)."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        lib.mount.restype = ctypes.c_int
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.umount2.restype = ctypes.c_int
        lib.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        lib.renameat2.restype = ctypes.c_int
        _libc = lib
    return _libc


def renameat2(src: str | bytes, dst: str | bytes, flags: int) -> None:
    """renameat2(2) (RENAME_NOREPLACE, RENAME_EXCHANGE ...), which :mod:`os` lacks."""
    if libc().renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(src), None, os.fsdecode(dst))


def unescape_mountinfo(s: str) -> str:
    """A path as mountinfo escapes it (``\\040`` for a space ...), unescaped."""
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_at(path: str) -> list[tuple[int, str, str]]:
    """``(mount id, major:minor, fstype)`` of every mount at ``path`` (/proc/self/mountinfo)."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if unescape_mountinfo(fields[4]) != path:
                continue
            fstype = fields[fields.index("-") + 1]
            out.append((int(fields[0]), fields[2], fstype))
    return out


FUSECTL = "/sys/fs/fuse/connections"


def set_readahead(device: str, nbytes: int) -> bool:
    """Set how far the kernel reads ahead on the mount with device number ``device``.

    FUSE mounts start at 128 KiB (and INIT can only lower that), so a sequential read
    costs a request per 128 KiB; at the size of one READ (1 MiB) it costs a quarter of
    the requests. Root only (sysfs); False where it cannot be set.
    """
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(nbytes // 1024))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def fusectl() -> Iterator[str | None]:
    """The FUSE control filesystem's directory, or None if it cannot be had.

    It is how a FUSE connection that a lazy unmount left in use is aborted. systemd
    mounts it at /sys/fs/fuse/connections; where nobody did (containers), root mounts it
    on a temporary directory for the time it is needed and unmounts it again.
    """
    if mounts_at(FUSECTL):
        yield FUSECTL
        return
    if os.geteuid() != 0:
        yield None
        return
    where = tempfile.mkdtemp(prefix="unionfs-sim-fusectl-")
    try:
        if libc().mount(b"fusectl", where.encode(), b"fusectl", 0, None) != 0:
            yield None
            return
        try:
            yield where
        finally:
            libc().umount2(where.encode(), 0)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)


def abort_connection(device: str) -> bool:
    """Abort the FUSE connection of the mount with device number ``device`` ("0:53"): every
    request in it fails with ENOTCONN, and its server's reads end. False if it cannot."""
    major, minor = (int(x) for x in device.split(":"))
    # The control directory is named after the connection's device number.
    name = str(minor if major == 0 else (major << 20) | minor)
    with fusectl() as ctl:
        if ctl is None:
            return False
        try:
            with open(os.path.join(ctl, name, "abort"), "w") as f:
                f.write("1")
        except OSError:
            return False
    return True
