"""unionfs_sim.formats.oci: OCI image layouts, and Image.from_parts (images read from outside)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from unionfs_sim.errors import DigestMismatch, FormatError, UnsafePath
from unionfs_sim.formats import docker_archive, oci
from unionfs_sim.image import (
    MT_DOCKER_CONFIG,
    MT_DOCKER_LAYER,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_MANIFEST_LIST,
    MT_INDEX,
    MT_LAYER,
    MT_LAYER_GZIP,
    MT_MANIFEST,
    History,
    Image,
    ImageConfig,
    sha256,
)
from unionfs_sim.layer import BlobSource, Layer
from unionfs_sim.nodes import WHITEOUT, Device, Dir, Fifo, File, Hardlink, Symlink

# --- shared helpers (imported by the docker archive, registry and tools tests) ------------


def base_layer() -> Layer:
    """A layer with one of everything a layer can hold (no sockets: tars cannot)."""
    return Layer.from_dict({
        "bin/": Dir(mode=0o755),
        "bin/busybox": File(b"\x7fELF" + b"x" * 3000, mode=0o4755, uid=0, gid=0),
        "bin/sh": Symlink("busybox"),
        "bin/ash": Hardlink("bin/busybox"),
        "etc/": Dir(mode=0o755),
        "etc/hostname": b"box\n",
        "etc/motd": b"welcome\n",
        "etc/shadow": File(b"root:*:1::::::\n", mode=0o640, uid=0, gid=42),
        "home/user/": Dir(mode=0o700, uid=1000, gid=1000),
        "home/user/.profile": File(b"export A=1\n", uid=1000, gid=1000, mtime_ns=1_700_000_000_123_456_789),
        "run/initctl": Fifo(mode=0o600),
        "dev/null": Device("c", 1, 3, mode=0o666),
        "var/cache/apt/": Dir(),
        "var/cache/apt/pkgcache.bin": b"cache",
        "opt/x": File(b"attrs", xattrs={"user.comment": b"hello"}),
    })


def app_layer() -> Layer:
    """A layer that modifies, deletes (whiteout) and hides (opaque dir) base_layer's content."""
    return Layer.from_dict({
        "etc/hostname": b"web1\n",
        "etc/motd": WHITEOUT,
        "var/cache/": Dir(opaque=True),
        "var/cache/new": b"fresh",
        "app/": Dir(mode=0o750, uid=1000),
        "app/run.sh": File(b"#!/bin/sh\necho hi\n", mode=0o755),
    })


def sample_image(extra: Layer | None = None, arch: str = "amd64") -> Image:
    """A two-layer image with a full config and a history that has an empty_layer step."""
    layers = [base_layer(), app_layer()] + ([extra] if extra is not None else [])
    history = [History(created_by="ADD rootfs.tar /"), History(created_by="ENV A=1", empty_layer=True),
               History(created_by="COPY app /app", comment="app")]
    history += [History(created_by="RUN extra")] if extra is not None else []
    config = ImageConfig(cmd=["/app/run.sh"], env=["A=1", "PATH=/bin"], labels={"org.example": "yes"},
                         working_dir="/app", user="1000", exposed_ports=["80/tcp"], architecture=arch,
                         created="2024-01-01T00:00:00Z")
    return Image.from_layers(layers, config=config, history=history)


def fs_tree(fs: Any) -> dict[str, tuple[Any, ...]]:
    """A merged view (the model's ``image.fs``) as ``{path: (kind, mode, uid, gid, size, content)}``."""
    out: dict[str, tuple[Any, ...]] = {}
    for top, dirs, files in fs.walk("/"):
        for name in dirs + files:
            p = (top.rstrip("/") + "/" + name)
            out[p] = _entry(fs.lstat(p), lambda p=p: fs.read_bytes(p), lambda p=p: fs.readlink(p))
    return out


def dir_tree(root: str | os.PathLike[str]) -> dict[str, tuple[Any, ...]]:
    """A real directory as :func:`fs_tree` describes the model's view."""
    out: dict[str, tuple[Any, ...]] = {}
    root = os.fspath(root)
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(top, name)
            p = "/" + os.path.relpath(full, root)
            out[p] = _entry(os.lstat(full), lambda f=full: Path(f).read_bytes(), lambda f=full: os.readlink(f))
    return out


