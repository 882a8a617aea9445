/* Steady state: a training step built from every op allocates nothing once the arena has
 * settled (tk_ctx_reset keeps the memory). */
#include "op_test.h"

typedef struct {
    tk_tensor *user_table, *genre_table, *w0, *b0, *gamma, *beta, *rm, *rv, *w1, *b1, *item_table;
    tk_tensor *user_ids, *genre_ids, *genre_off, *item_ids, *labels, *targets;
} model;

static model model_new(void) {
    model m;
    m.user_table = op_leaf_2d(50, 8, 1);
    m.genre_table = op_leaf_2d(20, 8, 2);
    m.w0 = op_leaf_2d(16, 12, 3);
    m.b0 = op_leaf_1d(12, 4);
    m.gamma = op_leaf_1d(12, 5);
    m.beta = op_leaf_1d(12, 6);
    m.rm = tk_tensor_new_1d(TK_F32, 12);
    m.rv = tk_tensor_new_1d(TK_F32, 12);
    tk_tensor_fill(m.rv, 1.0);
    m.w1 = op_leaf_2d(12, 8, 7);
    m.b1 = op_leaf_1d(8, 8);
    m.item_table = op_leaf_2d(30, 8, 9);
    m.user_ids = op_i64(4, (int64_t[]){ 3, 49, 3, 0 });
    m.genre_ids = op_i64(7, (int64_t[]){ 1, 2, 2, 19, 5, 6, 1 });
    m.genre_off = op_i64(5, (int64_t[]){ 0, 3, 3, 4, 7 });
    m.item_ids = op_i64(4, (int64_t[]){ 7, 8, 29, 7 });
    m.labels = op_i64(4, (int64_t[]){ 0, 1, 2, 3 });
    m.targets = tk_tensor_new_2d(TK_F32, 4, 1);
    tk_tensor_fill(m.targets, 1.0);
    return m;
}

static void model_free(model *m) {
    op_release(m->user_table, m->genre_table, m->w0, m->b0, m->gamma, m->beta, m->rm, m->rv, m->w1, m->b1,
               m->item_table, m->user_ids, m->genre_ids, m->genre_off, m->item_ids, m->labels, m->targets, NULL);
}

/* One step; returns the loss or NULL. */
static tk_tensor *step(tk_ctx *ctx, model *m) {
    tk_tensor *u = tk_embedding_lookup(ctx, m->user_table, m->user_ids, NULL, TK_COMBINER_SUM, "user_id");
    tk_tensor *g = tk_embedding_lookup(ctx, m->genre_table, m->genre_ids, m->genre_off, TK_COMBINER_SQRTN, "genres");
    tk_tensor *parts[2] = { u, g };
    tk_tensor *h = tk_concat(ctx, 2, parts);
    h = tk_dense(ctx, h, m->w0, m->b0, TK_ACT_RELU);
    h = tk_batch_norm(ctx, h, m->gamma, m->beta, m->rm, m->rv, 0.99f, 1e-3f);
    h = tk_dropout(ctx, h, 0.2f);
    h = tk_dense(ctx, h, m->w1, m->b1, TK_ACT_GELU);
    tk_tensor *q = tk_l2norm(ctx, h);
    tk_tensor *item = tk_embedding_lookup(ctx, m->item_table, m->item_ids, NULL, TK_COMBINER_MEAN, "item_id");
    tk_tensor *c = tk_l2norm(ctx, tk_activate(ctx, item, TK_ACT_TANH));
    tk_tensor *logits = tk_scale(ctx, tk_matmul(ctx, q, c, false, true), 20.0f);
    tk_tensor *loss = tk_cross_entropy(ctx, logits, m->labels, NULL);
    tk_tensor *cos = tk_cosine(ctx, q, c);
    loss = tk_add(ctx, loss, tk_mse_loss(ctx, cos, m->targets));
    loss = tk_add(ctx, loss, tk_bce_with_logits(ctx, cos, m->targets));
    tk_tensor *pair[2] = { q, c };
    tk_tensor *st = tk_stack(ctx, 2, pair);
    tk_tensor *flat = tk_reshape(ctx, st, 2, (int64_t[]){ 4, -1 });
    tk_tensor *ls = tk_log_softmax(ctx, tk_transpose(ctx, flat));
    loss = tk_sub(ctx, loss, tk_scale(ctx, tk_mean(ctx, ls, -1, false), 1e-3f));
    tk_tensor *e =
        tk_sum(ctx, tk_square(ctx, tk_sqrt(ctx, tk_exp(ctx, tk_div(ctx, q, tk_add_scalar(ctx, c, 3))))), 1, false);
    return tk_add(ctx, loss, tk_scale(ctx, tk_sum(ctx, tk_log(ctx, e), -1, false), 1e-3f));
}

static void test_steady_state(void) {
    model m = model_new();
    tk_ctx *ctx = tk_ctx_new(3);
    uint64_t counts[6];
    size_t caps[6];
    for (int i = 0; i < 6; i++) {
        tk_ctx_reset(ctx);
        tk_ctx_set_training(ctx, true);
        tk_tensor *loss = step(ctx, &m);
        TK_CHECK_MSG(loss && tk_backward(ctx, loss) == TK_OK, "%s", tk_ctx_error(ctx));
        TK_CHECK(tk_ctx_sparse_grad(ctx, m.user_table) != NULL);
        TK_CHECK(tk_ctx_sparse_grad(ctx, m.genre_table) != NULL);
        TK_CHECK(tk_ctx_grad(ctx, m.item_table) != NULL);
        TK_CHECK(tk_ctx_grad(ctx, m.w0) != NULL && tk_ctx_grad(ctx, m.gamma) != NULL);
        tk_ctx_apply_updates(ctx);
        counts[i] = tk_ctx_alloc_count(ctx);
        caps[i] = tk_ctx_arena_capacity(ctx);
    }
    TK_CHECK(counts[0] > 0); /* the first step did allocate */
    for (int i = 3; i < 6; i++) {
        TK_CHECK_MSG(counts[i] == counts[2], "step %d: %llu allocations, step 2: %llu", i,
                     (unsigned long long)counts[i], (unsigned long long)counts[2]);
        TK_CHECK(caps[i] == caps[2]);
    }
    /* the running mean moved (updates were applied each step) */
    TK_CHECK(tk_f32(m.rm)[0] != 0.0f || tk_f32(m.rm)[1] != 0.0f);
    tk_ctx_free(ctx);
    model_free(&m);
}

/* The same step as a gradient check over a few leaves (with dropout in training). */
static tk_tensor *step_fn(tk_ctx *ctx, void *ud) { return step(ctx, ud); }

static void test_whole_graph_grad(void) {
    model m = model_new();
    tk_tensor *leaves[5] = { m.user_table, m.genre_table, m.w0, m.gamma, m.item_table };
    TK_CHECK(gradcheck_run("whole graph", step_fn, &m, 5, leaves, true, 2e-2) == 0);
    model_free(&m);
}

int main(void) {
    TK_RUN(test_steady_state);
    TK_RUN(test_whole_graph_grad);
    return tk_test_summary();
}
