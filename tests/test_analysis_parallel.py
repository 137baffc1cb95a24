"""The analyses' work on a second CPU (``analysis._forked``): the same answers as one process.

``scan`` shares the layers with a forked child and ``efficiency(method="dive")`` builds
dive's trees in one, on big images and machines with a CPU to spare. Here both are forced
on small images (and on any machine: a fork works on one CPU too, only slower) and
compared with the single-process answer, including a child that fails (the parent then
does its share) and layers the scan leaves to the loader or finds corrupt.
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import tarfile
import time
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim import WHITEOUT, Device, Dir, Fifo, File, Hardlink, Symlink, analysis
from unionfs_sim.analysis import _dive, _forked
from unionfs_sim.errors import FormatError

from .analysis_images import CATALOGUE, _img
from .test_analysis_scan import describe, make_archive

# the modules (the package's names ``scan`` and ``efficiency`` are its functions)
scan_module = importlib.import_module("unionfs_sim.analysis.scan")
efficiency_module = importlib.import_module("unionfs_sim.analysis.efficiency")


class Counting(_forked.Forked):  # type: ignore[type-arg]
    """A Forked that records what its children gave back."""

    results: list[object] = []

    def result(self) -> object:
        got = super().result()
        Counting.results.append(got)
        return got


@pytest.fixture
def forking(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[object]:
    """Fork on every scan of two or more layers and every dive analysis; the children's results."""
    monkeypatch.setattr(_forked, "available", lambda: _forked.ENABLED)
    monkeypatch.setattr(_forked, "Forked", Counting)
    monkeypatch.setattr(scan_module, "_FORK_MIN_BYTES", 0)
    monkeypatch.setattr(scan_module, "_looks_cached", lambda fd, spans: True)  # (whatever else drops the cache)
    monkeypatch.setattr(efficiency_module, "_FORK_MIN_ENTRIES", 0)
    parent = os.getpid()
    claim = scan_module._Claims.next
    flag = tmp_path / "child-claimed"

    def child_first(self: object) -> int | None:
        """The parent claims only once the child has (else, a moment later to start, it may get none)."""
        if os.getpid() == parent:
            for _ in range(1000):
                if flag.exists():
                    break
                time.sleep(0.005)
        got: int | None = claim(self)
        flag.touch()
        return got

    monkeypatch.setattr(scan_module._Claims, "next", child_first)
    Counting.results = []
    return Counting.results


def single(fn: object, *args: object) -> object:
    """``fn(*args)`` in this process only."""
    was = _forked.ENABLED
    _forked.ENABLED = False
    try:
        return fn(*args)  # type: ignore[operator]
    finally:
        _forked.ENABLED = was


def every_kind() -> ufs.Image:
    """Every entry type the scan reads, hard links and xattrs, over five layers."""
    return _img({"etc/": Dir(xattrs={"user.d": b"1"}), "etc/f": File(b"f" * 700, mode=0o600, uid=7, gid=8,
                                                                      xattrs={"user.a": b"b"}),
                 "etc/hl": Hardlink("etc/f"), "etc/ln": Symlink("f"), "dev/null": Device("c", 1, 3),
                 "run/p": Fifo(), "var/cache/": Dir(), "var/cache/x": b"x" * 90},
                {"etc/f": WHITEOUT, "var/cache/": Dir(opaque=True), "new": b"n" * 5},
                {"etc/hl": b"h" * 30, "a/b/c/d": b"deep"},
                {"a/b": WHITEOUT, "etc/f": b"again" * 10},
                {"etc/": Dir(mode=0o700), "etc/g": b"g" * 11, "etc/g2": Hardlink("etc/g")})


IMAGES = {"every_kind": every_kind, "deletes": CATALOGUE["deletes"], "hard_links": CATALOGUE["hard_links"],
          "many_files": CATALOGUE["many_files"]}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_shared_scan_equals_one_process(name: str, tmp_path: Path, forking: list[object]) -> None:
    archive = tmp_path / "img.tar"
    ufs.docker_archive.save(IMAGES[name](), archive)
    want = [describe(x) for x in single(lambda: analysis.scan(archive).layers)]  # type: ignore[attr-defined]
    got = analysis.scan(archive)
    assert [describe(x) for x in got.layers] == want
    assert len(forking) == 1 and isinstance(forking[0], dict) and forking[0]  # the child scanned layers
    for method in ("dive", "reclaimable"):
        expect = single(analysis.efficiency, got, method).to_json()  # type: ignore[attr-defined]
        efficiency_module._SHARED.clear()  # else the walk is cached and there is nothing to fork for
        assert analysis.efficiency(got, method=method).to_json() == expect
    assert any(isinstance(r, _dive.DiveAnalysis) for r in forking)  # dive's analysis came from a child


