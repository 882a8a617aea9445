/* Combinators: sequential, parallel, residual, shortcut and callback blocks (values,
 * gradients through nested blocks, errors), and the pre/post/aggregation and trace hooks. */
#include "block_test.h"

static tk_block *dense(const char *name, int64_t in, int64_t out, tk_activation act, uint64_t seed) {
    return tk_dense_new(name, in, out, act, true, tk_init_default_kernel(),
                        (tk_init){ .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.3f, .b = 0.3f }, seed);
}

/* appends and drops the caller's reference */
static void append(tk_block *seq, tk_block *child) {
    tk_sequential_append(seq, child);
    tk_block_release(child);
}

static void test_sequential(void) {
    /* dense_0: [2] -> [2] relu with identity kernel and bias [-1, 0]; dense_1: sum of both */
    tk_block *mlp = tk_sequential_new("mlp");
    tk_block *d0 = dense("dense_0", 2, 2, TK_ACT_RELU, 1), *d1 = dense("dense_1", 2, 1, TK_ACT_LINEAR, 2);
    bt_set_param(d0, "kernel", (const float[]){ 1, 0, 0, 1 });
    bt_set_param(d0, "bias", (const float[]){ -1, 0 });
    bt_set_param(d1, "kernel", (const float[]){ 1, 1 });
    bt_set_param(d1, "bias", (const float[]){ 0.5f });
    append(mlp, d0);
    append(mlp, d1);
    TK_CHECK(tk_block_num_children(mlp) == 2);
    tk_tensor *x = bt_mat(2, 2, (const float[]){ 3, 4, 0.5f, -2 });
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, mlp, tk_value_of(ctx, x));
    /* row 0: relu([2, 4]) -> 6.5; row 1: relu([-0.5, -2]) -> 0.5 */
    TK_CHECK(out && bt_near(tk_value_tensor(out), (const float[]){ 6.5f, 0.5f }, 2, 1e-6));
    /* an empty sequential is the identity */
    tk_block *empty = tk_sequential_new("empty");
    out = tk_block_forward(ctx, empty, tk_value_of(ctx, x));
    TK_CHECK(out && tk_value_tensor(out) == x);
    TK_CHECK(tk_sequential_append(d0, d1) == TK_ERROR);
    TK_CHECK(tk_sequential_append(mlp, mlp) == TK_ERROR); /* a cycle */
    TK_CHECK_ERROR(tk_last_error(), "cycle");
    tk_ctx_free(ctx);
    tk_tensor_release(x);
    tk_block_release(empty);
    /* gradients through three lazily-built dense layers */
    tk_block *deep = tk_sequential_new("deep");
    append(deep, dense("dense_0", 0, 6, TK_ACT_TANH, 3));
    append(deep, dense("dense_1", 0, 5, TK_ACT_SOFTPLUS, 4));
    append(deep, dense("dense_2", 0, 2, TK_ACT_LINEAR, 5));
    bt_case c = { .block = deep, .ins = { bt_randn(4, 3, 6) } };
    TK_CHECK(bt_gradcheck("sequential", &c, false, 1e-2) == 0);
    TK_CHECK(tk_block_is_built(deep));
    tk_tensor_release(c.ins[0]);
    tk_block_release(deep);
    tk_block_release(mlp);
}

static tk_block *tower(const char *name, int64_t out, uint64_t seed) {
    tk_block *t = tk_sequential_new(name);
    tk_block *mlp = tk_sequential_new("mlp");
    append(mlp, dense("dense_0", 0, 4, TK_ACT_TANH, seed));
    append(mlp, dense("dense_1", 0, out, TK_ACT_LINEAR, seed + 1));
    append(t, mlp);
    return t;
}

