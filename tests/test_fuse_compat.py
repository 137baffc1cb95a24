"""``unionfs-sim-fuse``, the fuse-overlayfs drop-in: real directories in, real upperdir out.

Layers are written with ``layer.to_directory``; the program mounts them with
``-o lowerdir=...,upperdir=...,workdir=...``; operations go through the mount; after
unmounting, the upperdir on disk is read back with ``Layer.from_directory`` and the
same directories are mounted by the kernel's overlayfs, which must show the same
merged view. Needs /dev/fuse and libfuse2 (skips, saying why, without them) and root.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import unionfs_sim as ufs
from unionfs_sim.cli.fuse_overlayfs import LOCK_NAME, Config, UsageError, lower_dirs, parse_options
from unionfs_sim.mounting import fuse_unavailable
from unionfs_sim.testing.compare import OsView, snapshot

pytestmark = pytest.mark.fuse


REASON = fuse_unavailable()
needs_fuse = pytest.mark.skipif(REASON is not None, reason=f"FUSE unavailable: {REASON}")
if REASON is not None:
    print(f"test_fuse_compat: skipping the mounting tests, {REASON}", file=sys.stderr)

REPO = str(Path(__file__).resolve().parent.parent)
PROGRAM = [sys.executable, "-m", "unionfs_sim.cli.fuse_overlayfs"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def l0() -> ufs.Layer:
    return ufs.Layer.from_dict({
        "etc/": ufs.Dir(mode=0o755),
        "etc/hostname": b"base\n",
        "etc/motd": b"Welcome!\n",
        "etc/attrs": ufs.File(b"x", xattrs={"user.origin": b"lower"}),
        "bin/busybox": ufs.File(b"\x7fELF", mode=0o755),
        "bin/sh": ufs.Symlink("busybox"),
        "usr/share/a": b"linked\n",
        "usr/share/b": ufs.Hardlink("usr/share/a"),
        "var/cache/old": b"old",
        "var/lib/": ufs.Dir(mode=0o700),
        "var/lib/state": b"s",
        "opt/tool/bin/run": ufs.File(b"#!/bin/sh\n", mode=0o755),
    })


def l1() -> ufs.Layer:
    return ufs.Layer.from_dict({
        "etc/motd": ufs.WHITEOUT,
        "var/cache/": ufs.Dir(opaque=True),
        "var/cache/new": b"new",
        "app/server.py": b"print('hello')\n",
    })


class Dirs:
    """lower0, lower1, upper, work and mnt under one temporary directory."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.lowers = [base / "l1", base / "l0"]  # top first, as lowerdir= lists them
        l0().to_directory(base / "l0")
        l1().to_directory(base / "l1")
        self.upper, self.work, self.mnt = base / "upper", base / "work", base / "mnt"
        for p in (self.upper, self.work, self.mnt):
            p.mkdir()

    def options(self, *more: str, upper: bool = True) -> str:
        o = [f"lowerdir={':'.join(str(p) for p in self.lowers)}"]
        if upper:
            o += [f"upperdir={self.upper}", f"workdir={self.work}"]
        return ",".join(o + list(more))


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[Dirs]:
    d = Dirs(tmp_path)
    try:
        yield d
    finally:
        for _ in range(3):
            if not os.path.ismount(d.mnt):
                break
            subprocess.run(["umount", "-l", str(d.mnt)], capture_output=True, check=False)
            time.sleep(0.1)
        wait_for_daemon(d.work)


def wait_for_daemon(work: Path, timeout: float = 30.0) -> None:
    """Wait until the daemon let go of the workdir lock (upper written, process gone)."""
    path = work / LOCK_NAME
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the unionfs-sim-fuse daemon did not finish"
                time.sleep(0.02)
    finally:
        os.close(fd)


