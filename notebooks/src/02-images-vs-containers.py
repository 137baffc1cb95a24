# %% [markdown]
# # 2. Images vs containers
#
# An **image** is a read-only template; a **container** is one running copy of it. The
# copy is not a copy: every container of an image uses the image's layers as they are
# and gets only a thin **writable layer** of its own on top. This notebook shows what that
# costs (almost nothing), and walks through `docker run nginx` one step at a time.

# %%
import tracemalloc

import matplotlib.pyplot as plt
import nbkit
from IPython.display import display

import unionfs_sim as ufs

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the outputs never change

# %% [markdown]
# ## An nginx-like image in a registry
#
# We make a small image shaped like the official `nginx`: a base filesystem, the nginx
# binary and its config, and an entrypoint script; the config says what to start. Then
# we push it to an in-memory registry standing in for Docker Hub.

# %%
base = ufs.Layer.from_dict({
    "bin/sh": ufs.File(bytes(120_000), mode=0o755),
    "lib/x86_64-linux-gnu/libc.so.6": bytes(1_900_000),
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/nonexistent:/bin/false\n",
    "etc/hostname": b"localhost\n",
    "run/": ufs.Dir(), "tmp/": ufs.Dir(mode=0o1777),
})
nginx = ufs.Layer.from_dict({
    "usr/sbin/nginx": ufs.File(bytes(1_400_000), mode=0o755),
    "etc/nginx/nginx.conf": b"user nginx;\nworker_processes auto;\ninclude /etc/nginx/conf.d/*.conf;\n",
    "etc/nginx/conf.d/default.conf": b"server {\n    listen 80;\n    root /usr/share/nginx/html;\n}\n",
    "usr/share/nginx/html/index.html": b"<h1>Welcome to nginx!</h1>\n",
    "var/cache/nginx/": ufs.Dir(),
})
entry = ufs.Layer.from_dict({
    "docker-entrypoint.sh": ufs.File(b"#!/bin/sh\nset -e\nexec \"$@\"\n", mode=0o755),
})
config = ufs.ImageConfig(
    entrypoint=["/docker-entrypoint.sh"], cmd=["nginx", "-g", "daemon off;"],
    env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_VERSION=1.27.3"],
    exposed_ports=["80/tcp"], stop_signal="SIGQUIT",
)
hub = ufs.Registry()  # "Docker Hub"
hub.push(ufs.Image.from_layers([base, nginx, entry], config=config), "nginx:1.27")
hub.tag("nginx:1.27", "nginx:latest")
nbkit.table([(r, ", ".join(hub.tags(r))) for r in hub.repositories()], ["repository", "tags"], caption="the registry")

# %% [markdown]
# ## `docker run nginx`, step by step
#
# Here is what the Docker daemon does for `docker run nginx`, written out on the model in
# a dozen lines. The local image store is a dict; the registry is the one above.

# %%
local_images: dict[str, ufs.Image] = {}  # what `docker images` lists: reference -> image


def docker_run(name: str, *args: str) -> tuple[ufs.Container, list[str], list[tuple[str, str]]]:
    """The model's `docker run NAME [ARGS...]`: the container, the process's argv, and each step taken."""
    steps = []
    ref = ufs.Reference.parse(name)                      # 1. resolve the reference
    if ref.tag is None and ref.digest is None:
        ref = ref.with_default_tag()                     #    no tag: "latest" is filled in
    steps.append(("resolve", f"{name!r} means {ref}"))
    image = local_images.get(str(ref))                   # 2. look in the local image store
    if image is None:
        image = local_images[str(ref)] = hub.pull(ref)
        steps.append(("pull", f"not found locally: pulled {ref.familiar} ({len(image.layers)} layers)"))
    else:
        steps.append(("local", "found in the local image store: no pull"))
    c = image.container()                                # 3. create the container
    steps.append(("create", f"container over the image's {len(image.layers)} shared layers"))
    steps.append(("writable layer", f"a new, empty upper layer ({len(c.upper)} entries)"))
    cfg = image.config                                   # 4. the process it starts
    argv = [*(cfg.entrypoint or ()), *(args or cfg.cmd or ())]  # arguments replace CMD, never ENTRYPOINT
    steps.append(("start", f"argv={argv} cwd={cfg.working_dir or '/'} user={cfg.user or 'root'}"))
    return c, argv, steps


web1, argv, steps = docker_run("nginx")
nbkit.table(steps, ["step", "what happens"], caption="docker run nginx")

# %%
assert argv == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
assert set(local_images) == {"docker.io/library/nginx:latest"}
assert len(web1.upper) == 0  # a new container has changed nothing yet

# %% [markdown]
# The second time, the image is already local, so nothing is pulled. Arguments after the
# image name replace `CMD` but keep the `ENTRYPOINT`:

# %%
web2, argv2, steps2 = docker_run("nginx", "nginx", "-T")
nbkit.table(steps2, ["step", "what happens"], caption="docker run nginx nginx -T")

