"""overlay.Entries keeps count of a directory's subdirectories (st_nlink = 2 + that for a
pure-upper directory) through every change of its names: checked against a recount."""

from __future__ import annotations

import errno
import random

import pytest

import unionfs_sim as ufs
from unionfs_sim.overlay import Entries, Inode


def _recount_all(root: Inode) -> None:
    stack = [root]
    while stack:
        d = stack.pop()
        assert isinstance(d.entries, Entries)
        subdirs = [e for e in d.entries.values() if isinstance(e, Inode) and e.kind == "d"]
        assert d.entries.dirs == len(subdirs)
        stack.extend(subdirs)


@pytest.mark.parametrize("seed", range(5))
def test_the_count_follows_every_change(seed: int) -> None:
    rnd = random.Random(seed)
    img = ufs.Image.from_layers([ufs.Layer.from_dict({"low/": ufs.Dir(), "low/sub/": ufs.Dir(), "low/f": b"f"})])
    c = img.container()
    fs = c.fs
    paths = ["/a", "/b", "/a/x", "/a/y", "/b/x", "/low/n", "/low/sub/m", "/c"]
    for _ in range(400):
        op = rnd.choice(["mkdir", "rmdir", "rename", "file", "unlink", "exchange"])
        p, q = rnd.choice(paths), rnd.choice(paths)
        try:
            if op == "mkdir":
                fs.mkdir(p)
            elif op == "rmdir":
                fs.rmdir(p)
            elif op == "file":
                fs.write_bytes(p, b"x")
            elif op == "unlink":
                fs.unlink(p)
            elif op == "rename":
                fs.rename(p, q)
            else:
                fs.rename(p, q, exchange=True)
        except OSError as e:
            assert e.errno in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR,
                               errno.EINVAL, errno.EXDEV, errno.EBUSY), (op, p, q, e)
        if c.overlay.root is not None:
            _recount_all(c.overlay.root)


def test_a_directory_made_by_mkdir_counts_in_its_parents_nlink() -> None:
    fs = ufs.Image.from_layers([]).container().fs
    fs.mkdir("/new")
    assert fs.lstat("/new").st_nlink == 2
    for i in range(5):
        fs.mkdir(f"/new/d{i}")
        fs.write_bytes(f"/new/f{i}", b"")
    assert fs.lstat("/new").st_nlink == 7
    fs.rename("/new/d0", "/new/d3")  # over an empty directory: one fewer
    assert fs.lstat("/new").st_nlink == 6
    fs.rmdir("/new/d1")
    fs.rename("/new/d2", "/d2")
    assert fs.lstat("/new").st_nlink == 4
