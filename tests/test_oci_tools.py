"""Our OCI layouts and docker archives against real tools: umoci and skopeo.

Each test skips (saying why) when its tool is not installed; CI installs both
(``apt-get install -y umoci skopeo``). The umoci comparisons also need root (umoci
restores owners and device nodes only then); the skopeo ones do not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from unionfs_sim.formats import docker_archive, oci
from unionfs_sim.image import Image
from unionfs_sim.layer import Layer
from unionfs_sim.nodes import Dir, File, Symlink

from .test_oci import dir_tree, fs_tree, sample_image


def need(tool: str) -> str:
    """The path of ``tool``, or skip the test saying it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install -y {tool})")
    return path


def run(*cmd: str | os.PathLike[str]) -> str:
    """Run ``cmd``; its stdout, or fail showing its stderr."""
    p = subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr}"
    return p.stdout


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """``umoci unpack`` the image ``tag``; the rootfs directory."""
    umoci = need("umoci")
    if os.geteuid() != 0:
        pytest.skip("umoci restores owners and device nodes only as root; this comparison needs them")
    run(umoci, "unpack", "--image", f"{layout}:{tag}", bundle)
    return bundle / "rootfs"


def index_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_bytes())
    return next(d["digest"] for d in index["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)


# --- umoci reads what we write ---------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_umoci_unpacks_our_layout_to_our_merged_view(tmp_path: Path, compression: str | None) -> None:
    img = sample_image()
    layout = tmp_path / "layout"
    oci.save(img, layout, tag="1.0", compression=compression)
    rootfs = umoci_unpack(layout, "1.0", tmp_path / "bundle")
    assert dir_tree(rootfs) == fs_tree(img.fs)
    # Hard links stay hard links; xattrs arrive too.
    assert os.lstat(rootfs / "bin/ash").st_ino == os.lstat(rootfs / "bin/busybox").st_ino
    assert os.getxattr(rootfs / "opt/x", "user.comment") == b"hello"


def test_umoci_reads_a_layout_we_added_to(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    one, two = sample_image(), sample_image(Layer.from_dict({"etc/": Dir(mode=0o711), "etc/extra": b"2"}))
    oci.save(one, layout, tag="one")
    oci.save(two, layout, tag="two")
    assert dir_tree(umoci_unpack(layout, "one", tmp_path / "b1")) == fs_tree(one.fs)
    assert dir_tree(umoci_unpack(layout, "two", tmp_path / "b2")) == fs_tree(two.fs)


# --- skopeo copies what we write, we read what it copies ----------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_skopeo_copy_keeps_our_image(tmp_path: Path, compression: str | None) -> None:
    skopeo = need("skopeo")
    img = sample_image()
    digest = oci.save(img, tmp_path / "src", tag="1.0", compression=compression)
    src = f"oci:{tmp_path / 'src'}:1.0"
    # Exact copy: the same manifest, so the same image digest.
    run(skopeo, "--insecure-policy", "copy", "--preserve-digests", src, f"oci:{tmp_path / 'exact'}:1.0")
    exact = oci.load(tmp_path / "exact", tag="1.0")
    assert exact.digest == digest == index_digest(tmp_path / "exact", "1.0")
    assert exact.id == img.id and fs_tree(exact.fs) == fs_tree(img.fs)
    # A plain copy: skopeo gzips uncompressed layers for an OCI destination (a new
    # manifest), but keeps the config, the diff_ids and of course the tree.
    run(skopeo, "--insecure-policy", "copy", src, f"oci:{tmp_path / 'dst'}:1.0")
    got = oci.load(tmp_path / "dst", tag="1.0")
    assert got.digest == index_digest(tmp_path / "dst", "1.0")
    if compression == "gzip":
        assert got.digest == digest  # already compressed: copied as it is
    assert got.id == img.id and got.diff_ids == img.diff_ids
    assert fs_tree(got.fs) == fs_tree(img.fs)


def test_skopeo_reads_our_docker_archive_and_writes_one_we_read(tmp_path: Path) -> None:
    skopeo = need("skopeo")
    img = sample_image()
    docker_archive.save(img, tmp_path / "ours.tar", tags=["example.com/app:1.0"])
    run(skopeo, "--insecure-policy", "copy", f"docker-archive:{tmp_path / 'ours.tar'}", f"oci:{tmp_path / 'l'}:x")
    via_skopeo = oci.load(tmp_path / "l", tag="x")
    assert via_skopeo.id == img.id and via_skopeo.diff_ids == img.diff_ids
    assert fs_tree(via_skopeo.fs) == fs_tree(img.fs)
    # skopeo's own docker-archive writer (layers as <hex>.tar, config as <hex>.json).
    run(skopeo, "--insecure-policy", "copy", f"oci:{tmp_path / 'l'}:x",
        f"docker-archive:{tmp_path / 'theirs.tar'}:example.com/app:2.0")
    theirs = docker_archive.load(tmp_path / "theirs.tar", tag="example.com/app:2.0")
    assert theirs.id == img.id and theirs.diff_ids == img.diff_ids
    assert fs_tree(theirs.fs) == fs_tree(img.fs)


# --- we read what umoci builds -------------------------------------------------------------------


def test_images_built_by_umoci(tmp_path: Path) -> None:
    umoci = need("umoci")
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    run(umoci, "init", "--layout", layout)
    run(umoci, "new", "--image", f"{layout}:base")
    rootfs = umoci_unpack(layout, "base", bundle)
    (rootfs / "etc").mkdir(mode=0o755)
    (rootfs / "etc/hostname").write_bytes(b"box\n")
    (rootfs / "etc/motd").write_bytes(b"hello\n")
    (rootfs / "etc/link").symlink_to("hostname")
    (rootfs / "var/lib/data").mkdir(parents=True)
    (rootfs / "var/lib/data/a").write_bytes(b"a" * 5000)
    (rootfs / "var/lib/data/b").write_bytes(b"b")
    os.link(rootfs / "var/lib/data/a", rootfs / "var/lib/data/a2")
    (rootfs / "srv").mkdir(mode=0o750)
    os.chown(rootfs / "srv", 33, 33)
    os.mkfifo(rootfs / "srv/fifo", 0o600)
    os.mknod(rootfs / "srv/null", 0o666 | 0o020000, os.makedev(1, 3))
    os.setxattr(rootfs / "etc/hostname", "user.note", b"x")
    run(umoci, "repack", "--image", f"{layout}:v1", bundle)
    shutil.rmtree(bundle)

    rootfs = umoci_unpack(layout, "v1", bundle)
    (rootfs / "etc/motd").unlink()                     # a whiteout
    shutil.rmtree(rootfs / "var/lib/data")             # a whited-out directory ...
    (rootfs / "var/lib/data").mkdir()                  # ... recreated (opaque or whiteouts)
    (rootfs / "var/lib/data/c").write_bytes(b"c")
    (rootfs / "etc/hostname").write_bytes(b"web1\n")   # a modification
    os.chmod(rootfs / "srv", 0o700)                    # a metadata-only change
    run(umoci, "repack", "--image", f"{layout}:v2", bundle)
    shutil.rmtree(bundle)

    for tag in ("v1", "v2"):
        img = oci.load(layout, tag=tag)
        assert img.digest == index_digest(layout, tag)
        manifest = json.loads((layout / "blobs/sha256" / img.digest[7:]).read_bytes())
        assert img.id == manifest["config"]["digest"]
        config = json.loads((layout / "blobs/sha256" / img.id[7:]).read_bytes())
        assert img.diff_ids == config["rootfs"]["diff_ids"]
        expected = umoci_unpack(layout, tag, tmp_path / f"check-{tag}")
        assert fs_tree(img.fs) == dir_tree(expected)
        assert img.fs.getxattr("/etc/hostname", "user.note") == b"x"

    # The model builds on umoci's image, and umoci reads the result back.
    v2 = oci.load(layout, tag="v2")
    child = v2.with_layer(Layer.from_dict({"etc/hostname": File(b"child\n"), "etc/link": Symlink("motd")}))
    oci.save(child, layout, tag="child")
    assert dir_tree(umoci_unpack(layout, "child", tmp_path / "child")) == fs_tree(child.fs)
    assert isinstance(child, Image)
