/* Shortcut (Merlin's connect_with_shortcut / WithShortcut): a parallel of
 * {block_outputs_name: block(x), "shortcut": filter(x) or x}, then the block's
 * aggregation (concat by default). A tabular output of either side is merged, as in
 * a parallel block. children[0] is the block, children[1] the optional filter. */
#include "block_impl.h"

#define TK_SHORTCUT_NAME "shortcut"

/* impl: the block_outputs_name as given (NULL: the block's name at forward time) */

static tk_status add_side(tk_ctx *ctx, tk_value *out, const char ***origins, tk_value *v, const char *key) {
    if (tk_value_is_tabular(v)) return tk_value_merge_from(ctx, out, origins, v, key, "shortcut");
    return tk_value_add_unique(ctx, out, origins, key, v->tensor, key, "shortcut");
}

static tk_value *shortcut_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    const char *name = b->impl ? (const char *)b->impl : b->children[0]->name;
    tk_value *y = tk_block_forward(ctx, b->children[0], in);
    if (!y) return NULL;
    tk_value *s = b->nchildren > 1 ? tk_block_forward(ctx, b->children[1], in) : in;
    if (!s) return NULL;
    tk_value *out = tk_value_table(ctx);
    const char **origins = NULL;
    if (!out || add_side(ctx, out, &origins, y, name) != TK_OK ||
        add_side(ctx, out, &origins, s, TK_SHORTCUT_NAME) != TK_OK)
        return NULL;
    return out;
}

static tk_status shortcut_write_config(const tk_block *b, void *json) {
    if (!b->impl) return TK_OK;
    return cJSON_AddStringToObject(json, "block_outputs_name", (const char *)b->impl) ? TK_OK : TK_ERROR;
}

static void *shortcut_copy_impl(const void *impl) { return tk_strdup(impl); }

const tk_block_kind tk_kind_shortcut = {
    .name = "shortcut",
    .forward = shortcut_forward,
    .write_config = shortcut_write_config,
    .copy_impl = shortcut_copy_impl,
};

tk_block *tk_shortcut_new(const char *name, tk_block *block, tk_block *shortcut_filter, const char *block_outputs_name,
                          tk_aggregation agg) {
    const char *n = name ? name : "shortcut";
    if (!block) {
        tk_set_error("shortcut '%s': block is NULL", n);
        return NULL;
    }
    if ((unsigned)agg >= TK_AGG_COUNT) {
        tk_set_error("shortcut '%s': unknown aggregation %d", n, (int)agg);
        return NULL;
    }
    if (block_outputs_name && strcmp(block_outputs_name, TK_SHORTCUT_NAME) == 0) {
        tk_set_error("shortcut '%s': block_outputs_name must differ from \"%s\"", n, TK_SHORTCUT_NAME);
        return NULL;
    }
    char *impl = NULL;
    if (block_outputs_name && *block_outputs_name && !(impl = tk_strdup(block_outputs_name))) {
        tk_set_error("out of memory");
        return NULL;
    }
    tk_block *b = tk_block_new(&tk_kind_shortcut, name, impl);
    if (!b) return NULL;
    b->aggregation = agg;
    if (tk_block_add_child(b, NULL, block) != TK_OK ||
        (shortcut_filter && tk_block_add_child(b, NULL, shortcut_filter) != TK_OK)) {
        tk_block_release(b);
        return NULL;
    }
    return b;
}

tk_block *tk_shortcut_from_config(const void *json, uint64_t seed) {
    const char *outputs = NULL;
    const cJSON *children = tk_cfg_children(json, 1, 2);
    if (!children || !tk_cfg_string(json, "block_outputs_name", false, &outputs)) return NULL;
    tk_block *c = tk_cfg_child(children, 0, seed);
    tk_block *f = c && cJSON_GetArraySize(children) > 1 ? tk_cfg_child(children, 1, seed) : NULL;
    tk_block *b = NULL;
    if (c && (f || cJSON_GetArraySize(children) == 1)) {
        /* the aggregation is read by tk_block_from_cjson (absent: none) */
        b = tk_shortcut_new(tk_cfg_name(json), c, f, outputs, TK_AGG_NONE);
        if (!b) tk_cfg_fail("%s", tk_last_error());
    }
    tk_block_release(c);
    tk_block_release(f);
    return b;
}
