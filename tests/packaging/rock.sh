#!/usr/bin/env bash
# The rockspec: its version is TK_VERSION, `luarocks make` installs towerkit into a
# temporary tree with the system's luarocks (no network: build.type "make", nothing
# fetched), and LuaJIT loads it from that tree's paths alone.
#   tests/packaging/rock.sh BUILD        (scripts/run-tests.sh runs it)
set -u
build=${1:-build}
cd "$(dirname "$0")/../.."
. tests/packaging/harness.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -f "$check_log"' EXIT
unset TOWERKIT_ROOT
export TOWERKIT_QUIET_BLAS=1
rockspec=towerkit-$(tk_version)-1.rockspec

spec_version() {
  [ -f "$rockspec" ] || { echo "no $rockspec (TK_VERSION is $(tk_version)): rename the rockspec"; ls ./*.rockspec; return 1; }
  grep -qx "version = \"$(tk_version)-1\"" "$rockspec"
}
check "the rockspec is $rockspec, version TK_VERSION-1" spec_version

# BUILD reaches `make rock` through the environment (BUILD ?= build): the objects the
# suite already built are reused. HOME in the temporary directory: luarocks writes
# nothing of the user's.
rock_make() {
  HOME=$tmp BUILD=$build luarocks --lua-version=5.1 --tree="$tmp/tree" make "$rockspec" \
    LUA_INCDIR=/usr/include/luajit-2.1
}
check "luarocks --lua-version=5.1 --tree=<tmp> make $rockspec" rock_make

rock_require() {
  local out
  out=$(cd / && eval "$(HOME=$tmp luarocks --lua-version=5.1 --tree="$tmp/tree" path)" && luajit -e '
    local tk = require("towerkit")
    print(tk.VERSION)
    print(package.searchpath("towerkit", package.path))
    print(package.searchpath("towerkit.core", package.cpath))
    print(tk.tensor{{1, 2}}:matmul(tk.tensor{{3}, {4}}):totable()[1][1])') || { echo "$out"; return 1; }
  echo "$out"
  [ "$out" = "$(tk_version)
$tmp/tree/share/lua/5.1/towerkit/init.lua
$tmp/tree/lib/lua/5.1/towerkit/core.so
11" ]
}
check "luajit -e 'require(\"towerkit\").VERSION' with the tree's LUA_PATH and LUA_CPATH" rock_require

summary
