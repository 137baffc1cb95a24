"""``docker save`` / ``docker load`` archives: write the current format, read both formats.

Current format (Docker >= 25), which :func:`save` writes: the tar is an OCI image layout
(``oci-layout``, ``index.json``, ``blobs/sha256/...``) plus Docker's ``manifest.json``
(one item per image: ``Config``, familiar ``RepoTags`` such as ``"nginx:latest"``,
``Layers``: paths of the *uncompressed* layer tars, named by diff_id) and ``repositories``
(``{repo: {tag: top layer hex}}``). Entries have mtime 0, so equal input gives equal bytes.

Legacy format (Docker <= 24), which :func:`load` reads too: ``<v1-id>/layer.tar`` per
layer (possibly a symlink to another layer's directory), the config as ``<hex>.json`` at
the root, and the same ``manifest.json`` and ``repositories``.

Loading never extracts the archive: ``manifest.json`` is read first, then the config and
layer members it names are streamed from the tar (random access by member), each layer
checked against the config's ``rootfs.diff_ids``. Paths in ``manifest.json`` are checked
before use; one that leaves the archive root is refused with :class:`UnsafePath`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..codec.tar import uncompressed
from ..errors import DigestMismatch, FormatError, UnknownName, UnsafePath
from ..image import Image, parse_json, sha256
from ..layer import BlobSource, Layer
from ..mediatypes import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    CONFIG_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    LAYOUT_VERSION,
    MT_INDEX,
    MT_LAYER,
    MT_MANIFEST,
)
from ..progress import Progress
from ..reference import Reference
from .blobs import (
    MAX_JSON_SIZE,
    HashingWriter,
    atomic_file,
    check_digest,
    descriptor,
    export_parts,
    read_layer,
    uncompressed_descriptor,
)

__all__ = ["load", "save"]

MANIFEST_FILE = "manifest.json"
"""Docker's list of the images in the archive."""
REPOSITORIES_FILE = "repositories"
"""Legacy ``{repo: {tag: layer id}}`` map, still written for old readers."""

_HEX_JSON_RE = re.compile(r"([0-9a-f]{64})\.json")
_BLOB_RE = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_MAX_LINK_DEPTH = 8

ImageSource = Image | Iterable[Image]
Tags = Iterable[str] | Mapping[str, Image] | None


# --- save ----------------------------------------------------------------------------------------


