"""Write-through upperdirs: a view whose every change lands in an overlayfs upperdir at once.

:class:`WriteThroughFS` is a :class:`~unionfs_sim.fs.FileSystem` facade over a container's
overlay that, inside each call and before it returns, makes an on-disk upperdir
(:class:`UpperDir`) equal to the overlay's upper tree in the kernel's format: copy-up,
char-device 0/0 whiteouts, ``trusted.overlay.opaque``, ``trusted.overlay.redirect``,
``trusted.overlay.metacopy``, escaped ``trusted.overlay.overlay.*`` xattrs, owners,
modes and times. The model stays the source of truth for reads; the directory is its
durable copy, valid for the kernel's overlayfs (or fuse-overlayfs) at every moment.

It lives here, beside the FUSE server, because the mounts are its users (the
fuse-overlayfs drop-in, ``unionfs-sim mount --upper``) and the client's fsync only
exists there; it sits above :mod:`~unionfs_sim.fs` and :mod:`~unionfs_sim.overlay`,
so it cannot be a codec. It drives everything from outside the overlay: each facade
call knows which names it changed, and :meth:`UpperDir.sync` makes the disk entry at a
name equal to the model's, non-recursively.

As the kernel does (ovl_copy_up_locked, ovl_do_whiteout with RENAME_WHITEOUT), copy-ups
and objects that replace something (a whiteout, another object) are built in a private
staging directory in the workdir (same filesystem) and renamed into place, so a process
killed mid-operation leaves either the old or the new entry, never a half-copied file; a
new object where the upperdir has nothing is made in place (ovl_create_upper). Data
written through an open file is written to the upper file with pwrite(2) before the
write returns; the client's fsync is an fsync(2) of it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat as _stat
from typing import Any

from ..codec import overlaydir
from ..codec.overlaydir import ESCAPE, TRUSTED
from ..content import CHUNK, Data
from ..fs import FileSystem, Handle, PathArg
from ..linux import RENAME_EXCHANGE, RENAME_WHITEOUT, renameat2
from ..lower import Lower
from ..nodes import WHITEOUT, Content, DiskBytes, Entry, File, Whiteout
from ..overlay import Inode, Loc, Overlay
from ..paths import join, split

STAGE = "unionfs-sim"
"""The staging directory inside the workdir (the kernel's own is ``work``)."""
_COPY = 1 << 20
_PATH_MAX = 4096
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_KIND = {_stat.S_IFREG: "f", _stat.S_IFDIR: "d", _stat.S_IFLNK: "l", _stat.S_IFIFO: "p", _stat.S_IFSOCK: "s",
         _stat.S_IFCHR: "c", _stat.S_IFBLK: "b"}
_FMT = {v: k for k, v in _KIND.items()}


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _kind(st: os.stat_result) -> str:
    return _KIND.get(_stat.S_IFMT(st.st_mode), "?")


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would race other threads)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(ln for ln in f if ln.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def adopt_times(e: Inode, st: os.stat_result, atime: bool = True) -> None:
    """Give the model the times the disk object got (the kernel set them as it changed it)."""
    if atime:
        e.atime_ns = st.st_atime_ns
    e.mtime_ns, e.ctime_ns = st.st_mtime_ns, st.st_ctime_ns


def _is_whiteout(st: os.stat_result | None) -> bool:
    return st is not None and _stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def read_upperdir(path: str, lower: Lower) -> dict[str, Entry]:
    """An upperdir as layer entries, root included; a metacopy file gets its lower data."""
    def metacopy_data(k: str) -> Content:
        node = lower.nodes.get(k)
        if isinstance(node, File):
            return node.data  # shared, not read: a lazy lower's DiskBytes stays lazy
        return FileSystem(Overlay(lower, readonly=True)).read_bytes("/" + k)

    return overlaydir.read(path, format="overlay", include_root=True, metacopy=metacopy_data)


class _OrReload:
    """:meth:`UpperDir._or_reload` (a class: it runs for every change, and a generator
    context manager cost a few us of each)."""

    __slots__ = ("upper",)

    def __init__(self, upper: UpperDir) -> None:
        self.upper = upper

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if kind is not None and issubclass(kind, OSError):
            self.upper.reload()


class UpperDir:
    """An overlayfs upperdir kept equal to an :class:`~unionfs_sim.overlay.Overlay`'s upper tree.

    Call :meth:`sync` with the key of every name an operation changed (under the view's
    lock); :meth:`moved` and :meth:`linked` for renames and links, which must move or
    link the existing disk objects rather than copy them.

    Args:
        overlay: the view whose upper tree is mirrored (loaded from ``upperdir`` already).
        upperdir: the directory to keep current.
        workdir: a directory on the same filesystem, for staging (the mount's workdir).
        fsync: fsync(2) on the client's fsync (fuse-overlayfs's ``fsync=0`` turns it off).
    """

    def __init__(self, overlay: Overlay, upperdir: str, workdir: str, *, ns: str = TRUSTED,
                 fsync: bool = True) -> None:
        self.ov = overlay
        self.fsync = fsync
        self.root = os.path.abspath(upperdir)
        self.stage = os.path.join(os.path.abspath(workdir), STAGE)
        self.ns = ns
        self._n = itertools.count()
        os.makedirs(self.stage, mode=0o700, exist_ok=True)
        for name in os.listdir(self.stage):  # left by a killed server: never part of the upper
            self._rm(os.path.join(self.stage, name))
        self._dirs: set[str] = set()  # keys whose times a change on disk disturbed
        self._euid, self._egid = os.geteuid(), os.getegid()
        self._umask = _umask()
        # key -> (directory inode, its mtime, atime and other metadata when the model and the
        # disk last agreed on them): whether the model moved the directory's times in the
        # current call, and that nothing else of it needs looking at on disk.
        self._agreed: dict[str, tuple[Inode, int, int, tuple[Any, ...]]] = {}
        self._fresh: str | None = None  # changed(fresh=k): k was just made in the model
        self._path_fds: list[int] = []  # see full()
        self._keep: str | None = None  # changed(keep=k): a file made at k stays open ...
        self._kept: int | None = None  # ... here (saves reopening it for the write handle)

    # --- names --------------------------------------------------------------------------

    def full(self, k: str) -> str:
        """The disk path of key ``k``: beyond PATH_MAX (a name the mount allows, the upperdir
        being deeper), its directory opened by walking to it and the name under
        ``/proc/self/fd/N`` (closed by :meth:`release`, which :meth:`finish` calls)."""
        if not k:
            return self.root
        p = f"{self.root}/{k}"  # os.path.join: keys are relative, never start with "/"
        if len(p) < 1024 or len(os.fsencode(p)) < _PATH_MAX:
            return p
        parent, name = split(k)
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for comp in parent.split("/"):
                nfd = os.open(comp, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except FileNotFoundError:
            os.close(fd)
            return p  # its directory is not on disk (yet): ENAMETOOLONG where it is used
        except BaseException:
            os.close(fd)
            raise
        self._path_fds.append(fd)
        return f"/proc/self/fd/{fd}/{name}"

    def open_for_write(self, k: str) -> int:
        """A read-write descriptor of the upper file at key ``k`` (a write handle's disk side;
        read-write so that FUSE passthrough can use it for a client's reads too)."""
        try:
            return os.open(self.full(k), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        finally:
            self.release()

    def release(self) -> None:
        """Close the directories :meth:`full` opened for paths beyond PATH_MAX."""
        while self._path_fds:
            os.close(self._path_fds.pop())

    def entry(self, k: str) -> Inode | Whiteout | None:
        """The upper tree's entry at ``k`` (None: nothing there, the lower layers show through)."""
        d = self.ov.root
        if d is None:
            return None
        if not k:
            return d
        names = k.split("/")
        for name in names[:-1]:
            e = d.entries.get(name) if d.entries is not None else None
            if not isinstance(e, Inode) or e.entries is None:
                return None
            d = e
        return d.entries.get(names[-1]) if d.entries is not None else None

    def on_disk(self, k: str) -> bool:
        """True if the upper object at ``k`` is on disk there (so a move can move it)."""
        e = self.entry(k)
        if not isinstance(e, Inode):
            return False
        st = _lstat(self.full(k))
        return st is not None and _kind(st) == e.kind

    # --- making the disk equal to the model ------------------------------------------------

    def sync(self, k: str) -> None:
        """Make the disk entry at ``k`` what the upper tree has there (its parents first)."""
        e = self.entry(k)
        full = self.full(k)
        if isinstance(e, Inode):
            if k == self._fresh and k and e.origin is None and self._try_in_place(k, full, e):
                return
            if e.kind == "d" and self._agreed_dir(k, e):
                if k not in self._dirs:
                    a = self._agreed[k]
                    if (a[1], a[2]) != (e.mtime_ns, e.atime_ns):  # the model set its times
                        os.utime(full, ns=(e.atime_ns, e.mtime_ns), follow_symlinks=False)
                        self._agree(k, e)
                    return  # else as it was when the disk last agreed: nothing to look at
                st = _lstat(full)
                if st is not None and _stat.S_ISDIR(st.st_mode):
                    self._dir_times(k, full, e, st)
                    self._dirs.discard(k)
                    return
        st = _lstat(full)
        if e is None:
            if st is not None and k:
                self._discard(k, full, st)
                self._dirs.add(split(k)[0])
            return
        if k:
            self._parents(k)
            if len(full) >= 1024:
                full = self.full(k)  # beyond PATH_MAX: its directory may only exist now
        if isinstance(e, Whiteout):
            if not _is_whiteout(st):
                self._place(k, st, self._whiteout)
            return
        if st is None or _kind(st) != e.kind:
            if not k:
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), full)
            if st is None and e.origin is None:
                # A new object where the disk has nothing: made in place, as the kernel's
                # ovl_create_upper does. Only what replaces something (a whiteout, another
                # object) or copies a lower one up is staged, so a kill never leaves half
                # a copy-up shadowing a lower file.
                self._make(full, e, keep=k == self._keep, in_place=True)
                self._dirs.add(split(k)[0])
                return
            self._place(k, st, lambda tmp: self._make(tmp, e, keep=k == self._keep))
            return
        self._meta(full, e, st, k)
        self._dirs.discard(k)  # its times were just settled; a later change on disk re-adds it

    def finish(self) -> None:
        """Settle the times of directories whose names changed on disk during the call."""
        try:
            while self._dirs:
                k = self._dirs.pop()
                e = self.entry(k)
                if isinstance(e, Inode) and e.kind == "d":
                    full = self.full(k)
                    st = _lstat(full)
                    if st is not None and _kind(st) == "d":
                        self._dir_times(k, full, e, st)
        finally:
            self.release()

    def _dir_times(self, k: str, full: str, e: Inode, st: os.stat_result) -> None:
        """A directory whose names changed on disk in this call: equal times on both sides.

        If the model moved its times in this call too (a name made, removed or moved in
        it), the model takes the times the kernel just gave the disk directory: one stat,
        no utime. If the model did not (a copy-up staged through it, which ovl_copy_up
        hides by restoring the parent's times), the disk gets the model's times back.
        """
        agreed = self._agreed.get(k)
        if agreed is not None and agreed[0] is e and agreed[1] != e.mtime_ns:
            adopt_times(e, st)
        else:
            self._times(full, e, st)
        self._agree(k, e)

    @staticmethod
    def _dir_meta(e: Inode) -> tuple[Any, ...]:
        return e.mode, e.uid, e.gid, e.opaque, e.redirect, tuple(e.xattrs.items())

    def _agree(self, k: str, e: Inode) -> None:
        """Note that the disk directory at ``k`` now has ``e``'s metadata and times."""
        self._agreed[k] = (e, e.mtime_ns, e.atime_ns, self._dir_meta(e))

    def _agreed_dir(self, k: str, e: Inode) -> bool:
        """True if the disk has directory ``e`` at ``k`` with the metadata it has in the
        model, times apart (nothing changed it since :meth:`_agree`)."""
        a = self._agreed.get(k)
        return a is not None and a[0] is e and a[3] == self._dir_meta(e)

    def _try_in_place(self, k: str, full: str, e: Inode) -> bool:
        """A name just made in the model, tried on disk without looking first (O_EXCL and
        the like refuse if something is there, or the directory is not on disk yet: then
        False, and :meth:`sync` takes the long way)."""
        try:
            fd = self._create(full, e)
        except (FileExistsError, FileNotFoundError):
            return False
        self._dirs.add(split(k)[0])
        self._settle(full, e, fd, k == self._keep)
        return True

    def reload(self) -> None:
        """Make the model's upper tree what the upperdir holds.

        Called when the disk refused part of a change (ENOSPC, EIO, EDQUOT ...) that the
        model had already made: the call fails with the disk's error, and the view shows
        what the kernel's overlayfs (or a remount) would, not what the call wanted. Files
        open at that moment keep their handles' inodes (their reads and writes go on, on
        disk), but a lookup of their names gets the re-read ones.
        """
        self.release()
        self._agreed.clear()
        self.ov.load_upper(read_upperdir(self.root, self.ov.lower), replace=True)

    def _or_reload(self) -> _OrReload:
        """A context in which an OSError (the disk refused a change) re-reads the upperdir
        into the model before it propagates."""
        return _OrReload(self)

    def _parents(self, k: str) -> None:
        p = split(k)[0]
        if not p:
            return
        e = self.entry(p)
        if isinstance(e, Inode) and e.kind == "d" and self._agreed.get(p, (None,))[0] is e:
            return  # on disk as a directory since the disk last agreed on it
        st = _lstat(self.full(p))
        if st is None or not _stat.S_ISDIR(st.st_mode):
            self.sync(p)

    def _tmp(self) -> str:
        return f"{self.stage}/#{next(self._n):x}"

    def _place(self, k: str, st: os.stat_result | None, make: Any) -> None:
        """Build the new object in the staging dir, then swap it in with one rename."""
        full = self.full(k)
        tmp = self._tmp()
        make(tmp)
        if st is not None and (_stat.S_ISDIR(st.st_mode) or _stat.S_ISDIR(os.lstat(tmp).st_mode)):
            renameat2(tmp, full, RENAME_EXCHANGE)
            self._rm(tmp)
        else:
            os.rename(tmp, full)
        self._dirs.add(split(k)[0])

    def _discard(self, k: str, full: str, st: os.stat_result) -> None:
        if _stat.S_ISDIR(st.st_mode):
            self._agreed.pop(k, None)
            tmp = self._tmp()
            os.rename(full, tmp)
            self._rm(tmp)
        else:
            os.unlink(full)

    @staticmethod
    def _rm(path: str) -> None:
        st = _lstat(path)
        if st is None:
            return
        if _stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    @staticmethod
    def _whiteout(tmp: str) -> None:
        os.mknod(tmp, _stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def _make(self, tmp: str, e: Inode, keep: bool = False, in_place: bool = False) -> None:
        """Make ``e`` at ``tmp``: staged (owner-only until its metadata is set) or, with
        ``in_place``, where it stays (see :meth:`_make_in_place`)."""
        if in_place:
            self._make_in_place(tmp, e, keep)
            return
        kind = e.kind
        if kind == "d":
            os.mkdir(tmp, 0o700)
        elif kind == "f":
            # With its final mode, as ovl_create_temp makes it (nobody else sees the staging
            # directory): no chmod when the umask takes nothing from it.
            mode = e.mode & 0o777
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            try:
                self._file_data(fd, e)
                self._meta(tmp, e, None, made_mode=mode & ~self._umask)
            except BaseException:
                os.close(fd)
                raise
            if keep:
                self._kept = fd
            else:
                os.close(fd)
            return
        elif kind == "l":
            assert e.target is not None
            os.symlink(e.target, tmp)
        elif kind == "p":
            os.mkfifo(tmp, 0o600)
        else:
            os.mknod(tmp, _FMT[kind] | 0o600, e.rdev)
        self._meta(tmp, e, None)

    def _file_data(self, fd: int, e: Inode) -> None:
        if e.metacopy:
            os.ftruncate(fd, e.size)
        else:
            self._write_data(fd, e, fresh=True)

    def _make_in_place(self, full: str, e: Inode, keep: bool) -> None:
        """A new object where the disk has nothing, as ovl_create_upper makes it (see
        :meth:`_create` and :meth:`_settle`)."""
        self._settle(full, e, self._create(full, e), keep)

    @staticmethod
    def _create(full: str, e: Inode) -> int:
        """Make the object with its final mode at once (the umask may take bits: fixed by
        :meth:`_settle`); a new file's write descriptor, else -1. Refuses (EEXIST,
        ENOENT) if something is there or the directory is missing, having made nothing."""
        kind = e.kind
        mode = e.mode & 0o777
        if kind == "f":
            return os.open(full, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        if kind == "d":
            os.mkdir(full, mode)
        elif kind == "l":
            assert e.target is not None
            os.symlink(e.target, full)
        elif kind == "p":
            os.mkfifo(full, mode)
        else:
            os.mknod(full, _FMT[kind] | mode, e.rdev)
        return -1

    def _settle(self, full: str, e: Inode, fd: int, keep: bool) -> None:
        """After :meth:`_create`: data, then owner and mode only where the kernel gave it
        others, xattrs; the model takes the times the kernel gave it (a stat, no utime)."""
        try:
            if fd >= 0 and (e.metacopy or e.size):
                self._file_data(fd, e)
            target: int | str = fd if fd >= 0 else full
            nf = {"follow_symlinks": False} if fd < 0 else {}
            st = os.stat(target, **nf)
            mode = e.mode & 0o7777
            fixed = False
            if (st.st_uid, st.st_gid) != (e.uid, e.gid):
                os.chown(target, e.uid, e.gid, **nf)  # clears setuid/setgid: the mode follows
                fixed = True
            if e.kind != "l" and (fixed or _stat.S_IMODE(st.st_mode) != mode):
                os.chmod(target, mode, **nf)
                fixed = True
            for name, value in self._xattrs(e).items():
                os.setxattr(target, name, value, **nf)
                fixed = True
            if fixed:
                st = os.stat(target, **nf)
            adopt_times(e, st)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        if fd >= 0:
            if keep:
                self._kept = fd
            else:
                os.close(fd)

    @staticmethod
    def _write_data(fd: int, e: Inode, fresh: bool = False) -> None:
        """The file's data into ``fd`` (``fresh``: a new, empty file, so no truncate)."""
        data = e.data
        assert data is not None
        base = data.base
        off = 0
        if isinstance(base, DiskBytes) and not data.chunks and data.base_len == data.size == len(base):
            # Untouched lower data on disk: copied in the kernel (copy_file_range, as
            # ovl_copy_up_data does), never through this process's memory. Across
            # filesystems (a lower on another mount) the kernel may refuse (EXDEV ...):
            # then the bytes go through pread/pwrite below, as overlayfs falls back too.
            src = base.open_fd()
            try:
                while off < data.size:
                    try:
                        n = os.copy_file_range(src, fd, min(_COPY << 4, data.size - off), off, off)
                    except OSError as e:
                        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                            raise
                        break
                    if n == 0:
                        raise OSError(errno.EIO, "lower file got shorter while copied up", base.path)
                    off += n
            finally:
                os.close(src)
            if off == data.size:
                return
        while off < data.size:
            chunk = data.view(off, _COPY)
            n = os.pwrite(fd, chunk, off)
            off += n
        if not fresh:
            os.ftruncate(fd, data.size)

    def _xattrs(self, e: Inode) -> dict[str, bytes]:
        """The xattrs the disk object should carry: its own (escaped) and the overlay ones."""
        ns = self.ns
        out = {}
        for name, value in e.xattrs.items():
            if name.startswith(ns):
                name = ns + ESCAPE + name[len(ns):]
            out[name] = value
        if e.kind == "d":
            if e.opaque:
                out[ns + "opaque"] = b"y"
            if e.redirect is not None:
                out[ns + "redirect"] = os.fsencode("/" + e.redirect)
        elif e.kind == "f" and e.metacopy:
            out[ns + "metacopy"] = b""
        return out

    def _meta(self, full: str, e: Inode, st: os.stat_result | None, key: str | None = None,
              made_mode: int | None = None) -> None:
        """Owner, mode (after chown, which clears setuid), data size, xattrs, then times
        (``key``: the object's key, when ``full`` is where it stays; ``made_mode``: the
        mode an object made just now (``st`` None) got, if known)."""
        nf = {"follow_symlinks": False}
        chowned = st is None or (st.st_uid, st.st_gid) != (e.uid, e.gid)
        # Made just now (st None), it is ours, with a group the model also gave it (the
        # parent's under setgid, which the model mirrors): no chown needed then.
        owner_set = chowned and not (st is None and (e.uid, e.gid) == (self._euid, self._egid))
        if owner_set:
            os.chown(full, e.uid, e.gid, **nf)
        if st is None:
            set_mode = owner_set or made_mode != e.mode
        else:
            set_mode = chowned or _stat.S_IMODE(st.st_mode) != e.mode
        if e.kind != "l" and set_mode:
            os.chmod(full, e.mode)
        want = self._xattrs(e)
        # A new object has only what it inherited (a default ACL, a security label), which
        # the kernel's overlayfs leaves on a new upper object too.
        have = set(os.listxattr(full, **nf)) if st is not None else set()
        meta_name = self.ns + "metacopy"
        if e.kind == "f" and st is not None:
            assert e.data is not None
            if meta_name in have and not e.metacopy:
                # The data is copied up now (ovl_copy_up_meta_inode_data): data first, then
                # the xattr goes, so a kill between leaves a valid metacopy file.
                fd = os.open(full, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    self._write_data(fd, e)
                finally:
                    os.close(fd)
            elif not e.metacopy and st.st_size != e.data.size:
                os.truncate(full, e.data.size)
        for name, value in want.items():
            if name not in have or os.getxattr(full, name, **nf) != value:
                os.setxattr(full, name, value, **nf)
        for name in have - want.keys():
            if name.startswith(self.ns) and not name.startswith(self.ns + ESCAPE) \
                    and name[len(self.ns):] not in ("opaque", "redirect", "metacopy"):
                continue  # the kernel's own bookkeeping (origin, impure, ...): left as it is
            with contextlib.suppress(OSError):
                os.removexattr(full, name, **nf)
        if e.kind == "d" and key is not None and st is not None and key in self._dirs:
            self._dir_times(key, full, e, st)
            return
        self._times(full, e, None if chowned or e.kind == "f" else st)
        if e.kind == "d" and key is not None:
            self._agree(key, e)

    @staticmethod
    def _times(full: str, e: Inode, st: os.stat_result | None) -> None:
        if st is None or st.st_mtime_ns != e.mtime_ns or st.st_atime_ns != e.atime_ns:
            os.utime(full, ns=(e.atime_ns, e.mtime_ns), follow_symlinks=False)

    # --- moves and links -------------------------------------------------------------------

    def moved(self, src: str, dst: str, had_src: bool, had_dst: bool, exchange: bool) -> None:
        """After a rename (or exchange) of ``src`` to ``dst`` in the model: the same on disk.

        ``had_src``/``had_dst``: :meth:`on_disk` of each before the rename. An object on
        disk is moved, never copied (its hard links and open files stay with it).
        """
        try:
            with self._or_reload():
                self._moved(src, dst, had_src, had_dst, exchange)
        except BaseException:
            self.release()
            raise

    def _moved(self, src: str, dst: str, had_src: bool, had_dst: bool, exchange: bool) -> None:
        fs, fd = self.full(src), self.full(dst)
        self._agreed.pop(src, None)
        self._agreed.pop(dst, None)
        if exchange and had_src and had_dst:
            renameat2(fs, fd, RENAME_EXCHANGE)
        elif had_src:
            self._parents(dst)
            dst_st = _lstat(fd)
            if dst_st is not None and (_stat.S_ISDIR(dst_st.st_mode) or _stat.S_ISDIR(os.lstat(fs).st_mode)):
                # A directory on either side (rename(2) refuses a directory over a whiteout's
                # char device, or over a non-empty directory): swap them, and sync(src) below
                # removes or whiteouts what came back, as ovl_rename swaps over a whiteout.
                renameat2(fs, fd, RENAME_EXCHANGE)
            elif self.entry(src) is WHITEOUT:
                try:  # move and leave the whiteout in one step, as ovl_rename does
                    renameat2(fs, fd, RENAME_WHITEOUT)
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.EPERM, errno.ENOSYS):
                        raise
                    os.rename(fs, fd)
            else:
                os.rename(fs, fd)
        elif exchange and had_dst:
            self._parents(src)
            os.rename(fd, fs)
        elif not exchange:
            # src had no object on disk (a lower one, copied up by the rename): what dst
            # has on disk is replaced by a new copy, never kept and relabelled by sync.
            new, st = self.entry(dst), _lstat(fd)
            if isinstance(new, Inode) and st is not None:
                self._parents(dst)
                self._place(dst, st, lambda tmp: self._make(tmp, new))
        self._dirs.update((split(src)[0], split(dst)[0]))
        self.sync(dst)
        self.sync(src)
        self.sync(split(src)[0])
        self.sync(split(dst)[0])

    def linked(self, src: str, dst: str) -> None:
        """After ``link(src, dst)`` in the model: a hard link on disk (``src`` copied up first)."""
        try:
            with self._or_reload():
                self._linked(src, dst)
        except BaseException:
            self.release()
            raise

    def _linked(self, src: str, dst: str) -> None:
        self.sync(src)
        self._parents(dst)
        tmp = self._tmp()
        os.link(self.full(src), tmp, follow_symlinks=False)
        os.rename(tmp, self.full(dst))  # over a whiteout, if there is one
        self._dirs.add(split(dst)[0])
        self.sync(dst)
        self.sync(src)
        self.sync(split(dst)[0])

    def created(self, k: str, e: Inode, pk: str, pe: Inode) -> int | None:
        """:meth:`changed` ``(k, keep=k, fresh=k)`` for a regular file ``e`` just made at
        ``k`` in directory ``pe`` (key ``pk``), the common case taken straight: the
        directory is on disk as the disk last agreed on it, so the file is made in place
        with its final mode (:meth:`_create`), the model takes the times the kernel gave
        it and its directory (:meth:`_settle`, :meth:`_dir_times`), with no lookups by
        key. Returns the new file's write descriptor; None, having done nothing, where
        :meth:`changed` must decide (the directory not agreed on, a name beyond PATH_MAX,
        something on disk there).
        """
        a = self._agreed.get(pk)
        if a is None or a[0] is not pe or e.kind != "f" or e.origin is not None or self._dirs:
            return None
        meta = self._dir_meta(pe)
        if a[3] != meta:
            return None
        pfull = f"{self.root}/{pk}" if pk else self.root
        full = f"{pfull}/{k.rpartition('/')[2]}"
        if len(full) >= 1024:
            return None
        try:
            fd = os.open(full, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, e.mode & 0o777)
        except (FileExistsError, FileNotFoundError):
            return None  # a whiteout there, or the directory is gone: the long way
        except OSError:
            self.reload()  # as changed() does: the model shows what the disk has
            raise
        try:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (e.uid, e.gid) or _stat.S_IMODE(st.st_mode) != e.mode & 0o7777 \
                    or e.xattrs or e.size or e.metacopy:
                made, fd = fd, -1
                self._settle(full, e, made, True)  # owner, mode, xattrs to fix (closes it if it fails)
                kept, self._kept = self._kept, None
                assert kept is not None  # _settle keeps what it was asked to keep
                fd = kept
            else:
                adopt_times(e, st)
            st = os.lstat(pfull)
            if a[1] != pe.mtime_ns:  # the model moved the directory's times: it takes the disk's
                adopt_times(pe, st)
            else:
                self._times(pfull, pe, st)
            self._agreed[pk] = (pe, pe.mtime_ns, pe.atime_ns, meta)
        except BaseException as err:
            if fd >= 0:
                os.close(fd)
            if isinstance(err, OSError):
                self.reload()  # as changed() does
            raise
        return fd

    def changed(self, *keys: str, keep: str | None = None, fresh: str | None = None) -> int | None:
        """After an operation on the names ``keys``: sync each and its directory.

        With ``keep=k``: if a regular file is made at ``k`` now, it is left open and its
        write descriptor returned (for the open file's handle), else None. ``fresh=k``:
        the operation made a new object at ``k`` (tried on disk before looking there).
        """
        self._keep, self._fresh = keep, fresh
        try:
            with self._or_reload():
                for k in keys:
                    self.sync(k)
                    if k:
                        self.sync(split(k)[0])
                self.finish()
        except BaseException:
            if self._kept is not None:
                os.close(self._kept)
            raise
        finally:
            self.release()
            self._keep = self._fresh = None
            kept, self._kept = self._kept, None
        return kept


class WriteThroughHandle(Handle):
    """An open file of a :class:`WriteThroughFS`: writes and truncates also go to the upper file."""

    _wt_fd = -1
    _wt_lent = False
    _wt: UpperDir

    def __init__(self, fs: FileSystem, path: str, loc: Loc, inode: Inode | None, flags: int) -> None:
        super().__init__(fs, path, loc, inode, flags)
        self.key = loc.path
        """The key of the name it was opened by (symlinks followed)."""

    def write(self, b: Any) -> int:
        """As :meth:`Handle.write`, then the same bytes at the same offset on disk.

        A disk that takes only part of the bytes (full) makes this a short write of what it
        took, as write(2) is; one that takes none raises its error. Either way the model
        keeps exactly what the disk has.
        """
        with self._fs.lock:
            o = self._inode
            if self._wt_fd >= 0 and o is not None and o.data is not None and o.data.over_disk:
                self._own_from_upper(o.data, len(memoryview(b).cast("B")))
            n = super().write(b)
            if self._wt_fd >= 0 and o is not None and n:
                view = memoryview(b).cast("B")[:n]
                start = self._pos - n
                done = 0
                try:
                    while done < n:
                        done += os.pwrite(self._wt_fd, view[done:], start + done)
                except OSError:
                    self._undo(o, start + done, start + n)
                    self._pos = start + done
                    if not done:
                        raise
                    return done
                adopt_times(o, os.fstat(self._wt_fd), atime=False)  # the kernel's new mtime
            return n

    def _own_from_upper(self, data: Data, n: int) -> None:
        """Before a write of ``n`` bytes into data still over a lower file: the chunks it
        touches from the upper file, which holds the same bytes (the write-through copy),
        so the model does not open the lower file to read them (an append to a file just
        copied up would open it once more)."""
        if not n or self._inode is None or self._inode.metacopy:
            return
        pos = data.size if self._flags & os.O_APPEND else self._pos
        first, last = pos // CHUNK, (pos + n - 1) // CHUNK
        for i in (first, last) if last > first else (first,):
            start = i * CHUNK
            want = min(CHUNK, data.base_len - start)
            if i not in data.chunks and want > 0:
                got = os.pread(self._wt_fd, want, start)
                if len(got) == want:  # else the model reads its lower file, as it would have
                    data.chunks[i] = bytearray(got)
        for i in range(first + 1, last):  # wholly overwritten: what they held does not matter
            start = i * CHUNK
            if i not in data.chunks and start < data.base_len:
                data.chunks[i] = bytearray(min(CHUNK, data.base_len - start))

    def _undo(self, o: Inode, start: int, end: int) -> None:
        """Put back the disk's bytes in ``[start, end)`` of the model and its size (after a
        write the disk refused from ``start`` on)."""
        fd = os.open(f"/proc/self/fd/{self._wt_fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            old = os.pread(fd, max(0, min(end, size) - start), start) if start < size else b""
        finally:
            os.close(fd)
        ov = self._fs.overlay
        if old:
            ov.write(o, start, old)
        ov.setattr(o, size=size, mtime_ns=o.mtime_ns)

    def truncate(self, size: int | None = None) -> int:
        """As :meth:`Handle.truncate`, on disk too (the model keeps the disk's size if the disk refuses)."""
        with self._fs.lock:
            size = super().truncate(size)
            o = self._inode
            if self._wt_fd >= 0 and o is not None:
                try:
                    os.ftruncate(self._wt_fd, size)
                except OSError:
                    self._fs.overlay.setattr(o, size=os.fstat(self._wt_fd).st_size, mtime_ns=o.mtime_ns)
                    raise
                adopt_times(o, os.fstat(self._wt_fd), atime=False)
            return size

    def attach(self, fd: int, upper: UpperDir) -> None:
        """Write through to ``fd``, the open upper file on disk (closed with the handle)."""
        self._wt_fd, self._wt = fd, upper

    @property
    def upper_fd(self) -> int:
        """The upper file's read-write descriptor (-1: none, the handle is not writing)."""
        return self._wt_fd

    @property
    def regular(self) -> bool:
        """True if the handle holds an upper regular file (what there is to write through to)."""
        return self._inode is not None and self._inode.kind == "f"

    def sync(self) -> None:
        """fsync(2) the upper file (the client's fsync)."""
        if self._wt_fd >= 0 and self._wt.fsync:
            os.fsync(self._wt_fd)

    def lend_upper_fd(self) -> int:
        """The upper file's descriptor, from now on closed by the caller, not by :meth:`close`
        (which must come before the caller closes it: the handle writes through it until then)."""
        self._wt_lent = True
        return self._wt_fd

    def close(self) -> None:
        """Close the handle and its upper file (unless lent: see :meth:`lend_upper_fd`)."""
        fd, self._wt_fd = self._wt_fd, -1
        if fd >= 0 and not self._wt_lent:
            os.close(fd)
        super().close()


class WriteThroughFS(FileSystem):
    """A container's view whose every change is also written to an upperdir before it returns.

    Build it over the overlay the upperdir was loaded into
    (``Container.from_upper(image, overlaydir.read(upper, ...))``)::

        fs = WriteThroughFS(c.overlay, UpperDir(c.overlay, upper, work))
    """

    handle_class = WriteThroughHandle

    def __init__(self, overlay: Overlay, upper: UpperDir) -> None:
        super().__init__(overlay)
        self.upper = upper

    def _name_key(self, path: PathArg) -> str | None:
        """The key of the last name of ``path`` (not followed), or None if it cannot resolve."""
        if type(path) is str:
            head, _, name = path.rpartition("/")
            if name and name != "." and name != ".." and (head or path.startswith("/")):
                # the directory by the facade's fast lookup (symlinks followed), no walk
                try:
                    d = self._get(head or "/", True)
                except (OSError, ValueError):
                    return None
                return join(d.path, name) if d.is_dir else None
        try:
            r = self._resolve(path, False, parent_only=True)
        except (OSError, ValueError):
            return None
        if r.name in ("", ".", ".."):
            return r.loc.path if r.loc is not None else None
        return join(r.parent.path, r.name)

    def _target_key(self, path: PathArg, follow: bool) -> str | None:
        try:
            return self._get(path, follow).path  # the facade's fast lookup where it can
        except (OSError, ValueError):
            return None

    def _after(self, *keys: str | None, fresh: str | None = None) -> None:
        self.upper.changed(*(k for k in keys if k is not None), fresh=fresh)

    # --- names ---------------------------------------------------------------------------

    def mkdir(self, path: PathArg, mode: int = 0o777) -> None:
        """As :meth:`FileSystem.mkdir`, written through."""
        with self._lock:
            k = self._name_key(path)
            super().mkdir(path, mode)
            self._after(k, fresh=k)

    def rmdir(self, path: PathArg) -> None:
        """As :meth:`FileSystem.rmdir`, written through."""
        with self._lock:
            k = self._name_key(path)
            super().rmdir(path)
            self._after(k)

    def symlink(self, target: PathArg, path: PathArg, target_is_directory: bool = False) -> None:
        """As :meth:`FileSystem.symlink`, written through."""
        with self._lock:
            k = self._name_key(path)
            super().symlink(target, path, target_is_directory)
            self._after(k, fresh=k)

    def mknod(self, path: PathArg, mode: int = 0o600, device: int = 0) -> None:
        """As :meth:`FileSystem.mknod`, written through."""
        with self._lock:
            k = self._name_key(path)
            super().mknod(path, mode, device)
            self._after(k, fresh=k)

    def unlink(self, path: PathArg) -> None:
        """As :meth:`FileSystem.unlink`, written through."""
        with self._lock:
            k = self._name_key(path)
            super().unlink(path)
            self._after(k)

    remove = unlink

    def link(self, src: PathArg, dst: PathArg, *, follow_symlinks: bool = False) -> None:
        """As :meth:`FileSystem.link`, written through (a hard link on disk too)."""
        with self._lock:
            s = self._target_key(src, follow_symlinks)
            d = self._name_key(dst)
            super().link(src, dst, follow_symlinks=follow_symlinks)
            if s is None or d is None:
                self._after(s, d)
                return
            self.upper.linked(s, d)
            self.upper.finish()

    def rename(self, src: PathArg, dst: PathArg, *, noreplace: bool = False, exchange: bool = False) -> None:
        """As :meth:`FileSystem.rename`, written through (the disk object moves with it)."""
        with self._lock:
            s, d = self._name_key(src), self._name_key(dst)
            had_s = s is not None and self.upper.on_disk(s)
            had_d = d is not None and self.upper.on_disk(d)
            gen = self._ov.generation
            super().rename(src, dst, noreplace=noreplace, exchange=exchange)
            if self._ov.generation == gen:
                return  # a rename to itself
            if s is None or d is None:
                self._after(s, d)
                return
            self.upper.moved(s, d, had_s, had_d, exchange)
            self.upper.finish()

    replace = rename

    # --- attributes ------------------------------------------------------------------------

    def chmod(self, path: PathArg, mode: int, *, follow_symlinks: bool = True) -> None:
        """As :meth:`FileSystem.chmod`, written through."""
        with self._lock:
            super().chmod(path, mode, follow_symlinks=follow_symlinks)
            self._after(self._target_key(path, follow_symlinks))

    def chmod_at(self, loc: Loc, mode: int) -> None:
        """As :meth:`FileSystem.chmod_at`, written through."""
        with self._lock:
            super().chmod_at(loc, mode)
            self._after(loc.path)

    def chown(self, path: PathArg, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """As :meth:`FileSystem.chown`, written through."""
        with self._lock:
            super().chown(path, uid, gid, follow_symlinks=follow_symlinks)
            self._after(self._target_key(path, follow_symlinks))

    def utime(self, path: PathArg, times: tuple[float, float] | None = None, *,
              ns: tuple[int, int] | None = None, follow_symlinks: bool = True) -> None:
        """As :meth:`FileSystem.utime`, written through."""
        with self._lock:
            super().utime(path, times, ns=ns, follow_symlinks=follow_symlinks)
            self._after(self._target_key(path, follow_symlinks))

    def truncate(self, path: PathArg, length: int) -> None:
        """As :meth:`FileSystem.truncate`, written through."""
        with self._lock:
            super().truncate(path, length)
            self._after(self._target_key(path, True))

    def setxattr(self, path: PathArg, attribute: str | bytes, value: bytes, flags: int = 0, *,
                 follow_symlinks: bool = True) -> None:
        """As :meth:`FileSystem.setxattr`, written through."""
        with self._lock:
            super().setxattr(path, attribute, value, flags, follow_symlinks=follow_symlinks)
            self._after(self._target_key(path, follow_symlinks))

    def removexattr(self, path: PathArg, attribute: str | bytes, *, follow_symlinks: bool = True) -> None:
        """As :meth:`FileSystem.removexattr`, written through."""
        with self._lock:
            super().removexattr(path, attribute, follow_symlinks=follow_symlinks)
            self._after(self._target_key(path, follow_symlinks))

    # --- files -----------------------------------------------------------------------------

    def os_open(self, path: PathArg, flags: int, mode: int = 0o777) -> Handle:
        """As :meth:`FileSystem.os_open`; a handle open for writing writes through."""
        with self._lock:
            gen = self._ov.generation
            h = super().os_open(path, flags, mode)
            writing = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
            if self._ov.generation == gen and not writing:
                return h
            k = h.key if isinstance(h, WriteThroughHandle) else \
                self._target_key(path, not flags & (os.O_NOFOLLOW | os.O_EXCL))
            if k is None:
                return h
            fd: int | None = None
            try:
                fd = self.upper.changed(k, keep=k if writing else None, fresh=k if flags & os.O_CREAT else None)
                regular = isinstance(h, WriteThroughHandle) and h.regular
                if fd is not None and not regular:
                    os.close(fd)
                    fd = None
                if writing and regular:
                    assert isinstance(h, WriteThroughHandle)
                    if fd is None:
                        fd = self.upper.open_for_write(k)
                    h.attach(fd, self.upper)
                    fd = None
            except BaseException:
                if fd is not None:
                    os.close(fd)
                h.close()
                raise
            return h

    def create_at(self, parent: Loc, name: str, flags: int, mode: int, uid: int,
                  gid: int) -> tuple[Handle, Loc] | None:
        """As :meth:`FileSystem.create_at`, written through as :meth:`os_open` does."""
        with self._lock:
            made = super().create_at(parent, name, flags, mode, uid, gid)
            if made is None:
                return None
            h, loc = made
            assert isinstance(h, WriteThroughHandle) and loc.up is not None and parent.up is not None
            k = loc.path
            fd: int | None = None
            try:
                if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                    fd = self.upper.created(k, loc.up, parent.path, parent.up)
                    if fd is None:
                        fd = self.upper.changed(k, keep=k, fresh=k)
                    if fd is None:
                        fd = self.upper.open_for_write(k)
                    h.attach(fd, self.upper)
                    fd = None
                else:
                    self.upper.changed(k, fresh=k)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                h.close()
                raise
            return h, loc

    def fsync(self, handle: Handle | None, path: str | None) -> None:
        """The client's fsync: of the open file's upper file, or of the directory at ``path``."""
        if isinstance(handle, WriteThroughHandle):
            handle.sync()
            return
        if not self.upper.fsync:
            return
        with self._lock:
            k = self._target_key(path, False) if path is not None else None
            if k is None or not self.upper.on_disk(k):
                return
            try:
                fd = os.open(self.upper.full(k), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            finally:
                self.upper.release()
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["STAGE", "UpperDir", "WriteThroughFS", "WriteThroughHandle"]
