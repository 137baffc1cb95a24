"""``unionfs-sim-fuse``: a drop-in for fuse-overlayfs, with the model as the filesystem.

Same calling convention as fuse-overlayfs::

    unionfs-sim-fuse [-f] [-d] [-o OPTIONS] [SOURCE] MOUNTPOINT
    unionfs-sim-fuse -o lowerdir=L1:L2,upperdir=U,workdir=W /merged

The lower directories are read as layers in the overlayfs on-disk format (the leftmost
is the top, as for the kernel), the upperdir's content becomes the container's upper
layer, and the mount serves the model's merged view. When the mount ends (``umount``,
``fusermount -u``, SIGTERM or SIGINT) the upper layer is written back into the upperdir
in the overlayfs format, the same way the kernel would have left it, so the same
directories can be mounted by the kernel (``mount -t overlay``) or by fuse-overlayfs
afterwards. Without ``upperdir`` the mount is read-only.

**The upperdir is written when the mount ends, not while it runs.** Until then it holds
its previous state; if the daemon is killed with SIGKILL, the changes made through this
mount are lost. A plain ``umount`` returns before the write-back is done (the kernel
waits for no FUSE daemon); three ways to wait for it:

- ``unionfs-sim-fuse --umount MOUNTPOINT`` unmounts and returns once the upperdir is
  complete (as ``umount`` of fuse-overlayfs or of the kernel's overlayfs does). Linked
  as umount(8)'s helper ``/sbin/umount.fuse.unionfs-sim-fuse`` it is run by ``umount
  SOURCE``; ``umount MOUNTPOINT`` takes the type from statfs(2), which only says
  ``fuse``, and runs ``/sbin/umount.fuse``: linked there too, it passes the other FUSE
  mounts to ``umount -i`` unchanged;
- ``flock WORKDIR/unionfs-sim-fuse.lock true``: the daemon holds that lock, with its pid
  in the file, until the upperdir is complete;
- mount again: a new ``unionfs-sim-fuse`` whose upperdir, workdir or one of whose
  lowerdirs is the upperdir or workdir of an unmounted daemon still writing back waits
  for it (the daemons register in ``/run/unionfs-sim-fuse``, see :class:`Registration`).

Options (``-o``, comma-separated, ``\\,`` for a comma in a value):

- ``lowerdir=A:B`` (required; ``\\:`` for a colon in a path), ``upperdir=``, ``workdir=``
  (required with ``upperdir``; it must be on the upperdir's filesystem: the new upper is
  staged there and swapped in with ``renameat2(RENAME_EXCHANGE)``);
- ``redirect_dir=on|off|follow|nofollow``, ``index=on|off``, ``metacopy=on|off``: the
  :class:`~unionfs_sim.options.OverlayOptions` (``follow``/``nofollow`` count as off: they
  only allow reading redirects, which the model always does);
- ``allow_other``, ``allow_root``, ``default_permissions``, ``ro`` and the generic
  mount flags (``dev``, ``suid``, ``exec``, ``noatime`` and their opposites): passed to
  FUSE. Run by root, the mount is always ``allow_other,default_permissions`` (as
  fuse-overlayfs does): other users get in, the kernel checking their permissions;
- ``fsname=``: what /proc/mounts shows (default: SOURCE);
- anything else (``rw``, ``squash_to_root``, ``uidmapping``, ``timeout`` ...) is
  ignored, as fuse-overlayfs ignores what it does not know.

``-f`` stays in the foreground; otherwise the program returns once the mount serves,
leaving a daemon behind (as fuse-overlayfs does, and as ``mount.fuse`` expects).
``-d`` logs every request to stderr (implies ``-f``).

To use it through ``mount -t fuse.unionfs-sim-fuse`` (or fstab type
``fuse.unionfs-sim-fuse``): mount(8) runs ``mount.fuse``, which runs
``unionfs-sim-fuse SOURCE MOUNTPOINT -o OPTIONS`` through ``/bin/sh`` with mount's
sanitized PATH, so the script must be found in ``/usr/local/bin``, ``/usr/bin`` ... :
``ln -s "$(command -v unionfs-sim-fuse)" /usr/local/bin/unionfs-sim-fuse``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..container import Container
from ..codec import overlaydir
from ..linux import RENAME_EXCHANGE, renameat2
from ..image import Image
from ..layer import Layer
from ..nodes import Dir, Entry
from ..options import OverlayOptions

LOCK_NAME = "unionfs-sim-fuse.lock"
"""The file in the workdir that the daemon holds locked (and writes its pid to)."""
PROG = "unionfs-sim-fuse"
_FUSE_PASS = ("allow_other", "allow_root", "default_permissions", "ro", "dev", "nodev", "suid", "nosuid", "exec",
              "noexec", "atime", "noatime", "sync", "async", "dirsync")
"""Options handed to FUSE as they are (mount.fuse adds ``dev,suid`` for root)."""

log = logging.getLogger("unionfs_sim.cli.fuse_overlayfs")


class UsageError(Exception):
    """Bad arguments or options (the message says which)."""


# --- options ------------------------------------------------------------------------


def split_escaped(s: str, sep: str) -> list[str]:
    r"""Split ``s`` at ``sep`` except where it is escaped as ``\sep``; unescape ``\x`` to ``x``.

    >>> split_escaped(r"a\:b:c", ":")
    ['a:b', 'c']
    """
    out, cur, i = [], [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            cur.append(s[i + 1])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def parse_options(values: Sequence[str]) -> dict[str, str | bool]:
    r"""``["lowerdir=a:b,upperdir=u", "ro"]`` -> ``{"lowerdir": "a:b", "upperdir": "u", "ro": True}``.

    Commas separate options unless escaped (``\,``); the value of ``lowerdir`` keeps
    its ``\:`` escapes for :func:`lower_dirs`.
    """
    out: dict[str, str | bool] = {}
    for value in values:
        for part in _split_commas(value):
            if not part:
                continue
            k, eq, v = part.partition("=")
            out[k] = v if eq else True
    return out


def _split_commas(s: str) -> list[str]:
    out, cur, i = [], [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] == ",":
            cur.append(",")
            i += 2
            continue
        if s[i] == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(s[i])
        i += 1
    out.append("".join(cur))
    return out


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


# --- the upper layer in and out -------------------------------------------------------------


def read_upperdir(path: str, image: Image) -> dict[str, Entry]:
    """An upperdir as layer entries, root included; a metacopy file gets its lower data."""
    def metacopy_data(k: str) -> bytes:
        return image.fs.read_bytes("/" + k)

    return overlaydir.read(path, format="overlay", include_root=True, metacopy=metacopy_data)


def upper_entries(container: Container) -> dict[str, Entry]:
    """What to write into the upperdir: the upper layer in overlayfs form, root included.

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


