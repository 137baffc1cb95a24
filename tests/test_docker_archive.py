"""unionfs_sim.formats.docker_archive: ``docker save`` archives, current and legacy formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from unionfs_sim.errors import DigestMismatch, FormatError, UnsafePath
from unionfs_sim.formats import docker_archive, oci
from unionfs_sim.image import MT_INDEX, MT_LAYER_GZIP, MT_MANIFEST, Image, ImageConfig, sha256
from unionfs_sim.layer import Layer

from .test_oci import assert_same_image, foreign_tar, fs_tree, sample_image


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {ti.name: ti for ti in tf.getmembers()}


def read_member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def saved_bytes(*args: Any, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    docker_archive.save(*args[:1], buf, *args[1:], **kwargs)
    return buf.getvalue()


def build_tar(files: list[tuple[str, bytes | None, dict[str, Any]]]) -> bytes:
    """A tar of ``(name, data or None for a dir, TarInfo attributes)``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, attrs in files:
            ti = tarfile.TarInfo(name)
            for k, v in attrs.items():
                setattr(ti, k, v)
            if data is None and "type" not in attrs:
                ti.type = tarfile.DIRTYPE
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def layer_tar(layer: Layer) -> bytes:
    buf = io.BytesIO()
    layer.to_tar(buf)
    return buf.getvalue()


# --- the current format -------------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path: Path) -> None:
    img = sample_image()
    docker_archive.save(img, tmp_path / "img.tar", tags=["example.com/app:1.0"])
    got = docker_archive.load(tmp_path / "img.tar")
    assert_same_image(got, img)
    assert got.config_bytes == img.config_bytes and got.manifest_bytes == img.manifest_bytes


