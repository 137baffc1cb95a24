"""Testing support: the kernel overlayfs oracle (and, in submodules, hypothesis strategies).

Only :mod:`unionfs_sim.testing.kernel` is imported here, so ``import unionfs_sim.testing``
works without hypothesis installed; modules that need hypothesis are imported by name
(``from unionfs_sim.testing import strategies``).
"""

from .kernel import KernelOverlay, KernelUnavailable

__all__ = ["KernelOverlay", "KernelUnavailable"]
