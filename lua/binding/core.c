/* luaopen_towerkit_core: the module table of the binding. */
#include "binding.h"

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

int luaopen_towerkit_core(lua_State *L) {
    lua_newtable(L);
    tkl_open_tensor(L);
    tkl_open_context(L);
    tkl_open_block(L);
    tkl_open_optim(L);
    tkl_open_json(L);
    lua_pushcfunction(L, l_set_num_threads);
    lua_setfield(L, -2, "set_num_threads");
    lua_pushcfunction(L, l_get_num_threads);
    lua_setfield(L, -2, "get_num_threads");
    lua_pushliteral(L, TK_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
