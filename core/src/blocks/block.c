/* The generic block: construction, reference counting, the forward driver (pre -> kind
 * forward -> post -> aggregation, with the lazy build and the error path), parameter
 * paths, copy and clone. Config and the kind registry are in config.c. */
#include "block_impl.h"

#include <pthread.h>
#include <stdio.h>

typedef struct tk_block_priv {
    tk_block pub;         /* first: a tk_block * is a tk_block_priv * */
    tk_param_info *pinfo; /* cap_params entries, parallel to pub.params */
    uint64_t seed;        /* for weights built lazily */
} tk_block_priv;

static tk_block_priv *priv(const tk_block *b) { return (tk_block_priv *)b; }

uint64_t tk_seed_mix(uint64_t seed, uint64_t k) {
    uint64_t z = seed + (k + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t tk_block_seed(const tk_block *b) { return priv(b)->seed; }
void tk_block_set_seed(tk_block *b, uint64_t seed) { priv(b)->seed = seed; }

/* ------------------------------------------------------------------------------------ */
/* Construction and lifetime                                                              */
/* ------------------------------------------------------------------------------------ */

static void free_impl(const tk_block_kind *kind, void *impl) {
    if (!impl) return;
    if (kind && kind->free_impl)
        kind->free_impl(impl);
    else
        free(impl);
}

tk_block *tk_block_new(const tk_block_kind *kind, const char *name, void *impl) {
    if (!kind || !kind->forward) {
        tk_set_error("block_new: %s", kind ? "the kind has no forward function" : "kind is NULL");
        return NULL;
    }
    if (!name || !*name) name = kind->name;
    tk_block_priv *p = calloc(1, sizeof *p);
    char *n = tk_strdup(name);
    if (!p || !n) {
        free(p);
        free(n);
        free_impl(kind, impl);
        tk_set_error("out of memory");
        return NULL;
    }
    tk_block *b = &p->pub;
    b->kind = kind;
    b->name = n;
    b->refcount = 1;
    b->impl = impl;
    b->built = 1; /* kinds with a lazy build clear it */
    return b;
}

void tk_block_retain(tk_block *b) {
    if (b) __atomic_add_fetch(&b->refcount, 1, __ATOMIC_RELAXED);
}

void tk_block_release(tk_block *b) {
    if (!b) return;
    if (__atomic_sub_fetch(&b->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (int32_t i = 0; i < b->nchildren; i++) {
        tk_block_release(b->children[i]);
        free(b->child_names[i]);
    }
    free(b->children);
    free(b->child_names);
    for (int32_t i = 0; i < b->nparams; i++) {
        tk_tensor_release(b->params[i]);
        free(b->param_names[i]);
    }
    free(b->params);
    free(b->param_names);
    free(b->param_trainable);
    free(priv(b)->pinfo);
    tk_block_release(b->pre);
    tk_block_release(b->post);
    free_impl(b->kind, b->impl);
    free(b->meta);
    free(b->name);
    free(priv(b));
}

tk_status tk_block_set_meta(tk_block *b, const char *json_object) {
    char *copy = NULL;
    if (json_object) {
        cJSON *o = tk_json_parse(json_object, strlen(json_object), "meta");
        bool parsed = o != NULL, ok = cJSON_IsObject(o);
        cJSON_Delete(o);
        if (!ok) {
            char msg[TK_ERR_LEN];
            snprintf(msg, sizeof msg, "%s", parsed ? "meta must be a JSON object" : tk_last_error());
            tk_set_error("block '%s': %s", b->name, msg);
            return TK_ERROR;
        }
        if (!(copy = tk_strdup(json_object))) {
            tk_set_error("out of memory");
            return TK_ERROR;
        }
    }
    free(b->meta);
    b->meta = copy;
    return TK_OK;
}

/* Whether `target` is b or below b (children, pre, post). */
static bool contains(const tk_block *b, const tk_block *target) {
    if (!b) return false;
    if (b == target) return true;
    for (int32_t i = 0; i < b->nchildren; i++)
        if (contains(b->children[i], target)) return true;
    return contains(b->pre, target) || contains(b->post, target);
}

tk_status tk_block_add_child(tk_block *b, const char *child_name, tk_block *child) {
    if (!b || !child) {
        tk_set_error("block_add_child: %s is NULL", b ? "child" : "block");
        return TK_ERROR;
    }
    if (contains(child, b)) {
        tk_set_error("block '%s': adding '%s' as a child would make a cycle", b->name, child->name);
        return TK_ERROR;
    }
    if (b->nchildren == b->cap_children) {
        int32_t cap = b->cap_children ? b->cap_children * 2 : 4;
        tk_block **c = realloc(b->children, (size_t)cap * sizeof *c);
        if (!c) goto oom;
        b->children = c;
        char **n = realloc(b->child_names, (size_t)cap * sizeof *n);
        if (!n) goto oom;
        b->child_names = n;
        b->cap_children = cap;
    }
    char *name = NULL;
    if (child_name && !(name = tk_strdup(child_name))) goto oom;
    tk_block_retain(child);
    b->children[b->nchildren] = child;
    b->child_names[b->nchildren] = name;
    b->nchildren++;
    return TK_OK;
oom:
    tk_set_error("out of memory");
    return TK_ERROR;
}

static tk_status add_param(tk_block *b, const char *name, tk_tensor *t, bool trainable, tk_param_info info) {
    if (!b || !name || !*name || !t) {
        tk_set_error("block_add_param: %s is NULL", !b ? "block" : !t ? "tensor" : "name");
        return TK_ERROR;
    }
    if (!(t->flags & TK_TENSOR_HEAP)) {
        tk_set_error("block '%s': parameter '%s' must be a heap tensor", b->name, name);
        return TK_ERROR;
    }
    if (tk_block_param(b, name)) {
        tk_set_error("block '%s' has a parameter '%s' already", b->name, name);
        return TK_ERROR;
    }
    if (b->nparams == b->cap_params) {
        int32_t cap = b->cap_params ? b->cap_params * 2 : 4;
        tk_tensor **p = realloc(b->params, (size_t)cap * sizeof *p);
        if (!p) goto oom;
        b->params = p;
        char **n = realloc(b->param_names, (size_t)cap * sizeof *n);
        if (!n) goto oom;
        b->param_names = n;
        bool *tr = realloc(b->param_trainable, (size_t)cap * sizeof *tr);
        if (!tr) goto oom;
        b->param_trainable = tr;
        tk_param_info *pi = realloc(priv(b)->pinfo, (size_t)cap * sizeof *pi);
        if (!pi) goto oom;
        priv(b)->pinfo = pi;
        b->cap_params = cap;
    }
    char *copy = tk_strdup(name);
    if (!copy) goto oom;
    tk_tensor_retain(t);
    b->params[b->nparams] = t;
    b->param_names[b->nparams] = copy;
    b->param_trainable[b->nparams] = trainable;
    priv(b)->pinfo[b->nparams] = info;
    b->nparams++;
    return TK_OK;
oom:
    tk_set_error("out of memory");
    return TK_ERROR;
}

tk_status tk_block_add_param(tk_block *b, const char *name, tk_tensor *t, bool trainable) {
    tk_param_info info = { false, { .kind = TK_INIT_ZEROS, .a = 0, .b = 0 } };
    return add_param(b, name, t, trainable, info);
}

tk_status tk_block_add_param_init(tk_block *b, const char *name, tk_tensor *t, bool trainable, tk_init init) {
    tk_param_info info = { true, init };
    return add_param(b, name, t, trainable, info);
}

void tk_block_truncate_params(tk_block *b, int32_t n) {
    while (b->nparams > n) {
        b->nparams--;
        tk_tensor_release(b->params[b->nparams]);
        free(b->param_names[b->nparams]);
    }
}

tk_tensor *tk_block_new_param(tk_block *b, const char *name, int32_t ndim, const int64_t *shape, bool trainable,
                              tk_init init, uint64_t seed) {
    if (tk_cfg_check_param(name, TK_F32, ndim, shape) != TK_OK) return NULL; /* before allocating */
    tk_tensor *t = tk_tensor_new(TK_F32, ndim, shape);
    if (!t) {
        char msg[TK_ERR_LEN], s[96];
        tk_tensor fake = { .ndim = ndim > 0 && ndim <= TK_MAX_DIMS ? ndim : 0 };
        if (shape) memcpy(fake.shape, shape, (size_t)fake.ndim * sizeof *shape);
        snprintf(msg, sizeof msg, "%s", tk_last_error());
        tk_set_error("parameter '%s' %s: %s", name ? name : "(null)", tk_shape_str(&fake, s, sizeof s), msg);
        return NULL;
    }
    tk_init_fill(t, init, seed);
    tk_tensor_set_requires_grad(t, trainable);
    tk_status st = tk_block_add_param_init(b, name, t, trainable, init);
    tk_tensor_release(t); /* the block holds it */
    return st == TK_OK ? t : NULL;
}

tk_tensor *tk_block_param(const tk_block *b, const char *name) {
    if (!b || !name) return NULL;
    for (int32_t i = 0; i < b->nparams; i++)
        if (strcmp(b->param_names[i], name) == 0) return b->params[i];
    return NULL;
}

/* --- reading a block: the accessors of towerkit.h, where tk_block is opaque --- */

const char *tk_block_name(const tk_block *b) { return b->name; }
const char *tk_block_kind_name(const tk_block *b) { return b->kind->name; }
const char *tk_block_meta(const tk_block *b) { return b->meta; }
tk_block *tk_block_pre(const tk_block *b) { return b->pre; }
tk_block *tk_block_post(const tk_block *b) { return b->post; }
tk_aggregation tk_block_aggregation(const tk_block *b) { return b->aggregation; }
int32_t tk_block_num_children(const tk_block *b) { return b->nchildren; }
int32_t tk_block_num_params(const tk_block *b) { return b->nparams; }

tk_block *tk_block_child(const tk_block *b, int32_t i) { return i >= 0 && i < b->nchildren ? b->children[i] : NULL; }

const char *tk_block_child_name(const tk_block *b, int32_t i) {
    if (i < 0 || i >= b->nchildren) return NULL;
    return b->child_names[i] ? b->child_names[i] : b->children[i]->name;
}

tk_tensor *tk_block_param_at(const tk_block *b, int32_t i) { return i >= 0 && i < b->nparams ? b->params[i] : NULL; }

const char *tk_block_param_name(const tk_block *b, int32_t i) {
    return i >= 0 && i < b->nparams ? b->param_names[i] : NULL;
}

bool tk_block_param_trainable(const tk_block *b, int32_t i) {
    return i >= 0 && i < b->nparams && b->param_trainable[i];
}

static tk_status set_hook(tk_block *b, tk_block **slot, tk_block *hook, const char *which) {
    if (!b) {
        tk_set_error("block_set_%s: block is NULL", which);
        return TK_ERROR;
    }
    if (hook && contains(hook, b)) {
        tk_set_error("block '%s': '%s' as %s would make a cycle", b->name, hook->name, which);
        return TK_ERROR;
    }
    tk_block_retain(hook);
    tk_block_release(*slot);
    *slot = hook;
    return TK_OK;
}

tk_status tk_block_set_pre(tk_block *b, tk_block *pre) { return set_hook(b, &b->pre, pre, "pre"); }
tk_status tk_block_set_post(tk_block *b, tk_block *post) { return set_hook(b, &b->post, post, "post"); }

void tk_block_set_aggregation(tk_block *b, tk_aggregation agg) {
    if (b && (unsigned)agg < TK_AGG_COUNT) b->aggregation = agg;
}

tk_status tk_block_set_name(tk_block *b, const char *name) {
    if (!b || !name || !*name) {
        tk_set_error("block_set_name: %s", !b ? "block is NULL" : "a block name must not be empty");
        return TK_ERROR;
    }
    char *n = tk_strdup(name);
    if (!n) {
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    free(b->name);
    b->name = n;
    return TK_OK;
}

bool tk_block_is_built(const tk_block *b) {
    if (!b) return false;
    if (!__atomic_load_n(&b->built, __ATOMIC_ACQUIRE)) return false;
    for (int32_t i = 0; i < b->nchildren; i++)
        if (!tk_block_is_built(b->children[i])) return false;
    return (!b->pre || tk_block_is_built(b->pre)) && (!b->post || tk_block_is_built(b->post));
}

/* ------------------------------------------------------------------------------------ */
/* Forward                                                                                */
/* ------------------------------------------------------------------------------------ */

/* One lock for every lazy build: builds happen once per block, so contention is nil. */
static pthread_mutex_t build_lock = PTHREAD_MUTEX_INITIALIZER;

static tk_status ensure_built(tk_ctx *ctx, tk_block *b, tk_value *in) {
    if (!b->kind->build || __atomic_load_n(&b->built, __ATOMIC_ACQUIRE)) return TK_OK;
    tk_status st = TK_OK;
    pthread_mutex_lock(&build_lock);
    if (!__atomic_load_n(&b->built, __ATOMIC_RELAXED)) {
        st = b->kind->build(ctx, b, in);
        if (st == TK_OK)
            __atomic_store_n(&b->built, 1, __ATOMIC_RELEASE);
        else if (!tk_ctx_failed(ctx))
            tk_ctx_fail(ctx, "%s: building the weights failed", b->kind->name);
    }
    pthread_mutex_unlock(&build_lock);
    return st;
}

tk_value *tk_block_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    if (!ctx) return NULL;
    if (!b) return tk_ctx_fail(ctx, "block_forward: block is NULL");
    if (tk_ctx_failed(ctx)) return NULL; /* an earlier step failed: keep its message */
    if (!in) {
        tk_ctx_fail(ctx, "input is NULL");
        tk_ctx_error_push_path(ctx, b->name);
        return NULL;
    }
    int depth = ctx->trace_depth++;
    tk_value *v = in;
    if (b->pre) v = tk_block_forward(ctx, b->pre, v);
    if (v) v = ensure_built(ctx, b, v) == TK_OK ? b->kind->forward(ctx, b, v) : NULL;
    if (v && b->post) v = tk_block_forward(ctx, b->post, v);
    if (v && b->aggregation != TK_AGG_NONE) v = tk_value_of(ctx, tk_aggregate(ctx, b->aggregation, v));
    ctx->trace_depth = depth;
    if (!v || tk_ctx_failed(ctx)) {
        if (!tk_ctx_failed(ctx)) tk_ctx_fail(ctx, "%s block returned no value", b->kind->name);
        tk_ctx_error_push_path(ctx, b->name);
        return NULL;
    }
    if (ctx->trace) ctx->trace(ctx->trace_ud, depth, b, v);
    return v;
}

/* ------------------------------------------------------------------------------------ */
/* Parameter paths                                                                        */
/* ------------------------------------------------------------------------------------ */

/* The siblings of a container, for naming: children 0..n-1, then pre (n), then post
 * (n + 1). A branch name (parallel) stands for its child's block name. */
static const tk_block *sibling(const tk_block *b, int32_t k) {
    if (k < b->nchildren) return b->children[k];
    return k == b->nchildren ? b->pre : b->post;
}

static const char *sibling_name(const tk_block *b, int32_t k) {
    if (k < b->nchildren) return tk_block_child_name(b, k);
    const tk_block *s = sibling(b, k);
    return s ? s->name : NULL;
}

/* Writes the path component of sibling k: its name, or "<name>_<k>" when another
 * sibling has the same name. */
static void sibling_component(const tk_block *b, int32_t k, char *buf, size_t len) {
    const char *name = sibling_name(b, k);
    bool dup = false;
    for (int32_t j = 0; j < b->nchildren + 2 && !dup; j++) {
        const char *other = j != k ? sibling_name(b, j) : NULL;
        dup = other && strcmp(other, name) == 0;
    }
    if (dup)
        snprintf(buf, len, "%s_%d", name, (int)k);
    else
        snprintf(buf, len, "%s", name);
}

#define TK_PATH_MAX 2048

#define TK_SEEN_INLINE 128

typedef struct visit_state {
    tk_param_visitor fn;
    void *ud;
    /* a tensor shared by two blocks is visited once; the list lives on the stack for
     * graphs of up to TK_SEEN_INLINE parameters, so a training step allocates nothing */
    const tk_tensor **seen;
    size_t nseen, cap;
    const tk_tensor *seen_inline[TK_SEEN_INLINE];
    bool stop;
    char path[TK_PATH_MAX];
} visit_state;

static bool seen_before(visit_state *st, const tk_tensor *t) {
    for (size_t i = 0; i < st->nseen; i++)
        if (st->seen[i] == t) return true;
    if (st->nseen == st->cap) {
        size_t cap = st->cap * 2;
        const tk_tensor **s = malloc(cap * sizeof *s);
        if (!s) return false; /* out of memory: may visit a shared tensor twice */
        memcpy(s, st->seen, st->nseen * sizeof *s);
        if (st->seen != st->seen_inline) free(st->seen);
        st->seen = s;
        st->cap = cap;
    }
    st->seen[st->nseen++] = t;
    return false;
}

/* Appends "/<comp>" (or "<comp>" at the start) to the path; returns the old length. */
static size_t path_push(visit_state *st, size_t len, const char *comp) {
    snprintf(st->path + len, sizeof st->path - len, len ? "/%s" : "%s", comp);
    return len;
}

static void visit_rec(const tk_block *b, size_t len, visit_state *st) {
    for (int32_t i = 0; i < b->nparams && !st->stop; i++) {
        if (seen_before(st, b->params[i])) continue;
        path_push(st, len, b->param_names[i]);
        if (st->fn(st->ud, st->path, b->params[i], b->param_trainable[i])) st->stop = true;
        st->path[len] = '\0';
    }
    /* forward order: pre, children, post */
    for (int32_t n = 0; n < b->nchildren + 2 && !st->stop; n++) {
        int32_t k = n == 0 ? b->nchildren : n == b->nchildren + 1 ? n : n - 1;
        const tk_block *s = sibling(b, k);
        if (!s) continue;
        char comp[256];
        sibling_component(b, k, comp, sizeof comp);
        path_push(st, len, comp);
        visit_rec(s, strlen(st->path), st);
        st->path[len] = '\0';
    }
}

void tk_block_visit_params(const tk_block *b, bool skip_root, tk_param_visitor fn, void *ud) {
    if (!b || !fn) return;
    visit_state st;
    st.fn = fn;
    st.ud = ud;
    st.seen = st.seen_inline;
    st.nseen = 0;
    st.cap = TK_SEEN_INLINE;
    st.stop = false;
    st.path[0] = '\0';
    size_t len = 0;
    if (!skip_root) {
        path_push(&st, 0, b->name);
        len = strlen(st.path);
    }
    visit_rec(b, len, &st);
    if (st.seen != st.seen_inline) free(st.seen);
}

static int count_visitor(void *ud, const char *path, tk_tensor *param, bool trainable) {
    *(int64_t *)ud += param->numel;
    return 0;
}

int64_t tk_block_count_params(const tk_block *b) {
    int64_t n = 0;
    tk_block_visit_params(b, true, count_visitor, &n);
    return n;
}

tk_block *tk_block_find(tk_block *b, const char *name) {
    if (!b || !name) return NULL;
    if (strcmp(b->name, name) == 0) return b;
    for (int32_t i = 0; i < b->nchildren; i++)
        if (b->child_names[i] && strcmp(b->child_names[i], name) == 0) return b->children[i];
    tk_block *r = tk_block_find(b->pre, name);
    for (int32_t i = 0; i < b->nchildren && !r; i++) r = tk_block_find(b->children[i], name);
    return r ? r : tk_block_find(b->post, name);
}

/* ------------------------------------------------------------------------------------ */
/* Copy and clone                                                                         */
/* ------------------------------------------------------------------------------------ */

/* Blocks and tensors shared inside the graph stay shared in the copy. */
typedef struct copy_map {
    const void **from;
    void **to;
    size_t n, cap;
    bool fresh; /* copy: new weights; clone: weights copied */
    uint64_t seed, counter;
} copy_map;

static void *map_get(const copy_map *m, const void *from) {
    for (size_t i = 0; i < m->n; i++)
        if (m->from[i] == from) return m->to[i];
    return NULL;
}

static bool map_put(copy_map *m, const void *from, void *to) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 32;
        const void **f = realloc(m->from, cap * sizeof *f);
        if (!f) return false;
        m->from = f;
        void **t = realloc(m->to, cap * sizeof *t);
        if (!t) return false;
        m->to = t;
        m->cap = cap;
    }
    m->from[m->n] = from;
    m->to[m->n] = to;
    m->n++;
    return true;
}

static tk_status copy_param(copy_map *m, tk_block *dst, const tk_block *src, int32_t i) {
    tk_tensor *from = src->params[i];
    tk_param_info info = priv(src)->pinfo[i];
    tk_tensor *t = map_get(m, from);
    if (t) return add_param(dst, src->param_names[i], t, src->param_trainable[i], info);
    t = tk_tensor_new(from->dtype, from->ndim, from->shape);
    if (!t) return TK_ERROR;
    int32_t part = 0, parts = 1;
    int64_t rows = 0;
    if (m->fresh && info.has_init) {
        uint64_t seed = tk_seed_mix(m->seed, m->counter++);
        if ((from->flags & TK_TENSOR_ROW_SHARD) && tk_embeddings_row_part(src, i, &part, &parts, &rows) && parts > 1) {
            /* a table built as a part of its rows: those rows of the whole table this
             * init and seed make (as tk_embeddings_add_feature filled it) */
            if (tk_init_fill_rows(t, info.init, seed, rows, rows * part / parts) != TK_OK) {
                tk_tensor_release(t);
                return TK_ERROR;
            }
        } else {
            tk_init_fill(t, info.init, seed);
        }
    } else if (from->numel) {
        memcpy(t->data, from->data, (size_t)from->numel * tk_dtype_size(from->dtype));
    }
    t->flags |= from->flags & (TK_TENSOR_REQUIRES_GRAD | TK_TENSOR_ROW_SHARD); /* a shard stays one */
    tk_status st = TK_ERROR;
    if (map_put(m, from, t))
        st = add_param(dst, src->param_names[i], t, src->param_trainable[i], info);
    else
        tk_set_error("out of memory");
    tk_tensor_release(t);
    return st;
}

static tk_block *copy_rec(copy_map *m, const tk_block *b);

static tk_status copy_hook(copy_map *m, tk_block *dst, const tk_block *hook, bool post) {
    if (!hook) return TK_OK;
    tk_block *h = copy_rec(m, hook);
    if (!h) return TK_ERROR;
    if (post)
        tk_block_set_post(dst, h);
    else
        tk_block_set_pre(dst, h);
    tk_block_release(h);
    return TK_OK;
}

static tk_block *copy_rec(copy_map *m, const tk_block *b) {
    tk_block *c = map_get(m, b);
    if (c) {
        tk_block_retain(c);
        return c;
    }
    void *impl = NULL;
    if (b->impl) {
        if (!b->kind->copy_impl) {
            tk_set_error("block '%s': kind '%s' cannot be copied", b->name, b->kind->name);
            return NULL;
        }
        if (!(impl = b->kind->copy_impl(b->impl))) {
            tk_set_error("block '%s': out of memory copying it", b->name);
            return NULL;
        }
    }
    c = tk_block_new(b->kind, b->name, impl);
    if (!c) return NULL;
    c->aggregation = b->aggregation;
    if (b->meta && tk_block_set_meta(c, b->meta) != TK_OK) {
        tk_block_release(c);
        return NULL;
    }
    c->built = __atomic_load_n(&b->built, __ATOMIC_ACQUIRE);
    priv(c)->seed = m->fresh ? tk_seed_mix(m->seed, m->counter++) : priv(b)->seed;
    if (!map_put(m, b, c)) {
        tk_set_error("out of memory");
        tk_block_release(c);
        return NULL;
    }
    for (int32_t i = 0; i < b->nparams; i++)
        if (copy_param(m, c, b, i) != TK_OK) goto fail;
    for (int32_t i = 0; i < b->nchildren; i++) {
        tk_block *child = copy_rec(m, b->children[i]);
        if (!child) goto fail;
        tk_status st = tk_block_add_child(c, b->child_names[i], child);
        tk_block_release(child);
        if (st != TK_OK) goto fail;
    }
    if (copy_hook(m, c, b->pre, false) != TK_OK || copy_hook(m, c, b->post, true) != TK_OK) goto fail;
    return c;
fail: /* the whole copy is abandoned: the map's pointers to c are never read again */
    tk_block_release(c);
    return NULL;
}

static tk_block *copy_graph(const tk_block *b, bool fresh, uint64_t seed) {
    if (!b) {
        tk_set_error("block copy: block is NULL");
        return NULL;
    }
    copy_map m = { 0 };
    m.fresh = fresh;
    m.seed = seed;
    tk_block *c = copy_rec(&m, b);
    free(m.from);
    free(m.to);
    return c;
}

tk_block *tk_block_copy(const tk_block *b, uint64_t seed) { return copy_graph(b, true, seed); }
tk_block *tk_block_clone(const tk_block *b) { return copy_graph(b, false, 0); }