def test_archive_layout(tmp_path: Path) -> None:
    img = sample_image()
    data = saved_bytes(img, tags=["example.com/app:1.0", "nginx", "docker.io/library/nginx:1.25"])
    ms = members(data)
    hexes = sorted(d[7:] for d in [img.id, img.digest, *img.diff_ids])
    assert sorted(ms) == sorted(["blobs", "blobs/sha256", *(f"blobs/sha256/{h}" for h in hexes), "index.json",
                                 "manifest.json", "oci-layout", "repositories"])
    assert all(ti.mtime == 0 and ti.uid == 0 and ti.gid == 0 for ti in ms.values())
    manifest = json.loads(read_member(data, "manifest.json"))
    assert manifest == [{
        "Config": f"blobs/sha256/{img.id[7:]}",
        "RepoTags": ["example.com/app:1.0", "nginx:latest", "nginx:1.25"],
        "Layers": [f"blobs/sha256/{d[7:]}" for d in img.diff_ids],
    }]
    for d, layer in zip(img.diff_ids, img.layers, strict=True):  # uncompressed layers, named by diff_id
        assert read_member(data, f"blobs/sha256/{d[7:]}") == layer_tar(layer)
    assert json.loads(read_member(data, "repositories")) == {
        "example.com/app": {"1.0": img.diff_ids[-1][7:]},
        "nginx": {"latest": img.diff_ids[-1][7:], "1.25": img.diff_ids[-1][7:]},
    }
    index = json.loads(read_member(data, "index.json"))
    assert index["mediaType"] == MT_INDEX
    assert [d["annotations"] for d in index["manifests"]] == [
        {"io.containerd.image.name": "example.com/app:1.0", "org.opencontainers.image.ref.name": "1.0"},
        {"io.containerd.image.name": "docker.io/library/nginx:latest", "org.opencontainers.image.ref.name": "latest"},
        {"io.containerd.image.name": "docker.io/library/nginx:1.25", "org.opencontainers.image.ref.name": "1.25"},
    ]
    assert {d["digest"] for d in index["manifests"]} == {img.digest}
    assert json.loads(read_member(data, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    assert len(data) % tarfile.RECORDSIZE == 0


def test_archive_is_an_oci_layout(tmp_path: Path) -> None:
    img = sample_image()
    docker_archive.save(img, tmp_path / "img.tar", tags=["app:2"])
    with tarfile.open(tmp_path / "img.tar") as tf:
        tf.extractall(tmp_path / "x", filter="data")
    got = oci.load(tmp_path / "x", tag="2")
    assert got.digest == img.digest and got.id == img.id


def test_reproducible() -> None:
    assert saved_bytes(sample_image(), tags=["a:1"]) == saved_bytes(sample_image(), tags=["a:1"])


def test_untagged(tmp_path: Path) -> None:
    img = sample_image()
    data = saved_bytes(img)
    assert json.loads(read_member(data, "manifest.json"))[0]["RepoTags"] is None
    assert "repositories" not in members(data)
    assert_same_image(docker_archive.load(io.BytesIO(data)), img)


def test_several_images(tmp_path: Path) -> None:
    one = sample_image()
    two = sample_image(Layer.from_dict({"two": b"2"}))
    three = Image.from_layers([Layer.from_dict({"three": b"3"})])
    path = tmp_path / "all.tar"
    docker_archive.save([one, two, three], path, tags={"app:1": one, "example.com/app:2": two, "app:latest": one})
    ms = members(path.read_bytes())
    shared = [n for n in ms if n.endswith(one.diff_ids[0][7:])]
    assert len(shared) == 1  # a layer shared by two images is written once
    manifest = json.loads(read_member(path.read_bytes(), "manifest.json"))
    assert [m["RepoTags"] for m in manifest] == [["app:1", "app:latest"], ["example.com/app:2"], None]
    assert_same_image(docker_archive.load(path, tag="app:1"), one)
    assert docker_archive.load(path, tag="app") == one  # "app" is app:latest
    assert docker_archive.load(path, tag="docker.io/library/app:latest") == one
    assert docker_archive.load(path, tag="example.com/app:2") == two
    assert docker_archive.load(path, tag=three.id) == three  # by image id
    with pytest.raises(ValueError, match=r"'app:1', 'app:latest', 'example.com/app:2' and 1 untagged"):
        docker_archive.load(path)
    with pytest.raises(KeyError, match="'app:3'") as e:
        docker_archive.load(path, tag="app:3")
    assert "example.com/app:2" in str(e.value)


def test_file_objects_and_streams(tmp_path: Path) -> None:
    img = sample_image()
    data = saved_bytes(img, tags=["a"])

    class Pipe(io.RawIOBase):
        """A non-seekable stream."""

        def __init__(self, b: bytes) -> None:
            self.b = io.BytesIO(b)

        def readable(self) -> bool:
            return True

        def readinto(self, buf: Any) -> int:
            chunk = self.b.read(len(buf))
            buf[: len(chunk)] = chunk
            return len(chunk)

    assert docker_archive.load(Pipe(data)) == img
    assert docker_archive.load(io.BytesIO(gzip.compress(data))) == img  # docker save | gzip
    (tmp_path / "a.tar.gz").write_bytes(gzip.compress(data))
    assert docker_archive.load(tmp_path / "a.tar.gz") == img

    class WriteOnly(io.RawIOBase):
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.parts.append(bytes(b))
            return len(b)

    out = WriteOnly()
    docker_archive.save(img, out, tags=["a"])
    assert b"".join(out.parts) == data


def test_compressed_and_foreign_images_are_saved_uncompressed(tmp_path: Path) -> None:
    img = sample_image()
    oci.save(img, tmp_path / "l", tag="gz", compression="gzip")
    gz = oci.load(tmp_path / "l", tag="gz")
    docker_archive.save(gz, tmp_path / "a.tar", tags=["x"])
    got = docker_archive.load(tmp_path / "a.tar")
    assert got.id == img.id and got.digest == img.digest  # the uncompressed manifest again
    assert fs_tree(got.fs) == fs_tree(img.fs)


def test_containerd_style_archive_with_gzip_layers(tmp_path: Path) -> None:
    """Docker with the containerd store saves blobs as they are: gzip layers named by blob digest."""
    img = sample_image()
    layout = tmp_path / "l"
    digest = oci.save(img, layout, tag="1", compression="gzip")
    gz = oci.load(layout, tag="1")
    manifest = [{"Config": f"blobs/sha256/{gz.id[7:]}", "RepoTags": ["app:1"],
                 "Layers": [f"blobs/sha256/{d['digest'][7:]}" for d in gz.layer_descriptors]}]
    (layout / "manifest.json").write_text(json.dumps(manifest))
    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        for name in sorted(os.listdir(layout)):
            tf.add(layout / name, arcname=name)
    got = docker_archive.load(tmp_path / "a.tar")
    assert got.digest == digest and got.id == img.id
    assert got.layer_descriptors[0]["mediaType"] == MT_LAYER_GZIP
    assert fs_tree(got.fs) == fs_tree(img.fs)


def test_foreign_layer_keeps_its_diff_id() -> None:
    tar = foreign_tar()
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]}}
    cfg = json.dumps(config).encode()
    data = build_tar([
        ("manifest.json", json.dumps([{"Config": f"{sha256(cfg)[7:]}.json", "RepoTags": ["f:1"],
                                       "Layers": ["abc/layer.tar"]}]).encode(), {}),
        (f"{sha256(cfg)[7:]}.json", cfg, {}),
        ("abc/", None, {}),
        ("abc/layer.tar", tar, {}),
    ])
    img = docker_archive.load(io.BytesIO(data))
    assert img.id == sha256(cfg) and img.diff_ids == [sha256(tar)]
    # Saving it re-serialises the layer canonically: new diff_id, new config, consistent archive.
    again = docker_archive.load(io.BytesIO(saved_bytes(img, tags=["f:1"])))
    assert again.diff_ids == [img.layers[0].digest] and again.id != img.id
    assert fs_tree(again.fs) == fs_tree(img.fs)


