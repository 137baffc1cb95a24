"""Moved to :mod:`unionfs_sim.codec.overlaydir` (a layer codec, below ``Layer``); this name stays importable."""

import sys

from ..codec import overlaydir as _moved

sys.modules[__name__] = _moved
