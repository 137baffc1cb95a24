"""Layer entries to and from a directory: the overlayfs lower/upperdir format, or a plain tree.

``format="overlay"`` is what the Linux kernel's overlayfs reads as a ``lowerdir`` and leaves
behind in an ``upperdir``:

- a whiteout is a character device 0/0 (the kernel also accepts, and :func:`read`
  understands, a zero-size regular file with xattr ``trusted.overlay.whiteout`` inside a
  directory marked ``trusted.overlay.opaque=x``);
- an opaque directory carries ``trusted.overlay.opaque=y``;
- a directory renamed under ``redirect_dir=on`` carries ``trusted.overlay.redirect``
  (written absolute, ``"/" + key``; read back absolute or relative to the parent);
- an xattr of the *entry* whose name starts with ``trusted.overlay.`` is stored escaped as
  ``trusted.overlay.overlay.…``, as the kernel itself does (Linux >= 6.7) when such an
  xattr is set through an overlay mount, so the merged view shows the entry's own name.

``format="plain"`` is an ordinary directory tree with no interpretation at all: a char
device 0/0 is just a :class:`~unionfs_sim.nodes.Device`, every xattr is kept verbatim.
Writing a whiteout, an opaque directory or a redirect in plain format raises
:class:`ValueError` (a plain tree has no way to say "delete below"; use the OCI tar format
for a changeset with ``.wh.`` files).

Neither direction follows a symlink found inside the tree.

Known limits (the on-disk format or Linux cannot say more):

- a symlink's mode is always 0o777 on Linux: it is not written and reads back as lstat says;
- Linux refuses ``user.*`` xattrs on symlinks, FIFOs, sockets and devices (EPERM);
- a parent directory that ``entries`` leaves implicit is a real directory on disk, so it
  reads back as an explicit :class:`~unionfs_sim.nodes.Dir`;
- a metacopy upper file (``trusted.overlay.metacopy``, ``metacopy=on``) holds no data of
  its own (it is sparse: its size is right, its bytes read as zeros); :func:`read` returns
  those bytes unless the caller passes ``metacopy=`` to supply the real data by key.
"""

from __future__ import annotations

import errno
import functools
import os
import stat as _stat
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import attrs

from ..errors import FormatError
from ..linux import reachable, too_long
from ..nodes import WHITEOUT, Content, Device, Dir, DiskBytes, Entry, Fifo, File, FrozenDict, Socket, Symlink, Whiteout
from ..paths import confine, key, parents, split
from .tar import canonical_order

Format = Literal["overlay", "plain"]
"""``"overlay"``: kernel overlayfs lower/upperdir conventions; ``"plain"``: none."""

TRUSTED = "trusted.overlay."
"""The overlay xattr namespace of a normal (privileged) mount."""
USER = "user.overlay."
"""The overlay xattr namespace of a ``-o userxattr`` (unprivileged) mount."""
ESCAPE = "overlay."
"""An escaped entry xattr: ``trusted.overlay.overlay.X`` on disk is ``trusted.overlay.X``."""
_ESCAPE = ESCAPE

_RDONLY = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# --- writing -----------------------------------------------------------------------


