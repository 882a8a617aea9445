/* l2norm, cosine, dropout and batch_norm. */
#include "op_test.h"
#include "simd.h"
#include "internal.h"

/* --- l2norm --- */

static void test_l2norm_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 3, 2 };
    tk_tensor *a = op_f32(2, s, (float[]){ 3, 4, 0, 0, 1e-8f, 0 });
    tk_tensor *y = tk_l2norm(ctx, a);
    OP_CHECK_SHAPE(y, 3, 2);
    /* a zero row stays zero; a tiny one is divided by sqrt(1e-12) = 1e-6 */
    OP_CHECK_VALUES(y, ((float[]){ 0.6f, 0.8f, 0, 0, 0.01f, 0 }), 1e-6);
    int64_t n = 4;
    tk_tensor *v = op_f32(1, &n, (float[]){ 1, 1, 1, 1 });
    OP_CHECK_VALUES(tk_l2norm(ctx, v), ((float[]){ 0.5f, 0.5f, 0.5f, 0.5f }), 1e-7);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(a, v, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    tk_tensor *a, *b;
} pair_case;

static tk_tensor *l2norm_fn(tk_ctx *ctx, void *ud) {
    pair_case *c = ud;
    return gradcheck_project(ctx, tk_l2norm(ctx, c->a));
}

static tk_tensor *cosine_fn(tk_ctx *ctx, void *ud) {
    pair_case *c = ud;
    return gradcheck_project(ctx, tk_cosine(ctx, c->a, c->b));
}

static void test_l2norm_grads(void) {
    pair_case c = { op_leaf_2d(4, 5, 1), NULL };
    TK_CHECK(gradcheck_run("l2norm", l2norm_fn, &c, 1, &c.a, false, 1e-2) == 0);
    tk_tensor_release(c.a);
    int64_t s3[3] = { 2, 2, 3 };
    c.a = op_leaf(3, s3, 1, 2);
    TK_CHECK(gradcheck_run("l2norm 3-D", l2norm_fn, &c, 1, &c.a, false, 1e-2) == 0);
    tk_tensor_release(c.a);
    c.a = op_leaf_2d(3, 19, 4); /* rows of 19: vector bodies and tails */
    TK_CHECK(gradcheck_run("l2norm wide", l2norm_fn, &c, 1, &c.a, false, 1e-2) == 0);
    tk_tensor_release(c.a);

    /* Where the norm is clamped, 1/sqrt(1e-12) is a constant: dx = 1e6 dy exactly
     * (finite differences of 1e-2 would leave the clamped region, so by hand). */
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 2, 2 };
    tk_tensor *a = op_leaf(2, s, 1, 3);
    tk_f32(a)[2] = 3e-7f, tk_f32(a)[3] = -4e-7f; /* row 1: |x|^2 = 2.5e-13 < 1e-12 */
    tk_tensor *w = op_f32(2, s, (float[]){ 0.5f, -1, 2, 3 });
    tk_tensor *loss = tk_sum(ctx, tk_mul(ctx, tk_l2norm(ctx, a), w), -1, false);
    TK_CHECK(tk_backward(ctx, loss) == TK_OK);
    tk_tensor *g = tk_ctx_grad(ctx, a);
    TK_CHECK(g != NULL);
    if (g) {
        TK_CHECK_NEAR(tk_f32(g)[2], 2e6, 1);
        TK_CHECK_NEAR(tk_f32(g)[3], 3e6, 1);
        /* row 0 is not clamped: r (w - y (w . y)) */
        double x0 = tk_f32(a)[0], x1 = tk_f32(a)[1], nrm = sqrt(x0 * x0 + x1 * x1);
        double y0 = x0 / nrm, y1 = x1 / nrm, d = 0.5 * y0 - 1 * y1;
        TK_CHECK_NEAR(tk_f32(g)[0], (0.5 - y0 * d) / nrm, 1e-4);
        TK_CHECK_NEAR(tk_f32(g)[1], (-1 - y1 * d) / nrm, 1e-4);
    }
    op_release(a, w, NULL);
    tk_ctx_free(ctx);
}

/* --- cosine --- */

