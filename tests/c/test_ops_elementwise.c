/* Element-wise ops: values, broadcast forms, activations, gradients and errors. */
#include "op_test.h"

/* --- forward values --- */

static void test_binary_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s23[2] = { 2, 3 }, s3 = 3, s13[2] = { 1, 3 }, s1 = 1;
    tk_tensor *a = op_f32(2, s23, (float[]){ 1, 2, 3, 4, 5, 6 });
    tk_tensor *full = op_f32(2, s23, (float[]){ 6, 5, 4, 3, 2, 1 });
    tk_tensor *row = op_f32(1, &s3, (float[]){ 10, 20, 40 });
    tk_tensor *row2 = op_f32(2, s13, (float[]){ 10, 20, 40 });
    tk_tensor *one = op_f32(1, &s1, (float[]){ 2 });

    OP_CHECK_VALUES(tk_add(ctx, a, full), ((float[]){ 7, 7, 7, 7, 7, 7 }), 1e-6);
    OP_CHECK_VALUES(tk_add(ctx, a, row), ((float[]){ 11, 22, 43, 14, 25, 46 }), 1e-6);
    OP_CHECK_VALUES(tk_add(ctx, a, row2), ((float[]){ 11, 22, 43, 14, 25, 46 }), 1e-6);
    OP_CHECK_VALUES(tk_add(ctx, a, one), ((float[]){ 3, 4, 5, 6, 7, 8 }), 1e-6);
    OP_CHECK_VALUES(tk_sub(ctx, a, full), ((float[]){ -5, -3, -1, 1, 3, 5 }), 1e-6);
    OP_CHECK_VALUES(tk_sub(ctx, a, row), ((float[]){ -9, -18, -37, -6, -15, -34 }), 1e-6);
    OP_CHECK_VALUES(tk_mul(ctx, a, row2), ((float[]){ 10, 40, 120, 40, 100, 240 }), 1e-6);
    OP_CHECK_VALUES(tk_mul(ctx, a, one), ((float[]){ 2, 4, 6, 8, 10, 12 }), 1e-6);
    OP_CHECK_VALUES(tk_div(ctx, a, full), ((float[]){ 1.0f / 6, 0.4f, 0.75f, 4.0f / 3, 2.5f, 6 }), 1e-6);
    OP_CHECK_VALUES(tk_div(ctx, a, one), ((float[]){ 0.5f, 1, 1.5f, 2, 2.5f, 3 }), 1e-6);
    tk_tensor *y = tk_add(ctx, a, row);
    OP_CHECK_SHAPE(y, 2, 3);
    TK_CHECK(!(y->flags & TK_TENSOR_HEAP));  /* an arena tensor */
    TK_CHECK(!y->requires_grad && !y->node); /* nothing recorded without gradients */
    /* a 3-D tensor with a row vector */
    int64_t s223[3] = { 2, 2, 3 };
    tk_tensor *c = op_f32(3, s223, (float[]){ 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4 });
    OP_CHECK_VALUES(tk_mul(ctx, c, row), ((float[]){ 10, 20, 40, 20, 40, 80, 30, 60, 120, 40, 80, 160 }), 1e-6);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(a, full, row, row2, one, c, NULL);
    tk_ctx_free(ctx);
}

static void test_unary_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s = 4;
    tk_tensor *a = op_f32(1, &s, (float[]){ 0.25f, 1, 4, 9 });
    OP_CHECK_VALUES(tk_scale(ctx, a, -2), ((float[]){ -0.5f, -2, -8, -18 }), 1e-6);
    OP_CHECK_VALUES(tk_add_scalar(ctx, a, 1.5f), ((float[]){ 1.75f, 2.5f, 5.5f, 10.5f }), 1e-6);
    OP_CHECK_VALUES(tk_exp(ctx, a), ((float[]){ 1.2840254f, 2.7182818f, 54.59815f, 8103.0839f }), 1e-6);
    OP_CHECK_VALUES(tk_log(ctx, a), ((float[]){ -1.3862944f, 0, 1.3862944f, 2.1972246f }), 1e-6);
    OP_CHECK_VALUES(tk_sqrt(ctx, a), ((float[]){ 0.5f, 1, 2, 3 }), 1e-6);
    OP_CHECK_VALUES(tk_square(ctx, a), ((float[]){ 0.0625f, 1, 16, 81 }), 1e-6);
    tk_tensor_release(a);
    tk_ctx_free(ctx);
}

