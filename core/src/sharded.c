/* Sharded retrieval over MPI (towerkit_dist.h, docs/distributed.md): a catalogue split
 * over the ranks, each rank's exact top-k of its shard (tk_topk) merged into the global
 * top-k on every rank.
 *
 * The order is tk_topk's: score descending, then the lower catalogue index, where the
 * catalogue is the shards stacked in rank order (rank r's row j is global index
 * offset_r + j). Every rank's top k holds every item of the global top k that lies in
 * its shard, so merging the N lists of k under that order gives the global top k
 * exactly, given the scores. The scores themselves are tk_topk's: its sgemm blocks of
 * TK_TOPK_ITEM_BLOCK items (towerkit.h) give the same bits for an item only when the
 * item sits at the same place in the same block, so shards cut at its multiples
 * (tk_dist_shard_range) reproduce tk_topk on the whole catalogue bit for bit; other
 * splits give the exact top-k of scores that may differ in the last bit.
 *
 * Only the tk_dist_* collectives are used (dist.c holds MPI); before tk_dist_init, or
 * in a build without MPI, there is one rank and one shard. */
#include "internal.h"
#include "towerkit_dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool distributed(void) { return tk_dist_initialized() && tk_dist_size() > 1; }

void tk_dist_shard_range(int64_t n, int rank, int size, int64_t align, int64_t *lo, int64_t *count) {
    if (n < 0) n = 0;
    if (size < 1) size = 1;
    if (rank < 0) rank = 0;
    if (rank > size) rank = size;
    if (align < 1) align = TK_TOPK_ITEM_BLOCK;
    int64_t blocks = (n + align - 1) / align;
    /* rank r: blocks [ceil(B r / N), ceil(B (r + 1) / N)): the first ranks fill first */
    int64_t b0 = (blocks * rank + size - 1) / size, b1 = (blocks * (rank + 1) + size - 1) / size;
    int64_t a = b0 * align, b = b1 * align;
    if (a > n) a = n;
    if (b > n) b = n;
    if (lo) *lo = a;
    if (count) *count = b - a;
}

/* Whether candidate (sa, ia) ranks before (sb, ib): tk_topk's order. */
static inline bool before(float sa, int64_t ia, float sb, int64_t ib) { return sa > sb || (sa == sb && ia < ib); }

static bool check_pair(const char *what, const tk_tensor *idx, const tk_tensor *scores, int64_t *q, int64_t *k) {
    if (!idx || !scores || idx->dtype != TK_I64 || scores->dtype != TK_F32 || idx->ndim != 2 || scores->ndim != 2 ||
        idx->shape[0] != scores->shape[0] || idx->shape[1] != scores->shape[1]) {
        tk_set_error("%s: indices int64 [Q, k] and scores float32 [Q, k] of one shape expected", what);
        return false;
    }
    *q = idx->shape[0];
    *k = idx->shape[1];
    return true;
}

/* The merge of every rank's candidates: gidx (global indices, -1 pads at the end of a
 * row), pay (a payload per candidate, may be NULL: the item ids) and sc, Q x k each on
 * every rank. Writes the best k of the union per query into out_* (any may be NULL).
 * With a payload, each candidate's index and payload travel as one pair: one int64
 * all-gather for both. */