def process_ends(pid: int, timeout: float = 30.0) -> bool:
    """True once ``pid`` is gone (or a zombie), within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROGRAM, *args], capture_output=True, text=True, timeout=timeout, env=ENV, check=False)


def view(mnt: Path) -> dict[str, Any]:
    """The merged view under ``mnt`` as comparable data (keys relative to the mount)."""
    snap = snapshot(OsView(), str(mnt))
    n = len(str(mnt))
    return {("/" + k[n:].lstrip("/")): v for k, v in snap.items()}


@contextlib.contextmanager
def kernel_mount(d: Dirs, *more: str) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("the kernel overlay check needs root")
    opts = d.options(*more)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(d.mnt)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(d.mnt)], check=True)


def unmount_and_wait(d: Dirs) -> None:
    subprocess.run(["umount", str(d.mnt)], check=True, timeout=30)
    wait_for_daemon(d.work)
    assert not os.path.ismount(d.mnt)


def change_things(m: Path) -> None:
    (m / "etc/hostname").write_text("web1\n")  # copy-up
    os.unlink(m / "bin/sh")  # whiteout
    shutil.rmtree(m / "var/lib")  # whiteouts of a directory tree
    os.makedirs(m / "srv/data")
    (m / "srv/data/notes.txt").write_text("notes\n")
    os.rename(m / "app/server.py", m / "app/main.py")
    os.symlink("../etc/hostname", m / "srv/hn")
    os.link(m / "usr/share/a", m / "usr/share/c")
    os.setxattr(m / "etc/attrs", "user.added", b"yes")
    os.chmod(m / "bin/busybox", 0o700)
    os.mkfifo(m / "srv/fifo")
    os.unlink(m / "var/cache/new")
    os.mkdir(m / "var/cache/again")


# --- option parsing (no mount) ---------------------------------------------------------


def test_option_parsing(tmp_path: Path) -> None:
    assert parse_options(["lowerdir=a\\:b:c,upperdir=u", "ro", "fsname=x\\,y"]) == \
        {"lowerdir": "a\\:b:c", "upperdir": "u", "ro": True, "fsname": "x,y"}
    assert lower_dirs("a\\:b:c") == ["a:b", "c"]
    (tmp_path / "l").mkdir()
    (tmp_path / "u").mkdir()
    (tmp_path / "w").mkdir()
    cfg = Config(["src", str(tmp_path / "m"), "-o",
                  (f"lowerdir={tmp_path}/l,upperdir={tmp_path}/u,workdir={tmp_path}/w,redirect_dir=on,index=on,"
                   "metacopy=on,allow_other,dev,suid,squash_to_root,timeout=5")])
    assert (cfg.options.redirect_dir, cfg.options.index, cfg.options.metacopy) == (True, True, True)
    assert cfg.fuse_options["allow_other"] and cfg.fuse_options["dev"] and not cfg.readonly
    assert cfg.ignored == ["squash_to_root", "timeout"]
    with pytest.raises(UsageError, match="unknown options bogus, upperdri .*known: .*lowerdir"):
        Config(["m", "-o", f"lowerdir={tmp_path}/l,upperdri={tmp_path}/u,bogus=1"])
    assert Config([str(tmp_path / "m"), "-o", f"lowerdir={tmp_path}/l"]).readonly
    for bad in (["m"], ["m", "-o", "upperdir=/tmp"], ["m", "-o", f"lowerdir={tmp_path}/l,upperdir={tmp_path}/u"],
                ["m", "-o", f"lowerdir={tmp_path}/l,metacopy=on,redirect_dir=off"],
                ["m", "-o", f"lowerdir={tmp_path}/nope"]):
        with pytest.raises(UsageError):
            Config(bad)
    r = run(str(tmp_path / "m"), "-o", "upperdir=/x")
    assert r.returncode == 2 and "lowerdir" in r.stderr


# --- mounting ------------------------------------------------------------------------------


@needs_fuse
def test_daemon_round_trip_matches_the_kernel(dirs: Dirs) -> None:
    t0 = time.monotonic()
    r = run("overlay", str(dirs.mnt), "-o", dirs.options())
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(dirs.mnt), "the program returned before the mount served"
    assert time.monotonic() - t0 < 30
    with open("/proc/self/mounts") as f:
        assert any(line.split()[1] == str(dirs.mnt) and line.split()[2] == "fuse.unionfs-sim-fuse" for line in f)
    pid = int((dirs.work / LOCK_NAME).read_text())
    assert pid != os.getpid()
    assert sorted(os.listdir(dirs.mnt / "etc")) == ["attrs", "hostname"]
    change_things(dirs.mnt)
    ours = view(dirs.mnt)
    # Written through: the upperdir on disk, as overlayfs keeps it, while still mounted.
    up = ufs.Layer.from_directory(dirs.upper, format="overlay")
    assert up["etc/hostname"].data == b"web1\n" and up["bin/sh"] is ufs.WHITEOUT
    unmount_and_wait(dirs)
    assert process_ends(pid)  # the daemon is gone
    up = ufs.Layer.from_directory(dirs.upper, format="overlay")
    assert up["bin/sh"] is ufs.WHITEOUT and up["var/lib"] is ufs.WHITEOUT and up["app/server.py"] is ufs.WHITEOUT
    assert "var/lib/state" not in up  # one whiteout for the whole tree
    assert up["etc/hostname"].data == b"web1\n" and up["app/main.py"].data == b"print('hello')\n"
    assert up["usr/share/a"] is up["usr/share/c"]  # a hard link on disk
    assert dict(up["etc/attrs"].xattrs) == {"user.origin": b"lower", "user.added": b"yes"}
    assert up["bin/busybox"].mode == 0o700 and isinstance(up["srv/fifo"], ufs.Fifo)
    assert up["var/cache/new"] is ufs.WHITEOUT and isinstance(up["var/cache/again"], ufs.Dir)
    assert sorted(os.listdir(dirs.work)) == sorted([LOCK_NAME, "unionfs-sim"])
    assert os.listdir(dirs.work / "unionfs-sim") == []  # nothing left staged
    # The kernel sees the same merged view in the same directories.
    with kernel_mount(dirs):
        assert view(dirs.mnt) == ours
    # And so does a second mount, which starts from the upperdir just written.
    r = run("overlay", str(dirs.mnt), "-o", dirs.options())
    assert r.returncode == 0, r.stderr
    try:
        assert view(dirs.mnt) == ours
        (dirs.mnt / "etc/hostname").write_text("second\n")
        os.unlink(dirs.mnt / "srv/data/notes.txt")
    finally:
        unmount_and_wait(dirs)
    up = ufs.Layer.from_directory(dirs.upper, format="overlay")
    assert up["etc/hostname"].data == b"second\n" and "srv/data/notes.txt" not in up
    with kernel_mount(dirs):
        assert (dirs.mnt / "etc/hostname").read_text() == "second\n"
        assert not (dirs.mnt / "bin/sh").exists() and sorted(os.listdir(dirs.mnt / "usr/share")) == ["a", "b", "c"]


@needs_fuse
def test_upper_written_by_the_kernel_is_loaded(dirs: Dirs) -> None:
    with kernel_mount(dirs):
        change_things(dirs.mnt)
        theirs = view(dirs.mnt)
    r = run("overlay", str(dirs.mnt), "-o", dirs.options())
    assert r.returncode == 0, r.stderr
    try:
        assert view(dirs.mnt) == theirs
    finally:
        unmount_and_wait(dirs)
    with kernel_mount(dirs):
        assert view(dirs.mnt) == theirs


@needs_fuse
def test_redirect_dir_and_foreground(dirs: Dirs) -> None:
    p = subprocess.Popen([*PROGRAM, "-f", "src", str(dirs.mnt), "-o", dirs.options("redirect_dir=on")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(dirs.mnt):
            assert p.poll() is None, p.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        while True:  # the mount is up; wait until it serves
            try:
                os.listdir(dirs.mnt)
                break
            except OSError:
                time.sleep(0.02)
        os.rename(dirs.mnt / "opt/tool", dirs.mnt / "opt/tool2")  # a lower directory: redirect
        ours = view(dirs.mnt)
        p.terminate()  # SIGTERM ends it as umount does
        assert p.wait(30) == 0, p.communicate()[1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not os.path.ismount(dirs.mnt)
    up = ufs.Layer.from_directory(dirs.upper, format="overlay")
    assert up["opt/tool2"].redirect == "opt/tool" and up["opt/tool"] is ufs.WHITEOUT
    with kernel_mount(dirs, "redirect_dir=on"):
        assert view(dirs.mnt) == ours


@needs_fuse
def test_read_only_without_upperdir(dirs: Dirs) -> None:
    r = run("src", str(dirs.mnt), "-o", dirs.options(upper=False))
    assert r.returncode == 0, r.stderr
    try:
        assert (dirs.mnt / "etc/hostname").read_text() == "base\n"
        with pytest.raises(OSError) as e:
            (dirs.mnt / "etc/hostname").write_text("x")
        assert e.value.errno == errno.EROFS
    finally:
        subprocess.run(["umount", str(dirs.mnt)], check=True)
    deadline = time.monotonic() + 30
    pattern = f"fuse_overlayfs src {dirs.mnt}"
    while subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False).returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@needs_fuse
def test_errors_are_reported(dirs: Dirs) -> None:
    # The workdir is locked by a running instance: a second one refuses to start.
    r = run("src", str(dirs.mnt), "-o", dirs.options())
    assert r.returncode == 0, r.stderr
    try:
        other = dirs.base / "mnt2"
        other.mkdir()
        r2 = run("src", str(other), "-o", dirs.options())
        assert r2.returncode == 1 and "in use" in r2.stderr
        assert not os.path.ismount(other)
    finally:
        unmount_and_wait(dirs)
    (dirs.mnt / "occupied").write_text("x")
    r = run("src", str(dirs.mnt), "-o", dirs.options())
    assert r.returncode == 1 and "not empty" in r.stderr


@needs_fuse
def test_mount_fuse_helper_calling_convention(dirs: Dirs) -> None:
    """mount -t fuse.unionfs-sim-fuse runs mount.fuse, which runs ``unionfs-sim-fuse SRC MNT -o OPTS``.

    mount(8) clears PATH, so the program must be in /usr/local/bin or the like (see the
    module docs of unionfs_sim.fuse_overlay_compat); here the helper is called directly,
    with a PATH that finds a wrapper, which is exactly what mount(8) would exec.
    """
    helper = shutil.which("mount.fuse3", path="/sbin:/usr/sbin") or shutil.which("mount.fuse", path="/sbin:/usr/sbin")
    if helper is None:
        pytest.skip("no mount.fuse helper installed (fuse3 or fuse package)")
    bindir = dirs.base / "bin"
    bindir.mkdir()
    wrapper = bindir / "unionfs-sim-fuse"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m unionfs_sim.cli.fuse_overlayfs \"$@\"\n")
    wrapper.chmod(0o755)
    env = {**ENV, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    r = subprocess.run([helper, "overlay", str(dirs.mnt), "-t", "fuse.unionfs-sim-fuse", "-o", dirs.options("rw")],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    try:
        assert os.path.ismount(dirs.mnt)
        (dirs.mnt / "etc/hostname").write_text("via mount.fuse\n")
    finally:
        unmount_and_wait(dirs)
    up = ufs.Layer.from_directory(dirs.upper, format="overlay")
    assert up["etc/hostname"].data == b"via mount.fuse\n"
    installed = shutil.which("unionfs-sim-fuse", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if installed is not None:  # the real thing, when the program is where mount(8) looks
        r = subprocess.run(["mount", "-t", "fuse.unionfs-sim-fuse", "-o", dirs.options(), "overlay", str(dirs.mnt)],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        try:
            assert (dirs.mnt / "etc/hostname").read_text() == "via mount.fuse\n"
        finally:
            unmount_and_wait(dirs)
    assert stat.S_ISDIR(os.stat(dirs.upper).st_mode)


def test_the_drop_in_parses_with_click_and_is_a_command_of_the_group(tmp_path: Path) -> None:
    """One parser (click) for every entry point: options before or after the paths, -oOPTS glued,
    and ``unionfs-sim fuse-overlayfs`` running the same program."""
    from click.testing import CliRunner

    from unionfs_sim.cli import main as cli

    (tmp_path / "l").mkdir()
    before = Config(["-o", f"lowerdir={tmp_path}/l", "src", str(tmp_path / "m")])
    after = Config(["src", str(tmp_path / "m"), f"-olowerdir={tmp_path}/l", "-f"])
    assert before.lowers == after.lowers == [str(tmp_path / "l")] and after.foreground and not before.foreground
    with pytest.raises(UsageError, match="No such option.*--bogus"):
        Config(["--bogus", str(tmp_path / "m")])
    r = CliRunner().invoke(cli, ["fuse-overlayfs", "--version"])
    assert r.exit_code == 0 and r.output.startswith("unionfs-sim-fuse (unionfs_sim)")
    r = CliRunner().invoke(cli, ["fuse-overlayfs", "--help"])
    assert r.exit_code == 0 and "--umount MOUNTPOINT" in r.output
