"""Images that exercise the analysis: whiteouts, opaque dirs, hard links, chmod-only changes,
duplicates, a one-layer image. Each builder gives a fresh Image; ``CATALOGUE`` names them."""

from __future__ import annotations

from collections.abc import Callable

import unionfs_sim as ufs
from unionfs_sim import WHITEOUT, Dir, File, Hardlink, Image, Layer, Symlink


def _img(*specs: dict[str, object], steps: tuple[str, ...] = ()) -> Image:
    layers = [Layer.from_dict(s) for s in specs]
    hist = [ufs.History(created_by=steps[i] if i < len(steps) else f"RUN step {i}") for i in range(len(layers))]
    return Image.from_layers(layers, history=hist)


def overwrite_chain() -> Image:
    """One file rewritten in three layers, another written once."""
    return _img({"app/": Dir(), "app/data": b"a" * 4000, "app/keep": b"k" * 100},
                {"app/data": b"b" * 3000}, {"app/data": b"c" * 5000})


def deletes() -> Image:
    """A file and a whole directory deleted by later layers."""
    return _img({"etc/": Dir(), "etc/a": b"a" * 1000, "etc/b": b"b" * 500, "usr/": Dir(), "usr/lib/": Dir(),
                 "usr/lib/big": b"z" * 3000, "usr/lib/small": b"q" * 10, "bin/sh": Symlink("busybox")},
                {"etc/b": WHITEOUT, "tmp/x": b"x" * 70},
                {"usr/lib": WHITEOUT})


def opaque_dir() -> Image:
    """A cache directory replaced wholesale by an opaque directory."""
    return _img({"var/": Dir(), "var/cache/": Dir(), "var/cache/one": b"1" * 800, "var/cache/two": b"2" * 900},
                {"var/cache/": Dir(opaque=True), "var/cache/new": b"n" * 50})


def hides_nothing() -> Image:
    """A whiteout that hides nothing stops dive scoring its layer (the rest goes unseen)."""
    return _img({"etc/": Dir(), "etc/a": b"x" * 1000, "etc/b": b"y" * 500, "var/cache/c1": b"c" * 700},
                {"etc/a": b"x" * 1200, "etc/b": WHITEOUT, "var/cache/": Dir(opaque=True), "var/cache/n": b"n" * 5,
                 "nothing": WHITEOUT, "zzz": b"1" * 50})


def hard_links() -> Image:
    """A hard-link group; a later layer overwrites one of its names, another layer links again."""
    return _img({"lib/": Dir(), "lib/libc.so.6": File(b"L" * 2000, mode=0o755),
                 "lib/libc.so": Hardlink("lib/libc.so.6"),
                 "lib/other": b"o" * 300},
                {"lib/libc.so": b"stub\n"},
                {"lib/other": b"o" * 300, "lib/other2": Hardlink("lib/other")})


def chmod_only() -> Image:
    """chmod of a big file: the whole file copied up with new mode bits only."""
    return _img({"opt/": Dir(), "opt/big.bin": File(b"B" * 20000, mode=0o644), "opt/small": b"s"},
                {"opt/big.bin": File(b"B" * 20000, mode=0o755)},
                steps=("ADD big.bin /opt/", "RUN chmod +x /opt/big.bin"))


def duplicate_layer() -> Image:
    """The same layer stacked twice (a COPY repeated after an unrelated step)."""
    same = Layer.from_dict({"srv/": Dir(), "srv/site.tar": b"T" * 6000, "srv/index.html": b"<html/>"})
    mid = Layer.from_dict({"etc/motd": b"hi\n"})
    return Image.from_layers([same, mid, same])


def one_layer() -> Image:
    """A single layer: nothing can be wasted (dive divides 0 by 0)."""
    return _img({"bin/": Dir(), "bin/tool": File(b"t" * 1234, mode=0o755), "bin/link": Symlink("tool")})


def base_whiteout() -> Image:
    """A whiteout in the bottom layer (hides nothing; dive stops scoring the base there)."""
    return _img({"a/": Dir(), "a/.keep": b"", "a/gone": WHITEOUT, "b/file": b"b" * 400},
                {"b/file": b"B" * 450})


def implied_parents() -> Image:
    """Directories only implied by a later layer, then deleted: dive sizes them as 0."""
    return _img({"usr/": Dir(), "usr/share/": Dir(), "usr/share/doc/": Dir(), "usr/share/doc/a": b"a" * 600},
                {"usr/share/doc/b": b"b" * 200},
                {"usr/share": WHITEOUT})


def many_files() -> Image:
    """Sixty files overwritten, most with equal sizes: dive's unstable sort decides their order."""
    base = {f"d/f{i:02d}": bytes([65 + i % 26]) * (100 * (i % 4 == 0) + 10) for i in range(60)}
    upper = {f"d/f{i:02d}": bytes([97 + i % 26]) * 10 for i in range(60)}
    return _img({"d/": Dir(), **base}, upper, {f"d/f{i:02d}": b"z" for i in range(0, 60, 7)})


def empty_dirs_and_links() -> Image:
    """Empty directories and symlinks repeated across layers (dive counts them, 0 bytes)."""
    return _img({"run/": Dir(), "run/lock/": Dir(), "bin/sh": Symlink("busybox"),
                 "bin/busybox": File(b"X" * 900, mode=0o755)},
                {"run/lock/": Dir(mode=0o1777), "bin/sh": Symlink("dash"), "bin/dash": File(b"D" * 300, mode=0o755)})


def scratch_file_deleted_same_step() -> Image:
    """A file created and deleted in later steps (dive PR #715's case, spread over layers)."""
    return _img({"w/": Dir(), "w/keep": b"k" * 10},
                {"w/tmp.tar.gz": b"G" * 9000},
                {"w/tmp.tar.gz": WHITEOUT, "w/out": b"o" * 100})


CATALOGUE: dict[str, Callable[[], Image]] = {f.__name__: f for f in (
    overwrite_chain, deletes, opaque_dir, hides_nothing, hard_links, chmod_only, duplicate_layer, one_layer,
    base_whiteout, implied_parents, many_files, empty_dirs_and_links, scratch_file_deleted_same_step)}
