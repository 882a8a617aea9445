/* Block configs as JSON (cJSON) and the registry of block kinds.
 *
 * A config is {"kind", "name", ...kind fields..., "children": [...], "child_names": [...],
 * "pre": {...}, "post": {...}, "aggregation": "concat"}. The generic fields are written
 * and read here; each kind writes its own fields (write_config) and reads them back
 * (its from_config, which also builds its children). */
#include "block_impl.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>

/* ------------------------------------------------------------------------------------ */
/* Registry                                                                               */
/* ------------------------------------------------------------------------------------ */

typedef struct kind_entry {
    const tk_block_kind *kind;
    tk_block_from_config_fn from_config;
} kind_entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
/* A fixed table: the process never frees it, so it must not be heap memory (leak
 * checkers would report it when a host unloads the library). */
#define TK_MAX_KINDS 128
static kind_entry registry[TK_MAX_KINDS];
static int32_t nregistry;

static tk_status register_locked(const tk_block_kind *kind, tk_block_from_config_fn from_config) {
    for (int32_t i = 0; i < nregistry; i++) {
        if (strcmp(registry[i].kind->name, kind->name) != 0) continue;
        if (registry[i].kind != kind) {
            tk_set_error("block kind '%s' is registered already", kind->name);
            return TK_ERROR;
        }
        registry[i].from_config = from_config;
        return TK_OK;
    }
    if (nregistry == TK_MAX_KINDS) {
        tk_set_error("cannot register block kind '%s': %d kinds are registered already", kind->name, TK_MAX_KINDS);
        return TK_ERROR;
    }
    registry[nregistry].kind = kind;
    registry[nregistry].from_config = from_config;
    nregistry++;
    return TK_OK;
}

static void register_builtin(void) {
    static const struct {
        const tk_block_kind *kind;
        tk_block_from_config_fn from_config;
    } builtin[] = {
        { &tk_kind_dense, tk_dense_from_config },           { &tk_kind_activation, tk_activation_from_config },
        { &tk_kind_l2norm, tk_l2norm_from_config },         { &tk_kind_dropout, tk_dropout_from_config },
        { &tk_kind_batch_norm, tk_batch_norm_from_config }, { &tk_kind_filter, tk_filter_from_config },
        { &tk_kind_as_tabular, tk_as_tabular_from_config }, { &tk_kind_aggregation, tk_aggregation_from_config },
        { &tk_kind_embeddings, tk_embeddings_from_config }, { &tk_kind_sequential, tk_sequential_from_config },
        { &tk_kind_parallel, tk_parallel_from_config },     { &tk_kind_residual, tk_residual_from_config },
        { &tk_kind_shortcut, tk_shortcut_from_config },     { &tk_kind_callback, NULL },
    };
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < TK_ARRAY_LEN(builtin); i++) register_locked(builtin[i].kind, builtin[i].from_config);
    pthread_mutex_unlock(&registry_lock);
}

static void tk_block_kinds_register_builtin(void) { pthread_once(&builtin_once, register_builtin); }

tk_status tk_block_kind_register(const tk_block_kind *kind, tk_block_from_config_fn from_config) {
    if (!kind || !kind->name || !*kind->name || !kind->forward) {
        tk_set_error("block_kind_register: a kind needs a name and a forward function");
        return TK_ERROR;
    }
    tk_block_kinds_register_builtin();
    pthread_mutex_lock(&registry_lock);
    tk_status st = register_locked(kind, from_config);
    pthread_mutex_unlock(&registry_lock);
    return st;
}

