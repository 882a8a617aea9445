/* Contexts: arena tensors, the gradient tape, leaf aliases, deferred updates. */
#include "internal.h"
#include "simd.h"

#include <math.h>
#include <stdio.h>

tk_ctx *tk_ctx_new(uint64_t seed) {
    tk_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        tk_set_error("out of memory");
        return NULL;
    }
    tk_arena_init(&ctx->arena);
    tk_rng_seed(ctx->rng, seed);
    ctx->grad_enabled = true;
    return ctx;
}

static void release_updates(tk_ctx *ctx) {
    for (int64_t i = 0; i < ctx->nupdates; i++) tk_tensor_release(ctx->updates[i].dst);
    ctx->nupdates = 0;
}

static void release_kept(tk_ctx *ctx) {
    for (int64_t i = 0; i < ctx->nkept; i++) tk_tensor_release(ctx->kept[i]);
    ctx->nkept = 0;
}

tk_status tk_ctx_keep(tk_ctx *ctx, tk_tensor *t) {
    if (!t || !(t->flags & TK_TENSOR_HEAP)) return TK_OK;
    if (ctx->nkept == ctx->cap_kept) {
        int64_t cap = ctx->cap_kept ? ctx->cap_kept * 2 : 64;
        tk_tensor **k = realloc(ctx->kept, (size_t)cap * sizeof *k);
        if (!k) {
            tk_ctx_fail(ctx, "out of memory");
            return TK_ERROR;
        }
        ctx->mallocs++;
        ctx->kept = k;
        ctx->cap_kept = cap;
    }
    tk_tensor_retain(t);
    ctx->kept[ctx->nkept++] = t;
    return TK_OK;
}

void tk_ctx_free(tk_ctx *ctx) {
    if (!ctx) return;
    release_updates(ctx);
    release_kept(ctx);
    free(ctx->kept);
    tk_arena_free(&ctx->arena);
    free(ctx->leaves);
    free(ctx->updates);
    free(ctx);
}

void tk_ctx_reset(tk_ctx *ctx) {
    release_updates(ctx);
    release_kept(ctx);
    tk_arena_reset(&ctx->arena);
    ctx->generation++;
    ctx->tape = NULL;
    ctx->ntape = ctx->cap_tape = 0;
    ctx->tape_used = false;
    ctx->nleaves = 0;
    ctx->added_loss = NULL;
    ctx->trace_depth = 0;
    ctx->backward_hook = NULL;
    ctx->backward_hook_ud = NULL;
    tk_ctx_clear_error(ctx);
}

uint64_t tk_ctx_generation(const tk_ctx *ctx) { return ctx->generation; }
void tk_ctx_set_training(tk_ctx *ctx, bool training) { ctx->training = training; }
bool tk_ctx_training(const tk_ctx *ctx) { return ctx->training; }
void tk_ctx_set_grad_enabled(tk_ctx *ctx, bool on) { ctx->grad_enabled = on; }
bool tk_ctx_grad_enabled(const tk_ctx *ctx) { return ctx->grad_enabled; }
void tk_ctx_seed(tk_ctx *ctx, uint64_t seed) { tk_rng_seed(ctx->rng, seed); }
uint64_t tk_ctx_rand_u64(tk_ctx *ctx) { return tk_rng_next(ctx->rng); }
float tk_ctx_rand_uniform(tk_ctx *ctx) { return tk_rng_uniform(ctx->rng); }
float tk_ctx_rand_normal(tk_ctx *ctx) { return tk_rng_normal(ctx->rng); }
void tk_ctx_set_num_threads(tk_ctx *ctx, int n) { ctx->threads = n < 0 ? 0 : n; }
int tk_ctx_get_num_threads(const tk_ctx *ctx) { return ctx->threads > 0 ? ctx->threads : tk_get_num_threads(); }
size_t tk_ctx_arena_capacity(const tk_ctx *ctx) { return tk_arena_capacity(&ctx->arena); }
uint64_t tk_ctx_alloc_count(const tk_ctx *ctx) { return ctx->arena.mallocs + ctx->mallocs; }

const char *tk_ctx_error(const tk_ctx *ctx) { return ctx->error; }
bool tk_ctx_failed(const tk_ctx *ctx) { return ctx->failed; }

void tk_ctx_clear_error(tk_ctx *ctx) {
    ctx->failed = false;
    ctx->error[0] = ctx->message[0] = ctx->path[0] = '\0';
}

