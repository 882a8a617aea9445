/* towerkit.Model and towerkit.ModelSlot: a shared, reference-counted tk_model (and the
 * slot that swaps it) seen from Lua. Any number of states hold the same model; each
 * userdata has its own tk_ctx (a state runs in one thread at a time), and results are
 * heap tensors, so they outlive the call. Released by __gc or :release(), in any order
 * with the C host's own tk_model_release. */
#include "binding.h"
#include "towerkit_lua.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TKL_MODEL "towerkit.Model"
#define TKL_SLOT "towerkit.ModelSlot"

typedef struct tkl_model {
    tk_model *m;
    tk_ctx *ctx;
} tkl_model;

typedef struct tkl_slot {
    tk_model_slot *s;
    tk_ctx *ctx;
} tkl_slot;

static tkl_model *check_model_ud(lua_State *L, int idx) { return (tkl_model *)luaL_checkudata(L, idx, TKL_MODEL); }

static tkl_model *check_model(lua_State *L, int idx) {
    tkl_model *u = check_model_ud(L, idx);
    if (!u->m) tkl_error(L, "bad argument #%d (model has been released)", idx);
    return u;
}

static tkl_slot *check_slot(lua_State *L, int idx) {
    tkl_slot *u = (tkl_slot *)luaL_checkudata(L, idx, TKL_SLOT);
    if (!u->s) tkl_error(L, "bad argument #%d (model slot has been released)", idx);
    return u;
}

static tk_ctx *ctx_of(lua_State *L, tk_ctx **ctx) {
    if (!*ctx && !(*ctx = tk_ctx_new(0))) tkl_error(L, "%s", "out of memory");
    tk_ctx_reset(*ctx);
    return *ctx;
}

static void push_model_ud(lua_State *L, tk_model *m); /* takes over one reference */

/* The query rows of a checked batch: the rows of the model's first feature. */
static int64_t batch_rows(const tk_model *m, const tk_value *v) {
    const tk_feature_info *f = tk_model_feature(m, 0);
    if (!f) return -1;
    tk_tensor *t = tk_value_get(v, f->name), *vals, *offs;
    if (t) return t->ndim >= 1 ? t->shape[0] : -1;
    return tk_value_get_ragged(v, f->name, &vals, &offs) ? offs->shape[0] - 1 : -1;
}

/* towerkit_lua.h: the exclusion lists at idx (one array of item ids per query row; rows
 * past its end exclude nothing) as CSR arrays from malloc. */
int towerkit_lua_to_exclusions(lua_State *L, int idx, int64_t rows, int64_t **offs_out, int64_t **items_out, char *msg,
                               size_t msglen) {
    *offs_out = *items_out = NULL;
    if (lua_isnoneornil(L, idx)) return 0;
    if (!lua_istable(L, idx)) {
        snprintf(msg, msglen, "exclude must be a list of lists of item ids");
        return -1;
    }
    int64_t n = (int64_t)lua_objlen(L, idx), total = 0;
    if (rows < 0) rows = n;
    if (n > rows) {
        snprintf(msg, msglen, "exclude has %lld lists for %lld query rows", (long long)n, (long long)rows);
        return -1;
    }
    for (int64_t r = 0; r < n; r++) {
        lua_rawgeti(L, idx, (int)r + 1);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            snprintf(msg, msglen, "exclude: list %lld is not a list of item ids", (long long)r);
            return -1;
        }
        total += (int64_t)lua_objlen(L, -1);
        lua_pop(L, 1);
    }
    int64_t *od = malloc((size_t)(rows + 1) * sizeof *od), *id = malloc((size_t)(total ? total : 1) * sizeof *id);
    if (!od || !id) {
        free(od);
        free(id);
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    int64_t used = 0;
    od[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (r < n) {
            lua_rawgeti(L, idx, (int)r + 1);
            int64_t len = (int64_t)lua_objlen(L, -1);
            for (int64_t i = 0; i < len; i++) {
                lua_rawgeti(L, -1, (int)i + 1);
                lua_Number x = lua_tonumber(L, -1);
                bool ok = lua_type(L, -1) == LUA_TNUMBER && tkl_is_int53(x);
                lua_pop(L, 1);
                if (!ok) {
                    lua_pop(L, 1);
                    free(od);
                    free(id);
                    snprintf(msg, msglen,
                             "exclude: list %lld holds something other than an integer id at position %lld",
                             (long long)r, (long long)i);
                    return -1;
                }
                id[used++] = (int64_t)x;
            }
            lua_pop(L, 1);
        }
        od[r + 1] = used;
    }
    *offs_out = od;
    *items_out = id;
    return 0;
}

