"""``analysis.scan``'s own tar-header reader against the full loader, on tars made by real tools.

The scan reads layer tars header by header (seeking over content); the oracle is
``docker_archive.load`` (tarfile underneath) on the very same archive. Layers come from
GNU tar in each of its formats (ustar prefixes, GNU ``L``/``K`` long names, PAX ``path``/
``linkpath`` records) and from Python's tarfile; what the scan leaves to the loader
(global PAX headers, sparse files, AUFS names, a whiteout with entries below it) must give
the loader's answer, or its error.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim import analysis
from unionfs_sim.errors import FormatError
from unionfs_sim.nodes import Device, Dir, File, Symlink

from .analysis_images import CATALOGUE

TAR = shutil.which("tar")
LONG = "d" * 60 + "/" + "e" * 70 + "/" + "f" * 80  # 212 characters: past ustar's 100 + 155 split only with prefix
LONGER = "/".join(["g" * 90] * 4)  # 363 characters: no ustar header holds it


def make_archive(path: Path, layers: list[bytes]) -> Path:
    """A ``docker save`` archive of raw layer tars (config diff_ids computed from them)."""
    diff_ids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": f"step {i}"} for i in range(len(layers))]}).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{d[7:]}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["scan:test"], "Layers": names}]).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in [("manifest.json", manifest), (cfg_name, config), *zip(names, layers, strict=True)]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def describe(layer: ufs.Layer) -> dict[str, tuple[object, ...]]:
    """What the analyses read of each entry: type, metadata, size, content, link identity."""
    first: dict[int, str] = {}
    out: dict[str, tuple[object, ...]] = {}
    for k in sorted(layer):
        e = layer[k]
        row: tuple[object, ...] = (type(e).__name__ if not isinstance(e, File) else "File",)
        if isinstance(e, (File, Dir, Symlink, Device)) or hasattr(e, "mode"):
            row += (getattr(e, "mode", None), getattr(e, "uid", None), getattr(e, "gid", None),
                    getattr(e, "mtime_ns", None), dict(getattr(e, "xattrs", {}) or {}))
        if isinstance(e, File):
            row += (e.size, e.read() if isinstance(e, analysis.SizedFile) else bytes(e.data),
                    first.setdefault(id(e), k))
        if isinstance(e, Dir):
            row += (e.opaque,)
        if isinstance(e, Symlink):
            row += (e.target,)
        if isinstance(e, Device):
            row += (e.major, e.minor)
        out[k] = row
    return out


def assert_same(archive: Path, *, scanned: bool = True) -> None:
    """The scan of ``archive`` equals its full load, entry by entry, and in every analysis."""
    got = analysis.scan(archive)
    want = ufs.docker_archive.load(archive)
    assert isinstance(got, analysis.ScannedImage) is scanned
    assert [describe(x) for x in got.layers] == [describe(x) for x in want.layers]
    for method in ("dive", "reclaimable"):
        mine, theirs = (analysis.efficiency(x, method=method) for x in (got, want))
        assert mine.to_json() == theirs.to_json()
    assert analysis.history(got) == analysis.history(want)


def tree(root: Path, ustar: bool) -> Path:
    """A directory with what layers hold: long names and link targets, hard links, a FIFO, modes
    (names that ustar cannot hold, a base name over 100 bytes, only when ``ustar`` is false)."""
    (root / LONG).mkdir(parents=True)
    (root / LONG / "file").write_bytes(b"x" * 1000)
    if not ustar:  # ustar holds no link target over 100 bytes
        os.link(root / LONG / "file", root / LONG / "hardlink")
        (root / LONG / ("h" * 120)).write_bytes(b"long base name\n")
        os.link(root / LONG / "file", root / ("short-link-to-" + "i" * 100))
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_bytes(b"a=1\n")
    os.chmod(root / "etc" / "conf", 0o4750)
    os.link(root / "etc" / "conf", root / "etc" / "conf-link")
    if not ustar:
        os.symlink("../" + LONG + "/file", root / "etc" / "long-target")
    os.symlink("conf", root / "etc" / "short")
    os.mkfifo(root / "etc" / "fifo")
    (root / "empty").mkdir()
    (root / "etc" / ".wh.gone").write_bytes(b"")
    (root / "var").mkdir()
    (root / "var" / ".wh..wh..opq").write_bytes(b"")
    (root / "var" / "new").write_bytes(b"n" * 70000)
    (root / "zero").write_bytes(b"")
    return root


def _library_tar(spec: dict[str, bytes]) -> bytes:
    from unionfs_sim.codec import tar as codec

    buf = io.BytesIO()
    codec.write(ufs.Layer.from_dict(spec), buf)
    return buf.getvalue()


@pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")
@pytest.mark.parametrize("fmt", ["gnu", "oldgnu", "pax", "ustar", "posix"])
def test_gnu_tar_formats(fmt: str, tmp_path: Path) -> None:
    """Layers written by GNU tar in each format scan as they load (ustar cannot hold the longest names)."""
    root = tree(tmp_path / "root", ustar=fmt == "ustar")
    if fmt != "ustar":
        (root / LONGER).mkdir(parents=True)
        (root / LONGER / "deep").write_bytes(b"deep\n")
        os.symlink("/" + LONGER + "/deep", root / "etc" / "very-long-target")
    layer = tmp_path / "layer.tar"
    assert TAR is not None
    subprocess.run([TAR, f"--format={fmt}", "--numeric-owner", "--owner=1000", "--group=1000", "--sort=name",
                    "-cf", str(layer), "-C", str(root), "."], check=True, capture_output=True)
    archive = make_archive(tmp_path / "img.tar", [_library_tar({"etc/gone": b"bye\n", "var/old": b"o" * 5000,
                                                                "etc/conf": b"a=0\n"}), layer.read_bytes()])
    assert_same(archive)
    img = analysis.scan(archive)
    assert isinstance(img.layers[1]["etc/conf-link"], File)
    assert img.layers[1]["etc/conf-link"] is img.layers[1]["etc/conf"]
    assert img.layers[1]["var"].opaque  # type: ignore[union-attr]


def test_python_tarfile_formats_and_pax_records(tmp_path: Path) -> None:
    """tarfile's GNU and PAX output, PAX xattrs and sub-second mtimes, base-256 numbers."""
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            d = tarfile.TarInfo(LONGER)
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(d)
            f = tarfile.TarInfo(LONGER + "/big-uid")
            f.size, f.uid, f.gid, f.mtime = 3, 3_000_000, 7, 1_700_000_000
            if fmt == tarfile.PAX_FORMAT:
                f.pax_headers = {"SCHILY.xattr.user.k": "v", "mtime": "1700000000.123456789",
                                 "LIBARCHIVE.creationtime": "1"}
            tf.addfile(f, io.BytesIO(b"abc"))
            dev = tarfile.TarInfo("dev/null")
            dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(dev)
        assert_same(make_archive(tmp_path / f"img{fmt}.tar", [buf.getvalue()]))


