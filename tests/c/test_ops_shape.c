/* concat (last axis, any count) and stack (new last axis). */
#include "op_test.h"

/* tol 0 here: concat and stack copy values, exact */
static void test_concat_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s21[2] = { 2, 1 }, s22[2] = { 2, 2 };
    tk_tensor *a = op_f32(2, s21, (float[]){ 1, 2 });
    tk_tensor *b = op_f32(2, s22, (float[]){ 3, 4, 5, 6 });
    tk_tensor *ts[2] = { a, b };
    tk_tensor *y = tk_concat(ctx, 2, ts);
    OP_CHECK_SHAPE(y, 2, 3);
    OP_CHECK_VALUES(y, ((float[]){ 1, 3, 4, 2, 5, 6 }), 0);
    /* six inputs (more than a node holds inline) */
    tk_tensor *six[6] = { a, b, a, b, a, a };
    y = tk_concat(ctx, 6, six);
    OP_CHECK_SHAPE(y, 2, 8);
    OP_CHECK_VALUES(y, ((float[]){ 1, 3, 4, 1, 3, 4, 1, 1, 2, 5, 6, 2, 5, 6, 2, 2 }), 0);
    /* one input: a copy */
    y = tk_concat(ctx, 1, ts);
    OP_CHECK_VALUES(y, ((float[]){ 1, 2 }), 0);
    /* 1-D and int64 */
    tk_tensor *i1 = tk_tensor_new_1d(TK_I64, 2), *i2 = tk_tensor_new_1d(TK_I64, 1);
    tk_i64(i1)[0] = 7, tk_i64(i1)[1] = 8, tk_i64(i2)[0] = 9;
    tk_tensor *iv[2] = { i1, i2 };
    y = tk_concat(ctx, 2, iv);
    TK_CHECK(y && y->dtype == TK_I64 && y->numel == 3 && tk_i64(y)[0] == 7 && tk_i64(y)[2] == 9);
    /* 3-D */
    int64_t s212[3] = { 2, 1, 2 }, s211[3] = { 2, 1, 1 };
    tk_tensor *c = op_f32(3, s212, (float[]){ 1, 2, 3, 4 }), *d = op_f32(3, s211, (float[]){ 9, 8 });
    tk_tensor *cd[2] = { c, d };
    y = tk_concat(ctx, 2, cd);
    OP_CHECK_SHAPE(y, 2, 1, 3);
    OP_CHECK_VALUES(y, ((float[]){ 1, 2, 9, 3, 4, 8 }), 0);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(a, b, i1, i2, c, d, NULL);
    tk_ctx_free(ctx);
}

static void test_stack_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s22[2] = { 2, 2 };
    tk_tensor *a = op_f32(2, s22, (float[]){ 1, 2, 3, 4 });
    tk_tensor *b = op_f32(2, s22, (float[]){ 5, 6, 7, 8 });
    tk_tensor *ts[3] = { a, b, a };
    tk_tensor *y = tk_stack(ctx, 3, ts);
    OP_CHECK_SHAPE(y, 2, 2, 3);
    OP_CHECK_VALUES(y, ((float[]){ 1, 5, 1, 2, 6, 2, 3, 7, 3, 4, 8, 4 }), 0);
    y = tk_stack(ctx, 1, ts);
    OP_CHECK_SHAPE(y, 2, 2, 1);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(a, b, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    int n;
    bool stack;
    tk_tensor *ts[6];
} list_case;

static tk_tensor *list_fn(tk_ctx *ctx, void *ud) {
    list_case *c = ud;
    tk_tensor *y = c->stack ? tk_stack(ctx, c->n, c->ts) : tk_concat(ctx, c->n, c->ts);
    return gradcheck_project(ctx, tk_square(ctx, y));
}

