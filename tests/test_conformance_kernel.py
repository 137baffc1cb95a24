"""The conformance suite (unionfs_sim.testing.conformance) run against the kernel's overlayfs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

pytest.register_assert_rewrite("unionfs_sim.testing.conformance")

from unionfs_sim import Layer, OverlayOptions  # noqa: E402 - after the assert rewrite above
from unionfs_sim.testing import KernelOverlay, KernelUnavailable  # noqa: E402
from unionfs_sim.testing.conformance import OverlayConformance, PermissionConformance  # noqa: E402

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module", autouse=True)
def kernel_available() -> None:
    """Skip the module, printing why, when no overlay can be mounted here."""
    try:
        with KernelOverlay([Layer()]):
            pass
    except KernelUnavailable as e:
        pytest.skip(str(e))


class _KernelViews:
    """Views on a real overlay mount (read-write with an upperdir)."""

    kernel: KernelOverlay

    @contextlib.contextmanager
    def open_view(self, layers: list[Layer], options: OverlayOptions) -> Iterator[Any]:
        self.kernel = KernelOverlay(layers, options)
        with self.kernel as k:
            yield k.fs

    def upper_of(self, fs: Any) -> Layer:
        assert self.kernel.upper is not None
        return self.kernel.upper


class TestKernelConformance(_KernelViews, OverlayConformance):
    """A real overlay mount (read-write with an upperdir, or read-only without one)."""

    @contextlib.contextmanager
    def open_readonly_view(self, layers: list[Layer]) -> Iterator[Any]:
        with KernelOverlay(layers, readonly=True) as k:
            yield k.fs


class TestKernelPermissions(_KernelViews, PermissionConformance):
    """The same rules on a real overlay mount, each call made by a worker with dropped credentials."""
