#!/usr/bin/env bash
# Benchmark driver: our engine against PyTorch, NumPy and OpenBLAS.
#
#   bench/run.sh            full run (about 5 minutes on a quiet 2-core box)
#   bench/run.sh --quick    smoke test: fewer repetitions, no NumPy
#                           per-example network, one thread variant per peer
#
# It (a) builds our release build (build-release/, meson + ninja) whose
# bench/bench prints our RESULT lines, (b) compiles bench/gemm_openblas.c to
# build-release/gemm_openblas, (c) runs every peer, (d) prints a markdown
# table and writes it to bench/results.md.  Raw lines and logs are kept in
# build-release/bench-logs/.
#
# Every program prints `RESULT <who> <workload> <value> <unit>`.  Peers run
# under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` (those two variables,
# set on our machines, halve OpenBLAS); nothing is unset for the rest of the
# script.  PyTorch and NumPy run twice, once as they are and once with
# OpenBLAS single-threaded (OPENBLAS_NUM_THREADS=1; torch keeps its 2 OpenMP
# intra-op threads), and the better of the two is reported per workload.
# Every -rss workload runs in a process of its own.
#
# Environment: BUILD_DIR (default build-release), OURS_BIN (default
# $BUILD_DIR/bench/bench), PYTHON (default /usr/bin/python3, Debian's: the
# pyenv python3 on PATH has no torch).
set -u
cd "$(dirname "$0")/.." || exit 1

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-/usr/bin/python3}
BUILD=${BUILD_DIR:-build-release}
OURS_BIN=${OURS_BIN:-$BUILD/bench/bench}
PEER_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
OB1=(OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2)
TIMING=(W1-f32 W1-f64 W2-f32 W3 W4-1024 W4-2048)
QFLAG=()
[ "$QUICK" = 1 ] && QFLAG=(--quick)

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }

START_LOAD=$(load1)
if awk -v l="$START_LOAD" 'BEGIN { exit !(l > 0.5) }'; then
    log "WARNING: load average is $START_LOAD: something else is running;" \
        "multi-threaded peers (and we) suffer badly from shared cores"
fi

# ---- (a) our release build --------------------------------------------------
OURS_NOTE=""
if [ ! -d "$BUILD" ]; then
    log "meson setup $BUILD --buildtype=release"
    meson setup "$BUILD" --buildtype=release >&2 || OURS_NOTE="meson setup failed"
fi
if [ -z "$OURS_NOTE" ]; then
    log "ninja -C $BUILD"
    ninja -C "$BUILD" >&2 || OURS_NOTE="build failed"
fi
mkdir -p "$BUILD/bench-logs"
LOGS=$BUILD/bench-logs
RAW=$LOGS/raw.txt
: > "$RAW"

# ---- (b) the OpenBLAS gemm reference ---------------------------------------
GEMM=$BUILD/gemm_openblas
log "cc -O2 bench/gemm_openblas.c -> $GEMM"
cc -O2 -std=c11 -Wall bench/gemm_openblas.c -o "$GEMM" -lopenblas >&2 \
    || { log "gemm_openblas: compile failed"; GEMM=""; }

# run <variant> <logname> command...: keeps its RESULT lines, tagged with the
# variant, in $RAW; everything else goes to $LOGS/<logname>.log.
run() {
    local variant=$1 name=$2 status
    shift 2
    log "$name: $*"
    "$@" > "$LOGS/$name.out" 2> "$LOGS/$name.log"
    status=$?
    [ $status -ne 0 ] && log "$name: exit status $status (see $LOGS/$name.log)"
    grep '^RESULT ' "$LOGS/$name.out" | sed "s/^/$variant /" | tee -a "$RAW" >&2
    return 0
}

# ---- (c) ours, then the peers ---------------------------------------------
if [ -n "$OURS_NOTE" ] || [ ! -x "$OURS_BIN" ]; then
    echo "ours: not built${OURS_NOTE:+ ($OURS_NOTE)}"
    OURS_NOTE=${OURS_NOTE:-not built}
else
    run - ours "$OURS_BIN"
    run - ours-W1-rss "$OURS_BIN" W1-f32-rss
    run - ours-W2-rss "$OURS_BIN" W2-f32-rss
fi

if [ -n "$GEMM" ]; then
    if [ "$QUICK" = 1 ]; then
        run - openblas "${PEER_ENV[@]}" "$GEMM" --reps 2
    else
        run - openblas "${PEER_ENV[@]}" "$GEMM"
    fi
fi

run asis torch "${PEER_ENV[@]}" "$PY" bench/peers/torch_peer.py "${QFLAG[@]}" "${TIMING[@]}"
[ "$QUICK" = 1 ] || run ob1 torch-ob1 "${PEER_ENV[@]}" "${OB1[@]}" "$PY" bench/peers/torch_peer.py "${QFLAG[@]}" "${TIMING[@]}"
for w in W1-f32-rss W2-f32-rss; do
    run asis "torch-$w" "${PEER_ENV[@]}" "$PY" bench/peers/torch_peer.py "$w"
    [ "$QUICK" = 1 ] || run ob1 "torch-ob1-$w" "${PEER_ENV[@]}" "${OB1[@]}" \
        "$PY" bench/peers/torch_peer.py "$w"
done

if [ "$QUICK" = 1 ]; then
    NP=(W1-f32 W1-f64 W2-f32)
    NP_RSS=(W1-f32-rss W2-f32-rss)
