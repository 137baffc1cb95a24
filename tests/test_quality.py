"""The code stays as the project keeps it: ruff's E, F, W, I, B, UP rules and mypy --strict.

Both run over the package (and ruff over the tests, benchmarks and notebook sources too) with
the settings in pyproject.toml, so a change that a reviewer would send back fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install '.[test]' brings it)")
    r = _run(ruff, "check", "unionfs_sim", "tests", "benchmarks", "notebooks", "scripts")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict() -> None:
    r = _run(sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores", "unionfs_sim")
    assert r.returncode == 0, r.stdout + r.stderr
