/* Optimizers (SGD, Adam/AdamW, Adagrad) and global gradient-norm clipping.
 *
 * The update rules follow PyTorch's single-tensor implementations:
 *   SGD      g += wd * p; v = momentum * v + g; p -= lr * (nesterov ? g + momentum * v : v)
 *   Adam     p *= 1 - lr * wd (decoupled, AdamW); m = b1 m + (1 - b1) g;
 *            v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *   Adagrad  acc += g^2; p -= lr * g / (sqrt(acc) + eps), acc starting at initial_accumulator
 * with t the optimizer's global step count (incremented once per tk_optim_step).
 *
 * An embedding table whose gradient is sparse (rows plus summed values) is updated at the
 * cost of its touched rows. A dense table-sized gradient is never built for it, unless
 * the table also has a dense gradient part; then the dense sum is used. Two semantics:
 *   lazy = true   the rule is applied to the touched rows only, their moment rows
 *                 included, as TF's LazyAdam and PyTorch's SparseAdam do;
 *   lazy = false  every row follows the dense rule (Keras, PyTorch's Adam), an untouched
 *                 row seeing g = 0; the steps a row skipped are applied when it is next
 *                 read or touched, in closed form (below, "Dense semantics at sparse cost").
 *
 * Per-parameter state (moments) lives on the heap, keyed by the parameter pointer in an
 * open-addressing hash map; the optimizer retains each parameter it holds state for.
 * State is created on the parameter's first update; later steps allocate nothing. */
#include "internal.h"
#include "simd.h"

#include <math.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <stdio.h>

typedef enum optim_kind { OPTIM_SGD = 0, OPTIM_ADAM, OPTIM_ADAGRAD } optim_kind;

/* State of one parameter. `buf` holds nbuf moment arrays of numel floats each:
 * SGD with momentum: v; Adam: m then v; Adagrad: acc. */
typedef struct optim_state {
    tk_tensor *param; /* key; retained. NULL: empty slot */
    float *buf;
    int64_t numel;
    uint64_t stamp;          /* last tk_optim_step call that updated it (duplicate guard) */
    const tk_ctx *stamp_ctx; /* the context whose gradient that call used */
    struct lazy_table *lz;   /* lazy = false, a table: its rows' counters and read hook */
} optim_state;

/* How one parameter is updated in the current step. */
typedef enum grad_kind { GRAD_NONE = 0, GRAD_DENSE, GRAD_SPARSE } grad_kind;
typedef struct optim_work {
    grad_kind kind;
    optim_state *state;
    const float *dense;           /* GRAD_DENSE: numel values */
    const tk_sparse_grad *sparse; /* GRAD_SPARSE */
} optim_work;

typedef struct adam_consts {
    float lr, b1, b2, eps, decay; /* decay = 1 - lr * wd */
    float step_size;              /* lr / (1 - b1^t) */
    float bc2_sqrt;               /* sqrt(1 - b2^t) */
} adam_consts;

struct tk_optim {
    optim_kind kind;
    float lr;
    float momentum;     /* SGD */
    bool nesterov;      /* SGD */
    float weight_decay; /* SGD: L2 added to the gradient; Adam: decoupled */
    float beta1, beta2; /* Adam */
    float eps;          /* Adam, Adagrad */
    float initial_acc;  /* Adagrad */
    int64_t steps;      /* completed steps */
    uint64_t calls;     /* tk_optim_step calls, stamps duplicates */
    /* state map: capacity is a power of two, at most half full */
    optim_state *slots;
    int64_t cap, count;
    /* scratch reused across steps */
    optim_work *work;
    int64_t cap_work;
    tk_tensor **block_params;
    int64_t nblock_params, cap_block_params;
    adam_consts ac; /* the constants of the step being applied */
    int64_t nwork;  /* its work items (tk_optim_prepare_contexts) */
    /* lazy = false: the factors of steps hist_base .. hist_base + hist_len - 1 (the last
     * is `steps`; the first an anchor, older than every row's counter) */
    bool lazy;
    struct step_factors *hist;
    int64_t hist_base, hist_len;
    double lr_max, d_min; /* over the history: the truncation bound's inputs */
};

/* ------------------------------------------------------------------------------------ */
/* Construction                                                                          */
/* ------------------------------------------------------------------------------------ */

static bool finite_f(float x) { return isfinite(x) != 0; }

static bool check_lr(const char *who, float lr) {
    if (!finite_f(lr) || !(lr > 0.0f)) {
        tk_set_error("%s: learning rate must be a finite number > 0, got %g", who, (double)lr);
        return false;
    }
    return true;
}

static bool check_nonneg(const char *who, const char *what, float x) {
    if (!finite_f(x) || x < 0.0f) {
        tk_set_error("%s: %s must be a finite number >= 0, got %g", who, what, (double)x);
        return false;
    }
    return true;
}

static tk_optim *optim_alloc(optim_kind kind, float lr) {
    tk_optim *opt = calloc(1, sizeof *opt);
    if (!opt) {
        tk_set_error("optimizer: out of memory");
        return NULL;
    }
    opt->kind = kind;
    opt->lr = lr;
    opt->lazy = tk_optim_default_lazy();
    return opt;
}

tk_optim *tk_optim_sgd_new(float lr, float momentum, bool nesterov, float weight_decay) {
    const char *who = "sgd";
    if (!check_lr(who, lr) || !check_nonneg(who, "momentum", momentum) ||
        !check_nonneg(who, "weight_decay", weight_decay))
        return NULL;
    if (nesterov && momentum == 0.0f) {
        tk_set_error("sgd: nesterov momentum requires momentum > 0");
        return NULL;
    }
    tk_optim *opt = optim_alloc(OPTIM_SGD, lr);
    if (!opt) return NULL;
    opt->momentum = momentum;
    opt->nesterov = nesterov;
    opt->weight_decay = weight_decay;
    return opt;
}

static bool check_beta(const char *who, const char *what, float b) {
    if (!finite_f(b) || b < 0.0f || b >= 1.0f) {
        tk_set_error("%s: %s must be in [0, 1), got %g", who, what, (double)b);
        return false;
    }
    return true;
}

tk_optim *tk_optim_adam_new(float lr, float beta1, float beta2, float eps, float weight_decay) {
    const char *who = weight_decay > 0.0f ? "adamw" : "adam";
    if (!check_lr(who, lr) || !check_beta(who, "beta1", beta1) || !check_beta(who, "beta2", beta2) ||
        !check_nonneg(who, "epsilon", eps) || !check_nonneg(who, "weight_decay", weight_decay))
        return NULL;
    tk_optim *opt = optim_alloc(OPTIM_ADAM, lr);
    if (!opt) return NULL;
    opt->beta1 = beta1;
    opt->beta2 = beta2;
    opt->eps = eps;
    opt->weight_decay = weight_decay;
    return opt;
}