def _entry(st: os.stat_result, read: Callable[[], bytes], readlink: Callable[[], str]) -> tuple[Any, ...]:
    fmt = stat.S_IFMT(st.st_mode)
    kind = {stat.S_IFDIR: "d", stat.S_IFREG: "f", stat.S_IFLNK: "l", stat.S_IFIFO: "p",
            stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFSOCK: "s"}[fmt]
    mode = 0o777 if kind == "l" else stat.S_IMODE(st.st_mode)
    size = st.st_size if kind in ("f", "l") else None
    content: Any = None
    if kind == "f":
        content = read()
    elif kind == "l":
        content = readlink()
    elif kind in ("c", "b"):
        content = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return (kind, mode, st.st_uid, st.st_gid, size, content)


def assert_same_image(got: Image, want: Image) -> None:
    """Same identity (digest, id, diff_ids), same config and history, same merged tree."""
    assert got.digest == want.digest
    assert got.id == want.id
    assert got.diff_ids == want.diff_ids
    assert got.config == want.config
    assert got.history == want.history
    assert fs_tree(got.fs) == fs_tree(want.fs)


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest[7:]


def read_index(layout: Path) -> dict[str, Any]:
    return json.loads((layout / "index.json").read_bytes())


def write_index(layout: Path, manifests: list[dict[str, Any]]) -> None:
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}))


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    """Store ``data`` as a blob of ``layout``; its descriptor (no media type)."""
    d = sha256(data)
    blob(layout, d).write_bytes(data)
    return {"digest": d, "size": len(data)}


