/* The two-tower retrieval loss: in-batch (plus sampled) softmax cross-entropy, fused.
 *
 * Forward, for B queries q_b, B positive items c_b and N extra negatives n_i (all [., D]):
 *   1. logits L [B, B + N] = (q . c) / T with two sgemms into one buffer (items in
 *      columns 0..B-1, negatives in B..B+N-1), no concatenation;
 *   2. per row, in the cache: the logQ correction L[b, j] -= logq[j]; false negatives
 *      (columns whose item id equals the row's positive id, other than the positive
 *      itself) set to -inf; with num_hard_negatives = h, every negative column but the h
 *      best (ties: lower column) set to -inf too (TFRS's HardNegativeMining); then the
 *      row maximum m_b and E[b, j] = exp(L[b, j] - m_b), s_b = sum_j E[b, j], written over
 *      L. ce_b = m_b + log s_b - L[b, b]; loss = sum_b w_b ce_b / B.
 * This is TFRS's order (temperature, sampling correction, accidental hits, hard
 * negatives) and Merlin's semantics for each step. Masked and dropped columns have E = 0,
 * so they carry no gradient.
 *
 * Backward, with g the loss gradient, coef_b = g w_b / (B T) and r_b = coef_b / s_b, the
 * gradient of the raw scores q_b . c_j is r_b E[b, j] - coef_b [j == b]. No pass over
 * the [B, B + N] matrix is needed besides the sgemms that read E:
 *   dq_b += r_b (E C)_b - coef_b c_b            (C = items then negatives)
 *   dc_j += (E[:, :B]^T Qr)_j - coef_j q_j      (Qr_b = r_b q_b)
 *   dn_i += (E[:, B:]^T Qr)_i
 * Ids, log-probabilities and weights are constants (no gradient).
 *
 * Global in-batch negatives (towerkit_dist.h): item may hold more rows than query, the
 * all-gathered items of every rank's batch (Bi of them); query row b's positive is then
 * item row o + b (o = row_offset, this rank's first row), so the columns are those of
 * the one-process batch in its order, and the formulas above hold with c_b replaced by
 * c_{o+b} and the in-batch columns running over Bi. The loss stays the mean over the B
 * query rows. */
#include "ops_impl.h"
#include "simd.h"

#include <cblas.h>
#include <limits.h>

static const char *const OP = "retrieval_loss";

/* --- the row kernels: a vectorised exp for the softmax ---
 * exp(x) for x <= 0 (x - row max), 8 lanes with GCC vector extensions. Cephes' expf:
 * x = n ln 2 + r, |r| <= ln 2 / 2, a degree-6 polynomial, 2^n through the exponent bits;
 * within about 1.5 ulp. Inputs below -87.3 (and -inf, the masked logits) give exactly 0;
 * NaN gives 0 (rows with a NaN are flagged apart).
 * Each kernel is one always-inlined body compiled twice: for the baseline (SSE2 on
 * x86-64, two instructions per 8-lane operation; NEON elsewhere) and, on x86-64, for AVX2,
 * picked at run time (the exp runs about twice as fast). The 8-lane helpers never cross a
 * call boundary (simd.h). */
TK_INLINE vf vf_exp(vf x) {
    const float lo = -87.33654f, hi = 88.37626f;
    vi keep = x > lo;
    x = vf_select(keep, x, (vf){ 0 } + lo); /* NaN and -inf -> lo, masked out below */
    x = vf_select(x < hi, x, (vf){ 0 } + hi);
    vf fx = x * 1.44269504088896341f + 0.5f;
    vi n = __builtin_convertvector(fx, vi); /* truncation ... */
    vf fn = __builtin_convertvector(n, vf);
    n += (vi)(fn > fx); /* ... made floor (-1 where above) */
    fn = __builtin_convertvector(n, vf);
    vf r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    vf z = r * r;
    vf y = 1.9875691500e-4f * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    vu bits = ((vu)n + 127u) << 23; /* 2^n, n in [-126, 127] */
    y = y * (vf)bits;
    return (vf)((vi)y & keep);
}

