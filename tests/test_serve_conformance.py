"""A pytest port of the distribution-spec v1.1 conformance workflows (conformance/0*_test.go at
v1.1.1: pull, push, content discovery, content management), run in the same session against
ours (``Registry(root=...).serve()``) and Debian's docker-registry (distribution 2.8.2).

Every check has an id. For 2.8.2 a check listed in :data:`DIFFERENCES` must *fail* (the
reason says why 2.8.2 departs from the spec); every other check must pass on both. So a
difference is either fixed on our side or documented here, and a 2.8.2 that starts to pass
turns the test red until the entry goes.

Requirement (spec.md v1.1)                                              check id
--------------------------------------------------------------------------------------------------
MUST  GET /v2/ answers 200 (end-1)                                     base
MUST  manifests by tag and digest: 200, body, Content-Type (end-3)     pull-manifest-tag, -digest
MUST  Docker-Content-Digest on manifest GET/HEAD                       pull-manifest-digest-header
MUST  HEAD manifest 200 with Content-Length, no body                   pull-manifest-head
MUST  unknown manifest 404 (MANIFEST_UNKNOWN), GET and HEAD            pull-manifest-404
MUST  error bodies: {"errors": [{"code", ...}]} with the spec's codes   error-json
MUST  blobs GET 200 with the bytes, HEAD with Content-Length (end-2)   pull-blob, pull-blob-head
MUST  unknown blob 404 (BLOB_UNKNOWN), GET and HEAD                    pull-blob-404
SHOULD Range requests on blobs: 206                                     pull-blob-range
MUST  POST uploads 202 + Location (end-4a)                              push-post-session
MUST  PATCH streamed body 202 (end-5); PUT ?digest 201 + Location (end-6)   push-streamed
MUST  single POST ?digest= 201 or 202 (end-4b)                          push-monolithic-post
MUST  POST then PUT with body 201 (end-4a, end-6)                       push-monolithic-put
MUST  chunk out of order 416 (end-5)                                    push-chunk-out-of-order
MUST  chunk 202 with Range 0-(n-1)                                      push-chunk-first
MUST  a chunk repeated at an old offset 416                             push-chunk-retry
MUST  GET upload status 204, Location, Range (end-13)                   push-upload-status
MUST  last chunk, PUT ?digest 201                                       push-chunk-close
MUST  body in Transfer-Encoding: chunked (as docker sends)             push-chunked-encoding
MUST  digest that does not match 400 DIGEST_INVALID                     push-digest-invalid
MUST  cross-repo mount 201 + Location of the blob (end-11)             push-mount
MUST  mount of an unknown blob / without from: 202 + session          push-mount-fallback
MUST  PUT manifest 201 + Location (end-7); manifest without layers    push-manifest, push-manifest-empty
MUST  PUT manifest by digest (end-7), Docker-Content-Digest            push-manifest-by-digest
MUST  a digest reference that is not the content's digest: 400         push-manifest-digest-mismatch
MUST  malformed manifest 400 MANIFEST_INVALID                           push-manifest-invalid
      a descriptor whose size is not its blob's: MANIFEST_INVALID        push-manifest-wrong-size
MUST  manifest naming a missing blob: MANIFEST_BLOB_UNKNOWN             push-manifest-blob-unknown-*
MUST  repository names of the grammar, else NAME_INVALID                push-name-invalid-*
SHOULD manifests over the size limit 413                                 push-manifest-too-big
MUST  tags list 200 (end-8a), n (end-8b), last, lexical order          tags-list, tags-n, tags-last, tags-order
SHOULD Link header when more tags remain                                 tags-link
MUST  referrers 200 with an empty index for an unknown subject (end-12a)   referrers-empty
MUST  referrers list every manifest with that subject, annotations     referrers-list
SHOULD artifactType filter with OCI-Filters-Applied (end-12b)           referrers-filter
MUST  OCI-Subject on a PUT of a manifest with a subject                  referrers-subject-header
MUST  referrers of a subject not pushed yet                              referrers-missing-subject
MUST  DELETE tag 202 (or 400/405 when unsupported) (end-9)              delete-tag
MUST  DELETE manifest 202, then 404, tags list without it (end-9)     delete-manifest
MUST  DELETE blob 202, then 404 (end-10)                                 delete-blob
      catalog with n/last (distribution's extension, not in the spec)   catalog
"""

from __future__ import annotations

import hashlib
import http.client as httpclient
import json
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from unionfs_sim.registry import Registry  # noqa: E402

