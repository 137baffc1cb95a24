"""Hypothesis state machines that drive the model and another implementation side by side.

:class:`DifferentialMachine` applies the same random operations (create, write, append,
truncate, unlink, mkdir, rmdir, rename, renameat2's exchange and noreplace, symlink, link,
chmod, chown, utime, get/set/list/remove xattrs, access, read, listdir, stat) to a
container of the model and to a *subject* built from the same image, optionally as a
non-root caller (``caller``: the model through ``fs.as_user``, the subject through its
``as_user``), and after every step compares errno of failures and the merged trees (as
root); at the end it compares the upper layers. Subclass it and implement
:meth:`~DifferentialMachine.open_subject` to test your own overlay implementation (a FUSE
filesystem, a flattener ...) against the model;
:class:`KernelMachine` is the subclass whose subject is the Linux kernel's overlayfs.

    class MyFSMachine(DifferentialMachine):
        def open_subject(self, image, options):
            return my_overlay_context_manager(image.layers, options)   # yields an os-style fs

    TestMyFS = MyFSMachine.TestCase
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ..container import Container
from ..image import Image
from ..layer import Layer
from ..options import OverlayOptions
from . import strategies as ust
from .compare import diff_dicts, layer_shape, snapshot

op_paths = st.one_of(
    ust.paths(),
    ust.paths(),
    ust.paths().map(lambda p: p + "/"),
    ust.paths().map(lambda p: p + "/.."),
    ust.paths().map(lambda p: p + "/."),
    st.sampled_from(["/", "/.", "/..", "a", "a/../b", "/a/./b", "//a//b"]),
)
"""Paths operations are applied to: mostly plain, sometimes with `/`, `.` or `..` tails."""
link_targets = st.sampled_from(["a", "../a", "/a/b", "b/c", "d", ".", "/", "..", "a/b/c/d", "../../..", "x"])
"""Symlink targets: relative, absolute, dangling, looping."""


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)`` or ``("errno", code)`` of calling ``fn``."""
    try:
        return ("ok", fn())
    except OSError as e:
        return ("errno", e.errno)


