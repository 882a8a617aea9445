/* Retrieval from Lua: the fused two-tower loss, the streaming frequency estimator and
 * exact top-k. */
#include "binding.h"

#include <math.h>
#include <string.h>

#define TKL_FREQ "towerkit.FreqEstimator"
#define TKL_TRAINER "towerkit.TwoTowerTrainer"

/* An optional tensor field of the options table at idx. */
static tk_tensor *opt_tensor(lua_State *L, int idx, const char *key) {
    lua_getfield(L, idx, key);
    tk_tensor *t = NULL;
    if (!lua_isnil(L, -1)) {
        t = tkl_to_tensor(L, -1);
        if (!t) tkl_error(L, "retrieval_loss: option '%s' must be a tensor", key);
    }
    lua_pop(L, 1); /* the tensor stays referenced by the options table */
    return t;
}

/* The loss options from the table at idx (or nil). */
static tk_retrieval_opts loss_opts(lua_State *L, int idx) {
    tk_retrieval_opts o;
    memset(&o, 0, sizeof o);
    if (lua_istable(L, idx)) {
        o.temperature = (float)tkl_field_number(L, idx, "temperature", 1.0);
        o.num_hard_negatives = (int32_t)tkl_field_int(L, idx, "num_hard_negatives", 0);
        o.item_ids = opt_tensor(L, idx, "item_ids");
        o.item_logq = opt_tensor(L, idx, "item_logq");
        o.negatives = opt_tensor(L, idx, "negatives");
        o.negative_ids = opt_tensor(L, idx, "negative_ids");
        o.negative_logq = opt_tensor(L, idx, "negative_logq");
        o.weights = opt_tensor(L, idx, "weights");
        o.row_offset = tkl_field_int(L, idx, "row_offset", 0);
    }
    return o;
}

/* retrieval_loss(query, item [, {temperature =, item_ids =, item_logq =, negatives =,
 * negative_ids =, negative_logq =, weights =, num_hard_negatives =, row_offset =}])
 * -> loss [1] */
static int l_retrieval_loss(lua_State *L) {
    tkl_check_tensor(L, 1);
    tkl_check_tensor(L, 2);
    lua_settop(L, 3);
    if (!lua_isnil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    tk_retrieval_opts o = loss_opts(L, 3);
    /* the op runs in the context of its arena inputs */
    int idx[3] = { 1, 2, 0 };
    int n = 2;
    if (o.negatives) {
        lua_getfield(L, 3, "negatives");
        idx[n++] = lua_gettop(L);
    }
    tk_ctx *ctx = tkl_op_context(L, n, idx);
    int ci = lua_gettop(L);
    return tkl_push_result(L, ci, tk_retrieval_loss(ctx, tkl_check_tensor(L, 1), tkl_check_tensor(L, 2), &o));
}

/* --- frequency estimator --- */

typedef struct tkl_freq {
    tk_freq_estimator *e;
} tkl_freq;

static tkl_freq *check_freq(lua_State *L) {
    tkl_freq *u = (tkl_freq *)luaL_checkudata(L, 1, TKL_FREQ);
    if (!u->e) tkl_error(L, "frequency estimator has been freed");
    return u;
}

static int freq_gc(lua_State *L) {
    tkl_freq *u = (tkl_freq *)luaL_checkudata(L, 1, TKL_FREQ);
    tk_freq_estimator_free(u->e);
    u->e = NULL;
    return 0;
}

/* freq_estimator(buckets, alpha) */
static int l_freq_estimator(lua_State *L) {
    int64_t buckets = tkl_check_int(L, 1, "buckets");
    double alpha = luaL_checknumber(L, 2);
    tkl_freq *u = (tkl_freq *)lua_newuserdata(L, sizeof *u);
    u->e = NULL;
    luaL_getmetatable(L, TKL_FREQ);
    lua_setmetatable(L, -2);
    u->e = tk_freq_estimator_new(buckets, (float)alpha);
    if (!u->e) return tkl_error(L, "%s", tk_last_error());
    return 1;
}

static tk_tensor *ids_arg(lua_State *L, int idx) {
    tk_tensor *ids = tkl_check_tensor(L, idx);
    if (ids->dtype != TK_I64) tkl_error(L, "bad argument #%d (int64 ids expected)", idx);
    return ids;
}

/* est:update(ids) -> log p of each id (float32, as estimated before this step) */
static int freq_update(lua_State *L) {
    tkl_freq *u = check_freq(L);
    tk_tensor *ids = ids_arg(L, 2);
    tk_tensor *out = tk_tensor_new_1d(TK_F32, ids->numel);
    if (!out) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, out);
    if (tk_freq_estimator_update(u->e, ids->numel, tk_i64(ids), tk_f32(out)) != TK_OK)
        return tkl_error(L, "%s", tk_last_error());
    return 1;
}

