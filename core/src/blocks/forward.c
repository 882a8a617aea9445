/* Helpers of the kinds' forward functions: the input a kind needs, with a message that
 * says what it got, and the merge of branch outputs (parallel, shortcut). */
#include "block_impl.h"

#include <stdio.h>

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
    tk_ctx_fail(ctx, "%s needs a tabular input, got a tensor %s %s", what, tk_dtype_name(in->tensor->dtype),
                tk_shape_str(in->tensor, s, sizeof s));
    return false;
}

tk_status tk_value_add_unique(tk_ctx *ctx, tk_value *dst, const char ***origins, const char *key, tk_tensor *t,
                              const char *origin, const char *what) {
    for (int32_t j = 0; j < dst->n; j++) {
        if (strcmp(dst->names[j], key) == 0) {
            tk_ctx_fail(ctx, "%s: key '%s' of branch '%s' is also produced by branch '%s'", what, key, origin,
                        *origins ? (*origins)[j] : "?");
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
