"""Images that buildah and podman build, read by our loaders (and ours read back by them).

No base image can be pulled offline, so every image is built FROM scratch: ``buildah from
scratch``, files written into ``buildah mount``'s directory with ``os`` calls (plus one
``buildah copy --chown --chmod``), ``buildah commit``; the next layer comes from ``buildah
from`` the previous image. No RUN step is needed (it would need a shell in the image).
Three layers (v1..v3, see ``write_layer*``), then a config-only commit (v4: buildah adds an
empty tar as a layer) and a ``--squash`` commit. They are pushed to an OCI layout (gzip;
also zstd and zstd:chunked), a docker archive, a Docker-media-type manifest in an OCI
layout, saved by ``podman save`` as an OCI archive, a docker archive and a multi-image
docker archive, and put in a manifest list of two platforms (``buildah manifest push
--all``).

The oracles are the tools themselves: skopeo reports the manifest and config bytes (so the
digests), buildah the image id, config and diff_ids, ``umoci unpack`` the tree an
independent extractor makes of the layout, and ``buildah mount`` of a container of the
image the tree containers/storage made of the layers. Our merged view must equal each of
them: types, modes, owners, contents, symlink targets, xattrs, mtimes, and which paths are
hard links of one file. The other way round, buildah pulls our OCI layout and podman loads
our docker archive, and their view of it is ours.

Everything is built twice, once per containers/storage driver, because they emit different
changesets: ``vfs`` compares directory trees (a replaced directory becomes ``.wh.`` entries
for each old name; a hard link added to a lower file is a plain copy), ``overlay`` reads the
kernel's upperdir (``.wh..wh..opq`` opaque markers, whiteouts that are hard links of one
another, copied-up files with their new hard links in the same tar). The storage of each
build is private (``--root``/``--runroot``/``--tmpdir``/``TMPDIR`` in a temporary directory,
unmounted and removed afterwards); the tools still touch their caches outside it (the blob
info cache in /var/lib/containers/cache, /run/containers/networks), never the system's
images.

Needs root (buildah FROM scratch with owners, device nodes and, for ``overlay``, kernel
mounts); tests skip saying why when a tool is missing or the overlay driver cannot mount.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unionfs_sim.errors import FormatError
from unionfs_sim.formats import docker_archive, oci
from unionfs_sim.image import Image, ImageConfig
from unionfs_sim.testing.compare import diff_dicts, snapshot

from .test_oci import index_layout

DOCKER_NAME = "example.com/app:3"


# --- running the tools in a private storage ----------------------------------------------------


def need(tool: str) -> str:
    """The path of ``tool``, or skip the test saying it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install -y {tool})")
    return path