class DifferentialMachine(RuleBasedStateMachine):
    """Model vs subject: same image, same options, same operations, same answers.

    Class attributes a subclass may set:
        options: the OverlayOptions both sides run with.
        caller: ``(uid, gid, groups)`` every operation runs as (the model through
            ``fs.as_user``, the subject through its ``as_user``); None for root. The
            merged trees are compared as root either way.
        compare_upper: also compare the upper layers when an example ends.
        renameat2: the subject's ``rename`` takes ``exchange=``/``noreplace=`` (renameat2's
            RENAME_EXCHANGE/RENAME_NOREPLACE); set False to leave that rule out.
    """

    options: ClassVar[OverlayOptions] = OverlayOptions()
    caller: ClassVar[tuple[int, int, tuple[int, ...]] | None] = None
    compare_upper: ClassVar[bool] = True
    renameat2: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        self.model: Container | None = None
        self.subject: Any = None
        self.model_fs: Any = None
        self.subject_fs: Any = None
        self.image: Image | None = None

    # --- to implement ------------------------------------------------------------------

    def open_subject(self, image: Image, options: OverlayOptions) -> contextlib.AbstractContextManager[Any]:
        """A context manager that yields the subject's os-style fs for ``image``."""
        raise NotImplementedError

    def subject_upper(self) -> Layer | None:
        """The subject's upper layer after it was closed (None: not compared)."""
        return None

    # --- setup and teardown --------------------------------------------------------------

    @initialize(image=ust.images(max_layers=3))
    def setup(self, image: Image) -> None:
        self.image = image
        self.model = image.container(self.options)
        self.subject = self._stack.enter_context(self.open_subject(image, self.options))
        if self.caller is None:
            self.model_fs, self.subject_fs = self.model.fs, self.subject
        else:
            self.model_fs = self.model.fs.as_user(*self.caller)
            self.subject_fs = self.subject.as_user(*self.caller)
        self.check_trees()

    def teardown(self) -> None:
        try:
            self._stack.close()
        finally:
            self.subject = None
        if self.model is not None and self.compare_upper:
            theirs = self.subject_upper()
            if theirs is not None:
                mine = layer_shape(self.model.upper)
                other = layer_shape(theirs)
                assert mine == other, "upper layers differ:\n" + diff_dicts(mine, other)

    # --- the comparison ----------------------------------------------------------------

    def same(self, model: Callable[[Any], Any], *, result: bool = False) -> None:
        """Run ``model(fs)`` on both sides; errnos (and, if ``result``, results) must agree."""
        assert self.model is not None
        mine = outcome(lambda: model(self.model_fs))
        theirs = outcome(lambda: model(self.subject_fs))
        if not result and mine[0] == theirs[0] == "ok":
            return
        assert mine == theirs, f"model gave {_show(mine)}, subject gave {_show(theirs)}"

    def _subject_snapshot(self) -> dict[str, tuple[Any, ...]]:
        snap = getattr(self.subject, "snapshot", None)
        return snap() if snap is not None else snapshot(self.subject)

    @invariant()
    def check_trees(self) -> None:
        """The merged trees are equal."""
        if self.model is None or self.subject is None:
            return
        mine = snapshot(self.model.fs)
        theirs = self._subject_snapshot()
        self.last_subject_snapshot = theirs
        assert mine == theirs, "merged views differ:\n" + diff_dicts(mine, theirs, ("model", "subject"))

    # --- operations ----------------------------------------------------------------------

    # O_NONBLOCK everywhere: opening a FIFO must not wait for a peer that never comes.

    @rule(p=op_paths, data=ust.contents())
    def create(self, p: str, data: bytes) -> None:
        def op(fs: Any) -> int:
            with fs.os_open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, 0o666) as f:
                return int(f.write(data))
        self.same(op, result=True)

    @rule(p=op_paths, data=ust.contents(), offset=st.integers(0, 70))
    def write(self, p: str, data: bytes, offset: int) -> None:
        def op(fs: Any) -> int:
            with fs.os_open(p, os.O_WRONLY | os.O_NONBLOCK) as f:
                f.seek(offset)
                return int(f.write(data))
        self.same(op, result=True)

    @rule(p=op_paths, data=ust.contents())
    def append(self, p: str, data: bytes) -> None:
        def op(fs: Any) -> int:
            with fs.os_open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644) as f:
                return int(f.write(data))
        self.same(op, result=True)

    @rule(p=op_paths, size=st.integers(0, 80))
    def truncate(self, p: str, size: int) -> None:
        self.same(lambda fs: fs.truncate(p, size))

    @rule(p=op_paths)
    def unlink(self, p: str) -> None:
        self.same(lambda fs: fs.unlink(p))

    @rule(p=op_paths, mode=st.sampled_from([0o777, 0o755, 0o700, 0o1777, 0o2755]))
    def mkdir(self, p: str, mode: int) -> None:
        self.same(lambda fs: fs.mkdir(p, mode))

    @rule(p=op_paths)
    def rmdir(self, p: str) -> None:
        self.same(lambda fs: fs.rmdir(p))

    @rule(src=op_paths, dst=op_paths)
    def rename(self, src: str, dst: str) -> None:
        self.same(lambda fs: fs.rename(src, dst))

    @precondition(lambda self: self.renameat2)
    @rule(src=op_paths, dst=op_paths, flag=st.sampled_from(["exchange", "exchange", "noreplace"]))
    def rename2(self, src: str, dst: str, flag: str) -> None:
        self.same(lambda fs: fs.rename(src, dst, **{flag: True}))

    @rule(dest=link_targets, p=op_paths)
    def symlink(self, dest: str, p: str) -> None:
        self.same(lambda fs: fs.symlink(dest, p))

    @rule(src=op_paths, dst=op_paths)
    def link(self, src: str, dst: str) -> None:
        self.same(lambda fs: fs.link(src, dst))

    @rule(p=op_paths, mode=ust.modes())
    def chmod(self, p: str, mode: int) -> None:
        self.same(lambda fs: fs.chmod(p, mode))

    @rule(p=op_paths, uid=st.sampled_from([-1, 0, 1000, 1001, 1002]), gid=st.sampled_from([-1, 0, 1000, 1001, 1002]))
    def chown(self, p: str, uid: int, gid: int) -> None:
        self.same(lambda fs: fs.chown(p, uid, gid))

    @rule(p=op_paths, name=st.sampled_from(["user.a", "user.z", "trusted.t"]), value=st.binary(max_size=6))
    def setxattr(self, p: str, name: str, value: bytes) -> None:
        self.same(lambda fs: fs.setxattr(p, name, value))

    @rule(p=op_paths, name=st.sampled_from(["user.a", "user.b", "trusted.t"]))
    def xattrs(self, p: str, name: str) -> None:
        self.same(lambda fs: fs.getxattr(p, name), result=True)
        self.same(lambda fs: sorted(fs.listxattr(p)), result=True)

    @rule(p=op_paths, name=st.sampled_from(["user.a", "user.b", "trusted.t"]))
    def removexattr(self, p: str, name: str) -> None:
        self.same(lambda fs: fs.removexattr(p, name))

    @rule(p=op_paths, explicit=st.booleans(), follow=st.booleans())
    def utime(self, p: str, explicit: bool, follow: bool) -> None:
        times = (1_000_000_000, 2_000_000_000) if explicit else None
        self.same(lambda fs: fs.utime(p, ns=times, follow_symlinks=follow) if times else
                  fs.utime(p, follow_symlinks=follow))

    @rule(p=op_paths, mode=st.sampled_from([os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.W_OK]))
    def access(self, p: str, mode: int) -> None:
        self.same(lambda fs: fs.access(p, mode), result=True)

    @rule(p=op_paths)
    def read(self, p: str) -> None:
        def op(fs: Any) -> bytes:
            with fs.os_open(p, os.O_RDONLY | os.O_NONBLOCK) as f:
                return bytes(f.read(1 << 20) or b"")
        self.same(op, result=True)

    @rule(p=op_paths)
    def listdir(self, p: str) -> None:
        self.same(lambda fs: sorted(fs.listdir(p)), result=True)

    @rule(p=op_paths, follow=st.booleans())
    def stat(self, p: str, follow: bool) -> None:
        def op(fs: Any) -> tuple[int, int, int, int]:
            s = fs.stat(p, follow_symlinks=follow)
            return (s.st_mode, s.st_uid, s.st_gid, s.st_size if not (s.st_mode & 0o040000) else 0)
        self.same(op, result=True)


