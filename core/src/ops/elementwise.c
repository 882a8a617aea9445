/* Element-wise ops: binary arithmetic with broadcast, scalar ops, unary math and the
 * activations. */
#include "ops_impl.h"
#include "simd.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* --- binary ops with broadcast ---
 * a is seen as [rows, cols] with cols its last dimension; b[r, j] is read at
 * r * b_row + j * b_col: (cols, 1) when b has a's shape, (0, 1) for a row vector,
 * (0, 0) for a single element. */

typedef enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV } bin_kind;
static const char *const bin_names[] = { "add", "sub", "mul", "div" };

typedef struct {
    int64_t rows, cols, b_row, b_col;
} bcast;

static bool broadcast_of(tk_ctx *ctx, const char *op, const tk_tensor *a, const tk_tensor *b, bcast *bc) {
    bc->cols = tk_op_cols(a);
    bc->rows = tk_op_rows(a);
    if (tk_tensor_same_shape(a, b)) {
        bc->b_row = bc->cols;
        bc->b_col = 1;
        return true;
    }
    if (b->numel == 1) {
        bc->b_row = bc->b_col = 0;
        return true;
    }
    bool row = a->ndim >= 1 && ((b->ndim == 1 && b->shape[0] == bc->cols) ||
                                (b->ndim == 2 && b->shape[0] == 1 && b->shape[1] == bc->cols));
    if (row) {
        bc->b_row = 0;
        bc->b_col = 1;
        return true;
    }
    char sa[TK_SHAPE_LEN], sb[TK_SHAPE_LEN];
    long long n = (long long)bc->cols;
    tk_ctx_fail(ctx,
                "%s: cannot broadcast b %s to a %s (b must have a's shape, be a row [%lld] or "
                "[1, %lld], or have one element)",
                op, TK_SHAPE(b, sb), TK_SHAPE(a, sa), n, n);
    return false;
}

/* d(a op b): add (1, 1), sub (1, -1), mul (b, a), div (1/b, -a/b^2); b's gradient is
 * summed over the positions it was broadcast to. */
static void bin_backward(tk_ctx *ctx, tk_node *node) {
    bin_kind kind = (bin_kind)node->arg.i[0];
    tk_tensor *a = node->in[0], *b = node->in[1];
    bcast bc = { tk_op_rows(a), node->arg.i[1], node->arg.i[2], node->arg.i[3] };
    const float *av = tk_f32(a), *bv = tk_f32(b), *dy = tk_f32(node->out->grad);
    float *da = tk_op_grad(ctx, a);
    float *db = tk_op_grad(ctx, b);
    if (ctx->failed) return;
    int64_t n = bc.cols, bs = bc.b_col;
    for (int64_t r = 0; r < bc.rows; r++) {
        const float *g = dy + r * n, *ar = av + r * n, *br = bv + r * bc.b_row;
        float *dar = da ? da + r * n : NULL, *dbr = db ? db + r * bc.b_row : NULL;
        switch (kind) {
        case BIN_ADD:
        case BIN_SUB: {
            float sign = kind == BIN_ADD ? 1.0f : -1.0f;
            if (dar)
                for (int64_t j = 0; j < n; j++) dar[j] += g[j];
            if (dbr)
                for (int64_t j = 0; j < n; j++) dbr[j * bs] += sign * g[j];
            break;
        }
        case BIN_MUL:
            if (dar)
                for (int64_t j = 0; j < n; j++) dar[j] += g[j] * br[j * bs];
            if (dbr)
                for (int64_t j = 0; j < n; j++) dbr[j * bs] += g[j] * ar[j];
            break;
        case BIN_DIV:
            if (dar)
                for (int64_t j = 0; j < n; j++) dar[j] += g[j] / br[j * bs];
            if (dbr)
                for (int64_t j = 0; j < n; j++) dbr[j * bs] -= g[j] * ar[j] / (br[j * bs] * br[j * bs]);
            break;
        }
    }
}

