/* Parallel (Merlin's ParallelBlock): every branch gets the whole input. A branch that
 * returns a tensor contributes {branch_name: tensor}; one that returns a tabular value
 * has its entries merged. A key produced twice is an error naming both branches. Then
 * the block's post and aggregation, if set, as for every block. */
#include "block_impl.h"

static const char *branch_name(const tk_block *b, int32_t i) {
    return b->child_names[i] ? b->child_names[i] : b->children[i]->name;
}

static tk_value *parallel_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    tk_value *out = tk_value_table(ctx);
    const char **origins = NULL;
    if (!out) return NULL;
    for (int32_t i = 0; i < b->nchildren; i++) {
        tk_value *v = tk_block_forward(ctx, b->children[i], in);
        if (!v) return NULL;
        const char *name = branch_name(b, i);
        tk_status st = tk_value_is_tabular(v)
                           ? tk_value_merge_from(ctx, out, &origins, v, name, "parallel")
                           : tk_value_add_unique(ctx, out, &origins, name, v->tensor, name, "parallel");
        if (st != TK_OK) return NULL;
    }
    return out;
}

const tk_block_kind tk_kind_parallel = {
    .name = "parallel",
    .forward = parallel_forward,
};

tk_block *tk_parallel_new(const char *name) { return tk_block_new(&tk_kind_parallel, name, NULL); }

tk_status tk_parallel_add(tk_block *par, const char *name, tk_block *branch) {
    if (!par || par->kind != &tk_kind_parallel) {
        tk_set_error("parallel_add: not a parallel block");
        return TK_ERROR;
    }
    if (!branch) {
        tk_set_error("parallel '%s': branch is NULL", par->name);
        return TK_ERROR;
    }
    if (!name || !*name) name = branch->name;
    for (int32_t i = 0; i < par->nchildren; i++) {
        if (strcmp(branch_name(par, i), name) == 0) {
            tk_set_error("parallel '%s' has a branch '%s' already", par->name, name);
            return TK_ERROR;
        }
    }
    return tk_block_add_child(par, name, branch);
}

tk_block *tk_parallel_from_config(const void *json, uint64_t seed) {
    const cJSON *children = tk_cfg_children(json, 0, -1);
    if (!children && cJSON_GetObjectItemCaseSensitive(json, "children")) return NULL;
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(json, "child_names");
    int n = children ? cJSON_GetArraySize(children) : 0;
    if (names && (!cJSON_IsArray(names) || cJSON_GetArraySize(names) != n))
        return tk_cfg_fail("\"child_names\" must be an array of %d strings, one per child", n);
    tk_block *b = tk_parallel_new(tk_cfg_name(json));
    if (!b) return NULL;
    for (int i = 0; i < n; i++) {
        const cJSON *nm = names ? cJSON_GetArrayItem(names, i) : NULL;
        if (nm && !cJSON_IsString(nm)) {
            tk_cfg_fail("\"child_names\"[%d] must be a string", i);
            goto fail;
        }
        tk_block *c = tk_cfg_child(children, i, seed);
        if (!c) goto fail;
        tk_status st = tk_parallel_add(b, nm ? nm->valuestring : NULL, c);
        tk_block_release(c);
        if (st != TK_OK) {
            tk_cfg_fail("%s", tk_last_error());
            goto fail;
        }
    }
    return b;
fail:
    tk_block_release(b);
    return NULL;
}
