#!/bin/sh
# Line coverage of autograd/ and nn/ by the whole test suite (needs gcovr):
#   scripts/coverage.sh [MIN_PERCENT]
# Builds build-cov with gcov instrumentation, runs every test, prints the
# per-file table and fails if the total is below MIN_PERCENT (default 0).
set -eu
cd "$(dirname "$0")/.."
min=${1:-0}
# Counters updated atomically: the engine's threads bump the same ones, and
# racing plain increments once left gcov a negative branch count that gcovr
# refuses to parse (CI failed so on gemm_impl.h).
[ -d build-cov ] || meson setup build-cov -Db_coverage=true -Dc_args=-fprofile-update=atomic >/dev/null
ninja -C build-cov >/dev/null
find build-cov -name '*.gcda' -delete
meson test -C build-cov --print-errorlogs >/dev/null
gcovr -r . --filter 'autograd/' --filter 'nn/' --fail-under-line "$min" build-cov
