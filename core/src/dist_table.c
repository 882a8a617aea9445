/* Row-sharded embedding tables (towerkit_dist.h, docs/distributed.md).
 *
 * Rank r of N holds rows [floor(r V / N), floor((r + 1) V / N)) of each table of V rows
 * (its shard, a heap tensor flagged TK_TENSOR_ROW_SHARD), and the optimizer holds state
 * for the shard only: a table's memory, with its moments, is divided by N. The shard is
 * the embeddings block's parameter, so the optimizer, which keys its state by the
 * parameter, updates it like any table.
 *
 * A step, per table: the embeddings block's forward hands the ids its features look up
 * to fetch(): the distinct ids (sorted) go to their owners (an all-to-all of counts, then
 * of ids), each owner brings the rows up to date (tk_tensor_sync_rows, the lazy = false
 * catch-up) and sends them back (an all-to-all of rows). The rows form a small heap table
 * [U, D] and the ids are replaced by their rows in it, so the ordinary lookup runs on it
 * (combiners, the tape and the sparse gradient unchanged). After backward,
 * tk_dist_tables_sync sends each rank's coalesced gradient rows to their owners (an
 * all-to-all); the owner appends what it receives in rank order, coalesces (the tape's
 * stable sort: duplicates summed in rank order) and divides by N. These are the sums the
 * replicated exchange (dist.c, sync_sparse) forms, in the same order, so both schemes
 * give the same bits. tk_dist_sync_grads skips the shards (dist.c's collect).
 *
 * Everything a whole table is needed for (saving, evaluating, exporting, reading the
 * parameters) goes through tk_dist_tables_gather, which puts the whole tables back into
 * the blocks; the next tk_dist_tables_shard takes the rows back into the shards (whose
 * optimizer state was kept). Only the thread that called tk_dist_init runs any of this
 * (the training forward and the step). */
#include "towerkit_dist.h"

#include "block_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fetched {
    tk_tensor *rows; /* [U, D], retained */
    int64_t *uniq;   /* the U ids, ascending */
    int64_t n;
} fetched;

typedef struct row_shard {
    tk_tensor *shard; /* retained */
    tk_tensor *full;  /* retained while the whole table is in the blocks (gathered), else NULL */
    int64_t rows, dim;
    int64_t *bounds; /* size + 1 row bounds: rank r owns [bounds[r], bounds[r + 1]) */
    fetched *f;      /* this step's fetches, in forward order */
    int32_t nf, capf;
    uint64_t gen; /* the walk that last saw it */
} row_shard;

/* Every table sharded in this process (tables stay sharded for the process's life). */
static struct {
    row_shard **s;
    int64_t n, cap;
    uint64_t gen;
} reg;

static row_shard *find(const tk_tensor *t) {
    for (int64_t i = 0; i < reg.n; i++)
        if (reg.s[i]->shard == t || (reg.s[i]->full && reg.s[i]->full == t)) return reg.s[i];
    return NULL;
}

static void clear_fetches(row_shard *s) {
    for (int32_t i = 0; i < s->nf; i++) {
        tk_tensor_release(s->f[i].rows);
        free(s->f[i].uniq);
    }
    s->nf = 0;
}

static int owner_of(const row_shard *s, int64_t id, int from) {
    int r = from;
    while (id >= s->bounds[r + 1]) r++;
    return r;
}

static int64_t lo_of(const row_shard *s) { return s->bounds[tk_dist_rank()]; }

