/* Data-parallel training over MPI (towerkit_dist.h, docs/distributed.md).
 *
 * The only file of the core that includes mpi.h: the Makefile compiles it with MPI's
 * flags and TK_HAVE_MPI when it finds mpi.h; otherwise every function reports "built
 * without MPI" (one process, rank 0 of 1), so the rest of the core, the binding and hosts
 * link the same symbols in both builds.
 *
 * Everything here is about ranks agreeing bit for bit. MPI's own reductions may sum in
 * an order that depends on the rank (recursive doubling, trees), so a float sum could
 * differ in its last bits from rank to rank and replicated weights would drift apart. A
 * sum over ranks is therefore formed by one owner per block of the vector, in rank order,
 * and sent to every rank (an all-to-all then an all-gather: the bytes of a ring
 * all-reduce). Sparse gradients are exchanged as pairs and coalesced on every rank from
 * the same concatenation, with the same stable sort. */
#include "towerkit_dist.h"

#include "ops_impl.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct {
    bool initialized, finalized;
    int rank, size;
    pthread_t main_thread; /* the thread that called tk_dist_init: the only one that may call MPI */
    tk_dist_stats stats;
    /* scratch grown on demand; only the thread that called tk_dist_init uses it */
    void *buf;
    size_t cap;
} g = { .size = 1 };

/* Scratch of at least `bytes` (kept between calls: steady steps do not allocate). */
static void *scratch(size_t bytes) {
    if (bytes == 0) bytes = 1; /* a rank may own an empty block: still a valid pointer */
    if (bytes <= g.cap) return g.buf;
    size_t cap = g.cap ? g.cap : 4096;
    while (cap < bytes) cap *= 2;
    void *p = realloc(g.buf, cap);
    if (!p) return NULL;
    g.buf = p;
    g.cap = cap;
    return p;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool tk_dist_initialized(void) { return g.initialized && !g.finalized; }
int tk_dist_rank(void) { return tk_dist_initialized() ? g.rank : 0; }
int tk_dist_size(void) { return tk_dist_initialized() ? g.size : 1; }
bool tk_dist_on_main_thread(void) { return tk_dist_initialized() && pthread_equal(pthread_self(), g.main_thread); }

void tk_dist_get_stats(tk_dist_stats *out) {
    if (out) *out = g.stats;
}
void tk_dist_reset_stats(void) { memset(&g.stats, 0, sizeof g.stats); }

static size_t dtype_size(tk_dtype dt) { return dt == TK_F32 ? 4 : 8; }

/* The parameters a gradient sync walks, in the block's order (the same on every rank). */
typedef struct param_list {
    tk_tensor **p;
    int64_t n, cap;
    bool oom;
} param_list;

static int collect(void *ud, const char *path, tk_tensor *param, bool trainable) {
    param_list *l = ud;
    if (!trainable || !param || param->dtype != TK_F32 || param->numel == 0) return 0;
    if (param->flags & TK_TENSOR_ROW_SHARD) return 0; /* its owner's: tk_dist_tables_sync */
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 32;
        tk_tensor **a = realloc(l->p, (size_t)cap * sizeof *a);
        if (!a) {
            l->oom = true;
            return 1;
        }
        l->p = a;
        l->cap = cap;
    }
    l->p[l->n++] = param;
    return 0;
}

/* The context alias of heap leaf p, NULL when p got no gradient in ctx. */
static tk_tensor *alias_of(const tk_ctx *ctx, const tk_tensor *p) {
    for (int64_t i = 0; i < ctx->nleaves; i++)
        if (ctx->leaves[i].source == p) return ctx->leaves[i].alias;
    return NULL;
}

#ifdef TK_HAVE_MPI

#include <dlfcn.h>
#include <limits.h>
#include <mpi.h>

static MPI_Datatype mpi_type(tk_dtype dt) { return dt == TK_F32 ? MPI_FLOAT : MPI_INT64_T; }

/* An exit with a non-zero status (a script's error, os.exit(1)) must not leave the other
 * ranks waiting in a collective: it aborts the job. A clean exit finalises MPI. */
