/*
 * towerkit_ext.h - the C core's API for writing ops and block kinds: the gradient tape
 * an op records on, the deferred writes and added losses of a forward pass, and the
 * block struct with its kind vtable. It includes towerkit.h; a host that builds, trains
 * and serves models with the kinds there needs towerkit.h alone.
 *
 * core/src/ops and core/src/blocks are written against it, and so is a host's own kind
 * (tk_block_kind_register). A host that only wants a block computed by its own function
 * uses tk_callback_block_new of towerkit.h instead.
 *
 * Ownership is as in towerkit.h: what an op or a forward pass allocates lives in the
 * context's arena until tk_ctx_reset (nodes, gradients, aliases); a block owns its
 * name, children, parameters, hooks, meta and impl, and frees them on its last release.
 */
#ifndef TOWERKIT_EXT_H
#define TOWERKIT_EXT_H

#include "towerkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------ */
/* Ops: the tape                                                                         */
/* ------------------------------------------------------------------------------------ */

/* An op (core/src/ops and core/src/ops_impl.h show the pattern) maps each input with
 * tk_ctx_input, computes its output into an arena tensor and, when tk_ctx_wants_grad,
 * records a node whose backward accumulates into the gradients of its inputs.
 *
 * tk_ctx_input maps a heap tensor that requires gradients to its context alias (one per
 * heap leaf per context, an arena tensor whose data is the leaf's); every other tensor is
 * returned as is. Ops call it on each input before reading `requires_grad`.
 * tk_ctx_record appends a node (arena memory of ctx, NULL when out of memory) whose
 * backward is run by tk_backward when `out` has a gradient. tk_ctx_grad_of returns the
 * gradient of an arena tensor, an arena tensor allocated zeroed on first use. */
typedef void (*tk_backward_fn)(tk_ctx *ctx, tk_node *node);
#define TK_NODE_MAX_INPUTS 4
struct tk_node {
    tk_backward_fn backward;
    const char *op; /* op name, for errors and debugging */
    tk_tensor *out;
    tk_tensor *in[TK_NODE_MAX_INPUTS];
    int32_t nin;
    union {
        double f[4];
        int64_t i[4];
    } arg;            /* small saved scalars */
    void *saved;      /* arena data saved by the forward pass */
    tk_tensor **list; /* variadic inputs (concat, stack) */
    int32_t nlist;
};
tk_tensor *tk_ctx_input(tk_ctx *ctx, tk_tensor *t);
tk_node *tk_ctx_record(tk_ctx *ctx, const char *op, tk_backward_fn backward, tk_tensor *out, int32_t nin,
                       tk_tensor *const *in);
tk_tensor *tk_ctx_grad_of(tk_ctx *ctx, tk_tensor *t);
/* Appends `n` rows of sparse gradient to a table alias (copied into the arena). */
tk_status tk_ctx_sparse_append(tk_ctx *ctx, tk_tensor *table_alias, int64_t n, const int64_t *rows,
                               const float *values);
/* Whether the op being built should record: gradients on and any input requires them. */
bool tk_ctx_wants_grad(const tk_ctx *ctx, int32_t nin, tk_tensor *const *in);

/* The tape as recorded so far: its length and node i (0 the first recorded; NULL out of
 * range). tk_backward runs the nodes from the last to the first. */
int64_t tk_ctx_tape_size(const tk_ctx *ctx);
const tk_node *tk_ctx_tape_node(const tk_ctx *ctx, int64_t i);

/* A function tk_backward calls after each tape node, in the order it runs them (tape
 * index ntape - 1 down to 0), also for a node it skips because its output got no
 * gradient: when it is called with index i, no node of index below i has run yet, so a
 * leaf that no node below i reads has its final gradient. It runs on the thread that
 * called tk_backward; a failure it reports with tk_ctx_fail stops the backward pass. Set
 * it after the forward pass (it is for one tape: tk_ctx_reset clears it); NULL removes
 * it. The data-parallel gradient exchange (core/src/dist.c) starts reducing gradients
 * from it while the rest of the tape runs. */
typedef void (*tk_backward_hook_fn)(tk_ctx *ctx, int64_t node, void *ud);
void tk_ctx_set_backward_hook(tk_ctx *ctx, tk_backward_hook_fn fn, void *ud);