# %%
assert [s for s, _ in steps2] == ["resolve", "local", "create", "writable layer", "start"]
assert argv2 == ["/docker-entrypoint.sh", "nginx", "-T"]

# %% [markdown]
# ## Each container writes only to its own layer
#
# nginx writes its pid file and cache directories; a user edits the home page in one
# container only. Each container's writes land in its own upper layer: the other
# container and the image see nothing of them.

# %%
for c in (web1, web2):
    c.fs.write_text("/run/nginx.pid", "1\n")
    c.fs.makedirs("/var/cache/nginx/client_temp")
web1.fs.write_text("/usr/share/nginx/html/index.html", "<h1>web1 says hi</h1>\n")

nbkit.table([(name, c.fs.read_text("/usr/share/nginx/html/index.html").strip(), ", ".join(map(str, c.diff())))
             for name, c in (("web1", web1), ("web2", web2))],
            ["container", "index.html", "docker diff"])

# %%
image = local_images["docker.io/library/nginx:latest"]
assert image.fs.read_text("/usr/share/nginx/html/index.html") == "<h1>Welcome to nginx!</h1>\n"
assert web2.fs.read_text("/usr/share/nginx/html/index.html") == "<h1>Welcome to nginx!</h1>\n"
assert [str(ch) for ch in web2.diff()] == ["C /run", "A /run/nginx.pid",
                                           "C /var/cache/nginx", "A /var/cache/nginx/client_temp"]

# %% [markdown]
# A container shows itself in Jupyter as the image's layers with its own writable layer on
# top, and its `docker diff`; the picture below puts every path of interest in its layer.

# %%
display(web1)

# %%
nbkit.container_stack(web1, ["L0 base", "L1 nginx", "L2 entrypoint"], title="web1: three shared layers and its own",
                      paths=["bin/sh", "etc/nginx/nginx.conf", "usr/sbin/nginx", "usr/share/nginx/html/index.html",
                             "docker-entrypoint.sh", "run/nginx.pid", "var/cache/nginx/client_temp"])

# %% [markdown]
# ## What sharing costs: storage
#
# `docker ps --size` shows two numbers per container: **SIZE**, the bytes of its writable
# layer, and the **virtual size**, that plus the image it shares. Only SIZE is the
# container's own.

# %%
image_bytes = sum(layer.size for layer in image.layers)
rows = [(name, nbkit.human(c.upper_size()), nbkit.human(c.upper_size() + image_bytes))
        for name, c in (("web1", web1), ("web2", web2))]
nbkit.table(rows, ["container", "SIZE (own)", "virtual size"], caption=f"image: {nbkit.human(image_bytes)}")

# %%
assert web2.upper_size() == 2  # "1\n": nothing of the image was copied
assert web1.upper_size() == 2 + len("<h1>web1 says hi</h1>\n")
assert all(a is b for a, b in zip(web1.image.layers, web2.image.layers, strict=True))  # the very same layer objects

# %% [markdown]
# A hundred containers of this image, each writing a small pid file, store the image
# once; a copy per container would store it a hundred times:

# %%
fleet = [image.container() for _ in range(100)]
for c in fleet:
    c.fs.write_text("/run/nginx.pid", "1\n")
shared = image_bytes + sum(c.upper_size() for c in fleet)
copied = len(fleet) * image_bytes + sum(c.upper_size() for c in fleet)

fig, ax = plt.subplots(figsize=(6, 1.8))
ax.barh(["a copy per container", "shared layers + upper layers"], [copied / 1e6, shared / 1e6],
        color=["#e45756", "#54a24b"])
ax.set_xlabel("MB on disk for 100 containers")
for y, v in enumerate([copied, shared]):
    ax.text(v / 1e6, y, f" {nbkit.human(v)}", va="center")
ax.set_xlim(0, copied / 1e6 * 1.2)
ax.spines[["top", "right"]].set_visible(False)
plt.show()

# %%
assert shared == image_bytes + 100 * 2
assert copied / shared > 99

# %% [markdown]
# ## What sharing costs: memory
#
# Creating a container copies nothing in the model either: it points at the image's
# flattened index of its layers, built once and shared. We count the bytes Python
# allocates while making a thousand containers and reading one file in each:

# %%
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
many = [image.container() for _ in range(1000)]
for c in many:
    c.fs.read_bytes("/etc/hostname")
per_container = (tracemalloc.get_traced_memory()[0] - before) / len(many)
tracemalloc.stop()
print(f"image: {nbkit.human(image_bytes)} of files; one more container: under 2 kB of memory"
      if per_container < 2000 else f"one container: {per_container:.0f} bytes")

# %%
assert per_container < 2000, per_container
assert all(c.image.lower is image.lower for c in many)  # one shared index of the layers

# %% [markdown]
# **In short**: an image is shared, read-only; a container is that image plus a writable
# layer of its own, empty at first. `docker run` resolves the name, pulls only if the
# image is not local, creates that layer and starts `ENTRYPOINT + CMD`. Next:
# [3. Layers, copy-up and whiteouts](03-layers-copy-up-whiteouts.ipynb), what happens
# inside the writable layer.