from . import daemons  # noqa: E402

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"

#: Checks 2.8.2 fails, and why it departs from the spec (each is asserted to fail on 2.8.2).
DIFFERENCES: dict[str, str] = {
    "referrers-empty": "2.8.2 predates distribution-spec v1.1: no referrers API (404 on /referrers/)",
    "referrers-list": "no referrers API",
    "referrers-filter": "no referrers API",
    "referrers-missing-subject": "no referrers API",
    "referrers-subject-header": "2.8.2 does not answer OCI-Subject (v1.1)",
    "push-chunk-out-of-order": "2.8.2 takes a first chunk with Content-Range 2000-4999 on an empty upload "
                               "(202) and stores it at offset 0; the spec wants 416",
    "tags-order": "2.8.2 lists tags in the storage driver's directory order (readdir), not lexically "
                  "(spec: 'in lexical order')",
    "push-upload-status": "2.8.2 signs the upload's state into its Location (_state=...); a status request "
                          "with the Location of an earlier response is 404 BLOB_UPLOAD_UNKNOWN, the spec "
                          "wants 204 with the current Range",
    "tags-n": "2.8.2 ignores n and last on /tags/list (pagination of tags came with distribution 3.0)",
    "tags-last": "2.8.2 ignores last on /tags/list",
    "tags-link": "2.8.2 sends no Link header on /tags/list",
    "push-name-invalid-long": "2.8.2 answers a 256-character name with 500 UNKNOWN (the name fails its "
                              "reference parser after routing), not 400 NAME_INVALID",
    "error-json": "2.8.2 takes `manifests/sha256:totallywrong` for a tag and fails in its storage driver: "
                  "UNKNOWN (a 5xx) with its storage path in the detail, not 400 with a spec code or 404",
    "push-manifest-wrong-size": "2.8.2 checks that a manifest's blobs exist, not their sizes (ocischema's "
                                "verifyManifest stats for existence): it stores a manifest every client "
                                "will fail to verify",
    "push-chunk-retry": "2.8.2 accepts a chunk repeated at an old offset with 202 and appends it "
                        "(registry/handlers/blobupload.go checks only the Content-Range start against 0 on a "
                        "fresh upload), so the blob would be corrupt; the spec wants 416",
    "push-name-invalid-dotdot": "2.8.2 (Go's http.ServeMux path cleaning) answers 301 with Location "
                                "/v2/errors/...: a dot segment redirects into another repository, where the spec "
                                "wants 400 NAME_INVALID",
    "push-name-invalid-double-slash": "2.8.2 redirects '/v2/a//b/...' to the cleaned path (301) instead of "
                                      "400 NAME_INVALID",
    "push-name-invalid-upper": "2.8.2's router does not match uppercase names: a plain-text '404 page not "
                               "found' instead of 400 NAME_INVALID",
    "push-manifest-too-big": "2.8.2 answers 400 MANIFEST_INVALID for a manifest over 4 MiB; the spec says "
                             "413 Payload Too Large",
}


#: The error codes of spec.md's table.
SPEC_CODES = {"BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
              "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
              "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS"}


@attrs.frozen
class Target:
    """A registry under test: which one, and its base URL."""

    kind: str
    url: str

    def check(self, cid: str, ok: bool, what: object) -> None:
        """Assert check ``cid``: passes here, or (for 2.8.2 and a listed difference) fails."""
        if self.kind == "distribution-2.8.2" and cid in DIFFERENCES:
            assert not ok, f"{cid}: 2.8.2 now passes ({DIFFERENCES[cid]}): drop it from DIFFERENCES"
        else:
            assert ok, f"{cid} on {self.kind}: {what}"


def _ours(tmp: Path) -> Iterator[Target]:
    reg = Registry(root=tmp / "store")
    with reg.serve(("127.0.0.1", 0)) as server:
        yield Target("ours", server.url)


