"""The model against the kernel's overlayfs: same random operations, same answers.

Runs for every combination of redirect_dir, index and metacopy the kernel accepts
(metacopy=on needs redirect_dir=on). Needs root; skips with the reason otherwise.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from unionfs_sim import OverlayOptions
from unionfs_sim.testing.kernel import kernel_unavailable
from unionfs_sim.testing.machines import OPTION_SETS, KernelMachine

pytestmark = pytest.mark.kernel

EXAMPLES = int(os.environ.get("UFS_KERNEL_EXAMPLES", "300"))


REASON = kernel_unavailable()
COMBOS = OPTION_SETS


def _machine(opts: OverlayOptions) -> type[KernelMachine]:
    name = f"Kernel_rd{int(opts.redirect_dir)}_ix{int(opts.index)}_mc{int(opts.metacopy)}"
    cls = type(name, (KernelMachine,), {"options": opts})
    cls.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    return cls


@pytest.mark.parametrize("opts", COMBOS, ids=lambda o: f"rd{int(o.redirect_dir)}-ix{int(o.index)}-mc{int(o.metacopy)}")
def test_model_matches_kernel(opts: OverlayOptions) -> None:
    if REASON is not None:
        pytest.skip(f"kernel overlayfs unavailable: {REASON}")
    _machine(opts).TestCase("runTest").runTest()
