/* CSV: a streaming reader of typed columns, and the embeddings writer.
 *
 * Reader. The file is read in 1 MiB blocks (fread into one buffer, never a copy per
 * line) and scanned by hand: a record is parsed in place, field by field; fields of
 * columns nobody asked for are skipped with a table-driven scan, the others parsed
 * straight from the buffer into column arrays that grow geometrically and are handed
 * over as the tensors of the chunk (no per-cell allocation, no copy at the end). Plain
 * cells (unquoted integers, '|' lists, decimals) are converted in the same pass that
 * finds their end; anything else (quotes, exponents, errors) takes the general path:
 * find the field, then parse it. Decimals are rounded exactly (Clinger's fast path in
 * float or double, strtof for the rest). A record cut by the end of the buffer is
 * parsed again after the next read (list columns roll back the ids they took).
 * Measured here: 10M rows of 8 columns (557 MB) in about 1 s, 9-12M rows/s.
 *
 * Syntax: RFC 4180. Fields are separated by ',', records end with "\n" or "\r\n" (a
 * last record may lack it); a field in double quotes may hold ',', '"' (written "")
 * and line breaks. A UTF-8 byte-order mark before the header is skipped. Empty lines
 * are skipped (but counted in row numbers, so rows are line numbers in a file without
 * quoted line breaks). Every record has the header's number of fields.
 *
 * Cells: int64 is an optional sign and decimal digits, nothing else; float32 is a
 * decimal number (strtof syntax in the C locale, without hexadecimal floats, leading
 * blanks, NaN or infinity); a list cell is int64 ids separated by '|', the empty cell
 * an empty list. */
#include "io/io_impl.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <sys/stat.h>

#define CSV_BLOCK ((size_t)1 << 20)
#define CSV_FIRST_ROWS ((int64_t)1 << 16)
#define CSV_TEXT_MAX 60 /* longest cell text quoted in a message */

typedef struct csv_col {
    char *name;
    tk_column_type type;
    int32_t field;     /* its index in the header */
    void *vals;        /* int64_t or float per row; for a list, the ids */
    int64_t nvals;     /* list: ids so far; offs[nrows] is the count at the row's start */
    int64_t capvals;   /* list */
    int64_t *offs;     /* list: nrows + 1 offsets */
    int64_t max_count; /* list: ids per cell at most (0: no limit) */
} csv_col;

struct tk_csv_reader {
    FILE *f;
    char *path;
    char *buf; /* cap + 1 bytes: buf[end] is a NUL sentinel */
    size_t cap, pos, end;
    bool eof, failed, done;
    int64_t row; /* records consumed, the header included (the next is row + 1) */
    int32_t nfields;
    char **header;      /* nfields names */
    int32_t *field_col; /* per header field: the column read from it, or -1 */
    int32_t ncols;
    csv_col *cols;
    int32_t nlists;
    int32_t *lists;         /* indices of the list columns */
    int64_t nrows, caprows; /* the chunk being read */
    char *scratch;          /* a quoted cell without its "" escapes */
    size_t scratch_cap;
};

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                                 */
/* ------------------------------------------------------------------------------------ */

/* "<path>: row <n>, column '<name>': "<text>" <what>" */
static void cell_error(const tk_csv_reader *r, int32_t c, const char *s, const char *e, const char *what) {
    size_t len = (size_t)(e - s);
    bool cut = len > CSV_TEXT_MAX;
    tk_set_error("%s: row %lld, column '%s': \"%.*s%s\" %s", r->path, (long long)(r->row + 1), r->cols[c].name,
                 (int)(cut ? CSV_TEXT_MAX : len), s, cut ? "..." : "", what);
}

/* "column '<name>'" for field f (0-based) of a record, or "field <f + 1>" in the header
 * or beyond it. */
static const char *field_label(const tk_csv_reader *r, int32_t f, char *buf, size_t n) {
    if (r->header && f < r->nfields)
        snprintf(buf, n, "column '%s'", r->header[f]);
    else
        snprintf(buf, n, "field %d", (int)f + 1);
    return buf;
}

/* ------------------------------------------------------------------------------------ */
/* Cells                                                                                  */
/* ------------------------------------------------------------------------------------ */

enum { P_OK = 0, P_BAD, P_RANGE, P_NONFINITE };

