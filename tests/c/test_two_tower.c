/* tk_two_tower_trainer (the towers side by side, each in its own context) against the
 * same steps run in one context, tk_optim_step_contexts, the refusals (shared tables,
 * non-finite gradients), and steady-state steps that allocate nothing. */
#include "tk_test.h"
#include "internal.h"

#include <pthread.h>

#define B 100 /* seven blocks of 16 rows in the trainer, the last one of 4 */
#define CARD 40

static const tk_init UNIFORM = { .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.5f, .b = 0.5f };

/* A tower: embeddings of `id_name` (its own table, or `shared` when given) plus the
 * continuous `cont_name`, then dense 16 relu, dense 8. */
static tk_block *make_tower(const char *name, const char *id_name, const char *cont_name, const char *table,
                            uint64_t seed) {
    tk_block *t = tk_sequential_new(name);
    tk_block *e = tk_embeddings_new("embeddings");
    tk_embeddings_add_feature(e, id_name, table, CARD, 6, TK_COMBINER_MEAN, UNIFORM, seed);
    tk_embeddings_add_continuous(e, cont_name);
    tk_block *d0 = tk_dense_new("dense_0", 7, 16, TK_ACT_RELU, true, tk_init_default_kernel(), UNIFORM, seed + 1);
    tk_block *d1 = tk_dense_new("dense_1", 16, 8, TK_ACT_LINEAR, true, tk_init_default_kernel(), UNIFORM, seed + 2);
    tk_sequential_append(t, e); /* retains */
    tk_sequential_append(t, d0);
    tk_sequential_append(t, d1);
    tk_block_release(e);
    tk_block_release(d0);
    tk_block_release(d1);
    return t;
}

typedef struct batch {
    tk_tensor *uid, *uc, *iid, *ic;
} batch;

static batch make_batch(int step) {
    batch b = { tk_tensor_new_1d(TK_I64, B), tk_tensor_new_1d(TK_F32, B), tk_tensor_new_1d(TK_I64, B),
                tk_tensor_new_1d(TK_F32, B) };
    for (int i = 0; i < B; i++) {
        tk_i64(b.uid)[i] = (i * 7 + step * 3) % CARD;
        tk_i64(b.iid)[i] = (i * i + step) % 13; /* repeated rows */
        tk_f32(b.uc)[i] = (float)((i + step) % 5) / 5.0f;
        tk_f32(b.ic)[i] = (float)((i * 3 + step) % 7) / 7.0f;
    }
    return b;
}

static void free_batch(batch *b) {
    tk_tensor_release(b->uid);
    tk_tensor_release(b->uc);
    tk_tensor_release(b->iid);
    tk_tensor_release(b->ic);
}

static tk_value *batch_value(tk_ctx *ctx, const batch *b) {
    tk_value *v = tk_value_table(ctx);
    tk_value_set(ctx, v, "user_id", b->uid);
    tk_value_set(ctx, v, "user_x", b->uc);
    tk_value_set(ctx, v, "item_id", b->iid);
    tk_value_set(ctx, v, "item_x", b->ic);
    return v;
}

/* The trainable parameters of a block, in visiting order. */
typedef struct plist {
    tk_tensor *p[32];
    int32_t n;
} plist;

static int collect(void *ud, const char *path, tk_tensor *param, bool trainable) {
    plist *l = ud;
    if (trainable && l->n < 32) l->p[l->n++] = param;
    return 0;
}

static plist params_of(const tk_block *b) {
    plist l = { { 0 }, 0 };
    tk_block_visit_params(b, false, collect, &l);
    return l;
}

typedef struct model {
    tk_block *q, *i, *post;
    tk_optim *opt;
} model;

static model make_model(void) {
    model m = { make_tower("query", "user_id", "user_x", NULL, 10), make_tower("item", "item_id", "item_x", NULL, 20),
                tk_l2norm_block_new("l2"), tk_optim_adam_new(1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f) };
    return m;
}

