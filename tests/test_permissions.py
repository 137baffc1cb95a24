"""fs.as_user on the model alone: the facade's plumbing (the rules themselves are checked
against the kernel by PermissionConformance and the differential machines)."""

from __future__ import annotations

import errno
import os

import pytest

import unionfs_sim as ufs
from unionfs_sim.fs import Credentials


def _image() -> ufs.Image:
    return ufs.Image.from_layers([ufs.Layer.from_dict({
        "d/": ufs.Dir(mode=0o755), "d/sub/": ufs.Dir(mode=0o755), "d/sub/f": ufs.File(b"f", mode=0o644),
        "w/": ufs.Dir(mode=0o777),
    })])


def test_root_view_is_unchanged() -> None:
    """uid 0 is root: no checks, and the default facade has no caller."""
    c = _image().container()
    assert c.fs.caller is None
    root = c.fs.as_user(0, 0)
    assert root.caller is None
    root.chmod("/d/sub/f", 0o000)
    assert root.read_bytes("/d/sub/f") == b"f"


def test_view_shares_overlay_lock_and_open_files() -> None:
    """as_user is a facade on the same container: same overlay, same lock; a handle opened
    by root keeps working when the caller could not have opened it."""
    c = _image().container()
    u = c.fs.as_user(1000, 1000, (1000,))
    assert u.overlay is c.fs.overlay and u.lock is c.fs.lock is c.overlay.lock
    assert u.umask == 0o022 and (u.uid, u.gid) == (1000, 1000)
    assert u.caller == Credentials(1000, 1000, frozenset({1000}))
    u.write_bytes("/w/x", b"x")
    assert c.fs.stat("/w/x").st_uid == 1000 and c.upper["w/x"].uid == 1000


def test_fast_lookup_sees_a_directory_closing() -> None:
    """The search-permission cache is dropped on every change: after root closes a
    directory, the caller's next plain lookup below it is EACCES, and after root opens
    it again, it works again."""
    c = _image().container()
    u = c.fs.as_user(1000, 1000)
    assert u.read_bytes("/d/sub/f") == b"f"
    c.fs.chmod("/d", 0o700)
    with pytest.raises(PermissionError) as e:
        u.stat("/d/sub/f")
    assert e.value.errno == errno.EACCES
    c.fs.chmod("/d", 0o711)
    assert u.stat("/d/sub/f").st_size == 1
    c.fs.chmod("/d/sub", 0o700)
    with pytest.raises(PermissionError):
        u.lstat("/d/sub/f")


def test_image_view_as_user_reads_with_checks_and_writes_erofs() -> None:
    """An image's read-only view acts as a user too: reads are checked, writes EROFS."""
    img = ufs.Image.from_layers([ufs.Layer.from_dict({"p/": ufs.Dir(mode=0o700), "p/f": b"f", "r": b"r"})])
    u = img.fs.as_user(1000, 1000)
    assert u.read_bytes("/r") == b"r"
    with pytest.raises(PermissionError):
        u.read_bytes("/p/f")
    with pytest.raises(OSError) as e:
        u.os_open("/r", os.O_WRONLY)
    assert e.value.errno == errno.EROFS


def test_access_follows_the_caller() -> None:
    """fs.access answers for the caller: rwx bits for a user, everything but exec for root."""
    c = _image().container()
    u = c.fs.as_user(1000, 1000)
    assert u.access("/d/sub/f", os.R_OK) and not u.access("/d/sub/f", os.W_OK)
    assert c.fs.access("/d/sub/f", os.W_OK) and not c.fs.access("/d/sub/f", os.X_OK)
    assert not u.access("/w/nope", os.F_OK)
