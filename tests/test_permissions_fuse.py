"""The FUSE mount used by a non-root process agrees with the model's ``fs.as_user``.

A container is mounted with ``allow_other`` (so ``default_permissions``: the kernel
checks modes and owners against the attributes the server reports, and passes the
caller's uid/gid to the server for new files). The subject is a worker chrooted into
the mountpoint that dropped to the caller's credentials; the model side is a second
container of the same image used through ``fs.as_user`` with the same credentials.
Errnos, results, merged trees with owners and modes, and the upper layers must agree
(``UFS_PERMS_FUSE_EXAMPLES`` per caller, default 30).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import unionfs_sim as ufs
from unionfs_sim.mounting import fuse_unavailable
from unionfs_sim.testing.kernel import KernelFS
from unionfs_sim.testing.machines import DifferentialMachine

pytestmark = pytest.mark.fuse

EXAMPLES = int(os.environ.get("UFS_PERMS_FUSE_EXAMPLES", "30"))

REASON = fuse_unavailable()
if REASON is not None:
    print(f"test_permissions_fuse: skipping, {REASON}", file=sys.stderr)
    pytest.skip(f"FUSE unavailable: {REASON}", allow_module_level=True)

from unionfs_sim.fuse import choose_backend  # noqa: E402 - only where FUSE can mount (skip above)

from . import test_fuse_differential as differential  # noqa: E402

CALLERS = {
    "uid1000": (1000, 1000, (1000,)),
    "uid1001-in-1000": (1001, 1001, (1001, 1000)),
    "uid1002-nogroups": (1002, 1002, ()),
}


def fuse_view(source: Any) -> contextlib.AbstractContextManager[KernelFS]:
    """Mount ``source`` for everyone on a fresh temporary directory; yield root's facade on it."""
    return differential.fuse_view(source, mode=0o755, allow_other=True)


class FuseUserMachine(DifferentialMachine):
    """Container A through the FUSE mount as a non-root process, container B through as_user."""

    renameat2 = choose_backend() != "libfuse"

    def open_subject(self, image: ufs.Image, options: ufs.OverlayOptions) -> contextlib.AbstractContextManager[Any]:
        self.fuse_container = image.container(options)
        return fuse_view(self.fuse_container)

    def subject_upper(self) -> ufs.Layer | None:
        return self.fuse_container.upper


@pytest.mark.parametrize("caller", list(CALLERS.values()), ids=list(CALLERS))
def test_fuse_mount_as_user_matches_model(caller: tuple[int, int, tuple[int, ...]]) -> None:
    cls = type(f"FuseAs{caller[0]}", (FuseUserMachine,), {"caller": caller})
    cls.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    cls.TestCase("runTest").runTest()