static void free_model(model *m) {
    tk_block_release(m->q);
    tk_block_release(m->i);
    tk_block_release(m->post);
    tk_optim_free(m->opt);
}

/* The reference step: both towers, the loss and the update in one context. */
static float reference_step(model *m, tk_ctx *ctx, const batch *b, const tk_retrieval_opts *o) {
    tk_ctx_reset(ctx);
    tk_ctx_set_training(ctx, true);
    tk_value *in = batch_value(ctx, b);
    tk_tensor *q = tk_value_tensor(tk_block_forward(ctx, m->post, tk_block_forward(ctx, m->q, in)));
    tk_tensor *c = tk_value_tensor(tk_block_forward(ctx, m->post, tk_block_forward(ctx, m->i, in)));
    tk_tensor *loss = tk_retrieval_loss(ctx, q, c, o);
    TK_CHECK_MSG(loss && tk_backward(ctx, loss) == TK_OK, "%s", tk_ctx_error(ctx));
    plist a = params_of(m->q), b2 = params_of(m->i);
    tk_tensor *params[64];
    int32_t n = 0;
    for (int32_t k = 0; k < a.n; k++) params[n++] = a.p[k];
    for (int32_t k = 0; k < b2.n; k++) params[n++] = b2.p[k];
    TK_CHECK(tk_optim_step(m->opt, ctx, n, params) == TK_OK);
    return tk_f32(loss)[0];
}

static float trainer_step(tk_two_tower_trainer *t, const batch *b, const tk_retrieval_opts *o) {
    tk_two_tower_trainer_reset(t);
    float loss = NAN;
    tk_status st = tk_two_tower_trainer_step(t, batch_value(tk_two_tower_trainer_ctx(t, 0), b),
                                             batch_value(tk_two_tower_trainer_ctx(t, 1), b), o, &loss);
    TK_CHECK_MSG(st == TK_OK, "%s", tk_last_error());
    return loss;
}

static double max_param_diff(const tk_block *a, const tk_block *b) {
    plist pa = params_of(a), pb = params_of(b);
    TK_CHECK(pa.n == pb.n && pa.n > 0);
    double worst = 0;
    for (int32_t j = 0; j < pa.n && j < pb.n; j++) {
        tk_tensor *x = pa.p[j], *y = pb.p[j];
        TK_CHECK(x->numel == y->numel);
        for (int64_t k = 0; k < x->numel && k < y->numel; k++) {
            double d = fabs((double)tk_f32(x)[k] - tk_f32(y)[k]);
            if (d > worst) worst = d;
        }
    }
    return worst;
}

/* The options of the loss by mode: plain, with false-negative masking, and (mode 2) with
 * hard negatives, weights and a logQ correction (every row-wise option of the loss, whose
 * rows the trainer splits into blocks). */
typedef struct loss_case {
    tk_retrieval_opts o;
    tk_tensor *w, *logq;
} loss_case;

static loss_case make_loss_case(int mode, const batch *b) {
    loss_case c = { { .temperature = 0.1f, .item_ids = mode ? b->iid : NULL },
                    tk_tensor_new_1d(TK_F32, B),
                    tk_tensor_new_1d(TK_F32, B) };
    for (int i = 0; i < B; i++) {
        tk_f32(c.w)[i] = 0.5f + (float)(i % 3) * 0.25f;
        tk_f32(c.logq)[i] = -0.1f * (float)(i % 7);
    }
    if (mode == 2) {
        c.o.num_hard_negatives = 5;
        c.o.weights = c.w;
        c.o.item_logq = c.logq;
    }
    return c;
}

static void free_loss_case(loss_case *c) {
    tk_tensor_release(c->w);
    tk_tensor_release(c->logq);
}

/* Four trainer steps with `threads` threads and a fixed tail (-1: the measured balance);
 * the losses go to losses[4], the trained model is returned. */