def write_upperdir(entries: Mapping[str, Entry], upperdir: str, workdir: str) -> None:
    """Replace the content of ``upperdir`` with ``entries`` (overlayfs format), atomically.

    The new tree is written into a staging directory in ``workdir`` (same filesystem),
    then exchanged with ``upperdir`` in one ``renameat2(RENAME_EXCHANGE)``; the old tree
    is removed afterwards. Where that is impossible (upperdir is a mount point, or the
    filesystem has no RENAME_EXCHANGE) the old content is removed and the new moved in,
    name by name.
    """
    stage = tempfile.mkdtemp(prefix=".unionfs-sim-upper.", dir=workdir)
    new = os.path.join(stage, "upper")
    try:
        overlaydir.write(entries, new, format="overlay")
        try:
            renameat2(new, upperdir, RENAME_EXCHANGE)
        except OSError as e:
            log.debug("RENAME_EXCHANGE %s <-> %s failed (%s); replacing names one by one",
                      new, upperdir, e.strerror)
            _replace_contents(new, upperdir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _replace_contents(new: str, upperdir: str) -> None:
    for name in os.listdir(upperdir):
        p = os.path.join(upperdir, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    for name in os.listdir(new):
        os.rename(os.path.join(new, name), os.path.join(upperdir, name))
    st = os.lstat(new)
    os.chown(upperdir, st.st_uid, st.st_gid)
    os.chmod(upperdir, st.st_mode & 0o7777)
    for n in os.listxattr(upperdir):
        os.removexattr(upperdir, n)
    for n in os.listxattr(new):
        os.setxattr(upperdir, n, os.getxattr(new, n))
    os.utime(upperdir, ns=(st.st_atime_ns, st.st_mtime_ns))


# --- umount waits for the write-back ------------------------------------------------------

RUN_DIR = "/run/unionfs-sim-fuse"
"""Where the daemon of each writable mount registers itself (run by root; otherwise
``$XDG_RUNTIME_DIR/unionfs-sim-fuse``; ``$UNIONFS_SIM_FUSE_RUNDIR`` overrides both)."""
WAIT_TIMEOUT = 600.0
"""Seconds to wait for another daemon's write-back before giving up on it."""


def run_dir() -> str:
    """The registry directory (see :data:`RUN_DIR`)."""
    d = os.environ.get("UNIONFS_SIM_FUSE_RUNDIR")
    if d:
        return d
    if os.geteuid() == 0:
        return RUN_DIR
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), f"unionfs-sim-fuse-{os.geteuid()}")


