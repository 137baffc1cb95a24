# %% [markdown]
# # 7. Registry vs repository
#
# A **registry** is a server (`docker.io`, `ghcr.io`, `registry.example.com:5000`). It
# holds many **repositories** (`library/nginx`, `team/web`), one per image name; each
# repository holds that image's versions (manifests, by digest) and the **tags** that
# point at some of them. One reference names all of it:
#
# ```
# registry.example.com:5000/team/web:1.0@sha256:9f86d081...
# └────── registry ───────┘└repository┘└tag┘└──── digest ────┘
# ```
#
# Most references leave parts out, and the rules that fill them in surprise people.

# %%
import matplotlib.pyplot as plt
import nbkit
from IPython.display import display

import unionfs_sim as ufs

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the outputs never change

# %% [markdown]
# ## Reading a reference
#
# The first part before a `/` is a registry only if it looks like a host name: it contains
# a `.` or a `:` (a port), or is `localhost`. Otherwise the registry is Docker Hub
# (`docker.io`), and a one-word name there gets the `library/` namespace of the official
# images.

# %%
refs = [
    "nginx", "nginx:1.27", "library/nginx", "docker.io/library/nginx:latest", "bitnami/redis:7.2",
    "ghcr.io/owner/app:v1", "quay.io/prometheus/node-exporter:v1.8.2", "mcr.microsoft.com/dotnet/runtime:8.0",
    "public.ecr.aws/nginx/nginx:stable", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/billing/api:prod",
    "localhost:5000/team/app", "localhost/app", "registry.example.com:443/a/b/c:tag",
    "myregistry/app:1.0", "myregistry.local/app:1.0",
]
rows = []
for s in refs:
    r = ufs.Reference.parse(s)
    rows.append((s, r.domain, r.path, r.tag or "", r.familiar))
nbkit.table(rows, ["reference", "registry", "repository", "tag", "as docker prints it"],
            highlight={i: "#fde2e2" for i, r in enumerate(rows) if r[0].startswith("myregistry/")})

# %%
parsed = {s: ufs.Reference.parse(s) for s in refs}
assert parsed["nginx"].name == parsed["docker.io/library/nginx:latest"].name == "docker.io/library/nginx"
assert parsed["nginx"].tag is None  # no tag is invented: "latest" is filled in only when pulling
assert (parsed["bitnami/redis:7.2"].domain, parsed["bitnami/redis:7.2"].path) == ("docker.io", "bitnami/redis")
assert parsed["localhost/app"].domain == "localhost" and parsed["localhost:5000/team/app"].domain == "localhost:5000"
assert parsed["myregistry/app:1.0"].domain == "docker.io"       # no dot, no port: a Docker Hub user called myregistry!
assert parsed["myregistry.local/app:1.0"].domain == "myregistry.local"

# %% [markdown]
# The highlighted row is a classic mistake: `myregistry/app` is the repository `app` of a
# Docker Hub user called `myregistry`, and `docker push myregistry/app` sends your image
# to Docker Hub. A private registry needs a dot, a port or `localhost` in its name.
#
# ## One registry, many repositories
#
# Two images are built on the same Debian base: a Python image and a Node image. Their
# two bottom layers are the very same layers (same content, same digests).

# %%
debian = [
    ufs.Layer.from_dict({"bin/bash": ufs.File(bytes(1_200_000), mode=0o755), "lib/libc.so.6": bytes(2_000_000),
                         "etc/debian_version": b"12.8\n"}),
    ufs.Layer.from_dict({"usr/lib/ssl/libssl.so.3": bytes(700_000),
                         "etc/ssl/certs/ca-certificates.crt": bytes(200_000)}),
]
python_layer = ufs.Layer.from_dict({"usr/local/bin/python3.12": ufs.File(bytes(1_500_000), mode=0o755),
                                    "usr/local/lib/python3.12/os.py": bytes(40_000)})
python = ufs.Image.from_layers([*debian, python_layer], config=ufs.ImageConfig(cmd=["python3"]))
node_layer = ufs.Layer.from_dict({"usr/local/bin/node": ufs.File(bytes(2_500_000), mode=0o755)})
node = ufs.Image.from_layers([*debian, node_layer], config=ufs.ImageConfig(cmd=["node"]))
assert python.diff_ids[:2] == node.diff_ids[:2]

