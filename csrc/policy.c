/* policy.c: route and feedback of the router policy (see policy.h), over the dispatched kernels.
 *
 * prepare(x) (deterministic):
 *   (1) x~ = x - mu   (2) u_m = A_m x~, u_b = A_b x~   (3) y = x~ + s_m B_m u_m + s_b B_b u_b
 *   (4) y^ = y / max(|y|, 1e-6)   (5) z_ad = keys y^ / tau + bias
 *   (6) j = nearest pattern with cosine >= new_cos, else -1. With centre_patterns, the cosine
 *       of x~ = x - mu with s c_j - mu (c_j: pattern j's unit centroid as stored, s = |x|):
 *       sentence embeddings share one large direction, so raw cosines of unrelated queries are
 *       high (0.35 and 0.55 across tasks on the real data) and one pattern absorbed tasks whose
 *       best routes differ; around mu they are near 0 or below. The centroids stay raw (sums of
 *       unit queries), so a pattern does not move when mu does. Without it: the cosine of x^.
 *   (7) traffic-wide route means g_k = (G_k + 1) / (N_k + 2) (Beta(1, 1) prior; G, N decay by
 *       1 - 1/prior_window per feedback);
 *       o_j = sum_k w_jk (S_jk / N_jk - g_k) / (c + sum_k w_jk), w_jk = c N_jk / (N_jk + c),
 *       c = SONA_OFFSET_CAP (pattern j's offset: how much easier or harder its queries are for
 *       every route, from the routes that agree on it; see bank.h);
 *       m_k = (S_jk + n0_k clamp(g_k + o_j)) / (N_jk + n0_k) (pattern j's statistics shrunk
 *       towards them; m = g when no pattern matched; n0 by empirical Bayes every
 *       SONA_SHRINK_EVERY feedbacks)
 *   (8) z_pr = (m - max m) / tau_p;  pi = softmax(z_ad + z_pr) over the live (not retired)
 *       routes: the policy that learns
 * route(x, lambda, mask): prepare, then the behaviour policy
 *   (9) Thompson draws: g~_k = g_k + ts e_k sd(g_k, N_k + 2), m~ from g~ as in (7) plus
 *       ts e'_k sd(m~_k, N_jk + n0), sd(m, n) = sqrt(max(m (1 - m), 0.01) / n), e ~ IrwinHall
 *   (10) z = z_ad + (m~ - max m~) / tau_p - lambda c / tau_p, masked routes -inf; c: cost per
 *        call on pattern j's queries, c_k = (C_jk + s_j c_k) / (M_jk + 1) from the pattern's
 *        decayed cost sums C and counts M and the route's traffic-wide cost per call c_k, scaled
 *        by the pattern's s_j = sum_k C_jk / sum_k M_jk c_k (see bank.h); c_k without a pattern.
 *        q = (1 - eps) softmax(z) + eps / K_allowed on the allowed routes. Except while
 *        some allowed routes have fewer than SONA_MIN_EVIDENCE (decayed) outcomes N_k: then z is
 *        0 on those and -inf elsewhere (q uniform over them), leaving out a route of known cost
 *        c_k with lambda (c_k - min c) >= 1 (min over the allowed routes of known cost): at that
 *        trade-off it cannot rank above the cheapest, whatever the qualities
 *   (11) a: first k with u < cumsum(q)_k
 * learn(a, prob, r, cost) on a prepared ctx:
 *   (12) j = pattern (new one if none matched and there is room)
 *   (13) adv = r - b_j;  w = clip(adv pi_a / prob, +-adv_clip)
 *   (14) g_z = e_a - pi; rows of the score-function gradient: bias g_z, keys_k (g_z,k/tau) y^,
 *        B rows s u_i g_y, A rows s (B g_y)_i x~, with g_y = (g_y^ - (g_y^.y^) y^)/|y|,
 *        g_y^ = keys^T g_z / tau (all from the pre-update weights)
 *   (15) EWC++ on every k-th feedback (k = fisher_every): F = (1-a) F + a g^2 with a = 1-(1-alpha)^k
 *        (the decay of k per-feedback updates); anchor = weights every ewc_every feedbacks when the
 *        short reward EMA is not below the long one by more than the margin (stable); the first
 *        feedback that finds it below counts one inferred task boundary, and the old anchor is kept
 *        until a checkpoint is stable again; pull = k lambda |w| / max F (max F of the previous
 *        Fisher step, so one pass suffices). Reward EMA rates: reward_short_rate, reward_long_rate.
 *        Novelty: nu_s, nu_l = EMAs (novelty_short_rate, novelty_long_rate) of "the query
 *        matched no pattern or one created since the last stable checkpoint" (nu_s = nu_l
 *        again at each stable checkpoint, which renews the familiar patterns); with
 *        nu* = ewc_novelty > 0, a rise nu_s - nu_l >= nu* (once an anchor exists) is a boundary
 *        too. Task memory (when lambda_m > 0): a boundary folds the task that ended at the last
 *        stable checkpoint, with weight c = clip((nu_s - nu_l) / nu*, 0, 1) (1 when nu* = 0),
 *        into omega += c F^, omega_theta += c F^ anchor (F^: the Fisher taken with that anchor,
 *        over its max): the adaptive lambda of each remembered task. A boundary of new queries
 *        keeps the old task; a drop on familiar queries (the same inputs now want another
 *        route) keeps nothing of the mapping it contradicts. The past tasks' penalties
 *        sum_m c_m F^_m (theta - anchor_m)² then pull with mpull (omega theta - omega_theta),
 *        mpull = k lambda_m |w| / max omega
 *   (16) RMSprop with one second moment per row (the bias is one row): v_i = beta v_i +
 *        (1-beta) mean_j (w g_ij)², from w g alone (the intermittent pull must not inflate the
 *        normaliser); theta_i += lr s_i / sqrt(v_i / (1 - beta^t) + eps²), s = w g - pull F (theta
 *        - anchor) - mpull (omega theta - omega_theta) on Fisher steps, w g otherwise; weights
 *        clipped, keys renormalised. Each row's gradient is a scalar times a shared vector, so
 *        mean_j (w g_ij)² = (w coef_i)² |vec|² / n and a step without the Fisher is one axpy per
 *        row: no per-weight division or square root, and no per-weight optimiser state to stream.
 *   (17) pattern and traffic-wide route statistics, cost per call (the pattern's and the
 *        route's), global baseline, mu
 * Reductions for the softmax and the prior run in double; vectors in float32 kernels.
 */
