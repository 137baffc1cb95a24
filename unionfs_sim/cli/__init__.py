"""The ``unionfs-sim`` command line: one click group, one module per command (the only printing code).

- :mod:`.main`: the group and ``demo``;
- :mod:`.mount`: ``mount`` (a container of an image as a real directory);
- :mod:`.fuse_overlayfs`: ``unionfs-sim-fuse``, the fuse-overlayfs drop-in (its own entry
  point, with fuse-overlayfs's calling convention).

Commands are registered here, so importing a command module registers nothing by itself.
"""

from __future__ import annotations

from .main import main
from .mount import mount_command

main.add_command(mount_command)
from .analysis import COMMANDS as _ANALYSIS_COMMANDS  # (inspect, history, ls, diff, layers, efficiency, df, export)

for _c in _ANALYSIS_COMMANDS:
    main.add_command(_c)

__all__ = ["main"]
