/* Losses: log-softmax, softmax cross-entropy, mean squared error and binary
 * cross-entropy with logits. Each loss is a mean and returns a tensor [1]. */
#include "ops_impl.h"

/* Whether two tensors hold the same elements in the same layout, allowing one extra
 * trailing dimension of 1 on either side ([B] and [B, 1]: predictions and targets). */
static bool loss_shapes_match(const tk_tensor *a, const tk_tensor *b) {
    int32_t na = a->ndim, nb = b->ndim;
    if (na == nb + 1 && a->shape[na - 1] == 1)
        na--;
    else if (nb == na + 1 && b->shape[nb - 1] == 1)
        nb--;
    if (na != nb) return false;
    for (int32_t i = 0; i < na; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

static tk_tensor *scalar_out(tk_ctx *ctx, double v) {
    int64_t one = 1;
    tk_tensor *out = tk_ctx_empty(ctx, TK_F32, 1, &one);
    if (out) tk_f32(out)[0] = (float)v;
    return out;
}

/* --- log_softmax over the last axis: y = x - max - log sum exp(x - max) ---
 * dx = dy - softmax * sum(dy), softmax = exp(y). */

static void log_softmax_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *a = node->in[0];
    float *da = tk_op_grad(ctx, a);
    if (!da) return;
    const float *y = tk_f32(node->out), *dy = tk_f32(node->out->grad);
    int64_t rows = tk_op_rows(a), n = tk_op_cols(a);
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * n, *dyr = dy + r * n;
        float *dar = da + r * n;
        double s = 0.0;
        for (int64_t j = 0; j < n; j++) s += dyr[j];
        for (int64_t j = 0; j < n; j++) dar[j] += dyr[j] - expf(yr[j]) * (float)s;
    }
}

/* log sum exp of a row, stable, as max + log sum exp(x - max): the two parts are kept
 * apart so x - lse is computed as (x - max) - log_sum without rounding a large lse. */
static void row_logsumexp(const float *x, int64_t n, float *max, float *log_sum) {
    float m = -INFINITY;
    for (int64_t j = 0; j < n; j++)
        if (x[j] > m) m = x[j];
    if (isinf(m)) { /* all -inf, or an inf: no finite shift exists */
        *max = m;
        *log_sum = 0.0f;
        return;
    }
    double s = 0.0;
    for (int64_t j = 0; j < n; j++) s += expf(x[j] - m);
    *max = m;
    *log_sum = (float)log(s);
}

tk_tensor *tk_log_softmax(tk_ctx *ctx, tk_tensor *logits) {
    const char *op = "log_softmax";
    TK_OP_INPUT(ctx, op, logits);
    if (!tk_check_f32(ctx, op, "logits", logits)) return NULL;
    char s[TK_SHAPE_LEN];
    if (logits->ndim < 1 || tk_op_cols(logits) < 1)
        return tk_ctx_fail(ctx, "log_softmax: logits must be [B, C] with C >= 1, got %s", TK_SHAPE(logits, s));
    tk_tensor *a = tk_ctx_input(ctx, logits);
    tk_tensor *out = a ? tk_ctx_empty(ctx, TK_F32, a->ndim, a->shape) : NULL;
    if (!out) return NULL;
    int64_t rows = tk_op_rows(a), n = tk_op_cols(a);
    const float *x = tk_f32(a);
    float *y = tk_f32(out);
    for (int64_t r = 0; r < rows; r++) {
        float m, ls;
        row_logsumexp(x + r * n, n, &m, &ls);
        for (int64_t j = 0; j < n; j++) y[r * n + j] = (x[r * n + j] - m) - ls;
    }
    if (tk_ctx_wants_grad(ctx, 1, &a) && !tk_ctx_record(ctx, op, log_softmax_backward, out, 1, &a)) return NULL;
    return out;
}

/* --- cross_entropy: mean over rows of w_b ce_b, ce_b = lse_b - x[b, label_b] ---
 * dx[b] = g w_b / B (softmax(x[b]) - onehot(label_b)); dw_b = g ce_b / B.
 * saved: max and log-sum of each row (lse = max + log_sum). */

