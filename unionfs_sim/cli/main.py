"""The ``unionfs-sim`` click group, its ``demo`` command, and ``fuse-overlayfs`` (the drop-in's own parser runs it)."""

from __future__ import annotations

import importlib
import sys

import click

from .. import WHITEOUT, Dir, File, Image, ImageConfig, Layer, OverlayOptions, Symlink
from ..fs import FileSystem


class LazyGroup(click.Group):
    """A click group whose commands are imported when first run or listed in ``--help``.

    So ``unionfs-sim-fuse`` (which imports this package) and ``unionfs-sim mount`` do not load
    build/, analysis/, serve/ and the formats they never use (click's documented pattern:
    https://click.palletsprojects.com/en/stable/complex/#lazily-loading-subcommands).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy: dict[str, tuple[str, str]] = {}

    def add_lazy(self, name: str, module: str, attr: str) -> None:
        """Register command ``name`` as ``attr`` of ``module`` (relative to this package), loaded on use."""
        self.lazy[name] = (module, attr)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name]
            cmd = getattr(importlib.import_module(module, __package__), attr)
            if not isinstance(cmd, click.Command):
                raise TypeError(f"{module}.{attr} is not a click command")
            self.add_command(cmd, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.version_option(package_name="unionfs_sim")
def main() -> None:
    """Simulate container images, containers and the overlay filesystem under them."""


def _tree(fs: FileSystem, top: str = "/") -> list[str]:
    lines = []
    for dirpath, dirs, files in fs.walk(top):
        for name in sorted(dirs + files):
            p = dirpath.rstrip("/") + "/" + name
            st = fs.lstat(p)
            extra = f" -> {fs.readlink(p)}" if fs.islink(p) else ""
            lines.append(f"{st.st_mode:07o} {st.st_size:6d}  {p}{extra}")
    return lines


@main.command()
def demo() -> None:
    """Walk through layers, an image, two containers, copy-up, whiteouts, diff and commit."""
    echo = click.echo
    base = Layer.from_dict({
        "etc/": Dir(mode=0o755),
        "etc/hostname": b"base\n",
        "etc/motd": b"Welcome!\n",
        "bin/busybox": File(b"\x7fELF...", mode=0o755),
        "bin/sh": Symlink("busybox"),
        "var/cache/apt/pkgcache.bin": b"x" * 4096,
    })
    app = Layer.from_dict({
        "etc/motd": WHITEOUT,
        "var/cache/": Dir(opaque=True),
        "app/server.py": b"print('hello')\n",
    })
    image = Image.from_layers([base, app], config=ImageConfig(cmd=["python3", "/app/server.py"]))
    echo(click.style("An image of two layers", bold=True))
    for i, layer in enumerate(image.layers):
        echo(f"  layer {i}: diff_id {layer.digest}  ({len(layer)} entries)")
    echo(f"  image id {image.id}\n  manifest digest {image.digest}")
    echo(click.style("\nMerged view (layer 1 deletes /etc/motd and hides /var/cache):", bold=True))
    for line in _tree(image.fs):
        echo("  " + line)
    echo(f"  /etc/hostname comes from layer {image.fs.which_layer('/etc/hostname')}")

    c1, c2 = image.container(), image.container(OverlayOptions(redirect_dir=True))
    c1.fs.write_bytes("/etc/hostname", b"web1\n")
    c1.fs.unlink("/bin/sh")
    c1.fs.makedirs("/srv/data")
    c1.fs.write_text("/srv/data/notes.txt", "copy-up demo\n")
    echo(click.style("\nContainer 1 wrote /etc/hostname (copy-up), deleted /bin/sh (whiteout):", bold=True))
    for k, e in sorted(c1.upper.items()):
        echo(f"  upper /{k}: {e!r}"[:110])
    echo("  docker diff:")
    for ch in c1.diff():
        echo(f"    {ch}")
    echo(f"  container 2 still sees /etc/hostname = {c2.fs.read_bytes('/etc/hostname')!r}")
    try:
        c1.fs.rename("/var", "/var2")
    except OSError as e:
        echo(f"  rename of a lower directory without redirect_dir: {e.strerror} (errno {e.errno}), as the kernel")
    c2.fs.rename("/var", "/var2")
    echo(f"  with redirect_dir=True it moves: {c2.fs.listdir('/')}")

    new = c1.commit(comment="demo commit")
    echo(click.style("\nCommitted container 1 as a new image:", bold=True))
    echo(f"  {new!r}: {len(new.layers)} layers, top layer {new.layers[-1].digest[:19]}...")
    echo(f"  new image /etc/hostname = {new.fs.read_bytes('/etc/hostname')!r}; "
         f"old image still {image.fs.read_bytes('/etc/hostname')!r}")


@click.command("fuse-overlayfs", add_help_option=False, context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def fuse_overlayfs_command(args: tuple[str, ...]) -> None:
    """The fuse-overlayfs drop-in (unionfs-sim-fuse) as a command; --help lists its options."""
    from .fuse_overlayfs import main as drop_in  # its click parser, its exit codes

    sys.exit(drop_in(list(args)))
