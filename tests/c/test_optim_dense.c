/* lazy = false (tk_optim_set_lazy): embedding tables updated at the cost of the touched
 * rows must equal the dense rule applied to every row every step (g = 0 for the rows a
 * batch did not touch), whenever the rows are read: by a lookup, a whole-table sync, a
 * save, a clone, from several threads at once. */
#include "io_test.h"
#include "internal.h"

#include <pthread.h>

/* --- the dense rule, every row every step: the kernels' float arithmetic, scalar --- */

typedef enum { K_ADAM, K_SGD, K_ADAGRAD } kind;

typedef struct config {
    const char *name;
    kind k;
    float lr, b1, b2, eps, wd, mu;
    bool nesterov;
} config;

static tk_optim *make_opt(const config *c) {
    switch (c->k) {
    case K_ADAM:
        return tk_optim_adam_new(c->lr, c->b1, c->b2, c->eps, c->wd);
    case K_SGD:
        return tk_optim_sgd_new(c->lr, c->mu, c->nesterov, c->wd);
    case K_ADAGRAD:
        return tk_optim_adagrad_new(c->lr, 0.1f, c->eps);
    }
    return NULL;
}

/* One step t of the rule at rate lr over n elements (m, v: the moments, as the optimizer's). */
static void ref_step(const config *c, int64_t t, float lr, float *p, float *m, float *v, const float *g, int64_t n) {
    if (c->k == K_ADAM) {
        float decay = (float)(1.0 - (double)lr * (double)c->wd);
        float step = (float)((double)lr / (1.0 - pow((double)c->b1, (double)t)));
        float bc2 = (float)sqrt(1.0 - pow((double)c->b2, (double)t));
        for (int64_t i = 0; i < n; i++) {
            if (decay != 1.0f) p[i] *= decay;
            m[i] = c->b1 * m[i] + (1.0f - c->b1) * g[i];
            v[i] = c->b2 * v[i] + (1.0f - c->b2) * g[i] * g[i];
            p[i] -= step * (m[i] / (sqrtf(v[i]) / bc2 + c->eps));
        }
    } else if (c->k == K_SGD) {
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i];
            if (c->wd != 0.0f) gi += c->wd * p[i];
            if (c->mu != 0.0f) {
                m[i] = c->mu * m[i] + gi;
                gi = c->nesterov ? gi + c->mu * m[i] : m[i];
            }
            p[i] -= lr * gi;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            m[i] += g[i] * g[i];
            p[i] -= lr * (g[i] / (sqrtf(m[i]) + c->eps));
        }
    }
}

/* loss = sum(lookup(table, ids) * w): row ids[i] (distinct) gets the gradient w[i]. */
static tk_status backward_rows(tk_ctx *ctx, tk_tensor *table, int64_t n, const int64_t *ids, const float *w) {
    tk_ctx_reset(ctx);
    int64_t wshape[2] = { n, table->shape[1] };
    tk_tensor *idt = tk_ctx_empty(ctx, TK_I64, 1, &n), *wt = tk_ctx_empty(ctx, TK_F32, 2, wshape);
    if (!idt || !wt) return TK_ERROR;
    memcpy(idt->data, ids, (size_t)n * sizeof *ids);
    memcpy(wt->data, w, (size_t)wt->numel * sizeof *w);
    tk_tensor *e = tk_embedding_lookup(ctx, table, idt, NULL, TK_COMBINER_SUM, "t");
    return tk_backward(ctx, tk_sum(ctx, tk_mul(ctx, e, wt), -1, false));
}

enum { R = 8, D = 6, STEPS = 620 };

/* Which rows step k touches: gaps of 1 (row 0), 5, 50, 500 (row 3: steps 1, 502,
 * 610), never (4), once (5: step 1, then read only at the end), irregular (6), a burst
 * then a gap of 550 (7). */
static bool touched(int r, int k) {
    switch (r) {
    case 0:
        return true;
    case 1:
        return k % 5 == 0;
    case 2:
        return k % 50 == 7;
    case 3:
        return k == 1 || k == 502 || k == 610;
    case 4:
        return false;
    case 5:
        return k == 1;
    case 6:
        return (k * 2654435761u) % 7u < 2;
    case 7:
        return k <= 10 || k == 560;
    }
    return false;
}

