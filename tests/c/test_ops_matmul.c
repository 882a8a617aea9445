/* matmul (every transpose form), the fused dense layer, transpose, reshape, products split
 * over threads. */
#include "op_test.h"

/* op(a)[i, l] for a stored [r, c] */
static float at(const tk_tensor *a, bool t, int64_t i, int64_t l) {
    int64_t c = a->shape[1];
    return t ? tk_f32(a)[l * c + i] : tk_f32(a)[i * c + l];
}

static void test_matmul_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s23[2] = { 2, 3 }, s32[2] = { 3, 2 };
    tk_tensor *a = op_f32(2, s23, (float[]){ 1, 2, 3, 4, 5, 6 });
    tk_tensor *b = op_f32(2, s32, (float[]){ 7, 8, 9, 10, 11, 12 });
    tk_tensor *y = tk_matmul(ctx, a, b, false, false);
    OP_CHECK_SHAPE(y, 2, 2);
    OP_CHECK_VALUES(y, ((float[]){ 58, 64, 139, 154 }), 1e-6);
    /* a^T b^T: [3, 2] x [2, 3] */
    y = tk_matmul(ctx, a, b, true, true);
    OP_CHECK_SHAPE(y, 3, 3);
    OP_CHECK_VALUES(y, ((float[]){ 39, 49, 59, 54, 68, 82, 69, 87, 105 }), 1e-6);
    /* every form against a reference loop */
    for (int f = 0; f < 4; f++) {
        bool ta = f & 1, tb = f & 2;
        int64_t m = 3, k = 4, n = 5;
        int64_t sa[2] = { ta ? k : m, ta ? m : k }, sb[2] = { tb ? n : k, tb ? k : n };
        tk_tensor *x = tk_test_randn(2, sa, 1, 100 + f), *w = tk_test_randn(2, sb, 1, 200 + f);
        tk_tensor *z = tk_matmul(ctx, x, w, ta, tb);
        OP_CHECK_SHAPE(z, m, n);
        for (int64_t i = 0; z && i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double ref = 0;
                for (int64_t l = 0; l < k; l++) ref += at(x, ta, i, l) * at(w, tb, l, j);
                TK_CHECK_NEAR(tk_f32(z)[i * n + j], ref, 1e-5);
            }
        op_release(x, w, NULL);
    }
    /* an empty inner dimension gives zeros */
    int64_t s20[2] = { 2, 0 }, s03[2] = { 0, 3 };
    tk_tensor *e1 = op_f32(2, s20, NULL), *e2 = op_f32(2, s03, NULL);
    OP_CHECK_VALUES(tk_matmul(ctx, e1, e2, false, false), ((float[]){ 0, 0, 0, 0, 0, 0 }), 0); /* empty sums: 0 */
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(a, b, e1, e2, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    tk_tensor *a, *b;
    bool ta, tb;
} mm_case;

static tk_tensor *mm_fn(tk_ctx *ctx, void *ud) {
    mm_case *c = ud;
    return gradcheck_project(ctx, tk_matmul(ctx, c->a, c->b, c->ta, c->tb));
}

static void test_matmul_grads(void) {
    for (int f = 0; f < 4; f++) {
        bool ta = f & 1, tb = f & 2;
        int64_t m = 3, k = 4, n = 2;
        mm_case c = { op_leaf_2d(ta ? k : m, ta ? m : k, 300 + f), op_leaf_2d(tb ? n : k, tb ? k : n, 400 + f), ta,
                      tb };
        tk_tensor *leaves[2] = { c.a, c.b };
        char what[32];
        snprintf(what, sizeof what, "matmul ta=%d tb=%d", ta, tb);
        TK_CHECK_MSG(gradcheck_run(what, mm_fn, &c, 2, leaves, false, 1e-2) == 0, "%s", what);
        op_release(c.a, c.b, NULL);
    }
    /* x x^T with one leaf on both sides */
    mm_case c = { op_leaf_2d(3, 4, 9), NULL, false, true };
    c.b = c.a;
    TK_CHECK(gradcheck_run("matmul a a^T", mm_fn, &c, 1, &c.a, false, 1e-2) == 0);
    tk_tensor_release(c.a);
}

