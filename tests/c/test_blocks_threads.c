/* One model, many contexts: two threads run forward and backward of one shared model at
 * once and get results bit-identical to a single-threaded run; lazily-sized blocks
 * raced from two threads are built once; a step allocates nothing in steady state.
 * Bitwise by construction: every context here uses the process's thread count, so each
 * product is cut into the same row blocks, each one single-threaded sgemm of the same
 * shape on the same data, whichever thread runs it (towerkit.h, "Threads"). */
#include "block_test.h"

#include <pthread.h>

#define ITERS 200
#define BATCH 16

static const tk_init UNIFORM = { .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.5f, .b = 0.5f };

static void append(tk_block *seq, tk_block *child) {
    tk_sequential_append(seq, child);
    tk_block_release(child);
}

static tk_block *dense(const char *name, int64_t in, int64_t out, tk_activation act, uint64_t seed) {
    return tk_dense_new(name, in, out, act, true, tk_init_default_kernel(), UNIFORM, seed);
}

/* A two-tower model with every kind of parameterised block: embeddings (one-hot and
 * multi-hot), dense, batch norm, dropout, a residual and an l2 post. */
static tk_block *make_model(int64_t in_width) {
    tk_block *tt = tk_parallel_new("two_tower");
    for (int t = 0; t < 2; t++) {
        tk_block *tower = tk_sequential_new(t ? "item" : "query");
        tk_block *e = tk_embeddings_new("embeddings");
        tk_embeddings_add_feature(e, t ? "item_id" : "user_id", NULL, 50, 8, TK_COMBINER_MEAN, UNIFORM,
                                  1 + (uint64_t)t);
        tk_embeddings_add_feature(e, "genres", NULL, 10, 8, TK_COMBINER_SQRTN, UNIFORM, 3);
        tk_embeddings_set_l2(e, 1e-3f);
        tk_block_set_aggregation(e, TK_AGG_CONCAT);
        append(tower, e);
        tk_block *mlp = tk_sequential_new("mlp");
        append(mlp, dense("dense_0", in_width, 32, TK_ACT_RELU, 10 + (uint64_t)t));
        append(mlp, tk_batch_norm_block_new("bn", in_width ? 32 : 0, 0.99f, 1e-3f));
        append(mlp, tk_dropout_block_new("dropout", 0.2f));
        tk_block *inner = dense("inner", in_width ? 32 : 0, 32, TK_ACT_TANH, 20 + (uint64_t)t);
        append(mlp, tk_residual_new("residual", inner, TK_ACT_LINEAR));
        tk_block_release(inner);
        append(mlp, dense("dense_1", in_width ? 32 : 0, 16, TK_ACT_LINEAR, 30 + (uint64_t)t));
        append(tower, mlp);
        tk_parallel_add(tt, NULL, tower);
        tk_block_release(tower);
    }
    tk_block *post = tk_l2norm_block_new("l2-norm");
    tk_block_set_post(tt, post);
    tk_block_release(post);
    return tt;
}

typedef struct batch {
    tk_tensor *user, *item, *values, *offsets;
} batch;

static batch make_batch(void) {
    batch b;
    int64_t user[BATCH], item[BATCH], off[BATCH + 1], vals[3 * BATCH];
    int64_t n = 0;
    for (int i = 0; i < BATCH; i++) {
        user[i] = (i * 7) % 50;
        item[i] = (i * 13 + 5) % 50;
        off[i] = n;
        for (int k = 0; k < i % 4; k++) vals[n++] = (i + k * 3) % 10;
    }
    off[BATCH] = n;
    b.user = bt_ids(BATCH, user, false);
    b.item = bt_ids(BATCH, item, true);
    b.values = bt_ids(n, vals, false);
    b.offsets = bt_ids(BATCH + 1, off, false);
    return b;
}

static void free_batch(batch *b) {
    tk_tensor_release(b->user);
    tk_tensor_release(b->item);
    tk_tensor_release(b->values);
    tk_tensor_release(b->offsets);
}

/* Everything a step computes, flattened: the outputs, the loss, every gradient. */
typedef struct result {
    float *data;
    size_t n, cap;
} result;

