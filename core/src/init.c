/* Initializers with Keras' names and semantics.
 *
 * fan_in/fan_out follow Keras' _compute_fans: a scalar has 1 and 1, a vector [n] has n
 * and n, a matrix [r, c] has r and c, and a higher-rank kernel [..., r, c] multiplies
 * both by the receptive field (the product of the leading dimensions).
 *
 * The normal variance-scaling initializers (glorot_normal, he_normal, lecun_normal) draw
 * from a normal truncated at two standard deviations, with Keras' correction of the
 * standard deviation (divided by 0.87962566103423978, the stddev of a unit normal
 * truncated to [-2, 2]) so the drawn values have the intended variance. */
#include "internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>

static const char *const init_names[TK_INIT_COUNT] = {
    [TK_INIT_ZEROS] = "zeros",
    [TK_INIT_ONES] = "ones",
    [TK_INIT_CONSTANT] = "constant",
    [TK_INIT_RANDOM_UNIFORM] = "random_uniform",
    [TK_INIT_RANDOM_NORMAL] = "random_normal",
    [TK_INIT_TRUNCATED_NORMAL] = "truncated_normal",
    [TK_INIT_GLOROT_UNIFORM] = "glorot_uniform",
    [TK_INIT_GLOROT_NORMAL] = "glorot_normal",
    [TK_INIT_HE_NORMAL] = "he_normal",
    [TK_INIT_HE_UNIFORM] = "he_uniform",
    [TK_INIT_LECUN_NORMAL] = "lecun_normal",
    [TK_INIT_LECUN_UNIFORM] = "lecun_uniform",
};

/* Keras' other spellings of the same initializers. */
static const struct {
    const char *name;
    tk_init_kind kind;
} init_aliases[] = {
    { "zero", TK_INIT_ZEROS },
    { "one", TK_INIT_ONES },
    { "uniform", TK_INIT_RANDOM_UNIFORM },
    { "normal", TK_INIT_RANDOM_NORMAL },
};

const char *tk_init_name(tk_init_kind kind) { return (unsigned)kind < TK_INIT_COUNT ? init_names[kind] : "unknown"; }

const char *tk_init_names(void) {
    return "zeros, ones, constant, random_uniform, random_normal, truncated_normal, "
           "glorot_uniform, glorot_normal, he_normal, he_uniform, lecun_normal, lecun_uniform";
}

/* Case- and underscore-insensitive comparison, so Keras' class names ("GlorotUniform")
 * match the function names ("glorot_uniform"). */
static bool same_name(const char *a, const char *b) {
    for (;;) {
        while (*a == '_') a++;
        while (*b == '_') b++;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
        if (!*a) return true;
        a++;
        b++;
    }
}

static tk_init init_default(tk_init_kind kind) {
    tk_init init = { .kind = kind };
    switch (kind) {
    case TK_INIT_RANDOM_UNIFORM:
        init.a = -0.05f;
        init.b = 0.05f;
        break;
    case TK_INIT_RANDOM_NORMAL:
    case TK_INIT_TRUNCATED_NORMAL:
        init.a = 0.05f;
        break;
    default:
        break;
    }
    return init;
}

int tk_init_from_name(const char *name, tk_init *out) {
    if (!name) return -1;
    for (int k = 0; k < TK_INIT_COUNT; k++) {
        if (same_name(name, init_names[k])) {
            if (out) *out = init_default((tk_init_kind)k);
            return k;
        }
    }
    for (size_t i = 0; i < TK_ARRAY_LEN(init_aliases); i++) {
        if (same_name(name, init_aliases[i].name)) {
            if (out) *out = init_default(init_aliases[i].kind);
            return (int)init_aliases[i].kind;
        }
    }
    return -1;
}

static void compute_fans(const tk_tensor *t, double *fan_in, double *fan_out) {
    if (t->ndim == 0) {
        *fan_in = *fan_out = 1.0;
    } else if (t->ndim == 1) {
        *fan_in = *fan_out = (double)t->shape[0];
    } else {
        double receptive = 1.0;
        for (int32_t i = 0; i < t->ndim - 2; i++) receptive *= (double)t->shape[i];
        *fan_in = (double)t->shape[t->ndim - 2] * receptive;
        *fan_out = (double)t->shape[t->ndim - 1] * receptive;
    }
    /* An empty dimension has nothing to fill; keep the divisions finite. */
    if (*fan_in < 1.0) *fan_in = 1.0;
    if (*fan_out < 1.0) *fan_out = 1.0;
}

/* A draw from N(0, 1) truncated to [-2, 2] (values beyond are redrawn). */
static double truncated_unit_normal(uint64_t rng[4]) {
    for (;;) {
        double z = tk_rng_normal(rng);
        if (z >= -2.0 && z <= 2.0) return z;
    }
}

static void fill_uniform(float *p, int64_t n, double lo, double hi, uint64_t rng[4]) {
    double width = hi - lo;
    for (int64_t i = 0; i < n; i++) p[i] = (float)(lo + width * tk_rng_uniform(rng));
}

static void fill_normal(float *p, int64_t n, double mean, double stddev, uint64_t rng[4]) {
    for (int64_t i = 0; i < n; i++) p[i] = (float)(mean + stddev * tk_rng_normal(rng));
}

