#!/usr/bin/env bash
# Thread scaling of our side of the benchmark, for the machine at hand:
# W1-f32 and W2-f32 (examples/s) at each thread count and at the default
# (ag_tape_threads with n == 0), W4-2048 forward and backward (GFLOP/s) at
# 1 thread and at the most, then bench/calibrate's measurements behind the
# thread cost model (the grains in autograd/kernels/exec.h). About two
# minutes on an idle 16-core machine.
#
#   bench/scaling.sh [--counts "1 2 4 8 16"] [--rounds N] [--bin DIR]
#                    [--also "DIR..."] [--quick]
#
#   --counts   thread counts to run W1 and W2 at (default: 1 2 4 8 16, cut
#              at the CPUs there are); W4 runs at the first and the last
#   --rounds   runs per figure, the best kept (default 2)
#   --bin DIR  take bench and calibrate from DIR instead of building
#   --also     more pairs of binaries (e.g. built from an older commit, or
#              with another setting), each also run at 1 thread, the most
#              and the default, labelled by its folder's name
#   --quick    one round, W1 and W2 only at the first and the last count and
#              the default, calibrate --quick
#
# It builds a release build in $BUILD_DIR (default build-scaling) with meson
# when meson and the tests' Criterion are there, else with cc directly (the
# same sources and flags: -O3, -ffp-contract=fast for the GEMM kernels).
# The table goes to stdout and table.md, every RESULT line (tagged with the
# binaries and the thread count) to results.txt, calibrate's to
# calibrate*.txt, all in $LOG_DIR (default $OUT if set, else
# $BUILD_DIR/logs): a handful of files.
set -u
cd "$(dirname "$0")/.." || exit 1

COUNTS=
ROUNDS=2
BIN=
ALSO=
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --counts) COUNTS=${2:-}; shift ;;
        --rounds) ROUNDS=${2:-2}; shift ;;
        --bin) BIN=${2:-}; shift ;;
        --also) ALSO=${2:-}; shift ;;
        --quick) QUICK=1; ROUNDS=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "scaling.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

BUILD=${BUILD_DIR:-build-scaling}
LOGS=${LOG_DIR:-${OUT:-$BUILD/logs}}
RUNS=$BUILD/runs
mkdir -p "$LOGS" "$BUILD" "$RUNS"
: >"$LOGS/results.txt"
CPUS=$(nproc)
if [ -z "$COUNTS" ]; then
    COUNTS=
    for c in 1 2 4 8 16 32 64; do [ "$c" -le "$CPUS" ] && COUNTS="$COUNTS $c"; done
fi
FIRST=$(echo $COUNTS | awk '{print $1}')
LAST=$(echo $COUNTS | awk '{print $NF}')
[ "$QUICK" = 1 ] && COUNTS="$FIRST $LAST"

# ------------------------------------------------------------ build
build_cc() { # the library, nn and the two programs with cc, no meson
    local out=$1 objs=() pids=() src obj flags
    mkdir -p "$out/obj"
    local srcs
    srcs=$(sed -n "/^autograd_src = files(/,/^)/p" meson.build | grep -o "'[^']*\.c'" | tr -d "'")
    srcs="$srcs $(sed -n "/^nn_src = files(/,/^)/p" nn/meson.build | grep -o "'[^']*\.c'" | tr -d "'" | sed 's|^|nn/|')"
    srcs="$srcs $(grep -o "static_library('agkernels', *'[^']*'" meson.build | grep -o "autograd/[^']*")"
    srcs="$srcs examples/flags.c"
    for src in $srcs; do
        obj="$out/obj/$(echo "$src" | tr / _).o"
        flags="-std=c11 -O3 -pthread -D_FILE_OFFSET_BITS=64 -Iautograd -Inn -Iexamples"
        case "$src" in autograd/kernels/gemm*) flags="$flags -ffp-contract=fast" ;; esac
        cc $flags -c "$src" -o "$obj" & pids+=($!)
        objs+=("$obj")
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done
    cc -std=c11 -O3 -pthread -Iautograd -Inn -Iexamples bench/bench.c "${objs[@]}" -lm -o "$out/bench" &&
        cc -std=c11 -O3 -pthread -Iautograd bench/calibrate.c "${objs[@]}" -lm -o "$out/calibrate"
}