def manifest_of(layout: Path, tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index.json descriptor, parsed manifest) of ``tag``."""
    desc = next(d for d in read_index(layout)["manifests"]
                if d.get("annotations", {}).get(oci.ANNOTATION_REF_NAME) == tag)
    return desc, json.loads(blob(layout, desc["digest"]).read_bytes())


def retag_manifest(layout: Path, tag: str, manifest: dict[str, Any], media_type: str = MT_MANIFEST) -> str:
    """Store ``manifest`` and point ``tag`` (only) at it; its digest."""
    data = json.dumps(manifest).encode()
    d = put_blob(layout, data)
    write_index(layout, [{"mediaType": media_type, **d, "annotations": {oci.ANNOTATION_REF_NAME: tag}}])
    return d["digest"]  # type: ignore[no-any-return]


# --- round trips ---------------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path: Path) -> None:
    img = sample_image()
    digest = oci.save(img, tmp_path / "l", tag="1.0")
    assert digest == img.digest
    got = oci.load(tmp_path / "l", tag="1.0")
    assert_same_image(got, img)
    assert got.config_bytes == img.config_bytes and got.manifest_bytes == img.manifest_bytes
    assert got.chain_ids == img.chain_ids
    for a, b in zip(got.layers, img.layers, strict=True):
        assert a.digest == b.digest and a.source_diff_id == b.digest
        assert dict(a.to_dict()).keys() == dict(b.to_dict()).keys()


def test_layout_structure(tmp_path: Path) -> None:
    img = sample_image()
    layout = tmp_path / "l"
    oci.save(img, layout, tag="1.0")
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = read_index(layout)
    assert index["schemaVersion"] == 2
    assert index["manifests"] == [{"mediaType": MT_MANIFEST, "digest": img.digest, "size": len(img.manifest_bytes),
                                   "annotations": {"org.opencontainers.image.ref.name": "1.0"}}]
    names = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    want = sorted(d[7:] for d in [img.digest, img.id, *img.diff_ids])
    assert names == want  # no temporary files left behind
    for n in names:
        assert hashlib.sha256(blob(layout, "sha256:" + n).read_bytes()).hexdigest() == n
    assert blob(layout, img.id).read_bytes() == img.config_bytes


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_round_trip(tmp_path: Path, compression: str) -> None:
    img = sample_image()
    digest = oci.save(img, tmp_path / "l", tag="c", compression=compression)
    assert digest != img.digest  # new manifest (compressed blobs) ...
    got = oci.load(tmp_path / "l", tag="c")
    assert got.digest == digest
    assert got.id == img.id  # ... same config
    assert got.diff_ids == img.diff_ids
    assert fs_tree(got.fs) == fs_tree(img.fs)
    assert all(d["mediaType"] == f"{MT_LAYER}+{compression}" for d in got.layer_descriptors)
    # Saved again as it is (compression=None keeps its blobs): the same digest, nothing rewritten.
    assert oci.save(got, tmp_path / "again", tag="c") == digest
    assert oci.save(got, tmp_path / "plain", compression="uncompressed") == img.digest


def test_commit_on_loaded_image_keeps_lower_blobs(tmp_path: Path) -> None:
    img = sample_image()
    oci.save(img, tmp_path / "l", tag="c", compression="gzip")
    got = oci.load(tmp_path / "l", tag="c")
    c = got.container()
    c.fs.write_bytes("/added-by-commit", b"new")
    new = c.commit("on top of a loaded image")
    m = new.manifest_json()
    assert m["layers"][:-1] == got.manifest_json()["layers"]  # the gzip blobs, untouched
    assert m["layers"][-1]["digest"] == new.layers[-1].digest == new.diff_ids[-1]
    assert new.diff_ids[:-1] == got.diff_ids
    digest = oci.save(new, tmp_path / "l", tag="next")
    back = oci.load(tmp_path / "l", tag="next")
    assert back.digest == digest and back.diff_ids == new.diff_ids
    assert fs_tree(back.fs) == fs_tree(new.fs) and back.fs.read_bytes("/added-by-commit") == b"new"


def test_foreign_blobs_are_copied_back_while_they_exist(tmp_path: Path) -> None:
    """A layer tar another tool wrote (not canonical, other gzip settings) loads and is
    saved again byte for byte, so the image keeps its digests; with its file gone (or
    changed), the layer is written canonically and the digests change."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:  # not our PAX layout
        for name, data in (("z-last-first", b"1"), ("a/b", b"22")):
            info = tarfile.TarInfo(name)
            info.size, info.uname, info.mtime = len(data), "someone", 1_600_000_000
            t.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()
    gz = gzip.compress(tar, compresslevel=1, mtime=7)
    src = tmp_path / "src"
    oci.save(Image.from_layers([]), src, tag="seed")  # a layout to put blobs into
    layer_desc = {"mediaType": MT_LAYER_GZIP, **put_blob(src, gz)}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]}}).encode()
    retag_manifest(src, "foreign", {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                                    "config": {"mediaType": oci.MT_CONFIG, **put_blob(src, config)},
                                    "layers": [layer_desc]})
    img = oci.load(src, tag="foreign")
    assert img.layers[0].digest != sha256(tar)  # our canonical tar would differ
    assert img.layers[0].source_blob == BlobSource(str(blob(src, layer_desc["digest"])), layer_desc["digest"], len(gz))
    assert oci.save(img, tmp_path / "copy", tag="x") == img.digest
    assert blob(tmp_path / "copy", layer_desc["digest"]).read_bytes() == gz
    docker_archive.save(img, tmp_path / "d.tar", tags=["x:1"])  # the source tar, uncompressed
    with tarfile.open(tmp_path / "d.tar") as t:
        member = t.extractfile(f"blobs/sha256/{sha256(tar)[7:]}")
        assert member is not None and member.read() == tar
    d = docker_archive.load(tmp_path / "d.tar")
    assert d.id == img.id and d.diff_ids == img.diff_ids
    src_d = d.layers[0].source_blob
    assert src_d is not None
    with src_d.open() as f:
        assert f.read() == tar  # the member, in place
    docker_archive.save(d, tmp_path / "d3.tar", tags=["x:1"])  # docker -> docker keeps it too
    assert docker_archive.load(tmp_path / "d3.tar").id == img.id
    assert oci.save(d, tmp_path / "from-docker", tag="x") == d.digest
    blob(src, layer_desc["digest"]).write_bytes(gz[:-8] + bytes(8))  # no longer the blob it was
    digest = oci.save(img, tmp_path / "canonical", tag="x")
    back = oci.load(tmp_path / "canonical", tag="x")
    assert digest != img.digest and back.diff_ids == [img.layers[0].digest]
    assert fs_tree(back.fs) == fs_tree(img.fs)
    blob(src, layer_desc["digest"]).unlink()  # gone: a docker archive gets the canonical tar
    docker_archive.save(img, tmp_path / "d2.tar", tags=["x:1"])
    assert docker_archive.load(tmp_path / "d2.tar").diff_ids == [img.layers[0].digest]


