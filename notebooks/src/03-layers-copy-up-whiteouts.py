# %% [markdown]
# # 3. Layers, copy-up and whiteouts
#
# A container's writable layer sits on top of the image's read-only layers (the kernel's
# overlayfs calls them *upper* and *lower*). The layers below can never change, so every
# change a container makes is recorded in its upper layer, in three ways:
#
# | the container... | the upper layer gets | called |
# |---|---|---|
# | changes a file of the image | a full copy of the file, then changed | **copy-up** |
# | deletes a file of the image | a marker that hides it | **whiteout** |
# | deletes a directory and makes it again | a directory that hides everything below it | **opaque directory** |
#
# This notebook makes each happen, shows the upper layer, compares it with `docker diff`,
# and writes it out in the kernel's own on-disk format.

# %%
import errno
import os
import shutil
import tempfile

import attrs
import nbkit

import unionfs_sim as ufs
from unionfs_sim.testing import KernelOverlay, KernelUnavailable
from unionfs_sim.testing.compare import layer_shape, snapshot

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the outputs never change

# %%
base = ufs.Layer.from_dict({
    "etc/": ufs.Dir(),
    "etc/motd": b"Welcome!\n",
    "etc/app.conf": b"workers = 2\nport = 8080\n",
    "var/lib/app/": ufs.Dir(),
    "var/lib/app/data.db": bytes(2_000_000),               # a 2 MB database file
    "var/lib/apt/lists/": ufs.Dir(),
    "var/lib/apt/lists/main_Packages": bytes(300_000),
    "var/lib/apt/lists/updates_Packages": bytes(100_000),
    "usr/bin/app": ufs.File(bytes(50_000), mode=0o755),
})
image = ufs.Image.from_layers([base])
names = ["L0 image"]
print(f"image: {len(base)} entries, {nbkit.human(base.size)} of files")

# %% [markdown]
# ## Reading copies nothing
#
# A new container's upper layer is empty, and reading does not change that: reads go
# straight to the image's layer.

# %%
c = image.container()
assert c.fs.read_bytes("/etc/motd") == b"Welcome!\n"
assert c.fs.listdir("/var/lib/apt/lists") == ["main_Packages", "updates_Packages"]
assert len(c.upper) == 0 and c.fs.which_layer("/etc/motd") == 0
print("upper layer after reading:", dict(c.upper))

# %% [markdown]
# ## Copy-up: the first write copies the whole file
#
# Changing one byte of the 2 MB database copies the **whole file** into the upper
# layer first (overlayfs copies up on the first open for writing); from then on the
# container's view of that path comes from the upper layer. The image's copy is untouched.

# %%
with c.fs.open("/var/lib/app/data.db", "r+b") as f:
    f.seek(1000)
    f.write(b"\x01")

db = "/var/lib/app/data.db"
nbkit.table([(db, c.fs.which_layer(db), nbkit.human(c.upper[db.lstrip("/")].size), nbkit.human(c.upper_size()))],
            ["path", "now from layer (1 = upper)", "copied into the upper", "upper layer size"])

# %%
assert c.fs.which_layer("/var/lib/app/data.db") == len(image.layers)  # the upper layer
assert c.upper["var/lib/app/data.db"].size == 2_000_000                # all of it, for one byte
assert c.upper_size() == 2_000_000
assert image.fs.read_bytes("/var/lib/app/data.db")[1000] == 0          # the image's file is unchanged
assert c.fs.read_bytes("/var/lib/app/data.db")[1000] == 1

# %% [markdown]
# The directories on the way (`/var`, `/var/lib`, `/var/lib/app`) are copied up too,
# but only as empty directories, to hold the file: their other contents stay below.
#
# Changing only metadata (`chmod`, `chown`) also copies the whole file up, unless the
# overlay is mounted with `metacopy=on`, which copies the metadata alone (Docker does not
# turn it on):

# %%
rows = []
for metacopy in (False, True):
    k = image.container(options=ufs.OverlayOptions(metacopy=metacopy))
    k.fs.chmod("/usr/bin/app", 0o700)
    rows.append((f"metacopy={'on' if metacopy else 'off'}", "chmod 700 /usr/bin/app", nbkit.human(k.upper_size())))
    if not metacopy:
        assert k.upper_size() == 50_000
    else:
        assert k.upper_size() == 0 and k.fs.read_bytes("/usr/bin/app") == bytes(50_000)
nbkit.table(rows, ["overlay", "operation", "data copied up"])

