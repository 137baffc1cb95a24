"""OCI image layouts (image-spec ``image-layout.md``): save images into one, load them back.

A layout is a directory with ``oci-layout`` (``{"imageLayoutVersion": "1.0.0"}``),
``index.json`` (an image index whose descriptors carry the tags as
``org.opencontainers.image.ref.name`` annotations) and ``blobs/sha256/<hex>`` files, each
named by the digest of its content::

    ufs.oci.save(image, "layout", tag="1.0")            # adds to an existing layout
    image = ufs.oci.load("layout", tag="1.0")           # same image.id and image.digest
    image = ufs.oci.load("layout", platform="linux/arm64")   # from an image index

Both directions stream: a layer blob is written to a temporary file in ``blobs/sha256``
while it is hashed, then renamed to its digest; a layer blob is hashed while
:meth:`Layer.from_tar <unionfs_sim.layer.Layer.from_tar>` reads it, and its size and
digest are checked before the image is returned. Docker's media types (schema 2
manifests and manifest lists, ``rootfs.diff.tar.gzip`` layers) are read too.

Digests, verified streams and blob files are :mod:`.blobs`, shared with
:mod:`.docker_archive`, whose current format is an OCI layout in a tar.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import DigestMismatch, FormatError, UnknownName, UnsafePath
from ..image import Image, parse_json, sha256
from ..layer import BlobSource, Layer
from ..mediatypes import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    CONFIG_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    LAYER_MEDIA_TYPE_BY_COMPRESSION,
    LAYER_MEDIA_TYPES,
    LAYOUT_VERSION,
    MANIFEST_MEDIA_TYPES,
    MT_CONFIG,  # noqa: F401 - oci.MT_CONFIG, as before mediatypes
    MT_INDEX,
    MT_LAYER,
    MT_MANIFEST,
)
from ..progress import Progress
from .blobs import (
    DIGEST_RE,
    MAX_JSON_SIZE,
    atomic_file,
    check_digest,
    compression_of,
    descriptor,
    export_parts,
    have_blob,
    put_bytes,
    read_layer,
    write_blob,
)

__all__ = [
    "ANNOTATION_IMAGE_NAME",
    "ANNOTATION_REF_NAME",
    "LAYOUT_VERSION",
    "UnknownName",
    "load",
    "save",
]

_DOCKER_REFERENCE_TYPE = "vnd.docker.reference.type"
"""BuildKit's annotation on attestation manifests in an index: they are not platform images."""


# image-layout.md: ref ::= component ("/" component)*; component ::= alphanum (separator alphanum)*
_REF_NAME_RE = re.compile(r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"  # component
                          r"(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*")  # ("/" component)*
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "i386": "386"}


# --- save --------------------------------------------------------------------------------------


