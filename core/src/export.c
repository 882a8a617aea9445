/* Embeddings of a whole table of rows through one block (item export), and the first
 * row of each distinct id (the item corpus of a set of interactions).
 *
 * tk_block_embed runs the block in evaluation mode over batches of rows on the pool's
 * threads (parallel.c), each thread with its own context and every product on one thread
 * (as in the two-tower trainer: on these shapes single-threaded sgemm streams side by
 * side do more than each product split over the cores), and writes each batch's output
 * straight into its rows of the result (an l2norm post block normalises straight into
 * them). A batch's arithmetic does not depend on the thread that runs it, so the result
 * is the same bits for any thread count. Batches are row ranges of the
 * columns: views for plain columns, rebased offsets for ragged lists; nothing is
 * gathered. The first batch runs alone (it may build a lazy block and
 * gives the output width); blocks are read-only in a forward pass after that. */
#include "block_impl.h" /* tk_kind_l2norm */

#include <stdio.h>

typedef struct embed_job {
    tk_block *block, *post;
    int32_t ncols;
    const char *const *names;
    tk_tensor *const *cols;
    int64_t n, bs, nb;
    tk_tensor *out;  /* [n, D], NULL until the first batch */
    tk_ctx **ctx;    /* [slot]: one context per thread */
    int64_t *failed; /* [slot]: the first batch that failed there, or -1 */
    bool stop;       /* a batch failed: the others are skipped (atomic) */
} embed_job;

/* The column of the other part of the ragged feature whose part column c is, or -1. */
static int32_t ragged_partner(int32_t ncols, const char *const *names, int32_t c) {
    size_t len, other_len;
    tk_ragged_part part = tk_ragged_name_split(names[c], &len);
    for (int32_t k = 0; k < ncols; k++) {
        tk_ragged_part other = tk_ragged_name_split(names[k], &other_len);
        if (other != TK_RAGGED_NONE && other != part && other_len == len && strncmp(names[k], names[c], len) == 0)
            return k;
    }
    return -1;
}

/* The rows of column c: a plain column's first dimension, a list's offsets - 1 (after
 * checking the list once, with its values); -1 for a list's values (counted by its
 * offsets), -2 (tk_last_error) for a bad column. */
static int64_t column_rows(int32_t ncols, const char *const *names, tk_tensor *const *cols, int32_t c) {
    size_t len;
    tk_ragged_part part = tk_ragged_name_split(names[c], &len);
    if (part == TK_RAGGED_NONE) {
        if (cols[c]->ndim >= 1) return cols[c]->shape[0];
        tk_set_error("embed: column '%s' is a scalar", names[c]);
        return -2;
    }
    int32_t k = ragged_partner(ncols, names, c);
    if (k < 0) {
        tk_set_error("embed: list column '%s' has no '%s'", names[c], part == TK_RAGGED_VALUES ? "offsets" : "values");
        return -2;
    }
    if (part == TK_RAGGED_VALUES) return -1;
    char what[256];
    snprintf(what, sizeof what, "embed: list column '%.*s'", (int)len, names[c]);
    return tk_ragged_check(what, cols[k], cols[c]) == TK_OK ? cols[c]->numel - 1 : -2;
}

/* An arena view of rows [r0, r0 + count) of t (rows along its first dimension). */
static tk_tensor *row_view(tk_ctx *ctx, const tk_tensor *t, int64_t r0, int64_t count) {
    tk_tensor *v = tk_ctx_alloc(ctx, sizeof *v);
    if (!v) return NULL;
    int64_t row = t->shape[0] ? t->numel / t->shape[0] : 0;
    memset(v, 0, sizeof *v);
    v->dtype = t->dtype;
    v->ndim = t->ndim;
    memcpy(v->shape, t->shape, sizeof v->shape);
    v->shape[0] = count;
    v->numel = count * row;
    v->data = (char *)t->data + (size_t)(r0 * row) * tk_dtype_size(t->dtype);
    v->flags = TK_TENSOR_VIEW;
    return v;
}

