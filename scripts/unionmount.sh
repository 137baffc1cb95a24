#!/usr/bin/env bash
# Run the public unionmount-testsuite (github.com/amir73il/unionmount-testsuite) against
# unionfs-sim-fuse, and for comparison against the kernel's overlayfs and fuse-overlayfs.
#
#   scripts/unionmount.sh SUITE_DIR [CONFIG...]
#
# SUITE_DIR is an existing checkout of the suite (it is not fetched, and nothing of it is
# copied into this repository). CONFIGs (default: all that can run here):
#
#   sim  sim3  sim-xdev  [sim3-xdev]           unionfs-sim-fuse (./run --ov --fuse=unionfs-sim-fuse)
#   kernel  kernel3  kernel-xdev  [kernel3-xdev] mount -t overlay (./run --ov)
#   fo  fo3  fo-xdev  [fo3-xdev]                 fuse-overlayfs (./run --ov --fuse=fuse-overlayfs)
#
# "3" runs --ov=3 (every test twice: with the upper rotated into the lower stack up to 3
# times, then on a fresh two-layer overlay); "-xdev" adds --xdev (no directory renames:
# rename-exdev instead of the four rename-*-dir scripts; with --ov=3 four scripts then
# rename directories of a rotated layer, EXDEV for every filesystem here, so the
# bracketed configurations are not run by default). unionfs-sim-fuse runs with
# UNIONMOUNT_MNTOPTIONS=redirect_dir=on except with --xdev (the suite passes that variable
# to every mount; its --fuse mode never adds redirect_dir=on itself).
#
# The suite stops at a script's first failure, so every script runs on its own
# (./run OPTIONS SCRIPT). Prints "N of M scripts passed" per configuration, the failing
# scripts with the suite's last error line, and the time taken; full logs are kept in
# $UNIONMOUNT_LOGDIR (default: a new directory under /tmp, printed).
#
# Needs root, FUSE (libfuse2 for unionfs-sim-fuse) and unionfs-sim-fuse installed where
# mount(8) finds it: ln -sf "$(python -c 'import sys,os;print(os.path.join(os.path.dirname(sys.executable),"unionfs-sim-fuse"))')" /usr/local/bin/unionfs-sim-fuse
# unionfs-sim-fuse writes every change to the upperdir as it happens, so a plain umount
# leaves nothing to wait for. With UNIONMOUNT_UMOUNT_HELPER=1 the script still installs
# the program as umount(8)'s helper for the run (/sbin/umount.fuse.unionfs-sim-fuse and
# /sbin/umount.fuse; umount MOUNTPOINT looks the type up with statfs, which only says
# "fuse"; other FUSE mounts are passed to umount -i unchanged), to test that path; links it created
# are removed at the end. Everything is mounted under a new temporary directory (a tmpfs
# for the layers, another for the lowermost layer), unmounted at the end.
set -u

