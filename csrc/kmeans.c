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

uint32_t sona_kmeans_default_trials(size_t k) {
    return 2u + (uint32_t)log((double)(k > 1 ? k : 1));
}

size_t sona_kmeans_work_floats(size_t n, size_t k, size_t d, uint32_t trials, uint32_t n_init) {
    if (trials == 0) trials = sona_kmeans_default_trials(k);
    const size_t scores = n * trials;
    const size_t spare = n_init > 1 ? 2 * k * d + 2 * k + n : 0; /* a second set of outputs */
    return n * d + 2 * n + (scores > k ? scores : k) + spare;
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

/* One seeding + Lloyd run on the unit rows Xh with effective weights we (total wtot). */
static void run_once(const float *Xh, const float *we, double wtot, size_t n, size_t d, size_t k,
                     uint32_t max_iter, uint32_t trials, sona_pcg32 *rng, float *d2, float *dots,
                     float *centroids, float *sums, float *weight, uint32_t *count,
                     int32_t *labels, sona_kmeans_info *info) {
    /* greedy k-means++: each new seed is the best (lowest resulting potential sum w·D²) of
     * `trials` points drawn with probability ∝ w·D², D² to the nearest seed so far */
    memset(centroids, 0, k * d * sizeof(float));
    const size_t first = sample(we, NULL, n, wtot, rng);
    memcpy(centroids, Xh + first * d, d * sizeof(float));
    sona_dot_rows_f32(Xh, n, d, centroids, dots);
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) {
        float e = 2.0f - 2.0f * dots[i];
        d2[i] = e < 1e-6f ? 0.0f : e; /* below 1e-6: the same direction up to rounding */
        labels[i] = 0;
        total += (double)we[i] * d2[i];
    }
    size_t found = 1;
    while (found < k && total > 0.0) { /* total 0: every weighted point sits on a seed */
        size_t best_pick = 0, best_t = 0;
        double best_total = INFINITY;
        for (size_t t = 0; t < trials; ++t) {
            const size_t pick = sample(we, d2, n, total, rng);
            float *e = dots + t * n;
            sona_dot_rows_f32(Xh, n, d, Xh + pick * d, e);
            double pot = 0.0;
            for (size_t i = 0; i < n; ++i) {
                float v = 2.0f - 2.0f * e[i];
                v = v < 1e-6f ? 0.0f : v;
                e[i] = v;
                pot += (double)we[i] * (v < d2[i] ? v : d2[i]);
            }
            if (pot < best_total) {
                best_total = pot;
                best_pick = pick;
                best_t = t;
            }
        }
        memcpy(centroids + found * d, Xh + best_pick * d, d * sizeof(float));
        const float *e = dots + best_t * n;
        total = 0.0;
        for (size_t i = 0; i < n; ++i) {
            if (e[i] < d2[i]) {
                d2[i] = e[i];
                labels[i] = (int32_t)found;
            }
            total += (double)we[i] * d2[i];
        }
        ++found;
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
    info->inertia = inertia > 0.0 ? inertia : 0.0;
    info->n_iter = it;
    info->k_found = (uint32_t)found;
    info->converged = converged;
}

int sona_kmeans_f32(const float *X, const float *w, size_t n, size_t d, size_t k,
                    uint32_t max_iter, uint32_t trials, uint32_t n_init, uint64_t seed,
                    float *centroids, float *sums, float *weight, uint32_t *count,
                    int32_t *labels, float *work, sona_kmeans_info *info) {
    if (n == 0 || d == 0 || k == 0 || k > n || k > INT32_MAX) return -1;
    if (trials == 0) trials = sona_kmeans_default_trials(k);
    if (n_init == 0) n_init = 1;
    const size_t scores = n * trials;
    float *Xh = work, *we = Xh + n * d, *d2 = we + n, *dots = d2 + n;
    float *spare = dots + (scores > k ? scores : k);
    double wtot = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const float nrm = sona_unit(X + i * d, d, Xh + i * d);
        we[i] = nrm > 1e-12f ? (w ? w[i] : 1.0f) : 0.0f;
        wtot += we[i];
    }
    if (!(wtot > 0.0)) return -1;
    sona_pcg32 rng;
    sona_pcg32_seed(&rng, seed, KMEANS_STREAM);
    sona_kmeans_info best, cur;
    run_once(Xh, we, wtot, n, d, k, max_iter, trials, &rng, d2, dots, centroids, sums, weight,
             count, labels, &best);
    /* restarts continue the same random stream and keep the lowest inertia (first on ties) */
    float *c2 = spare, *s2 = c2 + k * d, *w2 = s2 + k * d;
    uint32_t *n2 = (uint32_t *)(w2 + k);
    int32_t *l2 = (int32_t *)(w2 + 2 * k);
    for (uint32_t r = 1; r < n_init; ++r) {
        run_once(Xh, we, wtot, n, d, k, max_iter, trials, &rng, d2, dots, c2, s2, w2, n2, l2,
                 &cur);
        if (cur.inertia < best.inertia) {
            best = cur;
            memcpy(centroids, c2, k * d * sizeof(float));
            memcpy(sums, s2, k * d * sizeof(float));
            memcpy(weight, w2, k * sizeof(float));
            memcpy(count, n2, k * sizeof(uint32_t));
            memcpy(labels, l2, n * sizeof(int32_t));
        }
    }
    if (info) *info = best;
    return 0;
}
