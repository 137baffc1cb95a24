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

:class:`DiskLower` gives the same answers for lower directories on disk without reading
them first: it fills the same maps a directory at a time, as lookups reach it (what the
fuse-overlayfs drop-in mounts, so that mounting reads nothing).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from .codec.overlaydir import LayerDir
from .layer import Layer
from .nodes import Dir, Entry, File, Node, Whiteout
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

    __slots__ = ("layers", "nodes", "where", "kids", "merged", "_listing", "_ino", "_wh", "_dirlinks", "_origin",
                 "__weakref__")

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
        self._origin: dict[str, str] = {}  # a dir moved here by a redirect -> its key in its layer
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
            self._origin.pop(p, None)
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

    def _subtree(self, k: str) -> list[tuple[str, Node, int, bool, str]]:
        """``(relative key, entry, layer index, merged, key in its layer)`` of everything below directory ``k``."""
        out: list[tuple[str, Node, int, bool, str]] = []
        stack = [(k, "")]
        while stack:
            p, rel = stack.pop()
            for n in self.kids.get(p, ()):
                ck, crel = join(p, n), join(rel, n)
                out.append((crel, self.nodes[ck], self.where[ck], ck in self.merged, self._origin.get(ck, ck)))
                stack.append((ck, crel))
        out.sort(key=lambda t: t[0].split("/"))
        return out

    def _apply(self, i: int, layer: Layer) -> None:
        keys = sorted(layer, key=lambda k: k.split("/"))
        # A redirected directory merges with the lower directory it names as the stack
        # stood below this layer: take those subtrees before this layer changes anything.
        redirected: dict[str, list[tuple[str, Node, int, bool, str]]] = {}
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
                    for rel, n, w, merged, origin in sub:
                        ck = join(k, rel)
                        self._put(ck, n, w)
                        # Still merged (ovl_lookup follows the redirect in every lower layer),
                        # and still read from where its layer has it (strays).
                        if merged:
                            self.merged.add(ck)
                        if isinstance(n, Dir) and origin != ck:
                            self._origin[ck] = origin
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

    @property
    def depth(self) -> int:
        """How many layers the stack has."""
        return len(self.layers)

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
        kids = self.kids.get(k, ())
        k = self._origin.get(k, k)  # the directory as its layer has it
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
        return [n for n in names if n not in kids]

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


_Source = tuple[int, str]
"""Where a merged directory's names come from: (layer index, the directory's key in that layer)."""
_Child = tuple[Node, int, "list[_Source] | None", bool]
"""A name of a merged directory: its entry, layer index, sources (a directory) and merged flag."""
_V = TypeVar("_V")