def test_empty_image_round_trip(tmp_path: Path) -> None:
    img = Image.from_layers([], config=ImageConfig(cmd=["true"]))
    assert oci.save(img, tmp_path / "l") == img.digest
    assert_same_image(oci.load(tmp_path / "l"), img)


def test_saving_adds_images_and_moves_tags(tmp_path: Path) -> None:
    layout = tmp_path / "l"
    one, two = sample_image(), sample_image(Layer.from_dict({"extra": b"2"}))
    oci.save(one, layout, tag="1.0")
    oci.save(one, layout, tag="stable")
    oci.save(two, layout, tag="2.0")
    oci.save(two, layout, tag="2.0")  # idempotent
    assert oci.load(layout, tag="1.0") == one
    assert oci.load(layout, tag="2.0") == two
    assert len(read_index(layout)["manifests"]) == 3
    with pytest.raises(ValueError, match=r"'1\.0', '2\.0', 'stable'"):
        oci.load(layout)
    # Moving "stable" to two: the old descriptor (only there for the tag) goes away.
    oci.save(two, layout, tag="stable")
    assert oci.load(layout, tag="stable") == two
    assert oci.load(layout, tag="1.0") == one
    tags = sorted(d["annotations"][oci.ANNOTATION_REF_NAME] for d in read_index(layout)["manifests"])
    assert tags == ["1.0", "2.0", "stable"]
    # Untagged saves add an unannotated descriptor, once, and only for a manifest not
    # there already; a tag can also be a full name.
    oci.save(one, layout)
    assert len(read_index(layout)["manifests"]) == 3
    three = sample_image(Layer.from_dict({"extra": b"3"}))
    oci.save(three, layout)
    oci.save(three, layout)
    assert [d["digest"] for d in read_index(layout)["manifests"] if "annotations" not in d] == [three.digest]
    oci.save(one, layout, tag="example.com/app:1.0")
    assert oci.load(layout, tag="example.com/app:1.0") == one


def test_load_selects_by_digest_and_by_reference(tmp_path: Path) -> None:
    layout = tmp_path / "l"
    one, two = sample_image(), sample_image(Layer.from_dict({"extra": b"2"}))
    oci.save(one, layout, tag="docker.io/library/app:1.0")
    oci.save(two, layout, tag="2.0")
    assert oci.load(layout, tag=two.digest) == two
    assert oci.load(layout, tag="app:1.0") == one  # same reference, normalised


def test_unknown_tag_is_a_key_error_naming_it(tmp_path: Path) -> None:
    oci.save(sample_image(), tmp_path / "l", tag="1.0")
    with pytest.raises(KeyError) as e:
        oci.load(tmp_path / "l", tag="nope")
    assert "'nope'" in str(e.value) and "'1.0'" in str(e.value)
    assert isinstance(e.value, LookupError)


def test_bad_save_arguments(tmp_path: Path) -> None:
    img = sample_image()
    with pytest.raises(ValueError, match="compression"):
        oci.save(img, tmp_path / "l", compression="brotli")
    with pytest.raises(ValueError, match="tag"):
        oci.save(img, tmp_path / "l", tag="bad tag")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "precious.txt").write_text("keep")
    with pytest.raises(FormatError, match="oci-layout"):
        oci.save(img, tmp_path / "d")
    assert sorted(os.listdir(tmp_path / "d")) == ["precious.txt"]


def test_save_refuses_symlinked_blob_dir(tmp_path: Path) -> None:
    layout, outside = tmp_path / "l", tmp_path / "outside"
    outside.mkdir()
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    write_index(layout, [])
    (layout / "blobs").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symlink"):
        oci.save(sample_image(), layout)
    assert list(outside.iterdir()) == []


# --- foreign layers and layouts ---------------------------------------------------------------


