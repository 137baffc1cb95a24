# %% [markdown]
# # 5. Tags vs digests
#
# An image has two kinds of names in a registry:
#
# - a **tag** (`web:1.0`, `web:latest`) is a *pointer* that whoever can push may move
#   to another image at any time;
# - a **digest** (`web@sha256:9f86...`) is the SHA-256 of the image's manifest: it names
#   those exact bytes and can never mean anything else.
#
# `latest` is not "the newest": it is only the tag used when you name none.

# %%
import hashlib
import io

import nbkit

import unionfs_sim as ufs
from unionfs_sim.registry import UnknownName

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the outputs never change

# %%
base = ufs.Layer.from_dict({"bin/sh": ufs.File(bytes(50_000), mode=0o755), "etc/hostname": b"localhost\n"})


def release(version: str) -> ufs.Image:
    """The image of release ``version`` of a small web app."""
    app = ufs.Layer.from_dict({"app/VERSION": version.encode() + b"\n",
                               "app/server": ufs.File(version.encode() * 1000, mode=0o755)})
    return ufs.Image.from_layers([base, app], config=ufs.ImageConfig(cmd=["/app/server"], labels={"version": version}))


reg = ufs.Registry()
repo = "registry.example.com/team/web"
releases = {v: release(v) for v in ("1.0", "1.1", "2.0")}
short = {img.digest: f"{v} ({nbkit.short(img.digest, 8)})" for v, img in releases.items()}

# %% [markdown]
# ## A tag moves
#
# A CI pipeline pushes each release with its version tag and moves `latest` to it; then
# a hot fix for the 1.x line is pushed, and the same careless pipeline moves `latest` to
# it too. After each push we ask the registry what every tag points at:

# %%
events = [("push 1.0", "1.0", ["1.0", "latest"]), ("push 1.1", "1.1", ["1.1", "latest"]),
          ("push 2.0", "2.0", ["2.0", "latest"]), ("push hot fix 1.1.1", "1.1.1", ["1.1.1", "latest"])]
releases["1.1.1"] = release("1.1.1")
short[releases["1.1.1"].digest] = f"1.1.1 ({nbkit.short(releases['1.1.1'].digest, 8)})"
columns = ["latest", "1.0", "1.1", "2.0", "1.1.1"]
timeline, history_of_latest = [], []
for what, version, tags in events:
    for t in tags:
        reg.push(releases[version], f"{repo}:{t}")
    now = {t: short[reg.resolve(f"{repo}:{t}")] for t in reg.tags(repo)}
    timeline.append([what] + [now.get(t, "") for t in columns])
    history_of_latest.append(reg.resolve(f"{repo}:latest"))
nbkit.table(timeline, ["after"] + [f"web:{t}" for t in columns], caption="what each tag points at (version, digest)",
            highlight={len(timeline) - 1: "#fde2e2"})

# %%
assert history_of_latest == [releases[v].digest for v in ("1.0", "1.1", "2.0", "1.1.1")]  # latest moved 3 times
assert reg.pull(f"{repo}:latest").config.labels == (("version", "1.1.1"),)  # "latest" is now OLDER than 2.0
assert reg.pull(repo) is reg.pull(f"{repo}:latest")                       # no tag means :latest

# %% [markdown]
# `docker pull web` on Monday and on Friday can give two different images, and so can two
# machines pulling at the same moment if a push happens in between. For a deployment
# that must be repeatable, name the image by digest.
#
# ## A digest never moves
#
# The manifest that `1.0` pointed at is still in the registry, and its digest still
# names it, whatever happened to the tags:

# %%
d10 = releases["1.0"].digest
pinned = reg.pull(f"{repo}@{d10}")
print(f"{repo}@{d10}\n  -> version {dict(pinned.config.labels)['version']}")
assert pinned.digest == d10 and pinned.fs.read_text("/app/VERSION") == "1.0\n"

# %% [markdown]
# Tags are cheap pointers: rolling `latest` back is one `docker tag`, and deleting a tag
# deletes only the pointer. A manifest goes away only when deleted by digest.

# %%
reg.tag(f"{repo}@{releases['2.0'].digest}", f"{repo}:latest")
reg.delete(f"{repo}:1.0")
nbkit.table([(t, short[reg.resolve(f"{repo}:{t}")]) for t in reg.tags(repo)], ["tag", "points at"],
            caption="after `docker tag web@sha256:... web:latest` and deleting the tag 1.0")

