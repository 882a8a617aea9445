/* Optimizers: SGD (momentum, nesterov, weight decay), Adam, AdamW, Adagrad on tiny
 * tensors with gradients from a real tape, lazy sparse updates of embedding tables,
 * global-norm clipping, step_block, and argument errors.
 *
 * Expected values were computed by hand from PyTorch's update rules (in double precision):
 * p0 = [1, -2, 3], and step k's loss is sum(p * c_k), so its gradient is c_k. */
#include "tk_test.h"
#include "towerkit_ext.h" /* blocks assembled by hand (tk_block_new), a deferred update */

static const float P0[3] = { 1.0f, -2.0f, 3.0f };
static const float C[3][3] = { { 0.5f, -1.0f, 2.0f }, { -0.3f, 0.4f, 1.0f }, { 0.2f, 0.2f, -0.5f } };

static tk_tensor *param3(void) {
    int64_t shape[1] = { 3 };
    tk_tensor *p = tk_test_tensor(1, shape, P0);
    tk_tensor_set_requires_grad(p, true);
    return p;
}

/* Runs loss = sum(p * c) on ctx (after a reset) and backward. */
static tk_status backward_dot(tk_ctx *ctx, tk_tensor *p, const float *c) {
    tk_ctx_reset(ctx);
    tk_tensor *ct = tk_ctx_empty(ctx, TK_F32, p->ndim, p->shape);
    if (!ct) return TK_ERROR;
    memcpy(ct->data, c, (size_t)p->numel * sizeof(float));
    tk_tensor *loss = tk_sum(ctx, tk_mul(ctx, p, ct), -1, false);
    if (tk_backward(ctx, loss) != TK_OK) {
        printf("    backward failed: %s\n", tk_ctx_error(ctx));
        return TK_ERROR;
    }
    return TK_OK;
}

/* Three steps of opt on p0 with gradients C[k]; checks p against expected[k]. */
static void run_three_steps(tk_optim *opt, const float expected[3][3], double tol) {
    TK_CHECK(opt != NULL);
    if (!opt) return;
    tk_tensor *p = param3();
    tk_ctx *ctx = tk_ctx_new(1);
    for (int k = 0; k < 3; k++) {
        TK_CHECK(backward_dot(ctx, p, C[k]) == TK_OK);
        TK_CHECK(tk_optim_step(opt, ctx, 1, &p) == TK_OK);
        TK_CHECK(tk_optim_steps(opt) == k + 1);
        for (int i = 0; i < 3; i++) TK_CHECK_NEAR(tk_f32(p)[i], expected[k][i], tol);
    }
    tk_ctx_free(ctx);
    tk_optim_free(opt);
    tk_tensor_release(p);
}

static void test_sgd(void) {
    /* p -= 0.1 * c_k */
    static const float e[3][3] = { { 0.95f, -1.9f, 2.8f }, { 0.98f, -1.94f, 2.7f }, { 0.96f, -1.96f, 2.75f } };
    run_three_steps(tk_optim_sgd_new(0.1f, 0.0f, false, 0.0f), e, 1e-6);
}

static void test_sgd_weight_decay(void) {
    /* g = c + 0.1 p; p -= 0.1 g. Step 1: 1 - 0.1 * (0.5 + 0.1) = 0.94 */
    static const float e[3][3] = { { 0.94f, -1.88f, 2.77f },
                                   { 0.9606f, -1.9012f, 2.6423f },
                                   { 0.930994f, -1.902188f, 2.665877f } };
    run_three_steps(tk_optim_sgd_new(0.1f, 0.0f, false, 0.1f), e, 1e-6);
}

static void test_sgd_momentum(void) {
    /* v1 = c1, v2 = 0.9 v1 + c2, ...: p1[0] = 1 - 0.05, p2[0] = 0.95 - 0.1 * (0.45 - 0.3) */
    static const float e[3][3] = { { 0.95f, -1.9f, 2.8f }, { 0.935f, -1.85f, 2.52f }, { 0.9015f, -1.825f, 2.318f } };
    run_three_steps(tk_optim_sgd_new(0.1f, 0.9f, false, 0.0f), e, 1e-6);
}

static void test_sgd_nesterov(void) {
    /* g = c + 0.01 p; v = 0.9 v + g; p -= 0.1 (g + 0.9 v).
     * Step 1 of p[0]: g = 0.51, v = 0.51, p = 1 - 0.1 * 0.969 = 0.9031 */
    static const float e[3][3] = { { 0.9031f, -1.8062f, 2.6143f },
                                   { 0.91707411f, -1.79614822f, 2.25490283f },
                                   { 0.863721158f, -1.78731452f, 2.11451393f } };
    run_three_steps(tk_optim_sgd_new(0.1f, 0.9f, true, 0.01f), e, 2e-6);
}

