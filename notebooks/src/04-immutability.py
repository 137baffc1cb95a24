# %% [markdown]
# # 4. Immutability
#
# An image never changes. Whatever its containers do, the image stays byte for byte what
# it was, and its digest with it. "Changing" an image always means making a **new**
# image, by rebuilding or by committing a container, and the new image has new digests.
# This notebook puts that to the test.

# %%
import nbkit

import unionfs_sim as ufs
from unionfs_sim.testing.compare import snapshot

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the outputs never change

# %%
def app_layer(version: str) -> ufs.Layer:
    """The application layer of a small web app at ``version``."""
    return ufs.Layer.from_dict({
        "app/": ufs.Dir(),
        "app/server.py": f"VERSION = {version!r}\nprint('serving', VERSION)\n".encode(),
        "app/static/logo.png": bytes(20_000),
    })


base = ufs.Layer.from_dict({
    "bin/sh": ufs.File(bytes(100_000), mode=0o755),
    "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
    "etc/hostname": b"localhost\n",
    "usr/lib/python3/": ufs.Dir(),
    "usr/lib/python3/json.py": b"# json\n" * 100,
})
deps = ufs.Layer.from_dict({"usr/lib/python3/site-packages/flask.py": b"# flask\n" * 500})
v1 = ufs.Image.from_layers([base, deps, app_layer("1.0")], config=ufs.ImageConfig(cmd=["python3", "/app/server.py"]))
before = {"id": v1.id, "digest": v1.digest, "diff_ids": v1.diff_ids, "tree": snapshot(v1.fs)}
print(f"v1: id {nbkit.short(v1.id)}, digest {nbkit.short(v1.digest)}, {len(v1.layers)} layers")

# %% [markdown]
# ## Containers cannot change their image
#
# Twenty containers of `v1` each do their worst: overwrite files, delete them, change
# permissions, and one deletes everything it can (`rm -rf /`).

# %%
def rm_rf(fs, path):
    """``rm -rf path`` through the os-style API."""
    for top, dirs, files in fs.walk(path, topdown=False):
        for name in files:
            fs.unlink(f"{top.rstrip('/')}/{name}")
        for name in dirs:
            p = f"{top.rstrip('/')}/{name}"
            fs.unlink(p) if fs.islink(p) else fs.rmdir(p)


containers = [v1.container() for _ in range(20)]
for i, c in enumerate(containers):
    c.fs.write_text("/app/server.py", f"print('hacked by container {i}')\n")
    c.fs.write_text("/etc/hostname", f"c{i}\n")
    c.fs.chmod("/bin/sh", 0o700)
    c.fs.unlink("/etc/passwd")
rm_rf(containers[-1].fs, "/")
print("the last container now sees:", containers[-1].fs.listdir("/"))

# %%
assert containers[-1].fs.listdir("/") == []
assert v1.id == before["id"] and v1.digest == before["digest"] and v1.diff_ids == before["diff_ids"]
assert snapshot(v1.fs) == before["tree"]            # every file, mode and byte as it was
fresh = v1.container()
assert fresh.fs.read_text("/app/server.py").startswith("VERSION = '1.0'")
assert fresh.fs.exists("/etc/passwd")
nbkit.table([("id", before["id"] == v1.id), ("digest", before["digest"] == v1.digest),
             ("diff_ids", before["diff_ids"] == v1.diff_ids), ("every file", before["tree"] == snapshot(v1.fs))],
            ["v1 after 20 containers", "unchanged?"])

# %% [markdown]
# Nothing in the API can change an image or a layer: the image's view refuses writes,
# a layer is a read-only mapping, and its entries are frozen values.

# %%
attempts = [
    "v1.fs.write_text('/etc/hostname', 'x')",
    "base['etc/hostname'] = b'x'",
    "base['etc/hostname'].data = b'x'",
]
rows = []
for statement in attempts:
    try:
        exec(statement)
        rows.append((statement, "succeeded (!)"))
    except Exception as e:  # noqa: BLE001 - shown, and the assert below checks none succeeded
        rows.append((statement, f"{type(e).__name__}: {e}"))
nbkit.table(rows, ["attempt", "result"])

# %%
assert all(not r.startswith("succeeded") for _, r in rows)
assert base["etc/hostname"].data == b"localhost\n"

# %% [markdown]
# ## Rebuilding makes a new image
#
# Version 1.1 of the app changes one file. The rebuilt image gets a new top layer and
# so a new image ID and digest. The layers below are the *same* layers, with the same
# digests: a registry already has them, and a host that pulled `v1` downloads only the new
# top layer.

# %%
v11 = ufs.Image.from_layers([base, deps, app_layer("1.1")], config=v1.config)
rows = [(f"layer {i}", nbkit.short(a), nbkit.short(b), "same" if a == b else "NEW")
        for i, (a, b) in enumerate(zip(v1.diff_ids, v11.diff_ids, strict=True))]
rows += [("image ID", nbkit.short(v1.id), nbkit.short(v11.id), "NEW"),
         ("digest", nbkit.short(v1.digest), nbkit.short(v11.digest), "NEW")]