def one_layer(tmp_path: Path, build: object, name: str = "img.tar", pax: dict[str, str] | None = None) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers=pax) as tf:
        build(tf)  # type: ignore[operator]
    return make_archive(tmp_path / name, [buf.getvalue()])


def add(tf: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **kw: object) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size = kind, len(data)
    for k, v in kw.items():
        setattr(ti, k, v)
    tf.addfile(ti, io.BytesIO(data) if data else None)


def test_unusual_layers_get_the_loaders_answer(tmp_path: Path) -> None:
    """What the header reader leaves to the loader comes back loaded, equal to the load."""

    def global_header(tf: tarfile.TarFile) -> None:  # tarfile writes {"comment": "global"} first
        add(tf, "a", b"1")

    def below_whiteout(tf: tarfile.TarFile) -> None:  # delete, then recreate, in one layer
        add(tf, "etc/.wh.x")
        add(tf, "etc/x/y", b"2")

    def aufs(tf: tarfile.TarFile) -> None:
        add(tf, ".wh..wh.plnk/1.2", b"linked")
        add(tf, "usr/a", kind=tarfile.LNKTYPE, linkname=".wh..wh.plnk/1.2")

    for i, build in enumerate((global_header, below_whiteout, aufs)):
        pax = {"comment": "global"} if build is global_header else None
        assert_same(one_layer(tmp_path, build, f"img{i}.tar", pax), scanned=False)


def test_unusual_layers_get_the_loaders_error(tmp_path: Path) -> None:
    """A sparse file, a path twice, '..': the loader's error, naming the layer."""

    def sparse(tf: tarfile.TarFile) -> None:
        add(tf, "s", b"", kind=tarfile.GNUTYPE_SPARSE)

    def twice(tf: tarfile.TarFile) -> None:
        add(tf, "a", b"1")
        add(tf, "./a", b"2")

    def climbs(tf: tarfile.TarFile) -> None:
        add(tf, "a/../../etc/passwd", b"x")

    for i, build in enumerate((sparse, twice, climbs)):
        archive = one_layer(tmp_path, build, f"img{i}.tar")
        with pytest.raises(FormatError) as want:
            ufs.docker_archive.load(archive)
        with pytest.raises(FormatError) as got:
            analysis.scan(archive)
        assert type(got.value) is type(want.value)
        assert "layer.tar" in str(got.value)


