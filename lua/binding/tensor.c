/* towerkit.Tensor: heap and arena tensors in Lua, their ops and their printing. */
#include "binding.h"
#include "towerkit_lua.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

tkl_tensor *tkl_check_tensor_ud(lua_State *L, int idx) { return (tkl_tensor *)luaL_checkudata(L, idx, TKL_TENSOR); }

static tk_tensor *live(lua_State *L, tkl_tensor *u, int idx) {
    if (!u->t) tkl_error(L, "bad argument #%d (tensor has been freed)", idx);
    if (u->ctx && tk_ctx_generation(u->ctx) != u->generation)
        tkl_error(L,
                  "bad argument #%d (tensor was released when its context was reset; "
                  "use :clone() to keep a tensor across steps)",
                  idx);
    return u->t;
}

tk_tensor *tkl_check_tensor(lua_State *L, int idx) { return live(L, tkl_check_tensor_ud(L, idx), idx); }

tk_tensor *tkl_to_tensor(lua_State *L, int idx) {
    tkl_tensor *u = (tkl_tensor *)luaL_testudata(L, idx, TKL_TENSOR);
    return u ? live(L, u, idx) : NULL;
}

struct tk_tensor *towerkit_lua_to_tensor(lua_State *L, int idx) {
    return tkl_to_tensor(L, idx);
}

void tkl_push_heap(lua_State *L, tk_tensor *t) {
    tkl_tensor *u = (tkl_tensor *)lua_newuserdata(L, sizeof *u);
    u->t = t;
    u->ctx = NULL;
    u->generation = 0;
    luaL_getmetatable(L, TKL_TENSOR);
    lua_setmetatable(L, -2);
}

void tkl_push_arena(lua_State *L, int ctx_idx, tk_tensor *t) {
    if (ctx_idx < 0) ctx_idx = lua_gettop(L) + ctx_idx + 1;
    tkl_context *c = tkl_check_context(L, ctx_idx);
    tkl_tensor *u = (tkl_tensor *)lua_newuserdata(L, sizeof *u);
    u->t = t;
    u->ctx = c->ctx;
    u->generation = tk_ctx_generation(c->ctx);
    luaL_getmetatable(L, TKL_TENSOR);
    lua_setmetatable(L, -2);
    lua_getfenv(L, ctx_idx); /* the context's anchor table {context} */
    lua_setfenv(L, -2);
}

int tkl_push_result(lua_State *L, int ctx_idx, tk_tensor *t) {
    tkl_context *c = tkl_check_context(L, ctx_idx);
    if (!t) {
        const char *msg = tk_ctx_failed(c->ctx) ? tk_ctx_error(c->ctx) : "operation failed";
        lua_pushstring(L, msg);
        tk_ctx_clear_error(c->ctx);
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
        return lua_error(L);
    }
    tkl_push_arena(L, ctx_idx, t);
    return 1;
}

/* --- construction from Lua tables --- */

static int parse_dtype(lua_State *L, int idx, tk_dtype def) {
    if (lua_isnoneornil(L, idx)) return def;
    const char *s = luaL_checkstring(L, idx);
    if (!strcmp(s, "float32") || !strcmp(s, "f32") || !strcmp(s, "float")) return TK_F32;
    if (!strcmp(s, "int64") || !strcmp(s, "i64") || !strcmp(s, "long")) return TK_I64;
    return tkl_error(L, "bad argument #%d (unknown dtype '%s'; expected 'float32' or 'int64')", idx, s);
}

/* Reads a shape given as a table {2, 3} or as numbers from idx on. */
static int read_shape(lua_State *L, int idx, int64_t *shape) {
    int n = 0;
    if (lua_istable(L, idx)) {
        n = (int)lua_objlen(L, idx);
        if (n > TK_MAX_DIMS)
            return tkl_error(L, "bad argument #%d (at most %d dimensions, got %d)", idx, TK_MAX_DIMS, n);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, idx, i + 1);
            if (!lua_isnumber(L, -1))
                return tkl_error(L, "bad argument #%d (shape entry %d is not a number)", idx, i + 1);
            double d = lua_tonumber(L, -1);
            lua_pop(L, 1);
            if (d < 0 || d != floor(d))
                return tkl_error(L, "bad argument #%d (shape entry %d must be a non-negative integer, got %g)", idx,
                                 i + 1, d);
            if (d > TKL_INT53_MAX)
                return tkl_error(L, "bad argument #%d (shape entry %d is too large: %g)", idx, i + 1, d);
            shape[i] = (int64_t)d;
        }
        return n;
    }
    while (lua_type(L, idx + n) == LUA_TNUMBER) {
        if (n == TK_MAX_DIMS) return tkl_error(L, "at most %d dimensions", TK_MAX_DIMS);
        double d = lua_tonumber(L, idx + n);
        if (d < 0 || d != floor(d))
            return tkl_error(L, "bad argument #%d (dimension must be a non-negative integer, got %g)", idx + n, d);
        if (d > TKL_INT53_MAX) return tkl_error(L, "bad argument #%d (dimension is too large: %g)", idx + n, d);
        shape[n] = (int64_t)d;
        n++;
    }
    if (n == 0) return tkl_error(L, "bad argument #%d (shape expected: a table like {2, 3})", idx);
    return n;
}

/* Infers the shape of a nested table: lengths along the first elements. */
static int nested_shape(lua_State *L, int idx, int64_t *shape) {
    int ndim = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) {
        if (ndim == TK_MAX_DIMS) {
            lua_pop(L, 1);
            return tkl_error(L, "bad argument #1 (nested deeper than %d dimensions)", TK_MAX_DIMS);
        }
        shape[ndim++] = (int64_t)lua_objlen(L, -1);
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return ndim;
}