/* The batch of rows [r0, r0 + count) as a tabular value in ctx. */
static tk_value *batch_value(tk_ctx *ctx, const embed_job *j, int64_t r0, int64_t count) {
    tk_value *v = tk_value_table(ctx);
    if (!v) return NULL;
    for (int32_t c = 0; c < j->ncols; c++) {
        const char *name = j->names[c];
        const tk_tensor *t = j->cols[c];
        tk_ragged_part part = tk_ragged_name_split(name, NULL);
        if (part == TK_RAGGED_VALUES) continue; /* with its offsets */
        if (part == TK_RAGGED_NONE) {
            tk_tensor *s = row_view(ctx, t, r0, count);
            if (!s || tk_value_set(ctx, v, name, s) != TK_OK) return NULL;
            continue;
        }
        /* a ragged list (checked by tk_block_embed): offsets rebased to 0, values from
         * the first row's; the entries keep the columns' names */
        int32_t k = ragged_partner(j->ncols, j->names, c);
        const int64_t *off = tk_i64(t) + r0;
        int64_t one = count + 1;
        tk_tensor *o = tk_ctx_empty(ctx, TK_I64, 1, &one);
        if (!o) return NULL;
        for (int64_t i = 0; i <= count; i++) tk_i64(o)[i] = off[i] - off[0];
        tk_tensor *s = row_view(ctx, j->cols[k], off[0], off[count] - off[0]);
        if (!s || tk_value_set(ctx, v, j->names[k], s) != TK_OK || tk_value_set(ctx, v, name, o) != TK_OK) return NULL;
    }
    return v;
}

/* Runs batch b in ctx and writes its output into the result (made by the first batch).
 * An l2norm post block is applied straight into the result rows (tk_l2norm_rows: the
 * block's bits, without its arena output and the copy of it). */
static bool run_batch(embed_job *j, tk_ctx *ctx, int64_t b) {
    tk_ctx_reset(ctx);
    tk_ctx_set_training(ctx, false);
    tk_ctx_set_grad_enabled(ctx, false);
    int64_t r0 = b * j->bs, count = j->n - r0 < j->bs ? j->n - r0 : j->bs;
    tk_value *v = batch_value(ctx, j, r0, count);
    if (v) v = tk_block_forward(ctx, j->block, v);
    tk_tensor *y = v ? tk_value_tensor(v) : NULL;
    bool norm_here = j->out && j->post && j->post->kind == &tk_kind_l2norm && y && y->dtype == TK_F32 && y->ndim == 2;
    if (v && j->post && !norm_here) {
        v = tk_block_forward(ctx, j->post, v);
        y = v ? tk_value_tensor(v) : NULL;
    }
    if (ctx->failed) return false;
    if (!y || y->dtype != TK_F32 || y->ndim != 2 || y->shape[0] != count) {
        char s[64];
        if (y) tk_shape_str(y, s, sizeof s);
        tk_ctx_fail(ctx, "embed: the block must return a float32 [rows, D] tensor, got %s", y ? s : "a tabular value");
        return false;
    }
    if (!j->out) {
        if (!(j->out = tk_tensor_new_2d(TK_F32, j->n, y->shape[1]))) {
            tk_ctx_fail(ctx, "embed: %s", tk_last_error());
            return false;
        }
    } else if (y->shape[1] != j->out->shape[1]) {
        tk_ctx_fail(ctx, "embed: batches have %lld and %lld columns", (long long)j->out->shape[1],
                    (long long)y->shape[1]);
        return false;
    }
    float *dst = tk_f32(j->out) + r0 * y->shape[1];
    if (norm_here)
        tk_l2norm_rows(dst, tk_f32(y), count, y->shape[1]);
    else
        memcpy(dst, tk_f32(y), (size_t)y->numel * sizeof(float));
    return true;
}

static void batch_task(void *arg, int64_t task, int slot) {
    embed_job *j = arg;
    int64_t b = task + 1; /* the first batch ran alone */
    if (__atomic_load_n(&j->stop, __ATOMIC_RELAXED)) return;
    if (!run_batch(j, j->ctx[slot], b)) {
        j->failed[slot] = b;
        __atomic_store_n(&j->stop, true, __ATOMIC_RELAXED);
    }
}

static int sync_param(void *ud, const char *path, tk_tensor *param, bool trainable) {
    tk_tensor_sync(param);
    return 0;
}

