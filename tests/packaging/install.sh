#!/usr/bin/env bash
# make install into a temporary prefix, then use only what it installed: the launcher
# on a tiny script, examples/embed/minimal.c and towerkit_lua.h's worked example built
# with `cc file.c $(pkg-config --cflags --libs towerkit)` and run from outside the
# repository, a staged install (DESTDIR), and a moved prefix (nothing names the build).
#   tests/packaging/install.sh BUILD        (scripts/run-tests.sh runs it)
set -u
build=${1:-build}
cd "$(dirname "$0")/../.."
. tests/packaging/harness.sh
repo=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -f "$check_log"' EXIT
prefix=$tmp/prefix
unset TOWERKIT_ROOT
export TOWERKIT_QUIET_BLAS=1

check "make install PREFIX=<tmp>/prefix" make --no-print-directory BUILD="$build" install PREFIX="$prefix"

installed() {
  local f
  for f in bin/towerkit lib/libtowerkit.so lib/libtowerkit_lua.so lib/pkgconfig/towerkit.pc \
    lib/lua/5.1/towerkit/core.so include/towerkit/towerkit.h include/towerkit/towerkit_ext.h \
    include/towerkit/towerkit_dist.h include/towerkit/towerkit_lua.h share/towerkit/lua/towerkit/init.lua; do
    [ -f "$1/$f" ] || { echo "missing $1/$f"; return 1; }
  done
  # every Lua file of the sources, whatever the modules' layout
  (cd lua && find towerkit -name '*.lua') | while read -r f; do
    [ -f "$1/share/towerkit/lua/$f" ] || { echo "missing $1/share/towerkit/lua/$f"; exit 1; }
  done
}
check "the headers, libraries, pkg-config file, launcher and every Lua module are installed" installed "$prefix"

pc() { PKG_CONFIG_PATH="$1/lib/pkgconfig" pkg-config "${@:2}" towerkit; }
pc_version() { [ "$(pc "$prefix" --modversion)" = "$(tk_version)" ]; }
check "pkg-config --modversion towerkit is TK_VERSION" pc_version

# The installed launcher, from outside the repository: its modules come from the prefix.
launcher_modules() {
  local out
  out=$(cd / && "$prefix/bin/towerkit" -e 'print(package.searchpath("towerkit", package.path))') || return 1
  echo "$out"
  [ "$out" = "$prefix/share/towerkit/lua/towerkit/init.lua" ]
}
check "the installed launcher finds its modules in <prefix>/share/towerkit/lua" launcher_modules
check "the installed launcher runs a script (trains and saves a tiny model)" \
  sh -c 'cd / && "$0/bin/towerkit" "$1/tests/spec/helpers/tiny_model.lua" "$2/model" 1' "$prefix" "$repo" "$tmp"

# A host built against the install alone (the compile line towerkit_lua.h gives).
build_host() { # SRC OUT PREFIX
  # shellcheck disable=SC2046
  cc "$1" $(pc "$3" --cflags --libs) -o "$2"
}
check "examples/embed/minimal.c builds with pkg-config --cflags --libs towerkit" \
  build_host examples/embed/minimal.c "$tmp/minimal" "$prefix"
run_minimal() { # PREFIX
  local out
  out=$(cd / && LD_LIBRARY_PATH="$1/lib" "$tmp/minimal" "$tmp/model" 3) || { echo "$out"; return 1; }
  echo "$out"
  [ "$(echo "$out" | grep -cE '^tick [0-9]+: items [0-9]+ [0-9]+ [0-9]+ \(score [-0-9.]+\)$')" -eq 3 ]
}
check "the minimal host runs 3 ticks against the model, from outside the repository" run_minimal "$prefix"

# towerkit_lua.h's worked example, as the header prints it, with its build line.
header_example() {
  sed -n '/A worked example/,/^ \*     }$/p' lua/binding/towerkit_lua.h | sed -n '/^ \*     /s/^ \*     //p' >"$tmp/host_main.c"
  local line
  line=$(sed -n 's/^ \*     \(cc host_main\.c .*\)$/\1/p' lua/binding/towerkit_lua.h)
  [ -n "$line" ] || { echo "no build line in towerkit_lua.h"; return 1; }
  (cd "$tmp" && PKG_CONFIG_PATH="$prefix/lib/pkgconfig" sh -c "$line -o host_main") || return 1
  local out
  out=$(cd / && LD_LIBRARY_PATH="$prefix/lib" "$tmp/host_main") || { echo "$out"; return 1; }
  echo "$out"
  echo "$out" | grep -q '^tensor float32 \[2, 2\]$'
}
check "towerkit_lua.h's worked example builds with its build line and runs" header_example

# DESTDIR: the files land under it, named for PREFIX.
staged() {
  make --no-print-directory BUILD="$build" install DESTDIR="$tmp/stage" PREFIX=/opt/towerkit || return 1
  installed "$tmp/stage/opt/towerkit" || return 1
  grep -qx 'prefix=/opt/towerkit' "$tmp/stage/opt/towerkit/lib/pkgconfig/towerkit.pc"
}
check "make install DESTDIR=... PREFIX=/opt/towerkit stages the same files" staged

# A moved prefix still works: the modules are found from where the library and the
# program are, not from a path written at build time.
moved() {
  mv "$prefix" "$tmp/moved" || return 1
  sed -i "s#^prefix=.*#prefix=$tmp/moved#; s#^libdir=.*#libdir=$tmp/moved/lib#; s#^includedir=.*#includedir=$tmp/moved/include#" \
    "$tmp/moved/lib/pkgconfig/towerkit.pc"
  local out
  out=$(cd / && "$tmp/moved/bin/towerkit" -e 'print(package.searchpath("towerkit", package.path))') || return 1
  [ "$out" = "$tmp/moved/share/towerkit/lua/towerkit/init.lua" ] || { echo "launcher: $out"; return 1; }
  run_minimal "$tmp/moved"
}
check "a moved prefix still finds its modules (launcher and libtowerkit_lua.so)" moved

summary
