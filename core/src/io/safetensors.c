/* safetensors files (https://github.com/huggingface/safetensors): an unsigned 64-bit
 * little-endian header length N, N bytes of JSON header padded with spaces so the data
 * starts at a multiple of 8, then the raw little-endian data of every tensor,
 * contiguous in header order. The header maps each name to
 * {"dtype": "F32"|"I64", "shape": [...], "data_offsets": [begin, end]} (offsets relative
 * to the end of the header); an optional "__metadata__" object holds string values.
 *
 * Reading validates the whole header before any data is read: every error names the
 * file and, where there is one, the tensor. */
#include "io/io_impl.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <sys/stat.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format's data is little-endian)"
#endif

#define ST_MAX_HEADER (100u * 1024 * 1024) /* the reference reader's limit */

static const char *st_dtype(tk_dtype d) { return d == TK_I64 ? "I64" : "F32"; }

/* ------------------------------------------------------------------------------------ */
/* Writing                                                                                */
/* ------------------------------------------------------------------------------------ */

/* The first name that appears twice, or NULL. */
static const char *find_duplicate(int32_t n, const char *const *names) {
    if (n < 2) return NULL;
    const char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return NULL;
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, tk_strcmp_ptr);
    const char *dup = NULL;
    for (int32_t i = 1; i < n && !dup; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
    free(sorted);
    return dup;
}

/* Appends the metadata object (validated: an object of string values) to the header. */
static tk_status put_metadata(tk_sbuf *h, const char *path, const char *metadata_json) {
    cJSON *m = cJSON_Parse(metadata_json);
    if (!cJSON_IsObject(m)) {
        cJSON_Delete(m);
        tk_set_error("%s: the metadata must be a JSON object of strings, got '%.60s'", path, metadata_json);
        return TK_ERROR;
    }
    tk_sbuf_puts(h, "\"__metadata__\":{");
    int i = 0;
    for (const cJSON *e = m->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e)) {
            tk_set_error("%s: metadata value '%s' must be a string", path, e->string);
            cJSON_Delete(m);
            return TK_ERROR;
        }
        if (i) tk_sbuf_puts(h, ",");
        tk_sbuf_json_string(h, e->string);
        tk_sbuf_puts(h, ":");
        tk_sbuf_json_string(h, e->valuestring);
    }
    tk_sbuf_puts(h, "}");
    cJSON_Delete(m);
    return TK_OK;
}