static bool find_entry(const char *name, kind_entry *out) {
    tk_block_kinds_register_builtin();
    bool found = false;
    pthread_mutex_lock(&registry_lock);
    for (int32_t i = 0; i < nregistry && !found; i++) {
        if (strcmp(registry[i].kind->name, name) == 0) {
            *out = registry[i];
            found = true;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    return found;
}

const tk_block_kind *tk_block_kind_find(const char *name) {
    kind_entry e;
    return name && find_entry(name, &e) ? e.kind : NULL;
}

static void known_kinds(char *buf, size_t len) {
    size_t off = 0;
    buf[0] = '\0';
    pthread_mutex_lock(&registry_lock);
    for (int32_t i = 0; i < nregistry && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ", %s" : "%s", registry[i].kind->name);
    pthread_mutex_unlock(&registry_lock);
}

/* ------------------------------------------------------------------------------------ */
/* Error messages with the path of the block being read                                   */
/* ------------------------------------------------------------------------------------ */

static _Thread_local char cfg_path[1024];
static _Thread_local size_t cfg_len;

void *tk_cfg_fail(const char *fmt, ...) {
    char msg[TK_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cfg_len)
        tk_set_error("block config '%s': %s", cfg_path, msg);
    else
        tk_set_error("block config: %s", msg);
    return NULL;
}

static size_t cfg_push(const char *name) {
    size_t old = cfg_len;
    int n = snprintf(cfg_path + old, sizeof cfg_path - old, old ? "/%s" : "%s", name);
    if (n > 0) cfg_len = old + (size_t)n < sizeof cfg_path ? old + (size_t)n : sizeof cfg_path - 1;
    return old;
}

static void cfg_pop(size_t old) {
    cfg_len = old;
    cfg_path[old] = '\0';
}

/* ------------------------------------------------------------------------------------ */
/* Parameter paths and the shape oracle                                                   */
/* ------------------------------------------------------------------------------------ */
/* While a config is read with an oracle, param_path is the parameter path of the block
 * being read (skip_root: "" for the root), built from the config as block.c's
 * visit_rec builds it from the blocks: the kinds have not made the parent yet when a
 * child allocates its parameters. */

static _Thread_local const tk_shape_oracle *cfg_oracle;
static _Thread_local const cJSON *cfg_reading; /* the config object whose from_config runs */
static _Thread_local char param_path[2048];
static _Thread_local size_t param_len;

/* The name sibling k of config object p gives its block, as block.c's sibling_name:
 * children 0..n-1 (a parallel block's "child_names" stand for them: the only kind that
 * reads them), then pre (n), then post (n + 1). NULL when there is none. */
static const char *json_sibling_name(const cJSON *p, int n, int k) {
    const cJSON *s;
    if (k < n) {
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(p, "kind");
        const cJSON *names = cJSON_GetObjectItemCaseSensitive(p, "child_names");
        if (cJSON_IsString(kind) && strcmp(kind->valuestring, "parallel") == 0 && cJSON_IsArray(names)) {
            const cJSON *nm = cJSON_GetArrayItem(names, k);
            if (cJSON_IsString(nm) && *nm->valuestring) return nm->valuestring;
        }
        s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(p, "children"), k);
    } else {
        s = cJSON_GetObjectItemCaseSensitive(p, k == n ? "pre" : "post");
    }
    return cJSON_IsObject(s) ? tk_cfg_name(s) : NULL;
}

/* Appends the path component of sibling k of config object p (its name, or
 * "<name>_<k>" when another sibling has the same name, as block.c's
 * sibling_component); p NULL: the component is `fallback`. Returns the old length. */
static size_t param_push(const cJSON *p, int k, const char *fallback) {
    size_t old = param_len;
    if (!cfg_oracle) return old;
    const cJSON *children = p ? cJSON_GetObjectItemCaseSensitive(p, "children") : NULL;
    int n = cJSON_IsArray(children) ? cJSON_GetArraySize(children) : 0;
    const char *name = p ? json_sibling_name(p, n, k) : fallback;
    if (!name) name = "";
    bool dup = false;
    for (int j = 0; p && j < n + 2 && !dup; j++) {
        const char *other = j != k ? json_sibling_name(p, n, j) : NULL;
        dup = other && strcmp(other, name) == 0;
    }
    char comp[256];
    if (dup)
        snprintf(comp, sizeof comp, "%s_%d", name, k);
    else
        snprintf(comp, sizeof comp, "%s", name);
    snprintf(param_path + old, sizeof param_path - old, old ? "/%s" : "%s", comp);
    param_len = strlen(param_path);
    return old;
}

static void param_pop(size_t old) {
    param_len = old;
    param_path[old] = '\0';
}

tk_status tk_cfg_check_param(const char *name, tk_dtype dtype, int32_t ndim, const int64_t *shape) {
    if (!cfg_oracle || !cfg_oracle->check) return TK_OK;
    char path[sizeof param_path + 256];
    snprintf(path, sizeof path, param_len ? "%s/%s" : "%s%s", param_path, name);
    return cfg_oracle->check(cfg_oracle->ud, path, dtype, ndim, shape) == 0 ? TK_OK : TK_ERROR;
}

/* ------------------------------------------------------------------------------------ */
/* Field readers and writers                                                              */
/* ------------------------------------------------------------------------------------ */

static const cJSON *field(const cJSON *o, const char *key, bool required) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v && required) tk_cfg_fail("missing \"%s\"", key);
    return v;
}