tk_optim *tk_optim_adagrad_new(float lr, float initial_accumulator, float eps) {
    const char *who = "adagrad";
    if (!check_lr(who, lr) || !check_nonneg(who, "initial_accumulator", initial_accumulator) ||
        !check_nonneg(who, "epsilon", eps))
        return NULL;
    tk_optim *opt = optim_alloc(OPTIM_ADAGRAD, lr);
    if (!opt) return NULL;
    opt->initial_acc = initial_accumulator;
    opt->eps = eps;
    return opt;
}

static void lazy_detach(tk_optim *opt, optim_state *s);

void tk_optim_free(tk_optim *opt) {
    if (!opt) return;
    for (int64_t i = 0; i < opt->cap; i++) {
        if (!opt->slots[i].param) continue;
        lazy_detach(opt, &opt->slots[i]); /* the parameters outlive us: rows brought up to date */
        free(opt->slots[i].buf);
        tk_tensor_release(opt->slots[i].param);
    }
    free(opt->slots);
    free(opt->work);
    free(opt->block_params);
    free(opt->hist);
    free(opt);
}

void tk_optim_set_lr(tk_optim *opt, float lr) {
    if (!opt) {
        tk_set_error("optimizer set_lr: optimizer is NULL");
        return;
    }
    if (check_lr("optimizer set_lr", lr)) opt->lr = lr; /* a bad value keeps the old rate */
}

float tk_optim_lr(const tk_optim *opt) { return opt ? opt->lr : 0.0f; }
int64_t tk_optim_steps(const tk_optim *opt) { return opt ? opt->steps : 0; }

/* ------------------------------------------------------------------------------------ */
/* State map                                                                             */
/* ------------------------------------------------------------------------------------ */

static uint64_t hash_ptr(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static optim_state *slot_for(optim_state *slots, int64_t cap, const tk_tensor *p) {
    uint64_t mask = (uint64_t)cap - 1;
    for (uint64_t i = hash_ptr(p) & mask;; i = (i + 1) & mask)
        if (slots[i].param == p || !slots[i].param) return &slots[i];
}

static bool map_grow(tk_optim *opt) {
    int64_t cap = opt->cap ? opt->cap * 2 : 64;
    optim_state *slots = calloc((size_t)cap, sizeof *slots);
    if (!slots) return false;
    for (int64_t i = 0; i < opt->cap; i++)
        if (opt->slots[i].param) *slot_for(slots, cap, opt->slots[i].param) = opt->slots[i];
    free(opt->slots);
    opt->slots = slots;
    opt->cap = cap;
    return true;
}

static int nbufs(const tk_optim *opt) {
    switch (opt->kind) {
    case OPTIM_SGD:
        return opt->momentum != 0.0f ? 1 : 0;
    case OPTIM_ADAM:
        return 2;
    case OPTIM_ADAGRAD:
        return 1;
    }
    return 0;
}

/* The state of p, created (moments zeroed, Adagrad's accumulator filled) on first use.
 * NULL when out of memory. */
static optim_state *state_get(tk_optim *opt, tk_tensor *p) {
    if (opt->cap) {
        optim_state *s = slot_for(opt->slots, opt->cap, p);
        if (s->param) return s;
    }
    if ((opt->count + 1) * 2 > opt->cap && !map_grow(opt)) return NULL;
    int nb = nbufs(opt);
    float *buf = NULL;
    if (nb > 0 && p->numel > 0) {
        buf = calloc((size_t)p->numel * (size_t)nb, sizeof *buf);
        if (!buf) return NULL;
        if (opt->kind == OPTIM_ADAGRAD && opt->initial_acc != 0.0f)
            for (int64_t i = 0; i < p->numel; i++) buf[i] = opt->initial_acc;
    }
    optim_state *s = slot_for(opt->slots, opt->cap, p);
    tk_tensor_retain(p);
    s->param = p;
    s->buf = buf;
    s->numel = p->numel;
    s->stamp = 0;
    opt->count++;
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* Update kernels over a contiguous span (a whole tensor, or one row of a table)          */
/* ------------------------------------------------------------------------------------ */

static void sgd_span(const tk_optim *opt, float *p, const float *g, float *v, int64_t n) {
    const float lr = opt->lr, mu = opt->momentum, wd = opt->weight_decay;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        if (wd != 0.0f) gi += wd * p[i];
        if (v) {
            v[i] = mu * v[i] + gi;
            gi = opt->nesterov ? gi + mu * v[i] : v[i];
        }
        p[i] -= lr * gi;
    }
}

/* The Adam rule over x[i, n) in the scalar order of operations (also the vectors'). */
static void adam_tail(const adam_consts *c, float *p, const float *g, float *m, float *v, int64_t i, int64_t n) {
    for (; i < n; i++) {
        float gi = g[i];
        if (c->decay != 1.0f) p[i] *= c->decay;
        m[i] = c->b1 * m[i] + (1.0f - c->b1) * gi;
        v[i] = c->b2 * v[i] + (1.0f - c->b2) * gi * gi;
        float denom = sqrtf(v[i]) / c->bc2_sqrt + c->eps;
        p[i] -= c->step_size * (m[i] / denom);
    }
}

#if defined(__x86_64__)
/* 8 lanes in AVX (picked at run time), then 4 in SSE and the scalar tail: the same
 * operations in the same order (no FMA), so the same bits as the 4-lane loop. */
__attribute__((target("avx2"))) static void adam_span_avx2(const adam_consts *c, float *p, const float *g, float *m,
                                                           float *v, int64_t n) {
    int64_t i = 0;
    const __m256 b1 = _mm256_set1_ps(c->b1), b2 = _mm256_set1_ps(c->b2), a1 = _mm256_set1_ps(1.0f - c->b1),
                 a2 = _mm256_set1_ps(1.0f - c->b2), bc2 = _mm256_set1_ps(c->bc2_sqrt), eps = _mm256_set1_ps(c->eps),
                 step = _mm256_set1_ps(c->step_size), decay = _mm256_set1_ps(c->decay);
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i), pi = _mm256_loadu_ps(p + i);
        if (c->decay != 1.0f) pi = _mm256_mul_ps(pi, decay);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(a1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(a2, gi), gi));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(step, _mm256_div_ps(mi, denom))));
    }
    adam_tail(c, p, g, m, v, i, n);
}
#endif

