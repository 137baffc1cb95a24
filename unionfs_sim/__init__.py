"""unionfs_sim: container images, containers and the overlay filesystem under them, in memory.

Layers are immutable changesets; images stack them with a config; containers add a
private writable upper layer with copy-up and whiteouts, behind an os-style API whose
answers (and errnos) match the Linux kernel's overlayfs.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .container import Change, Container
from .errors import DigestMismatch, FormatError, UnionFSError, UnsafePath
from .fs import FileSystem
from .image import History, Image, ImageConfig
from .layer import Layer
from .nodes import WHITEOUT, Device, Dir, Fifo, File, Hardlink, Socket, Symlink, Whiteout
from .options import OverlayOptions
from .reference import Reference

__all__ = [
    "WHITEOUT", "Builder", "Change", "Container", "Device", "DigestMismatch", "Dir", "Fifo", "File",
    "FileSystem", "FormatError", "FuseUnavailable", "Hardlink", "History", "Image", "ImageConfig", "Layer",
    "MountError", "mount",
    "OverlayOptions", "Reference", "Registry", "Socket", "Symlink", "UnionFSError", "UnsafePath",
    "Whiteout", "__version__", "analysis", "docker_archive", "oci",
]

if TYPE_CHECKING:
    from . import analysis
    from .build import Builder
    from .formats import docker_archive, oci
    from .fuse import FuseUnavailable, MountError, mount
    from .registry import Registry

_LAZY = {"analysis": (".analysis", None), "Builder": (".build", "Builder")}
_LAZY.update({  # not needed by the core nor by unionfs-sim-fuse, so loaded on first use too
    "docker_archive": (".formats.docker_archive", None), "oci": (".formats.oci", None),
    "Registry": (".registry", "Registry"),
    "FuseUnavailable": (".fuse", "FuseUnavailable"), "MountError": (".fuse", "MountError"), "mount": (".fuse", "mount"),
})
"""Names whose packages load on first use, so ``import unionfs_sim`` stays light."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value
