/* lora_avx2.c: AVX2+FMA kernels for the low-rank adapter y = x + s·B(Ax).
 *
 * ISA: AVX2 + FMA inside SONA_AVX2_BEGIN/END. Rows of A are dotted with x in pairs that share each
 * load of x; the output pass is specialised for ranks 1 and 2 (MicroLoRA). All of A·x is computed
 * before y is written, so y may alias x, and the forward checks x for NaN/Inf in that first pass
 * and y for overflow (Inf) while it writes it.
 * Accumulation: two 8-lane FMA accumulators per row (paired rows) or one (odd last row), added, then
 * a fixed horizontal sum, scalar tail last; the output pass adds s·u_j·Bt_j for j = 0..r-1 in order.
 */
#include "target.h"

#if SONA_X86_64
#include <immintrin.h>
#include <math.h>

#include "sona.h"

SONA_AVX2_BEGIN
#include "simd_avx2.h"

/* u_j = A_j · x for j < r; rows 0 and 1 share each load of x, and two accumulators per row hide
 * the FMA latency. Returns max |x_i| (+INFINITY when x holds NaN/Inf), measured in the same pass
 * when r >= 2. */
static float rows_dot(const float *A, size_t r, size_t d, const float *x, float *u) {
    const __m256 abs_f32x8 = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 bad_f32x8 = _mm256_setzero_ps(); /* x - x: 0 for finite x, NaN otherwise */
    __m256 max_f32x8 = _mm256_setzero_ps();
    float bad = 0.0f, mx = 0.0f;
    size_t j = 0;
    for (; j + 2 <= r; j += 2) {
        const float *a0 = A + j * d, *a1 = a0 + d;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= d; i += 16) {
            __m256 x_f32x8 = _mm256_loadu_ps(x + i), x2_f32x8 = _mm256_loadu_ps(x + i + 8);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + i), x_f32x8, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + i), x_f32x8, s1);
            t0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + i + 8), x2_f32x8, t0);
            t1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + i + 8), x2_f32x8, t1);
            if (j == 0) {
                bad_f32x8 = _mm256_add_ps(bad_f32x8, _mm256_add_ps(_mm256_sub_ps(x_f32x8, x_f32x8),
                                                                   _mm256_sub_ps(x2_f32x8, x2_f32x8)));
                max_f32x8 = _mm256_max_ps(max_f32x8,
                                          _mm256_max_ps(_mm256_and_ps(x_f32x8, abs_f32x8),
                                                        _mm256_and_ps(x2_f32x8, abs_f32x8)));
            }
        }
        for (; i + 8 <= d; i += 8) {
            __m256 x_f32x8 = _mm256_loadu_ps(x + i);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + i), x_f32x8, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + i), x_f32x8, s1);
            if (j == 0) {
                bad_f32x8 = _mm256_add_ps(bad_f32x8, _mm256_sub_ps(x_f32x8, x_f32x8));
                max_f32x8 = _mm256_max_ps(max_f32x8, _mm256_and_ps(x_f32x8, abs_f32x8));
            }
        }
        float r0 = hsum_f32x8(_mm256_add_ps(s0, t0)), r1 = hsum_f32x8(_mm256_add_ps(s1, t1));
        for (; i < d; ++i) {
            r0 += a0[i] * x[i];
            r1 += a1[i] * x[i];
            if (j == 0) {
                bad += x[i] - x[i];
                mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
            }
        }
        u[j] = r0;
        u[j + 1] = r1;
    }
    if (r < 2) { /* rank 1: a separate pass measures x */
        size_t i = 0;
        for (; i + 8 <= d; i += 8) {
            __m256 x_f32x8 = _mm256_loadu_ps(x + i);
            bad_f32x8 = _mm256_add_ps(bad_f32x8, _mm256_sub_ps(x_f32x8, x_f32x8));
            max_f32x8 = _mm256_max_ps(max_f32x8, _mm256_and_ps(x_f32x8, abs_f32x8));
        }
        for (; i < d; ++i) {
            bad += x[i] - x[i];
            mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
        }
    }
    if (j < r) {
        const float *a0 = A + j * d;
        __m256 s0 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 8 <= d; i += 8)
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + i), _mm256_loadu_ps(x + i), s0);
        float r0 = hsum_f32x8(s0);
        for (; i < d; ++i) r0 += a0[i] * x[i];
        u[j] = r0;
    }
    bad += hsum_f32x8(bad_f32x8);
    if (bad != 0.0f) return INFINITY;
    const float vmx = hmax_f32x8(max_f32x8);
    return vmx > mx ? vmx : mx;
}

