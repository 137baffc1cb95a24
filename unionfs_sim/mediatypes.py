"""The media-type vocabulary of images: OCI image-spec ``media-types.md`` and Docker's v2 schema 2.

One place for the strings every format (OCI layouts, docker archives, the registry and
its HTTP API) reads and writes, and the annotations OCI layouts carry.
"""

from __future__ import annotations

from collections.abc import Mapping

MT_INDEX = "application/vnd.oci.image.index.v1+json"
"""OCI image index: a list of manifests (e.g. one per platform); ``index.json`` is one."""
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
"""OCI image manifest: a config descriptor plus layer descriptors."""
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
"""OCI image config (its sha256 is the image id)."""
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
"""OCI layer, uncompressed tar (blob digest = diff_id)."""
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
"""OCI layer, gzip-compressed tar."""
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
"""OCI layer, zstd-compressed tar."""
MT_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
"""Deprecated OCI "non-distributable" layer (also ``+gzip`` / ``+zstd``)."""
MT_EMPTY = "application/vnd.oci.empty.v1+json"
"""OCI empty descriptor (``{}``), the config of artifacts that are not images."""
MT_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
"""The ``oci-layout`` file of an image layout."""

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
"""Docker image manifest, schema 2 (same shape as the OCI manifest)."""
MT_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
"""Docker manifest list (same shape as the OCI image index)."""
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
"""Docker image config (same JSON as the OCI config, plus Docker-only fields)."""
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
"""Docker layer, gzip-compressed tar."""
MT_DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
"""Docker layer, uncompressed tar (containerd's name for it)."""
MT_DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
"""Docker layer, zstd-compressed tar (containerd's name for it)."""
MT_DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
"""Docker "foreign" layer (fetched from ``urls``, e.g. Windows base layers)."""
MT_DOCKER_FOREIGN_LAYER_TAR = "application/vnd.docker.image.rootfs.foreign.diff.tar"
"""Docker "foreign" layer, uncompressed."""

INDEX_MEDIA_TYPES = frozenset({MT_INDEX, MT_DOCKER_MANIFEST_LIST})
"""Media types of a list of manifests (an OCI index or a Docker manifest list)."""
MANIFEST_MEDIA_TYPES = frozenset({MT_MANIFEST, MT_DOCKER_MANIFEST})
"""Media types of an image manifest."""
CONFIG_MEDIA_TYPES = frozenset({MT_CONFIG, MT_DOCKER_CONFIG})
"""Media types of an image config."""
LAYER_MEDIA_TYPES = frozenset({
    MT_LAYER, MT_LAYER_GZIP, MT_LAYER_ZSTD,
    MT_LAYER_NONDIST, MT_LAYER_NONDIST + "+gzip", MT_LAYER_NONDIST + "+zstd",
    MT_DOCKER_LAYER, MT_DOCKER_LAYER_TAR, MT_DOCKER_LAYER_ZSTD,
    MT_DOCKER_FOREIGN_LAYER, MT_DOCKER_FOREIGN_LAYER_TAR,
})
"""Media types of a filesystem layer (tar changeset, maybe compressed) an image may use."""
LAYER_MEDIA_TYPE_BY_COMPRESSION: Mapping[str | None, str] = {
    None: MT_LAYER, "gzip": MT_LAYER_GZIP, "zstd": MT_LAYER_ZSTD}
"""The OCI layer media type for each ``compression`` of ``Layer.to_tar``."""

LAYOUT_VERSION = "1.0.0"
"""The ``imageLayoutVersion`` written to ``oci-layout`` (the only one the spec defines)."""
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
"""The annotation of an ``index.json`` descriptor that holds its tag."""
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
"""containerd's (and Docker's) annotation with the full image name, e.g. ``docker.io/library/nginx:latest``."""
