/* Simple blocks: activation, l2norm, dropout, batch_norm, filter, as_tabular.
 *
 * activation, l2norm and dropout take a tensor or a tabular value (applied to each entry,
 * as Merlin's L2Norm and TabularDropout do, so `post = "l2-norm"` works on the outputs
 * of a two-tower block). batch_norm takes a tensor; filter takes a tabular value;
 * as_tabular takes a tensor. */
#include "block_impl.h"

#include <stdio.h>

typedef tk_tensor *(*unary_fn)(tk_ctx *ctx, const tk_block *b, tk_tensor *x);

static tk_value *apply_each(tk_ctx *ctx, const tk_block *b, tk_value *in, unary_fn f) {
    if (!tk_value_is_tabular(in)) {
        tk_tensor *x = in->tensor;
        if (x->dtype != TK_F32) {
            char s[64];
            return tk_ctx_fail(ctx, "%s needs a float32 input, got %s %s", b->kind->name, tk_dtype_name(x->dtype),
                               tk_shape_str(x, s, sizeof s));
        }
        return tk_value_of(ctx, f(ctx, b, x));
    }
    tk_value *out = tk_value_table(ctx);
    if (!out) return NULL;
    for (int32_t i = 0; i < in->n; i++) {
        tk_tensor *x = in->tensors[i];
        if (x->dtype != TK_F32)
            return tk_ctx_fail(ctx, "%s: entry '%s' is %s, not float32", b->kind->name, in->names[i],
                               tk_dtype_name(x->dtype));
        if (tk_value_set(ctx, out, in->names[i], f(ctx, b, x)) != TK_OK) return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------------------------ */
/* activation                                                                             */
/* ------------------------------------------------------------------------------------ */

typedef struct act_impl {
    tk_activation act;
} act_impl;

static tk_tensor *act_one(tk_ctx *ctx, const tk_block *b, tk_tensor *x) {
    return tk_activate(ctx, x, ((const act_impl *)b->impl)->act);
}

static tk_value *activation_forward(tk_ctx *ctx, tk_block *b, tk_value *in) { return apply_each(ctx, b, in, act_one); }

static tk_status activation_write_config(const tk_block *b, void *json) {
    const act_impl *a = b->impl;
    return cJSON_AddStringToObject(json, "activation", tk_activation_name(a->act)) ? TK_OK : TK_ERROR;
}

static void *act_copy_impl(const void *impl) { return tk_memdup(impl, sizeof(act_impl)); }

const tk_block_kind tk_kind_activation = {
    .name = "activation",
    .forward = activation_forward,
    .write_config = activation_write_config,
    .copy_impl = act_copy_impl,
};

tk_block *tk_activation_block_new(const char *name, tk_activation act) {
    if ((unsigned)act >= TK_ACT_COUNT) {
        tk_set_error("activation block: unknown activation %d (known: %s)", (int)act, tk_activation_names());
        return NULL;
    }
    act_impl *a = malloc(sizeof *a);
    if (!a) {
        tk_set_error("out of memory");
        return NULL;
    }
    a->act = act;
    return tk_block_new(&tk_kind_activation, name, a);
}

tk_block *tk_activation_from_config(const void *json, uint64_t seed) {
    tk_activation act = TK_ACT_LINEAR;
    if (!tk_cfg_activation(json, "activation", true, &act)) return NULL;
    return tk_activation_block_new(tk_cfg_name(json), act);
}

/* ------------------------------------------------------------------------------------ */
/* l2norm                                                                                 */
/* ------------------------------------------------------------------------------------ */

static tk_tensor *l2norm_one(tk_ctx *ctx, const tk_block *b, tk_tensor *x) { return tk_l2norm(ctx, x); }

static tk_value *l2norm_forward(tk_ctx *ctx, tk_block *b, tk_value *in) { return apply_each(ctx, b, in, l2norm_one); }

const tk_block_kind tk_kind_l2norm = {
    .name = "l2norm",
    .forward = l2norm_forward,
};

tk_block *tk_l2norm_block_new(const char *name) { return tk_block_new(&tk_kind_l2norm, name, NULL); }

tk_block *tk_l2norm_from_config(const void *json, uint64_t seed) { return tk_l2norm_block_new(tk_cfg_name(json)); }

/* ------------------------------------------------------------------------------------ */
/* dropout                                                                                */
/* ------------------------------------------------------------------------------------ */

typedef struct dropout_impl {
    float rate;
} dropout_impl;

static tk_tensor *dropout_one(tk_ctx *ctx, const tk_block *b, tk_tensor *x) {
    return tk_dropout(ctx, x, ((const dropout_impl *)b->impl)->rate);
}

static tk_value *dropout_forward(tk_ctx *ctx, tk_block *b, tk_value *in) { return apply_each(ctx, b, in, dropout_one); }

static tk_status dropout_write_config(const tk_block *b, void *json) {
    return tk_cfg_add_float(json, "rate", ((const dropout_impl *)b->impl)->rate) ? TK_OK : TK_ERROR;
}

static void *dropout_copy_impl(const void *impl) { return tk_memdup(impl, sizeof(dropout_impl)); }

const tk_block_kind tk_kind_dropout = {
    .name = "dropout",
    .forward = dropout_forward,
    .write_config = dropout_write_config,
    .copy_impl = dropout_copy_impl,
};

tk_block *tk_dropout_block_new(const char *name, float rate) {
    if (!(rate >= 0.0f && rate < 1.0f)) {
        tk_set_error("dropout '%s': rate must be in [0, 1), got %g", name ? name : "dropout", (double)rate);
        return NULL;
    }
    dropout_impl *d = malloc(sizeof *d);
    if (!d) {
        tk_set_error("out of memory");
        return NULL;
    }
    d->rate = rate;
    return tk_block_new(&tk_kind_dropout, name, d);
}

tk_block *tk_dropout_from_config(const void *json, uint64_t seed) {
    float rate = 0;
    if (!tk_cfg_float(json, "rate", true, &rate)) return NULL;
    if (!(rate >= 0.0f && rate < 1.0f)) return tk_cfg_fail("\"rate\" must be in [0, 1), got %g", (double)rate);
    return tk_dropout_block_new(tk_cfg_name(json), rate);
}

/* ------------------------------------------------------------------------------------ */
/* batch_norm                                                                             */
/* ------------------------------------------------------------------------------------ */

typedef struct bn_impl {
    int64_t dim; /* as given (0: lazy); the built width is gamma's */
    float momentum, eps;
} bn_impl;

/* params: gamma, beta (trainable), moving_mean, moving_variance (not trainable) */
static tk_status bn_create(tk_block *b, int64_t dim) {
    tk_init ones = { .kind = TK_INIT_ONES, .a = 0, .b = 0 };
    int32_t n0 = b->nparams;
    if (!tk_block_new_param(b, "gamma", 1, &dim, true, ones, 0) ||
        !tk_block_new_param(b, "beta", 1, &dim, true, tk_init_zeros(), 0) ||
        !tk_block_new_param(b, "moving_mean", 1, &dim, false, tk_init_zeros(), 0) ||
        !tk_block_new_param(b, "moving_variance", 1, &dim, false, ones, 0)) {
        tk_block_truncate_params(b, n0);
        return TK_ERROR;
    }
    return TK_OK;
}

static tk_tensor *bn_input(tk_ctx *ctx, tk_value *in) {
    tk_tensor *x = tk_block_need_tensor(ctx, "batch_norm", in);
    if (!x) return NULL;
    char s[64];
    if (x->dtype != TK_F32 || x->ndim != 2)
        return tk_ctx_fail(ctx, "batch_norm needs a float32 input [batch, features], got %s %s",
                           tk_dtype_name(x->dtype), tk_shape_str(x, s, sizeof s));
    return x;
}

static tk_status bn_build(tk_ctx *ctx, tk_block *b, tk_value *in) {
    tk_tensor *x = bn_input(ctx, in);
    if (!x) return TK_ERROR;
    if (x->shape[1] <= 0) {
        tk_ctx_fail(ctx, "batch_norm: input has %lld features", (long long)x->shape[1]);
        return TK_ERROR;
    }
    if (bn_create(b, x->shape[1]) != TK_OK) {
        tk_ctx_fail(ctx, "%s", tk_last_error());
        return TK_ERROR;
    }
    return TK_OK;
}

static tk_value *bn_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    const bn_impl *n = b->impl;
    tk_tensor *x = bn_input(ctx, in);
    if (!x) return NULL;
    if (x->shape[1] != b->params[0]->shape[0])
        return tk_ctx_fail(ctx, "input has %lld features, expected %lld", (long long)x->shape[1],
                           (long long)b->params[0]->shape[0]);
    return tk_value_of(
        ctx, tk_batch_norm(ctx, x, b->params[0], b->params[1], b->params[2], b->params[3], n->momentum, n->eps));
}

static tk_status bn_write_config(const tk_block *b, void *json) {
    const bn_impl *n = b->impl;
    int64_t dim = b->nparams > 0 ? b->params[0]->shape[0] : n->dim;
    bool ok = cJSON_AddNumberToObject(json, "dim", (double)dim) && tk_cfg_add_float(json, "momentum", n->momentum) &&
              tk_cfg_add_float(json, "eps", n->eps);
    return ok ? TK_OK : TK_ERROR;
}

static void *bn_copy_impl(const void *impl) { return tk_memdup(impl, sizeof(bn_impl)); }

const tk_block_kind tk_kind_batch_norm = {
    .name = "batch_norm",
    .forward = bn_forward,
    .build = bn_build,
    .write_config = bn_write_config,
    .copy_impl = bn_copy_impl,
};

tk_block *tk_batch_norm_block_new(const char *name, int64_t dim, float momentum, float eps) {
    const char *n = name ? name : "batch_norm";
    if (dim < 0 || !(momentum >= 0.0f && momentum <= 1.0f) || !(eps > 0.0f)) {
        tk_set_error("batch_norm '%s': needs dim >= 0, momentum in [0, 1] and eps > 0 (got %lld, %g, %g)", n,
                     (long long)dim, (double)momentum, (double)eps);
        return NULL;
    }
    bn_impl *impl = malloc(sizeof *impl);
    if (!impl) {
        tk_set_error("out of memory");
        return NULL;
    }
    *impl = (bn_impl){ dim, momentum, eps };
    tk_block *b = tk_block_new(&tk_kind_batch_norm, name, impl);
    if (!b) return NULL;
    if (dim == 0) {
        b->built = 0;
    } else if (bn_create(b, dim) != TK_OK) {
        tk_block_release(b);
        return NULL;
    }
    return b;
}

tk_block *tk_batch_norm_from_config(const void *json, uint64_t seed) {
    int64_t dim = 0;
    float momentum = 0.99f, eps = 1e-3f;
    if (!tk_cfg_int(json, "dim", false, &dim) || !tk_cfg_float(json, "momentum", false, &momentum) ||
        !tk_cfg_float(json, "eps", false, &eps))
        return NULL;
    if (dim < 0) return tk_cfg_fail("\"dim\" must not be negative, got %lld", (long long)dim);
    if (!(momentum >= 0.0f && momentum <= 1.0f)) return tk_cfg_fail("\"momentum\" must be in [0, 1]");
    if (!(eps > 0.0f)) return tk_cfg_fail("\"eps\" must be positive");
    return tk_batch_norm_block_new(tk_cfg_name(json), dim, momentum, eps);
}

/* ------------------------------------------------------------------------------------ */
/* filter                                                                                 */
/* ------------------------------------------------------------------------------------ */

typedef struct filter_impl {
    int32_t n;
    char **names;
    bool exclude;
} filter_impl;

static void filter_free(void *impl) {
    filter_impl *f = impl;
    for (int32_t i = 0; i < f->n; i++) free(f->names[i]);
    free(f->names);
    free(f);
}

static filter_impl *filter_make(int32_t n, const char *const *names, bool exclude) {
    filter_impl *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->exclude = exclude;
    f->names = calloc((size_t)(n > 0 ? n : 1), sizeof *f->names);
    if (!f->names) {
        free(f);
        return NULL;
    }
    for (; f->n < n; f->n++) {
        if (!(f->names[f->n] = tk_strdup(names[f->n]))) {
            filter_free(f);
            return NULL;
        }
    }
    return f;
}

/* entry is f or a part of ragged feature f */
static bool feature_matches(const char *entry, const char *f) {
    size_t len;
    if (strcmp(entry, f) == 0) return true;
    return tk_ragged_name_split(entry, &len) != TK_RAGGED_NONE && len == strlen(f) && strncmp(entry, f, len) == 0;
}

static tk_value *filter_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    const filter_impl *f = b->impl;
    if (!tk_block_need_tabular(ctx, "filter", in)) return NULL;
    tk_value *out = tk_value_table(ctx);
    if (!out) return NULL;
    for (int32_t i = 0; i < in->n; i++) {
        bool hit = false;
        for (int32_t j = 0; j < f->n && !hit; j++) hit = feature_matches(in->names[i], f->names[j]);
        if (hit != f->exclude && tk_value_set(ctx, out, in->names[i], in->tensors[i]) != TK_OK) return NULL;
    }
    return out;
}

