/* Block graphs: parameter paths and counts, find, copy and clone, config JSON round
 * trips of every kind, malformed configs, and the kind registry. */
#include "block_test.h"
#include "two_tower_fixture.h"

static const tk_init UNIFORM = { .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.5f, .b = 0.5f };

static tk_block *dense(const char *name, int64_t in, int64_t out, tk_activation act, uint64_t seed) {
    return tk_dense_new(name, in, out, act, true, tk_init_default_kernel(), tk_init_zeros(), seed);
}

/* The fixture's two towers: glorot kernels and zero biases (a clone re-draws only the kernels). */
static tk_block *two_tower(void) {
    return tt_two_tower((tt_fixture){ 3, false, tk_init_default_kernel(), tk_init_zeros(), 1 });
}

typedef struct path_list {
    int n;
    char path[32][96];
    tk_tensor *t[32];
    bool trainable[32];
} path_list;

static int collect(void *ud, const char *path, tk_tensor *param, bool trainable) {
    path_list *l = ud;
    if (l->n < 32) {
        snprintf(l->path[l->n], sizeof l->path[0], "%s", path);
        l->t[l->n] = param;
        l->trainable[l->n] = trainable;
        l->n++;
    }
    return 0;
}

static int stop_after_two(void *ud, const char *path, tk_tensor *param, bool trainable) { return ++*(int *)ud == 2; }

static void test_param_paths(void) {
    tk_block *tt = two_tower();
    path_list l = { 0 };
    tk_block_visit_params(tt, true, collect, &l);
    const char *want[10] = {
        "query/embeddings/user_id", "query/mlp/dense_0/kernel", "query/mlp/dense_0/bias",  "query/mlp/dense_1/kernel",
        "query/mlp/dense_1/bias",   "item/embeddings/item_id",  "item/mlp/dense_0/kernel", "item/mlp/dense_0/bias",
        "item/mlp/dense_1/kernel",  "item/mlp/dense_1/bias",
    };
    TK_CHECK(l.n == 10);
    for (int i = 0; i < 10 && i < l.n; i++) TK_CHECK_MSG(strcmp(l.path[i], want[i]) == 0, "%d: %s", i, l.path[i]);
    l.n = 0;
    tk_block_visit_params(tt, false, collect, &l);
    TK_CHECK(l.n == 10 && strcmp(l.path[1], "two_tower/query/mlp/dense_0/kernel") == 0);
    TK_CHECK(tk_block_count_params(tt) == (10 * 4 + 4 * 8 + 8 + 8 * 3 + 3) + (20 * 4 + 4 * 8 + 8 + 8 * 3 + 3));
    int seen = 0;
    tk_block_visit_params(tt, true, stop_after_two, &seen);
    TK_CHECK(seen == 2);
    /* find: by block name, depth first, or by branch name */
    tk_block *d1 = tk_block_find(tt, "dense_1");
    TK_CHECK(d1 && d1 == tk_block_find(tk_block_find(tt, "query_tower"), "dense_1"));
    TK_CHECK(tk_block_find(tt, "item") == tk_block_find(tt, "item_tower"));
    TK_CHECK(tk_block_find(tt, "two_tower") == tt);
    TK_CHECK(tk_block_find(tt, "nope") == NULL);
    tk_block_release(tt);
}

static void test_equal_sibling_names(void) {
    tk_block *mlp = tk_sequential_new("mlp");
    tt_append(mlp, dense("dense", 2, 2, TK_ACT_RELU, 1));
    tt_append(mlp, dense("other", 2, 2, TK_ACT_RELU, 2));
    tt_append(mlp, dense("dense", 2, 2, TK_ACT_RELU, 3));
    tk_block *bn = tk_batch_norm_block_new("other", 2, 0.99f, 1e-3f); /* the pre shares a name too */
    tk_block_set_pre(mlp, bn);
    tk_block_release(bn);
    path_list l = { 0 };
    tk_block_visit_params(mlp, false, collect, &l);
    const char *want[10] = {
        "mlp/other_3/gamma",  "mlp/other_3/beta", "mlp/other_3/moving_mean", "mlp/other_3/moving_variance",
        "mlp/dense_0/kernel", "mlp/dense_0/bias", "mlp/other_1/kernel",      "mlp/other_1/bias",
        "mlp/dense_2/kernel", "mlp/dense_2/bias",
    };
    TK_CHECK(l.n == 10);
    for (int i = 0; i < 10 && i < l.n; i++) TK_CHECK_MSG(strcmp(l.path[i], want[i]) == 0, "%d: %s", i, l.path[i]);
    TK_CHECK(l.n == 10 && !l.trainable[2] && !l.trainable[3] && l.trainable[4]);
    tk_block_release(mlp);
    /* one block in two places: its parameters are visited (and counted) once */
    tk_block *shared = dense("shared", 2, 2, TK_ACT_RELU, 1);
    tk_block *par = tk_parallel_new("par");
    tk_parallel_add(par, "a", shared);
    tk_parallel_add(par, "b", shared);
    l.n = 0;
    tk_block_visit_params(par, true, collect, &l);
    TK_CHECK(l.n == 2 && strcmp(l.path[0], "a/kernel") == 0);
    TK_CHECK(tk_block_count_params(par) == 6);
    /* copies keep the sharing */
    tk_block *c = tk_block_clone(par);
    TK_CHECK(c && c->children[0] == c->children[1] && c->children[0] != shared);
    tk_block_release(c);
    tk_block_release(shared);
    tk_block_release(par);
}

