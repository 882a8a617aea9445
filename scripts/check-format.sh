#!/usr/bin/env bash
# Checks that every C file git tracks is formatted as .clang-format says (make format
# applies it). Prints one ok / not ok line per file that differs, then one closing line
# "N passed, N failed" (one test: the tree), and exits non-zero when a file differs.
set -u
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r f; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f (make format, or clang-format -i $f)"
    bad=$((bad + 1))
  fi
done < <(git ls-files '*.c' '*.h')
if [ "$bad" -eq 0 ]; then
  echo "ok - every C file is formatted (.clang-format)"
  echo "1 passed, 0 failed"
else
  echo "not ok - $bad C files are not formatted"
  echo "0 passed, 1 failed"
  exit 1
fi