#include <math.h>
#include <string.h>

#include "policy.h"
#include "sona.h"

size_t sona_policy_n_params(uint32_t dim, uint32_t n_routes, uint32_t micro_rank,
                            uint32_t base_rank) {
    return (size_t)dim * (2u * micro_rank + 2u * base_rank + n_routes) + n_routes;
}

size_t sona_policy_n_rows(uint32_t n_routes, uint32_t micro_rank, uint32_t base_rank) {
    return 2u * (size_t)micro_rank + 2u * (size_t)base_rank + n_routes + 1u;
}

size_t sona_policy_ctx_floats(uint32_t dim, uint32_t n_routes, uint32_t micro_rank,
                              uint32_t base_rank) {
    return 3u * (size_t)dim + 3u * n_routes + micro_rank + base_rank;
}

size_t sona_policy_work_floats(uint32_t dim, uint32_t n_routes, uint32_t bank_capacity) {
    const size_t scan = bank_capacity > n_routes ? 2u * (size_t)bank_capacity : 2u * n_routes;
    return 2u * (size_t)dim + scan + 2u * n_routes + 2u * SONA_MAX_RANK;
}

/* ctx buffer layout */
#define CTX_XHAT(p, c) ((c)->buf)
#define CTX_XT(p, c) ((c)->buf + (p)->dim)
#define CTX_YH(p, c) ((c)->buf + 2u * (size_t)(p)->dim)
#define CTX_PI(p, c) ((c)->buf + 3u * (size_t)(p)->dim)
#define CTX_Q(p, c) (CTX_PI(p, c) + (p)->n_routes)
#define CTX_UM(p, c) (CTX_Q(p, c) + (p)->n_routes)
#define CTX_UB(p, c) (CTX_UM(p, c) + (p)->micro_rank)
#define CTX_Z(p, c) (CTX_UB(p, c) + (p)->base_rank)

/* (1)-(5): x~, u_m, u_b, y^ and |y| into the given buffers, adapter logits into z. */
static float forward(const sona_policy *p, const float *x, float *xt, float *yh, float *um,
                     float *ub, double *z) {
    const size_t d = p->dim, K = p->n_routes;
    const sona_policy_hp *hp = &p->hp;
    const float *mu = p->mu; /* a local: stores to xt[] cannot then reload p->mu each step */
    for (size_t i = 0; i < d; ++i) xt[i] = x[i] - mu[i];
    /* y = x~ + s_b B_b u_b in one fused kernel (the wider tier), then + s_m B_m u_m; u_b and u_m
     * are computed either way (the gradients need them) */
    sona_lora_fwd_f32(xt, p->A_base, p->Bt_base, d, p->base_rank,
                      hp->use_base ? hp->base_scale : 0.0f, yh, ub);
    sona_dot_rows_f32(p->A_micro, p->micro_rank, d, xt, um);
    if (hp->use_micro)
        for (uint32_t i = 0; i < p->micro_rank; ++i)
            sona_axpy_f32(d, hp->micro_scale * um[i], p->Bt_micro + (size_t)i * d, yh);
    float ny = sqrtf(sona_dot_f32(yh, yh, d));
    if (!(ny > 1e-6f)) ny = 1e-6f;
    const float inv = 1.0f / ny;
    for (size_t i = 0; i < d; ++i) yh[i] *= inv;
    float *zk = p->work; /* K floats */
    sona_dot_rows_f32(p->keys, K, d, yh, zk);
    for (size_t k = 0; k < K; ++k) z[k] = (double)zk[k] / hp->tau + p->bias[k];
    return ny;
}

