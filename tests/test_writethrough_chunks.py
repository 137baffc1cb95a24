"""A write into a file just copied up over a lazy lower file: the 64 KiB chunks it touches
come from the upper file (the write-through copy), not from the lower file, and the bytes
are the same either way (issue 12: an append copy-up opened the lower file once more)."""

from __future__ import annotations

import os
from pathlib import Path

import unionfs_sim as ufs
from unionfs_sim.container import Container
from unionfs_sim.fuse.writethrough import UpperDir, WriteThroughFS

SIZE = 200_000  # four chunks, the last one partial
ORIGINAL = bytes(i * 7 % 251 for i in range(SIZE))


def _fs(tmp_path: Path) -> WriteThroughFS:
    ufs.Layer.from_dict({"f": ORIGINAL, "g": ORIGINAL}).to_directory(tmp_path / "lower")
    for n in ("u", "w"):
        (tmp_path / n).mkdir()
    image = ufs.Image.from_layers([ufs.Layer.from_directory(tmp_path / "lower", lazy=True)])
    c = Container.from_upper(image, {}, None)
    return WriteThroughFS(c.overlay, UpperDir(c.overlay, str(tmp_path / "u"), str(tmp_path / "w")))


def test_writes_take_chunks_from_the_upper_file(tmp_path: Path) -> None:
    fs = _fs(tmp_path)
    h = fs.os_open("/f", os.O_RDWR)  # copies f up: the upper file has its bytes
    g = fs.os_open("/g", os.O_WRONLY | os.O_APPEND)
    # The lower files change in place (same length) after the copy-up: bytes the model
    # still takes from them show the change, bytes taken from the upper file do not.
    changed = bytes(255 - b for b in ORIGINAL)
    (tmp_path / "lower" / "f").write_bytes(changed)
    (tmp_path / "lower" / "g").write_bytes(changed)

    h.seek(60_000)
    h.write(b"W" * 80_000)  # chunks 0 (from 60,000), 1 (whole), 2 (to 140,000)
    g.write(b"appended")  # chunk 3, the partial last one
    h.close()
    g.close()

    f = fs.read_bytes("/f")
    assert f[:60_000] == ORIGINAL[:60_000]  # chunk 0's head: from the upper file
    assert f[60_000:140_000] == b"W" * 80_000
    assert f[140_000:196_608] == ORIGINAL[140_000:196_608]  # chunk 2's tail: from the upper file
    assert f[196_608:] == changed[196_608:]  # chunk 3 untouched: still the lower file's
    assert (tmp_path / "u" / "f").read_bytes()[:196_608] == f[:196_608]

    gb = fs.read_bytes("/g")
    assert gb[:196_608] == changed[:196_608]  # untouched chunks 0-2
    assert gb[196_608:] == ORIGINAL[196_608:] + b"appended"  # chunk 3: from the upper file
    assert (tmp_path / "u" / "g").read_bytes() == ORIGINAL + b"appended"
