/* Simple blocks: activation, l2norm, dropout, batch_norm, filter, as_tabular. */
#include "block_test.h"

static void test_activation_block(void) {
    const float xv[4] = { 1, -2, 3, -4 }, relu[4] = { 1, 0, 3, 0 };
    tk_tensor *x = bt_mat(2, 2, xv);
    tk_block *b = tk_activation_block_new("act", TK_ACT_RELU);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, b, tk_value_of(ctx, x));
    TK_CHECK(out && bt_near(tk_value_tensor(out), relu, 4, 0)); /* max(x, 0) is exact */
    /* tabular: applied to each entry */
    tk_value *v = tk_value_table(ctx);
    tk_value_set(ctx, v, "p", x);
    tk_value_set(ctx, v, "q", x);
    out = tk_block_forward(ctx, b, v);
    TK_CHECK(tk_value_is_tabular(out) && out->n == 2);
    TK_CHECK(out && bt_near(tk_value_get(out, "p"), relu, 4, 0) && bt_near(tk_value_get(out, "q"), relu, 4, 0));
    TK_CHECK(tk_activation_block_new("bad", (tk_activation)-1) == NULL);
    tk_ctx_free(ctx);
    for (int a = 0; a < TK_ACT_COUNT; a++) {
        tk_block *ab = tk_activation_block_new("act", (tk_activation)a);
        bt_case c = { .block = ab, .ins = { bt_randn(3, 4, 40 + (uint64_t)a) } };
        TK_CHECK_MSG(bt_gradcheck("activation", &c, false, 2e-2) == 0, "%s", tk_activation_name((tk_activation)a));
        tk_tensor_release(c.ins[0]);
        tk_block_release(ab);
    }
    tk_tensor_release(x);
    tk_block_release(b);
}

static void test_l2norm_block(void) {
    const float xv[4] = { 3, 4, 0, 5 }, want[4] = { 0.6f, 0.8f, 0, 1 };
    tk_tensor *x = bt_mat(2, 2, xv);
    tk_block *b = tk_l2norm_block_new("l2");
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, b, tk_value_of(ctx, x));
    TK_CHECK(out && bt_near(tk_value_tensor(out), want, 4, 1e-6));
    tk_value *v = tk_value_table(ctx);
    tk_value_set(ctx, v, "query", x);
    out = tk_block_forward(ctx, b, v);
    TK_CHECK(out && bt_near(tk_value_get(out, "query"), want, 4, 1e-6));
    tk_ctx_free(ctx);
    bt_case c = { .block = b, .ins = { bt_randn(3, 5, 2) } };
    TK_CHECK(bt_gradcheck("l2norm", &c, false, 1e-2) == 0);
    bt_case t = { .block = b, .n = 2, .names = { "query", "item" }, .ins = { bt_randn(3, 5, 3), bt_randn(3, 5, 4) } };
    TK_CHECK(bt_gradcheck("l2norm tabular", &t, false, 1e-2) == 0);
    tk_tensor_release(c.ins[0]);
    tk_tensor_release(t.ins[0]);
    tk_tensor_release(t.ins[1]);
    tk_tensor_release(x);
    tk_block_release(b);
}