/* x[j] -= c[j] */
TK_INLINE void row_sub_body(float *x, const float *c, int64_t n) {
    int64_t j = 0;
    for (; j + VL <= n; j += VL) vf_store(x + j, vf_load(x + j) - vf_load(c + j));
    for (; j < n; j++) x[j] -= c[j];
}

/* Maximum of x[0..n) and whether any is NaN. */
TK_INLINE float row_max_body(const float *x, int64_t n, bool *has_nan) {
    vf m = (vf){ 0 } - INFINITY;
    vi nan = { 0 };
    int64_t j = 0;
    for (; j + VL <= n; j += VL) {
        vf v = vf_load(x + j);
        m = vf_select(v > m, v, m);
        nan |= v != v;
    }
    float mx = -INFINITY;
    bool any_nan = false;
    for (int i = 0; i < VL; i++) {
        if (m[i] > mx) mx = m[i];
        any_nan |= nan[i] != 0;
    }
    for (; j < n; j++) {
        if (x[j] > mx) mx = x[j];
        any_nan |= x[j] != x[j];
    }
    *has_nan = any_nan;
    return mx;
}

/* x[j] = exp(x[j] - m) in place; returns the sum. */
TK_INLINE double row_exp_body(float *x, int64_t n, float m) {
    vf acc = { 0 };
    int64_t j = 0;
    for (; j + VL <= n; j += VL) {
        vf e = vf_exp(vf_load(x + j) - m);
        vf_store(x + j, e);
        acc += e;
    }
    if (j < n) { /* the tail through one padded vector: the same rounding as the rest */
        float t[VL];
        for (int i = 0; i < VL; i++) t[i] = j + i < n ? x[j + i] : -INFINITY;
        vf e = vf_exp(vf_load(t) - m);
        vf_store(t, e);
        for (int i = 0; j + i < n; i++) x[j + i] = t[i];
        acc += e;
    }
    double s = 0.0;
    for (int i = 0; i < VL; i++) s += acc[i];
    return s;
}

/* Counts of x[j] > t and x[j] == t (hard negatives). */
TK_INLINE int64_t row_count_body(const float *x, int64_t n, float t, bool equal) {
    vi c = { 0 };
    int64_t j = 0, total = 0;
    for (; j + VL <= n; j += VL) {
        vf v = vf_load(x + j);
        c -= equal ? (vi)(v == t) : (vi)(v > t); /* true lanes are -1 */
    }
    for (int i = 0; i < VL; i++) total += c[i];
    for (; j < n; j++) total += equal ? x[j] == t : x[j] > t;
    return total;
}

/* x[j] = x[j] >= t ? x[j] : -inf */
TK_INLINE void row_keep_ge_body(float *x, int64_t n, float t) {
    int64_t j = 0;
    for (; j + VL <= n; j += VL) {
        vf v = vf_load(x + j);
        vf_store(x + j, vf_select(v >= t, v, (vf){ 0 } - INFINITY));
    }
    for (; j < n; j++) x[j] = x[j] >= t ? x[j] : -INFINITY;
}

typedef struct row_kernels {
    void (*sub)(float *x, const float *c, int64_t n);
    float (*max)(const float *x, int64_t n, bool *has_nan);
    double (*exp)(float *x, int64_t n, float m);
    int64_t (*count_gt)(const float *x, int64_t n, float t);
    int64_t (*count_eq)(const float *x, int64_t n, float t);
    void (*keep_ge)(float *x, int64_t n, float t);
} row_kernels;

