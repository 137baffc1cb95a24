"""Hypothesis strategies for names, paths, layers, images and operation sequences.

For people who test overlay semantics or their own image tools (a flattener, a layer
differ, a FUSE filesystem) against the model. Names are drawn from a small alphabet
by default so that random operations collide often: that is where bugs live.

    from hypothesis import given
    from unionfs_sim.testing import strategies as st_ufs

    @given(st_ufs.images())
    def test_my_flattener(image):
        assert my_flatten(image.layers) == dict(walk(image.fs))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..image import Image, ImageConfig
from ..layer import Layer
from ..nodes import WHITEOUT, Dir, Entry, Fifo, File, Symlink
from ..paths import parents

DEFAULT_NAMES = ("a", "b", "c", "d")


def names(alphabet: Sequence[str] = DEFAULT_NAMES) -> SearchStrategy[str]:
    """A file name from ``alphabet`` (small on purpose: collisions find bugs)."""
    return st.sampled_from(list(alphabet))


def keys(max_depth: int = 3, alphabet: Sequence[str] = DEFAULT_NAMES) -> SearchStrategy[str]:
    """A layer key (relative, ``/``-separated) of depth 1..max_depth."""
    return st.lists(names(alphabet), min_size=1, max_size=max_depth).map("/".join)


def paths(max_depth: int = 3, alphabet: Sequence[str] = DEFAULT_NAMES) -> SearchStrategy[str]:
    """An absolute path in the merged view, e.g. ``/a/b``."""
    return keys(max_depth, alphabet).map(lambda k: "/" + k)


def contents(max_size: int = 64) -> SearchStrategy[bytes]:
    """File content: short, often empty or repeated so that sizes collide too."""
    return st.one_of(st.just(b""), st.binary(max_size=max_size), st.sampled_from([b"x", b"hello\n", b"0" * 100]))


def modes() -> SearchStrategy[int]:
    """Permission bits, including setuid/setgid/sticky now and then."""
    return st.sampled_from([0o644, 0o600, 0o755, 0o700, 0o444, 0o4755, 0o2755, 0o1777, 0o000])


def file_modes() -> SearchStrategy[int]:
    """A regular file's bits: owner-only, group-writable, world-writable, setuid, setgid
    with and without group execute (the kernel treats them differently)."""
    return st.sampled_from([0o644, 0o600, 0o755, 0o700, 0o444, 0o664, 0o660, 0o666, 0o640,
                            0o4755, 0o2755, 0o2745, 0o6775, 0o000])


def dir_modes() -> SearchStrategy[int]:
    """A directory's bits: searchable by all, by the group only, by nobody else, sticky
    world-writable (``/tmp``), group-writable setgid (a shared project directory)."""
    return st.sampled_from([0o755, 0o700, 0o750, 0o711, 0o777, 0o1777, 0o2755, 0o2775, 0o770, 0o1770, 0o555])


UIDS = (0, 1000, 1001)
"""Owners random entries get: root and two users (the callers tests act as are 1000-1002)."""
GIDS = (0, 1000, 1001, 1002)
"""Groups random entries get."""


def owners() -> SearchStrategy[tuple[int, int]]:
    """A ``(uid, gid)`` pair from :data:`UIDS` and :data:`GIDS`."""
    return st.tuples(st.sampled_from(UIDS), st.sampled_from(GIDS))


def xattr_sets() -> SearchStrategy[dict[str, bytes]]:
    """A small set of ``user.``/``trusted.`` xattrs."""
    return st.dictionaries(st.sampled_from(["user.a", "user.b", "trusted.t"]), st.binary(max_size=8), max_size=2)


def _node(kind: str, draw: Any, key: str, link_targets: list[str]) -> Entry:
    if kind == "file":
        uid, gid = draw(owners())
        return File(draw(contents()), mode=draw(file_modes()), uid=uid, gid=gid,
                    mtime_ns=draw(st.sampled_from([0, 10**9, 1_500_000_000 * 10**9])), xattrs=draw(xattr_sets()))
    if kind == "dir":
        uid, gid = draw(owners())
        return Dir(mode=draw(dir_modes()), uid=uid, gid=gid, xattrs=draw(xattr_sets()))
    if kind == "opaque":
        uid, gid = draw(owners())
        return Dir(opaque=True, mode=draw(dir_modes()), uid=uid, gid=gid)
    if kind == "symlink":
        uid, gid = draw(owners())
        return Symlink(draw(st.sampled_from(["a", "../a", "/a/b", "b/c", "d", ".", "/", "..", "a/b/c/d"])),
                       uid=uid, gid=gid)
    if kind == "fifo":
        return Fifo()
    return WHITEOUT


@st.composite
def layers(draw: Any, /, max_entries: int = 8, max_depth: int = 3, alphabet: Sequence[str] = DEFAULT_NAMES,
           kinds: Sequence[str] = ("file", "file", "dir", "dir", "opaque", "symlink", "whiteout", "hardlink", "fifo"),
           root: bool = True) -> Layer:
    """A valid layer: files, dirs, opaque dirs, symlinks, whiteouts, hard links, FIFOs,
    with owners from :func:`owners` and modes from :func:`file_modes`/:func:`dir_modes`;
    with ``root``, half the layers also set the root directory's owner and mode.

    Entries below a non-directory of the same layer are dropped, so every draw is a
    layer ``Layer.from_dict`` accepts.
    """
    ks = draw(st.lists(keys(max_depth, alphabet), max_size=max_entries, unique=True))
    ks.sort(key=lambda k: k.split("/"))
    entries: dict[str, Entry] = {}
    for k in ks:
        if any(p in entries and not isinstance(entries[p], Dir) for p in parents(k)):
            continue
        kind = draw(st.sampled_from(list(kinds)))
        if kind == "hardlink":
            targets = [t for t, e in entries.items() if isinstance(e, File)]
            if not targets:
                kind = "file"
            else:
                entries[k] = entries[draw(st.sampled_from(targets))]
                continue
        entries[k] = _node(kind, draw, k, [])
    # a key that gained children must be a directory
    for k in list(entries):
        for p in parents(k):
            if p in entries and not isinstance(entries[p], Dir):
                entries[p] = Dir()
    if root and draw(st.booleans()):
        uid, gid = draw(owners())
        entries[""] = Dir(mode=draw(st.sampled_from([0o755, 0o1777, 0o777, 0o775, 0o2775, 0o711])), uid=uid, gid=gid)
    return Layer(entries)


@st.composite
def images(draw: Any, /, min_layers: int = 1, max_layers: int = 4, **layer_kwargs: Any) -> Image:
    """An image of 1..max_layers random layers (bottom first) and a small config."""
    ls = draw(st.lists(layers(**layer_kwargs), min_size=min_layers, max_size=max_layers))
    cmd = draw(st.sampled_from([None, ["sh"], ["python3", "-m", "http.server"]]))
    return Image.from_layers(ls, config=ImageConfig(cmd=cmd))


__all__ = ["GIDS", "UIDS", "contents", "dir_modes", "file_modes", "images", "keys", "layers", "modes", "names",
           "owners", "paths", "xattr_sets"]