static tk_tensor *binary(tk_ctx *ctx, bin_kind kind, tk_tensor *a, tk_tensor *b) {
    const char *op = bin_names[kind];
    TK_OP_INPUT(ctx, op, a);
    TK_OP_INPUT(ctx, op, b);
    bcast bc;
    if (!tk_check_f32(ctx, op, "a", a) || !tk_check_f32(ctx, op, "b", b) || !broadcast_of(ctx, op, a, b, &bc))
        return NULL;
    a = tk_ctx_input(ctx, a);
    b = tk_ctx_input(ctx, b);
    tk_tensor *out = a && b ? tk_ctx_empty(ctx, TK_F32, a->ndim, a->shape) : NULL;
    if (!out) return NULL;
    float *y = tk_f32(out);
    const float *av = tk_f32(a), *bv = tk_f32(b);
    for (int64_t r = 0; r < bc.rows; r++) {
        float *yr = y + r * bc.cols;
        const float *ar = av + r * bc.cols, *br = bv + r * bc.b_row;
        switch (kind) {
        case BIN_ADD:
            for (int64_t j = 0; j < bc.cols; j++) yr[j] = ar[j] + br[j * bc.b_col];
            break;
        case BIN_SUB:
            for (int64_t j = 0; j < bc.cols; j++) yr[j] = ar[j] - br[j * bc.b_col];
            break;
        case BIN_MUL:
            for (int64_t j = 0; j < bc.cols; j++) yr[j] = ar[j] * br[j * bc.b_col];
            break;
        case BIN_DIV:
            for (int64_t j = 0; j < bc.cols; j++) yr[j] = ar[j] / br[j * bc.b_col];
            break;
        }
    }
    tk_tensor *in[2] = { a, b };
    if (tk_ctx_wants_grad(ctx, 2, in)) {
        tk_node *node = tk_ctx_record(ctx, op, bin_backward, out, 2, in);
        if (!node) return NULL;
        node->arg.i[0] = kind;
        node->arg.i[1] = bc.cols;
        node->arg.i[2] = bc.b_row;
        node->arg.i[3] = bc.b_col;
    }
    return out;
}

tk_tensor *tk_add(tk_ctx *ctx, tk_tensor *a, tk_tensor *b) { return binary(ctx, BIN_ADD, a, b); }
tk_tensor *tk_sub(tk_ctx *ctx, tk_tensor *a, tk_tensor *b) { return binary(ctx, BIN_SUB, a, b); }
tk_tensor *tk_mul(tk_ctx *ctx, tk_tensor *a, tk_tensor *b) { return binary(ctx, BIN_MUL, a, b); }
tk_tensor *tk_div(tk_ctx *ctx, tk_tensor *a, tk_tensor *b) { return binary(ctx, BIN_DIV, a, b); }

/* The added losses are summed with tk_add as they come, so the gradient of the sum
 * reaches each of them. Here rather than beside tk_ctx_added_loss in graph.c: the tape
 * does not build on the ops. */
tk_status tk_ctx_add_loss(tk_ctx *ctx, tk_tensor *loss) {
    if (!loss) return TK_ERROR;
    if (loss->numel != 1) {
        tk_ctx_fail(ctx, "add_loss: a loss must have one element");
        return TK_ERROR;
    }
    ctx->added_loss = ctx->added_loss ? tk_add(ctx, ctx->added_loss, loss) : loss;
    return ctx->added_loss ? TK_OK : TK_ERROR;
}

/* --- unary ops --- */

typedef enum { UN_SCALE, UN_ADD_SCALAR, UN_EXP, UN_LOG, UN_SQRT, UN_SQUARE, UN_ACTIVATE } un_kind;
static const char *const un_names[] = { "scale", "add_scalar", "exp", "log", "sqrt", "square", "activate" };

static void unary_backward(tk_ctx *ctx, tk_node *node) {
    un_kind kind = (un_kind)node->arg.i[0];
    float s = (float)node->arg.f[1];
    tk_tensor *a = node->in[0];
    bool fresh = false; /* an activation writes a fresh gradient; the others add into zeros */
    float *da = kind == UN_ACTIVATE ? tk_op_grad_w(ctx, a, &fresh) : tk_op_grad(ctx, a);
    if (!da) return;
    const float *x = tk_f32(a), *y = tk_f32(node->out), *dy = tk_f32(node->out->grad);
    int64_t n = a->numel;
    switch (kind) {
    case UN_SCALE:
        for (int64_t i = 0; i < n; i++) da[i] += s * dy[i];
        break;
    case UN_ADD_SCALAR:
        for (int64_t i = 0; i < n; i++) da[i] += dy[i];
        break;
    case UN_EXP:
        for (int64_t i = 0; i < n; i++) da[i] += dy[i] * y[i];
        break;
    case UN_LOG:
        for (int64_t i = 0; i < n; i++) da[i] += dy[i] / x[i];
        break;
    case UN_SQRT:
        for (int64_t i = 0; i < n; i++) da[i] += 0.5f * dy[i] / y[i];
        break;
    case UN_SQUARE:
        for (int64_t i = 0; i < n; i++) da[i] += 2.0f * x[i] * dy[i];
        break;
    case UN_ACTIVATE:
        tk_act_backward((tk_activation)node->arg.i[2], da, dy, x, y, n, !fresh);
        break;
    }
}

