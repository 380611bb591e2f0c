/* rows.c: backend-independent compositions of the dispatched kernels.
 *
 * Batches, row norms, cosine scores and top-k are loops around the per-backend kernels, so each
 * piece of arithmetic lives in exactly one kernel per ISA. Top-k is selection, not arithmetic: one
 * portable version (insertion into a sorted k-buffer, O(n·k), fast for the k ≤ ~16 used here).
 */
#include <math.h>

#include "sona.h"

ptrdiff_t sona_lora_fwd_batch_f32(const float *x, size_t n, const float *A, const float *Bt,
                                  size_t d, size_t r, float s, float *y, float *u) {
    float tmp[SONA_MAX_RANK];
    const sona_kernels_t *k = sona_active;
    for (size_t i = 0; i < n; ++i)
        if (k->lora_fwd(x + i * d, A, Bt, d, r, s, y + i * d, u ? u + i * r : tmp)) return (ptrdiff_t)i;
    return -1;
}

void sona_norm_rows_f32(const float *M, size_t n, size_t d, float *out) {
    const sona_kernels_t *k = sona_active;
    for (size_t i = 0; i < n; ++i) out[i] = sqrtf(k->dot(M + i * d, M + i * d, d));
}

void sona_cosine_rows_f32(const float *M, size_t n, size_t d, const float *x,
                          const float *inv_norms, float *out) {
    const sona_kernels_t *k = sona_active;
    const float xn = sqrtf(k->dot(x, x, d));
    k->dot_rows(M, n, d, x, out);
    if (xn == 0.0f) {
        for (size_t i = 0; i < n; ++i) out[i] = 0.0f;
        return;
    }
    const float inv_x = 1.0f / xn;
    for (size_t i = 0; i < n; ++i) {
        float inv_m;
        if (inv_norms) {
            inv_m = inv_norms[i];
        } else {
            float mn = sqrtf(k->dot(M + i * d, M + i * d, d));
            inv_m = mn > 0.0f ? 1.0f / mn : 0.0f;
        }
        out[i] = out[i] * inv_m * inv_x;
    }
}

/* a ranks before b: larger score first, NaN last, ties to the lower index. */
static int before(float a, int64_t ia, float b, int64_t ib) {
    int na = isnan(a), nb = isnan(b);
    if (na != nb) return nb;
    if (!na && a != b) return a > b;
    return ia < ib;
}

void sona_topk_f32(const float *scores, size_t n, size_t k, int64_t *idx, float *val) {
    if (k > n) k = n;
    size_t filled = 0;
    for (size_t i = 0; i < n; ++i) {
        size_t pos = filled;
        while (pos > 0 && before(scores[i], (int64_t)i, scores[idx[pos - 1]], idx[pos - 1])) --pos;
        if (pos >= k) continue;
        for (size_t j = (filled < k ? filled : k - 1); j > pos; --j) idx[j] = idx[j - 1];
        idx[pos] = (int64_t)i;
        if (filled < k) ++filled;
    }
    if (val)
        for (size_t j = 0; j < k; ++j) val[j] = scores[idx[j]];
}
