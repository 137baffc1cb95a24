"""Image: an ordered stack of layers plus a config, addressed by content digests.

``image.id`` is the digest of the config JSON (as ``docker images --no-trunc`` shows it),
``image.digest`` the digest of the OCI manifest (what ``name@sha256:...`` pulls),
``diff_ids`` the digests of the uncompressed layer tars and ``chain_ids`` identify
each applied prefix of the stack, as the OCI image-spec defines them.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .errors import DigestMismatch, FormatError
from .layer import Layer
from .lower import Lower
from .mediatypes import (  # noqa: F401 - re-exported: image.MT_* was their home before mediatypes
    CONFIG_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    LAYER_MEDIA_TYPE_BY_COMPRESSION,
    LAYER_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MT_CONFIG,
    MT_DOCKER_CONFIG,
    MT_DOCKER_FOREIGN_LAYER,
    MT_DOCKER_FOREIGN_LAYER_TAR,
    MT_DOCKER_LAYER,
    MT_DOCKER_LAYER_TAR,
    MT_DOCKER_LAYER_ZSTD,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_MANIFEST_LIST,
    MT_EMPTY,
    MT_INDEX,
    MT_LAYER,
    MT_LAYER_GZIP,
    MT_LAYER_NONDIST,
    MT_LAYER_ZSTD,
    MT_LAYOUT_HEADER,
    MT_MANIFEST,
)
from .options import OverlayOptions

if TYPE_CHECKING:
    from .container import Container
    from .fs import FileSystem



def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """OCI ChainIDs: ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(..n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else sha256(f"{out[-1]} {d}".encode()))
    return out


