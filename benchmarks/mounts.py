"""FUSE benchmark: a container mounted with ``unionfs_sim.mount``, and the fuse-overlayfs
drop-in ``unionfs-sim-fuse``, against fuse-overlayfs and the kernel's overlayfs, on the
same 5-layer tree, in the same run.

    sudo python benchmarks/mounts.py            # full sizes: 21,000 entries, 256 MiB file
    sudo python benchmarks/mounts.py --quick    # 5,000 entries, 64 MiB
    sudo python benchmarks/mounts.py --systems drop-in,fuse-overlayfs   # just those two

The drop-in gets the lower dirs on disk, as a fuse-overlayfs user has them, and an
upperdir it writes through (every change on disk before the call returns). For it and
fuse-overlayfs (both run with ``-f``, so the server is the child we started) the run also
reports the mount time (command started -> the mountpoint answers a listdir) and the
server's peak RSS (VmHWM) after the cold walk and the full reads of the big file.

Every backend gets a fresh mount (and a fresh, empty upper) for every repeat; the
backends take turns, repeat by repeat. The workloads run in a separate client process
(plain ``os`` calls on the mountpoint), so the model's FUSE server, which runs in this
process, never competes with the client for the GIL. The best repeat counts.

Needs root (mount, drop_caches), libfuse2 + fusepy and the ``fuse-overlayfs`` binary; a
backend that cannot run shows ``n/a`` with the reason. ``unionfs_sim`` is the default
server (:mod:`unionfs_sim.fusedev`, the /dev/fuse protocol); ``backend=libfuse`` the
fusepy/libfuse2 one, for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, REPO)

STEPS = [
    ("walk_cold", "walk + lstat, fresh mount", "entries/s"),
    ("walk_warm", "walk + lstat, again (warm)", "entries/s"),
    ("read_cold", "sequential read after drop_caches", "MiB/s"),
    ("read_cached", "sequential read, again (cached)", "MiB/s"),
    ("copyup", "copy-up: append 1 byte to lower files", "files/s"),
    ("chmod", "copy-up: chmod lower files", "files/s"),
    ("create", "create+write 4 KiB+close", "files/s"),
    ("unlink", "unlink those files", "files/s"),
    ("churn", "create+write 4 KiB+close, unlink", "files/s"),
]
SYSTEMS = ("unionfs_sim", "drop-in", "fuse-overlayfs", "kernel overlayfs", "unionfs_sim (image, ro)",
           "unionfs_sim backend=libfuse")

# --- the client: runs in its own process, on a mountpoint -------------------------------


def client(spec: dict[str, Any]) -> dict[str, list[float]]:
    """Run the workloads on ``spec["root"]``; return {step: [amount, seconds, seconds...]}."""
    root = spec["root"]
    out: dict[str, list[float]] = {}

    pid = spec.get("server_pid")
    cpu: dict[str, list[float]] = {}

    def server_cpu() -> tuple[float, float]:
        """The server's user and system CPU seconds so far (/proc/PID/stat)."""
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def timed(step: str, fn: Callable[[], float]) -> None:
        c0 = server_cpu() if pid else (0.0, 0.0)
        t0 = time.perf_counter()
        amount = fn()
        out.setdefault(step, [amount]).append(time.perf_counter() - t0)
        if pid:
            c1 = server_cpu()
            cpu[step] = [(c1[0] - c0[0]) / amount, (c1[1] - c0[1]) / amount]

    def walk() -> float:
        n = 0
        for d, dirs, files in os.walk(root):
            for name in dirs + files:
                os.lstat(os.path.join(d, name))
                n += 1
        return n

    def read() -> float:
        n = 0
        with open(os.path.join(root, spec["big"]), "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                n += len(chunk)
        return n / (1 << 20)

    def copyup() -> float:
        for k in spec["copyup"]:
            with open(os.path.join(root, k), "ab") as f:
                f.write(b"x")
        return len(spec["copyup"])

    def chmod() -> float:
        for k in spec["chmod"]:
            os.chmod(os.path.join(root, k), 0o600)
        return len(spec["chmod"])

    paths = [os.path.join(root, spec["churn_dir"], f"churn-{j:05d}.tmp") for j in range(spec["churn"])]

    def create() -> float:
        block = b"c" * 4096
        for p in paths:
            with open(p, "wb") as f:
                f.write(block)
        return len(paths)

    def unlink() -> float:
        for p in paths:
            os.unlink(p)
        return len(paths)

    def drop_caches() -> None:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

    timed("walk_cold", walk)
    timed("walk_warm", walk)
    # A read of cached pages is the same kernel code for every FUSE server (no request
    # reaches it), but its speed depends on which physical pages the cold read was given:
    # on this VM runs fall into a fast and a slow mode (about 11.5 vs 8 GB/s) for any
    # server. Several cycles per repeat give each backend its fast mode.
    for _ in range(spec["read_cycles"]):
        if spec["drop_caches"]:
            drop_caches()
            timed("read_cold", read)
        timed("read_cached", read)
    if spec.get("server_pid"):  # the moment: after the cold walk and the full reads
        with open(f"/proc/{spec['server_pid']}/status") as f:
            out["rss_after_reads"] = [next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))]
    if spec["write"]:
        timed("copyup", copyup)
        timed("chmod", chmod)
        timed("create", create)
        timed("unlink", unlink)
        out["churn"] = [out["create"][0], out["create"][1] + out["unlink"][1]]
    if cpu:
        out["server_cpu"] = [cpu]  # type: ignore[list-item]
    return out


