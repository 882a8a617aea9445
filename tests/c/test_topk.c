/* tk_topk against a brute-force reference: small-integer data (exact float scores, many
 * ties) for bit-exact comparisons, random data with a tolerance, exclusions, short rows,
 * shapes that are not multiples of the blocks, 1 to 4 threads, concurrent callers, and bad
 * arguments. */
#include "tk_test.h"

#include <pthread.h>
#include <stdint.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A heap F32 [n, d] of integers in [-r, r] (dot products are exact in float32). */
static tk_tensor *int_matrix(int64_t n, int64_t d, int r) {
    tk_tensor *t = tk_tensor_new_2d(TK_F32, n, d);
    for (int64_t i = 0; i < t->numel; i++) tk_f32(t)[i] = (float)((int)(rnd() % (uint64_t)(2 * r + 1)) - r);
    return t;
}

static tk_tensor *normal_matrix(int64_t n, int64_t d, uint64_t seed) {
    int64_t s[2] = { n, d };
    return tk_test_randn(2, s, 1.0f, seed);
}

/* Exclusions: about `per` random items per query (unsorted, with repeats), CSR. */
typedef struct excl {
    int64_t *off, *items;
} excl;

static excl make_excl(int64_t nq, int64_t ni, int per) {
    excl e = { malloc((size_t)(nq + 1) * sizeof(int64_t)), malloc((size_t)(nq * per + 1) * sizeof(int64_t)) };
    e.off[0] = 0;
    for (int64_t q = 0; q < nq; q++) {
        int64_t n = (int64_t)(rnd() % (uint64_t)(2 * per + 1));
        if (n > per) n = per; /* some queries have none */
        for (int64_t i = 0; i < n; i++) e.items[e.off[q] + i] = (int64_t)(rnd() % (uint64_t)ni);
        e.off[q + 1] = e.off[q] + n;
    }
    return e;
}

static void free_excl(excl *e) {
    free(e->off);
    free(e->items);
}

/* Brute force: every item scored in double (exact for integer data), excluded ones and
 * NaN scores dropped, sorted by score descending then index ascending, padded. */
typedef struct scored {
    double s;
    int64_t i;
} scored;

static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static void brute_force(const tk_tensor *q, const tk_tensor *it, int64_t k, const int64_t *off, const int64_t *ex,
                        int64_t *idx, double *sc) {
    int64_t nq = q->shape[0], ni = it->shape[0], d = q->shape[1];
    scored *all = malloc((size_t)(ni + 1) * sizeof *all);
    for (int64_t r = 0; r < nq; r++) {
        int64_t n = 0;
        for (int64_t i = 0; i < ni; i++) {
            bool skip = false;
            for (int64_t e = off ? off[r] : 0; off && e < off[r + 1]; e++) skip |= ex[e] == i;
            if (skip) continue;
            double s = 0;
            for (int64_t j = 0; j < d; j++) s += (double)tk_f32(q)[r * d + j] * tk_f32(it)[i * d + j];
            if (s != s) continue;
            all[n++] = (scored){ s, i };
        }
        qsort(all, (size_t)n, sizeof *all, cmp_scored);
        for (int64_t j = 0; j < k; j++) {
            idx[r * k + j] = j < n ? all[j].i : -1;
            sc[r * k + j] = j < n ? all[j].s : -INFINITY;
        }
    }
    free(all);
}

/* Runs tk_topk and the reference; exact: indices and scores equal; otherwise scores
 * within tol and every returned index's true score within tol of its slot. */