# %% [markdown]
# ## Whiteouts: deleting a file of the image
#
# The image's `/etc/motd` cannot be removed from its layer. Deleting it in the container
# puts a **whiteout** at that path in the upper layer, and the merged view skips it.

# %%
c.fs.unlink("/etc/motd")
assert c.upper["etc/motd"] is ufs.WHITEOUT
assert not c.fs.exists("/etc/motd") and c.fs.listdir("/etc") == ["app.conf"]
assert image.fs.read_bytes("/etc/motd") == b"Welcome!\n"  # still in the image, for every other container
print("upper layer entry for etc/motd:", c.upper["etc/motd"])

# %% [markdown]
# Deleting a file costs nothing in space: the image keeps it. This is why
# `RUN rm big-file` in a later Dockerfile step never makes an image smaller.
#
# ## Opaque directories: delete a directory, make it again
#
# `apt-get update` empties `/var/lib/apt/lists` and fills it again. If the new directory
# were an ordinary directory in the upper layer, the old files of the layer below would
# show through it again. So overlayfs marks it **opaque**: nothing below it is merged.

# %%
for name in c.fs.listdir("/var/lib/apt/lists"):
    c.fs.unlink(f"/var/lib/apt/lists/{name}")
c.fs.rmdir("/var/lib/apt/lists")
c.fs.mkdir("/var/lib/apt/lists")
c.fs.write_bytes("/var/lib/apt/lists/new_Packages", bytes(1_000))

nbkit.changeset(c.upper, caption="the container's upper layer now")

# %%
lists = c.upper["var/lib/apt/lists"]
assert isinstance(lists, ufs.Dir) and lists.opaque
assert c.fs.listdir("/var/lib/apt/lists") == ["new_Packages"]  # nothing of the image's lists shows through
assert "var/lib/apt/lists/main_Packages" not in c.upper           # the opaque dir hides them: no whiteouts needed

# %%
nbkit.container_stack(c, names, title="the container: image layer below, upper layer above, merged view on top",
                      paths=["etc/motd", "etc/app.conf", "usr/bin/app", "var/lib/app/data.db", "var/lib/apt/lists",
                             "var/lib/apt/lists/main_Packages", "var/lib/apt/lists/updates_Packages",
                             "var/lib/apt/lists/new_Packages"])

# %% [markdown]
# ## Renaming a directory of the image
#
# A directory of a lower layer cannot simply be renamed: its contents are in a layer
# that cannot change. With overlayfs's default options `rename(2)` fails with `EXDEV`
# ("cross-device link"), and `mv` then falls back to copying the whole tree and deleting
# the old one. With `redirect_dir=on` the kernel records a redirect instead.

# %%
try:
    c.fs.rename("/var/lib/app", "/var/lib/app-old")
except OSError as e:
    print(f"rename: {errno.errorcode[e.errno]} ({e.strerror})")
    assert e.errno == errno.EXDEV
else:
    raise AssertionError("rename of a lower directory should fail with EXDEV")

r = image.container(options=ufs.OverlayOptions(redirect_dir=True))
r.fs.rename("/var/lib/app", "/var/lib/app-old")
print("with redirect_dir=on:", r.fs.listdir("/var/lib"), "redirect:", r.upper["var/lib/app-old"].redirect)
assert r.fs.listdir("/var/lib/app-old") == ["data.db"] and r.upper_size() == 0  # nothing copied

# %% [markdown]
# ## `docker diff`
#
# `docker diff` reads the upper layer and reports each path as **A**dded, **C**hanged or
# **D**eleted. A whiteout is a D; an opaque directory over an existing one is reported as
# deleted too (its old contents are gone), with its new contents added. A directory that
# was copied up only to hold a file, and did not itself change, is not listed.

# %%
changes = c.diff()
nbkit.table([(ch.kind, ch.path) for ch in changes], ["", "path"], caption="docker diff",
            highlight={i: {"A": "#e8f5e9", "C": "#fff8e1", "D": "#fde2e2"}[ch.kind] for i, ch in enumerate(changes)})

# %%
assert [str(ch) for ch in changes] == [
    "C /etc", "D /etc/motd",                                    # a delete changes its directory
    "C /var/lib/app/data.db",                                   # /var/lib/app was only copied up: not listed
    "C /var/lib/apt", "D /var/lib/apt/lists", "A /var/lib/apt/lists/new_Packages",
]
assert "var/lib/app" in c.upper  # ... though it is in the upper layer

