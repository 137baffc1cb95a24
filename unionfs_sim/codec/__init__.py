"""Layer codecs: a layer's entries to and from its wire and disk forms.

They sit below :class:`~unionfs_sim.layer.Layer` (a layer's digest is the sha256 of its
canonical tar): :mod:`.tar` reads and writes OCI tar changesets, :mod:`.overlaydir` the
overlayfs on-disk format (lower and upper directories). Image formats (OCI layouts,
docker archives) are above ``Image``, in :mod:`unionfs_sim.formats`.
"""
