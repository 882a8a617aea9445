/* CSV: typed columns, lists, quotes, line endings, every bad file and cell with its
 * message (tables of cases run by one loop), chunked reads, edge files, the float
 * formatter and the embeddings writer. */
#include "io_test.h"

#include "internal.h" /* tk_format_f32 */

static const tk_column_spec SPECS3[3] = { { .name = "user_id", .type = TK_COL_INT64 },
                                          { .name = "rating", .type = TK_COL_FLOAT32 },
                                          { .name = "history", .type = TK_COL_INT64_LIST } };

/* Reads every row of path with specs; NULL (and the error) on failure. */
static tk_columns *read_all(const char *path, int32_t n, const tk_column_spec *specs) {
    tk_csv_reader *r = tk_csv_open(path, n, specs);
    if (!r) return NULL;
    tk_columns *c = tk_csv_next(r, 0);
    tk_csv_close(r);
    return c;
}

/* The error of reading text as a file with specs (empty string if it reads). */
static const char *read_error(const char *text, int32_t n, const tk_column_spec *specs) {
    const char *p = io_path("err.csv");
    io_write_text(p, text);
    tk_columns *c = read_all(p, n, specs);
    if (c) {
        tk_columns_free(c);
        return "";
    }
    return tk_last_error();
}

static bool i64_eq(const tk_tensor *t, int64_t n, const int64_t *want) {
    if (!t || t->dtype != TK_I64 || t->ndim != 1 || t->numel != n) return false;
    return n == 0 || memcmp(t->data, want, (size_t)n * sizeof *want) == 0;
}

/* Bit for bit: the reader rounds each decimal correctly, as the compiler does the literals. */
static bool f32_eq(const tk_tensor *t, int64_t n, const float *want) {
    if (!t || t->dtype != TK_F32 || t->ndim != 1 || t->numel != n) return false;
    return n == 0 || memcmp(t->data, want, (size_t)n * sizeof *want) == 0;
}

static void test_types_and_lists(void) {
    const char *p = io_path("types.csv");
    io_write_text(p, "user_id,name,rating,history,extra\n"
                     "1,alice,4.5,3|17|4,x\n"
                     "-22,bob,-0.25,,y\n"
                     "9223372036854775807,carol,1e-3,5,z\n"
                     "+4,dave,3,-1|0,w\n");
    tk_columns *c = read_all(p, 3, SPECS3);
    TK_CHECK_MSG(c != NULL, "%s", tk_last_error());
    if (!c) return;
    TK_CHECK(c->nrows == 4 && c->ncols == 3);
    TK_CHECK(strcmp(c->names[0], "user_id") == 0 && c->types[2] == TK_COL_INT64_LIST);
    const int64_t ids[4] = { 1, -22, INT64_MAX, 4 };
    const float rating[4] = { 4.5f, -0.25f, 1e-3f, 3.0f };
    const int64_t hist[6] = { 3, 17, 4, 5, -1, 0 }, offs[5] = { 0, 3, 3, 4, 6 };
    TK_CHECK(i64_eq(c->values[0], 4, ids));
    TK_CHECK(f32_eq(c->values[1], 4, rating));
    TK_CHECK(i64_eq(c->values[2], 6, hist));
    TK_CHECK(i64_eq(c->offsets[2], 5, offs));
    TK_CHECK(c->offsets[0] == NULL && c->offsets[1] == NULL);
    TK_CHECK((c->values[0]->flags & TK_TENSOR_HEAP) && c->values[0]->refcount == 1);
    tk_columns_free(c);
    /* columns come in the order asked, whatever the header's order; INT64_MIN */
    io_write_text(p, "b,a\n-9223372036854775808,1\n");
    const tk_column_spec ba[2] = { { .name = "a", .type = TK_COL_INT64 }, { .name = "b", .type = TK_COL_INT64 } };
    c = read_all(p, 2, ba);
    const int64_t a1[1] = { 1 }, b1[1] = { INT64_MIN };
    TK_CHECK(c && i64_eq(c->values[0], 1, a1) && i64_eq(c->values[1], 1, b1));
    tk_columns_free(c);
    /* no columns asked: rows are still counted and checked */
    c = read_all(p, 0, NULL);
    TK_CHECK(c && c->nrows == 1 && c->ncols == 0);
    tk_columns_free(c);
}