/* The kernels for one target: TARGET is an attribute or nothing. */
#define ROW_KERNELS(suffix, TARGET)                                                                                    \
    TARGET static void row_sub_##suffix(float *x, const float *c, int64_t n) { row_sub_body(x, c, n); }                \
    TARGET static float row_max_##suffix(const float *x, int64_t n, bool *has_nan) {                                   \
        return row_max_body(x, n, has_nan);                                                                            \
    }                                                                                                                  \
    TARGET static double row_exp_##suffix(float *x, int64_t n, float m) { return row_exp_body(x, n, m); }              \
    TARGET static int64_t row_count_gt_##suffix(const float *x, int64_t n, float t) {                                  \
        return row_count_body(x, n, t, false);                                                                         \
    }                                                                                                                  \
    TARGET static int64_t row_count_eq_##suffix(const float *x, int64_t n, float t) {                                  \
        return row_count_body(x, n, t, true);                                                                          \
    }                                                                                                                  \
    TARGET static void row_keep_ge_##suffix(float *x, int64_t n, float t) { row_keep_ge_body(x, n, t); }               \
    static const row_kernels row_kernels_##suffix = {                                                                  \
        row_sub_##suffix,      row_max_##suffix,      row_exp_##suffix,                                                \
        row_count_gt_##suffix, row_count_eq_##suffix, row_keep_ge_##suffix                                             \
    };

ROW_KERNELS(base, )
#if defined(__x86_64__) && defined(__GNUC__)
ROW_KERNELS(avx2, __attribute__((target("avx2"))))
#endif

static const row_kernels *pick_kernels(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) return &row_kernels_avx2;
#endif
    return &row_kernels_base;
}

/* --- hard negatives ---
 * The h-th largest of n values by quickselect with branch-free partitions (random logits
 * make a partition's branches unpredictable): each round copies the values greater than
 * a median-of-three pivot to the front of the other buffer and the rest to its back. a
 * and tmp hold n floats; both are clobbered. 1 <= h <= n; values are not NaN. */
static float kth_largest(float *a, float *tmp, int64_t n, int64_t h) {
    while (n > 16) {
        float x = a[0], y = a[n / 2], z = a[n - 1];
        float p = x > y ? (y > z ? y : (x > z ? z : x)) : (x > z ? x : (y > z ? z : y));
        int64_t ng = 0, nl = n; /* tmp[0, ng): > p; tmp[nl, n): <= p */
        for (int64_t j = 0; j < n; j++) {
            float v = a[j];
            tmp[ng] = v;
            tmp[nl - 1] = v;
            bool gt = v > p;
            ng += gt;
            nl -= !gt;
        }
        if (h <= ng) { /* among the greater ones */
            float *t = a;
            a = tmp;
            tmp = t;
            n = ng;
            continue;
        }
        /* among the rest, whose largest is p: split off the values equal to p */
        int64_t rest = n - ng, neq = 0, nlt = 0;
        const float *r = tmp + ng;
        for (int64_t j = 0; j < rest; j++) {
            float v = r[j];
            a[nlt] = v;
            bool lt = v < p;
            nlt += lt;
            neq += !lt;
        }
        h -= ng;
        if (h <= neq) return p;
        h -= neq;
        n = nlt;
    }
    for (int64_t i = 1; i < n; i++) { /* insertion sort, descending */
        float v = a[i];
        int64_t j = i;
        for (; j > 0 && a[j - 1] < v; j--) a[j] = a[j - 1];
        a[j] = v;
    }
    return a[h - 1];
}

/* Keeps the positive (column b) and the h best other unmasked columns of a row; sets
 * the others to -inf. Ties at the h-th value keep the lower columns. buf: 2n floats. */