bool tk_cfg_int(const cJSON *o, const char *key, bool required, int64_t *out) {
    const cJSON *v = field(o, key, required);
    if (!v) return !required;
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || fabs(d) > 9007199254740992.0) {
        tk_cfg_fail("\"%s\" must be an integer", key);
        return false;
    }
    *out = (int64_t)d;
    return true;
}

bool tk_cfg_float(const cJSON *o, const char *key, bool required, float *out) {
    const cJSON *v = field(o, key, required);
    if (!v) return !required;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        tk_cfg_fail("\"%s\" must be a number", key);
        return false;
    }
    *out = (float)v->valuedouble;
    return true;
}

bool tk_cfg_bool(const cJSON *o, const char *key, bool required, bool *out) {
    const cJSON *v = field(o, key, required);
    if (!v) return !required;
    if (!cJSON_IsBool(v)) {
        tk_cfg_fail("\"%s\" must be true or false", key);
        return false;
    }
    *out = cJSON_IsTrue(v);
    return true;
}

bool tk_cfg_string(const cJSON *o, const char *key, bool required, const char **out) {
    const cJSON *v = field(o, key, required);
    if (!v) return !required;
    if (!cJSON_IsString(v) || !v->valuestring) {
        tk_cfg_fail("\"%s\" must be a string", key);
        return false;
    }
    *out = v->valuestring;
    return true;
}

bool tk_cfg_activation(const cJSON *o, const char *key, bool required, tk_activation *out) {
    const char *s = NULL;
    if (!tk_cfg_string(o, key, required, &s)) return false;
    if (!s) return true;
    int act = tk_activation_from_name(s);
    if (act < 0) {
        tk_cfg_fail("\"%s\": unknown activation '%s' (known: %s)", key, s, tk_activation_names());
        return false;
    }
    *out = (tk_activation)act;
    return true;
}

bool tk_cfg_init(const cJSON *o, const char *key, bool required, tk_init *out) {
    const cJSON *v = field(o, key, required);
    if (!v) return !required;
    const cJSON *kind = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "kind") : NULL;
    if (!cJSON_IsString(kind)) {
        tk_cfg_fail("\"%s\" must be an object {\"kind\": \"glorot_uniform\", \"a\": 0, \"b\": 0}", key);
        return false;
    }
    tk_init init;
    if (tk_init_from_name(kind->valuestring, &init) < 0) {
        tk_cfg_fail("\"%s\": unknown initializer '%s' (known: %s)", key, kind->valuestring, tk_init_names());
        return false;
    }
    const char *ab[2] = { "a", "b" };
    float *dst[2] = { &init.a, &init.b };
    for (int i = 0; i < 2; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(v, ab[i]);
        if (!x) continue;
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble)) {
            tk_cfg_fail("\"%s\".\"%s\" must be a number", key, ab[i]);
            return false;
        }
        *dst[i] = (float)x->valuedouble;
    }
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(v, "seed"); /* the initializer's own seed, if any */
    if (seed) {
        double d = cJSON_IsNumber(seed) ? seed->valuedouble : -1.0;
        if (!(d >= 0.0 && d <= 9007199254740992.0 && d == floor(d))) {
            tk_cfg_fail("\"%s\".\"seed\" must be an integer in [0, 2^53]", key);
            return false;
        }
        init.has_seed = true;
        init.seed = (uint64_t)d;
    }
    *out = init;
    return true;
}

