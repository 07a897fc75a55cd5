#!/usr/bin/env bash
# Benchmark driver: our engine against PyTorch, NumPy, kann and OpenBLAS.
#
#   bench/run.sh            full run (about 5 minutes on an idle 2-core box,
#                           2 more with kann, before the OpenBLAS peers'
#                           forced-core runs, which about double their share)
#   bench/run.sh --quick    smoke test (under a minute, half a minute more
#                           with kann): one round, fewer repetitions, no
#                           NumPy per-example network, one thread variant
#                           per peer
#   bench/run.sh --rounds N run the timing programs N times (default 2,
#                           --quick 1) and keep each one's best
#
# It (a) builds our release build (build-release/, meson + ninja) whose
# bench/bench prints our RESULT lines, (b) compiles bench/gemm_openblas.c to
# build-release/gemm_openblas and, given a kann checkout, bench/peers/kann_peer.c
# with it to build-release/kann_peer, (c) runs every peer, (d) prints a
# markdown table and writes it to bench/results.md.  Raw lines and logs are
# kept in build-release/bench-logs/.
#
# Every program prints `RESULT <who> <workload> <value> <unit>`.  Peers run
# under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` (those two variables,
# set on some of our machines, halve OpenBLAS); nothing is unset for the
# rest of the script.  PyTorch and NumPy run twice, once as they are and once
# with OpenBLAS single-threaded (OPENBLAS_NUM_THREADS=1; torch keeps its 2
# OpenMP intra-op threads); PyTorch also a third time with 1 intra-op thread
# and OpenBLAS's 2 (TORCH_THREADS=1), since Debian's torch pairs 2 spinning
# OpenMP threads with 2 OpenBLAS threads on our 2 cores.  The best run is
# reported per workload.  Every -rss workload runs in a process of its own.
#
# Peers at their best kernel: a DYNAMIC_ARCH OpenBLAS picks its kernel set
# ("core") from the CPU's family and model, and one older than the CPU falls
# back to a slow one (Debian's 0.3.21 on an Emerald Rapids Xeon: Prescott,
# SSE3, about a fifth of SkylakeX).  So every OpenBLAS-based program (gemm_openblas,
# NumPy, PyTorch: Debian's calls sgemm_ through libblas.so.3, i.e. OpenBLAS,
# kann's CBLAS build) runs twice, each thread variant too: as is, and with
# OPENBLAS_CORETYPE forced to the best core the CPU's feature bits allow
# (/proc/cpuinfo flags, never the model name, which virtual machines hide):
# AVX-512 F+BW+DQ+VL: SAPPHIRERAPIDS if amx_tile, COOPERLAKE if avx512_bf16,
# else SKYLAKEX; AVX2+FMA: HASWELL, then ZEN.  OpenBLAS quietly ignores a
# name it does not know, so each candidate is tried first (`gemm_openblas
# --core`) and the first one OpenBLAS reports back running is forced.  Each
# program prints the core it actually ran (`OPENBLAS_CORE <name>`, from
# openblas_get_corename() of the OpenBLAS it loaded); the better of the two
# settings is kept per workload and the table says which won and on what
# core, e.g. "171.6 (SkylakeX, forced)", with both settings side by side
# below it.  No AVX2: no forced run.  --quick skips the forced runs when
# OpenBLAS already picks the forced core as is.
#
# kann (github.com/attractivechaos/kann, MIT; C, float only) is not part of
# this repository: KANN_DIR names a directory holding its kann.c, kann.h,
# kautodiff.c and kautodiff.h (default: ../kann-src next to this checkout, if
# there).  kann_peer.c is compiled with them using the flags of kann's own
# Makefile (-O2 -DHAVE_PTHREAD; -O3 -march=native is no faster), once as is
# (kann's own sgemm) and once with its Makefile's CBLAS option (-DHAVE_CBLAS,
# OpenBLAS's cblas_sgemm).  It runs single-threaded as is, with kann_mt(2)
# (each mini-batch split over 2 threads; marked ³), and as the CBLAS build
# (1 kann thread, OpenBLAS's own threads; marked ⁴); --quick runs the first
# only.  Without the four files kann is left out with a note.
#
# Run it on an otherwise idle machine: a second process on one of the two
# cores halves every 2-thread number (and makes PyTorch's OpenMP threads
# crawl).  Before each program it waits up to IDLE_WAIT seconds (default 30)
# for idle CPUs, and flags (†) the results of any program during which other
# processes took more than a tenth of a core.
#
# The table's header names the CPU (model name, vendor, family/model
# numbers), its vector ISA (from the flags) and the GEMM kernel our dispatch
# chose: run.sh compiles a two-line program against $BUILD_DIR/libautograd.a
# calling the ag_*kernel_name(void) that autograd/autograd.h (or
# autograd/kernels/exec.h) declares; OURS_KERNEL, if set, is printed instead.
#
# Environment: BUILD_DIR (default build-release), OURS_BIN (default
# $BUILD_DIR/bench/bench), PYTHON (default /usr/bin/python3, Debian's: the
# pyenv python3 on PATH has no torch), IDLE_WAIT, KANN_DIR, OURS_KERNEL,
# FORCE_CORETYPE (the core to force instead of the one the flags pick;
# "none": no forced runs).
set -u
cd "$(dirname "$0")/.." || exit 1

