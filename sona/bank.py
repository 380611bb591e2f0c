"""ReasoningBank: the memory of query patterns, each with a reward baseline and per-route reward
statistics, shared by the engine's instant loop and the router's prior.

Patterns are created online, in C, on every learnt outcome (leader clustering: a query joins its
nearest pattern when their cosine reaches ``new_pattern_cos``, otherwise it starts a new one while
there is room), so the first feedback already has a pattern. ``query_patterns`` is a cosine top-k
in C over the unit centroids. The compiled store and the Pattern snapshots live in sona._core.

The background cycle refines the bank (``refine_bank``): weighted spherical k-means over the
drained queries (k-means++ seeding and Lloyd iterations in C, GIL released), then, under the GIL,
clusters fold into the patterns they match or become new ones, near-duplicate patterns merge and,
when the bank is full, stale low-value patterns make room. Pruning ranks the patterns no cluster
reached this cycle (the stale ones) by hits x baseline, lowest first: a well-established pattern
with a good reward keeps its place even when its queries pause (old knowledge survives a new
task), while small or unrewarding ones go first. No separate staleness clock is kept, so the
state files (engine and router) need no new array.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from ._core import Pattern, PatternStore
from .params import PARAMS, RAW_NEW_PATTERN_COS
from .state import check_values

__all__ = ["BANK_ARRAYS", "BANK_COST_ARRAYS", "BANK_DEFAULTS", "REFINE_DEFAULTS", "Pattern",
           "PatternStore", "check_bank_arrays", "check_bank_cost_arrays", "new_bank", "refine_bank"]

#: The float32 arrays that hold what a bank has learnt, as state files carry them ("bank." +
#: name). An engine's file also carries ``usage`` (uint64 counts of query_patterns lookups,
#: which only the engine's API reads); a router's does not.
BANK_ARRAYS = ("centroid", "centroid_sum", "hits", "route_n", "route_s", "baseline")
#: The per-pattern costs (float32, capacity x n_routes: decayed counts and sums of the costs
#: reported with outcomes), which a router's file carries too; an engine reports no costs.
BANK_COST_ARRAYS = ("route_cn", "route_c")

#: Online clustering and statistics parameters (see csrc/bank.h), the ones the bank's C struct
#: holds; their defaults, ranges, docs and the reasons for the defaults are in sona.params. The
#: bank itself matches by the cosine of raw directions (a Router may match around its query
#: mean instead), so its threshold is the raw one.
BANK_DEFAULTS = {**{name: PARAMS[name].default for name in ("decay", "prior_count",
                                                             "baseline_rate")},
                 "new_pattern_cos": RAW_NEW_PATTERN_COS}


def check_bank_arrays(fail: Callable[[str], Any], arrays: dict, prefix: str = "bank.") -> None:
    """Calls fail(msg) unless loaded bank arrays (finite, shapes already checked) hold what the
    bank itself can produce: unit or zero centroids, baselines (mean rewards) in [0, 1], counts
    >= 0, per-route reward sums within [0, count] (rewards are in [0, 1])."""
    def arr(name: str) -> np.ndarray:
        return arrays[prefix + name]

    check_values(fail, prefix + "centroid", arr("centroid"), -1.001, 1.001)
    norms = np.linalg.norm(arr("centroid").astype(np.float64), axis=1)
    if (norms > 1.001).any():
        fail(f"array {prefix + 'centroid'!r} has a row of norm {norms.max():g}; centroids are "
             "unit vectors (or zero)")
    check_values(fail, prefix + "centroid_sum", arr("centroid_sum"))
    check_values(fail, prefix + "baseline", arr("baseline"), 0.0, 1.0)
    for name in ("hits", "route_n", "route_s"):
        check_values(fail, prefix + name, arr(name), 0.0)
    n, s = arr("route_n").astype(np.float64), arr("route_s").astype(np.float64)
    if (s > n * (1 + 1e-4) + 1e-4).any():
        fail(f"array {prefix + 'route_s'!r} holds a reward sum above its count "
             f"{prefix + 'route_n'!r}; rewards are in [0, 1]")


def check_bank_cost_arrays(fail: Callable[[str], Any], arrays: dict, prefix: str = "bank.") -> None:
    """Calls fail(msg) unless loaded per-pattern cost arrays (finite, shapes already checked) hold
    what the bank can produce: costs and their counts >= 0, a count of costs at most the count
    of outcomes (a cost comes with an outcome, and both decay alike)."""
    for name in BANK_COST_ARRAYS:
        check_values(fail, prefix + name, arrays[prefix + name], 0.0)
    n, m = (arrays[prefix + name].astype(np.float64) for name in ("route_n", "route_cn"))
    if (m > n * (1 + 1e-4) + 1e-4).any():
        fail(f"array {prefix + 'route_cn'!r} counts more costs than {prefix + 'route_n'!r} "
             "counts outcomes; a cost is reported with an outcome")


def new_bank(dim: int, n_routes: int, capacity: int, **params: float) -> PatternStore:
    """A PatternStore with BANK_DEFAULTS overridden by params (unknown names raise ValueError)."""
    unknown = sorted(set(params) - set(BANK_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown bank parameters {unknown}; known: {sorted(BANK_DEFAULTS)}")
    p = {**BANK_DEFAULTS, **params}
    return PatternStore(dim, n_routes, capacity, p["new_pattern_cos"], p["decay"],
                        p["prior_count"], p["baseline_rate"])


#: Background refinement parameters. min_records: a cycle with fewer queries than this defers
#: them (they are kept and counted) instead of clustering a handful. max_points: k-means runs on
#: a uniform sample of at most this many of the cycle's queries (sums scaled back up; 0: all).
#: One k-means pass costs n·k·d multiply-adds -- 16.8M for 1000 queries, k=64, d=256, ~1 ms
#: here -- and seeding plus each Lloyd iteration is one pass, so clustering every query of a
#: 1000-query cycle would take the whole 3 ms budget of a background cycle, and a 10k-query
#: cycle ten times that; 256 points with 2 iterations cost ~0.6 ms whatever the batch size.
#: max_iter: Lloyd iterations after the k-means++ seeding (seeding already assigns every point
#: to its nearest seed). n_local_trials: 1 is plain k-means++ (each greedy trial costs another
#: seeding pass; a cycle's clusters fold into patterns anyway, so an extra split costs little).
#: merge_cos: patterns at least this similar are merged.
REFINE_DEFAULTS = {"min_records": 32, "max_points": 256, "max_iter": 2, "n_local_trials": 1,
                   "merge_cos": 0.9}


def refine_bank(bank: PatternStore, embeddings: npt.ArrayLike, qualities: npt.ArrayLike, *,
                k: int, seed: int = 0, quality_threshold: float = 0.0,
                **params: Any) -> dict[str, Any]:
    """Refine ``bank`` with a batch of queries (n, dim) and their qualities (n,) in [0, 1].

    Runs PatternStore.refine with REFINE_DEFAULTS overridden by params (min_records is the
    caller's business: see SonaEngine.run_background_cycle); returns its dict of counts.
    Raises ValueError for unknown parameters or bad input (the bank is then unchanged).
    """
    unknown = sorted(set(params) - set(REFINE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown refine parameters {unknown}; known: {sorted(REFINE_DEFAULTS)}")
    p = {**REFINE_DEFAULTS, **params}
    return bank.refine(embeddings, qualities, k, seed=seed, max_iter=p["max_iter"],
                       merge_cos=p["merge_cos"], quality_threshold=quality_threshold,
                       max_points=p["max_points"], n_local_trials=p["n_local_trials"])
