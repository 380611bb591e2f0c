"""Online evaluation of routers on full-information routing data (every route's outcome is known).

The protocol, as a user meets it: the train split's queries arrive one at a time in a seeded random
order (each pass over the split a fresh permutation, so ``n_steps`` may cover several passes); the
policy routes each; the outcome is the chosen route's recorded quality and cost; the policy learns
from it. Per step the on-policy quality and cost are kept (exploration included: what users
receive). At checkpoints the policy's greedy choice is scored on the held-out test split, and after
exactly one pass over the train split its quality-cost curve can be taken there.

In the same run, anchors that need no learning: the best single route (by mean train quality), the
task oracle (told each query's task, picks that task's best train route), the per-query oracle and
an offline kNN that knows every route's quality on every train query (k by cross-validation).

Any object with this duck API plugs in (``SonaPolicy`` adapts ``sona.Router``; more in
``sona.baselines``)::

    route(x, task) -> int               # choose a route for one query; may explore
    learn(x, task, index, quality, cost) # the chosen route's outcome
    greedy(X, tasks, cost_weight=0.0) -> (n,) int   # no exploration, no side effects

``task`` is the query's task label; only policies *told the task* read it.

    from sona.data import load_routerbench
    from sona import evaluation
    data = load_routerbench("minilm")
    train, test = data.subset(data.is_train), data.subset(~data.is_train)
    run = evaluation.run_online(evaluation.sona_policy(train, seed=0), train, test, seed=0)
    best = evaluation.fixed_run(evaluation.best_single(train), train, test, run.rows)
    print(evaluation.stream_metrics(run.quality, best.quality))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from .data import RoutingData
from .router import Router

__all__ = [
    "Policy",
    "Run",
    "SonaPolicy",
    "KNN",
    "uniform_log",
    "sona_policy",
    "stream_order",
    "run_online",
    "fixed_run",
    "best_single",
    "task_best",
    "query_oracle",
    "stream_metrics",
    "fixed_curve",
    "single_route_points",
    "cheapest_within",
    "curve_shortfall",
    "DEFAULT_COST_WEIGHTS",
]

#: Cost weights (quality per unit of cost, e.g. per US dollar of one call) of the quality-cost
#: curve: 0 (quality only), then geometric up to where even the cheapest real route's cost
#: outweighs any quality gap.
DEFAULT_COST_WEIGHTS = (0.0, *np.geomspace(1.0, 1e5, 31).tolist())


class Policy(Protocol):
    def route(self, x: np.ndarray, task: int) -> int: ...

    def learn(self, x: np.ndarray, task: int, index: int, quality: float, cost: float) -> None: ...

    def greedy(self, X: np.ndarray, tasks: np.ndarray, cost_weight: float = 0.0) -> np.ndarray: ...


# -- sona.Router as a policy ----------------------------------------------------------------------
class SonaPolicy:
    """``sona.Router`` under the evaluation protocol: ``route`` routes (exploring as the router
    does), ``learn`` feeds the outcome of that decision back (``router.learn(decision.outcome(
    quality, cost=cost))``: the router learns the cost per call too), ``greedy`` takes the argmax
    of ``router.scores(X, cost_weight=w)``.

    Raises ValueError from ``learn`` when no decision is pending or the index is not the one routed.

    >>> import numpy as np, sona
    >>> p = SonaPolicy(sona.Router(["a", "b"], hidden_dim=16, seed=0))
    >>> i = p.route(np.ones(16, np.float32), 0)
    >>> p.learn(np.ones(16, np.float32), 0, i, 1.0, 0.001)
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self._decision: Any = None

    def route(self, x: np.ndarray, task: int) -> int:
        self._decision = self.router.route(x)
        return int(self._decision.index)

    def learn(self, x: np.ndarray, task: int, index: int, quality: float, cost: float) -> None:
        d = self._decision
        if d is None or int(d.index) != index:
            raise ValueError(f"learn(index={index}) does not follow a route() that chose it "
                             f"(pending: {None if d is None else int(d.index)})")
        self._decision = None
        self.router.learn(d.outcome(quality, cost=cost))

    def greedy(self, X: np.ndarray, tasks: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        scores = self.router.scores(np.asarray(X, np.float32), cost_weight=cost_weight)
        return scores.argmax(axis=1).astype(np.int64)


def sona_policy(train: RoutingData, seed: int = 0, **params) -> SonaPolicy:
    """A fresh ``sona.Router`` over ``train``'s routes and dimension (``params``: its keywords)."""
    return SonaPolicy(Router(list(train.routes), hidden_dim=train.dim, seed=seed, **params))


# -- the online protocol ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """What one policy did on one stream.

    rows, chosen, quality, cost : (n_steps,) the streamed train row, the route chosen for it, and
        that route's recorded quality and cost (on-policy: what users received).
    checkpoints : feedbacks after which the greedy choice was scored on the test split.
    heldout_quality, heldout_cost : (len(checkpoints),) mean test quality and cost of that choice.
    one_pass : the index into ``checkpoints`` of the one after exactly one pass over the train split
        (None when the run is shorter).
    curve : (len(cost_weights), 2) test (quality, cost) of the greedy choice at each cost weight,
        after one pass; None when no curve was asked for.
    """

    rows: np.ndarray
    chosen: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    checkpoints: tuple
    heldout_quality: np.ndarray
    heldout_cost: np.ndarray
    one_pass: int | None
    curve: np.ndarray | None = None

    @property
    def heldout_one_pass(self) -> tuple[float, float] | None:
        """Test (quality, cost) of the greedy choice after one pass over the train split."""
        if self.one_pass is None:
            return None
        return float(self.heldout_quality[self.one_pass]), float(self.heldout_cost[self.one_pass])


def stream_order(n_train: int, n_steps: int, seed: int) -> np.ndarray:
    """Train rows in streaming order: consecutive seeded permutations, cut at ``n_steps``.

    Raises ValueError for n_train or n_steps < 1.
    """
    if n_train < 1 or n_steps < 1:
        raise ValueError(f"n_train and n_steps must be >= 1; got {n_train}, {n_steps}")
    rng = np.random.default_rng([seed, 14])
    passes = -(-n_steps // n_train)
    return np.concatenate([rng.permutation(n_train) for _ in range(passes)])[:n_steps]


def _checkpoints(n_steps: int, every: int, n_train: int) -> list[int]:
    points = set(range(every, n_steps + 1, every)) | {n_steps}
    if n_train <= n_steps:
        points.add(n_train)
    return sorted(points)


def _heldout(choices: np.ndarray, test: RoutingData) -> tuple[float, float]:
    rows = np.arange(test.n_queries)
    return float(test.quality[rows, choices].mean()), float(test.cost[rows, choices].mean())


def _check_weights(cost_weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(cost_weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"cost_weights must be a non-empty list of finite numbers >= 0; "
                         f"got {cost_weights!r}")
    return w


def _check_pair(train: RoutingData, test: RoutingData) -> None:
    if train.routes != test.routes or train.dim != test.dim:
        raise ValueError(f"train and test must share routes and dimension; got "
                         f"{len(train.routes)} routes d={train.dim} and "
                         f"{len(test.routes)} routes d={test.dim}")
    if train.n_queries == 0 or test.n_queries == 0:
        raise ValueError(f"train and test need queries; got {train.n_queries} and "
                         f"{test.n_queries}")


def run_online(
    policy: Policy,
    train: RoutingData,
    test: RoutingData,
    *,
    seed: int = 0,
    n_steps: int = 6000,
    every: int = 500,
    cost_weights: Sequence[float] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_checkpoint: Callable[[int, float, float], None] | None = None,
) -> Run:
    """Stream ``n_steps`` train queries to ``policy`` (see the module doc); return its :class:`Run`.

    Parameters
    ----------
    policy : the learner (``route``/``learn``/``greedy``), fresh: the run starts it.
    train, test : full-information data with the same routes and dimension.
    seed : the stream order (:func:`stream_order`); the policy has its own seed.
    n_steps : feedbacks in the run; the issue's numbers use 6000 (several passes over 2205 queries).
    every : feedbacks between held-out checkpoints (one is also taken after one pass and at the
        end).
    cost_weights : when given, the greedy choice's test (quality, cost) at each weight after one
        pass (``Run.curve``).
    on_step(done, index, quality) : called after every feedback (the route chosen, its quality).
    on_checkpoint(done, quality, cost) : called after every held-out evaluation.

    Raises ValueError for n_steps or every < 1, mismatched data, bad cost weights, or a route index
    out of range from the policy.

    Deterministic given the seeds: the same policy seed and ``seed`` give the same Run.
    """
    if n_steps < 1 or every < 1:
        raise ValueError(f"n_steps and every must be >= 1; got {n_steps}, {every}")
    _check_pair(train, test)
    weights = None if cost_weights is None else _check_weights(cost_weights)
    K = len(train.routes)
    rows = stream_order(train.n_queries, n_steps, seed)
    checks = _checkpoints(n_steps, every, train.n_queries)
    chosen = np.empty(n_steps, dtype=np.int64)
    hq, hc = [], []
    curve = None
    for t, i in enumerate(rows):
        x, task = train.X[i], int(train.task[i])
        k = policy.route(x, task)
        if not 0 <= k < K:
            raise ValueError(f"the policy chose route {k}; routes are 0..{K - 1}")
        quality, cost = float(train.quality[i, k]), float(train.cost[i, k])
        policy.learn(x, task, k, quality, cost)
        chosen[t] = k
        done = t + 1
        if on_step is not None:
            on_step(done, k, quality)
        if done in checks:
            q, c = _heldout(policy.greedy(test.X, test.task), test)
            hq.append(q)
            hc.append(c)
            if on_checkpoint is not None:
                on_checkpoint(done, q, c)
            if weights is not None and done == train.n_queries:
                curve = np.array([_heldout(policy.greedy(test.X, test.task, w), test)
                                  for w in weights])
    one_pass = checks.index(train.n_queries) if train.n_queries in checks else None
    return Run(rows, chosen, train.quality[rows, chosen].astype(np.float64),
               train.cost[rows, chosen].astype(np.float64), tuple(checks), np.array(hq),
               np.array(hc), one_pass, curve)


# -- anchors: fixed choices from full information on the train split ------------------------------
def _best_with_cheaper_ties(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per row, the highest quality; among equals the cheapest (last axis: routes)."""
    top = q >= q.max(axis=-1, keepdims=True)
    return np.argmin(np.where(top, c, np.inf), axis=-1)


def best_single(train: RoutingData, cost_weight: float = 0.0) -> int:
    """The route with the highest mean ``quality - cost_weight * cost`` on ``train`` (ties: the
    cheaper)."""
    q = train.quality.mean(axis=0, dtype=np.float64)
    c = train.cost.mean(axis=0, dtype=np.float64)
    return int(_best_with_cheaper_ties(q - cost_weight * c, c))


def task_best(train: RoutingData, cost_weight: float = 0.0) -> np.ndarray:
    """Per task (index into ``task_names``), the best route on that task's train queries by mean
    ``quality - cost_weight * cost``; a task without train queries gets the best single route."""
    out = np.full(len(train.task_names), best_single(train, cost_weight), dtype=np.int64)
    for t in np.unique(train.task):
        sel = train.task == t
        q = train.quality[sel].mean(axis=0, dtype=np.float64)
        c = train.cost[sel].mean(axis=0, dtype=np.float64)
        out[t] = _best_with_cheaper_ties(q - cost_weight * c, c)
    return out


def query_oracle(data: RoutingData, cost_weight: float = 0.0) -> np.ndarray:
    """Per query, the route with the highest ``quality - cost_weight * cost`` (ties: the
    cheaper)."""
    q, c = data.quality.astype(np.float64), data.cost.astype(np.float64)
    return _best_with_cheaper_ties(q - cost_weight * c, c)


#: Candidate neighbour counts of the offline kNN (cross-validation picks one).
KNN_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class KNN:
    """Offline k-nearest-neighbour router: a query's estimate of each route is the mean quality
    (and cost) of that route on its k most cosine-similar train queries where that route's
    outcome is known; ties go to the route with the better mean of its known outcomes. k is
    chosen by ``folds``-fold cross-validation on the train split among ``ks``.

    With ``observed`` None (the default) it has full information: every route's outcome on every
    train query. ``observed``, an (n_train, K) boolean mask, restricts it to a log of some of
    them, e.g. :func:`uniform_log`, one uniformly drawn route per query: what one pass of bandit
    feedback can tell. Cross-validation then scores each k by the mean quality of its picks whose
    outcome is known (with full information, of all its picks), which ranks the ks as full
    information would, in expectation, when what is known does not depend on the outcomes.

    Raises ValueError for an empty ``ks``, a k < 1, folds < 2 or more folds than train queries, or
    an ``observed`` that is not a boolean (n_train, K) array knowing some outcome of every route.

    >>> from sona.data import load_routerbench
    >>> data = load_routerbench()
    >>> knn = KNN(data.subset(data.is_train))
    >>> choices = knn.choose(data.X[~data.is_train])
    """

    def __init__(self, train: RoutingData, ks: Sequence[int] = KNN_KS, folds: int = 5,
                 seed: int = 0, observed: np.ndarray | None = None) -> None:
        ks = sorted({int(k) for k in ks})
        if not ks or ks[0] < 1:
            raise ValueError(f"ks must be a non-empty list of integers >= 1; got {ks!r}")
        if folds < 2 or folds > train.n_queries:
            raise ValueError(f"folds must be in 2..{train.n_queries}; got {folds}")
        if observed is not None:
            observed = np.asarray(observed)
            if observed.dtype != np.bool_ or observed.shape != train.quality.shape:
                raise ValueError(f"observed must be a boolean array of shape "
                                 f"{train.quality.shape}; got {observed.dtype} {observed.shape}")
            if not observed.any(axis=0).all():
                raise ValueError("observed must know at least one outcome of every route")
        self.train = train
        self._X = train.X.astype(np.float64)
        self._observed = observed
        known = np.ones(train.quality.shape, bool) if observed is None else observed
        gain = np.where(known, train.quality, 0.0)  # a pick scores only where its outcome is known
        self._tie = 1e-6 * gain.sum(axis=0, dtype=np.float64) / known.sum(axis=0)
        part = np.random.default_rng([seed, 15]).permutation(train.n_queries) % folds
        scores, counted = np.zeros(len(ks)), np.zeros(len(ks))
        for f in range(folds):
            held, rest = part == f, part != f
            est = self._estimates(self._X[held] @ self._X[rest].T, train.quality[rest], ks,
                                  None if observed is None else observed[rest])
            picked = np.argmax(est + self._tie, axis=-1)  # (len(ks), n_held)
            scores += np.take_along_axis(gain[held].T, picked, axis=0).sum(axis=1)
            counted += np.take_along_axis(known[held].T, picked, axis=0).sum(axis=1)
        cv = scores / np.maximum(counted, 1)
        #: The k cross-validation chose, and each candidate's mean CV quality.
        self.k = ks[int(np.argmax(cv))]
        self.cv_quality = dict(zip(ks, cv.tolist()))

    @staticmethod
    def _estimates(sims: np.ndarray, values: np.ndarray, ks: Sequence[int],
                   observed: np.ndarray | None = None) -> np.ndarray:
        """(len(ks), n, K): each route's mean of ``values`` over each row's k most similar
        columns where it is observed (all, for None); a column at similarity -inf never counts."""
        if observed is None:
            return KNN._nearest_mean(sims, values, ks)
        return np.concatenate([KNN._nearest_mean(sims[:, observed[:, a]],
                                                 values[observed[:, a], a:a + 1], ks)
                               for a in range(values.shape[1])], axis=-1)

    @staticmethod
    def _nearest_mean(sims: np.ndarray, values: np.ndarray, ks: Sequence[int]) -> np.ndarray:
        kmax = min(max(ks), sims.shape[1])
        if kmax == 0:  # a route with no known outcome among these columns
            return np.zeros((len(ks), sims.shape[0], values.shape[1]))
        top = np.argpartition(-sims, kmax - 1, axis=1)[:, :kmax]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        nb = np.take_along_axis(top, order, axis=1)
        usable = np.isfinite(np.take_along_axis(sims, nb, axis=1))[:, :, None]  # (n, kmax, 1)
        # (n, kmax, K)
        csum = np.cumsum(np.where(usable, values[nb].astype(np.float64), 0.0), axis=1)
        count = np.cumsum(usable, axis=1)
        kk = [min(k, kmax) for k in ks]
        return np.stack([csum[:, k - 1] / np.maximum(count[:, k - 1], 1) for k in kk])

    def _chooser(self, sims: np.ndarray) -> Callable[[float], np.ndarray]:
        q = self._estimates(sims, self.train.quality, [self.k], self._observed)[0] + self._tie
        c = self._estimates(sims, self.train.cost, [self.k], self._observed)[0]
        return lambda cost_weight: np.argmax(q - cost_weight * c, axis=1)

    def chooser(self, X: np.ndarray) -> Callable[[float], np.ndarray]:
        """``choose(cost_weight)`` for the rows of X: the route each is sent to by estimated
        ``quality - cost_weight * cost`` (the neighbours are found once, for every weight).

        Raises ValueError for X not of shape (n, dim).
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.train.dim:
            raise ValueError(f"X must be (n, {self.train.dim}); got shape {X.shape}")
        return self._chooser(X @ self._X.T)

    def choose(self, X: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        """The route each row of X is sent to, by estimated ``quality - cost_weight * cost``."""
        return self.chooser(X)(cost_weight)

    def choose_train(self) -> np.ndarray:
        """Leave-one-out choice for every train query (its own outcomes are not among its
        neighbours): what the offline router would deliver on the streamed queries."""
        sims = self._X @ self._X.T
        np.fill_diagonal(sims, -np.inf)
        return self._chooser(sims)(0.0)


def uniform_log(train: RoutingData, seed: int = 0) -> np.ndarray:
    """(n_train, K) boolean mask with one True per row, at a uniformly drawn route: which outcomes
    one pass of uniform exploration would have logged (``KNN(train, observed=...)``)."""
    rng = np.random.default_rng([seed, 16])
    picked = rng.integers(len(train.routes), size=train.n_queries)
    return np.arange(len(train.routes)) == picked[:, None]


def _per_row(choices: Any, data: RoutingData) -> np.ndarray:
    """Route index per query of ``data`` from one index, a per-task table or per-query indices
    (an array as long as both the task list and the data counts as per query)."""
    K = len(data.routes)
    a = np.asarray(choices, dtype=np.int64)
    if a.ndim == 0:
        a = np.full(data.n_queries, int(a))
    elif a.shape == (len(data.task_names),) and a.shape != (data.n_queries,):
        a = a[data.task]
    if a.shape != (data.n_queries,) or (a < 0).any() or (a >= K).any():
        raise ValueError(f"choices must be a route index in 0..{K - 1}, one per task or one per "
                         f"query ({data.n_queries}); got {np.asarray(choices)!r:.80}")
    return a


def fixed_run(choices: Any, train: RoutingData, test: RoutingData, rows: np.ndarray,
              test_choices: Any = None) -> Run:
    """A non-learning anchor on a stream: ``choices`` is one route index, or per-train-row
    indices; ``test_choices`` likewise for the test split (default: the same route, or for a task
    table of length ``len(task_names)``, looked up by task).

    Raises ValueError for an index out of range or a choice array of the wrong length.
    """
    on_train = _per_row(choices, train)
    on_test = _per_row(choices if test_choices is None else test_choices, test)
    q, c = _heldout(on_test, test)
    chosen = on_train[rows]
    return Run(rows, chosen, train.quality[rows, chosen].astype(np.float64),
               train.cost[rows, chosen].astype(np.float64), (len(rows),), np.array([q]),
               np.array([c]), 0)


# -- metrics ---------------------------------------------------------------------------------------
def stream_metrics(quality: np.ndarray, reference: np.ndarray, *, early: int = 3000,
                   window: int = 500, burn_in: int = 1000) -> dict:
    """On-policy quality against a reference's on the same queries (both per step).

    Returns ``quality_early`` (mean over feedbacks 1..early), ``quality_run`` (mean over the run),
    ``vs_ref_early`` and ``vs_ref_run`` (the same minus the reference's), and ``worst_window``:
    the lowest mean difference over any ``window`` consecutive feedbacks that start after the
    first ``burn_in`` (None when the run is too short for one).

    Raises ValueError for arrays of different or zero length, or early/window < 1.
    """
    q = np.asarray(quality, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if q.shape != r.shape or q.ndim != 1 or q.size == 0:
        raise ValueError(f"quality and reference must be 1-d of one non-zero length; got "
                         f"{q.shape} and {r.shape}")
    if early < 1 or window < 1 or burn_in < 0:
        raise ValueError(f"early and window must be >= 1, burn_in >= 0; got {early}, {window}, "
                         f"{burn_in}")
    e = min(early, q.size)
    diff = q - r
    worst = None
    if q.size >= burn_in + window:
        csum = np.concatenate([[0.0], np.cumsum(diff[burn_in:])])
        worst = float(((csum[window:] - csum[:-window]) / window).min())
    return {
        "quality_early": float(q[:e].mean()),
        "quality_run": float(q.mean()),
        "vs_ref_early": float(diff[:e].mean()),
        "vs_ref_run": float(diff.mean()),
        "worst_window": worst,
    }


# -- quality-cost curves ---------------------------------------------------------------------------
def fixed_curve(choose: Callable[[float], Any], test: RoutingData,
                cost_weights: Sequence[float] = DEFAULT_COST_WEIGHTS) -> np.ndarray:
    """(len(cost_weights), 2) test (quality, cost) of ``choose(w)``'s choices: one route index, a
    per-task table or per-test-query indices (as in :func:`fixed_run`).

    >>> from sona.data import load_routerbench
    >>> data = load_routerbench()
    >>> train, test = data.subset(data.is_train), data.subset(~data.is_train)
    >>> curve = fixed_curve(lambda w: task_best(train, w), test)
    """
    weights = _check_weights(cost_weights)
    return np.array([_heldout(_per_row(choose(float(w)), test), test) for w in weights])


def single_route_points(test: RoutingData) -> dict:
    """Each route's mean test (quality, cost), by route name."""
    q = test.quality.mean(axis=0, dtype=np.float64)
    c = test.cost.mean(axis=0, dtype=np.float64)
    return {name: (float(q[k]), float(c[k])) for k, name in enumerate(test.routes)}


def _curve(curve: Any, name: str, min_rows: int = 0) -> np.ndarray:
    """``curve`` as float64 (n, 2) (quality, cost) rows, n >= min_rows; ValueError otherwise."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 2 or curve.shape[1] != 2 or len(curve) < min_rows:
        rows = f"n >= {min_rows}" if min_rows else "n"
        raise ValueError(f"{name} must be ({rows}, 2) (quality, cost) rows; got shape "
                         f"{curve.shape}")
    return curve


def cheapest_within(curve: np.ndarray, ref_quality: float, ref_cost: float,
                    share: float = 0.97) -> float | None:
    """The cheapest curve point keeping at least ``share`` of ``ref_quality``, as a fraction of
    ``ref_cost`` (None when no point keeps it).

    Raises ValueError for a curve that is not (n, 2), share outside (0, 1] or ref_cost <= 0.
    """
    curve = _curve(curve, "curve")
    if not 0.0 < share <= 1.0 or not ref_cost > 0.0:
        raise ValueError(f"share must be in (0, 1] and ref_cost > 0; got {share}, {ref_cost}")
    ok = curve[:, 0] >= share * ref_quality - 1e-12
    if not ok.any():
        return None
    return float(curve[ok, 1].min() / ref_cost)


def curve_shortfall(curve: np.ndarray, reference: np.ndarray) -> float:
    """How far ``curve`` falls below ``reference`` at its worst: over the points of ``curve``,
    the largest (best quality of the reference's points costing no more) - (the point's
    quality); 0 where no reference point is as cheap. <= 0: no point of ``curve`` is beaten by a
    reference point at the same or a lower cost.

    Raises ValueError for a curve or reference that is not (n >= 1, 2).

    >>> round(curve_shortfall([[0.8, 1.0], [0.9, 3.0]], [[0.85, 1.0], [0.9, 2.0]]), 6)
    0.05
    """
    curve, reference = _curve(curve, "curve", 1), _curve(reference, "reference", 1)
    worst = -np.inf
    for q, c in curve:
        ok = reference[:, 1] <= c + 1e-12
        worst = max(worst, float(reference[ok, 0].max() - q) if ok.any() else 0.0)
    return worst
