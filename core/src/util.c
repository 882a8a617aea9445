/* Small helpers shared by the core's translation units (declared in internal.h). */
#include "internal.h"

#include <cJSON.h>

int tk_strcmp_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

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
