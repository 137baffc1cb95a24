"""Issue 12, "lose nothing at the edges": what a new user meets first.

Item 1: ``unionfs-sim mount`` says where changes go and, when they are lost, says so
with the flag that keeps them; ``--upper DIR`` writes them through. Item 3: a missing
or stale mountpoint is explained (``--force`` clears a stale one). Item 4 is in
tests/test_fuse_compat.py (unknown ``-o`` options), item 2 in
tests/test_crash_writethrough.py. Item 5: loaders name the file and member; no
traceback from the CLI. The write-through facade itself is checked against
``overlaydir.read`` of what it wrote, and against the kernel's overlayfs.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

import unionfs_sim as ufs
from unionfs_sim.codec import overlaydir
from unionfs_sim.container import Container
from unionfs_sim.errors import FormatError
from unionfs_sim.fuse import fuse_unavailable
from unionfs_sim.fuse.writethrough import UpperDir, WriteThroughFS

REPO = str(Path(__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
CLI = [sys.executable, "-m", "unionfs_sim"]
FUSE = fuse_unavailable()
needs_fuse = pytest.mark.skipif(FUSE is not None, reason=f"FUSE unavailable: {FUSE}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (trusted.* xattrs, whiteouts, mounts)")


def base() -> ufs.Layer:
    return ufs.Layer.from_dict({
        "etc/": ufs.Dir(), "etc/hostname": b"box\n", "etc/motd": b"hi\n", "var/cache/x": b"x",
        "d/a": b"1", "d/sub/b": b"2", "bin/sh": ufs.Symlink("busybox"),
    })


def same(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Layer entries compare by identity: compare their reprs (content, metadata, flags)."""
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert repr(got[k]) == repr(v), k


# --- the write-through facade ---------------------------------------------------------------


