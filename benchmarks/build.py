"""The scenario table of issue 14 built by unionfs_sim and by `docker build`, in the same run.

For every scenario of ``tests/build_scenarios.py`` (build v1, edit, build v2 ...), the
wall time of all its builds:

- ours with ``isolation="python"`` (the shell subset) and ``isolation="chroot"`` (busybox
  chrooted in the step's FUSE-mounted container), each under classic and BuildKit rules;
- a private dockerd 20.10 (``tests/daemons.py``) with ``DOCKER_BUILDKIT=0`` and ``=1``
  (``--network none``; the docker CLI's own start-up included, as a user would see it).

Targets (issue 14): python isolation at least 10x faster than Docker; chroot no slower.

    python benchmarks/build.py [--repeats 3] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import unionfs_sim as ufs  # noqa: E402
from tests import daemons  # noqa: E402
from tests.build_scenarios import SCENARIOS, Scenario, materialise  # noqa: E402
from unionfs_sim.build.run import chroot_unavailable  # noqa: E402


def ours(sc: Scenario, base: ufs.Image, rules: str, isolation: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = materialise(sc, Path(tmp) / "ctx")
        t0 = time.perf_counter()
        b = ufs.Builder(isolation=isolation)
        b.add(base, "busybox")
        for v in sc.versions:
            if v.edit is not None:
                v.edit(ctx)
            b.build(ctx, tag="bench:1", build_args=dict(v.args), no_cache=v.no_cache, target=v.target, rules=rules)
        return time.perf_counter() - t0


def docker_builds(docker: daemons.Docker, sc: Scenario, rules: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = materialise(sc, Path(tmp) / "ctx")
        t0 = time.perf_counter()
        for v in sc.versions:
            if v.edit is not None:
                v.edit(ctx)
            args = ["build", "-q", "--network", "none", "-t", "bench:1", *v.docker_flags()]
            docker.run(*args, str(ctx), env={"DOCKER_BUILDKIT": "1" if rules == "buildkit" else "0"})
        took = time.perf_counter() - t0
    docker.run("rmi", "-f", "bench:1", check=False)
    docker.run("image", "prune", "-f", check=False)
    docker.run("builder", "prune", "-af", check=False)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="")
    opts = ap.parse_args()
    scenarios = [s for s in SCENARIOS if opts.only in s.name]
    chroot_ok = chroot_unavailable() is None
    with daemons.start_docker() as docker, tempfile.TemporaryDirectory() as tmp:
        docker.run("save", "-o", f"{tmp}/bb.tar", docker.base)
        base = ufs.docker_archive.load(f"{tmp}/bb.tar")
        totals: dict[str, list[float]] = {}
        for rules in ("classic", "buildkit"):
            for who in ("python", "chroot", "docker"):
                if who == "chroot" and not chroot_ok:
                    continue
                runs = []
                for _ in range(opts.repeats):
                    t = 0.0
                    for sc in scenarios:
                        t += docker_builds(docker, sc, rules) if who == "docker" else ours(sc, base, rules, who)
                    runs.append(t)
                totals[f"{who}/{rules}"] = runs
    builds = sum(len(s.versions) for s in scenarios)
    print(f"{len(scenarios)} scenarios, {builds} builds per rule set, median of {opts.repeats} runs")
    for key, runs in totals.items():
        med = statistics.median(runs)
        print(f"  {key:18s} {med:8.2f} s  ({med / builds * 1000:7.1f} ms/build)")
    for rules in ("classic", "buildkit"):
        d = statistics.median(totals[f"docker/{rules}"])
        for who in ("python", "chroot"):
            if f"{who}/{rules}" in totals:
                o = statistics.median(totals[f"{who}/{rules}"])
                print(f"  {rules:8s} docker / ours({who}) = {d / o:6.1f}x")


if __name__ == "__main__":
    main()
