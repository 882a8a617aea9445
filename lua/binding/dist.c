/* towerkit.core's dist_* functions: the MPI layer (towerkit_dist.h) for
 * lua/towerkit/distributed.lua. Without MPI in the build they exist too and raise the
 * message of tk_dist_init that says how to get it. */
#include "binding.h"
#include "towerkit_dist.h"

/* dist_available() -> whether this build has MPI */
static int l_available(lua_State *L) {
    lua_pushboolean(L, tk_dist_available());
    return 1;
}

/* dist_init() -> rank, size (starts MPI once) */
static int l_init(lua_State *L) {
    if (tk_dist_init() != TK_OK) return tkl_error(L, "%s", tk_last_error());
    lua_pushinteger(L, tk_dist_rank());
    lua_pushinteger(L, tk_dist_size());
    return 2;
}

static int l_initialized(lua_State *L) {
    lua_pushboolean(L, tk_dist_initialized());
    return 1;
}

static int l_rank(lua_State *L) {
    lua_pushinteger(L, tk_dist_rank());
    return 1;
}

static int l_size(lua_State *L) {
    lua_pushinteger(L, tk_dist_size());
    return 1;
}

static int check(lua_State *L, tk_status st) {
    if (st != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 0;
}

static int l_barrier(lua_State *L) { return check(L, tk_dist_barrier()); }

/* dist_allreduce(x): the sum over ranks, the same bits on every rank. x is a number
 * (-> number), an array of numbers (-> a new array; summed as doubles) or a float32
 * heap tensor (summed in place, returned). */
static int l_allreduce(lua_State *L) {
    if (lua_type(L, 1) == LUA_TNUMBER) {
        double v = lua_tonumber(L, 1);
        check(L, tk_dist_allreduce_f64(&v, 1));
        lua_pushnumber(L, v);
        return 1;
    }
    if (lua_istable(L, 1) && !tkl_to_tensor(L, 1)) {
        int n = (int)lua_objlen(L, 1);
        double *v = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *v);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, 1, i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER) return tkl_error(L, "dist_allreduce: entry %d is not a number", i + 1);
            v[i] = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        check(L, tk_dist_allreduce_f64(v, n));
        lua_createtable(L, n, 0);
        for (int i = 0; i < n; i++) {
            lua_pushnumber(L, v[i]);
            lua_rawseti(L, -2, i + 1);
        }
        return 1;
    }
    tk_tensor *t = tkl_check_tensor(L, 1);
    if (t->dtype == TK_F32)
        check(L, tk_dist_allreduce_f32(tk_f32(t), t->numel));
    else
        return tkl_error(L, "dist_allreduce: a float32 tensor expected, got %s", tk_dtype_name(t->dtype));
    lua_settop(L, 1);
    return 1;
}

/* dist_allgather(t) -> every rank's t (F32 or I64; [n] or [n, D], D equal on every
 * rank) stacked in rank order along the first dimension, a heap tensor; and the counts
 * of rows per rank as a Lua array. */
