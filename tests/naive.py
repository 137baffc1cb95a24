"""A deliberately naive reference: flatten every layer into one dict, then apply operations.

No indexes, no upper tree, no copy-up machinery: one ``dict`` of absolute keys to
objects (shared between hard links) and the POSIX rules written out the simple way.
The only overlay facts it knows are the three the kernel documents as non-standard:
renaming a directory that has lower content fails with EXDEV without redirect_dir,
copy-up breaks a lower hard link without index, and a lower object is copied (a new
identity) the first time it is written, linked or renamed.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Sequence
from typing import Any

from unionfs_sim import Dir, Fifo, File, Layer, Symlink, Whiteout
from unionfs_sim.nodes import Device, Socket


class Obj:
    """One inode of the naive model."""

    def __init__(self, kind: str, mode: int, uid: int = 0, gid: int = 0, data: bytes = b"",
                 target: str = "", xattrs: dict[str, bytes] | None = None, lower: bool = False) -> None:
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.data = bytearray(data)
        self.target = target
        self.xattrs = dict(xattrs or {})
        self.lower = lower  # still the image's object (not copied up)

    def clone(self) -> Obj:
        return Obj(self.kind, self.mode, self.uid, self.gid, bytes(self.data), self.target, self.xattrs, False)


class Err(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(errno.errorcode[code])
        self.errno = code


def _children(tree: dict[str, Obj], k: str) -> list[str]:
    pre = k + "/" if k else ""
    return [x for x in tree if x.startswith(pre) and x != k and "/" not in x[len(pre):]]


def _subtree(tree: dict[str, Obj], k: str) -> list[str]:
    pre = k + "/"
    return [x for x in tree if x == k or x.startswith(pre)]


def flatten(layers: Sequence[Layer]) -> dict[str, Obj]:
    """Apply layers bottom-up into one dict (the OCI rules, spelled out)."""
    tree: dict[str, Obj] = {"": Obj("d", 0o755, lower=True)}
    for layer in layers:
        objs: dict[int, Obj] = {}
        for k in sorted(layer, key=lambda k: k.split("/")):
            e = layer[k]
            parts = k.split("/")
            for i in range(1, len(parts)):
                p = "/".join(parts[:i])
                if p not in tree or tree[p].kind != "d":
                    for x in _subtree(tree, p):
                        del tree[x]
                    tree[p] = Obj("d", 0o755, lower=True)
            if isinstance(e, Whiteout):
                for x in _subtree(tree, k):
                    del tree[x]
                continue
            if isinstance(e, Dir):
                old = tree.get(k)
                if old is not None and old.kind == "d" and not e.opaque:
                    tree[k] = Obj("d", e.mode, e.uid, e.gid, xattrs=dict(e.xattrs), lower=True)
                    continue
            for x in _subtree(tree, k):
                del tree[x]
            o = objs.get(id(e))
            if o is None:
                o = objs[id(e)] = _obj(e)
            tree[k] = o
    return tree


def _obj(e: Any) -> Obj:
    x = dict(e.xattrs)
    if isinstance(e, File):
        return Obj("f", e.mode, e.uid, e.gid, e.data, xattrs=x, lower=True)
    if isinstance(e, Dir):
        return Obj("d", e.mode, e.uid, e.gid, xattrs=x, lower=True)
    if isinstance(e, Symlink):
        return Obj("l", e.mode, e.uid, e.gid, target=e.target, xattrs=x, lower=True)
    if isinstance(e, Fifo):
        return Obj("p", e.mode, e.uid, e.gid, xattrs=x, lower=True)
    if isinstance(e, Socket):
        return Obj("s", e.mode, e.uid, e.gid, xattrs=x, lower=True)
    assert isinstance(e, Device)
    return Obj(e.dev, e.mode, e.uid, e.gid, xattrs=x, lower=True)


class Naive:
    """The naive filesystem: ``tree`` maps keys ("" = root) to shared Obj instances."""

    def __init__(self, layers: Sequence[Layer], *, redirect_dir: bool = False, index: bool = False,
                 umask: int = 0o022) -> None:
        self.tree = flatten(layers)
        self.redirect_dir = redirect_dir
        self.index = index
        self.umask = umask
        # Directories that have lower content: renaming them needs redirect_dir.
        self.has_lower = {k for k, o in self.tree.items() if o.kind == "d"}

    # --- resolution ----------------------------------------------------------------

    def resolve(self, path: str, follow: bool, parent_only: bool = False) -> tuple[str, str, str | None, bool]:
        """(parent key, last name, key or None, trailing slash); raises Err."""
        slash = path.endswith("/")
        todo = [c for c in path.split("/")]
        todo.reverse()
        stack = [""]
        links = 0
        parent, name, cur = "", "", ""  # type: tuple[str, str, str | None]
        while todo:
            c = todo.pop()
            if c == "":
                continue
            d = stack[-1]
            if c == ".":
                parent, name, cur = d, ".", d
                continue
            if c == "..":
                if len(stack) > 1:
                    stack.pop()
                parent, name, cur = d, "..", stack[-1]
                continue
            if len(c.encode()) > 255:
                raise Err(errno.ENAMETOOLONG)
            k = f"{d}/{c}" if d else c
            last = not any(todo)
            o = self.tree.get(k)
            if o is None:
                if last:
                    return d, c, None, slash
                raise Err(errno.ENOENT)
            if last and parent_only:
                return d, c, k, slash
            if o.kind == "l" and (not last or follow or slash):
                links += 1
                if links > 40:
                    raise Err(errno.ELOOP)
                if o.target.startswith("/"):
                    del stack[1:]
                todo.extend(reversed(o.target.split("/")))
                if last:
                    parent, name, cur = d, c, None
                continue
            if o.kind == "d":
                stack.append(k)
            elif not last:
                raise Err(errno.ENOTDIR)
            parent, name, cur = d, c, k
        if cur is None:
            cur = stack[-1]
            parent, name = (stack[-2] if len(stack) > 1 else ""), "."
        return parent, name, cur, slash

    def get(self, path: str, follow: bool = True) -> str:
        _p, _n, k, slash = self.resolve(path, follow)
        if k is None:
            raise Err(errno.ENOENT)
        if slash and self.tree[k].kind != "d":
            raise Err(errno.ENOTDIR)
        return k

    @staticmethod
    def join(d: str, n: str) -> str:
        return f"{d}/{n}" if d else n

    def copy_up(self, k: str) -> Obj:
        """Copy-up: a lower object gets a new identity for this name unless index keeps the group."""
        o = self.tree[k]
        if not o.lower:
            return o
        if self.index:
            o.lower = False  # every name of the group sees the change
            return o
        n = o.clone()
        self.tree[k] = n
        return n

    def listing(self, k: str) -> list[str]:
        return sorted(x.rsplit("/", 1)[-1] for x in _children(self.tree, k))

    # --- operations (each mirrors an fs method) ----------------------------------------

    def create(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.open_write(path, data, creat=True, trunc=True, mode=mode)

    def open_write(self, path: str, data: bytes, *, creat: bool = False, trunc: bool = False,
                   append: bool = False, offset: int = 0, mode: int = 0o644, nonblock: bool = False) -> None:
        if creat and path.endswith("/"):
            self.resolve(path.rstrip("/") or "/", False)  # parent errors first
            raise Err(errno.EISDIR)
        parent, name, k, slash = self.resolve(path, True)
        if k is None:
            if not creat:
                raise Err(errno.ENOENT)
            if slash:
                raise Err(errno.EISDIR)
            if len(name.encode()) > 255:
                raise Err(errno.ENAMETOOLONG)
            k = self.join(parent, name)
            self.tree[k] = Obj("f", mode & ~self.umask & 0o7777, 0, self.new_gid(parent))
        else:
            o = self.tree[k]
            if o.kind == "d":
                raise Err(errno.EISDIR)
            if slash:
                raise Err(errno.ENOTDIR)
            if o.kind != "f":
                if o.kind == "s" or o.kind == "p" and nonblock:
                    raise Err(errno.ENXIO)
                return
        o = self.copy_up(k)
        if trunc:
            del o.data[:]
        pos = len(o.data) if append else offset
        if data and pos > len(o.data):
            o.data.extend(bytes(pos - len(o.data)))
        o.data[pos:pos + len(data)] = data

    def truncate(self, path: str, size: int) -> None:
        k = self.get(path, True)
        o = self.tree[k]
        if o.kind == "d":
            raise Err(errno.EISDIR)
        if o.kind != "f":
            raise Err(errno.EINVAL)
        o = self.copy_up(k)
        if size < len(o.data):
            del o.data[size:]
        else:
            o.data.extend(bytes(size - len(o.data)))

    def unlink(self, path: str) -> None:
        parent, name, k, slash = self.resolve(path, False, True)
        if name in (".", "..") or k == "":
            raise Err(errno.EISDIR)
        if k is None:
            raise Err(errno.ENOENT)
        if self.tree[k].kind == "d":
            raise Err(errno.EISDIR)
        if slash:
            raise Err(errno.ENOTDIR)
        del self.tree[k]

    def new_gid(self, parent: str) -> int:
        """The group of a new entry: the directory's in a setgid directory (inode_init_owner), else root's."""
        d = self.tree[parent]
        return d.gid if d.mode & stat.S_ISGID else 0

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        parent, name, k, _slash = self.resolve(path, False, True)
        if k is not None or name in (".", ".."):
            raise Err(errno.EEXIST)
        if len(name.encode()) > 255:
            raise Err(errno.ENAMETOOLONG)
        pmode = self.tree[parent].mode
        m = mode & 0o1777 & ~self.umask
        gid = 0
        if pmode & stat.S_ISGID:
            m |= stat.S_ISGID
            gid = self.tree[parent].gid
        self.tree[self.join(parent, name)] = Obj("d", m, 0, gid)

    def rmdir(self, path: str) -> None:
        parent, name, k, _slash = self.resolve(path, False, True)
        if name == ".":
            raise Err(errno.EINVAL)
        if name == "..":
            raise Err(errno.ENOTEMPTY)
        if k is None:
            raise Err(errno.ENOENT)
        if k == "":
            raise Err(errno.EBUSY)
        if self.tree[k].kind != "d":
            raise Err(errno.ENOTDIR)
        if _children(self.tree, k):
            raise Err(errno.ENOTEMPTY)
        del self.tree[k]
        self.has_lower.discard(k)

    def symlink(self, target: str, path: str) -> None:
        parent, name, k, slash = self.resolve(path, False, True)
        if k is not None or name in (".", ".."):
            raise Err(errno.EEXIST)
        if slash:
            raise Err(errno.ENOENT)
        if len(name.encode()) > 255:
            raise Err(errno.ENAMETOOLONG)
        self.tree[self.join(parent, name)] = Obj("l", 0o777, 0, self.new_gid(parent), target=target)

    def link(self, src: str, dst: str) -> None:
        s = self.get(src, False)  # link(2) does not follow a symlink at src
        parent, name, k, slash = self.resolve(dst, False, True)
        if k is not None or name in (".", ".."):
            raise Err(errno.EEXIST)
        if slash:
            raise Err(errno.ENOENT)
        if self.tree[s].kind == "d":
            raise Err(errno.EPERM)
        o = self.copy_up(s)
        self.tree[self.join(parent, name)] = o

    def rename(self, src: str, dst: str) -> None:
        sp, sn, s, sslash = self.resolve(src, False, True)
        dp, dn, d, dslash = self.resolve(dst, False, True)
        if sn in ("", ".", "..") or dn in ("", ".", ".."):
            raise Err(errno.EBUSY)
        if s is None:
            raise Err(errno.ENOENT)
        so = self.tree[s]
        sdir = so.kind == "d"
        if (sslash or dslash) and not sdir:
            raise Err(errno.ENOTDIR)
        dk = self.join(dp, dn)
        if sdir and dk.startswith(s + "/"):
            raise Err(errno.EINVAL)
        if d is not None and s.startswith(d + "/"):
            raise Err(errno.ENOTEMPTY)
        if d is not None:
            do = self.tree[d]
            if sdir and do.kind != "d":
                raise Err(errno.ENOTDIR)
            if not sdir and do.kind == "d":
                raise Err(errno.EISDIR)
            if s == d or (so is do and (not so.lower or self.index)):
                return
        if len(dn.encode()) > 255:
            raise Err(errno.ENAMETOOLONG)
        if sdir and s in self.has_lower and not self.redirect_dir:
            raise Err(errno.EXDEV)
        if d is not None and self.tree[d].kind == "d" and _children(self.tree, d):
            raise Err(errno.ENOTEMPTY)
        if not sdir:
            self.copy_up(s)
        moved = {x: self.tree[x] for x in _subtree(self.tree, s)}
        lower_dirs = {x for x in moved if x in self.has_lower}
        if d is not None:
            for x in _subtree(self.tree, d):
                del self.tree[x]
                self.has_lower.discard(x)
        for x in moved:
            del self.tree[x]
            self.has_lower.discard(x)
        for x, o in moved.items():
            nk = dk + x[len(s):]
            self.tree[nk] = o
            if x in lower_dirs:
                self.has_lower.add(nk)

    def chmod(self, path: str, mode: int) -> None:
        k = self.get(path, True)
        self.copy_up(k).mode = mode & 0o7777

    def chown(self, path: str, uid: int, gid: int) -> None:
        k = self.get(path, True)
        o = self.copy_up(k)
        if uid != -1:
            o.uid = uid
        if gid != -1:
            o.gid = gid
        if o.kind != "d":
            o.mode &= ~stat.S_ISUID
            if o.mode & stat.S_IXGRP:
                o.mode &= ~stat.S_ISGID

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        k = self.get(path, True)
        o = self.tree[k]
        if name.startswith("user.") and o.kind not in ("f", "d"):
            raise Err(errno.EPERM)
        self.copy_up(k).xattrs[name] = value

    # --- the view, in the shape tests compare ----------------------------------------

    def view(self) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        for k, o in self.tree.items():
            if o.kind == "f":
                out["/" + k] = ("f", o.mode, o.uid, o.gid, bytes(o.data), tuple(sorted(o.xattrs.items())))
            elif o.kind == "l":
                out["/" + k] = ("l", o.uid, o.gid, o.target, tuple(sorted(o.xattrs.items())))
            else:
                out["/" + k] = (o.kind, o.mode, o.uid, o.gid, tuple(sorted(o.xattrs.items())))
        return out
