"""reg.serve(): the server object, basic auth from htpasswd (bcrypt), TLS, the public-address
guard, a memory registry served, and the CLI's start and clean stop."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")
bcrypt = pytest.importorskip("bcrypt", reason="the serve extra (bcrypt) is not installed")
pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from unionfs_sim.registry import Registry  # noqa: E402
from unionfs_sim.serve import Server  # noqa: E402

from . import daemons  # noqa: E402
from .test_oci import fs_tree, sample_image  # noqa: E402
from .test_serve_conformance import MT_MANIFEST, digest, err_code, push_blob  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def htpasswd(path: Path, user: str, password: str) -> Path:
    # The $2y$ prefix htpasswd -B writes (Apache's name for bcrypt 2b).
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    path.write_text(f"# users\n{user}:{h}\n")
    return path


def test_memory_registry_served_and_read_back() -> None:
    reg = Registry()
    image = sample_image()
    reg.push(image, "localhost/py/app:1")
    with reg.serve() as server:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        s = requests.Session()
        r = s.get(f"{server.url}/v2/py/app/manifests/1")
        assert r.content == image.manifest_bytes and r.headers["Content-Type"] == MT_MANIFEST
        for d in image.layer_descriptors:  # layers pushed as Layer objects are served as their tar
            g = s.get(f"{server.url}/v2/py/app/blobs/{d['digest']}")
            assert digest(g.content) == d["digest"]
            g = s.get(f"{server.url}/v2/py/app/blobs/{d['digest']}", headers={"Range": "bytes=0-99"})
            assert g.status_code == 206 and len(g.content) == 100
        blob = os.urandom(777)
        push_blob(s, server.url, "py/other", blob)
        assert reg.stat_blob("py/other", digest(blob)) == 777
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/v2/", timeout=2)


def test_basic_auth_from_htpasswd(tmp_path: Path) -> None:
    reg = Registry(root=tmp_path / "store")
    with reg.serve(("127.0.0.1", 0), htpasswd=htpasswd(tmp_path / "htpasswd", "alice", "s3cret")) as server:
        r = requests.get(f"{server.url}/v2/")
        assert r.status_code == 401 and err_code(r) == "UNAUTHORIZED"
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
        assert requests.get(f"{server.url}/v2/", auth=("alice", "wrong")).status_code == 401
        assert requests.get(f"{server.url}/v2/", auth=("bob", "s3cret")).status_code == 401
        s = requests.Session()
        s.auth = ("alice", "s3cret")
        assert s.get(f"{server.url}/v2/").status_code == 200
        push_blob(s, server.url, "team/app", b"authorised")
        r = requests.post(f"{server.url}/v2/team/app/blobs/uploads/")
        assert r.status_code == 401


def test_skopeo_with_auth_and_tls(tmp_path: Path) -> None:
    if not (os.path.exists("/usr/bin/openssl") and os.path.exists("/usr/bin/skopeo")):
        pytest.skip("openssl and skopeo are needed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    reg = Registry(root=tmp_path / "store")
    image = sample_image()
    reg.push(image, "localhost/team/app:1")
    with reg.serve(("127.0.0.1", 0), htpasswd=htpasswd(tmp_path / "htpasswd", "alice", "pw"),
                   tls_cert=cert, tls_key=key) as server:
        assert server.url.startswith("https://")
        r = requests.get(f"{server.url}/v2/", auth=("alice", "pw"), verify=str(cert))
        assert r.status_code == 200
        certs = tmp_path / "certs"
        certs.mkdir()
        (certs / "ca.crt").write_bytes(cert.read_bytes())
        out = tmp_path / "out"
        done = subprocess.run(["skopeo", "copy", "--src-cert-dir", str(certs), "--src-creds", "alice:pw",
                               "--preserve-digests", "--dest-oci-accept-uncompressed-layers",
                               f"docker://{server.netloc}/team/app:1", f"oci:{out}:1"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        bad = subprocess.run(["skopeo", "inspect", "--cert-dir", str(certs), "--creds", "alice:nope",
                              f"docker://{server.netloc}/team/app:1"], capture_output=True, text=True, check=False)
        assert bad.returncode != 0 and "unauthorized" in bad.stderr.lower()
    from unionfs_sim.formats import oci

    assert fs_tree(oci.load(out, tag="1").fs) == fs_tree(image.fs)


def test_public_address_needs_auth_or_insecure_public(tmp_path: Path) -> None:
    reg = Registry()
    with pytest.raises(ValueError, match="insecure-public"):
        Server(reg, ("0.0.0.0", 0))
    Server(reg, ("0.0.0.0", 0), insecure_public=True)  # allowed when asked (not started)
    Server(reg, ("::1", 0))
    with pytest.raises(ValueError, match="both"):
        Server(reg, ("127.0.0.1", 0), tls_cert="x")


def test_cli_serves_until_sigterm_and_refuses_public_without_auth(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "unionfs_sim", "serve", "--root", str(tmp_path / "store")]
    r = subprocess.run([*cmd, "--listen", "0.0.0.0:0"], env=env, capture_output=True, check=False, text=True,
                       timeout=60)
    assert r.returncode != 0 and "--insecure-public" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*cmd, "--listen", "nonsense"], env=env, capture_output=True, check=False, text=True, timeout=60)
    assert r.returncode != 0 and "HOST:PORT" in r.stderr and "Traceback" not in r.stderr
    port = daemons.free_port()
    proc = subprocess.Popen([*cmd, "--listen", f"127.0.0.1:{port}"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        blob = b"pushed through the CLI's server"
        push_blob(requests.Session(), f"http://127.0.0.1:{port}", "team/app", blob)
        m = (b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
             b'"digest":"%s","size":%d},"layers":[]}' % (MT_MANIFEST.encode(), digest(blob).encode(), len(blob)))
        r = requests.put(f"http://127.0.0.1:{port}/v2/team/app/manifests/v1", data=m,
                         headers={"Content-Type": MT_MANIFEST})
        assert r.status_code == 201
        # The same store from Python, while the server runs.
        assert Registry(root=tmp_path / "store").resolve("localhost/team/app:v1") == digest(m)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None and "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any((tmp_path / "store" / "_uploads").iterdir())  # the server removed its own upload dir


def test_an_upload_over_the_bound_is_refused_and_rolled_back() -> None:
    reg = Registry()
    with Server(reg, ("127.0.0.1", 0), max_upload=100_000) as server:
        s = requests.Session()
        loc = server.url + s.post(f"{server.url}/v2/team/app/blobs/uploads/").headers["Location"]
        r = s.patch(loc, data=b"a" * 60_000)
        assert r.status_code == 202 and r.headers["Range"] == "0-59999"
        r = s.patch(loc, data=b"b" * 60_000)
        assert r.status_code == 413 and err_code(r) == "SIZE_INVALID"
        r = s.get(loc)
        assert r.status_code == 204 and r.headers["Range"] == "0-59999"  # the refused chunk left nothing
        r = s.put(loc, params={"digest": digest(b"a" * 60_000)})
        assert r.status_code == 201
        assert reg.stat_blob("team/app", digest(b"a" * 60_000)) == 60_000


def test_the_core_needs_no_serve_extra() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('aiohttp', 'bcrypt', 'requests'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import unionfs_sim as ufs, unionfs_sim.registry, unionfs_sim.cli\n"
        "reg = ufs.Registry()\n"
        "reg.push(ufs.Image.from_layers([ufs.Layer.from_dict({'a': b'x'})]), 'localhost/a:1')\n"
        "try:\n"
        "    reg.serve()\n"
        "except ImportError as e:\n"
        "    assert 'unionfs_sim[serve]' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('serve() without aiohttp')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr


def test_a_store_failure_is_a_json_500_and_the_server_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    reg = Registry()

    def full(repo: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with reg.serve() as server:
        monkeypatch.setattr(reg, "start_upload", full)
        r = requests.post(f"{server.url}/v2/team/app/blobs/uploads/")
        assert r.status_code == 500 and err_code(r) == "UNKNOWN" and "No space left" in r.text
        monkeypatch.undo()
        assert requests.post(f"{server.url}/v2/team/app/blobs/uploads/").status_code == 202


def _server_side_of(client: socket.socket) -> socket.socket:
    """The server's end of ``client``'s connection (the server runs in this process)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        with contextlib.suppress(OSError):
            if s.type == socket.SOCK_STREAM and s.getpeername() == client.getsockname():
                return s
        s.close()
    raise AssertionError("no server socket for the connection")