/* Posterior standard deviation of a Bernoulli-like mean m from n (pseudo-)observations; the
 * floor keeps a route whose every outcome so far was 0 or 1 explorable. */
static double post_sd(double m, double n) {
    const double v = m * (1.0 - m);
    return sqrt((v > 0.01 ? v : 0.01) / n);
}

/* (6): the pattern nearest to the query (x^ its unit direction, xt = x - mu, s = |x|) and its
 * cosine in *cos, in the frame hp.centre_patterns selects; -1 and -inf for an empty bank. scan:
 * 2 n_patterns floats. */
static int32_t nearest_pattern(const sona_policy *p, const float *xhat, const float *xt, double s,
                               float *scan, float *cos) {
    const sona_bank *b = p->bank;
    if (!p->hp.centre_patterns) return sona_bank_nearest(b, xhat, scan, cos);
    *cos = -INFINITY;
    if (b->n_patterns == 0) return -1;
    const size_t d = p->dim;
    const float *mu = p->mu;
    const double xm = sona_dot_f32(xt, mu, d), mm = sona_dot_f32(mu, mu, d);
    /* within 1 % of sqrt(s^2 + mm) of mu counts as at mu: n2 below comes from float32 dots whose
     * cancellation leaves ~1e-6 (s^2 + mm) where s c = mu */
    const double nx2 = sona_dot_f32(xt, xt, d), at_mu = 1e-4 * (s * s + mm);
    const int x_at_mu = !(nx2 > at_mu);
    const double nx = sqrt(nx2);
    const uint32_t n = b->n_patterns;
    float *cx = scan + n;
    sona_dot2_rows_f32(b->centroid, n, d, mu, xt, scan, cx); /* c_j . mu, c_j . (x - mu) */
    int32_t best = 0;
    double best_cos = -INFINITY;
    for (uint32_t j = 0; j < n; ++j) {
        /* (x - mu) . (s c - mu) / (|x - mu| |s c - mu|), |c| = 1. A point at mu has no
         * direction around it: cosine 0 between it and any other (a pattern at mu: the first
         * query's, while mu is that query), 1 when both are there (the same query again) */
        const double num = s * (double)cx[j] - xm;
        const double n2 = s * s - 2.0 * s * (double)scan[j] + mm;
        double c;
        if (n2 > at_mu) {
            c = x_at_mu ? 0.0 : num / (nx * sqrt(n2));
            c = c < -1.0 ? -1.0 : c > 1.0 ? 1.0 : c;
        } else {
            c = x_at_mu ? 1.0 : 0.0;
        }
        if (c > best_cos) {
            best_cos = c;
            best = (int32_t)j;
        }
    }
    *cos = (float)best_cos;
    return best;
}

/* (6): nearest_pattern if its cosine reaches new_cos, else -1. */
static int32_t match_pattern(const sona_policy *p, const float *xhat, const float *xt, double s,
                             float *scan) {
    float cos;
    const int32_t j = nearest_pattern(p, xhat, xt, s, scan, &cos);
    return (j >= 0 && cos >= p->bank->new_cos) ? j : -1;
}

/* (7)-(9): prior logits for pattern j (-1: none) added to z; Thompson draws when rng is not
 * NULL. */
static void add_prior(const sona_policy *p, int32_t j, sona_pcg32 *rng, double *z) {
    if (!p->hp.use_prior) return;
    const size_t K = p->n_routes;
    const double ts = p->hp.ts_scale;
    double g[SONA_MAX_ROUTES], mk[SONA_MAX_ROUTES], n[SONA_MAX_ROUTES], mx = -INFINITY;
    for (size_t k = 0; k < K; ++k) {
        const double ng = (double)p->global_n[k] + 2.0;
        g[k] = ((double)p->global_s[k] + 1.0) / ng;
        if (rng) g[k] += ts * sona_pcg32_irwin_hall(rng) * post_sd(g[k], ng);
    }
    if (j >= 0) {
        sona_bank_route_means(p->bank, j, (uint32_t)K, g, p->shrink, mk, n);
        if (rng)
            for (size_t k = 0; k < K; ++k)
                mk[k] += ts * sona_pcg32_irwin_hall(rng) * post_sd(mk[k], n[k]);
    } else {
        memcpy(mk, g, K * sizeof(double));
    }
    for (size_t k = 0; k < K; ++k)
        if (mk[k] > mx) mx = mk[k];
    for (size_t k = 0; k < K; ++k) z[k] += (mk[k] - mx) / p->hp.tau_prior;
}

