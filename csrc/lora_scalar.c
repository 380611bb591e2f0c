/* lora_scalar.c: portable reference kernels for the low-rank adapter y = x + s·B(Ax).
 *
 * ISA: plain C. The forward first checks x is finite (its one input check, see sona.h). A and Bt are (r x d) row-major (B stored transposed). Forward: all r dot products
 * A_j·x first (so y may alias x), each accumulated like sona_dot_f32_scalar; then one pass adding
 * s·u_j·Bt_j for j = 0..r-1 in order. Gradient: the 2r coefficients first, then 2r axpy passes.
 */
#include <math.h>

#include "sona.h"

int sona_lora_fwd_f32_scalar(const float *x, const float *A, const float *Bt, size_t d, size_t r,
                             float s, float *y, float *u) {
    float c[SONA_MAX_RANK];
    float bad = 0.0f; /* x - x is 0 for finite x, NaN otherwise */
    for (size_t i = 0; i < d; ++i) bad += x[i] - x[i];
    if (bad != 0.0f) return -1;
    for (size_t j = 0; j < r; ++j) {
        u[j] = sona_dot_f32_scalar(A + j * d, x, d);
        c[j] = s * u[j];
    }
    float ovf = 0.0f; /* y - y is 0 unless y overflowed to Inf */
    for (size_t i = 0; i < d; ++i) {
        float acc = x[i];
        for (size_t j = 0; j < r; ++j) acc += c[j] * Bt[j * d + i];
        y[i] = acc;
        ovf += acc - acc;
    }
    return ovf != 0.0f ? -2 : 0;
}

float sona_lora_grad_f32_scalar(const float *x, const float *g, const float *A, const float *Bt,
                                size_t d, size_t r, float s, float w, float limit, float *dA,
                                float *dBt, float *coef) {
    const float ws = w * s;
    const float mx = sona_maxabs_f32_scalar(x, d), mg = sona_maxabs_f32_scalar(g, d);
    if (!(mx < INFINITY && mg < INFINITY)) return -1.0f; /* 0 * inf below would hide a NaN */
    float add = 0.0f;
    for (size_t j = 0; j < r; ++j) {
        coef[j] = ws * sona_dot_f32_scalar(A + j * d, x, d);
        coef[r + j] = ws * sona_dot_f32_scalar(Bt + j * d, g, d);
        const float ab = fabsf(coef[j]) * mg, aa = fabsf(coef[r + j]) * mx;
        add = ab > add ? ab : add;
        add = aa > add ? aa : add;
    }
    if (!(add <= limit)) return -1.0f; /* too large, or NaN/Inf somewhere: nothing written */
    if (dA == NULL) return add;
    for (size_t j = 0; j < r; ++j) {
        sona_axpy_f32_scalar(d, coef[j], g, dBt + j * d);
        sona_axpy_f32_scalar(d, coef[r + j], x, dA + j * d);
    }
    return add;
}