static void test_adam(void) {
    /* lr 0.1, betas (0.9, 0.999), eps 1e-3: step 1 moves by 0.1 * |c| / (|c| + 1e-3),
     * eps added after the bias correction of sqrt(v) (PyTorch's placement). */
    static const float e[3][3] = { { 0.900199601f, -1.9000999f, 2.90004998f },
                                   { 0.881096135f, -1.86558464f, 2.80689094f },
                                   { 0.846450738f, -1.8510157f, 2.75056739f } };
    run_three_steps(tk_optim_adam_new(0.1f, 0.9f, 0.999f, 1e-3f, 0.0f), e, 2e-6);
}

static void test_adamw(void) {
    /* Decoupled decay: p *= 1 - 0.1 * 0.5 before the Adam step. Step 1 of p[0]:
     * 0.95 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.85 */
    static const float e[3][3] = { { 0.850000002f, -1.8f, 2.75f },
                                   { 0.788329773f, -1.67538264f, 2.5191552f },
                                   { 0.714083349f, -1.57696843f, 2.33664831f } };
    run_three_steps(tk_optim_adam_new(0.1f, 0.9f, 0.99f, 1e-8f, 0.5f), e, 2e-6);
}

static void test_adagrad(void) {
    /* acc starts at 0.1: step 1 of p[0]: acc = 0.35, p = 1 - 0.1 * 0.5 / sqrt(0.35) */
    static const float e[3][3] = { { 0.915484575f, -1.90465374f, 2.90122704f },
                                   { 0.960711276f, -1.94028857f, 2.8569463f },
                                   { 0.931843763f, -1.95782973f, 2.87856318f } };
    run_three_steps(tk_optim_adagrad_new(0.1f, 0.1f, 1e-10f), e, 2e-6);
}

/* A parameter without a gradient in ctx is left alone; the step still counts, applies
 * deferred updates, and the optimizer retains what it holds state for. */
