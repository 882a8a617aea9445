/* Sequential (Merlin's connect / SequentialBlock): the output of one child is the input
 * of the next. An empty sequential is the identity. */
#include "block_impl.h"

static tk_value *sequential_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    tk_value *v = in;
    for (int32_t i = 0; i < b->nchildren && v; i++) v = tk_block_forward(ctx, b->children[i], v);
    return v;
}

const tk_block_kind tk_kind_sequential = {
    .name = "sequential",
    .forward = sequential_forward,
};

tk_block *tk_sequential_new(const char *name) { return tk_block_new(&tk_kind_sequential, name, NULL); }

tk_status tk_sequential_append(tk_block *seq, tk_block *child) {
    if (!seq || seq->kind != &tk_kind_sequential) {
        tk_set_error("sequential_append: not a sequential block");
        return TK_ERROR;
    }
    return tk_block_add_child(seq, NULL, child);
}

tk_block *tk_sequential_from_config(const void *json, uint64_t seed) {
    const cJSON *children = tk_cfg_children(json, 0, -1);
    if (!children && cJSON_GetObjectItemCaseSensitive(json, "children")) return NULL;
    tk_block *b = tk_sequential_new(tk_cfg_name(json));
    if (!b) return NULL;
    for (int i = 0; children && i < cJSON_GetArraySize(children); i++) {
        tk_block *c = tk_cfg_child(children, i, seed);
        tk_status st = c ? tk_sequential_append(b, c) : TK_ERROR;
        tk_block_release(c);
        if (st != TK_OK) {
            tk_block_release(b);
            return NULL;
        }
    }
    return b;
}