tk_tensor *tk_block_embed(tk_block *block, tk_block *post, int32_t ncols, const char *const *names,
                          tk_tensor *const *cols, int64_t batch_size) {
    if (!block || ncols < 1 || !names || !cols || batch_size < 1) {
        tk_set_error("embed: a block, at least one column and batch_size >= 1 are required");
        return NULL;
    }
    int64_t n = -1;
    for (int32_t c = 0; c < ncols; c++) {
        if (!names[c] || !cols[c]) {
            tk_set_error("embed: column %d is NULL", (int)c);
            return NULL;
        }
    }
    for (int32_t c = 0; c < ncols; c++) {
        int64_t rows = column_rows(ncols, names, cols, c);
        if (rows == -1) continue;
        if (rows == -2) return NULL;
        if (n >= 0 && rows != n) {
            tk_set_error("embed: column '%s' has %lld rows, others %lld", names[c], (long long)rows, (long long)n);
            return NULL;
        }
        n = rows;
    }
    if (n < 1) {
        tk_set_error("embed: the columns have no rows");
        return NULL;
    }
    /* every table up to date once, here: the batches' lookups (on the pool's threads, each
     * under the table's mutex) then find nothing left to do */
    tk_block_visit_params(block, false, sync_param, NULL);
    if (post) tk_block_visit_params(post, false, sync_param, NULL);
    int64_t nb = (n + batch_size - 1) / batch_size;
    int threads = tk_get_num_threads();
    if (threads > nb - 1) threads = nb > 1 ? (int)(nb - 1) : 1;
    embed_job j = { block,
                    post,
                    ncols,
                    names,
                    cols,
                    n,
                    batch_size,
                    nb,
                    NULL,
                    calloc((size_t)threads, sizeof(tk_ctx *)),
                    malloc((size_t)threads * sizeof(int64_t)),
                    false };
    tk_tensor *result = NULL;
    bool ok = j.ctx && j.failed;
    for (int s = 0; ok && s < threads; s++) {
        j.failed[s] = -1;
        ok = (j.ctx[s] = tk_ctx_new((uint64_t)s + 1)) != NULL;
        if (ok) tk_ctx_set_num_threads(j.ctx[s], 1); /* the batches are the parallel work */
    }
    if (!ok) {
        tk_set_error("embed: out of memory");
        goto out;
    }
    if (!run_batch(&j, j.ctx[0], 0)) { /* alone: builds a lazy block, sizes the result */
        tk_set_error("%s", tk_ctx_error(j.ctx[0]));
        goto out;
    }
    tk_parallel_run(nb - 1, threads, batch_task, &j);
    int first = -1; /* the slot of the first failed batch: the same message on every run */
    for (int s = 0; s < threads; s++)
        if (j.failed[s] >= 0 && (first < 0 || j.failed[s] < j.failed[first])) first = s;
    if (first >= 0) {
        tk_set_error("%s", tk_ctx_error(j.ctx[first]));
        goto out;
    }
    result = j.out;
    j.out = NULL;
out:
    tk_tensor_release(j.out);
    for (int s = 0; j.ctx && s < threads; s++) tk_ctx_free(j.ctx[s]);
    free(j.ctx);
    free(j.failed);
    return result;
}

/* --- the first row of each distinct id: open addressing on the ids --- */

tk_tensor *tk_unique_first(const tk_tensor *ids) {
    if (!ids || ids->dtype != TK_I64) {
        tk_set_error("unique_first: ids must be an int64 tensor");
        return NULL;
    }
    int64_t n = ids->numel, cap = 16;
    while (cap < 2 * n) cap *= 2;
    int64_t *slot = malloc((size_t)cap * sizeof *slot); /* row of the id in the slot, or -1 */
    int64_t *keep = malloc((size_t)(n ? n : 1) * sizeof *keep);
    tk_tensor *out = NULL;
    if (!slot || !keep) {
        tk_set_error("unique_first: out of memory");
        goto out;
    }
    memset(slot, 0xff, (size_t)cap * sizeof *slot);
    const int64_t *id = tk_i64(ids);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = (uint64_t)id[i] * 0x9E3779B97F4A7C15ull;
        int64_t s = (int64_t)(h >> 20) & (cap - 1);
        while (slot[s] >= 0 && id[slot[s]] != id[i]) s = (s + 1) & (cap - 1);
        if (slot[s] < 0) {
            slot[s] = i;
            keep[k++] = i;
        }
    }
    if ((out = tk_tensor_new_1d(TK_I64, k))) memcpy(tk_i64(out), keep, (size_t)k * sizeof *keep);
out:
    free(slot);
    free(keep);
    return out;
}
