"""unionfs_sim: container images, containers and the overlay filesystem under them, in memory.

Layers are immutable changesets; images stack them with a config; containers add a
private writable upper layer with copy-up and whiteouts, behind an os-style API whose
answers (and errnos) match the Linux kernel's overlayfs.
"""

from . import analysis
from ._version import __version__
from .build import Builder
from .container import Change, Container
from .errors import DigestMismatch, FormatError, UnionFSError, UnsafePath
from .formats import docker_archive, oci
from .fs import FileSystem
from .fuse import FuseUnavailable, MountError, mount
from .image import History, Image, ImageConfig
from .layer import Layer
from .nodes import WHITEOUT, Device, Dir, Fifo, File, Hardlink, Socket, Symlink, Whiteout
from .options import OverlayOptions
from .reference import Reference
from .registry import Registry

__all__ = [
    "WHITEOUT", "Builder", "Change", "Container", "Device", "DigestMismatch", "Dir", "Fifo", "File",
    "FileSystem", "FormatError", "FuseUnavailable", "Hardlink", "History", "Image", "ImageConfig", "Layer",
    "MountError", "mount",
    "OverlayOptions", "Reference", "Registry", "Socket", "Symlink", "UnionFSError", "UnsafePath",
    "Whiteout", "__version__", "analysis", "docker_archive", "oci",
]