static void test_dropout_block(void) {
    tk_block *b = tk_dropout_block_new("drop", 0.5f);
    tk_tensor *x = bt_randn(50, 40, 1);
    tk_ctx *ctx = tk_ctx_new(3);
    /* evaluation: identity (the input's values: exact) */
    tk_value *out = tk_block_forward(ctx, b, tk_value_of(ctx, x));
    TK_CHECK(out && bt_near(tk_value_tensor(out), tk_f32(x), x->numel, 0));
    /* training: each element dropped or scaled by 2 */
    tk_ctx_set_training(ctx, true);
    out = tk_block_forward(ctx, b, tk_value_of(ctx, x));
    tk_tensor *y = tk_value_tensor(out);
    int64_t zeros = 0, bad = 0;
    for (int64_t i = 0; y && i < y->numel; i++) {
        float v = tk_f32(y)[i], xi = tk_f32(x)[i];
        if (v == 0)
            zeros++;
        else if (fabsf(v - 2 * xi) > 1e-6f)
            bad++;
    }
    TK_CHECK(y && bad == 0);
    TK_CHECK_MSG(zeros > 800 && zeros < 1200, "%lld zeros of 2000", (long long)zeros);
    tk_ctx_free(ctx);
    TK_CHECK(tk_dropout_block_new("bad", 1.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "rate must be in [0, 1)");
    bt_case c = { .block = b, .ins = { bt_randn(4, 6, 5) } };
    TK_CHECK(bt_gradcheck("dropout training", &c, true, 1e-2) == 0);
    tk_tensor_release(c.ins[0]);
    tk_tensor_release(x);
    tk_block_release(b);
}

static void test_batch_norm_block(void) {
    const float xv[4] = { 1, 2, 3, 6 };
    tk_tensor *x = bt_mat(2, 2, xv);
    tk_block *b = tk_batch_norm_block_new("bn", 0, 0.99f, 1e-3f);
    TK_CHECK(!tk_block_is_built(b));
    tk_ctx *ctx = tk_ctx_new(1);
    tk_ctx_set_training(ctx, true);
    tk_value *out = tk_block_forward(ctx, b, tk_value_of(ctx, x));
    TK_CHECK_MSG(out, "%s", tk_ctx_error(ctx));
    TK_CHECK(tk_block_is_built(b) && tk_block_num_params(b) == 4);
    TK_CHECK(strcmp(tk_block_param_name(b, 0), "gamma") == 0 &&
             strcmp(tk_block_param_name(b, 3), "moving_variance") == 0);
    TK_CHECK(tk_block_param_trainable(b, 0) && tk_block_param_trainable(b, 1) && !tk_block_param_trainable(b, 2) &&
             !tk_block_param_trainable(b, 3));
    /* batch mean [2, 4], biased variance [1, 4] */
    float s0 = 1.0f / sqrtf(1.001f), s1 = 2.0f / sqrtf(4.001f);
    const float want[4] = { -s0, -s1, s0, s1 };
    TK_CHECK(out && bt_near(tk_value_tensor(out), want, 4, 1e-5));
    /* the forward did not write the running statistics; the deferred update does */
    tk_tensor *mm = tk_block_param(b, "moving_mean"), *mv = tk_block_param(b, "moving_variance");
    TK_CHECK(tk_f32(mm)[0] == 0 && tk_f32(mv)[0] == 1); /* the initial values, untouched */
    tk_ctx_apply_updates(ctx);
    TK_CHECK_NEAR(tk_f32(mm)[0], 0.02, 1e-6);
    TK_CHECK_NEAR(tk_f32(mm)[1], 0.04, 1e-6);
    TK_CHECK_NEAR(tk_f32(mv)[0], 0.99 + 0.01 * 2, 1e-6); /* unbiased batch variance 2 and 8 */
    TK_CHECK_NEAR(tk_f32(mv)[1], 0.99 + 0.01 * 8, 1e-6);
    /* evaluation uses the running statistics */
    tk_ctx_reset(ctx);
    tk_ctx_set_training(ctx, false);
    out = tk_block_forward(ctx, b, tk_value_of(ctx, x));
    float e0 = (1 - 0.02f) / sqrtf(1.01f + 1e-3f);
    TK_CHECK(out && fabsf(tk_f32(tk_value_tensor(out))[0] - e0) < 1e-5f);
    /* another width after the build */
    tk_ctx_reset(ctx);
    tk_tensor *x3 = bt_randn(2, 3, 1);
    TK_CHECK(tk_block_forward(ctx, b, tk_value_of(ctx, x3)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "bn: input has 3 features, expected 2");
    tk_ctx_free(ctx);
    tk_tensor_release(x3);
    tk_block_release(b);
    /* gradients, training and evaluation, through gamma, beta and x */
    for (int training = 0; training < 2; training++) {
        tk_block *bn = tk_batch_norm_block_new("bn", 5, 0.9f, 1e-3f);
        bt_set_param(bn, "gamma", (const float[]){ 1.5f, 0.5f, -1, 2, 1 });
        bt_case c = { .block = bn, .ins = { bt_randn(6, 5, 9) } };
        TK_CHECK_MSG(bt_gradcheck("batch_norm", &c, training, 2e-2) == 0, "training %d", training);
        tk_tensor_release(c.ins[0]);
        tk_block_release(bn);
    }
    tk_tensor_release(x);
}

static void test_filter_block(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *t = bt_randn(2, 2, 1);
    tk_value *v = tk_value_table(ctx);
    const char *keys[5] = { "a", "b__values", "b__offsets", "c", "bb" };
    for (int i = 0; i < 5; i++) tk_value_set(ctx, v, keys[i], t);
    const char *sel[2] = { "b", "c" };
    tk_block *keep = tk_filter_block_new("keep", 2, sel, false);
    tk_block *drop = tk_filter_block_new("drop", 2, sel, true);
    tk_value *out = tk_block_forward(ctx, keep, v);
    TK_CHECK(out && out->n == 3);
    TK_CHECK(out && strcmp(out->names[0], "b__values") == 0 && strcmp(out->names[1], "b__offsets") == 0 &&
             strcmp(out->names[2], "c") == 0);
    out = tk_block_forward(ctx, drop, v);
    TK_CHECK(out && out->n == 2 && tk_value_get(out, "a") && tk_value_get(out, "bb"));
    /* an entry's own name selects that entry alone */
    const char *part[1] = { "b__offsets" };
    tk_block *one = tk_filter_block_new("one", 1, part, false);
    out = tk_block_forward(ctx, one, v);
    TK_CHECK(out && out->n == 1 && tk_value_get(out, "b__offsets"));
    tk_block_release(one);
    TK_CHECK(tk_block_forward(ctx, keep, tk_value_of(ctx, t)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "keep: filter needs a tabular input, got a tensor float32 [2, 2]");
    tk_ctx_free(ctx);
    tk_tensor_release(t);
    tk_block_release(keep);
    tk_block_release(drop);
}

static void test_as_tabular_block(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *t = bt_randn(2, 2, 1);
    tk_block *b = tk_as_tabular_block_new("tab", "emb");
    tk_value *out = tk_block_forward(ctx, b, tk_value_of(ctx, t));
    TK_CHECK(tk_value_is_tabular(out) && out->n == 1 && tk_value_get(out, "emb") == t);
    TK_CHECK(tk_block_forward(ctx, b, out) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "tab: as_tabular needs a tensor input, got a tabular value {emb}");
    TK_CHECK(tk_as_tabular_block_new("x", "") == NULL);
    tk_ctx_free(ctx);
    tk_tensor_release(t);
    tk_block_release(b);
}

int main(void) {
    TK_RUN(test_activation_block);
    TK_RUN(test_l2norm_block);
    TK_RUN(test_dropout_block);
    TK_RUN(test_batch_norm_block);
    TK_RUN(test_filter_block);
    TK_RUN(test_as_tabular_block);
    return tk_test_summary();
}
