"""Real Docker (20.10, classic and BuildKit 0.8) as the oracle of the builder's cache decisions.

Every scenario of ``build_scenarios.py`` is built by ours and by a private dockerd, version
after version, under ``DOCKER_BUILDKIT=0`` and ``=1``. For every build: each step's hit or
miss equals Docker's (``Using cache`` / ``CACHED``), the history ``created_by`` strings,
the config and the number of layers are equal; for the last build the merged trees are
equal (paths, types, modes, owners, sizes, content, link targets; not mtimes), and the
explanation names the changed input. One dockerd serves all scenarios; between scenarios
its images and build cache are removed.
"""

from __future__ import annotations

import hashlib
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import unionfs_sim as ufs
from unionfs_sim.build import BuildResult

from . import daemons
from .build_scenarios import SCENARIOS, Scenario, materialise

_STEP = re.compile(r"^Step (\d+)/\d+ : ", re.M)
_VERTEX = re.compile(r"^#(\d+) \[(?:(\S+) )?(\d+)/(\d+)\] ", re.M)
_CACHED = re.compile(r"^#(\d+) CACHED", re.M)
_LAYERED = ("FROM", "WORKDIR", "COPY", "ADD", "RUN")


def classic_verdicts(out: str) -> dict[int, bool]:
    """Step number -> hit, from ``docker build`` (classic) output; FROM has none."""
    marks = list(_STEP.finditer(out))
    verdicts: dict[int, bool] = {}
    for i, m in enumerate(marks):
        block = out[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(out)]
        head = block.split("\n", 1)[0]
        if head.upper().startswith("FROM "):
            continue
        verdicts[int(m.group(1))] = "---> Using cache" in block
    return verdicts


def buildkit_verdicts(out: str, r: BuildResult) -> dict[int, bool]:
    """Step number -> hit, from ``--progress=plain`` output (``#N [stage i/n] ...`` and ``#N CACHED``)."""
    cached = {int(m.group(1)) for m in _CACHED.finditer(out)}
    stages: list[str | int] = []
    for s in r.steps:
        if s.stage not in stages:
            stages.append(s.stage)
    single = len(stages) == 1 and isinstance(stages[0], int)
    by_label: dict[tuple[str, int], int] = {}
    for stage in stages:
        label = "" if single else (stage if isinstance(stage, str) else f"stage-{stage}")
        # FROM is a vertex only for an image: not for scratch, not for another stage
        vertex_steps = [s for s in r.steps if s.stage == stage and s.instruction.split(" ", 1)[0] in _LAYERED
                        and not (s.instruction.startswith("FROM ")
                                 and s.instruction.split()[1].lower() in {"scratch", *map(str, stages)})]
        for i, s in enumerate(vertex_steps, 1):
            by_label[(label, i)] = s.number
    verdicts: dict[int, bool] = {}
    for m in _VERTEX.finditer(out):
        key = (m.group(2) or "", int(m.group(3)))
        n = by_label.get(key)
        if n is None or r.steps[n - 1].instruction.startswith("FROM "):
            continue
        shown = out[m.end():out.index("\n", m.end())]
        assert shown == r.steps[n - 1].instruction, f"BuildKit names step {n} {shown!r}"
        verdicts[n] = int(m.group(1)) in cached
    return verdicts


def tree(image: ufs.Image) -> dict[str, tuple[Any, ...]]:
    """The merged tree of an image: path -> (type, mode, uid, gid, size, sha256 or link target)."""
    fs = image.fs
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in fs.walk("/"):
        for name in dirnames + filenames:
            p = f"{dirpath.rstrip('/')}/{name}"
            st = fs.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what: Any = fs.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(fs.read_bytes(p)).hexdigest()[:16]
            else:
                what = None
            out[p] = (stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid,
                      st.st_size if stat.S_ISREG(st.st_mode) else 0, what)
    return out


