/* Internal helpers shared by the core's translation units. Not installed. */
#ifndef TK_INTERNAL_H
#define TK_INTERNAL_H

#include "towerkit_ext.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define TK_ERR_LEN 512
#define TK_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Arena: a list of chunks; reset keeps one chunk as large as the peak use, so a
 * repeated step settles into a single allocation. */
typedef struct tk_arena_chunk {
    struct tk_arena_chunk *next;
    size_t size, used;
    /* data follows, 64-byte aligned */
} tk_arena_chunk;

typedef struct tk_arena {
    tk_arena_chunk *head; /* current chunk (newest first) */
    size_t total_used;    /* bytes handed out since reset */
    size_t peak;          /* largest total_used seen */
    uint64_t mallocs;
} tk_arena;

void tk_arena_init(tk_arena *a);
void *tk_arena_alloc(tk_arena *a, size_t bytes); /* 64-byte aligned; NULL on OOM */
void tk_arena_reset(tk_arena *a);
void tk_arena_free(tk_arena *a);
size_t tk_arena_capacity(const tk_arena *a);

/* The thread pool (parallel.c). tk_parallel_run calls fn(arg, task, slot) for every task
 * in [0, ntasks) on at most `threads` threads (the caller among them; <= 0: the process's
 * tk_get_num_threads()), and returns when all have finished. `slot` (0 for the caller,
 * below `threads`) tells which of the job's threads runs the task: for per-thread
 * scratch, never for arithmetic (a task's results must depend on its index alone). Tasks
 * may call tk_parallel_run themselves. */
typedef void (*tk_task_fn)(void *arg, int64_t task, int slot);
void tk_parallel_run(int64_t ntasks, int threads, tk_task_fn fn, void *arg);
/* Part i of `parts` near-equal parts of [0, n), boundaries at multiples of `align`. */
void tk_split_range(int64_t n, int64_t parts, int64_t i, int64_t align, int64_t *lo, int64_t *hi);

/* The read hook of a table whose rows may lag behind its optimizer (optim.c, lazy =
 * false). sync_rows brings rows[0, n) up to date, sync_all every row; both run under
 * `mu`, so readers on several threads (tk_block_embed's) may share a table. */
#include <pthread.h>
typedef struct tk_lazy_rows {
    void (*sync_rows)(void *ud, tk_tensor *t, int64_t n, const int64_t *rows);
    void (*sync_all)(void *ud, tk_tensor *t);
    void *ud;
    pthread_mutex_t mu;
} tk_lazy_rows;
/* The ids of one lookup of table t (a heap table, its context alias or a view). */
void tk_tensor_sync_rows(tk_tensor *t, int64_t n, const int64_t *rows);
/* Tests: moment array `which` (Adam: 0 m, 1 v; SGD: 0 v; Adagrad: 0 acc) of p, every row
 * brought up to date first; NULL if opt keeps none for p. */
const float *tk_optim_moments(tk_optim *opt, tk_tensor *p, int which);
/* tk_ctx_input without tk_tensor_sync: for the embedding lookup, which syncs its rows. */
tk_tensor *tk_ctx_input_rows(tk_ctx *ctx, tk_tensor *t);
/* The alias of heap leaf `source` in ctx (where its gradient and sparse rows gather), or
 * NULL when it is no leaf of ctx (not read with gradients since the last reset). */
tk_tensor *tk_ctx_leaf_alias(const tk_ctx *ctx, const tk_tensor *source);

/* A deferred write (batch-norm running statistics). */
typedef struct tk_update {
    tk_tensor *dst; /* retained heap tensor */
    const float *src;
    float a, b;
} tk_update;

/* The alias of a heap leaf inside one context. */
typedef struct tk_leaf {
    const tk_tensor *source;
    tk_tensor *alias;
} tk_leaf;

struct tk_ctx {
    tk_arena arena;
    uint64_t generation;
    uint64_t rng[4];
    bool training;
    bool grad_enabled;
    bool failed;
    char error[2 * TK_ERR_LEN + 2]; /* "path: message" as readers see it */
    char message[TK_ERR_LEN];       /* the innermost message */
    char path[TK_ERR_LEN];          /* block path pushed by enclosing blocks */
    /* tape: arena array grown by doubling (old arrays stay in the arena until reset) */
    tk_node **tape;
    int64_t ntape, cap_tape;
    bool tape_used; /* tk_backward ran the tape: a second run would add its gradients again */
    /* leaves: heap tensors requiring gradients, mapped to their aliases */
    tk_leaf *leaves;
    int64_t nleaves, cap_leaves;
    /* heap tensors the tape or a value points to, retained until reset */
    tk_tensor **kept;
    int64_t nkept, cap_kept;
    /* deferred updates and added losses */
    tk_update *updates;
    int64_t nupdates, cap_updates;
    tk_tensor *added_loss;
    tk_trace_fn trace;
    void *trace_ud;
    tk_backward_hook_fn backward_hook; /* tk_ctx_set_backward_hook; cleared by reset */
    void *backward_hook_ud;
    int trace_depth;
    uint64_t mallocs; /* malloc calls outside the arena (growing side arrays) */
    int threads;      /* tk_ctx_set_num_threads; 0: the process's count */
};

