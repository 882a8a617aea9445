/* towerkit.Block: constructors of the core's block kinds, forward calls, parameters,
 * configs, and blocks written as Lua functions. */
#include "binding.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- userdata --- */

tkl_block *tkl_check_block_ud(lua_State *L, int idx) { return (tkl_block *)luaL_checkudata(L, idx, TKL_BLOCK); }

tk_block *tkl_check_block(lua_State *L, int idx) {
    tkl_block *u = tkl_check_block_ud(L, idx);
    if (!u->b) tkl_error(L, "bad argument #%d (block has been freed)", idx);
    return u->b;
}

void tkl_push_block(lua_State *L, tk_block *b) {
    tkl_block *u = (tkl_block *)lua_newuserdata(L, sizeof *u);
    u->b = b;
    luaL_getmetatable(L, TKL_BLOCK);
    lua_setmetatable(L, -2);
}

/* Pushes a new block userdata (b = NULL), to be filled once the block exists, so a
 * Lua error between the two cannot leak the block. */
static tkl_block *new_block_ud(lua_State *L) {
    tkl_block *u = (tkl_block *)lua_newuserdata(L, sizeof *u);
    u->b = NULL;
    luaL_getmetatable(L, TKL_BLOCK);
    lua_setmetatable(L, -2);
    return u;
}

static int finish(lua_State *L, tkl_block *u, tk_block *b) {
    if (!b) return tkl_error(L, "%s", tk_last_error());
    u->b = b;
    return 1;
}

static int l_block_gc(lua_State *L) {
    tkl_block *u = tkl_check_block_ud(L, 1);
    tk_block_release(u->b);
    u->b = NULL;
    return 0;
}

static int check_aggregation(lua_State *L, const char *name, int argn) {
    if (!name) return TK_AGG_NONE;
    int agg = tk_aggregation_from_name(name);
    if (agg < 0)
        return tkl_error(L, "bad argument #%d (unknown aggregation '%s'; known: %s)", argn, name,
                         tk_aggregation_names());
    return agg;
}

/* --- constructors --- */

/* dense(name, units (0: as many as input features), {in =, activation =, use_bias =, kernel_initializer =,
 *                     bias_initializer =, seed =, kernel_l2 =}) */
static int l_dense(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    double units = luaL_checknumber(L, 2);
    if (units < 0 || units != floor(units))
        return tkl_error(
            L, "bad argument #2 to 'dense' (units must be a non-negative integer (0: the input width), got %g)", units);
    int64_t in = tkl_field_int(L, 3, "in", 0);
    if (in < 0) return tkl_error(L, "option 'in' must be non-negative");
    tkl_push_field(L, 3, "activation"); /* options may be absent: core.dense("d", 3) */
    int act = tkl_opt_activation(L, lua_gettop(L), "dense", TK_ACT_LINEAR);
    lua_pop(L, 1);
    bool use_bias = tkl_field_bool(L, 3, "use_bias", true);
    tk_init kinit = tkl_field_init(L, 3, "kernel_initializer", tk_init_default_kernel());
    tk_init binit = tkl_field_init(L, 3, "bias_initializer", tk_init_zeros());
    uint64_t seed = (uint64_t)tkl_field_int(L, 3, "seed", 0);
    double l2 = tkl_field_number(L, 3, "kernel_l2", 0);
    if (l2 < 0) return tkl_error(L, "option 'kernel_l2' must be non-negative");
    tkl_block *u = new_block_ud(L);
    tk_block *b = tk_dense_new(name, in, (int64_t)units, (tk_activation)act, use_bias, kinit, binit, seed);
    if (b && l2 > 0) tk_dense_set_kernel_l2(b, (float)l2);
    return finish(L, u, b);
}

static int l_activation(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    int act = tkl_opt_activation(L, 2, "activation", TK_ACT_LINEAR);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_activation_block_new(name, (tk_activation)act));
}

static int l_l2norm_block(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_l2norm_block_new(name));
}

static int l_dropout_block(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    double rate = luaL_checknumber(L, 2);
    if (!(rate >= 0 && rate < 1))
        return tkl_error(L, "bad argument #2 to 'dropout' (rate must be in [0, 1), got %g)", rate);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_dropout_block_new(name, (float)rate));
}