static tk_status filter_write_config(const tk_block *b, void *json) {
    const filter_impl *f = b->impl;
    cJSON *names = cJSON_AddArrayToObject(json, "features");
    if (!names) return TK_ERROR;
    for (int32_t i = 0; i < f->n; i++) {
        cJSON *s = cJSON_CreateString(f->names[i]);
        if (!s || !cJSON_AddItemToArray(names, s)) {
            cJSON_Delete(s);
            return TK_ERROR;
        }
    }
    return cJSON_AddBoolToObject(json, "exclude", f->exclude) ? TK_OK : TK_ERROR;
}

static void *filter_copy_impl(const void *impl) {
    const filter_impl *f = impl;
    return filter_make(f->n, (const char *const *)f->names, f->exclude);
}

const tk_block_kind tk_kind_filter = {
    .name = "filter",
    .forward = filter_forward,
    .write_config = filter_write_config,
    .free_impl = filter_free,
    .copy_impl = filter_copy_impl,
};

tk_block *tk_filter_block_new(const char *name, int32_t n, const char *const *names, bool exclude) {
    if (n < 0 || (n > 0 && !names)) {
        tk_set_error("filter '%s': bad feature list", name ? name : "filter");
        return NULL;
    }
    for (int32_t i = 0; i < n; i++) {
        if (!names[i] || !*names[i]) {
            tk_set_error("filter '%s': feature name %d is empty", name ? name : "filter", (int)i);
            return NULL;
        }
    }
    filter_impl *f = filter_make(n, names, exclude);
    if (!f) {
        tk_set_error("out of memory");
        return NULL;
    }
    return tk_block_new(&tk_kind_filter, name, f);
}

