"""One conformance suite for every backend of the os-style API (model, kernel, FUSE).

Written once, as pyfilesystem2's shared ``fs/test.py`` is, and run by a few lines per
backend: subclass :class:`OverlayConformance` together with ``unittest.TestCase`` (or
as a plain pytest class) and implement :meth:`~OverlayConformance.open_view`::

    class TestModel(OverlayConformance):
        @contextlib.contextmanager
        def open_view(self, layers, options):
            self.container = ufs.Image.from_layers(layers).container(options)
            yield self.container.fs

        def upper_of(self, fs):
            return self.container.upper

        def open_readonly_view(self, layers):
            return contextlib.nullcontext(ufs.Image.from_layers(layers).fs)

Every expectation here was checked against the Linux kernel's overlayfs (the oracle,
see :class:`~unionfs_sim.testing.KernelOverlay`): each test asserts an exact errno,
content, mode or type. Tests that look at the upper layer call :meth:`upper_of`; a
backend without one skips the remainder of those tests (``unittest.SkipTest``).

The expectations were taken from Linux 6.18; the few that depend on the kernel
version say so in their docstrings. Only the standard library and this package are
imported here (no pytest, no hypothesis), so any test runner can use it; under pytest,
``pytest.register_assert_rewrite("unionfs_sim.testing.conformance")`` before importing
it gives detailed assertion messages.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import unittest
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from typing import Any

from ..layer import Layer
from ..nodes import WHITEOUT, Device, Dir, Fifo, File, Hardlink, Symlink
from ..options import OverlayOptions

FS = Any
"""An os-style filesystem object (the model's FileSystem, KernelFS, ...)."""

LayerSpec = Layer | Mapping[str, Any]
"""A Layer, or the dict ``Layer.from_dict`` takes."""

XATTR_CREATE = getattr(os, "XATTR_CREATE", 1)
XATTR_REPLACE = getattr(os, "XATTR_REPLACE", 2)

T0 = 1_500_000_000_000_000_000
"""A fixed timestamp (ns) for layers whose times matter."""


# --- helpers -------------------------------------------------------------------------


def _ename(code: int | None) -> str:
    return errno.errorcode.get(code, str(code)) if code is not None else "None"


def _close_quietly(result: Any) -> None:
    close = getattr(result, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def assert_errno(err: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> OSError:
    """Call ``fn(*args, **kwargs)``; it must raise an OSError with errno ``err``.

    Returns the error. A call that succeeds is a failure (a file object it returned is
    closed first); so is an OSError with another errno.
    """
    what = f"{getattr(fn, '__name__', fn)}{args!r}"
    try:
        result = fn(*args, **kwargs)
    except OSError as e:
        if e.errno != err:
            raise AssertionError(f"{what} raised {_ename(e.errno)} ({e}), expected {_ename(err)}") from e
        return e
    _close_quietly(result)
    raise AssertionError(f"{what} returned {result!r}, expected {_ename(err)}")


_KINDS = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK, "fifo": stat.S_IFIFO,
          "chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "sock": stat.S_IFSOCK}


def _check_path(fs: FS, path: str, spec: Any) -> None:
    if spec is None:
        assert not fs.lexists(path), f"{path} exists, expected absent"
        return
    try:
        st = fs.lstat(path)
    except OSError as e:
        raise AssertionError(f"{path}: lstat failed with {_ename(e.errno)}, expected {spec!r}") from e
    fmt = stat.S_IFMT(st.st_mode)
    if isinstance(spec, str):
        assert fmt == _KINDS[spec], f"{path}: type {stat.filemode(st.st_mode)}, expected {spec}"
        return
    if isinstance(spec, bytes):
        assert fmt == stat.S_IFREG, f"{path}: type {stat.filemode(st.st_mode)}, expected a file"
        got = fs.read_bytes(path)
        assert got == spec, f"{path}: content {got!r}, expected {spec!r}"
        return
    node_fmt = spec.st_mode & 0o170000
    assert fmt == node_fmt, f"{path}: type {stat.filemode(st.st_mode)}, expected {stat.filemode(spec.st_mode)}"
    if isinstance(spec, Symlink):
        got_t = fs.readlink(path)
        assert got_t == spec.target, f"{path}: target {got_t!r}, expected {spec.target!r}"
    else:
        got_m = stat.S_IMODE(st.st_mode)
        assert got_m == spec.mode, f"{path}: mode {got_m:#o}, expected {spec.mode:#o}"
    assert (st.st_uid, st.st_gid) == (spec.uid, spec.gid), \
        f"{path}: owner {st.st_uid}:{st.st_gid}, expected {spec.uid}:{spec.gid}"
    if isinstance(spec, File):
        got = fs.read_bytes(path)
        assert got == spec.data, f"{path}: content {got!r}, expected {spec.data!r}"
    if isinstance(spec, Device):
        assert st.st_rdev == spec.rdev, f"{path}: rdev {st.st_rdev}, expected {spec.rdev}"
    if spec.xattrs and not isinstance(spec, Symlink):
        got_x = {n: fs.getxattr(path, n, follow_symlinks=False) for n in fs.listxattr(path, follow_symlinks=False)}
        assert got_x == dict(spec.xattrs), f"{path}: xattrs {got_x!r}, expected {dict(spec.xattrs)!r}"


def all_paths(fs: FS, top: str = "/") -> set[str]:
    """Every path below ``top`` in the view (not following symlinks)."""
    out: set[str] = set()
    for dirpath, dirs, files in fs.walk(top):
        for n in (*dirs, *files):
            out.add(dirpath.rstrip("/") + "/" + n)
    return out


def assert_tree(fs: FS, expected: Mapping[str, Any], *, exact_under: str | None = None) -> None:
    """Check paths of a view against ``expected``: ``{path: spec}``.

    A spec is ``None`` (absent), ``bytes`` (a regular file with that content), a type
    name ("dir", "file", "link", "fifo", "chr", "blk"), or a node: ``File`` (content,
    mode, owner, xattrs when given), ``Dir`` (mode, owner, xattrs when given),
    ``Symlink`` (target, owner), ``Fifo``/``Device`` (mode, owner, rdev).
    With ``exact_under``, the paths below that directory must be exactly the
    non-``None`` keys below it.
    """
    for path, spec in expected.items():
        _check_path(fs, path, spec)
    if exact_under is not None:
        prefix = exact_under.rstrip("/") + "/"
        want = {p for p, s in expected.items() if s is not None and p.startswith(prefix)}
        got = all_paths(fs, exact_under)
        assert got == want, f"below {exact_under}: extra {sorted(got - want)}, missing {sorted(want - got)}"


def upper_keys(upper: Mapping[str, Any]) -> set[str]:
    """The keys of an upper layer, without the root ``""`` (which backends differ on)."""
    return {k for k in upper if k != ""}


def fstat(f: Any) -> os.stat_result:
    """fstat(2) of an open file object of any backend (``fstat()`` or ``stat()``)."""
    method = getattr(f, "fstat", None) or getattr(f, "stat", None)
    if method is None:
        raise AssertionError(f"{f!r} has neither fstat() nor stat()")
    return method()  # type: ignore[no-any-return]


def mode_of(fs: FS, path: str) -> int:
    """The permission bits (with setuid/setgid/sticky) of ``path`` (not following)."""
    return stat.S_IMODE(fs.lstat(path).st_mode)


def names(fs: FS, path: str = "/") -> list[str]:
    """``listdir`` sorted (readdir order differs between backends)."""
    return sorted(fs.listdir(path))


def rm_r(fs: FS, path: str) -> None:
    """Remove a tree bottom-up, as ``rm -r`` does."""
    for dirpath, dirs, files in fs.walk(path, topdown=False):
        for n in files:
            fs.unlink(dirpath.rstrip("/") + "/" + n)
        for n in dirs:
            p = dirpath.rstrip("/") + "/" + n
            if fs.islink(p):
                fs.unlink(p)
            else:
                fs.rmdir(p)
    fs.rmdir(path)


# --- the suite -----------------------------------------------------------------------


class OverlayConformance:
    """Mixin of conformance tests; a backend implements :meth:`open_view` (and, for
    tests that look at the upper layer or at a read-only view, :meth:`upper_of` and
    :meth:`open_readonly_view`)."""

    # --- hooks ---------------------------------------------------------------------

    def open_view(self, layers: list[Layer], options: OverlayOptions) -> ContextManager[FS]:
        """A context manager yielding a read-write os-style fs over ``layers`` (bottom first)."""
        raise NotImplementedError

    def upper_of(self, fs: FS) -> Layer:
        """The upper layer of the view that yielded ``fs``, after that view was closed."""
        raise unittest.SkipTest(f"{type(self).__name__} has no upper_of(): upper-layer checks skipped")

    def open_readonly_view(self, layers: list[Layer]) -> ContextManager[FS]:
        """A context manager yielding the read-only merged view of ``layers`` (writes: EROFS)."""
        raise unittest.SkipTest(f"{type(self).__name__} has no open_readonly_view()")

    # --- conveniences --------------------------------------------------------------

    @contextlib.contextmanager
    def view(self, *layers: LayerSpec, **options: bool) -> Iterator[FS]:
        """``open_view`` with layers as dicts (bottom first) and options as keywords."""
        built = [x if isinstance(x, Layer) else Layer.from_dict(x) for x in layers]
        with self.open_view(built, OverlayOptions(**options)) as fs:
            yield fs

    @contextlib.contextmanager
    def readonly_view(self, *layers: LayerSpec) -> Iterator[FS]:
        """``open_readonly_view`` with layers given as dicts."""
        built = [x if isinstance(x, Layer) else Layer.from_dict(x) for x in layers]
        with self.open_readonly_view(built) as fs:
            yield fs

    # =================================================================================
    # merge: whiteouts, opaque directories, metadata of merged directories
    # =================================================================================

    def test_rm_r_of_lower_tree_leaves_one_whiteout(self) -> None:
        """rm -r of a lower tree: every name gone; the upper has one whiteout at the top."""
        base = {"a/x": b"x", "a/b/y": b"y", "a/b/c/z": b"z", "a/b/l": Symlink("y"), "keep": b"k"}
        with self.view(base) as fs:
            rm_r(fs, "/a")
            assert_tree(fs, {"/a": None, "/a/x": None, "/a/b": None, "/a/b/c/z": None, "/keep": b"k"})
            assert names(fs) == ["keep"]
            assert_errno(errno.ENOENT, fs.stat, "/a/b/y")
        up = self.upper_of(fs)
        assert upper_keys(up) == {"a"}, sorted(upper_keys(up))
        assert up["a"] is WHITEOUT

    def test_opaque_dir_hides_lower_children(self) -> None:
        """An opaque directory in a layer hides everything below it in deeper layers."""
        with self.view({"d/old": b"o", "d/sub/deep": b"d"}, {"d/": Dir(opaque=True), "d/new": b"n"}) as fs:
            assert names(fs, "/d") == ["new"]
            assert_errno(errno.ENOENT, fs.stat, "/d/old")
            assert_errno(errno.ENOENT, fs.stat, "/d/sub/deep")

    def test_opaque_dir_in_middle_layer_hides_only_deeper_layers(self) -> None:
        """An opaque dir in a middle layer: layers above it still merge in."""
        with self.view({"d/a": b"a"}, {"d/": Dir(opaque=True), "d/b": b"b"}, {"d/c": b"c"}) as fs:
            assert names(fs, "/d") == ["b", "c"]

    def test_opaque_empty_dir_lists_nothing(self) -> None:
        """An empty opaque dir over a full lower dir is empty."""
        with self.view({"d/a": b"a", "d/e/": Dir()}, {"d/": Dir(opaque=True, mode=0o700)}) as fs:
            assert names(fs, "/d") == []
            assert mode_of(fs, "/d") == 0o700

    def test_rmdir_then_mkdir_gives_opaque_dir(self) -> None:
        """rmdir + mkdir of a lower dir: the old children never reappear; upper dir is opaque."""
        base = {"d/x": b"x", "d/sub/y": b"y"}
        with self.view(base) as fs:
            rm_r(fs, "/d")
            fs.mkdir("/d")
            assert names(fs, "/d") == []
            fs.write_bytes("/d/new", b"n")
            assert names(fs, "/d") == ["new"]
            assert_errno(errno.ENOENT, fs.stat, "/d/x")
            assert_errno(errno.ENOENT, fs.stat, "/d/sub")
        up = self.upper_of(fs)
        assert isinstance(up["d"], Dir) and up["d"].opaque
        assert upper_keys(up) == {"d", "d/new"}, sorted(upper_keys(up))

    def test_mkdir_over_whited_out_file_is_opaque(self) -> None:
        """A dir created where a lower file was deleted is opaque (the kernel always marks it)."""
        with self.view({"f": b"file"}) as fs:
            fs.unlink("/f")
            fs.mkdir("/f")
            assert names(fs, "/f") == []
            assert fs.isdir("/f")
        up = self.upper_of(fs)
        assert isinstance(up["f"], Dir) and up["f"].opaque

    def test_readdir_merges_three_layers_with_whiteouts(self) -> None:
        """readdir of a dir merged from 3 layers, with whiteouts in between."""
        l0 = {"d/a": b"a0", "d/b": b"b0", "d/c": b"c0"}
        l1 = {"d/b": WHITEOUT, "d/d": b"d1"}
        l2 = {"d/c": WHITEOUT, "d/e": b"e2", "d/b": b"b2"}
        with self.view(l0, l1, l2) as fs:
            assert names(fs, "/d") == ["a", "b", "d", "e"]
            assert_tree(fs, {"/d/a": b"a0", "/d/b": b"b2", "/d/c": None, "/d/d": b"d1", "/d/e": b"e2"},
                        exact_under="/d")
            assert sorted(e.name for e in fs.scandir("/d")) == ["a", "b", "d", "e"]

    def test_whiteout_in_middle_layer_hides_only_deeper(self) -> None:
        """A middle-layer whiteout hides the bottom file but not the top layer's new one."""
        with self.view({"f": b"0", "g": b"0"}, {"f": WHITEOUT, "g": WHITEOUT}, {"f": b"2"}) as fs:
            assert fs.read_bytes("/f") == b"2"
            assert not fs.lexists("/g")
            assert names(fs) == ["f"]

    def test_dir_whiteout_in_middle_then_dir_on_top(self) -> None:
        """A whited-out dir recreated in a higher layer does not merge the deeper one."""
        with self.view({"d/old": b"o"}, {"d": WHITEOUT}, {"d/new": b"n"}) as fs:
            assert names(fs, "/d") == ["new"]

    def test_non_dir_in_middle_layer_cuts_the_merge(self) -> None:
        """A file in a middle layer: the dir below it is not merged into the dir above it."""
        with self.view({"d/a": b"a"}, {"d": b"file"}, {"d/b": b"b"}) as fs:
            assert names(fs, "/d") == ["b"]
            assert_errno(errno.ENOENT, fs.stat, "/d/a")

    def test_non_dir_in_top_layer_hides_lower_dir(self) -> None:
        """A file over a lower dir is a file; its 'children' are ENOTDIR."""
        with self.view({"d/a": b"a"}, {"d": b"file"}) as fs:
            assert fs.read_bytes("/d") == b"file"
            assert_errno(errno.ENOTDIR, fs.stat, "/d/a")
            assert_errno(errno.ENOTDIR, fs.listdir, "/d")

    def test_symlink_in_top_layer_hides_lower_dir(self) -> None:
        """A symlink over a lower dir hides the dir (non-dirs are always opaque)."""
        with self.view({"d/a": b"a", "t/b": b"b"}, {"d": Symlink("t")}) as fs:
            assert fs.readlink("/d") == "t"
            assert names(fs, "/d") == ["b"]

    def test_merged_dir_takes_top_dir_metadata(self) -> None:
        """A merged dir's mode/owner/xattrs are the topmost dir's; lower ones are hidden."""
        low = {"d/": Dir(mode=0o700, uid=1, gid=2, xattrs={"user.low": b"1"}), "d/x": b"x"}
        top = {"d/": Dir(mode=0o751, uid=5, gid=6, xattrs={"user.top": b"2"}), "d/y": b"y"}
        with self.view(low, top) as fs:
            assert_tree(fs, {"/d": Dir(mode=0o751, uid=5, gid=6, xattrs={"user.top": b"2"})})
            assert sorted(fs.listxattr("/d")) == ["user.top"]
            assert_errno(errno.ENODATA, fs.getxattr, "/d", "user.low")
            assert names(fs, "/d") == ["x", "y"]

    def test_implicit_parents_keep_lower_metadata(self) -> None:
        """A layer without an entry for a parent dir keeps the lower dir's metadata."""
        low = {"a/": Dir(mode=0o700, uid=7, gid=8)}
        top = {"a/b/c": b"c"}
        with self.view(low, top) as fs:
            assert_tree(fs, {"/a": Dir(mode=0o700, uid=7, gid=8), "/a/b": "dir", "/a/b/c": b"c"})
            assert names(fs, "/a") == ["b"]

    def test_implicit_parents_without_lower_are_plain_dirs(self) -> None:
        """Parents nobody declares are directories 0o755 owned by root."""
        with self.view({"p/q/r": b"r"}) as fs:
            assert_tree(fs, {"/p": Dir(mode=0o755), "/p/q": Dir(mode=0o755), "/p/q/r": b"r"})

    def test_special_files_of_a_lower_layer(self) -> None:
        """FIFOs, devices and symlinks of a layer appear with their type, mode and rdev."""
        with self.view({"run/fifo": Fifo(mode=0o600), "dev/null": Device("c", 1, 3, mode=0o666),
                        "dev/sda": Device("b", 8, 0, mode=0o660, gid=6), "lnk": Symlink("dev/null")}) as fs:
            assert_tree(fs, {"/run/fifo": Fifo(mode=0o600), "/dev/null": Device("c", 1, 3, mode=0o666),
                             "/dev/sda": Device("b", 8, 0, mode=0o660, gid=6), "/lnk": Symlink("dev/null")})
            assert stat.S_ISCHR(fs.stat("/lnk").st_mode)

    def test_unlink_lower_file_then_recreate(self) -> None:
        """Creating a file at a whited-out name replaces the whiteout."""
        with self.view({"d/f": b"old"}) as fs:
            fs.unlink("/d/f")
            assert not fs.lexists("/d/f")
            fs.write_bytes("/d/f", b"new")
            assert fs.read_bytes("/d/f") == b"new"
        up = self.upper_of(fs)
        assert isinstance(up["d/f"], File) and up["d/f"].data == b"new"

    def test_unlink_upper_only_file_leaves_no_whiteout(self) -> None:
        """Removing a name only the upper has leaves nothing behind."""
        with self.view({"d/": Dir()}) as fs:
            fs.write_bytes("/d/tmp", b"t")
            fs.unlink("/d/tmp")
            assert names(fs, "/d") == []
        up = self.upper_of(fs)
        assert "d/tmp" not in up

    def test_unlink_lower_file_leaves_whiteout(self) -> None:
        """Removing a lower file leaves a whiteout (and the copied-up parent)."""
        with self.view({"d/f": b"f", "d/g": b"g"}) as fs:
            fs.unlink("/d/f")
            assert names(fs, "/d") == ["g"]
        up = self.upper_of(fs)
        assert upper_keys(up) == {"d", "d/f"} and up["d/f"] is WHITEOUT

    def test_whiteout_matches_full_path_not_basename(self) -> None:
        """A whiteout hides only the same path, not the same name in other dirs."""
        with self.view({"a/test": b"a", "b/test": b"b", "test": b"t"}, {"a/test": WHITEOUT}) as fs:
            assert_tree(fs, {"/a/test": None, "/b/test": b"b", "/test": b"t"})

    def test_nested_recreation_stays_empty(self) -> None:
        """rm -r of a lower tree, then mkdir -p of the same path: every level is empty."""
        with self.view({"a/x": b"x", "a/b/y": b"y", "a/b/c/z": b"z"}) as fs:
            rm_r(fs, "/a")
            fs.makedirs("/a/b/c")
            assert names(fs, "/a") == ["b"] and names(fs, "/a/b") == ["c"] and names(fs, "/a/b/c") == []
        up = self.upper_of(fs)
        assert upper_keys(up) == {"a", "a/b", "a/b/c"}, sorted(upper_keys(up))
        assert isinstance(up["a"], Dir) and up["a"].opaque

    def test_symlink_at_whited_out_name(self) -> None:
        """A symlink created where a lower dir was removed replaces the whiteout."""
        with self.view({"d/x": b"x", "t": b"t"}) as fs:
            rm_r(fs, "/d")
            fs.symlink("t", "/d")
            assert fs.read_bytes("/d") == b"t"
        up = self.upper_of(fs)
        assert isinstance(up["d"], Symlink) and up["d"].target == "t"
        assert upper_keys(up) == {"d"}

    # =================================================================================
    # copy-up
    # =================================================================================

    def test_write_copies_up_content_and_metadata(self) -> None:
        """Writing a lower file: new content, same mode/owner/xattrs; parents copied up too."""
        base = Layer.from_dict({
            "d/": Dir(mode=0o750, uid=3, gid=4, xattrs={"user.dir": b"D"}),
            "d/f": File(b"old", mode=0o640, uid=5, gid=6, xattrs={"user.x": b"1"}),
            "d/other": b"o",
        })
        with self.view(base) as fs:
            fs.write_bytes("/d/f", b"new")
            assert_tree(fs, {"/d/f": File(b"new", mode=0o640, uid=5, gid=6, xattrs={"user.x": b"1"}),
                             "/d": Dir(mode=0o750, uid=3, gid=4, xattrs={"user.dir": b"D"}),
                             "/d/other": b"o"})
        up = self.upper_of(fs)
        # the lower layer is untouched, and a new view of it shows the old content
        assert isinstance(base["d/f"], File) and base["d/f"].data == b"old"
        with self.view(base) as fs2:
            assert fs2.read_bytes("/d/f") == b"old"
        assert upper_keys(up) == {"d", "d/f"}, sorted(upper_keys(up))
        d, f = up["d"], up["d/f"]
        assert isinstance(d, Dir) and (d.mode, d.uid, d.gid, dict(d.xattrs)) == (0o750, 3, 4, {"user.dir": b"D"})
        assert not d.opaque
        assert isinstance(f, File) and (f.data, f.mode, f.uid, f.gid) == (b"new", 0o640, 5, 6)
        assert dict(f.xattrs) == {"user.x": b"1"}

    def test_copy_up_copies_whole_parent_chain(self) -> None:
        """Copy-up of a deep file copies each parent with its metadata, not its siblings."""
        base = {"a/": Dir(mode=0o711, uid=1), "a/b/": Dir(mode=0o750, gid=9), "a/b/c/f": b"f",
                "a/sib": b"s", "a/b/sib2": b"s2"}
        with self.view(base) as fs:
            fs.chmod("/a/b/c/f", 0o600)
        up = self.upper_of(fs)
        assert upper_keys(up) == {"a", "a/b", "a/b/c", "a/b/c/f"}, sorted(upper_keys(up))
        a, b = up["a"], up["a/b"]
        assert isinstance(a, Dir) and (a.mode, a.uid, a.gid) == (0o711, 1, 0)
        assert isinstance(b, Dir) and (b.mode, b.uid, b.gid) == (0o750, 0, 9)
        f = up["a/b/c/f"]
        assert isinstance(f, File) and f.data == b"f" and f.mode == 0o600

    def test_append_copies_up(self) -> None:
        """Appending to a lower file copies it up and writes at its end."""
        with self.view({"f": b"abc"}) as fs:
            with fs.open("/f", "ab") as f:
                f.write(b"def")
            assert fs.read_bytes("/f") == b"abcdef"
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and up["f"].data == b"abcdef"

    def test_truncate_copies_up(self) -> None:
        """truncate() of a lower file copies it up, then cuts it."""
        with self.view({"f": File(b"abcdef", mode=0o600)}) as fs:
            fs.truncate("/f", 2)
            assert_tree(fs, {"/f": File(b"ab", mode=0o600)})
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and up["f"].data == b"ab"

    def test_chmod_copies_up_with_data(self) -> None:
        """chmod of a lower file: the upper copy has the new mode and the old data."""
        with self.view({"f": File(b"data", mode=0o644)}) as fs:
            fs.chmod("/f", 0o700)
            assert_tree(fs, {"/f": File(b"data", mode=0o700)})
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and (up["f"].mode, up["f"].data) == (0o700, b"data")

    def test_chown_copies_up(self) -> None:
        """chown of a lower file copies it up with the new owner."""
        with self.view({"f": b"data"}) as fs:
            fs.chown("/f", 1000, 1001)
            assert_tree(fs, {"/f": File(b"data", uid=1000, gid=1001)})
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and (up["f"].uid, up["f"].gid) == (1000, 1001)

    def test_chown_minus_one_keeps_id(self) -> None:
        """chown with -1 leaves that id unchanged."""
        with self.view({"f": File(b"x", uid=3, gid=4)}) as fs:
            fs.chown("/f", -1, 9)
            st = fs.stat("/f")
            assert (st.st_uid, st.st_gid) == (3, 9)

    def test_utime_copies_up(self) -> None:
        """utime of a lower file copies it up with the given times."""
        with self.view({"f": File(b"data", mtime_ns=T0)}) as fs:
            assert fs.stat("/f").st_mtime_ns == T0
            fs.utime("/f", ns=(T0 + 5, T0 + 7))
            st = fs.stat("/f")
            assert (st.st_atime_ns, st.st_mtime_ns) == (T0 + 5, T0 + 7)
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and up["f"].mtime_ns == T0 + 7

    def test_setxattr_copies_up(self) -> None:
        """setxattr on a lower file copies it up, keeping the old xattrs."""
        with self.view({"f": File(b"data", xattrs={"user.a": b"1"})}) as fs:
            fs.setxattr("/f", "user.b", b"2")
            assert sorted(fs.listxattr("/f")) == ["user.a", "user.b"]
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and dict(up["f"].xattrs) == {"user.a": b"1", "user.b": b"2"}

    def test_removexattr_copies_up(self) -> None:
        """removexattr on a lower file copies it up without that xattr."""
        with self.view({"f": File(b"data", xattrs={"user.a": b"1", "user.b": b"2"})}) as fs:
            fs.removexattr("/f", "user.a")
            assert fs.listxattr("/f") == ["user.b"]
            assert_errno(errno.ENODATA, fs.getxattr, "/f", "user.a")
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and dict(up["f"].xattrs) == {"user.b": b"2"}

    def test_read_only_access_does_not_copy_up(self) -> None:
        """Reading, stat, listdir, readlink, getxattr, O_RDONLY opens: the upper stays empty."""
        base = {"d/f": File(b"data", xattrs={"user.a": b"1"}), "d/l": Symlink("f"), "d/e/": Dir()}
        with self.view(base) as fs:
            assert fs.read_bytes("/d/f") == b"data"
            with fs.open("/d/f", "rb") as f:
                assert f.read() == b"data"
            with fs.os_open("/d/f", os.O_RDONLY) as f:
                assert f.read(2) == b"da"
            assert fs.read_bytes("/d/l") == b"data"
            fs.stat("/d/f")
            fs.lstat("/d/l")
            assert fs.readlink("/d/l") == "f"
            assert fs.getxattr("/d/f", "user.a") == b"1"
            assert names(fs, "/d") == ["e", "f", "l"]
            list(fs.walk("/"))
        up = self.upper_of(fs)
        assert upper_keys(up) == set(), sorted(upper_keys(up))

    def test_open_for_write_copies_up_even_without_writing(self) -> None:
        """Opening a lower file for writing copies it up, even if nothing is written."""
        with self.view({"d/f": b"data"}) as fs, fs.os_open("/d/f", os.O_WRONLY):
            pass
        up = self.upper_of(fs)
        assert upper_keys(up) == {"d", "d/f"} and isinstance(up["d/f"], File) and up["d/f"].data == b"data"

    def test_symlink_creation_does_not_copy_up_target(self) -> None:
        """Creating a symlink to a lower file leaves the file in the lower layer."""
        with self.view({"d/f": b"data"}) as fs:
            fs.symlink("/d/f", "/lnk")
            fs.symlink("../d/f", "/lnk2")
            assert fs.read_bytes("/lnk") == b"data"
            assert fs.readlink("/lnk2") == "../d/f"
        up = self.upper_of(fs)
        assert upper_keys(up) == {"lnk", "lnk2"}, sorted(upper_keys(up))
        assert isinstance(up["lnk"], Symlink) and up["lnk"].target == "/d/f"

    def test_link_copies_up_source(self) -> None:
        """link() of a lower file copies the source up; both names are one upper file."""
        with self.view({"d/f": File(b"data", mode=0o600)}) as fs:
            fs.link("/d/f", "/d/g")
            st_f, st_g = fs.stat("/d/f"), fs.stat("/d/g")
            assert st_f.st_ino == st_g.st_ino and st_f.st_nlink == st_g.st_nlink == 2
            fs.write_bytes("/d/g", b"changed")
            assert fs.read_bytes("/d/f") == b"changed"
        up = self.upper_of(fs)
        assert upper_keys(up) == {"d", "d/f", "d/g"}
        assert up["d/f"] is up["d/g"] and isinstance(up["d/f"], File) and up["d/f"].mode == 0o600

    def test_dir_chmod_copies_up_only_the_dir(self) -> None:
        """chmod of a lower dir copies up that dir alone; children stay in the lower layer."""
        with self.view({"d/x": b"x", "d/sub/y": b"y"}) as fs:
            fs.chmod("/d", 0o700)
            assert mode_of(fs, "/d") == 0o700
            assert names(fs, "/d") == ["sub", "x"]
            assert fs.read_bytes("/d/sub/y") == b"y"
        up = self.upper_of(fs)
        assert upper_keys(up) == {"d"}, sorted(upper_keys(up))
        d = up["d"]
        assert isinstance(d, Dir) and d.mode == 0o700 and not d.opaque

    def test_new_file_in_lower_dir_copies_up_parent(self) -> None:
        """Creating a file in a lower dir copies up the dir (not opaque, with its metadata)."""
        with self.view({"d/": Dir(mode=0o711, uid=2), "d/old": b"o"}) as fs:
            fs.write_bytes("/d/new", b"n")
            assert names(fs, "/d") == ["new", "old"]
            assert_tree(fs, {"/d": Dir(mode=0o711, uid=2)})
        up = self.upper_of(fs)
        assert upper_keys(up) == {"d", "d/new"}
        d = up["d"]
        assert isinstance(d, Dir) and (d.mode, d.uid, d.opaque) == (0o711, 2, False)

    def test_copy_up_of_special_files(self) -> None:
        """chmod of a lower FIFO or device copies it up as the same kind of node."""
        with self.view({"p": Fifo(mode=0o644), "c": Device("c", 1, 5, mode=0o666)}) as fs:
            fs.chmod("/p", 0o600)
            fs.chmod("/c", 0o600)
            assert_tree(fs, {"/p": Fifo(mode=0o600), "/c": Device("c", 1, 5, mode=0o600)})
        up = self.upper_of(fs)
        assert isinstance(up["p"], Fifo) and up["p"].mode == 0o600
        c = up["c"]
        assert isinstance(c, Device) and (c.dev, c.major, c.minor, c.mode) == ("c", 1, 5, 0o600)

    def test_copy_up_keeps_mtimes(self) -> None:
        """Metadata copy-up keeps the mtime of the file, its parent dir and a symlink."""
        t = 1_500_000_000_123_456_789
        with self.view({"d/": Dir(mtime_ns=t), "d/f": File(b"x", mtime_ns=t), "l": Symlink("d", mtime_ns=t)}) as fs:
            fs.chmod("/d/f", 0o600)
            fs.lchown("/l", 1, 1)
            assert [fs.lstat(p).st_mtime_ns for p in ("/d", "/d/f", "/l")] == [t, t, t]
            ctime = fs.stat("/d/f").st_ctime_ns
            assert ctime != t
            fs.unlink("/d/f")
            assert fs.stat("/d").st_mtime_ns != t

    def test_lchown_of_lower_symlink_copies_up_link(self) -> None:
        """lchown of a lower symlink copies up the link, not its target."""
        with self.view({"f": b"data", "l": Symlink("f")}) as fs:
            fs.lchown("/l", 5, 6)
            assert (fs.lstat("/l").st_uid, fs.stat("/l").st_uid) == (5, 0)
        up = self.upper_of(fs)
        assert upper_keys(up) == {"l"}
        assert isinstance(up["l"], Symlink) and (up["l"].target, up["l"].uid, up["l"].gid) == ("f", 5, 6)

    # =================================================================================
    # rename
    # =================================================================================

    def test_rename_lower_file_onto_existing_lower_file(self) -> None:
        """rename onto an existing file replaces it; the old lower name gets a whiteout."""
        with self.view({"a": b"A", "b": b"B"}) as fs:
            fs.rename("/a", "/b")
            assert_tree(fs, {"/a": None, "/b": b"A"})
        up = self.upper_of(fs)
        assert upper_keys(up) == {"a", "b"} and up["a"] is WHITEOUT
        assert isinstance(up["b"], File) and up["b"].data == b"A"

    def test_rename_lower_file_to_new_name(self) -> None:
        """rename of a lower file: the upper has the new name and a whiteout at the old one."""
        with self.view({"d/a": File(b"A", mode=0o600, uid=4)}) as fs:
            fs.rename("/d/a", "/d/c")
            assert_tree(fs, {"/d/a": None, "/d/c": File(b"A", mode=0o600, uid=4)}, exact_under="/d")
        up = self.upper_of(fs)
        assert upper_keys(up) == {"d", "d/a", "d/c"} and up["d/a"] is WHITEOUT
        assert isinstance(up["d/c"], File) and up["d/c"].data == b"A"

    def test_rename_lower_file_into_other_lower_dir(self) -> None:
        """rename across lower dirs copies up both parents."""
        with self.view({"x/f": b"F", "y/": Dir(mode=0o700)}) as fs:
            fs.rename("/x/f", "/y/g")
            assert names(fs, "/x") == [] and names(fs, "/y") == ["g"]
        up = self.upper_of(fs)
        assert upper_keys(up) == {"x", "x/f", "y", "y/g"} and up["x/f"] is WHITEOUT
        assert isinstance(up["y"], Dir) and up["y"].mode == 0o700

    def test_rename_lower_file_over_whiteout(self) -> None:
        """rename of a lower file onto a whited-out name: file there, whiteout at the source."""
        with self.view({"a": b"A", "b": b"B"}) as fs:
            fs.unlink("/b")
            fs.rename("/a", "/b")
            assert_tree(fs, {"/a": None, "/b": b"A"})
        up = self.upper_of(fs)
        assert upper_keys(up) == {"a", "b"} and up["a"] is WHITEOUT
        assert isinstance(up["b"], File) and up["b"].data == b"A"

    def test_rename_upper_file_leaves_no_whiteout(self) -> None:
        """rename of an upper-only file is a plain rename."""
        with self.view({"d/": Dir()}) as fs:
            fs.write_bytes("/d/n", b"N")
            fs.rename("/d/n", "/d/m")
            assert names(fs, "/d") == ["m"]
        up = self.upper_of(fs)
        assert upper_keys(up) == {"d", "d/m"}

    def test_rename_upper_file_onto_lower_file(self) -> None:
        """An upper file renamed over a lower one replaces it; no whiteout at the source."""
        with self.view({"b": b"B"}) as fs:
            fs.write_bytes("/a", b"A")
            fs.replace("/a", "/b")
            assert_tree(fs, {"/a": None, "/b": b"A"})
        up = self.upper_of(fs)
        assert upper_keys(up) == {"b"}

    def test_rename_lower_dir_without_redirect_is_exdev(self) -> None:
        """Renaming a lower (or merged) dir without redirect_dir fails with EXDEV."""
        with self.view({"d/x": b"x"}) as fs:
            assert_errno(errno.EXDEV, fs.rename, "/d", "/e")
            fs.write_bytes("/d/y", b"y")  # now merged
            assert_errno(errno.EXDEV, fs.rename, "/d", "/e")
            assert names(fs, "/d") == ["x", "y"] and not fs.lexists("/e")

    def test_rename_lower_dir_with_redirect(self) -> None:
        """redirect_dir=on: the dir moves with its lower contents; upper has redirect + whiteout."""
        with self.view({"d/x": b"x", "d/sub/y": b"y", "other": b"o"}, redirect_dir=True) as fs:
            fs.rename("/d", "/e")
            assert_tree(fs, {"/d": None, "/e/x": b"x", "/e/sub": "dir", "/e/sub/y": b"y"}, exact_under="/e")
            assert names(fs) == ["e", "other"]
            fs.write_bytes("/e/z", b"z")
            assert names(fs, "/e") == ["sub", "x", "z"]
        up = self.upper_of(fs)
        assert up["d"] is WHITEOUT
        e = up["e"]
        assert isinstance(e, Dir) and e.redirect == "d", e
        assert upper_keys(up) == {"d", "e", "e/z"}, sorted(upper_keys(up))

    def test_rename_lower_dir_with_redirect_into_other_dir(self) -> None:
        """redirect_dir=on: moving a lower dir under another dir (absolute redirect)."""
        with self.view({"a/d/x": b"x", "b/": Dir()}, redirect_dir=True) as fs:
            fs.rename("/a/d", "/b/e")
            assert names(fs, "/a") == [] and names(fs, "/b/e") == ["x"]
        up = self.upper_of(fs)
        e = up["b/e"]
        assert isinstance(e, Dir) and e.redirect == "a/d", e
        assert up["a/d"] is WHITEOUT

    def test_rename_redirected_dir_twice(self) -> None:
        """A redirected dir renamed again still shows the original lower contents."""
        with self.view({"d/x": b"x"}, redirect_dir=True) as fs:
            fs.rename("/d", "/e")
            fs.rename("/e", "/f")
            assert names(fs) == ["f"] and names(fs, "/f") == ["x"]
        up = self.upper_of(fs)
        f = up["f"]
        assert isinstance(f, Dir) and f.redirect == "d"
        assert "e" not in up

    def test_redirect_swap_of_two_lower_dirs(self) -> None:
        """redirect_dir=on: swapping two lower dirs through a temporary name."""
        with self.view({"a/x": b"x", "b/y": b"y"}, redirect_dir=True) as fs:
            fs.rename("/a", "/t")
            fs.rename("/b", "/a")
            fs.rename("/t", "/b")
            assert (names(fs, "/a"), names(fs, "/b")) == (["y"], ["x"])
            assert fs.read_bytes("/a/y") == b"y"

    def test_redirect_of_subdir_then_parent(self) -> None:
        """redirect_dir=on: moving a subdir out, then renaming its old parent."""
        with self.view({"a/x": b"x", "a/sub/y": b"y"}, redirect_dir=True) as fs:
            fs.rename("/a/sub", "/sub2")
            fs.rename("/a", "/b")
            assert (names(fs, "/b"), names(fs, "/sub2")) == (["x"], ["y"])

    def test_redirected_dir_then_recreated_old_name(self) -> None:
        """redirect_dir=on: a new dir at the old name of a moved dir is empty."""
        with self.view({"d/x": b"x"}, redirect_dir=True) as fs:
            fs.rename("/d", "/e")
            fs.mkdir("/d")
            assert (names(fs, "/d"), names(fs, "/e")) == ([], ["x"])

    def test_rename_pure_upper_dir_without_redirect(self) -> None:
        """A dir only the upper has renames without redirect_dir."""
        with self.view({"keep": b"k"}) as fs:
            fs.makedirs("/n/sub")
            fs.write_bytes("/n/sub/f", b"f")
            fs.rename("/n", "/m")
            assert_tree(fs, {"/n": None, "/m/sub/f": b"f"})
        up = self.upper_of(fs)
        assert upper_keys(up) == {"m", "m/sub", "m/sub/f"}

    def test_rename_dir_into_own_subdir_is_einval(self) -> None:
        """A dir cannot move below itself (EINVAL), whether upper or lower."""
        with self.view({"low/sub/": Dir()}) as fs:
            fs.makedirs("/a/b")
            assert_errno(errno.EINVAL, fs.rename, "/a", "/a/b/c")
            assert_errno(errno.EINVAL, fs.rename, "/low", "/low/sub/x")

    def test_rename_onto_ancestor_is_enotempty(self) -> None:
        """A dir renamed onto its own ancestor: ENOTEMPTY."""
        with self.view({}) as fs:
            fs.makedirs("/a/b")
            assert_errno(errno.ENOTEMPTY, fs.rename, "/a/b", "/a")

    def test_rename_onto_non_empty_dir_is_enotempty(self) -> None:
        """rename of a dir onto a non-empty dir (upper or lower): ENOTEMPTY."""
        with self.view({"low/f": b"f"}) as fs:
            fs.mkdir("/a")
            fs.makedirs("/b/c")
            assert_errno(errno.ENOTEMPTY, fs.rename, "/a", "/b")
            assert_errno(errno.ENOTEMPTY, fs.rename, "/a", "/low")

    def test_rename_onto_empty_dir_replaces_it(self) -> None:
        """rename of a dir onto an empty dir replaces it."""
        with self.view({}) as fs:
            fs.makedirs("/a/x")
            fs.mkdir("/b")
            fs.rename("/a", "/b")
            assert names(fs) == ["b"] and names(fs, "/b") == ["x"]

    def test_rename_dir_onto_file_is_enotdir(self) -> None:
        """A dir renamed onto a file: ENOTDIR."""
        with self.view({"f": b"f", "low/": Dir()}) as fs:
            fs.mkdir("/d")
            assert_errno(errno.ENOTDIR, fs.rename, "/d", "/f")
            assert_errno(errno.ENOTDIR, fs.rename, "/low", "/f")

    def test_rename_file_onto_dir_is_eisdir(self) -> None:
        """A file renamed onto a dir: EISDIR."""
        with self.view({"f": b"f", "low/": Dir()}) as fs:
            fs.mkdir("/d")
            assert_errno(errno.EISDIR, fs.rename, "/f", "/d")
            assert_errno(errno.EISDIR, fs.rename, "/f", "/low")

    def test_rename_to_itself_is_a_noop(self) -> None:
        """rename(x, x) succeeds and changes nothing (no copy-up)."""
        with self.view({"f": b"f", "d/": Dir()}) as fs:
            fs.rename("/f", "/f")
            fs.rename("/d", "/d")
            assert fs.read_bytes("/f") == b"f"
        up = self.upper_of(fs)
        assert upper_keys(up) == set()

    def test_rename_missing_source_is_enoent(self) -> None:
        """rename of a missing name: ENOENT; into a missing dir: ENOENT."""
        with self.view({"f": b"f"}) as fs:
            assert_errno(errno.ENOENT, fs.rename, "/nope", "/x")
            assert_errno(errno.ENOENT, fs.rename, "/f", "/nodir/x")

    def test_rename_between_lower_hard_links_without_index(self) -> None:
        """Without index, two names of a lower hard link are two inodes: rename replaces."""
        with self.view({"a": b"x", "b": Hardlink("a")}) as fs:
            fs.rename("/a", "/b")
            assert names(fs) == ["b"] and fs.read_bytes("/b") == b"x"

    def test_rename_between_lower_hard_links_with_index(self) -> None:
        """With index, two names of a lower hard link are one inode: rename is a no-op."""
        with self.view({"a": b"x", "b": Hardlink("a")}, index=True) as fs:
            fs.rename("/a", "/b")
            assert names(fs) == ["a", "b"]

    def test_rename_one_name_of_lower_hard_link(self) -> None:
        """rename of one name of a lower hard-link pair to a new name (index off and on)."""
        for index in (False, True):
            with self.view({"a": b"x", "b": Hardlink("a")}, index=index) as fs:
                fs.rename("/a", "/c")
                assert names(fs) == ["b", "c"]
                fs.write_bytes("/c", b"new")
                assert fs.read_bytes("/b") == (b"new" if index else b"x"), index

    # =================================================================================
    # renameat2: RENAME_EXCHANGE and RENAME_NOREPLACE (fs.rename(..., exchange=/noreplace=))
    # =================================================================================

    supports_renameat2 = True
    """False for a backend that cannot pass renameat2's flags on (e.g. libfuse2's protocol)."""

    def _renameat2(self) -> None:
        if not self.supports_renameat2:
            raise unittest.SkipTest(f"{type(self).__name__} cannot pass renameat2 flags on")

    def test_exchange_two_lower_files(self) -> None:
        """RENAME_EXCHANGE of two lower files: contents swap; both copied up, no whiteout."""
        self._renameat2()
        with self.view({"a": File(b"A", mode=0o600), "d/b": File(b"B", mode=0o640)}) as fs:
            fs.rename("/a", "/d/b", exchange=True)
            assert_tree(fs, {"/a": File(b"B", mode=0o640), "/d/b": File(b"A", mode=0o600)})
            assert names(fs) == ["a", "d"] and names(fs, "/d") == ["b"]
        up = self.upper_of(fs)
        assert upper_keys(up) == {"a", "d", "d/b"}, sorted(upper_keys(up))
        assert isinstance(up["a"], File) and up["a"].data == b"B"

    def test_exchange_file_and_upper_dir_across_parents(self) -> None:
        """A file and a directory swap (types may differ); the parents' st_nlink follow."""
        self._renameat2()
        with self.view({"keep": b"k"}) as fs:
            fs.makedirs("/p1/sub/x")
            fs.mkdir("/p2")
            fs.write_bytes("/p2/f", b"F")
            n1, n2 = fs.stat("/p1").st_nlink, fs.stat("/p2").st_nlink
            fs.rename("/p1/sub", "/p2/f", exchange=True)
            assert fs.read_bytes("/p1/sub") == b"F" and names(fs, "/p2/f") == ["x"]
            assert (fs.stat("/p1").st_nlink, fs.stat("/p2").st_nlink) == (n1 - 1, n2 + 1)

    def test_exchange_lower_dir_needs_redirect_dir(self) -> None:
        """Without redirect_dir, a directory with lower content cannot be exchanged: EXDEV."""
        self._renameat2()
        with self.view({"d/x": b"x", "f": b"f"}) as fs:
            assert_errno(errno.EXDEV, fs.rename, "/d", "/f", exchange=True)
            assert_errno(errno.EXDEV, fs.rename, "/f", "/d", exchange=True)
            assert names(fs, "/d") == ["x"] and fs.read_bytes("/f") == b"f"

    def test_exchange_two_lower_dirs_with_redirect(self) -> None:
        """redirect_dir=on: two lower dirs swap with their lower contents (both redirected)."""
        self._renameat2()
        with self.view({"a/x": b"x", "b/y": b"y", "b/sub/z": b"z"}, redirect_dir=True) as fs:
            fs.rename("/a", "/b", exchange=True)
            assert (names(fs, "/a"), names(fs, "/b")) == (["sub", "y"], ["x"])
            assert fs.read_bytes("/a/sub/z") == b"z"
            fs.write_bytes("/b/new", b"n")
            assert names(fs, "/b") == ["new", "x"]
        up = self.upper_of(fs)
        a, b = up["a"], up["b"]
        assert isinstance(a, Dir) and isinstance(b, Dir)
        assert (a.redirect, b.redirect) == ("b", "a"), (a.redirect, b.redirect)

    def test_exchange_pure_upper_dir_into_merged_name_becomes_opaque(self) -> None:
        """A dir of a pure upper parent (so not opaque) swapped with a merged one: it becomes
        opaque, so the lower names at its new place stay hidden."""
        self._renameat2()
        with self.view({"d/low": b"l"}, redirect_dir=True) as fs:
            fs.makedirs("/u/n")
            fs.write_bytes("/u/n/mine", b"m")
            fs.rename("/u/n", "/d", exchange=True)
            assert names(fs, "/d") == ["mine"] and names(fs, "/u/n") == ["low"]
        up = self.upper_of(fs)
        d, n = up["d"], up["u/n"]
        assert isinstance(d, Dir) and d.opaque
        assert isinstance(n, Dir) and n.redirect == "d", n

    def test_exchange_errors(self) -> None:
        """RENAME_EXCHANGE: ENOENT without a target, EINVAL with an ancestor or with NOREPLACE,
        ENOTDIR for a file named with a trailing slash."""
        self._renameat2()
        with self.view({"d/sub/f": b"f", "g": b"g"}, redirect_dir=True) as fs:
            assert_errno(errno.ENOENT, fs.rename, "/g", "/nope", exchange=True)
            assert_errno(errno.ENOENT, fs.rename, "/nope", "/g", exchange=True)
            assert_errno(errno.EINVAL, fs.rename, "/d", "/d/sub", exchange=True)
            assert_errno(errno.EINVAL, fs.rename, "/d/sub", "/d", exchange=True)
            assert_errno(errno.ENOTDIR, fs.rename, "/d", "/g/", exchange=True)
            assert_errno(errno.ENOTDIR, fs.rename, "/g/", "/d", exchange=True)
            assert_errno(errno.EINVAL, fs.rename, "/g", "/d", exchange=True, noreplace=True)
            assert names(fs) == ["d", "g"] and names(fs, "/d/sub") == ["f"]
        up = self.upper_of(fs)
        assert upper_keys(up) == set(), sorted(upper_keys(up))

    def test_exchange_names_of_one_inode_is_a_noop(self) -> None:
        """Two names of one upper inode (a hard link): exchange succeeds and changes nothing."""
        self._renameat2()
        with self.view({"keep": b"k"}) as fs:
            fs.write_bytes("/a", b"A")
            fs.link("/a", "/b")
            fs.rename("/a", "/b", exchange=True)
            assert names(fs) == ["a", "b", "keep"] and fs.stat("/a").st_nlink == 2

    def test_noreplace(self) -> None:
        """RENAME_NOREPLACE: EEXIST onto any existing name (also a lower one); else a rename."""
        self._renameat2()
        with self.view({"a": b"A", "b": b"B", "d/": Dir()}) as fs:
            assert_errno(errno.EEXIST, fs.rename, "/a", "/b", noreplace=True)
            assert_errno(errno.EEXIST, fs.rename, "/a", "/d", noreplace=True)
            fs.unlink("/b")
            fs.rename("/a", "/b", noreplace=True)
            assert_tree(fs, {"/a": None, "/b": b"A"})

    def test_exchange_on_readonly_view_is_erofs(self) -> None:
        """The read-only view refuses RENAME_EXCHANGE with EROFS."""
        self._renameat2()
        with self.readonly_view({"a": b"A", "b": b"B"}) as fs:
            assert_errno(errno.EROFS, fs.rename, "/a", "/b", exchange=True)

    # =================================================================================
    # hard links
    # =================================================================================

    def test_lower_hard_link_pair_is_one_inode(self) -> None:
        """A lower hard-link pair: same st_ino, st_nlink 2."""
        with self.view({"f": b"one", "g": Hardlink("f")}) as fs:
            sf, sg = fs.stat("/f"), fs.stat("/g")
            assert sf.st_nlink == sg.st_nlink == 2
            assert sf.st_ino == sg.st_ino

    def test_write_through_lower_hard_link_without_index_breaks_it(self) -> None:
        """Without index, copy-up of one name breaks the link: the other keeps the old data."""
        with self.view({"f": b"one", "g": Hardlink("f")}) as fs:
            fs.write_bytes("/f", b"two")
            assert fs.read_bytes("/f") == b"two"
            assert fs.read_bytes("/g") == b"one"
            assert fs.stat("/f").st_nlink == 1
            assert fs.stat("/f").st_ino != fs.stat("/g").st_ino
        up = self.upper_of(fs)
        assert upper_keys(up) == {"f"}

    def test_write_through_lower_hard_link_with_index_keeps_it(self) -> None:
        """With index, both names of a lower hard link show the new data."""
        with self.view({"f": b"one", "g": Hardlink("f")}, index=True) as fs:
            fs.write_bytes("/f", b"two")
            assert fs.read_bytes("/g") == b"two"
            sf, sg = fs.stat("/f"), fs.stat("/g")
            assert sf.st_nlink == sg.st_nlink == 2
            assert sf.st_ino == sg.st_ino
            fs.write_bytes("/g", b"three")
            assert fs.read_bytes("/f") == b"three"

    def test_unlink_one_name_of_lower_hard_link_with_index(self) -> None:
        """With index, unlinking one name of a copied-up lower link leaves nlink 1."""
        with self.view({"f": b"one", "g": Hardlink("f")}, index=True) as fs:
            fs.write_bytes("/f", b"two")
            fs.unlink("/g")
            assert fs.stat("/f").st_nlink == 1
            assert fs.read_bytes("/f") == b"two"

    def test_xattr_through_indexed_alias_stays_out_of_upper_dir(self) -> None:
        """index=on: an xattr set through a name not copied up changes the shared inode in
        place (ovl_xattr_set copies up only an inode with no upper); chmod links it up."""
        with self.view({"f": b"x", "g": Hardlink("f")}, index=True) as fs:
            fs.setxattr("/g", "user.a", b"1")
            fs.setxattr("/f", "user.b", b"2")
            assert fs.getxattr("/f", "user.a") == b"1" and fs.getxattr("/g", "user.b") == b"2"
        up = self.upper_of(fs)
        assert upper_keys(up) == {"g"}, sorted(upper_keys(up))
        with self.view({"f": b"x", "g": Hardlink("f")}, index=True) as fs:
            fs.setxattr("/g", "user.a", b"1")
            fs.chmod("/f", 0o600)
            assert stat.S_IMODE(fs.stat("/g").st_mode) == 0o600
        assert upper_keys(self.upper_of(fs)) == {"f", "g"}

    def test_rename_onto_an_ancestor_of_the_source_is_enotempty(self) -> None:
        """rename(a/b/f, a): the target is the "trap" ancestor, ENOTEMPTY even for a file."""
        with self.view({"a/b/f": b"x"}) as fs:
            assert_errno(errno.ENOTEMPTY, fs.rename, "/a/b/f", "/a")
            assert_errno(errno.EINVAL, fs.rename, "/a", "/a/b/c")

    def test_unlink_one_name_of_lower_hard_link_with_index_drops_nlink(self) -> None:
        """With index, unlinking one name of a lower link pair (no copy-up) leaves nlink 1."""
        with self.view({"f": b"one", "g": Hardlink("f")}, index=True) as fs:
            fs.unlink("/g")
            assert fs.stat("/f").st_nlink == 1
            assert fs.read_bytes("/f") == b"one"

    def test_unlink_one_name_of_lower_hard_link_without_index_keeps_lower_nlink(self) -> None:
        """Without index, the other name of a lower link pair still reports the lower nlink."""
        with self.view({"f": b"one", "g": Hardlink("f")}) as fs:
            fs.unlink("/g")
            assert fs.stat("/f").st_nlink == 2

    def test_link_to_lower_hard_link_counts_all_names(self) -> None:
        """link() to one name of a lower pair: nlink is 2 per inode without index, 3 with."""
        for index, want in ((False, (2, 2, 2)), (True, (3, 3, 3))):
            with self.view({"f": b"x", "g": Hardlink("f")}, index=index) as fs:
                fs.link("/f", "/h")
                got = tuple(fs.stat(p).st_nlink for p in ("/f", "/h", "/g"))
                assert got == want, (index, got)

    def test_read_fd_on_other_name_follows_indexed_copy_up(self) -> None:
        """index=on: a read fd on one name of a lower link sees data written via the other name."""
        with self.view({"f": b"old", "g": Hardlink("f")}, index=True) as fs, fs.os_open("/g", os.O_RDONLY) as r:
            fs.write_bytes("/f", b"new!")
            assert r.read() == b"new!"

    def test_read_fd_on_other_name_without_index_keeps_old_data(self) -> None:
        """index=off: a read fd on one name of a lower link keeps the old data."""
        with self.view({"f": b"old", "g": Hardlink("f")}) as fs, fs.os_open("/g", os.O_RDONLY) as r:
            fs.write_bytes("/f", b"new!")
            assert r.read() == b"old"

    def test_chmod_through_one_name_of_lower_hard_link(self) -> None:
        """chmod of one name of a lower pair: the other name follows only with index."""
        for index, want in ((False, 0o644), (True, 0o600)):
            with self.view({"f": b"x", "g": Hardlink("f")}, index=index) as fs:
                fs.chmod("/f", 0o600)
                assert mode_of(fs, "/g") == want, index

    def test_link_of_upper_file(self) -> None:
        """link() of an upper file: nlink 2 on both names; unlink brings it back to 1."""
        with self.view({}) as fs:
            fs.write_bytes("/a", b"A")
            fs.link("/a", "/b")
            assert fs.stat("/a").st_nlink == 2 and fs.stat("/a").st_ino == fs.stat("/b").st_ino
            fs.unlink("/a")
            assert fs.stat("/b").st_nlink == 1 and fs.read_bytes("/b") == b"A"

    def test_link_of_dir_is_eperm(self) -> None:
        """link() of a directory: EPERM (upper or lower)."""
        with self.view({"low/": Dir()}) as fs:
            fs.mkdir("/d")
            assert_errno(errno.EPERM, fs.link, "/d", "/d2")
            assert_errno(errno.EPERM, fs.link, "/low", "/low2")

    def test_link_errors(self) -> None:
        """link() onto an existing name: EEXIST; of a missing name: ENOENT."""
        with self.view({"a": b"a", "b": b"b"}) as fs:
            assert_errno(errno.EEXIST, fs.link, "/a", "/b")
            assert_errno(errno.ENOENT, fs.link, "/nope", "/c")

    def test_link_of_symlink_links_the_symlink(self) -> None:
        """link() of a symlink makes a second name for the link itself."""
        with self.view({"f": b"data", "l": Symlink("f")}) as fs:
            fs.link("/l", "/l2")
            assert fs.readlink("/l2") == "f"
            assert fs.lstat("/l").st_nlink == 2

    def test_st_ino_persists_across_copy_up(self) -> None:
        """A lower file keeps its st_ino when copied up (layers on one filesystem)."""
        with self.view({"f": b"data", "d/": Dir()}) as fs:
            ino_f, ino_d = fs.stat("/f").st_ino, fs.stat("/d").st_ino
            fs.write_bytes("/f", b"new")
            fs.chmod("/d", 0o700)
            assert (fs.stat("/f").st_ino, fs.stat("/d").st_ino) == (ino_f, ino_d)

    def test_st_dev_is_uniform(self) -> None:
        """Every object of the view reports the same st_dev, lower or upper."""
        with self.view({"f": b"f", "d/g": b"g", "l": Symlink("f")}, {"d/h": b"h"}) as fs:
            fs.write_bytes("/new", b"n")
            devs = {fs.lstat(p).st_dev for p in ("/", "/f", "/d", "/d/g", "/d/h", "/l", "/new")}
            assert len(devs) == 1, devs

    def test_d_ino_matches_st_ino(self) -> None:
        """scandir's inode() equals lstat's st_ino for lower, merged and upper entries."""
        with self.view({"d/f": b"f", "d/s/": Dir(), "d/l": Symlink("f")}, {"d/g": b"g"}) as fs:
            fs.write_bytes("/d/new", b"n")
            for e in fs.scandir("/d"):
                assert e.inode() == fs.lstat(e.path).st_ino, e.name

    def test_metacopy_keeps_data_visible(self) -> None:
        """metacopy=on: chmod copies metadata only; reads still give the lower data."""
        with self.view({"f": File(b"lower data", mode=0o644)}, metacopy=True) as fs:
            fs.chmod("/f", 0o600)
            assert_tree(fs, {"/f": File(b"lower data", mode=0o600)})
            with fs.os_open("/f", os.O_WRONLY | os.O_APPEND) as f:
                f.write(b"+")
            assert fs.read_bytes("/f") == b"lower data+"
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and (up["f"].data, up["f"].mode) == (b"lower data+", 0o600)

    # =================================================================================
    # path resolution
    # =================================================================================

    def test_symlink_loop_is_eloop(self) -> None:
        """a -> b, b -> a: ELOOP; lstat still works."""
        with self.view({"a": Symlink("b"), "b": Symlink("a")}) as fs:
            assert_errno(errno.ELOOP, fs.stat, "/a")
            assert_errno(errno.ELOOP, fs.read_bytes, "/b")
            assert_errno(errno.ELOOP, fs.write_bytes, "/a", b"x")
            assert stat.S_ISLNK(fs.lstat("/a").st_mode)

    def test_self_symlink_is_eloop(self) -> None:
        """A link to itself: ELOOP, also as a middle component."""
        with self.view({"s": Symlink("s"), "abs": Symlink("/abs")}) as fs:
            assert_errno(errno.ELOOP, fs.stat, "/s")
            assert_errno(errno.ELOOP, fs.stat, "/abs")
            assert_errno(errno.ELOOP, fs.stat, "/s/x")

    def test_forty_symlinks_ok_forty_one_eloop(self) -> None:
        """Following 40 links resolves; 41 gives ELOOP."""
        spec: dict[str, Any] = {"target": b"end"}
        for i in range(1, 41):
            spec[f"s{i}"] = Symlink(f"s{i + 1}" if i < 40 else "target")
        spec["s0"] = Symlink("s1")
        with self.view(spec) as fs:
            assert fs.read_bytes("/s1") == b"end"  # 40 links
            assert_errno(errno.ELOOP, fs.read_bytes, "/s0")  # 41 links
            assert_errno(errno.ELOOP, fs.stat, "/s0")

    def test_dotdot_after_symlink_is_physical(self) -> None:
        """a/link/.. where link -> x/y resolves to x, not a."""
        base = {"x/y/": Dir(), "x/in_x": b"x", "a/in_a": b"a", "a/link": Symlink("../x/y"),
                "a/abslink": Symlink("/x/y")}
        with self.view(base) as fs:
            assert names(fs, "/a/link/..") == ["in_x", "y"]
            assert names(fs, "/a/abslink/..") == ["in_x", "y"]
            assert fs.read_bytes("/a/link/../in_x") == b"x"

    def test_dotdot_at_root_stays_at_root(self) -> None:
        """`..` at `/` stays at `/`."""
        with self.view({"etc/f": b"f"}) as fs:
            assert names(fs, "/..") == ["etc"]
            assert fs.read_bytes("/../../etc/../../etc/f") == b"f"
            assert fs.stat("/..").st_ino == fs.stat("/").st_ino

    def test_absolute_symlink_resolves_inside_root(self) -> None:
        """An absolute symlink target is taken from the view's root, not the host's."""
        base = {"etc/hostname": b"inside\n", "l": Symlink("/etc/hostname"), "up": Symlink("../../../etc/hostname"),
                "r": Symlink("/")}
        with self.view(base) as fs:
            assert fs.read_bytes("/l") == b"inside\n"
            assert fs.read_bytes("/up") == b"inside\n"
            assert names(fs, "/r") == ["etc", "l", "r", "up"]
            assert fs.read_bytes("/r/r/r/etc/hostname") == b"inside\n"

    def test_symlink_to_dir_as_middle_component(self) -> None:
        """A symlink to a dir used as a path component: creates land in the target dir."""
        with self.view({"d/": Dir(), "ld": Symlink("d")}) as fs:
            fs.write_bytes("/ld/new", b"n")
            assert names(fs, "/d") == ["new"]
            assert fs.isdir("/ld") and fs.islink("/ld")

    def test_write_through_dangling_relative_symlink_creates_target(self) -> None:
        """O_CREAT through a dangling relative symlink creates its target."""
        with self.view({"d/l": Symlink("created")}) as fs:
            fs.write_bytes("/d/l", b"via link")
            assert_tree(fs, {"/d/created": b"via link", "/d/l": Symlink("created")})

    def test_write_through_dangling_absolute_symlink_creates_target(self) -> None:
        """O_CREAT through a dangling absolute symlink creates the target inside the root."""
        with self.view({"d/": Dir(), "l": Symlink("/d/abs")}) as fs:
            fs.write_bytes("/l", b"abs")
            assert fs.read_bytes("/d/abs") == b"abs"

    def test_dangling_symlink_to_missing_dir_is_enoent(self) -> None:
        """O_CREAT through a link into a missing dir: ENOENT."""
        with self.view({"l": Symlink("/nodir/x")}) as fs:
            assert_errno(errno.ENOENT, fs.write_bytes, "/l", b"x")
            assert_errno(errno.ENOENT, fs.stat, "/l")

    def test_o_excl_on_dangling_symlink_is_eexist(self) -> None:
        """O_CREAT|O_EXCL does not follow a final symlink: EEXIST even when dangling."""
        with self.view({"l": Symlink("nothing")}) as fs:
            assert_errno(errno.EEXIST, fs.os_open, "/l", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            assert not fs.lexists("/nothing")

    def test_o_nofollow_on_symlink_is_eloop(self) -> None:
        """O_NOFOLLOW on a final symlink: ELOOP."""
        with self.view({"f": b"f", "l": Symlink("f")}) as fs:
            assert_errno(errno.ELOOP, fs.os_open, "/l", os.O_RDONLY | os.O_NOFOLLOW)
            with fs.os_open("/f", os.O_RDONLY | os.O_NOFOLLOW) as f:
                assert f.read() == b"f"

    def test_o_directory_on_file_is_enotdir(self) -> None:
        """O_DIRECTORY on a file: ENOTDIR."""
        with self.view({"f": b"f"}) as fs:
            assert_errno(errno.ENOTDIR, fs.os_open, "/f", os.O_RDONLY | os.O_DIRECTORY)

    def test_name_length_limits(self) -> None:
        """A 255-byte name is fine; 256 bytes is ENAMETOOLONG (lookup and create)."""
        ok, long = "a" * 255, "b" * 256
        with self.view({}) as fs:
            fs.write_bytes("/" + ok, b"ok")
            assert fs.read_bytes("/" + ok) == b"ok"
            fs.mkdir("/d" + "c" * 254)
            assert_errno(errno.ENAMETOOLONG, fs.stat, "/" + long)
            assert_errno(errno.ENAMETOOLONG, fs.write_bytes, "/" + long, b"x")
            assert_errno(errno.ENAMETOOLONG, fs.mkdir, "/" + long)
            assert_errno(errno.ENAMETOOLONG, fs.symlink, "x", "/" + long)

    def test_path_length_limit(self) -> None:
        """A path of 4096 bytes is ENAMETOOLONG; 4095 bytes is looked up (ENOENT)."""
        with self.view({}) as fs:
            p4096 = "/" + "a/" * 2047 + "a"
            p4095 = "/" + "a/" * 2047
            assert len(p4096) == 4096 and len(p4095) == 4095
            assert_errno(errno.ENAMETOOLONG, fs.stat, p4096)
            assert_errno(errno.ENOENT, fs.stat, p4095)
            assert_errno(errno.ENAMETOOLONG, fs.write_bytes, "/" + "x" * 100 + "/.." * 1332, b"x")

    def test_trailing_slash_on_file_is_enotdir(self) -> None:
        """A trailing slash on a file: ENOTDIR (stat, open, unlink, rename)."""
        with self.view({"f": b"f"}) as fs:
            assert_errno(errno.ENOTDIR, fs.stat, "/f/")
            assert_errno(errno.ENOTDIR, fs.os_open, "/f/", os.O_RDONLY)
            assert_errno(errno.ENOTDIR, fs.unlink, "/f/")
            assert_errno(errno.ENOTDIR, fs.rename, "/f/", "/g")
            assert fs.isdir("/") and fs.stat("//").st_ino == fs.stat("/").st_ino

    def test_o_creat_with_trailing_slash_is_eisdir(self) -> None:
        """O_CREAT on a name with a trailing slash: EISDIR."""
        with self.view({"f": b"f"}) as fs:
            assert_errno(errno.EISDIR, fs.os_open, "/new/", os.O_WRONLY | os.O_CREAT, 0o644)
            assert_errno(errno.EISDIR, fs.os_open, "/f/", os.O_WRONLY | os.O_CREAT, 0o644)

    def test_trailing_slash_on_symlinks(self) -> None:
        """A trailing slash follows a symlink to a dir for lookups, not for name operations."""
        with self.view({"e/": Dir(), "l": Symlink("e"), "dl": Symlink("nothing"), "fl": Symlink("f"),
                        "f": b"f"}) as fs:
            assert fs.isdir("/l/") and stat.S_ISDIR(fs.lstat("/l/").st_mode)
            assert_errno(errno.ENOTDIR, fs.rmdir, "/l/")
            assert_errno(errno.ENOTDIR, fs.unlink, "/l/")
            assert_errno(errno.EINVAL, fs.readlink, "/l/")
            assert_errno(errno.ENOTDIR, fs.stat, "/fl/")
            assert_errno(errno.EEXIST, fs.mkdir, "/dl/")
            assert_errno(errno.EISDIR, fs.write_bytes, "/dl/", b"x")
            assert_errno(errno.ENOENT, fs.symlink, "x", "/new/")
            assert_errno(errno.ENOENT, fs.link, "/f", "/new/")
            assert_errno(errno.ENOTDIR, fs.rename, "/f", "/g/")
            fs.mkdir("/newdir/")
            assert fs.isdir("/newdir")

    def test_dot_and_root_names(self) -> None:
        """Names ending in `.`/`..` and the root: EBUSY, EISDIR, EINVAL as Linux gives."""
        with self.view({"d/x": b"x", "f": b"f"}) as fs:
            assert_errno(errno.EBUSY, fs.rename, "/d/..", "/x")
            assert_errno(errno.EBUSY, fs.rename, "/d/.", "/x")
            assert_errno(errno.EBUSY, fs.rename, "/", "/x")
            assert_errno(errno.EBUSY, fs.rename, "/f", "/")
            assert_errno(errno.EISDIR, fs.unlink, "/d/.")
            assert_errno(errno.EISDIR, fs.unlink, "/")
            assert_errno(errno.ENOENT, fs.mkdir, "")
            assert_errno(errno.ENOENT, fs.stat, "")
            assert names(fs, "/d/.") == ["x"]

    def test_mknod_whiteout_device_is_eperm(self) -> None:
        """Creating a 0/0 character device (a whiteout) through the overlay: EPERM."""
        with self.view({}) as fs:
            assert_errno(errno.EPERM, fs.mknod, "/w", stat.S_IFCHR | 0o600, os.makedev(0, 0))
            fs.mknod("/c", stat.S_IFCHR | 0o600, os.makedev(1, 3))
            assert_tree(fs, {"/c": Device("c", 1, 3, mode=0o600), "/w": None})

    def test_component_not_a_dir_is_enotdir(self) -> None:
        """A file used as a directory component: ENOTDIR."""
        with self.view({"f": b"f"}) as fs:
            assert_errno(errno.ENOTDIR, fs.stat, "/f/x")
            assert_errno(errno.ENOTDIR, fs.write_bytes, "/f/x", b"x")
            assert_errno(errno.ENOTDIR, fs.mkdir, "/f/x")

    def test_missing_is_enoent(self) -> None:
        """Missing names and missing parents: ENOENT."""
        with self.view({"d/": Dir()}) as fs:
            assert_errno(errno.ENOENT, fs.stat, "/nope")
            assert_errno(errno.ENOENT, fs.read_bytes, "/d/nope")
            assert_errno(errno.ENOENT, fs.unlink, "/d/nope")
            assert_errno(errno.ENOENT, fs.rmdir, "/d/nope")
            assert_errno(errno.ENOENT, fs.mkdir, "/nope/x")
            assert_errno(errno.ENOENT, fs.write_bytes, "/nope/x", b"x")
            assert_errno(errno.ENOENT, fs.readlink, "/nope")

    def test_mkdir_existing_is_eexist(self) -> None:
        """mkdir of an existing dir, file or symlink: EEXIST."""
        with self.view({"d/": Dir(), "f": b"f", "l": Symlink("nothing")}) as fs:
            assert_errno(errno.EEXIST, fs.mkdir, "/d")
            assert_errno(errno.EEXIST, fs.mkdir, "/f")
            assert_errno(errno.EEXIST, fs.mkdir, "/l")
            assert_errno(errno.EEXIST, fs.mkdir, "/")

    def test_symlink_onto_existing_is_eexist(self) -> None:
        """symlink onto an existing name: EEXIST."""
        with self.view({"f": b"f"}) as fs:
            assert_errno(errno.EEXIST, fs.symlink, "x", "/f")

    def test_rmdir_merged_dir_with_lower_children_is_enotempty(self) -> None:
        """rmdir of a dir whose children are only in a lower layer: ENOTEMPTY."""
        with self.view({"d/x": b"x"}) as fs:
            assert_errno(errno.ENOTEMPTY, fs.rmdir, "/d")
            fs.chmod("/d", 0o700)  # merged now
            assert_errno(errno.ENOTEMPTY, fs.rmdir, "/d")

    def test_rmdir_dir_with_all_lower_children_whited_out(self) -> None:
        """rmdir after every lower child was removed succeeds; upper: just a whiteout."""
        with self.view({"d/x": b"x", "d/y": b"y"}) as fs:
            fs.unlink("/d/x")
            fs.unlink("/d/y")
            assert names(fs, "/d") == []
            fs.rmdir("/d")
            assert not fs.lexists("/d")
        up = self.upper_of(fs)
        assert upper_keys(up) == {"d"} and up["d"] is WHITEOUT

    def test_rmdir_of_upper_only_dir_leaves_nothing(self) -> None:
        """rmdir of a dir only the upper has leaves no whiteout."""
        with self.view({"keep": b"k"}) as fs:
            fs.mkdir("/d")
            fs.rmdir("/d")
        up = self.upper_of(fs)
        assert upper_keys(up) == set()

    def test_unlink_dir_is_eisdir(self) -> None:
        """unlink of a dir: EISDIR."""
        with self.view({"low/": Dir()}) as fs:
            fs.mkdir("/d")
            assert_errno(errno.EISDIR, fs.unlink, "/d")
            assert_errno(errno.EISDIR, fs.unlink, "/low")

    def test_rmdir_file_is_enotdir(self) -> None:
        """rmdir of a file or symlink: ENOTDIR."""
        with self.view({"f": b"f", "d/": Dir(), "l": Symlink("d")}) as fs:
            assert_errno(errno.ENOTDIR, fs.rmdir, "/f")
            assert_errno(errno.ENOTDIR, fs.rmdir, "/l")

    def test_rmdir_root_is_ebusy(self) -> None:
        """rmdir "/": EBUSY."""
        with self.view({}) as fs:
            assert_errno(errno.EBUSY, fs.rmdir, "/")

    def test_rmdir_dot_is_einval(self) -> None:
        """rmdir "x/.": EINVAL; "x/..": ENOTEMPTY."""
        with self.view({"x/": Dir()}) as fs:
            assert_errno(errno.EINVAL, fs.rmdir, "/x/.")
            assert_errno(errno.ENOTEMPTY, fs.rmdir, "/x/..")
            assert fs.isdir("/x")

    def test_readlink_of_non_symlink_is_einval(self) -> None:
        """readlink of a file or dir: EINVAL."""
        with self.view({"f": b"f", "d/": Dir()}) as fs:
            assert_errno(errno.EINVAL, fs.readlink, "/f")
            assert_errno(errno.EINVAL, fs.readlink, "/d")

    def test_listdir_of_file_is_enotdir(self) -> None:
        """listdir of a file: ENOTDIR."""
        with self.view({"f": b"f"}) as fs:
            assert_errno(errno.ENOTDIR, fs.listdir, "/f")

    def test_open_dir_for_writing_is_eisdir(self) -> None:
        """Opening a dir for writing: EISDIR."""
        with self.view({"d/": Dir()}) as fs:
            assert_errno(errno.EISDIR, fs.os_open, "/d", os.O_WRONLY)
            assert_errno(errno.EISDIR, fs.os_open, "/d", os.O_RDWR)
            assert_errno(errno.EISDIR, fs.write_bytes, "/d", b"x")

    def test_unlink_symlink_removes_the_link_only(self) -> None:
        """unlink of a symlink removes the link, not its target."""
        with self.view({"f": b"f", "l": Symlink("f")}) as fs:
            fs.unlink("/l")
            assert_tree(fs, {"/l": None, "/f": b"f"})

    def test_stat_follows_lstat_does_not(self) -> None:
        """stat follows a final symlink; lstat does not."""
        with self.view({"f": File(b"12345", mode=0o600), "l": Symlink("f")}) as fs:
            st, lst = fs.stat("/l"), fs.lstat("/l")
            assert stat.S_ISREG(st.st_mode) and st.st_size == 5 and stat.S_IMODE(st.st_mode) == 0o600
            assert stat.S_ISLNK(lst.st_mode) and lst.st_size == 1

    # =================================================================================
    # open files
    # =================================================================================

    def test_fd_outlives_unlink_of_upper_file(self) -> None:
        """An fd reads its data after unlink; fstat shows nlink 0."""
        with self.view({}) as fs:
            fs.write_bytes("/f", b"data")
            with fs.os_open("/f", os.O_RDWR) as f:
                fs.unlink("/f")
                assert not fs.lexists("/f")
                assert f.read() == b"data"
                assert fstat(f).st_nlink == 0
                f.write(b"+more")
                f.seek(0)
                assert f.read() == b"data+more"

    def test_fd_outlives_unlink_of_lower_file(self) -> None:
        """A read fd on a lower file keeps reading after the name is whited out (fstat nlink 1)."""
        with self.view({"f": b"lower data"}) as fs:
            with fs.os_open("/f", os.O_RDONLY) as f:
                assert f.read(5) == b"lower"
                fs.unlink("/f")
                assert f.read() == b" data"
                st = fstat(f)
                # overlayfs reports the lower inode's own link count: 1, not 0
                assert (st.st_size, st.st_nlink) == (10, 1)
            assert not fs.lexists("/f")

    def test_o_append_writes_at_end_after_seek(self) -> None:
        """O_APPEND writes at the end even after a seek."""
        with self.view({"f": b"abc"}) as fs:
            with fs.os_open("/f", os.O_WRONLY | os.O_APPEND) as f:
                f.seek(0)
                f.write(b"X")
                assert f.tell() == 4
                f.seek(1)
                f.write(b"Y")
            assert fs.read_bytes("/f") == b"abcXY"

    def test_o_trunc_empties_lower_file(self) -> None:
        """O_TRUNC on a lower file: empty file in the upper."""
        with self.view({"f": File(b"content", mode=0o640)}) as fs:
            with fs.os_open("/f", os.O_WRONLY | os.O_TRUNC):
                pass
            assert_tree(fs, {"/f": File(b"", mode=0o640)})
            assert fs.stat("/f").st_size == 0
        up = self.upper_of(fs)
        assert isinstance(up["f"], File) and up["f"].data == b""

    def test_o_excl(self) -> None:
        """O_CREAT|O_EXCL: creates a new file; EEXIST on an existing one (upper or lower)."""
        with self.view({"low": b"l"}) as fs:
            with fs.os_open("/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) as f:
                f.write(b"n")
            assert_tree(fs, {"/new": File(b"n", mode=0o600)})
            assert_errno(errno.EEXIST, fs.os_open, "/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            assert_errno(errno.EEXIST, fs.os_open, "/low", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            assert_errno(errno.EEXIST, fs.open, "/low", "xb")

    def test_o_creat_on_existing_keeps_content(self) -> None:
        """O_CREAT without O_TRUNC on an existing file opens it as is."""
        with self.view({"f": b"keep"}) as fs:
            with fs.os_open("/f", os.O_RDWR | os.O_CREAT, 0o600) as f:
                assert f.read() == b"keep"
            assert mode_of(fs, "/f") == 0o644

    def test_open_missing_without_o_creat_is_enoent(self) -> None:
        """Opening a missing file without O_CREAT: ENOENT."""
        with self.view({}) as fs:
            assert_errno(errno.ENOENT, fs.os_open, "/nope", os.O_RDONLY)
            assert_errno(errno.ENOENT, fs.os_open, "/nope", os.O_WRONLY)

    def test_read_write_seek_tell(self) -> None:
        """read/write/seek/tell at the fd offset, as POSIX."""
        with self.view({"f": b"0123456789"}) as fs:
            with fs.os_open("/f", os.O_RDWR) as f:
                assert f.read(3) == b"012"
                assert f.tell() == 3
                assert f.write(b"AB") == 2
                assert f.tell() == 5
                assert f.seek(-2, os.SEEK_END) == 8
                assert f.read() == b"89"
                assert f.read() == b""
                assert f.seek(2, os.SEEK_SET) == 2
                assert f.seek(1, os.SEEK_CUR) == 3
                assert f.read(4) == b"AB56"
                assert_errno(errno.EINVAL, f.seek, -1, os.SEEK_SET)
            assert fs.read_bytes("/f") == b"012AB56789"

    def test_write_on_read_only_fd_is_ebadf(self) -> None:
        """write on an O_RDONLY fd: EBADF; read on an O_WRONLY fd: EBADF."""
        with self.view({"f": b"data"}) as fs:
            with fs.os_open("/f", os.O_RDONLY) as f:
                assert_errno(errno.EBADF, f.write, b"x")
            with fs.os_open("/f", os.O_WRONLY) as f:
                assert_errno(errno.EBADF, f.read, 1)
            assert fs.read_bytes("/f") == b"data"

    def test_sparse_extension_reads_zeros(self) -> None:
        """Writing past the end and truncating up both fill with zeros."""
        with self.view({"f": b"ab"}) as fs:
            with fs.os_open("/f", os.O_RDWR) as f:
                f.seek(5)
                f.write(b"z")
                assert fstat(f).st_size == 6
                f.truncate(9)
                assert f.tell() == 6
            assert fs.read_bytes("/f") == b"ab\0\0\0z\0\0\0"
            fs.truncate("/f", 12)
            assert fs.read_bytes("/f") == b"ab\0\0\0z" + b"\0" * 6
            fs.truncate("/f", 1)
            assert fs.read_bytes("/f") == b"a"

    def test_write_updates_size_and_mtime(self) -> None:
        """A write updates st_size and st_mtime; creating a file updates its dir's mtime."""
        with self.view({"d/": Dir(mtime_ns=T0), "d/f": File(b"x", mtime_ns=T0)}) as fs:
            with fs.os_open("/d/f", os.O_WRONLY | os.O_APPEND) as f:
                f.write(b"more")
                st = fstat(f)
                assert st.st_size == 5
                assert st.st_mtime_ns > T0
            assert fs.stat("/d").st_mtime_ns == T0
            fs.write_bytes("/d/g", b"g")
            assert fs.stat("/d").st_mtime_ns > T0

    def test_read_fd_follows_copy_up_by_another_fd(self) -> None:
        """A read fd on a lower file sees data written after another fd copied it up."""
        with self.view({"f": b"old data"}) as fs, fs.os_open("/f", os.O_RDONLY) as r:
            assert r.read(2) == b"ol"
            with fs.os_open("/f", os.O_WRONLY | os.O_TRUNC) as w:
                w.write(b"NEW CONTENT")
            assert r.read() == b"W CONTENT"
            assert fstat(r).st_size == 11

    def test_read_fd_keeps_its_file_across_name_changes(self) -> None:
        """A read fd on a lower file keeps reading that file when its name is reused."""
        with self.view({"f": b"old f", "g": b"gee"}) as fs:
            with fs.os_open("/f", os.O_RDONLY) as r:
                fs.rename("/g", "/f")
                assert r.read() == b"old f"
            assert fs.read_bytes("/f") == b"gee"
        with self.view({"f": b"old f"}) as fs, fs.os_open("/f", os.O_RDONLY) as r:
            fs.unlink("/f")
            fs.write_bytes("/f", b"brand new")
            assert r.read() == b"old f"

    def test_read_fd_follows_its_file_after_rename_and_copy_up(self) -> None:
        """A read fd on a lower file follows it through a rename and a later copy-up."""
        with self.view({"f": b"old f"}) as fs, fs.os_open("/f", os.O_RDONLY) as r:
            fs.rename("/f", "/h")
            fs.write_bytes("/h", b"written at h")
            assert r.read() == b"written at h"

    def test_fd_sees_metadata_copy_up(self) -> None:
        """fstat of a read fd on a lower file shows a later chmod through the path."""
        with self.view({"f": b"data"}) as fs, fs.os_open("/f", os.O_RDONLY) as r:
            fs.chmod("/f", 0o600)
            assert stat.S_IMODE(fstat(r).st_mode) == 0o600
            fs.truncate("/f", 2)
            assert r.read() == b"da"

    def test_write_fd_follows_rename(self) -> None:
        """A write fd keeps writing the same file after it is renamed."""
        with self.view({}) as fs:
            fs.write_bytes("/a", b"aaa")
            with fs.os_open("/a", os.O_RDWR) as f:
                fs.rename("/a", "/b")
                f.write(b"X")
            assert fs.read_bytes("/b") == b"Xaa"

    def test_two_fds_share_the_upper_file(self) -> None:
        """Two fds on one upper file see each other's writes."""
        with self.view({}) as fs:
            fs.write_bytes("/f", b"......")
            with fs.os_open("/f", os.O_RDWR) as a, fs.os_open("/f", os.O_RDONLY) as b:
                a.write(b"xy")
                assert b.read() == b"xy...."

    def test_text_open_roundtrip(self) -> None:
        """The builtin-style open in text mode reads and writes str."""
        with self.view({}) as fs:
            with fs.open("/t", "w") as f:
                f.write("héllo\n")
            with fs.open("/t") as f:
                assert f.read() == "héllo\n"
            assert fs.read_bytes("/t") == "héllo\n".encode()
            assert fs.read_text("/t") == "héllo\n"

    # =================================================================================
    # xattrs
    # =================================================================================

    def test_xattr_roundtrip(self) -> None:
        """setxattr / getxattr / listxattr / removexattr on a file and a dir."""
        with self.view({}) as fs:
            fs.write_bytes("/f", b"f")
            fs.mkdir("/d")
            for p in ("/f", "/d"):
                fs.setxattr(p, "user.one", b"1")
                fs.setxattr(p, "user.two", b"")
                assert fs.getxattr(p, "user.one") == b"1"
                assert fs.getxattr(p, "user.two") == b""
                assert sorted(fs.listxattr(p)) == ["user.one", "user.two"]
                fs.setxattr(p, "user.one", b"uno")
                assert fs.getxattr(p, "user.one") == b"uno"
                fs.removexattr(p, "user.one")
                assert fs.listxattr(p) == ["user.two"]

    def test_xattr_create_on_existing_is_eexist(self) -> None:
        """XATTR_CREATE on an existing name: EEXIST (also for a lower file's xattr)."""
        with self.view({"f": File(b"f", xattrs={"user.a": b"1"})}) as fs:
            assert_errno(errno.EEXIST, fs.setxattr, "/f", "user.a", b"2", XATTR_CREATE)
            fs.setxattr("/f", "user.b", b"2", XATTR_CREATE)
            assert fs.getxattr("/f", "user.b") == b"2"

    def test_xattr_replace_on_missing_is_enodata(self) -> None:
        """XATTR_REPLACE of a missing name: ENODATA."""
        with self.view({"f": File(b"f", xattrs={"user.a": b"1"})}) as fs:
            assert_errno(errno.ENODATA, fs.setxattr, "/f", "user.b", b"2", XATTR_REPLACE)
            fs.setxattr("/f", "user.a", b"3", XATTR_REPLACE)
            assert fs.getxattr("/f", "user.a") == b"3"

    def test_getxattr_and_removexattr_missing_is_enodata(self) -> None:
        """getxattr / removexattr of a missing name: ENODATA."""
        with self.view({"f": b"f"}) as fs:
            assert_errno(errno.ENODATA, fs.getxattr, "/f", "user.nope")
            assert_errno(errno.ENODATA, fs.removexattr, "/f", "user.nope")

    def test_xattr_name_and_value_limits(self) -> None:
        """xattr names: 255 bytes max (ERANGE), a namespace prefix alone is EINVAL, no
        prefix EOPNOTSUPP; values: 65536 bytes max (E2BIG)."""
        with self.view({"f": b"f"}) as fs:
            fs.setxattr("/f", "user." + "a" * 250, b"1")
            assert_errno(errno.ERANGE, fs.setxattr, "/f", "user." + "a" * 251, b"1")
            assert_errno(errno.ERANGE, fs.getxattr, "/f", "")
            assert_errno(errno.EINVAL, fs.setxattr, "/f", "user.", b"1")
            assert_errno(errno.EOPNOTSUPP, fs.setxattr, "/f", "foo", b"1")
            assert_errno(errno.EOPNOTSUPP, fs.getxattr, "/f", "foo")
            fs.setxattr("/f", "user.max", b"x" * 65536)
            assert len(fs.getxattr("/f", "user.max")) == 65536
            assert_errno(errno.E2BIG, fs.setxattr, "/f", "user.big", b"x" * 65537)
            assert sorted(fs.listxattr("/f")) == ["user." + "a" * 250, "user.max"]

    def test_user_xattr_on_symlink_is_eperm(self) -> None:
        """user.* xattrs on a symlink itself: set EPERM, get ENODATA."""
        with self.view({"f": b"f", "l": Symlink("f")}) as fs:
            assert_errno(errno.EPERM, fs.setxattr, "/l", "user.a", b"1", follow_symlinks=False)
            assert_errno(errno.ENODATA, fs.getxattr, "/l", "user.a", follow_symlinks=False)
            fs.setxattr("/l", "user.a", b"1")  # follows to the file
            assert fs.getxattr("/f", "user.a") == b"1"

    def test_trusted_xattr_on_symlink(self) -> None:
        """trusted.* xattrs work on a symlink itself (for root)."""
        with self.view({"f": b"f", "l": Symlink("f")}) as fs:
            fs.setxattr("/l", "trusted.t", b"v", follow_symlinks=False)
            assert fs.getxattr("/l", "trusted.t", follow_symlinks=False) == b"v"
            assert_errno(errno.ENODATA, fs.getxattr, "/f", "trusted.t")

    def test_lower_xattrs_are_visible(self) -> None:
        """xattrs of lower files and dirs are listed and read."""
        with self.view({"d/": Dir(xattrs={"user.d": b"D", "trusted.t": b"T"}),
                        "d/f": File(b"f", xattrs={"user.f": b"F"})}) as fs:
            assert sorted(fs.listxattr("/d")) == ["trusted.t", "user.d"]
            assert fs.getxattr("/d", "trusted.t") == b"T"
            assert fs.listxattr("/d/f") == ["user.f"] and fs.getxattr("/d/f", "user.f") == b"F"

    def test_overlay_xattrs_are_not_visible(self) -> None:
        """overlayfs's own trusted.overlay.* (opaque, redirect, origin) never show through the view."""
        with self.view({"d/x": b"x", "r/y": b"y", "f": b"f"}, {"o/": Dir(opaque=True)}, redirect_dir=True) as fs:
            rm_r(fs, "/d")
            fs.mkdir("/d")  # opaque
            fs.rename("/r", "/r2")  # redirect
            fs.chmod("/f", 0o600)  # origin
            for p in ("/d", "/r2", "/f", "/o"):
                assert [n for n in fs.listxattr(p) if n.startswith("trusted.overlay.")] == [], p
            for p, n in (("/d", "opaque"), ("/o", "opaque"), ("/r2", "redirect"), ("/f", "origin")):
                assert_errno(errno.ENODATA, fs.getxattr, p, "trusted.overlay." + n)

    def test_overlay_xattrs_set_through_the_view_are_plain_data(self) -> None:
        """trusted.overlay.* set through the view is an ordinary xattr (escaped, Linux >= 6.7).

        It is listed and read back, and does not make a dir opaque.
        """
        with self.view({"d/x": b"x", "e/y": b"y"}) as fs:
            fs.setxattr("/d", "trusted.overlay.opaque", b"y")
            assert fs.getxattr("/d", "trusted.overlay.opaque") == b"y"
            assert fs.listxattr("/d") == ["trusted.overlay.opaque"]
            assert names(fs, "/d") == ["x"]
            fs.setxattr("/e", "trusted.overlay.opaque", b"y")
            fs.removexattr("/e", "trusted.overlay.opaque")
            assert fs.listxattr("/e") == []
            assert_errno(errno.ENODATA, fs.removexattr, "/e", "trusted.overlay.opaque")
        up = self.upper_of(fs)
        d = up["d"]
        assert isinstance(d, Dir) and not d.opaque and "d/x" not in up

    # =================================================================================
    # umask, setgid, setuid
    # =================================================================================

    def test_default_umask(self) -> None:
        """umask 0o022 by default: new files 0o644, dirs 0o755, os_open 0o777 -> 0o755."""
        with self.view({}) as fs:
            assert fs.umask == 0o022
            fs.write_bytes("/f", b"f")
            fs.mkdir("/d")
            fs.os_open("/x", os.O_WRONLY | os.O_CREAT, 0o777).close()
            fs.mkfifo("/p")
            assert (mode_of(fs, "/f"), mode_of(fs, "/d"), mode_of(fs, "/x"), mode_of(fs, "/p")) == \
                (0o644, 0o755, 0o755, 0o644)

    def test_umask_077(self) -> None:
        """umask 0o077 applies to new files, dirs and makedirs."""
        with self.view({}) as fs:
            fs.umask = 0o077
            fs.write_bytes("/f", b"f")
            fs.mkdir("/d")
            fs.makedirs("/a/b")
            assert (mode_of(fs, "/f"), mode_of(fs, "/d"), mode_of(fs, "/a"), mode_of(fs, "/a/b")) == \
                (0o600, 0o700, 0o700, 0o700)

    def test_umask_does_not_apply_to_chmod(self) -> None:
        """chmod sets the exact mode whatever the umask."""
        with self.view({"f": b"f"}) as fs:
            fs.umask = 0o077
            fs.chmod("/f", 0o777)
            assert mode_of(fs, "/f") == 0o777

    def test_mkdir_mode_keeps_sticky_bit(self) -> None:
        """mkdir keeps the sticky bit of the requested mode (umask aside)."""
        with self.view({}) as fs:
            fs.mkdir("/t", 0o1777)
            assert mode_of(fs, "/t") == 0o1755

    def test_setgid_dir_inheritance(self) -> None:
        """In a setgid dir new files take the dir's gid; new subdirs also inherit setgid."""
        with self.view({"g/": Dir(mode=0o2775, gid=50)}) as fs:
            fs.write_bytes("/g/f", b"f")
            fs.mkdir("/g/sub")
            fs.write_bytes("/g/sub/f2", b"f")
            assert fs.stat("/g/f").st_gid == 50
            assert mode_of(fs, "/g/f") == 0o644
            st = fs.stat("/g/sub")
            assert st.st_gid == 50 and stat.S_IMODE(st.st_mode) == 0o2755
            assert fs.stat("/g/sub/f2").st_gid == 50
            fs.symlink("f", "/g/l")
            assert fs.lstat("/g/l").st_gid == 50

    def test_chown_clears_setuid(self) -> None:
        """chown of a setuid file clears setuid (even for root)."""
        with self.view({"f": File(b"x", mode=0o4755)}) as fs:
            fs.chown("/f", 1, 1)
            assert mode_of(fs, "/f") == 0o755

    def test_chown_clears_setgid_only_when_group_executable(self) -> None:
        """chown clears setgid with group-exec, keeps it without (mandatory-lock marker)."""
        with self.view({"gx": File(b"x", mode=0o2755), "gnx": File(b"x", mode=0o2745),
                        "d/": Dir(mode=0o2775)}) as fs:
            for p in ("/gx", "/gnx", "/d"):
                fs.chown(p, 3, 3)
            assert (mode_of(fs, "/gx"), mode_of(fs, "/gnx"), mode_of(fs, "/d")) == (0o755, 0o2745, 0o2775)

    def test_chmod_of_symlink_follows(self) -> None:
        """chmod through a symlink changes the target."""
        with self.view({"f": File(b"x", mode=0o644), "l": Symlink("f")}) as fs:
            fs.chmod("/l", 0o600)
            assert mode_of(fs, "/f") == 0o600

    # =================================================================================
    # the read-only view
    # =================================================================================

    def test_readonly_view_reads(self) -> None:
        """The read-only view merges as a container's does."""
        with self.readonly_view({"d/a": b"a", "d/b": b"b", "f": b"f", "h": Hardlink("f")},
                                {"d/a": WHITEOUT, "d/c": b"c"}) as fs:
            assert names(fs, "/d") == ["b", "c"]
            assert fs.read_bytes("/f") == b"f"
            assert fs.stat("/h").st_ino == fs.stat("/f").st_ino
            with fs.os_open("/f", os.O_RDONLY) as f:
                assert f.read() == b"f"

    def test_readonly_view_refuses_writes_with_erofs(self) -> None:
        """Every write on the read-only view: EROFS."""
        with self.readonly_view({"d/x": b"x", "e/": Dir(), "f": File(b"f", xattrs={"user.a": b"1"}),
                                 "l": Symlink("f")}) as fs:
            e = errno.EROFS
            assert_errno(e, fs.write_bytes, "/f", b"new")
            assert_errno(e, fs.write_bytes, "/new", b"new")
            assert_errno(e, fs.os_open, "/f", os.O_WRONLY)
            assert_errno(e, fs.os_open, "/f", os.O_RDWR)
            assert_errno(e, fs.os_open, "/new", os.O_WRONLY | os.O_CREAT, 0o644)
            assert_errno(e, fs.open, "/f", "ab")
            assert_errno(e, fs.mkdir, "/newdir")
            assert_errno(e, fs.rmdir, "/e")
            assert_errno(e, fs.unlink, "/f")
            assert_errno(e, fs.rename, "/f", "/g")
            assert_errno(e, fs.symlink, "f", "/l2")
            assert_errno(e, fs.link, "/f", "/f2")
            assert_errno(e, fs.chmod, "/f", 0o600)
            assert_errno(e, fs.chown, "/f", 1, 1)
            assert_errno(e, fs.utime, "/f", ns=(1, 1))
            assert_errno(e, fs.truncate, "/f", 0)
            assert_errno(e, fs.setxattr, "/f", "user.b", b"2")
            assert_errno(e, fs.removexattr, "/f", "user.a")
            assert_errno(e, fs.mkfifo, "/p")
            assert fs.read_bytes("/f") == b"f"
            assert names(fs) == ["d", "e", "f", "l"]

    def test_readonly_view_errno_order(self) -> None:
        """On the read-only view, EROFS comes before or after other errors as Linux orders them.

        unlink/rmdir/rename check writability before looking the name up (EROFS even for a
        missing name or a dir); mkdir/symlink/O_EXCL see EEXIST first; chmod/utime need the
        name first (ENOENT); truncate of a dir is EISDIR; rmdir of "/" EBUSY, of "x/." EINVAL.
        """
        with self.readonly_view({"d/x": b"x", "e/": Dir(), "f": b"f"}) as fs:
            e = errno.EROFS
            assert_errno(e, fs.rmdir, "/nope")
            assert_errno(e, fs.rmdir, "/d")
            assert_errno(e, fs.unlink, "/nope")
            assert_errno(e, fs.unlink, "/d")
            assert_errno(e, fs.rename, "/nope", "/x")
            assert_errno(errno.EISDIR, fs.truncate, "/d", 0)
            assert_errno(errno.EEXIST, fs.mkdir, "/d")
            assert_errno(errno.EEXIST, fs.symlink, "x", "/f")
            assert_errno(errno.EEXIST, fs.link, "/f", "/d/x")
            assert_errno(errno.EEXIST, fs.os_open, "/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            assert_errno(errno.ENOENT, fs.mkdir, "/nope/x")
            assert_errno(errno.ENOENT, fs.chmod, "/nope", 0o600)
            assert_errno(errno.ENOENT, fs.utime, "/nope")
            assert_errno(errno.EISDIR, fs.os_open, "/d", os.O_WRONLY)
            assert_errno(errno.EBUSY, fs.rmdir, "/")
            assert_errno(errno.EINVAL, fs.rmdir, "/e/.")
            fs.os_open("/f", os.O_RDONLY | os.O_CREAT, 0o644).close()  # no write needed


# --- callers without root's capabilities ---------------------------------------------------

Caller = tuple[int, int, tuple[int, ...]]
"""(uid, gid, supplementary groups) a view acts as through ``fs.as_user``."""

ALICE: Caller = (1000, 1000, (1000,))
"""A uid in its own group only."""
BOB: Caller = (1001, 1001, (1001, 1000))
"""A second uid that is also in ALICE's group."""
CAROL: Caller = (1002, 1002, ())
"""A uid with no supplementary groups."""


class PermissionConformance:
    """Mixin of the kernel's DAC rules for non-root callers (fs/namei.c, fs/attr.c,
    fs/xattr.c as overlayfs applies them to the merged inode). Each test builds a view as
    root and acts through ``fs.as_user``, which both the model's FileSystem and
    KernelFS provide; a backend implements :meth:`open_view` as for OverlayConformance."""

    def open_view(self, layers: list[Layer], options: OverlayOptions) -> ContextManager[FS]:
        """A context manager yielding a read-write os-style fs over ``layers``, as root."""
        raise NotImplementedError

    def upper_of(self, fs: FS) -> Layer:
        """The upper layer of the view that yielded ``fs``, after that view was closed."""
        raise unittest.SkipTest(f"{type(self).__name__} has no upper_of(): upper-layer checks skipped")

    @contextlib.contextmanager
    def view(self, *layers: LayerSpec, **options: bool) -> Iterator[FS]:
        """``open_view`` with layers as dicts (bottom first); yields root's fs."""
        built = [x if isinstance(x, Layer) else Layer.from_dict(x) for x in layers]
        with self.open_view(built, OverlayOptions(**options)) as fs:
            yield fs

    # --- lookup and open -----------------------------------------------------------------

    def test_search_permission_on_every_directory(self) -> None:
        """A 0o700 root directory: EACCES for anything below it, even a missing name; the
        directory itself can be stat'ed; 0o711 lets a known name through but not listing."""
        layer = {"p/": Dir(mode=0o700), "p/f": b"f", "x/": Dir(mode=0o711), "x/f": File(b"xf", mode=0o644)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            assert stat.S_IMODE(fs.stat("/p").st_mode) == 0o700
            assert_errno(errno.EACCES, fs.stat, "/p/f")
            assert_errno(errno.EACCES, fs.stat, "/p/nope")
            assert_errno(errno.EACCES, fs.listdir, "/p")
            assert_errno(errno.EACCES, fs.mkdir, "/p/d")
            assert fs.read_bytes("/x/f") == b"xf"
            assert_errno(errno.EACCES, fs.listdir, "/x")
            assert fs.access("/x/f", os.R_OK) and not fs.access("/x/f", os.W_OK)

    def test_group_and_other_bits(self) -> None:
        """Owner bits for the owner (even when the group's would allow more), group bits
        for a member (a supplementary group counts), other bits for the rest."""
        layer = {"d/": Dir(mode=0o777), "d/g": File(b"g", mode=0o460, uid=1000, gid=1000)}
        with self.view(layer) as root:
            alice, bob, carol = root.as_user(*ALICE), root.as_user(*BOB), root.as_user(*CAROL)
            assert_errno(errno.EACCES, alice.os_open, "/d/g", os.O_WRONLY)  # owner: r-- only
            with bob.os_open("/d/g", os.O_RDWR) as f:  # group rw- via a supplementary group
                f.write(b"B")
            assert_errno(errno.EACCES, carol.os_open, "/d/g", os.O_RDONLY)
            assert_errno(errno.EACCES, alice.truncate, "/d/g", 0)
            assert root.read_bytes("/d/g") == b"B"

    def test_open_trunc_needs_write(self) -> None:
        """O_RDONLY|O_TRUNC asks for write permission; O_CREAT on an existing file does not
        need the directory's; a newly created file opens whatever its mode."""
        layer = {"d/": Dir(mode=0o755), "d/f": File(b"f", mode=0o644), "w/": Dir(mode=0o777)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            assert_errno(errno.EACCES, fs.os_open, "/d/f", os.O_RDONLY | os.O_TRUNC)
            fs.os_open("/d/f", os.O_RDONLY | os.O_CREAT, 0o644).close()
            assert_errno(errno.EACCES, fs.os_open, "/d/new", os.O_RDONLY | os.O_CREAT, 0o644)
            assert_errno(errno.EEXIST, fs.os_open, "/d/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with fs.os_open("/w/n", os.O_RDWR | os.O_CREAT, 0o000) as f:
                f.write(b"n")
            assert_errno(errno.EACCES, fs.read_bytes, "/w/n")

    # --- creating, removing, renaming ------------------------------------------------------

    def test_create_and_remove_need_write_on_the_parent(self) -> None:
        """mkdir/symlink/unlink/rmdir in a directory without write: EACCES, after EEXIST and
        ENOENT, which the lookup finds first."""
        layer = {"d/": Dir(mode=0o755), "d/f": b"f", "d/e/": Dir(mode=0o777)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            assert_errno(errno.EACCES, fs.mkdir, "/d/x")
            assert_errno(errno.EEXIST, fs.mkdir, "/d/f")
            assert_errno(errno.EACCES, fs.symlink, "f", "/d/l")
            assert_errno(errno.EACCES, fs.unlink, "/d/f")
            assert_errno(errno.ENOENT, fs.unlink, "/d/nope")
            assert_errno(errno.EACCES, fs.rmdir, "/d/e")
            assert_errno(errno.EACCES, fs.unlink, "/d/e")  # EACCES before EISDIR
            assert_errno(errno.EISDIR, fs.unlink, "/d/e/")
            fs.mkdir("/d/e/mine")
            assert (fs.stat("/d/e/mine").st_uid, fs.stat("/d/e/mine").st_gid) == (1000, 1000)

    def test_sticky_directory(self) -> None:
        """In a 1777 directory only the owner of the entry or of the directory may remove or
        rename it (EPERM); a member of the file's group may not; root may."""
        layer = {"tmp/": Dir(mode=0o1777, uid=1001, gid=1001), "tmp/a": File(b"a", mode=0o666, uid=1000, gid=1000),
                 "tmp/r": File(b"r", mode=0o666)}
        with self.view(layer) as root:
            alice, bob, carol = root.as_user(*ALICE), root.as_user(*BOB), root.as_user(*CAROL)
            assert_errno(errno.EPERM, carol.unlink, "/tmp/a")
            assert_errno(errno.EPERM, carol.rename, "/tmp/a", "/tmp/c")
            carol.write_bytes("/tmp/c", b"c")
            assert_errno(errno.EPERM, alice.rename, "/tmp/a", "/tmp/c")  # the target is carol's
            assert_errno(errno.EPERM, alice.unlink, "/tmp/r")
            bob.unlink("/tmp/r")  # bob owns the directory
            alice.rename("/tmp/a", "/tmp/a2")
            root.unlink("/tmp/c")
            assert names(root, "/tmp") == ["a2"]

    def test_rename_of_a_directory_to_another_parent_needs_write_on_it(self) -> None:
        """Moving a directory to another parent rewrites its "..": write on the directory
        itself is needed (EACCES), not only on both parents; renaming in place is not
        (redirect_dir, so that a lower directory may move at all)."""
        layer = {"w/": Dir(mode=0o777), "w/ro/": Dir(mode=0o755), "v/": Dir(mode=0o777)}
        with self.view(layer, redirect_dir=True) as root:
            fs = root.as_user(*ALICE)
            assert_errno(errno.EACCES, fs.rename, "/w/ro", "/v/ro")
            fs.rename("/w/ro", "/w/ro2")
            fs.mkdir("/w/mine")
            fs.rename("/w/mine", "/v/mine")

    def test_setgid_directory_hands_down_its_group(self) -> None:
        """New entries of a setgid directory get its group; new subdirectories the bit too;
        a setgid+group-exec file created there by a non-member loses the bit."""
        layer = {"s/": Dir(mode=0o2777, gid=1001)}
        with self.view(layer) as root:
            fs = root.as_user(*CAROL)
            fs.mkdir("/s/d", 0o755)
            st = fs.stat("/s/d")
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1002, 1001, 0o2755)
            fs.os_open("/s/f", os.O_WRONLY | os.O_CREAT, 0o2775).close()
            st = fs.stat("/s/f")
            assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (1001, 0o755)
            fs.symlink("f", "/s/l")
            assert fs.lstat("/s/l").st_gid == 1001

    def test_link_protected_hardlinks(self) -> None:
        """protected_hardlinks=1: a hard link to a file the caller neither owns nor may read
        and write is EPERM (before the directory's EACCES); to its own file it is fine."""
        layer = {"w/": Dir(mode=0o777), "ro": File(b"r", mode=0o644), "rw": File(b"w", mode=0o666),
                 "suid": File(b"s", mode=0o4777), "d/": Dir(mode=0o755)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            assert_errno(errno.EPERM, fs.link, "/ro", "/w/ro")
            assert_errno(errno.EPERM, fs.link, "/suid", "/w/suid")
            assert_errno(errno.EPERM, fs.link, "/ro", "/d/ro")
            assert_errno(errno.EACCES, fs.link, "/rw", "/d/rw")
            fs.link("/rw", "/w/rw")
            fs.write_bytes("/w/mine", b"m")
            fs.link("/w/mine", "/w/mine2")
            assert fs.stat("/w/mine2").st_nlink == 2

    # --- attributes ------------------------------------------------------------------------

    def test_chmod_and_chown_rules(self) -> None:
        """chmod: owner only (EPERM); setgid dropped when the owner is not in the file's
        group. chown: never to another uid; chgrp by the owner to one of its groups only."""
        layer = {"d/": Dir(mode=0o777), "d/mine": File(b"m", mode=0o644, uid=1000, gid=1001),
                 "d/root": File(b"r", mode=0o666)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            assert_errno(errno.EPERM, fs.chmod, "/d/root", 0o600)
            fs.chmod("/d/mine", 0o2755)
            assert mode_of(fs, "/d/mine") == 0o755  # not in group 1001
            assert_errno(errno.EPERM, fs.chown, "/d/mine", 1001, -1)
            fs.chown("/d/mine", 1000, -1)  # its own uid: allowed
            assert_errno(errno.EPERM, fs.chown, "/d/mine", -1, 1002)
            fs.chown("/d/mine", -1, 1000)
            fs.chmod("/d/mine", 0o2755)
            assert mode_of(fs, "/d/mine") == 0o2755
            assert_errno(errno.EPERM, fs.chown, "/d/root", -1, 1000)
            fs.chown("/d/root", -1, -1)  # changes nothing, needs nothing

    def test_write_and_truncate_drop_setuid_setgid(self) -> None:
        """file_remove_privs: a non-root write drops setuid, and setgid if group-executable;
        truncate too. Root's writes keep both (CAP_FSETID)."""
        layer = {"a": File(b"a", mode=0o6777), "b": File(b"b", mode=0o2766), "c": File(b"c", mode=0o6777)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            with fs.os_open("/a", os.O_WRONLY) as f:
                assert mode_of(fs, "/a") == 0o6777  # opening alone changes nothing
                f.write(b"x")
            assert mode_of(fs, "/a") == 0o777
            fs.truncate("/b", 0)
            assert mode_of(fs, "/b") == 0o766  # setgid without group exec, caller not in group 0
            root.write_bytes("/c", b"root")
            assert mode_of(root, "/c") == 0o6777
        up = self.upper_of(fs)
        assert isinstance(up["a"], File) and up["a"].mode == 0o777 and up["a"].data == b"x"

    def test_utime_rules(self) -> None:
        """utime(None) needs ownership or write permission (EACCES); explicit times need
        ownership (EPERM)."""
        layer = {"w": File(b"w", mode=0o666), "r": File(b"r", mode=0o644)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            fs.utime("/w")
            assert_errno(errno.EPERM, fs.utime, "/w", ns=(1, 2))
            assert_errno(errno.EACCES, fs.utime, "/r")

    def test_xattr_namespaces(self) -> None:
        """trusted.* is root's: EPERM to set, ENODATA to read, hidden from listxattr.
        user.* needs write permission (EACCES), and in a sticky directory ownership (EPERM)."""
        layer = {"f": File(b"f", mode=0o666, xattrs={"trusted.t": b"T", "user.u": b"U"}),
                 "r": File(b"r", mode=0o644), "t/": Dir(mode=0o1777)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            assert_errno(errno.EPERM, fs.setxattr, "/f", "trusted.x", b"1")
            assert_errno(errno.ENODATA, fs.getxattr, "/f", "trusted.t")
            assert sorted(fs.listxattr("/f")) == ["user.u"]
            assert sorted(root.listxattr("/f")) == ["trusted.t", "user.u"]
            fs.setxattr("/f", "user.n", b"N")
            assert_errno(errno.EACCES, fs.setxattr, "/r", "user.n", b"N")
            assert_errno(errno.EPERM, fs.setxattr, "/t", "user.n", b"N")
            assert_errno(errno.EPERM, fs.removexattr, "/f", "trusted.t")

    # --- copy-up -------------------------------------------------------------------------

    def test_copy_up_with_the_mounters_rights(self) -> None:
        """A world-writable file in a root-owned 0o755 directory: the caller may not write
        the directory, yet writing the file copies it (and the directory) up with the
        lower owners and modes, as overlayfs copies up with the mounter's credentials."""
        layer = {"etc/": Dir(mode=0o755), "etc/conf": File(b"old", mode=0o666, uid=0, gid=0)}
        with self.view(layer) as root:
            fs = root.as_user(*ALICE)
            assert_errno(errno.EACCES, fs.unlink, "/etc/conf")
            with fs.os_open("/etc/conf", os.O_WRONLY | os.O_APPEND) as f:
                f.write(b"+new")
            st = fs.stat("/etc/conf")
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o666)
            assert fs.read_bytes("/etc/conf") == b"old+new"
        up = self.upper_of(fs)
        assert isinstance(up["etc"], Dir) and (up["etc"].uid, up["etc"].mode) == (0, 0o755)
        assert isinstance(up["etc/conf"], File) and up["etc/conf"].data == b"old+new"

    def test_mknod_as_a_user(self) -> None:
        """A FIFO needs only write+search on the parent; a device node needs CAP_MKNOD
        (EPERM), but the parent's EACCES comes first."""
        layer = {"w/": Dir(mode=0o777), "r/": Dir(mode=0o755)}
        with self.view(layer) as root:
            fs = root.as_user(*BOB)
            fs.mkfifo("/w/p", 0o666)
            st = fs.lstat("/w/p")
            assert stat.S_ISFIFO(st.st_mode) and (st.st_uid, stat.S_IMODE(st.st_mode)) == (1001, 0o644)
            assert_errno(errno.EPERM, fs.mknod, "/w/c", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
            assert_errno(errno.EACCES, fs.mknod, "/r/c", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
            assert_errno(errno.EACCES, fs.mkfifo, "/r/p")

    def test_ftruncate_and_o_trunc_drop_setuid(self) -> None:
        """ftruncate through a handle and open(O_TRUNC) drop setuid as truncate(2) does;
        setgid without group exec stays for a member of the file's group."""
        layer = {"a": File(b"a", mode=0o4666), "b": File(b"b", mode=0o4666),
                 "g": File(b"g", mode=0o2666, gid=1000)}
        with self.view(layer) as root:
            fs = root.as_user(*BOB)
            with fs.os_open("/a", os.O_RDWR) as f:
                f.truncate(0)
            assert mode_of(fs, "/a") == 0o666
            fs.os_open("/b", os.O_WRONLY | os.O_TRUNC).close()
            assert mode_of(fs, "/b") == 0o666
            with fs.os_open("/g", os.O_WRONLY) as f:
                f.write(b"G")
            assert mode_of(fs, "/g") == 0o2666  # bob is in group 1000
            with root.as_user(*CAROL).os_open("/g", os.O_WRONLY) as f:
                f.write(b"C")
            assert mode_of(fs, "/g") == 0o666  # carol is not