QUICK=0
ROUNDS=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=${2:-}; shift ;;
        --rounds=*) ROUNDS=${1#--rounds=} ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
                   exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$ROUNDS" ] || { [ "$QUICK" = 1 ] && ROUNDS=1 || ROUNDS=2; }
case "$ROUNDS" in
    '' | *[!0-9]* | 0) echo "run.sh: --rounds wants a positive integer" >&2; exit 2 ;;
esac

PY=${PYTHON:-/usr/bin/python3}
BUILD=${BUILD_DIR:-build-release}
OURS_BIN=${OURS_BIN:-$BUILD/bench/bench}
PEER_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
OB1=(OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2)
T1=(TORCH_THREADS=1)
TIMING=(W1-f32 W1-f64 W2-f32 W3 W4-1024 W4-2048)
QFLAG=()
[ "$QUICK" = 1 ] && QFLAG=(--quick)

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }

START_LOAD=$(load1)

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
rm -f "$LOGS"/*.log "$LOGS"/*.out "$LOGS/busy.txt"

# ---- (b) the OpenBLAS gemm reference ---------------------------------------
GEMM=$BUILD/gemm_openblas
log "cc -O2 bench/gemm_openblas.c -> $GEMM"
cc -O2 -std=c11 -Wall bench/gemm_openblas.c -o "$GEMM" -lopenblas >&2 \
    || { log "gemm_openblas: compile failed"; GEMM=""; }

# ---- (b'') the OpenBLAS core to force ---------------------------------------
# From the CPU's feature bits (see the top): the candidates, best first; the
# first one OpenBLAS reports back running when asked to force it wins.
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo)
has() { local f; for f; do case " ${FLAGS#*:} " in *" $f "*) ;; *) return 1 ;; esac; done; }
core_of() { # core_of [CORETYPE]: the core OpenBLAS runs under PEER_ENV (and CORETYPE)
    local set=()
    [ -n "${1:-}" ] && set=(OPENBLAS_CORETYPE="$1")
    if [ -n "$GEMM" ]; then
        "${PEER_ENV[@]}" "${set[@]}" "$GEMM" --core 2>/dev/null
    else
        "${PEER_ENV[@]}" "${set[@]}" "$PY" -c 'import ctypes
l = ctypes.CDLL("libopenblas.so.0"); l.openblas_get_corename.restype = ctypes.c_char_p
print(l.openblas_get_corename().decode())' 2>/dev/null
    fi
}
CORE_CANDIDATES=()
CORE_WHY="no AVX2+FMA in the CPU flags"
if has avx512f avx512bw avx512dq avx512vl; then
    CORE_WHY="avx512f+avx512bw+avx512dq+avx512vl"
    has amx_tile && CORE_CANDIDATES+=(SAPPHIRERAPIDS) && CORE_WHY="$CORE_WHY+amx_tile"
    has avx512_bf16 && CORE_CANDIDATES+=(COOPERLAKE) && CORE_WHY="$CORE_WHY+avx512_bf16"
    CORE_CANDIDATES+=(SKYLAKEX)
fi
if has avx2 fma; then
    [ ${#CORE_CANDIDATES[@]} = 0 ] && CORE_WHY="avx2+fma, no AVX-512"
    CORE_CANDIDATES+=(HASWELL ZEN)
fi
if [ -n "${FORCE_CORETYPE:-}" ]; then
    CORE_WHY="FORCE_CORETYPE=$FORCE_CORETYPE"
    CORE_CANDIDATES=()
    [ "$FORCE_CORETYPE" = none ] || CORE_CANDIDATES=("$FORCE_CORETYPE")
fi
ASIS_CORE=$(core_of)
ASIS_CORE=${ASIS_CORE:-unknown}
FORCE_CORE="" FORCE_NAME="" CORE_TRIED=""
for c in "${CORE_CANDIDATES[@]}"; do
    got=$(core_of "$c")
    if [ -n "$got" ] && [ "${got,,}" = "${c,,}" ]; then
        FORCE_CORE=$c FORCE_NAME=$got
        CORE_TRIED="$CORE_TRIED${CORE_TRIED:+, }$c: runs $got"
        break
    fi
    CORE_TRIED="$CORE_TRIED${CORE_TRIED:+, }$c: not taken (runs ${got:-?})"
done
log "OpenBLAS core as is: $ASIS_CORE; to force, from $CORE_WHY: ${CORE_TRIED:-nothing tried}"
FORCE_RUNS=0
if [ -z "$FORCE_CORE" ]; then
    log "no OPENBLAS_CORETYPE to force: OpenBLAS peers run as is only"
elif [ "$QUICK" = 1 ] && [ "${ASIS_CORE,,}" = "${FORCE_NAME,,}" ]; then
    log "--quick: OpenBLAS runs $ASIS_CORE as is already; no forced runs"
else
    FORCE_RUNS=1
    log "OpenBLAS peers run twice: as is ($ASIS_CORE) and OPENBLAS_CORETYPE=$FORCE_CORE"
fi

# ---- (b') kann, if we have its sources -------------------------------------
# Flags from kann's Makefile (CFLAGS -O2, CPPFLAGS -DHAVE_PTHREAD, LIBS
# -lpthread -lm; with CBLAS=dir: -DHAVE_CBLAS and -lopenblas); its -g and
# warning flags are left out.
KANN_DIR=${KANN_DIR:-}
[ -z "$KANN_DIR" ] && [ -f ../kann-src/kann.c ] && KANN_DIR=../kann-src
KANN_BIN="" KANN_CBLAS_BIN="" KANN_NOTE="" KANN_V=""
KANN_CFLAGS=(-O2 -DHAVE_PTHREAD)
if [ -n "$KANN_DIR" ] && [ -f "$KANN_DIR/kann.c" ] && [ -f "$KANN_DIR/kann.h" ] &&
   [ -f "$KANN_DIR/kautodiff.c" ] && [ -f "$KANN_DIR/kautodiff.h" ]; then
    KANN_V=$(sed -n 's/^#define KANN_VERSION "\(.*\)"/\1/p' "$KANN_DIR/kann.h")
    kann_cc() { # kann_cc <output> <note> extra-flags...: kann_peer.c + kann
        local out=$1 note=$2
        shift 2
        log "cc ${KANN_CFLAGS[*]} $* bench/peers/kann_peer.c $KANN_DIR/{kann,kautodiff}.c -> $out"
        cc "${KANN_CFLAGS[@]}" -DKANN_BUILD="\"cc ${KANN_CFLAGS[*]}$note\"" -I"$KANN_DIR" \
            bench/peers/kann_peer.c "$KANN_DIR/kann.c" "$KANN_DIR/kautodiff.c" \
            -o "$out" "$@" -lpthread -lm >&2
    }
    kann_cc "$BUILD/kann_peer" " (kann's Makefile), its own sgemm" && KANN_BIN=$BUILD/kann_peer \
        || { log "kann_peer: compile failed"; KANN_NOTE="kann: compile failed (see the log)"; }
    kann_cc "$BUILD/kann_peer_cblas" " -DHAVE_CBLAS, OpenBLAS's cblas_sgemm" -DHAVE_CBLAS -lopenblas \
        && KANN_CBLAS_BIN=$BUILD/kann_peer_cblas || log "kann_peer_cblas: compile failed; no CBLAS variant"
else
    KANN_NOTE="kann: not measured (set KANN_DIR to a kann checkout)"
    log "$KANN_NOTE"
    echo "$KANN_NOTE"
fi

# Our machines are shared: before each program wait (up to IDLE_WAIT seconds)
# for the CPUs to be idle, and afterwards compare the CPU time the whole
# machine spent during the run with what our child used; if other processes
# took more than a tenth of a core, its RESULT lines are flagged (a † in the
# table).
IDLE_WAIT=${IDLE_WAIT:-30}
HZ=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
idle_pct() { # idle percentage of all CPUs over the next second
    local a b
    a=($(awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat))
    sleep 1
    b=($(awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat))
    echo $(( 100 * (b[1] - a[1]) / (b[0] - a[0] + b[1] - a[1] + 1) ))
}
wait_idle() {
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt "$IDLE_WAIT" ]; do
        [ "$(idle_pct)" -ge 90 ] && return 0
    done
    [ "$IDLE_WAIT" -gt 0 ] && log "CPUs still busy after ${IDLE_WAIT}s of waiting; going on"
    return 0
}
child_cpu() { # CHILD_CPU = CPU seconds used so far by this shell's children
    times > "$LOGS/.times"  # (not in a $(...) subshell: it has no children)
    CHILD_CPU=$(awk 'NR == 2 { split($1, u, "m"); split($2, s, "m");
                               print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$LOGS/.times")
}

# run <threads>/<setting> <logname> command...: keeps its RESULT lines in
# $RAW, tagged <threads>/<setting>/<core> (the core from the program's
# OPENBLAS_CORE line, - if none) and a * when the machine was busy;
# everything else goes to $LOGS/<logname>.log.
run() {
    local variant=$1 name=$2 status b0 c0 t0 b1 c1 t1 others core
    shift 2
    wait_idle
    log "$name: $*"
    child_cpu; c0=$CHILD_CPU b0=$(busy_ticks) t0=$(date +%s.%N)
    "$@" > "$LOGS/$name.out" 2> "$LOGS/$name.log"
    status=$?
    b1=$(busy_ticks) t1=$(date +%s.%N); child_cpu; c1=$CHILD_CPU
    [ $status -ne 0 ] && log "$name: exit status $status (see $LOGS/$name.log)"
    others=$(awk -v b="$((b1 - b0))" -v hz="$HZ" -v c0="$c0" -v c1="$c1" \
                 -v t0="$t0" -v t1="$t1" \
             'BEGIN { o = (b / hz - (c1 - c0)) / (t1 - t0); printf "%.2f", o < 0 ? 0 : o }')
    if awk -v o="$others" 'BEGIN { exit !(o > 0.1) }'; then
        log "$name: other processes used $others of a core meanwhile: flagged"
        echo "$name: other processes used $others of a core" >> "$LOGS/busy.txt"
        variant="$variant*"
    fi
    core=$(sed -n 's/^OPENBLAS_CORE \([A-Za-z0-9_.-]*\).*/\1/p' "$LOGS/$name.out" | head -1)
    variant="${variant%\*}/${core:--}${variant##*[!*]}"
    grep '^RESULT ' "$LOGS/$name.out" | sed "s|^|$variant |" | tee -a "$RAW" >&2
    return 0
}

