"""The package's imports run one way: no cycles (but ``image`` <-> ``container``), lazy ones included.

The graph is read from the source (every ``import`` statement, inside functions and
``TYPE_CHECKING`` blocks too), so an import hidden in a function to dodge a cycle at
import time still counts: it is an arrow that runs back up.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import unionfs_sim

ROOT = Path(unionfs_sim.__file__).parent
PACKAGE = "unionfs_sim"
ALLOWED_CYCLES = [{"unionfs_sim.image", "unionfs_sim.container"}]
"""``image.container()`` makes a container; a container knows its image (DESIGN.md)."""
DELEGATIONS = {
    ("unionfs_sim.image", "unionfs_sim.analysis.inspect"): "Image.inspect",
    ("unionfs_sim.registry", "unionfs_sim.serve"): "Registry.serve",
}
"""Public methods of the core whose work lives a floor above (DESIGN.md names them on the
object): each is one import inside that method, so importing the core loads nothing above it."""


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package's modules that module ``name`` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from P import x``: the submodule P.x where there is one, else P itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # ``import a.b.c`` of a name inside a module
                t = t.rpartition(".")[0]
            if t.startswith(PACKAGE + ".") and t != name:
                yield t


def graph(*, delegations: bool = False) -> dict[str, set[str]]:
    """Module -> the package's modules it imports; without ``delegations`` the named
    :data:`DELEGATIONS` are left out (they are checked on their own)."""
    mods = modules()
    known = set(mods)
    g = {name: set(imports(name, path, known)) for name, path in mods.items()}
    if not delegations:
        for a, b in DELEGATIONS:
            g.get(a, set()).discard(b)
    return g


def module_level_imports(path: Path) -> set[str]:
    """Names imported by ``path`` outside any function and ``TYPE_CHECKING`` block (what importing it runs)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue  # annotations only: never run
            if isinstance(child, ast.ImportFrom):
                out.add("." * child.level + (child.module or ""))
            elif isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


def cycles(g: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read() -> None:
    g = graph(delegations=True)
    assert "unionfs_sim.layer" in g["unionfs_sim.overlay"]
    assert "unionfs_sim.codec.tar" in g["unionfs_sim.layer"]
    assert "unionfs_sim.fuse.server" in g["unionfs_sim.fuse.mounting"]  # a lazy import, inside a method
    assert {"unionfs_sim.image", "unionfs_sim.container"} in cycles(graph())


def test_no_import_cycles_but_image_and_container() -> None:
    found = [c for c in cycles(graph()) if c not in ALLOWED_CYCLES]
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_never_imports_the_edges() -> None:
    """Below ``image``/``container`` nothing imports a format, a server, the CLI or testing."""
    core = {f"{PACKAGE}.{m}" for m in ("errors", "paths", "nodes", "content", "options", "mediatypes", "layer",
                                       "lower", "overlay", "fs", "image", "container", "reference")}
    edges = ("formats", "fuse", "cli", "testing", "registry", "build", "analysis", "serve")
    g = graph()
    bad = sorted(f"{m} -> {t}" for m in core for t in g.get(m, ())
                 if t.removeprefix(PACKAGE + ".").split(".")[0] in edges)
    assert bad == []


def test_delegations_are_one_lazy_import_each() -> None:
    """Each allowed upward arrow exists, and only inside a function (never at import time)."""
    g = graph(delegations=True)
    mods = modules()
    for (a, b), method in DELEGATIONS.items():
        assert b in g[a], f"{method}: {a} no longer imports {b}; drop it from DELEGATIONS"
        tail = b.removeprefix(PACKAGE + ".")
        assert not any(m.endswith(tail) for m in module_level_imports(mods[a]) if m), \
            f"{a} imports {b} at module level: {method} must import it when called"