static void test_copy_and_clone(void) {
    tk_block *tt = two_tower();
    tk_block *cp = tk_block_copy(tt, 99), *cl = tk_block_clone(tt);
    TK_CHECK(cp && cl);
    path_list a = { 0 }, b = { 0 }, c = { 0 };
    tk_block_visit_params(tt, true, collect, &a);
    tk_block_visit_params(cp, true, collect, &b);
    tk_block_visit_params(cl, true, collect, &c);
    TK_CHECK(a.n == 10 && b.n == 10 && c.n == 10);
    for (int i = 0; i < a.n && i < b.n && i < c.n; i++) {
        TK_CHECK(strcmp(a.path[i], b.path[i]) == 0 && strcmp(a.path[i], c.path[i]) == 0);
        TK_CHECK(tk_tensor_same_shape(a.t[i], b.t[i]) && tk_tensor_same_shape(a.t[i], c.t[i]));
        TK_CHECK(a.t[i] != b.t[i] && a.t[i] != c.t[i]);
        size_t bytes = (size_t)a.t[i]->numel * sizeof(float);
        TK_CHECK(memcmp(a.t[i]->data, c.t[i]->data, bytes) == 0); /* a clone copies: the bits */
        bool zeros = strstr(a.path[i], "bias") != NULL;           /* drawn from zeros: equal again */
        TK_CHECK_MSG((memcmp(a.t[i]->data, b.t[i]->data, bytes) == 0) == zeros, "%s", a.path[i]);
        TK_CHECK((b.t[i]->flags & TK_TENSOR_REQUIRES_GRAD) && (c.t[i]->flags & TK_TENSOR_REQUIRES_GRAD));
    }
    /* the same config */
    char *j0 = tk_block_config_json(tt), *j1 = tk_block_config_json(cp), *j2 = tk_block_config_json(cl);
    TK_CHECK(j0 && j1 && j2 && strcmp(j0, j1) == 0 && strcmp(j0, j2) == 0);
    free(j0);
    free(j1);
    free(j2);
    /* a clone is independent of the original */
    tk_f32(c.t[1])[0] += 1.0f;
    TK_CHECK(tk_f32(a.t[1])[0] != tk_f32(c.t[1])[0]);
    /* copy with the same seed twice: the same weights (the same seeded draws, bit for bit) */
    tk_block *cp2 = tk_block_copy(tt, 99);
    path_list d = { 0 };
    tk_block_visit_params(cp2, true, collect, &d);
    TK_CHECK(d.n == 10 && memcmp(d.t[1]->data, b.t[1]->data, (size_t)b.t[1]->numel * sizeof(float)) == 0);
    tk_block_release(cp2);
    tk_block_release(cp);
    tk_block_release(cl);
    tk_block_release(tt);
    /* lazily-sized blocks: a copy builds other weights, a clone the same (its seed: the
     * same draws, bit for bit) */
    tk_block *lazy = dense("d", 0, 3, TK_ACT_LINEAR, 5);
    tk_block *lcopy = tk_block_copy(lazy, 1), *lclone = tk_block_clone(lazy);
    tk_tensor *x = bt_randn(2, 4, 1);
    tk_ctx *ctx = tk_ctx_new(1);
    TK_CHECK(tk_block_forward(ctx, lazy, tk_value_of(ctx, x)) && tk_block_forward(ctx, lcopy, tk_value_of(ctx, x)) &&
             tk_block_forward(ctx, lclone, tk_value_of(ctx, x)));
    size_t kb = 12 * sizeof(float);
    TK_CHECK(memcmp(lazy->params[0]->data, lclone->params[0]->data, kb) == 0);
    TK_CHECK(memcmp(lazy->params[0]->data, lcopy->params[0]->data, kb) != 0);
    tk_ctx_free(ctx);
    tk_tensor_release(x);
    tk_block_release(lazy);
    tk_block_release(lcopy);
    tk_block_release(lclone);
}

