/* Preloaded (LD_PRELOAD) into the launcher by blas_spec.lua to play an OpenBLAS that
 * does not know the CPU, as 0.3.21 does not know a Xeon 6 or a Zen 5: with
 * OPENBLAS_CORETYPE unset it reports the Prescott kernels it would fall back to. With
 * FAKE_CORENAME=always it reports them whatever the variable says (an OpenBLAS that
 * ignores the name it is given). Otherwise it asks the real OpenBLAS. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

char *openblas_get_corename(void) {
    const char *mode = getenv("FAKE_CORENAME");
    if (!getenv("OPENBLAS_CORETYPE") || (mode && strcmp(mode, "always") == 0)) return "Prescott";
    char *(*real)(void) = (char *(*)(void))dlsym(RTLD_NEXT, "openblas_get_corename");
    return real ? real() : "Prescott";
}