static model train_four(int threads, int64_t tail, int mode, float *losses) {
    tk_set_num_threads(threads);
    model m = make_model();
    tk_two_tower_trainer *t = tk_two_tower_trainer_new(m.q, m.i, m.post, m.opt, 1);
    TK_CHECK_MSG(t, "%s", tk_last_error());
    tk_two_tower_trainer_fix_tail(t, tail);
    for (int step = 0; step < 4 && t; step++) {
        batch b = make_batch(step);
        loss_case c = make_loss_case(mode, &b);
        losses[step] = trainer_step(t, &b, &c.o);
        free_loss_case(&c);
        free_batch(&b);
    }
    tk_two_tower_trainer_free(t);
    return m;
}

/* Whether two models' parameters have the same bits. */
static bool same_params(const tk_block *a, const tk_block *b) {
    plist pa = params_of(a), pb = params_of(b);
    bool same = pa.n == pb.n;
    for (int32_t j = 0; same && j < pa.n; j++)
        same = pa.p[j]->numel == pb.p[j]->numel &&
               memcmp(pa.p[j]->data, pb.p[j]->data, (size_t)pa.p[j]->numel * sizeof(float)) == 0;
    return same;
}

/* The same losses and weights as the one-context steps, within float tolerance (the
 * trainer adds the loss's rows by blocks and groups the products by blocks), with 1 to 4
 * threads and the measured balance, and with 2 threads and the item task taking none,
 * one, half or all of the query gradient's blocks. */
static void test_matches_one_context(void) {
    const struct {
        int threads;
        int64_t tail;
    } runs[] = { { 1, -1 }, { 2, -1 }, { 3, -1 }, { 4, -1 }, { 2, 0 }, { 2, 1 }, { 2, 4 }, { 2, 7 } };
    for (size_t run = 0; run < TK_ARRAY_LEN(runs); run++) {
        for (int mode = 0; mode < 3; mode++) {
            float losses[4];
            model fast = train_four(runs[run].threads, runs[run].tail, mode, losses);
            model ref = make_model();
            tk_ctx *ctx = tk_ctx_new(1);
            for (int step = 0; step < 4; step++) {
                batch b = make_batch(step);
                loss_case c = make_loss_case(mode, &b);
                float l0 = reference_step(&ref, ctx, &b, &c.o);
                TK_CHECK_NEAR(losses[step], l0, 1e-5);
                free_loss_case(&c);
                free_batch(&b);
            }
            TK_CHECK_NEAR(max_param_diff(ref.q, fast.q), 0, 1e-5);
            TK_CHECK_NEAR(max_param_diff(ref.i, fast.i), 0, 1e-5);
            TK_CHECK(tk_optim_steps(fast.opt) == 4);
            tk_ctx_free(ctx);
            free_model(&ref);
            free_model(&fast);
        }
    }
    tk_set_num_threads(2);
}

/* Determinism by construction: the loss's and the query gradient's blocks are cut by the
 * batch size alone and each is one product of a fixed shape, whichever thread takes it;
 * with up to three threads every product runs whole on one thread. So a second run, the
 * thread count from 1 to 3, and where the item task's share of the blocks ends all give
 * the same bits. */
static void test_same_bits(void) {
    const struct {
        int threads;
        int64_t tail;
    } runs[] = { { 2, -1 }, { 2, -1 }, { 1, -1 }, { 3, -1 }, { 2, 0 }, { 2, 3 }, { 2, 7 } };
    for (int mode = 0; mode < 3; mode++) {
        float first[4];
        model a = train_four(runs[0].threads, runs[0].tail, mode, first);
        for (size_t run = 1; run < TK_ARRAY_LEN(runs); run++) {
            float losses[4];
            model b = train_four(runs[run].threads, runs[run].tail, mode, losses);
            TK_CHECK_MSG(memcmp(first, losses, sizeof first) == 0 && same_params(a.q, b.q) && same_params(a.i, b.i),
                         "mode %d, %d threads, tail %lld", mode, runs[run].threads, (long long)runs[run].tail);
            free_model(&b);
        }
        free_model(&a);
    }
    tk_set_num_threads(2);
}

