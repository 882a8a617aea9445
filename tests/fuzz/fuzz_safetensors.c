/* fuzz_safetensors.c - tk_safetensors_read on any bytes: a header length, a JSON header,
 * data offsets and shapes that do not fit the file must be errors, never a read outside
 * the buffer. Seeds: corpus/safetensors (files tk_safetensors_write wrote). */
#include "fuzz_common.h"
#include "towerkit.h"

static volatile uint8_t sink; /* keeps the reads of every tensor byte */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tk_safetensors *st = tk_safetensors_read(fuzz_file("w.safetensors", data, size));
    if (st) {
        uint8_t sum = 0; /* every byte the tensors claim: ASan sees a short buffer */
        for (int32_t i = 0; i < st->n; i++) {
            const tk_tensor *t = st->tensors[i];
            size_t bytes = (size_t)t->numel * (t->dtype == TK_F32 ? 4 : 8);
            for (size_t b = 0; b < bytes; b++) sum += ((const uint8_t *)t->data)[b];
            sum += (uint8_t)strlen(st->names[i]);
        }
        sink = sum;
        tk_safetensors_free(st);
    }
    return 0;
}
