/* kmeans.h: weighted spherical k-means (k-means++ seeding, Lloyd iterations) on unit vectors.
 *
 * Distances are D² = |x̂ - c|² = 2 - 2 cos(x, c) between unit rows, so every distance is one dot
 * product: the work is the dispatched sona_dot_rows_f32 (AVX2 or scalar as selected). Pure C over
 * caller-owned buffers, no allocation, no Python: callable with the GIL released. Deterministic
 * for a given seed (PCG32 from rng.h) and backend.
 */
#ifndef SONA_KMEANS_H
#define SONA_KMEANS_H

#include <stddef.h>
#include <stdint.h>

typedef struct sona_kmeans_info {
    double inertia;     /* sum_i w_i (2 - 2 x̂_i·c_label(i)) for the returned centroids and labels */
    uint32_t n_iter;    /* Lloyd iterations of the returned run (0 when max_iter is 0) */
    uint32_t k_found;   /* seeds found: < k when fewer than k distinct weighted points exist */
    uint32_t converged; /* 1 when an iteration changed no label */
} sona_kmeans_info;

/* Candidates per k-means++ step when trials is 0: 2 + floor(ln k), as in scikit-learn's greedy
 * k-means++ (plain k-means++ often puts two seeds in one cluster and leaves another without:
 * Lloyd cannot repair that). */
uint32_t sona_kmeans_default_trials(size_t k);
/* Floats of scratch sona_kmeans_f32 needs: the unit rows (n x d), the effective weights (n), the
 * nearest-seed D² (n), the scores of the candidates (max(n·trials, k)) and, when n_init > 1, a
 * second set of outputs (2kd + 2k + n). */
size_t sona_kmeans_work_floats(size_t n, size_t k, size_t d, uint32_t trials, uint32_t n_init);

/* Clusters the n rows of X (n x d, any norms: each row is normalised first; a zero row gets
 * weight 0) into k clusters, 1 <= k <= n. w: n finite weights >= 0 with a positive sum, or NULL
 * for all ones. Seeding is greedy k-means++: each seed is, of `trials` points drawn with
 * probability ∝ w·D² (zero-weight points are never seeds), the one leaving the lowest potential
 * (trials 1: plain k-means++; 0: sona_kmeans_default_trials(k)); then up to max_iter Lloyd
 * iterations (centroid update, reassignment), stopping early when no
 * label changes. Ties go to the lower cluster index.
 *
 * Outputs (caller-owned): centroids (k x d, unit rows; a cluster whose members' weighted sum is 0
 * keeps its previous centroid; rows >= k_found are zero), sums (k x d, weighted sum of the unit
 * members), weight (k, total member weight), count (k, members), labels (n). work holds
 * sona_kmeans_work_floats(n, k, d, trials, n_init) floats. Returns 0, or -1 for invalid sizes or a zero
 * total weight (nothing written then).
 */
int sona_kmeans_f32(const float *X, const float *w, size_t n, size_t d, size_t k,
                    uint32_t max_iter, uint32_t trials, uint32_t n_init, uint64_t seed,
                    float *centroids, float *sums, float *weight, uint32_t *count,
                    int32_t *labels, float *work, sona_kmeans_info *info);

#endif /* SONA_KMEANS_H */
