"""Looking inside images: inspect, history, layer efficiency, disk usage, squashing.

Each view mirrors the peer people use for it (``docker image inspect``, ``docker
history``, dive, ``docker system df -v``), exact where that peer is right and correct
where it is not; the modules say which is which. This package sits above the core
(it imports ``image``, ``container``, ``layer``); ``Image.inspect`` is a thin call into
:mod:`.inspect`, imported when called.
"""

from . import sizes
from .efficiency import (
    CI_DEFAULTS,
    CIResult,
    Efficiency,
    Finding,
    LayerUse,
    RuleResult,
    efficiency,
    evaluate_ci,
    read_ci_config,
)
from .flatten import export, squash
from .history import HistoryRow, history
from .inspect import ImageStore, inspect
from .scan import ImageLike, ScannedImage, SizedFile, scan
from .sizes import SIZE_RULES, layer_size, layer_sizes
from .usage import ContainerUsage, DiskUsage, ImageUsage, disk_usage

__all__ = [
    "CI_DEFAULTS",
    "SIZE_RULES",
    "CIResult",
    "ContainerUsage",
    "DiskUsage",
    "Efficiency",
    "Finding",
    "HistoryRow",
    "ImageLike",
    "ImageStore",
    "ImageUsage",
    "LayerUse",
    "RuleResult",
    "ScannedImage",
    "SizedFile",
    "disk_usage",
    "efficiency",
    "evaluate_ci",
    "export",
    "history",
    "inspect",
    "layer_size",
    "layer_sizes",
    "read_ci_config",
    "scan",
    "sizes",
    "squash",
]