/* After the first steps the three contexts allocate nothing. */
static void test_steady_state(void) {
    model m = make_model();
    tk_two_tower_trainer *t = tk_two_tower_trainer_new(m.q, m.i, m.post, m.opt, 1);
    batch b = make_batch(0);
    tk_retrieval_opts o = { .temperature = 0.1f, .item_ids = b.iid };
    for (int s = 0; s < 3; s++) trainer_step(t, &b, &o);
    uint64_t before = 0, after = 0;
    for (int c = 0; c < 3; c++) before += tk_ctx_alloc_count(tk_two_tower_trainer_ctx(t, c));
    for (int s = 0; s < 5; s++) trainer_step(t, &b, &o);
    for (int c = 0; c < 3; c++) after += tk_ctx_alloc_count(tk_two_tower_trainer_ctx(t, c));
    TK_CHECK(after == before);
    free_batch(&b);
    tk_two_tower_trainer_free(t);
    free_model(&m);
}

/* A NaN input gives a NaN gradient: the loss reads NaN and nothing changes. */
static void test_nan_gradient_updates_nothing(void) {
    model m = make_model();
    tk_two_tower_trainer *t = tk_two_tower_trainer_new(m.q, m.i, m.post, m.opt, 1);
    batch b = make_batch(0);
    tk_f32(b.ic)[5] = NAN;
    tk_tensor *kernel = params_of(m.i).p[1]; /* dense_0's kernel */
    tk_tensor *before = tk_tensor_clone(kernel);
    tk_retrieval_opts o = { .temperature = 0.1f };
    float loss = trainer_step(t, &b, &o);
    TK_CHECK(isnan(loss));
    TK_CHECK(memcmp(before->data, kernel->data, (size_t)kernel->numel * sizeof(float)) == 0);
    TK_CHECK(tk_optim_steps(m.opt) == 0);
    tk_tensor_release(before);
    free_batch(&b);
    tk_two_tower_trainer_free(t);
    free_model(&m);
}

static void test_refusals(void) {
    /* towers sharing an embedding table */
    tk_block *q = make_tower("query", "user_id", "user_x", "shared", 10);
    tk_block *shared = tk_sequential_new("item");
    tk_sequential_append(shared, q); /* the item tower reuses the query tower */
    tk_optim *opt = tk_optim_adam_new(1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f);
    TK_CHECK(tk_two_tower_trainer_new(q, shared, NULL, opt, 1) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "share a trainable parameter");
    TK_CHECK(tk_two_tower_trainer_new(NULL, q, NULL, opt, 1) == NULL);
    /* sampled negatives */
    model m = make_model();
    tk_two_tower_trainer *t = tk_two_tower_trainer_new(m.q, m.i, m.post, m.opt, 1);
    batch b = make_batch(0);
    tk_tensor *neg = tk_tensor_new_2d(TK_F32, 3, 8);
    tk_retrieval_opts o = { .temperature = 0.1f, .negatives = neg };
    tk_two_tower_trainer_reset(t);
    float loss;
    TK_CHECK(tk_two_tower_trainer_step(t, batch_value(tk_two_tower_trainer_ctx(t, 0), &b),
                                       batch_value(tk_two_tower_trainer_ctx(t, 1), &b), &o, &loss) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "negatives");
    /* an input a tower cannot read: the error names the tower */
    tk_two_tower_trainer_reset(t);
    tk_value *empty = tk_value_table(tk_two_tower_trainer_ctx(t, 1));
    o.negatives = NULL;
    TK_CHECK(tk_two_tower_trainer_step(t, batch_value(tk_two_tower_trainer_ctx(t, 0), &b), empty, &o, &loss) ==
             TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "item tower");
    TK_CHECK(tk_optim_steps(m.opt) == 0);
    tk_tensor_release(neg);
    free_batch(&b);
    tk_two_tower_trainer_free(t);
    free_model(&m);
    tk_block_release(shared);
    tk_block_release(q);
    tk_optim_free(opt);
}

