/* Row-sharded embedding tables (towerkit_dist.h, docs/distributed.md).
 *
 * Rank r of N holds rows [floor(r V / N), floor((r + 1) V / N)) of each table of V rows
 * (its shard, a heap tensor flagged TK_TENSOR_ROW_SHARD), and the optimizer holds state
 * for the shard only: a table's memory, with its moments, is divided by N. The shard is
 * the embeddings block's parameter, so the optimizer, which keys its state by the
 * parameter, updates it like any table.
 *
 * A step, per table: the ids the features look up (every embeddings block's, gathered
 * from the batch by tk_dist_tables_prefetch before the forward, or handed to fetch() by
 * a block's forward): the distinct ids (sorted) go to their owners (an all-to-all of
 * counts, then of ids), each owner brings the rows up to date (tk_tensor_sync_rows, the
 * lazy = false catch-up) and sends them back (an all-to-all of rows). The rows form a small heap table
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

#include <limits.h>
#include <math.h>
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

/* Every table sharded in this process; an entry goes when nothing but this registry
 * holds its tensors (its model was freed: prune). */
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

/* --- exchanging lists of rows with their owners, several tables at once --- */

/* T tables' lists of ascending ids, each cut by owner: list k's ids for rank r are
 * [start[k S + r], start[k S + r] + sendc[r T + k]). One all-to-all of the counts
 * (T a rank), then the ids and rows of all tables go in one all-to-all each, laid out
 * rank by rank and, within a rank, table by table. */
typedef struct xchg {
    int S, T;
    int64_t *sendc, *recvc; /* [S T]: to / from rank r, table k at r T + k */
    int64_t *start;         /* [T S] */
    int64_t *tot;           /* [4 S]: ids to, ids from, floats to, floats from each rank */
} xchg;

static void xchg_free(xchg *x) {
    free(x->sendc);
    free(x->start);
    free(x->tot);
}

static tk_status xchg_plan(xchg *x, int T, row_shard *const *sh, int64_t *const *ids, const int64_t *n) {
    int S = tk_dist_size();
    *x = (xchg){ S, T, NULL, NULL, NULL, NULL };
    x->sendc = calloc((size_t)2 * S * (T ? T : 1), sizeof *x->sendc);
    x->start = calloc((size_t)S * (T ? T : 1), sizeof *x->start);
    x->tot = calloc((size_t)4 * S, sizeof *x->tot);
    if (!x->sendc || !x->start || !x->tot) return tk_set_error("distributed: tables: out of memory"), TK_ERROR;
    x->recvc = x->sendc + (size_t)S * T;
    for (int k = 0; k < T; k++) {
        int r = 0;
        x->start[k * S] = 0;
        for (int64_t j = 0; j < n[k]; j++) {
            int o = owner_of(sh[k], ids[k][j], r);
            while (r < o) x->start[k * S + ++r] = j;
            x->sendc[r * T + k]++;
        }
        while (r < S - 1) x->start[k * S + ++r] = n[k];
    }
    if (T > 0 && tk_dist_alltoall_counts(x->sendc, x->recvc, T) != TK_OK) return TK_ERROR;
    for (int r = 0; r < S; r++)
        for (int k = 0; k < T; k++) {
            x->tot[r] += x->sendc[r * T + k];
            x->tot[S + r] += x->recvc[r * T + k];
            x->tot[2 * S + r] += x->sendc[r * T + k] * sh[k]->dim;
            x->tot[3 * S + r] += x->recvc[r * T + k] * sh[k]->dim;
        }
    return TK_OK;
}

static int64_t sum_of(const int64_t *v, int S) {
    int64_t t = 0;
    for (int r = 0; r < S; r++) t += v[r];
    return t;
}

/* The ids (and, with vals, their rows of dim D_k) of every list to their owners: *rids
 * and *rvals get what this rank receives, rank by rank, table by table. */
