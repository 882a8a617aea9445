/* Finite-difference gradient checks (Torch7 nn's Jacobian tests, in float32).
 *
 * The function under test builds a scalar loss from heap leaves that require gradients.
 * To make every output element matter, tests usually reduce an op's output with
 * gradcheck_project: sum(out * r) for a fixed random r. Central differences in float32
 * with eps 1e-2 and a mixed absolute/relative tolerance. */
#ifndef TK_GRADCHECK_H
#define TK_GRADCHECK_H

#include "tk_test.h"

typedef tk_tensor *(*gradcheck_fn)(tk_ctx *ctx, void *ud);

/* sum(out * r) with r drawn from a fixed seed per shape (r lives in the context). */
static inline tk_tensor *gradcheck_project(tk_ctx *ctx, tk_tensor *out) {
    if (!out) return NULL;
    tk_tensor *r = tk_ctx_empty(ctx, TK_F32, out->ndim, out->shape);
    if (!r) return NULL;
    uint64_t s = 0x1234567u + (uint64_t)out->numel;
    for (int64_t i = 0; i < r->numel; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tk_f32(r)[i] = (float)((double)(s >> 40) / 16777216.0 * 2.0 - 1.0);
    }
    return tk_sum(ctx, tk_mul(ctx, out, r), -1, false);
}

static inline double gradcheck_eval(gradcheck_fn fn, void *ud, bool training) {
    tk_ctx *ctx = tk_ctx_new(7);
    tk_ctx_set_training(ctx, training);
    tk_ctx_set_grad_enabled(ctx, false);
    tk_tensor *loss = fn(ctx, ud);
    double v = loss ? (double)tk_f32(loss)[0] : NAN;
    if (!loss) printf("    gradcheck: forward failed: %s\n", tk_ctx_error(ctx));
    tk_ctx_free(ctx);
    return v;
}

/* Compares analytic and numeric gradients of every element of each leaf (at most
 * `max_elems` per leaf, spread evenly). Returns the number of mismatches, printed.
 * `training` sets the context's training flag; each evaluation gets a fresh context
 * with the same seed, so dropout masks repeat. */
static inline int gradcheck_run(const char *what, gradcheck_fn fn, void *ud, int nleaves, tk_tensor **leaves,
                                bool training, double tol) {
    const double eps = 1e-2;
    int bad = 0;
    tk_ctx *ctx = tk_ctx_new(7);
    tk_ctx_set_training(ctx, training);
    tk_tensor *loss = fn(ctx, ud);
    if (!loss || tk_backward(ctx, loss) != TK_OK) {
        printf("    gradcheck %s: %s\n", what, tk_ctx_error(ctx));
        tk_ctx_free(ctx);
        return 1;
    }
    for (int l = 0; l < nleaves; l++) {
        tk_tensor *leaf = leaves[l];
        tk_tensor *g = tk_ctx_grad(ctx, leaf);
        int64_t step = leaf->numel > 64 ? leaf->numel / 64 : 1;
        for (int64_t i = 0; i < leaf->numel; i += step) {
            float *x = tk_f32(leaf) + i;
            float keep = *x;
            *x = keep + (float)eps;
            double up = gradcheck_eval(fn, ud, training);
            *x = keep - (float)eps;
            double down = gradcheck_eval(fn, ud, training);
            *x = keep;
            double numeric = (up - down) / (2 * eps);
            double analytic = g ? (double)tk_f32(g)[i] : 0.0;
            double err = fabs(numeric - analytic);
            if (err > tol * (1.0 + fabs(numeric))) {
                if (bad < 5)
                    printf("    gradcheck %s: leaf %d element %lld: analytic %.6g numeric %.6g\n", what, l,
                           (long long)i, analytic, numeric);
                bad++;
            }
        }
    }
    tk_ctx_free(ctx);
    return bad;
}

#endif