tk_status tk_safetensors_write(const char *path, int32_t n, const char *const *names, tk_tensor *const *tensors,
                               const char *metadata_json) {
    if (!path) {
        tk_set_error("safetensors_write: path is NULL");
        return TK_ERROR;
    }
    if (n < 0 || (n > 0 && (!names || !tensors))) {
        tk_set_error("%s: safetensors_write needs n >= 0 names and tensors", path);
        return TK_ERROR;
    }
    for (int32_t i = 0; i < n; i++) {
        if (!names[i] || !*names[i]) {
            tk_set_error("%s: tensor %d has no name", path, (int)i);
            return TK_ERROR;
        }
        if (strcmp(names[i], "__metadata__") == 0) {
            tk_set_error("%s: '__metadata__' is reserved and cannot name a tensor", path);
            return TK_ERROR;
        }
        const tk_tensor *t = tensors[i];
        if (!t || !t->data || (t->dtype != TK_F32 && t->dtype != TK_I64)) {
            tk_set_error("%s: tensor '%s' is %s", path, names[i],
                         !t         ? "NULL"
                         : !t->data ? "without data"
                                    : "of an unknown dtype");
            return TK_ERROR;
        }
    }
    const char *dup = find_duplicate(n, names);
    if (dup) {
        tk_set_error("%s: tensor name '%s' is given twice", path, dup);
        return TK_ERROR;
    }

    /* the header, compact as the reference writer makes it */
    tk_sbuf h = { 0 };
    tk_sbuf_puts(&h, "{");
    if (metadata_json) {
        if (put_metadata(&h, path, metadata_json) != TK_OK) {
            free(h.data);
            return TK_ERROR;
        }
        if (n) tk_sbuf_puts(&h, ",");
    }
    uint64_t offset = 0;
    for (int32_t i = 0; i < n; i++) {
        const tk_tensor *t = tensors[i];
        uint64_t bytes = (uint64_t)t->numel * tk_dtype_size(t->dtype);
        if (i) tk_sbuf_puts(&h, ",");
        tk_sbuf_json_string(&h, names[i]);
        tk_sbuf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype(t->dtype));
        for (int32_t d = 0; d < t->ndim; d++) tk_sbuf_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        tk_sbuf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                       (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    tk_sbuf_puts(&h, "}");
    while (h.len % 8) tk_sbuf_puts(&h, " ");
    if (h.oom) {
        free(h.data);
        tk_set_error("%s: out of memory writing the header", path);
        return TK_ERROR;
    }

    tk_atomic_file *af = tk_atomic_open(path);
    if (!af) {
        free(h.data);
        return TK_ERROR;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    tk_status st = tk_atomic_write(af, len8, 8);
    if (st == TK_OK) st = tk_atomic_write(af, h.data, h.len);
    for (int32_t i = 0; i < n && st == TK_OK; i++)
        st = tk_atomic_write(af, tensors[i]->data, (size_t)tensors[i]->numel * tk_dtype_size(tensors[i]->dtype));
    free(h.data);
    return tk_atomic_commit(af); /* fails, and removes the file, after a failed write */
}

/* ------------------------------------------------------------------------------------ */
/* Reading                                                                                */
/* ------------------------------------------------------------------------------------ */

void tk_safetensors_free(tk_safetensors *st) {
    if (!st) return;
    for (int32_t i = 0; i < st->n; i++) {
        free(st->names[i]);
        tk_tensor_release(st->tensors[i]);
    }
    free(st->names);
    free(st->tensors);
    free(st->metadata_json);
    free(st);
}

typedef struct entry {
    const char *name;
    tk_dtype dtype;
    int32_t ndim;
    int64_t shape[TK_MAX_DIMS];
    uint64_t begin, end;
} entry;

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static int cmp_entry_offset(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A non-negative integer of a JSON number (exact below 2^53). */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d > 9007199254740992.0) return false;
    *out = (uint64_t)d;
    return true;
}

/* Fills e from the header entry o; false with the error set. */
static bool read_entry(const char *path, const cJSON *o, entry *e) {
    const char *name = o->string;
    e->name = name;
    if (!cJSON_IsObject(o)) {
        tk_set_error("%s: tensor '%s': the header entry must be an object, got %s", path, name, tk_json_kind(o));
        return false;
    }
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(o, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(o, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(o, "data_offsets");
    if (!cJSON_IsString(dtype)) {
        tk_set_error("%s: tensor '%s': \"dtype\" must be a string, got %s", path, name, tk_json_kind(dtype));
        return false;
    }
    if (strcmp(dtype->valuestring, "F32") == 0) {
        e->dtype = TK_F32;
    } else if (strcmp(dtype->valuestring, "I64") == 0) {
        e->dtype = TK_I64;
    } else {
        tk_set_error("%s: tensor '%s': dtype '%s' is not supported (towerkit reads F32 and I64)", path, name,
                     dtype->valuestring);
        return false;
    }
    if (!cJSON_IsArray(shape)) {
        tk_set_error("%s: tensor '%s': \"shape\" must be an array, got %s", path, name, tk_json_kind(shape));
        return false;
    }
    int nd = cJSON_GetArraySize(shape);
    if (nd > TK_MAX_DIMS) {
        tk_set_error("%s: tensor '%s' has %d dimensions; towerkit tensors have at most %d", path, name, nd,
                     TK_MAX_DIMS);
        return false;
    }
    e->ndim = nd;
    uint64_t numel = 1;
    bool overflow = false;
    int d = 0;
    for (const cJSON *s = shape->child; s; s = s->next, d++) {
        uint64_t v;
        if (!json_uint(s, &v)) {
            tk_set_error("%s: tensor '%s': shape entry %d is not a non-negative integer", path, name, d);
            return false;
        }
        e->shape[d] = (int64_t)v;
        if (v && numel > (UINT64_C(1) << 60) / v) overflow = true;
        numel *= v;
    }
    if (overflow || numel > (UINT64_C(1) << 60)) {
        tk_set_error("%s: tensor '%s': the shape is too large", path, name);
        return false;
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, &e->begin) ||
        !json_uint(offs->child->next, &e->end)) {
        tk_set_error("%s: tensor '%s': \"data_offsets\" must be two non-negative integers [begin, end]", path, name);
        return false;
    }
    if (e->end < e->begin) {
        tk_set_error("%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path, name,
                     (unsigned long long)e->begin, (unsigned long long)e->end);
        return false;
    }
    uint64_t bytes = numel * tk_dtype_size(e->dtype);
    if (e->end - e->begin != bytes) {
        char s[96];
        tk_tensor fake = { .ndim = e->ndim };
        memcpy(fake.shape, e->shape, sizeof fake.shape);
        tk_set_error("%s: tensor '%s': shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] hold %llu", path,
                     name, tk_shape_str(&fake, s, sizeof s), dtype->valuestring, (unsigned long long)bytes,
                     (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)(e->end - e->begin));
        return false;
    }
    return true;
}

/* Checks names are unique and data ranges lie in the file without overlapping. */
static bool check_layout(const char *path, entry *es, int32_t n, uint64_t data_start, uint64_t file_size) {
    uint64_t data_size = file_size - data_start;
    for (int32_t i = 0; i < n; i++) {
        if (es[i].end > data_size) {
            tk_set_error("%s: tensor '%s': data ends at byte %llu but the file has %llu bytes (truncated?)", path,
                         es[i].name, (unsigned long long)(data_start + es[i].end), (unsigned long long)file_size);
            return false;
        }
    }
    entry *sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
    if (!sorted) {
        tk_set_error("out of memory");
        return false;
    }
    memcpy(sorted, es, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_entry_name);
    for (int32_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1].name, sorted[i].name) == 0) {
            tk_set_error("%s: tensor '%s' appears twice in the header", path, sorted[i].name);
            free(sorted);
            return false;
        }
    }
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_entry_offset);
    const entry *last = NULL; /* the non-empty range that ends last so far */
    for (int32_t i = 0; i < n; i++) {
        const entry *e = &sorted[i];
        if (e->begin == e->end) continue;
        if (last && e->begin < last->end) {
            tk_set_error("%s: tensor '%s': data [%llu, %llu) overlaps tensor '%s' [%llu, %llu)", path, e->name,
                         (unsigned long long)e->begin, (unsigned long long)e->end, last->name,
                         (unsigned long long)last->begin, (unsigned long long)last->end);
            free(sorted);
            return false;
        }
        if (!last || e->end > last->end) last = e;
    }
    free(sorted);
    return true;
}