/* act(x W + b) by a reference loop */
static void dense_ref(const tk_tensor *x, const tk_tensor *w, const tk_tensor *bias, tk_activation act, float *out) {
    int64_t rows = x->shape[0], in = x->shape[1], n = w->shape[1];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) {
            double z = bias ? tk_f32(bias)[j] : 0;
            for (int64_t l = 0; l < in; l++) z += tk_f32(x)[r * in + l] * tk_f32(w)[l * n + j];
            out[r * n + j] = (float)z;
        }
    tk_ctx *ctx = tk_ctx_new(1); /* the activation itself is checked in test_ops_elementwise */
    int64_t s[2] = { rows, n };
    tk_tensor *zt = op_f32(2, s, out);
    tk_tensor *y = tk_activate(ctx, zt, act);
    memcpy(out, y->data, (size_t)(rows * n) * sizeof(float));
    tk_tensor_release(zt);
    tk_ctx_free(ctx);
}

static void test_dense_values(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s22[2] = { 2, 2 }, s2 = 2, s12[2] = { 1, 2 };
    tk_tensor *x = op_f32(2, s22, (float[]){ 1, 2, 3, 4 });
    tk_tensor *w = op_f32(2, s22, (float[]){ 1, -1, 0.5f, -2 });
    tk_tensor *b = op_f32(1, &s2, (float[]){ -1, 4 });
    tk_tensor *b12 = op_f32(2, s12, (float[]){ -1, 4 });
    /* x W = [[2, -5], [5, -11]]; + b = [[1, -1], [4, -7]] */
    OP_CHECK_VALUES(tk_dense(ctx, x, w, b, TK_ACT_LINEAR), ((float[]){ 1, -1, 4, -7 }), 1e-6);
    OP_CHECK_VALUES(tk_dense(ctx, x, w, b, TK_ACT_RELU), ((float[]){ 1, 0, 4, 0 }), 1e-6);
    OP_CHECK_VALUES(tk_dense(ctx, x, w, b12, TK_ACT_RELU), ((float[]){ 1, 0, 4, 0 }), 1e-6);
    OP_CHECK_VALUES(tk_dense(ctx, x, w, NULL, TK_ACT_LINEAR), ((float[]){ 2, -5, 5, -11 }), 1e-6);
    for (int act = 0; act < TK_ACT_COUNT; act++) {
        tk_tensor *xr = tk_test_randn(2, (int64_t[]){ 5, 3 }, 1, 1), *wr = tk_test_randn(2, (int64_t[]){ 3, 4 }, 1, 2);
        tk_tensor *br = tk_test_randn(1, (int64_t[]){ 4 }, 1, 3);
        float want[20];
        dense_ref(xr, wr, br, (tk_activation)act, want);
        OP_CHECK_VALUES(tk_dense(ctx, xr, wr, br, (tk_activation)act), want, 1e-5);
        op_release(xr, wr, br, NULL);
    }
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(x, w, b, b12, NULL);
    tk_ctx_free(ctx);
}

typedef struct {
    tk_tensor *x, *w, *b;
    tk_activation act;
} dense_case;

static tk_tensor *dense_fn(tk_ctx *ctx, void *ud) {
    dense_case *c = ud;
    return gradcheck_project(ctx, tk_dense(ctx, c->x, c->w, c->b, c->act));
}