static void keep_hard_negatives(const row_kernels *k, float *x, int64_t n, int64_t b, int64_t h, float *buf) {
    float pos = x[b];
    x[b] = -INFINITY;                       /* out of the way; restored at the end */
    if (k->count_gt(x, n, -INFINITY) > h) { /* more unmasked negatives than kept ones */
        memcpy(buf, x, (size_t)n * sizeof *buf);
        float v = kth_largest(buf, buf + n, n, h); /* NaN rows are NaN anyway: see row_max */
        int64_t greater = k->count_gt(x, n, v);
        if (greater + k->count_eq(x, n, v) <= h) {
            k->keep_ge(x, n, v); /* no tie to split: keep every value >= v */
        } else {
            int64_t ties = h - greater; /* how many columns equal to v stay, lowest first */
            for (int64_t j = 0; j < n; j++) {
                bool eq = x[j] == v, keep = x[j] > v || (eq && ties > 0);
                ties -= eq && keep;
                x[j] = keep ? x[j] : -INFINITY;
            }
        }
    }
    x[b] = pos;
}

/* --- false negatives: columns sharing the row's positive id --- */
typedef struct id_pos {
    int64_t id, pos;
} id_pos;

static int cmp_id_pos(const void *a, const void *b) {
    const id_pos *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* ids sorted with their positions (arena). */
static id_pos *sorted_ids(tk_ctx *ctx, const int64_t *ids, int64_t n) {
    id_pos *s = tk_ctx_alloc(ctx, (size_t)(n ? n : 1) * sizeof *s);
    if (!s) return NULL;
    for (int64_t i = 0; i < n; i++) s[i] = (id_pos){ ids[i], i };
    qsort(s, (size_t)n, sizeof *s, cmp_id_pos);
    return s;
}

/* The first entry of s[0..n) with id >= id. */
static int64_t lower_bound(const id_pos *s, int64_t n, int64_t id) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (s[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* --- validation --- */

static bool blas_ok(tk_ctx *ctx, const char *arg, const tk_tensor *t) {
    for (int32_t i = 0; i < t->ndim; i++)
        if (t->shape[i] > INT_MAX) {
            char s[TK_SHAPE_LEN];
            tk_ctx_fail(ctx, "%s: %s %s has a dimension too large for BLAS", OP, arg, TK_SHAPE(t, s));
            return false;
        }
    return true;
}

/* A vector of n entries: [n] or [n, 1], of the given dtype; `what` says what n counts. */
static bool check_vector(tk_ctx *ctx, const char *arg, const tk_tensor *t, tk_dtype dtype, int64_t n,
                         const char *what) {
    bool shape_ok = (t->ndim == 1 && t->shape[0] == n) || (t->ndim == 2 && t->shape[0] == n && t->shape[1] == 1);
    if (t->dtype == dtype && shape_ok) return true;
    char s[TK_SHAPE_LEN];
    tk_ctx_fail(ctx, "%s: %s must be %s [%lld] (%s), got %s %s", OP, arg, tk_dtype_name(dtype), (long long)n, what,
                tk_dtype_name(t->dtype), TK_SHAPE(t, s));
    return false;
}

static bool check_finite(tk_ctx *ctx, const char *arg, const tk_tensor *t) {
    const float *v = tk_f32(t);
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(v[i])) {
            tk_ctx_fail(ctx, "%s: %s[%lld] is %g; it must be finite", OP, arg, (long long)i, (double)v[i]);
            return false;
        }
    return true;
}

static bool check_opts(tk_ctx *ctx, const tk_retrieval_opts *o, int64_t B, int64_t Bi, int64_t D, float *temperature) {
    float t = o->temperature == 0.0f ? 1.0f : o->temperature;
    if (!(t > 0.0f) || !isfinite(t)) {
        tk_ctx_fail(ctx, "%s: temperature must be finite and > 0 (0 means 1), got %g", OP, (double)o->temperature);
        return false;
    }
    *temperature = t;
    if (o->num_hard_negatives < 0) {
        tk_ctx_fail(ctx, "%s: num_hard_negatives must be >= 0 (0: off), got %d", OP, (int)o->num_hard_negatives);
        return false;
    }
    /* with gathered items, ids and corrections are per item row (as many as query's otherwise) */
    const char *per_item = Bi == B ? "one per row of query" : "one per row of item";
    if (o->item_ids && !check_vector(ctx, "item_ids", o->item_ids, TK_I64, Bi, per_item)) return false;
    if (o->item_logq && (!check_vector(ctx, "item_logq", o->item_logq, TK_F32, Bi, "one per row of item") ||
                         !check_finite(ctx, "item_logq", o->item_logq)))
        return false;
    if (o->weights && (!check_vector(ctx, "weights", o->weights, TK_F32, B, "one per row of query") ||
                       !check_finite(ctx, "weights", o->weights)))
        return false;
    const tk_tensor *neg = o->negatives;
    char s[TK_SHAPE_LEN];
    if (!neg) {
        if (o->negative_ids) return tk_ctx_fail(ctx, "%s: negative_ids given without negatives", OP), false;
        if (o->negative_logq) return tk_ctx_fail(ctx, "%s: negative_logq given without negatives", OP), false;
        return true;
    }
    if (!tk_check_f32(ctx, OP, "negatives", neg)) return false;
    if (neg->ndim != 2 || neg->shape[1] != D) {
        tk_ctx_fail(ctx, "%s: negatives must be [N, %lld] (as wide as query), got %s", OP, (long long)D,
                    TK_SHAPE(neg, s));
        return false;
    }
    if (!blas_ok(ctx, "negatives", neg)) return false;
    int64_t N = neg->shape[0];
    if (o->negative_ids) {
        if (!check_vector(ctx, "negative_ids", o->negative_ids, TK_I64, N, "one per negative")) return false;
        if (!o->item_ids) {
            tk_ctx_fail(ctx, "%s: negative_ids need item_ids (the positives' ids they are compared with)", OP);
            return false;
        }
    }
    if (o->negative_logq && (!check_vector(ctx, "negative_logq", o->negative_logq, TK_F32, N, "one per negative") ||
                             !check_finite(ctx, "negative_logq", o->negative_logq)))
        return false;
    return true;
}

/* C [M, N] (ldc) = alpha op(A) op(B) + beta C, row-major, skipping empty products. */
static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0 || K == 0) return; /* callers never need beta applied alone */
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N,
                (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

/* --- the loss in parts ---
 * One plan per call: the validated inputs, the [B, B + N] buffer, the per-column
 * corrections and the sorted ids, all in the context's arena. The forward runs over
 * ranges of rows (each row is independent), the backward in two independent parts: the
 * query gradient (over ranges of rows) and the item and negative gradients. The op
 * below runs every part in order; the two-tower trainer runs them on the pool's threads
 * (two_tower.c), in blocks of rows. Same code; the same arithmetic up to how the rows
 * are grouped into products and the order of the row sums. */
struct tk_rl_plan {
    int64_t B, N, D, M;
    int64_t Bi, off; /* item rows (B unless gathered), query row b's positive: item row off + b */
    float temperature;
    const float *q, *c, *n;   /* query [B, D], item [B, D], negatives [N, D] */
    float *E;                 /* [B, M]: the logits, then exp(logit - row max), 0 where masked */
    float *sum;               /* [B]: row sums of E */
    const float *colq;        /* [M] logQ corrections or NULL */
    const int64_t *ids;       /* item ids or NULL */
    const id_pos *sid, *snid; /* item and negative ids, sorted (false negatives) */
    int64_t hard;
    float **buf;    /* hard-negative scratch, one per part, or NULL */
    const float *w; /* weights (copied) or NULL */
    const row_kernels *k;
    /* backward (tk_rl_backward_begin) */
    float *coef, *r;     /* [B] each */
    float *tmp, *qr;     /* [B, D] each: E C, and r_b q_b */
    float *dq, *dc, *dn; /* the gradients written into (+=), or NULL */
};

tk_rl_plan *tk_rl_prepare(tk_ctx *ctx, tk_tensor *query, tk_tensor *item, const tk_retrieval_opts *opts, int parts) {
    TK_OP_INPUT(ctx, OP, query);
    TK_OP_INPUT(ctx, OP, item);
    static const tk_retrieval_opts defaults = { 0 };
    const tk_retrieval_opts *o = opts ? opts : &defaults;
    char s1[TK_SHAPE_LEN], s2[TK_SHAPE_LEN];
    if (!tk_check_f32(ctx, OP, "query", query) || !tk_check_f32(ctx, OP, "item", item) ||
        !tk_check_rank(ctx, OP, "query", query, 2) || !tk_check_rank(ctx, OP, "item", item, 2) ||
        !blas_ok(ctx, "query", query))
        return NULL;
    int64_t B = query->shape[0], D = query->shape[1], Bi = item->shape[0], off = o->row_offset;
    if (item->shape[1] != D || (off == 0 && Bi < B))
        return tk_ctx_fail(ctx, "%s: query and item must have the same shape, got %s and %s", OP, TK_SHAPE(query, s1),
                           TK_SHAPE(item, s2));
    if (off < 0 || off > Bi - B)
        return tk_ctx_fail(ctx, "%s: row_offset %lld with query %s is outside item %s", OP, (long long)off,
                           TK_SHAPE(query, s1), TK_SHAPE(item, s2));
    if (B < 1 || D < 1)
        return tk_ctx_fail(ctx, "%s: query must have at least one row and one column, got %s", OP, TK_SHAPE(query, s1));
    if (!blas_ok(ctx, "item", item)) return NULL;
    float T;
    if (!check_opts(ctx, o, B, Bi, D, &T)) return NULL;
    int64_t N = o->negatives ? o->negatives->shape[0] : 0, M = Bi + N;
    if (M > INT_MAX) return tk_ctx_fail(ctx, "%s: %lld candidates are too many for BLAS", OP, (long long)M);
    if (parts < 1) return tk_ctx_fail(ctx, "%s: %d parts (at least 1)", OP, parts);

    tk_rl_plan *p = tk_ctx_alloc(ctx, sizeof *p);
    float *E = tk_ctx_alloc(ctx, (size_t)(B * M) * sizeof *E);
    float *sum = tk_ctx_alloc(ctx, (size_t)B * sizeof *sum);
    if (!p || !E || !sum) return NULL;
    *p = (tk_rl_plan){ .B = B,
                       .N = N,
                       .D = D,
                       .M = M,
                       .Bi = Bi,
                       .off = off,
                       .temperature = T,
                       .q = tk_f32(query),
                       .c = tk_f32(item),
                       .n = o->negatives ? tk_f32(o->negatives) : NULL,
                       .E = E,
                       .sum = sum,
                       .hard = o->num_hard_negatives,
                       .k = pick_kernels() };

    /* the per-column logQ correction, items then negatives */
    if (o->item_logq || o->negative_logq) {
        float *colq = tk_ctx_alloc(ctx, (size_t)M * sizeof *colq);
        if (!colq) return NULL;
        for (int64_t j = 0; j < Bi; j++) colq[j] = o->item_logq ? tk_f32(o->item_logq)[j] : 0.0f;
        for (int64_t n = 0; n < N; n++) colq[Bi + n] = o->negative_logq ? tk_f32(o->negative_logq)[n] : 0.0f;
        p->colq = colq;
    }
    /* false negatives: ids sorted once, so that each row visits only its duplicates */
    if (o->item_ids) {
        p->ids = tk_i64(o->item_ids);
        if (!(p->sid = sorted_ids(ctx, p->ids, Bi))) return NULL;
        if (o->negative_ids && !(p->snid = sorted_ids(ctx, tk_i64(o->negative_ids), N))) return NULL;
    }
    if (p->hard > 0 && p->hard < M - 1) {
        if (!(p->buf = tk_ctx_alloc(ctx, (size_t)parts * sizeof *p->buf))) return NULL;
        for (int i = 0; i < parts; i++)
            if (!(p->buf[i] = tk_ctx_alloc(ctx, (size_t)(2 * M) * sizeof *p->buf[i]))) return NULL;
    }
    /* weights are copied: backward must not depend on the caller keeping them */
    if (o->weights) {
        float *w = tk_ctx_alloc(ctx, (size_t)B * sizeof *w);
        if (!w) return NULL;
        memcpy(w, o->weights->data, (size_t)B * sizeof *w);
        p->w = w;
    }
    return p;
}

double tk_rl_forward_rows(tk_rl_plan *p, int64_t r0, int64_t r1, int part) {
    int64_t Bi = p->Bi, N = p->N, D = p->D, M = p->M;
    if (r1 <= r0) return 0.0;
    /* 1. the logits of these rows, two sgemms into one buffer */
    const float *q = p->q + r0 * D;
    float *L = p->E + r0 * M;
    gemm(false, true, r1 - r0, Bi, D, 1.0f / p->temperature, q, D, p->c, D, 0.0f, L, M);
    if (N > 0) gemm(false, true, r1 - r0, N, D, 1.0f / p->temperature, q, D, p->n, D, 0.0f, L + Bi, M);

    /* 2. per row: correction, masking, hard negatives, then the stable softmax */
    const row_kernels *k = p->k;
    const int64_t *ids = p->ids;
    float *buf = p->buf ? p->buf[part] : NULL;
    double total = 0.0;
    for (int64_t b = r0; b < r1; b++) {
        float *x = p->E + b * M;
        int64_t pb = p->off + b; /* the positive's column */
        if (p->colq) k->sub(x, p->colq, M);
        if (p->sid) {
            int64_t id = ids[pb];
            for (int64_t i = lower_bound(p->sid, Bi, id); i < Bi && p->sid[i].id == id; i++)
                if (p->sid[i].pos != pb) x[p->sid[i].pos] = -INFINITY;
            if (p->snid)
                for (int64_t i = lower_bound(p->snid, N, id); i < N && p->snid[i].id == id; i++)
                    x[Bi + p->snid[i].pos] = -INFINITY;
        }
        if (buf) keep_hard_negatives(k, x, M, pb, p->hard, buf);
        bool nan;
        float m = k->max(x, M, &nan);
        float pos = x[pb];
        double ce;
        if (nan || !isfinite(m)) { /* NaN or inf inputs: a NaN loss the caller sees */
            memset(x, 0, (size_t)M * sizeof *x);
            p->sum[b] = 1.0f;
            ce = NAN;
        } else {
            double s = k->exp(x, M, m);
            p->sum[b] = (float)s;
            ce = ((double)m - pos) + log(s);
        }
        total += p->w ? p->w[b] * ce : ce;
    }
    return total;
}

bool tk_rl_backward_begin(tk_ctx *ctx, tk_rl_plan *p, double g, float *dq, float *dc, float *dn) {
    int64_t B = p->B, D = p->D;
    p->dq = dq;
    p->dc = dc;
    p->dn = p->N > 0 ? dn : NULL;
    p->coef = tk_ctx_alloc(ctx, (size_t)(2 * B) * sizeof *p->coef);
    if (!p->coef) return false;
    p->r = p->coef + B;
    if (dq && !(p->tmp = tk_ctx_alloc(ctx, (size_t)(B * D) * sizeof *p->tmp))) return false;
    if ((dc || p->dn) && !(p->qr = tk_ctx_alloc(ctx, (size_t)(B * D) * sizeof *p->qr))) return false;
    for (int64_t b = 0; b < B; b++) {
        double cb = g * (p->w ? p->w[b] : 1.0) / ((double)B * p->temperature);
        p->coef[b] = (float)cb;
        p->r[b] = (float)(cb / p->sum[b]);
    }
    return true;
}

void tk_rl_backward_query(tk_rl_plan *p, int64_t r0, int64_t r1) {
    if (!p->dq || r1 <= r0) return;
    int64_t Bi = p->Bi, N = p->N, D = p->D, M = p->M, rows = r1 - r0;
    const float *E = p->E + r0 * M, *c = p->c, *coef = p->coef, *r = p->r;
    float *tmp = p->tmp + r0 * D, *dq = p->dq;
    /* dq_b += r_b (E C)_b - coef_b c_{off+b} */
    gemm(false, false, rows, D, Bi, 1.0f, E, M, c, D, 0.0f, tmp, D);
    gemm(false, false, rows, D, N, 1.0f, E + Bi, M, p->n, D, 1.0f, tmp, D);
    for (int64_t b = r0; b < r1; b++) {
        const float *t = tmp + (b - r0) * D, *cb = c + (p->off + b) * D;
        float *d = dq + b * D, rb = r[b], kb = coef[b];
        for (int64_t k = 0; k < D; k++) d[k] += rb * t[k] - kb * cb[k];
    }
}

void tk_rl_backward_items(tk_rl_plan *p) {
    if (!p->dc && !p->dn) return;
    int64_t B = p->B, Bi = p->Bi, N = p->N, D = p->D, M = p->M;
    const float *q = p->q, *E = p->E, *coef = p->coef, *r = p->r;
    float *qr = p->qr;
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < D; k++) qr[b * D + k] = r[b] * q[b * D + k];
    if (p->dc) { /* dc_j += (E[:, :Bi]^T Qr)_j, then dc_{off+b} -= coef_b q_b */
        float *dc = p->dc;
        gemm(true, false, Bi, D, B, 1.0f, E, M, qr, D, 1.0f, dc, D);
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < D; k++) dc[(p->off + b) * D + k] -= coef[b] * q[b * D + k];
    }
    if (p->dn) gemm(true, false, N, D, B, 1.0f, E + Bi, M, qr, D, 1.0f, p->dn, D); /* dn += E[:, Bi:]^T Qr */
}