static void test_quotes_and_line_endings(void) {
    const char *p = io_path("quotes.csv");
    io_write_text(p, "\"user_id\",title,rating,history\r\n"
                     "\"12\",\"Heat, 1995\",\"2.5\",\"1|2\"\r\n"
                     "13,\"He said \"\"no\"\", twice\",3,\"\"\r\n"
                     "14,\"two\r\nlines, \"\"quoted\"\"\",\"4\",7\r\n"
                     "15,,5,\"8|9\"");
    tk_columns *c = read_all(p, 3, SPECS3);
    TK_CHECK_MSG(c != NULL, "%s", tk_last_error());
    if (c) {
        const int64_t ids[4] = { 12, 13, 14, 15 }, hist[5] = { 1, 2, 7, 8, 9 }, offs[5] = { 0, 2, 2, 3, 5 };
        const float r[4] = { 2.5f, 3, 4, 5 };
        TK_CHECK(c->nrows == 4);
        TK_CHECK(i64_eq(c->values[0], 4, ids) && f32_eq(c->values[1], 4, r));
        TK_CHECK(i64_eq(c->values[2], 5, hist) && i64_eq(c->offsets[2], 5, offs));
    }
    tk_columns_free(c);
    /* a header with a byte-order mark; blank lines are skipped but counted */
    io_write_text(p, "\xEF\xBB\xBF"
                     "user_id,rating,history\n\n1,2,3\n\r\n4,5,6\n\n");
    c = read_all(p, 3, SPECS3);
    TK_CHECK_MSG(c && c->nrows == 2, "%s", c ? "" : tk_last_error());
    tk_columns_free(c);
}

/* A file that fails to read, as a case: its text, the columns asked ("name:type,..."
 * with type i int64, f float32, l int64 list) and the exact message after "<path>: "
 * ("" when the file must read). */
typedef struct csv_case {
    const char *name, *text, *cols, *want;
} csv_case;

static const csv_case ERROR_CASES[] = {
    /* quotes: cells are unescaped for messages; quoting errors; lone CR and quotes in text */
    { "quoted cell with \"\"", "id,title\n1,\"a \"\"b\"\", c\"\n", "title:i",
      "row 2, column 'title': \"a \"b\", c\" is not an integer" },
    { "blank lines count in rows", "user_id,rating,history\n\n1,2,3\n\n4,x,6\n", "user_id:i,rating:f,history:l",
      "row 5, column 'rating': \"x\" is not a number" },
    { "quote not closed", "user_id,rating,history\n1,\"2,3\n", "user_id:i,rating:f,history:l",
      "row 2, column 'rating': a quoted field is not closed before the end of the file" },
    { "text after the closing quote", "user_id,rating,history\n1,\"2\"x,3\n", "user_id:i,rating:f,history:l",
      "row 2, column 'rating': text after the closing quote of a quoted field" },
    { "text after the closing quote in the header", "user_id,\"rating\"x,history\n1,2,3\n",
      "user_id:i,rating:f,history:l", "row 1, field 2: text after the closing quote of a quoted field" },
    { "quote not closed in an extra field", "user_id,rating,history\n1,2,3,\"x\n", "user_id:i,rating:f,history:l",
      "row 2, field 4: a quoted field is not closed before the end of the file" },
    { "a lone CR is text", "user_id,rating,history\n1\r2,3,4\n", "user_id:i,rating:f,history:l",
      "row 2, column 'user_id': \"1\r2\" is not an integer" },
    { "a quote inside an unquoted cell is text", "name\nab\"c\n", "name:i",
      "row 2, column 'name': \"ab\"c\" is not an integer" },
    /* the header */
    { "missing column", "user_id,item,rating\n1,2,3\n", "user_id:i,item_id:i",
      "no column 'item_id' in the header (its 3 columns: user_id, item, rating)" },
    { "column twice in the header", "a,user_id,user_id\n1,2,3\n", "user_id:i",
      "column 'user_id' appears twice in the header (fields 2 and 3)" },
    { "a duplicated column nobody asks for is fine", "a,x,x\n1,2,3\n", "a:i", "" },
    { "empty file", "", "a:i", "the file is empty (no header row)" },
    { "only a byte-order mark", "\xEF\xBB\xBF", "a:i", "the file is empty (no header row)" },
    { "empty header", "\n1\n", "a:i", "row 1 (the header) is empty" },
    /* rows of the wrong length */
    { "short row", "user_id,rating,history\n1,2,3\n4,5\n", "user_id:i,rating:f,history:l",
      "row 3 has 2 fields, the header has 3" },
    { "row of one field", "user_id,rating,history,x\n1,2,3,4\n4\n", "user_id:i",
      "row 3 has 1 field, the header has 4" },
    { "long row", "user_id,rating,history\n1,2,3,\n", "user_id:i,rating:f,history:l",
      "row 2 has 4 fields, the header has 3" },
};

