/* Dense: act(x [B, in] x kernel [in, out] + bias [out]), Keras' layout. With in == 0 the
 * input width is taken from the first forward: the kernel and bias are built then, once,
 * under the build lock of tk_block_forward, from the stored initialisers and seed.
 * With out == 0 the layer keeps the input width (Merlin's DenseResidualBlock projects
 * back to the width it was given). A tabular input is concatenated in sorted key order
 * first, as Merlin's _Dense does. */
#include "block_impl.h"

#include <stdio.h>

typedef struct dense_impl {
    int64_t in, out; /* as given (0: from the input); the built shape is the kernel's */
    tk_activation act;
    bool use_bias;
    tk_init kernel_init, bias_init;
    float kernel_l2;
} dense_impl;

/* Parameters: params[0] = kernel [in, out], params[1] = bias [out] (if use_bias). */
static tk_status dense_create(tk_block *b, int64_t in) {
    dense_impl *d = b->impl;
    uint64_t seed = tk_block_seed(b);
    int64_t out = d->out ? d->out : in;
    int64_t kshape[2] = { in, out };
    int32_t n0 = b->nparams;
    if (!tk_block_new_param(b, "kernel", 2, kshape, true, d->kernel_init, tk_seed_mix(seed, 0)) ||
        (d->use_bias && !tk_block_new_param(b, "bias", 1, &out, true, d->bias_init, tk_seed_mix(seed, 1)))) {
        tk_block_truncate_params(b, n0);
        return TK_ERROR;
    }
    return TK_OK;
}

/* The input as one tensor: a tabular value is concatenated in sorted key order. */
static tk_tensor *dense_input(tk_ctx *ctx, const tk_value *in) {
    if (tk_value_is_tabular(in)) return tk_aggregate(ctx, TK_AGG_CONCAT, in);
    return tk_block_need_tensor(ctx, "dense", in);
}

static tk_status dense_build(tk_ctx *ctx, tk_block *b, tk_value *in) {
    tk_tensor *x = dense_input(ctx, in);
    if (!x) return TK_ERROR;
    if (x->ndim < 2) {
        char s[64];
        tk_ctx_fail(ctx, "dense needs an input of at least 2 dimensions [batch, features], got %s",
                    tk_shape_str(x, s, sizeof s));
        return TK_ERROR;
    }
    int64_t width = x->shape[x->ndim - 1];
    if (width <= 0) {
        tk_ctx_fail(ctx, "dense: input has %lld features", (long long)width);
        return TK_ERROR;
    }
    if (dense_create(b, width) != TK_OK) {
        tk_ctx_fail(ctx, "%s", tk_last_error());
        return TK_ERROR;
    }
    return TK_OK;
}

static tk_value *dense_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    const dense_impl *d = b->impl;
    tk_tensor *x = dense_input(ctx, in);
    if (!x) return NULL;
    char s[64];
    if (x->dtype != TK_F32)
        return tk_ctx_fail(ctx, "dense needs a float32 input, got %s %s", tk_dtype_name(x->dtype),
                           tk_shape_str(x, s, sizeof s));
    if (x->ndim < 2)
        return tk_ctx_fail(ctx, "dense needs an input of at least 2 dimensions [batch, features], got %s",
                           tk_shape_str(x, s, sizeof s));
    tk_tensor *kernel = b->params[0];
    tk_tensor *bias = d->use_bias ? b->params[1] : NULL;
    int64_t width = x->shape[x->ndim - 1];
    if (width != kernel->shape[0])
        return tk_ctx_fail(ctx, "input has %lld features, expected %lld", (long long)width,
                           (long long)kernel->shape[0]);
    tk_tensor *y;
    if (x->ndim == 2) {
        y = tk_dense(ctx, x, kernel, bias, d->act);
    } else { /* [..., in] -> [rows, in] -> dense -> [..., out] */
        int64_t flat[2] = { x->numel / width, width };
        y = tk_dense(ctx, tk_reshape(ctx, x, 2, flat), kernel, bias, d->act);
        int64_t shape[TK_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[x->ndim - 1] = kernel->shape[1];
        y = tk_reshape(ctx, y, x->ndim, shape);
    }
    if (y && d->kernel_l2 > 0 && tk_ctx_training(ctx)) {
        tk_tensor *reg = tk_scale(ctx, tk_sum(ctx, tk_square(ctx, kernel), -1, false), d->kernel_l2);
        if (tk_ctx_add_loss(ctx, reg) != TK_OK) return NULL;
    }
    return tk_value_of(ctx, y);
}

