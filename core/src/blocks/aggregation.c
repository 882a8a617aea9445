/* The aggregation block: identity on a tabular input; tk_block_forward applies
 * b->aggregation (tk_aggregate, core/src/ops/aggregate.c). */
#include "block_impl.h"

static tk_value *aggregation_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    return tk_block_need_tabular(ctx, "aggregation", in) ? in : NULL;
}

const tk_block_kind tk_kind_aggregation = {
    .name = "aggregation",
    .forward = aggregation_forward,
};

tk_block *tk_aggregation_block_new(const char *name, tk_aggregation agg) {
    if (agg == TK_AGG_NONE || (unsigned)agg >= TK_AGG_COUNT) {
        tk_set_error("aggregation block: aggregation %d is not one of %s", (int)agg, tk_aggregation_names());
        return NULL;
    }
    tk_block *b = tk_block_new(&tk_kind_aggregation, name, NULL);
    if (b) b->aggregation = agg;
    return b;
}

tk_block *tk_aggregation_from_config(const void *json, uint64_t seed) {
    const char *agg = NULL;
    if (!tk_cfg_string(json, "aggregation", true, &agg)) return NULL;
    int a = tk_aggregation_from_name(agg);
    if (a <= TK_AGG_NONE) return tk_cfg_fail("unknown aggregation '%s' (known: %s)", agg, tk_aggregation_names());
    return tk_aggregation_block_new(tk_cfg_name(json), (tk_aggregation)a);
}
