"""``unionfs-sim-fuse``: a drop-in for fuse-overlayfs, with the model as the filesystem.

Same calling convention as fuse-overlayfs::

    unionfs-sim-fuse [-f] [-d] [-o OPTIONS] [SOURCE] MOUNTPOINT
    unionfs-sim-fuse -o lowerdir=L1:L2,upperdir=U,workdir=W /merged
    unionfs-sim-fuse --umount MOUNTPOINT

The lower directories are read as layers in the overlayfs on-disk format (the leftmost
is the top, as for the kernel). Mounting reads none of their entries: a directory's names
and metadata are read when it is first looked up or listed (:class:`~unionfs_sim.lower.DiskLower`,
by ovl_lookup's rules), a file's bytes (and a non-directory's xattrs) when a client first
reads them or they are copied up (:class:`~unionfs_sim.nodes.DiskBytes`), so neither mount
time nor the server's memory grows with the size of the lowers. As with fuse-overlayfs and the kernel, lowers
are read live: a change in place shows; a lower file made shorter, removed or replaced
under the mount reads as EIO naming it (the kernel calls such changes undefined).
The upperdir's content becomes the container's upper layer, and the mount serves the
model's merged view. **Every change is written to the upperdir as it happens**, before
the system call returns, in the overlayfs format the kernel would leave (copy-up,
char-device 0/0 whiteouts, ``trusted.overlay.opaque``, ``trusted.overlay.redirect``,
``trusted.overlay.metacopy``), as fuse-overlayfs and the kernel do; a client's fsync is
an fsync of the upper file. So the directories can be mounted by the kernel
(``mount -t overlay``) or by fuse-overlayfs at any moment, also after the daemon was
killed (see :mod:`unionfs_sim.fuse.writethrough`). Without ``upperdir`` the mount is
read-only.

Options (``-o``, comma-separated, ``\\,`` for a comma in a value); an option not listed
here is refused, with the list, as the kernel refuses unknown overlay options:

- ``lowerdir=A:B`` (required; ``\\:`` for a colon in a path), ``upperdir=``, ``workdir=``
  (required with ``upperdir``; on the upperdir's filesystem: new objects are staged in
  ``WORKDIR/unionfs-sim`` and renamed into place, as the kernel stages copy-ups in
  ``WORKDIR/work``);
- ``redirect_dir=on|off|follow|nofollow``, ``index=on|off``, ``metacopy=on|off``: the
  :class:`~unionfs_sim.options.OverlayOptions` (``follow``/``nofollow`` count as off: they
  only allow reading redirects, which the model always does);
- ``fsync=0``: do not fsync on the client's fsync (fuse-overlayfs's option);
- ``allow_other``, ``allow_root``, ``default_permissions``, ``ro``/``rw`` and the generic
  mount flags (``dev``, ``suid``, ``exec``, ``noatime`` ... and their opposites): passed
  to FUSE. Run by root, the mount is always ``allow_other,default_permissions`` (as
  fuse-overlayfs does): other users get in, the kernel checking their permissions;
- ``fsname=``: what /proc/mounts shows (default: SOURCE);
- accepted and ignored, as in fuse-overlayfs or the kernel's overlay: see :data:`IGNORED`.

``-f`` stays in the foreground; otherwise the program returns once the mount serves,
leaving a daemon behind (as fuse-overlayfs does, and as ``mount.fuse`` expects).
``-d`` logs every request to stderr (implies ``-f``). ``--umount MOUNTPOINT`` unmounts
(as ``fusermount3 -u``; a plain ``umount`` does as well: nothing is left to write).

To use it through ``mount -t fuse.unionfs-sim-fuse`` (or fstab type
``fuse.unionfs-sim-fuse``): mount(8) runs ``mount.fuse``, which runs
``unionfs-sim-fuse SOURCE MOUNTPOINT -o OPTIONS`` through ``/bin/sh`` with mount's
sanitized PATH, so the script must be found in ``/usr/local/bin``, ``/usr/bin`` ... :
``ln -s "$(command -v unionfs-sim-fuse)" /usr/local/bin/unionfs-sim-fuse``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import click

from ..container import Container
from ..fs import FileSystem
from ..fuse import options
from ..fuse.options import split_escaped
from ..fuse.writethrough import read_upperdir
from ..lower import DiskLower
from ..nodes import Dir, Entry
from ..options import OverlayOptions
from ..overlay import Overlay

LOCK_NAME = "unionfs-sim-fuse.lock"
"""The file in the workdir that the daemon holds locked (and writes its pid to)."""
PROG = "unionfs-sim-fuse"
_FUSE_PASS = ("allow_other", "allow_root", "default_permissions", "ro", "dev", "nodev", "suid", "nosuid", "exec",
              "noexec", "atime", "noatime", "sync", "async", "dirsync")
"""Options handed to FUSE as they are (mount.fuse adds ``dev,suid`` for root)."""
OWN = ("lowerdir", "upperdir", "workdir", "redirect_dir", "index", "metacopy", "fsname", "fsync", "threaded",
       "passthrough")
"""Options this program acts on itself."""
IGNORED = (
    # the kernel's overlay options with no effect on the model, and generic mount flags
    "rw", "xino", "uuid", "nfs_export", "volatile", "userxattr", "verity", "relatime", "norelatime",
    "strictatime", "nostrictatime", "nodiratime", "diratime", "lazytime", "nolazytime", "silent", "loud",
    "iversion", "noiversion", "mand", "nomand",
    # fuse-overlayfs's own
    "squash_to_root", "squash_to_uid", "squash_to_gid", "uidmapping", "gidmapping", "timeout",
    "fast_ino", "writeback", "noxattrs", "plugins", "static_nlink", "noacl", "xattr_permissions",
    # FUSE's
    "nonempty", "subtype", "max_read", "blksize", "kernel_cache", "auto_cache", "direct_io", "user",
)
"""Options accepted and ignored (fuse-overlayfs's, the overlay's and FUSE's that change nothing here)."""
KNOWN = frozenset((*OWN, *_FUSE_PASS, *IGNORED))

log = logging.getLogger("unionfs_sim.cli.fuse_overlayfs")


class Collector:
    """The garbage collector's policy for the server's process: survivors of a full
    collection are frozen (:func:`gc.freeze`), as long-running Python servers do.

    The model of the tree (every directory looked up, every node and Loc the kernel holds)
    is a large, long-lived heap with no cyclic garbage in it; each full collection walked
    all of it and freed nothing (about 0.03 s each, several per benchmark repeat). Frozen,
    the next full collections scan only what was made since. Every ``thaw_every``-th full
    collection unfreezes everything first, so cyclic garbage among objects once frozen
    (a subtree unlinked since) is still freed, later.
    """

    def __init__(self, thaw_every: int = 16) -> None:
        self.thaw_every = thaw_every
        self.full = 0

    def install(self) -> None:
        """Freeze what exists now (the mounted server's start-up heap) and follow every collection."""
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Back to the default: nothing frozen, no callback."""
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)
        gc.unfreeze()

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self.full += 1
            if self.full % self.thaw_every == 0:
                gc.unfreeze()  # this collection scans everything
        else:
            gc.freeze()


class UsageError(Exception):
    """Bad arguments or options (the message says which)."""


def check_options(opts: Mapping[str, str | bool]) -> None:
    """Refuse options this program does not know (the kernel's overlay refuses them too).

    Raises:
        UsageError: naming the unknown options and listing the known ones.
    """
    unknown = sorted(k for k in opts if k not in KNOWN)
    if unknown:
        raise UsageError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
                         f" (known: {', '.join(sorted(KNOWN))})")


# --- options ------------------------------------------------------------------------


def parse_options(values: Sequence[str]) -> dict[str, str | bool]:
    r"""``["lowerdir=a:b,upperdir=u", "ro"]`` -> ``{"lowerdir": "a:b", "upperdir": "u", "ro": True}``
    (see :func:`unionfs_sim.fuse.options.parse`; ``lowerdir`` keeps its ``\:`` escapes)."""
    return options.parse(values)


def lower_dirs(value: str) -> list[str]:
    """The lowerdir list, top first, as given (``a:b`` -> ``["a", "b"]``)."""
    dirs = [d for d in split_escaped(value, ":") if d]
    if not dirs:
        raise UsageError("lowerdir is empty")
    return dirs


def _on(value: str | bool, name: str) -> bool:
    if value is True or value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0", "follow", "nofollow"):
        return False
    raise UsageError(f"{name}={value}: expected on or off")


def overlay_options(opts: Mapping[str, str | bool]) -> OverlayOptions:
    """redirect_dir / index / metacopy from ``-o`` options, as the kernel reads them."""
    kw: dict[str, bool] = {}
    for name in ("redirect_dir", "index", "metacopy"):
        if name in opts:
            kw[name] = _on(opts[name], name)
    try:
        return OverlayOptions(**kw)
    except ValueError as e:
        raise UsageError(str(e)) from None


# --- the upper layer --------------------------------------------------------------


def upper_entries(container: Container) -> dict[str, Entry]:
    """The upper layer in overlayfs form, root included (e.g. to write a whole upperdir).

    With index=on, lower names of a hard-link group that was copied up through another
    name are included (the kernel keeps them in its index directory, which is not
    written), so that the directory alone gives the same merged view.
    """
    with container.fs.lock:
        entries = container.overlay.upper_entries(with_index=True)
        fs = container.fs
        st = fs.lstat("/")
        xattrs = {n: fs.getxattr("/", n) for n in fs.listxattr("/")}
        entries[""] = Dir(mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns,
                          xattrs=xattrs)
        return entries


def umount_main(argv: Sequence[str]) -> int:
    """``unionfs-sim-fuse --umount MOUNTPOINT``: unmount (``fusermount3 -u``, or umount(2) as root).

    Nothing waits for a write-back: every change is in the upperdir already.
    """
    targets = [a for a in argv if a != "--umount" and not a.startswith("-")]
    if len(targets) != 1:
        sys.stderr.write(f"{PROG}: usage: {PROG} --umount MOUNTPOINT\n")
        return 2
    target = os.path.abspath(targets[0])
    if os.geteuid() == 0:
        from ..linux import unmount

        err = unmount(target, lazy=False)
        if err:
            sys.stderr.write(f"{PROG}: {target}: {os.strerror(err)}\n")
            return 1
        return 0
    helper = shutil.which("fusermount3") or shutil.which("fusermount")
    if helper is None:
        sys.stderr.write(f"{PROG}: cannot unmount {target}: not root and no fusermount3\n")
        return 1
    return subprocess.call([helper, "-u", target])


# --- the program --------------------------------------------------------------------------


@click.command(PROG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               help="Mount an overlay (lowerdir/upperdir/workdir) served by the unionfs_sim model, as"
                    " fuse-overlayfs does. Every change is written to the upperdir before the call returns.")
@click.option("-o", "options", multiple=True, metavar="OPTIONS",
              help="lowerdir=A:B,upperdir=U,workdir=W,redirect_dir=on,index=on,metacopy=on,allow_other,..."
                   " passthrough=off (the server, not the kernel, reads and writes open upper files;"
                   " on by default where the kernel and privileges allow); unknown options are refused")
@click.option("-f", "foreground", is_flag=True, help="stay in the foreground")
@click.option("-d", "--debug", is_flag=True, help="log every request to stderr (implies -f)")
@click.option("--umount", metavar="MOUNTPOINT", help="unmount MOUNTPOINT (as fusermount3 -u) and exit")
@click.option("--version", is_flag=True, help="print the version and exit")
@click.argument("paths", nargs=-1, metavar="[SOURCE] MOUNTPOINT")
def command(**_: Any) -> None:
    """The drop-in's command line, parsed by click: :class:`Config` reads it, :func:`main` runs it."""


class Config:
    """What the command line asks for."""

    def __init__(self, argv: Sequence[str]) -> None:
        # mount.fuse puts "-o opts" after the positionals: click takes options anywhere.
        try:
            with command.make_context(PROG, list(argv)) as ctx:
                a = ctx.params
        except click.exceptions.Exit:
            raise
        except click.ClickException as e:
            raise UsageError(e.format_message()) from None
        self.version = bool(a["version"])
        if self.version:
            return
        paths = a["paths"]
        if len(paths) not in (1, 2):
            raise UsageError("expected [SOURCE] MOUNTPOINT")
        self.source = paths[0] if len(paths) == 2 else PROG
        self.mountpoint = os.path.abspath(paths[-1])
        self.debug = bool(a["debug"])
        self.foreground = bool(a["foreground"]) or self.debug
        opts = parse_options(a["options"])
        check_options(opts)
        self.opts = opts
        if "lowerdir" not in opts or opts["lowerdir"] is True:
            raise UsageError("no lowerdir= given")
        self.lowers = [os.path.abspath(d) for d in lower_dirs(str(opts["lowerdir"]))]
        up, work = opts.get("upperdir"), opts.get("workdir")
        self.upperdir = os.path.abspath(str(up)) if isinstance(up, str) and up else None
        self.workdir = os.path.abspath(str(work)) if isinstance(work, str) and work else None
        if self.upperdir is not None and self.workdir is None:
            raise UsageError("upperdir= needs workdir=")
        for d in [*self.lowers, *(x for x in (self.upperdir, self.workdir) if x)]:
            if not os.path.isdir(d):
                raise UsageError(f"{d}: not a directory" if os.path.exists(d) else f"{d}: no such directory")
        self.options = overlay_options(opts)
        self.fsync = opts.get("fsync", "1") not in ("0", "off", "no", "false")
        self.passthrough = _on(opts.get("passthrough", "on"), "passthrough")
        self.readonly = self.upperdir is None or opts.get("ro") is True
        self.fuse_options: dict[str, Any] = {k: True for k in _FUSE_PASS if opts.get(k) is True}
        if os.geteuid() == 0:
            # As fuse-overlayfs does for root: every user may use the mount, the kernel
            # checking permissions (default_permissions), as on the kernel's overlayfs.
            self.fuse_options["allow_other"] = True
        self.fuse_options["fsname"] = str(opts.get("fsname") or self.source).replace(",", "_")
        self.ignored = sorted(k for k in opts if k in IGNORED)


class _Ready:
    """The pipe through which a daemon tells the waiting parent that it serves (or why not)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def parent_wait(self) -> int:
        os.close(self.w)
        with os.fdopen(self.r, "rb") as f:
            msg = f.read().decode("utf-8", "replace")
        if msg.startswith("ready"):
            return 0
        sys.stderr.write(msg or f"{PROG}: the daemon died before the mount was ready\n")
        return 1

    def child_says(self, msg: str) -> None:
        if self.w < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self.w, msg.encode())
        os.close(self.w)
        self.w = -1


@contextlib.contextmanager
def _workdir_lock(workdir: str | None) -> Iterator[None]:
    """Hold ``WORKDIR/unionfs-sim-fuse.lock`` (pid inside) while mounted: one server per upperdir."""
    if workdir is None:
        yield
        return
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{workdir} is in use by another {PROG} (see {path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _raise_nofile() -> None:
    """The soft limit of open files up to the hard one, as fuse-overlayfs does: every file
    a client holds open for writing holds upper descriptors here (1,024, a common soft
    limit, would refuse the 1,025th open with EMFILE)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, e)


def serve(cfg: Config, ready: _Ready | None = None) -> int:
    """Build the model, mount, serve until unmounted or signalled."""
    from .. import fuse
    from ..fuse.writethrough import UpperDir, WriteThroughFS

    if cfg.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format=f"{PROG}: %(message)s")
    for name in cfg.ignored:
        log.debug("ignoring option %s", name)
    _raise_nofile()
    with _workdir_lock(cfg.workdir):
        # Lazy lowers: a directory is read from disk when first looked up, a file's bytes
        # when a client reads or copies them up, so mounting reads no lower entry and the
        # server holds no lower data (as fuse-overlayfs looks names up on disk).
        lower = DiskLower(reversed(cfg.lowers))
        fs: FileSystem
        if cfg.upperdir is not None and cfg.workdir is not None:
            ov = Overlay(lower, cfg.options)
            ov.load_upper(read_upperdir(cfg.upperdir, lower))
            fs = FileSystem(ov)
            if not cfg.readonly:
                fs = WriteThroughFS(ov, UpperDir(ov, cfg.upperdir, cfg.workdir, fsync=cfg.fsync))
        else:
            fs = FileSystem(Overlay(lower, readonly=True))
        opts = fuse.default_options(immutable=fs.readonly, readonly=cfg.readonly,
                                    allow_other=bool(cfg.fuse_options.get("allow_other")),
                                    default_permissions=True if cfg.fuse_options.get("default_permissions") else None)
        opts.update(cfg.fuse_options)
        opts["subtype"] = PROG
        # One request loop unless -o threaded=1, as fuse-overlayfs: every handler holds the
        # view's lock anyway, and more loops only pass the GIL back and forth (a futex
        # handoff per request; twice the time per round trip measured).
        threaded = cfg.opts.get("threaded", "0") not in ("0", "")
        m = fuse.Mount(fs, cfg.mountpoint, opts, readonly=cfg.readonly, threads=threaded)
        if isinstance(fs, WriteThroughFS) and cfg.passthrough and m.backend == "kernel":
            # The kernel reads and writes an open upper file itself (Linux 6.9+, as root);
            # the model takes the bytes in from the upper file (see fuse.server._Pt).
            m.operations.passthrough = True
        if cfg.debug:
            m.operations.trace = log
            logging.getLogger("fuse").setLevel(logging.INFO)  # fusepy's tracebacks of every errno
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        m.start()
        collector = Collector()
        collector.install()
        try:
            if ready is not None:
                ready.child_says("ready\n")
                _detach_stdio()
            while not stop.is_set() and m.alive:
                m.wait(0.25)
        finally:
            collector.uninstall()
            m.unmount()
    return 0


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _error(e: BaseException) -> str:
    from ..fuse.mounting import explain_mountpoint

    if isinstance(e, OSError) and e.errno in (errno.ENOTCONN, errno.ENOENT, errno.ENOTDIR) and e.filename:
        return explain_mountpoint(str(e.filename)) or str(e)
    return str(e)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``unionfs-sim-fuse`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--umount" in args or any(a.startswith("--umount=") for a in args):
        return umount_main([a.split("=", 1)[1] if a.startswith("--umount=") else a for a in args])
    try:
        cfg = Config(args)
    except click.exceptions.Exit as e:  # --help
        return int(e.exit_code)
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    if cfg.version:
        from .._version import __version__

        print(f"{PROG} (unionfs_sim) {__version__}")
        return 0
    from ..fuse.mounting import explain_mountpoint

    why = explain_mountpoint(cfg.mountpoint)
    if why is not None:
        sys.stderr.write(f"{PROG}: {why}\n")
        return 1
    if cfg.foreground:
        try:
            return serve(cfg)
        except (UsageError, OSError, RuntimeError, ValueError) as e:
            if cfg.debug:
                log.exception("failed")
            sys.stderr.write(f"{PROG}: {_error(e)}\n")
            return 1
    ready = _Ready()
    pid = os.fork()
    if pid:
        return ready.parent_wait()
    # The daemon: its own session, out of the caller's way.
    code = 1
    try:
        os.close(ready.r)
        os.setsid()
        os.chdir("/")
        code = serve(cfg, ready)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then exit
        ready.child_says(f"{PROG}: {_error(e)}\n")
    finally:
        ready.child_says(f"{PROG}: exited before the mount was ready\n")
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
