/* sona.h: the C API of sona's kernels.
 *
 * Every numeric kernel exists once per backend (suffix _scalar / _avx2) with the same signature and
 * contract; dispatch.c gathers each backend's kernels in one const table, and the dispatched entry
 * points below (no ISA suffix) call through the active table. Arrays are float32, row-major,
 * C-contiguous, with no alignment requirement. Sizes are element counts; n = 0 is valid everywhere.
 * Callers (the Cython boundary) validate shapes and finiteness before calling: kernels do not check.
 */
#ifndef SONA_H
#define SONA_H

#include <stddef.h>
#include <stdint.h>

#include "ring.h" /* the trajectory ring and open-trajectory store (ring.c) */

#ifdef __cplusplus
extern "C" {
#endif

#define SONA_MAX_RANK 64

/* ---- kernel signatures --------------------------------------------------------------------- */

/* max |x_i| over x[0..n); +INFINITY when any element is NaN or infinite; 0 for n = 0. */
typedef float (*sona_maxabs_fn)(const float *x, size_t n);
/* sum_i a_i b_i */
typedef float (*sona_dot_fn)(const float *a, const float *b, size_t n);
/* y += alpha x */
typedef void (*sona_axpy_fn)(size_t n, float alpha, const float *x, float *y);
/* out_i = M_i . x for the n rows of M (n x d) */
typedef void (*sona_dot_rows_fn)(const float *M, size_t n, size_t d, const float *x, float *out);
/* outx_i = M_i . x and outy_i = M_i . y, one pass over M (each sum as dot_rows forms it, so the
 * results equal two dot_rows calls bit for bit) */
typedef void (*sona_dot2_rows_fn)(const float *M, size_t n, size_t d, const float *x,
                                  const float *y, float *outx, float *outy);
/* dots_i = M_i . x and sqs_i = M_i . M_i, one pass over M */
typedef void (*sona_dot_sq_rows_fn)(const float *M, size_t n, size_t d, const float *x,
                                    float *dots, float *sqs);
/* out_i = |M_i - x|^2 */
typedef void (*sona_sqdist_rows_fn)(const float *M, size_t n, size_t d, const float *x,
                                    float *out);
/* y = x + s * Bt^T (A x): A and Bt are (r x d), i.e. B stored transposed so both passes stream
 * rows. u (length r) receives A x. y may alias x: all of A x is computed before y is written.
 * The one kernel that checks its input: it reads x once anyway, so it returns -1 without writing y
 * when x holds a NaN or an infinity, sparing the caller a separate pass; -2 when y overflowed to
 * an infinity (finite x too large for float32 once adapted; y is written), 0 otherwise. */
typedef int (*sona_lora_fwd_fn)(const float *x, const float *A, const float *Bt, size_t d,
                                 size_t r, float s, float *y, float *u);
/* Gradient of L through y = x + s B(Ax), given g = dL/dy, accumulated with weight w:
 *   dBt_j += w s (A_j . x) g        dA_j += w s (Bt_j . g) x        for j < r
 * coef (length 2r) receives the 2r outer-product coefficients w s u_j then w s h_j. Guarded: the
 * coefficients and max|x|, max|g| come first (in the same passes), and nothing is added unless
 * the largest element it would add is at most `limit` (finite); returns that element, or -1 when
 * refused (too large, or NaN/Inf in x, g or the weights). dA == NULL: measure only. */
typedef float (*sona_lora_grad_fn)(const float *x, const float *g, const float *A, const float *Bt,
                                   size_t d, size_t r, float s, float w, float limit, float *dA,
                                   float *dBt, float *coef);

/* Adam hyper-parameters for one step; bc1 = 1 - beta1^t and bc2 = 1 - beta2^t (bias corrections). */
typedef struct sona_adam_hp {
    float lr, beta1, beta2, eps, bc1, bc2;
} sona_adam_hp;

/* One Adam descent step over n parameters on the effective gradient
 *   e = gscale * g + lam * fisher ⊙ (theta - anchor)       (the EWC++ term only when fisher != NULL)
 *   m = b1 m + (1-b1) e;  v = b2 v + (1-b2) e²;  theta -= lr (m/bc1) / (sqrt(v/bc2) + eps).
 * A zero effective gradient with zero moments moves nothing: no normalisation of tiny vectors
 * beyond Adam's own eps, which callers size to their gradient scale. */
typedef void (*sona_adam_fn)(float *theta, float *m, float *v, const float *g, float gscale, size_t n,
                             const sona_adam_hp *hp, const float *fisher, const float *anchor,
                             float lam);
/* Online diagonal Fisher: fisher = (1 - alpha) fisher + alpha (gscale g)². */
typedef void (*sona_fisher_update_fn)(float *fisher, const float *g, float gscale, size_t n,
                                      float alpha);

/* One fused learning pass of the router policy over a row of n weights whose score-function
 * gradient is g = coef·vec (see csrc/policy.c for the derivation and for the row's RMSprop
 * normaliser, which the caller folds into `step`, `pull` and `mpull`):
 *   F = (1-alpha) F + alpha g²                         (EWC++ Fisher; skipped when fisher is NULL)
 *   theta = clip(theta + step vec - pull F ⊙ (theta - anchor)
 *                - mpull (omega ⊙ theta - omega_theta), ±wclip)
 * with theta the weights before the pass on the right; the anchor pull only when anchor is not
 * NULL, the task-memory pull only when omega is not NULL (both need the Fisher). Without a Fisher
 * this is a clipped axpy. step = 0 with no pull moves nothing. Returns max F over the row (0
 * without a Fisher). */
typedef struct sona_policy_step {
    float step, coef, pull, mpull, alpha, wclip;
} sona_policy_step;
typedef struct sona_policy_row {
    float *theta, *fisher;
    const float *anchor, *omega, *omega_theta;
} sona_policy_row;
typedef float (*sona_policy_row_fn)(const sona_policy_row *row, const float *vec, size_t n,
                                    const sona_policy_step *p);

typedef struct sona_kernels {
    const char *name;
    sona_maxabs_fn maxabs;
    sona_dot_fn dot;
    sona_axpy_fn axpy;
    sona_dot_rows_fn dot_rows;
    sona_dot2_rows_fn dot2_rows;
    sona_dot_sq_rows_fn dot_sq_rows;
    sona_sqdist_rows_fn sqdist_rows;
    sona_lora_fwd_fn lora_fwd;
    sona_lora_grad_fn lora_grad;
    sona_adam_fn adam;
    sona_fisher_update_fn fisher_update;
    sona_policy_row_fn policy_row;
} sona_kernels_t;

/* ---- per-backend kernels ------------------------------------------------------------------- */

float sona_maxabs_f32_scalar(const float *x, size_t n);
float sona_dot_f32_scalar(const float *a, const float *b, size_t n);
void sona_axpy_f32_scalar(size_t n, float alpha, const float *x, float *y);
void sona_dot_rows_f32_scalar(const float *M, size_t n, size_t d, const float *x, float *out);
void sona_dot2_rows_f32_scalar(const float *M, size_t n, size_t d, const float *x, const float *y,
                               float *outx, float *outy);
void sona_dot_sq_rows_f32_scalar(const float *M, size_t n, size_t d, const float *x, float *dots,
                                 float *sqs);
void sona_sqdist_rows_f32_scalar(const float *M, size_t n, size_t d, const float *x, float *out);
int sona_lora_fwd_f32_scalar(const float *x, const float *A, const float *Bt, size_t d, size_t r,
                              float s, float *y, float *u);
float sona_lora_grad_f32_scalar(const float *x, const float *g, const float *A, const float *Bt,
                                size_t d, size_t r, float s, float w, float limit, float *dA,
                                float *dBt, float *coef);

void sona_adam_f32_scalar(float *theta, float *m, float *v, const float *g, float gscale, size_t n,
                          const sona_adam_hp *hp, const float *fisher, const float *anchor,
                          float lam);
void sona_fisher_update_f32_scalar(float *fisher, const float *g, float gscale, size_t n,
                                   float alpha);
float sona_policy_row_f32_scalar(const sona_policy_row *row, const float *vec, size_t n,
                                 const sona_policy_step *p);

float sona_maxabs_f32_avx2(const float *x, size_t n);
float sona_dot_f32_avx2(const float *a, const float *b, size_t n);
void sona_axpy_f32_avx2(size_t n, float alpha, const float *x, float *y);
void sona_dot_rows_f32_avx2(const float *M, size_t n, size_t d, const float *x, float *out);
void sona_dot2_rows_f32_avx2(const float *M, size_t n, size_t d, const float *x, const float *y,
                             float *outx, float *outy);
void sona_dot_sq_rows_f32_avx2(const float *M, size_t n, size_t d, const float *x, float *dots,
                               float *sqs);
void sona_sqdist_rows_f32_avx2(const float *M, size_t n, size_t d, const float *x, float *out);
int sona_lora_fwd_f32_avx2(const float *x, const float *A, const float *Bt, size_t d, size_t r,
                            float s, float *y, float *u);
float sona_lora_grad_f32_avx2(const float *x, const float *g, const float *A, const float *Bt,
                              size_t d, size_t r, float s, float w, float limit, float *dA,
                              float *dBt, float *coef);

void sona_adam_f32_avx2(float *theta, float *m, float *v, const float *g, float gscale, size_t n,
                        const sona_adam_hp *hp, const float *fisher, const float *anchor,
                        float lam);
void sona_fisher_update_f32_avx2(float *fisher, const float *g, float gscale, size_t n,
                                 float alpha);
float sona_policy_row_f32_avx2(const sona_policy_row *row, const float *vec, size_t n,
                               const sona_policy_step *p);

/* ---- CPU detection and dispatch (cpu.c, dispatch.c) ------------------------------------------ */

#define SONA_CPU_AVX2 (1u << 0) /* AVX2 + FMA + OS support for YMM state */
#define SONA_CPU_AVX512F (1u << 1) /* reported by `sona info` only */

/* Feature bits of this CPU, detected once and cached. */
unsigned sona_cpu_features(void);
/* Backends compiled in and supported here, best first; returns how many (at most cap) were written. */
int sona_backends(const char **names, int cap);
/* Backends compiled into this build, best first, whether or not this CPU runs them ("avx2" only
 * on x86-64); returns how many (at most cap) were written. */
int sona_compiled_backends(const char **names, int cap);
/* Selects a backend by name: 0 ok, -1 unknown name, -2 not supported by this CPU/build. */
int sona_set_backend(const char *name);
/* The active table (never NULL: the best backend is chosen on first use). */
const sona_kernels_t *sona_kernels(void);

extern const sona_kernels_t *sona_active;

/* ---- dispatched entry points ----------------------------------------------------------------- */

static inline float sona_maxabs_f32(const float *x, size_t n) { return sona_active->maxabs(x, n); }
static inline float sona_dot_f32(const float *a, const float *b, size_t n) {
    return sona_active->dot(a, b, n);
}
static inline void sona_axpy_f32(size_t n, float alpha, const float *x, float *y) {
    sona_active->axpy(n, alpha, x, y);
}
static inline void sona_dot_rows_f32(const float *M, size_t n, size_t d, const float *x,
                                     float *out) {
    sona_active->dot_rows(M, n, d, x, out);
}
static inline void sona_dot2_rows_f32(const float *M, size_t n, size_t d, const float *x,
                                      const float *y, float *outx, float *outy) {
    sona_active->dot2_rows(M, n, d, x, y, outx, outy);
}
static inline void sona_dot_sq_rows_f32(const float *M, size_t n, size_t d, const float *x,
                                        float *dots, float *sqs) {
    sona_active->dot_sq_rows(M, n, d, x, dots, sqs);
}
static inline void sona_sqdist_rows_f32(const float *M, size_t n, size_t d, const float *x,
                                        float *out) {
    sona_active->sqdist_rows(M, n, d, x, out);
}
static inline int sona_lora_fwd_f32(const float *x, const float *A, const float *Bt, size_t d,
                                    size_t r, float s, float *y, float *u) {
    return sona_active->lora_fwd(x, A, Bt, d, r, s, y, u);
}
static inline float sona_lora_grad_f32(const float *x, const float *g, const float *A,
                                       const float *Bt, size_t d, size_t r, float s, float w,
                                       float limit, float *dA, float *dBt, float *coef) {
    return sona_active->lora_grad(x, g, A, Bt, d, r, s, w, limit, dA, dBt, coef);
}

static inline void sona_adam_f32(float *theta, float *m, float *v, const float *g, float gscale,
                                 size_t n, const sona_adam_hp *hp, const float *fisher,
                                 const float *anchor, float lam) {
    sona_active->adam(theta, m, v, g, gscale, n, hp, fisher, anchor, lam);
}
static inline void sona_fisher_update_f32(float *fisher, const float *g, float gscale, size_t n,
                                          float alpha) {
    sona_active->fisher_update(fisher, g, gscale, n, alpha);
}
static inline float sona_policy_row_f32(const sona_policy_row *row, const float *vec, size_t n,
                                        const sona_policy_step *p) {
    return sona_active->policy_row(row, vec, n, p);
}

/* ---- backend-independent helpers (rows.c) ---------------------------------------------------- */

/* Batch forward: n rows of x (n x d) into y (n x d); u (n x r) may be NULL. Returns the index of
 * the first row holding NaN/Inf (rows before it are written, it and later rows are not), or -1. */
ptrdiff_t sona_lora_fwd_batch_f32(const float *x, size_t n, const float *A, const float *Bt, size_t d,
                             size_t r, float s, float *y, float *u);
/* out_i = |M_i| (Euclidean norm of each row). */
void sona_norm_rows_f32(const float *M, size_t n, size_t d, float *out);
/* out_i = cos(M_i, x); 0 where a row or x has zero norm. The row norms come from the same pass
 * as the dot products, into scratch (n floats). Returns nonzero when a result is not finite (NaN
 * or Inf in M or x, or squares beyond float32): the caller validates by the results. */
int sona_cosine_rows_f32(const float *M, size_t n, size_t d, const float *x, float *out,
                         float *scratch);
/* Indices of the k largest scores, largest first; ties go to the lower index. k <= n. NaN scores
 * rank below every number. Writes k indices and, when val is not NULL, their scores. */
void sona_topk_f32(const float *scores, size_t n, size_t k, int64_t *idx, float *val);

#ifdef __cplusplus
}
#endif
#endif /* SONA_H */
