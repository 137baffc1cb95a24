"""The analysis library on its own: history/inspect shapes and errors, the reclaimable method
against the truth (the kernel's overlayfs squashing the same layers), disk-usage invariants,
and the notebook HTML."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path
from typing import Any

import pytest

import unionfs_sim as ufs
from unionfs_sim import WHITEOUT, Dir, File, Layer, analysis
from unionfs_sim.errors import FormatError

from .analysis_images import CATALOGUE


def kernel_squashed_size(image: ufs.Image) -> int:
    """Bytes of regular-file content the kernel's overlay of the layers shows, each inode once."""
    from unionfs_sim.testing.kernel import KernelOverlay, KernelUnavailable

    try:
        k = KernelOverlay(image.layers)
        k.__enter__()
    except KernelUnavailable as e:
        pytest.skip(f"no kernel overlayfs here: {e}")
    try:
        seen: set[int] = set()
        total = 0
        todo = ["/"]
        while todo:
            top = todo.pop()
            for name in k.fs.listdir(top):
                path = top.rstrip("/") + "/" + name
                try:
                    st = k.fs.lstat(path)
                except FileNotFoundError:
                    continue  # a whiteout the kernel lists in a one-layer directory but cannot look up
                if stat.S_ISDIR(st.st_mode):
                    todo.append(path)
                elif stat.S_ISREG(st.st_mode) and st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
        return total
    finally:
        k.__exit__(None, None, None)


# Where dive and the truth part ways, and which method matches it (bytes squashing saves).
TRUTH = {
    # name: (reclaimable bytes, does dive's wasted_bytes match it?)
    "overwrite_chain": (7000, False),      # dive adds the kept 5000-byte copy: 12000
    "deletes": (3510, False),              # dive ignores the deleted directory: 500
    "opaque_dir": (1700, False),           # dive drops the opaque marker: 0
    "hides_nothing": (2200, False),        # dive stops at the whiteout that hides nothing: 0
    "hard_links": (300, False),            # dive counts the overwritten link name and the kept copies: 2605
    "chmod_only": (20000, False),          # dive counts both copies: 40000
    "duplicate_layer": (6007, False),      # dive counts both copies: 12014
    "one_layer": (0, True),
    "base_whiteout": (400, False),         # dive stops scoring the base at its whiteout: 0
    "implied_parents": (800, False),       # dive sizes the implied directory 0
    "many_files": (2190, False),            # dive counts the kept copies too
    "empty_dirs_and_links": (0, True),
    "scratch_file_deleted_same_step": (9000, True),  # a deleted file: dive's count is right here
}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_reclaimable_is_what_squashing_saves(name: str) -> None:
    image = CATALOGUE[name]()
    e = analysis.efficiency(image)
    stored = sum(x.size for x in image.layers)
    squashed = kernel_squashed_size(image)
    truth = stored - squashed
    assert analysis.squash(image).size == squashed
    assert e.reclaimable_bytes == e.wasted_bytes == truth
    want, dive_right = TRUTH[name]
    assert truth == want
    d = analysis.efficiency(image, method="dive")
    assert (d.wasted_bytes == truth) is dive_right
    assert d.reclaimable_bytes == truth
    assert e.score == (1.0 if stored == 0 else squashed / stored)


def test_findings_name_layers_steps_and_kinds() -> None:
    e = analysis.efficiency(CATALOGUE["chmod_only"]())
    (f,) = e.findings
    assert (f.path, f.count, f.bytes, f.layers, f.kind) == ("/opt/big.bin", 2, 20000, (0, 1), "metadata-only")
    assert f.steps == ("ADD big.bin /opt/", "RUN chmod +x /opt/big.bin")
    kinds = {f.path: f.kind for f in analysis.efficiency(CATALOGUE["hides_nothing"]()).findings}
    assert kinds == {"/etc/a": "overwritten", "/etc/b": "deleted", "/var/cache/c1": "opaque",
                     "/nothing": "whiteout-hides-nothing"}
    assert e.files == [("/opt/big.bin", 2, 20000)]


