# %% [markdown]
# # 8. Inspecting images
#
# Where do an image's bytes come from, and which of them does it carry for nothing? This
# notebook builds an image with the usual mistakes, then looks at it the way the usual
# tools do: `docker image inspect`, `docker history`, dive's efficiency score, and
# `docker system df -v` across images and containers, and fixes it.
#
# The views (`ufs.analysis`, and the tables an image or a result shows in Jupyter) are
# exact where Docker and dive are right, and say so where they are not.

# %%
import matplotlib.pyplot as plt
import nbkit
from IPython.display import display

import unionfs_sim as ufs

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the outputs never change

# %% [markdown]
# ## An image with the usual mistakes
#
# A Python service on a slim base image. `apt-get` and `pip` cannot download anything
# here, so two Python functions stand in for them and write what they would: package
# lists, a compiler, the installed library, and pip's download cache.

# %%
base = ufs.Image.from_layers(
    [ufs.Layer.from_dict({"bin/sh": ufs.File(bytes(100_000), mode=0o755),
                          "usr/bin/python3": ufs.File(bytes(400_000), mode=0o755),
                          "etc/os-release": b"ID=debian\nVERSION_ID=12\n", "var/lib/apt/lists/": ufs.Dir(),
                          "tmp/": ufs.Dir(mode=0o1777)})],
    config=ufs.ImageConfig(cmd=["python3"], env=["PATH=/usr/local/bin:/usr/bin:/bin"]),
    history=[ufs.History(created_by="/bin/sh -c #(nop) ADD file:4a1b2c3d in / ", created="2023-12-20T00:00:00Z")])


def apt_get(fs, env):
    """`apt-get update && apt-get install -y gcc`: package lists and a compiler."""
    fs.write_bytes("/var/lib/apt/lists/deb.debian.org_bookworm_main_Packages", bytes(900_000))
    fs.write_bytes("/usr/bin/gcc", bytes(700_000))
    fs.chmod("/usr/bin/gcc", 0o755)


def pip(fs, env):
    """`pip install -r requirements.txt`: the library, and the downloaded wheel in pip's cache."""
    fs.makedirs("/usr/local/lib/python3.12/site-packages/numpy", exist_ok=True)
    fs.write_bytes("/usr/local/lib/python3.12/site-packages/numpy/core.so", bytes(1_200_000))
    if env.get("PIP_NO_CACHE_DIR") not in ("1", "true", "on"):
        fs.makedirs("/root/.cache/pip/wheels", exist_ok=True)
        fs.write_bytes("/root/.cache/pip/wheels/numpy-1.26.4.whl", bytes(1_000_000))


context = {"requirements.txt": "numpy==1.26.4\n", "main.py": "import numpy\nprint('ok')\n" * 20,
           "data/model.bin": bytes(300_000)}
b = ufs.Builder(commands={"apt-get": apt_get, "pip": pip}, isolation="python", epoch=1704067200)
b.add(base, "python:3.12-slim")

DOCKERFILE = """\
FROM python:3.12-slim
RUN apt-get update && apt-get install -y gcc
RUN rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN chmod -R 755 /app
LABEL org.opencontainers.image.source=https://example.com/app
CMD ["python3", "main.py"]
"""
app1 = b.build(context, dockerfile_text=DOCKERFILE, tag="app:1").image
display(app1)  # an image shows itself in Jupyter: its layers, their sizes and the steps that made them

# %% [markdown]
# ## `docker image inspect`
#
# The image's metadata as Docker reports it: the ID (digest of the config), the config
# a container starts with, the layer digests (`RootFS.Layers`) and the total size.

# %%
doc = app1.inspect(repo_tags=["app:1"])
nbkit.table([(k, doc[k]) for k in ("Id", "RepoTags", "Created", "Architecture", "Os", "Size")]
            + [(f"Config.{k}", doc["Config"][k]) for k in ("Env", "Cmd", "WorkingDir", "Labels")]
            + [("RootFS.Layers", f"{len(doc['RootFS']['Layers'])} layers")],
            ["field", "value"], caption="docker image inspect app:1 (a selection)")

# %%
assert doc["Id"] == app1.id and doc["RootFS"]["Layers"] == app1.diff_ids
assert doc["Config"]["Cmd"] == ["python3", "main.py"] and doc["Config"]["WorkingDir"] == "/app"
assert doc["Size"] == sum(ufs.analysis.layer_sizes(app1.layers))