static void fill_nested(lua_State *L, tk_tensor *t, int ndim, const int64_t *shape, int dim, int64_t *pos, char *path,
                        size_t plen) {
    /* table at top of stack */
    int64_t n = (int64_t)lua_objlen(L, -1);
    if (n != shape[dim]) {
        tk_tensor_release(t);
        tkl_error(L, "bad argument #1 (ragged nested table: %s has %lld entries, expected %lld)",
                  path[0] ? path : "the table", (long long)n, (long long)shape[dim]);
    }
    for (int64_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        size_t l = strlen(path);
        snprintf(path + l, plen - l, "[%lld]", (long long)i);
        if (dim + 1 < ndim) {
            if (!lua_istable(L, -1)) {
                tk_tensor_release(t);
                tkl_error(L, "bad argument #1 (expected a table at %s)", path);
            }
            fill_nested(L, t, ndim, shape, dim + 1, pos, path, plen);
        } else {
            if (lua_type(L, -1) != LUA_TNUMBER) {
                tk_tensor_release(t);
                tkl_error(L, "bad argument #1 (expected a number at %s, got %s)", path, luaL_typename(L, -1));
            }
            double d = lua_tonumber(L, -1);
            if (t->dtype == TK_F32)
                tk_f32(t)[*pos] = (float)d;
            else {
                if (d != floor(d)) {
                    tk_tensor_release(t);
                    tkl_error(L, "bad argument #1 (int64 tensor needs integers; %s is %g)", path, d);
                }
                if (!(d >= -TKL_INT64_LIMIT && d < TKL_INT64_LIMIT)) {
                    tk_tensor_release(t);
                    tkl_error(L, "bad argument #1 (%s is %g, outside the int64 range)", path, d);
                }
                tk_i64(t)[*pos] = (int64_t)d;
            }
            (*pos)++;
        }
        path[l] = '\0';
        lua_pop(L, 1);
    }
}