static int parse_i64(const char *s, const char *e, int64_t *out) {
    if (s == e) return P_BAD;
    bool neg = false;
    if (*s == '-' || *s == '+') {
        neg = *s == '-';
        if (++s == e) return P_BAD;
    }
    uint64_t v = 0;
    bool overflow = false;
    for (; s < e; s++) {
        unsigned d = (unsigned)(unsigned char)*s - '0';
        if (d > 9) return P_BAD;
        overflow |= __builtin_mul_overflow(v, 10, &v);
        overflow |= __builtin_add_overflow(v, d, &v);
    }
    if (overflow || v > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) return P_RANGE;
    *out = neg ? (v ? -(int64_t)(v - 1) - 1 : 0) : (int64_t)v;
    return P_OK;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static float strtof_c(const char *s, char **end) {
    pthread_once(&c_locale_once, make_c_locale);
    return c_locale ? strtof_l(s, end, c_locale) : strtof(s, end);
}

/* Everything the fast path of parse_f32 does not take. The text is followed by a
 * byte that ends a number (a delimiter, a quote or the NUL sentinel). */
static int parse_f32_slow(const char *s, const char *e, float *out) {
    if (s == e) return P_BAD;
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (p == e) return P_BAD;
    char *q;
    if (!((*p >= '0' && *p <= '9') || *p == '.')) { /* "nan", "inf", "-infinity" */
        float v = strtof_c(s, &q);
        return q == e && !isfinite(v) ? P_NONFINITE : P_BAD;
    }
    for (const char *t = p; t < e; t++)
        if (*t == 'x' || *t == 'X') return P_BAD; /* no hexadecimal floats */
    float v = strtof_c(s, &q);
    if (q != e) return P_BAD;
    if (!isfinite(v)) return P_RANGE;
    *out = v;
    return P_OK;
}

static const float pow10f_exact[11] = { 1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f, 1e6f, 1e7f, 1e8f, 1e9f, 1e10f };

/* m * 10^e as the correctly rounded float, when one exact-input IEEE operation gives
 * it: m <= 2^24 and |e| <= 10 in float (Clinger's fast path); else m < 2^53 and
 * |e| <= 22 in double, then rounded to float. That second rounding is wrong only when
 * the double lands exactly halfway between two floats (any float midpoint strictly
 * between the decimal and its double would be a closer double), so that case is left
 * to strtof. false: not taken. An out-of-range result comes back as infinity. */
static inline bool decimal_to_f32(uint64_t m, int e, bool neg, float *out) {
    float f;
    if (m <= (1u << 24) && e >= -10 && e <= 10) {
        f = e < 0 ? (float)m / pow10f_exact[-e] : (float)m * pow10f_exact[e];
    } else {
        if (m >= ((uint64_t)1 << 53) || e < -22 || e > 22) return false;
        double d = e < 0 ? (double)m / tk_p10(-e) : (double)m * tk_p10(e);
        f = (float)d;
        if ((double)f != d && !isinf(f)) {
            float g = nextafterf(f, (double)f < d ? INFINITY : -INFINITY);
            if (!isinf(g) && d - (double)f == (double)g - d) return false;
        }
    }
    *out = neg ? -f : f;
    return true;
}

/* Decimal to float, correctly rounded: [+-]digits[.digits][(e|E)[+-]digits] with at
 * most 19 significant digits goes through decimal_to_f32; the rest (and anything that
 * is not such a decimal, for the messages) through strtof. */
static inline int parse_f32(const char *s, const char *e, float *out) {
    const char *p = s;
    bool neg = false;
    if (p < e && (*p == '-' || *p == '+')) {
        neg = *p == '-';
        p++;
    }
    uint64_t m = 0;
    int nd = 0, frac = 0, any = 0;
    unsigned d;
    while (p < e && *p == '0') { /* leading zeros are not significant */
        p++;
        any = 1;
    }
    for (; p < e && (d = (unsigned)(unsigned char)*p - '0') <= 9; p++) {
        m = m * 10 + d;
        nd++;
    }
    if (p < e && *p == '.') {
        p++;
        for (; p < e && (d = (unsigned)(unsigned char)*p - '0') <= 9; p++) {
            if (m == 0 && d == 0) { /* zeros after the point before any digit */
                frac++;
                any = 1;
                continue;
            }
            m = m * 10 + d;
            nd++;
            frac++;
        }
    }
    int ex = 0;
    if (nd + any > 0 && p < e && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = false;
        if (p < e && (*p == '-' || *p == '+')) {
            eneg = *p == '-';
            p++;
        }
        const char *e0 = p;
        for (; p < e && (d = (unsigned)(unsigned char)*p - '0') <= 9 && p - e0 < 6; p++) ex = ex * 10 + (int)d;
        if (p == e0) return P_BAD;
        if (eneg) ex = -ex;
    }
    if (p == e && nd + any > 0 && nd <= 19) {
        float v;
        if (decimal_to_f32(m, ex - frac, neg, &v)) {
            if (isinf(v)) return P_RANGE;
            *out = v;
            return P_OK;
        }
    }
    return parse_f32_slow(s, e, out);
}

/* Room for one more row in every column of the chunk. */
static tk_status grow_rows(tk_csv_reader *r, int64_t max_rows) {
    int64_t cap = r->caprows ? r->caprows * 2 : CSV_FIRST_ROWS;
    if (!r->caprows && max_rows > CSV_FIRST_ROWS) /* a chunk of known size: at once, up to 4M rows */
        cap = max_rows < ((int64_t)1 << 22) ? max_rows : (int64_t)1 << 22;
    if (max_rows > 0 && cap > max_rows) cap = max_rows;
    if (cap <= r->nrows) cap = r->nrows + 1;
    for (int32_t c = 0; c < r->ncols; c++) {
        csv_col *col = &r->cols[c];
        if (col->type == TK_COL_INT64_LIST) {
            int64_t *o = realloc(col->offs, (size_t)(cap + 1) * sizeof *o);
            if (!o) goto oom;
            if (!col->offs) o[0] = 0;
            col->offs = o;
        } else {
            size_t size = col->type == TK_COL_INT64 ? sizeof(int64_t) : sizeof(float);
            void *v = realloc(col->vals, (size_t)cap * size);
            if (!v) goto oom;
            col->vals = v;
        }
    }
    r->caprows = cap;
    return TK_OK;
oom:
    tk_set_error("%s: out of memory growing the columns to %lld rows", r->path, (long long)cap);
    return TK_ERROR;
}

static tk_status parse_list(tk_csv_reader *r, int32_t c, const char *s, const char *e) {
    csv_col *col = &r->cols[c];
    if (s == e) return TK_OK; /* the empty list */
    int64_t first = col->nvals;
    for (const char *p = s;;) {
        const char *t = p;
        while (t < e && *t != '|') t++;
        if (col->nvals == col->capvals) {
            int64_t cap = col->capvals ? col->capvals * 2 : CSV_FIRST_ROWS;
            int64_t *v = realloc(col->vals, (size_t)cap * sizeof *v);
            if (!v) {
                tk_set_error("%s: out of memory growing column '%s' to %lld ids", r->path, col->name, (long long)cap);
                return TK_ERROR;
            }
            col->vals = v;
            col->capvals = cap;
        }
        int rc = parse_i64(p, t, (int64_t *)col->vals + col->nvals);
        if (rc != P_OK) {
            char what[128];
            if (rc == P_RANGE)
                snprintf(what, sizeof what, "has an id outside the int64 range (\"%.*s\")",
                         (int)(t - p > 40 ? 40 : t - p), p);
            else
                snprintf(what, sizeof what, "is not a list of integers separated by '|'");
            cell_error(r, c, s, e, what);
            return TK_ERROR;
        }
        col->nvals++;
        if (col->max_count && col->nvals - first > col->max_count) {
            char what[128];
            snprintf(what, sizeof what, "has more than %lld ids (the column's value count max)",
                     (long long)col->max_count);
            cell_error(r, c, s, e, what);
            return TK_ERROR;
        }
        if (t == e) return TK_OK;
        p = t + 1;
    }
}

/* Parses the cell [s, e) of column c into row r->nrows; `unescape`: a quoted cell
 * with "" pairs. */
static tk_status parse_cell(tk_csv_reader *r, int32_t c, const char *s, const char *e, bool unescape) {
    if (unescape) {
        size_t n = (size_t)(e - s);
        if (n + 1 > r->scratch_cap) {
            size_t cap = r->scratch_cap ? r->scratch_cap : 256;
            while (cap < n + 1) cap *= 2;
            char *b = realloc(r->scratch, cap);
            if (!b) {
                tk_set_error("%s: out of memory", r->path);
                return TK_ERROR;
            }
            r->scratch = b;
            r->scratch_cap = cap;
        }
        char *o = r->scratch;
        for (const char *p = s; p < e; p++) {
            *o++ = *p;
            if (*p == '"') p++; /* the second quote of a pair */
        }
        *o = '\0';
        s = r->scratch;
        e = o;
    }
    csv_col *col = &r->cols[c];
    int rc;
    switch (col->type) {
    case TK_COL_INT64:
        rc = parse_i64(s, e, (int64_t *)col->vals + r->nrows);
        if (rc == P_OK) return TK_OK;
        cell_error(r, c, s, e, rc == P_RANGE ? "is outside the int64 range" : "is not an integer");
        return TK_ERROR;
    case TK_COL_FLOAT32:
        rc = parse_f32(s, e, (float *)col->vals + r->nrows);
        if (rc == P_OK) return TK_OK;
        cell_error(r, c, s, e,
                   rc == P_RANGE       ? "is outside the float32 range"
                   : rc == P_NONFINITE ? "is not a finite number (NaN and infinity are refused)"
                                       : "is not a number");
        return TK_ERROR;
    default:
        return parse_list(r, c, s, e);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Records                                                                                */
/* ------------------------------------------------------------------------------------ */

/* Bytes that end the scan of an unquoted field. */
static const uint8_t stop_byte[256] = { [0] = 1, [','] = 1, ['\n'] = 1, ['\r'] = 1, ['"'] = 1 };

enum { R_OK, R_MORE, R_END, R_BLANK, R_ERROR };

typedef struct field {
    const char *s, *e; /* the content (without the quotes of a quoted field) */
    const char *next;  /* where the next field or record starts */
    bool escaped;      /* quoted with "" pairs in it */
    bool last;         /* the field ends the record */
} field;

/* Scans the field at p. R_OK, R_MORE (the buffer ends inside it, more data follows)
 * or R_ERROR with a message naming field f. */
static inline int scan_field(const tk_csv_reader *r, const char *p, int32_t f, field *out) {
    const char *end = r->buf + r->end;
    bool quoted = p < end && *p == '"';
    out->escaped = false;
    if (quoted) {
        const char *q = p + 1;
        for (;;) {
            const char *x = memchr(q, '"', (size_t)(end - q));
            if (!x) {
                if (!r->eof) return R_MORE;
                char label[300];
                tk_set_error("%s: row %lld, %s: a quoted field is not closed before the end of the file", r->path,
                             (long long)(r->row + 1), field_label(r, f, label, sizeof label));
                return R_ERROR;
            }
            if (x + 1 == end && !r->eof) return R_MORE;
            if (x + 1 < end && x[1] == '"') {
                out->escaped = true;
                q = x + 2;
                continue;
            }
            out->s = p + 1;
            out->e = x;
            p = x + 1;
            break;
        }
    } else {
        out->s = p;
        for (;;) {
            while (!stop_byte[(unsigned char)*p]) p++;
            char c = *p;
            if (c == ',' || c == '\n') break;
            if (c == '\r') {
                if (p + 1 < end && p[1] != '\n') { /* a lone CR is text */
                    p++;
                    continue;
                }
                break;
            }
            if (c == '\0' && p == end) break;
            p++; /* a NUL byte, or a quote inside an unquoted field: text */
        }
        out->e = p;
    }
    if (p == end) {
        if (!r->eof) return R_MORE;
        out->last = true;
        out->next = p;
    } else if (*p == ',') {
        out->last = false;
        out->next = p + 1;
    } else if (*p == '\n') {
        out->last = true;
        out->next = p + 1;
    } else if (*p == '\r' && p + 1 == end) {
        if (!r->eof) return R_MORE;
        out->last = true;
        out->next = p + 1;
    } else if (*p == '\r' && p[1] == '\n') {
        out->last = true;
        out->next = p + 2;
    } else {
        char label[300];
        tk_set_error("%s: row %lld, %s: text after the closing quote of a quoted field", r->path,
                     (long long)(r->row + 1), field_label(r, f, label, sizeof label));
        return R_ERROR;
    }
    return R_OK;
}

/* A blank line at p: R_BLANK (consumed), R_MORE, or R_OK (not blank). */
static int skip_blank(tk_csv_reader *r, const char *p) {
    const char *end = r->buf + r->end;
    if (*p == '\n') {
        r->pos++;
        r->row++;
        return R_BLANK;
    }
    if (*p == '\r') {
        if (p + 1 == end && !r->eof) return R_MORE;
        if (p + 1 == end || p[1] == '\n') {
            r->pos += p + 1 == end ? 1 : 2;
            r->row++;
            return R_BLANK;
        }
    }
    return R_OK;
}

/* Where a number that stopped at q ends its field: the start of what follows, with
 * *last set when the record ends; NULL when q is not a plain delimiter (the caller
 * then takes the general path, which also handles the end of the buffer). */
static inline const char *number_end(const char *q, const char *end, bool *last) {
    if (*q == ',') {
        *last = false;
        return q + 1;
    }
    if (*q == '\n') {
        *last = true;
        return q + 1;
    }
    if (*q == '\r' && q + 1 < end && q[1] == '\n') {
        *last = true;
        return q + 2;
    }
    return NULL;
}

/* The fast paths: an unquoted int64 of at most 18 digits, or an unquoted float32 that
 * parse_f32's exact fast path takes, followed by a delimiter, parsed in the one pass
 * that finds the field's end. Returns where the next field starts, or NULL to use
 * the general path. */
static inline const char *fast_cell(tk_csv_reader *r, csv_col *col, const char *p, const char *end, bool *last) {
    const char *q = p;
    bool neg = *q == '-';
    q += *q == '-' || *q == '+';
    const char *digits = q;
    uint64_t m = 0;
    unsigned d;
    if (col->type == TK_COL_INT64) {
        while ((d = (unsigned)(unsigned char)*q - '0') <= 9) {
            m = m * 10 + d;
            q++;
        }
        if (q == digits || q - digits > 18) return NULL;
        const char *next = number_end(q, end, last);
        if (next) ((int64_t *)col->vals)[r->nrows] = neg ? -(int64_t)m : (int64_t)m;
        return next;
    }
    if (col->type == TK_COL_INT64_LIST) {
        /* ids of at most 18 digits separated by '|' (no signs), room for them all */
        if (q != p) return NULL;
        if (*q == ',' || *q == '\n' || *q == '\r') /* the empty list */
            return number_end(q, end, last);
        if (!col->vals) return NULL;
        int64_t *ids = (int64_t *)col->vals + col->nvals, *ids_end = (int64_t *)col->vals + col->capvals;
        for (;;) {
            const char *d0 = q;
            m = 0;
            while ((d = (unsigned)(unsigned char)*q - '0') <= 9) {
                m = m * 10 + d;
                q++;
            }
            if (q == d0 || q - d0 > 18 || ids == ids_end) return NULL;
            *ids++ = (int64_t)m;
            if (*q != '|') break;
            q++;
        }
        /* a cell over the column's limit goes to the slow path, which names it */
        if (col->max_count && ids - ((int64_t *)col->vals + col->nvals) > col->max_count) return NULL;
        const char *next = number_end(q, end, last);
        if (next) col->nvals = ids - (int64_t *)col->vals;
        return next;
    }
    if (col->type != TK_COL_FLOAT32) return NULL;
    while ((d = (unsigned)(unsigned char)*q - '0') <= 9) {
        m = m * 10 + d;
        q++;
    }
    ptrdiff_t nd = q - digits, frac = 0;
    if (*q == '.') {
        const char *f0 = ++q;
        while ((d = (unsigned)(unsigned char)*q - '0') <= 9) {
            m = m * 10 + d;
            q++;
        }
        frac = q - f0;
        nd += frac;
    }
    float v;
    if (nd == 0 || nd > 19 || !decimal_to_f32(m, -(int)frac, neg, &v)) return NULL;
    const char *next = number_end(q, end, last);
    if (next) ((float *)col->vals)[r->nrows] = v;
    return next;
}

/* Parses the record at r->pos into row r->nrows of the columns. */
static int parse_row(tk_csv_reader *r) {
    const char *p = r->buf + r->pos, *end = r->buf + r->end;
    if (p == end) return r->eof ? R_END : R_MORE;
    int blank = skip_blank(r, p);
    if (blank != R_OK) return blank;
    int32_t f = 0;
    field fd;
    for (;;) {
        int32_t c = f < r->nfields ? r->field_col[f] : -1;
        if (c >= 0) {
            bool last;
            const char *next = fast_cell(r, &r->cols[c], p, end, &last);
            if (next) {
                f++;
                p = next;
                if (last) break;
                continue;
            }
        }
        int rc = scan_field(r, p, f, &fd);
        if (rc != R_OK) return rc;
        if (c >= 0 && parse_cell(r, c, fd.s, fd.e, fd.escaped) != TK_OK) return R_ERROR;
        f++;
        p = fd.next;
        if (fd.last) break;
    }
    if (f != r->nfields) {
        tk_set_error("%s: row %lld has %d field%s, the header has %d", r->path, (long long)(r->row + 1), (int)f,
                     f == 1 ? "" : "s", (int)r->nfields);
        return R_ERROR;
    }
    r->pos = (size_t)(p - r->buf);
    r->row++;
    return R_OK;
}

/* Moves the unparsed rest to the front and reads more after it (growing the buffer
 * when one record fills it). */
static tk_status refill(tk_csv_reader *r) {
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->end - r->pos);
        r->end -= r->pos;
        r->pos = 0;
    }
    if (r->end == r->cap) {
        size_t cap = r->cap * 2;
        char *b = realloc(r->buf, cap + 1);
        if (!b) {
            tk_set_error("%s: out of memory: a record is longer than %zu bytes", r->path, r->cap);
            return TK_ERROR;
        }
        r->buf = b;
        r->cap = cap;
    }
    size_t want = r->cap - r->end;
    size_t got = fread(r->buf + r->end, 1, want, r->f);
    if (got < want) {
        if (ferror(r->f)) {
            tk_set_error("%s: read failed: %s", r->path, strerror(errno));
            return TK_ERROR;
        }
        r->eof = true;
    }
    /* CSV is text: a NUL byte (a binary or corrupt file) would end a cell early, since
     * the parser reads up to the sentinel, and cut a header name; refuse it, naming the
     * row it is in */
    const char *nul = memchr(r->buf + r->end, '\0', got);
    if (nul) {
        int64_t row = r->row + 1;
        for (const char *p = r->buf + r->pos; p < nul; p++) row += *p == '\n';
        tk_set_error("%s: row %lld: a NUL byte (CSV is text: is the file binary or corrupt?)", r->path, (long long)row);
        return TK_ERROR;
    }
    r->end += got;
    r->buf[r->end] = '\0';
    return TK_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Opening: the header                                                                    */
/* ------------------------------------------------------------------------------------ */

static void free_header(char **h, int32_t n) {
    if (!h) return;
    for (int32_t i = 0; i < n; i++) free(h[i]);
    free(h);
}

/* Reads the header record into r->header. */
static tk_status read_header(tk_csv_reader *r) {
    for (;;) {
        const char *p = r->buf + r->pos, *end = r->buf + r->end;
        if (p == end && r->eof) {
            tk_set_error("%s: the file is empty (no header row)", r->path);
            return TK_ERROR;
        }
        int rc = R_MORE;
        if (p < end) {
            if (*p == '\n' || (*p == '\r' && (p + 1 == end ? r->eof : p[1] == '\n'))) {
                tk_set_error("%s: row 1 (the header) is empty", r->path);
                return TK_ERROR;
            }
            char **names = NULL;
            int32_t n = 0, cap = 0;
            field fd;
            for (;;) {
                rc = scan_field(r, p, n, &fd);
                if (rc != R_OK) break;
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    char **h = realloc(names, (size_t)cap * sizeof *h);
                    if (!h) {
                        rc = R_ERROR;
                        tk_set_error("out of memory");
                        break;
                    }
                    names = h;
                }
                size_t len = (size_t)(fd.e - fd.s);
                char *name = malloc(len + 1);
                if (!name) {
                    rc = R_ERROR;
                    tk_set_error("out of memory");
                    break;
                }
                size_t k = 0;
                for (const char *q = fd.s; q < fd.e; q++) {
                    name[k++] = *q;
                    if (fd.escaped && *q == '"') q++;
                }
                name[k] = '\0';
                names[n++] = name;
                p = fd.next;
                if (fd.last) break;
            }
            if (rc == R_OK) {
                r->header = names;
                r->nfields = n;
                r->pos = (size_t)(p - r->buf);
                r->row = 1;
                return TK_OK;
            }
            free_header(names, n);
            if (rc == R_ERROR) return TK_ERROR;
        }
        if (refill(r) != TK_OK) return TK_ERROR;
    }
}

/* Maps the requested columns to header fields; the error lists the header. */
static tk_status match_columns(tk_csv_reader *r) {
    if (!(r->field_col = malloc((size_t)(r->nfields ? r->nfields : 1) * sizeof *r->field_col))) {
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    for (int32_t f = 0; f < r->nfields; f++) r->field_col[f] = -1;
    for (int32_t c = 0; c < r->ncols; c++) {
        int32_t found = -1;
        for (int32_t f = 0; f < r->nfields; f++) {
            if (strcmp(r->header[f], r->cols[c].name) != 0) continue;
            if (found >= 0) {
                tk_set_error("%s: column '%s' appears twice in the header (fields %d and %d)", r->path, r->cols[c].name,
                             (int)found + 1, (int)f + 1);
                return TK_ERROR;
            }
            found = f;
        }
        if (found < 0) {
            tk_sbuf list = { 0 };
            for (int32_t f = 0; f < r->nfields && list.len < 400; f++) {
                if (f) tk_sbuf_puts(&list, ", ");
                tk_sbuf_puts(&list, r->header[f]);
                if (f + 1 < r->nfields && list.len >= 400) tk_sbuf_puts(&list, ", ...");
            }
            tk_set_error("%s: no column '%s' in the header (its %d column%s: %s)", r->path, r->cols[c].name,
                         (int)r->nfields, r->nfields == 1 ? "" : "s", list.data ? list.data : "");
            free(list.data);
            return TK_ERROR;
        }
        r->cols[c].field = found;
        r->field_col[found] = c;
    }
    return TK_OK;
}

void tk_csv_close(tk_csv_reader *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
    for (int32_t c = 0; c < r->ncols; c++) {
        free(r->cols[c].name);
        free(r->cols[c].vals);
        free(r->cols[c].offs);
    }
    free(r->cols);
    free(r->lists);
    free(r->field_col);
    free_header(r->header, r->nfields);
    free(r->scratch);
    free(r->buf);
    free(r->path);
    free(r);
}

tk_csv_reader *tk_csv_open(const char *path, int32_t ncols, const tk_column_spec *cols) {
    if (!path) {
        tk_set_error("csv_open: path is NULL");
        return NULL;
    }
    if (ncols < 0 || (ncols > 0 && !cols)) {
        tk_set_error("%s: csv_open needs ncols >= 0 column specs", path);
        return NULL;
    }
    for (int32_t c = 0; c < ncols; c++) {
        if (!cols[c].name || !*cols[c].name) {
            tk_set_error("%s: column spec %d has no name", path, (int)c);
            return NULL;
        }
        if ((unsigned)cols[c].type > TK_COL_INT64_LIST) {
            tk_set_error("%s: column '%s': unknown column type %d", path, cols[c].name, (int)cols[c].type);
            return NULL;
        }
        for (int32_t d = 0; d < c; d++) {
            if (strcmp(cols[d].name, cols[c].name) == 0) {
                tk_set_error("%s: column '%s' is requested twice", path, cols[c].name);
                return NULL;
            }
        }
    }
    tk_csv_reader *r = calloc(1, sizeof *r);
    if (!r) {
        tk_set_error("out of memory");
        return NULL;
    }
    if (!(r->path = tk_strdup(path)) || !(r->buf = malloc(CSV_BLOCK + 1)) ||
        !(r->cols = calloc((size_t)(ncols ? ncols : 1), sizeof *r->cols)) ||
        !(r->lists = malloc((size_t)(ncols ? ncols : 1) * sizeof *r->lists))) {
        tk_set_error("out of memory");
        goto fail;
    }
    r->cap = CSV_BLOCK;
    r->buf[0] = '\0';
    r->ncols = ncols;
    for (int32_t c = 0; c < ncols; c++) {
        if (!(r->cols[c].name = tk_strdup(cols[c].name))) {
            tk_set_error("out of memory");
            goto fail;
        }
        r->cols[c].type = cols[c].type;
        r->cols[c].max_count = cols[c].max_count > 0 ? cols[c].max_count : 0;
        if (cols[c].type == TK_COL_INT64_LIST) r->lists[r->nlists++] = c;
    }
    struct stat sb;
    if (!(r->f = tk_fopen_regular(path, &sb))) {
        tk_set_error("%s: cannot open: %s", path, tk_io_strerror(errno));
        goto fail;
    }
    setvbuf(r->f, NULL, _IONBF, 0); /* we read in large blocks ourselves */
    if (refill(r) != TK_OK) goto fail;
    if (r->end >= 3 && memcmp(r->buf, "\xEF\xBB\xBF", 3) == 0) r->pos = 3;
    if (read_header(r) != TK_OK || match_columns(r) != TK_OK) goto fail;
    return r;
fail:
    tk_csv_close(r);
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Chunks                                                                                 */
/* ------------------------------------------------------------------------------------ */

void tk_columns_free(tk_columns *c) {
    if (!c) return;
    for (int32_t i = 0; i < c->ncols; i++) {
        if (c->names) free(c->names[i]);
        if (c->values) tk_tensor_release(c->values[i]);
        if (c->offsets) tk_tensor_release(c->offsets[i]);
    }
    free(c->names);
    free(c->types);
    free(c->values);
    free(c->offsets);
    free(c);
}

/* p shrunk to `bytes` (freed and NULL for 0); p itself if realloc fails. */
static void *shrink(void *p, size_t bytes) {
    if (!p) return NULL;
    if (bytes == 0) {
        free(p);
        return NULL;
    }
    void *q = realloc(p, bytes);
    return q ? q : p;
}

/* Hands the chunk's arrays over as tensors (shrunk to size) and resets the chunk. */
static tk_columns *take_chunk(tk_csv_reader *r) {
    int32_t n = r->ncols;
    size_t m = (size_t)(n ? n : 1);
    tk_columns *out = calloc(1, sizeof *out);
    if (!out || !(out->names = calloc(m, sizeof *out->names)) || !(out->types = calloc(m, sizeof *out->types)) ||
        !(out->values = calloc(m, sizeof *out->values)) || !(out->offsets = calloc(m, sizeof *out->offsets))) {
        tk_columns_free(out);
        tk_set_error("out of memory");
        return NULL;
    }
    out->ncols = n;
    out->nrows = r->nrows;
    bool ok = true;
    for (int32_t c = 0; c < n; c++) {
        csv_col *col = &r->cols[c];
        out->types[c] = col->type;
        if (!(out->names[c] = tk_strdup(col->name))) ok = false;
        if (col->type == TK_COL_INT64_LIST) {
            int64_t rows1 = r->nrows + 1;
            int64_t *offs = col->offs;
            if (!offs && (offs = malloc(sizeof *offs)) != NULL) offs[0] = 0;
            if (offs && r->nrows < r->caprows) offs = shrink(offs, (size_t)rows1 * sizeof *offs);
            void *vals =
                col->nvals < col->capvals ? shrink(col->vals, (size_t)col->nvals * sizeof(int64_t)) : col->vals;
            out->values[c] = tk_tensor_adopt(TK_I64, 1, &col->nvals, vals);
            out->offsets[c] = offs ? tk_tensor_adopt(TK_I64, 1, &rows1, offs) : NULL;
            col->offs = NULL;
            col->vals = NULL;
            col->nvals = col->capvals = 0;
            if (!out->values[c] || !out->offsets[c]) ok = false;
        } else {
            tk_dtype dt = col->type == TK_COL_INT64 ? TK_I64 : TK_F32;
            void *vals = r->nrows < r->caprows ? shrink(col->vals, (size_t)r->nrows * tk_dtype_size(dt)) : col->vals;
            out->values[c] = tk_tensor_adopt(dt, 1, &r->nrows, vals);
            col->vals = NULL;
            if (!out->values[c]) ok = false;
        }
    }
    r->nrows = 0;
    r->caprows = 0;
    if (!ok) {
        tk_columns_free(out);
        tk_set_error("out of memory");
        return NULL;
    }
    return out;
}

tk_columns *tk_csv_next(tk_csv_reader *r, int64_t max_rows) {
    if (!r) {
        tk_set_error("csv_next: reader is NULL");
        return NULL;
    }
    if (r->failed) {
        tk_set_error("%s: the reader stopped at an earlier error", r->path);
        return NULL;
    }
    while (!r->done && (max_rows <= 0 || r->nrows < max_rows)) {
        if (r->nrows == r->caprows && grow_rows(r, max_rows) != TK_OK) goto fail;
        int rc = parse_row(r);
        if (rc == R_OK) {
            r->nrows++;
            for (int32_t i = 0; i < r->nlists; i++) {
                csv_col *col = &r->cols[r->lists[i]];
                col->offs[r->nrows] = col->nvals;
            }
        } else if (rc == R_MORE) {
            for (int32_t i = 0; i < r->nlists; i++) { /* forget the ids of the cut record */
                csv_col *col = &r->cols[r->lists[i]];
                col->nvals = col->offs[r->nrows];
            }
            if (refill(r) != TK_OK) goto fail;
        } else if (rc == R_END) {
            r->done = true;
        } else if (rc == R_ERROR) {
            goto fail;
        } /* R_BLANK: next record */
    }
    tk_columns *out = take_chunk(r);
    if (out) return out;
fail:
    r->failed = true;
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Writing embeddings                                                                     */
/* ------------------------------------------------------------------------------------ */

tk_status tk_csv_write_embeddings(const char *path, const tk_tensor *ids, const tk_tensor *matrix) {
    if (!path || !ids || !matrix) {
        tk_set_error("csv_write_embeddings: %s is NULL", !path ? "path" : !ids ? "ids" : "matrix");
        return TK_ERROR;
    }
    char s1[64], s2[64];
    if (ids->dtype != TK_I64 || !(ids->ndim == 1 || (ids->ndim == 2 && ids->shape[1] == 1))) {
        tk_set_error("%s: ids must be int64 [N], got %s %s", path, tk_dtype_name(ids->dtype),
                     tk_shape_str(ids, s1, sizeof s1));
        return TK_ERROR;
    }
    if (matrix->dtype != TK_F32 || matrix->ndim != 2 || matrix->shape[0] != ids->shape[0]) {
        tk_set_error("%s: the embeddings must be float32 [N, D] with N = %lld ids, got %s %s", path,
                     (long long)ids->shape[0], tk_dtype_name(matrix->dtype), tk_shape_str(matrix, s2, sizeof s2));
        return TK_ERROR;
    }
    int64_t n = matrix->shape[0], d = matrix->shape[1];
    const float *x = tk_f32(matrix);
    const int64_t *id = tk_i64(ids);
    for (int64_t i = 0; i < n * d; i++) {
        if (!isfinite(x[i])) {
            tk_set_error("%s: embedding of id %lld (row %lld) has a non-finite value at column %lld", path,
                         (long long)id[i / d], (long long)(i / d), (long long)(i % d));
            return TK_ERROR;
        }
    }
    size_t cap = CSV_BLOCK, len = 0;
    char *buf = malloc(cap + 64);
    if (!buf) {
        tk_set_error("%s: out of memory", path);
        return TK_ERROR;
    }
    tk_atomic_file *af = tk_atomic_open(path);
    if (!af) {
        free(buf);
        return TK_ERROR;
    }
    tk_status st = TK_OK;
    memcpy(buf, "id", 2);
    len = 2;
    for (int64_t j = 0; j < d && st == TK_OK; j++) {
        len += (size_t)snprintf(buf + len, 32, ",e_%lld", (long long)j);
        if (len > cap) {
            st = tk_atomic_write(af, buf, len);
            len = 0;
        }
    }
    buf[len++] = '\n';
    for (int64_t i = 0; i < n && st == TK_OK; i++) {
        len += (size_t)tk_format_i64(id[i], buf + len);
        const float *row = x + i * d;
        for (int64_t j = 0; j < d; j++) {
            buf[len++] = ',';
            len += (size_t)tk_format_f32(row[j], buf + len);
            if (len > cap) {
                if ((st = tk_atomic_write(af, buf, len)) != TK_OK) break;
                len = 0;
            }
        }
        buf[len++] = '\n';
        if (st == TK_OK && len > cap) {
            st = tk_atomic_write(af, buf, len);
            len = 0;
        }
    }
    if (st == TK_OK) st = tk_atomic_write(af, buf, len);
    free(buf);
    return tk_atomic_commit(af); /* fails, and removes the file, after a failed write */
}
