"""``unionfs-sim mount``: serve an image's container (or the image) as a real directory.

Nothing FUSE is imported until the command runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from typing import Any

import click

from ..container import Container
from ..fs import FileSystem
from ..fuse.options import parse as options_parse
from ..image import Image
from ..layer import Layer
from ..options import OverlayOptions
from .sources import load_image, named


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


def _compression(path: str) -> str | None:
    if path.endswith((".gz", ".tgz")):
        return "gzip"
    if path.endswith((".zst", ".zstd")):
        return "zstd"
    return None


@click.command("mount")
@click.argument("source")
@click.argument("mountpoint", type=click.Path())
@click.option("--tag", help="which image of an OCI layout or docker archive (by tag or name)")
@click.option("--platform", help="os/arch[/variant] when the tag names an image index")
@click.option("--read-only", is_flag=True, help="mount the image itself, read-only")
@click.option("--upper", type=click.Path(file_okay=False), metavar="DIR",
              help="keep the changes in DIR, an overlayfs upperdir, written as they happen (DIR's content, if"
              " any, is the starting upper layer)")
@click.option("--save-upper", type=click.Path(file_okay=False), metavar="DIR",
              help="afterwards, write the upper layer as an overlayfs upperdir into DIR")
@click.option("--save-layer", type=click.Path(dir_okay=False), metavar="FILE.tar",
              help="afterwards, write the changes as an OCI layer tar (.tar.gz/.tar.zst compress)")
@click.option("--commit-to", metavar="LAYOUT[:TAG]",
              help="afterwards, commit and save the new image into an OCI layout")
@click.option("--comment", help="history comment of the committed layer")
@click.option("--redirect-dir/--no-redirect-dir", default=None, help="overlayfs redirect_dir (directory renames)")
@click.option("--index/--no-index", default=False, help="overlayfs index (hard links survive copy-up)")
@click.option("--metacopy/--no-metacopy", default=False, help="overlayfs metacopy (metadata-only copy-up)")
@click.option("--allow-other", is_flag=True, help="let other users into the mount")
@click.option("-o", "options", multiple=True, metavar="OPT[,OPT]", help="more FUSE options, e.g. -o attr_timeout=1")
@click.option("--force", is_flag=True, help="clear a stale FUSE mount (its server gone) at MOUNTPOINT first")
@click.option("-v", "--verbose", is_flag=True, help="on an error, show the traceback too")
def mount_command(source: str, mountpoint: str, tag: str | None, platform: str | None, read_only: bool,
                  upper: str | None, save_upper: str | None, save_layer: str | None, commit_to: str | None,
                  comment: str | None, redirect_dir: bool | None, index: bool, metacopy: bool, allow_other: bool,
                  options: tuple[str, ...], force: bool, verbose: bool) -> None:
    """Mount SOURCE's merged view at MOUNTPOINT until Ctrl-C, SIGTERM or umount.

    SOURCE is an OCI image layout, a docker-save archive or a plain directory. By default
    a new container of the image is mounted read-write and its changes live in memory:
    keep them with --upper DIR (written as they happen) or save them when the mount ends
    (--save-upper, --save-layer, --commit-to). It says at the start where changes go.
    """
    try:
        _mount(source, mountpoint, tag, platform, read_only, upper, save_upper, save_layer, commit_to, comment,
               redirect_dir, index, metacopy, allow_other, options, force)
    except (click.ClickException, click.Abort, KeyboardInterrupt):
        raise
    except Exception as e:  # bad input or a failed mount: one line, the traceback with -v
        if verbose:
            raise
        raise click.ClickException(f"{type(e).__name__}: {e} (-v shows the traceback)") from None


def _where_changes_go(read_only: bool, upper: str | None, save_upper: str | None, save_layer: str | None,
                      commit_to: str | None) -> str:
    if read_only:
        return "read-only: no changes"
    keep = []
    if upper:
        keep.append(f"the upper dir {upper} (written as they happen)")
    if save_upper:
        keep.append(f"the upper dir {save_upper} (written at unmount)")
    if save_layer:
        keep.append(f"the layer file {save_layer} (written at unmount)")
    if commit_to:
        keep.append(f"a new image in {commit_to} (committed at unmount)")
    if not keep:
        return ("changes stay in memory and are LOST at unmount; to keep them use --upper DIR"
                " (or --save-layer FILE.tar, --commit-to LAYOUT)")
    return "changes go to " + "; ".join(keep)


def _mount(source: str, mountpoint: str, tag: str | None, platform: str | None, read_only: bool, upper: str | None,
           save_upper: str | None, save_layer: str | None, commit_to: str | None, comment: str | None,
           redirect_dir: bool | None, index: bool, metacopy: bool, allow_other: bool, options: tuple[str, ...],
           force: bool) -> None:
    from ..fuse import FuseUnavailable, MountError, mount
    from ..fuse.mounting import explain_mountpoint

    if read_only and (upper or save_upper or save_layer or commit_to):
        raise click.UsageError("--read-only has no changes to save")
    try:
        opts = OverlayOptions(redirect_dir=redirect_dir, index=index, metacopy=metacopy)  # type: ignore[arg-type]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    why = explain_mountpoint(mountpoint)
    if why is not None and force and "not connected" in why:
        from ..linux import unmount

        unmount(os.path.abspath(mountpoint), lazy=True)
        click.echo(f"cleared the stale FUSE mount at {mountpoint}", err=True)
        why = explain_mountpoint(mountpoint)
    if why is not None:
        raise click.ClickException(why + (" (or add --force)" if "not connected" in why else ""))
    try:
        image = load_source(source, tag, platform)
    except (LookupError, ValueError, OSError) as e:
        raise click.ClickException(f"cannot load {named(source, e)}") from None
    target: Image | Container | FileSystem = image
    container: Container | None = None
    work: str | None = None
    if not read_only:
        if upper:
            target, container, work = _upper_container(image, upper, opts)
        else:
            container = image.container(opts)
            target = container
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    extra: dict[str, Any] = options_parse(options)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with mount(target, mountpoint, allow_other=allow_other, fsname=os.path.abspath(source).replace(",", "_"),
                   **extra) as m:
            what = "read-only" if read_only else "read-write"
            click.echo(f"{source} ({len(image.layers)} layers) mounted {what} at {mountpoint};"
                       " Ctrl-C or umount ends it", err=True)
            click.echo(_where_changes_go(read_only, upper, save_upper, save_layer, commit_to), err=True)
            while not stop.is_set() and m.alive:
                m.wait(0.25)
    except (FuseUnavailable, MountError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    click.echo(f"unmounted {mountpoint}", err=True)
    if container is not None:
        _save(container, upper, save_upper, save_layer, commit_to, comment)


def _upper_container(image: Image, upper: str, opts: OverlayOptions) -> tuple[FileSystem, Container, str]:
    """A container whose upper is ``upper`` (made if missing), written through, and its staging workdir."""
    from ..fuse.writethrough import UpperDir, WriteThroughFS, read_upperdir

    os.makedirs(upper, exist_ok=True)
    c = Container.from_upper(image, read_upperdir(upper, image.lower), opts)
    parent = os.path.dirname(os.path.abspath(upper))
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(upper))}.work-", dir=parent)
    return WriteThroughFS(c.overlay, UpperDir(c.overlay, upper, work)), c, work


def _save(c: Container, upper: str | None, save_upper: str | None, save_layer: str | None, commit_to: str | None,
          comment: str | None) -> None:
    from ..codec import overlaydir
    from ..formats import oci
    from .fuse_overlayfs import upper_entries

    changes = c.diff()
    listed = (": " + ", ".join(str(ch) for ch in changes[:8]) if changes else "") + (" ..." if len(changes) > 8 else "")
    if changes and not (upper or save_upper or save_layer or commit_to):
        click.echo(f"{len(changes)} changes{listed} DISCARDED (they were in memory only);"
                   " to keep them, mount with --upper DIR", err=True)
        return
    click.echo(f"{len(changes)} changes{listed}", err=True)
    if upper:
        click.echo(f"the upper dir {upper} holds them (written as they happened)", err=True)
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