/* Gradient of element i of row r at step k: magnitudes from 3 down to 1e-5. */
static float grad(int k, int r, int i) {
    static const float amp[D] = { 1.0f, 0.1f, 1e-3f, 1e-5f, 3.0f, 0.5f };
    return amp[i] * (float)sin(0.7 * k + 1.3 * r + 0.37 * i);
}

/* A rate that changes every step (a Lua schedule calls set_learning_rate each step). */
static float rate(const config *c, int k) { return c->lr * (float)(1.0 + 0.5 * sin(0.05 * k)); }

/* Largest |got - want| / (|want| + scale) over n. */
static double worst_rel(const float *got, const float *want, int64_t n, double scale) {
    double w = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]) / (fabs((double)want[i]) + scale);
        if (!(d <= w)) w = d;
    }
    return w;
}

/* Trains a [R, D] table STEPS steps with lazy as given, the reference alongside; returns
 * the worst relative differences of p and of the moments (checked at step 300 too, so a
 * read in mid-training sees the same). */
static void run_against_reference(const config *c, bool lazy, double *worst_p, double *worst_m) {
    float init[R * D];
    for (int i = 0; i < R * D; i++) init[i] = 0.5f + 0.25f * (float)sin(1.7 * i);
    int64_t shape[2] = { R, D };
    tk_tensor *t = tk_test_tensor(2, shape, init);
    tk_tensor_set_requires_grad(t, true);
    tk_optim *opt = make_opt(c);
    tk_optim_set_lazy(opt, lazy);
    tk_ctx *ctx = tk_ctx_new(1);
    float p[R * D], m[R * D] = { 0 }, v[R * D] = { 0 };
    memcpy(p, init, sizeof p);
    if (c->k == K_ADAGRAD)
        for (int i = 0; i < R * D; i++) m[i] = 0.1f;
    *worst_p = *worst_m = 0;
    int nbuf = c->k == K_ADAM ? 2 : (c->k == K_ADAGRAD || c->mu != 0.0f) ? 1 : 0;
    for (int k = 1; k <= STEPS; k++) {
        int64_t ids[R];
        float w[R * D], g[R * D] = { 0 };
        int64_t n = 0;
        for (int r = 0; r < R; r++) {
            if (!touched(r, k)) continue;
            for (int i = 0; i < D; i++) w[n * D + i] = g[r * D + i] = grad(k, r, i);
            ids[n++] = r;
        }
        float lr = rate(c, k);
        tk_optim_set_lr(opt, lr);
        if (backward_rows(ctx, t, n, ids, w) != TK_OK || tk_optim_step(opt, ctx, 1, &t) != TK_OK) {
            printf("    step %d failed: %s\n", k, tk_last_error());
            tk_test_failures_in_case++;
            break;
        }
        ref_step(c, k, lr, p, m, v, g, R * D);
        if (k == 300 || k == STEPS) {
            const float *mm = nbuf > 0 ? tk_optim_moments(opt, t, 0) : NULL; /* syncs every row */
            const float *vv = nbuf > 1 ? tk_optim_moments(opt, t, 1) : NULL;
            tk_tensor_sync(t);
            double wp = worst_rel(tk_f32(t), p, R * D, 1.0);
            /* moments: relative to their own size (a row's moments span decades) */
            double wm = mm ? worst_rel(mm, m, R * D, 1e-30) : 0;
            if (vv) {
                double wv = worst_rel(vv, v, R * D, 1e-30);
                if (wv > wm) wm = wv;
            }
            if (wp > *worst_p) *worst_p = wp;
            if (wm > *worst_m) *worst_m = wm;
        }
    }
    tk_ctx_free(ctx);
    tk_optim_free(opt);
    tk_tensor_release(t);
}

static const config CONFIGS[] = {
    { "adam", K_ADAM, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, 0, false },
    { "adamw", K_ADAM, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 0, false },
    { "adam b1 0.99", K_ADAM, 0.01f, 0.99f, 0.999f, 1e-7f, 0.0f, 0, false },
    { "sgd momentum wd", K_SGD, 0.05f, 0, 0, 0, 0.01f, 0.9f, false },
    { "sgd nesterov wd", K_SGD, 0.05f, 0, 0, 0, 0.01f, 0.9f, true },
    { "sgd momentum", K_SGD, 0.05f, 0, 0, 0, 0.0f, 0.5f, false },
    { "sgd wd", K_SGD, 0.05f, 0, 0, 0, 0.05f, 0.0f, false },
    { "adagrad", K_ADAGRAD, 0.05f, 0, 0, 1e-7f, 0, 0, false },
};

