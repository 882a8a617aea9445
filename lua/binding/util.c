/* Helpers every file of the binding uses: errors, memory owned across a raise, numbers
 * and names from positional arguments and option tables. They depend on the core and
 * Lua alone, so the binding's files depend on this one and not on each other. */
#include "binding.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int tkl_error(lua_State *L, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    luaL_where(L, 1);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

int tkl_strcmp_ptr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* --- memory owned by a C function that may raise --- */

#define TKL_OWNED "towerkit.Owned"

typedef struct tkl_owned {
    void *p;
    void (*free_fn)(void *);
} tkl_owned;

void tkl_owned_free(lua_State *L, int idx) {
    tkl_owned *o = (tkl_owned *)luaL_checkudata(L, idx, TKL_OWNED);
    void *p = o->p;
    o->p = NULL;
    if (p && o->free_fn) o->free_fn(p);
}

static int owned_gc(lua_State *L) {
    tkl_owned_free(L, 1);
    return 0;
}

void **tkl_push_owned(lua_State *L, void (*free_fn)(void *)) {
    tkl_owned *o = (tkl_owned *)lua_newuserdata(L, sizeof *o);
    o->p = NULL;
    o->free_fn = free_fn;
    luaL_getmetatable(L, TKL_OWNED);
    lua_setmetatable(L, -2);
    return &o->p;
}

void tkl_open_util(lua_State *L) {
    luaL_newmetatable(L, TKL_OWNED);
    lua_pushcfunction(L, owned_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

/* --- positional arguments --- */

/* A double converts to int64 without undefined behaviour, and exactly, when it is an
 * integer of magnitude at most 2^53. NaN and infinities are not. */
bool tkl_is_int53(double d) { return d == floor(d) && fabs(d) <= TKL_INT53_MAX; }

int64_t tkl_check_int(lua_State *L, int idx, const char *what) {
    double d = luaL_checknumber(L, idx);
    if (!tkl_is_int53(d))
        tkl_error(L, "bad argument #%d (%s must be an integer of magnitude at most 2^53, got %g)", idx, what, d);
    return (int64_t)d;
}

int64_t tkl_opt_int(lua_State *L, int idx, const char *what, int64_t def) {
    return lua_isnoneornil(L, idx) ? def : tkl_check_int(L, idx, what);
}

uint64_t tkl_opt_seed(lua_State *L, int idx, const char *what, uint64_t def) {
    return (uint64_t)tkl_opt_int(L, idx, what, (int64_t)def);
}

int tkl_opt_activation(lua_State *L, int idx, const char *what, tk_activation def) {
    if (lua_isnoneornil(L, idx)) return def;
    const char *name = luaL_checkstring(L, idx);
    int act = tk_activation_from_name(name);
    if (act < 0)
        return tkl_error(L, "bad argument #%d to '%s' (unknown activation '%s'; known: %s)", idx, what, name,
                         tk_activation_names());
    return act;
}

/* The initializer at the top of the stack ("name" or {kind = "name", a = x, b = y}),
 * popped; def if it is nil. */
static tk_init init_at_top(lua_State *L, const char *what, tk_init def) {
    tk_init init = def;
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return init;
    }
    const char *name = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) {
        name = lua_tostring(L, -1);
    } else if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "kind");
        name = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    if (!name) {
        lua_pop(L, 1);
        tkl_error(L, "%s must be an initializer name or {kind = name, a = , b = }", what);
    }
    if (tk_init_from_name(name, &init) < 0) {
        char n[64];
        snprintf(n, sizeof n, "%s", name);
        lua_pop(L, 1);
        tkl_error(L, "%s: unknown initializer '%s'; known: %s", what, n, tk_init_names());
    }
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "a");
        if (lua_isnumber(L, -1)) init.a = (float)lua_tonumber(L, -1);
        lua_getfield(L, -2, "b");
        if (lua_isnumber(L, -1)) init.b = (float)lua_tonumber(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return init;
}

tk_init tkl_opt_init(lua_State *L, int idx, const char *what, tk_init def) {
    lua_pushvalue(L, idx);
    return init_at_top(L, what, def);
}

/* --- option tables --- */

void tkl_push_field(lua_State *L, int idx, const char *key) {
    if (idx && lua_istable(L, idx))
        lua_getfield(L, idx, key);
    else
        lua_pushnil(L);
}

/* Pushes field `key` of the table at idx and tells whether it is there (not nil);
 * raises unless it then has the Lua type `type` (`kind` for the message). The caller
 * pops it. */
static bool push_typed_field(lua_State *L, int idx, const char *key, int type, const char *kind) {
    tkl_push_field(L, idx, key);
    if (lua_isnil(L, -1)) return false;
    if (lua_type(L, -1) != type) tkl_error(L, "option '%s' must be %s", key, kind);
    return true;
}

const char *tkl_field_string(lua_State *L, int idx, const char *key, const char *def) {
    const char *s = push_typed_field(L, idx, key, LUA_TSTRING, "a string") ? lua_tostring(L, -1) : def;
    lua_pop(L, 1); /* s stays referenced by the options table */
    return s;
}

double tkl_field_number(lua_State *L, int idx, const char *key, double def) {
    double d = push_typed_field(L, idx, key, LUA_TNUMBER, "a number") ? lua_tonumber(L, -1) : def;
    lua_pop(L, 1);
    return d;
}

int64_t tkl_field_int(lua_State *L, int idx, const char *key, int64_t def) {
    double d = tkl_field_number(L, idx, key, (double)def); /* a default (small) passes the checks below */
    if (d != floor(d)) tkl_error(L, "option '%s' must be an integer, got %g", key, d);
    if (!tkl_is_int53(d)) tkl_error(L, "option '%s' must be an integer of magnitude at most 2^53, got %g", key, d);
    return (int64_t)d;
}

bool tkl_field_bool(lua_State *L, int idx, const char *key, bool def) {
    bool b = push_typed_field(L, idx, key, LUA_TBOOLEAN, "a boolean") ? lua_toboolean(L, -1) : def;
    lua_pop(L, 1);
    return b;
}

tk_init tkl_field_init(lua_State *L, int idx, const char *key, tk_init def) {
    tkl_push_field(L, idx, key);
    return init_at_top(L, key, def);
}

/* --- ragged features --- */

void tkl_push_ragged_name(lua_State *L, const char *feature, tk_ragged_part part) {
    size_t n = tk_ragged_name_join(feature, part, NULL, 0);
    char *s = (char *)lua_newuserdata(L, n + 1); /* collected with the stack: no leak on a raise */
    tk_ragged_name_join(feature, part, s, n + 1);
    lua_pushlstring(L, s, n);
    lua_remove(L, -2);
}
