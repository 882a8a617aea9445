/* The OpenBLAS kernel: which one runs, which one this CPU could run, a one-line warning
 * when they differ, and the re-exec that fixes it for a launcher. See towerkit.h.
 *
 * OpenBLAS (DYNAMIC_ARCH) chooses its kernels in its library constructor from
 * OPENBLAS_CORETYPE or its table of CPU models; a table older than the CPU ends in the
 * Prescott kernels. The features cpuid reports do not age that way, so the best kernel
 * is chosen from them, and a process that wants it must set the variable and start
 * again: nothing later in the process changes OpenBLAS's choice. */
#include "internal.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <strings.h>
#include <unistd.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#define CORETYPE_ENV "OPENBLAS_CORETYPE"
#define REEXEC_ENV "TOWERKIT_BLAS_REEXEC" /* the value tk_blas_reexec_if_weaker set */
#define QUIET_ENV "TOWERKIT_QUIET_BLAS"

/* The kernels we choose or meet, by their speed at float32 matrix products. Kernels of
 * one rank run the same sgemm code: Zen's is Haswell's AVX2 kernel; Cooperlake and
 * SapphireRapids add bfloat16 (and AMX) kernels to SkylakeX's. OpenBLAS 0.3.21 cannot
 * force SapphireRapids (force_coretype stops at Cooperlake), so it is never chosen. */
static const struct {
    const char *name;
    int rank;
} kernels[] = {
    { "Prescott", 1 }, { "Nehalem", 2 },  { "Sandybridge", 3 }, { "Haswell", 4 },
    { "Zen", 4 },      { "SkylakeX", 5 }, { "Cooperlake", 5 },  { "SapphireRapids", 5 },
};

static int kernel_rank(const char *name) {
    for (size_t i = 0; name && i < TK_ARRAY_LEN(kernels); i++)
        if (strcasecmp(name, kernels[i].name) == 0) return kernels[i].rank;
    return 0;
}

bool tk_blas_kernel_weaker(const char *kernel, const char *best) {
    int k = kernel_rank(kernel), b = kernel_rank(best);
    return k > 0 && b > 0 && k < b;
}

const char *tk_blas_kernel_for(const tk_cpu_features *f) {
    bool avx = f->avx && f->os_avx;
    if (avx && f->avx512f && f->avx512bw && f->avx512dq && f->avx512vl && f->os_avx512)
        return f->avx512bf16 ? "Cooperlake" : "SkylakeX";
    if (avx && f->avx2 && f->fma) return f->amd ? "Zen" : "Haswell";
    if (avx) return "Sandybridge";
    return f->sse42 ? "Nehalem" : "Prescott";
}

#if defined(__x86_64__) && defined(__GNUC__)
bool tk_cpu_detect(tk_cpu_features *f, char *cpu, size_t len) {
    memset(f, 0, sizeof *f);
    snprintf(cpu, len, "unknown");
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    char vendor[13];
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    vendor[12] = '\0';
    f->amd = strcmp(vendor, "AuthenticAMD") == 0 || strcmp(vendor, "HygonGenuine") == 0;

    unsigned brand[13] = { 0 }; /* 48 characters and a terminating zero */
    for (unsigned i = 0; i < 3; i++)
        if (!__get_cpuid(0x80000002u + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2], &brand[4 * i + 3]))
            brand[0] = 0;
    const char *name = (const char *)brand;
    while (*name == ' ') name++;
    snprintf(cpu, len, "%s%s%s", vendor, *name ? " " : "", name);

    if (__get_cpuid(1, &a, &b, &c, &d)) {
        f->fma = c >> 12 & 1;
        f->sse42 = c >> 20 & 1;
        f->avx = c >> 28 & 1;
        /* The OS saves a register file across context switches only if XCR0 says so;
         * xgetbv exists only with OSXSAVE (bit 27). */
        if (c >> 27 & 1) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            f->os_avx = (lo & 0x6) == 0x6;                   /* SSE and YMM */
            f->os_avx512 = f->os_avx && (lo & 0xe0) == 0xe0; /* opmask, ZMM0-15 upper, ZMM16-31 */
        }
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        unsigned subleaves = a;
        f->avx2 = b >> 5 & 1;
        f->avx512f = b >> 16 & 1;
        f->avx512dq = b >> 17 & 1;
        f->avx512bw = b >> 30 & 1;
        f->avx512vl = b >> 31 & 1;
        if (subleaves >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f->avx512bf16 = a >> 5 & 1;
    }
    return true;
}
#else
bool tk_cpu_detect(tk_cpu_features *f, char *cpu, size_t len) {
    memset(f, 0, sizeof *f);
    snprintf(cpu, len, "unknown");
    return false;
}
#endif

