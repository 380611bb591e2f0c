"""Off-policy evaluation: a routing policy's expected quality, estimated from another policy's logs.

Given outcomes logged by a *logging* policy (each :class:`~sona.Outcome` carries the probability
``prob`` with which its route was chosen) and a *target* policy ``pi(k | x)``, :func:`evaluate`
returns, for n logged outcomes (x_i, a_i, p_i, r_i) and importance weights
``w_i = min(pi(a_i | x_i) / p_i, clip)``:

* IPS (inverse propensity scoring): ``(1/n) sum_i w_i r_i``. Unbiased without clipping when the
  logging policy gives every route the target can choose a positive probability; its variance
  grows with the weights.
* SNIPS (self-normalised IPS): ``sum_i w_i r_i / sum_i w_i``. Slightly biased, usually much
  lower variance; always inside the range of the observed qualities.
* DR (doubly robust): ``(1/n) sum_i [sum_k pi(k | x_i) q_k(x_i) + w_i (r_i - q_{a_i}(x_i))]``
  with a reward model q_k (below). Unbiased when either the weights or the reward model are
  right; lower variance than IPS when the model is good.
* DM (direct method): ``(1/n) sum_i sum_k pi(k | x_i) q_k(x_i)``, the reward model alone (biased
  where the model is wrong; shown for comparison).

Reward model: per route, ridge regression of quality on the embedding (with an unpenalised
intercept) over the outcomes logged for that route, predictions clipped to [0, 1]. It is
cross-fitted: the outcomes are split at random into ``folds`` parts and each part is scored by
a model fitted on the others, so no outcome is scored by a model that saw it (which would bias
DR towards DM). A route with no logged outcome in the training parts predicts their mean
quality.

Clipping (``clip=M``) caps each weight at M: it trades a downward bias (on rows where the target
is much likelier than the logger) for bounded variance. Deterministic logging (``prob`` = 1 on
the logged route) only identifies the value of targets that agree with it; elsewhere IPS sees
weight 0 and DR falls back on the reward model.

Pure Python + numpy; imports nothing from ``sona._core``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from .checks import real
from .outcome import Outcome

__all__ = ["OPEResult", "evaluate"]

# A target policy: X (n, d) -> probabilities (n, K), or those probabilities precomputed.
Target = Union[Callable[[np.ndarray], Any], np.ndarray]

_ROW_SUM_TOL = 1e-4  # float32 softmax rows sum to 1 within a few ulps; a typo'd policy does not


@dataclass(frozen=True)
class OPEResult:
    """Estimates of one target policy's mean quality per query, from n logged outcomes.

    Attributes
    ----------
    ips, snips, dr, dm : the estimates (see :mod:`sona.ope`).
    ips_se, dr_se : their standard errors (sample std of the per-outcome terms / sqrt(n)).
    snips is NaN when every weight is 0: the target never chooses a logged route there, so the
    logs say nothing about it (IPS is then 0 and DR equals DM).
    n : number of outcomes used.
    ess : effective sample size of the (clipped) weights, ``(sum w)^2 / sum w^2``: how many
        outcomes the estimate is effectively worth (n when the target equals the logger).
    clip : the weight cap used (None: no clipping).
    n_clipped : outcomes whose weight was capped.
    """

    ips: float
    snips: float
    dr: float
    dm: float
    ips_se: float
    dr_se: float
    n: int
    ess: float
    clip: float | None
    n_clipped: int

    @property
    def estimates(self) -> dict:
        """The four estimates by name: ``{"ips": .., "snips": .., "dr": .., "dm": ..}``."""
        return {"ips": self.ips, "snips": self.snips, "dr": self.dr, "dm": self.dm}


def _check_routes(routes: Any) -> list[str]:
    if isinstance(routes, str) or not isinstance(routes, Sequence):
        raise TypeError(f"routes must be a sequence of route names; got {type(routes).__name__}")
    names = list(routes)
    if not names:
        raise ValueError("routes is empty; give the route names of the target's columns")
    if not all(isinstance(r, str) and r for r in names):
        raise TypeError(f"routes must be non-empty strings; got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"route names must be unique; got {names!r}")
    return names


def _unpack(outcomes: Any, routes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray]:
    if isinstance(outcomes, Outcome) or not isinstance(outcomes, Sequence):
        raise TypeError(f"outcomes must be a sequence of sona.Outcome; "
                        f"got {type(outcomes).__name__}")
    if not outcomes:
        raise ValueError("outcomes is empty; off-policy evaluation needs logged outcomes")
    column = {r: k for k, r in enumerate(routes)}
    first = outcomes[0]
    if not isinstance(first, Outcome):
        raise TypeError(f"outcomes[0] is a {type(first).__name__}, not a sona.Outcome")
    X = np.empty((len(outcomes), first.dim), np.float32)
    actions = np.empty(len(outcomes), np.int64)
    probs = np.empty(len(outcomes))
    rewards = np.empty(len(outcomes))
    for i, o in enumerate(outcomes):
        if not isinstance(o, Outcome):
            raise TypeError(f"outcomes[{i}] is a {type(o).__name__}, not a sona.Outcome")
        if o.dim != X.shape[1]:
            raise ValueError(f"outcomes[{i}] has dimension {o.dim}, outcomes[0] has {X.shape[1]}")
        k = column.get(o.route)
        if k is None:
            raise ValueError(f"outcomes[{i}] has route {o.route!r}, which is not in routes "
                             f"{routes}")
        X[i], actions[i], probs[i], rewards[i] = o.embedding, k, o.prob, o.quality
    return X, actions, probs, rewards


def _target_probs(target: Target, X: np.ndarray, k: int) -> np.ndarray:
    if callable(target):
        out = target(X.copy())  # a copy: the target must not be able to edit what we score
    elif isinstance(target, np.ndarray):
        out = target
    else:
        raise TypeError(f"target must be a callable X (n, d) -> probabilities (n, K), or that "
                        f"(n, K) array; got {type(target).__name__}")
    try:
        P = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"target returned {type(out).__name__}, not an array of "
                        f"probabilities") from None
    n = X.shape[0]
    if P.shape != (n, k):
        raise ValueError(f"target probabilities must have shape (n, K) = ({n}, {k}); "
                         f"got {P.shape}")
    if not np.isfinite(P).all() or (P < 0).any():
        raise ValueError("target probabilities must be finite and >= 0")
    worst = float(np.abs(P.sum(axis=1) - 1.0).max())
    if worst > _ROW_SUM_TOL:
        raise ValueError(f"target probabilities must sum to 1 per row; a row is off by {worst:.3g}")
    return P


def _ridge_predict(X_fit: np.ndarray, y_fit: np.ndarray, X_new: np.ndarray, ridge: float,
                   fallback: float) -> np.ndarray:
    if len(y_fit) == 0:
        return np.full(X_new.shape[0], fallback)
    mean_x, mean_y = X_fit.mean(axis=0), y_fit.mean()
    Xc = X_fit - mean_x
    d = X_fit.shape[1]
    if len(y_fit) < d:  # dual form: an n x n solve instead of d x d
        alpha = np.linalg.solve(Xc @ Xc.T + ridge * np.eye(len(y_fit)), y_fit - mean_y)
        coef = Xc.T @ alpha
    else:
        coef = np.linalg.solve(Xc.T @ Xc + ridge * np.eye(d), Xc.T @ (y_fit - mean_y))
    return np.clip(mean_y + (X_new - mean_x) @ coef, 0.0, 1.0)


def _reward_model(X: np.ndarray, actions: np.ndarray, rewards: np.ndarray, k: int, folds: int,
                  ridge: float, seed: int) -> np.ndarray:
    """Cross-fitted predictions Q (n, K): row i from models that never saw outcome i."""
    n = X.shape[0]
    X64 = X.astype(np.float64)
    fold = np.random.default_rng(seed).permutation(n) % folds
    Q = np.empty((n, k))
    for f in range(folds):
        score, fit = fold == f, fold != f
        fallback = float(rewards[fit].mean())
        for a in range(k):
            rows = fit & (actions == a)
            Q[score, a] = _ridge_predict(X64[rows], rewards[rows], X64[score], ridge, fallback)
    return Q


def evaluate(outcomes: Sequence[Outcome], target: Target, routes: Sequence[str], *,
             clip: float | None = None, folds: int = 2, ridge: float = 1.0,
             seed: int = 0) -> OPEResult:
    """Estimate a target policy's mean quality per query from outcomes another policy logged.

    Parameters
    ----------
    outcomes : sequence of sona.Outcome
        Logged by the logging policy: each with the probability ``prob`` it chose ``route``.
        All of one embedding dimension.
    target : callable or numpy.ndarray
        The policy to evaluate: called once as ``target(X)`` with the logged embeddings X
        (n, d) float32, it returns route probabilities (n, K), rows summing to 1, columns in
        ``routes`` order; e.g. ``lambda X: router.scores(X)`` or a greedy one-hot policy.
        An (n, K) array of those probabilities is accepted too.
    routes : sequence of str
        Route names, the columns of the target's probabilities; every logged route must be one.
    clip : float > 0, optional
        Cap on the importance weights (None: no cap, unbiased IPS/DR).
    folds : int >= 2
        Parts for cross-fitting the reward model (at most n).
    ridge : float > 0
        Ridge penalty of the reward model (embeddings are usually unit rows, so 1 is mild).
    seed : int
        Seeds the random split into folds.

    Returns
    -------
    OPEResult

    Raises
    ------
    TypeError
        outcomes not a sequence of Outcome, target neither callable nor array, bad routes.
    ValueError
        no outcomes, mixed dimensions, a logged route not in ``routes``, target probabilities
        of the wrong shape, negative, non-finite or not summing to 1, bad clip/folds/ridge.

    Example
    -------
    >>> import numpy as np, sona
    >>> rng = np.random.default_rng(0)
    >>> logs = [sona.Outcome(rng.standard_normal(4), r, 0.5, 1.0 if r == "a" else 0.0)
    ...         for r in ["a", "b"] * 6]   # uniform logging; "a" is always right
    >>> always_a = lambda X: np.tile([1.0, 0.0], (len(X), 1))
    >>> r = evaluate(logs, always_a, ["a", "b"])
    >>> r.ips, r.dr, r.n
    (1.0, 1.0, 12)
    """
    names = _check_routes(routes)
    if clip is not None:
        clip = real("clip", clip, 0.0, low_open=True)
    ridge = real("ridge", ridge, 0.0, low_open=True)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    X, actions, probs, rewards = _unpack(outcomes, names)
    n, k = len(rewards), len(names)
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or not 2 <= folds <= n:
        raise ValueError(f"folds must be an integer in [2, n={n}]; got {folds!r}")
    P = _target_probs(target, X, k)

    rows = np.arange(n)
    w = P[rows, actions] / probs
    n_clipped = 0
    if clip is not None:
        n_clipped = int((w > clip).sum())
        w = np.minimum(w, clip)
    Q = _reward_model(X, actions, rewards, k, int(folds), ridge, int(seed))
    dm_terms = (P * Q).sum(axis=1)
    ips_terms = w * rewards
    dr_terms = dm_terms + w * (rewards - Q[rows, actions])
    w_sum = float(w.sum())
    return OPEResult(
        ips=float(ips_terms.mean()),
        snips=float(ips_terms.sum() / w_sum) if w_sum > 0 else math.nan,
        dr=float(dr_terms.mean()),
        dm=float(dm_terms.mean()),
        ips_se=float(ips_terms.std(ddof=1) / math.sqrt(n)),
        dr_se=float(dr_terms.std(ddof=1) / math.sqrt(n)),
        n=n,
        ess=w_sum**2 / float((w**2).sum()) if w_sum > 0 else 0.0,
        clip=clip,
        n_clipped=n_clipped,
    )