class KernelMachine(DifferentialMachine):
    """The model against the Linux kernel's overlayfs (needs root; see KernelOverlay)."""

    def open_subject(self, image: Image, options: OverlayOptions) -> contextlib.AbstractContextManager[Any]:
        from .kernel import KernelOverlay

        self._kernel = KernelOverlay(image.layers, options)
        return _fs_of(self._kernel)

    def subject_upper(self) -> Layer | None:
        return self._kernel.upper

    def teardown(self) -> None:
        super().teardown()
        upper = self._kernel.upper if hasattr(self, "_kernel") else None
        last = getattr(self, "last_subject_snapshot", None)
        if upper is None or last is None or self.image is None or self.options.index:
            # With index=on part of the state lives in the kernel's index directory, not
            # in the upperdir, so the upperdir alone cannot reproduce the merged view.
            return
        # The kernel's upperdir, read back and stacked on the image in the model, shows
        # exactly what the kernel showed.
        stacked = Image.from_layers([*self.image.layers, upper]).fs
        mine = snapshot(stacked, listed_absent=False)
        theirs = {k: v for k, v in last.items() if v != ("listed-but-absent",)}
        assert mine == theirs, "kernel upperdir stacked in the model differs:\n" + diff_dicts(mine, theirs)


@contextlib.contextmanager
def _fs_of(k: Any) -> Iterator[Any]:
    with k:
        yield k.fs


def _show(o: tuple[str, Any]) -> str:
    if o[0] == "errno":
        import errno as _errno

        return f"errno {_errno.errorcode.get(o[1], o[1])}"
    return f"result {o[1]!r}"


OPTION_SETS = [
    OverlayOptions(redirect_dir=rd, index=ix, metacopy=mc)
    for rd, ix, mc in itertools.product([False, True], repeat=3)
    if not (mc and not rd)  # metacopy=on needs redirect_dir=on, as the kernel requires
]
"""Every OverlayOptions the kernel mounts, for machines run once per option set."""


__all__ = ["OPTION_SETS", "DifferentialMachine", "KernelMachine", "link_targets", "op_paths", "outcome",
           "precondition"]
