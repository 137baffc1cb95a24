"""The notebooks of notebooks/: built from their sources, run top to bottom, and exported to HTML offline.

Each notebook is executed with nbclient in a fresh kernel (cwd: notebooks/), in under
60 s, failing on any error or failed ``assert`` cell; the fresh outputs must equal the
stored ones (text, tables and pictures as text; images by kind), except in cells tagged
``env`` whose output depends on the machine (root, FUSE, tool versions). Regenerate
with ``python notebooks/build.py --execute``.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import os
import re
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
NBDIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NBDIR.glob("[0-9][0-9]-*.ipynb"))
LIMIT_S = 60.0
REBUILD = "run `python notebooks/build.py --execute` and commit the notebooks"

_spec = importlib.util.spec_from_file_location("nb_build", NBDIR / "build.py")
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

_executed: dict[str, tuple[Any, float]] = {}


def run(path: Path) -> tuple[Any, float]:
    """The notebook at ``path`` executed afresh (once per session), and the seconds it took."""
    if path.name not in _executed:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        client = NotebookClient(nb, timeout=int(LIMIT_S), kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": str(NBDIR)}})
        t = time.perf_counter()
        client.execute(env=env)  # raises CellExecutionError naming the cell on any error or failed assert
        _executed[path.name] = (nb, time.perf_counter() - t)
    return _executed[path.name]


def _text(output: Any) -> list[str]:
    """What of one output must not change between runs: text, HTML, SVG; for images only their kind."""
    if output.output_type == "stream":
        return [f"{output.name}: {output.text}"]
    if output.output_type == "error":
        return [f"error: {output.ename}: {output.evalue}"]
    data = output.get("data", {})
    out = []
    for mime in sorted(data):
        if mime in ("text/plain", "text/html", "text/markdown", "image/svg+xml"):
            value = data[mime] if isinstance(data[mime], str) else "".join(data[mime])
            out.append(f"{mime}: {re.sub(r' at 0x[0-9a-f]+', '', value)}")
        else:
            out.append(f"{mime}: <binary>")
    return out


def outputs(nb: Any) -> dict[str, list[str]]:
    """``{cell id: its outputs as text}`` of the code cells not tagged ``env``."""
    return {cell.id: [line for o in cell.outputs for line in _text(o)] for cell in nb.cells
            if cell.cell_type == "code" and build.ENV_TAG not in cell.metadata.get("tags", [])}


def test_every_chapter_has_a_notebook() -> None:
    """Each source in notebooks/src has its stored notebook, and the reverse."""
    sources = {p.stem for p in (NBDIR / "src").glob("[0-9][0-9]-*.py")}
    assert sources == {p.stem for p in NOTEBOOKS}, REBUILD
    assert len(sources) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_source(path: Path) -> None:
    """The stored notebook holds exactly the cells its source file makes (it was rebuilt)."""
    stored = nbformat.read(path, as_version=4)
    made = build.notebook(NBDIR / "src" / (path.stem + ".py"))
    shape = lambda nb: [(c.id, c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]  # noqa: E731
    assert shape(stored) == shape(made), f"{path.name} is older than src/{path.stem}.py: {REBUILD}"
    executed = any(c.cell_type == "code" and c.execution_count for c in stored.cells)
    assert executed, f"{path.name} is stored unexecuted: {REBUILD}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_what_is_stored(path: Path) -> None:
    """Executed top to bottom in under 60 s without error; its outputs are the stored ones."""
    nb, took = run(path)
    print(f"{path.name}: executed in {took:.1f} s")
    assert took < LIMIT_S, f"{path.name} took {took:.1f} s (limit {LIMIT_S:.0f} s)"
    asserts = sum(c.source.count("assert ") for c in nb.cells if c.cell_type == "code")
    assert asserts >= 5, f"{path.name} checks too little of what it teaches ({asserts} asserts)"
    fresh, stored = outputs(nb), outputs(nbformat.read(path, as_version=4))
    for cell_id, want in stored.items():
        got = fresh[cell_id]
        if got != want:
            diff = "\n".join(difflib.unified_diff("\n".join(want).splitlines(), "\n".join(got).splitlines(),
                                                  "stored", "fresh", lineterm="", n=1))
            pytest.fail(f"{path.name} cell {cell_id}: the output changed ({REBUILD} if the lesson did):\n{diff[:3000]}")


_EXTERNAL = re.compile(r'<(?:script|img|link|iframe|source)\b[^>]*\b(?:src|href)="(?!data:|#)([^"]+)"', re.I)


def _html(nb: Any, offline: bool) -> str:
    exporter = HTMLExporter(extra_template_basedirs=[str(NBDIR / "templates")], template_name="offline") if offline \
        else HTMLExporter()
    body, _ = exporter.from_notebook_node(copy.deepcopy(nb))
    return body


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_exports_to_html_offline(path: Path) -> None:
    """``nbconvert --to html`` shows every table and picture inline; the offline template loads nothing from outside."""
    nb, _ = run(path)
    html = _html(nb, offline=True)
    print(f"{path.name}: {len(html) / 1000:.0f} kB of HTML")
    assert _EXTERNAL.findall(html) == [], "the offline export loads a resource from outside"
    n_png = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    n_html = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "text/html" in o.get("data", {}))
    assert html.count('src="data:image/png;base64,') == n_png
    assert html.count("<table") >= sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
                                       if "<table" in o.get("data", {}).get("text/html", ""))
    assert n_png + n_html > 0, f"{path.name} shows nothing but text"
    # the default template loads only scripts these notebooks do not need (maths, widgets, diagrams)
    default = set(_EXTERNAL.findall(_html(nb, offline=False)))
    assert all(re.search(r"/(require\.js|mathjax|mermaid)", u) for u in default), default