static void adam_span(const adam_consts *c, float *p, const float *g, float *m, float *v, int64_t n) {
    int64_t i = 0;
#if defined(__x86_64__)
    if (n >= 8 && __builtin_cpu_supports("avx2")) {
        adam_span_avx2(c, p, g, m, v, n);
        return;
    }
#endif
#if defined(__SSE2__)
    /* 4 lanes at a time (SSE: sqrt and division in vectors), the same operations in the
     * same order as the scalar loop (adam_tail), so the same bits; the embedding rows of
     * the lazy update are 64 wide, the dense parameters thousands. */
    const __m128 b1 = _mm_set1_ps(c->b1), b2 = _mm_set1_ps(c->b2), a1 = _mm_set1_ps(1.0f - c->b1),
                 a2 = _mm_set1_ps(1.0f - c->b2), bc2 = _mm_set1_ps(c->bc2_sqrt), eps = _mm_set1_ps(c->eps),
                 step = _mm_set1_ps(c->step_size), decay = _mm_set1_ps(c->decay);
    for (; i + 4 <= n; i += 4) {
        __m128 gi = _mm_loadu_ps(g + i), pi = _mm_loadu_ps(p + i);
        if (c->decay != 1.0f) pi = pi * decay;
        __m128 mi = b1 * _mm_loadu_ps(m + i) + a1 * gi;
        __m128 vi = b2 * _mm_loadu_ps(v + i) + a2 * gi * gi;
        __m128 denom = _mm_sqrt_ps(vi) / bc2 + eps;
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        _mm_storeu_ps(p + i, pi - step * (mi / denom));
    }
#endif
    adam_tail(c, p, g, m, v, i, n);
}

static void adagrad_span(const tk_optim *opt, float *p, const float *g, float *acc, int64_t n) {
    const float lr = opt->lr, eps = opt->eps;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        acc[i] += gi * gi;
        p[i] -= lr * (gi / (sqrtf(acc[i]) + eps));
    }
}

