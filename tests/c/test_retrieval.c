/* tk_retrieval_loss: values against a plain double-precision reference, finite-difference
 * gradients of query, item and negatives for each option, and every error path. */
#include "op_test.h"

/* One configuration of the loss; the tensors are heap tensors owned by the case. */
typedef struct rl_case {
    const char *name;
    tk_tensor *query, *item;
    tk_retrieval_opts opts;
} rl_case;

/* The reference: a direct transcription of the documented semantics, in doubles. */
static double reference_loss(const rl_case *c) {
    const tk_retrieval_opts *o = &c->opts;
    int64_t B = c->query->shape[0], D = c->query->shape[1];
    int64_t N = o->negatives ? o->negatives->shape[0] : 0, M = B + N;
    double T = o->temperature == 0.0f ? 1.0 : o->temperature;
    double *x = malloc((size_t)M * sizeof *x);
    bool *keep = malloc((size_t)M * sizeof *keep);
    double total = 0.0;
    for (int64_t b = 0; b < B; b++) {
        const float *q = tk_f32(c->query) + b * D;
        for (int64_t j = 0; j < M; j++) {
            const float *v = j < B ? tk_f32(c->item) + j * D : tk_f32(o->negatives) + (j - B) * D;
            double s = 0.0;
            for (int64_t k = 0; k < D; k++) s += (double)q[k] * v[k];
            x[j] = s / T;
            if (j < B && o->item_logq) x[j] -= tk_f32(o->item_logq)[j];
            if (j >= B && o->negative_logq) x[j] -= tk_f32(o->negative_logq)[j - B];
            keep[j] = true;
            if (o->item_ids && j < B && j != b && tk_i64(o->item_ids)[j] == tk_i64(o->item_ids)[b]) keep[j] = false;
            if (o->negative_ids && j >= B && tk_i64(o->negative_ids)[j - B] == tk_i64(o->item_ids)[b]) keep[j] = false;
        }
        if (o->num_hard_negatives > 0) { /* keep the h best unmasked negatives, ties: lower column */
            int64_t *order = malloc((size_t)M * sizeof *order), cnt = 0;
            for (int64_t j = 0; j < M; j++)
                if (j != b && keep[j]) order[cnt++] = j;
            for (int64_t a = 0; a < cnt; a++) /* selection sort: best first, stable on ties */
                for (int64_t z = a + 1; z < cnt; z++)
                    if (x[order[z]] > x[order[a]] || (x[order[z]] == x[order[a]] && order[z] < order[a])) {
                        int64_t t = order[a];
                        order[a] = order[z];
                        order[z] = t;
                    }
            for (int64_t a = o->num_hard_negatives; a < cnt; a++) keep[order[a]] = false;
            free(order);
        }
        double m = -INFINITY;
        for (int64_t j = 0; j < M; j++)
            if (keep[j] && x[j] > m) m = x[j];
        double s = 0.0;
        for (int64_t j = 0; j < M; j++)
            if (keep[j]) s += exp(x[j] - m);
        double ce = m + log(s) - x[b];
        total += (o->weights ? tk_f32(o->weights)[b] : 1.0) * ce;
    }
    free(x);
    free(keep);
    return total / (double)B;
}

/* The smallest gap, over rows, between the h-th and (h+1)-th best negative logits: the
 * finite differences of a gradient check must not cross a selection boundary. */
static double hard_margin(const rl_case *c) {
    const tk_retrieval_opts *o = &c->opts;
    int64_t B = c->query->shape[0], D = c->query->shape[1], N = o->negatives ? o->negatives->shape[0] : 0;
    int64_t M = B + N, h = o->num_hard_negatives;
    double T = o->temperature == 0.0f ? 1.0 : o->temperature, gap = INFINITY;
    double *x = malloc((size_t)M * sizeof *x);
    for (int64_t b = 0; b < B; b++) {
        int64_t cnt = 0;
        for (int64_t j = 0; j < M; j++) {
            const float *v = j < B ? tk_f32(c->item) + j * D : tk_f32(o->negatives) + (j - B) * D;
            double d = 0;
            for (int64_t k = 0; k < D; k++) d += (double)tk_f32(c->query)[b * D + k] * v[k];
            d /= T;
            if (j < B && o->item_logq) d -= tk_f32(o->item_logq)[j];
            if (j >= B && o->negative_logq) d -= tk_f32(o->negative_logq)[j - B];
            const int64_t *ids = o->item_ids ? tk_i64(o->item_ids) : NULL;
            bool masked = ids && ((j < B && j != b && ids[j] == ids[b]) ||
                                  (j >= B && o->negative_ids && tk_i64(o->negative_ids)[j - B] == ids[b]));
            if (j != b && !masked) x[cnt++] = d;
        }
        if (cnt <= h) continue;
        for (int64_t a = 0; a < cnt; a++) /* sort descending */
            for (int64_t z = a + 1; z < cnt; z++)
                if (x[z] > x[a]) {
                    double t = x[a];
                    x[a] = x[z];
                    x[z] = t;
                }
        if (x[h - 1] - x[h] < gap) gap = x[h - 1] - x[h];
    }
    free(x);
    return gap;
}

