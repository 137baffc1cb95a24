"""Layer: an immutable changeset of entries (files, dirs, links, whiteouts), content-addressed.

A layer maps keys (see :mod:`unionfs_sim.paths`) to entries (see :mod:`unionfs_sim.nodes`).
Parent directories a layer does not list are *implicit*: they exist in the layer's tree,
but take their metadata from the layers below (as applying an OCI tar onto its parent
does), or 0o755 root-owned if nothing below has them.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, ItemsView, Iterator, Mapping, ValuesView
from typing import IO, Any, cast

import attrs

from .codec import overlaydir
from .codec import tar as _tar
from .nodes import WHITEOUT, Device, Dir, Entry, Fifo, File, Hardlink, Socket, Symlink, Whiteout
from .paths import confine, key, parents


class _HashSink:
    """A write-only file object that hashes and counts what is written to it."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.size += len(b)
        return len(b)


_NODE_TYPES = (File, Dir, Symlink, Fifo, Socket, Device, Whiteout)


@attrs.frozen
class BlobSource:
    """Where the blob a layer was loaded from can be read again: ``size`` bytes at
    ``offset`` of the file ``path`` (a layout's blob file, or a member of an uncompressed
    archive), whose sha256 is ``digest``."""

    path: str
    digest: str
    size: int
    offset: int = 0

    def open(self) -> IO[bytes]:
        """The blob's ``size`` bytes as a stream (close it)."""
        f = open(self.path, "rb")  # noqa: SIM115 - closed with the stream returned
        try:
            f.seek(self.offset)
        except BaseException:
            f.close()
            raise
        return cast(IO[bytes], io.BufferedReader(_Slice(f, self.size)))


