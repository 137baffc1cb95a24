"""``unionfs-sim build``: a Dockerfile to an image, with Docker's cache rules and why each step missed.

The cache lives in the process unless ``--cache FILE`` keeps it between runs (a pickle
this command wrote; never load one from elsewhere). Base images are named with
``--image NAME=SOURCE`` (``docker-archive:bb.tar``, ``oci:DIR:TAG`` ...); the result is
written with ``--output`` in the same notation.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from typing import Any

import click

from ..build import Builder, BuildError, BuildResult, Context, ContextError, DockerfileError
from .sources import load_image


def _progress_reader(path: str) -> Context:
    """Read and hash the context, with a progress bar on a terminal (a large context takes a while)."""
    try:
        from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn
    except ImportError:
        return Context.from_directory(path)
    if not sys.stderr.isatty():
        return Context.from_directory(path)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  transient=True) as prog:
        walk = prog.add_task("reading the context", total=None)
        ctx = Context.from_directory(path, progress=lambda files, size: prog.update(walk, advance=size))
        prog.remove_task(walk)
        task = prog.add_task("hashing the context", total=None)
        ctx.prehash(progress=lambda done, total: prog.update(task, completed=done, total=total))
    return ctx


def _save(image: Any, output: str, tag: str | None) -> None:
    from ..formats import docker_archive, oci

    transport, sep, rest = output.partition(":")
    if sep and transport == "oci":
        path, _, t = rest.partition(":")
        oci.save(image, path, tag=t or (tag.rpartition(":")[2] if tag else None))
    elif sep and transport == "docker-archive":
        path, _, t = rest.partition(":")
        name = t or tag
        docker_archive.save(image, path, tags=[name] if name else [])
    else:
        raise click.BadParameter(f"{output!r}: write oci:DIR[:TAG] or docker-archive:FILE[:TAG]",
                                 param_hint="--output")


def _render(r: BuildResult, explain: bool) -> None:
    total: dict[str | int, int] = {}
    for s in r.steps:
        total[s.stage] = total.get(s.stage, 0) + 1
    seen: dict[str | int, int] = {}
    single = len(total) == 1
    for s in r.steps:
        seen[s.stage] = seen.get(s.stage, 0) + 1
        where = f"{seen[s.stage]}/{total[s.stage]}" if single else f"{s.stage} {seen[s.stage]}/{total[s.stage]}"
        head = f"#{s.number} [{where}] {s.instruction}"
        if s.cached is True:
            tail = click.style("CACHED", fg="green")
        elif s.cached is False:
            tail = click.style("MISS", fg="yellow") + f" {s.reason}"
        elif s.reason:
            tail = click.style(f"skipped: {s.reason}", dim=True)
        else:
            tail = ""
        click.echo(f"{head}\n#{s.number} {tail}" if tail else head)
    click.echo(f"writing image {r.image.id}" + (f"\nnaming to {r.tag}" if r.tag else ""))
    if explain:
        click.echo("\n" + r.explain())


@click.command("build")
@click.argument("context", type=click.Path(exists=True, file_okay=False))
@click.option("-f", "--file", "dockerfile", default=None, help="The Dockerfile (default: CONTEXT/Dockerfile).")
@click.option("-t", "--tag", default=None, help="Name the result NAME[:TAG].")
@click.option("--build-arg", "build_args", multiple=True, metavar="K=V", help="A build argument (repeatable).")
@click.option("--target", default=None, help="Build this stage.")
@click.option("--rules", type=click.Choice(["buildkit", "classic"]), default="buildkit", show_default=True,
              help="Whose cache rules: BuildKit's or the classic builder's.")
@click.option("--no-cache", is_flag=True, help="Build every step.")
@click.option("--explain", is_flag=True, help="Say why each missed step missed and what fell with it.")
@click.option("--isolation", type=click.Choice(["auto", "python", "chroot"]), default="auto", show_default=True,
              help="How RUN executes.")
@click.option("--image", "images", multiple=True, metavar="NAME=SOURCE",
              help="A local image FROM may name, e.g. busybox=docker-archive:bb.tar (repeatable).")
@click.option("--cache", "cache_file", type=click.Path(dir_okay=False), default=None,
              help="Keep the build cache (and local images) in this file between runs.")
@click.option("-o", "--output", default=None, help="Write the image: oci:DIR[:TAG] or docker-archive:FILE[:TAG].")
@click.option("--json", "as_json", is_flag=True, help="Print the steps and the image as JSON.")
def build_command(context: str, dockerfile: str | None, tag: str | None, build_args: tuple[str, ...],
                  target: str | None, rules: str, no_cache: bool, explain: bool, isolation: str,
                  images: tuple[str, ...], cache_file: str | None, output: str | None, as_json: bool) -> None:
    """Build CONTEXT's Dockerfile with Docker's cache rules, showing each step as CACHED or why it missed."""
    args: dict[str, str] = {}
    for kv in build_args:
        k, eq, v = kv.partition("=")
        if not k:
            raise click.BadParameter(f"{kv!r} is not K=V", param_hint="--build-arg")
        args[k] = v if eq else os.environ.get(k, "")
    b: Builder | None = None
    if cache_file and os.path.exists(cache_file):
        with open(cache_file, "rb") as f:
            loaded = pickle.load(f)  # noqa: S301 - a file this command wrote
        if not isinstance(loaded, Builder):
            raise click.ClickException(f"{cache_file}: not a build cache written by unionfs-sim build")
        b = loaded
        b.isolation = isolation
    if b is None:
        b = Builder(isolation=isolation)
    for spec in images:
        name, eq, src = spec.partition("=")
        if not eq or not name or not src:
            raise click.BadParameter(f"{spec!r} is not NAME=SOURCE", param_hint="--image")
        try:
            b.add(load_image(src), name)
        except (OSError, ValueError) as e:
            raise click.ClickException(f"--image {spec}: {e}") from None
    try:
        ctx = _progress_reader(context)
        r = b.build(ctx, dockerfile=dockerfile, tag=tag, build_args=args, target=target, no_cache=no_cache,
                    rules=rules, dockerfile_text=_read(dockerfile, context))
    except (DockerfileError, BuildError, ContextError, LookupError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if cache_file:
            with open(cache_file, "wb") as f:
                pickle.dump(b, f)
    if output:
        _save(r.image, output, r.tag)
    if as_json:
        click.echo(json.dumps({
            "image": r.image.id, "digest": r.image.digest, "tag": r.tag, "rules": r.rules,
            "steps": [{"number": s.number, "stage": s.stage, "line": s.line, "instruction": s.instruction,
                       "created_by": s.created_by, "cached": s.cached, "reason": s.reason,
                       "caused_by": s.caused_by} for s in r.steps],
        }, indent=2))
    else:
        _render(r, explain)


def _read(dockerfile: str | None, context: str) -> str:
    path = dockerfile if dockerfile else os.path.join(context, "Dockerfile")
    if not os.path.isabs(path) and dockerfile and not os.path.exists(path):
        path = os.path.join(context, dockerfile)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise click.ClickException(f"cannot read the Dockerfile {path}: {e.strerror}") from None


__all__ = ["build_command"]