/* Random numbers: xoshiro256** seeded by splitmix64. */
void tk_rng_seed(uint64_t state[4], uint64_t seed);
uint64_t tk_rng_next(uint64_t state[4]);
float tk_rng_uniform(uint64_t state[4]);
float tk_rng_normal(uint64_t state[4]);
/* tk_init_fill of rows [lo, lo + count) of a [rows, D] table into t ([count, D], float32):
 * the values the whole table filled with the same init and seed has in those rows (the
 * stream is drawn from its start and the rows before lo are discarded; memory O(D)). */
tk_status tk_init_fill_rows(tk_tensor *t, tk_init init, uint64_t seed, int64_t rows, int64_t lo);

/* Shape helpers */
int64_t tk_shape_numel(int32_t ndim, const int64_t *shape);
/* The element count of a shape, false if a dimension is negative or the count (in
 * bytes of the largest dtype) overflows. */
bool tk_shape_numel_checked(int32_t ndim, const int64_t *shape, int64_t *out);
/* A heap tensor that takes ownership of `data`, malloc'd memory of at least numel
 * elements (NULL allowed when numel is 0); freed by the last tk_tensor_release. On
 * failure frees data and returns NULL (tk_last_error). Readers use it to hand over
 * buffers they grew without copying them. */
tk_tensor *tk_tensor_adopt(tk_dtype dtype, int32_t ndim, const int64_t *shape, void *data);
/* Checks a tensor's dtype and rank; on failure sets ctx error naming `op` and `arg`. */
bool tk_check_f32(tk_ctx *ctx, const char *op, const char *arg, const tk_tensor *t);
bool tk_check_rank(tk_ctx *ctx, const char *op, const char *arg, const tk_tensor *t, int32_t ndim);

/* A malloc'd copy of a C string (NULL on no memory or for NULL). */
char *tk_strdup(const char *s);
/* util.c: a qsort comparator of C strings held by pointer (const char *[]); a malloc'd
 * copy of `size` bytes (NULL on no memory); the kind of a JSON value for messages ("an
 * object", "an array", "a string", "a number", "a boolean", "null", or "missing" for
 * NULL). */
int tk_strcmp_ptr(const void *a, const void *b);
void *tk_memdup(const void *p, size_t size);
/* util.c: the first of n (id, row) pairs (2n int64, sorted by id) whose id is >= id; n
 * when there is none. The item catalogues map ids to rows through such pairs. */
int64_t tk_pairs_lower_bound(const int64_t *pairs, int64_t n, int64_t id);
/* The first i in [0, n) with a[i] >= v in the ascending a (n when none). */
int64_t tk_lower_bound_i64(const int64_t *a, int64_t n, int64_t v);
/* qsort's comparison of int64_t values, ascending. */
int tk_cmp_i64(const void *a, const void *b);
struct cJSON;
const char *tk_json_kind(const struct cJSON *v);
/* The first row (index along dim 0; 0 for a scalar) of a float32 tensor that holds a
 * NaN or an infinity, with that value in *value; -1 when every value is finite or the
 * tensor is not float32. Loaders refuse such weights and embeddings, which would
 * otherwise turn every score they touch into NaN. */
int64_t tk_first_nonfinite_row(const tk_tensor *t, float *value);

/* The in-batch retrieval loss in parts (retrieval.c), for a caller that runs them on
 * several threads (the two-tower trainer). tk_rl_prepare validates as tk_retrieval_loss
 * and allocates everything in ctx (the caller's thread), with scratch for `parts`
 * concurrent forward parts (at least 1). Then, concurrently over disjoint row ranges,
 * tk_rl_forward_rows (part: which scratch, below `parts`) returns the sum of w_b ce_b over its
 * rows (the loss is the sum over all rows / B). Then tk_rl_backward_begin (ctx's thread)
 * with the loss gradient g and the gradients to accumulate into (any may be NULL), and
 * concurrently tk_rl_backward_query over disjoint row ranges (dq) and
 * tk_rl_backward_items (dc, dn). The inputs must stay alive and unchanged throughout. */
