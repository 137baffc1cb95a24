"""Moved to :mod:`unionfs_sim.cli.fuse_overlayfs`; this name stays importable (the same module object)."""

import sys

from .cli import fuse_overlayfs as _moved

if __name__ == "__main__":  # python -m unionfs_sim.fuse_overlay_compat, as before the move
    sys.exit(_moved.main())
sys.modules[__name__] = _moved
