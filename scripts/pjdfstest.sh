#!/usr/bin/env bash
# Run pjdfstest (the C version, github pjd/pjdfstest) against a FUSE mount of the model.
#
#   scripts/pjdfstest.sh PJDFSTEST_DIR [TEST_PATH ...]
#
# PJDFSTEST_DIR is a built pjdfstest tree (autoreconf -ifs && ./configure && make
# pjdfstest) kept OUTSIDE this repository; its code is never committed here.
# TEST_PATH: test directories or files to run (default: PJDFSTEST_DIR/tests, all of them),
# e.g. "$PJDFSTEST_DIR/tests/chmod" or "$PJDFSTEST_DIR/tests/open/00.t".
#
# As root, mounts a fresh container of an empty image with unionfs_sim.mount under a
# mktemp directory (allow_other + default_permissions: pjdfstest runs many of its
# steps as other uids, and the kernel checks DAC against the modes and owners the model
# reports), cds into the mount, runs `prove -r`, unmounts and prints prove's summary
# plus a line "N passed, N failed" counting assertions. The full TAP output is kept in
# $PJDFSTEST_LOG (default: a file in the temp directory, named at the end).
#
# PJDFSTEST_SERVER=dropin runs the same tests through the fuse-overlayfs drop-in instead:
# unionfs-sim-fuse -f -o lowerdir=L,upperdir=U,workdir=W (as root: allow_other and
# default_permissions), L a lower dir on disk with a few files, U the write-through
# upperdir. After the unmount the same dirs are mounted with the kernel's overlayfs and
# the script prints what that shows at the root (pjdfstest removes everything it makes,
# so only the lower's names should be there).
#
# Environment: PROVE_ARGS (extra prove options, e.g. "-j2"), UNIONFS_SIM_FUSE_OPTS
# (extra -o options for the mount, e.g. "attr_timeout=1"), PJDFSTEST_LOG.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -x "$1/pjdfstest" ]; then
  echo "usage: $0 PJDFSTEST_DIR [TEST_PATH ...]   (PJDFSTEST_DIR/pjdfstest must be built)" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "$0: pjdfstest must run as root (it switches uids)" >&2
  exit 2
fi
PJD=$(cd "$1" && pwd)
shift
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=("$PJD/tests")
for i in "${!tests[@]}"; do tests[$i]=$(realpath "${tests[$i]}"); done
command -v prove >/dev/null || { echo "$0: prove (perl) is missing" >&2; exit 2; }

here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/unionfs-sim-pjdfstest.XXXXXX)
mnt="$tmp/mnt"
mkdir "$mnt"
log=${PJDFSTEST_LOG:-$tmp/prove.log}

run_dropin() {
  local lower="$tmp/lower" upper="$tmp/upper" work="$tmp/work" chk="$tmp/check" pid i
  mkdir -p "$lower/dir" "$upper" "$work" "$chk"
  echo lower >"$lower/file"; echo lower >"$lower/dir/file"
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" python3 -m unionfs_sim.cli.fuse_overlayfs -f \
    -o "lowerdir=$lower,upperdir=$upper,workdir=$work${UNIONFS_SIM_FUSE_OPTS:+,$UNIONFS_SIM_FUSE_OPTS}" "$mnt" \
    2>"$tmp/server.log" &
  pid=$!
  for i in $(seq 200); do
    grep -q " $mnt " /proc/mounts && break
    kill -0 $pid 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
    sleep 0.05
  done
  chmod 755 "$mnt"
  local rc=0
  (cd "$mnt" && prove -r -v ${PROVE_ARGS:-} "${tests[@]}") >"$log" 2>&1 || rc=$?
  local left
  left=$(ls -A "$mnt" | tr '\n' ' ')
  umount "$mnt"
  wait $pid || echo "unionfs-sim-fuse exited with status $?"
  echo "prove exit status $rc; names left in the mount root: ${left:-none}"
  mount -t overlay overlay -o "ro,lowerdir=$upper:$lower" "$chk"
  echo "the kernel's overlayfs on the same upperdir and lower shows: $(ls -A "$chk" | tr '\n' ' ')"
  umount "$chk"
  [ -s "$tmp/server.log" ] && { echo "server stderr (last 20 lines):"; tail -20 "$tmp/server.log"; }
  return 0
}

if [ "${PJDFSTEST_SERVER:-}" = dropin ]; then
  run_dropin
else
# The mount is served by this Python process; it runs prove in the mount and unmounts.
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" python3 - "$mnt" "$log" "${tests[@]}" <<'EOF'
import os, subprocess, sys
import unionfs_sim as ufs

mnt, log, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
extra = {}
for opt in filter(None, os.environ.get("UNIONFS_SIM_FUSE_OPTS", "").split(",")):
    k, eq, v = opt.partition("=")
    extra[k] = v if eq else True
c = ufs.Image.from_layers([]).container()
with ufs.mount(c, mnt, allow_other=True, default_permissions=True, **extra) as m:
    os.chmod(mnt, 0o755)
    cmd = ["prove", "-r", "-v", *os.environ.get("PROVE_ARGS", "").split(), *tests]
    with open(log, "w") as out:
        r = subprocess.run(cmd, cwd=mnt, stdout=out, stderr=subprocess.STDOUT)
    left = os.listdir(mnt)
    unexpected = list(m.operations.unexpected)
print(f"prove exit status {r.returncode}; {len(left)} names left in the mount root;"
      f" {len(unexpected)} unexpected exceptions in the FUSE operations")
for e in unexpected[:20]:
    print("  unexpected:", repr(e))
EOF

fi

# prove's summary, the failing assertions (per test file) and an assertion count.
sed -n '/^Test Summary Report/,$p' "$log"
awk '
  /^Test Summary Report/ { done = 1 }
  done { next }
  /^\/.*\.t \.+ / { file = $1; next }
  /^ok [0-9]+/ { ok++ }
  /^not ok [0-9]+/ {
    if ($0 ~ /# TODO/) { todo++; next }
    bad++; byfile[file]++
    if (shown++ < 300) print "  " file ": " substr($0, 1, 300)
  }
  END {
    for (f in byfile) print "failed in " f ": " byfile[f]
    printf "assertions: %d passed, %d failed", ok + todo, bad; if (todo) printf " (%d TODO)", todo; printf "\n"
  }
' "$log"
echo "full TAP output: $log"
rmdir "$mnt" 2>/dev/null || true
