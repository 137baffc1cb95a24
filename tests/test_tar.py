"""OCI tar layers: canonical writing (plain, gzip, zstd), reading what real tools write,
refusing what is unsafe or malformed with a FormatError that names the entry."""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tarfile
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unionfs_sim.errors import DigestMismatch, FormatError, UnsafePath
from unionfs_sim.formats import tar as T
from unionfs_sim.layer import Layer
from unionfs_sim.nodes import WHITEOUT, Device, Dir, Entry, Fifo, File, Hardlink, Symlink, Whiteout
from unionfs_sim.testing import strategies as st_ufs

zstandard = pytest.importorskip("zstandard")

COMPRESSIONS = [None, "gzip", "zstd"]


# --- helpers ---------------------------------------------------------------------------


def tar_bytes(layer: Layer, compression: str | None = None) -> bytes:
    buf = io.BytesIO()
    layer.to_tar(buf, compression)
    return buf.getvalue()


def from_bytes(b: bytes, **kw: Any) -> Layer:
    return Layer.from_tar(io.BytesIO(b), **kw)


def link_groups(entries: Any) -> set[frozenset[str]]:
    """The hard-link partition of a layer: names grouped by the identity of their node."""
    groups: dict[int, set[str]] = {}
    for k, n in entries.items():
        if not isinstance(n, Whiteout):
            groups.setdefault(id(n), set()).add(k)
    return {frozenset(g) for g in groups.values()}


def assert_same(a: Any, b: Any) -> None:
    """Same keys, each entry ``same()`` (whiteout for whiteout), same hard-link groups."""
    assert sorted(a) == sorted(b)
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, Whiteout):
            assert isinstance(y, Whiteout), k
        else:
            assert x.same(y), (k, x, y)
    assert link_groups(a) == link_groups(b)


def member(name: str, type: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: Any) -> tuple[tarfile.TarInfo, bytes]:
    """A hand-made tar member: a TarInfo with ``kw`` set, and its data."""
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.size = len(data) if type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) else 0
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, data