/* Redraws a hard-negative case's embeddings (deterministically) until its margin is
 * comfortable. */
static void ensure_margin(rl_case *c, uint64_t seed) {
    for (uint64_t s = seed; hard_margin(c) < 0.15 && s < seed + 1000; s++) {
        tk_init init = { .kind = TK_INIT_RANDOM_NORMAL, .a = 0.7f, .b = 0 };
        tk_init_fill(c->query, init, s);
        tk_init_fill(c->opts.negatives, init, s + 5000);
    }
}

static tk_tensor *loss_of(tk_ctx *ctx, void *ud) {
    rl_case *c = ud;
    return tk_retrieval_loss(ctx, c->query, c->item, &c->opts);
}

static tk_tensor *i64_vec(int64_t n, const int64_t *v) { return op_i64(n, v); }

static tk_tensor *f32_vec(int64_t n, const float *v) { return op_f32(1, &n, v); }

/* The configurations: B = 6 rows of D = 4, N = 5 negatives. */
enum { CB = 6, CD = 4, CN = 5 };

static rl_case make_case(const char *name, uint64_t seed) {
    rl_case c = { .name = name };
    int64_t s[2] = { CB, CD };
    c.query = op_leaf(2, s, 0.7f, seed);
    c.item = op_leaf(2, s, 0.7f, seed + 100);
    return c;
}

static void add_negatives(rl_case *c, uint64_t seed) {
    int64_t s[2] = { CN, CD };
    c->opts.negatives = op_leaf(2, s, 0.7f, seed);
}

static void free_case(rl_case *c) { /* each may be NULL: op_release would stop at the first */
    tk_tensor *all[] = { c->query,
                         c->item,
                         c->opts.item_ids,
                         c->opts.item_logq,
                         c->opts.negatives,
                         c->opts.negative_ids,
                         c->opts.negative_logq,
                         c->opts.weights };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tk_tensor_release(all[i]);
}

/* Builds every configuration the tests run: each option alone, and all together. */
static int make_cases(rl_case *cases) {
    int n = 0;
    cases[n++] = make_case("plain", 1);

    rl_case c = make_case("temperature", 2);
    c.opts.temperature = 0.4f;
    cases[n++] = c;

    c = make_case("masking", 3); /* rows 0, 2, 5 share an id, rows 1 and 4 another */
    c.opts.item_ids = i64_vec(CB, (int64_t[]){ 7, 3, 7, 9, 3, 7 });
    cases[n++] = c;

    c = make_case("logq", 4);
    c.opts.item_logq = f32_vec(CB, (float[]){ -1.0f, -2.5f, -0.3f, -4.0f, -1.7f, -0.9f });
    cases[n++] = c;

    c = make_case("negatives", 5);
    add_negatives(&c, 55);
    c.opts.item_ids = i64_vec(CB, (int64_t[]){ 10, 11, 12, 13, 14, 15 });
    c.opts.negative_ids = i64_vec(CN, (int64_t[]){ 11, 20, 15, 21, 11 }); /* 11 and 15 are positives */
    c.opts.negative_logq = f32_vec(CN, (float[]){ -3.0f, -5.0f, -2.0f, -6.0f, -3.5f });
    cases[n++] = c;

    c = make_case("weights", 6);
    c.opts.weights = f32_vec(CB, (float[]){ 1.0f, 0.5f, 2.0f, 0.0f, 1.5f, 3.0f });
    cases[n++] = c;

    c = make_case("hard_negatives", 7);
    add_negatives(&c, 77);
    c.opts.num_hard_negatives = 3;
    ensure_margin(&c, 700);
    cases[n++] = c;

    c = make_case("everything", 8);
    add_negatives(&c, 88);
    c.opts.temperature = 0.5f;
    c.opts.item_ids = i64_vec(CB, (int64_t[]){ 1, 2, 1, 3, 4, 2 });
    c.opts.item_logq = f32_vec(CB, (float[]){ -1.0f, -2.0f, -1.0f, -3.0f, -0.5f, -2.0f });
    c.opts.negative_ids = i64_vec(CN, (int64_t[]){ 4, 9, 1, 8, 7 });
    c.opts.negative_logq = f32_vec(CN, (float[]){ -2.0f, -4.0f, -1.0f, -3.0f, -2.5f });
    c.opts.weights = f32_vec(CB, (float[]){ 0.5f, 1.0f, 1.5f, 2.0f, 1.0f, 0.25f });
    c.opts.num_hard_negatives = 4;
    ensure_margin(&c, 800);
    cases[n++] = c;
    return n;
}