/* batch_norm(name, {dim =, momentum =, epsilon =}) */
static int l_batch_norm(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    int64_t dim = tkl_field_int(L, 2, "dim", 0);
    double momentum = tkl_field_number(L, 2, "momentum", 0.99);
    double eps = tkl_field_number(L, 2, "epsilon", 1e-3);
    /* as the core: 1 keeps the running statistics fixed */
    if (!(momentum >= 0 && momentum <= 1)) return tkl_error(L, "option 'momentum' must be in [0, 1], got %g", momentum);
    if (!(eps > 0)) return tkl_error(L, "option 'epsilon' must be positive");
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_batch_norm_block_new(name, dim, (float)momentum, (float)eps));
}

/* Reads a list of strings at idx into a malloc'd array (on the Lua stack as a
 * userdata so an error cannot leak it). */
static const char **string_list(lua_State *L, int idx, int *n_out, const char *what) {
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)lua_objlen(L, idx);
    const char **names = (const char **)lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *names);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) tkl_error(L, "%s: entry %d is not a string", what, i + 1);
        names[i] = lua_tostring(L, -1); /* kept alive by the list table */
        lua_pop(L, 1);
    }
    *n_out = n;
    return names;
}

/* filter(name, {names...}, exclude) */
static int l_filter(lua_State *L) {
    lua_settop(L, 3); /* string_list pushes onto the stack */
    const char *name = luaL_checkstring(L, 1);
    int n;
    const char **names = string_list(L, 2, &n, "filter");
    bool exclude = lua_toboolean(L, 3);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_filter_block_new(name, n, names, exclude));
}

static int l_as_tabular(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *out = luaL_checkstring(L, 2);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_as_tabular_block_new(name, out));
}

static int l_aggregation_block(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    int agg = check_aggregation(L, luaL_checkstring(L, 2), 2);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_aggregation_block_new(name, (tk_aggregation)agg));
}

static int l_embeddings(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    double l2 = luaL_optnumber(L, 2, 0);
    if (l2 < 0) return tkl_error(L, "bad argument #2 to 'embeddings' (l2 must be non-negative)");
    tkl_block *u = new_block_ud(L);
    tk_block *b = tk_embeddings_new(name);
    if (b && l2 > 0) tk_embeddings_set_l2(b, (float)l2);
    return finish(L, u, b);
}

/* emb:add_feature(feature, {table =, cardinality =, dim =, combiner =, initializer =, seed =}) */
static int l_add_feature(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    const char *feature = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    const char *table = tkl_field_string(L, 3, "table", feature);
    int64_t card = tkl_field_int(L, 3, "cardinality", 0);
    int64_t dim = tkl_field_int(L, 3, "dim", 0);
    if (card < 1) return tkl_error(L, "feature '%s': option 'cardinality' must be a positive integer", feature);
    if (dim < 1) return tkl_error(L, "feature '%s': option 'dim' must be a positive integer", feature);
    const char *cname = tkl_field_string(L, 3, "combiner", "mean");
    int comb = tk_combiner_from_name(cname);
    if (comb < 0) return tkl_error(L, "feature '%s': unknown combiner '%s'; known: sum, mean, sqrtn", feature, cname);
    tk_init def = { .kind = TK_INIT_TRUNCATED_NORMAL, .a = 0.05f, .b = 0 };
    tk_init init = tkl_field_init(L, 3, "initializer", def);
    uint64_t seed = (uint64_t)tkl_field_int(L, 3, "seed", 0);
    if (strcmp(tk_block_kind_name(b), "embeddings") != 0)
        return tkl_error(L, "add_feature: block '%s' is not an embeddings block", tk_block_name(b));
    if (tk_embeddings_add_feature(b, feature, table, card, dim, (tk_combiner)comb, init, seed) != TK_OK)
        return tkl_error(L, "%s", tk_last_error());
    lua_settop(L, 1);
    return 1;
}

/* emb:set_row_part(part, parts): the tables added from now on hold their rows of part
 * `part` of `parts` only (tk_embeddings_set_row_part) */
