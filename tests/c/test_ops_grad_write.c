/* Gradients written in place: the first backward to reach a tensor writes its gradient
 * (tk_op_grad_w: no zeroing), later ones add to it. Each case feeds one tensor to two
 * consumers (or twice to one), so both paths run; the gradients must pass the finite
 * differences and equal the sum of the gradients of each consumer alone. Also the
 * embedding backward's rows written straight into the sparse gradient
 * (tk_ctx_sparse_reserve), over two lookups of one table. */
#include "gradcheck.h"
#include "op_test.h"
#include "internal.h"

typedef enum { DENSE_TWICE, CONCAT_REPEAT, L2NORM_AND_SCALE, ACT_TWICE, VIEW_TWICE, MATMUL_AND_DENSE, NCASES } gw_kind;
static const char *const gw_names[NCASES] = { "dense twice",          "concat [x, x, y]", "l2norm and scale",
                                              "relu into two denses", "reshape twice",    "matmul and dense" };

typedef struct {
    gw_kind kind;
    int only; /* 0: both consumers; 1 or 2: that one alone */
    tk_tensor *x, *y, *w, *b;
} gw_case;

static tk_tensor *add_parts(tk_ctx *ctx, const gw_case *c, tk_tensor *p1, tk_tensor *p2) {
    if (c->only == 1) return gradcheck_project(ctx, p1);
    if (c->only == 2) return gradcheck_project(ctx, p2);
    return tk_add(ctx, gradcheck_project(ctx, p1), gradcheck_project(ctx, p2));
}

static tk_tensor *gw_fn(tk_ctx *ctx, void *ud) {
    gw_case *c = ud;
    switch (c->kind) {
    case DENSE_TWICE:
        return add_parts(ctx, c, tk_dense(ctx, c->x, c->w, c->b, TK_ACT_TANH),
                         tk_dense(ctx, c->x, c->w, c->b, TK_ACT_SIGMOID));
    case CONCAT_REPEAT: {
        if (c->only) { /* each occurrence of x alone (y with the first), the rest as constants */
            tk_tensor *xs = tk_scale(ctx, c->x, 1.0f);
            tk_ctx_set_grad_enabled(ctx, false);
            tk_tensor *k = tk_scale(ctx, c->x, 1.0f), *yk = tk_scale(ctx, c->y, 1.0f);
            tk_ctx_set_grad_enabled(ctx, true);
            tk_tensor *ts[3] = { c->only == 1 ? xs : k, c->only == 2 ? xs : k, c->only == 1 ? c->y : yk };
            return gradcheck_project(ctx, tk_concat(ctx, 3, ts));
        }
        tk_tensor *ts[3] = { c->x, c->x, c->y };
        return gradcheck_project(ctx, tk_concat(ctx, 3, ts));
    }
    case L2NORM_AND_SCALE:
        return add_parts(ctx, c, tk_l2norm(ctx, c->x), tk_scale(ctx, c->x, 0.5f));
    case ACT_TWICE: {
        tk_tensor *h = tk_dense(ctx, c->x, c->w, NULL, TK_ACT_LINEAR);
        return add_parts(ctx, c, tk_activate(ctx, h, TK_ACT_RELU), tk_activate(ctx, h, TK_ACT_TANH));
    }
    case VIEW_TWICE: {
        int64_t s1[1] = { -1 }, s2[2] = { c->x->shape[1], c->x->shape[0] };
        tk_tensor *v1 = tk_reshape(ctx, tk_scale(ctx, c->x, 1.0f), 1, s1);
        tk_tensor *v2 = tk_reshape(ctx, tk_scale(ctx, c->x, 1.0f), 2, s2);
        return add_parts(ctx, c, tk_reshape(ctx, v1, 2, c->x->shape), tk_l2norm(ctx, v2));
    }
    case MATMUL_AND_DENSE:
        return add_parts(ctx, c, tk_matmul(ctx, c->x, c->w, false, false),
                         tk_dense(ctx, c->x, c->w, c->b, TK_ACT_LINEAR));
    default:
        return NULL;
    }
}