static void test_skip_and_bookkeeping(void) {
    tk_optim *opt = tk_optim_adam_new(0.1f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tk_tensor *p = param3(), *q = param3();
    tk_ctx *ctx = tk_ctx_new(1);
    TK_CHECK(backward_dot(ctx, p, C[0]) == TK_OK);
    int64_t one = 1;
    tk_tensor *stat = tk_tensor_new(TK_F32, 1, &one);
    tk_f32(stat)[0] = 2.0f;
    float *src = tk_ctx_alloc(ctx, sizeof(float));
    src[0] = 10.0f;
    TK_CHECK(tk_ctx_defer_update(ctx, stat, src, 0.5f, 0.5f) == TK_OK);
    tk_tensor *both[3] = { q, p, p }; /* p listed twice: updated once */
    TK_CHECK(tk_optim_step(opt, ctx, 3, both) == TK_OK);
    TK_CHECK(tk_optim_steps(opt) == 1);
    TK_CHECK(memcmp(q->data, P0, sizeof P0) == 0); /* never written: the bits */
    for (int i = 0; i < 3; i++) TK_CHECK_NEAR(tk_f32(p)[i], P0[i] - (C[0][i] > 0 ? 0.1 : -0.1), 1e-6);
    TK_CHECK_NEAR(tk_f32(stat)[0], 6.0, 0); /* 0.5 * 2 + 0.5 * 10: exact */
    /* an empty step counts too */
    tk_ctx_reset(ctx);          /* the context drops the references its tape held */
    TK_CHECK(p->refcount == 2); /* held by the optimizer */
    TK_CHECK(q->refcount == 1);
    TK_CHECK(tk_optim_step(opt, ctx, 0, NULL) == TK_OK);
    TK_CHECK(tk_optim_steps(opt) == 2);
    tk_optim_set_lr(opt, 0.5f);
    TK_CHECK_NEAR(tk_optim_lr(opt), 0.5, 0); /* stored */
    tk_optim_free(opt);
    TK_CHECK(p->refcount == 1);
    tk_ctx_free(ctx);
    tk_tensor_release(p);
    tk_tensor_release(q);
    tk_tensor_release(stat);
}

/* --- lazy updates of embedding tables --- */

/* loss = sum(lookup(table, ids) * w), w[i][j] = wv[i * 2 + j]: the table's sparse
 * gradient is w's rows summed per id. */
static tk_status backward_lookup(tk_ctx *ctx, tk_tensor *table, int64_t n, const int64_t *ids, const float *wv) {
    tk_ctx_reset(ctx);
    tk_tensor *idt = tk_ctx_empty(ctx, TK_I64, 1, &n);
    int64_t wshape[2] = { n, table->shape[1] };
    tk_tensor *w = tk_ctx_empty(ctx, TK_F32, 2, wshape);
    if (!idt || !w) return TK_ERROR;
    memcpy(idt->data, ids, (size_t)n * sizeof *ids);
    memcpy(w->data, wv, (size_t)w->numel * sizeof(float));
    tk_tensor *e = tk_embedding_lookup(ctx, table, idt, NULL, TK_COMBINER_SUM, "items");
    tk_tensor *loss = tk_sum(ctx, tk_mul(ctx, e, w), -1, false);
    if (tk_backward(ctx, loss) != TK_OK) {
        printf("    backward failed: %s\n", tk_ctx_error(ctx));
        return TK_ERROR;
    }
    return TK_OK;
}

static tk_tensor *table5x2(void) {
    static const float v[10] = { 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 1.0f };
    int64_t shape[2] = { 5, 2 };
    tk_tensor *t = tk_test_tensor(2, shape, v);
    tk_tensor_set_requires_grad(t, true);
    return t;
}

/* Adam on a [5, 2] table. Step 1 touches rows 1 (twice) and 3; step 2 only row 3;
 * step 3 row 1 again. Untouched rows never change, and row 1's moments are not decayed
 * at step 2: step 3 sees m = 0.9 m1 + 0.1 g3 with bias correction of step 3. */
static void test_lazy_adam(void) {
    const float lr = 0.1f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    tk_optim *opt = tk_optim_adam_new(lr, b1, b2, eps, 0.0f);
    tk_optim_set_lazy(opt, true);
    tk_tensor *t = table5x2(), *orig = tk_tensor_clone(t);
    tk_ctx *ctx = tk_ctx_new(1);

    const int64_t ids1[3] = { 1, 3, 1 };
    const float w1[6] = { 0.5f, -1.0f, 2.0f, 0.25f, 0.5f, 3.0f }; /* row 1: [1, 2], row 3: [2, 0.25] */
    TK_CHECK(backward_lookup(ctx, t, 3, ids1, w1) == TK_OK);
    tk_sparse_grad *sg = tk_ctx_sparse_grad(ctx, t);
    TK_CHECK(sg != NULL && sg->n == 2);
    TK_CHECK(tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    /* step 1: each touched element moves by lr * g / (|g| + eps) */
    TK_CHECK_NEAR(tk_f32(t)[2], 0.3 - 0.1, 1e-6);
    TK_CHECK_NEAR(tk_f32(t)[3], 0.4 - 0.1, 1e-6);
    TK_CHECK_NEAR(tk_f32(t)[6], 0.7 - 0.1, 1e-6);
    TK_CHECK_NEAR(tk_f32(t)[7], 0.8 - 0.1, 1e-6);
    float row1[2] = { tk_f32(t)[2], tk_f32(t)[3] };

    const int64_t ids2[1] = { 3 };
    const float w2[2] = { -1.0f, 0.0f };
    TK_CHECK(backward_lookup(ctx, t, 1, ids2, w2) == TK_OK);
    TK_CHECK(tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    TK_CHECK(memcmp(tk_f32(t) + 2, row1, sizeof row1) == 0); /* row 1 untouched: not written, the bits */
    /* row 3, element 0: m = 0.9 * 0.2 - 0.1 = 0.08, v = 0.999 * 0.004 + 0.001 = 0.004996 */
    {
        double m = 0.08, v = 0.999 * 0.004 + 0.001;
        double expect = 0.6 - 0.1 / (1 - 0.81) * m / (sqrt(v) / sqrt(1 - 0.999 * 0.999) + 1e-8);
        TK_CHECK_NEAR(tk_f32(t)[6], expect, 2e-6);
    }

    const int64_t ids3[1] = { 1 };
    const float w3[2] = { -2.0f, 0.0f };
    TK_CHECK(backward_lookup(ctx, t, 1, ids3, w3) == TK_OK);
    TK_CHECK(tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    {
        /* element (1, 0): m1 = 0.1, v1 = 0.001; g3 = -2 */
        double m = 0.9 * 0.1 + 0.1 * -2.0, v = 0.999 * 0.001 + 0.001 * 4.0;
        double bc1 = 1 - 0.9 * 0.9 * 0.9, bc2 = 1 - 0.999 * 0.999 * 0.999;
        double expect = 0.2 - 0.1 / bc1 * m / (sqrt(v) / sqrt(bc2) + 1e-8);
        TK_CHECK_NEAR(tk_f32(t)[2], expect, 2e-6);
        /* element (1, 1): m1 = 0.2, v1 = 0.004; g3 = 0 */
        m = 0.9 * 0.2;
        v = 0.999 * 0.004;
        expect = 0.3 - 0.1 / bc1 * m / (sqrt(v) / sqrt(bc2) + 1e-8);
        TK_CHECK_NEAR(tk_f32(t)[3], expect, 2e-6);
    }
    /* rows 0, 2 and 4 never touched: bit-identical (never written) */
    for (int r = 0; r < 5; r += 2) TK_CHECK(memcmp(tk_f32(t) + 2 * r, tk_f32(orig) + 2 * r, 2 * sizeof(float)) == 0);
    tk_ctx_free(ctx);
    tk_optim_free(opt);
    tk_tensor_release(t);
    tk_tensor_release(orig);
}

/* SGD with momentum and weight decay, AdamW and Adagrad on a table: only touched rows
 * (decay included) change, and a row's first update is that of a fresh parameter. */
static void test_lazy_others(void) {
    tk_optim *opts[3] = { tk_optim_sgd_new(0.1f, 0.9f, false, 0.1f), tk_optim_adam_new(0.1f, 0.9f, 0.999f, 1e-8f, 0.5f),
                          tk_optim_adagrad_new(0.1f, 0.1f, 1e-10f) };
    for (int k = 0; k < 3; k++) {
        TK_CHECK(opts[k] != NULL);
        if (!opts[k]) continue;
        tk_optim_set_lazy(opts[k], true);
        tk_tensor *t = table5x2(), *orig = tk_tensor_clone(t);
        tk_ctx *ctx = tk_ctx_new(1);
        const int64_t ids[2] = { 4, 2 };
        const float w[4] = { 0.5f, -1.0f, 2.0f, 0.0f };
        for (int s = 0; s < 2; s++) {
            TK_CHECK(backward_lookup(ctx, t, 2, ids, w) == TK_OK);
            TK_CHECK(tk_optim_step(opts[k], ctx, 1, &t) == TK_OK);
        }
        for (int r = 0; r < 4; r++) /* rows 2 and 4 touched; the others never written: the bits */
            if (r != 2) TK_CHECK(memcmp(tk_f32(t) + 2 * r, tk_f32(orig) + 2 * r, 2 * sizeof(float)) == 0);
        /* element (4, 0): g = 0.5 both steps, p = 0.9 */
        double p = 0.9, expect;
        if (k == 0) {
            double g1 = 0.5 + 0.1 * p, p1 = p - 0.1 * g1;
            double g2 = 0.5 + 0.1 * p1, v2 = 0.9 * g1 + g2;
            expect = p1 - 0.1 * v2;
        } else if (k == 1) {
            double p1 = p * 0.95 - 0.1; /* step 1: lr * g / |g| */
            expect = p1 * 0.95 - 0.1;   /* constant g: m_hat / sqrt(v_hat) = 1 */
        } else {
            double p1 = p - 0.1 * 0.5 / sqrt(0.1 + 0.25);
            expect = p1 - 0.1 * 0.5 / sqrt(0.1 + 0.5);
        }
        TK_CHECK_NEAR(tk_f32(t)[8], expect, 2e-6);
        /* element (2, 1) got a zero gradient but its row was touched: only decay moves it */
        if (k == 0) TK_CHECK(tk_f32(t)[5] < 0.6f);
        if (k == 1) TK_CHECK_NEAR(tk_f32(t)[5], 0.6 * 0.95 * 0.95, 1e-6);
        if (k == 2) TK_CHECK(tk_f32(t)[5] == 0.6f); /* p - lr * 0 / (...): exactly p */
        tk_ctx_free(ctx);
        tk_optim_free(opts[k]);
        tk_tensor_release(t);
        tk_tensor_release(orig);
    }
}

/* A large table is updated without materialising a dense gradient: the arena does not
 * grow by a table's worth during the step. */
static void test_lazy_no_dense_gradient(void) {
    int64_t shape[2] = { 200000, 4 }; /* 3.2 MB */
    tk_tensor *t = tk_tensor_new(TK_F32, 2, shape);
    tk_tensor_set_requires_grad(t, true);
    tk_optim *opt = tk_optim_adam_new(0.01f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tk_ctx *ctx = tk_ctx_new(1);
    const int64_t ids[2] = { 7, 199999 };
    const float w[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
    TK_CHECK(backward_lookup(ctx, t, 2, ids, w) == TK_OK);
    size_t before = tk_ctx_arena_capacity(ctx);
    TK_CHECK(tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    TK_CHECK(tk_ctx_arena_capacity(ctx) - before < (size_t)t->numel * sizeof(float));
    TK_CHECK_NEAR(tk_f32(t)[7 * 4], -0.01, 1e-7);
    TK_CHECK_NEAR(tk_f32(t)[199999 * 4 + 3], -0.01, 1e-7);
    TK_CHECK(tk_f32(t)[8 * 4] == 0.0f); /* a row not looked up: never written */
    tk_ctx_free(ctx);
    tk_optim_free(opt);
    tk_tensor_release(t);
}

/* A table with both a sparse part (lookup) and a dense part (used as a tensor) is
 * updated from the dense sum, and its norm is that of the sum. */
static void test_mixed_sparse_dense(void) {
    tk_tensor *t = table5x2(), *orig = tk_tensor_clone(t);
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t one = 1;
    tk_tensor *ids = tk_ctx_empty(ctx, TK_I64, 1, &one);
    tk_i64(ids)[0] = 1;
    int64_t wshape[2] = { 1, 2 };
    tk_tensor *w = tk_ctx_empty(ctx, TK_F32, 2, wshape);
    tk_f32(w)[0] = 3.0f;
    tk_f32(w)[1] = -1.0f;
    tk_tensor *ones = tk_ctx_empty(ctx, TK_F32, 2, t->shape);
    for (int i = 0; i < 10; i++) tk_f32(ones)[i] = 1.0f;
    tk_tensor *e = tk_embedding_lookup(ctx, t, ids, NULL, TK_COMBINER_SUM, "items");
    tk_tensor *loss =
        tk_add(ctx, tk_sum(ctx, tk_mul(ctx, e, w), -1, false), tk_sum(ctx, tk_mul(ctx, t, ones), -1, false));
    TK_CHECK(tk_backward(ctx, loss) == TK_OK);
    /* gradient: 1 everywhere, row 1 [4, 0]: norm sqrt(8 + 16) */
    TK_CHECK_NEAR(tk_clip_grad_norm(ctx, INFINITY), sqrt(24.0), 1e-6);
    tk_optim *opt = tk_optim_sgd_new(0.5f, 0.0f, false, 0.0f);
    TK_CHECK(tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    for (int i = 0; i < 10; i++) {
        double g = i == 2 ? 4.0 : i == 3 ? 0.0 : 1.0;
        TK_CHECK_NEAR(tk_f32(t)[i], tk_f32(orig)[i] - 0.5 * g, 1e-6);
    }
    tk_optim_free(opt);
    tk_ctx_free(ctx);
    tk_tensor_release(t);
    tk_tensor_release(orig);
}

/* --- clipping --- */

static void test_clip_grad_norm(void) {
    tk_tensor *p = param3(), *t = table5x2();
    tk_ctx *ctx = tk_ctx_new(1);
    tk_ctx_reset(ctx);
    /* loss = sum(p * [3, 0, 0]) + sum(lookup(t, [2, 2]) * [[0, 2], [0, 2]]): p's gradient
     * is [3, 0, 0], the table's row 2 gets [0, 2] twice, coalesced [0, 4]: norm 5 (not
     * sqrt(9 + 4 + 4) as the uncoalesced rows would give) */
    int64_t three = 3, two = 2;
    tk_tensor *c = tk_ctx_zeros(ctx, TK_F32, 1, &three);
    tk_f32(c)[0] = 3.0f;
    tk_tensor *ids = tk_ctx_empty(ctx, TK_I64, 1, &two);
    tk_i64(ids)[0] = tk_i64(ids)[1] = 2;
    int64_t wshape[2] = { 2, 2 };
    tk_tensor *w = tk_ctx_zeros(ctx, TK_F32, 2, wshape);
    tk_f32(w)[1] = tk_f32(w)[3] = 2.0f;
    tk_tensor *l1 = tk_sum(ctx, tk_mul(ctx, p, c), -1, false);
    tk_tensor *e = tk_embedding_lookup(ctx, t, ids, NULL, TK_COMBINER_SUM, "items");
    tk_tensor *l2 = tk_sum(ctx, tk_mul(ctx, e, w), -1, false);
    TK_CHECK(tk_backward(ctx, tk_add(ctx, l1, l2)) == TK_OK);
    /* no clipping below max_norm */
    TK_CHECK_NEAR(tk_clip_grad_norm(ctx, 1e9), 5.0, 1e-6);
    TK_CHECK_NEAR(tk_f32(tk_ctx_grad(ctx, p))[0], 3.0, 0); /* not clipped: the gradient as it was, exact */
    TK_CHECK_NEAR(tk_clip_grad_norm(ctx, INFINITY), 5.0, 1e-6);
    /* clip to 1: everything scaled by 1/5 */
    TK_CHECK_NEAR(tk_clip_grad_norm(ctx, 1.0), 5.0, 1e-6);
    TK_CHECK_NEAR(tk_f32(tk_ctx_grad(ctx, p))[0], 0.6, 1e-7);
    tk_sparse_grad *sg = tk_ctx_sparse_grad(ctx, t);
    TK_CHECK(sg && sg->n == 1 && sg->rows[0] == 2);
    if (sg && sg->n == 1) {
        TK_CHECK_NEAR(sg->values[0], 0.0, 0); /* 0 * 2 + 0 * 2, scaled: exactly 0 */
        TK_CHECK_NEAR(sg->values[1], 0.8, 1e-7);
    }
    TK_CHECK_NEAR(tk_clip_grad_norm(ctx, 10.0), 1.0, 1e-6);
    /* the optimizer reads the clipped gradients */
    tk_optim *opt = tk_optim_sgd_new(1.0f, 0.0f, false, 0.0f);
    tk_tensor *both[2] = { p, t };
    TK_CHECK(tk_optim_step(opt, ctx, 2, both) == TK_OK);
    TK_CHECK_NEAR(tk_f32(p)[0], 0.4, 1e-6);
    TK_CHECK_NEAR(tk_f32(t)[5], 0.6 - 0.8, 1e-6);
    TK_CHECK(tk_f32(t)[4] == 0.5f); /* its gradient is 0: p - 1 * 0, exactly p */
    /* bad max_norm */
    TK_CHECK(tk_clip_grad_norm(ctx, 0.0) < 0);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "max_norm must be > 0");
    TK_CHECK(tk_clip_grad_norm(NULL, 1.0) < 0);
    TK_CHECK_ERROR(tk_last_error(), "context is NULL");
    tk_optim_free(opt);
    tk_ctx_free(ctx);
    tk_tensor_release(p);
    tk_tensor_release(t);
}

/* --- step_block --- */

static tk_value *identity_forward(tk_ctx *ctx, tk_block *b, tk_value *in) { return in; }
static const tk_block_kind test_kind = { "optim_test", identity_forward, NULL, NULL, NULL, NULL };

static void test_step_block(void) {
    tk_block *root = tk_block_new(&test_kind, "root", NULL);
    tk_block *child = tk_block_new(&test_kind, "child", NULL);
    TK_CHECK(root && child);
    if (!root || !child) return;
    tk_tensor *w = param3(), *stat = param3(), *v = param3();
    TK_CHECK(tk_block_add_param(root, "w", w, true) == TK_OK);
    TK_CHECK(tk_block_add_param(root, "stat", stat, false) == TK_OK);
    TK_CHECK(tk_block_add_param(child, "v", v, true) == TK_OK);
    TK_CHECK(tk_block_add_child(root, "child", child) == TK_OK);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *c = tk_ctx_empty(ctx, TK_F32, 1, w->shape);
    memcpy(c->data, C[0], sizeof C[0]);
    tk_tensor *loss = tk_sum(ctx, tk_mul(ctx, tk_mul(ctx, w, c), tk_mul(ctx, stat, tk_mul(ctx, v, c))), -1, false);
    TK_CHECK(tk_backward(ctx, loss) == TK_OK);
    tk_tensor *gw = tk_tensor_clone(tk_ctx_grad(ctx, w)), *gv = tk_tensor_clone(tk_ctx_grad(ctx, v));
    tk_optim *opt = tk_optim_sgd_new(0.1f, 0.0f, false, 0.0f);
    TK_CHECK(tk_optim_step_block(opt, ctx, root) == TK_OK);
    for (int i = 0; i < 3; i++) {
        TK_CHECK_NEAR(tk_f32(w)[i], P0[i] - 0.1 * tk_f32(gw)[i], 1e-6);
        TK_CHECK_NEAR(tk_f32(v)[i], P0[i] - 0.1 * tk_f32(gv)[i], 1e-6);
        TK_CHECK(tk_f32(stat)[i] == P0[i]); /* not trainable: never written */
    }
    TK_CHECK(tk_optim_step_block(opt, ctx, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "block is NULL");
    tk_optim_free(opt);
    tk_ctx_free(ctx);
    tk_block_release(child);
    tk_block_release(root);
    tk_tensor_release(w);
    tk_tensor_release(stat);
    tk_tensor_release(v);
    tk_tensor_release(gw);
    tk_tensor_release(gv);
}

/* --- errors --- */

static void test_constructor_errors(void) {
    TK_CHECK(tk_optim_sgd_new(0.0f, 0.0f, false, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "learning rate must be a finite number > 0");
    TK_CHECK(tk_optim_sgd_new(-1.0f, 0.0f, false, 0.0f) == NULL);
    TK_CHECK(tk_optim_sgd_new(NAN, 0.0f, false, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "sgd: learning rate");
    TK_CHECK(tk_optim_adam_new(INFINITY, 0.9f, 0.999f, 1e-8f, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "adam: learning rate");
    TK_CHECK(tk_optim_sgd_new(0.1f, -0.5f, false, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "momentum must be a finite number >= 0, got -0.5");
    TK_CHECK(tk_optim_sgd_new(0.1f, 0.0f, true, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "nesterov momentum requires momentum > 0");
    TK_CHECK(tk_optim_sgd_new(0.1f, 0.0f, false, -1.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "weight_decay");
    TK_CHECK(tk_optim_adam_new(0.1f, 1.0f, 0.999f, 1e-8f, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "beta1 must be in [0, 1), got 1");
    TK_CHECK(tk_optim_adam_new(0.1f, 0.9f, -0.1f, 1e-8f, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "beta2 must be in [0, 1)");
    TK_CHECK(tk_optim_adam_new(0.1f, 0.9f, 0.999f, -1e-8f, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "epsilon");
    TK_CHECK(tk_optim_adam_new(0.1f, 0.9f, 0.999f, 1e-8f, NAN) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "weight_decay");
    TK_CHECK(tk_optim_adagrad_new(0.1f, -1.0f, 1e-10f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "adagrad: initial_accumulator");
    TK_CHECK(tk_optim_adagrad_new(0.0f, 0.1f, 1e-10f) == NULL);
    tk_optim_free(NULL);
    TK_CHECK(tk_optim_steps(NULL) == 0);

    tk_optim *opt = tk_optim_sgd_new(0.1f, 0.0f, false, 0.0f);
    tk_optim_set_lr(opt, -1.0f);
    TK_CHECK_ERROR(tk_last_error(), "learning rate");
    TK_CHECK(tk_optim_lr(opt) == 0.1f); /* kept: stored */
    tk_optim_free(opt);
}

static void test_step_errors(void) {
    tk_optim *opt = tk_optim_adam_new(0.1f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tk_tensor *p = param3();
    tk_ctx *ctx = tk_ctx_new(1);
    TK_CHECK(backward_dot(ctx, p, C[0]) == TK_OK);

    TK_CHECK(tk_optim_step(NULL, ctx, 1, &p) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "optimizer is NULL");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_optim_step(opt, NULL, 1, &p) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "context is NULL");
    TK_CHECK(tk_optim_step(opt, ctx, 1, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "params is NULL");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_optim_step(opt, ctx, -1, &p) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "negative parameter count");
    tk_ctx_clear_error(ctx);
    /* a bad entry after a good one: nothing is updated */
    tk_tensor *bad[2] = { p, NULL };
    TK_CHECK(tk_optim_step(opt, ctx, 2, bad) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "params[1] is NULL");
    TK_CHECK(memcmp(p->data, P0, sizeof P0) == 0);
    tk_ctx_clear_error(ctx);
    tk_tensor *ids = tk_tensor_new_1d(TK_I64, 3);
    bad[1] = ids;
    TK_CHECK(tk_optim_step(opt, ctx, 2, bad) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "params[1] is int64, expected float32");
    tk_ctx_clear_error(ctx);
    bad[1] = tk_ctx_zeros(ctx, TK_F32, 1, p->shape);
    TK_CHECK(tk_optim_step(opt, ctx, 2, bad) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "params[1] is not a heap tensor");
    TK_CHECK(memcmp(p->data, P0, sizeof P0) == 0);
    TK_CHECK(tk_optim_steps(opt) == 0);
    /* a context with an error is not stepped from */
    tk_ctx_clear_error(ctx);
    tk_ctx_fail(ctx, "earlier failure");
    TK_CHECK(tk_optim_step(opt, ctx, 1, &p) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "earlier failure");
    TK_CHECK_ERROR(tk_ctx_error(ctx), "earlier failure");
    TK_CHECK(memcmp(p->data, P0, sizeof P0) == 0);
    /* after the errors, a good step is an optimizer's first */
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_optim_step(opt, ctx, 1, &p) == TK_OK);
    TK_CHECK(tk_optim_steps(opt) == 1);
    TK_CHECK_NEAR(tk_f32(p)[0], 0.9, 1e-6);
    tk_ctx_free(ctx);
    tk_optim_free(opt);
    tk_tensor_release(p);
    tk_tensor_release(ids);
}

/* The vector paths of Adam (8 lanes in AVX where the CPU has it, 4 in SSE) give the bits
 * of the scalar rule: a 29-element parameter (vector body and tail) against 29
 * one-element parameters (the scalar loop), three steps, with and without decay.
 * Bitwise by construction: the gradients are g exactly on both sides, and each lane does
 * the scalar rule's IEEE operations (mul, add, div, sqrt) in its order, with no FMA
 * (written so, and -ffp-contract=off keeps GCC from fusing the scalar form). */
static void test_adam_vector_bits(void) {
    enum { N = 29 };
    for (int wd = 0; wd < 2; wd++) {
        tk_optim *o1 = tk_optim_adam_new(0.01f, 0.9f, 0.999f, 1e-8f, wd ? 0.1f : 0.0f);
        tk_optim *o2 = tk_optim_adam_new(0.01f, 0.9f, 0.999f, 1e-8f, wd ? 0.1f : 0.0f);
        tk_tensor *big = tk_test_randn(1, (int64_t[]){ N }, 1, 77), *one[N];
        for (int i = 0; i < N; i++) {
            one[i] = tk_test_tensor(1, (int64_t[]){ 1 }, tk_f32(big) + i);
            tk_tensor_set_requires_grad(one[i], true);
        }
        tk_tensor_set_requires_grad(big, true);
        tk_ctx *c1 = tk_ctx_new(1), *c2 = tk_ctx_new(1);
        for (int k = 0; k < 3; k++) {
            float g[N];
            for (int i = 0; i < N; i++) g[i] = (float)((i * 7 + k * 3) % 11) * 0.37f - 1.5f;
            TK_CHECK(backward_dot(c1, big, g) == TK_OK);
            TK_CHECK(tk_optim_step(o1, c1, 1, &big) == TK_OK);
            tk_ctx_reset(c2);
            tk_tensor *loss = NULL;
            for (int i = 0; i < N; i++) {
                tk_tensor *gi = tk_ctx_empty(c2, TK_F32, 1, (int64_t[]){ 1 });
                tk_f32(gi)[0] = g[i];
                tk_tensor *t = tk_sum(c2, tk_mul(c2, one[i], gi), -1, false);
                loss = loss ? tk_add(c2, loss, t) : t;
            }
            TK_CHECK(tk_backward(c2, loss) == TK_OK);
            TK_CHECK(tk_optim_step(o2, c2, N, one) == TK_OK);
            int bad = 0;
            for (int i = 0; i < N; i++) bad += memcmp(tk_f32(big) + i, tk_f32(one[i]), sizeof(float)) != 0;
            TK_CHECK_MSG(bad == 0, "step %d, decay %d: %d elements differ from the scalar rule", k, wd, bad);
        }
        tk_ctx_free(c1);
        tk_ctx_free(c2);
        for (int i = 0; i < N; i++) tk_tensor_release(one[i]);
        tk_tensor_release(big);
        tk_optim_free(o1);
        tk_optim_free(o2);
    }
}

int main(void) {
    TK_RUN(test_adam_vector_bits);
    TK_RUN(test_sgd);
    TK_RUN(test_sgd_weight_decay);
    TK_RUN(test_sgd_momentum);
    TK_RUN(test_sgd_nesterov);
    TK_RUN(test_adam);
    TK_RUN(test_adamw);
    TK_RUN(test_adagrad);
    TK_RUN(test_skip_and_bookkeeping);
    TK_RUN(test_lazy_adam);
    TK_RUN(test_lazy_others);
    TK_RUN(test_lazy_no_dense_gradient);
    TK_RUN(test_mixed_sparse_dense);
    TK_RUN(test_clip_grad_norm);
    TK_RUN(test_step_block);
    TK_RUN(test_constructor_errors);
    TK_RUN(test_step_errors);
    return tk_test_summary();
}