/* A bad cell, as a case: the cell goes into row 3 of a column of its type. */
typedef struct cell_case {
    char type;              /* i, f, l */
    const char *cell, *msg; /* msg: what follows "row 3, column '<name>': " */
} cell_case;

static const cell_case CELL_CASES[] = {
    { 'i', "abc", "\"abc\" is not an integer" },
    { 'i', "1.5", "\"1.5\" is not an integer" },
    { 'i', "", "\"\" is not an integer" },
    { 'i', "-", "\"-\" is not an integer" },
    { 'i', " 12", "\" 12\" is not an integer" },
    { 'i', "12 ", "\"12 \" is not an integer" },
    { 'i', "1e3", "\"1e3\" is not an integer" },
    { 'i', "9223372036854775808", "\"9223372036854775808\" is outside the int64 range" },
    { 'i', "-9223372036854775809", "\"-9223372036854775809\" is outside the int64 range" },
    { 'i', "123456789012345678901234567890", "\"123456789012345678901234567890\" is outside the int64 range" },
    { 'f', "x", "\"x\" is not a number" },
    { 'f', "", "\"\" is not a number" },
    { 'f', ".", "\".\" is not a number" },
    { 'f', "1.5.2", "\"1.5.2\" is not a number" },
    { 'f', "1e", "\"1e\" is not a number" },
    { 'f', "0x10", "\"0x10\" is not a number" },
    { 'f', " 1", "\" 1\" is not a number" },
    { 'f', "nan", "\"nan\" is not a finite number (NaN and infinity are refused)" },
    { 'f', "NaN", "\"NaN\" is not a finite number (NaN and infinity are refused)" },
    { 'f', "-inf", "\"-inf\" is not a finite number (NaN and infinity are refused)" },
    { 'f', "Infinity", "\"Infinity\" is not a finite number (NaN and infinity are refused)" },
    { 'f', "1e39", "\"1e39\" is outside the float32 range" },
    { 'f', "-3.5e300", "\"-3.5e300\" is outside the float32 range" },
    { 'l', "3|x", "\"3|x\" is not a list of integers separated by '|'" },
    { 'l', "3||4", "\"3||4\" is not a list of integers separated by '|'" },
    { 'l', "3|", "\"3|\" is not a list of integers separated by '|'" },
    { 'l', "|3", "\"|3\" is not a list of integers separated by '|'" },
    { 'l', "3 | 4", "\"3 | 4\" is not a list of integers separated by '|'" },
    { 'l', "1.5", "\"1.5\" is not a list of integers separated by '|'" },
    { 'l', "1|99999999999999999999",
      "\"1|99999999999999999999\" has an id outside the int64 range (\"99999999999999999999\")" },
};

/* Runs one case; a failure names it. */
static void check_case(const csv_case *c) {
    tk_column_spec specs[8];
    char names[8][32];
    int32_t n = 0;
    for (const char *p = c->cols; *p && n < 8; n++) {
        size_t len = strcspn(p, ":");
        snprintf(names[n], sizeof names[n], "%.*s", (int)len, p);
        char t = p[len + 1];
        specs[n] = (tk_column_spec){ .name = names[n],
                                     .type = t == 'f'   ? TK_COL_FLOAT32
                                             : t == 'l' ? TK_COL_INT64_LIST
                                                        : TK_COL_INT64 };
        p += len + 2;
        if (*p == ',') p++;
    }
    const char *got = read_error(c->text, n, specs);
    char want[512] = "";
    if (*c->want) snprintf(want, sizeof want, "%s: %s", io_path("err.csv"), c->want);
    TK_CHECK_MSG(strcmp(got, want) == 0, "%s:\n    got  \"%s\"\n    want \"%s\"", c->name, got, want);
}

static void test_error_cases(void) {
    for (size_t i = 0; i < TK_ARRAY_LEN(ERROR_CASES); i++) check_case(&ERROR_CASES[i]);
}