static int freq_logq(lua_State *L) {
    tkl_freq *u = check_freq(L);
    tk_tensor *ids = ids_arg(L, 2);
    tk_tensor *out = tk_tensor_new_1d(TK_F32, ids->numel);
    if (!out) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, out);
    tk_freq_estimator_logq(u->e, ids->numel, tk_i64(ids), tk_f32(out));
    return 1;
}

static int freq_step(lua_State *L) {
    lua_pushnumber(L, (lua_Number)tk_freq_estimator_step(check_freq(L)->e));
    return 1;
}

/* --- top-k --- */

/* topk(queries, items, k [, excl_offsets, excl_items]) -> idx (int64 [Q, k]), scores */
static int l_topk(lua_State *L) {
    tk_tensor *q = tkl_check_tensor(L, 1), *items = tkl_check_tensor(L, 2);
    int64_t kk = tkl_check_int(L, 3, "k");
    if (kk < 1) return tkl_error(L, "bad argument #3 to 'topk' (k must be a positive integer)");
    const int64_t *off = NULL, *excl = NULL;
    if (!lua_isnoneornil(L, 4)) {
        tk_tensor *o = tkl_check_tensor(L, 4), *e = tkl_check_tensor(L, 5);
        if (o->dtype != TK_I64 || e->dtype != TK_I64) return tkl_error(L, "topk: exclusion lists must be int64");
        if (q->ndim == 2 && o->numel != q->shape[0] + 1)
            return tkl_error(L, "topk: exclusion offsets need %lld entries, got %lld", (long long)q->shape[0] + 1,
                             (long long)o->numel);
        for (int64_t i = 0; i < o->numel; i++)
            if (tk_i64(o)[i] < 0 || tk_i64(o)[i] > e->numel || (i && tk_i64(o)[i] < tk_i64(o)[i - 1]))
                return tkl_error(L, "topk: exclusion offsets must increase within the exclusion list");
        off = tk_i64(o);
        excl = tk_i64(e);
    }
    if (q->ndim != 2) return tkl_error(L, "bad argument #1 to 'topk' (queries [Q, D] expected)");
    tk_tensor *idx = tk_tensor_new_2d(TK_I64, q->shape[0], kk);
    if (!idx) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, idx);
    tk_tensor *scores = tk_tensor_new_2d(TK_F32, q->shape[0], kk);
    if (!scores) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, scores);
    if (tk_topk(q, items, kk, off, excl, idx, scores) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 2;
}

/* --- the two-tower trainer: both towers side by side (tk_two_tower_trainer) --- */

typedef struct tkl_trainer {
    tk_two_tower_trainer *t;
} tkl_trainer;

/* two_tower_trainer(query_tower, item_tower, post | nil, optim [, seed]) -> trainer.
 * The trainer keeps the optimizer userdata alive (its environment). */
static int l_two_tower_trainer(lua_State *L) {
    tk_block *q = tkl_check_block(L, 1), *it = tkl_check_block(L, 2);
    tk_block *post = lua_isnoneornil(L, 3) ? NULL : tkl_check_block(L, 3);
    tk_optim *opt = tkl_check_optim(L, 4);
    uint64_t seed = tkl_opt_seed(L, 5, "the seed", 1);
    tkl_trainer *u = (tkl_trainer *)lua_newuserdata(L, sizeof *u);
    u->t = NULL;
    luaL_getmetatable(L, TKL_TRAINER);
    lua_setmetatable(L, -2);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 4);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, -2);
    u->t = tk_two_tower_trainer_new(q, it, post, opt, seed);
    if (!u->t) return tkl_error(L, "%s", tk_last_error());
    return 1;
}

static tkl_trainer *check_trainer(lua_State *L) {
    tkl_trainer *u = (tkl_trainer *)luaL_checkudata(L, 1, TKL_TRAINER);
    if (!u->t) tkl_error(L, "bad argument #1 (the trainer has been freed)");
    return u;
}

