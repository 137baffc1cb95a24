"""isolation="chroot": RUN runs for real (busybox) chrooted in the step's FUSE-mounted container.

Every scenario of the table is built twice, with the python shell subset and with the
chroot of the project's own FUSE mount: the verdicts, the history and the merged trees
(which busybox wrote through the mount, into the model's upper) must be equal.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim.build.run import chroot_unavailable

from . import daemons
from .build_scenarios import SCENARIOS, Scenario, materialise
from .test_build_docker import tree

_WHY = chroot_unavailable() or (None if shutil.which("busybox") else "busybox is not installed")
pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"no chroot build here: {_WHY}")


@pytest.fixture(scope="module")
def busybox() -> ufs.Image:
    """busybox-static as a one-layer image (the same rootfs the dockerd fixture imports)."""
    return ufs.Image.from_layers([ufs.Layer.from_tar(io.BytesIO(daemons.busybox_rootfs()))],
                                 config=ufs.ImageConfig(env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}))


@pytest.mark.parametrize("rules", ["classic", "buildkit"])
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_chroot_builds_what_the_python_subset_builds(busybox: ufs.Image, sc: Scenario, rules: str,
                                                     tmp_path: Path) -> None:
    """Same verdicts, history and merged trees whichever way RUN executes (the key ignores it)."""
    ctx = materialise(sc, tmp_path / "ctx")
    builders = {iso: ufs.Builder(isolation=iso) for iso in ("python", "chroot")}
    for b in builders.values():
        b.add(busybox, "busybox")
    for v in sc.versions:
        if v.edit is not None:
            v.edit(ctx)
        rs = {iso: b.build(ctx, build_args=dict(v.args), no_cache=v.no_cache, target=v.target, rules=rules)
              for iso, b in builders.items()}
        py, ch = rs["python"], rs["chroot"]
        assert [(s.cached, s.reason, s.created_by) for s in py.steps] == \
            [(s.cached, s.reason, s.created_by) for s in ch.steps]
        assert tree(py.image) == tree(ch.image)
        assert py.image.id == ch.image.id


def test_chroot_runs_what_the_subset_does_not(busybox: ufs.Image) -> None:
    """A command outside the subset (sed, wc) runs in the chroot; USER applies (uid of nobody)."""
    b = ufs.Builder(isolation="chroot")
    b.add(busybox, "busybox")
    r = b.build({"Dockerfile": "FROM busybox\nRUN echo a-b | sed s/-/+/ > /s && echo $HOME > /home\n"
                               "USER nobody\nRUN id -u > /tmp/id\n"})
    fs = r.image.fs
    assert fs.read_bytes("/s") == b"a+b\n" and fs.read_bytes("/home") == b"/root\n"
    assert fs.read_bytes("/tmp/id") == b"65534\n" and fs.stat("/tmp/id").st_uid == 65534