static tk_status xchg_send(const xchg *x, row_shard *const *sh, int64_t *const *ids, float *const *vals, int64_t **rids,
                           float **rvals) {
    int S = x->S, T = x->T;
    int64_t nid = sum_of(x->tot, S), nv = sum_of(x->tot + 2 * S, S);
    int64_t *sid = malloc((size_t)(nid ? nid : 1) * sizeof *sid);
    float *sv = vals ? malloc((size_t)(nv ? nv : 1) * sizeof *sv) : NULL;
    *rids = malloc((size_t)(sum_of(x->tot + S, S) ? sum_of(x->tot + S, S) : 1) * sizeof **rids);
    if (vals) *rvals = malloc((size_t)(sum_of(x->tot + 3 * S, S) ? sum_of(x->tot + 3 * S, S) : 1) * sizeof **rvals);
    tk_status st = TK_ERROR;
    if (!sid || (vals && !sv) || !*rids || (vals && !*rvals)) {
        tk_set_error("distributed: tables: out of memory");
        goto out;
    }
    int64_t ai = 0, av = 0;
    for (int r = 0; r < S; r++)
        for (int k = 0; k < T; k++) {
            int64_t c = x->sendc[r * T + k], from = x->start[k * S + r], D = sh[k]->dim;
            if (c == 0) continue; /* a list may be NULL when empty (local_pairs) */
            memcpy(sid + ai, ids[k] + from, (size_t)c * sizeof *sid);
            ai += c;
            if (vals) {
                memcpy(sv + av, vals[k] + from * D, (size_t)(c * D) * sizeof *sv);
                av += c * D;
            }
        }
    if (tk_dist_alltoallv(sid, x->tot, TK_I64, *rids, x->tot + S) != TK_OK) goto out;
    if (vals && tk_dist_alltoallv(sv, x->tot + 2 * S, TK_F32, *rvals, x->tot + 3 * S) != TK_OK) goto out;
    st = TK_OK;
out:
    free(sid);
    free(sv);
    return st;
}

/* --- the forward: the rows a batch reads, fetched from their owners --- */

/* The distinct ids of an item's lists, ascending (malloc'd), checked against the table. */
static int64_t *distinct_ids(tk_ctx *ctx, const row_shard *s, const tk_table_fetch_item *it, int64_t *U) {
    int64_t total = 0;
    for (int32_t i = 0; i < it->n; i++) {
        const int64_t *v = tk_i64(it->ids[i]);
        for (int64_t p = 0; p < it->ids[i]->numel; p++)
            if (v[p] < 0 || v[p] >= s->rows)
                return tk_ctx_fail(ctx, "embedding table '%s': id %lld out of range [0, %lld) at position %lld",
                                   it->table, (long long)v[p], (long long)s->rows, (long long)p);
        total += it->ids[i]->numel;
    }
    int64_t *uniq = malloc((size_t)(total ? total : 1) * sizeof *uniq);
    if (!uniq) return tk_ctx_fail(ctx, "embedding table '%s': out of memory", it->table);
    int64_t n = 0;
    for (int32_t i = 0; i < it->n; i++) {
        memcpy(uniq + n, tk_i64(it->ids[i]), (size_t)it->ids[i]->numel * sizeof *uniq);
        n += it->ids[i]->numel;
    }
    qsort(uniq, (size_t)n, sizeof *uniq, tk_cmp_i64);
    int64_t u = 0;
    for (int64_t k = 0; k < n; k++)
        if (u == 0 || uniq[k] != uniq[u - 1]) uniq[u++] = uniq[k];
    *U = u;
    return uniq;
}

/* The rows of T items' tables from their owners, each item's ids replaced by rows of its
 * fetched table (a collective). */
