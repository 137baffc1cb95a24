"""Lower: the merged view of an immutable layer stack, flattened once into an index.

Lookups through an image must cost the same with 1 or 500 layers, so the stack is
applied bottom-up once into ``path -> entry`` and ``dir -> children`` maps. The result
never changes and is shared by every container of the image.

The rules are the kernel's (Documentation/filesystems/overlayfs.rst) and OCI's
(image-spec layer.md): a non-directory hides everything below it at that path; a
directory over a directory merges their names and takes the upper one's metadata;
a whiteout deletes the path and its subtree; an opaque directory hides the same
directory's lower contents; a directory with a redirect merges with the lower
directory it names.
"""

from __future__ import annotations

from collections.abc import Sequence

from .layer import Layer
from .nodes import Dir, Entry, Node, Whiteout
from .paths import join, parents, split

ROOT_DIR = Dir(mode=0o755)
"""Metadata of a root (or implicit parent) directory no layer describes."""


class Lower:
    """The flattened, read-only merged view of ``layers`` (index 0 is the bottom).

    Attributes:
        layers: the stack, bottom first.
        nodes: every visible key mapped to its entry (the root ``""`` included).
        where: every visible key mapped to the index of the layer that provides it.
        merged: keys of directories whose names come from more than one layer.
    """

    __slots__ = ("layers", "nodes", "where", "kids", "merged", "_listing", "_ino", "_wh", "_dirlinks", "__weakref__")

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.nodes: dict[str, Node] = {"": ROOT_DIR}
        self.where: dict[str, int] = {"": -1}
        self.kids: dict[str, dict[str, None]] = {"": {}}
        self.merged: set[str] = set()
        self._listing: dict[str, tuple[str, ...]] = {}
        self._ino: dict[object, int] = {}
        self._wh: dict[int, dict[str, list[str]]] = {}
        self._dirlinks: dict[str, int] = {}
        for i, layer in enumerate(self.layers):
            self._apply(i, layer)

    # --- building ------------------------------------------------------------------

    def _remove(self, k: str) -> None:
        """Delete ``k`` and its subtree from the index (and from its parent's names)."""
        if k not in self.nodes:
            return
        stack = [k]
        while stack:
            p = stack.pop()
            del self.nodes[p]
            del self.where[p]
            self.merged.discard(p)
            kids = self.kids.pop(p, None)
            if kids:
                stack.extend(join(p, n) for n in kids)
        parent, name = split(k)
        pk = self.kids.get(parent)
        if pk is not None:
            pk.pop(name, None)

    def _put(self, k: str, node: Node, i: int) -> None:
        self.nodes[k] = node
        self.where[k] = i
        parent, name = split(k)
        self.kids[parent][name] = None
        if isinstance(node, Dir):
            self.kids[k] = {}

    def _subtree(self, k: str) -> list[tuple[str, Node, int]]:
        """``(relative key, entry, layer index)`` of everything below directory ``k``."""
        out: list[tuple[str, Node, int]] = []
        stack = [(k, "")]
        while stack:
            p, rel = stack.pop()
            for n in self.kids.get(p, ()):
                ck, crel = join(p, n), join(rel, n)
                out.append((crel, self.nodes[ck], self.where[ck]))
                stack.append((ck, crel))
        out.sort(key=lambda t: t[0].split("/"))
        return out

    def _apply(self, i: int, layer: Layer) -> None:
        keys = sorted(layer, key=lambda k: k.split("/"))
        # A redirected directory merges with the lower directory it names as the stack
        # stood below this layer: take those subtrees before this layer changes anything.
        redirected: dict[str, list[tuple[str, Node, int]]] = {}
        for k in keys:
            d = layer[k]
            if isinstance(d, Dir) and d.redirect is not None and isinstance(self.nodes.get(d.redirect), Dir):
                redirected[k] = self._subtree(d.redirect)
        present: set[str] = {""}  # directories this layer has (explicitly or as parents)
        for k in keys:
            e: Entry = layer[k]
            self._parents(k, i, present)
            if isinstance(e, Whiteout):
                self._remove(k)
                continue
            old = self.nodes.get(k)
            if isinstance(e, Dir):
                present.add(k)
                if isinstance(old, Dir) and not e.opaque and e.redirect is None:
                    self.nodes[k] = e
                    self.where[k] = i
                    self.merged.add(k)
                    continue
                self._remove(k)
                self._put(k, e, i)
                sub = redirected.get(k)
                if sub:
                    self.merged.add(k)
                    for rel, n, w in sub:
                        self._put(join(k, rel), n, w)
            else:
                self._remove(k)
                self._put(k, e, i)

    def _parents(self, k: str, i: int, present: set[str]) -> None:
        """Make every ancestor of ``k`` a directory, as this layer's tree has them."""
        parent = split(k)[0]
        if parent in present:
            return
        for p in parents(k):
            if p in present:
                continue
            present.add(p)
            old = self.nodes.get(p)
            if isinstance(old, Dir):
                self.merged.add(p)
            else:
                # Implicit parent: a directory no layer describes takes default metadata.
                self._remove(p)
                self._put(p, Dir(mode=0o755), i)

    # --- queries -------------------------------------------------------------------

    def listing(self, k: str) -> tuple[str, ...]:
        """Sorted names in directory ``k`` (which must be a visible directory)."""
        out = self._listing.get(k)
        if out is None:
            out = self._listing[k] = tuple(sorted(self.kids.get(k, ())))
        return out

    def strays(self, k: str) -> list[str]:
        """Whiteouts the kernel lists in directory ``k`` although they hide nothing.

        overlayfs reads a directory that comes from one layer only (not merged) straight
        from that layer, so whiteouts in it (which no lower layer needs: it is the only
        one with the directory) appear in readdir as character devices, yet looking
        them up gives ENOENT. Real layers have them: a whiteout in the bottom layer, or
        inside an opaque directory. A merged directory filters them out.
        """
        if k in self.merged or not self.layers:
            return []
        w = self.where.get(k, -1)
        if w < 0:
            return []
        wh = self._wh.get(w)
        if wh is None:
            wh = {}
            for key, e in self.layers[w].items():
                if isinstance(e, Whiteout):
                    parent, name = split(key)
                    wh.setdefault(parent, []).append(name)
            self._wh[w] = wh
        names = wh.get(k)
        if not names:
            return []
        return [n for n in names if n not in self.kids.get(k, ())]

    def nlink(self, k: str, node: Node) -> int:
        """st_nlink as the kernel reports it for the lower entry at ``k``.

        A merged directory reports 1 (overlayfs does not count subdirectories across
        layers); a directory from one layer 2 + its subdirectories; a file the number of
        names its layer gives it.
        """
        if isinstance(node, Dir):
            if k in self.merged:
                return 1
            n = self._dirlinks.get(k)
            if n is None:
                n = self._dirlinks[k] = 2 + sum(1 for c in self.kids.get(k, ())
                                                if isinstance(self.nodes[join(k, c)], Dir))
            return n
        w = self.where[k]
        return self.layers[w].nlink(node) if w >= 0 else 1

    def ino(self, k: str, node: Node) -> int:
        """A stable inode number: per directory path, per file object otherwise.

        (A path is a str and an object id an int, so the two never collide.)
        """
        ident: object = k if type(node) is Dir else id(node)
        n = self._ino.get(ident)
        if n is None:
            n = self._ino[ident] = len(self._ino) + 2
        return n