def foreign_tar() -> bytes:
    """A layer tar another tool might write: user names, ``./`` prefixes, its own order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in (("./etc/", None), ("./etc/hosts", b"127.0.0.1 localhost\n"), ("./a.txt", b"a")):
            ti = tarfile.TarInfo(name)
            ti.uname = ti.gname = "root"
            ti.mtime = 1234567890
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def foreign_layout(layout: Path, tar: bytes, compress: bool = True, history: list[dict[str, Any]] | None = None,
                   manifest_type: str = MT_MANIFEST, config_type: str = "application/vnd.oci.image.config.v1+json",
                   layer_type: str = MT_LAYER_GZIP) -> tuple[str, str]:
    """A layout written by hand from one layer tar; (manifest digest, config digest)."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    data = gzip.compress(tar, mtime=0) if compress else tar
    layer = put_blob(layout, data)
    config: dict[str, Any] = {"architecture": "arm64", "os": "linux", "x-unknown-field": [1, 2],
                              "config": {"Env": ["PATH=/bin"]},
                              "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]}}
    if history is not None:
        config["history"] = history
    cfg = put_blob(layout, json.dumps(config, indent=2).encode())
    manifest = {"schemaVersion": 2, "mediaType": manifest_type, "config": {"mediaType": config_type, **cfg},
                "layers": [{"mediaType": layer_type, **layer}], "annotations": {"x": "y"}}
    return retag_manifest(layout, "t", manifest, manifest_type), cfg["digest"]


def test_foreign_layout_keeps_its_identity(tmp_path: Path) -> None:
    tar = foreign_tar()
    mdigest, cdigest = foreign_layout(tmp_path / "l", tar)
    img = oci.load(tmp_path / "l", tag="t")
    assert img.digest == mdigest and img.id == cdigest
    assert img.diff_ids == [sha256(tar)]
    assert img.layers[0].source_diff_id == sha256(tar) != img.layers[0].digest
    assert img.config.architecture == "arm64"
    assert b"x-unknown-field" in img.config_bytes and img.config_json()["x-unknown-field"] == [1, 2]
    assert img.history == (History(),)  # no history in the config: one default entry per layer
    assert img.fs.read_bytes("/etc/hosts") == b"127.0.0.1 localhost\n"
    # Saved elsewhere: the source blob is copied, so the identity stays.
    assert oci.save(img, tmp_path / "same", tag="t") == img.digest
    # With the source gone, the layer cannot be written back byte for byte, so the config
    # (diff_ids) and the manifest are rewritten, and the new layout loads consistently.
    shutil.rmtree(tmp_path / "l")
    new_digest = oci.save(img, tmp_path / "copy", tag="t")
    assert new_digest != img.digest
    again = oci.load(tmp_path / "copy", tag="t")
    assert again.digest == new_digest and again.id != img.id
    assert again.diff_ids == [img.layers[0].digest]
    assert json.loads(again.config_bytes)["x-unknown-field"] == [1, 2]
    assert fs_tree(again.fs) == fs_tree(img.fs)
    # A loaded image is an ordinary image otherwise.
    child = img.with_layer(Layer.from_dict({"b": b"b"}))
    assert child.diff_ids[0] == sha256(tar)


def test_docker_media_types(tmp_path: Path) -> None:
    tar = foreign_tar()
    mdigest, cdigest = foreign_layout(tmp_path / "l", tar, manifest_type=MT_DOCKER_MANIFEST,
                                      config_type=MT_DOCKER_CONFIG, layer_type=MT_DOCKER_LAYER)
    img = oci.load(tmp_path / "l", tag="t")
    assert (img.digest, img.id) == (mdigest, cdigest)
    assert img.fs.read_bytes("/a.txt") == b"a"


def test_zstd_and_uncompressed_foreign_layers(tmp_path: Path) -> None:
    tar = foreign_tar()
    foreign_layout(tmp_path / "plain", tar, compress=False, layer_type=MT_LAYER)
    assert oci.load(tmp_path / "plain").fs.read_bytes("/a.txt") == b"a"
    zstandard = pytest.importorskip("zstandard")
    layout = tmp_path / "z"
    foreign_layout(layout, tar, compress=False, layer_type=MT_LAYER + "+zstd")
    # Replace the plain blob by a zstd one (new manifest).
    _, m = manifest_of(layout, "t")
    z = put_blob(layout, zstandard.ZstdCompressor().compress(tar))
    m["layers"][0].update(z)
    retag_manifest(layout, "t", m)
    assert oci.load(layout, tag="t").fs.read_bytes("/etc/hosts") == b"127.0.0.1 localhost\n"


def test_history_with_empty_layers_and_too_many_entries(tmp_path: Path) -> None:
    hist = [{"created_by": "ADD x"}, {"created_by": "ENV a", "empty_layer": True}]
    foreign_layout(tmp_path / "ok", foreign_tar(), history=hist)
    img = oci.load(tmp_path / "ok")
    assert img.history == (History(created_by="ADD x"), History(created_by="ENV a", empty_layer=True))
    foreign_layout(tmp_path / "bad", foreign_tar(), history=[{"created_by": "a"}, {"created_by": "b"}])
    with pytest.raises(FormatError, match="2 non-empty entries for 1 layers"):
        oci.load(tmp_path / "bad")


# --- image indexes --------------------------------------------------------------------------


def index_layout(tmp_path: Path, nested: bool = False) -> tuple[Path, Image, Image]:
    """A layout whose tag "multi" names an image index of an amd64 and an arm64/v8 image."""
    layout = tmp_path / "l"
    amd, arm = sample_image(arch="amd64"), sample_image(Layer.from_dict({"arm": b"1"}), arch="arm64")
    oci.save(amd, layout)
    oci.save(arm, layout)
    entries = [
        {"mediaType": MT_MANIFEST, "digest": amd.digest, "size": len(amd.manifest_bytes),
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": MT_MANIFEST, "digest": arm.digest, "size": len(arm.manifest_bytes),
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    ]
    if nested:
        inner = put_blob(layout, json.dumps({"schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST_LIST,
                                             "manifests": entries[1:]}).encode())
        entries = [entries[0], {"mediaType": MT_DOCKER_MANIFEST_LIST, **inner}]
    idx = put_blob(layout, json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries}).encode())
    write_index(layout, [{"mediaType": MT_INDEX, **idx, "annotations": {oci.ANNOTATION_REF_NAME: "multi"}}])
    return layout, amd, arm