# %% [markdown]
# ## `docker history`: which step made which bytes
#
# One row per step, newest first. Steps that only change the config (`LABEL`, `CMD`)
# made no layer and show 0 B. Rows other than the top say `<missing>`: those
# intermediate images are not in the local image store (they never are with BuildKit,
# nor after a pull).

# %%
rows = ufs.analysis.history(app1, tags=["app:1"])
nbkit.table([(nbkit.short(r.id) if r.id != "<missing>" else r.id, r.created_by[:70], nbkit.human(r.size))
             for r in rows], ["IMAGE", "CREATED BY", "SIZE"], caption="docker history app:1")

# %%
by_step = {r.created_by: r.size for r in rows}
assert rows[0].created_by.startswith('CMD ["python3" "main.py"]') and rows[0].size == 0
assert by_step["RUN /bin/sh -c rm -rf /var/lib/apt/lists/* # buildkit"] == 0   # a delete adds no bytes ...
assert by_step["RUN /bin/sh -c chmod -R 755 /app # buildkit"] > 300_000          # ... but a chmod copies files

# %% [markdown]
# Docker's classic builder (`DOCKER_BUILDKIT=0`) is the exception: it commits an image
# after every step, so on the daemon that built it `docker history` shows each step's
# image id, and `docker image inspect` names the step before as `Parent`. A `Builder`
# keeps those images too: give it to `history` and `inspect` as the image store.

# %%
classic = b.build(context, dockerfile_text=DOCKERFILE, tag="app:classic", rules="classic").image
crows = ufs.analysis.history(classic, store=b)
nbkit.table([(nbkit.short(r.id) if r.id != "<missing>" else r.id, r.created_by[:70], nbkit.human(r.size))
             for r in crows], ["IMAGE", "CREATED BY", "SIZE"], caption="docker history app:classic")

# %%
assert classic.inspect(store=b)["Parent"] == crows[1].id                       # the step before
assert all(r.id != "<missing>" for r in crows)                                 # every step's image is kept
assert ufs.analysis.history(classic)[1].id == "<missing>"                      # without the store: as after a pull

# %% [markdown]
# ## Efficiency: bytes stored but never seen
#
# `rm -rf /var/lib/apt/lists/*` in its own step made the image no smaller: the lists
# are still in the layer below, hidden by whiteouts. `chmod -R` copied every file of
# `/app` into a new layer to change its mode: the copies below are hidden. Those hidden
# bytes are what squashing the image would save, and what efficiency measures:

# %%
eff = ufs.analysis.efficiency(app1)
display(eff)

# %%
eff.plot()
plt.show()

# %%
found = {f.path: (f.kind, f.bytes) for f in eff.findings}
assert found["/var/lib/apt/lists/deb.debian.org_bookworm_main_Packages"] == ("deleted", 900_000)
assert found["/app/data/model.bin"] == ("metadata-only", 300_000)
assert eff.reclaimable_bytes == sum(f.bytes for f in eff.findings) == eff.wasted_bytes
assert round(eff.score, 3) == round(1 - eff.reclaimable_bytes / eff.size_bytes, 3)

# %% [markdown]
# ### Where dive says otherwise
#
# [dive](https://github.com/wagoodman/dive) computes the same kind of score, with two
# faults that `method="dive"` reproduces to the byte so that CI thresholds carry over:
# for every path in two or more layers it counts **every** copy as waste, including the
# one that stays visible (dive issue #684), and it ignores opaque directories. Here the
# first fault doubles every `chmod`-copied file:

# %%
dive = ufs.analysis.efficiency(app1, method="dive")
ours = {f.path: f.bytes for f in eff.findings}
why = "the copy that stays is counted too"
rows = [(f.path, f.bytes, ours.get(f.path, 0), why if f.bytes > ours.get(f.path, 0) else "") for f in dive.findings]
nbkit.table(rows + [("total", dive.wasted_bytes, eff.reclaimable_bytes, "")],
            ["path", "dive: wasted", "really reclaimable", "why they differ"], highlight={len(rows): "#f3f3f3"})

# %%
assert dive.wasted_bytes > dive.reclaimable_bytes == eff.reclaimable_bytes
assert dict((f.path, f.bytes) for f in dive.findings)["/app/data/model.bin"] == 2 * 300_000

# %% [markdown]
# ### Big, visible, and still not needed
#
# Efficiency only sees hidden bytes. pip's download cache is visible in the final
# filesystem, so it is not "waste" by that measure, yet nothing at run time needs it, nor
# the compiler. The largest files of the merged view show them:

