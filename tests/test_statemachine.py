"""Random operation sequences on containers of random layered images, checked against a naive model.

After every step the merged view of the container (walked through the os-style API)
must equal the naive model's dict, and every failure must carry the same errno.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import unionfs_sim as ufs
from unionfs_sim.fs import FileSystem
from unionfs_sim.testing import strategies as ust
from unionfs_sim.testing.machines import link_targets as targets
from unionfs_sim.testing.machines import op_paths

from .naive import Err, Naive

OPTIONS = [
    ufs.OverlayOptions(),
    ufs.OverlayOptions(redirect_dir=True),
    ufs.OverlayOptions(index=True),
    ufs.OverlayOptions(redirect_dir=True, index=True, metacopy=True),
]


def view(fs: FileSystem) -> dict[str, tuple[Any, ...]]:
    """The merged view as the naive model shapes it: path -> (type, attributes, content)."""
    out: dict[str, tuple[Any, ...]] = {}

    def one(p: str) -> None:
        try:
            st_ = fs.lstat(p)
        except FileNotFoundError:
            # A whiteout listed in a non-merged directory (the kernel's quirk, which the
            # kernel differential test checks); the naive model has no such names.
            return
        xs = tuple(sorted((n, fs.getxattr(p, n, follow_symlinks=False))
                          for n in fs.listxattr(p, follow_symlinks=False)))
        mode = stat.S_IMODE(st_.st_mode)
        if stat.S_ISREG(st_.st_mode):
            out[p] = ("f", mode, st_.st_uid, st_.st_gid, fs.read_bytes(p), xs)
        elif stat.S_ISLNK(st_.st_mode):
            out[p] = ("l", st_.st_uid, st_.st_gid, fs.readlink(p), xs)
        else:
            kind = {stat.S_IFDIR: "d", stat.S_IFIFO: "p", stat.S_IFSOCK: "s", stat.S_IFCHR: "c", stat.S_IFBLK: "b"}
            out[p] = (kind[stat.S_IFMT(st_.st_mode)], mode, st_.st_uid, st_.st_gid, xs)
            if stat.S_ISDIR(st_.st_mode):
                for name in fs.listdir(p):
                    one(p.rstrip("/") + "/" + name)

    one("/")
    return {("/" + k.strip("/")) if k != "/" else "/": v for k, v in out.items()}


def naive_view(n: Naive) -> dict[str, tuple[Any, ...]]:
    return {("/" + k.strip("/")) if k != "/" else "/": v for k, v in n.view().items()}


def outcome(fn: Callable[[], Any]) -> int | None:
    try:
        fn()
    except Err as e:
        return e.errno
    except OSError as e:
        return e.errno
    return None




class OverlayVsNaive(RuleBasedStateMachine):
    """Drives one container and the naive model with the same operations."""

    def __init__(self) -> None:
        super().__init__()
        self.c: ufs.Container
        self.n: Naive
        self.opts: ufs.OverlayOptions

    @initialize(image=ust.images(max_layers=3), opts=st.sampled_from(OPTIONS))
    def setup(self, image: ufs.Image, opts: ufs.OverlayOptions) -> None:
        self.opts = opts
        self.c = image.container(opts)
        self.n = Naive(image.layers, redirect_dir=opts.redirect_dir, index=opts.index)
        assert view(image.fs) == naive_view(self.n)

    def same(self, model: Callable[[], Any], naive: Callable[[], Any]) -> None:
        a, b = outcome(model), outcome(naive)
        assert a == b, f"model errno {a} != naive errno {b}"

    @rule(p=op_paths, data=ust.contents())
    def create(self, p: str, data: bytes) -> None:
        def model() -> None:
            with self.c.fs.os_open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, 0o666) as f:
                f.write(data)
        self.same(model, lambda: self.n.open_write(p, data, creat=True, trunc=True, mode=0o666, nonblock=True))

    @rule(p=op_paths, data=ust.contents(), offset=st.integers(0, 70))
    def write(self, p: str, data: bytes, offset: int) -> None:
        def model() -> None:
            with self.c.fs.os_open(p, os.O_WRONLY | os.O_NONBLOCK) as f:
                f.seek(offset)
                f.write(data)
        self.same(model, lambda: self.n.open_write(p, data, offset=offset, nonblock=True))

    @rule(p=op_paths, data=ust.contents())
    def append(self, p: str, data: bytes) -> None:
        def model() -> None:
            with self.c.fs.os_open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644) as f:
                f.write(data)
        self.same(model, lambda: self.n.open_write(p, data, creat=True, append=True, mode=0o644, nonblock=True))

    @rule(p=op_paths, size=st.integers(0, 80))
    def truncate(self, p: str, size: int) -> None:
        self.same(lambda: self.c.fs.truncate(p, size), lambda: self.n.truncate(p, size))

    @rule(p=op_paths)
    def unlink(self, p: str) -> None:
        self.same(lambda: self.c.fs.unlink(p), lambda: self.n.unlink(p))

    @rule(p=op_paths, mode=st.sampled_from([0o777, 0o755, 0o700, 0o1777]))
    def mkdir(self, p: str, mode: int) -> None:
        self.same(lambda: self.c.fs.mkdir(p, mode), lambda: self.n.mkdir(p, mode))

    @rule(p=op_paths)
    def rmdir(self, p: str) -> None:
        self.same(lambda: self.c.fs.rmdir(p), lambda: self.n.rmdir(p))

    @rule(src=op_paths, dst=op_paths)
    def rename(self, src: str, dst: str) -> None:
        self.same(lambda: self.c.fs.rename(src, dst), lambda: self.n.rename(src, dst))

    @rule(dest=targets, p=op_paths)
    def symlink(self, dest: str, p: str) -> None:
        self.same(lambda: self.c.fs.symlink(dest, p), lambda: self.n.symlink(dest, p))

    @rule(src=op_paths, dst=op_paths)
    def link(self, src: str, dst: str) -> None:
        self.same(lambda: self.c.fs.link(src, dst), lambda: self.n.link(src, dst))

    @rule(p=op_paths, mode=ust.modes())
    def chmod(self, p: str, mode: int) -> None:
        self.same(lambda: self.c.fs.chmod(p, mode), lambda: self.n.chmod(p, mode))

    @rule(p=op_paths, uid=st.sampled_from([-1, 0, 1000]), gid=st.sampled_from([-1, 0, 1000]))
    def chown(self, p: str, uid: int, gid: int) -> None:
        self.same(lambda: self.c.fs.chown(p, uid, gid), lambda: self.n.chown(p, uid, gid))

    @rule(p=op_paths, name=st.sampled_from(["user.a", "user.z", "trusted.t"]), value=st.binary(max_size=6))
    def setxattr(self, p: str, name: str, value: bytes) -> None:
        self.same(lambda: self.c.fs.setxattr(p, name, value), lambda: self.n.setxattr(p, name, value))

    @rule()
    def commit(self) -> None:
        new = self.c.commit(comment="step")
        assert view(new.fs) == view(self.c.fs)
        self.c = new.container(self.opts)
        # Everything is lower now: every object is the image's, every dir has lower content.
        for o in self.n.tree.values():
            o.lower = True
        self.n.has_lower = {k for k, o in self.n.tree.items() if o.kind == "d"}

    @invariant()
    def views_agree(self) -> None:
        if hasattr(self, "c"):
            assert view(self.c.fs) == naive_view(self.n)


OverlayVsNaive.TestCase.settings = settings(
    max_examples=int(os.environ.get("UFS_STATEFUL_EXAMPLES", "300")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestOverlayVsNaive = OverlayVsNaive.TestCase
