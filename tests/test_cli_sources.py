"""Images named the skopeo way on the command line (``oci:``, ``docker-archive:``, ``dir:``)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

import unionfs_sim as ufs
from unionfs_sim.cli.sources import Source, load_image, parse_source


@pytest.fixture
def image() -> ufs.Image:
    layer = ufs.Layer.from_dict({"etc/": ufs.Dir(), "etc/hostname": b"box\n"})
    return ufs.Image.from_layers([layer], config=ufs.ImageConfig(cmd=["sh"]))


def test_transports_and_tags(tmp_path: Path) -> None:
    assert parse_source("oci:/x/layout:1.0") == Source("oci", "/x/layout", "1.0")
    assert parse_source("oci:/x/layout") == Source("oci", "/x/layout", None)
    assert parse_source("oci:/x/layout", tag="2") == Source("oci", "/x/layout", "2")
    want = Source("docker-archive", "img.tar", "busybox:latest")
    assert parse_source("docker-archive:img.tar:busybox:latest") == want
    assert parse_source("dir:/srv/tree") == Source("dir", "/srv/tree")
    assert str(parse_source("oci:l:1")) == "oci:l:1"


def test_bare_paths_keep_their_old_meaning(tmp_path: Path, image: ufs.Image) -> None:
    ufs.oci.save(image, tmp_path / "layout", tag="1")
    (tmp_path / "tree").mkdir()
    assert parse_source(str(tmp_path / "layout")).transport == "oci"
    assert parse_source(str(tmp_path / "tree")).transport == "dir"
    assert parse_source(str(tmp_path / "img.tar")).transport == "docker-archive"


@pytest.mark.parametrize("bad, words", [
    ("oci:", "no path"),
    ("ftp:/x", "unknown transport 'ftp'"),
    ("dir:/x:1", "not a plain directory"),
])
def test_bad_names_say_what_is_wrong(bad: str, words: str) -> None:
    with pytest.raises(click.BadParameter, match=words):
        parse_source(bad)
    with pytest.raises(click.BadParameter, match="--tag says"):
        parse_source("oci:l:1", tag="2")


def test_each_transport_loads_the_same_image(tmp_path: Path, image: ufs.Image) -> None:
    ufs.oci.save(image, tmp_path / "layout", tag="1.0")
    ufs.docker_archive.save(image, tmp_path / "img.tar", tags=["example.com/app:1.0"])
    (tmp_path / "tree" / "etc").mkdir(parents=True)
    (tmp_path / "tree" / "etc" / "hostname").write_bytes(b"box\n")
    assert load_image(f"oci:{tmp_path}/layout:1.0").digest == image.digest
    assert load_image(f"docker-archive:{tmp_path}/img.tar:example.com/app:1.0").id == image.id
    assert load_image(f"dir:{tmp_path}/tree").fs.read_bytes("/etc/hostname") == b"box\n"
    with pytest.raises(LookupError, match="nope"):
        load_image(f"oci:{tmp_path}/layout:nope")
    with pytest.raises(NotADirectoryError):
        load_image(f"dir:{tmp_path}/img.tar")