# %%
assert reg.resolve(f"{repo}:latest") == releases["2.0"].digest
assert "1.0" not in reg.tags(repo) and reg.pull(f"{repo}@{d10}") is pinned  # the image is still there by digest
try:
    reg.pull(f"{repo}:1.0")
except UnknownName as e:
    print("pull web:1.0 ->", e)
else:
    raise AssertionError("the tag was deleted")

# %% [markdown]
# ## `latest` is only a default
#
# A repository that was never pushed with the tag `latest` has no `latest`, and pulling
# it by name alone fails: nothing picks "the newest" for you.

# %%
reg.push(release("3.0-rc1"), "registry.example.com/team/worker:3.0-rc1")
try:
    reg.pull("registry.example.com/team/worker")
except UnknownName as e:
    print("pull team/worker ->", e)
    missing_latest = e
assert "latest" in str(missing_latest)

# %% [markdown]
# ## Pulling by digest gets exactly the same bytes
#
# A client that pulls `name@sha256:X` checks that the manifest it received hashes to X.
# The manifest names the config and every layer by *their* digests, so checking the
# manifest checks everything: one hash pins the whole image, byte for byte.

# %%
got = reg.pull(f"{repo}@{d10}")
manifest = got.manifest_json()
rows = [("manifest", d10, "sha256:" + hashlib.sha256(got.manifest_bytes).hexdigest())]
rows.append(("config", manifest["config"]["digest"], "sha256:" + hashlib.sha256(got.config_bytes).hexdigest()))
for i, (layer, desc) in enumerate(zip(got.layers, manifest["layers"], strict=True)):
    buf = io.BytesIO()
    layer.to_tar(buf)
    rows.append((f"layer {i}", desc["digest"], "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()))
nbkit.table([(what, nbkit.short(want, 16), nbkit.short(have, 16), want == have) for what, want, have in rows],
            ["blob", "named as", "hash of the bytes received", "match"])

# %%
assert all(want == have for _, want, have in rows)

# %% [markdown]
# If anything were changed on the way (a mirror, a cache, an attacker), the hashes would
# no longer match and the image is refused. Here the config is tampered with (one
# environment variable added) and then put together with the original manifest:

# %%
evil_config = got.config_bytes.replace(b'"Cmd"', b'"Env":["LD_PRELOAD=/tmp/x.so"],"Cmd"')
try:
    ufs.Image.from_parts(got.layers, evil_config, got.manifest_bytes)
except ufs.DigestMismatch as e:
    print("refused:", e)
    refused = e
assert isinstance(refused, ufs.DigestMismatch)

# %% [markdown]
# ## The grammar of a reference
#
# `[registry/]repository[:tag][@digest]`. A tag is up to 128 letters, digits, `_`, `.`
# and `-`, not starting with `.` or `-`; a digest is `algorithm:hex`. With both, the
# digest wins and the tag is only a comment. (Chapter 7 is about the registry and
# repository parts.)

# %%
d = releases["2.0"].digest
examples = ["web", "web:1.1", f"web@{d}", f"web:1.0@{d}"]
rows = []
for s in examples:
    r = ufs.Reference.parse(f"{repo.rsplit('/', 1)[0]}/{s}")
    pulled = reg.pull(r)
    tag = r.tag or ("" if r.digest else "(none: latest)")
    rows.append((s.replace(d, d[:19] + "..."), tag, nbkit.short(r.digest, 12) if r.digest else "",
                 dict(pulled.config.labels)["version"]))
nbkit.table(rows, ["reference", "tag", "digest", "pulls version"])

# %%
assert [r[3] for r in rows] == ["2.0", "1.1", "2.0", "2.0"]  # web:1.0@<2.0's digest> pulls 2.0

# %% [markdown]
# A reference that breaks the grammar is refused with the reason:

# %%
bad = ["web:", "web:-rc1", "web:" + "x" * 129, "web@sha256:abc", "web@md5:" + "0" * 32, "Web:1.0"]
rows = []
for s in bad:
    try:
        ufs.Reference.parse(s)
        rows.append((s, "accepted (!)"))
    except ValueError as e:
        why = str(e).split(": ", 1)[1]
        rows.append((s if len(s) < 40 else s[:37] + "...", why if len(why) < 90 else why[:87] + "..."))
nbkit.table(rows, ["reference", "why it is refused"])

# %%
assert all(not why.startswith("accepted") for _, why in rows)

# %% [markdown]
# **In short**: tags are movable pointers (and `latest` only the default tag name);
# digests are content hashes that pin every byte. Pull by digest for anything that must
# be repeatable. Next: [6. Build cache](06-build-cache.ipynb).
