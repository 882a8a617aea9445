/* Serving: a two-tower checkpoint loaded once and shared read-only by every thread
 * (tk_model), a pure C query path (features -> query embedding -> exact top-k), and a
 * slot that swaps the current model while requests run. See towerkit.h. */
#include "internal.h"

#include <cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>

struct tk_model {
    int32_t refcount; /* atomic */
    char *dir;
    tk_block *block, *query, *item;
    char *schema;        /* schema.json text or NULL */
    tk_tensor *item_ids; /* I64 [N] */
    tk_tensor *items;    /* F32 [N, D] */
    int64_t dim;
    int32_t nfeatures;
    tk_feature_info *features;
    int32_t nknown; /* feature names of the schema (any tower) */
    char **known;
    char *item_id_name; /* the schema's item id column, or NULL */
    int64_t *id_rows;   /* (item id, row) pairs sorted by id: exclusions by id */
};

/* ------------------------------------------------------------------------------------ */
/* Reference counting and accessors                                                      */
/* ------------------------------------------------------------------------------------ */

static void model_free(tk_model *m) {
    if (!m) return;
    free(m->dir);
    tk_block_release(m->block);
    free(m->schema);
    tk_tensor_release(m->item_ids);
    tk_tensor_release(m->items);
    for (int32_t i = 0; i < m->nfeatures; i++) free((char *)m->features[i].name);
    free(m->features);
    for (int32_t i = 0; i < m->nknown; i++) free(m->known[i]);
    free(m->known);
    free(m->item_id_name);
    free(m->id_rows);
    free(m);
}

void tk_model_retain(tk_model *m) {
    if (m) __atomic_add_fetch(&m->refcount, 1, __ATOMIC_RELAXED);
}

