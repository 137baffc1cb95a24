"""Parent links of classic builds: ``Parent`` in ``docker image inspect`` and the ids of ``docker history``.

Docker's classic builder (``DOCKER_BUILDKIT=0``) commits an image after every step and links
it to the image of the step before (moby ``builder/dockerfile`` ``exportImage``, the image
store's ``SetParent``); ``docker history`` walks those links to put an id on each row of an
image it built (``daemon/images/image_history.go``), ``Parent`` names the previous step's
image. BuildKit commits only the result: ``Parent`` is empty and every row but the newest is
``<missing>``. The Builder keeps the same chain (``Builder.by_id``/``Builder.parents``) and
``analysis.history(image, store=b)`` / ``image.inspect(store=b)`` read it.

The ids themselves differ from Docker's above the base image, by design: Docker's
intermediate config holds the build container's id (``container``, ``container_config``
with its hostname and the step's ``Cmd``), the wall-clock time of the commit and its own
version, none of which a model can reproduce, while ours hold the builder's epoch and no
container. So the Docker test compares structure: the same rows carry ids or
``<missing>``, ``Parent`` is set in the same cases and equals the id on row 1, each row's
id names an image whose own history is the rows from there down, ids map one to one
between the two sides (a step both caches share has one id on each side), a rebuild hitting
the cache gives the same ids, and the one image both sides share byte for byte, the
daemon's busybox loaded into the model with ``docker save``, has the same id. Each step's
``ContainerConfig`` (the config it ran with, what the cache compares) equals Docker's but
for the hostname (the build container's) and the parent id in ``Image``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

import unionfs_sim as ufs
from unionfs_sim import analysis
from unionfs_sim.analysis.history import MISSING

from .daemons import Docker
from .test_analysis_docker import api, docker_inspect, saved

Row = tuple[str, str, tuple[str, ...]]
"""One history row as both sides are compared: (id, created_by, tags)."""


@attrs.frozen
class Case:
    """One Dockerfile built under one rule set and tagged ``tag``."""

    name: str
    rules: str
    dockerfile: str

    @property
    def tag(self) -> str:
        """The tag both sides give the result."""
        return f"parent-{self.name}-{self.rules}:1"


def cases() -> list[Case]:
    """Metadata-only steps, RUN and COPY, multi-stage, scratch, FROM only, FROM a local image
    (made by the same and by the other builder), under both rule sets; in build order."""
    out: list[Case] = []
    for rules in ("classic", "buildkit"):
        out += [
            Case("meta", rules, 'FROM busybox\nENV A=1\nLABEL x=y\nCMD ["sh"]\n'),
            Case("run", rules, "FROM busybox\nENV A=1\nRUN echo hi > /hi\nRUN true\nCOPY f.txt /f.txt\n"
                               "WORKDIR /app\n"),
            Case("multi", rules, "FROM busybox AS b\nRUN echo b > /b\nFROM b AS c\nENV C=1\n"
                                 "FROM busybox\nCOPY --from=c /b /b2\nLABEL z=1\n"),
            Case("scratch", rules, "FROM scratch\nCOPY f.txt /f.txt\nENV Z=1\n"),
            Case("onlyfrom", rules, "FROM busybox\n"),
            Case("local", rules, f"FROM parent-run-{rules}:1\nENV B=2\nRUN echo x > /x\n"),
        ]
    out += [Case("on-buildkit", "classic", "FROM parent-run-buildkit:1\nENV B=2\n"),
            Case("on-classic", "buildkit", "FROM parent-run-classic:1\nENV B=3\n")]
    return out


CASES = cases()


def case(name: str, rules: str) -> Case:
    """The case of that name and rule set."""
    (c,) = [c for c in CASES if (c.name, c.rules) == (name, rules)]
    return c


CONTEXT = {"f.txt": "hello\n"}
MINE = {c.tag for c in CASES} | {"busybox:latest"}
"""The tags this module gives (others of the session are left out of the rows compared)."""


def chain_problems(rows: Sequence[Row], parent: str, rules: str, history_of: Callable[[str], list[Row]]) -> list[str]:
    """What is wrong with ``rows`` (an image's history) and ``parent`` (its inspect ``Parent``)
    as a parent chain: the invariants Docker's own images keep, checked on either side."""
    bad: list[str] = []
    ids = [r[0] for r in rows]
    if rows and ids[0] == MISSING:
        bad.append("the newest row has no id")
    known = [i for i in ids if i != MISSING]
    if ids[:len(known)] != known:
        bad.append(f"ids are not a run from the top: {ids}")
    if rules == "buildkit" and parent:
        bad.append(f"BuildKit image with a Parent {parent}")
    if parent != (ids[1] if len(ids) > 1 and ids[1] != MISSING else ""):
        bad.append(f"Parent {parent!r} is not the id on row 1 ({ids[1:2]})")
    for k, image_id in enumerate(known):
        if history_of(image_id) != list(rows[k:]):
            bad.append(f"the history of row {k}'s image {image_id[:19]} is not the rows from {k} down")
    return bad


@attrs.define
class Side:
    """One builder's results: per case the history rows and the inspect Parent of its image."""

    rows: dict[Case, list[Row]] = attrs.field(factory=dict)
    parent: dict[Case, str] = attrs.field(factory=dict)
    config_image: dict[Case, str] = attrs.field(factory=dict)
    """``Config.Image`` of the inspect output: the parent again, where Docker writes one."""


def our_rows(b: ufs.Builder, image: ufs.Image) -> list[Row]:
    """Our ``docker history`` rows with the parent chain the builder keeps."""
    return [(r.id, r.created_by, tuple(t for t in r.tags if t in MINE)) for r in analysis.history(image, store=b)]


def their_rows(docker: Docker, ref: str) -> list[Row]:
    """The daemon's history rows (from its API: the CLI does not print tags)."""
    return [(h["Id"], h["CreatedBy"], tuple(t for t in h["Tags"] or () if t in MINE))
            for h in api(docker, f"/images/{ref}/history")]


def build_ours(b: ufs.Builder, ctx: Path, cases: Sequence[Case]) -> Side:
    """Every case built by the model, in order; rows read when all are built (tags come later)."""
    side = Side()
    for c in cases:
        b.build(ctx, tag=c.tag, rules=c.rules, dockerfile_text=c.dockerfile)
    for c in cases:
        image = b.resolve(c.tag)
        side.rows[c] = our_rows(b, image)
        doc = image.inspect(store=b)
        side.parent[c], side.config_image[c] = doc["Parent"], doc["Config"]["Image"]
    return side


def build_theirs(docker: Docker, ctx: Path, cases: Sequence[Case]) -> Side:
    """Every case built by the daemon, in order; rows read when all are built."""
    side = Side()
    for c in cases:
        (ctx / "Dockerfile").write_text(c.dockerfile)
        docker.run("build", "-q", "--network", "none", "-t", c.tag, str(ctx),
                   env={"DOCKER_BUILDKIT": "1" if c.rules == "buildkit" else "0"})
    for c in cases:
        side.rows[c] = their_rows(docker, c.tag)
        doc = docker_inspect(docker, c.tag)
        side.parent[c], side.config_image[c] = doc["Parent"], doc["Config"]["Image"]
    return side


# --- the model alone (runs everywhere) -------------------------------------------------------


@pytest.fixture(scope="module")
def model_base() -> ufs.Image:
    """A small base standing in for busybox (the shell subset runs the RUN steps)."""
    return ufs.Image.from_layers([ufs.Layer.from_dict({"bin/": ufs.Dir(), "bin/sh": ufs.File(b"sh", mode=0o755),
                                                       "etc/": ufs.Dir()})],
                                 history=[ufs.History(created_by="ADD rootfs")])


def _model_builder(base: ufs.Image) -> ufs.Builder:
    b = ufs.Builder(isolation="python")
    b.add(base, "busybox")
    return b


def _context(tmp: Path) -> Path:
    ctx = tmp / "ctx"
    ctx.mkdir()
    for name, text in CONTEXT.items():
        (ctx / name).write_text(text)
    return ctx


def test_model_chains(model_base: ufs.Image, tmp_path: Path) -> None:
    """Our classic images link every step, BuildKit's none; a rebuild reuses every id."""
    b = _model_builder(model_base)
    ctx = _context(tmp_path)
    first = build_ours(b, ctx, CASES)

    def history_of(image_id: str) -> list[Row]:
        return our_rows(b, b.resolve(image_id))

    for c in CASES:
        assert chain_problems(first.rows[c], first.parent[c], c.rules, history_of) == [], c
        assert first.config_image[c] == first.parent[c]   # Docker writes the parent into Config.Image too
    run = first.rows[case("run", "classic")]
    assert [r[0] != MISSING for r in run] == [True] * len(run) == [True] * 6   # every row down to the base
    # the base row shows every tag of the base: FROM-only classic builds tag the base itself
    assert run[-1] == (model_base.id, "ADD rootfs", ("busybox:latest", "parent-onlyfrom-classic:1"))
    run_bk = first.rows[case("run", "buildkit")]
    assert [r[0] for r in run_bk[1:]] == [MISSING] * (len(run_bk) - 1)
    only = case("onlyfrom", "classic")
    assert first.parent[only] == "" and first.rows[only][0][0] == model_base.id   # FROM only: the base itself
    links = dict(b.parents)
    classic = [c for c in CASES if c.rules == "classic"]
    b.epoch += 3600   # a hit reuses the committed image, created time and all (Docker's cache does too)
    again = build_ours(b, ctx, classic)
    assert {c: again.rows[c] for c in classic} == {c: first.rows[c] for c in classic}
    assert {c: again.parent[c] for c in classic} == {c: first.parent[c] for c in classic}
    assert b.parents == links   # nothing committed anew
    # the store's tags stand in for repo_tags when none are given
    image = b.images[CASES[0].tag]
    assert image.inspect(store=b)["RepoTags"] == [CASES[0].tag]
    assert image.inspect()["Parent"] == "" and analysis.history(image)[1].id == MISSING


def test_classic_cache_is_the_parent_chain(model_base: ufs.Image) -> None:
    """A classic step hits only on the same parent image with the same config; the hit is that child."""
    b = _model_builder(model_base)
    r1 = b.build({}, dockerfile_text="FROM busybox\nENV A=1\nENV B=2\n", rules="classic")
    r2 = b.build({}, dockerfile_text="FROM busybox\nENV A=1\nENV B=3\n", rules="classic")
    assert [s.cached for s in r2.steps] == [None, True, False]
    p1, p2 = b.parent(r1.image.id), b.parent(r2.image.id)
    assert p1 == p2 and b.parent(p1) == model_base.id   # both ENV B steps are children of one ENV A image
    assert {i for i, p in b.parents.items() if p == p1} == {r1.image.id, r2.image.id}
    r3 = b.build({}, dockerfile_text="FROM busybox\nENV A=0\nENV B=2\n", rules="classic")
    assert [s.cached for s in r3.steps] == [None, False, False]   # same config as r1's last, other parent
    assert r3.image.id != r1.image.id


# --- against the real Docker -------------------------------------------------------------------


@pytest.fixture(scope="module")
def both(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every case built twice by the daemon and by the model (on the daemon's own busybox)."""
    tmp = tmp_path_factory.mktemp("classic-parent")
    ctx = _context(tmp)
    base = saved(docker, docker.base, tmp)
    b = ufs.Builder(isolation="python")
    b.add(base, "busybox")
    try:
        out = {"b": b, "base": base,
               "theirs": build_theirs(docker, ctx, CASES), "ours": build_ours(b, ctx, CASES),
               "theirs again": build_theirs(docker, ctx, CASES), "ours again": build_ours(b, ctx, CASES)}
        yield out
    finally:
        docker.run("rmi", "-f", *sorted(c.tag for c in CASES), check=False)
        docker.run("image", "prune", "-f", check=False)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}-{c.rules}" for c in CASES])
def test_same_chain_as_docker(docker: Docker, both: dict[str, Any], case: Case) -> None:
    """Rows with ids vs ``<missing>``, Parent, created_by and tags on each row, as Docker has them;
    each row's id names an image whose history is the rows from there down, on both sides."""
    theirs: Side = both["theirs"]
    ours: Side = both["ours"]
    b: ufs.Builder = both["b"]
    t, o = theirs.rows[case], ours.rows[case]
    shape = [[(r[0] == MISSING, r[1], r[2]) for r in rows] for rows in (t, o)]
    assert shape[1] == shape[0]
    assert bool(ours.parent[case]) == bool(theirs.parent[case])
    assert theirs.config_image[case] == theirs.parent[case] and ours.config_image[case] == ours.parent[case]
    assert chain_problems(t, theirs.parent[case], case.rules, lambda i: their_rows(docker, i)) == []
    assert chain_problems(o, ours.parent[case], case.rules, lambda i: our_rows(b, b.resolve(i))) == []


def test_ids_correspond_and_survive_a_rebuild(both: dict[str, Any]) -> None:
    """One id on our side per id on Docker's (a step the cache shares between builds has one
    image on each side), the base's id equal on both, and a cached rebuild keeps every id."""
    theirs: Side = both["theirs"]
    ours: Side = both["ours"]
    assert both["theirs again"].rows == theirs.rows and both["theirs again"].parent == theirs.parent
    assert both["ours again"].rows == ours.rows and both["ours again"].parent == ours.parent
    pairs = {(tr[0], orow[0]) for c in CASES for tr, orow in zip(theirs.rows[c], ours.rows[c], strict=True)
             if tr[0] != MISSING}
    assert len({t for t, _ in pairs}) == len({o for _, o in pairs}) == len(pairs)
    base: ufs.Image = both["base"]
    assert (base.id, base.id) in pairs   # the one image both sides hold byte for byte
    assert any(c.rules == "classic" and len([r for r in theirs.rows[c] if r[0] != MISSING]) > 3 for c in CASES)


def step_kind(created_by: str) -> str:
    """The instruction of a classic history entry: ``/bin/sh -c #(nop)  ENV A=1`` -> ENV, a command -> RUN."""
    if "#(nop)" in created_by:
        return created_by.split("#(nop)", 1)[1].split()[0]
    return "RUN" if created_by else ""


def test_container_config_as_docker(docker: Docker, both: dict[str, Any]) -> None:
    """Each classic step's image keeps the config the step ran with (its command in ``Cmd``,
    the parent in ``Image``), as Docker's ``ContainerConfig`` does, on every row with an id;
    only the build container's hostname and the ids differ."""
    b: ufs.Builder = both["b"]
    seen = set()
    for c in CASES:
        for t_row, o_row in zip(both["theirs"].rows[c], both["ours"].rows[c], strict=True):
            if t_row[0] == MISSING:
                break
            want, got = docker_inspect(docker, t_row[0]), b.resolve(o_row[0]).inspect(store=b)
            for doc in (want, got):
                assert doc["ContainerConfig"]["Image"] == doc["Parent"]
                doc["ContainerConfig"].pop("Hostname")
                doc["ContainerConfig"].pop("Image")
            assert got["ContainerConfig"] == want["ContainerConfig"], (c, t_row[1])
            seen.add(step_kind(o_row[1]))
    assert {"ENV", "LABEL", "CMD", "WORKDIR", "COPY", "RUN"} <= seen
