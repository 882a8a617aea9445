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
#if defined(__SSE2__)
#include <immintrin.h>
#endif

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

TK_INLINE vf vf_splat(float x) { return (vf){ 0 } + x; }

/* y[i] += x[i] */
TK_INLINE void tk_vec_add(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vf_store(y + i, vf_load(y + i) + vf_load(x + i));
    for (; i < n; i++) y[i] += x[i];
}

/* sum_j x[j] y[j] in double, in 4 double lanes (products of floats are exact in double;
 * the lanes only change the order of the sums, not their precision): lane l sums the
 * j = l mod 4, then (l0 + l1) + (l2 + l3), then the tail. On x86-64 in SSE2 with the
 * accumulators in registers (GCC's 4-double vector extension kept them on the stack). */
TK_INLINE double tk_dot_f64(const float *x, const float *y, int64_t n) {
    int64_t j = 0;
    double s;
#if defined(__SSE2__)
    __m128d lo = _mm_setzero_pd(), hi = _mm_setzero_pd();
    for (; j + 4 <= n; j += 4) {
        __m128 a = _mm_loadu_ps(x + j), b = _mm_loadu_ps(y + j);
        lo = _mm_add_pd(lo, _mm_mul_pd(_mm_cvtps_pd(a), _mm_cvtps_pd(b)));
        hi = _mm_add_pd(hi, _mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(a, a)), _mm_cvtps_pd(_mm_movehl_ps(b, b))));
    }
    double l[2], h[2];
    _mm_storeu_pd(l, lo);
    _mm_storeu_pd(h, hi);
    s = (l[0] + l[1]) + (h[0] + h[1]);
#else
    double acc[4] = { 0, 0, 0, 0 };
    for (; j + 4 <= n; j += 4)
        for (int l = 0; l < 4; l++) acc[l] += (double)x[j + l] * (double)y[j + l];
    s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
#endif
    for (; j < n; j++) s += (double)x[j] * y[j];
    return s;
}

#endif
