/* Initializers: names, Keras statistics on large tensors, determinism. */
#include "op_test.h"

typedef struct {
    double mean, std, min, max;
} stats;

static stats stats_of(const tk_tensor *t) {
    stats s = { 0, 0, INFINITY, -INFINITY };
    const float *p = tk_f32(t);
    for (int64_t i = 0; i < t->numel; i++) {
        s.mean += p[i];
        if (p[i] < s.min) s.min = p[i];
        if (p[i] > s.max) s.max = p[i];
    }
    s.mean /= (double)t->numel;
    for (int64_t i = 0; i < t->numel; i++) s.std += (p[i] - s.mean) * (p[i] - s.mean);
    s.std = sqrt(s.std / (double)t->numel);
    return s;
}

/* [400, 600]: fan_in 400, fan_out 600; 240000 draws. */
static tk_tensor *filled(const char *name, float a, float b, bool use_ab) {
    tk_tensor *t = tk_tensor_new_2d(TK_F32, 400, 600);
    tk_init init;
    int k = tk_init_from_name(name, &init);
    TK_CHECK(k >= 0);
    if (use_ab) {
        init.a = a;
        init.b = b;
    }
    tk_init_fill(t, init, 1234);
    return t;
}

static void test_names(void) {
    tk_init init;
    for (int k = 0; k < TK_INIT_COUNT; k++) {
        const char *name = tk_init_name((tk_init_kind)k);
        TK_CHECK(strstr(tk_init_names(), name) != NULL);
        TK_CHECK(tk_init_from_name(name, &init) == k);
        TK_CHECK(init.kind == (tk_init_kind)k);
    }
    TK_CHECK(tk_init_from_name("GlorotUniform", &init) == TK_INIT_GLOROT_UNIFORM);
    TK_CHECK(tk_init_from_name("uniform", &init) == TK_INIT_RANDOM_UNIFORM);
    TK_CHECK(tk_init_from_name("normal", &init) == TK_INIT_RANDOM_NORMAL);
    TK_CHECK(tk_init_from_name("bogus", &init) == -1);
    TK_CHECK(tk_init_from_name(NULL, &init) == -1);
    TK_CHECK(strcmp(tk_init_name(TK_INIT_COUNT), "unknown") == 0);
    /* Keras' default parameters */
    tk_init_from_name("random_uniform", &init);
    TK_CHECK_NEAR(init.a, -0.05, 1e-9);
    TK_CHECK_NEAR(init.b, 0.05, 1e-9);
    tk_init_from_name("random_normal", &init);
    TK_CHECK_NEAR(init.a, 0.05, 1e-9);
    tk_init_from_name("truncated_normal", &init);
    TK_CHECK_NEAR(init.a, 0.05, 1e-9);
    TK_CHECK(tk_init_default_kernel().kind == TK_INIT_GLOROT_UNIFORM);
}

static void test_constants(void) {
    /* constants are stored, not computed: exact */
    tk_tensor *t = tk_tensor_new_2d(TK_F32, 3, 4);
    tk_init_fill(t, (tk_init){ .kind = TK_INIT_ONES, .a = 0, .b = 0 }, 1);
    for (int i = 0; i < 12; i++) TK_CHECK(tk_f32(t)[i] == 1.0f);
    tk_init_fill(t, (tk_init){ .kind = TK_INIT_CONSTANT, .a = 2.5f, .b = 0 }, 1);
    for (int i = 0; i < 12; i++) TK_CHECK(tk_f32(t)[i] == 2.5f);
    tk_init_fill(t, tk_init_zeros(), 1);
    for (int i = 0; i < 12; i++) TK_CHECK(tk_f32(t)[i] == 0.0f);
    tk_tensor_release(t);
}