def test_bad_save_arguments() -> None:
    one, two = sample_image(), sample_image(Layer.from_dict({"x": b"x"}))
    with pytest.raises(ValueError, match="which image"):
        saved_bytes([one, two], tags=["a:1"])
    with pytest.raises(ValueError, match="digests"):
        saved_bytes(one, tags=["a@sha256:" + "0" * 64])
    with pytest.raises(ValueError, match="no layers"):
        saved_bytes(Image.from_layers([], config=ImageConfig()))
    with pytest.raises(ValueError):
        saved_bytes(one, tags=["Bad/Name"])
    with pytest.raises(ValueError, match="no images"):
        saved_bytes([])


def test_save_to_a_path_is_atomic(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    bad = sample_image()
    dest = tmp_path / "img.tar"
    dest.write_bytes(b"old")

    def explode(*a: Any, **k: Any) -> None:
        raise Boom

    layer = bad.layers[0]
    layer_type = type(layer)
    orig = layer_type.to_tar
    try:
        layer_type.to_tar = explode  # type: ignore[method-assign]
        with pytest.raises(Boom):
            docker_archive.save(bad, dest, tags=["a"])
    finally:
        layer_type.to_tar = orig  # type: ignore[method-assign]
    assert dest.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["img.tar"]


# --- the legacy format (Docker <= 24) ------------------------------------------------------------


def legacy_archive(one: Image, two: Image) -> bytes:
    """What ``docker save`` of Docker 24 writes for two images sharing their base layer:
    ``<v1id>/layer.tar`` (the shared one once; the other image's entry a symlink to it),
    ``<v1id>/json``, ``<v1id>/VERSION``, ``<config hex>.json``, manifest.json, repositories."""
    files: list[tuple[str, bytes | None, dict[str, Any]]] = []
    items = []
    written: dict[str, str] = {}
    for img, tag in ((one, "one:1"), (two, "reg.example.com:5000/two:latest")):
        parent = ""
        layer_paths = []
        for layer, diff_id in zip(img.layers, img.diff_ids, strict=True):
            v1 = hashlib.sha256(f"{tag} {diff_id} {parent}".encode()).hexdigest()
            files.append((f"{v1}/", None, {"mode": 0o755}))
            files.append((f"{v1}/VERSION", b"1.0", {}))
            files.append((f"{v1}/json", json.dumps({"id": v1, "parent": parent}).encode(), {}))
            if diff_id in written:
                files.append((f"{v1}/layer.tar", None, {"type": tarfile.SYMTYPE,
                                                        "linkname": f"../{written[diff_id]}/layer.tar"}))
            else:
                files.append((f"{v1}/layer.tar", layer_tar(layer), {}))
                written[diff_id] = v1
            layer_paths.append(f"{v1}/layer.tar")
            parent = v1
        files.append((f"{img.id[7:]}.json", img.config_bytes, {}))
        items.append({"Config": f"{img.id[7:]}.json", "RepoTags": [tag], "Layers": layer_paths})
    files.append(("manifest.json", json.dumps(items).encode(), {}))
    files.append(("repositories", json.dumps({"one": {"1": "x"}}).encode(), {}))
    return build_tar(files)


def test_legacy_format() -> None:
    one = sample_image()
    two = sample_image(Layer.from_dict({"two": b"2"}))
    data = legacy_archive(one, two)
    got_one = docker_archive.load(io.BytesIO(data), tag="one:1")
    got_two = docker_archive.load(io.BytesIO(data), tag="reg.example.com:5000/two")
    # No manifest in a legacy archive: the image gets the uncompressed OCI manifest, which
    # for canonical layers is the one the model computes, so even the digest matches.
    assert_same_image(got_one, one)
    assert_same_image(got_two, two)
    assert got_two.layers[0].digest == one.layers[0].digest  # read through the symlink


# --- bad input -------------------------------------------------------------------------------------


def current_archive(manifest: list[dict[str, Any]], extra: list[tuple[str, bytes | None, dict[str, Any]]]) -> bytes:
    return build_tar([("manifest.json", json.dumps(manifest).encode(), {}), *extra])


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "blobs/../../../etc/passwd",
                                  "..\\..\\etc\\passwd"])