nbkit.table(rows, ["", "v1.0", "v1.1", ""], highlight={i: "#fff8e1" for i, r in enumerate(rows) if r[3] == "NEW"})

# %%
assert v11.diff_ids[:2] == v1.diff_ids[:2] and v11.diff_ids[2] != v1.diff_ids[2]
assert v11.id != v1.id and v11.digest != v1.digest

# %% [markdown]
# A layer's identity in a stack also depends on everything below it: the **chain ID** of
# layer *n* hashes the chain ID of layer *n-1* with layer *n*'s diff_id. A change in a low
# layer gives every layer above it a new chain ID, even a layer whose own content did not
# change. (Docker keys its layer store by chain ID; chapter 6 shows the same rule in the
# build cache.)

# %%
new_deps = ufs.Layer.from_dict({"usr/lib/python3/site-packages/flask.py": b"# flask 3.1\n" * 500})
v12 = ufs.Image.from_layers([base, new_deps, app_layer("1.1")], config=v1.config)
rows = [(f"layer {i}", "same" if v11.diff_ids[i] == v12.diff_ids[i] else "NEW",
         "same" if v11.chain_ids[i] == v12.chain_ids[i] else "NEW") for i in range(3)]
nbkit.table(rows, ["v1.1 -> v1.2 (new deps)", "diff_id", "chain ID"])

# %%
assert v12.diff_ids[2] == v11.diff_ids[2]       # the app layer's content is the same ...
assert v12.chain_ids[2] != v11.chain_ids[2]     # ... but it sits on a different stack
assert v12.chain_ids[0] == v11.chain_ids[0]

# %% [markdown]
# ## Time is content too
#
# A layer records each file's modification time, so the same change made at two
# different moments gives two different layers. That is why two builds of the same
# Dockerfile usually give different digests, and why reproducible builds pin the clock
# (`SOURCE_DATE_EPOCH`), as these notebooks do. Here two containers make the same change
# and commit it, first with the wall clock, then with the fixed one:

# %%
def same_change_twice() -> tuple[str, str]:
    """Two containers write the same file and commit; the digests of the two new layers."""
    out = []
    for _ in range(2):
        c = v1.container()
        c.fs.write_text("/app/server.py", "VERSION = '1.0-patched'\n")
        out.append(c.commit().layers[-1].digest)
    return out[0], out[1]


with nbkit.real_clock():
    a, b = same_change_twice()
real_same = a == b
a, b = same_change_twice()
fixed_same = a == b
nbkit.table([("the wall clock", real_same), ("a fixed clock (SOURCE_DATE_EPOCH)", fixed_same)],
            ["commit the same change twice with", "same layer digest?"])

# %%
assert not real_same and fixed_same

# %% [markdown]
# ## Commit: a new image from a container
#
# `docker commit` freezes a container's upper layer into a new layer and stacks it on the
# container's image. The result is a new image; the old image, the container and the
# other containers are untouched, and the container can go on changing without
# affecting the image it was committed to.

# %%
c = v1.container()
c.fs.write_text("/etc/motd", "patched by hand, don't do this in production\n")
c.fs.unlink("/app/static/logo.png")
patched = c.commit(comment="hot fix", created_by="docker commit web1")
c.fs.write_text("/etc/motd", "changed again after the commit\n")

rows = [(i, nbkit.short(x.digest), len(x), "shared with v1" if i < len(v1.layers) and x is v1.layers[i] else "new")
        for i, x in enumerate(patched.layers)]
nbkit.table(rows, ["layer", "diff_id", "entries", ""],
            caption=f"patched: id {nbkit.short(patched.id)}, from v1 ({nbkit.short(v1.id)})")

# %%
assert len(patched.layers) == len(v1.layers) + 1
assert all(a is b for a, b in zip(patched.layers, v1.layers, strict=False))           # the old layers, shared
assert patched.chain_ids[:3] == v1.chain_ids
assert patched.history[-1].comment == "hot fix"
assert patched.fs.read_text("/etc/motd").startswith("patched by hand")  # a snapshot at commit time
assert not patched.fs.exists("/app/static/logo.png")
assert not v1.fs.exists("/etc/motd") and v1.fs.exists("/app/static/logo.png") and v1.id == before["id"]

# %%
nbkit.image_stack(patched, ["L0 base", "L1 deps", "L2 app 1.0", "L3 commit: hot fix"],
                  paths=["etc/hostname", "etc/motd", "app/server.py", "app/static/logo.png",
                         "usr/lib/python3/site-packages/flask.py"], title="the committed image")

# %% [markdown]
# The deleted logo is still in layer 2: committing a delete adds a whiteout, it frees
# nothing. The committed image is bigger than `v1`, never smaller.

# %%
size = lambda image: sum(x.size for x in image.layers)  # noqa: E731
print(f"v1: {size(v1):,} bytes of files; patched: {size(patched):,} bytes")
assert size(patched) > size(v1)

# %% [markdown]
# **In short**: images and layers are values. Containers write only to their own layer;
# rebuilding or committing makes new images with new digests, sharing every layer that
# did not change. Next: [5. Tags vs digests](05-tags-vs-digests.ipynb), how names point
# at these values.
