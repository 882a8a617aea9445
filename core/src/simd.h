/* 8-lane float vectors (GCC vector extensions) for the element-wise kernels: on x86-64's
 * baseline (SSE2) each operation is two 4-lane instructions, on other targets NEON or
 * scalar code. Loads and stores go through memcpy: no alignment needed. Every helper is
 * always inlined, so vectors never cross a call boundary and the vector ABI warning
 * (-Wpsabi) does not apply; the pragma silences it where GCC reports it anyway.
 * Comparisons give -1 (true) or 0 per lane. Not installed. */
#ifndef TK_SIMD_H
#define TK_SIMD_H

#include <stdint.h>
#include <string.h>

#define VL 8
typedef float vf __attribute__((vector_size(4 * VL)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));
typedef uint32_t vu __attribute__((vector_size(4 * VL)));
#define TK_INLINE static inline __attribute__((always_inline))

#pragma GCC diagnostic ignored "-Wpsabi"

TK_INLINE vf vf_load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

TK_INLINE void vf_store(float *p, vf v) { memcpy(p, &v, sizeof v); }

TK_INLINE vf vf_select(vi mask, vf a, vf b) { /* mask ? a : b, lane-wise */
    return (vf)(((vi)a & mask) | ((vi)b & ~mask));
}

TK_INLINE vf vf_splat(float x) { return (vf){0} + x; }

/* y[i] += x[i] */
TK_INLINE void tk_vec_add(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vf_store(y + i, vf_load(y + i) + vf_load(x + i));
    for (; i < n; i++) y[i] += x[i];
}

#endif