if [ -z "$BIN" ]; then
    if command -v meson >/dev/null && pkg-config --exists criterion 2>/dev/null; then
        [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" --buildtype=release >"$LOGS/build.log" 2>&1
        ninja -C "$BUILD" bench/bench bench/calibrate >>"$LOGS/build.log" 2>&1 || { cat "$LOGS/build.log"; exit 1; }
        BIN=$BUILD/bench
    else
        build_cc "$BUILD/cc" >"$LOGS/build.log" 2>&1 || { cat "$LOGS/build.log"; exit 1; }
        BIN=$BUILD/cc
    fi
fi

# ------------------------------------------------------------ the machine
{
    echo "CPUs: $CPUS ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
    lscpu 2>/dev/null | grep -E "^(Thread\(s\) per core|Core\(s\) per socket|Socket\(s\)|L2 cache|L3 cache)" | tr -s ' '
    printf 'vector ISA: '
    if grep -qw avx512f /proc/cpuinfo; then echo AVX-512; elif grep -qw avx2 /proc/cpuinfo; then echo AVX2; else echo SSE; fi
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$LOGS/machine.txt"

# best FIELD of RESULT lines for one workload across rounds
best() { awk -v w="$2" '$3 == w && ($4 > b) { b = $4 } END { printf "%.0f", b }' "$1"; }

# runs bench DIR with --threads TH on workloads, ROUNDS times, into LOG
run_bench() {
    local bin=$1 th=$2 log=$3; shift 3
    for ((r = 0; r < ROUNDS; r++)); do
        "$bin/bench" --threads "$th" "$@" >>"$log" 2>&1
    done
    sed "s|^|$(basename "$bin") threads=$th: |" "$log" >>"$LOGS/results.txt"
}

table() { # the W1/W2 table for one pair of binaries
    local bin=$1 tag=$2 counts=$3 th head="| threads |" w1="| W1-f32 ex/s |" w2="| W2-f32 ex/s |" sep="| --- |"
    for th in $counts 0; do
        local log="$RUNS/$tag-t$th.txt"
        : >"$log"
        run_bench "$bin" "$th" "$log" W1-f32 W2-f32
        head="$head $([ "$th" = 0 ] && echo "default ($("$bin/calibrate" --default 2>/dev/null || echo ?))" || echo "$th") |"
        w1="$w1 $(best "$log" W1-f32) |"
        w2="$w2 $(best "$log" W2-f32) |"
        sep="$sep ---: |"
    done
    echo "$tag:"
    printf '%s\n%s\n%s\n%s\n\n' "$head" "$sep" "$w1" "$w2"
}

echo
table "$BIN" ours "$COUNTS" | tee "$LOGS/table.md"
for dir in $ALSO; do
    table "$dir" "$(basename "$dir")" "$FIRST $LAST" | tee -a "$LOGS/table.md"
done

if [ "$QUICK" = 0 ]; then
    line="| W4-2048 fwd / bwd GFLOP/s |"
    head="| threads |"
    for th in $FIRST $LAST; do
        log="$RUNS/ours-w4-t$th.txt"
        : >"$log"
        run_bench "$BIN" "$th" "$log" W4-2048
        head="$head $th |"
        line="$line $(best "$log" W4-2048-fwd) / $(best "$log" W4-2048-bwd) |"
    done
    printf '%s\n| --- | ---: | ---: |\n%s\n\n' "$head" "$line" | tee -a "$LOGS/table.md"
fi

# ------------------------------------------------------------ calibrate
"$BIN/calibrate" --threads "$LAST" $([ "$QUICK" = 1 ] && echo --quick) >"$LOGS/calibrate.txt" 2>&1
echo "calibrate (thread cost model; full lines in $LOGS/calibrate.txt):"
grep -E "dispatch|grain|gemm" "$LOGS/calibrate.txt" | awk '{printf "%s=%s%s", $3, $4, (NR % 4 ? "  " : "\n")} END { print "" }'
for dir in $ALSO; do
    "$dir/calibrate" --threads "$LAST" --quick >"$LOGS/calibrate-$(basename "$dir").txt" 2>&1
    echo "$(basename "$dir"): $(grep -E "dispatch|gemm-128x784x256" "$LOGS/calibrate-$(basename "$dir").txt" | awk '{printf "%s=%s ", $3, $4}')"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
