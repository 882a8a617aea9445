/* A two-tower training step on the core's thread pool (parallel.c): the two towers side
 * by side, each in its own context, every product a single-threaded sgemm.
 *
 * On small shapes (batch 1024, layers of 256 and 128) a product split over two cores
 * runs poorly; two single-threaded streams, one per core, do much more work, and
 * everything between the products (activations, gathers, scatters, norms) runs on both
 * cores too instead of one. The towers are independent until the logits, and blocks and
 * parameters are read-only in a forward pass (towerkit.h), so each tower runs in its own
 * context. One step, four phases, each a job of the pool:
 *   1. forward: two tasks, each the forward of its tower and of `post` (the l2 norm);
 *   2. loss: the in-batch loss in parts (tk_rl_*, retrieval.c), planned in a third
 *      context by the caller; one task per block of rows (logits, masking and
 *      softmax), the row sums added in block order;
 *   3. backward: after the caller checks the loss, the query task takes blocks of the
 *      query output's gradient (E C) from the front and the item task takes blocks from
 *      the back, as many as balance the longer query tape (measured each step), then
 *      the item output's gradient (E^T Qr); each then runs the rest of its tower's tape
 *      (and its added losses, seeded with 1) and coalesces its sparse gradients; tasks
 *      beyond the two (more threads) take query-gradient blocks from the front;
 *   4. update: the caller checks and resolves every gradient for one optimizer step over
 *      both towers (tk_optim_prepare_contexts: nothing written yet), then two tasks
 *      apply the rule to their tower's parameters (disjoint: the towers share none).
 * Determinism: the blocks of the loss and of the query gradient are cut the same way
 * whatever the thread count or timing (a block is one sgemm call of a fixed shape), so
 * which thread computes a block, and the measured balance, never change a bit. With up
 * to three threads every product runs whole on one thread and a step gives the same bits
 * as with one; from four threads on, each tower's context splits its large products over
 * half the threads (tk_ctx_set_num_threads), which may change the last bits. */
#include "ops_impl.h"

#include <math.h>
#include <pthread.h>
#include <time.h>

/* Rows per block of the loss and of the query gradient: an eighth of the batch, rounded
 * up to a multiple of 16 (whole register blocks of every OpenBLAS x86 kernel), at most
 * 128 (from there on, repacking the shared operand per block costs a few percent of the
 * product), enough blocks to balance the two sides. It depends on the batch alone. */
static int64_t block_size(int64_t B) {
    int64_t rows = ((B + 7) / 8 + 15) / 16 * 16;
    return rows < 128 ? rows : 128;
}

typedef enum phase { PHASE_FORWARD = 0, PHASE_LOSS, PHASE_BACKWARD, PHASE_UPDATE } phase;

struct tk_two_tower_trainer {
    tk_block *tower[2]; /* query, item */
    tk_block *post;
    tk_optim *opt;
    tk_ctx *ctx[2];
    tk_ctx *loss_ctx;
    /* the step being run */
    phase ph;
    int threads;
    tk_value *in[2];
    tk_tensor *out[2];
    tk_rl_plan *plan; /* the loss of the step (in loss_ctx) */
    int64_t block;    /* rows per block of the loss and the query gradient */
    int64_t nblocks;  /* blocks of the batch */
    double *part;     /* [nblocks]: each block's sum of w_b ce_b (loss_ctx's arena) */
    float extra[2];   /* each tower's added losses (regularisation) */
    double norm[2];   /* each tower's gradient norm (a non-finite one stops the step) */
    int64_t ends[2];  /* the end of each tower's items in the optimizer's work list */
    /* the query gradient's blocks: [0, front) taken from the front, [back, nblocks) from
     * the back (by the item task, at most `tail` of them), `done` finished */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t front, back, done;
    int64_t tail, fixed_tail; /* fixed_tail >= 0: set by tests, not balanced */
    double bwd_time[2], block_time;
};

static int64_t batch_rows(const tk_two_tower_trainer *t) { return t->out[0]->shape[0]; }

/* --- one task of a phase --- */