def _mounted() -> set[tuple[str, str]]:
    """(``major:minor``, mount point) of every mount this process can see."""
    out = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            mp = fields[4]
            if "\\" in mp:  # mount(8)'s escapes: \040 for a space, \134 for a backslash ...
                mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mp)
            out.add((fields[2], mp))
    return out


class Registration:
    """A daemon's entry in :func:`run_dir`: ``PID.json``, locked until its upperdir is written.

    Holds ``pid``, ``dev`` (the mount's ``major:minor``), ``mountpoint``, ``upperdir`` and
    ``workdir``. Other processes wait on the lock: the umount helper (so that ``umount``
    returns once the upperdir is complete, as with fuse-overlayfs, which writes through)
    and a new mount that is to read that upperdir, as its upper or as a lower layer (the
    suite's mount cycling: ``umount``, then ``mount`` the same directories at once).
    """

    def __init__(self, record: dict[str, Any]) -> None:
        d = run_dir()
        os.makedirs(d, mode=0o755, exist_ok=True)
        self.path = os.path.join(d, f"{os.getpid()}.json")
        # Written and locked under a temporary name, then renamed into place: whoever
        # sees PID.json finds it complete and locked (an unlocked one is left over).
        fd, tmp = tempfile.mkstemp(prefix=".reg.", dir=d)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, json.dumps(record).encode())
            os.fchmod(fd, 0o644)
            os.rename(tmp, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.fd = fd

    @classmethod
    def for_mount(cls, cfg: Config) -> Registration:
        st = os.stat(cfg.mountpoint)
        return cls({"pid": os.getpid(), "dev": f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}",
                    "mountpoint": cfg.mountpoint, "upperdir": cfg.upperdir, "workdir": cfg.workdir})

    def release(self) -> None:
        """The upperdir is written: unregister and let the waiters go."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


def registrations() -> list[tuple[int, dict[str, Any]]]:
    """(open fd, record) of each registered daemon still running; the caller closes the fds.

    Entries whose lock is free (their daemon was killed) are removed.
    """
    d = run_dir()
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(d, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                with os.fdopen(os.dup(fd), "rb") as f:
                    out.append((fd, json.loads(f.read())))
                continue
            except ValueError:
                pass
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)
    return out


def _wait_lock(fd: int, timeout: float) -> bool:
    """Wait until the registration open at ``fd`` is released; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def wait_for_write_backs(dirs: Sequence[str], timeout: float = WAIT_TIMEOUT) -> None:
    """Wait for daemons that were unmounted and still write an upperdir we are to read.

    A daemon whose upperdir or workdir is one of ``dirs`` and whose mount is gone (a plain
    ``umount``, without the umount helper, returns before the write-back) is waited for;
    one still mounted is not (its workdir lock then says that the directories are in use).
    """
    want = {os.path.realpath(d) for d in dirs if d}
    regs = registrations()
    try:
        mounted = _mounted()
        for fd, rec in regs:
            mine = {os.path.realpath(str(rec[k])) for k in ("upperdir", "workdir") if rec.get(k)}
            if not mine & want or (str(rec.get("dev")), str(rec.get("mountpoint"))) in mounted:
                continue
            log.debug("waiting for %s (pid %s) to write %s", PROG, rec.get("pid"), rec.get("upperdir"))
            if not _wait_lock(fd, timeout):
                log.warning("%s (pid %s) is still writing %s after %.0fs", PROG, rec.get("pid"),
                            rec.get("upperdir"), timeout)
    finally:
        for fd, _rec in regs:
            os.close(fd)


