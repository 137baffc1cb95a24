"""Load a real ~20,000-file layer into the model and flatten it, against `umoci unpack`.

The layer is a tar of host files (/usr/lib/python3* then /usr/share, sorted, the first
N regular files, directories and symlinks), gzip-compressed in an OCI image layout
written by unionfs_sim. In the same run:

- unionfs_sim: ``oci.load(layout)`` (streaming read, digest verification, tar parse)
  then ``image.lower`` (the flattened index) and a walk of the merged view;
- umoci: ``umoci unpack --image layout:tag bundle`` (decompress, verify, extract to disk).

    python benchmarks/load.py [--entries 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
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


def host_tar(limit: int) -> tuple[bytes, int]:
    """An uncompressed tar of up to ``limit`` host entries, and how many it holds."""
    roots = sorted(p for p in (f"/usr/lib/{d}" for d in os.listdir("/usr/lib")) if os.path.basename(p).startswith("python3"))
    roots.append("/usr/share")
    buf = io.BytesIO()
    n = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("umoci") is None:
        sys.exit("umoci is not installed (apt-get install -y umoci)")
    raw, n = host_tar(args.entries)
    layer = ufs.Layer.from_tar(io.BytesIO(raw))
    image = ufs.Image.from_layers([layer])
    work = tempfile.mkdtemp(prefix="ufs-bench-load-")
    try:
        layout = os.path.join(work, "layout")
        oci.save(image, layout, tag="bench", compression="gzip")
        size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _d, fs in os.walk(layout) for f in fs)
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
        print(f"layer: {n:,} entries, {len(raw) / 2**20:.1f} MiB tar, layout {size / 2**20:.1f} MiB (gzip)")
        print(f"{'tool':<44}{'seconds':>10}{'entries/s':>14}")
        print(f"{'unionfs_sim oci.load + flatten + walk':<44}{a:>10.3f}{n / a:>14,.0f}")
        print(f"{'umoci unpack (to disk)':<44}{b:>10.3f}{n / b:>14,.0f}")
        print(f"ratio (umoci time / unionfs_sim time): {b / a:.2f}x  (>1: unionfs_sim faster)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
