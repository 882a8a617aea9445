/* A minimal unit-test harness: one executable per file, one line per test, and a
 * closing "N passed, N failed" line that scripts/run-tests.sh adds up. */
#ifndef TK_TEST_H
#define TK_TEST_H

#include "towerkit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tk_test_failures_in_case;
static int tk_test_passed, tk_test_failed;

#define TK_CHECK(cond)                                                                                                 \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            printf("    %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                                        \
            tk_test_failures_in_case++;                                                                                \
        }                                                                                                              \
    } while (0)

#define TK_CHECK_MSG(cond, ...)                                                                                        \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            printf("    %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                                        \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
            tk_test_failures_in_case++;                                                                                \
        }                                                                                                              \
    } while (0)

#define TK_CHECK_NEAR(a, b, tol)                                                                                       \
    do {                                                                                                               \
        double tk_a_ = (double)(a), tk_b_ = (double)(b);                                                               \
        if (!(fabs(tk_a_ - tk_b_) <= (tol))) {                                                                         \
            printf("    %s:%d: %s = %.7g, expected %s = %.7g (tol %g)\n", __FILE__, __LINE__, #a, tk_a_, #b, tk_b_,    \
                   (double)(tol));                                                                                     \
            tk_test_failures_in_case++;                                                                                \
        }                                                                                                              \
    } while (0)

/* Elements of got farther than tol from want (n of each), the first few printed. For
 * results that reach the same values by different code paths (sgemm calls of other shapes,
 * kernels or thread splits, other batchings), which round differently: those are never
 * compared bit for bit. tol is absolute: derive it from the computation (its length and
 * the magnitude of its terms), not from what one machine happens to give. */
static inline int tk_test_mismatches(const float *got, const float *want, int64_t n, double tol) {
    int bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= tol)) {
            if (bad < 5)
                printf("    element %lld: got %.9g, want %.9g\n", (long long)i, (double)got[i], (double)want[i]);
            bad++;
        }
        if (d > worst || d != d) worst = d;
    }
    if (bad) printf("    %d of %lld elements differ by more than %g (at most %g)\n", bad, (long long)n, tol, worst);
    return bad;
}

#define TK_CHECK_ALL_NEAR(got, want, n, tol) TK_CHECK(tk_test_mismatches((got), (want), (n), (tol)) == 0)

/* The error message contains `needle`. */
#define TK_CHECK_ERROR(msg, needle)                                                                                    \
    TK_CHECK_MSG(strstr((msg), (needle)) != NULL, "message \"%s\" lacks \"%s\"", (msg), (needle))

static void tk_test_run(const char *name, void (*fn)(void)) {
    tk_test_failures_in_case = 0;
    fn();
    if (tk_test_failures_in_case) {
        tk_test_failed++;
        printf("not ok - %s\n", name);
    } else {
        tk_test_passed++;
        printf("ok - %s\n", name);
    }
    fflush(stdout);
}

#define TK_RUN(fn) tk_test_run(#fn, fn)

static int tk_test_summary(void) {
    printf("%d passed, %d failed\n", tk_test_passed, tk_test_failed);
    return tk_test_failed ? 1 : 0;
}

/* A heap F32 tensor filled from a list of values. */
static inline tk_tensor *tk_test_tensor(int32_t ndim, const int64_t *shape, const float *values) {
    tk_tensor *t = tk_tensor_new(TK_F32, ndim, shape);
    if (t && values) memcpy(t->data, values, (size_t)t->numel * sizeof(float));
    return t;
}

/* A heap F32 tensor of normal(0, scale) values from a fixed seed. */
static inline tk_tensor *tk_test_randn(int32_t ndim, const int64_t *shape, float scale, uint64_t seed) {
    tk_tensor *t = tk_tensor_new(TK_F32, ndim, shape);
    tk_init init = { .kind = TK_INIT_RANDOM_NORMAL, .a = scale, .b = 0 };
    if (t) tk_init_fill(t, init, seed);
    return t;
}

#endif
