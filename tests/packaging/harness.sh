# Sourced by the packaging tests: one line per check ("ok - name" / "not ok - name",
# the command's output indented below a failure), then summary's "N passed, N failed",
# as tests/c/tk_test.h prints them for scripts/run-tests.sh.
passed=0
failed=0
check_log=$(mktemp)

# check NAME COMMAND...: runs the command; a non-zero status fails the check.
check() {
  local name=$1
  shift
  if "$@" >"$check_log" 2>&1; then
    passed=$((passed + 1))
    echo "ok - $name"
  else
    failed=$((failed + 1))
    echo "not ok - $name"
    sed 's/^/    /' "$check_log" | tail -n 30
  fi
}

summary() {
  rm -f "$check_log"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# The version of the sources (TK_VERSION in towerkit.h).
tk_version() { sed -n 's/^#define TK_VERSION "\(.*\)"/\1/p' core/include/towerkit.h; }
