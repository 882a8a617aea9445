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

/* The keys an initializer table takes, by kind: Keras' argument names (and seed), then the
 * core's a and b. `param` is the field a key sets: 'a' or 'b' (seed: 's'). */
typedef struct init_key {
    const char *name;
    char param;
} init_key;

static const init_key *init_keys(tk_init_kind kind) {
    static const init_key constant[] = { { "value", 'a' }, { "a", 'a' }, { NULL, 0 } };
    static const init_key uniform[] = { { "minval", 'a' }, { "maxval", 'b' }, { "seed", 's' },
                                        { "a", 'a' },      { "b", 'b' },      { NULL, 0 } };
    static const init_key normal[] = { { "mean", 'b' }, { "stddev", 'a' }, { "seed", 's' },
                                       { "a", 'a' },    { "b", 'b' },      { NULL, 0 } };
    static const init_key seeded[] = { { "seed", 's' }, { NULL, 0 } };
    static const init_key none[] = { { NULL, 0 } };
    switch (kind) {
    case TK_INIT_CONSTANT:
        return constant;
    case TK_INIT_RANDOM_UNIFORM:
        return uniform;
    case TK_INIT_RANDOM_NORMAL:
    case TK_INIT_TRUNCATED_NORMAL:
        return normal;
    case TK_INIT_ZEROS:
    case TK_INIT_ONES:
        return none;
    default:
        return seeded;
    }
}

/* The fields of an initializer table at the top of the stack, read into init (its kind
 * set): every key must be one its kind takes, each parameter given once. */
static void init_fields(lua_State *L, const char *what, tk_init *init) {
    const char *kname = tk_init_name(init->kind);
    const init_key *keys = init_keys(init->kind);
    char known[128] = "kind";
    for (const init_key *k = keys; k->name; k++) {
        size_t len = strlen(known);
        snprintf(known + len, sizeof known - len, ", %s", k->name);
    }
    const char *set_by[2] = { NULL, NULL }; /* the key that set a, b */
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        /* key at -2, value at -1 */
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (key && strcmp(key, "kind") == 0) {
            lua_pop(L, 1);
            continue;
        }
        const init_key *k = keys;
        while (k->name && !(key && strcmp(k->name, key) == 0)) k++;
        if (!k->name) {
            if (!key)
                tkl_error(L, "%s: initializer '%s' has a key of type %s; known keys: %s", what, kname,
                          luaL_typename(L, -2), known);
            tkl_error(L, "%s: unknown key '%s' for initializer '%s'; known: %s", what, key, kname, known);
        }
        if (!lua_isnumber(L, -1) || lua_type(L, -1) != LUA_TNUMBER)
            tkl_error(L, "%s: '%s' of initializer '%s' must be a number, got %s", what, key, kname,
                      luaL_typename(L, -1));
        double d = lua_tonumber(L, -1);
        if (k->param == 's') {
            if (!(d >= 0 && tkl_is_int53(d)))
                tkl_error(L, "%s: 'seed' of initializer '%s' must be an integer in [0, 2^53], got %g", what, kname, d);
            init->has_seed = true;
            init->seed = (uint64_t)d;
        } else {
            int i = k->param - 'a';
            if (set_by[i])
                tkl_error(L, "%s: initializer '%s' has both '%s' and '%s' (the same parameter): give one", what, kname,
                          set_by[i], key);
            if (!isfinite(d)) tkl_error(L, "%s: '%s' of initializer '%s' must be finite, got %g", what, key, kname, d);
            set_by[i] = key;
            if (i == 0)
                init->a = (float)d;
            else
                init->b = (float)d;
        }
        lua_pop(L, 1);
    }
    if ((init->kind == TK_INIT_RANDOM_NORMAL || init->kind == TK_INIT_TRUNCATED_NORMAL) && init->a < 0)
        tkl_error(L, "%s: the stddev of initializer '%s' must be non-negative, got %g", what, kname, (double)init->a);
    if (init->kind == TK_INIT_RANDOM_UNIFORM && init->a > init->b)
        tkl_error(L, "%s: initializer '%s' needs minval <= maxval, got %g and %g", what, kname, (double)init->a,
                  (double)init->b);
}

/* The initializer at the top of the stack, popped; def if it is nil. A name
 * ("glorot_uniform") or a table with Keras' argument names: {kind = "random_normal",
 * mean =, stddev =, seed =}, {kind = "truncated_normal", mean =, stddev =, seed =},
 * {kind = "random_uniform", minval =, maxval =, seed =}, {kind = "constant", value =},
 * {kind = "glorot_uniform", seed =}, ... (a and b, the core's names, also taken). Keras'
 * defaults for what is left out; an unknown key is an error. */
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
        name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 1); /* the string stays referenced by the table */
    }
    if (!name) {
        lua_pop(L, 1);
        tkl_error(L,
                  "%s must be an initializer name or a table {kind = name, ...} (e.g. {kind = \"random_normal\", "
                  "mean = 0, stddev = 0.05, seed = 1})",
                  what);
    }
    if (tk_init_from_name(name, &init) < 0) {
        char n[64];
        snprintf(n, sizeof n, "%s", name);
        lua_pop(L, 1);
        tkl_error(L, "%s: unknown initializer '%s'; known: %s", what, n, tk_init_names());
    }
    if (lua_istable(L, -1)) init_fields(L, what, &init);
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
