/*
 * towerkit.h - the C core of towerkit: tensors, reverse-mode gradients, blocks and
 * optimizers for two-tower retrieval models. No Lua in here: a C host can build, train
 * and run a model with this header and libtowerkit alone; towerkit_ext.h adds what
 * writing an op or a block kind takes (the tape, the block struct and its kind).
 *
 * A worked example: a two-layer MLP fitted to one batch by hand. Every object it makes
 * is released at its end (tests/c/test_header_example.c runs this text, line for line,
 * under the sanitizers too, and fails when the two differ):
 *
 *     tk_tensor *x = tk_tensor_new_2d(TK_F32, 8, 4), *y = tk_tensor_new_2d(TK_F32, 8, 1);
 *     for (int i = 0; i < 32; i++) tk_f32(x)[i] = (float)(i % 5) - 2.0f;
 *     for (int i = 0; i < 8; i++) tk_f32(y)[i] = 0.5f * tk_f32(x)[4 * i] + 1.0f;
 *     tk_block *mlp = tk_sequential_new("mlp");
 *     tk_block *layers[2] = {
 *         tk_dense_new("dense_0", 0, 16, TK_ACT_RELU, true, tk_init_default_kernel(),
 *                      tk_init_zeros(), 1),
 *         tk_dense_new("dense_1", 0, 1, TK_ACT_LINEAR, true, tk_init_default_kernel(),
 *                      tk_init_zeros(), 2),
 *     };
 *     for (int i = 0; i < 2; i++) {
 *         tk_sequential_append(mlp, layers[i]);    // mlp retains the layer,
 *         tk_block_release(layers[i]);             // so ours goes
 *     }
 *     tk_optim *opt = tk_optim_adam_new(1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f);
 *     tk_ctx *ctx = tk_ctx_new(42);
 *     float last = NAN;
 *     for (int step = 0; step < 100; step++) {
 *         tk_ctx_reset(ctx);                       // frees the last step's intermediates
 *         tk_ctx_set_training(ctx, true);
 *         tk_value *out = tk_block_forward(ctx, mlp, tk_value_of(ctx, x));
 *         tk_tensor *loss = tk_mse_loss(ctx, tk_value_tensor(out), y);
 *         if (!loss || tk_backward(ctx, loss) != TK_OK) {
 *             fprintf(stderr, "%s\n", tk_ctx_error(ctx));
 *             break;
 *         }
 *         last = tk_f32(loss)[0];                  // loss lives in ctx until the reset
 *         tk_optim_step_block(opt, ctx, mlp);      // reads the gradients of ctx
 *     }
 *     tk_ctx_free(ctx);
 *     tk_optim_free(opt);
 *     tk_block_release(mlp);
 *     tk_tensor_release(x);
 *     tk_tensor_release(y);
 *
 * Conventions
 * - Names are tk_<class>_<action>; constructors are *_new, destructors *_free (owned
 *   once) or *_release (reference counted).
 * - Long-lived tensors (parameters, inputs a host owns, results it keeps) are *heap*
 *   tensors: reference counted, created by tk_tensor_new*, freed by the last
 *   tk_tensor_release. Every tensor an op returns is an *arena* tensor of the tk_ctx it
 *   ran in: valid until tk_ctx_reset or tk_ctx_free, never released by hand.
 * - Errors never abort. Ops return NULL and set the context's message; an op given a
 *   NULL input returns NULL and keeps the first message, so a chain of ops needs one
 *   check at its end. Functions without a context return NULL or a non-zero status and
 *   set a thread-local message read with tk_last_error().
 * - Blocks and parameters are read-only during tk_block_forward, so one model serves many
 *   contexts (threads) at once. What a forward pass wants to write (batch-norm running
 *   statistics) is recorded in the context and applied by tk_ctx_apply_updates, which
 *   the optimizer step calls. The one exception is the first call of a block whose input
 *   width was not given: it builds its weights once, under a lock.
 * - Every pointer returned says whose it is. What a *_new, *_clone, *_copy, *_load,
 *   *_read, *_open or *_next returns is the caller's: one reference to release, or an
 *   object to free with the matching function. What a function taking a tk_ctx returns
 *   (ops, values, gradients) is arena memory of that context. Accessors (tk_block_*,
 *   tk_model_*, tk_value_get, ...) return borrowed pointers, valid while their owner
 *   lives and holds them. Names (tk_dtype_name, tk_*_name, tk_*_names) are static text.
 */
#ifndef TOWERKIT_H
#define TOWERKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TK_VERSION "0.1.0"
#define TK_MAX_DIMS 4

typedef enum tk_status { TK_OK = 0, TK_ERROR = -1 } tk_status;

/* ------------------------------------------------------------------------------------ */
/* Tensors                                                                               */
/* ------------------------------------------------------------------------------------ */

typedef enum tk_dtype { TK_F32 = 0, TK_I64 = 1 } tk_dtype;

enum {
    TK_TENSOR_HEAP = 1u << 0,          /* reference counted, owns its data */
    TK_TENSOR_REQUIRES_GRAD = 1u << 1, /* a leaf whose gradient is wanted */
    TK_TENSOR_VIEW = 1u << 2,          /* data belongs to another tensor */
    TK_TENSOR_ROW_SHARD = 1u << 3,     /* a rank's rows of a row-sharded table (towerkit_dist.h) */
};

typedef struct tk_ctx tk_ctx;
typedef struct tk_node tk_node;
typedef struct tk_sparse_grad tk_sparse_grad;

/* A dense, row-major, contiguous tensor of up to four dimensions. Fields are public for
 * reading; change them only through the functions below. */
typedef struct tk_tensor {
    tk_dtype dtype;
    int32_t ndim;
    int64_t shape[TK_MAX_DIMS];
    int64_t numel;
    void *data;
    uint32_t flags;
    int32_t refcount;       /* heap tensors only (atomic) */
    struct tk_tensor *base; /* views of heap tensors keep their base alive */
    /* autograd; set on arena tensors of a context only */
    struct tk_tensor *grad;         /* dense gradient, allocated on first accumulation */
    tk_sparse_grad *sparse;         /* sparse row gradient of an embedding table alias */
    tk_node *node;                  /* the op that produced it, NULL for leaves */
    const struct tk_tensor *source; /* for a context alias of a heap leaf: that leaf */
    bool requires_grad;             /* gradients flow to or through this tensor */
    /* heap tables only: set by an optimizer with lazy = false whose rows may lag behind
     * its step count until read (tk_tensor_sync); NULL otherwise */
    struct tk_lazy_rows *lazy;
} tk_tensor;

/* Heap tensors with one reference, the caller's. `shape` has `ndim` entries
 * (0 <= ndim <= 4; ndim 0 is a scalar). Data is zero-filled. Returns NULL
 * (tk_last_error) on a bad shape or no memory. */
tk_tensor *tk_tensor_new(tk_dtype dtype, int32_t ndim, const int64_t *shape);
tk_tensor *tk_tensor_new_1d(tk_dtype dtype, int64_t n0);
tk_tensor *tk_tensor_new_2d(tk_dtype dtype, int64_t n0, int64_t n1);
/* A heap copy of any tensor (arena or heap), the caller's; drops gradient state. */
tk_tensor *tk_tensor_clone(const tk_tensor *t);
/* A heap view of a heap tensor with another shape of the same numel, the caller's; the
 * view retains t, so the data lives until both are released. */
tk_tensor *tk_tensor_reshape_view(tk_tensor *t, int32_t ndim, const int64_t *shape);
void tk_tensor_retain(tk_tensor *t);
void tk_tensor_release(tk_tensor *t); /* NULL and arena tensors are ignored */
/* Marks a heap tensor as a parameter or other leaf whose gradient contexts compute. */
void tk_tensor_set_requires_grad(tk_tensor *t, bool on);
/* Brings every row of an embedding table up to date with the optimizer that trains it
 * with lazy = false (tk_optim_set_lazy): rows a step did not touch get their skipped
 * updates when read. The core's readers (ops, tk_block_embed, tk_checkpoint_write, clone,
 * copy, fill) call it; call it before reading t->data directly. A no-op for any other
 * tensor (or a view of a table: its base is synced). Safe from several threads. */
void tk_tensor_sync(tk_tensor *t);

/* The data of t, borrowed from it. */
static inline float *tk_f32(const tk_tensor *t) { return (float *)t->data; }
static inline int64_t *tk_i64(const tk_tensor *t) { return (int64_t *)t->data; }
size_t tk_dtype_size(tk_dtype dtype);
const char *tk_dtype_name(tk_dtype dtype);
bool tk_tensor_same_shape(const tk_tensor *a, const tk_tensor *b);
/* Writes "[2, 3]" into buf; returns buf. */
char *tk_shape_str(const tk_tensor *t, char *buf, size_t len);
/* Copies src's values into dst (same dtype and numel). */
tk_status tk_tensor_copy_from(tk_tensor *dst, const tk_tensor *src);
void tk_tensor_fill(tk_tensor *t, double value);

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                                */
/* ------------------------------------------------------------------------------------ */

/* The message of the last failed call without a context on this thread: a thread-local
 * buffer that the next failure on the thread overwrites. */
const char *tk_last_error(void);
void tk_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------------------------ */
/* JSON (on cJSON; void * keeps cJSON out of this header)                                */
/* ------------------------------------------------------------------------------------ */

#define TK_JSON_MAX_DEPTH 1000 /* nesting levels, cJSON's limit */
#define TK_JSON_NUMBER_LEN 32  /* room for tk_json_number_text's text and its NUL */

/* Parses one JSON document strictly (RFC 8259): a cJSON tree (cJSON_Delete), or NULL and
 * tk_last_error "<what>: invalid JSON at line L (byte B): <why>" on a syntax error, text
 * after the value, a NUL character in a string (raw or \u0000), a control character in
 * a string, a number with a leading zero (0100), nesting deeper than TK_JSON_MAX_DEPTH,
 * or "<what>: a.b[2] is a number too large for a double (inf)". what names the file or
 * the input (NULL: none). */
