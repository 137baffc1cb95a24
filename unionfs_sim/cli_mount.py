"""Moved to :mod:`unionfs_sim.cli.mount`; this name stays importable (the same module object)."""

import sys

from .cli import mount as _moved

sys.modules[__name__] = _moved