def build(members: Iterable[tuple[tarfile.TarInfo, bytes]], format: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar written with ``tarfile`` directly, in whatever shape the members have."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format, encoding="utf-8", errors="surrogateescape") as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.size else None)
    return buf.getvalue()


def read(members: Iterable[tuple[tarfile.TarInfo, bytes]], **kw: Any) -> Layer:
    return from_bytes(build(members), **kw)


def every_kind() -> Layer:
    """A layer with every kind of entry and the awkward metadata tars must carry."""
    big = File(b"\x00\xffdata" * 100, mode=0o4755, uid=65534, gid=2**21 + 1, mtime_ns=1_700_000_000_123_456_789,
               xattrs={"user.bin": b"\xff\xfe\x00\x80 not utf-8",
                       "security.capability": b"\x01\x00\x00\x02" + bytes(16),
                       "user.text": "héllo".encode()})
    long_dir = "/".join(["d" * 60] * 5)  # > 255 in total, each name < 255
    return Layer.from_dict({
        "/": Dir(mode=0o755, mtime_ns=10**9),
        "usr/": Dir(mode=0o755, uid=1, gid=2, mtime_ns=-1_500_000_000),
        "usr/bin/app": big,
        "usr/bin/app-link": Hardlink("usr/bin/app"),
        "usr/sbin/app2": Hardlink("usr/bin/app"),
        "usr/bin/setgid": File(b"", mode=0o2711, uid=2**21 + 1, gid=65534, mtime_ns=1),
        "tmp/": Dir(mode=0o1777, xattrs={"trusted.x": b"\x00"}),
        "n" * 150: File(b"long name"),
        long_dir + "/" + "f" * 200: File(b"long path", mtime_ns=5),
        "unicodé/ファイル": File(b"u"),
        "bytes/\udcff\udcfe-not-utf8": File(b"b"),
        "links/abs": Symlink("/etc/passwd"),
        "links/up": Symlink("../../x"),
        "links/\udcff": Symlink("t\udcfe" + "x" * 200, uid=5, mtime_ns=7),
        "var/cache/": Dir(opaque=True, mode=0o700, uid=3),
        "etc/motd": WHITEOUT,
        "run/initctl": Fifo(mode=0o600),
        "dev/null": Device("c", 1, 3),
        "dev/sda": Device("b", 8, 0, mode=0o660, gid=6),
        "dev/big": Device("c", 4095, 2**20 - 1),
        "empty": File(b""),
    })


# --- writing and round trips ----------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip_every_kind(compression: str | None) -> None:
    layer = every_kind()
    back = from_bytes(tar_bytes(layer, compression))
    assert_same(layer, back)
    assert back.digest == layer.digest
    assert back.source_diff_id == layer.digest  # our own tar is canonical
    assert back["usr/bin/app"] is back["usr/bin/app-link"] is back["usr/sbin/app2"]
    assert back["usr/bin/app"].xattrs["user.bin"] == b"\xff\xfe\x00\x80 not utf-8"
    assert back["usr/bin/app"].mtime_ns == 1_700_000_000_123_456_789
    assert back["usr"].mtime_ns == -1_500_000_000
    assert back["usr/bin/app"].gid == 2**21 + 1
    assert isinstance(back["var/cache"], Dir) and back["var/cache"].opaque


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_reproducible(compression: str | None) -> None:
    a, b = tar_bytes(every_kind(), compression), tar_bytes(every_kind(), compression)
    assert a == b
    if compression == "gzip":
        assert a[:4] == b"\x1f\x8b\x08\x00"  # no FNAME flag
        assert a[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    if compression == "zstd":
        assert a[:4] == b"\x28\xb5\x2f\xfd"


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_write_blob_one_pass(compression: str | None) -> None:
    layer = every_kind()
    buf = io.BytesIO()
    diff_id, blob_digest, size = T.write_blob(layer, buf, compression)
    blob = buf.getvalue()
    assert diff_id == layer.digest
    assert blob_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert size == len(blob)
    _, diff_id2, blob_digest2, size2 = T.read_blob(io.BytesIO(blob))
    assert (diff_id2, blob_digest2, size2) == (diff_id, blob_digest, size)


def test_to_tar_caches_the_digest() -> None:
    layer = Layer(dict(every_kind()))
    data = tar_bytes(layer)
    assert layer._digest is not None
    assert layer.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert layer.tar_size == len(data)


def test_to_tar_refuses_unknown_compression() -> None:
    with pytest.raises(ValueError, match="compression"):
        tar_bytes(every_kind(), "lz4")


def test_writer_refuses_names_that_would_read_back_as_whiteouts() -> None:
    # {".wh.a": File(b"")} and {"a": WHITEOUT} would otherwise be the same bytes.
    with pytest.raises(ValueError, match=r"\.wh\."):
        _ = Layer.from_dict({"d/.wh.a": b""}).digest


def test_writer_refuses_xattr_names_a_pax_record_cannot_hold() -> None:
    with pytest.raises(ValueError, match="xattr name"):
        _ = Layer.from_dict({"f": File(b"", xattrs={"user.a=b": b"c"})}).digest


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st_ufs.layers(max_entries=10), st.sampled_from(COMPRESSIONS))
def test_round_trip_random_layers(layer: Layer, compression: str | None) -> None:
    back = from_bytes(tar_bytes(layer, compression))
    assert_same(layer, back)
    assert back.digest == layer.digest == back.source_diff_id


# --- odd but valid shapes real tools write ------------------------------------------------------


def test_type_bits_in_mode_are_dropped() -> None:
    layer = read([member("d/", tarfile.DIRTYPE, mode=0o040755), member("d/f", data=b"x", mode=0o104755)])
    assert layer["d"].mode == 0o755 and layer["d/f"].mode == 0o4755


def test_whiteouts_of_any_shape() -> None:
    layer = read([
        member(".wh.a", mode=0o000),  # what docker/containerd write
        member("b/.wh.c", tarfile.LNKTYPE, linkname=".wh.a", mode=0),  # hard link to a shared whiteout
        member("b/.wh.d", tarfile.DIRTYPE),
        member("b/.wh.e", tarfile.SYMTYPE, linkname="/nowhere"),
        member("b/.wh.f", data=b"content is ignored", uid=5),
        member("b/.wh.g", tarfile.CHRTYPE, devmajor=0, devminor=0),
    ])
    assert dict(layer) == {k: WHITEOUT for k in ["a", "b/c", "b/d", "b/e", "b/f", "b/g"]}


def test_opaque_marker_with_content_and_any_order() -> None:
    layer = read([
        member("a/.wh..wh..opq", data=b"junk", mode=0),  # before its directory
        member("a/", tarfile.DIRTYPE, mode=0o700, uid=7),
        member("a/keep", data=b"k"),
    ])
    assert layer["a"].same(Dir(opaque=True, mode=0o700, uid=7))
    assert layer["a/keep"].same(File(b"k"))


def test_opaque_marker_without_directory_entry() -> None:
    markers = [member("x/y/.wh..wh..opq"), member(".wh..wh..opq")]
    layer = read(markers)
    assert layer["x/y"].same(Dir(opaque=True))  # defaults: 0o755, root, mtime 0
    assert layer[""].same(Dir(opaque=True))
    assert "x" not in layer  # implicit parent
    # with the lower directories' metadata, as containerd's mkparent copies it
    lower = {"x/y": Dir(mode=0o750, uid=9, mtime_ns=42, xattrs={"user.k": b"v"}, redirect="z")}
    layer = read(markers, lower_dirs_meta=lower.get)
    assert layer["x/y"].same(Dir(opaque=True, mode=0o750, uid=9, mtime_ns=42, xattrs={"user.k": b"v"}))
    assert layer[""].same(Dir(opaque=True))


def test_implicit_parents_and_path_spellings() -> None:
    layer = read([
        member("./", tarfile.DIRTYPE, mode=0o700),
        member("./usr/bin/a", data=b"a"),
        member("/usr/bin/b", data=b"b"),
        member("usr//lib///c", data=b"c"),
        member("./usr/./share/d", data=b"d"),
    ])
    assert sorted(layer) == ["", "usr/bin/a", "usr/bin/b", "usr/lib/c", "usr/share/d"]
    assert layer[""].mode == 0o700


def test_hard_link_groups_as_buildah_writes_them() -> None:
    layer = read([
        member("bin/busybox", data=b"BB", mode=0o755),
        member("bin/sh", tarfile.LNKTYPE, linkname="bin/busybox"),
        member("./bin/ash", tarfile.LNKTYPE, linkname="./bin/sh"),  # a link to a link
        member("s", tarfile.SYMTYPE, linkname="target"),
        member("s2", tarfile.LNKTYPE, linkname="/s"),  # a hard link to a symlink
        member("p", tarfile.FIFOTYPE),
        member("p2", tarfile.LNKTYPE, linkname="p"),
    ])
    assert layer["bin/busybox"] is layer["bin/sh"] is layer["bin/ash"]
    assert layer.nlink(layer["bin/sh"]) == 3
    assert layer["s"] is layer["s2"] and layer["p"] is layer["p2"]


@pytest.mark.parametrize("data", [b"", b"\x00" * 1024, b"\x00" * 10240], ids=["0 bytes", "1024 zeros", "10240 zeros"])
def test_empty_tars(data: bytes) -> None:
    layer = from_bytes(data)
    assert len(layer) == 0
    assert layer.source_diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


def test_empty_gzip_tar() -> None:
    assert len(from_bytes(gzip.compress(b"\x00" * 1024))) == 0


def test_tar_without_trailer_is_accepted() -> None:
    data = build([member("a", data=b"x" * 10)])
    cut = data[: 512 * 3]  # pax header, header, data block: no zero blocks after
    assert from_bytes(cut)["a"].same(File(b"x" * 10))


def test_whiteout_and_entry_for_one_path() -> None:
    layer = read([
        member(".wh.d"), member("d/", tarfile.DIRTYPE, mode=0o711),  # delete below, recreate
        member("f", data=b"new"), member(".wh.f"),  # entry first, then its whiteout
        member(".wh.g"), member("g/h", data=b"h"),  # recreated implicitly by a child
        member(".wh.s"), member("s", tarfile.SYMTYPE, linkname="x"),
    ])
    assert layer["d"].same(Dir(opaque=True, mode=0o711))
    assert layer["f"].same(File(b"new"))
    assert layer["g"].same(Dir(opaque=True)) and layer["g/h"].same(File(b"h"))
    assert layer["s"].same(Symlink("x"))


def test_aufs_bookkeeping_is_dropped_but_plnk_links_resolve() -> None:
    layer = read([
        member(".wh..wh.aufs", mode=0),
        member(".wh..wh.orph/", tarfile.DIRTYPE),
        member(".wh..wh.orph/x", data=b"orphan"),
        member(".wh..wh.plnk/", tarfile.DIRTYPE),
        member(".wh..wh.plnk/123.456", data=b"shared", mode=0o750),
        member("bin/a", tarfile.LNKTYPE, linkname=".wh..wh.plnk/123.456"),
        member("bin/b", tarfile.LNKTYPE, linkname="/.wh..wh.plnk/123.456"),
    ])
    assert sorted(layer) == ["bin/a", "bin/b"]
    assert layer["bin/a"] is layer["bin/b"]
    assert layer["bin/a"].same(File(b"shared", mode=0o750))


def test_pax_details() -> None:
    layer = read([
        member("f", data=b"x", pax_headers={
            "mtime": "1700000000.123456789123",  # more digits than ns: truncated, never rounded via float
            "LIBARCHIVE.xattr.user.odd%20name%C3%A9": "AP8=",  # URL-encoded name, base64 value
            "LIBARCHIVE.xattr.user.both": "eHg=",
            "SCHILY.xattr.user.both": "yy",  # SCHILY wins
        }, uname="someone", gname="somegroup", uid=1000, gid=1000),
        member("g", data=b"", pax_headers={"mtime": "-0.5"}),
    ])
    f = layer["f"]
    assert f.mtime_ns == 1_700_000_000_123_456_789
    assert dict(f.xattrs) == {"user.odd nameé": b"\x00\xff", "user.both": b"yy"}
    assert (f.uid, f.gid) == (1000, 1000)
    assert layer["g"].mtime_ns == -500_000_000


def test_other_formats_and_types() -> None:
    gnu = build([member("a" * 120, data=b"gnu longname"), member("c", tarfile.CONTTYPE, data=b"contiguous")],
                format=tarfile.GNU_FORMAT)
    layer = from_bytes(gnu)
    assert layer["a" * 120].same(File(b"gnu longname"))
    assert layer["c"].same(File(b"contiguous"))
    ustar = build([member("dev/tty", tarfile.CHRTYPE, devmajor=5, devminor=0, mode=0o620)], format=tarfile.USTAR_FORMAT)
    assert from_bytes(ustar)["dev/tty"].same(Device("c", 5, 0, mode=0o620))


def test_foreign_tar_keeps_its_source_diff_id() -> None:
    data = build([member("b", data=b"2", uname="root"), member("a", data=b"1")])  # unsorted, with unames
    layer = from_bytes(data)
    assert layer.source_diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert layer.digest != layer.source_diff_id
    assert from_bytes(tar_bytes(layer)).digest == layer.digest
    assert Layer.from_dict({"x": b""}).source_diff_id is None


@pytest.mark.parametrize("compression", ["xz", "bzip2"])
def test_other_compressions_are_read(compression: str) -> None:
    import bz2
    import lzma

    data = build([member("a", data=b"hi")])
    blob = lzma.compress(data) if compression == "xz" else bz2.compress(data)
    assert from_bytes(blob)["a"].same(File(b"hi"))


def test_file_named_like_a_bzip2_magic_is_still_a_tar() -> None:
    assert from_bytes(build([member("BZh9x", data=b"")]))["BZh9x"].same(File(b""))


def test_expected_diff_id() -> None:
    data = tar_bytes(every_kind())
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    assert from_bytes(gzip.compress(data), expected_diff_id=good).digest == good
    bad = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch) as e:
        from_bytes(data, expected_diff_id=bad, name="L7")
    assert good in str(e.value) and bad in str(e.value) and "L7" in str(e.value)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        from_bytes(data, expected_diff_id="sha256:ABC")