static void test_bad_cells(void) {
    /* each column type in a file of its own shape, the bad cell in row 3 */
    static const struct {
        const char *cols, *name, *text;
    } files[3] = {
        { "item_id:i", "item_id", "user,item_id\n1,5\n2,%s\n3,7\n" },
        { "rating:f", "rating", "x,rating\n0,1\n0,%s\n" },
        { "history:l", "history", "history,x\n1|2,0\n%s,0\n" },
    };
    for (size_t i = 0; i < TK_ARRAY_LEN(CELL_CASES); i++) {
        const cell_case *k = &CELL_CASES[i];
        int f = k->type == 'i' ? 0 : k->type == 'f' ? 1 : 2;
        char name[96], text[256], want[256];
        snprintf(name, sizeof name, "%s cell \"%s\"", files[f].name, k->cell);
        snprintf(text, sizeof text, files[f].text, k->cell);
        snprintf(want, sizeof want, "row 3, column '%s': %s", files[f].name, k->msg);
        check_case(&(csv_case){ name, text, files[f].cols, want });
    }
    /* a cell with a ',' is two fields: a row error */
    check_case(&(csv_case){ "float cell \"1,5\"", "x,rating\n0,1\n0,1,5\n", "rating:f",
                            "row 3 has 3 fields, the header has 2" });
    /* long cells are cut in messages */
    char longcell[200], text[256];
    memset(longcell, 'z', 150);
    longcell[150] = '\0';
    snprintf(text, sizeof text, "item_id\n%s\n", longcell);
    const tk_column_spec item[1] = { { .name = "item_id", .type = TK_COL_INT64 } };
    const char *e = read_error(text, 1, item);
    TK_CHECK_ERROR(e, "row 2, column 'item_id': \"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz...\" is "
                      "not an integer");
    /* the brief's example, as a user sees it */
    const char *p = io_path("train.csv");
    FILE *f = fopen(p, "w");
    fprintf(f, "user_id,item_id\n");
    for (int i = 2; i < 17; i++) fprintf(f, "%d,%d\n", i, i * 3);
    fprintf(f, "17,abc\n");
    fclose(f);
    TK_CHECK(read_all(p, 1, item) == NULL);
    char want[512];
    snprintf(want, sizeof want, "%s: row 17, column 'item_id': \"abc\" is not an integer", p);
    TK_CHECK_MSG(strcmp(tk_last_error(), want) == 0, "%s", tk_last_error());
}

static void test_header_only_and_reader_errors(void) {
    const tk_column_spec a[1] = { { .name = "a", .type = TK_COL_INT64 } };
    const char *p = io_path("header.csv");
    io_write_text(p, "user_id,rating,history\n");
    tk_columns *c = read_all(p, 3, SPECS3);
    TK_CHECK_MSG(c != NULL, "%s", tk_last_error());
    if (c) {
        const int64_t zero[1] = { 0 };
        TK_CHECK(c->nrows == 0);
        TK_CHECK(i64_eq(c->values[0], 0, NULL) && f32_eq(c->values[1], 0, NULL));
        TK_CHECK(i64_eq(c->values[2], 0, NULL) && i64_eq(c->offsets[2], 1, zero));
    }
    tk_columns_free(c);
    io_write_text(p, "user_id,rating,history"); /* no newline at all */
    c = read_all(p, 3, SPECS3);
    TK_CHECK(c && c->nrows == 0);
    tk_columns_free(c);
    /* no trailing newline after the last row */
    io_write_text(p, "user_id,rating,history\n1,2,3\n4,5,6|7");
    c = read_all(p, 3, SPECS3);
    const int64_t ids[2] = { 1, 4 }, h[3] = { 3, 6, 7 };
    TK_CHECK(c && c->nrows == 2 && i64_eq(c->values[0], 2, ids) && i64_eq(c->values[2], 3, h));
    tk_columns_free(c);
    /* missing file, bad specs */
    TK_CHECK(tk_csv_open(io_path("nope.csv"), 1, a) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "nope.csv: cannot open: No such file or directory");
    const tk_column_spec twice[2] = { { .name = "a", .type = TK_COL_INT64 }, { .name = "a", .type = TK_COL_FLOAT32 } };
    TK_CHECK(tk_csv_open(p, 2, twice) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "column 'a' is requested twice");
    /* after an error the reader refuses to go on */
    io_write_text(p, "a\n1\nx\n2\n");
    tk_csv_reader *r = tk_csv_open(p, 1, a);
    TK_CHECK(r && tk_csv_next(r, 0) == NULL);
    TK_CHECK(r && tk_csv_next(r, 0) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "stopped at an earlier error");
    tk_csv_close(r);
}

/* Writes n generated rows: id, a skipped quoted text, a float, a list. */
static void write_generated(const char *path, int64_t n, bool crlf) {
    FILE *f = fopen(path, "w");
    fprintf(f, "user_id,title,rating,history%s", crlf ? "\r\n" : "\n");
    for (int64_t i = 0; i < n; i++) {
        fprintf(f, "%lld,\"t, %lld \"\"x\"\"\",%g,", (long long)(i * 7 - 3), (long long)i, (double)(i % 1000) * 0.125);
        for (int64_t k = 0; k < i % 4; k++) fprintf(f, k ? "|%lld" : "%lld", (long long)(i + k));
        fputs(crlf ? "\r\n" : "\n", f);
    }
    fclose(f);
}

