"""The merge of a writable upper over a Lower: lookup, readdir, copy-up, whiteouts, rename.

An :class:`Overlay` is the state of one container's (or one image's read-only) merged
view: the shared, immutable :class:`~unionfs_sim.lower.Lower` index plus a private tree
of mutable :class:`Inode` objects (the upper layer). It implements the primitive steps
overlayfs takes; :mod:`unionfs_sim.fs` turns paths and os-style calls into them.
"""

from __future__ import annotations

import os
import stat as _stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from . import errors
from .content import Data
from .layer import Layer
from .lower import Lower
from .nodes import WHITEOUT, Device, Dir, Entry, Fifo, File, Node, Socket, Symlink, Whiteout
from .options import OverlayOptions
from .paths import join, split

_KIND_OF_FMT = {
    _stat.S_IFREG: "f", _stat.S_IFDIR: "d", _stat.S_IFLNK: "l", _stat.S_IFIFO: "p",
    _stat.S_IFSOCK: "s", _stat.S_IFCHR: "c", _stat.S_IFBLK: "b",
}
_FMT_OF_KIND = {v: k for k, v in _KIND_OF_FMT.items()}

UPPER_INO_BASE = 1 << 40
"""Upper inode numbers start here, clear of the lower ones (as xino keeps layers apart)."""


def now_ns() -> int:
    """The current time in nanoseconds, for mtime/ctime/atime updates."""
    return time.time_ns()


class Entries(dict[str, "Inode | Whiteout"]):
    """A directory's names (name -> Inode or WHITEOUT) that keeps count of its directories.

    A pure-upper directory's st_nlink is 2 + its subdirectories; counting them at every
    stat made each create in a directory of n names cost O(n) (the kernel re-reads the
    parent's attributes for every path walked through it). Only assignment, ``del`` and
    ``pop`` change an upper directory's names, so those keep the count.
    """

    __slots__ = ("dirs",)

    def __init__(self) -> None:
        super().__init__()
        self.dirs = 0

    def __setitem__(self, name: str, e: Inode | Whiteout) -> None:
        old = dict.get(self, name)
        if type(old) is Inode and old.kind == "d":
            self.dirs -= 1
        if type(e) is Inode and e.kind == "d":
            self.dirs += 1
        dict.__setitem__(self, name, e)

    def __delitem__(self, name: str) -> None:
        self.pop(name)

    def pop(self, name: str, *default: Inode | Whiteout | None) -> Inode | Whiteout | None:  # type: ignore[override]
        if default and name not in self:
            return default[0]
        old = dict.pop(self, name)  # KeyError if missing, as dict's
        if type(old) is Inode and old.kind == "d":
            self.dirs -= 1
        return old


class Inode:
    """A mutable object of the upper layer: a file, directory, symlink or special file.

    Directories hold ``entries`` (name -> Inode or WHITEOUT); ``opaque`` hides the
    lower directory of the same name and ``redirect`` names the lower directory this one
    merges with after a rename. Files hold :class:`~unionfs_sim.content.Data`; ``metacopy``
    marks a file whose data has not been copied up (only its metadata was).
    """

    __slots__ = (
        "kind", "mode", "uid", "gid", "atime_ns", "mtime_ns", "ctime_ns", "xattrs", "data",
        "target", "rdev", "nlink", "ino", "entries", "opaque", "redirect", "metacopy", "origin",
    )

    def __init__(self, kind: str, mode: int, uid: int, gid: int, ino: int, t: int) -> None:
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.atime_ns = self.mtime_ns = self.ctime_ns = t
        self.xattrs: dict[str, bytes] = {}
        self.data: Data | None = None
        self.target: str | None = None
        self.rdev = 0
        self.nlink = 1
        self.ino = ino
        self.entries: Entries | None = None
        self.opaque = False
        self.redirect: str | None = None
        self.metacopy = False
        self.origin: Node | None = None

    @property
    def st_mode(self) -> int:
        """Type and permission bits, as st_mode."""
        return _FMT_OF_KIND[self.kind] | self.mode

    @property
    def size(self) -> int:
        """st_size: data length, symlink target length, else 0."""
        if self.data is not None:
            return self.data.size
        if self.target is not None:
            return len(self.target.encode("utf-8", "surrogateescape"))
        return 0

    def __repr__(self) -> str:
        return f"<Inode {self.kind} ino={self.ino} mode={oct(self.mode)}>"


