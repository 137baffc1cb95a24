# %% [markdown]
# # 6. Build cache
#
# `docker build` runs a Dockerfile one instruction at a time, and before running one it
# asks its cache: *have I run this exact step, on this exact input, before?* If so it
# reuses the layer it made then (a **hit**) instead of running the step again. One miss
# changes the input of every step after it, so they all miss too. That is the whole
# reason for the advice "put what changes least first", and this notebook shows it
# happening, with the builder's reason for every miss.
#
# The builder used here (`ufs.Builder`) keys its cache the way Docker does, with either
# rule set: `rules="buildkit"` (the default since Docker 23) or `rules="classic"` (the
# legacy builder).

# %%
import json

import matplotlib.pyplot as plt
import nbkit
from IPython.display import display

import unionfs_sim as ufs

nbkit.fixed_clock()  # every timestamp is 2024-01-01 00:00 UTC, so the outputs never change

# %% [markdown]
# ## The project
#
# A small Node.js service. The base image `node:20` is made here and loaded into the
# builder, as `docker pull` would. `RUN npm install` cannot download anything in a
# notebook, so a Python function stands in for `npm`: it reads `package.json` and writes
# one module per dependency into `node_modules`, and it records every time it runs, so
# we can see whether a build really ran it or took it from the cache.

# %%
node = ufs.Image.from_layers(
    [ufs.Layer.from_dict({"usr/local/bin/node": ufs.File(bytes(90_000), mode=0o755),
                          "bin/sh": ufs.File(bytes(1_000), mode=0o755), "tmp/": ufs.Dir(mode=0o1777)})],
    config=ufs.ImageConfig(cmd=["node"], env=["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_VERSION=20.11.0"]))

npm_runs = []


def npm(fs, env):
    """`npm install` in the current project: one module per dependency of /app/package.json."""
    deps = json.loads(fs.read_text("/app/package.json"))["dependencies"]
    npm_runs.append(sorted(deps))
    for name, version in deps.items():
        fs.makedirs(f"/app/node_modules/{name}", exist_ok=True)
        fs.write_text(f"/app/node_modules/{name}/package.json", json.dumps({"name": name, "version": version}))
        fs.write_bytes(f"/app/node_modules/{name}/index.js", bytes(30_000))


def project(deps=None, server="app.listen(8080)\n", **more):
    """The build context: the files `docker build .` would send."""
    files = {
        "package.json": json.dumps({"name": "web", "dependencies": deps or {"express": "4.19.2"}}),
        "server.js": "const app = require('express')();\n" + server,
        "README.md": "# web\n",
        ".dockerignore": "node_modules\n*.log\n",
    }
    files.update(more)
    return files


GOOD = """\
FROM node:20
WORKDIR /app
COPY package.json ./
RUN npm install
COPY . .
CMD ["node", "server.js"]
"""


def builder():
    """A fresh builder (empty cache) that knows node:20 and our npm."""
    b = ufs.Builder(commands={"npm": npm}, isolation="python", epoch=1704067200)
    b.add(node, "node:20")
    return b

# %% [markdown]
# ## The first build: everything is built
#
# With an empty cache every step is built. `FROM` and `CMD` get no verdict: FROM only
# names the starting image, and CMD only writes the config.

# %%
b = builder()
first = b.build(project(), dockerfile_text=GOOD, tag="web:1")
nbkit.table([(s.number, s.instruction, {True: "hit", False: "built", None: "-"}[s.cached], s.reason or "")
             for s in first.steps], ["step", "instruction", "cache", "why"], caption="docker build -t web:1 .")

# %%
assert [s.cached for s in first.steps] == [None, False, False, False, False, None]
assert npm_runs == [["express"]]
assert first.image.fs.exists("/app/node_modules/express/index.js") and first.image.fs.exists("/app/server.js")

# %% [markdown]
# ## Rebuilding: what hits and what misses
#
# Now the usual life of the project: a rebuild with nothing changed, an edit of
# `server.js`, an edit of a file that `.dockerignore` leaves out, and a new dependency.

