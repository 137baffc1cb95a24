"""unionfs_sim.formats.overlaydir: layers to and from overlayfs lower/upper directories."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from unionfs_sim.errors import FormatError
from unionfs_sim.formats import overlaydir
from unionfs_sim.layer import Layer
from unionfs_sim.nodes import WHITEOUT, Device, Dir, Entry, Fifo, File, Hardlink, Socket, Symlink, Whiteout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writing owners, devices and trusted.* xattrs needs root")


# --- helpers -------------------------------------------------------------------------


def link_groups(entries: Mapping[str, Entry]) -> list[list[str]]:
    """The hard-link groups (names sharing one object) of size > 1, sorted."""
    by_id: dict[int, list[str]] = {}
    for k, n in entries.items():
        if not isinstance(n, (Whiteout, Dir)):
            by_id.setdefault(id(n), []).append(k)
    return sorted(sorted(g) for g in by_id.values() if len(g) > 1)


def assert_same_entries(got: Mapping[str, Entry], want: Mapping[str, Entry]) -> None:
    """Same keys, each entry the same type and fields, and the same hard-link groups."""
    assert sorted(got) == sorted(want)
    for k in want:
        g, w = got[k], want[k]
        if isinstance(w, Whiteout):
            assert g is WHITEOUT, k
        else:
            assert w.same(g), f"/{k}: got {g!r}, want {w!r}"
    assert link_groups(got) == link_groups(want)


def xattrs_on_disk(path: str | Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}


@contextlib.contextmanager
def raw_overlay(base: Path, lowers: list[Path], *opts: str) -> Iterator[tuple[Path, Path]]:
    """A kernel overlay of ``lowers`` (bottom first) with a fresh upper; yields (mnt, upper)."""
    upper, work, mnt = base / "upper", base / "work", base / "mnt"
    for d in (upper, work, mnt):
        d.mkdir()
    o = ",".join(
        [f"lowerdir={':'.join(str(p) for p in reversed(lowers))}", f"upperdir={upper}", f"workdir={work}", *opts]
    )
    r = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", o, str(mnt)], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {r.stderr.strip()}")
    try:
        yield mnt, upper
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


ALL_KINDS: dict[str, object] = {
    "": Dir(mode=0o755, mtime_ns=7),
    "bin/": Dir(mode=0o755, uid=0, gid=0, mtime_ns=1_600_000_000_123_456_789),
    "bin/busybox": File(b"\x7fELF...", mode=0o4755, uid=0, gid=0, mtime_ns=1_500_000_000_000_000_001),
    "bin/sh": Hardlink("bin/busybox"),
    "bin/ash": Hardlink("bin/busybox"),
    "bin/ls": Symlink("busybox", uid=12, gid=34, mtime_ns=99),
    "bin/abs": Symlink("/etc/hostname"),
    "bin/ping": File(b"ping", mode=0o755, xattrs={"security.capability": b"\x01\x00\x00\x02" + bytes(16)}),
    "etc/": Dir(mode=0o750, uid=1000, gid=1001, mtime_ns=5, xattrs={"user.note": b"dir", "trusted.x": b"t"}),
    "etc/hostname": File(
        b"box\n", mode=0o644, uid=1000, gid=1001, mtime_ns=42, xattrs={"user.a": b"1", "user.b": b"\x00\xff"}
    ),
    "etc/sgid": File(b"", mode=0o2711),
    "etc/motd": WHITEOUT,
    "tmp/": Dir(mode=0o1777, mtime_ns=1),
    "var/": Dir(),
    "var/cache/": Dir(opaque=True, mode=0o700, mtime_ns=3),
    "var/moved/": Dir(redirect="var/old", mtime_ns=4),
    "var/moved/keep": b"k",
    "run/": Dir(),
    "run/initctl": Fifo(mode=0o600, uid=5, gid=6, mtime_ns=8),
    "run/sock": Socket(mode=0o755, mtime_ns=9),
    "run/fifolink": Hardlink("run/initctl"),
    "dev/": Dir(),
    "dev/null": Device("c", 1, 3, mode=0o666, mtime_ns=10),
    "dev/sda": Device("b", 8, 0, mode=0o660, gid=6),
    "esc": File(b"e", xattrs={"trusted.overlay.opaque": b"y", "trusted.overlay.foo": b"escaped"}),
}


# --- write -> read round trips ---------------------------------------------------------


def test_round_trip_every_kind(tmp_path: Path) -> None:
    layer = Layer.from_dict(ALL_KINDS)
    overlaydir.write(layer, tmp_path / "l")
    back = overlaydir.read(tmp_path / "l", include_root=True)
    assert_same_entries(back, layer)
    assert back["bin/sh"] is back["bin/busybox"] is back["bin/ash"]
    assert back["run/fifolink"] is back["run/initctl"]
    assert list(back) == sorted(back, key=lambda k: k.split("/"))
    # and Layer accepts the result as it is (hard-link counts included)
    assert Layer(back).nlink(back["bin/sh"]) == 3


def test_on_disk_form(tmp_path: Path) -> None:
    layer = Layer.from_dict(ALL_KINDS)
    d = tmp_path / "l"
    overlaydir.write(layer, d)
    st = os.lstat(d / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert xattrs_on_disk(d / "var/cache") == {"trusted.overlay.opaque": b"y"}
    assert xattrs_on_disk(d / "var/moved") == {"trusted.overlay.redirect": b"/var/old"}
    # an entry's own trusted.overlay.* xattrs are stored escaped, as the kernel does
    assert xattrs_on_disk(d / "esc") == {
        "trusted.overlay.overlay.opaque": b"y",
        "trusted.overlay.overlay.foo": b"escaped",
    }
    busy = os.lstat(d / "bin/busybox")
    assert busy.st_nlink == 3 and busy.st_mode == stat.S_IFREG | 0o4755
    assert busy.st_mtime_ns == 1_500_000_000_000_000_001
    assert os.lstat(d / "etc/sgid").st_mode & 0o7777 == 0o2711
    assert os.lstat(d / "tmp").st_mode & 0o7777 == 0o1777
    ls = os.lstat(d / "bin/ls")
    assert (ls.st_uid, ls.st_gid, ls.st_mtime_ns) == (12, 34, 99)
    # directory mtimes survive the creation of their children
    assert os.lstat(d / "bin").st_mtime_ns == 1_600_000_000_123_456_789
    assert os.lstat(d).st_mtime_ns == 7
    assert os.lstat(d / "etc").st_uid == 1000


def test_implicit_parents(tmp_path: Path) -> None:
    layer = Layer.from_dict({"a/b/c": b"x", "d/e": b"y"})
    below = {"a": Dir(mode=0o700, uid=7, mtime_ns=11, xattrs={"user.k": b"v"}, opaque=True, redirect="z")}
    overlaydir.write(layer, tmp_path / "l", lower_dirs_meta=below.get)
    back = overlaydir.read(tmp_path / "l", include_root=True)
    # copied metadata, never the lower dir's opaque/redirect flags
    assert back["a"].same(Dir(mode=0o700, uid=7, mtime_ns=11, xattrs={"user.k": b"v"}))
    for k in ("", "a/b", "d"):
        assert back[k].same(Dir()), k
    assert back["a/b/c"].same(File(b"x"))


def test_read_without_root_and_plain_round_trip(tmp_path: Path) -> None:
    spec = {
        k: v
        for k, v in ALL_KINDS.items()
        if v is not WHITEOUT and k not in ("", "var/cache/", "var/moved/", "var/moved/keep")
    }
    spec["dev/wh"] = Device("c", 0, 0)  # just a device in a plain tree
    layer = Layer.from_dict(spec)
    overlaydir.write(layer, tmp_path / "p", format="plain")
    # plain: trusted.overlay.* xattrs are written and read verbatim
    assert xattrs_on_disk(tmp_path / "p/esc") == {"trusted.overlay.opaque": b"y", "trusted.overlay.foo": b"escaped"}
    back = overlaydir.read(tmp_path / "p", format="plain")
    assert "" not in back
    assert_same_entries(back, layer)


@pytest.mark.parametrize("spec", [{"gone": WHITEOUT}, {"o/": Dir(opaque=True)}, {"r/": Dir(redirect="x")}])
def test_plain_refuses_overlay_only_entries(tmp_path: Path, spec: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        overlaydir.write(Layer.from_dict(spec), tmp_path / "p", format="plain")


def test_write_refusals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whiteout"):
        overlaydir.write({"dev/x": Device("c", 0, 0)}, tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_bytes(b"")
    with pytest.raises(OSError) as ei:
        overlaydir.write({}, tmp_path / "full")
    assert ei.value.errno == errno.ENOTEMPTY
    with pytest.raises(ValueError, match="not a directory"):
        overlaydir.write({"f": File(b""), "f/g": File(b"")}, tmp_path / "b")
    with pytest.raises(ValueError, match="normalised"):
        overlaydir.write({"/abs": File(b"")}, tmp_path / "c")
    with pytest.raises(ValueError, match="format"):
        overlaydir.write({}, tmp_path / "d", format="tar")  # type: ignore[arg-type]


# --- reading hand-made and kernel-made directories ---------------------------------------


def test_read_xattr_whiteouts_and_user_namespace(tmp_path: Path) -> None:
    d = tmp_path / "l"
    (d / "x").mkdir(parents=True)
    os.setxattr(d / "x", "trusted.overlay.opaque", b"x")
    (d / "x/gone").write_bytes(b"")
    os.setxattr(d / "x/gone", "trusted.overlay.whiteout", b"")
    (d / "x/full").write_bytes(b"data")  # not empty: not a whiteout
    os.setxattr(d / "x/full", "trusted.overlay.whiteout", b"")
    (d / "plain").mkdir()
    (d / "plain/notwh").write_bytes(b"")  # whiteout xattr outside an opaque=x dir: a file
    os.setxattr(d / "plain/notwh", "trusted.overlay.whiteout", b"")
    (d / "u").mkdir()
    os.setxattr(d / "u", "user.overlay.opaque", b"y")
    (d / "u/sub").mkdir()
    os.setxattr(d / "u/sub", "user.overlay.redirect", b"old")  # relative: a sibling name
    (d / "f").write_bytes(b"f")
    for name, value in [
        ("trusted.overlay.origin", b"\x00\xfb"),
        ("trusted.overlay.impure", b"y"),
        ("trusted.overlay.nlink", b"U+0"),
        ("user.overlay.overlay.kept", b"1"),
        ("user.mine", b"2"),
    ]:
        os.setxattr(d / "f", name, value)
    os.symlink("/etc", d / "hostetc")  # never followed
    got = overlaydir.read(d)
    assert got["x/gone"] is WHITEOUT
    assert got["x"].same(Dir(mtime_ns=got["x"].mtime_ns))  # "x" is not opaque
    assert got["x/full"].same(File(b"data", mtime_ns=got["x/full"].mtime_ns))
    assert isinstance(got["plain/notwh"], File) and not got["plain/notwh"].xattrs
    assert got["u"].opaque and got["u/sub"].redirect == "u/old"
    assert dict(got["f"].xattrs) == {"user.overlay.kept": b"1", "user.mine": b"2"}
    assert got["hostetc"].same(Symlink("/etc", mtime_ns=got["hostetc"].mtime_ns))
    assert not any(k.startswith("hostetc/") for k in got)
    # only one namespace when asked: user.overlay.* is then an ordinary xattr
    strict = overlaydir.read(d, userxattr=False)
    assert not strict["u"].opaque and "user.overlay.opaque" in strict["u"].xattrs
    assert dict(strict["f"].xattrs) == {"user.overlay.overlay.kept": b"1", "user.mine": b"2"}
    # plain: nothing is interpreted
    plain = overlaydir.read(d, format="plain")
    assert isinstance(plain["x/gone"], File) and "trusted.overlay.whiteout" in plain["x/gone"].xattrs


def test_read_bad_redirect_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.setxattr(tmp_path / "d", "trusted.overlay.redirect", b"../../out")
    with pytest.raises(FormatError, match=str(tmp_path / "d")):
        overlaydir.read(tmp_path)
    with pytest.raises(NotADirectoryError):
        overlaydir.read(__file__)


@pytest.mark.kernel
def test_kernel_reads_written_lowers(tmp_path: Path) -> None:
    """What write() produces means to the kernel what the entries mean to the model."""
    bottom = Layer.from_dict(
        {
            "etc/": Dir(),
            "etc/motd": b"hi",
            "etc/keep": b"k",
            "var/": Dir(),
            "var/cache/": Dir(),
            "var/cache/old": b"o",
            "var/old/": Dir(),
            "var/old/inner": b"i",
        }
    )
    top = Layer.from_dict(
        {
            "etc/motd": WHITEOUT,
            "var/cache/": Dir(opaque=True),
            "var/cache/new": b"n",
            "var/moved/": Dir(redirect="var/old"),
            "esc": File(b"e", xattrs={"trusted.overlay.foo": b"escaped", "user.u": b"1"}),
        }
    )
    overlaydir.write(bottom, tmp_path / "l0")
    overlaydir.write(top, tmp_path / "l1")
    with raw_overlay(tmp_path, [tmp_path / "l0", tmp_path / "l1"], "redirect_dir=on") as (mnt, _upper):
        assert sorted(os.listdir(mnt / "etc")) == ["keep"]
        assert sorted(os.listdir(mnt / "var/cache")) == ["new"]
        assert sorted(os.listdir(mnt / "var/moved")) == ["inner"]
        assert xattrs_on_disk(mnt / "esc") == {"trusted.overlay.foo": b"escaped", "user.u": b"1"}


@pytest.mark.kernel
def test_read_kernel_upperdir(tmp_path: Path) -> None:
    lower = Layer.from_dict(
        {
            "etc/": Dir(mtime_ns=1),
            "etc/motd": b"hi",
            "etc/hostname": File(b"box\n", xattrs={"user.k": b"v"}),
            "cache/": Dir(),
            "cache/a/b": b"x",
            "r/": Dir(),
            "r/inner": b"i",
        }
    )
    overlaydir.write(lower, tmp_path / "l0")
    (tmp_path / "l1").mkdir()  # an empty second lower
    with raw_overlay(tmp_path, [tmp_path / "l0", tmp_path / "l1"], "redirect_dir=on") as (mnt, upper):
        os.unlink(mnt / "etc/motd")
        shutil.rmtree(mnt / "cache")
        os.mkdir(mnt / "cache")
        with open(mnt / "etc/hostname", "ab") as f:
            f.write(b"more\n")
        os.rename(mnt / "r", mnt / "r2")
        os.mkdir(mnt / "fresh")
    got = overlaydir.read(upper, userxattr=False)
    assert got["etc/motd"] is WHITEOUT
    assert isinstance(got["cache"], Dir) and got["cache"].opaque
    assert not any(k.startswith("cache/") for k in got)
    # copy-up keeps data and the entry's own xattrs; bookkeeping (origin ...) is dropped
    assert got["etc/hostname"].data == b"box\nmore\n"
    assert dict(got["etc/hostname"].xattrs) == {"user.k": b"v"}
    assert dict(got["etc"].xattrs) == {}
    # rename under redirect_dir=on: a whiteout at the old name, a redirect (stored
    # relative by the kernel, "r") resolved to a key at the new one
    assert got["r"] is WHITEOUT
    assert got["r2"].redirect == "r"
    # surprise worth modelling: with redirect_dir=on, mkdir of a brand-new name in a
    # merged directory makes an opaque upper dir (the kernel's lookup shortcut)
    assert got["fresh"].opaque
