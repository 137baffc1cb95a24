"""Builder: Dockerfile -> Image with Docker's cache decisions, and why each step missed.

Two rule sets, from their sources (Docker 20.10 and its BuildKit 0.8):

``classic`` (``builder/dockerfile``): every instruction after FROM is a probe of the
image cache with the parent image id and the whole container config, the step's command
in ``Cmd`` (``#(nop) ENV ...`` for metadata, ``COPY file:<tarsum> in /dst``, ``|N k=v sh -c
...`` for RUN); one miss makes a new parent, so everything after it in the stage misses.
Each step commits an intermediate image on its parent (kept in ``Builder.by_id``, the
link in ``Builder.parents``): the cache is the chain of those images.

``buildkit`` (``frontend/dockerfile/dockerfile2llb``): only WORKDIR, COPY, ADD and RUN are
vertices with a cache verdict; a vertex's key is its op plus its inputs' keys, where copy
sources count by content; ENV, USER, WORKDIR and ARGs in scope reach RUN through its
environment, LABEL and the other metadata reach nothing. Stages the target does not need
are not built.
"""

from __future__ import annotations

import bz2
import copy as _copy
import datetime
import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import stat as _stat
import tarfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from ..container import Container
from ..errors import BuildError
from ..fs import FileSystem
from ..image import History, Image, ImageConfig
from ..layer import Layer
from ..nodes import Entry, Whiteout
from .cache import Cache, Record, describe_difference, key_of
from .context import Context, ContextError, Source, content_key, glob_match, has_glob, tarsum_v1
from .parser import (
    Dockerfile,
    DockerfileError,
    Instruction,
    command_args,
    expand,
    expand_words,
    go_quote,
    json_list,
    name_values,
    parse,
    split_stages,
)
from .run import RunFunction, RunRequest, chroot_unavailable, run_chroot, run_python
from .shell import UnsupportedCommand

RULES = ("buildkit", "classic")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PROXY_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                         "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})
_NO_VALUE = "\0"




@attrs.frozen
class Step:
    """One instruction of a build and the cache's verdict on it."""

    number: int
    """1-based position among the Dockerfile's instructions (FROM counts)."""
    instruction: str
    """The instruction as Docker prints it (``COPY f.txt /app/f.txt``)."""
    stage: str | int
    """The stage's name, or its index when it has none."""
    line: int
    created_by: str | None
    """The history ``created_by`` this step wrote (None: it wrote none)."""
    cached: bool | None
    """True: a cache hit; False: built; None: no cache decision under these rules."""
    reason: str | None = None
    """Why it missed (or why there is no decision); None on a hit."""
    caused_by: int | None = None
    """For a miss that only follows an earlier one: the number of the step that caused it."""


@attrs.define
class BuildResult:
    """What ``Builder.build`` made: the image and one Step per instruction."""

    image: Image
    steps: list[Step]
    rules: str
    tag: str | None = None

    @property
    def misses(self) -> list[Step]:
        """The steps that were built (cache misses)."""
        return [s for s in self.steps if s.cached is False]

    def explain(self) -> str:
        """A short report: each miss that had a cause of its own, and the steps that fell with it."""
        lines: list[str] = []
        roots = [s for s in self.steps if s.cached is False and s.caused_by is None]
        hits = sum(1 for s in self.steps if s.cached)
        lines.append(f"{len(self.misses)} of {sum(1 for s in self.steps if s.cached is not None)} steps missed "
                     f"the cache ({hits} hit) under {self.rules} rules.")
        for r in roots:
            lines.append(f"step {r.number} (line {r.line}) {r.instruction}: {r.reason}")
            fell = [s for s in self.steps if s.caused_by == r.number]
            if fell:
                lines.append("  and so: " + ", ".join(f"step {s.number} ({s.instruction.split(' ')[0]})" for s in fell))
        if roots:
            first = min(roots, key=lambda s: s.number)
            later_hits = [s for s in self.steps if s.cached and s.number > first.number]
            if self.rules == "classic" and not later_hits:
                lines.append("Every step after a miss is rebuilt (classic rules): put what changes least first.")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Each step with the cache's verdict and why it missed, then the image, for notebooks."""
        from .._html import section, table

        def verdict(s: Step) -> str:
            if s.cached is None:
                return "-"
            if s.cached:
                return "CACHED"
            return "built" if s.caused_by is None else f"built (after step {s.caused_by})"

        rows = [[s.number, s.line, s.stage, s.instruction[:80], verdict(s), s.reason or ""] for s in self.steps]
        decided = sum(1 for s in self.steps if s.cached is not None)
        title = (f"Build{' of ' + self.tag if self.tag else ''} under {self.rules} rules: "
                 f"{len(self.misses)} of {decided} steps missed the cache")
        return section(title, table(["step", "line", "stage", "instruction", "cache", "why"], rows, right=(0, 1)),
                       f'<div style="margin-top:6px">{self.image._repr_html_()}</div>')


# --- the state of a stage being built ---------------------------------------------------

@attrs.define
class _State:
    layers: list[Layer]
    history: list[History]
    config: dict[str, Any]
    parent: str                 # classic: id of the image so far ("" on scratch); buildkit: key of its filesystem
    origins: dict[str, int]
    args: dict[str, str]        # ARGs in scope -> value (_NO_VALUE: declared without one)
    arg_order: list[str]
    cause: int | None = None    # root-cause step of the last miss in this chain
    author: str | None = None
    image: Image | None = None  # a working view of layers and history (no config), made when needed
    base: str | None = None     # the parent the stage's chain started from (FROM an image or scratch)
    # classic: the image whose id is parent (None on scratch); kept apart from the working
    # view so the images the builder stores never hold a flattened index nobody asked for
    committed: Image | None = None

    def current(self) -> Image:
        if self.image is None:
            self.image = Image(self.layers, ImageConfig(), [h for h in self.history])
        return self.image

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in self.config.get("Env") or []:
            k, _, v = e.partition("=")
            out[k] = v
        return out

    def scope(self) -> dict[str, str]:
        """Variables for substitution: ARGs with a value, overridden by ENV."""
        out = {k: v for k, v in self.args.items() if v != _NO_VALUE}
        out.update(self.env())
        return out

    def build_args(self, *, unset: bool = False) -> list[tuple[str, str]]:
        """ARGs declared in scope, not overridden by ENV (classic: FilterAllowed; a proxy
        build arg given but not declared is left out, as prependEnvOnCmd does).

        ``unset``: BuildKit's ``runCommandString``, which lists every ARG of the stage, one
        without a value as ``NAME=`` and one an ENV overrides with the ENV's value.
        """
        env = self.env()
        if unset:   # BuildKit: every ARG, the ENV value where an ENV of that name overrides it
            return [(k, env[k] if k in env else "" if self.args[k] == _NO_VALUE else self.args[k])
                    for k in self.arg_order]
        return [(k, self.args[k]) for k in self.arg_order if self.args[k] != _NO_VALUE and k not in env]


