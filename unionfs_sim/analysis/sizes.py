"""How many bytes a layer takes, counted the way each peer counts it.

- ``"overlay2"``: Docker's overlay2 layer store (moby ``daemon/graphdriver/overlay2``
  ``ApplyDiff`` -> ``pkg/directory.Size`` on the layer's diff directory): the ``lstat``
  size of every non-directory entry, each inode once. Regular files count their data,
  symlinks the length of their target, whiteouts (0/0 character devices), FIFOs and
  devices nothing; a hard-link group counts once.
- ``"tar"``: the sum of the tar headers' sizes, which is what Docker's naive-diff
  drivers (vfs, and overlay2 when it must fall back) record (moby
  ``pkg/archive.UnpackLayer``: ``size += hdr.Size``) and what dive shows as a layer's
  size (``processLayerTar``: ``tree.FileSize += element.Size``): regular files' data, the
  second and later names of a hard-link group (tar type ``1``) and symlinks count 0.
"""

from __future__ import annotations

from typing import Literal

from ..layer import Layer
from ..nodes import Dir, File, Symlink, Whiteout

SizeRule = Literal["overlay2", "tar"]
"""Which peer's byte count to use (see the module docs)."""

SIZE_RULES: tuple[SizeRule, ...] = ("overlay2", "tar")


def check_rule(rule: str) -> SizeRule:
    """``rule`` if it names a size rule; ValueError naming the choices otherwise."""
    if rule not in SIZE_RULES:
        raise ValueError(f"unknown size rule {rule!r} (choose one of: {', '.join(SIZE_RULES)})")
    return rule


def layer_size(layer: Layer, rule: SizeRule = "overlay2") -> int:
    """Bytes ``layer`` takes under ``rule`` (see the module docs)."""
    if check_rule(rule) == "tar":
        return layer.size
    seen: set[int] = set()
    total = 0
    for node in layer.values():
        if isinstance(node, (Dir, Whiteout)) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, File):
            total += len(node.data)
        elif isinstance(node, Symlink):
            total += node.size
    return total
