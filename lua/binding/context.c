/* towerkit.Context: the per-call context of ops, seen from Lua; the current context;
 * conversions between Lua values and tk_value. */
#include "binding.h"

#include <stdlib.h>
#include <string.h>

static const char CURRENT_KEY = 'c'; /* registry[&CURRENT_KEY] = current Context */
static const char DEFAULT_KEY = 'd'; /* registry[&DEFAULT_KEY] = default Context */

tkl_context *tkl_check_context(lua_State *L, int idx) {
    tkl_context *c = (tkl_context *)luaL_checkudata(L, idx, TKL_CONTEXT);
    if (!c->ctx) tkl_error(L, "bad argument #%d (context has been freed)", idx);
    return c;
}

/* Context([seed]) */
static int l_context_new(lua_State *L) {
    uint64_t seed = tkl_opt_seed(L, 1, "the seed", 0);
    tkl_context *c = (tkl_context *)lua_newuserdata(L, sizeof *c);
    c->ctx = NULL;
    luaL_getmetatable(L, TKL_CONTEXT);
    lua_setmetatable(L, -2);
    /* the anchor table that arena tensors use as their environment */
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, -2);
    c->ctx = tk_ctx_new(seed);
    if (!c->ctx) return tkl_error(L, "%s", tk_last_error());
    return 1;
}

static int l_context_gc(lua_State *L) {
    tkl_context *c = (tkl_context *)luaL_checkudata(L, 1, TKL_CONTEXT);
    tk_ctx_free(c->ctx);
    c->ctx = NULL;
    return 0;
}

static int l_context_reset(lua_State *L) {
    tk_ctx_reset(tkl_check_context(L, 1)->ctx);
    lua_settop(L, 1);
    return 1;
}

/* ctx:train([on]) sets or reads the training flag. */
static int l_context_train(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    if (lua_gettop(L) >= 2) {
        tk_ctx_set_training(ctx, lua_toboolean(L, 2));
        lua_settop(L, 1);
        return 1;
    }
    lua_pushboolean(L, tk_ctx_training(ctx));
    return 1;
}

static int l_context_grad_enabled(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    if (lua_gettop(L) >= 2) {
        tk_ctx_set_grad_enabled(ctx, lua_toboolean(L, 2));
        lua_settop(L, 1);
        return 1;
    }
    lua_pushboolean(L, tk_ctx_grad_enabled(ctx));
    return 1;
}

/* ctx:num_threads([n]) sets how many threads the context's large products may use (0:
 * the process's count, tk.set_num_threads) or reads the count in force. */
static int l_context_num_threads(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    if (lua_gettop(L) >= 2) {
        int64_t n = tkl_check_int(L, 2, "num_threads");
        if (n < 0 || n > 1024)
            return tkl_error(L, "bad argument #1 to 'num_threads' (expected 0 to 1024, got %lld)", (long long)n);
        tk_ctx_set_num_threads(ctx, (int)n);
        lua_settop(L, 1);
        return 1;
    }
    lua_pushinteger(L, tk_ctx_get_num_threads(ctx));
    return 1;
}

static int l_context_seed(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    luaL_checknumber(L, 2);
    tk_ctx_seed(ctx, tkl_opt_seed(L, 2, "the seed", 0));
    lua_settop(L, 1);
    return 1;
}

static int l_context_generation(lua_State *L) {
    lua_pushnumber(L, (lua_Number)tk_ctx_generation(tkl_check_context(L, 1)->ctx));
    return 1;
}

static int l_context_grad(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    tk_tensor *t = tkl_check_tensor(L, 2);
    tk_tensor *g = tk_ctx_grad(ctx, t);
    if (!g) {
        if (tk_ctx_failed(ctx)) return tkl_push_result(L, 1, NULL);
        lua_pushnil(L);
        return 1;
    }
    tkl_push_arena(L, 1, g);
    return 1;
}

