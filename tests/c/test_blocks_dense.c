/* The dense block: values, lazy input width, width errors with block paths, the kernel
 * regulariser, and gradients through every activation. */
#include "block_test.h"

static const float X23[6] = { 1, 2, 3, -1, 0, 1 };
static const float K32[6] = { 1, 0, 0, 1, 1, 1 };
static const float BIAS[2] = { -0.5f, -1 };

static tk_block *dense_3x2(tk_activation act) {
    tk_block *d = tk_dense_new("dense_0", 3, 2, act, true, tk_init_default_kernel(), tk_init_zeros(), 1);
    bt_set_param(d, "kernel", K32);
    bt_set_param(d, "bias", BIAS);
    return d;
}

static void test_dense_values(void) {
    /* x @ K = [[4, 5], [0, 1]]; + bias = [[3.5, 4], [-0.5, 0]] */
    const float linear[4] = { 3.5f, 4, -0.5f, 0 };
    const float relu[4] = { 3.5f, 4, 0, 0 };
    float sigmoid[4];
    for (int i = 0; i < 4; i++) sigmoid[i] = 1.0f / (1.0f + expf(-linear[i]));
    tk_tensor *x = bt_mat(2, 3, X23);
    tk_activation acts[3] = { TK_ACT_LINEAR, TK_ACT_RELU, TK_ACT_SIGMOID };
    const float *want[3] = { linear, relu, sigmoid };
    for (int a = 0; a < 3; a++) {
        tk_block *d = dense_3x2(acts[a]);
        tk_ctx *ctx = tk_ctx_new(1);
        tk_value *out = tk_block_forward(ctx, d, tk_value_of(ctx, x));
        TK_CHECK_MSG(out, "%s", tk_ctx_error(ctx));
        TK_CHECK(out && bt_shape2(tk_value_tensor(out), 2, 2));
        TK_CHECK(out && bt_near(tk_value_tensor(out), want[a], 4, 1e-6));
        tk_ctx_free(ctx);
        tk_block_release(d);
    }
    tk_tensor_release(x);
}

static void test_dense_no_bias_and_params(void) {
    tk_block *d = tk_dense_new("d", 3, 2, TK_ACT_LINEAR, false, tk_init_default_kernel(), tk_init_zeros(), 1);
    TK_CHECK(tk_block_num_params(d) == 1);
    TK_CHECK(tk_block_param(d, "bias") == NULL);
    TK_CHECK(tk_block_count_params(d) == 6);
    bt_set_param(d, "kernel", K32);
    tk_tensor *x = bt_mat(2, 3, X23);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, d, tk_value_of(ctx, x));
    const float want[4] = { 4, 5, 0, 1 };
    TK_CHECK(out && bt_near(tk_value_tensor(out), want, 4, 1e-6));
    tk_ctx_free(ctx);
    tk_tensor_release(x);
    tk_block_release(d);
}

static void test_dense_3d_input(void) {
    /* [2, 1, 3] -> [2, 1, 2], the product applied on the last axis */
    int64_t shape[3] = { 2, 1, 3 };
    tk_tensor *x = tk_test_tensor(3, shape, X23);
    tk_block *d = dense_3x2(TK_ACT_LINEAR);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, d, tk_value_of(ctx, x));
    tk_tensor *y = tk_value_tensor(out);
    const float want[4] = { 3.5f, 4, -0.5f, 0 };
    TK_CHECK_MSG(y, "%s", tk_ctx_error(ctx));
    TK_CHECK(y && y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 1 && y->shape[2] == 2);
    TK_CHECK(y && bt_near(y, want, 4, 1e-6));
    tk_ctx_free(ctx);
    tk_tensor_release(x);
    tk_block_release(d);
}

static void test_dense_lazy_build(void) {
    tk_block *d = tk_dense_new("dense_0", 0, 4, TK_ACT_RELU, true, tk_init_default_kernel(), tk_init_zeros(), 3);
    TK_CHECK(!tk_block_is_built(d));
    TK_CHECK(tk_block_num_params(d) == 0);
    TK_CHECK(tk_block_count_params(d) == 0);
    tk_tensor *x = bt_randn(5, 257, 1);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, d, tk_value_of(ctx, x));
    TK_CHECK_MSG(out, "%s", tk_ctx_error(ctx));
    TK_CHECK(out && bt_shape2(tk_value_tensor(out), 5, 4));
    TK_CHECK(tk_block_is_built(d));
    TK_CHECK(tk_block_num_params(d) == 2);
    tk_tensor *k = tk_block_param(d, "kernel");
    TK_CHECK(bt_shape2(k, 257, 4));
    TK_CHECK(tk_block_count_params(d) == 257 * 4 + 4);
    /* the same seed draws the same kernel, bit for bit: built lazily or eagerly (one
     * seeded generator, the same draws, no arithmetic that depends on the build path) */
    tk_block *e = tk_dense_new("dense_0", 257, 4, TK_ACT_RELU, true, tk_init_default_kernel(), tk_init_zeros(), 3);
    TK_CHECK(memcmp(tk_block_param(e, "kernel")->data, k->data, (size_t)k->numel * sizeof(float)) == 0);
    tk_block_release(e);
    /* after the build, another width is an error */
    tk_ctx_reset(ctx);
    tk_tensor *x2 = bt_randn(5, 193, 2);
    TK_CHECK(tk_block_forward(ctx, d, tk_value_of(ctx, x2)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "dense_0: input has 193 features, expected 257");
    TK_CHECK(tk_block_num_params(d) == 2);
    tk_ctx_free(ctx);
    tk_tensor_release(x);
    tk_tensor_release(x2);
    tk_block_release(d);
}