static void test_dense_grads(void) {
    /* 5 outputs: the scalar tails of the vectorised bias and activation; 13: a vector
     * body of 8 and a tail */
    for (int act = 0; act < 2 * TK_ACT_COUNT; act++)
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            int64_t out = act < TK_ACT_COUNT ? 5 : 13;
            dense_case c = { op_leaf_2d(4, 3, 500 + act), op_leaf_2d(3, out, 600 + act),
                             with_bias ? op_leaf_1d(out, 700 + act) : NULL, (tk_activation)(act % TK_ACT_COUNT) };
            /* keep pre-activations away from relu's and selu's kink at 0 */
            for (int tries = 0; tries < 100; tries++) {
                tk_ctx *ctx = tk_ctx_new(1);
                tk_ctx_set_grad_enabled(ctx, false);
                tk_tensor *z = tk_dense(ctx, c.x, c.w, c.b, TK_ACT_LINEAR);
                float mn = INFINITY;
                for (int64_t i = 0; i < z->numel; i++) mn = fminf(mn, fabsf(tk_f32(z)[i]));
                tk_ctx_free(ctx);
                if (mn > 0.1f) break;
                tk_init_fill(c.x, (tk_init){ .kind = TK_INIT_RANDOM_NORMAL, .a = 1, .b = 0 }, 1000 + tries);
            }
            tk_tensor *leaves[3] = { c.x, c.w, c.b };
            char what[48];
            snprintf(what, sizeof what, "dense %s%s", tk_activation_name(c.act), with_bias ? " + bias" : "");
            TK_CHECK_MSG(gradcheck_run(what, dense_fn, &c, with_bias ? 3 : 2, leaves, false, 1e-2) == 0, "%s", what);
            op_release(c.x, c.w, c.b, NULL);
        }
    /* only the kernel requires gradients; x is a plain input */
    dense_case c = { tk_test_randn(2, (int64_t[]){ 4, 3 }, 1, 1), op_leaf_2d(3, 2, 2),
                     op_leaf(2, (int64_t[]){ 1, 2 }, 1, 3), TK_ACT_TANH };
    tk_tensor *leaves[2] = { c.w, c.b };
    TK_CHECK(gradcheck_run("dense, x constant, bias [1, n]", dense_fn, &c, 2, leaves, false, 1e-2) == 0);
    op_release(c.x, c.w, c.b, NULL);
}

typedef struct {
    tk_tensor *a;
    int which;
} shape_case;

static tk_tensor *shape_fn(tk_ctx *ctx, void *ud) {
    shape_case *c = ud;
    if (c->which == 0) return gradcheck_project(ctx, tk_transpose(ctx, c->a));
    int64_t s[3] = { 2, -1, 2 };
    /* reshape, then an op that mixes positions, so a wrong layout would show */
    tk_tensor *r = tk_reshape(ctx, c->a, 3, s);
    return gradcheck_project(ctx, tk_square(ctx, r));
}

static void test_transpose_reshape(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s23[2] = { 2, 3 };
    tk_tensor *a = op_f32(2, s23, (float[]){ 1, 2, 3, 4, 5, 6 });
    tk_tensor *t = tk_transpose(ctx, a);
    OP_CHECK_SHAPE(t, 3, 2);
    OP_CHECK_VALUES(t, ((float[]){ 1, 4, 2, 5, 3, 6 }), 0); /* moves values: exact (reshape too) */
    int64_t s[2] = { -1, 2 };
    tk_tensor *r = tk_reshape(ctx, a, 2, s);
    OP_CHECK_SHAPE(r, 3, 2);
    TK_CHECK(r && r->data == a->data); /* a view, no copy */
    TK_CHECK(r && !(r->flags & TK_TENSOR_HEAP));
    int64_t s6 = 6;
    tk_tensor *r1 = tk_reshape(ctx, t, 1, &s6);
    OP_CHECK_VALUES(r1, ((float[]){ 1, 4, 2, 5, 3, 6 }), 0);
    tk_tensor *r0 = tk_reshape(ctx, tk_sum(ctx, a, -1, false), 0, NULL);    /* [1] -> scalar */
    TK_CHECK(r0 && r0->ndim == 0 && r0->numel == 1 && tk_f32(r0)[0] == 21); /* small integers: exact */
    /* int64 ids reshape too ([B, 1] -> [B]) */
    tk_tensor *ids = tk_tensor_new_2d(TK_I64, 3, 1);
    tk_tensor *flat = tk_reshape(ctx, ids, 1, (int64_t[]){ 3 });
    TK_CHECK(flat && flat->dtype == TK_I64 && flat->data == ids->data);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(a, ids, NULL);
    tk_ctx_free(ctx);

    shape_case c = { op_leaf_2d(3, 4, 5), 0 };
    TK_CHECK(gradcheck_run("transpose", shape_fn, &c, 1, &c.a, false, 1e-2) == 0);
    c.which = 1;
    TK_CHECK(gradcheck_run("reshape", shape_fn, &c, 1, &c.a, false, 1e-2) == 0);
    tk_tensor_release(c.a);
}

