"""Mounting a view with FUSE: :func:`mount`, the :class:`Mount` it returns, and the choice of server.

Two servers can serve a mount: :mod:`.server` speaks the kernel's protocol on
``/dev/fuse`` itself (the default; no library needed) and :mod:`.libfuse` runs fusepy on
libfuse2 (the portable fallback, ``backend="libfuse"``). This module imports neither
until a mount is made, and never imports fusepy unless the libfuse backend is asked
for or is the only one that can mount, so ``import unionfs_sim`` stays free of it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self, Union

from ..errors import FuseUnavailable, MountError
from ..linux import unmount
from . import options as fuse_options

if TYPE_CHECKING:
    from ..container import Container
    from ..fs import FileSystem
    from ..image import Image
    from .semantics import Session

MountSource = Union["Container", "Image", "FileSystem"]
"""What can be mounted: a container (read-write), an image (read-only) or a facade."""

__all__ = ["FuseUnavailable", "Mount", "MountError", "MountSource", "choose_backend", "default_options",
           "explain_mountpoint", "fs_of", "fuse_unavailable", "fusepy_missing", "mount"]


def fusepy_missing() -> str | None:
    """Why the libfuse2 backend cannot run here (no fusepy, no libfuse2), or None.

    Imports fusepy when it is there: call it only when that backend is considered.
    """
    from . import libfuse

    return libfuse.FUSEPY_MISSING


def fs_of(source: MountSource, readonly: bool | None) -> tuple[FileSystem, bool, bool]:
    """``(facade, mount read-only, view immutable)`` for a mount source.

    Raises:
        ValueError: ``readonly=False`` for an image (its view cannot change).
        TypeError: not a Container, Image or FileSystem.
    """
    from ..container import Container
    from ..fs import FileSystem
    from ..image import Image

    if isinstance(source, Container):
        return source.fs, bool(readonly), False
    if isinstance(source, Image):
        if readonly is False:
            raise ValueError("an image's view is read-only: mount image.container() to write")
        return source.fs, True, True
    if isinstance(source, FileSystem):
        if source.readonly and readonly is False:
            raise ValueError("this view is read-only")
        return source, bool(readonly) or source.readonly, source.readonly
    raise TypeError(f"cannot mount {source!r}: expected a Container, an Image or a FileSystem")


def fuse_unavailable() -> str | None:
    """Why a FUSE mount cannot work on this machine, or None.

    Cheap, and imports no FUSE library: for a test's skip reason, or to choose another
    view. The default server needs /dev/fuse and root or fusermount3; the fallback needs
    libfuse2 and fusepy.
    """
    import ctypes.util
    import importlib.util

    from .server import kernel_backend_unavailable

    why = kernel_backend_unavailable()
    if why is None:
        return None
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if ctypes.util.find_library("fuse") is None:
        return f"{why}, and libfuse2 (libfuse.so.2) is not installed; e.g. apt-get install libfuse2"
    if importlib.util.find_spec("fuse") is None:
        return f"{why}, and fusepy is not installed; pip install 'unionfs-sim[fuse]'"
    return None


@contextlib.contextmanager
def mount(source: MountSource, mountpoint: str | os.PathLike[str], *, readonly: bool | None = None,
          allow_other: bool = False, default_permissions: bool | None = None, threads: bool = True,
          timeout: float = 10.0, backend: str = "auto", **fuse_options: Any) -> Iterator[Mount]:
    """Mount ``source``'s merged view at ``mountpoint`` (FUSE) for a ``with`` block.

    The mount is served from a background thread of this process, so the block (and
    other threads and processes) can use it with plain ``os`` calls. A container is
    mounted read-write: every change lands in ``container.upper`` before the system call
    returns. An image is mounted read-only (writes fail with EROFS). Leaving the block
    always unmounts (lazily if something still uses the mount) and stops serving.

    Changes made to the container from Python while it is mounted (``c.fs.write_bytes``)
    are visible through the mount too: with the default (kernel) backend, whatever the
    kernel cached is dropped at the next request and, within milliseconds, by a
    background thread; with ``backend="libfuse"`` a name added or removed that way may
    take up to ``entry_timeout`` (1 s) to appear or vanish. Changes through the mount are
    always seen at once.

        with ufs.mount(c, mnt):
            with open(f"{mnt}/etc/hostname", "w") as f:
                f.write("web1\\n")
        assert c.fs.read_bytes("/etc/hostname") == b"web1\\n"

    Args:
        source: a Container, an Image, or a FileSystem facade.
        mountpoint: an existing, empty directory.
        readonly: mount read-only (default: only for an image).
        allow_other: let other users in (non-root needs ``user_allow_other`` in /etc/fuse.conf).
        default_permissions: the kernel checks permission bits and owners against the
            caller (default: whenever someone other than root can use the mount).
        threads: serve from several threads (default) or a single one.
        timeout: seconds to wait for the mount to come up.
        backend: ``"kernel"`` (:mod:`unionfs_sim.fuse.server`, the /dev/fuse protocol),
            ``"libfuse"`` (fusepy on libfuse2) or ``"auto"`` (see
            :func:`unionfs_sim.fuse.choose_backend`).
        fuse_options: more ``-o`` options, overriding the defaults of
            :func:`unionfs_sim.fuse.default_options` (``True`` for a flag, ``False`` to drop
            one, else ``key=value``), e.g. ``attr_timeout=1``.

    Yields:
        The :class:`~unionfs_sim.fuse.Mount` (``.mountpoint``, ``.alive``, ``.unmount()``).

    Raises:
        FuseUnavailable: no /dev/fuse, or neither server can mount here (not root and no
            fusermount3; no libfuse2 or fusepy for the fallback).
        MountError: the kernel or libfuse refused (the reason is included, e.g. a non-empty
            mountpoint without ``nonempty=True``), or the mount did not come up.
    """
    fs, ro, immutable = fs_of(source, readonly)
    backend = choose_backend(backend)
    opts = default_options(immutable=immutable, readonly=ro, allow_other=allow_other,
                           default_permissions=default_permissions, backend=backend)
    opts.update(fuse_options)
    m = Mount(fs, mountpoint, opts, readonly=ro, threads=threads, backend=backend)
    m.start(timeout)
    try:
        yield m
    finally:
        m.unmount()




def explain_mountpoint(path: str) -> str | None:
    """Why ``path`` cannot be mounted on, saying what to do about it; None if it can.

    A FUSE mount whose server died stays behind: stat(2) of it fails with ENOTCONN
    ("transport endpoint is not connected"); it is cleared with ``fusermount3 -u`` (or
    ``umount -l`` as root), which this says.
    """
    import shlex
    import stat as _stat

    try:
        st = os.stat(path)
        os.statvfs(path)  # stat may answer from the kernel's cache; statfs asks the server
    except OSError as e:
        q = shlex.quote(path)
        if e.errno == errno.ENOTCONN:
            return (f"{path}: a FUSE mount whose server is gone is still there (transport endpoint is not"
                    f" connected); clear it with: fusermount3 -u {q}   (or as root: umount -l {q})")
        if e.errno == errno.ENOENT:
            return f"{path}: no such directory (the mountpoint must be an existing directory)"
        return f"{path}: {e.strerror}"
    if not _stat.S_ISDIR(st.st_mode):
        return f"{path}: not a directory (the mountpoint must be a directory)"
    return None


def choose_backend(backend: str = "auto") -> str:
    """``"kernel"`` (:mod:`unionfs_sim.fuse.server`) or ``"libfuse"`` (fusepy).

    ``"auto"``: the environment variable ``UNIONFS_SIM_FUSE_BACKEND`` if set, else the
    kernel backend where it can mount (root, or a user with fusermount3), else libfuse.
    """
    if backend == "auto":
        backend = os.environ.get("UNIONFS_SIM_FUSE_BACKEND", "auto") or "auto"
    if backend == "auto":
        from .server import kernel_backend_unavailable

        why = kernel_backend_unavailable()
        if why is None:
            return "kernel"
        missing = fusepy_missing()
        if missing is not None:
            raise FuseUnavailable(f"FUSE cannot mount here: {why}; and the libfuse backend: {missing}")
        return "libfuse"
    if backend not in ("kernel", "libfuse"):
        raise ValueError(f"unknown FUSE backend {backend!r} (expected 'auto', 'kernel' or 'libfuse')")
    if backend == "libfuse" and (missing := fusepy_missing()) is not None:
        raise FuseUnavailable(f"the libfuse backend needs fusepy and libfuse2 ({missing});"
                              " e.g. apt-get install libfuse2 && pip install fusepy")
    return backend


def default_options(*, immutable: bool, readonly: bool, allow_other: bool = False,
                    default_permissions: bool | None = None, fsname: str = "unionfs-sim",
                    backend: str = "auto") -> dict[str, Any]:
    """The FUSE ``-o`` options :func:`mount` uses (see the module docs for why).

    Args:
        immutable: the view can never change (an image's): cache everything for long.
        readonly: mount ``ro``.
        allow_other: let users other than the mounting one in.
        default_permissions: let the kernel check permissions (None: when someone other
            than root can use the mount, i.e. with ``allow_other`` or when not root).
        fsname: what /proc/mounts shows as the source.
        backend: the server the options are for (see :func:`choose_backend`); the kernel
            backend chooses its cache timeouts itself (see :mod:`unionfs_sim.fuse.server`).
    """
    if default_permissions is None:
        default_permissions = allow_other or os.geteuid() != 0
    opts: dict[str, Any] = {
        "fsname": fsname, "subtype": "unionfs-sim", "use_ino": True,
        "atomic_o_trunc": True, "big_writes": True, "default_permissions": default_permissions,
        "allow_other": allow_other, "ro": readonly or immutable,
    }
    if choose_backend(backend) == "kernel":
        if immutable:
            opts["kernel_cache"] = True
        return opts
    if immutable:
        opts.update(kernel_cache=True, entry_timeout=3600, negative_timeout=3600, attr_timeout=3600)
    else:
        opts.update(auto_cache=True, entry_timeout=1, negative_timeout=1, attr_timeout=0)
    return opts


_live: weakref.WeakSet[Mount] = weakref.WeakSet()


class Mount:
    """A mounted view, served from a background thread.

    Attributes:
        mountpoint: where it is mounted.
        fs: the facade it serves.
        operations: the :class:`OverlayOperations` (its ``calls`` count requests).
        options: the ``-o`` options it was mounted with.
        readonly: mounted ``ro``.
    """

    def __init__(self, fs: FileSystem, mountpoint: str | os.PathLike[str], options: Mapping[str, Any], *,
                 readonly: bool, threads: bool = True, backend: str = "auto") -> None:
        self.mountpoint = os.fspath(mountpoint)
        self.fs = fs.unbounded()
        self.readonly = readonly
        self.backend = choose_backend(backend)
        self.operations: Any
        if self.backend == "kernel":
            from . import server

            self.operations = server.Server(fs, readonly=readonly, immutable=fs.readonly,
                                            keep_cache=bool(options.get("kernel_cache")), **server.timeouts(options))
        else:
            from . import libfuse

            self.operations = libfuse.OverlayOperations(fs, readonly=readonly, no_open=fs.readonly)
        self._opts = dict(options)
        if readonly:
            self._opts["ro"] = True
        self.options = fuse_options.to_list(self._opts)
        self._threads = threads
        self._session: Session | None = None
        self._pid = os.getpid()  # a forked child must not unmount its parent's mount

    def start(self, timeout: float = 10.0) -> None:
        """Mount and wait until the kernel's INIT request is answered.

        Raises:
            FuseUnavailable: no /dev/fuse.
            MountError: libfuse refused (its message is included), or the mount did not
                come up within ``timeout`` seconds.
        """
        if not os.path.exists("/dev/fuse"):
            raise FuseUnavailable("/dev/fuse does not exist (no FUSE in this kernel or container; modprobe fuse)")
        why = explain_mountpoint(self.mountpoint)
        if why is not None:
            raise MountError(why)
        s: Session
        if self.backend == "kernel":
            from . import server

            s = server.Session(self.operations, self.mountpoint, self._opts)
        else:
            from . import libfuse

            s = libfuse.LibfuseSession(self.operations, self.mountpoint, self.options)
        s.mount(threads=self._threads)
        self._session = s
        _live.add(self)
        deadline = time.monotonic() + timeout
        while not self.operations.initialized.wait(0.02):
            if not s.serving or time.monotonic() > deadline:
                self.unmount(timeout=2.0)
                raise MountError(f"the FUSE mount at {self.mountpoint} did not come up"
                                      f" (loop {'ended' if not s.serving else 'still waiting for INIT'})")

    @property
    def alive(self) -> bool:
        """True while the mount is served (False once unmounted, also from outside)."""
        return self._session is not None and self._session.serving

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the mount ends (e.g. ``umount`` from outside); True if it did."""
        if self._session is None:
            return True
        return self._session.join(timeout)

    def unmount(self, timeout: float = 10.0) -> None:
        """Unmount, stop serving and free the session; always leaves the mountpoint free.

        A mount still in use (an open file, a working directory inside) is retried for a
        second, then detached lazily; if its users still hold it a second later, the FUSE
        connection is aborted (``/sys/fs/fuse/connections/N/abort``; where the control
        filesystem is not mounted, root mounts it on a temporary directory for that),
        which fails their further requests with ENOTCONN. ``timeout`` bounds the wait for the request loop to end.

        Raises:
            RuntimeError: the request loop could not be stopped.
        """
        s = self._session
        if s is None or os.getpid() != self._pid:
            return
        if s.serving and s.mounted():
            err = errno.EBUSY
            for _ in range(20):
                err = unmount(self.mountpoint, lazy=False)
                if err != errno.EBUSY or not s.mounted():
                    break
                time.sleep(0.05)
            if err == errno.EBUSY and s.mounted():
                unmount(self.mountpoint, lazy=True)
        # Unmounted: the loop ends at once. Lazily detached: it serves the remaining users
        # until they let go, for a second at most, then their connection is aborted.
        if not s.join(min(1.0, timeout)) and s.abort():
            s.join(timeout)
        s.join(timeout)
        if s.serving:
            raise RuntimeError(f"the FUSE loop of {self.mountpoint} does not stop (still in use?)")
        s.free()
        self._session = None
        _live.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def __repr__(self) -> str:
        return f"<unionfs_sim Mount {self.mountpoint!r} {'alive' if self.alive else 'ended'}>"


@atexit.register
def _unmount_all() -> None:
    for m in list(_live):
        with contextlib.suppress(Exception):
            m.unmount(timeout=2.0)
