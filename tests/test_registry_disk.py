"""Registry(root=...): the store on disk outlives the object, is shared between registries
(processes) opened on it, cleans up only dead uploads, and keeps gc safe against pushes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from unionfs_sim.layer import Layer
from unionfs_sim.registry import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    NameInvalid,
    Registry,
    TagInvalid,
    UploadInvalid,
    check_name,
)

from .test_oci import fs_tree, sample_image

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def upload(reg: Registry, repo: str, data: bytes) -> str:
    up = reg.start_upload(repo)
    with up.writing(0):
        up.write(data)
    return up.finish("sha256:" + hashlib.sha256(data).hexdigest())


def manifest(config: str, config_size: int, layers: list[tuple[str, int]],
             config_type: str = "application/vnd.oci.image.config.v1+json", **extra: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                       "config": {"mediaType": config_type, "digest": config,
                                  "size": config_size},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
                                  for d, s in layers], **extra}).encode()


def test_the_store_outlives_the_registry_object(tmp_path: Path) -> None:
    image = sample_image()
    two = image.with_layer(Layer.from_dict({"two": b"2"}))
    reg = Registry(root=tmp_path)
    reg.push(image, "example.com/team/app:1")
    reg.push(two, "example.com/team/app:2")
    reg.delete("example.com/team/app:2")
    del reg
    again = Registry(root=tmp_path)
    assert again.repositories() == ["example.com/team/app"]
    assert again.tags("example.com/team/app") == ["1"]
    pulled = again.pull("example.com/team/app:1")
    assert pulled.digest == image.digest and fs_tree(pulled.fs) == fs_tree(image.fs)
    assert again.pull(f"example.com/team/app@{two.digest}").digest == two.digest  # untagged, still there
    # Pulls share layers: the second image's bottom layers are the first one's objects.
    assert all(a is b for a, b in zip(pulled.layers, again.pull(f"example.com/team/app@{two.digest}").layers[:-1],
                                      strict=True))
    assert pulled.layers[0].source_blob is not None  # re-saving copies the stored bytes


def test_two_registries_on_one_root_see_each_others_changes(tmp_path: Path) -> None:
    a, b = Registry(root=tmp_path), Registry(root=tmp_path)
    image = sample_image()
    a.push(image, "localhost:5000/team/app:1")
    assert b.resolve("127.0.0.1:9999/team/app:1") == image.digest  # loopback names: the path only
    assert b.repositories() == ["team/app"]
    b.tag("localhost/team/app:1", "localhost/team/app:stable")
    assert a.tags("localhost/team/app") == ["1", "stable"]


def test_only_dead_processes_uploads_are_removed(tmp_path: Path) -> None:
    alive = Registry(root=tmp_path)
    up = alive.start_upload("team/app")
    with up.writing(None):
        up.write(b"in flight")
    dead = tmp_path / "_uploads" / "999999-dead"
    dead.mkdir()
    (dead / ".owner").write_bytes(b"")
    (dead / "upload-x").write_bytes(b"half")
    Registry(root=tmp_path)  # opening the root cleans up
    assert not dead.exists()
    assert up.path.exists()
    with open(up.path.parent / ".owner", "rb") as f, pytest.raises(BlockingIOError):
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still held by the live registry
    assert upload(alive, "team/app", b"done") and up.offset == 9


def test_uploads_check_offsets_and_digests(tmp_path: Path) -> None:
    reg = Registry(root=tmp_path)
    up = reg.start_upload("team/app")
    with up.writing(0):
        up.write(b"abc")
    with pytest.raises(UploadInvalid) as e, up.writing(0):
        pass
    assert e.value.offset == 3
    with up.writing(3), pytest.raises(UploadInvalid), up.writing(3):  # busy: a second request at once
        pass
    with pytest.raises(DigestInvalid, match="hashes to"):
        up.finish("sha256:" + "0" * 64)
    assert reg.blobs == {}
    assert not up.path.exists()  # cancelled


@pytest.mark.parametrize("bad", ["", "Team/app", "team/../app", "..", "team//app", "/team", "team/", "_x", "a" * 256,
                                 "team/app/", "te%2fam", "team\\app"])
def test_names_outside_the_grammar(bad: str) -> None:
    with pytest.raises(NameInvalid):
        check_name(bad)
    reg = Registry()
    with pytest.raises(NameInvalid):
        reg.start_upload(bad)
    with pytest.raises(NameInvalid):
        reg.get_manifest(bad, "latest")


def test_manifests_are_stored_byte_exact_with_their_media_type(tmp_path: Path) -> None:
    for reg in (Registry(), Registry(root=tmp_path)):
        cfg = upload(reg, "team/art", b'{"artifact": true}')
        blob = upload(reg, "team/art", b"payload")
        m = manifest(cfg, 18, [(blob, 7)], config_type="application/x-test", artifactType="application/x-test")
        m = m.replace(b'{"schemaVersion"', b'{ "schemaVersion"')  # odd spacing is kept
        d, subject = reg.put_manifest("team/art", "v1", m, MT_MANIFEST)
        assert subject is None
        assert reg.get_manifest("team/art", "v1") == (m, MT_MANIFEST, d)
        with pytest.raises(ValueError, match="not a container image"):
            reg.pull("localhost/team/art:v1")
        with pytest.raises(ManifestBlobUnknown) as e:
            reg.put_manifest("team/art", "v2", manifest(cfg, 18, [("sha256:" + "1" * 64, 1)]), MT_MANIFEST)
        assert e.value.digest == "sha256:" + "1" * 64
        with pytest.raises(TagInvalid):
            reg.put_manifest("team/art", "-bad", m, MT_MANIFEST)
        with pytest.raises(DigestInvalid):
            reg.put_manifest("team/art", "sha256:" + "2" * 64, m, MT_MANIFEST)
        assert reg.gc(grace=0) == []  # the artifact holds its blobs
        assert reg.list_tags("team/art") == ["v1"]


def test_gc_races_pushes_and_never_leaves_a_manifest_without_its_blobs(tmp_path: Path) -> None:
    reg = Registry(root=tmp_path)
    image = sample_image()
    reg.push(image, "localhost/keep/me:1")
    stop = threading.Event()
    errors: list[BaseException] = []
    pushed: list[str] = []

    def pusher(k: int) -> None:
        i = 0
        try:
            while not stop.is_set() and i < 12:
                cfg = upload(reg, "team/app", json.dumps({"k": k, "i": i}).encode())
                blob = upload(reg, "team/app", os.urandom(500))
                m = manifest(cfg, len(json.dumps({"k": k, "i": i})), [(blob, 500)])
                try:
                    pushed.append(reg.put_manifest("team/app", f"t{k}-{i}", m, MT_MANIFEST)[0])
                except ManifestBlobUnknown:
                    pass  # gc(grace=0) took a blob between upload and manifest: the push fails, cleanly
                i += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def collector() -> None:
        while not stop.is_set():
            reg.gc(grace=0)

    threads = [threading.Thread(target=pusher, args=(k,)) for k in range(3)] + [threading.Thread(target=collector)]
    for t in threads:
        t.start()
    for t in threads[:3]:
        t.join()
    stop.set()
    threads[3].join()
    assert errors == []
    for tag in reg.list_tags("team/app") if "team/app" in reg.repositories() else []:
        data, _, _ = reg.get_manifest("team/app", tag)
        doc = json.loads(data)
        for d in [doc["config"], *doc["layers"]]:
            assert reg.stat_blob("team/app", d["digest"]) == d["size"]
    assert reg.pull("localhost/keep/me:1").digest == image.digest
    # With the default grace, no push fails.
    before = len(pushed)
    cfg = upload(reg, "team/app", b"{}")
    reg.gc()
    pushed.append(reg.put_manifest("team/app", "graceful", manifest(cfg, 2, []), MT_MANIFEST)[0])
    assert len(pushed) == before + 1 and "graceful" in reg.list_tags("team/app")


def test_push_of_an_image_with_gzip_layers_to_disk(tmp_path: Path) -> None:
    from unionfs_sim.formats import oci

    image = sample_image()
    oci.save(image, tmp_path / "l", tag="gz", compression="gzip")
    gz = oci.load(tmp_path / "l", tag="gz")
    reg = Registry(root=tmp_path / "store")
    reg.push(gz, "localhost/team/app:gz")
    for d in gz.layer_descriptors:
        assert (tmp_path / "store" / "blobs" / "sha256" / d["digest"][7:]).read_bytes() == \
            (tmp_path / "l" / "blobs" / "sha256" / d["digest"][7:]).read_bytes()
    assert fs_tree(Registry(root=tmp_path / "store").pull("localhost/team/app:gz").fs) == fs_tree(image.fs)


def test_docker_manifest_lists_and_oci_indexes_need_their_children(tmp_path: Path) -> None:
    docker_manifest = "application/vnd.docker.distribution.manifest.v2+json"
    docker_list = "application/vnd.docker.distribution.manifest.list.v2+json"
    for reg in (Registry(), Registry(root=tmp_path)):
        cfg = upload(reg, "team/multi",
                     b'{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
        child = json.dumps({"schemaVersion": 2, "mediaType": docker_manifest,
                            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                       "digest": cfg, "size": 78}, "layers": []}).encode()
        child_digest, _ = reg.put_manifest("team/multi", "sha256:" + hashlib.sha256(child).hexdigest(), child,
                                           docker_manifest)
        for mt in (docker_list, "application/vnd.oci.image.index.v1+json"):
            index = json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": [
                {"mediaType": docker_manifest, "digest": child_digest, "size": len(child),
                 "platform": {"architecture": "arm64", "os": "linux"}}]}, indent=3).encode()
            d, _ = reg.put_manifest("team/multi", "multi", index, mt)
            assert reg.get_manifest("team/multi", "multi") == (index, mt, d)
            assert reg.pull("localhost/team/multi:multi").config.architecture == "arm64"  # its only image
            assert reg.pull("localhost/team/multi:multi", platform="linux/arm64").config.architecture == "arm64"
            with pytest.raises(KeyError, match="linux/amd64"):
                reg.pull("localhost/team/multi:multi", platform="linux/amd64")
            orphan = index.replace(child_digest.encode(), b"sha256:" + b"4" * 64)
            with pytest.raises(ManifestBlobUnknown):
                reg.put_manifest("team/multi", "orphan", orphan, mt)
        assert reg.pull(f"localhost/team/multi@{child_digest}").config.architecture == "arm64"
        two = json.dumps({"schemaVersion": 2, "mediaType": docker_list, "manifests": [
            {"mediaType": docker_manifest, "digest": child_digest, "size": len(child),
             "platform": {"architecture": a, "os": "linux", **({"variant": "v8"} if a == "arm64" else {})}}
            for a in ("amd64", "arm64")]}).encode()
        reg.put_manifest("team/multi", "two", two, docker_list)
        with pytest.raises(ValueError, match="linux/amd64, linux/arm64/v8"):
            reg.pull("localhost/team/multi:two")
        assert reg.pull("localhost/team/multi:two", platform="linux/arm64/v8").digest == child_digest
        with pytest.raises(ManifestInvalid, match="differs"):  # a Content-Type that contradicts mediaType
            reg.put_manifest("team/multi", "x", child, "application/vnd.oci.image.manifest.v1+json")
        with pytest.raises(ManifestInvalid, match="has 78"):  # a descriptor whose size is wrong
            reg.put_manifest("team/multi", "x", child.replace(b'"size": 78', b'"size": 77'), docker_manifest)


def test_stale_temporary_files_are_removed_at_open(tmp_path: Path) -> None:
    reg = Registry(root=tmp_path)
    reg.push(sample_image(), "localhost/team/app:1")
    old, new = tmp_path / "repositories/team/app/_tags/.tmp-old", tmp_path / "blobs/sha256/.tmp-new"
    old.write_bytes(b"left by a killed process")
    new.write_bytes(b"being written right now")
    os.utime(old, (1, 1))
    Registry(root=tmp_path)
    assert not old.exists() and new.exists()
    assert Registry(root=tmp_path).tags("localhost/team/app") == ["1"]