def save(images: ImageSource, dest: str | os.PathLike[str] | IO[bytes], tags: Tags = None, *,
         progress: Progress | None = None) -> None:
    """Write ``images`` to ``dest`` (a path or a binary file object) as ``docker save`` does.

    ``tags``: for one image, the names to give it (``["example.com/app:1.0", "app"]``;
    a missing tag means ``latest``); for several, a mapping ``{name: image}``. Names are
    stored in the familiar form Docker uses (``nginx:latest``, ``example.com/app:1.0``).
    Images without a name are saved untagged. A layer shared by several images is
    written once. To a path, the archive is written to a temporary file next to it and
    renamed into place; to a file object, it is streamed (no seeking).

    Layers are stored uncompressed and named by diff_id, so an image whose recorded
    blobs are compressed gets a new (uncompressed) manifest in ``index.json``; its
    config, hence ``image.id``, is kept. A layer loaded from an OCI layout is written as
    the tar it was read from (decompressed from :attr:`Layer.source_blob`) while that
    file is there; a layer whose source is gone and whose canonical tar differs from the
    tar it was read from is written canonically (then its diff_id, and the config, change).
    ``progress(done, total, what)`` is called before each layer file (in bytes) and once at
    the end (:mod:`unionfs_sim.progress`).

    Raises:
        ValueError: no images, an image with no layers (``docker save`` refuses those
            too), a bad name, a name with a digest, or a plain list of names for
            several images.
    """
    image_list, refs = _images_and_refs(images, tags)
    plans = [_plan(img) for img in image_list]

    # Every file of the archive, by name: its bytes, or the layer whose canonical tar it is.
    files: dict[str, bytes | Layer | _SourceTar] = {}

    def add_bytes(name: str, data: bytes) -> None:
        files[name] = data

    manifest_items: list[dict[str, Any]] = []
    index_manifests: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for img, (config, manifest, layer_paths, contents) in zip(image_list, plans, strict=True):
        add_bytes(f"blobs/sha256/{sha256(config)[7:]}", config)
        add_bytes(f"blobs/sha256/{sha256(manifest)[7:]}", manifest)
        for name, content in zip(layer_paths, contents, strict=True):
            files.setdefault(name, content)
        mdesc: dict[str, Any] = {"mediaType": json.loads(manifest).get("mediaType") or MT_MANIFEST,
                                 "digest": sha256(manifest), "size": len(manifest)}
        plat = _platform(config)
        if plat:
            mdesc["platform"] = plat
        my_refs = [r for r, i in refs if i is img]
        for r in my_refs:
            assert r.tag is not None
            repositories.setdefault(r.familiar_name, {})[r.tag] = layer_paths[-1].rsplit("/", 1)[-1]
            index_manifests.append({**mdesc,
                                    "annotations": {ANNOTATION_IMAGE_NAME: str(r), ANNOTATION_REF_NAME: r.tag}})
        if not my_refs:
            index_manifests.append(mdesc)
        manifest_items.append({
            "Config": f"blobs/sha256/{sha256(config)[7:]}",
            "RepoTags": [r.familiar for r in my_refs] or None,
            "Layers": layer_paths,
        })
    add_bytes("index.json", json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": index_manifests},
                                       separators=(",", ":")).encode())
    add_bytes(MANIFEST_FILE, _go_json(manifest_items))
    add_bytes("oci-layout", json.dumps({"imageLayoutVersion": LAYOUT_VERSION}, separators=(",", ":")).encode())
    if repositories:
        add_bytes(REPOSITORIES_FILE, _go_json(repositories))

    with _output(dest) as out:
        w = _TarWriter(out)
        w.add_dir("blobs/")
        w.add_dir("blobs/sha256/")
        layer_files = [n for n in files if not isinstance(files[n], bytes)]
        total, done, nth = sum(_size(files[n]) for n in layer_files), 0, 0
        for name in sorted(files):
            member = files[name]
            if progress is not None and not isinstance(member, bytes):
                nth += 1
                progress(done, total, f"writing layer {nth}/{len(layer_files)}")
                done += _size(member)
            w.add_file(name, member)
        w.close()
    if progress is not None:
        progress(total, total, "saved")


def _size(content: bytes | Layer | _SourceTar) -> int:
    return len(content) if isinstance(content, bytes) else content.size


def _go_json(doc: Any) -> bytes:
    """JSON as Go's ``json.Encoder`` writes it: compact, one trailing newline."""
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def _platform(config: bytes) -> dict[str, str]:
    """The OCI platform object of a config (for the descriptors of ``index.json``)."""
    doc = json.loads(config)
    return {k: doc[k] for k in ("architecture", "os", "variant") if isinstance(doc.get(k), str)}