/* Applies the rule to elements [off, off + n) of the state's parameter and moments. */
static void update_span(const tk_optim *opt, const adam_consts *ac, optim_state *s, int64_t off, const float *g,
                        int64_t n) {
    float *p = tk_f32(s->param) + off;
    switch (opt->kind) {
    case OPTIM_SGD:
        sgd_span(opt, p, g, s->buf ? s->buf + off : NULL, n);
        break;
    case OPTIM_ADAM:
        adam_span(ac, p, g, s->buf + off, s->buf + s->numel + off, n);
        break;
    case OPTIM_ADAGRAD:
        adagrad_span(opt, p, g, s->buf + off, n);
        break;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Dense semantics at sparse cost (lazy = false)                                          */
/* ------------------------------------------------------------------------------------ */

/* A table row the batch did not touch sees g = 0. Each table keeps, per row, the step its
 * values are up to date with (`last`); the optimizer keeps the factors of every step
 * since the oldest counter (`hist`). A row is brought from step s to T when it is read
 * (the embedding lookup's rows, any other reader's whole table: tk_tensor_sync) or
 * touched (first to t - 1, then the step's rule with its gradient, counter t).
 *
 * Adam / AdamW. With g = 0 over steps s+1..T (n = T - s, j = k - s), PyTorch's rule gives
 *   m_k = b1^j m_s,  v_k = b2^j v_s,
 *   p_k = d_k p_{k-1} - alpha_k m_k / (sqrt(v_k) / c_k + eps),
 * alpha_k = lr_k / (1 - b1^k) (the kernels' step_size), c_k = sqrt(1 - b2^k), d_k =
 * 1 - lr_k wd (1 for Adam), each as the float the kernels use. Unrolled, per element,
 *   p_T = D p_s - m_s * sum_{j=1..n} W_j / (A_j x + eps),   x = sqrt(v_s),
 *   W_j = D_j alpha_{s+j} b1^j,  A_j = b2^{j/2} / c_{s+j},
 *   D = prod_{k=s+1..T} d_k,  D_j = prod_{k=s+j+1..T} d_k.
 * D and D_j come from a prefix sum of log(d_k) in double (cannot be truncated: weight
 * decay shrinks the row over the whole gap).
 * Truncation. Every term is > 0. With c <= 1, A_j x + eps >= b2^{j/2} (x + eps), while
 * term 1 >= W_1 / (max(A_1, 1) (x + eps)); and W_j / W_1 <= (lr_max / lr_{s+1}) (b1 /
 * d_min)^{j-1} (alpha's bias correction only falls). So, with rho = b1 / (sqrt(b2) d_min)
 * (0.9005 for 0.9 / 0.999), the terms after J sum to at most
 *   term_1 * max(A_1, 1) (lr_max / lr_{s+1}) rho^J / ((1 - rho) sqrt(b2)),
 * whatever x and eps, the learning rates varying as they like (lr_max, d_min: over the
 * history). Each gap takes the smallest J that makes this <= 2^-27 of the sum (about
 * 200 steps for 0.9 / 0.999, 2400 for b1 = 0.99), all n steps when rho >= 1.
 * Expansion. 1/(A x + eps) = sum_{p=1..P} (-eps)^{p-1} / (A x)^p + R, exactly, with
 * |R| = eps^P / ((A x)^P (A x + eps)) <= eps^P / (A x)^{P+1}. So with S_p = sum_j W_j A_j^-p
 * (one pass over the J steps per gap, shared by the row's elements and by rows of the
 * same gap) the sum is, per element, a Horner polynomial in z = -eps / x over P = 8
 * terms, off by at most eps^P S_{P+1} / x^{P+1}. An element uses it when that bound is
 * <= 2^-27 of the polynomial's value (x >~ 10 eps / A_min); otherwise (x near eps or
 * below, never when m_s = 0) it sums the J terms directly. Either way the row's movement
 * m_s * sum is exact to 2^-26 relative, under float's 2^-24.
 *
 * SGD with momentum mu (wd: L2 in the gradient). With g = 0 a step is linear in (v, p),
 * the same 2x2 matrix for every element:
 *   v' = mu v + wd p,  p' = p - lr_k (nesterov ? wd p + mu v' : v'),
 * so the gap is the product of its steps' matrices (exact, no truncation): over runs
 * of equal rates by squaring (O(log n)), else one product per step (O(n) scalars, once
 * per row, or once per gap in a whole-table sync). Without momentum, p' = (1 - lr_k wd) p:
 * the decay prefix again; without momentum and wd nothing moves. Adagrad with g = 0
 * changes nothing: lazy = dense.
 *
 * A step in which a table has no gradient at all counts as g = 0 for all its rows (as
 * PyTorch with zeroed, not None, gradients). The history holds HIST_MAX steps; when
 * full, every table is brought up to date and the history restarts (one whole-table
 * sync per HIST_MAX steps). */

#define HIST_MAX 32768
#define ADAM_P 8
#define REL_BOUND 7.450580596923828125e-9 /* 2^-27: truncation and expansion, each */

typedef struct step_factors {
    double logd; /* sum of log(d_k) over (hist_base, k] */
    float lr;    /* the step's rate */
    float step;  /* Adam: alpha_k, the kernels' step_size */
    float bc2;   /* Adam: c_k, the kernels' bc2_sqrt */
    float d;     /* d_k: Adam's decay, SGD's 1 - lr wd (no momentum) */
    int64_t run; /* the first step of the run of equal rates that ends at k */
} step_factors;

typedef struct lazy_table {
    tk_lazy_rows hook; /* the tensor's `lazy` points here */
    tk_optim *opt;
    tk_tensor *param;
    float *buf; /* the state's moments */
    int64_t numel, dim, rows;
    int64_t *last;  /* [rows]: the step each row is up to date with */
    int64_t synced; /* every row is up to date with this step */
} lazy_table;

/* The factors of one gap (s, T]: shared by every row with that counter. */
typedef struct gap_factors {
    int64_t s, T, nn;     /* nn: Adam's terms (J or n) */
    double D, bm, bv;     /* Adam: D, b1^n, b2^n; SGD without momentum: D */
    double S[ADAM_P + 1]; /* Adam: S_1 .. S_{P+1} */
    double M[4];          /* SGD with momentum: (v, p) <- M (v, p), row-major */
} gap_factors;

static bool needs_catchup(const tk_optim *opt) {
    switch (opt->kind) {
    case OPTIM_ADAM:
        return true;
    case OPTIM_SGD:
        return opt->momentum != 0.0f || opt->weight_decay != 0.0f;
    case OPTIM_ADAGRAD:
        return false;
    }
    return false;
}

static const step_factors *hist_at(const tk_optim *opt, int64_t k) { return &opt->hist[k - opt->hist_base]; }

/* D over (a, b]: the decays of steps a+1 .. b. */
static double decay_between(const tk_optim *opt, int64_t a, int64_t b) {
    return a >= b ? 1.0 : exp(hist_at(opt, b)->logd - hist_at(opt, a)->logd);
}

/* Adam's terms over (s, T]: W_j and u_j = 1 / A_j for j = 1, 2, ..., by recurrences. */
typedef struct adam_iter {
    const tk_optim *opt;
    int64_t s, j;
    double D, pb1, ib2h; /* D_j, b1^j, b2^{-j/2} */
    double W, u;
} adam_iter;

static void adam_iter_init(adam_iter *it, const tk_optim *opt, int64_t s, int64_t T) {
    it->opt = opt;
    it->s = s;
    it->j = 0;
    it->D = decay_between(opt, s + 1, T); /* D_1 */
    it->pb1 = 1.0;
    it->ib2h = 1.0;
}

static void adam_iter_next(adam_iter *it) {
    const tk_optim *opt = it->opt;
    const step_factors *f = hist_at(opt, it->s + ++it->j);
    if (it->j > 1) it->D /= (double)f->d;
    it->pb1 *= (double)opt->beta1;
    it->ib2h /= sqrt((double)opt->beta2);
    it->W = it->D * (double)f->step * it->pb1;
    it->u = (double)f->bc2 * it->ib2h;
}

/* How many of the n terms of gap (s, T] to sum: the bound above <= REL_BOUND. */
static int64_t adam_terms(const tk_optim *opt, int64_t s, int64_t n) {
    double b1 = opt->beta1, sb2 = sqrt((double)opt->beta2);
    double rho = b1 / (sb2 * opt->d_min);
    if (b1 == 0.0) return 0; /* m is 0 after one step without gradient */
    if (!(rho < 1.0)) return n;
    const step_factors *f = hist_at(opt, s + 1);
    double a1 = sb2 / (double)f->bc2;
    double c = (a1 > 1.0 ? a1 : 1.0) * (opt->lr_max / (double)f->lr) / ((1.0 - rho) * sb2);
    double J = ceil(log(REL_BOUND / c) / log(rho));
    if (!(J >= 1.0)) J = 1.0;
    return J < (double)n ? (int64_t)J : n;
}

static void adam_gap(const tk_optim *opt, int64_t s, int64_t T, gap_factors *g) {
    int64_t n = T - s;
    g->s = s;
    g->T = T;
    g->nn = adam_terms(opt, s, n);
    g->D = decay_between(opt, s, T);
    g->bm = pow((double)opt->beta1, (double)n);
    g->bv = pow((double)opt->beta2, (double)n);
    for (int p = 0; p <= ADAM_P; p++) g->S[p] = 0.0;
    adam_iter it;
    adam_iter_init(&it, opt, s, T);
    for (int64_t j = 1; j <= g->nn; j++) {
        adam_iter_next(&it);
        double w = it.W;
        for (int p = 0; p <= ADAM_P; p++) {
            w *= it.u;
            g->S[p] += w;
        }
    }
}

/* sum_j W_j / (A_j x + eps) term by term: x near eps or below. */
static double adam_direct(const tk_optim *opt, const gap_factors *g, double x) {
    double eps = opt->eps, sum = 0.0;
    adam_iter it;
    adam_iter_init(&it, opt, g->s, g->T);
    for (int64_t j = 1; j <= g->nn; j++) {
        adam_iter_next(&it);
        sum += it.W * it.u / (x + eps * it.u);
    }
    return sum;
}

/* dst = a * b, 2x2 row-major */
static void mat2_mul(double *dst, const double *a, const double *b) {
    double r[4] = { a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3], a[2] * b[0] + a[3] * b[2],
                    a[2] * b[1] + a[3] * b[3] };
    memcpy(dst, r, sizeof r);
}

static void sgd_gap(const tk_optim *opt, int64_t s, int64_t T, gap_factors *g) {
    g->s = s;
    g->T = T;
    if (opt->momentum == 0.0f) {
        g->D = decay_between(opt, s, T);
        return;
    }
    double mu = opt->momentum, wd = opt->weight_decay;
    double acc[4] = { 1, 0, 0, 1 };
    for (int64_t k = T; k > s;) { /* later steps first: acc = M_T ... M_k */
        const step_factors *f = hist_at(opt, k);
        int64_t first = f->run > s + 1 ? f->run : s + 1, len = k - first + 1;
        double lr = f->lr;
        double m[4] = { mu, wd, opt->nesterov ? -lr * mu * mu : -lr * mu,
                        opt->nesterov ? 1.0 - lr * wd * (1.0 + mu) : 1.0 - lr * wd };
        double pw[4] = { 1, 0, 0, 1 };
        for (int64_t e = len; e; e >>= 1) { /* m^len by squaring */
            if (e & 1) mat2_mul(pw, pw, m);
            mat2_mul(m, m, m);
        }
        mat2_mul(acc, acc, pw);
        k = first - 1;
    }
    memcpy(g->M, acc, sizeof acc);
}

static void gap_get(const tk_optim *opt, int64_t s, int64_t T, gap_factors *g) {
    if (g->s == s && g->T == T) return;
    if (opt->kind == OPTIM_ADAM)
        adam_gap(opt, s, T, g);
    else
        sgd_gap(opt, s, T, g);
}

/* Brings row r of the table from its step to T (> its step) with the gap's factors. */
static void catch_up_row(const tk_optim *opt, lazy_table *lz, int64_t r, const gap_factors *g) {
    int64_t off = r * lz->dim, dim = lz->dim;
    float *p = tk_f32(lz->param) + off;
    if (opt->kind == OPTIM_ADAM) {
        float *m = lz->buf + off, *v = lz->buf + lz->numel + off;
        const double eps = opt->eps;
        for (int64_t i = 0; i < dim; i++) {
            double mi = m[i], x = sqrt((double)v[i]), sum = 0.0;
            if (mi != 0.0) {
                bool done = false;
                if (x > 0.0) {
                    double inv = 1.0 / x, z = -eps * inv, h = g->S[ADAM_P - 1];
                    for (int q = ADAM_P - 2; q >= 0; q--) h = g->S[q] + z * h;
                    h *= inv;
                    double e = eps * inv, e2 = e * e, e4 = e2 * e2, e8 = e4 * e4; /* (eps/x)^P, P = 8 */
                    if (e8 * g->S[ADAM_P] * inv <= REL_BOUND * h) {
                        sum = h;
                        done = true;
                    }
                }
                if (!done) sum = adam_direct(opt, g, x);
            }
            p[i] = (float)(g->D * (double)p[i] - mi * sum);
            m[i] = (float)(g->bm * mi);
            v[i] = (float)(g->bv * (double)v[i]);
        }
    } else if (opt->momentum == 0.0f) {
        for (int64_t i = 0; i < dim; i++) p[i] = (float)(g->D * (double)p[i]);
    } else {
        float *v = lz->buf + off;
        const double *M = g->M;
        for (int64_t i = 0; i < dim; i++) {
            double vi = v[i], pi = p[i];
            v[i] = (float)(M[0] * vi + M[1] * pi);
            p[i] = (float)(M[2] * vi + M[3] * pi);
        }
    }
    lz->last[r] = g->T;
}

/* Brings every row of the table up to step T: the factors of each gap once (rows last
 * touched at the same step share them). */
static void lazy_sync_to(lazy_table *lz, int64_t T) {
    const tk_optim *opt = lz->opt;
    if (lz->synced >= T) return;
    int64_t lo = T;
    for (int64_t r = 0; r < lz->rows; r++)
        if (lz->last[r] < lo) lo = lz->last[r];
    gap_factors *cache = lo < T ? calloc((size_t)(T - lo), sizeof *cache) : NULL;
    gap_factors one = { .s = -1 };
    for (int64_t r = 0; r < lz->rows; r++) {
        int64_t s = lz->last[r];
        if (s >= T) continue;
        gap_factors *g = cache ? &cache[s - lo] : &one; /* no memory: one gap at a time */
        if (cache && g->T != T) g->s = -1;
        gap_get(opt, s, T, g);
        catch_up_row(opt, lz, r, g);
    }
    free(cache);
    lz->synced = T;
}

/* The hooks (tk_tensor_sync, the embedding lookup), under the table's mutex: up to the
 * optimizer's last completed step. */
static void hook_sync_rows(void *ud, tk_tensor *t, int64_t n, const int64_t *rows) {
    lazy_table *lz = ud;
    const tk_optim *opt = lz->opt;
    int64_t T = opt->steps;
    if (lz->synced >= T) return;
    gap_factors g = { .s = -1 };
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows[i];
        if (r < 0 || r >= lz->rows || lz->last[r] >= T) continue; /* bad ids: the op reports them */
        gap_get(opt, lz->last[r], T, &g);
        catch_up_row(opt, lz, r, &g);
    }
}

