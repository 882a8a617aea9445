/*
 * host.c - towerkit_lua_open: makes `require "towerkit"` work in a host's lua_State.
 * See towerkit_lua.h.
 */
#include "towerkit_lua.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#ifdef TK_ROOT_DIR
static const char *const tk_compiled_root = TK_ROOT_DIR;
#else
static const char *const tk_compiled_root = NULL;
#endif

typedef struct open_args {
    const char *root; /* never NULL here */
    size_t root_len;  /* without trailing slashes */
} open_args;

/* Runs under lua_cpcall, so a memory error or a strange `package` table becomes a
 * status, not a longjmp through the host. */
static int open_protected(lua_State *L) {
    const open_args *a = (const open_args *)lua_touserdata(L, 1);
    lua_settop(L, 0);

    lua_getglobal(L, "package");
    if (!lua_istable(L, -1))
        return luaL_error(L, "%s",
                          "towerkit_lua_open: the package library is not open "
                          "(call luaL_openlibs before towerkit_lua_open)");

    /* package.preload["towerkit.core"] = luaopen_towerkit_core */
    lua_getfield(L, 1, "preload");
    if (!lua_istable(L, -1)) return luaL_error(L, "%s", "towerkit_lua_open: package.preload is not a table");
    lua_pushcfunction(L, luaopen_towerkit_core);
    lua_setfield(L, -2, "towerkit.core");
    lua_pop(L, 1);

    /* package.path = "<root>/lua/?.lua;<root>/lua/?/init.lua;" .. package.path */
    lua_pushlstring(L, a->root, a->root_len);
    const char *root = lua_tostring(L, -1);
    const char *prefix = lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", root, root);
    lua_getfield(L, 1, "path");
    const char *old = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
    if (strncmp(old, prefix, strlen(prefix)) != 0) {
        lua_pushfstring(L, "%s%s", prefix, old);
        lua_setfield(L, 1, "path");
    }
    return 0;
}

int towerkit_lua_open(lua_State *L, const char *root_dir) {
    if (!L) return -1;
    const char *root = root_dir;
    if (!root) {
        const char *env = getenv("TOWERKIT_ROOT");
        root = (env && env[0]) ? env : tk_compiled_root;
    }
    if (!root || !root[0]) {
        lua_pushstring(L, "towerkit_lua_open: no root directory: pass root_dir, set TOWERKIT_ROOT, "
                          "or build with -DTK_ROOT_DIR");
        return -1;
    }
    open_args a;
    a.root = root;
    a.root_len = strlen(root);
    while (a.root_len > 1 && root[a.root_len - 1] == '/') a.root_len--;
    if (a.root_len == 1 && root[0] == '/') a.root_len = 0; /* "/" gives "/lua/?.lua" */

    int top = lua_gettop(L);
    if (lua_cpcall(L, open_protected, &a) != 0) {
        /* lua_cpcall leaves exactly the error object on the stack */
        if (!lua_isstring(L, -1)) {
            lua_pop(L, 1);
            lua_pushstring(L, "towerkit_lua_open failed");
        }
        return -1;
    }
    lua_settop(L, top);
    return 0;
}