static void test_hand_computed(void) {
    /* q = [[1, 0], [0, 1]], c = [[1, 0], [1, 1]]: logits [[1, 1], [0, 1]];
     * ce_0 = log(2e) - 1 = log 2, ce_1 = log(1 + e) - 1. */
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 2, 2 };
    tk_tensor *q = op_f32(2, s, (float[]){ 1, 0, 0, 1 }), *c = op_f32(2, s, (float[]){ 1, 0, 1, 1 });
    tk_tensor *loss = tk_retrieval_loss(ctx, q, c, NULL);
    OP_CHECK_SHAPE(loss, 1);
    double want = (log(2.0) + log(1.0 + exp(1.0)) - 1.0) / 2.0;
    if (loss) TK_CHECK_NEAR(tk_f32(loss)[0], want, 1e-6);
    /* temperature 0.5 doubles the logits: ce_0 = log 2, ce_1 = log(1 + e^2) - 2 */
    tk_retrieval_opts o = { .temperature = 0.5f };
    loss = tk_retrieval_loss(ctx, q, c, &o);
    want = (log(2.0) + log(1.0 + exp(2.0)) - 2.0) / 2.0;
    if (loss) TK_CHECK_NEAR(tk_f32(loss)[0], want, 1e-6);
    /* equal ids mask each row's only negative: every ce is log(e^x) - x = 0 */
    tk_tensor *ids = i64_vec(2, (int64_t[]){ 4, 4 });
    o = (tk_retrieval_opts){ .item_ids = ids };
    loss = tk_retrieval_loss(ctx, q, c, &o);
    if (loss) TK_CHECK_NEAR(tk_f32(loss)[0], 0.0, 1e-7);
    TK_CHECK(!tk_ctx_failed(ctx));
    op_release(q, c, ids, NULL);
    tk_ctx_free(ctx);
}

static void test_values_against_reference(void) {
    rl_case cases[16];
    int n = make_cases(cases);
    tk_ctx *ctx = tk_ctx_new(1);
    for (int i = 0; i < n; i++) {
        tk_ctx_reset(ctx);
        tk_tensor *loss = tk_retrieval_loss(ctx, cases[i].query, cases[i].item, &cases[i].opts);
        TK_CHECK_MSG(loss != NULL, "%s: %s", cases[i].name, tk_ctx_error(ctx));
        double want = reference_loss(&cases[i]);
        if (loss)
            TK_CHECK_MSG(fabs(tk_f32(loss)[0] - want) <= 1e-5 * (1.0 + fabs(want)), "%s: loss %.8g, reference %.8g",
                         cases[i].name, (double)tk_f32(loss)[0], want);
    }
    for (int i = 0; i < n; i++) free_case(&cases[i]);
    tk_ctx_free(ctx);
}

/* Large logits, many rows and columns not multiples of the vector width: the fused
 * softmax stays exact enough and finite. */
