/* Exact top-k by inner product: blocked sgemm scoring plus a per-query heap behind a
 * running threshold.
 *
 * Queries are taken in blocks of TOPK_QUERY_BLOCK rows; for each query block the items
 * are scored in blocks of TK_TOPK_ITEM_BLOCK rows (towerkit.h) with one cblas_sgemm into a scratch
 * buffer (block x block scores), then every query row of the buffer is selected into
 * that query's heap. Items are visited in increasing index order, so an item whose score
 * equals the heap's worst entry always has the higher index and loses the tie: once a
 * heap is full, only scores strictly above its minimum can enter. That comparison is the
 * whole cost of selection for almost every score, and it is done sixteen scores at a
 * time (a vectorised "any above the threshold" test) before looking at them one by one.
 *
 * Each query's heap lives in its own output row (out_idx, as 64-bit keys packing score
 * and index, see make_key), so k costs no memory beyond the outputs; the rows are
 * heap-sorted best first at the end and unpacked into out_scores and out_idx.
 *
 * Order: score descending, then index ascending (a total order, so results are exact,
 * ties included, given the scores). An item whose score is NaN is never returned.
 * Exclusions are looked up (binary search in a sorted copy of the query's list) only
 * for the rare candidates that pass the threshold. */
#include "internal.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

/* Query blocks of 512 and item blocks of 4096: an 8 MiB score block per thread. The query
 * blocks are the unit of parallel work (tk_parallel_run) and are cut the same way for
 * every thread count: a block's sgemm, and so every score, has the same shape and bits
 * whichever thread runs it. On W2's shape (D = 128) blocks of 512 x 4096 up run the
 * single-threaded sgemm near its peak. */
#define TOPK_QUERY_BLOCK 512
#define TOPK_CHUNK 16

/* Heap entries are 64-bit keys that order as the results do: the score mapped to an
 * unsigned integer with the same order (sign flipped for positives, all bits for
 * negatives; -0 is made +0 first so it ties with +0 as a float comparison says) in the
 * high half, and UINT32_MAX - index in the low half, so that of two equal scores the
 * lower index has the larger key. One integer comparison, no branches on ties. */
static inline uint64_t make_key(float v, int64_t idx) {
    uint32_t u;
    v += 0.0f; /* -0 -> +0 */
    memcpy(&u, &v, sizeof u);
    u ^= (u >> 31) ? 0xffffffffu : 0x80000000u;
    return (uint64_t)u << 32 | (uint32_t)(UINT32_MAX - (uint64_t)idx);
}