static bool check_generated(const tk_columns *c, int64_t first, int64_t n) {
    if (!c || c->nrows != n) return false;
    const int64_t *id = tk_i64(c->values[0]), *h = tk_i64(c->values[2]), *o = tk_i64(c->offsets[2]);
    const float *r = tk_f32(c->values[1]);
    if (o[0] != 0 || c->values[2]->numel != o[n]) return false;
    for (int64_t j = 0; j < n; j++) {
        int64_t i = first + j;
        if (id[j] != i * 7 - 3 || r[j] != (float)((double)(i % 1000) * 0.125)) return false;
        if (o[j + 1] - o[j] != i % 4) return false;
        for (int64_t k = 0; k < i % 4; k++)
            if (h[o[j] + k] != i + k) return false;
    }
    return true;
}

/* Chunks of any size give what one read gives, across the 1 MiB buffer boundaries. */
/* A FIFO is refused at once: opened without O_NONBLOCK it would wait for a writer. */
static void test_not_a_regular_file(void) {
    const char *p = io_path("fifo.csv");
    io_fifo(p);
    tk_csv_reader *r = tk_csv_open(p, 3, SPECS3);
    io_no_alarm();
    TK_CHECK(r == NULL);
    tk_csv_close(r);
    TK_CHECK_ERROR(tk_last_error(), "fifo.csv: cannot open: not a regular file");
    unlink(p);
}

static void test_chunks(void) {
    const char *p = io_path("gen.csv");
    const int64_t n = 60000; /* about 2.5 MB: records cross buffer ends */
    for (int crlf = 0; crlf < 2; crlf++) {
        write_generated(p, n, crlf);
        tk_csv_reader *r = tk_csv_open(p, 3, SPECS3);
        TK_CHECK(r != NULL);
        tk_columns *all = r ? tk_csv_next(r, 0) : NULL;
        TK_CHECK_MSG(check_generated(all, 0, n), "one read (crlf %d): %s", crlf,
                     all ? "wrong values" : tk_last_error());
        tk_columns *end = r ? tk_csv_next(r, 10) : NULL;
        TK_CHECK(end && end->nrows == 0);
        tk_columns_free(end);
        tk_columns_free(all);
        tk_csv_close(r);
        const int64_t sizes[3] = { 1, 7, 4096 };
        for (int s = 0; s < 3; s++) {
            r = tk_csv_open(p, 3, SPECS3);
            int64_t got = 0;
            bool ok = r != NULL;
            for (int iter = 0; ok && iter < 100000; iter++) {
                int64_t want = n - got < sizes[s] ? n - got : sizes[s];
                tk_columns *c = tk_csv_next(r, sizes[s]);
                ok = c && check_generated(c, got, want);
                int64_t rows = c ? c->nrows : 0;
                tk_columns_free(c);
                got += rows;
                if (rows == 0 || (s == 0 && got >= 3)) break; /* 1-row chunks: a few are enough */
            }
            TK_CHECK_MSG(ok && (s == 0 || got == n), "chunks of %lld (crlf %d): got %lld rows", (long long)sizes[s],
                         crlf, (long long)got);
            tk_csv_close(r);
        }
    }
    /* a record longer than the read buffer */
    FILE *f = fopen(p, "w");
    fputs("history,x\n", f);
    for (int i = 0; i < 400000; i++) fprintf(f, i ? "|%d" : "%d", i);
    fputs(",1\n5,2\n", f);
    fclose(f);
    const tk_column_spec hs[1] = { { .name = "history", .type = TK_COL_INT64_LIST } };
    tk_columns *c = read_all(p, 1, hs);
    TK_CHECK_MSG(c && c->nrows == 2 && c->values[0]->numel == 400001, "%s", c ? "wrong" : tk_last_error());
    if (c && c->values[0]->numel == 400001)
        TK_CHECK(tk_i64(c->values[0])[399999] == 399999 && tk_i64(c->values[0])[400000] == 5);
    tk_columns_free(c);
}

/* A NUL byte in a cell or in the header is an error naming the row: the parser reads
 * cells up to a NUL sentinel, so it would cut them silently. */
