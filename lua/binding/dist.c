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

/* dist_stats() -> {calls =, bytes_sent =, seconds =} since the last dist_reset_stats() */
static int l_stats(lua_State *L) {
    tk_dist_stats s;
    tk_dist_get_stats(&s);
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number)s.calls);
    lua_setfield(L, -2, "calls");
    lua_pushnumber(L, (lua_Number)s.bytes_sent);
    lua_setfield(L, -2, "bytes_sent");
    lua_pushnumber(L, s.seconds);
    lua_setfield(L, -2, "seconds");
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
        { "dist_stats", l_stats },
        { "dist_reset_stats", l_reset_stats },
        { "dist_abort", l_abort },
        { "dist_finalize", l_finalize },
        { NULL, NULL },
    };
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
}
