"""The registry over HTTP (``unionfs-sim serve``) against Debian's docker-registry 2.8.2, same run.

Both run as processes of their own with a fresh store under the same temporary directory,
on 127.0.0.1, without auth or TLS; the clients are the same for both:

1. ``skopeo copy --preserve-digests`` of an OCI layout of N MB in 5 uncompressed layers
   (random, incompressible) into the registry (push), then back out into a new layout (pull);
2. 16 concurrent ``skopeo copy`` pulls of one image of M MB (5 layers) into 16 layouts;
3. K blob HEADs from 8 threads, each with its own keep-alive connection: p50/p99 latency
   and requests per second;
4. each server's peak RSS and the CPU time it spent, and the CPU time skopeo spent on the
   pulls (on a shared machine the CPU times are the steadier figures: throughput there
   mostly measures the clients and the neighbours; the pulls are bound by skopeo, which
   hashes and writes what it gets, so what a server costs the client shows in its CPU).

Each throughput is the best and the median of ``--repeats`` runs (push and pull: each run
on a new, empty registry, so skopeo cannot mount blobs it pushed before); the servers take
turns in every repeat. On a shared machine the best of a few runs mostly tells which
server had the quietest moment; the median is the steadier figure. Ratios are ours /
docker-registry throughput (> 1: ours is faster). ``--before TREE`` also runs
``unionfs-sim serve`` from another source tree (say ``git worktree add /tmp/before
HEAD~1``), to compare a change in the same run.

    python benchmarks/registry.py [--push-mb 200] [--pull-mb 50] [--heads 2000] [--repeats 5] [--before TREE]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import unionfs_sim as ufs  # noqa: E402
from tests import daemons  # noqa: E402


def make_layout(path: Path, total_mb: int, layers: int = 5) -> str:
    """An OCI layout of ``layers`` uncompressed layers of random bytes, ``total_mb`` in all; tag ``1``."""
    per = (total_mb << 20) // layers
    stack = [ufs.Layer.from_dict({f"data{i}.bin": os.urandom(per)}) for i in range(layers)]
    image = ufs.Image.from_layers(stack)
    ufs.oci.save(image, path, tag="1")
    return image.digest


PIDS: dict[str, int] = {}


def peak_rss_mb(host: str) -> float:
    """The peak resident memory (VmHWM) of the server process listening at ``host``."""
    for line in Path(f"/proc/{PIDS[host]}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(host: str) -> float:
    """User + system CPU time the server process listening at ``host`` has used so far."""
    fields = Path(f"/proc/{PIDS[host]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """User + system CPU time of this process's waited-for children so far (the skopeos)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def ours(tmp: Path, tree: Path = ROOT) -> Iterator[str]:
    """``unionfs-sim serve`` (the package in ``tree``) on a free port: yields ``host:port``."""
    port = daemons.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "unionfs_sim", "serve", "--root", str(tmp / "ours"),
                             "--listen", f"127.0.0.1:{port}"], env={**os.environ, "PYTHONPATH": str(tree)},
                            stderr=subprocess.DEVNULL, cwd=tree)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("unionfs-sim serve did not start") from None
                time.sleep(0.05)
        PIDS[f"127.0.0.1:{port}"] = proc.pid
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@contextlib.contextmanager
def theirs(tmp: Path) -> Iterator[str]:
    """docker-registry 2.8.2 (tests/daemons.py starts it): yields ``host:port``."""
    with daemons.start_registry() as r:
        PIDS[r.host] = r.proc.pid
        yield r.host


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", "copy", "-q", "--preserve-digests", *args], check=True, capture_output=True)


def push_pull(host: str, layout: Path, tmp: Path) -> tuple[float, float, float]:
    """Seconds for a push of ``layout`` into an empty registry, then a pull of it; skopeo's
    CPU seconds for the pull."""
    t = time.perf_counter()
    skopeo("--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{host}/bench/push:1")
    push = time.perf_counter() - t
    out = tmp / f"pull-{host.replace(':', '_')}"
    c, t = children_cpu(), time.perf_counter()
    skopeo("--src-tls-verify=false", "--dest-oci-accept-uncompressed-layers", f"docker://{host}/bench/push:1",
           f"oci:{out}:1")
    pull = time.perf_counter() - t
    client = children_cpu() - c
    shutil.rmtree(out)
    return push, pull, client