# peer <threads> <logname> [NAME=VALUE...] command...: an OpenBLAS-based
# peer, run as is and (when there is a core to force) again with
# OPENBLAS_CORETYPE forced, right after, under the same conditions.
peer() {
    local threads=$1 name=$2
    shift 2
    run "$threads/asis" "$name" "${PEER_ENV[@]}" "$@"
    [ "$FORCE_RUNS" = 1 ] &&
        run "$threads/forced" "$name-forced" "${PEER_ENV[@]}" OPENBLAS_CORETYPE="$FORCE_CORE" "$@"
    return 0
}

# ---- (c) ours, then the peers ---------------------------------------------
OURS_OK=1
if [ -n "$OURS_NOTE" ] || [ ! -x "$OURS_BIN" ]; then
    echo "ours: not built${OURS_NOTE:+ ($OURS_NOTE)}"
    OURS_NOTE=${OURS_NOTE:-not built}
    OURS_OK=0
fi

# The GEMM kernel our dispatch chose, for the header: from the library's
# ag_*kernel_name(void) where autograd.h or kernels/exec.h declares one.
OURS_KERNEL=${OURS_KERNEL:-}
if [ -z "$OURS_KERNEL" ] && [ "$OURS_OK" = 1 ]; then
    for h in autograd/autograd.h autograd/kernels/exec.h; do
        fn=$(grep -ohE '\bag_[a-z0-9_]*kernel_name[ ]*\([ ]*void[ ]*\)' "$h" 2>/dev/null |
             head -1 | sed 's/[ ]*(.*//')
        [ -n "$fn" ] || continue
        printf '#include "%s"\n#include <stdio.h>\nint main(void) { puts(%s()); return 0; }\n' \
            "$PWD/$h" "$fn" > "$BUILD/kernel_name.c"
        if cc -std=c11 -I autograd -I "$(dirname "$h")" "$BUILD/kernel_name.c" "$BUILD/libautograd.a" \
               -o "$BUILD/kernel_name" -lm -lpthread >&2; then
            OURS_KERNEL="$("$BUILD/kernel_name") (${fn}())"
        fi
        break
    done