static tk_status merge(const char *what, int64_t Q, int64_t k, const int64_t *gidx, const int64_t *pay, const float *sc,
                       int64_t *out_idx, int64_t *out_pay, float *out_scores, bool failed) {
    int S = distributed() ? tk_dist_size() : 1;
    if (failed && S == 1) return TK_ERROR;
    int64_t n = Q * k, stride = 1; /* candidate c's index at all_idx[c stride], payload at all_pay[c stride] */
    const int64_t *all_idx = gidx, *all_pay = pay;
    const float *all_sc = sc;
    int64_t *counts = NULL, *pairs = NULL, *bufi = NULL, *at = NULL;
    float *bufs = NULL;
    tk_status st = TK_ERROR;
    if (S > 1) {
        counts = malloc((size_t)(2 * S) * sizeof *counts);
        if (!counts) goto oom;
        /* a rank that failed before the exchange sends -1: every rank then fails */
        if (tk_dist_allgather_count(failed ? -1 : n, counts) != TK_OK) goto out;
        for (int r = 0; r < S && !failed; r++)
            if (counts[r] < 0) {
                tk_set_error("%s: rank %d failed (its own message says why)", what, r);
                goto out;
            }
        if (failed) goto out; /* the caller's message stands */
        for (int r = 0; r < S; r++)
            if (counts[r] != n) { /* every rank sees the same counts: all fail alike */
                tk_set_error("%s: rank %d has %lld candidates, this rank (%d) %lld: every rank must pass the same "
                             "queries and k",
                             what, r, (long long)counts[r], tk_dist_rank(), (long long)n);
                goto out;
            }
        const int64_t *send = gidx;
        if (pay) { /* (index, payload) pairs */
            stride = 2;
            pairs = malloc((size_t)(n > 0 ? 2 * n : 1) * sizeof *pairs);
            if (!pairs) goto oom;
            for (int64_t c = 0; c < n; c++) {
                pairs[2 * c] = gidx[c];
                pairs[2 * c + 1] = pay[c];
            }
            send = pairs;
        }
        int64_t *pair_counts = counts + S;
        for (int r = 0; r < S; r++) pair_counts[r] = counts[r] * stride;
        size_t cells = (size_t)(n * S > 0 ? n * S : 1);
        bufi = malloc(cells * (size_t)stride * sizeof *bufi);
        bufs = malloc(cells * sizeof *bufs);
        if (!bufi || !bufs) goto oom;
        if (tk_dist_allgatherv(send, TK_I64, bufi, pair_counts) != TK_OK ||
            tk_dist_allgatherv(sc, TK_F32, bufs, counts) != TK_OK)
            goto out;
        all_idx = bufi;
        all_pay = pay ? bufi + 1 : NULL;
        all_sc = bufs;
    }
    at = malloc((size_t)S * sizeof *at);
    if (!at) goto oom;
    for (int64_t q = 0; q < Q; q++) {
        for (int r = 0; r < S; r++) at[r] = 0;
        for (int64_t j = 0; j < k; j++) {
            int best = -1;
            int64_t bi = -1;
            float bs = -INFINITY;
            for (int r = 0; r < S; r++) { /* the heads of the ranks' lists, best first */
                if (at[r] >= k) continue;
                int64_t c = (int64_t)r * n + q * k + at[r];
                if (all_idx[c * stride] < 0) continue; /* a pad: the rest of that list is too */
                if (best < 0 || before(all_sc[c], all_idx[c * stride], bs, bi)) {
                    best = r;
                    bi = all_idx[c * stride];
                    bs = all_sc[c];
                }
            }
            int64_t o = q * k + j;
            if (best < 0) {
                if (out_idx) out_idx[o] = -1;
                if (out_pay) out_pay[o] = -1;
                if (out_scores) out_scores[o] = -INFINITY;
                continue;
            }
            int64_t c = (int64_t)best * n + q * k + at[best]++;
            if (out_idx) out_idx[o] = bi;
            if (out_pay) out_pay[o] = all_pay ? all_pay[c * stride] : bi;
            if (out_scores) out_scores[o] = bs;
        }
    }
    st = TK_OK;
    goto out;
oom:
    tk_set_error("%s: out of memory", what);
out:
    free(counts);
    free(pairs);
    free(bufi);
    free(bufs);
    free(at);
    return st;
}

tk_status tk_dist_topk_merge(const tk_tensor *idx, const tk_tensor *scores, int64_t offset, tk_tensor *out_idx,
                             tk_tensor *out_scores) {
    static const char *const W = "topk_merge";
    int64_t Q, k, q2, k2;
    if (!check_pair(W, idx, scores, &Q, &k) || !check_pair(W, out_idx, out_scores, &q2, &k2)) return TK_ERROR;
    if (q2 != Q || k2 != k) return tk_set_error("%s: the outputs must have the inputs' shape [Q, k]", W), TK_ERROR;
    if (offset < 0) return tk_set_error("%s: offset %lld < 0", W, (long long)offset), TK_ERROR;
    const int64_t *li = tk_i64(idx);
    int64_t *g = malloc((size_t)(Q * k > 0 ? Q * k : 1) * sizeof *g);
    if (!g) return tk_set_error("%s: out of memory", W), TK_ERROR;
    for (int64_t i = 0; i < Q * k; i++) g[i] = li[i] < 0 ? -1 : li[i] + offset;
    tk_status st = merge(W, Q, k, g, NULL, tk_f32(scores), tk_i64(out_idx), NULL, tk_f32(out_scores), false);
    free(g);
    return st;
}