const cJSON *tk_cfg_children(const cJSON *o, int n_min, int n_max) {
    const cJSON *c = field(o, "children", n_min > 0);
    if (!c) return n_min > 0 ? NULL : cJSON_GetObjectItemCaseSensitive(o, "children");
    if (!cJSON_IsArray(c)) return tk_cfg_fail("\"children\" must be an array");
    int n = cJSON_GetArraySize(c);
    if (n < n_min || (n_max >= 0 && n > n_max)) {
        if (n_min == n_max)
            return tk_cfg_fail("\"children\" must have %d %s, got %d", n_min, n_min == 1 ? "entry" : "entries", n);
        return tk_cfg_fail("\"children\" must have %d to %d entries, got %d", n_min, n_max, n);
    }
    return c;
}

const char *tk_cfg_name(const cJSON *o) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "name");
    return cJSON_IsString(n) ? n->valuestring : NULL;
}

tk_block *tk_cfg_child(const cJSON *children, int i, uint64_t seed) {
    const cJSON *c = cJSON_GetArrayItem(children, i);
    const cJSON *p =
        cfg_reading && cJSON_GetObjectItemCaseSensitive(cfg_reading, "children") == children ? cfg_reading : NULL;
    size_t old = param_push(p, i, cJSON_IsObject(c) ? tk_cfg_name(c) : NULL);
    tk_block *b = tk_block_from_cjson(c, tk_seed_mix(seed, (uint64_t)i));
    param_pop(old);
    return b;
}

/* The shortest decimal that reads back as the same float (util.c's formatter, as CSV
 * writes it): 0.1f is written 0.1. */
static double short_float(float v) {
    char buf[32];
    if (!isfinite(v)) return (double)v; /* the formatter takes finite floats only */
    buf[tk_format_f32(v, buf)] = '\0';
    return strtod(buf, NULL);
}

/* A value the config cannot hold: refused with the block's path and the field, so the
 * writer fails rather than write what the reader would refuse (JSON has no infinity;
 * cJSON would print null). The message is kept apart: a kind's write_config reports
 * any failure of its adders as "out of memory". */
static _Thread_local bool cfg_refused;
static _Thread_local char cfg_refusal[TK_ERR_LEN];