/* ctx:sparse_grad(table) -> rows (int64 [n]), values ([n, dim]) as heap copies, or nil. */
static int l_context_sparse_grad(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    tk_tensor *t = tkl_check_tensor(L, 2);
    tk_sparse_grad *sg = tk_ctx_sparse_grad(ctx, t);
    if (!sg) {
        if (tk_ctx_failed(ctx)) return tkl_push_result(L, 1, NULL);
        lua_pushnil(L);
        return 1;
    }
    tk_tensor *rows = tk_tensor_new_1d(TK_I64, sg->n);
    if (!rows) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, rows);
    tk_tensor *vals = tk_tensor_new_2d(TK_F32, sg->n, sg->dim);
    if (!vals) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, vals);
    memcpy(rows->data, sg->rows, (size_t)sg->n * sizeof(int64_t));
    memcpy(vals->data, sg->values, (size_t)(sg->n * sg->dim) * sizeof(float));
    return 2;
}

static int l_context_backward(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    tk_tensor *loss = tkl_check_tensor(L, 2);
    if (tk_backward(ctx, loss) != TK_OK) return tkl_push_result(L, 1, NULL);
    return 0;
}

static int l_context_added_loss(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    tk_tensor *t = tk_ctx_added_loss(ctx);
    if (!t) {
        lua_pushnil(L);
        return 1;
    }
    tkl_push_arena(L, 1, t);
    return 1;
}

static int l_context_apply_updates(lua_State *L) {
    tk_ctx_apply_updates(tkl_check_context(L, 1)->ctx);
    return 0;
}

static int l_context_stats(lua_State *L) {
    tk_ctx *ctx = tkl_check_context(L, 1)->ctx;
    lua_createtable(L, 0, 2);
    lua_pushnumber(L, (lua_Number)tk_ctx_arena_capacity(ctx));
    lua_setfield(L, -2, "arena_bytes");
    lua_pushnumber(L, (lua_Number)tk_ctx_alloc_count(ctx));
    lua_setfield(L, -2, "allocations");
    return 1;
}

/* ctx:run(fn, ...): calls fn with this context current; restores the previous one,
 * also on error (which is re-raised). Returns fn's results. */
static int l_context_run(lua_State *L) {
    tkl_check_context(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 2;
    lua_pushlightuserdata(L, (void *)&CURRENT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX); /* previous */
    int prev = lua_gettop(L);
    lua_pushlightuserdata(L, (void *)&CURRENT_KEY);
    lua_pushvalue(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    for (int i = 0; i < nargs; i++) lua_pushvalue(L, 3 + i);
    int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
    lua_pushlightuserdata(L, (void *)&CURRENT_KEY);
    lua_pushvalue(L, prev);
    lua_rawset(L, LUA_REGISTRYINDEX);
    if (rc != 0) return lua_error(L);
    return lua_gettop(L) - prev;
}

tk_ctx *tkl_push_current_context(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&CURRENT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlightuserdata(L, (void *)&DEFAULT_KEY);
        lua_rawget(L, LUA_REGISTRYINDEX);
    }
    return tkl_check_context(L, lua_gettop(L))->ctx;
}

static int l_current_context(lua_State *L) {
    tkl_push_current_context(L);
    return 1;
}

static int l_default_context(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&DEFAULT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    return 1;
}

tk_ctx *tkl_op_context(lua_State *L, int n, const int *idx) {
    tk_ctx *found = NULL;
    int found_idx = 0;
    for (int i = 0; i < n; i++) {
        tkl_tensor *u = (tkl_tensor *)luaL_testudata(L, idx[i], TKL_TENSOR);
        if (!u || !u->ctx) continue;
        if (found && found != u->ctx)
            tkl_error(L, "bad argument #%d (tensor belongs to another context than argument #%d)", idx[i], found_idx);
        found = u->ctx;
        found_idx = idx[i];
    }
    if (!found) return tkl_push_current_context(L);
    lua_getfenv(L, found_idx); /* anchor table {context} */
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
    return found;
}

/* --- values --- */

tk_value *tkl_to_value(lua_State *L, int idx, tk_ctx *ctx, const char **err) {
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    tkl_tensor *u = (tkl_tensor *)luaL_testudata(L, idx, TKL_TENSOR);
    if (u) {
        if (!u->t || (u->ctx && tk_ctx_generation(u->ctx) != u->generation)) {
            *err = "input tensor was released by a context reset";
            return NULL;
        }
        if (u->ctx && u->ctx != ctx) {
            *err = "input tensor belongs to another context";
            return NULL;
        }
        /* the value may outlive the Lua reference (a Lua block's result): keep it */
        tk_value *v = tk_ctx_keep(ctx, u->t) == TK_OK ? tk_value_of(ctx, u->t) : NULL;
        if (!v) *err = tk_ctx_error(ctx);
        return v;
    }
    if (!lua_istable(L, idx)) {
        *err = "expected a tensor or a table of named tensors";
        return NULL;
    }
    /* collect string keys, sorted for a stable order */
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
    }
    const char **names = tk_ctx_alloc(ctx, (size_t)(n ? n : 1) * sizeof *names);
    tk_value *v = tk_value_table(ctx);
    if (!names || !v) {
        *err = tk_ctx_error(ctx);
        return NULL;
    }
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            *err = "a table of tensors must have string keys (feature names)";
            return NULL;
        }
        names[i++] = tk_ctx_strdup(ctx, lua_tostring(L, -1));
    }
    qsort(names, (size_t)n, sizeof *names, tkl_strcmp_ptr);
    for (i = 0; i < n; i++) {
        lua_getfield(L, idx, names[i]);
        tkl_tensor *e = (tkl_tensor *)luaL_testudata(L, -1, TKL_TENSOR);
        lua_pop(L, 1);
        if (!e) {
            char *msg = tk_ctx_alloc(ctx, 256);
            if (msg) snprintf(msg, 256, "entry '%s' is not a tensor", names[i]);
            *err = msg ? msg : "entry is not a tensor";
            return NULL;
        }
        if (!e->t || (e->ctx && tk_ctx_generation(e->ctx) != e->generation) || (e->ctx && e->ctx != ctx)) {
            char *msg = tk_ctx_alloc(ctx, 256);
            if (msg)
                snprintf(msg, 256, "entry '%s' was released by a context reset or belongs to another context",
                         names[i]);
            *err = msg ? msg : "entry is not usable";
            return NULL;
        }
        if (tk_ctx_keep(ctx, e->t) != TK_OK || tk_value_set(ctx, v, names[i], e->t) != TK_OK) {
            *err = tk_ctx_error(ctx);
            return NULL;
        }
    }
    return v;
}