struct tk_sharded_index {
    tk_tensor *emb; /* [n, D], heap (retained or a copy) */
    int64_t *ids;   /* [n] */
    int64_t *pairs; /* [n][2]: (id, row) sorted by id then row: exclusions by id */
    int64_t n, dim, offset, total;
};

static int cmp_pair(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    if (x[0] != y[0]) return (x[0] > y[0]) - (x[0] < y[0]);
    return (x[1] > y[1]) - (x[1] < y[1]);
}

void tk_sharded_index_free(tk_sharded_index *ix) {
    if (!ix) return;
    tk_tensor_release(ix->emb);
    free(ix->ids);
    free(ix->pairs);
    free(ix);
}

/* Whether a shard's arguments are ids int64 [n] and embeddings float32 [n, D]. */
static bool shard_ok(const tk_tensor *ids, const tk_tensor *embeddings) {
    return ids && embeddings && ids->dtype == TK_I64 && ids->ndim == 1 && embeddings->dtype == TK_F32 &&
           embeddings->ndim == 2 && embeddings->shape[0] == ids->shape[0];
}

tk_sharded_index *tk_sharded_index_new(const tk_tensor *ids, const tk_tensor *embeddings) {
    static const char *const W = "sharded_index";
    char s1[64], s2[64];
    /* the shapes are exchanged before any check can fail on one rank only: a rank with a
     * bad shard reports it, the others see its width or count and fail too */
    bool ok = shard_ok(ids, embeddings);
    int64_t n = ok ? ids->shape[0] : -1, dim = ok ? embeddings->shape[1] : -1;
    int S = distributed() ? tk_dist_size() : 1, me = distributed() ? tk_dist_rank() : 0;
    int64_t offset = 0, total = n;
    if (S > 1) {
        int64_t *c = malloc((size_t)(2 * S) * sizeof *c);
        if (!c) return tk_set_error("%s: out of memory", W), NULL;
        if (tk_dist_allgather_count(n, c) != TK_OK || tk_dist_allgather_count(dim, c + S) != TK_OK) {
            free(c);
            return NULL;
        }
        total = 0;
        for (int r = 0; r < S; r++) {
            if (c[r] < 0 || c[S + r] != c[S]) {
                if (ok && c[r] >= 0)
                    tk_set_error("%s: rank %d has embeddings of width %lld, rank 0 of %lld: every shard must have "
                                 "the same width",
                                 W, r, (long long)c[S + r], (long long)c[S]);
                else if (ok)
                    tk_set_error("%s: rank %d's shard is bad (see its message)", W, r);
                ok = false;
                break;
            }
            if (r == me) offset = total;
            total += c[r];
        }
        free(c);
    }
    if (!ok) {
        if (!shard_ok(ids, embeddings))
            tk_set_error("%s: ids int64 [n] and embeddings float32 [n, D] expected, got %s %s and %s %s", W,
                         ids ? tk_dtype_name(ids->dtype) : "NULL", ids ? tk_shape_str(ids, s1, sizeof s1) : "",
                         embeddings ? tk_dtype_name(embeddings->dtype) : "NULL",
                         embeddings ? tk_shape_str(embeddings, s2, sizeof s2) : "");
        return NULL;
    }
    if (total > (int64_t)UINT32_MAX) /* tk_topk's limit, on the whole catalogue */
        return tk_set_error("%s: %lld items are too many (at most %lu)", W, (long long)total,
                            (unsigned long)UINT32_MAX),
               NULL;
    tk_sharded_index *ix = calloc(1, sizeof *ix);
    if (!ix) return tk_set_error("%s: out of memory", W), NULL;
    ix->n = n;
    ix->dim = dim;
    ix->offset = offset;
    ix->total = total;
    ix->ids = malloc((size_t)(n ? n : 1) * sizeof *ix->ids);
    ix->pairs = malloc((size_t)(n ? 2 * n : 1) * sizeof *ix->pairs);
    if (embeddings->flags & TK_TENSOR_HEAP) {
        tk_tensor_retain((tk_tensor *)embeddings);
        ix->emb = (tk_tensor *)embeddings;
    } else {
        ix->emb = tk_tensor_clone(embeddings);
    }
    if (!ix->ids || !ix->pairs || !ix->emb) {
        tk_sharded_index_free(ix);
        return tk_set_error("%s: out of memory", W), NULL;
    }
    const int64_t *id = tk_i64(ids);
    for (int64_t i = 0; i < n; i++) {
        ix->ids[i] = id[i];
        ix->pairs[2 * i] = id[i];
        ix->pairs[2 * i + 1] = i;
    }
    qsort(ix->pairs, (size_t)n, 2 * sizeof *ix->pairs, cmp_pair);
    return ix;
}