static void test_errors(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *a = tk_tensor_new_2d(TK_F32, 2, 3), *b = tk_tensor_new_2d(TK_F32, 4, 5);
    tk_tensor *v = tk_tensor_new_1d(TK_F32, 3), *ids = tk_tensor_new_2d(TK_I64, 3, 2);

    OP_CHECK_FAILS(ctx, tk_matmul(ctx, a, b, false, false),
                   "matmul: inner dimensions differ: a is [2, 3], b is [4, 5]");
    OP_CHECK_FAILS(ctx, tk_matmul(ctx, a, b, true, false),
                   "matmul: inner dimensions differ: a (transposed) is [2, 3], b is [4, 5]");
    OP_CHECK_FAILS(ctx, tk_matmul(ctx, a, v, false, false), "matmul: b must be 2-D, got [3]");
    OP_CHECK_FAILS(ctx, tk_matmul(ctx, ids, a, false, false), "matmul: a must be float32, got int64 [3, 2]");
    OP_CHECK_FAILS(ctx, tk_matmul(ctx, a, NULL, false, false), "matmul: input is NULL");

    OP_CHECK_FAILS(ctx, tk_dense(ctx, a, b, NULL, TK_ACT_RELU),
                   "dense: x has 3 features ([2, 3]), kernel [4, 5] expects 4");
    tk_tensor *k35 = tk_tensor_new_2d(TK_F32, 3, 5);
    OP_CHECK_FAILS(ctx, tk_dense(ctx, a, k35, v, TK_ACT_RELU), "dense: bias must be [5] for kernel [3, 5], got [3]");
    OP_CHECK_FAILS(ctx, tk_dense(ctx, a, k35, ids, TK_ACT_RELU), "dense: bias must be float32, got int64");
    OP_CHECK_FAILS(ctx, tk_dense(ctx, v, k35, NULL, TK_ACT_RELU), "dense: x must be 2-D, got [3]");
    OP_CHECK_FAILS(ctx, tk_dense(ctx, a, k35, NULL, (tk_activation)99), "dense: unknown activation 99");
    OP_CHECK_FAILS(ctx, tk_dense(ctx, NULL, k35, NULL, TK_ACT_RELU), "dense: input is NULL");

    OP_CHECK_FAILS(ctx, tk_transpose(ctx, v), "transpose: a must be 2-D, got [3]");
    OP_CHECK_FAILS(ctx, tk_reshape(ctx, a, 2, (int64_t[]){ 4, 2 }),
                   "reshape: cannot reshape [2, 3] (6 elements) to [4, 2] (8 elements)");
    OP_CHECK_FAILS(ctx, tk_reshape(ctx, a, 2, (int64_t[]){ 4, -1 }),
                   "reshape: cannot reshape [2, 3] (6 elements) to [4, -1]");
    OP_CHECK_FAILS(ctx, tk_reshape(ctx, a, 2, (int64_t[]){ -1, -1 }), "reshape: bad shape [-1, -1]");
    OP_CHECK_FAILS(ctx, tk_reshape(ctx, a, 5, (int64_t[]){ 1, 1, 1, 2, 3 }), "reshape: rank 5 is not supported");
    op_release(a, b, v, ids, k35, NULL);
    tk_ctx_free(ctx);
}

/* Large products are split into row blocks over the context's threads: every transpose
 * form of matmul and the dense layer, forward and backward, with 2 to 4 threads agree
 * with one thread within float rounding (each block is an sgemm of its own, whose kernel
 * may round differently at block edges), and give the same bits when run again. */
