/* A malloc counter for the benchmarks, preloaded (LD_PRELOAD) into build/towerkit:
 * counts every malloc, calloc, realloc and aligned allocation of the process (C code:
 * the core, OpenBLAS, glibc; LuaJIT's own objects use its allocator, not malloc).
 * bench/w1_train.lua reads the count through LuaJIT's FFI (tk_bench_malloc_count) around
 * each training step, to show that steady-state steps allocate nothing. */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static uint64_t count;

uint64_t tk_bench_malloc_count(void) { return __atomic_load_n(&count, __ATOMIC_RELAXED); }

static void hit(void) { __atomic_fetch_add(&count, 1, __ATOMIC_RELAXED); }

void *malloc(size_t n) {
    hit();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size) {
    hit();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n) {
    hit();
    return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n) {
    hit();
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n) {
    hit();
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n) {
    hit();
    void *p = __libc_memalign(align, n);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}