/* The parsed and checked header of a safetensors file. */
typedef struct layout {
    FILE *f;
    char *header;
    cJSON *root;
    const cJSON *meta;
    entry *es;
    int32_t n;
    uint64_t data_start;
} layout;

static void layout_free(layout *l) {
    free(l->es);
    cJSON_Delete(l->root);
    free(l->header);
    if (l->f) fclose(l->f);
    memset(l, 0, sizeof *l);
}

/* Opens path and reads and checks its whole header, no data: false with the error set
 * (and l freed). */
static bool read_layout(const char *path, layout *l) {
    memset(l, 0, sizeof *l);
    struct stat sb;
    FILE *f = l->f = tk_fopen_regular(path, &sb);
    if (!f) {
        tk_set_error("%s: cannot open: %s", path, tk_io_strerror(errno));
        return false;
    }
    uint64_t size = (uint64_t)sb.st_size;
    uint8_t len8[8];
    if (size < 8 || fread(len8, 1, 8, f) != 8) {
        tk_set_error("%s: the file has %llu bytes, too few for a safetensors header (truncated?)", path,
                     (unsigned long long)size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > size - 8) {
        tk_set_error("%s: the header length %llu is larger than the file (%llu bytes): truncated or not a "
                     "safetensors file",
                     path, (unsigned long long)hlen, (unsigned long long)size);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER) {
        tk_set_error("%s: the header length %llu is over the limit of %u bytes", path, (unsigned long long)hlen,
                     ST_MAX_HEADER);
        goto fail;
    }
    if (hlen < 2) {
        tk_set_error("%s: the header length %llu is too small for a JSON header", path, (unsigned long long)hlen);
        goto fail;
    }
    char *header = l->header = malloc((size_t)hlen + 1);
    if (!header) {
        tk_set_error("%s: out of memory reading the header", path);
        goto fail;
    }
    if (fread(header, 1, (size_t)hlen, f) != (size_t)hlen) {
        tk_set_error("%s: cannot read the header: %s", path, ferror(f) ? strerror(errno) : "the file is truncated");
        goto fail;
    }
    header[hlen] = '\0';
    {
        /* strict (tk_json_parse): "<path>: the header: invalid JSON at line 1 (byte B): why" */
        char what[TK_ERR_LEN];
        snprintf(what, sizeof what, "%s: the header", path);
        if (!(l->root = tk_json_parse(header, (size_t)hlen, what))) goto fail;
    }
    const cJSON *root = l->root;
    if (!cJSON_IsObject(root)) {
        tk_set_error("%s: the header must be a JSON object, got %s", path, tk_json_kind(root));
        goto fail;
    }
    int32_t n = 0;
    const cJSON *meta = NULL;
    for (const cJSON *o = root->child; o; o = o->next) {
        if (strcmp(o->string, "__metadata__") == 0) {
            if (meta) {
                tk_set_error("%s: \"__metadata__\" appears twice in the header", path);
                goto fail;
            }
            meta = o;
        } else {
            n++;
        }
    }
    if (meta) {
        if (!cJSON_IsObject(meta)) {
            tk_set_error("%s: \"__metadata__\" must be an object of strings, got %s", path, tk_json_kind(meta));
            goto fail;
        }
        for (const cJSON *m = meta->child; m; m = m->next) {
            if (!cJSON_IsString(m)) {
                tk_set_error("%s: metadata '%s' must be a string, got %s", path, m->string, tk_json_kind(m));
                goto fail;
            }
        }
    }
    l->meta = meta;
    entry *es = l->es = calloc((size_t)(n ? n : 1), sizeof *es);
    if (!es) {
        tk_set_error("out of memory");
        goto fail;
    }
    int32_t k = 0;
    for (const cJSON *o = root->child; o; o = o->next) {
        if (o == meta) continue;
        if (!read_entry(path, o, &es[k++])) goto fail;
    }
    l->n = n;
    l->data_start = 8 + hlen;
    if (!check_layout(path, es, n, l->data_start, size)) goto fail;
    return true;
fail:
    layout_free(l);
    return false;
}

void tk_safetensors_header_free(tk_safetensors_header *h) {
    if (!h) return;
    for (int32_t i = 0; i < h->n; i++) free(h->names[i]);
    free(h->names);
    free(h->dtypes);
    free(h->ndims);
    free(h->shapes);
    free(h);
}

tk_safetensors_header *tk_safetensors_read_header(const char *path) {
    if (!path) {
        tk_set_error("safetensors_read_header: path is NULL");
        return NULL;
    }
    layout l;
    if (!read_layout(path, &l)) return NULL;
    size_t m = (size_t)(l.n ? l.n : 1);
    tk_safetensors_header *h = calloc(1, sizeof *h);
    if (!h || !(h->names = calloc(m, sizeof *h->names)) || !(h->dtypes = calloc(m, sizeof *h->dtypes)) ||
        !(h->ndims = calloc(m, sizeof *h->ndims)) || !(h->shapes = calloc(m, sizeof *h->shapes))) {
        tk_set_error("out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < l.n; i++) {
        const entry *e = &l.es[i];
        if (!(h->names[i] = tk_strdup(e->name))) {
            tk_set_error("out of memory");
            goto fail;
        }
        h->n = i + 1;
        h->dtypes[i] = e->dtype;
        h->ndims[i] = e->ndim;
        memcpy(h->shapes[i], e->shape, sizeof h->shapes[i]);
    }
    layout_free(&l);
    return h;
fail:
    tk_safetensors_header_free(h);
    layout_free(&l);
    return NULL;
}

/* The safetensors file at path, or NULL with the error set. */
tk_safetensors *tk_safetensors_read(const char *path) {
    if (!path) {
        tk_set_error("safetensors_read: path is NULL");
        return NULL;
    }
    layout l;
    if (!read_layout(path, &l)) return NULL;
    tk_safetensors *out = NULL;
    FILE *f = l.f;
    const cJSON *meta = l.meta;
    const entry *es = l.es;
    int32_t n = l.n;
    uint64_t data_start = l.data_start;

    out = calloc(1, sizeof *out);
    if (!out || !(out->names = calloc((size_t)(n ? n : 1), sizeof *out->names)) ||
        !(out->tensors = calloc((size_t)(n ? n : 1), sizeof *out->tensors))) {
        tk_set_error("out of memory");
        goto fail;
    }
    if (meta && !(out->metadata_json = cJSON_PrintUnformatted(meta))) {
        tk_set_error("out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < n; i++) {
        const entry *e = &es[i];
        tk_tensor *t = tk_tensor_new(e->dtype, e->ndim, e->shape);
        char *name = tk_strdup(e->name);
        if (!t || !name) {
            tk_tensor_release(t);
            free(name);
            tk_set_error("%s: tensor '%s': out of memory", path, e->name);
            goto fail;
        }
        out->names[i] = name;
        out->tensors[i] = t;
        out->n = i + 1;
        size_t bytes = (size_t)(e->end - e->begin);
        if (bytes == 0) continue;
        if (fseeko(f, (off_t)(data_start + e->begin), SEEK_SET) != 0 || fread(t->data, 1, bytes, f) != bytes) {
            tk_set_error("%s: tensor '%s': cannot read its %zu bytes at byte %llu: %s", path, e->name, bytes,
                         (unsigned long long)(data_start + e->begin),
                         ferror(f) ? strerror(errno) : "the file is truncated");
            goto fail;
        }
    }
    goto done;
fail:
    if (out && out->metadata_json) {
        cJSON_free(out->metadata_json);
        out->metadata_json = NULL;
    }
    tk_safetensors_free(out);
    out = NULL;
done:
    if (out && out->metadata_json) { /* hand over as malloc'd memory (cJSON may use its own allocator) */
        char *m = tk_strdup(out->metadata_json);
        cJSON_free(out->metadata_json);
        out->metadata_json = m;
        if (!m) {
            tk_set_error("out of memory");
            tk_safetensors_free(out);
            out = NULL;
        }
    }
    layout_free(&l);
    return out;
}
