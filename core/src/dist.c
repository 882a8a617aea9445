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
 * all-reduce). Dense gradients are summed so in buckets, during backward or after it
 * (tk_dist_grads_begin); sparse gradients are exchanged as pairs and coalesced on every
 * rank from the same concatenation, with the same stable sort. */
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
} g = { .size = 1 };

bool tk_dist_initialized(void) { return g.initialized && !g.finalized; }
int tk_dist_rank(void) { return tk_dist_initialized() ? g.rank : 0; }
int tk_dist_size(void) { return tk_dist_initialized() ? g.size : 1; }
bool tk_dist_on_main_thread(void) { return tk_dist_initialized() && pthread_equal(pthread_self(), g.main_thread); }

void tk_dist_get_stats(tk_dist_stats *out) {
    if (out) *out = g.stats;
}
void tk_dist_reset_stats(void) { memset(&g.stats, 0, sizeof g.stats); }

tk_dist_grad_opts tk_dist_grad_defaults(void) { return (tk_dist_grad_opts){ TK_DIST_BUCKET_BYTES, true }; }

static tk_status check_grad_opts(const tk_dist_grad_opts *o) {
    if (o->bucket_bytes < 0)
        return tk_set_error("distributed: allreduce bucket_bytes must be >= 0 (0: one bucket), got %lld",
                            (long long)o->bucket_bytes),
               TK_ERROR;
    return TK_OK;
}

#ifdef TK_HAVE_MPI

#include <dlfcn.h>
#include <limits.h>
#include <mpi.h>

static void grads_init(void);

/* p grown to at least `bytes` (doubling; kept between calls, so steady steps do not
 * allocate; 0 bytes still gives a valid pointer, for a rank that owns an empty block),
 * or NULL with p and *cap unchanged. Only the thread that called tk_dist_init grows
 * these buffers. */
static void *grow(void *p, size_t *cap, size_t bytes) {
    if (bytes <= *cap && p) return p;
    size_t c = *cap ? *cap : 256;
    while (c < bytes) c *= 2;
    void *q = realloc(p, c);
    if (q) *cap = c;
    return q;
}

/* The per-rank counts of a sum over ranks of n elements formed by owners: block s,
 * [n s / S, n (s + 1) / S), is summed by rank s. c (4 S ints): the send counts and
 * displacements (each rank's block), then the receive counts and displacements (this
 * rank's block from each rank, side by side). Returns this rank's block size. */
static int64_t owner_counts(int64_t n, int *c) {
    int S = g.size, r = g.rank;
    int64_t mine = n * (r + 1) / S - n * r / S;
    for (int s = 0; s < S; s++) {
        c[S + s] = (int)(n * s / S);
        c[s] = (int)(n * (s + 1) / S) - c[S + s];
        c[2 * S + s] = (int)mine;
        c[3 * S + s] = (int)(mine * s);
    }
    return mine;
}

/* The owner's sum, in rank order: the S blocks of `mine` floats (doubles with dbl) side
 * by side at acc, added into the first. */
