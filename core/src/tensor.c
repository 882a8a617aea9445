/* Heap tensors, shapes, errors and random numbers. */
#include "internal.h"

#include <math.h>
#include <stdio.h>

static _Thread_local char last_error[TK_ERR_LEN];

const char *tk_last_error(void) { return last_error; }

void tk_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

char *tk_strdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

size_t tk_dtype_size(tk_dtype dtype) { return dtype == TK_I64 ? sizeof(int64_t) : sizeof(float); }

const char *tk_dtype_name(tk_dtype dtype) { return dtype == TK_I64 ? "int64" : "float32"; }

int64_t tk_shape_numel(int32_t ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

bool tk_shape_numel_checked(int32_t ndim, const int64_t *shape, int64_t *out) {
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n) || n > INT64_MAX / 8) return false;
    }
    *out = n;
    return true;
}

static bool valid_shape(int32_t ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > TK_MAX_DIMS) {
        tk_set_error("tensor rank %d is not supported (0 to %d dimensions)", (int)ndim, TK_MAX_DIMS);
        return false;
    }
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            tk_set_error("tensor dimension %d is negative (%lld)", (int)i, (long long)shape[i]);
            return false;
        }
        if (shape[i] > 0 && n > INT64_MAX / 8 / shape[i]) {
            tk_set_error("tensor shape is too large");
            return false;
        }
        n *= shape[i];
    }
    return true;
}