def umount_main(argv: Sequence[str]) -> int:
    """``umount.fuse.unionfs-sim-fuse TARGET [-flnrv] [-t TYPE]``: umount(8)'s helper.

    Unmounts with ``umount -i`` (no helper) and then waits until the daemon has written
    the upperdir, so that ``umount`` returns when the directories are complete, as with
    fuse-overlayfs and the kernel. Install as ``/sbin/umount.fuse.unionfs-sim-fuse`` (a
    link to ``unionfs-sim-fuse``), where umount(8) looks for helpers. A lazy unmount
    (``-l``) does not wait.
    """
    flags: list[str] = []
    target = None
    it = iter(argv)
    for a in it:
        if a == "-t":
            next(it, None)
        elif a.startswith("-t") or a == "--umount":
            continue
        elif a.startswith("-") and len(a) > 1:
            flags.append(a)
        elif target is None:
            target = a
        else:
            sys.stderr.write(f"{PROG}: umount: too many arguments\n")
            return 2
    if target is None:
        sys.stderr.write(f"{PROG}: umount: no mount point given\n")
        return 2
    mp = os.path.abspath(target)
    lazy = any(f.startswith("-") and not f.startswith("--") and "l" in f[1:] for f in flags) or "--lazy" in flags
    regs = registrations()
    try:
        mounted = _mounted()
        waiters = [(fd, rec) for fd, rec in regs
                   if rec.get("mountpoint") == mp and (str(rec.get("dev")), mp) in mounted]
        umount = shutil.which("umount", path="/usr/bin:/bin:/usr/sbin:/sbin") or "umount"
        code = subprocess.call([umount, "-i", *flags, target])
        if code == 0 and not lazy:
            for fd, rec in waiters:
                if not _wait_lock(fd, WAIT_TIMEOUT):
                    sys.stderr.write(f"{PROG}: pid {rec.get('pid')} still writes {rec.get('upperdir')}\n")
        return code
    finally:
        for fd, _rec in regs:
            os.close(fd)


