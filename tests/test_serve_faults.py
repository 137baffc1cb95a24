"""Faults: the server SIGKILLed mid-upload and mid-manifest-PUT, then restarted on the same
root; and bad requests, each answered with its error code and leaving the store unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from unionfs_sim.registry import Registry  # noqa: E402

from . import daemons  # noqa: E402
from .test_oci import fs_tree, sample_image  # noqa: E402
from .test_serve_conformance import MT_MANIFEST, digest, err_code, image_manifest, push_blob, raw  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class Proc:
    """``unionfs-sim serve`` as a process of its own (so it can be SIGKILLed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = daemons.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "unionfs_sim", "serve", "--root", str(root),
                                      "--listen", f"127.0.0.1:{self.port}"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read() if self.proc.stderr else b""
                    raise AssertionError(f"the server did not start: {err!r}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        assert self.proc.returncode in (0, -signal.SIGKILL), self.proc.stderr.read() if self.proc.stderr else ""


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "store"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the store but the uploads in flight and the lock file."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in ("_uploads",) and rel.name != ".lock":
            out[str(rel)] = p.read_bytes()
    return out


def assert_content_addressed(root: Path) -> None:
    """Every blob and manifest file hashes to its name: nothing partial is visible."""
    for sub in ("blobs", "manifests"):
        for p in (root / sub / "sha256").iterdir():
            if not p.name.startswith("."):
                assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name, p


def test_sigkill_during_a_chunked_upload_and_restart(root: Path) -> None:
    image = sample_image()
    Registry(root=root).push(image, "localhost/team/app:1")
    srv = Proc(root)
    big = os.urandom(20 << 20)
    big_digest = digest(big)
    try:
        s = requests.Session()
        r = s.post(f"{srv.url}/v2/team/app/blobs/uploads/")
        loc = srv.url + r.headers["Location"]
        r = s.patch(loc, data=big[:4 << 20], headers={"Content-Range": f"0-{(4 << 20) - 1}"})
        assert r.status_code == 202

        def body() -> Iterator[bytes]:
            for i in range(4 << 20, len(big), 1 << 20):
                if i >= 12 << 20:
                    srv.kill()  # mid-body: 8 MiB of this chunk sent
                    time.sleep(0.2)
                yield big[i:i + (1 << 20)]

        with pytest.raises(requests.ConnectionError):
            s.patch(loc, data=body())
        assert any((root / "_uploads").rglob("upload-*"))  # the dead process's upload is on disk ...
    finally:
        srv.kill() if srv.proc.poll() is None else None
    srv = Proc(root)
    try:
        assert not any((root / "_uploads").rglob("upload-*"))  # ... and gone once a server opens the root
        s = requests.Session()
        r = s.get(f"{srv.url}/v2/team/app/manifests/1")
        assert r.status_code == 200 and r.content == image.manifest_bytes
        assert r.headers["Docker-Content-Digest"] == image.digest
        for d in image.layer_descriptors:
            g = s.get(f"{srv.url}/v2/team/app/blobs/{d['digest']}")
            assert g.status_code == 200 and digest(g.content) == d["digest"]
        h = s.head(f"{srv.url}/v2/team/app/blobs/{big_digest}")
        assert h.status_code == 404
        r = s.get(f"{srv.url}/v2/team/app/blobs/uploads/{loc.rsplit('/', 1)[1]}")
        assert r.status_code == 404 and err_code(r) == "BLOB_UPLOAD_UNKNOWN"
        assert_content_addressed(root)
        # A fresh push of the same blob works.
        push_blob(s, srv.url, "team/app", big)
        h = s.head(f"{srv.url}/v2/team/app/blobs/{big_digest}")
        assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(big)
    finally:
        srv.stop()
    assert Registry(root=root).pull("localhost/team/app:1").digest == image.digest


def test_sigkill_during_manifest_puts_leaves_a_consistent_store(root: Path) -> None:
    """Kill the server at random moments while a client PUTs manifests and moves tags; after
    each restart every tag names a stored manifest whose blobs are all there."""
    rnd = random.Random(7)
    srv = Proc(root)
    s = requests.Session()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    push_blob(s, srv.url, "team/app", config)
    layers = [os.urandom(2000) for _ in range(3)]
    for x in layers:
        push_blob(s, srv.url, "team/app", x)
    done: list[str] = []
    # Killed with half a manifest received: after the restart it is not there.
    half = image_manifest(config, layers[:1], annotations={"half": "sent"})
    with socket.create_connection(("127.0.0.1", srv.port)) as c:
        c.sendall(f"PUT /v2/team/app/manifests/half HTTP/1.1\r\nHost: x\r\nContent-Type: {MT_MANIFEST}\r\n"
                  f"Content-Length: {len(half)}\r\n\r\n".encode() + half[: len(half) // 2])
        time.sleep(0.2)
        srv.kill()
    srv = Proc(root)
    assert s.get(f"{srv.url}/v2/team/app/manifests/half").status_code == 404
    assert s.get(f"{srv.url}/v2/team/app/manifests/{digest(half)}").status_code == 404
    try:
        for round_ in range(2):
            stop = threading.Event()

            def pusher(url: str, stop: threading.Event = stop, round_: int = round_) -> None:
                i = 0
                with requests.Session() as c:
                    while not stop.is_set():
                        m = image_manifest(config, layers[: 1 + i % 3], annotations={"n": f"{round_}-{i}"})
                        try:
                            r = c.put(f"{url}/v2/team/app/manifests/t{i % 5}", data=m,
                                      headers={"Content-Type": MT_MANIFEST})
                        except requests.ConnectionError:
                            return
                        if r.status_code == 201:
                            done.append(digest(m))
                        i += 1

            t = threading.Thread(target=pusher, args=(srv.url,))
            t.start()
            time.sleep(0.2 + rnd.random() * 0.3)
            srv.kill()
            stop.set()
            t.join(30)
            srv = Proc(root)
            reg = Registry(root=root)
            tags = reg.tags("localhost/team/app")
            assert tags, "no tag survived"
            for tag in tags:
                d = reg.resolve(f"localhost/team/app:{tag}")
                data, _, got = reg.get_manifest("team/app", d)
                assert digest(data) == d == got
                for b in json.loads(data)["layers"] + [json.loads(data)["config"]]:
                    assert reg.stat_blob("team/app", b["digest"]) == b["size"]
            for d in done:  # every acknowledged PUT is there
                assert reg.get_manifest("team/app", d)[2] == d
            assert_content_addressed(root)
    finally:
        srv.stop()
    assert len(done) > 2


def test_bad_requests_leave_the_store_unchanged(root: Path) -> None:
    image = sample_image()
    reg = Registry(root=root)
    reg.push(image, "localhost/team/app:1")
    before = snapshot(root)
    with reg.serve(("127.0.0.1", 0)) as server:
        url, s = server.url, requests.Session()
        config = image.config_bytes
        # A wrong digest, single POST and closing PUT.
        r = s.post(f"{url}/v2/team/app/blobs/uploads/", params={"digest": digest(b"x")}, data=b"not x")
        assert r.status_code == 400 and err_code(r) == "DIGEST_INVALID"
        r = s.post(f"{url}/v2/team/app/blobs/uploads/", params={"digest": "sha256:../../etc"}, data=b"x")
        assert r.status_code == 400 and err_code(r) == "DIGEST_INVALID"
        # Names outside the grammar and traversal attempts, sent raw.
        for path in ("/v2/../../etc/blobs/uploads/", "/v2/team/../../x/blobs/uploads/", "/v2/Team/App/blobs/uploads/",
                     "/v2/team//app/blobs/uploads/", "/v2/team/%2e%2e/app/blobs/uploads/",
                     f"/v2/{'a' * 256}/blobs/uploads/",
                     "/v2/team/app/_layers/blobs/uploads/"):
            r = raw(url, "POST", path)
            assert r.status_code == 400 and err_code(r) == "NAME_INVALID", (path, r.status_code, r.text)
        r = raw(url, "GET", f"/v2/team/app/blobs/sha256:..%2f..%2f{'0' * 58}")
        assert r.status_code == 400 and err_code(r) == "DIGEST_INVALID"
        r = raw(url, "GET", "/v2/team/app/manifests/..")
        assert r.status_code == 400 and err_code(r) == "TAG_INVALID"
        # Malformed, oversized and incomplete manifests.
        for body, status, code in ((b"{", 400, "MANIFEST_INVALID"), (b"[]", 400, "MANIFEST_INVALID"),
                                   (b" " * ((4 << 20) + 1), 413, "MANIFEST_INVALID"),
                                   (image_manifest(config, [b"missing"]), 400, "MANIFEST_BLOB_UNKNOWN"),
                                   (image_manifest(b"missing", []), 400, "MANIFEST_BLOB_UNKNOWN")):
            r = s.put(f"{url}/v2/team/app/manifests/bad", data=body, headers={"Content-Type": MT_MANIFEST})
            assert (r.status_code, err_code(r)) == (status, code)
        # A Content-Length that lies: announces more than is sent, then the client hangs up.
        up = s.post(f"{url}/v2/team/app/blobs/uploads/").headers["Location"]
        with socket.create_connection((server.host, server.port)) as c:
            c.sendall(f"PATCH {up} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b"y" * 400)
            c.shutdown(socket.SHUT_WR)
            c.recv(1000)
        r = s.get(url + up)
        assert r.status_code == 204 and r.headers["Range"] == "0-0"  # the half chunk was rolled back
        # ... and announces less than is sent: the upload takes the announced bytes, the digest check fails.
        with socket.create_connection((server.host, server.port)) as c:
            c.sendall(f"PATCH {up} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n".encode() + b"z" * 20)
            c.recv(1000)
        r = s.put(url + up, params={"digest": digest(b"z" * 20)})
        assert r.status_code == 400 and err_code(r) == "DIGEST_INVALID"
        assert reg.pull("localhost/team/app:1") is not None
    assert snapshot(root) == before
    assert fs_tree(Registry(root=root).pull("localhost/team/app:1").fs) == fs_tree(image.fs)


def test_gc_on_disk_spares_blobs_of_a_push_in_flight(root: Path) -> None:
    reg = Registry(root=root)
    image = sample_image()
    reg.push(image, "localhost/team/app:1")
    with reg.serve(("127.0.0.1", 0)) as server:
        s = requests.Session()
        fresh = os.urandom(5000)
        d = push_blob(s, server.url, "team/app", fresh)
        assert reg.gc() == []  # uploaded, no manifest yet: kept within the grace
        m = image_manifest(image.config_bytes, [fresh])
        r = s.put(f"{server.url}/v2/team/app/manifests/2", data=m, headers={"Content-Type": MT_MANIFEST})
        assert r.status_code == 201
        reg.delete("localhost/team/app:2")
        reg.delete(f"localhost/team/app@{digest(m)}")
        assert reg.gc() == [d]  # referenced once, then deleted: no grace any more
        assert s.head(f"{server.url}/v2/team/app/blobs/{d}").status_code == 404
        orphan = push_blob(s, server.url, "team/app", b"never referenced")
        assert reg.gc(grace=0) == [orphan]
    assert Registry(root=root).pull("localhost/team/app:1").digest == image.digest
