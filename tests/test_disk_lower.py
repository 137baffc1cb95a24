"""DiskLower (issue 12, mount time): lower dirs read a directory at a time as they are looked up.

The fuse-overlayfs drop-in mounts a :class:`~unionfs_sim.lower.DiskLower` so that mounting
reads no lower entry. Its answers must be those of the eager :class:`~unionfs_sim.lower.Lower`
over ``Layer.from_directory(d, lazy=True)`` of the same directories: the same entries,
st_ino (assigned in query order: both views are asked the same things in the same order),
st_nlink, listings (strays included), xattrs, symlink targets and data. Random layer stacks
(whiteouts, opaque dirs, redirects, hard links, symlinks, FIFOs, xattrs) and crafted ones
(redirect chains, relative redirects, xattr whiteouts, deep trees) are written in the
overlay format and read both ways. Needs root (whiteouts are char devices, trusted.* xattrs).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unionfs_sim as ufs
from unionfs_sim.fs import FileSystem
from unionfs_sim.lower import DiskLower, Lower
from unionfs_sim.nodes import Dir
from unionfs_sim.options import OverlayOptions
from unionfs_sim.overlay import Overlay
from unionfs_sim.testing import strategies as ust

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writing overlay lowers needs root (mknod, trusted.*)")


def _views(dirs: list[str], **kw: Any) -> tuple[Lower, DiskLower]:
    eager = Lower([ufs.Layer.from_directory(d, format="overlay", lazy=True) for d in dirs])
    return eager, DiskLower(dirs, **kw)


def _stat(fs: FileSystem, p: str) -> tuple[Any, ...]:
    s = fs.lstat(p)
    return (s.st_mode, s.st_ino, s.st_nlink, s.st_uid, s.st_gid, s.st_size, s.st_mtime_ns, s.st_rdev)


def _observe(fs: FileSystem) -> Iterator[tuple[Any, ...]]:
    """Everything a client sees, in a fixed order (the order st_ino numbers are given in)."""
    stack = ["/"]
    while stack:
        d = stack.pop()
        names = fs.listdir(d)
        yield ("listdir", d, names)
        yield ("scandir", d, [(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in fs.scandir(d)])
        for n in names:
            p = d.rstrip("/") + "/" + n
            try:
                s = _stat(fs, p)
            except FileNotFoundError:
                yield ("listed-but-absent", p)
                continue
            yield ("lstat", p, s)
            names_x = fs.listxattr(p, follow_symlinks=False)
            yield ("xattrs", p, sorted((x, fs.getxattr(p, x, follow_symlinks=False)) for x in names_x))
            if stat.S_ISLNK(s[0]):
                yield ("readlink", p, fs.readlink(p))
            elif stat.S_ISREG(s[0]):
                yield ("read", p, fs.read_bytes(p))
            elif stat.S_ISDIR(s[0]):
                stack.append(p)
        # a name no layer has, and one below a non-directory
        yield ("absent", fs.exists(d.rstrip("/") + "/no-such-name"))


def _shape(n: Any) -> tuple[Any, ...]:
    """An entry as data: its type and every attribute, a file's bytes read."""
    d = attrs.asdict(n, recurse=False) if attrs.has(type(n)) else {}
    if "data" in d:
        d["data"] = bytes(d["data"])
    if "xattrs" in d:
        d["xattrs"] = sorted(d["xattrs"].items())
    return (type(n).__name__, sorted(d.items()))


def _index(low: Lower) -> dict[str, tuple[Any, ...]]:
    """The index as Overlay and FileSystem query it (reads everything); hard links as groups."""
    out = {}
    first: dict[int, str] = {}
    for k in sorted(low.nodes):
        n = low.nodes[k]
        group = first.setdefault(id(n), k) if not isinstance(n, Dir) else k
        row: tuple[Any, ...] = (_shape(n), group, low.where[k], k in low.merged, low.nlink(k, n))
        if isinstance(n, Dir):
            row += (low.listing(k), sorted(low.strays(k)))
        out[k] = row
    return out


