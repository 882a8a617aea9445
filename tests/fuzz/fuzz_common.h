/* fuzz_common.h - what the libFuzzer harnesses of tests/fuzz share: a private directory
 * for the files a reader takes by path, and writing an input to one. `make fuzz` builds
 * them with clang -fsanitize=fuzzer,address,undefined (Makefile, "Fuzzing"). */
#ifndef TK_FUZZ_COMMON_H
#define TK_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A directory of this process (mkdtemp, created on first use; left for the system's
 * /tmp cleaning: libFuzzer exits from many places). */
static inline const char *fuzz_dir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/tk-fuzz-XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    return dir;
}

/* Writes data to <fuzz_dir>/name and returns the path (a static buffer). */
static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path;
}

#endif
