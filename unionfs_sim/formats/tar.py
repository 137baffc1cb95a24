"""Moved to :mod:`unionfs_sim.codec.tar` (a layer codec, below ``Layer``); this name stays importable."""

import sys

from ..codec import tar as _moved

sys.modules[__name__] = _moved
