/* Losses: log_softmax, cross_entropy, mse_loss, bce_with_logits. */
#include "op_test.h"

static void test_log_softmax(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 2, 3 };
    tk_tensor *x = op_f32(2, s, (float[]){ 1, 2, 3, 1000, 1000, 1000 });
    tk_tensor *y = tk_log_softmax(ctx, x);
    OP_CHECK_SHAPE(y, 2, 3);
    /* log(e^1 + e^2 + e^3) = 3.4076059 */
    OP_CHECK_VALUES(y, ((float[]){ -2.4076059f, -1.4076059f, -0.40760596f, -1.0986123f, -1.0986123f, -1.0986123f }),
                    1e-6);
    TK_CHECK(!tk_ctx_failed(ctx));
    tk_tensor_release(x);
    tk_ctx_free(ctx);
}

static void test_cross_entropy_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 2, 3 }, two = 2;
    tk_tensor *x = op_f32(2, s, (float[]){ 1, 2, 3, 1, 1, 1 });
    tk_tensor *labels = op_i64(2, (int64_t[]){ 2, 0 });
    /* ce = [3.4076059 - 3, log 3] = [0.40760596, 1.0986123] */
    tk_tensor *loss = tk_cross_entropy(ctx, x, labels, NULL);
    OP_CHECK_SHAPE(loss, 1);
    OP_CHECK_VALUES(loss, ((float[]){ (0.40760596f + 1.0986123f) / 2 }), 1e-6);
    tk_tensor *w = op_f32(1, &two, (float[]){ 2, 0.5f });
    loss = tk_cross_entropy(ctx, x, labels, w);
    OP_CHECK_VALUES(loss, ((float[]){ (2 * 0.40760596f + 0.5f * 1.0986123f) / 2 }), 1e-6);
    /* [B, 1] labels and weights */
    tk_tensor *l2 = tk_tensor_new_2d(TK_I64, 2, 1), *w2 = tk_tensor_new_2d(TK_F32, 2, 1);
    tk_i64(l2)[0] = 2, tk_i64(l2)[1] = 0, tk_f32(w2)[0] = 2, tk_f32(w2)[1] = 0.5f;
    OP_CHECK_VALUES(tk_cross_entropy(ctx, x, l2, w2), ((float[]){ (2 * 0.40760596f + 0.5f * 1.0986123f) / 2 }), 1e-6);
    /* stable for large logits */
    tk_tensor *big = op_f32(2, s, (float[]){ 1000, 0, -1000, -500, 500, 0 });
    tk_tensor *l = op_i64(2, (int64_t[]){ 0, 0 });
    loss = tk_cross_entropy(ctx, big, l, NULL);
    OP_CHECK_VALUES(loss, ((float[]){ 500 }), 1e-6);
    /* the fused gradient: (softmax - onehot) * w / B */
    tk_tensor *xl = op_leaf_2d(2, 3, 1);
    tk_ctx_reset(ctx);
    loss = tk_cross_entropy(ctx, xl, labels, w);
    TK_CHECK(tk_backward(ctx, loss) == TK_OK);
    tk_tensor *g = tk_ctx_grad(ctx, xl);
    TK_CHECK(g != NULL);
    for (int r = 0; g && r < 2; r++) {
        const float *xr = tk_f32(xl) + r * 3;
        double z = exp(xr[0]) + exp(xr[1]) + exp(xr[2]);
        for (int j = 0; j < 3; j++) {
            double want = (exp(xr[j]) / z - (j == tk_i64(labels)[r])) * tk_f32(w)[r] / 2;
            TK_CHECK_NEAR(tk_f32(g)[r * 3 + j], want, 1e-6);
        }
    }
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(x, labels, w, l2, w2, big, l, xl, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    int which;
    tk_tensor *a, *b, *labels;
} loss_case;