class _Slice(io.RawIOBase):
    """The next ``size`` bytes of an open file; closing it closes the file."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._f.read(min(len(b), self._left))
        b[:len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


class Layer(Mapping[str, Entry]):
    """An immutable changeset: a mapping of keys to entries, addressed by ``digest``.

    Build one with :meth:`from_dict`, :meth:`from_tar` or :meth:`from_directory`; it
    never changes afterwards, so any number of images and containers can share it.
    """

    __slots__ = ("_entries", "_digest", "_tar_size", "_size", "_nlink", "_source_diff_id", "_source_blob",
                 "__weakref__")

    def __init__(self, entries: Mapping[str, Entry] | None = None) -> None:
        """Wrap already-validated ``entries``; prefer :meth:`from_dict` for user input."""
        self._entries: dict[str, Entry] = dict(entries or {})
        self._digest: str | None = None
        self._tar_size: int | None = None
        self._size: int | None = None
        self._nlink: dict[int, int] | None = None
        self._source_diff_id: str | None = None
        self._source_blob: BlobSource | None = None

    # --- construction -------------------------------------------------------------

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Layer:
        """Build a layer from ``{path: entry}``; see the module docs of unionfs_sim.

        Values: ``bytes`` (a 0o644 regular file), :class:`File`, :class:`Dir`,
        :class:`Symlink`, :class:`Fifo`, :class:`Device`, :class:`Socket`,
        :data:`WHITEOUT`, or :class:`Hardlink` naming another file of the same layer.
        A key ending in ``/`` must be a directory (its value may be ``None``).

        Raises:
            ValueError: a bad path, a duplicate key, an entry below a non-directory or
                whiteout of the same layer, or a hard link to nothing or to a directory.
            TypeError: a value of an unknown type.
        """
        entries: dict[str, Entry] = {}
        links: dict[str, str] = {}
        used: set[int] = set()
        for raw, value in spec.items():
            k = key(raw)
            if k == "" and not isinstance(value, Dir) and value is not None:
                raise ValueError(f"{raw!r}: the root can only be a Dir")
            if k in entries or k in links:
                raise ValueError(f"{raw!r}: duplicate entry for /{k}")
            if str(raw).endswith("/"):
                if value is None:
                    value = Dir()
                elif not isinstance(value, Dir):
                    raise ValueError(f"{raw!r}: a key ending in '/' must be a Dir, got {type(value).__name__}")
            if isinstance(value, (bytes, bytearray, memoryview)):
                value = File(bytes(value))
            if isinstance(value, Hardlink):
                links[k] = confine(value.target)
                continue
            if not isinstance(value, _NODE_TYPES):
                raise TypeError(f"{raw!r}: unsupported entry {value!r} "
                                "(bytes, File, Dir, Symlink, Fifo, Device, Socket, WHITEOUT or Hardlink)")
            if id(value) in used and not isinstance(value, Whiteout):
                # The same object under two keys is two files; only Hardlink links.
                value = _copy(value)
            used.add(id(value))
            entries[k] = value
        for k, target in links.items():
            seen = [k]
            while target in links:
                if target in seen:
                    raise ValueError(f"/{k}: hard-link cycle through {', '.join('/' + s for s in seen)}")
                seen.append(target)
                target = links[target]
            node = entries.get(target)
            if node is None:
                raise ValueError(f"/{k}: hard link to /{target}, which this layer does not have")
            if isinstance(node, (Dir, Whiteout)):
                what = "directory" if isinstance(node, Dir) else "whiteout"
                raise ValueError(f"/{k}: hard link to /{target}, a {what}")
            entries[k] = node
        _check_tree(entries)
        return cls(entries)

    # --- mapping --------------------------------------------------------------------

    def __getitem__(self, k: str) -> Entry:
        return self._entries[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, k: object) -> bool:
        return k in self._entries

    def items(self) -> ItemsView[str, Entry]:
        """The ``(key, entry)`` pairs: the entries dict's own view (Mapping's would look each key up)."""
        return self._entries.items()

    def values(self) -> ValuesView[Entry]:
        """The entries: the entries dict's own view (Mapping's would look each key up)."""
        return self._entries.values()

    def __repr__(self) -> str:
        return f"<Layer {self.digest[:19]} {len(self)} entries>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layer):
            return NotImplemented
        return self is other or self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    # --- derived facts -------------------------------------------------------------

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the layer's canonical uncompressed tar: its OCI diff_id."""
        if self._digest is None:
            sink = _HashSink()
            _tar.write(self._entries, sink)
            self._digest = "sha256:" + sink.h.hexdigest()
            self._tar_size = sink.size
        return self._digest

    @property
    def tar_size(self) -> int:
        """Length in bytes of the canonical uncompressed tar."""
        if self._tar_size is None:
            _ = self.digest
        assert self._tar_size is not None
        return self._tar_size

    @property
    def size(self) -> int:
        """Total bytes of file content (each hard-link group counted once)."""
        if self._size is None:
            seen: set[int] = set()
            total = 0
            for n in self._entries.values():
                if isinstance(n, File) and id(n) not in seen:
                    seen.add(id(n))
                    total += len(n.data)
            self._size = total
        return self._size

    def nlink(self, node: Entry) -> int:
        """How many names of this layer hold ``node`` (its hard-link count here)."""
        if self._nlink is None:
            counts: dict[int, int] = {}
            for n in self._entries.values():
                if isinstance(n, File):
                    counts[id(n)] = counts.get(id(n), 0) + 1
            self._nlink = counts
        return self._nlink.get(id(node), 1)

    def links(self) -> dict[str, str]:
        """Every hard-link name mapped to the first name (canonical order) of its group."""
        first: dict[int, str] = {}
        out: dict[str, str] = {}
        for k in _tar.canonical_order(self._entries):
            n = self._entries[k]
            if isinstance(n, File):
                if id(n) in first:
                    out[k] = first[id(n)]
                else:
                    first[id(n)] = k
        return out

    def to_dict(self) -> dict[str, Entry | Hardlink]:
        """The layer as ``from_dict`` input (hard links as :class:`Hardlink`)."""
        links = self.links()
        return {
            ("/" + k + ("/" if isinstance(n, Dir) else "")): (Hardlink(links[k]) if k in links else n)
            for k, n in ((k, self._entries[k]) for k in _tar.canonical_order(self._entries))
        }

    # --- formats ---------------------------------------------------------------------

    def to_tar(self, fileobj: IO[bytes], compression: str | None = None) -> None:
        """Write the layer as an OCI tar changeset: canonical and reproducible.

        ``compression``: None, ``"gzip"`` or ``"zstd"`` (needs the ``zstandard`` package).
        The uncompressed bytes are hashed on the way, so :attr:`digest` comes for free.
        """
        diff_id, _, size = _tar.write_blob(self._entries, fileobj, compression)
        if self._digest is None and compression is None:
            self._digest, self._tar_size = diff_id, size

    @classmethod
    def from_tar(
        cls,
        fileobj: IO[bytes] | str | os.PathLike[str],
        *,
        expected_diff_id: str | None = None,
        name: str = "layer",
        lower_dirs_meta: Callable[[str], Dir | None] | None = None,
    ) -> Layer:
        """Read an OCI changeset tar (plain, gzip or zstd, detected) as a layer, streaming.

        See :mod:`unionfs_sim.codec.tar` for how whiteouts, opaque markers, hard links
        and odd inputs are handled. :attr:`source_diff_id` records the sha256 of the
        uncompressed bytes read; :attr:`digest` stays the digest of the *canonical* tar
        of the entries (the same for a tar this library wrote).

        Args:
            fileobj: a binary file object, or the path of a tar file.
            expected_diff_id: ``sha256:<hex>`` the uncompressed bytes must hash to.
            name: what to call the layer in error messages (default: the path, if given).
            lower_dirs_meta: metadata of lower directories, for an opaque marker whose
                directory has no entry in the tar (see :func:`codec.tar.read`).

        Raises:
            FormatError: a malformed, truncated or corrupt tar, naming ``name`` and the
                entry; UnsafePath (a subclass) for paths or links that escape the root;
                DigestMismatch (a subclass) if the bytes do not match ``expected_diff_id``.
        """
        if expected_diff_id is not None:
            _tar.check_diff_id(expected_diff_id)  # a bad argument fails before reading
        if isinstance(fileobj, (str, os.PathLike)):
            path = os.fspath(fileobj)
            with open(path, "rb") as f:
                return cls.from_tar(f, expected_diff_id=expected_diff_id, name=path if name == "layer" else name,
                                    lower_dirs_meta=lower_dirs_meta)
        entries, diff_id, _, _ = _tar.read_blob(fileobj, name=name, lower_dirs_meta=lower_dirs_meta)
        if expected_diff_id is not None:
            _tar.check_digest(expected_diff_id, diff_id, name)
        layer = cls(entries)
        layer._source_diff_id = diff_id
        return layer

    @property
    def source_diff_id(self) -> str | None:
        """sha256 of the uncompressed tar this layer was read from (``from_tar``), else None.

        It differs from :attr:`digest` when the source tar was not canonical (another
        tool's ordering, uname fields, padding ...): keep it to refer to the original blob.
        """
        return self._source_diff_id

    @property
    def source_blob(self) -> BlobSource | None:
        """Where the blob this layer was loaded from is, else None.

        Set by ``oci.load`` (a layout's blob file) and ``docker_archive.load`` (a member of
        an uncompressed archive given by path). Saving copies those bytes back (while they
        still have that digest), so an unchanged image keeps its digests even when its tars
        are not the canonical ones this library writes.
        """
        return self._source_blob

    def record_source(self, blob: BlobSource) -> Layer:
        """Note where the blob this layer was just read from lies (loaders call it once); ``self``.

        Provenance, not part of the layer's value: digest, equality and entries are unchanged.
        """
        self._source_blob = blob
        return self

    def to_directory(self, path: str | os.PathLike[str], format: str = "overlay", **kwargs: Any) -> None:
        """Write the layer into an empty directory: an overlayfs lower/upperdir or a plain tree.

        See :func:`unionfs_sim.codec.overlaydir.write` for the format and its options.
        """

        overlaydir.write(self._entries, path, format=format, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str], format: str = "overlay", **kwargs: Any) -> Layer:
        """Read a directory as a layer: an overlayfs lower/upperdir (e.g. one the kernel
        wrote) or a plain tree. See :func:`unionfs_sim.codec.overlaydir.read`."""

        return cls(overlaydir.read(path, format=format, **kwargs))  # type: ignore[arg-type]

    def _repr_html_(self) -> str:
        """The layer's entries as a table (path, kind, mode, size), for notebooks."""
        from ._html import human, section, short, table

        links = self.links()
        rows = []
        for k in _tar.canonical_order(self._entries):
            n = self._entries[k]
            if isinstance(n, Whiteout):
                kind = "whiteout"
            else:
                kind = ("hardlink -> /" + links[k]) if k in links else type(n).__name__
            if isinstance(n, Dir) and n.opaque:
                kind += " (opaque)"
            mode = "" if isinstance(n, Whiteout) else f"{n.mode:04o}"
            rows.append(["/" + k, kind, mode, 0 if k in links or isinstance(n, Whiteout) else n.size])
        return section(f"Layer {short(self.digest)}: {len(self)} entries, {human(self.size)}",
                       table(["path", "kind", "mode", "size"], rows, right=(3,), limit=200))


def _copy(node: Any) -> Any:
    import attrs

    return attrs.evolve(node)


def _check_tree(entries: Mapping[str, Entry]) -> None:
    """Refuse entries below a non-directory of the same layer."""
    for k in entries:
        for p in parents(k):
            n = entries.get(p)
            if n is None or isinstance(n, Dir):
                continue
            what = "a whiteout" if isinstance(n, Whiteout) else f"a {type(n).__name__}"
            raise ValueError(f"/{k}: its parent /{p} is {what} in the same layer")


EMPTY = Layer()
"""The layer with no entries."""

__all__ = ["EMPTY", "Layer", "WHITEOUT"]
