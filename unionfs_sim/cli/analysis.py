"""``inspect``, ``history``, ``ls``, ``diff``, ``layers``, ``efficiency``, ``df``, ``export``: looking inside images.

Images are named the skopeo way (:mod:`.sources`). Every command takes ``--json`` and
then prints one JSON document whose shape is in :data:`SCHEMAS` (JSON Schema); without
it, tables: through rich when it is installed (the ``cli`` extra), plain text otherwise.
Errors in the input come out as one line naming what was wrong, exit status 2 for usage
and 1 for the rest (as dive, ``efficiency --ci`` exits 1 when a rule fails).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import click

from .. import analysis
from ..analysis.efficiency import METHODS, steps_of
from ..container import Container
from ..errors import FormatError
from ..image import Image
from ..nodes import Dir, File, Symlink
from ..progress import Progress
from .sources import load_image, named, parse_source

F = TypeVar("F", bound=Callable[..., Any])

_INT = {"type": "integer"}
_STR = {"type": "string"}
_NUM = {"type": ["number", "null"]}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": sorted(props), "properties": props}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


_FINDING = _obj({"path": _STR, "count": _INT, "bytes": _INT, "layers": _list(_INT), "steps": _list(_STR), "kind": _STR})
SCHEMAS: dict[str, dict[str, Any]] = {
    "inspect": _list(_obj({"Id": _STR, "RepoTags": _list(_STR), "RepoDigests": _list(_STR), "Created": _STR,
                           "Config": {"type": ["object", "null"]}, "Size": _INT, "Os": _STR, "Architecture": _STR,
                           "RootFS": _obj({"Type": _STR})})),
    "history": _list(_obj({"Id": _STR, "Created": _INT, "CreatedBy": _STR, "Size": _INT, "Comment": _STR,
                           "EmptyLayer": {"type": "boolean"}})),
    "ls": _list(_obj({"path": _STR, "type": _STR, "mode": _INT, "size": _INT, "layer": _INT})),
    "diff": _list(_obj({"kind": {"enum": ["A", "C", "D"]}, "path": _STR})),
    "layers": _list(_obj({"index": _INT, "diff_id": _STR, "size": _INT, "tar_size": _INT, "entries": _INT,
                          "created_by": _STR})),
    "efficiency": _obj({"method": _STR, "score": {"type": "number"}, "wasted_bytes": _INT, "user_wasted_percent": _NUM,
                        "reclaimable_bytes": _INT, "size_bytes": _INT, "user_size_bytes": _INT,
                        "findings": _list(_FINDING), "layers": _list({"type": "object"}),
                        "ci": {"type": ["object", "null"]}}),
    "df": _obj({"layers_size": _INT, "images": _list(_obj({"name": _STR, "id": _STR, "size": _INT, "shared_size": _INT,
                                                          "unique_size": _INT, "containers": _INT})),
                "containers": _list(_obj({"name": _STR, "image": _STR, "size": _INT, "virtual_size": _INT}))}),
    "export": _obj({"destination": _STR, "format": _STR, "entries": _INT, "size": _INT}),
}
"""The JSON Schema of each command's ``--json`` output (stable: fields are only ever added)."""


def _rich() -> Any:
    """The rich Console on stdout, or None when rich is not installed (rich itself drops colour off a terminal)."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console()


def _emit(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str, allow_nan=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A table: rich's when installed, else aligned plain text."""
    con = _rich()
    if con is not None:
        from rich.table import Table

        t = Table(title=title, show_edge=False)
        for h in headers:
            t.add_column(h, overflow="fold")
        for r in rows:
            t.add_row(*(str(c) for c in r))
        con.print(t)
        return
    if title:
        click.echo(title)
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@contextlib.contextmanager
def _progress(what: str) -> Iterator[None]:
    """A spinner on stderr while something slow runs (rich on a terminal only)."""
    if not sys.stderr.isatty():
        yield
        return
    try:
        from rich.console import Console
    except ImportError:
        yield
        return
    with Console(stderr=True).status(what):
        yield


@contextlib.contextmanager
def _bar(what: str) -> Iterator[Progress | None]:
    """A progress bar on stderr for a library ``progress=`` hook (rich on a terminal only)."""
    if not sys.stderr.isatty():
        yield None
        return
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        yield None
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=None)

        def hook(done: int, total: int, step: str) -> None:
            bar.update(task, completed=done, total=total or None, description=f"{what}: {step}")

        yield hook


def _load(name: str, tag: str | None = None) -> Image:
    with _bar(f"loading {name}") as hook:
        try:
            return load_image(name, tag=tag, progress=hook)
        except click.ClickException:
            raise
        except (OSError, FormatError, LookupError, ValueError) as e:
            raise click.ClickException(named(name, e)) from None