static int l_set_row_part(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    int64_t part = tkl_check_int(L, 2, "part"), parts = tkl_check_int(L, 3, "parts");
    if (strcmp(tk_block_kind_name(b), "embeddings") != 0)
        return tkl_error(L, "set_row_part: block '%s' is not an embeddings block", tk_block_name(b));
    if (parts < 1 || parts > INT32_MAX || part < 0 || part >= parts)
        return tkl_error(L, "set_row_part: part %lld of %lld: need 0 <= part < parts", (long long)part,
                         (long long)parts);
    if (tk_embeddings_set_row_part(b, (int32_t)part, (int32_t)parts) != TK_OK)
        return tkl_error(L, "%s", tk_last_error());
    lua_settop(L, 1);
    return 1;
}

/* emb:add_continuous(feature) */
static int l_add_continuous(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    const char *feature = luaL_checkstring(L, 2);
    if (strcmp(tk_block_kind_name(b), "embeddings") != 0)
        return tkl_error(L, "add_continuous: block '%s' is not an embeddings block", tk_block_name(b));
    if (tk_embeddings_add_continuous(b, feature) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    lua_settop(L, 1);
    return 1;
}

/* sequential(name, {blocks...}) */
static int l_sequential(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_objlen(L, 2);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        if (!luaL_testudata(L, -1, TKL_BLOCK))
            return tkl_error(L, "bad argument #2 to 'sequential' (entry %d is not a block)", i);
        lua_pop(L, 1);
    }
    tkl_block *u = new_block_ud(L);
    tk_block *seq = tk_sequential_new(name);
    if (!seq) return tkl_error(L, "%s", tk_last_error());
    u->b = seq;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        tk_block *c = tkl_check_block(L, -1);
        lua_pop(L, 1);
        if (tk_sequential_append(seq, c) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    }
    return 1;
}

/* parallel(name, {names...}, {blocks...} [, aggregation]) */
static int l_parallel(lua_State *L) {
    lua_settop(L, 4); /* string_list pushes onto the stack */
    const char *name = luaL_checkstring(L, 1);
    int n;
    const char **names = string_list(L, 2, &n, "parallel");
    luaL_checktype(L, 3, LUA_TTABLE);
    if ((int)lua_objlen(L, 3) != n) return tkl_error(L, "parallel: %d names for %d branches", n, (int)lua_objlen(L, 3));
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, i);
        if (!luaL_testudata(L, -1, TKL_BLOCK))
            return tkl_error(L, "bad argument #3 to 'parallel' (branch %d is not a block)", i);
        lua_pop(L, 1);
    }
    int agg = check_aggregation(L, luaL_optstring(L, 4, NULL), 4);
    tkl_block *u = new_block_ud(L);
    tk_block *par = tk_parallel_new(name);
    if (!par) return tkl_error(L, "%s", tk_last_error());
    u->b = par;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, i);
        tk_block *c = tkl_check_block(L, -1);
        lua_pop(L, 1);
        if (tk_parallel_add(par, names[i - 1], c) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    }
    tk_block_set_aggregation(par, (tk_aggregation)agg);
    return 1;
}

/* residual(name, block [, activation]) */
static int l_residual(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    tk_block *inner = tkl_check_block(L, 2);
    int act = tkl_opt_activation(L, 3, "residual", TK_ACT_LINEAR);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_residual_new(name, inner, (tk_activation)act));
}

/* shortcut(name, block, filter_or_nil, block_outputs_name_or_nil, aggregation_or_nil) */
static int l_shortcut(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    tk_block *inner = tkl_check_block(L, 2);
    tk_block *filter = lua_isnoneornil(L, 3) ? NULL : tkl_check_block(L, 3);
    const char *outname = luaL_optstring(L, 4, NULL);
    /* false: no aggregation (Merlin's aggregation=None), the outputs stay named */
    int agg = lua_type(L, 5) == LUA_TBOOLEAN && !lua_toboolean(L, 5)
                  ? TK_AGG_NONE
                  : check_aggregation(L, luaL_optstring(L, 5, "concat"), 5);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_shortcut_new(name, inner, filter, outname, (tk_aggregation)agg));
}

/* --- blocks written in Lua --- */

/* What a Lua callback needs to run: the state it belongs to and the function. The
 * binding's forward records the calling state and context for the callback. */
typedef struct lua_fn_block {
    const void *registry; /* identifies the owning Lua state (shared by its threads) */
    lua_State *owner;     /* a thread of that state anchored for its life, to unref */
    int ref;              /* registry ref of the function */
} lua_fn_block;