@pytest.mark.skipif(sys.platform != "linux", reason="SIOCOUTQNSD (a socket's unsent bytes) is Linux's")
def test_a_blob_response_keeps_little_unsent_data_queued(tmp_path: Path) -> None:
    # Without TCP_NOTSENT_LOWAT, sendfile(2) queued up to 4 MiB the client had no room for yet,
    # which the kernel then sent from the client's ACK processing (benchmarks/README.md).
    reg = Registry(root=tmp_path / "store")
    blob = os.urandom(24 << 20)
    with reg.serve() as server:
        d = push_blob(requests.Session(), server.url, "team/app", blob)
        client = socket.create_connection(("127.0.0.1", server.port))
        with client:
            client.sendall(f"GET /v2/team/app/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got = client.recv(4 << 20)  # some bytes, so the send side's window and buffer grow
            ours = _server_side_of(client)
            with ours:
                unsent, deadline = [], time.monotonic() + 10
                while time.monotonic() < deadline and (len(unsent) < 5 or unsent[-1] != unsent[-5]):
                    time.sleep(0.05)  # the client reads nothing now: the server fills what it may
                    buf = fcntl.ioctl(ours.fileno(), 0x894B, b"\0" * 4)  # SIOCOUTQNSD
                    unsent.append(struct.unpack("i", buf)[0])
            assert 0 < max(unsent) <= 256 << 10, unsent
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            while len(body) < len(blob):  # and then the whole blob arrives intact
                chunk = client.recv(1 << 20)
                assert chunk
                body += chunk
            assert body == blob