static void test_parallel(void) {
    tk_block *par = tk_parallel_new("two_tower");
    tk_block *q = tower("query_tower", 3, 1), *i = tower("item_tower", 2, 10);
    TK_CHECK(tk_parallel_add(par, "query", q) == TK_OK);
    TK_CHECK(tk_parallel_add(par, "item", i) == TK_OK);
    TK_CHECK(tk_parallel_add(par, "item", q) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "has a branch 'item' already");
    tk_tensor *x = bt_randn(5, 3, 1);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, par, tk_value_of(ctx, x));
    TK_CHECK_MSG(out, "%s", tk_ctx_error(ctx));
    TK_CHECK(tk_value_is_tabular(out) && out->n == 2);
    tk_tensor *qo = tk_value_get(out, "query"), *io = tk_value_get(out, "item");
    TK_CHECK(bt_shape2(qo, 5, 3) && bt_shape2(io, 5, 2));
    /* every branch got the whole input: the same as running the tower alone (bit for bit:
     * the same block on the same input with the same shapes, so the same operations) */
    tk_value *alone = tk_block_forward(ctx, q, tk_value_of(ctx, x));
    TK_CHECK(alone && qo && memcmp(tk_f32(tk_value_tensor(alone)), tk_f32(qo), 15 * sizeof(float)) == 0);
    /* with concat: sorted keys, item first (concat copies: the same bits) */
    tk_block_set_aggregation(par, TK_AGG_CONCAT);
    tk_value *cat = tk_block_forward(ctx, par, tk_value_of(ctx, x));
    tk_tensor *c = tk_value_tensor(cat);
    TK_CHECK(bt_shape2(c, 5, 5));
    TK_CHECK(c && io && qo && tk_f32(c)[0] == tk_f32(io)[0] && tk_f32(c)[2] == tk_f32(qo)[0]);
    tk_ctx_free(ctx);
    bt_case gc = { .block = par, .ins = { x } };
    TK_CHECK(bt_gradcheck("parallel concat", &gc, false, 1e-2) == 0);
    tk_tensor_release(x);
    tk_block_release(q);
    tk_block_release(i);
    tk_block_release(par);
}

static void test_parallel_tabular_merge_and_duplicates(void) {
    tk_block *par = tk_parallel_new("par");
    tk_block *a = tk_as_tabular_block_new("a", "x"), *b = tk_as_tabular_block_new("b", "y");
    tk_parallel_add(par, NULL, a);
    tk_parallel_add(par, NULL, b);
    TK_CHECK(strcmp(tk_block_child_name(par, 0), "a") == 0);
    tk_tensor *x = bt_randn(2, 2, 1);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, par, tk_value_of(ctx, x));
    TK_CHECK(out && out->n == 2 && tk_value_get(out, "x") == x && tk_value_get(out, "y") == x);
    /* a third branch producing "x" again */
    tk_block *c = tk_as_tabular_block_new("c", "x");
    tk_parallel_add(par, NULL, c);
    tk_ctx_reset(ctx);
    TK_CHECK(tk_block_forward(ctx, par, tk_value_of(ctx, x)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "par: parallel: key 'x' of branch 'c' is also produced by branch 'a'");
    /* a tensor branch whose name collides with a merged key */
    tk_block *par2 = tk_parallel_new("par2");
    tk_block *y = tk_activation_block_new("y", TK_ACT_LINEAR);
    tk_parallel_add(par2, NULL, b);
    tk_parallel_add(par2, NULL, y);
    tk_ctx_reset(ctx);
    TK_CHECK(tk_block_forward(ctx, par2, tk_value_of(ctx, x)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "key 'y' of branch 'y' is also produced by branch 'b'");
    tk_ctx_free(ctx);
    tk_tensor_release(x);
    tk_block_release(a);
    tk_block_release(b);
    tk_block_release(c);
    tk_block_release(y);
    tk_block_release(par);
    tk_block_release(par2);
}

static void test_residual(void) {
    tk_block *d = dense("d", 2, 2, TK_ACT_LINEAR, 1);
    bt_set_param(d, "kernel", (const float[]){ 2, 0, 0, -3 });
    bt_set_param(d, "bias", (const float[]){ 0, 0 });
    tk_block *res = tk_residual_new("res", d, TK_ACT_RELU);
    tk_tensor *x = bt_mat(2, 2, (const float[]){ 1, 1, -1, -2 });
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, res, tk_value_of(ctx, x));
    /* block(x) = [[2, -3], [-2, 6]]; + x = [[3, -2], [-3, 4]]; relu */
    TK_CHECK(out && bt_near(tk_value_tensor(out), (const float[]){ 3, 0, 0, 4 }, 4, 1e-6));
    /* a block that changes the width */
    tk_block *narrow = dense("narrow", 2, 3, TK_ACT_LINEAR, 2);
    tk_block *bad = tk_residual_new("res", narrow, TK_ACT_LINEAR);
    tk_ctx_reset(ctx);
    TK_CHECK(tk_block_forward(ctx, bad, tk_value_of(ctx, x)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx),
                   "res: residual: block 'narrow' returns [2, 3], which does not match the input [2, 2]");
    TK_CHECK(tk_residual_new("r", NULL, TK_ACT_LINEAR) == NULL);
    tk_ctx_reset(ctx);
    tk_value *tab = tk_value_table(ctx);
    tk_value_set(ctx, tab, "x", x);
    TK_CHECK(tk_block_forward(ctx, res, tab) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "res: residual needs a tensor input, got a tabular value {x}");
    tk_ctx_free(ctx);
    tk_block *lazy = dense("d", 0, 4, TK_ACT_TANH, 3);
    tk_block *res2 = tk_residual_new("res", lazy, TK_ACT_SOFTPLUS);
    bt_case gc = { .block = res2, .ins = { bt_randn(3, 4, 4) } };
    TK_CHECK(bt_gradcheck("residual", &gc, false, 1e-2) == 0);
    tk_tensor_release(gc.ins[0]);
    tk_tensor_release(x);
    tk_block_release(d);
    tk_block_release(narrow);
    tk_block_release(lazy);
    tk_block_release(res);
    tk_block_release(bad);
    tk_block_release(res2);
}