static inline float key_score(uint64_t key) {
    uint32_t u = (uint32_t)(key >> 32);
    u ^= (u >> 31) ? 0x80000000u : 0xffffffffu;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static inline int64_t key_index(uint64_t key) { return (int64_t)(UINT32_MAX - (uint32_t)key); }

/* Min-heap of keys: the worst entry at the root. Replaces the root by `key` and moves
 * it down; the child is picked without a branch. */
static void heap_replace_root(uint64_t *h, int64_t n, uint64_t key) {
    int64_t pos = 0;
    for (;;) {
        int64_t c = 2 * pos + 1;
        if (c >= n) break;
        uint64_t kc = h[c];
        if (c + 1 < n) {
            uint64_t k1 = h[c + 1];
            bool right = k1 < kc;
            c += right;
            kc = right ? k1 : kc;
        }
        if (kc >= key) break;
        h[pos] = kc;
        pos = c;
    }
    h[pos] = key;
}

static void heap_push(uint64_t *h, int64_t n, uint64_t key) {
    int64_t pos = n; /* the new entry goes at the end and moves up */
    while (pos > 0) {
        int64_t p = (pos - 1) / 2;
        if (h[p] <= key) break;
        h[pos] = h[p];
        pos = p;
    }
    h[pos] = key;
}

/* Sorts a heap of n keys best (largest) first: heap sort moves the worst to the end. */
static void heap_sort_best_first(uint64_t *h, int64_t n) {
    for (int64_t m = n - 1; m > 0; m--) {
        uint64_t worst = h[0];
        heap_replace_root(h, m, h[m]);
        h[m] = worst;
    }
}

/* Whether `item` is in the sorted list ex[0..n). */
static bool excluded(const int64_t *ex, int64_t n, int64_t item) {
    int64_t i = tk_lower_bound_i64(ex, n, item);
    return i < n && ex[i] == item;
}

/* The first chunk of TOPK_CHUNK scores with one above thr: returns its offset (a
 * multiple of TOPK_CHUNK), or n rounded down to a multiple of TOPK_CHUNK if none has.
 * This is the loop every score goes through: SSE2 (x86-64's baseline) or AVX2 when the
 * CPU has it, plain C elsewhere. */
typedef int64_t (*scan_fn)(const float *s, int64_t n, float thr);

#if defined(__x86_64__) && defined(__GNUC__)
static int64_t scan_sse2(const float *s, int64_t n, float thr) {
    __m128 t = _mm_set1_ps(thr);
    int64_t j = 0;
    for (; j + TOPK_CHUNK <= n; j += TOPK_CHUNK) {
        __m128 a = _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(s + j), t), _mm_cmpgt_ps(_mm_loadu_ps(s + j + 4), t));
        __m128 b = _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(s + j + 8), t), _mm_cmpgt_ps(_mm_loadu_ps(s + j + 12), t));
        if (_mm_movemask_ps(_mm_or_ps(a, b))) return j;
    }
    return j;
}

__attribute__((target("avx2"))) static int64_t scan_avx2(const float *s, int64_t n, float thr) {
    __m256 t = _mm256_set1_ps(thr);
    int64_t j = 0;
    for (; j + 4 * TOPK_CHUNK <= n; j += 4 * TOPK_CHUNK) { /* 64 scores per test */
        __m256 a = _mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + j), t, _CMP_GT_OQ),
                                _mm256_cmp_ps(_mm256_loadu_ps(s + j + 8), t, _CMP_GT_OQ));
        __m256 b = _mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + j + 16), t, _CMP_GT_OQ),
                                _mm256_cmp_ps(_mm256_loadu_ps(s + j + 24), t, _CMP_GT_OQ));
        __m256 c = _mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + j + 32), t, _CMP_GT_OQ),
                                _mm256_cmp_ps(_mm256_loadu_ps(s + j + 40), t, _CMP_GT_OQ));
        __m256 d = _mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + j + 48), t, _CMP_GT_OQ),
                                _mm256_cmp_ps(_mm256_loadu_ps(s + j + 56), t, _CMP_GT_OQ));
        if (_mm256_movemask_ps(_mm256_or_ps(_mm256_or_ps(a, b), _mm256_or_ps(c, d)))) {
            /* which chunk of 16 */
            if (_mm256_movemask_ps(a)) return j;
            if (_mm256_movemask_ps(b)) return j + TOPK_CHUNK;
            if (_mm256_movemask_ps(c)) return j + 2 * TOPK_CHUNK;
            return j + 3 * TOPK_CHUNK;
        }
    }
    for (; j + TOPK_CHUNK <= n; j += TOPK_CHUNK) {
        __m256 a = _mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + j), t, _CMP_GT_OQ),
                                _mm256_cmp_ps(_mm256_loadu_ps(s + j + 8), t, _CMP_GT_OQ));
        if (_mm256_movemask_ps(a)) return j;
    }
    return j;
}

static scan_fn pick_scan(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) return scan_avx2;
    return scan_sse2;
}
#else
static int64_t scan_plain(const float *s, int64_t n, float thr) {
    int64_t j = 0;
    for (; j + TOPK_CHUNK <= n; j += TOPK_CHUNK) {
        int any = 0;
        for (int i = 0; i < TOPK_CHUNK; i++) any |= s[j + i] > thr;
        if (any) return j;
    }
    return j;
}

static scan_fn pick_scan(void) { return scan_plain; }
#endif