static void test_nul_bytes(void) {
    const tk_column_spec spec[2] = { { .name = "a", .type = TK_COL_INT64 }, { .name = "b", .type = TK_COL_FLOAT32 } };
    static const char cell[] = "a,b\n1,2\n3,1.5\0junk\n", header[] = "a\0z,b\n1,2\n";
    const char *p = io_path("nul.csv");
    io_write(p, cell, sizeof cell - 1);
    tk_columns *c = read_all(p, 2, spec);
    TK_CHECK(c == NULL);
    if (!c) TK_CHECK_ERROR(tk_last_error(), "nul.csv: row 3: a NUL byte");
    tk_columns_free(c);
    io_write(p, header, sizeof header - 1);
    c = read_all(p, 2, spec);
    TK_CHECK(c == NULL);
    if (!c) TK_CHECK_ERROR(tk_last_error(), "nul.csv: row 1: a NUL byte");
    tk_columns_free(c);
}

/* A list cell with more ids than the column's max_count (a schema's value count max) is
 * an error naming the row and the column, on the fast path (plain ids) and the slow one
 * (a quoted cell); cells at the limit and the empty list pass. */
static void test_list_max_count(void) {
    const tk_column_spec spec[2] = { { .name = "id", .type = TK_COL_INT64 },
                                     { .name = "tags", .type = TK_COL_INT64_LIST, .max_count = 3 } };
    const char *ok = read_error("id,tags\n1,1|2|3\n2,\n3,\"4|5\"\n", 2, spec);
    TK_CHECK_MSG(*ok == '\0', "%s", ok); /* "" when the file reads */
    const char *fast = read_error("id,tags\n1,1|2|3\n2,4|5|6|7\n", 2, spec);
    TK_CHECK_ERROR(fast, "row 3, column 'tags'");
    TK_CHECK_ERROR(fast, "has more than 3 ids (the column's value count max)");
    const char *slow = read_error("id,tags\n1,\"1|2|3|4\"\n", 2, spec);
    TK_CHECK_ERROR(slow, "row 2, column 'tags'");
}

/* The end of the first 1 MiB read falls on every byte of a few tricky records. */
static void test_buffer_boundaries(void) {
    const char *p = io_path("boundary.csv");
    static const char tail[] = "-12,\"a \"\"q\"\", b\",1.25e1,3|4\r\n"
                               "13,,0.5,\r\n"
                               "14,\"x\r\ny\",\"2\",5\r\n"
                               "\r\n"
                               "15,z,-7.5,6|7|8";
    const size_t block = (size_t)1 << 20, header = strlen("user_id,title,rating,history\n");
    char *text = malloc(block + sizeof tail + 64);
    int bad = 0;
    for (size_t shift = 0; shift < sizeof tail + 2 && bad < 3; shift++) {
        /* row 2 is "1,<filler>,1,1\n"; the tail starts `shift` bytes before the block's end */
        size_t filler = block - shift - header - strlen("1,,1,1\n");
        size_t n = 0;
        n += (size_t)sprintf(text + n, "user_id,title,rating,history\n1,");
        memset(text + n, 'f', filler);
        n += filler;
        n += (size_t)sprintf(text + n, ",1,1\n%s", tail);
        io_write(p, text, n);
        tk_columns *c = read_all(p, 3, SPECS3);
        const int64_t ids[5] = { 1, -12, 13, 14, 15 }, hist[7] = { 1, 3, 4, 5, 6, 7, 8 },
                      offs[6] = { 0, 1, 3, 3, 4, 7 };
        const float r[5] = { 1, 12.5f, 0.5f, 2, -7.5f };
        bool ok = c && c->nrows == 5 && i64_eq(c->values[0], 5, ids) && f32_eq(c->values[1], 5, r) &&
                  i64_eq(c->values[2], 7, hist) && i64_eq(c->offsets[2], 6, offs);
        if (!ok) bad++;
        TK_CHECK_MSG(ok, "boundary %zu bytes before the tail's end: %s", shift, c ? "wrong values" : tk_last_error());
        tk_columns_free(c);
    }
    /* an error past the boundary names the right row */
    size_t filler = block - 5 - header - strlen("1,,1,1\n");
    size_t n = (size_t)sprintf(text, "user_id,title,rating,history\n1,");
    memset(text + n, 'f', filler);
    n += filler;
    n += (size_t)sprintf(text + n, ",1,1\n2,t,1.5,9\n3,t,x,9\n");
    io_write(p, text, n);
    TK_CHECK(read_all(p, 3, SPECS3) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "boundary.csv: row 4, column 'rating': \"x\" is not a number");
    free(text);
}

