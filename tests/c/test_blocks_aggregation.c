/* Values and aggregations: tabular values, the five aggregations (sorted key order),
 * their errors and gradients, and the aggregation block. */
#include "block_test.h"

static void test_value_basics(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a = bt_randn(2, 3, 1), *b = bt_randn(2, 3, 2);
    TK_CHECK(tk_value_of(ctx, NULL) == NULL);
    tk_value *s = tk_value_of(ctx, a);
    TK_CHECK(!tk_value_is_tabular(s) && tk_value_tensor(s) == a);
    TK_CHECK(tk_value_get(s, "a") == NULL);
    tk_value *v = tk_value_table(ctx);
    TK_CHECK(tk_value_is_tabular(v) && v->n == 0 && tk_value_tensor(v) == NULL);
    /* more entries than the first capacity, inserted out of order */
    char name[16];
    for (int i = 19; i >= 0; i--) {
        snprintf(name, sizeof name, "f%02d", i);
        TK_CHECK(tk_value_set(ctx, v, name, (i % 2) ? a : b) == TK_OK);
    }
    TK_CHECK(v->n == 20);
    TK_CHECK(strcmp(v->names[0], "f19") == 0); /* insertion order kept */
    TK_CHECK(tk_value_get(v, "f03") == a && tk_value_get(v, "f04") == b);
    TK_CHECK(tk_value_set(ctx, v, "f03", b) == TK_OK); /* replaces */
    TK_CHECK(v->n == 20 && tk_value_get(v, "f03") == b);
    const char **sorted = tk_value_sorted_names(ctx, v);
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "f%02d", i);
        TK_CHECK(strcmp(sorted[i], name) == 0);
    }
    TK_CHECK(tk_value_set(ctx, s, "x", a) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "single-tensor value");
    tk_ctx_free(ctx);
    tk_tensor_release(a);
    tk_tensor_release(b);
}

static void test_aggregation_names(void) {
    TK_CHECK(tk_aggregation_from_name("concat") == TK_AGG_CONCAT);
    TK_CHECK(tk_aggregation_from_name("stack") == TK_AGG_STACK);
    TK_CHECK(tk_aggregation_from_name("sum") == TK_AGG_SUM);
    TK_CHECK(tk_aggregation_from_name("element-wise-sum") == TK_AGG_ELEMENTWISE_SUM);
    TK_CHECK(tk_aggregation_from_name("cosine") == TK_AGG_COSINE);
    TK_CHECK(tk_aggregation_from_name("bogus") == -1);
    TK_CHECK(tk_aggregation_from_name(NULL) == -1);
    for (int a = 1; a < TK_AGG_COUNT; a++)
        TK_CHECK(tk_aggregation_from_name(tk_aggregation_name((tk_aggregation)a)) == a);
    TK_CHECK(strcmp(tk_aggregation_names(), "concat, stack, sum, element-wise-sum, cosine") == 0);
}

/* {b: [[1, 2], [3, 4]], a: [[5, 6], [7, 8]]} inserted b first */
static tk_value *two_entries(tk_ctx *ctx, tk_tensor **a, tk_tensor **b) {
    const float av[4] = { 5, 6, 7, 8 }, bv[4] = { 1, 2, 3, 4 };
    *a = bt_mat(2, 2, av);
    *b = bt_mat(2, 2, bv);
    tk_value *v = tk_value_table(ctx);
    tk_value_set(ctx, v, "b", *b);
    tk_value_set(ctx, v, "a", *a);
    return v;
}

