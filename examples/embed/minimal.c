/* minimal.c - the smallest host: load a model once in C, hand it to a Lua state, call the
 * script's on_tick(t) once per frame. Usage: minimal CHECKPOINT_DIR [TICKS] (a model:save
 * directory with item_embeddings.safetensors). Build against an installed towerkit:
 *     cc minimal.c $(pkg-config --cflags --libs towerkit) -o minimal */
#include <stdio.h>
#include <stdlib.h>
#include <lauxlib.h>
#include <lualib.h>
#include "towerkit.h"
#include "towerkit_lua.h"

static const char *SCRIPT = /* the player's features from the tick, kept in range */
    "local tk = require 'towerkit'\n"
    "local info = tk.serving.info(model)\n"
    "function on_tick(t)\n"
    "  local p = {}\n"
    "  for _, f in ipairs(info.features) do local c = f.cardinality\n"
    "    p[f.name] = f.kind == 'continuous' and t / 10 or f.is_list and { t % c, t * 7 % c } or t * 13 % c end\n"
    "  local ids, scores = model:recommend(assert(tk.serving.query(info, p)), 3)\n"
    "  local top, best = ids:totable()[1], scores:totable()[1][1]\n"
    "  print(('tick %d: items %d %d %d (score %.3f)'):format(t, top[1], top[2], top[3], best)) end\n";

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s CHECKPOINT_DIR [TICKS]\n", argv[0]), 2;
    tk_model *model = tk_model_load(argv[1], NULL); /* once, shared by every state */
    if (!model) return fprintf(stderr, "minimal: %s\n", tk_last_error()), 1;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L); /* towerkit needs the package library */
    int status = towerkit_lua_open(L, NULL) != 0 || towerkit_lua_push_model(L, model) != 0;
    tk_model_release(model); /* the state holds its own reference */
    if (!status) lua_setglobal(L, "model"), status = luaL_dostring(L, SCRIPT) != 0;
    for (int t = 1; !status && t <= (argc > 2 ? atoi(argv[2]) : 5); t++) { /* the game loop */
        lua_getglobal(L, "on_tick");
        lua_pushinteger(L, t);
        status = lua_pcall(L, 1, 0, 0) != 0;
    }
    if (status) fprintf(stderr, "minimal: %s\n", lua_tostring(L, -1));
    lua_close(L); /* releases the model */
    return status;
}
