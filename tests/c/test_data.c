/* Data kernels: index_select, ragged_select, cat_rows, shuffle, map_ids, check_ids. */
#include "tk_test.h"

static tk_tensor *ids(int64_t n, const int64_t *v) {
    tk_tensor *t = tk_tensor_new_1d(TK_I64, n);
    if (t && n) memcpy(t->data, v, (size_t)n * sizeof *v);
    return t;
}

static bool same_i64(const tk_tensor *t, int64_t n, const int64_t *want) {
    return t && t->dtype == TK_I64 && t->numel == n && memcmp(t->data, want, (size_t)n * sizeof *want) == 0;
}

static void test_index_select(void) {
    const float v[6] = { 1, 2, 3, 4, 5, 6 };
    int64_t shape[2] = { 3, 2 };
    tk_tensor *m = tk_test_tensor(2, shape, v);
    const int64_t idx[4] = { 2, 0, 2, 1 };
    tk_tensor *out = tk_index_select(m, 4, idx);
    const float want[8] = { 5, 6, 1, 2, 5, 6, 3, 4 };
    TK_CHECK(out && out->ndim == 2 && out->shape[0] == 4 && out->shape[1] == 2 &&
             memcmp(out->data, want, sizeof want) == 0);
    TK_CHECK(out && (out->flags & TK_TENSOR_HEAP));
    tk_tensor_release(out);
    /* no rows: an empty [0, 2] */
    out = tk_index_select(m, 0, NULL);
    TK_CHECK(out && out->shape[0] == 0 && out->shape[1] == 2);
    tk_tensor_release(out);
    const int64_t far[2] = { 0, 3 }, neg[1] = { -1 };
    TK_CHECK(tk_index_select(m, 2, far) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "index_select: index 3 out of range [0, 3)");
    TK_CHECK(tk_index_select(m, 1, neg) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "index_select: index -1 out of range [0, 3)");
    TK_CHECK(tk_index_select(m, -1, idx) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "index_select: -1 indices");
    tk_tensor *scalar = tk_tensor_new(TK_F32, 0, NULL);
    TK_CHECK(tk_index_select(scalar, 1, idx) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "index_select: the tensor must have at least 1 dimension, got a scalar");
    tk_tensor_release(scalar);
    tk_tensor_release(m);
}

static void test_ragged_select(void) {
    /* rows {1, 2}, {}, {7}, {4, 5, 6} */
    const int64_t v[6] = { 1, 2, 7, 4, 5, 6 }, o[5] = { 0, 2, 2, 3, 6 };
    tk_tensor *vals = ids(6, v), *offs = ids(5, o), *ov, *oo;
    const int64_t idx[4] = { 3, 1, 0, 3 };
    TK_CHECK(tk_ragged_select(vals, offs, 4, idx, &ov, &oo) == TK_OK);
    const int64_t want_v[8] = { 4, 5, 6, 1, 2, 4, 5, 6 }, want_o[5] = { 0, 3, 3, 5, 8 };
    TK_CHECK(same_i64(ov, 8, want_v) && same_i64(oo, 5, want_o));
    tk_tensor_release(ov);
    tk_tensor_release(oo);
    /* float values keep their dtype */
    tk_tensor *fv = tk_tensor_new_1d(TK_F32, 6);
    const int64_t one[1] = { 2 };
    TK_CHECK(tk_ragged_select(fv, offs, 1, one, &ov, &oo) == TK_OK && ov->dtype == TK_F32 && ov->numel == 1);
    tk_tensor_release(ov);
    tk_tensor_release(oo);
    /* errors: both outs NULL */
    const int64_t far[1] = { 4 };
    TK_CHECK(tk_ragged_select(vals, offs, 1, far, &ov, &oo) == TK_ERROR && !ov && !oo);
    TK_CHECK_ERROR(tk_last_error(), "ragged_select: index 4 out of range [0, 4)");
    TK_CHECK(tk_ragged_select(vals, fv, 1, one, &ov, &oo) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "ragged_select: offsets must be int64 [rows + 1], got float32 [6]");
    const int64_t down[3] = { 0, 4, 2 }, over[3] = { 0, 2, 9 };
    tk_tensor *dec = ids(3, down), *big = ids(3, over);
    const int64_t row1[1] = { 1 }, row0[1] = { 0 };
    TK_CHECK(tk_ragged_select(vals, dec, 1, row1, &ov, &oo) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "ragged_select: the offsets of row 1 (4 to 2) decrease or leave the 6 values");
    TK_CHECK(tk_ragged_select(vals, big, 1, row1, &ov, &oo) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "the offsets of row 1 (2 to 9)");
    /* only the selected rows are read */
    TK_CHECK(tk_ragged_select(vals, big, 1, row0, &ov, &oo) == TK_OK);
    tk_tensor_release(ov);
    tk_tensor_release(oo);
    tk_tensor *mat = tk_tensor_new_2d(TK_I64, 3, 2);
    TK_CHECK(tk_ragged_select(mat, offs, 1, row0, &ov, &oo) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "ragged_select: values must be 1-D [N], got [3, 2]");
    tk_tensor *t[] = { vals, offs, fv, dec, big, mat };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) tk_tensor_release(t[i]);
}

