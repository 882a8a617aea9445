/* A two-tower training step on two threads: the query tower and the first half of the
 * loss's rows on the calling thread, the item tower and the second half on a worker
 * thread, each tower in its own context, every product a single-threaded sgemm.
 *
 * On small shapes (batch 1024, layers of 256 and 128) OpenBLAS splits a product over two
 * threads poorly; two single-threaded streams, one per core, do much more work, and
 * everything between the products (activations, gathers, scatters, norms) runs on both
 * cores too instead of one. The towers are independent until the logits, and blocks and
 * parameters are read-only in a forward pass (towerkit.h), so each tower runs in its own
 * context. One step, four phases on both threads:
 *   1. forward: each thread the forward of its tower and of `post` (the l2 norm);
 *   2. loss: the in-batch loss in parts (tk_rl_*, retrieval.c), planned in a third
 *      context by the caller; each thread the logits, masking and softmax of half the
 *      rows (B/2 x B each);
 *   3. backward: after the caller sums the two halves and checks the loss, the query
 *      thread the gradient of the query output (E C, B x B x D) and the item thread that
 *      of the item output (E^T Qr, as many FLOPs), each then the rest of its tower's tape
 *      (and its added losses, seeded with 1) and the coalescing of its sparse gradients;
 *      the item thread also takes the last rows of E C, as many as balance the longer
 *      query tape (measured each step, balance_tail);
 *   4. update: the caller checks and resolves every gradient for one optimizer step over
 *      both towers (tk_optim_prepare_contexts: nothing written yet), then each thread
 *      applies the rule to its tower's parameters (disjoint: the towers share none).
 * The BLAS thread count stays 1 for the whole step: no OpenBLAS threads to wake, and no
 * OpenBLAS buffers allocated per step. Same arithmetic as the single-context step, so
 * the same results up to the order of float sums (the loss adds two half sums). */
#include "ops_impl.h"

#include <math.h>
#include <pthread.h>
#include <time.h>

typedef enum phase { PHASE_FORWARD = 0, PHASE_LOSS, PHASE_BACKWARD, PHASE_UPDATE, PHASE_QUIT } phase;

struct tk_two_tower_trainer {
    tk_block *tower[2]; /* query, item */
    tk_block *post;
    tk_optim *opt;
    tk_ctx *ctx[2];
    tk_ctx *loss_ctx;
    /* the step being run */
    tk_value *in[2];
    tk_tensor *out[2];
    tk_rl_plan *plan;   /* the loss of the step (in loss_ctx) */
    double part[2];     /* each half's sum of w_b ce_b */
    float extra[2];     /* each tower's added losses (regularisation) */
    double norm[2];     /* each tower's gradient norm (a non-finite one stops the step) */
    int64_t ends[2];    /* the end of each tower's items in the optimizer's work list */
    /* the backward's balance: the item thread computes the query gradient's last `tail`
     * rows first (then signals tail_done = step), sized from the two sides' times */
    int64_t tail, fixed_tail; /* fixed_tail >= 0: set by tests, not balanced */
    uint64_t step, tail_done;
    double bwd_time[2], dq_row_time;
    pthread_cond_t tail_cv;
    /* the worker: runs side 1 of each phase */
    pthread_t worker;
    bool has_worker;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t posted, done; /* phases posted to the worker and finished by it */
    phase ph;
};

/* --- one side of a phase --- */

static void side_forward(tk_two_tower_trainer *t, int s) {
    tk_ctx *ctx = t->ctx[s];
    tk_value *v = tk_block_forward(ctx, t->tower[s], t->in[s]);
    if (v && t->post) v = tk_block_forward(ctx, t->post, v);
    tk_tensor *out = v ? tk_value_tensor(v) : NULL;
    if (v && !out && !ctx->failed) tk_ctx_fail(ctx, "the %s tower returned a tabular value, not a tensor", s ? "item" : "query");
    t->out[s] = out;
    tk_tensor *extra = out ? tk_ctx_added_loss(ctx) : NULL;
    t->extra[s] = extra ? tk_f32(extra)[0] : 0.0f;
}

