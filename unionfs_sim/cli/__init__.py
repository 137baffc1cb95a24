"""The ``unionfs-sim`` command line: one click group, one module per command (the only printing code).

- :mod:`.main`: the group and ``demo``;
- :mod:`.mount`: ``mount`` (a container of an image as a real directory);
- :mod:`.serve`: ``serve`` (a registry directory over the OCI distribution API);
- :mod:`.analysis`: ``inspect``, ``history``, ``ls``, ``diff``, ``layers``, ``efficiency``, ``df``, ``export``;
- :mod:`.sources`: images named the skopeo way, for every command;
- :mod:`.fuse_overlayfs`: ``unionfs-sim-fuse``, the fuse-overlayfs drop-in (its own entry
  point with fuse-overlayfs's calling convention, and ``unionfs-sim fuse-overlayfs``).

Commands are registered here, so importing a command module registers nothing by itself.
"""

from __future__ import annotations

from .analysis import COMMANDS as ANALYSIS_COMMANDS
from .main import fuse_overlayfs_command, main
from .mount import mount_command
from .serve import serve_command

main.add_command(mount_command)
main.add_command(fuse_overlayfs_command)
main.add_command(serve_command)
for _c in ANALYSIS_COMMANDS:  # inspect, history, ls, diff, layers, efficiency, df, export
    main.add_command(_c)

__all__ = ["main"]

from .build import build_command  # noqa: E402  (issue 14)

main.add_command(build_command)
