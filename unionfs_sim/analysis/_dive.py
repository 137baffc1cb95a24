"""dive 0.13's image analysis, reproduced step for step on the model's layers.

dive (github.com/wagoodman/dive, v0.13.1) reads each layer tar of a ``docker save``
archive into a tree (``dive/image/docker/image_archive.go``, ``filetree/file_tree.go``)
and scores it in ``filetree/efficiency.go``; ``image/image.go`` ``Analyze`` adds the
totals. This module builds the same trees from the tar names this library writes
(``formats.tar.tar_names``: what ``docker_archive.save`` puts in the archive) and runs
the same algorithm, faults included, so the numbers are dive's to the byte:

- every *leaf* of each layer's tree is a reference to its path (empty directories too);
  a path referenced from two or more layers is "inefficient", and its wasted bytes are
  the sum over *all* its references, the copy that stays included (wagoodman/dive#684);
- a whiteout of a file adds a reference of size 0 (so the deleted file's bytes count as
  waste); a whiteout of a directory adds the directory's size *from the layers below*,
  as one reference to the directory's path, which lower layers never referenced as a
  leaf, so deleting a directory is never waste;
- opaque markers (``.wh..wh..opq``) are dropped when the tree is built
  (``AddPath``), so an opaque directory hides nothing for dive;
- a whiteout whose path the layers below do not have (a whiteout that hides nothing,
  or any whiteout in the bottom layer) makes ``GetNode`` fail: dive stops scoring
  *that layer* there (the error only goes to its log), and the path's entry keeps its
  initial minimum of -1, which lowers the score's numerator by one byte;
- a directory a layer only implies (no tar entry of its own) gets an empty FileInfo
  (size 0, not a directory), and stacking a later layer copies that empty FileInfo
  over the lower layer's real one;
- a layer's size is the sum of its tar headers' sizes; ``userWastedPercent`` divides
  by every layer but the first (0/0 is NaN, as Go's float division gives);
- the inefficient files are sorted by Go's unstable ``sort.Sort`` (:mod:`._gosort`),
  then listed largest first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import attrs

from ..codec.tar import WHITEOUT_PREFIX, tar_names
from ..layer import Layer
from ..nodes import Dir, File
from ._gosort import go_sort

_DOUBLE_WHITEOUT = ".wh..wh."


class _Node:
    """A node of dive's ``FileTree``: the FileInfo fields the analysis reads."""

    __slots__ = ("is_dir", "kids", "name", "size")

    def __init__(self, name: str, size: int = 0, is_dir: bool = False) -> None:
        self.name = name
        self.kids: dict[str, _Node] = {}
        self.size = size
        self.is_dir = is_dir


def _get(root: _Node, parts: Sequence[str]) -> _Node | None:
    node: _Node | None = root
    for name in parts:
        node = node.kids.get(name) if node is not None else None
    return node


def _sorted(kids: dict[str, _Node]) -> list[str]:
    """Go's ``sort.Strings``: byte order of the UTF-8 names (for ASCII names, plain string order)."""
    if all(map(str.isascii, kids)):
        return sorted(kids)
    return sorted(kids, key=lambda s: s.encode("utf-8", "surrogateescape"))


@attrs.frozen
class _Tree:
    root: _Node
    file_size: int


def layer_tree(layer: Layer) -> _Tree:
    """dive's tree of ``layer``'s canonical tar (``processLayerTar``).

    Each name is added as dive's ``FileTree.AddPath`` adds it (missing parents made with
    an empty FileInfo; a name below a ``.wh..wh.`` component that does not exist yet is
    dropped there), starting from its parent's node found by path (nodes are never
    removed here, so a node once made stays at its path) instead of from the root.
    """
    root = _Node("")
    made: dict[str, _Node] = {"": root}

    def node_at(key: str) -> _Node | None:
        """The node at ``key``, made with its missing parents as AddPath makes them (None where it stops)."""
        got = made.get(key)
        missing = []
        while got is None:
            missing.append(key)
            key = key.rpartition("/")[0]
            got = made.get(key)
        for k in reversed(missing):
            name = k.rpartition("/")[2]
            nxt = got.kids.get(name)
            if nxt is None:
                if name.startswith(_DOUBLE_WHITEOUT):
                    return None
                nxt = got.kids[name] = _Node(name)
            made[k] = got = nxt
        return got

    total = 0
    first: set[int] = set()
    for name, node in tar_names(layer):
        if not name:
            continue  # "./": dive skips "."
        size = 0
        if isinstance(node, File) and id(node) not in first:
            first.add(id(node))
            size = node.size
        total += size
        parent_key, _, base = name.rpartition("/")
        parent = made.get(parent_key)  # (canonical order: nearly always made just before)
        if parent is None:
            at = node_at(name)
            if at is None:
                continue
        else:
            at = parent.kids.get(base)
            if at is None:
                if base.startswith(_DOUBLE_WHITEOUT):
                    continue
                at = parent.kids[base] = _Node(base)
            made[name] = at
        at.size, at.is_dir = size, isinstance(node, Dir)
    return _Tree(root, total)


def _copy(node: _Node) -> _Node:
    out = _Node(node.name, node.size, node.is_dir)
    stack = [(node, out)]
    while stack:
        src, dst = stack.pop()
        for k, c in src.kids.items():
            d = dst.kids[k] = _Node(c.name, c.size, c.is_dir)
            if c.kids:
                stack.append((c, d))
    return out


