"""Load a real ~20,000-file layer into the model and flatten it, against `umoci unpack`.

The layer is a tar of host files (/usr/lib/python3* then /usr/share, sorted, the first
N regular files, directories and symlinks), gzip-compressed in an OCI image layout
written by unionfs_sim. In the same run:

- unionfs_sim: ``oci.load(layout)`` (streaming read, digest verification, tar parse)
  then ``image.lower`` (the flattened index) and a walk of the merged view;
- umoci: ``umoci unpack --image layout:tag bundle`` (decompress, verify, extract to disk).

Memory: each tool also runs once more in a child process of its own, and its peak RSS
(VmHWM, polled) is compared with the uncompressed tar size; the issue's bound is
1.3x for unionfs_sim (the model holds every file's bytes, so about 1x is the floor; the
interpreter and the index are the rest), checked here and printed as PASS/FAIL.
``--big-mib N`` adds one N MiB file (a big file is where a read that joins and slices
costs 3x).

    python benchmarks/load.py [--entries 20000] [--big-mib 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import unionfs_sim as ufs  # noqa: E402
from unionfs_sim.formats import oci  # noqa: E402

MEMORY_BOUND = 1.3
"""Peak RSS of loading, at most this times the uncompressed tar (issue 12, item 6)."""


def host_tar(limit: int, big_mib: int = 0) -> tuple[bytes, int]:
    """An uncompressed tar of up to ``limit`` host entries (plus a ``big_mib`` MiB file
    of random bytes, if given), and how many entries it holds."""
    roots = sorted(p for p in (f"/usr/lib/{d}" for d in os.listdir("/usr/lib"))
                   if os.path.basename(p).startswith("python3"))
    roots.append("/usr/share")
    buf = io.BytesIO()
    n = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        if big_mib:
            big = os.urandom(1 << 20) * big_mib
            ti = tarfile.TarInfo("big.bin")
            ti.size = len(big)
            tf.addfile(ti, io.BytesIO(big))
            del big
            n += 1
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in [""] + sorted(filenames):
                    p = os.path.join(dirpath, name) if name else dirpath
                    try:
                        p.encode("utf-8")
                        ti = tf.gettarinfo(p, arcname=p.lstrip("/"))
                    except (OSError, UnicodeEncodeError):
                        continue
                    if ti.isreg():
                        with open(p, "rb") as f:
                            tf.addfile(ti, f)
                    elif ti.isdir() or ti.issym():
                        tf.addfile(ti)
                    else:
                        continue
                    n += 1
                    if n >= limit:
                        return buf.getvalue(), n
    return buf.getvalue(), n


def child_load(layout: str) -> None:
    """In a child process: load, flatten and walk the layout (the run measures its RSS)."""
    t = time.perf_counter()
    img = oci.load(layout, tag="bench")
    count = sum(len(files) + len(dirs) for _p, dirs, files in img.fs.walk("/"))
    print(json.dumps({"seconds": time.perf_counter() - t, "entries": count}))


def peak_rss(cmd: list[str]) -> int:
    """Run ``cmd``; its peak RSS in bytes (VmHWM, polled until it exits).

    Not ``wait4``'s ru_maxrss: exec carries the forking parent's high-water mark into it,
    and this parent held the whole tar.
    """
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.005)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {err[-2000:]}")
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--big-mib", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child-load", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_load:
        child_load(args.child_load)
        return
    if shutil.which("umoci") is None:
        sys.exit("umoci is not installed (apt-get install -y umoci)")
    raw, n = host_tar(args.entries, args.big_mib)
    layer = ufs.Layer.from_tar(io.BytesIO(raw))
    image = ufs.Image.from_layers([layer])
    del layer
    work = tempfile.mkdtemp(prefix="ufs-bench-load-")
    try:
        layout = os.path.join(work, "layout")
        oci.save(image, layout, tag="bench", compression="gzip")
        size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _d, fs in os.walk(layout) for f in fs)
        tar_bytes = len(raw)
        del raw, image
        # Memory first, in fresh processes, while this one holds nothing big.
        ours_rss = peak_rss([sys.executable, os.path.abspath(__file__), "--child-load", layout])
        bundle = os.path.join(work, "bundle")
        umoci_rss = peak_rss(["umoci", "unpack", "--image", f"{layout}:bench", bundle])
        shutil.rmtree(bundle)
        ours, theirs = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            img = oci.load(layout, tag="bench")
            low = img.lower
            count = sum(len(files) + len(dirs) for _p, dirs, files in img.fs.walk("/"))
            ours.append(time.perf_counter() - t)
            assert len(low.nodes) - 1 == count
            bundle = os.path.join(work, "bundle")
            t = time.perf_counter()
            subprocess.run(["umoci", "unpack", "--image", f"{layout}:bench", bundle], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            theirs.append(time.perf_counter() - t)
            shutil.rmtree(bundle)
        a, b = min(ours), min(theirs)
        print(f"layer: {n:,} entries, {tar_bytes / 2**20:.1f} MiB tar, layout {size / 2**20:.1f} MiB (gzip)")
        print(f"{'tool':<44}{'seconds':>10}{'entries/s':>14}")
        print(f"{'unionfs_sim oci.load + flatten + walk':<44}{a:>10.3f}{n / a:>14,.0f}")
        print(f"{'umoci unpack (to disk)':<44}{b:>10.3f}{n / b:>14,.0f}")
        print(f"ratio (umoci time / unionfs_sim time): {b / a:.2f}x  (>1: unionfs_sim faster)")
        ratio = ours_rss / tar_bytes
        verdict = "PASS" if ratio <= MEMORY_BOUND else "FAIL"
        print(f"peak RSS, load + flatten + walk in a fresh process: unionfs_sim {ours_rss / 2**20:,.1f} MiB"
              f" = {ratio:.2f}x the uncompressed tar ({verdict}: bound {MEMORY_BOUND}x);"
              f" umoci unpack {umoci_rss / 2**20:,.1f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