static void test_uniforms(void) {
    struct {
        const char *name;
        double limit;
    } cases[] = {
        { "glorot_uniform", sqrt(6.0 / (400 + 600)) },
        { "he_uniform", sqrt(6.0 / 400) },
        { "lecun_uniform", sqrt(3.0 / 400) },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tk_tensor *t = filled(cases[i].name, 0, 0, false);
        stats s = stats_of(t);
        double lim = cases[i].limit;
        TK_CHECK_MSG(s.min >= -lim && s.max <= lim, "%s: [%g, %g] beyond %g", cases[i].name, s.min, s.max, lim);
        TK_CHECK_MSG(s.min < -0.99 * lim && s.max > 0.99 * lim, "%s: does not reach its limits", cases[i].name);
        TK_CHECK_NEAR(s.mean, 0.0, 0.01 * lim);
        TK_CHECK_NEAR(s.std, lim / sqrt(3.0), 0.01 * lim);
        tk_tensor_release(t);
    }
    tk_tensor *t = filled("random_uniform", 0, 0, false);
    stats s = stats_of(t);
    TK_CHECK(s.min >= -0.05 && s.max < 0.05);
    TK_CHECK_NEAR(s.mean, 0.0, 5e-4);
    TK_CHECK_NEAR(s.std, 0.1 / sqrt(12.0), 5e-4);
    tk_tensor_release(t);
    t = filled("random_uniform", 2.0f, 3.0f, true);
    s = stats_of(t);
    TK_CHECK(s.min >= 2.0 && s.max < 3.0);
    TK_CHECK_NEAR(s.mean, 2.5, 5e-3);
    tk_tensor_release(t);
}

static void test_normals(void) {
    /* Keras' truncated variance-scaling normals: the final stddev is the target one,
     * and values stay within 2 stddev of the untruncated (corrected) distribution. */
    struct {
        const char *name;
        double target;
    } cases[] = {
        { "glorot_normal", sqrt(2.0 / (400 + 600)) },
        { "he_normal", sqrt(2.0 / 400) },
        { "lecun_normal", sqrt(1.0 / 400) },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tk_tensor *t = filled(cases[i].name, 0, 0, false);
        stats s = stats_of(t);
        double sd = cases[i].target, bound = 2.0 * sd / 0.87962566103423978;
        TK_CHECK_MSG(s.min >= -bound && s.max <= bound, "%s: [%g, %g] beyond %g", cases[i].name, s.min, s.max, bound);
        TK_CHECK_MSG(s.max > 0.97 * bound, "%s: max %g never near the truncation %g", cases[i].name, s.max, bound);
        TK_CHECK_NEAR(s.mean, 0.0, 0.01 * sd);
        TK_CHECK_NEAR(s.std, sd, 0.01 * sd);
        tk_tensor_release(t);
    }
    tk_tensor *t = filled("random_normal", 0, 0, false);
    stats s = stats_of(t);
    TK_CHECK_NEAR(s.mean, 0.0, 5e-4);
    TK_CHECK_NEAR(s.std, 0.05, 5e-4);
    TK_CHECK(s.max > 0.2); /* untruncated: 4 stddev happens in 240000 draws */
    tk_tensor_release(t);
    t = filled("truncated_normal", 0.5f, 0, true);
    s = stats_of(t);
    TK_CHECK(s.min >= -1.0 && s.max <= 1.0);
    TK_CHECK_NEAR(s.mean, 0.0, 5e-3);
    TK_CHECK_NEAR(s.std, 0.5 * 0.87962566103423978, 5e-3);
    tk_tensor_release(t);
}

static void test_fans(void) {
    /* [n]: fan_in = fan_out = n */
    tk_tensor *v = tk_tensor_new_1d(TK_F32, 50000);
    tk_init_fill(v, (tk_init){ .kind = TK_INIT_GLOROT_UNIFORM, .a = 0, .b = 0 }, 3);
    stats s = stats_of(v);
    double lim = sqrt(6.0 / 100000.0);
    TK_CHECK(s.min >= -lim && s.max <= lim && s.max > 0.99 * lim);
    tk_tensor_release(v);
    /* [V, D] embedding table: fan_in V, fan_out D */
    tk_tensor *e = tk_tensor_new_2d(TK_F32, 1000, 8);
    tk_init_fill(e, (tk_init){ .kind = TK_INIT_HE_UNIFORM, .a = 0, .b = 0 }, 3);
    s = stats_of(e);
    lim = sqrt(6.0 / 1000.0);
    TK_CHECK(s.min >= -lim && s.max <= lim && s.max > 0.99 * lim);
    tk_tensor_release(e);
    /* [k, k, in, out] convolution-style: receptive field multiplies both */
    int64_t shape[4] = { 3, 3, 20, 40 };
    tk_tensor *c = tk_tensor_new(TK_F32, 4, shape);
    tk_init_fill(c, (tk_init){ .kind = TK_INIT_GLOROT_UNIFORM, .a = 0, .b = 0 }, 3);
    s = stats_of(c);
    lim = sqrt(6.0 / (9 * 20 + 9 * 40));
    TK_CHECK(s.min >= -lim && s.max <= lim && s.max > 0.98 * lim);
    tk_tensor_release(c);
}

