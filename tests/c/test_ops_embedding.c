/* Embedding lookups: one-hot, multi-hot with each combiner, sparse gradients, errors. */
#include "op_test.h"

#include "internal.h" /* to see that the table alias holds no dense gradient */

/* table [6, 3]: row r is (r, 10 r, -r) */
static tk_tensor *make_table(bool grad) {
    tk_tensor *t = tk_tensor_new_2d(TK_F32, 6, 3);
    for (int r = 0; r < 6; r++) {
        tk_f32(t)[r * 3] = (float)r;
        tk_f32(t)[r * 3 + 1] = 10.0f * r;
        tk_f32(t)[r * 3 + 2] = -(float)r;
    }
    tk_tensor_set_requires_grad(t, grad);
    return t;
}

/* Multi-hot rows: [1, 3, 3], [], [0], [5, 1] */
static const int64_t mh_ids[6] = { 1, 3, 3, 0, 5, 1 };
static const int64_t mh_off[5] = { 0, 3, 3, 4, 6 };

static void test_combiner_names(void) {
    TK_CHECK(tk_combiner_from_name("sum") == TK_COMBINER_SUM);
    TK_CHECK(tk_combiner_from_name("mean") == TK_COMBINER_MEAN);
    TK_CHECK(tk_combiner_from_name("sqrtn") == TK_COMBINER_SQRTN);
    TK_CHECK(tk_combiner_from_name("max") == -1);
    TK_CHECK(tk_combiner_from_name(NULL) == -1);
    TK_CHECK(strcmp(tk_combiner_name(TK_COMBINER_SQRTN), "sqrtn") == 0);
    TK_CHECK(strcmp(tk_combiner_name((tk_combiner)7), "unknown") == 0);
}

static void test_one_hot(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *table = make_table(false);
    tk_tensor *ids = op_i64(4, (int64_t[]){ 2, 0, 5, 2 });
    tk_tensor *y = tk_embedding_lookup(ctx, table, ids, NULL, TK_COMBINER_MEAN, "t");
    OP_CHECK_SHAPE(y, 4, 3);
    OP_CHECK_VALUES(y, ((float[]){ 2, 20, -2, 0, 0, 0, 5, 50, -5, 2, 20, -2 }), 0); /* one row each: copies, exact */
    TK_CHECK(y && !y->requires_grad && !y->node); /* the table needs no gradient: nothing recorded */
    /* [B, 1] ids */
    tk_tensor *ids2 = tk_tensor_new_2d(TK_I64, 2, 1);
    tk_i64(ids2)[0] = 4, tk_i64(ids2)[1] = 1;
    y = tk_embedding_lookup(ctx, table, ids2, NULL, TK_COMBINER_SUM, "t");
    OP_CHECK_SHAPE(y, 2, 3);
    OP_CHECK_VALUES(y, ((float[]){ 4, 40, -4, 1, 10, -1 }), 0); /* copies: exact */
    /* an empty batch */
    tk_tensor *none = tk_tensor_new_1d(TK_I64, 0);
    y = tk_embedding_lookup(ctx, table, none, NULL, TK_COMBINER_SUM, "t");
    OP_CHECK_SHAPE(y, 0, 3);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(table, ids, ids2, none, NULL);
    tk_ctx_free(ctx);
}

static void test_multi_hot(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *table = make_table(false);
    tk_tensor *ids = op_i64(6, mh_ids), *off = op_i64(5, mh_off);
    /* sums: [1+3+3] = 7, [] = 0, [0] = 0, [5+1] = 6 (times (1, 10, -1)) */
    tk_tensor *y = tk_embedding_lookup(ctx, table, ids, off, TK_COMBINER_SUM, "t");
    OP_CHECK_SHAPE(y, 4, 3);
    OP_CHECK_VALUES(y, ((float[]){ 7, 70, -7, 0, 0, 0, 0, 0, 0, 6, 60, -6 }), 1e-6);
    y = tk_embedding_lookup(ctx, table, ids, off, TK_COMBINER_MEAN, "t");
    OP_CHECK_VALUES(y, ((float[]){ 7.0f / 3, 70.0f / 3, -7.0f / 3, 0, 0, 0, 0, 0, 0, 3, 30, -3 }), 1e-6);
    y = tk_embedding_lookup(ctx, table, ids, off, TK_COMBINER_SQRTN, "t");
    float r3 = 1.0f / sqrtf(3), r2 = 1.0f / sqrtf(2);
    OP_CHECK_VALUES(y, ((float[]){ 7 * r3, 70 * r3, -7 * r3, 0, 0, 0, 0, 0, 0, 6 * r2, 60 * r2, -6 * r2 }), 1e-6);
    /* every row empty */
    tk_tensor *no_ids = tk_tensor_new_1d(TK_I64, 0), *zero_off = op_i64(3, (int64_t[]){ 0, 0, 0 });
    y = tk_embedding_lookup(ctx, table, no_ids, zero_off, TK_COMBINER_MEAN, "t");
    OP_CHECK_SHAPE(y, 2, 3);
    OP_CHECK_VALUES(y, ((float[]){ 0, 0, 0, 0, 0, 0 }), 0);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(table, ids, off, no_ids, zero_off, NULL);
    tk_ctx_free(ctx);
}