class DiskLower(Lower):
    """The merged view of lower directories on disk, read a directory at a time as it is looked up.

    What the fuse-overlayfs drop-in mounts: constructing it reads only each layer's root
    xattrs, so mounting costs nothing per entry; a directory's names (one scandir per
    layer that has it, a listxattr per subdirectory) are read when it is first looked up
    or listed, as ovl_lookup does (fs/overlayfs/namei.c): walk the layers top-down per
    name, a whiteout or non-directory stops, an opaque directory stops, a redirect
    continues in the layers below at the path it names. The answers (entries, where,
    merged, listing, strays, nlink, ino) are those of :class:`Lower` over
    ``Layer.from_directory(d, lazy=True)`` of the same directories (tests/test_disk_lower.py
    checks it), except a file's st_nlink, which is stat's (the same unless a file has names
    outside its layer directory; the kernel too reports stat's).

    ``nodes``, ``where`` and ``kids`` are read-only mappings that load on lookup; iterating
    one (or :attr:`layers`) reads everything.
    """

    __slots__ = ("dirs", "_r", "_n", "_w", "_k", "_src", "_lock", "_all")

    def __init__(self, dirs: Iterable[str | os.PathLike[str]], *, userxattr: bool | None = None) -> None:
        """``dirs``: the lower directories, bottom first (the reverse of ``lowerdir=``)."""
        self._r: tuple[LayerDir, ...] = tuple(LayerDir(d, userxattr=userxattr) for d in dirs)
        self.dirs: tuple[str, ...] = tuple(r.path for r in self._r)
        self._n: dict[str, Node] = {"": ROOT_DIR}
        self._w: dict[str, int] = {"": -1}
        self._k: dict[str, dict[str, None]] = {}
        self._src: dict[str, list[_Source]] = {"": [(i, "") for i in reversed(range(len(self._r)))]}
        self._lock = threading.RLock()
        self._all = False
        self.merged: set[str] = set()
        self._listing: dict[str, tuple[str, ...]] = {}
        self._ino: dict[object, int] = {}
        self._wh: dict[int, dict[str, list[str]]] = {}
        self._dirlinks: dict[str, int] = {}
        self._origin: dict[str, str] = {}
        # Read-only views that load on lookup (Overlay and FileSystem use them as dicts).
        self.nodes = _Lazy(self, self._n, self._entry)  # type: ignore[assignment]
        self.where = _Lazy(self, self._w, self._where)  # type: ignore[assignment]
        self.kids = _Lazy(self, self._k, self._kids)  # type: ignore[assignment]

    # --- loading -------------------------------------------------------------------

    def _entry(self, k: str) -> Node | None:
        n = self._n.get(k)
        if n is not None or k == "":
            return n
        parent = split(k)[0]
        if parent in self._k:
            return None  # read already: not there
        if not isinstance(self._entry(parent), Dir):
            return None
        self._load(parent)
        return self._n.get(k)

    def _where(self, k: str) -> int | None:
        return self._w.get(k) if self._entry(k) is not None else None

    def _kids(self, k: str) -> dict[str, None] | None:
        if not isinstance(self._entry(k), Dir):
            return None
        self._load(k)
        return self._k[k]

    def _load(self, k: str) -> None:
        """Read the names of visible directory ``k`` into the index."""
        with self._lock:
            if k in self._k:
                return
            kids: dict[str, None] = {}
            pre = k + "/" if k else ""
            for name, (node, w, srcs, merged) in self._children(self._src[k]).items():
                ck = pre + name
                self._n[ck] = node
                self._w[ck] = w
                if srcs is not None:
                    self._src[ck] = srcs
                    if merged:
                        self.merged.add(ck)
                kids[name] = None
            self._k[k] = kids

    def _children(self, srcs: Sequence[_Source]) -> dict[str, _Child]:
        """The visible names of the merged directory made of ``srcs`` (top first), as ovl_lookup finds each."""
        out: dict[str, _Child] = {}
        hidden: set[str] = set()
        for pos, (i, p) in enumerate(srcs):
            for name, e in self._r[i].entries(p).items():
                if name in out or name in hidden:
                    continue
                if isinstance(e, Whiteout):
                    hidden.add(name)
                elif not isinstance(e, Dir):
                    out[name] = (e, i, None, False)
                else:
                    cs, merged = self._below(e, i, join(p, name), srcs[pos + 1 :], name)
                    out[name] = (e, i, cs, merged)
        return out

    def _below(self, top: Dir, i: int, at: str, lower: Sequence[_Source], name: str) -> tuple[list[_Source], bool]:
        """The sources of a directory whose topmost entry is ``top`` (layer ``i``, key ``at``),
        and whether it is merged: the same name in the parent's ``lower`` sources, while
        they are directories, or the directory a redirect names."""
        cs: list[_Source] = [(i, at)]
        e: Entry = top
        j = i
        rest = iter(lower)
        while True:
            if isinstance(e, Dir) and e.redirect is not None:
                # Merged with the directory the redirect names, as the stack stands below
                # this layer (when that has any names; Lower does the same).
                below = self._sources_at(e.redirect, j)
                if below is not None and self._children(below):
                    cs.extend(below)
                return cs, len(cs) > 1
            if isinstance(e, Dir) and e.opaque:
                return cs, len(cs) > 1
            for j, q in rest:
                le = self._r[j].entries(q).get(name)
                if le is not None:
                    break
            else:
                return cs, len(cs) > 1
            if not isinstance(le, Dir):
                return cs, len(cs) > 1  # a whiteout or a non-directory ends the stack
            e = le
            cs.append((j, join(q, name)))

    def _sources_at(self, k: str, limit: int) -> list[_Source] | None:
        """The sources of directory ``k`` in the view of the layers below ``limit``, or None."""
        srcs: list[_Source] = [(i, "") for i in reversed(range(limit))]
        for name in k.split("/") if k else ():
            c = self._children(srcs).get(name)
            if c is None or c[2] is None:
                return None
            srcs = c[2]
        return srcs

    def load_all(self) -> None:
        """Read every visible directory (what a full walk, a diff or iterating the mappings needs)."""
        with self._lock:
            if self._all:
                return
            stack = [""]
            while stack:
                k = stack.pop()
                self._load(k)
                pre = k + "/" if k else ""
                stack.extend(pre + n for n in self._k[k] if pre + n in self._src)
            self._all = True

    # --- queries -------------------------------------------------------------------

    @property
    def layers(self) -> tuple[Layer, ...]:  # type: ignore[override]
        """The lower directories as layers (bottom first): reads every directory of them."""
        with self._lock:
            return tuple(Layer(r.all_entries()) for r in self._r)

    @property
    def depth(self) -> int:
        """How many layers the stack has (without reading them)."""
        return len(self._r)

    def strays(self, k: str) -> list[str]:
        """As :meth:`Lower.strays`: whiteouts in a directory that one layer alone has."""
        if k in self.merged or self._entry(k) is None:
            return []
        srcs = self._src.get(k)
        if not srcs or self._w.get(k, -1) < 0:
            return []
        i, p = srcs[0]
        with self._lock:  # one reader at a time per directory: its entries are read once
            kids = self._kids(k) or {}
            return [n for n, e in self._r[i].entries(p).items() if isinstance(e, Whiteout) and n not in kids]

    def nlink(self, k: str, node: Node) -> int:
        """As :meth:`Lower.nlink`; a file's count is its st_nlink (its names in its layer)."""
        if isinstance(node, Dir):
            return super().nlink(k, node)
        w = self._where(k)
        return self._r[w].nlink(node) if w is not None and w >= 0 and isinstance(node, File) else 1


class _Lazy(Mapping[str, _V]):
    """A read-only mapping over one of :class:`DiskLower`'s dicts: a lookup reads what it needs."""

    __slots__ = ("_low", "_d", "_find")

    def __init__(self, low: DiskLower, d: dict[str, _V], find: Callable[[str], _V | None]) -> None:
        self._low, self._d, self._find = low, d, find

    def get(self, k: str, default: object = None) -> _V | None:  # type: ignore[override]
        v = self._d.get(k)
        if v is None:
            v = self._find(k)
        return default if v is None else v  # type: ignore[return-value]

    def __getitem__(self, k: str) -> _V:
        v = self.get(k)
        if v is None:
            raise KeyError(k)
        return v

    def __contains__(self, k: object) -> bool:
        return isinstance(k, str) and self.get(k) is not None

    def __iter__(self) -> Iterator[str]:
        self._low.load_all()
        return iter(self._d)

    def __len__(self) -> int:
        self._low.load_all()
        return len(self._d)
