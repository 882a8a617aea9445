-- towerkit for LuaRocks (issue 14): the C core and the binding built against the
-- system's LuaJIT, OpenBLAS and cJSON (pkg-config), installed as the modules `towerkit`
-- (lua/towerkit/**) and `towerkit.core` (core.so) of a LuaRocks tree:
--   luarocks --lua-version=5.1 make towerkit-0.1.0-1.rockspec LUA_INCDIR=/usr/include/luajit-2.1
-- The version is TK_VERSION (core/include/towerkit.h); tests/packaging/rock.sh checks it.
rockspec_format = "3.0"
package = "towerkit"
version = "0.1.0-1"
-- Built from a checkout with `luarocks make` (the repository has no public address to
-- fetch from yet; `luarocks build`/`install` would need one here).
source = {
  url = "file://.",
}
description = {
  summary = "Two-tower retrieval models: a C core with a LuaJIT API",
  detailed = [[
The block API of NVIDIA Merlin Models (TwoTowerBlock, schemas with tags, in-batch
softmax training with logQ correction, exact top-k, safetensors checkpoints) as LuaJIT
modules on a C11 core using OpenBLAS.]],
}
dependencies = {
  "lua == 5.1", -- LuaJIT (the binding uses the FFI and the Lua 5.1 API)
}
external_dependencies = {
  OPENBLAS = { library = "openblas" },
  CJSON = { header = "cjson/cJSON.h", library = "cjson" },
}
build = {
  type = "make",
  -- `make rock` builds towerkit.core (the binding and the core in one module);
  -- `make rock-install` copies it and every file of lua/towerkit into the tree.
  build_target = "rock",
  build_variables = {
    LUA_INCDIR = "$(LUA_INCDIR)",
  },
  install_target = "rock-install",
  install_variables = {
    LUADIR = "$(LUADIR)",
    CMODDIR = "$(LIBDIR)",
  },
}
