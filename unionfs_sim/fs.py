"""FileSystem: the os-style facade over a merged view (stat, open, mkdir, rename ...).

Paths are resolved as Linux resolves them inside a container's root: ``.`` and ``..``
(``..`` at ``/`` stays at ``/``), relative and absolute symlinks (an absolute target is
taken from the view's root), ELOOP after 40 links, ENAMETOOLONG for a name over 255
bytes or a path of 4096. Errors are OSErrors carrying the kernel's errno. Methods take
a lock, so one view can serve many threads (the FUSE mount does).
"""

from __future__ import annotations

import copy
import io
import os
import re
import stat as _stat
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, ClassVar, TypeVar

import attrs

from . import errors
from .content import MAX_SIZE
from .nodes import Device, Dir, File, Node, Symlink
from .overlay import Inode, Loc, Overlay, now_ns
from .paths import NAME_MAX, PATH_MAX, to_str

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]
F = TypeVar("F", bound=Callable[..., Any])

_UNUSUAL = re.compile(r"(^|/)\.\.?(/|$)|//|/$|\x00")
"""Paths the fast lookup leaves to the full walk: ``.``/``..`` parts, ``//``, a trailing ``/``."""
MAXSYMLINKS = 40
"""Linux follows at most 40 symbolic links in one path resolution."""
ST_DEV = 0x0000_4F56  # "OV": one device for the whole view, as overlayfs with xino
DIR_SIZE = 4096
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_CREATE = getattr(os, "XATTR_CREATE", 1)
XATTR_REPLACE = getattr(os, "XATTR_REPLACE", 2)
_XATTR_NAMESPACES = ("user.", "trusted.", "security.", "system.")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR
MAY_EXEC, MAY_WRITE, MAY_READ = 1, 2, 4
"""The kernel's permission mask bits (include/linux/fs.h), in the positions of rwx."""


@attrs.frozen
class Credentials:
    """Who a non-root view acts as: fsuid, fsgid and supplementary groups, no capabilities.

    The rules are the kernel's for a caller without CAP_DAC_OVERRIDE, CAP_FOWNER,
    CAP_CHOWN or CAP_FSETID (fs/namei.c, fs/attr.c, fs/xattr.c); root (uid 0) is not a
    Credentials but ``FileSystem.caller is None``, which bypasses them all.
    """

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    def in_group(self, gid: int) -> bool:
        """``in_group_p``: the fsgid or a supplementary group."""
        return gid == self.gid or gid in self.groups

    def permits(self, obj: Inode | Node, mask: int) -> bool:
        """``generic_permission`` without ACLs: the owner's bits if the caller owns ``obj``,
        else the group's if it is in the group, else the others'."""
        mode = obj.mode
        if obj.uid == self.uid:
            mode >>= 6
        elif obj.gid == self.gid or obj.gid in self.groups:
            mode >>= 3
        return mode & mask == mask

    def owns(self, obj: Inode | Node) -> bool:
        """``inode_owner_or_capable`` for a caller without CAP_FOWNER."""
        return obj.uid == self.uid


class _Resolved:
    """The outcome of resolving a path: the parent directory, the last name, what is there."""

    __slots__ = ("parent", "name", "loc", "slash", "path")

    def __init__(self, parent: Loc, name: str, loc: Loc | None, slash: bool, path: str) -> None:
        self.parent = parent
        self.name = name
        self.loc = loc
        self.slash = slash  # the path ended in '/' (the result must be a directory)
        self.path = path


