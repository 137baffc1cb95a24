"""The FUSE mount: real ``os`` calls through a mounted container land in the model.

Every test runs on both servers (the /dev/fuse one and fusepy/libfuse2). Needs
/dev/fuse, and root (as CI runs) or fusermount3 for the first, libfuse2 for the second;
skips a server, saying why, only when the machine lacks what it needs. Every
mountpoint is a fresh ``tempfile.mkdtemp()`` (tests/conftest.py) and every mount is
unmounted, even when a test fails.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

import unionfs_sim as ufs
from unionfs_sim.mounting import MountError, fuse_unavailable, mount
from unionfs_sim.testing.compare import layer_shape

pytestmark = pytest.mark.fuse


REASON = fuse_unavailable()
if REASON is not None:
    print(f"test_fuse: skipping, {REASON}", file=sys.stderr)
    pytest.skip(f"FUSE unavailable: {REASON}", allow_module_level=True)

# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(autouse=True, params=["kernel", "libfuse"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both FUSE servers: fusedev (the /dev/fuse protocol) and fusepy/libfuse2."""
    from unionfs_sim import fuse, fusedev

    why = fusedev.kernel_backend_unavailable() if request.param == "kernel" else fuse.FUSEPY_MISSING
    if why is not None:
        print(f"test_fuse: {request.param} backend skipped: {why}", file=sys.stderr)
        pytest.skip(f"the {request.param} FUSE backend cannot run here: {why}")
    monkeypatch.setenv("UNIONFS_SIM_FUSE_BACKEND", request.param)
    return str(request.param)


def base_layer() -> ufs.Layer:
    return ufs.Layer.from_dict({
        "etc/": ufs.Dir(mode=0o755),
        "etc/hostname": b"base\n",
        "etc/motd": b"Welcome!\n",
        "etc/attrs": ufs.File(b"x", xattrs={"user.origin": b"lower"}),
        "bin/busybox": ufs.File(b"\x7fELF" + b"\0" * 100, mode=0o755),
        "bin/sh": ufs.Symlink("busybox"),
        "usr/share/a": b"linked\n",
        "usr/share/b": ufs.Hardlink("usr/share/a"),
        "var/cache/apt/pkgcache.bin": b"c" * 5000,
        "var/lib/": ufs.Dir(mode=0o700),
        "data/big": bytes(range(256)) * 4096,  # 1 MiB
    })


def top_layer() -> ufs.Layer:
    return ufs.Layer.from_dict({
        "etc/motd": ufs.WHITEOUT,
        "var/cache/": ufs.Dir(opaque=True),
        "app/server.py": b"print('hello')\n",
    })


@pytest.fixture
def image() -> ufs.Image:
    return ufs.Image.from_layers([base_layer(), top_layer()])


