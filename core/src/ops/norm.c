/* Normalisations: l2norm, cosine similarity, dropout and batch normalisation. */
#include "ops_impl.h"
#include "simd.h"

#define L2_EPS 1e-12 /* Keras' l2_normalize epsilon on the squared norm */

static double dot_f64(const float *x, const float *y, int64_t n) { return tk_dot_f64(x, y, n); }

/* y[j] = a * x[j] (+ y[j] when accumulating) */
static void scale_row(float *y, const float *x, float a, int64_t n, bool accumulate) {
    int64_t j = 0;
    for (; j + VL <= n; j += VL) {
        vf v = a * vf_load(x + j);
        vf_store(y + j, accumulate ? vf_load(y + j) + v : v);
    }
    for (; j < n; j++) y[j] = accumulate ? y[j] + a * x[j] : a * x[j];
}

/* 1 / sqrt(max(sum(x^2), eps)) of a row; *clamped tells whether the max took eps. */
static float inv_norm(const float *x, int64_t n, bool *clamped) {
    double s = dot_f64(x, x, n);
    *clamped = !(s > L2_EPS);
    return (float)(1.0 / sqrt(*clamped ? L2_EPS : s));
}

/* --- l2norm: y = x * r, r = 1 / sqrt(max(|x|^2, eps)) ---
 * dx = r (dy - y (dy . y)) where the norm is above eps; dx = r dy where it is clamped
 * (r is then a constant). saved: r per row, negated for clamped rows. */

static void l2norm_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *a = node->in[0];
    bool fresh; /* written, not accumulated */
    float *da = tk_op_grad_w(ctx, a, &fresh);
    if (!da) return;
    const float *r = node->saved, *y = tk_f32(node->out), *dy = tk_f32(node->out->grad);
    int64_t rows = tk_op_rows(a), n = tk_op_cols(a);
    for (int64_t i = 0; i < rows; i++) {
        const float *yi = y + i * n, *dyi = dy + i * n;
        float *dai = da + i * n;
        float ri = r[i];
        if (ri < 0.0f) { /* clamped */
            scale_row(dai, dyi, -ri, n, !fresh);
            continue;
        }
        float d = (float)dot_f64(dyi, yi, n);
        int64_t j = 0;
        if (fresh) {
            for (; j + VL <= n; j += VL) vf_store(dai + j, ri * (vf_load(dyi + j) - vf_load(yi + j) * d));
            for (; j < n; j++) dai[j] = ri * (dyi[j] - yi[j] * d);
            continue;
        }
        for (; j + VL <= n; j += VL)
            vf_store(dai + j, vf_load(dai + j) + ri * (vf_load(dyi + j) - vf_load(yi + j) * d));
        for (; j < n; j++) dai[j] += ri * (dyi[j] - yi[j] * d);
    }
}

void tk_l2norm_rows(float *y, const float *x, int64_t rows, int64_t n) {
    for (int64_t i = 0; i < rows; i++) {
        bool clamped;
        scale_row(y + i * n, x + i * n, inv_norm(x + i * n, n, &clamped), n, false);
    }
}

tk_tensor *tk_l2norm(tk_ctx *ctx, tk_tensor *a) {
    const char *op = "l2norm";
    TK_OP_INPUT(ctx, op, a);
    if (!tk_check_f32(ctx, op, "a", a)) return NULL;
    if (a->ndim < 1) return tk_ctx_fail(ctx, "l2norm: a must have at least one dimension, got a scalar");
    a = tk_ctx_input(ctx, a);
    tk_tensor *out = a ? tk_ctx_empty(ctx, TK_F32, a->ndim, a->shape) : NULL;
    if (!out) return NULL;
    bool grad = tk_ctx_wants_grad(ctx, 1, &a);
    int64_t rows = tk_op_rows(a), n = tk_op_cols(a);
    float *saved = grad ? tk_ctx_alloc(ctx, (size_t)rows * sizeof *saved) : NULL;
    if (grad && !saved) return NULL;
    const float *x = tk_f32(a);
    float *y = tk_f32(out);
    if (!saved) {
        tk_l2norm_rows(y, x, rows, n);
    } else {
        for (int64_t i = 0; i < rows; i++) {
            bool clamped;
            float r = inv_norm(x + i * n, n, &clamped);
            scale_row(y + i * n, x + i * n, r, n, false);
            saved[i] = clamped ? -r : r;
        }
    }
    if (grad) {
        tk_node *node = tk_ctx_record(ctx, op, l2norm_backward, out, 1, &a);
        if (!node) return NULL;
        node->saved = saved;
    }
    return out;
}