int64_t tk_sharded_index_size(const tk_sharded_index *ix) { return ix ? ix->total : 0; }
int64_t tk_sharded_index_offset(const tk_sharded_index *ix) { return ix ? ix->offset : 0; }
int64_t tk_sharded_index_shard_size(const tk_sharded_index *ix) { return ix ? ix->n : 0; }

/* The arguments of a query, checked alike by tk_sharded_index_query and, before it
 * sends anything, by the leader of tk_sharded_serve_query: when every rank passes the
 * same arguments, as a collective requires, every rank refuses them alike and no rank
 * goes on to the exchange alone. A served batch (`served`) has at least one query (zero
 * stops the followers). */
static tk_status check_query(const char *W, const tk_sharded_index *ix, const tk_tensor *queries, bool served,
                             int64_t k, const int64_t *excl_offsets, const int64_t *excl_ids, const tk_tensor *out_ids,
                             const tk_tensor *out_scores, const tk_tensor *out_index) {
    char s[64];
    if (!ix) return tk_set_error("%s: NULL index", W), TK_ERROR;
    if (!queries || queries->dtype != TK_F32 || queries->ndim != 2 || queries->shape[1] != ix->dim ||
        (served && queries->shape[0] < 1))
        return tk_set_error("%s: queries float32 [Q%s, %lld] expected, got %s %s", W, served ? " >= 1" : "",
                            (long long)ix->dim, queries ? tk_dtype_name(queries->dtype) : "NULL",
                            queries ? tk_shape_str(queries, s, sizeof s) : ""),
               TK_ERROR;
    if (k < 1) return tk_set_error("%s: k must be >= 1, got %lld", W, (long long)k), TK_ERROR;
    int64_t Q = queries->shape[0], q2, k2;
    if (!check_pair(W, out_ids, out_scores, &q2, &k2) || q2 != Q || k2 != k)
        return tk_set_error("%s: out_ids int64 [%lld, %lld] and out_scores float32 [%lld, %lld] expected", W,
                            (long long)Q, (long long)k, (long long)Q, (long long)k),
               TK_ERROR;
    if (out_index &&
        (out_index->dtype != TK_I64 || out_index->ndim != 2 || out_index->shape[0] != Q || out_index->shape[1] != k))
        return tk_set_error("%s: out_index int64 [%lld, %lld] expected", W, (long long)Q, (long long)k), TK_ERROR;
    if (excl_offsets) {
        if (excl_offsets[0] != 0) return tk_set_error("%s: exclusion offsets must start at 0", W), TK_ERROR;
        for (int64_t q = 0; q < Q; q++)
            if (excl_offsets[q + 1] < excl_offsets[q])
                return tk_set_error("%s: exclusion offsets must not decrease (query %lld)", W, (long long)q), TK_ERROR;
        if (excl_offsets[Q] > 0 && !excl_ids) return tk_set_error("%s: exclusion offsets without ids", W), TK_ERROR;
    }
    return TK_OK;
}