fi
# TODO(issue 12): until the library declares an ag_*kernel_name(void) (the
# GEMM work adds one), the header can only show OURS_KERNEL from the caller.
[ -n "$OURS_KERNEL" ] || OURS_KERNEL="not reported (no ag_*kernel_name() in autograd.h or kernels/exec.h; set OURS_KERNEL)"
log "our kernel: $OURS_KERNEL"
if [ "$QUICK" = 1 ]; then
    NP=(W1-f32 W1-f64 W2-f32)
    NP_RSS=(W1-f32-rss W2-f32-rss)
else
    NP=(PE-W1-f64 PE-W1-f32 W1-f32 W1-f64 W2-f32)
    NP_RSS=(PE-W1-f32-rss W1-f32-rss W2-f32-rss)
fi

# Timing: ROUNDS rounds of everything (ours included), best per program and
# workload kept: the 2-thread numbers of every program here swing by up to
# a third from one process to the next (the host's placement of our two
# vCPUs, it seems), so one sample each would mostly measure luck.
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r of $ROUNDS"
    [ "$OURS_OK" = 1 ] && run def/- "ours-r$r" "$OURS_BIN"
    if [ -n "$GEMM" ]; then
        if [ "$QUICK" = 1 ]; then
            peer def "openblas-r$r" "$GEMM" --reps 2
        else
            peer def "openblas-r$r" "$GEMM"
        fi
    fi
    peer def "torch-r$r" "$PY" bench/peers/torch_peer.py "${QFLAG[@]}" "${TIMING[@]}"
    if [ "$QUICK" = 0 ]; then
        peer ob1 "torch-ob1-r$r" "${OB1[@]}" "$PY" bench/peers/torch_peer.py "${TIMING[@]}"
        peer t1 "torch-t1-r$r" "${T1[@]}" "$PY" bench/peers/torch_peer.py "${TIMING[@]}"
    fi
    peer def "numpy-r$r" "$PY" bench/peers/numpy_peer.py "${NP[@]}"
    [ "$QUICK" = 1 ] || peer ob1 "numpy-ob1-r$r" "${OB1[@]}" "$PY" bench/peers/numpy_peer.py "${NP[@]}"
    if [ -n "$KANN_BIN" ]; then
        # kann's own sgemm: no OpenBLAS in the process, one setting
        run def/- "kann-r$r" "${PEER_ENV[@]}" "$KANN_BIN" W1-f32 W2-f32
        [ "$QUICK" = 1 ] || run kmt2/- "kann-mt2-r$r" "${PEER_ENV[@]}" "$KANN_BIN" --threads 2 W1-f32 W2-f32
        [ "$QUICK" = 1 ] || [ -z "$KANN_CBLAS_BIN" ] ||
            peer cblas "kann-cblas-r$r" "$KANN_CBLAS_BIN" W1-f32 W2-f32
    fi