/* The gradient of leaf under case c, as a heap copy (NULL: none). */
static tk_tensor *grad_of(gw_case *c, tk_tensor *leaf) {
    tk_ctx *ctx = tk_ctx_new(7);
    tk_tensor *loss = gw_fn(ctx, c);
    tk_tensor *copy = NULL;
    if (loss && tk_backward(ctx, loss) == TK_OK) {
        tk_tensor *g = tk_ctx_grad(ctx, leaf);
        if (g) {
            copy = tk_tensor_new(TK_F32, g->ndim, g->shape);
            memcpy(copy->data, g->data, (size_t)g->numel * sizeof(float));
        }
    } else {
        printf("    %s\n", tk_ctx_error(ctx));
    }
    tk_ctx_free(ctx);
    return copy;
}

static void test_fresh_then_accumulate(void) {
    for (int k = 0; k < NCASES; k++) {
        int64_t rows = 4, in = 9, out = 11; /* 9 and 11: vector bodies of 8 and scalar tails */
        gw_case c = { (gw_kind)k,
                      0,
                      op_leaf_2d(rows, in, 10 + k),
                      op_leaf_2d(rows, 3, 20 + k),
                      op_leaf_2d(in, out, 30 + k),
                      op_leaf_1d(out, 40 + k) };
        if (k == ACT_TWICE) op_away_from_zero(c.x, 0.2f);
        tk_tensor *leaves[4] = { c.x, c.y, c.w, c.b };
        TK_CHECK_MSG(gradcheck_run(gw_names[k], gw_fn, &c, 4, leaves, false, 1e-2) == 0, "%s", gw_names[k]);
        for (int l = 0; l < 4; l++) {
            tk_tensor *both = grad_of(&c, leaves[l]);
            c.only = 1;
            tk_tensor *g1 = grad_of(&c, leaves[l]);
            c.only = 2;
            tk_tensor *g2 = grad_of(&c, leaves[l]);
            c.only = 0;
            if (!both) {
                TK_CHECK_MSG(!g1 && !g2, "%s: leaf %d has a gradient from one consumer only", gw_names[k], l);
            } else {
                int bad = 0;
                for (int64_t i = 0; i < both->numel; i++) {
                    float want = (g1 ? tk_f32(g1)[i] : 0.0f) + (g2 ? tk_f32(g2)[i] : 0.0f);
                    if (fabsf(tk_f32(both)[i] - want) > 1e-5f * (1.0f + fabsf(want))) bad++;
                }
                TK_CHECK_MSG(bad == 0, "%s: leaf %d: %d elements differ from the sum of the parts", gw_names[k], l,
                             bad);
            }
            tk_tensor_release(both);
            tk_tensor_release(g1);
            tk_tensor_release(g2);
        }
        op_release(c.x, c.y, c.w, c.b, NULL);
    }
}

/* Two lookups of one table (one-hot sum, ragged mean) append into one sparse gradient;
 * its dense form matches a reference loop. */
static void test_embedding_reserve(void) {
    tk_tensor *table = op_leaf_2d(6, 10, 50);
    int64_t ids1[4] = { 5, 0, 5, 3 }, ids2[5] = { 1, 5, 5, 2, 0 }, offs[3] = { 0, 3, 5 };
    tk_tensor *i1 = op_i64(4, ids1), *i2 = op_i64(5, ids2), *o2 = op_i64(3, offs);
    tk_tensor *dy1 = tk_test_randn(2, (int64_t[]){ 4, 10 }, 1, 51),
              *dy2 = tk_test_randn(2, (int64_t[]){ 2, 10 }, 1, 52);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *e1 = tk_embedding_lookup(ctx, table, i1, NULL, TK_COMBINER_SUM, "t");
    tk_tensor *e2 = tk_embedding_lookup(ctx, table, i2, o2, TK_COMBINER_MEAN, "t");
    tk_tensor *loss =
        tk_add(ctx, tk_sum(ctx, tk_mul(ctx, e1, dy1), -1, false), tk_sum(ctx, tk_mul(ctx, e2, dy2), -1, false));
    TK_CHECK(loss && tk_backward(ctx, loss) == TK_OK);
    float want[60] = { 0 };
    for (int b = 0; b < 4; b++)
        for (int j = 0; j < 10; j++) want[ids1[b] * 10 + j] += tk_f32(dy1)[b * 10 + j];
    for (int b = 0; b < 2; b++)
        for (int64_t p = offs[b]; p < offs[b + 1]; p++)
            for (int j = 0; j < 10; j++)
                want[ids2[p] * 10 + j] += tk_f32(dy2)[b * 10 + j] / (float)(offs[b + 1] - offs[b]);
    tk_sparse_grad *sg = tk_ctx_sparse_grad(ctx, table);
    TK_CHECK(sg && sg->n == 5); /* rows 0, 1, 2, 3, 5 */
    tk_tensor *g = tk_ctx_grad(ctx, table);
    TK_CHECK(g && op_mismatches(g, want, 1e-5) == 0);
    tk_ctx_free(ctx);
    op_release(table, i1, i2, o2, dy1, dy2, NULL);
}