@pytest.mark.parametrize("nested", [False, True])
def test_image_index_by_platform(tmp_path: Path, nested: bool) -> None:
    layout, amd, arm = index_layout(tmp_path, nested)
    assert oci.load(layout, tag="multi", platform="linux/amd64") == amd
    assert oci.load(layout, platform="linux/arm64") == arm
    assert oci.load(layout, platform="linux/arm64/v8") == arm
    assert oci.load(layout, platform="linux/aarch64") == arm
    got = oci.load(layout, platform="linux/arm64")
    assert got.digest == arm.digest and got.id == arm.id
    with pytest.raises(ValueError, match="linux/amd64, linux/arm64/v8"):
        oci.load(layout, tag="multi")
    with pytest.raises(KeyError, match="linux/s390x"):
        oci.load(layout, platform="linux/s390x")
    with pytest.raises(ValueError, match="os/arch"):
        oci.load(layout, platform="amd64")


def test_index_with_one_image_and_attestations(tmp_path: Path) -> None:
    layout, amd, _ = index_layout(tmp_path)
    att = put_blob(layout, json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                                  **put_blob(layout, b"{}")}, "layers": []}).encode())
    entries = [
        {"mediaType": MT_MANIFEST, "digest": amd.digest, "size": len(amd.manifest_bytes)},  # no platform field
        {"mediaType": MT_MANIFEST, **att, "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        {"mediaType": "application/vnd.example.sbom", **put_blob(layout, b"sbom")},
    ]
    idx = put_blob(layout, json.dumps({"schemaVersion": 2, "manifests": entries}).encode())
    write_index(layout, [{"mediaType": MT_INDEX, **idx}])
    assert oci.load(layout) == amd
    assert oci.load(layout, platform="linux/amd64") == amd


def test_platform_of_a_plain_manifest_is_checked(tmp_path: Path) -> None:
    oci.save(sample_image(), tmp_path / "l")
    assert oci.load(tmp_path / "l", platform="linux/amd64").config.architecture == "amd64"
    with pytest.raises(KeyError, match="linux/amd64"):
        oci.load(tmp_path / "l", platform="linux/arm64")


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Image]:
    img = sample_image()
    oci.save(img, tmp_path / "l", tag="1.0")
    return tmp_path / "l", img


def test_corrupt_layer_blob_names_the_blob(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    f = blob(layout, img.diff_ids[1])
    data = bytearray(f.read_bytes())
    data[700] ^= 0xFF  # inside a file's data: the tar still parses
    f.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch) as e:
        oci.load(layout)
    assert img.diff_ids[1] in str(e.value) and str(f) in str(e.value)


