#!/bin/sh
# fuzz/run.sh [SECONDS]: runs every libFuzzer target for SECONDS (default 30)
# over a copy of its seed corpus (fuzz/corpus/<target>, left unchanged), with
# AddressSanitizer, LeakSanitizer and UBSan. A target whose corpus is missing
# or empty is an error, not a silent run from nothing (the model seeds are
# binary files from fuzz/make_seeds.c: `build-fuzz/fuzz/make_seeds
# fuzz/corpus` rewrites them). Configures and builds build-fuzz first if
# needed (clang; see fuzz/meson.build). Prints one line per target with its
# executions and the coverage edges it reached; exits non-zero if any target
# finds something (crash, invariant, leak, sanitizer report, timeout, out of
# memory). Findings are kept in build-fuzz/fuzz-findings/: the input that
# triggers it, and the log.
#
# Environment: FUZZ_TARGETS="api csv" to run some targets only; FUZZ_BUILD
# for another build directory. The api target also reads FUZZ_API_STRICT=1
# (make the calls the engine is known to get wrong as well: each has a
# regress-* input named in fuzz/fuzz_api.c, which fails with it set) and
# FUZZ_API_TRACE=1 (print each step of an input, to read a reproducer:
# build-fuzz/fuzz/fuzz_api INPUT).
set -u

seconds=${1:-30}
case $seconds in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-refcase model idx csv api npy safetensors}

# The checkpoint target joins the default list (it is named apart so that
# the list above stays one line others can extend).
[ -n "${FUZZ_TARGETS:-}" ] || targets="$targets checkpoint"

for t in $targets; do
    if [ -z "$(find "$root/fuzz/corpus/$t" -type f 2>/dev/null | head -n 1)" ]; then
        echo "$0: no seed corpus for target '$t': fuzz/corpus/$t is missing or empty" >&2
        exit 1
    fi
done

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false || exit 1
fi
for t in $targets; do
    ninja -C "$build" "fuzz/fuzz_$t" >/dev/null || { ninja -C "$build" "fuzz/fuzz_$t"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-run.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM
findings=$build/fuzz-findings
mkdir -p "$findings"

export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# Longest input per target: room for a few cases / a small model / a
# program of a few hundred steps, while each run stays fast.
max_len() {
    case $1 in
    refcase) echo 4096 ;;
    model) echo 4096 ;;
    idx) echo 2048 ;;
    csv) echo 4096 ;;
    api) echo 2048 ;;
    npy) echo 2048 ;;
    safetensors) echo 4096 ;;
    *) echo 4096 ;;
    esac
}

status=0
printf '%-8s %8s %12s %6s  %s\n' target seconds executions edges result
for t in $targets; do
    corpus=$work/corpus-$t
    mkdir -p "$corpus" "$work/artifacts-$t"
    cp -R "$root/fuzz/corpus/$t/." "$corpus/" || exit 1
    log=$work/$t.log
    "$build/fuzz/fuzz_$t" "$corpus" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
        -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts-$t/" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    edges=$(sed -n 's/^#[0-9]*.* cov: \([0-9]*\) .*/\1/p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="FINDING (exit $rc)"
        status=1
        for a in "$work/artifacts-$t/"*; do
            [ -f "$a" ] && cp "$a" "$findings/$t-$(basename "$a")" && result="$result: $findings/$t-$(basename "$a")"
        done
        cp "$log" "$findings/$t.log"
    fi
    printf '%-8s %8s %12s %6s  %s\n' "$t" "$seconds" "${execs:-?}" "${edges:-?}" "$result"
    if [ "$rc" -ne 0 ]; then
        grep -E 'ERROR|invariant failed|runtime error|SUMMARY' "$log" | head -n 5 | sed 's/^/    /'
    fi
done
exit $status