/* tk_optim_step_contexts: one Adam step over two contexts equals tk_optim_step over one
 * context holding both gradients; a parameter with gradients in both is refused before
 * anything is written. */
static tk_tensor *dense_forward(tk_ctx *ctx, tk_block *blk, tk_tensor *x) {
    tk_value *out = tk_block_forward(ctx, blk, tk_value_of(ctx, x));
    return tk_sum(ctx, tk_square(ctx, tk_value_tensor(out)), -1, false);
}

static tk_tensor *dense_loss(tk_ctx *ctx, tk_block *blk, tk_tensor *x) {
    tk_tensor *loss = dense_forward(ctx, blk, x);
    TK_CHECK_MSG(loss && tk_backward(ctx, loss) == TK_OK, "%s", tk_ctx_error(ctx));
    return loss;
}

static void test_optim_step_contexts(void) {
    tk_tensor *x = tk_tensor_new_2d(TK_F32, 4, 3);
    for (int i = 0; i < 12; i++) tk_f32(x)[i] = (float)(i % 5) - 2.0f;
    tk_block *a[2], *b[2];
    for (int k = 0; k < 2; k++) { /* [k] = the copy trained one way or the other */
        a[k] = tk_dense_new("a", 3, 2, TK_ACT_TANH, true, tk_init_default_kernel(), UNIFORM, 1);
        b[k] = tk_dense_new("b", 3, 2, TK_ACT_LINEAR, true, tk_init_default_kernel(), UNIFORM, 2);
    }
    tk_optim *one = tk_optim_adam_new(0.1f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tk_optim *two = tk_optim_adam_new(0.1f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tk_ctx *c0 = tk_ctx_new(1), *c1 = tk_ctx_new(2), *both = tk_ctx_new(3);
    for (int step = 0; step < 3; step++) {
        tk_ctx_reset(both); /* one backward of both losses: a tape runs once */
        tk_tensor *la = dense_forward(both, a[0], x), *lb = dense_forward(both, b[0], x);
        TK_CHECK_MSG(tk_backward(both, tk_add(both, la, lb)) == TK_OK, "%s", tk_ctx_error(both));
        plist pa = params_of(a[0]), pb = params_of(b[0]);
        tk_tensor *params[4] = { pa.p[0], pa.p[1], pb.p[0], pb.p[1] };
        TK_CHECK(tk_optim_step(one, both, 4, params) == TK_OK);
        tk_ctx_reset(c0);
        tk_ctx_reset(c1);
        dense_loss(c0, a[1], x);
        dense_loss(c1, b[1], x);
        tk_ctx *cs[2] = { c0, c1 };
        const tk_block *bs[2] = { a[1], b[1] };
        TK_CHECK(tk_optim_step_contexts(two, 2, cs, bs) == TK_OK);
    }
    TK_CHECK(tk_optim_steps(two) == 3);
    TK_CHECK_NEAR(max_param_diff(a[0], a[1]), 0, 1e-6);
    TK_CHECK_NEAR(max_param_diff(b[0], b[1]), 0, 1e-6);
    /* the same block in both contexts */
    tk_ctx_reset(c0);
    tk_ctx_reset(c1);
    dense_loss(c0, a[1], x);
    dense_loss(c1, a[1], x);
    tk_tensor *kernel = params_of(a[1]).p[0], *saved = tk_tensor_clone(kernel);
    tk_ctx *cs[2] = { c0, c1 };
    const tk_block *bs[2] = { a[1], a[1] };
    TK_CHECK(tk_optim_step_contexts(two, 2, cs, bs) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "two contexts");
    TK_CHECK(memcmp(saved->data, kernel->data, (size_t)kernel->numel * sizeof(float)) == 0);
    TK_CHECK(tk_optim_steps(two) == 3);
    TK_CHECK(tk_optim_step_contexts(two, 0, cs, bs) == TK_ERROR);
    tk_tensor_release(saved);
    tk_ctx_free(c0);
    tk_ctx_free(c1);
    tk_ctx_free(both);
    tk_optim_free(one);
    tk_optim_free(two);
    for (int k = 0; k < 2; k++) {
        tk_block_release(a[k]);
        tk_block_release(b[k]);
    }
    tk_tensor_release(x);
}

/* tk_block_embed (batches on the pool's threads, written into one result) gives the rows of a
 * one-context forward; tk_unique_first gives the first row of each id. */
static void test_embed_and_unique(void) {
    model m = make_model();
    batch b = make_batch(1);
    tk_ctx *ctx = tk_ctx_new(1);
    tk_ctx_set_training(ctx, false);
    tk_ctx_set_grad_enabled(ctx, false);
    tk_tensor *ref = tk_value_tensor(tk_block_forward(ctx, m.post, tk_block_forward(ctx, m.i, batch_value(ctx, &b))));
    TK_CHECK_MSG(ref, "%s", tk_ctx_error(ctx));
    const char *names[2] = { "item_id", "item_x" };
    tk_tensor *cols[2] = { b.iid, b.ic };
    tk_tensor *first = NULL;
    for (int threads = 1; threads <= 4 && ref; threads++) {
        tk_set_num_threads(threads);
        tk_tensor *out = tk_block_embed(m.i, m.post, 2, names, cols, 7); /* 15 batches, the last of 2 */
        TK_CHECK_MSG(out && out->numel == ref->numel, "%s", tk_last_error());
        for (int64_t k = 0; out && k < out->numel; k++) TK_CHECK_NEAR(tk_f32(out)[k], tk_f32(ref)[k], 1e-6);
        /* each batch is computed the same way whichever thread takes it: the same bits
         * for every thread count */
        if (first && out)
            TK_CHECK_MSG(memcmp(first->data, out->data, (size_t)out->numel * sizeof(float)) == 0, "%d threads",
                         threads);
        if (!first)
            first = out;
        else
            tk_tensor_release(out);
    }
    tk_tensor_release(first);
    TK_CHECK(tk_block_embed(m.i, m.post, 1, names + 1, cols + 1, 5) == NULL); /* no item_id */
    tk_tensor *u = tk_unique_first(b.iid);
    bool seen[13] = { false };
    int64_t distinct = 0;
    for (int i = 0; i < B; i++) distinct += !seen[tk_i64(b.iid)[i]], seen[tk_i64(b.iid)[i]] = true;
    TK_CHECK(u && u->numel == distinct && distinct > 1);
    for (int64_t k = 0; u && k < u->numel; k++) {
        int64_t row = tk_i64(u)[k];
        for (int64_t r = 0; r < row; r++) TK_CHECK(tk_i64(b.iid)[r] != tk_i64(b.iid)[row]); /* first */
        if (k > 0) TK_CHECK(row > tk_i64(u)[k - 1]);
    }
    tk_tensor_release(u);
    tk_set_num_threads(2);
    tk_ctx_free(ctx);
    free_batch(&b);
    free_model(&m);
}

int main(void) {
    tk_test_run("trainer matches one-context steps", test_matches_one_context);
    tk_test_run("trainer: the same bits for any run, 1 to 3 threads, any balance", test_same_bits);
    tk_test_run("trainer steady-state steps allocate nothing", test_steady_state);
    tk_test_run("trainer: a NaN gradient updates nothing", test_nan_gradient_updates_nothing);
    tk_test_run("trainer refuses shared tables, negatives, bad inputs", test_refusals);
    tk_test_run("optim_step_contexts", test_optim_step_contexts);
    tk_test_run("block_embed and unique_first", test_embed_and_unique);
    return tk_test_summary();
}
