"""Image formats, above ``Image``: OCI image layouts (:mod:`.oci`), ``docker save`` archives
(:mod:`.docker_archive`), and the blob helpers they share (:mod:`.blobs`).

Layer codecs (OCI tar changesets, overlayfs directories) are below ``Layer`` in
:mod:`unionfs_sim.codec`; ``formats.tar`` and ``formats.overlaydir`` still import them.
"""
