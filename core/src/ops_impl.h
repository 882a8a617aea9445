/* Helpers shared by the op kernels (core/src/ops and core/src/loss.c). Not installed.
 *
 * Every op follows one pattern:
 *   1. TK_OP_INPUT on each tensor argument: a NULL input returns NULL, keeping the first
 *      error of the context (or failing with "<op>: input is NULL" if there is none);
 *   2. validation of dtypes, ranks and shapes, with messages that name the op and say
 *      what was expected and what was given;
 *   3. tk_ctx_input on each input (a heap leaf that requires gradients becomes its alias);
 *   4. the output computed into an arena tensor;
 *   5. if tk_ctx_wants_grad, a tape node whose backward accumulates (+=) into the
 *      gradient of each input that requires one (tk_op_grad). */
#ifndef TK_OPS_IMPL_H
#define TK_OPS_IMPL_H

#include "internal.h"

#include <math.h>
#include <stdio.h>

#define TK_SHAPE_LEN 64

/* Returns NULL from the calling function when `t` (or the context) is NULL. */
#define TK_OP_INPUT(ctx, op, t)                                                                                        \
    do {                                                                                                               \
        if (!(ctx) || !(t)) return tk_op_null_input((ctx), (op), #t);                                                  \
    } while (0)

void *tk_op_null_input(tk_ctx *ctx, const char *op, const char *arg);

/* "[2, 3]" of t in a caller-provided buffer of TK_SHAPE_LEN chars. */
#define TK_SHAPE(t, buf) tk_shape_str((t), (buf), sizeof(buf))

/* The gradient buffer of t if t requires a gradient (allocated zeroed on first use),
 * NULL otherwise. On OOM the context fails and NULL is returned too. */
float *tk_op_grad(tk_ctx *ctx, tk_tensor *t);

/* As tk_op_grad, for a backward that covers every element of t's gradient: when t has
 * no gradient yet, the buffer is allocated uninitialised and *fresh is set, and the
 * caller writes (=) it instead of accumulating (+=) into zeros; skips a memset and a
 * read of the buffer where a node is the first (often the only) consumer to reach t. */
float *tk_op_grad_w(tk_ctx *ctx, tk_tensor *t, bool *fresh);

/* An arena view of a with another shape (same numel), sharing a's data, whose gradient
 * flows back unchanged. Used by reshape and by identity ops (dropout in evaluation). */
tk_tensor *tk_op_view(tk_ctx *ctx, const char *op, tk_tensor *a, int32_t ndim, const int64_t *shape);

/* Rows and columns of a tensor seen as [numel / last, last] (a scalar is [1, 1]). */
static inline int64_t tk_op_cols(const tk_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static inline int64_t tk_op_rows(const tk_tensor *t) {
    int64_t c = tk_op_cols(t);
    return c ? t->numel / c : 0;
}

/* Activations (elementwise.c), shared with the fused dense layer.
 * tk_act_forward: y = act(x); y may be x (in place).
 * tk_act_backward: dx (+)= dy * act'(x), written or accumulated. Uses y (the output) for
 * every activation but gelu, which needs x; x may be NULL for the others. */
void tk_act_forward(tk_activation act, float *y, const float *x, int64_t n);
void tk_act_backward(tk_activation act, float *dx, const float *dy, const float *x, const float *y, int64_t n,
                     bool accumulate);
/* y = act(y + bias) in one pass (bias may be NULL): a dense layer's bias and activation. */
void tk_bias_act_forward(tk_activation act, float *y, const float *bias, int64_t n);
/* Whether tk_act_backward needs the activation's input x. */
static inline bool tk_act_needs_input(tk_activation act) { return act == TK_ACT_GELU; }

#endif
