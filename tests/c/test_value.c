/* Values: ragged feature names, tk_value_set_ragged / tk_value_get_ragged, tk_ragged_check. */
#include "tk_test.h"

/* A heap I64 [n] tensor of the given values. */
static tk_tensor *ids(int64_t n, const int64_t *v) {
    tk_tensor *t = tk_tensor_new_1d(TK_I64, n);
    if (t && n) memcpy(t->data, v, (size_t)n * sizeof *v);
    return t;
}

static void test_ragged_names(void) {
    size_t len = 99;
    TK_CHECK(tk_ragged_name_split("genres__values", &len) == TK_RAGGED_VALUES && len == 6);
    TK_CHECK(tk_ragged_name_split("genres__offsets", &len) == TK_RAGGED_OFFSETS && len == 6);
    TK_CHECK(tk_ragged_name_split("genres", &len) == TK_RAGGED_NONE && len == 6);
    TK_CHECK(tk_ragged_name_split("a__values__offsets", &len) == TK_RAGGED_OFFSETS && len == 9);
    /* a bare suffix names no feature; a suffix inside a name is not one */
    TK_CHECK(tk_ragged_name_split("__values", &len) == TK_RAGGED_NONE && len == 8);
    TK_CHECK(tk_ragged_name_split("x__valuesy", NULL) == TK_RAGGED_NONE);
    TK_CHECK(tk_ragged_name_split("", &len) == TK_RAGGED_NONE && len == 0);

    char buf[32];
    TK_CHECK(tk_ragged_name_join("genres", TK_RAGGED_VALUES, buf, sizeof buf) == 14 &&
             strcmp(buf, "genres__values") == 0);
    TK_CHECK(tk_ragged_name_join("genres", TK_RAGGED_OFFSETS, buf, sizeof buf) == 15 &&
             strcmp(buf, "genres__offsets") == 0);
    TK_CHECK(tk_ragged_name_join("genres", TK_RAGGED_NONE, buf, sizeof buf) == 6 && strcmp(buf, "genres") == 0);
    /* as snprintf: the length it needs, a cut name, or only the length */
    TK_CHECK(tk_ragged_name_join("genres", TK_RAGGED_OFFSETS, buf, 8) == 15 && strcmp(buf, "genres_") == 0);
    TK_CHECK(tk_ragged_name_join("genres", TK_RAGGED_VALUES, NULL, 0) == 14);
    /* the two are inverses */
    for (int p = TK_RAGGED_NONE; p <= TK_RAGGED_OFFSETS; p++) {
        tk_ragged_name_join("user_tags", (tk_ragged_part)p, buf, sizeof buf);
        TK_CHECK(tk_ragged_name_split(buf, &len) == (tk_ragged_part)p && len == strlen("user_tags"));
    }
}

static void test_ragged_check(void) {
    const int64_t v[4] = { 3, 1, 4, 1 }, good[3] = { 0, 3, 4 }, late[3] = { 1, 3, 4 }, down[4] = { 0, 3, 2, 4 },
                  shrt[3] = { 0, 3, 3 };
    tk_tensor *vals = ids(4, v), *ok = ids(3, good), *bad_start = ids(3, late), *dec = ids(4, down),
              *bad_end = ids(3, shrt);
    tk_tensor *fv = tk_tensor_new_1d(TK_F32, 4), *fo = tk_tensor_new_1d(TK_F32, 3),
              *mat = tk_tensor_new_2d(TK_I64, 2, 2), *empty = tk_tensor_new_1d(TK_I64, 0);
    TK_CHECK(tk_ragged_check("feature 'g'", vals, ok) == TK_OK);
    TK_CHECK(tk_ragged_check("feature 'g'", fv, ok) == TK_OK); /* values of any dtype */
    const struct {
        const tk_tensor *values, *offsets;
        const char *message;
    } bad[] = {
        { vals, bad_start, "feature 'g': offsets must start at 0, got 1" },
        { vals, dec, "feature 'g': offsets must not decrease, got 3 then 2 at row 1" },
        { vals, bad_end, "feature 'g': offsets must end at the number of values (4), got 3" },
        { vals, fo, "feature 'g': offsets must be int64 [B + 1], got float32 [3]" },
        { vals, empty, "feature 'g': offsets must be int64 [B + 1], got int64 [0]" },
        { mat, ok, "feature 'g': values must be 1-D [N], got int64 [2, 2]" },
        { NULL, ok, "feature 'g': values is NULL" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        TK_CHECK(tk_ragged_check("feature 'g'", bad[i].values, bad[i].offsets) == TK_ERROR);
        TK_CHECK_ERROR(tk_last_error(), bad[i].message);
    }
    tk_tensor *t[] = { vals, ok, bad_start, dec, bad_end, fv, fo, mat, empty };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) tk_tensor_release(t[i]);
}