def test_path_traversal_in_layers(path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    img = sample_image()
    cfg = img.config_bytes
    data = current_archive([{"Config": f"blobs/sha256/{img.id[7:]}", "RepoTags": ["a:1"],
                             "Layers": [path, path]}], [(f"blobs/sha256/{img.id[7:]}", cfg, {})])
    (tmp_path / "a.tar").write_bytes(data)
    opened: list[str] = []
    real_open = open

    def spy(file: Any, *a: Any, **k: Any) -> Any:
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    with pytest.raises(UnsafePath, match="passwd"):
        docker_archive.load(tmp_path / "a.tar")
    assert not any("passwd" in p for p in opened)


def test_path_traversal_in_config() -> None:
    data = current_archive([{"Config": "../config.json", "RepoTags": None, "Layers": []}], [])
    with pytest.raises(UnsafePath, match="config.json"):
        docker_archive.load(io.BytesIO(data))


def test_symlink_member_leaving_the_archive() -> None:
    img = Image.from_layers([Layer.from_dict({"a": b"a"})])
    data = current_archive(
        [{"Config": "c.json", "RepoTags": None, "Layers": ["x/layer.tar"]}],
        [("c.json", img.config_bytes, {}),
         ("x/layer.tar", None, {"type": tarfile.SYMTYPE, "linkname": "../../../../etc/passwd"})])
    with pytest.raises(UnsafePath, match="leaves the archive root"):
        docker_archive.load(io.BytesIO(data))
    data = current_archive(
        [{"Config": "c.json", "RepoTags": None, "Layers": ["x/layer.tar"]}],
        [("c.json", img.config_bytes, {}),
         ("x/layer.tar", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})])
    with pytest.raises(UnsafePath, match="absolute"):
        docker_archive.load(io.BytesIO(data))
    loop = current_archive(
        [{"Config": "c.json", "RepoTags": None, "Layers": ["x"]}],
        [("c.json", img.config_bytes, {}), ("x", None, {"type": tarfile.SYMTYPE, "linkname": "x"})])
    with pytest.raises(FormatError, match="too many levels"):
        docker_archive.load(io.BytesIO(loop))


def test_layer_not_matching_its_diff_id_names_the_file() -> None:
    img = sample_image()
    data = bytearray(saved_bytes(img, tags=["a"]))
    name = f"blobs/sha256/{img.diff_ids[1][7:]}"
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tf:
        off = tf.getmember(name).offset_data
    data[off + 1500] ^= 0xFF
    with pytest.raises(DigestMismatch) as e:
        docker_archive.load(io.BytesIO(bytes(data)))
    assert name in str(e.value) and img.diff_ids[1] in str(e.value)


