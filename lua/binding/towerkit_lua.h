/*
 * towerkit_lua.h - open towerkit inside a host's own LuaJIT state.
 *
 * A C program that already runs LuaJIT (a server, a game, a data tool) includes this
 * header, links libtowerkit_lua (the binding) and libtowerkit (the core), and makes
 * `require "towerkit"` work in its lua_State. Nothing is loaded until the script asks
 * for it.
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
 *         if (towerkit_lua_open(L, NULL) != 0) {     // NULL: $TOWERKIT_ROOT or the installed modules
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
 * Build it against an installed towerkit (make install PREFIX=...; see the README):
 *
 *     cc host_main.c $(pkg-config --cflags --libs towerkit)
 *
 * (PKG_CONFIG_PATH=<prefix>/lib/pkgconfig for a prefix pkg-config does not search, and
 * LD_LIBRARY_PATH=<prefix>/lib to run it from there.) In the build tree, the Makefile's
 * build/examples/minimal rule links the binding objects and build/libtowerkit.a instead.
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

#include <stddef.h>
#include <stdint.h>

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
 *             TOWERKIT_ROOT if it is set and not empty, else the tree found from where
 *             this code was loaded: <prefix>/share/towerkit next to the installed
 *             <prefix>/lib/libtowerkit_lua.so (dladdr) or next to the program's
 *             <prefix>/bin (/proc/self/exe), else the source tree above the build
 *             directory the library or program is in. No path is compiled in.
 *
 * Returns 0 on success, with the stack as it was. Returns -1 on failure (no `package`
 * table, no root directory found, out of memory) with one error message string pushed
 * on the stack; the caller pops it. Never raises a Lua error and never exits.
 */
int towerkit_lua_open(lua_State *L, const char *root_dir);

/* ------------------------------------------------------------------------------------ */
/* Sharing one model between the host and any number of states                          */
/* ------------------------------------------------------------------------------------ */

/* The C host loads a checkpoint once (tk_model_load, core/include/towerkit.h) and hands
 * the same model to every state; each state's handle holds its own reference and its
 * own tk_ctx, so states in different threads query one copy of the weights at once.
 * Either side may release first: the host's tk_model_release and the handle's __gc (or
 * model:release()) each drop one reference.
 *
 *     tk_model *model = tk_model_load("model/", NULL);   // + model/item_embeddings.safetensors
 *     lua_State *L = luaL_newstate();
 *     luaL_openlibs(L);
 *     towerkit_lua_open(L, NULL);
 *     if (towerkit_lua_push_model(L, model) != 0) { ... lua_tostring(L, -1) ... }
 *     lua_setglobal(L, "model");
 *     tk_model_release(model);                 // the state keeps it alive
 *     luaL_dostring(L, "local tk = require 'towerkit'\n"
 *                      "local ids, scores = model:recommend({user_id = tk.tensor({7}, 'int64')}, 10)");
 *
 * In Lua the handle is a towerkit.Model (see lua/towerkit/serving.lua and
 * docs/embedding.md): model:recommend(batch [, k = 10]) -> ids int64 [B, k], scores
 * float32 [B, k] (raises on a bad query); model:try_recommend(batch, k) returns nil and
 * the message instead; model:encode(batch), model:query_block(), model:item_block(),
 * model:features(), model:schema(), model:num_items(), model:dim(), model:release().
 * A batch is a table of tensors named as the query tower's features ("f" for ids or
 * numbers, "f__values" and "f__offsets" for lists). */
struct tk_model;
struct tk_model_slot;

/* Pushes a towerkit.Model handle on m (retained) and returns 0; loads towerkit.core in
 * L first if it is not loaded (call towerkit_lua_open before, so the Lua part can be
 * required too). Returns -1 with a message pushed on failure. */
int towerkit_lua_push_model(lua_State *L, struct tk_model *m);

/* Pushes a towerkit.ModelSlot handle on s (retained): slot:recommend(batch, k) runs on
 * the model current at the call (and returns the slot version it used as a third
 * result), slot:reload(dir) loads and swaps in a checkpoint for every state and thread
 * sharing the slot, slot:current() returns the current towerkit.Model, slot:version(). */
int towerkit_lua_push_model_slot(lua_State *L, struct tk_model_slot *s);

/* The model of the towerkit.Model at idx (borrowed), or NULL if it is not one. */
struct tk_model *towerkit_lua_to_model(lua_State *L, int idx);

/* ------------------------------------------------------------------------------------ */
/* Reading the binding's arguments in a host's own C functions                           */
/* ------------------------------------------------------------------------------------ */

/* A host function called from Lua (as the example server's SERVER.sharded_query) reads
 * its arguments as the binding's own functions do. */
struct tk_tensor;

/* The tensor of the towerkit.Tensor at idx (borrowed: valid while that value is, e.g.
 * while it is on the stack), or NULL if the value is not a tensor. Raises a Lua error,
 * as the tensor methods do, when the tensor was freed or its context was reset. */
struct tk_tensor *towerkit_lua_to_tensor(lua_State *L, int idx);

/* The lists of item ids to exclude per query row, as model:recommend(batch, k, exclude)
 * takes them: the value at idx is nil, or an array of at most `rows` arrays of integer
 * item ids (magnitude at most 2^53), list r for query row r (rows past the last list
 * exclude nothing; rows < 0: one row per list). Returns 0 with *offs (rows + 1 entries)
 * and *items (offs[rows] ids, row r's at offs[r] .. offs[r + 1] - 1) from malloc, for
 * the caller to free; nil gives 0 with both NULL. A bad value (not an array, more lists
 * than rows, a list that is not an array, an entry that is not an integer id) or no
 * memory returns -1 with the message in msg (msglen bytes) and nothing allocated.
 * Never raises. */
int towerkit_lua_to_exclusions(lua_State *L, int idx, int64_t rows, int64_t **offs, int64_t **items, char *msg,
                               size_t msglen);

#ifdef __cplusplus
}
#endif

#endif /* TOWERKIT_LUA_H */
