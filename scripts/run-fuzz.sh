#!/usr/bin/env bash
# Runs each libFuzzer harness of tests/fuzz for a set time (make fuzz):
#   scripts/run-fuzz.sh FUZZ_BUILD SECONDS name...
# Each starts from its committed seeds (tests/fuzz/corpus/<name>, read only) and the
# inputs earlier runs found (FUZZ_BUILD/corpus/<name>). One line per harness, "ok" or
# "not ok" with the crashing input's path and the report's first lines; ends with
# "N passed, N failed" and fails if any harness found something.
set -u
build=$1
seconds=$2
shift 2
cd "$(dirname "$0")/.."
export TOWERKIT_QUIET_BLAS=1 OPENBLAS_NUM_THREADS=1
# An input may validly ask for more memory than there is (a config.json with a 10^9-unit
# layer): allocations over 1 GiB return NULL, as malloc may, and the reader must turn
# that into an error; libFuzzer's own limit (2 GiB) is above it, so it never sees them.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=1:max_allocation_size_mb=1024:suppressions=$PWD/tests/asan.supp"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
passed=0
failed=0
mkdir -p "$build/artifacts"
for name in "$@"; do
  mkdir -p "$build/corpus/$name"
  log=$build/fuzz-$name.log
  echo "== fuzz_$name (${seconds} s)"
  "$build/fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$name-" \
    "$build/corpus/$name" "tests/fuzz/corpus/$name" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok - fuzz_$name: ${runs:-?} inputs, $(ls "$build/corpus/$name" | wc -l) in its corpus"
  else
    failed=$((failed + 1))
    echo "not ok - fuzz_$name (status $rc; log $log)"
    grep -E 'ERROR|SUMMARY|Test unit written|#[0-9]+ 0x' "$log" | head -n 20 | sed 's/^/    /'
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
