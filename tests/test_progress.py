"""progress= hooks on loading and saving images (issue 15: progress on anything that takes a while)."""

from __future__ import annotations

from pathlib import Path

import unionfs_sim as ufs
from unionfs_sim.formats import docker_archive, oci


def _image() -> ufs.Image:
    return ufs.Image.from_layers([
        ufs.Layer.from_dict({"a": b"a" * 1000}),
        ufs.Layer.from_dict({"b": b"b" * 5000, "c/": ufs.Dir()}),
        ufs.Layer.from_dict({"a": ufs.WHITEOUT}),
    ])


def _check(calls: list[tuple[int, int, str]], layers: int, total: int, last: str) -> None:
    assert len(calls) == layers + 1
    assert [c[1] for c in calls] == [total] * (layers + 1)
    done = [c[0] for c in calls]
    assert done == sorted(done) and done[0] == 0 and done[-1] == total
    assert calls[-1][2] == last and calls[0][2].endswith(f"1/{layers}")


def test_oci_save_and_load_report_each_layer(tmp_path: Path) -> None:
    img = _image()
    calls: list[tuple[int, int, str]] = []
    oci.save(img, tmp_path / "layout", tag="1", progress=lambda *a: calls.append(a))
    _check(calls, 3, sum(x.size for x in img.layers), "saved")
    calls.clear()
    back = oci.load(tmp_path / "layout", tag="1", progress=lambda *a: calls.append(a))
    assert back.digest == img.digest
    blobs = sum(int(d["size"]) for d in back.layer_descriptors)
    _check(calls, 3, blobs, "loaded")


def test_docker_archive_save_and_load_report_each_layer(tmp_path: Path) -> None:
    img = _image()
    calls: list[tuple[int, int, str]] = []
    docker_archive.save(img, tmp_path / "a.tar", tags=["app:1"], progress=lambda *a: calls.append(a))
    assert len(calls) == 4 and calls[-1][0] == calls[-1][1] > 0 and calls[-1][2] == "saved"
    calls.clear()
    back = docker_archive.load(tmp_path / "a.tar", progress=lambda *a: calls.append(a))
    assert back.id == img.id
    _check(calls, 3, calls[-1][1], "loaded")
    assert calls[-1][1] >= sum(x.size for x in img.layers)  # tar files: content plus headers


def test_the_cli_loader_passes_the_hook_on(tmp_path: Path) -> None:
    from unionfs_sim.cli.sources import load_image

    img = _image()
    oci.save(img, tmp_path / "layout", tag="1")
    docker_archive.save(img, tmp_path / "a.tar", tags=["app:1"])
    for name in (f"oci:{tmp_path / 'layout'}:1", f"docker-archive:{tmp_path / 'a.tar'}"):
        calls: list[tuple[int, int, str]] = []
        assert load_image(name, progress=lambda *a, c=calls: c.append(a)).id == img.id
        assert len(calls) == 4 and calls[-1][2] == "loaded", name
