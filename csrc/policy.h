/* policy.h: the router policy, learning from one scalar reward per routed query.
 *
 * A softmax over K routes whose logits add two experts: the adapter (the centred query through
 * MicroLoRA + BaseLoRA, normalised, scored against K learned unit keys plus a bias; trained by
 * REINFORCE against a per-pattern baseline with RMSprop and an EWC++ pull) and the pattern prior
 * (a Thompson draw from the nearest pattern's per-route reward statistics). The equations, in the
 * order this code runs them, are in policy.c; tests/policy_reference.py is the numpy oracle.
 * Every array is owned by the caller; the struct only points at them. Not thread-safe: the Cython
 * layer calls it under the GIL.
 */
#ifndef SONA_POLICY_H
#define SONA_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "bank.h"
#include "rng.h"

#define SONA_MAX_ROUTES 1024
/* Shrinkage is re-estimated every this many feedbacks: O(patterns x routes), and the estimate
 * moves slowly (it pools every pattern's evidence) */
#define SONA_SHRINK_EVERY 64
/* Its bounds: at least one traffic-wide observation (a pattern never starts from nothing), at
 * most SONA_SHRINK_MAX (a route whose patterns look alike follows the traffic-wide mean until
 * that many of its own outcomes) */
#define SONA_SHRINK_MIN 1.0f
#define SONA_SHRINK_EVIDENCE 4.0
#define SONA_SHRINK_MAX 100.0f
/* While allowed routes have fewer traffic-wide (decayed) outcomes than this, routing is uniform
 * over them: a posterior from fewer outcomes cannot be trusted to keep exploring a route that was
 * unlucky */
#define SONA_MIN_EVIDENCE 5.0f

/* Hyper-parameters: the fields carry the names of sona/params.py's table, from which the Cython
 * layer fills the struct by name (plus global_decay, derived from prior_window). */
typedef struct sona_policy_hp {
    float micro_scale, base_scale;
    float tau;                      /* adapter temperature */
    float tau_prior;                /* prior logit scale */
    float ts_scale;                 /* Thompson noise scale */
    float explore;                  /* epsilon mixed into the behaviour policy */
    float adv_clip;                 /* |w| bound */
    float lr, rms_decay, rms_eps;   /* RMSprop */
    float weight_clip;              /* every weight stays in [-clip, clip] */
    float global_rate;              /* global reward baseline EMA rate */
    float global_decay;             /* per feedback, the traffic-wide route statistics decay by
                                     * it (1 - 1 / prior_window) */
    float ewc_alpha, ewc_lambda, ewc_margin;
    float ewc_memory;               /* lambda of the task memory (0: no memory) */
    float ewc_novelty;              /* novelty rise that is a task boundary and that remembers
                                     * a task fully (0: reward drift only, every task fully) */
    float reward_short_rate, reward_long_rate;   /* EMA rates of the drift detector's means */
    float novelty_short_rate, novelty_long_rate; /* EMA rates of the shares of novel queries */
    uint32_t mean_window;           /* mu: cumulative mean, then EMA 1/window */
    uint32_t ewc_every;             /* checkpoint period (feedbacks) */
    uint32_t fisher_every;          /* Fisher update and EWC pull period (feedbacks) */
    uint8_t use_micro, use_base, use_prior, learn_keys, learn_bias, unit_keys, ewc;
    uint8_t centre_patterns;        /* (6) match patterns around mu (else raw directions) */
} sona_policy_hp;