/* Floats parsed by the fast path equal strtof's, bit for bit (both round correctly). */
static void test_float_parsing(void) {
    const char *p = io_path("floats.csv");
    const int n = 50000;
    char(*cells)[40] = malloc((size_t)n * sizeof *cells);
    uint64_t s = 12345;
    FILE *f = fopen(p, "w");
    fputs("v\n", f);
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t x = (uint32_t)(s >> 33);
        uint32_t bits = (uint32_t)s;
        float any;
        memcpy(&any, &bits, 4);
        if (!isfinite(any)) any = 1.5f;
        switch (i % 10) {
        case 0:
            snprintf(cells[i], 40, "%u.%u", x % 100000, (x >> 7) % 1000);
            break;
        case 1:
            snprintf(cells[i], 40, "-%u.%06u", x % 17, x % 1000000);
            break;
        case 2:
            snprintf(cells[i], 40, "%.9g", (double)((float)x / 16777216.0f));
            break;
        case 3:
            snprintf(cells[i], 40, "0.%010u", x);
            break;
        case 4:
            snprintf(cells[i], 40, "%u", x % 16777217u + (x & 1) * 16777200u);
            break;
        case 5:
            snprintf(cells[i], 40, "%.9g", (double)any);
            break; /* any float, exponents */
        case 6:
            snprintf(cells[i], 40, "%.17g", (double)x * 1e-7 + 1e-9);
            break; /* long decimals */
        case 7:
            snprintf(cells[i], 40, "%uE%+d", x % 100000000, (int)(x % 60) - 30);
            break;
        case 8:
            snprintf(cells[i], 40, "%.1f", (double)(16777216 + 2 * (x % 1000) + 1));
            break; /* float midpoints */
        default:
            snprintf(cells[i], 40, "000%u.%05u00e-2", x % 1000, x % 100000);
            break;
        }
        fprintf(f, "%s\n", cells[i]);
    }
    fclose(f);
    const tk_column_spec v[1] = { { .name = "v", .type = TK_COL_FLOAT32 } };
    tk_columns *c = read_all(p, 1, v);
    TK_CHECK(c && c->nrows == n);
    int bad = 0;
    for (int i = 0; c && i < n && bad < 5; i++) {
        float want = strtof(cells[i], NULL), got = tk_f32(c->values[0])[i];
        if (memcmp(&want, &got, 4) != 0) {
            TK_CHECK_MSG(false, "\"%s\": got %.9g, strtof %.9g", cells[i], (double)got, (double)want);
            bad++;
        }
    }
    tk_columns_free(c);
    free(cells);
}

/* Every float written reads back exactly, and the text is the shortest that does. */
static void test_float_format(void) {
    static const struct {
        float v;
        const char *text;
    } known[] = {
        { 0.1f, "0.1" },
        { 0.0f, "0" },
        { -0.0f, "-0" },
        { 1.0f, "1" },
        { -2.5f, "-2.5" },
        { 100.0f, "100" },
        { 123456792.0f, "123456790" },
        { 1e9f, "1e9" },
        { 1.5e10f, "1.5e10" },
        { 1e-5f, "0.00001" },
        { 1.25e-6f, "1.25e-6" },
        { 3.4028235e38f, "3.4028235e38" },
        { 1.4e-45f, "1e-45" },
        { 1.17549435e-38f, "1.1754944e-38" },
        { 16777216.0f, "16777216" },
        { 0.3f, "0.3" },
        { 2.0f / 3.0f, "0.6666667" },
    };
    char buf[40];
    for (size_t i = 0; i < TK_ARRAY_LEN(known); i++) {
        int n = tk_format_f32(known[i].v, buf);
        buf[n] = '\0';
        TK_CHECK_MSG(strcmp(buf, known[i].text) == 0, "%.9g: got \"%s\", want \"%s\"", (double)known[i].v, buf,
                     known[i].text);
    }
    /* random bit patterns: reads back, never longer than the shortest %.{p}g that does */
    uint64_t s = 99;
    int bad = 0, longer = 0;
    for (int i = 0; i < 300000 && bad < 5; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t bits = (uint32_t)(s >> 32);
        float v;
        memcpy(&v, &bits, 4);
        if (!isfinite(v)) continue;
        int n = tk_format_f32(v, buf);
        buf[n] = '\0';
        float back = strtof(buf, NULL);
        if (memcmp(&back, &v, 4) != 0) {
            TK_CHECK_MSG(false, "%.9g written \"%s\" reads back %.9g", (double)v, buf, (double)back);
            bad++;
        }
        if (i % 10 == 0) {
            char ref[40];
            int digits = 1;
            for (; digits <= 9; digits++) {
                snprintf(ref, sizeof ref, "%.*g", digits, (double)v);
                if (strtof(ref, NULL) == v) break;
            }
            /* count significant digits of ours: strip sign, leading zeros and point */
            const char *q = buf + (buf[0] == '-');
            while (*q == '0' || *q == '.') q++;
            int sig = 0, zeros = 0;
            for (; *q && *q != 'e'; q++) {
                if (*q == '.') continue;
                if (*q == '0') {
                    zeros++;
                } else {
                    sig += zeros + 1;
                    zeros = 0;
                }
            }
            if (sig > digits && longer++ < 5) printf("    %.9g: \"%s\" but \"%s\" reads back\n", (double)v, buf, ref);
        }
    }
    TK_CHECK_MSG(longer == 0, "%d values were written with more digits than needed", longer);
}

