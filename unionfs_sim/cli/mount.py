"""``unionfs-sim mount``: serve an image's container (or the image) as a real directory.

Nothing FUSE is imported until the command runs.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import click

from ..container import Container
from ..image import Image
from ..layer import Layer
from ..options import OverlayOptions
from .sources import load_image


def load_source(source: str, tag: str | None = None, platform: str | None = None) -> Image:
    """The image SOURCE names: ``oci:DIR[:TAG]``, ``docker-archive:FILE[:TAG]``, ``dir:PATH`` or a
    bare path (see :mod:`.sources`)."""
    return load_image(source, tag=tag, platform=platform)


def _parse_commit_to(value: str) -> tuple[str, str | None]:
    """``LAYOUT[:TAG]``: the tag is what follows the last colon, if it holds no ``/``."""
    path, sep, tag = value.rpartition(":")
    if sep and path and tag and "/" not in tag:
        return path, tag
    return value, None


def _fuse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in pairs:
        for part in item.split(","):
            if part:
                k, eq, v = part.partition("=")
                out[k] = v if eq else True
    return out


def _compression(path: str) -> str | None:
    if path.endswith((".gz", ".tgz")):
        return "gzip"
    if path.endswith((".zst", ".zstd")):
        return "zstd"
    return None


@click.command("mount")
@click.argument("source")
@click.argument("mountpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--tag", help="which image of an OCI layout or docker archive (by tag or name)")
@click.option("--platform", help="os/arch[/variant] when the tag names an image index")
@click.option("--read-only", is_flag=True, help="mount the image itself, read-only")
@click.option("--save-upper", type=click.Path(file_okay=False), metavar="DIR",
              help="afterwards, write the upper layer as an overlayfs upperdir into DIR")
@click.option("--save-layer", type=click.Path(dir_okay=False), metavar="FILE.tar",
              help="afterwards, write the changes as an OCI layer tar (.tar.gz/.tar.zst compress)")
@click.option("--commit-to", metavar="LAYOUT[:TAG]", help="afterwards, commit and save the new image into an OCI layout")
@click.option("--comment", help="history comment of the committed layer")
@click.option("--redirect-dir/--no-redirect-dir", default=None, help="overlayfs redirect_dir (directory renames)")
@click.option("--index/--no-index", default=False, help="overlayfs index (hard links survive copy-up)")
@click.option("--metacopy/--no-metacopy", default=False, help="overlayfs metacopy (metadata-only copy-up)")
@click.option("--allow-other", is_flag=True, help="let other users into the mount")
@click.option("-o", "options", multiple=True, metavar="OPT[,OPT]", help="more FUSE options, e.g. -o attr_timeout=1")
def mount_command(source: str, mountpoint: str, tag: str | None, platform: str | None, read_only: bool,
                  save_upper: str | None, save_layer: str | None, commit_to: str | None, comment: str | None,
                  redirect_dir: bool | None, index: bool, metacopy: bool, allow_other: bool,
                  options: tuple[str, ...]) -> None:
    """Mount SOURCE's merged view at MOUNTPOINT until Ctrl-C, SIGTERM or umount.

    SOURCE is an OCI image layout, a docker-save archive or a plain directory. By default
    a new container of the image is mounted read-write; its changes can be saved when
    the mount ends (--save-upper, --save-layer, --commit-to).
    """
    from ..fuse import FuseUnavailable, MountError, mount

    if read_only and (save_upper or save_layer or commit_to):
        raise click.UsageError("--read-only has no changes to save")
    try:
        opts = OverlayOptions(redirect_dir=redirect_dir, index=index, metacopy=metacopy)  # type: ignore[arg-type]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        image = load_source(source, tag, platform)
    except (LookupError, ValueError, OSError) as e:
        raise click.ClickException(f"cannot load {source}: {e}") from None
    target: Image | Container = image if read_only else image.container(opts)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with mount(target, mountpoint, allow_other=allow_other, fsname=os.path.abspath(source).replace(",", "_"),
                   **_fuse_options(options)) as m:
            what = "read-only" if read_only else "read-write"
            click.echo(f"{source} ({len(image.layers)} layers) mounted {what} at {mountpoint};"
                       " Ctrl-C or umount ends it", err=True)
            while not stop.is_set() and m.alive:
                m.wait(0.25)
    except (FuseUnavailable, MountError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    click.echo(f"unmounted {mountpoint}", err=True)
    if isinstance(target, Container):
        _save(target, save_upper, save_layer, commit_to, comment)


def _save(c: Container, save_upper: str | None, save_layer: str | None, commit_to: str | None,
          comment: str | None) -> None:
    from ..codec import overlaydir
    from ..formats import oci
    from .fuse_overlayfs import upper_entries

    changes = c.diff()
    click.echo(f"{len(changes)} changes" + (": " + ", ".join(str(ch) for ch in changes[:8]) if changes else "")
               + (" ..." if len(changes) > 8 else ""), err=True)
    if save_upper:
        overlaydir.write(upper_entries(c), save_upper, format="overlay")
        click.echo(f"upper layer written to {save_upper} (overlayfs upperdir)", err=True)
    if save_layer:
        layer = Layer(c.changeset())
        with open(save_layer, "wb") as f:
            layer.to_tar(f, compression=_compression(save_layer))
        click.echo(f"layer {layer.digest} written to {save_layer}", err=True)
    if commit_to:
        path, tag = _parse_commit_to(commit_to)
        new = c.commit(comment=comment or "unionfs-sim mount")
        digest = oci.save(new, path, tag=tag)
        click.echo(f"committed {new.id} as {digest} into {path}" + (f" (tag {tag})" if tag else ""), err=True)


__all__ = ["load_source", "mount_command"]