void *tk_ctx_fail(tk_ctx *ctx, const char *fmt, ...) {
    if (ctx->failed) return NULL; /* keep the first message */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    memcpy(ctx->error, ctx->message, sizeof ctx->message);
    ctx->failed = true;
    return NULL;
}

void tk_ctx_error_push_path(tk_ctx *ctx, const char *name) {
    if (!ctx->failed || !name || !*name) return;
    char path[TK_ERR_LEN];
    int n =
        ctx->path[0] ? snprintf(path, sizeof path, "%s/%s", name, ctx->path) : snprintf(path, sizeof path, "%s", name);
    if (n < 0 || (size_t)n >= sizeof path) return; /* absurdly deep: keep the inner path */
    memcpy(ctx->path, path, sizeof path);
    snprintf(ctx->error, sizeof ctx->error, "%s: %s", ctx->path, ctx->message);
}

void *tk_ctx_alloc(tk_ctx *ctx, size_t bytes) {
    void *p = tk_arena_alloc(&ctx->arena, bytes);
    if (!p) tk_ctx_fail(ctx, "out of memory allocating %zu bytes", bytes);
    return p;
}

char *tk_ctx_strdup(tk_ctx *ctx, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = tk_ctx_alloc(ctx, n);
    if (d) memcpy(d, s, n);
    return d;
}

static tk_tensor *arena_tensor(tk_ctx *ctx, tk_dtype dtype, int32_t ndim, const int64_t *shape, bool zero) {
    if (ndim < 0 || ndim > TK_MAX_DIMS) return tk_ctx_fail(ctx, "tensor rank %d is not supported", (int)ndim);
    int64_t numel;
    if (!tk_shape_numel_checked(ndim, shape, &numel)) {
        for (int32_t i = 0; i < ndim; i++)
            if (shape[i] < 0) return tk_ctx_fail(ctx, "tensor dimension %d is negative", (int)i);
        return tk_ctx_fail(ctx, "tensor shape is too large");
    }
    size_t bytes = (size_t)numel * tk_dtype_size(dtype);
    tk_tensor *t = tk_ctx_alloc(ctx, sizeof *t);
    void *data = t ? tk_ctx_alloc(ctx, bytes) : NULL;
    if (!data) return NULL;
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = numel;
    t->data = data;
    if (zero) memset(data, 0, bytes);
    return t;
}

tk_tensor *tk_ctx_zeros(tk_ctx *ctx, tk_dtype dtype, int32_t ndim, const int64_t *shape) {
    return arena_tensor(ctx, dtype, ndim, shape, true);
}

tk_tensor *tk_ctx_empty(tk_ctx *ctx, tk_dtype dtype, int32_t ndim, const int64_t *shape) {
    return arena_tensor(ctx, dtype, ndim, shape, false);
}

tk_tensor *tk_ctx_zeros_like(tk_ctx *ctx, const tk_tensor *t) {
    return arena_tensor(ctx, t->dtype, t->ndim, t->shape, true);
}

/* --- the tape --- */

static tk_leaf *find_leaf(const tk_ctx *ctx, const tk_tensor *source) {
    for (int64_t i = 0; i < ctx->nleaves; i++)
        if (ctx->leaves[i].source == source) return &ctx->leaves[i];
    return NULL;
}

tk_tensor *tk_ctx_leaf_alias(const tk_ctx *ctx, const tk_tensor *source) {
    tk_leaf *l = find_leaf(ctx, source);
    return l ? l->alias : NULL;
}

tk_tensor *tk_ctx_input(tk_ctx *ctx, tk_tensor *t) {
    /* an op reading a table trained with lazy = false reads every row (the embedding
     * lookup, which reads only its ids' rows, syncs those and calls tk_ctx_input_rows) */
    tk_tensor_sync(t);
    return tk_ctx_input_rows(ctx, t);
}