static void test_activation_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s = 5;
    tk_tensor *x = op_f32(1, &s, (float[]){ -2, -0.5f, 0, 0.5f, 2 });
    struct {
        tk_activation act;
        float want[5];
    } cases[] = {
        { TK_ACT_LINEAR, { -2, -0.5f, 0, 0.5f, 2 } },
        { TK_ACT_RELU, { 0, 0, 0, 0.5f, 2 } },
        { TK_ACT_SIGMOID, { 0.11920292f, 0.37754067f, 0.5f, 0.62245933f, 0.88079708f } },
        { TK_ACT_TANH, { -0.96402758f, -0.46211716f, 0, 0.46211716f, 0.96402758f } },
        /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
        { TK_ACT_GELU, { -0.04540231f, -0.15428599f, 0, 0.34571401f, 1.95459769f } },
        /* 1.0507 x, or 1.0507 * 1.67326 (e^x - 1) */
        { TK_ACT_SELU, { -1.5201665f, -0.69175758f, 0, 0.52535049f, 2.101402f } },
        { TK_ACT_ELU, { -0.86466472f, -0.39346934f, 0, 0.5f, 2 } },
        { TK_ACT_SOFTPLUS, { 0.12692801f, 0.47407698f, 0.69314718f, 0.97407698f, 2.126928f } },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tk_tensor *y = tk_activate(ctx, x, cases[i].act);
        TK_CHECK_MSG(y && op_mismatches(y, cases[i].want, 1e-5) == 0, "%s", tk_activation_name(cases[i].act));
    }
    /* stability far out */
    int64_t s2 = 2;
    tk_tensor *big = op_f32(1, &s2, (float[]){ -100, 100 });
    OP_CHECK_VALUES(tk_activate(ctx, big, TK_ACT_SIGMOID), ((float[]){ 0, 1 }), 1e-6);
    OP_CHECK_VALUES(tk_activate(ctx, big, TK_ACT_SOFTPLUS), ((float[]){ 0, 100 }), 1e-6);
    OP_CHECK_VALUES(tk_activate(ctx, big, TK_ACT_ELU), ((float[]){ -1, 100 }), 1e-6);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(x, big, NULL);
    tk_ctx_free(ctx);
}

static void test_activation_names(void) {
    const char *names[] = { "linear", "relu", "sigmoid", "tanh", "gelu", "selu", "elu", "softplus" };
    for (int i = 0; i < TK_ACT_COUNT; i++) {
        TK_CHECK(tk_activation_from_name(names[i]) == i);
        TK_CHECK(strcmp(tk_activation_name((tk_activation)i), names[i]) == 0);
    }
    TK_CHECK(strcmp(tk_activation_names(), "linear, relu, sigmoid, tanh, gelu, selu, elu, softplus") == 0);
    TK_CHECK(tk_activation_from_name(NULL) == TK_ACT_LINEAR);
    TK_CHECK(tk_activation_from_name("swish") == -1);
    TK_CHECK(strcmp(tk_activation_name(TK_ACT_COUNT), "unknown") == 0);
}

/* --- gradients --- */

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV } bin_op;
typedef struct {
    bin_op op;
    tk_tensor *a, *b;
} bin_case;

static tk_tensor *bin_fn(tk_ctx *ctx, void *ud) {
    bin_case *c = ud;
    tk_tensor *y = NULL;
    switch (c->op) {
    case OP_ADD:
        y = tk_add(ctx, c->a, c->b);
        break;
    case OP_SUB:
        y = tk_sub(ctx, c->a, c->b);
        break;
    case OP_MUL:
        y = tk_mul(ctx, c->a, c->b);
        break;
    case OP_DIV:
        y = tk_div(ctx, c->a, c->b);
        break;
    }
    return gradcheck_project(ctx, y);
}