def _scan(name: str, tag: str | None = None) -> analysis.ImageLike:
    """A docker archive scanned for analysis (headers only, see analysis.scan); other sources loaded."""
    src = parse_source(name, tag)
    if src.transport != "docker-archive":
        return _load(name, tag)
    with _bar(f"scanning {name}") as hook:
        try:
            return analysis.scan(src.path, tag=src.tag, progress=hook)
        except (OSError, FormatError, LookupError, ValueError) as e:
            raise click.ClickException(named(name, e)) from None


def _human(n: int) -> str:
    from .._html import human

    return human(n)


def image_options(f: F) -> F:
    """The IMAGE argument with ``--tag`` and ``--json``, shared by the commands that take one image."""
    f = click.option("--json", "as_json", is_flag=True, help="print JSON (see SCHEMAS)")(f)
    f = click.option("--tag", help="which image of an OCI layout or docker archive")(f)
    return click.argument("image")(f)


# --- inspect / history / layers ----------------------------------------------------------


size_rule_option = click.option(
    "--size-rule", type=click.Choice(analysis.SIZE_RULES), default="overlay2", show_default=True,
    help="how a layer's bytes are counted: overlay2 as Docker counts layers it loaded, pulled or "
         "built classically; tar as it counts BuildKit's (and as dive does)")


@click.command("inspect")
@image_options
@click.option("--repo-tag", multiple=True, help="a name to show in RepoTags")
@size_rule_option
def inspect_command(image: str, tag: str | None, as_json: bool, repo_tag: tuple[str, ...], size_rule: str) -> None:
    """IMAGE as ``docker image inspect`` shows it (always JSON)."""
    img = _scan(image, tag)
    named = parse_source(image, tag).tag
    tags = list(repo_tag) or ([named] if named else [])
    _emit([img.inspect(tags, rule=size_rule)])


@click.command("history")
@image_options
@click.option("--no-trunc", is_flag=True, help="don't truncate CREATED BY")
@size_rule_option
def history_command(image: str, tag: str | None, as_json: bool, no_trunc: bool, size_rule: str) -> None:
    """The steps that built IMAGE, newest first, as ``docker history``."""
    rows = analysis.history(_scan(image, tag), tags=[tag] if tag else [], rule=size_rule)  # type: ignore[arg-type]
    if as_json:
        _emit([r.to_json() for r in rows])
        return
    _table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
           [[r.id if no_trunc or r.id == "<missing>" else r.id[7:19], r.created or "",
             r.created_by if no_trunc else r.created_by[:45], _human(r.size), r.comment] for r in rows])


@click.command("layers")
@image_options
def layers_command(image: str, tag: str | None, as_json: bool) -> None:
    """IMAGE's layers, bottom first: diff_id, content size, tar size, entries, the step that made it."""
    img = _load(image, tag)
    steps = steps_of(img)
    rows: list[dict[str, Any]] = [
        {"index": i, "diff_id": d, "size": x.size, "tar_size": x.tar_size, "entries": len(x), "created_by": steps[i]}
        for i, (x, d) in enumerate(zip(img.layers, img.diff_ids, strict=True))]
    if as_json:
        _emit(rows)
        return
    _table(["#", "DIFF ID", "SIZE", "TAR", "ENTRIES", "CREATED BY"],
           [[r["index"], str(r["diff_id"])[7:19], _human(r["size"]), _human(r["tar_size"]), r["entries"],
             str(r["created_by"])[:60]] for r in rows])


# --- ls / diff ----------------------------------------------------------------------------------


def _kind(node: object) -> str:
    return {"File": "file", "Dir": "dir", "Symlink": "symlink", "Fifo": "fifo", "Socket": "socket",
            "Device": "device"}.get(type(node).__name__, "other")


@click.command("ls")
@image_options
@click.argument("path", default="/")
def ls_command(image: str, tag: str | None, as_json: bool, path: str) -> None:
    """The merged tree of IMAGE under PATH, with the layer each entry comes from."""
    img = _load(image, tag)
    low = img.lower
    top = path.strip("/")
    if top and top not in low.nodes:
        raise click.ClickException(f"{image}: no such path in the image: {path}")
    keys = sorted((k for k in low.nodes if k and (not top or k == top or k.startswith(top + "/"))),
                  key=lambda k: k.split("/"))
    rows = []
    for k in keys:
        n = low.nodes[k]
        row: dict[str, Any] = {"path": "/" + k, "type": _kind(n), "mode": n.mode, "size": n.size, "layer": low.where[k]}
        if isinstance(n, Symlink):
            row["target"] = n.target
        rows.append(row)
    if as_json:
        _emit(rows)
        return
    _table(["MODE", "SIZE", "LAYER", "PATH"],
           [[f"{r['type'][0]}{r['mode']:04o}", r["size"], r["layer"],
             r["path"] + (f" -> {r['target']}" if "target" in r else "")] for r in rows])