/* The loss over this side's half of the rows. */
static void side_loss(tk_two_tower_trainer *t, int s) {
    int64_t B = t->out[0]->shape[0], half = B / 2;
    t->part[s] = tk_rl_forward_rows(t->plan, s ? half : 0, s ? B : half, s);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The item thread's share of the query gradient is done (or will not be: it failed). */
static void post_tail(tk_two_tower_trainer *t) {
    pthread_mutex_lock(&t->mu);
    t->tail_done = t->step;
    pthread_cond_broadcast(&t->tail_cv);
    pthread_mutex_unlock(&t->mu);
}

static void wait_tail(tk_two_tower_trainer *t) {
    pthread_mutex_lock(&t->mu);
    while (t->tail_done != t->step) pthread_cond_wait(&t->tail_cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

/* The gradient of this side's tower output (from the loss), then the tape backwards over
 * every node whose output got a gradient. The query tower's tape is the longer one (more
 * features, a wider first layer): the item thread computes the last `tail` rows of the
 * query output's gradient before its own (the rows are independent), and the query
 * thread waits for them before its tape. */
static void side_backward(tk_two_tower_trainer *t, int s) {
    tk_ctx *ctx = t->ctx[s];
    double t0 = now_s();
    int64_t B = t->out[0]->shape[0];
    if (s == 0) {
        tk_rl_backward_query(t->plan, 0, B - t->tail);
        if (B > t->tail) t->dq_row_time = (now_s() - t0) / (double)(B - t->tail);
        if (t->tail > 0) wait_tail(t);
    } else {
        tk_rl_backward_query(t->plan, B - t->tail, B);
        post_tail(t);
        tk_rl_backward_items(t->plan);
    }
    tk_tensor *extra = tk_ctx_added_loss(ctx);
    if (extra && extra->requires_grad) {
        tk_tensor *g = tk_ctx_grad_of(ctx, extra);
        if (!g) return;
        tk_f32(g)[0] += 1.0f;
    }
    for (int64_t i = ctx->ntape - 1; i >= 0 && !ctx->failed; i--) {
        tk_node *node = ctx->tape[i];
        if (node->out->grad && node->backward) node->backward(ctx, node);
    }
    /* coalesce the sparse gradients here, on this side's thread, and measure them */
    for (int64_t i = 0; i < ctx->nleaves && !ctx->failed; i++)
        if (ctx->leaves[i].alias->sparse && !tk_ctx_sparse_grad(ctx, ctx->leaves[i].source) && !ctx->failed)
            tk_ctx_fail(ctx, "cannot coalesce a sparse gradient");
    if (!ctx->failed) t->norm[s] = tk_clip_grad_norm(ctx, INFINITY);
    t->bwd_time[s] = now_s() - t0;
}

/* After a side-by-side backward: moves rows of the query gradient towards the thread that
 * finished first, half the imbalance at a time (damped), in multiples of 32 rows (whole
 * sgemm row blocks), at most half the batch. */
static void balance_tail(tk_two_tower_trainer *t, int64_t B) {
    if (!(t->dq_row_time > 0.0)) return;
    double rows = (t->bwd_time[0] - t->bwd_time[1]) / (2.0 * t->dq_row_time); /* to equalise */
    int64_t tail = t->tail + (int64_t)(rows / 2.0);
    tail = (tail + 16) / 32 * 32;
    if (tail < 0) tail = 0;
    if (tail > B / 2) tail = B / 2 / 32 * 32;
    t->tail = tail;
}

/* The optimizer's rule over this side's tower (prepared by the caller), then the
 * context's deferred updates. */
static void side_update(tk_two_tower_trainer *t, int s) {
    tk_optim_apply_range(t->opt, s ? t->ends[0] : 0, t->ends[s]);
    tk_ctx_apply_updates(t->ctx[s]);
}

static void run_side(tk_two_tower_trainer *t, phase ph, int s) {
    if (ph == PHASE_UPDATE) {
        side_update(t, s); /* prepared: both contexts are fine */
    } else if (t->ctx[s]->failed) {
        if (ph == PHASE_BACKWARD && s == 1) post_tail(t); /* the query thread may wait for it */
    } else if (ph == PHASE_FORWARD) {
        side_forward(t, s);
    } else if (ph == PHASE_LOSS) {
        side_loss(t, s);
    } else {
        side_backward(t, s);
    }
}

static void *worker_main(void *arg) {
    tk_two_tower_trainer *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (t->done == t->posted) pthread_cond_wait(&t->cv, &t->mu);
        phase ph = t->ph;
        pthread_mutex_unlock(&t->mu);
        if (ph == PHASE_QUIT) return NULL;
        run_side(t, ph, 1);
        pthread_mutex_lock(&t->mu);
        t->done++;
        pthread_cond_broadcast(&t->cv);
    }
}

/* Runs a phase on both sides: side 1 on the worker and side 0 here, or both here. */
static void run_phase(tk_two_tower_trainer *t, phase ph, bool parallel) {
    if (!parallel) {
        run_side(t, ph, 0);
        run_side(t, ph, 1);
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->ph = ph;
    t->posted++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    run_side(t, ph, 0);
    pthread_mutex_lock(&t->mu);
    while (t->done != t->posted) pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

/* --- the trainer --- */

/* Parameter lists for the checks of tk_two_tower_trainer_new. */
typedef struct param_list {
    const tk_tensor **p;
    int64_t n, cap;
    bool oom;
} param_list;

static int add_param(void *ud, const char *path, tk_tensor *param, bool trainable) {
    param_list *l = ud;
    if (!trainable) return 0;
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        const tk_tensor **p = realloc(l->p, (size_t)cap * sizeof *p);
        if (!p) {
            l->oom = true;
            return 1;
        }
        l->p = p;
        l->cap = cap;
    }
    l->p[l->n++] = param;
    return 0;
}

/* Whether the towers can train in two contexts: no trainable parameter shared by the
 * towers, none in post. Sets tk_last_error when not. */
static bool towers_separate(tk_block *q, tk_block *it, tk_block *post) {
    param_list a = {0}, b = {0}, c = {0};
    tk_block_visit_params(q, false, add_param, &a);
    tk_block_visit_params(it, false, add_param, &b);
    if (post) tk_block_visit_params(post, false, add_param, &c);
    bool ok = !a.oom && !b.oom && !c.oom;
    if (!ok) tk_set_error("two_tower_trainer: out of memory");
    if (ok && c.n > 0) {
        tk_set_error("two_tower_trainer: the post block has trainable parameters");
        ok = false;
    }
    for (int64_t i = 0; ok && i < a.n; i++)
        for (int64_t j = 0; ok && j < b.n; j++)
            if (a.p[i] == b.p[j]) {
                tk_set_error("two_tower_trainer: the towers share a trainable parameter (a shared embedding table)");
                ok = false;
            }
    free(a.p);
    free(b.p);
    free(c.p);
    return ok;
}

tk_two_tower_trainer *tk_two_tower_trainer_new(tk_block *query_tower, tk_block *item_tower, tk_block *post,
                                               tk_optim *opt, uint64_t seed) {
    if (!query_tower || !item_tower || !opt) {
        tk_set_error("two_tower_trainer: the query tower, the item tower and the optimizer are required");
        return NULL;
    }
    if (!towers_separate(query_tower, item_tower, post)) return NULL;
    tk_two_tower_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        tk_set_error("two_tower_trainer: out of memory");
        return NULL;
    }
    t->ctx[0] = tk_ctx_new(seed);
    t->ctx[1] = tk_ctx_new(seed + 1);
    t->loss_ctx = tk_ctx_new(seed + 2);
    if (!t->ctx[0] || !t->ctx[1] || !t->loss_ctx) {
        tk_two_tower_trainer_free(t);
        tk_set_error("two_tower_trainer: out of memory");
        return NULL;
    }
    t->tower[0] = query_tower;
    t->tower[1] = item_tower;
    t->post = post;
    tk_block_retain(query_tower);
    tk_block_retain(item_tower);
    if (post) tk_block_retain(post);
    t->opt = opt;
    t->fixed_tail = -1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    pthread_cond_init(&t->tail_cv, NULL);
    t->has_worker = pthread_create(&t->worker, NULL, worker_main, t) == 0; /* else serial */
    return t;
}

void tk_two_tower_trainer_free(tk_two_tower_trainer *t) {
    if (!t) return;
    if (t->has_worker) {
        pthread_mutex_lock(&t->mu);
        t->ph = PHASE_QUIT;
        t->posted++;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->worker, NULL);
    }
    if (t->tower[0]) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        pthread_cond_destroy(&t->tail_cv);
    }
    tk_ctx_free(t->ctx[0]);
    tk_ctx_free(t->ctx[1]);
    tk_ctx_free(t->loss_ctx);
    tk_block_release(t->tower[0]);
    tk_block_release(t->tower[1]);
    tk_block_release(t->post);
    free(t);
}