static void test_shortcut(void) {
    /* a tensor shortcut: concat of {d: d(x), shortcut: x}, "d" < "shortcut" */
    tk_block *d = dense("d", 2, 1, TK_ACT_LINEAR, 1);
    bt_set_param(d, "kernel", (const float[]){ 1, 1 });
    bt_set_param(d, "bias", (const float[]){ 0 });
    tk_block *sc = tk_shortcut_new("sc", d, NULL, NULL, TK_AGG_CONCAT);
    tk_tensor *x = bt_mat(2, 2, (const float[]){ 1, 2, 3, 4 });
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, sc, tk_value_of(ctx, x));
    TK_CHECK(out && bt_near(tk_value_tensor(out), (const float[]){ 3, 1, 2, 7, 3, 4 }, 6, 1e-6));
    /* no aggregation: the tabular value; a block_outputs_name */
    tk_block *named = tk_shortcut_new("sc", d, NULL, "out", TK_AGG_NONE);
    out = tk_block_forward(ctx, named, tk_value_of(ctx, x));
    TK_CHECK(tk_value_is_tabular(out) && out->n == 2 && tk_value_get(out, "out") && tk_value_get(out, "shortcut") == x);
    TK_CHECK(tk_shortcut_new("sc", d, NULL, "shortcut", TK_AGG_CONCAT) == NULL);
    tk_ctx_free(ctx);
    /* a tabular input with a filter: {mlp: mlp(concat(x)), a: x.a}, concatenated */
    tk_block *mlp = tk_sequential_new("mlp");
    append(mlp, tk_aggregation_block_new("concat", TK_AGG_CONCAT));
    append(mlp, dense("dense_0", 0, 3, TK_ACT_TANH, 2));
    const char *keep[1] = { "a" };
    tk_block *filter = tk_filter_block_new("filter", 1, keep, false);
    tk_block *sc2 = tk_shortcut_new("shortcut_block", mlp, filter, NULL, TK_AGG_CONCAT);
    bt_case gc = { .block = sc2, .n = 2, .names = { "b", "a" }, .ins = { bt_randn(4, 3, 1), bt_randn(4, 2, 2) } };
    ctx = tk_ctx_new(1);
    out = tk_block_forward(ctx, sc2, bt_input(ctx, &gc));
    tk_tensor *o = tk_value_tensor(out);
    TK_CHECK_MSG(bt_shape2(o, 4, 5), "%s", tk_ctx_error(ctx));
    /* "a" sorts first: the first two columns are the shortcut (copied: the same bits) */
    TK_CHECK(o && tk_f32(o)[0] == tk_f32(gc.ins[1])[0] && tk_f32(o)[1] == tk_f32(gc.ins[1])[1]);
    tk_ctx_free(ctx);
    TK_CHECK(bt_gradcheck("shortcut with filter", &gc, false, 1e-2) == 0);
    tk_tensor_release(gc.ins[0]);
    tk_tensor_release(gc.ins[1]);
    tk_tensor_release(x);
    tk_block_release(d);
    tk_block_release(sc);
    tk_block_release(named);
    tk_block_release(mlp);
    tk_block_release(filter);
    tk_block_release(sc2);
}