static void push(result *r, const float *v, size_t n) {
    if (r->n + n > r->cap) {
        r->cap = (r->n + n) * 2;
        r->data = realloc(r->data, r->cap * sizeof *r->data);
    }
    memcpy(r->data + r->n, v, n * sizeof *v);
    r->n += n;
}

typedef struct grad_ud {
    tk_ctx *ctx;
    result *r;
} grad_ud;

static int push_grad(void *ud, const char *path, tk_tensor *param, bool trainable) {
    grad_ud *g = ud;
    tk_tensor *grad = trainable ? tk_ctx_grad(g->ctx, param) : NULL;
    if (grad) push(g->r, tk_f32(grad), (size_t)grad->numel);
    return 0;
}

/* One training step (forward and backward) in ctx; fills r. false on failure. */
static bool step(tk_ctx *ctx, tk_block *model, const batch *b, result *r) {
    tk_ctx_reset(ctx);
    tk_ctx_seed(ctx, 42);
    tk_ctx_set_training(ctx, true);
    tk_value *in = tk_value_table(ctx);
    tk_value_set(ctx, in, "user_id", b->user);
    tk_value_set(ctx, in, "item_id", b->item);
    tk_value_set(ctx, in, "genres__values", b->values);
    tk_value_set(ctx, in, "genres__offsets", b->offsets);
    tk_value *out = tk_block_forward(ctx, model, in);
    if (!out) return false;
    tk_tensor *q = tk_value_get(out, "query"), *i = tk_value_get(out, "item");
    /* in-batch softmax over the scores, plus the regularisers */
    tk_tensor *logits = tk_scale(ctx, tk_matmul(ctx, q, i, false, true), 20.0f);
    tk_tensor *labels = tk_ctx_empty(ctx, TK_I64, 1, (const int64_t[]){ BATCH });
    if (!logits || !labels) return false;
    for (int k = 0; k < BATCH; k++) tk_i64(labels)[k] = k;
    tk_tensor *loss = tk_add(ctx, tk_cross_entropy(ctx, logits, labels, NULL), tk_ctx_added_loss(ctx));
    if (!loss || tk_backward(ctx, loss) != TK_OK) return false;
    r->n = 0;
    push(r, tk_f32(q), (size_t)q->numel);
    push(r, tk_f32(i), (size_t)i->numel);
    push(r, tk_f32(loss), 1);
    grad_ud g = { ctx, r };
    tk_block_visit_params(model, true, push_grad, &g);
    return true;
}

typedef struct worker {
    tk_block *model;
    const batch *b;
    const result *want;
    int mismatches, failures;
    pthread_barrier_t *barrier;
} worker;

static void *run_worker(void *arg) {
    worker *w = arg;
    tk_ctx *ctx = tk_ctx_new(1);
    result r = { 0 };
    pthread_barrier_wait(w->barrier);
    for (int it = 0; it < ITERS; it++) {
        if (!step(ctx, w->model, w->b, &r)) {
            w->failures++;
            continue;
        }
        if (r.n != w->want->n || memcmp(r.data, w->want->data, r.n * sizeof *r.data) != 0) w->mismatches++;
    }
    free(r.data);
    tk_ctx_free(ctx);
    return NULL;
}

static void test_threads_shared_model(void) {
    tk_block *model = make_model(0);
    batch b = make_batch();
    tk_ctx *ctx = tk_ctx_new(1);
    result want = { 0 }, again = { 0 };
    TK_CHECK_MSG(step(ctx, model, &b, &want), "%s", tk_ctx_error(ctx)); /* builds the model */
    TK_CHECK(tk_block_is_built(model));
    TK_CHECK(step(ctx, model, &b, &again));
    TK_CHECK(want.n > 1000 && want.n == again.n && memcmp(want.data, again.data, want.n * sizeof(float)) == 0);
    tk_ctx_free(ctx);
    int64_t nparams = tk_block_count_params(model);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    worker w[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        w[i] = (worker){ model, &b, &want, 0, 0, &barrier };
        pthread_create(&th[i], NULL, run_worker, &w[i]);
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < 2; i++)
        TK_CHECK_MSG(w[i].mismatches == 0 && w[i].failures == 0, "thread %d: %d mismatches, %d failures", i,
                     w[i].mismatches, w[i].failures);
    TK_CHECK(tk_block_count_params(model) == nparams); /* nothing was written */
    free(want.data);
    free(again.data);
    free_batch(&b);
    tk_block_release(model);
}