/* tensor(values [, dtype]): values is a number or a nested table. */
static int l_tensor(lua_State *L) {
    tk_dtype dtype = (tk_dtype)parse_dtype(L, 2, TK_F32);
    int64_t shape[TK_MAX_DIMS];
    if (lua_type(L, 1) == LUA_TNUMBER) {
        tk_tensor *t = tk_tensor_new(dtype, 0, shape);
        if (!t) return tkl_error(L, "%s", tk_last_error());
        tk_tensor_fill(t, lua_tonumber(L, 1));
        tkl_push_heap(L, t);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    int ndim = nested_shape(L, 1, shape);
    tk_tensor *t = tk_tensor_new(dtype, ndim, shape);
    if (!t) return tkl_error(L, "%s", tk_last_error());
    char path[128] = "";
    int64_t pos = 0;
    lua_pushvalue(L, 1);
    fill_nested(L, t, ndim, shape, 0, &pos, path, sizeof path);
    lua_pop(L, 1);
    tkl_push_heap(L, t);
    return 1;
}

static int new_filled(lua_State *L, double value) {
    int64_t shape[TK_MAX_DIMS];
    int ndim = read_shape(L, 1, shape);
    int dt_idx = lua_istable(L, 1) ? 2 : ndim + 1;
    tk_dtype dtype = (tk_dtype)parse_dtype(L, dt_idx, TK_F32);
    tk_tensor *t = tk_tensor_new(dtype, ndim, shape);
    if (!t) return tkl_error(L, "%s", tk_last_error());
    if (value != 0) tk_tensor_fill(t, value);
    tkl_push_heap(L, t);
    return 1;
}

static int l_zeros(lua_State *L) { return new_filled(L, 0); }
static int l_ones(lua_State *L) { return new_filled(L, 1); }

/* full(shape, value [, dtype]) */
static int l_full(lua_State *L) {
    int64_t shape[TK_MAX_DIMS];
    luaL_checktype(L, 1, LUA_TTABLE);
    int ndim = read_shape(L, 1, shape);
    double v = luaL_checknumber(L, 2);
    tk_dtype dtype = (tk_dtype)parse_dtype(L, 3, TK_F32);
    tk_tensor *t = tk_tensor_new(dtype, ndim, shape);
    if (!t) return tkl_error(L, "%s", tk_last_error());
    tk_tensor_fill(t, v);
    tkl_push_heap(L, t);
    return 1;
}

/* Pushes a new F32 heap tensor of the given shape, filled by init. */
static int push_initialized(lua_State *L, int ndim, const int64_t *shape, tk_init init, uint64_t seed) {
    tk_tensor *t = tk_tensor_new(TK_F32, ndim, shape);
    if (!t) return tkl_error(L, "%s", tk_last_error());
    tk_init_fill(t, init, seed);
    tkl_push_heap(L, t);
    return 1;
}

static int check_shape_table(lua_State *L, int64_t *shape) {
    luaL_checktype(L, 1, LUA_TTABLE);
    return read_shape(L, 1, shape);
}

/* init(shape, initializer [, seed]): a heap tensor filled by a named initializer. */
static int l_init(lua_State *L) {
    int64_t shape[TK_MAX_DIMS];
    int ndim = check_shape_table(L, shape);
    tk_init init = tkl_opt_init(L, 2, "initializer", tk_init_zeros());
    return push_initialized(L, ndim, shape, init, tkl_opt_seed(L, 3, "the seed", 0));
}

/* randn(shape [, seed [, stddev]]) */
static int l_randn(lua_State *L) {
    int64_t shape[TK_MAX_DIMS];
    int ndim = check_shape_table(L, shape);
    tk_init init = { .kind = TK_INIT_RANDOM_NORMAL, .a = (float)luaL_optnumber(L, 3, 1.0) };
    return push_initialized(L, ndim, shape, init, tkl_opt_seed(L, 2, "the seed", 0));
}

/* rand(shape [, seed [, low, high]]) */
static int l_rand(lua_State *L) {
    int64_t shape[TK_MAX_DIMS];
    int ndim = check_shape_table(L, shape);
    float lo = (float)luaL_optnumber(L, 3, 0.0), hi = (float)luaL_optnumber(L, 4, 1.0);
    if (!(hi > lo)) return tkl_error(L, "bad argument #4 (high must exceed low)");
    tk_init init = { .kind = TK_INIT_RANDOM_UNIFORM, .a = lo, .b = hi };
    return push_initialized(L, ndim, shape, init, tkl_opt_seed(L, 2, "the seed", 0));
}

/* --- methods --- */

static int l_gc(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    if (!u->ctx) tk_tensor_release(u->t);
    u->t = NULL;
    return 0;
}

static int l_shape(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushnumber(L, (lua_Number)t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_size(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) return l_shape(L);
    int d = (int)luaL_checkinteger(L, 2);
    if (d < 0) d += t->ndim + 1;
    if (d < 1 || d > t->ndim)
        return tkl_error(L, "bad argument #1 (dimension %d out of range for a %d-d tensor)", d, t->ndim);
    lua_pushnumber(L, (lua_Number)t->shape[d - 1]);
    return 1;
}

static int l_dim(lua_State *L) {
    lua_pushinteger(L, tkl_check_tensor(L, 1)->ndim);
    return 1;
}

static int l_numel(lua_State *L) {
    lua_pushnumber(L, (lua_Number)tkl_check_tensor(L, 1)->numel);
    return 1;
}

static int l_len(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    lua_pushnumber(L, t->ndim ? (lua_Number)t->shape[0] : 1);
    return 1;
}

static int l_dtype(lua_State *L) {
    lua_pushstring(L, tk_dtype_name(tkl_check_tensor(L, 1)->dtype));
    return 1;
}

static lua_Number elem(const tk_tensor *t, int64_t i) {
    return t->dtype == TK_F32 ? (lua_Number)tk_f32(t)[i] : (lua_Number)tk_i64(t)[i];
}

static void push_nested(lua_State *L, const tk_tensor *t, int dim, int64_t *pos) {
    if (dim == t->ndim) {
        lua_pushnumber(L, elem(t, (*pos)++));
        return;
    }
    lua_createtable(L, (int)t->shape[dim], 0);
    for (int64_t i = 0; i < t->shape[dim]; i++) {
        push_nested(L, t, dim + 1, pos);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

static int l_totable(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    tk_tensor_sync(t); /* a table trained with lazy = false: its rows up to date */
    int64_t pos = 0;
    if (t->ndim == 0) {
        lua_pushnumber(L, elem(t, 0));
        return 1;
    }
    push_nested(L, t, 0, &pos);
    return 1;
}

/* Flat offset of 1-based indices at idx.. ; errors name the bad index. */
static int64_t offset_of(lua_State *L, const tk_tensor *t, int idx) {
    int n = lua_gettop(L) - idx + 1;
    if (n != t->ndim) tkl_error(L, "expected %d indices for a %d-d tensor, got %d", t->ndim, t->ndim, n);
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) {
        double x = luaL_checknumber(L, idx + d);
        if (x != floor(x) || x < 1 || x > (double)t->shape[d])
            tkl_error(L, "bad argument #%d (index %g out of range 1..%lld for dimension %d)", idx + d, x,
                      (long long)t->shape[d], d + 1);
        off = off * t->shape[d] + (int64_t)x - 1;
    }
    return off;
}

static int l_get(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    tk_tensor_sync(t); /* a table trained with lazy = false: its rows up to date */
    lua_pushnumber(L, elem(t, offset_of(L, t, 2)));
    return 1;
}

/* t:set(value, i, j, ...) -- heap tensors only (arena tensors belong to a tape). */
static int l_set(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    tk_tensor *t = live(L, u, 1);
    double v = luaL_checknumber(L, 2);
    if (u->ctx) return tkl_error(L, "set: tensors computed in a context are read-only; clone() first");
    tk_tensor_sync(t); /* the row written must not get its old value's skipped steps later */
    int64_t off = offset_of(L, t, 3);
    if (t->dtype == TK_F32) {
        tk_f32(t)[off] = (float)v;
    } else {
        if (v != floor(v) || !(v >= -TKL_INT64_LIMIT && v < TKL_INT64_LIMIT))
            return tkl_error(
                L, "bad argument #2 to 'set' (an int64 tensor needs an integer in the int64 range, got %g)", v);
        tk_i64(t)[off] = (int64_t)v;
    }
    return 0;
}

static int l_item(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    tk_tensor_sync(t); /* a table trained with lazy = false: its rows up to date */
    if (t->numel != 1) return tkl_error(L, "item: tensor has %lld elements, expected 1", (long long)t->numel);
    lua_pushnumber(L, elem(t, 0));
    return 1;
}

static int l_clone(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    tk_tensor *c = tk_tensor_clone(t);
    if (!c) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, c);
    return 1;
}

static int l_copy_from(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    tk_tensor *dst = live(L, u, 1);
    tk_tensor *src = tkl_check_tensor(L, 2);
    if (u->ctx) return tkl_error(L, "copy_from: tensors computed in a context are read-only");
    if (tk_tensor_copy_from(dst, src) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    lua_settop(L, 1);
    return 1;
}

static int l_fill(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    tk_tensor *t = live(L, u, 1);
    double v = luaL_checknumber(L, 2);
    if (u->ctx) return tkl_error(L, "fill: tensors computed in a context are read-only");
    tk_tensor_fill(t, v);
    lua_settop(L, 1);
    return 1;
}

static int l_requires_grad(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    tk_tensor *t = live(L, u, 1);
    if (lua_gettop(L) == 1) {
        lua_pushboolean(L, u->ctx ? t->requires_grad : (t->flags & TK_TENSOR_REQUIRES_GRAD) != 0);
        return 1;
    }
    bool on = lua_toboolean(L, 2);
    if (u->ctx) return tkl_error(L, "requires_grad: only tensors made outside a context (leaves) can be marked");
    if (on && t->dtype != TK_F32) return tkl_error(L, "requires_grad: only float32 tensors can have gradients");
    tk_tensor_set_requires_grad(t, on);
    lua_settop(L, 1);
    return 1;
}

static int l_is_leaf(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    live(L, u, 1);
    lua_pushboolean(L, u->ctx == NULL);
    return 1;
}

/* t:backward(): runs the tape of t's context from t. */
static int l_backward(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    tk_tensor *t = live(L, u, 1);
    if (!u->ctx) return tkl_error(L, "backward: this tensor was not computed by ops (it has no tape)");
    if (tk_backward(u->ctx, t) != TK_OK) {
        lua_pushstring(L, tk_ctx_error(u->ctx));
        tk_ctx_clear_error(u->ctx);
        return lua_error(L);
    }
    return 0;
}

/* t:grad([ctx]): the gradient of a leaf in a context (default: the current one). */
static int l_grad(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    int ctx_idx;
    if (lua_isnoneornil(L, 2)) {
        tkl_push_current_context(L);
        ctx_idx = lua_gettop(L);
    } else {
        tkl_check_context(L, 2);
        ctx_idx = 2;
    }
    tk_ctx *ctx = tkl_check_context(L, ctx_idx)->ctx;
    tk_tensor *g = tk_ctx_grad(ctx, t);
    if (!g) {
        if (tk_ctx_failed(ctx)) return tkl_push_result(L, ctx_idx, NULL);
        lua_pushnil(L);
        return 1;
    }
    tkl_push_arena(L, ctx_idx, g);
    return 1;
}

/* --- printing --- */

typedef struct strbuf {
    luaL_Buffer b;
} strbuf;

static void fmt_elem(char *out, size_t n, const tk_tensor *t, int64_t i, bool sci) {
    if (t->dtype == TK_I64)
        snprintf(out, n, "%lld", (long long)tk_i64(t)[i]);
    else if (sci)
        snprintf(out, n, "%.4e", (double)tk_f32(t)[i]);
    else
        snprintf(out, n, "%.4f", (double)tk_f32(t)[i]);
}

enum { EDGE = 3, SUMMARISE_OVER = 1000 };

static void print_rec(luaL_Buffer *b, const tk_tensor *t, int dim, int64_t base, int width, bool sci, bool summarise) {
    char cell[64];
    if (dim == t->ndim) {
        fmt_elem(cell, sizeof cell, t, base, sci);
        char padded[80];
        snprintf(padded, sizeof padded, "%*s", width, cell);
        luaL_addstring(b, padded);
        return;
    }
    int64_t stride = 1;
    for (int d = dim + 1; d < t->ndim; d++) stride *= t->shape[d];
    luaL_addchar(b, '[');
    int64_t n = t->shape[dim];
    for (int64_t i = 0; i < n; i++) {
        if (summarise && n > 2 * EDGE && i == EDGE) {
            luaL_addstring(b, dim + 1 == t->ndim ? "..., " : "...,\n");
            if (dim + 1 < t->ndim)
                for (int s = 0; s <= dim; s++) luaL_addchar(b, ' ');
            i = n - EDGE - 1;
            continue;
        }
        print_rec(b, t, dim + 1, base + i * stride, width, sci, summarise);
        if (i + 1 < n) {
            luaL_addchar(b, ',');
            if (dim + 1 < t->ndim) {
                luaL_addchar(b, '\n');
                for (int s = 0; s <= dim; s++) luaL_addchar(b, ' ');
            } else {
                luaL_addchar(b, ' ');
            }
        }
    }
    luaL_addchar(b, ']');
}

static int l_tostring(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    if (!u->t) {
        lua_pushstring(L, "tensor (freed)");
        return 1;
    }
    if (u->ctx && tk_ctx_generation(u->ctx) != u->generation) {
        lua_pushstring(L, "tensor (released by a context reset)");
        return 1;
    }
    tk_tensor_sync(u->t); /* lazy = false: rows up to date */
    const tk_tensor *t = u->t;
    char shape[96];
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char head[160];
    bool rg = u->ctx ? t->requires_grad : (t->flags & TK_TENSOR_REQUIRES_GRAD);
    snprintf(head, sizeof head, "tensor %s %s%s\n", tk_dtype_name(t->dtype), tk_shape_str(t, shape, sizeof shape),
             rg ? " requires_grad" : "");
    luaL_addstring(&b, head);
    bool sci = false;
    int width = 1;
    if (t->dtype == TK_F32) {
        double mx = 0, mn = INFINITY;
        for (int64_t i = 0; i < t->numel; i++) {
            double a = fabs((double)tk_f32(t)[i]);
            if (isfinite(a)) {
                if (a > mx) mx = a;
                if (a > 0 && a < mn) mn = a;
            }
        }
        sci = mx >= 1e6 || (mn < 1e-4 && mn > 0);
    }
    char cell[64];
    for (int64_t i = 0; i < t->numel; i++) {
        fmt_elem(cell, sizeof cell, t, i, sci);
        int w = (int)strlen(cell);
        if (w > width) width = w;
    }
    if (t->numel == 0 && t->ndim > 0) {
        luaL_addstring(&b, "[]");
    } else {
        print_rec(&b, t, 0, 0, width, sci, t->numel > SUMMARISE_OVER);
    }
    luaL_pushresult(&b);
    return 1;
}

/* --- ops --- */

typedef tk_tensor *(*binop)(tk_ctx *, tk_tensor *, tk_tensor *);

/* A number operand becomes a one-element arena tensor of the op's context. */
static tk_tensor *operand(lua_State *L, int idx, tk_ctx *ctx) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        int64_t one = 1;
        tk_tensor *s = tk_ctx_empty(ctx, TK_F32, 1, &one);
        if (s) tk_f32(s)[0] = (float)lua_tonumber(L, idx);
        return s;
    }
    return tkl_check_tensor(L, idx);
}

static int arith(lua_State *L, binop op, const char *name) {
    bool a_num = lua_type(L, 1) == LUA_TNUMBER, b_num = lua_type(L, 2) == LUA_TNUMBER;
    if (!a_num) tkl_check_tensor(L, 1);
    if (!b_num) tkl_check_tensor(L, 2);
    int idx[2], n = 0;
    if (!a_num) idx[n++] = 1;
    if (!b_num) idx[n++] = 2;
    tk_ctx *ctx = tkl_op_context(L, n, idx);
    int ci = lua_gettop(L);
    tk_tensor *a = operand(L, 1, ctx), *b = operand(L, 2, ctx);
    if (a_num && b) {
        /* number op tensor: broadcast the number over b's shape first */
        tk_tensor *full = tk_ctx_empty(ctx, TK_F32, b->ndim, b->shape);
        if (full) {
            for (int64_t i = 0; i < full->numel; i++) tk_f32(full)[i] = (float)lua_tonumber(L, 1);
        }
        a = full;
    }
    (void)name;
    return tkl_push_result(L, ci, op(ctx, a, b));
}

static int l_add(lua_State *L) { return arith(L, tk_add, "add"); }
static int l_sub(lua_State *L) { return arith(L, tk_sub, "sub"); }
static int l_mul(lua_State *L) { return arith(L, tk_mul, "mul"); }
static int l_div(lua_State *L) { return arith(L, tk_div, "div"); }

static int l_unm(lua_State *L) {
    int idx[1] = { 1 };
    tk_tensor *a = tkl_check_tensor(L, 1);
    tk_ctx *ctx = tkl_op_context(L, 1, idx);
    return tkl_push_result(L, lua_gettop(L), tk_scale(ctx, a, -1.0f));
}

typedef tk_tensor *(*unop)(tk_ctx *, tk_tensor *);

static int unary(lua_State *L, unop op) {
    int idx[1] = { 1 };
    tk_tensor *a = tkl_check_tensor(L, 1);
    tk_ctx *ctx = tkl_op_context(L, 1, idx);
    return tkl_push_result(L, lua_gettop(L), op(ctx, a));
}

static int l_exp(lua_State *L) { return unary(L, tk_exp); }
static int l_log(lua_State *L) { return unary(L, tk_log); }
static int l_sqrt(lua_State *L) { return unary(L, tk_sqrt); }
static int l_square(lua_State *L) { return unary(L, tk_square); }
static int l_l2norm(lua_State *L) { return unary(L, tk_l2norm); }
static int l_transpose(lua_State *L) { return unary(L, tk_transpose); }
static int l_log_softmax(lua_State *L) { return unary(L, tk_log_softmax); }

static int l_scale(lua_State *L) {
    int idx[1] = { 1 };
    tk_tensor *a = tkl_check_tensor(L, 1);
    float s = (float)luaL_checknumber(L, 2);
    tk_ctx *ctx = tkl_op_context(L, 1, idx);
    return tkl_push_result(L, lua_gettop(L), tk_scale(ctx, a, s));
}

/* is_activation(name) -> true if the core knows the activation (core.names("activation")) */
static int l_is_activation(lua_State *L) {
    lua_pushboolean(L, lua_type(L, 1) == LUA_TSTRING && tk_activation_from_name(lua_tostring(L, 1)) >= 0);
    return 1;
}

/* t:activate(name) and the named shortcuts t:relu() ... */
static int l_activate(lua_State *L) {
    int idx[1] = { 1 };
    tk_tensor *a = tkl_check_tensor(L, 1);
    int act = tkl_opt_activation(L, 2, "activate", TK_ACT_LINEAR);
    tk_ctx *ctx = tkl_op_context(L, 1, idx);
    return tkl_push_result(L, lua_gettop(L), tk_activate(ctx, a, (tk_activation)act));
}

static int l_matmul(lua_State *L) {
    int idx[2] = { 1, 2 };
    tk_tensor *a = tkl_check_tensor(L, 1), *b = tkl_check_tensor(L, 2);
    bool ta = lua_toboolean(L, 3), tb = lua_toboolean(L, 4);
    tk_ctx *ctx = tkl_op_context(L, 2, idx);
    return tkl_push_result(L, lua_gettop(L), tk_matmul(ctx, a, b, ta, tb));
}

static int reduce(lua_State *L, tk_tensor *(*op)(tk_ctx *, tk_tensor *, int, bool)) {
    int idx[1] = { 1 };
    tk_tensor *a = tkl_check_tensor(L, 1);
    int axis = -1;
    if (!lua_isnoneornil(L, 2)) {
        int d = (int)luaL_checkinteger(L, 2);
        if (d < 0) d += a->ndim + 1;
        if (d < 1 || d > a->ndim) return tkl_error(L, "bad argument #2 (dimension %d out of range 1..%d)", d, a->ndim);
        axis = d - 1;
    }
    bool keep = lua_toboolean(L, 3);
    tk_ctx *ctx = tkl_op_context(L, 1, idx);
    return tkl_push_result(L, lua_gettop(L), op(ctx, a, axis, keep));
}

static int l_sum(lua_State *L) { return reduce(L, tk_sum); }
static int l_mean(lua_State *L) { return reduce(L, tk_mean); }

static int l_reshape(lua_State *L) {
    int idx[1] = { 1 };
    tk_tensor *a = tkl_check_tensor(L, 1);
    int64_t shape[TK_MAX_DIMS];
    int ndim = 0;
    if (lua_istable(L, 2)) {
        ndim = (int)lua_objlen(L, 2);
        if (ndim > TK_MAX_DIMS) return tkl_error(L, "bad argument #2 (at most %d dimensions)", TK_MAX_DIMS);
        for (int i = 0; i < ndim; i++) {
            lua_rawgeti(L, 2, i + 1);
            double d = lua_tonumber(L, -1);
            if (lua_type(L, -1) != LUA_TNUMBER || !tkl_is_int53(d))
                return tkl_error(L, "bad argument #2 to 'reshape' (shape entry %d must be an integer, got %s)", i + 1,
                                 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
            shape[i] = (int64_t)d;
            lua_pop(L, 1);
        }
    } else {
        for (ndim = 0; lua_type(L, 2 + ndim) == LUA_TNUMBER; ndim++) {
            if (ndim == TK_MAX_DIMS) return tkl_error(L, "at most %d dimensions", TK_MAX_DIMS);
            shape[ndim] = tkl_check_int(L, 2 + ndim, "a dimension");
        }
    }
    tk_ctx *ctx = tkl_op_context(L, 1, idx);
    return tkl_push_result(L, lua_gettop(L), tk_reshape(ctx, a, ndim, shape));
}

static int l_dropout(lua_State *L) {
    int idx[1] = { 1 };
    tk_tensor *a = tkl_check_tensor(L, 1);
    float rate = (float)luaL_checknumber(L, 2);
    tk_ctx *ctx = tkl_op_context(L, 1, idx);
    return tkl_push_result(L, lua_gettop(L), tk_dropout(ctx, a, rate));
}

static int l_cosine(lua_State *L) {
    int idx[2] = { 1, 2 };
    tk_tensor *a = tkl_check_tensor(L, 1), *b = tkl_check_tensor(L, 2);
    tk_ctx *ctx = tkl_op_context(L, 2, idx);
    return tkl_push_result(L, lua_gettop(L), tk_cosine(ctx, a, b));
}

/* concat({t1, t2, ...}) and stack({...}) */
static int list_op(lua_State *L, tk_tensor *(*op)(tk_ctx *, int32_t, tk_tensor *const *), const char *name) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    if (n < 1) return tkl_error(L, "bad argument #1 to '%s' (a non-empty list of tensors expected)", name);
    if (n > 256) return tkl_error(L, "bad argument #1 to '%s' (at most 256 tensors)", name);
    int base = lua_gettop(L);
    int idx[256];
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        if (!tkl_to_tensor(L, -1))
            return tkl_error(L, "bad argument #1 to '%s' (entry %d is not a tensor)", name, i + 1);
        idx[i] = base + i + 1;
    }
    tk_ctx *ctx = tkl_op_context(L, n, idx);
    int ci = lua_gettop(L);
    tk_tensor **ts = tk_ctx_alloc(ctx, (size_t)n * sizeof *ts);
    if (!ts) return tkl_push_result(L, ci, NULL);
    for (int i = 0; i < n; i++) ts[i] = tkl_check_tensor(L, idx[i]);
    return tkl_push_result(L, ci, op(ctx, n, ts));
}