/* --- cosine: c = (a . b) ra rb, with ra, rb as in l2norm ---
 * dc/da = ra rb b - c ra^2 a (the second term only where |a|^2 > eps); same for b.
 * saved: ra, rb per row, negated when clamped. */

static void cosine_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *a = node->in[0], *b = node->in[1];
    float *da = tk_op_grad(ctx, a);
    float *db = tk_op_grad(ctx, b);
    if (ctx->failed) return;
    const float *r = node->saved, *c = tk_f32(node->out), *dc = tk_f32(node->out->grad);
    const float *av = tk_f32(a), *bv = tk_f32(b);
    int64_t rows = tk_op_rows(a), n = tk_op_cols(a);
    for (int64_t i = 0; i < rows; i++) {
        float ra = fabsf(r[2 * i]), rb = fabsf(r[2 * i + 1]), g = dc[i];
        float ka = r[2 * i] > 0.0f ? g * c[i] * ra * ra : 0.0f; /* 0 where clamped */
        float kb = r[2 * i + 1] > 0.0f ? g * c[i] * rb * rb : 0.0f;
        float gab = g * ra * rb;
        const float *ai = av + i * n, *bi = bv + i * n;
        if (da)
            for (int64_t j = 0; j < n; j++) da[i * n + j] += gab * bi[j] - ka * ai[j];
        if (db)
            for (int64_t j = 0; j < n; j++) db[i * n + j] += gab * ai[j] - kb * bi[j];
    }
}

tk_tensor *tk_cosine(tk_ctx *ctx, tk_tensor *a, tk_tensor *b) {
    const char *op = "cosine";
    TK_OP_INPUT(ctx, op, a);
    TK_OP_INPUT(ctx, op, b);
    if (!tk_check_f32(ctx, op, "a", a) || !tk_check_f32(ctx, op, "b", b) || !tk_check_rank(ctx, op, "a", a, 2))
        return NULL;
    if (!tk_tensor_same_shape(a, b)) {
        char sa[TK_SHAPE_LEN], sb[TK_SHAPE_LEN];
        return tk_ctx_fail(ctx, "cosine: a and b must have one shape [B, D], got a %s and b %s", TK_SHAPE(a, sa),
                           TK_SHAPE(b, sb));
    }
    a = tk_ctx_input(ctx, a);
    b = tk_ctx_input(ctx, b);
    if (!a || !b) return NULL;
    int64_t rows = a->shape[0], n = a->shape[1], shape[2] = { rows, 1 };
    tk_tensor *out = tk_ctx_empty(ctx, TK_F32, 2, shape);
    if (!out) return NULL;
    tk_tensor *in[2] = { a, b };
    bool grad = tk_ctx_wants_grad(ctx, 2, in);
    float *saved = grad ? tk_ctx_alloc(ctx, (size_t)(2 * rows) * sizeof *saved) : NULL;
    if (grad && !saved) return NULL;
    const float *av = tk_f32(a), *bv = tk_f32(b);
    float *y = tk_f32(out);
    for (int64_t i = 0; i < rows; i++) {
        const float *ai = av + i * n, *bi = bv + i * n;
        bool ca, cb;
        float ra = inv_norm(ai, n, &ca), rb = inv_norm(bi, n, &cb);
        double dot = 0.0;
        for (int64_t j = 0; j < n; j++) dot += (double)ai[j] * bi[j];
        y[i] = (float)dot * ra * rb;
        if (saved) {
            saved[2 * i] = ca ? -ra : ra;
            saved[2 * i + 1] = cb ? -rb : rb;
        }
    }
    if (grad) {
        tk_node *node = tk_ctx_record(ctx, op, cosine_backward, out, 2, in);
        if (!node) return NULL;
        node->saved = saved;
    }
    return out;
}

/* --- dropout: inverted; the mask (0 or 1/(1-rate) per element) is saved --- */

static void dropout_backward(tk_ctx *ctx, tk_node *node) {
    float *da = tk_op_grad(ctx, node->in[0]);
    if (!da) return;
    const float *mask = node->saved, *dy = tk_f32(node->out->grad);
    for (int64_t i = 0; i < node->out->numel; i++) da[i] += dy[i] * mask[i];
}

