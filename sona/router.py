"""Router: picks one of several routes (e.g. LLMs) per query embedding and learns from one quality
score per routed query.

    router = sona.Router(["small", "medium", "large"], hidden_dim=384)
    d = router.route(embedding)        # Decision: .route, .index, .probs, .trajectory_id
    router.feedback(d, quality)        # learns now, in microseconds
    router.scores(embedding)           # greedy probabilities, no side effects

The policy (csrc/policy.c) adds two experts: an adapter (the centred query through MicroLoRA and
BaseLoRA against learned unit keys, trained by REINFORCE with a per-pattern baseline, RMSprop and
EWC++) and a pattern prior (Thompson draws from per-pattern, per-route reward statistics kept by
online leader clustering). Why each part is there, and what each contributes, is measured by
bench/bench_routing.py and reported in README.md.
"""

from __future__ import annotations

import numpy as np

from ._core import PatternStore, RouterCore
from .lora import BaseLoRA, MicroLoRA

__all__ = ["Router", "POLICY_DEFAULTS"]

#: Hyper-parameters of the router policy (see csrc/policy.c for where each enters).
POLICY_DEFAULTS = {
    "micro_rank": 2, "base_rank": 8, "micro_scale": 1.0, "base_scale": 1.0,
    "tau": 0.1,                # adapter temperature
    "tau_prior": 0.01,         # prior logit scale: a 0.2 reward gap is 20 logits
    "ts_scale": 0.35,          # Thompson noise of the prior
    "explore": 0.0,            # epsilon mixed into the behaviour policy (Thompson already explores)
    "adv_clip": 1.0,
    "lr": 1e-3, "rms_decay": 0.999, "rms_eps": 1e-3, "weight_clip": 4.0,
    "global_rate": 0.01,
    "ewc": True, "ewc_alpha": 0.01, "ewc_lambda": 1.0, "ewc_margin": 0.05, "ewc_every": 500,
    "mean_window": 1000,
    "use_micro": True, "use_base": True, "use_prior": True,
    "learn_keys": True, "learn_bias": True, "unit_keys": True,
    # pattern bank
    "max_patterns": 100, "new_pattern_cos": 0.45, "decay": 0.995, "prior_count": 1.0,
    "baseline_rate": 0.05,
}

_BOOL = {"ewc", "use_micro", "use_base", "use_prior", "learn_keys", "learn_bias", "unit_keys"}
_INT = {"micro_rank", "base_rank", "ewc_every", "mean_window", "max_patterns"}


def _check_hp(hp: dict) -> dict:
    unknown = sorted(set(hp) - set(POLICY_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown router parameters {unknown}; known: {sorted(POLICY_DEFAULTS)}")
    h = {**POLICY_DEFAULTS, **hp}
    for k, v in h.items():
        if k in _BOOL:
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{k} must be a bool; got {v!r}")
        elif k in _INT:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{k} must be an integer >= 1; got {v!r}")
        else:
            real = isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)
            if not real or not np.isfinite(v):
                raise ValueError(f"{k} must be a finite number; got {v!r}")
    positive = ("tau", "tau_prior", "adv_clip", "rms_eps", "weight_clip", "micro_scale",
                "base_scale", "prior_count")
    for k in positive:
        if h[k] <= 0:
            raise ValueError(f"{k} must be > 0; got {h[k]}")
    for k in ("explore", "global_rate", "ewc_alpha", "baseline_rate"):
        if not 0 <= h[k] <= 1:
            raise ValueError(f"{k} must be in [0, 1]; got {h[k]}")
    for k in ("rms_decay", "decay"):
        if not 0 < h[k] <= 1 if k == "decay" else not 0 <= h[k] < 1:
            raise ValueError(f"{k} out of range; got {h[k]}")
    for k in ("lr", "ts_scale", "ewc_lambda", "ewc_margin"):
        if h[k] < 0:
            raise ValueError(f"{k} must be >= 0; got {h[k]}")
    if not -1 <= h["new_pattern_cos"] <= 1:
        raise ValueError(f"new_pattern_cos must be in [-1, 1]; got {h['new_pattern_cos']}")
    return h


class Router(RouterCore):
    """Learns which route serves each kind of query best, from one quality score per query.

    Parameters
    ----------
    routes: the route names (at least 2, unique strings), e.g. model names.
    hidden_dim: the embedding dimension.
    explore: extra uniform exploration mixed into routing (the Thompson prior explores already).
    seed: makes initial weights and every exploration draw reproducible.
    **params: policy hyper-parameters, see POLICY_DEFAULTS.

    Raises ValueError for fewer than 2 routes, duplicate or non-string names, a bad dimension or
    a parameter out of range.

    >>> import numpy as np, sona
    >>> router = sona.Router(["small", "large"], hidden_dim=8, seed=0)
    >>> d = router.route(np.ones(8, np.float32))
    >>> router.feedback(d, 1.0)
    >>> d.route in router.routes
    True
    """

    def __init__(self, routes, hidden_dim: int, *, explore: float = 0.0, seed: int = 0,
                 **params) -> None:
        names = tuple(routes)
        if len(names) < 2:
            raise ValueError(f"a router needs at least 2 routes; got {len(names)}")
        if not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"route names must be non-empty strings; got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"route names must be unique; got {names!r}")
        if isinstance(hidden_dim, bool) or not isinstance(hidden_dim, (int, np.integer)) \
                or hidden_dim < 1:
            raise ValueError(f"hidden_dim must be an integer >= 1; got {hidden_dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
        hp = _check_hp({**params, "explore": explore})
        d, K = int(hidden_dim), len(names)
        micro = MicroLoRA(d, hp["micro_rank"], scale=hp["micro_scale"], seed=seed)
        base = BaseLoRA(d, hp["base_rank"], scale=hp["base_scale"], seed=seed + 1)
        bank = PatternStore(d, K, hp["max_patterns"], hp["new_pattern_cos"], hp["decay"],
                            hp["prior_count"], hp["baseline_rate"])
        keys = np.random.default_rng(seed + 2).standard_normal((K, d))
        keys /= np.linalg.norm(keys, axis=1, keepdims=True)
        super().__init__(names, micro, base, bank, keys, hp, seed)
        self.micro, self.base, self.bank = micro, base, bank
        self.params = hp
        self.seed = int(seed)

    def index(self, route: str | int) -> int:
        """The index of a route given by name (or index, checked)."""
        if isinstance(route, (int, np.integer)) and not isinstance(route, bool):
            if not 0 <= route < len(self.routes):
                raise ValueError(f"route index must be in 0..{len(self.routes) - 1}; got {route}")
            return int(route)
        try:
            return self.routes.index(route)
        except ValueError:
            raise ValueError(f"unknown route {route!r}; routes are {list(self.routes)}") from None

    def __repr__(self) -> str:
        return (f"Router(routes={list(self.routes)}, hidden_dim={self.micro.dim}, "
                f"decisions={self.decisions}, feedbacks={self.feedbacks})")