static int l_concat(lua_State *L) { return list_op(L, tk_concat, "concat"); }
static int l_stack(lua_State *L) { return list_op(L, tk_stack, "stack"); }

/* Losses: cross_entropy(logits, labels [, weights]), mse(pred, target), bce(logits, targets) */
static int l_cross_entropy(lua_State *L) {
    tkl_check_tensor(L, 1);
    tkl_check_tensor(L, 2);
    bool w = !lua_isnoneornil(L, 3);
    if (w) tkl_check_tensor(L, 3);
    int idx[3] = { 1, 2, 3 };
    tk_ctx *ctx = tkl_op_context(L, w ? 3 : 2, idx);
    int ci = lua_gettop(L);
    return tkl_push_result(
        L, ci,
        tk_cross_entropy(ctx, tkl_check_tensor(L, 1), tkl_check_tensor(L, 2), w ? tkl_check_tensor(L, 3) : NULL));
}

static int l_mse(lua_State *L) {
    int idx[2] = { 1, 2 };
    tk_tensor *a = tkl_check_tensor(L, 1), *b = tkl_check_tensor(L, 2);
    tk_ctx *ctx = tkl_op_context(L, 2, idx);
    return tkl_push_result(L, lua_gettop(L), tk_mse_loss(ctx, a, b));
}

