"""The drop-in's Python per request, without the kernel: the FUSE server's handlers driven
directly, as the kernel sends them for ``open(p, "wb").write(4 KiB); close()``.

    python benchmarks/dropin_handlers.py                # 2,000 creates, best of 5 rounds
    python benchmarks/dropin_handlers.py --creates 5000

A write-through upperdir and a one-directory lower, both in a temporary directory under
/dev/shm (tmpfs: the disk's own cost stays small and steady), a
:class:`~unionfs_sim.fuse.server.Server` over them, and per create the requests the
kernel sends (``strace``/the ``fuse`` tracepoints show them): LOOKUP of the new name,
CREATE, GETXATTR(security.capability), WRITE, RELEASE, and the GETATTR of the directory
that the next create's path walk asks for (``default_permissions``). IOCTL (Python's
isatty) has no handler. Prints the time in each handler (best round) and the Python
calls of unionfs_sim's Python functions per create (cProfile): measures of the server's own work that the load of
a shared machine moves much less than the mount benchmark's rates. The request loop, the
/dev/fuse reads and writes and the context switches are not in it (``mounts.py`` has them).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import shutil
import struct
import sys
import tempfile
import threading
import time

if "PYTHONPATH" not in os.environ:  # else it says which checkout to measure
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unionfs_sim.fuse import server as S  # noqa: E402
from unionfs_sim.fuse.writethrough import UpperDir, WriteThroughFS, read_upperdir  # noqa: E402
from unionfs_sim.lower import DiskLower  # noqa: E402
from unionfs_sim.overlay import Overlay  # noqa: E402

BLOCK = b"c" * 4096
CTX = (0, 0, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--creates", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    n = a.creates
    base = tempfile.mkdtemp(prefix="ufs-handlers-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        lo, up, wk = (os.path.join(base, x) for x in ("lower", "upper", "work"))
        for d in (os.path.join(lo, "tmp"), up, wk):
            os.makedirs(d)
        lower = DiskLower([lo])
        ov = Overlay(lower)
        ov.load_upper(read_upperdir(up, lower))
        srv = S.Server(WriteThroughFS(ov, UpperDir(ov, up, wk)))
        srv._workers.add(threading.get_ident())  # as a request thread: changes are its own
        root = srv._nodes[S.ROOT_ID]
        tmp = srv._nodes[struct.unpack_from("<Q", srv._lookup(root, memoryview(b"tmp\0"), CTX))[0]]
        srv._mkdir(tmp, memoryview(struct.pack("<II", 0o755, 0o22) + b"d\0"), CTX)  # tmp copied up
        times: dict[str, int] = collections.defaultdict(int)

        names = getattr(srv, "_names", lambda: 0)  # what the request loop does first (absent before 2026-12)

        def request(name: str, fn: S.Callable[..., object], *args: object) -> object:
            names()
            t0 = time.perf_counter_ns()
            out = fn(*args)
            times[name] += time.perf_counter_ns() - t0
            return out

        def creates(tag: str) -> None:
            for j in range(n):
                name = f"{tag}{j:05d}.tmp".encode() + b"\0"
                request("LOOKUP", srv._lookup, tmp, memoryview(name), CTX)
                body = struct.pack("<IIII", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o100644, 0o22, 0) + name
                r = request("CREATE", srv._create, tmp, memoryview(body), CTX)
                assert isinstance(r, bytes)
                nid, fh = struct.unpack_from("<Q", r)[0], struct.unpack_from("<Q", r, S._ENTRY.size)[0]
                node = srv._nodes[nid]
                request("GETXATTR", srv._getxattr, node,
                        memoryview(struct.pack("<II", 0, 0) + b"security.capability\0"), CTX)
                request("WRITE", srv._write, node,
                        memoryview(struct.pack("<QQIIQII", fh, 0, len(BLOCK), 0, 0, 0, 0) + BLOCK), CTX)
                request("RELEASE", srv._release, node, memoryview(struct.pack("<QIIQ", fh, 0, 0, 0)), CTX)
                request("GETATTR", srv._getattr, tmp, memoryview(struct.pack("<IIQ", 0, 0, 0)), CTX)
                srv._forget(nid, 1)

        creates("warm-")
        best: dict[str, int] | None = None
        for r in range(a.rounds):
            times.clear()
            creates(f"r{r}-")
            if best is None or sum(times.values()) < sum(best.values()):
                best = dict(times)
        assert best is not None
        prof = cProfile.Profile()
        prof.runcall(creates, "calls-")
        stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        calls = sum(v[1] for k, v in stats.items() if os.sep + "unionfs_sim" + os.sep in k[0])
        print(f"{n:,} creates through the handlers (best of {a.rounds} rounds), us per request:")
        print("  " + "  ".join(f"{k} {v / n / 1000:.1f}" for k, v in best.items())
              + f"  | total {sum(best.values()) / n / 1000:.1f} us per create")
        print(f"  calls of unionfs_sim's Python functions per create: {calls / n:.0f} (cProfile)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