static void test_cosine(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 3, 2 };
    tk_tensor *a = op_f32(2, s, (float[]){ 1, 0, 3, 4, 0, 0 });
    tk_tensor *b = op_f32(2, s, (float[]){ 0, 2, 6, 8, 1, 1 });
    tk_tensor *y = tk_cosine(ctx, a, b);
    OP_CHECK_SHAPE(y, 3, 1);
    OP_CHECK_VALUES(y, ((float[]){ 0, 1, 0 }), 1e-6);
    tk_tensor *c = op_f32(2, s, (float[]){ 1, 1, -3, -4, 2, 0 });
    OP_CHECK_VALUES(tk_cosine(ctx, a, c), ((float[]){ 0.70710678f, -1, 0 }), 1e-6);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(a, b, c, NULL);
    tk_ctx_free(ctx);

    pair_case p = { op_leaf_2d(4, 5, 7), op_leaf_2d(4, 5, 8) };
    tk_tensor *leaves[2] = { p.a, p.b };
    TK_CHECK(gradcheck_run("cosine", cosine_fn, &p, 2, leaves, false, 1e-2) == 0);
    tk_tensor_release(p.b);
    p.b = p.a; /* cos(a, a) = 1: zero gradient */
    TK_CHECK(gradcheck_run("cosine(a, a)", cosine_fn, &p, 1, leaves, false, 1e-2) == 0);
    tk_tensor_release(p.a);

    /* a clamped row (|a|^2 < 1e-12): c = (a . b) 1e6 rb, so dc/da = 1e6 rb b and
     * dc/db = 1e6 rb a - c rb^2 b, by hand */
    ctx = tk_ctx_new(1);
    int64_t s12[2] = { 1, 2 };
    tk_tensor *ta = op_leaf(2, s12, 1, 1), *tb = op_leaf(2, s12, 1, 2);
    tk_f32(ta)[0] = 3e-7f, tk_f32(ta)[1] = 1e-7f;
    tk_f32(tb)[0] = 3, tk_f32(tb)[1] = 4;
    y = tk_cosine(ctx, ta, tb);
    TK_CHECK(y && tk_backward(ctx, y) == TK_OK);
    tk_tensor *ga = tk_ctx_grad(ctx, ta), *gb = tk_ctx_grad(ctx, tb);
    TK_CHECK(ga && gb);
    if (y && ga && gb) {
        double cv = (3e-7 * 3 + 1e-7 * 4) * 1e6 / 5;
        TK_CHECK_NEAR(tk_f32(y)[0], cv, 1e-6);
        TK_CHECK_NEAR(tk_f32(ga)[0], 1e6 * 3 / 5.0, 0.1);
        TK_CHECK_NEAR(tk_f32(ga)[1], 1e6 * 4 / 5.0, 0.1);
        TK_CHECK_NEAR(tk_f32(gb)[0], 1e6 / 5.0 * 3e-7 - cv / 25 * 3, 1e-6);
        TK_CHECK_NEAR(tk_f32(gb)[1], 1e6 / 5.0 * 1e-7 - cv / 25 * 4, 1e-6);
    }
    op_release(ta, tb, NULL);
    tk_ctx_free(ctx);
}

/* --- dropout --- */

