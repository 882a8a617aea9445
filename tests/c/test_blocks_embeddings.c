/* The embeddings block: one-hot and multi-hot lookups with each combiner, shared
 * tables, the l2 penalty, errors, and gradients into the tables. */
#include "block_test.h"
#include "block_impl.h" /* tk_embeddings_row_part */

static const tk_init UNIFORM = { .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.5f, .b = 0.5f };

/* table [5, 2], row i = [i, 10 i] */
static void fill_rows(tk_tensor *t) {
    for (int64_t i = 0; i < t->shape[0]; i++) {
        tk_f32(t)[i * 2] = (float)i;
        tk_f32(t)[i * 2 + 1] = 10.0f * (float)i;
    }
}

static void test_embeddings_one_hot(void) {
    tk_block *e = tk_embeddings_new("emb");
    TK_CHECK(tk_embeddings_add_feature(e, "user_id", NULL, 5, 2, TK_COMBINER_MEAN, UNIFORM, 1) == TK_OK);
    tk_tensor *table = tk_block_param(e, "user_id");
    TK_CHECK(bt_shape2(table, 5, 2));
    fill_rows(table);
    const int64_t ids[3] = { 3, 0, 4 };
    tk_tensor *flat = bt_ids(3, ids, false), *col = bt_ids(3, ids, true);
    tk_tensor *other = bt_randn(3, 4, 1);
    const float want[6] = { 3, 30, 0, 0, 4, 40 };
    tk_ctx *ctx = tk_ctx_new(1);
    for (int k = 0; k < 2; k++) {
        tk_value *in = tk_value_table(ctx);
        tk_value_set(ctx, in, "dense_feature", other); /* not configured: ignored */
        tk_value_set(ctx, in, "user_id", k ? col : flat);
        tk_value *out = tk_block_forward(ctx, e, in);
        TK_CHECK_MSG(out, "%s", tk_ctx_error(ctx));
        TK_CHECK(tk_value_is_tabular(out) && out->n == 1);
        tk_tensor *u = tk_value_get(out, "user_id");
        TK_CHECK(bt_shape2(u, 3, 2) && bt_near(u, want, 6, 0)); /* copied rows of small integers: exact */
    }
    tk_ctx_free(ctx);
    tk_tensor_release(flat);
    tk_tensor_release(col);
    tk_tensor_release(other);
    tk_block_release(e);
}

static void test_embeddings_multi_hot(void) {
    /* rows {1, 2, 2}, {3}, {} */
    const int64_t values[4] = { 1, 2, 2, 3 }, offsets[4] = { 0, 3, 4, 4 };
    tk_tensor *vt = bt_ids(4, values, false), *ot = bt_ids(4, offsets, false);
    const float r2 = sqrtf(3.0f);
    const float want[3][6] = {
        { 5, 50, 3, 30, 0, 0 },                 /* sum */
        { 5.0f / 3, 50.0f / 3, 3, 30, 0, 0 },   /* mean */
        { 5.0f / r2, 50.0f / r2, 3, 30, 0, 0 }, /* sqrtn */
    };
    for (int c = 0; c < 3; c++) {
        tk_block *e = tk_embeddings_new("emb");
        TK_CHECK(tk_embeddings_add_feature(e, "genres", NULL, 5, 2, (tk_combiner)c, UNIFORM, 1) == TK_OK);
        fill_rows(tk_block_param(e, "genres"));
        tk_ctx *ctx = tk_ctx_new(1);
        tk_value *in = tk_value_table(ctx);
        tk_value_set(ctx, in, "genres__values", vt);
        tk_value_set(ctx, in, "genres__offsets", ot);
        tk_value *out = tk_block_forward(ctx, e, in);
        TK_CHECK_MSG(out, "%s", tk_ctx_error(ctx));
        tk_tensor *g = tk_value_get(out, "genres");
        TK_CHECK_MSG(bt_shape2(g, 3, 2) && bt_near(g, want[c], 6, 1e-5), "combiner %s",
                     tk_combiner_name((tk_combiner)c));
        tk_ctx_free(ctx);
        /* gradients into the table (sparse rows, duplicates coalesced) */
        bt_case gc = { .block = e, .n = 2, .names = { "genres__values", "genres__offsets" }, .ins = { vt, ot } };
        tk_init_fill(tk_block_param(e, "genres"), UNIFORM, 5);
        TK_CHECK_MSG(bt_gradcheck("embeddings multi-hot", &gc, false, 1e-2) == 0, "%s",
                     tk_combiner_name((tk_combiner)c));
        tk_block_release(e);
    }
    tk_tensor_release(vt);
    tk_tensor_release(ot);
}