/* ReLU's vector kernels (SSE max and compare) against the scalar form, bit for bit,
 * with -0, NaN and infinities in the body and the tail; forward with a bias (dense).
 * Bitwise by construction: max, compare and the one multiply or add per lane are the
 * same IEEE operations in both forms (no FMA: -ffp-contract=off), and the dense
 * layer's product is 1 x w, exact in any sgemm kernel. */
static void test_relu_kernels(void) {
    enum { N = 11 };
    float xs[N] = { -0.0f, NAN, INFINITY, -INFINITY, 2.5f, -1.5f, 0.0f, 1e-30f, -NAN, 3.0f, -0.0f };
    float dys[N] = { 1, 2, NAN, 4, INFINITY, 6, 7, 8, 9, -10, 11 };
    tk_tensor *x = op_leaf(2, (int64_t[]){ 1, N }, 1, 1), *w = tk_test_randn(2, (int64_t[]){ 1, N }, 1, 2);
    memcpy(x->data, xs, sizeof xs);
    for (int i = 0; i < N; i++) tk_f32(w)[i] = i % 3 == 0 ? 0.0f : 1.0f;
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *y = tk_activate(ctx, x, TK_ACT_RELU);
    tk_tensor *dy = tk_test_tensor(2, (int64_t[]){ 1, N }, dys);
    TK_CHECK(y && tk_backward(ctx, tk_sum(ctx, tk_mul(ctx, y, dy), -1, false)) == TK_OK);
    tk_tensor *g = tk_ctx_grad(ctx, x);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        float want = xs[i] > 0.0f ? xs[i] : 0.0f, dwant = dys[i] * (want > 0.0f ? 1.0f : 0.0f);
        float got = tk_f32(y)[i], dgot = tk_f32(g)[i];
        if (memcmp(&got, &want, 4) != 0 || !(memcmp(&dgot, &dwant, 4) == 0 || (isnan(dgot) && isnan(dwant)))) bad++;
    }
    TK_CHECK_MSG(bad == 0, "%d relu lanes differ from the scalar form", bad);
    /* the dense layer's fused bias: relu(x W + b) with a [1, 1] kernel row per lane */
    tk_ctx_set_grad_enabled(ctx, false);
    tk_tensor *one = tk_test_tensor(2, (int64_t[]){ 1, 1 }, (float[]){ 1.0f });
    tk_tensor *z = tk_dense(ctx, one, w, x, TK_ACT_RELU);
    bad = 0;
    for (int i = 0; i < N; i++) {
        float v = tk_f32(w)[i] + xs[i], want = v > 0.0f ? v : 0.0f;
        if (memcmp(&tk_f32(z)[i], &want, 4) != 0) bad++;
    }
    TK_CHECK_MSG(bad == 0, "%d fused bias + relu lanes differ from the scalar form", bad);
    tk_ctx_free(ctx);
    op_release(x, w, dy, one, NULL);
}

int main(void) {
    TK_RUN(test_relu_kernels);
    TK_RUN(test_fresh_then_accumulate);
    TK_RUN(test_embedding_reserve);
    return tk_test_summary();
}