def save(image: Image, path: str | os.PathLike[str], tag: str | None = None, *,
         compression: str | None = None, progress: Progress | None = None) -> str:
    """Write ``image`` into the OCI image layout at ``path``; return the manifest digest written.

    A missing or empty directory becomes a new layout; an existing layout *gains* the
    image (blobs already there are not rewritten). ``tag`` becomes the
    ``org.opencontainers.image.ref.name`` annotation of the manifest's descriptor in
    ``index.json``; if another manifest had that tag, the tag moves (the old descriptor
    is dropped when the tag was all it had; its blobs stay until a garbage collection).

    ``compression``: ``None`` keeps the blobs the image records (uncompressed for an
    image built in memory), so the digest returned is ``image.digest``; ``"gzip"``,
    ``"zstd"`` or ``"uncompressed"`` re-encode every layer that way, which makes a new
    manifest (the config, hence ``image.id``, is kept). A layer loaded from an OCI layout
    is copied from the blob it was read from (:attr:`Layer.source_blob`) while that file
    still has its digest, so an image loaded and saved again keeps its digests, as
    ``skopeo copy`` does. Any other layer that cannot be written back byte for byte (read
    from a foreign tar whose file is gone, or compressed by another tool) is written
    canonically, and the manifest (and, if its diff_id changed, the config) is rewritten
    to match: compare the returned digest with ``image.digest`` to know.

    ``progress(done, total, what)`` is called before each layer (in bytes of layer
    content) and once at the end (:mod:`unionfs_sim.progress`).

    Raises:
        ValueError: a bad ``tag`` or ``compression``.
        FormatError: ``path`` is a non-empty directory that is not an OCI layout, or its
            ``oci-layout``/``index.json`` are malformed.
        UnsafePath: ``blobs`` or ``blobs/sha256`` is a symlink (writes could escape ``path``).
    """
    if compression not in (None, "gzip", "zstd", "uncompressed"):
        raise ValueError(f"compression must be None, 'gzip', 'zstd' or 'uncompressed', not {compression!r}")
    if tag is not None and (not isinstance(tag, str) or not _REF_NAME_RE.fullmatch(tag)):
        raise ValueError(f"invalid tag {tag!r} for an OCI layout "
                         "(ref.name: alphanumerics joined by one of -._:@+ or --, and /)")
    root = Path(path)
    index = _open_layout_for_writing(root)
    blobs = _blob_dir(root)

    descriptors: list[dict[str, Any]] = []
    diff_ids: list[str] = []
    recorded = image.layer_descriptors
    total, done = sum(x.size for x in image.layers), 0
    for i, (layer, rec) in enumerate(zip(image.layers, recorded, strict=True)):
        if progress is not None:
            progress(done, total, f"writing layer {i + 1}/{len(image.layers)}")
        done += layer.size
        rec_type = str(rec.get("mediaType", MT_LAYER))
        if compression is None:
            comp = compression_of(rec_type)
        else:
            comp = None if compression == "uncompressed" else compression
        if layer.source_blob is not None and rec.get("digest") == layer.source_blob.digest \
                and comp == compression_of(rec_type) \
                and _copy_source_blob(blobs, layer):
            descriptors.append(dict(rec))  # the very blob the image was loaded from
            diff_ids.append(layer.source_diff_id or layer.digest)
            continue
        digest, size = _write_layer_blob(blobs, layer, comp)
        diff_ids.append(layer.digest)
        if digest == rec.get("digest") and size == rec.get("size"):
            descriptors.append(dict(rec))
        else:
            descriptors.append({"mediaType": LAYER_MEDIA_TYPE_BY_COMPRESSION[comp], "digest": digest, "size": size})
    config, manifest = export_parts(image, descriptors, diff_ids)
    put_bytes(blobs, config)
    put_bytes(blobs, manifest)
    mdoc = json.loads(manifest)
    desc: dict[str, Any] = {"mediaType": mdoc.get("mediaType", MT_MANIFEST), "digest": sha256(manifest),
                            "size": len(manifest)}
    _add_to_index(index, desc, tag)
    _write_file_atomically(root / "index.json", json.dumps(index, separators=(",", ":")).encode())
    if progress is not None:
        progress(total, total, "saved")
    return desc["digest"]  # type: ignore[no-any-return]


