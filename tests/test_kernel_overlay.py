"""unionfs_sim.testing.kernel.KernelOverlay: a real overlayfs mount behind the os-style API."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

import pytest

from unionfs_sim.layer import Layer
from unionfs_sim.nodes import WHITEOUT, Device, Dir, Fifo, File, Hardlink, Symlink
from unionfs_sim.options import OverlayOptions
from unionfs_sim.testing import KernelOverlay, KernelUnavailable
from unionfs_sim.testing.kernel import KernelFile, mounted_at

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module", autouse=True)
def kernel_available() -> Iterator[None]:
    """Skip the module, printing why, when no overlay can be mounted here."""
    try:
        with KernelOverlay([Layer()]):
            pass
    except KernelUnavailable as e:
        pytest.skip(str(e))
    yield


def proc_mounts() -> str:
    with open("/proc/mounts", encoding="utf-8") as f:
        return f.read()


BASE = Layer.from_dict(
    {
        "etc/": Dir(mode=0o755, mtime_ns=1_000_000_000_000),
        "etc/hostname": b"base\n",
        "etc/motd": b"welcome\n",
        "etc/passwd": File(b"root:x:0:0\n", mode=0o644, uid=0, gid=0),
        "bin/busybox": File(b"BUSYBOX", mode=0o755),
        "bin/sh": Hardlink("bin/busybox"),
        "var/": Dir(),
        "var/cache/": Dir(),
        "var/cache/apt/pkg": b"deb",
        "lib/": Dir(mode=0o750, uid=3),
        "lib/old": b"old",
        "dev/": Dir(),
        "dev/null": Device("c", 1, 3, mode=0o666),
    }
)
MIDDLE = Layer.from_dict(
    {
        "etc/motd": WHITEOUT,
        "var/cache/": Dir(opaque=True),
        "var/cache/fresh": b"fresh",
        "run/initctl": Fifo(),
        "lib/new": b"new",  # lib is implicit here: it keeps BASE's mode and owner
    }
)
TOP = Layer.from_dict(
    {
        "etc/hostname": b"top\n",
        "link-abs": Symlink("/etc/hostname"),
        "link-up": Symlink("../../../../../etc/hostname"),
        "root-link": Symlink("/"),
        "opt/app/run.sh": File(b"#!/bin/sh\n", mode=0o755),
    }
)
STACK = [BASE, MIDDLE, TOP]


def tree(fs: object) -> dict[str, str]:
    """path -> 'd' / 'l:target' / file bytes (repr) of the merged view, via the facade."""
    out: dict[str, str] = {}
    for top, dirs, files in fs.walk("/"):  # type: ignore[attr-defined]
        for d in dirs:
            p = os.path.join(top, d)
            out[p] = "l:" + fs.readlink(p) if fs.islink(p) else "d"  # type: ignore[attr-defined]
        for f in files:
            p = os.path.join(top, f)
            st = fs.lstat(p)  # type: ignore[attr-defined]
            if stat.S_ISLNK(st.st_mode):
                out[p] = "l:" + fs.readlink(p)  # type: ignore[attr-defined]
            elif stat.S_ISREG(st.st_mode):
                out[p] = repr(fs.read_bytes(p))  # type: ignore[attr-defined]
            else:
                out[p] = stat.filemode(st.st_mode)
    return out


def test_merged_view_of_three_layers() -> None:
    with KernelOverlay(STACK) as k:
        assert mounted_at(k.mountpoint)
        assert tree(k.fs) == {
            "/bin": "d",
            "/bin/busybox": "b'BUSYBOX'",
            "/bin/sh": "b'BUSYBOX'",
            "/dev": "d",
            "/dev/null": "crw-rw-rw-",
            "/etc": "d",
            "/etc/hostname": "b'top\\n'",
            "/etc/passwd": "b'root:x:0:0\\n'",
            "/lib": "d",
            "/lib/new": "b'new'",
            "/lib/old": "b'old'",
            "/opt": "d",
            "/opt/app": "d",
            "/opt/app/run.sh": "b'#!/bin/sh\\n'",
            "/run": "d",
            "/run/initctl": "prw-r--r--",
            "/var": "d",
            "/var/cache": "d",
            "/var/cache/fresh": "b'fresh'",
            "/link-abs": "l:/etc/hostname",
            "/link-up": "l:../../../../../etc/hostname",
            "/root-link": "l:/",
        }
        fs = k.fs
        assert sorted(fs.listdir("/var/cache")) == ["fresh"]  # opaque hides apt/
        assert not fs.exists("/etc/motd")
        with pytest.raises(FileNotFoundError):
            fs.stat("/etc/motd")
        # a hard-link group of one layer is one inode in the merged view
        assert fs.stat("/bin/sh").st_ino == fs.stat("/bin/busybox").st_ino
        assert fs.stat("/bin/sh").st_nlink == 2
        # implicit /lib of MIDDLE took BASE's metadata (containerd-style apply)
        lib = fs.stat("/lib")
        assert (stat.S_IMODE(lib.st_mode), lib.st_uid) == (0o750, 3)
        assert fs.stat("/etc").st_mtime_ns == 1_000_000_000_000
        dev = fs.lstat("/dev/null")
        assert stat.S_ISCHR(dev.st_mode) and (os.major(dev.st_rdev), os.minor(dev.st_rdev)) == (1, 3)
        entries = {e.name: e for e in fs.scandir("/")}
        assert entries["etc"].is_dir() and not entries["etc"].is_symlink()
        assert entries["link-abs"].is_symlink() and entries["link-abs"].is_file()
        assert not entries["link-abs"].is_file(follow_symlinks=False)
        assert entries["root-link"].is_dir() and entries["etc"].path == "/etc"


def test_absolute_symlinks_resolve_inside_the_mount() -> None:
    with KernelOverlay(STACK) as k:
        fs = k.fs
        assert fs.read_bytes("/link-abs") == b"top\n"
        assert fs.read_bytes("/link-up") == b"top\n"  # ".." stops at the merged root
        assert sorted(fs.listdir("/root-link")) == sorted(fs.listdir("/"))
        assert fs.read_text("/root-link/etc/passwd") == "root:x:0:0\n"
        # writing through the absolute link lands in the mount, not on the host
        fs.write_bytes("/link-abs", b"via link\n")
        assert fs.read_bytes("/etc/hostname") == b"via link\n"
        assert fs.stat("/link-abs").st_ino == fs.stat("/etc/hostname").st_ino
    assert k.upper is not None and k.upper["etc/hostname"].data == b"via link\n"


def test_copy_up_lands_in_upper() -> None:
    with KernelOverlay(STACK) as k:
        fs = k.fs
        fs.write_bytes("/etc/passwd", b"root:x:0:0\nweb:x:1:1\n")
        fs.unlink("/bin/sh")
        fs.chmod("/lib/old", 0o600)
        fs.setxattr("/opt/app/run.sh", "user.tag", b"v1")
        fs.mkdir("/data")
        fs.umask = 0o077
        fs.write_text("/data/secret", "s")
        fs.symlink("/etc/passwd", "/data/pw")
        fs.link("/etc/passwd", "/etc/passwd2")
    up = k.upper
    assert up is not None
    assert up["etc/passwd"].data == b"root:x:0:0\nweb:x:1:1\n"
    assert up["etc/passwd"] is up["etc/passwd2"]  # one inode: one shared File
    assert up["bin/sh"] is WHITEOUT
    assert isinstance(up["bin"], Dir) and "bin/busybox" not in up
    assert up["lib/old"].same(File(b"old", mode=0o600, mtime_ns=up["lib/old"].mtime_ns))
    assert up["lib"].mode == 0o750 and up["lib"].uid == 3  # parent copied up with metadata
    assert dict(up["opt/app/run.sh"].xattrs) == {"user.tag": b"v1"}
    assert up["data"].mode == 0o755  # mkdir before the umask change: 0o777 & ~0o022
    assert up["data/secret"].mode == 0o600  # write_text after it: 0o666 & ~0o077
    assert up["data/pw"].same(Symlink("/etc/passwd", mtime_ns=up["data/pw"].mtime_ns))
    assert "" in up and isinstance(up[""], Dir)  # the upper root is always there
    for node in up.values():  # kernel bookkeeping never leaks into entries
        assert not any(n.startswith("trusted.overlay.") for n in getattr(node, "xattrs", {}))
    # untouched lower files are not in the upper layer
    assert "etc/hostname" not in up and "var/cache/fresh" not in up


def test_errno_is_passed_through() -> None:
    with KernelOverlay(STACK) as k:
        fs = k.fs
        with pytest.raises(OSError) as ei:
            fs.rename("/etc", "/etc2")  # a lower dir, redirect_dir off
        assert ei.value.errno == errno.EXDEV
        with pytest.raises(FileNotFoundError) as nf:
            fs.read_bytes("/nope")
        assert nf.value.errno == errno.ENOENT and nf.value.filename == "/nope"
        with pytest.raises(OSError) as ne:
            fs.rmdir("/var")  # merged and not empty
        assert ne.value.errno == errno.ENOTEMPTY
        with pytest.raises(IsADirectoryError):
            fs.open("/etc", "w")
        with pytest.raises(IsADirectoryError):
            fs.open("/etc")  # as the builtin open does for a directory
        with pytest.raises(NotADirectoryError):
            fs.listdir("/etc/hostname")
        with pytest.raises(FileExistsError):
            fs.mkdir("/etc")
        with pytest.raises(OSError) as nd:
            fs.getxattr("/etc/hostname", "user.none")
        assert nd.value.errno == errno.ENODATA
        fs.rename("/etc/hostname", "/etc/hn")  # non-directories rename fine
        assert fs.read_bytes("/etc/hn") == b"top\n"
    assert k.upper is not None and k.upper["etc/hostname"] is WHITEOUT


def test_redirect_dir_rename() -> None:
    with KernelOverlay(STACK, OverlayOptions(redirect_dir=True)) as k:
        k.fs.rename("/etc", "/etc2")
        assert k.fs.read_bytes("/etc2/passwd") == b"root:x:0:0\n"
        assert not k.fs.exists("/etc")
    up = k.upper
    assert up is not None
    assert up["etc"] is WHITEOUT and up["etc2"].redirect == "etc"
    assert "etc2/passwd" not in up  # only the directory was copied up


def test_open_and_os_open() -> None:
    with KernelOverlay(STACK) as k:
        fs = k.fs
        with fs.open("/etc/hostname", "rb") as f:
            assert f.read(2) == b"to" and f.tell() == 2
            f.seek(0)
            assert f.read() == b"top\n"
            assert f.name == "/etc/hostname"
        with fs.open("/etc/hostname", "a") as t:
            t.write("more\n")
        with fs.open("/etc/hostname") as t:
            assert t.readlines() == ["top\n", "more\n"]
        with fs.open("/new", "x+b") as f:
            f.write(b"abcdef")
            f.seek(2)
            assert f.read(2) == b"cd"
            f.truncate(3)
        assert fs.read_bytes("/new") == b"abc"
        with pytest.raises(FileExistsError):
            fs.open("/new", "x")
        raw = fs.os_open("/raw", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640)
        assert isinstance(raw, KernelFile) and raw.readable() and raw.writable()
        assert raw.write(b"xyz") == 3 and raw.seek(0) == 0 and raw.read() == b"xyz"
        assert stat.S_IMODE(raw.fstat().st_mode) == 0o640 & ~0o022
        raw.close()
        with pytest.raises(FileExistsError):
            fs.os_open("/raw", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        d = fs.os_open("/etc", os.O_RDONLY | os.O_DIRECTORY)  # os.open allows it ...
        with pytest.raises(IsADirectoryError):
            d.read(1)  # ... read(2) refuses
        d.close()
        with pytest.raises(OSError) as ei:
            fs.os_open("/link-abs", os.O_RDONLY | os.O_NOFOLLOW)
        assert ei.value.errno == errno.ELOOP
        unclosed = fs.open("/pending", "w")  # closed (and flushed) at exit
        unclosed.write("flushed at exit")
    assert k.upper is not None and k.upper["pending"].data == b"flushed at exit"


def test_readonly_and_single_layer() -> None:
    with KernelOverlay([TOP], readonly=True) as k:
        assert k.fs.read_bytes("/etc/hostname") == b"top\n"
        with pytest.raises(OSError) as ei:
            k.fs.write_bytes("/etc/hostname", b"x")
        assert ei.value.errno == errno.EROFS
    assert k.upper is None
    with KernelOverlay([]) as k:  # no layers at all: an empty lower
        assert k.fs.listdir("/") == []
        k.fs.write_bytes("/f", b"f")
    assert k.upper is not None and k.upper["f"].data == b"f"


def test_metacopy_upper_gets_the_data() -> None:
    with KernelOverlay(STACK, OverlayOptions(metacopy=True)) as k:
        k.fs.chmod("/etc/passwd", 0o600)  # metadata-only copy-up: the upper file has no data
        assert os.getxattr(os.path.join(k.upperdir, "etc/passwd"), "trusted.overlay.metacopy") == b""
    assert k.upper is not None
    assert k.upper["etc/passwd"].data == b"root:x:0:0\n" and k.upper["etc/passwd"].mode == 0o600


def test_cleanup_even_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), KernelOverlay(STACK) as k:
        mnt = k.mountpoint
        base = os.path.dirname(mnt)
        f = k.fs.open("/etc/hostname", "rb")  # an open file keeps nothing busy
        assert mnt in proc_mounts()
        raise RuntimeError("boom")
    assert mnt not in proc_mounts()
    assert not os.path.exists(base)
    assert f.closed
    with pytest.raises(ValueError):
        k.fs  # noqa: B018 - the facade is gone after exit
    # a clean exit also leaves nothing behind
    with KernelOverlay(STACK) as k:
        mnt = k.mountpoint
    assert mnt not in proc_mounts() and not os.path.exists(mnt)


def test_redirects_and_escaped_xattrs_in_lowers() -> None:
    """Entries overlaydir writes for the model mean the same to the kernel."""
    lower = Layer.from_dict({"old/": Dir(), "old/x": b"x", "f": File(b"f", xattrs={"trusted.overlay.mine": b"1"})})
    upper_like = Layer.from_dict({"new/": Dir(redirect="old")})
    with KernelOverlay([lower, upper_like], OverlayOptions(redirect_dir=True)) as k:
        assert k.fs.listdir("/new") == ["x"]
        assert k.fs.getxattr("/f", "trusted.overlay.mine") == b"1"
        k.fs.setxattr("/f", "trusted.overlay.other", b"2")
    assert k.upper is not None
    assert dict(k.upper["f"].xattrs) == {"trusted.overlay.mine": b"1", "trusted.overlay.other": b"2"}


class _BadOptions:
    """Options the kernel refuses, to exercise a failing mount."""

    def mount_options(self) -> list[str]:
        return ["no_such_option=1"]


def test_failed_mount_raises_and_cleans_up(tmp_path: object) -> None:
    bad = KernelOverlay([BASE], _BadOptions(), tmpdir=str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(OSError) as ei, bad:
        pass
    assert ei.value.errno == errno.EINVAL and "no_such_option" in str(ei.value)
    assert os.listdir(str(tmp_path)) == []
    assert str(tmp_path) not in proc_mounts()


def test_not_root_is_kernel_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(KernelUnavailable, match="root"), KernelOverlay([BASE]):
        pass


def test_caller_acts_with_dropped_credentials() -> None:
    """KernelOverlay(caller=...): ``fs`` is a worker that chrooted into the mount and then
    dropped to the caller's uid, gid and groups; ``root_fs`` stays root's; both go away
    with the mount, and what the caller wrote lands in the upper with its owner."""
    layer = Layer.from_dict({"p/": Dir(mode=0o700), "p/f": b"x", "g/": Dir(mode=0o770, gid=1000)})
    with KernelOverlay([layer], caller=(1001, 1001, (1000,))) as k:
        with pytest.raises(PermissionError) as e:
            k.fs.stat("/p/f")
        assert e.value.errno == errno.EACCES
        assert k.root_fs.read_bytes("/p/f") == b"x"
        k.fs.write_bytes("/g/mine", b"m")  # through the supplementary group 1000
        with pytest.raises(PermissionError):
            k.fs.as_user(1002, 1002).listdir("/g")
        assert k.root_fs.stat("/g/mine").st_uid == 1001
    assert k.upper is not None
    mine = k.upper["g/mine"]
    assert isinstance(mine, File) and (mine.uid, mine.gid, mine.data) == (1001, 1001, b"m")


def test_walk_lists_a_whiteout_that_hides_nothing_as_the_model_does() -> None:
    """A whiteout in a directory only one layer has is listed by readdir but cannot be looked
    up (Lower.strays): the walk lists it as a file in both, instead of dropping the directory."""
    import unionfs_sim as ufs

    stack = [Layer.from_dict({"d/": Dir(), "d/real": b"x", "d/gone": WHITEOUT}), Layer.from_dict({"other": b"o"})]
    model = ufs.Image.from_layers(stack).container().fs
    with KernelOverlay(stack) as k:
        kernel = sorted((top, sorted(dirs), sorted(files)) for top, dirs, files in k.fs.walk("/"))
        assert ("/d", [], ["gone", "real"]) in kernel
        assert kernel == sorted((top, sorted(dirs), sorted(files)) for top, dirs, files in model.walk("/"))
        with pytest.raises(FileNotFoundError):
            k.fs.lstat("/d/gone")