/* A write a forward pass asks for, since blocks and parameters are read-only during it:
 * dst[i] = a * dst[i] + b * src[i] (batch norm's running = momentum * running +
 * (1 - momentum) * batch), applied by tk_ctx_apply_updates. dst is a heap tensor the
 * context retains until then; src is arena memory of ctx. */
tk_status tk_ctx_defer_update(tk_ctx *ctx, tk_tensor *dst, const float *src, float a, float b);

/* Adds a regularisation loss (one element) to the sum tk_ctx_added_loss returns; blocks
 * call it in training (Keras' add_loss). */
tk_status tk_ctx_add_loss(tk_ctx *ctx, tk_tensor *loss);

/* Prefixes the current message with a block path component: "dense_0: msg" becomes
 * "mlp/dense_0: msg". tk_block_forward calls it when a block fails. */
void tk_ctx_error_push_path(tk_ctx *ctx, const char *name);

/* ------------------------------------------------------------------------------------ */
/* Block kinds                                                                           */
/* ------------------------------------------------------------------------------------ */

typedef struct tk_block_kind tk_block_kind;

/* The block of towerkit.h. Kinds read and write their own block's fields when they build
 * it; everyone else goes through the functions of towerkit.h (a block in use may be
 * shared by threads, and is read-only during tk_block_forward). */
struct tk_block {
    const tk_block_kind *kind;
    char *name;
    int32_t refcount;
    int32_t nchildren, cap_children;
    tk_block **children;
    char **child_names; /* parallel branch names (NULL entries elsewhere) */
    int32_t nparams, cap_params;
    tk_tensor **params; /* heap tensors, retained */
    char **param_names;
    bool *param_trainable; /* false for running statistics */
    tk_block *pre, *post;  /* optional, applied around the block */
    tk_aggregation aggregation;
    void *impl;         /* kind-specific state, owned */
    char *meta;         /* a JSON object of the layer above (the Lua API's class
                                * and options), kept in configs and copies; or NULL */
    volatile int built; /* lazily sized blocks: weights created */
};

struct tk_block_kind {
    const char *name; /* "dense", "sequential", ... */
    /* The block's own computation (pre/post/aggregation are applied by
     * tk_block_forward). Must not write the block or its parameters. */
    tk_value *(*forward)(tk_ctx *ctx, tk_block *b, tk_value *in);
    /* Builds lazily-sized weights from the first input; NULL if never lazy. */
    tk_status (*build)(tk_ctx *ctx, tk_block *b, tk_value *in);
    /* Writes kind-specific config fields into a cJSON object (void * to keep cJSON out
     * of this header); NULL if none. */
    tk_status (*write_config)(const tk_block *b, void *json_object);
    /* Frees impl; NULL if impl is plain malloc'd memory or NULL. */
    void (*free_impl)(void *impl);
    /* Deep-copies impl for tk_block_copy; NULL if impl is NULL. */
    void *(*copy_impl)(const void *impl);
};

/* A block of `kind` with the caller's one reference, or NULL (tk_last_error). A NULL or
 * empty name is the kind's name. The block owns impl and frees it (the kind's free_impl,
 * else free()) with itself, or at once when out of memory; a NULL kind or one without
 * forward is refused and impl stays the caller's. */
tk_block *tk_block_new(const tk_block_kind *kind, const char *name, void *impl);
tk_status tk_block_add_child(tk_block *b, const char *child_name, tk_block *child);        /* retains */
tk_status tk_block_add_param(tk_block *b, const char *name, tk_tensor *t, bool trainable); /* retains */

/* Kinds are registered by name so configs can be read back. Built-in kinds are
 * registered on first use; a host may add its own (a kind whose from_config is NULL
 * cannot be restored from config). The kind must outlive every use (a static struct);
 * tk_block_kind_find returns it, or NULL for an unknown name. from_config returns a new
 * block (one reference) or NULL with tk_last_error. */
typedef tk_block *(*tk_block_from_config_fn)(const void *json_object, uint64_t seed);
tk_status tk_block_kind_register(const tk_block_kind *kind, tk_block_from_config_fn from_config);
const tk_block_kind *tk_block_kind_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* TOWERKIT_EXT_H */