tk_tensor *tk_ctx_input_rows(tk_ctx *ctx, tk_tensor *t) {
    if (!t) return NULL;
    if (!(t->flags & TK_TENSOR_HEAP) || !ctx->grad_enabled) return t;
    if (!(t->flags & TK_TENSOR_REQUIRES_GRAD)) {
        /* the tape may point to it until backward: the context holds a reference */
        return tk_ctx_keep(ctx, t) == TK_OK ? t : NULL;
    }
    tk_leaf *leaf = find_leaf(ctx, t);
    if (leaf) return leaf->alias;
    if (tk_ctx_keep(ctx, t) != TK_OK) return NULL; /* the leaf map is keyed by its address */
    if (ctx->nleaves == ctx->cap_leaves) {
        int64_t cap = ctx->cap_leaves ? ctx->cap_leaves * 2 : 32;
        tk_leaf *l = realloc(ctx->leaves, (size_t)cap * sizeof *l);
        if (!l) return tk_ctx_fail(ctx, "out of memory");
        ctx->mallocs++;
        ctx->leaves = l;
        ctx->cap_leaves = cap;
    }
    tk_tensor *alias = tk_ctx_alloc(ctx, sizeof *alias);
    if (!alias) return NULL;
    memset(alias, 0, sizeof *alias);
    alias->dtype = t->dtype;
    alias->ndim = t->ndim;
    memcpy(alias->shape, t->shape, sizeof alias->shape);
    alias->numel = t->numel;
    alias->data = t->data;
    alias->flags = TK_TENSOR_VIEW;
    alias->source = t;
    alias->requires_grad = true;
    ctx->leaves[ctx->nleaves].source = t;
    ctx->leaves[ctx->nleaves].alias = alias;
    ctx->nleaves++;
    return alias;
}