def test_config_not_matching_its_name() -> None:
    img = sample_image()
    other = sample_image(arch="arm64").config_bytes
    data = current_archive([{"Config": f"{img.id[7:]}.json", "RepoTags": None, "Layers": []}],
                           [(f"{img.id[7:]}.json", other, {})])
    with pytest.raises(DigestMismatch, match=img.id[7:]):
        docker_archive.load(io.BytesIO(data))


def test_missing_and_malformed_files() -> None:
    img = sample_image()
    with pytest.raises(FormatError, match="manifest.json: missing"):
        docker_archive.load(io.BytesIO(build_tar([("x", b"x", {})])))
    with pytest.raises(FormatError, match="manifest.json: not valid JSON"):
        docker_archive.load(io.BytesIO(build_tar([("manifest.json", b"[{", {})])))
    with pytest.raises(FormatError, match="non-empty JSON list"):
        docker_archive.load(io.BytesIO(build_tar([("manifest.json", b"{}", {})])))
    data = current_archive([{"Config": "c.json", "RepoTags": None, "Layers": ["l/layer.tar", "m/layer.tar"]}],
                           [("c.json", img.config_bytes, {}), ("l/layer.tar", layer_tar(img.layers[0]), {})])
    with pytest.raises(FormatError, match="m/layer.tar: no such file"):
        docker_archive.load(io.BytesIO(data))
    data = current_archive([{"Config": "c.json", "RepoTags": None, "Layers": ["l/layer.tar"]}],
                           [("c.json", img.config_bytes, {}), ("l/layer.tar", layer_tar(img.layers[0]), {})])
    with pytest.raises(FormatError, match="rootfs.diff_ids lists 2 layers, manifest.json lists 1"):
        docker_archive.load(io.BytesIO(data))
    data = current_archive([{"Config": "c.json", "RepoTags": None, "Layers": []}], [("c.json", b"{oops", {})])
    with pytest.raises(FormatError, match="c.json: not valid JSON"):
        docker_archive.load(io.BytesIO(data))
    data = current_archive([{"Config": "d", "RepoTags": None, "Layers": []}], [("d", None, {})])
    with pytest.raises(FormatError, match="not a regular file"):
        docker_archive.load(io.BytesIO(data))
    with pytest.raises(FormatError, match="not a tar"):
        docker_archive.load(io.BytesIO(b"hello" * 300))


def test_index_manifest_that_does_not_match_is_ignored() -> None:
    """Docker 25.0.0 wrote manifests without layers: then the image gets its own manifest."""
    img = sample_image()
    data = saved_bytes(img, tags=["a"])
    broken = json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                         "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                    "digest": img.id, "size": len(img.config_bytes)}, "layers": []}).encode()
    files: list[tuple[str, bytes | None, dict[str, Any]]] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for ti in tf.getmembers():
            if ti.isdir():
                continue
            f = tf.extractfile(ti)
            assert f is not None
            body = f.read()
            if ti.name == "index.json":
                body = json.dumps({"schemaVersion": 2, "manifests": [
                    {"mediaType": MT_MANIFEST, "digest": sha256(broken), "size": len(broken)}]}).encode()
            files.append((ti.name, body, {}))
    files.append((f"blobs/sha256/{sha256(broken)[7:]}", broken, {}))
    got = docker_archive.load(io.BytesIO(build_tar(files)))
    assert got.digest == img.digest


def test_not_a_tar_is_one_line(tmp_path: Path) -> None:
    """A file that is no archive at all: one line naming it (tarfile lists each of the four
    methods it tried over five lines, which the CLI printed as they were)."""
    bad = tmp_path / "junk.tar"
    bad.write_bytes(b"junk\n")
    with pytest.raises(FormatError) as e:
        docker_archive.load(str(bad))
    assert str(e.value) == f"{bad}: not a tar archive (plain, gzip, bzip2 or xz)"