def test_io_errors_of_the_source_are_not_format_errors() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            raise OSError(5, "disk on fire")

    with pytest.raises(OSError, match="disk on fire") as e:
        Layer.from_tar(Broken())  # type: ignore[arg-type]
    assert not isinstance(e.value, FormatError)


def test_zstd_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = tar_bytes(every_kind(), "zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(ImportError, match=r"pip install unionfs_sim\[zstd\]"):
        tar_bytes(every_kind(), "zstd")
    with pytest.raises(ImportError, match=r"pip install unionfs_sim\[zstd\]"):
        from_bytes(blob)


# --- bad input: always a FormatError naming the entry ----------------------------------------


def refused(members: Iterable[tuple[tarfile.TarInfo, bytes]] | bytes, exc: type[FormatError], *names: str) -> str:
    """Read; expect ``exc`` whose message contains every one of ``names``."""
    data = members if isinstance(members, bytes) else build(members)
    with pytest.raises(exc) as e:
        from_bytes(data, name="bad.tar")
    msg = str(e.value)
    for n in names:
        assert n in msg, msg
    return msg


@pytest.mark.parametrize("path", ["../x", "a/../../x", "a/../b", "./../x", "/../x"])
def test_dotdot_paths(path: str) -> None:
    refused([member(path, data=b"x")], UnsafePath, path, "bad.tar")


def test_nul_in_path() -> None:
    refused([member("a\x00b", data=b"", pax_headers={"path": "a\x00b"})], UnsafePath, "NUL")


def test_absolute_paths_are_normalised_not_refused() -> None:
    assert sorted(read([member("/abs/f", data=b"")])) == ["abs/f"]


@pytest.mark.parametrize("target", ["../..", "/etc", "sub", "."])
def test_entry_through_a_symlink_of_the_same_layer(target: str) -> None:
    refused([member("a", tarfile.SYMTYPE, linkname=target), member("a/x", data=b"pwned")],
            UnsafePath, "'a/x'", "climbs out through a symlink", "/a")
    # the other order too: the layer is one changeset, order does not save it
    refused([member("a/x", data=b"pwned"), member("a", tarfile.SYMTYPE, linkname=target)],
            UnsafePath, "'a/x'", "climbs out through a symlink")


def test_hard_link_to_a_missing_target() -> None:
    refused([member("l", tarfile.LNKTYPE, linkname="nothing")], FormatError, "'l'", "'nothing'", "earlier entry")


def test_hard_link_to_a_later_target() -> None:
    refused([member("l", tarfile.LNKTYPE, linkname="t"), member("t", data=b"t")], FormatError, "'l'", "'t'")


def test_hard_link_out_of_the_root() -> None:
    refused([member("l", tarfile.LNKTYPE, linkname="../etc/passwd")], UnsafePath, "'l'", "../etc/passwd")


def test_hard_link_to_a_directory() -> None:
    refused([member("d/", tarfile.DIRTYPE), member("l", tarfile.LNKTYPE, linkname="d")],
            FormatError, "'l'", "directory")


def test_hard_link_to_a_whiteout() -> None:
    refused([member(".wh.w"), member("l", tarfile.LNKTYPE, linkname=".wh.w")], FormatError, "'l'", "whiteout")


@pytest.mark.parametrize(("names", "path"), [
    (["a", "a"], "/a"), (["./a", "a"], "/a"), (["a", "/a"], "/a"), (["d/", "d"], "/d"), (["./", "/"], "/ "),
    ([".wh.a", "./.wh.a"], "whiteout of /a"), (["d/.wh..wh..opq", "./d/.wh..wh..opq"], "opaque marker for /d"),
], ids=lambda v: "+".join(v) if isinstance(v, list) else "")
def test_duplicates(names: list[str], path: str) -> None:
    ms = [member(n, tarfile.DIRTYPE if n.endswith("/") else tarfile.REGTYPE) for n in names]
    refused(ms, FormatError, "bad.tar", "duplicate", path)


@pytest.mark.parametrize("name", [".wh..", "d/.wh.."])
def test_whiteout_of_the_root_or_own_dir(name: str) -> None:
    refused([member(name)], UnsafePath, repr(name))


def test_whiteout_of_dotdot() -> None:
    refused([member("d/.wh...")], UnsafePath, "'d/.wh...'")


@pytest.mark.parametrize("name", [".wh.", "d/.wh."])
def test_bare_whiteout(name: str) -> None:
    refused([member(name)], FormatError, repr(name), "bare")


def test_entry_below_a_whiteout_name() -> None:
    refused([member(".wh.x/y", data=b"")], FormatError, "'.wh.x/y'")


def test_entry_below_a_file_of_the_same_layer() -> None:
    refused([member("f", data=b"x"), member("f/x", data=b"y")], FormatError, "'f/x'", "/f", "File")
    refused([member("f", data=b"x"), member("f/.wh.x")], FormatError, "'f/.wh.x'", "/f")
    refused([member("f", data=b"x"), member("f/.wh..wh..opq")], FormatError, "'f/.wh..wh..opq'", "/f")


def test_root_must_be_a_directory() -> None:
    refused([member(".", data=b"x")], FormatError, "root")


def test_gnu_sparse_old_format() -> None:
    ti, _ = member("sparse", tarfile.GNUTYPE_SPARSE)
    refused(build([(ti, b"")], format=tarfile.GNU_FORMAT), FormatError, "'sparse'", "sparse")


def test_gnu_sparse_pax_1_0() -> None:
    sparse_map = b"1\n0\n5\n".ljust(512, b"\x00")
    ti, data = member("GNUSparseFile.0/s", data=sparse_map + b"hello", pax_headers={
        "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s", "GNU.sparse.realsize": "5"})
    refused([(ti, data)], FormatError, "sparse")


def test_unsupported_entry_type() -> None:
    refused([member("vol", b"V")], FormatError, "'vol'", "unsupported")


def test_bad_metadata() -> None:
    refused([member("f", pax_headers={"mtime": "yesterday"})], FormatError, "'f'", "mtime")
    refused([member("f", pax_headers={"mtime": "9" * 5000})], FormatError, "'f'", "mtime")
    refused([member("f", pax_headers={"uid": str(2**40)})], FormatError, "'f'", "uid")
    refused([member("l", tarfile.SYMTYPE, linkname="")], FormatError, "'l'", "empty")
    refused([member("f", pax_headers={"LIBARCHIVE.xattr.user.x": "!!!"})], FormatError, "'f'", "base64")
    # Linux allows '=' in an xattr name, a PAX keyword cannot hold one: the canonical tar could not
    refused([member("f", pax_headers={"LIBARCHIVE.xattr.user.a%3Db": "eA=="})], FormatError, "'f'", "xattr name")


def test_truncated_tar() -> None:
    data = build([member("a", data=b"x" * 5000), member("b", data=b"y")])
    refused(data[:2000], FormatError, "bad.tar", "truncated")  # inside a's data
    refused(data[: 512 * 13 + 100], FormatError, "bad.tar", "header")  # inside b's pax header block


def test_corrupt_header_in_the_middle() -> None:
    data = bytearray(build([member("a", data=b"x"), member("b", data=b"y")]))
    data[512 * 2 + 200] ^= 0xFF  # b's header: its checksum no longer matches
    refused(bytes(data), FormatError, "bad.tar", "corrupt tar")


def test_not_a_tar() -> None:
    refused(b"hello, I am not a tar archive" * 40, FormatError, "bad.tar", "tar")


def test_corrupt_gzip() -> None:
    blob = bytearray(tar_bytes(every_kind(), "gzip"))
    blob[len(blob) // 2] ^= 0xFF
    refused(bytes(blob), FormatError, "bad.tar", "gzip")


def test_truncated_gzip() -> None:
    blob = tar_bytes(every_kind(), "gzip")
    refused(blob[: len(blob) - 5], FormatError, "bad.tar", "truncated gzip")


def test_zstd_frame_cut_short() -> None:
    blob = tar_bytes(every_kind(), "zstd")
    for cut in (len(blob) - 1, len(blob) // 2, 6):
        refused(blob[:cut], FormatError, "bad.tar", "truncated zstd")


def test_corrupt_zstd() -> None:
    blob = bytearray(tar_bytes(every_kind(), "zstd"))
    blob[len(blob) // 2] ^= 0xFF
    refused(bytes(blob), FormatError, "bad.tar", "zstd")


# --- fuzzing: damaged layers raise FormatError or read as some layer, nothing else ------------


@st.composite
def damaged(draw: Any) -> bytes:
    layer = draw(st_ufs.layers(max_entries=6))
    blob = bytearray(tar_bytes(layer, draw(st.sampled_from(COMPRESSIONS))))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        i = draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "flip" and blob:
            blob[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del blob[i:]
        elif op == "insert":
            blob[i:i] = draw(st.binary(min_size=1, max_size=600))
        elif op == "zero":
            blob[i:i + 512] = bytes(len(blob[i:i + 512]))
    return bytes(blob)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(damaged())
def test_fuzz_damaged_tars(blob: bytes) -> None:
    try:
        layer = from_bytes(blob)
    except FormatError:
        return
    assert isinstance(layer, Layer)
    _ = layer.digest  # whatever reads must also write


def test_read_entries_are_in_canonical_order() -> None:
    layer = read([member("b", data=b""), member("a/c", data=b""), member("a/", tarfile.DIRTYPE)])
    assert list(layer) == ["a", "a/c", "b"]


def test_module_read_returns_plain_entries() -> None:
    entries: dict[str, Entry] = T.read(io.BytesIO(tar_bytes(every_kind())))
    assert isinstance(entries, dict) and entries["etc/motd"] is WHITEOUT
