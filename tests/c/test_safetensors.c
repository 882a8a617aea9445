/* safetensors: round trips, the exact byte layout, every malformed file, atomic writes. */
#include "io_test.h"

/* A file made of a header (padded to 8 with spaces) and data. */
static void write_raw(const char *path, const char *header, const void *data, size_t ndata) {
    size_t h = strlen(header), pad = (8 - h % 8) % 8, n = 8 + h + pad + ndata;
    unsigned char *b = malloc(n);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)(h + pad) >> (8 * i));
    memcpy(b + 8, header, h);
    memset(b + 8 + h, ' ', pad);
    if (ndata) memcpy(b + 8 + h + pad, data, ndata);
    io_write(path, b, n);
    free(b);
}

/* Reads path expecting failure with a message containing needle. */
static void expect_read_error(const char *path, const char *needle) {
    tk_safetensors *st = tk_safetensors_read(path);
    TK_CHECK_MSG(st == NULL, "reading %s should fail (%s)", path, needle);
    tk_safetensors_free(st);
    TK_CHECK_ERROR(tk_last_error(), needle);
    TK_CHECK_ERROR(tk_last_error(), path);
}

static void test_round_trip(void) {
    int64_t s2[2] = { 3, 4 }, s1 = 5;
    tk_tensor *a = tk_test_randn(2, s2, 1.0f, 7);
    tk_tensor *b = tk_tensor_new(TK_I64, 1, &s1);
    for (int64_t i = 0; i < 5; i++) tk_i64(b)[i] = (i - 2) * 1000000000000LL;
    tk_tensor *c = tk_tensor_new(TK_F32, 0, NULL); /* a scalar */
    tk_f32(c)[0] = 3.25f;
    tk_tensor *d = tk_tensor_new(TK_I64, 0, NULL);
    tk_i64(d)[0] = -9;
    int64_t s0[2] = { 0, 3 };
    tk_tensor *e = tk_tensor_new(TK_F32, 2, s0); /* empty */
    const char *names[5] = { "query/mlp/dense_0/kernel", "ids", "scale", "step", "empty" };
    tk_tensor *ts[5] = { a, b, c, d, e };
    const char *path = io_path("round.safetensors");
    TK_CHECK(tk_safetensors_write(path, 5, names, ts, "{\"format\":\"towerkit\",\"note\":\"caf\\u00e9 \\\"q\\\"\"}") ==
             TK_OK);
    tk_safetensors *st = tk_safetensors_read(path);
    TK_CHECK_MSG(st != NULL, "%s", tk_last_error());
    if (st) {
        TK_CHECK(st->n == 5);
        for (int i = 0; i < 5 && i < st->n; i++) {
            TK_CHECK(strcmp(st->names[i], names[i]) == 0); /* header order */
            tk_tensor *t = st->tensors[i];
            TK_CHECK(t->dtype == ts[i]->dtype && tk_tensor_same_shape(t, ts[i]));
            TK_CHECK(t->flags & TK_TENSOR_HEAP);
            TK_CHECK(memcmp(t->data, ts[i]->data, (size_t)t->numel * tk_dtype_size(t->dtype)) == 0); /* raw bytes */
        }
        TK_CHECK(st->tensors[2]->ndim == 0 && st->tensors[2]->numel == 1);
        TK_CHECK_MSG(st->metadata_json &&
                         strcmp(st->metadata_json, "{\"format\":\"towerkit\",\"note\":\"caf\xc3\xa9 \\\"q\\\"\"}") == 0,
                     "%s", st->metadata_json ? st->metadata_json : "(null)");
    }
    tk_safetensors_free(st);
    /* no metadata, no tensors */
    TK_CHECK(tk_safetensors_write(path, 0, NULL, NULL, NULL) == TK_OK);
    st = tk_safetensors_read(path);
    TK_CHECK(st && st->n == 0 && st->metadata_json == NULL);
    tk_safetensors_free(st);
    size_t len;
    char *bytes = io_read(path, &len);
    TK_CHECK(bytes && len == 16 && memcmp(bytes + 8, "{}      ", 8) == 0);
    free(bytes);
    /* bad arguments */
    const char *dup[2] = { "x", "x" };
    tk_tensor *two[2] = { a, b };
    TK_CHECK(tk_safetensors_write(path, 2, dup, two, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "'x' is given twice");
    const char *meta[1] = { "__metadata__" };
    TK_CHECK(tk_safetensors_write(path, 1, meta, two, NULL) == TK_ERROR);
    TK_CHECK(tk_safetensors_write(path, 1, names, two, "{\"a\":1}") == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "metadata value 'a' must be a string");
    TK_CHECK(tk_safetensors_write(path, 1, names, two, "[1]") == TK_ERROR);
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
    for (int i = 0; i < 5; i++) tk_tensor_release(ts[i]);
}

/* The layout byte for byte, as the reference writer makes it: compact JSON header
 * padded with spaces to a multiple of 8, data in header order. */
static void test_exact_bytes(void) {
    tk_tensor *a = tk_tensor_new_1d(TK_F32, 2);
    tk_f32(a)[0] = 1.0f;
    tk_f32(a)[1] = -2.0f;
    tk_tensor *b = tk_tensor_new(TK_I64, 0, NULL);
    tk_i64(b)[0] = 7;
    const char *names[2] = { "a", "b" };
    tk_tensor *ts[2] = { a, b };
    const char *path = io_path("exact.safetensors");
    TK_CHECK(tk_safetensors_write(path, 2, names, ts, "{\"format\":\"pt\"}") == TK_OK);
    static const char header[] = "{\"__metadata__\":{\"format\":\"pt\"},"
                                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                 "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}"
                                 "      "; /* 138 + 6 = 144 bytes */
    unsigned char want[8 + 144 + 16];
    static const unsigned char len8[8] = { 0x90, 0, 0, 0, 0, 0, 0, 0 };
    static const unsigned char data[16] = { 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, /* 1.0f, -2.0f */
                                            0x07, 0,    0,    0,    0,    0,    0,    0 };  /* 7 */
    TK_CHECK(sizeof header - 1 == 144);
    memcpy(want, len8, 8);
    memcpy(want + 8, header, 144);
    memcpy(want + 152, data, 16);
    size_t len = 0;
    char *got = io_read(path, &len);
    TK_CHECK_MSG(got && len == sizeof want, "length %zu", len);
    if (got && len == sizeof want) {
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)got[i] != want[i]) {
                TK_CHECK_MSG(false, "byte %zu: got 0x%02x, want 0x%02x", i, (unsigned char)got[i], want[i]);
                break;
            }
        }
    }
    free(got);
    /* and a hand-made file is read */
    write_raw(path, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]}}", data, 8);
    tk_safetensors *st = tk_safetensors_read(path);
    TK_CHECK(st && st->n == 1 && st->tensors[0]->ndim == 2 && tk_f32(st->tensors[0])[1] == -2.0f); /* raw bytes */
    tk_safetensors_free(st);
    tk_tensor_release(a);
    tk_tensor_release(b);
}