static void test_binary_grads(void) {
    const char *names[] = { "add", "sub", "mul", "div" };
    int64_t s34[2] = { 3, 4 }, s4 = 4, s14[2] = { 1, 4 }, s1 = 1, s11[2] = { 1, 1 }, s234[3] = { 2, 3, 4 };
    struct {
        const char *form;
        int32_t andim, bndim;
        const int64_t *ashape, *bshape;
    } forms[] = {
        { "same shape", 2, 2, s34, s34 },         { "row [n]", 2, 1, s34, &s4 },
        { "row [1, n]", 2, 2, s34, s14 },         { "one element [1]", 2, 1, s34, &s1 },
        { "one element [1, 1]", 2, 2, s34, s11 }, { "3-D with row", 3, 1, s234, &s4 },
    };
    for (int op = OP_ADD; op <= OP_DIV; op++)
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
            bin_case c = { (bin_op)op, op_leaf(forms[f].andim, forms[f].ashape, 1.0f, 10 + f),
                           op_leaf(forms[f].bndim, forms[f].bshape, 1.0f, 20 + f) };
            if (op == OP_DIV) op_positive(c.b, 0.5f);
            tk_tensor *leaves[2] = { c.a, c.b };
            char what[64];
            snprintf(what, sizeof what, "%s, %s", names[op], forms[f].form);
            TK_CHECK_MSG(gradcheck_run(what, bin_fn, &c, 2, leaves, false, 1e-2) == 0, "%s", what);
            op_release(c.a, c.b, NULL);
        }
}

static void test_same_input_twice(void) {
    /* a * a: both gradient contributions land in one buffer: d(a^2) = 2a */
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a = op_leaf_1d(5, 3);
    tk_tensor *loss = tk_sum(ctx, tk_mul(ctx, a, a), -1, false);
    TK_CHECK(loss && tk_backward(ctx, loss) == TK_OK);
    tk_tensor *g = tk_ctx_grad(ctx, a);
    TK_CHECK(g != NULL);
    for (int i = 0; g && i < 5; i++) TK_CHECK_NEAR(tk_f32(g)[i], 2 * tk_f32(a)[i], 1e-5);
    tk_tensor_release(a);
    tk_ctx_free(ctx);
}

typedef struct {
    int which; /* 0 scale, 1 add_scalar, 2 exp, 3 log, 4 sqrt, 5 square, 6 + act: activate */
    tk_tensor *a;
} un_case;

static tk_tensor *un_fn(tk_ctx *ctx, void *ud) {
    un_case *c = ud;
    tk_tensor *y = NULL;
    switch (c->which) {
    case 0:
        y = tk_scale(ctx, c->a, -1.5f);
        break;
    case 1:
        y = tk_add_scalar(ctx, c->a, 0.75f);
        break;
    case 2:
        y = tk_exp(ctx, c->a);
        break;
    case 3:
        y = tk_log(ctx, c->a);
        break;
    case 4:
        y = tk_sqrt(ctx, c->a);
        break;
    case 5:
        y = tk_square(ctx, c->a);
        break;
    default:
        y = tk_activate(ctx, c->a, (tk_activation)(c->which - 6));
        break;
    }
    return gradcheck_project(ctx, y);
}

/* A tape runs once: a second tk_backward before the reset is an error and leaves the
 * gradients as the first run made them (x^3 at 1: 3; it used to become 12, then 30);
 * after tk_ctx_reset a new tape runs again. */
static void test_backward_twice(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *x = op_leaf_1d(1, 3);
    tk_f32(x)[0] = 1.0f;
    tk_tensor *loss = tk_sum(ctx, tk_mul(ctx, tk_mul(ctx, x, x), x), -1, false);
    TK_CHECK(loss && tk_backward(ctx, loss) == TK_OK);
    TK_CHECK_NEAR(tk_f32(tk_ctx_grad(ctx, x))[0], 3.0, 1e-6);
    TK_CHECK(tk_backward(ctx, loss) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "backward: the tape of this context was already used; tk.reset() first");
    tk_ctx_clear_error(ctx);
    TK_CHECK_NEAR(tk_f32(tk_ctx_grad(ctx, x))[0], 3.0, 1e-6);
    tk_ctx_reset(ctx);
    loss = tk_sum(ctx, tk_mul(ctx, tk_mul(ctx, x, x), x), -1, false);
    TK_CHECK(loss && tk_backward(ctx, loss) == TK_OK);
    TK_CHECK_NEAR(tk_f32(tk_ctx_grad(ctx, x))[0], 3.0, 1e-6);
    tk_tensor_release(x);
    tk_ctx_free(ctx);
}

static void test_unary_grads(void) {
    const char *names[] = { "scale", "add_scalar", "exp", "log", "sqrt", "square" };
    for (int w = 0; w < 6; w++) {
        un_case c = { w, op_leaf_2d(3, 5, 40 + w) };
        if (w == 3 || w == 4) op_positive(c.a, 0.5f);
        TK_CHECK_MSG(gradcheck_run(names[w], un_fn, &c, 1, &c.a, false, 1e-2) == 0, "%s", names[w]);
        tk_tensor_release(c.a);
    }
}