static void at_exit(int status, void *ud) {
    (void)ud;
    if (!g.initialized || g.finalized) return;
    if (status != 0) {
        fprintf(stderr, "towerkit: rank %d of %d exited with status %d; ending every rank (MPI_Abort)\n", g.rank,
                g.size, status);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, status);
    }
    g.finalized = true;
    MPI_Finalize();
}

bool tk_dist_available(void) { return true; }

tk_status tk_dist_init(void) {
    if (g.initialized) {
        if (g.finalized) return tk_set_error("distributed: MPI has been finalized; it cannot start again"), TK_ERROR;
        return TK_OK;
    }
    /* Loaded by a Lua interpreter (require "towerkit.core"), libmpi comes in with
     * RTLD_LOCAL and Open MPI's plugins, loaded later, cannot see its symbols: make them
     * global first (what mpi4py does). A no-op when the executable links it. */
    dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return tk_set_error("distributed: MPI_Init_thread failed"), TK_ERROR;
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g.size);
    g.main_thread = pthread_self();
    g.initialized = true;
    if (!inited) {
        /* at_exit runs after a Lua interpreter has closed its state, which unloads C
         * modules: pin the object that holds it (towerkit.core) in memory */
        Dl_info info;
        if (dladdr((void *)at_exit, &info) && info.dli_fname)
            dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
        on_exit(at_exit, NULL);
    }
    return TK_OK;
}

tk_status tk_dist_finalize(void) {
    if (!g.initialized || g.finalized) return TK_OK;
    g.finalized = true;
    return MPI_Finalize() == MPI_SUCCESS ? TK_OK : TK_ERROR;
}

_Noreturn void tk_dist_abort(int code, const char *msg) {
    if (tk_dist_initialized()) {
        fprintf(stderr, "towerkit: rank %d of %d: %s\n", g.rank, g.size, msg ? msg : "failed");
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    }
    fprintf(stderr, "towerkit: %s\n", msg ? msg : "failed");
    exit(code ? code : 1);
}

static tk_status need_init(const char *what) {
    if (tk_dist_initialized()) return TK_OK;
    tk_set_error("distributed: %s before tk_dist_init", what);
    return TK_ERROR;
}

/* MPI counts are ints. */
static bool fits(int64_t n, const char *what) {
    if (n >= 0 && n <= INT_MAX) return true;
    tk_set_error("distributed: %s: %lld elements are too many for one MPI call", what, (long long)n);
    return false;
}

static tk_status oom_error(void) {
    tk_set_error("distributed: sync_grads: out of memory");
    return TK_ERROR;
}

static void account(double t0, int64_t bytes) {
    g.stats.calls++;
    g.stats.bytes_sent += bytes;
    g.stats.seconds += now() - t0;
}

tk_status tk_dist_barrier(void) {
    if (need_init("barrier") != TK_OK) return TK_ERROR;
    double t0 = now();
    MPI_Barrier(MPI_COMM_WORLD);
    account(t0, 0);
    return TK_OK;
}

/* The rank-ordered sum of the header: block j of buf, [n j / S, n (j + 1) / S), is
 * summed by rank j. */
static tk_status allreduce(void *buf, int64_t n, bool dbl) {
    if (need_init("allreduce") != TK_OK) return TK_ERROR;
    int S = g.size, r = g.rank;
    if (S == 1 || n == 0) return TK_OK;
    if (!fits(n, "allreduce")) return TK_ERROR;
    size_t es = dbl ? sizeof(double) : sizeof(float);
    int64_t mine = n * (r + 1) / S - n * r / S;
    int *counts = malloc((size_t)4 * S * sizeof *counts);
    void *recv = scratch((size_t)(mine * S) * es);
    if (!counts || !recv) {
        free(counts);
        return tk_set_error("distributed: allreduce: out of memory"), TK_ERROR;
    }
    int *displs = counts + S, *rcounts = counts + 2 * S, *rdispls = counts + 3 * S;
    for (int j = 0; j < S; j++) {
        displs[j] = (int)(n * j / S);
        counts[j] = (int)(n * (j + 1) / S) - displs[j];
        rcounts[j] = (int)mine;
        rdispls[j] = (int)(mine * j);
    }
    double t0 = now();
    MPI_Datatype mt = dbl ? MPI_DOUBLE : MPI_FLOAT;
    MPI_Alltoallv(buf, counts, displs, mt, recv, rcounts, rdispls, mt, MPI_COMM_WORLD);
    if (!dbl) {
        float *acc = recv;
        for (int i = 1; i < S; i++) {
            const float *x = acc + mine * i;
            for (int64_t k = 0; k < mine; k++) acc[k] += x[k];
        }
    } else {
        double *acc = recv;
        for (int i = 1; i < S; i++) {
            const double *x = acc + mine * i;
            for (int64_t k = 0; k < mine; k++) acc[k] += x[k];
        }
    }
    MPI_Allgatherv(recv, (int)mine, mt, buf, counts, displs, mt, MPI_COMM_WORLD);
    account(t0, (int64_t)((n - mine) + mine * (S - 1)) * (int64_t)es);
    free(counts);
    return TK_OK;
}