def diff_images(a: Image, b: Image) -> list[tuple[str, str]]:
    """``(kind, path)`` from ``a``'s merged tree to ``b``'s: A added, D deleted, C changed (content or metadata)."""
    na, nb = a.lower.nodes, b.lower.nodes
    out = []
    for k in sorted(set(na) | set(nb), key=lambda k: k.split("/")):
        if not k:
            continue
        x, y = na.get(k), nb.get(k)
        if x is None:
            out.append(("A", "/" + k))
        elif y is None:
            out.append(("D", "/" + k))
        elif x is not y and not (x.same(y) if not isinstance(x, File) else
                                 isinstance(y, File) and x.data == y.data and x.same(y)):
            if isinstance(x, Dir) and isinstance(y, Dir) and (x.mode, x.uid, x.gid) == (y.mode, y.uid, y.gid):
                continue
            out.append(("C", "/" + k))
    # a deleted directory: report it, not everything below it
    gone = {p for kind, p in out if kind == "D"}
    return [(kind, p) for kind, p in out if not (kind == "D" and os.path.dirname(p) in gone)]


def _container(image: Image, upper: str, name: str) -> Container:
    """The container whose writable layer is the overlayfs upperdir ``upper`` over ``image``
    (what ``unionfs-sim mount --upper`` or the fuse-overlayfs drop-in leave)."""
    from ..fuse.writethrough import read_upperdir

    if not os.path.isdir(upper):
        raise click.ClickException(f"{name}: upper dir {upper!r} is not a directory")
    try:
        return Container.from_upper(image, read_upperdir(upper, image.lower))
    except (OSError, FormatError, ValueError) as e:
        raise click.ClickException(f"{name}: upper dir {upper}: {e}") from None


@click.command("diff")
@click.argument("image")
@click.argument("other", required=False)
@click.option("--tag", help="which image of an OCI layout or docker archive (IMAGE)")
@click.option("--upper", metavar="DIR", help="a container: the overlayfs upperdir DIR over IMAGE (docker diff)")
@click.option("--json", "as_json", is_flag=True, help="print JSON (see SCHEMAS)")
def diff_command(image: str, other: str | None, tag: str | None, upper: str | None, as_json: bool) -> None:
    """Changes from IMAGE to OTHER; with --upper DIR, what the container whose writable layer is DIR
    changes (``docker diff``); with IMAGE alone, what its top layer changes (as ``docker diff``
    shows a container whose writable layer it is)."""
    if upper is not None and other is not None:
        raise click.UsageError("give OTHER or --upper, not both")
    img = _load(image, tag)
    if upper is not None:
        changes = [(c.kind, c.path) for c in _container(img, upper, image).diff()]
    elif other is None:
        if not img.layers:
            raise click.ClickException(f"{image}: the image has no layers")
        below = Image.from_layers(img.layers[:-1])
        changes = [(c.kind, c.path) for c in Container.from_upper(below, img.layers[-1]).diff()]
    else:
        changes = diff_images(img, _load(other))
    if as_json:
        _emit([{"kind": k, "path": p} for k, p in changes])
        return
    for k, p in changes:
        click.echo(f"{k} {p}")


# --- efficiency ---------------------------------------------------------------------------------


