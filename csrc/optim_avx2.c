/* optim_avx2.c: AVX2+FMA kernels for the optimiser step and the online Fisher.
 *
 * ISA: AVX2 + FMA inside SONA_AVX2_BEGIN/END; elementwise, 8 lanes at a time with a scalar tail
 * that repeats the scalar kernel's arithmetic. Adam uses exact sqrt and division (results match the
 * scalar kernel within FMA-contraction rounding). The policy row step has no per-weight sqrt or
 * division (its RMSprop normaliser is one per row, folded into the step by the caller), so it too
 * differs from the scalar kernel by FMA contraction only.
 */
#include "target.h"

#if SONA_X86_64
#include <immintrin.h>
#include <math.h>

#include "sona.h"

SONA_AVX2_BEGIN
#include "simd_avx2.h"

void sona_adam_f32_avx2(float *theta, float *m, float *v, const float *g, float gscale, size_t n,
                        const sona_adam_hp *hp, const float *fisher, const float *anchor,
                        float lam) {
    const float b1 = hp->beta1, b2 = hp->beta2, c1 = 1.0f - hp->beta1, c2 = 1.0f - hp->beta2;
    const float lr1 = hp->lr / hp->bc1, inv_bc2 = 1.0f / hp->bc2, eps = hp->eps;
    const __m256 b1_f32x8 = _mm256_set1_ps(b1), b2_f32x8 = _mm256_set1_ps(b2);
    const __m256 c1_f32x8 = _mm256_set1_ps(c1), c2_f32x8 = _mm256_set1_ps(c2);
    const __m256 lr_f32x8 = _mm256_set1_ps(lr1), ibc2_f32x8 = _mm256_set1_ps(inv_bc2);
    const __m256 eps_f32x8 = _mm256_set1_ps(eps), gs_f32x8 = _mm256_set1_ps(gscale);
    const __m256 lam_f32x8 = _mm256_set1_ps(lam);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 th = _mm256_loadu_ps(theta + i);
        __m256 gi = _mm256_mul_ps(gs_f32x8, _mm256_loadu_ps(g + i));
        if (fisher) {
            __m256 pull = _mm256_mul_ps(lam_f32x8, _mm256_loadu_ps(fisher + i));
            gi = _mm256_fmadd_ps(pull, _mm256_sub_ps(th, _mm256_loadu_ps(anchor + i)), gi);
        }
        __m256 mi = _mm256_fmadd_ps(b1_f32x8, _mm256_loadu_ps(m + i), _mm256_mul_ps(c1_f32x8, gi));
        __m256 vi = _mm256_fmadd_ps(b2_f32x8, _mm256_loadu_ps(v + i),
                                    _mm256_mul_ps(_mm256_mul_ps(c2_f32x8, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, ibc2_f32x8)), eps_f32x8);
        th = _mm256_sub_ps(th, _mm256_div_ps(_mm256_mul_ps(lr_f32x8, mi), den));
        _mm256_storeu_ps(theta + i, th);
    }
    for (; i < n; ++i) {
        float gi = gscale * g[i];
        if (fisher) gi += lam * fisher[i] * (theta[i] - anchor[i]);
        m[i] = b1 * m[i] + c1 * gi;
        v[i] = b2 * v[i] + c2 * gi * gi;
        theta[i] -= lr1 * m[i] / (sqrtf(v[i] * inv_bc2) + eps);
    }
}

void sona_fisher_update_f32_avx2(float *fisher, const float *g, float gscale, size_t n,
                                 float alpha) {
    const __m256 keep_f32x8 = _mm256_set1_ps(1.0f - alpha), a_f32x8 = _mm256_set1_ps(alpha);
    const __m256 gs_f32x8 = _mm256_set1_ps(gscale);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_mul_ps(gs_f32x8, _mm256_loadu_ps(g + i));
        __m256 f = _mm256_mul_ps(keep_f32x8, _mm256_loadu_ps(fisher + i));
        _mm256_storeu_ps(fisher + i, _mm256_fmadd_ps(_mm256_mul_ps(a_f32x8, gi), gi, f));
    }
    const float keep = 1.0f - alpha;
    for (; i < n; ++i) {
        float gi = gscale * g[i];
        fisher[i] = keep * fisher[i] + alpha * gi * gi;
    }
}

float sona_policy_row_f32_avx2(const sona_policy_row *row, const float *vec, size_t n,
                               const sona_policy_step *p) {
    float *theta = row->theta, *fisher = row->fisher;
    const float *anchor = row->anchor, *omega = row->omega, *omega_theta = row->omega_theta;
    const __m256 step_f32x8 = _mm256_set1_ps(p->step), c_f32x8 = _mm256_set1_ps(p->coef);
    const __m256 alpha_f32x8 = _mm256_set1_ps(p->alpha), pull_f32x8 = _mm256_set1_ps(p->pull);
    const __m256 mpull_f32x8 = _mm256_set1_ps(p->mpull);
    const __m256 hi_f32x8 = _mm256_set1_ps(p->wclip), lo_f32x8 = _mm256_set1_ps(-p->wclip);
    __m256 fmax_f32x8 = _mm256_setzero_ps();
    size_t i = 0;
    if (!fisher) { /* the light step (3 feedbacks in 4): a clipped axpy */
        for (; i + 8 <= n; i += 8) {
            const __m256 th = _mm256_fmadd_ps(step_f32x8, _mm256_loadu_ps(vec + i),
                                              _mm256_loadu_ps(theta + i));
            _mm256_storeu_ps(theta + i, _mm256_max_ps(lo_f32x8, _mm256_min_ps(hi_f32x8, th)));
        }
    } else {
        for (; i + 8 <= n; i += 8) {
            const __m256 x = _mm256_loadu_ps(vec + i), th0 = _mm256_loadu_ps(theta + i);
            const __m256 g = _mm256_mul_ps(c_f32x8, x);
            __m256 f = _mm256_loadu_ps(fisher + i);
            f = _mm256_fmadd_ps(alpha_f32x8, _mm256_fmsub_ps(g, g, f), f);
            _mm256_storeu_ps(fisher + i, f);
            fmax_f32x8 = _mm256_max_ps(fmax_f32x8, f);
            __m256 th = _mm256_fmadd_ps(step_f32x8, x, th0);
            if (anchor) {
                const __m256 diff = _mm256_sub_ps(th0, _mm256_loadu_ps(anchor + i));
                th = _mm256_fnmadd_ps(_mm256_mul_ps(pull_f32x8, f), diff, th);
            }
            if (omega) {
                const __m256 dev = _mm256_fmsub_ps(_mm256_loadu_ps(omega + i), th0,
                                                   _mm256_loadu_ps(omega_theta + i));
                th = _mm256_fnmadd_ps(mpull_f32x8, dev, th);
            }
            _mm256_storeu_ps(theta + i, _mm256_max_ps(lo_f32x8, _mm256_min_ps(hi_f32x8, th)));
        }
    }
    float fmax = hmax_f32x8(fmax_f32x8);
    if (i < n) {
        const sona_policy_row rest = {theta + i, fisher ? fisher + i : NULL,
                                      anchor ? anchor + i : NULL, omega ? omega + i : NULL,
                                      omega ? omega_theta + i : NULL};
        float tail = sona_policy_row_f32_scalar(&rest, vec + i, n - i, p);
        if (tail > fmax) fmax = tail;
    }
    return fmax;
}

SONA_AVX2_END

#else
typedef int sona_avx2_unavailable; /* off x86-64 this file has no code; ISO C wants a declaration */
#endif /* SONA_X86_64 */