def _iso(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    out = ""
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns % size == 0 or unit == "ns":
                if ns >= size:
                    return f"{ns // size}{unit}" if ns % size == 0 else f"{ns / size:g}{unit}"
        return f"{ns}ns"
    h, rem = divmod(ns, 3600 * 10**9)
    m, rem = divmod(rem, 60 * 10**9)
    if h:
        out += f"{h}h"
    if h or m:
        out += f"{m}m"
    s = rem / 10**9
    out += f"{s:g}s" if rem % 10**9 else f"{rem // 10**9}s"
    return out


def _parse_duration(text: str, ins: Instruction) -> int:
    units = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ins.error(f"time: invalid duration {go_quote(text)}")
    return int(total)


def _file_component(s: Source, digest: Callable[[Source], str]) -> str:
    content = digest(s)[:16] if s.kind == "f" else ""
    return (f"type={s.kind};content={content};size={s.size};mode={s.mode:o};owner={s.uid}:{s.gid};"
            f"link={s.linkname};xattrs={len(s.xattrs)}")


class _FsTree:
    """A stage's (or image's) filesystem seen as a copy source, paths relative to its root."""

    def __init__(self, image: Image, label: str) -> None:
        self.image, self.label = image, label
        self.fs = image.fs

    def get(self, path: str) -> Source | None:
        p = "/" + path
        try:
            st = self.fs.lstat(p)
        except OSError:
            return None
        kind = "d" if _stat.S_ISDIR(st.st_mode) else "l" if _stat.S_ISLNK(st.st_mode) else "f"
        if kind == "f" and not _stat.S_ISREG(st.st_mode):
            raise ContextError(f"{path} in {self.label} is not a file, directory or symlink")
        xattrs: tuple[tuple[str, bytes], ...] = ()
        try:
            xattrs = (("security.capability", self.fs.getxattr(p, "security.capability", follow_symlinks=False)),)
        except OSError:
            pass
        return Source(path, kind, _stat.S_IMODE(st.st_mode), st.st_size if kind == "f" else 0,
                      self.fs.readlink(p) if kind == "l" else "", st.st_uid, st.st_gid, 0, xattrs,
                      data=lambda: self.fs.read_bytes(p))

    def below(self, path: str) -> Iterator[Source]:
        top = "/" + path
        for dirpath, dirnames, filenames in self.fs.walk(top):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                rel = posixpath.join(dirpath, name).lstrip("/")
                s = self.get(rel)
                if s is not None:
                    yield s

    def all_paths(self) -> list[str]:
        return [s.path for s in self.below("")]

    def digest(self, s: Source) -> str:
        return hashlib.sha256(s.data()).hexdigest() if s.kind == "f" else ""


class _CtxTree:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.label = "the build context"

    def get(self, path: str) -> Source | None:
        return self.ctx.get(path)

    def below(self, path: str) -> Iterator[Source]:
        return self.ctx.below(path)

    def all_paths(self) -> list[str]:
        return sorted(self.ctx.entries)

    def digest(self, s: Source) -> str:
        return self.ctx.digest(s.path) if s.path in self.ctx.entries else hashlib.sha256(s.data()).hexdigest()


_Tree = _FsTree | _CtxTree


class Builder:
    """Builds images from Dockerfiles, holding the build cache and the local images by tag.

    ``registry`` (a :class:`~unionfs_sim.Registry`) is where FROM looks after the local
    images. ``isolation`` is how RUN executes: ``"python"`` (the shell subset),
    ``"chroot"`` (the command chrooted in the step's container, mounted with the project's
    FUSE server) or ``"auto"`` (chroot where this machine can mount, else python).
    ``epoch`` is the time written into history, configs and every file's mtime, so the
    same inputs give the same layers and ids.

    Like the daemon it models, a builder is also an image store: :attr:`by_id` holds every
    image it knows (tagged, loaded, and the intermediate image each classic step commits)
    and :meth:`parent` the link from an image to the one it was committed on, which
    ``analysis.history(image, store=builder)`` and ``image.inspect(store=builder)`` show as
    Docker shows them (real ids instead of ``<missing>``, ``Parent``).
    """

    def __init__(self, registry: Any = None, *, isolation: str = "auto", epoch: int | None = None,
                 commands: Mapping[str, RunFunction] | None = None) -> None:
        """``commands``: Python callables ``fn(fs, env)`` that run a RUN whose first word is their name."""
        if isolation not in ("auto", "python", "chroot"):
            raise ValueError(f"isolation must be 'auto', 'python' or 'chroot', not {isolation!r}")
        self.registry = registry
        self.isolation = isolation
        if epoch is None:
            sde = os.environ.get("SOURCE_DATE_EPOCH")
            epoch = int(sde) if sde and sde.isdigit() else 0
        self.epoch = epoch
        self.commands: dict[str, RunFunction] = dict(commands or {})
        self.images: dict[str, Image] = {}
        self.caches: dict[str, Cache] = {r: Cache() for r in RULES}
        self.by_id: dict[str, Image] = {}
        """Every image this builder holds, by id: tagged ones and classic intermediates."""
        self.parents: dict[str, str] = {}
        """Image id -> the id of the image it was committed on (classic builds only; moby
        ``image/store.go`` ``SetParent``). BuildKit and loaded images have none."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle (``build --cache FILE``), also a builder an older version wrote: that one
        kept no image store, so it gets one from its tags, and its classic records, which
        name no committed image and were keyed on other parents, are dropped (the next
        classic build starts afresh, as after ``docker builder prune``)."""
        self.__dict__.update(state)
        if "by_id" in state:
            return
        self.by_id = {img.id: img for img in self.images.values()}
        self.parents = {}
        old, self.caches = self.caches, {r: Cache() for r in RULES}
        for rule, cache in old.items():
            if rule == "classic":
                continue
            for rec in cache.records.values():
                self.caches[rule].put(Record(rec.key, rec.parent, rec.kind, rec.components, rec.layer,
                                             rec.history, rec.config))

    # --- local images --------------------------------------------------------------

    @staticmethod
    def _normal(tag: str) -> str:
        from ..reference import Reference

        try:
            ref = Reference.parse(tag)
        except ValueError as e:
            raise ValueError(f"invalid tag {tag!r}: {e}") from e
        name = ref.familiar
        if ref.digest:
            return name
        return name if ref.tag else name + ":latest"

    def add(self, image: Image, tag: str) -> None:
        """Make ``image`` known locally as ``tag`` (what ``docker load``/``pull`` does)."""
        self.images[self._normal(tag)] = image
        self.by_id[image.id] = image

    def resolve(self, name: str) -> Image:
        """The image FROM ``name`` means: an image id (``sha256:...``, intermediates too), a local
        tag, else the registry; LookupError otherwise."""
        if name in self.by_id:
            return self.by_id[name]
        key = self._normal(name)
        if key in self.images:
            return self.images[key]
        if self.registry is not None:
            try:
                return self.registry.pull(name)  # type: ignore[no-any-return]
            except (LookupError, ValueError):
                pass
        raise LookupError(f"image {name!r} not found locally (Builder.images) "
                          f"{'or in the registry' if self.registry is not None else '(no registry given)'}")

    def parent(self, image_id: str) -> str:
        """The id of the image ``image_id`` was committed on, or "" (``docker image inspect``'s ``Parent``)."""
        return self.parents.get(image_id, "")

    def tags(self, image_id: str) -> list[str]:
        """The local tags naming ``image_id``, sorted as Docker's reference store lists them."""
        return sorted(t for t, img in self.images.items() if img.id == image_id)

    def _commit(self, image: Image, parent: str) -> None:
        """Keep ``image`` as a child of ``parent`` (a classic step's intermediate image)."""
        self.by_id[image.id] = image
        if parent:
            self.parents[image.id] = parent

    # --- building --------------------------------------------------------------------

    def build(self, context: str | os.PathLike[str] | Context | Mapping[str, Any],
              dockerfile: str | None = "Dockerfile",
              tag: str | None = None, build_args: Mapping[str, str] | None = None, target: str | None = None,
              no_cache: bool = False, rules: str = "buildkit", *, isolation: str | None = None,
              dockerfile_text: str | None = None) -> BuildResult:
        """Build ``dockerfile`` (a path in the context, or ``dockerfile_text``) in ``context``.

        Returns the image (tagged ``tag`` in :attr:`images` on success) and one
        :class:`Step` per instruction. Raises DockerfileError or BuildError (with the line)
        on bad input or a failing RUN; nothing is tagged then.
        """
        if rules not in RULES:
            raise ValueError(f"rules must be 'buildkit' or 'classic', not {rules!r}")
        if tag is not None:
            tag = self._normal(tag)
        ctx = context if isinstance(context, Context) else (
            Context.from_dict(context) if isinstance(context, Mapping) else Context.from_directory(context))
        file = dockerfile or "Dockerfile"
        if dockerfile_text is None:
            text = self._read_dockerfile(context, ctx, file)
        else:
            text = dockerfile_text
        df = parse(text, file)
        run = _Run(self, df, ctx, dict(build_args or {}), target, no_cache, rules,
                   isolation or self.isolation)
        image, steps = run.go()
        self.by_id[image.id] = image
        if tag is not None:
            self.images[tag] = image
        return BuildResult(image, steps, rules, tag)

    @staticmethod
    def _read_dockerfile(context: Any, ctx: Context, file: str) -> str:
        if os.path.isabs(file):
            with open(file, encoding="utf-8") as f:
                return f.read()
        if ctx.root is not None and not isinstance(context, Context | Mapping):
            path = os.path.join(ctx.root, file)
            if not os.path.isfile(path):
                raise BuildError(f"cannot find the Dockerfile {file!r} in the context {ctx.root}", file=file)
            with open(path, encoding="utf-8") as f:
                return f.read()
        s = ctx.get(file.strip("/"))
        if s is None:
            raise BuildError(f"cannot find the Dockerfile {file!r} in the context", file=file)
        return s.data().decode()


class _Run:
    """One build: stages, steps and the cache decisions (kept apart from Builder's state)."""

    def __init__(self, b: Builder, df: Dockerfile, ctx: Context, build_args: dict[str, str], target: str | None,
                 no_cache: bool, rules: str, isolation: str) -> None:
        self.b, self.df, self.ctx, self.build_args = b, df, ctx, build_args
        self.no_cache, self.rules = no_cache, rules
        self.cache = b.caches[rules]
        self.classic = rules == "classic"
        self.isolation = isolation
        if isolation == "auto":
            self.isolation = "chroot" if chroot_unavailable() is None else "python"
        self.meta, self.stages = split_stages(df)
        self.numbers = {id(ins): i + 1 for i, ins in enumerate(df.instructions)}
        self.names: dict[str, int] = {}
        self.results: dict[int, _State] = {}
        self.steps: dict[int, Step] = {}
        self.meta_args: dict[str, str] = {}
        for ins in self.meta:
            for k, v in name_values(ins, df.escape):
                if k in build_args:
                    self.meta_args[k] = build_args[k]
                elif v != _NO_VALUE:
                    self.meta_args[k] = expand(v, self.meta_args, df.escape, on_error=ins.error)
                else:
                    self.meta_args.setdefault(k, _NO_VALUE)
        for i, st in enumerate(self.stages):
            name = self._stage_name(st[0])
            if name:
                if name in self.names:
                    raise st[0].error(f"duplicate stage name {name!r}")
                self.names[name] = i
        if target is not None:
            if target.lower() not in self.names:
                raise DockerfileError(f"target stage {target!r} could not be found", df.file, 0, 0)
            self.target = self.names[target.lower()]
        else:
            self.target = len(self.stages) - 1

    def _stage_name(self, ins: Instruction) -> str | None:
        words = ins.rest.split()
        if len(words) == 3 and words[1].lower() == "as":
            name = words[2].lower()
            if not re.fullmatch(r"[a-z][a-z0-9-_\.]*", name):
                raise ins.error(f"invalid name for build stage: {name!r}, "
                                "name can't start with a number or contain symbols")
            return name
        if len(words) != 1:
            raise ins.error("FROM requires either one or three arguments")
        return None

    def _label(self, i: int) -> str | int:
        for k, v in self.names.items():
            if v == i:
                return k
        return i

    # --- which stages -------------------------------------------------------------

    def _deps(self, i: int) -> list[tuple[int, Instruction, str]]:
        """The stages stage ``i`` reads (FROM a stage, COPY --from a stage): (stage, instruction, name).

        The classic builder only knows the stages before the current one (a later name
        is taken for an image); BuildKit builds a graph, so a later stage is fine unless
        it closes a cycle (checked in :meth:`_order`).
        """
        out: list[tuple[int, Instruction, str]] = []
        st = self.stages[i]
        refs = [(st[0], self._from_name(st[0]))]
        refs += [(ins, self._expand(ins.flag("from") or "", self.meta_args, ins))
                 for ins in st[1:] if ins.cmd == "COPY" and ins.flag("from") is not None]
        for ins, ref in refs:
            j = self._stage_ref(ref)
            if j is None:
                continue
            if j == i or (self.classic and j > i):
                what = "FROM" if ins.cmd == "FROM" else "COPY --from"
                raise ins.error(f"{what} {ref}: stage {ref!r} is this stage or a later one (a cycle)")
            if j >= len(self.stages):
                raise ins.error(f"COPY --from={ref}: there is no stage {ref}")
            out.append((j, ins, ref))
        return out

    def _order(self) -> list[int]:
        """The stages to build, each after the stages it reads; DockerfileError on a cycle."""
        if self.classic:
            for i in range(self.target + 1):
                self._deps(i)
            return list(range(self.target + 1))
        order: list[int] = []
        state: dict[int, int] = {}   # 1: on the path, 2: done

        def visit(i: int, via: Instruction | None, path: list[str]) -> None:
            if state.get(i) == 2:
                return
            if state.get(i) == 1:
                assert via is not None
                raise via.error("circular dependency detected on stage: " + " -> ".join(path))
            state[i] = 1
            for j, ins, ref in self._deps(i):
                visit(j, ins, [*path, ref])
            state[i] = 2
            order.append(i)

        visit(self.target, None, [str(self._label(self.target))])
        return order

    def _stage_ref(self, ref: str) -> int | None:
        if ref.lower() in self.names:
            return self.names[ref.lower()]
        if ref.isdigit():
            return min(len(self.stages), int(ref))
        return None

    def _from_name(self, ins: Instruction) -> str:
        word = ins.rest.split()[0]
        scope = {k: v for k, v in self.meta_args.items() if v != _NO_VALUE}
        return self._expand(word, scope, ins)

    def _expand(self, word: str, scope: Mapping[str, str], ins: Instruction) -> str:
        return expand(word, scope, self.df.escape, on_error=ins.error)

    def go(self) -> tuple[Image, list[Step]]:
        order = self._order()
        for i in order:
            self.results[i] = self._stage(i, self.stages[i])
        for i, st in enumerate(self.stages):
            if i not in self.results:
                why = "the target stage does not need this stage (not built)" if i < self.target else \
                    "after the target stage (not built)"
                for ins in st:
                    n = self.numbers[id(ins)]
                    self.steps[n] = Step(n, ins.original, self._label(i), ins.line, None, None, why)
        final = self.results[self.target]
        # classic: the image of the last step (the base itself when the stage has no steps)
        image = final.committed if self.classic and final.committed is not None else self._image(final)
        return image, [self.steps[n] for n in sorted(self.steps)]

    def _image(self, s: _State, parent: str = "", container_config: dict[str, Any] | None = None) -> Image:
        """The image of a stage as it stands (a copy of its config: later steps change the state's).

        ``parent``: the image a classic step commits on, which Docker also writes into the
        config's ``Image`` (``runConfig.Image``, in ``docker image inspect``'s ``Config``);
        ``container_config``: the config the step ran with (its command in ``Cmd``), which
        a classic commit keeps as ``container_config`` and its cache compares.
        """
        doc: dict[str, Any] = {"config": _copy.deepcopy(s.config), "architecture": "amd64", "os": "linux",
                               "created": _iso(self.b.epoch)}
        if parent:
            doc["config"]["Image"] = parent
        if s.author:
            doc["author"] = s.author
        img = Image.from_layers(s.layers, ImageConfig.from_json(doc), s.history)
        if container_config is None:
            return img
        full = img.config_json()   # ImageConfig has no field for it: the bytes carry it
        full["container_config"] = {**container_config, "Image": parent}
        return Image.from_parts(s.layers, json.dumps(full, separators=(",", ":")).encode())

    # --- one stage --------------------------------------------------------------------

    def _stage(self, i: int, st: list[Instruction]) -> _State:
        frm = st[0]
        n = self.numbers[id(frm)]
        name = self._from_name(frm)
        label = self._label(i)
        if name.lower() in self.names:
            prev = self.results[self.names[name.lower()]]
            state = _State(list(prev.layers), list(prev.history), _copy.deepcopy(prev.config), prev.parent,
                           dict(prev.origins), {}, [], prev.cause, prev.author, base=prev.base,
                           committed=prev.committed)
        elif name == "scratch":
            cfg0: dict[str, Any] = {"Env": [f"PATH={DEFAULT_PATH}"]}
            if not self.classic:
                cfg0["WorkingDir"] = "/"  # dockerfile2llb emptyImage
            # scratch is no image: classic steps on it have no parent (moby getLocalCachedImage
            # looks among the images without one)
            root = "" if self.classic else "scratch"
            state = _State([], [], cfg0, root, {}, {}, [], base=root)
        else:
            try:
                base = self.b.resolve(name)
            except (LookupError, ValueError) as e:
                raise frm.error(f"FROM {name}: {e}") from None
            cfg = base.config_json().get("config") or {}
            cfg = {k: v for k, v in cfg.items()
                   if v not in (None, [], {}, "", False) and k not in ("Image", "Hostname")}
            if not cfg.get("Env"):
                cfg["Env"] = [f"PATH={DEFAULT_PATH}"]
            # classic: the base image is the first parent; BuildKit: its key names the image
            root = base.id if self.classic else "image:" + base.id
            state = _State(list(base.layers), list(base.history), cfg, root, {}, {}, [],
                           base=root, committed=base if self.classic else None)
            state.origins["base image"] = frm.line
        self.steps[n] = Step(n, frm.original, label, frm.line, None, None, None)
        for ins in st[1:]:
            self._dispatch(ins, state, label)
        return state

    # --- instructions ------------------------------------------------------------------

    def _shell(self, s: _State) -> list[str]:
        return list(s.config.get("Shell") or ["/bin/sh", "-c"])

    def _dispatch(self, ins: Instruction, s: _State, label: str | int) -> None:
        cmd = ins.cmd
        esc = self.df.escape
        n = self.numbers[id(ins)]
        if cmd == "ARG":
            parts = []
            for k, v in name_values(ins, esc):
                if k in self.build_args:
                    val = self.build_args[k]
                elif v != _NO_VALUE:
                    val = self._expand(v, s.scope(), ins)
                elif self.meta_args.get(k, _NO_VALUE) != _NO_VALUE:
                    val = self.meta_args[k]
                else:
                    val = _NO_VALUE
                if k not in s.args:
                    s.arg_order.append(k)
                s.args[k] = val
                parts.append(k if v == _NO_VALUE else f"{k}={v}")
            self._meta(ins, s, label, "ARG " + " ".join(parts), n)
            return
        if cmd == "ENV":
            pairs = []
            env = s.config.setdefault("Env", [])
            before = s.scope()   # every pair is expanded against the env before this instruction
            for k, v in name_values(ins, esc):
                val = self._expand(v, before, ins)
                k = self._expand(k, before, ins)
                pairs.append(f"{k}={val}")
                for j, e in enumerate(env):
                    if e.partition("=")[0] == k:
                        env[j] = f"{k}={val}"
                        break
                else:
                    env.append(f"{k}={val}")
                s.origins[f"ENV {k}"] = ins.line
            self._meta(ins, s, label, "ENV " + " ".join(pairs), n)
            return
        if cmd == "LABEL":
            pairs = []
            labels = s.config.setdefault("Labels", {})
            for k, v in name_values(ins, esc):
                k2, v2 = self._expand(k, s.scope(), ins), self._expand(v, s.scope(), ins)
                labels[k2] = v2
                pairs.append(f"{k2}={v2}")
                s.origins[f"LABEL {k2}"] = ins.line
            self._meta(ins, s, label, "LABEL " + " ".join(pairs), n)
            return
        if cmd == "MAINTAINER":
            s.author = ins.rest
            self._meta(ins, s, label, "MAINTAINER " + ins.rest, n)
            return
        if cmd == "USER":
            user = self._expand(ins.rest, s.scope(), ins)
            s.config["User"] = user
            s.origins["USER"] = ins.line
            self._meta(ins, s, label, "USER " + user, n)
            return
        if cmd == "EXPOSE":
            ports = expand_words(ins.rest, s.scope(), esc, on_error=ins.error)
            exposed = s.config.setdefault("ExposedPorts", {})
            for p in ports:
                if not re.fullmatch(r"\d+(-\d+)?(/(tcp|udp|sctp))?", p):
                    raise ins.error(f"invalid port {p!r} in EXPOSE")
                exposed[p if "/" in p else p + "/tcp"] = {}
            s.origins["EXPOSE"] = ins.line
            if self.classic:
                text = "EXPOSE " + " ".join(sorted(ports))
            else:
                text = "EXPOSE map[" + " ".join(f"{k}:{{}}" for k in sorted(exposed)) + "]"
            self._meta(ins, s, label, text, n)
            return
        if cmd == "VOLUME":
            vols = list(ins.json_args) if ins.json_args is not None else expand_words(ins.rest, s.scope(), esc,
                                                                                     on_error=ins.error)
            if ins.json_args is not None:
                vols = [self._expand(v, s.scope(), ins) for v in vols]
            for v in vols:
                if not v.strip():
                    raise ins.error("VOLUME specified can not be an empty string")
                s.config.setdefault("Volumes", {})[v] = {}
            s.origins["VOLUME"] = ins.line
            self._meta(ins, s, label, "VOLUME [" + " ".join(vols) + "]", n)
            return
        if cmd == "STOPSIGNAL":
            sig = self._expand(ins.rest, s.scope(), ins)
            if not re.fullmatch(r"(SIG)?[A-Z0-9+\-]+|\d+", sig):
                raise ins.error(f"invalid signal: {sig}")
            s.config["StopSignal"] = sig
            s.origins["STOPSIGNAL"] = ins.line
            self._meta(ins, s, label, "STOPSIGNAL " + sig, n)
            return
        if cmd == "SHELL":
            if ins.json_args is None or not ins.json_args:
                raise ins.error("SHELL requires the arguments to be in JSON form")
            s.config["Shell"] = list(ins.json_args)
            s.origins["SHELL"] = ins.line
            self._meta(ins, s, label, "SHELL [" + " ".join(ins.json_args) + "]", n)
            return
        if cmd in ("CMD", "ENTRYPOINT"):
            args, is_json = command_args(ins)
            if not is_json:
                args = self._shell(s) + args if ins.rest else []
            key = "Cmd" if cmd == "CMD" else "Entrypoint"
            s.config[key] = args
            if cmd == "ENTRYPOINT" and "Cmd" in s.config and not s.origins.get("CMD"):
                s.config.pop("Cmd", None)
            if not self.classic and cmd == "CMD":
                s.config["ArgsEscaped"] = True  # dockerfile2llb dispatchCmd (not dispatchEntrypoint)
            s.origins[cmd] = ins.line
            self._meta(ins, s, label, f"{cmd} {json_list(args)}", n)
            return
        if cmd == "HEALTHCHECK":
            self._healthcheck(ins, s, label, n)
            return
        if cmd == "ONBUILD":
            s.config.setdefault("OnBuild", []).append(ins.rest)
            self._meta(ins, s, label, "ONBUILD " + ins.rest, n)
            return
        if cmd == "WORKDIR":
            self._workdir(ins, s, label, n)
            return
        if cmd in ("COPY", "ADD"):
            self._copy(ins, s, label, n)
            return
        if cmd == "RUN":
            self._run(ins, s, label, n)
            return
        if cmd == "FROM":  # pragma: no cover - split_stages puts FROM first
            raise ins.error("FROM inside a stage")
        raise ins.error(f"unknown instruction: {cmd}")

    def _healthcheck(self, ins: Instruction, s: _State, label: str | int, n: int) -> None:
        words = ins.rest.split(None, 1)
        typ = words[0].upper()
        hc: dict[str, Any]
        if typ == "NONE":
            if len(words) > 1 or ins.flags:
                raise ins.error("HEALTHCHECK NONE takes no arguments")
            hc = {"Test": ["NONE"]}
        elif typ == "CMD":
            rest = words[1] if len(words) > 1 else ""
            sub = attrs.evolve(ins, rest=rest, json_args=None)
            try:
                v = json.loads(rest)
                if isinstance(v, list) and all(isinstance(x, str) for x in v):
                    sub = attrs.evolve(sub, json_args=tuple(v))
            except ValueError:
                pass
            args, is_json = command_args(sub)
            if not rest:
                raise ins.error("Missing command after HEALTHCHECK CMD")
            hc = {"Test": (["CMD"] + args) if is_json else ["CMD-SHELL", rest]}
            for flag, fld in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod")):
                v2 = ins.flag(flag)
                if v2:
                    hc[fld] = _parse_duration(v2, ins)
            r = ins.flag("retries")
            if r:
                if not r.isdigit() or int(r) < 1:
                    raise ins.error(f"--retries must be at least 1 (not {r})")
                hc["Retries"] = int(r)
        else:
            raise ins.error(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
        s.config["Healthcheck"] = hc
        s.origins["HEALTHCHECK"] = ins.line
        text = "HEALTHCHECK &{" + json_list(hc["Test"]) + " " + " ".join(
            go_quote(_go_duration(hc.get(f, 0))) for f in ("Interval", "Timeout", "StartPeriod")) + \
            f" '\\x{hc.get('Retries', 0):02x}'}}"
        self._meta(ins, s, label, text, n)

    # --- keys and verdicts -------------------------------------------------------------

    def _config_components(self, s: _State) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        c = s.config
        for e in c.get("Env") or []:
            k, _, v = e.partition("=")
            out.append((f"ENV {k}", v))
        for k, v in sorted((c.get("Labels") or {}).items()):
            out.append((f"LABEL {k}", v))
        for fld, name in (("User", "USER"), ("WorkingDir", "WORKDIR"), ("Shell", "SHELL"),
                          ("Entrypoint", "ENTRYPOINT"), ("ExposedPorts", "EXPOSE"), ("Volumes", "VOLUME"),
                          ("Healthcheck", "HEALTHCHECK"), ("StopSignal", "STOPSIGNAL"), ("OnBuild", "ONBUILD")):
            if c.get(fld):
                out.append((name, json.dumps(c[fld], sort_keys=True)))
        return out

    def _probe_config(self, s: _State, cmd: list[str], *, no_entrypoint: bool = False) -> dict[str, Any]:
        c = {k: v for k, v in s.config.items() if v not in (None, [], {}, "", False)}
        c["Cmd"] = cmd
        if no_entrypoint:
            c.pop("Entrypoint", None)
        c.pop("Image", None)
        return c

    def _verdict(self, ins: Instruction, s: _State, label: str | int, n: int, kind: str, material: Any,
                 components: list[tuple[str, str]], parent: str) -> tuple[str, Record | None, bool, str | None,
                                                                          int | None]:
        """(key, cached record or None, cached, reason, caused_by) for one step with a verdict."""
        key = key_of({"rules": self.rules, "material": material})
        rec = self.cache.get(key)
        if rec is not None and not self.no_cache:
            return key, rec, True, None, None
        if self.no_cache:
            return key, None, False, "--no-cache", None
        lines = {k: v for k, v in s.origins.items() if not k.startswith("ARG ")}
        cand = self.cache.closest(parent, kind, components)
        if cand is None:
            if s.cause is not None:
                return key, None, False, f"parent step {s.cause} missed", s.cause
            if parent == s.base:
                if self.cache.records and not self.cache.has_parent(parent):
                    return key, None, False, "base image changed (nothing in the cache was built on it)", None
                return key, None, False, "not in the cache (first build of this step)", None
            return key, None, False, "not in the cache (a new step)", None
        if cand.kind != kind:
            was = dict(cand.components).get("instruction") or dict(cand.components).get("command") or cand.kind
            return key, None, False, f"instruction changed (was: {cand.kind} {was})", None
        return key, None, False, describe_difference(components, cand.components, lines), None

    def _advance(self, s: _State, key: str, kind: str, components: list[tuple[str, str]], rec: Record | None,
                 layer: Layer | None, hist: History, cause: int | None, n: int,
                 probe: dict[str, Any] | None = None) -> None:
        """Put step ``n``'s result on the stage: a hit's (``rec``) from the cache, a miss's
        (``layer``, ``hist``) recorded in it.

        Under classic rules every step commits an image, the parent of the next step
        (``builder/dockerfile/internals.go`` ``commit``/``exportImage``), keeping ``probe``
        (the config the cache compared) as its ``container_config``; a hit takes the image
        the cache holds, with the id and created time of the build that made it, as Docker
        does. Under BuildKit's the next parent is the step's key and nothing is committed.
        """
        parent = s.parent
        if rec is not None and self.classic:
            img = self.b.by_id[rec.image]
            s.layers, s.history, s.committed, s.parent = list(img.layers), list(img.history), img, img.id
            s.image = None
            return
        if layer is not None:
            s.layers.append(layer)
        s.history.append(hist)
        s.image = None
        committed = ""
        if self.classic:
            ran = dict(probe or {})
            if kind not in ("RUN", "COPY", "ADD"):
                # committed from the container it was probed with, whose Labels the daemon's
                # create filled in (daemon merge); RUN commits its probe copy, COPY/ADD no container
                ran.setdefault("Labels", {})
            s.committed = self._image(s, parent, ran)
            self.b._commit(s.committed, parent)
            committed = s.committed.id
        s.parent = committed or key
        if rec is None:
            self.cache.put(Record(key, parent, kind, tuple(components), layer, hist,
                                  json.dumps(s.config, sort_keys=True), committed))
            s.cause = cause if cause is not None else n

    def _meta(self, ins: Instruction, s: _State, label: str | int, comment: str, n: int) -> None:
        """A metadata-only step: a verdict under classic rules (``#(nop)`` probe), none under BuildKit."""
        n_ins = ins.original
        if not self.classic:
            hist = History(created_by=comment, comment="buildkit.dockerfile.v0", created=_iso(self.b.epoch),
                           empty_layer=True)
            s.history.append(hist)
            s.image = None
            self.steps[n] = Step(n, n_ins, label, ins.line, comment, None, None)
            return
        created_by = " ".join(self._shell(s)) + " #(nop)  " + comment
        probe = self._probe_config(s, self._shell(s) + ["#(nop) ", comment])
        material = {"parent": s.parent, "config": probe}
        components = self._config_components(s) + [("instruction", comment)]
        if ins.cmd == "ARG":
            components += [(f"ARG {k}", v) for k, v in s.build_args()]
        key, rec, cached, reason, cause = self._verdict(ins, s, label, n, ins.cmd, material, components, s.parent)
        hist = History(created_by=created_by, created=_iso(self.b.epoch), empty_layer=True)
        self._advance(s, key, ins.cmd, components, rec, None, hist, cause, n, probe)
        self.steps[n] = Step(n, n_ins, label, ins.line, created_by, cached, reason, cause)

    def _layer_step(self, ins: Instruction, s: _State, label: str | int, n: int, kind: str, material: Any,
                    components: list[tuple[str, str]], created_by: str,
                    apply: Callable[[Container], None]) -> None:
        """A step that may add a layer: hit -> the cached layer; miss -> run ``apply`` on a container."""
        parent = s.parent
        key, rec, cached, reason, cause = self._verdict(ins, s, label, n, kind, material, components, parent)
        if rec is not None:
            layer, hist = rec.layer, rec.history
        else:
            c = s.current().container()
            apply(c)
            layer = self._normalise(c)
            hist = History(created_by=created_by, created=_iso(self.b.epoch),
                           comment=None if self.classic else "buildkit.dockerfile.v0", empty_layer=layer is None)
        self._advance(s, key, kind, components, rec, layer, hist, cause, n,
                      material["config"] if self.classic else None)
        self.steps[n] = Step(n, self._shown(ins, s), label, ins.line, created_by, cached, reason, cause)

    def _shown(self, ins: Instruction, s: _State) -> str:
        """The instruction as the progress output names it.

        BuildKit substitutes the variables it knows into the text of WORKDIR, COPY, ADD and
        RUN, keeping quotes and unset ``$NAME`` (dockerfile2llb's processCmdEnv, a lexer
        with RawQuotes and SkipUnsetEnv); the classic builder prints the line as written.
        """
        if self.classic or ins.cmd not in ("RUN", "WORKDIR", "COPY", "ADD") or ins.json_args is not None:
            return ins.original
        scope = s.scope()

        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(4)
            op, word = m.group(2), m.group(3) or ""
            v = scope.get(name)
            if op == ":-":
                return v if v else word
            if op == ":+":
                return word if v else ""
            return v if v is not None else m.group(0)
        pat = r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
        return f"{ins.cmd} " + re.sub(pat, sub, ins.text)

    def _normalise(self, c: Container) -> Layer | None:
        """The container's changes as a layer with every mtime at the epoch.

        A step that changed nothing: None under classic rules (the daemon's commit marks it
        ``empty_layer``), an empty layer under BuildKit's (its exporter keeps one per vertex).
        """
        entries = c.changeset()
        entries.pop("", None)
        if not entries:
            return None if self.classic else Layer({})
        t = self.b.epoch * 10**9
        out: dict[str, Entry] = {}
        for k, e in entries.items():
            out[k] = e if isinstance(e, Whiteout) else attrs.evolve(e, mtime_ns=t)
        return Layer(out)

    # --- WORKDIR ------------------------------------------------------------------------

    def _workdir(self, ins: Instruction, s: _State, label: str | int, n: int) -> None:
        wd = self._expand(ins.rest, s.scope(), ins)
        cur = s.config.get("WorkingDir") or "/"
        wd = posixpath.normpath(posixpath.join(cur, wd))
        s.config["WorkingDir"] = wd
        s.origins["WORKDIR"] = ins.line
        if self.classic:
            comment = "WORKDIR " + wd
            created_by = " ".join(self._shell(s)) + " #(nop) " + comment
            probe = self._probe_config(s, self._shell(s) + ["#(nop) " + comment])
            material = {"parent": s.parent, "config": probe}
            components = [("instruction", comment)] + self._config_components(s)
        else:
            created_by = "WORKDIR " + wd
            material = {"op": "mkdir", "path": wd, "parent": s.parent}
            components = [("instruction", created_by)]

        def apply(c: Container) -> None:
            fs = c.fs
            if not fs.isdir(wd):
                fs.makedirs(wd, 0o755, exist_ok=True)

        self._layer_step(ins, s, label, n, "WORKDIR", material, components, created_by, apply)

    # --- COPY / ADD ----------------------------------------------------------------------

    def _ids(self, spec: str, s: _State, ins: Instruction) -> tuple[int, int]:
        user, _, group = spec.partition(":")
        fs = s.current().fs

        def lookup(name: str, db: str, what: str) -> tuple[int, int]:
            if name.isdigit():
                return int(name), -1
            try:
                for line in fs.read_text(db).splitlines():
                    f = line.split(":")
                    if len(f) > 3 and f[0] == name:
                        return int(f[2]), int(f[3]) if what == "user" else -1
            except OSError:
                pass
            raise ins.error(f"unable to find {what} {name}: no matching entries in {db.rsplit('/', 1)[-1]} file")
        uid, pgid = lookup(user, "/etc/passwd", "user")
        if group:
            gid = lookup(group, "/etc/group", "group")[0]
        else:
            gid = uid if user.isdigit() else (pgid if pgid >= 0 else uid)
        return uid, gid

    def _home(self, user: str, s: _State) -> str:
        name = user.partition(":")[0]
        try:
            for line in s.current().fs.read_text("/etc/passwd").splitlines():
                f = line.split(":")
                if len(f) > 5 and (f[0] == name or f[2] == name):
                    return f[5] or "/"
        except OSError:
            pass
        return "/"

    def _sources(self, ins: Instruction, tree: _Tree, raw: str, s: _State) -> list[tuple[str, Source]]:
        """The top-level selections of one source argument: (path in the tree, entry)."""
        src = raw
        clean = posixpath.normpath("/" + src)
        if posixpath.normpath(src).startswith("../") or posixpath.normpath(src) == "..":
            if isinstance(tree, _CtxTree):
                raise ins.error(f"{ins.cmd} failed: forbidden path outside the build context: {src}")
        rel = clean.lstrip("/")
        if has_glob(rel):
            found = [p for p in tree.all_paths() if glob_match(rel, p)]
            if not found:
                raise ins.error(f"{ins.cmd} failed: no source files were specified (no match for {src!r} "
                                f"in {tree.label})")
            out = []
            for p in found:
                e = tree.get(p)
                assert e is not None
                out.append((p, self._follow(ins, tree, e)))
            return out
        if rel == "":
            return [("", Source("", "d", 0o755))]
        e = tree.get(rel)
        if e is None:
            what = "file not found in build context or excluded by .dockerignore" if isinstance(tree, _CtxTree) \
                else f"file not found in {tree.label}"
            raise ins.error(f"{ins.cmd} failed: {what}: stat {rel}: file does not exist")
        return [(rel, self._follow(ins, tree, e))]

    def _follow(self, ins: Instruction, tree: _Tree, e: Source) -> Source:
        """A source given as a symlink is its target inside the tree (both builders copy the target)."""
        seen = 0
        while e.kind == "l":
            seen += 1
            target = e.linkname if e.linkname.startswith("/") else posixpath.join(posixpath.dirname(e.path),
                                                                                   e.linkname)
            rel = posixpath.normpath("/" + target).lstrip("/")
            nxt = tree.get(rel)
            if nxt is None or seen > 40:
                raise ins.error(f"{ins.cmd} failed: {e.path} is a symlink to {e.linkname}, which is not in "
                                f"{tree.label}")
            e = nxt
        return e

    def _copy(self, ins: Instruction, s: _State, label: str | int, n: int) -> None:
        esc = self.df.escape
        scope = s.scope()
        if ins.json_args is not None:
            words = [self._expand(w, scope, ins) for w in ins.json_args]
        else:
            words = expand_words(ins.rest, scope, esc, on_error=ins.error)
        if len(words) < 2:
            raise ins.error(f"{ins.cmd} requires at least two arguments")
        *srcs, dest_raw = words
        frm = ins.flag("from")
        chown = ins.flag("chown")
        chmod = ins.flag("chmod")
        if chmod is not None and self.classic:
            raise ins.error("the --chmod option requires BuildKit")
        chmod_bits = None
        if chmod:
            if not re.fullmatch(r"[0-7]{3,4}", chmod):
                raise ins.error(f"invalid chmod parameter {chmod!r}: only octal modes are supported")
            chmod_bits = int(chmod, 8)
        tree: _Tree
        from_label = None
        if frm is not None:
            ref = self._expand(frm, self.meta_args, ins)
            j = self._stage_ref(ref)
            if j is not None:
                if j >= len(self.stages) or j not in self.results:
                    raise ins.error(f"COPY --from={ref}: no such stage before this one")
                tree = _FsTree(self.results[j].current(), f"stage {ref}")
                from_label = f"stage {ref}"
            else:
                try:
                    tree = _FsTree(self.b.resolve(ref), f"image {ref}")
                except LookupError as err:
                    raise ins.error(f"COPY --from={ref}: {err}") from None
                from_label = f"image {ref}"
        else:
            tree = _CtxTree(self.ctx)
        for w in srcs:
            if re.match(r"^[a-z]+://", w) or w.startswith("git@"):
                raise ins.error(f"{ins.cmd} of a URL ({w}) is not supported: the model builds offline")
        selections: list[tuple[str, Source]] = []
        for w in srcs:
            sel = self._sources(ins, tree, w, s)
            if len(sel) > 1 or has_glob(w):
                pass
            selections += sel
        wd = s.config.get("WorkingDir") or "/"
        dest = dest_raw if dest_raw.startswith("/") else posixpath.join(wd, dest_raw)
        dest_is_dir = dest_raw.endswith("/") or dest_raw in (".", "..") or dest_raw.endswith("/.")
        if (len(selections) > 1 or any(has_glob(w) for w in srcs) and len(selections) > 1) and not dest_is_dir:
            raise ins.error(f"When using {ins.cmd} with more than one source file, the destination must be a "
                            "directory and end with a /")
        dest = posixpath.normpath(dest)
        uid, gid = self._ids(chown, s, ins) if chown else (0, 0)
        # every entry the step reads, for keys and explanations
        files: list[tuple[str, Source]] = []
        for path, e in selections:
            files.append((path, e))
            if e.kind == "d":
                files += [(x.path, x) for x in tree.below(e.path)]
        where = f" from {from_label}" if from_label else ""
        components: list[tuple[str, str]] = [("instruction", f"{ins.cmd} {' '.join(srcs)} {dest_raw}"
                                              + (f" --chown={chown}" if chown else "")
                                              + (f" --chmod={chmod}" if chmod else "") + where)]
        components += [(f"file {p or '.'}" + where, _file_component(e, tree.digest)) for p, e in files]
        if self.classic:
            infos = []
            for _, e in selections:
                if e.kind == "d":
                    on_disk = isinstance(tree, _FsTree)
                    sums = [tarsum_v1(x, x.path, names=on_disk) for x in tree.below(e.path)]
                    if e.path:
                        sums.append(tarsum_v1(e, e.path, names=on_disk))
                    infos.append("dir:" + hashlib.sha256(",".join(sorted(sums)).encode()).hexdigest())
                else:
                    one = self.ctx.tarsum(e.path) if isinstance(tree, _CtxTree) else tarsum_v1(e, e.path, names=True)
                    infos.append("file:" + one)
            if len(infos) == 1:
                src_hash = infos[0]
            else:
                src_hash = "multi:" + hashlib.sha256(",".join(infos).encode()).hexdigest()
            chown_comment = f"--chown={chown}" if chown else ""
            comment = f"{ins.cmd} {chown_comment}{src_hash} in {dest_raw} "
            created_by = " ".join(self._shell(s)) + " #(nop) " + comment
            probe = self._probe_config(s, self._shell(s) + ["#(nop) " + comment])
            material: Any = {"parent": s.parent, "config": probe}
            components += self._config_components(s)
        else:
            created_by = f"{ins.cmd} {' '.join(srcs)} {dest_raw} # buildkit"
            material = {"op": ins.cmd, "srcs": srcs, "dest": dest + ("/" if dest_is_dir else ""),
                        "chown": [uid, gid] if chown else None, "chmod": chmod, "from": from_label,
                        "content": content_key(files, tree.digest), "parent": s.parent}
        add = ins.cmd == "ADD"
        multi = len(selections) > 1

        def apply(c: Container) -> None:
            fs = c.fs
            for path, e in selections:
                if e.kind == "d":
                    target = dest
                    self._mkdirs(fs, target, uid, gid)
                    for x in tree.below(e.path):
                        rel = x.path[len(e.path) + 1:] if e.path else x.path
                        self._put(fs, posixpath.join(target, rel), x, uid, gid, chmod_bits, chown is not None)
                    continue
                if add and e.kind == "f" and _archive_kind(e) is not None:
                    self._mkdirs(fs, dest, uid, gid)
                    self._untar(fs, dest, e, ins)
                    continue
                if dest_is_dir or multi or fs.isdir(dest):
                    target = posixpath.join(dest, posixpath.basename(path))
                else:
                    target = dest
                self._mkdirs(fs, posixpath.dirname(target), uid, gid)
                self._put(fs, target, e, uid, gid, chmod_bits, chown is not None)

        self._layer_step(ins, s, label, n, ins.cmd, material, components, created_by, apply)

    def _mkdirs(self, fs: FileSystem, path: str, uid: int, gid: int) -> None:
        missing = []
        p = path
        while p not in ("/", "") and not fs.lexists(p):
            missing.append(p)
            p = posixpath.dirname(p)
        for d in reversed(missing):
            fs.mkdir(d, 0o755)
            fs.chmod(d, 0o755)
            if uid or gid:
                fs.lchown(d, uid, gid)

    def _put(self, fs: FileSystem, target: str, e: Source, uid: int, gid: int, chmod: int | None,
             chowned: bool) -> None:
        if fs.lexists(target) and not (e.kind == "d" and fs.isdir(target)):
            if fs.isdir(target) and not fs.islink(target):
                raise BuildError(f"cannot copy {e.path} over the directory {target}")
            fs.unlink(target)
        mode = chmod if chmod is not None else e.mode
        if e.kind == "d":
            if not fs.isdir(target):
                fs.mkdir(target, 0o755)
            fs.chmod(target, mode)
        elif e.kind == "l":
            fs.symlink(e.linkname, target)
        else:
            fs.write_bytes(target, e.data())
            fs.chmod(target, mode)
        fs.lchown(target, uid, gid)
        for k, v in e.xattrs:
            if e.kind != "l":
                fs.setxattr(target, k, v)

    def _untar(self, fs: FileSystem, dest: str, e: Source, ins: Instruction) -> None:
        data = _decompress(e.data())
        try:
            tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        except tarfile.TarError as err:
            raise ins.error(f"ADD {e.path}: not a readable tar archive ({err})") from None
        with tf:
            for m in tf.getmembers():
                name = posixpath.normpath("/" + m.name).lstrip("/")
                if not name:
                    continue
                target = posixpath.join(dest, name)
                self._mkdirs(fs, posixpath.dirname(target), 0, 0)
                if m.isdir():
                    if not fs.isdir(target):
                        fs.mkdir(target, 0o755)
                elif m.issym():
                    if fs.lexists(target):
                        fs.unlink(target)
                    fs.symlink(m.linkname, target)
                elif m.islnk():
                    src = posixpath.join(dest, posixpath.normpath("/" + m.linkname).lstrip("/"))
                    if fs.lexists(target):
                        fs.unlink(target)
                    fs.link(src, target)
                    continue
                elif m.isfile():
                    f = tf.extractfile(m)
                    fs.write_bytes(target, f.read() if f else b"")
                else:
                    continue
                if not m.issym():
                    fs.chmod(target, m.mode & 0o7777)
                fs.lchown(target, m.uid, m.gid)

    # --- RUN ------------------------------------------------------------------------------

    def _run(self, ins: Instruction, s: _State, label: str | int, n: int) -> None:
        for name, _ in ins.flags:
            raise ins.error(f"RUN --{name} is not supported by the model")
        args, is_json = command_args(ins)
        argv = args if is_json else self._shell(s) + args
        bargs = sorted(s.build_args()) if self.classic else s.build_args(unset=True)
        # Proxy build args given but not declared: classic counts them in FilterAllowed, so
        # the command gets a "|0" prefix even though prependEnvOnCmd then drops them;
        # BuildKit keeps them out of the cache key (llb.WithProxy), declared ones are ARGs.
        loose = [k for k in self.build_args if k in _PROXY_ARGS and k not in s.args]
        prefix = [f"|{len(bargs)}"] + [f"{k}={v}" for k, v in bargs] if bargs or (self.classic and loose) else []
        shown = " ".join(prefix + argv)
        components: list[tuple[str, str]] = [("command", " ".join(argv))]
        if self.classic and loose and not bargs:
            components.append(("undeclared proxy build args", "|0"))
        components += [(f"ARG {k}", v) for k, v in bargs]
        env_list = list(s.config.get("Env") or [])
        if self.classic:
            created_by = shown
            probe = self._probe_config(s, prefix + argv, no_entrypoint=True)
            material: Any = {"parent": s.parent, "config": probe}
            components += self._config_components(s)
        else:
            created_by = f"RUN {shown} # buildkit"
            components += [(f"ENV {e.partition('=')[0]}", e.partition("=")[2]) for e in env_list]
            components += [("WORKDIR", s.config.get("WorkingDir") or "/"), ("USER", s.config.get("User") or "")]
            material = {"op": "exec", "args": argv, "env": env_list + [f"{k}={v}" for k, v in bargs],
                        "cwd": s.config.get("WorkingDir") or "/", "user": s.config.get("User") or "",
                        "parent": s.parent}
        run_env = dict(e.partition("=")[::2] for e in env_list)
        run_env.update(bargs)
        for k, v in self.build_args.items():   # proxies reach RUN's environment, never its key
            if k in _PROXY_ARGS and k not in run_env:
                run_env[k] = v
        if "HOME" not in run_env:  # as runc does: the user's home from /etc/passwd, else /
            run_env["HOME"] = self._home(s.config.get("User") or "root", s)
        user = s.config.get("User") or ""
        cwd = s.config.get("WorkingDir") or "/"

        def apply(c: Container) -> None:
            uid, gid = self._ids(user, s, ins) if user else (0, 0)
            req = RunRequest(tuple(argv), tuple(run_env.items()), cwd, uid, gid, not is_json)
            if not c.fs.isdir(cwd):
                c.fs.makedirs(cwd, 0o755, exist_ok=True)
            if self.isolation == "chroot":
                res = run_chroot(c, req)
            else:
                try:
                    res = run_python(c.fs, req, self.b.commands)
                except UnsupportedCommand as e:
                    raise BuildError(f"RUN {args[-1] if not is_json else json.dumps(args)}: {e}",
                                     file=ins.file, line=ins.line) from None
            if res.status != 0:
                err = res.stderr.decode(errors="replace").strip()
                raise BuildError(f"RUN: the command '{' '.join(argv)}' returned a non-zero code: {res.status}"
                                 + (f": {err}" if err else ""), file=ins.file, line=ins.line,
                                 exit_code=res.status, stderr=res.stderr)

        self._layer_step(ins, s, label, n, "RUN", material, components, created_by, apply)


def _archive_kind(e: Source) -> str | None:
    head = e.data()[:512] if e.size else b""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _decompress(data: bytes) -> bytes:
    if data.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    if data.startswith(b"BZh"):
        return bz2.decompress(data)
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(data)
    return data


__all__ = ["RULES", "BuildError", "BuildResult", "Builder", "Step"]