void tk_model_release(tk_model *m) {
    if (!m) return;
    if (__atomic_sub_fetch(&m->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    model_free(m);
}

const char *tk_model_dir(const tk_model *m) { return m ? m->dir : NULL; }
tk_block *tk_model_block(const tk_model *m) { return m ? m->block : NULL; }
tk_block *tk_model_query_block(const tk_model *m) { return m ? m->query : NULL; }
tk_block *tk_model_item_block(const tk_model *m) { return m ? m->item : NULL; }
const char *tk_model_schema_json(const tk_model *m) { return m ? m->schema : NULL; }
const tk_tensor *tk_model_item_ids(const tk_model *m) { return m ? m->item_ids : NULL; }
const tk_tensor *tk_model_item_embeddings(const tk_model *m) { return m ? m->items : NULL; }
int64_t tk_model_num_items(const tk_model *m) { return m && m->items ? m->items->shape[0] : 0; }
int64_t tk_model_dim(const tk_model *m) { return m ? m->dim : 0; }
int32_t tk_model_num_features(const tk_model *m) { return m ? m->nfeatures : 0; }

const tk_feature_info *tk_model_feature(const tk_model *m, int32_t i) {
    if (!m || i < 0 || i >= m->nfeatures) return NULL;
    return &m->features[i];
}

/* ------------------------------------------------------------------------------------ */
/* Queries                                                                               */
/* ------------------------------------------------------------------------------------ */

/* An arena copy of n elements of src, as a 1-D tensor of ctx for feature `name`. */
static tk_tensor *copy_1d(tk_ctx *ctx, const char *name, tk_dtype dtype, int64_t n, const void *src) {
    if (!ctx) return NULL;
    if (!name || n < 0 || (n > 0 && !src))
        return tk_ctx_fail(ctx, "query: bad arguments for feature '%s'", name ? name : "?");
    int64_t shape[1] = { n };
    tk_tensor *t = tk_ctx_empty(ctx, dtype, 1, shape);
    if (t && n) memcpy(t->data, src, (size_t)n * tk_dtype_size(dtype));
    return t;
}

tk_status tk_query_set_ids(tk_ctx *ctx, tk_value *q, const char *name, int64_t rows, const int64_t *ids) {
    tk_tensor *t = copy_1d(ctx, name, TK_I64, rows, ids);
    return t ? tk_value_set(ctx, q, name, t) : TK_ERROR;
}

tk_status tk_query_set_floats(tk_ctx *ctx, tk_value *q, const char *name, int64_t rows, const float *values) {
    tk_tensor *t = copy_1d(ctx, name, TK_F32, rows, values);
    return t ? tk_value_set(ctx, q, name, t) : TK_ERROR;
}

tk_status tk_query_set_list(tk_ctx *ctx, tk_value *q, const char *name, int64_t rows, const int64_t *offsets,
                            const int64_t *ids) {
    if (!ctx || rows < 0 || !offsets) {
        if (ctx) tk_ctx_fail(ctx, "query: bad arguments for list feature '%s'", name ? name : "?");
        return TK_ERROR;
    }
    tk_tensor *o = copy_1d(ctx, name, TK_I64, rows + 1, offsets);
    /* a bad last offset copies no ids: tk_value_set_ragged names the offsets */
    tk_tensor *v = o ? copy_1d(ctx, name, TK_I64, offsets[rows] > 0 ? offsets[rows] : 0, ids) : NULL;
    return v ? tk_value_set_ragged(ctx, q, name, v, o) : TK_ERROR;
}

static const tk_feature_info *find_feature(const tk_model *m, const char *name, size_t len) {
    for (int32_t i = 0; i < m->nfeatures; i++)
        if (strlen(m->features[i].name) == len && strncmp(m->features[i].name, name, len) == 0) return &m->features[i];
    return NULL;
}

static bool is_known(const tk_model *m, const char *name, size_t len) {
    for (int32_t i = 0; i < m->nknown; i++)
        if (strlen(m->known[i]) == len && strncmp(m->known[i], name, len) == 0) return true;
    return false;
}

static void feature_list(const tk_model *m, char *buf, size_t len) {
    size_t used = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < m->nfeatures && used + 1 < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", m->features[i].name);
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* Rows of a one-dimensional (or [B, 1]) tensor; -1 if it has another shape. */
static int64_t column_rows(const tk_tensor *t) {
    if (t->ndim == 1) return t->shape[0];
    if (t->ndim == 2 && t->shape[1] == 1) return t->shape[0];
    return -1;
}

tk_status tk_model_check_query(const tk_model *m, tk_ctx *ctx, const tk_value *v) {
    if (!ctx) return TK_ERROR;
    if (tk_ctx_failed(ctx)) return TK_ERROR;
    if (!m) {
        tk_ctx_fail(ctx, "query: no model");
        return TK_ERROR;
    }
    if (!tk_value_is_tabular(v)) {
        tk_ctx_fail(ctx, "query: the features must be a table of named tensors");
        return TK_ERROR;
    }
    if (m->nfeatures == 0) return TK_OK; /* a hand-built tower: its forward pass checks */
    char names[512];
    for (int32_t i = 0; i < v->n; i++) {
        const char *name = v->names[i];
        size_t len;
        tk_ragged_name_split(name, &len);
        if (find_feature(m, name, len) || is_known(m, name, len)) continue;
        feature_list(m, names, sizeof names);
        tk_ctx_fail(ctx, "unknown feature '%s' (the query tower reads: %s)", name, names);
        return TK_ERROR;
    }
    int64_t B = -1;
    const char *first = NULL;
    for (int32_t i = 0; i < m->nfeatures; i++) {
        const tk_feature_info *f = &m->features[i];
        tk_tensor *x = tk_value_get(v, f->name);
        char s[64];
        int64_t rows;
        if (f->kind == TK_FEATURE_CONTINUOUS) {
            if (!x) {
                tk_ctx_fail(ctx, "missing feature '%s' (a number per row)", f->name);
                return TK_ERROR;
            }
            rows = column_rows(x);
            if (x->dtype != TK_F32 || rows < 0) {
                tk_ctx_fail(ctx, "feature '%s': expected float32 [B] or [B, 1], got %s %s", f->name,
                            tk_dtype_name(x->dtype), tk_shape_str(x, s, sizeof s));
                return TK_ERROR;
            }
            const float *d = tk_f32(x);
            for (int64_t r = 0; r < rows; r++)
                if (!isfinite(d[r])) {
                    tk_ctx_fail(ctx, "feature '%s': the value at row %lld is not a finite number", f->name,
                                (long long)r);
                    return TK_ERROR;
                }
        } else if (x) {
            rows = column_rows(x);
            if (x->dtype != TK_I64 || rows < 0) {
                tk_ctx_fail(ctx, "feature '%s': expected int64 ids [B] or [B, 1], got %s %s", f->name,
                            tk_dtype_name(x->dtype), tk_shape_str(x, s, sizeof s));
                return TK_ERROR;
            }
            const int64_t *d = tk_i64(x);
            for (int64_t r = 0; r < rows; r++)
                if (d[r] < 0 || d[r] >= f->cardinality) {
                    tk_ctx_fail(ctx, "feature '%s': id %lld at row %lld is out of range [0, %lld)", f->name,
                                (long long)d[r], (long long)r, (long long)f->cardinality);
                    return TK_ERROR;
                }
        } else {
            tk_tensor *vals, *offs;
            if (!tk_value_get_ragged(v, f->name, &vals, &offs)) {
                if (!vals && !offs)
                    tk_ctx_fail(ctx, "missing feature '%s' (%s)", f->name,
                                f->is_list ? "a list of ids per row" : "an id per row");
                else
                    tk_ctx_fail(ctx, "feature '%s': list %s without %s", f->name, vals ? "values" : "offsets",
                                vals ? "offsets" : "values");
                return TK_ERROR;
            }
            char what[256];
            snprintf(what, sizeof what, "feature '%s'", f->name);
            if (tk_ragged_check(what, vals, offs) != TK_OK) {
                tk_ctx_fail(ctx, "%s", tk_last_error());
                return TK_ERROR;
            }
            if (vals->dtype != TK_I64) {
                tk_ctx_fail(ctx, "feature '%s': expected int64 ids in the list, got %s", f->name,
                            tk_dtype_name(vals->dtype));
                return TK_ERROR;
            }
            rows = offs->shape[0] - 1;
            const int64_t *o = tk_i64(offs), *d = tk_i64(vals);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t p = o[r]; p < o[r + 1]; p++)
                    if (d[p] < 0 || d[p] >= f->cardinality) {
                        tk_ctx_fail(ctx, "feature '%s': id %lld at row %lld is out of range [0, %lld)", f->name,
                                    (long long)d[p], (long long)r, (long long)f->cardinality);
                        return TK_ERROR;
                    }
        }
        if (B < 0) {
            B = rows;
            first = f->name;
        } else if (rows != B) {
            tk_ctx_fail(ctx, "feature '%s' has %lld rows but '%s' has %lld", f->name, (long long)rows, first,
                        (long long)B);
            return TK_ERROR;
        }
    }
    if (B == 0) {
        tk_ctx_fail(ctx, "query: no rows");
        return TK_ERROR;
    }
    return TK_OK;
}

/* Forward of a tower and the post block in evaluation mode without gradients. */
static tk_tensor *tower_forward(tk_ctx *ctx, const tk_model *m, tk_block *tower, tk_value *in) {
    bool training = tk_ctx_training(ctx), grad = tk_ctx_grad_enabled(ctx);
    tk_ctx_set_training(ctx, false);
    tk_ctx_set_grad_enabled(ctx, false);
    tk_value *out = tk_block_forward(ctx, tower, in);
    if (out && m->block->post) out = tk_block_forward(ctx, m->block->post, out);
    tk_ctx_set_training(ctx, training);
    tk_ctx_set_grad_enabled(ctx, grad);
    if (!out) return NULL;
    tk_tensor *t = tk_value_tensor(out);
    if (!t || t->dtype != TK_F32 || t->ndim != 2)
        return tk_ctx_fail(ctx, "model: the %s tower must return a float32 [B, D] tensor",
                           tower == m->query ? "query" : "item");
    return t;
}

tk_tensor *tk_model_encode(tk_model *m, tk_ctx *ctx, tk_value *features) {
    if (tk_model_check_query(m, ctx, features) != TK_OK) return NULL;
    tk_tensor *q = tower_forward(ctx, m, m->query, features);
    if (q && m->dim && q->shape[1] != m->dim)
        return tk_ctx_fail(ctx, "model: the query embedding has %lld dimensions, the items %lld",
                           (long long)q->shape[1], (long long)m->dim);
    return q;
}

/* The exclusion lists of item ids as lists of catalogue rows (tk_topk's kind), arena
 * tensors of ctx. An id the catalogue does not hold has nothing to exclude: skipped. */
static tk_status exclusion_rows(const tk_model *m, tk_ctx *ctx, int64_t B, const int64_t *offs, const int64_t *ids,
                                tk_tensor **offs_out, tk_tensor **rows_out) {
    if (offs[0] != 0) {
        tk_ctx_fail(ctx, "recommend: exclusion offsets must start at 0, got %lld", (long long)offs[0]);
        return TK_ERROR;
    }
    for (int64_t r = 0; r < B; r++)
        if (offs[r + 1] < offs[r]) {
            tk_ctx_fail(ctx, "recommend: exclusion offsets must not decrease (row %lld)", (long long)r);
            return TK_ERROR;
        }
    if (offs[B] > 0 && !ids) {
        tk_ctx_fail(ctx, "recommend: exclusion offsets without items");
        return TK_ERROR;
    }
    int64_t n = tk_model_num_items(m), total = 0;
    for (int64_t p = 0; p < offs[B]; p++) /* duplicated ids in the catalogue: every row */
        for (int64_t i = tk_pairs_lower_bound(m->id_rows, n, ids[p]); i < n && m->id_rows[2 * i] == ids[p]; i++)
            total++;
    int64_t so[1] = { B + 1 }, sr[1] = { total };
    tk_tensor *o = tk_ctx_empty(ctx, TK_I64, 1, so), *rows = tk_ctx_empty(ctx, TK_I64, 1, sr);
    if (!o || !rows) return TK_ERROR;
    int64_t *od = tk_i64(o), *rd = tk_i64(rows), used = 0;
    od[0] = 0;
    for (int64_t r = 0; r < B; r++) {
        for (int64_t p = offs[r]; p < offs[r + 1]; p++)
            for (int64_t i = tk_pairs_lower_bound(m->id_rows, n, ids[p]); i < n && m->id_rows[2 * i] == ids[p]; i++)
                rd[used++] = m->id_rows[2 * i + 1];
        od[r + 1] = used;
    }
    *offs_out = o;
    *rows_out = rows;
    return TK_OK;
}

tk_status tk_model_recommend_excluding(tk_model *m, tk_ctx *ctx, tk_value *features, int64_t k,
                                       const int64_t *excl_offsets, const int64_t *excl_items, tk_tensor **ids_out,
                                       tk_tensor **scores_out) {
    if (ids_out) *ids_out = NULL;
    if (scores_out) *scores_out = NULL;
    if (!ctx) return TK_ERROR;
    if (!ids_out || !scores_out) {
        tk_ctx_fail(ctx, "recommend: ids_out and scores_out are required");
        return TK_ERROR;
    }
    if (k < 1) {
        tk_ctx_fail(ctx, "recommend: k must be at least 1, got %lld", (long long)k);
        return TK_ERROR;
    }
    tk_tensor *q = tk_model_encode(m, ctx, features);
    if (!q) return TK_ERROR;
    tk_tensor *eo = NULL, *er = NULL;
    if (excl_offsets && exclusion_rows(m, ctx, q->shape[0], excl_offsets, excl_items, &eo, &er) != TK_OK)
        return TK_ERROR;
    int64_t shape[2] = { q->shape[0], k };
    tk_tensor *idx = tk_ctx_empty(ctx, TK_I64, 2, shape);
    tk_tensor *scores = tk_ctx_empty(ctx, TK_F32, 2, shape);
    if (!idx || !scores) return TK_ERROR;
    if (tk_topk(q, m->items, k, eo ? tk_i64(eo) : NULL, er ? tk_i64(er) : NULL, idx, scores) != TK_OK) {
        tk_ctx_fail(ctx, "recommend: %s", tk_last_error());
        return TK_ERROR;
    }
    int64_t *d = tk_i64(idx);
    const int64_t *ids = tk_i64(m->item_ids);
    for (int64_t i = 0; i < idx->numel; i++) d[i] = d[i] >= 0 ? ids[d[i]] : -1;
    *ids_out = idx;
    *scores_out = scores;
    return TK_OK;
}

tk_status tk_model_recommend(tk_model *m, tk_ctx *ctx, tk_value *features, int64_t k, tk_tensor **ids_out,
                             tk_tensor **scores_out) {
    return tk_model_recommend_excluding(m, ctx, features, k, NULL, NULL, ids_out, scores_out);
}

/* ------------------------------------------------------------------------------------ */
/* Loading                                                                               */
/* ------------------------------------------------------------------------------------ */

static bool has_tag(const cJSON *tags, const char *tag) {
    const cJSON *t;
    cJSON_ArrayForEach(t, tags) if (cJSON_IsString(t) && strcmp(t->valuestring, tag) == 0) return true;
    return false;
}

/* Feature names, list flags and the item id column of schema.json. */
static tk_status read_schema(tk_model *m) {
    if (!m->schema) return TK_OK;
    cJSON *root = cJSON_Parse(m->schema);
    const cJSON *feats = root ? cJSON_GetObjectItemCaseSensitive(root, "feature") : NULL;
    if (!cJSON_IsArray(feats)) {
        cJSON_Delete(root);
        tk_set_error("model '%s': schema.json has no \"feature\" array", m->dir);
        return TK_ERROR;
    }
    int n = cJSON_GetArraySize(feats);
    m->known = calloc((size_t)(n ? n : 1), sizeof *m->known);
    if (!m->known) {
        cJSON_Delete(root);
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    const cJSON *f;
    cJSON_ArrayForEach(f, feats) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (!cJSON_IsString(name)) continue;
        if (!(m->known[m->nknown] = tk_strdup(name->valuestring))) break;
        m->nknown++;
        const cJSON *ann = cJSON_GetObjectItemCaseSensitive(f, "annotation");
        const cJSON *tags = ann ? cJSON_GetObjectItemCaseSensitive(ann, "tag") : NULL;
        if (!m->item_id_name && (has_tag(tags, "item_id") || (has_tag(tags, "item") && has_tag(tags, "id"))))
            m->item_id_name = tk_strdup(name->valuestring);
        bool list = has_tag(tags, "list") || cJSON_GetObjectItemCaseSensitive(f, "valueCount") != NULL;
        for (int32_t i = 0; i < m->nfeatures; i++)
            if (strcmp(m->features[i].name, name->valuestring) == 0) m->features[i].is_list = list;
    }
    cJSON_Delete(root);
    return TK_OK;
}

static tk_status add_feature(tk_model *m, const char *name, tk_feature_kind kind, int64_t card) {
    if (find_feature(m, name, strlen(name))) return TK_OK;
    tk_feature_info *nf = realloc(m->features, (size_t)(m->nfeatures + 1) * sizeof *nf);
    if (!nf) return TK_ERROR;
    m->features = nf;
    char *n = tk_strdup(name);
    if (!n) return TK_ERROR;
    nf[m->nfeatures].name = n;
    nf[m->nfeatures].kind = kind;
    nf[m->nfeatures].cardinality = card;
    nf[m->nfeatures].is_list = false;
    m->nfeatures++;
    return TK_OK;
}

/* The features of every embeddings block under b, from their configs. */
static tk_status collect_features(tk_model *m, const tk_block *b) {
    if (strcmp(b->kind->name, "embeddings") == 0) {
        char *json = tk_block_config_json(b);
        cJSON *c = json ? cJSON_Parse(json) : NULL;
        free(json);
        if (!c) {
            tk_set_error("model '%s': cannot read the config of block '%s'", m->dir, b->name);
            return TK_ERROR;
        }
        const cJSON *tables = cJSON_GetObjectItemCaseSensitive(c, "tables");
        const cJSON *feats = cJSON_GetObjectItemCaseSensitive(c, "features");
        const cJSON *cont = cJSON_GetObjectItemCaseSensitive(c, "continuous");
        const cJSON *f, *t;
        tk_status st = TK_OK;
        cJSON_ArrayForEach(f, feats) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
            const cJSON *table = cJSON_GetObjectItemCaseSensitive(f, "table");
            int64_t card = -1;
            cJSON_ArrayForEach(t, tables) {
                const cJSON *tn = cJSON_GetObjectItemCaseSensitive(t, "name");
                const cJSON *tc = cJSON_GetObjectItemCaseSensitive(t, "cardinality");
                if (cJSON_IsString(tn) && cJSON_IsString(table) && strcmp(tn->valuestring, table->valuestring) == 0 &&
                    cJSON_IsNumber(tc))
                    card = (int64_t)tc->valuedouble;
            }
            if (!cJSON_IsString(name) || card < 1) {
                st = TK_ERROR;
                break;
            }
            if (add_feature(m, name->valuestring, TK_FEATURE_CATEGORICAL, card) != TK_OK) st = TK_ERROR;
        }
        cJSON_ArrayForEach(f, cont) {
            if (cJSON_IsString(f) && add_feature(m, f->valuestring, TK_FEATURE_CONTINUOUS, 0) != TK_OK) st = TK_ERROR;
        }
        cJSON_Delete(c);
        if (st != TK_OK) tk_set_error("model '%s': cannot read the features of block '%s'", m->dir, b->name);
        return st;
    }
    for (int32_t i = 0; i < b->nchildren; i++)
        if (collect_features(m, b->children[i]) != TK_OK) return TK_ERROR;
    if (b->pre && collect_features(m, b->pre) != TK_OK) return TK_ERROR;
    return TK_OK;
}

/* A one-row query of zeros: learns the embedding width and proves the tower runs. */
static int64_t probe_dim(tk_model *m, tk_ctx *ctx) {
    tk_value *q = tk_value_table(ctx);
    if (!q) return -1;
    int64_t zero = 0, offs[2] = { 0, 1 };
    float fz = 0;
    for (int32_t i = 0; i < m->nfeatures; i++) {
        const tk_feature_info *f = &m->features[i];
        tk_status st = f->kind == TK_FEATURE_CONTINUOUS ? tk_query_set_floats(ctx, q, f->name, 1, &fz)
                       : f->is_list                     ? tk_query_set_list(ctx, q, f->name, 1, offs, &zero)
                                                        : tk_query_set_ids(ctx, q, f->name, 1, &zero);
        if (st != TK_OK) return -1;
    }
    tk_tensor *out = tk_model_encode(m, ctx, q);
    return out ? out->shape[1] : -1;
}

static tk_status items_from_file(tk_model *m, const char *path) {
    tk_safetensors *st = tk_safetensors_read(path);
    if (!st) {
        char msg[TK_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", tk_last_error());
        tk_set_error("model '%s': item embeddings: %s", m->dir, msg);
        return TK_ERROR;
    }
    tk_tensor *ids = NULL, *emb = NULL;
    for (int32_t i = 0; i < st->n; i++) {
        if (strcmp(st->names[i], "ids") == 0) ids = st->tensors[i];
        if (strcmp(st->names[i], "embeddings") == 0) emb = st->tensors[i];
    }
    tk_status rc = TK_ERROR;
    float bad = 0;
    int64_t bad_row = -1;
    if (!ids || !emb) {
        tk_set_error("model '%s': %s must hold tensors \"ids\" and \"embeddings\"", m->dir, path);
    } else if (emb->dtype != TK_F32 || emb->ndim != 2 || emb->shape[0] < 1 || emb->shape[1] < 1) {
        tk_set_error("model '%s': %s: \"embeddings\" must be float32 [N, D] with N, D >= 1", m->dir, path);
    } else if ((bad_row = tk_first_nonfinite_row(emb, &bad)) >= 0) {
        tk_set_error("model '%s': %s: tensor \"embeddings\" holds a non-finite value (%g) in row %lld", m->dir, path,
                     (double)bad, (long long)bad_row);
    } else if (ids->dtype != TK_I64 || column_rows(ids) != emb->shape[0]) {
        tk_set_error("model '%s': %s: \"ids\" must be int64 [N] with N = %lld (the embeddings' rows)", m->dir, path,
                     (long long)emb->shape[0]);
    } else {
        m->items = emb;
        m->item_ids = tk_tensor_new_1d(TK_I64, ids->numel);
        if (m->item_ids) {
            memcpy(m->item_ids->data, ids->data, (size_t)ids->numel * sizeof(int64_t));
            tk_tensor_retain(emb);
            rc = TK_OK;
        } else {
            m->items = NULL;
        }
    }
    tk_safetensors_free(st);
    return rc;
}

static int cmp_pair(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* A heap tensor handed to ctx, which keeps it until its next reset (NULL: ctx fails
 * with the data kernel's message). */
static tk_tensor *keep_in(tk_ctx *ctx, tk_tensor *t) {
    if (!t) return tk_ctx_fail(ctx, "%s", tk_last_error());
    tk_status st = tk_ctx_keep(ctx, t);
    tk_tensor_release(t);
    return st == TK_OK ? t : NULL;
}

/* The rows rows[0..n) of every column as a tabular value of ctx. */
static tk_value *gather_columns(tk_ctx *ctx, const tk_columns *c, int64_t n, const int64_t *rows) {
    tk_value *v = tk_value_table(ctx);
    if (!v) return NULL;
    for (int32_t j = 0; j < c->ncols; j++) {
        if (c->types[j] == TK_COL_INT64_LIST) {
            tk_tensor *vals, *offs;
            tk_ragged_select(c->values[j], c->offsets[j], n, rows, &vals, &offs);
            vals = keep_in(ctx, vals); /* both, so neither can leak */
            offs = keep_in(ctx, offs);
            if (!vals || !offs || tk_value_set_ragged(ctx, v, c->names[j], vals, offs) != TK_OK) return NULL;
        } else {
            tk_tensor *t = keep_in(ctx, tk_index_select(c->values[j], n, rows));
            if (!t || tk_value_set(ctx, v, c->names[j], t) != TK_OK) return NULL;
        }
    }
    return v;
}

static tk_status items_from_columns(tk_model *m, tk_ctx *ctx, const tk_columns *c, int64_t bs) {
    if (!m->item_id_name) {
        tk_set_error("model '%s': the schema has no item id column (tags item and id)", m->dir);
        return TK_ERROR;
    }
    int32_t idcol = -1;
    for (int32_t j = 0; j < c->ncols; j++)
        if (strcmp(c->names[j], m->item_id_name) == 0) idcol = j;
    if (idcol < 0 || c->types[idcol] != TK_COL_INT64) {
        tk_set_error("model '%s': the item columns have no int64 column '%s'", m->dir, m->item_id_name);
        return TK_ERROR;
    }
    if (c->nrows < 1) {
        tk_set_error("model '%s': the item catalogue has no rows", m->dir);
        return TK_ERROR;
    }
    /* distinct ids, first occurrence, in row order */
    int64_t n = c->nrows, nu = 0;
    int64_t *pairs = malloc((size_t)n * 2 * sizeof *pairs);
    int64_t *rows = malloc((size_t)n * sizeof *rows);
    tk_status rc = TK_ERROR;
    if (!pairs || !rows) {
        tk_set_error("out of memory");
        goto done;
    }
    const int64_t *ids = tk_i64(c->values[idcol]);
    for (int64_t i = 0; i < n; i++) {
        pairs[2 * i] = ids[i];
        pairs[2 * i + 1] = i;
    }
    qsort(pairs, (size_t)n, 2 * sizeof *pairs, cmp_pair);
    for (int64_t i = 0; i < n; i++)
        if (i == 0 || pairs[2 * i] != pairs[2 * i - 2]) rows[nu++] = pairs[2 * i + 1];
    qsort(rows, (size_t)nu, sizeof *rows, cmp_i64);
    m->item_ids = tk_tensor_new_1d(TK_I64, nu);
    if (!m->item_ids) goto done;
    for (int64_t i = 0; i < nu; i++) tk_i64(m->item_ids)[i] = ids[rows[i]];
    for (int64_t r0 = 0; r0 < nu; r0 += bs) {
        int64_t nb = nu - r0 < bs ? nu - r0 : bs;
        tk_ctx_reset(ctx);
        tk_value *v = gather_columns(ctx, c, nb, rows + r0);
        tk_tensor *e = v ? tower_forward(ctx, m, m->item, v) : NULL;
        if (!e) {
            tk_set_error("model '%s': item tower: %s", m->dir, tk_ctx_error(ctx));
            goto done;
        }
        if (!m->items) {
            m->items = tk_tensor_new_2d(TK_F32, nu, e->shape[1]);
            if (!m->items) goto done;
        }
        if (e->shape[0] != nb || e->shape[1] != m->items->shape[1]) {
            tk_set_error("model '%s': item tower returned an unexpected shape", m->dir);
            goto done;
        }
        memcpy(tk_f32(m->items) + r0 * e->shape[1], e->data, (size_t)e->numel * sizeof(float));
    }
    rc = TK_OK;
done:
    free(pairs);
    free(rows);
    return rc;
}

tk_model *tk_model_load(const char *dir, const tk_model_options *opts) {
    if (!dir || !dir[0]) {
        tk_set_error("model_load: a checkpoint directory is required");
        return NULL;
    }
    tk_model_options o = { 0 };
    if (opts) o = *opts;
    int64_t bs = o.batch_size > 0 ? o.batch_size : 4096;
    tk_model *m = calloc(1, sizeof *m);
    tk_ctx *ctx = NULL;
    if (!m || !(m->dir = tk_strdup(dir))) {
        free(m);
        tk_set_error("out of memory");
        return NULL;
    }
    m->refcount = 1;
    const char *fname = "schema.json";
    char *schema = NULL;
    m->block = tk_checkpoint_read(dir, 1, &fname, &schema);
    m->schema = schema;
    if (!m->block) goto fail; /* tk_checkpoint_read's message names the directory */
    const tk_block *b = m->block;
    if (strcmp(b->kind->name, "parallel") == 0) {
        for (int32_t i = 0; i < b->nchildren; i++) {
            const char *cn = b->child_names[i] ? b->child_names[i] : b->children[i]->name;
            if (strcmp(cn, "query") == 0) m->query = b->children[i];
            if (strcmp(cn, "item") == 0) m->item = b->children[i];
        }
    }
    if (!m->query || !m->item) {
        tk_set_error("model '%s': the checkpoint is not a two-tower block (a parallel block with \"query\" and "
                     "\"item\" branches)",
                     dir);
        goto fail;
    }
    if (collect_features(m, m->query) != TK_OK || read_schema(m) != TK_OK) goto fail;
    ctx = tk_ctx_new(0);
    if (!ctx) goto fail;
    if (o.items) {
        if (items_from_columns(m, ctx, o.items, bs) != TK_OK) goto fail;
    } else {
        char path[4096];
        const char *p = o.items_path;
        if (!p) {
            if ((size_t)snprintf(path, sizeof path, "%s/item_embeddings.safetensors", dir) >= sizeof path) {
                tk_set_error("model '%s': path too long", dir);
                goto fail;
            }
            p = path;
        }
        if (items_from_file(m, p) != TK_OK) goto fail;
    }
    if (m->nfeatures > 0) {
        tk_ctx_reset(ctx);
        int64_t d = probe_dim(m, ctx);
        if (d < 0) {
            tk_set_error("model '%s': the query tower fails on a query of zeros: %s", dir, tk_ctx_error(ctx));
            goto fail;
        }
        if (d != m->items->shape[1]) {
            tk_set_error("model '%s': the query tower returns %lld dimensions but the item embeddings have %lld", dir,
                         (long long)d, (long long)m->items->shape[1]);
            goto fail;
        }
    }
    m->dim = m->items->shape[1];
    /* (id, row) sorted by id: tk_model_recommend_excluding finds the rows of an id */
    int64_t n = m->items->shape[0];
    if (!(m->id_rows = malloc((size_t)n * 2 * sizeof *m->id_rows))) {
        tk_set_error("out of memory");
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) {
        m->id_rows[2 * i] = tk_i64(m->item_ids)[i];
        m->id_rows[2 * i + 1] = i;
    }
    qsort(m->id_rows, (size_t)n, 2 * sizeof *m->id_rows, cmp_pair);
    tk_ctx_free(ctx);
    return m;
fail:
    tk_ctx_free(ctx);
    model_free(m);
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* The slot: the current model, swapped while requests run                               */
/* ------------------------------------------------------------------------------------ */

/* A mutex guards the pointer only for the instant of "read it and retain it" (and of a
 * swap), so a request can never retain a model whose last reference a swap is dropping.
 * Loading happens outside it, under a second lock that serialises reloads. */
struct tk_model_slot {
    int32_t refcount;
    pthread_mutex_t lock;
    pthread_mutex_t reload_lock;
    tk_model *current;
    uint64_t version;
};

tk_model_slot *tk_model_slot_new(tk_model *m) {
    if (!m) {
        tk_set_error("model_slot_new: a model is required");
        return NULL;
    }
    tk_model_slot *s = calloc(1, sizeof *s);
    if (!s) {
        tk_set_error("out of memory");
        return NULL;
    }
    s->refcount = 1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->reload_lock, NULL);
    tk_model_retain(m);
    s->current = m;
    s->version = 1;
    return s;
}

void tk_model_slot_retain(tk_model_slot *s) {
    if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void tk_model_slot_release(tk_model_slot *s) {
    if (!s) return;
    if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    tk_model_release(s->current);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->reload_lock);
    free(s);
}

tk_model *tk_model_slot_get(tk_model_slot *s) { return tk_model_slot_get_versioned(s, NULL); }

tk_model *tk_model_slot_get_versioned(tk_model_slot *s, uint64_t *version) {
    if (!s) {
        if (version) *version = 0;
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    tk_model *m = s->current;
    tk_model_retain(m);
    if (version) *version = s->version;
    pthread_mutex_unlock(&s->lock);
    return m;
}

uint64_t tk_model_slot_set(tk_model_slot *s, tk_model *m) {
    if (!s || !m) return 0;
    tk_model_retain(m);
    pthread_mutex_lock(&s->lock);
    tk_model *old = s->current;
    s->current = m;
    uint64_t v = ++s->version;
    pthread_mutex_unlock(&s->lock);
    tk_model_release(old); /* freed here or by the last request that still holds it */
    return v;
}

tk_status tk_model_slot_reload(tk_model_slot *s, const char *dir, const tk_model_options *opts) {
    if (!s) {
        tk_set_error("model_slot_reload: no slot");
        return TK_ERROR;
    }
    pthread_mutex_lock(&s->reload_lock);
    tk_model *m = tk_model_load(dir, opts);
    if (m) {
        tk_model_slot_set(s, m);
        tk_model_release(m);
    }
    pthread_mutex_unlock(&s->reload_lock);
    return m ? TK_OK : TK_ERROR;
}

uint64_t tk_model_slot_version(tk_model_slot *s) {
    if (!s) return 0;
    pthread_mutex_lock(&s->lock);
    uint64_t v = s->version;
    pthread_mutex_unlock(&s->lock);
    return v;
}