typedef struct topk_row {
    uint64_t *heap;    /* the query's out_idx row, holding keys until the end */
    int64_t count;     /* entries in the heap */
    const int64_t *ex; /* sorted exclusions of the query */
    int64_t nex;
} topk_row;

/* Selects the scores s[0..n) of items j0.. into a query's heap of capacity cap. */
static void select_row(topk_row *r, int64_t cap, const float *s, int64_t n, int64_t j0, scan_fn scan) {
    uint64_t *h = r->heap;
    int64_t j = 0;
    while (r->count < cap && j < n) { /* filling: every valid item enters */
        float v = s[j];
        if (v == v && !(r->nex && excluded(r->ex, r->nex, j0 + j))) heap_push(h, r->count++, make_key(v, j0 + j));
        j++;
    }
    if (j == n) return;
    float thr = key_score(h[0]); /* full: only scores strictly above the worst can enter */
    while (j < n) {
        j += scan(s + j, n - j, thr); /* skips whole chunks below the threshold */
        int64_t end = j + TOPK_CHUNK < n ? j + TOPK_CHUNK : n;
        for (; j < end; j++) {
            float v = s[j];
            if (v > thr && !(r->nex && excluded(r->ex, r->nex, j0 + j))) {
                heap_replace_root(h, cap, make_key(v, j0 + j));
                thr = key_score(h[0]);
            }
        }
    }
}

/* Turns a query's sorted keys into scores and indices, and pads the rest of the row
 * with -1 / -INFINITY when fewer than k items were found. */
static void finish_row(uint64_t *keys, float *scores, int64_t count, int64_t k) {
    int64_t *idx = (int64_t *)keys;
    for (int64_t j = 0; j < count; j++) {
        uint64_t key = keys[j];
        scores[j] = key_score(key);
        idx[j] = key_index(key);
    }
    for (int64_t j = count; j < k; j++) {
        scores[j] = -INFINITY;
        idx[j] = -1;
    }
}

static bool check_matrix(const char *arg, const tk_tensor *t) {
    char s[64];
    if (!t) {
        tk_set_error("topk: %s is NULL", arg);
        return false;
    }
    if (t->dtype != TK_F32 || t->ndim != 2) {
        tk_set_error("topk: %s must be a 2-D float32 tensor, got %s %s", arg, tk_dtype_name(t->dtype),
                     tk_shape_str(t, s, sizeof s));
        return false;
    }
    return true;
}

static bool check_out(const char *arg, const tk_tensor *t, tk_dtype dtype, int64_t q, int64_t k) {
    char s[64];
    if (!t) {
        tk_set_error("topk: %s is NULL", arg);
        return false;
    }
    if (t->dtype != dtype || t->ndim != 2 || t->shape[0] != q || t->shape[1] != k) {
        tk_set_error("topk: %s must be %s [%lld, %lld], got %s %s", arg, tk_dtype_name(dtype), (long long)q,
                     (long long)k, tk_dtype_name(t->dtype), tk_shape_str(t, s, sizeof s));
        return false;
    }
    return true;
}

/* Checks the CSR exclusion lists and returns a copy with each list sorted (NULL with
 * *ok set when there is nothing to exclude). */