static void task_forward(tk_two_tower_trainer *t, int s) {
    tk_ctx *ctx = t->ctx[s];
    tk_value *v = tk_block_forward(ctx, t->tower[s], t->in[s]);
    if (v && t->post) v = tk_block_forward(ctx, t->post, v);
    tk_tensor *out = v ? tk_value_tensor(v) : NULL;
    if (v && !out && !ctx->failed)
        tk_ctx_fail(ctx, "the %s tower returned a tabular value, not a tensor", s ? "item" : "query");
    t->out[s] = out;
    tk_tensor *extra = out ? tk_ctx_added_loss(ctx) : NULL;
    t->extra[s] = extra ? tk_f32(extra)[0] : 0.0f;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The next block of the query gradient from the front, or from the back for the item
 * task while it has taken fewer than `tail`; -1 when none is left to take. */
static int64_t take_block(tk_two_tower_trainer *t, bool from_back, int64_t *taken) {
    int64_t b = -1;
    pthread_mutex_lock(&t->mu);
    if (t->front < t->back && (!from_back || *taken < t->tail)) b = from_back ? --t->back : t->front++;
    pthread_mutex_unlock(&t->mu);
    if (b >= 0) (*taken)++;
    return b;
}

/* The rows [*r0, *r1) of block b. */
static void block_rows(const tk_two_tower_trainer *t, int64_t b, int64_t *r0, int64_t *r1) {
    int64_t B = batch_rows(t);
    *r0 = b * t->block;
    *r1 = *r0 + t->block < B ? *r0 + t->block : B;
}

/* Computes block b of the query gradient and counts it done. */
static void run_block(tk_two_tower_trainer *t, int64_t b) {
    int64_t r0, r1;
    block_rows(t, b, &r0, &r1);
    tk_rl_backward_query(t->plan, r0, r1);
    pthread_mutex_lock(&t->mu);
    if (++t->done == t->nblocks) pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Waits until every block of the query gradient is done: the ones not done yet are
 * being computed by running tasks. */
static void wait_blocks(tk_two_tower_trainer *t) {
    pthread_mutex_lock(&t->mu);
    while (t->done < t->nblocks) pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

/* The gradient of this side's tower output (from the loss), then the tape backwards over
 * every node whose output got a gradient. The query tower's tape is the longer one (more
 * features, a wider first layer), so the item task takes the last blocks of the query
 * output's gradient before its own (the rows are independent), and the query task
 * waits for all blocks before its tape. */
static void task_backward(tk_two_tower_trainer *t, int s) {
    tk_ctx *ctx = t->ctx[s];
    double t0 = now_s();
    int64_t taken = 0, b;
    if (s == 0) {
        while ((b = take_block(t, false, &taken)) >= 0) run_block(t, b);
        if (taken > 0) t->block_time = (now_s() - t0) / (double)taken;
        wait_blocks(t);
    } else {
        while ((b = take_block(t, true, &taken)) >= 0) run_block(t, b);
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

/* After a backward: moves blocks of the query gradient towards the task that finished
 * first, half the imbalance at a time (damped), at most half the blocks. Only the work's
 * placement changes, never its arithmetic. */
static void balance_tail(tk_two_tower_trainer *t) {
    if (!(t->block_time > 0.0)) return;
    double blocks = (t->bwd_time[0] - t->bwd_time[1]) / (2.0 * t->block_time); /* to equalise */
    int64_t tail = t->tail + (int64_t)lround(blocks / 2.0);
    if (tail < 0) tail = 0;
    if (tail > t->nblocks / 2) tail = t->nblocks / 2;
    t->tail = tail;
}

static void phase_task(void *arg, int64_t task, int slot) {
    tk_two_tower_trainer *t = arg;
    int s = task < 2 ? (int)task : -1; /* the tower of a two-sided task */
    switch (t->ph) {
    case PHASE_FORWARD:
        task_forward(t, s);
        break;
    case PHASE_LOSS: { /* one block of rows; slot picks the scratch */
        int64_t r0, r1;
        block_rows(t, task, &r0, &r1);
        t->part[task] = tk_rl_forward_rows(t->plan, r0, r1, slot);
        break;
    }
    case PHASE_BACKWARD:
        if (s >= 0) {
            if (!t->ctx[s]->failed) task_backward(t, s);
        } else { /* a further thread: blocks from the front */
            int64_t taken = 0, b;
            while ((b = take_block(t, false, &taken)) >= 0) run_block(t, b);
        }
        break;
    case PHASE_UPDATE: /* prepared: both contexts are fine */
        tk_optim_apply_range(t->opt, s ? t->ends[0] : 0, t->ends[s]);
        tk_ctx_apply_updates(t->ctx[s]);
        break;
    }
}

static void run_phase(tk_two_tower_trainer *t, phase ph, int64_t ntasks) {
    t->ph = ph;
    tk_parallel_run(ntasks, t->threads, phase_task, t);
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
    param_list a = { 0 }, b = { 0 }, c = { 0 };
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
    return t;
}

void tk_two_tower_trainer_free(tk_two_tower_trainer *t) {
    if (!t) return;
    if (t->tower[0]) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
    }
    tk_ctx_free(t->ctx[0]);
    tk_ctx_free(t->ctx[1]);
    tk_ctx_free(t->loss_ctx);
    tk_block_release(t->tower[0]);
    tk_block_release(t->tower[1]);
    tk_block_release(t->post);
    free(t);
}

void tk_two_tower_trainer_fix_tail(tk_two_tower_trainer *t, int64_t blocks) {
    if (t) t->fixed_tail = blocks < 0 ? -1 : blocks;
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
    const char *names[3] = { "query tower", "item tower", "loss" };
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
    /* Each tower's context may split its large products over half the threads (from four
     * threads on: with two or three, the towers side by side already fill them). */
    t->threads = tk_get_num_threads();
    for (int s = 0; s < 2; s++) tk_ctx_set_num_threads(t->ctx[s], t->threads >= 4 ? t->threads / 2 : 1);

    run_phase(t, PHASE_FORWARD, 2);
    if (t->ctx[0]->failed || t->ctx[1]->failed) return step_failed(t);
    /* the loss: planned here (validation, arena buffers), its row blocks on the threads */
    int64_t B = batch_rows(t);
    t->block = block_size(B);
    t->nblocks = (B + t->block - 1) / t->block;
    /* a part's scratch a thread: the loss phase takes at most one thread a block */
    int parts = t->nblocks < t->threads ? (int)t->nblocks : t->threads;
    if (!(t->plan = tk_rl_prepare(t->loss_ctx, t->out[0], t->out[1], opts, parts))) return step_failed(t);
    if (!(t->part = tk_ctx_alloc(t->loss_ctx, (size_t)t->nblocks * sizeof *t->part))) return step_failed(t);
    run_phase(t, PHASE_LOSS, t->nblocks);
    double sum = 0.0;
    for (int64_t b = 0; b < t->nblocks; b++) sum += t->part[b]; /* in block order */
    float value = (float)(sum / (double)B) + t->extra[0] + t->extra[1];
    if (loss_out) *loss_out = value;
    if (!isfinite(value)) return TK_OK; /* the caller sees the loss; nothing is updated */
    /* the gradients of the two outputs, written by the tasks */
    float *dq = tk_op_grad(t->loss_ctx, t->out[0]);
    float *dc = tk_op_grad(t->loss_ctx, t->out[1]);
    if (!dq && !dc && !t->loss_ctx->failed)
        tk_ctx_fail(t->loss_ctx, "backward: the loss does not depend on any tensor that requires gradients");
    if (t->loss_ctx->failed || !tk_rl_backward_begin(t->loss_ctx, t->plan, 1.0, dq, dc, NULL)) return step_failed(t);
    t->front = t->done = 0;
    t->back = t->nblocks;
    if (t->fixed_tail >= 0) t->tail = t->fixed_tail;
    run_phase(t, PHASE_BACKWARD, t->threads > 2 ? t->threads : 2);
    if (t->fixed_tail < 0) balance_tail(t);
    if (t->ctx[0]->failed || t->ctx[1]->failed) return step_failed(t);
    if (!isfinite(t->norm[0]) || !isfinite(t->norm[1])) { /* as a NaN loss: nothing is updated */
        if (loss_out) *loss_out = NAN;
        return TK_OK;
    }
    const tk_block *blocks[2] = { t->tower[0], t->tower[1] };
    if (tk_optim_prepare_contexts(t->opt, 2, t->ctx, blocks, t->ends) != TK_OK) return step_failed(t);
    run_phase(t, PHASE_UPDATE, 2);
    return TK_OK;
}
