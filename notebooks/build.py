"""Make the notebooks from their sources: ``src/NN-name.py`` (percent format) -> ``NN-name.ipynb``.

The sources are the reviewable form: plain Python files in the "percent" format that
Jupytext, VS Code and Spyder understand (``# %%`` starts a code cell, ``# %% [markdown]``
a markdown cell whose lines are ``# ``-commented; ``# %% tags=["env"]`` tags a cell).
``--execute`` runs each notebook top to bottom with nbclient in this folder and stores
it with its outputs; the outputs are deterministic (the notebooks fix the clock), so a
stored notebook changes only when its lesson does.

    python notebooks/build.py             # regenerate every notebook (no outputs)
    python notebooks/build.py --execute   # regenerate and execute (what is committed)
    python notebooks/build.py --execute 03-layers-copy-up-whiteouts   # just one
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
ENV_TAG = "env"
"""A cell whose output depends on the machine (root, FUSE): its output is not compared."""

_HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse(text: str) -> list[tuple[str, str, list[str]]]:
    """``[(cell_type, source, tags)]`` of a percent-format source."""
    cells: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            cells.append(("markdown" if m["md"] else "code", [], json.loads(m["tags"]) if m["tags"] else []))
            continue
        if not cells:
            if line.strip():
                raise ValueError(f"text before the first '# %%' cell marker: {line!r}")
            continue
        kind, lines, _ = cells[-1]
        if kind == "markdown":
            if line.strip() and not line.startswith("#"):
                raise ValueError(f"markdown cell line not commented with '# ': {line!r}")
            line = line[2:] if line.startswith("# ") else line.lstrip("#")
        lines.append(line)
    out = []
    for kind, lines, tags in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        out.append((kind, "\n".join(lines), tags))
    return out


def notebook(src: Path) -> Any:
    """The notebook (nbformat v4, no outputs) of one source file; cell ids are stable."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source, tags) in enumerate(parse(src.read_text())):
        meta = {"tags": tags} if tags else {}
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = make(source, metadata=meta)
        cell.id = f"{src.stem[:2]}-{i:02d}"
        nb.cells.append(cell)
    return nb


def execute(nb: Any, timeout: int = 60) -> float:
    """Run ``nb`` in place (cwd: this folder) and return the seconds it took."""
    from nbclient import NotebookClient

    t = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    return time.perf_counter() - t


def target(src: Path) -> Path:
    """Where the notebook of ``src`` is stored."""
    return HERE / (src.stem + ".ipynb")


def main(argv: list[str] | None = None) -> int:
    """Regenerate (and with --execute run) the notebooks named, or all of them."""
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--execute", action="store_true", help="execute and store the outputs")
    ap.add_argument("names", nargs="*", help="stems of src/*.py (default: all)")
    a = ap.parse_args(argv)
    sources = sorted(SRC.glob("[0-9]*.py"))
    if a.names:
        sources = [s for s in sources if s.stem in a.names or s.stem[:2] in a.names]
    for src in sources:
        nb = notebook(src)
        took = execute(nb) if a.execute else 0.0
        nbformat.write(nb, target(src))
        print(f"{target(src).name}: {len(nb.cells)} cells" + (f", executed in {took:.1f} s" if a.execute else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