UEntry = Inode | Whiteout


class Loc:
    """A name resolved in the merged view: what the upper and lower layers have there.

    ``up`` is the upper object at the name (None if the name has no upper object yet);
    ``below`` the lower entry at the name's natural lower position (the parent's lower
    directory + name), whether or not it is visible; ``lo``/``lpath`` the lower entry that
    is visible (or merged, for a directory) and its key in the Lower index.
    """

    __slots__ = ("parent", "name", "path", "up", "below", "lo", "lpath", "ix")

    def __init__(self, parent: Loc | None, name: str, path: str, up: Inode | None,
                 below: Node | None, lo: Node | None, lpath: str | None,
                 ix: Inode | None = None) -> None:
        self.parent = parent
        self.name = name
        self.path = path
        self.up = up
        self.below = below
        self.lo = lo
        self.lpath = lpath
        self.ix = ix  # index=on: the upper inode another name of this lower file became

    @property
    def is_dir(self) -> bool:
        """True if the name is a directory in the merged view."""
        if self.up is not None:
            return self.up.kind == "d"
        return isinstance(self.lo, Dir)

    @property
    def kind(self) -> str:
        """One of f d l p s c b."""
        if self.up is not None:
            return self.up.kind
        assert self.lo is not None
        return self.lo.kind

    @property
    def dir_lpath(self) -> str | None:
        """The lower key this directory merges with, or None (opaque, pure upper)."""
        return self.lpath if isinstance(self.lo, Dir) else None