typedef struct call_frame {
    lua_State *L;
    int ctx_idx;
    struct call_frame *up;
} call_frame;

static _Thread_local call_frame *current_frame;
static const char OWNER_KEY = 'o'; /* registry[&OWNER_KEY] = the thread that opened us */
/* registry[&CALLBACK_KEY] = callback_protected, registry[&FORWARD_KEY] = forward_protected:
 * pushed from the registry (no allocation) where a Lua error must not be raised. */
static const char CALLBACK_KEY = 'c', FORWARD_KEY = 'f';

static const void *state_id(lua_State *L) { return lua_topointer(L, LUA_REGISTRYINDEX); }

static void free_lua_fn(void *ud) {
    lua_fn_block *f = ud;
    /* A Lua block must not outlive its state (it is released by the state's GC or
     * lua_close); the anchored owner thread is then still valid. */
    if (f->owner && f->ref != LUA_NOREF) luaL_unref(f->owner, LUA_REGISTRYINDEX, f->ref);
    free(f);
}

/* Protected part of a callback: call fn(input) and convert its result. */
typedef struct callback_call {
    tk_ctx *ctx;
    tk_value *in;
    int ref;
    tk_value *out;
    const char *err;
} callback_call;

static int callback_protected(lua_State *L) {
    callback_call *c = (callback_call *)lua_touserdata(L, 1); /* 2: the Context */
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    tkl_push_value(L, 2, c->in);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        c->err = "returned nil; a block must return a tensor or a table of tensors";
        return 0;
    }
    c->out = tkl_to_value(L, -1, c->ctx, &c->err);
    return 0;
}

static tk_value *lua_block_forward(void *ud, tk_ctx *ctx, tk_value *in) {
    lua_fn_block *f = ud;
    call_frame *fr = current_frame;
    if (!fr || state_id(fr->L) != f->registry)
        return tk_ctx_fail(ctx, "a block written in Lua runs only in the Lua state that created it");
    lua_State *L = fr->L;
    callback_call c = { ctx, in, f->ref, NULL, NULL };
    int top = lua_gettop(L);
    /* The function gets tensors of the caller's context, so the ops it runs on them
     * record on the caller's tape. Errors are caught here: no longjmp crosses C. The
     * three pushes allocate nothing and fit in the slots forward_protected (the C
     * function running now) is guaranteed. */
    lua_pushlightuserdata(L, (void *)&CALLBACK_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &c);
    lua_pushvalue(L, fr->ctx_idx);
    int rc = lua_pcall(L, 2, 0, 0);
    if (rc != 0) {
        /* a string error as it is (converting a number could raise) */
        tk_ctx_fail(ctx, "%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error in Lua block");
        lua_settop(L, top);
        return NULL;
    }
    lua_settop(L, top);
    if (!c.out) return tk_ctx_fail(ctx, "%s", c.err ? c.err : "Lua block failed");
    return c.out;
}