def run_client(spec: dict[str, Any]) -> dict[str, list[float]]:
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--client", json.dumps(spec)],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode:
        raise RuntimeError(f"client failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout)  # type: ignore[no-any-return]


# --- the backends -----------------------------------------------------------------------


class Backend:
    """One way to mount the tree; ``mounted()`` yields a fresh mountpoint per repeat."""

    name = ""
    write = True

    def unavailable(self) -> str | None:
        return None

    def mounted(self, work: str) -> contextlib.AbstractContextManager[str]:
        raise NotImplementedError


class Ufs(Backend):
    name = "unionfs_sim"

    def __init__(self, image: Any, readonly: bool = False, **options: Any) -> None:
        self.image, self.readonly, self.options = image, readonly, options
        if readonly:
            self.name, self.write = "unionfs_sim (image, ro)", False
        elif options:
            self.name = "unionfs_sim " + ",".join(f"{k}={v}" for k, v in options.items())
        self.requests: list[int] = []

    def unavailable(self) -> str | None:
        from unionfs_sim.fuse import fuse_unavailable

        return fuse_unavailable()

    @contextlib.contextmanager
    def mounted(self, work: str) -> Iterator[str]:
        import unionfs_sim as ufs

        mnt = os.path.join(work, "mnt")
        os.mkdir(mnt)
        src = self.image if self.readonly else self.image.container()
        with ufs.mount(src, mnt, **self.options) as m:
            yield mnt
            self.requests.append(sum(m.operations.calls.values()))


def _peak_rss(pid: int) -> int:
    """VmHWM of process ``pid`` in bytes (its peak resident set)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


class OnDisk(Backend):
    """fuse-overlayfs, the kernel, or the drop-in, on the layers written out in the overlay
    format; the FUSE servers run in the foreground (``-f``) as our child, so their mount
    time and peak RSS can be taken."""

    def __init__(self, name: str, lowers: list[str]) -> None:
        self.name, self.lowers = name, lowers
        self.mount_times: list[float] = []
        self.rss_reads: list[int] = []  # peak RSS after the cold walk and the reads
        self.rss: list[int] = []  # peak RSS at the end (after the writes too)
        self.cpu: dict[str, list[list[float]]] = {}  # step -> [user, system] seconds per item, per repeat
        self.pid: int | None = None

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root"
        if self.name == "fuse-overlayfs" and not shutil.which("fuse-overlayfs"):
            return "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"
        if self.name == "drop-in":
            from unionfs_sim.fuse import fuse_unavailable

            return fuse_unavailable()
        return None

    def command(self, opts: str, mnt: str) -> list[str]:
        if self.name == "fuse-overlayfs":
            return ["fuse-overlayfs", "-f", "-o", opts, mnt]
        if self.name == "drop-in":
            return [sys.executable, "-m", "unionfs_sim.cli.fuse_overlayfs", "-f", "-o", opts, "bench", mnt]
        return ["mount", "-t", "overlay", "overlay", "-o", opts, mnt]

    @contextlib.contextmanager
    def mounted(self, work: str) -> Iterator[str]:
        up, wk, mnt = (os.path.join(work, n) for n in ("upper", "work", "mnt"))
        for p in (up, wk, mnt):
            os.mkdir(p)
        opts = f"lowerdir={':'.join(reversed(self.lowers))},upperdir={up},workdir={wk}"
        if self.name == "kernel overlayfs":
            subprocess.run(self.command(opts, mnt), check=True, capture_output=True)
            try:
                yield mnt
            finally:
                subprocess.run(["umount", mnt], check=True)
            return
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if self.name == "drop-in":
            # As an installed package starts: from bytecode (pip compiles it at install; a
            # checkout with PYTHONDONTWRITEBYTECODE=1 would compile every module every start).
            import compileall

            compileall.compile_dir(os.path.join(REPO, "unionfs_sim"), quiet=1)
        t0 = time.perf_counter()
        server = subprocess.Popen(self.command(opts, mnt), env=env, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {server.communicate()[1].decode()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not mount")
                if os.path.ismount(mnt):
                    with contextlib.suppress(OSError):
                        os.listdir(mnt)
                        break
                time.sleep(0.0005)
            self.mount_times.append(time.perf_counter() - t0)
            self.pid = server.pid
            yield mnt
            self.rss.append(_peak_rss(server.pid))
        finally:
            if os.path.ismount(mnt):
                subprocess.run(["umount", mnt], check=True)
            try:
                server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


# --- the run ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="5,000 entries, 64 MiB file, 2 repeats")
    p.add_argument("--entries", type=int)
    p.add_argument("--big-mib", type=int)
    p.add_argument("--copyup", type=int)
    p.add_argument("--churn", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--read-cycles", type=int, default=3,
                   help="drop_caches + cold read + cached read cycles per repeat (default 3)")
    p.add_argument("--json", help="also write the raw numbers there")
    p.add_argument("--dir", help="where to write the layers (default: a temp dir in /var/tmp, on disk)")
    p.add_argument("--systems", help=f"comma-separated subset of: {', '.join(SYSTEMS)} (default: all)")
    a = p.parse_args(argv)
    if a.client:
        print(json.dumps(client(json.loads(a.client))))
        return 0

    import tree

    import unionfs_sim as ufs

    q = a.quick
    entries = a.entries or (5_000 if q else 21_000)
    big_mib = a.big_mib or (64 if q else 256)
    n_copyup = a.copyup or (1_000 if not q else 500)
    n_churn = a.churn or (5_000 if not q else 2_000)
    repeats = a.repeats or (2 if q else 3)

    print(f"[fuse] building the tree ({entries:,} entries, {big_mib} MiB file) ...", file=sys.stderr)
    t0 = time.perf_counter()
    host = tree.host_image(entries=entries, big_mib=big_mib, copyup=2 * n_copyup)
    image = tree.to_ufs_image(host.layers, ufs)
    work = tempfile.mkdtemp(prefix="ufs-fuse-bench-", dir=a.dir or "/var/tmp")
    try:
        lowers = []
        for i, layer in enumerate(image.layers):
            d = os.path.join(work, f"layer{i}")
            layer.to_directory(d, format="overlay")
            lowers.append(d)
        print(f"[fuse] built and written in {time.perf_counter() - t0:.1f}s: {host.stats}", file=sys.stderr)
        backends: list[Backend] = [
            Ufs(image), OnDisk("drop-in", lowers), OnDisk("fuse-overlayfs", lowers), OnDisk("kernel overlayfs", lowers),
            Ufs(image, readonly=True), Ufs(image, backend="libfuse"),
        ]
        if a.systems:
            wanted = a.systems.split(",")
            unknown = set(wanted) - set(SYSTEMS)
            if unknown:
                p.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
            backends = [b for b in backends if b.name in wanted]
        why = {b.name: b.unavailable() for b in backends}
        spec = {"big": host.big_file, "copyup": host.copyup[:n_copyup], "chmod": host.copyup[n_copyup:2 * n_copyup],
                "churn_dir": host.churn_dir,
                "churn": n_churn, "drop_caches": os.geteuid() == 0, "read_cycles": a.read_cycles}
        best: dict[str, dict[str, float]] = {b.name: {} for b in backends}
        samples: dict[str, dict[str, list[float]]] = {b.name: {} for b in backends}
        amounts: dict[str, float] = {}
        for r in range(repeats):
            for b in backends:
                if why[b.name]:
                    continue
                print(f"[fuse] repeat {r + 1}/{repeats}: {b.name} ...", file=sys.stderr)
                run = tempfile.mkdtemp(dir=work)
                try:
                    with b.mounted(run) as mnt:
                        res = run_client({**spec, "root": mnt, "write": b.write,
                                          "server_pid": getattr(b, "pid", None)})
                except Exception as e:  # noqa: BLE001 - a failing backend is reported, the rest go on
                    why[b.name] = f"{type(e).__name__}: {e}"
                    continue
                finally:
                    shutil.rmtree(run, ignore_errors=True)
                rss = res.pop("rss_after_reads", None)
                if rss and isinstance(b, OnDisk):
                    b.rss_reads.append(int(rss[0]))
                for step, us in (res.pop("server_cpu", None) or [{}])[0].items():  # type: ignore[union-attr]
                    if isinstance(b, OnDisk):
                        b.cpu.setdefault(step, []).append(us)
                for step, (amount, *secs) in res.items():
                    amounts.setdefault(step, amount)
                    samples[b.name].setdefault(step, []).extend(secs)
                    best[b.name][step] = min(samples[b.name][step])
        report(backends, best, samples, amounts, why, entries, big_mib, repeats, a.read_cycles)
        servers = {b.name: {"mount_seconds": b.mount_times, "peak_rss_after_reads": b.rss_reads,
                            "peak_rss_at_end": b.rss, "cpu_per_item": b.cpu}
                   for b in backends if isinstance(b, OnDisk) and b.mount_times}
        report_servers(servers, big_mib)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"best_seconds": best, "seconds": samples, "amounts": amounts, "unavailable": why,
                           "servers": servers, "tree": host.stats}, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(backends: list[Backend], best: dict[str, dict[str, float]], samples: dict[str, dict[str, list[float]]],
           amounts: dict[str, float], why: dict[str, str | None], entries: int, big_mib: int, repeats: int,
           cycles: int) -> None:
    names = [b.name for b in backends]
    print(f"\nFUSE benchmark: {entries:,}-entry 5-layer tree, {big_mib} MiB file, best of {repeats} repeats"
          f" ({repeats * cycles} for the reads; rates, higher is better)\n")
    w = max(len(n) for n in names) + 2
    ratios = [(ours, ref) for ours in ("unionfs_sim", "drop-in") for ref in ("fuse-overlayfs", "kernel overlayfs")
              if ours in names and ref in names]
    rw = 27
    head = f"{'step':40}{'unit':>10}" + "".join(f"{n:>{w}}" for n in names)
    head += "".join(f"{(o + ' / ' + r.replace(' overlayfs', '')):>{rw}}" for o, r in ratios)
    print(head)
    print("-" * len(head))
    for step, label, unit in STEPS:
        if step not in amounts:
            continue
        rates = {n: amounts[step] / best[n][step] if step in best[n] else None for n in names}
        row = f"{label:40}{unit:>10}"
        row += "".join(f"{rates[n]:>{w},.0f}" if rates[n] else f"{'-':>{w}}" for n in names)
        for o, r in ratios:
            ours, ref = rates.get(o), rates.get(r)
            row += f"{ours / ref:>{rw - 1}.2f}x" if ours and ref else f"{'-':>{rw}}"
        print(row)
    med = {n: statistics.median(samples[n]["read_cached"]) for n in names if samples[n].get("read_cached")}
    if med:
        print("\ncached read, median of all samples (MiB/s): "
              + ", ".join(f"{n} {amounts['read_cached'] / t:,.0f}" for n, t in med.items()))
    for b in backends:
        if isinstance(b, Ufs) and b.requests:
            print(f"\n{b.name}: {min(b.requests):,} FUSE requests per repeat (fewest)")
    for n, reason in why.items():
        if reason:
            print(f"{n}: n/a ({reason})")


def report_servers(servers: dict[str, dict[str, list[Any]]], big_mib: int) -> None:
    """Mount time and peak RSS of the FUSE servers run as processes."""
    if not servers:
        return
    print("\nservers as processes: mount = command started until the mountpoint answers (best, median);"
          f" peak RSS (VmHWM, max over repeats) after the cold walk and the {big_mib} MiB reads, and at the end"
          " (after the writes too)")

    def mib(xs: list[int]) -> str:
        return f"{max(xs) / (1 << 20):,.1f} MiB" if xs else "-"

    for name, r in servers.items():
        ts = r["mount_seconds"]
        print(f"  {name:16} mount {min(ts):.3f} s, {statistics.median(ts):.3f} s"
              f"   peak RSS {mib(r['peak_rss_after_reads'])} after reads, {mib(r['peak_rss_at_end'])} at the end")
    steps = [s for s in ("copyup", "chmod", "create", "unlink")
             if any(s in r["cpu_per_item"] for r in servers.values())]
    if steps:
        print("\nserver CPU per item of the write steps, user + system us (median of repeats; /proc/PID/stat,"
              " 10 ms ticks), load-independent where the rates are not:")
        for name, r in servers.items():
            cells = []
            for s in steps:
                xs = r["cpu_per_item"].get(s)
                if xs:
                    u = statistics.median(x[0] for x in xs) * 1e6
                    k = statistics.median(x[1] for x in xs) * 1e6
                    cells.append(f"{s} {u:.0f} + {k:.0f}")
            print(f"  {name:16} " + ", ".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())