/* Runs a recommendation with ctx; pushes ids and scores (heap tensors) and returns 2,
 * or pushes nil and the message and returns 2 when raise is false (raises otherwise).
 * The argument after k, if any, lists item ids to exclude per row. */
static int recommend(lua_State *L, tk_model *m, tk_ctx *ctx, int batch_idx, int k_idx, bool raise) {
    lua_Number kn = luaL_optnumber(L, k_idx, 10);
    const char *err = NULL;
    char msg[1024];
    if (!(kn >= 1 && kn <= 1e9) || kn != floor(kn)) { /* range first: the cast needs it */
        snprintf(msg, sizeof msg, "k must be a positive integer, got %g", (double)kn);
        err = msg;
    }
    tk_value *v = err ? NULL : tkl_to_value(L, batch_idx, ctx, &err);
    /* rows < 0 (no rows found for the first feature): one per list, and the query check
     * names what is wrong with the batch. Freed before anything below can raise. */
    int64_t *eo = NULL, *ei = NULL;
    if (v && towerkit_lua_to_exclusions(L, k_idx + 1, batch_rows(m, v), &eo, &ei, msg, sizeof msg) != 0) err = msg;
    tk_tensor *ids = NULL, *scores = NULL;
    if (v && !err && tk_model_recommend_excluding(m, ctx, v, (int64_t)kn, eo, ei, &ids, &scores) != TK_OK)
        err = tk_ctx_error(ctx);
    free(eo);
    free(ei);
    if (!err) {
        tk_tensor *a = tk_tensor_clone(ids), *b = tk_tensor_clone(scores);
        if (!a || !b) {
            tk_tensor_release(a);
            tk_tensor_release(b);
            err = "out of memory";
        } else {
            tkl_push_heap(L, a);
            tkl_push_heap(L, b);
            return 2;
        }
    }
    if (err != msg) snprintf(msg, sizeof msg, "%s", err);
    if (raise) return tkl_error(L, "%s", msg);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* --- towerkit.Model --- */

/* model_load(dir [, {items = path}]) */
static int l_model_load(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    tk_model_options o = { 0 };
    o.items_path = tkl_field_string(L, 2, "items", NULL);
    o.batch_size = tkl_field_int(L, 2, "batch_size", 0);
    tk_model *m = tk_model_load(dir, &o);
    if (!m) return tkl_error(L, "%s", tk_last_error());
    push_model_ud(L, m);
    return 1;
}

static int l_model_recommend(lua_State *L) {
    tkl_model *u = check_model(L, 1);
    return recommend(L, u->m, ctx_of(L, &u->ctx), 2, 3, true);
}

static int l_model_try_recommend(lua_State *L) {
    tkl_model *u = check_model(L, 1);
    return recommend(L, u->m, ctx_of(L, &u->ctx), 2, 3, false);
}

static int l_model_encode(lua_State *L) {
    tkl_model *u = check_model(L, 1);
    tk_ctx *ctx = ctx_of(L, &u->ctx);
    const char *err = NULL;
    tk_value *v = tkl_to_value(L, 2, ctx, &err);
    tk_tensor *q = v ? tk_model_encode(u->m, ctx, v) : NULL;
    if (!q) return tkl_error(L, "%s", err ? err : tk_ctx_error(ctx));
    tk_tensor *c = tk_tensor_clone(q);
    if (!c) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, c);
    return 1;
}

/* The served blocks are shared by every thread and state: Lua gets a clone (weights
 * copied), so changing it cannot change the served model. */
static int push_block_clone(lua_State *L, const tk_block *b) {
    tk_block *c = tk_block_clone(b);
    if (!c) return tkl_error(L, "%s", tk_last_error());
    tkl_push_block(L, c);
    return 1;
}

