"""Numpy reference of the router learning rule (test oracle for the C port).

One class, float64, deterministic from ``seed``. The equations, in the order the C code runs
them, are in the docstrings of ``route`` and ``feedback``; the derivation, hyperparameters, costs
and measured numbers
are in /work/research/ALGORITHM.md (the learning research note). The only thing imported from
sona is the parameter table's defaults (sona.params: pure Python).

    pol = PolicyReference(dim=256, n_routes=4, seed=0)
    d = pol.route(x)              # Decision(index, probs, ctx)
    pol.feedback(d, quality)      # quality in [0, 1]
    pol.scores(x)                 # greedy probabilities, no side effects, no RNG
"""

from __future__ import annotations

import numpy as np

from sona.params import defaults

_MASK64 = (1 << 64) - 1


class PCG32:
    """PCG32 XSH-RR (O'Neill), 64-bit state, 32-bit output: the RNG the C port must use.

    ``seed(s, stream)``: state=0, inc=(stream<<1)|1, step, state+=s, step. ``uniform()`` is
    ``(u32 >> 8) * 2**-24`` (exact in float32 and float64, so C and numpy agree bit for bit).
    """

    MULT = 6364136223846793005

    def __init__(self, seed: int, stream: int) -> None:
        self.inc = ((stream << 1) | 1) & _MASK64
        self.state = 0
        self.next_u32()
        self.state = (self.state + seed) & _MASK64
        self.next_u32()

    def next_u32(self) -> int:
        old = self.state
        self.state = (old * self.MULT + self.inc) & _MASK64
        xorshifted = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & 0xFFFFFFFF

    def uniform(self) -> float:
        return (self.next_u32() >> 8) * (1.0 / 16777216.0)

    def normal(self) -> float:
        """Box-Muller (cosine branch); used only at init."""
        u1 = self.uniform() + 0.5 / 16777216.0  # in (0, 1): log is finite
        u2 = self.uniform()
        return float(np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))

    def irwin_hall(self) -> float:
        """About N(0, 1): (u1+u2+u3+u4-2)*sqrt(3). No transcendental, so C agrees exactly."""
        s = self.uniform() + self.uniform() + self.uniform() + self.uniform()
        return (s - 2.0) * 1.7320508075688772


class Decision:
    __slots__ = ("ctx", "index", "probs")

    def __init__(self, index: int, probs: np.ndarray, ctx: tuple) -> None:
        self.index, self.probs, self.ctx = index, probs, ctx


# The defaults (and names) of sona's parameter table: the reference follows the same rule.
DEFAULTS = defaults()