tk_status tk_dist_allreduce_f32(float *buf, int64_t n) { return allreduce(buf, n, false); }
tk_status tk_dist_allreduce_f64(double *buf, int64_t n) { return allreduce(buf, n, true); }

tk_status tk_dist_allgather_count(int64_t n, int64_t *counts) {
    if (need_init("allgather") != TK_OK) return TK_ERROR;
    double t0 = now();
    MPI_Allgather(&n, 1, MPI_INT64_T, counts, 1, MPI_INT64_T, MPI_COMM_WORLD);
    account(t0, (int64_t)sizeof n * (g.size - 1));
    return TK_OK;
}

tk_status tk_dist_allgatherv(const void *send, tk_dtype dt, void *recv, const int64_t *counts) {
    if (need_init("allgatherv") != TK_OK) return TK_ERROR;
    if (dt != TK_F32 && dt != TK_I64)
        return tk_set_error("distributed: allgatherv: dtype %s (float32 or int64)", tk_dtype_name(dt)), TK_ERROR;
    int S = g.size;
    int *c = malloc((size_t)2 * S * sizeof *c);
    if (!c) return tk_set_error("distributed: allgatherv: out of memory"), TK_ERROR;
    int64_t total = 0;
    for (int i = 0; i < S; i++) {
        if (!fits(counts[i], "allgatherv") || !fits(total, "allgatherv")) {
            free(c);
            return TK_ERROR;
        }
        c[i] = (int)counts[i];
        c[S + i] = (int)total;
        total += counts[i];
    }
    double t0 = now();
    MPI_Datatype mt = mpi_type(dt);
    MPI_Allgatherv(send, c[g.rank], mt, recv, c, c + S, mt, MPI_COMM_WORLD);
    account(t0, counts[g.rank] * (int64_t)dtype_size(dt) * (S - 1));
    free(c);
    return TK_OK;
}

tk_status tk_dist_bcast(void *buf, tk_dtype dt, int64_t n, int root) {
    if (need_init("bcast") != TK_OK) return TK_ERROR;
    if (!fits(n, "bcast")) return TK_ERROR;
    if (root < 0 || root >= g.size) return tk_set_error("distributed: bcast: no rank %d", root), TK_ERROR;
    double t0 = now();
    MPI_Bcast(buf, (int)n, mpi_type(dt), root, MPI_COMM_WORLD);
    account(t0, g.rank == root ? n * (int64_t)dtype_size(dt) : 0);
    return TK_OK;
}

tk_status tk_dist_alltoall_counts(const int64_t *send, int64_t *recv, int64_t per) {
    if (need_init("alltoall") != TK_OK) return TK_ERROR;
    if (per < 1 || !fits(per, "alltoall"))
        return tk_set_error("distributed: alltoall: %lld values a rank", (long long)per), TK_ERROR;
    double t0 = now();
    MPI_Alltoall(send, (int)per, MPI_INT64_T, recv, (int)per, MPI_INT64_T, MPI_COMM_WORLD);
    account(t0, (int64_t)sizeof *send * per * (g.size - 1));
    return TK_OK;
}

