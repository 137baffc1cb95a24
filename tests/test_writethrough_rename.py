"""Write-through renames of objects that have nothing on disk yet (issue 12, found by the
crash test): a lower file renamed over an upper one must replace it on disk, not leave the
old bytes under the new metadata."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim.container import Container
from unionfs_sim.fuse.writethrough import UpperDir, WriteThroughFS
from unionfs_sim.nodes import release_disk_files


def _fs(tmp_path: Path, lazy: bool) -> tuple[WriteThroughFS, Path]:
    ufs.Layer.from_dict({
        "f1": ufs.File(b"lower f1\n" * 10, mode=0o640),
        "d1/": ufs.Dir(), "d1/x": b"x",
        "sub/": ufs.Dir(),
    }).to_directory(tmp_path / "lower")
    for n in ("u", "w"):
        (tmp_path / n).mkdir()
    image = ufs.Image.from_layers([ufs.Layer.from_directory(tmp_path / "lower", lazy=lazy)])
    c = Container.from_upper(image, {}, None)
    return WriteThroughFS(c.overlay, UpperDir(c.overlay, str(tmp_path / "u"), str(tmp_path / "w"))), tmp_path / "u"


def test_a_lower_file_renamed_over_an_upper_file_replaces_it_on_disk(tmp_path: Path) -> None:
    for lazy in (False, True):
        fs, up = _fs(tmp_path / str(lazy), lazy)
        fs.write_bytes("/sub/f2", b"f2")
        fs.rename("/f1", "/sub/f2")
        assert (up / "sub/f2").read_bytes() == fs.read_bytes("/sub/f2") == b"lower f1\n" * 10
        assert (up / "sub/f2").stat().st_mode & 0o777 == 0o640
        assert os.major((up / "f1").lstat().st_rdev) == 0 and not (up / "f1").is_file()  # a whiteout
        fs.truncate("/sub/f2", 200)
        assert (up / "sub/f2").read_bytes() == fs.read_bytes("/sub/f2")


def test_copy_up_from_a_lower_on_another_filesystem(tmp_path: Path) -> None:
    """copy_file_range refuses some cross-filesystem copies (EXDEV): the copy-up falls back to
    reading, as ovl_copy_up_data does. The lower sits on a tmpfs of its own (as in
    unionmount-testsuite), the upperdir on the test's filesystem."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the lower needs root")
    lower_fs = tmp_path / "lowerfs"
    lower_fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(lower_fs)], check=True)
    try:
        fs, up = _fs(lower_fs, lazy=True)
        (tmp_path / "u").mkdir()
        (tmp_path / "w").mkdir()
        c_fs = WriteThroughFS(fs.overlay, UpperDir(fs.overlay, str(tmp_path / "u"), str(tmp_path / "w")))
        with c_fs.open("/f1", "ab") as f:  # copy-up of untouched lower data
            f.write(b"!")
        assert (tmp_path / "u/f1").read_bytes() == b"lower f1\n" * 10 + b"!" == c_fs.read_bytes("/f1")
    finally:
        release_disk_files()  # the lazy lower's cached descriptors keep the tmpfs busy
        if subprocess.run(["umount", str(lower_fs)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(lower_fs)], check=False)  # never leave it mounted
            raise AssertionError(f"{lower_fs} was still busy after the test")
