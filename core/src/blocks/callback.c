/* A block implemented by a host callback (the Lua binding wraps Lua functions with it).
 * Its config records the kind "callback" and the name only; it cannot be restored from
 * config. Copies and clones share the callback and its user data (reference counted);
 * free_ud runs when the last of them is released. If creating the block fails, ud is
 * left to the caller. */
#include "block_impl.h"

typedef struct callback_impl {
    tk_callback_fn fn;
    void *ud;
    void (*free_ud)(void *ud);
    int32_t refcount;
} callback_impl;

static tk_value *callback_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    const callback_impl *c = b->impl;
    return c->fn(c->ud, ctx, in);
}

static void callback_free(void *impl) {
    callback_impl *c = impl;
    if (__atomic_sub_fetch(&c->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (c->free_ud) c->free_ud(c->ud);
    free(c);
}

static void *callback_share(const void *impl) {
    callback_impl *c = (callback_impl *)impl;
    __atomic_add_fetch(&c->refcount, 1, __ATOMIC_RELAXED);
    return c;
}

const tk_block_kind tk_kind_callback = {
    .name = "callback",
    .forward = callback_forward,
    .free_impl = callback_free,
    .copy_impl = callback_share,
};

tk_block *tk_callback_block_new(const char *name, tk_callback_fn fn, void *ud, void (*free_ud)(void *ud)) {
    if (!fn) {
        tk_set_error("callback block '%s': the callback is NULL", name ? name : "callback");
        return NULL;
    }
    callback_impl *c = malloc(sizeof *c);
    if (!c) {
        tk_set_error("out of memory");
        return NULL;
    }
    *c = (callback_impl){ fn, ud, NULL, 1 }; /* on failure below, ud stays the caller's */
    tk_block *b = tk_block_new(&tk_kind_callback, name, c);
    if (b) c->free_ud = free_ud;
    return b;
}
