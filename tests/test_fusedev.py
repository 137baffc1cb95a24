"""What only the /dev/fuse server (:mod:`unionfs_sim.fusedev`) promises: the kernel's caches
answer repeated work alone, and stay exact across hard links and changes made from Python.

The behaviour both servers share is in test_fuse.py (run on both). Needs /dev/fuse and
root (mount(2)); skips, saying why, only when those are missing.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Any

import pytest

import unionfs_sim as ufs
from unionfs_sim import fusedev
from unionfs_sim.fusedev import RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, renameat2
from unionfs_sim.mounting import mount

pytestmark = pytest.mark.fuse

REASON = fusedev.kernel_backend_unavailable()
if REASON is None and os.geteuid() != 0:
    REASON = "not root: these tests mount with mount(2)"
if REASON is not None:
    print(f"test_fusedev: skipping, {REASON}", file=sys.stderr)
    pytest.skip(f"the /dev/fuse server cannot mount here: {REASON}", allow_module_level=True)


def tree() -> ufs.Image:
    files: dict[str, object] = {f"d{i}/f{j}": f"{i}/{j}\n".encode() for i in range(20) for j in range(30)}
    files.update({
        "etc/hostname": b"base\n",
        "shared/a": b"linked\n",
        "shared/b": ufs.Hardlink("shared/a"),
        "keep/": ufs.Dir(mode=0o755),
    })
    return ufs.Image.from_layers([ufs.Layer.from_dict(files)])


def walk_lstat(root: str) -> int:
    n = 0
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lstat(os.path.join(top, name))
            n += 1
    return n


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def requests(m: Any) -> int:
    return sum(m.operations.calls.values())


def test_the_kernel_answers_a_repeated_walk_alone(mnt: str) -> None:
    c = tree().container()
    with mount(c, mnt, backend="kernel") as m:
        assert m.backend == "kernel"
        n = walk_lstat(mnt)
        first = requests(m)
        # READDIRPLUS: a listing brings the attributes of its names, no LOOKUP per name
        assert m.operations.calls["lookup"] == 0 and n == 20 * 30 + 20 + 6
        assert first < n / 4
        before = dict(m.operations.calls)
        assert walk_lstat(mnt) == n
        again = {k: v - before.get(k, 0) for k, v in m.operations.calls.items() if v != before.get(k, 0)}
        # listings, entries and attributes come from the kernel's caches; only a directory
        # whose listing was read has its atime marked stale by the kernel (one GETATTR each)
        assert set(again) <= {"getattr"} and again.get("getattr", 0) <= 24, again
        third = requests(m)
        assert walk_lstat(mnt) == n
        assert requests(m) == third  # now nothing at all reaches the server


def test_an_image_mount_reads_from_the_page_cache(mnt: str) -> None:
    with mount(tree(), mnt, backend="kernel") as m:
        for _ in range(3):
            with open(f"{mnt}/etc/hostname", "rb") as f:
                assert f.read() == b"base\n"
        assert m.operations.calls["read"] == 1


def test_sequential_reads_move_a_mebibyte_per_request(mnt: str) -> None:
    # As root the server raises the mount's readahead from the kernel's 128 KiB to one
    # READ's size; each READ answers with a view of the model's bytes.
    data = os.urandom(1 << 20) * 8
    image = ufs.Image.from_layers([ufs.Layer.from_dict({"big": data})])
    with mount(image.container(), mnt, backend="kernel") as m:
        dev = os.stat(mnt).st_dev
        with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb") as f:
            assert int(f.read()) == fusedev.MAX_WRITE // 1024
        with open(f"{mnt}/big", "rb") as f:
            assert f.read() == data
        assert m.operations.calls["read"] == len(data) // fusedev.MAX_WRITE


def test_hard_links_are_one_kernel_inode(mnt: str) -> None:
    c = tree().container()
    with mount(c, mnt, backend="kernel"):
        os.link(f"{mnt}/etc/hostname", f"{mnt}/keep/h")
        a, b = os.stat(f"{mnt}/etc/hostname"), os.stat(f"{mnt}/keep/h")
        assert (a.st_ino, a.st_nlink) == (b.st_ino, 2) == (b.st_ino, b.st_nlink)
        with open(f"{mnt}/keep/h", "ab") as f:
            f.write(b"more\n")
        # attributes are cached for long, yet the other name shows the write at once
        assert os.stat(f"{mnt}/etc/hostname").st_size == len(b"base\nmore\n")
        with open(f"{mnt}/etc/hostname", "rb") as f:
            assert f.read() == b"base\nmore\n"
        os.unlink(f"{mnt}/keep/h")
        assert os.stat(f"{mnt}/etc/hostname").st_nlink == 1
    assert c.fs.read_bytes("/etc/hostname") == b"base\nmore\n"


def test_lower_hard_links_copy_up_apart_without_index(mnt: str) -> None:
    c = tree().container()
    with mount(c, mnt, backend="kernel"):
        a0, b0 = os.stat(f"{mnt}/shared/a"), os.stat(f"{mnt}/shared/b")
        assert a0.st_ino == b0.st_ino and a0.st_nlink == 2
        with open(f"{mnt}/shared/a", "ab") as f:
            f.write(b"A")
        # overlayfs without index=on: the copy-up breaks the link; the model says so
        # and the mount agrees, though both names were cached
        for name in ("a", "b"):
            st = os.stat(f"{mnt}/shared/{name}")
            model = c.fs.lstat(f"/shared/{name}")
            assert (st.st_ino, st.st_nlink, st.st_size) == (model.st_ino, model.st_nlink, model.st_size)
        assert read(f"{mnt}/shared/b") == b"linked\n"


def test_changes_from_python_show_at_once(mnt: str) -> None:
    c = tree().container()
    with mount(c, mnt, backend="kernel"):
        walk_lstat(mnt)  # everything cached
        assert read(f"{mnt}/d1/f1") == b"1/1\n"
        c.fs.write_bytes("/d1/f1", b"rewritten from python\n")
        assert os.stat(f"{mnt}/d1/f1").st_size == len(b"rewritten from python\n")
        assert read(f"{mnt}/d1/f1") == b"rewritten from python\n"
        c.fs.chmod("/d1/f2", 0o600)
        assert stat.S_IMODE(os.stat(f"{mnt}/d1/f2").st_mode) == 0o600
        c.fs.unlink("/d1/f3")
        assert not os.path.lexists(f"{mnt}/d1/f3")
        assert "f3" not in os.listdir(f"{mnt}/d1")
        c.fs.rename("/d1/f4", "/d2/moved")
        assert not os.path.lexists(f"{mnt}/d1/f4")
        assert read(f"{mnt}/d2/moved") == b"1/4\n"
        assert "moved" in os.listdir(f"{mnt}/d2")
        # a name that becomes another kind of object: the kernel looks it up again
        c.fs.unlink("/d1/f5")
        c.fs.mkdir("/d1/f5")
        assert stat.S_ISDIR(os.stat(f"{mnt}/d1/f5").st_mode)
        c.fs.write_bytes("/d1/f5/inside", b"x")
        assert os.listdir(f"{mnt}/d1/f5") == ["inside"]
        # a cached name removed from Python: O_CREAT through it creates the file anew
        c.fs.unlink("/d1/f6")
        with open(f"{mnt}/d1/f6", "wb") as f:
            f.write(b"again")
        assert c.fs.read_bytes("/d1/f6") == b"again"


def test_chown_to_nothing_copies_up_as_overlayfs(mnt: str) -> None:
    c = tree().container()
    with mount(c, mnt, backend="kernel"):
        before = os.stat(f"{mnt}/etc/hostname")
        os.chown(f"{mnt}/etc/hostname", -1, -1)
        after = os.stat(f"{mnt}/etc/hostname")
    assert "etc/hostname" in c.upper  # overlayfs copies up on any setattr
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)


def test_renameat2_noreplace_and_exchange(mnt: str) -> None:
    c = tree().container()
    with mount(c, mnt, backend="kernel"):
        d = f"{mnt}/d0"
        with pytest.raises(FileExistsError):
            renameat2(f"{d}/f0", f"{d}/f1", RENAME_NOREPLACE)
        renameat2(f"{d}/f0", f"{d}/new", RENAME_NOREPLACE)
        # Both names cached by the kernel (entries, attributes, pages) before the swap.
        def seen() -> dict[str, tuple[int, bytes]]:
            out = {}
            for n in ("f1", "f2"):
                with open(f"{d}/{n}", "rb") as f:
                    out[n] = (os.fstat(f.fileno()).st_ino, f.read())
            return out

        before = seen()
        renameat2(f"{d}/f1", f"{d}/f2", RENAME_EXCHANGE)
        after = seen()
        assert after == {"f1": before["f2"], "f2": before["f1"]}
        for n in ("f1", "f2"):  # the server finds each node under its new name
            os.chmod(f"{d}/{n}", 0o600)
            with open(f"{d}/{n}", "ab") as f:
                f.write(n.encode())
        with pytest.raises(OSError) as e:
            renameat2(f"{d}/f1", f"{d}/f2", RENAME_WHITEOUT)
        assert e.value.errno == errno.EINVAL  # overlayfs refuses it too
    assert c.fs.read_bytes("/d0/new") == b"0/0\n" and not c.fs.lexists("/d0/f0")
    assert (c.fs.read_bytes("/d0/f1"), c.fs.read_bytes("/d0/f2")) == (before["f2"][1] + b"f1", before["f1"][1] + b"f2")
    assert c.fs.stat("/d0/f1").st_mode & 0o777 == c.fs.stat("/d0/f2").st_mode & 0o777 == 0o600


def test_options_are_checked(mnt: str) -> None:
    with pytest.raises(ufs.MountError, match="unknown option 'no_such_option'"), \
            mount(tree().container(), mnt, backend="kernel", no_such_option=True):
        pass
    assert not os.path.ismount(mnt)


def test_a_directory_copied_up_on_the_way_is_listed_again(mnt: str) -> None:
    # A directory only one layer has lists that layer's whiteouts (as the kernel does);
    # once copied up it is merged and they vanish. The kernel caches the listing and knows
    # nothing of copy-up: the server drops it.
    image = ufs.Image.from_layers([ufs.Layer.from_dict({"b/a": ufs.WHITEOUT, "b/c": b"x", "b/d/e": b"y"})])
    c = image.container()
    with mount(c, mnt, backend="kernel"):
        assert sorted(os.listdir(f"{mnt}/b")) == ["a", "c", "d"]
        nlink = os.stat(f"{mnt}/b").st_nlink
        with open(f"{mnt}/b/d/new", "w"):  # copies up b and b/d on the way
            pass
        assert sorted(os.listdir(f"{mnt}/b")) == sorted(c.fs.listdir("/b")) == ["c", "d"]
        assert os.stat(f"{mnt}/b").st_nlink == c.fs.lstat("/b").st_nlink != nlink