if [ $# -lt 1 ] || [ ! -x "$1/run" ]; then
    echo "usage: $0 SUITE_DIR [{sim,kernel,fo}{,3}{,-xdev} ...]" >&2
    exit 2
fi
SUITE=$(cd "$1" && pwd)
shift
CONFIGS=("$@")
if [ ${#CONFIGS[@]} -eq 0 ]; then
    CONFIGS=(sim sim3 sim-xdev kernel kernel3 kernel-xdev)
    command -v fuse-overlayfs >/dev/null && CONFIGS+=(fo fo3 fo-xdev)
fi
TIMEOUT=${UNIONMOUNT_TIMEOUT:-600}
LOGDIR=${UNIONMOUNT_LOGDIR:-$(mktemp -d /tmp/unionmount-logs.XXXXXX)}
mkdir -p "$LOGDIR"

SIM=unionfs-sim-fuse
HELPERS=()
declare -a SUMMARY=()
T=$(mktemp -d /tmp/unionmount.XXXXXX)
cleanup() {
    (cd "$SUITE" && UNIONMOUNT_BASEDIR=$T/base UNIONMOUNT_LOWERDIR=$T/lower UNIONMOUNT_MNTPOINT=$T/mnt \
        ./run -c >/dev/null 2>&1)
    for m in mnt base lower; do
        while grep -q " $T/$m " /proc/mounts; do umount "$T/$m" || break; done
    done
    rm -rf "$T"
    for h in "${HELPERS[@]}"; do rm -f "$h"; done
}
trap cleanup EXIT
if [[ " ${CONFIGS[*]} " == *" sim"* ]]; then
    if ! PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v $SIM >/dev/null; then
        echo "$SIM is not in /usr/local/bin (or /usr/bin): mount(8) will not find it" >&2
        exit 2
    fi
    if [ "${UNIONMOUNT_UMOUNT_HELPER:-0}" = 1 ]; then
        prog=$(readlink -f "$(PATH=/usr/local/bin:/usr/bin:/bin command -v $SIM)")
        for h in /sbin/umount.fuse.$SIM /sbin/umount.fuse; do
            if [ ! -e $h ]; then ln -s "$prog" $h && HELPERS+=("$h"); fi
        done
    fi
fi

# The suite's list of scripts, read from its ./run: the common ones plus either the
# directory-rename scripts or, with --xdev, rename-exdev.
suite_tests() {  # $1 = xdev|dir
    python3 - "$SUITE/run" "$1" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
base, extra = None, {}
for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "tests" for t in node.targets) \
            and isinstance(node.value, ast.List) and base is None:
        base = [e.value for e in node.value.elts]
    if isinstance(node, ast.If):
        body = [n for n in node.body if isinstance(n, ast.AugAssign) and getattr(n.target, "id", "") == "tests"]
        other = [n for n in node.orelse if isinstance(n, ast.AugAssign) and getattr(n.target, "id", "") == "tests"]
        if body and other:
            extra["xdev"] = [e.value for e in body[0].value.elts]
            extra["dir"] = [e.value for e in other[0].value.elts]
print("\n".join(base + extra[sys.argv[2]]))
EOF
}

mkdir -p "$T/base" "$T/lower" "$T/mnt"
chmod 755 "$T"  # impermissible runs as bin (uid 1), which must reach the mount point

for config in "${CONFIGS[@]}"; do
    case $config in
        sim*) fuse=(--fuse=$SIM); mntopts=redirect_dir=on ;;
        kernel*) fuse=(); mntopts= ;;
        fo*) fuse=(--fuse=fuse-overlayfs); mntopts= ;;
        *) echo "unknown configuration $config" >&2; exit 2 ;;
    esac
    ov=--ov; [[ $config == *3* ]] && ov=--ov=3
    flags=(); kind=dir
    if [[ $config == *-xdev ]]; then flags=(--xdev); kind=xdev; mntopts=; fi
    mapfile -t tests < <(suite_tests $kind)
    # Fresh filesystems for each configuration: the layers (BASEDIR) on one tmpfs, the
    # lowermost layer (LOWERDIR) on another, as in the suite's default (non-samefs) setup.
    for m in base lower; do
        grep -q " $T/$m " /proc/mounts && umount "$T/$m"
        mount -t tmpfs "umt_$m" "$T/$m"
    done
    pass=0; failed=()
    start=$(date +%s.%N)
    echo "=== $config: ./run $ov ${fuse[*]} ${flags[*]} (UNIONMOUNT_MNTOPTIONS=$mntopts), ${#tests[@]} scripts"
    for t in "${tests[@]}"; do
        log=$LOGDIR/$config.$t.log
        t0=$(date +%s.%N)
        (cd "$SUITE" && env UNIONMOUNT_BASEDIR=$T/base UNIONMOUNT_LOWERDIR=$T/lower UNIONMOUNT_MNTPOINT=$T/mnt \
            ${mntopts:+UNIONMOUNT_MNTOPTIONS=$mntopts} \
            timeout "$TIMEOUT" ./run $ov "${fuse[@]}" "${flags[@]}" "$t") >"$log" 2>&1
        rc=$?
        dt=$(echo "$(date +%s.%N) - $t0" | bc)
        if [ $rc -eq 0 ]; then
            pass=$((pass + 1))
            printf '  ok    %-24s %6.1fs\n' "$t" "$dt"
        else
            why=$(grep -v '^ *$' "$log" | tail -n 1)
            failed+=("$t: $why")
            printf '  FAIL  %-24s %6.1fs  %s\n' "$t" "$dt" "$why"
        fi
    done
    (cd "$SUITE" && UNIONMOUNT_BASEDIR=$T/base UNIONMOUNT_LOWERDIR=$T/lower UNIONMOUNT_MNTPOINT=$T/mnt \
        ./run -c >/dev/null 2>&1)
    total=$(echo "$(date +%s.%N) - $start" | bc)
    line=$(printf '%-12s %2d of %2d scripts passed  (%.0fs)' "$config" "$pass" "${#tests[@]}" "$total")
    SUMMARY+=("$line")
    for f in "${failed[@]}"; do SUMMARY+=("    failed: $f"); done
done

echo
echo "=== summary (logs in $LOGDIR)"
printf '%s\n' "${SUMMARY[@]}"