static void test_dropout_values(void) {
    tk_ctx *ctx = tk_ctx_new(5);
    tk_tensor *a = tk_tensor_new_2d(TK_F32, 100, 100);
    tk_tensor_fill(a, 2.0);
    /* evaluation: identity, as an arena view */
    tk_tensor *y = tk_dropout(ctx, a, 0.5f);
    TK_CHECK(y && y != a && y->data == a->data && !(y->flags & TK_TENSOR_HEAP));
    tk_ctx_set_training(ctx, true);
    y = tk_dropout(ctx, a, 0.0f);
    TK_CHECK(y && y->data == a->data);
    /* training: about `rate` of the values are zero, the others scaled by 1/(1-rate) */
    y = tk_dropout(ctx, a, 0.25f);
    int64_t zeros = 0, bad = 0;
    for (int64_t i = 0; y && i < y->numel; i++) {
        float v = tk_f32(y)[i];
        if (v == 0.0f)
            zeros++;
        else if (fabsf(v - 2.0f / 0.75f) > 1e-5f)
            bad++;
    }
    TK_CHECK(bad == 0);
    TK_CHECK_MSG(zeros > 2300 && zeros < 2700, "%lld zeros of 10000 at rate 0.25", (long long)zeros);
    /* the mask repeats for one seed (the same draws and scale: the same bits), and
     * changes with the next draw */
    tk_tensor *m1 = tk_tensor_clone(y);
    tk_ctx_reset(ctx);
    tk_ctx_seed(ctx, 5);
    tk_ctx_set_training(ctx, true);
    y = tk_dropout(ctx, a, 0.25f); /* the identity calls above drew nothing */
    TK_CHECK(y && memcmp(y->data, m1->data, (size_t)y->numel * sizeof(float)) == 0);
    tk_tensor *again = tk_dropout(ctx, a, 0.25f);
    TK_CHECK(again && memcmp(again->data, m1->data, (size_t)again->numel * sizeof(float)) != 0);
    op_release(a, m1, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    tk_tensor *a;
    float rate;
} drop_case;

static tk_tensor *dropout_fn(tk_ctx *ctx, void *ud) {
    drop_case *c = ud;
    return gradcheck_project(ctx, tk_square(ctx, tk_dropout(ctx, c->a, c->rate)));
}

static void test_dropout_grads(void) {
    drop_case c = { op_leaf_2d(6, 8, 11), 0.4f };
    /* training: each evaluation gets a fresh context of one seed, so one mask */
    TK_CHECK(gradcheck_run("dropout training", dropout_fn, &c, 1, &c.a, true, 1e-2) == 0);
    TK_CHECK(gradcheck_run("dropout evaluation", dropout_fn, &c, 1, &c.a, false, 1e-2) == 0);
    /* the gradient is zero exactly where the output is */
    tk_ctx *ctx = tk_ctx_new(3);
    tk_ctx_set_training(ctx, true);
    tk_tensor *y = tk_dropout(ctx, c.a, 0.5f);
    TK_CHECK(tk_backward(ctx, tk_sum(ctx, y, -1, false)) == TK_OK);
    tk_tensor *g = tk_ctx_grad(ctx, c.a);
    for (int64_t i = 0; g && i < g->numel; i++)
        TK_CHECK(tk_f32(y)[i] == 0.0f ? tk_f32(g)[i] == 0.0f : tk_f32(g)[i] == 2.0f); /* 1 * 1/(1 - 0.5): exact */
    TK_CHECK(g != NULL);
    tk_ctx_free(ctx);
    tk_tensor_release(c.a);
}

static void test_dropout_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a = tk_tensor_new_2d(TK_F32, 2, 2), *ids = tk_tensor_new_1d(TK_I64, 2);
    float bad[] = { 1.0f, -0.1f, 1.5f, NAN };
    for (size_t i = 0; i < 4; i++) {
        TK_CHECK(tk_dropout(ctx, a, bad[i]) == NULL);
        TK_CHECK_ERROR(tk_ctx_error(ctx), "dropout: rate must be in [0, 1), got ");
        tk_ctx_clear_error(ctx);
    }
    TK_CHECK(tk_dropout(ctx, a, 1.0f) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "dropout: rate must be in [0, 1), got 1");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_dropout(ctx, ids, 0.5f) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "dropout: a must be float32, got int64 [2]");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_dropout(ctx, NULL, 0.5f) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "dropout: input is NULL");
    op_release(a, ids, NULL);
    tk_ctx_free(ctx);
}

/* --- batch_norm --- */