static int l_bce(lua_State *L) {
    int idx[2] = { 1, 2 };
    tk_tensor *a = tkl_check_tensor(L, 1), *b = tkl_check_tensor(L, 2);
    tk_ctx *ctx = tkl_op_context(L, 2, idx);
    return tkl_push_result(L, lua_gettop(L), tk_bce_with_logits(ctx, a, b));
}

/* embedding_lookup(table, ids [, offsets [, combiner [, name]]]) */
static int l_embedding_lookup(lua_State *L) {
    tkl_check_tensor(L, 1);
    tkl_check_tensor(L, 2);
    bool has_off = !lua_isnoneornil(L, 3);
    if (has_off) tkl_check_tensor(L, 3);
    const char *cname = luaL_optstring(L, 4, "mean");
    int comb = tk_combiner_from_name(cname);
    if (comb < 0) return tkl_error(L, "bad argument #4 (unknown combiner '%s'; known: sum, mean, sqrtn)", cname);
    const char *name = luaL_optstring(L, 5, "table");
    int idx[3] = { 1, 2, 3 };
    tk_ctx *ctx = tkl_op_context(L, has_off ? 3 : 2, idx);
    int ci = lua_gettop(L);
    return tkl_push_result(L, ci,
                           tk_embedding_lookup(ctx, tkl_check_tensor(L, 1), tkl_check_tensor(L, 2),
                                               has_off ? tkl_check_tensor(L, 3) : NULL, (tk_combiner)comb, name));
}

