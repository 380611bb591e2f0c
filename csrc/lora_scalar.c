/* lora_scalar.c: portable reference kernels for the low-rank adapter y = x + s·B(Ax).
 *
 * ISA: plain C. The forward first checks x is finite (its one input check, see sona.h). A and Bt are (r x d) row-major (B stored transposed). Forward: all r dot products
 * A_j·x first (so y may alias x), each accumulated like sona_dot_f32_scalar; then one pass adding
 * s·u_j·Bt_j for j = 0..r-1 in order. Gradient: the 2r coefficients first, then 2r axpy passes.
 */
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
    for (size_t i = 0; i < d; ++i) {
        float acc = x[i];
        for (size_t j = 0; j < r; ++j) acc += c[j] * Bt[j * d + i];
        y[i] = acc;
    }
    return 0;
}

void sona_lora_grad_f32_scalar(const float *x, const float *g, const float *A, const float *Bt,
                               size_t d, size_t r, float s, float w, float *dA, float *dBt,
                               float *coef) {
    const float ws = w * s;
    for (size_t j = 0; j < r; ++j) {
        coef[j] = ws * sona_dot_f32_scalar(A + j * d, x, d);
        coef[r + j] = ws * sona_dot_f32_scalar(Bt + j * d, g, d);
    }
    for (size_t j = 0; j < r; ++j) {
        sona_axpy_f32_scalar(d, coef[j], g, dBt + j * d);
        sona_axpy_f32_scalar(d, coef[r + j], x, dA + j * d);
    }
}