def assert_same(dirs: list[str]) -> None:
    eager, lazy = _views(dirs)
    for options in (None, OverlayOptions(index=True, redirect_dir=True)):
        for readonly in (True, False):
            a = FileSystem(Overlay(eager, options, readonly=readonly))
            b = FileSystem(Overlay(lazy, options, readonly=readonly))
            for x, y in zip(_observe(a), _observe(b), strict=True):
                assert x == y
    assert eager.depth == lazy.depth == len(dirs)
    ia, ib = _index(eager), _index(lazy)
    assert list(ia) == list(ib)
    for k in ia:  # entries compare equal by value; hard links must also share the object
        assert ia[k] == ib[k], k
    for la, lb in zip(eager.layers, lazy.layers, strict=True):
        assert {k: _shape(e) for k, e in la.items()} == {k: _shape(e) for k, e in lb.items()}


def _write(layers: list[ufs.Layer], root: Path) -> list[str]:
    dirs = []
    for i, layer in enumerate(layers):
        d = root / f"l{i}"
        layer.to_directory(d, format="overlay")
        dirs.append(str(d))
    return dirs


@st.composite
def stacks(draw: Any) -> list[ufs.Layer]:
    """1-4 random layers; some directories get a redirect to a key of the layers below."""
    layers = draw(st.lists(ust.layers(max_entries=10, max_depth=3, alphabet=["a", "b", "c"]), min_size=1, max_size=4))
    out: list[ufs.Layer] = []
    below: list[str] = []
    for layer in layers:
        entries = dict(layer.items())
        for k, e in list(entries.items()):
            if k and isinstance(e, Dir) and not e.opaque and below and draw(st.integers(0, 3)) == 0:
                entries[k] = attrs.evolve(e, redirect=draw(st.sampled_from(below)))
        below.extend(k for k, e in entries.items() if k and isinstance(e, Dir))
        out.append(ufs.Layer(entries))
    return out


