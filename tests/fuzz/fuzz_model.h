/* fuzz_model.h - a tiny trained checkpoint for the harnesses that need a model
 * (fuzz_request, fuzz_schema): tests/spec/helpers/tiny_model.lua run once, in a Lua
 * state of the process, into <fuzz_dir>/model. The harnesses run from the repository
 * (make fuzz), whose root is TK_ROOT_DIR (the Makefile's CFLAGS). */
#ifndef TK_FUZZ_MODEL_H
#define TK_FUZZ_MODEL_H

#include <lauxlib.h>
#include <lualib.h>

#include "fuzz_common.h"
#include "towerkit_lua.h"

/* A new state with towerkit on its path; aborts with the message on failure. */
static inline lua_State *fuzz_lua_state(void) {
    lua_State *L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    if (towerkit_lua_open(L, TK_ROOT_DIR) != 0) {
        fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    return L;
}

/* Runs `code` in L; aborts with the message if it fails. */
static inline void fuzz_lua_run(lua_State *L, const char *code) {
    if (luaL_dostring(L, code) != 0) {
        fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
}

/* The checkpoint directory, trained on first use. */
static inline const char *fuzz_model_dir(void) {
    static char dir[128];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/model", fuzz_dir());
    lua_State *L = fuzz_lua_state();
    lua_pushstring(L, dir);
    lua_setglobal(L, "FUZZ_MODEL_DIR");
    fuzz_lua_run(L, "arg = { [0] = 'tiny_model.lua', FUZZ_MODEL_DIR, '1' }\n"
                    "dofile('" TK_ROOT_DIR "/tests/spec/helpers/tiny_model.lua')");
    lua_close(L);
    return dir;
}

#endif