static void hook_sync_all(void *ud, tk_tensor *t) {
    lazy_table *lz = ud;
    lazy_sync_to(lz, lz->opt->steps);
}

/* Counters and hook for a table that gets a sparse gradient (lazy = false), every row up
 * to date with the last completed step. false: out of memory, or another optimizer's. */
static bool lazy_attach(tk_optim *opt, optim_state *s, int64_t dim) {
    if (s->lz) return true;
    tk_tensor *p = s->param;
    if (p->lazy) return false;
    lazy_table *lz = calloc(1, sizeof *lz);
    int64_t rows = p->numel / dim;
    int64_t *last = malloc((size_t)rows * sizeof *last);
    if (!lz || !last || pthread_mutex_init(&lz->hook.mu, NULL) != 0) {
        free(lz);
        free(last);
        return false;
    }
    for (int64_t r = 0; r < rows; r++) last[r] = opt->steps;
    lz->hook.sync_rows = hook_sync_rows;
    lz->hook.sync_all = hook_sync_all;
    lz->hook.ud = lz;
    lz->opt = opt;
    lz->param = p;
    lz->buf = s->buf;
    lz->numel = p->numel;
    lz->dim = dim;
    lz->rows = rows;
    lz->last = last;
    lz->synced = opt->steps;
    s->lz = lz;
    __atomic_store_n(&p->lazy, &lz->hook, __ATOMIC_RELEASE);
    return true;
}

/* Brings the table up to date, removes its hook and counters. */
static void lazy_detach(tk_optim *opt, optim_state *s) {
    lazy_table *lz = s->lz;
    if (!lz) return;
    pthread_mutex_lock(&lz->hook.mu);
    lazy_sync_to(lz, opt->steps);
    __atomic_store_n(&s->param->lazy, NULL, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&lz->hook.mu);
    pthread_mutex_destroy(&lz->hook.mu);
    free(lz->last);
    free(lz);
    s->lz = NULL;
}

/* Records the factors of step opt->steps (begin_apply, lazy = false). A full history is
 * emptied first: every table brought up to the previous step, which becomes the anchor. */
