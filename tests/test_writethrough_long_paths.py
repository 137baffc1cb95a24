"""Write-through under paths near PATH_MAX (issue 12, found by pjdfstest's */03.t through
the drop-in): a client may use a path of up to 4,095 bytes below the mountpoint, which the
upperdir's own prefix pushes over the limit; the disk side must still do each operation."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim.container import Container
from unionfs_sim.fuse.writethrough import UpperDir, WriteThroughFS

NAME = 255  # NAME_MAX


def _fs(tmp_path: Path) -> tuple[WriteThroughFS, Path]:
    ufs.Layer.from_dict({"lower": b"lower"}).to_directory(tmp_path / "lower")
    for n in ("u", "w"):
        (tmp_path / n).mkdir()
    image = ufs.Image.from_layers([ufs.Layer.from_directory(tmp_path / "lower")])
    c = Container.from_upper(image, {}, None)
    return WriteThroughFS(c.overlay, UpperDir(c.overlay, str(tmp_path / "u"), str(tmp_path / "w"))), tmp_path / "u"


def _deep(fs: WriteThroughFS, total: int) -> str:
    """Make directories of NAME_MAX names until the path is about ``total`` bytes long."""
    path = ""
    i = 0
    while len(path) + NAME + 1 < total:
        path += "/" + chr(ord("a") + i % 26) * NAME
        fs.mkdir(path, 0o755)
        i += 1
    if total - len(path) - 1 > 0:
        path += "/" + "z" * (total - len(path) - 1)
        fs.mkdir(path, 0o755)
    return path


def _lstat_on_disk(root: Path, rel: str) -> os.stat_result:
    """lstat of ``root/rel`` walked a component at a time (the path itself is too long)."""
    parts = rel.strip("/").split("/")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for name in parts[:-1]:
            nfd = os.open(name, os.O_PATH | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return os.lstat(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)


def _read_on_disk(root: Path, rel: str) -> bytes:
    parts = rel.strip("/").split("/")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    for name in parts[:-1]:
        nfd = os.open(name, os.O_PATH | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    f = os.open(parts[-1], os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    with os.fdopen(f, "rb") as fh:
        return fh.read()


def test_every_operation_reaches_the_disk_under_a_path_near_path_max(tmp_path: Path) -> None:
    fs, up = _fs(tmp_path)
    d = _deep(fs, 4080)
    assert len(str(up) + d) > 4096  # the disk path alone would give ENAMETOOLONG
    f = d + "/f"
    fs.write_bytes(f, b"data")
    fs.chmod(f, 0o640)
    assert _read_on_disk(up, f) == b"data"
    assert stat.S_IMODE(_lstat_on_disk(up, f).st_mode) == 0o640
    fs.link(f, d + "/g")
    assert _lstat_on_disk(up, f).st_ino == _lstat_on_disk(up, d + "/g").st_ino
    fs.rename(d + "/g", d + "/h")
    fs.symlink("target", d + "/s")
    assert stat.S_ISLNK(_lstat_on_disk(up, d + "/s").st_mode)
    fs.setxattr(f, "user.k", b"v")
    for name in ("f", "h", "s"):
        fs.unlink(d + "/" + name)
        with pytest.raises(FileNotFoundError):
            _lstat_on_disk(up, d + "/" + name)
    fs.rmdir(d)
    with pytest.raises(FileNotFoundError):
        _lstat_on_disk(up, d)


def test_a_renamed_parent_is_not_reached_through_a_stale_descriptor(tmp_path: Path) -> None:
    """Descriptors opened for long paths must not outlive a rename of a directory above them."""
    fs, up = _fs(tmp_path)
    d = _deep(fs, 4080)
    top = "/" + d.split("/")[1]
    fs.write_bytes(d + "/f", b"one")
    fs.rename(top, "/moved")
    moved = "/moved" + d[len(top):]
    fs.mkdir(top)  # a new directory at the old name
    fs.write_bytes(moved + "/f", b"two")
    assert _read_on_disk(up, moved + "/f") == b"two"
    assert sorted(os.listdir(up / top.lstrip("/"))) == []
    with pytest.raises(OSError) as e:
        fs.write_bytes(d + "/f", b"three")  # its parents are gone with the rename
    assert e.value.errno == errno.ENOENT


def test_an_upperdir_deeper_than_path_max_reads_back(tmp_path: Path) -> None:
    """What the write side makes under a deep name must mount again: the upperdir's reader
    reaches a deep directory's children through its descriptor."""
    from unionfs_sim.fuse.writethrough import read_upperdir

    fs, up = _fs(tmp_path)
    d = _deep(fs, 4080)
    fs.write_bytes(d + "/f", b"deep data")
    fs.symlink("t", d + "/s")
    fs.unlink("/lower")  # a whiteout at the top too
    image = fs.overlay.lower
    again = Container.from_upper(ufs.Image.from_layers([ufs.Layer.from_directory(tmp_path / "lower")]),
                                 read_upperdir(str(up), image))
    assert again.fs.read_bytes(d + "/f") == b"deep data"
    assert again.fs.readlink(d + "/s") == "t"
    assert not again.fs.exists("/lower")
    assert sorted(again.fs.listdir(d)) == ["f", "s"]
