"""``unionfs_sim.mount``: the FUSE mount's entry point, importable without fusepy.

Importing the package must not import fusepy (it loads libfuse2 at import time), so
:func:`mount` here imports :mod:`unionfs_sim.fuse` only when called. The default server
(:mod:`unionfs_sim.fusedev`) needs neither fusepy nor libfuse2; when it cannot mount and
the fallback cannot either, :class:`FuseUnavailable` says why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from .container import Container
    from .fs import FileSystem
    from .fuse import Mount
    from .image import Image

MountSource = Union["Container", "Image", "FileSystem"]
"""What can be mounted: a container (read-write), an image (read-only) or a facade."""


class MountError(RuntimeError):
    """A FUSE mount failed: libfuse refused (its message is included) or it never came up."""


class FuseUnavailable(MountError):
    """FUSE is not available here at all: no /dev/fuse, or neither server can mount.

    The message says which (tests may ``pytest.skip(str(e))`` on it).
    """


def fs_of(source: MountSource, readonly: bool | None) -> tuple[FileSystem, bool, bool]:
    """``(facade, mount read-only, view immutable)`` for a mount source.

    Raises:
        ValueError: ``readonly=False`` for an image (its view cannot change).
        TypeError: not a Container, Image or FileSystem.
    """
    from .container import Container
    from .fs import FileSystem
    from .image import Image

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

    from .fusedev import kernel_backend_unavailable

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


def load_fuse() -> Any:
    """Import :mod:`unionfs_sim.fuse` (which loads fusepy if it can: the fallback server)."""
    from . import fuse

    return fuse


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
        backend: ``"kernel"`` (:mod:`unionfs_sim.fusedev`, the /dev/fuse protocol),
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
    fuse = load_fuse()
    with fuse.mount(source, mountpoint, readonly=readonly, allow_other=allow_other,
                    default_permissions=default_permissions, threads=threads, timeout=timeout,
                    backend=backend, **fuse_options) as m:
        yield m


__all__ = ["FuseUnavailable", "MountError", "MountSource", "fs_of", "fuse_unavailable", "load_fuse", "mount"]