/* config -> block -> config gives the same JSON */
static void check_round_trip(tk_block *b) {
    char *j0 = tk_block_config_json(b);
    TK_CHECK_MSG(j0, "%s", tk_last_error());
    if (!j0) return;
    tk_block *r = tk_block_from_config_json(j0, 123);
    TK_CHECK_MSG(r, "%s: %s", b->name, tk_last_error());
    char *j1 = r ? tk_block_config_json(r) : NULL;
    TK_CHECK_MSG(j1 && strcmp(j0, j1) == 0, "%s\n--- became ---\n%s", j0, j1 ? j1 : "(null)");
    if (r) TK_CHECK(tk_block_count_params(r) == tk_block_count_params(b));
    free(j0);
    free(j1);
    tk_block_release(r);
}

static void test_config_round_trip_each_kind(void) {
    tk_block *blocks[16];
    int n = 0;
    tk_block *d = tk_dense_new("dense_0", 257, 16, TK_ACT_RELU, true,
                               (tk_init){ .kind = TK_INIT_TRUNCATED_NORMAL, .a = 0.1f, .b = 0 },
                               (tk_init){ .kind = TK_INIT_CONSTANT, .a = 0.1f, .b = 0 }, 1);
    tk_dense_set_kernel_l2(d, 1e-4f);
    blocks[n++] = d;
    blocks[n++] = dense("lazy", 0, 4, TK_ACT_GELU, 2);
    blocks[n++] = tk_activation_block_new("act", TK_ACT_SELU);
    blocks[n++] = tk_l2norm_block_new("l2-norm");
    blocks[n++] = tk_dropout_block_new("dropout", 0.1f);
    blocks[n++] = tk_batch_norm_block_new("bn", 0, 0.9f, 1e-5f);
    blocks[n++] = tk_batch_norm_block_new("bn8", 8, 0.99f, 1e-3f);
    const char *names[2] = { "user_id", "genres" };
    blocks[n++] = tk_filter_block_new("filter", 2, names, true);
    blocks[n++] = tk_as_tabular_block_new("as_tabular", "emb");
    blocks[n++] = tk_aggregation_block_new("stack", TK_AGG_STACK);
    tk_block *e = tk_embeddings_new("embeddings");
    tk_embeddings_add_feature(e, "item_id", "items", 20, 4, TK_COMBINER_MEAN, UNIFORM, 1);
    tk_embeddings_add_feature(e, "genres", NULL, 7, 4, TK_COMBINER_SQRTN, tk_init_default_kernel(), 2);
    tk_embeddings_add_feature(e, "last_item", "items", 20, 4, TK_COMBINER_SUM, UNIFORM, 3);
    tk_embeddings_set_l2(e, 0.01f);
    blocks[n++] = e;
    blocks[n++] = tk_residual_new("residual", d, TK_ACT_TANH);
    blocks[n++] = tk_shortcut_new("shortcut", d, blocks[7], "block_out", TK_AGG_ELEMENTWISE_SUM);
    blocks[n++] = tk_shortcut_new("shortcut2", d, NULL, NULL, TK_AGG_CONCAT);
    blocks[n++] = two_tower();
    for (int i = 0; i < n; i++) {
        TK_CHECK(blocks[i] != NULL);
        if (blocks[i]) check_round_trip(blocks[i]);
    }
    /* hooks and aggregation on any block, and an empty sequential */
    tk_block *seq = tk_sequential_new("seq");
    tk_block_set_pre(seq, blocks[7]);
    tk_block_set_post(seq, blocks[3]);
    tk_block_set_aggregation(seq, TK_AGG_SUM);
    check_round_trip(seq);
    /* the reader's blocks work: same output shapes from a graph read back */
    char *j = tk_block_config_json(blocks[n - 1]);
    tk_block *r = tk_block_from_config_json(j, 5);
    TK_CHECK(r && tk_block_is_built(r));
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *in = tk_value_table(ctx);
    const int64_t ids[2] = { 1, 2 };
    tk_tensor *it = bt_ids(2, ids, false);
    tk_value_set(ctx, in, "user_id", it);
    tk_value_set(ctx, in, "item_id", it);
    tk_value *out = r ? tk_block_forward(ctx, r, in) : NULL;
    TK_CHECK_MSG(out && out->n == 2 && bt_shape2(tk_value_get(out, "query"), 2, 3), "%s", tk_ctx_error(ctx));
    tk_ctx_free(ctx);
    tk_tensor_release(it);
    free(j);
    tk_block_release(r);
    tk_block_release(seq);
    for (int i = 0; i < n; i++) tk_block_release(blocks[i]);
}

