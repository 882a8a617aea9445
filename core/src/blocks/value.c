/* Values: a tensor or a tabular value (ordered map name -> tensor), in a context's arena. */
#include "block_impl.h"

#include <stdio.h>

tk_value *tk_value_of(tk_ctx *ctx, tk_tensor *t) {
    if (!t) return NULL;
    tk_value *v = tk_ctx_alloc(ctx, sizeof *v);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->n = -1;
    v->tensor = t;
    return v;
}

tk_value *tk_value_table(tk_ctx *ctx) {
    tk_value *v = tk_ctx_alloc(ctx, sizeof *v);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    return v;
}

tk_tensor *tk_value_tensor(const tk_value *v) { return v && v->n < 0 ? v->tensor : NULL; }

tk_tensor *tk_value_get(const tk_value *v, const char *name) {
    if (!v || v->n < 0 || !name) return NULL;
    for (int32_t i = 0; i < v->n; i++)
        if (strcmp(v->names[i], name) == 0) return v->tensors[i];
    return NULL;
}

tk_status tk_value_set(tk_ctx *ctx, tk_value *v, const char *name, tk_tensor *t) {
    if (!v || !name || !t) {
        if (!tk_ctx_failed(ctx))
            tk_ctx_fail(ctx, "value_set: %s is NULL", !v ? "value" : !name ? "name" : "tensor");
        return TK_ERROR;
    }
    if (v->n < 0) {
        tk_ctx_fail(ctx, "value_set: cannot set entry '%s' of a single-tensor value", name);
        return TK_ERROR;
    }
    for (int32_t i = 0; i < v->n; i++) {
        if (strcmp(v->names[i], name) == 0) {
            v->tensors[i] = t;
            return TK_OK;
        }
    }
    if (v->n == v->cap) {
        int32_t cap = v->cap ? v->cap * 2 : 8;
        const char **names = tk_ctx_alloc(ctx, (size_t)cap * sizeof *names);
        tk_tensor **tensors = tk_ctx_alloc(ctx, (size_t)cap * sizeof *tensors);
        if (!names || !tensors) return TK_ERROR;
        if (v->n) {
            memcpy(names, v->names, (size_t)v->n * sizeof *names);
            memcpy(tensors, v->tensors, (size_t)v->n * sizeof *tensors);
        }
        v->names = names;
        v->tensors = tensors;
        v->cap = cap;
    }
    char *copy = tk_ctx_strdup(ctx, name);
    if (!copy) return TK_ERROR;
    v->names[v->n] = copy;
    v->tensors[v->n] = t;
    v->n++;
    return TK_OK;
}

const char **tk_value_sorted_names(tk_ctx *ctx, const tk_value *v) {
    if (!v || v->n < 0) return NULL;
    const char **names = tk_ctx_alloc(ctx, (size_t)(v->n ? v->n : 1) * sizeof *names);
    if (!names) return NULL;
    if (v->n) memcpy(names, v->names, (size_t)v->n * sizeof *names);
    qsort(names, (size_t)v->n, sizeof *names, tk_strcmp_ptr);
    return names;
}

/* "{a, b, c}" (at most a few keys) for messages. */
static void describe_keys(const tk_value *v, char *buf, size_t len) {
    size_t off = (size_t)snprintf(buf, len, "{");
    for (int32_t i = 0; i < v->n && off < len; i++) {
        if (i == 6) {
            off += (size_t)snprintf(buf + off, len - off, ", ...");
            break;
        }
        off += (size_t)snprintf(buf + off, len - off, i ? ", %s" : "%s", v->names[i]);
    }
    if (off < len) snprintf(buf + off, len - off, "}");
}

tk_tensor *tk_block_need_tensor(tk_ctx *ctx, const char *what, const tk_value *in) {
    if (!in) return tk_ctx_fail(ctx, "%s: input is NULL", what);
    if (in->n < 0) return in->tensor;
    char keys[256];
    describe_keys(in, keys, sizeof keys);
    return tk_ctx_fail(ctx,
                       "%s needs a tensor input, got a tabular value %s (set an aggregation such "
                       "as \"concat\" before it)",
                       what, keys);
}

bool tk_block_need_tabular(tk_ctx *ctx, const char *what, const tk_value *in) {
    if (!in) {
        tk_ctx_fail(ctx, "%s: input is NULL", what);
        return false;
    }
    if (in->n >= 0) return true;
    char s[64];
    tk_ctx_fail(ctx, "%s needs a tabular input, got a tensor %s %s", what,
                tk_dtype_name(in->tensor->dtype), tk_shape_str(in->tensor, s, sizeof s));
    return false;
}

tk_status tk_value_add_unique(tk_ctx *ctx, tk_value *dst, const char ***origins, const char *key,
                             tk_tensor *t, const char *origin, const char *what) {
    for (int32_t j = 0; j < dst->n; j++) {
        if (strcmp(dst->names[j], key) == 0) {
            tk_ctx_fail(ctx, "%s: key '%s' of branch '%s' is also produced by branch '%s'", what, key,
                        origin, *origins ? (*origins)[j] : "?");
            return TK_ERROR;
        }
    }
    int32_t cap = dst->cap;
    if (tk_value_set(ctx, dst, key, t) != TK_OK) return TK_ERROR;
    if (dst->cap != cap || !*origins) {
        const char **o = tk_ctx_alloc(ctx, (size_t)dst->cap * sizeof *o);
        if (!o) return TK_ERROR;
        for (int32_t j = 0; j < dst->n - 1; j++) o[j] = *origins ? (*origins)[j] : "?";
        *origins = o;
    }
    (*origins)[dst->n - 1] = origin;
    return TK_OK;
}

tk_status tk_value_merge_from(tk_ctx *ctx, tk_value *dst, const char ***origins, const tk_value *src,
                              const char *origin, const char *what) {
    for (int32_t i = 0; i < src->n; i++)
        if (tk_value_add_unique(ctx, dst, origins, src->names[i], src->tensors[i], origin, what) != TK_OK)
            return TK_ERROR;
    return TK_OK;
}
