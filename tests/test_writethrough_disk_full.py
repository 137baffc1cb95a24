"""A write-through change the disk refuses (issue 12): the caller gets the disk's error, and
the view shows what the upperdir holds, as the kernel's overlayfs would after the same
failed call, never an object or bytes that a remount would not have."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim.container import Container
from unionfs_sim.fuse.writethrough import UpperDir, WriteThroughFS


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs for the upperdir and workdir."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    d = tmp_path / "disk"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=400", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], check=False)


def _fs(tmp_path: Path, disk: Path) -> tuple[WriteThroughFS, Path]:
    ufs.Layer.from_dict({"keep": b"lower keep\n", "d/": ufs.Dir(), "d/x": b"x"}).to_directory(tmp_path / "lower")
    for n in ("u", "w"):
        (disk / n).mkdir()
    image = ufs.Image.from_layers([ufs.Layer.from_directory(tmp_path / "lower")])
    c = Container.from_upper(image, {}, None)
    return WriteThroughFS(c.overlay, UpperDir(c.overlay, str(disk / "u"), str(disk / "w"))), disk / "u"


def _view(fs: WriteThroughFS) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for top, dirs, files in fs.walk("/"):
        for n in files:
            p = os.path.join(top, n)
            out[p] = fs.read_bytes(p) if fs.isfile(p) else None
        for n in dirs:
            out[os.path.join(top, n) + "/"] = None
    return out


def _kernel_view(tmp_path: Path, upper: Path) -> dict[str, bytes | None]:
    """What the kernel's overlayfs shows for the upperdir over the same lower."""
    mnt = tmp_path / "kmnt"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={upper}:{tmp_path / 'lower'}",
                    str(mnt)], check=True)
    try:
        out: dict[str, bytes | None] = {}
        for top, dirs, files in os.walk(mnt):
            rel = "/" + os.path.relpath(top, mnt).lstrip(".")
            rel = rel if rel != "/" else "/"
            for n in files:
                p = os.path.join(top, n)
                out[os.path.join(rel, n)] = Path(p).read_bytes() if os.path.isfile(p) else None
            for n in dirs:
                out[os.path.join(rel, n) + "/"] = None
        return out
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_change_the_disk_refuses_is_not_shown(tmp_path: Path, small_disk: Path) -> None:
    fs, upper = _fs(tmp_path, small_disk)
    fs.write_bytes("/d/small", b"fits\n")
    refused = []
    for i in range(40):  # fill the disk: some create, write or copy-up fails with ENOSPC
        try:
            fs.write_bytes(f"/d/big{i}", os.urandom(64 << 10))
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            refused.append(i)
            break
    assert refused, "the 1 MiB disk never filled"
    assert _view(fs) == _kernel_view(tmp_path, upper)
    for op in (lambda: fs.mkdir("/d/newdir"), lambda: fs.write_bytes("/keep", b"k" * (256 << 10)),
               lambda: fs.symlink("x" * 3000, "/d/link")):
        try:
            op()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        assert _view(fs) == _kernel_view(tmp_path, upper)
    fs.unlink(f"/d/big{refused[0] - 1}")  # room again: writes go on, and land on disk
    fs.write_bytes("/d/after", b"after\n")
    assert _view(fs) == _kernel_view(tmp_path, upper)
    assert fs.read_bytes("/d/small") == b"fits\n"
