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

from .layer import Layer
from .lower import Lower
from .options import OverlayOptions

if TYPE_CHECKING:
    from .container import Container
    from .fs import FileSystem

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"


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


def _labels(v: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((v or {}).items()))


@attrs.frozen
class ImageConfig:
    """The runtime config of an image (OCI config.md ``config`` plus platform fields)."""

    cmd: tuple[str, ...] | None = attrs.field(default=None, converter=_strs)
    entrypoint: tuple[str, ...] | None = attrs.field(default=None, converter=_strs)
    env: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
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

    def to_json(self) -> dict[str, Any]:
        """The ``config`` object of the OCI config JSON (empty fields omitted, as Go does)."""
        c: dict[str, Any] = {}
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
        """Read the OCI config JSON (top level) back; unknown fields are ignored."""
        c = doc.get("config") or {}
        return cls(
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
        for k, name in (("created", "created"), ("author", "author"), ("created_by", "created_by"), ("comment", "comment")):
            v = getattr(self, k)
            if v is not None:
                out[name] = v
        if self.empty_layer:
            out["empty_layer"] = True
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

    __slots__ = ("layers", "config", "history", "_lower", "_fs", "_config_bytes", "_manifest_bytes", "__weakref__")

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
        """Digest of each layer's uncompressed tar, bottom first."""
        return [x.digest for x in self.layers]

    @property
    def chain_ids(self) -> list[str]:
        """ChainID of each prefix of the stack, bottom first."""
        return chain_ids(self.diff_ids)

    def config_json(self) -> dict[str, Any]:
        """The OCI image config document."""
        doc: dict[str, Any] = {}
        if self.config.created:
            doc["created"] = self.config.created
        if self.config.author:
            doc["author"] = self.config.author
        doc["architecture"] = self.config.architecture
        if self.config.variant:
            doc["variant"] = self.config.variant
        doc["os"] = self.config.os
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
        """The OCI image manifest, layers stored uncompressed (blob digest = diff_id)."""
        return {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": self.id, "size": len(self.config_bytes)},
            "layers": [{"mediaType": MT_LAYER, "digest": x.digest, "size": x.tar_size} for x in self.layers],
        }

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
        """A new image with ``layer`` on top (this one is unchanged)."""
        return Image([*self.layers, layer], config or self.config, [*self.history, history or History()])
