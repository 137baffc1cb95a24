"""The distribution spec's vocabulary, shared by the registry model and its HTTP server.

The grammar of repository names, tags and digests (spec.md "Pulling manifests"), what a
manifest references (:func:`parse_manifest`), and one error class per code of the spec's
error table. ``registry`` stores by these rules; ``serve`` maps the errors onto HTTP.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import FormatError, UnknownName
from .mediatypes import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MT_INDEX, MT_MANIFEST

__all__ = [
    "MAX_MANIFEST_SIZE",
    "BlobUnknown",
    "DigestInvalid",
    "ManifestBlobUnknown",
    "ManifestInvalid",
    "ManifestTooBig",
    "ManifestUnknown",
    "NameInvalid",
    "ParsedManifest",
    "RepositoryUnknown",
    "TagInvalid",
    "UploadInvalid",
    "UploadUnknown",
    "check_digest",
    "check_name",
    "check_reference",
    "check_tag",
    "is_digest",
    "parse_manifest",
    "referrer_descriptor",
]

#: Largest manifest accepted (distribution's ``maxManifestBodySize``, registry/handlers/manifests.go).
MAX_MANIFEST_SIZE = 4 << 20

# The distribution-spec grammar of repository names (spec.md "Pulling manifests"), and the
# length limit distribution enforces (reference.NameTotalLengthMax).
_NAME_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_NAME_MAX = 255
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


# --- errors (each maps to one code of the distribution spec) -------------------------------


class NameInvalid(ValueError):
    """A repository name outside the distribution grammar (NAME_INVALID)."""


class DigestInvalid(FormatError):
    """A malformed digest, or content that does not match its digest (DIGEST_INVALID)."""


class TagInvalid(ValueError):
    """A tag outside ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`` (TAG_INVALID)."""


class ManifestInvalid(FormatError):
    """A manifest that is not valid JSON of a known shape (MANIFEST_INVALID)."""


class ManifestTooBig(ManifestInvalid):
    """A manifest over :data:`MAX_MANIFEST_SIZE` bytes."""


class ManifestBlobUnknown(ManifestInvalid):
    """A manifest naming a blob or child manifest the repository lacks (MANIFEST_BLOB_UNKNOWN)."""

    def __init__(self, message: str, digest: str) -> None:
        super().__init__(message)
        self.digest = digest


class UploadInvalid(ValueError):
    """A chunk at the wrong offset, or an upload busy with another request (416)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class RepositoryUnknown(UnknownName):
    """No such repository (NAME_UNKNOWN)."""


class ManifestUnknown(UnknownName):
    """No such manifest or tag in the repository (MANIFEST_UNKNOWN)."""


class BlobUnknown(UnknownName):
    """No such blob in the repository (BLOB_UNKNOWN)."""


class UploadUnknown(UnknownName):
    """No such upload session (BLOB_UPLOAD_UNKNOWN)."""


