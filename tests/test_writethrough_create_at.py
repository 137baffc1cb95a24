"""FUSE's CREATE by the parent's Loc (``create_at``, the drop-in's fast path, issue 12): it
makes exactly what ``os_open(O_CREAT)`` as the same caller makes, in the model and in the
upperdir, and where it does not apply it changes nothing and says so (None)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import unionfs_sim as ufs
from unionfs_sim.container import Container
from unionfs_sim.fuse.semantics import as_caller
from unionfs_sim.fuse.writethrough import UpperDir, WriteThroughFS, read_upperdir
from unionfs_sim.lower import DiskLower
from unionfs_sim.overlay import Overlay

W = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def _fs(tmp_path: Path) -> tuple[WriteThroughFS, Path]:
    ufs.Layer.from_dict({
        "d/": ufs.Dir(), "d/lowerfile": b"lower", "gone": b"g",
        "sg/": ufs.Dir(mode=0o2775, gid=50),
    }).to_directory(tmp_path / "lower")
    for n in ("u", "w"):
        (tmp_path / n).mkdir()
    image = ufs.Image.from_layers([ufs.Layer.from_directory(tmp_path / "lower", lazy=True)])
    c = Container.from_upper(image, {}, None)
    fs = WriteThroughFS(c.overlay, UpperDir(c.overlay, str(tmp_path / "u"), str(tmp_path / "w")))
    fs.mkdir("/d/sub")  # d and sg copied up: their Locs have an upper directory
    fs.mkdir("/sg/sub")
    fs.unlink("/gone")  # a whiteout in the upper root
    return fs, tmp_path / "u"


def _disk(up: Path, key: str) -> tuple[int, int, int, int, bytes]:
    st = (up / key).lstat()
    return st.st_mode, st.st_uid, st.st_gid, st.st_size, (up / key).read_bytes()


def test_create_at_makes_what_os_open_makes(tmp_path: Path) -> None:
    fs, up = _fs(tmp_path)
    for parent, uid, gid, mode in (("/d", 0, 0, 0o644), ("/d", 1000, 1000, 0o600), ("/sg", 1000, 1000, 0o2755)):
        ploc = fs.locate(parent)
        made = fs.create_at(ploc, f"new-{uid}-{mode:o}", W, mode, uid, gid)
        assert made is not None
        h, loc = made
        h.write(b"through create_at")
        h.close()
        with as_caller(fs, uid, gid):
            h2 = fs.os_open(f"{parent}/old-{uid}-{mode:o}", W, mode)
        h2.write(b"through create_at")
        h2.close()
        a, b = fs.lstat(f"{parent}/new-{uid}-{mode:o}"), fs.lstat(f"{parent}/old-{uid}-{mode:o}")
        assert (a.st_mode, a.st_uid, a.st_gid, a.st_size) == (b.st_mode, b.st_uid, b.st_gid, b.st_size)
        if parent == "/sg":
            assert a.st_gid == 50  # the setgid directory's group
        da, db = _disk(up, f"{parent[1:]}/new-{uid}-{mode:o}"), _disk(up, f"{parent[1:]}/old-{uid}-{mode:o}")
        assert da == db and da[4] == b"through create_at"
        assert stat.S_IMODE(da[0]) == stat.S_IMODE(a.st_mode)
        assert loc.path == f"{parent[1:]}/new-{uid}-{mode:o}"
        # the model keeps the times the kernel gave the file and its directory
        assert (up / loc.path).lstat().st_mtime_ns == a.st_mtime_ns
        assert (up / parent[1:]).lstat().st_mtime_ns == fs.lstat(parent).st_mtime_ns
    # what the kernel's overlayfs reads back from the upperdir is what the view shows
    lower = DiskLower([str(tmp_path / "lower")])
    again = Overlay(lower)
    again.load_upper(read_upperdir(str(up), lower))
    view = ufs.FileSystem(again)
    for name in fs.listdir("/d"):
        if fs.isfile(f"/d/{name}"):
            assert view.read_bytes(f"/d/{name}") == fs.read_bytes(f"/d/{name}")
            assert view.lstat(f"/d/{name}").st_mode == fs.lstat(f"/d/{name}").st_mode


def test_create_at_declines_where_os_open_must_decide(tmp_path: Path) -> None:
    fs, up = _fs(tmp_path)
    gen = fs.overlay.generation
    root = fs.locate("/")
    d = fs.locate("/d")
    assert fs.create_at(d, "lowerfile", W, 0o644, 0, 0) is None  # there (in the lower layer)
    assert fs.create_at(d, "sub", W, 0o644, 0, 0) is None  # there (upper)
    assert fs.create_at(root, "gone", W, 0o644, 0, 0) is None  # a whiteout the disk must replace
    assert fs.create_at(d, "..", W, 0o644, 0, 0) is None
    assert fs.create_at(d, "x" * 300, W, 0o644, 0, 0) is None  # os_open says ENAMETOOLONG
    assert fs.create_at(d, "x", W | os.O_DIRECTORY, 0o644, 0, 0) is None
    # a directory only in the lower layer: os_open copies it up first
    fresh, _ = _fs(tmp_path / "fresh")
    assert fresh.create_at(fresh.locate("/"), "f", W, 0o644, 0, 0) is not None  # root: upper already
    ufs.Layer.from_dict({"lo/": ufs.Dir()}).to_directory(tmp_path / "l2")
    for n in ("u2", "w2"):
        (tmp_path / n).mkdir()
    c = Container.from_upper(ufs.Image.from_layers([ufs.Layer.from_directory(tmp_path / "l2", lazy=True)]), {}, None)
    fs2 = WriteThroughFS(c.overlay, UpperDir(c.overlay, str(tmp_path / "u2"), str(tmp_path / "w2")))
    assert fs2.create_at(fs2.locate("/lo"), "f", W, 0o644, 0, 0) is None
    assert fs.overlay.generation == gen  # nothing changed
    assert not (up / "d/x").exists()