static void test_batch_norm_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_ctx_set_training(ctx, true);
    int64_t s[2] = { 2, 2 }, d = 2;
    tk_tensor *x = op_f32(2, s, (float[]){ 1, 2, 3, 6 });
    tk_tensor *gamma = op_f32(1, &d, (float[]){ 2, 0.5f });
    tk_tensor *beta = op_f32(1, &d, (float[]){ 1, -1 });
    tk_tensor *rm = op_f32(1, &d, (float[]){ 0, 1 });
    tk_tensor *rv = op_f32(1, &d, (float[]){ 1, 1 });
    /* mean [2, 4], biased var [1, 4]: xhat [[-1, -1], [1, 1]] (eps 0) */
    tk_tensor *y = tk_batch_norm(ctx, x, gamma, beta, rm, rv, 0.9f, 0.0f);
    OP_CHECK_VALUES(y, ((float[]){ -1, -1.5f, 3, -0.5f }), 1e-6);
    y = tk_batch_norm(ctx, x, NULL, NULL, rm, rv, 0.9f, 0.0f);
    OP_CHECK_VALUES(y, ((float[]){ -1, -1, 1, 1 }), 1e-6);
    /* running statistics are not written during the forward pass (untouched: exact) */
    OP_CHECK_VALUES(rm, ((float[]){ 0, 1 }), 0);
    OP_CHECK_VALUES(rv, ((float[]){ 1, 1 }), 0);
    /* two deferred updates per call; apply both calls' updates:
     * mean: 0.9 * [0, 1] + 0.1 * [2, 4] = [0.2, 1.3], then 0.9 * that + 0.1 * [2, 4] = [0.38, 1.57]
     * var (unbiased [2, 8]): 0.9 * [1, 1] + 0.1 * [2, 8] = [1.1, 1.7], then [1.19, 2.33] */
    tk_ctx_apply_updates(ctx);
    OP_CHECK_VALUES(rm, ((float[]){ 0.38f, 1.57f }), 1e-6);
    OP_CHECK_VALUES(rv, ((float[]){ 1.19f, 2.33f }), 1e-6);
    tk_ctx_apply_updates(ctx); /* nothing left to apply */
    OP_CHECK_VALUES(rm, ((float[]){ 0.38f, 1.57f }), 1e-6);

    /* evaluation uses the running statistics, and defers nothing */
    tk_ctx_reset(ctx);
    tk_ctx_set_training(ctx, false);
    y = tk_batch_norm(ctx, x, gamma, beta, rm, rv, 0.9f, 1e-3f);
    float want[4];
    const float xv[4] = { 1, 2, 3, 6 }, g[2] = { 2, 0.5f }, bt[2] = { 1, -1 }, m[2] = { 0.38f, 1.57f },
                v[2] = { 1.19f, 2.33f };
    for (int i = 0; i < 4; i++) want[i] = (float)((xv[i] - m[i % 2]) / sqrt(v[i % 2] + 1e-3) * g[i % 2] + bt[i % 2]);
    OP_CHECK_VALUES(y, want, 1e-6);
    tk_ctx_apply_updates(ctx);
    OP_CHECK_VALUES(rm, ((float[]){ 0.38f, 1.57f }), 1e-6);

    /* a batch of one: its variance is zero, the running variance decays towards it */
    tk_ctx_reset(ctx);
    tk_ctx_set_training(ctx, true);
    int64_t s12[2] = { 1, 2 };
    tk_tensor *x1 = op_f32(2, s12, (float[]){ 5, 7 });
    y = tk_batch_norm(ctx, x1, NULL, NULL, rm, rv, 0.5f, 1e-3f);
    OP_CHECK_VALUES(y, ((float[]){ 0, 0 }), 0); /* x - mean of one row: exactly 0 */
    tk_ctx_apply_updates(ctx);
    OP_CHECK_VALUES(rv, ((float[]){ 0.595f, 1.165f }), 1e-6);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(x, gamma, beta, rm, rv, x1, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    tk_tensor *x, *gamma, *beta, *rm, *rv;
} bn_case;

static tk_tensor *bn_fn(tk_ctx *ctx, void *ud) {
    bn_case *c = ud;
    tk_tensor *y = tk_batch_norm(ctx, c->x, c->gamma, c->beta, c->rm, c->rv, 0.99f, 1e-3f);
    /* a nonlinearity after it, so the sum over the batch is not trivially constant */
    return gradcheck_project(ctx, tk_activate(ctx, y, TK_ACT_TANH));
}