class Overlay:
    """One merged view: a shared Lower plus this view's private upper tree.

    Every mutating method expects the caller (the fs facade) to have checked the
    preconditions that produce errno values; the methods here only apply overlayfs's
    rules (copy-up, whiteouts, opaque directories, redirects, index). All changes to the
    upper tree, its inodes' metadata and the ``generation`` counter go through them;
    callers hold :attr:`lock` around a whole operation.
    """

    __slots__ = ("lower", "options", "root", "readonly", "_next_ino", "_index", "_copied",
                 "_generation", "watchers", "copy_watchers", "lock", "__weakref__")

    def __init__(self, lower: Lower, options: OverlayOptions | None = None, *, readonly: bool = False) -> None:
        self.lower = lower
        self.options = options if options is not None else OverlayOptions()
        self.readonly = readonly
        self.root: Inode | None = None  # the upper root, made on first write
        self._next_ino = UPPER_INO_BASE
        self._index: dict[int, Inode] | None = None
        self._copied: dict[tuple[int, str], Inode] | None = None
        self._generation = 0
        self.lock = threading.RLock()
        """Serialises operations on this view (every facade and server of it takes it)."""
        self.watchers: list[Callable[[], None]] = []
        self.copy_watchers: list[Callable[[Loc], None]] = []
        """Called with the Loc of each object copied up: a FUSE server drops what the
        kernel cached of it (a directory copied up may list fewer names)."""

    @property
    def generation(self) -> int:
        """A counter bumped on every change of the view; each of ``watchers`` is called then.

        The FUSE server watches it to learn of changes made while mounted, other than its own.
        """
        return self._generation

    def changed(self) -> None:
        """Count one change of the view: bump :attr:`generation` and call the watchers."""
        self._generation += 1
        for w in self.watchers:
            w()

    # --- lookup --------------------------------------------------------------------

    def root_loc(self) -> Loc:
        """The Loc of ``/``."""
        return Loc(None, "", "", self.root, self.lower.nodes[""], self.lower.nodes[""], "")

    def child(self, d: Loc, name: str) -> Loc | None:
        """Look ``name`` up in directory ``d``; None if it is absent or whited out."""
        up: UEntry | None = None
        dup = d.up
        if dup is not None:
            assert dup.entries is not None
            up = dup.entries.get(name)
            if up is WHITEOUT:
                return None
        dl = d.lpath if type(d.lo) is Dir else None
        if dl is not None:
            natural: str | None = f"{dl}/{name}" if dl else name
            below = self.lower.nodes.get(natural)  # type: ignore[arg-type]
        else:
            natural = below = None
        path = f"{d.path}/{name}" if d.path else name
        if up is None:
            if below is None:
                return None
            return Loc(d, name, path, None, below, below, natural, self._indexed(below) if self._index else None)
        assert isinstance(up, Inode)
        if up.kind != "d":
            return Loc(d, name, path, up, below, None, None)
        if up.redirect is not None:
            lp: str | None = up.redirect
        elif up.opaque:
            lp = None
        else:
            lp = natural
        lo = self.lower.nodes.get(lp) if lp is not None else None
        if not isinstance(lo, Dir):
            lo, lp = None, None
        return Loc(d, name, path, up, below, lo, lp)

    def fast(self, key: str) -> Loc | None:
        """Look a normalised key up without building the chain of parent Locs.

        Returns the Loc (its ``parent`` is None: for reading attributes only), or ``None``
        when the slow, component-by-component walk must decide (absent names, symlinks,
        whiteouts, opaque or redirected directories on the way). This is what keeps stat
        cheap.
        """
        lower = self.lower.nodes
        u = self.root
        if u is None:
            lo = lower.get(key)
            if lo is None:
                return None
            return Loc(None, "", key, None, lo, lo, key, self._indexed(lo) if self._index else None)
        parts = key.split("/")
        last = len(parts) - 1
        for i, name in enumerate(parts):
            assert u.entries is not None
            e = u.entries.get(name)
            if e is None:
                break
            if e is WHITEOUT:
                return None
            assert isinstance(e, Inode)
            if e.kind != "d":
                return Loc(None, name, key, e, None, None, None) if i == last else None
            if e.redirect is not None or e.opaque:
                return None
            u = e
        else:
            lo = lower.get(key)
            if not isinstance(lo, Dir):
                lo = None
            return Loc(None, parts[-1], key, u, lo, lo, key if lo is not None else None)
        lo = lower.get(key)
        if lo is None:
            return None
        return Loc(None, "", key, None, lo, lo, key, self._indexed(lo) if self._index else None)

    @property
    def _no_offline_changes(self) -> bool:
        o = self.options
        return bool(o.redirect_dir or o.index or o.metacopy)

    @property
    def has_index(self) -> bool:
        """True once index=on has copied up a hard-linked lower file."""
        return bool(self._index)

    def _indexed(self, node: Node) -> Inode | None:
        if self._index is None or not isinstance(node, File):
            return None
        return self._index.get(id(node))

    def names(self, d: Loc) -> list[str]:
        """The sorted names in merged directory ``d``: upper names over lower ones, minus whiteouts.

        A directory that only one lower layer has is listed as that layer has it,
        whiteouts included (see :meth:`Lower.strays`).
        """
        dl = d.dir_lpath
        if d.up is None:
            if dl is None:
                return []
            # The container's root always has an upper directory, so it is merged.
            strays = self.lower.strays(dl) if (d.path != "" or self.readonly) else []
            if strays:
                return sorted([*self.lower.listing(dl), *strays])
            return list(self.lower.listing(dl))
        assert d.up.entries is not None
        ents = d.up.entries
        if dl is None:
            return sorted(n for n, e in ents.items() if e is not WHITEOUT)
        out = [n for n in self.lower.listing(dl) if n not in ents]
        out.extend(n for n, e in ents.items() if e is not WHITEOUT)
        out.sort()
        return out

    def is_empty(self, d: Loc) -> bool:
        """True if merged directory ``d`` has no visible names."""
        if d.up is not None:
            assert d.up.entries is not None
            if any(e is not WHITEOUT for e in d.up.entries.values()):
                return False
        dl = d.dir_lpath
        if dl is None:
            return True
        ents: Mapping[str, Inode | Whiteout] | None = d.up.entries if d.up is not None else {}
        assert ents is not None
        return all(n in ents for n in self.lower.listing(dl))

    # --- identity and attributes -----------------------------------------------------

    def effective(self, loc: Loc) -> Inode | Node:
        """The object whose attributes the name shows: its upper inode or lower entry."""
        if loc.up is not None:
            return loc.up
        if loc.ix is not None:
            return loc.ix
        assert loc.lo is not None
        return loc.lo

    def nlink(self, loc: Loc) -> int:
        """st_nlink as overlayfs reports it."""
        up = loc.up
        if up is not None:
            if up.kind == "d":
                if loc.lo is not None:
                    return 1  # merged: overlayfs does not count subdirs across layers
                assert up.entries is not None
                return 2 + up.entries.dirs
            return up.nlink
        if loc.ix is not None:
            return loc.ix.nlink
        assert loc.lo is not None and loc.lpath is not None
        return self.lower.nlink(loc.lpath, loc.lo)

    def ino(self, loc: Loc) -> int:
        """st_ino: the upper inode's number, else the lower entry's."""
        obj = loc.up if loc.up is not None else loc.ix
        if obj is not None:
            return obj.ino
        assert loc.lo is not None and loc.lpath is not None
        return self.lower.ino(loc.lpath, loc.lo)

    # --- copy-up -------------------------------------------------------------------

    def _new_ino(self) -> int:
        self._next_ino += 1
        return self._next_ino

    def new_inode(self, kind: str, mode: int, uid: int, gid: int, *, target: str | None = None,
                  rdev: int = 0) -> Inode:
        """A fresh upper object (not yet linked anywhere); ``target`` for a symlink, ``rdev`` for a device."""
        n = Inode(kind, mode, uid, gid, self._new_ino(), now_ns())
        n.nlink = 0
        if kind == "d":
            n.entries = Entries()
        elif kind == "f":
            n.data = Data()
        n.target = target
        n.rdev = rdev
        return n

    def ensure_root(self) -> Inode:
        """The upper root directory, created (with the lower root's metadata) on first use."""
        if self.root is None:
            if self.readonly:
                raise errors.ReadOnly("/")
            r = self._from_lower(self.lower.nodes[""])
            r.ino = self.lower.ino("", self.lower.nodes[""])
            self.root = r
        return self.root

    def _from_lower(self, node: Node, *, meta_only: bool = False) -> Inode:
        n = Inode(node.kind, node.mode, node.uid, node.gid, self._new_ino(), node.mtime_ns)
        n.mtime_ns = n.atime_ns = node.mtime_ns
        n.ctime_ns = node.mtime_ns
        n.xattrs = dict(node.xattrs)
        n.origin = node
        if isinstance(node, Dir):
            n.entries = Entries()
        elif isinstance(node, File):
            n.data = Data(node.data)  # shares the lower bytes: no copy until written
            n.metacopy = meta_only and self.options.metacopy
        elif isinstance(node, Symlink):
            n.target = node.target
        elif isinstance(node, Device):
            n.rdev = node.rdev
        return n

    def copy_up(self, loc: Loc, *, meta_only: bool = False) -> Inode:
        """Give ``loc`` an upper object (copying the lower one and its parents) and return it.

        A directory is copied without its children and stays merged. With ``index``, a
        hard-linked lower file is copied once and every name of it shares the upper inode.
        """
        if loc.up is not None:
            if not meta_only and loc.up.metacopy:
                loc.up.metacopy = False  # data now counts as copied up
            return loc.up
        if loc.parent is None:
            fresh = self.root is None
            r = self.ensure_root()
            loc.up = r
            if fresh:
                for w in self.copy_watchers:
                    w(loc)
            return r
        parent = self.copy_up(loc.parent)
        assert loc.lo is not None and parent.entries is not None
        have = parent.entries.get(loc.name)
        if isinstance(have, Inode):
            # Another Loc of the same name copied it up already (e.g. rename's two paths).
            loc.up = have
            if not meta_only:
                have.metacopy = False
            return have
        node = loc.lo
        up = loc.ix
        if up is not None:
            # index=on: link the shared upper inode in at this name (ovl_link_up).
            if not meta_only:
                up.metacopy = False
        else:
            up = self._from_lower(node, meta_only=meta_only)
            links = 1 if isinstance(node, Dir) else self._lower_links(loc)
            # st_ino stays the lower one's across copy-up (overlayfs reports the origin's
            # inode number when the layers share a filesystem, as overlay2's do), except
            # for a lower hard link that copy-up may break (ovl_getattr).
            if links == 1 or self.options.index:
                up.ino = self.lower.ino(loc.lpath or "", node)
            if isinstance(node, File) and self.options.index and links > 1:
                if self._index is None:
                    self._index = {}
                self._index[id(node)] = up
                up.nlink = self._lower_links(loc)
        parent.entries[loc.name] = up
        loc.up = up
        if isinstance(node, File) and loc.lpath is not None:
            if self._copied is None:
                self._copied = {}
            self._copied[(id(node), loc.lpath)] = up
        self.changed()
        for w in self.copy_watchers:
            w(loc)
        return up

    def _lower_links(self, loc: Loc) -> int:
        assert loc.lo is not None and loc.lpath is not None
        return self.lower.nlink(loc.lpath, loc.lo)

    def copied(self, node: Node, lpath: str) -> Inode | None:
        """The upper inode that a lower file (at ``lpath``) was copied up to, if any.

        With index=on that is the shared inode of its hard-link group, whichever name
        was copied up.
        """
        ix = self._indexed(node)
        if ix is not None:
            return ix
        if self._copied is None:
            return None
        return self._copied.get((id(node), lpath))

    def _needs_index(self, loc: Loc) -> bool:
        """index=on and a lower hard link not copied up yet (ovl_nlink_start copies it up
        before a whiteout or rename, so that the index inode can count the links)."""
        return (self.options.index and loc.up is None and isinstance(loc.lo, File)
                and self._lower_links(loc) > 1)

    # --- attributes and data ------------------------------------------------------------

    def setattr(self, target: Loc | Inode, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, atime_ns: int | None = None, mtime_ns: int | None = None,
                size: int | None = None) -> Inode:
        """Change attributes as ``ovl_setattr`` does: copy ``target`` up (its data too when
        ``size`` is given, else its metadata only), apply the changes, set ctime to now.

        A size change also sets mtime to now unless ``mtime_ns`` is given. Returns the
        upper inode.
        """
        if isinstance(target, Loc):
            inode = self.copy_up(target, meta_only=size is None)
        else:
            inode = target
        t = now_ns()
        if size is not None:
            assert inode.data is not None
            inode.data.truncate(size)
            inode.mtime_ns = t
        if mode is not None:
            inode.mode = mode
        if uid is not None:
            inode.uid = uid
        if gid is not None:
            inode.gid = gid
        if atime_ns is not None:
            inode.atime_ns = atime_ns
        if mtime_ns is not None:
            inode.mtime_ns = mtime_ns
        inode.ctime_ns = t
        self.changed()
        return inode

    def write(self, inode: Inode, offset: int, b: bytes | bytearray | memoryview) -> int:
        """Write ``b`` into an upper file's data at ``offset``; mtime and ctime move if any byte did."""
        assert inode.data is not None
        n = len(memoryview(b).cast("B"))
        inode.data.write(offset, b)
        if n:
            inode.mtime_ns = inode.ctime_ns = now_ns()
        self.changed()
        return n

    def _xattr_target(self, loc: Loc) -> Inode:
        """The upper inode an xattr change goes to. ovl_xattr_set copies up only an inode
        with no upper at all: an index=on alias changes the shared inode in place."""
        if loc.up is None and loc.ix is not None:
            return loc.ix
        return self.copy_up(loc, meta_only=True)

    def set_xattr(self, loc: Loc, name: str, value: bytes | None) -> None:
        """Set (or with ``value`` None remove) an xattr of ``loc``, copying its metadata up."""
        inode = self._xattr_target(loc)
        if value is None:
            del inode.xattrs[name]
        else:
            inode.xattrs[name] = value
        inode.ctime_ns = now_ns()
        self.changed()

    # --- names ---------------------------------------------------------------------

    def link(self, src: Loc, d: Loc, name: str) -> Loc:
        """A new name ``name`` in ``d`` for ``src`` (copied up first, metadata only, as
        ovl_link does); the inode's ctime moves."""
        inode = self.copy_up(src, meta_only=True)
        inode.ctime_ns = now_ns()
        return self.add(d, name, inode)

    def touch_dir(self, d: Inode, t: int | None = None) -> None:
        """A directory's names changed: bump its mtime and ctime."""
        d.mtime_ns = d.ctime_ns = now_ns() if t is None else t

    def add(self, d: Loc, name: str, inode: Inode) -> Loc:
        """Link ``inode`` at a name that is not visible in ``d`` (creation or link).

        A directory created where the lower layers have something (a whiteout is
        replaced) is made opaque, so the old lower contents cannot reappear.
        """
        parent = self.copy_up(d)
        assert parent.entries is not None
        old = parent.entries.get(name)
        dl = d.dir_lpath
        below = self.lower.nodes.get(join(dl, name)) if dl is not None else None
        if inode.kind == "d" and (old is WHITEOUT or below is not None):
            inode.opaque = True
        elif inode.kind == "d" and dl is not None and self._no_offline_changes:
            # ovl_create_upper: a new directory in a merged one is marked opaque "as an
            # optimization" unless offline changes to the layers are allowed (that is,
            # unless redirect_dir, index or metacopy is on). The view is the same.
            inode.opaque = True
        parent.entries[name] = inode
        inode.nlink += 1
        self.touch_dir(parent)
        self.changed()
        return Loc(d, name, join(d.path, name), inode, below, None, None)

    def remove(self, loc: Loc) -> Inode | None:
        """Remove the name ``loc``; leave a whiteout if a lower layer has the name.

        Returns the upper inode that lost a link (for open handles), if any.
        """
        assert loc.parent is not None
        if self._needs_index(loc):
            self.copy_up(loc)
        parent = self.copy_up(loc.parent)
        assert parent.entries is not None
        up = loc.up if loc.up is not None else loc.ix
        if loc.below is not None:
            parent.entries[loc.name] = WHITEOUT
        else:
            parent.entries.pop(loc.name, None)
        if up is not None:
            up.nlink -= 1
            up.ctime_ns = now_ns()
        self.touch_dir(parent)
        self.changed()
        return up

    def rename(self, src: Loc, dst_dir: Loc, name: str, dst: Loc | None) -> None:
        """Move ``src`` to ``name`` in ``dst_dir``, replacing ``dst`` (already checked).

        A directory with lower content moves only with ``redirect_dir`` (the caller
        raises EXDEV otherwise): it is copied up alone and records where its lower
        contents are. A pure upper directory moved into a merged one becomes opaque.
        """
        assert src.parent is not None
        inode = self._copy_up_to_move(src, dst_dir)
        if dst is not None and self._needs_index(dst):
            self.copy_up(dst)
        src_parent = self.copy_up(src.parent)
        dparent = self.copy_up(dst_dir)
        assert src_parent.entries is not None and dparent.entries is not None
        if dst is not None:
            old = dst.up
            if old is not None:
                old.nlink -= 1
                old.ctime_ns = now_ns()
        # Remove the old name first: src and dst may share a parent.
        if src.below is not None:
            src_parent.entries[src.name] = WHITEOUT
        else:
            src_parent.entries.pop(src.name, None)
        dparent.entries[name] = inode
        t = now_ns()
        inode.ctime_ns = t
        self.touch_dir(src_parent, t)
        self.touch_dir(dparent, t)
        self.changed()

    def exchange(self, a: Loc, b: Loc) -> None:
        """Swap the objects at two existing names (renameat2's RENAME_EXCHANGE).

        Both are copied up, with the same redirect and opaque rules as a rename; both
        names stay occupied, so no whiteout is needed.
        """
        assert a.parent is not None and b.parent is not None
        ia = self._copy_up_to_move(a, b.parent)
        ib = self._copy_up_to_move(b, a.parent)
        pa, pb = self.copy_up(a.parent), self.copy_up(b.parent)
        assert pa.entries is not None and pb.entries is not None
        pa.entries[a.name] = ib
        pb.entries[b.name] = ia
        t = now_ns()
        ia.ctime_ns = ib.ctime_ns = t
        self.touch_dir(pa, t)
        self.touch_dir(pb, t)
        self.changed()

    def _copy_up_to_move(self, src: Loc, dst_dir: Loc) -> Inode:
        """Copy up ``src`` before it moves into ``dst_dir`` (ovl_rename).

        A directory with lower content records where that content is (redirect); a pure
        upper directory moved into a merged one becomes opaque.
        """
        if src.is_dir and src.lo is not None:
            lp = src.lpath
            inode = self.copy_up(src)
            if inode.redirect is None:
                inode.redirect = lp
        else:
            inode = self.copy_up(src)
            if inode.kind == "d" and not inode.opaque and dst_dir.dir_lpath is not None:
                inode.opaque = True
        return inode

    # --- freezing ------------------------------------------------------------------

    def upper_entries(self, *, with_index: bool = False) -> dict[str, Entry]:
        """The upper tree as layer entries (hard links share one File object).

        With ``with_index``, lower names of a hard-link group that index=on copied up
        through another name are included too: overlayfs keeps their new state in its
        index directory, not in the upper directory, but the merged view shows it.
        """
        out: dict[str, Entry] = {}
        if self.root is None:
            return out
        frozen: dict[int, Node] = {}
        if with_index and self._index:
            for k, ix in self.index_aliases():
                node = frozen.get(id(ix))
                if node is None:
                    node = frozen[id(ix)] = freeze(ix)
                out[k] = node
        stack: list[tuple[str, Inode]] = [("", self.root)]
        while stack:
            path, d = stack.pop()
            assert d.entries is not None
            for name, e in d.entries.items():
                k = join(path, name)
                if e is WHITEOUT:
                    out[k] = WHITEOUT
                    continue
                assert isinstance(e, Inode)
                node = frozen.get(id(e))
                if node is None:
                    node = freeze(e)
                    if e.kind != "d":
                        frozen[id(e)] = node
                out[k] = node
                if e.kind == "d":
                    stack.append((k, e))
        return out

    def index_aliases(self) -> list[tuple[str, Inode]]:
        """Visible lower names whose file index=on copied up through another name."""
        if not self._index:
            return []
        out = []
        for k, node in self.lower.nodes.items():
            ix = self._index.get(id(node))
            if ix is None:
                continue
            loc: Loc | None = self.root_loc()
            for name in k.split("/"):
                assert loc is not None
                loc = self.child(loc, name)
                if loc is None or (loc.kind == "l"):
                    break
            if loc is not None and loc.path == k and loc.up is None and loc.ix is ix:
                out.append((k, ix))
        return out

    def load_upper(self, entries: Mapping[str, Entry], *, replace: bool = False) -> None:
        """Make ``entries`` (an upper layer, e.g. an upperdir read back) this view's upper.

        The tree is built directly, so everything an upperdir says survives: whiteouts
        (also of names no lower layer has), opaque and redirected directories, hard links
        (one inode per group), xattrs, times, and the root's metadata (key ``""``).
        Parents the entries leave implicit become plain (merged) directories with the
        lower directory's metadata. Not restored: index=on's index directory.

        With ``replace=True`` whatever upper tree the view has is dropped first (a
        write-through mount re-reads its upperdir after a change the disk refused).

        Raises:
            ValueError: the view already has upper content (and ``replace`` is false), or
                an entry lies below a non-directory of ``entries``.
        """
        if replace:
            self.root, self._index, self._copied = None, None, None
        if self.root is not None:
            raise ValueError("the container already has an upper layer")
        root = self.ensure_root()
        r = entries.get("")
        if isinstance(r, Dir):
            _set_meta(root, r)
        dirs: dict[str, Inode] = {"": root}
        made: dict[int, Inode] = {}
        for k in sorted((k for k in entries if k), key=lambda k: k.split("/")):
            e = entries[k]
            parent_key, name = split(k)
            parent = dirs.get(parent_key)
            if parent is None:
                parent = self._implicit_upper_dirs(dirs, entries, parent_key)
            assert parent.entries is not None
            if isinstance(e, Whiteout):
                parent.entries[name] = WHITEOUT
                continue
            inode = made.get(id(e))
            if inode is None:
                inode = thaw(e, self._new_ino())
                low = self.lower.nodes.get(k)
                if low is not None and low.kind == e.kind:
                    inode.ino = self.lower.ino(k, low)  # as copy-up keeps st_ino
                if not isinstance(e, Dir):
                    made[id(e)] = inode
            parent.entries[name] = inode
            inode.nlink += 1
            if isinstance(e, Dir):
                dirs[k] = inode
        self.changed()

    def _implicit_upper_dirs(self, dirs: dict[str, Inode], entries: Mapping[str, Entry], key: str) -> Inode:
        """The upper directory at ``key``, made (with its parents) where entries skip it."""
        parent_key, name = split(key)
        parent = dirs.get(parent_key) or self._implicit_upper_dirs(dirs, entries, parent_key)
        assert parent.entries is not None
        have = parent.entries.get(name)
        if isinstance(have, Inode):
            if have.kind != "d":
                raise ValueError(f"/{key}: entries lie below a non-directory")
            return have
        low = self.lower.nodes.get(key)
        d = thaw(low if isinstance(low, Dir) else Dir(), self._new_ino())
        d.opaque, d.redirect = False, None
        parent.entries[name] = d
        d.nlink += 1
        dirs[key] = d
        return d

    def upper_layer(self) -> Layer:
        """The upper as an immutable Layer snapshot (overlayfs form: redirects kept)."""
        return Layer(self.upper_entries())

    def walk_upper(self) -> Iterator[tuple[str, UEntry]]:
        """Every (key, upper entry) in lexical walk order (parents before children)."""
        if self.root is None:
            return
        stack: list[tuple[str, Inode]] = [("", self.root)]
        while stack:
            path, d = stack.pop()
            assert d.entries is not None
            subdirs = []
            for name in sorted(d.entries):
                e = d.entries[name]
                k = join(path, name)
                yield k, e
                if isinstance(e, Inode) and e.kind == "d":
                    subdirs.append((k, e))
            stack.extend(reversed(subdirs))


