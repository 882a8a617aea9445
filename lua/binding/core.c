/* luaopen_towerkit_core: the module table of the binding. */
#include "binding.h"

#include <time.h>
#include <unistd.h>

static int l_set_num_threads(lua_State *L) {
    int n = (int)luaL_checkinteger(L, 1);
    if (n < 1) return tkl_error(L, "bad argument #1 to 'set_num_threads' (expected a positive count, got %d)", n);
    tk_set_num_threads(n);
    return 0;
}

static int l_get_num_threads(lua_State *L) {
    lua_pushinteger(L, tk_get_num_threads());
    return 1;
}

/* isatty([fd = 1]) */
static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

/* clock() -> monotonic seconds */
static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

int luaopen_towerkit_core(lua_State *L) {
    lua_newtable(L);
    tkl_open_tensor(L);
    tkl_open_context(L);
    tkl_open_block(L);
    tkl_open_optim(L);
    tkl_open_json(L);
    tkl_open_io(L);
    tkl_open_retrieval(L);
    tkl_open_serving(L);
    lua_pushcfunction(L, l_set_num_threads);
    lua_setfield(L, -2, "set_num_threads");
    lua_pushcfunction(L, l_get_num_threads);
    lua_setfield(L, -2, "get_num_threads");
    lua_pushcfunction(L, l_isatty);
    lua_setfield(L, -2, "isatty");
    lua_pushcfunction(L, l_clock);
    lua_setfield(L, -2, "clock");
    lua_pushliteral(L, TK_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
