"""Work for the second CPU: a function run in a forked child while the caller goes on.

The analyses are pure Python, so one process uses one core; on a machine with two or
more, :func:`scan` reads half the layers and :func:`efficiency` builds dive's trees in a
forked child. A fork copies nothing up front (the child sees the parent's objects copy
on write), so a child starts in about a millisecond, where a process pool would import
the library again. The child's result comes back pickled through a pipe; whatever goes
wrong in it (an exception, a signal, a pickling error), :meth:`Forked.result` gives None
and the caller does the work itself, so the answer, or the error, is the one a single
process gives.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

ENABLED = True
"""False: never fork (every call does its work in the calling process)."""


def available() -> bool:
    """True where a forked child can run beside this process, on a CPU of its own.

    Linux only (fork elsewhere is slow or unsafe), with two or more CPUs for this process,
    and with no other Python thread running: a thread holding a lock at the moment of the
    fork would leave the lock held forever in the child.
    """
    if not ENABLED or sys.platform != "linux" or threading.active_count() != 1:
        return False
    return len(os.sched_getaffinity(0)) > 1


class Forked(Generic[T]):
    """``fn()`` running in a forked child from construction; :meth:`result` waits for its value.

    Use it as a context manager: leaving the block (say, on an exception of the parent's
    own work) kills a child still running and reaps it.
    """

    def __init__(self, fn: Callable[[], T]) -> None:
        """Fork; the child runs ``fn`` and writes its pickled value to a pipe, then exits."""
        import pickle  # here: only a fork needs it

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (coverage does not follow it)
            code = 1
            try:
                os.close(r)
                data = pickle.dumps(fn(), pickle.HIGHEST_PROTOCOL)
                with open(w, "wb") as out:
                    out.write(data)
                code = 0
            finally:
                # Never return into the caller's stack (a test runner, the CLI ...), never run
                # its atexit handlers or flush the stdio buffers it inherited.
                os._exit(code)
        os.close(w)
        self._pid: int | None = pid
        self._r = r

    def result(self) -> T | None:
        """The child's return value, or None if it failed (then do the work in this process)."""
        import pickle

        if self._pid is None:
            return None
        with open(self._r, "rb", closefd=False) as f:
            data = f.read()
        if self._reap() not in (0, None) or not data:
            return None
        try:
            out: T = pickle.loads(data)
        except Exception:  # cut short (the child died while writing): as if it had failed
            return None
        return out

    def _reap(self) -> int | None:
        """Wait for the child; its exit status, or None if it was reaped elsewhere (SIGCHLD ignored)."""
        assert self._pid is not None
        try:
            _, status = os.waitpid(self._pid, 0)
        except ChildProcessError:
            status = None
        self._pid = None
        os.close(self._r)
        return status

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pid is not None:
            import signal

            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - already gone
                pass
            self._reap()