tk_block *tk_filter_from_config(const void *json, uint64_t seed) {
    const cJSON *features = cJSON_GetObjectItemCaseSensitive(json, "features");
    bool exclude = false;
    if (!features) return tk_cfg_fail("missing \"features\"");
    if (!cJSON_IsArray(features)) return tk_cfg_fail("\"features\" must be an array of strings");
    if (!tk_cfg_bool(json, "exclude", false, &exclude)) return NULL;
    int n = cJSON_GetArraySize(features);
    const char **names = calloc((size_t)(n > 0 ? n : 1), sizeof *names);
    if (!names) return tk_cfg_fail("out of memory");
    tk_block *b = NULL;
    for (int i = 0; i < n; i++) {
        const cJSON *s = cJSON_GetArrayItem(features, i);
        if (!cJSON_IsString(s) || !*s->valuestring) {
            tk_cfg_fail("\"features\"[%d] must be a non-empty string", i);
            goto done;
        }
        names[i] = s->valuestring;
    }
    b = tk_filter_block_new(tk_cfg_name(json), n, names, exclude);
done:
    free(names);
    return b;
}

/* ------------------------------------------------------------------------------------ */
/* as_tabular                                                                             */
/* ------------------------------------------------------------------------------------ */

static tk_value *as_tabular_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    tk_tensor *x = tk_block_need_tensor(ctx, "as_tabular", in);
    if (!x) return NULL;
    tk_value *out = tk_value_table(ctx);
    if (!out || tk_value_set(ctx, out, (const char *)b->impl, x) != TK_OK) return NULL;
    return out;
}