static void test_values_large(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 37, 9 }, sn[2] = { 23, 9 };
    rl_case c = { .name = "large", .query = tk_test_randn(2, s, 1.0f, 11), .item = tk_test_randn(2, s, 1.0f, 12) };
    c.opts.negatives = tk_test_randn(2, sn, 1.0f, 13);
    c.opts.temperature = 0.05f; /* logits up to about +-200 */
    tk_tensor *loss = tk_retrieval_loss(ctx, c.query, c.item, &c.opts);
    double want = reference_loss(&c);
    TK_CHECK(loss != NULL);
    if (loss)
        TK_CHECK_MSG(fabs(tk_f32(loss)[0] - want) <= 1e-5 * (1.0 + fabs(want)), "%.8g vs %.8g", (double)tk_f32(loss)[0],
                     want);
    /* with grad disabled the value is the same, bit for bit: the forward pass is one code
     * path (tk_rl_forward_rows, the same sgemms and row kernels); grad only records a node */
    tk_ctx_set_grad_enabled(ctx, false);
    tk_tensor *l2 = tk_retrieval_loss(ctx, c.query, c.item, &c.opts);
    if (loss && l2) TK_CHECK(tk_f32(loss)[0] == tk_f32(l2)[0]);
    free_case(&c);
    tk_ctx_free(ctx);
}

static void test_gradients(void) {
    rl_case cases[16];
    int n = make_cases(cases);
    for (int i = 0; i < n; i++) {
        tk_tensor *leaves[3] = { cases[i].query, cases[i].item, cases[i].opts.negatives };
        int nl = cases[i].opts.negatives ? 3 : 2;
        if (cases[i].opts.num_hard_negatives > 0) /* no selection boundary within reach */
            TK_CHECK_MSG(hard_margin(&cases[i]) > 0.1, "%s: hard-negative margin %g too small for finite differences",
                         cases[i].name, hard_margin(&cases[i]));
        int bad = gradcheck_run(cases[i].name, loss_of, &cases[i], nl, leaves, false, 1e-2);
        TK_CHECK_MSG(bad == 0, "%s: %d gradient mismatches", cases[i].name, bad);
    }
    for (int i = 0; i < n; i++) free_case(&cases[i]);
}

/* The analytic gradient of the logits, checked element by element against the formula
 * (softmax - onehot) * w / B / T through dq = dlogits C. */
static void test_gradient_formula(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 3, 2 };
    tk_tensor *q = op_leaf(2, s, 1.0f, 21), *c = tk_test_randn(2, s, 1.0f, 22);
    tk_tensor *w = f32_vec(3, (float[]){ 1.0f, 2.0f, 0.5f });
    tk_retrieval_opts o = { .temperature = 0.7f, .weights = w };
    tk_tensor *loss = tk_retrieval_loss(ctx, q, c, &o);
    TK_CHECK(loss && tk_backward(ctx, loss) == TK_OK);
    tk_tensor *g = tk_ctx_grad(ctx, q);
    TK_CHECK(g != NULL);
    /* item c gets no gradient: it does not require one */
    TK_CHECK(tk_ctx_grad(ctx, c) == NULL);
    for (int b = 0; g && b < 3; b++) {
        const float *qb = tk_f32(q) + 2 * b;
        double x[3], z = 0;
        for (int j = 0; j < 3; j++) {
            x[j] = (qb[0] * tk_f32(c)[2 * j] + qb[1] * tk_f32(c)[2 * j + 1]) / 0.7;
            z += exp(x[j]);
        }
        for (int k = 0; k < 2; k++) {
            double want = 0;
            for (int j = 0; j < 3; j++)
                want += (exp(x[j]) / z - (j == b)) * tk_f32(w)[b] / 3 / 0.7 * tk_f32(c)[2 * j + k];
            TK_CHECK_NEAR(tk_f32(g)[2 * b + k], want, 1e-5);
        }
    }
    op_release(q, c, w, NULL);
    tk_ctx_free(ctx);
}