tk_tensor *tk_tensor_new(tk_dtype dtype, int32_t ndim, const int64_t *shape) {
    if (dtype != TK_F32 && dtype != TK_I64) {
        tk_set_error("unknown dtype %d", (int)dtype);
        return NULL;
    }
    if (!valid_shape(ndim, shape)) return NULL;
    size_t bytes = (size_t)tk_shape_numel(ndim, shape) * tk_dtype_size(dtype);
    void *data = calloc(bytes ? bytes : 1, 1);
    if (!data) {
        tk_set_error("out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    return tk_tensor_adopt(dtype, ndim, shape, data);
}

tk_tensor *tk_tensor_adopt(tk_dtype dtype, int32_t ndim, const int64_t *shape, void *data) {
    if ((dtype != TK_F32 && dtype != TK_I64) || !valid_shape(ndim, shape)) {
        if (dtype != TK_F32 && dtype != TK_I64) tk_set_error("unknown dtype %d", (int)dtype);
        free(data);
        return NULL;
    }
    tk_tensor *t = calloc(1, sizeof *t);
    if (!data) data = calloc(1, 1);
    if (!t || !data) {
        free(t);
        free(data);
        tk_set_error("out of memory");
        return NULL;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = tk_shape_numel(ndim, shape);
    t->data = data;
    t->flags = TK_TENSOR_HEAP;
    t->refcount = 1;
    return t;
}

tk_tensor *tk_tensor_new_1d(tk_dtype dtype, int64_t n0) { return tk_tensor_new(dtype, 1, &n0); }

tk_tensor *tk_tensor_new_2d(tk_dtype dtype, int64_t n0, int64_t n1) {
    int64_t s[2] = { n0, n1 };
    return tk_tensor_new(dtype, 2, s);
}

/* The tensor whose hook covers t: t, the base of a view, the source of a context alias. */
static tk_tensor *hooked(const tk_tensor *t) {
    if (!t) return NULL;
    if (t->lazy) return (tk_tensor *)t;
    if (t->base && t->base->lazy) return t->base;
    if (t->source && t->source->lazy) return (tk_tensor *)t->source;
    return NULL;
}

void tk_tensor_sync(tk_tensor *t) {
    tk_tensor *h = hooked(t);
    if (!h) return;
    tk_lazy_rows *l = h->lazy;
    pthread_mutex_lock(&l->mu);
    l->sync_all(l->ud, h);
    pthread_mutex_unlock(&l->mu);
}

void tk_tensor_sync_rows(tk_tensor *t, int64_t n, const int64_t *rows) {
    tk_tensor *h = hooked(t);
    if (!h || n <= 0) return;
    if (h != t && h->numel != t->numel) { /* a view of another shape: its rows are not the table's */
        tk_tensor_sync(h);
        return;
    }
    tk_lazy_rows *l = h->lazy;
    pthread_mutex_lock(&l->mu);
    l->sync_rows(l->ud, h, n, rows);
    pthread_mutex_unlock(&l->mu);
}

tk_tensor *tk_tensor_clone(const tk_tensor *t) {
    if (!t) return NULL;
    tk_tensor_sync((tk_tensor *)t); /* brings values up to date: what a reader sees anyway */
    tk_tensor *c = tk_tensor_new(t->dtype, t->ndim, t->shape);
    if (c && t->numel) memcpy(c->data, t->data, (size_t)t->numel * tk_dtype_size(t->dtype));
    return c;
}

tk_tensor *tk_tensor_reshape_view(tk_tensor *t, int32_t ndim, const int64_t *shape) {
    if (!(t->flags & TK_TENSOR_HEAP)) {
        tk_set_error("reshape_view needs a heap tensor");
        return NULL;
    }
    if (!valid_shape(ndim, shape)) return NULL;
    if (tk_shape_numel(ndim, shape) != t->numel) {
        tk_set_error("cannot view %lld elements as a shape of %lld", (long long)t->numel,
                     (long long)tk_shape_numel(ndim, shape));
        return NULL;
    }
    tk_tensor *v = calloc(1, sizeof *v);
    if (!v) {
        tk_set_error("out of memory");
        return NULL;
    }
    *v = *t;
    v->ndim = ndim;
    memset(v->shape, 0, sizeof v->shape);
    for (int32_t i = 0; i < ndim; i++) v->shape[i] = shape[i];
    v->flags = TK_TENSOR_HEAP | TK_TENSOR_VIEW | (t->flags & TK_TENSOR_REQUIRES_GRAD);
    v->refcount = 1;
    v->base = t->base ? t->base : t;
    v->lazy = NULL; /* the base's hook covers the view (tk_tensor_sync) */
    tk_tensor_retain(v->base);
    return v;
}

void tk_tensor_retain(tk_tensor *t) {
    if (t && (t->flags & TK_TENSOR_HEAP)) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
}

void tk_tensor_release(tk_tensor *t) {
    if (!t || !(t->flags & TK_TENSOR_HEAP)) return;
    if (__atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (t->flags & TK_TENSOR_VIEW)
        tk_tensor_release(t->base);
    else
        free(t->data);
    free(t);
}

void tk_tensor_set_requires_grad(tk_tensor *t, bool on) {
    if (!t) return;
    if (on)
        t->flags |= TK_TENSOR_REQUIRES_GRAD;
    else
        t->flags &= ~(uint32_t)TK_TENSOR_REQUIRES_GRAD;
    if (!(t->flags & TK_TENSOR_HEAP)) t->requires_grad = on;
}

bool tk_tensor_same_shape(const tk_tensor *a, const tk_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int32_t i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *tk_shape_str(const tk_tensor *t, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, len - off, "[");
    for (int32_t i = 0; i < t->ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (off < len) snprintf(buf + off, len - off, "]");
    return buf;
}

tk_status tk_tensor_copy_from(tk_tensor *dst, const tk_tensor *src) {
    if (dst->dtype != src->dtype || dst->numel != src->numel) {
        char a[64], b[64];
        tk_set_error("copy_from: expected %s %s, got %s %s", tk_dtype_name(dst->dtype), tk_shape_str(dst, a, sizeof a),
                     tk_dtype_name(src->dtype), tk_shape_str(src, b, sizeof b));
        return TK_ERROR;
    }
    /* dst too: rows written now must not get the skipped steps of their old values later */
    tk_tensor_sync((tk_tensor *)src);
    tk_tensor_sync(dst);
    if (dst->numel) memmove(dst->data, src->data, (size_t)dst->numel * tk_dtype_size(dst->dtype));
    return TK_OK;
}

void tk_tensor_fill(tk_tensor *t, double value) {
    tk_tensor_sync(t);
    if (t->dtype == TK_F32) {
        float *p = tk_f32(t);
        for (int64_t i = 0; i < t->numel; i++) p[i] = (float)value;
    } else {
        int64_t *p = tk_i64(t);
        for (int64_t i = 0; i < t->numel; i++) p[i] = (int64_t)value;
    }
}

/* --- random numbers: xoshiro256** --- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void tk_rng_seed(uint64_t s[4], uint64_t seed) {
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tk_rng_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float tk_rng_uniform(uint64_t s[4]) { return (float)(tk_rng_next(s) >> 40) * (1.0f / 16777216.0f); }

float tk_rng_normal(uint64_t s[4]) {
    /* Box-Muller; u1 in (0, 1]. */
    double u1 = ((double)(tk_rng_next(s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(tk_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
