"""Data: the mutable bytes of a file in a writable upper layer, copy-on-write over a blob.

Copy-up must not copy a large file's bytes, and a write must copy only what it
touches: Data starts as a view of the lower file's immutable ``bytes`` (or its
:class:`~unionfs_sim.nodes.DiskBytes`, read from disk on demand) and keeps only
the chunks that were written as private ``bytearray``s.
"""

from __future__ import annotations

from .nodes import Content, DiskBytes

CHUNK = 1 << 16
"""Granularity of copy-on-write: a write privatises the 64 KiB chunks it touches."""

MAX_SIZE = (1 << 63) - 1
"""Largest file size (Linux's MAX_LFS_FILESIZE on 64-bit)."""


class Data:
    """File content: an immutable base blob plus privately written chunks.

    Bytes of chunk ``i`` come from ``chunks[i]`` if present (a bytearray, possibly shorter
    than CHUNK: the rest reads as zeros up to ``size``), else from ``base`` up to
    ``base_len``, else zeros. ``base_len`` shrinks when the file is truncated, so bytes
    cut off and later re-exposed by extending read as zeros, as POSIX requires.
    """

    __slots__ = ("base", "base_len", "chunks", "size")

    def __init__(self, base: Content = b"") -> None:
        self.base = base
        self.base_len = len(base)
        self.chunks: dict[int, bytearray] = {}
        self.size = len(base)

    def copy(self) -> Data:
        """An independent copy that still shares the base blob."""
        d = Data.__new__(Data)
        d.base, d.base_len, d.size = self.base, self.base_len, self.size
        d.chunks = {i: bytearray(c) for i, c in self.chunks.items()}
        return d

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (fewer at end of file)."""
        end = min(self.size, offset + n)
        if offset >= end:
            return b""
        if not self.chunks and end <= self.base_len:
            return self.base[offset:end]
        out = bytearray()
        pos = offset
        while pos < end:
            i, o = divmod(pos, CHUNK)
            stop = min(end, (i + 1) * CHUNK)
            want = stop - pos
            c = self.chunks.get(i)
            piece: bytes | bytearray
            if c is not None:
                piece = c[o : o + want]
            elif pos < self.base_len:
                piece = self.base[pos : min(stop, self.base_len)]
            else:
                piece = b""
            out += piece
            if len(piece) < want:
                out += bytes(want - len(piece))
            pos = stop
        return bytes(out)

    def view(self, offset: int, n: int) -> bytes | memoryview:
        """As :meth:`read`, but a view of the shared base where no chunk was written."""
        end = min(self.size, offset + n)
        if not self.chunks and offset < end <= self.base_len:
            base = self.base
            return memoryview(base)[offset:end] if isinstance(base, bytes) else base[offset:end]
        return self.read(offset, n)

    def _own(self, i: int) -> bytearray:
        c = self.chunks.get(i)
        if c is None:
            start = i * CHUNK
            if start < self.base_len:
                c = bytearray(self.base[start : min(start + CHUNK, self.base_len)])
            else:
                c = bytearray()
            self.chunks[i] = c
        return c

    def write(self, offset: int, b: bytes | bytearray | memoryview) -> int:
        """Write ``b`` at ``offset``, extending the file (with zeros in any gap)."""
        n = len(b)
        if n == 0:
            return 0
        mv = memoryview(b).cast("B")
        pos = offset
        done = 0
        while done < n:
            i, o = divmod(pos, CHUNK)
            take = min(n - done, CHUNK - o)
            c = self._own(i)
            if len(c) < o:
                c.extend(bytes(o - len(c)))
            c[o : o + take] = mv[done : done + take]
            done += take
            pos += take
        if pos > self.size:
            self.size = pos
        return n

    def truncate(self, size: int) -> None:
        """Set the length; bytes beyond the old end read as zeros."""
        if size < self.size:
            self.base_len = min(self.base_len, size)
            last = size // CHUNK
            for i in [i for i in self.chunks if i > last or (i == last and size % CHUNK == 0)]:
                del self.chunks[i]
            c = self.chunks.get(last)
            if c is not None and len(c) > size % CHUNK:
                del c[size % CHUNK :]
        self.size = size

    def freeze(self) -> Content:
        """The whole content as immutable bytes; the base blob itself when untouched."""
        if not self.chunks and self.base_len == len(self.base) == self.size:
            return self.base
        return self.read(0, self.size)

    @property
    def over_disk(self) -> bool:
        """True while some of the bytes are still read from a file on disk (a lazy lower
        file's :class:`~unionfs_sim.nodes.DiskBytes` under them)."""
        return isinstance(self.base, DiskBytes) and self.base_len > 0

    @property
    def private_bytes(self) -> int:
        """Bytes this Data holds privately (what copy-up and writes cost in memory)."""
        return sum(len(c) for c in self.chunks.values())