def test_corrupt_tar_header_reports_the_digest_mismatch(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    f = blob(layout, img.diff_ids[0])
    data = bytearray(f.read_bytes())
    data[0:20] = b"X" * 20  # breaks the first header
    f.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch) as e:
        oci.load(layout)
    assert img.diff_ids[0] in str(e.value) and str(f) in str(e.value)


def test_size_mismatch(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    f = blob(layout, img.diff_ids[0])
    with open(f, "ab") as fh:
        fh.write(b"\0" * 512)
    with pytest.raises(DigestMismatch, match="bytes, its descriptor says") as e:
        oci.load(layout)
    assert img.diff_ids[0] in str(e.value)


def test_corrupt_config_and_manifest(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    f = blob(layout, img.id)
    good = f.read_bytes()
    f.write_bytes(good.replace(b'"amd64"', b'"arm64"'))  # same size, other digest
    with pytest.raises(DigestMismatch, match=img.id):
        oci.load(layout)
    f.write_bytes(good)
    m = blob(layout, img.digest)
    m.write_bytes(m.read_bytes()[:-1] + b" ")
    with pytest.raises(DigestMismatch, match=img.digest):
        oci.load(layout)


def test_missing_blob_names_the_file(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    blob(layout, img.diff_ids[1]).unlink()
    with pytest.raises(FormatError, match="missing blob") as e:
        oci.load(layout)
    assert str(blob(layout, img.diff_ids[1])) in str(e.value)


@pytest.mark.parametrize("name", ["index.json", "oci-layout"])
def test_missing_or_bad_json_files(saved: tuple[Path, Image], name: str) -> None:
    layout, _ = saved
    (layout / name).write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON") as e:
        oci.load(layout)
    assert str(layout / name) in str(e.value)
    (layout / name).unlink()
    with pytest.raises(FormatError, match="missing") as e:
        oci.load(layout)
    assert str(layout / name) in str(e.value)


def test_bad_json_blob(saved: tuple[Path, Image]) -> None:
    layout, _ = saved
    d = retag_manifest(layout, "x", {"schemaVersion": 2})  # valid JSON, no config
    with pytest.raises(FormatError, match="descriptor"):
        oci.load(layout, tag="x")
    bad = put_blob(layout, b"[1, 2")
    write_index(layout, [{"mediaType": MT_MANIFEST, **bad}])
    with pytest.raises(FormatError, match="not valid JSON") as e:
        oci.load(layout)
    assert str(blob(layout, bad["digest"])) in str(e.value)
    assert d


def test_unknown_layer_media_type(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    m = img.manifest_json()
    m["layers"][0]["mediaType"] = "application/vnd.example.layer.v1.squashfs"
    retag_manifest(layout, "1.0", m)
    with pytest.raises(FormatError, match="application/vnd.example.layer.v1.squashfs"):
        oci.load(layout)


def test_not_an_image(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    m = img.manifest_json()
    m["config"]["mediaType"] = "application/vnd.example.artifact+json"
    retag_manifest(layout, "1.0", m)
    with pytest.raises(FormatError, match="not an image config"):
        oci.load(layout)
    write_index(layout, [{"mediaType": "application/vnd.example.thing", "digest": img.digest,
                          "size": len(img.manifest_bytes)}])
    with pytest.raises(FormatError, match="neither an image manifest nor an index"):
        oci.load(layout)


def test_diff_id_mismatch(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    config = img.config_json()
    config["rootfs"]["diff_ids"][0] = img.diff_ids[1]
    cfg = put_blob(layout, json.dumps(config).encode())
    m = img.manifest_json()
    m["config"].update(cfg)
    retag_manifest(layout, "1.0", m)
    with pytest.raises(DigestMismatch) as e:
        oci.load(layout)
    assert str(blob(layout, img.diff_ids[0])) in str(e.value)


def test_layer_count_mismatch(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    m = img.manifest_json()
    m["layers"] = m["layers"][:1]
    retag_manifest(layout, "1.0", m)
    with pytest.raises(FormatError, match="rootfs.diff_ids lists 2 layers"):
        oci.load(layout)


@pytest.mark.parametrize("digest", ["sha256:../../../etc/passwd", "sha512:" + "0" * 128, "sha256:" + "A" * 64, 7])
def test_malformed_digests_never_become_paths(saved: tuple[Path, Image], digest: object,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    layout, img = saved
    opened: list[str] = []
    real_open = open

    def spy(file: Any, *a: Any, **k: Any) -> Any:
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    m = img.manifest_json()
    m["layers"][0]["digest"] = digest
    retag_manifest(layout, "1.0", m)
    with pytest.raises(FormatError, match="digest"):
        oci.load(layout)
    assert all(str(layout) in p for p in opened)
    assert not any("passwd" in p for p in opened)


def test_bad_descriptor_size(saved: tuple[Path, Image]) -> None:
    layout, img = saved
    write_index(layout, [{"mediaType": MT_MANIFEST, "digest": img.digest, "size": -1}])
    with pytest.raises(FormatError, match="bad size"):
        oci.load(layout)


def test_unsupported_layout_version(saved: tuple[Path, Image]) -> None:
    layout, _ = saved
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(FormatError, match="imageLayoutVersion"):
        oci.load(layout)


def test_empty_layout(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    write_index(tmp_path, [])
    with pytest.raises(FormatError, match="no image"):
        oci.load(tmp_path)


# --- Image.from_parts ----------------------------------------------------------------------------


def test_from_parts_keeps_bytes_and_checks_them() -> None:
    img = sample_image()
    same = Image.from_parts(img.layers, img.config_bytes, img.manifest_bytes)
    assert (same.id, same.digest, same.diff_ids, same.history, same.config) == (
        img.id, img.digest, img.diff_ids, img.history, img.config)
    pretty = json.dumps(img.config_json(), indent=4).encode()
    other = Image.from_parts(img.layers, pretty)
    assert other.id == sha256(pretty) and other.config == img.config
    assert other.layer_descriptors == img.layer_descriptors  # default: uncompressed blobs
    with pytest.raises(DigestMismatch, match="config descriptor"):
        Image.from_parts(img.layers, pretty, img.manifest_bytes)
    with pytest.raises(DigestMismatch, match="layer 0"):
        Image.from_parts(list(reversed(img.layers)), img.config_bytes)
    with pytest.raises(FormatError, match="2 diff_ids for 1 layers"):
        Image.from_parts(img.layers[:1], img.config_bytes)
    with pytest.raises(FormatError, match="not valid JSON"):
        Image.from_parts(img.layers, b"{")
    with pytest.raises(FormatError, match="rootfs"):
        Image.from_parts([], b'{"rootfs": {"type": "zfs"}}')
    descs = [{"mediaType": MT_LAYER_GZIP, "digest": "sha256:" + "1" * 64, "size": 5}] * 2
    custom = Image.from_parts(img.layers, img.config_bytes, layer_descriptors=descs)
    assert custom.layer_descriptors == descs and custom.manifest_json()["layers"] == descs
    assert custom.id == img.id and custom.digest != img.digest


def test_opaque_marker_without_its_directory_keeps_the_lower_metadata(tmp_path: Path) -> None:
    """containerd (and umoci) keep the lower directory's metadata for such a marker."""
    base = Layer.from_dict({"var/cache/": Dir(mode=0o710, uid=5, gid=6), "var/cache/old": b"old"})
    top = io.BytesIO()
    with tarfile.open(fileobj=top, mode="w") as tf:
        for name, data in (("var/cache/.wh..wh..opq", b""), ("var/cache/new", b"new")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    layout = tmp_path / "l"
    img = Image.from_layers([base])
    oci.save(img, layout)
    top_blob = put_blob(layout, top.getvalue())
    config = img.config_json()
    config["rootfs"]["diff_ids"].append(top_blob["digest"])
    config["history"].append({})
    cfg = put_blob(layout, json.dumps(config).encode())
    m = img.manifest_json()
    m["config"].update(cfg)
    m["layers"].append({"mediaType": MT_LAYER, **top_blob})
    retag_manifest(layout, "t", m)
    got = oci.load(layout)
    assert got.fs.listdir("/var/cache") == ["new"]
    st = got.fs.lstat("/var/cache")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 5, 6)
    node = got.layers[1]["var/cache"]
    assert isinstance(node, Dir) and node.opaque