tk_status tk_dist_alltoallv(const void *send, const int64_t *send_counts, tk_dtype dt, void *recv,
                            const int64_t *recv_counts) {
    if (need_init("alltoallv") != TK_OK) return TK_ERROR;
    if (dt != TK_F32 && dt != TK_I64)
        return tk_set_error("distributed: alltoallv: dtype %s (float32 or int64)", tk_dtype_name(dt)), TK_ERROR;
    int S = g.size;
    int *c = malloc((size_t)4 * S * sizeof *c); /* send counts, displs, recv counts, displs */
    if (!c) return tk_set_error("distributed: alltoallv: out of memory"), TK_ERROR;
    int64_t so = 0, ro = 0, sent = 0;
    for (int i = 0; i < S; i++) {
        if (!fits(send_counts[i], "alltoallv") || !fits(so, "alltoallv") || !fits(recv_counts[i], "alltoallv") ||
            !fits(ro, "alltoallv")) {
            free(c);
            return TK_ERROR;
        }
        c[i] = (int)send_counts[i];
        c[S + i] = (int)so;
        c[2 * S + i] = (int)recv_counts[i];
        c[3 * S + i] = (int)ro;
        so += send_counts[i];
        ro += recv_counts[i];
        if (i != g.rank) sent += send_counts[i];
    }
    double t0 = now();
    MPI_Datatype mt = mpi_type(dt);
    MPI_Alltoallv(send, c, c + S, mt, recv, c + 2 * S, c + 3 * S, mt, MPI_COMM_WORLD);
    account(t0, sent * (int64_t)dtype_size(dt));
    free(c);
    return TK_OK;
}

/* The gradient of the gathered rows goes back summed over ranks, each rank keeping its
 * own rows: a reduce-scatter. Its sum order may differ from rank to rank, which is
 * harmless: each slice is read by one rank only, and what the ranks share (parameter
 * gradients) is summed afterwards by tk_dist_sync_grads in rank order. */
