/* The BLAS kernel: tk_blas_get_info against OpenBLAS, the kernel chosen for a table of
 * CPU features, the ranking of kernel names, user_set, and (in child processes started
 * with OPENBLAS_CORETYPE set) that forcing the best kernel leaves nothing below it and
 * that tk_blas_reexec_if_weaker never overrides a value the user set. Holds on any CPU:
 * it checks relations, not this machine's names. */
#include "internal.h"
#include "tk_test.h"

#include <cblas.h>
#include <strings.h>
#include <unistd.h>

static void test_info_is_filled(void) {
    tk_blas_info info;
    memset(&info, 0x55, sizeof info);
    tk_blas_get_info(&info);
    TK_CHECK(memchr(info.kernel, 0, sizeof info.kernel) && info.kernel[0]);
    TK_CHECK(memchr(info.best, 0, sizeof info.best) && info.best[0]);
    TK_CHECK(memchr(info.cpu, 0, sizeof info.cpu) && info.cpu[0]);
    TK_CHECK(memchr(info.advice, 0, sizeof info.advice));
    TK_CHECK_MSG(strcmp(info.kernel, openblas_get_corename()) == 0, "kernel %s, OpenBLAS %s", info.kernel,
                 openblas_get_corename());
    TK_CHECK(info.below_best == tk_blas_kernel_weaker(info.kernel, info.best));
    TK_CHECK(info.below_best == (info.advice[0] != '\0'));
    TK_CHECK(info.threads == tk_get_num_threads());
    TK_CHECK(info.blas_threads == openblas_get_num_threads());
    TK_CHECK(info.threads >= 1 && info.blas_threads >= 1);
#if defined(__x86_64__)
    /* Every x86-64 CPU has cpuid: the best kernel is one of ours. */
    TK_CHECK(strcmp(info.cpu, "unknown") != 0);
    TK_CHECK(tk_blas_kernel_weaker("Prescott", info.best) || strcasecmp(info.best, "Prescott") == 0);
#endif
}

static void test_kernel_for_features(void) {
    tk_cpu_features none = { 0 };
    TK_CHECK(strcmp(tk_blas_kernel_for(&none), "Prescott") == 0);
    tk_cpu_features f = { .sse42 = true };
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Nehalem") == 0);
    f.avx = true; /* the CPU has AVX but the OS does not save YMM: not usable */
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Nehalem") == 0);
    f.os_avx = true;
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Sandybridge") == 0);
    f.avx2 = true; /* AVX2 without FMA: the Haswell kernels need both */
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Sandybridge") == 0);
    f.fma = true;
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Haswell") == 0);
    f.amd = true;
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Zen") == 0);
    f.avx512f = f.avx512bw = f.avx512dq = true; /* no VL: not SkylakeX */
    f.os_avx512 = true;
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Zen") == 0);
    f.avx512vl = true;
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "SkylakeX") == 0);
    f.avx512bf16 = true;
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Cooperlake") == 0);
    f.os_avx512 = false; /* the OS does not save the ZMM state */
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Zen") == 0);
    f.amd = false;
    TK_CHECK(strcmp(tk_blas_kernel_for(&f), "Haswell") == 0);
}

static void test_ranking(void) {
    static const struct {
        const char *kernel, *best;
        bool weaker;
    } cases[] = {
        { "Prescott", "SkylakeX", true },
        { "Prescott", "Nehalem", true },
        { "Nehalem", "Sandybridge", true },
        { "Sandybridge", "Haswell", true },
        { "Haswell", "SkylakeX", true },
        { "Zen", "Cooperlake", true },
        { "Haswell", "Cooperlake", true },
        { "SkylakeX", "SkylakeX", false },
        { "Haswell", "Zen", false },
        { "Zen", "Haswell", false }, /* one AVX2 sgemm */
        { "SkylakeX", "Cooperlake", false },
        { "Cooperlake", "SkylakeX", false },
        { "SapphireRapids", "Cooperlake", false },
        { "SkylakeX", "Haswell", false },
        { "prescott", "SKYLAKEX", true },
        { "HASWELL", "haswell", false }, /* any case */
        { "Excavator", "Zen", false },
        { "Zen", "Excavator", false }, /* not ranked */
        { "Unknown", "SkylakeX", false },
        { "", "Haswell", false },
    };
    for (size_t i = 0; i < TK_ARRAY_LEN(cases); i++)
        TK_CHECK_MSG(tk_blas_kernel_weaker(cases[i].kernel, cases[i].best) == cases[i].weaker, "%s < %s",
                     cases[i].kernel, cases[i].best);
    TK_CHECK(!tk_blas_kernel_weaker(NULL, "SkylakeX"));
}