typedef struct race {
    tk_block *model;
    const batch *b;
    pthread_barrier_t *barrier;
    result r;
    bool ok;
} race;

static void *run_race(void *arg) {
    race *w = arg;
    tk_ctx *ctx = tk_ctx_new(1);
    pthread_barrier_wait(w->barrier);
    w->ok = step(ctx, w->model, w->b, &w->r);
    if (!w->ok) printf("    race: %s\n", tk_ctx_error(ctx));
    tk_ctx_free(ctx);
    return NULL;
}

static int count_dense_params(void *ud, const char *path, tk_tensor *param, bool trainable) {
    (*(int *)ud)++;
    return 0;
}

static void test_threads_lazy_build_race(void) {
    batch b = make_batch();
    /* the reference: the same model built eagerly (same seeds, same weights) */
    tk_block *eager = make_model(16);
    tk_ctx *ctx = tk_ctx_new(1);
    result want = { 0 };
    TK_CHECK_MSG(step(ctx, eager, &b, &want), "%s", tk_ctx_error(ctx));
    tk_ctx_free(ctx);
    int eager_params = 0;
    tk_block_visit_params(eager, true, count_dense_params, &eager_params);
    for (int round = 0; round < 20; round++) {
        tk_block *model = make_model(0);
        TK_CHECK(!tk_block_is_built(model));
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, 2);
        race w[2];
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            w[i] = (race){ model, &b, &barrier, { 0 }, false };
            pthread_create(&th[i], NULL, run_race, &w[i]);
        }
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&barrier);
        int nparams = 0;
        tk_block_visit_params(model, true, count_dense_params, &nparams);
        TK_CHECK(tk_block_is_built(model));
        TK_CHECK_MSG(nparams == eager_params, "round %d: %d parameters, want %d", round, nparams, eager_params);
        tk_block *d0 = tk_block_find(model, "dense_0");
        TK_CHECK(d0 && tk_block_num_params(d0) == 2);
        for (int i = 0; i < 2; i++) {
            TK_CHECK(w[i].ok);
            TK_CHECK_MSG(w[i].r.n == want.n && memcmp(w[i].r.data, want.data, want.n * sizeof(float)) == 0,
                         "round %d thread %d differs from the eagerly built model", round, i);
            free(w[i].r.data);
        }
        tk_block_release(model);
    }
    free(want.data);
    tk_block_release(eager);
    free_batch(&b);
}

/* After a warm-up, a training step of the model makes no malloc in its context. */
static void test_steady_state_step(void) {
    tk_block *model = make_model(0);
    batch b = make_batch();
    tk_ctx *ctx = tk_ctx_new(1);
    result r = { 0 };
    for (int i = 0; i < 3; i++) TK_CHECK(step(ctx, model, &b, &r));
    uint64_t allocs = tk_ctx_alloc_count(ctx);
    size_t cap = tk_ctx_arena_capacity(ctx);
    for (int i = 0; i < 20; i++) TK_CHECK(step(ctx, model, &b, &r));
    TK_CHECK_MSG(tk_ctx_alloc_count(ctx) == allocs, "%llu mallocs, then %llu", (unsigned long long)allocs,
                 (unsigned long long)tk_ctx_alloc_count(ctx));
    TK_CHECK(tk_ctx_arena_capacity(ctx) == cap);
    free(r.data);
    tk_ctx_free(ctx);
    free_batch(&b);
    tk_block_release(model);
}

int main(void) {
    TK_RUN(test_steady_state_step);
    TK_RUN(test_threads_shared_model);
    TK_RUN(test_threads_lazy_build_race);
    return tk_test_summary();
}
