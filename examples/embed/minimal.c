/*
 * minimal.c - the smallest host that embeds towerkit: create a Lua state, load a model
 * once in C, hand it to the state, and call a Lua function once per tick as a game loop
 * would.
 *
 *   build/examples/minimal CHECKPOINT_DIR [TICKS]
 *
 * CHECKPOINT_DIR is a model saved with model:save(dir) that also holds
 * dir/item_embeddings.safetensors (model:item_embeddings(items):save(...)). Each tick
 * the script recommends items for one player and prints them.
 */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>

#include "towerkit.h"
#include "towerkit_lua.h"

/* The game's script: on_tick(t) builds the player's features from its state and asks
 * the shared model for the top 3 items. Feature values are kept in range by wrapping
 * them with the model's own cardinalities. */
static const char *SCRIPT =
    "local tk = require 'towerkit'\n"
    "local info = tk.serving.info(model)\n"
    "function on_tick(t)\n"
    "  local player = {}\n"
    "  for _, f in ipairs(info.features) do\n"
    "    if f.kind == 'continuous' then player[f.name] = t / 10\n"
    "    elseif f.is_list then player[f.name] = { t % f.cardinality, (t * 7) % f.cardinality }\n"
    "    else player[f.name] = (t * 13) % f.cardinality end\n"
    "  end\n"
    "  local ids, scores = model:recommend(assert(tk.serving.query(info, player)), 3)\n"
    "  local top, best = ids:totable()[1], scores:totable()[1]\n"
    "  print(('tick %d: items %d %d %d (score %.3f)'):format(t, top[1], top[2], top[3], best[1]))\n"
    "  return top[1]\n"
    "end\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CHECKPOINT_DIR [TICKS]\n", argv[0]);
        return 2;
    }
    int ticks = argc > 2 ? atoi(argv[2]) : 5;

    tk_model *model = tk_model_load(argv[1], NULL); /* once, shared by every state */
    if (!model) {
        fprintf(stderr, "minimal: %s\n", tk_last_error());
        return 1;
    }
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (towerkit_lua_open(L, NULL) != 0 || towerkit_lua_push_model(L, model) != 0) {
        fprintf(stderr, "minimal: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_setglobal(L, "model");
    tk_model_release(model); /* the state holds its own reference now */

    if (luaL_dostring(L, SCRIPT) != 0) {
        fprintf(stderr, "minimal: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 1;
    }
    int status = 0;
    for (int t = 1; t <= ticks; t++) { /* the game loop */
        lua_getglobal(L, "on_tick");
        lua_pushinteger(L, t);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            fprintf(stderr, "minimal: tick %d: %s\n", t, lua_tostring(L, -1));
            status = 1;
            break;
        }
        lua_pop(L, 1); /* the top item; a game would use it */
    }
    lua_close(L); /* releases the model */
    return status;
}