/* (10): each route's cost per call on pattern j's queries (-1: no pattern: the route's). */
static void route_costs(const sona_policy *p, int32_t j, double *c) {
    const size_t K = p->n_routes;
    if (j >= 0)
        sona_bank_route_costs(p->bank, j, (uint32_t)K, p->route_cost, c);
    else
        for (size_t k = 0; k < K; ++k) c[k] = p->route_cost[k];
}

/* (10): the cost term for pattern j (-1: none) and the mask. */
static void add_cost_mask(const sona_policy *p, int32_t j, float cost_weight, const uint8_t *mask,
                          double *z) {
    const size_t K = p->n_routes;
    if (cost_weight != 0.0f) {
        const double w = (double)cost_weight / p->hp.tau_prior;
        double c[SONA_MAX_ROUTES];
        route_costs(p, j, c);
        for (size_t k = 0; k < K; ++k) z[k] -= w * c[k];
    }
    if (mask)
        for (size_t k = 0; k < K; ++k)
            if (!mask[k]) z[k] = -INFINITY;
}

static void softmax(const double *z, size_t K, float *out) {
    double mx = z[0], sum = 0.0;
    for (size_t k = 1; k < K; ++k)
        if (z[k] > mx) mx = z[k];
    double e[SONA_MAX_ROUTES];
    for (size_t k = 0; k < K; ++k) sum += (e[k] = exp(z[k] - mx));
    for (size_t k = 0; k < K; ++k) out[k] = (float)(e[k] / sum);
}

/* Scratch layout (sona_policy_work_floats): [0, K) adapter logits or g_z; [K, 2K + 2 MAX_RANK)
 * u_m/u_b (scores) or gradient coefficients (feedback); then two dim-vectors; then the pattern scan
 * (2 max(bank capacity, K) floats: the centred match's c . mu and c . (x - mu); also the key
 * norms after a feedback's step). */
#define WORK_VEC(p) ((p)->work + 2u * SONA_MAX_RANK + 2u * (p)->n_routes)

void sona_policy_scores(sona_policy *p, const float *x, float cost_weight, const uint8_t *mask,
                        float *probs) {
    const size_t d = p->dim;
    float *xt = WORK_VEC(p), *yh = xt + d, *scan = yh + d;
    float *um = p->work + 2u * p->n_routes, *ub = um + SONA_MAX_RANK;
    double z[SONA_MAX_ROUTES];
    forward(p, x, xt, yh, um, ub, z);
    const float nx = sona_unit(x, d, yh); /* x^ reuses the y^ buffer (the logits are taken) */
    const int32_t j = match_pattern(p, yh, xt, nx > 1e-12f ? nx : 1e-12f, scan);
    add_prior(p, j, NULL, z);
    add_cost_mask(p, j, cost_weight, mask, z);
    softmax(z, p->n_routes, probs);
}

void sona_policy_prepare(sona_policy *p, const float *x, sona_policy_ctx *ctx) {
    const size_t d = p->dim, K = p->n_routes;
    float *xhat = CTX_XHAT(p, ctx), *za = CTX_Z(p, ctx);
    double z[SONA_MAX_ROUTES];
    ctx->ynorm = forward(p, x, CTX_XT(p, ctx), CTX_YH(p, ctx), CTX_UM(p, ctx), CTX_UB(p, ctx), z);
    for (size_t k = 0; k < K; ++k) za[k] = (float)z[k];
    const float nx = sona_unit(x, d, xhat);
    ctx->xscale = nx > 1e-12f ? nx : 1e-12f; /* x = xscale x^ (sona_unit's floor) */
    ctx->pattern = match_pattern(p, xhat, CTX_XT(p, ctx), ctx->xscale, WORK_VEC(p) + 2u * d);
    add_prior(p, ctx->pattern, NULL, z);
    if (p->live)
        for (size_t k = 0; k < K; ++k)
            if (!p->live[k]) z[k] = -INFINITY;
    softmax(z, K, CTX_PI(p, ctx));
}

