/* bank.h: the pattern bank (ReasoningBank's online part): unit centroids of past queries with, per
 * pattern, a reward baseline and per-route decayed (count, reward-sum) and (count, cost-sum)
 * statistics.
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
    float prior_count;   /* initial pseudo-count of traffic-wide evidence per route (a router
                          * estimates its own per route, see policy.h) */
    float baseline_rate; /* EMA rate of the pattern baseline once it has 1/rate hits */
    float *centroid;     /* capacity x dim, unit rows (first n_patterns valid) */
    float *centroid_sum; /* capacity x dim, sum of the unit queries that joined */
    float *hits;         /* capacity: times the pattern was observed (never decayed) */
    float *route_n;      /* capacity x n_routes, decayed counts */
    float *route_s;      /* capacity x n_routes, decayed reward sums */
    float *route_cn;     /* capacity x n_routes, decayed counts of the costs reported */
    float *route_c;      /* capacity x n_routes, decayed sums of the costs reported */
    float *baseline;     /* capacity: reward baseline */
} sona_bank;

/* Nearest pattern to the unit vector xhat: index, or -1 when the bank is empty; *cos receives its
 * cosine. scratch holds n_patterns floats. */
int32_t sona_bank_nearest(const sona_bank *b, const float *xhat, float *scratch, float *cos);
/* Nearest pattern if its cosine reaches new_cos, else -1. */
int32_t sona_bank_match(const sona_bank *b, const float *xhat, float *scratch);
/* A route's outcomes in a pattern count as at most this many outcomes' worth of evidence on the
 * pattern's offset: past that, what they say is about the route on those queries, not about the
 * queries (a pattern where only its best route was exploited is not thereby easy for all). */
#define SONA_OFFSET_CAP 10.0
/* Pattern j's offset from the K (<= n_routes) traffic-wide route means `target`: how much better
 * (or worse) every route does on its queries. Each route's mean residual r_k = S_k / N_k -
 * target_k weighs w_k = c N_k / (N_k + c) (c = SONA_OFFSET_CAP), and a prior offset of 0 weighs
 * c: o = sum_k w_k r_k / (c + sum_k w_k). */
double sona_bank_offset(const sona_bank *b, int32_t j, uint32_t K, const double *target);
/* Posterior mean reward of the first K routes of pattern j, shrunk towards target moved by the
 * pattern's offset (clamped to [0, 1]) with K pseudo-counts n0:
 * (S + n0 base) / (N + n0), base = clamp(target + offset); the pseudo-count N + n0 into n. */
void sona_bank_route_means(const sona_bank *b, int32_t j, uint32_t K, const double *target,
                           const float *n0, double *m, double *n);
/* The pattern a feedback lands in: j itself when 0 <= j < n_patterns (a j past the end -- the
 * router's pending decision for a pattern that background refinement merged away -- is treated as
 * no match); else a new pattern (baseline initialised to
 * init_baseline) while there is room, else the nearest one. */
int32_t sona_bank_claim(sona_bank *b, int32_t j, const float *xhat, float init_baseline,
                        float *scratch);
/* Records one outcome of `route` (ignored when >= n_routes or < 0) with reward r in pattern j:
 * updates the route statistics, the baseline and the hit count. A new hit (new_hit != 0: a query
 * seen for the first time) first decays the route statistics and adds xhat to the centroid; a
 * further outcome of the same query (a labelled set's other routes) does neither, so a pattern
 * remembers as many queries whether each brought one outcome or one per route. */
void sona_bank_observe(sona_bank *b, int32_t j, const float *xhat, int32_t route, float r,
                       int new_hit);
/* Records the cost of one call of `route` (ignored when >= n_routes or < 0) in pattern j, after
 * sona_bank_observe (whose new hit decayed the cost statistics with the reward statistics). */
void sona_bank_observe_cost(sona_bank *b, int32_t j, int32_t route, float cost);
/* Cost per call of the first K routes on pattern j's queries, from the routes' traffic-wide costs
 * per call `cost` (>= 0): (C_k + s cost_k) / (M_k + 1), with C_k and M_k the pattern's decayed
 * cost sum and count of route k, and s = sum_k C_k / sum_k M_k cost_k the pattern's cost scale
 * (1 without any cost there). A call's cost is a price times the tokens of its query and answer,
 * and queries of one kind have alike lengths: the scale carries a pattern's length to the routes
 * not tried there, and a route's own costs there replace it as they come in. */
void sona_bank_route_costs(const sona_bank *b, int32_t j, uint32_t K, const float *cost,
                           double *c);
/* xhat = x / max(|x|, 1e-12); returns |x|. */
float sona_unit(const float *x, size_t d, float *xhat);

/* ---- background refinement (driven by PatternStore.refine in sona/_bank.pxi) ----------------
 * These mutate the bank the router reads in its hot path, so they run with the GIL held; only
 * the k-means over the drained queries (kmeans.h) runs without it. Patterns stay compact
 * (0..n_patterns-1): removing pattern q moves the last pattern into slot q, so exactly one other
 * index changes per removal. A router decision still pending across a refinement credits
 * whatever pattern then holds its index, or (index past the end) is re-claimed like a new query.
 * usage is PatternStore's per-pattern query counter (capacity), moved along with the rows;
 * touched (capacity bytes) marks the patterns this refinement created or updated; scratch holds
 * capacity + dim floats. */
typedef struct sona_bank_refine_stats {
    uint32_t created; /* new patterns (including those that replaced a pruned one) */
    uint32_t updated; /* clusters folded into an existing pattern */
    uint32_t merged;  /* duplicate patterns merged away */
    uint32_t pruned;  /* patterns evicted to make room */
} sona_bank_refine_stats;

/* Folds k clusters (sums: k x dim weighted sums of unit members, weight: their total weights,
 * count: members, quality: mean member quality) into the bank. A cluster of weight 0 is skipped.
 * A cluster whose members have a weighted mean cosine >= new_cos with its nearest pattern
 * (cos(centroid, pattern) x |sum| / weight: the test a single query passes online) adds its sum to
 * that pattern's centroid_sum (centroid renormalised; route statistics, baseline and hits are left
 * to the online path). Otherwise it becomes a new pattern (centroid_sum = sum, hits = count,
 * baseline = quality, no route statistics) while there is room; when the bank is full it replaces
 * the untouched pattern of lowest hits x baseline (pruned), and when every pattern was touched
 * this cycle it folds into its nearest pattern. */
void sona_bank_absorb(sona_bank *b, const float *sums, const float *weight, const uint32_t *count,
                      const float *quality, size_t k, uint64_t *usage, uint8_t *touched,
                      float *scratch, sona_bank_refine_stats *st);
/* Merges pattern pairs whose centroids have cosine >= merge_cos into the lower index: counts,
 * sums, hits and usage add up, the baseline is the hits-weighted mean, the centroid is the
 * renormalised sum of both centroid_sums. Checks each touched pattern against all others, or
 * every pair when all_pairs is set (O(n_patterns² dim)). */
void sona_bank_dedupe(sona_bank *b, float merge_cos, int all_pairs, uint64_t *usage,
                      uint8_t *touched, float *scratch, sona_bank_refine_stats *st);

#endif /* SONA_BANK_H */