static int64_t *sorted_exclusions(int64_t nq, int64_t ni, const int64_t *off, const int64_t *items, bool *ok) {
    *ok = false;
    if (off[0] < 0) {
        tk_set_error("topk: excl_offsets[0] is %lld, expected >= 0", (long long)off[0]);
        return NULL;
    }
    for (int64_t q = 0; q < nq; q++)
        if (off[q + 1] < off[q]) {
            tk_set_error(
                "topk: excl_offsets must not decrease, but excl_offsets[%lld] = %lld > excl_offsets[%lld] = %lld",
                (long long)q, (long long)off[q], (long long)(q + 1), (long long)off[q + 1]);
            return NULL;
        }
    int64_t base = off[0], total = off[nq] - base;
    if (total == 0) {
        *ok = true;
        return NULL;
    }
    if (!items) {
        tk_set_error("topk: excl_items is NULL but excl_offsets lists %lld exclusions", (long long)total);
        return NULL;
    }
    for (int64_t q = 0; q < nq; q++)
        for (int64_t e = off[q]; e < off[q + 1]; e++)
            if (items[e] < 0 || items[e] >= ni) {
                tk_set_error("topk: excluded item %lld of query %lld is out of range [0, %lld)", (long long)items[e],
                             (long long)q, (long long)ni);
                return NULL;
            }
    int64_t *copy = malloc((size_t)total * sizeof *copy);
    if (!copy) {
        tk_set_error("topk: out of memory copying %lld exclusions", (long long)total);
        return NULL;
    }
    memcpy(copy, items + base, (size_t)total * sizeof *copy);
    for (int64_t q = 0; q < nq; q++) {
        int64_t *l = copy + (off[q] - base);
        size_t n = (size_t)(off[q + 1] - off[q]);
        bool sorted = true;
        for (size_t i = 1; i < n && sorted; i++) sorted = l[i - 1] <= l[i];
        if (!sorted) qsort(l, n, sizeof *l, tk_cmp_i64);
    }
    *ok = true;
    return copy;
}

/* tk_topk's work: the query blocks, taken by the pool's threads in any order. Each block
 * is scored and selected the same way whichever thread runs it, so the results do not
 * depend on the thread count. Score buffers are per thread (slot), made on first use. */
typedef struct topk_job {
    const tk_tensor *queries, *items;
    int64_t k;
    const int64_t *excl_offsets, *ex;
    tk_tensor *out_idx, *out_scores;
    float **scores;  /* [slot]: a qb x nb score block */
    topk_row **rows; /* [slot]: qb rows */
    bool oom;        /* a scratch allocation failed (atomic) */
} topk_job;

static void topk_block(void *arg, int64_t block, int slot) {
    topk_job *job = arg;
    const tk_tensor *queries = job->queries, *items = job->items;
    const int64_t *excl_offsets = job->excl_offsets, *ex = job->ex;
    int64_t k = job->k, d = queries->shape[1], ni = items->shape[0], nq = queries->shape[0];
    int64_t q0 = block * TOPK_QUERY_BLOCK, mq = nq - q0 < TOPK_QUERY_BLOCK ? nq - q0 : TOPK_QUERY_BLOCK;
    int64_t cap = k < ni ? k : ni; /* heap capacity */
    int64_t nb = ni < TK_TOPK_ITEM_BLOCK ? ni : TK_TOPK_ITEM_BLOCK;
    float *os = tk_f32(job->out_scores);
    int64_t *oi = tk_i64(job->out_idx);
    if (ni == 0) {
        for (int64_t q = q0; q < q0 + mq; q++) finish_row((uint64_t *)(oi + q * k), os + q * k, 0, k);
        return;
    }
    if (__atomic_load_n(&job->oom, __ATOMIC_RELAXED)) return;
    if (!job->scores[slot]) {
        /* the first block is the largest: a few queries (a served request) need a few rows */
        int64_t qcap = nq < TOPK_QUERY_BLOCK ? nq : TOPK_QUERY_BLOCK;
        job->scores[slot] = malloc((size_t)(qcap * nb) * sizeof(float));
        job->rows[slot] = malloc((size_t)qcap * sizeof(topk_row));
        if (!job->scores[slot] || !job->rows[slot]) {
            __atomic_store_n(&job->oom, true, __ATOMIC_RELAXED);
            return;
        }
    }
    float *scores = job->scores[slot];
    topk_row *rows = job->rows[slot];
    scan_fn scan = pick_scan();
    const float *qv = tk_f32(queries), *iv = tk_f32(items);
    for (int64_t r = 0; r < mq; r++) {
        int64_t q = q0 + r;
        rows[r] = (topk_row){ (uint64_t *)(oi + q * k), 0, NULL, 0 };
        if (ex) {
            rows[r].ex = ex + (excl_offsets[q] - excl_offsets[0]);
            rows[r].nex = excl_offsets[q + 1] - excl_offsets[q];
        }
    }
    for (int64_t j0 = 0; j0 < ni; j0 += nb) {
        int64_t mi = ni - j0 < nb ? ni - j0 : nb;
        if (d > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)mq, (blasint)mi, (blasint)d, 1.0f,
                        qv + q0 * d, (blasint)d, iv + j0 * d, (blasint)d, 0.0f, scores, (blasint)mi);
        else
            memset(scores, 0, (size_t)(mq * mi) * sizeof *scores);
        for (int64_t r = 0; r < mq; r++) select_row(&rows[r], cap, scores + r * mi, mi, j0, scan);
    }
    for (int64_t r = 0; r < mq; r++) {
        heap_sort_best_first(rows[r].heap, rows[r].count);
        finish_row(rows[r].heap, os + (q0 + r) * k, rows[r].count, k);
    }
}