static tk_tensor *unary(tk_ctx *ctx, un_kind kind, tk_tensor *a, float s, tk_activation act) {
    const char *op = un_names[kind];
    TK_OP_INPUT(ctx, op, a);
    if (!tk_check_f32(ctx, op, "a", a)) return NULL;
    a = tk_ctx_input(ctx, a);
    tk_tensor *out = a ? tk_ctx_empty(ctx, TK_F32, a->ndim, a->shape) : NULL;
    if (!out) return NULL;
    const float *x = tk_f32(a);
    float *y = tk_f32(out);
    int64_t n = a->numel;
    switch (kind) {
    case UN_SCALE:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * s;
        break;
    case UN_ADD_SCALAR:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] + s;
        break;
    case UN_EXP:
        for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
        break;
    case UN_LOG:
        for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]);
        break;
    case UN_SQRT:
        for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]);
        break;
    case UN_SQUARE:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * x[i];
        break;
    case UN_ACTIVATE:
        tk_act_forward(act, y, x, n);
        break;
    }
    if (tk_ctx_wants_grad(ctx, 1, &a)) {
        tk_node *node =
            tk_ctx_record(ctx, kind == UN_ACTIVATE ? tk_activation_name(act) : op, unary_backward, out, 1, &a);
        if (!node) return NULL;
        node->arg.i[0] = kind;
        node->arg.f[1] = s;
        node->arg.i[2] = act;
    }
    return out;
}

tk_tensor *tk_scale(tk_ctx *ctx, tk_tensor *a, float s) { return unary(ctx, UN_SCALE, a, s, TK_ACT_LINEAR); }
tk_tensor *tk_add_scalar(tk_ctx *ctx, tk_tensor *a, float s) { return unary(ctx, UN_ADD_SCALAR, a, s, TK_ACT_LINEAR); }
tk_tensor *tk_exp(tk_ctx *ctx, tk_tensor *a) { return unary(ctx, UN_EXP, a, 0, TK_ACT_LINEAR); }
tk_tensor *tk_log(tk_ctx *ctx, tk_tensor *a) { return unary(ctx, UN_LOG, a, 0, TK_ACT_LINEAR); }
tk_tensor *tk_sqrt(tk_ctx *ctx, tk_tensor *a) { return unary(ctx, UN_SQRT, a, 0, TK_ACT_LINEAR); }
tk_tensor *tk_square(tk_ctx *ctx, tk_tensor *a) { return unary(ctx, UN_SQUARE, a, 0, TK_ACT_LINEAR); }

tk_tensor *tk_activate(tk_ctx *ctx, tk_tensor *a, tk_activation act) {
    if ((unsigned)act >= TK_ACT_COUNT) {
        if (!ctx) return NULL;
        return tk_ctx_fail(ctx, "activate: unknown activation %d (known: %s)", (int)act, tk_activation_names());
    }
    return unary(ctx, UN_ACTIVATE, a, 0, act);
}

/* --- activations --- */

static const char *const act_names[TK_ACT_COUNT] = {
    [TK_ACT_LINEAR] = "linear", [TK_ACT_RELU] = "relu", [TK_ACT_SIGMOID] = "sigmoid", [TK_ACT_TANH] = "tanh",
    [TK_ACT_GELU] = "gelu",     [TK_ACT_SELU] = "selu", [TK_ACT_ELU] = "elu",         [TK_ACT_SOFTPLUS] = "softplus",
};

int tk_activation_from_name(const char *name) {
    if (!name) return TK_ACT_LINEAR;
    for (int i = 0; i < TK_ACT_COUNT; i++)
        if (strcmp(name, act_names[i]) == 0) return i;
    return -1;
}

const char *tk_activation_name(tk_activation act) { return (unsigned)act < TK_ACT_COUNT ? act_names[act] : "unknown"; }

const char *tk_activation_names(void) { return "linear, relu, sigmoid, tanh, gelu, selu, elu, softplus"; }

#define SELU_ALPHA 1.6732632423543772848170429916717f
#define SELU_SCALE 1.0507009873554804934193349852946f
#define GELU_C 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K 0.044715f