# --- the program --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Mount an overlay (lowerdir/upperdir/workdir) served by the"
                                " unionfs_sim model, as fuse-overlayfs does.")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="lowerdir=A:B,upperdir=U,workdir=W,redirect_dir=on,index=on,metacopy=on,allow_other,...")
    p.add_argument("-f", dest="foreground", action="store_true", help="stay in the foreground")
    p.add_argument("-d", "--debug", action="store_true", help="log every request to stderr (implies -f)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("paths", nargs="*", metavar="[SOURCE] MOUNTPOINT")
    return p


class Config:
    """What the command line asks for."""

    def __init__(self, argv: Sequence[str]) -> None:
        a, rest = _parser().parse_known_args(list(argv))
        # mount.fuse puts "-o opts" after the positionals; parse_known_args handles both orders.
        for r in rest:
            if r.startswith("-o") and len(r) > 2:
                a.options.append(r[2:])
            else:
                raise UsageError(f"unknown argument {r!r}")
        self.version = bool(a.version)
        if self.version:
            return
        if len(a.paths) not in (1, 2):
            raise UsageError("expected [SOURCE] MOUNTPOINT")
        self.source = a.paths[0] if len(a.paths) == 2 else PROG
        self.mountpoint = os.path.abspath(a.paths[-1])
        self.debug = bool(a.debug)
        self.foreground = bool(a.foreground) or self.debug
        opts = parse_options(a.options)
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
                raise UsageError(f"{d}: not a directory")
        self.options = overlay_options(opts)
        self.readonly = self.upperdir is None or opts.get("ro") is True
        self.fuse_options: dict[str, Any] = {k: True for k in _FUSE_PASS if opts.get(k) is True}
        if os.geteuid() == 0:
            # As fuse-overlayfs does for root: every user may use the mount, the kernel
            # checking permissions (default_permissions), as on the kernel's overlayfs.
            self.fuse_options["allow_other"] = True
        self.fuse_options["fsname"] = str(opts.get("fsname") or self.source).replace(",", "_")
        ignored = sorted(set(opts) - {"lowerdir", "upperdir", "workdir", "redirect_dir", "index", "metacopy",
                                      "fsname", *_FUSE_PASS})
        self.ignored = ignored


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
    """Hold ``WORKDIR/unionfs-sim-fuse.lock`` (pid inside) while mounted and writing back."""
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


def serve(cfg: Config, ready: _Ready | None = None) -> int:
    """Build the model, mount, serve until unmounted or signalled, write the upper back."""
    from .. import fuse

    if cfg.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format=f"{PROG}: %(message)s")
    for name in cfg.ignored:
        log.debug("ignoring option %s", name)
    writes_back = cfg.upperdir is not None and cfg.workdir is not None and not cfg.readonly
    # A daemon just unmounted may still be writing an upperdir we are to read.
    wait_for_write_backs([*cfg.lowers, *(d for d in (cfg.upperdir, cfg.workdir) if d)])
    registered: list[Registration] = []  # released last, after the workdir lock
    try:
        _serve(cfg, fuse, ready, registered if writes_back else None)
    finally:
        for r in registered:
            r.release()
    return 0


def _serve(cfg: Config, fuse: types.ModuleType, ready: _Ready | None, registered: list[Registration] | None) -> None:
    with _workdir_lock(cfg.workdir):
        layers = [Layer.from_directory(d, format="overlay") for d in reversed(cfg.lowers)]
        image = Image.from_layers(layers)
        container: Container | None = None
        if cfg.upperdir is not None:
            container = Container.from_upper(image, read_upperdir(cfg.upperdir, image), cfg.options)
            fs = container.fs
        else:
            fs = image.fs
        immutable = container is None
        opts = fuse.default_options(immutable=immutable, readonly=cfg.readonly,
                                    allow_other=bool(cfg.fuse_options.get("allow_other")),
                                    default_permissions=True if cfg.fuse_options.get("default_permissions") else None)
        opts.update(cfg.fuse_options)
        opts["subtype"] = PROG
        m = fuse.Mount(fs, cfg.mountpoint, opts, readonly=cfg.readonly)
        if cfg.debug:
            m.operations.trace = log
            logging.getLogger("fuse").setLevel(logging.INFO)  # fusepy's tracebacks of every errno
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        m.start()
        try:
            if registered is not None:
                try:
                    registered.append(Registration.for_mount(cfg))
                except OSError as e:  # nobody will wait for the write-back: say so, go on
                    log.warning("cannot register in %s (%s): umount will not wait for the write-back",
                                run_dir(), e)
            if ready is not None:
                ready.child_says("ready\n")
                _detach_stdio()
            while not stop.is_set() and m.alive:
                m.wait(0.25)
        finally:
            m.unmount()
        if container is not None and cfg.upperdir is not None and cfg.workdir is not None and not cfg.readonly:
            write_upperdir(upper_entries(container), cfg.upperdir, cfg.workdir)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``unionfs-sim-fuse`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if (argv is None and os.path.basename(sys.argv[0]).startswith("umount.")) or args[:1] == ["--umount"]:
        return umount_main(args)
    try:
        cfg = Config(args)
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    if cfg.version:
        from .._version import __version__

        print(f"{PROG} (unionfs_sim) {__version__}")
        return 0
    if cfg.foreground:
        try:
            return serve(cfg)
        except (UsageError, OSError, RuntimeError, ValueError) as e:
            sys.stderr.write(f"{PROG}: {e}\n")
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
        ready.child_says(f"{PROG}: {e}\n")
    finally:
        ready.child_says(f"{PROG}: exited before the mount was ready\n")
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