def _strs(v: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return (v,)
    return tuple(v)


def _tuple(v: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(v) if v else ()


def _extra(v: Mapping[str, Any] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    if isinstance(v, Mapping):
        return tuple(sorted((str(k), json.dumps(x, sort_keys=True)) for k, x in v.items()))
    return tuple(sorted((str(k), str(x)) for k, x in v))


_KNOWN_CONFIG = frozenset({"User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                           "Labels", "StopSignal"})
_PLATFORM_EXTRA = ("os.version", "os.features")


def _env(v: Mapping[str, str] | Iterable[str] | None) -> tuple[str, ...]:
    """``KEY=value`` entries from a mapping or from strings; an entry without ``=`` is refused."""
    if not v:
        return ()
    if isinstance(v, Mapping):
        return tuple(f"{k}={x}" for k, x in v.items())
    if isinstance(v, str):
        v = (v,)
    out = tuple(v)
    for e in out:
        if not isinstance(e, str) or "=" not in e:
            raise ValueError(f"env entry {e!r} is not of the form KEY=value")
    return out


def _labels(v: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((v or {}).items()))


@attrs.frozen
class ImageConfig:
    """The runtime config of an image (OCI config.md ``config`` plus platform fields)."""

    cmd: tuple[str, ...] | None = attrs.field(default=None, converter=_strs)
    entrypoint: tuple[str, ...] | None = attrs.field(default=None, converter=_strs)
    env: tuple[str, ...] = attrs.field(default=(), converter=_env)
    """``KEY=value`` strings; a mapping ``{"PATH": "/bin"}`` is taken too."""
    working_dir: str = ""
    user: str = ""
    labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_labels)
    exposed_ports: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    volumes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    stop_signal: str | None = None
    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    created: str | None = None
    author: str | None = None
    extra: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_extra)
    """Fields of ``config`` the model does not interpret (Healthcheck, Shell, OnBuild,
    ArgsEscaped, ...), as ``(name, JSON text)``: kept through a commit, as Docker keeps them."""
    platform_extra: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_extra)
    """Platform fields of the top level (``os.version``, ``os.features``), as ``(name, JSON text)``."""

    def to_json(self) -> dict[str, Any]:
        """The ``config`` object of the OCI config JSON (empty fields omitted, as Go does)."""
        c: dict[str, Any] = {k: json.loads(v) for k, v in self.extra}
        if self.user:
            c["User"] = self.user
        if self.exposed_ports:
            c["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            c["Env"] = list(self.env)
        if self.entrypoint is not None:
            c["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            c["Cmd"] = list(self.cmd)
        if self.volumes:
            c["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            c["WorkingDir"] = self.working_dir
        if self.labels:
            c["Labels"] = dict(self.labels)
        if self.stop_signal:
            c["StopSignal"] = self.stop_signal
        return c

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ImageConfig:
        """Read the OCI config JSON (top level) back; see ``extra`` for unknown fields."""
        c = doc.get("config") or {}
        return cls(
            extra={k: v for k, v in c.items() if k not in _KNOWN_CONFIG and v is not None},
            platform_extra={k: doc[k] for k in _PLATFORM_EXTRA if doc.get(k) is not None},
            cmd=c.get("Cmd"), entrypoint=c.get("Entrypoint"), env=c.get("Env") or (),
            working_dir=c.get("WorkingDir") or "", user=c.get("User") or "",
            labels=c.get("Labels") or {}, exposed_ports=sorted(c.get("ExposedPorts") or {}),
            volumes=sorted(c.get("Volumes") or {}), stop_signal=c.get("StopSignal"),
            architecture=doc.get("architecture", "amd64"), os=doc.get("os", "linux"),
            variant=doc.get("variant"), created=doc.get("created"), author=doc.get("author"),
        )


@attrs.frozen
class History:
    """One step that built the image; ``empty_layer`` steps (ENV, CMD ...) added no layer."""

    created_by: str | None = None
    comment: str | None = None
    created: str | None = None
    author: str | None = None
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        """The OCI history entry (empty fields omitted)."""
        out: dict[str, Any] = {}
        for k, name in (("created", "created"), ("author", "author"), ("created_by", "created_by"),
                        ("comment", "comment")):
            v = getattr(self, k)
            if v is not None:
                out[name] = v
        if self.empty_layer:
            out["empty_layer"] = True
        return out


def _diff_id(layer: Layer) -> str:
    """The diff_id of ``layer``: of the tar it was read from if any, else of its canonical tar."""
    src: str | None = getattr(layer, "source_diff_id", None)
    return src if src is not None else layer.digest


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    """``data`` parsed as a JSON object; FormatError naming ``where`` otherwise."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{where}: not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _history_of(raw: Any, n_layers: int) -> list[History]:
    """The ``history`` of a config JSON, padded with default entries up to one per layer."""
    if raw is None:
        raw = []
    if not isinstance(raw, list) or not all(isinstance(h, dict) for h in raw):
        raise FormatError("image config: history must be a list of objects")

    def text(h: dict[str, Any], k: str) -> str | None:
        v = h.get(k)
        return v if isinstance(v, str) else None

    out = [History(created_by=text(h, "created_by"), comment=text(h, "comment"), created=text(h, "created"),
                   author=text(h, "author"), empty_layer=bool(h.get("empty_layer"))) for h in raw]
    n_real = sum(1 for h in out if not h.empty_layer)
    if n_real > n_layers:
        raise FormatError(f"image config: history has {n_real} non-empty entries for {n_layers} layers")
    out.extend(History() for _ in range(n_layers - n_real))
    return out


_LOWERS: weakref.WeakValueDictionary[tuple[int, ...], Lower] = weakref.WeakValueDictionary()


def lower_of(layers: Sequence[Layer]) -> Lower:
    """The flattened index of ``layers``, shared by every image and container of that stack."""
    k = tuple(id(x) for x in layers)
    low = _LOWERS.get(k)
    if low is None:
        low = Lower(layers)
        _LOWERS[k] = low  # the Lower keeps the layers alive, so their ids stay unique
    return low


class Image:
    """An immutable image: layers (bottom first), config and history.

    ``image.fs`` is its read-only merged view; ``image.container()`` makes a container
    that shares the image's layers and flattened index, copying nothing.
    """

    __slots__ = ("layers", "config", "history", "_lower", "_fs", "_config_bytes", "_manifest_bytes",
                 "_descriptors", "_external", "__weakref__")

    def __init__(self, layers: Sequence[Layer], config: ImageConfig, history: Sequence[History]) -> None:
        """Prefer :meth:`from_layers`, which fills in a default history."""
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.config = config
        self.history: tuple[History, ...] = tuple(history)
        n_real = sum(1 for h in self.history if not h.empty_layer)
        if n_real != len(self.layers):
            raise ValueError(f"history has {n_real} non-empty entries for {len(self.layers)} layers")
        self._lower: Lower | None = None
        self._fs: FileSystem | None = None
        self._config_bytes: bytes | None = None
        self._manifest_bytes: bytes | None = None
        # Set by from_parts: the layer descriptors of the manifest, and whether the
        # config bytes came from outside (then they are the truth, not a cache).
        self._descriptors: tuple[dict[str, Any], ...] | None = None
        self._external = False

    @classmethod
    def from_layers(cls, layers: Iterable[Layer], config: ImageConfig | None = None,
                    history: Iterable[History] | None = None) -> Image:
        """An image of ``layers`` (index 0 is the bottom), with one history entry per layer by default."""
        ls = list(layers)
        for i, x in enumerate(ls):
            if not isinstance(x, Layer):
                raise TypeError(f"layers[{i}] is a {type(x).__name__}, not a Layer")
        hist = list(history) if history is not None else [History() for _ in ls]
        return cls(ls, config or ImageConfig(), hist)

    @classmethod
    def from_parts(cls, layers: Sequence[Layer], config_bytes: bytes, manifest_bytes: bytes | None = None,
                   layer_descriptors: Sequence[Mapping[str, Any]] | None = None) -> Image:
        """An image read from outside (a layout, an archive, a registry), keeping its exact bytes.

        ``config_bytes`` and ``manifest_bytes`` are kept verbatim, so ``image.id`` and
        ``image.digest`` are the digests the source reported; ``config``/``history`` are
        parsed from the config JSON (unknown fields stay in the bytes only). Without
        ``manifest_bytes`` the manifest is made here, with ``layer_descriptors`` (the
        blobs the layers came from: ``mediaType``, ``digest``, ``size``...) if given, or
        uncompressed OCI layers otherwise.

        A config whose history has fewer non-empty entries than layers gets default
        entries appended (Docker accepts such configs; only *more* is refused).

        Raises:
            FormatError: the config or manifest is not valid JSON of the right shape,
                ``rootfs`` is not ``layers``, or the counts of layers, diff_ids,
                descriptors and history entries disagree.
            DigestMismatch: a layer's diff_id differs from the config's ``rootfs.diff_ids``,
                or the manifest's config descriptor does not match ``config_bytes``.
        """
        ls = list(layers)
        for i, x in enumerate(ls):
            if not isinstance(x, Layer):
                raise TypeError(f"layers[{i}] is a {type(x).__name__}, not a Layer")
        config_bytes = bytes(config_bytes)
        doc = parse_json(config_bytes, "image config")
        rootfs = doc.get("rootfs")
        if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
            raise FormatError(f"image config: rootfs must be {{\"type\": \"layers\", ...}}, got {rootfs!r}")
        want = rootfs.get("diff_ids") or []
        if not isinstance(want, list) or not all(isinstance(d, str) for d in want):
            raise FormatError(f"image config: rootfs.diff_ids must be a list of digests, got {want!r}")
        if len(want) != len(ls):
            raise FormatError(f"image config lists {len(want)} diff_ids for {len(ls)} layers")
        for i, (x, d) in enumerate(zip(ls, want, strict=True)):
            got = _diff_id(x)
            if got != d:
                raise DigestMismatch(f"layer {i}: its diff_id is {got}, the image config says {d}")
        try:
            config = ImageConfig.from_json(doc)
        except (TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"image config: {e}") from e
        history = _history_of(doc.get("history"), len(ls))

        descriptors: tuple[dict[str, Any], ...] | None = None
        if manifest_bytes is not None:
            manifest_bytes = bytes(manifest_bytes)
            m = parse_json(manifest_bytes, "image manifest")
            cfg = m.get("config")
            if not isinstance(cfg, dict):
                raise FormatError("image manifest: no config descriptor")
            if cfg.get("digest") != sha256(config_bytes) or cfg.get("size") != len(config_bytes):
                raise DigestMismatch(
                    f"image manifest: config descriptor {cfg.get('digest')} ({cfg.get('size')} bytes) does not "
                    f"match the config given ({sha256(config_bytes)}, {len(config_bytes)} bytes)")
            mls = m.get("layers") or []
            if not isinstance(mls, list) or not all(isinstance(d, dict) for d in mls):
                raise FormatError("image manifest: layers must be a list of descriptors")
            if len(mls) != len(ls):
                raise FormatError(f"image manifest lists {len(mls)} layers, the image has {len(ls)}")
            descriptors = tuple(dict(d) for d in mls)
        elif layer_descriptors is not None:
            descriptors = tuple(dict(d) for d in layer_descriptors)
            if len(descriptors) != len(ls):
                raise FormatError(f"{len(descriptors)} layer descriptors for {len(ls)} layers")
        img = cls(ls, config, history)
        img._config_bytes = config_bytes
        img._manifest_bytes = manifest_bytes
        img._descriptors = descriptors
        img._external = True
        return img

    def __repr__(self) -> str:
        return f"<Image {self.id[:19]} {len(self.layers)} layers>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Image):
            return NotImplemented
        return self is other or self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    # --- identity --------------------------------------------------------------------

    @property
    def diff_ids(self) -> list[str]:
        """Digest of each layer's uncompressed tar, bottom first.

        For a layer read from a tar this is the digest of the bytes it was read from
        (``layer.source_diff_id``), which the canonical re-serialisation may not match.
        """
        return [_diff_id(x) for x in self.layers]

    @property
    def chain_ids(self) -> list[str]:
        """ChainID of each prefix of the stack, bottom first."""
        return chain_ids(self.diff_ids)

    def config_json(self) -> dict[str, Any]:
        """The OCI image config document (for a loaded image: its config bytes, parsed)."""
        if self._external and self._config_bytes is not None:
            parsed: dict[str, Any] = json.loads(self._config_bytes)
            return parsed
        doc: dict[str, Any] = {}
        if self.config.created:
            doc["created"] = self.config.created
        if self.config.author:
            doc["author"] = self.config.author
        doc["architecture"] = self.config.architecture
        if self.config.variant:
            doc["variant"] = self.config.variant
        doc["os"] = self.config.os
        doc.update((k, json.loads(v)) for k, v in self.config.platform_extra)
        doc["config"] = self.config.to_json()
        doc["rootfs"] = {"type": "layers", "diff_ids": self.diff_ids}
        doc["history"] = [h.to_json() for h in self.history]
        return doc

    @property
    def config_bytes(self) -> bytes:
        """The config JSON exactly as stored and hashed."""
        if self._config_bytes is None:
            self._config_bytes = json.dumps(self.config_json(), separators=(",", ":")).encode()
        return self._config_bytes

    @property
    def id(self) -> str:
        """The image ID: sha256 of the config JSON."""
        return sha256(self.config_bytes)

    def manifest_json(self) -> dict[str, Any]:
        """The OCI image manifest, layers stored uncompressed (blob digest = diff_id).

        A loaded image (:meth:`from_parts`) gives its manifest bytes parsed, or a
        manifest made of the layer descriptors it was given.
        """
        if self._external and self._manifest_bytes is not None:
            parsed: dict[str, Any] = json.loads(self._manifest_bytes)
            return parsed
        return {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": self.id, "size": len(self.config_bytes)},
            "layers": self.layer_descriptors,
        }

    @property
    def layer_descriptors(self) -> list[dict[str, Any]]:
        """The manifest's descriptor of each layer's blob (``mediaType``, ``digest``, ``size`` ...).

        For an image built in memory: the canonical uncompressed tar of each layer.
        """
        if self._external and self._manifest_bytes is not None:
            layers: list[dict[str, Any]] = json.loads(self._manifest_bytes).get("layers") or []
            return layers
        if self._descriptors is not None:
            return [dict(d) for d in self._descriptors]
        return [{"mediaType": MT_LAYER, "digest": x.digest, "size": x.tar_size} for x in self.layers]

    @property
    def manifest_bytes(self) -> bytes:
        """The manifest JSON exactly as stored and hashed."""
        if self._manifest_bytes is None:
            self._manifest_bytes = json.dumps(self.manifest_json(), separators=(",", ":")).encode()
        return self._manifest_bytes

    @property
    def digest(self) -> str:
        """The manifest digest: what ``repository@sha256:...`` names."""
        return sha256(self.manifest_bytes)

    # --- views -------------------------------------------------------------------------

    @property
    def lower(self) -> Lower:
        """The flattened index of the layer stack (built once, shared)."""
        if self._lower is None:
            self._lower = lower_of(self.layers)
        return self._lower

    @property
    def fs(self) -> FileSystem:
        """The read-only merged view; every write raises EROFS."""
        if self._fs is None:
            from .fs import FileSystem
            from .overlay import Overlay

            self._fs = FileSystem(Overlay(self.lower, readonly=True))
        return self._fs

    def container(self, options: OverlayOptions | None = None) -> Container:
        """A new container: this image plus an empty private upper layer (O(1))."""
        from .container import Container

        return Container(self, options)

    def with_layer(self, layer: Layer, history: History | None = None, config: ImageConfig | None = None) -> Image:
        """A new image with ``layer`` on top (this one is unchanged).

        The layers below keep the blobs this image names for them (a loaded image's
        compressed blobs, whose digests differ from our canonical tars); the new layer
        is described by its canonical uncompressed tar.
        """
        img = Image([*self.layers, layer], config or self.config, [*self.history, history or History()])
        if self._external or self._descriptors is not None:
            img._descriptors = (*self.layer_descriptors, {"mediaType": MT_LAYER, "digest": layer.digest,
                                                          "size": layer.tar_size})
        return img

    # --- looking inside (unionfs_sim.analysis) -------------------------------------------

    def inspect(self, repo_tags: Iterable[str] = (), repo_digests: Iterable[str] = (), **kwargs: Any) -> dict[str, Any]:
        """A dict shaped like ``docker image inspect`` (Id, RepoTags, RepoDigests, Created,
        Config, RootFS, Size ...); see :func:`unionfs_sim.analysis.inspect`.

        A thin call into the analysis package, imported here when called: the computation
        lives above the core, which never imports it at load time.
        """
        from .analysis.inspect import inspect

        return inspect(self, repo_tags, repo_digests, **kwargs)

    def _repr_html_(self) -> str:
        """The layers as a table (digest, size, created_by) and a stacked picture, for notebooks."""
        from ._html import esc, human, section, short, stack_svg, table

        steps = [h.created_by or "" for h in self.history if not h.empty_layer]
        pairs = list(enumerate(zip(self.layers, self.diff_ids, strict=True)))
        rows = [[i, short(d), human(x.size), steps[i][:80]] for i, (x, d) in pairs]
        pic = stack_svg([(f"{i} {short(d, 8)} {steps[i][:30]}", x.size) for i, (x, d) in pairs])
        return section(f"Image {short(self.id)} ({len(self.layers)} layers, {esc(self.config.os)}/"
                       f"{esc(self.config.architecture)})",
                       table(["#", "diff_id", "size", "created by"], list(reversed(rows)), right=(0, 2)), pic)
