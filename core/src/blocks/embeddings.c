/* Embedding tables for categorical features (Merlin's EmbeddingFeatures).
 *
 * Each feature reads one table; features configured with the same table name share it.
 * Input: a tabular value with, for each configured feature f, either "f" (one-hot, I64
 * [B] or [B, 1]) or ragged feature f (multi-hot, tk_value_get_ragged, combined with the
 * feature's combiner). Output: {f: [B, dim]} in configuration order. Parameters are the
 * tables [cardinality, dim], named by table name, in order of first use.
 * Continuous features added with tk_embeddings_add_continuous pass through as [B, 1]
 * (from F32 [B] or [B, 1]; [B, k] stays), so one block is a whole input layer. */
#include "block_impl.h"

#include <stdio.h>

typedef struct emb_table {
    char *name;
    int64_t cardinality, dim;
    tk_init init;
    tk_table_fetch fetch; /* fn NULL: the parameter is the whole table */
} emb_table;

typedef struct emb_feature {
    char *name;
    int32_t table; /* index in tables and in the block's params */
    tk_combiner combiner;
} emb_feature;

typedef struct emb_impl {
    emb_feature *features;
    int32_t nfeatures, cap_features;
    char **continuous;
    int32_t ncontinuous, cap_continuous;
    emb_table *tables;
    int32_t ntables, cap_tables;
    float l2;
    int32_t part, parts; /* parts > 1: the tables added hold rows of part `part` only */
} emb_impl;

static void emb_free(void *impl) {
    emb_impl *e = impl;
    for (int32_t i = 0; i < e->nfeatures; i++) free(e->features[i].name);
    for (int32_t i = 0; i < e->ntables; i++) free(e->tables[i].name);
    for (int32_t i = 0; i < e->ncontinuous; i++) free(e->continuous[i]);
    free(e->continuous);
    free(e->features);
    free(e->tables);
    free(e);
}

static void *emb_copy_impl(const void *impl) {
    const emb_impl *e = impl;
    emb_impl *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->l2 = e->l2;
    c->part = e->part; /* a part's copy holds the same rows */
    c->parts = e->parts;
    c->features = calloc((size_t)(e->nfeatures ? e->nfeatures : 1), sizeof *c->features);
    c->tables = calloc((size_t)(e->ntables ? e->ntables : 1), sizeof *c->tables);
    if (!c->features || !c->tables) goto fail;
    c->cap_features = e->nfeatures;
    c->cap_tables = e->ntables;
    for (; c->nfeatures < e->nfeatures; c->nfeatures++) {
        c->features[c->nfeatures] = e->features[c->nfeatures];
        if (!(c->features[c->nfeatures].name = tk_strdup(e->features[c->nfeatures].name))) goto fail;
    }
    for (; c->ntables < e->ntables; c->ntables++) {
        c->tables[c->ntables] = e->tables[c->ntables];
        c->tables[c->ntables].fetch = (tk_table_fetch){ 0 };
        if (!(c->tables[c->ntables].name = tk_strdup(e->tables[c->ntables].name))) goto fail;
    }
    c->continuous = calloc((size_t)(e->ncontinuous ? e->ncontinuous : 1), sizeof *c->continuous);
    if (!c->continuous) goto fail;
    c->cap_continuous = e->ncontinuous;
    for (; c->ncontinuous < e->ncontinuous; c->ncontinuous++)
        if (!(c->continuous[c->ncontinuous] = tk_strdup(e->continuous[c->ncontinuous]))) goto fail;
    return c;
fail:
    emb_free(c);
    return NULL;
}

/* The ids (and offsets, NULL for one-hot) of feature f in the input, checked. */
static bool feature_ids(tk_ctx *ctx, tk_value *in, const emb_feature *f, tk_tensor **ids, tk_tensor **offsets) {
    *ids = tk_value_get(in, f->name);
    *offsets = NULL;
    if (!*ids && !tk_value_get_ragged(in, f->name, ids, offsets)) {
        char vname[256], oname[256]; /* the entries' names, for the message */
        tk_ragged_name_join(f->name, TK_RAGGED_VALUES, vname, sizeof vname);
        tk_ragged_name_join(f->name, TK_RAGGED_OFFSETS, oname, sizeof oname);
        if (!*ids && !*offsets)
            return tk_ctx_fail(ctx, "embeddings: the input has no feature '%s' (expected '%s', or '%s' and '%s')",
                               f->name, f->name, vname, oname),
                   false;
        return tk_ctx_fail(ctx, "embeddings: feature '%s' has '%s' but no '%s'", f->name, *ids ? vname : oname,
                           *ids ? oname : vname),
               false;
    }
    if (*offsets && (*offsets)->dtype != TK_I64)
        return tk_ctx_fail(ctx, "embeddings: the offsets of feature '%s' must be int64, got %s", f->name,
                           tk_dtype_name((*offsets)->dtype)),
               false;
    if ((*ids)->dtype != TK_I64) {
        char s[64];
        return tk_ctx_fail(ctx, "embeddings: feature '%s' must be int64 ids, got %s %s", f->name,
                           tk_dtype_name((*ids)->dtype), tk_shape_str(*ids, s, sizeof s)),
               false;
    }
    return true;
}

