"""HTML views of the analysis results for notebooks (built from :mod:`unionfs_sim._html`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .._html import human, section, short, table

if TYPE_CHECKING:
    from .efficiency import Efficiency
    from .usage import DiskUsage


def efficiency_html(e: Efficiency) -> str:
    """Score, wasted bytes, the layers with their wasted share, and the findings."""
    pct = e.user_wasted_percent
    head = table(["method", "score", "wasted", "user wasted", "reclaimable", "size"],
                 [[e.method, f"{e.score:.4f}", human(e.wasted_bytes), f"{pct * 100:.2f} %" if math.isfinite(pct) else str(pct),
                   human(e.reclaimable_bytes), human(e.size_bytes)]])
    layers = table(["#", "layer", "size", "not shown", "created by"],
                   [[x.index, short(x.digest), human(x.size), human(x.wasted_bytes), x.created_by[:80]]
                    for x in reversed(e.layers)], right=(0, 2, 3))
    files = table(["path", "count", "bytes", "layers", "kind"],
                  [[f.path, f.count, f.bytes, ",".join(map(str, f.layers)), f.kind] for f in e.findings],
                  right=(1, 2), limit=50)
    return section("Efficiency", head, layers, files)


def disk_usage_html(du: DiskUsage) -> str:
    """The two tables of ``docker system df -v`` and the store's size."""
    imgs = table(["image", "id", "size", "shared", "unique", "containers"],
                 [[i.name, short(i.id), human(i.size), human(i.shared_size), human(i.unique_size), i.containers]
                  for i in du.images], right=(2, 3, 4, 5))
    cons = table(["container", "image", "size", "virtual size"],
                 [[c.name, c.image, human(c.size), human(c.virtual_size)] for c in du.containers], right=(2, 3))
    return section(f"Disk usage: layers {human(du.layers_size)}", imgs, cons)