tk_status tk_sharded_index_query(tk_sharded_index *ix, const tk_tensor *queries, int64_t k, const int64_t *excl_offsets,
                                 const int64_t *excl_ids, tk_tensor *out_ids, tk_tensor *out_scores,
                                 tk_tensor *out_index) {
    static const char *const W = "sharded_index_query";
    if (check_query(W, ix, queries, false, k, excl_offsets, excl_ids, out_ids, out_scores, out_index) != TK_OK)
        return TK_ERROR;
    int64_t Q = queries->shape[0];
    tk_status st = TK_ERROR;
    int64_t *lo = NULL, *li = NULL, *gi = NULL, *gp = NULL;
    tk_tensor *idx = NULL, *sc = NULL;
    /* the exclusion lists of ids as this shard's rows (an id it lacks: nothing) */
    if (excl_offsets && excl_offsets[Q] > excl_offsets[0] && ix->n > 0) {
        int64_t total = 0;
        for (int64_t p = excl_offsets[0]; p < excl_offsets[Q]; p++)
            for (int64_t i = tk_pairs_lower_bound(ix->pairs, ix->n, excl_ids[p]);
                 i < ix->n && ix->pairs[2 * i] == excl_ids[p]; i++)
                total++;
        lo = malloc((size_t)(Q + 1) * sizeof *lo);
        li = malloc((size_t)(total ? total : 1) * sizeof *li);
        if (!lo || !li) goto oom;
        int64_t used = 0;
        lo[0] = 0;
        for (int64_t q = 0; q < Q; q++) {
            for (int64_t p = excl_offsets[q]; p < excl_offsets[q + 1]; p++)
                for (int64_t i = tk_pairs_lower_bound(ix->pairs, ix->n, excl_ids[p]);
                     i < ix->n && ix->pairs[2 * i] == excl_ids[p]; i++)
                    li[used++] = ix->pairs[2 * i + 1];
            lo[q + 1] = used;
        }
    }
    idx = tk_tensor_new_2d(TK_I64, Q, k);
    sc = tk_tensor_new_2d(TK_F32, Q, k);
    gi = malloc((size_t)(Q * k > 0 ? Q * k : 1) * sizeof *gi);
    gp = malloc((size_t)(Q * k > 0 ? Q * k : 1) * sizeof *gp);
    if (!idx || !sc || !gi || !gp) goto oom;
    /* this shard's top k (an empty shard has no candidates); a failure of tk_topk is
     * this rank's own: it joins the exchange to say so, and every rank fails */
    if (ix->n > 0 && Q > 0 && tk_topk(queries, ix->emb, k, lo, li, idx, sc) != TK_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", tk_last_error());
        merge(W, Q, k, NULL, NULL, NULL, NULL, NULL, NULL, true);
        tk_set_error("%s: rank %d: %s", W, tk_dist_rank(), msg);
        goto out;
    }
    const int64_t *l = tk_i64(idx);
    float *lsc = tk_f32(sc);
    for (int64_t c = 0; c < Q * k; c++) {
        bool has = ix->n > 0 && l[c] >= 0;
        gi[c] = has ? ix->offset + l[c] : -1;
        gp[c] = has ? ix->ids[l[c]] : -1;
        if (!has) lsc[c] = -INFINITY;
    }
    if (merge(W, Q, k, gi, gp, lsc, out_index ? tk_i64(out_index) : NULL, tk_i64(out_ids), tk_f32(out_scores), false) !=
        TK_OK)
        goto out;
    st = TK_OK;
    goto out;
oom: /* before the exchange: join it to say so, so no rank waits */
    merge(W, Q, k, NULL, NULL, NULL, NULL, NULL, NULL, true);
    tk_set_error("%s: rank %d: out of memory", W, tk_dist_rank());
out:
    free(lo);
    free(li);
    free(gi);
    free(gp);
    tk_tensor_release(idx);
    tk_tensor_release(sc);
    return st;
}

/* --- serving: the leader broadcasts each batch, every rank queries its shard --- */

/* The batch header the leader broadcasts: {Q (0: stop), k, D, exclusion ids (-1: no
 * exclusion lists)}; then the queries, then the exclusion offsets and ids. */
enum { HDR_Q, HDR_K, HDR_D, HDR_NEX, HDR_LEN };

/* The leader sends the header at once (no sleep: it has the data); the followers wait
 * for it sleeping between polls (tk_dist_bcast_idle). */
#define LEADER_POLL 0.0