/* x * x with ops: trains with no code of its own */
static tk_value *square_cb(void *ud, tk_ctx *ctx, tk_value *in) {
    (*(int *)ud)++;
    tk_tensor *x = tk_value_tensor(in);
    if (!x) return tk_ctx_fail(ctx, "square needs a tensor");
    return tk_value_of(ctx, tk_mul(ctx, x, x));
}

static tk_value *null_cb(void *ud, tk_ctx *ctx, tk_value *in) { return NULL; }

static int freed;
static void free_counter(void *ud) { freed++; }

static void test_callback(void) {
    int calls = 0;
    freed = 0;
    tk_block *cb = tk_callback_block_new("square", square_cb, &calls, free_counter);
    tk_block *seq = tk_sequential_new("seq");
    append(seq, dense("dense_0", 0, 3, TK_ACT_TANH, 1));
    tk_sequential_append(seq, cb);
    append(seq, dense("dense_1", 0, 2, TK_ACT_LINEAR, 2));
    tk_tensor *x = bt_mat(1, 2, (const float[]){ 0.5f, -1 });
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *out = tk_block_forward(ctx, cb, tk_value_of(ctx, x));
    TK_CHECK(out && bt_near(tk_value_tensor(out), (const float[]){ 0.25f, 1 }, 2, 0)); /* squares of 0.5, -1: exact */
    TK_CHECK(calls == 1);
    tk_ctx_reset(ctx);
    const int64_t some_ids[1] = { 1 };
    tk_tensor *ids_t = bt_ids(1, some_ids, false);
    tk_value *tab = tk_value_table(ctx);
    tk_value_set(ctx, tab, "x", ids_t);
    TK_CHECK(tk_block_forward(ctx, seq, tab) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "seq/dense_0: ");
    tk_tensor_release(ids_t);
    tk_ctx_reset(ctx);
    tk_block *empty = tk_callback_block_new("nothing", null_cb, NULL, NULL);
    TK_CHECK(tk_block_forward(ctx, empty, tk_value_of(ctx, x)) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "nothing: callback block returned no value");
    TK_CHECK(tk_callback_block_new("x", NULL, NULL, NULL) == NULL);
    tk_ctx_free(ctx);
    bt_case gc = { .block = seq, .ins = { bt_randn(4, 2, 3) } };
    TK_CHECK(bt_gradcheck("callback in sequential", &gc, false, 1e-2) == 0);
    /* copies share the callback; its user data is freed with the last of them */
    tk_block *copy = tk_block_copy(seq, 9);
    TK_CHECK(copy != NULL);
    tk_block_release(cb);
    tk_block_release(seq);
    TK_CHECK(freed == 0);
    tk_block_release(copy);
    TK_CHECK(freed == 1);
    tk_tensor_release(gc.ins[0]);
    tk_tensor_release(x);
    tk_block_release(empty);
}

typedef struct trace_log {
    int n;
    int depth[16];
    const char *name[16];
} trace_log;

static void trace_fn(void *ud, int depth, const tk_block *b, const tk_value *out) {
    trace_log *t = ud;
    if (t->n < 16) {
        t->depth[t->n] = depth;
        t->name[t->n] = tk_block_name(b);
        t->n++;
    }
}