@settings(max_examples=int(os.environ.get("UFS_DISK_LOWER_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stacks())
def test_random_stacks_read_lazily_as_eagerly(layers: list[ufs.Layer]) -> None:
    root = Path(tempfile.mkdtemp(prefix="ufs-disk-lower-"))
    try:
        assert_same(_write(layers, root))
    finally:
        shutil.rmtree(root)


def test_crafted_stack(tmp_path: Path) -> None:
    """Redirect chains, a redirect to a missing or empty directory, merged dirs and whiteouts
    inside a redirected tree, xattr whiteouts, hard links across directories, a deep tree."""
    deep = "/".join(f"d{i}" for i in range(12))
    l0 = ufs.Layer.from_dict({
        "r/sub/f": b"0", "r/sub/g": b"0", "r/x": b"x", "r/keep/": Dir(), "empty/": Dir(),
        "link1": ufs.File(b"shared", xattrs={"user.k": b"v"}), "dir/link2": ufs.Hardlink("link1"),
        "dir/deeper/link3": ufs.Hardlink("link1"), f"{deep}/leaf": b"deep", "gone/": Dir(), "gone/a": b"a",
        "opq/old": b"old", "sym": ufs.Symlink("../r/x"), "fifo": ufs.Fifo(), "wh-bottom": ufs.WHITEOUT,
    })
    l1 = ufs.Layer.from_dict({
        "r/sub/g": ufs.WHITEOUT, "r/sub/h": b"1", "r/sub/wh1": ufs.WHITEOUT, "mid/": Dir(redirect="r"),
        "gone": ufs.WHITEOUT, "opq/": Dir(opaque=True), "opq/new": b"new", "opq/stray": ufs.WHITEOUT,
        "to-empty/": Dir(redirect="empty"), "to-missing/": Dir(redirect="nowhere"),
        f"{deep}/leaf2": b"deep2", "dir/": Dir(mode=0o700, xattrs={"user.d": b"1"}),
        "r2/solo/w": ufs.WHITEOUT, "r2/solo/f": b"s",
    })
    l2 = ufs.Layer.from_dict({
        "top/": Dir(redirect="mid"), "top/new": b"2", "top/sub/": Dir(), "top/sub/i": b"2",
        "r": ufs.WHITEOUT, "gone/": Dir(), "gone/b": b"b", "link1": b"replaced", "mv/": Dir(redirect="r2"),
    })
    dirs = _write([l0, l1, l2], tmp_path)
    # A relative redirect (a name in the same parent), as the kernel writes for a rename
    # within one directory, and a directory of xattr whiteouts (opaque=x).
    os.mkdir(os.path.join(dirs[2], "rel"))
    os.setxattr(os.path.join(dirs[2], "rel"), "trusted.overlay.redirect", b"dir")
    xw = os.path.join(dirs[1], "xw")
    os.mkdir(xw)
    Path(xw, "hidden").write_bytes(b"")
    os.setxattr(os.path.join(xw, "hidden"), "trusted.overlay.whiteout", b"")
    os.setxattr(xw, "trusted.overlay.opaque", b"x")
    Path(dirs[0], "xw").mkdir()
    Path(dirs[0], "xw", "hidden").write_bytes(b"below")
    Path(dirs[0], "xw", "shown").write_bytes(b"shown")
    assert_same(dirs)
    lazy = DiskLower(dirs)
    fs = FileSystem(Overlay(lazy, readonly=True))
    assert fs.listdir("/top") == ["keep", "new", "sub", "x"]
    # top -> mid (layer 1) -> r (layer 0): layer 1's own r/sub (g whited out, h) is not on the way
    assert fs.listdir("/top/sub") == ["f", "g", "i"] and fs.lstat("/top/sub").st_nlink == 1  # merged
    # a directory one layer has, reached through a redirect: listed with its whiteout, as
    # the kernel lists it (read from the layer where it is, r2/solo, not mv/solo)
    assert fs.listdir("/mv/solo") == ["f", "w"] and not fs.exists("/mv/solo/w")
    assert fs.listdir("/xw") == ["shown"] and fs.read_bytes("/dir/deeper/link3") == b"shared"
    link2, link3 = fs.lstat("/dir/link2"), fs.lstat("/dir/deeper/link3")
    assert link2.st_nlink == 3 and link2.st_ino == link3.st_ino
    assert fs.read_bytes(f"/{deep}/leaf") == b"deep" and fs.listdir("/gone") == ["b"]


def test_mounting_reads_no_directory(tmp_path: Path) -> None:
    """Constructing reads nothing below the roots; a lookup reads only the directories on its path."""
    layer = ufs.Layer.from_dict({f"d{i}/f{j}": b"x" for i in range(20) for j in range(20)})
    dirs = _write([layer, ufs.Layer.from_dict({"d3/f3": b"y", "e/": Dir()})], tmp_path)
    lazy = DiskLower(dirs)

    def read() -> list[str]:
        return sorted(k for r in lazy._r for k in r._dirs)

    assert read() == []
    assert lazy.nodes.get("d3/f3") is not None and lazy.nodes.get("d3/nope") is None
    assert read() == ["", "", "d3", "d3"]
    assert lazy.nodes.get("d3/f3/below-a-file") is None and lazy.nodes.get("nope/x") is None
    assert read() == ["", "", "d3", "d3"]
    lazy.load_all()
    assert len(read()) == 2 + 20 + 2


def test_bad_lower_dirs(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="file"):
        DiskLower([str(tmp_path / "file")])
    with pytest.raises(FileNotFoundError, match="missing"):
        DiskLower([str(tmp_path / "missing")])


def test_redirected_trees_as_the_kernel_shows_them(tmp_path: Path) -> None:
    """Below a redirected directory, a directory several layers have is merged (st_nlink 1)
    and one that a single layer has lists its whiteouts, read where that layer has it: the
    kernel's overlayfs on the same lowers is the oracle (Lower got both wrong before)."""
    from unionfs_sim.linux import unmount
    from unionfs_sim.testing.kernel import kernel_unavailable

    why = kernel_unavailable()
    if why:
        pytest.skip(why)
    l0 = ufs.Layer.from_dict({"r/sub/f": b"0", "r/sub/g": b"0", "r/x": b"x", "r/sub/d1/": Dir(), "r/sub/d2/": Dir()})
    l1 = ufs.Layer.from_dict({"r/sub/g": ufs.WHITEOUT, "mid/": Dir(redirect="r"), "mid/sub/": Dir(),
                              "mid/sub/z": b"z", "r2/solo/w": ufs.WHITEOUT, "r2/solo/f": b"s"})
    l2 = ufs.Layer.from_dict({"top/": Dir(redirect="mid"), "top/sub/": Dir(), "top/sub/i": b"2",
                              "mv/": Dir(redirect="r2"), "mv2/": Dir(redirect="mid")})
    dirs = _write([l0, l1, l2], tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    import subprocess

    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={':'.join(reversed(dirs))},redirect_dir=follow", str(mnt)], check=True)
    try:
        eager, lazy = _views(dirs)
        for low in (eager, lazy):
            fs = FileSystem(Overlay(low, readonly=True))
            for p in ("top", "top/sub", "mv", "mv/solo", "mv2", "mv2/sub"):
                want = (sorted(os.listdir(mnt / p)), os.lstat(mnt / p).st_nlink)
                assert (fs.listdir("/" + p), fs.lstat("/" + p).st_nlink) == want, (type(low).__name__, p)
    finally:
        assert unmount(str(mnt), lazy=False) == 0


def _at(root: Path, rel: str) -> tuple[int, str]:
    """``root/rel`` as (its parent opened by walking, its name): the path is past PATH_MAX."""
    *parents, name = rel.split("/")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    for p in parents:
        nfd = os.open(p, os.O_PATH | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd, name


def test_a_lower_deeper_than_path_max(tmp_path: Path) -> None:
    """A lower directory whose paths pass PATH_MAX (an earlier upperdir the drop-in or the
    kernel wrote) is read lazily as the kernel's overlayfs reads it: entries, data, symlinks,
    xattrs, hard links, whiteouts and copy-up of a deep file (ENAMETOOLONG before)."""
    import subprocess

    from unionfs_sim.linux import unmount
    from unionfs_sim.testing.kernel import kernel_unavailable

    low = tmp_path / "low"
    low.mkdir()
    deep = "/".join(chr(ord("a") + i) * 250 for i in range(18))  # 4,535 bytes
    fd = os.open(low, os.O_PATH | os.O_DIRECTORY)
    for part in deep.split("/"):
        os.mkdir(part, 0o755, dir_fd=fd)
        nfd = os.open(part, os.O_PATH | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    d, _ = _at(low, deep + "/x")
    try:
        wfd = os.open("f", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=d)
        os.write(wfd, b"deep data")
        os.close(wfd)
        os.link("f", "hard", src_dir_fd=d, dst_dir_fd=d)
        os.symlink("f", "s", dir_fd=d)
        os.mknod("wh", stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=d)
        os.setxattr(f"/proc/self/fd/{d}/f", "user.k", b"v")
    finally:
        os.close(d)

    empty = tmp_path / "empty"  # the kernel mounts no fewer than two lowers read-only
    empty.mkdir()
    lazy = DiskLower([str(low), str(empty)])
    fs = FileSystem(Overlay(lazy, readonly=True)).unbounded()
    top = "/" + deep
    # A whiteout in a directory only one layer has is listed (readdir passes through) but
    # not found, as the kernel shows it (compared below).
    assert sorted(fs.listdir(top)) == ["f", "hard", "s", "wh"] and not fs.exists(top + "/wh")
    assert fs.read_bytes(top + "/f") == b"deep data"
    assert fs.readlink(top + "/s") == "f"
    assert fs.getxattr(top + "/f", "user.k") == b"v"
    assert fs.lstat(top + "/f").st_ino == fs.lstat(top + "/hard").st_ino
    assert fs.lstat(top + "/f").st_nlink == 2

    rw = FileSystem(Overlay(DiskLower([str(low)]))).unbounded()
    with rw.open(top + "/f", "ab") as f:  # copy-up reads the deep lower file
        f.write(b"+")
    assert rw.read_bytes(top + "/f") == b"deep data+"

    why = kernel_unavailable()
    if why:
        pytest.skip(why)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={empty}:{low}", str(mnt)], check=True)
    try:
        k, _ = _at(mnt, deep + "/x")
        try:
            want = sorted(os.listdir(f"/proc/self/fd/{k}"))
            rfd = os.open("f", os.O_RDONLY, dir_fd=k)
            data = os.read(rfd, 100)
            os.close(rfd)
        finally:
            os.close(k)
        assert (sorted(fs.listdir(top)), fs.read_bytes(top + "/f")) == (want, data)
    finally:
        assert unmount(str(mnt), lazy=False) == 0
