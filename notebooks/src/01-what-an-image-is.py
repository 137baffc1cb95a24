# %% [markdown]
# # 1. What an image is
#
# A container image is two things: a **stack of read-only layers** and a **config**
# (the command to start, its environment, its working directory...). Each layer is a
# *changeset*: the files one build step added, changed or deleted. Stacked, the layers
# make the single filesystem a container sees: the **merged view**.
#
# Every claim below is followed by a cell that shows it on
# [unionfs_sim](../README.md)'s model, and by a plain `assert`, so if the library ever
# stopped behaving this way the notebook (and CI) would fail.

# %%
import hashlib
import io
import json
import tarfile

import nbkit

import unionfs_sim as ufs

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the digests below never change

# %% [markdown]
# ## Layers are changesets
#
# A base image's first layer is a whole small root filesystem. We write one by hand: a
# busybox binary, `sh` as a symlink to it, a few files in `/etc`, a sticky `/tmp`.

# %%
busybox = ufs.File(b"\x7fELF" + bytes(60_000), mode=0o755)  # stands in for the real 1 MB binary
base = ufs.Layer.from_dict({
    "bin/": ufs.Dir(),
    "bin/busybox": busybox,
    "bin/sh": ufs.Symlink("busybox"),
    "etc/": ufs.Dir(),
    "etc/os-release": b'NAME="Tiny Linux"\nVERSION_ID=1.0\n',
    "etc/hostname": b"localhost\n",
    "etc/motd": b"Welcome to Tiny Linux!\n",
    "tmp/": ufs.Dir(mode=0o1777),
})
nbkit.changeset(base, caption="layer 0: the base filesystem (FROM tiny:1.0)")

# %% [markdown]
# The next layer is what a `RUN apk add python3` step leaves behind: only the files that
# step wrote. It *changes* `/etc/motd` (the whole new file is in this layer) and leaves a
# package-index cache behind, as package managers do.

# %%
runtime = ufs.Layer.from_dict({
    "usr/bin/python3": ufs.File(b"\x7fELF" + bytes(30_000), mode=0o755),
    "usr/lib/python3.12/os.py": b"# the os module\n" * 200,
    "etc/motd": b"Welcome to Tiny Linux, now with Python!\n",
    "var/cache/apk/APKINDEX.tar.gz": bytes(12_000),
})
nbkit.changeset(runtime, caption="layer 1: RUN apk add python3")

# %% [markdown]
# The top layer copies the application in and deletes `/etc/motd`. A layer cannot erase
# a file of the layers below it (they are read-only), so a delete is recorded as a
# **whiteout**: an entry that says "there is nothing here any more".

# %%
app = ufs.Layer.from_dict({
    "app/": ufs.Dir(),
    "app/main.py": b"print('hello from the app')\n",
    "app/requirements.txt": b"requests==2.32.3\n",
    "etc/motd": ufs.WHITEOUT,
})
nbkit.changeset(app, caption="layer 2: COPY . /app && RUN rm /etc/motd")

# %%
assert app["etc/motd"] is ufs.WHITEOUT
assert len(base) == 8 and len(runtime) == 4 and len(app) == 4  # each layer holds only its own changes

# %% [markdown]
# On the wire (in a registry, in `docker save`) a layer is a tar file. A whiteout is an
# empty file whose name starts with `.wh.`, as the
# [OCI image spec](https://github.com/opencontainers/image-spec/blob/main/layer.md#whiteouts)
# defines it:

# %%
buf = io.BytesIO()
app.to_tar(buf)
members = [(m.name, "dir" if m.isdir() else "file", m.size) for m in tarfile.open(fileobj=io.BytesIO(buf.getvalue()))]
nbkit.table(members, ["tar member", "type", "size"], caption=f"layer 2 as a tar: {len(buf.getvalue())} bytes")

# %%
assert ("etc/.wh.motd", "file", 0) in members
assert ufs.Layer.from_tar(io.BytesIO(buf.getvalue())).digest == app.digest  # the tar round-trips exactly

# %% [markdown]
# ## The image: layers plus a config
#
# The config says how to start the process. It is not in any layer: it is a separate
# small JSON document.