uint32_t sona_policy_route(sona_policy *p, const float *x, float cost_weight, const uint8_t *mask,
                           sona_policy_ctx *ctx) {
    const size_t K = p->n_routes;
    sona_policy_prepare(p, x, ctx);
    const float *za = CTX_Z(p, ctx);
    float *q = CTX_Q(p, ctx);
    double z[SONA_MAX_ROUTES];
    /* a posterior from a handful of outcomes cannot be trusted: a route whose first outcome was
     * unlucky would be drawn so rarely that it stays locked out for thousands of queries (seen on
     * the real data with the best route). So while some allowed routes have fewer than
     * SONA_MIN_EVIDENCE outcomes (again whenever a decayed count falls below that), routing is
     * uniform over them: drawn, not round-robin, so that queries routed before their feedback
     * arrives (a fleet, a slow grader) spread over those routes instead of all taking one */
    int few = 0;
    if (p->hp.use_prior) {
        int short_of[SONA_MAX_ROUTES], short_any = 0; /* allowed and below the minimum evidence */
        for (size_t k = 0; k < K; ++k) {
            short_of[k] = (!mask || mask[k]) && p->global_n[k] < SONA_MIN_EVIDENCE;
            short_any |= short_of[k];
        }
        /* a route the trade-off rules out is not tried: at cost weight w, a route whose cost per
         * call exceeds the cheapest allowed route's by 1 / w or more never ranks above it,
         * whatever the qualities (in [0, 1]), so its outcomes could not change a decision at this
         * weight (only routes whose cost is known, from an outcome or given up front). The costs
         * are taken only in this phase, which ends after the first outcomes */
        double c[SONA_MAX_ROUTES], cmin = INFINITY;
        if (short_any && cost_weight > 0.0f) {
            route_costs(p, ctx->pattern, c);
            for (size_t k = 0; k < K; ++k)
                if ((!mask || mask[k]) && p->cost_n[k] > 0.0f && c[k] < cmin) cmin = c[k];
        }
        for (size_t k = 0; k < K; ++k) {
            const int under = short_of[k] && !(cost_weight > 0.0f && p->cost_n[k] > 0.0f &&
                                                (double)cost_weight * (c[k] - cmin) >= 1.0);
            z[k] = under ? 0.0 : -INFINITY;
            few |= under;
        }
    }
    if (!few) {
        for (size_t k = 0; k < K; ++k) z[k] = za[k];
        add_prior(p, ctx->pattern, &p->rng, z);
        add_cost_mask(p, ctx->pattern, cost_weight, mask, z);
    }
    softmax(z, K, q);
    size_t allowed = K;
    if (mask) {
        allowed = 0;
        for (size_t k = 0; k < K; ++k) allowed += mask[k] != 0;
    }
    const double eps = p->hp.explore;
    for (size_t k = 0; k < K; ++k)
        if (!mask || mask[k]) q[k] = (float)((1.0 - eps) * q[k] + eps / (double)allowed);
    const double u = sona_pcg32_uniform(&p->rng);
    uint32_t a = 0;
    double acc = q[0];
    /* a route with q 0 is never taken: the last allowed route absorbs rounding */
    uint32_t last = 0;
    for (size_t k = 0; k < K; ++k)
        if (q[k] > 0.0f) last = (uint32_t)k;
    while ((u >= acc || q[a] == 0.0f) && a < last) acc += q[++a];
    ctx->action = a;
    return a;
}

/* The learning step's constants (16) and a cursor over the optimiser state (RMSprop: one entry
 * per row; Fisher, anchor: one per weight; tensors concatenated) while the tensors are updated in
 * order; keeps the largest Fisher entry seen. */
typedef struct state_cursor {
    float *rms, *fisher;
    const float *anchor;
    size_t row, off;
    float fisher_max;
    float w, beta, inv_bc, eps2, lr, pull; /* pull: k lambda |w| / max F */
    float mpull;                           /* k lambda_m |w| / max omega */
    const float *omega, *omega_theta;      /* NULL: no task-memory pull */
    sona_policy_step st;                   /* alpha and wclip fixed; the rest per row */
} state_cursor;

/* One tensor of `rows` rows of n weights; row i's score-function gradient is coef[i]·vec, and
 * vsq = |vec|². */
static void step_tensor(state_cursor *c, float *theta, size_t rows, size_t n, const float *coef,
                        const float *vec, float vsq) {
    /* the rows' normalisers first, in a loop of independent square roots and divisions that
     * pipeline (interleaved with the row passes, each waited for the previous one's latency) */
    float inv_den[SONA_MAX_RANK > SONA_MAX_ROUTES ? SONA_MAX_RANK : SONA_MAX_ROUTES];
    const float keep = 1.0f - c->beta, msq = vsq / (float)n;
    float *v = c->rms + c->row;
    for (size_t i = 0; i < rows; ++i) {
        const float wc = c->w * coef[i];
        v[i] += keep * (wc * wc * msq - v[i]);
        inv_den[i] = 1.0f / sqrtf(v[i] * c->inv_bc + c->eps2);
    }
    for (size_t i = 0; i < rows; ++i) {
        c->st.step = c->lr * c->w * coef[i] * inv_den[i];
        c->st.coef = coef[i];
        c->st.pull = c->lr * c->pull * inv_den[i];
        c->st.mpull = c->lr * c->mpull * inv_den[i];
        const size_t o = c->off + i * n;
        const sona_policy_row row = {theta + i * n, c->fisher ? c->fisher + o : NULL,
                                     c->anchor ? c->anchor + o : NULL,
                                     c->omega ? c->omega + o : NULL,
                                     c->omega ? c->omega_theta + o : NULL};
        const float f = sona_policy_row_f32(&row, vec, n, &c->st);
        if (f > c->fisher_max) c->fisher_max = f;
    }
    c->row += rows;
    c->off += rows * n;
}