typedef struct tk_rl_plan tk_rl_plan;
tk_rl_plan *tk_rl_prepare(tk_ctx *ctx, tk_tensor *query, tk_tensor *item, const tk_retrieval_opts *opts, int parts);
double tk_rl_forward_rows(tk_rl_plan *p, int64_t r0, int64_t r1, int part);
bool tk_rl_backward_begin(tk_ctx *ctx, tk_rl_plan *p, double g, float *dq, float *dc, float *dn);
void tk_rl_backward_query(tk_rl_plan *p, int64_t r0, int64_t r1);
void tk_rl_backward_items(tk_rl_plan *p);

/* tk_ctx_sparse_append without the copy: appends the n row indices and returns where
 * their n x dim gradient values go (the caller writes every one), NULL when out of
 * memory (the context has failed). */
float *tk_ctx_sparse_reserve(tk_ctx *ctx, tk_tensor *table_alias, int64_t n, const int64_t *rows);

/* The optimizer step of tk_optim_step_contexts in two parts, for a caller that applies it
 * on several threads: tk_optim_prepare_contexts checks and resolves every gradient (and
 * counts the step; nothing is written yet) and sets ends[c] to the end of context c's
 * items; then tk_optim_apply_range over disjoint ranges (the items of one context, one
 * thread each), then tk_ctx_apply_updates for each context. */
tk_status tk_optim_prepare_contexts(tk_optim *opt, int32_t n, tk_ctx *const *ctxs, const tk_block *const *blocks,
                                    int64_t *ends);
void tk_optim_apply_range(tk_optim *opt, int64_t lo, int64_t hi);

/* optim.c, tk_clip_grad_norm in parts (tk_dist_tables_clip_grad_norm adds the shards'
 * part over the ranks between them). tk_grads_sum_sq: the sums of squares of ctx's
 * gradients (coalesced; a table with a dense and a sparse gradient: of their sum), those
 * of row shards (TK_TENSOR_ROW_SHARD) in sums[1], every other leaf's in sums[0]; TK_ERROR
 * (ctx failed) when a sparse gradient cannot be read. tk_grads_clip: the norm
 * sqrt(total), and every gradient of ctx scaled by max_norm / norm when that is finite
 * and above max_norm. */
tk_status tk_grads_sum_sq(tk_ctx *ctx, double sums[2]);
double tk_grads_clip(tk_ctx *ctx, double total, double max_norm);

/* y = l2norm(x) over rows [rows, n], as tk_l2norm's forward (the same bits), into any
 * buffer: the item export writes the post-tower norm straight into its result. */
void tk_l2norm_rows(float *y, const float *x, int64_t rows, int64_t n);

/* blas.c: the CPU features that choose an OpenBLAS kernel. tk_cpu_detect fills them from
 * cpuid and xgetbv and writes "vendor brand" into cpu; false (all features off, cpu
 * "unknown") where there is no cpuid. tk_blas_kernel_for names the best kernel for them
 * (the OS must enable the registers too); tk_blas_kernel_weaker tells whether `kernel`
 * runs float32 matrix products slower than `best` (false when either name is one we do
 * not rank). tk_blas_warn_once prints the stderr line of towerkit.h's "BLAS kernel" once
 * per process; checkpoint reads call it. */
typedef struct tk_cpu_features {
    bool amd; /* AuthenticAMD or HygonGenuine: the AVX2 kernel is "Zen" */
    bool sse42, avx, fma, avx2;
    bool avx512f, avx512bw, avx512dq, avx512vl, avx512bf16;
    bool os_avx, os_avx512; /* XCR0 enables the YMM, and the opmask and ZMM, state */
} tk_cpu_features;
bool tk_cpu_detect(tk_cpu_features *f, char *cpu, size_t len);
const char *tk_blas_kernel_for(const tk_cpu_features *f);
bool tk_blas_kernel_weaker(const char *kernel, const char *best);
void tk_blas_warn_once(void);

/* Tests: the two-tower trainer's item task takes at most a fixed number of the query
 * gradient's last blocks instead of the measured balance; -1 restores the balance. */
void tk_two_tower_trainer_fix_tail(tk_two_tower_trainer *t, int64_t blocks);

/* util.c: numbers as text. tk_pow10_tab[k + 60] is the double nearest 10^k for
 * -60 <= k <= 60 (the CSV parser's exact fast path and the formatter). tk_format_f32
 * writes the shortest decimal text (at most 9 significant digits, %g style: plain from
 * 1e-5 up to 1e9) that strtof reads back as exactly v (finite); the CSV writer and the
 * block configs both use it, so a float is written one way everywhere. out needs 32
 * bytes; tk_format_i64 needs 21. Both return the length written (no NUL). */
extern const double tk_pow10_tab[121];
static inline double tk_p10(int k) { return tk_pow10_tab[k + 60]; }
int tk_format_f32(float v, char *out);
int tk_format_i64(int64_t v, char *out);

#endif
