/* optim_scalar.c: portable reference kernels for the optimiser step and the online Fisher.
 *
 * ISA: plain C, element by element in index order (no reductions, so the AVX2 version differs only
 * by FMA contraction and its sqrt/division rounding: within a few float32 ulps per element).
 */
#include <math.h>

#include "sona.h"

void sona_adam_f32_scalar(float *theta, float *m, float *v, const float *g, float gscale, size_t n,
                          const sona_adam_hp *hp, const float *fisher, const float *anchor,
                          float lam) {
    const float b1 = hp->beta1, b2 = hp->beta2, c1 = 1.0f - hp->beta1, c2 = 1.0f - hp->beta2;
    const float lr1 = hp->lr / hp->bc1, inv_bc2 = 1.0f / hp->bc2, eps = hp->eps;
    for (size_t i = 0; i < n; ++i) {
        float gi = gscale * g[i];
        if (fisher) gi += lam * fisher[i] * (theta[i] - anchor[i]);
        m[i] = b1 * m[i] + c1 * gi;
        v[i] = b2 * v[i] + c2 * gi * gi;
        theta[i] -= lr1 * m[i] / (sqrtf(v[i] * inv_bc2) + eps);
    }
}

void sona_fisher_update_f32_scalar(float *fisher, const float *g, float gscale, size_t n,
                                   float alpha) {
    const float keep = 1.0f - alpha;
    for (size_t i = 0; i < n; ++i) {
        float gi = gscale * g[i];
        fisher[i] = keep * fisher[i] + alpha * gi * gi;
    }
}

float sona_policy_row_f32_scalar(const sona_policy_row *row, const float *vec, size_t n,
                                 const sona_policy_step *p) {
    float *theta = row->theta, *fisher = row->fisher;
    const float *anchor = row->anchor, *omega = row->omega, *omega_theta = row->omega_theta;
    float fmax = 0.0f;
    for (size_t i = 0; i < n; ++i) {
        float t = theta[i] + p->step * vec[i];
        if (fisher) {
            const float g = p->coef * vec[i];
            const float f = fisher[i] + p->alpha * (g * g - fisher[i]);
            fisher[i] = f;
            if (f > fmax) fmax = f;
            if (anchor) t -= p->pull * f * (theta[i] - anchor[i]);
            if (omega) t -= p->mpull * (omega[i] * theta[i] - omega_theta[i]);
        }
        theta[i] = t > p->wclip ? p->wclip : (t < -p->wclip ? -p->wclip : t);
    }
    return fmax;
}