static tk_tensor *loss_fn(tk_ctx *ctx, void *ud) {
    loss_case *c = ud;
    switch (c->which) {
    case 0:
        return gradcheck_project(ctx, tk_log_softmax(ctx, c->a));
    case 1:
        return tk_cross_entropy(ctx, c->a, c->labels, c->b);
    case 2:
        return tk_mse_loss(ctx, c->a, c->b);
    default:
        return tk_bce_with_logits(ctx, c->a, c->b);
    }
}

static void test_grads(void) {
    loss_case c = { 0, op_leaf_2d(4, 5, 1), NULL, NULL };
    TK_CHECK(gradcheck_run("log_softmax", loss_fn, &c, 1, &c.a, false, 1e-2) == 0);
    tk_tensor_release(c.a);

    /* cross-entropy with and without weights; weights require gradients too */
    c = (loss_case){ 1, op_leaf_2d(4, 5, 2), NULL, op_i64(4, (int64_t[]){ 0, 4, 2, 2 }) };
    TK_CHECK(gradcheck_run("cross_entropy", loss_fn, &c, 1, &c.a, false, 1e-2) == 0);
    c.b = op_leaf_1d(4, 3);
    op_positive(c.b, 0.1f);
    tk_tensor *leaves[2] = { c.a, c.b };
    TK_CHECK(gradcheck_run("cross_entropy weighted", loss_fn, &c, 2, leaves, false, 1e-2) == 0);
    op_release(c.a, c.b, c.labels, NULL);

    /* mse, both sides differentiated, and [B, 1] against [B] */
    c = (loss_case){ 2, op_leaf_2d(3, 4, 4), op_leaf_2d(3, 4, 5), NULL };
    leaves[0] = c.a, leaves[1] = c.b;
    TK_CHECK(gradcheck_run("mse_loss", loss_fn, &c, 2, leaves, false, 1e-2) == 0);
    op_release(c.a, c.b, NULL);
    c = (loss_case){ 2, op_leaf_2d(5, 1, 6), op_leaf_1d(5, 7), NULL };
    leaves[0] = c.a, leaves[1] = c.b;
    TK_CHECK(gradcheck_run("mse_loss [B, 1] vs [B]", loss_fn, &c, 2, leaves, false, 1e-2) == 0);
    op_release(c.a, c.b, NULL);

    /* bce with soft targets in [0, 1] */
    c = (loss_case){ 3, op_leaf_2d(3, 4, 8), op_leaf_2d(3, 4, 9), NULL };
    for (int i = 0; i < 12; i++) tk_f32(c.b)[i] = 0.5f + 0.4f * tanhf(tk_f32(c.b)[i]);
    leaves[0] = c.a, leaves[1] = c.b;
    TK_CHECK(gradcheck_run("bce_with_logits", loss_fn, &c, 2, leaves, false, 1e-2) == 0);
    op_release(c.a, c.b, NULL);
}

static void test_mse_bce_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s4 = 4, s41[2] = { 4, 1 };
    tk_tensor *p = op_f32(2, s41, (float[]){ 1, 2, 3, 4 });
    tk_tensor *t = op_f32(1, &s4, (float[]){ 1, 0, 4, 6 });
    OP_CHECK_VALUES(tk_mse_loss(ctx, p, t), ((float[]){ (0 + 4 + 1 + 4) / 4.0f }), 1e-6);
    tk_tensor *x = op_f32(1, &s4, (float[]){ 0, 0, 100, -100 });
    tk_tensor *y = op_f32(1, &s4, (float[]){ 1, 0.5f, 1, 1 });
    /* log 2, log 2, ~0, 100 */
    OP_CHECK_VALUES(tk_bce_with_logits(ctx, x, y), ((float[]){ (2 * 0.69314718f + 100) / 4 }), 1e-6);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(p, t, x, y, NULL);
    tk_ctx_free(ctx);
}