static void test_activation_grads(void) {
    for (int act = 0; act < TK_ACT_COUNT; act++) {
        int64_t s[2] = { 4, 6 };
        un_case c = { 6 + act, op_leaf(2, s, 1.5f, 60 + act) };
        op_away_from_zero(c.a, 0.1f); /* relu and selu have a kink at 0 */
        const char *name = tk_activation_name((tk_activation)act);
        TK_CHECK_MSG(gradcheck_run(name, un_fn, &c, 1, &c.a, false, 1e-2) == 0, "%s", name);
        tk_tensor_release(c.a);
    }
}

static void test_grad_on_arena_input(void) {
    /* An intermediate (arena) tensor in the middle of a chain passes gradients on. */
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a = op_leaf_1d(3, 5);
    tk_tensor *loss = tk_sum(ctx, tk_scale(ctx, tk_add_scalar(ctx, a, 1), 3), -1, false);
    TK_CHECK(tk_backward(ctx, loss) == TK_OK);
    tk_tensor *g = tk_ctx_grad(ctx, a);
    for (int i = 0; g && i < 3; i++) TK_CHECK_NEAR(tk_f32(g)[i], 3, 1e-6);
    TK_CHECK(g != NULL);
    /* with gradients off nothing is recorded */
    tk_ctx_reset(ctx);
    tk_ctx_set_grad_enabled(ctx, false);
    tk_tensor *y = tk_scale(ctx, a, 2);
    TK_CHECK(y && !y->requires_grad && !y->node);
    TK_CHECK(tk_ctx_leaf_count(ctx) == 0);
    tk_tensor_release(a);
    tk_ctx_free(ctx);
}

/* --- errors --- */

static void test_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s23[2] = { 2, 3 }, s2 = 2, s32[2] = { 3, 2 };
    tk_tensor *a = op_f32(2, s23, NULL), *b2 = op_f32(1, &s2, NULL), *b32 = op_f32(2, s32, NULL);
    tk_tensor *ids = tk_tensor_new_2d(TK_I64, 2, 3);

    TK_CHECK(tk_add(ctx, a, b2) == NULL);
    TK_CHECK_ERROR(
        tk_ctx_error(ctx),
        "add: cannot broadcast b [2] to a [2, 3] (b must have a's shape, be a row [3] or [1, 3], or have one element)");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_mul(ctx, a, b32) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "mul: cannot broadcast b [3, 2] to a [2, 3]");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_sub(ctx, ids, a) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "sub: a must be float32, got int64 [2, 3]");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_div(ctx, a, ids) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "div: b must be float32, got int64 [2, 3]");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_exp(ctx, ids) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "exp: a must be float32, got int64");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_activate(ctx, a, (tk_activation)42) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "activate: unknown activation 42 (known: linear, relu, sigmoid");
    tk_ctx_clear_error(ctx);

    /* NULL inputs: a fresh message, or the first one kept */
    TK_CHECK(tk_add(ctx, NULL, a) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "add: input is NULL");
    tk_ctx_clear_error(ctx);
    TK_CHECK(tk_square(ctx, NULL) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "square: input is NULL");
    tk_ctx_clear_error(ctx);
    tk_tensor *bad = tk_add(ctx, a, b2); /* fails first */
    tk_tensor *chained = tk_exp(ctx, tk_scale(ctx, tk_mul(ctx, bad, a), 2));
    TK_CHECK(chained == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "add: cannot broadcast");
    TK_CHECK(strstr(tk_ctx_error(ctx), "NULL") == NULL);
    TK_CHECK(tk_exp(NULL, a) == NULL); /* no context: nothing to report to, but no crash */
    op_release(a, b2, b32, ids, NULL);
    tk_ctx_free(ctx);
}

int main(void) {
    TK_RUN(test_binary_values);
    TK_RUN(test_unary_values);
    TK_RUN(test_activation_values);
    TK_RUN(test_activation_names);
    TK_RUN(test_binary_grads);
    TK_RUN(test_same_input_twice);
    TK_RUN(test_backward_twice);
    TK_RUN(test_unary_grads);
    TK_RUN(test_activation_grads);
    TK_RUN(test_grad_on_arena_input);
    TK_RUN(test_errors);
    return tk_test_summary();
}
