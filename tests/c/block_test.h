/* Helpers for the block tests (tests/c/test_blocks_*.c): building inputs, running a
 * block, checking values and gradients of a whole block. */
#ifndef TK_BLOCK_TEST_H
#define TK_BLOCK_TEST_H

#include "gradcheck.h"
#include "towerkit_ext.h" /* the graph test registers a kind of its own and reads its blocks */

/* A heap I64 tensor of n ids ([n], or [n, 1] when col). */
static inline tk_tensor *bt_ids(int64_t n, const int64_t *ids, bool col) {
    int64_t shape[2] = { n, 1 };
    tk_tensor *t = tk_tensor_new(TK_I64, col ? 2 : 1, shape);
    if (t && n) memcpy(t->data, ids, (size_t)n * sizeof *ids);
    return t;
}

static inline tk_tensor *bt_mat(int64_t r, int64_t c, const float *v) {
    int64_t shape[2] = { r, c };
    return tk_test_tensor(2, shape, v);
}

static inline tk_tensor *bt_randn(int64_t r, int64_t c, uint64_t seed) {
    int64_t shape[2] = { r, c };
    return tk_test_randn(2, shape, 1.0f, seed);
}

/* Overwrites a parameter of b with values. */
static inline void bt_set_param(tk_block *b, const char *name, const float *v) {
    tk_tensor *p = tk_block_param(b, name);
    if (p) memcpy(p->data, v, (size_t)p->numel * sizeof(float));
}

/* All elements of t are within tol of want. */
static inline bool bt_near(const tk_tensor *t, const float *want, int64_t n, double tol) {
    if (!t || t->dtype != TK_F32 || t->numel != n) return false;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)tk_f32(t)[i] - (double)want[i]) <= tol)) {
            printf("    element %lld: got %.7g, want %.7g\n", (long long)i, (double)tk_f32(t)[i], (double)want[i]);
            return false;
        }
    return true;
}

static inline bool bt_shape2(const tk_tensor *t, int64_t a, int64_t b) {
    return t && t->ndim == 2 && t->shape[0] == a && t->shape[1] == b;
}

/* A block fed with either one tensor or a tabular value of named tensors. */
typedef struct bt_case {
    tk_block *block;
    int n; /* 0: the single tensor ins[0]; else n named entries */
    const char *names[8];
    tk_tensor *ins[8];
} bt_case;

static inline tk_value *bt_input(tk_ctx *ctx, const bt_case *c) {
    if (c->n == 0) return tk_value_of(ctx, c->ins[0]);
    tk_value *v = tk_value_table(ctx);
    for (int i = 0; i < c->n; i++) tk_value_set(ctx, v, c->names[i], c->ins[i]);
    return v;
}

/* sum of projections of every entry of the output, plus the losses blocks added. */
static inline tk_tensor *bt_loss(tk_ctx *ctx, void *ud) {
    const bt_case *c = ud;
    tk_value *out = tk_block_forward(ctx, c->block, bt_input(ctx, c));
    if (!out) return NULL;
    tk_tensor *loss = NULL;
    if (!tk_value_is_tabular(out)) {
        loss = gradcheck_project(ctx, out->tensor);
    } else {
        const char **names = tk_value_sorted_names(ctx, out);
        for (int32_t i = 0; i < out->n; i++) {
            tk_tensor *p = gradcheck_project(ctx, tk_value_get(out, names[i]));
            loss = loss ? tk_add(ctx, loss, p) : p;
        }
    }
    tk_tensor *added = tk_ctx_added_loss(ctx);
    return added && loss ? tk_add(ctx, loss, added) : loss;
}

typedef struct bt_leaves {
    tk_tensor *t[64];
    int n;
} bt_leaves;

static inline int bt_collect(void *ud, const char *path, tk_tensor *param, bool trainable) {
    bt_leaves *l = ud;
    if (trainable && l->n < 64) l->t[l->n++] = param;
    return 0;
}

/* Gradient check of every trainable parameter of the block and every float input. */
static inline int bt_gradcheck(const char *what, bt_case *c, bool training, double tol) {
    bt_leaves l = { { 0 }, 0 };
    /* build lazily-sized weights first, so they are leaves too */
    tk_ctx *ctx = tk_ctx_new(7);
    tk_ctx_set_training(ctx, training);
    if (!tk_block_forward(ctx, c->block, bt_input(ctx, c))) printf("    %s: %s\n", what, tk_ctx_error(ctx));
    tk_ctx_free(ctx);
    tk_block_visit_params(c->block, false, bt_collect, &l);
    int nin = c->n ? c->n : 1;
    for (int i = 0; i < nin; i++) {
        if (c->ins[i]->dtype != TK_F32) continue;
        tk_tensor_set_requires_grad(c->ins[i], true);
        l.t[l.n++] = c->ins[i];
    }
    return gradcheck_run(what, bt_loss, c, l.n, l.t, training, tol);
}

#endif
