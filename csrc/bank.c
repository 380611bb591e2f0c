/* bank.c: online pattern bank (leader clustering, per-pattern baselines and route statistics).
 *
 * Portable C over the dispatched kernels: the cosine scan is one sona_dot_rows_f32 call over the
 * unit centroids (AVX2 or scalar as selected), everything else is O(n_routes) bookkeeping or one
 * O(dim) centroid update per observation. Background refinement (absorb, dedupe, prune) is
 * O(k·n_patterns·dim) dot products plus row moves.
 */
#include <math.h>
#include <string.h>

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

double sona_bank_offset(const sona_bank *b, int32_t j, uint32_t K, const double *target) {
    const float *cnt = b->route_n + (size_t)j * b->n_routes;
    const float *s = b->route_s + (size_t)j * b->n_routes;
    const double c = SONA_OFFSET_CAP;
    double num = 0.0, den = c; /* the prior: an offset of 0 worth one route's full weight */
    for (uint32_t k = 0; k < K; ++k) {
        const double n = (double)cnt[k];
        num += c * ((double)s[k] - n * target[k]) / (n + c); /* weight c n / (n + c) x residual */
        den += c * n / (n + c);
    }
    return num / den;
}

void sona_bank_route_means(const sona_bank *b, int32_t j, uint32_t K, const double *target,
                           const float *n0, double *m, double *n) {
    const float *cnt = b->route_n + (size_t)j * b->n_routes;
    const float *s = b->route_s + (size_t)j * b->n_routes;
    const double off = sona_bank_offset(b, j, K, target);
    for (uint32_t k = 0; k < K; ++k) {
        double base = target[k] + off;
        base = base < 0.0 ? 0.0 : base > 1.0 ? 1.0 : base;
        n[k] = (double)cnt[k] + n0[k];
        m[k] = ((double)s[k] + n0[k] * base) / n[k];
    }
}

/* The per-pattern, per-route arrays (n_routes floats per pattern), for row copies and clears
 * (PatternStore.ROUTE_ARRAYS in sona/_bank.pxi is the same list). */
#define BANK_ROUTE_ARRAYS 4
static float *route_array(const sona_bank *b, int i) {
    float *const a[BANK_ROUTE_ARRAYS] = {b->route_n, b->route_s, b->route_cn, b->route_c};
    return a[i];
}

static void clear_route_rows(sona_bank *b, size_t j) {
    const size_t R = b->n_routes;
    for (int i = 0; i < BANK_ROUTE_ARRAYS; ++i) memset(route_array(b, i) + j * R, 0, R * sizeof(float));
}

int32_t sona_bank_claim(sona_bank *b, int32_t j, const float *xhat, float init_baseline,
                        float *scratch) {
    if (j >= 0 && (uint32_t)j < b->n_patterns) return j;
    if (b->n_patterns < b->capacity) {
        j = (int32_t)b->n_patterns++;
        /* rows past n_patterns are normally zero already; make sure (a shrunk bank) */
        memset(b->centroid_sum + (size_t)j * b->dim, 0, b->dim * sizeof(float));
        clear_route_rows(b, (size_t)j);
        b->hits[j] = 0.0f;
        b->baseline[j] = init_baseline;
        return j;
    }
    float cos;
    return sona_bank_nearest(b, xhat, scratch, &cos);
}