def test_scratch_and_one_layer_are_sensible() -> None:
    empty = ufs.Image.from_layers([])
    for method in ("reclaimable", "dive"):
        e = analysis.efficiency(empty, method=method)
        assert (e.score, e.wasted_bytes, e.files) == (1.0, 0, [])
    assert analysis.efficiency(empty).user_wasted_percent == 0.0
    assert math.isnan(analysis.efficiency(empty, method="dive").user_wasted_percent)  # dive: 0/0
    one = analysis.efficiency(CATALOGUE["one_layer"]())
    assert (one.score, one.user_wasted_percent) == (1.0, 0.0)
    json.dumps(analysis.efficiency(empty, method="dive").to_json(), allow_nan=False)


def test_history_rows_and_errors() -> None:
    layers = [Layer.from_dict({"a": b"x" * 10}), Layer.from_dict({"b": ufs.Symlink("a")})]
    hist = [ufs.History(created_by="ADD a", created="2024-01-02T03:04:05.500000000Z"),
            ufs.History(created_by="ENV X=1", empty_layer=True),
            ufs.History(created_by="RUN ln -s a b", comment="c", created="2024-01-02T04:04:05+01:00")]
    img = ufs.Image.from_layers(layers, history=hist, config=ufs.ImageConfig(created="2024-01-02T04:04:05.000+01:00"))
    rows = analysis.history(img, tags=["t:1"])
    assert [(r.created_by, r.size, r.empty_layer, r.layer) for r in rows] == [
        ("RUN ln -s a b", 1, False, 1), ("ENV X=1", 0, True, None), ("ADD a", 10, False, 0)]
    assert rows[0].id == img.id and rows[0].tags == ("t:1",) and rows[1].id == "<missing>"
    assert rows[0].created_unix == rows[2].created_unix == 1704164645
    assert [r.size for r in analysis.history(img, rule="tar")] == [0, 0, 10]
    insp = img.inspect()
    assert insp["Created"] == "2024-01-02T04:04:05+01:00" and insp["Comment"] == "c" and insp["Size"] == 11
    assert insp["RootFS"] == {"Type": "layers", "Layers": img.diff_ids}
    assert ufs.Image.from_layers([]).inspect()["RootFS"] == {"Type": "layers"}
    with pytest.raises(ValueError, match="2 size rules for 1 layers"):
        analysis.history(ufs.Image.from_layers(layers[:1]), rule=["tar", "tar"])
    # More non-empty steps than layers: Docker refuses ("too many non-empty layers").
    cfg = json.loads(img.config_bytes)
    cfg["history"].append({"created_by": "RUN extra"})
    with pytest.raises(FormatError, match="3 non-empty entries for 2 layers"):
        ufs.Image.from_parts(img.layers, json.dumps(cfg).encode())


def test_disk_usage_shares_by_chain_not_by_diff_id() -> None:
    base = Layer.from_dict({"bin/": Dir(), "bin/sh": File(b"s" * 1000, mode=0o755)})
    common = Layer.from_dict({"app/lib": b"L" * 500})
    a = ufs.Image.from_layers([base, common, Layer.from_dict({"app/a": b"a" * 10})])
    b = ufs.Image.from_layers([base, common, Layer.from_dict({"app/b": b"b" * 20})])
    c = ufs.Image.from_layers([Layer.from_dict({"other": b"o" * 7}), common])  # same diff_id, other parent
    web = a.container()
    web.fs.write_bytes("/app/a", b"changed")
    du = analysis.disk_usage({"a:1": a, "a:latest": a, "b:1": b, "c:1": c}, {"web": web})
    rows = {i.name: i for i in du.images}
    assert (rows["a:1"].size, rows["a:1"].shared_size, rows["a:1"].containers) == (1510, 1500, 1)
    assert rows["a:latest"] == attrs_evolve(rows["a:1"], name="a:latest")
    assert (rows["c:1"].size, rows["c:1"].shared_size) == (507, 0)
    # each shared chain once plus every image's unique part is the store
    uniques = {i.id: i.unique_size for i in du.images}
    assert sum(uniques.values()) + 1000 + 500 == du.layers_size == 1000 + 500 + 10 + 20 + 7 + 500
    (w,) = du.containers
    assert (w.name, w.image, w.size, w.virtual_size) == ("web", "a:1", 7, 1517)
    stray = analysis.disk_usage({}, {"x": b.container()})
    assert [i.name for i in stray.images] == ["<none>:<none>"]


def attrs_evolve(row: analysis.ImageUsage, **kw: object) -> analysis.ImageUsage:
    import attrs

    return attrs.evolve(row, **kw)