def _open_layout_for_writing(root: Path) -> dict[str, Any]:
    """Make ``root`` a layout if it is new or empty; return its index (existing or new)."""
    if root.exists() and not root.is_dir():
        raise FormatError(f"{root}: not a directory")
    if root.is_dir() and (root / "oci-layout").exists():
        _read_layout_header(root)
        index = _read_index(root)
    elif root.is_dir() and any(root.iterdir()):
        raise FormatError(f"{root}: a non-empty directory without an oci-layout file; "
                          "refusing to write a layout into it")
    else:
        root.mkdir(parents=True, exist_ok=True)
        _write_file_atomically(root / "oci-layout", json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
    return index


def _blob_dir(root: Path) -> Path:
    """``root/blobs/sha256``, created if missing; refused if it (or ``blobs``) is a symlink."""
    for d in (root / "blobs", root / "blobs" / "sha256"):
        if d.is_symlink():
            raise UnsafePath(f"{d}: is a symlink; refusing to write blobs through it")
        if d.exists() and not d.is_dir():
            raise FormatError(f"{d}: not a directory")
        d.mkdir(exist_ok=True)
    return root / "blobs" / "sha256"


def _copy_source_blob(blobs: Path, layer: Layer) -> bool:
    """Copy the blob ``layer`` was loaded from into ``blobs``; False if it is gone or changed.

    Verified while copying: a source that no longer hashes to its digest is not used
    (the layer is then written canonically instead).
    """
    src = layer.source_blob
    if src is None:
        return False
    if have_blob(blobs, src.digest, src.size):
        return True

    try:
        with src.open() as f:
            got = write_blob(blobs, lambda out: shutil.copyfileobj(f, out, 1 << 20))
    except OSError:
        return False
    return got == (src.digest, src.size)


def _write_layer_blob(blobs: Path, layer: Layer, compression: str | None) -> tuple[str, int]:
    """Write ``layer``'s canonical tar (compressed as asked) as a blob; ``(digest, size)``."""
    if compression is None and have_blob(blobs, layer.digest, layer.tar_size):
        return layer.digest, layer.tar_size
    return write_blob(blobs, lambda f: layer.to_tar(f, compression=compression))


def _add_to_index(index: dict[str, Any], desc: dict[str, Any], tag: str | None) -> None:
    """Add the manifest descriptor ``desc`` to ``index``, moving ``tag`` to it."""
    manifests: list[dict[str, Any]] = index.setdefault("manifests", [])
    if tag is not None:
        kept = []
        for d in manifests:
            ann = d.get("annotations") or {}
            if ann.get(ANNOTATION_REF_NAME) == tag:
                if d.get("digest") == desc["digest"]:
                    return  # already there, already tagged
                rest = {k: v for k, v in ann.items() if k != ANNOTATION_REF_NAME}
                if not rest:
                    continue  # the descriptor was only there for this tag
                d = {**d, "annotations": rest}
            kept.append(d)
        manifests[:] = kept
        manifests.append({**desc, "annotations": {ANNOTATION_REF_NAME: tag}})
    elif not any(d.get("digest") == desc["digest"] for d in manifests):
        manifests.append(desc)


def _write_file_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)


# --- load --------------------------------------------------------------------------------------


def load(path: str | os.PathLike[str], tag: str | None = None, platform: str | None = None, *,
         progress: Progress | None = None) -> Image:
    """Read one image from the OCI image layout at ``path``.

    ``tag`` picks the manifest whose ``org.opencontainers.image.ref.name`` annotation is
    ``tag`` (or, failing that, whose containerd/Docker image name is the same reference, or
    whose digest is ``tag``); without it the layout must hold exactly one image. When that
    descriptor is an image index (or Docker manifest list; nested ones too), ``platform``
    (``"os/arch[/variant]"``, e.g. ``"linux/arm64/v8"``) picks the manifest; it may be
    omitted when the index has only one image. Only the manifest picked has to be in the
    layout (an index copied without the images of its other platforms loads). Every
    blob's size and digest are checked while it is read, and each layer's content against
    the config's ``diff_ids``. ``progress(done, total, what)`` is called before each layer
    (in bytes of layer blobs) and once at the end (:mod:`unionfs_sim.progress`).

    The image returned has ``id`` = sha256 of the config blob and ``digest`` = the digest
    of the manifest blob, exactly as the layout records them.

    Raises:
        FormatError: a missing file, bad JSON, an unknown layer media type, a manifest
            that is not an image, counts that disagree; the message names the file.
        DigestMismatch: a blob whose size or digest differs from its descriptor (naming
            the digest and the file), or a layer whose content differs from its diff_id.
        ValueError: no ``tag`` given but the layout has several images (the message lists
            the tags), or no ``platform`` given but the index has several platforms
            (the message lists them).
        UnknownName: no image has that tag, or no manifest that platform (a KeyError).
    """
    root = Path(path)
    _read_layout_header(root)
    index = _read_index(root)
    where = str(root / "index.json")
    manifests = [descriptor(d, where) for d in index.get("manifests") or []]
    desc = _select_by_tag(manifests, tag, where)
    return _load_descriptor(root, desc, platform, progress)


