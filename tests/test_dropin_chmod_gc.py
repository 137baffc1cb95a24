"""Two of the drop-in's speed measures (issue 12): SETATTR of a mode copies up by the
node's Loc (``chmod_at``) and leaves model and upperdir exactly as ``chmod(path)`` does,
never with a Loc that lacks the parent chain a copy-up walks; and the drop-in's garbage
collector policy (``Collector``) freezes the heap yet still frees cyclic garbage, later."""

from __future__ import annotations

import gc
import os
import stat
import struct
import threading
import weakref
from pathlib import Path
from typing import Any

import unionfs_sim as ufs
from unionfs_sim.cli.fuse_overlayfs import Collector
from unionfs_sim.fuse import server as S
from unionfs_sim.fuse.writethrough import UpperDir, WriteThroughFS, read_upperdir
from unionfs_sim.lower import DiskLower
from unionfs_sim.overlay import Overlay

CTX = (0, 0, 1)


def _server(tmp_path: Path, name: str) -> tuple[S.Server, Path]:
    lo = tmp_path / "lower"
    if not lo.exists():
        ufs.Layer.from_dict({
            "a/": ufs.Dir(mode=0o750), "a/b/": ufs.Dir(mode=0o705, uid=7), "a/b/f": b"data", "a/b/g": b"gg",
            "a/b/l": ufs.Symlink("f"), "a/c": ufs.File(b"c", mode=0o4755),
        }).to_directory(lo)
    up, wk = tmp_path / f"{name}-u", tmp_path / f"{name}-w"
    up.mkdir()
    wk.mkdir()
    lower = DiskLower([str(lo)])
    ov = Overlay(lower)
    ov.load_upper(read_upperdir(str(up), lower))
    srv = S.Server(WriteThroughFS(ov, UpperDir(ov, str(up), str(wk))))
    srv._workers.add(threading.get_ident())  # as a request thread
    return srv, up


def _lookup(srv: S.Server, parent: Any, name: str) -> Any:
    out = srv._lookup(parent, memoryview(name.encode() + b"\0"), CTX)
    assert isinstance(out, bytes)
    return srv._nodes[struct.unpack_from("<Q", out)[0]]


def _chmod(srv: S.Server, node: Any, mode: int) -> bytes:
    body = S._SETATTR_IN.pack(S.FATTR_MODE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, mode, 0, 0, 0, 0)
    srv._names()  # what the request loop does first
    return srv._setattr(node, memoryview(body), CTX)


def _tree(up: Path) -> dict[str, tuple[int, int, int, bytes]]:
    out = {}
    for dirpath, dirs, files in os.walk(up):
        for n in dirs + files:
            p = Path(dirpath, n)
            st = p.lstat()
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            out[str(p.relative_to(up))] = (st.st_mode, st.st_uid, st.st_gid, data)
    return out


def test_chmod_by_loc_matches_chmod_by_path(tmp_path: Path) -> None:
    fast, fup = _server(tmp_path, "fast")
    slow, sup = _server(tmp_path, "slow")
    nodes = {}
    for srv in (fast, slow):
        root = srv._nodes[S.ROOT_ID]
        a = _lookup(srv, root, "a")
        b = _lookup(srv, a, "b")
        nodes[id(srv)] = (a, b, _lookup(srv, b, "f"), _lookup(srv, b, "g"), _lookup(srv, a, "c"))
    # The slow twin takes the path way only (as before chmod_at).
    slow._chained_loc = lambda node: None  # type: ignore[method-assign]
    taken = []
    orig = fast._chained_loc

    def spy(node: Any) -> Any:
        loc = orig(node)
        taken.append(loc is not None)
        return loc

    fast._chained_loc = spy  # type: ignore[method-assign]
    for i, mode in ((2, 0o600), (3, 0o640), (4, 0o755), (1, 0o700), (2, 0o4711)):
        for srv in (fast, slow):
            node = nodes[id(srv)][i]
            # Forget the Locs kept from LOOKUP: the server then resolves by path, as
            # after any change, and overlay.fast gives lower-only directories no chain.
            for n in nodes[id(srv)]:
                n.loc = None
            _chmod(srv, node, mode)
        assert _tree(fup) == _tree(sup)
        for k in ("a", "a/b", "a/b/f", "a/b/g", "a/c"):
            assert stat.S_IMODE(fast.fs.lstat("/" + k).st_mode) == stat.S_IMODE(slow.fs.lstat("/" + k).st_mode)
    # The first chmod finds a/b lower only, its Loc from overlay.fast (no parent): the
    # path way. Once a/b is upper its Loc needs no chain: the Loc way.
    assert taken[0] is False and any(taken[1:])
    assert stat.S_IMODE((fup / "a/b/f").lstat().st_mode) == 0o4711
    assert (fup / "a/c").lstat().st_mode & 0o7777 == 0o755


def test_chmod_at_refuses_a_symlink(tmp_path: Path) -> None:
    srv, _ = _server(tmp_path, "x")
    root = srv._nodes[S.ROOT_ID]
    b = _lookup(srv, _lookup(srv, root, "a"), "b")
    loc = srv.fs.lookup(srv._node_loc(b), "l")
    try:
        srv.fs.chmod_at(loc, 0o600)
    except OSError as e:
        assert e.errno == ufs.errors.NotSupported(None).errno
    else:
        raise AssertionError("chmod_at of a symlink did not refuse")


def test_collector_freezes_and_still_frees_cycles(tmp_path: Path) -> None:
    class Cyclic:
        other: Any = None

    c = Collector(thaw_every=3)
    c.install()
    try:
        assert gc.get_freeze_count() > 0  # the start-up heap is frozen
        x = Cyclic()
        x.other = x  # a cycle, alive now
        ref = weakref.ref(x)
        gc.collect()  # a full collection: x survives it and is frozen
        assert gc.get_freeze_count() > 0
        del x  # now cyclic garbage, but frozen
        gc.collect()
        frozen_kept = ref() is not None
        for _ in range(3):  # the next thaw is at most 3 full collections away
            gc.collect()
        assert frozen_kept, "a frozen cycle was collected at once: nothing was frozen"
        assert ref() is None, "cyclic garbage among frozen objects never freed"
    finally:
        c.uninstall()
    assert gc.get_freeze_count() == 0
    assert c._callback not in gc.callbacks