def _images_and_refs(images: ImageSource, tags: Tags) -> tuple[list[Image], list[tuple[Reference, Image]]]:
    """The distinct images to save (by id, first wins) and the normalised names of each."""
    given = [images] if isinstance(images, Image) else list(images)
    for i, x in enumerate(given):
        if not isinstance(x, Image):
            raise TypeError(f"images[{i}] is a {type(x).__name__}, not an Image")
    pairs: list[tuple[str, Image]] = []
    if isinstance(tags, Mapping):
        for t, img in tags.items():
            if not isinstance(img, Image):
                raise TypeError(f"tags[{t!r}] is a {type(img).__name__}, not an Image")
            pairs.append((t, img))
            if not any(img is g for g in given):
                given.append(img)
    elif tags is not None:
        names = [tags] if isinstance(tags, str) else list(tags)
        if names and len(given) != 1:
            raise ValueError(f"{len(given)} images and a list of names: say which image each name is for, "
                             f"with tags={{name: image}}")
        pairs = [(t, given[0]) for t in names]
    if not given:
        raise ValueError("no images to save")
    by_id: dict[str, Image] = {}
    for img in given:
        by_id.setdefault(img.id, img)
    image_list = list(by_id.values())
    refs: list[tuple[Reference, Image]] = []
    seen: dict[Reference, Image] = {}
    for t, img in pairs:
        if not isinstance(t, str):
            raise TypeError(f"an image name must be a str, not {type(t).__name__}")
        ref = Reference.parse(t)
        if ref.digest is not None:
            raise ValueError(f"{t!r}: a docker archive stores names with tags, not digests")
        ref = ref.with_default_tag()
        img = by_id[img.id]
        if ref in seen:
            if seen[ref] is not img:
                raise ValueError(f"{t!r} names two different images")
            continue
        seen[ref] = img
        refs.append((ref, img))
    for img in image_list:
        if not img.layers:
            raise ValueError(f"image {img.id} has no layers; docker save refuses it too (empty export)")
    return image_list, refs


class _SourceTar:
    """The uncompressed tar a layer was loaded from, read again from its blob file."""

    def __init__(self, source: BlobSource, diff_id: str, size: int) -> None:
        self.source, self.diff_id, self.size = source, diff_id, size

    @classmethod
    def of(cls, layer: Layer) -> _SourceTar | None:
        """The source tar of ``layer`` if it differs from the canonical one and its blob
        file is still there and still decompresses to it; else None (write canonically)."""
        src, diff_id = layer.source_blob, layer.source_diff_id
        if src is None or diff_id is None or diff_id == layer.digest:
            return None
        h, size = hashlib.sha256(), 0
        try:
            with src.open() as f:
                _, r = uncompressed(f)
                while b := r.read(1 << 20):
                    h.update(b)
                    size += len(b)
        except Exception:  # noqa: BLE001 - gone, unreadable or corrupt: the canonical tar serves
            return None
        return cls(src, diff_id, size) if "sha256:" + h.hexdigest() == diff_id else None

    def write_to(self, out: IO[bytes]) -> None:
        with self.source.open() as f:
            _, r = uncompressed(f)
            w = HashingWriter(out)
            while b := r.read(1 << 20):
                w.write(b)
        if w.hexdigest() != self.diff_id:
            raise DigestMismatch(f"{self.source.path}: changed while it was written (no longer {self.diff_id})")


def _plan(image: Image) -> tuple[bytes, bytes, list[str], list[Layer | _SourceTar]]:
    """Config bytes, manifest bytes, layer paths and layer contents to write for ``image``.

    A layer keeps the tar it was read from (so its diff_id and the image id stay) while
    its blob file is there; otherwise it is written as its canonical tar.
    """
    contents: list[Layer | _SourceTar] = [_SourceTar.of(x) or x for x in image.layers]
    diff_ids = [c.diff_id if isinstance(c, _SourceTar) else c.digest for c in contents]
    descriptors = [{"mediaType": MT_LAYER, "digest": c.diff_id, "size": c.size} if isinstance(c, _SourceTar)
                   else uncompressed_descriptor(c) for c in contents]
    config, manifest = export_parts(image, descriptors, diff_ids)
    return config, manifest, [f"blobs/sha256/{d[7:]}" for d in diff_ids], contents


@contextmanager
def _output(dest: str | os.PathLike[str] | IO[bytes]) -> Iterator[IO[bytes]]:
    """A binary stream to write to: ``dest`` itself, or a temporary file renamed to ``dest``."""
    if not isinstance(dest, (str, os.PathLike)):
        yield dest
        return
    with atomic_file(Path(dest)) as f:
        yield f