static int l_model_block(lua_State *L) { return push_block_clone(L, tk_model_block(check_model(L, 1)->m)); }
static int l_model_query_block(lua_State *L) { return push_block_clone(L, tk_model_query_block(check_model(L, 1)->m)); }
static int l_model_item_block(lua_State *L) { return push_block_clone(L, tk_model_item_block(check_model(L, 1)->m)); }

static int l_model_schema(lua_State *L) {
    const char *s = tk_model_schema_json(check_model(L, 1)->m);
    if (s)
        lua_pushstring(L, s);
    else
        lua_pushnil(L);
    return 1;
}

static int l_model_dir(lua_State *L) {
    lua_pushstring(L, tk_model_dir(check_model(L, 1)->m));
    return 1;
}

static int l_model_num_items(lua_State *L) {
    lua_pushnumber(L, (lua_Number)tk_model_num_items(check_model(L, 1)->m));
    return 1;
}

static int l_model_dim(lua_State *L) {
    lua_pushnumber(L, (lua_Number)tk_model_dim(check_model(L, 1)->m));
    return 1;
}

/* features() -> { {name =, kind = "categorical"|"continuous", cardinality =, is_list =}, ... } */
static int l_model_features(lua_State *L) {
    tk_model *m = check_model(L, 1)->m;
    int32_t n = tk_model_num_features(m);
    lua_createtable(L, n, 0);
    for (int32_t i = 0; i < n; i++) {
        const tk_feature_info *f = tk_model_feature(m, i);
        lua_createtable(L, 0, 4);
        lua_pushstring(L, f->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, f->kind == TK_FEATURE_CONTINUOUS ? "continuous" : "categorical");
        lua_setfield(L, -2, "kind");
        lua_pushnumber(L, (lua_Number)f->cardinality);
        lua_setfield(L, -2, "cardinality");
        lua_pushboolean(L, f->is_list);
        lua_setfield(L, -2, "is_list");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int push_clone(lua_State *L, const tk_tensor *t) {
    tk_tensor *c = tk_tensor_clone(t);
    if (!c) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, c);
    return 1;
}

static int l_model_item_ids(lua_State *L) { return push_clone(L, tk_model_item_ids(check_model(L, 1)->m)); }
static int l_model_item_embeddings(lua_State *L) {
    return push_clone(L, tk_model_item_embeddings(check_model(L, 1)->m));
}

static int l_model_gc(lua_State *L) {
    tkl_model *u = check_model_ud(L, 1);
    tk_model_release(u->m);
    tk_ctx_free(u->ctx);
    u->m = NULL;
    u->ctx = NULL;
    return 0;
}

static int l_model_tostring(lua_State *L) {
    tkl_model *u = check_model_ud(L, 1);
    if (!u->m) {
        lua_pushliteral(L, "towerkit.Model (released)");
    } else {
        lua_pushfstring(L, "towerkit.Model '%s': %d features, %d items of dimension %d", tk_model_dir(u->m),
                        (int)tk_model_num_features(u->m), (int)tk_model_num_items(u->m), (int)tk_model_dim(u->m));
    }
    return 1;
}

static int l_is_model(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, TKL_MODEL) != NULL);
    return 1;
}

static const luaL_Reg model_methods[] = { { "recommend", l_model_recommend },
                                          { "try_recommend", l_model_try_recommend },
                                          { "encode", l_model_encode },
                                          { "block", l_model_block },
                                          { "query_block", l_model_query_block },
                                          { "item_block", l_model_item_block },
                                          { "schema", l_model_schema },
                                          { "dir", l_model_dir },
                                          { "num_items", l_model_num_items },
                                          { "dim", l_model_dim },
                                          { "features", l_model_features },
                                          { "item_ids", l_model_item_ids },
                                          { "item_embeddings", l_model_item_embeddings },
                                          { "release", l_model_gc },
                                          { NULL, NULL } };

/* --- towerkit.ModelSlot --- */

static void push_slot_ud(lua_State *L, tk_model_slot *s); /* takes over one reference */