done

# Peak RSS: once, each workload in a process of its own.
if [ "$OURS_OK" = 1 ]; then
    run def/- ours-W1-f32-rss "$OURS_BIN" W1-f32-rss
    run def/- ours-W2-f32-rss "$OURS_BIN" W2-f32-rss
fi
for w in W1-f32-rss W2-f32-rss; do
    peer def "torch-$w" "$PY" bench/peers/torch_peer.py "$w"
    [ "$QUICK" = 1 ] || peer ob1 "torch-ob1-$w" "${OB1[@]}" "$PY" bench/peers/torch_peer.py "$w"
    [ "$QUICK" = 1 ] || peer t1 "torch-t1-$w" "${T1[@]}" "$PY" bench/peers/torch_peer.py "$w"
done
for w in "${NP_RSS[@]}"; do
    peer def "numpy-$w" "$PY" bench/peers/numpy_peer.py "$w"
done
if [ -n "$KANN_BIN" ]; then
    for w in W1-f32-rss W2-f32-rss; do
        run def/- "kann-$w" "${PEER_ENV[@]}" "$KANN_BIN" "$w"
        [ "$QUICK" = 1 ] || run kmt2/- "kann-mt2-$w" "${PEER_ENV[@]}" "$KANN_BIN" --threads 2 "$w"
        [ "$QUICK" = 1 ] || [ -z "$KANN_CBLAS_BIN" ] ||
            peer cblas "kann-cblas-$w" "$KANN_CBLAS_BIN" "$w"
    done
