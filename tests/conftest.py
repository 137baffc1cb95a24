"""Fixtures shared by the FUSE test modules."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture
def mnt() -> Iterator[str]:
    """A fresh, empty mountpoint (a ``tempfile.mkdtemp()``), removed afterwards."""
    path = tempfile.mkdtemp(prefix="ufs-fuse-")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)