/* Runs the given OpenBLAS environment on the child mode of this program and reads its
 * line "kernel best below_best user_set". */
static bool child_info(const char *env, char *kernel, char *best, int *below, int *user) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return false;
    self[n] = '\0';
    char cmd[4500];
    snprintf(cmd, sizeof cmd, "env -u OPENBLAS_CORETYPE -u TOWERKIT_BLAS_REEXEC %s '%s' --child", env, self);
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    int got = fscanf(p, "%31s %31s %d %d", kernel, best, below, user);
    return pclose(p) == 0 && got == 4;
}

static void test_forcing_the_best(void) {
    tk_blas_info info;
    tk_blas_get_info(&info);
    char env[128], kernel[32], best[32];
    int below, user;
    snprintf(env, sizeof env, "OPENBLAS_CORETYPE=%s", info.best);
    TK_CHECK(child_info(env, kernel, best, &below, &user));
    TK_CHECK_MSG(strcasecmp(kernel, info.best) == 0, "forced %s, runs %s", info.best, kernel);
    TK_CHECK(strcmp(best, info.best) == 0);
    TK_CHECK(!below && user);
    /* Prescott is in every x86-64 OpenBLAS; the child re-executes itself if it can, and
     * must not: the user set the kernel. */
    TK_CHECK(child_info("OPENBLAS_CORETYPE=Prescott", kernel, best, &below, &user));
    TK_CHECK(strcmp(kernel, "Prescott") == 0 && user);
    TK_CHECK(below == tk_blas_kernel_weaker("Prescott", info.best));
    /* Unset: after the child's re-exec (if its OpenBLAS chose a weaker kernel) it runs a
     * kernel not below best, and reports it as its own choice, not the user's. */
    TK_CHECK(child_info("", kernel, best, &below, &user));
    TK_CHECK(!below && !user);
}

static void test_user_set(void) {
    const char *was = getenv("OPENBLAS_CORETYPE");
    char *saved = was ? strdup(was) : NULL;
    tk_blas_info info;
    unsetenv("OPENBLAS_CORETYPE");
    tk_blas_get_info(&info);
    TK_CHECK(!info.user_set);
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    tk_blas_get_info(&info);
    TK_CHECK(info.user_set);
    setenv("TOWERKIT_BLAS_REEXEC", "haswell", 1); /* set by a re-exec, not the user */
    tk_blas_get_info(&info);
    TK_CHECK(!info.user_set);
    setenv("TOWERKIT_BLAS_REEXEC", "SkylakeX", 1); /* the user changed it since */
    tk_blas_get_info(&info);
    TK_CHECK(info.user_set);
    unsetenv("TOWERKIT_BLAS_REEXEC");
    if (saved)
        setenv("OPENBLAS_CORETYPE", saved, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    free(saved);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--child") == 0) {
        tk_blas_reexec_if_weaker(argv);
        tk_blas_info info;
        tk_blas_get_info(&info);
        printf("%s %s %d %d\n", info.kernel, info.best, info.below_best, info.user_set);
        return 0;
    }
    TK_RUN(test_info_is_filled);
    TK_RUN(test_kernel_for_features);
    TK_RUN(test_ranking);
    TK_RUN(test_forcing_the_best);
    TK_RUN(test_user_set);
    return tk_test_summary();
}