fi

END_LOAD=$(load1)

# ---- (d) the table ----------------------------------------------------------
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
[ -n "$CPU" ] || CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
cpuinfo() { sed -n "s/^$1\s*: //p" /proc/cpuinfo | head -1; }
CPU_ID="$(cpuinfo vendor_id), family $(cpuinfo 'cpu family') model $(cpuinfo model) stepping $(cpuinfo stepping)"
TORCH_V=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)
NUMPY_V=$("$PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null)

OUT=bench/results.md
RUN_DATE=$(date '+%Y-%m-%d %H:%M:%S %Z') CPU="$CPU" CPU_ID="$CPU_ID" FLAGS="$FLAGS" NCPU=$(nproc) \
QUICK=$QUICK ROUNDS=$ROUNDS OURS_NOTE="$OURS_NOTE" OURS_KERNEL="$OURS_KERNEL" \
TORCH_V="$TORCH_V" NUMPY_V="$NUMPY_V" \
START_LOAD="$START_LOAD" END_LOAD="$END_LOAD" \
KANN_NOTE="$KANN_NOTE" KANN_V="$KANN_V" KANN_DIR="$KANN_DIR" KANN_CBLAS="${KANN_CBLAS_BIN:+1}" \
KANN_CFLAGS="${KANN_CFLAGS[*]}" \
ASIS_CORE="$ASIS_CORE" FORCE_CORE="$FORCE_CORE" FORCE_NAME="$FORCE_NAME" FORCE_RUNS="$FORCE_RUNS" \
CORE_WHY="$CORE_WHY" CORE_TRIED="$CORE_TRIED" \
CALLER_CORETYPE="${OPENBLAS_CORETYPE-<unset>}" CALLER_L2="${OPENBLAS_L2_SIZE-<unset>}" \
COMMIT=$(git rev-parse --short HEAD 2>/dev/null; git diff --quiet HEAD 2>/dev/null || echo "+dirty") \
"$PY" - "$RAW" "$LOGS" > "$OUT" <<'EOF'
import os, sys

WORK = ["W1-f32", "W1-f64", "W2-f32", "W3", "W4-1024-fwd", "W4-1024-bwd",
        "W4-2048-fwd", "W4-2048-bwd", "W1-f32-rss", "W2-f32-rss"]
PEERS = ["torch", "numpy-perexample", "numpy-batch", "kann", "openblas"]
MARK = {"ob1": "¹", "t1": "²", "kmt2": "³", "cblas": "⁴"}  # thread variant -> table mark

# RAW lines: "<threads>/<setting>/<core>[*] RESULT <who> <workload> <value> <unit>",
# setting asis, forced or - (no OpenBLAS), core as the program reported it.
best = {}     # (who, workload) -> (value, unit, threads, setting, core, busy)
by_set = {}   # (who, workload, setting) -> the same, best under that setting
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) != 6 or f[1] != "RESULT":
        continue
    tag, _, who, work, value, unit = f
    try:
        v = float(value)
    except ValueError:
        continue
    busy = tag.endswith("*")
    threads, setting, core = (tag.rstrip("*").split("/") + ["-", "-"])[:3]
    rec = (v, unit, threads, setting, core, busy)
    lower_better = work.endswith("-rss")
    for table, key in ((best, (who, work)), (by_set, (who, work, setting))):
        old = table.get(key)
        if old is None or (v < old[0] if lower_better else v > old[0]):
            table[key] = rec
    if work not in WORK:
        WORK.append(work)