def eventually(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def errno_of(fn: Callable[[], Any]) -> int | None:
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


# --- reading ------------------------------------------------------------------------------


def test_merged_view_reads_as_the_model(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt) as m:
        assert m.alive and os.path.ismount(mnt)
        assert sorted(os.listdir(mnt)) == c.fs.listdir("/")
        assert os.listdir(f"{mnt}/etc") == c.fs.listdir("/etc") == ["attrs", "hostname"]  # motd whited out
        assert os.listdir(f"{mnt}/var/cache") == []  # opaque
        with open(f"{mnt}/etc/hostname", "rb") as f:
            assert f.read() == b"base\n"
        with open(f"{mnt}/data/big", "rb") as f:
            assert f.read() == c.fs.read_bytes("/data/big")
        for p in ("/", "/etc", "/etc/hostname", "/bin/busybox", "/bin/sh", "/usr/share/a", "/var/lib"):
            real, model = os.lstat(mnt + p), c.fs.lstat(p)
            assert (real.st_mode, real.st_uid, real.st_gid, real.st_ino, real.st_nlink) == \
                (model.st_mode, model.st_uid, model.st_gid, model.st_ino, model.st_nlink), p
            if not stat.S_ISDIR(real.st_mode):
                assert real.st_size == model.st_size
            assert real.st_mtime_ns == model.st_mtime_ns, p
        assert os.readlink(f"{mnt}/bin/sh") == "busybox"
        assert os.path.realpath(f"{mnt}/bin/sh") == f"{os.path.realpath(mnt)}/bin/busybox"
        assert os.stat(f"{mnt}/usr/share/a").st_ino == os.stat(f"{mnt}/usr/share/b").st_ino
        assert os.getxattr(f"{mnt}/etc/attrs", "user.origin") == b"lower"
        assert os.listxattr(f"{mnt}/etc/attrs") == ["user.origin"]
        with os.scandir(f"{mnt}/bin") as it:
            types = {e.name: (e.is_dir(follow_symlinks=False), e.is_symlink(), e.inode()) for e in it}
        assert types == {"busybox": (False, False, c.fs.lstat("/bin/busybox").st_ino),
                         "sh": (False, True, c.fs.lstat("/bin/sh").st_ino)}
        assert os.statvfs(mnt).f_namemax == 255
    assert not os.path.ismount(mnt) and os.listdir(mnt) == []
    assert len(c.upper) == 0  # reading copies nothing up


def test_non_utf8_names(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    name = os.fsdecode(b"caf\xe9-\xff")
    with mount(c, mnt):
        with open(os.path.join(mnt, name), "wb") as f:
            f.write(b"latin-1")
        assert name in os.listdir(mnt)
        assert os.listdir(os.fsencode(mnt)).count(b"caf\xe9-\xff") == 1
    assert c.fs.read_bytes("/" + name) == b"latin-1"


# --- writing ------------------------------------------------------------------------------


def test_copy_up_whiteouts_and_new_files(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt):
        with open(f"{mnt}/etc/hostname", "w") as f:  # copy-up of a lower file
            f.write("web1\n")
        os.unlink(f"{mnt}/bin/sh")  # whiteout
        os.rmdir(f"{mnt}/var/lib")  # whiteout of a directory
        os.makedirs(f"{mnt}/srv/data")
        with open(f"{mnt}/srv/data/notes.txt", "x") as f:
            f.write("new\n")
        with open(f"{mnt}/app/server.py", "a") as f:
            f.write("# appended\n")
        os.truncate(f"{mnt}/data/big", 10)
        os.chmod(f"{mnt}/bin/busybox", 0o700)
        assert sorted(os.listdir(f"{mnt}/bin")) == ["busybox"]
        with open(f"{mnt}/etc/hostname") as f:
            assert f.read() == "web1\n"
    up = c.upper
    assert (up["etc/hostname"].data, up["etc/hostname"].mode) == (b"web1\n", 0o644)
    assert up["bin/sh"] is ufs.WHITEOUT and up["var/lib"] is ufs.WHITEOUT
    assert up["srv/data/notes.txt"].data == b"new\n"
    assert up["app/server.py"].data == b"print('hello')\n# appended\n"
    assert up["data/big"].data == bytes(range(10))
    assert up["bin/busybox"].mode == 0o700
    assert image.fs.read_bytes("/etc/hostname") == b"base\n"  # the image is untouched


def test_new_files_get_the_callers_mode_and_owner(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt, allow_other=True):
        os.mkdir(f"{mnt}/tmp", 0o777)
        os.chmod(f"{mnt}/tmp", 0o1777)
        old = os.umask(0o027)
        try:
            fd = os.open(f"{mnt}/tmp/root-file", os.O_WRONLY | os.O_CREAT, 0o666)
            os.close(fd)
            os.mkdir(f"{mnt}/tmp/root-dir", 0o777)
        finally:
            os.umask(old)
        script = textwrap.dedent(f"""
            import os
            os.setgid(4321); os.setuid(1234); os.umask(0o022)
            with open({mnt + '/tmp/user-file'!r}, 'w') as f:
                f.write('mine')
            os.mkdir({mnt + '/tmp/user-dir'!r})
            os.symlink('user-file', {mnt + '/tmp/user-link'!r})
            try:
                open({mnt + '/etc/hostname'!r}, 'w')
            except PermissionError:
                print('EACCES')
        """)
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "EACCES"  # default_permissions: the kernel checks modes
    fs = c.fs
    assert stat.S_IMODE(fs.stat("/tmp/root-file").st_mode) == 0o640
    assert stat.S_IMODE(fs.stat("/tmp/root-dir").st_mode) == 0o750
    for p, mode in (("/tmp/user-file", 0o644), ("/tmp/user-dir", 0o755)):
        st = fs.stat(p)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, mode), p
    assert fs.lstat("/tmp/user-link").st_uid == 1234
    assert (fs.uid, fs.gid, fs.umask) == (0, 0, 0o022)  # the facade's own settings are back


def test_rename_files_and_directories(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt):
        os.rename(f"{mnt}/etc/hostname", f"{mnt}/etc/hostname.old")
        os.mkdir(f"{mnt}/new")
        os.rename(f"{mnt}/new", f"{mnt}/new2")  # a pure upper directory moves
        with pytest.raises(OSError) as e:
            os.rename(f"{mnt}/etc", f"{mnt}/etc2")  # lower content, no redirect_dir
        assert e.value.errno == errno.EXDEV
        os.replace(f"{mnt}/app/server.py", f"{mnt}/etc/attrs")  # over an existing lower file
    up = c.upper
    assert up["etc/hostname"] is ufs.WHITEOUT and up["etc/hostname.old"].data == b"base\n"
    assert "new" not in up and isinstance(up["new2"], ufs.Dir)
    assert up["app/server.py"] is ufs.WHITEOUT and up["etc/attrs"].data == b"print('hello')\n"


def test_rename_directory_with_redirect_dir(image: ufs.Image, mnt: str) -> None:
    c = image.container(ufs.OverlayOptions(redirect_dir=True))
    with mount(c, mnt):
        os.rename(f"{mnt}/etc", f"{mnt}/etc2")
        assert sorted(os.listdir(f"{mnt}/etc2")) == ["attrs", "hostname"]
        assert not os.path.exists(f"{mnt}/etc")
    assert c.upper["etc2"].redirect == "etc" and c.upper["etc"] is ufs.WHITEOUT


def test_paths_longer_than_path_max_from_the_mount_root(image: ufs.Image, mnt: str) -> None:
    """PATH_MAX limits what a process passes, not the path from the mount's root."""
    c = image.container()
    part = "d" * 250
    with mount(c, mnt):
        cwd = os.getcwd()
        os.chdir(mnt)
        try:
            rel = "/".join([part] * 16)  # 16 * 251 - 1 = 4015 bytes, passed relative
            os.makedirs(rel)
            name = "f" * (4095 - len(rel) - 1)
            path = f"{rel}/{name}"  # 4095 bytes: the longest a process can pass
            with open(path, "wb") as f:
                f.write(b"x")
            assert os.stat(path).st_size == 1
            with pytest.raises(OSError) as e:
                os.stat(path + "g")  # 4096 bytes: the kernel refuses it itself
            assert e.value.errno == errno.ENAMETOOLONG
            os.chdir(rel)
            os.rename(name, "short")
            assert os.path.exists("short")
        finally:
            os.chdir(cwd)
    assert c.upper["/".join([part] * 16 + ["short"])].data == b"x"
    with pytest.raises(OSError) as e2:
        c.fs.stat("/" + path)  # the facade keeps PATH_MAX for its own callers
    assert e2.value.errno == errno.ENAMETOOLONG


def test_symlinks_and_special_files(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt):
        os.symlink("../etc/hostname", f"{mnt}/bin/hn")
        with open(f"{mnt}/bin/hn") as f:  # the kernel follows it inside the mount
            assert f.read() == "base\n"
        os.symlink("dangling", f"{mnt}/bin/dl")
        assert not os.path.exists(f"{mnt}/bin/dl") and os.path.lexists(f"{mnt}/bin/dl")
        os.mkfifo(f"{mnt}/fifo", 0o600)
        os.mknod(f"{mnt}/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        assert stat.S_ISFIFO(os.lstat(f"{mnt}/fifo").st_mode)
        assert os.lstat(f"{mnt}/null").st_rdev == os.makedev(1, 3)
        with pytest.raises(OSError) as e:
            os.readlink(f"{mnt}/etc/hostname")
        assert e.value.errno == errno.EINVAL
    up = c.upper
    assert isinstance(up["bin/hn"], ufs.Symlink) and up["bin/hn"].target == "../etc/hostname"
    assert isinstance(up["fifo"], ufs.Fifo) and up["fifo"].mode == 0o600
    assert isinstance(up["null"], ufs.Device) and (up["null"].major, up["null"].minor) == (1, 3)


def test_xattrs(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt):
        p = f"{mnt}/etc/attrs"
        os.setxattr(p, "user.new", b"v1")
        assert sorted(os.listxattr(p)) == ["user.new", "user.origin"]
        os.setxattr(p, "user.new", b"v2", os.XATTR_REPLACE)
        with pytest.raises(OSError) as e:
            os.setxattr(p, "user.new", b"v3", os.XATTR_CREATE)
        assert e.value.errno == errno.EEXIST
        os.removexattr(p, "user.origin")
        with pytest.raises(OSError) as e:
            os.getxattr(p, "user.origin")
        assert e.value.errno == errno.ENODATA
        os.setxattr(f"{mnt}/etc", "trusted.t", b"dir")
        big = b"v" * 60000
        os.setxattr(f"{mnt}/etc/hostname", "user.big", big)
        assert os.getxattr(f"{mnt}/etc/hostname", "user.big") == big
    up = c.upper
    assert dict(up["etc/attrs"].xattrs) == {"user.new": b"v2"}
    assert dict(up["etc"].xattrs) == {"trusted.t": b"dir"}
    assert up["etc/hostname"].data == b"base\n"


def test_hard_links_share_data_and_attributes(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt):
        with open(f"{mnt}/f", "w") as f:
            f.write("one")
        os.link(f"{mnt}/f", f"{mnt}/g")
        a, b = os.stat(f"{mnt}/f"), os.stat(f"{mnt}/g")
        assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2
        with open(f"{mnt}/g", "a") as f:
            f.write("+two")
        # The other name shows the new size and content at once (attr_timeout=0, auto_cache).
        assert os.stat(f"{mnt}/f").st_size == 7
        with open(f"{mnt}/f") as f:
            assert f.read() == "one+two"
        os.chmod(f"{mnt}/g", 0o600)
        assert stat.S_IMODE(os.stat(f"{mnt}/f").st_mode) == 0o600
        os.unlink(f"{mnt}/f")
        assert os.stat(f"{mnt}/g").st_nlink == 1
        os.link(f"{mnt}/usr/share/a", f"{mnt}/usr/share/c")  # a lower file: copied up first
        with pytest.raises(OSError) as e:
            os.link(f"{mnt}/etc", f"{mnt}/etc-link")
        assert e.value.errno == errno.EPERM
    up = c.upper
    assert "f" not in up and up["g"].data == b"one+two"
    assert up["usr/share/a"] is up["usr/share/c"]


def test_open_files_keep_their_data(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt) as m:
        fd = os.open(f"{mnt}/tmpfile", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"hello")
            os.unlink(f"{mnt}/tmpfile")
            assert not os.path.exists(f"{mnt}/tmpfile")
            os.write(fd, b" world")
            os.lseek(fd, 0, os.SEEK_SET)
            assert os.read(fd, 100) == b"hello world"
            assert ".fuse_hidden" not in "".join(os.listdir(mnt))  # libfuse's hidden name: not in the model
            st = os.fstat(fd)
            assert (st.st_nlink, st.st_size) == (0, 11)
            os.ftruncate(fd, 4)
            assert os.fstat(fd).st_size == 4
            assert os.pread(fd, 100, 0) == b"hell"
        finally:
            os.close(fd)
        # RELEASE follows close() asynchronously: then libfuse drops the hidden name.
        assert eventually(lambda: m.operations.open_handles == 0)
        fd = os.open(f"{mnt}/etc/hostname", os.O_RDONLY)
        try:
            with open(f"{mnt}/etc/hostname", "w") as f:  # copied up through another descriptor
                f.write("changed\n")
            assert os.pread(fd, 100, 0) == b"changed\n"
        finally:
            os.close(fd)
        fd = os.open(f"{mnt}/appendme", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, b"a")
            os.pwrite(fd, b"b", 0)  # O_APPEND: Linux appends whatever the offset
            os.write(fd, b"c")
        finally:
            os.close(fd)
    assert "tmpfile" not in c.upper
    assert c.fs.read_bytes("/appendme") == b"abc"


def test_times_and_truncate_on_open(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt):
        os.utime(f"{mnt}/etc/hostname", ns=(1_000_000_001, 2_000_000_002))
        st = os.stat(f"{mnt}/etc/hostname")
        assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
        os.utime(f"{mnt}/bin/sh", ns=(5, 6_000_000_000), follow_symlinks=False)  # the link itself
        assert os.lstat(f"{mnt}/bin/sh").st_mtime_ns == 6_000_000_000
        subprocess.run(["touch", "-a", "-d", "@3", f"{mnt}/etc/hostname"], check=True)  # UTIME_OMIT for mtime
        st = os.stat(f"{mnt}/etc/hostname")
        assert (st.st_atime_ns, st.st_mtime_ns) == (3_000_000_000, 2_000_000_002)
        fd = os.open(f"{mnt}/data/big", os.O_WRONLY | os.O_TRUNC)
        os.close(fd)
        assert os.stat(f"{mnt}/data/big").st_size == 0
    assert c.upper["etc/hostname"].mtime_ns == 2_000_000_002
    assert c.upper["bin/sh"].mtime_ns == 6_000_000_000
    assert c.upper["data/big"].data == b""


def test_large_files_and_mmap(image: ufs.Image, mnt: str) -> None:
    import mmap

    c = image.container()
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with mount(c, mnt):
        with open(f"{mnt}/blob", "wb") as f:
            f.write(payload)
        with open(f"{mnt}/blob", "rb") as f:
            assert f.read() == payload
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                assert mm[-17:] == payload[-17:]
        with open(f"{mnt}/blob", "r+b") as f:
            f.seek(5 * 1024 * 1024)
            f.write(b"end")  # a hole in between
    data = c.fs.read_bytes("/blob")
    assert data[: len(payload)] == payload and data[-3:] == b"end" and len(data) == 5 * 1024 * 1024 + 3
    assert set(data[len(payload) : -3]) == {0}


# --- errors -------------------------------------------------------------------------------

FAILING: list[tuple[str, Callable[[Any, str], Any]]] = [
    ("open missing", lambda o, r: o.open_(r + "/nope", os.O_RDONLY)),
    ("open below a file", lambda o, r: o.open_(r + "/etc/hostname/x", os.O_RDONLY)),
    ("open whited-out", lambda o, r: o.open_(r + "/etc/motd", os.O_RDONLY)),
    ("create exclusive existing", lambda o, r: o.open_(r + "/etc/hostname", os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
    ("open dir for writing", lambda o, r: o.open_(r + "/etc", os.O_WRONLY)),
    ("O_DIRECTORY on a file", lambda o, r: o.open_(r + "/etc/hostname", os.O_RDONLY | os.O_DIRECTORY)),
    ("O_NOFOLLOW on a symlink", lambda o, r: o.open_(r + "/bin/sh", os.O_RDONLY | os.O_NOFOLLOW)),
    ("create with trailing slash", lambda o, r: o.open_(r + "/newfile/", os.O_WRONLY | os.O_CREAT)),
    ("mkdir existing", lambda o, r: o.mkdir(r + "/etc")),
    ("mkdir below missing", lambda o, r: o.mkdir(r + "/no/such")),
    ("rmdir non-empty", lambda o, r: o.rmdir(r + "/etc")),
    ("rmdir a file", lambda o, r: o.rmdir(r + "/etc/hostname")),
    ("rmdir missing", lambda o, r: o.rmdir(r + "/etc/motd")),
    ("unlink a directory", lambda o, r: o.unlink(r + "/etc")),
    ("unlink missing", lambda o, r: o.unlink(r + "/etc/motd")),
    ("rename lower dir", lambda o, r: o.rename(r + "/usr", r + "/usr2")),
    ("rename dir over file", lambda o, r: o.rename(r + "/app", r + "/etc/hostname")),
    ("rename file over dir", lambda o, r: o.rename(r + "/etc/hostname", r + "/var")),
    ("rename into itself", lambda o, r: o.rename(r + "/app", r + "/app/sub")),
    ("rename over non-empty", lambda o, r: o.rename(r + "/app", r + "/etc")),
    ("link a directory", lambda o, r: o.link(r + "/etc", r + "/etc2")),
    ("link onto existing", lambda o, r: o.link(r + "/etc/hostname", r + "/bin/busybox")),
    ("symlink onto existing", lambda o, r: o.symlink("x", r + "/etc/hostname")),
    ("readlink of a file", lambda o, r: o.readlink(r + "/etc/hostname")),
    ("getxattr missing", lambda o, r: o.getxattr(r + "/etc/hostname", "user.nope")),
    ("removexattr missing", lambda o, r: o.removexattr(r + "/etc/hostname", "user.nope")),
    ("setxattr user. on symlink", lambda o, r: o.setxattr(r + "/bin/sh", "user.x", b"1", follow_symlinks=False)),
    ("truncate a directory", lambda o, r: o.truncate(r + "/etc", 0)),
    ("long name", lambda o, r: o.mkdir(r + "/" + "n" * 256)),
    ("symlink loop", lambda o, r: (o.symlink("loop", r + "/loop"), o.stat(r + "/loop"))),
    ("listdir of a file", lambda o, r: o.listdir(r + "/etc/hostname")),
    ("chdir-like stat below symlinked file", lambda o, r: o.stat(r + "/bin/sh/x")),
]


class _Os:
    """``os`` with the model's spelling for open."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def open_(path: str, flags: int) -> None:
        os.close(os.open(path, flags, 0o644))


class _Model:
    def __init__(self, fs: ufs.FileSystem) -> None:
        self.fs = fs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)

    def open_(self, path: str, flags: int) -> None:
        self.fs.os_open(path, flags, 0o644).close()


@pytest.mark.parametrize("name,call", FAILING, ids=[n for n, _ in FAILING])
def test_errno_matches_the_model(image: ufs.Image, mnt: str, name: str, call: Callable[[Any, str], Any]) -> None:
    twin = image.container()
    expected = errno_of(lambda: call(_Model(twin.fs), ""))
    assert expected is not None, f"{name}: the model does not fail"
    c = image.container()
    with mount(c, mnt) as m:
        got = errno_of(lambda: call(_Os(), mnt))
    assert got == expected, f"{name}: mount gave {errno.errorcode.get(got or 0)}, model {errno.errorcode[expected]}"
    assert not m.operations.unexpected
    assert layer_shape(c.upper) == layer_shape(twin.upper)


def test_read_only_image_mount(image: ufs.Image, mnt: str) -> None:
    with mount(image, mnt) as m:
        assert "ro" in m.options and "kernel_cache" in m.options
        with open(f"{mnt}/etc/hostname", "rb") as f:
            assert f.read() == b"base\n"
        attempts: list[Callable[[], Any]] = [
            lambda: open(f"{mnt}/etc/hostname", "w"),
            lambda: open(f"{mnt}/newfile", "w"),
            lambda: os.mkdir(f"{mnt}/d"),
            lambda: os.unlink(f"{mnt}/etc/hostname"),
            lambda: os.rename(f"{mnt}/etc/hostname", f"{mnt}/etc/h2"),
            lambda: os.chmod(f"{mnt}/etc/hostname", 0o600),
            lambda: os.setxattr(f"{mnt}/etc/hostname", "user.x", b"1"),
            lambda: os.symlink("x", f"{mnt}/l"),
            lambda: os.truncate(f"{mnt}/etc/hostname", 0),
            lambda: os.utime(f"{mnt}/etc/hostname"),
        ]
        for fn in attempts:
            assert errno_of(fn) == errno.EROFS
        assert errno_of(lambda: os.mkdir(f"{mnt}/etc")) == errno.EEXIST  # as the kernel orders them
    with pytest.raises(ValueError), mount(image, mnt, readonly=False):
        pass


def test_read_only_container_mount(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt, readonly=True) as m:
        assert "ro" in m.options and "kernel_cache" not in m.options
        assert errno_of(lambda: open(f"{mnt}/etc/hostname", "w")) == errno.EROFS
        c.fs.write_bytes("/etc/hostname", b"from python\n")  # the model itself still writes
        with open(f"{mnt}/etc/hostname", "rb") as f:
            assert f.read() == b"from python\n"


# --- the mount's life -----------------------------------------------------------------------


def test_changes_from_python_while_mounted(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt):
        with open(f"{mnt}/etc/hostname") as f:
            assert f.read() == "base\n"
        c.fs.write_bytes("/etc/hostname", b"changed from python\n")
        with open(f"{mnt}/etc/hostname") as f:  # auto_cache: new mtime/size, page cache dropped
            assert f.read() == "changed from python\n"
        assert not os.path.exists(f"{mnt}/late")
        c.fs.write_bytes("/late", b"x")
        deadline = time.monotonic() + 3  # negative_timeout=1
        while not os.path.exists(f"{mnt}/late"):
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_unmounted_from_outside(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt) as m:
        with open(f"{mnt}/kept", "w") as f:
            f.write("kept")
        subprocess.run(["umount", mnt], check=True, timeout=30)
        assert m.wait(10) and not m.alive
    assert not os.path.ismount(mnt)
    assert c.upper["kept"].data == b"kept"


def test_busy_mount_is_still_unmounted(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    f = None
    with mount(c, mnt) as m:
        f = open(f"{mnt}/etc/hostname", "rb")  # keeps the mount busy
    try:
        assert not m.alive and not os.path.ismount(mnt)
        with pytest.raises(OSError):
            f.read()  # the connection was aborted
    finally:
        with contextlib.suppress(OSError):
            f.close()


def test_mount_errors_are_clear(image: ufs.Image, mnt: str) -> None:
    with open(os.path.join(mnt, "occupied"), "w"):
        pass
    try:
        with pytest.raises(MountError, match="not empty"), mount(image.container(), mnt):
            pass
        with pytest.raises(MountError, match="unknown option"):
            with mount(image.container(), mnt, nonempty=True, no_such_option=True):
                pass
    finally:
        os.unlink(os.path.join(mnt, "occupied"))
    assert not os.path.ismount(mnt)


def test_single_threaded_loop(image: ufs.Image, mnt: str) -> None:
    c = image.container()
    with mount(c, mnt, threads=False):
        with open(f"{mnt}/x", "w") as f:
            f.write("x")
        assert os.listdir(f"{mnt}/etc") == ["attrs", "hostname"]
    assert c.fs.read_bytes("/x") == b"x"


# --- concurrency ----------------------------------------------------------------------------

WORKER = textwrap.dedent(r'''
    import json, os, random, sys

    def work(root, wid, steps, seed):
        """Random operations in this worker's own names; returns what it left: {path: content}."""
        rnd = random.Random(seed)
        mine = f"{root}/w{wid}"
        os.mkdir(mine)
        shared = f"{root}/shared"
        left = {f"w{wid}": "dir"}  # relative path -> bytes (file), "dir", or ["link", target]
        lower = [f"shared/low_{wid}_{k}" for k in range(3)]
        for k in lower:
            left[k] = f"lower {k}\n".encode()
        counter = 0
        for _ in range(steps):
            op = rnd.choice(["create", "create", "append", "rename", "unlink", "mkdir", "rmdir", "symlink",
                             "overwrite_lower", "shared_create", "shared_rename", "link"])
            counter += 1
            files = [p for p, v in left.items() if isinstance(v, bytes)]
            dirs = [p for p, v in left.items() if v == "dir"]
            if op == "create":
                base = rnd.choice(dirs)
                p = f"{base}/f{counter}"
                data = os.urandom(rnd.randrange(0, 70000))
                with open(f"{root}/{p}", "wb") as f:
                    f.write(data)
                left[p] = data
            elif op == "shared_create":
                p = f"shared/s_{wid}_{counter}"
                with open(f"{root}/{p}", "wb") as f:
                    f.write(p.encode())
                left[p] = p.encode()
            elif op == "append" and files:
                p = rnd.choice(files)
                with open(f"{root}/{p}", "ab") as f:
                    f.write(b"+more")
                left[p] = left[p] + b"+more"
            elif op == "overwrite_lower":
                p = rnd.choice(lower)
                if p in left:
                    with open(f"{root}/{p}", "r+b") as f:
                        f.write(b"L")
                    left[p] = b"L" + left[p][1:]
            elif op == "rename" and files:
                src = rnd.choice(files)
                dst = f"w{wid}/r{counter}"
                os.rename(f"{root}/{src}", f"{root}/{dst}")
                left[dst] = left.pop(src)
            elif op == "shared_rename" and files:
                src = rnd.choice(files)
                dst = f"shared/s_{wid}_{counter}"
                os.rename(f"{root}/{src}", f"{root}/{dst}")
                left[dst] = left.pop(src)
            elif op == "unlink" and files:
                p = rnd.choice(files)
                os.unlink(f"{root}/{p}")
                del left[p]
            elif op == "link" and files:
                src = rnd.choice(files)
                dst = f"w{wid}/h{counter}"
                try:
                    os.link(f"{root}/{src}", f"{root}/{dst}")
                except FileNotFoundError:
                    # A race in the kernel's FUSE client, not in the server: when a reply
                    # carrying the file's attributes, made after the server removed one of
                    # its names, is applied before that unlink's own reply, the kernel counts
                    # the unlink twice and holds st_nlink 0 for a file that still has a name,
                    # so link(2) says ENOENT without asking. fuse-overlayfs does the same under
                    # this workload; a stat refreshes the count.
                    os.stat(f"{root}/{src}")
                    os.link(f"{root}/{src}", f"{root}/{dst}")
                # a later append through one name shows through the other: keep it simple, do not
                # track sharing; drop the new name again so expectations stay exact
                assert os.stat(f"{root}/{dst}").st_ino == os.stat(f"{root}/{src}").st_ino
                os.unlink(f"{root}/{dst}")
            elif op == "mkdir":
                p = f"w{wid}/d{counter}"
                os.mkdir(f"{root}/{p}")
                left[p] = "dir"
            elif op == "rmdir":
                empty = [d for d in dirs if d != f"w{wid}" and not any(q.startswith(d + "/") for q in left)]
                if empty:
                    p = rnd.choice(empty)
                    os.rmdir(f"{root}/{p}")
                    del left[p]
            elif op == "symlink":
                p = f"w{wid}/l{counter}"
                os.symlink(f"target{counter}", f"{root}/{p}")
                left[p] = ["link", f"target{counter}"]
            if counter % 25 == 0:
                os.listdir(shared)
                os.stat(mine)
        return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in left.items()}

    if __name__ == "__main__":
        root, wid, steps, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(work(root, wid, steps, seed)))
''')


def _expected_view(fs: ufs.FileSystem, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in names:
        p = "/" + k
        st = fs.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            out[k] = "dir"
        elif stat.S_ISLNK(st.st_mode):
            out[k] = ["link", fs.readlink(p)]
        else:
            out[k] = fs.read_bytes(p).hex()
    return out


def test_stress_threads_and_processes(mnt: str, tmp_path: Any) -> None:
    threads_n, procs_n, steps = 4, 4, 300
    workers = [f"t{i}" for i in range(threads_n)] + [f"p{i}" for i in range(procs_n)]
    lower = {f"shared/low_{w}_{k}": f"lower shared/low_{w}_{k}\n".encode() for w in workers for k in range(3)}
    image = ufs.Image.from_layers([ufs.Layer.from_dict({"shared/": ufs.Dir(mode=0o755), **lower})])
    c = image.container()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    namespace: dict[str, Any] = {}
    exec(compile(WORKER, str(script), "exec"), namespace)
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []

    def run_thread(wid: str, seed: int) -> None:
        try:
            results[wid] = namespace["work"](mnt, wid, steps, seed)
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(f"{wid}: {e!r}\n{traceback.format_exc()}")

    def reader(stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(f"{mnt}/shared"):
                    with contextlib.suppress(FileNotFoundError):
                        os.lstat(f"{mnt}/shared/{name}")

    with mount(c, mnt) as m:
        stop = threading.Event()
        rd = threading.Thread(target=reader, args=(stop,), daemon=True)
        rd.start()
        procs = [subprocess.Popen([sys.executable, str(script), mnt, w, str(steps), str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i, w in enumerate(workers[threads_n:], start=100)]
        ths = [threading.Thread(target=run_thread, args=(w, i), daemon=True) for i, w in enumerate(workers[:threads_n])]
        for t in ths:
            t.start()
        deadline = time.monotonic() + 240
        for t in ths:
            t.join(max(0.1, deadline - time.monotonic()))
        for w, p in zip(workers[threads_n:], procs, strict=True):
            try:
                out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                failures.append(f"{w}: timed out (the mount hung?)")
                continue
            if p.returncode != 0:
                failures.append(f"{w}: exit {p.returncode}: {err[-2000:]}")
            else:
                results[w] = json.loads(out)
        stop.set()
        rd.join(10)
        hung = [t.name for t in ths if t.is_alive()] + (["reader"] if rd.is_alive() else [])
        assert not hung, f"threads did not finish (the mount hung?): {hung}"
        assert not m.operations.unexpected, m.operations.unexpected
        assert eventually(lambda: m.operations.open_handles == 0)
    assert not failures, failures
    assert sorted(results) == sorted(workers)
    # The model (after unmount) holds exactly what each worker says it left.
    fs = c.fs
    everything: dict[str, Any] = {}
    for w in workers:
        everything.update(results[w])
    actual_names = []
    for dirpath, dirs, files in fs.walk("/"):
        for n in dirs + files:
            actual_names.append((dirpath.rstrip("/") + "/" + n)[1:])
    actual_names = [k for k in actual_names if k != "shared"]
    assert sorted(actual_names) == sorted(everything)
    assert _expected_view(fs, actual_names) == everything
    # The upper layer: every name a worker left that the image lacks or that was written,
    # a whiteout for every lower file that went away, and nothing else.
    up = c.upper
    for k in lower:
        if k not in everything:
            assert up.get(k) is ufs.WHITEOUT, k
        elif everything[k] == lower[k].hex():
            assert k not in up or up[k].data == lower[k], k  # untouched, or copied up unchanged
    for k, e in up.items():
        if e is ufs.WHITEOUT:
            assert k in lower and k not in everything, k
        else:
            assert k in everything or k == "shared", k
    assert {k for k in everything if k not in lower} <= set(up)


# --- the command line ----------------------------------------------------------------------

CLI = [sys.executable, "-c", ("import sys, unionfs_sim.cli_mount; from unionfs_sim.cli import main;"
                              " sys.argv[0] = 'unionfs-sim'; main()")]


def _wait_mounted(p: subprocess.Popen[str], mnt: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.ismount(mnt):
        if p.poll() is not None:
            raise AssertionError(f"unionfs-sim mount exited {p.returncode}: {p.communicate()[1]}")
        assert time.monotonic() < deadline, "the mount did not come up"
        time.sleep(0.02)


def test_cli_mount_saves_the_changes(image: ufs.Image, mnt: str, tmp_path: Any) -> None:
    import signal

    ufs.oci.save(image, str(tmp_path / "layout"), tag="1.0")
    cmd = [*CLI, "mount", str(tmp_path / "layout"), mnt, "--tag", "1.0", "--redirect-dir",
           "--save-upper", str(tmp_path / "upper"), "--save-layer", str(tmp_path / "changes.tar.gz"),
           "--commit-to", f"{tmp_path / 'out'}:2.0", "--comment", "through the mount"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_mounted(p, mnt)
        with open(f"{mnt}/etc/hostname", "w") as f:
            f.write("cli\n")
        os.unlink(f"{mnt}/bin/sh")
        os.rename(f"{mnt}/usr", f"{mnt}/usr2")  # --redirect-dir
        p.send_signal(signal.SIGINT)
        _out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert not os.path.ismount(mnt)
    upper = ufs.Layer.from_directory(tmp_path / "upper", format="overlay")
    assert upper["bin/sh"] is ufs.WHITEOUT and upper["usr2"].redirect == "usr"
    with open(tmp_path / "changes.tar.gz", "rb") as f:
        changes = ufs.Layer.from_tar(f)
    assert changes["etc/hostname"].data == b"cli\n" and changes["usr"] is ufs.WHITEOUT
    new = ufs.oci.load(str(tmp_path / "out"), tag="2.0")
    assert new.fs.read_bytes("/etc/hostname") == b"cli\n" and not new.fs.lexists("/bin/sh")
    assert new.fs.read_bytes("/usr2/share/a") == b"linked\n"
    assert new.history[-1].comment == "through the mount"


def test_cli_mount_plain_directory_ends_on_umount(mnt: str, tmp_path: Any) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "file").write_bytes(b"plain")
    p = subprocess.Popen([*CLI, "mount", str(src), mnt, "--read-only"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        _wait_mounted(p, mnt)
        with open(f"{mnt}/sub/file", "rb") as f:
            assert f.read() == b"plain"
        assert errno_of(lambda: open(f"{mnt}/new", "w")) == errno.EROFS
        subprocess.run(["umount", mnt], check=True, timeout=30)
        _out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert "unmounted" in err
    r = subprocess.run([*CLI, "mount", str(src), mnt, "--read-only", "--save-upper", str(tmp_path / "u")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--read-only" in r.stderr
