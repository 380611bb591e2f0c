/* vec_avx2.c: AVX2+FMA kernels for vectors and row matrices.
 *
 * ISA: AVX2 + FMA, compiled only inside SONA_AVX2_BEGIN/END and called only when cpu.c detected
 * both (plus OS support for YMM state). Unaligned loads throughout; tails (n mod 8) in scalar code.
 * Accumulation order: float32, two (dot) or one (rows) 8-lane FMA accumulators, reduced by a fixed
 * horizontal sum, then the scalar tail added last.
 */
#include "target.h"

#if SONA_X86_64
#include <immintrin.h>
#include <math.h>

#include "sona.h"

SONA_AVX2_BEGIN
#include "simd_avx2.h"

float sona_maxabs_f32_avx2(const float *x, size_t n) {
    const __m256 abs_mask_f32x8 = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 max_f32x8 = _mm256_setzero_ps();
    __m256 bad_f32x8 = _mm256_setzero_ps(); /* x - x is 0 when finite, NaN otherwise */
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v_f32x8 = _mm256_loadu_ps(x + i);
        max_f32x8 = _mm256_max_ps(max_f32x8, _mm256_and_ps(v_f32x8, abs_mask_f32x8));
        bad_f32x8 = _mm256_add_ps(bad_f32x8, _mm256_sub_ps(v_f32x8, v_f32x8));
    }
    float bad = hsum_f32x8(bad_f32x8);
    if (bad != 0.0f) return INFINITY;
    float r = hmax_f32x8(max_f32x8);
    for (; i < n; ++i) {
        float a = fabsf(x[i]);
        if (!(a <= 3.402823466e+38f)) return INFINITY;
        if (a > r) r = a;
    }
    return r;
}

float sona_dot_f32_avx2(const float *a, const float *b, size_t n) {
    __m256 s0_f32x8 = _mm256_setzero_ps(), s1_f32x8 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0_f32x8 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0_f32x8);
        s1_f32x8 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1_f32x8);
    }
    for (; i + 8 <= n; i += 8)
        s0_f32x8 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0_f32x8);
    float s = hsum_f32x8(_mm256_add_ps(s0_f32x8, s1_f32x8));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

void sona_axpy_f32_avx2(size_t n, float alpha, const float *x, float *y) {
    const __m256 a_f32x8 = _mm256_set1_ps(alpha);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a_f32x8, _mm256_loadu_ps(x + i),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += alpha * x[i];
}

/* Four rows at a time share each load of x. */
void sona_dot_rows_f32_avx2(const float *M, size_t n, size_t d, const float *x, float *out) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float *m0 = M + i * d, *m1 = m0 + d, *m2 = m1 + d, *m3 = m2 + d;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 8 <= d; j += 8) {
            __m256 x_f32x8 = _mm256_loadu_ps(x + j);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(m0 + j), x_f32x8, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(m1 + j), x_f32x8, s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(m2 + j), x_f32x8, s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(m3 + j), x_f32x8, s3);
        }
        float r0 = hsum_f32x8(s0), r1 = hsum_f32x8(s1), r2 = hsum_f32x8(s2), r3 = hsum_f32x8(s3);
        for (; j < d; ++j) {
            r0 += m0[j] * x[j];
            r1 += m1[j] * x[j];
            r2 += m2[j] * x[j];
            r3 += m3[j] * x[j];
        }
        out[i] = r0;
        out[i + 1] = r1;
        out[i + 2] = r2;
        out[i + 3] = r3;
    }
    for (; i < n; ++i) {
        const float *m = M + i * d;
        __m256 s = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 8 <= d; j += 8)
            s = _mm256_fmadd_ps(_mm256_loadu_ps(m + j), _mm256_loadu_ps(x + j), s);
        float r = hsum_f32x8(s);
        for (; j < d; ++j) r += m[j] * x[j];
        out[i] = r;
    }
}

/* Rows m0 and m1 against y0 and y1 (y0 = y1 = x for two vectors, or each row itself for its
 * squared norm) and both against x, two rows sharing each load of x: out = {m0 . x, m0 . y0,
 * m1 . x, m1 . y1}, one accumulator per sum as in dot_rows. */
static inline void two_rows_two_dots(const float *m0, const float *m1, size_t d, const float *x,
                                     const float *y0, const float *y1, float out[4]) {
    __m256 p0 = _mm256_setzero_ps(), p1 = _mm256_setzero_ps();
    __m256 q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= d; j += 8) {
        __m256 x_f32x8 = _mm256_loadu_ps(x + j);
        __m256 a = _mm256_loadu_ps(m0 + j), b = _mm256_loadu_ps(m1 + j);
        p0 = _mm256_fmadd_ps(a, x_f32x8, p0);
        q0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(y0 + j), q0);
        p1 = _mm256_fmadd_ps(b, x_f32x8, p1);
        q1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(y1 + j), q1);
    }
    float x0 = hsum_f32x8(p0), y0s = hsum_f32x8(q0), x1 = hsum_f32x8(p1), y1s = hsum_f32x8(q1);
    for (; j < d; ++j) {
        x0 += m0[j] * x[j];
        y0s += m0[j] * y0[j];
        x1 += m1[j] * x[j];
        y1s += m1[j] * y1[j];
    }
    out[0] = x0;
    out[1] = y0s;
    out[2] = x1;
    out[3] = y1s;
}

void sona_dot2_rows_f32_avx2(const float *M, size_t n, size_t d, const float *x, const float *y,
                             float *outx, float *outy) {
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        float r[4];
        two_rows_two_dots(M + i * d, M + (i + 1) * d, d, x, y, y, r);
        outx[i] = r[0];
        outy[i] = r[1];
        outx[i + 1] = r[2];
        outy[i + 1] = r[3];
    }
    if (i < n) {
        sona_dot_rows_f32_avx2(M + i * d, n - i, d, x, outx + i);
        sona_dot_rows_f32_avx2(M + i * d, n - i, d, y, outy + i);
    }
}

void sona_sqdist_rows_f32_avx2(const float *M, size_t n, size_t d, const float *x, float *out) {
    for (size_t i = 0; i < n; ++i) {
        const float *m = M + i * d;
        __m256 s = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 8 <= d; j += 8) {
            __m256 e_f32x8 = _mm256_sub_ps(_mm256_loadu_ps(m + j), _mm256_loadu_ps(x + j));
            s = _mm256_fmadd_ps(e_f32x8, e_f32x8, s);
        }
        float r = hsum_f32x8(s);
        for (; j < d; ++j) {
            float e = m[j] - x[j];
            r += e * e;
        }
        out[i] = r;
    }
}

/* dots[i] = M_i · x and sqs[i] = M_i · M_i in one pass over M (each row loaded once). */
void sona_dot_sq_rows_f32_avx2(const float *M, size_t n, size_t d, const float *x, float *dots,
                               float *sqs) {
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const float *m0 = M + i * d, *m1 = m0 + d;
        float r[4];
        two_rows_two_dots(m0, m1, d, x, m0, m1, r);
        dots[i] = r[0];
        sqs[i] = r[1];
        dots[i + 1] = r[2];
        sqs[i + 1] = r[3];
    }
    for (; i < n; ++i) {
        dots[i] = sona_dot_f32_avx2(M + i * d, x, d);
        sqs[i] = sona_dot_f32_avx2(M + i * d, M + i * d, d);
    }
}

SONA_AVX2_END

#else
typedef int sona_avx2_unavailable; /* off x86-64 this file has no code; ISO C wants a declaration */
#endif /* SONA_X86_64 */
