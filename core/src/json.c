/* JSON in and out for every file and message the project reads or writes (block
 * configs, checkpoint and safetensors headers, schema files through the binding, the
 * server's config and request bodies), on cJSON with what cJSON lets through closed off.
 *
 * Reading (tk_json_parse): cJSON accepts numbers with leading zeros (0100), text after
 * the value, NUL characters that cut its C strings short, numbers too large for a double
 * (1e999 becomes an infinity that no JSON writer can write back), and reports nesting
 * past its limit as a syntax error at the byte where it stopped. A scan of the text
 * before cJSON parses it, and a walk of the tree after, refuse each with the file (what),
 * the line and byte, or the field.
 *
 * Writing (tk_json_print): cJSON prints numbers with %1.15g and takes a near match for
 * equal, so 9007199254740991 comes out as 9.00719925474099e+15 and 0.1 + 0.2 as 0.3.
 * Numbers are printed here instead, exactly, and handed to cJSON as raw text. */
#include "internal.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------------------------------ */
/* Numbers as text                                                                        */
/* ------------------------------------------------------------------------------------ */

int tk_json_number_text(double d, char *out) {
    /* whole numbers a double holds exactly print as integers: no exponent, no rounding */
    if (d == floor(d) && fabs(d) <= 9007199254740992.0) return snprintf(out, TK_JSON_NUMBER_LEN, "%.0f", d);
    /* else the shortest of %.15g, %.16g, %.17g that reads back as the same double
     * (%.17g always does) */
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, TK_JSON_NUMBER_LEN, "%.*g", prec, d);
        if (strtod(out, NULL) == d) break;
    }
    return n;
}

/* Turns every number of the tree into raw text printed by tk_json_number_text. NULL on
 * success, else the first non-finite number (left as it is). */
static const cJSON *numbers_to_raw(cJSON *j) {
    for (; j; j = j->next) {
        if (cJSON_IsNumber(j)) {
            if (!isfinite(j->valuedouble)) return j;
            char text[TK_JSON_NUMBER_LEN];
            tk_json_number_text(j->valuedouble, text);
            cJSON *raw = cJSON_CreateRaw(text);
            if (!raw) return NULL; /* cJSON_Print below fails on no memory as well */
            /* the node keeps its place and key; only its value becomes the raw text
             * (allocated by cJSON, freed by cJSON_Delete) */
            j->type = cJSON_Raw;
            j->valuestring = raw->valuestring;
            raw->valuestring = NULL;
            cJSON_Delete(raw);
        } else if (j->child) {
            const cJSON *bad = numbers_to_raw(j->child);
            if (bad) return bad;
        }
    }
    return NULL;
}

char *tk_json_print(const void *root, bool pretty) {
    cJSON *copy = cJSON_Duplicate((const cJSON *)root, true);
    if (!copy) {
        tk_set_error("out of memory");
        return NULL;
    }
    if (numbers_to_raw(copy)) {
        /* the writers check their numbers first; this is the last guard */
        cJSON_Delete(copy);
        tk_set_error("a number is not finite (JSON has no infinities or NaNs)");
        return NULL;
    }
    char *s = pretty ? cJSON_Print(copy) : cJSON_PrintUnformatted(copy);
    cJSON_Delete(copy);
    if (!s) tk_set_error("out of memory");
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* Reading                                                                                */
/* ------------------------------------------------------------------------------------ */

/* "<what>: invalid JSON at line L (byte B)[: why]" for the byte at offset off. */
static void syntax_error(const char *text, size_t len, size_t off, const char *what, const char *why) {
    int line = 1;
    for (size_t i = 0; i < off && i < len; i++) line += text[i] == '\n';
    tk_set_error("%s%sinvalid JSON at line %d (byte %zu)%s%s", what ? what : "", what ? ": " : "", line, off + 1,
                 why ? ": " : "", why ? why : "");
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* What cJSON lets through or misreports, found in the text: NUL characters (raw or
 * \u0000), control characters in strings, leading zeros, nesting past the limit. The
 * rest of the syntax is cJSON's. */
static bool scan(const char *text, size_t len, const char *what) {
    int depth = 0;
    bool in_string = false, in_number = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\0') {
            syntax_error(text, len, i, what, "a NUL byte");
            return false;
        }
        if (in_string) {
            if (c == '"') {
                in_string = false;
            } else if (c == '\\' && i + 1 < len) {
                if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0) {
                    syntax_error(text, len, i, what, "a string holds a NUL character (\\u0000)");
                    return false;
                }
                i++; /* the escaped character, so \" and \\ do not end anything */
            } else if ((unsigned char)c < 0x20) {
                syntax_error(text, len, i, what, "a control character in a string (write it escaped)");
                return false;
            }
            continue;
        }
        bool number_char = is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
        if (in_number) {
            in_number = number_char;
            if (in_number) continue;
        } else if (is_digit(c) || c == '-') {
            /* outside strings a digit or '-' can only start a number (true, false and
             * null have neither) */
            in_number = true;
            size_t d = i + (c == '-');
            if (d + 1 < len && text[d] == '0' && is_digit(text[d + 1])) {
                syntax_error(text, len, i, what, "a number with a leading zero");
                return false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > TK_JSON_MAX_DEPTH) {
                char why[64];
                snprintf(why, sizeof why, "nesting deeper than %d levels", TK_JSON_MAX_DEPTH);
                syntax_error(text, len, i, what, why);
                return false;
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

/* Appends the key or index of j (a child of parent) to the path "a.b[2].c". */
static size_t path_push(char *path, size_t plen, size_t cap, const cJSON *parent, const cJSON *j, int index) {
    int n = cJSON_IsObject(parent) ? snprintf(path + plen, cap - plen, plen ? ".%s" : "%s", j->string)
                                   : snprintf(path + plen, cap - plen, "[%d]", index);
    size_t end = plen + (n > 0 ? (size_t)n : 0);
    return end < cap ? end : cap - 1;
}

/* The first number that is not finite (parsed from digits too large for a double), with
 * its path in path. */
static const cJSON *first_nonfinite(const cJSON *j, char *path, size_t plen, size_t cap) {
    int index = 0;
    for (const cJSON *e = j->child; e; e = e->next, index++) {
        size_t end = path_push(path, plen, cap, j, e, index);
        if (cJSON_IsNumber(e) && !isfinite(e->valuedouble)) return e;
        const cJSON *bad = e->child ? first_nonfinite(e, path, end, cap) : NULL;
        if (bad) return bad;
        path[plen] = '\0';
    }
    return NULL;
}

void *tk_json_parse(const char *text, size_t len, const char *what) {
    if (!text) {
        tk_set_error("%s%sthe JSON text is NULL", what ? what : "", what ? ": " : "");
        return NULL;
    }
    if (!scan(text, len, what)) return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0; /* cJSON points end at the error */
        syntax_error(text, len, at < len ? at : len, what, NULL);
        return NULL;
    }
    /* one document: only white space after it */
    for (size_t i = (size_t)(end - text); i < len; i++) {
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\n' && text[i] != '\r') {
            syntax_error(text, len, i, what, "text after the JSON value");
            cJSON_Delete(root);
            return NULL;
        }
    }
    char path[512] = "";
    const cJSON *bad =
        cJSON_IsNumber(root) && !isfinite(root->valuedouble) ? root : first_nonfinite(root, path, 0, sizeof path);
    if (bad) {
        tk_set_error("%s%s%s is a number too large for a double (%s)", what ? what : "", what ? ": " : "",
                     *path ? path : "the value", bad->valuedouble > 0 ? "inf" : "-inf");
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}