static void cross_entropy_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *logits = node->in[0], *labels = node->in[1], *weights = node->in[2];
    float *dx = tk_op_grad(ctx, logits);
    float *dw = tk_op_grad(ctx, weights);
    if (ctx->failed) return;
    int64_t rows = logits->shape[0], n = logits->shape[1];
    const float *x = tk_f32(logits), *lse = node->saved, *w = weights ? tk_f32(weights) : NULL;
    const int64_t *lab = tk_i64(labels);
    float g = tk_f32(node->out->grad)[0] / (float)rows;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float m = lse[2 * r], ls = lse[2 * r + 1];
        if (dw) dw[r] += g * ((m - xr[lab[r]]) + ls);
        if (!dx) continue;
        float gw = w ? g * w[r] : g;
        float *dxr = dx + r * n;
        for (int64_t j = 0; j < n; j++) dxr[j] += gw * expf((xr[j] - m) - ls);
        dxr[lab[r]] -= gw;
    }
}

static bool check_per_row(tk_ctx *ctx, const char *op, const char *arg, const tk_tensor *t, int64_t rows) {
    if ((t->ndim == 1 && t->shape[0] == rows) || (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == 1)) return true;
    char s[TK_SHAPE_LEN];
    tk_ctx_fail(ctx, "%s: %s must be [%lld] (one per row of logits), got %s", op, arg, (long long)rows, TK_SHAPE(t, s));
    return false;
}

tk_tensor *tk_cross_entropy(tk_ctx *ctx, tk_tensor *logits, tk_tensor *labels, tk_tensor *weights) {
    const char *op = "cross_entropy";
    TK_OP_INPUT(ctx, op, logits);
    TK_OP_INPUT(ctx, op, labels);
    char s[TK_SHAPE_LEN];
    if (!tk_check_f32(ctx, op, "logits", logits) || !tk_check_rank(ctx, op, "logits", logits, 2)) return NULL;
    int64_t rows = logits->shape[0], n = logits->shape[1];
    if (rows < 1 || n < 1)
        return tk_ctx_fail(ctx, "cross_entropy: logits must have at least one row and one class, got %s",
                           TK_SHAPE(logits, s));
    if (labels->dtype != TK_I64)
        return tk_ctx_fail(ctx, "cross_entropy: labels must be int64, got %s %s", tk_dtype_name(labels->dtype),
                           TK_SHAPE(labels, s));
    if (!check_per_row(ctx, op, "labels", labels, rows)) return NULL;
    if (weights && (!tk_check_f32(ctx, op, "weights", weights) || !check_per_row(ctx, op, "weights", weights, rows)))
        return NULL;
    const int64_t *lab = tk_i64(labels);
    for (int64_t r = 0; r < rows; r++)
        if (lab[r] < 0 || lab[r] >= n)
            return tk_ctx_fail(ctx, "cross_entropy: label %lld out of range [0, %lld) at position %lld",
                               (long long)lab[r], (long long)n, (long long)r);
    bool has_weights = weights != NULL;
    logits = tk_ctx_input(ctx, logits);
    weights = tk_ctx_input(ctx, weights);
    if (!logits || (has_weights && !weights)) return NULL;
    float *lse = tk_ctx_alloc(ctx, (size_t)(2 * rows) * sizeof *lse);
    if (!lse) return NULL;
    const float *x = tk_f32(logits), *w = weights ? tk_f32(weights) : NULL;
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        row_logsumexp(x + r * n, n, &lse[2 * r], &lse[2 * r + 1]);
        double ce = ((double)lse[2 * r] - x[r * n + lab[r]]) + lse[2 * r + 1];
        total += w ? w[r] * ce : ce;
    }
    tk_tensor *out = scalar_out(ctx, total / (double)rows);
    if (!out) return NULL;
    tk_tensor *in[3] = { logits, labels, weights };
    if (tk_ctx_wants_grad(ctx, 3, in)) {
        tk_node *node = tk_ctx_record(ctx, op, cross_entropy_backward, out, 3, in);
        if (!node) return NULL;
        node->saved = lse;
    }
    return out;
}

/* --- mse_loss: mean (p - t)^2; dp = 2 (p - t) g / n, dt = -dp --- */

static void mse_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *p = node->in[0], *t = node->in[1];
    float *dp = tk_op_grad(ctx, p);
    float *dt = tk_op_grad(ctx, t);
    if (ctx->failed) return;
    int64_t n = p->numel;
    const float *pv = tk_f32(p), *tv = tk_f32(t);
    float k = 2.0f * tk_f32(node->out->grad)[0] / (float)n;
    for (int64_t i = 0; i < n; i++) {
        float d = k * (pv[i] - tv[i]);
        if (dp) dp[i] += d;
        if (dt) dt[i] -= d;
    }
}