static void hist_record(tk_optim *opt, const adam_consts *ac) {
    int64_t k = opt->steps;
    if (opt->hist_len == HIST_MAX) {
        for (int64_t i = 0; i < opt->cap; i++) {
            lazy_table *lz = opt->slots[i].lz;
            if (!lz) continue;
            pthread_mutex_lock(&lz->hook.mu);
            lazy_sync_to(lz, k - 1);
            pthread_mutex_unlock(&lz->hook.mu);
        }
        opt->hist_len = 0;
    }
    if (opt->hist_len == 0) { /* the anchor: step k - 1 */
        opt->hist_base = k - 1;
        opt->hist[0] = (step_factors){ .logd = 0.0, .lr = opt->lr, .run = k - 1 };
        opt->hist_len = 1;
        opt->lr_max = 0.0;
        opt->d_min = 1.0;
    }
    const step_factors *prev = &opt->hist[opt->hist_len - 1];
    step_factors f = { .lr = opt->lr, .d = 1.0f, .run = k };
    if (opt->kind == OPTIM_ADAM) {
        f.step = ac->step_size;
        f.bc2 = ac->bc2_sqrt;
        f.d = ac->decay;
    } else if (opt->momentum == 0.0f) {
        f.d = (float)(1.0 - (double)opt->lr * (double)opt->weight_decay);
    }
    f.logd = prev->logd + log((double)f.d);
    if (opt->hist_len > 1 && prev->lr == f.lr) f.run = prev->run;
    opt->hist[opt->hist_len++] = f;
    if ((double)f.lr > opt->lr_max) opt->lr_max = f.lr;
    if ((double)f.d < opt->d_min) opt->d_min = f.d;
}

void tk_optim_set_lazy(tk_optim *opt, bool lazy) {
    if (!opt || opt->lazy == lazy) return;
    opt->lazy = lazy;
    if (!lazy) return; /* counters start with the tables' next sparse gradients */
    for (int64_t i = 0; i < opt->cap; i++)
        if (opt->slots[i].param) lazy_detach(opt, &opt->slots[i]);
    opt->hist_len = 0;
}

bool tk_optim_lazy(const tk_optim *opt) { return opt ? opt->lazy : true; }

const float *tk_optim_moments(tk_optim *opt, tk_tensor *p, int which) {
    if (!opt || !opt->cap || which < 0 || which >= nbufs(opt)) return NULL;
    optim_state *s = slot_for(opt->slots, opt->cap, p);
    if (!s->param || !s->buf) return NULL;
    tk_tensor_sync(p);
    return s->buf + which * s->numel;
}

/* The default of lazy (tk_optim_set_lazy): see README, "Optimizers: lazy or dense". */
bool tk_optim_default_lazy(void) { return false; }

/* ------------------------------------------------------------------------------------ */
/* Steps                                                                                 */
/* ------------------------------------------------------------------------------------ */