static inline float sigmoidf(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* ReLU without branches (half the signs of a layer's outputs are unpredictable), a
 * vector at a time, y = x > 0 ? x : 0 (NaN gives 0, as the scalar form). b (may be NULL)
 * is added first: y = relu(x + b), the fused bias of a dense layer. y may be x.
 * On x86-64 in SSE: max(v, 0) returns its second operand, 0, for NaN and for -0, so it
 * is exactly the select. (GCC lowers an 8-lane vector comparison on plain SSE2 to a
 * scalar compare per lane through the stack, which made this loop 10% of an export.) */
static void relu_forward(float *y, const float *x, const float *b, int64_t n) {
    int64_t i = 0;
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps();
    if (b)
        for (; i + 4 <= n; i += 4)
            _mm_storeu_ps(y + i, _mm_max_ps(_mm_add_ps(_mm_loadu_ps(x + i), _mm_loadu_ps(b + i)), zero));
    else
        for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, _mm_max_ps(_mm_loadu_ps(x + i), zero));
#else
    const vf zero = { 0 };
    for (; i + VL <= n; i += VL) {
        vf v = vf_load(x + i);
        if (b) v += vf_load(b + i);
        vf_store(y + i, vf_select(v > zero, v, zero));
    }
#endif
    for (; i < n; i++) {
        float v = b ? x[i] + b[i] : x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

/* dx (+)= dy * (y > 0 ? 1 : 0), a vector at a time: a multiply rather than a select, so
 * that a NaN or infinite dy gives what the scalar form gives. */
static void relu_backward(float *dx, const float *dy, const float *y, int64_t n, bool accumulate) {
    int64_t i = 0;
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
    for (; i + 4 <= n; i += 4) {
        __m128 d = _mm_mul_ps(_mm_loadu_ps(dy + i), _mm_and_ps(_mm_cmpgt_ps(_mm_loadu_ps(y + i), zero), one));
        _mm_storeu_ps(dx + i, accumulate ? _mm_add_ps(_mm_loadu_ps(dx + i), d) : d);
    }
#else
    const vf zero = { 0 }, one = vf_splat(1.0f);
    for (; i + VL <= n; i += VL) {
        vf d = vf_load(dy + i) * vf_select(vf_load(y + i) > zero, one, zero);
        vf_store(dx + i, accumulate ? vf_load(dx + i) + d : d);
    }
#endif
    for (; i < n; i++) {
        float d = dy[i] * (y[i] > 0.0f ? 1.0f : 0.0f);
        dx[i] = accumulate ? dx[i] + d : d;
    }
}

void tk_bias_act_forward(tk_activation act, float *y, const float *bias, int64_t n) {
    if (act == TK_ACT_RELU) {
        relu_forward(y, y, bias, n);
        return;
    }
    if (bias) tk_vec_add(y, bias, n);
    tk_act_forward(act, y, y, n);
}

void tk_act_forward(tk_activation act, float *y, const float *x, int64_t n) {
    switch (act) {
    case TK_ACT_LINEAR:
        if (y != x) memcpy(y, x, (size_t)n * sizeof *y);
        break;
    case TK_ACT_RELU:
        relu_forward(y, x, NULL, n);
        break;
    case TK_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) y[i] = sigmoidf(x[i]);
        break;
    case TK_ACT_TANH:
        for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
        break;
    case TK_ACT_GELU:
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = 0.5f * v * (1.0f + tanhf(GELU_C * (v + GELU_K * v * v * v)));
        }
        break;
    case TK_ACT_SELU:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? SELU_SCALE * x[i] : SELU_SCALE * SELU_ALPHA * expm1f(x[i]);
        break;
    case TK_ACT_ELU:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : expm1f(x[i]);
        break;
    case TK_ACT_SOFTPLUS:
        /* log(1 + e^x) = max(x, 0) + log1p(e^-|x|) */
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = (v > 0.0f ? v : 0.0f) + log1pf(expf(-fabsf(v)));
        }
        break;
    default:
        break;
    }
}

/* The derivative of each activation at x, written from its output y where possible:
 * relu (y > 0), sigmoid y(1 - y), tanh 1 - y^2, selu (y > 0 ? scale : y + scale*alpha),
 * elu (y > 0 ? 1 : y + 1), softplus sigmoid(x) = 1 - e^-y; gelu from x. */
static inline float act_deriv(tk_activation act, float x, float y) {
    switch (act) {
    case TK_ACT_RELU:
        return y > 0.0f ? 1.0f : 0.0f;
    case TK_ACT_SIGMOID:
        return y * (1.0f - y);
    case TK_ACT_TANH:
        return 1.0f - y * y;
    case TK_ACT_GELU: {
        float x2 = x * x, t = tanhf(GELU_C * (x + GELU_K * x2 * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_K * x2);
    }
    case TK_ACT_SELU:
        return y > 0.0f ? SELU_SCALE : y + SELU_SCALE * SELU_ALPHA;
    case TK_ACT_ELU:
        return y > 0.0f ? 1.0f : y + 1.0f;
    case TK_ACT_SOFTPLUS:
        return -expm1f(-y);
    default:
        return 1.0f;
    }
}

void tk_act_backward(tk_activation act, float *dx, const float *dy, const float *x, const float *y, int64_t n,
                     bool accumulate) {
    if (act == TK_ACT_LINEAR) {
        if (accumulate)
            tk_vec_add(dx, dy, n);
        else if (dx != dy)
            memcpy(dx, dy, (size_t)n * sizeof *dx);
        return;
    }
    if (act == TK_ACT_RELU) {
        relu_backward(dx, dy, y, n, accumulate);
        return;
    }
    if (accumulate)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * act_deriv(act, x ? x[i] : 0.0f, y[i]);
    else
        for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * act_deriv(act, x ? x[i] : 0.0f, y[i]);
}