static void test_embeddings_shared_table(void) {
    tk_block *e = tk_embeddings_new("emb");
    TK_CHECK(tk_embeddings_add_feature(e, "item_id", "items", 6, 3, TK_COMBINER_MEAN, UNIFORM, 1) == TK_OK);
    TK_CHECK(tk_embeddings_add_feature(e, "last_item", "items", 6, 3, TK_COMBINER_MEAN, UNIFORM, 2) == TK_OK);
    TK_CHECK(tk_embeddings_add_feature(e, "user_id", NULL, 4, 3, TK_COMBINER_MEAN, UNIFORM, 3) == TK_OK);
    TK_CHECK(tk_block_num_params(e) == 2);
    TK_CHECK(strcmp(tk_block_param_name(e, 0), "items") == 0 && strcmp(tk_block_param_name(e, 1), "user_id") == 0);
    TK_CHECK(tk_block_count_params(e) == 6 * 3 + 4 * 3);
    /* a shared table must keep its shape; a feature is configured once */
    TK_CHECK(tk_embeddings_add_feature(e, "x", "items", 7, 3, TK_COMBINER_MEAN, UNIFORM, 1) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "feature 'x' shares table 'items' of [6, 3] but asks for [7, 3]");
    TK_CHECK(tk_embeddings_add_feature(e, "item_id", NULL, 6, 3, TK_COMBINER_MEAN, UNIFORM, 1) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "feature 'item_id' is configured already");
    TK_CHECK(tk_embeddings_add_feature(e, "y", NULL, 0, 3, TK_COMBINER_MEAN, UNIFORM, 1) == TK_ERROR);
    const int64_t a[4] = { 0, 5, 2, 2 }, b[4] = { 2, 2, 1, 0 }, u[4] = { 3, 0, 1, 2 };
    tk_tensor *at = bt_ids(4, a, false), *bt = bt_ids(4, b, true), *ut = bt_ids(4, u, false);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *in = tk_value_table(ctx);
    tk_value_set(ctx, in, "item_id", at);
    tk_value_set(ctx, in, "last_item", bt);
    tk_value_set(ctx, in, "user_id", ut);
    tk_value *out = tk_block_forward(ctx, e, in);
    TK_CHECK(out && out->n == 3);
    /* item_id row 2 and last_item row 0 read the same table row (a sum of one row is a
     * copy: the same bits) */
    tk_tensor *x = tk_value_get(out, "item_id"), *y = tk_value_get(out, "last_item");
    TK_CHECK(x && y && memcmp(tk_f32(x) + 2 * 3, tk_f32(y), 3 * sizeof(float)) == 0);
    tk_ctx_free(ctx);
    bt_case gc = { .block = e, .n = 3, .names = { "item_id", "last_item", "user_id" }, .ins = { at, bt, ut } };
    TK_CHECK(bt_gradcheck("embeddings shared", &gc, false, 1e-2) == 0);
    /* the l2 penalty: l2 * sum(v^2) of the looked-up vectors, in training only */
    tk_embeddings_set_l2(e, 0.5f);
    ctx = tk_ctx_new(1);
    in = tk_value_table(ctx);
    tk_value_set(ctx, in, "item_id", at);
    tk_value_set(ctx, in, "last_item", bt);
    tk_value_set(ctx, in, "user_id", ut);
    TK_CHECK(tk_block_forward(ctx, e, in) && tk_ctx_added_loss(ctx) == NULL);
    tk_ctx_set_training(ctx, true);
    out = tk_block_forward(ctx, e, in);
    double want = 0;
    for (int32_t i = 0; out && i < out->n; i++)
        for (int64_t j = 0; j < out->tensors[i]->numel; j++)
            want += tk_f32(out->tensors[i])[j] * tk_f32(out->tensors[i])[j];
    tk_tensor *l = tk_ctx_added_loss(ctx);
    TK_CHECK(l != NULL);
    if (l) TK_CHECK_NEAR(tk_f32(l)[0], 0.5 * want, 1e-5);
    tk_ctx_free(ctx);
    TK_CHECK(bt_gradcheck("embeddings l2", &gc, true, 1e-2) == 0);
    tk_tensor_release(at);
    tk_tensor_release(bt);
    tk_tensor_release(ut);
    tk_block_release(e);
}