def test_a_failing_child_leaves_its_share_to_the_parent(tmp_path: Path, forking: list[object],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "img.tar"
    image = every_kind()
    ufs.docker_archive.save(image, archive)
    want = [describe(x) for x in single(lambda: analysis.scan(archive).layers)]  # type: ignore[attr-defined]
    parent = os.getpid()
    real_encode, real_analyze = scan_module._encode, _dive.analyze

    def encode_in_parent_only(layer: ufs.Layer) -> object:
        if os.getpid() != parent:
            raise RuntimeError("the child fails")
        return real_encode(layer)

    def analyze_in_parent_only(layers: object) -> object:
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)  # a child that dies of a signal
        return real_analyze(layers)  # type: ignore[arg-type]

    monkeypatch.setattr(scan_module, "_encode", encode_in_parent_only)
    monkeypatch.setattr(_dive, "analyze", analyze_in_parent_only)
    got = analysis.scan(archive)
    assert [describe(x) for x in got.layers] == want
    assert analysis.efficiency(got, method="dive").to_json() == \
        single(analysis.efficiency, ufs.docker_archive.load(archive), "dive").to_json()  # type: ignore[attr-defined]
    assert forking == [None, None]


def _layer_tar(members: list[tuple[str, bytes]], **pax: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers=pax or None) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_shared_scan_of_unusual_and_corrupt_layers(tmp_path: Path, forking: list[object]) -> None:
    """A layer left to the loader gives the loader's image; a corrupt one the error naming it."""
    good = [_layer_tar([(f"l{i}/f{j}", b"x" * j) for j in range(40)]) for i in range(4)]
    odd = _layer_tar([("a", b"1")], comment="a global header")
    archive = make_archive(tmp_path / "odd.tar", [*good, odd])
    got = analysis.scan(archive)
    assert not isinstance(got, analysis.ScannedImage)
    assert [describe(x) for x in got.layers] == [describe(x) for x in ufs.docker_archive.load(archive).layers]
    bad = bytearray(good[2])
    bad[148:156] = b"0000000\0"  # the first header's checksum
    archive = make_archive(tmp_path / "bad.tar", [*good[:2], bytes(bad), good[3]])
    with pytest.raises(FormatError, match="checksum") as e:
        analysis.scan(archive)
    assert "layer.tar" in str(e.value)
    assert single(lambda: "layer.tar" in str(pytest.raises(FormatError, analysis.scan, archive).value))


def test_children_reaped_elsewhere(tmp_path: Path, forking: list[object]) -> None:
    """With SIGCHLD ignored (the kernel reaps children, ``waitpid`` fails) the children's results still count."""
    archive = tmp_path / "img.tar"
    ufs.docker_archive.save(every_kind(), archive)
    want = [describe(x) for x in single(lambda: analysis.scan(archive).layers)]  # type: ignore[attr-defined]
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        got = analysis.scan(archive)
        dive = analysis.efficiency(got, method="dive")
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert [describe(x) for x in got.layers] == want
    assert dive.to_json() == single(analysis.efficiency, ufs.docker_archive.load(archive), "dive").to_json()  # type: ignore[attr-defined]
    assert len(forking) == 2 and forking[0] and isinstance(forking[1], _dive.DiveAnalysis)


def test_a_cold_archive_is_scanned_in_one_process(tmp_path: Path) -> None:
    """Out of the page cache the scan is disk work, which one process keeps as busy: no child."""
    layers = [_layer_tar([(f"l{i}/f{j}", bytes([j]) * 40_000) for j in range(8)]) for i in range(3)]
    archive = make_archive(tmp_path / "img.tar", layers)
    with tarfile.open(archive) as tf:
        spans = [(m.offset_data, m.size, m.name) for m in tf.getmembers() if m.name.endswith("layer.tar")]
    with open(archive, "rb") as f:
        f.read()
        assert scan_module._looks_cached(f.fileno(), spans)
        os.fsync(f.fileno())  # (dirty pages stay in the cache)
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        with tarfile.open(archive):
            pass  # the outer tar's headers back in the cache, as the scan reads them first
        if scan_module._NOWAIT is not None:
            assert not scan_module._looks_cached(f.fileno(), spans)