/* lua_block(name, fn) */
static int l_lua_block(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    tkl_block *u = new_block_ud(L);
    lua_fn_block *f = malloc(sizeof *f);
    if (!f) return tkl_error(L, "out of memory");
    f->registry = state_id(L);
    lua_pushlightuserdata(L, (void *)&OWNER_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    f->owner = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (!f->owner) f->owner = L;
    lua_pushvalue(L, 2);
    f->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    tk_block *b = tk_callback_block_new(name, lua_block_forward, f, free_lua_fn);
    if (!b) {
        free_lua_fn(f);
        return tkl_error(L, "%s", tk_last_error());
    }
    u->b = b;
    return 1;
}

/* --- forward --- */

typedef struct forward_call {
    tk_block *b;
    tk_ctx *ctx;
    tk_value *in;
} forward_call;

/* forward_protected(forward_call, context): the forward pass with the frame Lua blocks
 * run in (the context at index 2 of this function's stack). */
static int forward_protected(lua_State *L) {
    forward_call *fc = (forward_call *)lua_touserdata(L, 1);
    call_frame fr = { L, 2, current_frame };
    current_frame = &fr;
    tk_value *out = tk_block_forward(fc->ctx, fc->b, fc->in);
    current_frame = fr.up;
    if (!out) return tkl_push_result(L, 2, NULL);
    tkl_push_value(L, 2, out);
    return 1;
}

/* block:forward(input [, ctx]) and block(input [, ctx]): runs in ctx (default: the
 * current context) and returns a tensor or a table of tensors of that context. */
static int l_forward(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    if (lua_isnoneornil(L, 2))
        return tkl_error(L, "bad argument #2 to 'forward' (a tensor or a table of tensors expected)");
    int ctx_idx;
    if (!lua_isnoneornil(L, 3)) {
        tkl_check_context(L, 3);
        ctx_idx = 3;
    } else {
        /* the context of an arena input, else the current one */
        int idx[1] = { 2 };
        if (luaL_testudata(L, 2, TKL_TENSOR))
            tkl_op_context(L, 1, idx);
        else
            tkl_push_current_context(L);
        ctx_idx = lua_gettop(L);
    }
    tk_ctx *ctx = tkl_check_context(L, ctx_idx)->ctx;
    const char *err = NULL;
    tk_value *in = tkl_to_value(L, 2, ctx, &err);
    if (!in) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s: %s", tk_block_name(b), err ? err : "bad input");
        tk_ctx_clear_error(ctx);
        return tkl_error(L, "%s", msg);
    }
    /* The forward runs in protected mode so current_frame is restored on every path,
     * whatever raises inside it. */
    forward_call fc = { b, ctx, in };
    call_frame *saved = current_frame;
    lua_pushlightuserdata(L, (void *)&FORWARD_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &fc);
    lua_pushvalue(L, ctx_idx);
    int rc = lua_pcall(L, 2, 1, 0);
    current_frame = saved;
    if (rc != 0) return lua_error(L);
    return 1;
}

static int l_call(lua_State *L) { return l_forward(L); }

/* --- trace (summary) --- */

typedef struct trace_state {
    lua_State *L;
    int list_ref; /* registry ref: stack indices differ inside the nested forward call */
    int n;
    bool failed; /* an entry could not be recorded (out of memory) */
} trace_state;

typedef struct trace_entry {
    trace_state *s;
    int depth;
    const tk_block *b;
    const tk_value *out;
} trace_entry;

/* Records one entry; runs under lua_cpcall, so a Lua error (out of memory) never
 * unwinds through the forward pass that called trace_fn. */
static int trace_protected(lua_State *L) {
    const trace_entry *e = (const trace_entry *)lua_touserdata(L, 1);
    trace_state *s = e->s;
    int depth = e->depth;
    const tk_block *b = e->b;
    const tk_value *out = e->out;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->list_ref);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, depth);
    lua_setfield(L, -2, "depth");
    lua_pushstring(L, tk_block_name(b));
    lua_setfield(L, -2, "name");
    lua_pushstring(L, tk_block_kind_name(b));
    lua_setfield(L, -2, "kind");
    lua_pushnumber(L, (lua_Number)tk_block_count_params(b));
    lua_setfield(L, -2, "params");
    char buf[96];
    if (!tk_value_is_tabular(out)) {
        lua_pushstring(L, tk_shape_str(tk_value_tensor(out), buf, sizeof buf));
    } else {
        lua_newtable(L);
        for (int32_t i = 0; i < out->n; i++) {
            lua_pushstring(L, tk_shape_str(out->tensors[i], buf, sizeof buf));
            lua_setfield(L, -2, out->names[i]);
        }
    }
    lua_setfield(L, -2, "shape");
    lua_rawseti(L, -2, ++s->n);
    lua_pop(L, 1);
    return 0;
}

static void trace_fn(void *ud, int depth, const tk_block *b, const tk_value *out) {
    trace_state *s = ud;
    trace_entry e = { s, depth, b, out };
    if (lua_cpcall(s->L, trace_protected, &e) != 0) {
        lua_pop(s->L, 1);
        s->failed = true;
    }
}

/* block:trace(input [, ctx]) -> output, {{depth, name, kind, params, shape}, ...} in
 * the order blocks finished. */