static void test_embeddings(void) {
    const int64_t n = 500, d = 16;
    int64_t shape[2] = { n, d };
    tk_tensor *m = tk_test_randn(2, shape, 1.0f, 5);
    tk_f32(m)[0] = 0.0f;
    tk_f32(m)[1] = -0.0f;
    tk_f32(m)[2] = 3.4028235e38f;
    tk_f32(m)[3] = 1.4e-45f;
    tk_f32(m)[4] = 1e-7f;
    tk_tensor *ids = tk_tensor_new_1d(TK_I64, n);
    for (int64_t i = 0; i < n; i++) tk_i64(ids)[i] = i == 0 ? INT64_MIN : i * 1000003 - 7;
    const char *p = io_path("emb.csv");
    TK_CHECK_MSG(tk_csv_write_embeddings(p, ids, m) == TK_OK, "%s", tk_last_error());
    char *text = io_read(p, NULL);
    TK_CHECK(text && strncmp(text, "id,e_0,e_1,e_2,", 15) == 0 && strstr(text, ",e_15\n"));
    free(text);
    tk_column_spec specs[17];
    char names[16][16];
    specs[0] = (tk_column_spec){ .name = "id", .type = TK_COL_INT64 };
    for (int j = 0; j < 16; j++) {
        snprintf(names[j], sizeof names[j], "e_%d", j);
        specs[j + 1] = (tk_column_spec){ .name = names[j], .type = TK_COL_FLOAT32 };
    }
    tk_columns *c = read_all(p, 17, specs);
    TK_CHECK_MSG(c && c->nrows == n, "%s", c ? "rows" : tk_last_error());
    if (c && c->nrows == n) {
        /* bit for bit: the shortest text that reads back, read back correctly rounded */
        TK_CHECK(memcmp(c->values[0]->data, ids->data, (size_t)n * 8) == 0);
        bool same = true;
        for (int64_t i = 0; i < n; i++)
            for (int j = 0; j < 16; j++)
                same = same && memcmp(&tk_f32(c->values[j + 1])[i], &tk_f32(m)[i * d + j], 4) == 0;
        TK_CHECK_MSG(same, "embeddings differ after the round trip");
    }
    tk_columns_free(c);
    /* bad input and failed writes leave nothing behind */
    tk_tensor *short_ids = tk_tensor_new_1d(TK_I64, 3);
    TK_CHECK(tk_csv_write_embeddings(p, short_ids, m) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "must be float32 [N, D] with N = 3 ids");
    tk_f32(m)[5 * d + 2] = NAN;
    TK_CHECK(tk_csv_write_embeddings(p, ids, m) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "(row 5) has a non-finite value at column 2");
    tk_f32(m)[5 * d + 2] = 1.0f;
    TK_CHECK(tk_csv_write_embeddings(io_path("missing/emb.csv"), ids, m) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "cannot create a temporary file");
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
    c = read_all(p, 17, specs); /* the earlier file is still whole */
    TK_CHECK(c && c->nrows == n);
    tk_columns_free(c);
    tk_tensor_release(short_ids);
    tk_tensor_release(ids);
    tk_tensor_release(m);
}

int main(void) {
    TK_RUN(test_list_max_count);
    TK_RUN(test_nul_bytes);
    io_tmpdir("tk-csv");
    TK_RUN(test_types_and_lists);
    TK_RUN(test_quotes_and_line_endings);
    TK_RUN(test_error_cases);
    TK_RUN(test_bad_cells);
    TK_RUN(test_header_only_and_reader_errors);
    TK_RUN(test_not_a_regular_file);
    TK_RUN(test_chunks);
    TK_RUN(test_buffer_boundaries);
    TK_RUN(test_float_parsing);
    TK_RUN(test_float_format);
    TK_RUN(test_embeddings);
    io_remove_tree(io_dir);
    return tk_test_summary();
}