static int l_allgather(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    if (t->dtype != TK_F32 && t->dtype != TK_I64)
        return tkl_error(L, "dist_allgather: a float32 or int64 tensor expected");
    if (t->ndim < 1 || t->ndim > 2) return tkl_error(L, "dist_allgather: a 1-d or 2-d tensor expected");
    int S = tk_dist_size();
    int64_t width = t->ndim == 2 ? t->shape[1] : 1;
    int64_t *counts = lua_newuserdata(L, (size_t)S * 2 * sizeof *counts);
    check(L, tk_dist_allgather_count(t->shape[0], counts));
    int64_t total = 0;
    for (int i = 0; i < S; i++) {
        counts[S + i] = counts[i] * width;
        total += counts[i];
    }
    int64_t shape[2] = { total, width };
    tk_tensor *out = tk_tensor_new(t->dtype, t->ndim, shape);
    if (!out) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, out);
    check(L, tk_dist_allgatherv(t->data, t->dtype, out->data, counts + S));
    lua_createtable(L, S, 0);
    for (int i = 0; i < S; i++) {
        lua_pushinteger(L, (lua_Integer)counts[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 2;
}

/* dist_allgather_rows(x) -> every rank's rows of x stacked in rank order, differentiable
 * (towerkit_dist.h), and this rank's first row in it (0-based) */
static int l_allgather_rows(lua_State *L) {
    tkl_check_tensor(L, 1);
    int idx[1] = { 1 };
    tk_ctx *ctx = tkl_op_context(L, 1, idx);
    int ci = lua_gettop(L);
    int64_t off = 0;
    tk_tensor *out = tk_dist_allgather_rows(ctx, tkl_check_tensor(L, 1), &off);
    if (out == tkl_check_tensor(L, 1)) { /* one process: the input itself */
        lua_pushvalue(L, 1);
    } else {
        tkl_push_result(L, ci, out);
    }
    lua_pushinteger(L, (lua_Integer)off);
    return 2;
}

/* dist_sync_grads(ctx, block): the gradients of block's parameters averaged over ranks */
static int l_sync_grads(lua_State *L) {
    tkl_context *c = tkl_check_context(L, 1);
    tk_block *b = tkl_check_block(L, 2);
    return check(L, tk_dist_sync_grads(c->ctx, b));
}

/* dist_grads_begin(ctx, block [, bucket_bytes [, overlap]]): sets up the gradient
 * exchange of the step whose forward pass ran in ctx (tk_dist_grads_begin); nil
 * arguments take tk_dist_grad_defaults() */
static int l_grads_begin(lua_State *L) {
    tkl_context *c = tkl_check_context(L, 1);
    tk_block *b = tkl_check_block(L, 2);
    tk_dist_grad_opts o = tk_dist_grad_defaults();
    o.bucket_bytes = tkl_opt_int(L, 3, "bucket_bytes", o.bucket_bytes);
    if (!lua_isnoneornil(L, 4)) o.overlap = lua_toboolean(L, 4);
    return check(L, tk_dist_grads_begin(c->ctx, b, &o));
}

/* dist_grad_defaults() -> bucket_bytes, overlap (tk_dist_grad_defaults) */
static int l_grad_defaults(lua_State *L) {
    tk_dist_grad_opts o = tk_dist_grad_defaults();
    lua_pushinteger(L, (lua_Integer)o.bucket_bytes);
    lua_pushboolean(L, o.overlap);
    return 2;
}

/* dist_tables_shard(block): the block's embedding tables row-sharded over the ranks */
static int l_tables_shard(lua_State *L) { return check(L, tk_dist_tables_shard(tkl_check_block(L, 1))); }

/* dist_tables_gather(block): the whole tables back into the blocks (a collective) */
static int l_tables_gather(lua_State *L) { return check(L, tk_dist_tables_gather(tkl_check_block(L, 1))); }

/* dist_tables_sync(ctx, block): the shards' gradients to their owners (a collective) */
static int l_tables_sync(lua_State *L) {
    tkl_context *c = tkl_check_context(L, 1);
    tk_block *b = tkl_check_block(L, 2);
    return check(L, tk_dist_tables_sync(c->ctx, b));
}

/* dist_tables_prefetch(ctx, block, batch): the rows the block's forward on batch reads,
 * fetched for all its towers at once (a collective) */
static int l_tables_prefetch(lua_State *L) {
    tkl_context *c = tkl_check_context(L, 1);
    tk_block *b = tkl_check_block(L, 2);
    const char *err = NULL;
    tk_value *in = tkl_to_value(L, 3, c->ctx, &err);
    if (!in) return tkl_error(L, "dist_tables_prefetch: %s", err ? err : "bad batch");
    return check(L, tk_dist_tables_prefetch(c->ctx, b, in));
}

/* dist_tables_clip_grad_norm(ctx, max_norm) -> the global norm (a collective) */
static int l_tables_clip(lua_State *L) {
    tkl_context *c = tkl_check_context(L, 1);
    double norm = tk_dist_tables_clip_grad_norm(c->ctx, luaL_checknumber(L, 2));
    if (norm < 0) return tkl_error(L, "%s", tk_last_error());
    lua_pushnumber(L, norm);
    return 1;
}

/* dist_table_info(tensor) -> lo, count, rows (0-based) of this rank's shard, or nothing
 * for a tensor that is no sharded table */
static int l_table_info(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    int64_t lo, count, rows;
    if (!tk_dist_table_shard_info(t, &lo, &count, &rows)) return 0;
    lua_pushinteger(L, (lua_Integer)lo);
    lua_pushinteger(L, (lua_Integer)count);
    lua_pushinteger(L, (lua_Integer)rows);
    return 3;
}

/* dist_tables_count() -> the number of sharded tables this process holds */
static int l_tables_count(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)tk_dist_tables_count());
    return 1;
}