static int l_trace(lua_State *L) {
    tkl_check_block(L, 1);
    lua_settop(L, 3);
    if (lua_isnil(L, 3)) {
        tkl_push_current_context(L);
        lua_replace(L, 3);
    }
    tk_ctx *ctx = tkl_check_context(L, 3)->ctx;
    lua_newtable(L);
    int list_idx = lua_gettop(L);
    lua_pushvalue(L, list_idx);
    trace_state s = { L, luaL_ref(L, LUA_REGISTRYINDEX), 0, false };
    tk_ctx_set_trace(ctx, trace_fn, &s);
    lua_pushcfunction(L, l_forward);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    int rc = lua_pcall(L, 3, 1, 0);
    tk_ctx_set_trace(ctx, NULL, NULL);
    luaL_unref(L, LUA_REGISTRYINDEX, s.list_ref);
    if (rc != 0) return lua_error(L);
    if (s.failed) return tkl_error(L, "trace: out of memory while recording the blocks");
    lua_pushvalue(L, list_idx);
    return 2;
}

/* --- inspection and structure --- */

static int l_name(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    if (lua_gettop(L) >= 2) {
        const char *name = luaL_checkstring(L, 2);
        if (tk_block_set_name(b, name) != TK_OK) return tkl_error(L, "%s", tk_last_error());
        lua_settop(L, 1);
        return 1;
    }
    lua_pushstring(L, tk_block_name(b));
    return 1;
}

static int l_kind(lua_State *L) {
    lua_pushstring(L, tk_block_kind_name(tkl_check_block(L, 1)));
    return 1;
}

/* block:children() -> { {name = , block = }, ... } */
static int l_children(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    int32_t n = tk_block_num_children(b);
    lua_createtable(L, n, 0);
    for (int32_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        tk_block_retain(tk_block_child(b, i));
        tkl_push_block(L, tk_block_child(b, i));
        lua_setfield(L, -2, "block");
        lua_pushstring(L, tk_block_child_name(b, i));
        lua_setfield(L, -2, "name");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* The parameters are collected in two passes that never call Lua (a Lua error must not
 * unwind through tk_block_visit_params, which may own memory): the first counts them
 * and their path lengths, the second fills a buffer held by a userdata. Lua tables are
 * built from the buffer afterwards. */
typedef struct param_entry {
    const char *path; /* in the buffer, after the entries */
    tk_tensor *param; /* borrowed: the block (argument 1) holds it */
    bool trainable;
} param_entry;

typedef struct visit_state {
    bool trainable_only;
    int64_t n;
    size_t path_bytes;
    param_entry *entries; /* second pass: n entries, then the paths */
    char *paths;
} visit_state;

static int visit_count(void *ud, const char *path, tk_tensor *param, bool trainable) {
    visit_state *s = ud;
    if (s->trainable_only && !trainable) return 0;
    s->n++;
    s->path_bytes += strlen(path) + 1;
    return 0;
}

static int visit_fill(void *ud, const char *path, tk_tensor *param, bool trainable) {
    visit_state *s = ud;
    if (s->trainable_only && !trainable) return 0;
    size_t len = strlen(path) + 1;
    memcpy(s->paths, path, len);
    s->entries[s->n] = (param_entry){ s->paths, param, trainable };
    s->paths += len;
    s->n++;
    return 0;
}

/* block:parameters([skip_root [, trainable_only [, shards]]]) -> { {path, tensor, trainable=}, ... }
 * A row-sharded table (this rank's rows only) is an error unless shards is true (the
 * optimizer's step, which updates the shards). */
static int l_parameters(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    bool skip_root = lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2);
    visit_state s = { lua_toboolean(L, 3), 0, 0, NULL, NULL };
    tk_block_visit_params(b, skip_root, visit_count, &s);
    int64_t n = s.n;
    param_entry *entries = (param_entry *)lua_newuserdata(L, (size_t)n * sizeof *entries + s.path_bytes + 1);
    s.entries = entries;
    s.paths = (char *)(entries + n);
    s.n = 0;
    tk_block_visit_params(b, skip_root, visit_fill, &s);
    if (s.n != n) return tkl_error(L, "parameters: the block changed while it was visited");
    for (int64_t i = 0; i < n && !lua_toboolean(L, 4); i++)
        if (entries[i].param->flags & TK_TENSOR_ROW_SHARD)
            return tkl_error(L,
                             "parameters: table '%s' is row-sharded over the ranks (this rank holds %lld of its rows); "
                             "call model:gather_tables() on every rank first",
                             entries[i].path, (long long)entries[i].param->shape[0]);
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_createtable(L, 2, 1);
        lua_pushstring(L, entries[i].path);
        lua_rawseti(L, -2, 1);
        tkl_push_heap(L, NULL); /* the userdata first: a reference is never left unowned */
        ((tkl_tensor *)lua_touserdata(L, -1))->t = entries[i].param;
        tk_tensor_retain(entries[i].param);
        lua_rawseti(L, -2, 2);
        lua_pushboolean(L, entries[i].trainable);
        lua_setfield(L, -2, "trainable");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int l_count_params(lua_State *L) {
    lua_pushnumber(L, (lua_Number)tk_block_count_params(tkl_check_block(L, 1)));
    return 1;
}

/* block:param(name) -> own parameter tensor or nil */
static int l_param(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    tk_tensor *t = tk_block_param(b, luaL_checkstring(L, 2));
    if (!t) {
        lua_pushnil(L);
        return 1;
    }
    tk_tensor_retain(t);
    tkl_push_heap(L, t);
    return 1;
}

static int l_copy(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    uint64_t seed = tkl_opt_seed(L, 2, "the seed", 0);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_block_copy(b, seed));
}

static int l_clone(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_block_clone(b));
}

