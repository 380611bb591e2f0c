/* simd_avx2.h: small AVX2 helpers shared by the *_avx2.c kernel files (and only by them).
 *
 * Include after <immintrin.h>, inside SONA_AVX2_BEGIN/END, so the helpers inherit the AVX2+FMA target.
 */
#ifndef SONA_SIMD_AVX2_H
#define SONA_SIMD_AVX2_H

/* Sum of the 8 lanes in a fixed order: (lo + hi) pairwise, then adjacent pairs. */
static inline float hsum_f32x8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Largest of the 8 lanes (the same halving order). */
static inline float hmax_f32x8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

#endif /* SONA_SIMD_AVX2_H */