/* --- the op: every part in order --- */

static void retrieval_backward(tk_ctx *ctx, tk_node *node) {
    tk_rl_plan *p = node->saved;
    float *dq = tk_op_grad(ctx, node->in[0]);
    float *dc = tk_op_grad(ctx, node->in[1]);
    float *dn = p->N > 0 ? tk_op_grad(ctx, node->in[2]) : NULL;
    if (ctx->failed || (!dq && !dc && !dn)) return;
    if (!tk_rl_backward_begin(ctx, p, tk_f32(node->out->grad)[0], dq, dc, dn)) return;
    tk_rl_backward_query(p, 0, p->B);
    tk_rl_backward_items(p);
}

tk_tensor *tk_retrieval_loss(tk_ctx *ctx, tk_tensor *query, tk_tensor *item, const tk_retrieval_opts *opts) {
    tk_rl_plan *p = tk_rl_prepare(ctx, query, item, opts, 1); /* validates */
    if (!p) return NULL;
    bool has_neg = p->N > 0 || (opts && opts->negatives);
    query = tk_ctx_input(ctx, query); /* aliases share the data the plan points to */
    item = tk_ctx_input(ctx, item);
    tk_tensor *neg = has_neg ? tk_ctx_input(ctx, opts->negatives) : NULL;
    if (!query || !item || (has_neg && !neg)) return NULL;
    double total = tk_rl_forward_rows(p, 0, p->B, 0);
    int64_t one = 1;
    tk_tensor *out = tk_ctx_empty(ctx, TK_F32, 1, &one);
    if (!out) return NULL;
    tk_f32(out)[0] = (float)(total / (double)p->B);

    tk_tensor *in[3] = { query, item, neg };
    if (tk_ctx_wants_grad(ctx, 3, in)) {
        tk_node *node = tk_ctx_record(ctx, OP, retrieval_backward, out, 3, in);
        if (!node) return NULL;
        node->saved = p;
    }
    return out;
}
