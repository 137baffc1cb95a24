"""``unionfs-sim build``: the step display, --explain, --json, --cache between runs, errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import unionfs_sim as ufs
from unionfs_sim.cli import main


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    layer = ufs.Layer.from_dict({"etc/": ufs.Dir(), "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    base = ufs.Image.from_layers([layer])
    ufs.docker_archive.save(base, str(tmp_path / "base.tar"), tags=["base:1"])
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base:1\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt\n")
    (ctx / "a.txt").write_text("1\n")
    return ctx, tmp_path / "base.tar"


def test_build_twice_with_a_cache_file_and_explain(tmp_path: Path) -> None:
    ctx, base = _setup(tmp_path)
    common = ["build", "--image", f"base:1=docker-archive:{base}", "--cache", str(tmp_path / "cache"),
              "--isolation", "python"]
    first = CliRunner().invoke(main, [*common, "-t", "app:1", str(ctx)])
    assert first.exit_code == 0, first.output
    assert "#2 [2/3] COPY a.txt /a.txt\n#2 MISS" in first.output and "naming to app:1" in first.output
    (ctx / "a.txt").write_text("2\n")
    second = CliRunner().invoke(main, [*common, "--explain", "-o", f"oci:{tmp_path}/out:2", str(ctx)])
    assert second.exit_code == 0, second.output
    assert "step 2 (line 2) COPY a.txt /a.txt: file a.txt changed: content" in second.output
    assert ufs.oci.load(str(tmp_path / "out"), tag="2").fs.read_bytes("/b.txt") == b"2\n"
    third = CliRunner().invoke(main, [*common, "--json", str(ctx)])
    doc = json.loads(third.output)
    assert [s["cached"] for s in doc["steps"]] == [None, True, True]


def test_build_error_is_one_line_with_the_place(tmp_path: Path) -> None:
    ctx, base = _setup(tmp_path)
    (ctx / "Dockerfile").write_text("FROM base:1\nCOPY missing /x\n")
    r = CliRunner().invoke(main, ["build", "--image", f"base:1=docker-archive:{base}", str(ctx)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "Dockerfile:2:1: COPY failed: file not found in build context" in r.output


def test_a_cache_file_from_before_the_image_store_still_loads(tmp_path: Path) -> None:
    """A builder pickled before classic builds kept intermediate images had no by_id/parents
    and records without ``image``: unpickling keeps its BuildKit records (a hit) and drops
    its classic ones (a first build again) instead of failing on a hit."""
    from unionfs_sim.build import Builder

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nENV A=1\nCOPY f /f\n")
    (ctx / "f").write_text("x\n")
    b = Builder(isolation="python")
    for rules in ("classic", "buildkit"):
        b.build(str(ctx), rules=rules)
    state = dict(b.__dict__)
    del state["by_id"], state["parents"]
    for cache in state["caches"].values():
        for rec in cache.records.values():
            object.__delattr__(rec, "image")  # as the older Record, which had no such field
    old = Builder.__new__(Builder)
    old.__setstate__(state)
    assert [s.cached for s in old.build(str(ctx), rules="buildkit").steps] == [None, None, True]
    assert [s.cached for s in old.build(str(ctx), rules="classic").steps] == [None, False, False]
    assert [s.cached for s in old.build(str(ctx), rules="classic").steps] == [None, True, True]
