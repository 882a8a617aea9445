#!/usr/bin/env bash
# Runs the C unit tests of the build in $1 once per OpenBLAS sgemm kernel named after it
# (OPENBLAS_CORETYPE: Prescott, Haswell, SkylakeX, Zen...), the kernels that CI machines
# pick on their own. Each kernel's closing line is prefixed with its name; the run ends
# with one line "N passed, N failed" over all of them. A kernel this CPU cannot run is
# skipped (said so); one that OpenBLAS does not take counts as a failure.
set -u
build=${1:-build}
shift || true
kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(Prescott Haswell SkylakeX Zen)
cd "$(dirname "$0")/.."
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The instruction sets a kernel needs, as /proc/cpuinfo names them.
needs() {
  case "${1,,}" in
    prescott) echo "sse3" ;;
    haswell | zen) echo "avx2 fma" ;;
    skylakex | cooperlake) echo "avx512f avx512bw avx512vl avx512dq" ;;
    sapphirerapids) echo "avx512f avx512bw avx512vl avx512dq avx512_bf16" ;;
    *) echo "" ;;
  esac
}
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
flags=${flags/ pni / pni sse3 } # SSE3 is "pni" in /proc/cpuinfo

# The kernel OpenBLAS runs under the current environment (through LuaJIT's FFI).
corename() {
  luajit -e 'local ffi = require "ffi"
    ffi.cdef "char *openblas_get_corename(void);"
    io.write(ffi.string(ffi.load("openblas").openblas_get_corename()))' 2>/dev/null
}

for k in "${kernels[@]}"; do
  missing=""
  for f in $(needs "$k"); do [[ $flags == *" $f "* ]] || missing="$missing $f"; done
  if [ -n "$missing" ]; then
    echo "== OPENBLAS_CORETYPE=$k: skipped, this CPU lacks$missing"
    continue
  fi
  got=$(OPENBLAS_CORETYPE=$k corename)
  echo "== OPENBLAS_CORETYPE=$k (OpenBLAS runs ${got:-?})"
  if [ "${got,,}" != "${k,,}" ]; then
    echo "FAILED: OpenBLAS does not take OPENBLAS_CORETYPE=$k (it runs ${got:-?})"
    failed=$((failed + 1))
    continue
  fi
  OPENBLAS_CORETYPE=$k scripts/run-tests.sh "$build" --c >"$log" 2>&1
  rc=$?
  sed -E "s/^([0-9]+ passed, [0-9]+ failed)$/$k: \1/" "$log"
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
  p=0 f=0
  [ -n "$line" ] && read -r p _ f _ <<<"$line"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAILED: the run under $k exited with status $rc"
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