/* --- the forward: the rows a batch reads, fetched from their owners --- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t find_row(const int64_t *uniq, int64_t n, int64_t id) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (uniq[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static tk_tensor *fetch(void *ud, tk_ctx *ctx, const char *table, int32_t n, tk_tensor *const *ids,
                        tk_tensor **remapped) {
    row_shard *s = ud;
    int S = tk_dist_size();
    int64_t total = 0, D = s->dim;
    for (int32_t i = 0; i < n; i++) {
        const int64_t *v = tk_i64(ids[i]);
        for (int64_t p = 0; p < ids[i]->numel; p++)
            if (v[p] < 0 || v[p] >= s->rows)
                return tk_ctx_fail(ctx, "embedding table '%s': id %lld out of range [0, %lld) at position %lld", table,
                                   (long long)v[p], (long long)s->rows, (long long)p);
        total += ids[i]->numel;
    }
    if (s->nf == s->capf) {
        int32_t cap = s->capf ? 2 * s->capf : 4;
        fetched *f = realloc(s->f, (size_t)cap * sizeof *f);
        if (!f) return tk_ctx_fail(ctx, "embedding table '%s': out of memory", table);
        s->f = f;
        s->capf = cap;
    }
    int64_t *uniq = malloc((size_t)(total ? total : 1) * sizeof *uniq);
    int64_t *counts = malloc((size_t)4 * S * sizeof *counts); /* ids out, ids in, then x D */
    int64_t *req = NULL, *local = NULL;
    float *out = NULL;
    tk_tensor *rows = NULL;
    if (!uniq || !counts) goto oom;
    int64_t U = 0;
    for (int32_t i = 0; i < n; i++) {
        memcpy(uniq + U, tk_i64(ids[i]), (size_t)ids[i]->numel * sizeof *uniq);
        U += ids[i]->numel;
    }
    qsort(uniq, (size_t)U, sizeof *uniq, cmp_i64);
    int64_t u = 0;
    for (int64_t k = 0; k < U; k++)
        if (u == 0 || uniq[k] != uniq[u - 1]) uniq[u++] = uniq[k];
    U = u;
    int64_t *sendc = counts, *recvc = counts + S, *sendr = counts + 2 * S, *recvr = counts + 3 * S;
    memset(sendc, 0, (size_t)S * sizeof *sendc);
    for (int64_t k = 0, r = 0; k < U; k++) {
        r = owner_of(s, uniq[k], (int)r);
        sendc[r]++;
    }
    if (tk_dist_alltoall_count(sendc, recvc) != TK_OK) goto mpi;
    int64_t R = 0;
    for (int r = 0; r < S; r++) R += recvc[r];
    req = malloc((size_t)(R ? R : 1) * sizeof *req);
    local = malloc((size_t)(R ? R : 1) * sizeof *local);
    out = malloc((size_t)(R ? R * D : 1) * sizeof *out);
    rows = tk_tensor_new_2d(TK_F32, U ? U : 1, D);
    if (!req || !local || !out || !rows) goto oom;
    if (tk_dist_alltoallv(uniq, sendc, TK_I64, req, recvc) != TK_OK) goto mpi;
    int64_t lo = lo_of(s), mine = s->shard->shape[0];
    for (int64_t k = 0; k < R; k++) {
        local[k] = req[k] - lo;
        if (local[k] < 0 || local[k] >= mine) {
            tk_ctx_fail(ctx, "embedding table '%s': rank %d was sent id %lld, which it does not hold", table,
                        tk_dist_rank(), (long long)req[k]);
            goto fail;
        }
    }
    tk_tensor_sync_rows(s->shard, R, local); /* steps an optimizer with lazy = false owes them */
    const float *sv = tk_f32(s->shard);
    for (int64_t k = 0; k < R; k++) memcpy(out + k * D, sv + local[k] * D, (size_t)D * sizeof *out);
    for (int r = 0; r < S; r++) {
        sendr[r] = recvc[r] * D; /* rows back to who asked */
        recvr[r] = sendc[r] * D;
    }
    if (tk_dist_alltoallv(out, sendr, TK_F32, tk_f32(rows), recvr) != TK_OK) goto mpi;
    rows->flags |= s->shard->flags & TK_TENSOR_REQUIRES_GRAD;
    for (int32_t i = 0; i < n; i++) {
        tk_tensor *m = tk_ctx_empty(ctx, TK_I64, ids[i]->ndim, ids[i]->shape);
        if (!m) goto fail;
        const int64_t *v = tk_i64(ids[i]);
        int64_t *w = tk_i64(m);
        for (int64_t p = 0; p < ids[i]->numel; p++) w[p] = find_row(uniq, U, v[p]);
        remapped[i] = m;
    }
    s->f[s->nf++] = (fetched){ rows, uniq, U };
    free(counts);
    free(req);
    free(local);
    free(out);
    return rows;
oom:
    tk_ctx_fail(ctx, "embedding table '%s': out of memory", table);
    goto fail;
mpi:
    tk_ctx_fail(ctx, "embedding table '%s': %s", table, tk_last_error());
fail:
    free(uniq);
    free(counts);
    free(req);
    free(local);
    free(out);
    tk_tensor_release(rows);
    return NULL;
}

/* --- walking a model's embeddings blocks --- */

typedef tk_status (*table_fn)(void *ud, tk_block *b, int32_t i);

