/* bank.h: the pattern bank (ReasoningBank's online part): unit centroids of past queries with, per
 * pattern, a reward baseline and per-route decayed (count, reward-sum) statistics.
 *
 * Patterns are created online by leader clustering (a query joins its nearest pattern when the
 * cosine reaches new_cos, else starts a new one while there is room), so the router's prior has
 * patterns from the first feedback; background k-means refines them (see sona/bank.py). All arrays
 * are owned by the caller (the Cython layer) and laid out row-major; the bank keeps pointers.
 */
#ifndef SONA_BANK_H
#define SONA_BANK_H

#include <stddef.h>
#include <stdint.h>

typedef struct sona_bank {
    uint32_t dim, n_routes, capacity, n_patterns;
    float new_cos;       /* leader clustering threshold on cosine */
    float decay;         /* per hit of a pattern: its route counts and sums are multiplied by it */
    float prior_count;   /* shrinkage pseudo-count towards the pattern baseline */
    float baseline_rate; /* EMA rate of the pattern baseline once it has 1/rate hits */
    float *centroid;     /* capacity x dim, unit rows (first n_patterns valid) */
    float *centroid_sum; /* capacity x dim, sum of the unit queries that joined */
    float *hits;         /* capacity: times the pattern was observed (never decayed) */
    float *route_n;      /* capacity x n_routes, decayed counts */
    float *route_s;      /* capacity x n_routes, decayed reward sums */
    float *baseline;     /* capacity: reward baseline */
} sona_bank;

/* Nearest pattern to the unit vector xhat: index, or -1 when the bank is empty; *cos receives its
 * cosine. scratch holds n_patterns floats. */
int32_t sona_bank_nearest(const sona_bank *b, const float *xhat, float *scratch, float *cos);
/* Nearest pattern if its cosine reaches new_cos, else -1. */
int32_t sona_bank_match(const sona_bank *b, const float *xhat, float *scratch);
/* Posterior mean reward of each route of pattern j: (S + n0 b) / (N + n0). */
void sona_bank_route_means(const sona_bank *b, int32_t j, double *m);
/* The pattern a feedback lands in: j itself when >= 0; else a new pattern (baseline initialised to
 * init_baseline) while there is room, else the nearest one. */
int32_t sona_bank_claim(sona_bank *b, int32_t j, const float *xhat, float init_baseline,
                        float *scratch);
/* Records one outcome of `route` (ignored when >= n_routes or < 0) with reward r in pattern j:
 * decays and updates the route statistics, the baseline, the hit count and the centroid. */
void sona_bank_observe(sona_bank *b, int32_t j, const float *xhat, int32_t route, float r);
/* xhat = x / max(|x|, 1e-12); returns |x|. */
float sona_unit(const float *x, size_t d, float *xhat);

#endif /* SONA_BANK_H */