void tk_two_tower_trainer_fix_tail(tk_two_tower_trainer *t, int64_t rows) {
    if (t) t->fixed_tail = rows < 0 ? -1 : rows;
}

tk_ctx *tk_two_tower_trainer_ctx(tk_two_tower_trainer *t, int tower) {
    if (!t) return NULL;
    return tower == 0 ? t->ctx[0] : tower == 1 ? t->ctx[1] : t->loss_ctx;
}

void tk_two_tower_trainer_reset(tk_two_tower_trainer *t) {
    for (int s = 0; s < 3; s++) {
        tk_ctx *ctx = s < 2 ? t->ctx[s] : t->loss_ctx;
        tk_ctx_reset(ctx);
        tk_ctx_set_training(ctx, true);
        tk_ctx_set_grad_enabled(ctx, true);
    }
    t->out[0] = t->out[1] = NULL;
}

/* The first failed context's message, in the loss context and tk_last_error. */
static tk_status step_failed(tk_two_tower_trainer *t) {
    const char *names[3] = {"query tower", "item tower", "loss"};
    for (int s = 0; s < 3; s++) {
        tk_ctx *ctx = s < 2 ? t->ctx[s] : t->loss_ctx;
        if (ctx->failed) {
            tk_set_error("two-tower step: %s: %s", names[s], ctx->error);
            if (s < 2) tk_ctx_fail(t->loss_ctx, "%s: %s", names[s], ctx->error);
            return TK_ERROR;
        }
    }
    tk_set_error("two-tower step failed");
    return TK_ERROR;
}