/* One adapter tier: coefficients from the pre-update B (s u_i for B's rows along g_y,
 * s (B g_y)_i for A's rows along x~), then A's rows, then B's. */
static void step_tier(state_cursor *c, float *A, float *Bt, size_t r, size_t d, float s,
                      const float *u, const float *xt, float xt_sq, const float *gy, float gy_sq,
                      float *coef) {
    float *cb = coef, *ca = coef + SONA_MAX_RANK;
    sona_dot_rows_f32(Bt, r, d, gy, ca);
    for (size_t i = 0; i < r; ++i) {
        cb[i] = s * u[i];
        ca[i] *= s;
    }
    step_tensor(c, A, r, d, ca, xt, xt_sq);
    step_tensor(c, Bt, r, d, cb, gy, gy_sq);
}

/* Task memory: folds the task that ended at the last stable checkpoint (its anchor, and the
 * Fisher taken with it over that Fisher's max, times weight) into omega and omega_theta. Up to a
 * constant the tasks' penalties sum_m c_m F^_m (theta - anchor_m)² are omega theta² - 2
 * omega_theta theta, so these two arrays hold any number of tasks. */
static void remember_task(sona_policy *p, float weight) {
    const size_t n = sona_policy_n_params(p->dim, p->n_routes, p->micro_rank, p->base_rank);
    float fmax = 0.0f, omax = 0.0f;
    for (size_t i = 0; i < n; ++i)
        if (p->fisher_ckpt[i] > fmax) fmax = p->fisher_ckpt[i];
    if (!(fmax > 0.0f)) return; /* no Fisher yet: nothing was learnt to remember */
    const float inv = weight / fmax;
    for (size_t i = 0; i < n; ++i) {
        const float f = p->fisher_ckpt[i] * inv;
        p->omega[i] += f;
        p->omega_theta[i] += f * p->anchor[i];
        if (p->omega[i] > omax) omax = p->omega[i];
    }
    p->omega_max = omax;
    p->tasks += 1;
}

/* Empirical Bayes for the pattern prior (7), by the method of moments, per route: what a
 * pattern's mean of route k says beyond the traffic-wide mean g_k and the pattern's offset (the
 * interaction, variance tau^2 between patterns) is measured by the count-weighted spread of the
 * patterns' observed means around g_k + offset, D = tau^2 + s^2 P / W (P patterns that tried the
 * route, W their total count, s^2 the variance of one reward within a pattern); the pseudo-count
 * that matches them is s^2 / tau^2. Where a route is better on some kinds of query than on
 * others, patterns get little shrinkage; a route that ranks alike everywhere follows the
 * traffic-wide evidence (which keeps a route that is bad everywhere from being explored again
 * in every new kind of query). Pooling over the routes instead was measured worse on the real
 * data (bench/bench_real.py) and no better on the synthetic task. */
static void estimate_shrink(sona_policy *p) {
    const sona_bank *b = p->bank;
    const size_t K = p->n_routes, R = b->n_routes;
    /* every pattern's offset (7) once, from the traffic-wide Beta means route time uses; into
     * the pattern-scan scratch (bank capacity floats, free after the feedback's step) */
    double beta[SONA_MAX_ROUTES];
    for (size_t k = 0; k < K; ++k)
        beta[k] = ((double)p->global_s[k] + 1.0) / ((double)p->global_n[k] + 2.0);
    float *off = WORK_VEC(p) + 2u * (size_t)p->dim;
    for (uint32_t j = 0; j < b->n_patterns; ++j)
        off[j] = (float)sona_bank_offset(b, (int32_t)j, (uint32_t)K, beta);
    for (size_t k = 0; k < K; ++k) {
        const double nk = p->global_n[k];
        if (!(nk > 0.0)) continue;
        const double g = p->global_s[k] / nk, V = p->global_q[k] / nk - g * g;
        double w = 0.0, dev = 0.0, tried = 0.0;
        for (uint32_t j = 0; j < b->n_patterns; ++j) {
            const double n = b->route_n[(size_t)j * R + k];
            if (!(n > 0.0)) continue;
            const double d = b->route_s[(size_t)j * R + k] / n - g - (double)off[j];
            w += n;
            dev += n * d * d;
            tried += 1.0;
        }
        /* too little evidence to measure a spread (fewer than 2 patterns, or fewer than
         * SONA_SHRINK_EVIDENCE outcomes per pattern on average), or none at all (every reward
         * equal): the pseudo-count stays where it is */
        if (tried < 2.0 || w < SONA_SHRINK_EVIDENCE * tried || !(V > 0.0)) continue;
        /* V bounds the within-pattern variance s^2 from above (it adds the spread between
         * patterns), so tau^2 = D - V P / W errs small and the pseudo-count V / tau^2 errs
         * towards the traffic-wide evidence */
        const double tau2 = dev / w - V * tried / w;
        const double n0 = tau2 * SONA_SHRINK_MAX > V ? V / tau2 : SONA_SHRINK_MAX;
        p->shrink[k] = (float)(n0 > SONA_SHRINK_MIN ? n0 : SONA_SHRINK_MIN);
    }
}