# %%
sizes = []
for top, _dirs, files in app1.fs.walk("/"):
    for name in files:
        p = f"{top.rstrip('/')}/{name}"
        sizes.append((app1.fs.lstat(p).st_size, p, app1.fs.which_layer(p)))
sizes.sort(reverse=True)
steps = [h.created_by for h in app1.history if not h.empty_layer]
nbkit.table([(p, nbkit.human(n), steps[i][:60]) for n, p, i in sizes[:5]], ["path", "size", "made by"],
            caption="the five largest files of app:1")

# %%
wheel = "/root/.cache/pip/wheels/numpy-1.26.4.whl"
assert wheel not in ours and sizes[1][1] == wheel  # not waste, and the second largest file

# %% [markdown]
# ## The fix
#
# A multi-stage build compiles and installs in a first stage and copies only the
# installed library into a clean final stage; no compiler, no package lists, no pip
# cache, and no `chmod -R` (the files already have the modes they need).

# %%
FIXED = """\
FROM python:3.12-slim AS build
RUN apt-get update && apt-get install -y gcc
ENV PIP_NO_CACHE_DIR=1
COPY requirements.txt .
RUN pip install -r requirements.txt
FROM python:3.12-slim
COPY --from=build /usr/local/lib/python3.12/site-packages /usr/local/lib/python3.12/site-packages
WORKDIR /app
COPY . .
LABEL org.opencontainers.image.source=https://example.com/app
CMD ["python3", "main.py"]
"""
app2 = b.build(context, dockerfile_text=FIXED, tag="app:2").image
eff2 = ufs.analysis.efficiency(app2)
total = lambda image: sum(ufs.analysis.layer_sizes(image.layers))  # noqa: E731
nbkit.table([(name, len(image.layers), nbkit.human(total(image)), f"{e.score:.0%}", nbkit.human(e.reclaimable_bytes))
             for name, image, e in (("app:1", app1, eff), ("app:2 (multi-stage)", app2, eff2))],
            ["image", "layers", "size", "efficiency", "reclaimable"])

# %%
fig, ax = plt.subplots(figsize=(6, 1.8))
ax.barh(["app:2 (multi-stage)", "app:1"], [total(app2) / 1e6, total(app1) / 1e6], color=["#54a24b", "#e45756"])
for y, image in enumerate([app2, app1]):
    ax.text(total(image) / 1e6, y, f" {nbkit.human(total(image))}", va="center")
ax.set_xlabel("MB")
ax.set_xlim(0, total(app1) / 1e6 * 1.25)
ax.spines[["top", "right"]].set_visible(False)
plt.show()

# %%
assert eff2.reclaimable_bytes == 0 and eff2.score == 1.0
assert not app2.fs.exists("/usr/bin/gcc") and not app2.fs.exists("/root/.cache")
assert app2.fs.exists("/usr/local/lib/python3.12/site-packages/numpy/core.so")
assert total(app2) < total(app1) / 2

# %% [markdown]
# ## `docker system df -v`: disk usage across images and containers
#
# On a host, images that share layers store them once, and each container adds only its
# writable layer. `docker system df -v` reports each image's **size**, the part
# **shared** with other images and its **unique** part, and each container's own size.

# %%
web1, web2 = app2.container(), app2.container()
web1.fs.write_bytes("/tmp/upload.bin", bytes(50_000))
web2.fs.write_text("/app/main.py", "print('patched in place')\n")
du = ufs.analysis.disk_usage(images={"python:3.12-slim": base, "app:1": app1, "app:2": app2},
                             containers={"web1": web1, "web2": web2})
display(du)

# %%
rows = {r.name: r for r in du.images}
base_size = total(base)
assert rows["python:3.12-slim"].shared_size == base_size and rows["python:3.12-slim"].unique_size == 0
assert rows["app:1"].shared_size == rows["app:2"].shared_size == base_size  # the base layer, stored once
assert du.layers_size == total(app1) + total(app2) - base_size
assert {c.name: c.size for c in du.containers} == {"web1": 50_000, "web2": len("print('patched in place')\n")}

# %% [markdown]
# **In short**: `inspect` tells what an image is, `history` which step made which
# bytes, efficiency which bytes are stored but never seen (with dive's numbers where a
# gate needs them), and `df` what a host really stores. Next:
# [9. Beyond the tutorial](09-beyond-the-tutorial.ipynb).
