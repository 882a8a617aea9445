/* Concatenation on the last axis and stacking on a new last axis.
 *
 * Both keep every input in node->list (node->in holds the first four, for readers of the
 * tape); the backward scatters the output gradient back to each input. */
#include "ops_impl.h"
#include "simd.h"

/* Checks the count, NULL entries and dtypes of a list of inputs. */
static bool check_list(tk_ctx *ctx, const char *op, int32_t n, tk_tensor *const *ts) {
    if (!ctx) return false;
    if (n < 1) {
        tk_ctx_fail(ctx, "%s: needs at least one input, got %d", op, (int)n);
        return false;
    }
    if (!ts) {
        tk_op_null_input(ctx, op, "ts");
        return false;
    }
    for (int32_t i = 0; i < n; i++)
        if (!ts[i]) {
            tk_ctx_fail(ctx, "%s: input is NULL (input %d of %d)", op, (int)i, (int)n); /* keeps an earlier error */
            return false;
        }
    for (int32_t i = 1; i < n; i++)
        if (ts[i]->dtype != ts[0]->dtype) {
            char s0[TK_SHAPE_LEN], si[TK_SHAPE_LEN];
            tk_ctx_fail(ctx, "%s: inputs must have one dtype: input 0 is %s %s, input %d is %s %s", op,
                        tk_dtype_name(ts[0]->dtype), TK_SHAPE(ts[0], s0), (int)i, tk_dtype_name(ts[i]->dtype),
                        TK_SHAPE(ts[i], si));
            return false;
        }
    return true;
}

/* The inputs mapped through tk_ctx_input, in an arena array (the node's list). */
static tk_tensor **map_inputs(tk_ctx *ctx, int32_t n, tk_tensor *const *ts) {
    tk_tensor **list = tk_ctx_alloc(ctx, (size_t)n * sizeof *list);
    if (!list) return NULL;
    for (int32_t i = 0; i < n; i++)
        if (!(list[i] = tk_ctx_input(ctx, ts[i]))) return NULL;
    return list;
}

static bool record_list(tk_ctx *ctx, const char *op, tk_backward_fn fn, tk_tensor *out, int32_t n, tk_tensor **list) {
    if (out->dtype != TK_F32 || !tk_ctx_wants_grad(ctx, n, list)) return true;
    tk_node *node = tk_ctx_record(ctx, op, fn, out, n < TK_NODE_MAX_INPUTS ? n : TK_NODE_MAX_INPUTS, list);
    if (!node) return false;
    node->list = list;
    node->nlist = n;
    return true;
}

/* --- concat --- */

static void concat_backward(tk_ctx *ctx, tk_node *node) {
    const float *dy = tk_f32(node->out->grad);
    int64_t total = tk_op_cols(node->out), rows = tk_op_rows(node->out), off = 0;
    for (int32_t k = 0; k < node->nlist; k++) {
        tk_tensor *t = node->list[k];
        int64_t w = tk_op_cols(t);
        bool fresh; /* written, not accumulated */
        float *dt = tk_op_grad_w(ctx, t, &fresh);
        if (ctx->failed) return;
        if (dt)
            for (int64_t r = 0; r < rows; r++) {
                const float *src = dy + r * total + off;
                float *dst = dt + r * w;
                if (fresh)
                    memcpy(dst, src, (size_t)w * sizeof *dst);
                else
                    tk_vec_add(dst, src, w);
            }
        off += w;
    }
}