static void test_grads(void) {
    /* concat of 2 and of 6 inputs of different widths, some not requiring gradients */
    for (int n = 2; n <= 6; n += 4) {
        list_case c = { n, false, { 0 } };
        tk_tensor *leaves[6];
        int nleaves = 0;
        for (int i = 0; i < n; i++) {
            int64_t s[2] = { 3, 1 + i % 3 };
            if (i == 3) {
                c.ts[i] = tk_test_randn(2, s, 1, 30 + i); /* a constant among leaves */
            } else {
                c.ts[i] = op_leaf(2, s, 1, 30 + i);
                leaves[nleaves++] = c.ts[i];
            }
        }
        char what[32];
        snprintf(what, sizeof what, "concat of %d", n);
        TK_CHECK_MSG(gradcheck_run(what, list_fn, &c, nleaves, leaves, false, 1e-2) == 0, "%s", what);
        for (int i = 0; i < n; i++) tk_tensor_release(c.ts[i]);
    }
    /* the same leaf twice */
    list_case c = { 5, false, { 0 } };
    tk_tensor *x = op_leaf_2d(2, 3, 77);
    for (int i = 0; i < 5; i++) c.ts[i] = x;
    TK_CHECK(gradcheck_run("concat of one leaf five times", list_fn, &c, 1, &x, false, 1e-2) == 0);
    c.stack = true;
    TK_CHECK(gradcheck_run("stack of one leaf five times", list_fn, &c, 1, &x, false, 1e-2) == 0);
    tk_tensor_release(x);
    /* stack of 6 distinct leaves, 3-D inputs */
    list_case s = { 6, true, { 0 } };
    int64_t s3[3] = { 2, 2, 3 };
    for (int i = 0; i < 6; i++) s.ts[i] = op_leaf(3, s3, 1, 90 + i);
    TK_CHECK(gradcheck_run("stack of 6", list_fn, &s, 6, s.ts, false, 1e-2) == 0);
    for (int i = 0; i < 6; i++) tk_tensor_release(s.ts[i]);
}

static void test_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    const char *msg = tk_ctx_error(ctx);
    tk_tensor *a = tk_tensor_new_2d(TK_F32, 2, 3), *b = tk_tensor_new_2d(TK_F32, 3, 3);
    tk_tensor *ids = tk_tensor_new_2d(TK_I64, 2, 3);
    int64_t s4[4] = { 1, 1, 1, 1 };
    tk_tensor *r4 = tk_tensor_new(TK_F32, 4, s4), *scalar = tk_tensor_new(TK_F32, 0, NULL);

    tk_tensor *ab[2] = { a, b };
    OP_CHECK_FAILS(ctx, tk_concat(ctx, 2, ab),
                   "concat: input 1 is [3, 3], expected [..., n] matching input 0 [2, 3] on all but the last axis");
    OP_CHECK_FAILS(ctx, tk_stack(ctx, 2, ab), "stack: input 1 is [3, 3], expected the shape of input 0 [2, 3]");
    tk_tensor *mixed[2] = { a, ids };
    OP_CHECK_FAILS(ctx, tk_concat(ctx, 2, mixed),
                   "concat: inputs must have one dtype: input 0 is float32 [2, 3], input 1 is int64 [2, 3]");
    OP_CHECK_FAILS(ctx, tk_concat(ctx, 0, ab), "concat: needs at least one input, got 0");
    tk_tensor *with_null[2] = { a, NULL };
    OP_CHECK_FAILS(ctx, tk_stack(ctx, 2, with_null), "stack: input is NULL (input 1 of 2)");
    OP_CHECK_FAILS(ctx, tk_concat(ctx, 2, NULL), "concat: input is NULL");
    OP_CHECK_FAILS(ctx, tk_stack(ctx, 1, &r4),
                   "stack: inputs have 4 dimensions ([1, 1, 1, 1]), at most 3 can be stacked");
    OP_CHECK_FAILS(ctx, tk_concat(ctx, 1, &scalar), "concat: inputs must have at least one dimension, got []");
    /* the first error is kept */
    tk_ctx_fail(ctx, "earlier failure");
    TK_CHECK(tk_concat(ctx, 2, with_null) == NULL);
    TK_CHECK(strcmp(msg, "earlier failure") == 0);
    op_release(a, b, ids, r4, scalar, NULL);
    tk_ctx_free(ctx);
}

int main(void) {
    TK_RUN(test_concat_values);
    TK_RUN(test_stack_values);
    TK_RUN(test_grads);
    TK_RUN(test_errors);
    return tk_test_summary();
}
