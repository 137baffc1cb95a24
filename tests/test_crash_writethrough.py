"""SIGKILL of the fuse-overlayfs drop-in loses nothing that had returned (issue 12, item 2).

A writer process does random operations through a ``unionfs-sim-fuse`` mount (files
written and fsynced, appends, truncates, unlinks, mkdir/rmdir, renames of files and
directories, chmod, symlinks), journaling each operation before it starts and after it
returns. At a random moment the server is killed with SIGKILL. Then the same
directories are mounted by the kernel's overlayfs, the oracle, which must show every
operation that returned before the kill and nothing that had not started (the one in
flight may be there or not, whole or in part); the drop-in must refuse the stale mount
saying how to clear it, and once cleared, remount the same directories cleanly and show
what the kernel showed.

``UNIONFS_SIM_CRASH_KILLS`` sets the number of kills (default 5 here; the issue's full
run is 25: ``UNIONFS_SIM_CRASH_KILLS=25 pytest tests/test_crash_writethrough.py``).
Needs root, /dev/fuse and the kernel's overlayfs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import unionfs_sim as ufs
from unionfs_sim.fuse import fuse_unavailable

pytestmark = pytest.mark.fuse

REASON = fuse_unavailable() or (None if os.geteuid() == 0 else "needs root (kernel overlayfs oracle)")
REPO = str(Path(__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
KILLS = int(os.environ.get("UNIONFS_SIM_CRASH_KILLS", "5"))

State = dict[str, list[Any]]
"""path -> ["f", latin-1 data, mode] | ["d", mode] | ["l", target]."""

APPLY = r'''
def apply(op):
    k = op[0]
    if k == "write":
        mode = state[op[1]][2] if op[1] in state else 0o644
        state[op[1]] = ["f", op[2], mode]
    elif k == "append":
        state[op[1]][1] += op[2]
    elif k == "truncate":
        d = state[op[1]][1]
        state[op[1]][1] = d[:op[2]] + "\0" * max(0, op[2] - len(d))
    elif k in ("unlink", "rmdir"):
        del state[op[1]]
    elif k == "mkdir":
        state[op[1]] = ["d", 0o755]
    elif k == "rename":
        s, d = op[1], op[2]
        for p in sorted(state):
            if p == s or p.startswith(s + "/"):
                state[d + p[len(s):]] = state.pop(p)
    elif k == "chmod":
        state[op[1]][-1] = op[2]
    elif k == "symlink":
        state[op[1]] = ["l", op[2]]

'''
"""The writer's model of one operation's effect (also replayed by the test)."""

WRITER = r'''
import json, os, random, sys
mnt, journal, state_file, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
state = json.load(open(state_file))
rnd = random.Random(seed)
NAMES = ["f1", "f2", "g", "h", "sub", "n1", "n2"]
j = open(journal, "a", buffering=1)

def dirs():
    return [""] + [p for p, v in state.items() if v[0] == "d"]

def children(d):
    pre = d + "/" if d else ""
    return [p for p in state if p.startswith(pre) and "/" not in p[len(pre):]]

def pick_new():
    for _ in range(20):
        d = rnd.choice(dirs())
        p = (d + "/" if d else "") + rnd.choice(NAMES)
        if p not in state and len(p) < 40:
            return p
    return None

def one():
    files = [p for p, v in state.items() if v[0] == "f"]
    kind = rnd.choice(["write", "write", "append", "truncate", "unlink", "mkdir", "rmdir", "rename", "renamedir",
                       "chmod", "symlink"])
    if kind == "write":
        p = rnd.choice(files + [pick_new()] * 2)
        if p is None: return None
        return ["write", p, "".join(rnd.choice("abcxyz") for _ in range(rnd.randint(0, 9000)))]
    if kind == "append" and files:
        return ["append", rnd.choice(files), "+" * rnd.randint(1, 5000)]
    if kind == "truncate" and files:
        return ["truncate", rnd.choice(files), rnd.randint(0, 3000)]
    if kind == "unlink":
        c = [p for p, v in state.items() if v[0] in "fl"]
        return ["unlink", rnd.choice(c)] if c else None
    if kind == "mkdir":
        p = pick_new()
        return ["mkdir", p] if p else None
    if kind == "rmdir":
        c = [p for p, v in state.items() if v[0] == "d" and not children(p)]
        return ["rmdir", rnd.choice(c)] if c else None
    if kind == "rename" and files:
        s = rnd.choice(files)
        d = rnd.choice(files + [pick_new()])
        if d is None or d == s: return None
        return ["rename", s, d]
    if kind == "renamedir":
        c = [p for p, v in state.items() if v[0] == "d"]
        if not c: return None
        s = rnd.choice(c)
        d = pick_new()
        if d is None or d == s or d.startswith(s + "/"): return None
        return ["rename", s, d]
    if kind == "chmod":
        c = [p for p, v in state.items() if v[0] in "fd"]
        return ["chmod", rnd.choice(c), rnd.choice([0o600, 0o644, 0o755, 0o700, 0o640])] if c else None
    if kind == "symlink":
        p = pick_new()
        return ["symlink", p, rnd.choice(["f1", "../g", "/x"])] if p else None
    return None

'''+ APPLY + r'''
def run(op):
    k, p = op[0], os.path.join(mnt, op[1])
    if k == "write":
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, op[2].encode("latin-1")); os.fsync(fd); os.close(fd)
    elif k == "append":
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        os.write(fd, op[2].encode("latin-1")); os.fsync(fd); os.close(fd)
    elif k == "truncate":
        os.truncate(p, op[2])
    elif k == "unlink":
        os.unlink(p)
    elif k == "mkdir":
        os.mkdir(p, 0o755)
    elif k == "rmdir":
        os.rmdir(p)
    elif k == "rename":
        os.rename(p, os.path.join(mnt, op[2]))
    elif k == "chmod":
        os.chmod(p, op[2])
    elif k == "symlink":
        os.symlink(op[2], p)

os.umask(0o022)
while True:
    op = one()
    if op is None:
        continue
    j.write("S " + json.dumps(op) + "\n")
    try:
        run(op)
    except OSError as e:
        j.write("E " + str(e.errno) + "\n")
        sys.exit(3)
    apply(op)
    j.write("D\n")
'''


def lower() -> ufs.Layer:
    return ufs.Layer.from_dict({
        "f1": b"lower f1\n" * 100,
        "big": b"B" * (1 << 20),
        "sub/": ufs.Dir(),
        "sub/g": b"lower g\n",
        "sub/deep/h": ufs.File(b"h", mode=0o600),
        "n1/": ufs.Dir(mode=0o700),
        "n1/f2": b"f2",
        "ln": ufs.Symlink("f1"),
    })


def read_state(root: str) -> State:
    """The tree under ``root`` as a State (what the writer's model keeps)."""
    out: State = {}
    for dirpath, dnames, fnames in os.walk(root):
        for name in dnames + fnames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ["d", stat.S_IMODE(st.st_mode)]
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ["l", os.readlink(full)]
            else:
                with open(full, "rb") as f:
                    out[rel] = ["f", f.read().decode("latin-1"), stat.S_IMODE(st.st_mode)]
    return out


def replay(state: State, journal: list[str]) -> tuple[State, list[Any] | None, int]:
    """Apply every op that returned (``D``); return the state, the op in flight, the count done."""
    ns: dict[str, Any] = {"state": state}
    exec(APPLY, ns)  # noqa: S102 - the same code the writer ran, from this file
    pending: list[Any] | None = None
    done = 0
    for line in journal:
        if line.startswith("S "):
            pending = json.loads(line[2:])
        elif line == "D" and pending is not None:
            ns["apply"](pending)
            pending = None
            done += 1
    return state, pending, done


def touched(op: list[Any] | None) -> list[str]:
    if op is None:
        return []
    return [op[1], op[2]] if op[0] == "rename" else [op[1]]


def outside(state: State, paths: list[str]) -> State:
    """``state`` without the paths an in-flight op may have changed (and what lies below them)."""
    return {p: v for p, v in state.items() if not any(p == t or p.startswith(t + "/") for t in paths)}


def start_server(d: Path) -> subprocess.Popen[bytes]:
    opts = f"lowerdir={d / 'lower'},upperdir={d / 'upper'},workdir={d / 'work'},redirect_dir=on"
    p = subprocess.Popen([sys.executable, "-m", "unionfs_sim.cli.fuse_overlayfs", "-f", "crash", str(d / "mnt"),
                          "-o", opts], env=ENV, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not os.path.ismount(d / "mnt"):
        assert p.poll() is None, p.communicate()[1].decode()
        assert time.monotonic() < deadline, "the drop-in did not mount"
        time.sleep(0.01)
    while True:
        try:
            os.listdir(d / "mnt")
            return p
        except OSError:
            time.sleep(0.01)


def kernel_state(d: Path) -> State:
    opts = f"lowerdir={d / 'lower'},upperdir={d / 'upper'},workdir={d / 'work'},redirect_dir=on"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(d / "mnt")], check=True,
                   capture_output=True)
    try:
        return read_state(str(d / "mnt"))
    finally:
        subprocess.run(["umount", str(d / "mnt")], check=True)


