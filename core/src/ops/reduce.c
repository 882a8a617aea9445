/* Reductions: sum and mean over one axis or over all elements.
 *
 * A reduction over axis k sees the input as [outer, len, inner] (len = shape[k]) and
 * writes [outer, inner]; axis -1 is the whole tensor as [1, numel, 1]. */
#include "ops_impl.h"

static void reduce_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *a = node->in[0];
    float *da = tk_op_grad(ctx, a);
    if (!da) return;
    int64_t outer = node->arg.i[0], len = node->arg.i[1], inner = node->arg.i[2];
    float scale = node->arg.i[3] ? 1.0f / (float)len : 1.0f;
    const float *dy = tk_f32(node->out->grad);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t l = 0; l < len; l++) {
            float *dar = da + (o * len + l) * inner;
            const float *dyr = dy + o * inner;
            for (int64_t i = 0; i < inner; i++) dar[i] += scale * dyr[i];
        }
}

static tk_tensor *reduce(tk_ctx *ctx, const char *op, tk_tensor *a, int axis, bool keepdim, bool mean) {
    TK_OP_INPUT(ctx, op, a);
    if (!tk_check_f32(ctx, op, "a", a)) return NULL;
    char s[TK_SHAPE_LEN];
    if (axis < -1 || axis >= a->ndim)
        return tk_ctx_fail(ctx, "%s: axis %d out of range for %s (0 to %d, or -1 for all elements)", op, axis,
                           TK_SHAPE(a, s), (int)a->ndim - 1);
    int64_t outer = 1, len, inner = 1, shape[TK_MAX_DIMS];
    int32_t ndim = 0;
    if (axis == -1) {
        len = a->numel;
        if (keepdim && a->ndim > 0)
            for (ndim = 0; ndim < a->ndim; ndim++) shape[ndim] = 1;
        else
            shape[ndim++] = 1;
    } else {
        len = a->shape[axis];
        for (int32_t i = 0; i < axis; i++) outer *= a->shape[i];
        for (int32_t i = axis + 1; i < a->ndim; i++) inner *= a->shape[i];
        for (int32_t i = 0; i < a->ndim; i++)
            if (i != axis)
                shape[ndim++] = a->shape[i];
            else if (keepdim)
                shape[ndim++] = 1;
        if (ndim == 0) shape[ndim++] = 1; /* a vector reduced to one element is [1] */
    }
    a = tk_ctx_input(ctx, a);
    tk_tensor *out = a ? tk_ctx_empty(ctx, TK_F32, ndim, shape) : NULL;
    if (!out) return NULL;
    const float *x = tk_f32(a);
    float *y = tk_f32(out);
    double scale = mean ? 1.0 / (double)len : 1.0; /* a mean of nothing is NaN, as 0/0 */
    if (inner == 1) {                              /* contiguous runs: accumulate in double */
        for (int64_t o = 0; o < outer; o++) {
            double acc = 0.0;
            const float *xr = x + o * len;
            for (int64_t l = 0; l < len; l++) acc += xr[l];
            y[o] = (float)(mean ? acc * scale : acc);
        }
    } else { /* strided: add rows of `inner` elements */
        for (int64_t o = 0; o < outer; o++) {
            float *yr = y + o * inner;
            memset(yr, 0, (size_t)inner * sizeof *yr);
            for (int64_t l = 0; l < len; l++) {
                const float *xr = x + (o * len + l) * inner;
                for (int64_t i = 0; i < inner; i++) yr[i] += xr[i];
            }
            if (mean)
                for (int64_t i = 0; i < inner; i++) yr[i] = (float)(yr[i] * scale);
        }
    }
    if (tk_ctx_wants_grad(ctx, 1, &a)) {
        tk_node *node = tk_ctx_record(ctx, op, reduce_backward, out, 1, &a);
        if (!node) return NULL;
        node->arg.i[0] = outer;
        node->arg.i[1] = len;
        node->arg.i[2] = inner;
        node->arg.i[3] = mean;
    }
    return out;
}

tk_tensor *tk_sum(tk_ctx *ctx, tk_tensor *a, int axis, bool keepdim) {
    return reduce(ctx, "sum", a, axis, keepdim, false);
}

tk_tensor *tk_mean(tk_ctx *ctx, tk_tensor *a, int axis, bool keepdim) {
    return reduce(ctx, "mean", a, axis, keepdim, true);
}