static int compare_with_brute_force(const tk_tensor *q, const tk_tensor *it, int64_t k, const excl *e, bool exact,
                                    double tol) {
    int64_t nq = q->shape[0];
    tk_tensor *oi = tk_tensor_new_2d(TK_I64, nq, k), *os = tk_tensor_new_2d(TK_F32, nq, k);
    int64_t *ri = malloc((size_t)(nq * k + 1) * sizeof *ri);
    double *rs = malloc((size_t)(nq * k + 1) * sizeof *rs);
    int bad = 0;
    if (tk_topk(q, it, k, e ? e->off : NULL, e ? e->items : NULL, oi, os) != TK_OK) {
        printf("    topk failed: %s\n", tk_last_error());
        bad = 1;
    } else {
        brute_force(q, it, k, e ? e->off : NULL, e ? e->items : NULL, ri, rs);
        int64_t d = q->shape[1];
        for (int64_t j = 0; j < nq * k; j++) {
            int64_t got = tk_i64(oi)[j];
            double gs = tk_f32(os)[j];
            bool ok;
            if (exact) {
                ok = got == ri[j] && gs == rs[j];
            } else if (ri[j] < 0) {
                ok = got == -1 && gs == -INFINITY;
            } else {
                double truth = 0;
                for (int64_t c = 0; got >= 0 && c < d; c++)
                    truth += (double)tk_f32(q)[(j / k) * d + c] * tk_f32(it)[got * d + c];
                ok = got >= 0 && fabs(gs - rs[j]) <= tol && fabs(truth - rs[j]) <= tol;
            }
            if (!ok && bad++ < 5)
                printf("    query %lld slot %lld: got %lld (%.7g), want %lld (%.7g)\n", (long long)(j / k),
                       (long long)(j % k), (long long)got, gs, (long long)ri[j], rs[j]);
        }
    }
    free(ri);
    free(rs);
    tk_tensor_release(oi);
    tk_tensor_release(os);
    return bad;
}

static void test_exact_with_ties(void) {
    /* Q, N not multiples of the blocks (512 queries, 4096 items); several item blocks */
    tk_tensor *q = int_matrix(37, 5, 2), *it = int_matrix(9001, 5, 2);
    TK_CHECK(compare_with_brute_force(q, it, 10, NULL, true, 0) == 0);
    TK_CHECK(compare_with_brute_force(q, it, 1, NULL, true, 0) == 0);
    TK_CHECK(compare_with_brute_force(q, it, 257, NULL, true, 0) == 0);
    tk_tensor_release(q);
    tk_tensor_release(it);
}

static void test_exact_many_queries(void) {
    /* more than one query block, few items: k larger than, equal to and near N */
    tk_tensor *q = int_matrix(1100, 3, 3), *it = int_matrix(300, 3, 3);
    TK_CHECK(compare_with_brute_force(q, it, 7, NULL, true, 0) == 0);
    TK_CHECK(compare_with_brute_force(q, it, 300, NULL, true, 0) == 0); /* k == N */
    TK_CHECK(compare_with_brute_force(q, it, 299, NULL, true, 0) == 0);
    TK_CHECK(compare_with_brute_force(q, it, 450, NULL, true, 0) == 0); /* k > N: padded */
    tk_tensor_release(q);
    tk_tensor_release(it);
}

/* The query blocks run on the pool's threads in any order: with 1 to 4 threads the same
 * results as with one, exclusions included, to the bit. The bits are guaranteed by
 * construction: the blocks are cut the same way for every thread count, and each block's
 * scores come from one single-threaded sgemm of the same shape on the same data. */
static void test_split_matches_serial(void) {
    tk_tensor *q = normal_matrix(1031, 16, 5), *it = normal_matrix(3000, 16, 6); /* 3 query blocks */
    excl e = make_excl(1031, 3000, 4);
    tk_tensor *i1 = tk_tensor_new_2d(TK_I64, 1031, 10), *s1 = tk_tensor_new_2d(TK_F32, 1031, 10);
    tk_tensor *i2 = tk_tensor_new_2d(TK_I64, 1031, 10), *s2 = tk_tensor_new_2d(TK_F32, 1031, 10);
    int threads = tk_get_num_threads();
    tk_set_num_threads(1);
    TK_CHECK(tk_topk(q, it, 10, e.off, e.items, i1, s1) == TK_OK);
    for (int n = 2; n <= 4; n++) {
        tk_set_num_threads(n);
        TK_CHECK(tk_topk(q, it, 10, e.off, e.items, i2, s2) == TK_OK);
        TK_CHECK_MSG(memcmp(i1->data, i2->data, (size_t)i1->numel * sizeof(int64_t)) == 0, "%d threads", n);
        TK_CHECK_MSG(memcmp(s1->data, s2->data, (size_t)s1->numel * sizeof(float)) == 0, "%d threads", n);
    }
    tk_set_num_threads(threads);
    TK_CHECK(compare_with_brute_force(q, it, 10, &e, false, 1e-4) == 0);
    free_excl(&e);
    tk_tensor_release(q);
    tk_tensor_release(it);
    tk_tensor_release(i1);
    tk_tensor_release(s1);
    tk_tensor_release(i2);
    tk_tensor_release(s2);
}

