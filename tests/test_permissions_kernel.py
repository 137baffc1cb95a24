"""The model acting as a non-root user against the kernel's overlayfs acting as the same user.

Three callers, as the issue names them: a uid in its own group only (1000), a second uid
that is also in the first one's group (1001, groups 1001 and 1000), and a uid with no
supplementary groups at all (1002). Random images carry owners 0/1000/1001, groups
0-1002, and modes with setuid, setgid, sticky and 0o700/0o750/0o711 directories; the
kernel side runs every call in a worker that chrooted into the mount and then did
setgroups/setresgid/setresuid. Errnos, results, merged trees (with owners and modes)
and the upper layers must agree.

CI runs a slice (``UFS_PERMS_EXAMPLES``, default 40 per caller under the default
options, a quarter of that under each other combination); the full run of the issue is
``UFS_PERMS_EXAMPLES=1000`` (then 300 per other combination). Needs root.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from unionfs_sim import OverlayOptions
from unionfs_sim.testing.kernel import kernel_unavailable
from unionfs_sim.testing.machines import OPTION_SETS, KernelMachine

pytestmark = pytest.mark.kernel

EXAMPLES = int(os.environ.get("UFS_PERMS_EXAMPLES", "40"))
OTHER_EXAMPLES = max(EXAMPLES * 3 // 10, 10)

CALLERS = {
    "uid1000": (1000, 1000, (1000,)),
    "uid1001-in-1000": (1001, 1001, (1001, 1000)),
    "uid1002-nogroups": (1002, 1002, ()),
}


REASON = kernel_unavailable()
COMBOS = OPTION_SETS


def _machine(opts: OverlayOptions, caller: tuple[int, int, tuple[int, ...]]) -> type[KernelMachine]:
    name = f"KernelAs{caller[0]}_rd{int(opts.redirect_dir)}_ix{int(opts.index)}_mc{int(opts.metacopy)}"
    cls = type(name, (KernelMachine,), {"options": opts, "caller": caller})
    default = opts == OverlayOptions()
    cls.TestCase.settings = settings(
        max_examples=EXAMPLES if default else OTHER_EXAMPLES, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    return cls


@pytest.mark.parametrize("caller", list(CALLERS.values()), ids=list(CALLERS))
@pytest.mark.parametrize("opts", COMBOS, ids=lambda o: f"rd{int(o.redirect_dir)}-ix{int(o.index)}-mc{int(o.metacopy)}")
def test_model_matches_kernel_as_user(opts: OverlayOptions, caller: tuple[int, int, tuple[int, ...]]) -> None:
    if REASON is not None:
        pytest.skip(f"kernel overlayfs unavailable: {REASON}")
    _machine(opts, caller).TestCase("runTest").runTest()
