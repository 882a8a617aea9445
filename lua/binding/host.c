/*
 * host.c - towerkit_lua_open: makes `require "towerkit"` work in a host's lua_State.
 * See towerkit_lua.h.
 */
#include "towerkit_lua.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

/* Does root hold the Lua modules (root/lua/towerkit/init.lua)? */
static int has_modules(const char *root) {
    char path[PATH_MAX];
    struct stat st;
    int n = snprintf(path, sizeof path, "%s/lua/towerkit/init.lua", root);
    return n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The root (the directory that holds lua/towerkit) found next to a file: the installed
 * layout <prefix>/{lib,bin}/file -> <prefix>/share/towerkit (also from a multiarch
 * <prefix>/lib/<triplet>), else a source tree above a build directory
 * (<repo>/build/towerkit, <repo>/build/tests/test_x). Writes it to out and returns 1. */
static int root_near(const char *file, char *out, size_t cap) {
    char real[PATH_MAX];
    if (!file || !file[0] || !realpath(file, real)) return 0;
    char *slash = strrchr(real, '/');
    if (!slash) return 0;
    *slash = '\0'; /* the file's directory */
    static const char *const installed[] = { "/../share/towerkit", "/../../share/towerkit" };
    for (size_t i = 0; i < sizeof installed / sizeof installed[0]; i++) {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof path, "%s%s", real, installed[i]);
        if (n > 0 && (size_t)n < sizeof path && has_modules(path) && cap >= PATH_MAX && realpath(path, out)) return 1;
    }
    for (int up = 0; up < 4 && real[0]; up++) { /* the build directory's source tree */
        if (has_modules(real)) {
            int n = snprintf(out, cap, "%s", real);
            return n > 0 && (size_t)n < cap;
        }
        slash = strrchr(real, '/');
        if (!slash) break;
        *slash = '\0';
    }
    return 0;
}

/* The root of the towerkit this code was loaded from: next to the shared library that
 * holds it (dladdr: libtowerkit_lua.so), else next to the executable (/proc/self/exe:
 * the launcher, or a host linked with the objects). No path is compiled in. */
static const char *default_root(char *out, size_t cap) {
    Dl_info info;
    if (dladdr((void *)towerkit_lua_open, &info) && root_near(info.dli_fname, out, cap)) return out;
    if (root_near("/proc/self/exe", out, cap)) return out;
    return NULL;
}

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
    char found[PATH_MAX];
    const char *root = root_dir;
    if (!root) {
        const char *env = getenv("TOWERKIT_ROOT");
        root = (env && env[0]) ? env : default_root(found, sizeof found);
    }
    if (!root || !root[0]) {
        lua_pushstring(L, "towerkit_lua_open: no root directory: pass root_dir or set TOWERKIT_ROOT (no "
                          "share/towerkit/lua/towerkit next to the library or the program, and no source tree "
                          "above it)");
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
