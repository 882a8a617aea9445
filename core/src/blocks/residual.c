/* Residual (Merlin's connect_with_residual): act(block(x) + x). x and block(x) must be
 * tensors of the same shape. */
#include "block_impl.h"

#include <stdio.h>

typedef struct residual_impl {
    tk_activation act;
} residual_impl;

static tk_value *residual_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    const residual_impl *r = b->impl;
    tk_tensor *x = tk_block_need_tensor(ctx, "residual", in);
    if (!x) return NULL;
    tk_value *yv = tk_block_forward(ctx, b->children[0], in);
    if (!yv) return NULL;
    tk_tensor *y = tk_block_need_tensor(ctx, "residual (the output of its block)", yv);
    if (!y) return NULL;
    if (!tk_tensor_same_shape(x, y) || x->dtype != y->dtype) {
        char sx[64], sy[64];
        return tk_ctx_fail(ctx, "residual: block '%s' returns %s, which does not match the input %s",
                           b->children[0]->name, tk_shape_str(y, sy, sizeof sy), tk_shape_str(x, sx, sizeof sx));
    }
    tk_tensor *sum = tk_add(ctx, y, x);
    return tk_value_of(ctx, r->act == TK_ACT_LINEAR ? sum : tk_activate(ctx, sum, r->act));
}

static tk_status residual_write_config(const tk_block *b, void *json) {
    const residual_impl *r = b->impl;
    return cJSON_AddStringToObject(json, "activation", tk_activation_name(r->act)) ? TK_OK : TK_ERROR;
}

static void *residual_copy_impl(const void *impl) { return tk_memdup(impl, sizeof(residual_impl)); }

const tk_block_kind tk_kind_residual = {
    .name = "residual",
    .forward = residual_forward,
    .write_config = residual_write_config,
    .copy_impl = residual_copy_impl,
};

tk_block *tk_residual_new(const char *name, tk_block *block, tk_activation act) {
    if (!block) {
        tk_set_error("residual '%s': block is NULL", name ? name : "residual");
        return NULL;
    }
    if ((unsigned)act >= TK_ACT_COUNT) {
        tk_set_error("residual '%s': unknown activation %d", name ? name : "residual", (int)act);
        return NULL;
    }
    residual_impl *r = malloc(sizeof *r);
    if (!r) {
        tk_set_error("out of memory");
        return NULL;
    }
    r->act = act;
    tk_block *b = tk_block_new(&tk_kind_residual, name, r);
    if (b && tk_block_add_child(b, NULL, block) != TK_OK) {
        tk_block_release(b);
        return NULL;
    }
    return b;
}

tk_block *tk_residual_from_config(const void *json, uint64_t seed) {
    tk_activation act = TK_ACT_LINEAR;
    const cJSON *children = tk_cfg_children(json, 1, 1);
    if (!children || !tk_cfg_activation(json, "activation", false, &act)) return NULL;
    tk_block *c = tk_cfg_child(children, 0, seed);
    if (!c) return NULL;
    tk_block *b = tk_residual_new(tk_cfg_name(json), c, act);
    tk_block_release(c);
    return b;
}