static void test_cat_rows(void) {
    int64_t s2[2] = { 2, 3 }, s1[2] = { 1, 3 }, s4[2] = { 1, 4 };
    const float a[6] = { 1, 2, 3, 4, 5, 6 }, b[3] = { 7, 8, 9 };
    tk_tensor *ta = tk_test_tensor(2, s2, a), *tb = tk_test_tensor(2, s1, b), *tw = tk_test_tensor(2, s4, NULL);
    tk_tensor *ti = tk_tensor_new(TK_I64, 2, s1);
    const tk_tensor *ab[2] = { ta, tb };
    tk_tensor *out = tk_cat_rows(2, ab);
    const float want[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    TK_CHECK(out && out->shape[0] == 3 && out->shape[1] == 3 && memcmp(out->data, want, sizeof want) == 0);
    tk_tensor_release(out);
    const tk_tensor *mixed[2] = { ta, ti }, *wide[2] = { ta, tw }, *hole[2] = { ta, NULL };
    TK_CHECK(tk_cat_rows(2, mixed) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "cat_rows: entry 2 has another dtype or row shape than entry 1");
    TK_CHECK(tk_cat_rows(2, wide) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "cat_rows: entry 2 has another dtype or row shape than entry 1");
    TK_CHECK(tk_cat_rows(2, hole) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "cat_rows: entry 2 is not a tensor of rows (NULL)");
    TK_CHECK(tk_cat_rows(0, ab) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "cat_rows: at least one tensor is required");
    tk_tensor_release(ta);
    tk_tensor_release(tb);
    tk_tensor_release(tw);
    tk_tensor_release(ti);
}

static void test_shuffle(void) {
    const int64_t v[10] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    tk_tensor *a = ids(10, v), *b = ids(10, v), *c = ids(10, v);
    TK_CHECK(tk_shuffle(a, 3) == TK_OK && tk_shuffle(b, 3) == TK_OK && tk_shuffle(c, 4) == TK_OK);
    TK_CHECK(memcmp(a->data, b->data, sizeof v) == 0); /* the seed decides */
    TK_CHECK(memcmp(a->data, c->data, sizeof v) != 0);
    TK_CHECK(memcmp(a->data, v, sizeof v) != 0);
    int64_t seen = 0; /* a permutation */
    for (int i = 0; i < 10; i++) seen |= (int64_t)1 << tk_i64(a)[i];
    TK_CHECK(seen == 0x3ff);
    tk_tensor *m = tk_tensor_new_2d(TK_F32, 2, 2);
    TK_CHECK(tk_shuffle(m, 1) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "shuffle: a 1-D tensor is required, got [2, 2]");
    tk_tensor_release(a);
    tk_tensor_release(b);
    tk_tensor_release(c);
    tk_tensor_release(m);
}

static void test_map_ids(void) {
    const int64_t item[3] = { 100, 200, 300 }, ix[4] = { 2, -1, 0, 0 };
    tk_tensor *items = ids(3, item), *idx = tk_tensor_new_2d(TK_I64, 2, 2);
    memcpy(idx->data, ix, sizeof ix);
    tk_tensor *out = tk_map_ids(idx, items);
    const int64_t want[4] = { 300, -1, 100, 100 };
    TK_CHECK(same_i64(out, 4, want) && out->ndim == 2 && out->shape[1] == 2);
    tk_tensor_release(out);
    tk_i64(idx)[3] = 3;
    TK_CHECK(tk_map_ids(idx, items) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "map_ids: index 3 out of range [0, 3)");
    tk_i64(idx)[3] = -2;
    TK_CHECK(tk_map_ids(idx, items) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "map_ids: index -2 out of range [0, 3)");
    tk_tensor *f = tk_tensor_new_1d(TK_F32, 3);
    TK_CHECK(tk_map_ids(f, items) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "map_ids: the indices must be int64, got float32");
    TK_CHECK(tk_map_ids(items, f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "map_ids: the ids must be int64 [n], got float32 [3]");
    tk_tensor_release(items);
    tk_tensor_release(idx);
    tk_tensor_release(f);
}

static void test_check_ids(void) {
    const int64_t v[5] = { 1, 3, 12, 0, 2 };
    tk_tensor *t = ids(5, v);
    int64_t row, id;
    TK_CHECK(tk_check_ids(t, 13, NULL, &row, &id) == TK_OK && row == -1 && id == -1);
    TK_CHECK(tk_check_ids(t, 10, NULL, &row, &id) == TK_OK && row == 2 && id == 12);
    TK_CHECK(tk_check_ids(t, 3, NULL, &row, &id) == TK_OK && row == 1 && id == 3);
    /* [rows, k] ids: the row of the entry */
    tk_tensor *m = tk_tensor_new_2d(TK_I64, 2, 2);
    tk_i64(m)[3] = -1;
    TK_CHECK(tk_check_ids(m, 5, NULL, &row, &id) == TK_OK && row == 1 && id == -1);
    /* a list column: rows {1, 3}, {}, {12, 0}, {2}; the row whose list holds the id */
    const int64_t o[5] = { 0, 2, 2, 4, 5 };
    tk_tensor *offs = ids(5, o);
    TK_CHECK(tk_check_ids(t, 10, offs, &row, &id) == TK_OK && row == 2 && id == 12);
    TK_CHECK(tk_check_ids(t, 3, offs, &row, &id) == TK_OK && row == 0 && id == 3);
    TK_CHECK(tk_check_ids(t, 13, offs, &row, &id) == TK_OK && row == -1);
    /* bad arguments */
    tk_tensor *f = tk_tensor_new_1d(TK_F32, 2);
    TK_CHECK(tk_check_ids(f, 3, NULL, &row, &id) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "check_ids: the ids must be int64, got float32");
    const int64_t short_o[3] = { 0, 2, 4 };
    tk_tensor *so = ids(3, short_o);
    TK_CHECK(tk_check_ids(t, 3, so, &row, &id) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "check_ids: offsets must end at the number of values (5), got 4");
    TK_CHECK(tk_check_ids(t, 3, f, &row, &id) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "check_ids: offsets must be int64 [B + 1], got float32 [2]");
    tk_tensor *all[] = { t, m, offs, f, so };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) tk_tensor_release(all[i]);
}

int main(void) {
    TK_RUN(test_index_select);
    TK_RUN(test_ragged_select);
    TK_RUN(test_cat_rows);
    TK_RUN(test_shuffle);
    TK_RUN(test_map_ids);
    TK_RUN(test_check_ids);
    return tk_test_summary();
}