else
    NP=(PE-W1-f64 PE-W1-f32 W1-f32 W1-f64 W2-f32)
    NP_RSS=(PE-W1-f64-rss W1-f32-rss W2-f32-rss)
fi
run asis numpy "${PEER_ENV[@]}" "$PY" bench/peers/numpy_peer.py "${NP[@]}"
[ "$QUICK" = 1 ] || run ob1 numpy-ob1 "${PEER_ENV[@]}" "${OB1[@]}" \
    "$PY" bench/peers/numpy_peer.py "${NP[@]}"
for w in "${NP_RSS[@]}"; do
    run asis "numpy-$w" "${PEER_ENV[@]}" "$PY" bench/peers/numpy_peer.py "$w"
done

END_LOAD=$(load1)

# ---- (d) the table ----------------------------------------------------------
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
[ -n "$CPU" ] || CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo)
SIMD=""
for f in avx2 fma avx512f; do
    case " $FLAGS " in *" $f "*) SIMD="$SIMD ${f^^}" ;; esac
done
TORCH_V=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)
NUMPY_V=$("$PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null)

OUT=bench/results.md
RUN_DATE=$(date '+%Y-%m-%d %H:%M:%S %Z') CPU="$CPU" SIMD="$SIMD" NCPU=$(nproc) \
QUICK=$QUICK OURS_NOTE="$OURS_NOTE" TORCH_V="$TORCH_V" NUMPY_V="$NUMPY_V" \
START_LOAD="$START_LOAD" END_LOAD="$END_LOAD" \
CALLER_CORETYPE="${OPENBLAS_CORETYPE-<unset>}" CALLER_L2="${OPENBLAS_L2_SIZE-<unset>}" \
COMMIT=$(git rev-parse --short HEAD 2>/dev/null; git diff --quiet HEAD 2>/dev/null || echo "+dirty") \
"$PY" - "$RAW" > "$OUT" <<'EOF'
import os, sys

WORK = ["W1-f32", "W1-f64", "W2-f32", "W3", "W4-1024-fwd", "W4-1024-bwd",
        "W4-2048-fwd", "W4-2048-bwd", "W1-f32-rss", "W2-f32-rss"]
PEERS = ["torch", "numpy-perexample", "numpy-batch", "openblas"]

best = {}     # (who, workload) -> (value, unit, variant)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) != 6 or f[1] != "RESULT":
        continue
    variant, _, who, work, value, unit = f
    try:
        v = float(value)
    except ValueError:
        continue
    lower_better = work.endswith("-rss")
    old = best.get((who, work))
    if old is None or (v < old[0] if lower_better else v > old[0]):
        best[(who, work)] = (v, unit, variant)
    if work not in WORK:
        WORK.append(work)

def fmt(v):
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"

e = os.environ
print("# Benchmark results" + (" (--quick smoke run: not for quoting)" if e["QUICK"] == "1" else ""))
print()
print(f"- date: {e['RUN_DATE']}, commit {e['COMMIT'].replace(chr(10), '')}")
print(f"- CPU: {e['CPU']}, {e['NCPU']} logical CPUs,{e['SIMD']}")
print(f"- load average (1 min) at start {e['START_LOAD']}, at end {e['END_LOAD']}"
      + (" (busy machine: numbers unreliable)" if float(e['START_LOAD']) > 0.5 else ""))
print(f"- ours: build-release (meson --buildtype=release), its own thread settings"
      + (f"; {e['OURS_NOTE']}" if e["OURS_NOTE"] else ""))
print(f"- torch {e['TORCH_V']}: torch.set_num_threads(2) (OpenMP), OpenBLAS as BLAS;"
      " run as is (OpenBLAS 2 threads) and with OPENBLAS_NUM_THREADS=1, better kept"
      " (`¹` marks the single-threaded-OpenBLAS run)")
print(f"- numpy {e['NUMPY_V']}: OpenBLAS, same two runs, better kept;"
      " numpy-perexample = Nielsen's network.py (f64 as published, and f32)")
print("- openblas: cblas_sgemm, 2 threads (openblas_set_num_threads)")
print(f"- peers ran with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (caller had"
      f" {e['CALLER_CORETYPE']} / {e['CALLER_L2']})")
print("- throughput: higher is better, ratio = ours / best peer (> 1: we are faster);"
      " rss: peak resident KiB, lower is better, ratio = best peer / ours (> 1: we use less)")
print()
print("| workload | unit | ours | " + " | ".join(PEERS) + " | ours vs best peer |")
print("|---|---|" + "---:|" * (len(PEERS) + 2))
for work in WORK:
    rss = work.endswith("-rss")
    units = {best[k][1] for k in best if k[1] == work}
    row = [work, "/".join(sorted(units)) or "-"]
    ours = best.get(("ours", work))
    row.append(fmt(ours[0]) if ours else "-")
    peer_vals = []
    for p in PEERS:
        r = best.get((p, work))
        if r is None:
            row.append("-")
            continue
        peer_vals.append((r[0], p))
        row.append(fmt(r[0]) + ("¹" if r[2] == "ob1" else ""))
    if ours and ours[0] > 0 and peer_vals:
        bv, bp = (min if rss else max)(peer_vals)
        ratio = (bv / ours[0]) if rss else (ours[0] / bv)
        row.append(f"{ratio:.2f}× ({bp})")
    else:
        row.append("-")
    print("| " + " | ".join(row) + " |")
EOF

echo
cat "$OUT"
log "written $OUT (raw RESULT lines: $RAW)"
