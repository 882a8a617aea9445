/* Aggregations of a tabular value into one tensor (Merlin's registered names), built
 * from the other ops: the gradient flows through theirs. Entries are taken in sorted key
 * order, as Merlin's ConcatFeatures and StackFeatures do, so the result does not depend
 * on insertion order. The aggregation block and the blocks' aggregation step
 * (core/src/blocks) call tk_aggregate. */
#include "ops_impl.h"

static const char *const agg_names[TK_AGG_COUNT] = {
    [TK_AGG_NONE] = "none",
    [TK_AGG_CONCAT] = "concat",
    [TK_AGG_STACK] = "stack",
    [TK_AGG_SUM] = "sum",
    [TK_AGG_ELEMENTWISE_SUM] = "element-wise-sum",
    [TK_AGG_COSINE] = "cosine",
};

int tk_aggregation_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < TK_AGG_COUNT; i++)
        if (strcmp(name, agg_names[i]) == 0) return i;
    return -1;
}

const char *tk_aggregation_name(tk_aggregation agg) {
    return (unsigned)agg < TK_AGG_COUNT ? agg_names[agg] : "unknown";
}

const char *tk_aggregation_names(void) { return "concat, stack, sum, element-wise-sum, cosine"; }

/* All entries but the last axis agree (concat), or all shapes agree (the others). */
static bool check_shapes(tk_ctx *ctx, const char *what, int32_t n, const char **names, tk_tensor **ts,
                         bool all_but_last) {
    const tk_tensor *a = ts[0];
    for (int32_t i = 1; i < n; i++) {
        const tk_tensor *b = ts[i];
        bool ok = a->ndim == b->ndim;
        for (int32_t d = 0; ok && d < a->ndim; d++)
            ok = a->shape[d] == b->shape[d] || (all_but_last && d == a->ndim - 1);
        if (!ok) {
            char sa[64], sb[64];
            tk_ctx_fail(ctx, "aggregation '%s': entry '%s' has shape %s but '%s' has %s (%s)", what, names[i],
                        tk_shape_str(b, sb, sizeof sb), names[0], tk_shape_str(a, sa, sizeof sa),
                        all_but_last ? "all dimensions but the last must match" : "shapes must match");
            return false;
        }
    }
    return true;
}

tk_tensor *tk_aggregate(tk_ctx *ctx, tk_aggregation agg, const tk_value *v) {
    const char *what = tk_aggregation_name(agg);
    if (!v) return tk_ctx_failed(ctx) ? NULL : tk_ctx_fail(ctx, "aggregation '%s': input is NULL", what);
    if (agg == TK_AGG_NONE || (unsigned)agg >= TK_AGG_COUNT)
        return tk_ctx_fail(ctx, "aggregation %d is not one of %s", (int)agg, tk_aggregation_names());
    if (!tk_value_is_tabular(v)) {
        char s[64];
        return tk_ctx_fail(ctx, "aggregation '%s' needs a tabular input, got a tensor %s", what,
                           tk_shape_str(v->tensor, s, sizeof s));
    }
    int32_t n = v->n;
    if (n == 0) return tk_ctx_fail(ctx, "aggregation '%s': the tabular input is empty", what);
    const char **names = tk_value_sorted_names(ctx, v);
    tk_tensor **ts = tk_ctx_alloc(ctx, (size_t)n * sizeof *ts);
    if (!names || !ts) return NULL;
    for (int32_t i = 0; i < n; i++) {
        ts[i] = tk_value_get(v, names[i]);
        if (ts[i]->dtype != TK_F32)
            return tk_ctx_fail(ctx,
                               "aggregation '%s': entry '%s' is %s, not float32 (ids go through an "
                               "embeddings block first)",
                               what, names[i], tk_dtype_name(ts[i]->dtype));
        if (ts[i]->ndim == 0) return tk_ctx_fail(ctx, "aggregation '%s': entry '%s' is a scalar", what, names[i]);
    }
    switch (agg) {
    case TK_AGG_CONCAT:
        if (!check_shapes(ctx, what, n, names, ts, true)) return NULL;
        return n == 1 ? ts[0] : tk_concat(ctx, n, ts);
    case TK_AGG_STACK:
        if (!check_shapes(ctx, what, n, names, ts, false)) return NULL;
        return tk_stack(ctx, n, ts);
    case TK_AGG_SUM: {
        /* each entry summed over its last axis (a [B] entry is one number per row) */
        tk_tensor **sums = tk_ctx_alloc(ctx, (size_t)n * sizeof *sums);
        if (!sums) return NULL;
        for (int32_t i = 0; i < n; i++) {
            tk_tensor *t = ts[i];
            if (t->ndim == 1) {
                int64_t shape[2] = { t->shape[0], 1 };
                sums[i] = tk_reshape(ctx, t, 2, shape);
            } else {
                sums[i] = tk_sum(ctx, t, t->ndim - 1, true);
            }
            if (!sums[i]) return NULL;
        }
        if (!check_shapes(ctx, what, n, names, sums, true)) return NULL;
        return n == 1 ? sums[0] : tk_concat(ctx, n, sums);
    }
    case TK_AGG_ELEMENTWISE_SUM: {
        if (!check_shapes(ctx, what, n, names, ts, false)) return NULL;
        tk_tensor *acc = ts[0];
        for (int32_t i = 1; i < n && acc; i++) acc = tk_add(ctx, acc, ts[i]);
        return acc;
    }
    case TK_AGG_COSINE:
        if (n != 2) return tk_ctx_fail(ctx, "aggregation 'cosine' needs exactly 2 entries, got %d", (int)n);
        if (!check_shapes(ctx, what, n, names, ts, false)) return NULL;
        return tk_cosine(ctx, ts[0], ts[1]);
    default:
        return NULL;
    }
}
