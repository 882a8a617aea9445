#!/usr/bin/env bash
# Runs the C unit tests and the busted specs against the build in $1 and ends with one
# line "N passed, N failed". Exits non-zero on any failure, including a crashed runner.
#   scripts/run-tests.sh BUILD               every C test in BUILD/tests, the specs, then
#                                            the packaging tests (tests/packaging: make
#                                            install, the rockspec; not under TK_ASAN)
#   scripts/run-tests.sh BUILD --c           every C test, no specs (scripts/run-kernels.sh)
#   scripts/run-tests.sh BUILD test_x ...    those C tests only (make test-tsan)
# TK_ASAN=1 / TK_TSAN=1 set the sanitizers' options for builds made with them.
set -u
build=${1:-build}
shift || true
cd "$(dirname "$0")/.."
specs=1
tests=()
if [ "${1:-}" = --c ]; then
  specs=0
  tests=("$build"/tests/test_*)
elif [ $# -gt 0 ]; then
  specs=0
  for t in "$@"; do tests+=("$build/tests/$t"); done
else
  tests=("$build"/tests/test_*)
fi
# mpirun refuses to run as root unless told (containers, CI): the MPI specs below and the
# fault specs of tests/spec/distributed_spec.lua start it. Only this runner says so.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

if [ -n "${TK_ASAN:-}" ]; then
  # allocator_may_return_null: an impossible allocation returns NULL, as malloc does,
  # and the tests of that path (a config asking for 2^40 rows) see the error it becomes
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:allocator_may_return_null=1:suppressions=$PWD/tests/asan.supp"
  export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
if [ -n "${TK_TSAN:-}" ]; then
  # OpenBLAS's own threads are not instrumented: the tests start single-threaded BLAS
  # and split work over their own threads (tk_set_num_threads where they test it)
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
  export OPENBLAS_NUM_THREADS=1
fi

count() { # adds the closing counts of a runner's output; a crash counts as a failure
  local name=$1 rc=$2 p f
  p=$(grep -cE '^ok ' "$log")
  f=$(grep -cE '^not ok ' "$log")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAILED: $name exited with status $rc"
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
}

for t in "${tests[@]}"; do
  if [ ! -x "$t" ]; then
    if [ $specs -eq 0 ]; then echo "FAILED: $t is not built"; failed=$((failed + 1)); fi
    continue
  fi
  echo "== $t"
  "$t" >"$log" 2>&1
  rc=$?
  grep -vE '^ok ' "$log" | grep -vE '^[0-9]+ passed, [0-9]+ failed$'
  count "$t" "$rc"
done

if [ $specs -eq 1 ]; then
  echo "== busted (tests/spec)"
  preload=""
  if [ -n "${TK_ASAN:-}" ]; then
    preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
  fi
  TOWERKIT_BUILD="$build" LD_PRELOAD="$preload" luajit /usr/bin/busted --cpath="$build/lua/?.so" -o TAP >"$log" 2>&1
  rc=$?
  grep -vE '^ok ' "$log"
  count busted "$rc"
fi

# The MPI specs (tests/mpi) run as one busted per rank under mpirun -np 2, each rank's
# TAP in its own file; both are counted. Skipped (and said so) when the build has no MPI
# (MPI=0, or mpi.h was missing) and under the sanitizers (Open MPI's own allocations).
if [ $specs -eq 1 ] && [ -d tests/mpi ]; then
  echo "== busted under mpirun --oversubscribe -np 2 (tests/mpi)"
  has_mpi=$(luajit -e "package.cpath='$build/lua/?.so;'..package.cpath
    io.write(require('towerkit.core').dist_available() and 'yes' or 'no')" 2>/dev/null)
  if [ -n "${TK_ASAN:-}${TK_TSAN:-}" ]; then
    echo "skipped: the MPI specs do not run under the sanitizers"
  elif [ "$has_mpi" != yes ] || ! command -v mpirun >/dev/null; then
    echo "skipped: $build has no MPI (make deps installs Open MPI; rebuild without MPI=0)"
  else
    ranklog=$(mktemp -d)
    TOWERKIT_BUILD="$build" timeout 900 mpirun --oversubscribe -np 2 sh -c \
      'exec luajit /usr/bin/busted --cpath="$1/lua/?.so" -o TAP tests/mpi >"$2/rank.$OMPI_COMM_WORLD_RANK" 2>&1' \
      sh "$build" "$ranklog" >"$log" 2>&1
    rc=$?
    for r in 0 1; do
      grep -vE '^ok ' "$ranklog/rank.$r" 2>/dev/null | sed "s/^/[rank $r] /"
    done
    grep -vE '^ok ' "$log"
    cat "$ranklog"/rank.* >"$log" 2>/dev/null
    count "mpirun (tests/mpi)" "$rc"
    rm -rf "$ranklog"
  fi
fi

# The installed library and the LuaRocks package (tests/packaging), not under ASan.
if [ $specs -eq 1 ] && [ -z "${TK_ASAN:-}" ]; then
  for t in tests/packaging/install.sh tests/packaging/rock.sh; do
    echo "== $t"
    "$t" "$build" >"$log" 2>&1
    rc=$?
    grep -vE '^ok ' "$log" | grep -vE '^[0-9]+ passed, [0-9]+ failed$'
    count "$t" "$rc"
  done
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
