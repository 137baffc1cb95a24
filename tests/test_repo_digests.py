"""Registry.repo_digests: docker image inspect's RepoDigests from the registry's side (issue 15)."""

from __future__ import annotations

import unionfs_sim as ufs


def test_repo_digests_name_every_repository_holding_the_manifest() -> None:
    img = ufs.Image.from_layers([ufs.Layer.from_dict({"a": b"a"})])
    other = ufs.Image.from_layers([ufs.Layer.from_dict({"b": b"b"})])
    reg = ufs.Registry()
    assert reg.repo_digests(img) == []  # built, never pushed: Docker records none either
    reg.push(img, "example.com/team/app:1")
    reg.push(img, "nginx:latest")
    reg.push(other, "example.com/team/other:1")
    assert reg.repo_digests(img) == sorted([f"example.com/team/app@{img.digest}", f"nginx@{img.digest}"])
    assert reg.repo_digests(img.digest) == reg.repo_digests(img)
    assert reg.repo_digests(other) == [f"example.com/team/other@{other.digest}"]
    inspected = img.inspect(repo_tags=["nginx:latest"], repo_digests=reg.repo_digests(img))
    assert inspected["RepoDigests"] == reg.repo_digests(img)


def test_a_loopback_push_is_named_with_the_host_given() -> None:
    img = ufs.Image.from_layers([ufs.Layer.from_dict({"a": b"a"})])
    reg = ufs.Registry()
    reg.push(img, "localhost:5000/team/app:1")  # stored under its path, as the served registry does
    assert reg.repositories() == ["team/app"]
    assert reg.repo_digests(img, host="127.0.0.1:5000") == [f"127.0.0.1:5000/team/app@{img.digest}"]