/* trainer:step(batch [, loss options]) -> loss (a number; not finite: nothing updated) */
static int trainer_step(lua_State *L) {
    tk_two_tower_trainer *t = check_trainer(L)->t;
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 3);
    if (!lua_isnil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    tk_retrieval_opts o = loss_opts(L, 3);
    tk_two_tower_trainer_reset(t);
    tk_value *in[2];
    for (int s = 0; s < 2; s++) {
        const char *err = NULL;
        in[s] = tkl_to_value(L, 2, tk_two_tower_trainer_ctx(t, s), &err);
        if (!in[s]) return tkl_error(L, "two-tower step: bad batch: %s", err ? err : "not a table of tensors");
    }
    float loss;
    if (tk_two_tower_trainer_step(t, in[0], in[1], &o, &loss) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    lua_pushnumber(L, loss);
    return 1;
}

/* trainer:stats() -> {allocations =, arena_bytes =} over its three contexts */
static int trainer_stats(lua_State *L) {
    tk_two_tower_trainer *t = check_trainer(L)->t;
    double allocs = 0, bytes = 0;
    for (int s = 0; s < 3; s++) {
        allocs += (double)tk_ctx_alloc_count(tk_two_tower_trainer_ctx(t, s));
        bytes += (double)tk_ctx_arena_capacity(tk_two_tower_trainer_ctx(t, s));
    }
    lua_createtable(L, 0, 2);
    lua_pushnumber(L, allocs);
    lua_setfield(L, -2, "allocations");
    lua_pushnumber(L, bytes);
    lua_setfield(L, -2, "arena_bytes");
    return 1;
}

static int trainer_gc(lua_State *L) {
    tkl_trainer *u = (tkl_trainer *)luaL_checkudata(L, 1, TKL_TRAINER);
    tk_two_tower_trainer_free(u->t);
    u->t = NULL;
    return 0;
}

/* --- item export (tk_block_embed) and the first row of each id (tk_unique_first) --- */

/* embed_rows(block, post | nil, columns, batch_size) -> float32 [n, D]: columns is a
 * table of name -> heap tensor (a Dataset's columns). */
static int l_embed_rows(lua_State *L) {
    tk_block *block = tkl_check_block(L, 1);
    tk_block *post = lua_isnoneornil(L, 2) ? NULL : tkl_check_block(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    int64_t bs = tkl_check_int(L, 4, "batch_size");
    int32_t n = 0;
    for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) n++;
    const char **names = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *names);
    tk_tensor **cols = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *cols);
    int32_t i = 0;
    for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) { /* strings and tensors stay in the table */
        if (lua_type(L, -2) != LUA_TSTRING || !(cols[i] = tkl_to_tensor(L, -1)))
            return tkl_error(L, "embed_rows: columns must map names to tensors");
        names[i++] = lua_tostring(L, -2);
    }
    tk_tensor *out = tk_block_embed(block, post, n, names, cols, bs);
    if (!out) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, out);
    return 1;
}

/* unique_first(ids) -> int64 [k]: the first row of each distinct id, in order. */
static int l_unique_first(lua_State *L) {
    tk_tensor *out = tk_unique_first(tkl_check_tensor(L, 1));
    if (!out) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, out);
    return 1;
}

static const luaL_Reg trainer_methods[] = { { "step", trainer_step }, { "stats", trainer_stats }, { NULL, NULL } };

static const luaL_Reg freq_methods[] = {
    { "update", freq_update }, { "logq", freq_logq }, { "step", freq_step }, { NULL, NULL }
};

static const luaL_Reg retrieval_functions[] = { { "retrieval_loss", l_retrieval_loss },
                                                { "freq_estimator", l_freq_estimator },
                                                { "topk", l_topk },
                                                { "two_tower_trainer", l_two_tower_trainer },
                                                { "embed_rows", l_embed_rows },
                                                { "unique_first", l_unique_first },
                                                { NULL, NULL } };

void tkl_open_retrieval(lua_State *L) {
    luaL_newmetatable(L, TKL_FREQ);
    lua_pushcfunction(L, freq_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, freq_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, TKL_TRAINER);
    lua_pushcfunction(L, trainer_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, trainer_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_register(L, NULL, retrieval_functions);
}
