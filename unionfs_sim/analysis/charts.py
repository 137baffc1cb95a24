"""Charts of an efficiency result through matplotlib (optional: ``pip install matplotlib``).

Where a picture says more than a table: each layer's bytes, split into what the merged
view still shows and what it no longer shows (waste that squashing would reclaim).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .efficiency import Efficiency

MATPLOTLIB_MISSING = "charts need matplotlib: pip install matplotlib"


def layer_chart(result: Efficiency, ax: Any = None) -> Any:
    """Horizontal bars, one per layer (bottom layer at the bottom): shown and not-shown bytes.

    Returns the matplotlib Axes (a new figure's when ``ax`` is None).

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(MATPLOTLIB_MISSING) from e
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * max(len(result.layers), 2) + 1))
    labels = [f"{x.index}: {x.created_by[:40] or x.digest[7:19]}" for x in result.layers]
    shown = [x.size - x.wasted_bytes for x in result.layers]
    wasted = [x.wasted_bytes for x in result.layers]
    ax.barh(labels, shown, color="#4e79a7", label="shown")
    ax.barh(labels, wasted, left=shown, color="#e15759", label="not shown (reclaimable)")
    ax.set_xlabel("bytes")
    ax.set_title(f"score {result.score:.3f}, {result.reclaimable_bytes} bytes reclaimable")
    ax.legend(loc="lower right")
    return ax
