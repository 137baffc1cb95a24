"""The peers the oracle tests lean on start, answer and hold what we give them."""

from __future__ import annotations

import json
import urllib.request

from . import daemons


def test_docker_runs_the_busybox_base(docker: daemons.Docker) -> None:
    out = docker.text("run", "--rm", "--network", "none", docker.base, "sh", "-c", "echo hi; ls /bin/busybox")
    assert out.split() == ["hi", "/bin/busybox"]
    info = json.loads(docker.text("image", "inspect", docker.base))
    assert len(info[0]["RootFS"]["Layers"]) == 1


def test_docker_registry_answers_the_v2_api(docker_registry: daemons.Registry) -> None:
    with urllib.request.urlopen(f"{docker_registry.url}/v2/", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