class _TarWriter:
    """A minimal streaming tar writer: headers from :class:`tarfile.TarInfo`, data pushed
    by a producer (so a layer goes from ``Layer.to_tar`` straight into the archive)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.offset = 0

    def _write(self, b: bytes) -> None:
        self.out.write(b)
        self.offset += len(b)

    def _header(self, name: str, type_: bytes, size: int, mode: int) -> None:
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.size = size
        ti.mode = mode
        ti.mtime = 0
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        self._write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def add_dir(self, name: str) -> None:
        """A directory entry (mode 0o755)."""
        self._header(name, tarfile.DIRTYPE, 0, 0o755)

    def add_file(self, name: str, content: bytes | Layer | _SourceTar) -> None:
        """A regular file (mode 0o644): ``content``, or a layer's tar streamed in."""
        size = len(content) if isinstance(content, bytes) else \
            content.size if isinstance(content, _SourceTar) else content.tar_size
        self._header(name, tarfile.REGTYPE, size, 0o644)
        w = HashingWriter(self.out)
        if isinstance(content, bytes):
            w.write(content)
        elif isinstance(content, _SourceTar):
            content.write_to(w)  # type: ignore[arg-type]
        else:
            content.to_tar(w)  # type: ignore[arg-type]
        if w.count != size:
            raise RuntimeError(f"{name}: wrote {w.count} bytes, expected {size}")
        self.offset += w.count
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            self._write(b"\0" * pad)

    def close(self) -> None:
        """The end-of-archive blocks, padded to a whole record as tar does."""
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))
        pad = -self.offset % tarfile.RECORDSIZE
        if pad:
            self._write(b"\0" * pad)
        flush = getattr(self.out, "flush", None)
        if flush is not None:
            flush()


# --- load ----------------------------------------------------------------------------------------


def load(source: str | os.PathLike[str] | IO[bytes], tag: str | None = None, *,
         progress: Progress | None = None) -> Image:
    """Read one image from a ``docker save`` archive (current or legacy format).

    ``source`` is a path or a binary file object (a non-seekable stream is first
    copied to a temporary file; the archive may be gzip-compressed). ``tag`` picks
    the image among several by name, compared as references (``"nginx"`` matches
    ``nginx:latest`` and ``docker.io/library/nginx:latest``), or by image id
    (``sha256:<config digest>``); it may be omitted when there is one image.

    For the current format the image keeps the manifest from ``index.json`` (so
    ``image.digest`` is the one Docker reports); a legacy archive has none, so the
    image gets an uncompressed OCI manifest of its layer files. ``progress(done, total,
    what)`` is called before each layer (in bytes of layer files) and once at the end
    (:mod:`unionfs_sim.progress`).

    Raises:
        FormatError: no ``manifest.json``, bad JSON, a path that names no regular file
            of the archive; the message names the archive and the member.
        UnsafePath: a path in ``manifest.json`` (or a link it leads through) that leaves
            the archive root, such as ``../../etc/passwd``.
        DigestMismatch: a config whose content is not the digest its name says, or a
            layer whose content differs from its diff_id (naming the layer file).
        ValueError: several images and no ``tag`` (the message lists their RepoTags).
        UnknownName: no image has that name (a KeyError; the message lists the names).
    """
    with _open_tar(source) as (tf, label):
        members: dict[str, tarfile.TarInfo] = {}
        last_name: str | None = None
        try:
            for ti in tf:
                last_name = ti.name
                n = _normal(ti.name)
                if n is not None:
                    members[n] = ti  # a later entry of the same name wins, as on extraction
        except (tarfile.TarError, EOFError, OSError) as e:
            last = f" after member {last_name!r}" if last_name is not None else ""
            raise FormatError(f"{label}: truncated or corrupt archive{last} ({e})") from e
        # Members of an uncompressed archive named by path stay readable at their offsets.
        plain = isinstance(source, (str, os.PathLike)) and isinstance(tf.fileobj, io.BufferedReader)
        archive = _Archive(tf, members, label, os.path.abspath(source) if plain else None)  # type: ignore[arg-type]
        items = archive.manifest()
        item = _select(items, tag, archive)
        try:
            return archive.image(item, progress)
        except (tarfile.TarError, EOFError) as e:
            raise FormatError(f"{label}: truncated or corrupt archive ({e})") from e


