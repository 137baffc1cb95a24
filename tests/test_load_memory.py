"""Loading a layer holds its content once plus a bounded buffer (issue 12, item 6).

Not timed: tracemalloc counts the bytes Python allocates while a layer with one big file
is read. Before, ``extractfile().read()`` joined the pieces and sliced them (about 3x the
file at peak); now each file is built in place, so the peak is its size plus a piece.
The full-size bound (peak RSS at most 1.3x the uncompressed tar) is checked by
``benchmarks/load.py``.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tracemalloc

import pytest

import unionfs_sim as ufs

SIZE = 16 << 20


def _tar(compress: bool) -> bytes:
    buf = io.BytesIO()
    out = gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1) if compress else buf
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        data = os.urandom(1 << 20) * (SIZE >> 20)
        ti = tarfile.TarInfo("big")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        for i in range(50):
            ti = tarfile.TarInfo(f"small{i}")
            ti.size = 100
            tf.addfile(ti, io.BytesIO(b"s" * 100))
    if compress:
        out.close()
    return buf.getvalue()


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
def test_reading_a_big_file_allocates_its_size_once(compress: bool) -> None:
    blob = _tar(compress)
    tracemalloc.start()
    try:
        layer = ufs.Layer.from_tar(io.BytesIO(blob))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    big = layer["big"]
    assert isinstance(big, ufs.File) and len(big.data) == SIZE
    assert peak < SIZE * 1.25, f"peak {peak / SIZE:.2f}x the file while reading it"