def test_ci_rules_as_dive() -> None:
    e = analysis.efficiency(CATALOGUE["chmod_only"](), method="dive")
    v = analysis.evaluate_ci(e)
    assert not v.passed and v.exit_code == 1
    assert {r.name: r.status for r in v.rules} == {"highestUserWastedPercent": "FAIL", "highestWastedBytes": "SKIP",
                                                   "lowestEfficiency": "FAIL"}
    assert analysis.evaluate_ci(e, {"lowestEfficiency": "0.5", "highestUserWastedPercent": "disabled"}).passed
    bad = analysis.evaluate_ci(e, {"lowestEfficiency": "2"})
    assert bad.misconfigured and not bad.passed
    text = "rules:\n  lowestEfficiency: 0.95 # comment\nother: 1\n"
    assert analysis.read_ci_config(text) == {"lowestEfficiency": "0.95"}
    with pytest.raises(ValueError, match=r"\.dive-ci:2"):
        analysis.read_ci_config("rules:\n  nonsense\n")


def test_parse_bytes_as_go_humanize() -> None:
    from unionfs_sim.analysis.efficiency import parse_bytes

    got = [parse_bytes(s) for s in ("20MB", "1.5 GiB", "1,000", "42", "3k")]
    assert got == [20_000_000, 1610612736, 1000, 42, 3000]
    with pytest.raises(ValueError, match="unhandled size name"):
        parse_bytes("3 parsecs")


def test_html_reprs_are_self_contained() -> None:
    img = CATALOGUE["hides_nothing"]()
    c = img.container()
    c.fs.write_bytes("/etc/a", b"<script>alert(1)</script>")
    reg = ufs.Registry()
    reg.push(img, "example.com/app:1")
    for obj in (img.layers[0], img, c, reg, analysis.efficiency(img), analysis.efficiency(img, method="dive"),
                analysis.disk_usage({"app": img}, {"web": c})):
        html = obj._repr_html_()
        assert "<script" not in html.lower() and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
        assert html.startswith("<div")
    assert "<svg" in img._repr_html_() and "upper (writable)" in c._repr_html_()
    assert "whiteout-hides-nothing" in analysis.efficiency(img)._repr_html_()
    assert "/etc/b" in img.layers[1]._repr_html_() and "whiteout" in img.layers[1]._repr_html_()


def test_squash_keeps_hard_links_and_drops_opaque() -> None:
    img = CATALOGUE["hard_links"]()
    flat = analysis.squash(img)
    assert flat["lib/other"] is flat["lib/other2"]
    assert flat["lib/libc.so"].data == b"stub\n"  # type: ignore[union-attr]
    opq = analysis.squash(CATALOGUE["opaque_dir"]())
    assert not opq["var/cache"].opaque and set(opq) >= {"var/cache/new"} and "var/cache/one" not in opq  # type: ignore[union-attr]
    assert WHITEOUT not in opq.values()


def test_scan_refuses_a_corrupt_layer_naming_it(tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    ufs.docker_archive.save(CATALOGUE["deletes"](), archive)
    raw = bytearray(archive.read_bytes())
    top = ufs.docker_archive.load(archive).diff_ids[-1][7:]
    at = raw.find(b"usr/.wh.lib")  # a header inside the top layer's tar
    assert at > 0 and raw.find(top.encode()) >= 0
    raw[at + 148] ^= 0x01  # a digit of its checksum field: the header no longer matches it
    archive.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=f"{top}.*checksum"):
        analysis.scan(archive)


def test_layer_chart_shows_each_layers_waste() -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    import matplotlib

    matplotlib.use("Agg")
    e = analysis.efficiency(CATALOGUE["chmod_only"]())
    ax = e.plot()
    shown, wasted = ax.containers
    assert [b.get_width() for b in shown] == [1, 20000]
    assert [b.get_width() for b in wasted] == [20000, 0]


def test_progress_hooks(tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    ufs.docker_archive.save(CATALOGUE["deletes"](), archive)
    seen: list[tuple[int, int, str]] = []
    analysis.scan(archive, progress=lambda d, t, w: seen.append((d, t, w)))
    assert [(d, t) for d, t, _ in seen] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    steps: list[int] = []
    analysis.export(CATALOGUE["deletes"](), tmp_path / "flat.tar", progress=lambda d, t, w: steps.append(d))
    assert steps == [0, 1, 2]


def test_random_images_reclaimable_is_the_kernels_squash() -> None:
    from hypothesis import HealthCheck, given, settings

    from unionfs_sim.testing import strategies

    @settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategies.images(max_layers=5))
    def check(image: ufs.Image) -> None:
        squashed = kernel_squashed_size(image)
        assert analysis.efficiency(image).reclaimable_bytes == sum(x.size for x in image.layers) - squashed
        assert analysis.squash(image).size == squashed

    check()