static tk_status exchange(tk_ctx *ctx, int32_t T, tk_table_fetch_item *items) {
    int S = tk_dist_size();
    row_shard **sh = calloc((size_t)T, sizeof *sh);
    int64_t **uniq = calloc((size_t)T, sizeof *uniq), *U = calloc((size_t)T, sizeof *U);
    tk_tensor **rows = calloc((size_t)T, sizeof *rows);
    int64_t *req = NULL;
    float *out = NULL, *back = NULL;
    xchg x = { 0 };
    tk_status st = TK_ERROR;
    if (!sh || !uniq || !U || !rows) {
        tk_ctx_fail(ctx, "embedding tables: out of memory");
        goto out;
    }
    for (int32_t k = 0; k < T; k++) {
        sh[k] = items[k].ud;
        if (!(uniq[k] = distinct_ids(ctx, sh[k], &items[k], &U[k]))) goto out;
        if (sh[k]->nf == sh[k]->capf) {
            int32_t cap = sh[k]->capf ? 2 * sh[k]->capf : 4;
            fetched *f = realloc(sh[k]->f, (size_t)cap * sizeof *f);
            if (!f) {
                tk_ctx_fail(ctx, "embedding table '%s': out of memory", items[k].table);
                goto out;
            }
            sh[k]->f = f;
            sh[k]->capf = cap;
        }
        rows[k] = tk_tensor_new_2d(TK_F32, U[k] ? U[k] : 1, sh[k]->dim);
        if (!rows[k]) {
            tk_ctx_fail(ctx, "embedding table '%s': out of memory", items[k].table);
            goto out;
        }
        rows[k]->flags |= sh[k]->shard->flags & TK_TENSOR_REQUIRES_GRAD;
    }
    /* the ids to their owners */
    if (xchg_plan(&x, T, sh, uniq, U) != TK_OK || xchg_send(&x, sh, uniq, NULL, &req, NULL) != TK_OK) {
        tk_ctx_fail(ctx, "embedding tables: %s", tk_last_error());
        goto out;
    }
    /* the owner's rows back, in the order asked (brought up to date first) */
    out = malloc((size_t)(sum_of(x.tot + 3 * S, S) ? sum_of(x.tot + 3 * S, S) : 1) * sizeof *out);
    back = malloc((size_t)(sum_of(x.tot + 2 * S, S) ? sum_of(x.tot + 2 * S, S) : 1) * sizeof *back);
    if (!out || !back) {
        tk_ctx_fail(ctx, "embedding tables: out of memory");
        goto out;
    }
    int64_t at = 0, av = 0;
    for (int r = 0; r < S; r++)
        for (int32_t k = 0; k < T; k++) {
            int64_t c = x.recvc[r * T + k], lo = lo_of(sh[k]), mine = sh[k]->shard->shape[0], D = sh[k]->dim;
            int64_t *local = req + at;
            for (int64_t j = 0; j < c; j++) {
                local[j] -= lo;
                if (local[j] < 0 || local[j] >= mine) {
                    tk_ctx_fail(ctx, "embedding table '%s': rank %d was sent id %lld, which it does not hold",
                                items[k].table, tk_dist_rank(), (long long)(local[j] + lo));
                    goto out;
                }
            }
            tk_tensor_sync_rows(sh[k]->shard, c, local); /* steps an optimizer with lazy = false owes them */
            const float *sv = tk_f32(sh[k]->shard);
            for (int64_t j = 0; j < c; j++) memcpy(out + av + j * D, sv + local[j] * D, (size_t)D * sizeof *out);
            at += c;
            av += c * D;
        }
    if (tk_dist_alltoallv(out, x.tot + 3 * S, TK_F32, back, x.tot + 2 * S) != TK_OK) {
        tk_ctx_fail(ctx, "embedding tables: %s", tk_last_error());
        goto out;
    }
    av = 0;
    for (int r = 0; r < S; r++)
        for (int32_t k = 0; k < T; k++) {
            int64_t c = x.sendc[r * T + k], D = sh[k]->dim;
            memcpy(tk_f32(rows[k]) + x.start[k * S + r] * D, back + av, (size_t)(c * D) * sizeof *back);
            av += c * D;
        }
    /* the features' ids as rows of the fetched tables */
    for (int32_t k = 0; k < T; k++) {
        for (int32_t i = 0; i < items[k].n; i++) {
            tk_tensor *ids = items[k].ids[i];
            tk_tensor *m = tk_ctx_empty(ctx, TK_I64, ids->ndim, ids->shape);
            if (!m) goto out;
            const int64_t *v = tk_i64(ids);
            int64_t *w = tk_i64(m);
            for (int64_t p = 0; p < ids->numel; p++) w[p] = tk_lower_bound_i64(uniq[k], U[k], v[p]);
            items[k].ids[i] = m;
        }
    }
    for (int32_t k = 0; k < T; k++) {
        items[k].rows = rows[k];
        sh[k]->f[sh[k]->nf++] = (fetched){ rows[k], uniq[k], U[k] };
        rows[k] = NULL;
        uniq[k] = NULL;
    }
    st = TK_OK;
out:
    for (int32_t k = 0; uniq && rows && k < T; k++) {
        free(uniq[k]);
        tk_tensor_release(rows[k]);
    }
    free(sh);
    free(uniq);
    free(U);
    free(rows);
    free(req);
    free(out);
    free(back);
    xchg_free(&x);
    return st;
}