@pytest.fixture(scope="module", params=["ours", "distribution-2.8.2"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Ours and docker-registry 2.8.2, each fresh for the module."""
    if request.param == "ours":
        yield from _ours(tmp_path_factory.mktemp("ours"))
        return
    why = daemons.registry_unavailable()
    if why:
        pytest.skip(why)
    with daemons.start_registry() as r:
        yield Target("distribution-2.8.2", r.url)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def err_code(r: requests.Response | RawResponse) -> str | None:
    try:
        return str(r.json()["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def push_blob(http: requests.Session, url: str, name: str, data: bytes) -> str:
    r = http.post(f"{url}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    d = digest(data)
    r = http.put(_abs(url, loc), params={"digest": d}, data=data,
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return d


@attrs.frozen
class RawResponse:
    """What :func:`raw` got back."""

    status_code: int
    text: str

    def json(self) -> object:
        return json.loads(self.text)


def raw(url: str, method: str, path: str) -> RawResponse:
    """A request with ``path`` sent as is (requests/urllib3 would remove dot segments)."""
    u = urllib.parse.urlsplit(url)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, headers={"Content-Length": "0"})
        resp = conn.getresponse()
        return RawResponse(resp.status, resp.read().decode(errors="replace"))
    finally:
        conn.close()


def _abs(url: str, loc: str) -> str:
    return loc if loc.startswith("http") else url + loc


def image_manifest(config: bytes, layers: list[bytes], **extra: object) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
           "config": {"mediaType": MT_CONFIG, "digest": digest(config), "size": len(config)},
           "layers": [{"mediaType": MT_LAYER, "digest": digest(x), "size": len(x)} for x in layers], **extra}
    return json.dumps(doc, indent="\t").encode()


def push_image(http: requests.Session, url: str, name: str, tag: str, seed: str) -> tuple[bytes, bytes, bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                         "seed": seed}).encode()
    layer = os.urandom(1000) + seed.encode()
    push_blob(http, url, name, config)
    push_blob(http, url, name, layer)
    m = image_manifest(config, [layer])
    r = http.put(f"{url}/v2/{name}/manifests/{tag}", data=m, headers={"Content-Type": MT_MANIFEST})
    assert r.status_code == 201, r.text
    return config, layer, m


# --- pull ---------------------------------------------------------------------------------------


def test_pull(target: Target, http: requests.Session) -> None:
    url, name = target.url, "conformance/pull"
    r = http.get(f"{url}/v2/")
    target.check("base", r.status_code == 200, r.status_code)
    config, layer, m = push_image(http, url, name, "tagged", "pull")
    md = digest(m)
    r = http.get(f"{url}/v2/{name}/manifests/tagged", headers={"Accept": MT_MANIFEST})
    target.check("pull-manifest-tag", r.status_code == 200 and r.content == m
                 and r.headers.get("Content-Type") == MT_MANIFEST, (r.status_code, r.headers))
    target.check("pull-manifest-digest-header", r.headers.get("Docker-Content-Digest") == md, r.headers)
    r = http.get(f"{url}/v2/{name}/manifests/{md}", headers={"Accept": MT_MANIFEST})
    target.check("pull-manifest-digest", r.status_code == 200 and r.content == m, r.status_code)
    r = http.head(f"{url}/v2/{name}/manifests/{md}", headers={"Accept": MT_MANIFEST})
    target.check("pull-manifest-head", r.status_code == 200 and r.headers.get("Content-Length") == str(len(m))
                 and r.headers.get("Docker-Content-Digest") == md and not r.content, r.headers)
    r = http.head(f"{url}/v2/{name}/manifests/tagged", headers={"Accept": MT_MANIFEST})
    target.check("pull-manifest-head", r.status_code == 200 and r.headers.get("Docker-Content-Digest") == md, r.headers)
    for ref in ("nonexistent", "sha256:" + "0" * 64):
        r = http.get(f"{url}/v2/{name}/manifests/{ref}")
        target.check("pull-manifest-404", r.status_code == 404 and err_code(r) == "MANIFEST_UNKNOWN", r.text)
        r = http.head(f"{url}/v2/{name}/manifests/{ref}")
        target.check("pull-manifest-404", r.status_code == 404 and not r.content, r.status_code)
    # A manifest pushed by digest, then read by it.
    m2 = image_manifest(config, [layer], annotations={"pushed": "by digest"})
    r = http.put(f"{url}/v2/{name}/manifests/{digest(m2)}", data=m2, headers={"Content-Type": MT_MANIFEST})
    target.check("push-manifest-by-digest", r.status_code == 201
                 and r.headers.get("Docker-Content-Digest") == digest(m2), r.status_code)
    # (with Accept, as the Go suite sends: 2.8.2 answers 404 to a client that does not accept OCI)
    r = http.head(f"{url}/v2/{name}/manifests/{digest(m2)}", headers={"Accept": MT_MANIFEST})
    target.check("push-manifest-by-digest", r.status_code == 200, r.status_code)
    # Error bodies are the spec's JSON with one of its codes.
    r = http.get(f"{url}/v2/{name}/manifests/sha256:totallywrong")
    target.check("error-json", r.status_code == 404 or (r.status_code == 400 and err_code(r) in SPEC_CODES), r.text)
    r = http.get(f"{url}/v2/conformance/never-pushed/manifests/latest")
    target.check("pull-manifest-404", r.status_code == 404 and err_code(r) in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN"),
                 r.text)
    ld = digest(layer)
    r = http.get(f"{url}/v2/{name}/blobs/{ld}")
    target.check("pull-blob", r.status_code == 200 and r.content == layer, r.status_code)
    r = http.head(f"{url}/v2/{name}/blobs/{ld}")
    target.check("pull-blob-head", r.status_code == 200 and r.headers.get("Content-Length") == str(len(layer))
                 and r.headers.get("Docker-Content-Digest") == ld, r.headers)
    r = http.get(f"{url}/v2/{name}/blobs/{ld}", headers={"Range": "bytes=10-19"})
    target.check("pull-blob-range", r.status_code == 206 and r.content == layer[10:20], r.status_code)
    r = http.get(f"{url}/v2/{name}/blobs/sha256:{'1' * 64}")
    target.check("pull-blob-404", r.status_code == 404 and err_code(r) == "BLOB_UNKNOWN", r.text)
    r = http.head(f"{url}/v2/{name}/blobs/sha256:{'1' * 64}")
    target.check("pull-blob-404", r.status_code == 404 and not r.content, r.status_code)


# --- push ---------------------------------------------------------------------------------------


def test_push(target: Target, http: requests.Session) -> None:
    url, name, cross = target.url, "conformance/push", "conformance/crossmount"
    # Streamed: PATCH with the body, then PUT ?digest= with none.
    blob_a = b"blob A: streamed" * 7
    r = http.post(f"{url}/v2/{name}/blobs/uploads/")
    target.check("push-post-session", r.status_code == 202 and r.headers.get("Location"), r.status_code)
    r = http.patch(_abs(url, r.headers["Location"]), data=blob_a, headers={"Content-Type": "application/octet-stream"})
    target.check("push-streamed", r.status_code == 202, r.status_code)
    r = http.put(_abs(url, r.headers["Location"]), params={"digest": digest(blob_a)})
    target.check("push-streamed", r.status_code == 201 and r.headers.get("Location"), r.status_code)
    # Monolithic: one POST with ?digest=, and POST + PUT with the body.
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    r = http.post(f"{url}/v2/{name}/blobs/uploads/", params={"digest": digest(config)}, data=config,
                  headers={"Content-Type": "application/octet-stream"})
    target.check("push-monolithic-post", r.status_code in (201, 202) and r.headers.get("Location"), r.status_code)
    g = http.get(f"{url}/v2/{name}/blobs/{digest(config)}")
    target.check("push-monolithic-post", g.status_code == (200 if r.status_code == 201 else 404), g.status_code)
    if r.status_code == 202:  # a registry may take the POST as the start of an upload only
        push_blob(http, url, name, config)
    layer = os.urandom(3000)
    push_blob(http, url, name, layer)
    g = http.get(f"{url}/v2/{name}/blobs/{digest(layer)}")
    target.check("push-monolithic-put", g.status_code == 200 and g.content == layer, g.status_code)
    # A digest that does not match the body.
    r = http.post(f"{url}/v2/{name}/blobs/uploads/")
    r = http.put(_abs(url, r.headers["Location"]), params={"digest": digest(b"other")}, data=b"this")
    target.check("push-digest-invalid", r.status_code == 400 and err_code(r) == "DIGEST_INVALID", r.text)

    # Chunked.
    blob_b = os.urandom(5000)
    c1, c2 = blob_b[:2000], blob_b[2000:]
    r1 = http.post(f"{url}/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
    r = http.patch(_abs(url, r1.headers["Location"]), data=c2,
                   headers={"Content-Range": f"2000-{len(blob_b) - 1}", "Content-Type": "application/octet-stream"})
    target.check("push-chunk-out-of-order", r.status_code == 416, r.status_code)
    r1 = http.post(f"{url}/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
    r = http.patch(_abs(url, r1.headers["Location"]), data=c1,
                   headers={"Content-Range": "0-1999", "Content-Type": "application/octet-stream"})
    target.check("push-chunk-first", r.status_code == 202 and r.headers.get("Range") == "0-1999", r.headers)
    after_first = r.headers["Location"]
    r = http.patch(_abs(url, r1.headers["Location"]), data=c1,
                   headers={"Content-Range": "0-1999", "Content-Type": "application/octet-stream"})
    target.check("push-chunk-retry", r.status_code == 416, r.status_code)
    r = http.get(_abs(url, r1.headers["Location"]))
    retried = r.headers.get("Range") != "0-1999"
    target.check("push-upload-status", r.status_code == 204 and r.headers.get("Location")
                 and (retried or r.headers.get("Range") == "0-1999"), (r.status_code, r.headers))
    if not retried:
        r = http.patch(_abs(url, r.headers["Location"]), data=c2,
                       headers={"Content-Range": f"2000-{len(blob_b) - 1}", "Content-Type": "application/octet-stream"})
        target.check("push-chunk-first", r.status_code == 202 and r.headers.get("Location"), r.status_code)
        r = http.put(_abs(url, r.headers["Location"]), params={"digest": digest(blob_b)},
                     headers={"Content-Length": "0"})
        target.check("push-chunk-close", r.status_code == 201 and r.headers.get("Location"), r.status_code)
    assert after_first

    # Transfer-Encoding: chunked bodies (a generator), as docker's client sends layers.
    blob_c = os.urandom(300_000)
    r = http.post(f"{url}/v2/{name}/blobs/uploads/")
    r = http.patch(_abs(url, r.headers["Location"]), data=(blob_c[i:i + 65536] for i in range(0, len(blob_c), 65536)))
    ok = r.status_code == 202
    r = http.put(_abs(url, r.headers["Location"]), params={"digest": digest(blob_c)})
    g = http.get(f"{url}/v2/{name}/blobs/{digest(blob_c)}")
    target.check("push-chunked-encoding", ok and r.status_code == 201 and g.content == blob_c, r.status_code)

    # Cross-repository mount.
    r = http.post(f"{url}/v2/{cross}/blobs/uploads/", params={"mount": f"sha256:{'2' * 64}", "from": name})
    target.check("push-mount-fallback", r.status_code == 202 and "/blobs/uploads/" in r.headers.get("Location", ""),
                 r.status_code)
    r = http.post(f"{url}/v2/{cross}/blobs/uploads/", params={"mount": digest(blob_a), "from": name})
    target.check("push-mount", r.status_code == 201
                 and r.headers.get("Location", "").endswith(f"/v2/{cross}/blobs/{digest(blob_a)}"), r.status_code)
    g = http.get(f"{url}/v2/{cross}/blobs/{digest(blob_a)}")
    target.check("push-mount", g.status_code == 200 and g.content == blob_a, g.status_code)

    # Manifests.
    m = image_manifest(config, [layer])
    for i in range(4):
        r = http.put(f"{url}/v2/{name}/manifests/test{i}", data=m, headers={"Content-Type": MT_MANIFEST})
        target.check("push-manifest", r.status_code == 201 and r.headers.get("Location"), r.text)
    empty = json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                        "config": {"mediaType": MT_CONFIG, "digest": digest(config), "size": len(config)},
                        "layers": []}).encode()
    r = http.put(f"{url}/v2/{name}/manifests/emptylayer", data=empty, headers={"Content-Type": MT_MANIFEST})
    target.check("push-manifest-empty", r.status_code == 201, r.text)
    r = http.get(f"{url}/v2/{name}/manifests/{digest(m)}", headers={"Accept": MT_MANIFEST})
    target.check("push-manifest", r.status_code == 200 and r.content == m, r.status_code)


def test_push_errors(target: Target, http: requests.Session) -> None:
    """Bad input: the right code, and nothing stored."""
    url, name = target.url, "conformance/errors"
    config, layer, m = push_image(http, url, name, "base", "errors")
    missing = os.urandom(100)
    for what, doc in (("layer", image_manifest(config, [layer, missing])),
                      ("config", image_manifest(missing, [layer]))):
        r = http.put(f"{url}/v2/{name}/manifests/bad-{what}", data=doc, headers={"Content-Type": MT_MANIFEST})
        target.check(f"push-manifest-blob-unknown-{what}",
                     r.status_code == 400 and err_code(r) == "MANIFEST_BLOB_UNKNOWN", (r.status_code, r.text))
        g = http.get(f"{url}/v2/{name}/manifests/bad-{what}")
        assert g.status_code == 404
    index = json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
        {"mediaType": MT_MANIFEST, "digest": digest(b"no such manifest"), "size": 16}]}).encode()
    r = http.put(f"{url}/v2/{name}/manifests/bad-index", data=index, headers={"Content-Type": MT_INDEX})
    target.check("push-manifest-blob-unknown-index-child",
                 r.status_code == 400 and err_code(r) == "MANIFEST_BLOB_UNKNOWN", (r.status_code, r.text))
    wrong_size = image_manifest(config, [layer]).replace(f'"size": {len(layer)}'.encode(),
                                                         f'"size": {len(layer) + 1}'.encode())
    r = http.put(f"{url}/v2/{name}/manifests/bad-size", data=wrong_size, headers={"Content-Type": MT_MANIFEST})
    target.check("push-manifest-wrong-size", r.status_code == 400 and err_code(r) == "MANIFEST_INVALID",
                 (r.status_code, r.text))
    stored = ["bad-size", "base"] if r.status_code == 201 else ["base"]
    r = http.put(f"{url}/v2/{name}/manifests/bad-json", data=b"{not json", headers={"Content-Type": MT_MANIFEST})
    target.check("push-manifest-invalid", r.status_code == 400 and err_code(r) == "MANIFEST_INVALID", r.text)
    big = json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST, "annotations": {"x": "y" * (4 << 20)},
                      "config": {"mediaType": MT_CONFIG, "digest": digest(config), "size": len(config)},
                      "layers": []}).encode()
    r = http.put(f"{url}/v2/{name}/manifests/too-big", data=big, headers={"Content-Type": MT_MANIFEST})
    target.check("push-manifest-too-big", r.status_code == 413, r.status_code)
    r = http.put(f"{url}/v2/{name}/manifests/{digest(b'x')}", data=m, headers={"Content-Type": MT_MANIFEST})
    target.check("push-manifest-digest-mismatch", r.status_code == 400 and err_code(r) == "DIGEST_INVALID", r.text)
    for cid, bad in (("push-name-invalid-upper", "Conformance/Upper"),
                     ("push-name-invalid-dotdot", "conformance/../errors"),
                     ("push-name-invalid-double-slash", "conformance//errors"),
                     ("push-name-invalid-long", "a" * 256)):
        r = raw(url, "POST", f"/v2/{bad}/blobs/uploads/")
        g = raw(url, "GET", f"/v2/{bad}/manifests/base")
        target.check(cid, r.status_code == 400 and err_code(r) == "NAME_INVALID"
                     and g.status_code == 400 and err_code(g) == "NAME_INVALID", (r.status_code, g.status_code, r.text))
    r = http.get(f"{url}/v2/{name}/tags/list")
    assert sorted(r.json()["tags"]) == stored  # nothing else of the above was stored


# --- content discovery --------------------------------------------------------------------------


def test_content_discovery(target: Target, http: requests.Session) -> None:
    url, name = target.url, "conformance/discovery"
    tags = ["b", "a10", "a2", "Z", "latest", "1.0", "a_1"]
    _, _, m = push_image(http, url, name, tags[0], "discovery")
    for t in tags[1:]:
        r = http.put(f"{url}/v2/{name}/manifests/{t}", data=m, headers={"Content-Type": MT_MANIFEST})
        assert r.status_code == 201
    r = http.get(f"{url}/v2/{name}/tags/list")
    target.check("tags-list", r.status_code == 200 and sorted(r.json()["tags"]) == sorted(tags), r.text)
    target.check("tags-order", r.json()["tags"] == sorted(tags), r.json())
    r = http.get(f"{url}/v2/{name}/tags/list", params={"n": 3})
    target.check("tags-n", r.status_code == 200 and r.json()["tags"] == sorted(tags)[:3], r.text)
    target.check("tags-link", 'rel="next"' in r.headers.get("Link", ""), r.headers)
    r = http.get(f"{url}/v2/{name}/tags/list", params={"n": 3, "last": sorted(tags)[2]})
    target.check("tags-last", r.status_code == 200 and r.json()["tags"] == sorted(tags)[3:6], r.text)
    r = http.get(f"{url}/v2/{name}/tags/list", params={"n": 0})
    target.check("tags-n", r.status_code == 200 and not r.json().get("tags"), r.text)

    # Referrers: four artifact manifests and an index with the same subject, one with another.
    subject = m
    sd = digest(subject)
    empty = b"{}"
    push_blob(http, url, name, empty)
    ra, rb = b"NHL Peanut Butter on my NHL bagel", b"NBA Strawberry Jam on my NBA croissant"
    push_blob(http, url, name, ra)
    push_blob(http, url, name, rb)
    type_a, type_b = "application/vnd.nhl.peanut.butter.bagel", "application/vnd.nba.strawberry.jam.croissant"
    subj = {"mediaType": MT_MANIFEST, "digest": sd, "size": len(subject)}
    empty_desc = {"mediaType": MT_EMPTY, "digest": digest(empty), "size": 2}

    def artifact(art: str | None, cfg: tuple[str, bytes] | None, blob: bytes, note: str | None,
                 subject_desc: dict[str, object]) -> bytes:
        doc: dict[str, object] = {"schemaVersion": 2, "mediaType": MT_MANIFEST}
        if art:
            doc["artifactType"] = art
        doc["config"] = ({"mediaType": cfg[0], "digest": digest(cfg[1]), "size": len(cfg[1])} if cfg else empty_desc)
        doc["layers"] = [{"mediaType": art or MT_EMPTY, "digest": digest(blob), "size": len(blob)}]
        doc["subject"] = subject_desc
        if note:
            doc["annotations"] = {"org.opencontainers.conformance.test": note}
        return json.dumps(doc, indent="\t").encode()

    arts = {
        "test config a": artifact(None, (type_a, ra), empty, "test config a", subj),
        "test config b": artifact(None, (type_b, rb), empty, "test config b", subj),
        "test layer a": artifact(type_a, None, ra, "test layer a", subj),
        "test layer b": artifact(type_b, None, rb, "test layer b", subj),
    }
    for doc in arts.values():
        r = http.put(f"{url}/v2/{name}/manifests/{digest(doc)}", data=doc, headers={"Content-Type": MT_MANIFEST})
        assert r.status_code == 201, r.text
        target.check("referrers-subject-header", r.headers.get("OCI-Subject") == sd, r.headers)
    index = json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "artifactType": "application/vnd.food.stand",
                        "manifests": [{"mediaType": MT_MANIFEST, "digest": digest(arts[k]), "size": len(arts[k])}
                                      for k in ("test config a", "test layer a")],
                        "subject": subj, "annotations": {"org.opencontainers.conformance.test": "test index"}},
                       indent="\t").encode()
    r = http.put(f"{url}/v2/{name}/manifests/{digest(index)}", data=index, headers={"Content-Type": MT_INDEX})
    assert r.status_code == 201, r.text
    ghost = {"mediaType": MT_MANIFEST, "digest": digest(b"never pushed"), "size": 12}
    c_doc = artifact(type_b, None, rb, None, ghost)
    r = http.put(f"{url}/v2/{name}/manifests/{digest(c_doc)}", data=c_doc, headers={"Content-Type": MT_MANIFEST})
    assert r.status_code == 201, r.text

    r = http.get(f"{url}/v2/{name}/referrers/sha256:{'3' * 64}")
    target.check("referrers-empty", r.status_code == 200 and r.headers.get("Content-Type") == MT_INDEX
                 and r.json().get("manifests") == [], r.status_code)
    r = http.get(f"{url}/v2/{name}/referrers/{sd}")
    listed = r.json().get("manifests", []) if r.status_code == 200 else []
    notes = sorted(d.get("annotations", {}).get("org.opencontainers.conformance.test", "") for d in listed)
    target.check("referrers-list", r.status_code == 200 and notes == sorted([*arts, "test index"])
                 and all(d.get("artifactType") for d in listed), r.status_code)
    r = http.get(f"{url}/v2/{name}/referrers/{sd}", params={"artifactType": type_a})
    listed = r.json().get("manifests", []) if r.status_code == 200 else []
    target.check("referrers-filter", r.status_code == 200 and r.headers.get("OCI-Filters-Applied") == "artifactType"
                 and sorted(d["annotations"]["org.opencontainers.conformance.test"] for d in listed)
                 == ["test config a", "test layer a"], r.status_code)
    r = http.get(f"{url}/v2/{name}/referrers/{ghost['digest']}")
    listed = r.json().get("manifests", []) if r.status_code == 200 else []
    target.check("referrers-missing-subject", r.status_code == 200 and [d["digest"] for d in listed] == [digest(c_doc)],
                 r.status_code)

    r = http.get(f"{url}/v2/_catalog")
    repos = r.json()["repositories"]
    target.check("catalog", r.status_code == 200 and name in repos and repos == sorted(repos), r.text)
    r = http.get(f"{url}/v2/_catalog", params={"n": 1})
    target.check("catalog", r.status_code == 200 and len(r.json()["repositories"]) == 1, r.text)


# --- content management -------------------------------------------------------------------------


def test_content_management(target: Target, http: requests.Session) -> None:
    url, name = target.url, "conformance/management"
    _, layer, m = push_image(http, url, name, "one", "management")
    r = http.put(f"{url}/v2/{name}/manifests/two", data=m, headers={"Content-Type": MT_MANIFEST})
    assert r.status_code == 201
    r = http.delete(f"{url}/v2/{name}/manifests/one")
    target.check("delete-tag", r.status_code in (202, 400, 405), r.status_code)
    t = http.get(f"{url}/v2/{name}/tags/list")
    target.check("delete-tag", t.status_code == 200 and sorted(t.json()["tags"]) == (["two"] if r.status_code == 202
                                                                                    else ["one", "two"]), t.text)
    if r.status_code == 202:
        g = http.get(f"{url}/v2/{name}/manifests/one")
        target.check("delete-tag", g.status_code == 404, g.status_code)
        g = http.get(f"{url}/v2/{name}/manifests/{digest(m)}")
        target.check("delete-tag", g.status_code == 200, g.status_code)  # the manifest stays
    r = http.delete(f"{url}/v2/{name}/manifests/{digest(m)}")
    target.check("delete-manifest", r.status_code == 202, r.status_code)
    t = http.get(f"{url}/v2/{name}/tags/list")  # no tag left: 404, or 200 with none
    target.check("delete-manifest", t.status_code == 404 or (t.status_code == 200 and not t.json().get("tags")),
                 t.text)
    for ref in (digest(m), "two"):
        g = http.get(f"{url}/v2/{name}/manifests/{ref}")
        target.check("delete-manifest", g.status_code == 404, (ref, g.status_code))
    r = http.delete(f"{url}/v2/{name}/blobs/{digest(layer)}")
    target.check("delete-blob", r.status_code == 202, r.status_code)
    g = http.get(f"{url}/v2/{name}/blobs/{digest(layer)}")
    target.check("delete-blob", g.status_code == 404, g.status_code)
    r = http.delete(f"{url}/v2/{name}/blobs/{digest(layer)}")
    target.check("delete-blob", r.status_code == 404 and err_code(r) == "BLOB_UNKNOWN", r.status_code)


def test_conditional_get_by_digest(target: Target, http: requests.Session) -> None:
    """Not in the spec's MUSTs: a client holding content sends its digest as If-None-Match and
    gets 304 with no body, from a manifest GET and from a blob GET, as 2.8.2 answers."""
    url, name = target.url, "conformance/conditional"
    config, layer, m = push_image(http, url, name, "one", "conditional")
    for path, d in ((f"/v2/{name}/manifests/one", digest(m)), (f"/v2/{name}/blobs/{digest(layer)}", digest(layer))):
        r = http.get(url + path, headers={"If-None-Match": f'"{d}"', "Accept": MT_MANIFEST})
        assert (r.status_code, r.content) == (304, b""), (target.kind, path, r.status_code)
        other = http.get(url + path, headers={"If-None-Match": f'"{digest(b"other")}"', "Accept": MT_MANIFEST})
        assert other.status_code == 200 and digest(other.content) == d, (target.kind, path, other.status_code)
        assert other.headers.get("ETag") == f'"{d}"', (target.kind, path, other.headers.get("ETag"))


def test_blob_preconditions_by_digest(target: Target, http: requests.Session) -> None:
    """A blob's ETag is its digest, so If-Match and If-Range compare against the digest, as
    2.8.2's ``http.ServeContent`` does: a matching If-Match serves the blob, another gets 412;
    a Range under a matching If-Range gets 206, under another tag the whole blob (200)."""
    url, name = target.url, "conformance/preconditions"
    _, layer, _ = push_image(http, url, name, "one", "preconditions")
    d, other = digest(layer), digest(b"other")
    path = f"{url}/v2/{name}/blobs/{d}"
    r = http.get(path, headers={"If-Match": f'"{d}"'})
    assert (r.status_code, digest(r.content)) == (200, d), (target.kind, r.status_code)
    # 2.8.2's 412 keeps the blob's Content-Length but sends no body (a client reading it
    # fails with IncompleteRead); ours says Content-Length: 0. Only the status is compared.
    with http.get(path, headers={"If-Match": f'"{other}"'}, stream=True) as r:
        assert r.status_code == 412, (target.kind, r.status_code)
    r = http.get(path, headers={"Range": "bytes=2-5", "If-Range": f'"{d}"'})
    assert (r.status_code, r.content) == (206, layer[2:6]), (target.kind, r.status_code)
    r = http.get(path, headers={"Range": "bytes=2-5", "If-Range": f'"{other}"'})
    assert (r.status_code, r.content) == (200, layer), (target.kind, r.status_code)