static tk_status dense_write_config(const tk_block *b, void *json) {
    const dense_impl *d = b->impl;
    int64_t in = b->nparams > 0 ? b->params[0]->shape[0] : d->in;
    cJSON *o = json;
    bool ok = cJSON_AddNumberToObject(o, "units", (double)d->out) && /* 0: the input width */
              cJSON_AddNumberToObject(o, "in", (double)in) &&
              cJSON_AddStringToObject(o, "activation", tk_activation_name(d->act)) &&
              cJSON_AddBoolToObject(o, "use_bias", d->use_bias) &&
              tk_cfg_add_init(o, "kernel_initializer", d->kernel_init) &&
              tk_cfg_add_init(o, "bias_initializer", d->bias_init) && tk_cfg_add_float(o, "kernel_l2", d->kernel_l2);
    if (!ok) tk_set_error("out of memory");
    return ok ? TK_OK : TK_ERROR;
}

static void *dense_copy_impl(const void *impl) { return tk_memdup(impl, sizeof(dense_impl)); }

const tk_block_kind tk_kind_dense = {
    .name = "dense",
    .forward = dense_forward,
    .build = dense_build,
    .write_config = dense_write_config,
    .copy_impl = dense_copy_impl,
};

tk_block *tk_dense_new(const char *name, int64_t in, int64_t out, tk_activation act, bool use_bias, tk_init kernel_init,
                       tk_init bias_init, uint64_t seed) {
    if (in < 0 || out < 0) {
        tk_set_error("dense '%s': units and the input width must not be negative (got in %lld, "
                     "units %lld)",
                     name ? name : "dense", (long long)in, (long long)out);
        return NULL;
    }
    if ((unsigned)act >= TK_ACT_COUNT) {
        tk_set_error("dense '%s': unknown activation %d", name ? name : "dense", (int)act);
        return NULL;
    }
    if ((unsigned)kernel_init.kind >= TK_INIT_COUNT || (unsigned)bias_init.kind >= TK_INIT_COUNT) {
        tk_set_error("dense '%s': unknown initializer", name ? name : "dense");
        return NULL;
    }
    dense_impl *d = calloc(1, sizeof *d);
    if (!d) {
        tk_set_error("out of memory");
        return NULL;
    }
    *d = (dense_impl){ in, out, act, use_bias, kernel_init, bias_init, 0.0f };
    tk_block *b = tk_block_new(&tk_kind_dense, name, d);
    if (!b) return NULL;
    tk_block_set_seed(b, seed);
    if (in == 0) {
        b->built = 0;
    } else if (dense_create(b, in) != TK_OK) {
        tk_block_release(b);
        return NULL;
    }
    return b;
}

void tk_dense_set_kernel_l2(tk_block *b, float l2) {
    if (b && b->kind == &tk_kind_dense && l2 >= 0) ((dense_impl *)b->impl)->kernel_l2 = l2;
}

tk_block *tk_dense_from_config(const void *json, uint64_t seed) {
    const cJSON *o = json;
    int64_t units = 0, in = 0;
    tk_activation act = TK_ACT_LINEAR;
    bool use_bias = true;
    tk_init kinit = tk_init_default_kernel(), binit = tk_init_zeros();
    float l2 = 0;
    if (!tk_cfg_int(o, "units", true, &units) || !tk_cfg_int(o, "in", false, &in) ||
        !tk_cfg_activation(o, "activation", false, &act) || !tk_cfg_bool(o, "use_bias", false, &use_bias) ||
        !tk_cfg_init(o, "kernel_initializer", false, &kinit) || !tk_cfg_init(o, "bias_initializer", false, &binit) ||
        !tk_cfg_float(o, "kernel_l2", false, &l2))
        return NULL;
    if (units < 0) return tk_cfg_fail("\"units\" must not be negative, got %lld", (long long)units);
    if (in < 0) return tk_cfg_fail("\"in\" must not be negative, got %lld", (long long)in);
    if (l2 < 0) return tk_cfg_fail("\"kernel_l2\" must not be negative");
    tk_block *b = tk_dense_new(tk_cfg_name(o), in, units, act, use_bias, kinit, binit, seed);
    if (b) tk_dense_set_kernel_l2(b, l2);
    return b;
}