def write(
    entries: Mapping[str, Entry],
    path: str | os.PathLike[str],
    *,
    format: Format = "overlay",
    lower_dirs_meta: Callable[[str], Dir | None] | None = None,
    userxattr: bool = False,
) -> None:
    """Write a layer's ``entries`` into directory ``path`` (created if missing, must be empty).

    Args:
        entries: keys (``"etc/hostname"``, root ``""``) to entries, as a Layer holds them;
            names holding one object (identity) become hard links.
        path: the directory to fill; it gets the metadata of ``entries[""]`` if given,
            else of an implicit directory.
        format: ``"overlay"`` (kernel whiteouts and xattrs) or ``"plain"`` (see module docs).
        lower_dirs_meta: metadata source for implicit directories (a parent key not in
            ``entries``): called with the key, returns the merged lower :class:`Dir` or
            ``None``. Its mode, owner, mtime and xattrs are copied (not opaque/redirect),
            as containerd does when it applies a layer. Without it, or on ``None``, an
            implicit directory is ``Dir()``: 0o755, root-owned, mtime 0.
        userxattr: use ``user.overlay.*`` instead of ``trusted.overlay.*`` (for a mount
            with ``-o userxattr``).

    Raises:
        ValueError: a bad key, an entry below a non-directory, a whiteout/opaque/redirect
            in plain format, a char device 0/0 in overlay format (it would read as a
            whiteout), or ``path`` not empty (:class:`OSError` ENOTEMPTY).
        OSError: from the filesystem, naming the file.
    """
    if format not in ("overlay", "plain"):
        raise ValueError(f"format must be 'overlay' or 'plain', got {format!r}")
    root = os.fspath(path)
    os.makedirs(root, exist_ok=True)
    if os.listdir(root):
        raise OSError(errno.ENOTEMPTY, "directory to write a layer into is not empty", root)
    w = _Writer(root, format == "overlay", USER if userxattr else TRUSTED, lower_dirs_meta)
    for k in canonical_order(entries):
        w.add(k, entries[k])
    w.finish()


class _Writer:
    """State of one :func:`write`: what exists so far, hard-link groups, dir metadata."""

    def __init__(self, root: str, overlay: bool, ns: str, lower: Callable[[str], Dir | None] | None) -> None:
        self.root = root
        self.overlay = overlay
        self.ns = ns
        self.lower = lower
        self.dirs: dict[str, Dir] = {}  # every directory made -> metadata to apply last
        self.nondirs: set[str] = set()
        self.first: dict[int, str] = {}  # id(node) -> first full path written

    def full(self, k: str) -> str:
        return os.path.join(self.root, k) if k else self.root

    def implicit(self, k: str) -> Dir:
        meta = self.lower(k) if self.lower is not None else None
        if meta is None:
            return Dir()
        if not isinstance(meta, Dir):
            raise TypeError(f"lower_dirs_meta({k!r}) must return a Dir or None, got {meta!r}")
        return attrs.evolve(meta, opaque=False, redirect=None)

    def add(self, k: str, node: Entry) -> None:
        if not isinstance(k, str) or key(k) != k:
            raise ValueError(f"{k!r}: not a normalised layer key (no leading '/', no '.', '..' or '//')")
        for p in parents(k):
            if p in self.nondirs:
                raise ValueError(f"/{k}: its parent /{p} is not a directory in this layer")
            if p not in self.dirs:
                os.mkdir(self.full(p), 0o700)
                self.dirs[p] = self.implicit(p)
        full = self.full(k)
        try:
            self._add(k, node, full)
        except OSError as e:
            if e.filename is None:
                raise OSError(e.errno, f"{e.strerror} (writing /{k})", full) from e
            raise

    def _add(self, k: str, node: Entry, full: str) -> None:
        if k == "":
            if not isinstance(node, Dir):
                raise ValueError(f"the root entry must be a Dir, got {node!r}")
            self.dirs[""] = node
            return
        if isinstance(node, Dir):
            os.mkdir(full, 0o700)
            self.dirs[k] = node
            return
        self.nondirs.add(k)
        if isinstance(node, Whiteout):
            if not self.overlay:
                raise ValueError(f"/{k}: a whiteout cannot be written in plain format")
            os.mknod(full, _stat.S_IFCHR | 0o000, os.makedev(0, 0))
            return
        seen = self.first.get(id(node))
        if seen is not None:
            os.link(seen, full, follow_symlinks=False)
            return
        self.first[id(node)] = full
        if isinstance(node, File):
            fd = os.open(full, _CREATE, 0o600)
            try:
                _write_all(fd, node.data)
                self._meta(fd, node, full)
            finally:
                os.close(fd)
            return
        if isinstance(node, Symlink):
            os.symlink(node.target, full)
        elif isinstance(node, Fifo):
            os.mkfifo(full, 0o600)
        elif isinstance(node, Socket):
            os.mknod(full, _stat.S_IFSOCK | 0o600)
        elif isinstance(node, Device):
            if self.overlay and node.dev == "c" and node.major == 0 and node.minor == 0:
                raise ValueError(f"/{k}: a char device 0/0 is a whiteout in overlay format")
            os.mknod(full, node.st_mode & ~0o7777 | 0o600, node.rdev)
        else:
            raise TypeError(f"/{k}: unsupported entry {node!r}")
        self._meta(full, node, full)

    def _meta(self, target: int | str, node: File | Dir | Symlink | Fifo | Socket | Device, full: str) -> None:
        """Owner, then mode (chown clears setuid), then xattrs (chown clears caps), then mtime."""
        # os refuses follow_symlinks=False with an fd (an fd is never a symlink anyway).
        nofollow = {} if isinstance(target, int) else {"follow_symlinks": False}
        os.chown(target, node.uid, node.gid, **nofollow)
        if not isinstance(node, Symlink):
            os.chmod(target, node.mode)
        for name, value in node.xattrs.items():
            if self.overlay and name.startswith(self.ns):
                name = self.ns + _ESCAPE + name[len(self.ns) :]
            os.setxattr(target, name, value, **nofollow)
        if isinstance(node, Dir) and (node.opaque or node.redirect is not None):
            if not self.overlay:
                raise ValueError(f"{full}: an opaque or redirected directory cannot be written in plain format")
            if node.opaque:
                os.setxattr(target, self.ns + "opaque", b"y", **nofollow)
            if node.redirect is not None:
                os.setxattr(target, self.ns + "redirect", os.fsencode("/" + node.redirect), **nofollow)
        times = (node.mtime_ns, node.mtime_ns)
        if isinstance(target, int):
            os.utime(target, ns=times)
        else:
            os.utime(target, ns=times, follow_symlinks=False)

    def finish(self) -> None:
        """Apply directory metadata, deepest first, once nothing more is created in them."""
        if "" not in self.dirs:
            self.dirs[""] = self.implicit("")
        for k in sorted(self.dirs, key=lambda k: k.count("/") + (k != ""), reverse=True):
            self._meta(self.full(k), self.dirs[k], self.full(k))