# %%
runs_before = len(npm_runs)
builds = {
    "nothing changed": b.build(project(), dockerfile_text=GOOD, tag="web:1"),
    "server.js edited": b.build(project(server="app.listen(8081)\n"), dockerfile_text=GOOD, tag="web:1"),
    "debug.log added": b.build(project(server="app.listen(8081)\n", **{"debug.log": "x"}), dockerfile_text=GOOD),
    "dependency added": b.build(project(deps={"express": "4.19.2", "pino": "9.0.0"}, server="app.listen(8081)\n"),
                                dockerfile_text=GOOD, tag="web:1"),
}
nbkit.cache_grid({"first build": first.steps} | {k: r.steps for k, r in builds.items()},
                 caption="each rebuild, step by step (hover over 'built' for the reason)")

# %% [markdown]
# Step by step, with the builder's own explanation of each miss:

# %%
for label, r in builds.items():
    print(f"--- {label}")
    print(r.explain())

# %%
verdicts = {label: [s.cached for s in r.steps] for label, r in builds.items()}
assert verdicts["nothing changed"] == [None, True, True, True, True, None]
assert verdicts["server.js edited"] == [None, True, True, True, False, None]       # only COPY . . is redone
assert verdicts["debug.log added"] == [None, True, True, True, True, None]        # .dockerignore: not in the context
assert verdicts["dependency added"] == [None, True, False, False, False, None]    # package.json changed
assert "server.js" in builds["server.js edited"].steps[4].reason
assert builds["dependency added"].steps[3].caused_by == 3                          # npm install fell with step 3
assert npm_runs[runs_before:] == [["express", "pino"]]                             # npm ran once in four builds

# %% [markdown]
# - **nothing changed**: every step hits; npm did not run.
# - **server.js edited**: `COPY package.json` and `RUN npm install` still hit, because
#   their input (the base image, the workdir, `package.json`) is the same; only `COPY . .`
#   is redone. This is the point of copying `package.json` alone first.
# - **debug.log added**: `.dockerignore` keeps `*.log` out of the build context, so
#   `COPY . .` sees the same files and hits.
# - **dependency added**: `package.json` changed, so its COPY misses, and `npm install`
#   after it must run again, and so must everything after that.
#
# A RUN's cache key is its command line and the step before it, never what the command
# did: the builder does not know that `npm install` reads `package.json`. It is the COPY
# before it that brings the change in.
#
# Hits also mean shared layers: the `server.js` rebuild has the same bottom layers
# (digests) as the first build; only its top layer is new, so a registry or a host that
# has the first image receives just that layer.

# %%
a, c = first.image, builds["server.js edited"].image
nbkit.table([(i, nbkit.short(x), nbkit.short(y), "same" if x == y else "NEW")
             for i, (x, y) in enumerate(zip(a.diff_ids, c.diff_ids, strict=True))],
            ["layer", "first build", "server.js edited", ""])

# %%
assert a.diff_ids[:-1] == c.diff_ids[:-1] and a.diff_ids[-1] != c.diff_ids[-1]

# %% [markdown]
# ## The same Dockerfile in the bad order
#
# Copy everything first and install after: it works, and it is what most first
# Dockerfiles look like. Now any edit to any file changes `COPY . .`, and `npm install`
# below it runs again every time.

# %%
BAD = """\
FROM node:20
WORKDIR /app
COPY . .
RUN npm install
CMD ["node", "server.js"]
"""
edits = {
    "first build": project(),
    "server.js edited": project(server="app.listen(8081)\n"),
    "README edited": project(server="app.listen(8081)\n", **{"README.md": "# web\nNow with docs.\n"}),
    "dependency added": project(deps={"express": "4.19.2", "pino": "9.0.0"}, server="app.listen(8081)\n",
                                **{"README.md": "# web\nNow with docs.\n"}),
}
npm_count = {}
grids = {}
for name, dockerfile in (("good order", GOOD), ("bad order", BAD)):
    bb, runs = builder(), []
    grids[name] = {}
    for label, ctx in edits.items():
        before = len(npm_runs)
        grids[name][label] = bb.build(ctx, dockerfile_text=dockerfile, tag="web:1").steps
        runs.append(len(npm_runs) - before)
    npm_count[name] = runs
