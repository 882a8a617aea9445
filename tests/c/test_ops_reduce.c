/* sum and mean: every axis, keepdim, gradients and errors. */
#include "op_test.h"

/* tol 0: sums of a few small integers (and their halves) are exact in any order */
static void test_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s23[2] = { 2, 3 };
    tk_tensor *a = op_f32(2, s23, (float[]){ 1, 2, 3, 4, 5, 6 });
    tk_tensor *y = tk_sum(ctx, a, -1, false);
    OP_CHECK_SHAPE(y, 1);
    OP_CHECK_VALUES(y, ((float[]){ 21 }), 0);
    y = tk_sum(ctx, a, -1, true);
    OP_CHECK_SHAPE(y, 1, 1);
    OP_CHECK_VALUES(y, ((float[]){ 21 }), 0);
    y = tk_mean(ctx, a, -1, false);
    OP_CHECK_VALUES(y, ((float[]){ 3.5f }), 1e-7);
    y = tk_sum(ctx, a, 0, false);
    OP_CHECK_SHAPE(y, 3);
    OP_CHECK_VALUES(y, ((float[]){ 5, 7, 9 }), 0);
    y = tk_sum(ctx, a, 0, true);
    OP_CHECK_SHAPE(y, 1, 3);
    y = tk_sum(ctx, a, 1, false);
    OP_CHECK_SHAPE(y, 2);
    OP_CHECK_VALUES(y, ((float[]){ 6, 15 }), 0);
    y = tk_mean(ctx, a, 1, true);
    OP_CHECK_SHAPE(y, 2, 1);
    OP_CHECK_VALUES(y, ((float[]){ 2, 5 }), 1e-7);
    y = tk_mean(ctx, a, 0, false);
    OP_CHECK_VALUES(y, ((float[]){ 2.5f, 3.5f, 4.5f }), 1e-7);
    /* 3-D, middle axis: [2, 2, 2] over axis 1 */
    int64_t s222[3] = { 2, 2, 2 };
    tk_tensor *c = op_f32(3, s222, (float[]){ 1, 2, 3, 4, 5, 6, 7, 8 });
    y = tk_sum(ctx, c, 1, false);
    OP_CHECK_SHAPE(y, 2, 2);
    OP_CHECK_VALUES(y, ((float[]){ 4, 6, 12, 14 }), 0);
    y = tk_mean(ctx, c, 2, true);
    OP_CHECK_SHAPE(y, 2, 2, 1);
    OP_CHECK_VALUES(y, ((float[]){ 1.5f, 3.5f, 5.5f, 7.5f }), 1e-7);
    /* a vector over its only axis is [1] */
    int64_t s3 = 3;
    tk_tensor *v = op_f32(1, &s3, (float[]){ 1, 2, 4 });
    y = tk_sum(ctx, v, 0, false);
    OP_CHECK_SHAPE(y, 1);
    OP_CHECK_VALUES(y, ((float[]){ 7 }), 0);
    /* accumulation in double: 1e6 ones plus a large value */
    tk_tensor *big = tk_tensor_new_1d(TK_F32, 1000001);
    tk_tensor_fill(big, 1.0);
    tk_f32(big)[0] = 1e8f;
    y = tk_sum(ctx, big, -1, false);
    OP_CHECK_VALUES(y, ((float[]){ 1e8f + 1e6f }), 1e-7);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(a, c, v, big, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    tk_tensor *a;
    int axis;
    bool keepdim, mean;
} red_case;

static tk_tensor *red_fn(tk_ctx *ctx, void *ud) {
    red_case *c = ud;
    tk_tensor *y = c->mean ? tk_mean(ctx, c->a, c->axis, c->keepdim) : tk_sum(ctx, c->a, c->axis, c->keepdim);
    return gradcheck_project(ctx, y);
}

static void test_grads(void) {
    int64_t s[3] = { 2, 3, 4 };
    for (int mean = 0; mean < 2; mean++)
        for (int axis = -1; axis < 3; axis++)
            for (int keep = 0; keep < 2; keep++) {
                red_case c = { op_leaf(3, s, 1, 50 + axis), axis, keep, mean };
                char what[48];
                snprintf(what, sizeof what, "%s axis %d%s", mean ? "mean" : "sum", axis, keep ? " keepdim" : "");
                TK_CHECK_MSG(gradcheck_run(what, red_fn, &c, 1, &c.a, false, 1e-2) == 0, "%s", what);
                tk_tensor_release(c.a);
            }
}

static void test_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a = tk_tensor_new_2d(TK_F32, 2, 3), *ids = tk_tensor_new_1d(TK_I64, 3);
    TK_CHECK(tk_sum(ctx, a, 2, false) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "sum: axis 2 out of range for [2, 3] (0 to 1, or -1 for all elements)");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_mean(ctx, a, -2, false) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "mean: axis -2 out of range");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_sum(ctx, ids, -1, false) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "sum: a must be float32, got int64 [3]");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_mean(ctx, NULL, -1, false) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "mean: input is NULL");
    op_release(a, ids, NULL);
    tk_ctx_free(ctx);
}

int main(void) {
    TK_RUN(test_values);
    TK_RUN(test_grads);
    TK_RUN(test_errors);
    return tk_test_summary();
}
