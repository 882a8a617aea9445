/* Validation and gradient helpers shared by the ops. */
#include "ops_impl.h"
#include "simd.h"

void *tk_op_null_input(tk_ctx *ctx, const char *op, const char *arg) {
    if (!ctx) return NULL;
    return tk_ctx_fail(ctx, "%s: input is NULL (%s)", op, arg); /* keeps an earlier error */
}

bool tk_check_f32(tk_ctx *ctx, const char *op, const char *arg, const tk_tensor *t) {
    if (t->dtype == TK_F32) return true;
    char s[TK_SHAPE_LEN];
    tk_ctx_fail(ctx, "%s: %s must be float32, got %s %s", op, arg, tk_dtype_name(t->dtype), TK_SHAPE(t, s));
    return false;
}

bool tk_check_rank(tk_ctx *ctx, const char *op, const char *arg, const tk_tensor *t, int32_t ndim) {
    if (t->ndim == ndim) return true;
    char s[TK_SHAPE_LEN];
    tk_ctx_fail(ctx, "%s: %s must be %d-D, got %s", op, arg, (int)ndim, TK_SHAPE(t, s));
    return false;
}

float *tk_op_grad(tk_ctx *ctx, tk_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    tk_tensor *g = tk_ctx_grad_of(ctx, t);
    return g ? tk_f32(g) : NULL;
}

float *tk_op_grad_w(tk_ctx *ctx, tk_tensor *t, bool *fresh) {
    *fresh = false;
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) {
        if (!(t->grad = tk_ctx_empty(ctx, TK_F32, t->ndim, t->shape))) return NULL;
        *fresh = true;
    }
    return tk_f32(t->grad);
}

static void view_backward(tk_ctx *ctx, tk_node *node) {
    bool fresh;
    float *da = tk_op_grad_w(ctx, node->in[0], &fresh);
    if (!da) return;
    const float *dy = tk_f32(node->out->grad);
    if (fresh)
        memcpy(da, dy, (size_t)node->out->numel * sizeof *da);
    else
        tk_vec_add(da, dy, node->out->numel);
}

tk_tensor *tk_op_view(tk_ctx *ctx, const char *op, tk_tensor *a, int32_t ndim, const int64_t *shape) {
    tk_tensor *v = tk_ctx_alloc(ctx, sizeof *v);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->dtype = a->dtype;
    v->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++) v->shape[i] = shape[i];
    v->numel = a->numel;
    v->data = a->data;
    v->flags = TK_TENSOR_VIEW;
    if (a->dtype == TK_F32 && tk_ctx_wants_grad(ctx, 1, &a) && !tk_ctx_record(ctx, op, view_backward, v, 1, &a))
        return NULL;
    return v;
}