def _read_layout_header(root: Path) -> dict[str, Any]:
    """Read and check ``root/oci-layout``; a path that is no directory is named as such."""
    if not root.is_dir():
        if root.exists():
            raise NotADirectoryError(errno.ENOTDIR, "not an OCI image layout directory (a file: a docker save"
                                     " archive is read with docker_archive.load)", str(root))
        raise FileNotFoundError(errno.ENOENT, "no such OCI image layout directory", str(root))
    f = root / "oci-layout"
    doc = parse_json(_read_small_file(f), str(f))
    version = doc.get("imageLayoutVersion")
    if not isinstance(version, str) or not version.startswith("1."):
        raise FormatError(f"{f}: unsupported imageLayoutVersion {version!r} (expected 1.x)")
    return doc


def _read_index(root: Path) -> dict[str, Any]:
    """Read and check ``root/index.json`` (an image index)."""
    f = root / "index.json"
    doc = parse_json(_read_small_file(f), str(f))
    _check_index(doc, str(f))
    return doc


def _check_index(doc: dict[str, Any], where: str) -> None:
    """Check the shape of an image index (``schemaVersion`` 2, a ``manifests`` list)."""
    if doc.get("schemaVersion") != 2:
        raise FormatError(f"{where}: schemaVersion must be 2, got {doc.get('schemaVersion')!r}")
    ms = doc.get("manifests")
    if ms is None:
        doc["manifests"] = []
    elif not isinstance(ms, list):
        raise FormatError(f"{where}: manifests must be a list")


def _read_small_file(f: Path) -> bytes:
    """The bytes of a JSON file of the layout; FormatError naming it if missing or huge."""
    try:
        with open(f, "rb") as fh:
            data = fh.read(MAX_JSON_SIZE + 1)
    except FileNotFoundError as e:
        raise FormatError(f"{f}: missing (not an OCI image layout?)") from e
    except IsADirectoryError as e:
        raise FormatError(f"{f}: is a directory") from e
    if len(data) > MAX_JSON_SIZE:
        raise FormatError(f"{f}: larger than {MAX_JSON_SIZE} bytes")
    return data


def _tags(manifests: Iterable[Mapping[str, Any]]) -> list[str]:
    """The ``ref.name`` tags of these descriptors, sorted (for messages)."""
    return sorted({str((d.get("annotations") or {}).get(ANNOTATION_REF_NAME)) for d in manifests
                   if (d.get("annotations") or {}).get(ANNOTATION_REF_NAME)})


def _select_by_tag(manifests: list[dict[str, Any]], tag: str | None, where: str) -> dict[str, Any]:
    """The descriptor of ``index.json`` that ``tag`` names (or the only one)."""
    if tag is None:
        digests = {d["digest"] for d in manifests}
        if not digests:
            raise FormatError(f"{where}: the layout holds no image")
        if len(digests) > 1:
            tags = _tags(manifests)
            raise ValueError(f"{where}: the layout holds {len(digests)} images; pass tag= one of "
                             f"{', '.join(map(repr, tags)) or '(none tagged)'}")
        return manifests[0]
    matched = [d for d in manifests if (d.get("annotations") or {}).get(ANNOTATION_REF_NAME) == tag]
    if not matched:
        matched = [d for d in manifests if _same_reference(tag, d.get("annotations") or {})]
    if not matched and DIGEST_RE.fullmatch(tag):
        matched = [d for d in manifests if d["digest"] == tag]
    if not matched:
        tags = _tags(manifests)
        raise UnknownName(f"{where}: no image tagged {tag!r} (tags: {', '.join(map(repr, tags)) or 'none'})")
    if len({d["digest"] for d in matched}) > 1:
        raise FormatError(f"{where}: tag {tag!r} names {len(matched)} different manifests")
    return matched[0]