def _stack(tree: _Node, upper: _Node) -> None:
    """``FileTree.Stack``: whiteouts remove, everything else ``AddPath``s its FileInfo.

    dive visits ``upper`` children first (``VisitDepthChildFirst``, names sorted) and adds
    each path from the root; walking both trees side by side does the same: a directory
    that adding its first child would create is made on the way down (with the empty
    FileInfo AddPath gives it) and gets its own FileInfo after its children, as in dive.
    A whiteout in ``upper`` has no children, and no name in it starts with ``.wh..wh.``
    (AddPath never made one), so AddPath's early return for those cannot happen here.
    """

    def visit(u: _Node, t: _Node) -> None:
        for k in _sorted(u.kids):
            c = u.kids[k]
            if k.startswith(WHITEOUT_PREFIX):
                t.kids.pop(k[len(WHITEOUT_PREFIX):], None)
                continue
            d = t.kids.get(k)
            if d is None:
                d = t.kids[k] = _Node(k)
            if c.kids:
                visit(c, d)
            d.size, d.is_dir = c.size, c.is_dir

    visit(upper, tree)


def _leaves(root: _Node) -> Iterator[tuple[list[str], _Node]]:
    """Leaves in ``VisitDepthChildFirst`` order (with the leaf evaluator)."""
    stack: list[tuple[list[str], _Node]] = [([k], root.kids[k]) for k in reversed(_sorted(root.kids))]
    while stack:
        parts, node = stack.pop()
        if not node.kids:
            yield parts, node
            continue
        stack.extend(([*parts, k], node.kids[k]) for k in reversed(_sorted(node.kids)))


def _subtree_size(node: _Node) -> int:
    total, stack = 0, [node]
    while stack:
        n = stack.pop()
        total += n.size
        stack.extend(n.kids.values())
    return total


@attrs.frozen
class DivePath:
    """One entry of dive's efficiency map: a path's references (layer indexes) and sizes."""

    path: str
    layers: tuple[int, ...]
    cumulative_size: int


@attrs.frozen
class DiveAnalysis:
    """dive's ``AnalysisResult``: score, sizes, and the inefficient files largest first."""

    efficiency: float
    size_bytes: int
    user_size_bytes: int
    wasted_bytes: int
    wasted_user_percent: float
    inefficiencies: tuple[DivePath, ...]
    layer_sizes: tuple[int, ...]
    aborted: tuple[tuple[int, str], ...]
    """(layer index, path) of each whiteout at which dive stopped scoring a layer."""


class _Eff:
    __slots__ = ("cum", "layers", "min")

    def __init__(self) -> None:
        self.cum = 0
        self.min = -1
        self.layers: list[int] = []


def analyze(layers: Sequence[Layer]) -> DiveAnalysis:
    """Run dive 0.13.1's ``Analyze`` on ``layers`` (bottom first), as saved in a docker archive."""
    cache: dict[int, _Tree] = {}
    trees = []
    for x in layers:
        t = cache.get(id(x))
        if t is None:
            t = cache[id(x)] = layer_tree(x)
        trees.append(t)
    eff: dict[str, _Eff] = {}
    inefficient: list[tuple[str, _Eff]] = []
    aborted: list[tuple[int, str]] = []
    stacked: _Node | None = None
    stacked_upto = 1

    def below(idx: int) -> _Node:
        # StackTreeRange(trees, 0, idx-1): a copy of trees[0] with trees[0..idx-1] stacked
        # on it; stacking trees[0] on its own copy changes nothing.
        nonlocal stacked, stacked_upto
        if idx <= 1:
            return trees[0].root
        if stacked is None:
            stacked = _copy(trees[0].root)
        while stacked_upto < idx:
            _stack(stacked, trees[stacked_upto].root)
            stacked_upto += 1
        return stacked

    for idx, tree in enumerate(trees):
        for parts, node in _leaves(tree.root):
            whiteout = node.name.startswith(WHITEOUT_PREFIX)
            if whiteout:
                parts = [*parts[:-1], node.name[len(WHITEOUT_PREFIX):]]
            path = "/" + "/".join(parts)
            data = eff.get(path)
            if data is None:
                data = eff[path] = _Eff()
            if whiteout:
                prev = _get(below(idx), parts)
                if prev is None:
                    aborted.append((idx, path))
                    break  # the visitor's error ends this layer's walk
                size = _subtree_size(prev) if prev.is_dir else 0
            else:
                size = node.size
            data.cum += size
            if data.min < 0 or size < data.min:
                data.min = size
            data.layers.append(idx)
            if len(data.layers) == 2:
                inefficient.append((path, data))

    minimum = sum(d.min for d in eff.values())
    discovered = sum(d.cum for d in eff.values())
    score = 1.0 if discovered == 0 else minimum / discovered
    go_sort(inefficient, lambda a, b: a[1].cum < b[1].cum)
    files = tuple(DivePath(p, tuple(d.layers), d.cum) for p, d in reversed(inefficient))
    sizes = tuple(t.file_size for t in trees)
    size = sum(sizes)
    user = size - (sizes[0] if sizes else 0)
    wasted = sum(f.cumulative_size for f in files)
    if user:
        percent = wasted / user
    else:
        percent = math.nan if wasted == 0 else math.inf
    return DiveAnalysis(score, size, user, wasted, percent, files, sizes, tuple(aborted))
