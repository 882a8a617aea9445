/* Embedding lookups, one-hot and ragged multi-hot, with sparse row gradients.
 *
 * Row b of the output combines the table rows ids[lo_b .. hi_b) (one-hot: lo_b = b,
 * hi_b = b + 1) with weight w_b: 1 for sum, 1/len for mean, 1/sqrt(len) for sqrtn.
 * The backward gives table row ids[p] the gradient w_b * dy[b] for each position p of
 * row b: one sparse row per looked-up id (the context coalesces duplicates), never a
 * dense table-sized gradient. */
#include "ops_impl.h"
#include "simd.h"

static const char *const combiner_names[] = { "sum", "mean", "sqrtn" };

int tk_combiner_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < (int)TK_ARRAY_LEN(combiner_names); i++)
        if (strcmp(name, combiner_names[i]) == 0) return i;
    return -1;
}

const char *tk_combiner_name(tk_combiner c) {
    return (unsigned)c < TK_ARRAY_LEN(combiner_names) ? combiner_names[c] : "unknown";
}

static inline float row_weight(tk_combiner combiner, int64_t len) {
    if (len == 0 || combiner == TK_COMBINER_SUM) return 1.0f;
    return combiner == TK_COMBINER_MEAN ? 1.0f / (float)len : 1.0f / sqrtf((float)len);
}

/* Bounds of row b: [lo, hi) in ids. */
static inline void row_bounds(const int64_t *offsets, int64_t b, int64_t *lo, int64_t *hi) {
    if (offsets) {
        *lo = offsets[b];
        *hi = offsets[b + 1];
    } else {
        *lo = b;
        *hi = b + 1;
    }
}

static void embedding_backward(tk_ctx *ctx, tk_node *node) {
    tk_tensor *table = node->in[0], *ids = node->in[1], *offsets = node->in[2];
    tk_combiner combiner = (tk_combiner)node->arg.i[0];
    int64_t rows = node->out->shape[0], dim = node->out->shape[1], n = ids->numel;
    const int64_t *idv = tk_i64(ids), *off = offsets ? tk_i64(offsets) : NULL;
    const float *dy = tk_f32(node->out->grad);
    if (!table->source) {
        /* The table is itself computed by an op: its producer reads a dense gradient. */
        float *dt = tk_op_grad(ctx, table);
        if (!dt) return;
        for (int64_t b = 0; b < rows; b++) {
            int64_t lo, hi;
            row_bounds(off, b, &lo, &hi);
            float w = row_weight(combiner, hi - lo);
            for (int64_t p = lo; p < hi; p++)
                for (int64_t j = 0; j < dim; j++) dt[idv[p] * dim + j] += w * dy[b * dim + j];
        }
        return;
    }
    if (n == 0) return;
    /* the rows' scaled gradients, written straight into the table's sparse gradient */
    float *values = tk_ctx_sparse_reserve(ctx, table, n, idv);
    if (!values) return;
    for (int64_t b = 0; b < rows; b++) {
        int64_t lo, hi;
        row_bounds(off, b, &lo, &hi);
        float w = row_weight(combiner, hi - lo);
        const float *g = dy + b * dim;
        for (int64_t p = lo; p < hi; p++) {
            float *v = values + p * dim;
            if (w == 1.0f) {
                memcpy(v, g, (size_t)dim * sizeof *v);
                continue;
            }
            int64_t j = 0;
            for (; j + VL <= dim; j += VL) vf_store(v + j, w * vf_load(g + j));
            for (; j < dim; j++) v[j] = w * g[j];
        }
    }
}