def _same_reference(tag: str, annotations: Mapping[str, Any]) -> bool:
    """True if ``tag`` read as an image reference equals a name in ``annotations``."""
    from ..reference import Reference

    try:
        want = Reference.parse(tag).with_default_tag()
    except ValueError:
        return False
    for k in (ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME):
        v = annotations.get(k)
        if not isinstance(v, str):
            continue
        try:
            if Reference.parse(v).with_default_tag() == want:
                return True
        except ValueError:
            continue
    return False


def _blob_path(root: Path, digest: str, where: str) -> Path:
    """The file of blob ``digest`` in the layout ``root`` (the digest checked first)."""
    return root / "blobs" / "sha256" / check_digest(digest, where)


def _read_json_blob(root: Path, desc: Mapping[str, Any], where: str) -> tuple[bytes, dict[str, Any]]:
    """Read the (small) blob ``desc`` names, verified; its bytes and the parsed JSON."""
    f = _blob_path(root, desc["digest"], where)
    size = desc["size"]
    if size > MAX_JSON_SIZE:
        raise FormatError(f"{where}: descriptor {desc['digest']} claims {size} bytes for a JSON document")
    try:
        with open(f, "rb") as fh:
            actual = os.fstat(fh.fileno()).st_size
            if actual != size:
                raise DigestMismatch(f"{f}: blob {desc['digest']} is {actual} bytes, its descriptor says {size}")
            data = fh.read(size + 1)
    except FileNotFoundError as e:
        raise FormatError(f"{f}: missing blob {desc['digest']} (referenced from {where})") from e
    except IsADirectoryError as e:
        raise FormatError(f"{f}: blob {desc['digest']} is a directory") from e
    if len(data) != size:
        raise DigestMismatch(f"{f}: blob {desc['digest']} is {len(data)} bytes, its descriptor says {size}")
    if sha256(data) != desc["digest"]:
        raise DigestMismatch(f"{f}: content does not match digest {desc['digest']} (it hashes to {sha256(data)})")
    return data, parse_json(data, str(f))


def _kind(desc: Mapping[str, Any], doc: Mapping[str, Any]) -> str:
    """``"index"`` or ``"manifest"``: what a descriptor (or the document itself) says it is."""
    mt = desc.get("mediaType") or doc.get("mediaType")
    if mt in INDEX_MEDIA_TYPES:
        return "index"
    if mt in MANIFEST_MEDIA_TYPES:
        return "manifest"
    if mt is None:
        if isinstance(doc.get("manifests"), list):
            return "index"
        if isinstance(doc.get("config"), dict):
            return "manifest"
    raise FormatError(f"descriptor {desc.get('digest')}: media type {mt!r} is neither an image manifest nor an index")


def _load_descriptor(root: Path, desc: dict[str, Any], platform: str | None,
                     progress: Progress | None = None) -> Image:
    """The image a descriptor of ``index.json`` names: a manifest, or an index to pick from."""
    where = str(_blob_path(root, desc["digest"], "index.json"))
    data, doc = _read_json_blob(root, desc, str(root / "index.json"))
    try:
        kind = _kind(desc, doc)
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from e
    if kind == "index":
        desc, data, doc = _select_platform(root, desc, doc, platform, where)
        return _load_manifest(root, desc, data, doc, None, progress)
    return _load_manifest(root, desc, data, doc, platform, progress)


def parse_platform(platform: str) -> tuple[str, str, str | None]:
    """``"os/arch[/variant]"`` split into its parts (``x86_64`` read as ``amd64``, etc.)."""
    parts = platform.split("/") if isinstance(platform, str) else []
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must be 'os/arch' or 'os/arch/variant', not {platform!r}")
    os_, arch = parts[0].lower(), parts[1].lower()
    return os_, _ARCH_ALIASES.get(arch, arch), (parts[2].lower() if len(parts) == 3 else None)