/* --- the core's data kernels (data.c): heap results, no gradients --- */

/* The int64 [n] indices at idx, cut to [first, first + count) by the optional arguments
 * after them (all by default); *count gets the count. */
static const int64_t *index_range(lua_State *L, int idx, const char *fn, int64_t *count) {
    tk_tensor *ix = tkl_check_tensor(L, idx);
    if (ix->dtype != TK_I64 || ix->ndim != 1)
        tkl_error(L, "bad argument #%d to '%s' (int64 [n] indices expected)", idx, fn);
    int64_t first = tkl_opt_int(L, idx + 1, "first", 0);
    *count = tkl_opt_int(L, idx + 2, "count", ix->numel - first);
    if (first < 0 || *count < 0 || first + *count > ix->numel)
        tkl_error(L, "bad argument #%d to '%s' (range %lld+%lld outside %lld indices)", idx + 1, fn, (long long)first,
                  (long long)*count, (long long)ix->numel);
    return tk_i64(ix) + first;
}

/* Pushes the heap tensor a data kernel made, or raises the kernel's message. */
static int push_made(lua_State *L, tk_tensor *t) {
    if (!t) return tkl_error(L, "%s", tk_last_error());
    tkl_push_heap(L, t);
    return 1;
}

/* index_select(t, idx [, first, count]): rows idx[first .. first+count) (0-based
 * indices) of t along its first dimension, as a new heap tensor. */
