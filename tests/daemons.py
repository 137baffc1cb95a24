"""Real peers as oracles: a private dockerd and Debian's docker-registry, started by the tests.

Each runs on temporary directories of its own, listens only on a unix socket or on
127.0.0.1, and is stopped (by its PID) when the tests are done; nothing of the machine's own
Docker is touched. The Docker CLI is Debian's ``/usr/bin/docker`` (20.10, as the daemon),
which builds with BuildKit without the buildx plugin a newer client would want.

``docker`` (a session fixture in conftest) gives a :class:`Docker` with a ``busybox`` image
made from busybox-static by ``docker import``; ``docker_registry`` gives a :class:`Registry`
on a free port with its own storage.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
REGISTRY = "/usr/bin/docker-registry"
BUSYBOX = "/bin/busybox"
BASE_IMAGE = "busybox:latest"


class DaemonUnavailable(RuntimeError):
    """The machine cannot run this daemon (not root, not installed); the message says why."""


def docker_unavailable() -> str | None:
    """Why a private dockerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    for path, pkg in ((DOCKERD, "docker.io"), (DOCKER, "docker.io"), (BUSYBOX, "busybox-static")):
        if not os.path.exists(path):
            return f"{path} is not installed (apt-get install {pkg})"
    return None


def registry_unavailable() -> str | None:
    """Why docker-registry cannot run here, or None."""
    if not os.path.exists(REGISTRY):
        return f"{REGISTRY} is not installed (apt-get install docker-registry)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (PR_SET_PDEATHSIG), so a
    killed pytest never leaves a daemon behind."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _unmount_below(root: str) -> None:
    """Lazily unmount whatever a daemon left mounted under ``root`` (deepest first)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    for point in sorted((p for p in points if p == root or p.startswith(root + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


class Docker:
    """A running private dockerd: ``run("image", "ls")`` calls the CLI against it."""

    def __init__(self, root: str, proc: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.proc = proc
        self.host = f"unix://{root}/docker.sock"
        self.base = BASE_IMAGE

    @property
    def env(self) -> dict[str, str]:
        """The environment for a docker CLI talking to this daemon (config dir of its own)."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": f"{self.root}/cli"}

    def run(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None,
            check: bool = True, timeout: float = 300, cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``docker ARGS``; with ``check`` a non-zero exit raises with its stderr."""
        full_env = {**self.env, **(env or {})}
        done = subprocess.run([DOCKER, *args], input=input, env=full_env, capture_output=True,
                              timeout=timeout, cwd=cwd)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stderr.decode(errors='replace')}")
        return done

    def text(self, *args: str, **kw: object) -> str:
        """``docker ARGS``'s standard output as text."""
        return self.run(*args, **kw).stdout.decode()  # type: ignore[arg-type]


def busybox_rootfs() -> bytes:
    """A root filesystem tar: busybox-static at /bin/busybox and a symlink per applet."""
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, check=True).stdout.decode().split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "tmp", "root"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = Path(BUSYBOX).read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for name in sorted(set(applets) - {"busybox"}):
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
                           ("etc/group", "root:x:0:\nnogroup:x:65534:\n")):
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(raw), 0o644
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


@contextlib.contextmanager
def start_docker(timeout: float = 90) -> Iterator[Docker]:
    """Start a private dockerd on temporary directories; stop it and clean up afterwards."""
    why = docker_unavailable()
    if why:
        raise DaemonUnavailable(why)
    root = tempfile.mkdtemp(prefix="ufs-dockerd-")  # short: the socket path must fit sun_path
    log = open(f"{root}/dockerd.log", "wb")
    proc = subprocess.Popen(
        [DOCKERD, "--data-root", f"{root}/data", "--exec-root", f"{root}/exec",
         "--pidfile", f"{root}/dockerd.pid", "-H", f"unix://{root}/docker.sock",
         "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
         "--userland-proxy=false"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    docker = Docker(root, proc)
    try:
        deadline = time.monotonic() + timeout
        while docker.run("version", check=False, timeout=30).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DaemonUnavailable(f"dockerd did not start: {Path(root, 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.3)
        docker.run("import", "-", BASE_IMAGE, input=busybox_rootfs())
        yield docker
    finally:
        _stop(proc)
        log.close()
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


class Registry:
    """A running docker-registry (distribution 2.8.2): ``host`` is ``127.0.0.1:PORT``."""

    def __init__(self, root: str, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.storage = f"{root}/storage"
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"
        self.proc = proc


@contextlib.contextmanager
def start_registry(timeout: float = 30) -> Iterator[Registry]:
    """Start Debian's docker-registry on a free 127.0.0.1 port with delete enabled; stop it after."""
    why = registry_unavailable()
    if why:
        raise DaemonUnavailable(why)
    root = tempfile.mkdtemp(prefix="ufs-registry-")
    port = free_port()
    Path(root, "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root}/storage}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n")
    log = open(f"{root}/registry.log", "wb")
    proc = subprocess.Popen([REGISTRY, "serve", f"{root}/config.yml"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DaemonUnavailable(f"docker-registry did not start: {Path(root, 'registry.log').read_text()}")
            time.sleep(0.05)
        yield Registry(root, port, proc)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