def _platform_str(p: Mapping[str, Any]) -> str:
    """A platform object as ``os/arch[/variant]``."""
    s = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return s + (f"/{p['variant']}" if p.get("variant") else "")


def _platform_matches(p: Mapping[str, Any], want: tuple[str, str, str | None]) -> bool:
    """True if the platform object ``p`` (or a config) is ``want``; no variant asked = any."""
    os_, arch, variant = want
    if str(p.get("os", "")).lower() != os_:
        return False
    if _ARCH_ALIASES.get(str(p.get("architecture", "")).lower(), str(p.get("architecture", "")).lower()) != arch:
        return False
    if variant is None:
        return True
    have = p.get("variant")
    if have is None and arch == "arm64" and variant == "v8":
        return True  # arm64 without a variant is v8
    return str(have).lower() == variant


def _leaves(root: Path, index_doc: dict[str, Any], where: str,
            depth: int = 0) -> Iterator[tuple[dict[str, Any], dict[str, Any], bytes | None, dict[str, Any] | None]]:
    """The image manifests of an index, nested indexes included, in order:
    ``(platform, descriptor, manifest bytes, manifest JSON)``.

    A manifest whose descriptor states its platform is not read here (bytes and JSON are
    None): a layout may hold an index without the images of every platform (``skopeo copy
    --multi-arch index-only``, containerd's and Docker's exports of a single platform), and
    only the image asked for has to be there."""
    if depth > 8:
        raise FormatError(f"{where}: image indexes nested more than 8 deep")
    _check_index(index_doc, where)
    for raw in index_doc["manifests"]:
        d = descriptor(raw, where)
        ann = d.get("annotations") or {}
        if ann.get(_DOCKER_REFERENCE_TYPE) == "attestation-manifest":
            continue
        mt = d.get("mediaType")
        if mt is not None and mt not in INDEX_MEDIA_TYPES and mt not in MANIFEST_MEDIA_TYPES:
            continue  # artifacts and other content: not images, and allowed to be there
        plat = d.get("platform")
        if mt in MANIFEST_MEDIA_TYPES and isinstance(plat, dict):
            if not (plat.get("os") == "unknown" and plat.get("architecture") == "unknown"):
                yield plat, d, None, None
            continue
        data, doc = _read_json_blob(root, d, where)
        child = str(_blob_path(root, d["digest"], where))
        if _kind(d, doc) == "index":
            yield from _leaves(root, doc, child, depth + 1)
            continue
        if not isinstance(plat, dict):
            plat = _platform_of_manifest(root, doc, child)
        if plat.get("os") == "unknown" and plat.get("architecture") == "unknown":
            continue
        yield plat, d, data, doc