static int l_index_select(lua_State *L) {
    tk_tensor *t = tkl_check_tensor(L, 1);
    int64_t n;
    const int64_t *ix = index_range(L, 2, "index_select", &n);
    return push_made(L, tk_index_select(t, n, ix));
}

/* ragged_select(values, offsets, idx [, first, count]) -> values, offsets of the selected
 * rows of a ragged list column. */
static int l_ragged_select(lua_State *L) {
    tk_tensor *values = tkl_check_tensor(L, 1), *offsets = tkl_check_tensor(L, 2);
    int64_t n;
    const int64_t *ix = index_range(L, 3, "ragged_select", &n);
    /* the userdata first: once the tensors exist nothing may raise before they are held */
    tkl_push_heap(L, NULL);
    tkl_push_heap(L, NULL);
    tkl_tensor *uv = tkl_check_tensor_ud(L, -2), *uo = tkl_check_tensor_ud(L, -1);
    if (tk_ragged_select(values, offsets, n, ix, &uv->t, &uo->t) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 2;
}

/* cat_rows({t1, t2, ...}) -> a heap tensor of the rows of all, in order. */
static int l_cat_rows(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    if (n < 1) return tkl_error(L, "bad argument #1 to 'cat_rows' (a non-empty list of tensors expected)");
    const tk_tensor **ts = (const tk_tensor **)lua_newuserdata(L, (size_t)n * sizeof *ts);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        ts[i] = tkl_to_tensor(L, -1); /* anchored by the list */
        lua_pop(L, 1);
        if (!ts[i]) return tkl_error(L, "bad argument #1 to 'cat_rows' (entry %d is not a tensor)", i + 1);
    }
    return push_made(L, tk_cat_rows(n, ts));
}

/* arange(n [, dtype]) -> 0 .. n-1 */
static int l_arange(lua_State *L) {
    double n = luaL_checknumber(L, 1);
    if (!(n >= 0) || !tkl_is_int53(n))
        return tkl_error(L, "bad argument #1 to 'arange' (a non-negative integer expected)");
    tk_dtype dtype = (tk_dtype)parse_dtype(L, 2, TK_I64);
    tk_tensor *t = tk_tensor_new_1d(dtype, (int64_t)n);
    if (!t) return tkl_error(L, "%s", tk_last_error());
    for (int64_t i = 0; i < t->numel; i++) {
        if (dtype == TK_I64)
            tk_i64(t)[i] = i;
        else
            tk_f32(t)[i] = (float)i;
    }
    tkl_push_heap(L, t);
    return 1;
}

