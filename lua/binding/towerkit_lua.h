/*
 * towerkit_lua.h - open towerkit inside a host's own LuaJIT state.
 *
 * A C program that already runs LuaJIT (a server, a game, a data tool) includes this
 * header, links libtowerkit and the binding objects, and makes `require "towerkit"`
 * work in its lua_State. Nothing is loaded until the script asks for it.
 *
 * A worked example (a host that runs one script with towerkit available):
 *
 *     #include <stdio.h>
 *     #include <lua.h>
 *     #include <lauxlib.h>
 *     #include <lualib.h>
 *     #include "towerkit_lua.h"
 *
 *     int main(void) {
 *         lua_State *L = luaL_newstate();
 *         if (!L) return 1;
 *         luaL_openlibs(L);                          // towerkit needs the package library
 *         if (towerkit_lua_open(L, NULL) != 0) {     // NULL: $TOWERKIT_ROOT or the build's repo
 *             fprintf(stderr, "%s\n", lua_tostring(L, -1));
 *             lua_close(L);
 *             return 1;
 *         }
 *         if (luaL_dostring(L, "local tk = require 'towerkit'\n"
 *                              "print(tk.tensor{{1, 2}, {3, 4}})") != 0) {
 *             fprintf(stderr, "%s\n", lua_tostring(L, -1));
 *             lua_close(L);
 *             return 1;
 *         }
 *         lua_close(L);
 *         return 0;
 *     }
 *
 * Build it by compiling the .c files of lua/binding (towerkit.core and host.c) into the
 * host and linking build/libtowerkit.a, LuaJIT, OpenBLAS, cJSON, libm and pthread:
 *
 *     cc -std=c11 host_main.c <repo>/lua/binding/[a-z]*.c -I<repo>/core/include \
 *        -I<repo>/lua/binding -DTK_ROOT_DIR='"<repo>"' $(pkg-config --cflags luajit) \
 *        <repo>/build/libtowerkit.a $(pkg-config --libs luajit) \
 *        -lopenblas -lcjson -lm -lpthread
 *
 * Conventions
 * - The state must be a LuaJIT (Lua 5.1 API) state with the standard libraries open, at
 *   least `package` (luaL_openlibs does it).
 * - One call per state is enough; calling again is harmless (the path is not prepended
 *   twice).
 */
#ifndef TOWERKIT_LUA_H
#define TOWERKIT_LUA_H

#ifdef __cplusplus
extern "C" {
#endif

#include <lua.h>

/* The loader of the C module `towerkit.core` (tensors, blocks, optimizers as Lua
 * userdata). Pushes the module table and returns 1, as any lua_CFunction loader.
 * Hosts do not usually call it: towerkit_lua_open registers it in
 * package.preload["towerkit.core"], and the Lua module `towerkit` requires it. A host
 * that does not want the Lua part may call it directly:
 *
 *     lua_pushcfunction(L, luaopen_towerkit_core);
 *     lua_call(L, 0, 1);                            // the module table is on the stack
 */
int luaopen_towerkit_core(lua_State *L);

/* Makes towerkit loadable in L:
 *   - package.preload["towerkit.core"] = luaopen_towerkit_core;
 *   - package.path = "<root>/lua/?.lua;<root>/lua/?/init.lua;" .. package.path, so that
 *     `require "towerkit"` finds <root>/lua/towerkit/init.lua.
 *
 *   L         a LuaJIT state whose `package` library is open (luaL_openlibs).
 *   root_dir  the towerkit source or install tree: the directory that holds `lua/`.
 *             A trailing '/' is allowed. NULL means: the environment variable
 *             TOWERKIT_ROOT if it is set and not empty, else the directory compiled in
 *             as TK_ROOT_DIR (the absolute path of the repository the build ran in).
 *
 * Returns 0 on success, with the stack as it was. Returns -1 on failure (no `package`
 * table, no root directory known, out of memory) with one error message string pushed
 * on the stack; the caller pops it. Never raises a Lua error and never exits.
 */
int towerkit_lua_open(lua_State *L, const char *root_dir);

#ifdef __cplusplus
}
#endif

#endif /* TOWERKIT_LUA_H */