# --- reading -----------------------------------------------------------------------


def read(
    path: str | os.PathLike[str],
    *,
    format: Format = "overlay",
    userxattr: bool | None = None,
    include_root: bool = False,
    metacopy: Callable[[str], Content] | None = None,
    lazy: bool = False,
) -> dict[str, Entry]:
    """Read directory ``path`` back into ``{key: entry}`` (canonical order).

    In overlay format a char device 0/0 is a whiteout, and so is a zero-size regular file
    with xattr ``<ns>whiteout`` inside a directory marked ``<ns>opaque=x`` (that marker
    means "contains xattr whiteouts", not "opaque"); ``<ns>opaque=y`` makes an opaque
    :class:`Dir`; ``<ns>redirect`` (absolute, or a name relative to the parent) becomes
    ``Dir.redirect`` as a key. Every other ``<ns>*`` xattr is kernel bookkeeping
    (origin, impure, nlink, uuid, metacopy, upper, protattr ...) and is dropped; escaped
    ``<ns>overlay.X`` becomes the entry's own ``<ns>X``. Non-directories sharing an inode
    (st_nlink > 1, same st_dev/st_ino) come back as one shared object, whiteouts excepted
    (the kernel makes all its whiteouts hard links of one inode).

    Args:
        path: the directory (a symlink here is followed; none inside it is).
        format: ``"overlay"`` or ``"plain"`` (no interpretation at all).
        userxattr: which namespace ``<ns>`` is: ``False`` ``trusted.overlay.``, ``True``
            ``user.overlay.``, ``None`` (default) both, trusted first.
        include_root: also return the directory itself as key ``""``.
        metacopy: for a metacopy file (``<ns>metacopy``), called with its key to get the
            real data; without it the file's own (sparse, zero) bytes are returned.
        lazy: give each regular file a :class:`~unionfs_sim.nodes.DiskBytes` (its bytes
            read from disk when needed) instead of reading it now: reading costs no file
            I/O, and the layer stays tied to the directory (see DiskBytes for what a
            later change on disk does). For lowerdirs, as a mount uses them.

    Raises:
        FormatError: an unreadable redirect; the message names the file.
        OSError: from the filesystem, naming the file.
    """
    if format not in ("overlay", "plain"):
        raise ValueError(f"format must be 'overlay' or 'plain', got {format!r}")
    root = os.fspath(path)
    st = os.stat(root)
    if not _stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
    if format == "plain":
        namespaces: tuple[str, ...] = ()
    elif userxattr is None:
        namespaces = (TRUSTED, USER)
    else:
        namespaces = (USER,) if userxattr else (TRUSTED,)
    r = _Reader(root, namespaces, metacopy, lazy)
    try:
        r.walk(st)
    finally:
        r.close()
    out = r.out
    if not include_root:
        out.pop("", None)
    return out