static int count_shard(void *ud, const char *path, tk_tensor *param, bool trainable) {
    (void)path;
    (void)trainable;
    if (param->flags & TK_TENSOR_ROW_SHARD) ++*(int64_t *)ud;
    return 0;
}

/* dist_row_shards(block) -> how many of the block's parameters are a rank's rows of a
 * table (built so, or sharded) */
static int l_row_shards(lua_State *L) {
    int64_t n = 0;
    tk_block_visit_params(tkl_check_block(L, 1), false, count_shard, &n);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* dist_shard_range(n [, rank, size [, align]]) -> lo, count: the rows of a catalogue of
 * n items a rank holds, cut at multiples of align (tk_dist_shard_range; rank and size
 * default to this process's, align to tk_topk's item block) */
static int l_shard_range(lua_State *L) {
    int64_t n = tkl_check_int(L, 1, "n");
    int rank = (int)tkl_opt_int(L, 2, "rank", tk_dist_rank());
    int size = (int)tkl_opt_int(L, 3, "size", tk_dist_size());
    int64_t align = tkl_opt_int(L, 4, "align", TK_TOPK_ITEM_BLOCK);
    if (size < 1 || rank < 0 || rank >= size)
        return tkl_error(L, "dist_shard_range: rank %d of size %d is out of range", rank, size);
    if (align < 1) return tkl_error(L, "dist_shard_range: align must be >= 1, got %lld", (long long)align);
    int64_t lo, count;
    tk_dist_shard_range(n, rank, size, align, &lo, &count);
    lua_pushinteger(L, (lua_Integer)lo);
    lua_pushinteger(L, (lua_Integer)count);
    return 2;
}

/* dist_topk_merge(idx, scores, offset) -> global idx, scores (tk_dist_topk_merge) */
static int l_topk_merge(lua_State *L) {
    tk_tensor *idx = tkl_check_tensor(L, 1), *sc = tkl_check_tensor(L, 2);
    int64_t off = tkl_check_int(L, 3, "offset");
    if (idx->ndim != 2) return tkl_error(L, "dist_topk_merge: idx int64 [Q, k] expected");
    tk_tensor *oi = tk_tensor_new_2d(TK_I64, idx->shape[0], idx->shape[1]);
    if (!oi) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, oi);
    tk_tensor *os = tk_tensor_new_2d(TK_F32, idx->shape[0], idx->shape[1]);
    if (!os) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, os);
    check(L, tk_dist_topk_merge(idx, sc, off, oi, os));
    return 2;
}

#define SHARDED_MT "towerkit.ShardedIndexHandle"

static tk_sharded_index **check_index(lua_State *L, int idx) {
    tk_sharded_index **p = luaL_checkudata(L, idx, SHARDED_MT);
    if (!*p) tkl_error(L, "sharded index: already freed");
    return p;
}

static int l_index_gc(lua_State *L) {
    tk_sharded_index **p = luaL_checkudata(L, 1, SHARDED_MT);
    tk_sharded_index_free(*p);
    *p = NULL;
    return 0;
}