/* --- fetching before the forward: both towers in one exchange --- */

/* A block's items fetched by tk_dist_tables_prefetch, for its forward to take: the ids
 * it was given (to recognise the forward's), what replaced them, and the rows. Cleared
 * by tk_dist_tables_shard (the next step). */
typedef struct prefetched {
    int32_t n, nlists;
    void **ud;
    int32_t *nl;
    tk_tensor **orig, **remapped, **rows; /* remapped: arena tensors of the step's context */
    bool used;
} prefetched;

static struct {
    prefetched *p;
    int32_t n, cap;
} pre;

static void clear_prefetched(void) {
    for (int32_t g = 0; g < pre.n; g++) {
        free(pre.p[g].ud);
        free(pre.p[g].nl);
        free(pre.p[g].orig);
    }
    pre.n = 0;
}

/* Whether the forward's items are a prefetched block's (the same tables and the very
 * same id tensors): then they take its rows and ids. The same answer on every rank, as
 * every rank runs the same program on its batch. */
static bool take_prefetched(int32_t T, tk_table_fetch_item *items) {
    for (int32_t g = 0; g < pre.n; g++) {
        prefetched *p = &pre.p[g];
        if (p->used || p->n != T) continue;
        bool same = true;
        for (int32_t k = 0, at = 0; same && k < T; k++) {
            same = p->ud[k] == items[k].ud && p->nl[k] == items[k].n;
            for (int32_t i = 0; same && i < items[k].n; i++) same = p->orig[at + i] == items[k].ids[i];
            at += p->nl[k];
        }
        if (!same) continue;
        for (int32_t k = 0, at = 0; k < T; k++) {
            for (int32_t i = 0; i < items[k].n; i++) items[k].ids[i] = p->remapped[at + i];
            items[k].rows = p->rows[k];
            at += p->nl[k];
        }
        p->used = true;
        return true;
    }
    return false;
}