static tk_status walk(tk_block *b, table_fn fn, void *ud) {
    if (!b) return TK_OK;
    if (b->kind == &tk_kind_embeddings)
        for (int32_t i = 0; i < b->nparams; i++)
            if (fn(ud, b, i) != TK_OK) return TK_ERROR;
    for (int32_t c = 0; c < b->nchildren; c++)
        if (walk(b->children[c], fn, ud) != TK_OK) return TK_ERROR;
    if (walk(b->pre, fn, ud) != TK_OK) return TK_ERROR;
    return walk(b->post, fn, ud);
}

static void set_param(tk_block *b, int32_t i, tk_tensor *t) {
    tk_tensor_retain(t);
    tk_tensor_release(b->params[i]);
    b->params[i] = t;
}

/* --- sharding: the blocks read their tables through fetch --- */

static row_shard *shard_new(tk_tensor *full) {
    int S = tk_dist_size(), r = tk_dist_rank();
    row_shard *s = calloc(1, sizeof *s);
    if (s) s->bounds = malloc((size_t)(S + 1) * sizeof *s->bounds);
    if (!s || !s->bounds) goto oom;
    s->rows = full->shape[0];
    s->dim = full->shape[1];
    for (int k = 0; k <= S; k++) s->bounds[k] = s->rows * k / S;
    int64_t lo = s->bounds[r], cnt = s->bounds[r + 1] - lo;
    s->shard = tk_tensor_new_2d(TK_F32, cnt, s->dim);
    if (!s->shard) goto fail;
    tk_tensor_sync(full);
    memcpy(s->shard->data, tk_f32(full) + lo * s->dim, (size_t)(cnt * s->dim) * sizeof(float));
    s->shard->flags |= TK_TENSOR_ROW_SHARD | (full->flags & TK_TENSOR_REQUIRES_GRAD);
    /* kept until the walk ends: another block sharing the table finds the shard by it */
    tk_tensor_retain(full);
    s->full = full;
    if (reg.n == reg.cap) {
        int64_t cap = reg.cap ? 2 * reg.cap : 8;
        row_shard **a = realloc(reg.s, (size_t)cap * sizeof *a);
        if (!a) goto oom;
        reg.s = a;
        reg.cap = cap;
    }
    reg.s[reg.n++] = s;
    return s;
oom:
    tk_set_error("distributed: sharding tables: out of memory");
fail:
    if (s) {
        tk_tensor_release(s->shard);
        free(s->bounds);
        free(s);
    }
    return NULL;
}

static tk_status shard_one(void *ud, tk_block *b, int32_t i) {
    (void)ud;
    tk_tensor *t = b->params[i];
    if (t->dtype != TK_F32 || t->ndim != 2)
        return tk_set_error("distributed: table '%s' of block '%s' is not a 2-D float32 tensor", b->param_names[i],
                            b->name),
               TK_ERROR;
    row_shard *s = find(t);
    if (s && s->gen != reg.gen) {
        clear_fetches(s);
        if (s->full) { /* gathered since: its rows back into the shard (they may have been set) */
            int64_t lo = lo_of(s);
            tk_tensor_sync(s->full);
            memcpy(s->shard->data, tk_f32(s->full) + lo * s->dim, (size_t)s->shard->numel * sizeof(float));
        }
    }
    if (!s && !(s = shard_new(t))) return TK_ERROR;
    s->gen = reg.gen;
    if (b->params[i] != s->shard) set_param(b, i, s->shard);
    tk_table_fetch f = { fetch, s };
    return tk_embeddings_set_fetch(b, i, &f);
}

static tk_status drop_full(void *ud, tk_block *b, int32_t i) {
    (void)ud;
    row_shard *s = find(b->params[i]);
    if (s && s->full) {
        tk_tensor_release(s->full);
        s->full = NULL;
    }
    return TK_OK;
}

static tk_status need_ranks(const char *what) {
    if (tk_dist_initialized() && tk_dist_size() > 1) return TK_OK;
    return tk_set_error("distributed: %s: row-sharded tables need MPI with more than one rank (mpirun -np N, N > 1)",
                        what),
           TK_ERROR;
}

tk_status tk_dist_tables_shard(tk_block *root) {
    if (!root) return tk_set_error("distributed: tables_shard: NULL block"), TK_ERROR;
    if (need_ranks("tables_shard") != TK_OK) return TK_ERROR;
    reg.gen++;
    if (walk(root, shard_one, NULL) != TK_OK) return TK_ERROR;
    return walk(root, drop_full, NULL);
}

/* --- gathering: the whole tables back into the blocks --- */