/* sharded_index_new(ids, embeddings) -> handle (a collective: tk_sharded_index_new) */
static int l_index_new(lua_State *L) {
    tk_tensor *ids = tkl_check_tensor(L, 1), *emb = tkl_check_tensor(L, 2);
    tk_sharded_index **p = lua_newuserdata(L, sizeof *p);
    *p = NULL;
    luaL_getmetatable(L, SHARDED_MT);
    lua_setmetatable(L, -2);
    *p = tk_sharded_index_new(ids, emb);
    if (!*p) return tkl_error(L, "%s", tk_last_error());
    return 1;
}

/* sharded_index_info(handle) -> size, offset, shard size */
static int l_index_info(lua_State *L) {
    tk_sharded_index *ix = *check_index(L, 1);
    lua_pushinteger(L, (lua_Integer)tk_sharded_index_size(ix));
    lua_pushinteger(L, (lua_Integer)tk_sharded_index_offset(ix));
    lua_pushinteger(L, (lua_Integer)tk_sharded_index_shard_size(ix));
    return 3;
}

/* sharded_index_query(handle, queries, k [, excl_offsets, excl_ids]) -> ids, scores,
 * global indices (a collective: tk_sharded_index_query) */
static int l_index_query(lua_State *L) {
    tk_sharded_index *ix = *check_index(L, 1);
    tk_tensor *q = tkl_check_tensor(L, 2);
    int64_t k = tkl_check_int(L, 3, "k");
    const int64_t *off = NULL, *ex = NULL;
    if (!lua_isnoneornil(L, 4)) {
        tk_tensor *o = tkl_check_tensor(L, 4), *e = tkl_check_tensor(L, 5);
        if (o->dtype != TK_I64 || e->dtype != TK_I64 || o->ndim != 1 || q->ndim != 2 || o->numel != q->shape[0] + 1)
            return tkl_error(L, "sharded_index_query: exclusions: int64 offsets [Q + 1] and int64 ids expected");
        const int64_t *ov = tk_i64(o);
        if (ov[o->numel - 1] > e->numel)
            return tkl_error(L, "sharded_index_query: the exclusion offsets go past the %lld ids", (long long)e->numel);
        off = ov;
        ex = tk_i64(e);
    }
    if (q->ndim != 2 || k < 1) return tkl_error(L, "sharded_index_query: queries [Q, D] and k >= 1 expected");
    tk_tensor *outs[3];
    for (int i = 0; i < 3; i++) {
        outs[i] = tk_tensor_new_2d(i == 1 ? TK_F32 : TK_I64, q->shape[0], k);
        if (!outs[i]) return tkl_error(L, "%s", tk_last_error());
        tkl_push_heap(L, outs[i]);
    }
    check(L, tk_sharded_index_query(ix, q, k, off, ex, outs[0], outs[1], outs[2]));
    return 3;
}

/* sharded_serve_query(handle, queries, k) -> ids, scores: the leader's batch, sent to
 * the followers and queried with them (tk_sharded_serve_query; rank 0 only) */
static int l_serve_query(lua_State *L) {
    tk_sharded_index *ix = *check_index(L, 1);
    tk_tensor *q = tkl_check_tensor(L, 2);
    int64_t k = tkl_check_int(L, 3, "k");
    if (q->ndim != 2 || k < 1) return tkl_error(L, "sharded_serve_query: queries [Q, D] and k >= 1 expected");
    tk_tensor *outs[2];
    for (int i = 0; i < 2; i++) {
        outs[i] = tk_tensor_new_2d(i == 1 ? TK_F32 : TK_I64, q->shape[0], k);
        if (!outs[i]) return tkl_error(L, "%s", tk_last_error());
        tkl_push_heap(L, outs[i]);
    }
    check(L, tk_sharded_serve_query(ix, q, k, NULL, NULL, outs[0], outs[1]));
    return 2;
}

/* sharded_serve_stop(handle): the leader ends the followers' loops (rank 0 only) */
static int l_serve_stop(lua_State *L) { return check(L, tk_sharded_serve_stop(*check_index(L, 1))); }