static void test_dense_error_paths(void) {
    /* a failing child: "mlp/dense_1: input has 12 features, expected 16" */
    tk_block *mlp = tk_sequential_new("mlp");
    tk_block *d0 = tk_dense_new("dense_0", 0, 12, TK_ACT_RELU, true, tk_init_default_kernel(), tk_init_zeros(), 1);
    tk_block *d1 = tk_dense_new("dense_1", 16, 1, TK_ACT_LINEAR, true, tk_init_default_kernel(), tk_init_zeros(), 2);
    tk_sequential_append(mlp, d0);
    tk_sequential_append(mlp, d1);
    tk_block *query = tk_sequential_new("query");
    tk_sequential_append(query, mlp);
    tk_tensor *x = bt_randn(3, 5, 1);
    tk_ctx *ctx = tk_ctx_new(1);
    TK_CHECK(tk_block_forward(ctx, mlp, tk_value_of(ctx, x)) == NULL);
    TK_CHECK_MSG(strcmp(tk_ctx_error(ctx), "mlp/dense_1: input has 12 features, expected 16") == 0, "got \"%s\"",
                 tk_ctx_error(ctx));
    tk_ctx_reset(ctx);
    TK_CHECK(tk_block_forward(ctx, query, tk_value_of(ctx, x)) == NULL);
    TK_CHECK_MSG(strcmp(tk_ctx_error(ctx), "query/mlp/dense_1: input has 12 features, expected 16") == 0, "got \"%s\"",
                 tk_ctx_error(ctx));
    /* a tabular value is concatenated first, then checked like a tensor */
    tk_ctx_reset(ctx);
    tk_value *tab = tk_value_table(ctx);
    tk_value_set(ctx, tab, "a", x);
    TK_CHECK(tk_block_forward(ctx, d1, tab) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "dense_1: input has 5 features, expected 16");
    /* int64 input */
    tk_ctx_reset(ctx);
    const int64_t ids[3] = { 1, 2, 3 };
    tk_tensor *it = bt_ids(3, ids, true);
    TK_CHECK(tk_block_forward(ctx, d1, tk_value_of(ctx, it)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "dense_1: dense needs a float32 input, got int64 [3, 1]");
    /* a NULL input and an earlier failure */
    tk_ctx_reset(ctx);
    TK_CHECK(tk_block_forward(ctx, d1, NULL) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "dense_1: input is NULL");
    tk_ctx_reset(ctx);
    tk_ctx_fail(ctx, "earlier");
    TK_CHECK(tk_block_forward(ctx, d1, tk_value_of(ctx, x)) == NULL);
    TK_CHECK(strcmp(tk_ctx_error(ctx), "earlier") == 0);
    /* bad constructor arguments: no abort */
    TK_CHECK(tk_dense_new("bad", 3, -1, TK_ACT_LINEAR, true, tk_init_default_kernel(), tk_init_zeros(), 1) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "units and the input width must not be negative");
    TK_CHECK(tk_dense_new("bad", 3, 2, (tk_activation)99, true, tk_init_default_kernel(), tk_init_zeros(), 1) == NULL);
    tk_ctx_free(ctx);
    tk_tensor_release(x);
    tk_tensor_release(it);
    tk_block_release(d0);
    tk_block_release(d1);
    tk_block_release(mlp);
    tk_block_release(query);
}

static void test_dense_kernel_l2(void) {
    tk_block *d = dense_3x2(TK_ACT_LINEAR);
    tk_dense_set_kernel_l2(d, 0.25f);
    tk_tensor *x = bt_mat(2, 3, X23);
    tk_ctx *ctx = tk_ctx_new(1);
    TK_CHECK(tk_block_forward(ctx, d, tk_value_of(ctx, x)) != NULL);
    TK_CHECK(tk_ctx_added_loss(ctx) == NULL); /* evaluation: no regulariser */
    tk_ctx_reset(ctx);
    tk_ctx_set_training(ctx, true);
    TK_CHECK(tk_block_forward(ctx, d, tk_value_of(ctx, x)) != NULL);
    tk_tensor *l = tk_ctx_added_loss(ctx);
    TK_CHECK(l && l->numel == 1);
    if (l) TK_CHECK_NEAR(tk_f32(l)[0], 0.25 * 4.0, 1e-6); /* K has four ones */
    tk_ctx_free(ctx);
    bt_case c = { .block = d, .ins = { x } };
    TK_CHECK(bt_gradcheck("dense kernel_l2", &c, true, 1e-2) == 0);
    tk_tensor_release(x);
    tk_block_release(d);
}

static void test_dense_gradcheck_activations(void) {
    for (int a = 0; a < TK_ACT_COUNT; a++) {
        tk_block *d = tk_dense_new("d", 0, 3, (tk_activation)a, true, tk_init_default_kernel(), tk_init_zeros(), 11);
        tk_tensor *x = bt_randn(4, 5, 100 + (uint64_t)a);
        bt_case c = { .block = d, .ins = { x } };
        char what[64];
        snprintf(what, sizeof what, "dense %s", tk_activation_name((tk_activation)a));
        int bad = bt_gradcheck(what, &c, false, 2e-2);
        TK_CHECK_MSG(bad == 0, "%s: %d mismatches", what, bad);
        tk_tensor_release(x);
        tk_block_release(d);
    }
}

int main(void) {
    TK_RUN(test_dense_values);
    TK_RUN(test_dense_no_bias_and_params);
    TK_RUN(test_dense_3d_input);
    TK_RUN(test_dense_lazy_build);
    TK_RUN(test_dense_error_paths);
    TK_RUN(test_dense_kernel_l2);
    TK_RUN(test_dense_gradcheck_activations);
    return tk_test_summary();
}