static void fill_truncated(float *p, int64_t n, double mean, double stddev, uint64_t rng[4]) {
    for (int64_t i = 0; i < n; i++) p[i] = (float)(mean + stddev * truncated_unit_normal(rng));
}

#define TRUNCATED_STDDEV_CORRECTION 0.87962566103423978

/* n values of a random initializer's stream for a tensor of the given fans: a stream cut
 * into consecutive pieces gives the values of one call, as every draw reads rng only. */
static void fill_random(float *p, int64_t n, tk_init init, double fan_in, double fan_out, uint64_t rng[4]) {
    double fan_avg = 0.5 * (fan_in + fan_out);
    switch (init.kind) {
    case TK_INIT_RANDOM_UNIFORM:
        fill_uniform(p, n, init.a, init.b, rng);
        break;
    case TK_INIT_RANDOM_NORMAL:
        fill_normal(p, n, init.b, init.a, rng);
        break;
    case TK_INIT_TRUNCATED_NORMAL:
        fill_truncated(p, n, init.b, init.a, rng);
        break;
    case TK_INIT_GLOROT_UNIFORM: {
        double limit = sqrt(3.0 / fan_avg); /* = sqrt(6 / (fan_in + fan_out)) */
        fill_uniform(p, n, -limit, limit, rng);
        break;
    }
    case TK_INIT_GLOROT_NORMAL:
        fill_truncated(p, n, 0.0, sqrt(1.0 / fan_avg) / TRUNCATED_STDDEV_CORRECTION, rng);
        break;
    case TK_INIT_HE_NORMAL:
        fill_truncated(p, n, 0.0, sqrt(2.0 / fan_in) / TRUNCATED_STDDEV_CORRECTION, rng);
        break;
    case TK_INIT_HE_UNIFORM: {
        double limit = sqrt(6.0 / fan_in);
        fill_uniform(p, n, -limit, limit, rng);
        break;
    }
    case TK_INIT_LECUN_NORMAL:
        fill_truncated(p, n, 0.0, sqrt(1.0 / fan_in) / TRUNCATED_STDDEV_CORRECTION, rng);
        break;
    case TK_INIT_LECUN_UNIFORM: {
        double limit = sqrt(3.0 / fan_in);
        fill_uniform(p, n, -limit, limit, rng);
        break;
    }
    default:
        break;
    }
}

/* The constant initializers, and the checks of the kind and dtype: 1 when t is filled, -1
 * on an error (tk_last_error), 0 when a random initializer is to fill it. */
static int fill_constant(tk_tensor *t, tk_init init) {
    switch (init.kind) {
    case TK_INIT_ZEROS:
        tk_tensor_fill(t, 0.0);
        return 1;
    case TK_INIT_ONES:
        tk_tensor_fill(t, 1.0);
        return 1;
    case TK_INIT_CONSTANT:
        tk_tensor_fill(t, init.a);
        return 1;
    default:
        break;
    }
    if ((unsigned)init.kind >= TK_INIT_COUNT) {
        tk_set_error("init: unknown initializer kind %d (known: %s)", (int)init.kind, tk_init_names());
        return -1;
    }
    if (t->dtype != TK_F32) { /* only the constant initializers make sense for integer tensors */
        tk_set_error("init: %s needs a float32 tensor", tk_init_name(init.kind));
        return -1;
    }
    return 0;
}

void tk_init_fill(tk_tensor *t, tk_init init, uint64_t seed) {
    if (!t || fill_constant(t, init) != 0) return;
    uint64_t rng[4];
    tk_rng_seed(rng, init.has_seed ? init.seed : seed);
    double fan_in, fan_out;
    compute_fans(t, &fan_in, &fan_out);
    fill_random(tk_f32(t), t->numel, init, fan_in, fan_out, rng);
}

tk_status tk_init_fill_rows(tk_tensor *t, tk_init init, uint64_t seed, int64_t rows, int64_t lo) {
    if (!t || t->dtype != TK_F32 || t->ndim != 2 || lo < 0 || lo + t->shape[0] > rows)
        return tk_set_error("init: fill_rows: a float32 [count, D] tensor of rows [lo, lo + count) of [rows, D] "
                            "expected"),
               TK_ERROR;
    int c = fill_constant(t, init);
    if (c != 0) return c > 0 ? TK_OK : TK_ERROR;
    tk_tensor whole = { .ndim = 2, .shape = { rows, t->shape[1] } };
    double fan_in, fan_out;
    compute_fans(&whole, &fan_in, &fan_out);
    int64_t D = t->shape[1];
    float *skip = malloc((size_t)(D ? D : 1) * sizeof *skip);
    if (!skip) return tk_set_error("init: fill_rows: out of memory"), TK_ERROR;
    uint64_t rng[4];
    tk_rng_seed(rng, init.has_seed ? init.seed : seed);
    for (int64_t r = 0; r < lo; r++) fill_random(skip, D, init, fan_in, fan_out, rng); /* the rows before, discarded */
    free(skip);
    fill_random(tk_f32(t), t->numel, init, fan_in, fan_out, rng);
    return TK_OK;
}