static void test_value_ragged(void) {
    const int64_t v[3] = { 1, 2, 7 }, o[3] = { 0, 2, 3 }, bad[3] = { 0, 2, 5 };
    tk_tensor *vals = ids(3, v), *offs = ids(3, o), *bad_offs = ids(3, bad), *got_v, *got_o;
    tk_ctx *ctx = tk_ctx_new(1);
    tk_value *x = tk_value_table(ctx);
    TK_CHECK(tk_value_set_ragged(ctx, x, "tags", vals, offs) == TK_OK);
    TK_CHECK(tk_value_set(ctx, x, "user_id", vals) == TK_OK);
    TK_CHECK(tk_value_get_ragged(x, "tags", &got_v, &got_o) && got_v == vals && got_o == offs);
    /* stored as two entries named by tk_ragged_name_join: what checkpoints and Lua see */
    char name[32];
    tk_ragged_name_join("tags", TK_RAGGED_OFFSETS, name, sizeof name);
    TK_CHECK(x->n == 3 && tk_value_get(x, name) == offs);
    /* a plain entry, an absent feature, a prefix of a feature are not ragged ones */
    TK_CHECK(!tk_value_get_ragged(x, "user_id", &got_v, &got_o) && !got_v && !got_o);
    TK_CHECK(!tk_value_get_ragged(x, "tag", &got_v, &got_o) && !got_v && !got_o);
    TK_CHECK(!tk_value_get_ragged(tk_value_of(ctx, vals), "tags", &got_v, &got_o));
    /* half a feature: the half that is there */
    tk_value *half = tk_value_table(ctx);
    tk_ragged_name_join("tags", TK_RAGGED_VALUES, name, sizeof name);
    tk_value_set(ctx, half, name, vals);
    TK_CHECK(!tk_value_get_ragged(half, "tags", &got_v, &got_o) && got_v == vals && !got_o);
    /* setting again replaces both entries */
    tk_ctx_reset(ctx);
    x = tk_value_table(ctx);
    TK_CHECK(tk_value_set_ragged(ctx, x, "tags", vals, offs) == TK_OK);
    TK_CHECK(tk_value_set_ragged(ctx, x, "tags", offs, offs) == TK_OK);
    TK_CHECK(x->n == 2 && tk_value_get_ragged(x, "tags", &got_v, &got_o) && got_v == offs);
    /* bad input leaves the value as it was, with a message naming the feature */
    TK_CHECK(tk_value_set_ragged(ctx, x, "genres", vals, bad_offs) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "feature 'genres': offsets must end at the number of values (3), got 5");
    TK_CHECK(x->n == 2);
    tk_ctx_reset(ctx);
    TK_CHECK(tk_value_set_ragged(ctx, x, "genres", vals, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "feature 'genres': offsets is NULL");
    tk_ctx_reset(ctx);
    TK_CHECK(tk_value_set_ragged(ctx, tk_value_of(ctx, vals), "genres", vals, offs) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "value_set_ragged: cannot set feature 'genres' of a single-tensor value");
    tk_ctx_free(ctx);
    tk_tensor_release(vals);
    tk_tensor_release(offs);
    tk_tensor_release(bad_offs);
}

int main(void) {
    TK_RUN(test_ragged_names);
    TK_RUN(test_ragged_check);
    TK_RUN(test_value_ragged);
    return tk_test_summary();
}