/* The CPU does not change: read it once. */
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static bool cpu_known;
static tk_cpu_features cpu_features;
static char cpu_name[64];

static void cpu_init(void) { cpu_known = tk_cpu_detect(&cpu_features, cpu_name, sizeof cpu_name); }

void tk_blas_get_info(tk_blas_info *out) {
    pthread_once(&cpu_once, cpu_init);
    memset(out, 0, sizeof *out);
    const char *kernel = openblas_get_corename();
    snprintf(out->kernel, sizeof out->kernel, "%s", kernel ? kernel : "unknown");
    /* Only a DYNAMIC_ARCH build has other kernels to choose from. */
    const char *config = openblas_get_config();
    bool dynamic = config && strstr(config, "DYNAMIC_ARCH");
    snprintf(out->best, sizeof out->best, "%s", cpu_known && dynamic ? tk_blas_kernel_for(&cpu_features) : out->kernel);
    out->below_best = tk_blas_kernel_weaker(out->kernel, out->best);
    const char *set = getenv(CORETYPE_ENV), *ours = getenv(REEXEC_ENV);
    bool by_reexec = set && ours && strcasecmp(set, ours) == 0;
    out->user_set = set && !by_reexec;
    out->threads = tk_get_num_threads();
    out->blas_threads = openblas_get_num_threads();
    snprintf(out->cpu, sizeof out->cpu, "%s", cpu_name);
    if (!out->below_best) return;
    if (by_reexec)
        snprintf(out->advice, sizeof out->advice,
                 "this OpenBLAS ignored " CORETYPE_ENV "=%s: install an OpenBLAS that knows the name", set);
    else if (out->user_set)
        snprintf(out->advice, sizeof out->advice, "set " CORETYPE_ENV "=%s instead of %s for faster matrix products",
                 out->best, set);
    else
        snprintf(out->advice, sizeof out->advice,
                 "set " CORETYPE_ENV "=%s before starting the process for faster matrix products", out->best);
}

static pthread_once_t warn_once = PTHREAD_ONCE_INIT;

static void warn(void) {
    const char *quiet = getenv(QUIET_ENV);
    if (quiet && quiet[0] && strcmp(quiet, "0") != 0) return;
    tk_blas_info info;
    tk_blas_get_info(&info);
    if (info.below_best)
        fprintf(stderr,
                "towerkit: OpenBLAS runs its %s kernels; this CPU supports %s: %s (" QUIET_ENV "=1 silences this)\n",
                info.kernel, info.best, info.advice);
}

void tk_blas_warn_once(void) { pthread_once(&warn_once, warn); }

void tk_blas_reexec_if_weaker(char **argv) {
    if (!argv || !argv[0] || getenv(CORETYPE_ENV) || getenv(REEXEC_ENV)) return;
    tk_blas_info info;
    tk_blas_get_info(&info);
    if (!info.below_best) return;
    /* The marker first: it makes user_set false in the new process, and it stops a second
     * re-exec even if something between the two processes dropped OPENBLAS_CORETYPE. */
    if (setenv(REEXEC_ENV, info.best, 1) == 0 && setenv(CORETYPE_ENV, info.best, 1) == 0) {
        fflush(NULL);
        execv("/proc/self/exe", argv);
    }
    /* No /proc, or no memory: run on with the kernel we have; the first load warns. */
    unsetenv(CORETYPE_ENV);
    unsetenv(REEXEC_ENV);
}
