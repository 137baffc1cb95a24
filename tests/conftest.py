"""Fixtures shared by the FUSE test modules."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import pytest

from . import daemons


@pytest.fixture
def mnt() -> Iterator[str]:
    """A fresh, empty mountpoint (a ``tempfile.mkdtemp()``), removed afterwards."""
    path = tempfile.mkdtemp(prefix="ufs-fuse-")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)


@pytest.fixture(scope="session")
def docker() -> Iterator[daemons.Docker]:
    """A private dockerd for the whole session, with a ``busybox`` base image (root only)."""
    try:
        with daemons.start_docker() as d:
            yield d
    except daemons.DaemonUnavailable as e:
        pytest.skip(f"no private dockerd here: {e}")


@pytest.fixture
def docker_registry() -> Iterator[daemons.Registry]:
    """Debian's docker-registry (distribution 2.8.2) on a free 127.0.0.1 port, empty."""
    try:
        with daemons.start_registry() as r:
            yield r
    except daemons.DaemonUnavailable as e:
        pytest.skip(f"no docker-registry here: {e}")