tk_tensor *tk_embedding_lookup(tk_ctx *ctx, tk_tensor *table, tk_tensor *ids, tk_tensor *offsets, tk_combiner combiner,
                               const char *table_name) {
    if (!ctx) return NULL;
    const char *op = "embedding_lookup";
    TK_OP_INPUT(ctx, op, table);
    TK_OP_INPUT(ctx, op, ids);
    char who[160], s1[TK_SHAPE_LEN];
    if (table_name && *table_name)
        snprintf(who, sizeof who, "embedding table '%s'", table_name);
    else
        snprintf(who, sizeof who, "embedding table");
    if (table->dtype != TK_F32 || table->ndim != 2)
        return tk_ctx_fail(ctx, "%s: the table must be a 2-D float32 tensor [cardinality, dim], got %s %s", who,
                           tk_dtype_name(table->dtype), TK_SHAPE(table, s1));
    if (ids->dtype != TK_I64)
        return tk_ctx_fail(ctx, "%s: ids must be int64, got %s %s", who, tk_dtype_name(ids->dtype), TK_SHAPE(ids, s1));
    if ((unsigned)combiner >= TK_ARRAY_LEN(combiner_names))
        return tk_ctx_fail(ctx, "%s: unknown combiner %d (known: sum, mean, sqrtn)", who, (int)combiner);
    int64_t card = table->shape[0], dim = table->shape[1], rows;
    bool ids_ok = ids->ndim == 1 || (ids->ndim == 2 && ids->shape[1] == 1);
    const int64_t *off = NULL;
    if (!offsets) {
        if (!ids_ok)
            return tk_ctx_fail(ctx, "%s: one-hot ids must be [B] or [B, 1], got %s (multi-hot ids need offsets)", who,
                               TK_SHAPE(ids, s1));
        rows = ids->shape[0];
    } else {
        if (!ids_ok)
            return tk_ctx_fail(ctx, "%s: multi-hot ids must be [N] (all lists' values), got %s", who,
                               TK_SHAPE(ids, s1));
        if (offsets->dtype != TK_I64 || offsets->ndim != 1 || offsets->shape[0] < 1)
            return tk_ctx_fail(ctx, "%s: offsets must be int64 [B + 1], got %s %s", who, tk_dtype_name(offsets->dtype),
                               TK_SHAPE(offsets, s1));
        rows = offsets->shape[0] - 1;
        off = tk_i64(offsets);
        if (off[0] != 0 || off[rows] != ids->numel)
            return tk_ctx_fail(ctx, "%s: offsets must run from 0 to the number of ids %lld, got %lld to %lld", who,
                               (long long)ids->numel, (long long)off[0], (long long)off[rows]);
        for (int64_t b = 0; b < rows; b++)
            if (off[b + 1] < off[b])
                return tk_ctx_fail(ctx, "%s: offsets must not decrease, got %lld then %lld at row %lld", who,
                                   (long long)off[b], (long long)off[b + 1], (long long)b);
    }
    const int64_t *idv = tk_i64(ids);
    for (int64_t p = 0; p < ids->numel; p++)
        if (idv[p] < 0 || idv[p] >= card)
            return tk_ctx_fail(ctx, "%s: id %lld out of range [0, %lld) at position %lld", who, (long long)idv[p],
                               (long long)card, (long long)p);
    /* rows an optimizer with lazy = false left behind get their skipped steps now, before
     * they are read (only these rows: the lookup's cost stays that of the batch) */
    tk_tensor_sync_rows(table, ids->numel, idv);
    table = tk_ctx_input_rows(ctx, table);
    if (!table) return NULL;
    int64_t shape[2] = { rows, dim };
    tk_tensor *out = tk_ctx_empty(ctx, TK_F32, 2, shape);
    if (!out) return NULL;
    const float *tv = tk_f32(table);
    float *y = tk_f32(out);
    for (int64_t b = 0; b < rows; b++) {
        float *yb = y + b * dim;
        int64_t lo, hi;
        row_bounds(off, b, &lo, &hi);
        if (hi - lo == 1) {
            memcpy(yb, tv + idv[lo] * dim, (size_t)dim * sizeof *yb);
            continue;
        }
        memset(yb, 0, (size_t)dim * sizeof *yb);
        for (int64_t p = lo; p < hi; p++) {
            const float *row = tv + idv[p] * dim;
            for (int64_t j = 0; j < dim; j++) yb[j] += row[j];
        }
        float w = row_weight(combiner, hi - lo);
        if (w != 1.0f)
            for (int64_t j = 0; j < dim; j++) yb[j] *= w;
    }
    if (tk_ctx_wants_grad(ctx, 1, &table)) {
        tk_tensor *in[3] = { table, ids, offsets };
        tk_node *node = tk_ctx_record(ctx, op, embedding_backward, out, 3, in);
        if (!node) return NULL;
        node->arg.i[0] = combiner;
    }
    return out;
}
