/* Data kernels: the row work of a data loader (select, join and shuffle rows, translate
 * and check ids) on heap tensors, without a context or gradients. They live in the core
 * so a C host batches its columns as the Lua Dataset does. */
#include "internal.h"

#include <stdio.h>

/* Bytes of one row (all dimensions after the first). */
static size_t row_bytes(const tk_tensor *t) {
    return (size_t)tk_shape_numel(t->ndim - 1, t->shape + 1) * tk_dtype_size(t->dtype);
}

tk_tensor *tk_index_select(const tk_tensor *t, int64_t n, const int64_t *idx) {
    if (!t || t->ndim < 1) {
        tk_set_error("index_select: the tensor must have at least 1 dimension%s", t ? ", got a scalar" : ", got NULL");
        return NULL;
    }
    if (n < 0 || (n > 0 && !idx)) {
        tk_set_error("index_select: %lld indices%s", (long long)n, n < 0 ? "" : " and no index array");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= t->shape[0]) {
            tk_set_error("index_select: index %lld out of range [0, %lld)", (long long)idx[i], (long long)t->shape[0]);
            return NULL;
        }
    }
    int64_t shape[TK_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = n;
    tk_tensor *out = tk_tensor_new(t->dtype, t->ndim, shape);
    if (!out) return NULL;
    size_t rb = row_bytes(t);
    for (int64_t i = 0; i < n; i++)
        memcpy((char *)out->data + (size_t)i * rb, (const char *)t->data + (size_t)idx[i] * rb, rb);
    return out;
}

tk_status tk_ragged_select(const tk_tensor *values, const tk_tensor *offsets, int64_t n, const int64_t *idx,
                           tk_tensor **values_out, tk_tensor **offsets_out) {
    *values_out = *offsets_out = NULL;
    char s[64];
    if (!values || values->ndim != 1) {
        tk_set_error("ragged_select: values must be 1-D [N], got %s",
                     values ? tk_shape_str(values, s, sizeof s) : "NULL");
        return TK_ERROR;
    }
    if (!offsets || offsets->dtype != TK_I64 || offsets->ndim != 1 || offsets->numel < 1) {
        tk_set_error("ragged_select: offsets must be int64 [rows + 1], got %s %s",
                     offsets ? tk_dtype_name(offsets->dtype) : "NULL",
                     offsets ? tk_shape_str(offsets, s, sizeof s) : "");
        return TK_ERROR;
    }
    if (n < 0 || (n > 0 && !idx)) {
        tk_set_error("ragged_select: %lld indices%s", (long long)n, n < 0 ? "" : " and no index array");
        return TK_ERROR;
    }
    /* only the selected rows' offsets are checked: a batch costs its rows, not the column */
    const int64_t *off = tk_i64(offsets);
    int64_t rows = offsets->numel - 1, total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= rows) {
            tk_set_error("ragged_select: index %lld out of range [0, %lld)", (long long)idx[i], (long long)rows);
            return TK_ERROR;
        }
        int64_t a = off[idx[i]], b = off[idx[i] + 1];
        if (a < 0 || b < a || b > values->numel) {
            tk_set_error("ragged_select: the offsets of row %lld (%lld to %lld) decrease or leave the %lld values",
                         (long long)idx[i], (long long)a, (long long)b, (long long)values->numel);
            return TK_ERROR;
        }
        total += b - a;
    }
    tk_tensor *ov = tk_tensor_new_1d(values->dtype, total), *oo = tk_tensor_new_1d(TK_I64, n + 1);
    if (!ov || !oo) {
        tk_tensor_release(ov);
        tk_tensor_release(oo);
        return TK_ERROR;
    }
    size_t es = tk_dtype_size(values->dtype);
    int64_t pos = 0;
    tk_i64(oo)[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = off[idx[i]], len = off[idx[i] + 1] - a;
        memcpy((char *)ov->data + (size_t)pos * es, (const char *)values->data + (size_t)a * es, (size_t)len * es);
        pos += len;
        tk_i64(oo)[i + 1] = pos;
    }
    *values_out = ov;
    *offsets_out = oo;
    return TK_OK;
}

