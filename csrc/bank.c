/* bank.c: online pattern bank (leader clustering, per-pattern baselines and route statistics).
 *
 * Portable C over the dispatched kernels: the cosine scan is one sona_dot_rows_f32 call over the
 * unit centroids (AVX2 or scalar as selected), everything else is O(n_routes) bookkeeping or one
 * O(dim) centroid update per observation.
 */
#include <math.h>

#include "bank.h"
#include "sona.h"

float sona_unit(const float *x, size_t d, float *xhat) {
    const float n = sqrtf(sona_dot_f32(x, x, d));
    const float inv = 1.0f / (n > 1e-12f ? n : 1e-12f);
    for (size_t i = 0; i < d; ++i) xhat[i] = x[i] * inv;
    return n;
}

int32_t sona_bank_nearest(const sona_bank *b, const float *xhat, float *scratch, float *cos) {
    if (b->n_patterns == 0) {
        *cos = -INFINITY;
        return -1;
    }
    sona_dot_rows_f32(b->centroid, b->n_patterns, b->dim, xhat, scratch);
    int32_t best = 0;
    for (uint32_t i = 1; i < b->n_patterns; ++i)
        if (scratch[i] > scratch[best]) best = (int32_t)i;
    *cos = scratch[best];
    return best;
}

int32_t sona_bank_match(const sona_bank *b, const float *xhat, float *scratch) {
    float cos;
    int32_t j = sona_bank_nearest(b, xhat, scratch, &cos);
    return (j >= 0 && cos >= b->new_cos) ? j : -1;
}

void sona_bank_route_means(const sona_bank *b, int32_t j, double *m) {
    const float *n = b->route_n + (size_t)j * b->n_routes, *s = b->route_s + (size_t)j * b->n_routes;
    const double n0 = b->prior_count, base = b->baseline[j];
    for (uint32_t k = 0; k < b->n_routes; ++k) m[k] = ((double)s[k] + n0 * base) / ((double)n[k] + n0);
}

int32_t sona_bank_claim(sona_bank *b, int32_t j, const float *xhat, float init_baseline,
                        float *scratch) {
    if (j >= 0) return j;
    if (b->n_patterns < b->capacity) {
        j = (int32_t)b->n_patterns++;
        b->baseline[j] = init_baseline;
        return j;
    }
    float cos;
    return sona_bank_nearest(b, xhat, scratch, &cos);
}

void sona_bank_observe(sona_bank *b, int32_t j, const float *xhat, int32_t route, float r) {
    const size_t R = b->n_routes, d = b->dim;
    float *n = b->route_n + (size_t)j * R, *s = b->route_s + (size_t)j * R;
    for (size_t k = 0; k < R; ++k) {
        n[k] *= b->decay;
        s[k] *= b->decay;
    }
    if (route >= 0 && (size_t)route < R) {
        n[route] += 1.0f;
        s[route] += r;
    }
    /* running mean for the first 1/rate hits, then an EMA */
    if (b->hits[j] * b->baseline_rate < 1.0f)
        b->baseline[j] += (r - b->baseline[j]) / (b->hits[j] + 1.0f);
    else
        b->baseline[j] += b->baseline_rate * (r - b->baseline[j]);
    b->hits[j] += 1.0f;
    float *cs = b->centroid_sum + (size_t)j * d, *c = b->centroid + (size_t)j * d;
    sona_axpy_f32(d, 1.0f, xhat, cs);
    sona_unit(cs, d, c);
}