static tk_status as_tabular_write_config(const tk_block *b, void *json) {
    return cJSON_AddStringToObject(json, "output_name", (const char *)b->impl) ? TK_OK : TK_ERROR;
}

static void *as_tabular_copy_impl(const void *impl) { return tk_strdup(impl); }

const tk_block_kind tk_kind_as_tabular = {
    .name = "as_tabular",
    .forward = as_tabular_forward,
    .write_config = as_tabular_write_config,
    .copy_impl = as_tabular_copy_impl,
};

tk_block *tk_as_tabular_block_new(const char *name, const char *output_name) {
    if (!output_name || !*output_name) {
        tk_set_error("as_tabular '%s': output_name must not be empty", name ? name : "as_tabular");
        return NULL;
    }
    char *impl = tk_strdup(output_name);
    if (!impl) {
        tk_set_error("out of memory");
        return NULL;
    }
    return tk_block_new(&tk_kind_as_tabular, name, impl);
}

tk_block *tk_as_tabular_from_config(const void *json, uint64_t seed) {
    const char *out = NULL;
    if (!tk_cfg_string(json, "output_name", true, &out)) return NULL;
    if (!*out) return tk_cfg_fail("\"output_name\" must not be empty");
    return tk_as_tabular_block_new(tk_cfg_name(json), out);
}
