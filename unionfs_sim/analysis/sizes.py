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

Which one Docker used depends on how the layer entered its store, not on the driver
alone: ``docker load``, ``docker import``, a pull, ``docker commit`` and the classic
builder apply a tar (``layerStore.Register`` -> overlay2 ``ApplyDiff``: ``"overlay2"``),
while BuildKit registers the snapshot it ran in and sizes it from the tar-split of its
diff (moby ``builder/builder-next/adapters/snapshot/layer.go`` ->
``layer/migration.go`` ``checksumForGraphIDNoTarsplit``, ``packSizeCounter``: ``"tar"``).
So an image built by BuildKit on a base image Docker imported counts its base layer by
one rule and its own layers by the other; the functions here take one rule for all
layers or one per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..layer import Layer
from ..nodes import Dir, File, Symlink, Whiteout

SizeRule = Literal["overlay2", "tar"]
"""Which peer's byte count to use (see the module docs)."""

SIZE_RULES: tuple[SizeRule, ...] = ("overlay2", "tar")

Rules = SizeRule | Sequence[SizeRule]
"""One rule for every layer, or one per layer (bottom first)."""


def check_rule(rule: str) -> SizeRule:
    """``rule`` if it names a size rule; ValueError naming the choices otherwise."""
    if rule not in SIZE_RULES:
        raise ValueError(f"unknown size rule {rule!r} (choose one of: {', '.join(SIZE_RULES)})")
    return rule


def content_size(layer: Layer) -> int:
    """Bytes of file content in ``layer``, each hard-link group once (``Layer.size``, also for
    layers scanned from an archive without their content: see :mod:`.scan`)."""
    seen: set[int] = set()
    total = 0
    for node in layer.values():
        if isinstance(node, File) and id(node) not in seen:
            seen.add(id(node))
            total += node.size
    return total


def layer_size(layer: Layer, rule: SizeRule = "overlay2") -> int:
    """Bytes ``layer`` takes under ``rule`` (see the module docs)."""
    if check_rule(rule) == "tar":
        return content_size(layer)
    seen: set[int] = set()
    total = 0
    for node in layer.values():
        if isinstance(node, (Dir, Whiteout)) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, (File, Symlink)):
            total += node.size
    return total


def per_layer(rules: Rules, n: int) -> list[SizeRule]:
    """``rules`` as one checked rule per layer of an ``n``-layer image."""
    if isinstance(rules, str):
        return [check_rule(rules)] * n
    out = [check_rule(r) for r in rules]
    if len(out) != n:
        raise ValueError(f"{len(out)} size rules for {n} layers")
    return out


def layer_sizes(layers: Sequence[Layer], rules: Rules = "overlay2") -> list[int]:
    """The size of each layer under ``rules``."""
    return [layer_size(x, r) for x, r in zip(layers, per_layer(rules, len(layers)), strict=True)]