def fmt(v):
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"

def core_tag(r, style=" ({})"):
    """' (SkylakeX, forced)' / ' (Zen, as is)' for an OpenBLAS run, else ''."""
    if r[3] not in ("asis", "forced"):
        return ""
    core = r[4] if r[4] not in ("-", "none") else "no OpenBLAS loaded"
    return style.format(f"{core}, {'forced' if r[3] == 'forced' else 'as is'}")

e = os.environ
flags = set(e["FLAGS"].split(":", 1)[-1].split())
def named(pairs):
    return [n for f, n in pairs if f in flags]
isa = named([("sse4_2", "SSE4.2"), ("avx", "AVX"), ("avx2", "AVX2"), ("fma", "FMA")])
a512 = named([("avx512f", "F"), ("avx512cd", "CD"), ("avx512bw", "BW"), ("avx512dq", "DQ"),
              ("avx512vl", "VL"), ("avx512ifma", "IFMA"), ("avx512vbmi", "VBMI"),
              ("avx512_vbmi2", "VBMI2"), ("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16"),
              ("avx512_fp16", "FP16")])
amx = named([("amx_tile", "TILE"), ("amx_bf16", "BF16"), ("amx_int8", "INT8")])
if a512:
    isa.append("AVX-512 " + "/".join(a512))
if amx:
    isa.append("AMX " + "/".join(amx))

print("# Benchmark results" + (" (--quick smoke run: not for quoting)" if e["QUICK"] == "1" else ""))
print()
busy_file = os.path.join(sys.argv[2], "busy.txt")
if os.path.exists(busy_file):
    n_busy = sum(1 for _ in open(busy_file))
    n_all = sum(1 for n in os.listdir(sys.argv[2]) if n.endswith(".out"))
    if n_busy * 4 >= n_all:
        print(f"**Noisy machine: {n_busy} of {n_all} programs ran while other processes used"
              " more than a tenth of a core (†, listed below); figures of different programs"
              " are not comparable, and none is for quoting. Rerun on an idle machine.**")
        print()
print(f"- date: {e['RUN_DATE']}, commit {e['COMMIT'].replace(chr(10), '')}")
print(f"- CPU: {e['CPU']} ({e['CPU_ID']}), {e['NCPU']} logical CPUs")
print(f"- vector ISA (/proc/cpuinfo flags): {', '.join(isa) or 'none of SSE4.2/AVX/AVX2/FMA/AVX-512'}")
print(f"- our GEMM kernel (dispatch): {e['OURS_KERNEL']}")
if e["FORCE_CORE"]:
    forced = (f"OPENBLAS_CORETYPE={e['FORCE_CORE']} (from {e['CORE_WHY']}; tried {e['CORE_TRIED']})")
    runs = ("every OpenBLAS-based program ran as is and with " + forced + ", better kept per workload"
            if e["FORCE_RUNS"] == "1" else
            f"forced core {e['FORCE_NAME']} is what OpenBLAS picks as is: no forced runs (--quick)")
else:
    runs = (f"no core to force ({e['CORE_WHY']}; tried {e['CORE_TRIED'] or 'nothing'}):"
            " OpenBLAS-based programs ran as is only")
print(f"- OpenBLAS core as is: {e['ASIS_CORE']}; {runs}")
print(f"- timings: best of {e['ROUNDS']} round(s) of every program (and, for the peers,"
      " of their thread variants and OpenBLAS core settings below); peak RSS: one process per workload")
print(f"- load average (1 min) at start {e['START_LOAD']}, at end {e['END_LOAD']}")
print(f"- ours: build-release (meson --buildtype=release), its own thread settings"
      + (f"; {e['OURS_NOTE']}" if e["OURS_NOTE"] else ""))
print(f"- torch {e['TORCH_V']}: OpenMP intra-op threads; its matmuls in OpenBLAS where it is Debian's"
      " (BLAS_INFO=generic: sgemm_ through libblas.so.3, see the processes' notes below);"
      " best of three thread set-ups:"
      " set_num_threads(2) with OpenBLAS's 2 threads (as is), set_num_threads(2) with"
      " OPENBLAS_NUM_THREADS=1 (marked ¹), set_num_threads(1) with OpenBLAS's 2 threads (marked ²)")