def test_shown_files_walk_equals_the_flattened_stack() -> None:
    """efficiency's one-pass walk of which files show agrees with the Lower, on random stacks."""
    from hypothesis import HealthCheck, given, settings

    from unionfs_sim.analysis.efficiency import _shown_files
    from unionfs_sim.lower import Lower
    from unionfs_sim.testing import strategies

    @settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategies.images(max_layers=6))
    def check(image: ufs.Image) -> None:
        got = _shown_files(image.layers)
        low = Lower(image.layers)
        want = [{k for k, e in x.items() if isinstance(e, ufs.File) and low.where.get(k) == i and low.nodes.get(k) is e}
                for i, x in enumerate(image.layers)]
        assert got is None or got == want

    check()


def _add_path(root: Any, parts: list[str], size: int, is_dir: bool) -> None:
    """dive's ``FileTree.AddPath`` as dive writes it: from the root, missing parents made with
    an empty FileInfo, stopping at a missing name that starts with ``.wh..wh.``."""
    from unionfs_sim.analysis import _dive

    node = root
    for i, name in enumerate(parts):
        nxt = node.kids.get(name)
        if nxt is None:
            if name.startswith(".wh..wh."):
                return
            nxt = node.kids[name] = _dive._Node(name)
        node = nxt
        if i == len(parts) - 1:
            node.size, node.is_dir = size, is_dir


def _shape(node: Any) -> tuple[Any, ...]:
    return (node.size, node.is_dir, {k: _shape(c) for k, c in node.kids.items()})


def test_dive_layer_tree_equals_dives_add_path() -> None:
    """``_dive.layer_tree`` (each name added from its parent's node) builds the tree dive's
    ``processLayerTar`` builds, adding each tar name from the root, on random layers."""
    from hypothesis import HealthCheck, given, settings

    from unionfs_sim.analysis import _dive
    from unionfs_sim.codec.tar import tar_names
    from unionfs_sim.testing import strategies

    @settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategies.images(max_layers=3))
    def check(image: ufs.Image) -> None:
        for layer in image.layers:
            want = _dive._Node("")
            first: set[int] = set()
            for name, node in tar_names(layer):
                if name:
                    size = node.size if isinstance(node, ufs.File) and id(node) not in first else 0
                    first.add(id(node))
                    _add_path(want, name.split("/"), size, isinstance(node, ufs.Dir))
            assert _shape(_dive.layer_tree(layer).root) == _shape(want)

    check()


def _stack_as_dive_walks(tree: Any, upper: Any) -> None:
    """dive's ``FileTree.Stack`` step by step (the transcription ``_dive._stack`` replaced):
    ``upper`` children first, names sorted, each path added from the root."""
    from unionfs_sim.analysis import _dive

    order: list[tuple[list[str], Any]] = []

    def visit(node: Any, parts: list[str]) -> None:
        for k in _dive._sorted(node.kids):
            visit(node.kids[k], [*parts, k])
            order.append(([*parts, k], node.kids[k]))

    visit(upper, [])
    for parts, node in order:
        if node.name.startswith(".wh."):
            parent = _dive._get(tree, parts[:-1])
            if parent is not None:
                parent.kids.pop(node.name[len(".wh."):], None)
        else:
            _add_path(tree, parts, node.size, node.is_dir)


def test_dive_stacking_equals_dives_own_walk() -> None:
    """``_dive._stack`` (both trees side by side) leaves the tree dive's walk leaves, on random stacks."""
    from hypothesis import HealthCheck, given, settings

    from unionfs_sim.analysis import _dive
    from unionfs_sim.testing import strategies

    @settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategies.images(max_layers=6))
    def check(image: ufs.Image) -> None:
        trees = [_dive.layer_tree(x).root for x in image.layers]
        a, b = _dive._copy(trees[0]), _dive._copy(trees[0])
        for t in trees[1:]:
            _dive._stack(a, t)
            _stack_as_dive_walks(b, t)
            assert _shape(a) == _shape(b)

    check()