static void test_truncated(void) {
    int64_t s[2] = { 32, 40 }; /* 5120 bytes of data */
    tk_tensor *k = tk_test_randn(2, s, 1.0f, 1);
    tk_tensor *bias = tk_tensor_new_1d(TK_F32, 40);
    const char *names[2] = { "query/mlp/dense_0/kernel", "query/mlp/dense_0/bias" };
    tk_tensor *ts[2] = { k, bias };
    const char *good = io_path("good.safetensors"), *cut = io_path("cut.safetensors");
    TK_CHECK(tk_safetensors_write(good, 2, names, ts, NULL) == TK_OK);
    size_t len = 0;
    char *bytes = io_read(good, &len);
    size_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (size_t)(unsigned char)bytes[i] << (8 * i);
    size_t data_start = 8 + hlen;
    TK_CHECK(len == data_start + 5120 + 160);

    io_write(cut, bytes, 0);
    expect_read_error(cut, "the file has 0 bytes, too few for a safetensors header");
    io_write(cut, bytes, 5);
    expect_read_error(cut, "the file has 5 bytes");
    io_write(cut, bytes, 8);
    expect_read_error(cut, "header length");
    expect_read_error(cut, "is larger than the file (8 bytes)");
    io_write(cut, bytes, 8 + hlen / 2);
    expect_read_error(cut, "is larger than the file");
    io_write(cut, bytes, data_start); /* header complete, no data */
    expect_read_error(cut, "tensor 'query/mlp/dense_0/kernel': data ends at byte");
    expect_read_error(cut, "(truncated?)");
    io_write(cut, bytes, data_start + 4096);
    char want[256];
    snprintf(want, sizeof want,
             "%s: tensor 'query/mlp/dense_0/kernel': data ends at byte %zu but the file has %zu bytes (truncated?)",
             cut, data_start + 5120, data_start + 4096);
    tk_safetensors *st = tk_safetensors_read(cut);
    TK_CHECK(st == NULL);
    TK_CHECK_MSG(strcmp(tk_last_error(), want) == 0, "got \"%s\"\nwant \"%s\"", tk_last_error(), want);
    io_write(cut, bytes, len - 1); /* the last tensor loses one byte */
    expect_read_error(cut, "tensor 'query/mlp/dense_0/bias': data ends at byte");
    /* the whole file still reads */
    st = tk_safetensors_read(good);
    TK_CHECK(st && st->n == 2);
    tk_safetensors_free(st);
    expect_read_error(io_path("missing.safetensors"), "cannot open: No such file or directory");
    free(bytes);
    tk_tensor_release(k);
    tk_tensor_release(bias);
}