class PolicyReference:
    """Router policy: centred input, MicroLoRA + BaseLoRA, learned keys/bias, pattern prior."""

    def __init__(self, dim: int, n_routes: int, seed: int = 0, **hp) -> None:
        unknown = set(hp) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}")
        self.h = h = {**DEFAULTS, **hp}
        self.d, self.K = d, K = int(dim), int(n_routes)
        init = PCG32(seed, stream=1)
        self.rng = PCG32(seed, stream=2)          # exploration stream
        self.mu = np.zeros(d)
        self.n = 0
        self.t = 0                                # optimiser steps
        p = {}
        # Order of init draws: A_micro, A_base, keys (each row-major, Box-Muller normals).
        p["A_micro"] = self._orthonormal_rows(h["micro_rank"], init)
        p["B_micro"] = np.zeros((h["micro_rank"], d))            # stored transposed: (r, d)
        p["A_base"] = self._orthonormal_rows(h["base_rank"], init)
        p["B_base"] = np.zeros((h["base_rank"], d))
        keys = np.array([[init.normal() for _ in range(d)] for _ in range(K)])
        p["keys"] = keys / np.linalg.norm(keys, axis=1, keepdims=True)
        p["bias"] = np.zeros(K)
        self.p = p
        # RMSprop second moments: one per row (the bias is one row)
        self.v = {k: np.zeros((a.shape[0] if a.ndim == 2 else 1, 1)) for k, a in p.items()}
        self.fisher = {k: np.zeros_like(a) for k, a in p.items()}
        self.anchor = None
        self.fisher_max = 0.0
        self.drifting = False                     # between a boundary and a stable checkpoint
        self.fisher_ckpt = {k: np.zeros_like(a) for k, a in p.items()}  # Fisher at the anchor
        self.omega = {k: np.zeros_like(a) for k, a in p.items()}        # past tasks: sum F^_m
        self.omega_theta = {k: np.zeros_like(a) for k, a in p.items()}  # sum F^_m anchor_m
        self.omega_max = 0.0
        self.tasks = 0
        self.novelty_short = self.novelty_long = 0.0  # shares of feedbacks on novel queries
        self.ckpt_patterns = 0                    # patterns at the last stable checkpoint
        self.reward_short = self.reward_long = 0.5
        M = h["max_patterns"]
        self.centroid = np.zeros((M, d))          # unit rows
        self.centroid_sum = np.zeros((M, d))
        self.n_patterns = 0
        self.pat_count = np.zeros(M)              # hits
        self.pat_n = np.zeros((M, K), np.float32)  # decayed per-route counts (float32 as in C)
        self.pat_s = np.zeros((M, K), np.float32)  # decayed per-route reward sums
        self.pat_cn = np.zeros((M, K), np.float32)  # decayed per-route counts of costs reported
        self.pat_c = np.zeros((M, K), np.float32)   # and their sums
        self.route_cost = np.zeros(K, np.float32)   # traffic-wide cost per call (running mean)
        self.cost_n = np.zeros(K, np.float32)       # and its count
        # float32 as in C: the minimum-evidence rule compares the decayed count with 5 exactly
        self.global_n = np.zeros(K, np.float32)   # traffic-wide per-route counts (decayed)
        self.global_s = np.zeros(K, np.float32)   # and reward sums
        self.global_q = np.zeros(K, np.float32)   # and squared-reward sums
        self.shrink = np.full(K, h["prior_count"])  # per-route pseudo-counts (empirical Bayes)
        self.pat_base = np.zeros(M)               # per-pattern reward baseline
        self.global_base = 0.5

    def _orthonormal_rows(self, r: int, rng: PCG32) -> np.ndarray:
        rows = []
        for _ in range(r):                        # modified Gram-Schmidt, in draw order
            v = np.array([rng.normal() for _ in range(self.d)])
            for q in rows:
                v -= (v @ q) * q
            rows.append(v / np.linalg.norm(v))
        return np.array(rows).reshape(r, self.d)

    @property
    def n_parameters(self) -> int:
        return sum(a.size for a in self.p.values())

    # -- forward pieces ----------------------------------------------------------------------
    def _adapter(self, x):
        h, p = self.h, self.p
        xt = x - self.mu                                          # (1) centre
        y = xt.copy()
        um = p["A_micro"] @ xt                                    # (2) u_m = A_m x~
        ub = p["A_base"] @ xt                                     #     u_b = A_b x~
        if h["use_micro"]:
            y += h["micro_scale"] * (p["B_micro"].T @ um)         # (3) y = x~ + s_m B_m u_m + ...
        if h["use_base"]:
            y += h["base_scale"] * (p["B_base"].T @ ub)
        ny = max(float(np.sqrt(y @ y)), 1e-6)
        yh = y / ny                                               # (4) y^ = y / |y|
        z = (p["keys"] @ yh) / h["tau"] + p["bias"]               # (5) z_ad = K y^ / tau + bias
        return xt, um, ub, ny, yh, z

    def _cosines(self, x):
        """(6) cosine of x with every pattern: around mu (x - mu against s c - mu, s = |x|, c
        the unit centroid as stored) with centre_patterns, else of the raw directions."""
        C = self.centroid[:self.n_patterns]
        s = max(float(np.sqrt(x @ x)), 1e-12)
        if not self.h["centre_patterns"]:
            return C @ (x / s)
        xt, mu = x - self.mu, self.mu
        at_mu = 1e-4 * (s * s + mu @ mu)  # within 1 % of mu: at mu
        nx2 = float(xt @ xt)
        n2 = s * s - 2.0 * s * (C @ mu) + mu @ mu
        ok = n2 > at_mu
        if nx2 <= at_mu:  # a point at mu: cosine 1 with a pattern there too, else 0
            return np.where(ok, 0.0, 1.0)
        cos = (s * (C @ xt) - xt @ mu) / (np.sqrt(nx2) * np.sqrt(np.where(ok, n2, 1.0)))
        return np.where(ok, np.clip(cos, -1.0, 1.0), 0.0)

    def _nearest(self, x):
        if self.n_patterns == 0:
            return -1
        cos = self._cosines(x)
        j = int(np.argmax(cos))
        return j if cos[j] >= self.h["new_pattern_cos"] else -1

    def _offset(self, j, g):
        """Pattern j's offset from the route means g (7): route k's mean residual weighs
        w = c N / (N + c) (c = 10: SONA_OFFSET_CAP), a prior offset of 0 weighs c."""
        n, s = self.pat_n[j].astype(np.float64), self.pat_s[j].astype(np.float64)
        c = 10.0
        return float((c * (s - n * g) / (n + c)).sum() / (c + (c * n / (n + c)).sum()))

    def _estimate_shrink(self) -> None:
        """Empirical Bayes, every 64 feedbacks, per route (method of moments): the spread of the
        P patterns' means around g + offset is D = tau^2 + s^2 P / W; with the traffic-wide
        variance V for s^2, tau^2 = D - V P / W and n0 = V / tau^2 in [1, 100]; kept while the
        evidence is thin."""
        N, S = (a[:self.n_patterns].astype(np.float64) for a in (self.pat_n, self.pat_s))
        gn, gs, gq = (a.astype(np.float64) for a in (self.global_n, self.global_s, self.global_q))
        beta = (gs + 1.0) / (gn + 2.0)
        off = np.array([np.float32(self._offset(j, beta)) for j in range(self.n_patterns)],
                       dtype=np.float64)
        for k in range(self.K):
            nk = gn[k]
            if nk <= 0:
                continue
            g = gs[k] / nk
            V = gq[k] / nk - g * g
            tried = N[:, k] > 0
            n, P = N[tried, k], tried.sum()
            w = n.sum()
            if P < 2 or w < 4.0 * P or not V > 0:
                continue
            D = (n * (S[tried, k] / n - g - off[tried]) ** 2).sum() / w
            tau2 = D - V * P / w
            n0 = V / tau2 if tau2 * 100.0 > V else 100.0
            self.shrink[k] = max(n0, 1.0)

    @staticmethod
    def _sd(m, n):
        return np.sqrt(np.maximum(m * (1.0 - m), 0.01) / n)

    def _prior(self, j, sample: bool):
        h = self.h
        if not h["use_prior"]:
            return np.zeros(self.K)
        ng = self.global_n.astype(np.float64) + 2.0
        g = (self.global_s.astype(np.float64) + 1.0) / ng       # (7) traffic-wide means
        if sample:                                                # (9) Thompson draws, route order
            e = np.array([self.rng.irwin_hall() for _ in range(self.K)])
            g = g + h["ts_scale"] * e * self._sd(g, ng)
        m = g
        if j >= 0:
            n = self.pat_n[j].astype(np.float64) + self.shrink
            base = np.clip(g + self._offset(j, g), 0.0, 1.0)      # (7) moved by the offset
            m = (self.pat_s[j].astype(np.float64) + self.shrink * base) / n  # (7) shrunk
            if sample:
                e = np.array([self.rng.irwin_hall() for _ in range(self.K)])
                m = m + h["ts_scale"] * e * self._sd(m, n)
        return (m - m.max()) / h["tau_prior"]                     # (8) z_pr

    def _costs(self, j):
        """(10) each route's cost per call on pattern j's queries: (C_j + s_j c) / (M_j + 1),
        s_j = sum C_j / sum M_j c (1 without costs there); c without a pattern."""
        c = self.route_cost.astype(np.float64)
        if j >= 0:
            C, M = self.pat_c[j].astype(np.float64), self.pat_cn[j].astype(np.float64)
            expected = float((M * c).sum())
            scale = float(C.sum()) / expected if expected > 0 else 1.0
            c = (C + scale * c) / (M + 1.0)
        return c

    def _cost_term(self, j, cost_weight):
        """(10) cost_weight / tau_prior times the costs per call on pattern j's queries."""
        return cost_weight / self.h["tau_prior"] * self._costs(j)

    @staticmethod
    def _softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    # -- public ------------------------------------------------------------------------------
    def scores(self, x, cost_weight: float = 0.0) -> np.ndarray:
        """Greedy probabilities softmax(z_ad + z_pr(mean) - cost term); no state change, no RNG."""
        x = np.asarray(x, dtype=np.float64)
        j = self._nearest(x)
        return self._softmax(self._adapter(x)[5] + self._prior(j, False)
                             - self._cost_term(j, cost_weight))

    def route(self, x, cost_weight: float = 0.0) -> Decision:
        """(1)-(9) above, then (10) pi = softmax(z_ad + z_pr(mean)) (learns),
        q = (1-eps) softmax(z_ad + z_pr(Thompson draws)) + eps/K (behaviour),
        (11) one uniform u, a = first index with cumsum(q) > u."""
        x = np.asarray(x, dtype=np.float64)
        xt, um, ub, ny, yh, z_ad = self._adapter(x)
        j = self._nearest(x)
        pi = self._softmax(z_ad + self._prior(j, False))         # the policy that learns
        few = self.global_n < 5.0 if self.h["use_prior"] else np.zeros(self.K, bool)
        known = self.cost_n > 0
        if cost_weight > 0 and known.any():                       # (10) ruled out by the trade-off
            c = self._costs(j)
            few &= ~(known & (np.float32(cost_weight) * (c - c[known].min()) >= 1.0))
        if few.any():                                             # (10) minimum evidence
            q = few / few.sum()                                   # uniform over those routes
        else:
            q = self._softmax(z_ad + self._prior(j, True)         # the behaviour policy
                              - self._cost_term(j, cost_weight))
        q = (1.0 - self.h["explore"]) * q + self.h["explore"] / self.K
        u = self.rng.uniform()
        a, acc = 0, q[0]
        while u >= acc and a < self.K - 1:
            a += 1
            acc += q[a]
        return Decision(a, q, (x, xt, um, ub, ny, yh, j, pi, q))

    def _remember_task(self, weight: float) -> None:
        fmax = max(float(f.max()) for f in self.fisher_ckpt.values())
        if fmax <= 0:
            return
        for k, fc in self.fisher_ckpt.items():
            self.omega[k] += weight * fc / fmax
            self.omega_theta[k] += weight * fc / fmax * self.anchor[k]
        self.omega_max = max(float(o.max()) for o in self.omega.values())
        self.tasks += 1

    def feedback(self, decision: Decision, quality: float, cost: float | None = None) -> None:
        """Learn from one scalar quality in [0, 1] (and the call's cost, when reported):

        (12) pattern j (new pattern from x if none matched and room; else nearest)
        (13) adv = r - b_j (baseline BEFORE its update);  w = clip(adv * pi_a / q_a, +-1)
             (pi: the policy with the prior's means, q: the behaviour the route was drawn from)
        (14) g_z = e_a - pi;  g_bias = g_z;  g_keys = g_z y^T / tau
             g_y^ = K^T g_z / tau;  g_y = (g_y^ - (g_y^ . y^) y^) / |y|
             g_Bm = s_m u_m g_y^T (rows);  g_Am = s_m (B_m g_y) x~^T   (same for base)
        (15) [EWC, every k = fisher_every feedbacks] F = (1-a) F + a g^2, a = 1-(1-alpha)^k;
             anchor every 500 steps if reward is stable; s = w g - k lambda |w| F/max(F) (theta -
             anchor) - k lambda_m |w| (omega theta - omega_theta) / max(omega) on those steps,
             s = w g on the others. Novelty nu_s, nu_l: EMAs (novelty_*_rate) of "x matched no
             pattern, or one created since the last stable checkpoint"; nu_s = nu_l at each
             stable checkpoint. A boundary (the short reward EMA first falls below the long one
             by the margin, or, with an anchor, nu_s - nu_l first reaches nu* = ewc_novelty > 0)
             adds the task of the last anchor to the memory with weight
             c = clip((nu_s - nu_l) / nu*, 0, 1) (1 if nu* = 0): omega += c F^,
             omega_theta += c F^ anchor, F^ = the Fisher at that anchor over its max
        (16) RMSprop per row i: v_i = b v_i + (1-b) mean_j (w g_ij)^2;
             theta_i += lr s_i / sqrt(v_i/(1-b^t) + eps^2);
             theta = clip(theta, +-weight_clip); keys_j /= |keys_j| (bounded adapter logits)
        (17) stats: n_j,s_j,M_j,C_j *= decay; n_ja += 1; s_ja += r; with a cost: M_ja += 1,
             C_ja += cost, the route's running mean cost; b_j update; centroid update;
             traffic-wide N, G *= 1 - 1/prior_window; N_a += 1; G_a += r; global baseline;
             mu update.
        """
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        h, p = self.h, self.p
        x, xt, um, ub, ny, yh, j, pi, q = decision.ctx
        a, r = decision.index, float(quality)
        matched = j >= 0
        if j < 0:
            if self.n_patterns < h["max_patterns"]:
                j = self.n_patterns
                self.n_patterns += 1
                self.pat_base[j] = self.global_base
            else:
                j = int(np.argmax(self._cosines(x)))
        adv = r - self.pat_base[j]
        w = float(np.clip(adv * pi[a] / q[a], -h["adv_clip"], h["adv_clip"]))

        gz = -pi.copy()
        gz[a] += 1.0
        g = {"bias": gz if h["learn_bias"] else np.zeros(self.K)}
        g["keys"] = np.outer(gz, yh) / h["tau"] if h["learn_keys"] else np.zeros_like(p["keys"])
        gyh = p["keys"].T @ gz / h["tau"]
        gy = (gyh - (gyh @ yh) * yh) / ny
        for name, on, s, u in (("micro", h["use_micro"], h["micro_scale"], um),
                               ("base", h["use_base"], h["base_scale"], ub)):
            B = p["B_" + name]
            g["B_" + name] = s * np.outer(u, gy) if on else np.zeros_like(B)
            g["A_" + name] = s * np.outer(B @ gy, xt) if on else np.zeros_like(B)

        self.t += 1
        k_f = h["fisher_every"]
        fisher_step = h["ewc"] and self.t % k_f == 0
        if h["ewc"]:
            self.reward_short += h["reward_short_rate"] * (r - self.reward_short)
            self.reward_long += h["reward_long_rate"] * (r - self.reward_long)
            stable = self.reward_short >= self.reward_long - h["ewc_margin"]
            novel = 0.0 if matched and j < self.ckpt_patterns else 1.0
            self.novelty_short += h["novelty_short_rate"] * (novel - self.novelty_short)
            self.novelty_long += h["novelty_long_rate"] * (novel - self.novelty_long)
            rise, nu = self.novelty_short - self.novelty_long, h["ewc_novelty"]
            novel_shift = nu > 0 and self.anchor is not None and rise >= nu
            if (not stable or novel_shift) and not self.drifting:
                self.drifting = True
                weight = min(max(rise / nu, 0.0), 1.0) if nu > 0 else 1.0
                if h["ewc_memory"] > 0 and self.anchor is not None and weight > 0:
                    self._remember_task(weight)
            if self.t % h["ewc_every"] == 0 and stable:
                self.ckpt_patterns = self.n_patterns
                self.novelty_short = self.novelty_long
                self.anchor = {k: v.copy() for k, v in p.items()}
                self.fisher_ckpt = {k: v.copy() for k, v in self.fisher.items()}
                self.drifting = False
        if fisher_step:  # every k-th feedback, k times as strong (the same decay per feedback)
            alpha = h["ewc_alpha"] if k_f == 1 else 1.0 - (1.0 - h["ewc_alpha"]) ** k_f
            for k, gk in g.items():
                self.fisher[k] = (1 - alpha) * self.fisher[k] + alpha * gk * gk
        if h["ewc"]:
            # normalised by the max of the PREVIOUS step's Fisher, so the C port does F, the pull
            # and RMSprop in one pass over the weights (the max is known only after the pass)
            fmax = self.fisher_max + 1e-12
        b2 = h["rms_decay"]
        corr = 1.0 - b2 ** self.t
        for k, gk in g.items():
            step = w * gk
            if fisher_step and self.anchor is not None:
                # scaled by |w|: the penalty shapes a learning step and never moves weights on
                # its own, so a no-information signal (w = 0) still moves nothing (R3)
                pull = k_f * h["ewc_lambda"] * abs(w) * (self.fisher[k] / fmax)
                step = step - pull * (p[k] - self.anchor[k])
            if fisher_step and self.tasks:
                mpull = k_f * h["ewc_memory"] * abs(w) / (self.omega_max + 1e-12)
                step = step - mpull * (self.omega[k] * p[k] - self.omega_theta[k])
            rows = step.reshape(self.v[k].shape[0], -1)
            sig = (w * gk).reshape(rows.shape)
            self.v[k] = b2 * self.v[k] + (1 - b2) * np.mean(sig * sig, axis=1, keepdims=True)
            p[k] += (h["lr"] / np.sqrt(self.v[k] / corr + h["rms_eps"] ** 2) * rows).reshape(
                p[k].shape)
            np.clip(p[k], -h["weight_clip"], h["weight_clip"], out=p[k])
        if h["unit_keys"]:
            p["keys"] /= np.maximum(np.linalg.norm(p["keys"], axis=1, keepdims=True), 1e-12)
        if fisher_step:
            self.fisher_max = max(float(f.max()) for f in self.fisher.values())

        for stat in (self.pat_n, self.pat_s, self.pat_cn, self.pat_c):
            stat[j] *= np.float32(h["decay"])
        self.pat_n[j, a] += np.float32(1.0)
        self.pat_s[j, a] += np.float32(r)
        if cost is not None:
            c32 = np.float32(cost)
            self.pat_cn[j, a] += np.float32(1.0)
            self.pat_c[j, a] += c32
            self.cost_n[a] += np.float32(1.0)
            self.route_cost[a] += (c32 - self.route_cost[a]) / self.cost_n[a]
        if self.pat_count[j] * h["baseline_rate"] < 1.0:
            self.pat_base[j] += (r - self.pat_base[j]) / (self.pat_count[j] + 1.0)
        else:
            self.pat_base[j] += h["baseline_rate"] * (r - self.pat_base[j])
        self.pat_count[j] += 1.0
        decay = np.float32(1.0 - 1.0 / h["prior_window"])
        self.global_n *= decay
        self.global_s *= decay
        self.global_q *= decay
        r32 = np.float32(r)
        self.global_n[a] += np.float32(1.0)
        self.global_s[a] += r32
        self.global_q[a] += r32 * r32
        if self.t % 64 == 0:
            self._estimate_shrink()
        self.centroid_sum[j] += x / max(float(np.sqrt(x @ x)), 1e-12)
        cs = self.centroid_sum[j]
        self.centroid[j] = cs / np.sqrt(cs @ cs)
        self.global_base += h["global_rate"] * (r - self.global_base)
        self.n += 1
        self.mu += (x - self.mu) / min(self.n, h["mean_window"])
