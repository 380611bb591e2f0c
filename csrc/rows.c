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

int sona_cosine_rows_f32(const float *M, size_t n, size_t d, const float *x, float *out,
                         float *scratch) {
    const sona_kernels_t *k = sona_active;
    const float xn = sqrtf(k->dot(x, x, d));
    k->dot_sq_rows(M, n, d, x, out, scratch);
    const float inv_x = xn > 0.0f ? 1.0f / xn : 0.0f;
    float bad = 0.0f * xn; /* NaN when x is not finite */
    for (size_t i = 0; i < n; ++i) {
        const float sq = scratch[i];
        const float c = out[i] * (sq > 0.0f ? 1.0f / sqrtf(sq) : 0.0f) * inv_x;
        bad += (out[i] - out[i]) + (sq - sq); /* 0 unless a dot or a norm is NaN/Inf */
        out[i] = c;
    }
    return bad != 0.0f;
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
