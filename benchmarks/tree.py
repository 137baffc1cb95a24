"""Benchmark data: layered trees as plain Python data, and converters to each backend.

A *layer* here is a plain ``dict`` mapping a key (a path relative to the root, no
leading or trailing ``/``) to a value:

=========================  ==================================================
``bytes``                  a regular file, mode 0o644
``("file", data, mode)``   a regular file with another mode (setuid etc. kept)
``("symlink", target)``    a symbolic link
``("dir", mode)``          a directory (in an upper layer: merged with below)
``("opaque", mode)``       an opaque directory: hides everything below it
``WHITEOUT``               deletes the key (and its subtree) of the layers below
=========================  ==================================================

``("opaque",)`` (no mode) means mode 0o755.  Layers are listed bottom first.  Every
upper layer also carries a ``("dir", mode)`` entry for each parent directory of what it
changes, as a real OCI layer does.

Nothing here is timed, and nothing is cached on disk: :func:`host_image` reads the
host's files every time it is called, deterministically (sorted walk, fixed picks from
seeded ``random.Random`` over sorted lists), so two runs on one machine build the same
tree.

Converters (each imports its library only when called):

* :func:`to_ufs_layers` / :func:`to_ufs_image` -- ``unionfs_sim`` layers and image;
* :func:`to_memoryfs` -- one ``fs.memoryfs.MemoryFS`` holding the flattened tree;
* :func:`to_multifs_children` + :func:`make_multifs` -- one ``MemoryFS`` per layer
  under an ``fs.multifs.MultiFS``, with a fresh ``MemoryFS`` as ``write_fs`` on top;
* :func:`to_pyfakefs` -- a ``pyfakefs`` ``FakeFilesystem`` holding the flattened tree.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "WHITEOUT",
    "DeepStack",
    "HostTree",
    "WideImage",
    "deep_stack",
    "flatten",
    "host_image",
    "kind",
    "make_multifs",
    "to_memoryfs",
    "to_multifs_children",
    "to_pyfakefs",
    "to_ufs_image",
    "to_ufs_layers",
    "wide_image",
]


class _Whiteout:
    """The whiteout marker of the plain-data layers (one instance: :data:`WHITEOUT`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WHITEOUT"


WHITEOUT = _Whiteout()

#: Where the host tree comes from (sorted, walked in this order).
HOST_ROOTS = tuple(sorted(glob.glob("/usr/lib/python3*"))) + ("/usr/share",)

BIG_FILE = "opt/bench/big.bin"
CHURN_DIR = "tmp"


# --- values ---------------------------------------------------------------------------


def kind(value: Any) -> str:
    """``"f"``, ``"l"``, ``"d"``, ``"o"`` (opaque dir) or ``"w"`` (whiteout) for a value."""
    if value is WHITEOUT:
        return "w"
    if isinstance(value, (bytes, bytearray)):
        return "f"
    tag = value[0]
    return {"file": "f", "symlink": "l", "dir": "d", "opaque": "o"}[tag]


def file_data(value: Any) -> bytes:
    """The content of a regular-file value."""
    data = value[1] if isinstance(value, tuple) else value
    return data if type(data) is bytes else bytes(data)


def file_mode(value: Any) -> int:
    """The permission bits of a regular-file value."""
    return 0o644 if isinstance(value, (bytes, bytearray)) else value[2]


def dir_mode(value: Any) -> int:
    """The permission bits of a dir or opaque-dir value."""
    return value[1] if len(value) > 1 else 0o755


def _file(data: bytes, mode: int) -> Any:
    return data if mode == 0o644 else ("file", data, mode)


def _parents(k: str) -> Iterator[str]:
    """Proper ancestors of ``k``, outermost first (``"a/b/c"`` -> ``"a"``, ``"a/b"``)."""
    i = k.find("/")
    while i != -1:
        yield k[:i]
        i = k.find("/", i + 1)


# --- merging (the plain-data reference) ------------------------------------------------


def flatten(layers: list[dict[str, Any]], provider: dict[str, int] | None = None) -> dict[str, Any]:
    """The merged view of ``layers`` (bottom first) as one dict without whiteouts.

    Opaque dirs become ``("dir", mode)``.  If ``provider`` is given, it is filled with
    the index of the layer that provides each key of the result.
    """
    merged: dict[str, Any] = {}
    prov = provider if provider is not None else {}
    children: dict[str, set[str]] = {}  # dir key -> direct children keys present

    def drop(k: str) -> None:
        # Remove k and its subtree from merged.
        stack = [k]
        while stack:
            x = stack.pop()
            if x in merged:
                del merged[x]
                prov.pop(x, None)
                stack.extend(children.pop(x, ()))
        parent = k.rpartition("/")[0]
        children.get(parent, set()).discard(k)

    def put(k: str, v: Any, i: int) -> None:
        merged[k] = v
        prov[k] = i
        children.setdefault(k.rpartition("/")[0], set()).add(k)

    for i, layer in enumerate(layers):
        for k in sorted(layer):
            v = layer[k]
            t = kind(v)
            old = merged.get(k)
            if t == "w":
                if old is not None:
                    drop(k)
            elif t == "o":
                if old is not None:
                    drop(k)
                put(k, ("dir", dir_mode(v)), i)
            elif t == "d":
                if old is not None and kind(old) != "d":
                    drop(k)
                if k in merged:  # merged with the dir below; its metadata wins
                    merged[k] = ("dir", dir_mode(v))
                    prov[k] = i
                else:
                    put(k, ("dir", dir_mode(v)), i)
            else:
                if old is not None and kind(old) == "d":
                    drop(k)
                put(k, v, i)
    return merged


# --- workload 1: the host image ---------------------------------------------------------


@dataclass
class HostTree:
    """The 5-layer image of workload 1 and what the workloads need to know about it."""

    layers: list[dict[str, Any]]
    flat: dict[str, Any]  # merged view
    provider: dict[str, int]  # key -> layer index providing it
    big_file: str  # key of the big file (bottom layer)
    copyup: list[str]  # keys of regular files present only in layer 0
    churn_dir: str  # key of an existing (lower) directory for create/unlink churn
    stats: dict[str, Any] = field(default_factory=dict)


def _scan(limit: int) -> dict[str, Any]:
    """Read up to ``limit`` entries of :data:`HOST_ROOTS` (sorted depth-first walk)."""
    out: dict[str, Any] = {}
    count = 0

    def add_dir_chain(path: str) -> None:
        parts = path.strip("/").split("/")
        for n in range(1, len(parts) + 1):
            k = "/".join(parts[:n])
            if k not in out:
                out[k] = ("dir", stat.S_IMODE(os.lstat("/" + k).st_mode))

    def walk(path: str) -> bool:
        nonlocal count
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return True
        for e in entries:
            if count >= limit:
                return False
            try:
                e.name.encode("utf-8")
            except UnicodeEncodeError:
                continue  # not valid UTF-8: not every backend takes it
            k = e.path.lstrip("/")
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                out[k] = ("dir", mode)
                count += 1
                if not walk(e.path):
                    return False
            elif stat.S_ISLNK(st.st_mode):
                out[k] = ("symlink", os.readlink(e.path))
                count += 1
            elif stat.S_ISREG(st.st_mode):
                try:
                    with open(e.path, "rb") as f:
                        data = f.read(st.st_size)  # never more than the real size
                except OSError:
                    continue
                out[k] = _file(data, mode)
                count += 1
            # FIFOs, sockets and devices: skipped
        return True

    for root in HOST_ROOTS:
        if count >= limit or not os.path.isdir(root):
            continue
        add_dir_chain(root)
        if not walk(root):
            break
    return out


def _subtree_sizes(flat: dict[str, Any]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for k in flat:
        for p in _parents(k):
            sizes[p] = sizes.get(p, 0) + 1
    return sizes


def host_image(entries: int = 21_000, big_mib: int = 64, copyup: int = 1_000) -> HostTree:
    """Build the 5-layer image of workload 1 from the host's files.

    Layer 0: ``entries`` entries read from :data:`HOST_ROOTS` (plus their parent dirs,
    ``/tmp`` and a ``big_mib`` MiB file at :data:`BIG_FILE`).  Layers 1-4 each
    overwrite some files with new content, add files, whiteout some files and one or two
    whole directories; layer 3 also makes one directory opaque (and adds files in it).
    """
    base = _scan(entries)
    base[CHURN_DIR] = ("dir", 0o1777)
    base["opt"] = ("dir", 0o755)
    base["opt/bench"] = ("dir", 0o755)
    rng0 = random.Random(0)  # randbytes takes at most 255 MiB at once: 64 MiB pieces
    base[BIG_FILE] = b"".join(rng0.randbytes(min(64, big_mib - i) << 20) for i in range(0, big_mib, 64))
    layers = [base]

    scale = max(entries / 21_000, 0.05)
    n_over = max(5, round(150 * scale))
    n_add = max(5, round(150 * scale))
    n_del = max(5, round(100 * scale))
    n_deldirs = 2 if scale >= 0.5 else 1
    protected = {BIG_FILE, CHURN_DIR, "opt", "opt/bench"}
    totals = {"overwritten": 0, "added": 0, "deleted files": 0, "deleted dirs": 0, "opaque dirs": 0}

    for i in range(1, 5):
        rng = random.Random(1000 + i)
        provider: dict[str, int] = {}
        merged = flatten(layers, provider)
        keys = sorted(merged)
        sizes = _subtree_sizes(merged)
        layer: dict[str, Any] = {}
        excluded: list[str] = []  # subtrees that this layer deletes or makes opaque

        def inside(k: str, excluded: list[str] = excluded) -> bool:
            return any(k == x or k.startswith(x + "/") for x in excluded)

        def free_dir(k: str, excluded: list[str] = excluded) -> bool:
            # A dir to delete whole or make opaque: no overlap with what is excluded yet.
            return not inside(k) and not any(x.startswith(k + "/") for x in excluded)

        # Whole directories: whiteouts (and in layer 3 one opaque dir).
        cands = [
            k
            for k in keys
            if kind(merged[k]) == "d"
            and 5 <= sizes.get(k, 0) <= 60
            and k.count("/") >= 3
            and not any(p == k or p.startswith(k + "/") for p in protected)
        ]
        rng.shuffle(cands)
        picked = 0
        for k in cands:
            if picked == n_deldirs:
                break
            if free_dir(k):
                layer[k] = WHITEOUT
                excluded.append(k)
                picked += 1
        totals["deleted dirs"] += picked
        if i == 3:
            ocands = [
                k
                for k in keys
                if kind(merged[k]) == "d"
                and 10 <= sizes.get(k, 0) <= 100
                and k.count("/") >= 3
                and free_dir(k)
                and not any(p == k or p.startswith(k + "/") for p in protected)
            ]
            if ocands:
                k = ocands[rng.randrange(len(ocands))]
                layer[k] = ("opaque", dir_mode(merged[k]))
                excluded.append(k)
                for j in range(3):
                    layer[f"{k}/opaque-l{i}-{j}.txt"] = b"written in the opaque dir by layer %d\n" % i
                totals["opaque dirs"] += 1

        files = [k for k in keys if kind(merged[k]) == "f" and k not in protected and not inside(k)]
        links = [k for k in keys if kind(merged[k]) == "l" and not inside(k)]
        dirs = [k for k in keys if kind(merged[k]) == "d" and not inside(k) and k not in protected]

        # Overwrites: new content (same size class), same mode.
        over = rng.sample(files, min(n_over, len(files)))
        for k in over:
            old = merged[k]
            data = file_data(old)
            new = (b"[layer %d] " % i + data[::-1])[: max(len(data), 12)]
            layer[k] = _file(new, file_mode(old))
        totals["overwritten"] += len(over)

        # Deleted files and symlinks.
        taken = set(over)
        pool = [k for k in files + links if k not in taken]
        pool.sort()
        dels = rng.sample(pool, min(n_del, len(pool)))
        for k in dels:
            layer[k] = WHITEOUT
        totals["deleted files"] += len(dels)

        # Added files, in existing dirs, with the content of some real file.
        for j in range(n_add):
            d = dirs[rng.randrange(len(dirs))]
            src = merged[files[rng.randrange(len(files))]]
            layer[f"{d}/added-l{i}-{j:04d}.dat"] = file_data(src)
        totals["added"] += n_add

        # Parent dirs of every change, as real layers carry them.
        for k in list(layer):
            for p in _parents(k):
                if p not in layer:
                    layer[p] = ("dir", dir_mode(merged[p]))
        layers.append(layer)

    provider = {}
    flat = flatten(layers, provider)
    only0 = [k for k in sorted(flat) if provider[k] == 0 and kind(flat[k]) == "f" and k != BIG_FILE]
    step = max(1, len(only0) // copyup) if only0 else 1
    picks = only0[::step][:copyup]
    h = hashlib.sha256()
    for k in sorted(flat):
        v = flat[k]
        t = kind(v)
        h.update(f"{k}\0{t}\0{len(file_data(v)) if t == 'f' else v[1]}\n".encode("utf-8", "surrogateescape"))
    stats = {
        "fingerprint": h.hexdigest()[:12],
        "host entries": sum(1 for k in base if k not in (CHURN_DIR, "opt", "opt/bench", BIG_FILE)),
        "layer sizes": [len(layer) for layer in layers],
        "merged entries": len(flat),
        "bytes (merged files)": sum(len(file_data(v)) for v in flat.values() if kind(v) == "f"),
        **totals,
    }
    return HostTree(layers, flat, provider, BIG_FILE, picks, CHURN_DIR, stats)


# --- workload 2: deep stacks ------------------------------------------------------------


@dataclass
class DeepStack:
    layers: list[dict[str, Any]]
    probes: list[str]  # keys present only in the bottom layer


def deep_stack(n_layers: int, dirs: int = 20, files_per_dir: int = 50, per_upper: int = 3) -> DeepStack:
    """``n_layers`` layers: the bottom has ``dirs * files_per_dir`` files under usr/lib;
    each upper layer adds ``per_upper`` unrelated files in its own dir under var/lib."""
    bottom: dict[str, Any] = {"usr": ("dir", 0o755), "usr/lib": ("dir", 0o755)}
    probes = []
    for d in range(dirs):
        bottom[f"usr/lib/pkg{d:03d}"] = ("dir", 0o755)
        for f in range(files_per_dir):
            k = f"usr/lib/pkg{d:03d}/mod{f:03d}.py"
            bottom[k] = b"# module %d of package %d\n" % (f, d)
            probes.append(k)
    layers = [bottom]
    for j in range(1, n_layers):
        up: dict[str, Any] = {"var": ("dir", 0o755), "var/lib": ("dir", 0o755), f"var/lib/l{j:04d}": ("dir", 0o755)}
        for f in range(per_upper):
            up[f"var/lib/l{j:04d}/f{f}"] = b"layer %d file %d\n" % (j, f)
        layers.append(up)
    return DeepStack(layers, probes)


# --- workload 3: a wide image -----------------------------------------------------------


@dataclass
class WideImage:
    layers: list[dict[str, Any]]
    files: int


def wide_image(files: int = 50_000, n_layers: int = 5, per_dir: int = 100) -> WideImage:
    """An image of ``files`` small files spread over ``n_layers`` layers."""
    layers: list[dict[str, Any]] = []
    per_layer = -(-files // n_layers)
    n = 0
    for _li in range(n_layers):
        layer: dict[str, Any] = {"usr": ("dir", 0o755), "usr/share": ("dir", 0o755)}
        for _ in range(per_layer):
            if n == files:
                break
            d = f"usr/share/pkg{n // per_dir:05d}"
            layer.setdefault(d, ("dir", 0o755))
            layer[f"{d}/file{n % per_dir:03d}"] = b"%d\n" % n
            n += 1
        layers.append(layer)
    return WideImage(layers, files)


# --- converters -----------------------------------------------------------------------


def to_ufs_layers(layers: list[dict[str, Any]], ufs: Any) -> list[Any]:
    """``unionfs_sim.Layer`` objects for plain-data ``layers``."""
    out = []
    for layer in layers:
        spec: dict[str, Any] = {}
        for k, v in layer.items():
            t = kind(v)
            if t == "f":
                m = file_mode(v)
                spec[k] = file_data(v) if m == 0o644 else ufs.File(file_data(v), mode=m)
            elif t == "l":
                spec[k] = ufs.Symlink(v[1])
            elif t == "d":
                spec[k + "/"] = ufs.Dir(mode=dir_mode(v))
            elif t == "o":
                spec[k + "/"] = ufs.Dir(mode=dir_mode(v), opaque=True)
            else:
                spec[k] = ufs.WHITEOUT
        out.append(ufs.Layer.from_dict(spec))
    return out


def to_ufs_image(layers: list[dict[str, Any]], ufs: Any) -> Any:
    """A ``unionfs_sim.Image`` of plain-data ``layers`` (bottom first)."""
    return ufs.Image.from_layers(to_ufs_layers(layers, ufs))


def to_memoryfs(flat: dict[str, Any]) -> Any:
    """One ``MemoryFS`` holding ``flat``.  MemoryFS has no symlinks and keeps no
    permissions: a symlink becomes a regular file holding its target."""
    from fs.memoryfs import MemoryFS

    mem = MemoryFS()
    for k in sorted(flat):
        v = flat[k]
        t = kind(v)
        if t in ("d", "o"):
            mem.makedir(k, recreate=True)
        elif t == "f":
            mem.writebytes(k, file_data(v))
        elif t == "l":
            mem.writebytes(k, v[1].encode("utf-8", "surrogateescape"))
    return mem


def to_multifs_children(layers: list[dict[str, Any]]) -> list[Any]:
    """One ``MemoryFS`` per layer (bottom first), for :func:`make_multifs`.

    MultiFS has no whiteouts or opaque dirs: a whiteout or opaque dir of layer *i* is
    applied by deleting the path (or the opaque dir's contents) from the children below
    *i* at build time, so the merged view has the same entries as the image's.
    Symlinks become regular files holding their target (MemoryFS has no symlinks).
    """
    from fs.memoryfs import MemoryFS

    children: list[Any] = []
    below: set[str] = set()  # every key of the layers so far (to skip needless scans)
    for layer in layers:
        mem = MemoryFS()
        for k in sorted(layer):
            v = layer[k]
            t = kind(v)
            if t in ("w", "o"):
                for low in children if k in below else ():
                    if t == "w" and low.isdir(k):
                        low.removetree(k)
                    elif t == "w" and low.exists(k):
                        low.remove(k)
                    elif t == "o" and low.isdir(k):
                        for name in low.listdir(k):
                            p = f"{k}/{name}"
                            if low.isdir(p):
                                low.removetree(p)
                            else:
                                low.remove(p)
                if t == "o":
                    mem.makedirs(k, recreate=True)
            elif t == "d":
                mem.makedirs(k, recreate=True)
            else:
                parent = k.rpartition("/")[0]
                if parent:
                    mem.makedirs(parent, recreate=True)
                for low in children if k in below else ():  # a file replacing a dir below
                    if low.isdir(k):
                        low.removetree(k)
                data = file_data(v) if t == "f" else v[1].encode("utf-8", "surrogateescape")
                mem.writebytes(k, data)
        children.append(mem)
        below.update(layer)
    return children


def make_multifs(children: list[Any], write_fs: Any = None) -> Any:
    """A ``MultiFS`` over ``children`` (bottom first; they are shared, not copied) with
    ``write_fs`` (default: a fresh ``MemoryFS``) on top as the writable filesystem."""
    from fs.memoryfs import MemoryFS
    from fs.multifs import MultiFS

    multi = MultiFS(auto_close=False)
    for i, child in enumerate(children):
        multi.add_fs(f"layer{i}", child, priority=i)
    multi.add_fs("upper", write_fs if write_fs is not None else MemoryFS(), write=True, priority=len(children))
    return multi


def to_pyfakefs(flat: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``(FakeFilesystem, FakeOsModule, FakeFileOpen)`` holding ``flat`` (real modes)."""
    from pyfakefs import fake_filesystem, fake_os

    opener: Any
    try:
        from pyfakefs.fake_open import FakeFileOpen as opener
    except ImportError:  # pyfakefs < 5.2
        opener = fake_filesystem.FakeFileOpen  # type: ignore[attr-defined]

    ffs = fake_filesystem.FakeFilesystem(path_separator="/")
    for k in sorted(flat):
        v = flat[k]
        t = kind(v)
        p = "/" + k
        if t in ("d", "o"):
            ffs.create_dir(p, perm_bits=dir_mode(v), apply_umask=False)
        elif t == "f":
            ffs.create_file(p, st_mode=stat.S_IFREG | file_mode(v), contents=file_data(v), apply_umask=False)
        elif t == "l":
            ffs.create_symlink(p, v[1])
    return ffs, fake_os.FakeOsModule(ffs), opener(ffs)
