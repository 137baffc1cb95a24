"""The ``unionfs-sim`` command line: one click group, one module per command (the only printing code).

- :mod:`.main`: the group and ``demo``;
- :mod:`.mount`: ``mount`` (a container of an image as a real directory);
- :mod:`.serve`: ``serve`` (a registry directory over the OCI distribution API);
- :mod:`.analysis`: ``inspect``, ``history``, ``ls``, ``diff``, ``layers``, ``efficiency``, ``df``, ``export``;
- :mod:`.sources`: images named the skopeo way, for every command;
- :mod:`.fuse_overlayfs`: ``unionfs-sim-fuse``, the fuse-overlayfs drop-in (its own entry
  point with fuse-overlayfs's calling convention, and ``unionfs-sim fuse-overlayfs``).

Commands are registered here, so importing a command module registers nothing by itself.
They are registered lazily (:class:`~.main.LazyGroup`): a command's module is imported when
the command runs (or ``--help`` lists it), so importing this package, as ``unionfs-sim-fuse``
does, loads neither build/, analysis/, serve/ nor the formats.
"""

from __future__ import annotations

from .main import fuse_overlayfs_command, main

main.add_command(fuse_overlayfs_command)
main.add_lazy("mount", ".mount", "mount_command")
main.add_lazy("serve", ".serve", "serve_command")
for _name in ("inspect", "history", "layers", "ls", "diff", "efficiency", "df", "export"):
    main.add_lazy(_name, ".analysis", f"{_name}_command")

__all__ = ["main"]

main.add_lazy("build", ".build", "build_command")  # issue 14
