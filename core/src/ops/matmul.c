/* Matrix products (OpenBLAS), the fused dense layer, transpose and reshape. */
#include "ops_impl.h"
#include "simd.h"

#include <cblas.h>
#include <limits.h>

/* C [M, N] = op(A) op(B) + beta C, row-major. op(A) is [M, K]: A is stored [M, K], or
 * [K, M] when ta. op(B) is [K, N]: B is stored [K, N], or [N, K] when tb. */
typedef struct gemm_args {
    bool ta, tb;
    int64_t M, N, K;
    const float *A, *B;
    float beta;
    float *C;
    int64_t parts;
} gemm_args;

/* Rows [r0, r1) of C: a single-threaded sgemm on the calling thread. */
static void gemm_rows(const gemm_args *g, int64_t r0, int64_t r1) {
    if (r1 <= r0) return;
    const float *a = g->ta ? g->A + r0 : g->A + r0 * g->K; /* row r0 of op(A) */
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, (blasint)(r1 - r0),
                (blasint)g->N, (blasint)g->K, 1.0f, a, (blasint)(g->ta ? g->M : g->K), g->B,
                (blasint)(g->tb ? g->K : g->N), g->beta, g->C + r0 * g->N, (blasint)g->N);
}

/* Products split over threads are cut into row blocks at multiples of GEMM_ROW_ALIGN
 * rows (whole register blocks of every OpenBLAS x86 kernel), and only from
 * GEMM_SPLIT_MIN multiply-adds up: below that, handing a block to another thread (some
 * microseconds) is a sizeable part of the product. */
#define GEMM_ROW_ALIGN 16
#define GEMM_SPLIT_MIN ((int64_t)1 << 21)

static void gemm_task(void *arg, int64_t t, int slot) {
    (void)slot;
    const gemm_args *g = arg;
    int64_t r0, r1;
    tk_split_range(g->M, g->parts, t, GEMM_ROW_ALIGN, &r0, &r1);
    gemm_rows(g, r0, r1);
}

/* The product on the context's threads: row blocks that depend only on the shape and the
 * context's thread count, so the bits do too. */
static void gemm(tk_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                 float beta, float *C) {
    if (M == 0 || N == 0) return;
    if (K == 0) { /* an empty sum: OpenBLAS rejects K = 0 leading dimensions */
        for (int64_t i = 0; i < M * N; i++) C[i] = beta == 0.0f ? 0.0f : beta * C[i];
        return;
    }
    gemm_args g = { ta, tb, M, N, K, A, B, beta, C, 1 };
    int threads = tk_ctx_get_num_threads(ctx);
    if (threads > 1 && M * N * K >= GEMM_SPLIT_MIN) {
        int64_t blocks = (M + GEMM_ROW_ALIGN - 1) / GEMM_ROW_ALIGN;
        g.parts = blocks < threads ? blocks : threads;
    }
    if (g.parts > 1)
        tk_parallel_run(g.parts, threads, gemm_task, &g);
    else
        gemm_rows(&g, 0, M);
}

static bool blas_dims_ok(tk_ctx *ctx, const char *op, const tk_tensor *t, const char *arg) {
    for (int32_t i = 0; i < t->ndim; i++) {
        if (t->shape[i] > INT_MAX) {
            char s[TK_SHAPE_LEN];
            tk_ctx_fail(ctx, "%s: %s %s has a dimension too large for BLAS", op, arg, TK_SHAPE(t, s));
            return false;
        }
    }
    return true;
}

/* --- matmul --- */