@click.command("efficiency")
@image_options
@click.option("--method", type=click.Choice(METHODS), default="reclaimable", show_default=True)
@click.option("--ci", is_flag=True, help="apply dive's CI rules; exit 1 when one fails")
@click.option("--ci-config", default=".dive-ci", show_default=True, help="dive's rules file (read when it exists)")
@click.option("--lowestEfficiency", "lowest", help="lowest allowed score (0-1; default 0.9)")
@click.option("--highestWastedBytes", "wasted", help="highest allowed wasted bytes (e.g. 20MB; default disabled)")
@click.option("--highestUserWastedPercent", "user", help="highest allowed wasted/user bytes (0-1; default 0.1)")
def efficiency_command(image: str, tag: str | None, as_json: bool, method: str, ci: bool, ci_config: str,
                       lowest: str | None, wasted: str | None, user: str | None) -> None:
    """How many of IMAGE's bytes its merged filesystem does not show (dive's score, or what squashing reclaims)."""
    img = _scan(image, tag)
    with _progress("analysing"):
        e = analysis.efficiency(img, method=method)  # type: ignore[arg-type]
    verdict = None
    if ci:
        rules: dict[str, str] = {}
        if os.path.exists(ci_config):
            try:
                with open(ci_config, encoding="utf-8") as f:
                    rules = analysis.read_ci_config(f.read(), ci_config)
            except (OSError, ValueError) as err:
                raise click.ClickException(str(err)) from None
        for k, v in (("lowestEfficiency", lowest), ("highestWastedBytes", wasted), ("highestUserWastedPercent", user)):
            if v is not None:
                rules[k] = v
        verdict = analysis.evaluate_ci(e, rules)
    if as_json:
        doc = e.to_json()
        doc["ci"] = verdict.to_json() if verdict else None
        _emit(doc)
    else:
        pct = e.user_wasted_percent
        click.echo(f"  method: {e.method}")
        click.echo(f"  efficiency: {e.score * 100:2.4f} %")
        click.echo(f"  wastedBytes: {e.wasted_bytes} bytes ({_human(e.wasted_bytes)})")
        shown = f"{pct * 100:2.4f}" if math.isfinite(pct) else ("NaN" if math.isnan(pct) else "+Inf")
        click.echo(f"  userWastedPercent: {shown} %")
        click.echo(f"  reclaimable by squashing: {e.reclaimable_bytes} bytes ({_human(e.reclaimable_bytes)})")
        _table(["COUNT", "WASTED", "PATH", "LAYERS", "KIND"],
               [[f.count, _human(f.bytes), f.path, ",".join(map(str, f.layers)), f.kind] for f in e.findings[:100]],
               title="Inefficient files")
        if verdict:
            for r in verdict.rules:
                click.echo(f"  {r.status}: {r.name}" + (f": {r.message}" if r.message else ""))
            click.echo("Result:" + ("PASS" if verdict.passed else "FAIL"))
    if verdict is not None and not verdict.passed:
        sys.exit(verdict.exit_code)


# --- df / export ----------------------------------------------------------------------------------


@click.command("df")
@click.argument("images", nargs=-1)
@click.option("--container", "containers", nargs=3, multiple=True, metavar="NAME IMAGE UPPERDIR",
              help="a container of IMAGE whose writable layer is the overlayfs upperdir UPPERDIR (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print JSON (see SCHEMAS)")
@size_rule_option
def df_command(images: tuple[str, ...], containers: tuple[tuple[str, str, str], ...], as_json: bool,
               size_rule: str) -> None:
    """Disk usage of IMAGES (and containers) together, as ``docker system df -v``: layers shared by
    chain id counted once, a container's size the bytes of its writable layer."""
    if not images and not containers:
        raise click.UsageError("name at least one image or --container")
    loaded: dict[str, analysis.ImageLike] = {name: _scan(name) for name in images}
    full: dict[str, Image] = {}
    cons = {}
    for cname, image, upper in containers:
        img = full.get(image)
        if img is None:
            img = full[image] = _load(image)
        cons[cname] = _container(img, upper, cname)
    du = analysis.disk_usage(loaded, cons, rule=size_rule)  # type: ignore[arg-type]
    if as_json:
        _emit(du.to_json())
        return
    _table(["IMAGE", "ID", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
           [[i.name, i.id[7:19], _human(i.size), _human(i.shared_size), _human(i.unique_size), i.containers]
            for i in du.images])
    if du.containers:
        _table(["CONTAINER", "IMAGE", "SIZE", "VIRTUAL SIZE"],
               [[c.name, c.image, _human(c.size), _human(c.virtual_size)] for c in du.containers])
    click.echo(f"Layers: {_human(du.layers_size)} ({du.layers_size} bytes)")


@click.command("export")
@image_options
@click.argument("destination")
@click.option("--format", "fmt", type=click.Choice(["tar", "dir"]), default=None,
              help="tar (default for a file name) or dir (default for an existing directory)")
def export_command(image: str, tag: str | None, as_json: bool, destination: str, fmt: str | None) -> None:
    """Flatten IMAGE (its merged filesystem) into a tar file or an empty directory."""
    img = _load(image, tag)
    fmt = fmt or ("dir" if os.path.isdir(destination) else "tar")
    try:
        with _bar("exporting") as hook:
            layer = analysis.export(img, destination, format=fmt, progress=hook)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{destination}: {e}") from None
    doc = {"destination": destination, "format": fmt, "entries": len(layer), "size": layer.size}
    if as_json:
        _emit(doc)
    else:
        click.echo(f"exported {len(layer)} entries ({_human(layer.size)}) to {destination}")


COMMANDS = (inspect_command, history_command, layers_command, ls_command, diff_command, efficiency_command,
            df_command, export_command)
"""The commands this module adds to the ``unionfs-sim`` group."""