typedef struct split_run {
    tk_tensor *y, *da, *db; /* clones of the output and the gradients */
} split_run;

static split_run run_product(int threads, int form, tk_tensor *a, tk_tensor *b, tk_tensor *bias) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_ctx_set_num_threads(ctx, threads);
    tk_tensor *y = form < 4 ? tk_matmul(ctx, a, b, form & 1, form & 2) : tk_dense(ctx, a, b, bias, TK_ACT_RELU);
    tk_tensor *loss = y ? tk_sum(ctx, tk_square(ctx, y), -1, false) : NULL;
    TK_CHECK_MSG(loss && tk_backward(ctx, loss) == TK_OK, "%s", tk_ctx_error(ctx));
    split_run r = { y ? tk_tensor_clone(y) : NULL, NULL, NULL };
    tk_tensor *ga = tk_ctx_grad(ctx, a), *gb = tk_ctx_grad(ctx, b);
    r.da = ga ? tk_tensor_clone(ga) : NULL;
    r.db = gb ? tk_tensor_clone(gb) : NULL;
    tk_ctx_free(ctx);
    return r;
}

static void free_run(split_run *r) { op_release(r->y, r->da, r->db, NULL); }

/* The largest difference relative to the largest magnitude of want. */
static double rel_diff(const tk_tensor *got, const tk_tensor *want) {
    if (!got || !want || got->numel != want->numel) return INFINITY;
    double diff = 0, scale = 1e-30;
    for (int64_t i = 0; i < want->numel; i++) {
        diff = fmax(diff, fabs((double)tk_f32(got)[i] - tk_f32(want)[i]));
        scale = fmax(scale, fabs((double)tk_f32(want)[i]));
    }
    return diff / scale;
}

static bool same_bits(const tk_tensor *x, const tk_tensor *y) {
    return x && y && x->numel == y->numel && memcmp(x->data, y->data, (size_t)x->numel * sizeof(float)) == 0;
}

static void test_split_products(void) {
    const int64_t m = 203, k = 97, n = 131; /* m k n > the split threshold; m not a multiple of 16 */
    for (int form = 0; form < 5; form++) {  /* 0-3: matmul (ta = bit 0, tb = bit 1); 4: dense */
        bool ta = form < 4 && (form & 1), tb = form < 4 && (form & 2);
        int64_t sa[2] = { ta ? k : m, ta ? m : k }, sb[2] = { tb ? n : k, tb ? k : n }, sn[1] = { n };
        tk_tensor *a = tk_test_randn(2, sa, 1, 300 + form), *b = tk_test_randn(2, sb, 1, 400 + form);
        tk_tensor *bias = tk_test_randn(1, sn, 1, 500);
        tk_tensor_set_requires_grad(a, true);
        tk_tensor_set_requires_grad(b, true);
        split_run one = run_product(1, form, a, b, bias);
        for (int threads = 2; threads <= 4; threads++) {
            split_run r = run_product(threads, form, a, b, bias), again = run_product(threads, form, a, b, bias);
            /* sums of k (or m, n) products of unit normals: a few float ulps of the largest */
            TK_CHECK_MSG(rel_diff(r.y, one.y) < 1e-5 && rel_diff(r.da, one.da) < 1e-5 && rel_diff(r.db, one.db) < 1e-5,
                         "form %d, %d threads", form, threads);
            TK_CHECK_MSG(same_bits(r.y, again.y) && same_bits(r.da, again.da) && same_bits(r.db, again.db),
                         "form %d, %d threads: a second run differs", form, threads);
            free_run(&r);
            free_run(&again);
        }
        free_run(&one);
        op_release(a, b, bias, NULL);
    }
}

int main(void) {
    TK_RUN(test_matmul_values);
    TK_RUN(test_matmul_grads);
    TK_RUN(test_dense_values);
    TK_RUN(test_dense_grads);
    TK_RUN(test_transpose_reshape);
    TK_RUN(test_errors);
    TK_RUN(test_split_products);
    return tk_test_summary();
}
