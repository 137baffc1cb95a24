"""``unionfs-sim-fuse`` regressions found by the unionmount-testsuite (scripts/unionmount.sh).

Each test reproduces, without the suite, what one of its scripts or its mount cycling
(``umount`` then ``mount`` again, the upper possibly rotated into the lower stack) needs
from a fuse-overlayfs drop-in. Needs root, /dev/fuse and libfuse2 (skips, saying why).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim.cli.fuse_overlayfs import LOCK_NAME, Config

pytestmark = pytest.mark.fuse


def _reason() -> str | None:
    import ctypes.util

    if os.geteuid() != 0:
        return "not root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if ctypes.util.find_library("fuse") is None:
        return "libfuse2 (libfuse.so.2) is not installed"
    return None


REASON = _reason()
needs_root_fuse = pytest.mark.skipif(REASON is not None, reason=f"needs root and FUSE: {REASON}")

REPO = str(Path(__file__).resolve().parent.parent)
PROGRAM = [sys.executable, "-m", "unionfs_sim.cli.fuse_overlayfs"]


@pytest.fixture
def base() -> Iterator[Path]:
    """A world-traversable temporary directory (pytest's tmp_path is 0700: other users
    could not reach a mount in it); whatever is still mounted below it is unmounted."""
    d = Path(tempfile.mkdtemp(prefix="ufs-compat-suite."))
    d.chmod(0o755)
    try:
        yield d
    finally:
        mounts = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if mp.startswith(str(d) + "/"):
                    mounts.append(mp)
        for mp in reversed(mounts):
            subprocess.run(["umount", "-i", mp], capture_output=True, check=False)
        for lock in d.rglob(LOCK_NAME):
            wait_unlocked(lock, 30)
        shutil.rmtree(d, ignore_errors=True)


def env(base: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROGRAM, *args], capture_output=True, text=True, timeout=120, env=env(base), check=False)


def mount(base: Path, mnt: Path, lowers: list[Path], upper: Path, work: Path, *more: str) -> None:
    for p in (upper, work, mnt):
        p.mkdir(exist_ok=True)
    opts = ",".join([f"lowerdir={':'.join(map(str, lowers))}", f"upperdir={upper}", f"workdir={work}", *more])
    r = run(base, "unionfs-sim-fuse", str(mnt), "-o", opts)
    assert r.returncode == 0, r.stderr


def unlocked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def wait_unlocked(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not unlocked(path):
        assert time.monotonic() < deadline, f"{path} stays locked"
        time.sleep(0.02)


def lower(base: Path) -> Path:
    ufs.Layer.from_dict({
        "a/rootfile": ufs.File(b":xxx:yyy:zzz", mode=0o644),
        "a/binfile": ufs.File(b"bin's", mode=0o644, uid=1, gid=1),
        "a/dir/pop/b": b":aaa:bbb:ccc",
    }).to_directory(base / "lower")
    return base / "lower"


def as_bin(code: str) -> subprocess.CompletedProcess[str]:
    """Run python ``code`` as user and group 1 (bin), as the suite's ``-B`` probes do."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(1)
        os.setuid(1)

    # A python that bin can run (this one may live under root's 0700 home).
    py = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
    if py is None:
        pytest.skip("no system python3 for user bin")
    return subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60, cwd="/",
                          preexec_fn=drop, check=False)


def test_root_mounts_allow_other(tmp_path: Path) -> None:
    """As fuse-overlayfs: run by root, the mount lets every user in, the kernel checking."""
    for p in ("l", "u", "w"):
        (tmp_path / p).mkdir()
    cfg = Config([str(tmp_path / "m"), "-o", f"lowerdir={tmp_path}/l,upperdir={tmp_path}/u,workdir={tmp_path}/w"])
    assert cfg.fuse_options.get("allow_other") is (os.geteuid() == 0)