def _platform_of_manifest(root: Path, doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The platform a manifest's config declares (for index entries without ``platform``)."""
    cfg = descriptor(doc.get("config"), where)
    if cfg.get("mediaType") not in CONFIG_MEDIA_TYPES:
        return {}
    _, c = _read_json_blob(root, cfg, where)
    return {k: c[k] for k in ("os", "architecture", "variant") if isinstance(c.get(k), str)}


def _select_platform(root: Path, desc: dict[str, Any], doc: dict[str, Any], platform: str | None,
                     where: str) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """The manifest (descriptor, bytes, JSON) of an index for ``platform`` (or its only one)."""
    leaves = list(_leaves(root, doc, where))
    if not leaves:
        raise FormatError(f"{where}: the image index {desc['digest']} lists no image manifest")
    available = ", ".join(_platform_str(p) for p, *_ in leaves)
    if platform is None:
        if len(leaves) > 1:
            raise ValueError(f"{where}: the image index {desc['digest']} has {len(leaves)} images; pass platform= "
                             f"one of {available}")
        return _read_leaf(root, *leaves[0], where)
    want = parse_platform(platform)
    for leaf in leaves:
        if _platform_matches(leaf[0], want):
            return _read_leaf(root, *leaf, where)
    raise UnknownName(f"{where}: no image for platform {platform!r} in index {desc['digest']} (platforms: {available})")


def _read_leaf(root: Path, plat: Mapping[str, Any], d: dict[str, Any], data: bytes | None,
               doc: dict[str, Any] | None, where: str) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """A leaf of :func:`_leaves` with its manifest read (if it was not yet)."""
    if data is not None and doc is not None:
        return d, data, doc
    if not _blob_path(root, d["digest"], where).is_file():
        raise FormatError(f"{where}: the index lists {d['digest']} for {_platform_str(plat)}, but the layout does "
                          f"not hold that manifest (an index copied without the images of every platform?)")
    data, doc = _read_json_blob(root, d, where)
    if _kind(d, doc) != "manifest":
        raise FormatError(f"{_blob_path(root, d['digest'], where)}: the descriptor says an image manifest, "
                          f"the blob is an index")
    return d, data, doc


def _load_manifest(root: Path, desc: Mapping[str, Any], data: bytes, doc: dict[str, Any],
                   platform: str | None, progress: Progress | None = None) -> Image:
    """The image of a verified manifest blob: its config and layers read and checked."""
    where = str(_blob_path(root, desc["digest"], "index.json"))
    if doc.get("schemaVersion") != 2:
        raise FormatError(f"{where}: manifest schemaVersion must be 2, got {doc.get('schemaVersion')!r}")
    cfg = descriptor(doc.get("config"), f"{where} (config)")
    if cfg.get("mediaType") not in CONFIG_MEDIA_TYPES:
        raise FormatError(f"{where}: config media type {cfg.get('mediaType')!r} is not an image config "
                          f"(this manifest is not a container image)")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise FormatError(f"{where}: manifest has no layers list")
    layer_descs = [descriptor(d, f"{where} (layers[{i}])") for i, d in enumerate(layers_raw)]
    for i, d in enumerate(layer_descs):
        if d.get("mediaType") not in LAYER_MEDIA_TYPES:
            raise FormatError(f"{where}: layers[{i}] ({d['digest']}) has media type {d.get('mediaType')!r}, "
                              f"which is not a layer type this reader knows")
    config_bytes, config = _read_json_blob(root, cfg, where)
    cfg_file = str(_blob_path(root, cfg["digest"], where))
    if platform is not None:
        want = parse_platform(platform)
        if not _platform_matches(config, want):
            raise UnknownName(f"{where}: the image is for {_platform_str(config)}, not {platform!r}")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_descs):
        raise FormatError(f"{cfg_file}: rootfs.diff_ids lists {len(diff_ids) if isinstance(diff_ids, list) else 'no'} "
                          f"layers, the manifest {where} lists {len(layer_descs)}")
    layers: list[Layer] = []
    total, done = sum(int(d["size"]) for d in layer_descs), 0
    for i, (d, diff_id) in enumerate(zip(layer_descs, diff_ids, strict=True)):
        check_digest(diff_id, f"{cfg_file} (rootfs.diff_ids[{i}])")
        if progress is not None:
            progress(done, total, f"layer {i + 1}/{len(layer_descs)}")
        done += int(d["size"])
        f = _blob_path(root, d["digest"], where)
        if not f.is_file():
            urls = f" (a foreign layer, at {d['urls']})" if d.get("urls") else ""
            raise FormatError(f"{f}: missing blob {d['digest']}, layers[{i}] of {where}{urls}")
        with open(f, "rb") as fh:
            actual = os.fstat(fh.fileno()).st_size
            if actual != d["size"]:
                raise DigestMismatch(f"{f}: blob {d['digest']} is {actual} bytes, its descriptor says {d['size']}")
            layer = read_layer(fh, str(f), diff_id, d["digest"], d["size"], layers)[0]
        layer.record_source(BlobSource(str(f), d["digest"], d["size"]))
        layers.append(layer)
    if progress is not None:
        progress(total, total, "loaded")
    try:
        return Image.from_parts(layers, config_bytes, data)
    except DigestMismatch as e:
        raise DigestMismatch(f"{where}: {e}") from e
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from e
