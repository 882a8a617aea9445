/* fuzz_request.c - the HTTP server's request parser: examples/server/handler.lua (the
 * body's JSON through tk.json.decode in lua/binding/json.c, then the checks of
 * features, k, users and exclude, then the query) on any POST /recommend body, against
 * a tiny model, in one Lua state as a server worker runs it. A Lua error is an answer
 * (a 500), not a finding; a crash, a sanitizer report or a leak is. The HTTP layer is
 * libmicrohttpd's, not fuzzed here. Seeds: corpus/request. */
#include "fuzz_model.h"

static lua_State *L;
static int handler_ref;

static void call_handler(const uint8_t *data, size_t size) {
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, handler_ref);
    lua_pushliteral(L, "POST");
    lua_pushliteral(L, "/recommend");
    lua_pushlstring(L, (const char *)data, size);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "fuzz");
    lua_setfield(L, -2, "id");
    (void)lua_pcall(L, 4, 2, 0);
    lua_settop(L, top);
    /* everything the request made is garbage now: LeakSanitizer cannot see the LuaJIT
     * heap, so what a userdata still held would look leaked */
    lua_gc(L, LUA_GCCOLLECT, 0);
}

/* At exit (before LeakSanitizer's check): frees the model and whatever the state holds. */
static void close_state(void) { lua_close(L); }

/* The state, the model and the handler, before the first input (their allocations are
 * not an input's); one valid request fills the handler's per-model cache. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *dir = fuzz_model_dir();
    L = fuzz_lua_state();
    lua_pushstring(L, dir);
    lua_setglobal(L, "CHECKPOINT");
    fuzz_lua_run(L, "local tk = require 'towerkit'\n"
                    "SLOT = tk.ModelSlot(tk.Model.load(CHECKPOINT))\n"
                    "WORKER = 1\n"
                    "SERVER = { max_results = 20000, model_version = function(v) return tostring(v) end }\n"
                    "HANDLER = dofile('" TK_ROOT_DIR "/examples/server/handler.lua')");
    lua_getglobal(L, "HANDLER");
    handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    atexit(close_state);
    static const char warm[] = "{\"features\": {\"user_id\": 4, \"user_recent_categories\": [1, 2], "
                               "\"user_activity\": 0.5}, \"k\": 5}";
    call_handler((const uint8_t *)warm, sizeof warm - 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    call_handler(data, size);
    return 0;
}