def walk_scandir(scandir: Callable[[str], Iterable[Any]], top: str, topdown: bool = True,
                 onerror: Callable[[OSError], Any] | None = None,
                 followlinks: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
    """:func:`os.walk` over any ``scandir`` whose entries have ``name``, ``is_dir()`` and
    ``is_symlink()`` (the facades here, and the kernel's in :mod:`unionfs_sim.testing`)."""
    try:
        entries = list(scandir(top))
    except OSError as e:
        if onerror is not None:
            onerror(e)
        return
    dirs, files, links = [], [], []
    for ent in entries:
        if ent.is_dir():
            dirs.append(ent.name)
            if ent.is_symlink():
                links.append(ent.name)
        else:
            files.append(ent.name)
    if topdown:
        yield top, dirs, files
    for name in dirs:  # after the yield: the caller may prune dirs, as with os.walk
        if not followlinks and name in links:
            continue
        yield from walk_scandir(scandir, top.rstrip("/") + "/" + name, topdown, onerror, followlinks)
    if not topdown:
        yield top, dirs, files


class FileSystem:
    """The os-style API of one merged view (an image's read-only one or a container's).

    Attributes:
        umask: applied to the mode of new files and directories (default 0o022).
        uid, gid: the credentials new files and directories are owned by (default root).
        caller: whose permissions are checked: None for root (every capability, no
            checks: the default), or the :class:`Credentials` :meth:`as_user` set.
        path_max: paths of this many bytes or more fail with ENAMETOOLONG (PATH_MAX,
            as a system call checks them); None for no limit (see :meth:`unbounded`).
    """

    handle_class: ClassVar[type[Handle]]
    """What :meth:`os_open` opens files as (a subclass may add to what an open file does)."""

    def __init__(self, overlay: Overlay) -> None:
        self._ov = overlay
        self._lock = overlay.lock
        self.umask = 0o022
        self.uid = 0
        self.gid = 0
        self.caller: Credentials | None = None
        self.path_max: int | None = PATH_MAX
        self._searchable: tuple[int, dict[str, bool]] = (-1, {})

    def as_user(self, uid: int, gid: int, groups: Iterable[int] = ()) -> FileSystem:
        """A facade on the same view (same overlay, lock and open-file semantics) that acts
        as the process with fsuid ``uid``, fsgid ``gid`` and supplementary ``groups``.

        Every call then passes the kernel's DAC checks (search permission on each
        directory of a path, read/write on the object, write+search on the parent to
        create or remove, the sticky bit, owner-only chmod/utime, root-only chown ...)
        with the errno the kernel picks; new objects are owned by ``uid`` and ``gid`` (or
        a setgid directory's group). Its umask starts at 0o022. ``uid`` 0 is root: no
        checks, as the default facade. Copy-up still happens with the mounter's (root's)
        rights, as overlayfs does it.
        """
        other = copy.copy(self)
        other.uid, other.gid = uid, gid
        other.umask = 0o022
        other.caller = None if uid == 0 else Credentials(uid, gid, frozenset(groups))
        other._searchable = (-1, {})
        return other

    def unbounded(self) -> FileSystem:
        """A second facade on the same view and lock, without the PATH_MAX check.

        For a server that receives whole paths from its root, such as FUSE: the kernel
        applies PATH_MAX to what a process passes relative to its working directory, so
        the path from the mount's root may be longer.
        """
        other = copy.copy(self)
        other.path_max = None
        other._searchable = (-1, {})
        return other

    # --- permission checks (no-ops for root) -------------------------------------------

    def _need(self, obj: Inode | Node, mask: int, path: str) -> None:
        """EACCES unless the caller has ``mask`` on ``obj`` (``inode_permission``)."""
        c = self.caller
        if c is not None and not c.permits(obj, mask):
            raise errors.AccessDenied(path)

    def _may_create(self, d: Loc, path: str) -> None:
        """``may_create``: write and search permission on the directory ``d``."""
        if self.caller is not None:
            self._need(self._ov.effective(d), MAY_WRITE | MAY_EXEC, path)

    def _may_delete(self, d: Loc, victim: Loc, path: str) -> None:
        """``may_delete`` (its permission part): write+search on ``d`` (EACCES), then the
        sticky bit: only the owner of the victim or of the directory (EPERM)."""
        c = self.caller
        if c is None:
            return
        dobj = self._ov.effective(d)
        self._need(dobj, MAY_WRITE | MAY_EXEC, path)
        if dobj.mode & _stat.S_ISVTX and not c.owns(self._ov.effective(victim)) and not c.owns(dobj):
            raise errors.NotPermitted(path)

    def _drop_sgid(self, obj: Inode | Node) -> bool:
        """``setattr_should_drop_sgid``: setgid goes on a change of a group-executable file
        by anyone, or of any file by a caller outside its group (root: CAP_FSETID)."""
        if not obj.mode & _stat.S_ISGID:
            return False
        if obj.mode & _stat.S_IXGRP:
            return True
        c = self.caller
        return c is not None and not c.in_group(obj.gid)

    def _kill_privs(self, obj: Inode | Node) -> int | None:
        """``file_remove_privs`` before a write or truncate: the mode without setuid (and
        setgid, see :meth:`_drop_sgid`), or None if nothing goes (root keeps them)."""
        if self.caller is None or obj.kind != "f":
            return None
        mode = obj.mode
        if mode & _stat.S_ISUID:
            mode &= ~_stat.S_ISUID
        if self._drop_sgid(obj):
            mode &= ~_stat.S_ISGID
        return mode if mode != obj.mode else None

    def _chain_searchable(self, key: str) -> bool:
        """True if every directory from the root down to the directory ``key`` (a plain
        key the fast lookup found) lets the caller search it; cached per view change."""
        gen = self._ov.generation
        cached_gen, cache = self._searchable
        if cached_gen != gen:
            cache = {}
            self._searchable = (gen, cache)
        ok = cache.get(key)
        if ok is None:
            ok = self._searchable_from(key, cache)
        return ok

    def _searchable_from(self, key: str, cache: dict[str, bool]) -> bool:
        if not key:
            ok = self._may_search(self._ov.root_loc())
        else:
            parent = key.rpartition("/")[0]
            above = cache.get(parent)
            ok = self._searchable_from(parent, cache) if above is None else above
            if ok:
                loc = self._ov.fast(key)
                if isinstance(loc, Loc):
                    ok = loc.is_dir and self._may_search(loc)
                else:
                    try:
                        r = self._resolve("/" + key)
                        ok = r.loc is not None and r.loc.is_dir and self._may_search(r.loc)
                    except OSError:
                        ok = False
        cache[key] = ok
        return ok

    def _may_search(self, d: Loc) -> bool:
        c = self.caller
        return c is None or c.permits(self._ov.effective(d), MAY_EXEC)

    @property
    def overlay(self) -> Overlay:
        """The merged view this facade operates on."""
        return self._ov

    @property
    def readonly(self) -> bool:
        """True for an image's view: every write raises EROFS."""
        return self._ov.readonly

    @property
    def lock(self) -> threading.RLock:
        """The lock that serialises operations on this view: the overlay's own."""
        return self._lock

    # --- path resolution -------------------------------------------------------------

    def _resolve(self, path: PathArg, follow: bool = True, *, parent_only: bool = False) -> _Resolved:
        p = to_str(path)
        if not p:
            raise errors.NotFound(p)
        if "\x00" in p:
            raise ValueError("embedded null byte")
        limit = self.path_max
        if limit is not None and len(p) >= limit // 4 and len(os.fsencode(p)) >= limit:
            raise errors.NameTooLong(p)
        ov = self._ov
        root = ov.root_loc()
        stack: list[Loc] = [root]
        todo = [c for c in p.split("/") if c]
        todo.reverse()
        slash = p.endswith("/")
        links = 0
        name = ""
        cur: Loc | None = root
        parent = root
        caller = self.caller
        while todo:
            comp = todo.pop()
            d = stack[-1]
            if caller is not None and not caller.permits(ov.effective(d), MAY_EXEC):
                raise errors.AccessDenied(p)  # may_lookup, before every component
            if comp == ".":
                parent, name, cur = (d.parent or d), ".", d
                continue
            if comp == "..":
                if len(stack) > 1:
                    stack.pop()
                parent, name, cur = d, "..", stack[-1]
                continue
            if len(comp) > NAME_MAX // 4 and len(os.fsencode(comp)) > NAME_MAX:
                raise errors.NameTooLong(p)
            child = ov.child(d, comp)
            last = not todo
            if child is None:
                if last:
                    return _Resolved(d, comp, None, slash, p)
                raise errors.NotFound(p)
            kind = child.kind
            if last and parent_only:
                return _Resolved(d, comp, child, slash, p)
            if kind == "l" and (not last or follow or slash):
                links += 1
                if links > MAXSYMLINKS:
                    raise errors.TooManyLinks(p)
                target = self._link_target(child)
                if target.startswith("/"):
                    del stack[1:]
                todo.extend(c for c in reversed(target.split("/")) if c)
                if last:
                    # The link was the last name: what it points at is now the last name.
                    parent, name, cur = d, comp, None
                continue
            if kind == "d":
                stack.append(child)
            elif not last:
                raise errors.NotADirectory(p)
            parent, name, cur = d, comp, child
        if cur is None:
            # A final symlink whose target named no component (e.g. "/"): its directory.
            cur = stack[-1]
            parent, name = cur.parent or cur, "."
        return _Resolved(parent, name, cur, slash, p)

    def _link_target(self, loc: Loc) -> str:
        obj = self._ov.effective(loc)
        assert isinstance(obj, (Inode, Symlink)) and obj.target is not None
        return obj.target

    def _get(self, path: PathArg, follow: bool = True, *, fast: bool = True) -> Loc:
        if fast and type(path) is str and 0 < len(path) < 1024 and path[-1] != "/" and "//" not in path \
                and path[0] != "." and ("/." not in path or not _UNUSUAL.search(path)):
            # Fast path: a plain path found in the index needs no component walk.
            key = path.strip("/")
            loc = self._ov.fast(key)
            if loc is not None and (not follow or loc.kind != "l"):
                if self.caller is None:
                    return loc
                parent = key.rpartition("/")[0]
                gen, cache = self._searchable
                if (cache.get(parent) and gen == self._ov.generation) or self._chain_searchable(parent):
                    return loc
        r = self._resolve(path, follow)
        if r.loc is None:
            raise errors.NotFound(r.path)
        if r.slash and not r.loc.is_dir:
            raise errors.NotADirectory(r.path)
        return r.loc

    def _check_writable(self, path: str) -> None:
        if self._ov.readonly:
            raise errors.ReadOnly(path)

    # --- stat ------------------------------------------------------------------------

    def _stat(self, loc: Loc, nlink: int | None = None) -> os.stat_result:
        ov = self._ov
        o = ov.effective(loc)
        if isinstance(o, Inode):
            mode = o.st_mode
            size = DIR_SIZE if o.kind == "d" else o.size
            at, mt, ct = o.atime_ns, o.mtime_ns, o.ctime_ns
            rdev = o.rdev
        else:
            mode = o.st_mode
            size = DIR_SIZE if isinstance(o, Dir) else o.size
            at = mt = ct = o.mtime_ns
            rdev = o.rdev if isinstance(o, Device) else 0
        return os.stat_result((
            mode, ov.ino(loc), ST_DEV, ov.nlink(loc) if nlink is None else nlink, o.uid, o.gid, size,
            at // 1_000_000_000, mt // 1_000_000_000, ct // 1_000_000_000,
            at / 1e9, mt / 1e9, ct / 1e9, at, mt, ct,
            4096, (size + 4095) // 4096 * 8 if not _stat.S_ISLNK(mode) else 0, rdev,
        ))

    def stat(self, path: PathArg, *, follow_symlinks: bool = True) -> os.stat_result:
        """As :func:`os.stat`: attributes of ``path`` (following a final symlink by default)."""
        with self._lock:
            return self._stat(self._get(path, follow_symlinks))

    def lstat(self, path: PathArg) -> os.stat_result:
        """As :func:`os.lstat`: attributes of ``path`` itself, not of a symlink's target."""
        with self._lock:
            return self._stat(self._get(path, False))

    # --- by location: for a server that keeps the names it resolved (FUSE) ------------------

    def locate(self, path: PathArg) -> Loc:
        """The name ``path`` resolves to (a final symlink not followed), for :meth:`lookup` and
        :meth:`stat_at`. It stays valid while ``overlay.generation`` does not change."""
        with self._lock:
            return self._get(path, False)

    def lookup(self, parent: Loc, name: str) -> Loc:
        """The entry ``name`` of directory ``parent``, as FUSE's LOOKUP asks (one name, no
        symlink followed): ENAMETOOLONG over 255 bytes, ENOTDIR if ``parent`` is not a
        directory, ENOENT if the name is absent or whited out."""
        if len(name) > NAME_MAX // 4 and len(os.fsencode(name)) > NAME_MAX:
            raise errors.NameTooLong(name)
        with self._lock:
            if not parent.is_dir:
                raise errors.NotADirectory(parent.path)
            child = self._ov.child(parent, name)
        if child is None:
            raise errors.NotFound(name)
        return child

    def stat_at(self, loc: Loc) -> os.stat_result:
        """lstat(2) of a located name (see :meth:`locate`)."""
        with self._lock:
            return self._stat(loc)

    def exists(self, path: PathArg) -> bool:
        """True if ``path`` resolves (following symlinks), as :func:`os.path.exists`."""
        try:
            self.stat(path)
        except (OSError, ValueError):
            return False
        return True

    def lexists(self, path: PathArg) -> bool:
        """True if ``path`` names something, even a dangling symlink."""
        try:
            self.lstat(path)
        except (OSError, ValueError):
            return False
        return True

    def isdir(self, path: PathArg) -> bool:
        """True if ``path`` is a directory (following symlinks)."""
        try:
            return _stat.S_ISDIR(self.stat(path).st_mode)
        except (OSError, ValueError):
            return False

    def isfile(self, path: PathArg) -> bool:
        """True if ``path`` is a regular file (following symlinks)."""
        try:
            return _stat.S_ISREG(self.stat(path).st_mode)
        except (OSError, ValueError):
            return False

    def islink(self, path: PathArg) -> bool:
        """True if ``path`` is a symbolic link."""
        try:
            return _stat.S_ISLNK(self.lstat(path).st_mode)
        except (OSError, ValueError):
            return False

    def which_layer(self, path: PathArg) -> int:
        """Index into the image's layers (0 = bottom) of the layer providing ``path``.

        ``len(layers)`` means the container's upper layer. A merged directory is
        provided by the topmost layer that has it. Follows no final symlink.
        """
        with self._lock:
            loc = self._get(path, False)
            if loc.up is not None or loc.ix is not None:
                return self._ov.lower.depth
            assert loc.lpath is not None
            w = self._ov.lower.where[loc.lpath]
            return max(w, 0)

    # --- directories -----------------------------------------------------------------

    def _dir(self, path: PathArg) -> Loc:
        loc = self._get(path, True)
        if not loc.is_dir:
            raise errors.NotADirectory(to_str(path))
        if self.caller is not None:
            self._need(self._ov.effective(loc), MAY_READ, to_str(path))  # may_open of the dir
        return loc

    def listdir(self, path: PathArg = "/") -> list[str]:
        """As :func:`os.listdir`: the names in a directory, sorted (no ``.``/``..``)."""
        with self._lock:
            return self._ov.names(self._dir(path))

    def scandir(self, path: PathArg = "/") -> Iterator[DirEntry]:
        """As :func:`os.scandir`: entries of a directory with cached type information."""
        with self._lock:
            d = self._dir(path)
            base = to_str(path)
            prefix = base if base.endswith("/") else base + "/"
            out = []
            ov = self._ov
            dl = d.dir_lpath
            if d.up is None and dl is not None and not ov.has_index:
                # A directory only the lower layers have: types straight from the index.
                nodes = ov.lower.nodes
                pre = dl + "/" if dl else ""
                for n in ov.names(d):
                    node = nodes.get(pre + n)
                    out.append(DirEntry(self, prefix + n, n, node.kind if node is not None else "c", d, 0))
                return iter(out)
            for n in ov.names(d):
                c = ov.child(d, n)
                if c is not None:
                    out.append(DirEntry(self, prefix + n, n, c.kind, d, ov.ino(c)))
                else:  # a whiteout the kernel lists but cannot look up (Lower.strays)
                    out.append(DirEntry(self, prefix + n, n, "c", d, 0))
        return iter(out)

    def walk(self, top: PathArg = "/", topdown: bool = True, onerror: Callable[[OSError], Any] | None = None,
             followlinks: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
        """As :func:`os.walk`: ``(dirpath, dirnames, filenames)`` for each directory."""
        return walk_scandir(self.scandir, to_str(top), topdown, onerror, followlinks)

    def mkdir(self, path: PathArg, mode: int = 0o777) -> None:
        """As :func:`os.mkdir`; the new directory's mode is ``mode & ~umask``."""
        with self._lock:
            r = self._resolve(path, False, parent_only=True)
            if r.loc is not None or r.name in (".", ".."):
                raise errors.Exists(r.path)
            self._check_writable(r.path)
            perm = mode & 0o1777 & ~self.umask
            self._create(r, "d", perm)

    def makedirs(self, path: PathArg, mode: int = 0o777, exist_ok: bool = False) -> None:
        """As :func:`os.makedirs`: create every missing directory of ``path``."""
        p = to_str(path).rstrip("/")
        parts = [x for x in p.split("/") if x]
        cur = "/" if p.startswith("/") else ""
        for i, part in enumerate(parts):
            cur = (cur.rstrip("/") + "/" + part) if cur else part
            try:
                self.mkdir(cur, mode)
            except FileExistsError:
                if i == len(parts) - 1 and not (exist_ok and self.isdir(cur)):
                    raise
                if i < len(parts) - 1 and not self.isdir(cur):
                    raise errors.NotADirectory(cur) from None

    def rmdir(self, path: PathArg) -> None:
        """As :func:`os.rmdir`: remove an empty directory (whiteout if a lower one exists)."""
        with self._lock:
            r = self._resolve(path, False, parent_only=True)
            if r.name == ".":
                raise errors.InvalidArgument(r.path)
            if r.name == "..":
                raise errors.NotEmpty(r.path)
            if r.name == "":
                raise errors.Busy(r.path)
            self._check_writable(r.path)  # do_rmdir: EROFS before the last lookup
            loc = r.loc
            if loc is None:
                raise errors.NotFound(r.path)
            self._may_delete(r.parent, loc, r.path)
            if not loc.is_dir:
                raise errors.NotADirectory(r.path)
            if not self._ov.is_empty(loc):
                raise errors.NotEmpty(r.path)
            self._ov.remove(loc)

    # --- creating --------------------------------------------------------------------

    def _owner(self, parent: Inode | Node) -> tuple[int, int, bool]:
        """``inode_init_owner``: the caller's ids, or a setgid directory's group."""
        sgid = bool(parent.mode & _stat.S_ISGID)
        return self.uid, (parent.gid if sgid else self.gid), sgid

    def _create(self, r: _Resolved, kind: str, perm: int, *, target: str | None = None, rdev: int = 0) -> Inode:
        """Create a new object at the (absent) last name of ``r``; ``r.loc`` becomes its Loc."""
        if len(r.name) > NAME_MAX // 4 and len(os.fsencode(r.name)) > NAME_MAX:
            raise errors.NameTooLong(r.path)
        ov = self._ov
        pobj = ov.effective(r.parent)
        self._may_create(r.parent, r.path)
        uid, gid, sgid = self._owner(pobj)
        if kind == "d" and sgid:
            perm |= _stat.S_ISGID
        elif (sgid and perm & _stat.S_ISGID and perm & _stat.S_IXGRP and self.caller is not None
              and not self.caller.in_group(pobj.gid)):
            perm &= ~_stat.S_ISGID  # mode_strip_sgid: not in the setgid directory's group
        node = ov.new_inode(kind, perm, uid, gid, target=target, rdev=rdev)
        r.loc = ov.add(r.parent, r.name, node)
        return node

    def symlink(self, target: PathArg, path: PathArg, target_is_directory: bool = False) -> None:
        """As :func:`os.symlink`: create ``path`` pointing at ``target`` (not resolved)."""
        t = to_str(target)
        with self._lock:
            if not t:
                raise errors.NotFound(to_str(path))
            if len(os.fsencode(t)) >= PATH_MAX:
                raise errors.NameTooLong(to_str(path))
            r = self._resolve(path, False, parent_only=True)
            if r.loc is not None or r.name in (".", ".."):
                raise errors.Exists(r.path)
            if r.slash:
                raise errors.NotFound(r.path)
            self._check_writable(r.path)
            self._create(r, "l", 0o777, target=t)

    def mknod(self, path: PathArg, mode: int = 0o600, device: int = 0) -> None:
        """As :func:`os.mknod`: a regular file, FIFO, socket or device node."""
        fmt = _stat.S_IFMT(mode) or _stat.S_IFREG
        kinds = {_stat.S_IFREG: "f", _stat.S_IFIFO: "p", _stat.S_IFSOCK: "s", _stat.S_IFCHR: "c", _stat.S_IFBLK: "b"}
        if fmt not in kinds:
            raise errors.InvalidArgument(to_str(path))
        with self._lock:
            r = self._resolve(path, False, parent_only=True)
            if r.loc is not None or r.name in (".", ".."):
                raise errors.Exists(r.path)
            if r.slash:
                raise errors.NotFound(r.path)
            self._check_writable(r.path)
            if self.caller is not None:
                self._may_create(r.parent, r.path)
                if fmt in (_stat.S_IFCHR, _stat.S_IFBLK):
                    raise errors.NotPermitted(r.path)  # vfs_mknod: a device needs CAP_MKNOD
            if fmt == _stat.S_IFCHR and device == 0:
                raise errors.NotPermitted(r.path)  # ovl_mknod: a 0/0 char device is a whiteout
            rdev = device if fmt in (_stat.S_IFCHR, _stat.S_IFBLK) else 0
            self._create(r, kinds[fmt], _stat.S_IMODE(mode) & ~self.umask, rdev=rdev)

    def mkfifo(self, path: PathArg, mode: int = 0o666) -> None:
        """As :func:`os.mkfifo`."""
        self.mknod(path, _stat.S_IFIFO | _stat.S_IMODE(mode))

    def link(self, src: PathArg, dst: PathArg, *, follow_symlinks: bool = False) -> None:
        """As :func:`os.link` on Linux: a new name for ``src`` (copied up first, as overlayfs does).

        CPython's ``os.link(src, dst)`` calls link(2), which links a symlink itself rather
        than its target, whatever ``follow_symlinks`` says; so does this by default.
        ``follow_symlinks=True`` gives linkat(2) with AT_SYMLINK_FOLLOW.
        """
        with self._lock:
            s = self._get(src, follow_symlinks, fast=False)  # copy-up needs the parent chain
            r = self._resolve(dst, False, parent_only=True)
            if r.loc is not None or r.name in (".", ".."):
                raise errors.Exists(r.path)
            if r.slash:
                raise errors.NotFound(r.path)
            self._check_writable(r.path)
            c = self.caller
            if c is not None:
                obj = self._ov.effective(s)
                if not c.owns(obj) and not self._safe_hardlink_source(obj):
                    raise errors.NotPermitted(to_str(src))  # may_linkat, protected_hardlinks=1
                self._may_create(r.parent, r.path)
            if s.is_dir:
                raise errors.NotPermitted(to_str(src))
            if len(r.name) > NAME_MAX // 4 and len(os.fsencode(r.name)) > NAME_MAX:
                raise errors.NameTooLong(r.path)
            self._ov.link(s, r.parent, r.name)

    def _safe_hardlink_source(self, obj: Inode | Node) -> bool:
        """``safe_hardlink_source``: a regular file, neither setuid nor setgid-executable,
        that the caller may read and write."""
        m = obj.mode
        if obj.kind != "f" or m & _stat.S_ISUID:
            return False
        if m & (_stat.S_ISGID | _stat.S_IXGRP) == _stat.S_ISGID | _stat.S_IXGRP:
            return False
        return self.caller is None or self.caller.permits(obj, MAY_READ | MAY_WRITE)

    # --- removing and renaming ---------------------------------------------------------

    def unlink(self, path: PathArg) -> None:
        """As :func:`os.unlink`: remove a non-directory (a whiteout hides a lower one)."""
        with self._lock:
            r = self._resolve(path, False, parent_only=True)
            if r.name in ("", ".", ".."):
                raise errors.IsADirectory(r.path)
            self._check_writable(r.path)  # do_unlinkat: EROFS before the last lookup
            loc = r.loc
            if loc is None:
                raise errors.NotFound(r.path)
            if r.slash:
                raise (errors.IsADirectory if loc.is_dir else errors.NotADirectory)(r.path)
            self._may_delete(r.parent, loc, r.path)
            if loc.is_dir:
                raise errors.IsADirectory(r.path)
            self._ov.remove(loc)

    remove = unlink

    def rename(self, src: PathArg, dst: PathArg, *, noreplace: bool = False, exchange: bool = False) -> None:
        """As :func:`os.rename` (which replaces ``dst`` on Linux): move a name.

        ``noreplace`` and ``exchange`` are renameat2(2)'s RENAME_NOREPLACE (EEXIST if
        ``dst`` exists) and RENAME_EXCHANGE (swap two existing names, of any types),
        both of which overlayfs supports. Moving a directory that has lower content
        needs ``redirect_dir`` (EXDEV otherwise, as the kernel gives it, so that ``mv``
        falls back to copying).
        """
        if noreplace and exchange:
            raise errors.InvalidArgument(to_str(src), to_str(dst))
        with self._lock:
            rs = self._resolve(src, False, parent_only=True)
            rd = self._resolve(dst, False, parent_only=True)
            s = rs.loc
            # Before ENOENT, as do_renameat2 (which gives EEXIST for a NOREPLACE target).
            if rs.name in ("", ".", ".."):
                raise errors.Busy(rs.path, rd.path)
            if rd.name in ("", ".", ".."):
                raise (errors.Exists if noreplace else errors.Busy)(rs.path, rd.path)
            self._check_writable(rs.path)
            if s is None:
                raise errors.NotFound(rs.path)
            d = rd.loc
            if noreplace and d is not None:
                raise errors.Exists(rs.path, rd.path)
            if exchange and d is None:
                raise errors.NotFound(rs.path, rd.path)
            if (rs.slash and not s.is_dir) or (rd.slash and not (d.is_dir if exchange and d else s.is_dir)):
                raise errors.NotADirectory(rs.path, rd.path)
            # A directory cannot move below itself; the target cannot be an ancestor of
            # the source (lock_rename's "trap", checked whatever the source is).
            if s.is_dir and _within(rd.parent, s):
                raise errors.InvalidArgument(rs.path, rd.path)
            if d is not None and d.is_dir and _within(rs.parent, d):
                if exchange:
                    raise errors.InvalidArgument(rs.path, rd.path)
                raise errors.NotEmpty(rs.path, rd.path)
            if d is not None and self._same(s, d):
                return  # vfs_rename: source and target are one inode, nothing to check
            self._may_delete(rs.parent, s, rs.path)
            if d is None:
                self._may_create(rd.parent, rd.path)
            else:
                self._may_delete(rd.parent, d, rd.path)
                if not exchange and s.is_dir and not d.is_dir:
                    raise errors.NotADirectory(rs.path, rd.path)
                if not exchange and not s.is_dir and d.is_dir:
                    raise errors.IsADirectory(rs.path, rd.path)
            if self.caller is not None and rs.parent.path != rd.parent.path:
                # A directory moving to another parent: its ".." changes, so write on it.
                if s.is_dir:
                    self._need(self._ov.effective(s), MAY_WRITE, rs.path)
                if exchange and d is not None and d.is_dir:
                    self._need(self._ov.effective(d), MAY_WRITE, rd.path)
            if len(rd.name) > NAME_MAX // 4 and len(os.fsencode(rd.name)) > NAME_MAX:
                raise errors.NameTooLong(rd.path)
            ov = self._ov
            for loc in (s, d) if exchange else (s,):
                if loc is not None and loc.is_dir and loc.lo is not None and not ov.options.redirect_dir:
                    raise errors.CrossDevice(rs.path, rd.path)
            if exchange:
                assert d is not None
                ov.exchange(s, d)
                return
            if d is not None and d.is_dir and not ov.is_empty(d):
                raise errors.NotEmpty(rs.path, rd.path)
            ov.rename(s, rd.parent, rd.name, d)

    replace = rename

    def _same(self, a: Loc, b: Loc) -> bool:
        """True if two names are one inode (rename between them does nothing)."""
        if a.path == b.path:
            return True
        ea, eb = self._ov.effective(a), self._ov.effective(b)
        if ea is not eb:
            return False
        # Lower hard links are one overlay inode only with index=on (or read-only).
        return isinstance(ea, Inode) or self._ov.options.index or self._ov.readonly

    # --- links -----------------------------------------------------------------------

    def readlink(self, path: PathArg) -> str:
        """As :func:`os.readlink`: the target of a symbolic link."""
        with self._lock:
            loc = self._get(path, False)
            if loc.kind != "l":
                raise errors.InvalidArgument(to_str(path))
            return self._link_target(loc)

    # --- attributes ------------------------------------------------------------------

    def _meta_target(self, path: PathArg, follow: bool) -> tuple[Loc, str]:
        r = self._resolve(path, follow)
        if r.loc is None:
            raise errors.NotFound(r.path)
        if r.slash and not r.loc.is_dir:
            raise errors.NotADirectory(r.path)
        self._check_writable(r.path)
        return r.loc, r.path

    def chmod(self, path: PathArg, mode: int, *, follow_symlinks: bool = True) -> None:
        """As :func:`os.chmod`: set permission bits (copy-up of metadata)."""
        with self._lock:
            loc, p = self._meta_target(path, follow_symlinks)
            self._chmod(loc, p, mode)

    def chmod_at(self, loc: Loc, mode: int) -> None:
        """:meth:`chmod` of a located name (no symlink followed), as FUSE's SETATTR asks.

        ``loc`` must carry its chain of parent Locs up to one in the upper layer (a copy-up
        walks it), as :meth:`lookup` gives; :meth:`locate`'s may lack it.
        """
        with self._lock:
            p = "/" + loc.path
            self._check_writable(p)
            self._chmod(loc, p, mode)

    def _chmod(self, loc: Loc, p: str, mode: int) -> None:
        if loc.kind == "l":
            raise errors.NotSupported(p)
        new = _stat.S_IMODE(mode)
        c = self.caller
        if c is not None:  # setattr_prepare
            obj = self._ov.effective(loc)
            if not c.owns(obj):
                raise errors.NotPermitted(p)
            if not c.in_group(obj.gid):
                new &= ~_stat.S_ISGID
        self._ov.setattr(loc, mode=new)

    def chown(self, path: PathArg, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """As :func:`os.chown`; -1 leaves an id unchanged. Clears setuid/setgid as Linux does."""
        with self._lock:
            loc, p = self._meta_target(path, follow_symlinks)
            obj = self._ov.effective(loc)
            new_mode = None
            if loc.kind != "d":
                # chown_common: any chown of a non-directory, even by root and with
                # uid = gid = -1, drops setuid, and setgid as setattr_should_drop_sgid
                # says (notify_change turns ATTR_KILL_S*ID into a mode change).
                m = obj.mode & ~_stat.S_ISUID
                if self._drop_sgid(obj):
                    m &= ~_stat.S_ISGID
                if m != obj.mode:
                    new_mode = m
            c = self.caller
            if c is not None:  # setattr_prepare: chown_ok, chgrp_ok, then the mode change
                owner = c.owns(obj)
                if uid != -1 and not (owner and uid == obj.uid):
                    raise errors.NotPermitted(p)
                if gid != -1 and not (owner and (gid == obj.gid or c.in_group(gid))):
                    raise errors.NotPermitted(p)
                if new_mode is not None and not owner:
                    raise errors.NotPermitted(p)
            self._ov.setattr(loc, mode=new_mode, uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)

    def lchown(self, path: PathArg, uid: int, gid: int) -> None:
        """As :func:`os.lchown`."""
        self.chown(path, uid, gid, follow_symlinks=False)

    def utime(self, path: PathArg, times: tuple[float, float] | None = None, *,
              ns: tuple[int, int] | None = None, follow_symlinks: bool = True) -> None:
        """As :func:`os.utime`: set access and modification times (now if neither given)."""
        if times is not None and ns is not None:
            raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
        with self._lock:
            loc, p = self._meta_target(path, follow_symlinks)
            c = self.caller
            if c is not None:
                obj = self._ov.effective(loc)
                if c.owns(obj):
                    pass
                elif times is None and ns is None:
                    self._need(obj, MAY_WRITE, p)  # may_setattr: ATTR_TOUCH needs write
                else:
                    raise errors.NotPermitted(p)  # setattr_prepare: explicit times, owner only
            t = now_ns()
            if ns is not None:
                at, mt = ns
            elif times is not None:
                at, mt = int(times[0] * 1e9), int(times[1] * 1e9)
            else:
                at = mt = t
            self._ov.setattr(loc, atime_ns=at, mtime_ns=mt)

    def truncate(self, path: PathArg, length: int) -> None:
        """As :func:`os.truncate`: cut or extend a regular file (copy-up of data)."""
        with self._lock:
            loc = self._get(path, True, fast=False)
            p = to_str(path)
            if loc.is_dir:
                raise errors.IsADirectory(p)
            if loc.kind != "f":
                raise errors.InvalidArgument(p)
            self._check_writable(p)
            if length < 0:
                raise errors.InvalidArgument(p)
            obj = self._ov.effective(loc)
            self._need(obj, MAY_WRITE, p)
            if length > MAX_SIZE:
                raise errors.FileTooBig(p)
            self._ov.setattr(loc, size=length, mode=self._kill_privs(obj))

    # --- xattrs ----------------------------------------------------------------------

    @staticmethod
    def _xname(path: str, name: str | bytes) -> str:
        n = os.fsdecode(name) if isinstance(name, bytes) else name
        if not n or len(os.fsencode(n)) > XATTR_NAME_MAX:
            raise errors.Range(path)
        if not n.startswith(_XATTR_NAMESPACES):
            raise errors.NotSupported(path)
        if n in _XATTR_NAMESPACES:
            raise errors.InvalidArgument(path)  # a namespace with no name
        return n

    def _xattr_permission(self, loc: Loc, name: str, write: bool, path: str) -> None:
        """``xattr_permission`` for a non-root caller: ``trusted.*`` is root's (EPERM to
        write, ENODATA to read); ``user.*`` only on regular files and directories, and
        in a sticky directory only for its owner; then read or write permission."""
        c = self.caller
        if c is None or name.startswith(("security.", "system.")):
            return
        obj = self._ov.effective(loc)
        if name.startswith("trusted."):
            raise (errors.NotPermitted if write else errors.NoData)(path)
        if name.startswith("user."):
            if obj.kind not in ("f", "d"):
                raise (errors.NotPermitted if write else errors.NoData)(path)
            if write and obj.kind == "d" and obj.mode & _stat.S_ISVTX and not c.owns(obj):
                raise errors.NotPermitted(path)
        self._need(obj, MAY_WRITE if write else MAY_READ, path)

    def getxattr(self, path: PathArg, attribute: str | bytes, *, follow_symlinks: bool = True) -> bytes:
        """As :func:`os.getxattr`; overlayfs's own ``trusted.overlay.*`` names are hidden."""
        with self._lock:
            p = to_str(path)
            name = self._xname(p, attribute)
            loc = self._get(path, follow_symlinks)
            self._xattr_permission(loc, name, False, p)
            v = self._ov.effective(loc).xattrs.get(name)
            if v is None:
                raise errors.NoData(p)
            return bytes(v)

    def listxattr(self, path: PathArg = "/", *, follow_symlinks: bool = True) -> list[str]:
        """As :func:`os.listxattr`; a non-root caller does not see ``trusted.*`` names
        (ovl_can_list lists them for CAP_SYS_ADMIN only)."""
        with self._lock:
            loc = self._get(path, follow_symlinks)
            names = list(self._ov.effective(loc).xattrs)
            if self.caller is not None:
                names = [n for n in names if not n.startswith("trusted.")]
            return names

    def setxattr(self, path: PathArg, attribute: str | bytes, value: bytes, flags: int = 0, *,
                 follow_symlinks: bool = True) -> None:
        """As :func:`os.setxattr` (flags XATTR_CREATE / XATTR_REPLACE); copies up metadata."""
        with self._lock:
            p = to_str(path)
            name = self._xname(p, attribute)
            v = bytes(value)
            if len(v) > XATTR_SIZE_MAX:
                raise errors.TooBig(p)
            loc, p = self._meta_target(path, follow_symlinks)
            if name.startswith("user.") and loc.kind not in ("f", "d"):
                raise errors.NotPermitted(p)
            self._xattr_permission(loc, name, True, p)
            have = name in self._ov.effective(loc).xattrs
            if flags & XATTR_CREATE and have:
                raise errors.Exists(p)
            if flags & XATTR_REPLACE and not have:
                raise errors.NoData(p)
            self._ov.set_xattr(loc, name, v)

    def removexattr(self, path: PathArg, attribute: str | bytes, *, follow_symlinks: bool = True) -> None:
        """As :func:`os.removexattr`."""
        with self._lock:
            p = to_str(path)
            name = self._xname(p, attribute)
            loc, p = self._meta_target(path, follow_symlinks)
            if name.startswith("user.") and loc.kind not in ("f", "d"):
                raise errors.NotPermitted(p)  # xattr_permission, for root too
            self._xattr_permission(loc, name, True, p)
            if name not in self._ov.effective(loc).xattrs:
                raise errors.NoData(p)
            self._ov.set_xattr(loc, name, None)

    # --- open ------------------------------------------------------------------------

    def os_open(self, path: PathArg, flags: int, mode: int = 0o777) -> Handle:
        """As :func:`os.open` with ``os.O_*`` flags, returning a binary file object.

        The handle behaves like a POSIX file descriptor: reads and writes at its
        offset, ``O_APPEND`` writes at the end, and it keeps the file alive after unlink.
        """
        with self._lock:
            acc = flags & os.O_ACCMODE
            writing = acc in (os.O_WRONLY, os.O_RDWR)
            creat = bool(flags & os.O_CREAT)
            excl = creat and bool(flags & os.O_EXCL)
            follow = not (flags & os.O_NOFOLLOW) and not excl
            r = self._resolve(path, follow=follow, parent_only=creat and _has_slash(path))
            if creat and r.slash:
                raise errors.IsADirectory(r.path)  # O_CREAT with a trailing slash, as Linux
            loc = r.loc
            if loc is None:
                if not creat:
                    raise errors.NotFound(r.path)
                if r.slash:
                    raise errors.IsADirectory(r.path)
                if flags & os.O_DIRECTORY:
                    raise errors.InvalidArgument(r.path)
                self._check_writable(r.path)
                inode = self._create(r, "f", mode & 0o7777 & ~self.umask)
                assert r.loc is not None
                return self.handle_class(self, r.path, r.loc, inode, flags)
            if excl:
                raise errors.Exists(r.path)
            kind = loc.kind
            if kind == "l":
                raise errors.TooManyLinks(r.path)  # O_NOFOLLOW on a symlink
            if flags & os.O_DIRECTORY and kind != "d":
                raise errors.NotADirectory(r.path)
            trunc = bool(flags & os.O_TRUNC)
            # may_open: O_TRUNC asks for write permission too (build_open_flags)
            mask = (MAY_READ if acc != os.O_WRONLY else 0) | (MAY_WRITE if writing or trunc else 0)
            if kind == "d":
                if writing or creat or trunc:
                    raise errors.IsADirectory(r.path)
                self._need(self._ov.effective(loc), mask, r.path)
                return self.handle_class(self, r.path, loc, None, flags)
            if r.slash:
                raise errors.NotADirectory(r.path)
            if self.caller is not None:
                if writing or trunc:
                    self._check_writable(r.path)  # inode_permission: EROFS before EACCES
                self._need(self._ov.effective(loc), mask, r.path)
            if kind == "s":
                raise errors.error(6, r.path)  # ENXIO: a socket cannot be opened
            if kind != "f":
                # FIFOs and devices are not copied up by open (overlayfs's open only
                # handles regular files); a FIFO with no reader cannot be opened for
                # writing without blocking (ENXIO with O_NONBLOCK, as Linux).
                if kind == "p" and acc == os.O_WRONLY and flags & os.O_NONBLOCK:
                    raise errors.error(6, r.path)
                return self.handle_class(self, r.path, loc, loc.up if loc.up is not None else loc.ix, flags)
            if writing or trunc:
                self._check_writable(r.path)
                inode = self._ov.copy_up(loc)
                if trunc:  # handle_truncate: do_truncate, which drops setuid/setgid too
                    self._ov.setattr(inode, size=0, mode=self._kill_privs(inode))
                return self.handle_class(self, r.path, loc, inode, flags)
            return self.handle_class(self, r.path, loc, loc.up if loc.up is not None else loc.ix, flags)

    def create_at(self, parent: Loc, name: str, flags: int, mode: int, uid: int,
                  gid: int) -> tuple[Handle, Loc] | None:
        """FUSE's CREATE where it is plain: a new regular file ``name`` in ``parent``, a
        directory already in the upper layer, made by ``uid``/``gid`` with ``mode`` (the
        caller's umask applied already), open with ``flags``: its handle and its Loc.

        None, having changed nothing, where :meth:`os_open` must decide: the name is
        there, the directory is not upper yet, an unusual name or flag, permission checks
        on (``caller``). The same object, owner and mode as ``os_open`` with ``O_CREAT``
        as that caller, without building and resolving a path.
        """
        up = parent.up
        if (up is None or up.entries is None or self.caller is not None or flags & os.O_DIRECTORY
                or not name or "/" in name or name in (".", "..") or len(name) > NAME_MAX // 4):
            return None
        ov = self._ov
        with self._lock:
            if ov.readonly or name in up.entries:
                return None  # there, or a whiteout the disk has to have replaced
            dl = parent.dir_lpath
            if dl is not None and ov.lower.nodes.get(f"{dl}/{name}" if dl else name) is not None:
                return None
            if up.mode & _stat.S_ISGID:
                gid = up.gid  # inode_init_owner: a setgid directory's group
            node = ov.new_inode("f", mode & 0o7777, uid, gid)
            loc = ov.add(parent, name, node)
            return self.handle_class(self, "/" + loc.path, loc, node, flags), loc

    def open(self, path: PathArg, mode: str = "r", buffering: int = -1, encoding: str | None = None,
             errors_: str | None = None, newline: str | None = None, *, errors: str | None = None) -> IO[Any]:
        """As the builtin :func:`open`: a text or binary file object over the view."""
        flags, binary = _flags_of(mode)
        raw = self.os_open(path, flags, 0o666)
        raw.mode = mode
        if buffering == 0:
            if not binary:
                raw.close()
                raise ValueError("can't have unbuffered text I/O")
            return raw  # type: ignore[return-value]
        size = io.DEFAULT_BUFFER_SIZE if buffering in (-1, 1) else buffering
        buf: io.BufferedIOBase
        if raw.readable() and raw.writable():
            buf = io.BufferedRandom(raw, size)
        elif raw.writable():
            buf = io.BufferedWriter(raw, size)
        else:
            buf = io.BufferedReader(raw, size)
        if binary:
            return buf
        text = io.TextIOWrapper(buf, encoding or "utf-8", errors or errors_, newline,
                                line_buffering=buffering == 1)
        text.mode = mode  # type: ignore[misc]
        return text

    # --- whole-file helpers ------------------------------------------------------------

    def read_bytes(self, path: PathArg) -> bytes:
        """The whole content of a file."""
        with self.os_open(path, os.O_RDONLY) as f:
            return f.readall()

    def read_text(self, path: PathArg, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The whole content of a file, decoded."""
        return self.read_bytes(path).decode(encoding, errors)

    def write_bytes(self, path: PathArg, data: bytes) -> int:
        """Replace (or create) a file's content; copies a lower file up first."""
        with self.os_open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666) as f:
            return f.write(data)

    def write_text(self, path: PathArg, data: str, encoding: str = "utf-8", errors: str = "strict") -> int:
        """Replace (or create) a file's content with encoded text."""
        self.write_bytes(path, data.encode(encoding, errors))
        return len(data)

    def access(self, path: PathArg, mode: int = os.F_OK) -> bool:
        """As :func:`os.access`: existence, then the caller's read/write/execute permission
        (root: anything but executing a file with no execute bit); no write on a read-only view."""
        try:
            with self._lock:
                loc = self._get(path, True)
                obj = self._ov.effective(loc)
        except (OSError, ValueError):
            return False
        if mode & os.W_OK and self.readonly:
            return False
        if self.caller is not None:
            return self.caller.permits(obj, mode & 7)
        return not (mode & os.X_OK and obj.kind != "d" and not obj.mode & 0o111)


def _has_slash(path: PathArg) -> bool:
    return to_str(path).endswith("/")


def _within(d: Loc, ancestor: Loc) -> bool:
    """True if directory Loc ``d`` is ``ancestor`` or lies below it (by the resolved chain)."""
    cur: Loc | None = d
    while cur is not None:
        if cur.path == ancestor.path:
            return True
        cur = cur.parent
    return False


def _flags_of(mode: str) -> tuple[int, bool]:
    """Translate a builtin ``open`` mode string into os.O_* flags."""
    chars = set(mode)
    if not chars <= set("rwaxbt+") or len(mode) != len(chars):
        raise ValueError(f"invalid mode: {mode!r}")
    if len(chars & set("rwax")) != 1 or ("b" in chars and "t" in chars):
        raise ValueError(f"invalid mode: {mode!r}")
    plus = "+" in chars
    if "r" in chars:
        flags = os.O_RDWR if plus else os.O_RDONLY
    elif "w" in chars:
        flags = (os.O_RDWR if plus else os.O_WRONLY) | os.O_CREAT | os.O_TRUNC
    elif "a" in chars:
        flags = (os.O_RDWR if plus else os.O_WRONLY) | os.O_CREAT | os.O_APPEND
    else:
        flags = (os.O_RDWR if plus else os.O_WRONLY) | os.O_CREAT | os.O_EXCL
    return flags, "b" in chars


class DirEntry:
    """As :class:`os.DirEntry`: one name from :meth:`FileSystem.scandir`."""

    __slots__ = ("_fs", "path", "name", "_kind", "_dir", "_ino")

    def __init__(self, fs: FileSystem, path: str, name: str, kind: str, d: Loc, ino: int) -> None:
        self._fs = fs
        self.path = path
        self.name = name
        self._kind = kind
        self._dir = d
        self._ino = ino  # 0: not looked up yet

    def inode(self) -> int:
        """The entry's inode number."""
        if not self._ino:
            with self._fs.lock:
                c = self._fs.overlay.child(self._dir, self.name)
                self._ino = self._fs.overlay.ino(c) if c is not None else 0
        return self._ino

    def is_symlink(self) -> bool:
        """True if the entry is a symbolic link."""
        return self._kind == "l"

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        """True if the entry is (or, following a symlink, points at) a directory."""
        if self._kind == "l" and follow_symlinks:
            return self._fs.isdir(self.path)
        return self._kind == "d"

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        """True if the entry is (or points at) a regular file."""
        if self._kind == "l" and follow_symlinks:
            return self._fs.isfile(self.path)
        return self._kind == "f"

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        """The entry's attributes."""
        return self._fs.stat(self.path, follow_symlinks=follow_symlinks)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r}>"


class Handle(io.RawIOBase):
    """An open file of the view, with POSIX file-descriptor semantics.

    It holds the file itself, not its name: after ``unlink`` (or rename) it still reads
    and writes the same data. A read-only handle on a lower file follows the file to the
    upper layer when another name copies it up (as overlayfs reopens the real file).
    """

    def __init__(self, fs: FileSystem, path: str, loc: Loc, inode: Inode | None, flags: int) -> None:
        super().__init__()
        self._fs = fs
        self.name = path
        self.mode = "rb"
        self._flags = flags
        self._inode = inode
        self._lo: Node | None = loc.lo if inode is None else None
        self._lpath = loc.lpath
        self._pos = 0
        self._dir = loc.kind == "d"
        acc = flags & os.O_ACCMODE
        self._readable = acc in (os.O_RDONLY, os.O_RDWR) and not self._dir
        self._writable = acc in (os.O_WRONLY, os.O_RDWR)

    @property
    def flags(self) -> int:
        """The os.O_* flags the handle was opened with."""
        return self._flags

    def set_append(self, on: bool) -> None:
        """Turn O_APPEND on or off, as ``fcntl(F_SETFL)`` does on an open descriptor."""
        self._flags = self._flags | os.O_APPEND if on else self._flags & ~os.O_APPEND

    @property
    def inode(self) -> Inode | None:
        """The upper inode the handle holds (None: a lower file not copied up yet)."""
        return self._inode

    def _obj(self) -> Inode | Node:
        if self._inode is None and self._lo is not None and self._lpath is not None:
            up = self._fs.overlay.copied(self._lo, self._lpath)
            if up is not None:
                self._inode = up
        if self._inode is not None:
            return self._inode
        assert self._lo is not None
        return self._lo

    def _check(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def readable(self) -> bool:
        """True if opened for reading."""
        self._check()
        return self._readable

    def writable(self) -> bool:
        """True if opened for writing."""
        self._check()
        return self._writable

    def seekable(self) -> bool:
        """Always True (regular files)."""
        self._check()
        return True

    def fileno(self) -> int:
        """No OS descriptor exists behind a model handle."""
        raise io.UnsupportedOperation("fileno: a unionfs_sim handle has no OS file descriptor")

    def readinto(self, b: Any) -> int:
        """Read into a buffer at the current offset; returns the count (0 at end)."""
        with self._fs.lock:
            chunk = self.pread(len(b), self._pos)
            m = len(chunk)
            memoryview(b).cast("B")[:m] = chunk
            self._pos += m
            return m

    def pread(self, n: int, offset: int) -> bytes | memoryview:
        """Up to ``n`` bytes at ``offset``, the file offset unchanged (as :func:`os.pread`).

        Bytes that cannot change (a lower file's, data not written since copy-up) come as
        a view, not a copy: the FUSE server hands them to the kernel as they are.
        """
        self._check()
        if self._dir:
            raise errors.IsADirectory(self.name)
        if not self._readable:
            raise errors.BadFileDescriptor(self.name)
        with self._fs.lock:
            o = self._obj()
            if isinstance(o, Inode):
                return o.data.view(offset, n) if o.data is not None else b""
            if not isinstance(o, File):
                return b""
            data = o.data  # bytes, or a DiskBytes (a lower file read from disk when needed)
            return memoryview(data)[offset : offset + n] if isinstance(data, bytes) else data[offset : offset + n]

    def readall(self) -> bytes:
        """Everything from the offset to the end."""
        self._check()
        if self._dir:
            raise errors.IsADirectory(self.name)
        if not self._readable:
            raise errors.BadFileDescriptor(self.name)
        with self._fs.lock:
            o = self._obj()
            if isinstance(o, Inode):
                out = o.data.read(self._pos, max(0, o.size - self._pos)) if o.data is not None else b""
            else:
                out = o.data[self._pos :] if isinstance(o, File) else b""
            self._pos += len(out)
            return out

    def write(self, b: Any) -> int:
        """Write at the offset (at the end with O_APPEND); updates size, mtime and ctime."""
        self._check()
        if not self._writable:
            raise errors.BadFileDescriptor(self.name)
        with self._fs.lock:
            o = self._inode
            if o is None or o.data is None:
                return len(memoryview(b).cast("B"))  # device or FIFO: the bytes go nowhere in the model
            if self._flags & os.O_APPEND:
                self._pos = o.data.size
            n = len(memoryview(b).cast("B"))
            if self._pos + n > MAX_SIZE:
                raise errors.FileTooBig(self.name)
            if n:
                kill = self._fs._kill_privs(o)  # file_remove_privs: before a non-empty write
                if kill is not None:
                    self._fs.overlay.setattr(o, mode=kill)
            self._fs.overlay.write(o, self._pos, b)
            self._pos += n
            return n

    def write_at(self, b: Any, offset: int) -> int:
        """Seek to ``offset`` and write ``b`` there, under one lock (FUSE's WRITE, which
        names the offset); as :meth:`seek` then :meth:`write`."""
        self._check()
        if offset < 0:
            raise errors.InvalidArgument(self.name)
        with self._fs.lock:
            self._pos = offset
            return self.write(b)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        """Move the offset, as lseek(2)."""
        self._check()
        with self._fs.lock:
            if whence == os.SEEK_SET:
                new = pos
            elif whence == os.SEEK_CUR:
                new = self._pos + pos
            elif whence == os.SEEK_END:
                new = self._obj().size + pos if not self._dir else pos
            else:
                raise errors.InvalidArgument(self.name)
            if new < 0:
                raise errors.InvalidArgument(self.name)
            self._pos = new
            return new

    def tell(self) -> int:
        """The current offset."""
        self._check()
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        """As ftruncate(2) (the offset does not move); needs a handle open for writing."""
        self._check()
        if not self._writable:
            raise errors.InvalidArgument(self.name)
        with self._fs.lock:
            size = self._pos if size is None else size
            if size < 0:
                raise errors.InvalidArgument(self.name)
            o = self._inode
            assert o is not None and o.data is not None
            self._fs.overlay.setattr(o, size=size, mode=self._fs._kill_privs(o))
            return size

    def stat(self) -> os.stat_result:
        """As os.fstat: attributes of the open file (nlink 0 once every name is gone)."""
        self._check()
        with self._fs.lock:
            o = self._obj()
            fs = self._fs
            if isinstance(o, Inode):
                # nlink of the inode itself: 0 once every name is gone
                return fs._stat(Loc(None, "", "", o, None, None, None), nlink=o.nlink)
            loc = Loc(None, "", "", None, o, o, self._lpath)
            return fs._stat(loc)

    fstat = stat

    def __repr__(self) -> str:
        return f"<unionfs_sim Handle {self.name!r} flags={self._flags:#o}>"


FileSystem.handle_class = Handle