_MOUNT_STUBS = ("/dev", "/proc", "/sys")
"""Empty directories BuildKit 0.8's runc executor creates for a RUN's mounts and commits."""

_DROP = {"Image", "Hostname", "Domainname", "AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin",
         "StdinOnce"}


def norm_config(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` of an image config JSON without empty and per-container fields."""
    c = doc.get("config") or {}
    return {k: v for k, v in c.items() if k not in _DROP and v not in (None, "", [], {}, False)}


def created_by(image: ufs.Image) -> list[str | None]:
    """The history ``created_by`` strings after the base image's one entry."""
    return [h.created_by for h in image.history][1:]


@pytest.fixture(scope="module")
def base(docker: daemons.Docker) -> Iterator[ufs.Image]:
    """The dockerd's busybox, saved and loaded into the model (the same bytes both sides build on)."""
    with tempfile.TemporaryDirectory() as tmp:
        docker.run("save", "-o", f"{tmp}/bb.tar", docker.base)
        yield ufs.docker_archive.load(f"{tmp}/bb.tar")


def docker_build(docker: daemons.Docker, ctx: Path, rules: str, tag: str, v: Any) -> tuple[str, ufs.Image]:
    args = ["build", "--network", "none", "-t", tag]
    if rules == "buildkit":
        args += ["--progress=plain"]
    args += v.docker_flags()
    done = docker.run(*args, str(ctx), env={"DOCKER_BUILDKIT": "1" if rules == "buildkit" else "0"})
    out = done.stdout.decode() + done.stderr.decode()
    archive = ctx.parent / f"{tag.replace(':', '_')}.tar"
    docker.run("save", "-o", str(archive), tag)
    img = ufs.docker_archive.load(str(archive))
    archive.unlink()
    return out, img


def _reset(docker: daemons.Docker, tags: list[str]) -> None:
    if tags:
        docker.run("rmi", "-f", *tags, check=False)
    docker.run("image", "prune", "-f", check=False)
    docker.run("builder", "prune", "-af", check=False)


def run_scenario(docker: daemons.Docker, base: ufs.Image, sc: Scenario, rules: str, tmp: Path) -> list[str]:
    """Build every version with both builders; return the notes on Docker's known-wrong verdicts."""
    ctx = tmp / "ctx"
    materialise(sc, ctx)
    b = ufs.Builder(isolation="python")
    b.add(base, "busybox")
    tags: list[str] = []
    notes: list[str] = []
    slug = re.sub(r"[^a-z0-9]+", "-", sc.name.lower()).strip("-")[:40]
    r: BuildResult | None = None
    theirs: ufs.Image | None = None
    try:
        for vi, v in enumerate(sc.versions):
            if v.edit is not None:
                v.edit(ctx)
            tag = f"{slug}-{rules}:v{vi}"
            tags.append(tag)
            r = b.build(ctx, tag=tag, build_args=dict(v.args), no_cache=v.no_cache, target=v.target, rules=rules)
            out, theirs = docker_build(docker, ctx, rules, tag, v)
            got = {s.number: s.cached for s in r.steps if s.cached is not None}
            want = classic_verdicts(out) if rules == "classic" else buildkit_verdicts(out, r)
            where = f"{sc.name} [{rules}] build {vi + 1}"
            if (rules, vi) in sc.docker_wrong:
                assert {n: got.get(n) for n in want} != want, f"{where}: Docker was expected to be wrong here"
                notes.append(f"{where}: Docker {want}, ours {got}: {sc.docker_wrong[(rules, vi)]}")
            else:
                assert {n: got.get(n) for n in want} == want, \
                    f"{where}: verdicts differ\nours:   {got}\ndocker: {want}\n{out[-3000:]}"
                if rules == "buildkit":
                    extra = {n for n in got if n not in want}
                    assert not extra, f"{where}: ours gives verdicts where BuildKit shows no vertex: {extra}\n{out}"
            assert created_by(r.image) == created_by(theirs), f"{where}: history differs"
            assert norm_config(r.image.config_json()) == norm_config(theirs.config_json()), f"{where}: config differs"
            assert len(r.image.layers) == len(theirs.layers), f"{where}: layer counts differ"
            for s in r.steps:
                if s.cached is False:
                    assert s.reason, f"{where}: step {s.number} missed without a reason"
                    if s.caused_by is not None:
                        assert f"step {s.caused_by}" in s.reason
                    elif vi:   # a miss of its own on a rebuild names the input that changed
                        assert not s.reason.startswith(("not in the cache", "the cache key")), \
                            f"{where}: step {s.number}: {s.reason}"
        assert r is not None and theirs is not None
        ours_tree, their_tree = tree(r.image), tree(theirs)
        if rules == "buildkit":
            for stub in _MOUNT_STUBS:
                if stub not in ours_tree and their_tree.get(stub, (None,))[0] == stat.S_IFDIR:
                    del their_tree[stub]
                    notes.append(f"{sc.name}: BuildKit 0.8 leaves the mount point {stub} of a RUN in its layer; "
                                 "ours does not (later BuildKit removes these stubs too)")
        if (rules, len(sc.versions) - 1) in sc.docker_wrong:
            assert ours_tree != their_tree, f"{sc.name} [{rules}]: Docker's stale tree was expected"
        else:
            assert ours_tree == their_tree, f"{sc.name} [{rules}]: merged trees differ"
        for key in (rules, "both"):
            if key in sc.why:
                text = r.explain()
                assert sc.why[key] in text, f"{sc.name} [{rules}]: explain() lacks {sc.why[key]!r}:\n{text}"
    finally:
        _reset(docker, tags)
    return notes


@pytest.mark.parametrize("rules", ["classic", "buildkit"])
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_matches_docker(docker: daemons.Docker, base: ufs.Image, sc: Scenario, rules: str,
                                 tmp_path: Path) -> None:
    """Per step hit/miss, history, config, layer count and merged tree equal Docker's."""
    for note in run_scenario(docker, base, sc, rules, tmp_path):
        print("peer is wrong:", note)


def test_scenario_table_is_large_enough() -> None:
    """The issue asks for at least 30 scenarios (each runs under both rule sets)."""
    assert len(SCENARIOS) >= 30
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)


RUNNABLE = """FROM busybox
WORKDIR /app
COPY . .
RUN mkdir -p out && cp a.txt out/b.txt && ln -s b.txt out/c && chmod 600 out/b.txt
ENV GREETING=hello
CMD ["sh", "-c", "echo $GREETING; cat /app/out/c; find /app | sort | xargs stat -c '%n %a %u:%g %s'"]
"""


@pytest.mark.parametrize("rules", ["classic", "buildkit"])
def test_our_image_loads_and_runs_in_docker(docker: daemons.Docker, base: ufs.Image, rules: str,
                                            tmp_path: Path) -> None:
    """Ours, saved with docker_archive.save and `docker load`ed, prints what Docker's own build prints."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(RUNNABLE)
    (ctx / "a.txt").write_text("from the context\n")
    b = ufs.Builder(isolation="python")
    b.add(base, "busybox")
    r = b.build(ctx, tag="ours:1", rules=rules)
    ufs.docker_archive.save(r.image, str(tmp_path / "ours.tar"), tags=[f"ours-{rules}:1"])
    try:
        docker.run("load", "-i", str(tmp_path / "ours.tar"))
        docker.run("build", "--network", "none", "-t", f"theirs-{rules}:1", str(ctx),
                   env={"DOCKER_BUILDKIT": "1" if rules == "buildkit" else "0"})
        ours = docker.text("run", "--rm", "--network", "none", f"ours-{rules}:1")
        theirs = docker.text("run", "--rm", "--network", "none", f"theirs-{rules}:1")
        assert "hello\nfrom the context\n" in ours
        assert ours == theirs
    finally:
        _reset(docker, [f"ours-{rules}:1", f"theirs-{rules}:1"])