def concurrent_pulls(host: str, tmp: Path, n: int, i: int) -> tuple[float, float]:
    """Seconds for ``n`` simultaneous pulls of ``bench/many:1``, and the skopeos' CPU seconds."""
    outs = [tmp / f"many-{host.replace(':', '_')}-{i}-{k}" for k in range(n)]
    c, t = children_cpu(), time.perf_counter()
    procs = [subprocess.Popen(["skopeo", "copy", "-q", "--preserve-digests", "--src-tls-verify=false",
                               "--dest-oci-accept-uncompressed-layers", f"docker://{host}/bench/many:1",
                               f"oci:{o}:1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for o in outs]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"skopeo failed: {p.stderr.read().decode() if p.stderr else ''}")
    dt = time.perf_counter() - t
    client = children_cpu() - c
    for o in outs:
        shutil.rmtree(o)
    return dt, client


def heads(host: str, layout: Path, total: int, threads: int) -> tuple[float, float, float]:
    """``total`` blob HEADs from ``threads`` threads: (p50 ms, p99 ms, requests/s)."""
    digests = ["sha256:" + p.name for p in (layout / "blobs" / "sha256").iterdir()]
    hostname, port = host.split(":")
    lat: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(hostname, int(port), timeout=30)
        mine = []
        for j in range(total // threads):
            d = digests[(k + j) % len(digests)]
            t = time.perf_counter()
            conn.request("HEAD", f"/v2/bench/many/blobs/{d}")
            r = conn.getresponse()
            r.read()
            mine.append(time.perf_counter() - t)
            if r.status not in (200, 404):
                raise RuntimeError(f"HEAD {d}: {r.status}")
        conn.close()
        with lock:
            lat.extend(mine)

    t = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    wall = time.perf_counter() - t
    lat.sort()
    return statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99) - 1] * 1e3, len(lat) / wall


THEIRS = "docker-registry 2.8.2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--push-mb", type=int, default=200)
    ap.add_argument("--pull-mb", type=int, default=50)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--heads", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", type=Path, help="also run unionfs-sim serve from this source tree")
    a = ap.parse_args()
    for tool, why in (("skopeo", "apt-get install skopeo"),):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed ({why})")
    if daemons.registry_unavailable():
        sys.exit(daemons.registry_unavailable())
    if a.before is not None and not (a.before / "unionfs_sim" / "__init__.py").is_file():
        sys.exit(f"--before {a.before}: no unionfs_sim package there")
    tmp = Path(tempfile.mkdtemp(prefix="ufs-bench-registry-"))
    try:
        big, small = tmp / "big", tmp / "small"
        make_layout(big, a.push_mb)
        make_layout(small, a.pull_mb)
        results: dict[str, dict[str, float]] = {}
        peers: list[tuple[str, Callable[[Path], contextlib.AbstractContextManager[str]]]] = [("unionfs-sim", ours)]
        if a.before is not None:
            peers.append(("before", functools.partial(ours, tree=a.before.resolve())))
        peers.append((THEIRS, theirs))
        pushes: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in peers}
        rss: dict[str, float] = {}
        cpu: dict[str, list[float]] = {name: [] for name, _ in peers}
        for r in range(a.repeats):
            # A new, empty registry each time: else skopeo mounts the blobs it pushed before.
            for name, start in peers if r % 2 == 0 else peers[::-1]:
                d = tmp / f"{name.replace(' ', '_')}-{r}"
                d.mkdir()
                with start(d) as host:
                    c0 = cpu_seconds(host)
                    pushes[name].append(push_pull(host, big, tmp))
                    cpu[name].append(cpu_seconds(host) - c0)
                    rss[name] = peak_rss_mb(host)
                shutil.rmtree(d)
        with contextlib.ExitStack() as stack:  # every server up at once, taking turns
            hosts: dict[str, str] = {}
            for name, start in peers:
                d = tmp / f"{name.replace(' ', '_')}-many"
                d.mkdir()
                hosts[name] = stack.enter_context(start(d))
                skopeo("--dest-tls-verify=false", f"oci:{small}:1", f"docker://{hosts[name]}/bench/many:1")
            many: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in peers}
            for r in range(a.repeats):
                for name, _ in peers if r % 2 == 0 else peers[::-1]:
                    c0 = cpu_seconds(hosts[name])
                    dt, client = concurrent_pulls(hosts[name], tmp, a.clients, r)
                    many[name].append((dt, client, cpu_seconds(hosts[name]) - c0))
            for name, _ in peers:
                p50, p99, rps = heads(hosts[name], small, a.heads, a.threads)
                pp, mm = pushes[name], many[name]
                results[name] = {
                    "push MB/s": a.push_mb / min(x[0] for x in pp), "pull MB/s": a.push_mb / min(x[1] for x in pp),
                    f"{a.clients} pulls MB/s": a.clients * a.pull_mb / min(x[0] for x in mm),
                    "push MB/s, median": a.push_mb / statistics.median(x[0] for x in pp),
                    "pull MB/s, median": a.push_mb / statistics.median(x[1] for x in pp),
                    f"{a.clients} pulls MB/s, median": a.clients * a.pull_mb / statistics.median(x[0] for x in mm),
                    "HEAD p50 ms": p50, "HEAD p99 ms": p99, "HEAD req/s": rps,
                    "peak RSS MB (push+pull)": rss[name],
                    "server CPU s, push+pull": statistics.median(cpu[name]),
                    f"server CPU s, {a.clients} pulls": statistics.median(x[2] for x in mm),
                    "skopeo CPU s, pull": statistics.median(x[2] for x in pp),
                    f"skopeo CPU s, {a.clients} pulls": statistics.median(x[1] for x in mm)}
                print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[name].items()), flush=True)
                print(f"  seconds per repeat: push {[round(x[0], 2) for x in pp]}, "
                      f"pull {[round(x[1], 2) for x in pp]}, {a.clients} pulls {[round(x[0], 2) for x in mm]}",
                      flush=True)
        t = results[THEIRS]
        ours_names = [name for name, _ in peers if name != THEIRS]
        print(f"\n{'':24}" + "".join(f" {n:>12}" for n in ours_names) + f" {'2.8.2':>12}"
              + "".join(f" {'ratio ' + n[:6]:>13}" for n in ours_names))
        for k in t:
            lower_is_better = " ms" in k or "MB (" in k or "CPU" in k
            # > 1: ours is better
            ratios = [t[k] / results[n][k] if lower_is_better else results[n][k] / t[k] for n in ours_names]
            print(f"{k:24}" + "".join(f" {results[n][k]:12.2f}" for n in ours_names) + f" {t[k]:12.2f}"
                  + "".join(f" {x:12.2f}x" for x in ratios))
        print(f"\n(push {a.push_mb} MB / pull of it with skopeo; {a.clients} concurrent pulls of {a.pull_mb} MB; "
              f"{a.heads} HEADs from {a.threads} threads; throughput: best and median of {a.repeats}, CPU: median; "
              f"ratio > 1: unionfs-sim better; load average {os.getloadavg()[0]:.1f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
