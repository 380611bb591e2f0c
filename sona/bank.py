"""ReasoningBank: the memory of query patterns, each with a reward baseline and per-route reward
statistics, shared by the engine's instant loop and the router's prior.

Patterns are created online, in C, on every learnt outcome (leader clustering: a query joins its
nearest pattern when their cosine reaches ``new_pattern_cos``, otherwise it starts a new one while
there is room), so the first feedback already has a pattern. ``query_patterns`` is a cosine top-k
in C over the unit centroids. The compiled store and the Pattern snapshots live in sona._core.
"""

from ._core import Pattern, PatternStore

__all__ = ["BANK_DEFAULTS", "Pattern", "PatternStore", "new_bank"]

#: Online clustering and statistics parameters (see csrc/bank.h). new_pattern_cos = 0.45 suits
#: sentence embeddings whose same-topic cosine is ~0.5 and cross-topic ~0.3 (the routing
#: benchmark's geometry); set it midway between those two medians for other embedding models.
BANK_DEFAULTS = {"new_pattern_cos": 0.45, "decay": 0.995, "prior_count": 1.0,
                 "baseline_rate": 0.05}


def new_bank(dim: int, n_routes: int, capacity: int, **params) -> PatternStore:
    """A PatternStore with BANK_DEFAULTS overridden by params (unknown names raise ValueError)."""
    unknown = sorted(set(params) - set(BANK_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown bank parameters {unknown}; known: {sorted(BANK_DEFAULTS)}")
    p = {**BANK_DEFAULTS, **params}
    return PatternStore(dim, n_routes, capacity, p["new_pattern_cos"], p["decay"],
                        p["prior_count"], p["baseline_rate"])