/* A row whose every column but the positive is masked has ce = 0 and no gradient. */
static void test_fully_masked_rows(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    rl_case c = make_case("all_masked", 31);
    add_negatives(&c, 32);
    c.opts.item_ids = i64_vec(CB, (int64_t[]){ 5, 5, 5, 5, 5, 5 });
    c.opts.negative_ids = i64_vec(CN, (int64_t[]){ 5, 5, 5, 5, 5 });
    c.opts.num_hard_negatives = 2;
    tk_tensor *loss = tk_retrieval_loss(ctx, c.query, c.item, &c.opts);
    TK_CHECK(loss != NULL);
    if (loss) TK_CHECK_NEAR(tk_f32(loss)[0], 0.0, 1e-7);
    TK_CHECK(loss && tk_backward(ctx, loss) == TK_OK);
    tk_tensor *gq = tk_ctx_grad(ctx, c.query), *gn = tk_ctx_grad(ctx, c.opts.negatives);
    for (int64_t i = 0; gq && i < gq->numel; i++) TK_CHECK_NEAR(tk_f32(gq)[i], 0.0, 1e-7);
    /* exactly 0: every masked column's softmax weight is exp(-inf) = 0, and sums of zero
     * products are 0 in any kernel */
    for (int64_t i = 0; gn && i < gn->numel; i++) TK_CHECK(tk_f32(gn)[i] == 0.0f);
    free_case(&c);
    tk_ctx_free(ctx);
}

/* Hard negatives: more than there are keeps everything; the dropped columns get exactly
 * no gradient; 0 is off. */
static void test_hard_negative_semantics(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    rl_case c = make_case("hard", 41);
    add_negatives(&c, 42);
    tk_tensor *plain = tk_retrieval_loss(ctx, c.query, c.item, &c.opts);
    c.opts.num_hard_negatives = CB + CN; /* more than the CB + CN - 1 negatives of a row */
    tk_tensor *all = tk_retrieval_loss(ctx, c.query, c.item, &c.opts);
    c.opts.num_hard_negatives = CB + CN - 1;
    tk_tensor *exactly = tk_retrieval_loss(ctx, c.query, c.item, &c.opts);
    TK_CHECK(plain && all && exactly);
    float plain_value = plain ? tk_f32(plain)[0] : NAN;
    if (plain && all && exactly) {
        /* bit for bit: h >= B + N - 1 keeps every column, so no selection runs (the plain
         * code path, the same operations) */
        TK_CHECK(tk_f32(plain)[0] == tk_f32(all)[0]);
        TK_CHECK(tk_f32(plain)[0] == tk_f32(exactly)[0]);
    }
    /* one hard negative: loss = mean log(1 + e^(x_hard - x_pos)) over rows, and fewer
     * than all negatives are used, so the loss is below the plain one */
    tk_ctx_reset(ctx);
    c.opts.num_hard_negatives = 1;
    tk_tensor *one = tk_retrieval_loss(ctx, c.query, c.item, &c.opts);
    TK_CHECK(one != NULL);
    if (one) TK_CHECK_NEAR(tk_f32(one)[0], reference_loss(&c), 1e-5);
    if (one) TK_CHECK(tk_f32(one)[0] < plain_value);
    TK_CHECK(one && tk_backward(ctx, one) == TK_OK);
    /* a negative row that is nobody's hardest gets exactly zero gradient (its column's
     * weights are exp(-inf) = 0 in every row: sums of zero products, 0 in any kernel) */
    tk_tensor *gn = tk_ctx_grad(ctx, c.opts.negatives);
    int zero_rows = 0;
    for (int64_t n = 0; gn && n < CN; n++) {
        bool zero = true;
        for (int k = 0; k < CD; k++) zero &= tk_f32(gn)[n * CD + k] == 0.0f;
        zero_rows += zero;
    }
    TK_CHECK(gn != NULL);
    TK_CHECK(zero_rows >= CN - CB); /* at most CB rows have a hardest negative */
    free_case(&c);
    tk_ctx_free(ctx);
}

/* The same tensor as query and item (self-retrieval): gradients of both roles add up. */
static void test_shared_tensor(void) {
    int64_t s[2] = { 4, 3 };
    rl_case c = { .name = "shared", .query = op_leaf(2, s, 0.8f, 51) };
    c.item = c.query;
    tk_tensor_retain(c.item);
    int bad = gradcheck_run("shared", loss_of, &c, 1, &c.query, false, 1e-2);
    TK_CHECK(bad == 0);
    op_release(c.query, c.item, NULL);
}