def test_cut_layer_is_an_error(tmp_path: Path) -> None:
    """A layer tar whose last file's content is cut short: the loader's error, not a scan of garbage."""
    good = _library_tar({"a": b"x" * 5000})
    with pytest.raises(FormatError):
        ufs.docker_archive.load(make_archive(tmp_path / "good-digest.tar", [good[:1024]]))
    with pytest.raises(FormatError):
        analysis.scan(make_archive(tmp_path / "cut.tar", [good[:1024]]))


def test_archive_out_of_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers that are not in the page cache yet (each read first fails with EAGAIN, as
    ``RWF_NOWAIT`` reports it), and a file system without ``RWF_NOWAIT``: the same image."""
    archive = tmp_path / "img.tar"
    ufs.docker_archive.save(CATALOGUE["deletes"](), archive)
    want = [describe(x) for x in analysis.scan(archive).layers]
    real = os.preadv
    tried: set[int] = set()

    def cold(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        if flags and offset not in tried:
            tried.add(offset)
            raise BlockingIOError(11, "not in the page cache")
        return real(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "preadv", cold)
    seen: list[tuple[int, int]] = []
    got = analysis.scan(archive, progress=lambda d, t, w: seen.append((d, t)))
    assert [describe(x) for x in got.layers] == want
    assert len(tried) > len(got.layers)  # every header was "cold" once
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]

    def unsupported(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "preadv", unsupported)
    assert [describe(x) for x in analysis.scan(archive).layers] == want


def test_progress_of_load_and_save(tmp_path: Path) -> None:
    """``docker_archive.save``/``load`` report each file / layer, and the scan's fallback
    to the loader reports through the same hook."""
    image = CATALOGUE["deletes"]()
    archive = tmp_path / "img.tar"
    saving: list[tuple[int, int]] = []
    ufs.docker_archive.save(image, archive, progress=lambda d, t, w: saving.append((d, t)))
    total = saving[0][1]  # bytes of the layer files (tests/test_progress.py checks the steps)
    assert len(saving) == len(image.layers) + 1 and saving[-1] == (total, total) > (0, 0)
    loading: list[tuple[int, int, str]] = []
    ufs.docker_archive.load(archive, progress=lambda d, t, w: loading.append((d, t, w)))
    assert [w for _, _, w in loading] == ["layer 1/3", "layer 2/3", "layer 3/3", "loaded"]
    assert [d for d, _, _ in loading] == sorted(d for d, _, _ in loading) and loading[-1][0] == loading[-1][1]

    def global_header(tf: tarfile.TarFile) -> None:
        add(tf, "a", b"1")

    odd = one_layer(tmp_path, global_header, "odd.tar", {"comment": "global"})
    seen: list[str] = []
    assert not isinstance(analysis.scan(odd, progress=lambda d, t, w: seen.append(w)), analysis.ScannedImage)
    assert seen[-1] == "loaded"


def test_headers_with_high_bytes(tmp_path: Path) -> None:
    """Names and owners in raw high bytes (a header whose byte sum passes 65521, where the
    checksum needs more than one adler32): the loader's entries, and a flipped byte is caught."""
    high = "\udcff" * 99  # 99 bytes 0xFF through surrogateescape
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        add(tf, "d/", kind=tarfile.DIRTYPE)
        add(tf, "d/" + "\u00e9" * 40, b"accent")
        add(tf, "d/" + high[:97], kind=tarfile.SYMTYPE, linkname=high, uname=high[:31], gname=high[:31])
    raw = buf.getvalue()
    assert sum(raw[1536:2048]) > 65521  # the third header (after the second and its data)
    archive = make_archive(tmp_path / "high.tar", [raw])
    got = analysis.scan(archive)
    assert isinstance(got, analysis.ScannedImage)
    assert [describe(x) for x in got.layers] == [describe(x) for x in ufs.docker_archive.load(archive).layers]
    bad = bytearray(raw)
    bad[1536 + 10] ^= 0x01  # a name byte of the third header: its checksum no longer matches
    with pytest.raises(FormatError, match="checksum"):
        analysis.scan(make_archive(tmp_path / "bad.tar", [bytes(bad)]))
    field = int(raw[1536 + 148:1536 + 154], 8)  # "%06o\0 ", as tarfile writes it
    bad = bytearray(raw)
    bad[1536 + 148:1536 + 156] = b"%06o\0 " % (field - 65521)  # equal to the sum modulo 65521 only
    with pytest.raises(FormatError, match="checksum"):
        analysis.scan(make_archive(tmp_path / "bad2.tar", [bytes(bad)]))