static int l_config_json(lua_State *L) {
    char *s = tk_block_config_json(tkl_check_block(L, 1));
    if (!s) return tkl_error(L, "%s", tk_last_error());
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int l_from_config_json(lua_State *L) {
    const char *json = luaL_checkstring(L, 1);
    uint64_t seed = tkl_opt_seed(L, 2, "the seed", 0);
    tkl_block *u = new_block_ud(L);
    return finish(L, u, tk_block_from_config_json(json, seed));
}

static int l_set_pre(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    if (tk_block_set_pre(b, lua_isnoneornil(L, 2) ? NULL : tkl_check_block(L, 2)) != TK_OK)
        return tkl_error(L, "%s", tk_last_error());
    lua_settop(L, 1);
    return 1;
}

static int l_set_post(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    if (tk_block_set_post(b, lua_isnoneornil(L, 2) ? NULL : tkl_check_block(L, 2)) != TK_OK)
        return tkl_error(L, "%s", tk_last_error());
    lua_settop(L, 1);
    return 1;
}

static int push_optional_block(lua_State *L, tk_block *b) {
    if (!b) {
        lua_pushnil(L);
        return 1;
    }
    tk_block_retain(b);
    tkl_push_block(L, b);
    return 1;
}

static int l_get_pre(lua_State *L) { return push_optional_block(L, tk_block_pre(tkl_check_block(L, 1))); }
static int l_get_post(lua_State *L) { return push_optional_block(L, tk_block_post(tkl_check_block(L, 1))); }

static int l_set_aggregation(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    int agg = lua_isnoneornil(L, 2) ? TK_AGG_NONE : check_aggregation(L, luaL_checkstring(L, 2), 2);
    tk_block_set_aggregation(b, (tk_aggregation)agg);
    lua_settop(L, 1);
    return 1;
}

static int l_get_aggregation(lua_State *L) {
    tk_aggregation agg = tk_block_aggregation(tkl_check_block(L, 1));
    if (agg == TK_AGG_NONE)
        lua_pushnil(L);
    else
        lua_pushstring(L, tk_aggregation_name(agg));
    return 1;
}

/* block:meta() -> the meta JSON text or nil; block:set_meta(text_or_nil) */
static int l_meta(lua_State *L) {
    const char *meta = tk_block_meta(tkl_check_block(L, 1));
    if (meta)
        lua_pushstring(L, meta);
    else
        lua_pushnil(L);
    return 1;
}

static int l_set_meta(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    const char *text = luaL_optstring(L, 2, NULL);
    if (tk_block_set_meta(b, text) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    lua_settop(L, 1);
    return 1;
}

/* block:id() -> a light userdata naming the C block (equal for every handle) */
static int l_id(lua_State *L) {
    lua_pushlightuserdata(L, tkl_check_block(L, 1));
    return 1;
}

static int l_find(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    return push_optional_block(L, tk_block_find(b, luaL_checkstring(L, 2)));
}

static int l_is_built(lua_State *L) {
    lua_pushboolean(L, tk_block_is_built(tkl_check_block(L, 1)));
    return 1;
}

static int l_eq(lua_State *L) {
    tkl_block *a = (tkl_block *)luaL_testudata(L, 1, TKL_BLOCK), *b = (tkl_block *)luaL_testudata(L, 2, TKL_BLOCK);
    lua_pushboolean(L, a && b && a->b == b->b);
    return 1;
}

static int l_same(lua_State *L) {
    lua_pushboolean(L, tkl_check_block(L, 1) == tkl_check_block(L, 2));
    return 1;
}

static int l_tostring(lua_State *L) {
    tkl_block *u = tkl_check_block_ud(L, 1);
    if (!u->b)
        lua_pushstring(L, "block (freed)");
    else
        lua_pushfstring(L, "%s block '%s' (%f parameters)", tk_block_kind_name(u->b), tk_block_name(u->b),
                        (double)tk_block_count_params(u->b));
    return 1;
}

static int l_is_block(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, TKL_BLOCK) != NULL);
    return 1;
}