/* Several host threads call tk_topk at once, each on the pool's threads: every call gets
 * the serial results (no call changes process-wide state the others read; test-tsan
 * runs this under ThreadSanitizer). */
typedef struct host_call {
    const tk_tensor *q, *it;
    const tk_tensor *want_idx, *want_scores;
    bool ok;
} host_call;

static void *host_topk(void *arg) {
    host_call *c = arg;
    tk_tensor *idx = tk_tensor_new_2d(TK_I64, c->q->shape[0], 10), *sc = tk_tensor_new_2d(TK_F32, c->q->shape[0], 10);
    c->ok = true;
    for (int r = 0; r < 5; r++) {
        c->ok = c->ok && tk_topk(c->q, c->it, 10, NULL, NULL, idx, sc) == TK_OK &&
                memcmp(idx->data, c->want_idx->data, (size_t)idx->numel * sizeof(int64_t)) == 0 &&
                memcmp(sc->data, c->want_scores->data, (size_t)sc->numel * sizeof(float)) == 0;
    }
    tk_tensor_release(idx);
    tk_tensor_release(sc);
    return NULL;
}

static void test_concurrent_callers(void) {
    tk_tensor *q = normal_matrix(1500, 16, 8), *it = normal_matrix(2000, 16, 9);
    tk_tensor *idx = tk_tensor_new_2d(TK_I64, 1500, 10), *sc = tk_tensor_new_2d(TK_F32, 1500, 10);
    int threads = tk_get_num_threads();
    tk_set_num_threads(1);
    TK_CHECK(tk_topk(q, it, 10, NULL, NULL, idx, sc) == TK_OK);
    tk_set_num_threads(2);
    host_call calls[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        calls[i] = (host_call){ q, it, idx, sc, false };
        TK_CHECK(pthread_create(&th[i], NULL, host_topk, &calls[i]) == 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) TK_CHECK_MSG(calls[i].ok, "host thread %d", i);
    tk_set_num_threads(threads);
    tk_tensor_release(q);
    tk_tensor_release(it);
    tk_tensor_release(idx);
    tk_tensor_release(sc);
}

static void test_exclusions(void) {
    tk_tensor *q = int_matrix(600, 4, 2), *it = int_matrix(5000, 4, 2);
    excl e = make_excl(600, 5000, 6);
    TK_CHECK(compare_with_brute_force(q, it, 20, &e, true, 0) == 0);
    free_excl(&e);
    /* exclusions that leave fewer than k items: the rest of each row is padded */
    tk_tensor *q2 = int_matrix(9, 3, 2), *it2 = int_matrix(12, 3, 2);
    excl e2 = make_excl(9, 12, 8);
    TK_CHECK(compare_with_brute_force(q2, it2, 12, &e2, true, 0) == 0);
    TK_CHECK(compare_with_brute_force(q2, it2, 5, &e2, true, 0) == 0);
    free_excl(&e2);
    /* every item excluded for one query, none for the others; offsets not starting at 0 */
    int64_t off[4] = { 3, 3 + 12, 3 + 12, 3 + 12 };
    int64_t items[3 + 12] = { 99, 99, 99, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0 };
    tk_tensor *q3 = int_matrix(3, 3, 2);
    tk_tensor *oi = tk_tensor_new_2d(TK_I64, 3, 4), *os = tk_tensor_new_2d(TK_F32, 3, 4);
    TK_CHECK(tk_topk(q3, it2, 4, off, items, oi, os) == TK_OK);
    for (int j = 0; j < 4; j++) {
        TK_CHECK(tk_i64(oi)[j] == -1);
        TK_CHECK(tk_f32(os)[j] == -INFINITY);
        TK_CHECK(tk_i64(oi)[4 + j] >= 0);
    }
    tk_tensor_release(oi);
    tk_tensor_release(os);
    tk_tensor_release(q3);
    tk_tensor_release(q);
    tk_tensor_release(it);
    tk_tensor_release(q2);
    tk_tensor_release(it2);
}

static void test_random_floats(void) {
    tk_tensor *q = normal_matrix(70, 16, 1), *it = normal_matrix(10000, 16, 2);
    excl e = make_excl(70, 10000, 3);
    TK_CHECK(compare_with_brute_force(q, it, 100, NULL, false, 1e-4) == 0);
    TK_CHECK(compare_with_brute_force(q, it, 33, &e, false, 1e-4) == 0);
    free_excl(&e);
    tk_tensor_release(q);
    tk_tensor_release(it);
}

/* All scores equal: the lowest indices, in order. -0 and +0 tie. NaN never returned. */
static void test_special_values(void) {
    int64_t s1[2] = { 1, 1 }, s5[2] = { 5, 1 };
    tk_tensor *q = tk_test_tensor(2, s1, (float[]){ 1 });
    tk_tensor *it = tk_test_tensor(2, s5, (float[]){ 0.0f, -0.0f, NAN, 0.0f, -1.0f });
    tk_tensor *oi = tk_tensor_new_2d(TK_I64, 1, 5), *os = tk_tensor_new_2d(TK_F32, 1, 5);
    TK_CHECK(tk_topk(q, it, 5, NULL, NULL, oi, os) == TK_OK);
    int64_t want[5] = { 0, 1, 3, 4, -1 };
    for (int j = 0; j < 5; j++) TK_CHECK_MSG(tk_i64(oi)[j] == want[j], "slot %d: %lld", j, (long long)tk_i64(oi)[j]);
    TK_CHECK(tk_f32(os)[3] == -1.0f && tk_f32(os)[4] == -INFINITY);
    /* D = 0: every score is 0 */
    int64_t s0q[2] = { 2, 0 }, s0i[2] = { 3, 0 };
    tk_tensor *q0 = tk_tensor_new(TK_F32, 2, s0q), *i0 = tk_tensor_new(TK_F32, 2, s0i);
    tk_tensor *oi0 = tk_tensor_new_2d(TK_I64, 2, 2), *os0 = tk_tensor_new_2d(TK_F32, 2, 2);
    TK_CHECK(tk_topk(q0, i0, 2, NULL, NULL, oi0, os0) == TK_OK);
    TK_CHECK(tk_i64(oi0)[0] == 0 && tk_i64(oi0)[1] == 1 && tk_i64(oi0)[2] == 0 && tk_f32(os0)[3] == 0.0f);
    /* no queries: nothing to do; no items: all padding */
    int64_t sq0[2] = { 0, 1 };
    tk_tensor *qe = tk_tensor_new(TK_F32, 2, sq0), *ie = tk_tensor_new(TK_F32, 2, sq0);
    tk_tensor *oie = tk_tensor_new_2d(TK_I64, 0, 3), *ose = tk_tensor_new_2d(TK_F32, 0, 3);
    TK_CHECK(tk_topk(qe, it, 3, NULL, NULL, oie, ose) == TK_OK);
    tk_tensor *oi1 = tk_tensor_new_2d(TK_I64, 1, 3), *os1 = tk_tensor_new_2d(TK_F32, 1, 3);
    TK_CHECK(tk_topk(q, ie, 3, NULL, NULL, oi1, os1) == TK_OK);
    for (int j = 0; j < 3; j++) TK_CHECK(tk_i64(oi1)[j] == -1 && tk_f32(os1)[j] == -INFINITY);
    tk_tensor *all[] = { q, it, oi, os, q0, i0, oi0, os0, qe, ie, oie, ose, oi1, os1 };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tk_tensor_release(all[i]);
}

/* Arena tensors work as well as heap ones. */
static void test_arena_tensors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t sq[2] = { 4, 3 }, si[2] = { 50, 3 }, so[2] = { 4, 6 };
    tk_tensor *q = tk_ctx_empty(ctx, TK_F32, 2, sq), *it = tk_ctx_empty(ctx, TK_F32, 2, si);
    for (int64_t i = 0; i < q->numel; i++) tk_f32(q)[i] = (float)((int)(rnd() % 5) - 2);
    for (int64_t i = 0; i < it->numel; i++) tk_f32(it)[i] = (float)((int)(rnd() % 5) - 2);
    tk_tensor *oi = tk_ctx_empty(ctx, TK_I64, 2, so), *os = tk_ctx_empty(ctx, TK_F32, 2, so);
    TK_CHECK(tk_topk(q, it, 6, NULL, NULL, oi, os) == TK_OK);
    TK_CHECK(compare_with_brute_force(q, it, 6, NULL, true, 0) == 0);
    tk_ctx_free(ctx);
}

