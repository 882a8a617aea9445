/* fuzz_csv.c - the streaming CSV reader on any bytes: quotes, separators, lines without
 * an end, numbers that do not parse, lists, chunks that end inside a row. The first byte
 * picks the chunk size (0: all rows at once) and which column is requested as a list; the
 * rest is the file. Seeds: corpus/csv. */
#include "fuzz_common.h"
#include "towerkit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int64_t chunk = data[0] & 7;
    tk_column_spec cols[3] = { { .name = "user_id", .type = TK_COL_INT64 },
                               { .name = "score", .type = TK_COL_FLOAT32 },
                               { .name = "tags", .type = TK_COL_INT64 } };
    if (data[0] & 8) cols[2].type = TK_COL_INT64_LIST;
    int32_t ncols = (data[0] & 16) ? 2 : 3;
    tk_csv_reader *r = tk_csv_open(fuzz_file("d.csv", data + 1, size - 1), ncols, cols);
    if (!r) return 0;
    for (int i = 0; i < 1 << 16; i++) {
        tk_columns *c = tk_csv_next(r, chunk);
        if (!c) break;
        int64_t n = c->nrows;
        tk_columns_free(c);
        if (n == 0) break;
    }
    tk_csv_close(r);
    return 0;
}
