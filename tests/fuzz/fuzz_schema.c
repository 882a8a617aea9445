/* fuzz_schema.c - a checkpoint's schema.json as tk_model_load reads it (serving.c: the
 * feature names, list flags and the item id column, checked against the query tower)
 * on any text: a tiny trained checkpoint whose schema.json is the input. Seeds:
 * corpus/schema (schema.json files towerkit wrote, and the Merlin schema of tests/data). */
#include <unistd.h>

#include "fuzz_model.h"
#include "towerkit.h"

static char dir[160];

/* The checkpoint, trained before the first input (its allocations are not an input's). */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *model = fuzz_model_dir();
    snprintf(dir, sizeof dir, "%s/schema-model", fuzz_dir());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s'/*.json '%s'/*.safetensors '%s'/", dir, model, model, dir);
    if (system(cmd) != 0) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256];
    snprintf(path, sizeof path, "%s/schema.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    tk_model *m = tk_model_load(dir, NULL);
    tk_model_release(m);
    return 0;
}