tk_status tk_topk(const tk_tensor *queries, const tk_tensor *items, int64_t k, const int64_t *excl_offsets,
                  const int64_t *excl_items, tk_tensor *out_idx, tk_tensor *out_scores) {
    if (!check_matrix("queries", queries) || !check_matrix("items", items)) return TK_ERROR;
    /* a table trained with lazy = false may serve as the items (or queries): rows up to date */
    tk_tensor_sync((tk_tensor *)queries);
    tk_tensor_sync((tk_tensor *)items);
    int64_t nq = queries->shape[0], d = queries->shape[1], ni = items->shape[0];
    char s1[64], s2[64];
    if (items->shape[1] != d) {
        tk_set_error("topk: queries %s and items %s must have the same number of columns",
                     tk_shape_str(queries, s1, sizeof s1), tk_shape_str(items, s2, sizeof s2));
        return TK_ERROR;
    }
    if (d > INT_MAX) {
        tk_set_error("topk: %lld columns are too many for BLAS", (long long)d);
        return TK_ERROR;
    }
    if (ni > (int64_t)UINT32_MAX) { /* indices are packed in 32 bits (make_key) */
        tk_set_error("topk: %lld items are too many (at most %lu)", (long long)ni, (unsigned long)UINT32_MAX);
        return TK_ERROR;
    }
    if (k < 1) {
        tk_set_error("topk: k must be >= 1, got %lld", (long long)k);
        return TK_ERROR;
    }
    if (!check_out("out_idx", out_idx, TK_I64, nq, k) || !check_out("out_scores", out_scores, TK_F32, nq, k))
        return TK_ERROR;
    if (!excl_offsets && excl_items) {
        tk_set_error("topk: excl_items given without excl_offsets");
        return TK_ERROR;
    }
    int64_t *ex = NULL;
    if (excl_offsets) {
        bool ok;
        ex = sorted_exclusions(nq, ni, excl_offsets, excl_items, &ok);
        if (!ok) return TK_ERROR;
    }

    int64_t blocks = (nq + TOPK_QUERY_BLOCK - 1) / TOPK_QUERY_BLOCK;
    int threads = tk_get_num_threads();
    if (threads > blocks) threads = (int)blocks;
    if (threads < 1) threads = 1;
    topk_job job = { queries,
                     items,
                     k,
                     excl_offsets,
                     ex,
                     out_idx,
                     out_scores,
                     calloc((size_t)threads, sizeof(float *)),
                     calloc((size_t)threads, sizeof(topk_row *)),
                     false };
    if (job.scores && job.rows) tk_parallel_run(blocks, threads, topk_block, &job);
    bool failed = !job.scores || !job.rows || job.oom;
    for (int i = 0; i < threads; i++) {
        if (job.scores) free(job.scores[i]);
        if (job.rows) free(job.rows[i]);
    }
    free(job.scores);
    free(job.rows);
    free(ex);
    if (failed) {
        tk_set_error("topk: out of memory for a %d x %d score block", TOPK_QUERY_BLOCK, TK_TOPK_ITEM_BLOCK);
        return TK_ERROR;
    }
    return TK_OK;
}
