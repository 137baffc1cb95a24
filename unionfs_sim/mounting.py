"""Moved to :mod:`unionfs_sim.fuse.mounting`; this name stays importable (the same module object)."""

import sys

from .fuse import mounting as _moved

sys.modules[__name__] = _moved