# --- names ---------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` if it is a repository name of the distribution grammar (at most 255 characters).

    Checked before a name is used in a path: ``..``, ``a//b``, ``/x``, uppercase all fail.

    Raises:
        NameInvalid: saying what is wrong.
    """
    if not isinstance(name, str) or not name:
        raise NameInvalid(f"invalid repository name {name!r}: empty")
    if len(name) > _NAME_MAX:
        raise NameInvalid(f"invalid repository name {name[:40]!r}...: {len(name)} characters, at most {_NAME_MAX}")
    if not _NAME_RE.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name!r}: components must be lowercase letters and digits "
                          f"joined by '.', '_', '__' or '-', separated by single '/'")
    return name


def check_digest(digest: str) -> str:
    """``digest`` if it is ``sha256:<64 lowercase hex>`` (the only algorithm stored).

    Raises:
        DigestInvalid: naming it.
    """
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise DigestInvalid(f"unsupported or malformed digest {digest!r} (expected sha256:<64 lowercase hex>)")
    return digest


def is_digest(reference: str) -> bool:
    """True if a manifest reference is a digest (it has an algorithm: a colon), not a tag."""
    return ":" in reference


def check_tag(tag: str) -> str:
    """``tag`` if it is a tag of the spec's grammar (safe as a file name: no ``/``, no leading ``.``).

    Raises:
        TagInvalid: naming it.
    """
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise TagInvalid(f"invalid tag {tag[:200]!r}: [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}} expected")
    return tag




# --- manifests -----------------------------------------------------------------------------


@attrs.frozen
class ParsedManifest:
    """What a manifest references: its blobs (config, layers), child manifests (of an
    index), their sizes, its subject, artifact type and annotations."""

    media_type: str
    blobs: tuple[str, ...]
    children: tuple[str, ...]
    sizes: Mapping[str, int]
    subject: str | None
    artifact_type: str | None
    annotations: Mapping[str, str] | None


def _descriptor_digest(d: Any, where: str, sizes: dict[str, int] | None = None) -> str:
    if not isinstance(d, dict):
        raise ManifestInvalid(f"{where}: a descriptor must be a JSON object")
    digest = d.get("digest")
    size = d.get("size")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}: descriptor without a digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}: descriptor {digest} has a bad size {size!r}")
    if not _DIGEST_RE.fullmatch(digest):
        raise ManifestInvalid(f"{where}: unsupported or malformed digest {digest!r}")
    if sizes is not None and sizes.setdefault(digest, size) != size:
        raise ManifestInvalid(f"{where}: {digest} is described with two sizes, {sizes[digest]} and {size}")
    return digest


def parse_manifest(data: bytes, content_type: str | None) -> ParsedManifest:
    """Check a manifest's shape and list what it references.

    The media type is the document's ``mediaType`` if it has one (which must then equal a
    given ``content_type``), else ``content_type``; OCI and Docker schema2 manifests and
    indexes are understood, any other type is stored as given with no references.

    Raises:
        ManifestTooBig: over :data:`MAX_MANIFEST_SIZE`.
        ManifestInvalid: not a JSON object, a media type that disagrees, a bad descriptor.
    """
    if len(data) > MAX_MANIFEST_SIZE:
        raise ManifestTooBig(f"manifest of {len(data)} bytes: the limit is {MAX_MANIFEST_SIZE}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestInvalid(f"manifest is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    mt = doc.get("mediaType")
    ct = (content_type or "").split(";")[0].strip() or None
    if mt is not None and not isinstance(mt, str):
        raise ManifestInvalid(f"manifest mediaType {mt!r} is not a string")
    if mt is not None and ct is not None and mt != ct:
        raise ManifestInvalid(f"manifest mediaType {mt!r} differs from the Content-Type {ct!r}")
    media_type = mt or ct
    if media_type is None:
        media_type = MT_INDEX if isinstance(doc.get("manifests"), list) else MT_MANIFEST
    blobs: list[str] = []
    children: list[str] = []
    sizes: dict[str, int] = {}
    if (media_type in MANIFEST_MEDIA_TYPES or media_type in INDEX_MEDIA_TYPES) and doc.get("schemaVersion") != 2:
        raise ManifestInvalid(f"manifest schemaVersion must be 2, got {doc.get('schemaVersion')!r}")
    if media_type in MANIFEST_MEDIA_TYPES:
        blobs.append(_descriptor_digest(doc.get("config"), "config", sizes))
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestInvalid("manifest has no layers list")
        for i, d in enumerate(layers):
            if isinstance(d, dict) and d.get("urls"):
                _descriptor_digest(d, f"layers[{i}]")  # a foreign layer: its blob lives elsewhere
                continue
            blobs.append(_descriptor_digest(d, f"layers[{i}]", sizes))
    elif media_type in INDEX_MEDIA_TYPES:
        ms = doc.get("manifests")
        if not isinstance(ms, list):
            raise ManifestInvalid("index has no manifests list")
        children = [_descriptor_digest(d, f"manifests[{i}]", sizes) for i, d in enumerate(ms)]
    subject = None
    if doc.get("subject") is not None:
        subject = _descriptor_digest(doc["subject"], "subject")
    art = doc.get("artifactType")
    if art is None and media_type in MANIFEST_MEDIA_TYPES and isinstance(doc.get("config"), dict):
        art = doc["config"].get("mediaType")  # image-spec: artifactType falls back to config.mediaType
    ann = doc.get("annotations")
    return ParsedManifest(media_type, tuple(blobs), tuple(children), types.MappingProxyType(sizes), subject,
                   art if isinstance(art, str) else None,
                   types.MappingProxyType(dict(ann)) if isinstance(ann, dict) else None)


def referrer_descriptor(digest: str, size: int, p: ParsedManifest) -> dict[str, Any]:
    """The descriptor of a manifest in a referrers list (media and artifact type, annotations)."""
    d: dict[str, Any] = {"mediaType": p.media_type, "digest": digest, "size": size}
    if p.artifact_type is not None:
        d["artifactType"] = p.artifact_type
    if p.annotations:
        d["annotations"] = dict(p.annotations)
    return d




def check_reference(reference: str) -> str:
    """``reference`` if it is a valid digest or tag (a manifest reference).

    Raises:
        DigestInvalid, TagInvalid: naming it.
    """
    if is_digest(reference):
        return check_digest(reference)
    return check_tag(reference)