static void test_config_json_shape(void) {
    tk_block *d = dense("dense_0", 257, 16, TK_ACT_RELU, 1);
    char *j = tk_block_config_json(d);
    TK_CHECK(j && strstr(j, "\"kind\":\t\"dense\"") && strstr(j, "\"name\":\t\"dense_0\"") &&
             strstr(j, "\"units\":\t16") && strstr(j, "\"in\":\t257") && strstr(j, "\"activation\":\t\"relu\"") &&
             strstr(j, "\"use_bias\":\ttrue") && strstr(j, "\"kind\":\t\"glorot_uniform\""));
    free(j);
    tk_block *par = tk_parallel_new("par");
    tk_parallel_add(par, "query", d);
    tk_block_set_aggregation(par, TK_AGG_CONCAT);
    j = tk_block_config_json(par);
    TK_CHECK(j && strstr(j, "\"children\":") && strstr(j, "\"child_names\":\t[\"query\"]") &&
             strstr(j, "\"aggregation\":\t\"concat\""));
    free(j);
    /* 0.1f is written as 0.1 */
    tk_block *drop = tk_dropout_block_new("drop", 0.1f);
    j = tk_block_config_json(drop);
    TK_CHECK_MSG(j && strstr(j, "\"rate\":\t0.1\n"), "%s", j);
    free(j);
    tk_block_release(drop);
    tk_block_release(par);
    tk_block_release(d);
}

static tk_value *id_cb(void *ud, tk_ctx *ctx, tk_value *in) { return in; }

static void expect_config_error(const char *json, const char *needle) {
    tk_set_error("%s", "");
    tk_block *b = tk_block_from_config_json(json, 1);
    TK_CHECK_MSG(b == NULL, "accepted %s", json);
    TK_CHECK_MSG(strstr(tk_last_error(), needle), "%s: message \"%s\" lacks \"%s\"", json, tk_last_error(), needle);
    tk_block_release(b);
}