print(f"- numpy {e['NUMPY_V']}: OpenBLAS, as is and with OPENBLAS_NUM_THREADS=1 (¹), better kept;"
      " numpy-perexample = Nielsen's network.py (f64 as published, and f32)")
if e["KANN_NOTE"]:
    print(f"- {e['KANN_NOTE']}")
else:
    print(f"- kann {e['KANN_V']} ({e['KANN_DIR']}, not part of this repository): C, f32 only;"
          f" bench/peers/kann_peer.c built with its sources, cc {e['KANN_CFLAGS']} (kann's Makefile);"
          " plain SGD on kann_cost()'s gradients; best of: its own sgemm single-threaded (as is)"
          + ("" if e["QUICK"] == "1" else ", kann_mt with 2 threads (³)"
             + (", built with -DHAVE_CBLAS on OpenBLAS's cblas_sgemm (⁴)" if e["KANN_CBLAS"] else "")))
print("- openblas: cblas_sgemm, 2 threads (openblas_set_num_threads)")
print(f"- peers ran with OPENBLAS_CORETYPE (but for the forced runs) and OPENBLAS_L2_SIZE unset"
      f" (caller had {e['CALLER_CORETYPE']} / {e['CALLER_L2']})")
print("- a peer's cell says in brackets the OpenBLAS core of its kept run and whether that"
      " was as is or forced")
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
    row.append((fmt(ours[0]) + ("†" if ours[5] else "")) if ours else "-")
    peer_vals = []
    for p in PEERS:
        r = best.get((p, work))
        if r is None:
            row.append("-")
            continue
        peer_vals.append((r[0], p, r))
        row.append(fmt(r[0]) + MARK.get(r[2], "") + ("†" if r[5] else "") + core_tag(r))
    if ours and ours[0] > 0 and peer_vals:
        bv, bp, br = (min if rss else max)(peer_vals, key=lambda t: t[0])
        ratio = (bv / ours[0]) if rss else (ours[0] / bv)
        row.append(f"{ratio:.2f}× ({bp}{core_tag(br, ', {}')})")
    else:
        row.append("-")
    print("| " + " | ".join(row) + " |")

# Both OpenBLAS settings side by side, for every program that ran both.
pairs = sorted({(k[0], k[1]) for k in by_set if k[2] == "forced"},
               key=lambda t: (PEERS.index(t[0]) if t[0] in PEERS else 99, WORK.index(t[1])))
if pairs:
    print()
    print(f"OpenBLAS as is vs OPENBLAS_CORETYPE={e['FORCE_CORE']} (each the best of its thread"
          " variants; [core] as the process reported it):")
    print()
    print("| peer | workload | unit | as is | forced | kept |")
    print("|---|---|---|---:|---:|---|")
    for who, work in pairs:
        a, f_ = by_set.get((who, work, "asis")), by_set.get((who, work, "forced"))
        cell = lambda r: ("-" if r is None else
                          f"{fmt(r[0])}{MARK.get(r[2], '')}{'†' if r[5] else ''} [{r[4]}]")
        kept = best[(who, work)][3]
        print(f"| {who} | {work} | {best[(who, work)][1]} | {cell(a)} | {cell(f_)} |"
              f" {'forced' if kept == 'forced' else 'as is'} |")

busy = os.path.join(sys.argv[2], "busy.txt")
if os.path.exists(busy):
    n_busy = sum(1 for _ in open(busy))
    n_all = sum(1 for n in os.listdir(sys.argv[2]) if n.endswith(".out"))
    print()
    print(f"† measured while other processes were using the CPUs (not idle enough to trust;"
          f" {n_busy} of {n_all} programs):")
    print()
    for line in open(busy):
        print(f"- {line.strip()}")

# what each peer process reported about its threads and OpenBLAS kernel
notes = []
for name in sorted(os.listdir(sys.argv[2])):
    if name.endswith(".log"):
        for line in open(os.path.join(sys.argv[2], name)):
            if line.startswith("# ") and line[2:].strip() not in notes:
                notes.append(line[2:].strip())
if notes:
    print()
    print("Processes reported:")
    print()
    for n in notes:
        print(f"- {n}")
EOF
echo
cat "$OUT"
log "written $OUT (raw RESULT lines: $RAW)"