# %% [markdown]
# ## The upper layer on disk, in the kernel's format
#
# On a Docker host the upper layer is a real directory (`/var/lib/docker/overlay2/<id>/diff`).
# The kernel writes a whiteout as a **character device 0/0** and marks an opaque directory
# with the extended attribute **`trusted.overlay.opaque=y`** (`user.overlay.opaque` when an
# unprivileged user mounts with `-o userxattr`). `Layer.to_directory` writes exactly that
# (without root, as rootless Docker does: owned by you, with `user.overlay.*` attributes):

# %%
root = os.geteuid() == 0
upper = c.upper
if not root:  # as rootless Docker and Podman do, the container's root is our own user on disk
    uid, gid = os.getuid(), os.getgid()
    upper = ufs.Layer({"": ufs.Dir(uid=uid, gid=gid), **{
        k: e if e is ufs.WHITEOUT else attrs.evolve(e, uid=uid, gid=gid) for k, e in upper.items()}})
tmp = tempfile.mkdtemp(prefix="upper-")
upperdir = os.path.join(tmp, "diff")
upper.to_directory(upperdir, format="overlay", userxattr=not root)

rows = []
for top, dirs, files in os.walk(upperdir):
    dirs.sort()
    for name in sorted(dirs) + sorted(files):
        p = os.path.join(top, name)
        st = os.lstat(p)
        what = (f"char device {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}" if (st.st_mode & 0o170000) == 0o020000
                else "dir" if os.path.isdir(p) else f"file, {st.st_size} bytes")
        xattrs = ", ".join(f"{x}={os.getxattr(p, x).decode()}" for x in os.listxattr(p) if ".overlay." in x)
        rows.append((os.path.relpath(p, upperdir), what, xattrs))
rows.sort(key=lambda r: r[0].split("/"))
ns = "trusted" if root else "user"
nbkit.table([(p, w, x.replace(f"{ns}.", "<ns>.")) for p, w, x in rows],
            ["path in the upperdir", "on disk", "overlay xattrs"],
            caption="ls -l and getfattr of the upper directory (<ns> = trusted as root, user otherwise)")

# %%
motd = os.lstat(os.path.join(upperdir, "etc/motd"))
assert (motd.st_mode & 0o170000) == 0o020000 and motd.st_rdev == os.makedev(0, 0)  # the kernel's whiteout
assert os.getxattr(os.path.join(upperdir, "var/lib/apt/lists"), f"{ns}.overlay.opaque") == b"y"
back = ufs.Layer.from_directory(upperdir, format="overlay", userxattr=not root)
assert layer_shape(back) == layer_shape(upper)  # reads back as the same layer
shutil.rmtree(tmp)

# %% [markdown]
# ## The same, on the real kernel (optional: needs root)
#
# Where we are root and the kernel has overlayfs, we can mount the image's layer for real
# next to the model (`unionfs_sim.testing.KernelOverlay` does `mount -t overlay`), do the
# same things with the real system calls, and compare: the merged trees and the upper
# layers must be the same. Without root this cell says so and does nothing.

# %% tags=["env"]
def scenario(fs):
    """The changes made above, in order."""
    with fs.open("/var/lib/app/data.db", "r+b") as f:
        f.seek(1000)
        f.write(b"\x01")
    fs.unlink("/etc/motd")
    for name in fs.listdir("/var/lib/apt/lists"):
        fs.unlink(f"/var/lib/apt/lists/{name}")
    fs.rmdir("/var/lib/apt/lists")
    fs.mkdir("/var/lib/apt/lists")
    fs.write_bytes("/var/lib/apt/lists/new_Packages", bytes(1_000))


model = image.container()
scenario(model.fs)
try:
    with KernelOverlay(image.layers) as k:
        scenario(k.fs)
        same_tree = snapshot(k.fs) == snapshot(model.fs)
    same_upper = layer_shape(k.upper) == layer_shape(model.upper)
    print(f"kernel overlayfs vs model: same merged tree: {same_tree}; same upper layer: {same_upper}")
    assert same_tree and same_upper
except KernelUnavailable as e:
    print(f"skipped, no real overlay mount here: {e}")

# %% [markdown]
# **In short**: the writable layer records changes as copies (copy-up, whole files),
# whiteouts (deleted files) and opaque directories (deleted and recreated directories);
# `docker diff` is a reading of it; and on disk it is a directory with character devices
# and `trusted.overlay.*` attributes. Next: [4. Immutability](04-immutability.ipynb).