static void test_config_errors(void) {
    expect_config_error(NULL, "JSON text is NULL");
    expect_config_error("not json", "block config: invalid JSON at line 1 (byte 1)");
    expect_config_error("{\"kind\": \"dense\", \"name\": }", "block config: invalid JSON at line 1 (byte 27)");
    expect_config_error("{\"kind\": \"l2norm\", \"name\": \"x\"} trailing",
                        "invalid JSON at line 1 (byte 33): text after the JSON value");
    expect_config_error("[]", "a block config must be a JSON object, got an array");
    expect_config_error("{\"name\": \"x\"}", "block config: missing \"kind\"");
    expect_config_error("{\"kind\": \"dense\"}", "block config: missing \"name\"");
    expect_config_error("{\"kind\": 3, \"name\": \"x\"}", "\"kind\" must be a string");
    expect_config_error("{\"kind\": \"bogus\", \"name\": \"x\"}",
                        "block config 'x': unknown block kind 'bogus' (known: dense, activation");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\"}", "block config 'd': missing \"units\"");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\", \"units\": \"16\"}", "\"units\" must be an integer");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\", \"units\": 1.5}", "\"units\" must be an integer");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\", \"units\": -2}", "\"units\" must not be negative");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\", \"units\": 2, \"activation\": \"swish\"}",
                        "\"activation\": unknown activation 'swish' (known: linear, relu");
    expect_config_error(
        "{\"kind\": \"dense\", \"name\": \"d\", \"units\": 2, \"kernel_initializer\": {\"kind\": \"x\"}}",
        "\"kernel_initializer\": unknown initializer 'x'");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\", \"units\": 2, \"use_bias\": 1}",
                        "\"use_bias\" must be true or false");
    expect_config_error("{\"kind\": \"sequential\", \"name\": \"mlp\", \"children\": "
                        "[{\"kind\": \"l2norm\", \"name\": \"n\"}, {\"kind\": \"dense\", \"name\": \"dense_1\"}]}",
                        "block config 'mlp/dense_1': missing \"units\"");
    expect_config_error("{\"kind\": \"sequential\", \"name\": \"mlp\", \"children\": {}}",
                        "\"children\" must be an array");
    expect_config_error("{\"kind\": \"residual\", \"name\": \"r\", \"children\": []}",
                        "block config 'r': \"children\" must have 1 entry, got 0");
    expect_config_error("{\"kind\": \"residual\", \"name\": \"r\"}", "block config 'r': missing \"children\"");
    expect_config_error("{\"kind\": \"l2norm\", \"name\": \"n\", \"aggregation\": \"mean\"}",
                        "unknown aggregation 'mean' (known: concat, stack, sum, element-wise-sum, cosine)");
    expect_config_error("{\"kind\": \"l2norm\", \"name\": \"n\", \"post\": 3}",
                        "\"post\" must be a block config object");
    expect_config_error("{\"kind\": \"l2norm\", \"name\": \"n\", \"pre\": {\"kind\": \"dropout\", \"name\": \"d\"}}",
                        "block config 'n/d': missing \"rate\"");
    expect_config_error("{\"kind\": \"dropout\", \"name\": \"d\", \"rate\": 1}", "\"rate\" must be in [0, 1)");
    expect_config_error(
        "{\"kind\": \"parallel\", \"name\": \"p\", \"children\": [{\"kind\": \"l2norm\", \"name\": \"n\"}], "
        "\"child_names\": [\"a\", \"b\"]}",
        "\"child_names\" must be an array of 1 strings");
    expect_config_error("{\"kind\": \"embeddings\", \"name\": \"e\", \"tables\": [], \"features\": "
                        "[{\"name\": \"f\", \"table\": \"t\"}]}",
                        "feature 'f' reads table 't', which is not in \"tables\"");
    expect_config_error("{\"kind\": \"embeddings\", \"name\": \"e\", \"tables\": [{\"name\": \"t\", \"dim\": 2}], "
                        "\"features\": []}",
                        "block config 'e': missing \"cardinality\"");
    expect_config_error("{\"kind\": \"embeddings\", \"name\": \"e\", \"features\": []}", "missing \"tables\"");
    expect_config_error("{\"kind\": \"filter\", \"name\": \"f\"}", "missing \"features\"");
    expect_config_error("{\"kind\": \"aggregation\", \"name\": \"a\"}", "block config 'a': missing \"aggregation\"");
    expect_config_error("{\"kind\": \"as_tabular\", \"name\": \"a\"}", "missing \"output_name\"");
    expect_config_error("{\"kind\": \"shortcut\", \"name\": \"s\", \"children\": []}",
                        "\"children\" must have 1 to 2 entries");
    /* a callback block writes its kind, and cannot be read back */
    tk_block *cb = tk_callback_block_new("my_fn", id_cb, NULL, NULL);
    tk_block *seq = tk_sequential_new("seq");
    tk_sequential_append(seq, cb);
    char *j = tk_block_config_json(seq);
    TK_CHECK(j && strstr(j, "\"kind\":\t\"callback\""));
    expect_config_error(j, "block kind 'callback' cannot be restored from config");
    free(j);
    tk_block_release(cb);
    tk_block_release(seq);
}

static tk_value *custom_forward(tk_ctx *ctx, tk_block *b, tk_value *in) { return in; }
static const tk_block_kind custom_kind = { .name = "my_identity", .forward = custom_forward };
static const tk_block_kind impostor = { .name = "dense", .forward = custom_forward };
static tk_block *custom_from_config(const void *json, uint64_t seed) {
    return tk_block_new(&custom_kind, "restored", NULL);
}