tk_tensor *tk_cat_rows(int32_t n, const tk_tensor *const *ts) {
    if (n < 1 || !ts) {
        tk_set_error("cat_rows: at least one tensor is required");
        return NULL;
    }
    int64_t rows = 0;
    for (int32_t i = 0; i < n; i++) {
        const tk_tensor *t = ts[i];
        /* entries are numbered from 1, as in a Lua list of tensors */
        if (!t || t->ndim < 1) {
            tk_set_error("cat_rows: entry %d is not a tensor of rows (%s)", (int)i + 1, t ? "a scalar" : "NULL");
            return NULL;
        }
        if (t->dtype != ts[0]->dtype || t->ndim != ts[0]->ndim || row_bytes(t) != row_bytes(ts[0])) {
            tk_set_error("cat_rows: entry %d has another dtype or row shape than entry 1", (int)i + 1);
            return NULL;
        }
        rows += t->shape[0];
    }
    int64_t shape[TK_MAX_DIMS];
    memcpy(shape, ts[0]->shape, sizeof shape);
    shape[0] = rows;
    tk_tensor *out = tk_tensor_new(ts[0]->dtype, ts[0]->ndim, shape);
    if (!out) return NULL;
    size_t rb = row_bytes(ts[0]), pos = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t bytes = (size_t)ts[i]->shape[0] * rb;
        if (bytes) memcpy((char *)out->data + pos, ts[i]->data, bytes);
        pos += bytes;
    }
    return out;
}

tk_status tk_shuffle(tk_tensor *t, uint64_t seed) {
    if (!t || t->ndim != 1) {
        char s[64];
        tk_set_error("shuffle: a 1-D tensor is required, got %s", t ? tk_shape_str(t, s, sizeof s) : "NULL");
        return TK_ERROR;
    }
    /* xorshift64* on a scrambled seed: a fixed generator, so an order depends on the
     * seed alone (datasets shuffled with seed 3 are the same everywhere) */
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    size_t es = tk_dtype_size(t->dtype);
    char tmp[8];
    for (int64_t i = t->numel - 1; i > 0; i--) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        int64_t j = (int64_t)((s * 0x2545F4914F6CDD1DULL) % (uint64_t)(i + 1));
        char *a = (char *)t->data + (size_t)i * es, *b = (char *)t->data + (size_t)j * es;
        memcpy(tmp, a, es);
        memcpy(a, b, es);
        memcpy(b, tmp, es);
    }
    return TK_OK;
}

tk_tensor *tk_map_ids(const tk_tensor *idx, const tk_tensor *ids) {
    char s[64];
    if (!idx || idx->dtype != TK_I64) {
        tk_set_error("map_ids: the indices must be int64, got %s", idx ? tk_dtype_name(idx->dtype) : "NULL");
        return NULL;
    }
    if (!ids || ids->dtype != TK_I64 || ids->ndim != 1) {
        tk_set_error("map_ids: the ids must be int64 [n], got %s %s", ids ? tk_dtype_name(ids->dtype) : "NULL",
                     ids ? tk_shape_str(ids, s, sizeof s) : "");
        return NULL;
    }
    for (int64_t i = 0; i < idx->numel; i++) {
        int64_t j = tk_i64(idx)[i];
        if (j < -1 || j >= ids->numel) {
            tk_set_error("map_ids: index %lld out of range [0, %lld)", (long long)j, (long long)ids->numel);
            return NULL;
        }
    }
    tk_tensor *out = tk_tensor_new(TK_I64, idx->ndim, idx->shape);
    if (!out) return NULL;
    for (int64_t i = 0; i < idx->numel; i++) {
        int64_t j = tk_i64(idx)[i];
        tk_i64(out)[i] = j < 0 ? -1 : tk_i64(ids)[j];
    }
    return out;
}

tk_status tk_check_ids(const tk_tensor *ids, int64_t cardinality, const tk_tensor *offsets, int64_t *row, int64_t *id) {
    *row = *id = -1;
    if (!ids || ids->dtype != TK_I64) {
        tk_set_error("check_ids: the ids must be int64, got %s", ids ? tk_dtype_name(ids->dtype) : "NULL");
        return TK_ERROR;
    }
    if (offsets && tk_ragged_check("check_ids", ids, offsets) != TK_OK) return TK_ERROR;
    const int64_t *v = tk_i64(ids);
    int64_t n = ids->numel, bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (v[i] < 0 || v[i] >= cardinality) bad = i;
    if (bad < 0) return TK_OK;
    if (offsets) {
        /* the last row r with offsets[r] <= bad (rows with empty lists share offsets) */
        const int64_t *o = tk_i64(offsets);
        int64_t lo = 0, hi = offsets->numel - 1; /* the answer is in [lo, hi) */
        while (hi - lo > 1) {
            int64_t mid = lo + (hi - lo) / 2;
            if (o[mid] <= bad)
                lo = mid;
            else
                hi = mid;
        }
        *row = lo;
    } else {
        *row = ids->ndim > 1 && ids->shape[0] > 0 ? bad / (n / ids->shape[0]) : bad;
    }
    *id = v[bad];
    return TK_OK;
}