static int l_names(lua_State *L) {
    const char *which = luaL_checkstring(L, 1);
    if (!strcmp(which, "activation"))
        lua_pushstring(L, tk_activation_names());
    else if (!strcmp(which, "aggregation"))
        lua_pushstring(L, tk_aggregation_names());
    else if (!strcmp(which, "initializer"))
        lua_pushstring(L, tk_init_names());
    else
        return tkl_error(L, "bad argument #1 to 'names' (expected 'activation', 'aggregation' or 'initializer')");
    return 1;
}

static const luaL_Reg block_methods[] = { { "forward", l_forward },
                                          { "trace", l_trace },
                                          { "name", l_name },
                                          { "kind", l_kind },
                                          { "children", l_children },
                                          { "parameters", l_parameters },
                                          { "count_params", l_count_params },
                                          { "param", l_param },
                                          { "copy", l_copy },
                                          { "clone", l_clone },
                                          { "config_json", l_config_json },
                                          { "set_pre", l_set_pre },
                                          { "set_post", l_set_post },
                                          { "pre", l_get_pre },
                                          { "post", l_get_post },
                                          { "set_aggregation", l_set_aggregation },
                                          { "aggregation", l_get_aggregation },
                                          { "find", l_find },
                                          { "is_built", l_is_built },
                                          { "same", l_same },
                                          { "add_feature", l_add_feature },
                                          { "add_continuous", l_add_continuous },
                                          { "set_row_part", l_set_row_part },
                                          { "meta_json", l_meta },
                                          { "set_meta_json", l_set_meta },
                                          { "id", l_id },
                                          { NULL, NULL } };

static const luaL_Reg block_functions[] = { { "dense", l_dense },
                                            { "activation", l_activation },
                                            { "l2norm_block", l_l2norm_block },
                                            { "dropout_block", l_dropout_block },
                                            { "batch_norm", l_batch_norm },
                                            { "filter", l_filter },
                                            { "as_tabular", l_as_tabular },
                                            { "aggregation", l_aggregation_block },
                                            { "embeddings", l_embeddings },
                                            { "sequential", l_sequential },
                                            { "parallel", l_parallel },
                                            { "residual", l_residual },
                                            { "shortcut", l_shortcut },
                                            { "lua_block", l_lua_block },
                                            { "from_config_json", l_from_config_json },
                                            { "is_block", l_is_block },
                                            { "names", l_names },
                                            { NULL, NULL } };

void tkl_open_block(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&OWNER_KEY);
    lua_pushthread(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&CALLBACK_KEY);
    lua_pushcfunction(L, callback_protected);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&FORWARD_KEY);
    lua_pushcfunction(L, forward_protected);
    lua_rawset(L, LUA_REGISTRYINDEX);
    luaL_newmetatable(L, TKL_BLOCK);
    lua_pushcfunction(L, l_block_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_call);
    lua_setfield(L, -2, "__call");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, l_eq);
    lua_setfield(L, -2, "__eq");
    lua_newtable(L);
    luaL_register(L, NULL, block_methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "Block"); /* module.Block = methods, extended in Lua */
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_register(L, NULL, block_functions);
}