/* Tolerance. The reference rounds every step: m and v lose up to 2^-24 relative per
 * step (one multiply, one add), so after n = 620 steps up to about 2 n 2^-24 = 7.4e-5
 * relative; the catch-up computes b^n m in double and rounds once. p rounds by 2^-24
 * |p| per step and inherits m's error through its movement; p's values here are O(1)
 * and its total movement O(1) (lr 0.01 to 0.05, moves that shrink as m decays), so
 * |dp| <= about 1e-4 (|p| + 1). Everything lazy = true gets wrong is far larger: a row
 * skipped 500 steps misses its decay and m's drift (checked below: > 100 times). */
#define TOL_P 1e-4
#define TOL_M 1e-4

static void test_dense_equals_reference(void) {
    for (size_t i = 0; i < TK_ARRAY_LEN(CONFIGS); i++) {
        const config *c = &CONFIGS[i];
        double wp, wm, lp, lm;
        run_against_reference(c, false, &wp, &wm);
        TK_CHECK_MSG(wp <= TOL_P && wm <= TOL_M, "%s: lazy = false differs from the dense rule: p %g, moments %g",
                     c->name, wp, wm);
        run_against_reference(c, true, &lp, &lm);
        if (getenv("TK_VERBOSE")) printf("    %s: dense %g %g, lazy %g %g\n", c->name, wp, wm, lp, lm);
        if (c->k == K_ADAGRAD) /* g = 0 changes nothing: lazy is dense */
            TK_CHECK_MSG(lp <= TOL_P && lm <= TOL_M, "%s: lazy = true: p %g, moments %g", c->name, lp, lm);
        else /* the comparison can tell: lazy = true is far off */
            TK_CHECK_MSG(lp > 100 * TOL_P || lm > 100 * TOL_M, "%s: lazy = true is within %g, %g", c->name, lp, lm);
    }
}

/* A gap of two steps against the rule unrolled by hand, in double: no step more, none
 * fewer, the bias corrections of the steps skipped. */
