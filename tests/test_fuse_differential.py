"""The FUSE mount against the model: the same answers through the kernel's FUSE layer.

Both sides are the model, so any difference is a bug of the FUSE translation
(unionfs_sim.fuse), of the kernel-facing choices it makes (caching, permissions), or a
place where the kernel's VFS answers before the filesystem and the model disagrees with
it. Two suites:

- the differential state machine: random operations on a FUSE mount of container A and,
  directly, on container B of the same image; errnos, results, merged trees and, at the
  end, the upper layers must agree (``UFS_FUSE_EXAMPLES``, default 50);
- the conformance suite (unionfs_sim.testing.conformance), kernel-checked
  expectations, run on the mount.

Calls on the mount are made by a worker process chrooted into the mountpoint (the
kernel oracle's worker), so absolute symlinks resolve inside the mount as they would
in a container.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

pytest.register_assert_rewrite("unionfs_sim.testing.conformance")

# After register_assert_rewrite, so the conformance module's asserts are rewritten.
import unionfs_sim as ufs  # noqa: E402
from unionfs_sim.mounting import fuse_unavailable  # noqa: E402
from unionfs_sim.testing.conformance import OverlayConformance  # noqa: E402
from unionfs_sim.testing.kernel import KernelFS, chrooted  # noqa: E402
from unionfs_sim.testing.machines import DifferentialMachine, op_paths  # noqa: E402

pytestmark = pytest.mark.fuse

EXAMPLES = int(os.environ.get("UFS_FUSE_EXAMPLES", "50"))


REASON = fuse_unavailable()
if REASON is not None:
    print(f"test_fuse_differential: skipping, {REASON}", file=sys.stderr)
    pytest.skip(f"FUSE unavailable: {REASON}", allow_module_level=True)

from unionfs_sim.fuse import choose_backend  # noqa: E402 - only once FUSE is known to be there
from unionfs_sim.mounting import mount  # noqa: E402


@contextlib.contextmanager
def fuse_view(source: Any, mode: int | None = None, **kw: Any) -> Iterator[KernelFS]:
    """Mount ``source`` on a fresh temporary directory (its permissions ``mode``, if given);
    yield the chrooted facade on it."""
    mnt = tempfile.mkdtemp(prefix="ufs-fuse-")
    if mode is not None:
        os.chmod(mnt, mode)
    try:
        with mount(source, mnt, **kw) as m:
            with chrooted(mnt) as fs:
                yield fs
            assert not m.operations.unexpected, m.operations.unexpected
    finally:
        os.rmdir(mnt)


# --- the differential machine ------------------------------------------------------------------


class FuseMachine(DifferentialMachine):
    """Container A through the FUSE mount, container B of the same image directly.

    With the libfuse backend one known difference is left out: ``chown(path, -1, -1)``
    changes nothing but ctime, and libfuse2 calls no operation for the empty SETATTR the
    kernel sends, so that mount cannot copy the file up as overlayfs (and the model) do;
    its ``chown`` rule therefore always changes the group.
    """

    renameat2 = choose_backend() != "libfuse"  # libfuse2's protocol (7.19) has no RENAME2

    if choose_backend() == "libfuse":
        @rule(p=op_paths, uid=st.sampled_from([-1, 0, 1000]), gid=st.sampled_from([0, 1000]))
        def chown(self, p: str, uid: int, gid: int) -> None:
            self.same(lambda fs: fs.chown(p, uid, gid))

    def open_subject(self, image: ufs.Image, options: ufs.OverlayOptions) -> contextlib.AbstractContextManager[Any]:
        self.fuse_container = image.container(options)
        return fuse_view(self.fuse_container)

    def subject_upper(self) -> ufs.Layer | None:
        return self.fuse_container.upper


def _machine(opts: ufs.OverlayOptions) -> type[FuseMachine]:
    name = f"Fuse_rd{int(opts.redirect_dir)}_ix{int(opts.index)}_mc{int(opts.metacopy)}"
    cls = type(name, (FuseMachine,), {"options": opts})
    cls.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    return cls


COMBOS = [ufs.OverlayOptions(), ufs.OverlayOptions(redirect_dir=True, index=True, metacopy=True)]


@pytest.mark.parametrize("opts", COMBOS, ids=lambda o: f"rd{int(o.redirect_dir)}-ix{int(o.index)}-mc{int(o.metacopy)}")
def test_fuse_mount_matches_model(opts: ufs.OverlayOptions) -> None:
    _machine(opts).TestCase("runTest").runTest()


# --- the conformance suite on the mount -----------------------------------------------------------


class TestFuseConformance(OverlayConformance):
    """A container mounted read-write, an image mounted read-only, used through FUSE."""

    supports_renameat2 = choose_backend() != "libfuse"

    @contextlib.contextmanager
    def open_view(self, layers: list[ufs.Layer], options: ufs.OverlayOptions) -> Iterator[Any]:
        self.container = ufs.Image.from_layers(layers).container(options)
        with fuse_view(self.container) as fs:
            yield fs

    def upper_of(self, fs: Any) -> ufs.Layer:
        return self.container.upper

    @contextlib.contextmanager
    def open_readonly_view(self, layers: list[ufs.Layer]) -> Iterator[Any]:
        with fuse_view(ufs.Image.from_layers(layers)) as fs:
            yield fs
