/* Values: a tensor or a tabular value (ordered map name -> tensor), in a context's arena.
 * What blocks do with them (the input a kind needs, merging branch outputs) is in
 * blocks/forward.c. */
#include "internal.h"

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
        if (!tk_ctx_failed(ctx)) tk_ctx_fail(ctx, "value_set: %s is NULL", !v ? "value" : !name ? "name" : "tensor");
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

/* --- ragged features: the one place that knows how their entries are named --- */

static const char *const ragged_suffix[] = {
    [TK_RAGGED_NONE] = "", [TK_RAGGED_VALUES] = "__values", [TK_RAGGED_OFFSETS] = "__offsets"
};

tk_ragged_part tk_ragged_name_split(const char *name, size_t *feature_len) {
    size_t n = strlen(name);
    for (int p = TK_RAGGED_VALUES; p <= TK_RAGGED_OFFSETS; p++) {
        size_t s = strlen(ragged_suffix[p]);
        /* a bare "__values" names no feature: a plain entry */
        if (n > s && strcmp(name + n - s, ragged_suffix[p]) == 0) {
            if (feature_len) *feature_len = n - s;
            return (tk_ragged_part)p;
        }
    }
    if (feature_len) *feature_len = n;
    return TK_RAGGED_NONE;
}

size_t tk_ragged_name_join(const char *feature, tk_ragged_part part, char *buf, size_t len) {
    int n = snprintf(buf, len, "%s%s", feature, ragged_suffix[part]);
    return n < 0 ? 0 : (size_t)n;
}

tk_status tk_ragged_check(const char *what, const tk_tensor *values, const tk_tensor *offsets) {
    char s[64];
    if (!values || !offsets) {
        tk_set_error("%s: %s is NULL", what, !values ? "values" : "offsets");
        return TK_ERROR;
    }
    if (values->ndim != 1) {
        tk_set_error("%s: values must be 1-D [N], got %s %s", what, tk_dtype_name(values->dtype),
                     tk_shape_str(values, s, sizeof s));
        return TK_ERROR;
    }
    if (offsets->dtype != TK_I64 || offsets->ndim != 1 || offsets->numel < 1) {
        tk_set_error("%s: offsets must be int64 [B + 1], got %s %s", what, tk_dtype_name(offsets->dtype),
                     tk_shape_str(offsets, s, sizeof s));
        return TK_ERROR;
    }
    const int64_t *o = tk_i64(offsets);
    int64_t rows = offsets->numel - 1;
    if (o[0] != 0) {
        tk_set_error("%s: offsets must start at 0, got %lld", what, (long long)o[0]);
        return TK_ERROR;
    }
    for (int64_t r = 0; r < rows; r++) {
        if (o[r + 1] < o[r]) {
            tk_set_error("%s: offsets must not decrease, got %lld then %lld at row %lld", what, (long long)o[r],
                         (long long)o[r + 1], (long long)r);
            return TK_ERROR;
        }
    }
    if (o[rows] != values->numel) {
        tk_set_error("%s: offsets must end at the number of values (%lld), got %lld", what, (long long)values->numel,
                     (long long)o[rows]);
        return TK_ERROR;
    }
    return TK_OK;
}

/* The entry name of a part of a ragged feature, in the arena (no length limit). */
static char *ragged_entry(tk_ctx *ctx, const char *feature, tk_ragged_part part) {
    size_t n = tk_ragged_name_join(feature, part, NULL, 0) + 1;
    char *name = tk_ctx_alloc(ctx, n);
    if (name) tk_ragged_name_join(feature, part, name, n);
    return name;
}

tk_status tk_value_set_ragged(tk_ctx *ctx, tk_value *v, const char *name, tk_tensor *values, tk_tensor *offsets) {
    if (!v || !name) {
        if (!tk_ctx_failed(ctx)) tk_ctx_fail(ctx, "value_set_ragged: %s is NULL", !v ? "value" : "name");
        return TK_ERROR;
    }
    if (v->n < 0) {
        tk_ctx_fail(ctx, "value_set_ragged: cannot set feature '%s' of a single-tensor value", name);
        return TK_ERROR;
    }
    char what[256];
    snprintf(what, sizeof what, "feature '%s'", name);
    if (tk_ragged_check(what, values, offsets) != TK_OK) {
        tk_ctx_fail(ctx, "%s", tk_last_error());
        return TK_ERROR;
    }
    char *vname = ragged_entry(ctx, name, TK_RAGGED_VALUES), *oname = ragged_entry(ctx, name, TK_RAGGED_OFFSETS);
    if (!vname || !oname) return TK_ERROR;
    if (tk_value_set(ctx, v, vname, values) != TK_OK) return TK_ERROR;
    return tk_value_set(ctx, v, oname, offsets);
}

bool tk_value_get_ragged(const tk_value *v, const char *name, tk_tensor **values, tk_tensor **offsets) {
    *values = *offsets = NULL;
    if (!v || v->n < 0 || !name) return false;
    size_t want = strlen(name);
    for (int32_t i = 0; i < v->n; i++) {
        size_t len;
        tk_ragged_part part = tk_ragged_name_split(v->names[i], &len);
        if (part == TK_RAGGED_NONE || len != want || strncmp(v->names[i], name, len) != 0) continue;
        if (part == TK_RAGGED_VALUES)
            *values = v->tensors[i];
        else
            *offsets = v->tensors[i];
    }
    return *values && *offsets;
}