/* model_slot(model) -> a slot whose current model is `model` */
static int l_model_slot(lua_State *L) {
    tkl_model *u = check_model(L, 1);
    tk_model_slot *s = tk_model_slot_new(u->m);
    if (!s) return tkl_error(L, "%s", tk_last_error());
    push_slot_ud(L, s);
    return 1;
}

/* slot:current() -> the current model and its version (read together) */
static int l_slot_current(lua_State *L) {
    tkl_slot *u = check_slot(L, 1);
    push_model_ud(L, NULL); /* before the reference is taken: nothing leaks on an error */
    uint64_t version = 0;
    ((tkl_model *)lua_touserdata(L, -1))->m = tk_model_slot_get_versioned(u->s, &version);
    lua_pushnumber(L, (lua_Number)version);
    return 2;
}

/* recommend / try_recommend on the current model; a third result is the slot version
 * the request used. */
static int slot_recommend(lua_State *L, bool raise) {
    tkl_slot *u = check_slot(L, 1);
    tk_ctx *ctx = ctx_of(L, &u->ctx);
    lua_settop(L, 4); /* slot, batch, k, exclude: the model's userdata goes above them */
    /* The model must be released even if a Lua error is raised: the userdata exists
     * before the reference is taken, so __gc releases it. The model and its version
     * are read together, under the slot's lock. */
    push_model_ud(L, NULL);
    uint64_t version = 0;
    tk_model *m = tk_model_slot_get_versioned(u->s, &version);
    ((tkl_model *)lua_touserdata(L, -1))->m = m;
    int n = recommend(L, m, ctx, 2, 3, raise);
    lua_pushnumber(L, (lua_Number)version);
    (void)n;
    return 3;
}

static int l_slot_recommend(lua_State *L) { return slot_recommend(L, true); }
static int l_slot_try_recommend(lua_State *L) { return slot_recommend(L, false); }