/* sharded_serve_follow(handle [, poll_seconds = 1e-3]): a follower answers the leader's
 * batches until it stops them (tk_sharded_serve_follow; ranks other than 0) */
static int l_serve_follow(lua_State *L) {
    tk_sharded_index *ix = *check_index(L, 1);
    return check(L, tk_sharded_serve_follow(ix, luaL_optnumber(L, 2, 1e-3)));
}

/* dist_stats() -> {calls =, bytes_sent =, seconds =, buckets =, buckets_overlapped =, dense_seconds =} since the last dist_reset_stats() */
static int l_stats(lua_State *L) {
    tk_dist_stats s;
    tk_dist_get_stats(&s);
    lua_createtable(L, 0, 6);
    lua_pushnumber(L, (lua_Number)s.calls);
    lua_setfield(L, -2, "calls");
    lua_pushnumber(L, (lua_Number)s.bytes_sent);
    lua_setfield(L, -2, "bytes_sent");
    lua_pushnumber(L, s.seconds);
    lua_setfield(L, -2, "seconds");
    lua_pushnumber(L, (lua_Number)s.buckets);
    lua_setfield(L, -2, "buckets");
    lua_pushnumber(L, (lua_Number)s.buckets_overlapped);
    lua_setfield(L, -2, "buckets_overlapped");
    lua_pushnumber(L, s.dense_seconds);
    lua_setfield(L, -2, "dense_seconds");
    return 1;
}

static int l_reset_stats(lua_State *L) {
    (void)L;
    tk_dist_reset_stats();
    return 0;
}

/* dist_abort(msg [, code = 1]): prints "towerkit: rank R of N: msg" and ends every rank */
static int l_abort(lua_State *L) {
    const char *msg = luaL_optstring(L, 1, "failed");
    int code = (int)luaL_optinteger(L, 2, 1);
    fflush(stdout);
    tk_dist_abort(code, msg);
}

static int l_finalize(lua_State *L) { return check(L, tk_dist_finalize()); }

void tkl_open_dist(lua_State *L) {
    static const luaL_Reg fns[] = {
        { "dist_available", l_available },
        { "dist_init", l_init },
        { "dist_initialized", l_initialized },
        { "dist_rank", l_rank },
        { "dist_size", l_size },
        { "dist_barrier", l_barrier },
        { "dist_allreduce", l_allreduce },
        { "dist_allgather", l_allgather },
        { "dist_allgather_rows", l_allgather_rows },
        { "dist_sync_grads", l_sync_grads },
        { "dist_grads_begin", l_grads_begin },
        { "dist_grad_defaults", l_grad_defaults },
        { "dist_stats", l_stats },
        { "dist_reset_stats", l_reset_stats },
        { "dist_abort", l_abort },
        { "dist_finalize", l_finalize },
        { "dist_shard_range", l_shard_range },
        { "dist_tables_shard", l_tables_shard },
        { "dist_tables_gather", l_tables_gather },
        { "dist_tables_sync", l_tables_sync },
        { "dist_table_info", l_table_info },
        { "dist_tables_count", l_tables_count },
        { "dist_row_shards", l_row_shards },
        { "dist_tables_clip_grad_norm", l_tables_clip },
        { "dist_tables_prefetch", l_tables_prefetch },
        { "dist_topk_merge", l_topk_merge },
        { "sharded_index_new", l_index_new },
        { "sharded_index_info", l_index_info },
        { "sharded_index_query", l_index_query },
        { "sharded_serve_query", l_serve_query },
        { "sharded_serve_stop", l_serve_stop },
        { "sharded_serve_follow", l_serve_follow },
        { NULL, NULL },
    };
    luaL_newmetatable(L, SHARDED_MT);
    lua_pushcfunction(L, l_index_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    /* tk_topk's item block: the export's alignment (tk.distributed.export_align) */
    lua_pushinteger(L, TK_TOPK_ITEM_BLOCK);
    lua_setfield(L, -2, "TOPK_ITEM_BLOCK");
}
