/* The core's thread pool (parallel.c): every task runs once, on at most the threads asked
 * for; jobs nest and run from several host threads at once; the thread count and
 * OpenBLAS's own; tk_split_range. test-tsan runs this file under ThreadSanitizer. */
#include "tk_test.h"
#include "internal.h"

#include <pthread.h>
#include <unistd.h>

extern int openblas_get_num_threads(void);

typedef struct count_job {
    int64_t ntasks;
    int threads;
    int *runs;    /* [ntasks]: how often each task ran (atomic) */
    int max_slot; /* the largest slot seen (atomic) */
    int nested;   /* > 0: each task runs a job of this many tasks itself */
    int64_t nested_sum;
} count_job;

static void count_task(void *arg, int64_t task, int slot) {
    count_job *j = arg;
    __atomic_fetch_add(&j->runs[task], 1, __ATOMIC_RELAXED);
    int seen = __atomic_load_n(&j->max_slot, __ATOMIC_RELAXED);
    while (slot > seen &&
           !__atomic_compare_exchange_n(&j->max_slot, &seen, slot, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    if (j->nested > 0) {
        int *runs = calloc((size_t)j->nested, sizeof *runs);
        count_job inner = { j->nested, j->threads, runs, 0, 0, 0 };
        tk_parallel_run(inner.ntasks, inner.threads, count_task, &inner);
        int64_t total = 0;
        for (int i = 0; i < j->nested; i++) total += runs[i];
        __atomic_fetch_add(&j->nested_sum, total, __ATOMIC_RELAXED);
        free(runs);
    }
}

/* Runs a job and checks that each task ran once on a slot below the thread count. */
static bool run_counted(int64_t ntasks, int threads, int nested) {
    int *runs = calloc((size_t)(ntasks > 0 ? ntasks : 1), sizeof *runs);
    count_job j = { ntasks, threads, runs, 0, nested, 0 };
    tk_parallel_run(ntasks, threads, count_task, &j);
    bool ok = j.max_slot < (threads > 0 ? threads : tk_get_num_threads());
    for (int64_t t = 0; t < ntasks; t++) ok = ok && runs[t] == 1;
    if (nested > 0) ok = ok && j.nested_sum == ntasks * nested;
    free(runs);
    return ok;
}

static void test_every_task_once(void) {
    for (int threads = 1; threads <= 4; threads++) {
        const int64_t sizes[] = { 0, 1, 2, 3, 7, 64, 1000 };
        for (size_t k = 0; k < TK_ARRAY_LEN(sizes); k++)
            TK_CHECK_MSG(run_counted(sizes[k], threads, 0), "%lld tasks, %d threads", (long long)sizes[k], threads);
    }
    TK_CHECK(run_counted(100, 0, 0)); /* 0: the process's count */
    TK_CHECK(run_counted(5, 16, 0));  /* more threads than tasks, and than cores */
}

static void test_nested(void) {
    for (int threads = 1; threads <= 4; threads++) TK_CHECK_MSG(run_counted(6, threads, 5), "%d threads", threads);
}

/* Several host threads post jobs at once (each with nested jobs). */
static void *host_main(void *arg) {
    bool *ok = arg;
    *ok = true;
    for (int r = 0; r < 20; r++) *ok = *ok && run_counted(37, 3, 4);
    return NULL;
}

static void test_concurrent_hosts(void) {
    pthread_t th[4];
    bool ok[4] = { false };
    for (int i = 0; i < 4; i++) TK_CHECK(pthread_create(&th[i], NULL, host_main, &ok[i]) == 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) TK_CHECK_MSG(ok[i], "host thread %d", i);
}

static void test_thread_count(void) {
    int before = tk_get_num_threads();
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    TK_CHECK(before >= 1);
    TK_CHECK_MSG(before == (cpus < 1 ? 1 : cpus), "default %d, %ld CPUs", before, cpus);
    TK_CHECK(openblas_get_num_threads() == 1); /* towerkit's products are single-threaded */
    tk_set_num_threads(3);
    TK_CHECK(tk_get_num_threads() == 3);
    tk_set_num_threads(0); /* clamped to 1 */
    TK_CHECK(tk_get_num_threads() == 1);
    tk_set_num_threads(before);
    TK_CHECK(openblas_get_num_threads() == 1);
    tk_ctx *ctx = tk_ctx_new(0);
    TK_CHECK(tk_ctx_get_num_threads(ctx) == before);
    tk_ctx_set_num_threads(ctx, 2);
    TK_CHECK(tk_ctx_get_num_threads(ctx) == 2);
    tk_ctx_set_num_threads(ctx, 0);
    TK_CHECK(tk_ctx_get_num_threads(ctx) == before);
    tk_ctx_free(ctx);
}

/* The parts cover [0, n) in order, without overlap, at multiples of align. */
static void test_split_range(void) {
    const int64_t ns[] = { 0, 1, 15, 16, 17, 100, 1031 };
    for (size_t a = 0; a < TK_ARRAY_LEN(ns); a++)
        for (int64_t parts = 1; parts <= 5; parts++)
            for (int64_t align = 1; align <= 16; align *= 4) {
                int64_t end = 0;
                bool ok = true;
                for (int64_t i = 0; i < parts; i++) {
                    int64_t lo, hi;
                    tk_split_range(ns[a], parts, i, align, &lo, &hi);
                    ok = ok && lo == end && hi >= lo && (lo % align == 0 || lo == ns[a]);
                    end = hi;
                }
                TK_CHECK_MSG(ok && end == ns[a], "n %lld, %lld parts, align %lld", (long long)ns[a], (long long)parts,
                             (long long)align);
            }
}

int main(void) {
    TK_RUN(test_thread_count);
    TK_RUN(test_every_task_once);
    TK_RUN(test_nested);
    TK_RUN(test_concurrent_hosts);
    TK_RUN(test_split_range);
    return tk_test_summary();
}