static bool check_pair(tk_ctx *ctx, const char *op, const char *an, const tk_tensor *a, const char *bn,
                       const tk_tensor *b) {
    if (!tk_check_f32(ctx, op, an, a) || !tk_check_f32(ctx, op, bn, b)) return false;
    char sa[TK_SHAPE_LEN], sb[TK_SHAPE_LEN];
    if (!loss_shapes_match(a, b)) {
        tk_ctx_fail(ctx, "%s: %s and %s must have one shape, got %s %s and %s %s", op, an, bn, an, TK_SHAPE(a, sa), bn,
                    TK_SHAPE(b, sb));
        return false;
    }
    if (a->numel == 0) {
        tk_ctx_fail(ctx, "%s: %s is empty (%s): the mean of no elements is undefined", op, an, TK_SHAPE(a, sa));
        return false;
    }
    return true;
}

tk_tensor *tk_mse_loss(tk_ctx *ctx, tk_tensor *pred, tk_tensor *target) {
    const char *op = "mse_loss";
    TK_OP_INPUT(ctx, op, pred);
    TK_OP_INPUT(ctx, op, target);
    if (!check_pair(ctx, op, "pred", pred, "target", target)) return NULL;
    pred = tk_ctx_input(ctx, pred);
    target = tk_ctx_input(ctx, target);
    if (!pred || !target) return NULL;
    const float *pv = tk_f32(pred), *tv = tk_f32(target);
    double total = 0.0;
    for (int64_t i = 0; i < pred->numel; i++) {
        double d = (double)pv[i] - tv[i];
        total += d * d;
    }
    tk_tensor *out = scalar_out(ctx, total / (double)pred->numel);
    if (!out) return NULL;
    tk_tensor *in[2] = { pred, target };
    if (tk_ctx_wants_grad(ctx, 2, in) && !tk_ctx_record(ctx, op, mse_backward, out, 2, in)) return NULL;
    return out;
}

/* --- bce_with_logits: mean max(x, 0) - x t + log1p(e^-|x|) ---
 * dx = (sigmoid(x) - t) g / n, dt = -x g / n. */

static void bce_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *x = node->in[0], *t = node->in[1];
    float *dx = tk_op_grad(ctx, x);
    float *dt = tk_op_grad(ctx, t);
    if (ctx->failed) return;
    int64_t n = x->numel;
    const float *xv = tk_f32(x), *tv = tk_f32(t);
    float k = tk_f32(node->out->grad)[0] / (float)n;
    for (int64_t i = 0; i < n; i++) {
        float v = xv[i];
        if (dx) {
            float sig = v >= 0.0f ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v));
            dx[i] += k * (sig - tv[i]);
        }
        if (dt) dt[i] -= k * v;
    }
}

tk_tensor *tk_bce_with_logits(tk_ctx *ctx, tk_tensor *logits, tk_tensor *targets) {
    const char *op = "bce_with_logits";
    TK_OP_INPUT(ctx, op, logits);
    TK_OP_INPUT(ctx, op, targets);
    if (!check_pair(ctx, op, "logits", logits, "targets", targets)) return NULL;
    const float *tv = tk_f32(targets);
    for (int64_t i = 0; i < targets->numel; i++)
        if (!(tv[i] >= 0.0f && tv[i] <= 1.0f))
            return tk_ctx_fail(ctx, "bce_with_logits: target %g out of range [0, 1] at position %lld", (double)tv[i],
                               (long long)i);
    logits = tk_ctx_input(ctx, logits);
    targets = tk_ctx_input(ctx, targets);
    if (!logits || !targets) return NULL;
    const float *xv = tk_f32(logits);
    double total = 0.0;
    for (int64_t i = 0; i < logits->numel; i++) {
        float v = xv[i];
        total += (double)(v > 0.0f ? v : 0.0f) - (double)v * tv[i] + (double)log1pf(expf(-fabsf(v)));
    }
    tk_tensor *out = scalar_out(ctx, total / (double)logits->numel);
    if (!out) return NULL;
    tk_tensor *in[2] = { logits, targets };
    if (tk_ctx_wants_grad(ctx, 2, in) && !tk_ctx_record(ctx, op, bce_backward, out, 2, in)) return NULL;
    return out;
}