_DEEP = 3000
"""Past this many bytes a directory's path is swapped for its descriptor's (PATH_MAX is 4096)."""

_Child = tuple[str, str, os.stat_result]
"""A directory entry being read: name, full path, lstat."""


class _Reader:
    """State of one :func:`read`: output entries and inodes seen (hard links)."""

    def __init__(self, root: str, namespaces: tuple[str, ...], metacopy: Callable[[str], Content] | None,
                 lazy: bool = False) -> None:
        self.root = os.path.abspath(root) if lazy else root
        self.lazy = lazy
        self.ns = namespaces
        self.metacopy = metacopy
        self.out: dict[str, Entry] = {}
        self.inodes: dict[tuple[int, int], Entry] = {}
        self._fds: list[int] = []  # directories reached through /proc/self/fd (deep trees)

    def close(self) -> None:
        """Close the descriptors of deep directories (see :meth:`_enter`)."""
        while self._fds:
            os.close(self._fds.pop())

    def walk(self, root_st: os.stat_result) -> None:
        """Every entry into :attr:`out`, in canonical order (:func:`~.tar.canonical_order`):
        depth first, names sorted, a directory's subtree right after its name."""
        out = self.out
        stack = [self._enter("", self.root, root_st)]
        while stack:
            it, prefix, xwhiteouts = stack[-1]
            for name, cfull, cst in it:
                ck = prefix + name
                if _stat.S_ISDIR(cst.st_mode):
                    stack.append(self._enter(ck, cfull, cst))
                    break
                out[ck] = self._nondir(ck, cfull, cst, xwhiteouts)
            else:
                stack.pop()

    def _enter(self, k: str, full: str, st: os.stat_result) -> tuple[Iterator[_Child], str, bool]:
        """Record directory ``k``; its children sorted by name, their key prefix, and
        whether it holds xattr whiteouts."""
        raw, over = self._xattrs(full)
        self.out[k] = self._dir(k, full, st, raw, over)
        if len(full) > _DEEP // 4 and len(os.fsencode(full)) > _DEEP and not self.lazy:
            # A tree deeper than PATH_MAX (the kernel's overlayfs and the drop-in write
            # them): its children are reached through this directory's descriptor, so
            # their paths start short again. Eager reads only: a lazy layer keeps paths.
            fd = os.open(full, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._fds.append(fd)
            full = f"/proc/self/fd/{fd}"
        with os.scandir(full) as it:
            children = sorted((e.name, e.path, e.stat(follow_symlinks=False)) for e in it)
        return iter(children), (k + "/" if k else ""), over.get("opaque") == b"x"

    def _xattrs(self, full: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
        return _read_xattrs(full, self.ns)

    def _dir(self, k: str, full: str, st: os.stat_result, own: dict[str, bytes], over: dict[str, bytes]) -> Dir:
        redirect = None
        if "redirect" in over:
            value = os.fsdecode(over["redirect"])
            try:
                if not value or "\x00" in value:
                    raise ValueError("empty")
                redirect = key(value) if value.startswith("/") else confine(value, split(k)[0])
            except ValueError as e:
                raise FormatError(f"{full}: bad overlay redirect xattr {value!r}: {e}") from e
        return Dir(
            mode=_stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
            xattrs=own,
            opaque=over.get("opaque") == b"y",
            redirect=redirect,
        )

    def _nondir(self, k: str, full: str, st: os.stat_result, xwhiteouts: bool) -> Entry:
        fmt = _stat.S_IFMT(st.st_mode)
        if self.ns and fmt == _stat.S_IFCHR and st.st_rdev == 0:
            return WHITEOUT
        ident = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and ident in self.inodes:
            return self.inodes[ident]
        own: Mapping[str, bytes]
        over: dict[str, bytes]
        if self.lazy and self.metacopy is None and not (xwhiteouts and fmt == _stat.S_IFREG and st.st_size == 0):
            # Listed when first asked for (getxattr, copy-up), not now: no overlay xattr
            # of a non-directory matters here, and its own ones are rarely asked for.
            own = FrozenDict.lazy(functools.partial(_lazy_xattrs, full, (st.st_dev, st.st_ino), self.ns))
            over = {}
        else:
            own, over = self._xattrs(full)
        if xwhiteouts and fmt == _stat.S_IFREG and st.st_size == 0 and "whiteout" in over:
            return WHITEOUT
        meta: dict[str, Any] = {
            "mode": _stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
            "xattrs": own,
        }
        node: Entry
        if fmt == _stat.S_IFREG:
            data: Content
            if "metacopy" in over and self.metacopy is not None:
                data = self.metacopy(k)
            elif self.lazy:
                data = DiskBytes(full, st.st_size, st.st_dev, st.st_ino)
            else:
                data = _read_data(full, st)
            node = File(data, **meta)
        elif fmt == _stat.S_IFLNK:
            with reachable(full) as where:
                node = Symlink(os.readlink(where), **meta)
        elif fmt == _stat.S_IFIFO:
            node = Fifo(**meta)
        elif fmt == _stat.S_IFSOCK:
            node = Socket(**meta)
        elif fmt in (_stat.S_IFCHR, _stat.S_IFBLK):
            dev = "c" if fmt == _stat.S_IFCHR else "b"
            node = Device(dev, os.major(st.st_rdev), os.minor(st.st_rdev), **meta)
        else:
            raise FormatError(f"{full}: unknown file type {oct(fmt)}")
        if st.st_nlink > 1:
            self.inodes[ident] = node
        return node


class LayerDir:
    """One overlay-format lower directory, read a directory at a time when first asked for.

    What a lazily indexed lower (:class:`~unionfs_sim.lower.DiskLower`) reads instead of
    :func:`read` ing the whole tree: :meth:`entries` gives the same entries ``read(path,
    lazy=True)`` gives for one directory's children (whiteouts, opaque and redirected
    directories, xattrs, lazy file data), read with one scandir plus a listxattr per
    subdirectory on first use, then kept. Names of one inode (hard links) are one object,
    as :func:`read` makes them, whichever name is read first.
    """

    __slots__ = ("path", "_r", "_dirs", "_xwh", "_links")

    def __init__(self, path: str | os.PathLike[str], *, userxattr: bool | None = None) -> None:
        root = os.path.abspath(os.fspath(path))
        st = os.stat(root)
        if not _stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
        ns = (TRUSTED, USER) if userxattr is None else ((USER,) if userxattr else (TRUSTED,))
        self.path = root
        self._r = _Reader(root, ns, None, lazy=True)
        self._dirs: dict[str, dict[str, Entry]] = {}
        self._xwh: dict[str, bool] = {"": _read_xattrs(root, ns)[1].get("opaque") == b"x"}
        self._links: dict[int, int] = {}  # id(File) -> st_nlink, for names of one inode

    def entries(self, k: str) -> dict[str, Entry]:
        """Name -> entry of the children of directory ``k`` of this layer, sorted by name.

        ``k`` must be a directory of this layer (the root ``""``, or a key an earlier call
        gave as a :class:`Dir`).
        """
        d = self._dirs.get(k)
        if d is None:
            d = self._dirs[k] = self._read(k)
        return d

    def _read(self, k: str) -> dict[str, Entry]:
        r = self._r
        full = os.path.join(self.path, k) if k else self.path
        prefix = k + "/" if k else ""
        xwh = self._xwh.get(k, False)
        out: dict[str, Entry] = {}
        with reachable(full) as where, os.scandir(where) as it:
            # A deep directory is listed through its descriptor; its entries keep their
            # real paths (lazy data and xattrs read them later, walking again).
            children = sorted((e.name, e.stat(follow_symlinks=False)) for e in it)
        for name, cst in children:
            ck = prefix + name
            cfull = os.path.join(full, name)
            if _stat.S_ISDIR(cst.st_mode):
                own, over = r._xattrs(cfull)
                out[name] = r._dir(ck, cfull, cst, own, over)
                self._xwh[ck] = over.get("opaque") == b"x"
                continue
            node = out[name] = r._nondir(ck, cfull, cst, xwh)
            if cst.st_nlink > 1 and isinstance(node, File):
                self._links[id(node)] = cst.st_nlink
        return out

    def nlink(self, node: Entry) -> int:
        """st_nlink of a file of this layer as stat gave it (1 for anything else)."""
        return self._links.get(id(node), 1)

    def all_entries(self) -> dict[str, Entry]:
        """Every entry of the layer by key (reads every directory not read yet), as :func:`read` gives them."""
        out: dict[str, Entry] = {}
        stack = [""]
        while stack:
            k = stack.pop()
            prefix = k + "/" if k else ""
            for name, e in self.entries(k).items():
                out[prefix + name] = e
                if isinstance(e, Dir):
                    stack.append(prefix + name)
        return out


def _read_xattrs(full: str, namespaces: tuple[str, ...]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The entry's own xattrs, and the overlay ones (namespace stripped)."""
    if too_long(full):
        with reachable(full) as where:
            return _read_xattrs(where, namespaces)
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}, {}
        raise
    own: dict[str, bytes] = {}
    over: dict[str, bytes] = {}
    for name in names:
        try:
            value = os.getxattr(full, name, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:  # removed meanwhile
                continue
            raise
        for ns in namespaces:
            if name.startswith(ns):
                rest = name[len(ns) :]
                if rest.startswith(_ESCAPE):
                    own[ns + rest[len(_ESCAPE) :]] = value
                else:
                    over.setdefault(rest, value)
                break
        else:
            own[name] = value
    return own, over


def _lazy_xattrs(full: str, ident: tuple[int, int], namespaces: tuple[str, ...]) -> dict[str, bytes]:
    """A lazy lower entry's own xattrs, read when first asked for: EIO naming it if it is
    no longer the entry that was read (as :class:`~unionfs_sim.nodes.DiskBytes` does)."""
    try:
        with reachable(full) as where:
            st = os.lstat(where)
            if (st.st_dev, st.st_ino) == ident:
                return _read_xattrs(where, namespaces)[0]
    except FileNotFoundError:
        pass
    raise OSError(errno.EIO, "lower file removed or replaced since it was read as a layer", full)


def _write_all(fd: int, data: Content) -> None:
    """Write ``data`` to ``fd`` from its start (a DiskBytes piece by piece)."""
    pieces = data.chunks() if isinstance(data, DiskBytes) else (data,)
    for piece in pieces:
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view) :]


def _read_data(full: str, st: os.stat_result) -> bytes:
    """The bytes of regular file ``full``, refusing a symlink or a swapped-in other file."""
    fd = os.open(full, _RDONLY)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not _stat.S_ISREG(fst.st_mode):
            raise FormatError(f"{full}: changed while being read")
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


__all__ = ["ESCAPE", "TRUSTED", "USER", "Format", "LayerDir", "read", "write"]
