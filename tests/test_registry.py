"""unionfs_sim.registry: repositories, mutable tags, immutable digests, one blob store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from unionfs_sim.formats import oci
from unionfs_sim.image import Image
from unionfs_sim.layer import Layer
from unionfs_sim.reference import Reference
from unionfs_sim.registry import Registry

from .test_oci import fs_tree, sample_image

REPO = "example.com/team/app"
NewRegistry = Callable[[], Registry]


@pytest.fixture(params=["memory", "disk"])
def new_registry(request: pytest.FixtureRequest, tmp_path: Path) -> NewRegistry:
    """Makes the registry under test: in memory, or kept in a directory (every test runs on both)."""
    if request.param == "memory":
        return Registry
    return lambda: Registry(root=tmp_path / "store")


@pytest.fixture
def images() -> tuple[Image, Image]:
    """Two images sharing their two bottom layers (same Layer objects)."""
    one = sample_image()
    two = one.with_layer(Layer.from_dict({"v2": b"2"}))
    return one, two


def test_push_pull_resolve(new_registry: NewRegistry, images: tuple[Image, Image]) -> None:
    one, two = images
    reg = new_registry()
    assert reg.push(one, f"{REPO}:1.0") == one.digest
    assert reg.push(two, Reference.parse(REPO)) == two.digest  # no tag: latest
    assert reg.pull(f"{REPO}:1.0") is one  # its layers are the stored ones: the same object
    assert reg.pull(REPO) is two
    assert reg.pull(f"{REPO}:latest") is two
    assert reg.pull(f"{REPO}@{one.digest}") is one
    assert reg.resolve(f"{REPO}:1.0") == one.digest
    assert reg.resolve(f"{REPO}:1.0@{two.digest}") == two.digest  # the digest wins
    assert reg.tags(REPO) == ["1.0", "latest"]
    assert reg.repositories() == [REPO]
    assert reg.manifests(REPO) == sorted([one.digest, two.digest])


def test_push_by_digest(new_registry: NewRegistry, images: tuple[Image, Image]) -> None:
    one, two = images
    reg = new_registry()
    assert reg.push(one, f"{REPO}@{one.digest}") == one.digest
    with pytest.raises(KeyError):
        reg.tags("docker.io/library/nothing")
    assert reg.tags(REPO) == []  # a digest sets no tag
    assert reg.pull(f"{REPO}@{one.digest}") is one
    with pytest.raises(ValueError, match="does not match"):
        reg.push(two, f"{REPO}@{one.digest}")
    reg.push(two, f"{REPO}:2@{two.digest}")
    assert reg.tags(REPO) == ["2"]


def test_names_are_normalised(new_registry: NewRegistry, images: tuple[Image, Image]) -> None:
    one, _ = images
    reg = new_registry()
    reg.push(one, "nginx")
    assert reg.repositories() == ["docker.io/library/nginx"]
    assert reg.pull("docker.io/library/nginx:latest") is one
    assert reg.pull("index.docker.io/library/nginx") is one
    assert reg.tags("nginx") == ["latest"]
    with pytest.raises(ValueError):
        reg.push(one, "Not/Valid")


def test_retag_keeps_the_old_image_pullable_by_digest(new_registry: NewRegistry, images: tuple[Image, Image]) -> None:
    one, two = images
    reg = new_registry()
    reg.push(one, f"{REPO}:1.0")
    reg.push(two, f"{REPO}:1.0")  # the tag moves
    assert reg.pull(f"{REPO}:1.0") is two
    assert reg.pull(f"{REPO}@{one.digest}") is one
    assert reg.tag(f"{REPO}@{one.digest}", f"{REPO}:old") == one.digest
    assert reg.pull(f"{REPO}:old") is one
    # tag() into another repository adds the manifest there (a cross-repository mount).
    reg.tag(f"{REPO}:1.0", "example.com/other")
    assert reg.pull("example.com/other:latest") is two
    assert reg.pull(f"example.com/other@{two.digest}") is two
    with pytest.raises(KeyError):
        reg.pull(f"example.com/other@{one.digest}")  # not pushed there
    with pytest.raises(ValueError, match="digest"):
        reg.tag(f"{REPO}:1.0", f"{REPO}@{one.digest}")


def test_unknown_names_raise_key_error_naming_them(new_registry: NewRegistry, images: tuple[Image, Image]) -> None:
    one, two = images
    reg = new_registry()
    reg.push(one, f"{REPO}:1.0")
    with pytest.raises(KeyError, match="example.com/nope"):
        reg.pull("example.com/nope:1.0")
    with pytest.raises(KeyError, match="'9.9'") as e:
        reg.pull(f"{REPO}:9.9")
    assert "1.0" in str(e.value) and REPO in str(e.value)
    with pytest.raises(KeyError, match=two.digest):
        reg.pull(f"{REPO}@{two.digest}")
    with pytest.raises(KeyError, match="'latest'"):
        reg.resolve(REPO)
    with pytest.raises(KeyError, match="example.com/nope"):
        reg.tags("example.com/nope")
    with pytest.raises(KeyError, match="'9.9'"):
        reg.delete(f"{REPO}:9.9")
    with pytest.raises(KeyError, match="'9.9'"):
        reg.tag(f"{REPO}:9.9", f"{REPO}:x")
    with pytest.raises(KeyError, match="sha256:0+"):
        reg.blob("sha256:" + "0" * 64)
    with pytest.raises(LookupError):
        reg.pull("example.com/nope")


def test_shared_blobs_are_stored_once(new_registry: NewRegistry, images: tuple[Image, Image]) -> None:
    one, two = images
    reg = new_registry()
    reg.push(one, f"{REPO}:1")
    reg.push(two, "example.com/elsewhere:2")
    reg.push(one, "example.com/third:1")
    want = {d: x.tar_size for d, x in zip(two.diff_ids, two.layers, strict=True)}
    want[one.id] = len(one.config_bytes)
    want[two.id] = len(two.config_bytes)
    assert dict(reg.blobs) == want
    # Pulled images share the stored layers, also across repositories and copies.
    copy = Image.from_parts([Layer.from_dict(x.to_dict()) for x in one.layers], one.config_bytes, one.manifest_bytes)
    assert copy.layers[0] is not one.layers[0]
    reg.push(copy, "example.com/copy:1")
    pulled = reg.pull("example.com/copy:1")
    assert pulled.digest == one.digest
    assert all(a is b for a, b in zip(pulled.layers, one.layers, strict=True))
    assert reg.pull("example.com/elsewhere:2").layers[0] is reg.pull(f"{REPO}:1").layers[0]
    assert reg.blob(one.diff_ids[0]) is one.layers[0]
    assert reg.blob(one.id) == one.config_bytes
    with pytest.raises(TypeError):
        reg.blobs["x"] = 1  # type: ignore[index]


def test_delete_and_gc(new_registry: NewRegistry, images: tuple[Image, Image]) -> None:
    one, two = images
    reg = new_registry()
    reg.push(one, f"{REPO}:1")
    reg.push(one, f"{REPO}:stable")
    reg.push(two, f"{REPO}:2")
    before = dict(reg.blobs)
    # Deleting a tag removes only the tag.
    reg.delete(f"{REPO}:stable")
    assert reg.tags(REPO) == ["1", "2"]
    assert reg.gc() == []
    # Deleting by digest removes the manifest and every tag pointing at it.
    reg.tag(f"{REPO}:2", f"{REPO}:also-two")
    reg.delete(f"{REPO}@{two.digest}")
    assert reg.tags(REPO) == ["1"]
    with pytest.raises(KeyError):
        reg.pull(f"{REPO}@{two.digest}")
    # gc frees exactly what only two referenced: its top layer and its config.
    freed = reg.gc()
    assert freed == sorted([two.diff_ids[2], two.id])
    assert dict(reg.blobs) == {d: s for d, s in before.items() if d not in freed}
    assert reg.gc() == []
    # An untagged manifest still holds its blobs; deleting it by digest frees them.
    reg.delete(f"{REPO}:1")
    assert reg.gc() == []
    assert reg.pull(f"{REPO}@{one.digest}") is one
    reg.delete(f"{REPO}@{one.digest}")
    assert reg.repositories() == []  # an empty repository goes away
    assert reg.gc() == sorted([*one.diff_ids, one.id])
    assert dict(reg.blobs) == {}


def test_delete_keeps_manifests_other_repositories_hold(new_registry: NewRegistry, images: tuple[Image, Image]) -> None:
    one, _ = images
    reg = new_registry()
    reg.push(one, "example.com/a:1")
    reg.push(one, "example.com/b:1")
    reg.delete(f"example.com/a@{one.digest}")
    assert reg.gc() == []
    assert reg.pull("example.com/b:1") is one


def test_compressed_images_keep_their_blob_digests(new_registry: NewRegistry, tmp_path: Path,
                                                   images: tuple[Image, Image]) -> None:
    one, _ = images
    oci.save(one, tmp_path / "l", tag="gz", compression="gzip")
    gz = oci.load(tmp_path / "l", tag="gz")
    reg = new_registry()
    assert reg.push(gz, f"{REPO}:gz") == gz.digest
    sizes = {d["digest"]: d["size"] for d in gz.layer_descriptors}
    assert {d: s for d, s in reg.blobs.items() if d != gz.id} == sizes
    pulled = reg.pull(f"{REPO}:gz")
    assert pulled is gz and fs_tree(pulled.fs) == fs_tree(one.fs)


def test_thread_safety(new_registry: Callable[[], Registry]) -> None:
    reg = new_registry()
    base = Layer.from_dict({"base": b"b"})
    imgs = [Image.from_layers([base, Layer.from_dict({f"f{i}": str(i).encode()})]) for i in range(40)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            reg.push(imgs[i], f"example.com/r{i % 4}:{i}")
            reg.tag(f"example.com/r{i % 4}:{i}", f"example.com/r{i % 4}:latest")
            assert reg.pull(f"example.com/r{i % 4}:{i}") is imgs[i]
            if i % 2:
                reg.delete(f"example.com/r{i % 4}:{i}")
            reg.gc()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(len(reg.tags(f"example.com/r{k}")) for k in range(4)) == 20 + 4
    assert len(reg.blobs) == 1 + 40 + 40  # the shared base once, 40 tops, 40 configs