display(nbkit.cache_grid(grids["good order"], caption="good order: COPY package.json; RUN npm install; COPY . ."))
nbkit.cache_grid(grids["bad order"], caption="bad order: COPY . .; RUN npm install")

# %%
fig, ax = plt.subplots(figsize=(6, 1.8))
ax.barh(["bad order", "good order"], [sum(npm_count["bad order"]), sum(npm_count["good order"])],
        color=["#e45756", "#54a24b"])
for y, name in enumerate(["bad order", "good order"]):
    ax.text(sum(npm_count[name]), y, f" {sum(npm_count[name])} of {len(edits)} builds", va="center")
ax.set_xlabel("times `npm install` ran")
ax.set_xlim(0, len(edits) * 1.35)
ax.spines[["top", "right"]].set_visible(False)
plt.show()

# %%
assert npm_count["good order"] == [1, 0, 0, 1]  # only the first build and the new dependency
assert npm_count["bad order"] == [1, 1, 1, 1]   # every edit of every file

# %% [markdown]
# ## Classic builder vs BuildKit
#
# The two rule sets agree on the example above. They differ on the instructions that only
# change the image's metadata (`LABEL`, `EXPOSE`, `CMD`, `ENTRYPOINT`, ...):
#
# - the **classic** builder commits every instruction as an image of its own, so each is
#   a cache lookup, and a changed `LABEL` is a miss that makes every later step miss;
# - **BuildKit** builds a graph of filesystem operations; a `LABEL` is not one (it is
#   written into the config at the end), so changing it misses nothing.
#
# A label near the top that changes on every release, such as a version, shows it:

# %%
LABELLED = """\
FROM node:20
LABEL org.opencontainers.image.version=1.0.0
WORKDIR /app
COPY package.json ./
RUN npm install
COPY . .
CMD ["node", "server.js"]
"""
rows, runs = {}, {}
for rules in ("classic", "buildkit"):
    bb = builder()
    bb.build(project(), dockerfile_text=LABELLED, rules=rules)
    before = len(npm_runs)
    rows[rules] = bb.build(project(), dockerfile_text=LABELLED.replace("1.0.0", "1.0.1"), rules=rules)
    runs[rules] = len(npm_runs) - before
nbkit.cache_grid({f"{rules} (npm ran {runs[rules]}x)": r.steps for rules, r in rows.items()},
                 caption="rebuild after changing only the version label")

# %%
print(rows["classic"].explain())

# %%
assert [s.cached for s in rows["buildkit"].steps] == [None, None, True, True, True, True, None]
assert [s.cached for s in rows["classic"].steps][1:] == [False, False, False, False, False, False]
assert runs == {"classic": 1, "buildkit": 0}
assert dict(rows["buildkit"].image.config.labels)["org.opencontainers.image.version"] == "1.0.1"  # still applied

# %% [markdown]
# With the classic builder, put such labels at the end (or pass them with `--label`);
# with BuildKit their place does not matter. An `ENV` is different under both: it
# changes the environment of every later `RUN`, so its change is a miss for them too.

# %%
ENVED = LABELLED.replace("LABEL org.opencontainers.image.version=1.0.0", "ENV NODE_ENV=production")
rows_env = {}
for rules in ("classic", "buildkit"):
    bb = builder()
    bb.build(project(), dockerfile_text=ENVED, rules=rules)
    rows_env[rules] = bb.build(project(), dockerfile_text=ENVED.replace("production", "development"), rules=rules)
nbkit.cache_grid({rules: r.steps for rules, r in rows_env.items()}, caption="rebuild after changing ENV NODE_ENV")

# %%
assert rows_env["buildkit"].steps[4].cached is False and rows_env["classic"].steps[4].cached is False  # RUN npm install
print("buildkit, RUN npm install:", rows_env["buildkit"].steps[4].reason)

# %% [markdown]
# **In short**: a step hits when its instruction and everything before it are unchanged;
# the first miss takes every later step with it. Copy the dependency manifest and install
# before copying the rest; keep changing metadata late for the classic builder; let
# `.dockerignore` keep noise out of the context. Next:
# [7. Registry vs repository](07-registry-vs-repository.ipynb).
