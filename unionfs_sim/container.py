"""Container: an image plus a private writable upper layer; diff, commit, storage accounting.

Creating one copies nothing: it points at the image's shared, flattened lower index and
starts with no upper objects at all. Writes copy up into the upper; deletes leave
whiteouts there, exactly as overlayfs does in a container engine's upperdir.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from .layer import Layer
from .nodes import WHITEOUT, Dir, Entry, Whiteout
from .options import OverlayOptions
from .overlay import Inode, Overlay, freeze
from .paths import join, split

if TYPE_CHECKING:
    from .fs import FileSystem
    from .image import Image, ImageConfig


@attrs.frozen
class Change:
    """One line of ``docker diff``: ``kind`` is "A" (added), "C" (changed) or "D" (deleted)."""

    kind: str
    path: str

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


class Container:
    """A container of ``image``: the image's layers (shared) and its own upper layer.

    Attributes:
        image: the image it was created from.
        options: the overlayfs options its view behaves as if mounted with.
    """

    __slots__ = ("image", "options", "_ov", "_fs", "__weakref__")

    def __init__(self, image: Image, options: OverlayOptions | None = None) -> None:
        """Prefer ``image.container(options)``."""
        self.image = image
        self.options = options if options is not None else _DEFAULT_OPTIONS
        self._ov: Overlay | None = None
        self._fs: FileSystem | None = None

    @classmethod
    def from_upper(cls, image: Image, upper: Layer | Mapping[str, Entry],
                   options: OverlayOptions | None = None) -> Container:
        """A container of ``image`` whose upper layer is ``upper`` (e.g. an upperdir read
        back with ``Layer.from_directory``), ready to go on writing."""
        c = cls(image, options)
        with c.fs.lock:
            c.overlay.load_upper(upper)
        return c

    @property
    def overlay(self) -> Overlay:
        """The merged-view state (made on first use, sharing the image's index)."""
        if self._ov is None:
            self._ov = Overlay(self.image.lower, self.options)
        return self._ov

    @property
    def fs(self) -> FileSystem:
        """The read-write os-style view of the container's merged filesystem."""
        if self._fs is None:
            from .fs import FileSystem

            self._fs = FileSystem(self.overlay)
        return self._fs

    def __repr__(self) -> str:
        return f"<Container of {self.image!r}>"

    # --- the upper layer ---------------------------------------------------------------

    @property
    def upper(self) -> Layer:
        """A snapshot of the upper layer in overlayfs form (redirect dirs kept as such)."""
        with self.overlay.lock:
            return Layer(self._upper_entries())

    def _upper_entries(self, *, with_index: bool = False) -> dict[str, Entry]:
        ov = self.overlay
        out = ov.upper_entries(with_index=with_index)
        root = ov.root
        if root is not None:
            lroot = ov.lower.nodes[""]
            r = freeze(root)
            if (r.mode, r.uid, r.gid, dict(r.xattrs)) != (lroot.mode, lroot.uid, lroot.gid, dict(lroot.xattrs)):
                out[""] = r
        return out

    def changeset(self) -> dict[str, Entry]:
        """The upper layer as an OCI changeset: what ``commit`` stores and ``diff`` reports.

        Redirected directories become opaque directories holding their full merged
        contents (OCI layers have no redirects), and whiteouts inside opaque directories,
        which hide nothing, are left out (the kernel would list them, see docs/fidelity.md).
        """
        with self.overlay.lock:
            entries = self._upper_entries(with_index=True)
            lower = self.overlay.lower
            redirected = sorted((k for k, e in entries.items() if isinstance(e, Dir) and e.redirect is not None),
                                key=lambda k: k.split("/"))
            for k in redirected:
                d = entries[k]
                assert isinstance(d, Dir) and d.redirect is not None
                entries[k] = attrs.evolve(d, redirect=None, opaque=self._natural_lower(k) is not None)
                self._expand(entries, k, d.redirect, lower.nodes, lower.kids)
            for k in [k for k, e in entries.items() if isinstance(e, Whiteout)]:
                parent = split(k)[0]
                if _under_opaque(entries, parent):
                    del entries[k]
            return entries

    def _natural_lower(self, k: str) -> Entry | None:
        return self.overlay.lower.nodes.get(k)

    @staticmethod
    def _expand(entries: dict[str, Entry], k: str, src: str, nodes: Mapping[str, Entry],
                kids: Mapping[str, Mapping[str, None]]) -> None:
        """Copy the lower subtree at ``src`` under ``k`` where the upper does not cut it."""
        stack = [(k, src)]
        while stack:
            dst, s = stack.pop()
            for name in kids.get(s, ()):
                dk, sk = join(dst, name), join(s, name)
                have = entries.get(dk)
                node = nodes[sk]
                if have is None:
                    entries[dk] = node
                    if isinstance(node, Dir):
                        stack.append((dk, sk))
                elif isinstance(have, Dir) and isinstance(node, Dir) and not have.opaque and have.redirect is None:
                    stack.append((dk, sk))

    # --- docker diff / commit ----------------------------------------------------------

    def diff(self) -> list[Change]:
        """The container's changes relative to its image, as ``docker diff`` lists them.

        Walks the upper layer in lexical order: a whiteout is ``D``, an opaque directory
        that replaced a lower one ``D`` (its new contents ``A``), a path the image lacks
        ``A``, anything else ``C`` except directories whose mode and mtime are unchanged;
        the parent of every ``A``/``D`` is reported ``C`` once (moby pkg/archive/changes.go).
        """
        entries = self.changeset()
        lower = self.overlay.lower.nodes
        changes: list[Change] = []
        changed_dirs: set[str] = set()
        for k in sorted(entries, key=lambda k: k.split("/")):
            if k == "":
                continue
            e = entries[k]
            low = lower.get(k)
            if isinstance(e, Whiteout) or (isinstance(e, Dir) and e.opaque and low is not None):
                kind = "D"
            elif low is None:
                kind = "A"
            else:
                if (isinstance(e, Dir) and isinstance(low, Dir) and e.mode == low.mode
                        and _same_time(e.mtime_ns, low.mtime_ns)):
                    continue
                kind = "C"
            if isinstance(e, Dir):
                changed_dirs.add(k)
            if kind != "C":
                parent = split(k)[0]
                if parent and parent not in changed_dirs:
                    changes.append(Change("C", "/" + parent))
                    changed_dirs.add(parent)
            changes.append(Change(kind, "/" + k))
        return changes

    def commit(self, comment: str | None = None, *, author: str | None = None, created_by: str | None = None,
               created: str | None = None, config: ImageConfig | None = None) -> Image:
        """A new image: this container's image plus its changes as a new top layer.

        The container, its image and the image's other containers are untouched.
        """
        from .image import History

        layer = Layer(self.changeset())
        hist = History(created_by=created_by, comment=comment, created=created, author=author)
        return self.image.with_layer(layer, hist, config)

    # --- accounting --------------------------------------------------------------------

    def upper_size(self) -> int:
        """Bytes of file data in the upper layer (docker's SizeRw).

        A file whose data was never copied up (metacopy) counts 0; hard links count once.
        """
        with self.overlay.lock:
            seen: set[int] = set()
            total = 0
            for _k, e in self.overlay.walk_upper():
                if isinstance(e, Inode) and e.kind == "f" and id(e) not in seen:
                    seen.add(id(e))
                    if not e.metacopy and e.data is not None:
                        total += e.data.size
            return total

    def _repr_html_(self) -> str:
        """The image's layers with the writable layer on top (a stacked picture) and ``docker diff``."""
        from ._html import human, section, short, stack_svg, table

        img = self.image
        steps = [h.created_by or "" for h in img.history if not h.empty_layer]
        up = self.upper
        pic = stack_svg([(f"{i} {short(d, 8)} {steps[i][:30]}", x.size)
                         for i, (x, d) in enumerate(zip(img.layers, img.diff_ids, strict=True))],
                        upper=("upper (writable)", up.size))
        changes = table(["", "path"], [[c.kind, c.path] for c in self.diff()], limit=100)
        return section(f"Container of image {short(img.id)}: upper {len(up)} entries, {human(up.size)}", pic, changes)


_DEFAULT_OPTIONS = OverlayOptions()


def _same_time(a: int, b: int) -> bool:
    """moby's sameFsTime: equal, or equal seconds when either has no sub-second part."""
    return a == b or (a // 10**9 == b // 10**9 and (a % 10**9 == 0 or b % 10**9 == 0))


def _under_opaque(entries: dict[str, Entry], k: str) -> bool:
    """True if key ``k`` is, or lies below, an opaque directory of ``entries``."""
    while True:
        e = entries.get(k)
        if isinstance(e, Dir) and e.opaque:
            return True
        if not k:
            return False
        k = split(k)[0]


__all__ = ["WHITEOUT", "Change", "Container"]