/* Steady state: after the first step a reset context allocates nothing more. */
static void test_steady_state(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    rl_case c = make_case("steady", 61);
    add_negatives(&c, 62);
    c.opts.item_ids = i64_vec(CB, (int64_t[]){ 1, 2, 1, 3, 4, 2 });
    c.opts.negative_ids = i64_vec(CN, (int64_t[]){ 4, 9, 1, 8, 7 });
    c.opts.num_hard_negatives = 2;
    uint64_t allocs = 0;
    for (int step = 0; step < 4; step++) {
        tk_ctx_reset(ctx);
        tk_tensor *loss = tk_retrieval_loss(ctx, c.query, c.item, &c.opts);
        TK_CHECK(loss && tk_backward(ctx, loss) == TK_OK);
        if (step == 1) allocs = tk_ctx_alloc_count(ctx);
    }
    TK_CHECK(tk_ctx_alloc_count(ctx) == allocs);
    free_case(&c);
    tk_ctx_free(ctx);
}

/* Every bad argument is refused with a message naming the op and the argument. */
static void expect_error(tk_tensor *q, tk_tensor *c, const tk_retrieval_opts *o, const char *needle) {
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *loss = tk_retrieval_loss(ctx, q, c, o);
    TK_CHECK_MSG(loss == NULL, "expected an error containing \"%s\"", needle);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "retrieval_loss");
    TK_CHECK_ERROR(tk_ctx_error(ctx), needle);
    tk_ctx_free(ctx);
}

static void test_errors(void) {
    int64_t s[2] = { 3, 2 }, s1[1] = { 6 }, sw[2] = { 3, 4 }, s0[2] = { 0, 2 }, sn[2] = { 2, 2 }, snw[2] = { 2, 3 };
    tk_tensor *q = tk_test_randn(2, s, 1.0f, 1), *c = tk_test_randn(2, s, 1.0f, 2);
    tk_tensor *flat = tk_test_randn(1, s1, 1.0f, 3), *wide = tk_test_randn(2, sw, 1.0f, 4);
    tk_tensor *empty = tk_tensor_new(TK_F32, 2, s0), *neg = tk_test_randn(2, sn, 1.0f, 5);
    tk_tensor *negw = tk_test_randn(2, snw, 1.0f, 6);
    tk_tensor *qi = tk_tensor_new(TK_I64, 2, s), *negi = tk_tensor_new(TK_I64, 2, sn);
    tk_tensor *ids3 = i64_vec(3, (int64_t[]){ 1, 2, 3 }), *ids2 = i64_vec(2, (int64_t[]){ 1, 2 });
    tk_tensor *f3 = f32_vec(3, (float[]){ 0, 0, 0 }), *f2 = f32_vec(2, (float[]){ 0, 0 });
    tk_tensor *finf = f32_vec(3, (float[]){ 0, INFINITY, 0 }), *fnan = f32_vec(3, (float[]){ 0, 0, NAN });
    tk_tensor *f2inf = f32_vec(2, (float[]){ -INFINITY, 0 });

    expect_error(NULL, c, NULL, "input is NULL (query)");
    expect_error(q, NULL, NULL, "input is NULL (item)");
    expect_error(qi, c, NULL, "query must be float32");
    expect_error(q, qi, NULL, "item must be float32");
    expect_error(flat, c, NULL, "query must be 2-D");
    expect_error(q, flat, NULL, "item must be 2-D");
    expect_error(q, wide, NULL, "query and item must have the same shape, got [3, 2] and [3, 4]");
    expect_error(empty, empty, NULL, "query must have at least one row and one column");

    tk_retrieval_opts o = { .temperature = -1.0f };
    expect_error(q, c, &o, "temperature must be finite and > 0 (0 means 1), got -1");
    o = (tk_retrieval_opts){ .temperature = NAN };
    expect_error(q, c, &o, "temperature must be finite and > 0");
    o = (tk_retrieval_opts){ .temperature = INFINITY };
    expect_error(q, c, &o, "temperature must be finite and > 0");
    o = (tk_retrieval_opts){ .num_hard_negatives = -1 };
    expect_error(q, c, &o, "num_hard_negatives must be >= 0 (0: off), got -1");

    o = (tk_retrieval_opts){ .item_ids = f3 };
    expect_error(q, c, &o, "item_ids must be int64 [3] (one per row of query), got float32 [3]");
    o = (tk_retrieval_opts){ .item_ids = ids2 };
    expect_error(q, c, &o, "item_ids must be int64 [3] (one per row of query), got int64 [2]");
    o = (tk_retrieval_opts){ .item_logq = f2 };
    expect_error(q, c, &o, "item_logq must be float32 [3] (one per row of item), got float32 [2]");
    o = (tk_retrieval_opts){ .item_logq = ids3 };
    expect_error(q, c, &o, "item_logq must be float32 [3]");
    o = (tk_retrieval_opts){ .item_logq = finf };
    expect_error(q, c, &o, "item_logq[1] is inf; it must be finite");
    o = (tk_retrieval_opts){ .weights = f2 };
    expect_error(q, c, &o, "weights must be float32 [3] (one per row of query), got float32 [2]");
    o = (tk_retrieval_opts){ .weights = fnan };
    expect_error(q, c, &o, "weights[2] is nan; it must be finite");

    o = (tk_retrieval_opts){ .negative_ids = ids2 };
    expect_error(q, c, &o, "negative_ids given without negatives");
    o = (tk_retrieval_opts){ .negative_logq = f2 };
    expect_error(q, c, &o, "negative_logq given without negatives");
    o = (tk_retrieval_opts){ .negatives = negi };
    expect_error(q, c, &o, "negatives must be float32, got int64 [2, 2]");
    o = (tk_retrieval_opts){ .negatives = negw };
    expect_error(q, c, &o, "negatives must be [N, 2] (as wide as query), got [2, 3]");
    o = (tk_retrieval_opts){ .negatives = flat };
    expect_error(q, c, &o, "negatives must be [N, 2] (as wide as query), got [6]");
    o = (tk_retrieval_opts){ .negatives = neg, .item_ids = ids3, .negative_ids = ids3 };
    expect_error(q, c, &o, "negative_ids must be int64 [2] (one per negative), got int64 [3]");
    o = (tk_retrieval_opts){ .negatives = neg, .negative_ids = ids2 };
    expect_error(q, c, &o, "negative_ids need item_ids");
    o = (tk_retrieval_opts){ .negatives = neg, .negative_logq = f3 };
    expect_error(q, c, &o, "negative_logq must be float32 [2] (one per negative), got float32 [3]");
    o = (tk_retrieval_opts){ .negatives = neg, .negative_logq = f2inf };
    expect_error(q, c, &o, "negative_logq[0] is -inf; it must be finite");

    /* an earlier error is kept: a chain needs one check */
    tk_ctx *ctx = tk_ctx_new(1);
    tk_ctx_fail(ctx, "first problem");
    TK_CHECK(tk_retrieval_loss(ctx, NULL, c, NULL) == NULL);
    TK_CHECK(strcmp(tk_ctx_error(ctx), "first problem") == 0);
    tk_ctx_free(ctx);
    TK_CHECK(tk_retrieval_loss(NULL, q, c, NULL) == NULL);

    op_release(q, c, flat, wide, empty, neg, negw, qi, negi, ids3, ids2, f3, f2, finf, fnan, f2inf, NULL);
}