# %%
config = ufs.ImageConfig(
    cmd=["python3", "main.py"],
    env=["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1"],
    working_dir="/app",
    user="1000:1000",
    exposed_ports=["8000/tcp"],
)
image = ufs.Image.from_layers([base, runtime, app], config=config)
print(json.dumps(image.config_json(), indent=2))

# %% [markdown]
# ## The merged view
#
# Stacking the layers gives one filesystem. For every path the **topmost** layer that
# mentions it wins: `/etc/motd` of layer 1 hides layer 0's, and layer 2's whiteout hides
# both. The picture shows each layer as a row (bottom row = layer 0) and, on top, what a
# process in the container sees and which layer it comes from; faded cells are hidden.

# %%
names = ["L0 FROM tiny:1.0", "L1 RUN apk add python3", "L2 COPY . /app; rm motd"]
nbkit.image_stack(image, names, paths=["bin/busybox", "bin/sh", "etc/hostname", "etc/motd", "etc/os-release",
                                       "usr/bin/python3", "var/cache/apk/APKINDEX.tar.gz", "app/main.py"])

# %% [markdown]
# `image.fs` is that merged view, with the `os` module's API. `which_layer` says which
# layer provides any path (0 = the bottom):

# %%
nbkit.merged(image.fs, names, caption="every path of the merged view, and where it comes from")

# %%
fs = image.fs
assert fs.listdir("/etc") == ["hostname", "os-release"]  # motd is whited out
assert not fs.exists("/etc/motd")
assert fs.which_layer("/etc/hostname") == 0
assert fs.which_layer("/usr/bin/python3") == 1
assert fs.which_layer("/app/main.py") == 2
assert fs.readlink("/bin/sh") == "busybox" and fs.stat("/bin/sh").st_size == busybox.size  # stat follows the link
assert fs.read_text("/app/main.py") == "print('hello from the app')\n"
assert oct(fs.stat("/tmp").st_mode & 0o7777) == "0o1777"

# %% [markdown]
# The view is read-only: the image itself can never change (chapter 4 is about that).

# %%
try:
    fs.write_bytes("/etc/hostname", b"changed\n")
except OSError as e:
    print(f"{type(e).__name__}: {e}")
    err = e
assert err.errno == 30  # EROFS, as writing to a read-only mount gives

# %% [markdown]
# ## Names made of content: diff_ids, the image ID, the digest
#
# Everything in an image is named by the SHA-256 of its bytes:
#
# - each layer's **diff_id** is the digest of its uncompressed tar;
# - the **image ID** (what `docker images` shows) is the digest of the config JSON, which
#   lists the diff_ids in `rootfs`;
# - the **manifest** lists the config and the layer blobs; its digest is the image's
#   **digest**, what `name@sha256:...` pulls from a registry.

# %%
manifest = image.manifest_json()
nbkit.table(
    [("manifest", image.digest, len(image.manifest_bytes)),
     ("config", manifest["config"]["digest"], manifest["config"]["size"])]
    + [(f"layer {i}", d["digest"], d["size"]) for i, d in enumerate(manifest["layers"])],
    ["blob", "digest", "bytes"], caption="what a registry stores for this image")

# %%
assert image.id == "sha256:" + hashlib.sha256(image.config_bytes).hexdigest()
assert image.digest == "sha256:" + hashlib.sha256(image.manifest_bytes).hexdigest()
assert image.config_json()["rootfs"]["diff_ids"] == [base.digest, runtime.digest, app.digest] == image.diff_ids
assert manifest["config"]["digest"] == image.id

# %% [markdown]
# Because names are made of content, the same layer has the same name everywhere, and an
# image that only changes the config (a new default command) shares every layer with
# the old one: only the config, and so the ID and the digest, are new.

# %%
debug = ufs.Image.from_layers([base, runtime, app], config=ufs.ImageConfig(cmd=["sh"], working_dir="/app"))
nbkit.table([("layers (diff_ids)", image.diff_ids == debug.diff_ids), ("image ID", image.id == debug.id),
             ("digest", image.digest == debug.digest)], ["same in both images?", ""])

# %%
assert debug.diff_ids == image.diff_ids
assert debug.id != image.id and debug.digest != image.digest

# %% [markdown]
# **In short**: an image is a stack of immutable changesets plus a config; what a
# container sees is their merge, topmost layer first, whiteouts deleting what is below;
# and every piece is named by its content. Next: [2. Images vs containers](02-images-vs-containers.ipynb).
