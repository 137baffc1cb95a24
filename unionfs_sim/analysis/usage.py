"""``docker system df -v``: how much the images and containers take, shared layers counted once.

Mirrors moby ``daemon/images/images.go`` (``Images`` with extra attributes) and
``daemon/images/service.go`` (``LayerDiskUsage``) for the graphdriver store: a layer is
shared when its *chain id* (the layer with all its parents) is used by more than one
image, not when two images merely have a layer with the same diff_id on different
parents (those are two layers on disk); an image's ``shared_size`` sums its shared
layers' sizes and ``unique_size = size - shared_size``; the store's size counts every
chain once. A container's ``size`` is its writable layer (docker's ``SizeRw``, counted as
the layer store counts layers), ``virtual_size`` that plus its image's size.

Invariant: ``sum(unique_size) + (each shared chain's size, once) == layers_size``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..container import Container
from .scan import ImageLike
from .sizes import Rules, SizeRule, check_rule, layer_size, layer_sizes

NONE_NAME = "<none>:<none>"
"""How Docker names an image that has no tag (a container's image not passed in ``images``)."""


@attrs.frozen
class ImageUsage:
    """One image row of ``docker system df -v``."""

    name: str
    id: str
    size: int
    shared_size: int
    unique_size: int
    containers: int


@attrs.frozen
class ContainerUsage:
    """One container row: ``size`` is the writable layer, ``virtual_size`` adds the image."""

    name: str
    image: str
    size: int
    virtual_size: int


@attrs.frozen
class DiskUsage:
    """The result of :func:`disk_usage`."""

    images: tuple[ImageUsage, ...]
    containers: tuple[ContainerUsage, ...]
    layers_size: int
    """Bytes of every layer (chain) any image uses, each once: Docker's ``LayersSize``."""

    @property
    def reclaimable_image_bytes(self) -> int:
        """What ``docker system df`` calls reclaimable for images: the store minus what running images need."""
        used = sum(i.size - i.shared_size for i in self.images if i.containers)
        return self.layers_size - used

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return {"layers_size": self.layers_size, "images": [attrs.asdict(i) for i in self.images],
                "containers": [attrs.asdict(c) for c in self.containers]}

    def _repr_html_(self) -> str:
        """The two tables of ``docker system df -v`` and the store's size."""
        return disk_usage_html(self)


def disk_usage(images: Mapping[str, ImageLike] | None = None, containers: Mapping[str, Container] | None = None, *,
               rule: SizeRule = "overlay2", rules: Mapping[str, Rules] | None = None) -> DiskUsage:
    """``docker system df -v`` for ``images`` (name -> image) and ``containers`` (name -> container).

    Several names for one image (same id) count as one image, as Docker lists it once
    with several tags; the rows keep every name. A container whose image is not among
    ``images`` adds that image as ``<none>:<none>``. ``rule`` counts layer sizes (see
    :mod:`.sizes`); ``rules`` overrides it per image name (one rule, or one per layer).
    """
    check_rule(rule)
    rules = dict(rules or {})
    named: dict[str, ImageLike] = dict(images or {})
    cons = dict(containers or {})
    by_id: dict[str, ImageLike] = {}
    for img in named.values():
        by_id.setdefault(img.id, img)
    for c in cons.values():
        if c.image.id not in by_id:
            by_id[c.image.id] = c.image
            named[f"{NONE_NAME}@{c.image.id[7:19]}" if NONE_NAME in named else NONE_NAME] = c.image
    # One size per chain: a chain id names the layer with all its parents.
    chain_size: dict[str, int] = {}
    refs: dict[str, int] = {}
    chains_of: dict[str, list[str]] = {}
    rules_of: dict[str, Rules] = {}
    for name, img in named.items():
        if name in rules:
            rules_of.setdefault(img.id, rules[name])
    for iid, img in by_id.items():
        chains = img.chain_ids
        chains_of[iid] = chains
        sizes = layer_sizes(img.layers, rules_of.get(iid, rule))
        for ch, size in zip(chains, sizes, strict=True):
            chain_size.setdefault(ch, size)
            refs[ch] = refs.get(ch, 0) + 1
    users: dict[str, int] = {}
    for c in cons.values():
        users[c.image.id] = users.get(c.image.id, 0) + 1
    rows = []
    for name, img in named.items():
        chains = chains_of[img.id]
        size = sum(chain_size[ch] for ch in chains)
        shared = sum(chain_size[ch] for ch in chains if refs[ch] > 1)
        rows.append(ImageUsage(name, img.id, size, shared, size - shared, users.get(img.id, 0)))
    name_of: dict[str, str] = {}
    for name, img in named.items():
        name_of.setdefault(img.id, name)
    crow = []
    for name, c in cons.items():
        rw = layer_size(c.upper, rule)
        isize = sum(chain_size[ch] for ch in chains_of[c.image.id])
        crow.append(ContainerUsage(name, name_of[c.image.id], rw, isize + rw))
    return DiskUsage(tuple(rows), tuple(crow), sum(chain_size.values()))


def disk_usage_html(du: DiskUsage) -> str:
    """The two tables of ``docker system df -v`` and the store's size."""
    from .._html import human, section, short, table  # here: only notebooks need it (as the core's reprs)

    imgs = table(["image", "id", "size", "shared", "unique", "containers"],
                 [[i.name, short(i.id), human(i.size), human(i.shared_size), human(i.unique_size), i.containers]
                  for i in du.images], right=(2, 3, 4, 5))
    cons = table(["container", "image", "size", "virtual size"],
                 [[c.name, c.image, human(c.size), human(c.virtual_size)] for c in du.containers], right=(2, 3))
    return section(f"Disk usage: layers {human(du.layers_size)}", imgs, cons)