static bool refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool refuse(const char *fmt, ...) {
    char msg[TK_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tk_cfg_fail("%s", msg);
    snprintf(cfg_refusal, sizeof cfg_refusal, "%s", tk_last_error());
    cfg_refused = true;
    return false;
}

bool tk_cfg_add_float(cJSON *o, const char *key, float v) {
    if (!isfinite(v)) return refuse("\"%s\" is not a finite number (%f): a config cannot hold it", key, (double)v);
    return cJSON_AddNumberToObject(o, key, short_float(v)) != NULL;
}

bool tk_cfg_add_init(cJSON *o, const char *key, tk_init init) {
    if (!isfinite(init.a) || !isfinite(init.b))
        return refuse("\"%s\".\"%s\" is not a finite number (%f): a config cannot hold it", key,
                      isfinite(init.a) ? "b" : "a", (double)(isfinite(init.a) ? init.b : init.a));
    if (init.has_seed && init.seed > (1ull << 53))
        return refuse("\"%s\".\"seed\" %llu is over 2^53, which a config cannot hold exactly", key,
                      (unsigned long long)init.seed);
    cJSON *i = cJSON_AddObjectToObject(o, key);
    return i && cJSON_AddStringToObject(i, "kind", tk_init_name(init.kind)) && tk_cfg_add_float(i, "a", init.a) &&
           tk_cfg_add_float(i, "b", init.b) &&
           (!init.has_seed || cJSON_AddNumberToObject(i, "seed", (double)init.seed) != NULL);
}

/* ------------------------------------------------------------------------------------ */
/* Writing                                                                                */
/* ------------------------------------------------------------------------------------ */

static bool add_hook(cJSON *o, const char *key, const tk_block *hook) {
    if (!hook) return true;
    cJSON *h = tk_block_config_cjson(hook);
    if (!h) return false;
    if (!cJSON_AddItemToObject(o, key, h)) {
        cJSON_Delete(h);
        return false;
    }
    return true;
}

cJSON *tk_block_config_cjson(const tk_block *b) {
    size_t old = cfg_push(b->name); /* for the messages of refused values */
    cJSON *o = cJSON_CreateObject();
    if (!o) goto oom;
    if (!cJSON_AddStringToObject(o, "kind", b->kind->name) || !cJSON_AddStringToObject(o, "name", b->name)) goto oom;
    cfg_refused = false;
    if (b->kind->write_config && b->kind->write_config(b, o) != TK_OK) {
        if (!cfg_refused) goto oom;
        tk_set_error("%s", cfg_refusal);
        goto fail;
    }
    if (b->nchildren > 0) {
        cJSON *children = cJSON_AddArrayToObject(o, "children");
        if (!children) goto oom;
        bool named = false;
        for (int32_t i = 0; i < b->nchildren; i++) {
            cJSON *c = tk_block_config_cjson(b->children[i]);
            if (!c) goto fail;
            if (!cJSON_AddItemToArray(children, c)) {
                cJSON_Delete(c);
                goto oom;
            }
            named = named || b->child_names[i];
        }
        if (named) {
            cJSON *names = cJSON_AddArrayToObject(o, "child_names");
            if (!names) goto oom;
            for (int32_t i = 0; i < b->nchildren; i++) {
                const char *n = b->child_names[i] ? b->child_names[i] : b->children[i]->name;
                cJSON *s = cJSON_CreateString(n);
                if (!s || !cJSON_AddItemToArray(names, s)) {
                    cJSON_Delete(s);
                    goto oom;
                }
            }
        }
    }
    if (!add_hook(o, "pre", b->pre) || !add_hook(o, "post", b->post)) goto fail;
    if (b->aggregation != TK_AGG_NONE &&
        !cJSON_AddStringToObject(o, "aggregation", tk_aggregation_name(b->aggregation)))
        goto oom;
    if (b->meta) {
        cJSON *meta = cJSON_Parse(b->meta); /* validated when set */
        if (!meta || !cJSON_AddItemToObject(o, "meta", meta)) {
            cJSON_Delete(meta);
            goto oom;
        }
    }
    cfg_pop(old);
    return o;
oom:
    tk_set_error("out of memory writing the config of block '%s'", b->name);
fail:
    cfg_pop(old);
    cJSON_Delete(o);
    return NULL;
}

char *tk_block_config_json(const tk_block *b) {
    if (!b) {
        tk_set_error("block_config_json: block is NULL");
        return NULL;
    }
    cfg_pop(0);
    cJSON *o = tk_block_config_cjson(b);
    if (!o) return NULL;
    char *s = tk_json_print(o, true); /* numbers exact: cJSON's printer rounds to 15 digits */
    cJSON_Delete(o);
    if (!s) tk_set_error("out of memory writing the config of block '%s'", b->name);
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* Reading                                                                                */
/* ------------------------------------------------------------------------------------ */

static tk_status read_hook(tk_block *b, const cJSON *o, const char *key, uint64_t seed) {
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!h) return TK_OK;
    if (!cJSON_IsObject(h)) {
        tk_cfg_fail("\"%s\" must be a block config object, got %s", key, tk_json_kind(h));
        return TK_ERROR;
    }
    const cJSON *children = cJSON_GetObjectItemCaseSensitive(o, "children");
    int n = cJSON_IsArray(children) ? cJSON_GetArraySize(children) : 0;
    size_t old = param_push(o, strcmp(key, "pre") == 0 ? n : n + 1, NULL);
    tk_block *hook = tk_block_from_cjson(h, seed);
    param_pop(old);
    if (!hook) return TK_ERROR;
    if (strcmp(key, "pre") == 0)
        tk_block_set_pre(b, hook);
    else
        tk_block_set_post(b, hook);
    tk_block_release(hook);
    return TK_OK;
}

/* The fields every kind has: aggregation, pre and post. */
static tk_status read_generic(tk_block *b, const cJSON *o, uint64_t seed) {
    const char *agg = NULL;
    if (!tk_cfg_string(o, "aggregation", false, &agg)) return TK_ERROR;
    int a = agg ? tk_aggregation_from_name(agg) : TK_AGG_NONE;
    if (a < 0) {
        tk_cfg_fail("unknown aggregation '%s' (known: %s)", agg, tk_aggregation_names());
        return TK_ERROR;
    }
    tk_block_set_aggregation(b, (tk_aggregation)a);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(o, "meta");
    if (meta) {
        if (!cJSON_IsObject(meta)) {
            tk_cfg_fail("\"meta\" must be an object");
            return TK_ERROR;
        }
        char *text = tk_json_print(meta, false); /* numbers exact, as read */
        if (!text) {
            tk_cfg_fail("\"meta\": %s", tk_last_error());
            return TK_ERROR;
        }
        tk_status st = tk_block_set_meta(b, text);
        cJSON_free(text);
        if (st != TK_OK) {
            tk_cfg_fail("\"meta\": %s", tk_last_error());
            return TK_ERROR;
        }
    }
    if (read_hook(b, o, "pre", tk_seed_mix(seed, 0x9e37)) != TK_OK) return TK_ERROR;
    return read_hook(b, o, "post", tk_seed_mix(seed, 0x79b9));
}

tk_block *tk_block_from_cjson(const cJSON *o, uint64_t seed) {
    if (!cJSON_IsObject(o))
        return tk_cfg_fail("a block config must be a JSON object, got %s", o ? tk_json_kind(o) : "nothing");
    const char *kind = NULL, *name = NULL;
    if (!tk_cfg_string(o, "kind", true, &kind) || !tk_cfg_string(o, "name", true, &name)) return NULL;
    if (!*name) return tk_cfg_fail("\"name\" must not be empty");
    size_t old = cfg_push(name);
    tk_block *b = NULL;
    kind_entry e;
    if (!find_entry(kind, &e)) {
        char known[512];
        known_kinds(known, sizeof known);
        tk_cfg_fail("unknown block kind '%s' (known: %s)", kind, known);
    } else if (!e.from_config) {
        tk_cfg_fail("block kind '%s' cannot be restored from config", kind);
    } else {
        const cJSON *outer = cfg_reading;
        cfg_reading = o;
        b = e.from_config(o, seed);
        cfg_reading = outer;
        if (b && read_generic(b, o, seed) != TK_OK) {
            tk_block_release(b);
            b = NULL;
        }
    }
    cfg_pop(old);
    return b;
}

tk_block *tk_block_from_cjson_checked(const cJSON *o, uint64_t seed, const tk_shape_oracle *oracle) {
    cfg_pop(0);
    const tk_shape_oracle *outer_oracle = cfg_oracle;
    const cJSON *outer_reading = cfg_reading;
    size_t outer_len = param_len;
    char outer_path[sizeof param_path];
    memcpy(outer_path, param_path, outer_len + 1);
    cfg_oracle = oracle;
    cfg_reading = NULL;
    param_pop(0);
    tk_block *b = tk_block_from_cjson(o, seed);
    cfg_oracle = outer_oracle;
    cfg_reading = outer_reading;
    memcpy(param_path, outer_path, outer_len + 1); /* a config read inside a config read */
    param_len = outer_len;
    return b;
}

tk_block *tk_block_from_config_json(const char *json, uint64_t seed) {
    if (!json) {
        tk_set_error("block config: the JSON text is NULL");
        return NULL;
    }
    cJSON *o = tk_json_parse(json, strlen(json), "block config");
    if (!o) return NULL;
    tk_block *b = tk_block_from_cjson_checked(o, seed, NULL);
    cJSON_Delete(o);
    return b;
}