/* The fetch items of the tables e reads through a fetch, with the features' ids (ids[i]
 * of feature i): one item per such table in table order, its lists in feature order
 * (arena memory of ctx). The count, 0 for none, -1 when out of memory. */
static int32_t make_items(tk_ctx *ctx, const emb_impl *e, tk_tensor *const *ids, tk_table_fetch_item **out) {
    int32_t nt = 0, nf = e->nfeatures;
    for (int32_t t = 0; t < e->ntables; t++) nt += e->tables[t].fetch.fn != NULL;
    if (nt == 0) return 0;
    tk_table_fetch_item *items = tk_ctx_alloc(ctx, (size_t)nt * sizeof *items);
    tk_tensor **lists = tk_ctx_alloc(ctx, (size_t)(nf ? nf : 1) * sizeof *lists);
    if (!items || !lists) return -1;
    int32_t k = 0, at = 0;
    for (int32_t t = 0; t < e->ntables; t++) {
        const tk_table_fetch *fe = &e->tables[t].fetch;
        if (!fe->fn) continue;
        items[k] = (tk_table_fetch_item){ fe->ud, e->tables[t].name, 0, lists + at, NULL };
        for (int32_t i = 0; i < nf; i++)
            if (e->features[i].table == t) {
                lists[at++] = ids[i];
                items[k].n++;
            }
        k++;
    }
    *out = items;
    return nt;
}

static tk_value *emb_forward(tk_ctx *ctx, tk_block *b, tk_value *in) {
    const emb_impl *e = b->impl;
    if (!tk_block_need_tabular(ctx, "embeddings", in)) return NULL;
    tk_value *out = tk_value_table(ctx);
    if (!out) return NULL;
    int32_t nf = e->nfeatures;
    tk_tensor **ids = tk_ctx_alloc(ctx, (size_t)(nf ? 3 * nf : 1) * sizeof *ids);
    if (!ids) return NULL;
    tk_tensor **offsets = ids + nf, **tables = ids + 2 * nf;
    for (int32_t i = 0; i < nf; i++) {
        if (!feature_ids(ctx, in, &e->features[i], &ids[i], &offsets[i])) return NULL;
        tables[i] = b->params[e->features[i].table];
    }
    /* tables read through a fetch (row-sharded): one call for all of them, with every
     * feature's ids, which it replaces by rows of the tensor it fetched */
    tk_table_fetch_item *items = NULL;
    int32_t nt = make_items(ctx, e, ids, &items);
    if (nt < 0) return NULL;
    if (nt > 0) {
        tk_status (*fn)(tk_ctx *, int32_t, tk_table_fetch_item *) = NULL;
        for (int32_t t = 0; t < e->ntables && !fn; t++) fn = e->tables[t].fetch.fn;
        if (fn(ctx, nt, items) != TK_OK) return NULL;
        for (int32_t t = 0, k = 0; t < e->ntables; t++) { /* the lists in the order make_items made them */
            if (!e->tables[t].fetch.fn) continue;
            for (int32_t i = 0, j = 0; i < nf; i++)
                if (e->features[i].table == t) {
                    ids[i] = items[k].ids[j++];
                    tables[i] = items[k].rows;
                }
            k++;
        }
    }
    tk_tensor *l2sum = NULL;
    bool reg = e->l2 > 0 && tk_ctx_training(ctx);
    for (int32_t i = 0; i < nf; i++) {
        const emb_feature *f = &e->features[i];
        const emb_table *t = &e->tables[f->table];
        tk_tensor *v = tk_embedding_lookup(ctx, tables[i], ids[i], offsets[i], f->combiner, t->name);
        if (tk_value_set(ctx, out, f->name, v) != TK_OK) return NULL;
        if (reg) {
            tk_tensor *s = tk_sum(ctx, tk_square(ctx, v), -1, false);
            l2sum = l2sum ? tk_add(ctx, l2sum, s) : s;
        }
    }
    if (l2sum && tk_ctx_add_loss(ctx, tk_scale(ctx, l2sum, e->l2)) != TK_OK) return NULL;
    for (int32_t i = 0; i < e->ncontinuous; i++) {
        const char *name = e->continuous[i];
        tk_tensor *x = tk_value_get(in, name);
        char s[64];
        if (!x) return tk_ctx_fail(ctx, "embeddings: the input has no continuous feature '%s'", name);
        if (x->dtype != TK_F32 || x->ndim < 1 || x->ndim > 2)
            return tk_ctx_fail(ctx, "embeddings: continuous feature '%s' must be float32 [B] or [B, k], got %s %s",
                               name, tk_dtype_name(x->dtype), tk_shape_str(x, s, sizeof s));
        if (x->ndim == 1) {
            int64_t shape[2] = { x->shape[0], 1 };
            x = tk_reshape(ctx, x, 2, shape);
        }
        if (tk_value_set(ctx, out, name, x) != TK_OK) return NULL;
    }
    return out;
}