static void test_hooks_and_trace(void) {
    /* pre: concat of a tabular input; post: l2norm; both traced one level down */
    tk_block *d = dense("dense_0", 0, 3, TK_ACT_LINEAR, 1);
    tk_block *pre = tk_aggregation_block_new("concat", TK_AGG_CONCAT);
    tk_block *post = tk_l2norm_block_new("l2");
    tk_block_set_pre(d, pre);
    tk_block_set_post(d, post);
    tk_block *mlp = tk_sequential_new("mlp");
    tk_sequential_append(mlp, d);
    tk_tensor *a = bt_randn(2, 2, 1), *b = bt_randn(2, 3, 2);
    tk_ctx *ctx = tk_ctx_new(1);
    trace_log log = { 0 };
    tk_ctx_set_trace(ctx, trace_fn, &log);
    tk_value *in = tk_value_table(ctx);
    tk_value_set(ctx, in, "a", a);
    tk_value_set(ctx, in, "b", b);
    tk_value *out = tk_block_forward(ctx, mlp, in);
    tk_tensor *y = tk_value_tensor(out);
    TK_CHECK_MSG(bt_shape2(y, 2, 3), "%s", tk_ctx_error(ctx));
    TK_CHECK(bt_shape2(tk_block_param(d, "kernel"), 5, 3)); /* built after pre */
    for (int r = 0; y && r < 2; r++) {
        float s = 0;
        for (int j = 0; j < 3; j++) s += tk_f32(y)[r * 3 + j] * tk_f32(y)[r * 3 + j];
        TK_CHECK_NEAR(s, 1.0, 1e-5);
    }
    const char *names[4] = { "concat", "l2", "dense_0", "mlp" };
    const int depths[4] = { 2, 2, 1, 0 };
    TK_CHECK(log.n == 4);
    for (int i = 0; i < 4 && i < log.n; i++)
        TK_CHECK_MSG(log.depth[i] == depths[i] && strcmp(log.name[i], names[i]) == 0, "trace %d: %d %s", i,
                     log.depth[i], log.name[i]);
    /* clearing the hooks; a cycle is refused */
    tk_block_set_post(d, NULL);
    TK_CHECK(tk_block_post(d) == NULL);
    TK_CHECK(tk_block_set_pre(d, mlp) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "as pre would make a cycle");
    TK_CHECK(tk_block_pre(d) == pre);
    /* an aggregation on a block that returns a tensor fails with the path */
    tk_block_set_aggregation(mlp, TK_AGG_CONCAT);
    tk_ctx_reset(ctx);
    in = tk_value_table(ctx);
    tk_value_set(ctx, in, "a", a);
    tk_value_set(ctx, in, "b", b);
    TK_CHECK(tk_block_forward(ctx, mlp, in) == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "mlp: aggregation 'concat' needs a tabular input, got a tensor [2, 3]");
    /* the trace depth is back to 0 after a failure */
    tk_block_set_aggregation(mlp, TK_AGG_NONE);
    tk_ctx_clear_error(ctx);
    log.n = 0;
    in = tk_value_table(ctx);
    tk_value_set(ctx, in, "a", a);
    tk_value_set(ctx, in, "b", b);
    TK_CHECK(tk_block_forward(ctx, mlp, in) != NULL);
    TK_CHECK(log.n == 3 && log.depth[2] == 0);
    tk_ctx_free(ctx);
    tk_tensor_release(a);
    tk_tensor_release(b);
    tk_block_release(d);
    tk_block_release(pre);
    tk_block_release(post);
    tk_block_release(mlp);
}

int main(void) {
    TK_RUN(test_sequential);
    TK_RUN(test_parallel);
    TK_RUN(test_parallel_tabular_merge_and_duplicates);
    TK_RUN(test_residual);
    TK_RUN(test_shortcut);
    TK_RUN(test_callback);
    TK_RUN(test_hooks_and_trace);
    return tk_test_summary();
}