tk_tensor *tk_dropout(tk_ctx *ctx, tk_tensor *a, float rate) {
    const char *op = "dropout";
    TK_OP_INPUT(ctx, op, a);
    if (!tk_check_f32(ctx, op, "a", a)) return NULL;
    if (!(rate >= 0.0f && rate < 1.0f))
        return tk_ctx_fail(ctx, "dropout: rate must be in [0, 1), got %g", (double)rate);
    a = tk_ctx_input(ctx, a);
    if (!a) return NULL;
    if (!ctx->training || rate == 0.0f) return tk_op_view(ctx, op, a, a->ndim, a->shape);
    tk_tensor *out = tk_ctx_empty(ctx, TK_F32, a->ndim, a->shape);
    float *mask = out ? tk_ctx_alloc(ctx, (size_t)a->numel * sizeof *mask) : NULL;
    if (!mask) return NULL;
    float keep = 1.0f / (1.0f - rate);
    const float *x = tk_f32(a);
    float *y = tk_f32(out);
    for (int64_t i = 0; i < a->numel; i++) {
        mask[i] = tk_rng_uniform(ctx->rng) >= rate ? keep : 0.0f;
        y[i] = x[i] * mask[i];
    }
    if (tk_ctx_wants_grad(ctx, 1, &a)) {
        tk_node *node = tk_ctx_record(ctx, op, dropout_backward, out, 1, &a);
        if (!node) return NULL;
        node->saved = mask;
    }
    return out;
}

/* --- batch_norm over [B, D] ---
 * xhat = (x - mean) * inv, inv = 1 / sqrt(var + eps), y = gamma * xhat + beta.
 * saved: mean[D] and inv[D] (batch statistics in training, running ones in evaluation);
 * the backward recomputes xhat from x. With g = dy * gamma, training:
 *   dx = inv / B * (B g - sum_b g - xhat sum_b(g xhat)),
 * evaluation (constant statistics): dx = g * inv; both: dgamma = sum_b dy xhat,
 * dbeta = sum_b dy. */

static void batch_norm_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *x = node->in[0], *gamma = node->in[1], *beta = node->in[2];
    bool training = node->arg.i[0];
    int64_t rows = x->shape[0], d = x->shape[1];
    const float *mean = node->saved, *inv = mean + d;
    const float *xv = tk_f32(x), *dy = tk_f32(node->out->grad), *gv = gamma ? tk_f32(gamma) : NULL;
    float *dx = tk_op_grad(ctx, x);
    float *dgamma = tk_op_grad(ctx, gamma);
    float *dbeta = tk_op_grad(ctx, beta);
    /* column sums of dy and dy * xhat */
    float *sum_dy = tk_ctx_alloc(ctx, (size_t)(2 * d) * sizeof *sum_dy);
    if (ctx->failed || !sum_dy) return;
    float *sum_dy_xhat = sum_dy + d;
    memset(sum_dy, 0, (size_t)(2 * d) * sizeof *sum_dy);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++) {
            float g = dy[r * d + j];
            sum_dy[j] += g;
            sum_dy_xhat[j] += g * (xv[r * d + j] - mean[j]) * inv[j];
        }
    if (dgamma)
        for (int64_t j = 0; j < d; j++) dgamma[j] += sum_dy_xhat[j];
    if (dbeta)
        for (int64_t j = 0; j < d; j++) dbeta[j] += sum_dy[j];
    if (!dx) return;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++) {
            float s = gv ? gv[j] : 1.0f, g = dy[r * d + j];
            if (training) {
                float xhat = (xv[r * d + j] - mean[j]) * inv[j];
                dx[r * d + j] += s * inv[j] * (g - (sum_dy[j] + xhat * sum_dy_xhat[j]) / (float)rows);
            } else {
                dx[r * d + j] += s * inv[j] * g;
            }
        }
}

static bool check_vector(tk_ctx *ctx, const char *arg, const tk_tensor *t, int64_t d) {
    if (!tk_check_f32(ctx, "batch_norm", arg, t)) return false;
    if ((t->ndim == 1 && t->shape[0] == d) || (t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == d)) return true;
    char s[TK_SHAPE_LEN];
    tk_ctx_fail(ctx, "batch_norm: %s must be [%lld] for x with %lld features, got %s", arg, (long long)d, (long long)d,
                TK_SHAPE(t, s));
    return false;
}