/* reload(dir [, {items = path}]) -> version; on failure raises, the current model stays */
static int l_slot_reload(lua_State *L) {
    tkl_slot *u = check_slot(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    tk_model_options o = { 0 };
    o.items_path = tkl_field_string(L, 3, "items", NULL);
    if (tk_model_slot_reload(u->s, dir, &o) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    lua_pushnumber(L, (lua_Number)tk_model_slot_version(u->s));
    return 1;
}

/* set(model) -> version */
static int l_slot_set(lua_State *L) {
    tkl_slot *u = check_slot(L, 1);
    tkl_model *m = check_model(L, 2);
    lua_pushnumber(L, (lua_Number)tk_model_slot_set(u->s, m->m));
    return 1;
}

static int l_slot_version(lua_State *L) {
    lua_pushnumber(L, (lua_Number)tk_model_slot_version(check_slot(L, 1)->s));
    return 1;
}

static int l_slot_gc(lua_State *L) {
    tkl_slot *u = (tkl_slot *)luaL_checkudata(L, 1, TKL_SLOT);
    tk_model_slot_release(u->s);
    tk_ctx_free(u->ctx);
    u->s = NULL;
    u->ctx = NULL;
    return 0;
}

static int l_slot_tostring(lua_State *L) {
    tkl_slot *u = (tkl_slot *)luaL_checkudata(L, 1, TKL_SLOT);
    if (!u->s) {
        lua_pushliteral(L, "towerkit.ModelSlot (released)");
    } else {
        push_model_ud(L, NULL); /* releases the model if pushing the text raises */
        uint64_t version = 0;
        tk_model *m = tk_model_slot_get_versioned(u->s, &version);
        ((tkl_model *)lua_touserdata(L, -1))->m = m;
        lua_pushfstring(L, "towerkit.ModelSlot version %d: '%s'", (int)version, tk_model_dir(m));
    }
    return 1;
}

static const luaL_Reg slot_methods[] = { { "current", l_slot_current },
                                         { "recommend", l_slot_recommend },
                                         { "try_recommend", l_slot_try_recommend },
                                         { "reload", l_slot_reload },
                                         { "set", l_slot_set },
                                         { "version", l_slot_version },
                                         { "release", l_slot_gc },
                                         { NULL, NULL } };

/* --- metatables and pushing --- */

/* Registers both metatables in L if they are not there (hosts may push a model into a
 * state before towerkit.core is loaded). */
static void ensure_metatables(lua_State *L) {
    if (luaL_newmetatable(L, TKL_MODEL)) {
        lua_pushcfunction(L, l_model_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_model_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_newtable(L);
        luaL_register(L, NULL, model_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, TKL_SLOT)) {
        lua_pushcfunction(L, l_slot_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_slot_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_newtable(L);
        luaL_register(L, NULL, slot_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

static void push_model_ud(lua_State *L, tk_model *m) {
    tkl_model *u = (tkl_model *)lua_newuserdata(L, sizeof *u);
    u->m = m;
    u->ctx = NULL;
    luaL_getmetatable(L, TKL_MODEL);
    lua_setmetatable(L, -2);
}

static void push_slot_ud(lua_State *L, tk_model_slot *s) {
    tkl_slot *u = (tkl_slot *)lua_newuserdata(L, sizeof *u);
    u->s = s;
    u->ctx = NULL;
    luaL_getmetatable(L, TKL_SLOT);
    lua_setmetatable(L, -2);
}

static const luaL_Reg serving_functions[] = {
    { "model_load", l_model_load }, { "model_slot", l_model_slot }, { "is_model", l_is_model }, { NULL, NULL }
};

void tkl_open_serving(lua_State *L) {
    ensure_metatables(L);
    luaL_register(L, NULL, serving_functions);
}

/* --- the host API (towerkit_lua.h) --- */

typedef struct push_args {
    tk_model *m;
    tk_model_slot *s;
} push_args;

/* Makes sure towerkit.core is loaded in L (tensors returned by the model need its
 * metatables), then pushes the handle. Runs under lua_cpcall. */
static int push_protected(lua_State *L) {
    push_args *a = (push_args *)lua_touserdata(L, 1);
    lua_settop(L, 0);
    luaL_getmetatable(L, TKL_TENSOR);
    bool have_core = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!have_core) {
        /* package.loaded["towerkit.core"] = luaopen_towerkit_core() */
        lua_pushcfunction(L, luaopen_towerkit_core);
        lua_call(L, 0, 1);
        lua_getglobal(L, "package");
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "loaded");
            if (lua_istable(L, -1)) {
                lua_pushvalue(L, -3);
                lua_setfield(L, -2, "towerkit.core");
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
    }
    ensure_metatables(L);
    /* The userdata exists before the reference is taken: nothing leaks on an error. */
    if (a->m) {
        push_model_ud(L, NULL);
        tk_model_retain(a->m);
        ((tkl_model *)lua_touserdata(L, -1))->m = a->m;
    } else {
        push_slot_ud(L, NULL);
        tk_model_slot_retain(a->s);
        ((tkl_slot *)lua_touserdata(L, -1))->s = a->s;
    }
    /* lua_cpcall drops results: park the handle in the registry for the caller */
    lua_setfield(L, LUA_REGISTRYINDEX, "towerkit.pushed");
    return 0;
}

static int push_handle(lua_State *L, push_args *a) {
    if (!L) return -1;
    if (!a->m && !a->s) {
        lua_pushstring(L, "towerkit_lua_push_model: no model");
        return -1;
    }
    if (lua_cpcall(L, push_protected, a) != 0) {
        if (!lua_isstring(L, -1)) {
            lua_pop(L, 1);
            lua_pushstring(L, "towerkit_lua_push_model failed");
        }
        return -1;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "towerkit.pushed");
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "towerkit.pushed");
    return 0;
}

int towerkit_lua_push_model(lua_State *L, tk_model *m) {
    push_args a = { m, NULL };
    if (!m) {
        if (L) lua_pushstring(L, "towerkit_lua_push_model: no model");
        return -1;
    }
    return push_handle(L, &a);
}

int towerkit_lua_push_model_slot(lua_State *L, tk_model_slot *s) {
    push_args a = { NULL, s };
    if (!s) {
        if (L) lua_pushstring(L, "towerkit_lua_push_model_slot: no slot");
        return -1;
    }
    return push_handle(L, &a);
}

tk_model *towerkit_lua_to_model(lua_State *L, int idx) {
    tkl_model *u = (tkl_model *)luaL_testudata(L, idx, TKL_MODEL);
    return u ? u->m : NULL;
}