static void allgather_rows_backward(tk_ctx *ctx, tk_node *node) {
    int S = g.size;
    int64_t D = node->out->shape[1], rows = node->arg.i[1];
    const int64_t *counts = node->saved;
    int *rc = tk_ctx_alloc(ctx, (size_t)S * sizeof *rc);
    float *mine = tk_ctx_alloc(ctx, (size_t)(rows ? rows * D : 1) * sizeof *mine);
    float *gout = node->out->grad ? tk_f32(node->out->grad) : NULL;
    if (!rc || !mine || !gout) return;
    for (int i = 0; i < S; i++) rc[i] = (int)(counts[i] * D);
    double t0 = now();
    MPI_Reduce_scatter(gout, mine, rc, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    account(t0, (node->out->numel - rows * D) * (int64_t)sizeof(float));
    float *dx = tk_op_grad(ctx, node->in[0]);
    if (!dx) return;
    for (int64_t k = 0; k < rows * D; k++) dx[k] += mine[k];
}

tk_tensor *tk_dist_allgather_rows(tk_ctx *ctx, tk_tensor *x, int64_t *offset) {
    static const char *const OP = "allgather_rows";
    TK_OP_INPUT(ctx, OP, x);
    if (!tk_check_f32(ctx, OP, "x", x) || !tk_check_rank(ctx, OP, "x", x, 2)) return NULL;
    if (!tk_dist_initialized()) {
        if (offset) *offset = 0;
        return x; /* one process: its rows are all the rows */
    }
    int S = g.size;
    int64_t mine[2] = { x->shape[0], x->shape[1] };
    int64_t *all = tk_ctx_alloc(ctx, (size_t)(2 * S) * sizeof *all);
    int64_t *counts = tk_ctx_alloc(ctx, (size_t)S * sizeof *counts);   /* rows */
    int64_t *vcounts = tk_ctx_alloc(ctx, (size_t)S * sizeof *vcounts); /* floats */
    if (!all || !counts || !vcounts) return NULL;
    double t0 = now();
    MPI_Allgather(mine, 2, MPI_INT64_T, all, 2, MPI_INT64_T, MPI_COMM_WORLD);
    account(t0, (int64_t)sizeof mine * (S - 1));
    int64_t total = 0, off = 0;
    for (int i = 0; i < S; i++) {
        if (all[2 * i + 1] != mine[1]) /* every rank sees the same table: all fail alike */
            return tk_ctx_fail(ctx, "%s: rank %d has rows of width %lld, rank %d of width %lld", OP, i,
                               (long long)all[2 * i + 1], g.rank, (long long)mine[1]);
        if (i == g.rank) off = total;
        counts[i] = all[2 * i];
        vcounts[i] = all[2 * i] * mine[1];
        total += all[2 * i];
    }
    x = tk_ctx_input(ctx, x);
    if (!x) return NULL;
    int64_t shape[2] = { total, mine[1] };
    tk_tensor *out = tk_ctx_empty(ctx, TK_F32, 2, shape);
    if (!out || tk_dist_allgatherv(tk_f32(x), TK_F32, tk_f32(out), vcounts) != TK_OK) {
        if (out) tk_ctx_fail(ctx, "%s: %s", OP, tk_last_error());
        return NULL;
    }
    if (offset) *offset = off;
    if (tk_ctx_wants_grad(ctx, 1, &x)) {
        tk_node *node = tk_ctx_record(ctx, OP, allgather_rows_backward, out, 1, &x);
        if (!node) return NULL;
        node->saved = counts;
        node->arg.i[0] = off;
        node->arg.i[1] = mine[0];
    }
    return out;
}

/* Dense gradients: one buffer holding every one (zeros where this rank has none), one
 * rank-ordered all-reduce, then the mean written back. */
static tk_status sync_dense(tk_ctx *ctx, const param_list *l, const int *flags) {
    int64_t total = 0;
    for (int64_t i = 0; i < l->n; i++)
        if (flags[i] & 1) total += l->p[i]->numel;
    if (total == 0) return TK_OK;
    float *buf = malloc((size_t)total * sizeof *buf);
    if (!buf) return tk_set_error("distributed: sync_grads: out of memory"), TK_ERROR;
    int64_t at = 0;
    for (int64_t i = 0; i < l->n; i++) {
        if (!(flags[i] & 1)) continue;
        tk_tensor *a = alias_of(ctx, l->p[i]);
        if (a && a->grad)
            memcpy(buf + at, a->grad->data, (size_t)l->p[i]->numel * sizeof *buf);
        else
            memset(buf + at, 0, (size_t)l->p[i]->numel * sizeof *buf);
        at += l->p[i]->numel;
    }
    tk_status st = tk_dist_allreduce_f32(buf, total);
    const float size = (float)g.size;
    at = 0;
    for (int64_t i = 0; st == TK_OK && i < l->n; i++) {
        if (!(flags[i] & 1)) continue;
        tk_tensor *a = alias_of(ctx, l->p[i]);
        if (!a) a = tk_ctx_input_rows(ctx, l->p[i]); /* a leaf of the other ranks only */
        tk_tensor *gr = a ? tk_ctx_grad_of(ctx, a) : NULL;
        if (!gr) {
            st = oom_error();
            break;
        }
        float *d = tk_f32(gr);
        for (int64_t k = 0; k < l->p[i]->numel; k++) d[k] = buf[at + k] / size;
        at += l->p[i]->numel;
    }
    free(buf);
    return st;
}

/* Sparse gradients: each rank's coalesced (row, gradient row) pairs of every table in
 * one all-gather of counts, one of rows and one of values; then each table's union is
 * appended in rank order and coalesced (the stable sort of graph.c: duplicates summed in
 * rank order), the same on every rank, and divided by the size. */
static tk_status sync_sparse(tk_ctx *ctx, const param_list *l, const int *flags) {
    int S = g.size;
    int64_t nt = 0;
    for (int64_t i = 0; i < l->n; i++) nt += (flags[i] & 2) != 0;
    if (nt == 0) return TK_OK;
    int64_t *idx = malloc((size_t)nt * sizeof *idx);
    int64_t *cnt = malloc((size_t)nt * (S + 1) * sizeof *cnt); /* mine, then every rank's */
    tk_sparse_grad **sg = malloc((size_t)nt * sizeof *sg);
    int64_t *rc = malloc((size_t)2 * S * sizeof *rc);
    int64_t *rows = NULL, *all_rows = NULL;
    float *vals = NULL, *all_vals = NULL;
    tk_status st = TK_ERROR;
    if (!idx || !cnt || !sg || !rc) goto oom;
    int64_t t = 0, my_rows = 0, my_vals = 0;
    for (int64_t i = 0; i < l->n; i++) {
        if (!(flags[i] & 2)) continue;
        tk_tensor *a = alias_of(ctx, l->p[i]);
        idx[t] = i;
        sg[t] = a && a->sparse ? tk_ctx_sparse_grad(ctx, l->p[i]) : NULL; /* coalesced */
        if (a && a->sparse && !sg[t]) goto oom;
        cnt[t] = sg[t] ? sg[t]->n : 0;
        my_rows += cnt[t];
        my_vals += sg[t] ? sg[t]->n * sg[t]->dim : 0;
        t++;
    }
    int64_t *all = cnt + nt; /* [S][nt] */
    double t0 = now();
    MPI_Allgather(cnt, (int)nt, MPI_INT64_T, all, (int)nt, MPI_INT64_T, MPI_COMM_WORLD);
    account(t0, nt * (int64_t)sizeof *cnt * (S - 1));
    int64_t total_rows = 0, total_vals = 0;
    for (int r = 0; r < S; r++) {
        rc[r] = rc[S + r] = 0;
        for (int64_t j = 0; j < nt; j++) {
            const tk_tensor *p = l->p[idx[j]];
            int64_t dim = p->ndim == 2 ? p->shape[1] : 1;
            rc[r] += all[r * nt + j];
            rc[S + r] += all[r * nt + j] * dim;
        }
        total_rows += rc[r];
        total_vals += rc[S + r];
    }
    rows = malloc((size_t)(my_rows ? my_rows : 1) * sizeof *rows);
    vals = malloc((size_t)(my_vals ? my_vals : 1) * sizeof *vals);
    all_rows = malloc((size_t)(total_rows ? total_rows : 1) * sizeof *all_rows);
    all_vals = malloc((size_t)(total_vals ? total_vals : 1) * sizeof *all_vals);
    if (!rows || !vals || !all_rows || !all_vals) goto oom;
    int64_t ar = 0, av = 0;
    for (int64_t j = 0; j < nt; j++) {
        if (!sg[j] || !sg[j]->n) continue;
        memcpy(rows + ar, sg[j]->rows, (size_t)sg[j]->n * sizeof *rows);
        memcpy(vals + av, sg[j]->values, (size_t)(sg[j]->n * sg[j]->dim) * sizeof *vals);
        ar += sg[j]->n;
        av += sg[j]->n * sg[j]->dim;
    }
    if (tk_dist_allgatherv(rows, TK_I64, all_rows, rc) != TK_OK ||
        tk_dist_allgatherv(vals, TK_F32, all_vals, rc + S) != TK_OK)
        goto out;
    /* where rank r's pairs of table j start: walk the concatenation in rank order */
    int64_t *row_at = malloc((size_t)S * sizeof *row_at), *val_at = malloc((size_t)S * sizeof *val_at);
    if (!row_at || !val_at) {
        free(row_at);
        free(val_at);
        goto oom;
    }
    for (int r = 0, ro = 0, vo = 0; r < S; r++) {
        row_at[r] = ro;
        val_at[r] = vo;
        ro += (int)rc[r];
        vo += (int)rc[S + r];
    }
    const float size = (float)S;
    st = TK_OK;
    for (int64_t j = 0; j < nt && st == TK_OK; j++) {
        tk_tensor *p = l->p[idx[j]];
        int64_t dim = p->ndim == 2 ? p->shape[1] : 1;
        tk_tensor *a = alias_of(ctx, p);
        if (!a) a = tk_ctx_input_rows(ctx, p);
        if (!a) {
            st = oom_error();
            break;
        }
        if (a->sparse) a->sparse->n = 0; /* replaced by the union */
        for (int r = 0; r < S; r++) {
            int64_t n = all[r * nt + j];
            if (n && tk_ctx_sparse_append(ctx, a, n, all_rows + row_at[r], all_vals + val_at[r]) != TK_OK) {
                st = oom_error();
                break;
            }
            row_at[r] += n;
            val_at[r] += n * dim;
        }
        tk_sparse_grad *u = a->sparse ? tk_ctx_sparse_grad(ctx, p) : NULL;
        if (a->sparse && !u) st = oom_error();
        for (int64_t k = 0; u && k < u->n * u->dim; k++) u->values[k] /= size;
    }
    free(row_at);
    free(val_at);
    goto out;
oom:
    tk_set_error("distributed: sync_grads: out of memory");
out:
    free(idx);
    free(cnt);
    free(sg);
    free(rc);
    free(rows);
    free(vals);
    free(all_rows);
    free(all_vals);
    return st;
}

tk_status tk_dist_sync_grads(tk_ctx *ctx, const tk_block *b) {
    if (!ctx || !b) return tk_set_error("distributed: sync_grads: NULL context or block"), TK_ERROR;
    if (!tk_dist_initialized() || g.size == 1) return TK_OK;
    if (ctx->failed) return tk_set_error("distributed: sync_grads: the context has an error: %s", ctx->error), TK_ERROR;
    param_list l = { 0 };
    tk_block_visit_params(b, false, collect, &l);
    int *flags = malloc((size_t)(l.n ? l.n : 1) * sizeof *flags);
    if (l.oom || !flags) {
        free(l.p);
        free(flags);
        return tk_set_error("distributed: sync_grads: out of memory"), TK_ERROR;
    }
    for (int64_t i = 0; i < l.n; i++) {
        tk_tensor *a = alias_of(ctx, l.p[i]);
        flags[i] = (a && a->grad ? 1 : 0) | (a && a->sparse ? 2 : 0);
    }
    /* which parameters got which kind of gradient on any rank (exact: bits) */
    double t0 = now();
    MPI_Allreduce(MPI_IN_PLACE, flags, (int)l.n, MPI_INT, MPI_BOR, MPI_COMM_WORLD);
    account(t0, l.n * (int64_t)sizeof *flags * 2 * (g.size - 1) / g.size);
    tk_status st = sync_dense(ctx, &l, flags);
    if (st == TK_OK) st = sync_sparse(ctx, &l, flags);
    free(l.p);
    free(flags);
    return st;
}

#else /* no MPI in the build: one process; every collective says how to get MPI */

static const char *const NO_MPI =
    "towerkit was built without MPI: install libopenmpi-dev and openmpi-bin (`make deps` does) and rebuild "
    "(`make`), then run `mpirun -np N towerkit script.lua`";

static tk_status no_mpi(void) { return tk_set_error("%s", NO_MPI), TK_ERROR; }
bool tk_dist_available(void) { return false; }
tk_status tk_dist_init(void) { return no_mpi(); }
tk_status tk_dist_finalize(void) { return TK_OK; }
_Noreturn void tk_dist_abort(int code, const char *msg) {
    fprintf(stderr, "towerkit: %s\n", msg ? msg : "failed");
    exit(code ? code : 1);
}
tk_status tk_dist_barrier(void) { return no_mpi(); }
tk_status tk_dist_allreduce_f32(float *buf, int64_t n) { return no_mpi(); }
tk_status tk_dist_allreduce_f64(double *buf, int64_t n) { return no_mpi(); }
tk_status tk_dist_allgather_count(int64_t n, int64_t *counts) { return no_mpi(); }
tk_status tk_dist_allgatherv(const void *send, tk_dtype dtype, void *recv, const int64_t *counts) { return no_mpi(); }
tk_status tk_dist_bcast(void *buf, tk_dtype dtype, int64_t n, int root) { return no_mpi(); }
tk_status tk_dist_alltoall_counts(const int64_t *send, int64_t *recv, int64_t per) { return no_mpi(); }
tk_status tk_dist_alltoallv(const void *send, const int64_t *send_counts, tk_dtype dtype, void *recv,
                            const int64_t *recv_counts) {
    return no_mpi();
}
tk_tensor *tk_dist_allgather_rows(tk_ctx *ctx, tk_tensor *x, int64_t *offset) {
    if (offset) *offset = 0;
    return x; /* one process: its rows are all the rows */
}
tk_status tk_dist_sync_grads(tk_ctx *ctx, const tk_block *b) {
    (void)ctx;
    (void)b;
    (void)collect;
    (void)alias_of;
    (void)scratch;
    (void)now;
    (void)dtype_size;
    return TK_OK;
}

#endif
