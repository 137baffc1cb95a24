"""OverlayOptions: the overlayfs mount options that change semantics, as the kernel has them."""

from __future__ import annotations

import attrs


@attrs.frozen
class OverlayOptions:
    """Which optional overlayfs features a container's view behaves as if mounted with.

    The defaults are the kernel's own (``CONFIG_OVERLAY_FS_REDIRECT_DIR``,
    ``CONFIG_OVERLAY_FS_INDEX`` and ``CONFIG_OVERLAY_FS_METACOPY`` all default to ``n``, and
    ``/sys/module/overlay/parameters`` shows ``N`` for each on Debian's kernel) and what
    Docker's overlay2 driver and containerd's overlay snapshotter run with, so a model
    built with no options answers as a container engine's overlay does.

    Attributes:
        redirect_dir: renaming a directory that has lower content moves it by setting a
            redirect (``redirect_dir=on``); without it such a rename fails with EXDEV and
            tools such as ``mv`` fall back to copying.
        index: copy-up of a hard-linked lower file keeps the link group together
            (``index=on``); without it the copied-up name becomes a separate inode.
        metacopy: chmod/chown/utime/xattr changes copy up metadata only; the data stays
            in the lower layer until the file is opened for writing (``metacopy=on``).
            The merged view is the same either way; storage accounting and the upper
            layer's on-disk form differ.
    """

    redirect_dir: bool = attrs.field(default=None, kw_only=True)
    index: bool = attrs.field(default=False, kw_only=True)
    metacopy: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        # As the kernel: metacopy=on turns redirect_dir on unless it was set to off,
        # and refuses the pair metacopy=on,redirect_dir=off.
        if self.redirect_dir is None:
            object.__setattr__(self, "redirect_dir", bool(self.metacopy))
        elif self.metacopy and not self.redirect_dir:
            raise ValueError("conflicting options: metacopy=True needs redirect_dir=True "
                             "(the kernel refuses metacopy=on,redirect_dir=off)")

    def mount_options(self) -> list[str]:
        """The ``-o`` options a kernel overlay mount needs to behave like these options."""
        out = [
            f"redirect_dir={'on' if self.redirect_dir else 'off'}",
            f"index={'on' if self.index else 'off'}",
            f"metacopy={'on' if self.metacopy else 'off'}",
        ]
        return out