# %% [markdown]
# A registry keeps blobs (layers and configs) in one store, by digest, for all of its
# repositories. Pushing the two images to two repositories uploads the shared base layers
# once: the second push finds them there (a real client asks with a `HEAD` request per
# blob, and skips the upload: "Layer already exists").

# %%
hub = ufs.Registry()
pushed = 0
rows = []
for image, ref in ((python, "python:3.12"), (node, "node:22")):
    before = set(hub.blobs)
    hub.push(image, ref)
    sizes = [(d["digest"], d["size"]) for d in image.layer_descriptors]
    pushed += sum(size for _, size in sizes) + len(image.config_bytes)
    for i, (digest, size) in enumerate(sizes):
        result = "uploaded" if digest not in before else "already exists"
        rows.append((ref, f"layer {i}", nbkit.short(digest), nbkit.human(size), result))
stored = sum(hub.blobs.values())
nbkit.table(rows, ["push", "blob", "digest", "size", "result"],
            highlight={i: "#e8f5e9" for i, r in enumerate(rows) if r[4] == "already exists"})

# %%
fig, ax = plt.subplots(figsize=(6, 1.6))
ax.barh(["stored in the registry", "pushed (sum of both images)"], [stored / 1e6, pushed / 1e6],
        color=["#54a24b", "#4c78a8"])
for y, v in enumerate([stored, pushed]):
    ax.text(v / 1e6, y, f" {nbkit.human(v)}", va="center")
ax.set_xlim(0, pushed / 1e6 * 1.25)
ax.set_xlabel("MB")
ax.spines[["top", "right"]].set_visible(False)
plt.show()

# %%
layer_blobs = {d["digest"] for img in (python, node) for d in img.layer_descriptors}
assert len(layer_blobs) == 4                                 # 3 + 3 layers, 2 of them shared
assert set(hub.blobs) == layer_blobs | {python.id, node.id}   # 4 layers + 2 configs, each stored once
assert stored == pushed - sum(d["size"] for d in python.layer_descriptors[:2])
display(hub)  # a registry shows its catalog in Jupyter: repositories, tags, manifests and the blob store

# %% [markdown]
# The same image can be in several repositories (a team keeps its own copy of
# `python:3.12`): that adds a name, not a byte. A *different registry*, though, is another
# server with its own store: pushing there uploads everything again.

# %%
blobs_before = dict(hub.blobs)
hub.tag("python:3.12", "myteam/python:3.12")
assert dict(hub.blobs) == blobs_before and hub.resolve("myteam/python:3.12") == python.digest

ghcr = ufs.Registry()  # another registry: ghcr.io
ghcr.push(python, "ghcr.io/myteam/python:3.12")
nbkit.table([("docker.io", len(hub.repositories()), len(hub.blobs), nbkit.human(sum(hub.blobs.values()))),
             ("ghcr.io", len(ghcr.repositories()), len(ghcr.blobs), nbkit.human(sum(ghcr.blobs.values())))],
            ["registry", "repositories", "blobs", "stored"])

# %%
assert len(ghcr.blobs) == 4  # python's 3 layers and its config, uploaded again

# %% [markdown]
# ## Deleting frees only what nothing else uses
#
# Deleting `python:3.12` by digest removes the manifest from the repositories that
# hold it; garbage collection then frees the blobs no manifest refers to any more:
# Python's own layer and config, but not the Debian layers that `node` still uses.

# %%
hub.delete(f"python@{python.digest}")
hub.delete(f"myteam/python@{python.digest}")
freed = hub.gc()
was = {python.diff_ids[2]: "layer 2 of python", python.id: "config of python"}
nbkit.table([(nbkit.short(d), was.get(d, "?")) for d in freed], ["freed blob", "was"])

# %%
assert set(freed) == {python.layer_descriptors[2]["digest"], python.id}
assert all(d["digest"] in hub.blobs for d in node.layer_descriptors)  # node still has all of its layers
assert hub.repositories() == ["docker.io/library/node"]

# %% [markdown]
# **In short**: the registry is the server, the repository is the image's name on it,
# the tag and digest pick a version. Layers are stored once per registry, whatever
# the number of repositories and tags that use them. Next:
# [8. Inspecting images](08-inspecting-images.ipynb).