def _tarfile(label: str, path: str | None = None, fileobj: IO[bytes] | None = None) -> tarfile.TarFile:
    """``tarfile.open`` for reading, any compression; FormatError if it is not a tar."""
    try:
        return tarfile.open(path, "r:*", fileobj)
    except tarfile.TarError as e:
        # "r:*" tried every compression; its message lists each attempt over five lines
        why = "plain, gzip, bzip2 or xz" if "\n" in str(e) else str(e)
        raise FormatError(f"{label}: not a tar archive ({why})") from e


@contextmanager
def _open_tar(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[tuple[tarfile.TarFile, str]]:
    """The archive opened for random access, and the name to use for it in messages."""
    if isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        with _tarfile(label, path=label) as tf:
            yield tf, label
        return
    label = str(getattr(source, "name", "<archive>"))
    seekable = getattr(source, "seekable", None)
    if seekable is not None and seekable():
        with _tarfile(label, fileobj=source) as tf:
            yield tf, label
        return
    with tempfile.TemporaryFile() as spool:  # a pipe: copied to disk, never to memory
        shutil.copyfileobj(source, spool, 1 << 20)
        spool.seek(0)
        with _tarfile(label, fileobj=spool) as tf:
            yield tf, label


def _normal(name: str) -> str | None:
    """A member name without ``./`` prefixes and trailing ``/``; None if it is unsafe."""
    n = posixpath.normpath(name.replace("\\", "/")) if name else ""
    if n in ("", ".", "..") or n.startswith(("/", "../")) or "\0" in n:
        return None
    return n


def _safe(path: object, where: str) -> str:
    """Check a path from ``manifest.json``: relative, inside the archive; normalised."""
    if not isinstance(path, str) or not path:
        raise FormatError(f"{where}: expected a path in the archive, got {path!r}")
    if "\0" in path:
        raise UnsafePath(f"{where}: path {path!r} contains a NUL byte")
    if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", path):
        raise UnsafePath(f"{where}: path {path!r} is absolute; archive paths are relative to its root")
    parts = path.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafePath(f"{where}: path {path!r} leaves the archive root")
    n = posixpath.normpath("/".join(parts))
    if n in ("", "."):
        raise FormatError(f"{where}: path {path!r} names the archive root")
    return n


class _Archive:
    """Random access to the members of an open archive, by normalised name."""

    def __init__(self, tf: tarfile.TarFile, members: dict[str, tarfile.TarInfo], label: str,
                 path: str | None = None) -> None:
        self.tf = tf
        self.members = members
        self.label = label
        self.path = path
        """The archive's file when members can be read again from it (an uncompressed tar by path)."""

    def where(self, name: str) -> str:
        """``archive: member``, the prefix of every message about ``name``."""
        return f"{self.label}: {name}"

    def member(self, name: str, depth: int = 0) -> tarfile.TarInfo:
        """The regular-file member ``name`` leads to, following links inside the archive."""
        ti = self.members.get(name)
        if ti is None:
            raise FormatError(f"{self.where(name)}: no such file in the archive")
        if ti.issym() or ti.islnk():
            if depth >= _MAX_LINK_DEPTH:
                raise FormatError(f"{self.where(name)}: too many levels of links")
            if ti.issym():
                target = posixpath.join(posixpath.dirname(name), ti.linkname)
                if ti.linkname.startswith("/"):
                    raise UnsafePath(f"{self.where(name)}: symlink to absolute path {ti.linkname!r}")
            else:
                target = ti.linkname
            parts = target.split("/")
            # Resolve ".." textually, but never above the root.
            stack: list[str] = []
            for p in parts:
                if p in ("", "."):
                    continue
                if p == "..":
                    if not stack:
                        raise UnsafePath(f"{self.where(name)}: link to {ti.linkname!r} leaves the archive root")
                    stack.pop()
                else:
                    stack.append(p)
            return self.member("/".join(stack), depth + 1)
        if not ti.isreg():
            raise FormatError(f"{self.where(name)}: not a regular file")
        return ti

    def open(self, name: str) -> tuple[IO[bytes], tarfile.TarInfo]:
        """A stream of the regular file ``name`` leads to, and its member."""
        ti = self.member(name)
        f = self.tf.extractfile(ti)
        if f is None:  # pragma: no cover - isreg() members always have data
            raise FormatError(f"{self.where(name)}: cannot be read")
        return f, ti

    def read_small(self, name: str) -> bytes:
        """The bytes of a small (JSON) member; FormatError if it is huge."""
        f, ti = self.open(name)
        if ti.size > MAX_JSON_SIZE:
            raise FormatError(f"{self.where(name)}: {ti.size} bytes is too large for a JSON document")
        with f:
            return f.read()

    def json(self, name: str) -> Any:
        """A member parsed as JSON; FormatError naming it if it is not JSON."""
        data = self.read_small(name)
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:
            raise FormatError(f"{self.where(name)}: not valid JSON ({e})") from e

    # --- manifest.json ---------------------------------------------------------------------

    def manifest(self) -> list[dict[str, Any]]:
        """The items of ``manifest.json``, checked (paths made safe and normalised)."""
        if MANIFEST_FILE not in self.members:
            raise FormatError(f"{self.where(MANIFEST_FILE)}: missing (not a docker save archive, or one from "
                              f"Docker < 1.10, which this reader does not support)")
        doc = self.json(MANIFEST_FILE)
        where = self.where(MANIFEST_FILE)
        if not isinstance(doc, list) or not doc:
            raise FormatError(f"{where}: expected a non-empty JSON list of images")
        items = []
        for i, it in enumerate(doc):
            w = f"{where} [{i}]"
            if not isinstance(it, dict):
                raise FormatError(f"{w}: expected a JSON object")
            config = _safe(it.get("Config"), f"{w} Config")
            layers = it.get("Layers")
            if not isinstance(layers, list):
                raise FormatError(f"{w}: Layers must be a list of paths")
            layers = [_safe(x, f"{w} Layers[{j}]") for j, x in enumerate(layers)]
            tags = it.get("RepoTags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise FormatError(f"{w}: RepoTags must be a list of strings")
            items.append({"Config": config, "Layers": layers, "RepoTags": tags, "_index": i})
        return items

    # --- one image -------------------------------------------------------------------------

    def image(self, item: Mapping[str, Any], progress: Progress | None = None) -> Image:
        """The image of one ``manifest.json`` item: config, layers (verified), manifest."""
        cfg_name: str = item["Config"]
        config = self.read_small(cfg_name)
        named = _BLOB_RE.fullmatch(cfg_name) or _HEX_JSON_RE.fullmatch(cfg_name)
        if named and sha256(config) != "sha256:" + named.group(1):
            raise DigestMismatch(f"{self.where(cfg_name)}: content does not match digest sha256:{named.group(1)} "
                                 f"(it hashes to {sha256(config)})")
        doc = parse_json(config, self.where(cfg_name))
        rootfs = doc.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list):
            raise FormatError(f"{self.where(cfg_name)}: no rootfs.diff_ids")
        layer_names: list[str] = item["Layers"]
        if len(diff_ids) != len(layer_names):
            raise FormatError(f"{self.where(cfg_name)}: rootfs.diff_ids lists {len(diff_ids)} layers, "
                              f"{MANIFEST_FILE} lists {len(layer_names)}")
        layers: list[Layer] = []
        blob_descs: list[dict[str, Any]] = []
        total = sum(self.member(n).size for n in layer_names) if progress is not None else 0
        done = 0
        for i, (name, diff_id) in enumerate(zip(layer_names, diff_ids, strict=True)):
            check_digest(diff_id, f"{self.where(cfg_name)} (rootfs.diff_ids[{i}])")
            if progress is not None:
                progress(done, total, f"layer {i + 1}/{len(layer_names)}")
            f, ti = self.open(name)
            done += ti.size
            m = _BLOB_RE.fullmatch(name)
            with f:
                layer, blob = read_layer(f, self.where(name), diff_id, "sha256:" + m.group(1) if m else None,
                                         ti.size, layers)
            if self.path is not None:
                layer.record_source(BlobSource(self.path, blob["digest"], ti.size, ti.offset_data))
            layers.append(layer)
            blob_descs.append(blob)
        if progress is not None:
            progress(total, total, "loaded")
        manifest = self._oci_manifest(sha256(config), blob_descs)
        try:
            if manifest is not None:
                return Image.from_parts(layers, config, manifest)
            return Image.from_parts(layers, config, layer_descriptors=blob_descs)
        except FormatError as e:
            raise type(e)(f"{self.where(cfg_name)}: {e}") from e

    def _oci_manifest(self, config_digest: str, blobs: Sequence[Mapping[str, Any]]) -> bytes | None:
        """The manifest in ``index.json`` for this config whose layers are these blobs, if any."""
        if "index.json" not in self.members:
            return None
        try:
            index = self.json("index.json")
        except FormatError:
            return None
        want = [b["digest"] for b in blobs]
        for data, m in self._manifests(index, 0):
            cfg = m.get("config")
            if not isinstance(cfg, dict) or cfg.get("digest") != config_digest:
                continue
            if cfg.get("mediaType") not in CONFIG_MEDIA_TYPES:
                continue
            layers = m.get("layers")
            if isinstance(layers, list) and [d.get("digest") for d in layers if isinstance(d, dict)] == want:
                return data
        return None

    def _manifests(self, index: Any, depth: int) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Each manifest blob reachable from an index in the archive (verified), in order."""
        if depth > 8 or not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            return
        for raw in index["manifests"]:
            try:
                d = descriptor(raw, self.where("index.json"))
                name = f"blobs/sha256/{d['digest'][7:]}"
                if name not in self.members:
                    continue
                data = self.read_small(name)
            except FormatError:
                continue
            if sha256(data) != d["digest"] or len(data) != d["size"]:
                raise DigestMismatch(f"{self.where(name)}: content does not match digest {d['digest']} "
                                     f"(it hashes to {sha256(data)}, {len(data)} bytes)")
            try:
                doc = json.loads(data)
            except ValueError:
                continue
            if not isinstance(doc, dict):
                continue
            if d.get("mediaType") in INDEX_MEDIA_TYPES or isinstance(doc.get("manifests"), list):
                yield from self._manifests(doc, depth + 1)
            else:
                yield data, doc


def _ref(s: str) -> Reference | None:
    """``s`` as a normalised reference with a tag (``latest`` by default), or None."""
    try:
        return Reference.parse(s).with_default_tag()
    except ValueError:
        return None


def _select(items: list[dict[str, Any]], tag: str | None, archive: _Archive) -> dict[str, Any]:
    """The ``manifest.json`` item ``tag`` names (or the only one)."""
    where = archive.where(MANIFEST_FILE)
    all_tags = [t for it in items for t in it["RepoTags"]]
    if tag is None:
        if len(items) == 1:
            return items[0]
        untagged = sum(1 for it in items if not it["RepoTags"])
        extra = f" and {untagged} untagged" if untagged else ""
        raise ValueError(f"{where}: the archive holds {len(items)} images; pass tag= one of "
                         f"{', '.join(map(repr, all_tags)) or '(none tagged)'}{extra}")
    exact = [it for it in items if tag in it["RepoTags"]]
    if exact:
        return exact[0]
    want = _ref(tag)
    if want is not None:
        for it in items:
            if any(_ref(t) == want for t in it["RepoTags"]):
                return it
    if re.fullmatch(r"sha256:[0-9a-f]{64}", tag):
        for it in items:
            m = _BLOB_RE.fullmatch(it["Config"]) or _HEX_JSON_RE.fullmatch(it["Config"])
            if m and m.group(1) == tag[7:]:
                return it
    raise UnknownName(f"{where}: no image named {tag!r} (RepoTags: {', '.join(map(repr, all_tags)) or 'none'})")