void sona_bank_observe(sona_bank *b, int32_t j, const float *xhat, int32_t route, float r,
                       int new_hit) {
    const size_t R = b->n_routes, d = b->dim;
    float *n = b->route_n + (size_t)j * R, *s = b->route_s + (size_t)j * R;
    float *cn = b->route_cn + (size_t)j * R, *cs = b->route_c + (size_t)j * R;
    if (new_hit)
        for (size_t k = 0; k < R; ++k) {
            n[k] *= b->decay;
            s[k] *= b->decay;
            cn[k] *= b->decay;
            cs[k] *= b->decay;
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
    if (!new_hit) return;
    float *sum = b->centroid_sum + (size_t)j * d, *c = b->centroid + (size_t)j * d;
    sona_axpy_f32(d, 1.0f, xhat, sum);
    sona_unit(sum, d, c);
}

void sona_bank_observe_cost(sona_bank *b, int32_t j, int32_t route, float cost) {
    if (route < 0 || (size_t)route >= b->n_routes) return;
    const size_t i = (size_t)j * b->n_routes + (size_t)route;
    b->route_cn[i] += 1.0f;
    b->route_c[i] += cost;
}

void sona_bank_route_costs(const sona_bank *b, int32_t j, uint32_t K, const float *cost,
                           double *c) {
    const float *cn = b->route_cn + (size_t)j * b->n_routes;
    const float *cs = b->route_c + (size_t)j * b->n_routes;
    double seen = 0.0, expected = 0.0;
    for (uint32_t k = 0; k < K; ++k) {
        seen += (double)cs[k];
        expected += (double)cn[k] * (double)cost[k];
    }
    const double scale = expected > 0.0 ? seen / expected : 1.0;
    for (uint32_t k = 0; k < K; ++k)
        c[k] = ((double)cs[k] + scale * (double)cost[k]) / ((double)cn[k] + 1.0);
}

/* ---- background refinement -------------------------------------------------------------------- */

static void unit_row(sona_bank *b, uint32_t j) {
    sona_unit(b->centroid_sum + (size_t)j * b->dim, b->dim, b->centroid + (size_t)j * b->dim);
}

/* Writes a fresh pattern into row j from a cluster. */
static void put_cluster(sona_bank *b, uint32_t j, const float *sum, const float *c, uint32_t count,
                        float quality, uint64_t *usage, uint8_t *touched) {
    const size_t d = b->dim;
    memcpy(b->centroid_sum + j * d, sum, d * sizeof(float));
    memcpy(b->centroid + j * d, c, d * sizeof(float));
    clear_route_rows(b, j);
    b->hits[j] = (float)count;
    b->baseline[j] = quality;
    usage[j] = 0;
    touched[j] = 1;
}

/* The untouched pattern of lowest hits x baseline (ties: fewer hits, then the higher index:
 * the younger one), or -1. */
static int32_t prune_victim(const sona_bank *b, const uint8_t *touched) {
    int32_t v = -1;
    float vs = 0.0f;
    for (uint32_t j = 0; j < b->n_patterns; ++j) {
        if (touched[j]) continue;
        const float s = b->hits[j] * b->baseline[j];
        if (v < 0 || s < vs || (s == vs && b->hits[j] <= b->hits[v])) {
            v = (int32_t)j;
            vs = s;
        }
    }
    return v;
}

void sona_bank_absorb(sona_bank *b, const float *sums, const float *weight, const uint32_t *count,
                      const float *quality, size_t k, uint64_t *usage, uint8_t *touched,
                      float *scratch, sona_bank_refine_stats *st) {
    const size_t d = b->dim;
    float *c = scratch + b->capacity;
    for (size_t j = 0; j < k; ++j) {
        const float *s = sums + j * d;
        const float norm = sona_unit(s, d, c);
        if (!(weight[j] > 0.0f) || !(norm > 1e-12f)) continue;
        float cos;
        const int32_t p = sona_bank_nearest(b, c, scratch, &cos);
        /* the members' weighted mean cosine to the pattern: the quantity new_cos is calibrated
         * for (one query against a centroid); a cluster centroid averages the noise away, so
         * its own cosine would let neighbouring clusters snowball into one pattern */
        if (p >= 0 && cos * (norm / weight[j]) >= b->new_cos) {
            sona_axpy_f32(d, 1.0f, s, b->centroid_sum + (size_t)p * d);
            unit_row(b, (uint32_t)p);
            touched[p] = 1;
            st->updated += 1;
        } else if (b->n_patterns < b->capacity) {
            put_cluster(b, b->n_patterns++, s, c, count[j], quality[j], usage, touched);
            st->created += 1;
        } else {
            const int32_t v = prune_victim(b, touched);
            if (v >= 0) {
                put_cluster(b, (uint32_t)v, s, c, count[j], quality[j], usage, touched);
                st->pruned += 1;
                st->created += 1;
            } else { /* every pattern got data this cycle: nothing is stale enough to evict */
                sona_axpy_f32(d, 1.0f, s, b->centroid_sum + (size_t)p * d);
                unit_row(b, (uint32_t)p);
                st->updated += 1;
            }
        }
    }
}

/* Moves row `from` into row `to` (all per-pattern arrays). */
static void move_row(sona_bank *b, uint32_t to, uint32_t from, uint64_t *usage, uint8_t *touched) {
    const size_t d = b->dim, R = b->n_routes;
    memcpy(b->centroid + to * d, b->centroid + from * d, d * sizeof(float));
    memcpy(b->centroid_sum + to * d, b->centroid_sum + from * d, d * sizeof(float));
    for (int i = 0; i < BANK_ROUTE_ARRAYS; ++i) {
        float *a = route_array(b, i);
        memcpy(a + to * R, a + from * R, R * sizeof(float));
    }
    b->hits[to] = b->hits[from];
    b->baseline[to] = b->baseline[from];
    usage[to] = usage[from];
    touched[to] = touched[from];
}

/* Folds pattern q into pattern p (p < q), then fills slot q with the last pattern. */
static void merge_pair(sona_bank *b, uint32_t p, uint32_t q, uint64_t *usage, uint8_t *touched) {
    const size_t d = b->dim, R = b->n_routes;
    const float hp = b->hits[p], hq = b->hits[q];
    b->baseline[p] = hp + hq > 0.0f ? (hp * b->baseline[p] + hq * b->baseline[q]) / (hp + hq)
                                    : 0.5f * (b->baseline[p] + b->baseline[q]);
    b->hits[p] = hp + hq;
    for (int i = 0; i < BANK_ROUTE_ARRAYS; ++i) {
        float *a = route_array(b, i);
        for (size_t r = 0; r < R; ++r) a[p * R + r] += a[q * R + r];
    }
    sona_axpy_f32(d, 1.0f, b->centroid_sum + q * d, b->centroid_sum + p * d);
    unit_row(b, p);
    usage[p] += usage[q];
    touched[p] = 1;
    const uint32_t last = b->n_patterns - 1;
    if (q != last) move_row(b, q, last, usage, touched);
    /* leave the freed row clean: state files store every row */
    memset(b->centroid + (size_t)last * d, 0, d * sizeof(float));
    memset(b->centroid_sum + (size_t)last * d, 0, d * sizeof(float));
    clear_route_rows(b, last);
    b->hits[last] = b->baseline[last] = 0.0f;
    usage[last] = 0;
    touched[last] = 0;
    b->n_patterns = last;
}

void sona_bank_dedupe(sona_bank *b, float merge_cos, int all_pairs, uint64_t *usage,
                      uint8_t *touched, float *scratch, sona_bank_refine_stats *st) {
    const size_t d = b->dim;
    for (uint32_t p = 0; p < b->n_patterns; ++p) {
        if (!all_pairs && !touched[p]) continue;
        for (;;) { /* a merge moves p's centroid: check it again */
            const uint32_t n = b->n_patterns;
            sona_dot_rows_f32(b->centroid, n, d, b->centroid + (size_t)p * d, scratch);
            int32_t q = -1;
            for (uint32_t j = 0; j < n; ++j)
                if (j != p && scratch[j] >= merge_cos && (q < 0 || scratch[j] > scratch[q]))
                    q = (int32_t)j;
            if (q < 0) break;
            const uint32_t lo = (uint32_t)q < p ? (uint32_t)q : p;
            const uint32_t hi = (uint32_t)q < p ? p : (uint32_t)q;
            merge_pair(b, lo, hi, usage, touched);
            st->merged += 1;
            p = lo; /* the survivor; rows after it are visited by the outer loop */
        }
    }
}
