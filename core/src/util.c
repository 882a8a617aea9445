/* Small helpers shared by the core's translation units (declared in internal.h). */
#include "internal.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>

int tk_strcmp_ptr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

void *tk_memdup(const void *p, size_t size) {
    void *c = malloc(size ? size : 1);
    if (c && size) memcpy(c, p, size);
    return c;
}

const char *tk_json_kind(const struct cJSON *v) {
    if (!v) return "missing";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    return "null";
}

int64_t tk_first_nonfinite_row(const tk_tensor *t, float *value) {
    if (t->dtype != TK_F32 || t->numel == 0) return -1;
    const float *x = t->data;
    int64_t cols = t->ndim > 0 && t->shape[0] > 0 ? t->numel / t->shape[0] : t->numel;
    for (int64_t i = 0; i < t->numel; i++) {
        if (!isfinite(x[i])) {
            if (value) *value = x[i];
            return i / cols;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* Numbers as text: the one float formatter (CSV cells, block configs)                   */
/* ------------------------------------------------------------------------------------ */

/* Every entry is the double nearest 10^k (the compiler rounds each literal correctly). */
const double tk_pow10_tab[121] = {
    1e-60, 1e-59, 1e-58, 1e-57, 1e-56, 1e-55, 1e-54, 1e-53, 1e-52, 1e-51, 1e-50, 1e-49, 1e-48, 1e-47, 1e-46, 1e-45,
    1e-44, 1e-43, 1e-42, 1e-41, 1e-40, 1e-39, 1e-38, 1e-37, 1e-36, 1e-35, 1e-34, 1e-33, 1e-32, 1e-31, 1e-30, 1e-29,
    1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13,
    1e-12, 1e-11, 1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,  1e-4,  1e-3,  1e-2,  1e-1,  1e0,   1e1,   1e2,   1e3,
    1e4,   1e5,   1e6,   1e7,   1e8,   1e9,   1e10,  1e11,  1e12,  1e13,  1e14,  1e15,  1e16,  1e17,  1e18,  1e19,
    1e20,  1e21,  1e22,  1e23,  1e24,  1e25,  1e26,  1e27,  1e28,  1e29,  1e30,  1e31,  1e32,  1e33,  1e34,  1e35,
    1e36,  1e37,  1e38,  1e39,  1e40,  1e41,  1e42,  1e43,  1e44,  1e45,  1e46,  1e47,  1e48,  1e49,  1e50,  1e51,
    1e52,  1e53,  1e54,  1e55,  1e56,  1e57,  1e58,  1e59,  1e60,
};

static int fmt_u64(uint64_t v, char *out) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

int tk_format_i64(int64_t v, char *out) {
    if (v < 0) {
        out[0] = '-';
        return 1 + fmt_u64((uint64_t)0 - (uint64_t)v, out + 1);
    }
    return fmt_u64((uint64_t)v, out);
}

/* Writes m * 10^q in the style of %g (plain from 1e-5 up to 1e9, else d.ddde[-]x). */
static int fmt_decimal(uint64_t m, int q, char *out) {
    while (m && m % 10 == 0) {
        m /= 10;
        q++;
    }
    char d[24];
    int n = fmt_u64(m, d);
    int x = q + n - 1; /* the exponent of the first digit */
    char *o = out;
    if (x >= -5 && x < 9) {
        if (q >= 0) {
            memcpy(o, d, (size_t)n);
            o += n;
            for (int i = 0; i < q; i++) *o++ = '0';
        } else if (x >= 0) {
            memcpy(o, d, (size_t)x + 1);
            o += x + 1;
            *o++ = '.';
            memcpy(o, d + x + 1, (size_t)(n - x - 1));
            o += n - x - 1;
        } else {
            *o++ = '0';
            *o++ = '.';
            for (int i = 0; i < -x - 1; i++) *o++ = '0';
            memcpy(o, d, (size_t)n);
            o += n;
        }
    } else {
        *o++ = d[0];
        if (n > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)n - 1);
            o += n - 1;
        }
        *o++ = 'e';
        if (x < 0) {
            *o++ = '-';
            x = -x;
        }
        o += fmt_u64((uint64_t)x, o);
    }
    return (int)(o - out);
}

/* The rounding interval of a float and the probe of one digit count for it. */
typedef struct f32_interval {
    double a, lo_mid, hi_mid; /* |v| and the midpoints to its neighbours */
    bool even;                /* a decimal exactly at a midpoint reads as the even float */
    int e10;                  /* 10^e10 <= a < 10^(e10 + 1) */
} f32_interval;

/* Rounds a to p significant digits (m * 10^q); true if that reads back as a. The
 * decimal is rounded in double precision; when its double value d is known to be exact
 * it is compared exactly (ties to even, as strtof), otherwise it must lie inside the
 * interval by far more than the double arithmetic's error. */
static bool f32_probe(const f32_interval *iv, int p, uint64_t *m_out, int *q_out) {
    int q = iv->e10 - p + 1;
    double m = (double)(int64_t)(iv->a * tk_p10(-q) + 0.5); /* < 10^10 */
    if (m <= 0) return false;
    double d = q >= -22 && q < 0 ? m / tk_p10(-q) : m * tk_p10(q); /* a division by an exact power rounds once */
    double tol = d * 1e-14;
    bool ok;
    if (d - iv->lo_mid > tol && iv->hi_mid - d > tol) {
        ok = true; /* clearly inside */
    } else if (iv->lo_mid - d > tol || d - iv->hi_mid > tol) {
        ok = false; /* clearly outside */
    } else {        /* at an edge: decide exactly if d is exactly the decimal, else refuse */
        bool exact = q >= 0 ? q <= 22 && d < 9007199254740992.0 : q >= -22 && fma(d, tk_p10(-q), -m) == 0;
        ok = exact && ((d > iv->lo_mid && d < iv->hi_mid) || ((d == iv->lo_mid || d == iv->hi_mid) && iv->even));
    }
    if (ok) {
        *m_out = (uint64_t)m;
        *q_out = q;
    }
    return ok;
}

/* The shortest decimal (of at most 9 significant digits) that reads back as v, written
 * into out (at least 32 bytes); v finite. Every accepted candidate reads back exactly
 * (f32_probe); more digits never read back worse, so the count is searched: 8 first
 * (most floats of a trained model need 8 or 9), then 7, then a binary search below. */
int tk_format_f32(float v, char *out) {
    if (v == 0) {
        if (signbit(v)) {
            memcpy(out, "-0", 2);
            return 2;
        }
        out[0] = '0';
        return 1;
    }
    char *o = out;
    if (v < 0) *o++ = '-';
    float af = fabsf(v);
    f32_interval iv;
    iv.a = af;
    uint32_t bits;
    memcpy(&bits, &af, 4);
    iv.even = (bits & 1) == 0;
    uint32_t ub = bits + 1, db = bits - 1; /* the neighbours (bits > 0 here) */
    float up, dn;
    memcpy(&up, &ub, 4);
    memcpy(&dn, &db, 4);
    iv.lo_mid = (iv.a + (double)dn) / 2;
    iv.hi_mid = isinf(up) ? iv.a + (iv.a - (double)dn) / 2 : (iv.a + (double)up) / 2;
    int e2;
    frexp(iv.a, &e2);
    int e10 = (int)floor((e2 - 1) * 0.30102999566398120); /* then fixed up */
    if (e10 < -45) e10 = -45;
    while (e10 < 38 && iv.a >= tk_p10(e10 + 1)) e10++;
    while (e10 > -45 && iv.a < tk_p10(e10)) e10--;
    iv.e10 = e10;
    uint64_t m = 0;
    int q = 0;
    bool found;
    if (!f32_probe(&iv, 8, &m, &q)) {
        found = f32_probe(&iv, 9, &m, &q);
    } else {
        found = true;
        if (f32_probe(&iv, 7, &m, &q)) {
            int lo = 1, hi = 6;
            while (lo <= hi) {
                int p = (lo + hi) / 2;
                if (f32_probe(&iv, p, &m, &q))
                    hi = p - 1;
                else
                    lo = p + 1;
            }
        }
    }
    if (!found) { /* not expected; %.9g always reads back */
        char tmp[40];
        int n = snprintf(tmp, sizeof tmp, "%.9g", (double)af);
        for (int i = 0; i < n; i++)
            if (!(tmp[i] >= '0' && tmp[i] <= '9') && tmp[i] != 'e' && tmp[i] != '-' && tmp[i] != '+') tmp[i] = '.';
        memcpy(o, tmp, (size_t)n);
        return (int)(o - out) + n;
    }
    return (int)(o - out) + fmt_decimal(m, q, o);
}

int64_t tk_lower_bound_i64(const int64_t *a, int64_t n, int64_t v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int tk_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t tk_pairs_lower_bound(const int64_t *pairs, int64_t n, int64_t id) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (pairs[2 * mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}