static void matmul_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *a = node->in[0], *b = node->in[1];
    bool ta = node->arg.i[0], tb = node->arg.i[1], fa, fb;
    int64_t m = node->out->shape[0], n = node->out->shape[1];
    int64_t k = ta ? a->shape[0] : a->shape[1];
    const float *dc = tk_f32(node->out->grad);
    float *da = tk_op_grad_w(ctx, a, &fa);
    float *db = a == b && da ? da : tk_op_grad_w(ctx, b, &fb); /* a * a^T: da's second part adds */
    if (a == b) fb = false;
    if (ctx->failed) return;
    if (da) {
        if (!ta) /* dA [m, k] (+)= dC op(B)^T */
            gemm(ctx, false, !tb, m, k, n, dc, tk_f32(b), fa ? 0.0f : 1.0f, da);
        else /* dA [k, m] (+)= op(B) dC^T */
            gemm(ctx, tb, true, k, m, n, tk_f32(b), dc, fa ? 0.0f : 1.0f, da);
    }
    if (db) {
        if (!tb) /* dB [k, n] (+)= op(A)^T dC */
            gemm(ctx, !ta, false, k, n, m, tk_f32(a), dc, fb ? 0.0f : 1.0f, db);
        else /* dB [n, k] (+)= dC^T op(A) */
            gemm(ctx, true, ta, n, k, m, dc, tk_f32(a), fb ? 0.0f : 1.0f, db);
    }
}

tk_tensor *tk_matmul(tk_ctx *ctx, tk_tensor *a, tk_tensor *b, bool trans_a, bool trans_b) {
    const char *op = "matmul";
    TK_OP_INPUT(ctx, op, a);
    TK_OP_INPUT(ctx, op, b);
    if (!tk_check_f32(ctx, op, "a", a) || !tk_check_f32(ctx, op, "b", b) || !tk_check_rank(ctx, op, "a", a, 2) ||
        !tk_check_rank(ctx, op, "b", b, 2) || !blas_dims_ok(ctx, op, a, "a") || !blas_dims_ok(ctx, op, b, "b"))
        return NULL;
    int64_t m = trans_a ? a->shape[1] : a->shape[0], k = trans_a ? a->shape[0] : a->shape[1];
    int64_t kb = trans_b ? b->shape[1] : b->shape[0], n = trans_b ? b->shape[0] : b->shape[1];
    if (k != kb) {
        char sa[TK_SHAPE_LEN], sb[TK_SHAPE_LEN];
        return tk_ctx_fail(ctx, "matmul: inner dimensions differ: a%s is %s, b%s is %s", trans_a ? " (transposed)" : "",
                           TK_SHAPE(a, sa), trans_b ? " (transposed)" : "", TK_SHAPE(b, sb));
    }
    a = tk_ctx_input(ctx, a);
    b = tk_ctx_input(ctx, b);
    int64_t shape[2] = { m, n };
    tk_tensor *out = a && b ? tk_ctx_empty(ctx, TK_F32, 2, shape) : NULL;
    if (!out) return NULL;
    gemm(ctx, trans_a, trans_b, m, n, k, tk_f32(a), tk_f32(b), 0.0f, tk_f32(out));
    tk_tensor *in[2] = { a, b };
    if (tk_ctx_wants_grad(ctx, 2, in)) {
        tk_node *node = tk_ctx_record(ctx, op, matmul_backward, out, 2, in);
        if (!node) return NULL;
        node->arg.i[0] = trans_a;
        node->arg.i[1] = trans_b;
    }
    return out;
}

/* --- dense: act(x W + bias) --- */

