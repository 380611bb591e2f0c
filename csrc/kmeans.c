/* kmeans.c: weighted spherical k-means++ and Lloyd iterations over the dispatched kernels.
 *
 * Portable C: every O(n·k·d) loop is sona_dot_rows_f32 (AVX2 or scalar as selected), the rest is
 * O(n·d) axpy/normalisation or O(n) bookkeeping. Seeding tracks each point's nearest seed exactly,
 * so the seeding pass doubles as the first assignment. Sums of weights and D² accumulate in
 * double, in index order, so results depend only on the seed and the backend's dot products.
 */
#include <math.h>
#include <string.h>

#include "bank.h" /* sona_unit */
#include "kmeans.h"
#include "rng.h"
#include "sona.h"

#define KMEANS_STREAM 0x6b6d65616e73ull /* "kmeans": a PCG stream of its own */

size_t sona_kmeans_work_floats(size_t n, size_t k, size_t d) {
    return n * d + 2 * n + (n > k ? n : k);
}

/* Index i with probability mass[i] / total (mass >= 0, total > 0, sum taken in index order). */
static size_t sample(const float *w, const float *d2, size_t n, double total, sona_pcg32 *g) {
    const double u = sona_pcg32_uniform(g) * total;
    double acc = 0.0;
    size_t last = n;
    for (size_t i = 0; i < n; ++i) {
        const double m = d2 ? (double)w[i] * d2[i] : (double)w[i];
        if (m <= 0.0) continue;
        acc += m;
        last = i;
        if (u < acc) return i;
    }
    return last; /* rounding: u landed on the total */
}

/* sums/weight/count from labels, then centroids = unit(sums) (unchanged where a sum is ~0). */
static void update(const float *Xh, const float *we, const int32_t *labels, size_t n, size_t d,
                   size_t k, float *centroids, float *sums, float *weight, uint32_t *count) {
    memset(sums, 0, k * d * sizeof(float));
    for (size_t j = 0; j < k; ++j) weight[j] = 0.0f, count[j] = 0;
    for (size_t i = 0; i < n; ++i) {
        const size_t j = (size_t)labels[i];
        count[j] += 1;
        if (we[i] > 0.0f) {
            weight[j] += we[i];
            sona_axpy_f32(d, we[i], Xh + i * d, sums + j * d);
        }
    }
    for (size_t j = 0; j < k; ++j) {
        const float *s = sums + j * d;
        const float nrm = sqrtf(sona_dot_f32(s, s, d));
        if (nrm > 1e-12f) {
            const float inv = 1.0f / nrm;
            float *c = centroids + j * d;
            for (size_t t = 0; t < d; ++t) c[t] = s[t] * inv;
        }
    }
}

int sona_kmeans_f32(const float *X, const float *w, size_t n, size_t d, size_t k,
                    uint32_t max_iter, uint64_t seed, float *centroids, float *sums, float *weight,
                    uint32_t *count, int32_t *labels, float *work, sona_kmeans_info *info) {
    if (n == 0 || d == 0 || k == 0 || k > n || k > INT32_MAX) return -1;
    float *Xh = work, *we = Xh + n * d, *d2 = we + n, *dots = d2 + n;
    double wtot = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const float nrm = sona_unit(X + i * d, d, Xh + i * d);
        we[i] = nrm > 1e-12f ? (w ? w[i] : 1.0f) : 0.0f;
        if (nrm <= 1e-12f) memset(Xh + i * d, 0, d * sizeof(float));
        wtot += we[i];
    }
    if (!(wtot > 0.0)) return -1;

    /* k-means++: seed s is a point drawn with probability ∝ w·D², D² to the nearest seed so far */
    sona_pcg32 g;
    sona_pcg32_seed(&g, seed, KMEANS_STREAM);
    memset(centroids, 0, k * d * sizeof(float));
    size_t found = 0;
    double total = wtot;
    const float *dist = NULL; /* first draw: by weight alone */
    while (found < k) {
        const size_t pick = sample(we, dist, n, total, &g);
        float *c = centroids + found * d;
        memcpy(c, Xh + pick * d, d * sizeof(float));
        sona_dot_rows_f32(Xh, n, d, c, dots);
        total = 0.0;
        for (size_t i = 0; i < n; ++i) {
            float e = 2.0f - 2.0f * dots[i];
            if (e < 1e-6f) e = 0.0f; /* the same direction up to rounding */
            if (found == 0 || e < d2[i]) {
                d2[i] = e;
                labels[i] = (int32_t)found;
            }
            total += (double)we[i] * d2[i];
        }
        ++found;
        dist = d2;
        if (!(total > 0.0)) break; /* every weighted point sits on a seed */
    }

    /* Lloyd: centroids from labels, then every point to its nearest centroid */
    uint32_t it = 0, converged = 0;
    while (it < max_iter) {
        update(Xh, we, labels, n, d, found, centroids, sums, weight, count);
        size_t changed = 0;
        for (size_t i = 0; i < n; ++i) {
            sona_dot_rows_f32(centroids, found, d, Xh + i * d, dots);
            int32_t best = 0;
            for (size_t j = 1; j < found; ++j)
                if (dots[j] > dots[best]) best = (int32_t)j;
            if (best != labels[i]) {
                labels[i] = best;
                ++changed;
            }
        }
        ++it;
        if (changed == 0) {
            converged = 1;
            break;
        }
    }
    update(Xh, we, labels, n, d, found, centroids, sums, weight, count);
    if (found < k) {
        memset(sums + found * d, 0, (k - found) * d * sizeof(float));
        for (size_t j = found; j < k; ++j) weight[j] = 0.0f, count[j] = 0;
    }
    double inertia = 0.0;
    for (size_t j = 0; j < found; ++j)
        inertia += 2.0 * weight[j] - 2.0 * sona_dot_f32(sums + j * d, centroids + j * d, d);
    if (info) {
        info->inertia = inertia > 0.0 ? inertia : 0.0;
        info->n_iter = it;
        info->k_found = (uint32_t)found;
        info->converged = converged;
    }
    return 0;
}