void *tk_json_parse(const char *text, size_t len, const char *what);
/* Prints a cJSON tree with every number exact: whole numbers up to 2^53 as integers,
 * others as the shortest of %.15g/%.16g/%.17g that reads back as the same double.
 * cJSON-allocated text (cJSON_free), or NULL (tk_last_error) on no memory or a number
 * that is not finite. */
char *tk_json_print(const void *root, bool pretty);
/* Writes the exact text of finite d into out (TK_JSON_NUMBER_LEN bytes); its length. */
int tk_json_number_text(double d, char *out);

/* ------------------------------------------------------------------------------------ */
/* Contexts: one forward (and backward) pass                                             */
/* ------------------------------------------------------------------------------------ */

/* A context owns the arena of intermediates, the gradient tape, the RNG (for dropout
 * and for building lazily-sized blocks), the training flag and the error message. One
 * context is used by one thread at a time. tk_ctx_new returns NULL when out of memory;
 * tk_ctx_free frees the context and everything in its arena. */
tk_ctx *tk_ctx_new(uint64_t seed);
void tk_ctx_free(tk_ctx *ctx);
/* Frees every arena tensor, the tape, gradients and pending updates; keeps the memory
 * for the next step (steady-state steps allocate nothing). Clears the error. */
void tk_ctx_reset(tk_ctx *ctx);
/* Incremented by each reset: lets bindings detect a use of a released tensor. */
uint64_t tk_ctx_generation(const tk_ctx *ctx);
void tk_ctx_set_training(tk_ctx *ctx, bool training); /* dropout, batch-norm statistics */
bool tk_ctx_training(const tk_ctx *ctx);
void tk_ctx_set_grad_enabled(tk_ctx *ctx, bool on); /* on by default */
bool tk_ctx_grad_enabled(const tk_ctx *ctx);
void tk_ctx_seed(tk_ctx *ctx, uint64_t seed);
/* How many threads this context's large matrix products may be split over (Threads
 * below): n >= 1, or 0 (the default) for the process's tk_get_num_threads(). A server
 * that runs one request per thread sets 1. */
void tk_ctx_set_num_threads(tk_ctx *ctx, int n);
/* The count in force: the context's own, or the process's. */
int tk_ctx_get_num_threads(const tk_ctx *ctx);
uint64_t tk_ctx_rand_u64(tk_ctx *ctx);
float tk_ctx_rand_uniform(tk_ctx *ctx); /* [0, 1) */
float tk_ctx_rand_normal(tk_ctx *ctx);  /* N(0, 1) */
/* Error state. tk_ctx_error is the context's buffer ("" when none), valid until the next
 * call on ctx. tk_ctx_fail formats a message and returns NULL for `return tk_ctx_fail()`;
 * it keeps an earlier message. */
