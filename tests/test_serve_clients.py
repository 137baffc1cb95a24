"""Real clients push to ``Registry.serve()`` and pull from it: skopeo, podman, docker.

What they push is what Python reads (``reg.pull``) and the other way round, since the
server and the model share one store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

import unionfs_sim as ufs
from unionfs_sim.registry import Registry
from unionfs_sim.serve import Server

from . import daemons
from .test_oci import fs_tree, sample_image


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Registry, Server]]:
    reg = Registry(root=tmp_path / "store")
    with reg.serve(("127.0.0.1", 0)) as server:
        yield reg, server


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, check=False, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}"
    return r


def layout_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "blobs" / "sha256").iterdir()}


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_skopeo_copies_a_layout_in_and_out_byte_identical(served: tuple[Registry, Server], tmp_path: Path,
                                                          compression: str | None) -> None:
    need("skopeo")
    reg, server = served
    image = sample_image()
    ufs.oci.save(image, tmp_path / "in", tag="1", compression=compression)
    src = ufs.oci.load(tmp_path / "in", tag="1")
    ref = f"{server.netloc}/team/app:1"
    run("skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{tmp_path}/in:1", f"docker://{ref}")
    # Python sees what skopeo pushed, with the same digests.
    assert reg.resolve(ref) == src.digest
    pulled = reg.pull(ref)
    assert pulled.id == src.id and fs_tree(pulled.fs) == fs_tree(image.fs)
    run("skopeo", "copy", "--preserve-digests", "--dest-oci-accept-uncompressed-layers", "--src-tls-verify=false",
        f"docker://{ref}", f"oci:{tmp_path}/out:1")
    assert layout_files(tmp_path / "out") == layout_files(tmp_path / "in")
    out = json.loads(run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout)
    assert out == json.loads(src.manifest_bytes)


def test_skopeo_pulls_what_python_pushed(served: tuple[Registry, Server], tmp_path: Path) -> None:
    need("skopeo")
    reg, server = served
    image = sample_image()
    reg.push(image, f"{server.netloc}/py/app:v1")
    run("skopeo", "copy", "--preserve-digests", "--dest-oci-accept-uncompressed-layers", "--src-tls-verify=false",
        f"docker://{server.netloc}/py/app:v1", f"oci:{tmp_path}/out:v1")
    back = ufs.oci.load(tmp_path / "out", tag="v1")
    assert back.digest == image.digest and fs_tree(back.fs) == fs_tree(image.fs)
    tags = json.loads(run("skopeo", "list-tags", "--tls-verify=false", f"docker://{server.netloc}/py/app").stdout)
    assert tags["Tags"] == ["v1"]


def test_podman_push_and_pull(served: tuple[Registry, Server], tmp_path: Path) -> None:
    need("podman")
    if os.geteuid() != 0:
        pytest.skip("podman with a private store here runs as root")
    reg, server = served
    image = sample_image()
    reg.push(image, f"{server.netloc}/py/app:v1")
    short = tempfile.mkdtemp(prefix="ufs-pm-")  # podman wants a runroot under 50 characters
    store = ["--root", f"{short}/root", "--runroot", f"{short}/run", "--storage-driver", "vfs",
             "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
    try:
        run("podman", *store, "pull", "--tls-verify=false", f"{server.netloc}/py/app:v1")
        run("podman", *store, "tag", f"{server.netloc}/py/app:v1", f"{server.netloc}/podman/copy:2")
        run("podman", *store, "push", "--tls-verify=false", f"{server.netloc}/podman/copy:2")
    finally:
        subprocess.run(["podman", *store, "system", "reset", "--force"], capture_output=True, check=False, timeout=120)
        subprocess.run(["umount", "-R", "-l", short], capture_output=True, check=False)
        shutil.rmtree(short, ignore_errors=True)
    copy = reg.pull(f"{server.netloc}/podman/copy:2")
    assert fs_tree(copy.fs) == fs_tree(image.fs)
    assert copy.diff_ids == image.diff_ids


def test_docker_push_pull_run_with_base_layers_stored_once(docker: daemons.Docker, served: tuple[Registry, Server],
                                                           tmp_path: Path) -> None:
    reg, server = served
    a, b = f"{server.netloc}/team/one:1", f"{server.netloc}/team/two:1"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {docker.base}\nRUN echo pushed-by-docker > /hello\n")
    docker.run("build", "-t", a, str(ctx), env={"DOCKER_BUILDKIT": "0"})
    docker.run("tag", docker.base, b)
    docker.run("push", a)
    docker.run("push", b)
    # The busybox layer is in both repositories and stored once.
    one, two = reg.pull(a), reg.pull(b)
    assert one.diff_ids[0] == two.diff_ids[0]
    layer_digests = [d["digest"] for d in one.layer_descriptors] + [d["digest"] for d in two.layer_descriptors]
    assert len(set(layer_digests)) == 2
    assert set(layer_digests) <= set(reg.blobs)
    assert one.fs.read_bytes("/hello") == b"pushed-by-docker\n"
    # RepoDigests as Docker records them after its pushes, from the registry's side.
    inspected = json.loads(docker.text("image", "inspect", a))[0]
    assert reg.repo_digests(one, host=server.netloc) == sorted(inspected["RepoDigests"])
    docker.run("rmi", a, b)
    docker.run("pull", a)
    out = docker.text("run", "--rm", "--network", "none", a, "cat", "/hello")
    assert out == "pushed-by-docker\n"
    pulled = json.loads(docker.text("image", "inspect", a))[0]
    assert reg.repo_digests(one, host=server.netloc) == pulled["RepoDigests"]
    docker.run("rmi", a)


def test_docker_login_and_push_with_basic_auth(docker: daemons.Docker, tmp_path: Path) -> None:
    bcrypt = pytest.importorskip("bcrypt")
    users = tmp_path / "htpasswd"
    users.write_text("ci:" + bcrypt.hashpw(b"letmein", bcrypt.gensalt(rounds=4)).decode() + "\n")
    reg = Registry(root=tmp_path / "store")
    with reg.serve(("127.0.0.1", 0), htpasswd=users) as server:
        ref = f"{server.netloc}/private/busybox:1"
        docker.run("tag", docker.base, ref)
        denied = docker.run("push", ref, check=False)
        assert denied.returncode != 0 and b"no basic auth credentials" in denied.stderr
        bad = docker.run("login", "-u", "ci", "--password-stdin", server.netloc, input=b"wrong", check=False)
        assert bad.returncode != 0
        docker.run("login", "-u", "ci", "--password-stdin", server.netloc, input=b"letmein")
        try:
            docker.run("push", ref)
        finally:
            docker.run("logout", server.netloc)
            docker.run("rmi", ref)
        assert reg.pull(ref).fs.read_bytes("/etc/group").startswith(b"root:x:0:")