@needs_root_fuse
def test_impermissible_other_users_get_in_and_are_checked(base: Path) -> None:
    """unionmount-testsuite's impermissible: user bin reads root's 0644 file, may not write it."""
    mnt = base / "mnt"
    mount(base, mnt, [lower(base)], base / "u", base / "w")
    f = mnt / "a/rootfile"
    r = as_bin(f"print(open({str(f)!r}).read())")
    assert r.returncode == 0 and r.stdout == ":xxx:yyy:zzz\n", r.stderr
    r = as_bin(f"import os\ntry:\n    open({str(f)!r}, 'w')\nexcept OSError as e:\n    print(e.errno)")
    assert r.stdout.strip() == str(errno.EACCES), r.stderr
    r = as_bin(f"import os\nos.truncate({str(f)!r}, 4)")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_bin(f"open({str(mnt / 'a/binfile')!r}, 'a').write('!')")  # bin's own file
    assert r.returncode == 0, r.stderr
    assert f.read_text() == ":xxx:yyy:zzz" and (mnt / "a/binfile").read_text() == "bin's!"


def fill(mnt: Path, n: int) -> None:
    """n new files and a changed lower file: an upper that takes a while to write back."""
    d = mnt / "a/new"
    d.mkdir()
    for i in range(n):
        (d / f"f{i}").write_text(str(i))
    (mnt / "a/rootfile").write_text("changed")
    os.unlink(mnt / "a/dir/pop/b")


def check_filled(mnt: Path, n: int) -> None:
    assert len(os.listdir(mnt / "a/new")) == n
    assert (mnt / "a/rootfile").read_text() == "changed" and not (mnt / "a/dir/pop/b").exists()


N = 3000


@needs_root_fuse
def test_upperdir_is_complete_while_mounted_and_umount_returns(base: Path) -> None:
    """Written through: the upperdir holds every change while mounted (a plain ``umount``
    has nothing to wait for); ``unionfs-sim-fuse --umount`` unmounts."""
    mnt, upper, work = base / "mnt", base / "u", base / "w"
    mount(base, mnt, [lower(base)], upper, work)
    fill(mnt, N)
    up = ufs.Layer.from_directory(upper, format="overlay")
    assert len([k for k in up if k.startswith("a/new/")]) == N and up["a/dir/pop/b"] is ufs.WHITEOUT
    assert up["a/rootfile"].data == b"changed"
    r = run(base, "--umount", str(mnt))
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(mnt)
    wait_unlocked(work / LOCK_NAME, 30)
    assert os.listdir(work / "unionfs-sim") == []
    (base / "t").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "t", str(base / "t")], check=True)
    assert run(base, "--umount", str(base / "t")).returncode == 0 and not os.path.ismount(base / "t")
    r = run(base, "--umount", str(base / "t"))
    assert r.returncode != 0 and str(base / "t") in r.stderr  # nothing mounted there: said


@needs_root_fuse
def test_mount_again_right_after_umount(base: Path) -> None:
    """The suite's mount cycling: ``umount``, then at once ``mount`` the same directories, or
    with the upper rotated into the lower stack (nothing to wait for: written through)."""
    mnt, low = base / "mnt", lower(base)
    mount(base, mnt, [low], base / "u0", base / "w0")
    fill(mnt, N)
    subprocess.run(["umount", "-i", str(mnt)], check=True)
    mount(base, mnt, [low], base / "u0", base / "w0", "redirect_dir=on")
    check_filled(mnt, N)
    os.rename(mnt / "a/dir", mnt / "a/dir2")  # a lower directory: a redirect
    subprocess.run(["umount", "-i", str(mnt)], check=True)
    mount(base, mnt, [base / "u0", low], base / "u1", base / "w1", "redirect_dir=on")  # rotated
    check_filled(mnt, N)
    assert not (mnt / "a/dir").exists() and sorted(os.listdir(mnt / "a/dir2/pop")) == []
    subprocess.run(["umount", "-i", str(mnt)], check=True)
    wait_unlocked(base / "w1" / LOCK_NAME, 60)