tk_tensor *tk_batch_norm(tk_ctx *ctx, tk_tensor *x, tk_tensor *gamma, tk_tensor *beta, tk_tensor *running_mean,
                         tk_tensor *running_var, float momentum, float eps) {
    const char *op = "batch_norm";
    TK_OP_INPUT(ctx, op, x);
    TK_OP_INPUT(ctx, op, running_mean);
    TK_OP_INPUT(ctx, op, running_var);
    if (!tk_check_f32(ctx, op, "x", x) || !tk_check_rank(ctx, op, "x", x, 2)) return NULL;
    int64_t rows = x->shape[0], d = x->shape[1];
    if ((gamma && !check_vector(ctx, "gamma", gamma, d)) || (beta && !check_vector(ctx, "beta", beta, d)) ||
        !check_vector(ctx, "running_mean", running_mean, d) || !check_vector(ctx, "running_var", running_var, d))
        return NULL;
    if (!(eps >= 0.0f)) return tk_ctx_fail(ctx, "batch_norm: eps must be >= 0, got %g", (double)eps);
    if (!(momentum >= 0.0f && momentum <= 1.0f))
        return tk_ctx_fail(ctx, "batch_norm: momentum must be in [0, 1], got %g", (double)momentum);
    bool training = ctx->training;
    if (training && rows < 1)
        return tk_ctx_fail(ctx, "batch_norm: training needs at least one row, got x [0, %lld]", (long long)d);
    bool has_gamma = gamma != NULL, has_beta = beta != NULL;
    x = tk_ctx_input(ctx, x);
    gamma = tk_ctx_input(ctx, gamma);
    beta = tk_ctx_input(ctx, beta);
    if (!x || (has_gamma && !gamma) || (has_beta && !beta)) return NULL;
    /* The running statistics are read (evaluation) or written later through a deferred
     * update (training), never differentiated: they are used as given, not aliased. */
    tk_tensor *out = tk_ctx_empty(ctx, TK_F32, 2, x->shape);
    float *stats = out ? tk_ctx_alloc(ctx, (size_t)(2 * d) * sizeof *stats) : NULL;
    if (!stats) return NULL;
    float *mean = stats, *inv = stats + d;
    const float *xv = tk_f32(x);
    if (training) {
        /* two passes in double: mean, then the biased variance */
        double *acc = tk_ctx_alloc(ctx, (size_t)(2 * d) * sizeof *acc);
        float *unbiased = tk_ctx_alloc(ctx, (size_t)d * sizeof *unbiased);
        if (!acc || !unbiased) return NULL;
        double *sum = acc, *sq = acc + d;
        memset(acc, 0, (size_t)(2 * d) * sizeof *acc);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < d; j++) sum[j] += xv[r * d + j];
        for (int64_t j = 0; j < d; j++) sum[j] /= (double)rows;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < d; j++) {
                double c = xv[r * d + j] - sum[j];
                sq[j] += c * c;
            }
        /* a batch of one has no unbiased variance: its (zero) biased one is used */
        double bessel = rows > 1 ? (double)rows / (double)(rows - 1) : 1.0;
        for (int64_t j = 0; j < d; j++) {
            double var = sq[j] / (double)rows;
            mean[j] = (float)sum[j];
            inv[j] = (float)(1.0 / sqrt(var + eps));
            unbiased[j] = (float)(var * bessel);
        }
        if (tk_ctx_defer_update(ctx, running_mean, mean, momentum, 1.0f - momentum) != TK_OK ||
            tk_ctx_defer_update(ctx, running_var, unbiased, momentum, 1.0f - momentum) != TK_OK)
            return NULL;
    } else {
        const float *rm = tk_f32(running_mean), *rv = tk_f32(running_var);
        for (int64_t j = 0; j < d; j++) {
            mean[j] = rm[j];
            inv[j] = (float)(1.0 / sqrt((double)rv[j] + eps));
        }
    }
    const float *gv = gamma ? tk_f32(gamma) : NULL, *bv = beta ? tk_f32(beta) : NULL;
    float *y = tk_f32(out);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++) {
            float v = (xv[r * d + j] - mean[j]) * inv[j];
            if (gv) v *= gv[j];
            if (bv) v += bv[j];
            y[r * d + j] = v;
        }
    tk_tensor *in[3] = { x, gamma, beta };
    if (tk_ctx_wants_grad(ctx, 3, in)) {
        tk_node *node = tk_ctx_record(ctx, op, batch_norm_backward, out, 3, in);
        if (!node) return NULL;
        node->arg.i[0] = training;
        node->saved = stats;
    }
    return out;
}