static void test_malformed_header(void) {
    const char *p = io_path("bad.safetensors");
    float data[4] = { 1, 2, 3, 4 };
    /* corrupt JSON */
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]", data, 16);
    expect_read_error(p, "the header: invalid JSON at line 1");
    write_raw(p, "{\"x\":{\"dtype\":\"F32\" \"shape\":[4],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "the header: invalid JSON at line 1 (byte 21)");
    /* what cJSON lets through: leading zeros, a NUL in a name */
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[04],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "the header: invalid JSON at line 1 (byte 30): a number with a leading zero");
    write_raw(p, "{\"x\\u0000y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "the header: invalid JSON at line 1 (byte 4): a string holds a NUL character (\\u0000)");
    write_raw(p, "[1, 2]", data, 16);
    expect_read_error(p, "the header must be a JSON object, got an array");
    write_raw(p, "{} x", data, 16);
    expect_read_error(p, "the header: invalid JSON at line 1 (byte 4): text after the JSON value");
    /* dtype */
    write_raw(p, "{\"x\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "tensor 'x': dtype 'F16' is not supported (towerkit reads F32 and I64)");
    write_raw(p, "{\"x\":{\"dtype\":\"Q7\",\"shape\":[8],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "dtype 'Q7' is not supported");
    write_raw(p, "{\"x\":{\"dtype\":3,\"shape\":[8],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "tensor 'x': \"dtype\" must be a string");
    /* shape and offsets disagree */
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "tensor 'x': shape [3] of F32 needs 12 bytes but data_offsets [0, 16] hold 16");
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "shape entry 0 is not a non-negative integer");
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,4],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "tensor 'x' has 5 dimensions");
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", data, 16);
    expect_read_error(p, "end before they begin");
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}", data, 16);
    expect_read_error(p, "\"data_offsets\" must be two non-negative integers");
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", data, 16);
    expect_read_error(p, "the shape is too large");
    /* overlapping and out-of-file offsets */
    write_raw(p,
              "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              data, 16);
    expect_read_error(p, "tensor 'y': data [4, 12) overlaps tensor 'x' [0, 8)");
    write_raw(p,
              "{\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
              data, 16);
    expect_read_error(p, "overlaps tensor 'y' [0, 16)");
    write_raw(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", data, 16);
    expect_read_error(p, "tensor 'x': data ends at byte");
    /* duplicate names */
    write_raw(p,
              "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
              data, 16);
    expect_read_error(p, "tensor 'x' appears twice in the header");
    /* metadata */
    write_raw(p, "{\"__metadata__\":{\"a\":1}}", NULL, 0);
    expect_read_error(p, "metadata 'a' must be a string, got a number");
    write_raw(p, "{\"__metadata__\":[\"a\"]}", NULL, 0);
    expect_read_error(p, "\"__metadata__\" must be an object of strings");
    /* entries that are not objects */
    write_raw(p, "{\"x\":[1,2]}", NULL, 0);
    expect_read_error(p, "tensor 'x': the header entry must be an object, got an array");
    /* huge header lengths */
    unsigned char huge[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}' };
    io_write(p, huge, sizeof huge);
    expect_read_error(p, "the header length 18446744073709551615 is larger than the file (16 bytes)");
    unsigned char big[16] = { 0x00, 0x00, 0x00, 0x80, 0, 0, 0, 0, '{', '}' };
    io_write(p, big, sizeof big);
    expect_read_error(p, "the header length 2147483648 is larger than the file");
    /* a directory is not a file */
    expect_read_error(io_dir, "cannot open: Is a directory");
}

typedef struct st_write {
    const char *path;
    tk_tensor *t;
} st_write;

static tk_status write_one(void *ud) {
    st_write *w = ud;
    const char *names[1] = { "t" };
    return tk_safetensors_write(w->path, 1, names, &w->t, NULL);
}

/* The writer goes through the atomic files (tests/c/test_atomic.c tests them): a disk
 * that fills up in the middle leaves no temporary file and the old file as it was. */
/* A FIFO is refused at once: opened without O_NONBLOCK it would wait for a writer. */
static void test_not_a_regular_file(void) {
    const char *p = io_path("fifo.safetensors");
    io_fifo(p);
    TK_CHECK(tk_safetensors_read(p) == NULL);
    io_no_alarm();
    TK_CHECK_ERROR(tk_last_error(), "fifo.safetensors: cannot open: not a regular file");
    unlink(p);
}

static void test_atomic_failures(void) {
    st_write small = { io_path("keep.safetensors"), tk_tensor_new_1d(TK_F32, 3) };
    TK_CHECK(write_one(&small) == TK_OK);
    size_t len0 = 0;
    char *before = io_read(small.path, &len0);
    st_write large = { small.path, tk_tensor_new_1d(TK_F32, 1 << 16) };
    TK_CHECK(io_with_size_limit(4096, write_one, &large) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), small.path);
    TK_CHECK_ERROR(tk_last_error(), "File too large");
    TK_CHECK(before && io_same(small.path, before, len0));
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
    free(before);
    tk_tensor_release(large.t);
    tk_tensor_release(small.t);
}

int main(void) {
    io_tmpdir("tk-safetensors");
    TK_RUN(test_round_trip);
    TK_RUN(test_exact_bytes);
    TK_RUN(test_truncated);
    TK_RUN(test_malformed_header);
    TK_RUN(test_atomic_failures);
    TK_RUN(test_not_a_regular_file);
    io_remove_tree(io_dir);
    return tk_test_summary();
}
