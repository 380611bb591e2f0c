"""Online routing baselines for the real-data evaluation (``sona.evaluation``'s policy API).

Each learns only from the outcome of the route it chose (quality and realised cost), like
``sona.Router``; pure numpy, deterministic given ``seed``:

- ``RandomPolicy``: uniform choice (the floor).
- ``Thompson``: Thompson sampling blind to the query, a Beta(1, 1) posterior per route (what
  learning costs when nothing about the query is used).
- ``TaskThompson``: Thompson sampling *told each query's task*, per-task Beta posteriors shrunk
  towards the global per-route ones (the reference of issue 14: how little learning can cost when
  the query's kind is known).
- ``LinUCB``: disjoint LinUCB (Li et al., 2010), a ridge regression of quality on ``[x, 1]`` per
  route, optimism ``alpha * sqrt(z' A^-1 z)``.
- ``EpsilonGreedy``: the same per-route ridge regressions, greedy, uniform with probability eps.

Every ``greedy(X, tasks, cost_weight)`` ranks routes by estimated quality minus ``cost_weight``
times the route's mean realised cost so far, so one learned policy gives a whole quality-cost curve.

>>> import numpy as np
>>> p = LinUCB(dim=4, n_routes=3, seed=0)
>>> k = p.route(np.ones(4), 0)
>>> p.learn(np.ones(4), 0, k, 1.0, 0.002)
>>> p.greedy(np.ones((2, 4)), np.zeros(2, int)).shape
(2,)
"""

from __future__ import annotations

import numpy as np

__all__ = ["RandomPolicy", "Thompson", "TaskThompson", "LinUCB", "EpsilonGreedy"]


def _check_count(name: str, value: int, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    return int(value)


def _check_outcome(index: int, n_routes: int, quality: float, cost: float) -> None:
    if not 0 <= index < n_routes:
        raise ValueError(f"route index must be in 0..{n_routes - 1}; got {index}")
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"quality must be in [0, 1]; got {quality!r}")
    if not (np.isfinite(cost) and cost >= 0.0):
        raise ValueError(f"cost must be finite and >= 0; got {cost!r}")


class _CostMeans:
    """Per-route mean realised cost. A route never tried counts as the dearest seen so far: a cost
    trade-off then never favours a route only because nothing is known about it."""

    def __init__(self, n_routes: int) -> None:
        self.total = np.zeros(n_routes)
        self.count = np.zeros(n_routes)

    def add(self, index: int, cost: float) -> None:
        self.total[index] += cost
        self.count[index] += 1.0

    def penalty(self, cost_weight: float) -> np.ndarray:
        if not (np.isfinite(cost_weight) and cost_weight >= 0.0):
            raise ValueError(f"cost_weight must be finite and >= 0; got {cost_weight!r}")
        seen = self.count > 0
        mean = np.where(seen, self.total / np.maximum(self.count, 1.0), 0.0)
        mean[~seen] = mean[seen].max() if seen.any() else 0.0
        return cost_weight * mean