static void push_tensor_of(lua_State *L, int ctx_idx, tk_tensor *t) {
    if (t->flags & TK_TENSOR_HEAP) {
        tk_tensor_retain(t);
        tkl_push_heap(L, t);
    } else {
        tkl_push_arena(L, ctx_idx, t);
    }
}

void tkl_push_value(lua_State *L, int ctx_idx, const tk_value *v) {
    if (ctx_idx < 0) ctx_idx = lua_gettop(L) + ctx_idx + 1;
    if (!tk_value_is_tabular(v)) {
        push_tensor_of(L, ctx_idx, tk_value_tensor(v));
        return;
    }
    lua_createtable(L, 0, v->n);
    for (int32_t i = 0; i < v->n; i++) {
        push_tensor_of(L, ctx_idx, v->tensors[i]);
        lua_setfield(L, -2, v->names[i]);
    }
}

static const luaL_Reg context_methods[] = { { "reset", l_context_reset },
                                            { "train", l_context_train },
                                            { "grad_enabled", l_context_grad_enabled },
                                            { "num_threads", l_context_num_threads },
                                            { "seed", l_context_seed },
                                            { "generation", l_context_generation },
                                            { "grad", l_context_grad },
                                            { "sparse_grad", l_context_sparse_grad },
                                            { "backward", l_context_backward },
                                            { "added_loss", l_context_added_loss },
                                            { "apply_updates", l_context_apply_updates },
                                            { "stats", l_context_stats },
                                            { "run", l_context_run },
                                            { NULL, NULL } };

static const luaL_Reg context_functions[] = { { "Context", l_context_new },
                                              { "current_context", l_current_context },
                                              { "default_context", l_default_context },
                                              { NULL, NULL } };

void tkl_open_context(lua_State *L) {
    luaL_newmetatable(L, TKL_CONTEXT);
    lua_pushcfunction(L, l_context_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, context_methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "ContextMethods");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_register(L, NULL, context_functions);
    /* the default context */
    lua_pushlightuserdata(L, (void *)&DEFAULT_KEY);
    lua_pushcfunction(L, l_context_new);
    lua_call(L, 0, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
}