static void test_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    const char *msg = tk_ctx_error(ctx);
    tk_tensor *x = tk_tensor_new_2d(TK_F32, 3, 4);
    tk_tensor *labels = op_i64(3, (int64_t[]){ 0, 3, 4 });
    TK_CHECK(tk_cross_entropy(ctx, x, labels, NULL) == NULL);
    TK_CHECK(strcmp(msg, "cross_entropy: label 4 out of range [0, 4) at position 2") == 0);
    tk_ctx_clear_error(ctx);
    tk_i64(labels)[0] = -1;
    OP_CHECK_FAILS(ctx, tk_cross_entropy(ctx, x, labels, NULL),
                   "cross_entropy: label -1 out of range [0, 4) at position 0");
    tk_tensor *flabels = tk_tensor_new_1d(TK_F32, 3), *l2 = op_i64(2, (int64_t[]){ 0, 1 });
    OP_CHECK_FAILS(ctx, tk_cross_entropy(ctx, x, flabels, NULL),
                   "cross_entropy: labels must be int64, got float32 [3]");
    OP_CHECK_FAILS(ctx, tk_cross_entropy(ctx, x, l2, NULL),
                   "cross_entropy: labels must be [3] (one per row of logits), got [2]");
    tk_i64(labels)[0] = 0, tk_i64(labels)[2] = 1;
    tk_tensor *w2 = tk_tensor_new_1d(TK_F32, 2);
    OP_CHECK_FAILS(ctx, tk_cross_entropy(ctx, x, labels, w2),
                   "cross_entropy: weights must be [3] (one per row of logits), got [2]");
    OP_CHECK_FAILS(ctx, tk_cross_entropy(ctx, x, labels, labels),
                   "cross_entropy: weights must be float32, got int64 [3]");
    tk_tensor *v = tk_tensor_new_1d(TK_F32, 4);
    OP_CHECK_FAILS(ctx, tk_cross_entropy(ctx, v, labels, NULL), "cross_entropy: logits must be 2-D, got [4]");
    tk_tensor *empty = tk_tensor_new_2d(TK_F32, 0, 4), *no_labels = tk_tensor_new_1d(TK_I64, 0);
    OP_CHECK_FAILS(ctx, tk_cross_entropy(ctx, empty, no_labels, NULL),
                   "cross_entropy: logits must have at least one row and one class, got [0, 4]");
    OP_CHECK_FAILS(ctx, tk_cross_entropy(ctx, x, NULL, NULL), "cross_entropy: input is NULL (labels)");

    tk_tensor *y34 = tk_tensor_new_2d(TK_F32, 4, 3);
    OP_CHECK_FAILS(ctx, tk_mse_loss(ctx, x, y34),
                   "mse_loss: pred and target must have one shape, got pred [3, 4] and target [4, 3]");
    OP_CHECK_FAILS(ctx, tk_mse_loss(ctx, x, NULL), "mse_loss: input is NULL (target)");
    OP_CHECK_FAILS(ctx, tk_mse_loss(ctx, empty, empty), "mse_loss: pred is empty ([0, 4])");
    tk_tensor *ix = tk_tensor_new_2d(TK_I64, 3, 4);
    OP_CHECK_FAILS(ctx, tk_bce_with_logits(ctx, ix, x), "bce_with_logits: logits must be float32, got int64 [3, 4]");
    tk_tensor *t = tk_tensor_new_2d(TK_F32, 3, 4);
    tk_f32(t)[5] = 1.5f;
    OP_CHECK_FAILS(ctx, tk_bce_with_logits(ctx, x, t), "bce_with_logits: target 1.5 out of range [0, 1] at position 5");
    OP_CHECK_FAILS(ctx, tk_log_softmax(ctx, ix), "log_softmax: logits must be float32, got int64");
    TK_CHECK(tk_log_softmax(ctx, NULL) == NULL);
    TK_CHECK_ERROR(msg, "log_softmax: input is NULL");
    op_release(x, labels, flabels, l2, w2, v, empty, no_labels, y34, ix, t, NULL);
    tk_ctx_free(ctx);
}

int main(void) {
    TK_RUN(test_log_softmax);
    TK_RUN(test_cross_entropy_values);
    TK_RUN(test_mse_bce_values);
    TK_RUN(test_grads);
    TK_RUN(test_errors);
    return tk_test_summary();
}