void sona_policy_learn(sona_policy *p, const sona_policy_ctx *ctx, uint32_t a, float prob, float r,
                       float cost, int new_hit) {
    const size_t d = p->dim, K = p->n_routes, rm = p->micro_rank, rb = p->base_rank;
    const sona_policy_hp *hp = &p->hp;
    const float *xhat = CTX_XHAT(p, ctx), *xt = CTX_XT(p, ctx), *yh = CTX_YH(p, ctx);
    const float *pi = CTX_PI(p, ctx);
    const float *um = CTX_UM(p, ctx), *ub = CTX_UB(p, ctx);
    float *gz = p->work, *coef = gz + K; /* K, then max(2 SONA_MAX_RANK, K) coefficients */
    float *gy = WORK_VEC(p) + d, *scan = gy + d;

    /* (12)-(13) */
    /* no match in a full bank: the nearest pattern, in the frame the match used */
    int32_t jm = ctx->pattern;
    if (jm < 0 && p->bank->n_patterns >= p->bank->capacity) {
        float cos;
        jm = nearest_pattern(p, xhat, xt, ctx->xscale, scan, &cos);
    }
    const int32_t j = sona_bank_claim(p->bank, jm, xhat, p->global_baseline, scan);
    const float adv = r - p->bank->baseline[j];
    float w = adv * pi[a] / prob;
    if (w > hp->adv_clip) w = hp->adv_clip;
    if (w < -hp->adv_clip) w = -hp->adv_clip;

    /* (14) g_z, g_y */
    for (size_t k = 0; k < K; ++k) gz[k] = -pi[k];
    gz[a] += 1.0f;
    memset(gy, 0, d * sizeof(float));
    for (size_t k = 0; k < K; ++k) sona_axpy_f32(d, gz[k] / hp->tau, p->keys + k * d, gy);
    const float gdot = sona_dot_f32(gy, yh, d);
    sona_axpy_f32(d, -gdot, yh, gy);
    const float inv_ny = 1.0f / ctx->ynorm;
    for (size_t i = 0; i < d; ++i) gy[i] *= inv_ny;

    /* (15) EWC++ bookkeeping and the anchor (weights before this step) */
    p->t += 1;
    if (hp->ewc) {
        p->reward_short += hp->reward_short_rate * (r - p->reward_short);
        p->reward_long += hp->reward_long_rate * (r - p->reward_long);
        const int checkpoint = hp->ewc_every && p->t % hp->ewc_every == 0;
        const int stable = p->reward_short >= p->reward_long - hp->ewc_margin;
        const float novel = ctx->pattern < 0 || (uint32_t)j >= p->ckpt_patterns ? 1.0f : 0.0f;
        p->novelty_short += hp->novelty_short_rate * (novel - p->novelty_short);
        p->novelty_long += hp->novelty_long_rate * (novel - p->novelty_long);
        const float rise = p->novelty_short - p->novelty_long, nu = hp->ewc_novelty;
        const int novel_shift = nu > 0.0f && p->has_anchor && rise >= nu;
        if ((!stable || novel_shift) && !p->drifting) { /* an inferred task boundary */
            p->task_boundaries += 1;
            p->drifting = 1;
            const float weight = nu > 0.0f ? fminf(fmaxf(rise / nu, 0.0f), 1.0f) : 1.0f;
            if (hp->ewc_memory > 0.0f && p->has_anchor && weight > 0.0f) remember_task(p, weight);
        }
        if (checkpoint && stable) {
            float *an = p->anchor;
            const size_t sizes[6] = {rm * d, rm * d, rb * d, rb * d, K * d, K};
            float *const src[6] = {p->A_micro, p->Bt_micro, p->A_base, p->Bt_base, p->keys, p->bias};
            for (int t = 0; t < 6; ++t) {
                memcpy(an, src[t], sizes[t] * sizeof(float));
                an += sizes[t];
            }
            if (hp->ewc_memory > 0.0f)
                memcpy(p->fisher_ckpt, p->fisher,
                       sona_policy_n_params(p->dim, K, rm, rb) * sizeof(float));
            p->has_anchor = 1;
            /* the bank's patterns are now the familiar ones: the short share restarts from the
             * long-run level (it measured novelty against the previous checkpoint's patterns) */
            p->ckpt_patterns = p->bank->n_patterns;
            p->novelty_short = p->novelty_long;
            p->checkpoints += 1;
            p->drifting = 0;
        }
    }

    /* (16) one fused pass per row; coefficients from the pre-update weights. The Fisher and the
     * pull run on every k-th feedback only (k = fisher_every), each k times as strong: the same
     * decay per feedback and the same pull per feedback on average, for the cost of a clipped
     * axpy per row on the other steps */
    const uint32_t k_f = hp->fisher_every;
    const int fisher_step = hp->ewc && p->t % k_f == 0;
    state_cursor cur;
    cur.rms = p->rms;
    cur.fisher = fisher_step ? p->fisher : NULL;
    cur.anchor = (fisher_step && p->has_anchor) ? p->anchor : NULL;
    cur.row = cur.off = 0;
    cur.fisher_max = 0.0f;
    cur.w = w;
    cur.beta = hp->rms_decay;
    cur.inv_bc = (float)(1.0 / (1.0 - pow((double)hp->rms_decay, (double)p->t)));
    cur.eps2 = hp->rms_eps * hp->rms_eps;
    cur.lr = hp->lr;
    cur.pull = (float)k_f * hp->ewc_lambda * fabsf(w) / (p->fisher_max + 1e-12f);
    cur.st.alpha = k_f == 1 || !fisher_step ? hp->ewc_alpha /* unused off Fisher steps */
                                            : 1.0f - powf(1.0f - hp->ewc_alpha, (float)k_f);
    cur.st.wclip = hp->weight_clip;
    cur.omega = (fisher_step && p->tasks > 0) ? p->omega : NULL;
    cur.omega_theta = p->omega_theta;
    cur.mpull = (float)k_f * hp->ewc_memory * fabsf(w) / (p->omega_max + 1e-12f);
    const float xt_sq = sona_dot_f32(xt, xt, d), gy_sq = sona_dot_f32(gy, gy, d);
    step_tier(&cur, p->A_micro, p->Bt_micro, rm, d, hp->use_micro ? hp->micro_scale : 0.0f, um, xt,
              xt_sq, gy, gy_sq, coef);
    step_tier(&cur, p->A_base, p->Bt_base, rb, d, hp->use_base ? hp->base_scale : 0.0f, ub, xt,
              xt_sq, gy, gy_sq, coef);
    for (size_t k = 0; k < K; ++k) coef[k] = hp->learn_keys ? gz[k] / hp->tau : 0.0f;
    step_tensor(&cur, p->keys, K, d, coef, yh, sona_dot_f32(yh, yh, d));
    const float one = hp->learn_bias ? 1.0f : 0.0f;
    float gz_sq = 0.0f;
    for (size_t k = 0; k < K; ++k) gz_sq += gz[k] * gz[k];
    step_tensor(&cur, p->bias, 1, K, &one, gz, gz_sq);
    if (fisher_step) p->fisher_max = cur.fisher_max;
    if (hp->unit_keys) {
        float *sq = scan + K; /* dot_sq_rows' dots with y^ go to scan[0, K): unused */
        sona_dot_sq_rows_f32(p->keys, K, d, yh, scan, sq);
        for (size_t k = 0; k < K; ++k) {
            float *row = p->keys + k * d;
            const float nk = sqrtf(sq[k]);
            const float inv = 1.0f / (nk > 1e-12f ? nk : 1e-12f);
            /* row *= inv as row += (inv - 1) row in the vector kernel: inv is near 1 after a
             * step, where inv - 1 is exact, so this equals the scaling */
            sona_axpy_f32(d, inv - 1.0f, row, row);
        }
    }

    /* (17) statistics and running means */
    sona_bank_observe(p->bank, j, xhat, (int32_t)a, r, new_hit);
    for (size_t k = 0; k < K; ++k) {
        p->global_n[k] *= hp->global_decay;
        p->global_s[k] *= hp->global_decay;
        p->global_q[k] *= hp->global_decay;
    }
    p->global_n[a] += 1.0f;
    p->global_s[a] += r;
    p->global_q[a] += r * r;
    if (p->t % SONA_SHRINK_EVERY == 0) estimate_shrink(p);
    if (cost == cost) { /* reported (not NaN) */
        sona_bank_observe_cost(p->bank, j, (int32_t)a, cost);
        p->cost_n[a] += 1.0f;
        p->route_cost[a] += (cost - p->route_cost[a]) / p->cost_n[a];
    }
    p->global_baseline += hp->global_rate * (r - p->global_baseline);
    p->n_seen += 1;
    const float rate = 1.0f / (float)(p->n_seen < hp->mean_window ? p->n_seen : hp->mean_window);
    const float xs = ctx->xscale;
    float *mu = p->mu;
    for (size_t i = 0; i < d; ++i) mu[i] += (xs * xhat[i] - mu[i]) * rate;
}
