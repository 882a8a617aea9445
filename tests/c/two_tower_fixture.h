/* The small two-tower graph the graph and checkpoint tests build (tests/c/
 * test_blocks_graph.c, test_checkpoint.c):
 *
 *   two_tower (parallel): query = query_tower, item = item_tower
 *   each tower (sequential): embeddings (one feature, dim 4, concat) -> mlp (sequential:
 *   dense_0 [4 -> 8, relu], dense_1 [8 -> out, linear])
 *
 * query_tower reads user_id (10 ids), item_tower item_id (20 ids). */
#ifndef TK_TWO_TOWER_FIXTURE_H
#define TK_TWO_TOWER_FIXTURE_H

#include "tk_test.h"

typedef struct tt_fixture {
    int64_t out;          /* the width both towers end in */
    bool lazy_query;      /* the query tower's dense_0 takes its width from the first input,
                           * and a batch norm (also lazily sized) follows it */
    tk_init kernel, bias; /* the dense layers' initializers; embeddings are uniform(-0.5, 0.5) */
    uint64_t seed;        /* the query tower's seed; the item tower's is seed + 10 */
} tt_fixture;

/* Appends child to seq and drops the caller's reference. */
static inline void tt_append(tk_block *seq, tk_block *child) {
    tk_sequential_append(seq, child);
    tk_block_release(child);
}

static inline tk_block *tt_tower(const tt_fixture *f, const char *name, const char *feature, int64_t card, bool lazy,
                                 uint64_t seed) {
    const tk_init uniform = { .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.5f, .b = 0.5f };
    tk_block *t = tk_sequential_new(name);
    tk_block *e = tk_embeddings_new("embeddings");
    tk_embeddings_add_feature(e, feature, NULL, card, 4, TK_COMBINER_MEAN, uniform, seed);
    tk_block_set_aggregation(e, TK_AGG_CONCAT);
    tt_append(t, e);
    tk_block *mlp = tk_sequential_new("mlp");
    tt_append(mlp, tk_dense_new("dense_0", lazy ? 0 : 4, 8, TK_ACT_RELU, true, f->kernel, f->bias, seed + 1));
    if (lazy) tt_append(mlp, tk_batch_norm_block_new("bn", 0, 0.9f, 1e-3f));
    tt_append(mlp, tk_dense_new("dense_1", 8, f->out, TK_ACT_LINEAR, true, f->kernel, f->bias, seed + 2));
    tt_append(t, mlp);
    return t;
}

static inline tk_block *tt_two_tower(tt_fixture f) {
    tk_block *tt = tk_parallel_new("two_tower");
    tk_block *q = tt_tower(&f, "query_tower", "user_id", 10, f.lazy_query, f.seed);
    tk_block *i = tt_tower(&f, "item_tower", "item_id", 20, false, f.seed + 10);
    tk_parallel_add(tt, "query", q);
    tk_parallel_add(tt, "item", i);
    tk_block_release(q);
    tk_block_release(i);
    return tt;
}

#endif