static tk_status gather_one(void *ud, tk_block *b, int32_t i) {
    (void)ud;
    row_shard *s = find(b->params[i]);
    if (!s) return TK_OK; /* a whole table already */
    if (s->gen != reg.gen) {
        s->gen = reg.gen;
        clear_fetches(s);
        if (!s->full) {
            int S = tk_dist_size();
            int64_t *counts = malloc((size_t)S * sizeof *counts);
            tk_tensor *full = tk_tensor_new_2d(TK_F32, s->rows, s->dim);
            if (!counts || !full) {
                free(counts);
                tk_tensor_release(full);
                return tk_set_error("distributed: gathering table '%s': out of memory", b->param_names[i]), TK_ERROR;
            }
            for (int r = 0; r < S; r++) counts[r] = (s->bounds[r + 1] - s->bounds[r]) * s->dim;
            tk_tensor_sync(s->shard); /* every row up to the optimizer's step */
            tk_status st = tk_dist_allgatherv(s->shard->data, TK_F32, full->data, counts);
            free(counts);
            if (st != TK_OK) {
                tk_tensor_release(full);
                return TK_ERROR;
            }
            full->flags |= s->shard->flags & TK_TENSOR_REQUIRES_GRAD;
            s->full = full;
        }
    }
    if (s->full && b->params[i] != s->full) set_param(b, i, s->full);
    return tk_embeddings_set_fetch(b, i, NULL);
}

tk_status tk_dist_tables_gather(tk_block *root) {
    if (!root) return tk_set_error("distributed: tables_gather: NULL block"), TK_ERROR;
    reg.gen++;
    return walk(root, gather_one, NULL);
}

/* --- after backward: the gradient rows to their owners --- */

typedef struct sync_state {
    tk_ctx *ctx;
} sync_state;

/* This rank's coalesced (id, gradient row) pairs of s's fetches, ascending ids, in
 * malloc'd *ids / *vals; the fetches' own gradients are emptied. */
static tk_status local_pairs(tk_ctx *ctx, row_shard *s, int64_t **ids_out, float **vals_out, int64_t *n_out) {
    int64_t D = s->dim, total = 0;
    tk_sparse_grad **sg = malloc((size_t)(s->nf ? s->nf : 1) * sizeof *sg);
    if (!sg) return TK_ERROR;
    for (int32_t k = 0; k < s->nf; k++) {
        sg[k] = tk_ctx_sparse_grad(ctx, s->f[k].rows); /* coalesced: ascending rows, so ascending ids */
        total += sg[k] ? sg[k]->n : 0;
    }
    int64_t *ids = malloc((size_t)(total ? total : 1) * sizeof *ids);
    float *vals = malloc((size_t)(total ? total * D : 1) * sizeof *vals);
    int64_t *pos = malloc((size_t)(total ? total : 1) * sizeof *pos);
    if (!ids || !vals || !pos) {
        free(sg);
        free(ids);
        free(vals);
        free(pos);
        return TK_ERROR;
    }
    int64_t n = 0;
    for (int32_t k = 0; k < s->nf; k++) {
        if (!sg[k]) continue;
        for (int64_t j = 0; j < sg[k]->n; j++) {
            ids[n] = s->f[k].uniq[sg[k]->rows[j]];
            memcpy(vals + n * D, sg[k]->values + j * D, (size_t)D * sizeof *vals);
            n++;
        }
        sg[k]->n = 0; /* moved: nothing else reads the fetched rows' gradient */
    }
    free(sg);
    if (s->nf > 1) { /* several forwards (sampled negatives): merge, duplicates summed in forward order */
        for (int64_t k = 0; k < n; k++) pos[k] = k;
        /* insertion sort by (id, position): stable; n is a few thousand at most per step */
        for (int64_t k = 1; k < n; k++) {
            int64_t p = pos[k], j = k;
            while (j > 0 && ids[pos[j - 1]] > ids[p]) {
                pos[j] = pos[j - 1];
                j--;
            }
            pos[j] = p;
        }
        int64_t *ids2 = malloc((size_t)(n ? n : 1) * sizeof *ids2);
        float *vals2 = malloc((size_t)(n ? n * D : 1) * sizeof *vals2);
        if (!ids2 || !vals2) {
            free(ids2);
            free(vals2);
            free(ids);
            free(vals);
            free(pos);
            return TK_ERROR;
        }
        int64_t m = 0;
        for (int64_t k = 0; k < n; k++) {
            const float *v = vals + pos[k] * D;
            if (m > 0 && ids2[m - 1] == ids[pos[k]]) {
                for (int64_t j = 0; j < D; j++) vals2[(m - 1) * D + j] += v[j];
            } else {
                ids2[m] = ids[pos[k]];
                memcpy(vals2 + m * D, v, (size_t)D * sizeof *vals2);
                m++;
            }
        }
        free(ids);
        free(vals);
        ids = ids2;
        vals = vals2;
        n = m;
    }
    free(pos);
    *ids_out = ids;
    *vals_out = vals;
    *n_out = n;
    return TK_OK;
}

