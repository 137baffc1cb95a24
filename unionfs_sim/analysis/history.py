"""``docker history``: the steps that built an image, newest first, with each layer's size.

Mirrors moby ``daemon/images/image_history.go`` (``ImageHistory``): one row per entry of
the config's ``history`` (not per layer: an image whose history lists fewer non-empty
steps than it has layers shows fewer rows, and one with more is an error); a non-empty
step's size is its layer's ``DiffSize`` as the layer store counts it; the newest row
carries the image id and its tags, the others ``<missing>``, unless the image's store
knows its parents: Docker walks the ``Parent`` links its classic builder left on that
very daemon, giving row *k* the id (and tags) of the *k*-th ancestor until an image has
none. Pass that store (a :class:`~unionfs_sim.Builder`) as ``store=``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from ..errors import FormatError
from . import _gotime
from .inspect import ImageStore
from .scan import ImageLike
from .sizes import Rules, layer_sizes

MISSING = "<missing>"
"""The id Docker shows for a step whose image it does not have."""


@attrs.frozen
class HistoryRow:
    """One row of ``docker history``; ``layer`` is the index into ``image.layers`` (None if empty)."""

    id: str
    created: str | None
    """The ``created`` text of the config's history entry (None when absent)."""
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    tags: tuple[str, ...] = ()
    layer: int | None = None
    author: str = ""

    @property
    def created_unix(self) -> int:
        """``Created`` as the history API reports it: seconds since the epoch (Go's zero time if absent)."""
        return _gotime.unix(self.created)

    def to_json(self) -> dict[str, Any]:
        """The row as Docker's ``GET /images/{name}/history`` gives it (plus ``EmptyLayer``)."""
        return {"Id": self.id, "Created": self.created_unix, "CreatedBy": self.created_by,
                "Tags": list(self.tags) or None, "Size": self.size, "Comment": self.comment,
                "EmptyLayer": self.empty_layer}


def raw_history(image: ImageLike) -> list[dict[str, Any]]:
    """The ``history`` list of the image's config JSON, as Docker reads it."""
    raw = image.config_json().get("history") or []
    if not isinstance(raw, list) or not all(isinstance(h, dict) for h in raw):
        raise FormatError("image config: history must be a list of objects")
    return raw


def history(image: ImageLike, *, tags: Iterable[str] = (), rule: Rules = "overlay2",
            store: ImageStore | None = None) -> list[HistoryRow]:
    """The rows of ``docker history`` for ``image``, newest first.

    ``tags`` are the names the newest row shows (Docker lists the image's tags there;
    default: the store's); ``rule`` how layer sizes are counted, one rule or one per layer
    (see :mod:`.sizes`; Docker's overlay2 by default); ``store`` the image store holding
    ``image`` (a :class:`~unionfs_sim.Builder`), whose parent links put ids and tags on
    the older rows (``<missing>`` without one).

    Raises:
        FormatError: the history names more non-empty steps than the image has layers
            (Docker: "too many non-empty layers in History section").
    """
    raw = raw_history(image)
    n_real = sum(1 for h in raw if not h.get("empty_layer"))
    if n_real > len(image.layers):
        raise FormatError(f"image config: history has {n_real} non-empty entries for {len(image.layers)} layers "
                          "(docker: too many non-empty layers in History section)")

    def text(h: dict[str, Any], k: str) -> str:
        v = h.get(k)
        return v if isinstance(v, str) else ""

    sizes = layer_sizes(image.layers, rule)
    rows: list[HistoryRow] = []
    i = 0
    for h in raw:
        empty = bool(h.get("empty_layer"))
        size, idx = 0, None
        if not empty:
            idx = i
            size = sizes[i]
            i += 1
        created = h.get("created")
        rows.append(HistoryRow(id=MISSING, created=created if isinstance(created, str) else None,
                               created_by=text(h, "created_by"), size=size, comment=text(h, "comment"),
                               empty_layer=empty, layer=idx, author=text(h, "author")))
    rows.reverse()
    top = tuple(tags)
    image_id = image.id
    for k, row in enumerate(rows):   # moby ImageHistory: "Fill in image IDs and tags"
        shown = top if k == 0 and top else tuple(store.tags(image_id)) if store is not None else ()
        rows[k] = attrs.evolve(row, id=image_id, tags=shown)
        image_id = store.parent(image_id) if store is not None else ""
        if not image_id:
            break
    return rows
