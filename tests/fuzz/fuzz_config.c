/* fuzz_config.c - tk_block_from_config_json (a checkpoint's config.json) on any text:
 * every kind's from_config, nested blocks, shapes and sizes must be checked before use.
 * A block that builds is released. (A config may validly ask for a table too large for
 * memory: scripts/run-fuzz.sh makes allocations over 1 GiB return NULL, which must
 * become an error.)
 * Seeds: corpus/config (configs model:save wrote). */
#include "fuzz_common.h"
#include "towerkit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = malloc(size + 1);
    if (!json) return 0;
    memcpy(json, data, size);
    json[size] = '\0';
    tk_block *b = tk_block_from_config_json(json, 1);
    tk_block_release(b);
    free(json);
    return 0;
}