static void test_batch_norm_grads(void) {
    int64_t d = 3;
    bn_case c = { op_leaf_2d(5, 3, 1), op_leaf_1d(3, 2), op_leaf_1d(3, 3),
                  op_f32(1, &d, (float[]){ 0.1f, -0.2f, 0.3f }), op_f32(1, &d, (float[]){ 1.5f, 0.5f, 2 }) };
    tk_tensor *leaves[3] = { c.x, c.gamma, c.beta };
    TK_CHECK(gradcheck_run("batch_norm training", bn_fn, &c, 3, leaves, true, 1e-2) == 0);
    TK_CHECK(gradcheck_run("batch_norm evaluation", bn_fn, &c, 3, leaves, false, 1e-2) == 0);
    bn_case plain = { c.x, NULL, NULL, c.rm, c.rv };
    TK_CHECK(gradcheck_run("batch_norm training, no gamma/beta", bn_fn, &plain, 1, leaves, true, 1e-2) == 0);
    /* gamma [1, D] */
    int64_t s13[2] = { 1, 3 };
    bn_case row = { c.x, op_leaf(2, s13, 1, 9), NULL, c.rm, c.rv };
    tk_tensor *rl[2] = { c.x, row.gamma };
    TK_CHECK(gradcheck_run("batch_norm training, gamma [1, D]", bn_fn, &row, 2, rl, true, 1e-2) == 0);
    /* the running statistics were never touched by the checks (no update applied: exact) */
    OP_CHECK_VALUES(c.rm, ((float[]){ 0.1f, -0.2f, 0.3f }), 0);
    op_release(c.x, c.gamma, c.beta, c.rm, c.rv, row.gamma, NULL);
}

static void test_batch_norm_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    const char *msg = tk_ctx_error(ctx);
    tk_tensor *x = tk_tensor_new_2d(TK_F32, 4, 3), *v3 = tk_tensor_new_1d(TK_F32, 3), *v2 = tk_tensor_new_1d(TK_F32, 2);
    tk_tensor *x1 = tk_tensor_new_1d(TK_F32, 3), *ids = tk_tensor_new_2d(TK_I64, 4, 3);
    OP_CHECK_FAILS(ctx, tk_batch_norm(ctx, x, v2, NULL, v3, v3, 0.99f, 1e-3f),
                   "batch_norm: gamma must be [3] for x with 3 features, got [2]");
    OP_CHECK_FAILS(ctx, tk_batch_norm(ctx, x, NULL, NULL, v3, v2, 0.99f, 1e-3f),
                   "batch_norm: running_var must be [3] for x with 3 features, got [2]");
    OP_CHECK_FAILS(ctx, tk_batch_norm(ctx, x1, NULL, NULL, v3, v3, 0.99f, 1e-3f), "batch_norm: x must be 2-D, got [3]");
    OP_CHECK_FAILS(ctx, tk_batch_norm(ctx, ids, NULL, NULL, v3, v3, 0.99f, 1e-3f),
                   "batch_norm: x must be float32, got int64 [4, 3]");
    OP_CHECK_FAILS(ctx, tk_batch_norm(ctx, x, NULL, NULL, NULL, v3, 0.99f, 1e-3f),
                   "batch_norm: input is NULL (running_mean)");
    OP_CHECK_FAILS(ctx, tk_batch_norm(ctx, x, NULL, NULL, v3, v3, 1.5f, 1e-3f),
                   "batch_norm: momentum must be in [0, 1], got 1.5");
    OP_CHECK_FAILS(ctx, tk_batch_norm(ctx, x, NULL, NULL, v3, v3, 0.9f, -1), "batch_norm: eps must be >= 0, got -1");
    tk_ctx_set_training(ctx, true);
    tk_tensor *empty = tk_tensor_new_2d(TK_F32, 0, 3);
    TK_CHECK(tk_batch_norm(ctx, empty, NULL, NULL, v3, v3, 0.9f, 1e-3f) == NULL);
    TK_CHECK_ERROR(msg, "batch_norm: training needs at least one row, got x [0, 3]");
    op_release(x, v3, v2, x1, ids, empty, NULL);
    tk_ctx_free(ctx);
}