static void test_aggregation_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a, *b;
    tk_value *v = two_entries(ctx, &a, &b);
    /* tol 0 below: copies, and sums of a few small integers, exact in any order */
    /* concat in sorted key order: a's columns first */
    tk_tensor *c = tk_aggregate(ctx, TK_AGG_CONCAT, v);
    const float cw[8] = { 5, 6, 1, 2, 7, 8, 3, 4 };
    TK_CHECK(bt_shape2(c, 2, 4) && bt_near(c, cw, 8, 0));
    /* stack: [B, D, n], n in sorted order */
    tk_tensor *s = tk_aggregate(ctx, TK_AGG_STACK, v);
    const float sw[8] = { 5, 1, 6, 2, 7, 3, 8, 4 };
    TK_CHECK(s && s->ndim == 3 && s->shape[0] == 2 && s->shape[1] == 2 && s->shape[2] == 2);
    TK_CHECK(bt_near(s, sw, 8, 0));
    /* sum: each entry over its last axis -> [B, n] */
    tk_tensor *su = tk_aggregate(ctx, TK_AGG_SUM, v);
    const float suw[4] = { 11, 3, 15, 7 };
    TK_CHECK(bt_shape2(su, 2, 2) && bt_near(su, suw, 4, 0));
    /* element-wise-sum */
    tk_tensor *e = tk_aggregate(ctx, TK_AGG_ELEMENTWISE_SUM, v);
    const float ew[4] = { 6, 8, 10, 12 };
    TK_CHECK(bt_shape2(e, 2, 2) && bt_near(e, ew, 4, 0));
    /* cosine of a and b, per row */
    tk_tensor *co = tk_aggregate(ctx, TK_AGG_COSINE, v);
    float cos0 = (5 * 1 + 6 * 2) / (sqrtf(61) * sqrtf(5)), cos1 = (7 * 3 + 8 * 4) / (sqrtf(113) * sqrtf(25));
    const float cow[2] = { cos0, cos1 };
    TK_CHECK(bt_shape2(co, 2, 1) && bt_near(co, cow, 2, 1e-6));
    /* sum with entries of different widths and a [B] entry */
    tk_value *w = tk_value_table(ctx);
    const float z[6] = { 1, 1, 1, 2, 2, 2 };
    tk_tensor *wide = bt_mat(2, 3, z);
    int64_t n2 = 2;
    const float r[2] = { 10, 20 };
    tk_tensor *vec = tk_test_tensor(1, &n2, r);
    tk_value_set(ctx, w, "z", wide);
    tk_value_set(ctx, w, "y", vec);
    tk_tensor *su2 = tk_aggregate(ctx, TK_AGG_SUM, w);
    const float su2w[4] = { 10, 3, 20, 6 };
    TK_CHECK_MSG(su2, "%s", tk_ctx_error(ctx));
    TK_CHECK(bt_shape2(su2, 2, 2) && bt_near(su2, su2w, 4, 0));
    /* concat of one entry is that entry */
    tk_value *one = tk_value_table(ctx);
    tk_value_set(ctx, one, "only", a);
    TK_CHECK(tk_aggregate(ctx, TK_AGG_CONCAT, one) == a);
    tk_ctx_free(ctx);
    tk_tensor_release(a);
    tk_tensor_release(b);
    tk_tensor_release(wide);
    tk_tensor_release(vec);
}