class RandomPolicy:
    """Uniformly random routes, exploring and greedy alike (the floor of every table)."""

    def __init__(self, n_routes: int, seed: int = 0) -> None:
        self.n_routes = _check_count("n_routes", n_routes, 2)
        self._rng = np.random.default_rng([seed, 21])

    def route(self, x: np.ndarray, task: int) -> int:
        return int(self._rng.integers(self.n_routes))

    def learn(self, x: np.ndarray, task: int, index: int, quality: float, cost: float) -> None:
        _check_outcome(index, self.n_routes, quality, cost)

    def greedy(self, X: np.ndarray, tasks: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        return self._rng.integers(self.n_routes, size=len(X))


class Thompson:
    """Thompson sampling blind to the query and its task: per route, quality sum s and count n,
    posterior ``Beta(1 + s, 1 + n - s)``; ``route`` draws from every posterior and takes the
    highest draw, ``greedy`` takes the posterior mean (the same route for every query).

    Raises ValueError for n_routes < 2, and from ``learn`` for a bad outcome.
    """

    def __init__(self, n_routes: int, seed: int = 0) -> None:
        self.n_routes = _check_count("n_routes", n_routes, 2)
        self._s = np.zeros(n_routes)
        self._n = np.zeros(n_routes)
        self._costs = _CostMeans(n_routes)
        self._rng = np.random.default_rng([seed, 21])

    def route(self, x: np.ndarray, task: int) -> int:
        return int(np.argmax(self._rng.beta(1.0 + self._s, 1.0 + self._n - self._s)))

    def learn(self, x: np.ndarray, task: int, index: int, quality: float, cost: float) -> None:
        _check_outcome(index, self.n_routes, quality, cost)
        self._s[index] += quality
        self._n[index] += 1.0
        self._costs.add(index, cost)

    def greedy(self, X: np.ndarray, tasks: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        mean = (1.0 + self._s) / (2.0 + self._n) - self._costs.penalty(cost_weight)
        return np.full(len(X), int(np.argmax(mean)), dtype=np.int64)


class TaskThompson:
    """Thompson sampling told each query's task.

    Per (task, route): quality sum s and count n; per route over all tasks: S and N. The posterior
    of (task, route) is ``Beta(s + m p, n - s + m (1 - p))`` with ``p = (S + 1) / (N + 2)`` the
    global posterior mean and ``m = prior_strength``: a task starts from what the whole traffic
    says about a route, and its own evidence takes over after about ``m`` outcomes. ``greedy``
    takes the posterior mean. ``m=10`` had the best worst seed over feedbacks 1-3000 among
    {3, 5, 10, 20, 30} on RouterBench with and without GPT-4 (bench/bench_real.py): a reference
    at its best, so reaching it means something.

    Raises ValueError for n_routes < 2, n_tasks < 1 or prior_strength <= 0; ``route`` and
    ``learn`` for a task outside 0..n_tasks-1.
    """

    def __init__(self, n_routes: int, n_tasks: int, prior_strength: float = 10.0,
                 seed: int = 0) -> None:
        self.n_routes = _check_count("n_routes", n_routes, 2)
        n_tasks = _check_count("n_tasks", n_tasks, 1)
        if not (np.isfinite(prior_strength) and prior_strength > 0):
            raise ValueError(f"prior_strength must be > 0; got {prior_strength!r}")
        self.prior_strength = float(prior_strength)
        self._s = np.zeros((n_tasks, n_routes))
        self._n = np.zeros((n_tasks, n_routes))
        self._costs = _CostMeans(n_routes)
        self._rng = np.random.default_rng([seed, 22])

    def _task(self, task) -> int:
        t = int(task)
        if not 0 <= t < len(self._s):
            raise ValueError(f"task must be in 0..{len(self._s) - 1}; got {task!r}")
        return t

    def _posterior(self, tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = (self._s.sum(axis=0) + 1.0) / (self._n.sum(axis=0) + 2.0)
        s, n = self._s[tasks], self._n[tasks]
        m = self.prior_strength
        return s + m * p, n - s + m * (1.0 - p)

    def route(self, x: np.ndarray, task: int) -> int:
        a, b = self._posterior(np.array([self._task(task)]))
        return int(np.argmax(self._rng.beta(a[0], b[0])))

    def learn(self, x: np.ndarray, task: int, index: int, quality: float, cost: float) -> None:
        t = self._task(task)
        _check_outcome(index, self.n_routes, quality, cost)
        self._s[t, index] += quality
        self._n[t, index] += 1.0
        self._costs.add(index, cost)

    def greedy(self, X: np.ndarray, tasks: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        tasks = np.asarray(tasks, dtype=np.int64)
        if tasks.size and (tasks.min() < 0 or tasks.max() >= len(self._s)):
            raise ValueError(f"tasks must be in 0..{len(self._s) - 1}")
        a, b = self._posterior(tasks)
        return np.argmax(a / (a + b) - self._costs.penalty(cost_weight), axis=1)


class _RidgeRoutes:
    """One ridge regression of quality on ``z = [x, 1]`` per route, ``A_k^-1`` kept by
    Sherman-Morrison (O(d^2) per outcome, only the chosen route's)."""

    def __init__(self, dim: int, n_routes: int, ridge: float) -> None:
        dim = _check_count("dim", dim, 1)
        self.n_routes = _check_count("n_routes", n_routes, 2)
        if not (np.isfinite(ridge) and ridge > 0):
            raise ValueError(f"ridge must be > 0; got {ridge!r}")
        self.dim = dim
        self.Ainv = np.repeat(np.eye(dim + 1)[None] / ridge, n_routes, axis=0)
        self.b = np.zeros((n_routes, dim + 1))
        self.w = np.zeros((n_routes, dim + 1))
        self.costs = _CostMeans(n_routes)

    def z(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"x must have {self.dim} features; got shape {x.shape}")
        return np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)

    def update(self, x: np.ndarray, index: int, quality: float, cost: float) -> None:
        z = self.z(x)
        _check_outcome(index, self.n_routes, quality, cost)
        Ai = self.Ainv[index]
        Az = Ai @ z
        Ai -= np.outer(Az, Az) / (1.0 + z @ Az)
        self.b[index] += quality * z
        self.w[index] = Ai @ self.b[index]
        self.costs.add(index, cost)

    def greedy(self, X: np.ndarray, cost_weight: float) -> np.ndarray:
        return np.argmax(self.z(X) @ self.w.T - self.costs.penalty(cost_weight), axis=1)


class LinUCB:
    """Disjoint LinUCB: route ``argmax_k w_k.z + alpha * sqrt(z' A_k^-1 z)``, ``z = [x, 1]``.

    ``alpha`` scales optimism. With 0/1 qualities the noise is at most 0.5; the theoretical
    ``1 + sqrt(ln(2/delta)/2)`` (~2.2) explores too long for a few thousand queries and small
    values lock onto an early lucky route. ``alpha=1`` was the best of {0.1, 0.2, 0.5, 1, 2} on
    RouterBench (both embeddings, with and without GPT-4, seeds 0-4, feedbacks 1-3000; see
    bench/bench_real.py), so the table shows LinUCB at its best rather than at a strawman setting.

    Raises ValueError for dim < 1, n_routes < 2, alpha < 0 or ridge <= 0.
    """

    def __init__(self, dim: int, n_routes: int, alpha: float = 1.0, ridge: float = 1.0,
                 seed: int = 0) -> None:
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be >= 0; got {alpha!r}")
        self.alpha = float(alpha)
        self._ridge = _RidgeRoutes(dim, n_routes, ridge)
        self._rng = np.random.default_rng([seed, 23])

    def route(self, x: np.ndarray, task: int) -> int:
        z = self._ridge.z(x)
        width = np.sqrt(np.maximum((self._ridge.Ainv @ z) @ z, 0.0))
        ucb = self._ridge.w @ z + self.alpha * width
        # Ties (all routes at the start) are broken at random, not towards route 0.
        best = np.flatnonzero(ucb >= ucb.max() - 1e-12)
        return int(best[self._rng.integers(len(best))])

    def learn(self, x: np.ndarray, task: int, index: int, quality: float, cost: float) -> None:
        self._ridge.update(x, index, quality, cost)

    def greedy(self, X: np.ndarray, tasks: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        return self._ridge.greedy(X, cost_weight)


class EpsilonGreedy:
    """Per-route ridge regression of quality on ``[x, 1]``; greedy, uniform with probability
    ``epsilon``.

    Raises ValueError for dim < 1, n_routes < 2, epsilon outside [0, 1] or ridge <= 0.
    """

    def __init__(self, dim: int, n_routes: int, epsilon: float = 0.05, ridge: float = 1.0,
                 seed: int = 0) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1]; got {epsilon!r}")
        self.epsilon = float(epsilon)
        self._ridge = _RidgeRoutes(dim, n_routes, ridge)
        self._rng = np.random.default_rng([seed, 24])

    def route(self, x: np.ndarray, task: int) -> int:
        if self._rng.random() < self.epsilon:
            return int(self._rng.integers(self._ridge.n_routes))
        return int(self._ridge.greedy(np.asarray(x)[None], 0.0)[0])

    def learn(self, x: np.ndarray, task: int, index: int, quality: float, cost: float) -> None:
        self._ridge.update(x, index, quality, cost)

    def greedy(self, X: np.ndarray, tasks: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        return self._ridge.greedy(X, cost_weight)