const char *tk_ctx_error(const tk_ctx *ctx);
bool tk_ctx_failed(const tk_ctx *ctx);
void *tk_ctx_fail(tk_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tk_ctx_clear_error(tk_ctx *ctx);
/* Bytes of arena memory the context holds (for tests of steady-state allocation). */
size_t tk_ctx_arena_capacity(const tk_ctx *ctx);
/* Count of malloc calls the context has made over its life. */
uint64_t tk_ctx_alloc_count(const tk_ctx *ctx);

/* Arena tensors of a context, zero-filled (tk_ctx_empty: not filled); valid until reset. */
tk_tensor *tk_ctx_zeros(tk_ctx *ctx, tk_dtype dtype, int32_t ndim, const int64_t *shape);
tk_tensor *tk_ctx_empty(tk_ctx *ctx, tk_dtype dtype, int32_t ndim, const int64_t *shape);
tk_tensor *tk_ctx_zeros_like(tk_ctx *ctx, const tk_tensor *t);
/* Raw arena memory, 64-byte aligned, valid until reset; a copy of s there. */
void *tk_ctx_alloc(tk_ctx *ctx, size_t bytes);
char *tk_ctx_strdup(tk_ctx *ctx, const char *s);

/* ------------------------------------------------------------------------------------ */
/* Gradients                                                                             */
/* ------------------------------------------------------------------------------------ */

/* Runs the tape backwards from `loss` (a tensor of one element) and accumulates the
 * gradients of every leaf that requires them. Once per tape: a second call before
 * tk_ctx_reset is an error (it would add the gradients again), as in PyTorch without
 * retain_graph. */
tk_status tk_backward(tk_ctx *ctx, tk_tensor *loss);
/* The dense gradient of a heap leaf after tk_backward, an arena tensor of ctx, or NULL
 * if it got none. For an embedding table that got sparse row gradients this materialises
 * a dense copy in the arena (for inspection and tests; optimizers read the sparse form). */
tk_tensor *tk_ctx_grad(tk_ctx *ctx, const tk_tensor *leaf);
/* Sparse row gradient of a table: `n` distinct rows in ascending order and their summed
 * gradient rows `values` ([n, dim] row-major). Coalesced on first call. */
struct tk_sparse_grad {
    int64_t n; /* number of rows (after coalescing: distinct) */
    int64_t cap;
    int64_t dim;
    int64_t *rows;
    float *values;
    bool coalesced;
};
/* The sparse gradient of a table leaf, owned by ctx until reset; NULL if it got none. */
tk_sparse_grad *tk_ctx_sparse_grad(tk_ctx *ctx, const tk_tensor *leaf);
/* Enumerates the heap leaves that received a gradient in this context; the context
 * holds a reference to each until reset. */
int64_t tk_ctx_leaf_count(const tk_ctx *ctx);
const tk_tensor *tk_ctx_leaf(const tk_ctx *ctx, int64_t i);
/* Retains a heap tensor until the next reset (arena tensors are ignored). Ops do it for
 * every heap input while gradients are on, so a tape never outlives the tensors it
 * reads; a host does it for heap tensors it puts into values and then lets go of. */
tk_status tk_ctx_keep(tk_ctx *ctx, tk_tensor *t);
/* Applies and clears the writes a forward pass deferred (batch-norm statistics); the
 * optimizer step calls it. */
void tk_ctx_apply_updates(tk_ctx *ctx);
/* The sum ([1]) of the regularisation losses blocks added during the forward pass
 * (Keras' add_loss; a dense kernel or an embeddings L2 penalty), or NULL if none: an
 * arena tensor of ctx. A training loop adds it to its loss before tk_backward. */
tk_tensor *tk_ctx_added_loss(tk_ctx *ctx);

/* ------------------------------------------------------------------------------------ */
/* Ops. Each returns an arena tensor of ctx, or NULL with the context's message set.     */
/* Float ops take TK_F32 tensors. "Broadcast" means: b has a's shape, or is a row vector */
/* ([n] or [1, n] with n = a's last dimension), or has one element.                      */
/* ------------------------------------------------------------------------------------ */

typedef enum tk_activation {
    TK_ACT_LINEAR = 0,
    TK_ACT_RELU,
    TK_ACT_SIGMOID,
    TK_ACT_TANH,
    TK_ACT_GELU, /* tanh approximation, as Keras' gelu(approximate=True) */
    TK_ACT_SELU,
    TK_ACT_ELU,
    TK_ACT_SOFTPLUS,
    TK_ACT_COUNT
} tk_activation;
/* "relu" -> TK_ACT_RELU; returns -1 for an unknown name. "linear" and NULL are linear. */
int tk_activation_from_name(const char *name);
const char *tk_activation_name(tk_activation act);
/* "linear, relu, sigmoid, ..." for error messages. */
const char *tk_activation_names(void);

typedef enum tk_combiner { TK_COMBINER_SUM = 0, TK_COMBINER_MEAN, TK_COMBINER_SQRTN } tk_combiner;
int tk_combiner_from_name(const char *name); /* -1 if unknown */
const char *tk_combiner_name(tk_combiner c);

tk_tensor *tk_add(tk_ctx *ctx, tk_tensor *a, tk_tensor *b); /* b broadcast */
tk_tensor *tk_sub(tk_ctx *ctx, tk_tensor *a, tk_tensor *b);
tk_tensor *tk_mul(tk_ctx *ctx, tk_tensor *a, tk_tensor *b);
tk_tensor *tk_div(tk_ctx *ctx, tk_tensor *a, tk_tensor *b);
tk_tensor *tk_scale(tk_ctx *ctx, tk_tensor *a, float s);      /* a * s */
tk_tensor *tk_add_scalar(tk_ctx *ctx, tk_tensor *a, float s); /* a + s */
tk_tensor *tk_exp(tk_ctx *ctx, tk_tensor *a);
tk_tensor *tk_log(tk_ctx *ctx, tk_tensor *a);
tk_tensor *tk_sqrt(tk_ctx *ctx, tk_tensor *a);
tk_tensor *tk_square(tk_ctx *ctx, tk_tensor *a);
/* 2-D matrix product, OpenBLAS sgemm: op(a) [m, k] x op(b) [k, n] -> [m, n]. A large
 * product (and the dense layer's) is split into row blocks over the context's threads. */
tk_tensor *tk_matmul(tk_ctx *ctx, tk_tensor *a, tk_tensor *b, bool trans_a, bool trans_b);
/* Reductions. axis -1 means all elements (result has one element, shape [1]);
 * otherwise the axis is removed ([B, D] over axis 1 -> [B]). keepdim keeps it as 1. */
tk_tensor *tk_sum(tk_ctx *ctx, tk_tensor *a, int axis, bool keepdim);
tk_tensor *tk_mean(tk_ctx *ctx, tk_tensor *a, int axis, bool keepdim);
tk_tensor *tk_activate(tk_ctx *ctx, tk_tensor *a, tk_activation act);
/* Concatenation on the last axis; all other dimensions equal. */
tk_tensor *tk_concat(tk_ctx *ctx, int32_t n, tk_tensor *const *ts);
/* Stacks n tensors of one shape [..., D] on a new last axis: [..., D, n]. */
tk_tensor *tk_stack(tk_ctx *ctx, int32_t n, tk_tensor *const *ts);
/* Row-wise l2 normalisation over the last axis: x / sqrt(max(sum(x^2), 1e-12)). */
tk_tensor *tk_l2norm(tk_ctx *ctx, tk_tensor *a);
/* Row-wise cosine similarity of two [B, D] tensors -> [B, 1]. */
tk_tensor *tk_cosine(tk_ctx *ctx, tk_tensor *a, tk_tensor *b);
/* A view with another shape of the same numel (-1 in shape: inferred). */
tk_tensor *tk_reshape(tk_ctx *ctx, tk_tensor *a, int32_t ndim, const int64_t *shape);
tk_tensor *tk_transpose(tk_ctx *ctx, tk_tensor *a); /* 2-D */
/* Inverted dropout: in training, zero with probability rate and scale the rest by
 * 1/(1-rate); identity in evaluation. */
tk_tensor *tk_dropout(tk_ctx *ctx, tk_tensor *a, float rate);
/* Batch normalisation of [B, D] over the batch. Training: batch statistics (biased
 * variance), and a deferred update of running_mean/var (momentum as Keras: running =
 * momentum * running + (1 - momentum) * batch, with the unbiased batch variance).
 * Evaluation: running statistics. gamma/beta may be NULL (no scale/centre). */
tk_tensor *tk_batch_norm(tk_ctx *ctx, tk_tensor *x, tk_tensor *gamma, tk_tensor *beta, tk_tensor *running_mean,
                         tk_tensor *running_var, float momentum, float eps);
/* Fused dense layer: act(x [B, in] x kernel [in, out] + bias [out]); bias may be NULL. */
tk_tensor *tk_dense(tk_ctx *ctx, tk_tensor *x, tk_tensor *kernel, tk_tensor *bias, tk_activation act);
/* Embedding lookup in table [V, D].
 * One-hot: ids is I64 [B] or [B, 1], offsets NULL -> [B, D].
 * Multi-hot: ids is I64 [N] (all lists' values), offsets is I64 [B + 1] (row b is
 * ids[offsets[b] .. offsets[b+1])), combined with `combiner` -> [B, D]; an empty row
 * gives zeros. Ids outside [0, V) fail with a message naming `table_name`.
 * The table gets a sparse row gradient. */
tk_tensor *tk_embedding_lookup(tk_ctx *ctx, tk_tensor *table, tk_tensor *ids, tk_tensor *offsets, tk_combiner combiner,
                               const char *table_name);
/* Numerically stable log-softmax over the last axis of [B, C]. */
tk_tensor *tk_log_softmax(tk_ctx *ctx, tk_tensor *logits);
/* Mean softmax cross-entropy of logits [B, C] with labels I64 [B]; optional weights
 * F32 [B] (NULL: all ones; the mean is sum(w * ce) / B). -> [1]. */
tk_tensor *tk_cross_entropy(tk_ctx *ctx, tk_tensor *logits, tk_tensor *labels, tk_tensor *weights);
/* Mean squared error of two equal-shaped tensors -> [1]. */
tk_tensor *tk_mse_loss(tk_ctx *ctx, tk_tensor *pred, tk_tensor *target);
/* Mean binary cross-entropy with logits (stable): targets in [0, 1], same shape -> [1]. */
tk_tensor *tk_bce_with_logits(tk_ctx *ctx, tk_tensor *logits, tk_tensor *targets);

/* ------------------------------------------------------------------------------------ */
/* Initializers (Keras names)                                                            */
/* ------------------------------------------------------------------------------------ */

typedef enum tk_init_kind {
    TK_INIT_ZEROS = 0,
    TK_INIT_ONES,
    TK_INIT_CONSTANT,         /* a */
    TK_INIT_RANDOM_UNIFORM,   /* U(a, b): Keras' minval, maxval */
    TK_INIT_RANDOM_NORMAL,    /* N(b, a): Keras' mean b, stddev a */
    TK_INIT_TRUNCATED_NORMAL, /* N(b, a) redrawn beyond 2 stddev of the mean */
    TK_INIT_GLOROT_UNIFORM,
    TK_INIT_GLOROT_NORMAL,
    TK_INIT_HE_NORMAL,
    TK_INIT_HE_UNIFORM,
    TK_INIT_LECUN_NORMAL,
    TK_INIT_LECUN_UNIFORM,
    TK_INIT_COUNT
} tk_init_kind;
/* An initializer: kind, its parameters a and b (above), and an optional seed of its own
 * (Keras' seed argument): with has_seed, tk_init_fill draws from seed and ignores the
 * seed it is given (the block's), so the same values come wherever the initializer is
 * used. A zero-initialised tk_init has no seed. */
typedef struct tk_init {
    tk_init_kind kind;
    float a, b;
    bool has_seed;
    uint64_t seed;
} tk_init;
static inline tk_init tk_init_zeros(void) {
    tk_init i = { .kind = TK_INIT_ZEROS, .a = 0, .b = 0 };
    return i;
}
static inline tk_init tk_init_default_kernel(void) {
    tk_init i = { .kind = TK_INIT_GLOROT_UNIFORM, .a = 0, .b = 0 };
    return i;
}
/* Parses "glorot_uniform", "truncated_normal", ...: kind with Keras' default params.
 * Returns -1 if unknown. */
int tk_init_from_name(const char *name, tk_init *out);
const char *tk_init_name(tk_init_kind kind);
const char *tk_init_names(void);
/* Fills a heap tensor. fan_in/fan_out as Keras: for [in, out] kernels the dims; for an
 * embedding table [V, D], fan_in = V and fan_out = D. Uses a generator seeded by seed,
 * or by init.seed when init.has_seed. */
void tk_init_fill(tk_tensor *t, tk_init init, uint64_t seed);

/* ------------------------------------------------------------------------------------ */
/* Values: what flows between blocks                                                     */
/* ------------------------------------------------------------------------------------ */

/* A value is a tensor or a tabular value (ordered map name -> tensor; Merlin's dict of
 * tensors). Values live in a context's arena. A ragged (list, multi-hot) feature `f`
 * is a pair of tensors: its values, all rows' lists one after the other ([N]), and
 * offsets I64 [B + 1], row b being values[offsets[b] .. offsets[b + 1]). A tabular value
 * stores the pair as two entries (so checkpoints, CSV columns and Lua tables see plain
 * named tensors) whose names only tk_ragged_name_split and tk_ragged_name_join know;
 * code reads and writes the pair with tk_value_get_ragged and tk_value_set_ragged. */
typedef struct tk_value {
    int32_t n; /* number of entries; -1 for a single tensor */
    int32_t cap;
    tk_tensor *tensor; /* when n == -1 */
    const char **names;
    tk_tensor **tensors;
} tk_value;
tk_value *tk_value_of(tk_ctx *ctx, tk_tensor *t); /* NULL t -> NULL */
tk_value *tk_value_table(tk_ctx *ctx);            /* empty tabular value */
static inline bool tk_value_is_tabular(const tk_value *v) { return v && v->n >= 0; }
/* The tensor of a single-tensor value; NULL for a tabular one. Borrowed, as the
 * entries of tk_value_get: a value holds its tensors without retaining them. */
tk_tensor *tk_value_tensor(const tk_value *v);
/* Sets (replaces) an entry; name is copied into the arena, t is borrowed (a heap tensor
 * must outlive the value's use, or be given to tk_ctx_keep). */
tk_status tk_value_set(tk_ctx *ctx, tk_value *v, const char *name, tk_tensor *t);
tk_tensor *tk_value_get(const tk_value *v, const char *name); /* NULL if absent */
/* Entry names in sorted order (arena array of v->n pointers). */
const char **tk_value_sorted_names(tk_ctx *ctx, const tk_value *v);

/* The two entries of a ragged feature. */
typedef enum tk_ragged_part { TK_RAGGED_NONE = 0, TK_RAGGED_VALUES, TK_RAGGED_OFFSETS } tk_ragged_part;
/* Which part of a ragged feature the entry (or column) `name` is, TK_RAGGED_NONE for a
 * plain entry; *feature_len (if not NULL) gets the length of the feature's name, the
 * prefix of `name` (all of it for a plain entry). */
tk_ragged_part tk_ragged_name_split(const char *name, size_t *feature_len);
/* The inverse: the entry name of `part` of ragged feature `feature` (the feature's own
 * name for TK_RAGGED_NONE), written as snprintf does: at most len bytes with the NUL
 * (buf may be NULL when len is 0); returns the name's length, >= len when it was cut. */
size_t tk_ragged_name_join(const char *feature, tk_ragged_part part, char *buf, size_t len);
/* Checks a ragged pair: values 1-D (any dtype), offsets I64 [B + 1] starting at 0,
 * never decreasing, ending at the number of values. `what` starts the message, e.g.
 * "feature 'genres'": "feature 'genres': offsets must end at the number of values (5),
 * got 4". TK_ERROR (tk_last_error) on a NULL tensor or any of the above. Reads every
 * offset: callers check a pair once, not per batch. */
tk_status tk_ragged_check(const char *what, const tk_tensor *values, const tk_tensor *offsets);
/* Sets (replaces) ragged feature `name` of a tabular value after tk_ragged_check (the
 * message names the feature, in ctx). The tensors are borrowed as with tk_value_set. */
tk_status tk_value_set_ragged(tk_ctx *ctx, tk_value *v, const char *name, tk_tensor *values, tk_tensor *offsets);
/* The tensors of ragged feature `name` of a tabular value: true when both entries are
 * there. Each out pointer (not NULL) gets its entry or NULL, so a caller tells a half
 * given feature from an absent one. Nothing is checked: values built entry by entry (a
 * Lua table, tk_value_set) are checked where they are used. */
bool tk_value_get_ragged(const tk_value *v, const char *name, tk_tensor **values, tk_tensor **offsets);

/* Aggregations of a tabular value into a tensor (Merlin's registered names). */
typedef enum tk_aggregation {
    TK_AGG_NONE = 0,
    TK_AGG_CONCAT,          /* "concat": entries in sorted key order, last axis */
    TK_AGG_STACK,           /* "stack": [B, D, n], sorted key order */
    TK_AGG_SUM,             /* "sum": each entry summed over its last axis, -> [B, n] */
    TK_AGG_ELEMENTWISE_SUM, /* "element-wise-sum": equal shapes added -> [B, D] */
    TK_AGG_COSINE,          /* "cosine": two entries -> [B, 1] */
    TK_AGG_COUNT
} tk_aggregation;
int tk_aggregation_from_name(const char *name); /* -1 if unknown */
const char *tk_aggregation_name(tk_aggregation agg);
const char *tk_aggregation_names(void);
/* Applies agg to a tabular value: an arena tensor of ctx, or NULL with its message. */
tk_tensor *tk_aggregate(tk_ctx *ctx, tk_aggregation agg, const tk_value *v);

/* ------------------------------------------------------------------------------------ */
/* Blocks                                                                                */
/* ------------------------------------------------------------------------------------ */

/* A block is a reference-counted node of a model graph: a kind (dense, sequential, ...)
 * with its parameters, children, optional pre and post blocks and an aggregation.
 * Containers retain their children. Opaque here: the functions below build and read it;
 * towerkit_ext.h has the struct, for authors of block kinds.
 *
 * Ownership: every function below that returns a new block (the constructors, copy,
 * clone, from_config_json) gives the caller its one reference, released with
 * tk_block_release; NULL means failure (tk_last_error). A container, a pre or post
 * hook and a model retain what they are given, so a caller that hands a block over
 * still releases its own reference. The other pointers a block returns (its name,
 * children, parameters, hooks, meta) are borrowed: valid while the block is alive and
 * until the call that replaces them; retain a block or a tensor to keep it longer. */
typedef struct tk_block tk_block;

/* Runs pre, the block, post and the aggregation: a value in ctx's arena. On failure
 * returns NULL with the block's name pushed on the error path. */
tk_value *tk_block_forward(tk_ctx *ctx, tk_block *b, tk_value *in);
void tk_block_retain(tk_block *b);
void tk_block_release(tk_block *b); /* the last release frees it; NULL is ignored */
/* A deep copy with new, freshly initialised weights (Merlin's copy()): same config,
 * parameters re-drawn from their initialisers with `seed`. */
tk_block *tk_block_copy(const tk_block *b, uint64_t seed);
/* A deep copy sharing nothing, weights copied. */
tk_block *tk_block_clone(const tk_block *b);
/* Sets (retains) or clears (NULL) the pre or post block; TK_ERROR (tk_last_error) if the
 * hook contains b, which would make a cycle. */
tk_status tk_block_set_pre(tk_block *b, tk_block *pre);
tk_status tk_block_set_post(tk_block *b, tk_block *post);
void tk_block_set_aggregation(tk_block *b, tk_aggregation agg);
tk_status tk_block_set_name(tk_block *b, const char *name);
/* Replaces the block's meta JSON object (validated; NULL clears). */
tk_status tk_block_set_meta(tk_block *b, const char *json_object);
/* Whether all lazily-sized weights exist. */
bool tk_block_is_built(const tk_block *b);

/* What a block is made of (summaries, bindings); borrowed, as above. */
const char *tk_block_name(const tk_block *b);
const char *tk_block_kind_name(const tk_block *b);      /* "dense", "sequential", ... */
const char *tk_block_meta(const tk_block *b);           /* its meta JSON object, or NULL */
tk_block *tk_block_pre(const tk_block *b);              /* NULL if none */
tk_block *tk_block_post(const tk_block *b);             /* NULL if none */
tk_aggregation tk_block_aggregation(const tk_block *b); /* TK_AGG_NONE if none */
/* The children of a container in order (none for other kinds); child i is NULL when i
 * is out of range. Its name is the one the container gives it: a parallel branch's
 * name, else the child's own. */
int32_t tk_block_num_children(const tk_block *b);
tk_block *tk_block_child(const tk_block *b, int32_t i);
const char *tk_block_child_name(const tk_block *b, int32_t i);
/* The block's own parameters (not its children's), heap tensors in the order the kind
 * added them; NULL (false) when i is out of range. tk_block_param finds one by name. */
int32_t tk_block_num_params(const tk_block *b);
tk_tensor *tk_block_param_at(const tk_block *b, int32_t i);
const char *tk_block_param_name(const tk_block *b, int32_t i);
bool tk_block_param_trainable(const tk_block *b, int32_t i);    /* false: running statistics */
tk_tensor *tk_block_param(const tk_block *b, const char *name); /* NULL if none */

/* Parameters in a stable order, named by block path ("query/mlp/dense_0/kernel"). The
 * root's own name is the first component unless skip_root. The callback returns
 * non-zero to stop. Children of one container with equal names get "_<index>". path
 * is valid during the call only; param is borrowed from its block. */
typedef int (*tk_param_visitor)(void *ud, const char *path, tk_tensor *param, bool trainable);
void tk_block_visit_params(const tk_block *b, bool skip_root, tk_param_visitor fn, void *ud);
int64_t tk_block_count_params(const tk_block *b); /* scalars in all parameters */
/* Finds a descendant (or b itself) by name, depth first; NULL if none. Borrowed. */
tk_block *tk_block_find(tk_block *b, const char *name);

/* Config as JSON: {"kind": ..., "name": ..., ...kind fields..., "children": [...],
 * "pre": ..., "post": ..., "aggregation": ...}: a malloc'd string the caller frees
 * (free()), or NULL (tk_last_error). */
char *tk_block_config_json(const tk_block *b);
/* Builds an unbuilt block graph from config JSON (weights fresh from initialisers with
 * seed). NULL and tk_last_error on malformed config or an unknown kind. */
tk_block *tk_block_from_config_json(const char *json, uint64_t seed);

/* Hook called after each block of a forward pass (summary, debugging); b and out are
 * borrowed for the call. */
typedef void (*tk_trace_fn)(void *ud, int depth, const tk_block *b, const tk_value *out);
void tk_ctx_set_trace(tk_ctx *ctx, tk_trace_fn fn, void *ud);

/* --- primitive blocks --- */

/* Dense: kernel [in, out], bias [out]. in == 0: taken from the first input and fixed
 * after; out == 0: as many units as input features. A tabular input is concatenated
 * in sorted key order first (Merlin's _Dense). Parameters "kernel" and "bias". */
tk_block *tk_dense_new(const char *name, int64_t in, int64_t out, tk_activation act, bool use_bias, tk_init kernel_init,
                       tk_init bias_init, uint64_t seed);
/* Kernel L2 regulariser: in training adds l2 * sum(kernel^2) with tk_ctx_add_loss. */
void tk_dense_set_kernel_l2(tk_block *b, float l2);
tk_block *tk_activation_block_new(const char *name, tk_activation act);
tk_block *tk_l2norm_block_new(const char *name);
tk_block *tk_dropout_block_new(const char *name, float rate);
/* Batch norm over [B, D]; dim 0: lazy. Parameters gamma, beta (trainable),
 * moving_mean, moving_variance (not trainable). Keras defaults: momentum 0.99, eps 1e-3. */
tk_block *tk_batch_norm_block_new(const char *name, int64_t dim, float momentum, float eps);
/* Filter: keeps (exclude = false) or drops (exclude = true) the named entries of a
 * tabular input; the name of a ragged feature matches both its entries. */
tk_block *tk_filter_block_new(const char *name, int32_t n, const char *const *names, bool exclude);
/* As-tabular: wraps a tensor as {output_name: tensor}. */
tk_block *tk_as_tabular_block_new(const char *name, const char *output_name);
/* Aggregation block: applies an aggregation to a tabular input. */
tk_block *tk_aggregation_block_new(const char *name, tk_aggregation agg);

/* Embedding tables for categorical features. Forward takes a tabular input and returns
 * {feature: [B, dim]} for each configured feature (one-hot "f" as I64 [B] or [B, 1];
 * multi-hot as ragged feature "f", tk_value_set_ragged); a configured feature missing from the input is
 * an error naming it. Features configured with the same table name share one table.
 * Parameters are the tables, named by table name. */
tk_block *tk_embeddings_new(const char *name);
/* The tables added from now on hold rows [floor(part V / parts), floor((part + 1) V /
 * parts)) of their V rows only (parts > 1): the parameter is [those rows, dim], flagged
 * TK_TENSOR_ROW_SHARD, with the values those rows of the whole table would have (the
 * same init and seed). Before the first table; for building row-sharded tables
 * (part = rank, parts = size; tk_dist_tables_shard then takes the parameters as the
 * shards, towerkit_dist.h). */
tk_status tk_embeddings_set_row_part(tk_block *b, int32_t part, int32_t parts);
/* Adds a feature. If `table` exists already, cardinality and dim must match it. */
tk_status tk_embeddings_add_feature(tk_block *b, const char *feature, const char *table, int64_t cardinality,
                                    int64_t dim, tk_combiner combiner, tk_init init, uint64_t seed);
/* Adds a continuous feature passed through to the output as F32 [B, 1] (from [B] or
 * [B, 1]; [B, k] is kept), so one embeddings block is a model's whole input layer. */
tk_status tk_embeddings_add_continuous(tk_block *b, const char *feature);
/* Per-batch L2 penalty l2 * sum(v^2) over the looked-up vectors, added in training
 * with tk_ctx_add_loss (Merlin's embeddings_l2_reg). */
void tk_embeddings_set_l2(tk_block *b, float l2);

/* --- combinators (Merlin semantics) --- */

/* connect: output of one child is the input of the next. */
tk_block *tk_sequential_new(const char *name);
tk_status tk_sequential_append(tk_block *seq, tk_block *child); /* retains */
/* parallel: every branch gets the input; tensor outputs are keyed by branch name,
 * tabular outputs merged (a duplicate key is an error); then aggregation if set. */
tk_block *tk_parallel_new(const char *name);
tk_status tk_parallel_add(tk_block *par, const char *branch_name, tk_block *branch);
/* residual: act(block(x) + x); shapes must match. */
tk_block *tk_residual_new(const char *name, tk_block *block, tk_activation act);
/* shortcut: parallel {block_outputs_name: block(x), "shortcut": filter(x) or x}, then
 * aggregation (concat by default). shortcut_filter may be NULL. */
tk_block *tk_shortcut_new(const char *name, tk_block *block, tk_block *shortcut_filter, const char *block_outputs_name,
                          tk_aggregation agg);

/* A block implemented by a host callback (the Lua binding uses it for Lua functions).
 * The callback runs in the caller's thread with the caller's context and returns a
 * value in it (or NULL after tk_ctx_fail). The block owns ud from a successful call on:
 * free_ud(ud) (if not NULL) runs when the last copy of the block is freed; when the
 * constructor fails, ud stays the caller's. */
typedef tk_value *(*tk_callback_fn)(void *ud, tk_ctx *ctx, tk_value *in);
tk_block *tk_callback_block_new(const char *name, tk_callback_fn fn, void *ud, void (*free_ud)(void *ud));

/* ------------------------------------------------------------------------------------ */
/* Optimizers                                                                            */
/* ------------------------------------------------------------------------------------ */

typedef struct tk_optim tk_optim;
/* Update rules are PyTorch's; t, for Adam's bias correction, is the optimizer's step
 * count. State (moments) is kept per parameter, keyed by the parameter (which the
 * optimizer retains until tk_optim_free), allocated on its first update. Constructors
 * return NULL (tk_last_error) on a learning rate that is not finite and > 0, or on a
 * negative or non-finite momentum, eps, weight decay or accumulator, or a beta outside
 * [0, 1); an optimizer is the caller's, freed with tk_optim_free. */
/* SGD: g += weight_decay * p; v = momentum * v + g; p -= lr * (nesterov ? g + momentum * v
 * : v). Nesterov needs momentum > 0. */
tk_optim *tk_optim_sgd_new(float lr, float momentum, bool nesterov, float weight_decay);
/* Adam (decoupled weight decay when weight_decay > 0: AdamW). Embedding tables with
 * sparse gradients: see tk_optim_set_lazy. */
tk_optim *tk_optim_adam_new(float lr, float beta1, float beta2, float eps, float weight_decay);
/* Adagrad: acc += g^2; p -= lr * g / (sqrt(acc) + eps); initial accumulator value. */
tk_optim *tk_optim_adagrad_new(float lr, float initial_accumulator, float eps);
void tk_optim_free(tk_optim *opt);
void tk_optim_set_lr(tk_optim *opt, float lr); /* a bad value is refused (tk_last_error) */
float tk_optim_lr(const tk_optim *opt);
int64_t tk_optim_steps(const tk_optim *opt);
/* Sparse gradients (embedding tables). lazy = true: only the rows a step touched are
 * updated, moments included (TF's LazyAdam). lazy = false: every row follows the dense
 * rule, a row without gradient seeing g = 0 (its moments decay, Adam's m still moves it,
 * weight decay shrinks it), as Keras and PyTorch do; the cost stays that of the touched
 * rows: an untouched row gets its skipped steps when next read (tk_tensor_sync), exact
 * to float rounding (docs/optimizers.md). Adagrad, and SGD without momentum and weight
 * decay, are the same either way. Switching to lazy = true first brings every row up to
 * date. The default is tk_optim_default_lazy(). */
void tk_optim_set_lazy(tk_optim *opt, bool lazy);
bool tk_optim_lazy(const tk_optim *opt);
bool tk_optim_default_lazy(void);
/* One update of `n` parameters from the gradients in ctx (parameters that got no
 * gradient are skipped, one listed twice is updated once), then tk_ctx_apply_updates(ctx).
 * Parameters are heap F32 tensors. All are checked before any is written; on an error,
 * or if ctx already has one, nothing changes and TK_ERROR is returned (the message in
 * ctx, unless it had one, and in tk_last_error). */
tk_status tk_optim_step(tk_optim *opt, tk_ctx *ctx, int32_t n, tk_tensor *const *params);
/* Same over the trainable parameters of a block. */
tk_status tk_optim_step_block(tk_optim *opt, tk_ctx *ctx, const tk_block *b);
/* One step (Adam's t advances once) over the trainable parameters of blocks[i] with the
 * gradients of ctxs[i], for i < n: the towers of a two-tower model trained in two
 * contexts. A parameter with gradients in two of the contexts is an error (nothing is
 * changed). Applies each context's deferred updates. */
tk_status tk_optim_step_contexts(tk_optim *opt, int32_t n, tk_ctx *const *ctxs, const tk_block *const *blocks);
/* Scales every gradient in ctx so their global l2 norm is at most max_norm; returns
 * the norm before clipping. The norm is that of the coalesced (and, for a table with a
 * dense part too, summed) gradients. max_norm may be INFINITY (only measures). A
 * non-finite norm is returned with the gradients left as they are. Returns -1 on an
 * error (NULL ctx, a failed ctx, max_norm not > 0). */
double tk_clip_grad_norm(tk_ctx *ctx, double max_norm);

/* ------------------------------------------------------------------------------------ */
/* Retrieval: the two-tower loss, item frequency estimation, exact top-k                 */
/* ------------------------------------------------------------------------------------ */

/* Options of tk_retrieval_loss. Zero-initialise and set what you need; NULL fields are
 * off. Vectors of one value per row may also be given as [B, 1] ([N, 1]). Ids,
 * log-probabilities and weights are constants (they get no gradient); log-probabilities
 * and weights must be finite. */
typedef struct tk_retrieval_opts {
    float temperature;          /* logits are divided by it; 0 means 1; else > 0 */
    tk_tensor *item_ids;        /* I64 [B]: mask in-batch columns j != b whose id equals
                                     * the positive's (false negatives, as Merlin) */
    tk_tensor *item_logq;       /* F32 [B]: log sampling probability of each in-batch
                                     * item; logits[:, j] -= item_logq[j] (logQ correction) */
    tk_tensor *negatives;       /* F32 [N, D]: extra sampled negatives (gets gradients) */
    tk_tensor *negative_ids;    /* I64 [N]: a negative equal to row b's positive is
                                     * masked (needs item_ids) */
    tk_tensor *negative_logq;   /* F32 [N]: logits[:, B + n] -= negative_logq[n] */
    tk_tensor *weights;         /* F32 [B]: sample weights; the loss is sum(w * ce) / B */
    int32_t num_hard_negatives; /* > 0: per row keep the positive and only the
                                     * num_hard_negatives highest unmasked negative logits
                                     * (TFRS; ties keep the lower column); 0: off */
    int64_t row_offset;         /* item may have more rows than query (Bi >= B: the
                                     * all-gathered items of data-parallel ranks,
                                     * towerkit_dist.h); then query row b's positive is
                                     * item row row_offset + b, item_ids and item_logq
                                     * have Bi entries, and every item row is a candidate
                                     * of every query row. 0 with equal rows otherwise */
} tk_retrieval_opts;

/* Softmax cross-entropy of in-batch retrieval, fused: logits[b, j] = q_b . c_j / T over
 * the candidates c = (item rows, then negatives), then as TFRS orders it: the logQ
 * correction, the masking of false negatives, the hard-negative selection; the label of
 * row b is column b. query and item are F32 [B, D] (they may be one tensor). Returns the
 * mean loss ([1], an arena tensor of ctx); gradients flow to query, item and negatives. Masked and unselected
 * logits count as -inf (no gradient); a row with only its positive left has ce 0. NaN
 * or infinite inputs give a loss that is not finite. Allocates only in the context's
 * arena. */
tk_tensor *tk_retrieval_loss(tk_ctx *ctx, tk_tensor *query, tk_tensor *item, const tk_retrieval_opts *opts);

/* Streaming item-frequency estimation (Yi et al. 2019, "Sampling-bias-corrected neural
 * modeling", algorithm 2): ids hashed (splitmix64's finaliser, mod buckets) into
 * `buckets` slots; per slot the last step an id was seen (A) and a moving average of the
 * gap between sightings (B, learning rate alpha); the estimated sampling probability is
 * p = 1 / B (sightings per step). At step t each id in turn does: if its slot was seen
 * before, B = (1 - alpha) B + alpha (t - A); then A = t. B starts at 1 / alpha, so a
 * never-seen id has p = alpha (log p = log alpha: small but finite); an id's first
 * sighting only sets A. B is kept >= 1e-6. Colliding ids share a slot. Not thread-safe.
 * new: the caller's estimator (tk_freq_estimator_free), or NULL (tk_last_error) unless
 * buckets >= 1 and 0 < alpha <= 1. */
typedef struct tk_freq_estimator tk_freq_estimator;
tk_freq_estimator *tk_freq_estimator_new(int64_t buckets, float alpha);
void tk_freq_estimator_free(tk_freq_estimator *est);
/* Records the `n` ids of one training step (steps increase by one per call, from 0) and
 * writes log(p) of each, as estimated before this call's updates, into logq_out (n
 * floats; may be NULL). An id repeated within the call gets that same value at each
 * position, and each occurrence updates in order (the second one records a gap of 0).
 * TK_ERROR (tk_last_error) on a NULL estimator, n < 0, or ids NULL with n > 0. */
tk_status tk_freq_estimator_update(tk_freq_estimator *est, int64_t n, const int64_t *ids, float *logq_out);
/* log(p) of ids without updating. */
void tk_freq_estimator_logq(const tk_freq_estimator *est, int64_t n, const int64_t *ids, float *logq_out);
/* The number of updates so far (the step the next update records). */
int64_t tk_freq_estimator_step(const tk_freq_estimator *est);

/* The rows of one item block of tk_topk (one sgemm): an item's score has the same bits
 * when the item sits at the same place in a block of the same shape, so catalogues cut at
 * its multiples (tk_dist_shard_range) score as the whole. */
#define TK_TOPK_ITEM_BLOCK 4096

/* Exact top-k by inner product. queries F32 [Q, D], items F32 [N, D] (N < 2^32); writes
 * the k best item indices per query (out_idx I64 [Q, k]) with their scores (out_scores
 * F32 [Q, k]), best first, ties broken by the lower index; an item whose score is NaN is
 * never returned. Queries are taken in blocks of 512 on the pool's threads (Threads
 * below), the items scored in blocks with one single-threaded sgemm per block and
 * selected with a per-query heap behind a running threshold; scratch: one score block
 * of up to 8 MiB per thread. The results are the same bits for every thread count.
 * exclude (may be NULL): CSR lists of item indices to skip per query (excl_offsets
 * [Q + 1], non-decreasing, excl_offsets[0] >= 0, indexing excl_items; items in [0, N);
 * lists need not be sorted). When fewer than k items remain, the rest of the row is
 * -1 / -INFINITY. Heap or arena tensors; no context needed; reentrant: any number of
 * threads may call it at once. Returns TK_ERROR
 * (tk_last_error) on bad shapes or dtypes, k < 1, or bad exclusion lists. */
tk_status tk_topk(const tk_tensor *queries, const tk_tensor *items, int64_t k, const int64_t *excl_offsets,
                  const int64_t *excl_items, tk_tensor *out_idx, tk_tensor *out_scores);

/* A two-tower training step with the two towers side by side on the pool's threads
 * (Threads below; one after the other with one thread), each in its own context; then
 * the loss (as tk_retrieval_loss over the two outputs, planned in a third context) in
 * blocks of rows over the threads; the gradient of the query output in blocks of rows and
 * that of the item output, each followed by its tower's backward pass; and one optimizer
 * step over both (tk_optim_step_contexts). `post` (may be NULL) is applied
 * to each tower's output (the l2 norm of a TwoTowerBlock). The towers must not share a
 * trainable parameter (an embedding table shared by domain), nor may post have
 * parameters: tk_two_tower_trainer_new returns NULL (tk_last_error) then. The trainer
 * retains the blocks; the optimizer must outlive it. The trainer is the caller's
 * (tk_two_tower_trainer_free, which releases the blocks). For one thread count a step gives
 * the same bits on every run; with 1 to 3 threads, the same bits as with one. */
typedef struct tk_two_tower_trainer tk_two_tower_trainer;
tk_two_tower_trainer *tk_two_tower_trainer_new(tk_block *query_tower, tk_block *item_tower, tk_block *post,
                                               tk_optim *opt, uint64_t seed);
void tk_two_tower_trainer_free(tk_two_tower_trainer *t);
/* Resets the three contexts for a new step (training on, gradients on). Build the
 * step's inputs after it, each in its tower's context. */
void tk_two_tower_trainer_reset(tk_two_tower_trainer *t);
/* The context of the query tower (0), of the item tower (1), or of the loss (2), owned
 * by the trainer. */
tk_ctx *tk_two_tower_trainer_ctx(tk_two_tower_trainer *t, int tower);
/* One step on inputs built in the towers' contexts; opts as tk_retrieval_loss (no
 * sampled negatives). *loss_out gets the loss plus the towers' added losses; when it is
 * not finite, or a gradient is not (then *loss_out is NaN), nothing is updated and
 * TK_OK is returned: the caller decides. TK_ERROR
 * (tk_last_error, also in the loss context) on an error in either tower or the loss;
 * then no parameter has changed. Steady-state steps allocate nothing. */
tk_status tk_two_tower_trainer_step(tk_two_tower_trainer *t, tk_value *query_in, tk_value *item_in,
                                    const tk_retrieval_opts *opts, float *loss_out);

/* Embeddings of every row of a table of columns through `block` then `post` (may be
 * NULL), in evaluation mode, in batches of batch_size rows: a new heap float32 [n, D]
 * (item export). Columns as a batch's: names[i] with cols[i] (heap tensors, rows along
 * the first dimension), a ragged list as its two entries (tk_ragged_name_join). The batches run on
 * the pool's threads (Threads below), one context per thread, the first batch alone (it
 * may build a lazy block); the result is the same bits for every thread count. The
 * tensor is the caller's (tk_tensor_release); NULL (tk_last_error) on an error. */
tk_tensor *tk_block_embed(tk_block *block, tk_block *post, int32_t ncols, const char *const *names,
                          tk_tensor *const *cols, int64_t batch_size);
/* The row indices (int64 [k], ascending) of the first occurrence of each distinct value
 * of an int64 tensor: a heap tensor, the caller's. NULL (tk_last_error) on a bad dtype
 * or no memory. */
tk_tensor *tk_unique_first(const tk_tensor *ids);

/* ------------------------------------------------------------------------------------ */
/* Data kernels: the rows of columns, for batching                                       */
/* ------------------------------------------------------------------------------------ */

/* What a data loader does to the columns of a table (Lua's Dataset runs on these): pick,
 * join and shuffle rows, translate and check ids. Rows run along the first dimension.
 * The inputs may be heap or arena tensors and are only read (tk_shuffle: written in
 * place); results are new heap tensors the caller releases with tk_tensor_release, and
 * no gradient is recorded. Errors return NULL or TK_ERROR with tk_last_error naming the
 * function and what is wrong: "index_select: index 7 out of range [0, 5)". */

/* Rows idx[0 .. n) of t (at least 1-D), in that order, repeats allowed: [n, ...]. */
tk_tensor *tk_index_select(const tk_tensor *t, int64_t n, const int64_t *idx);
/* The same for a ragged column, values (1-D, any dtype) and offsets (I64 [rows + 1]):
 * the lists of rows idx[0 .. n) as *values_out ([total], values' dtype) and
 * *offsets_out (I64 [n + 1], from 0). Only the selected rows' offsets are read (a batch
 * costs its own rows, not the column's); each pair must lie within the values and not
 * decrease (tk_ragged_check checks a whole column once). Both outs are NULL on error. */
tk_status tk_ragged_select(const tk_tensor *values, const tk_tensor *offsets, int64_t n, const int64_t *idx,
                           tk_tensor **values_out, tk_tensor **offsets_out);
/* The rows of ts[0 .. n) one after the other: one dtype, rank and row shape; [total, ...].
 * Messages number the tensors from 1 ("entry 2 has another dtype or row shape than
 * entry 1"), as a Lua list of them. */
tk_tensor *tk_cat_rows(int32_t n, const tk_tensor *const *ts);
/* Shuffles a 1-D tensor in place (Fisher-Yates on a fixed xorshift generator): the
 * order depends on the seed and the length alone, on every platform. */
tk_status tk_shuffle(tk_tensor *t, uint64_t seed);
/* ids[j] for every entry j of an I64 index tensor of any shape (ids I64 [n]), with the
 * index's shape; -1 stays -1 (tk_topk's "no item"), any other j outside [0, n) fails. */
tk_tensor *tk_map_ids(const tk_tensor *idx, const tk_tensor *ids);
/* Finds the first id of an I64 tensor outside [0, cardinality): its row (0-based) in
 * *row and the id in *id, or *row = *id = -1 when all are in range. Without offsets (NULL)
 * ids hold one row per first-dimension entry; with offsets (ids the values of a ragged
 * column, checked by tk_ragged_check) the row is the one whose list holds the id.
 * TK_ERROR only for bad arguments. */
tk_status tk_check_ids(const tk_tensor *ids, int64_t cardinality, const tk_tensor *offsets, int64_t *row, int64_t *id);

/* ------------------------------------------------------------------------------------ */
/* Files: atomic writes, safetensors weights, checkpoints, CSV                           */
/* ------------------------------------------------------------------------------------ */

/* Atomic files: every file towerkit writes (weights, checkpoint files, CSV, and from
 * Lua schemas and histories) goes through these, so a reader, a crash or a full disk
 * sees the old file or the complete new one, never a part. tk_atomic_open creates
 * "<path>.tmp-XXXXXX" in path's directory (with the mode of the file it replaces);
 * tk_atomic_write appends bytes, checked; tk_atomic_commit flushes, fsyncs and closes
 * the temporary file, renames it over path and fsyncs the directory. A write that
 * fails makes the later writes and the commit fail too. On any failure, and on
 * tk_atomic_abort, the temporary file is removed and a file at path is left as it
 * was; the error names the path and the system error ("out/h.csv: write failed: No
 * space left on device"). Commit and abort free the handle. */
typedef struct tk_atomic_file tk_atomic_file;
tk_atomic_file *tk_atomic_open(const char *path);
tk_status tk_atomic_write(tk_atomic_file *af, const void *data, size_t n);
tk_status tk_atomic_commit(tk_atomic_file *af);
void tk_atomic_abort(tk_atomic_file *af);
/* data[0 .. n) as the file at path, atomically (the four above in one call). */
tk_status tk_file_write_atomic(const char *path, const void *data, size_t n);
/* The whole file at path (malloc'd, NUL-terminated; *len, if not NULL, gets its length),
 * as every reader here opens files: a regular file only. A FIFO, a device or a socket is
 * refused ("path: cannot read: not a regular file ...") rather than waited on. NULL and
 * tk_last_error naming the path on failure. */
char *tk_file_read(const char *path, size_t *len);

/* Writes tensors in the safetensors layout (8-byte little-endian header length, JSON
 * header {name: {dtype "F32"|"I64", shape, data_offsets}, "__metadata__": {...}}, raw
 * data), so Python tools read them. The header is compact JSON padded with spaces to a
 * multiple of 8 bytes, as the reference writer pads it; tensors are laid out
 * contiguously in the order given. Names must be unique and non-empty ("__metadata__"
 * is reserved). metadata: a JSON object of string values or NULL.
 * Written atomically (tk_atomic_open): on any failure an existing file is left as it was. */
tk_status tk_safetensors_write(const char *path, int32_t n, const char *const *names, tk_tensor *const *tensors,
                               const char *metadata_json);
typedef struct tk_safetensors {
    int32_t n;
    char **names;
    tk_tensor **tensors; /* heap tensors owned by the struct */
    char *metadata_json; /* the "__metadata__" object as text, or NULL */
} tk_safetensors;
/* Reads a whole safetensors file; tensors in header order, F32 and I64 only. The
 * header is checked before any data is read: a file too short, a header length past
 * the end, malformed JSON, an unsupported dtype, a shape that does not match its
 * data_offsets, overlapping ranges, data past the end (truncated), or a duplicate name
 * are errors naming the file and the tensor; NULL and tk_last_error. The result is the
 * caller's: tk_safetensors_free frees it and releases its tensors (retain one to keep
 * it). */
tk_safetensors *tk_safetensors_read(const char *path);
void tk_safetensors_free(tk_safetensors *st);

/* Weights of a block by parameter path (tk_block_visit_params, skip_root). Loading
 * needs every parameter present with its dtype and shape; a missing, extra or
 * mis-shaped tensor is an error naming it, and nothing is changed (all are checked
 * before any is copied). Both refuse a graph with a lazily sized block that is not
 * built yet (dense or batch_norm without an input width, before its first forward):
 * its weights do not exist. A block read from the config of a built block is built
 * (configs record the built widths), so tk_checkpoint_read does not meet this. */
tk_status tk_block_save_weights(const tk_block *b, const char *path);
tk_status tk_block_load_weights(tk_block *b, const char *path);

/* A checkpoint directory: config.json (the block's config, pretty printed),
 * weights.safetensors and the given extra files (for example schema.json; plain file
 * names, not config.json or weights.safetensors). `dir` names a complete checkpoint at
 * every instant, even if the process dies mid-save: the files are written and fsynced
 * into ".<name>.tmp-XXXXXX" beside dir, renamed ".<name>.new-XXXXXX" once complete, and
 * exchanged with an existing dir by renameat2(RENAME_EXCHANGE) (without it, as on NFS,
 * the old one is renamed to ".<name>.old-XXXXXX" first, and the next save or read
 * finishes a save killed in between); the old checkpoint is then removed with whatever
 * else was in it. The next save or read removes what a killed save left. Saves to one
 * parent directory take turns (flock on it). On any failure before the swap the new
 * files are removed and an existing checkpoint is left intact. */
tk_status tk_checkpoint_write(const char *dir, const tk_block *b, int32_t nfiles, const char *const *file_names,
                              const char *const *file_texts);
/* Reads a checkpoint: the block (built, with its weights; one reference, the caller's);
 * every file from the same checkpoint (the directory is held open and flock'ed shared
 * while it is read, so a save replacing it neither mixes nor removes its files);
 * file_texts_out[i] gets the text of file_names[i], malloc'd for the caller to free()
 * (NULL if absent). NULL and tk_last_error ("checkpoint
 * 'dir': config.json is missing", "...: config.json: block config: invalid JSON at line...",
 * "checkpoint 'dir': weights.safetensors: tensor 'x' is float32 [4, 8] but the parameter
 * is ...") on a missing, empty or malformed file, a file that is not a regular one (a
 * FIFO), weights that do not match the config or hold a NaN or an infinity (named with
 * the tensor and the first bad row). Sizes are checked before anything is allocated:
 * the header of weights.safetensors (names, dtypes, shapes; no data) is read before the
 * blocks are built from config.json, and every parameter a block is about to allocate
 * is compared with it first, so a config whose sizes disagree with the weights (a
 * 20 KB config.json asking for a table of 20,000,000 or 2^40 rows) fails without
 * allocating it: "checkpoint 'dir': weights.safetensors: tensor 'item/embeddings/item_id'
 * is float32 [20, 4] but the parameter is float32 [20000000, 4] in config.json" (or "no
 * tensor 'x' (a parameter of block 'b')"). A negative or zero size in config.json is a
 * config error naming the block, the field and the value. A read recovers, when no
 * save runs, what an interrupted save left (see tk_checkpoint_write). Blocks
 * whose kind has no from_config (callback blocks) cannot be read back. */
tk_block *tk_checkpoint_read(const char *dir, int32_t nfiles, const char *const *file_names, char **file_texts_out);

/* CSV with a header row. Columns are read by name with a type; a list cell holds ids
 * separated by '|' (an empty cell is an empty list). RFC 4180 syntax: ',' between
 * fields, "\n" or "\r\n" after records (the last may lack it), double-quoted fields
 * may hold ',', line breaks and "" for a quote. Every record has the header's number of
 * fields; empty lines are skipped (and counted in row numbers); a UTF-8 byte-order mark
 * is skipped. Cells are strict: int64 is [+-]digits; float32 is a finite decimal number
 * (no NaN, infinity, hexadecimal or blanks); list ids are int64. */
typedef enum tk_column_type { TK_COL_INT64 = 0, TK_COL_FLOAT32, TK_COL_INT64_LIST } tk_column_type;
typedef struct tk_column_spec {
    const char *name;
    tk_column_type type;
    int64_t max_count; /* a list column: at most this many ids per cell (a schema's value
                        * count max), or 0 for no limit; a longer cell is an error */
} tk_column_spec;
/* A batch of columns: values[i] is I64 [rows] or F32 [rows], or for a list column the
 * flat ids I64 [total] with offsets[i] I64 [rows + 1] (NULL otherwise). */
typedef struct tk_columns {
    int64_t nrows;
    int32_t ncols;
    char **names;
    tk_column_type *types;
    tk_tensor **values;
    tk_tensor **offsets;
} tk_columns;
void tk_columns_free(tk_columns *c); /* frees the batch and releases its tensors */
/* Streaming reader: opens the file and checks the header has every requested column
 * (the error lists the header's columns). The file is read in 1 MiB blocks. The reader
 * is the caller's (tk_csv_close); NULL and tk_last_error on failure. */
typedef struct tk_csv_reader tk_csv_reader;
tk_csv_reader *tk_csv_open(const char *path, int32_t ncols, const tk_column_spec *cols);
/* The next chunk of at most max_rows rows (max_rows <= 0: all remaining rows); nrows 0
 * at the end: the caller's, freed with tk_columns_free. Tensors are heap tensors sized
 * to the rows read. NULL on an error naming
 * the file, the row (1-based, header = row 1) and the column with the cell's text:
 * "data/train.csv: row 17, column 'item_id': \"abc\" is not an integer"; the reader
 * then stays failed. */
tk_columns *tk_csv_next(tk_csv_reader *r, int64_t max_rows);
void tk_csv_close(tk_csv_reader *r);
/* Writes rows "id,v1,...,vD" (header "id,e_0,...") of an id vector I64 [N] (or
 * [N, 1]) and a matrix F32 [N, D], atomically (as tk_safetensors_write). Each float is
 * the shortest decimal that reads back as the same float; a non-finite value is an
 * error naming its row. */
tk_status tk_csv_write_embeddings(const char *path, const tk_tensor *ids, const tk_tensor *matrix);

/* ------------------------------------------------------------------------------------ */
/* BLAS kernel                                                                           */
/* ------------------------------------------------------------------------------------ */

/* OpenBLAS built with DYNAMIC_ARCH (as Debian's) picks its kernels once, in its library
 * constructor before main, from the environment variable OPENBLAS_CORETYPE or else from
 * its own table of CPU models. An OpenBLAS older than the CPU (Debian 12's 0.3.21 on a
 * Xeon 6 or a Zen 5) may not find the model and fall back to its Prescott (SSE3)
 * kernels: every matrix product runs several times slower, silently. towerkit reads the
 * CPU's features (cpuid, and xgetbv for what the OS enables) and names the best kernel
 * this OpenBLAS has for them: SkylakeX for AVX-512 F/BW/DQ/VL (Cooperlake with
 * AVX512_BF16), Haswell for AVX2 and FMA (Zen on AMD), Sandybridge for AVX, else Nehalem
 * or Prescott. Without cpuid (not x86-64) or without DYNAMIC_ARCH, best is the kernel.
 *
 * The first checkpoint loaded in a process (tk_checkpoint_read, so tk_model_load and
 * Lua's tk.load) prints one line on stderr when the kernel is below best, with the
 * advice below; TOWERKIT_QUIET_BLAS=1 in the environment silences it. */
typedef struct tk_blas_info {
    char kernel[32];  /* the kernel OpenBLAS runs (openblas_get_corename()) */
    char best[32];    /* the best kernel this OpenBLAS has for this CPU */
    bool below_best;  /* kernel is weaker than best for float32 matrix products */
    bool user_set;    /* OPENBLAS_CORETYPE is set, and not by tk_blas_reexec_if_weaker */
    int threads;      /* towerkit's thread count (tk_get_num_threads()) */
    int blas_threads; /* OpenBLAS's own (openblas_get_num_threads()) */
    char cpu[64];     /* vendor and brand string ("AuthenticAMD AMD EPYC ...") */
    char advice[160]; /* what to do when below_best, "" otherwise */
} tk_blas_info;
/* Fills *out (not NULL). Thread-safe; the CPU is read once per process. Kernel names
 * compare case-insensitively, as OPENBLAS_CORETYPE does. */
void tk_blas_get_info(tk_blas_info *out);
/* For a launcher's or a server's main(), called first: when OPENBLAS_CORETYPE is not set
 * and the kernel is below best, sets OPENBLAS_CORETYPE=<best> (and TOWERKIT_BLAS_REEXEC,
 * the marker that this was done) and executes /proc/self/exe again with argv (main's,
 * NULL-terminated; the working directory, descriptors and the rest of the environment
 * stay). Returns when there was nothing to do, or when the exec failed (then the
 * environment is as it was). Never overrides a value the user set and never runs twice
 * in a chain of processes: if OpenBLAS ignores the name, the process just runs on. A C
 * host that does not want a re-exec sets OPENBLAS_CORETYPE before it starts instead. */
void tk_blas_reexec_if_weaker(char **argv);

/* ------------------------------------------------------------------------------------ */
/* Threads                                                                               */
/* ------------------------------------------------------------------------------------ */

/* One thread policy, owned by the core. towerkit runs its parallel work on a process-wide
 * pool of worker threads: the two-tower trainer's towers, loss rows and gradient blocks,
 * the item export's batches, top-k's query blocks, and the row blocks of large matrix
 * products. Every matrix product is a single-threaded OpenBLAS sgemm on the thread that
 * needs it: towerkit sets OpenBLAS's own thread count to 1 the first time one of these
 * two functions is called (every parallel path calls them) and never changes it while
 * anything runs, so any number of host threads may train, export or query at once.
 *
 * tk_set_num_threads(n): how many threads (the caller and n - 1 workers) each parallel
 * call may use, from 1 (everything on the calling thread) up; more than the machine's
 * cores is allowed and correct, only slower. The default is the number of online CPUs.
 * Results are bit-identical from run to run for a given thread count; across thread
 * counts the last bits of sums may differ (how rows are grouped into products), except
 * for tk_topk and tk_block_embed, whose work is cut independently of the count. */
void tk_set_num_threads(int n);
int tk_get_num_threads(void);

/* ------------------------------------------------------------------------------------ */
/* Serving: a shared model and a pure C recommender                                      */
/* ------------------------------------------------------------------------------------ */

/* A tk_model is a trained two-tower checkpoint loaded once, read-only from then on, and
 * shared by every thread and Lua state of a process: the two-tower block (its "query"
 * and "item" branches and its post block), the text of its schema.json, and the item
 * catalogue as an embeddings matrix with the item ids. A request encodes a query from
 * named features in the caller's own tk_ctx and takes the exact top-k (tk_topk).
 *
 *     tk_model *m = tk_model_load("model/", NULL);  // + model/item_embeddings.safetensors
 *     if (!m) { fprintf(stderr, "%s\n", tk_last_error()); return 1; }
 *     tk_ctx *ctx = tk_ctx_new(0);                   // one per thread
 *     tk_ctx_reset(ctx);
 *     tk_value *q = tk_value_table(ctx);
 *     int64_t user = 42;
 *     tk_query_set_ids(ctx, q, "user_id", 1, &user);       // one user
 *     int64_t cats[] = {3, 7}, offs[] = {0, 2};
 *     tk_query_set_list(ctx, q, "user_recent_categories", 1, offs, cats);
 *     float activity = 0.5f;
 *     tk_query_set_floats(ctx, q, "user_activity", 1, &activity);
 *     tk_tensor *ids, *scores;                                // arena tensors of ctx
 *     if (tk_model_recommend(m, ctx, q, 10, &ids, &scores) != TK_OK)
 *         fprintf(stderr, "%s\n", tk_ctx_error(ctx));         // "feature 'user_id': ..."
 *     tk_ctx_free(ctx);
 *     tk_model_release(m);
 *
 * A tk_model_slot holds "the current model" of a server: a request takes the model with
 * tk_model_slot_get (retained: it keeps the model it started with) and releases it when
 * done; tk_model_slot_reload loads a checkpoint completely, checks it, and only then
 * swaps it in. Requests never see a half-loaded model and none fails because of a swap;
 * the old model is freed by whoever releases it last.
 *
 * Thread safety: every function here may be called from any thread at once, except that
 * one tk_ctx is used by one thread at a time. A server that runs one request per thread
 * usually calls tk_set_num_threads(1): each request's products and top-k then run on its
 * own thread. */

typedef struct tk_model tk_model;

typedef enum tk_feature_kind { TK_FEATURE_CATEGORICAL = 0, TK_FEATURE_CONTINUOUS } tk_feature_kind;

/* A feature the query tower reads. A categorical feature `f` is given either as ids
 * "f" (I64 [B] or [B, 1]) or, multi-hot, as ragged feature "f" (tk_value_set_ragged:
 * I64 values [N], offsets [B + 1]); a continuous one as "f" (F32 [B] or [B, 1]). */
typedef struct tk_feature_info {
    const char *name;
    tk_feature_kind kind;
    int64_t cardinality; /* categorical: ids are in [0, cardinality); continuous: 0 */
    bool is_list;        /* the schema marks it multi-hot (a list of ids per row) */
} tk_feature_info;

/* Where the item catalogue comes from (zero-initialise; NULL opts: all defaults). */
typedef struct tk_model_options {
    /* A safetensors file with "ids" (I64 [N]) and "embeddings" (F32 [N, D]), as written
     * by model:item_embeddings(items):save(path) in Lua. */
    const char *items_path;
    /* Or an item catalogue as columns (tk_csv_next's output): the item tower's features
     * and the item id column; the item tower embeds each distinct id (first row). */
    const tk_columns *items;
    int64_t batch_size; /* rows per item-tower pass; 0: 4096 */
} tk_model_options;

/* Loads the checkpoint in `dir` (tk_checkpoint_read: config.json, weights.safetensors,
 * schema.json) and its items: opts->items, else opts->items_path, else
 * "<dir>/item_embeddings.safetensors". Checks the root is a two-tower block (a parallel
 * block with "query" and "item" branches), runs one query to learn the embedding width
 * and checks the item embeddings have it. Returns a model with one reference, or NULL
 * and tk_last_error ("model 'dir': ..."). */
tk_model *tk_model_load(const char *dir, const tk_model_options *opts);
void tk_model_retain(tk_model *m);
void tk_model_release(tk_model *m); /* the last release frees it; NULL is ignored */

/* Read-only accessors; borrowed pointers valid while the caller holds a reference. */
const char *tk_model_dir(const tk_model *m);
tk_block *tk_model_block(const tk_model *m);                  /* the two-tower block */
tk_block *tk_model_query_block(const tk_model *m);            /* its "query" branch */
tk_block *tk_model_item_block(const tk_model *m);             /* its "item" branch */
const char *tk_model_schema_json(const tk_model *m);          /* schema.json, or NULL if absent */
const tk_tensor *tk_model_item_ids(const tk_model *m);        /* I64 [N] */
const tk_tensor *tk_model_item_embeddings(const tk_model *m); /* F32 [N, D] */
int64_t tk_model_num_items(const tk_model *m);
int64_t tk_model_dim(const tk_model *m);
/* The features the query tower reads, in its configuration order. */
int32_t tk_model_num_features(const tk_model *m);
const tk_feature_info *tk_model_feature(const tk_model *m, int32_t i);

/* Helpers that add one feature of a B-row query to a tabular value of ctx (copies). */
tk_status tk_query_set_ids(tk_ctx *ctx, tk_value *q, const char *name, int64_t rows, const int64_t *ids);
tk_status tk_query_set_floats(tk_ctx *ctx, tk_value *q, const char *name, int64_t rows, const float *values);
/* offsets has rows + 1 entries, offsets[0] = 0; ids has offsets[rows] entries. */
tk_status tk_query_set_list(tk_ctx *ctx, tk_value *q, const char *name, int64_t rows, const int64_t *offsets,
                            const int64_t *ids);

/* Checks a query against the model before any forward pass: every entry must name a
 * feature of the schema (item features are ignored), every query feature must be there
 * with its dtype and B rows, ids in range, offsets ascending, floats finite. TK_ERROR
 * with the message in ctx: "unknown feature 'x' (the query tower reads: a, b)",
 * "feature 'user_id': id 120 at row 0 is out of range [0, 100)", ... */
tk_status tk_model_check_query(const tk_model *m, tk_ctx *ctx, const tk_value *features);
/* The query embeddings [B, D] (checked, query tower then post, evaluation mode, no
 * gradients): an arena tensor of ctx, or NULL with the context's message. */
tk_tensor *tk_model_encode(tk_model *m, tk_ctx *ctx, tk_value *features);
/* The k best items of each query row: *ids_out I64 [B, k] (item ids, not row numbers)
 * and *scores_out F32 [B, k], best first, arena tensors of ctx. When k exceeds the
 * catalogue the rest of a row is -1 / -INFINITY. The caller resets ctx between
 * requests (the query it built lives in the same arena). */
tk_status tk_model_recommend(tk_model *m, tk_ctx *ctx, tk_value *features, int64_t k, tk_tensor **ids_out,
                             tk_tensor **scores_out);
/* The same, skipping items a row must not get (already seen): excl_offsets [B + 1]
 * (starting at 0, non-decreasing) index excl_items, item ids (not rows) per query row.
 * An id the catalogue does not hold is ignored. NULL excl_offsets: nothing excluded. */
tk_status tk_model_recommend_excluding(tk_model *m, tk_ctx *ctx, tk_value *features, int64_t k,
                                       const int64_t *excl_offsets, const int64_t *excl_items, tk_tensor **ids_out,
                                       tk_tensor **scores_out);

/* The current model of a server, swapped atomically while requests run. */
typedef struct tk_model_slot tk_model_slot;
/* A slot holding m (retained; not NULL), with one reference, the caller's; NULL on no
 * memory. */
tk_model_slot *tk_model_slot_new(tk_model *m);
void tk_model_slot_retain(tk_model_slot *s);
void tk_model_slot_release(tk_model_slot *s); /* the last one releases its model */
/* The current model, retained for the caller: release it when the request is done. */
tk_model *tk_model_slot_get(tk_model_slot *s);
/* The same, and the version of that model (*version, if not NULL), read together under
 * the slot's lock: a swap cannot fall between the two. */
tk_model *tk_model_slot_get_versioned(tk_model_slot *s, uint64_t *version);
/* Makes m current (retains it) and releases the previous one. Returns the new version. */
uint64_t tk_model_slot_set(tk_model_slot *s, tk_model *m);
/* tk_model_load(dir, opts) and, if it succeeds, tk_model_slot_set; on failure the
 * current model stays and TK_ERROR is returned (tk_last_error). Reloads are serialised:
 * a second one waits for the first. */
tk_status tk_model_slot_reload(tk_model_slot *s, const char *dir, const tk_model_options *opts);
/* 1 for the first model, incremented by each swap. */
uint64_t tk_model_slot_version(tk_model_slot *s);

#ifdef __cplusplus
}
#endif
#endif /* TOWERKIT_H */