typedef struct sona_policy {
    uint32_t dim, n_routes, micro_rank, base_rank;
    sona_policy_hp hp;
    /* learned weights, in the order of the optimiser state below */
    float *A_micro, *Bt_micro; /* micro_rank x dim each (B stored transposed) */
    float *A_base, *Bt_base;   /* base_rank x dim each */
    float *keys;               /* n_routes x dim, unit rows */
    float *bias;               /* n_routes */
    /* optimiser and EWC++ state, tensors concatenated in the order above: RMSprop one float per
     * row (sona_policy_n_rows); one per weight (sona_policy_n_params): the Fisher and the anchor,
     * the Fisher as it was when the anchor was taken (fisher_ckpt), and the task memory (omega:
     * the past tasks' normalised Fisher summed; omega_theta: the same sum of Fisher ⊙ anchor) */
    float *rms, *fisher, *anchor, *fisher_ckpt, *omega, *omega_theta;
    float *mu;                 /* dim: running mean of queries */
    /* n_routes each: traffic-wide reward statistics of every route (feedbacks on all queries,
     * never decayed: the prior every pattern is shrunk towards) and the cost per call (the mean
     * of the costs reported with outcomes, a cost given up front counting as cost_n's first
     * observation; cost_n 0: unknown, taken as 0) */
    float *global_n, *global_s, *global_q, *route_cost, *cost_n; /* global_q: sum of r^2 */
    /* n_routes: how many traffic-wide observations each pattern's statistics of a route start
     * from, estimated every SONA_SHRINK_EVERY
     * feedbacks by empirical Bayes (the spread of the
     * patterns' route means around the traffic-wide one beyond what sampling noise explains):
     * patterns that really differ get little shrinkage, routes that look alike everywhere (or
     * were rarely tried) follow the traffic-wide evidence */
    float *shrink;
    /* n_routes flags, 0 for a retired route (NULL: every route live): a retired route gets
     * probability 0 in the learning policy too, so the routes left share the gradient */
    const uint8_t *live;
    float *work;               /* scratch: sona_policy_work_floats() floats */
    sona_bank *bank;
    sona_pcg32 rng;
    uint64_t n_seen;           /* queries folded into mu */
    uint64_t t;                /* feedbacks learnt from (optimiser steps) */
    float global_baseline, reward_short, reward_long, fisher_max;
    float omega_max;          /* max of omega (0 while no task is remembered) */
    uint64_t checkpoints;     /* EWC++ anchors taken */
    uint64_t task_boundaries; /* inferred task switches: reward drift or novelty rise edges */
    uint64_t tasks;           /* tasks folded into the memory */
    /* share of feedbacks on novel queries (no pattern matched, or a pattern created since the
     * last stable checkpoint): short and long EMAs (hp.novelty_short_rate, novelty_long_rate).
     * Pattern indices are the test, so a background refinement that moves rows can misfile a
     * pattern as familiar or novel until the next checkpoint renews ckpt_patterns. */
    float novelty_short, novelty_long;
    uint32_t ckpt_patterns;   /* patterns in the bank at the last stable checkpoint */
    uint8_t has_anchor, drifting;
} sona_policy;

/* What learning from one outcome needs about its query, a deterministic function of the state
 * and the query (sona_policy_prepare): buf holds sona_policy_ctx_floats() floats: x^, x~, y^
 * (dim each), pi (n_routes: the learning policy's probabilities, greedy prior, no cost, no
 * mask), q (n_routes: the behaviour distribution the route was drawn from, set by
 * sona_policy_route), u_m, u_b, z (n_routes: the adapter's logits); the query is x = xscale x^. */
typedef struct sona_policy_ctx {
    float *buf;
    float ynorm, xscale;
    int32_t pattern; /* matched pattern, or -1 */
    uint32_t action;
} sona_policy_ctx;

size_t sona_policy_n_params(uint32_t dim, uint32_t n_routes, uint32_t micro_rank,
                            uint32_t base_rank);
size_t sona_policy_n_rows(uint32_t n_routes, uint32_t micro_rank, uint32_t base_rank);
size_t sona_policy_ctx_floats(uint32_t dim, uint32_t n_routes, uint32_t micro_rank,
                              uint32_t base_rank);
size_t sona_policy_work_floats(uint32_t dim, uint32_t n_routes, uint32_t bank_capacity);

/* Greedy probabilities (posterior-mean prior, no exploration) of the objective quality -
 * cost_weight cost, over the routes allowed by mask (NULL: all; others get 0; at least one must
 * be allowed); reads state, changes nothing except the scratch buffer. */
void sona_policy_scores(sona_policy *p, const float *x, float cost_weight, const uint8_t *mask,
                        float *probs);
/* Fills ctx's deterministic part for query x (everything but q): no state changes. */
void sona_policy_prepare(sona_policy *p, const float *x, sona_policy_ctx *ctx);
/* prepare, then samples a route for x (Thompson draws from the prior, cost term, mask, then
 * epsilon over the allowed routes) into ctx->action and q; returns the route. Advances the
 * exploration RNG; changes no learned state. */
uint32_t sona_policy_route(sona_policy *p, const float *x, float cost_weight, const uint8_t *mask,
                           sona_policy_ctx *ctx);
/* Learns from the outcome (route a, chosen with probability prob in (0, 1], reward r in [0, 1],
 * cost: NaN when not reported) of the query whose prepared ctx is given: a deterministic
 * function of (state, ctx, a, prob, r, cost, new_hit). new_hit 0: another outcome of the query
 * the previous call learnt from (a labelled set's other routes: see sona_bank_observe). */
void sona_policy_learn(sona_policy *p, const sona_policy_ctx *ctx, uint32_t a, float prob, float r,
                       float cost, int new_hit);

#endif /* SONA_POLICY_H */