static void owner_sum(void *acc, int64_t mine, bool dbl) {
    int S = g.size;
    if (dbl) {
        double *a = acc;
        for (int i = 1; i < S; i++)
            for (int64_t k = 0; k < mine; k++) a[k] += a[mine * i + k];
    } else {
        float *a = acc;
        for (int i = 1; i < S; i++)
            for (int64_t k = 0; k < mine; k++) a[k] += a[mine * i + k];
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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
    grads_init();
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
    static void *recv; /* kept between calls */
    static size_t cap;
    if (need_init("allreduce") != TK_OK) return TK_ERROR;
    int S = g.size;
    if (S == 1 || n == 0) return TK_OK;
    if (!fits(n, "allreduce")) return TK_ERROR;
    size_t es = dbl ? sizeof(double) : sizeof(float);
    int *c = malloc((size_t)4 * S * sizeof *c);
    int64_t mine = c ? owner_counts(n, c) : 0;
    void *r = c ? grow(recv, &cap, (size_t)(mine * S) * es) : NULL;
    if (!r) {
        free(c);
        return tk_set_error("distributed: allreduce: out of memory"), TK_ERROR;
    }
    recv = r;
    double t0 = now();
    MPI_Datatype mt = dbl ? MPI_DOUBLE : MPI_FLOAT;
    MPI_Alltoallv(buf, c, c + S, mt, recv, c + 2 * S, c + 3 * S, mt, MPI_COMM_WORLD);
    owner_sum(recv, mine, dbl);
    MPI_Allgatherv(recv, (int)mine, mt, buf, c, c + S, mt, MPI_COMM_WORLD);
    account(t0, (int64_t)((n - mine) + mine * (S - 1)) * (int64_t)es);
    free(c);
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

/* A broadcast whose wait sleeps: MPI_Ibcast, then MPI_Test with sleeps in between that
 * start at a microsecond and double up to poll seconds. A rank that waits in it between
 * a server's requests uses no CPU once the pause is longer than a few milliseconds,
 * where a blocking broadcast would spin in MPI's progress loop for as long as it waits;
 * while batches come often, the sleeps stay short and add little latency. poll 0: no
 * sleep (MPI_Wait), for the rank that has the data and wants it sent at once.
 * Non-blocking collectives match only each other: every rank uses this function for
 * the same broadcast. */
tk_status tk_dist_bcast_idle(void *buf, tk_dtype dt, int64_t n, int root, double poll) {
    if (need_init("bcast_idle") != TK_OK) return TK_ERROR;
    if (!fits(n, "bcast_idle")) return TK_ERROR;
    if (root < 0 || root >= g.size) return tk_set_error("distributed: bcast_idle: no rank %d", root), TK_ERROR;
    if (!(poll >= 0 && poll <= 1)) poll = 1e-3;
    double t0 = now();
    MPI_Request rq;
    MPI_Ibcast(buf, (int)n, mpi_type(dt), root, MPI_COMM_WORLD, &rq);
    if (poll == 0) {
        MPI_Wait(&rq, MPI_STATUS_IGNORE);
    } else {
        double nap = 1e-6;
        for (int done = 0;;) {
            MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
            if (done) break;
            struct timespec ts = { 0, (long)(nap * 1e9) };
            nanosleep(&ts, NULL);
            nap = nap * 2 < poll ? nap * 2 : poll;
        }
    }
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
        tk_tensor *a = tk_ctx_leaf_alias(ctx, l->p[i]);
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
        tk_tensor *a = tk_ctx_leaf_alias(ctx, p);
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

/* ---------------------------------------------------------------------------------- */
/* Dense gradients: buckets, reduced during backward (overlap) or after it              */
/* ---------------------------------------------------------------------------------- */

/* The layout: one slot per dense parameter, in the order the gradients become final
 * during backward, packed side by side in gx.pack and cut into buckets. A bucket is
 * summed as allreduce() sums a vector, with non-blocking collectives: MPI_Ialltoallv of
 * its blocks, the owner's sum in rank order, MPI_Iallgatherv of the sums. Each element
 * is still summed by one owner in rank order, so the bits do not depend on the buckets.
 *
 * Collectives on one communicator must be issued in the same order on every rank. The
 * all-to-alls start in bucket order, and so do the all-gathers, but a rank may start
 * bucket 2's all-to-all before or after bucket 1's all-gather (it depends on when its
 * requests complete): so each kind has a communicator of its own (gx.a2a, gx.ag, both
 * duplicates of MPI_COMM_WORLD made by tk_dist_init), and neither is the one of the
 * blocking collectives backward itself runs (tk_dist_allgather_rows' reduce-scatter on
 * MPI_COMM_WORLD). */
enum { GB_FILL, GB_A2A, GB_AG, GB_DONE };

typedef struct gbucket {
    int64_t off, n;     /* its floats in gx.pack */
    int64_t roff, mine; /* its owner block: `mine` floats from each rank at gx.recv + roff */
    int64_t pending;    /* slots whose gradient is not final yet (overlap) */
    int stage;
    MPI_Request req;
} gbucket;

static struct {
    MPI_Comm a2a, ag;
    /* the step tk_dist_grads_begin set up */
    bool begun, hooked;
    tk_ctx *ctx;
    uint64_t generation;
    const tk_block *block;
    tk_dist_grad_opts opts;
    param_list l; /* the block's parameters, in tk_block_visit_params' order */
    /* what the ranks agreed on in the last exchange, for each parameter of agreed_block
     * (agreed_params): dense (0 or 1), sparse (0 or 1), when it is final (0: no node
     * reads it, else ntape - its lowest tape index), each the maximum over the ranks */
    const tk_block *agreed_block;
    tk_tensor **agreed_params;
    int *agreed, *flags;
    int64_t agreed_n;
    /* the layout; per parameter i: slot_of[i] (-1: none), last[i] (its lowest tape
     * index, ntape if none), covered[i]; per slot k: slot_param[k], slot_off[k],
     * slot_bucket[k]; order: the parameters by descending last, cursor the next to
     * become final */
    int64_t nslots, nb, next_start, next_ag, cursor;
    int64_t *slot_param, *slot_off, *slot_bucket, *slot_of, *last, *order, *covered;
    gbucket *b;
    int *counts; /* 4 S ints a bucket: send counts, send displacements, receive counts and displacements */
    float *pack, *recv;
    size_t cap_i, cap_a, cap_ap, cap_b, cap_c, cap_pack, cap_recv;
} gx;

/* At tk_dist_init (every rank): the communicators of the exchange. */
static void grads_init(void) {
    MPI_Comm_dup(MPI_COMM_WORLD, &gx.a2a);
    MPI_Comm_dup(MPI_COMM_WORLD, &gx.ag);
}

/* The per-parameter arrays for n parameters. */
static bool grow_params(int64_t n) {
    int64_t m = n ? n : 1;
    void *p = grow(gx.slot_param, &gx.cap_i, (size_t)(7 * m) * sizeof(int64_t));
    if (!p) return false;
    int64_t *base = gx.slot_param = p;
    gx.slot_off = base + m;
    gx.slot_bucket = base + 2 * m;
    gx.slot_of = base + 3 * m;
    gx.last = base + 4 * m;
    gx.order = base + 5 * m;
    gx.covered = base + 6 * m;
    if (!(p = grow(gx.agreed, &gx.cap_a, (size_t)(4 * m) * sizeof(int)))) return false;
    gx.agreed = p;
    gx.flags = gx.agreed + 3 * m;
    return true;
}

/* Each parameter's lowest tape index, after whose node backward writes its gradient no
 * more (a node writes the gradients of its inputs only, `in` and `list`: ops_impl.h);
 * ntape when no node reads it. */
static void final_nodes(const tk_ctx *ctx, const param_list *l, int64_t *last) {
    int64_t nt = ctx->ntape;
    for (int64_t i = 0; i < l->n; i++) last[i] = nt;
    for (int64_t j = nt - 1; j >= 0; j--) {
        const tk_node *node = ctx->tape[j];
        for (int32_t k = 0; k < node->nin + node->nlist; k++) {
            const tk_tensor *t = k < node->nin ? node->in[k] : node->list[k - node->nin];
            if (!t || !t->source) continue;
            for (int64_t i = 0; i < l->n; i++)
                if (l->p[i] == t->source) {
                    last[i] = j;
                    break;
                }
        }
    }
}

/* The slots: the parameters `dense` marks and `covered` (may be NULL) does not, by
 * ascending `when` (the order they become final), then in the list's order; cut into
 * buckets of at most bucket_bytes (0: one). */
static tk_status layout(const param_list *l, const int *dense, const int *when, const int64_t *covered,
                        int64_t bucket_bytes) {
    int64_t P = l->n, n = 0;
    int S = g.size;
    for (int64_t i = 0; i < P; i++) {
        gx.slot_of[i] = -1;
        if (!dense[i] || (covered && covered[i])) continue;
        int64_t k = n++;
        for (; k > 0 && when[gx.slot_param[k - 1]] > when[i]; k--) gx.slot_param[k] = gx.slot_param[k - 1];
        gx.slot_param[k] = i;
    }
    int64_t nb = 0, bytes = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t b = l->p[gx.slot_param[k]]->numel * (int64_t)sizeof(float);
        if (k == 0 || (bucket_bytes > 0 && bytes + b > bucket_bytes)) {
            nb++;
            bytes = 0;
        }
        bytes += b;
    }
    void *p = grow(gx.b, &gx.cap_b, (size_t)(nb ? nb : 1) * sizeof *gx.b);
    if (!p) return oom_error();
    gx.b = p;
    if (!(p = grow(gx.counts, &gx.cap_c, (size_t)(nb ? nb : 1) * 4 * (size_t)S * sizeof *gx.counts)))
        return oom_error();
    gx.counts = p;
    int64_t j = -1, off = 0, roff = 0;
    bytes = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = gx.slot_param[k], numel = l->p[i]->numel;
        if (k == 0 || (bucket_bytes > 0 && bytes + numel * (int64_t)sizeof(float) > bucket_bytes)) {
            gbucket *nbk = &gx.b[++j];
            memset(nbk, 0, sizeof *nbk);
            nbk->off = off;
            bytes = 0;
        }
        gbucket *bk = &gx.b[j];
        gx.slot_of[i] = k;
        gx.slot_off[k] = off;
        gx.slot_bucket[k] = j;
        bk->n += numel;
        bk->pending++;
        off += numel;
        bytes += numel * (int64_t)sizeof(float);
        if (!fits(bk->n, "sync_grads")) return TK_ERROR;
    }
    for (int64_t q = 0; q < nb; q++) { /* each bucket summed by owners, as allreduce() sums */
        gbucket *bk = &gx.b[q];
        bk->mine = owner_counts(bk->n, gx.counts + (size_t)4 * S * q);
        bk->roff = roff;
        roff += bk->mine * S;
    }
    if (!(p = grow(gx.pack, &gx.cap_pack, (size_t)off * sizeof *gx.pack))) return oom_error();
    gx.pack = p;
    if (!(p = grow(gx.recv, &gx.cap_recv, (size_t)roff * sizeof *gx.recv))) return oom_error();
    gx.recv = p;
    gx.nslots = n;
    gx.nb = nb;
    gx.next_start = gx.next_ag = 0;
    return TK_OK;
}

/* Slot k's gradient into the pack (zeros where this rank has none). */
static void pack_slot(tk_ctx *ctx, const param_list *l, int64_t k) {
    const tk_tensor *p = l->p[gx.slot_param[k]];
    tk_tensor *a = tk_ctx_leaf_alias(ctx, p);
    float *dst = gx.pack + gx.slot_off[k];
    if (a && a->grad)
        memcpy(dst, a->grad->data, (size_t)p->numel * sizeof *dst);
    else
        memset(dst, 0, (size_t)p->numel * sizeof *dst);
}

static void bucket_start(int64_t j) {
    gbucket *b = &gx.b[j];
    int S = g.size;
    int *c = gx.counts + (size_t)4 * S * j;
    double t0 = now();
    MPI_Ialltoallv(gx.pack + b->off, c, c + S, MPI_FLOAT, gx.recv + b->roff, c + 2 * S, c + 3 * S, MPI_FLOAT, gx.a2a,
                   &b->req);
    b->stage = GB_A2A;
    g.stats.buckets++;
    account(t0, ((b->n - b->mine) + b->mine * (S - 1)) * (int64_t)sizeof(float));
}

/* Bucket j's all-to-all is complete: its owner block summed in rank order, then sent to
 * every rank. */
static void bucket_gather(int64_t j) {
    gbucket *b = &gx.b[j];
    int S = g.size;
    int *c = gx.counts + (size_t)4 * S * j;
    float *acc = gx.recv + b->roff;
    owner_sum(acc, b->mine, false);
    MPI_Iallgatherv(acc, (int)b->mine, MPI_FLOAT, gx.pack + b->off, c, c + S, MPI_FLOAT, gx.ag, &b->req);
    b->stage = GB_AG;
}

/* Moves the started buckets on: the next all-to-all that completed gets its sum and its
 * all-gather (in bucket order), a completed all-gather makes its bucket done. wait:
 * until every started bucket is done. */
static void progress(bool wait) {
    double t0 = now();
    while (gx.next_ag < gx.next_start) {
        int done = 1;
        if (wait)
            MPI_Wait(&gx.b[gx.next_ag].req, MPI_STATUS_IGNORE);
        else
            MPI_Test(&gx.b[gx.next_ag].req, &done, MPI_STATUS_IGNORE);
        if (!done) break;
        bucket_gather(gx.next_ag++);
    }
    for (int64_t j = 0; j < gx.next_ag; j++) {
        if (gx.b[j].stage != GB_AG) continue;
        int done = 1;
        if (wait)
            MPI_Wait(&gx.b[j].req, MPI_STATUS_IGNORE);
        else
            MPI_Test(&gx.b[j].req, &done, MPI_STATUS_IGNORE);
        if (done) gx.b[j].stage = GB_DONE;
    }
    g.stats.seconds += now() - t0;
}

/* Starts the buckets whose slots are all final, in order. */
static void start_ready(bool in_backward) {
    while (gx.next_start < gx.nb && gx.b[gx.next_start].pending == 0) {
        bucket_start(gx.next_start++);
        if (in_backward) g.stats.buckets_overlapped++;
    }
}

/* Packs the slots of the parameters whose gradients are final once tape node `node`
 * has run (every one for node -1). */
static void finalize_until(tk_ctx *ctx, int64_t node) {
    while (gx.cursor < gx.l.n && gx.last[gx.order[gx.cursor]] >= node) {
        int64_t k = gx.slot_of[gx.order[gx.cursor++]];
        if (k < 0) continue;
        pack_slot(ctx, &gx.l, k);
        gx.b[gx.slot_bucket[k]].pending--;
    }
}

/* The backward hook of an overlapped step (tk_dist_grads_begin). */
static void on_backward(tk_ctx *ctx, int64_t node, void *ud) {
    (void)ud;
    if (!tk_dist_on_main_thread()) return; /* funneled: tk_dist_sync_grads starts them */
    finalize_until(ctx, node);
    start_ready(true);
    if (gx.next_start > 0) progress(false);
}

/* The slots' sums divided by the size, as the gradients of the parameters that had a
 * dense gradient on some rank in this step (`dense`; a slot laid out from an earlier
 * step may have none now). */
static tk_status write_back(tk_ctx *ctx, const param_list *l, const int *dense) {
    const float size = (float)g.size;
    for (int64_t k = 0; k < gx.nslots; k++) {
        int64_t i = gx.slot_param[k];
        if (!dense[i]) continue;
        tk_tensor *a = tk_ctx_leaf_alias(ctx, l->p[i]);
        if (!a) a = tk_ctx_input_rows(ctx, l->p[i]); /* a leaf of the other ranks only */
        tk_tensor *gr = a ? tk_ctx_grad_of(ctx, a) : NULL;
        if (!gr) return oom_error();
        float *d = tk_f32(gr);
        const float *s = gx.pack + gx.slot_off[k];
        for (int64_t e = 0; e < l->p[i]->numel; e++) d[e] = s[e] / size;
    }
    return TK_OK;
}

/* After backward: lays out the dense parameters not `covered`, packs, reduces and
 * writes back every bucket. */
static tk_status exchange_after(tk_ctx *ctx, const param_list *l, const int *agreed, const int64_t *covered,
                                int64_t bucket_bytes) {
    if (layout(l, agreed, agreed + 2 * l->n, covered, bucket_bytes) != TK_OK) return TK_ERROR;
    if (gx.nslots == 0) return TK_OK;
    for (int64_t k = 0; k < gx.nslots; k++) pack_slot(ctx, l, k);
    for (int64_t j = 0; j < gx.nb; j++) gx.b[j].pending = 0;
    start_ready(false);
    progress(true);
    return write_back(ctx, l, agreed);
}

static bool exchange_busy(void) {
    for (int64_t j = 0; j < gx.next_start; j++)
        if (gx.b[j].stage != GB_DONE) return true;
    return false;
}

tk_status tk_dist_grads_begin(tk_ctx *ctx, const tk_block *b, const tk_dist_grad_opts *opts) {
    if (!ctx || !b) return tk_set_error("distributed: grads_begin: NULL context or block"), TK_ERROR;
    tk_dist_grad_opts o = opts ? *opts : tk_dist_grad_defaults();
    if (check_grad_opts(&o) != TK_OK) return TK_ERROR;
    if (exchange_busy())
        return tk_set_error("distributed: grads_begin: the gradient exchange of an earlier step did not finish "
                            "(tk_dist_sync_grads did not run after its backward)"),
               TK_ERROR;
    gx.begun = true;
    gx.hooked = false;
    gx.ctx = ctx;
    gx.generation = ctx->generation;
    gx.block = b;
    gx.opts = o;
    if (!tk_dist_initialized() || g.size == 1 || !o.overlap || ctx->failed) return TK_OK;
    gx.l.n = 0;
    gx.l.oom = false;
    tk_block_visit_params(b, false, collect, &gx.l);
    if (gx.l.oom || !grow_params(gx.l.n)) return oom_error();
    /* the layout of the last exchange's agreement: the same on every rank */
    if (gx.agreed_block != b || gx.agreed_n != gx.l.n ||
        (gx.l.n && memcmp(gx.agreed_params, gx.l.p, (size_t)gx.l.n * sizeof *gx.l.p) != 0))
        return TK_OK; /* a first step: its buckets go after backward */
    if (layout(&gx.l, gx.agreed, gx.agreed + 2 * gx.l.n, NULL, o.bucket_bytes) != TK_OK) return TK_ERROR;
    final_nodes(ctx, &gx.l, gx.last);
    for (int64_t i = 0; i < gx.l.n; i++) { /* by descending last, stable */
        int64_t k = i;
        for (; k > 0 && gx.last[gx.order[k - 1]] < gx.last[i]; k--) gx.order[k] = gx.order[k - 1];
        gx.order[k] = i;
    }
    gx.cursor = 0;
    gx.hooked = true;
    tk_ctx_set_backward_hook(ctx, on_backward, NULL);
    return TK_OK;
}

tk_status tk_dist_sync_grads(tk_ctx *ctx, const tk_block *b) {
    if (!ctx || !b) return tk_set_error("distributed: sync_grads: NULL context or block"), TK_ERROR;
    bool begun = gx.begun && gx.ctx == ctx && gx.generation == ctx->generation && gx.block == b;
    bool hooked = begun && gx.hooked;
    tk_dist_grad_opts o = begun ? gx.opts : tk_dist_grad_defaults();
    gx.begun = gx.hooked = false;
    if (hooked) tk_ctx_set_backward_hook(ctx, NULL, NULL);
    if (!tk_dist_initialized() || g.size == 1) return TK_OK;
    if (ctx->failed) return tk_set_error("distributed: sync_grads: the context has an error: %s", ctx->error), TK_ERROR;
    param_list *l = &gx.l;
    if (!hooked) {
        l->n = 0;
        l->oom = false;
        tk_block_visit_params(b, false, collect, l);
        if (l->oom || !grow_params(l->n)) return oom_error();
        final_nodes(ctx, l, gx.last);
    }
    int64_t P = l->n, nt = ctx->ntape;
    if (!fits(3 * P, "sync_grads")) return TK_ERROR;
    /* this rank's kinds of gradient and when each became final; then the maximum over
     * the ranks (exact), which every rank lays its buckets out from */
    int *agreed = gx.agreed;
    for (int64_t i = 0; i < P; i++) {
        tk_tensor *a = tk_ctx_leaf_alias(ctx, l->p[i]);
        agreed[i] = a && a->grad ? 1 : 0;
        agreed[P + i] = a && a->sparse ? 1 : 0;
        agreed[2 * P + i] = gx.last[i] >= nt ? 0 : (int)(nt - gx.last[i]);
    }
    double t0 = now();
    MPI_Allreduce(MPI_IN_PLACE, agreed, (int)(3 * P), MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    account(t0, 3 * P * (int64_t)sizeof *agreed * 2 * (g.size - 1) / g.size);
    tk_status st;
    double t1 = now();
    if (hooked) {
        finalize_until(ctx, -1);
        start_ready(false);
        progress(true);
        st = write_back(ctx, l, agreed);
        /* dense gradients the layout did not foresee go in buckets of their own */
        for (int64_t i = 0; i < P; i++) gx.covered[i] = gx.slot_of[i] >= 0;
        if (st == TK_OK) st = exchange_after(ctx, l, agreed, gx.covered, o.bucket_bytes);
    } else {
        st = exchange_after(ctx, l, agreed, NULL, o.bucket_bytes);
    }
    g.stats.dense_seconds += now() - t1;
    if (st != TK_OK) return st;
    void *p = grow(gx.agreed_params, &gx.cap_ap, (size_t)P * sizeof *gx.agreed_params);
    if (!p) return oom_error();
    gx.agreed_params = p;
    if (P) memcpy(gx.agreed_params, l->p, (size_t)P * sizeof *l->p);
    gx.agreed_block = b;
    gx.agreed_n = P;
    for (int64_t i = 0; i < P; i++) gx.flags[i] = agreed[i] | (agreed[P + i] << 1);
    return sync_sparse(ctx, l, gx.flags);
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
tk_status tk_dist_bcast_idle(void *buf, tk_dtype dtype, int64_t n, int root, double poll) { return no_mpi(); }
tk_status tk_dist_alltoall_counts(const int64_t *send, int64_t *recv, int64_t per) { return no_mpi(); }
tk_status tk_dist_alltoallv(const void *send, const int64_t *send_counts, tk_dtype dtype, void *recv,
                            const int64_t *recv_counts) {
    return no_mpi();
}
tk_tensor *tk_dist_allgather_rows(tk_ctx *ctx, tk_tensor *x, int64_t *offset) {
    if (offset) *offset = 0;
    return x; /* one process: its rows are all the rows */
}
tk_status tk_dist_grads_begin(tk_ctx *ctx, const tk_block *b, const tk_dist_grad_opts *opts) {
    if (!ctx || !b) return tk_set_error("distributed: grads_begin: NULL context or block"), TK_ERROR;
    return opts ? check_grad_opts(opts) : TK_OK; /* one process: nothing to exchange */
}
tk_status tk_dist_sync_grads(tk_ctx *ctx, const tk_block *b) { return TK_OK; }

#endif