static void test_sparse_grad(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *table = make_table(true);
    tk_tensor *ids = op_i64(6, mh_ids), *off = op_i64(5, mh_off);
    int64_t s43[2] = { 4, 3 };
    const float wv[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    tk_tensor *w = op_f32(2, s43, wv);
    for (int comb = 0; comb < 3; comb++) {
        tk_ctx_reset(ctx);
        tk_tensor *y = tk_embedding_lookup(ctx, table, ids, off, (tk_combiner)comb, "t");
        TK_CHECK(y && y->requires_grad);
        tk_tensor *loss = tk_sum(ctx, tk_mul(ctx, y, w), -1, false);
        TK_CHECK(tk_backward(ctx, loss) == TK_OK);
        /* row weights per combiner: row 0 has 3 ids, row 2 one, row 3 two */
        float w0 = comb == 0 ? 1 : comb == 1 ? 1.0f / 3 : 1.0f / sqrtf(3);
        float w3 = comb == 0 ? 1 : comb == 1 ? 0.5f : 1.0f / sqrtf(2);
        /* touched rows 0, 1, 3, 5: 0 <- w[2]; 1 <- w0 w[0] + w3 w[3]; 3 <- 2 w0 w[0]; 5 <- w3 w[3] */
        float want[4][3];
        for (int j = 0; j < 3; j++) {
            want[0][j] = wv[6 + j];
            want[1][j] = w0 * wv[j] + w3 * wv[9 + j];
            want[2][j] = 2 * w0 * wv[j];
            want[3][j] = w3 * wv[9 + j];
        }
        tk_sparse_grad *sg = tk_ctx_sparse_grad(ctx, table);
        TK_CHECK(sg != NULL);
        if (sg) {
            TK_CHECK(sg->coalesced && sg->n == 4 && sg->dim == 3);
            const int64_t rows[4] = { 0, 1, 3, 5 };
            for (int i = 0; i < 4 && i < sg->n; i++) {
                TK_CHECK(sg->rows[i] == rows[i]);
                for (int j = 0; j < 3; j++) TK_CHECK_NEAR(sg->values[i * 3 + j], want[i][j], 1e-5);
            }
        }
        /* the dense view: the same values, zeros elsewhere */
        tk_tensor *dense = tk_ctx_grad(ctx, table);
        TK_CHECK(dense != NULL);
        if (dense) {
            OP_CHECK_SHAPE(dense, 6, 3);
            const int map[6] = { 0, 1, -1, 2, -1, 3 };
            for (int r = 0; r < 6; r++)
                for (int j = 0; j < 3; j++)
                    TK_CHECK_NEAR(tk_f32(dense)[r * 3 + j], map[r] < 0 ? 0 : want[map[r]][j], 1e-5);
        }
        /* the table alias never got a dense gradient of its own */
        TK_CHECK(tk_ctx_leaf_count(ctx) == 1 && ctx->leaves[0].source == table);
        TK_CHECK(ctx->leaves[0].alias->grad == NULL && ctx->leaves[0].alias->sparse != NULL);
    }
    op_release(table, ids, off, w, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    tk_tensor *table, *ids, *off;
    tk_combiner comb;
} emb_case;

static tk_tensor *emb_fn(tk_ctx *ctx, void *ud) {
    emb_case *c = ud;
    tk_tensor *y = tk_embedding_lookup(ctx, c->table, c->ids, c->off, c->comb, "t");
    return gradcheck_project(ctx, tk_square(ctx, y));
}

static void test_grads(void) {
    tk_tensor *table = op_leaf_2d(6, 3, 5);
    tk_tensor *ids = op_i64(6, mh_ids), *off = op_i64(5, mh_off);
    for (int comb = 0; comb < 3; comb++) {
        emb_case c = { table, ids, off, (tk_combiner)comb };
        char what[48];
        snprintf(what, sizeof what, "multi-hot %s", tk_combiner_name((tk_combiner)comb));
        TK_CHECK_MSG(gradcheck_run(what, emb_fn, &c, 1, &table, false, 1e-2) == 0, "%s", what);
    }
    tk_tensor *oh = op_i64(5, (int64_t[]){ 4, 4, 0, 2, 5 });
    emb_case c = { table, oh, NULL, TK_COMBINER_SUM };
    TK_CHECK(gradcheck_run("one-hot", emb_fn, &c, 1, &table, false, 1e-2) == 0);
    op_release(table, ids, off, oh, NULL);
}

/* A table computed by another op gets a dense gradient its producer can read. */
static tk_tensor *computed_table_fn(tk_ctx *ctx, void *ud) {
    emb_case *c = ud;
    tk_tensor *t = tk_scale(ctx, c->table, 2.0f);
    return gradcheck_project(ctx, tk_embedding_lookup(ctx, t, c->ids, c->off, TK_COMBINER_MEAN, "scaled"));
}

static void test_computed_table(void) {
    tk_tensor *table = op_leaf_2d(6, 3, 6);
    tk_tensor *ids = op_i64(6, mh_ids), *off = op_i64(5, mh_off);
    emb_case c = { table, ids, off, TK_COMBINER_MEAN };
    TK_CHECK(gradcheck_run("lookup in a computed table", computed_table_fn, &c, 1, &table, false, 1e-2) == 0);
    op_release(table, ids, off, NULL);
}

static void test_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    const char *msg = tk_ctx_error(ctx);
    tk_tensor *table = tk_tensor_new_2d(TK_F32, 1000, 4);
    tk_tensor *ids = op_i64(5, (int64_t[]){ 1, 2, 999, 1000, 3 });
    TK_CHECK(tk_embedding_lookup(ctx, table, ids, NULL, TK_COMBINER_SUM, "user_id") == NULL);
    TK_CHECK(strcmp(msg, "embedding table 'user_id': id 1000 out of range [0, 1000) at position 3") == 0);
    tk_ctx_clear_error(ctx);
    tk_i64(ids)[3] = 0, tk_i64(ids)[1] = -1;
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, ids, NULL, TK_COMBINER_SUM, "user_id"),
                   "embedding table 'user_id': id -1 out of range [0, 1000) at position 1");
    tk_i64(ids)[1] = 2;
    /* multi-hot out of range */
    tk_tensor *off = op_i64(3, (int64_t[]){ 0, 2, 5 });
    tk_i64(ids)[4] = 5000;
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, ids, off, TK_COMBINER_MEAN, "genres"),
                   "embedding table 'genres': id 5000 out of range [0, 1000) at position 4");
    tk_i64(ids)[4] = 5;
    /* dtypes and shapes */
    tk_tensor *fids = tk_tensor_new_1d(TK_F32, 5);
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, fids, NULL, TK_COMBINER_SUM, "user_id"),
                   "embedding table 'user_id': ids must be int64, got float32 [5]");
    tk_tensor *itable = tk_tensor_new_2d(TK_I64, 10, 4);
    OP_CHECK_FAILS(
        ctx, tk_embedding_lookup(ctx, itable, ids, NULL, TK_COMBINER_SUM, "user_id"),
        "embedding table 'user_id': the table must be a 2-D float32 tensor [cardinality, dim], got int64 [10, 4]");
    tk_tensor *vtable = tk_tensor_new_1d(TK_F32, 10);
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, vtable, ids, NULL, TK_COMBINER_SUM, "user_id"),
                   "the table must be a 2-D float32 tensor [cardinality, dim], got float32 [10]");
    tk_tensor *ids2 = tk_tensor_new_2d(TK_I64, 3, 2);
    OP_CHECK_FAILS(
        ctx, tk_embedding_lookup(ctx, table, ids2, NULL, TK_COMBINER_SUM, "user_id"),
        "embedding table 'user_id': one-hot ids must be [B] or [B, 1], got [3, 2] (multi-hot ids need offsets)");
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, ids2, off, TK_COMBINER_SUM, "genres"),
                   "embedding table 'genres': multi-hot ids must be [N] (all lists' values), got [3, 2]");
    tk_tensor *foff = tk_tensor_new_1d(TK_F32, 3);
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, ids, foff, TK_COMBINER_SUM, "genres"),
                   "embedding table 'genres': offsets must be int64 [B + 1], got float32 [3]");
    tk_tensor *short_off = op_i64(3, (int64_t[]){ 0, 2, 4 });
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, ids, short_off, TK_COMBINER_SUM, "genres"),
                   "embedding table 'genres': offsets must run from 0 to the number of ids 5, got 0 to 4");
    tk_tensor *down_off = op_i64(4, (int64_t[]){ 0, 3, 2, 5 });
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, ids, down_off, TK_COMBINER_SUM, "genres"),
                   "embedding table 'genres': offsets must not decrease, got 3 then 2 at row 1");
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, ids, off, (tk_combiner)9, "genres"),
                   "embedding table 'genres': unknown combiner 9 (known: sum, mean, sqrtn)");
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, table, NULL, NULL, TK_COMBINER_SUM, "user_id"),
                   "embedding_lookup: input is NULL (ids)");
    OP_CHECK_FAILS(ctx, tk_embedding_lookup(ctx, NULL, ids, NULL, TK_COMBINER_SUM, "user_id"),
                   "embedding_lookup: input is NULL (table)");
    /* no name: still a clear message */
    tk_i64(ids)[0] = 1000;
    TK_CHECK(tk_embedding_lookup(ctx, table, ids, NULL, TK_COMBINER_SUM, NULL) == NULL);
    TK_CHECK_ERROR(msg, "embedding table: id 1000 out of range [0, 1000) at position 0");
    op_release(table, ids, off, fids, itable, vtable, ids2, foff, short_off, down_off, NULL);
    tk_ctx_free(ctx);
}

int main(void) {
    TK_RUN(test_combiner_names);
    TK_RUN(test_one_hot);
    TK_RUN(test_multi_hot);
    TK_RUN(test_sparse_grad);
    TK_RUN(test_grads);
    TK_RUN(test_computed_table);
    TK_RUN(test_errors);
    return tk_test_summary();
}
