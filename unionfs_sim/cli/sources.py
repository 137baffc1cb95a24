"""Images named on the command line, the skopeo way: ``oci:DIR[:TAG]``, ``docker-archive:FILE[:TAG]``, ``dir:PATH``.

Every command that takes an image (``mount``, ``inspect``, ``history``, ``ls``, ``diff``,
``efficiency``, ``export`` ...) names it through :func:`parse_source` / :func:`load_image`:

- ``oci:DIR[:TAG]``: an OCI image layout (``TAG`` as its ``org.opencontainers.image.ref.name``);
- ``docker-archive:FILE[:REF]``: a ``docker save`` archive (``REF`` picks one of several
  images, e.g. ``busybox:latest``);
- ``dir:PATH``: a plain directory, read as a one-layer image of its files. (skopeo's
  ``dir:`` is a directory of blobs of its own; a plain tree is what people here have.)
- a bare path, as before these prefixes: a directory with an ``oci-layout`` file is a
  layout, another directory a plain tree, a file a docker archive.

As in skopeo, the path ends at the first ``:`` after the transport; what follows is the tag.
"""

from __future__ import annotations

import os

import attrs
import click

from ..image import Image
from ..layer import Layer
from ..progress import Progress

TRANSPORTS = ("oci", "docker-archive", "dir")
"""The transports :func:`parse_source` knows."""


@attrs.frozen
class Source:
    """An image named on the command line: its transport, path and tag (None: the only one)."""

    transport: str
    path: str
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.transport}:{self.path}" + (f":{self.tag}" if self.tag else "")


def named(name: str, e: BaseException) -> str:
    """``e``'s message about input ``name``, naming it once: a loader's error begins with
    the file it read already (a ``docker-archive:`` prefix or a tag aside)."""
    try:
        path = parse_source(name).path
    except click.BadParameter:
        path = name
    if isinstance(e, OSError) and e.strerror:
        inside = os.fsdecode(e.filename) if e.filename is not None else path
        return f"{name}: {e.strerror}" if inside in (name, path) else f"{name}: {inside}: {e.strerror}"
    msg = str(e)
    return msg if msg.startswith((f"{name}:", f"{path}:")) else f"{name}: {msg}"


def parse_source(name: str, tag: str | None = None) -> Source:
    """Parse ``name`` (see the module docs); ``tag`` (a ``--tag`` option) fills in a missing tag.

    Raises:
        click.BadParameter: an unknown transport, an empty path, a tag for ``dir:``, or
            two different tags.
    """
    transport, sep, rest = name.partition(":")
    if sep and transport in TRANSPORTS:
        path, _, inline = rest.partition(":")
        if not path:
            raise click.BadParameter(f"{name!r}: no path after {transport}:")
        if inline and tag and inline != tag:
            raise click.BadParameter(f"{name!r} names tag {inline!r} but --tag says {tag!r}")
        src = Source(transport, path, inline or tag)
    elif sep and "/" not in transport and not os.path.exists(name) and len(transport) > 1:
        raise click.BadParameter(f"{name!r}: unknown transport {transport!r} (known: {', '.join(TRANSPORTS)})")
    elif os.path.isdir(name):
        src = Source("oci" if os.path.isfile(os.path.join(name, "oci-layout")) else "dir", name, tag)
    else:
        src = Source("docker-archive", name, tag)
    if src.transport == "dir" and src.tag is not None:
        raise click.BadParameter(f"{name!r}: a tag applies to an OCI layout or a docker archive, not a plain directory")
    return src


def load_image(name: str | Source, tag: str | None = None, platform: str | None = None, *,
               progress: Progress | None = None) -> Image:
    """The image ``name`` names (see :func:`parse_source`); ``platform`` picks one of an OCI index;
    ``progress`` is the loaders' hook (:mod:`unionfs_sim.progress`).

    Errors of the format (a missing file, a corrupt archive, an unknown tag) propagate as
    the loaders raise them (``FileNotFoundError``, ``FormatError``, ``LookupError``), each
    naming the file; the CLI turns them into one-line messages. ``progress`` goes to the
    docker-archive loader (see ``docker_archive.load``).
    """
    from ..formats import docker_archive, oci

    src = name if isinstance(name, Source) else parse_source(name, tag)
    if src.transport == "oci":
        return oci.load(src.path, tag=src.tag, platform=platform, progress=progress)
    if src.transport == "docker-archive":
        return docker_archive.load(src.path, tag=src.tag, progress=progress)
    if not os.path.isdir(src.path):
        raise NotADirectoryError(20, "dir: needs a directory", src.path)
    return Image.from_layers([Layer.from_directory(src.path, format="plain")])


__all__ = ["TRANSPORTS", "Source", "load_image", "parse_source"]
