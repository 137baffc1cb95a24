"""Lazy lowers (issue 12, item 7): a lower file's bytes are read from disk when first
needed, not when the directory is read or mounted.

``Layer.from_directory(d, lazy=True)`` gives each regular file a
:class:`~unionfs_sim.nodes.DiskBytes`; the fuse-overlayfs drop-in reads its lowers so.
A lazy layer must hash, compare, copy up and export exactly as the eager one; a later
change on disk is defined (DiskBytes' docs): in-place changes show, a shorter, replaced or
removed file fails with EIO naming it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim.codec.tar import canonical_order
from unionfs_sim.content import Data
from unionfs_sim.fuse import fuse_unavailable
from unionfs_sim.nodes import DiskBytes, File

REPO = str(Path(__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _tree(tmp_path: Path) -> Path:
    d = tmp_path / "lower"
    ufs.Layer.from_dict({
        "etc/": ufs.Dir(mode=0o755),
        "etc/hostname": ufs.File(b"box\n", mode=0o600, uid=5, xattrs={"user.a": b"1"}),
        "etc/link": ufs.Hardlink("etc/hostname"),
        "a-b": b"sorts after a/",
        "a/x": b"x" * 100_000,
        "a/y/z": b"",
        "gone": ufs.WHITEOUT,
        "bin/sh": ufs.Symlink("busybox"),
    }).to_directory(d)
    return d


def test_a_lazy_layer_reads_no_file_data_and_equals_the_eager_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    d = _tree(tmp_path)
    eager = ufs.Layer.from_directory(d)
    reads: list[int] = []
    real_open = os.open

    def counting_open(path: str, flags: int, *a: object, **k: object) -> int:
        if os.path.isfile(path):
            reads.append(1)
        return real_open(path, flags, *a, **k)  # type: ignore[arg-type]

    listed: list[str] = []
    real_listxattr = os.listxattr

    def counting_listxattr(path: str, *a: object, **k: object) -> list[str]:
        listed.append(path)
        return real_listxattr(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "listxattr", counting_listxattr)
    lazy = ufs.Layer.from_directory(d, lazy=True)
    assert reads == [], "reading a lazy layer opened a regular file"
    assert all(os.path.isdir(p) for p in listed), f"xattrs of non-directories listed at once: {listed}"
    monkeypatch.undo()
    assert list(lazy) == list(eager) == canonical_order(eager), "not in canonical order"
    f = lazy["a/x"]
    assert isinstance(f, File) and isinstance(f.data, DiskBytes) and len(f.data) == 100_000
    assert lazy["etc/hostname"] is lazy["etc/link"], "hard links are one object"
    assert lazy.digest == eager.digest
    for k in eager:
        assert lazy[k].same(eager[k]) if not isinstance(eager[k], ufs.nodes.Whiteout) else lazy[k] is ufs.WHITEOUT
    assert f.data == b"x" * 100_000 and b"x" * 100_000 == f.data and f.data != b"x" * 99_999
    assert hash(f.data) == hash(b"x" * 100_000)
    out = tmp_path / "again"
    lazy.to_directory(out)
    assert ufs.Layer.from_directory(out).digest == eager.digest


def test_copy_up_shares_the_disk_bytes_and_a_write_copies_one_chunk(tmp_path: Path) -> None:
    d = tmp_path / "lower"
    big = os.urandom(1 << 20)
    ufs.Layer.from_dict({"big": big}).to_directory(d)
    image = ufs.Image.from_layers([ufs.Layer.from_directory(d, lazy=True)])
    c = image.container()
    c.fs.chmod("/big", 0o600)  # copy-up
    inode = c.overlay.root.entries["big"]  # type: ignore[union-attr]
    assert isinstance(inode.data, Data) and isinstance(inode.data.base, DiskBytes)
    assert inode.data.private_bytes == 0
    with c.fs.open("/big", "r+b") as fh:
        fh.seek(70_000)
        fh.write(b"hello")
    assert inode.data.private_bytes == 1 << 16
    got = c.fs.read_bytes("/big")
    assert got == big[:70_000] + b"hello" + big[70_005:]
    assert c.commit().layers[-1]["big"].data == got  # type: ignore[union-attr]


def test_a_change_on_disk_after_reading_is_defined(tmp_path: Path) -> None:
    d = tmp_path / "lower"
    ufs.Layer.from_dict({"same": b"abcdef", "short": b"abcdef", "swap": b"abcdef", "rm": b"abcdef"}).to_directory(d)
    layer = ufs.Layer.from_directory(d, lazy=True)
    fs = ufs.Image.from_layers([layer]).fs
    with open(d / "same", "r+b") as f:  # in place, same length: read live, as the kernel does
        f.write(b"XY")
    assert fs.read_bytes("/same") == b"XYcdef"
    os.truncate(d / "short", 2)
    (d / "swap.new").write_bytes(b"abcdef")
    os.rename(d / "swap.new", d / "swap")
    os.unlink(d / "rm")
    for name in ("short", "swap", "rm"):
        with pytest.raises(OSError) as e:
            fs.read_bytes("/" + name)
        assert e.value.errno == errno.EIO and e.value.filename == str(d / name), e.value
    with pytest.raises(OSError) as e:  # its xattrs, read when first asked for, too
        fs.listxattr("/rm")
    assert e.value.errno == errno.EIO and e.value.filename == str(d / "rm"), e.value


def test_disk_bytes_slices_and_reader(tmp_path: Path) -> None:
    p = tmp_path / "f"
    data = os.urandom(3_000_001)
    p.write_bytes(data)
    b = DiskBytes.of(p)
    assert len(b) == len(data) and b[5:10] == data[5:10] and b[-3:] == data[-3:] and b[10:5] == b""
    assert bytes(b) == data and b.reader().read() == data
    assert b"".join(b.chunks(1 << 16)) == data
    with pytest.raises(OSError):
        DiskBytes.of(tmp_path)


FUSE = fuse_unavailable() or (None if os.geteuid() == 0 else "needs root")


def _rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def _rss_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.fuse
@pytest.mark.skipif(FUSE is not None, reason=f"{FUSE}")
def test_the_drop_in_mounts_without_reading_lower_data(tmp_path: Path) -> None:
    """The server reads (rchar) far less than the lower data at mount, and serves the big
    file by reading it on demand, without holding it (peak RSS well under its size)."""
    size = 96 << 20
    lower, upper, work, mnt = (tmp_path / n for n in ("lower", "upper", "work", "mnt"))
    for p in (lower, upper, work, mnt):
        p.mkdir()
    with open(lower / "big", "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    (lower / "small").write_bytes(b"small\n")
    want = hashlib.sha256()
    with open(lower / "big", "rb") as f:
        while b := f.read(1 << 20):
            want.update(b)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    p = subprocess.Popen([sys.executable, "-m", "unionfs_sim.cli.fuse_overlayfs", "-f", "lazy", str(mnt), "-o", opts],
                         env=ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            assert p.poll() is None, p.communicate()[1].decode()
            assert time.monotonic() < deadline, "the drop-in did not mount"
            time.sleep(0.01)
        assert sorted(os.listdir(mnt)) == ["big", "small"]
        at_mount = _rchar(p.pid)
        assert at_mount < size // 4, f"the server read {at_mount:,} bytes to mount a {size:,}-byte lower"
        got = hashlib.sha256()
        with open(mnt / "big", "rb", buffering=0) as f:
            while b := f.read(1 << 20):
                got.update(b)
        assert got.digest() == want.digest()
        assert _rss_hwm(p.pid) < size, "the server held the big file in memory"
        with open(mnt / "big", "ab") as f:  # copy-up streams from the lower file
            f.write(b"!")
        assert (upper / "big").stat().st_size == size + 1
        with open(upper / "big", "rb") as u, open(lower / "big", "rb") as lo:
            u.seek(size - (1 << 20))
            lo.seek(size - (1 << 20))
            assert u.read() == lo.read() + b"!"
        assert _rss_hwm(p.pid) < size
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        p.wait(timeout=60)