static tk_status sync_one(void *ud, tk_block *b, int32_t i) {
    sync_state *st = ud;
    tk_ctx *ctx = st->ctx;
    tk_tensor *t = b->params[i];
    if (!(t->flags & TK_TENSOR_ROW_SHARD)) return TK_OK;
    row_shard *s = find(t);
    if (!s || s->gen == reg.gen) return TK_OK; /* a whole table, or seen already (shared) */
    s->gen = reg.gen;
    int S = tk_dist_size();
    int64_t D = s->dim, n = 0, *ids = NULL, *counts = NULL, *rids = NULL;
    float *vals = NULL, *rvals = NULL;
    tk_status ret = TK_ERROR;
    bool fetched_any = s->nf > 0; /* the same on every rank: every rank runs the same forwards */
    if (local_pairs(ctx, s, &ids, &vals, &n) != TK_OK) goto oom;
    counts = malloc((size_t)4 * S * sizeof *counts);
    if (!counts) goto oom;
    int64_t *sendc = counts, *recvc = counts + S, *sendv = counts + 2 * S, *recvv = counts + 3 * S;
    memset(sendc, 0, (size_t)S * sizeof *sendc);
    for (int64_t k = 0, r = 0; k < n; k++) {
        r = owner_of(s, ids[k], (int)r);
        sendc[r]++;
    }
    if (tk_dist_alltoall_count(sendc, recvc) != TK_OK) goto out;
    int64_t R = 0;
    for (int r = 0; r < S; r++) {
        R += recvc[r];
        sendv[r] = sendc[r] * D;
        recvv[r] = recvc[r] * D;
    }
    rids = malloc((size_t)(R ? R : 1) * sizeof *rids);
    rvals = malloc((size_t)(R ? R * D : 1) * sizeof *rvals);
    if (!rids || !rvals) goto oom;
    if (tk_dist_alltoallv(ids, sendc, TK_I64, rids, recvc) != TK_OK ||
        tk_dist_alltoallv(vals, sendv, TK_F32, rvals, recvv) != TK_OK)
        goto out;
    if (!fetched_any) {
        ret = TK_OK;
        goto out;
    }
    tk_tensor *a = tk_ctx_input_rows(ctx, s->shard);
    if (!a) goto oom;
    int64_t lo = lo_of(s);
    for (int64_t k = 0; k < R; k++) rids[k] -= lo;
    if (a->sparse) a->sparse->n = 0;
    /* in rank order (what the all-to-all delivered): the coalesce sums duplicates so */
    tk_ctx_sparse_reserve(ctx, a, 0, rids); /* a gradient, empty when no rank read a row of this shard */
    if (!a->sparse || (R && tk_ctx_sparse_append(ctx, a, R, rids, rvals) != TK_OK)) goto oom;
    tk_sparse_grad *u = tk_ctx_sparse_grad(ctx, s->shard);
    if (!u) goto oom;
    const float size = (float)S;
    for (int64_t k = 0; k < u->n * u->dim; k++) u->values[k] /= size;
    ret = TK_OK;
    goto out;
oom:
    tk_set_error("distributed: tables_sync: out of memory");
out:
    free(ids);
    free(vals);
    free(counts);
    free(rids);
    free(rvals);
    return ret;
}

tk_status tk_dist_tables_sync(tk_ctx *ctx, tk_block *root) {
    if (!ctx || !root) return tk_set_error("distributed: tables_sync: NULL context or block"), TK_ERROR;
    if (tk_ctx_failed(ctx)) return tk_set_error("distributed: tables_sync: the context has an error"), TK_ERROR;
    if (need_ranks("tables_sync") != TK_OK) return TK_ERROR;
    reg.gen++;
    sync_state st = { ctx };
    return walk(root, sync_one, &st);
}

bool tk_dist_table_shard_info(const tk_tensor *t, int64_t *lo, int64_t *count, int64_t *rows) {
    const row_shard *s = t ? find(t) : NULL;
    if (!s) return false;
    if (lo) *lo = lo_of(s);
    if (count) *count = s->shard->shape[0];
    if (rows) *rows = s->rows;
    return true;
}