/* Inputs that are not finite give a NaN loss (which a training loop detects), never a
 * silently finite one. */
static void test_nan_inputs(void) {
    tk_ctx *ctx = tk_ctx_new(1);
    int64_t s[2] = { 3, 2 };
    tk_tensor *q = op_f32(2, s, (float[]){ 1, 0, 0, 1, 1, 1 });
    tk_tensor *c = op_f32(2, s, (float[]){ 1, 0, NAN, 1, 0, 1 });
    tk_tensor *loss = tk_retrieval_loss(ctx, q, c, NULL);
    TK_CHECK(loss != NULL);
    if (loss) TK_CHECK(isnan(tk_f32(loss)[0]));
    op_release(q, c, NULL);
    tk_ctx_free(ctx);
}

int main(void) {
    TK_RUN(test_hand_computed);
    TK_RUN(test_values_against_reference);
    TK_RUN(test_values_large);
    TK_RUN(test_gradients);
    TK_RUN(test_gradient_formula);
    TK_RUN(test_fully_masked_rows);
    TK_RUN(test_hard_negative_semantics);
    TK_RUN(test_shared_tensor);
    TK_RUN(test_steady_state);
    TK_RUN(test_errors);
    TK_RUN(test_nan_inputs);
    return tk_test_summary();
}
