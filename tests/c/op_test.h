/* Helpers for the op tests (tests/c/test_ops_*.c, test_loss.c, test_init.c). */
#ifndef TK_OP_TEST_H
#define TK_OP_TEST_H

#include "gradcheck.h"

#include <stdarg.h>

/* A heap F32 leaf that requires gradients, N(0, scale) from a seed. */
static inline tk_tensor *op_leaf(int32_t ndim, const int64_t *shape, float scale, uint64_t seed) {
    tk_tensor *t = tk_test_randn(ndim, shape, scale, seed);
    tk_tensor_set_requires_grad(t, true);
    return t;
}

static inline tk_tensor *op_leaf_2d(int64_t r, int64_t c, uint64_t seed) {
    int64_t s[2] = { r, c };
    return op_leaf(2, s, 1.0f, seed);
}

static inline tk_tensor *op_leaf_1d(int64_t n, uint64_t seed) { return op_leaf(1, &n, 1.0f, seed); }

/* A heap F32 tensor from values (no gradient). */
static inline tk_tensor *op_f32(int32_t ndim, const int64_t *shape, const float *v) {
    return tk_test_tensor(ndim, shape, v);
}

/* A heap I64 tensor [n] from values. */
static inline tk_tensor *op_i64(int64_t n, const int64_t *v) {
    tk_tensor *t = tk_tensor_new_1d(TK_I64, n);
    if (t && n) memcpy(t->data, v, (size_t)n * sizeof *v);
    return t;
}

/* Moves every element at least `margin` away from zero (keeps its sign). */
static inline void op_away_from_zero(tk_tensor *t, float margin) {
    float *p = tk_f32(t);
    for (int64_t i = 0; i < t->numel; i++)
        if (fabsf(p[i]) < margin) p[i] = p[i] < 0 ? p[i] - margin : p[i] + margin;
}

/* Makes every element positive, at least `lo`. */
static inline void op_positive(tk_tensor *t, float lo) {
    float *p = tk_f32(t);
    for (int64_t i = 0; i < t->numel; i++) p[i] = fabsf(p[i]) + lo;
}

/* Checks a tensor's shape against a list. */
static inline bool op_shape_is(const tk_tensor *t, int32_t ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return false;
    for (int32_t i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

/* Number of elements of t farther than tol from want (want has t->numel values). */
static inline int op_mismatches(const tk_tensor *t, const float *want, double tol) {
    int bad = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        double got = tk_f32(t)[i];
        if (!(fabs(got - want[i]) <= tol * (1.0 + fabs(want[i])))) {
            if (bad < 5) printf("    element %lld: got %.7g, want %.7g\n", (long long)i, got, (double)want[i]);
            bad++;
        }
    }
    return bad;
}

/* The op call returns NULL and leaves a message containing `needle` in ctx, which is
 * cleared for the next case. */
#define OP_CHECK_FAILS(ctx, call, needle)                                                                              \
    do {                                                                                                               \
        TK_CHECK((call) == NULL);                                                                                      \
        TK_CHECK_ERROR(tk_ctx_error(ctx), needle);                                                                     \
        tk_ctx_clear_error(ctx);                                                                                       \
    } while (0)

#define OP_CHECK_VALUES(t, want, tol)                                                                                  \
    do {                                                                                                               \
        const tk_tensor *op_t_ = (t);                                                                                  \
        TK_CHECK(op_t_ != NULL);                                                                                       \
        if (op_t_) TK_CHECK(op_mismatches(op_t_, (want), (tol)) == 0);                                                 \
    } while (0)

#define OP_CHECK_SHAPE(t, ...)                                                                                         \
    do {                                                                                                               \
        const int64_t op_s_[] = { __VA_ARGS__ };                                                                       \
        TK_CHECK(op_shape_is((t), (int32_t)(sizeof op_s_ / sizeof op_s_[0]), op_s_));                                  \
    } while (0)

/* Releases a list of heap tensors (NULL-terminated). */
static inline void op_release(tk_tensor *first, ...) {
    va_list ap;
    va_start(ap, first);
    for (tk_tensor *t = first; t; t = va_arg(ap, tk_tensor *)) tk_tensor_release(t);
    va_end(ap);
}

#endif