def _set_meta(inode: Inode, e: Node) -> None:
    inode.mode, inode.uid, inode.gid = e.mode, e.uid, e.gid
    inode.atime_ns = inode.mtime_ns = inode.ctime_ns = e.mtime_ns
    inode.xattrs = dict(e.xattrs)


def thaw(e: Node, ino: int) -> Inode:
    """A new, unlinked upper object with the attributes of layer entry ``e`` (freeze's inverse)."""
    n = Inode(e.kind, e.mode, e.uid, e.gid, ino, e.mtime_ns)
    _set_meta(n, e)
    n.nlink = 0
    if isinstance(e, Dir):
        n.entries = Entries()
        n.opaque = e.opaque
        n.redirect = e.redirect
    elif isinstance(e, File):
        n.data = Data(e.data)
    elif isinstance(e, Symlink):
        n.target = e.target
    elif isinstance(e, Device):
        n.rdev = e.rdev
    return n


def freeze(e: Inode) -> Node:
    """An immutable layer entry with the attributes of upper object ``e``."""
    m, u, g, t, x = e.mode, e.uid, e.gid, e.mtime_ns, e.xattrs
    if e.kind == "f":
        assert e.data is not None
        return File(e.data.freeze(), mode=m, uid=u, gid=g, mtime_ns=t, xattrs=x)
    if e.kind == "d":
        return Dir(mode=m, uid=u, gid=g, mtime_ns=t, xattrs=x, opaque=e.opaque, redirect=e.redirect)
    if e.kind == "l":
        assert e.target is not None
        return Symlink(e.target, mode=m, uid=u, gid=g, mtime_ns=t, xattrs=x)
    if e.kind == "p":
        return Fifo(mode=m, uid=u, gid=g, mtime_ns=t, xattrs=x)
    if e.kind == "s":
        return Socket(mode=m, uid=u, gid=g, mtime_ns=t, xattrs=x)
    return Device(e.kind, os.major(e.rdev), os.minor(e.rdev), mode=m, uid=u, gid=g, mtime_ns=t, xattrs=x)