tk_status tk_two_tower_trainer_step(tk_two_tower_trainer *t, tk_value *query_in, tk_value *item_in,
                                    const tk_retrieval_opts *opts, float *loss_out) {
    if (!t) {
        tk_set_error("two-tower step: trainer is NULL");
        return TK_ERROR;
    }
    if (loss_out) *loss_out = NAN;
    if (!query_in || !item_in) {
        tk_set_error("two-tower step: an input is NULL");
        return TK_ERROR;
    }
    if (opts && opts->negatives) {
        tk_set_error("two-tower step: sampled negatives are not supported here; use tk_retrieval_loss");
        return TK_ERROR;
    }
    t->in[0] = query_in;
    t->in[1] = item_in;
    t->plan = NULL;
    int threads = tk_get_num_threads();
    bool side_by_side = t->has_worker && threads >= 2;
    if (threads != 1) tk_set_num_threads(1); /* every product of the step is single-threaded */

    tk_status st = TK_OK;
    run_phase(t, PHASE_FORWARD, side_by_side);
    if (t->ctx[0]->failed || t->ctx[1]->failed) {
        st = step_failed(t);
        goto out;
    }
    /* the loss: planned here (validation, arena buffers), its rows on both threads */
    if (!(t->plan = tk_rl_prepare(t->loss_ctx, t->out[0], t->out[1], opts, 2))) {
        st = step_failed(t);
        goto out;
    }
    run_phase(t, PHASE_LOSS, side_by_side);
    int64_t B = t->out[0]->shape[0];
    float value = (float)((t->part[0] + t->part[1]) / (double)B) + t->extra[0] + t->extra[1];
    if (loss_out) *loss_out = value;
    if (!isfinite(value)) goto out; /* the caller sees the loss; nothing is updated */
    /* the gradients of the two outputs, written by the two threads */
    float *dq = tk_op_grad(t->loss_ctx, t->out[0]);
    float *dc = tk_op_grad(t->loss_ctx, t->out[1]);
    if (!dq && !dc && !t->loss_ctx->failed)
        tk_ctx_fail(t->loss_ctx, "backward: the loss does not depend on any tensor that requires gradients");
    if (t->loss_ctx->failed || !tk_rl_backward_begin(t->loss_ctx, t->plan, 1.0, dq, dc, NULL)) {
        st = step_failed(t);
        goto out;
    }
    t->step++;
    if (t->fixed_tail >= 0) t->tail = t->fixed_tail < B ? t->fixed_tail : B;
    if (!side_by_side || t->tail > B) t->tail = 0; /* serial: the query side does every row */
    run_phase(t, PHASE_BACKWARD, side_by_side);
    if (side_by_side && t->fixed_tail < 0) balance_tail(t, B);
    if (t->ctx[0]->failed || t->ctx[1]->failed) {
        st = step_failed(t);
        goto out;
    }
    if (!isfinite(t->norm[0]) || !isfinite(t->norm[1])) { /* as a NaN loss: nothing is updated */
        if (loss_out) *loss_out = NAN;
        goto out;
    }
    const tk_block *blocks[2] = {t->tower[0], t->tower[1]};
    if (tk_optim_prepare_contexts(t->opt, 2, t->ctx, blocks, t->ends) != TK_OK) {
        st = step_failed(t);
        goto out;
    }
    run_phase(t, PHASE_UPDATE, side_by_side);
out:
    if (threads != 1) tk_set_num_threads(threads);
    return st;
}