static void test_kind_registry(void) {
    TK_CHECK(tk_block_kind_find("dense") && strcmp(tk_block_kind_find("dense")->name, "dense") == 0);
    TK_CHECK(tk_block_kind_find("callback") != NULL);
    TK_CHECK(tk_block_kind_find("my_identity") == NULL);
    TK_CHECK(tk_block_kind_register(&custom_kind, custom_from_config) == TK_OK);
    TK_CHECK(tk_block_kind_register(&custom_kind, custom_from_config) == TK_OK); /* again: harmless */
    TK_CHECK(tk_block_kind_find("my_identity") == &custom_kind);
    TK_CHECK(tk_block_kind_register(&impostor, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "block kind 'dense' is registered already");
    tk_block *b = tk_block_from_config_json("{\"kind\": \"my_identity\", \"name\": \"x\"}", 1);
    TK_CHECK(b && b->kind == &custom_kind);
    tk_block_release(b);
}

/* Issue 12: numbers round trip exactly or are refused, naming the block and the field. */
static void test_config_numbers_exact(void) {
    /* an initializer seed of 2^53 - 1 (cJSON's printer writes 9.00719925474099e+15) */
    tk_init k = { .kind = TK_INIT_RANDOM_UNIFORM, .a = 0.1f, .b = 0.3f, .has_seed = true, .seed = 9007199254740991ull };
    tk_block *mlp = tk_sequential_new("mlp");
    tk_block *d = tk_dense_new("d", 2, 3, TK_ACT_LINEAR, true, k, tk_init_zeros(), 1);
    tk_sequential_append(mlp, d);
    tk_block_release(d);
    TK_CHECK(tk_block_set_meta(mlp, "{\"big\": 9007199254740991, \"third\": 0.3333333333333333}") == TK_OK);
    char *json = tk_block_config_json(mlp);
    TK_CHECK(json && strstr(json, "\"seed\":\t9007199254740991"));
    TK_CHECK(json && strstr(json, "\"big\":\t9007199254740991"));
    TK_CHECK(json && strstr(json, "\"third\":\t0.3333333333333333"));
    TK_CHECK(json && strstr(json, "\"a\":\t0.1,")); /* the float's shortest text */
    tk_block *back = json ? tk_block_from_config_json(json, 0) : NULL;
    TK_CHECK(back != NULL);
    char *again = back ? tk_block_config_json(back) : NULL;
    TK_CHECK(again && json && strcmp(again, json) == 0);
    free(again);
    free(json);
    tk_block_release(back);
    tk_block_release(mlp);
    /* 1e39 in a float32 field is an infinity: refused when written, not written as null */
    tk_init inf = { .kind = TK_INIT_RANDOM_UNIFORM, .a = -1.0f, .b = (float)1e39 };
    mlp = tk_sequential_new("mlp");
    d = tk_dense_new("d", 2, 3, TK_ACT_LINEAR, true, inf, tk_init_zeros(), 1);
    tk_sequential_append(mlp, d);
    tk_block_release(d);
    TK_CHECK(tk_block_config_json(mlp) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "block config 'mlp/d': \"kernel_initializer\".\"b\" is not a finite number (inf)");
    tk_block_release(mlp);
}

/* Issue 12: what cJSON lets through is refused with the line and byte. */
static void test_config_strict_json(void) {
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\", \"units\": 0100}",
                        "block config: invalid JSON at line 1 (byte 41): a number with a leading zero");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\", \"units\": -012}",
                        "block config: invalid JSON at line 1 (byte 41): a number with a leading zero");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\\u0000x\", \"units\": 1}",
                        "block config: invalid JSON at line 1 (byte 29): a string holds a NUL character");
    expect_config_error("{\"kind\": \"dense\", \"name\": \"d\", \"units\": 1,\n \"meta\": {\"f\": [1e999]}}",
                        "block config: meta.f[0] is a number too large for a double (inf)");
    /* 1001 levels: cJSON would say "invalid JSON" at the byte where it stopped */
    char deep[2100];
    size_t n = 0;
    for (int i = 0; i < 1001; i++) deep[n++] = '[';
    for (int i = 0; i < 1001; i++) deep[n++] = ']';
    deep[n] = '\0';
    expect_config_error(deep, "block config: invalid JSON at line 1 (byte 1001): nesting deeper than 1000 levels");
    /* 0, -0, 0.5 and 1e05 are fine */
    tk_block *b = tk_block_from_config_json(
        "{\"kind\": \"dense\", \"name\": \"d\", \"units\": 0, \"meta\": {\"x\": [-0, 0.5, 1e05, -0.25]}}", 0);
    TK_CHECK_MSG(b != NULL, "%s", tk_last_error());
    tk_block_release(b);
}

int main(void) {
    TK_RUN(test_param_paths);
    TK_RUN(test_equal_sibling_names);
    TK_RUN(test_copy_and_clone);
    TK_RUN(test_config_round_trip_each_kind);
    TK_RUN(test_config_json_shape);
    TK_RUN(test_config_errors);
    TK_RUN(test_config_numbers_exact);
    TK_RUN(test_config_strict_json);
    TK_RUN(test_kind_registry);
    return tk_test_summary();
}