static tk_status fetch(tk_ctx *ctx, int32_t T, tk_table_fetch_item *items) {
    if (!tk_dist_on_main_thread()) /* a pool thread (embedding a catalogue) may not call MPI */
        return tk_ctx_fail(ctx,
                           "embedding table '%s' is row-sharded over the ranks and is read here outside the thread "
                           "that started MPI; gather the tables first (model:gather_tables(), tk_dist_tables_gather)",
                           T > 0 ? items[0].table : "?"),
               TK_ERROR;
    if (take_prefetched(T, items)) return TK_OK;
    return exchange(ctx, T, items);
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

/* An entry for a table of `rows` x `dim`, registered; its shard is set by the caller. */
static row_shard *shard_alloc(int64_t rows, int64_t dim) {
    int S = tk_dist_size();
    row_shard *s = calloc(1, sizeof *s);
    if (s) s->bounds = malloc((size_t)(S + 1) * sizeof *s->bounds);
    if (!s || !s->bounds) goto oom;
    s->rows = rows;
    s->dim = dim;
    for (int k = 0; k <= S; k++) s->bounds[k] = s->rows * k / S;
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
    if (s) free(s->bounds);
    free(s);
    return NULL;
}

/* A whole table's entry: this rank's rows copied into a new shard. */
static row_shard *shard_new(tk_tensor *full) {
    int64_t rows = full->shape[0], dim = full->shape[1];
    int S = tk_dist_size(), r = tk_dist_rank();
    int64_t lo = rows * r / S, cnt = rows * (r + 1) / S - lo;
    tk_tensor *shard = tk_tensor_new_2d(TK_F32, cnt, dim);
    if (!shard) return NULL;
    tk_tensor_sync(full);
    memcpy(shard->data, tk_f32(full) + lo * dim, (size_t)(cnt * dim) * sizeof(float));
    shard->flags |= TK_TENSOR_ROW_SHARD | (full->flags & TK_TENSOR_REQUIRES_GRAD);
    row_shard *s = shard_alloc(rows, dim);
    if (!s) {
        tk_tensor_release(shard);
        return NULL;
    }
    s->shard = shard;
    /* kept until the walk ends: another block sharing the table finds the shard by it */
    tk_tensor_retain(full);
    s->full = full;
    return s;
}

/* A table built as this rank's rows (tk_embeddings_set_row_part): the parameter is the
 * shard, no whole table ever made. */
static row_shard *shard_adopt(tk_block *b, int32_t i) {
    tk_tensor *t = b->params[i];
    int32_t part = 0, parts = 1;
    int64_t rows = 0;
    int S = tk_dist_size(), r = tk_dist_rank();
    if (!tk_embeddings_row_part(b, i, &part, &parts, &rows) || parts != S || part != r)
        return tk_set_error(
                   "distributed: table '%s' of block '%s' was built as part %d of %d of its rows; this is rank "
                   "%d of %d (build the model under the same mpirun)",
                   b->param_names[i], b->name, (int)part, (int)parts, r, S),
               NULL;
    int64_t cnt = rows * (r + 1) / S - rows * r / S;
    if (t->shape[0] != cnt)
        return tk_set_error("distributed: table '%s' of block '%s' holds %lld rows; rank %d's shard of %lld rows has "
                            "%lld",
                            b->param_names[i], b->name, (long long)t->shape[0], r, (long long)rows, (long long)cnt),
               NULL;
    row_shard *s = shard_alloc(rows, t->shape[1]);
    if (!s) return NULL;
    tk_tensor_retain(t);
    s->shard = t;
    return s;
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
    if (!s && !(s = (t->flags & TK_TENSOR_ROW_SHARD) ? shard_adopt(b, i) : shard_new(t))) return TK_ERROR;
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

static bool only_here(const tk_tensor *t) { return __atomic_load_n(&t->refcount, __ATOMIC_ACQUIRE) == 1; }

/* Drops the entries of tables no block holds any more (the model was freed): the shard,
 * and the whole table while gathered, are referenced by the registry alone. A block that
 * holds either keeps it above one reference, so no live block's fetch points at a
 * freed entry. */
static void prune(void) {
    int64_t kept = 0;
    for (int64_t i = 0; i < reg.n; i++) {
        row_shard *s = reg.s[i];
        if (only_here(s->shard) && (!s->full || only_here(s->full))) {
            clear_fetches(s);
            free(s->f);
            tk_tensor_release(s->shard);
            tk_tensor_release(s->full);
            free(s->bounds);
            free(s);
        } else {
            reg.s[kept++] = s;
        }
    }
    reg.n = kept;
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
    clear_prefetched();
    prune();
    reg.gen++;
    if (walk(root, shard_one, NULL) != TK_OK) return TK_ERROR;
    return walk(root, drop_full, NULL);
}

/* --- fetching before the forward --- */

/* The embeddings blocks under b, depth first (the walk's order), each once. */
typedef struct block_list {
    tk_block **b;
    int32_t n, cap;
    bool oom;
} block_list;

/* walk's callback: each block at its first table, once (a block the model holds twice is
 * listed at its first place). */
static tk_status list_block(void *ud, tk_block *b, int32_t i) {
    block_list *l = ud;
    if (i != 0) return TK_OK;
    for (int32_t k = 0; k < l->n; k++)
        if (l->b[k] == b) return TK_OK;
    if (l->n == l->cap) {
        int32_t cap = l->cap ? 2 * l->cap : 8;
        tk_block **a = realloc(l->b, (size_t)cap * sizeof *a);
        if (!a) {
            l->oom = true;
            return TK_ERROR;
        }
        l->b = a;
        l->cap = cap;
    }
    l->b[l->n++] = b;
    return TK_OK;
}

tk_status tk_dist_tables_prefetch(tk_ctx *ctx, tk_block *root, tk_value *in) {
    if (!ctx || !root) return tk_set_error("distributed: tables_prefetch: NULL context or block"), TK_ERROR;
    if (need_ranks("tables_prefetch") != TK_OK) return TK_ERROR;
    if (!tk_dist_on_main_thread())
        return tk_set_error("distributed: tables_prefetch: not on the thread that started MPI"), TK_ERROR;
    block_list bl = { 0 };
    walk(root, list_block, &bl); /* fails only out of memory: bl.oom */
    tk_table_fetch_item **per = calloc((size_t)(bl.n ? bl.n : 1), sizeof *per);
    int32_t *count = calloc((size_t)(bl.n ? bl.n : 1), sizeof *count);
    tk_table_fetch_item *all = NULL;
    tk_status st = TK_ERROR;
    int32_t T = 0, groups = 0, first = pre.n;
    if (bl.oom || !per || !count) goto oom;
    for (int32_t i = 0; i < bl.n; i++) {
        count[i] = tk_embeddings_fetch_items(ctx, bl.b[i], in, &per[i]);
        if (count[i] < 0) goto oom;
        T += count[i];
        groups += count[i] > 0;
    }
    if (T == 0) {
        st = TK_OK;
        goto out;
    }
    if (pre.n + groups > pre.cap) {
        int32_t cap = pre.cap ? pre.cap : 4;
        while (cap < pre.n + groups) cap *= 2;
        prefetched *a = realloc(pre.p, (size_t)cap * sizeof *a);
        if (!a) goto oom;
        pre.p = a;
        pre.cap = cap;
    }
    /* the groups first, with the ids as given (the exchange replaces them in place) */
    all = malloc((size_t)T * sizeof *all);
    if (!all) goto oom;
    for (int32_t i = 0, at = 0; i < bl.n; i++) {
        if (count[i] == 0) continue;
        int32_t nlists = 0;
        for (int32_t k = 0; k < count[i]; k++) nlists += per[i][k].n;
        prefetched *p = &pre.p[pre.n];
        *p = (prefetched){ count[i],
                           nlists,
                           malloc((size_t)count[i] * sizeof *p->ud),
                           malloc((size_t)count[i] * sizeof *p->nl),
                           malloc((size_t)(2 * nlists + count[i] + 1) * sizeof *p->orig),
                           NULL,
                           NULL,
                           false };
        if (!p->ud || !p->nl || !p->orig) {
            free(p->ud);
            free(p->nl);
            free(p->orig);
            goto oom;
        }
        pre.n++;
        p->remapped = p->orig + nlists;
        p->rows = p->orig + 2 * nlists;
        for (int32_t k = 0, l = 0; k < count[i]; k++) {
            p->ud[k] = per[i][k].ud;
            p->nl[k] = per[i][k].n;
            for (int32_t j = 0; j < per[i][k].n; j++) p->orig[l++] = per[i][k].ids[j];
            all[at++] = per[i][k];
        }
    }
    if (exchange(ctx, T, all) != TK_OK) {
        tk_set_error("distributed: tables_prefetch: %s", tk_ctx_error(ctx));
        goto out;
    }
    for (int32_t g = first, at = 0; g < pre.n; g++) {
        prefetched *p = &pre.p[g];
        for (int32_t k = 0, l = 0; k < p->n; k++, at++) {
            for (int32_t j = 0; j < all[at].n; j++) p->remapped[l++] = all[at].ids[j];
            p->rows[k] = all[at].rows;
        }
    }
    st = TK_OK;
    goto out;
oom:
    tk_set_error("distributed: tables_prefetch: out of memory");
out:
    if (st != TK_OK) { /* nothing to take: the forward fetches (and fails) itself */
        while (pre.n > first) {
            pre.n--;
            free(pre.p[pre.n].ud);
            free(pre.p[pre.n].nl);
            free(pre.p[pre.n].orig);
        }
    }
    free(bl.b);
    free(per);
    free(count);
    free(all);
    return st;
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

/* The row shards under root, each once, in the walk's order (the same on every rank). */
typedef struct shard_list {
    row_shard **s;
    int32_t n, cap;
} shard_list;

static tk_status list_one(void *ud, tk_block *b, int32_t i) {
    shard_list *l = ud;
    tk_tensor *t = b->params[i];
    row_shard *s = (t->flags & TK_TENSOR_ROW_SHARD) ? find(t) : NULL;
    if (!s || s->gen == reg.gen) return TK_OK; /* a whole table, or listed already (shared) */
    s->gen = reg.gen;
    if (l->n == l->cap) {
        int32_t cap = l->cap ? 2 * l->cap : 8;
        row_shard **a = realloc(l->s, (size_t)cap * sizeof *a);
        if (!a) return tk_set_error("distributed: tables_sync: out of memory"), TK_ERROR;
        l->s = a;
        l->cap = cap;
    }
    l->s[l->n++] = s;
    return TK_OK;
}

/* This rank's coalesced (id, gradient row) pairs of s's fetches, ascending ids. Each
 * fetch's raw gradient rows (as the backward appended them), mapped to ids, go from the
 * last fetch to the first (the order the tape's backward appended them in, as it appends
 * a replicated table's) into the shard's own list, coalesced once by the tape's stable
 * sort: duplicates are summed in the order the replicated table sums them, even when
 * several forwards read the table (sampled negatives). *ids / *vals are that list, in
 * ctx's arena, valid until the shard's list is reused (after the send); the fetches' own
 * gradients are emptied. */
static tk_status local_pairs(tk_ctx *ctx, row_shard *s, int64_t **ids_out, float **vals_out, int64_t *n_out) {
    *ids_out = NULL;
    *vals_out = NULL;
    *n_out = 0;
    if (s->nf == 0) return TK_OK; /* no rank read it this step (the same on every rank) */
    tk_tensor *a = tk_ctx_input_rows(ctx, s->shard);
    if (!a) return TK_ERROR;
    if (a->sparse) a->sparse->n = 0;
    for (int32_t k = s->nf - 1; k >= 0; k--) {
        tk_tensor *fa = tk_ctx_leaf_alias(ctx, s->f[k].rows);
        tk_sparse_grad *sg = fa ? fa->sparse : NULL;
        if (!sg || sg->n == 0) continue;
        int64_t at = a->sparse ? a->sparse->n : 0;
        float *v = tk_ctx_sparse_reserve(ctx, a, sg->n, sg->rows);
        if (!v) return TK_ERROR;
        memcpy(v, sg->values, (size_t)(sg->n * s->dim) * sizeof *v);
        int64_t *ids = a->sparse->rows + at;
        for (int64_t j = 0; j < sg->n; j++) ids[j] = s->f[k].uniq[ids[j]]; /* the fetched row's id */
        sg->n = 0; /* moved: nothing else reads the fetched rows' gradient */
    }
    if (!a->sparse) return TK_OK;
    tk_sparse_grad *u = tk_ctx_sparse_grad(ctx, s->shard);
    if (!u) return TK_ERROR;
    *ids_out = u->rows;
    *vals_out = u->values;
    *n_out = u->n;
    return TK_OK;
}

tk_status tk_dist_tables_sync(tk_ctx *ctx, tk_block *root) {
    if (!ctx || !root) return tk_set_error("distributed: tables_sync: NULL context or block"), TK_ERROR;
    if (tk_ctx_failed(ctx)) return tk_set_error("distributed: tables_sync: the context has an error"), TK_ERROR;
    if (need_ranks("tables_sync") != TK_OK) return TK_ERROR;
    reg.gen++;
    shard_list l = { 0 };
    if (walk(root, list_one, &l) != TK_OK) {
        free(l.s);
        return TK_ERROR;
    }
    int S = tk_dist_size(), T = l.n;
    tk_status ret = TK_ERROR;
    int64_t **ids = calloc((size_t)(T ? T : 1), sizeof *ids), *n = calloc((size_t)(T ? T : 1), sizeof *n);
    float **vals = calloc((size_t)(T ? T : 1), sizeof *vals);
    int64_t *rids = NULL, *rat = NULL;
    float *rvals = NULL;
    xchg x = { 0 };
    if (!ids || !n || !vals) goto oom;
    for (int32_t k = 0; k < T; k++)
        if (local_pairs(ctx, l.s[k], &ids[k], &vals[k], &n[k]) != TK_OK) goto oom;
    if (xchg_plan(&x, T, l.s, ids, n) != TK_OK || xchg_send(&x, l.s, ids, vals, &rids, &rvals) != TK_OK) goto out;
    /* where rank r's pairs of table k start in what this rank received (rank by rank,
     * table by table, as xchg_send lays them out): ids at rat[r T + k], floats at rvt */
    rat = malloc((size_t)2 * S * (T ? T : 1) * sizeof *rat);
    if (!rat) goto oom;
    int64_t *rvt = rat + (size_t)S * T;
    for (int64_t r = 0, at = 0, av = 0; r < S; r++)
        for (int32_t k = 0; k < T; k++) {
            rat[r * T + k] = at;
            rvt[r * T + k] = av;
            at += x.recvc[r * T + k];
            av += x.recvc[r * T + k] * l.s[k]->dim;
        }
    /* each table's pairs appended rank by rank: the coalesce sums duplicates in rank order */
    const float size = (float)S;
    for (int32_t k = 0; k < T; k++) {
        row_shard *s = l.s[k];
        if (s->nf == 0) continue; /* no rank read it this step (the same on every rank) */
        tk_tensor *a = tk_ctx_input_rows(ctx, s->shard);
        if (!a) goto oom;
        if (a->sparse) a->sparse->n = 0;
        int64_t lo = lo_of(s);
        /* a gradient, empty when no rank read a row of this shard: as the replicated table
         * has one whenever a rank read it (the optimizer's lazy = false bookkeeping) */
        if (!tk_ctx_sparse_reserve(ctx, a, 1, &lo)) goto oom;
        a->sparse->n = 0;
        for (int r = 0; r < S; r++) {
            int64_t c = x.recvc[r * T + k], *id = rids + rat[r * T + k];
            for (int64_t j = 0; j < c; j++) id[j] -= lo;
            if (c && tk_ctx_sparse_append(ctx, a, c, id, rvals + rvt[r * T + k]) != TK_OK) goto oom;
        }
        tk_sparse_grad *u = tk_ctx_sparse_grad(ctx, s->shard);
        if (!u) goto oom;
        for (int64_t j = 0; j < u->n * u->dim; j++) u->values[j] /= size;
    }
    ret = TK_OK;
    goto out;
oom:
    tk_set_error("distributed: tables_sync: out of memory");
out:
    for (int32_t k = 0; ret != TK_OK && k < T; k++) { /* no half-made gradient (the local pairs) left behind */
        tk_tensor *a = tk_ctx_leaf_alias(ctx, l.s[k]->shard);
        if (a && a->sparse) a->sparse->n = 0;
    }
    free(ids);
    free(vals);
    free(n);
    free(rids);
    free(rat);
    free(rvals);
    free(l.s);
    xchg_free(&x);
    return ret;
}

/* --- the global gradient norm --- */

double tk_dist_tables_clip_grad_norm(tk_ctx *ctx, double max_norm) {
    if (!ctx || tk_ctx_failed(ctx)) {
        tk_set_error("distributed: clip_grad_norm: %s", ctx ? "the context has an error" : "NULL context");
        return -1.0;
    }
    if (isnan(max_norm) || !(max_norm > 0.0)) {
        tk_set_error("distributed: clip_grad_norm: max_norm must be > 0, got %g", max_norm);
        return -1.0;
    }
    /* the replicated gradients (the same on every rank) once, the shards' squares of every
     * rank (the fetched rows' gradients were moved to their owners: empty here) */
    double sums[2];
    if (tk_grads_sum_sq(ctx, sums) != TK_OK) {
        tk_set_error("distributed: %s", tk_ctx_error(ctx));
        return -1.0;
    }
    if (tk_dist_allreduce_f64(&sums[1], 1) != TK_OK) return -1.0; /* in rank order: the same bits everywhere */
    return tk_grads_clip(ctx, sums[0] + sums[1], max_norm);
}

int64_t tk_dist_tables_count(void) { return reg.n; }

bool tk_dist_table_shard_info(const tk_tensor *t, int64_t *lo, int64_t *count, int64_t *rows) {
    const row_shard *s = t ? find(t) : NULL;
    if (!s) return false;
    if (lo) *lo = lo_of(s);
    if (count) *count = s->shard->shape[0];
    if (rows) *rows = s->rows;
    return true;
}