/* shuffle(t, seed): shuffles a 1-d heap tensor in place and returns it. */
static int l_shuffle(lua_State *L) {
    tkl_tensor *u = tkl_check_tensor_ud(L, 1);
    tk_tensor *t = tkl_check_tensor(L, 1);
    luaL_checknumber(L, 2);
    uint64_t seed = tkl_opt_seed(L, 2, "the seed", 0);
    if (u->ctx) return tkl_error(L, "bad argument #1 to 'shuffle' (a tensor made outside a context expected)");
    if (tk_shuffle(t, seed) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    lua_settop(L, 1);
    return 1;
}

/* map_ids(idx, ids) -> ids[idx] for every entry of an int64 index tensor (any shape;
 * -1 stays -1: "no item"). */
static int l_map_ids(lua_State *L) {
    tk_tensor *idx = tkl_check_tensor(L, 1), *ids = tkl_check_tensor(L, 2);
    return push_made(L, tk_map_ids(idx, ids));
}

/* check_ids(ids, cardinality [, offsets]) -> nil when every id of the int64 tensor is in
 * [0, cardinality); else the 1-based row of the first id out of range and that id. With
 * offsets (int64 [rows + 1]: a list column's flat ids), the row is the one whose list
 * holds it; without, ids are one per row (the first dimension). */
static int l_check_ids(lua_State *L) {
    tk_tensor *ids = tkl_check_tensor(L, 1);
    int64_t card = tkl_check_int(L, 2, "cardinality");
    tk_tensor *off = lua_isnoneornil(L, 3) ? NULL : tkl_check_tensor(L, 3);
    int64_t row, id;
    if (tk_check_ids(ids, card, off, &row, &id) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    if (row < 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushnumber(L, (lua_Number)(row + 1));
    lua_pushnumber(L, (lua_Number)id);
    return 2;
}

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, TKL_TENSOR) != NULL);
    return 1;
}

static const luaL_Reg tensor_methods[] = { { "shape", l_shape },
                                           { "size", l_size },
                                           { "dim", l_dim },
                                           { "numel", l_numel },
                                           { "dtype", l_dtype },
                                           { "totable", l_totable },
                                           { "get", l_get },
                                           { "set", l_set },
                                           { "item", l_item },
                                           { "clone", l_clone },
                                           { "copy_from", l_copy_from },
                                           { "fill", l_fill },
                                           { "requires_grad", l_requires_grad },
                                           { "is_leaf", l_is_leaf },
                                           { "backward", l_backward },
                                           { "grad", l_grad },
                                           { "exp", l_exp },
                                           { "log", l_log },
                                           { "sqrt", l_sqrt },
                                           { "square", l_square },
                                           { "l2norm", l_l2norm },
                                           { "t", l_transpose },
                                           { "transpose", l_transpose },
                                           { "log_softmax", l_log_softmax },
                                           { "scale", l_scale },
                                           { "activate", l_activate },
                                           { "matmul", l_matmul },
                                           { "sum", l_sum },
                                           { "mean", l_mean },
                                           { "reshape", l_reshape },
                                           { "view", l_reshape },
                                           { "dropout", l_dropout },
                                           { "add", l_add },
                                           { "sub", l_sub },
                                           { "mul", l_mul },
                                           { "div", l_div },
                                           { NULL, NULL } };

static const luaL_Reg tensor_meta[] = { { "__gc", l_gc },   { "__tostring", l_tostring }, { "__len", l_len },
                                        { "__add", l_add }, { "__sub", l_sub },           { "__mul", l_mul },
                                        { "__div", l_div }, { "__unm", l_unm },           { NULL, NULL } };

static const luaL_Reg tensor_functions[] = { { "tensor", l_tensor },
                                             { "zeros", l_zeros },
                                             { "ones", l_ones },
                                             { "full", l_full },
                                             { "randn", l_randn },
                                             { "rand", l_rand },
                                             { "init", l_init },
                                             { "matmul", l_matmul },
                                             { "concat", l_concat },
                                             { "stack", l_stack },
                                             { "cosine", l_cosine },
                                             { "cross_entropy", l_cross_entropy },
                                             { "mse", l_mse },
                                             { "bce_with_logits", l_bce },
                                             { "embedding_lookup", l_embedding_lookup },
                                             { "is_tensor", l_is_tensor },
                                             { "index_select", l_index_select },
                                             { "ragged_select", l_ragged_select },
                                             { "cat_rows", l_cat_rows },
                                             { "arange", l_arange },
                                             { "shuffle", l_shuffle },
                                             { "map_ids", l_map_ids },
                                             { "check_ids", l_check_ids },
                                             { "is_activation", l_is_activation },
                                             { NULL, NULL } };

/* Registers the Tensor metatable and adds the tensor functions to the module table at
 * the top of the stack. The methods table is exposed as module.Tensor so the Lua layer
 * can add methods written in Lua. */
void tkl_open_tensor(lua_State *L) {
    luaL_newmetatable(L, TKL_TENSOR);
    luaL_register(L, NULL, tensor_meta);
    lua_newtable(L);
    luaL_register(L, NULL, tensor_methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "Tensor"); /* module.Tensor = methods */
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, TKL_TENSOR);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_register(L, NULL, tensor_functions);
}