static void dense_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *x = node->in[0], *w = node->in[1], *bias = node->in[2], *y = node->out;
    tk_activation act = (tk_activation)node->arg.i[0];
    int64_t rows = x->shape[0], in = x->shape[1], out = w->shape[1];
    const float *dy = tk_f32(y->grad);
    bool fx, fw, fb; /* fresh gradients are written, not accumulated */
    float *dx = tk_op_grad_w(ctx, x, &fx);
    float *dw = tk_op_grad_w(ctx, w, &fw);
    float *db = tk_op_grad_w(ctx, bias, &fb);
    if (ctx->failed) return;
    /* dz = dy * act'(z), one pass; for a linear layer dz is dy itself. */
    const float *dz = dy;
    if (act != TK_ACT_LINEAR) {
        float *buf = tk_ctx_alloc(ctx, (size_t)y->numel * sizeof *buf);
        if (!buf) return;
        tk_act_backward(act, buf, dy, node->saved, tk_f32(y), y->numel, false);
        dz = buf;
    }
    if (db) {
        int64_t r = 0;
        if (fb) {
            if (rows > 0)
                memcpy(db, dz, (size_t)out * sizeof *db);
            else
                memset(db, 0, (size_t)out * sizeof *db);
            r = 1;
        }
        for (; r < rows; r++) tk_vec_add(db, dz + r * out, out);
    }
    if (dx) gemm(ctx, false, true, rows, in, out, dz, tk_f32(w), fx ? 0.0f : 1.0f, dx); /* dx (+)= dz W^T */
    if (dw) gemm(ctx, true, false, in, out, rows, tk_f32(x), dz, fw ? 0.0f : 1.0f, dw); /* dW (+)= x^T dz */
}

tk_tensor *tk_dense(tk_ctx *ctx, tk_tensor *x, tk_tensor *kernel, tk_tensor *bias, tk_activation act) {
    const char *op = "dense";
    TK_OP_INPUT(ctx, op, x);
    TK_OP_INPUT(ctx, op, kernel);
    if ((unsigned)act >= TK_ACT_COUNT)
        return tk_ctx_fail(ctx, "dense: unknown activation %d (known: %s)", (int)act, tk_activation_names());
    if (!tk_check_f32(ctx, op, "x", x) || !tk_check_f32(ctx, op, "kernel", kernel) ||
        !tk_check_rank(ctx, op, "x", x, 2) || !tk_check_rank(ctx, op, "kernel", kernel, 2) ||
        !blas_dims_ok(ctx, op, x, "x") || !blas_dims_ok(ctx, op, kernel, "kernel"))
        return NULL;
    char s1[TK_SHAPE_LEN], s2[TK_SHAPE_LEN];
    int64_t rows = x->shape[0], in = x->shape[1], out = kernel->shape[1];
    if (kernel->shape[0] != in)
        return tk_ctx_fail(ctx, "dense: x has %lld features (%s), kernel %s expects %lld", (long long)in,
                           TK_SHAPE(x, s1), TK_SHAPE(kernel, s2), (long long)kernel->shape[0]);
    if (bias) {
        if (!tk_check_f32(ctx, op, "bias", bias)) return NULL;
        bool ok = (bias->ndim == 1 && bias->shape[0] == out) ||
                  (bias->ndim == 2 && bias->shape[0] == 1 && bias->shape[1] == out);
        if (!ok)
            return tk_ctx_fail(ctx, "dense: bias must be [%lld] for kernel %s, got %s", (long long)out,
                               TK_SHAPE(kernel, s1), TK_SHAPE(bias, s2));
    }
    bool has_bias = bias != NULL;
    x = tk_ctx_input(ctx, x);
    kernel = tk_ctx_input(ctx, kernel);
    bias = tk_ctx_input(ctx, bias);
    if (!x || !kernel || (has_bias && !bias)) return NULL;
    int64_t shape[2] = { rows, out };
    tk_tensor *y = tk_ctx_empty(ctx, TK_F32, 2, shape);
    if (!y) return NULL;
    tk_tensor *inputs[3] = { x, kernel, bias };
    bool grad = tk_ctx_wants_grad(ctx, 3, inputs);
    float *z = NULL; /* the pre-activation, kept only when the backward needs it */
    if (grad && tk_act_needs_input(act) && !(z = tk_ctx_alloc(ctx, (size_t)y->numel * sizeof *z))) return NULL;
    float *yv = tk_f32(y);
    gemm(ctx, false, false, rows, out, in, tk_f32(x), tk_f32(kernel), 0.0f, yv);
    const float *bv = bias ? tk_f32(bias) : NULL;
    for (int64_t r = 0; r < rows; r++) { /* one pass: bias, then activation, row by row */
        float *yr = yv + r * out;
        if (z) { /* the pre-activation is kept in between */
            if (bv) tk_vec_add(yr, bv, out);
            memcpy(z + r * out, yr, (size_t)out * sizeof *yr);
            tk_act_forward(act, yr, yr, out);
        } else {
            tk_bias_act_forward(act, yr, bv, out);
        }
    }
    if (grad) {
        tk_node *node = tk_ctx_record(ctx, op, dense_backward, y, 3, inputs);
        if (!node) return NULL;
        node->arg.i[0] = act;
        node->saved = z;
    }
    return y;
}

