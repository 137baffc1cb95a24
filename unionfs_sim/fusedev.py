"""Moved to :mod:`unionfs_sim.fuse.server`; this name stays importable (the same module object)."""

import sys

from .fuse import server as _moved

sys.modules[__name__] = _moved