@pytest.mark.skipif(REASON is not None, reason=f"{REASON}")
def test_sigkill_of_the_server_loses_nothing_that_returned(tmp_path: Path) -> None:
    d = tmp_path
    lower().to_directory(d / "lower")
    for name in ("upper", "work", "mnt"):
        (d / name).mkdir()
    rnd = random.Random(int(os.environ.get("UNIONFS_SIM_CRASH_SEED", "12")))
    server = start_server(d)
    state = read_state(str(d / "mnt"))
    total = 0
    try:
        for kill in range(KILLS):
            state_file = d / "state.json"
            state_file.write_text(json.dumps(state))
            journal = d / f"journal{kill}"
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(d / "mnt"), str(journal), str(state_file),
                                       str(rnd.randrange(1 << 30))], stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0.05, 0.8))
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
            try:
                writer.wait(20)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait()
            lines = journal.read_text().splitlines() if journal.exists() else []
            expected, pending, done = replay(json.loads(state_file.read_text()), lines)
            total += done
            # The stale mount is recognised and the way out is said (item 3).
            r = subprocess.run([sys.executable, "-m", "unionfs_sim.cli.fuse_overlayfs", "crash", str(d / "mnt"),
                                "-o", f"lowerdir={d / 'lower'}"], env=ENV, capture_output=True, text=True, timeout=60,
                               check=False)
            assert r.returncode == 1 and "transport endpoint is not connected" in r.stderr \
                and "fusermount3 -u" in r.stderr, r.stderr
            subprocess.run(["umount", "-l", str(d / "mnt")], check=True)
            actual = kernel_state(d)
            t = touched(pending)
            assert outside(actual, t) == outside(expected, t), \
                f"kill {kill}: after {done} ops (in flight: {pending}) the kernel's view differs"
            # The drop-in remounts the same directories and shows what the kernel showed.
            server = start_server(d)
            assert read_state(str(d / "mnt")) == actual
            state = actual
    finally:
        if server.poll() is None:
            subprocess.run(["umount", str(d / "mnt")], check=False)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if os.path.ismount(d / "mnt"):
            subprocess.run(["umount", "-l", str(d / "mnt")], check=False)
    print(f"{KILLS} kills, {total} operations returned before them, all on disk")
    assert total > KILLS  # the writer did get work done between the kills