static void expect_error(const tk_tensor *q, const tk_tensor *it, int64_t k, const int64_t *off, const int64_t *items,
                         tk_tensor *oi, tk_tensor *os, const char *needle) {
    TK_CHECK_MSG(tk_topk(q, it, k, off, items, oi, os) == TK_ERROR, "expected an error with \"%s\"", needle);
    TK_CHECK_ERROR(tk_last_error(), "topk: ");
    TK_CHECK_ERROR(tk_last_error(), needle);
}

static void test_bad_arguments(void) {
    tk_tensor *q = int_matrix(2, 3, 1), *it = int_matrix(5, 3, 1), *it4 = int_matrix(5, 4, 1);
    tk_tensor *oi = tk_tensor_new_2d(TK_I64, 2, 3), *os = tk_tensor_new_2d(TK_F32, 2, 3);
    tk_tensor *qi = tk_tensor_new_2d(TK_I64, 2, 3), *flat = tk_tensor_new_1d(TK_F32, 6);
    tk_tensor *oi_bad = tk_tensor_new_2d(TK_I64, 2, 4), *os_i64 = tk_tensor_new_2d(TK_I64, 2, 3);
    expect_error(NULL, it, 3, NULL, NULL, oi, os, "queries is NULL");
    expect_error(q, NULL, 3, NULL, NULL, oi, os, "items is NULL");
    expect_error(qi, it, 3, NULL, NULL, oi, os, "queries must be a 2-D float32 tensor, got int64 [2, 3]");
    expect_error(q, flat, 3, NULL, NULL, oi, os, "items must be a 2-D float32 tensor, got float32 [6]");
    expect_error(q, it4, 3, NULL, NULL, oi, os, "queries [2, 3] and items [5, 4] must have the same number of columns");
    expect_error(q, it, 0, NULL, NULL, oi, os, "k must be >= 1, got 0");
    expect_error(q, it, -2, NULL, NULL, oi, os, "k must be >= 1, got -2");
    expect_error(q, it, 3, NULL, NULL, NULL, os, "out_idx is NULL");
    expect_error(q, it, 3, NULL, NULL, oi, NULL, "out_scores is NULL");
    expect_error(q, it, 3, NULL, NULL, oi_bad, os, "out_idx must be int64 [2, 3], got int64 [2, 4]");
    expect_error(q, it, 3, NULL, NULL, oi, os_i64, "out_scores must be float32 [2, 3], got int64 [2, 3]");
    expect_error(q, it, 3, NULL, NULL, os, oi, "out_idx must be int64 [2, 3], got float32 [2, 3]");
    int64_t items[3] = { 0, 4, 5 };
    expect_error(q, it, 3, NULL, items, oi, os, "excl_items given without excl_offsets");
    int64_t neg_off[3] = { -1, 0, 1 };
    expect_error(q, it, 3, neg_off, items, oi, os, "excl_offsets[0] is -1, expected >= 0");
    int64_t dec_off[3] = { 0, 2, 1 };
    expect_error(q, it, 3, dec_off, items, oi, os, "excl_offsets must not decrease");
    int64_t off[3] = { 0, 2, 3 };
    expect_error(q, it, 3, off, NULL, oi, os, "excl_items is NULL but excl_offsets lists 3 exclusions");
    expect_error(q, it, 3, off, items, oi, os, "excluded item 5 of query 1 is out of range [0, 5)");
    int64_t neg_items[3] = { 0, -3, 1 };
    expect_error(q, it, 3, off, neg_items, oi, os, "excluded item -3 of query 0 is out of range [0, 5)");
    /* empty lists need no items */
    int64_t none[3] = { 0, 0, 0 };
    TK_CHECK(tk_topk(q, it, 3, none, NULL, oi, os) == TK_OK);
    tk_tensor *all[] = { q, it, it4, oi, os, qi, flat, oi_bad, os_i64 };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tk_tensor_release(all[i]);
}

int main(void) {
    TK_RUN(test_exact_with_ties);
    TK_RUN(test_exact_many_queries);
    TK_RUN(test_exclusions);
    TK_RUN(test_split_matches_serial);
    TK_RUN(test_concurrent_callers);
    TK_RUN(test_random_floats);
    TK_RUN(test_special_values);
    TK_RUN(test_arena_tensors);
    TK_RUN(test_bad_arguments);
    return tk_test_summary();
}
