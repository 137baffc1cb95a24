"""The conformance suite (unionfs_sim.testing.conformance) run against the in-memory model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

pytest.register_assert_rewrite("unionfs_sim.testing.conformance")

# After register_assert_rewrite, so the conformance module's asserts are rewritten.
import unionfs_sim as ufs  # noqa: E402
from unionfs_sim.testing.conformance import OverlayConformance, PermissionConformance  # noqa: E402


class _ModelViews:
    """A container's view (read-write) of the model."""

    container: ufs.Container

    @contextlib.contextmanager
    def open_view(self, layers: list[ufs.Layer], options: ufs.OverlayOptions) -> Iterator[Any]:
        self.container = ufs.Image.from_layers(layers).container(options)
        yield self.container.fs

    def upper_of(self, fs: Any) -> ufs.Layer:
        return self.container.upper


class TestModelConformance(_ModelViews, OverlayConformance):
    """A container's view (read-write) and an image's view (read-only) of the model."""

    def open_readonly_view(self, layers: list[ufs.Layer]) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(ufs.Image.from_layers(layers).fs)


class TestModelPermissions(_ModelViews, PermissionConformance):
    """The kernel's rules for non-root callers, on a container of the model via fs.as_user."""