/* Sets both the thread's message and the context's (the first failure of ctx is kept). */
__attribute__((format(printf, 2, 3))) static tk_status step_fail(tk_ctx *ctx, const char *fmt, ...) {
    char msg[TK_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tk_set_error("%s", msg);
    if (ctx) tk_ctx_fail(ctx, "%s", msg);
    return TK_ERROR;
}

/* The context alias of a heap leaf, NULL if it is not a leaf of ctx. */
static tk_tensor *find_alias(const tk_ctx *ctx, const tk_tensor *p) {
    for (int64_t i = 0; i < ctx->nleaves; i++)
        if (ctx->leaves[i].source == p) return ctx->leaves[i].alias;
    return NULL;
}

static bool ensure_work(tk_optim *opt, int64_t n) {
    if (n <= opt->cap_work) return true;
    int64_t cap = opt->cap_work ? opt->cap_work : 32;
    while (cap < n) cap *= 2;
    optim_work *w = realloc(opt->work, (size_t)cap * sizeof *w);
    if (!w) return false;
    opt->work = w;
    opt->cap_work = cap;
    return true;
}

/* Resolves the gradient of params[i] and checks it against the parameter. */
static tk_status prepare(tk_optim *opt, tk_ctx *ctx, int32_t i, tk_tensor *p, optim_work *w) {
    char s1[64], s2[64];
    memset(w, 0, sizeof *w);
    if (!p) return step_fail(ctx, "optimizer step: params[%d] is NULL", (int)i);
    if (!(p->flags & TK_TENSOR_HEAP))
        return step_fail(ctx,
                         "optimizer step: params[%d] is not a heap tensor (a parameter must be "
                         "created with tk_tensor_new)",
                         (int)i);
    if (p->dtype != TK_F32)
        return step_fail(ctx, "optimizer step: params[%d] is %s, expected float32", (int)i, tk_dtype_name(p->dtype));
    tk_tensor *alias = find_alias(ctx, p);
    if (!alias || (!alias->grad && !alias->sparse)) return TK_OK; /* no gradient: skipped */
    if (p->numel == 0) return TK_OK;                              /* nothing to update */
    if (alias->sparse && !alias->grad) {
        const tk_sparse_grad *sg = tk_ctx_sparse_grad(ctx, p);
        if (!sg) return step_fail(ctx, "optimizer step: params[%d]: cannot read its sparse gradient", (int)i);
        int64_t dim = p->ndim == 2 ? p->shape[1] : 1;
        if (sg->dim != dim || dim <= 0)
            return step_fail(ctx, "optimizer step: params[%d] %s has sparse gradient rows of width %lld", (int)i,
                             tk_shape_str(p, s1, sizeof s1), (long long)sg->dim);
        int64_t nrows = p->numel / dim;
        for (int64_t r = 0; r < sg->n; r++)
            if (sg->rows[r] < 0 || sg->rows[r] >= nrows)
                return step_fail(ctx, "optimizer step: params[%d] %s has a sparse gradient for row %lld", (int)i,
                                 tk_shape_str(p, s1, sizeof s1), (long long)sg->rows[r]);
        w->kind = GRAD_SPARSE;
        w->sparse = sg;
    } else {
        /* dense, or sparse plus dense parts: the dense sum */
        tk_tensor *g = tk_ctx_grad(ctx, p);
        if (!g) return step_fail(ctx, "optimizer step: params[%d]: cannot read its gradient", (int)i);
        if (g->dtype != TK_F32 || g->numel != p->numel)
            return step_fail(ctx, "optimizer step: params[%d] is %s but its gradient is %s", (int)i,
                             tk_shape_str(p, s1, sizeof s1), tk_shape_str(g, s2, sizeof s2));
        w->kind = GRAD_DENSE;
        w->dense = tk_f32(g);
    }
    w->state = state_get(opt, p);
    if (!w->state) return step_fail(ctx, "optimizer step: out of memory for the state of params[%d]", (int)i);
    if (w->kind == GRAD_SPARSE && !opt->lazy && needs_catchup(opt) && !lazy_attach(opt, w->state, w->sparse->dim)) {
        if (p->lazy)
            return step_fail(ctx, "optimizer step: params[%d] %s is trained with lazy = false by another optimizer",
                             (int)i, tk_shape_str(p, s1, sizeof s1));
        return step_fail(ctx, "optimizer step: out of memory for the row counters of params[%d]", (int)i);
    }
    if (w->state->stamp == opt->calls) { /* listed twice: update once */
        if (w->state->stamp_ctx != ctx)
            return step_fail(ctx, "optimizer step: params[%d] %s has gradients in two contexts", (int)i,
                             tk_shape_str(p, s1, sizeof s1));
        w->kind = GRAD_NONE;
    }
    w->state->stamp = opt->calls;
    w->state->stamp_ctx = ctx;
    return TK_OK;
}

/* Checks the optimizer and a context before a step. */
static tk_status check_step(tk_optim *opt, tk_ctx *ctx) {
    if (!ctx) return step_fail(NULL, "optimizer step: context is NULL");
    if (!opt) return step_fail(ctx, "optimizer step: optimizer is NULL");
    if (ctx->failed) {
        tk_set_error("optimizer step: the context has an error: %s", ctx->error);
        return TK_ERROR;
    }
    return TK_OK;
}

/* Resolves the gradients of params (from ctx) into opt->work[first, first + n). */
static tk_status prepare_all(tk_optim *opt, tk_ctx *ctx, int64_t first, int32_t n, tk_tensor *const *params) {
    if (n < 0) return step_fail(ctx, "optimizer step: negative parameter count %d", (int)n);
    if (n > 0 && !params) return step_fail(ctx, "optimizer step: params is NULL");
    if (!ensure_work(opt, first + n)) return step_fail(ctx, "optimizer step: out of memory");
    if (!opt->lazy && needs_catchup(opt) && !opt->hist && !(opt->hist = malloc(HIST_MAX * sizeof *opt->hist)))
        return step_fail(ctx, "optimizer step: out of memory");
    for (int32_t i = 0; i < n; i++)
        if (prepare(opt, ctx, i, params[i], &opt->work[first + i]) != TK_OK) return TK_ERROR;
    return TK_OK;
}

/* Counts the step and sets the rule's constants for it (opt->ac). */
static void begin_apply(tk_optim *opt) {
    opt->steps++;
    adam_consts ac = { 0 };
    if (opt->kind == OPTIM_ADAM) {
        double t = (double)opt->steps;
        ac.lr = opt->lr;
        ac.b1 = opt->beta1;
        ac.b2 = opt->beta2;
        ac.eps = opt->eps;
        ac.decay = (float)(1.0 - (double)opt->lr * (double)opt->weight_decay);
        ac.step_size = (float)((double)opt->lr / (1.0 - pow((double)opt->beta1, t)));
        ac.bc2_sqrt = (float)sqrt(1.0 - pow((double)opt->beta2, t));
    }
    if (!opt->lazy && opt->hist) hist_record(opt, &ac);
    opt->ac = ac;
}

/* Touches the pages of x[0, n) for writing first. The moments are calloc'd: untouched
 * pages are mapped on first access. A lazy update of a table row reads its moments
 * before writing them, and a read maps the shared zero page, which the write right
 * after must copy, flushing the TLBs of every thread of the process (the two trainer
 * threads: 4% of a W1 step went to those flushes). An atomic or of 0 is a write that
 * changes nothing: the page is faulted in writable at once. */
static void touch_for_write(float *x, int64_t n) {
    const uintptr_t page = 4096;
    if (n <= 0) return;
    __atomic_fetch_or((uint32_t *)(void *)x, 0u, __ATOMIC_RELAXED);
    for (uintptr_t a = ((uintptr_t)x & ~(page - 1)) + page; a < (uintptr_t)(x + n); a += page)
        __atomic_fetch_or((uint32_t *)a, 0u, __ATOMIC_RELAXED); /* each further page's first float */
}

/* Applies the rule to opt->work[lo, hi) with the constants of begin_apply. Items are
 * distinct parameters (duplicates are GRAD_NONE), so disjoint ranges may run at once. */
static void apply_range(tk_optim *opt, int64_t lo, int64_t hi) {
    const adam_consts *ac = &opt->ac;
    for (int64_t i = lo; i < hi; i++) {
        optim_work *w = &opt->work[i];
        lazy_table *lz = w->kind != GRAD_NONE ? w->state->lz : NULL; /* lazy = false */
        if (lz) pthread_mutex_lock(&lz->hook.mu);
        if (w->kind == GRAD_DENSE) {
            if (lz) lazy_sync_to(lz, opt->steps - 1); /* every row up to the previous step */
            update_span(opt, ac, w->state, 0, w->dense, w->state->numel);
            if (lz) {
                for (int64_t r = 0; r < lz->rows; r++) lz->last[r] = opt->steps;
                lz->synced = opt->steps;
            }
        } else if (w->kind == GRAD_SPARSE) {
            const tk_sparse_grad *sg = w->sparse;
            int nb = w->state->buf ? nbufs(opt) : 0;
            gap_factors g = { .s = -1 };
            for (int64_t r = 0; r < sg->n; r++) {
                int64_t row = sg->rows[r], off = row * sg->dim;
                for (int b = 0; b < nb; b++) touch_for_write(w->state->buf + b * w->state->numel + off, sg->dim);
                if (lz) {
                    /* the steps it skipped (none if the forward read it: the lookup synced it) */
                    if (lz->last[row] < opt->steps - 1) {
                        gap_get(opt, lz->last[row], opt->steps - 1, &g);
                        catch_up_row(opt, lz, row, &g);
                    }
                    lz->last[row] = opt->steps;
                }
                update_span(opt, ac, w->state, off, sg->values + r * sg->dim, sg->dim);
            }
        }
        if (lz) pthread_mutex_unlock(&lz->hook.mu);
    }
}

/* Counts the step and applies the rule to opt->work[0, n). */
static void apply_all(tk_optim *opt, int64_t n) {
    begin_apply(opt);
    apply_range(opt, 0, n);
}

tk_status tk_optim_step(tk_optim *opt, tk_ctx *ctx, int32_t n, tk_tensor *const *params) {
    if (check_step(opt, ctx) != TK_OK) return TK_ERROR;
    /* Check everything before writing anything. */
    opt->calls++;
    if (prepare_all(opt, ctx, 0, n, params) != TK_OK) return TK_ERROR;
    apply_all(opt, n);
    tk_ctx_apply_updates(ctx);
    return TK_OK;
}

typedef struct block_collect {
    tk_optim *opt;
    bool oom;
} block_collect;

static int collect_param(void *ud, const char *path, tk_tensor *param, bool trainable) {
    block_collect *bc = ud;
    tk_optim *opt = bc->opt;
    if (!trainable) return 0;
    if (opt->nblock_params == opt->cap_block_params) {
        int64_t cap = opt->cap_block_params ? opt->cap_block_params * 2 : 32;
        tk_tensor **a = realloc(opt->block_params, (size_t)cap * sizeof *a);
        if (!a) {
            bc->oom = true;
            return 1;
        }
        opt->block_params = a;
        opt->cap_block_params = cap;
    }
    opt->block_params[opt->nblock_params++] = param;
    return 0;
}

/* Appends the trainable parameters of b to opt->block_params. */
static tk_status collect_block(tk_optim *opt, tk_ctx *ctx, const tk_block *b) {
    if (!b) return step_fail(ctx, "optimizer step: block is NULL");
    block_collect bc = { opt, false };
    tk_block_visit_params(b, false, collect_param, &bc);
    if (bc.oom) return step_fail(ctx, "optimizer step: out of memory");
    if (opt->nblock_params > INT32_MAX)
        return step_fail(ctx, "optimizer step: too many parameters (%lld)", (long long)opt->nblock_params);
    return TK_OK;
}

tk_status tk_optim_step_block(tk_optim *opt, tk_ctx *ctx, const tk_block *b) {
    if (!ctx) return step_fail(NULL, "optimizer step: context is NULL");
    if (!opt) return step_fail(ctx, "optimizer step: optimizer is NULL");
    opt->nblock_params = 0;
    if (collect_block(opt, ctx, b) != TK_OK) return TK_ERROR;
    return tk_optim_step(opt, ctx, (int32_t)opt->nblock_params, opt->block_params);
}

tk_status tk_optim_prepare_contexts(tk_optim *opt, int32_t n, tk_ctx *const *ctxs, const tk_block *const *blocks,
                                    int64_t *ends) {
    if (n < 1 || !ctxs || !blocks) return step_fail(NULL, "optimizer step: no context given");
    for (int32_t c = 0; c < n; c++)
        if (check_step(opt, ctxs[c]) != TK_OK) return TK_ERROR;
    /* Check everything before writing anything: every block's parameters, with the
     * gradients of its context, go into one work list. */
    opt->calls++;
    int64_t total = 0;
    for (int32_t c = 0; c < n; c++) {
        opt->nblock_params = 0;
        if (collect_block(opt, ctxs[c], blocks[c]) != TK_OK) return TK_ERROR;
        if (prepare_all(opt, ctxs[c], total, (int32_t)opt->nblock_params, opt->block_params) != TK_OK) return TK_ERROR;
        total += opt->nblock_params;
        if (ends) ends[c] = total;
    }
    opt->nwork = total;
    begin_apply(opt);
    return TK_OK;
}

void tk_optim_apply_range(tk_optim *opt, int64_t lo, int64_t hi) { apply_range(opt, lo, hi); }

tk_status tk_optim_step_contexts(tk_optim *opt, int32_t n, tk_ctx *const *ctxs, const tk_block *const *blocks) {
    if (tk_optim_prepare_contexts(opt, n, ctxs, blocks, NULL) != TK_OK) return TK_ERROR;
    apply_range(opt, 0, opt->nwork);
    for (int32_t c = 0; c < n; c++) tk_ctx_apply_updates(ctxs[c]);
    return TK_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Clipping                                                                              */
/* ------------------------------------------------------------------------------------ */

/* In double, in 4 lanes (tk_dot_f64): one serial chain of double additions was a
 * visible part of a training step. */
static double sum_sq(const float *x, int64_t n) { return tk_dot_f64(x, x, n); }

static void scale(float *x, int64_t n, float c) {
    for (int64_t i = 0; i < n; i++) x[i] *= c;
}

tk_status tk_grads_sum_sq(tk_ctx *ctx, double sums[2]) {
    sums[0] = sums[1] = 0.0;
    for (int64_t i = 0; i < ctx->nleaves; i++) {
        tk_tensor *a = ctx->leaves[i].alias;
        double *total = &sums[(ctx->leaves[i].source->flags & TK_TENSOR_ROW_SHARD) != 0];
        if (a->grad) *total += sum_sq(tk_f32(a->grad), a->grad->numel);
        if (!a->sparse) continue;
        /* coalesced: duplicate rows are one gradient row, and its norm is of their sum */
        const tk_sparse_grad *sg = tk_ctx_sparse_grad(ctx, ctx->leaves[i].source);
        if (!sg) return step_fail(ctx, "clip_grad_norm: cannot read a sparse gradient");
        for (int64_t r = 0; r < sg->n; r++) {
            const float *v = sg->values + r * sg->dim;
            if (!a->grad) {
                *total += sum_sq(v, sg->dim);
                continue;
            }
            /* sparse and dense parts of one table: the row's gradient is their sum */
            const float *d = tk_f32(a->grad) + sg->rows[r] * sg->dim;
            double s = 0.0;
            for (int64_t j = 0; j < sg->dim; j++) {
                double x = (double)d[j] + (double)v[j];
                s += x * x - (double)d[j] * (double)d[j];
            }
            *total += s;
        }
    }
    return TK_OK;
}

double tk_grads_clip(tk_ctx *ctx, double total, double max_norm) {
    double norm = sqrt(total < 0.0 ? 0.0 : total);        /* < 0 only by rounding; NaN stays NaN */
    if (!isfinite(norm) || norm <= max_norm) return norm; /* non-finite: left as they are */
    float c = (float)(max_norm / norm);
    for (int64_t i = 0; i < ctx->nleaves; i++) {
        tk_tensor *a = ctx->leaves[i].alias;
        if (a->grad) scale(tk_f32(a->grad), a->grad->numel, c);
        if (a->sparse) scale(a->sparse->values, a->sparse->n * a->sparse->dim, c);
    }
    return norm;
}

double tk_clip_grad_norm(tk_ctx *ctx, double max_norm) {
    if (!ctx) {
        step_fail(NULL, "clip_grad_norm: context is NULL");
        return -1.0;
    }
    if (ctx->failed) {
        tk_set_error("clip_grad_norm: the context has an error: %s", ctx->error);
        return -1.0;
    }
    if (isnan(max_norm) || !(max_norm > 0.0)) {
        step_fail(ctx, "clip_grad_norm: max_norm must be > 0, got %g", max_norm);
        return -1.0;
    }
    double sums[2];
    if (tk_grads_sum_sq(ctx, sums) != TK_OK) return -1.0;
    return tk_grads_clip(ctx, sums[0] + sums[1], max_norm);
}