static tk_status emb_write_config(const tk_block *b, void *json) {
    const emb_impl *e = b->impl;
    cJSON *tables = cJSON_AddArrayToObject(json, "tables");
    cJSON *features = cJSON_AddArrayToObject(json, "features");
    if (!tables || !features) return TK_ERROR;
    for (int32_t i = 0; i < e->ntables; i++) {
        const emb_table *t = &e->tables[i];
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(tables, o)) {
            cJSON_Delete(o);
            return TK_ERROR;
        }
        if (!cJSON_AddStringToObject(o, "name", t->name) ||
            !cJSON_AddNumberToObject(o, "cardinality", (double)t->cardinality) ||
            !cJSON_AddNumberToObject(o, "dim", (double)t->dim) || !tk_cfg_add_init(o, "initializer", t->init))
            return TK_ERROR;
    }
    for (int32_t i = 0; i < e->nfeatures; i++) {
        const emb_feature *f = &e->features[i];
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(features, o)) {
            cJSON_Delete(o);
            return TK_ERROR;
        }
        if (!cJSON_AddStringToObject(o, "name", f->name) ||
            !cJSON_AddStringToObject(o, "table", e->tables[f->table].name) ||
            !cJSON_AddStringToObject(o, "combiner", tk_combiner_name(f->combiner)))
            return TK_ERROR;
    }
    cJSON *cont = cJSON_AddArrayToObject(json, "continuous");
    if (!cont) return TK_ERROR;
    for (int32_t i = 0; i < e->ncontinuous; i++) {
        cJSON *name = cJSON_CreateString(e->continuous[i]);
        if (!name || !cJSON_AddItemToArray(cont, name)) {
            cJSON_Delete(name);
            return TK_ERROR;
        }
    }
    return tk_cfg_add_float(json, "l2", e->l2) ? TK_OK : TK_ERROR;
}

const tk_block_kind tk_kind_embeddings = {
    .name = "embeddings",
    .forward = emb_forward,
    .write_config = emb_write_config,
    .free_impl = emb_free,
    .copy_impl = emb_copy_impl,
};

tk_block *tk_embeddings_new(const char *name) {
    emb_impl *e = calloc(1, sizeof *e);
    if (!e) {
        tk_set_error("out of memory");
        return NULL;
    }
    return tk_block_new(&tk_kind_embeddings, name, e);
}

static bool grow(void **arr, int32_t *cap, int32_t n, size_t size) {
    if (n < *cap) return true;
    int32_t c = *cap ? *cap * 2 : 8;
    void *a = realloc(*arr, (size_t)c * size);
    if (!a) return false;
    *arr = a;
    *cap = c;
    return true;
}

/* Table `name`'s rows of this block's part, [hi - lo, dim], flagged TK_TENSOR_ROW_SHARD,
 * with the values rows [lo, hi) of the whole table made with the same init and seed. */
