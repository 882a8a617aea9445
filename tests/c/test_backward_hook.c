/* The backward hook (tk_ctx_set_backward_hook, towerkit_ext.h): called once after each
 * tape node, from the last recorded to the first, skipped nodes included; a leaf's
 * gradient is final once the hook has been called with the lowest tape index of a node
 * that reads it (what the data-parallel exchange relies on to start reducing it early);
 * a failure it reports stops backward; tk_ctx_reset removes it. */
#include "tk_test.h"
#include "towerkit_ext.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t calls, seen[64];
    const tk_tensor *leaf; /* watched: its gradient when its last reader has run */
    int64_t leaf_node;
    float snapshot[64];
    bool snapped;
    bool fail;
} hook_log;

static void on_node(tk_ctx *ctx, int64_t node, void *ud) {
    hook_log *h = ud;
    if (h->calls < 64) h->seen[h->calls] = node;
    h->calls++;
    if (h->fail) tk_ctx_fail(ctx, "the hook failed at node %lld", (long long)node);
    if (node == h->leaf_node) {
        tk_tensor *g = tk_ctx_grad(ctx, h->leaf);
        if (g && g->numel <= 64) {
            memcpy(h->snapshot, g->data, (size_t)g->numel * sizeof(float));
            h->snapped = true;
        }
    }
}

/* The lowest tape index of a node reading the heap leaf t (-1 if none). */
static int64_t last_reader(const tk_ctx *ctx, const tk_tensor *t) {
    int64_t found = -1;
    for (int64_t i = tk_ctx_tape_size(ctx) - 1; i >= 0; i--) {
        const tk_node *n = tk_ctx_tape_node(ctx, i);
        for (int32_t k = 0; k < n->nin; k++)
            if (n->in[k] && n->in[k]->source == t) found = i;
    }
    return found;
}

typedef struct {
    tk_tensor *x, *w1, *w2, *unused;
} net;

/* loss = sum(dense(tanh(dense(x, w1)), w2)^2) plus a branch (x * unused) that does not
 * reach the loss, so one node is skipped. */
static tk_tensor *forward(tk_ctx *ctx, const net *n) {
    tk_tensor *h = tk_dense(ctx, n->x, n->w1, NULL, TK_ACT_TANH);
    tk_tensor *dead = tk_mul(ctx, n->x, n->unused);
    (void)dead;
    tk_tensor *y = tk_dense(ctx, h, n->w2, NULL, TK_ACT_LINEAR);
    return tk_sum(ctx, tk_mul(ctx, y, y), -1, false);
}

static void test_called_after_each_node(void) {
    int64_t sx[2] = { 4, 3 }, s1[2] = { 3, 5 }, s2[2] = { 5, 2 };
    net n = { tk_test_randn(2, sx, 1.0f, 1), tk_test_randn(2, s1, 0.5f, 2), tk_test_randn(2, s2, 0.5f, 3),
              tk_test_randn(2, sx, 1.0f, 4) };
    tk_tensor_set_requires_grad(n.w1, true);
    tk_tensor_set_requires_grad(n.w2, true);
    tk_tensor_set_requires_grad(n.unused, true);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_tensor *loss = forward(ctx, &n);
    TK_CHECK(loss != NULL);
    int64_t nt = tk_ctx_tape_size(ctx);
    TK_CHECK(nt >= 5);
    TK_CHECK(tk_ctx_tape_node(ctx, -1) == NULL && tk_ctx_tape_node(ctx, nt) == NULL);
    hook_log h = { .leaf = n.w1, .leaf_node = last_reader(ctx, n.w1) };
    TK_CHECK(h.leaf_node >= 0 && h.leaf_node < nt - 1);
    tk_ctx_set_backward_hook(ctx, on_node, &h);
    TK_CHECK(tk_backward(ctx, loss) == TK_OK);
    /* every node once, from the last to the first, the skipped one (x * unused) too */
    TK_CHECK(h.calls == nt);
    for (int64_t i = 0; i < h.calls && i < 64; i++) TK_CHECK(h.seen[i] == nt - 1 - i);
    TK_CHECK(tk_ctx_grad(ctx, n.unused) == NULL);
    /* w1's gradient when its last reader had run is its final gradient, bit for bit */
    TK_CHECK(h.snapped);
    tk_tensor *g = tk_ctx_grad(ctx, n.w1);
    TK_CHECK(g && memcmp(g->data, h.snapshot, (size_t)g->numel * sizeof(float)) == 0);
    /* the hook is for one tape: reset removes it */
    tk_ctx_reset(ctx);
    loss = forward(ctx, &n);
    h.calls = 0;
    TK_CHECK(tk_backward(ctx, loss) == TK_OK);
    TK_CHECK(h.calls == 0);
    /* a failure reported by the hook stops backward at once, with its message */
    tk_ctx_reset(ctx);
    loss = forward(ctx, &n);
    hook_log f = { .fail = true, .leaf_node = -2 };
    tk_ctx_set_backward_hook(ctx, on_node, &f);
    TK_CHECK(tk_backward(ctx, loss) == TK_ERROR);
    TK_CHECK(f.calls == 1);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "the hook failed at node");
    /* NULL removes it */
    tk_ctx_reset(ctx);
    loss = forward(ctx, &n);
    tk_ctx_set_backward_hook(ctx, on_node, &f);
    tk_ctx_set_backward_hook(ctx, NULL, &f);
    f.calls = 0;
    TK_CHECK(tk_backward(ctx, loss) == TK_OK);
    TK_CHECK(f.calls == 0);
    tk_ctx_free(ctx);
    tk_tensor_release(n.x);
    tk_tensor_release(n.w1);
    tk_tensor_release(n.w2);
    tk_tensor_release(n.unused);
}

int main(void) {
    TK_RUN(test_called_after_each_node);
    return tk_test_summary();
}