tk_status tk_sharded_serve_query(tk_sharded_index *ix, const tk_tensor *queries, int64_t k, const int64_t *excl_offsets,
                                 const int64_t *excl_ids, tk_tensor *out_ids, tk_tensor *out_scores) {
    static const char *const W = "sharded_serve_query";
    if (ix && distributed() && tk_dist_rank() != 0)
        return tk_set_error("%s: only rank 0 leads (the other ranks run tk_sharded_serve_follow)", W), TK_ERROR;
    /* every check tk_sharded_index_query makes, before anything is sent: the followers
     * never see a batch the query would refuse */
    if (check_query(W, ix, queries, true, k, excl_offsets, excl_ids, out_ids, out_scores, NULL) != TK_OK)
        return TK_ERROR;
    int64_t Q = queries->shape[0], nex = excl_offsets ? excl_offsets[Q] : -1;
    if (distributed()) {
        int64_t hdr[HDR_LEN] = { Q, k, ix->dim, nex };
        if (tk_dist_bcast_idle(hdr, TK_I64, HDR_LEN, 0, LEADER_POLL) != TK_OK ||
            tk_dist_bcast((void *)tk_f32(queries), TK_F32, Q * ix->dim, 0) != TK_OK)
            return TK_ERROR;
        if (nex >= 0 && (tk_dist_bcast((void *)excl_offsets, TK_I64, Q + 1, 0) != TK_OK ||
                         (nex > 0 && tk_dist_bcast((void *)excl_ids, TK_I64, nex, 0) != TK_OK)))
            return TK_ERROR;
    }
    return tk_sharded_index_query(ix, queries, k, excl_offsets, excl_ids, out_ids, out_scores, NULL);
}

tk_status tk_sharded_serve_stop(tk_sharded_index *ix) {
    if (!ix) return tk_set_error("sharded_serve_stop: NULL index"), TK_ERROR;
    if (!distributed()) return TK_OK;
    if (tk_dist_rank() != 0) return tk_set_error("sharded_serve_stop: only rank 0 leads"), TK_ERROR;
    int64_t hdr[HDR_LEN] = { 0, 0, ix->dim, -1 };
    return tk_dist_bcast_idle(hdr, TK_I64, HDR_LEN, 0, LEADER_POLL);
}

tk_status tk_sharded_serve_follow(tk_sharded_index *ix, double poll) {
    static const char *const W = "sharded_serve_follow";
    if (!ix) return tk_set_error("%s: NULL index", W), TK_ERROR;
    if (!distributed() || tk_dist_rank() == 0)
        return tk_set_error("%s: only ranks other than 0 follow (rank 0 leads), under tk_dist_init", W), TK_ERROR;
    for (;;) {
        int64_t hdr[HDR_LEN];
        if (tk_dist_bcast_idle(hdr, TK_I64, HDR_LEN, 0, poll) != TK_OK) return TK_ERROR;
        int64_t Q = hdr[HDR_Q], k = hdr[HDR_K], nex = hdr[HDR_NEX];
        if (Q == 0) return TK_OK;
        if (Q < 0 || k < 1 || hdr[HDR_D] != ix->dim)
            return tk_set_error("%s: a batch of %lld queries of width %lld (this shard's width %lld), k %lld: the "
                                "leader and this rank disagree",
                                W, (long long)Q, (long long)hdr[HDR_D], (long long)ix->dim, (long long)k),
                   TK_ERROR;
        tk_tensor *q = tk_tensor_new_2d(TK_F32, Q, ix->dim);
        tk_tensor *ids = tk_tensor_new_2d(TK_I64, Q, k);
        tk_tensor *sc = tk_tensor_new_2d(TK_F32, Q, k);
        int64_t *eo = nex >= 0 ? malloc((size_t)(Q + 1) * sizeof *eo) : NULL;
        int64_t *ei = nex > 0 ? malloc((size_t)nex * sizeof *ei) : NULL;
        tk_status st = TK_ERROR;
        if (!q || !ids || !sc || (nex >= 0 && !eo) || (nex > 0 && !ei)) {
            tk_set_error("%s: out of memory for a batch of %lld queries", W, (long long)Q);
        } else if (tk_dist_bcast(tk_f32(q), TK_F32, Q * ix->dim, 0) == TK_OK &&
                   (nex < 0 || tk_dist_bcast(eo, TK_I64, Q + 1, 0) == TK_OK) &&
                   (nex <= 0 || tk_dist_bcast(ei, TK_I64, nex, 0) == TK_OK)) {
            /* the leader's result is what matters: a failure of the query is every
             * rank's alike (tk_sharded_index_query), and the leader reports it */
            tk_sharded_index_query(ix, q, k, eo, ei, ids, sc, NULL);
            st = TK_OK;
        }
        tk_tensor_release(q);
        tk_tensor_release(ids);
        tk_tensor_release(sc);
        free(eo);
        free(ei);
        if (st != TK_OK) return TK_ERROR;
    }
}