static void test_embeddings_errors(void) {
    tk_block *e = tk_embeddings_new("emb");
    tk_embeddings_add_feature(e, "user_id", NULL, 5, 2, TK_COMBINER_MEAN, UNIFORM, 1);
    tk_block *query = tk_sequential_new("query");
    tk_sequential_append(query, e);
    const int64_t ids[2] = { 1, 7 };
    tk_tensor *it = bt_ids(2, ids, false);
    tk_tensor *ft = bt_randn(2, 1, 1);
    tk_ctx *ctx = tk_ctx_new(1);
    /* an id out of range names the table, with the block path */
    tk_value *in = tk_value_table(ctx);
    tk_value_set(ctx, in, "user_id", it);
    TK_CHECK(tk_block_forward(ctx, query, in) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "query/emb: ");
    TK_CHECK_ERROR(tk_ctx_error(ctx), "'user_id'");
    TK_CHECK_ERROR(tk_ctx_error(ctx), "id 7 out of range [0, 5)");
    /* a missing feature */
    tk_ctx_reset(ctx);
    in = tk_value_table(ctx);
    tk_value_set(ctx, in, "item_id", it);
    TK_CHECK(tk_block_forward(ctx, query, in) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "query/emb: embeddings: the input has no feature 'user_id'");
    /* half of a ragged feature */
    tk_ctx_reset(ctx);
    in = tk_value_table(ctx);
    tk_value_set(ctx, in, "user_id__values", it);
    TK_CHECK(tk_block_forward(ctx, e, in) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "feature 'user_id' has 'user_id__values' but no 'user_id__offsets'");
    /* float ids */
    tk_ctx_reset(ctx);
    in = tk_value_table(ctx);
    tk_value_set(ctx, in, "user_id", ft);
    TK_CHECK(tk_block_forward(ctx, e, in) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "feature 'user_id' must be int64 ids, got float32 [2, 1]");
    /* a tensor input */
    tk_ctx_reset(ctx);
    TK_CHECK(tk_block_forward(ctx, e, tk_value_of(ctx, ft)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "emb: embeddings needs a tabular input, got a tensor float32 [2, 1]");
    TK_CHECK(tk_embeddings_add_feature(query, "x", NULL, 5, 2, TK_COMBINER_MEAN, UNIFORM, 1) == TK_ERROR);
    tk_ctx_free(ctx);
    tk_tensor_release(it);
    tk_tensor_release(ft);
    tk_block_release(e);
    tk_block_release(query);
}

static void test_embeddings_gradcheck_one_hot(void) {
    tk_block *e = tk_embeddings_new("emb");
    tk_embeddings_add_feature(e, "user_id", NULL, 6, 4, TK_COMBINER_SUM, UNIFORM, 3);
    const int64_t ids[5] = { 0, 5, 3, 3, 1 };
    tk_tensor *it = bt_ids(5, ids, true);
    bt_case gc = { .block = e, .n = 1, .names = { "user_id" }, .ins = { it } };
    TK_CHECK(bt_gradcheck("embeddings one-hot", &gc, false, 1e-2) == 0);
    tk_tensor_release(it);
    tk_block_release(e);
}

/* Tables built as row parts (tk_embeddings_set_row_part): part p of P holds rows
 * [floor(p V / P), floor((p + 1) V / P)) of the table a whole build makes with the same
 * seed, bit for bit, for every initializer (truncated normals redraw, so a part cannot
 * start its stream at its first row's draw); flagged TK_TENSOR_ROW_SHARD. */
static void test_embeddings_row_parts(void) {
    const int64_t V = 37, D = 5;
    const int32_t P = 3;
    for (int k = TK_INIT_ZEROS; k < TK_INIT_COUNT; k++) {
        tk_init init;
        tk_init_from_name(tk_init_name((tk_init_kind)k), &init);
        tk_block *whole = tk_embeddings_new("e");
        TK_CHECK(tk_embeddings_add_feature(whole, "f", "t", V, D, TK_COMBINER_MEAN, init, 42) == TK_OK);
        const tk_tensor *w = tk_block_param(whole, "t");
        int64_t rows = 0;
        for (int32_t p = 0; p < P; p++) {
            tk_block *part = tk_embeddings_new("e");
            TK_CHECK(tk_embeddings_set_row_part(part, p, P) == TK_OK);
            TK_CHECK(tk_embeddings_add_feature(part, "f", "t", V, D, TK_COMBINER_MEAN, init, 42) == TK_OK);
            const tk_tensor *t = tk_block_param(part, "t");
            int64_t lo = V * p / P, n = V * (p + 1) / P - lo;
            TK_CHECK(t->shape[0] == n && t->shape[1] == D && (t->flags & TK_TENSOR_ROW_SHARD));
            TK_CHECK_MSG(memcmp(t->data, (const float *)w->data + lo * D, (size_t)(n * D) * sizeof(float)) == 0,
                         "%s: part %d differs from the whole table's rows", tk_init_name((tk_init_kind)k), (int)p);
            rows += n;
            tk_block_release(part);
        }
        TK_CHECK(rows == V);
        tk_block_release(whole);
    }
    /* a part's clone is that part (the same rows, flagged); its copy fills those rows of
     * the whole table a copy of the whole block makes with the same seed */
    tk_init glorot;
    tk_init_from_name("glorot_uniform", &glorot);
    tk_block *whole = tk_embeddings_new("e"), *part = tk_embeddings_new("e");
    TK_CHECK(tk_embeddings_add_feature(whole, "f", "t", V, D, TK_COMBINER_MEAN, glorot, 42) == TK_OK);
    TK_CHECK(tk_embeddings_set_row_part(part, 1, P) == TK_OK);
    TK_CHECK(tk_embeddings_add_feature(part, "f", "t", V, D, TK_COMBINER_MEAN, glorot, 42) == TK_OK);
    int64_t lo = V * 1 / P, n = V * 2 / P - lo;
    tk_block *clone = tk_block_clone(part), *copy = tk_block_copy(part, 9), *wcopy = tk_block_copy(whole, 9);
    TK_CHECK(clone && copy && wcopy);
    for (int c = 0; c < 2; c++) {
        const tk_block *x = c ? copy : clone;
        const tk_tensor *t = tk_block_param(x, "t");
        TK_CHECK(t->shape[0] == n && t->shape[1] == D && (t->flags & TK_TENSOR_ROW_SHARD));
        int32_t pp = -1, np = -1;
        int64_t rv = 0;
        TK_CHECK(tk_embeddings_row_part(x, 0, &pp, &np, &rv) && pp == 1 && np == P && rv == V);
    }
    const tk_tensor *pc = tk_block_param(clone, "t"), *pt = tk_block_param(part, "t");
    TK_CHECK(memcmp(pc->data, pt->data, (size_t)(n * D) * sizeof(float)) == 0);
    const tk_tensor *cp = tk_block_param(copy, "t"), *wc = tk_block_param(wcopy, "t");
    TK_CHECK(memcmp(cp->data, (const float *)wc->data + lo * D, (size_t)(n * D) * sizeof(float)) == 0);
    TK_CHECK(memcmp(cp->data, pt->data, (size_t)(n * D) * sizeof(float)) != 0); /* new weights */
    tk_block_release(clone);
    tk_block_release(copy);
    tk_block_release(wcopy);
    tk_block_release(part);
    tk_block_release(whole);
    tk_block *b = tk_embeddings_new("e");
    TK_CHECK(tk_embeddings_set_row_part(b, 2, 2) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "embeddings 'e': row part 2 of 2: need 0 <= part < parts");
    TK_CHECK(tk_embeddings_add_feature(b, "f", "t", V, D, TK_COMBINER_MEAN, tk_init_zeros(), 1) == TK_OK);
    TK_CHECK(tk_embeddings_set_row_part(b, 0, 2) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "the row part is set before the first table is added");
    tk_block_release(b);
}

int main(void) {
    TK_RUN(test_embeddings_one_hot);
    TK_RUN(test_embeddings_multi_hot);
    TK_RUN(test_embeddings_shared_table);
    TK_RUN(test_embeddings_errors);
    TK_RUN(test_embeddings_gradcheck_one_hot);
    TK_RUN(test_embeddings_row_parts);
    return tk_test_summary();
}