static void test_small_gap_by_hand(void) {
    const float lr = 0.1f;
    tk_optim *opt = tk_optim_adam_new(lr, 0.9f, 0.999f, 1e-8f, 0.5f);
    tk_optim_set_lazy(opt, false);
    int64_t shape[2] = { 2, 1 };
    const float init[2] = { 1.0f, 2.0f };
    tk_tensor *t = tk_test_tensor(2, shape, init);
    tk_tensor_set_requires_grad(t, true);
    tk_ctx *ctx = tk_ctx_new(1);
    const int64_t both[2] = { 0, 1 }, row0[1] = { 0 };
    const float g1[2] = { 1.0f, -2.0f }, g2[1] = { 0.5f };
    TK_CHECK(backward_rows(ctx, t, 2, both, g1) == TK_OK && tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    for (int k = 2; k <= 3; k++)
        TK_CHECK(backward_rows(ctx, t, 1, row0, g2) == TK_OK && tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    /* row 1: step 1 with g = -2, steps 2 and 3 with g = 0 */
    double p = 2.0, m = 0, v = 0, d = 1.0 - 0.1 * 0.5;
    for (int k = 1; k <= 3; k++) {
        double g = k == 1 ? -2.0 : 0.0;
        p *= d;
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        p -= 0.1 / (1 - pow(0.9, k)) * m / (sqrt(v) / sqrt(1 - pow(0.999, k)) + 1e-8);
    }
    const int64_t row1[1] = { 1 };
    tk_ctx_reset(ctx);
    int64_t one = 1;
    tk_tensor *idt = tk_ctx_empty(ctx, TK_I64, 1, &one);
    memcpy(idt->data, row1, sizeof row1);
    tk_tensor *e = tk_embedding_lookup(ctx, t, idt, NULL, TK_COMBINER_SUM, "t"); /* the lookup syncs the row */
    TK_CHECK(e != NULL);
    if (e) TK_CHECK_NEAR(tk_f32(e)[0], p, 1e-6);
    TK_CHECK_NEAR(tk_f32(t)[1], p, 1e-6);
    const float *mm = tk_optim_moments(opt, t, 0);
    TK_CHECK(mm != NULL);
    if (mm) TK_CHECK_NEAR(mm[1], m, 1e-7);
    tk_ctx_free(ctx);
    tk_optim_free(opt);
    tk_tensor_release(t);
}

/* The truncation and the expansion: b1 = 0.99 (J about 2400 steps, the gap 3000, so
 * the sum is cut), eps = 1e-4 with sqrt(v) from 1e-3 eps to 1e5 eps (the expansion for
 * the large ones, the direct sum near eps and below), weight decay, and a rate that
 * rises over the gap (a warm-up: lr_max / lr_{s+1} = 30). The catch-up starts from the
 * float state after step 1 and rounds once; a double loop over the 3000 steps is the
 * reference. Bound: 2^-26 of the movement (truncation plus expansion, 2^-27 each) plus
 * half an ulp of the result (2^-24 relative) plus the double loops' own rounding. */
static void test_truncation_bound(void) {
    const float b1 = 0.99f, b2 = 0.999f, eps = 1e-4f, wd = 0.01f;
    enum { NE = 8, GAP = 3000 };
    const double xs[NE] = { 1e-3, 0.1, 1, 3, 10, 30, 1e3, 1e5 }; /* sqrt(v_1) / eps */
    float g[NE], init[NE];
    for (int i = 0; i < NE; i++) {
        g[i] = (float)(xs[i] * eps / sqrt(1.0 - b2)) * (i % 2 ? -1.0f : 1.0f);
        init[i] = 0.0f;
    }
    int64_t shape[2] = { 1, NE };
    tk_tensor *t = tk_test_tensor(2, shape, init);
    tk_tensor_set_requires_grad(t, true);
    tk_optim *opt = tk_optim_adam_new(1e-4f, b1, b2, eps, wd);
    tk_optim_set_lazy(opt, false);
    tk_ctx *ctx = tk_ctx_new(1);
    const int64_t row0[1] = { 0 };
    TK_CHECK(backward_rows(ctx, t, 1, row0, g) == TK_OK && tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    float p1[NE], m1[NE], v1[NE];
    memcpy(p1, tk_f32(t), sizeof p1);
    memcpy(m1, tk_optim_moments(opt, t, 0), sizeof m1);
    memcpy(v1, tk_optim_moments(opt, t, 1), sizeof v1);
    double p[NE], m[NE], v[NE], dprod = 1.0;
    for (int i = 0; i < NE; i++) p[i] = p1[i], m[i] = m1[i], v[i] = v1[i];
    tk_ctx *empty = tk_ctx_new(2);
    for (int k = 2; k <= GAP + 1; k++) {
        float lr = 1e-4f * (float)(k < 1000 ? 1.0 + 29.0 * k / 1000.0 : 30.0); /* warm-up */
        tk_optim_set_lr(opt, lr);
        TK_CHECK(tk_optim_step(opt, empty, 1, &t) == TK_OK); /* no gradient: g = 0 for the table */
        float d = (float)(1.0 - (double)lr * wd);
        float step = (float)((double)lr / (1.0 - pow(b1, k)));
        float bc2 = (float)sqrt(1.0 - pow(b2, k));
        dprod *= d;
        for (int i = 0; i < NE; i++) {
            m[i] *= b1;
            v[i] *= b2;
            p[i] = d * p[i] - step * (m[i] / (sqrt(v[i]) / bc2 + eps));
        }
    }
    tk_tensor_sync(t);
    const float *mm = tk_optim_moments(opt, t, 0), *vv = tk_optim_moments(opt, t, 1);
    for (int i = 0; i < NE; i++) {
        double moved = fabs(p[i] - dprod * p1[i]);
        double bound = 0x1p-26 * moved + 0x1p-24 * fabs(p[i]) + 1e-12 * (moved + fabs(p[i]));
        TK_CHECK_MSG(fabs(tk_f32(t)[i] - p[i]) <= bound, "element %d (sqrt(v) = %g eps): got %.9g, want %.9g, bound %g",
                     i, xs[i], (double)tk_f32(t)[i], p[i], bound);
        TK_CHECK_MSG(fabs(mm[i] - m[i]) <= 0x1p-23 * fabs(m[i]) && fabs(vv[i] - v[i]) <= 0x1p-23 * fabs(v[i]),
                     "element %d: moments %g %g, want %g %g", i, (double)mm[i], (double)vv[i], m[i], v[i]);
    }
    tk_ctx_free(empty);
    tk_ctx_free(ctx);
    tk_optim_free(opt);
    tk_tensor_release(t);
}

/* Past the history's length (32768 steps: then every table is brought up to date and
 * the history restarts) the decay and the moments carry on: a row touched at step 1
 * only, read at step 40001, against a double loop from its state after step 1 (three
 * roundings to float at most: the restart's sync, the read, and 2^-26 of the movement). */
static void test_history_restart(void) {
    int64_t shape[2] = { 2, 2 };
    const float init[4] = { 0.5f, -0.5f, 0.25f, 1.0f };
    tk_tensor *t = tk_test_tensor(2, shape, init);
    tk_tensor_set_requires_grad(t, true);
    tk_optim *opt = tk_optim_adam_new(1e-2f, 0.9f, 0.999f, 1e-8f, 1e-3f);
    tk_optim_set_lazy(opt, false);
    tk_ctx *ctx = tk_ctx_new(1), *empty = tk_ctx_new(2);
    const int64_t both[2] = { 0, 1 };
    const float g[4] = { 0.3f, -0.2f, 0.1f, 0.05f };
    TK_CHECK(backward_rows(ctx, t, 2, both, g) == TK_OK && tk_optim_step(opt, ctx, 1, &t) == TK_OK);
    double p[2] = { tk_f32(t)[2], tk_f32(t)[3] }, m[2], v[2];
    for (int i = 0; i < 2; i++) m[i] = tk_optim_moments(opt, t, 0)[2 + i], v[i] = tk_optim_moments(opt, t, 1)[2 + i];
    double moved[2] = { 0, 0 }, p1 = p[0];
    for (int k = 2; k <= 40001; k++) {
        float lr = k % 1000 < 500 ? 1e-2f : 5e-3f;
        tk_optim_set_lr(opt, lr);
        if (k == 20000) /* row 0 only */
            TK_CHECK(backward_rows(ctx, t, 1, both, g) == TK_OK && tk_optim_step(opt, ctx, 1, &t) == TK_OK);
        else
            TK_CHECK(tk_optim_step(opt, empty, 1, &t) == TK_OK);
        float d = (float)(1.0 - (double)lr * 1e-3);
        float step = (float)((double)lr / (1.0 - pow(0.9f, k)));
        float bc2 = (float)sqrt(1.0 - pow(0.999f, k));
        for (int i = 0; i < 2; i++) {
            m[i] *= 0.9f;
            v[i] *= 0.999f;
            double u = step * (m[i] / (sqrt(v[i]) / bc2 + 1e-8f));
            p[i] = d * p[i] - u;
            moved[i] += fabs(u);
        }
    }
    tk_tensor_sync(t);
    for (int i = 0; i < 2; i++)
        TK_CHECK_MSG(fabs(tk_f32(t)[2 + i] - p[i]) <= 3 * 0x1p-24 * fabs(p[i]) + 0x1p-26 * moved[i] + 1e-12,
                     "element %d: got %.9g, want %.9g", i, (double)tk_f32(t)[2 + i], p[i]);
    TK_CHECK(fabs(tk_f32(t)[2]) < 0.8 * fabs(p1)); /* the decay over 40000 steps (about 0.74) shows */
    tk_ctx_free(ctx);
    tk_ctx_free(empty);
    tk_optim_free(opt);
    tk_tensor_release(t);
}

/* --- readers --- */

enum { TR = 500, TD = 16 };

/* A [TR, TD] table trained 40 steps (Adam, lazy = false), each step touching 20 rows:
 * most rows are behind when the test reads them. */
static tk_tensor *trained_table(tk_optim *opt, tk_tensor *t) {
    tk_ctx *ctx = tk_ctx_new(1);
    for (int k = 1; k <= 40; k++) {
        int64_t ids[20];
        float w[20 * TD];
        for (int i = 0; i < 20; i++) {
            ids[i] = (int64_t)((k * 37 + i * 101) % TR);
            for (int j = 0; j < TD; j++) w[i * TD + j] = (float)sin(k + 0.1 * i + 0.01 * j);
        }
        if (backward_rows(ctx, t, 20, ids, w) != TK_OK || tk_optim_step(opt, ctx, 1, &t) != TK_OK)
            tk_test_failures_in_case++;
    }
    tk_ctx_free(ctx);
    return t;
}

static tk_tensor *fresh_table(void) {
    int64_t shape[2] = { TR, TD };
    tk_tensor *t = tk_tensor_new(TK_F32, 2, shape);
    for (int64_t i = 0; i < t->numel; i++) tk_f32(t)[i] = (float)cos(0.37 * (double)i);
    tk_tensor_set_requires_grad(t, true);
    return t;
}

typedef struct reader {
    tk_tensor *t;
    int id;
    float *out; /* [TR, TD]: the rows it looked up */
    bool ok;
} reader;

/* Looks up every row, in batches of 50 in an order of its own, in its own context
 * (evaluation: no gradients), as tk_block_embed's threads do; thread 0 also syncs the
 * whole table midway. */
static void *read_rows(void *arg) {
    reader *rd = arg;
    tk_ctx *ctx = tk_ctx_new((uint64_t)rd->id + 10);
    tk_ctx_set_grad_enabled(ctx, false);
    rd->ok = ctx != NULL;
    for (int b = 0; rd->ok && b < TR / 50; b++) {
        tk_ctx_reset(ctx);
        int64_t n = 50;
        tk_tensor *ids = tk_ctx_empty(ctx, TK_I64, 1, &n);
        static const int mult[4] = { 1, 3, 7, 9 }; /* prime to TR: every row once */
        for (int i = 0; i < 50; i++) tk_i64(ids)[i] = ((b * 50 + i) * mult[rd->id % 4] + rd->id * 7) % TR;
        tk_tensor *e = tk_embedding_lookup(ctx, rd->t, ids, NULL, TK_COMBINER_SUM, "t");
        if (!e) {
            rd->ok = false;
            break;
        }
        for (int i = 0; i < 50; i++) memcpy(rd->out + tk_i64(ids)[i] * TD, tk_f32(e) + i * TD, TD * sizeof(float));
        if (rd->id == 0 && b == 3) tk_tensor_sync(rd->t);
    }
    tk_ctx_free(ctx);
    return NULL;
}

/* Several threads read one table at once (lookups of overlapping rows, a whole-table
 * sync): every value they see, and the table after, is the serial sync's, to the bit
 * (the same gaps give the same factors, whoever computes them). Run under TSan by
 * make test-tsan. */
static void test_concurrent_reads(void) {
    enum { NT = 4 };
    tk_optim *oa = tk_optim_adam_new(0.01f, 0.9f, 0.999f, 1e-8f, 0.01f),
             *ob = tk_optim_adam_new(0.01f, 0.9f, 0.999f, 1e-8f, 0.01f);
    tk_optim_set_lazy(oa, false);
    tk_optim_set_lazy(ob, false);
    tk_tensor *a = trained_table(oa, fresh_table()), *b = trained_table(ob, fresh_table());
    TK_CHECK(memcmp(a->data, b->data, (size_t)a->numel * sizeof(float)) == 0); /* both behind alike */
    tk_tensor_sync(a);
    TK_CHECK(memcmp(a->data, b->data, (size_t)a->numel * sizeof(float)) != 0); /* the sync moved rows */
    pthread_t th[NT];
    reader rd[NT];
    for (int i = 0; i < NT; i++) {
        rd[i] = (reader){ b, i, calloc((size_t)TR * TD, sizeof(float)), false };
        pthread_create(&th[i], NULL, read_rows, &rd[i]);
    }
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NT; i++) {
        TK_CHECK(rd[i].ok);
        TK_CHECK(memcmp(rd[i].out, a->data, (size_t)a->numel * sizeof(float)) == 0);
        free(rd[i].out);
    }
    TK_CHECK(memcmp(a->data, b->data, (size_t)a->numel * sizeof(float)) == 0);
    tk_optim_free(oa);
    tk_optim_free(ob);
    tk_tensor_release(a);
    tk_tensor_release(b);
}

/* Save (tk_checkpoint_write), tk_block_save_weights and clone (get_weights) see every row
 * caught up, not the stored values; the same training synced by hand is the reference. */
static void test_save_and_clone_see_caught_up_rows(void) {
    tk_block *blk[2];
    tk_optim *opt[2];
    tk_tensor *tab[2];
    for (int i = 0; i < 2; i++) {
        blk[i] = tk_embeddings_new("embeddings");
        TK_CHECK(tk_embeddings_add_feature(blk[i], "item", "item", TR, TD, TK_COMBINER_SUM,
                                           (tk_init){ .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.05f, .b = 0.05f },
                                           7) == TK_OK);
        tab[i] = tk_block_param(blk[i], "item");
        TK_CHECK(tab[i] != NULL);
        if (!tab[i]) return;
        opt[i] = tk_optim_adam_new(0.01f, 0.9f, 0.999f, 1e-8f, 0.004f);
        tk_optim_set_lazy(opt[i], false);
        trained_table(opt[i], tab[i]);
    }
    size_t bytes = (size_t)tab[0]->numel * sizeof(float);
    float *stored = malloc(bytes);
    memcpy(stored, tab[1]->data, bytes); /* behind: read past the hook */
    tk_tensor_sync(tab[0]);
    TK_CHECK(memcmp(stored, tab[0]->data, bytes) != 0);
    io_tmpdir("tk-optim-dense");
    TK_CHECK(tk_checkpoint_write(io_path("ckpt"), blk[1], 0, NULL, NULL) == TK_OK);
    char wpath[600];
    snprintf(wpath, sizeof wpath, "%s/weights.safetensors", io_path("ckpt"));
    tk_safetensors *st = tk_safetensors_read(wpath);
    TK_CHECK(st != NULL && st->n == 1);
    if (st && st->n == 1) TK_CHECK(memcmp(st->tensors[0]->data, tab[0]->data, bytes) == 0);
    tk_safetensors_free(st);
    TK_CHECK(memcmp(tab[1]->data, tab[0]->data, bytes) == 0);
    /* a clone (Lua's get_weights) of a table behind */
    trained_table(opt[0], tab[0]);
    trained_table(opt[1], tab[1]);
    memcpy(stored, tab[1]->data, bytes);
    tk_tensor *c = tk_tensor_clone(tab[1]);
    tk_tensor_sync(tab[0]);
    TK_CHECK(memcmp(c->data, tab[0]->data, bytes) == 0 && memcmp(stored, tab[0]->data, bytes) != 0);
    tk_tensor_release(c);
    /* freeing the optimizer brings the rows up to date and removes the hook */
    trained_table(opt[0], tab[0]);
    trained_table(opt[1], tab[1]);
    tk_tensor_sync(tab[0]);
    tk_optim_free(opt[1]);
    TK_CHECK(tab[1]->lazy == NULL && memcmp(tab[1]->data, tab[0]->data, bytes) == 0);
    tk_optim_free(opt[0]);
    free(stored);
    tk_block_release(blk[0]);
    tk_block_release(blk[1]);
    io_remove_tree(io_dir);
}

/* One table, two optimizers with lazy = false: the second refuses it (one hook per
 * table). Switching to lazy = true syncs and removes the hook. */
static void test_one_optimizer_per_table(void) {
    tk_tensor *t = fresh_table();
    tk_optim *a = tk_optim_adam_new(0.01f, 0.9f, 0.999f, 1e-8f, 0.0f),
             *b = tk_optim_adam_new(0.01f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tk_optim_set_lazy(a, false);
    tk_optim_set_lazy(b, false);
    trained_table(a, t);
    tk_ctx *ctx = tk_ctx_new(1);
    const int64_t ids[1] = { 3 };
    float w[TD] = { 1 };
    TK_CHECK(backward_rows(ctx, t, 1, ids, w) == TK_OK);
    TK_CHECK(tk_optim_step(b, ctx, 1, &t) == TK_ERROR);
    TK_CHECK(strstr(tk_last_error(), "another optimizer") != NULL);
    TK_CHECK(t->lazy != NULL);
    tk_optim_set_lazy(a, true);
    TK_CHECK(t->lazy == NULL && tk_optim_lazy(a));
    tk_ctx_free(ctx);
    tk_optim_free(a);
    tk_optim_free(b);
    tk_tensor_release(t);
}

/* Lookups of rows ids in tables t[0..n), table i's loss sum((e (first + i + 1))^2), in
 * one context. */
static tk_status backward_tables(tk_ctx *ctx, int first, int n, tk_tensor **t, const int64_t *ids, int64_t nid) {
    tk_ctx_reset(ctx);
    tk_tensor *total = NULL;
    for (int i = 0; i < n; i++) {
        tk_tensor *idt = tk_ctx_empty(ctx, TK_I64, 1, &nid);
        if (!idt) return TK_ERROR;
        memcpy(idt->data, ids, (size_t)nid * sizeof *ids);
        tk_tensor *e = tk_embedding_lookup(ctx, t[i], idt, NULL, TK_COMBINER_SUM, "t");
        tk_tensor *l = tk_sum(ctx, tk_square(ctx, tk_scale(ctx, e, (float)(first + i + 1))), -1, false);
        total = total ? tk_add(ctx, total, l) : l;
    }
    return tk_backward(ctx, total);
}

/* The trainer's path (tk_optim_prepare_contexts + apply_range, through
 * tk_optim_step_contexts: one context per tower) and the single-context path
 * (tk_optim_step with both tables' gradients in one context) honour lazy = false alike:
 * the same bits, and untouched rows moved (which lazy = true would not do). */
static void test_trainer_path(void) {
    tk_block *blk[2];
    tk_tensor *ta[2], *tb[2];
    for (int i = 0; i < 2; i++) {
        blk[i] = tk_embeddings_new(i ? "item" : "query");
        TK_CHECK(tk_embeddings_add_feature(blk[i], "f", "f", 50, 8, TK_COMBINER_SUM,
                                           (tk_init){ .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.5f, .b = 0.5f },
                                           3 + i) == TK_OK);
        ta[i] = tk_block_param(blk[i], "f");
        tb[i] = tk_tensor_clone(ta[i]);
        tk_tensor_set_requires_grad(tb[i], true);
    }
    tk_optim *x = tk_optim_adam_new(0.05f, 0.9f, 0.999f, 1e-8f, 0.01f),
             *y = tk_optim_adam_new(0.05f, 0.9f, 0.999f, 1e-8f, 0.01f);
    tk_optim_set_lazy(x, false);
    tk_optim_set_lazy(y, false);
    tk_ctx *cx[2] = { tk_ctx_new(1), tk_ctx_new(2) }, *cy = tk_ctx_new(3);
    const tk_block *blocks[2] = { blk[0], blk[1] };
    for (int k = 1; k <= 30; k++) {
        int64_t ids[3] = { k % 50, (k * 7) % 50, k < 3 ? 49 : (k * 13) % 49 };
        for (int i = 0; i < 2; i++) TK_CHECK(backward_tables(cx[i], i, 1, &ta[i], ids, 3) == TK_OK);
        TK_CHECK(tk_optim_step_contexts(x, 2, cx, blocks) == TK_OK);
        TK_CHECK(backward_tables(cy, 0, 2, tb, ids, 3) == TK_OK);
        TK_CHECK(tk_optim_step(y, cy, 2, tb) == TK_OK);
    }
    for (int i = 0; i < 2; i++) {
        tk_tensor *c = tk_tensor_clone(ta[i]); /* synced */
        tk_tensor_sync(tb[i]);
        TK_CHECK(memcmp(c->data, tb[i]->data, (size_t)c->numel * sizeof(float)) == 0);
        tk_tensor_release(c);
    }
    /* row 49: touched at steps 1 and 2 only, yet moved since (its m, the decay) */
    float before[8];
    memcpy(before, tk_f32(ta[1]) + 49 * 8, sizeof before);
    int64_t ids[1] = { 0 };
    for (int i = 0; i < 2; i++) TK_CHECK(backward_tables(cx[i], i, 1, &ta[i], ids, 1) == TK_OK);
    TK_CHECK(tk_optim_step_contexts(x, 2, cx, blocks) == TK_OK);
    tk_tensor_sync(ta[1]);
    TK_CHECK(memcmp(before, tk_f32(ta[1]) + 49 * 8, sizeof before) != 0);
    for (int i = 0; i < 2; i++) {
        tk_ctx_free(cx[i]);
        tk_tensor_release(tb[i]);
    }
    tk_ctx_free(cy);
    tk_optim_free(x);
    tk_optim_free(y);
    tk_block_release(blk[0]);
    tk_block_release(blk[1]);
}

int main(void) {
    TK_RUN(test_dense_equals_reference);
    TK_RUN(test_small_gap_by_hand);
    TK_RUN(test_truncation_bound);
    TK_RUN(test_history_restart);
    TK_RUN(test_concurrent_reads);
    TK_RUN(test_save_and_clone_see_caught_up_rows);
    TK_RUN(test_one_optimizer_per_table);
    TK_RUN(test_trainer_path);
    return tk_test_summary();
}