bool tk_ctx_wants_grad(const tk_ctx *ctx, int32_t nin, tk_tensor *const *in) {
    if (!ctx->grad_enabled) return false;
    for (int32_t i = 0; i < nin; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

tk_node *tk_ctx_record(tk_ctx *ctx, const char *op, tk_backward_fn backward, tk_tensor *out, int32_t nin,
                       tk_tensor *const *in) {
    if (nin > TK_NODE_MAX_INPUTS) return tk_ctx_fail(ctx, "%s: too many inputs for a tape node", op);
    if (ctx->ntape == ctx->cap_tape) {
        int64_t cap = ctx->cap_tape ? ctx->cap_tape * 2 : 256;
        tk_node **tape = tk_ctx_alloc(ctx, (size_t)cap * sizeof *tape);
        if (!tape) return NULL;
        if (ctx->ntape) memcpy(tape, ctx->tape, (size_t)ctx->ntape * sizeof *tape);
        ctx->tape = tape;
        ctx->cap_tape = cap;
    }
    tk_node *node = tk_ctx_alloc(ctx, sizeof *node);
    if (!node) return NULL;
    /* the node reads its inputs at backward time: heap ones must stay alive until then */
    for (int32_t i = 0; i < nin; i++)
        if (in[i] && (in[i]->flags & TK_TENSOR_HEAP) && tk_ctx_keep(ctx, in[i]) != TK_OK) return NULL;
    memset(node, 0, sizeof *node);
    node->backward = backward;
    node->op = op;
    node->out = out;
    node->nin = nin;
    for (int32_t i = 0; i < nin; i++) node->in[i] = in[i];
    out->node = node;
    out->requires_grad = true;
    ctx->tape[ctx->ntape++] = node;
    return node;
}

tk_tensor *tk_ctx_grad_of(tk_ctx *ctx, tk_tensor *t) {
    if (!t->grad) {
        t->grad = tk_ctx_zeros(ctx, TK_F32, t->ndim, t->shape);
    }
    return t->grad;
}

tk_status tk_backward(tk_ctx *ctx, tk_tensor *loss) {
    if (!loss) {
        if (!ctx->failed) tk_ctx_fail(ctx, "backward: loss is NULL");
        return TK_ERROR;
    }
    if (loss->dtype != TK_F32 || loss->numel != 1) {
        char s[64];
        tk_ctx_fail(ctx, "backward: loss must be a float32 tensor of one element, got %s %s",
                    tk_dtype_name(loss->dtype), tk_shape_str(loss, s, sizeof s));
        return TK_ERROR;
    }
    if (!loss->requires_grad) {
        tk_ctx_fail(ctx, "backward: the loss does not depend on any tensor that requires gradients");
        return TK_ERROR;
    }
    /* Once per tape, as PyTorch without retain_graph: the gradients are accumulated, so a
     * second run would add them again (3, then 12, then 30 for x^3 at 1) */
    if (ctx->tape_used) {
        tk_ctx_fail(ctx, "backward: the tape of this context was already used; tk.reset() first (tk_ctx_reset in C): "
                         "a second backward would add the gradients again");
        return TK_ERROR;
    }
    ctx->tape_used = true;
    tk_tensor *g = tk_ctx_grad_of(ctx, loss);
    if (!g) return TK_ERROR;
    tk_f32(g)[0] += 1.0f;
    for (int64_t i = ctx->ntape - 1; i >= 0; i--) {
        tk_node *node = ctx->tape[i];
        if (node->out->grad && node->backward) {
            node->backward(ctx, node);
            if (ctx->failed) return TK_ERROR;
        }
        if (ctx->backward_hook) {
            ctx->backward_hook(ctx, i, ctx->backward_hook_ud);
            if (ctx->failed) return TK_ERROR;
        }
    }
    return TK_OK;
}

int64_t tk_ctx_tape_size(const tk_ctx *ctx) { return ctx->ntape; }

const tk_node *tk_ctx_tape_node(const tk_ctx *ctx, int64_t i) { return i >= 0 && i < ctx->ntape ? ctx->tape[i] : NULL; }

void tk_ctx_set_backward_hook(tk_ctx *ctx, tk_backward_hook_fn fn, void *ud) {
    ctx->backward_hook = fn;
    ctx->backward_hook_ud = fn ? ud : NULL;
}

/* --- sparse gradients --- */

float *tk_ctx_sparse_reserve(tk_ctx *ctx, tk_tensor *alias, int64_t n, const int64_t *rows) {
    int64_t dim = alias->ndim == 2 ? alias->shape[1] : 1;
    tk_sparse_grad *sg = alias->sparse;
    if (!sg) {
        sg = tk_ctx_alloc(ctx, sizeof *sg);
        if (!sg) return NULL;
        memset(sg, 0, sizeof *sg);
        sg->dim = dim;
        alias->sparse = sg;
    }
    if (sg->n + n > sg->cap) {
        int64_t cap = sg->cap ? sg->cap * 2 : 256;
        while (cap < sg->n + n) cap *= 2;
        int64_t *r = tk_ctx_alloc(ctx, (size_t)cap * sizeof *r);
        float *v = tk_ctx_alloc(ctx, (size_t)(cap * dim) * sizeof *v);
        if (!r || !v) return NULL;
        if (sg->n) {
            memcpy(r, sg->rows, (size_t)sg->n * sizeof *r);
            memcpy(v, sg->values, (size_t)(sg->n * dim) * sizeof *v);
        }
        sg->rows = r;
        sg->values = v;
        sg->cap = cap;
    }
    memcpy(sg->rows + sg->n, rows, (size_t)n * sizeof *rows);
    float *values = sg->values + sg->n * dim;
    sg->n += n;
    sg->coalesced = false;
    return values;
}

tk_status tk_ctx_sparse_append(tk_ctx *ctx, tk_tensor *alias, int64_t n, const int64_t *rows, const float *values) {
    float *v = tk_ctx_sparse_reserve(ctx, alias, n, rows);
    if (!v) return TK_ERROR;
    int64_t dim = alias->ndim == 2 ? alias->shape[1] : 1;
    memcpy(v, values, (size_t)(n * dim) * sizeof *values);
    return TK_OK;
}

/* Sorts row indices with their gradient rows and sums duplicates, in arena memory (no
 * malloc: glibc's qsort would allocate). The (row, position) pairs are sorted by row
 * with a stable least-significant-digit radix sort, 8 bits a pass over the bits the
 * largest row has, so duplicates keep their order and are summed in the order they were
 * appended. */
typedef struct {
    int64_t row, pos;
} row_pos;

static row_pos *sort_rows(row_pos *a, row_pos *tmp, int64_t n) {
    uint64_t max = 0;
    for (int64_t i = 0; i < n; i++) max |= (uint64_t)a[i].row;
    for (int shift = 0; shift < 64 && (max >> shift) != 0; shift += 8) {
        int64_t count[257] = { 0 };
        for (int64_t i = 0; i < n; i++) count[(((uint64_t)a[i].row >> shift) & 255) + 1]++;
        for (int b = 0; b < 256; b++) count[b + 1] += count[b];
        for (int64_t i = 0; i < n; i++) tmp[count[((uint64_t)a[i].row >> shift) & 255]++] = a[i];
        row_pos *t = a;
        a = tmp;
        tmp = t;
    }
    return a;
}

static tk_status coalesce(tk_ctx *ctx, tk_sparse_grad *sg) {
    if (sg->coalesced) return TK_OK;
    int64_t n = sg->n, dim = sg->dim;
    row_pos *perm = tk_ctx_alloc(ctx, (size_t)(n ? 2 * n : 1) * sizeof *perm);
    int64_t *rows = tk_ctx_alloc(ctx, (size_t)(n ? n : 1) * sizeof *rows);
    float *values = tk_ctx_alloc(ctx, (size_t)(n ? n * dim : 1) * sizeof *values);
    if (!perm || !rows || !values) return TK_ERROR;
    for (int64_t i = 0; i < n; i++) {
        perm[i].row = sg->rows[i];
        perm[i].pos = i;
    }
    perm = sort_rows(perm, perm + n, n); /* a negative row (refused by the optimizers) sorts last */
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *src = sg->values + perm[i].pos * dim;
        if (m > 0 && rows[m - 1] == perm[i].row) {
            tk_vec_add(values + (m - 1) * dim, src, dim);
        } else {
            rows[m] = perm[i].row;
            memcpy(values + m * dim, src, (size_t)dim * sizeof *src);
            m++;
        }
    }
    sg->rows = rows;
    sg->values = values;
    sg->n = m;
    sg->cap = m;
    sg->coalesced = true;
    return TK_OK;
}

tk_sparse_grad *tk_ctx_sparse_grad(tk_ctx *ctx, const tk_tensor *leaf) {
    tk_leaf *l = find_leaf(ctx, leaf);
    if (!l || !l->alias->sparse) return NULL;
    if (coalesce(ctx, l->alias->sparse) != TK_OK) return NULL;
    return l->alias->sparse;
}

tk_tensor *tk_ctx_grad(tk_ctx *ctx, const tk_tensor *leaf) {
    tk_leaf *l = find_leaf(ctx, leaf);
    if (!l) return NULL;
    tk_tensor *alias = l->alias;
    if (!alias->sparse) return alias->grad;
    /* Materialise sparse rows (plus any dense part) as a dense arena tensor. */
    tk_sparse_grad *sg = tk_ctx_sparse_grad(ctx, leaf);
    if (!sg) return NULL;
    tk_tensor *dense = tk_ctx_zeros(ctx, TK_F32, alias->ndim, alias->shape);
    if (!dense) return NULL;
    if (alias->grad) memcpy(dense->data, alias->grad->data, (size_t)dense->numel * sizeof(float));
    float *d = tk_f32(dense);
    for (int64_t i = 0; i < sg->n; i++)
        for (int64_t j = 0; j < sg->dim; j++) d[sg->rows[i] * sg->dim + j] += sg->values[i * sg->dim + j];
    return dense;
}

int64_t tk_ctx_leaf_count(const tk_ctx *ctx) { return ctx->nleaves; }

const tk_tensor *tk_ctx_leaf(const tk_ctx *ctx, int64_t i) {
    return i >= 0 && i < ctx->nleaves ? ctx->leaves[i].source : NULL;
}

/* --- deferred updates and added losses --- */

tk_status tk_ctx_defer_update(tk_ctx *ctx, tk_tensor *dst, const float *src, float a, float b) {
    if (ctx->nupdates == ctx->cap_updates) {
        int64_t cap = ctx->cap_updates ? ctx->cap_updates * 2 : 16;
        tk_update *u = realloc(ctx->updates, (size_t)cap * sizeof *u);
        if (!u) {
            tk_ctx_fail(ctx, "out of memory");
            return TK_ERROR;
        }
        ctx->mallocs++;
        ctx->updates = u;
        ctx->cap_updates = cap;
    }
    tk_tensor_retain(dst);
    ctx->updates[ctx->nupdates++] = (tk_update){ dst, src, a, b };
    return TK_OK;
}

void tk_ctx_apply_updates(tk_ctx *ctx) {
    for (int64_t i = 0; i < ctx->nupdates; i++) {
        tk_update *u = &ctx->updates[i];
        float *d = tk_f32(u->dst);
        for (int64_t j = 0; j < u->dst->numel; j++) d[j] = u->a * d[j] + u->b * u->src[j];
    }
    release_updates(ctx);
}

tk_tensor *tk_ctx_added_loss(tk_ctx *ctx) { return ctx->added_loss; }

void tk_ctx_set_trace(tk_ctx *ctx, tk_trace_fn fn, void *ud) {
    ctx->trace = fn;
    ctx->trace_ud = ud;
}
