"""``docker image inspect``: the image as Docker's API describes it.

Mirrors moby ``daemon/images/image_inspect.go`` (``LookupImage``) for the graphdriver
image store: ``Size`` is the sum of the layers' sizes as the layer store counts them
(:mod:`.sizes`; overlay2 counts symlink targets too), ``RootFS.Layers`` are the diff_ids
(not the blob digests of a manifest), ``RepoDigests`` only what the caller names (Docker
records them when an image is pushed to or pulled from a registry, never on build or
load), ``Comment`` the config's or else the last history entry's, ``Created`` reprinted
as Go does, ``Parent`` the image it was committed on when its store knows one (Docker's
classic builder links every step's image to the previous one; BuildKit, ``docker load``
and pulls leave it empty). ``Config`` is the config's ``config`` object decoded into Go's
``container.Config`` and encoded again, so it has every field Docker shows (``null``
where the image has none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..layer import Layer
from . import _gotime
from .sizes import Rules, layer_sizes, per_layer


class ImageStore(Protocol):
    """What ``docker history`` and ``inspect`` read of the daemon holding an image (a Builder is one)."""

    def parent(self, image_id: str) -> str:
        """The id of the image ``image_id`` was committed on, or ""."""
        ...

    def tags(self, image_id: str) -> Sequence[str]:
        """The tags naming ``image_id``."""
        ...


class Inspectable(Protocol):
    """What :func:`inspect` reads of an image (an ``Image`` or a ``ScannedImage``)."""

    @property
    def layers(self) -> Sequence[Layer]: ...
    @property
    def id(self) -> str: ...
    @property
    def diff_ids(self) -> list[str]: ...
    def config_json(self) -> dict[str, Any]: ...

# (field, kind, omitempty) of moby api/types/container.Config, in its declaration order.
_CONFIG_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("Hostname", "str", False), ("Domainname", "str", False), ("User", "str", False),
    ("AttachStdin", "bool", False), ("AttachStdout", "bool", False), ("AttachStderr", "bool", False),
    ("ExposedPorts", "set", True), ("Tty", "bool", False), ("OpenStdin", "bool", False),
    ("StdinOnce", "bool", False), ("Env", "list", False), ("Cmd", "strslice", False),
    ("Healthcheck", "any", True), ("ArgsEscaped", "bool", True), ("Image", "str", False),
    ("Volumes", "set", False), ("WorkingDir", "str", False), ("Entrypoint", "strslice", False),
    ("NetworkDisabled", "bool", True), ("MacAddress", "str", True), ("OnBuild", "list", False),
    ("Labels", "map", False), ("StopSignal", "str", True), ("StopTimeout", "any", True),
    ("Shell", "strslice", True),
)


def go_container_config(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``raw`` (a config's ``config`` object) as Go's ``container.Config`` re-encodes it.

    Go matches JSON keys case-insensitively and drops unknown ones; absent lists and
    maps become ``null``, absent strings ``""``, and ``omitempty`` fields vanish when empty.
    """
    if raw is None:
        return None
    by_lower = {k.lower(): v for k, v in raw.items()}
    out: dict[str, Any] = {}
    for name, kind, omitempty in _CONFIG_FIELDS:
        v = by_lower.get(name.lower())
        if kind == "str":
            v = v if isinstance(v, str) else ""
        elif kind == "bool":
            v = bool(v)
        elif kind == "strslice":
            v = [v] if isinstance(v, str) else (list(v) if isinstance(v, list) else None)
        elif kind == "list":
            v = list(v) if isinstance(v, list) else None
        elif kind in ("set", "map"):
            v = dict(v) if isinstance(v, dict) else None
        if omitempty and (v is None or v == "" or v is False or v == [] or v == {}):
            continue
        out[name] = v
    return out


def inspect(image: Inspectable, repo_tags: Iterable[str] = (), repo_digests: Iterable[str] = (), *,
            rule: Rules = "overlay2", graph_driver: Mapping[str, Any] | None = None,
            store: ImageStore | None = None) -> dict[str, Any]:
    """A dict shaped like ``docker image inspect``'s item for ``image``.

    Args:
        repo_tags: the names the image is tagged with (``["app:1"]``; default: the store's).
        repo_digests: ``name@sha256:...`` references it was pushed or pulled as.
        rule: how layer sizes are counted, one rule or one per layer (see :mod:`.sizes`).
        graph_driver: the ``GraphDriver`` object to show (default: the rule's driver, no data).
        store: the image store holding ``image`` (a :class:`~unionfs_sim.Builder`): its
            ``Parent`` and tags (without one: no parent, as after ``docker load``).
    """
    rules = per_layer(rule, len(image.layers))
    doc = image.config_json()
    hist = doc.get("history") or []
    comment = doc.get("comment") if isinstance(doc.get("comment"), str) else ""
    if not comment and hist and isinstance(hist[-1], dict):
        comment = hist[-1].get("comment") or ""
    size = sum(layer_sizes(image.layers, rules))
    rootfs: dict[str, Any] = {"Type": (doc.get("rootfs") or {}).get("type") or "layers"}
    if image.layers:
        rootfs["Layers"] = image.diff_ids
    out: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": list(repo_tags) or (list(store.tags(image.id)) if store is not None else []),
        "RepoDigests": list(repo_digests),
        "Parent": store.parent(image.id) if store is not None else "",
        "Comment": comment,
        "Created": _gotime.rfc3339nano(doc.get("created")),
        "Container": doc.get("container") or "",
        "ContainerConfig": go_container_config(doc.get("container_config") or {}),
        "DockerVersion": doc.get("docker_version") or "",
        "Author": doc.get("author") or "",
        "Config": go_container_config(doc.get("config")),
        "Architecture": doc.get("architecture") or "",
    }
    if doc.get("variant"):
        out["Variant"] = doc["variant"]
    out["Os"] = doc.get("os") or "linux"
    if doc.get("os.version"):
        out["OsVersion"] = doc["os.version"]
    out.update({
        "Size": size,
        "VirtualSize": size,
        "GraphDriver": dict(graph_driver) if graph_driver is not None else
        {"Data": None, "Name": "overlay2" if "overlay2" in rules or not rules else "vfs"},
        "RootFS": rootfs,
        "Metadata": {"LastTagTime": _gotime.GO_ZERO},
    })
    return out
