/* vec_scalar.c: portable reference kernels for vectors and row matrices.
 *
 * ISA: plain C (the compiler may use the baseline SIMD of the target, never AVX2).
 * Accumulation order: float32, four interleaved partial sums (element i goes to sum i mod 4),
 * combined as (s0 + s1) + (s2 + s3). The AVX2 versions use other partial sums, so results agree
 * within float32 rounding, not bit for bit.
 */
#include <math.h>

#include "sona.h"

float sona_maxabs_f32_scalar(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; ++i) {
        float a = fabsf(x[i]);
        if (!(a <= 3.402823466e+38f)) return INFINITY; /* NaN or infinite */
        if (a > m) m = a;
    }
    return m;
}

float sona_dot_f32_scalar(const float *a, const float *b, size_t n) {
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; ++i) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

void sona_axpy_f32_scalar(size_t n, float alpha, const float *x, float *y) {
    for (size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void sona_dot_rows_f32_scalar(const float *M, size_t n, size_t d, const float *x, float *out) {
    for (size_t i = 0; i < n; ++i) out[i] = sona_dot_f32_scalar(M + i * d, x, d);
}

void sona_dot2_rows_f32_scalar(const float *M, size_t n, size_t d, const float *x, const float *y,
                               float *outx, float *outy) {
    for (size_t i = 0; i < n; ++i) {
        outx[i] = sona_dot_f32_scalar(M + i * d, x, d);
        outy[i] = sona_dot_f32_scalar(M + i * d, y, d);
    }
}

void sona_sqdist_rows_f32_scalar(const float *M, size_t n, size_t d, const float *x, float *out) {
    for (size_t i = 0; i < n; ++i) {
        const float *m = M + i * d;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        size_t j = 0;
        for (; j + 4 <= d; j += 4) {
            float e0 = m[j] - x[j], e1 = m[j + 1] - x[j + 1];
            float e2 = m[j + 2] - x[j + 2], e3 = m[j + 3] - x[j + 3];
            s0 += e0 * e0;
            s1 += e1 * e1;
            s2 += e2 * e2;
            s3 += e3 * e3;
        }
        for (; j < d; ++j) {
            float e = m[j] - x[j];
            s0 += e * e;
        }
        out[i] = (s0 + s1) + (s2 + s3);
    }
}

void sona_dot_sq_rows_f32_scalar(const float *M, size_t n, size_t d, const float *x, float *dots,
                                 float *sqs) {
    for (size_t i = 0; i < n; ++i) {
        dots[i] = sona_dot_f32_scalar(M + i * d, x, d);
        sqs[i] = sona_dot_f32_scalar(M + i * d, M + i * d, d);
    }
}