static tk_tensor *new_row_part(tk_block *b, const char *name, int64_t rows, int64_t dim, tk_init init, uint64_t seed) {
    const emb_impl *e = b->impl;
    int64_t lo = rows * e->part / e->parts, hi = rows * (e->part + 1) / e->parts;
    int64_t shape[2] = { hi - lo, dim };
    if (tk_cfg_check_param(name, TK_F32, 2, shape) != TK_OK) return NULL;
    tk_tensor *t = tk_tensor_new(TK_F32, 2, shape);
    if (!t) return NULL;
    tk_status st = tk_init_fill_rows(t, init, seed, rows, lo);
    if (st == TK_OK) {
        tk_tensor_set_requires_grad(t, true);
        t->flags |= TK_TENSOR_ROW_SHARD;
        st = tk_block_add_param_init(b, name, t, true, init);
    }
    tk_tensor_release(t); /* the block holds it */
    return st == TK_OK ? t : NULL;
}

tk_status tk_embeddings_set_row_part(tk_block *b, int32_t part, int32_t parts) {
    if (!b || b->kind != &tk_kind_embeddings)
        return tk_set_error("embeddings_set_row_part: not an embeddings block"), TK_ERROR;
    emb_impl *e = b->impl;
    if (parts < 1 || part < 0 || part >= parts)
        return tk_set_error("embeddings '%s': row part %d of %d: need 0 <= part < parts", b->name, (int)part,
                            (int)parts),
               TK_ERROR;
    if (e->ntables > 0)
        return tk_set_error("embeddings '%s': the row part is set before the first table is added (it has %d)", b->name,
                            (int)e->ntables),
               TK_ERROR;
    e->part = part;
    e->parts = parts;
    return TK_OK;
}

bool tk_embeddings_row_part(const tk_block *b, int32_t table, int32_t *part, int32_t *parts, int64_t *rows) {
    if (!b || b->kind != &tk_kind_embeddings) return false;
    const emb_impl *e = b->impl;
    if (table < 0 || table >= e->ntables) return false;
    if (part) *part = e->parts > 1 ? e->part : 0;
    if (parts) *parts = e->parts > 1 ? e->parts : 1;
    if (rows) *rows = e->tables[table].cardinality;
    return true;
}

