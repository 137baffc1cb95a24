"""Squash an image: its merged filesystem as one layer, as a tar or a directory.

What ``docker export`` of a fresh container gives (and what ``--squash`` builds): every
entry the merged view shows, with its metadata; hard links that still show under
several names stay one file. Opaque markers and redirects, meaningless in a single
layer, are dropped.
"""

from __future__ import annotations

import os
from typing import IO

import attrs

from ..image import Image
from ..layer import Layer
from ..nodes import Dir, Entry
from ..progress import Progress


def squash(image: Image) -> Layer:
    """The merged view of ``image`` as one layer (hard-link groups kept)."""
    entries: dict[str, Entry] = {}
    for k, node in image.lower.nodes.items():
        if isinstance(node, Dir) and (node.opaque or node.redirect is not None):
            node = attrs.evolve(node, opaque=False, redirect=None)
        if k == "" and image.lower.where.get("", -1) < 0:
            continue  # the root no layer describes
        entries[k] = node
    return Layer(entries)


def export(image: Image, dest: str | os.PathLike[str] | IO[bytes], *, format: str = "tar",
           progress: Progress | None = None) -> Layer:
    """Write the squashed image to ``dest``: ``format="tar"`` (a file or path) or ``"dir"`` (an empty directory).

    Returns the squashed layer. ``progress`` is called before and after the write.
    """
    if progress:
        progress(0, 2, "flattening")
    layer = squash(image)
    if progress:
        progress(1, 2, "writing")
    if format == "tar":
        if isinstance(dest, (str, os.PathLike)):
            with open(dest, "wb") as f:
                layer.to_tar(f)
        else:
            layer.to_tar(dest)
    elif format == "dir":
        if not isinstance(dest, (str, os.PathLike)):
            raise TypeError("format='dir' needs a path")
        layer.to_directory(dest, format="plain")
    else:
        raise ValueError(f"unknown export format {format!r} (tar or dir)")
    if progress:
        progress(2, 2, "done")
    return layer