tk_tensor *tk_concat(tk_ctx *ctx, int32_t n, tk_tensor *const *ts) {
    const char *op = "concat";
    if (!check_list(ctx, op, n, ts)) return NULL;
    const tk_tensor *t0 = ts[0];
    char s0[TK_SHAPE_LEN], si[TK_SHAPE_LEN];
    if (t0->ndim < 1)
        return tk_ctx_fail(ctx, "concat: inputs must have at least one dimension, got %s", TK_SHAPE(t0, s0));
    int64_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        const tk_tensor *t = ts[i];
        bool ok = t->ndim == t0->ndim;
        for (int32_t d = 0; ok && d < t0->ndim - 1; d++) ok = t->shape[d] == t0->shape[d];
        if (!ok)
            return tk_ctx_fail(ctx,
                               "concat: input %d is %s, expected [..., n] matching input 0 %s on all but the last axis",
                               (int)i, TK_SHAPE(t, si), TK_SHAPE(t0, s0));
        total += tk_op_cols(t);
    }
    tk_tensor **list = map_inputs(ctx, n, ts);
    if (!list) return NULL;
    int64_t shape[TK_MAX_DIMS];
    memcpy(shape, t0->shape, sizeof shape);
    shape[t0->ndim - 1] = total;
    tk_tensor *out = tk_ctx_empty(ctx, t0->dtype, t0->ndim, shape);
    if (!out) return NULL;
    size_t esize = tk_dtype_size(t0->dtype);
    int64_t rows = tk_op_rows(out), off = 0;
    for (int32_t k = 0; k < n; k++) {
        int64_t w = tk_op_cols(list[k]);
        const char *src = list[k]->data;
        char *dst = (char *)out->data + (size_t)off * esize;
        for (int64_t r = 0; r < rows; r++)
            memcpy(dst + (size_t)(r * total) * esize, src + (size_t)(r * w) * esize, (size_t)w * esize);
        off += w;
    }
    return record_list(ctx, op, concat_backward, out, n, list) ? out : NULL;
}

/* --- stack: [..., D] x n -> [..., D, n] --- */

static void stack_backward(tk_ctx *ctx, tk_node *node) {
    const float *dy = tk_f32(node->out->grad);
    int32_t n = node->nlist;
    for (int32_t k = 0; k < n; k++) {
        tk_tensor *t = node->list[k];
        float *dt = tk_op_grad(ctx, t);
        if (ctx->failed) return;
        if (dt)
            for (int64_t e = 0; e < t->numel; e++) dt[e] += dy[e * n + k];
    }
}

tk_tensor *tk_stack(tk_ctx *ctx, int32_t n, tk_tensor *const *ts) {
    const char *op = "stack";
    if (!check_list(ctx, op, n, ts)) return NULL;
    const tk_tensor *t0 = ts[0];
    char s0[TK_SHAPE_LEN], si[TK_SHAPE_LEN];
    if (t0->ndim >= TK_MAX_DIMS)
        return tk_ctx_fail(ctx, "stack: inputs have %d dimensions (%s), at most %d can be stacked", (int)t0->ndim,
                           TK_SHAPE(t0, s0), TK_MAX_DIMS - 1);
    for (int32_t i = 1; i < n; i++)
        if (!tk_tensor_same_shape(ts[i], t0))
            return tk_ctx_fail(ctx, "stack: input %d is %s, expected the shape of input 0 %s", (int)i,
                               TK_SHAPE(ts[i], si), TK_SHAPE(t0, s0));
    tk_tensor **list = map_inputs(ctx, n, ts);
    if (!list) return NULL;
    int64_t shape[TK_MAX_DIMS];
    memcpy(shape, t0->shape, sizeof shape);
    shape[t0->ndim] = n;
    tk_tensor *out = tk_ctx_empty(ctx, t0->dtype, t0->ndim + 1, shape);
    if (!out) return NULL;
    int64_t m = t0->numel;
    if (out->dtype == TK_F32) {
        float *y = tk_f32(out);
        for (int32_t k = 0; k < n; k++) {
            const float *x = tk_f32(list[k]);
            for (int64_t e = 0; e < m; e++) y[e * n + k] = x[e];
        }
    } else {
        int64_t *y = tk_i64(out);
        for (int32_t k = 0; k < n; k++) {
            const int64_t *x = tk_i64(list[k]);
            for (int64_t e = 0; e < m; e++) y[e * n + k] = x[e];
        }
    }
    return record_list(ctx, op, stack_backward, out, n, list) ? out : NULL;
}
