"""RUN executors: the python shell subset, Python callables, and a chroot of the FUSE mount.

The executor never takes part in the cache key: only the command string and what is in
scope do (``cache.py``), so a RUN that fetched the network yesterday stays a hit today.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Mapping

import attrs

from ..fs import FileSystem
from .shell import Result, Shell, UnsupportedCommand

RunFunction = Callable[[FileSystem, dict[str, str]], object]
"""A Python RUN step: ``fn(fs, env)`` changes the container's filesystem in place."""


@attrs.frozen
class RunRequest:
    """What one RUN step executes: argv (shell included), env, cwd and user ids."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    uid: int = 0
    gid: int = 0
    shell_form: bool = True


def _as_user(fs: FileSystem, uid: int, gid: int) -> FileSystem:
    """The view as the step's USER: the kernel's permission checks, new files owned by it."""
    if uid == 0 and gid == 0:
        return fs
    return fs.as_user(uid, gid, (gid,))


def run_python(fs: FileSystem, req: RunRequest, commands: Mapping[str, RunFunction] | None = None) -> Result:
    """Run ``req`` in the python shell subset (or a registered callable) on ``fs``."""
    env = dict(req.env)
    view = _as_user(fs, req.uid, req.gid)
    argv = list(req.argv)
    if len(argv) >= 3 and argv[1] == "-c" and os.path.basename(argv[0]) in ("sh", "bash", "ash", "dash"):
        script = argv[2]
    elif argv and os.path.basename(argv[0]) in ("sh", "bash", "ash", "dash") and len(argv) == 1:
        script = ""
    else:
        script = " ".join(shlex.quote(a) for a in argv)
    first = script.split(None, 1)[0] if script.split() else ""
    if commands and first in commands:
        try:
            commands[first](view, env)
        except OSError as e:
            return Result(1, b"", f"{first}: {e}\n".encode())
        return Result(0)
    return Shell(view, env, req.cwd).run(script)


def chroot_unavailable() -> str | None:
    """Why ``isolation="chroot"`` cannot run here (not root, no FUSE), or None."""
    if os.geteuid() != 0:
        return "chroot isolation needs root"
    from ..fuse.mounting import fuse_unavailable

    why = fuse_unavailable()
    if why:
        return why
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    return None


def run_chroot(container: object, req: RunRequest, timeout: float = 600) -> Result:
    """Mount ``container`` with the project's FUSE server and run ``req`` chrooted in it.

    Every write of the command goes through the mount into the container's upper layer.
    """
    from ..fuse.mounting import mount

    with tempfile.TemporaryDirectory(prefix="ufs-build-") as tmp:
        mnt = os.path.join(tmp, "root")
        os.mkdir(mnt)
        with mount(container, mnt, allow_other=req.uid != 0):  # type: ignore[arg-type,unused-ignore]
            env = dict(req.env)

            def enter() -> None:
                os.chroot(mnt)
                os.chdir(req.cwd or "/")
                if req.gid:
                    os.setgid(req.gid)
                if req.uid:
                    os.setuid(req.uid)

            try:
                done = subprocess.run(list(req.argv), env=env, capture_output=True, preexec_fn=enter,
                                      timeout=timeout, cwd="/")
            except (OSError, subprocess.SubprocessError) as e:
                return Result(127, b"", f"{req.argv[0]}: {e}\n".encode())
            return Result(done.returncode, done.stdout, done.stderr)


__all__ = ["RunFunction", "RunRequest", "UnsupportedCommand", "chroot_unavailable", "run_chroot", "run_python"]