int sona_lora_fwd_f32_avx2(const float *x, const float *A, const float *Bt, size_t d, size_t r,
                           float s, float *y, float *u) {
    float c[SONA_MAX_RANK];
    if (!(rows_dot(A, r, d, x, u) < INFINITY)) return -1;
    for (size_t j = 0; j < r; ++j) c[j] = s * u[j];
    /* y - y is 0 unless y overflowed to Inf: OR-ed bits, so no long dependency chain */
    __m256 ovf_f32x8 = _mm256_setzero_ps();
    size_t i = 0;
    if (r == 1) {
        const __m256 c0 = _mm256_set1_ps(c[0]);
        for (; i + 8 <= d; i += 8) {
            __m256 y_f32x8 = _mm256_fmadd_ps(c0, _mm256_loadu_ps(Bt + i), _mm256_loadu_ps(x + i));
            ovf_f32x8 = _mm256_or_ps(ovf_f32x8, _mm256_sub_ps(y_f32x8, y_f32x8));
            _mm256_storeu_ps(y + i, y_f32x8);
        }
    } else if (r == 2) {
        const __m256 c0 = _mm256_set1_ps(c[0]), c1 = _mm256_set1_ps(c[1]);
        const float *b1 = Bt + d;
        for (; i + 8 <= d; i += 8) {
            __m256 acc = _mm256_fmadd_ps(c0, _mm256_loadu_ps(Bt + i), _mm256_loadu_ps(x + i));
            __m256 y_f32x8 = _mm256_fmadd_ps(c1, _mm256_loadu_ps(b1 + i), acc);
            ovf_f32x8 = _mm256_or_ps(ovf_f32x8, _mm256_sub_ps(y_f32x8, y_f32x8));
            _mm256_storeu_ps(y + i, y_f32x8);
        }
    } else {
        for (; i + 8 <= d; i += 8) {
            __m256 acc = _mm256_loadu_ps(x + i);
            for (size_t j = 0; j < r; ++j)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(c[j]), _mm256_loadu_ps(Bt + j * d + i), acc);
            ovf_f32x8 = _mm256_or_ps(ovf_f32x8, _mm256_sub_ps(acc, acc));
            _mm256_storeu_ps(y + i, acc);
        }
    }
    int ovf = _mm256_movemask_ps(_mm256_cmp_ps(ovf_f32x8, ovf_f32x8, _CMP_UNORD_Q)) != 0;
    for (; i < d; ++i) {
        float acc = x[i];
        for (size_t j = 0; j < r; ++j) acc += c[j] * Bt[j * d + i];
        y[i] = acc;
        ovf |= !(acc - acc == 0.0f);
    }
    return ovf ? -2 : 0;
}

float sona_lora_grad_f32_avx2(const float *x, const float *g, const float *A, const float *Bt,
                              size_t d, size_t r, float s, float w, float limit, float *dA,
                              float *dBt, float *coef) {
    const float ws = w * s;
    const float mx = rows_dot(A, r, d, x, coef);
    const float mg = rows_dot(Bt, r, d, g, coef + r);
    if (!(mx < INFINITY && mg < INFINITY)) return -1.0f; /* 0 * inf below would hide a NaN */
    float add = 0.0f;
    for (size_t j = 0; j < r; ++j) {
        coef[j] *= ws;
        coef[r + j] *= ws;
        const float ab = fabsf(coef[j]) * mg, aa = fabsf(coef[r + j]) * mx;
        add = ab > add ? ab : add;
        add = aa > add ? aa : add;
    }
    if (!(add <= limit)) return -1.0f; /* too large, or NaN/Inf somewhere: nothing written */
    if (dA == NULL) return add;
    for (size_t j = 0; j < r; ++j) {
        sona_axpy_f32_avx2(d, coef[j], g, dBt + j * d);
        sona_axpy_f32_avx2(d, coef[r + j], x, dA + j * d);
    }
    return add;
}

SONA_AVX2_END

#else
typedef int sona_avx2_unavailable; /* off x86-64 this file has no code; ISO C wants a declaration */
#endif /* SONA_X86_64 */