tk_status tk_embeddings_add_feature(tk_block *b, const char *feature, const char *table, int64_t cardinality,
                                    int64_t dim, tk_combiner combiner, tk_init init, uint64_t seed) {
    if (!b || b->kind != &tk_kind_embeddings) {
        tk_set_error("embeddings_add_feature: not an embeddings block");
        return TK_ERROR;
    }
    emb_impl *e = b->impl;
    if (!feature || !*feature) {
        tk_set_error("embeddings '%s': a feature name must not be empty", b->name);
        return TK_ERROR;
    }
    if (!table || !*table) table = feature;
    if (cardinality <= 0 || dim <= 0) {
        tk_set_error("embeddings '%s': feature '%s' needs a positive cardinality and dim (got %lld, %lld)", b->name,
                     feature, (long long)cardinality, (long long)dim);
        return TK_ERROR;
    }
    if ((unsigned)combiner > TK_COMBINER_SQRTN) {
        tk_set_error("embeddings '%s': feature '%s': unknown combiner %d", b->name, feature, (int)combiner);
        return TK_ERROR;
    }
    if ((unsigned)init.kind >= TK_INIT_COUNT) {
        tk_set_error("embeddings '%s': feature '%s': unknown initializer", b->name, feature);
        return TK_ERROR;
    }
    for (int32_t i = 0; i < e->nfeatures; i++) {
        if (strcmp(e->features[i].name, feature) == 0) {
            tk_set_error("embeddings '%s': feature '%s' is configured already", b->name, feature);
            return TK_ERROR;
        }
    }
    int32_t ti = -1;
    for (int32_t i = 0; i < e->ntables && ti < 0; i++)
        if (strcmp(e->tables[i].name, table) == 0) ti = i;
    if (ti >= 0) {
        const emb_table *t = &e->tables[ti];
        if (t->cardinality != cardinality || t->dim != dim) {
            tk_set_error("embeddings '%s': feature '%s' shares table '%s' of [%lld, %lld] but asks for [%lld, %lld]",
                         b->name, feature, table, (long long)t->cardinality, (long long)t->dim, (long long)cardinality,
                         (long long)dim);
            return TK_ERROR;
        }
    }
    if (!grow((void **)&e->features, &e->cap_features, e->nfeatures, sizeof *e->features) ||
        (ti < 0 && !grow((void **)&e->tables, &e->cap_tables, e->ntables, sizeof *e->tables))) {
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    char *fname = tk_strdup(feature);
    char *tname = ti < 0 ? tk_strdup(table) : NULL;
    if (!fname || (ti < 0 && !tname)) {
        free(fname);
        free(tname);
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    if (ti < 0) {
        int64_t shape[2] = { cardinality, dim };
        if (!(e->parts > 1 ? new_row_part(b, table, cardinality, dim, init, seed)
                           : tk_block_new_param(b, table, 2, shape, true, init, seed))) {
            free(fname);
            free(tname);
            return TK_ERROR;
        }
        ti = e->ntables++;
        e->tables[ti] = (emb_table){ tname, cardinality, dim, init, { 0 } };
    }
    e->features[e->nfeatures++] = (emb_feature){ fname, ti, combiner };
    return TK_OK;
}

tk_status tk_embeddings_add_continuous(tk_block *b, const char *feature) {
    if (!b || b->kind != &tk_kind_embeddings) {
        tk_set_error("embeddings_add_continuous: not an embeddings block");
        return TK_ERROR;
    }
    emb_impl *e = b->impl;
    if (!feature || !*feature) {
        tk_set_error("embeddings '%s': a feature name must not be empty", b->name);
        return TK_ERROR;
    }
    for (int32_t i = 0; i < e->ncontinuous; i++) {
        if (strcmp(e->continuous[i], feature) == 0) {
            tk_set_error("embeddings '%s': continuous feature '%s' is configured already", b->name, feature);
            return TK_ERROR;
        }
    }
    for (int32_t i = 0; i < e->nfeatures; i++) {
        if (strcmp(e->features[i].name, feature) == 0) {
            tk_set_error("embeddings '%s': feature '%s' is categorical already", b->name, feature);
            return TK_ERROR;
        }
    }
    char *name = tk_strdup(feature);
    if (!name || !grow((void **)&e->continuous, &e->cap_continuous, e->ncontinuous, sizeof *e->continuous)) {
        free(name);
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    e->continuous[e->ncontinuous++] = name;
    return TK_OK;
}

int32_t tk_embeddings_fetch_items(tk_ctx *ctx, const tk_block *b, tk_value *in, tk_table_fetch_item **items) {
    if (!b || b->kind != &tk_kind_embeddings || !tk_value_is_tabular(in)) return 0;
    const emb_impl *e = b->impl;
    int32_t nf = e->nfeatures;
    tk_tensor **ids = tk_ctx_alloc(ctx, (size_t)(nf ? nf : 1) * sizeof *ids);
    if (!ids) return -1;
    for (int32_t i = 0; i < nf; i++) {
        const emb_feature *f = &e->features[i];
        tk_tensor *offsets = NULL;
        ids[i] = NULL;
        if (!e->tables[f->table].fetch.fn) continue;
        ids[i] = tk_value_get(in, f->name);
        if (!ids[i] && !tk_value_get_ragged(in, f->name, &ids[i], &offsets)) return 0;
        if (!ids[i] || ids[i]->dtype != TK_I64) return 0; /* the forward will say what is wrong */
    }
    return make_items(ctx, e, ids, items);
}

tk_status tk_embeddings_set_fetch(tk_block *b, int32_t table, const tk_table_fetch *f) {
    if (!b || b->kind != &tk_kind_embeddings)
        return tk_set_error("embeddings_set_fetch: not an embeddings block"), TK_ERROR;
    emb_impl *e = b->impl;
    if (table < 0 || table >= e->ntables)
        return tk_set_error("embeddings '%s': no table %d", b->name, (int)table), TK_ERROR;
    e->tables[table].fetch = f ? *f : (tk_table_fetch){ 0 };
    return TK_OK;
}

void tk_embeddings_set_l2(tk_block *b, float l2) {
    if (b && b->kind == &tk_kind_embeddings && l2 >= 0) ((emb_impl *)b->impl)->l2 = l2;
}

tk_block *tk_embeddings_from_config(const void *json, uint64_t seed) {
    const cJSON *o = json;
    const cJSON *tables = cJSON_GetObjectItemCaseSensitive(o, "tables");
    const cJSON *features = cJSON_GetObjectItemCaseSensitive(o, "features");
    float l2 = 0;
    if (!tables) return tk_cfg_fail("missing \"tables\"");
    if (!cJSON_IsArray(tables)) return tk_cfg_fail("\"tables\" must be an array");
    if (!features) return tk_cfg_fail("missing \"features\"");
    if (!cJSON_IsArray(features)) return tk_cfg_fail("\"features\" must be an array");
    if (!tk_cfg_float(o, "l2", false, &l2)) return NULL;
    if (l2 < 0) return tk_cfg_fail("\"l2\" must not be negative");
    tk_block *b = tk_embeddings_new(tk_cfg_name(o));
    if (!b) return NULL;
    tk_embeddings_set_l2(b, l2);
    int ntables = cJSON_GetArraySize(tables);
    /* Tables first, in order, so parameter order and seeds follow the config. */
    for (int i = 0; i < ntables; i++) {
        const cJSON *t = cJSON_GetArrayItem(tables, i);
        const char *name = NULL;
        int64_t card = 0, dim = 0;
        tk_init init = { .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.05f, .b = 0.05f };
        if (!cJSON_IsObject(t)) {
            tk_cfg_fail("\"tables\"[%d] must be an object", i);
            goto fail;
        }
        if (!tk_cfg_string(t, "name", true, &name) || !tk_cfg_int(t, "cardinality", true, &card) ||
            !tk_cfg_int(t, "dim", true, &dim) || !tk_cfg_init(t, "initializer", false, &init))
            goto fail;
        emb_impl *e = b->impl;
        for (int32_t j = 0; j < e->ntables; j++) {
            if (strcmp(e->tables[j].name, name) == 0) {
                tk_cfg_fail("\"tables\"[%d]: table '%s' appears twice", i, name);
                goto fail;
            }
        }
        if (card <= 0 || dim <= 0) {
            tk_cfg_fail("\"tables\"[%d] ('%s'): \"%s\" must be positive, got %lld", i, name,
                        card <= 0 ? "cardinality" : "dim", (long long)(card <= 0 ? card : dim));
            goto fail;
        }
        int64_t shape[2] = { card, dim };
        if (!tk_block_new_param(b, name, 2, shape, true, init, tk_seed_mix(seed, (uint64_t)i))) {
            char msg[TK_ERR_LEN];
            snprintf(msg, sizeof msg, "%s", tk_last_error());
            tk_cfg_fail("\"tables\"[%d]: %s", i, msg);
            goto fail;
        }
        char *tname = tk_strdup(name);
        if (!tname || !grow((void **)&e->tables, &e->cap_tables, e->ntables, sizeof *e->tables)) {
            free(tname);
            tk_cfg_fail("out of memory");
            goto fail;
        }
        e->tables[e->ntables++] = (emb_table){ tname, card, dim, init, { 0 } };
    }
    for (int i = 0; i < cJSON_GetArraySize(features); i++) {
        const cJSON *f = cJSON_GetArrayItem(features, i);
        const char *name = NULL, *table = NULL, *comb = "mean";
        if (!cJSON_IsObject(f)) {
            tk_cfg_fail("\"features\"[%d] must be an object", i);
            goto fail;
        }
        if (!tk_cfg_string(f, "name", true, &name) || !tk_cfg_string(f, "table", false, &table) ||
            !tk_cfg_string(f, "combiner", false, &comb))
            goto fail;
        if (!table) table = name;
        int c = tk_combiner_from_name(comb);
        if (c < 0) {
            tk_cfg_fail("\"features\"[%d]: unknown combiner '%s' (known: sum, mean, sqrtn)", i, comb);
            goto fail;
        }
        const emb_impl *e = b->impl;
        int32_t ti = -1;
        for (int32_t j = 0; j < e->ntables && ti < 0; j++)
            if (strcmp(e->tables[j].name, table) == 0) ti = j;
        if (ti < 0) {
            tk_cfg_fail("\"features\"[%d]: feature '%s' reads table '%s', which is not in \"tables\"", i, name, table);
            goto fail;
        }
        const emb_table *t = &e->tables[ti];
        if (tk_embeddings_add_feature(b, name, table, t->cardinality, t->dim, (tk_combiner)c, t->init, 0) != TK_OK) {
            tk_cfg_fail("%s", tk_last_error());
            goto fail;
        }
    }
    const cJSON *cont = cJSON_GetObjectItemCaseSensitive(o, "continuous");
    if (cont && !cJSON_IsArray(cont)) {
        tk_cfg_fail("\"continuous\" must be an array of names");
        goto fail;
    }
    for (int i = 0; cont && i < cJSON_GetArraySize(cont); i++) {
        const cJSON *n = cJSON_GetArrayItem(cont, i);
        if (!cJSON_IsString(n)) {
            tk_cfg_fail("\"continuous\"[%d] must be a string", i);
            goto fail;
        }
        if (tk_embeddings_add_continuous(b, n->valuestring) != TK_OK) {
            tk_cfg_fail("%s", tk_last_error());
            goto fail;
        }
    }
    return b;
fail:
    tk_block_release(b);
    return NULL;
}
