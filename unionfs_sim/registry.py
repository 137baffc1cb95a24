"""An in-memory container registry: repositories, mutable tags, immutable digests, a blob store.

It behaves as a Docker/OCI distribution registry does, minus the network::

    reg = Registry()
    digest = reg.push(image, "example.com/team/app:1.0")    # = image.digest
    reg.pull("example.com/team/app@" + digest)              # by digest
    reg.pull("example.com/team/app")                         # no tag, no digest: latest
    reg.tag("example.com/team/app:1.0", "example.com/team/app:stable")
    reg.delete("example.com/team/app:1.0")                   # removes the tag only
    reg.delete("example.com/team/app@" + digest)             # the manifest and its tags
    reg.gc()                                                 # blobs no manifest references

Names are normalised as Docker does (``nginx`` is ``docker.io/library/nginx``).
A repository holds manifests (by digest) and tags pointing at them; moving a tag
leaves the old manifest pullable by digest (until deleted). Blobs (configs and layers)
live in one store shared by all repositories, keyed by digest, so a layer pushed in ten
repositories is stored once; a layer blob is kept as the :class:`Layer` object itself,
and every image pulled shares those objects (pulls copy nothing). Manifests are not
counted in :attr:`Registry.blobs`, as the distribution API keeps them apart from blobs.

Every method takes a lock: one registry can be used from several threads.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Mapping

import attrs

from .errors import UnknownName
from .image import Image, sha256
from .layer import Layer
from .reference import Reference

__all__ = ["Registry", "UnknownName"]

RefLike = str | Reference


@attrs.define
class _Blob:
    """A stored blob: its size, and the layer (for layer blobs) or bytes (configs)."""

    size: int
    content: Layer | bytes


@attrs.define
class _Manifest:
    """A stored manifest: what it references, and the image built from the stored blobs."""

    config: str
    layers: tuple[str, ...]
    image: Image


@attrs.define
class _Repository:
    """One repository: the manifests it holds and its tags (tag -> manifest digest)."""

    manifests: set[str] = attrs.field(factory=set)
    tags: dict[str, str] = attrs.field(factory=dict)


class Registry:
    """An in-memory image registry (see the module docs)."""

    def __init__(self) -> None:
        """An empty registry."""
        self._lock = threading.RLock()
        self._repos: dict[str, _Repository] = {}
        self._manifests: dict[str, _Manifest] = {}
        self._blobs: dict[str, _Blob] = {}

    def __repr__(self) -> str:
        with self._lock:
            return f"<Registry {len(self._repos)} repositories, {len(self._manifests)} manifests, {len(self._blobs)} blobs>"

    # --- names ------------------------------------------------------------------------------

    @staticmethod
    def _ref(ref: RefLike) -> Reference:
        """``ref`` parsed (Docker normalisation); a digest-only or bad one is a ValueError."""
        r = ref if isinstance(ref, Reference) else Reference.parse(ref)
        if r.path is None:
            raise ValueError(f"{str(r)!r}: a reference needs a repository name")
        return r

    def _repo(self, r: Reference) -> _Repository:
        repo = self._repos.get(r.name)
        if repo is None:
            raise UnknownName(f"unknown repository {r.name!r}")
        return repo

    def _lookup(self, r: Reference) -> str:
        """The manifest digest ``r`` names: its digest, else its tag, else ``latest``."""
        repo = self._repo(r)
        if r.digest is not None:
            if r.digest not in repo.manifests:
                raise UnknownName(f"unknown manifest {r.digest} in repository {r.name!r}")
            return r.digest
        tag = r.tag or "latest"
        digest = repo.tags.get(tag)
        if digest is None:
            raise UnknownName(f"unknown tag {tag!r} in repository {r.name!r} (tags: {', '.join(sorted(repo.tags)) or 'none'})")
        return digest

    # --- push / pull ------------------------------------------------------------------------

    def push(self, image: Image, ref: RefLike) -> str:
        """Store ``image`` in the repository of ``ref`` and return its manifest digest.

        ``ref`` may carry a tag (set to this image, moving it if needed), a digest (which
        must be ``image.digest``: no tag is set), or neither (tag ``latest``). Blobs
        already stored (by digest, in any repository) are not stored again.

        Raises:
            ValueError: a bad reference, or a digest that is not ``image.digest``.
        """
        if not isinstance(image, Image):
            raise TypeError(f"push takes an Image, not {type(image).__name__}")
        r = self._ref(ref)
        digest = image.digest
        if r.digest is not None and r.digest != digest:
            raise ValueError(f"{str(r)!r}: the digest does not match the image's manifest digest {digest}")
        tag = r.tag if r.tag is not None else (None if r.digest is not None else "latest")
        descriptors = image.layer_descriptors
        with self._lock:
            if digest not in self._manifests:
                config = image.config_bytes
                config_digest = sha256(config)
                layer_digests: list[str] = []
                layers: list[Layer] = []
                for layer, desc in zip(image.layers, descriptors):
                    d = str(desc["digest"])
                    blob = self._blobs.get(d)
                    if blob is None:
                        blob = self._blobs[d] = _Blob(int(desc["size"]), layer)
                    assert isinstance(blob.content, Layer)
                    layers.append(blob.content)
                    layer_digests.append(d)
                if config_digest not in self._blobs:
                    self._blobs[config_digest] = _Blob(len(config), config)
                if all(a is b for a, b in zip(layers, image.layers)):
                    stored = image  # its layers are the stored ones: keep the object itself
                else:
                    stored = Image.from_parts(layers, config, image.manifest_bytes)
                self._manifests[digest] = _Manifest(config_digest, tuple(layer_digests), stored)
            repo = self._repos.setdefault(r.name, _Repository())
            repo.manifests.add(digest)
            if tag is not None:
                repo.tags[tag] = digest
        return digest

    def pull(self, ref: RefLike) -> Image:
        """The image ``ref`` names (by digest, else tag, else ``latest``).

        The image shares the registry's stored layer objects; pulling twice gives the
        same object.

        Raises:
            UnknownName: an unknown repository, tag or digest (a KeyError naming it).
        """
        r = self._ref(ref)
        with self._lock:
            return self._manifests[self._lookup(r)].image

    def resolve(self, ref: RefLike) -> str:
        """The manifest digest ``ref`` names (by digest, else tag, else ``latest``).

        Raises:
            UnknownName: an unknown repository, tag or digest.
        """
        r = self._ref(ref)
        with self._lock:
            return self._lookup(r)

    # --- tags -------------------------------------------------------------------------------

    def tag(self, src: RefLike, dst: RefLike) -> str:
        """Point the tag ``dst`` at the manifest ``src`` names; return that digest.

        ``dst`` may be in another repository (the manifest is then added to it, as a
        cross-repository mount would); a ``dst`` without a tag means ``latest``. A tag
        that pointed elsewhere moves; the manifest it left stays pullable by digest.

        Raises:
            UnknownName: ``src`` names nothing.
            ValueError: ``dst`` carries a digest.
        """
        s, d = self._ref(src), self._ref(dst)
        if d.digest is not None:
            raise ValueError(f"{str(d)!r}: the destination of tag() is a tag, not a digest")
        with self._lock:
            digest = self._lookup(s)
            repo = self._repos.setdefault(d.name, _Repository())
            repo.manifests.add(digest)
            repo.tags[d.tag or "latest"] = digest
        return digest

    def tags(self, repository: RefLike) -> list[str]:
        """The tags of ``repository`` (a name such as ``example.com/team/app``), sorted.

        Raises:
            UnknownName: an unknown repository.
        """
        r = self._ref(repository)
        with self._lock:
            return sorted(self._repo(r).tags)

    def repositories(self) -> list[str]:
        """The names of all repositories, sorted (the registry's catalog)."""
        with self._lock:
            return sorted(self._repos)

    def manifests(self, repository: RefLike) -> list[str]:
        """The manifest digests ``repository`` holds (tagged or not), sorted.

        Raises:
            UnknownName: an unknown repository.
        """
        r = self._ref(repository)
        with self._lock:
            return sorted(self._repo(r).manifests)

    # --- deletion ---------------------------------------------------------------------------

    def delete(self, ref: RefLike) -> None:
        """Delete what ``ref`` names from its repository.

        A tag (or no tag and no digest: ``latest``) removes the tag only; the manifest
        stays, pullable by digest. A digest removes the manifest from the repository with
        every tag of that repository pointing at it. A repository left with nothing is
        removed. Blobs stay until :meth:`gc`.

        Raises:
            UnknownName: an unknown repository, tag or digest.
        """
        r = self._ref(ref)
        with self._lock:
            repo = self._repo(r)
            if r.digest is None:
                tag = r.tag or "latest"
                if tag not in repo.tags:
                    raise UnknownName(f"unknown tag {tag!r} in repository {r.name!r} (tags: {', '.join(sorted(repo.tags)) or 'none'})")
                del repo.tags[tag]
            else:
                digest = self._lookup(r)
                repo.manifests.discard(digest)
                for t in [t for t, dg in repo.tags.items() if dg == digest]:
                    del repo.tags[t]
                if not any(digest in other.manifests for other in self._repos.values()):
                    del self._manifests[digest]
            if not repo.manifests and not repo.tags:
                del self._repos[r.name]

    def gc(self) -> list[str]:
        """Remove every blob no stored manifest references; return their digests, sorted.

        Untagged manifests still count (they are pullable by digest): delete them by
        digest first to free their blobs.
        """
        with self._lock:
            live: set[str] = set()
            for m in self._manifests.values():
                live.add(m.config)
                live.update(m.layers)
            dead = sorted(d for d in self._blobs if d not in live)
            for d in dead:
                del self._blobs[d]
            return dead

    # --- storage ----------------------------------------------------------------------------

    @property
    def blobs(self) -> Mapping[str, int]:
        """A read-only snapshot ``{digest: size}`` of the blob store (configs and layers)."""
        with self._lock:
            return types.MappingProxyType({d: b.size for d, b in self._blobs.items()})

    def blob(self, digest: str) -> Layer | bytes:
        """The stored blob ``digest``: a :class:`Layer` for a layer blob, bytes for a config.

        Raises:
            UnknownName: no such blob.
        """
        with self._lock:
            b = self._blobs.get(digest)
            if b is None:
                raise UnknownName(f"unknown blob {digest}")
            return b.content

    def _repr_html_(self) -> str:
        """Repositories with their tags and manifests, and the blob store's size, for notebooks."""
        from ._html import human, section, short, table

        with self._lock:
            rows = []
            for name in sorted(self._repos):
                repo = self._repos[name]
                by_digest: dict[str, list[str]] = {}
                for t, d in repo.tags.items():
                    by_digest.setdefault(d, []).append(t)
                for d in sorted(repo.manifests):
                    rows.append([name, ", ".join(sorted(by_digest.get(d, []))), short(d), len(self._manifests[d].layers)])
            total = sum(b.size for b in self._blobs.values())
            return section(f"Registry: {len(self._repos)} repositories, {len(self._blobs)} blobs, {human(total)}",
                           table(["repository", "tags", "manifest", "layers"], rows, right=(3,), limit=200))
