"""The FUSE mount: a container's (or image's) merged view as a real directory.

- :mod:`.mounting`: :func:`mount`, :class:`Mount` and the choice of server (imports neither
  server until a mount is made);
- :mod:`.server`: the default server, speaking the kernel's FUSE protocol on ``/dev/fuse``;
- :mod:`.libfuse`: the fallback server, fusepy on libfuse2 (imported only for it).

``unionfs_sim.fuse.X`` keeps working for the names the single ``fuse`` module had: they
are looked up in :mod:`.mounting` first, then (importing fusepy) in :mod:`.libfuse`.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import FuseUnavailable, MountError
from .mounting import Mount, MountSource, choose_backend, default_options, fs_of, fuse_unavailable, mount

__all__ = ["FuseUnavailable", "Mount", "MountError", "MountSource", "choose_backend", "default_options", "fs_of",
           "fuse_unavailable", "mount"]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    libfuse = importlib.import_module(".libfuse", __name__)
    try:
        return getattr(libfuse, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