@needs_root
def test_every_call_leaves_the_upperdir_equal_to_the_model(tmp_path: Path) -> None:
    image = ufs.Image.from_layers([base()])
    up, work = tmp_path / "u", tmp_path / "w"
    up.mkdir()
    work.mkdir()
    c = Container.from_upper(image, overlaydir.read(up, include_root=True), ufs.OverlayOptions(redirect_dir=True))
    fs = WriteThroughFS(c.overlay, UpperDir(c.overlay, str(up), str(work)))
    steps = [
        lambda: fs.write_bytes("/etc/hostname", b"web1\n"),
        lambda: fs.unlink("/etc/motd"),
        lambda: fs.makedirs("/srv/data"),
        lambda: fs.rename("/d", "/d2"),
        lambda: fs.link("/etc/hostname", "/srv/hn"),
        lambda: fs.chmod("/var/cache/x", 0o600),
        lambda: fs.rmdir("/srv/data"),
        lambda: fs.setxattr("/etc", "user.foo", b"bar"),
        lambda: fs.setxattr("/etc/hostname", "trusted.overlay.mine", b"escaped"),
        lambda: fs.mkdir("/d"),  # over the whiteout the rename left: opaque
        lambda: fs.rename("/srv/hn", "/etc/motd"),  # over a whiteout
        lambda: fs.symlink("x", "/bin/ash"),
        lambda: fs.truncate("/d2/a", 5),
        lambda: fs.rename("/bin/sh", "/bin/ash", exchange=True),
        lambda: fs.removexattr("/etc", "user.foo"),
        lambda: fs.utime("/etc", ns=(1, 2)),
        lambda: fs.rename("/d2/sub", "/d2/sub2"),  # a lower directory away (redirect) ...
        lambda: fs.rename("/d2/sub2", "/d2/sub"),  # ... and back over its own whiteout
        lambda: fs.rename("/etc/hostname", "/var/cache/h"),
        lambda: fs.rename("/var/cache", "/etc/cache"),  # a merged dir over a whiteout's place
        lambda: fs.write_bytes("/d2/sub/new", b"n"),  # names made in a directory: the model
        lambda: fs.write_bytes("/d2/sub/new2", b"n"),  # takes the times the disk got
    ]
    for i, step in enumerate(steps):
        step()
        got = overlaydir.read(up)
        assert os.listdir(work / "unionfs-sim") == [], f"step {i}: something left staged"
        same(got, c.overlay.upper_entries())
    # A copy-up through a directory leaves its times as they were (ovl_copy_up restores the
    # parent's times), though the disk directory changed under the staged rename.
    before = fs.stat("/d2/sub")
    fs.chmod("/d2/sub/b", 0o600)
    after = fs.stat("/d2/sub")
    assert (after.st_mtime_ns, after.st_atime_ns) == (before.st_mtime_ns, before.st_atime_ns)
    same(overlaydir.read(up), c.overlay.upper_entries())
    with fs.open("/big", "wb") as f:
        f.write(b"a" * 100_000)
        f.seek(50_000)
        f.write(b"b" * 10)
        f.truncate(70_000)
        assert (up / "big").read_bytes() == c.fs.read_bytes("/big")
    assert os.getxattr(up / "etc/cache/h", "trusted.overlay.overlay.mine") == b"escaped"  # hostname, moved
    assert os.getxattr(up / "d", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(up / "d2", "trusted.overlay.redirect") == b"/d"
    same(overlaydir.read(up), c.overlay.upper_entries())


@needs_root
def test_names_beyond_path_max_on_the_upperdir(tmp_path: Path) -> None:
    """A mount allows paths up to PATH_MAX below its root; the upperdir lies deeper, so the
    disk path of such a name is longer (pjdfstest's */03.t): it still lands on disk."""
    image = ufs.Image.from_layers([base()])
    up, work = tmp_path / "u", tmp_path / "w"
    up.mkdir()
    work.mkdir()
    c = Container.from_upper(image, overlaydir.read(up, include_root=True))
    fs = WriteThroughFS(c.overlay, UpperDir(c.overlay, str(up), str(work)))
    comps = [f"{i:02d}" + "x" * 200 for i in range(20)]  # 20 * 203 bytes: 4,060 in the mount
    d = ""
    for comp in comps:
        d += "/" + comp
        fs.mkdir(d)
    assert len(os.fsencode(f"{up}{d}")) > 4096
    fds = len(os.listdir("/proc/self/fd"))
    fs.write_bytes(f"{d}/f", b"deep")
    fs.chmod(f"{d}/f", 0o600)
    fs.rename(f"{d}/f", f"{d}/g")
    fs.symlink("g", f"{d}/l")
    fs.setxattr(f"{d}/g", "user.k", b"v")

    def on_disk(name: str) -> os.stat_result:
        fd = os.open(up, os.O_PATH)
        try:
            for comp in comps:
                nfd = os.open(comp, os.O_PATH | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nfd
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    st = on_disk("g")
    assert st.st_mode & 0o7777 == 0o600 and st.st_size == 4
    assert (st.st_mtime_ns, st.st_atime_ns) == (fs.stat(f"{d}/g").st_mtime_ns, fs.stat(f"{d}/g").st_atime_ns)
    with pytest.raises(FileNotFoundError):
        on_disk("f")
    fs.unlink(f"{d}/g")
    with pytest.raises(FileNotFoundError):
        on_disk("g")
    assert on_disk("l").st_size == 1
    assert len(os.listdir("/proc/self/fd")) == fds  # the directories walked to are closed again


# --- unionfs-sim mount ----------------------------------------------------------------------


def _start(args: list[str], mnt: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([*CLI, "mount", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 60
    while not os.path.ismount(mnt):
        if p.poll() is not None:
            raise AssertionError(f"unionfs-sim mount exited {p.returncode}: {p.communicate()[1]}")
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return p


def _stop(p: subprocess.Popen[str]) -> str:
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return err


@needs_fuse
def test_mount_says_changes_are_lost_and_how_to_keep_them(tmp_path: Path) -> None:
    ufs.oci.save(ufs.Image.from_layers([base()]), str(tmp_path / "layout"), tag="1")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = _start([str(tmp_path / "layout"), str(mnt)], mnt)
    try:
        (mnt / "etc/hostname").write_text("changed\n")
    finally:
        err = _stop(p)
    assert "LOST at unmount" in err and "--upper DIR" in err  # said at the start
    assert "DISCARDED" in err and "--upper DIR" in err.split("DISCARDED", 1)[1]  # and at the end
    # --upper DIR: the change is in DIR while mounted, and DIR is where the next mount starts.
    up = tmp_path / "upper"
    p = _start([str(tmp_path / "layout"), str(mnt), "--upper", str(up)], mnt)
    try:
        (mnt / "etc/hostname").write_text("kept\n")
        os.unlink(mnt / "etc/motd")
        assert (up / "etc/hostname").read_text() == "kept\n"
        assert overlaydir.read(up)["etc/motd"] is ufs.WHITEOUT
    finally:
        err = _stop(p)
    assert f"the upper dir {up}" in err and "LOST" not in err and "DISCARDED" not in err
    assert [n for n in os.listdir(tmp_path) if n.startswith(".upper.work")] == []  # its staging dir is gone
    p = _start([str(tmp_path / "layout"), str(mnt), "--upper", str(up)], mnt)
    try:
        assert (mnt / "etc/hostname").read_text() == "kept\n" and not (mnt / "etc/motd").exists()
    finally:
        _stop(p)


def test_mount_explains_a_missing_mountpoint_and_bad_input(tmp_path: Path) -> None:
    ufs.oci.save(ufs.Image.from_layers([base()]), str(tmp_path / "layout"), tag="1")
    r = subprocess.run([*CLI, "mount", str(tmp_path / "layout"), str(tmp_path / "nope")], capture_output=True,
                       text=True, env=ENV, timeout=60, check=False)
    assert r.returncode == 1 and "no such directory" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "mnt").mkdir()
    ufs.docker_archive.save(ufs.Image.from_layers([base()]), str(tmp_path / "img.tar"), tags=["x:1"])
    data = (tmp_path / "img.tar").read_bytes()
    (tmp_path / "trunc.tar").write_bytes(data[: len(data) // 2])
    r = subprocess.run([*CLI, "mount", str(tmp_path / "trunc.tar"), str(tmp_path / "mnt")], capture_output=True,
                       text=True, env=ENV, timeout=60, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "trunc.tar: truncated or corrupt archive after member" in r.stderr
    # Every command names the bad input once (the loaders' messages begin with it already).
    trunc = str(tmp_path / "trunc.tar")
    for args in (["mount", trunc, str(tmp_path / "mnt")], ["history", trunc], ["layers", f"docker-archive:{trunc}"],
                 ["layers", str(tmp_path / "gone.tar")]):
        r = subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=60, check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count(".tar") == 1, r.stderr
    assert "gone.tar: No such file or directory" in r.stderr


@needs_fuse
@needs_root
def test_stale_fuse_mount_is_explained_and_force_clears_it(tmp_path: Path) -> None:
    base().to_directory(tmp_path / "lower")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    server = subprocess.Popen([*CLI[:2], "unionfs_sim.cli.fuse_overlayfs", "-f", "x", str(mnt), "-o",
                               f"lowerdir={tmp_path / 'lower'}"], env=ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        server.kill()
        server.wait()
        r = subprocess.run([*CLI, "mount", str(tmp_path / "lower"), str(mnt)], capture_output=True, text=True,
                           env=ENV, timeout=60, check=False)
        assert r.returncode == 1 and "transport endpoint is not connected" in r.stderr
        assert f"fusermount3 -u {mnt}" in r.stderr and "--force" in r.stderr
        p = subprocess.Popen([*CLI, "mount", str(tmp_path / "lower"), str(mnt), "--force", "--read-only"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            deadline = time.monotonic() + 60
            while True:  # the stale mount answers ENOTCONN until the new one serves
                try:
                    assert (mnt / "etc/hostname").read_text() == "box\n"
                    break
                except OSError:
                    assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
                    time.sleep(0.05)
        finally:
            err = _stop(p)
        assert "cleared the stale FUSE mount" in err
    finally:
        if server.poll() is None:
            server.kill()
        while os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)


# --- loaders name the file and the member ----------------------------------------------------


def test_loaders_name_the_file(tmp_path: Path) -> None:
    image = ufs.Image.from_layers([base()])
    ufs.docker_archive.save(image, str(tmp_path / "img.tar"), tags=["x:1"])
    data = (tmp_path / "img.tar").read_bytes()
    (tmp_path / "trunc.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"trunc\.tar: truncated or corrupt archive after member '"):
        ufs.docker_archive.load(str(tmp_path / "trunc.tar"))
    with pytest.raises(NotADirectoryError, match="not an OCI image layout directory") as e:
        ufs.oci.load(str(tmp_path / "img.tar"))
    assert e.value.filename == str(tmp_path / "img.tar")
    with pytest.raises(FileNotFoundError) as f:
        ufs.oci.load(str(tmp_path / "nope"))
    assert f.value.filename == str(tmp_path / "nope")
    with open(tmp_path / "layer.tar", "wb") as out:
        image.layers[0].to_tar(out)
    assert ufs.Layer.from_tar(str(tmp_path / "layer.tar")).digest == image.layers[0].digest  # a path
    assert ufs.Layer.from_tar(tmp_path / "layer.tar").digest == image.layers[0].digest
    with pytest.raises(FormatError, match=r"trunc\.tar"):
        ufs.Layer.from_tar(tmp_path / "trunc.tar")


def _tar_of(*names: str) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in names:
            ti = tarfile.TarInfo(name)
            ti.size = 1
            t.addfile(ti, io.BytesIO(b"x"))
    buf.seek(0)
    return buf


def test_absolute_member_names_are_read_relative_to_the_root() -> None:
    """As containerd and Docker apply a layer (the name joined to the root), and as the README says;
    a name that climbs out with ``..`` is still refused, naming the entry."""
    assert ufs.Layer.from_tar(_tar_of("/etc/abs"))["etc/abs"].data == b"x"
    with pytest.raises(ufs.errors.UnsafePath, match="entry '/../../etc/escape'"):
        ufs.Layer.from_tar(_tar_of("/../../etc/escape"))