/* --- transpose and reshape --- */

static void transpose_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *a = node->in[0];
    float *da = tk_op_grad(ctx, a);
    if (!da) return;
    int64_t m = a->shape[0], n = a->shape[1];
    const float *dy = tk_f32(node->out->grad); /* [n, m] */
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) da[i * n + j] += dy[j * m + i];
}

tk_tensor *tk_transpose(tk_ctx *ctx, tk_tensor *a) {
    const char *op = "transpose";
    TK_OP_INPUT(ctx, op, a);
    if (!tk_check_f32(ctx, op, "a", a) || !tk_check_rank(ctx, op, "a", a, 2)) return NULL;
    a = tk_ctx_input(ctx, a);
    int64_t m = a ? a->shape[0] : 0, n = a ? a->shape[1] : 0, shape[2] = { n, m };
    tk_tensor *out = a ? tk_ctx_empty(ctx, TK_F32, 2, shape) : NULL;
    if (!out) return NULL;
    const float *x = tk_f32(a);
    float *y = tk_f32(out);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) y[j * m + i] = x[i * n + j];
    if (tk_ctx_wants_grad(ctx, 1, &a) && !tk_ctx_record(ctx, op, transpose_backward, out, 1, &a)) return NULL;
    return out;
}

tk_tensor *tk_reshape(tk_ctx *ctx, tk_tensor *a, int32_t ndim, const int64_t *shape) {
    const char *op = "reshape";
    TK_OP_INPUT(ctx, op, a);
    if (ndim < 0 || ndim > TK_MAX_DIMS)
        return tk_ctx_fail(ctx, "reshape: rank %d is not supported (0 to %d dimensions)", (int)ndim, TK_MAX_DIMS);
    if (ndim > 0 && !shape) return tk_op_null_input(ctx, op, "shape");
    int64_t want[TK_MAX_DIMS], known = 1;
    int32_t infer = -1;
    char sa[TK_SHAPE_LEN], req[TK_SHAPE_LEN];
    { /* the requested shape, as written, for messages */
        size_t off = (size_t)snprintf(req, sizeof req, "[");
        for (int32_t i = 0; i < ndim && off < sizeof req; i++)
            off += (size_t)snprintf(req + off, sizeof req - off, i ? ", %lld" : "%lld", (long long)shape[i]);
        if (off < sizeof req) snprintf(req + off, sizeof req - off, "]");
    }
    for (int32_t i = 0; i < ndim; i++) {
        want[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] < 0) {
            return tk_ctx_fail(ctx, "reshape: bad shape %s (dimensions are >= 0, with at most one -1)", req);
        } else if (__builtin_mul_overflow(known, shape[i], &known) || known > INT64_MAX / 8) {
            return tk_ctx_fail(ctx, "reshape: shape %s is too large", req);
        }
    }
    if (infer >= 0) {
        if (known == 0 || a->numel % known != 0)
            return tk_ctx_fail(ctx, "reshape: cannot reshape %s (%lld elements) to %s", TK_SHAPE(a, sa),
                               (long long)a->numel, req);
        want[infer] = a->numel / known;
    } else if (known != a->numel) {
        return tk_ctx_fail(ctx, "reshape: cannot reshape %s (%lld elements) to %s (%lld elements)", TK_SHAPE(a, sa),
                           (long long)a->numel, req, (long long)known);
    }
    a = tk_ctx_input(ctx, a);
    return a ? tk_op_view(ctx, op, a, ndim, want) : NULL;
}
