# %% [markdown]
# # 9. Beyond the tutorial
#
# Two things the model can do that a tutorial usually cannot: mount a container so that
# any program can browse it as a real directory, and test a tool of your own against the
# model with generated images, so that the cases you did not think of are found for you.

# %%
import os
import shlex
import subprocess
import tempfile

import nbkit
from hypothesis import given, settings
from IPython.display import display

import unionfs_sim as ufs
from unionfs_sim.fuse import fuse_unavailable
from unionfs_sim.testing import strategies as ust
from unionfs_sim.testing.compare import snapshot

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the outputs never change

# %% [markdown]
# ## Mounting a container (optional: needs FUSE)
#
# `ufs.mount(container, directory)` shows the container's merged view in a real
# directory through FUSE, read-write: real programs (`ls`, `grep`, your editor) read the
# image's layers through it, and whatever they write lands in the container's upper
# layer in the model. It needs `/dev/fuse` and root or `fusermount3`; where this machine
# has neither, the cell below says so and skips.

# %%
base = ufs.Layer.from_dict({
    "etc/": ufs.Dir(), "etc/app.conf": b"workers = 2\nport = 8080\n", "etc/motd": b"Welcome!\n",
    "app/": ufs.Dir(), "app/main.py": b"import os\nprint('hello')\n",
})
image = ufs.Image.from_layers([base], config=ufs.ImageConfig(cmd=["python3", "/app/main.py"]))
c = image.container()

# %% tags=["env"]
reason = fuse_unavailable()
if reason:
    print(f"skipped: FUSE is not available here ({reason})")
else:
    # Without root the files (owned by uid 0) would be read-only to you; as in a rootless
    # container, act as the container's root on your own mount (no one else can enter it).
    rootless = {} if os.geteuid() == 0 else {"default_permissions": False}
    with tempfile.TemporaryDirectory() as mnt, ufs.mount(c, mnt, **rootless):

        def sh(*argv):
            """Run a real program on the mount; show its output with the mount point as $MNT."""
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            print("$", shlex.join(argv).replace(mnt, "$MNT"), "\n" + out.replace(mnt, "$MNT"))

        sh("ls", "-R", mnt)
        sh("grep", "-rn", "port =", mnt)
        with open(os.path.join(mnt, "etc/app.conf"), "a") as f:  # a real write(2) through the kernel
            f.write("debug = true\n")
        os.remove(os.path.join(mnt, "etc/motd"))
    print("docker diff of the container after the mount:", [str(ch) for ch in c.diff()])
    assert c.fs.read_text("/etc/app.conf").endswith("debug = true\n")
    assert c.upper["etc/motd"] is ufs.WHITEOUT
    assert image.fs.read_text("/etc/app.conf") == "workers = 2\nport = 8080\n"

# %% [markdown]
# From a shell the same is `unionfs-sim mount path/to/oci-layout /mnt/view --tag 1.0`
# (see the project README).
#
# ## Property-testing a tool of your own
#
# Say you write a tool that needs an image's final file tree, the way `docker export`
# flattens it: apply the layers bottom-up, whiteouts deleting what is below. A first
# version, the obvious one:

# %%
def flatten_v1(layers):
    """Apply the layers bottom-up into {path: kind}: whiteouts delete, everything else is set."""
    tree = {}
    for layer in layers:
        for key in sorted(layer, key=lambda k: k.split("/")):
            entry = layer[key]
            if key == "":  # the root directory itself
                continue
            if entry is ufs.WHITEOUT:
                tree = {p: k for p, k in tree.items() if p != key and not p.startswith(key + "/")}
            else:
                tree[key] = entry.kind
    return tree

# %% [markdown]
# To test it, compare it with the model on random images. `unionfs_sim.testing.strategies`
# generates valid images for [Hypothesis](https://hypothesis.readthedocs.io): layers with
# files, directories, opaque directories, whiteouts, symlinks and hard links, colliding
# on a few names on purpose. The model's merged view is the expected answer:

# %%
def expected(image):
    """The model's merged tree as {path: kind}."""
    return {p.lstrip("/"): v[0] for p, v in snapshot(image.fs, listed_absent=False).items() if p != "/"}


failures = []


def check(flatten):
    """Run ``flatten`` against the model on 200 generated images; return the smallest failing image or None."""
    failures.clear()

    @settings(max_examples=200, deadline=None, derandomize=True, database=None, print_blob=False)
    @given(ust.images(max_layers=3))
    def test(image):
        if flatten(image.layers) != expected(image):
            failures.append(image)  # Hypothesis shrinks the failure and runs the smallest one last
            raise AssertionError("flatten differs from the model")

    try:
        test()
    except AssertionError:
        return failures[-1]
    return None

# %% tags=["env"]
bad = check(flatten_v1)
assert bad is not None  # the obvious version is wrong
for i, layer in enumerate(bad.layers):
    display(nbkit.changeset(layer, caption=f"layer {i} of the smallest image that breaks flatten_v1"))
nbkit.table([("flatten_v1", sorted(flatten_v1(bad.layers).items())), ("the model", sorted(expected(bad).items()))],
            ["", "tree"])

# %% [markdown]
# (The exact example depends on the Hypothesis version; the cell's output is therefore
# not compared in CI, only its `assert`.) What `flatten_v1` misses, the model knows:
#
# - an **opaque directory** hides everything the layers below have under it;
# - a file (or symlink, or whiteout) that replaces a **directory** removes its contents;
# - a layer may hold `a/b` without an entry for `a`: the parent is then a directory,
#   replacing a file `a` of a lower layer.
#
# The second version handles all three:

# %%
def flatten_v2(layers):
    """Apply OCI layers bottom-up into {path: kind}, as `docker export` does."""
    tree = {}

    def cut(path):  # remove path and everything below it
        return {p: k for p, k in tree.items() if p != path and not p.startswith(path + "/")}

    for layer in layers:
        for key in sorted(layer, key=lambda k: k.split("/")):
            if key == "":                                     # the root directory itself
                continue
            entry, parts = layer[key], key.split("/")
            for i in range(1, len(parts)):                    # parents become directories
                parent = "/".join(parts[:i])
                if tree.get(parent) != "d":
                    tree = cut(parent)
                    tree[parent] = "d"
            merge = isinstance(entry, ufs.Dir) and not entry.opaque and tree.get(key) == "d"
            if not merge:                                     # whiteouts, files, opaque dirs replace
                tree = cut(key)
            if entry is not ufs.WHITEOUT:
                tree[key] = entry.kind
    return tree


assert check(flatten_v2) is None
print("flatten_v2 agrees with the model on 200 generated images")

# %% [markdown]
# The same idea scales up: `unionfs_sim.testing.machines.DifferentialMachine` runs random
# sequences of file operations (create, write, rename, delete, chmod...) on a model
# container and on a filesystem of yours (a FUSE mount, a snapshotter, a real overlay)
# and compares every result, errno and tree; `KernelOverlay` is the real kernel behind
# the same API (root only), which is how the model itself is tested.
#
# **The end.** Back to [1. What an image is](01-what-an-image-is.ipynb), or to the
# [project README](../README.md).