static void test_aggregation_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a, *b;
    tk_value *v = two_entries(ctx, &a, &b);
    TK_CHECK(tk_aggregate(ctx, TK_AGG_CONCAT, tk_value_of(ctx, a)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "aggregation 'concat' needs a tabular input, got a tensor [2, 2]");
    tk_ctx_reset(ctx);
    TK_CHECK(tk_aggregate(ctx, TK_AGG_STACK, tk_value_table(ctx)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "aggregation 'stack': the tabular input is empty");
    tk_ctx_reset(ctx);
    tk_tensor *c3 = bt_randn(3, 2, 3);
    v = tk_value_table(ctx);
    tk_value_set(ctx, v, "a", a);
    tk_value_set(ctx, v, "c", c3);
    TK_CHECK(tk_aggregate(ctx, TK_AGG_CONCAT, v) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "aggregation 'concat': entry 'c' has shape [3, 2] but 'a' has [2, 2]");
    tk_ctx_reset(ctx);
    v = tk_value_table(ctx);
    tk_value_set(ctx, v, "a", a);
    tk_value_set(ctx, v, "b", b);
    tk_value_set(ctx, v, "c", c3);
    TK_CHECK(tk_aggregate(ctx, TK_AGG_COSINE, v) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "aggregation 'cosine' needs exactly 2 entries, got 3");
    tk_ctx_reset(ctx);
    tk_value *ids = tk_value_table(ctx);
    const int64_t idv[2] = { 1, 2 };
    tk_tensor *it = bt_ids(2, idv, false);
    tk_value_set(ctx, ids, "a", a);
    tk_value_set(ctx, ids, "user_id", it);
    TK_CHECK(tk_aggregate(ctx, TK_AGG_CONCAT, ids) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "entry 'user_id' is int64, not float32");
    tk_ctx_reset(ctx);
    TK_CHECK(tk_aggregate(ctx, TK_AGG_NONE, ids) == NULL);
    TK_CHECK(tk_aggregation_block_new("x", TK_AGG_NONE) == NULL);
    tk_ctx_free(ctx);
    tk_tensor_release(a);
    tk_tensor_release(b);
    tk_tensor_release(c3);
    tk_tensor_release(it);
}

static void test_aggregation_block(void) {
    tk_block *agg = tk_aggregation_block_new("agg", TK_AGG_CONCAT);
    TK_CHECK(agg && tk_block_aggregation(agg) == TK_AGG_CONCAT);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a, *b;
    tk_value *v = two_entries(ctx, &a, &b);
    tk_value *out = tk_block_forward(ctx, agg, v);
    const float cw[8] = { 5, 6, 1, 2, 7, 8, 3, 4 };
    TK_CHECK(out && bt_near(tk_value_tensor(out), cw, 8, 0)); /* concat copies: exact */
    tk_ctx_reset(ctx);
    TK_CHECK(tk_block_forward(ctx, agg, tk_value_of(ctx, a)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "agg: aggregation needs a tabular input, got a tensor float32 [2, 2]");
    tk_ctx_free(ctx);
    tk_tensor_release(a);
    tk_tensor_release(b);
    tk_block_release(agg);
}

static void test_aggregation_gradcheck(void) {
    for (int g = 1; g < TK_AGG_COUNT; g++) {
        tk_block *agg = tk_aggregation_block_new("agg", (tk_aggregation)g);
        bt_case c = { .block = agg, .n = 2, .names = { "q", "p" }, .ins = { bt_randn(3, 4, 10), bt_randn(3, 4, 20) } };
        char what[64];
        snprintf(what, sizeof what, "aggregation %s", tk_aggregation_name((tk_aggregation)g));
        TK_CHECK_MSG(bt_gradcheck(what, &c, false, 1e-2) == 0, "%s", what);
        tk_tensor_release(c.ins[0]);
        tk_tensor_release(c.ins[1]);
        tk_block_release(agg);
    }
    /* concat and sum of entries of different widths */
    for (int g = 0; g < 2; g++) {
        tk_aggregation kind = g ? TK_AGG_SUM : TK_AGG_CONCAT;
        tk_block *agg = tk_aggregation_block_new("agg", kind);
        bt_case c = { .block = agg,
                      .n = 3,
                      .names = { "z", "a", "m" },
                      .ins = { bt_randn(3, 2, 1), bt_randn(3, 5, 2), bt_randn(3, 1, 3) } };
        TK_CHECK(bt_gradcheck(tk_aggregation_name(kind), &c, false, 1e-2) == 0);
        for (int i = 0; i < 3; i++) tk_tensor_release(c.ins[i]);
        tk_block_release(agg);
    }
}

int main(void) {
    TK_RUN(test_value_basics);
    TK_RUN(test_aggregation_names);
    TK_RUN(test_aggregation_values);
    TK_RUN(test_aggregation_errors);
    TK_RUN(test_aggregation_block);
    TK_RUN(test_aggregation_gradcheck);
    return tk_test_summary();
}