class Tools:
    """buildah, podman and skopeo, all on one private containers/storage under ``base``."""

    def __init__(self, base: Path, driver: str) -> None:
        self.base, self.driver = base, driver
        (base / "tmp").mkdir(parents=True)
        root, runroot = base / "root", base / "run"
        conf = base / "storage.conf"
        conf.write_text(f'[storage]\ndriver = "{driver}"\ngraphroot = "{root}"\nrunroot = "{runroot}"\n')
        self.env = {**os.environ, "TMPDIR": str(base / "tmp"), "CONTAINERS_STORAGE_CONF": str(conf)}
        self.storage = ["--root", str(root), "--runroot", str(runroot), "--storage-driver", driver]

    def run(self, *cmd: str | os.PathLike[str]) -> str:
        """Run ``cmd``; its stdout (stripped), or fail showing its stderr."""
        args = [os.fspath(c) for c in cmd]
        p = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, env=self.env)
        assert p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr}"
        return p.stdout.strip()

    def buildah(self, *args: str | os.PathLike[str]) -> str:
        return self.run("buildah", *self.storage, *args)

    def podman(self, *args: str | os.PathLike[str]) -> str:
        return self.run("podman", *self.storage, "--tmpdir", self.base / "tmp", "--events-backend", "none",
                        "--cgroup-manager", "cgroupfs", *args)

    def skopeo(self, *args: str | os.PathLike[str]) -> str:
        return self.run("skopeo", "--insecure-policy", *args)

    def image_inspect(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.buildah("inspect", "--type", "image", name))
        return doc

    def mounted_container(self, image: str) -> Path:
        """A new working container of ``image``, mounted: containers/storage's view of it."""
        c = self.buildah("from", "--pull-never", image)
        return Path(self.buildah("mount", c))

    def cannot_mount(self) -> str | None:
        """Why a container of this storage cannot be mounted (the overlay driver needs the
        kernel's overlayfs, and a graph root it can stack on), or None if it can."""
        for args in (("from", "scratch"), ("mount", "working-container")):
            p = subprocess.run(["buildah", *self.storage, *args], capture_output=True, text=True, env=self.env,
                               timeout=120, check=False)
            if p.returncode != 0:
                return p.stderr.strip()
        self.buildah("rm", "--all")
        return None

    def cleanup(self) -> None:
        """Unmount and remove every container, then everything under ``base``."""
        for args in (("umount", "--all"), ("rm", "--all")):
            subprocess.run(["buildah", *self.storage, *args], capture_output=True, env=self.env, timeout=120,
                           check=False)
        # Anything still mounted below base (the overlay driver's mounts) goes too, deepest first.
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f]
        for mp in sorted((p for p in points if p.startswith(str(self.base) + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)


# --- what is built -----------------------------------------------------------------------------


def write_layer1(m: Path) -> None:
    """Dirs, odd modes and owners, symlinks, a hard-link group, xattrs, a FIFO, a device."""
    (m / "bin").mkdir(mode=0o755)
    (m / "bin/tool").write_bytes(b"\x7fELF" + b"t" * 3000)
    os.chmod(m / "bin/tool", 0o4755)                               # setuid
    (m / "bin/sh").symlink_to("tool")
    (m / "tmp").mkdir()
    os.chmod(m / "tmp", 0o1777)                                    # sticky
    (m / "etc").mkdir()
    (m / "etc/hostname").write_bytes(b"box\n")
    os.setxattr(m / "etc/hostname", "user.note", b"x")             # buildah keeps user.* xattrs
    (m / "etc/motd").write_bytes(b"hello\n")
    (m / "etc/secret").write_bytes(b"s3cret")
    os.chmod(m / "etc/secret", 0)                                  # mode 0000
    (m / "etc/link").symlink_to("hostname")
    (m / "etc/abs").symlink_to("/etc/hostname")
    (m / "etc/dangling").symlink_to("../nowhere")
    (m / "home/u").mkdir(parents=True)
    os.chown(m / "home/u", 12345, 54321)
    os.chmod(m / "home/u", 0o750)
    os.setxattr(m / "home/u", "user.dir", b"d")
    (m / "home/u/file").write_bytes(b"u")
    os.chown(m / "home/u/file", 12345, 54321)
    os.chmod(m / "home/u/file", 0o640)
    (m / "data/sub").mkdir(parents=True)
    (m / "data/a").write_bytes(b"a" * 5000)                        # hard-link group of three
    os.link(m / "data/a", m / "data/a2")
    os.link(m / "data/a", m / "data/sub/a3")
    (m / "data/old/y").mkdir(parents=True)
    (m / "data/old/x").write_bytes(b"x")
    (m / "data/old/y/z").write_bytes(b"z")
    (m / "data/empty").write_bytes(b"")
    (m / "data/big").write_bytes(bytes(range(256)) * 1200 + b"end")
    (m / "srv").mkdir()
    os.mkfifo(m / "srv/fifo", 0o600)
    (m / "dev").mkdir()
    os.mknod(m / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(m / "dev/null", 0o666)
    long = m / ("l" * 60) / ("n" * 80)                             # a path over 100 bytes
    long.parent.mkdir()
    long.write_bytes(b"long")
    (m / "caf\u00e9.txt").write_bytes(b"utf8")
    (m / "opt").mkdir()
    (m / "opt/to-dir").write_bytes(b"f")
    (m / "opt/to-file").mkdir()
    (m / "opt/to-file/inner").write_bytes(b"i")


def write_layer2(m: Path) -> None:
    """Deletions (whiteouts), a replaced directory, changed content, modes and owners.

    Every content change also changes the size: the vfs driver finds changes by comparing
    size, mode, owner and mtime, and a same-size write within the second the parent layer's
    files were extracted (tar mtimes are whole seconds) goes unnoticed.
    """
    (m / "etc/motd").unlink()
    shutil.rmtree(m / "data/old")                                  # replaced as a whole:
    (m / "data/old").mkdir()                                       # opaque or whiteouts
    (m / "data/old/new").write_bytes(b"n")
    (m / "etc/hostname").write_bytes(b"web1\n")
    os.chmod(m / "etc/hostname", 0o600)
    os.chmod(m / "srv", 0o700)                                     # metadata only
    os.chmod(m / "data/empty", 0o600)
    os.lchown(m / "bin/sh", 1, 1)
    (m / "data/a2").unlink()                                       # one name of the group
    with open(m / "data/a", "ab") as f:                            # overlay breaks the link
        f.write(b"A")                                              # on copy-up, vfs does not
    (m / "opt/to-dir").unlink()
    (m / "opt/to-dir").mkdir()
    (m / "opt/to-dir/f").write_bytes(b"d")
    shutil.rmtree(m / "opt/to-file")
    (m / "opt/to-file").write_bytes(b"now a file")
    os.setxattr(m / "etc/secret", "user.added", b"yes")


def write_layer3(m: Path) -> None:
    """Hard links to files of lower layers, a new tree, a deleted symlink and directory."""
    os.link(m / "bin/tool", m / "bin/tool2")
    os.link(m / "etc/hostname", m / "etc/hostname.bak")
    (m / "var/log/app").mkdir(parents=True)
    (m / "var/log/app/log").write_bytes(b"log")
    (m / "etc/dangling").unlink()
    shutil.rmtree(m / ("l" * 60))                                  # a whole directory deleted
    (m / "bin/ping").write_bytes(b"ping")
    # A file capability (cap_setuid, cap_net_raw: not valid UTF-8) and a binary user xattr.
    os.setxattr(m / "bin/ping", "security.capability", struct.pack("<5I", 0x02000001, 1 << 7 | 1 << 13, 0, 0, 0))
    os.setxattr(m / "bin/ping", "user.bin", b"\xff\x00\xfe\n=x")


CONFIG_ARGS = [
    "--cmd", '["/bin/tool","-v"]', "--entrypoint", '["/bin/sh","-c"]', "--env", "A=1", "--env", "PATH=/bin",
    "--workingdir", "/home/u", "--label", "org.example=yes", "--user", "12345:54321", "--port", "8080/tcp",
    "--volume", "/data", "--stop-signal", "SIGTERM", "--author", "someone",
]


LAYERS = {"v1": 1, "v2": 2, "v3": 3, "v4": 4, "squashed": 1}
"""The tags of buildah's OCI layout and their layer counts: v1..v3 as written above, v4 a
`buildah config` of v3 committed (an empty layer: 1024 zero bytes), squashed v3 as one layer."""


@dataclass
class Built:
    """What one build produced, and where."""

    tools: Tools
    layout: Path                          # buildah push oci:layout:TAG for each of LAYERS
    pushed: dict[str, str]                # tag -> manifest digest buildah push reported
    zstd: Path                            # v3 pushed as zstd (tag zstd) and zstd:chunked (tag chunked)
    docker_layout: Path                   # v3 committed --format docker, pushed --format v2s2: tag d
    docker_tar: Path                      # buildah push docker-archive:...:example.com/app:3
    podman_oci: Path                      # podman save --format oci-archive, extracted
    podman_docker: Path                   # podman save --format docker-archive
    podman_multi: Path                    # podman save -m v1 v3
    index: Path                           # buildah manifest push --all list oci:index:list
    arm_id: str                           # the linux/arm64/v8 image of the list
    inspect: dict[str, dict[str, Any]] = field(default_factory=dict)   # image -> buildah inspect


def build(tools: Tools) -> Built:
    b, base = tools.buildah, tools.base
    ctx = base / "ctx/d"                                           # for buildah copy
    ctx.mkdir(parents=True)
    (ctx / "f").write_bytes(b"copied")
    (ctx / "l").symlink_to("f")

    def commit(parent: str, name: str, *flags: str, write: Callable[[Path], None] | None = None,
               copy: bool = False, config: Sequence[str] = ()) -> None:
        c = b("from", "--pull-never", parent)
        if write is not None:
            write(Path(b("mount", c)))
            b("umount", c)
        if copy:
            b("copy", "--chown", "7:8", "--chmod", "0640", c, ctx, "/copied/")
        if config:
            b("config", *config, c)
        b("commit", "--quiet", "--rm", *flags, c, name)

    commit("scratch", "v1", write=write_layer1)
    commit("v1", "v2", write=write_layer2)
    commit("v2", "v3", write=write_layer3, copy=True, config=CONFIG_ARGS)
    commit("v3", "v4", config=("--env", "B=2"))
    commit("v3", "squashed", "--squash")
    commit("v3", "docker", "--format", "docker")

    pushed = {}
    for tag in LAYERS:
        b("push", "--quiet", "--digestfile", base / f"{tag}.digest", tag, f"oci:{base / 'layout'}:{tag}")
        pushed[tag] = (base / f"{tag}.digest").read_text().strip()
    for fmt, tag in (("zstd", "zstd"), ("zstd:chunked", "chunked")):
        b("push", "--quiet", "--compression-format", fmt, "--digestfile", base / f"{tag}.digest", "v3",
          f"oci:{base / 'zstd'}:{tag}")
        pushed[tag] = (base / f"{tag}.digest").read_text().strip()
    b("push", "--quiet", "--format", "v2s2", "--digestfile", base / "d.digest", "docker", f"oci:{base / 'docker'}:d")
    pushed["d"] = (base / "d.digest").read_text().strip()
    b("push", "--quiet", "v3", f"docker-archive:{base / 'docker.tar'}:{DOCKER_NAME}")

    p = tools.podman
    p("save", "--quiet", "--format", "oci-archive", "-o", base / "podman-oci.tar", "v3")
    with tarfile.open(base / "podman-oci.tar") as tf:
        tf.extractall(base / "podman-oci", filter="data")
    p("save", "--quiet", "--format", "docker-archive", "-o", base / "podman-docker.tar", "v3")
    p("save", "--quiet", "--multi-image-archive", "-o", base / "podman-multi.tar", "v1", "v3")

    c = b("from", "--pull-never", "--arch", "arm64", "--variant", "v8", "scratch")
    (Path(b("mount", c)) / "arch").write_bytes(b"arm64\n")
    b("umount", c)
    arm_id = b("commit", "--quiet", "--rm", c, "arm")
    b("manifest", "create", "list")
    b("manifest", "add", "list", "v3")
    b("manifest", "add", "--os", "linux", "--arch", "arm64", "--variant", "v8", "list", "arm")
    b("manifest", "push", "--quiet", "--all", "list", f"oci:{base / 'index'}:list")

    return Built(tools, base / "layout", pushed, base / "zstd", base / "docker", base / "docker.tar",
                 base / "podman-oci", base / "podman-docker.tar", base / "podman-multi.tar", base / "index",
                 "sha256:" + arm_id, {name: tools.image_inspect(name) for name in (*LAYERS, "docker")})


@pytest.fixture(scope="module", params=["vfs", "overlay"])
def built(request: pytest.FixtureRequest) -> Iterator[Built]:
    need("buildah")
    need("podman")
    if os.geteuid() != 0:
        pytest.skip("building FROM scratch with owners and device nodes needs root")
    # Not under tmp_path: podman refuses a runroot over 50 characters (pytest-of-root/pytest-123/...).
    tools = Tools(Path(tempfile.mkdtemp(prefix=f"ufs-{request.param}-", dir="/tmp")), request.param)
    try:
        why = tools.cannot_mount()
        if why is not None:
            pytest.skip(f"buildah's {request.param} storage driver does not work here: {why}")
        yield build(tools)
    finally:
        tools.cleanup()


# --- comparing trees ---------------------------------------------------------------------------


class RootedView:
    """The snapshot's ViewFS over a real directory, paths taken relative to ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root).rstrip("/")

    def _p(self, path: str) -> str:
        return self.root + path

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(self._p(path))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._p(path))

    def readlink(self, path: str) -> str:
        return os.readlink(self._p(path))

    def read_bytes(self, path: str) -> bytes:
        return Path(self._p(path)).read_bytes()

    def listxattr(self, path: str, *, follow_symlinks: bool = True) -> list[str]:
        return os.listxattr(self._p(path), follow_symlinks=follow_symlinks)

    def getxattr(self, path: str, attribute: str, *, follow_symlinks: bool = True) -> bytes:
        return os.getxattr(self._p(path), attribute, follow_symlinks=follow_symlinks)


def tree(view: Any) -> dict[str, tuple[Any, ...]]:
    """Snapshot of everything below the root (the root directory itself is the tool's)."""
    snap = snapshot(view, "/", listed_absent=False)
    snap.pop("/")
    return snap


def link_groups(view: Any, snap: dict[str, tuple[Any, ...]]) -> set[frozenset[str]]:
    """The sets of regular-file paths that are one file (same inode), two names or more."""
    by_ino: dict[int, set[str]] = {}
    for p, e in snap.items():
        if e[0] == "f":
            by_ino.setdefault(view.lstat(p).st_ino, set()).add(p)
    return {frozenset(g) for g in by_ino.values() if len(g) > 1}


def mtimes(view: Any, snap: dict[str, tuple[Any, ...]]) -> dict[str, int]:
    """Every path's mtime (umoci and containers/storage restore them all, directories too)."""
    return {p: view.lstat(p).st_mtime_ns for p in snap}


def assert_same_tree(img: Image, root: str | os.PathLike[str], oracle: str) -> None:
    """Our merged view equals the directory ``root``: the snapshot, hard links, mtimes."""
    view = RootedView(root)
    ours, theirs = tree(img.fs), tree(view)
    assert ours == theirs, "\n" + diff_dicts(ours, theirs, ("ours", oracle))
    assert link_groups(img.fs, ours) == link_groups(view, theirs)
    assert mtimes(img.fs, ours) == mtimes(view, theirs), "\n" + diff_dicts(mtimes(img.fs, ours), mtimes(view, theirs))


def umoci_rootfs(tools: Tools, layout: Path, tag: str, bundle: Path) -> Path:
    """``umoci unpack`` of ``layout:tag`` (as root: owners, devices and xattrs restored)."""
    tools.run(need("umoci"), "unpack", "--image", f"{layout}:{tag}", bundle)
    return bundle / "rootfs"


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- buildah's OCI layout ----------------------------------------------------------------------


@pytest.mark.parametrize("tag", LAYERS)
def test_oci_layout_digests_are_the_tools(built: Built, tag: str) -> None:
    img = oci.load(built.layout, tag=tag)
    need("skopeo")
    src = f"oci:{built.layout}:{tag}"
    manifest = built.tools.skopeo("inspect", "--raw", src).encode()
    config = built.tools.skopeo("inspect", "--config", "--raw", src).encode()
    assert img.digest == built.pushed[tag] == sha256(manifest)
    assert img.manifest_bytes == manifest and img.config_bytes == config
    assert img.digest == json.loads(built.tools.skopeo("inspect", src))["Digest"]
    info = built.inspect[tag]
    assert img.id == sha256(config) == "sha256:" + info["FromImageID"]
    assert img.diff_ids == info["OCIv1"]["rootfs"]["diff_ids"] == json.loads(config)["rootfs"]["diff_ids"]
    assert len(img.layers) == LAYERS[tag]
    assert img.layer_descriptors == json.loads(manifest)["layers"]
    # buildah's storage keeps layers uncompressed; an oci: push gzips them (even with -D).
    assert all(d["mediaType"].endswith("tar+gzip") for d in img.layer_descriptors)


@pytest.mark.parametrize("tag", LAYERS)
def test_oci_layout_tree_is_umocis(built: Built, tag: str, tmp_path: Path) -> None:
    img = oci.load(built.layout, tag=tag)
    assert_same_tree(img, umoci_rootfs(built.tools, built.layout, tag, tmp_path / "bundle"), "umoci")


@pytest.mark.parametrize("tag", LAYERS)
def test_oci_layout_tree_is_the_storages(built: Built, tag: str) -> None:
    img = oci.load(built.layout, tag=tag)
    assert_same_tree(img, built.tools.mounted_container(tag), f"buildah mount ({built.tools.driver})")


def test_what_the_layers_hold(built: Built) -> None:
    """Spot checks of the final image, independent of the driver (the oracles above check it all)."""
    fs = oci.load(built.layout, tag="v3").fs
    st = fs.lstat("/bin/tool")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and fs.read_bytes("/bin/tool2") == fs.read_bytes("/bin/tool")
    assert stat.S_IMODE(fs.lstat("/tmp").st_mode) == 0o1777
    assert stat.S_IMODE(fs.lstat("/etc/secret").st_mode) == 0
    assert fs.getxattr("/etc/secret", "user.added") == b"yes"
    st = fs.lstat("/home/u/file")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (12345, 54321, 0o640)
    assert fs.getxattr("/home/u", "user.dir") == b"d"
    assert fs.lstat("/bin/sh").st_uid == 1 and fs.readlink("/bin/sh") == "tool"
    assert fs.readlink("/etc/abs") == "/etc/hostname"
    assert not fs.exists("/etc/motd") and not fs.exists("/etc/dangling") and not fs.exists("/data/a2")
    assert not fs.exists("/" + "l" * 60)
    assert fs.listdir("/data/old") == ["new"]
    assert fs.read_bytes("/etc/hostname") == b"web1\n" and stat.S_IMODE(fs.lstat("/etc/hostname").st_mode) == 0o600
    assert fs.getxattr("/etc/hostname.bak", "user.note") == b"x"
    assert fs.listdir("/opt/to-dir") == ["f"] and fs.read_bytes("/opt/to-file") == b"now a file"
    assert stat.S_ISFIFO(fs.lstat("/srv/fifo").st_mode) and fs.lstat("/dev/null").st_rdev == os.makedev(1, 3)
    assert fs.getxattr("/bin/ping", "user.bin") == b"\xff\x00\xfe\n=x"
    assert fs.getxattr("/bin/ping", "security.capability")[4:8] == struct.pack("<I", 1 << 7 | 1 << 13)
    st = fs.lstat("/copied/f")                                     # buildah copy --chown --chmod
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (7, 8, 0o640) and fs.readlink("/copied/l") == "f"
    assert fs.read_bytes("/caf\u00e9.txt") == b"utf8" and len(fs.read_bytes("/data/big")) == 256 * 1200 + 3
    # Layer 2 appended to data/a: overlay's copy-up split it from data/sub/a3 (the kernel's
    # rule without index=on); vfs changed the one inode, so a3 changed with it.
    a, a3 = fs.read_bytes("/data/a"), fs.read_bytes("/data/sub/a3")
    assert a == b"a" * 5000 + b"A"
    assert a3 == (a if built.tools.driver == "vfs" else b"a" * 5000)


def test_empty_and_squashed_layers(built: Built) -> None:
    """v4 (a config change committed: an empty tar as a layer) and squashed v3 (one layer)
    show the same tree as v3; each config is buildah's, history included."""
    v3 = oci.load(built.layout, tag="v3")
    v4, squashed = oci.load(built.layout, tag="v4"), oci.load(built.layout, tag="squashed")
    assert v4.diff_ids[:3] == v3.diff_ids and v4.layers[3].source_diff_id == sha256(bytes(1024))
    assert len(v4.layers[3]) == 0 and v4.config.env == (*v3.config.env, "B=2")
    assert tree(v4.fs) == tree(v3.fs) == tree(squashed.fs)
    for img, name in ((v4, "v4"), (squashed, "squashed")):
        assert img.config == ImageConfig.from_json(built.inspect[name]["OCIv1"])
        assert [h.to_json() for h in img.history] == built.inspect[name]["OCIv1"]["history"]


@pytest.mark.parametrize("tag", ["zstd", "chunked"])
def test_zstd_layers(built: Built, tag: str) -> None:
    """buildah push --compression-format zstd and zstd:chunked (skippable frames holding a
    table of contents, named by layer annotations): same config, diff_ids and tree as v3."""
    pytest.importorskip("zstandard")
    img, v3 = oci.load(built.zstd, tag=tag), oci.load(built.layout, tag="v3")
    assert img.digest == built.pushed[tag] and img.id == v3.id and img.diff_ids == v3.diff_ids
    assert all(d["mediaType"].endswith("tar+zstd") for d in img.layer_descriptors)
    if tag == "chunked":
        assert all("io.containers.zstd-chunked.manifest-checksum" in d["annotations"] for d in img.layer_descriptors)
    assert tree(img.fs) == tree(v3.fs)
    need("skopeo")
    manifest = built.tools.skopeo("inspect", "--raw", f"oci:{built.zstd}:{tag}").encode()
    assert img.manifest_bytes == manifest


def test_docker_media_types_in_an_oci_layout(built: Built) -> None:
    """v3 recommitted --format docker and pushed --format v2s2: a Docker schema 2 manifest and
    config in an OCI layout (skopeo itself does not list such a descriptor; we read it)."""
    img = oci.load(built.docker_layout, tag="d")
    m = json.loads(img.manifest_bytes)
    assert m["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert m["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert img.digest == built.pushed["d"] and img.id == "sha256:" + built.inspect["docker"]["FromImageID"]
    v3 = oci.load(built.layout, tag="v3")
    assert img.diff_ids[:3] == v3.diff_ids and len(img.layers[3]) == 0   # a commit adds a layer, empty here
    assert tree(img.fs) == tree(v3.fs)
    assert img.config.cmd == v3.config.cmd and img.config.env == v3.config.env


def test_config_is_buildahs(built: Built) -> None:
    img = oci.load(built.layout, tag="v3")
    c = img.config
    assert c.cmd == ("/bin/tool", "-v") and c.entrypoint == ("/bin/sh", "-c")
    assert c.env == ("A=1", "PATH=/bin") and c.working_dir == "/home/u" and c.user == "12345:54321"
    assert ("org.example", "yes") in c.labels and c.exposed_ports == ("8080/tcp",) and c.volumes == ("/data",)
    assert c.stop_signal == "SIGTERM" and c.author == "someone"
    assert (c.os, c.architecture) == ("linux", "amd64")
    assert c == ImageConfig.from_json(built.inspect["v3"]["OCIv1"])
    assert [h.empty_layer for h in img.history].count(False) == 3
    # The earlier images were committed before `buildah config`: no Cmd, no user.
    v1 = oci.load(built.layout, tag="v1").config
    assert v1.cmd is None and v1.user == "" and dict(v1.labels).keys() == {"io.buildah.version"}


# --- docker archives and podman ----------------------------------------------------------------


def test_buildah_docker_archive(built: Built) -> None:
    from_layout = oci.load(built.layout, tag="v3")
    for tag in (DOCKER_NAME, "localhost/v3:latest", "localhost/v3", None):
        img = docker_archive.load(built.docker_tar, tag=tag)
        assert img.id == from_layout.id and img.config_bytes == from_layout.config_bytes
        assert img.diff_ids == from_layout.diff_ids
    # A legacy-format archive has no manifest: ours is made of its (uncompressed) layer tars.
    assert [d["digest"] for d in img.layer_descriptors] == img.diff_ids
    assert tree(img.fs) == tree(from_layout.fs)
    need("skopeo")
    config = built.tools.skopeo("inspect", "--config", "--raw", f"docker-archive:{built.docker_tar}").encode()
    assert img.id == sha256(config)


def test_podman_oci_archive(built: Built) -> None:
    layout = built.podman_oci
    index = json.loads((layout / "index.json").read_bytes())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "localhost/v3:latest"
    for tag in ("localhost/v3:latest", "localhost/v3", None):
        img = oci.load(layout, tag=tag)
        assert img.digest == index["manifests"][0]["digest"]
    assert img.manifest_bytes == blob(layout, img.digest)
    ref = oci.load(built.layout, tag="v3")
    assert img.id == ref.id and img.diff_ids == ref.diff_ids and tree(img.fs) == tree(ref.fs)


def test_podman_docker_archives(built: Built) -> None:
    ref = {tag: oci.load(built.layout, tag=tag) for tag in ("v1", "v3")}
    img = docker_archive.load(built.podman_docker)
    assert img.id == ref["v3"].id and img.diff_ids == ref["v3"].diff_ids and tree(img.fs) == tree(ref["v3"].fs)
    for tag in ("v1", "v3"):
        img = docker_archive.load(built.podman_multi, tag=f"localhost/{tag}:latest")
        assert img.id == ref[tag].id and tree(img.fs) == tree(ref[tag].fs)
    assert docker_archive.load(built.podman_multi, tag=ref["v1"].id).id == ref["v1"].id
    with pytest.raises(ValueError, match="2 images.*localhost/v1:latest"):
        docker_archive.load(built.podman_multi)


# --- the manifest list -------------------------------------------------------------------------


def test_manifest_list_platforms(built: Built) -> None:
    index_desc = json.loads((built.index / "index.json").read_bytes())["manifests"][0]
    index = json.loads(blob(built.index, index_desc["digest"]))
    by_arch = {m["platform"]["architecture"]: m for m in index["manifests"]}
    assert by_arch["arm64"]["platform"].get("variant") == "v8"

    amd = oci.load(built.index, tag="list", platform="linux/amd64")
    assert amd.digest == by_arch["amd64"]["digest"] and amd.id == oci.load(built.layout, tag="v3").id
    assert tree(amd.fs) == tree(oci.load(built.layout, tag="v3").fs)
    for platform in ("linux/arm64", "linux/arm64/v8", "linux/aarch64"):
        arm = oci.load(built.index, tag="list", platform=platform)
        assert arm.digest == by_arch["arm64"]["digest"] and arm.id == built.arm_id
        assert (arm.config.architecture, arm.config.variant) == ("arm64", "v8")
        assert arm.fs.listdir("/") == ["arch"] and arm.fs.read_bytes("/arch") == b"arm64\n"

    with pytest.raises(KeyError, match=r"no image for platform 'linux/s390x'.*platforms: linux/amd64, linux/arm64/v8"):
        oci.load(built.index, tag="list", platform="linux/s390x")
    with pytest.raises(KeyError, match="linux/arm64/v7"):
        oci.load(built.index, tag="list", platform="linux/arm64/v7")
    with pytest.raises(ValueError, match="has 2 images; pass platform= one of linux/amd64, linux/arm64/v8"):
        oci.load(built.index, tag="list")
    with pytest.raises(ValueError, match="platform must be"):
        oci.load(built.index, tag="list", platform="arm64")


# --- round trips: the tools read what we write back ----------------------------------------------


def test_round_trip_through_our_writers(built: Built, tmp_path: Path) -> None:
    """Saving a loaded image copies back the blobs it was read from, so the digests stay,
    as with ``skopeo copy``. Once those files are gone, every layer is written as *our*
    canonical tar (the original gzip stream cannot be reproduced byte for byte, and
    buildah's tars differ from ours: type bits in the mode field, header order ...), so
    the layer blobs, the config's diff_ids, hence image.id and image.digest, change; the
    config otherwise stays as it was, and so does the tree. A second save of what we
    wrote is then a fixpoint."""
    src = tmp_path / "src"
    shutil.copytree(built.layout, src)
    img = oci.load(src, tag="v3")
    assert oci.save(img, tmp_path / "same", tag="rt") == img.digest
    same = oci.load(tmp_path / "same", tag="rt")
    assert same.id == img.id and same.diff_ids == img.diff_ids
    for d in img.layer_descriptors:
        assert blob(tmp_path / "same", d["digest"]) == blob(src, d["digest"])
    shutil.rmtree(src)
    digest = oci.save(img, tmp_path / "ours", tag="rt")
    back = oci.load(tmp_path / "ours", tag="rt")
    assert back.digest == digest
    assert back.diff_ids == [x.digest for x in img.layers] != img.diff_ids
    new_cfg, old_cfg = json.loads(back.config_bytes), json.loads(img.config_bytes)
    assert new_cfg.pop("rootfs") != old_cfg.pop("rootfs") and new_cfg == old_cfg
    assert back.config == img.config and back.history == img.history
    assert tree(back.fs) == tree(img.fs)
    assert oci.save(back, tmp_path / "again", tag="rt") == back.digest
    assert blob(tmp_path / "again", back.digest) == back.manifest_bytes

    # buildah pulls our layout into its storage: same config, same tree.
    t = built.tools
    pulled = t.buildah("pull", "--quiet", f"oci:{tmp_path / 'ours'}:rt").splitlines()[-1]
    assert "sha256:" + t.image_inspect(pulled)["FromImageID"] == back.id
    assert_same_tree(back, t.mounted_container(pulled), "buildah pull of our layout")
    assert_same_tree(back, umoci_rootfs(t, tmp_path / "ours", "rt", tmp_path / "bundle"), "umoci")


def test_podman_loads_our_docker_archive(built: Built, tmp_path: Path) -> None:
    img = oci.load(built.layout, tag="v3")
    docker_archive.save(img, tmp_path / "ours.tar", tags=["example.com/ours:1"])
    ours = docker_archive.load(tmp_path / "ours.tar")
    t = built.tools
    t.podman("load", "--quiet", "-i", tmp_path / "ours.tar")
    info = t.image_inspect("example.com/ours:1")
    assert "sha256:" + info["FromImageID"] == ours.id
    # The layers are buildah's own tars (decompressed from the blobs they were loaded
    # from), so the diff_ids and the image id are buildah's.
    assert info["OCIv1"]["rootfs"]["diff_ids"] == ours.diff_ids == img.diff_ids and ours.id == img.id
    assert_same_tree(ours, t.mounted_container("example.com/ours:1"), "podman load of our archive")


# --- an index without the images of every platform ---------------------------------------------


def test_sparse_index_loads_the_platform_it_holds(tmp_path: Path) -> None:
    """Regression: loading one platform of an index read every child manifest first, so a
    layout that holds the index but not all its images (skopeo --multi-arch index-only,
    containerd's and Docker's single-platform exports) could not be read at all."""
    layout, amd, arm = index_layout(tmp_path)
    (layout / "blobs/sha256" / arm.digest.removeprefix("sha256:")).unlink()
    assert oci.load(layout, tag="multi", platform="linux/amd64") == amd
    with pytest.raises(FormatError, match=f"lists {arm.digest} for linux/arm64/v8, but the layout does not hold"):
        oci.load(layout, tag="multi", platform="linux/arm64")
    with pytest.raises(KeyError, match="platforms: linux/amd64, linux/arm64/v8"):
        oci.load(layout, tag="multi", platform="linux/s390x")


def test_sparse_index_made_by_the_tools(built: Built, tmp_path: Path) -> None:
    """skopeo copies buildah's index alone, then the amd64 image into the same layout: the
    layout skopeo reads the amd64 image of (and not the arm64 one); so do we."""
    need("skopeo")
    t, sparse = built.tools, tmp_path / "sparse"
    t.skopeo("copy", "--quiet", "--multi-arch", "index-only", f"oci:{built.index}:list", f"oci:{sparse}:list")
    t.skopeo("copy", "--quiet", "--multi-arch", "system", "--override-arch", "amd64", "--preserve-digests",
             f"oci:{built.index}:list", f"oci:{sparse}:amd64")
    amd = oci.load(sparse, tag="list", platform="linux/amd64")
    assert amd.digest == oci.load(built.index, tag="list", platform="linux/amd64").digest
    assert amd == oci.load(sparse, tag="amd64")
    with pytest.raises(FormatError, match="linux/arm64/v8, but the layout does not hold that manifest"):
        oci.load(sparse, tag="list", platform="linux/arm64")
    # buildah manifest push without --all writes the index alone (naming the storage's
    # uncompressed manifests): a clear error, whatever the platform.
    t.buildah("manifest", "push", "--quiet", "list", f"oci:{tmp_path / 'alone'}:list")
    with pytest.raises(FormatError, match="linux/amd64, but the layout does not hold that manifest"):
        oci.load(tmp_path / "alone", tag="list", platform="linux/amd64")