/* One seed, one sequence of draws and the same arithmetic on them: the same bits. */
static void test_determinism(void) {
    for (int k = TK_INIT_RANDOM_UNIFORM; k < TK_INIT_COUNT; k++) {
        tk_init init;
        tk_init_from_name(tk_init_name((tk_init_kind)k), &init);
        tk_tensor *a = tk_tensor_new_2d(TK_F32, 16, 8), *b = tk_tensor_new_2d(TK_F32, 16, 8),
                  *c = tk_tensor_new_2d(TK_F32, 16, 8);
        tk_init_fill(a, init, 99);
        tk_init_fill(b, init, 99);
        tk_init_fill(c, init, 100);
        TK_CHECK_MSG(memcmp(a->data, b->data, 128 * sizeof(float)) == 0, "%s differs for one seed",
                     tk_init_name((tk_init_kind)k));
        TK_CHECK_MSG(memcmp(a->data, c->data, 128 * sizeof(float)) != 0, "%s ignores its seed",
                     tk_init_name((tk_init_kind)k));
        op_release(a, b, c, NULL);
    }
}

/* Keras' mean and stddev (b and a) for the normal kinds: the mean shifts the draws, the
 * truncation is around the mean. */
static void test_mean(void) {
    tk_tensor *t = filled("random_normal", 0.2f, 3.0f, true);
    stats s = stats_of(t);
    TK_CHECK_NEAR(s.mean, 3.0, 2e-3);
    TK_CHECK_NEAR(s.std, 0.2, 2e-3);
    tk_tensor_release(t);
    t = filled("truncated_normal", 0.5f, -1.0f, true);
    s = stats_of(t);
    TK_CHECK(s.min >= -2.0 && s.max <= 0.0);
    TK_CHECK(s.min < -1.98 && s.max > -0.02);
    TK_CHECK_NEAR(s.mean, -1.0, 5e-3);
    TK_CHECK_NEAR(s.std, 0.5 * 0.87962566103423978, 5e-3);
    tk_tensor_release(t);
}

/* An initializer's own seed replaces the one tk_init_fill is given; without has_seed
 * (a zero-initialised tk_init), the given seed counts. */
static void test_own_seed(void) {
    tk_init init;
    tk_init_from_name("random_normal", &init);
    TK_CHECK(!init.has_seed);
    tk_tensor *a = tk_tensor_new_2d(TK_F32, 16, 8), *b = tk_tensor_new_2d(TK_F32, 16, 8),
              *c = tk_tensor_new_2d(TK_F32, 16, 8);
    tk_init_fill(a, init, 5);
    init.has_seed = true;
    init.seed = 5;
    tk_init_fill(b, init, 77);
    tk_init_fill(c, init, 78);
    TK_CHECK(memcmp(a->data, b->data, 128 * sizeof(float)) == 0);
    TK_CHECK(memcmp(b->data, c->data, 128 * sizeof(float)) == 0);
    init.seed = 6;
    tk_init_fill(c, init, 5);
    TK_CHECK(memcmp(a->data, c->data, 128 * sizeof(float)) != 0);
    op_release(a, b, c, NULL);
}

static void test_int_tensor(void) {
    tk_tensor *t = tk_tensor_new_1d(TK_I64, 4);
    tk_init_fill(t, (tk_init){ .kind = TK_INIT_CONSTANT, .a = 7, .b = 0 }, 1);
    TK_CHECK(tk_i64(t)[3] == 7);
    tk_set_error("%s", "");
    tk_init_fill(t, (tk_init){ .kind = TK_INIT_GLOROT_UNIFORM, .a = 0, .b = 0 }, 1);
    TK_CHECK_ERROR(tk_last_error(), "init: glorot_uniform needs a float32 tensor");
    TK_CHECK(tk_i64(t)[3] == 7);
    tk_tensor_release(t);
    tk_init_fill(NULL, tk_init_zeros(), 1); /* ignored */
}

int main(void) {
    TK_RUN(test_names);
    TK_RUN(test_constants);
    TK_RUN(test_uniforms);
    TK_RUN(test_normals);
    TK_RUN(test_fans);
    TK_RUN(test_determinism);
    TK_RUN(test_mean);
    TK_RUN(test_own_seed);
    TK_RUN(test_int_tensor);
    return tk_test_summary();
}