static void test_cosine_l2norm_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    const char *msg = tk_ctx_error(ctx);
    tk_tensor *a = tk_tensor_new_2d(TK_F32, 2, 3), *b = tk_tensor_new_2d(TK_F32, 2, 4);
    tk_tensor *v = tk_tensor_new_1d(TK_F32, 3), *ids = tk_tensor_new_2d(TK_I64, 2, 3);
    tk_tensor *scalar = tk_tensor_new(TK_F32, 0, NULL);
    OP_CHECK_FAILS(ctx, tk_cosine(ctx, a, b), "cosine: a and b must have one shape [B, D], got a [2, 3] and b [2, 4]");
    OP_CHECK_FAILS(ctx, tk_cosine(ctx, v, v), "cosine: a must be 2-D, got [3]");
    OP_CHECK_FAILS(ctx, tk_cosine(ctx, a, ids), "cosine: b must be float32, got int64 [2, 3]");
    OP_CHECK_FAILS(ctx, tk_cosine(ctx, a, NULL), "cosine: input is NULL");
    OP_CHECK_FAILS(ctx, tk_l2norm(ctx, ids), "l2norm: a must be float32, got int64 [2, 3]");
    OP_CHECK_FAILS(ctx, tk_l2norm(ctx, scalar), "l2norm: a must have at least one dimension");
    TK_CHECK(tk_l2norm(ctx, NULL) == NULL);
    TK_CHECK_ERROR(msg, "l2norm: input is NULL");
    op_release(a, b, v, ids, scalar, NULL);
    tk_ctx_free(ctx);
}

/* tk_dot_f64 (l2norm's and the gradient norm's sums): the same bits as the plain 4-lane
 * loop it replaces, for lengths with and without a tail. Bitwise by construction: float
 * products are exact in double and both sum the same lanes in the same order (no FMA:
 * -ffp-contract=off). */
static void test_dot_f64(void) {
    float x[131], y[131];
    uint64_t s = 99;
    for (int i = 0; i < 131; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(s >> 40) / 16777216.0 * 2.0 - 1.0) * 1e3f;
        y[i] = (float)i - 60.25f;
    }
    int lens[] = { 0, 1, 3, 4, 5, 8, 13, 64, 127, 131 };
    for (int k = 0; k < (int)(sizeof lens / sizeof lens[0]); k++) {
        int n = lens[k], j = 0;
        double acc[4] = { 0, 0, 0, 0 };
        for (; j + 4 <= n; j += 4)
            for (int l = 0; l < 4; l++) acc[l] += (double)x[j + l] * (double)y[j + l];
        double want = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for (; j < n; j++) want += (double)x[j] * y[j];
        TK_CHECK_MSG(tk_dot_f64(x, y, n) == want, "n = %d: %.17g, want %.17g", n, tk_dot_f64(x, y, n), want);
    }
}

/* tk_l2norm_rows (the export's and the no-grad path's norm into its result) against the
 * branch of tk_l2norm that records a gradient (the input requires one): bit for bit, since
 * both call inv_norm and scale_row on the same row (the recording branch only also saves
 * r), so each element is the same double sum, the same rounding and the same product.
 * With a zero row (clamped) and widths with and without a vector tail. */
static void test_l2norm_rows(void) {
    for (int64_t n = 1; n <= 19; n += 6) {
        int64_t s[2] = { 4, n };
        tk_tensor *x = op_leaf(2, s, 3, 40 + n);
        for (int64_t j = 0; j < n; j++) tk_f32(x)[2 * n + j] = 0.0f;
        tk_ctx *ctx = tk_ctx_new(1);
        tk_tensor *y = tk_l2norm(ctx, x);
        /* the recording branch was taken: backward reaches x */
        TK_CHECK(y && tk_backward(ctx, tk_sum(ctx, y, -1, false)) == TK_OK && tk_ctx_grad(ctx, x) != NULL);
        float got[4 * 19];
        tk_l2norm_rows(got, tk_f32(x), 4, n);
        TK_CHECK_MSG(y && memcmp(got, y->data, (size_t)(4 * n) * sizeof(float)) == 0, "n = %lld", (long long)n);
        tk_ctx_free(ctx);
        tk_tensor_release(x);
    }
}

int main(void) {
    TK_RUN(test_dot_f64);
    TK_RUN(test_l2norm_rows);
    TK_RUN(test_l2norm_values);
    TK_RUN(test_l2norm_grads);
    TK_RUN(test_cosine);
    TK_RUN(test_dropout_values);
    TK_RUN(test_dropout_grads);
    TK_RUN(test_dropout_errors);
    TK_RUN(test_batch_norm_values);
    TK_RUN(test_batch_norm_grads);
    TK_RUN(test_batch_norm_errors);
    TK_RUN(test_cosine_l2norm_errors);
    return tk_test_summary();
}
