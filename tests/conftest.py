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



def _skips_not_allowed(config: pytest.Config) -> list[pytest.TestReport]:
    """The skipped tests, when ``UNIONFS_SIM_NO_SKIPS=1`` says there must be none.

    CI sets it (root, every tool installed, mounts allowed): each skip here is for a
    machine that lacks something, and CI's lacks nothing, so a skip there would hide a
    missing feature."""
    if not os.environ.get("UNIONFS_SIM_NO_SKIPS"):
        return []
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return list(reporter.stats.get("skipped", [])) if reporter is not None else []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run on a skip that ``UNIONFS_SIM_NO_SKIPS`` forbids."""
    if _skips_not_allowed(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """Name each forbidden skip and its reason."""
    skipped = _skips_not_allowed(config)
    if skipped:
        terminalreporter.write_sep("=", f"UNIONFS_SIM_NO_SKIPS: {len(skipped)} skipped, which CI does not allow",
                                   red=True)
        for rep in skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            terminalreporter.write_line(f"{rep.nodeid}: {reason}")
