"""Simulated routing task: clustered query embeddings, hidden per-cluster success probabilities.

Used by ``sona demo``, the routing benchmark in ``bench/`` and the tests. Pure numpy; it imports
nothing else from sona, so any object with the router duck API can be evaluated on it:

    route(x) -> decision        (decision.index: the chosen route)
    feedback(decision, quality)  (quality in [0, 1])
    scores(x) -> probs           (no side effects, no exploration)

Geometry (defaults, issue 3): d=256, 8 clusters, 4 routes. Cluster centres share a common direction
(``centre_c = normalise(a*shared + b*own_c)`` with orthonormal own directions, so every pair of
centres has cosine ``centre_cosine``), queries are ``normalise(centre + noise)`` with the isotropic
noise scaled so that the expected cosine of a query to its centre is ``query_cosine``. Each
cluster's best route is ahead of the runner-up by ``gap`` success probability; the other routes lie
in ``[low, high]``.

Example::

    task = RoutingTask(seed=0)
    report = evaluate(EpsilonGreedyLinear(task.dim, task.n_routes, seed=1), task, 2000, seed=2)
    print(report.table())
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ClusterOracleThompson",
    "Decision",
    "EpsilonGreedyLinear",
    "FixedRouter",
    "RandomRouter",
    "Report",
    "RoutingTask",
    "evaluate",
]


@dataclass(frozen=True)
class Decision:
    """What the baseline routers return from ``route``: the chosen route, its probabilities and
    whatever the router needs back in ``feedback`` (``context``)."""

    index: int
    probs: np.ndarray
    context: object = None


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class RoutingTask:
    """A clustered routing problem with Bernoulli rewards, deterministic from ``seed``.

    Parameters
    ----------
    dim, n_clusters, n_routes : geometry (defaults 256, 8, 4).
    gap : success-probability lead of each cluster's best route over its runner-up (0.20).
    low, high : range of the non-best routes' success probabilities (0.25, 0.55).
    query_cosine : expected cosine of a query to its cluster centre (0.7).
    centre_cosine : cosine between any two cluster centres (0.55), i.e. the weight of the shared
        direction every centre contains (real sentence embeddings share one).
    seed : everything (centres, probabilities, phase changes) derives from it.

    Raises
    ------
    ValueError : a parameter out of range (e.g. ``n_clusters + 1 > dim``, ``high + gap > 1``).
    """

    def __init__(
        self,
        dim: int = 256,
        n_clusters: int = 8,
        n_routes: int = 4,
        *,
        gap: float = 0.20,
        low: float = 0.25,
        high: float = 0.55,
        query_cosine: float = 0.7,
        centre_cosine: float = 0.55,
        seed: int = 0,
    ) -> None:
        if n_routes < 2:
            raise ValueError(f"n_routes must be >= 2, got {n_routes}")
        if n_clusters < 1 or n_clusters + 1 > dim:
            raise ValueError(
                f"n_clusters must be in [1, dim - 1] = [1, {dim - 1}], got {n_clusters}"
            )
        if not 0.0 <= low <= high or high + gap > 1.0 or gap <= 0.0:
            raise ValueError(
                f"need 0 <= low <= high and 0 < gap, high + gap <= 1; "
                f"got low={low}, high={high}, gap={gap}"
            )
        if not 0.0 < query_cosine < 1.0 or not 0.0 <= centre_cosine < 1.0:
            raise ValueError(
                f"query_cosine must be in (0, 1) and centre_cosine in [0, 1); "
                f"got {query_cosine}, {centre_cosine}"
            )
        self.dim = int(dim)
        self.n_routes = int(n_routes)
        self.gap, self.low, self.high = float(gap), float(low), float(high)
        self.query_cosine = float(query_cosine)
        self.centre_cosine = float(centre_cosine)
        self.seed = int(seed)
        # Phase operations draw from their own stream so they never shift the geometry.
        self._rng = np.random.default_rng([self.seed, 0])
        self._phase_rng = np.random.default_rng([self.seed, 1])
        # For a unit centre c and noise n ~ N(0, s^2 I): cos(c, c + n) ~ 1/sqrt(1 + s^2 d).
        self.noise_std = float(np.sqrt((1.0 / query_cosine**2 - 1.0) / dim))
        self.shared = _normalise(self._rng.standard_normal(dim))
        self._own = np.empty((0, dim))
        self.centres = np.empty((0, dim))
        self.P = np.empty((0, n_routes))
        # Best routes spread evenly over the routes: "always the globally best route" is no oracle.
        best = self._rng.permutation(np.arange(n_clusters) % n_routes)
        self._add(best)

    # -- construction ---------------------------------------------------------------------------
    def _own_directions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # Orthonormal to the shared direction and to every existing own direction (Gram-Schmidt).
        basis = np.vstack([self.shared[None, :], self._own])
        out: list[np.ndarray] = []
        for _ in range(n):
            v = rng.standard_normal(self.dim)
            for b in list(basis) + out:
                v -= (v @ b) * b
            out.append(v / np.linalg.norm(v))
        return np.asarray(out)

    def _probabilities(self, best: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        P = rng.uniform(self.low, self.high, size=(len(best), self.n_routes))
        for i, b in enumerate(best):
            others = np.delete(np.arange(self.n_routes), b)
            P[i, b] = P[i, others].max() + self.gap
        return P

    def _add(self, best: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = self._rng if rng is None else rng
        if self.n_clusters + len(best) + 1 > self.dim:
            raise ValueError(
                f"at most {self.dim - 1} clusters fit in dim={self.dim}, "
                f"asked for {self.n_clusters + len(best)}"
            )
        own = self._own_directions(len(best), rng)
        a, b = np.sqrt(self.centre_cosine), np.sqrt(1.0 - self.centre_cosine)
        ids = np.arange(self.n_clusters, self.n_clusters + len(best))
        self._own = np.vstack([self._own, own])
        self.centres = np.vstack([self.centres, a * self.shared + b * own])
        self.P = np.vstack([self.P, self._probabilities(best, rng)])
        return ids

    # -- the task -------------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int:
        return self.centres.shape[0]

    @property
    def best_routes(self) -> np.ndarray:
        """Best route per cluster, shape (n_clusters,)."""
        return np.argmax(self.P, axis=1)

    @property
    def oracle_rewards(self) -> np.ndarray:
        """Success probability of the best route per cluster, shape (n_clusters,)."""
        return self.P.max(axis=1)

    def sample(self, n: int, rng: np.random.Generator, clusters=None):
        """Draw ``n`` queries uniformly from ``clusters`` (default: all).

        Returns ``(X, c)``: X float32 (n, dim) C-contiguous unit rows, c int64 (n,) cluster ids.
        """
        pool = np.arange(self.n_clusters) if clusters is None else np.asarray(clusters)
        c = pool[rng.integers(0, len(pool), size=n)]
        X = self.centres[c] + self.noise_std * rng.standard_normal((n, self.dim))
        X = _normalise(X)
        return np.ascontiguousarray(X, dtype=np.float32), c.astype(np.int64)

    def reward(self, cluster: int, route: int, rng: np.random.Generator) -> float:
        """Bernoulli outcome (1.0 success, 0.0 failure) of a ``cluster`` query sent to ``route``."""
        return float(rng.random() < self.P[cluster, route])

    def expected_reward(self, cluster, route):
        """Success probability P[cluster, route] (vectorised over arrays)."""
        return self.P[cluster, route]

    # -- phases ---------------------------------------------------------------------------------
    def change_best_routes(self, n: int = 3, clusters=None) -> np.ndarray:
        """Give ``n`` clusters (or the given ``clusters``) a new best route; return their ids.

        The old best route and a randomly chosen other route swap probabilities, so the gap to the
        runner-up and the range of the others are kept, and the old best is now a poor choice.
        """
        rng = self._phase_rng
        if clusters is None:
            if not 0 < n <= self.n_clusters:
                raise ValueError(f"n must be in [1, {self.n_clusters}], got {n}")
            clusters = np.sort(rng.choice(self.n_clusters, size=n, replace=False))
        clusters = np.asarray(clusters, dtype=np.int64)
        for c in clusters:
            old = int(np.argmax(self.P[c]))
            new = int(rng.choice(np.delete(np.arange(self.n_routes), old)))
            self.P[c, [old, new]] = self.P[c, [new, old]]
        return clusters

    def add_clusters(self, n: int = 4) -> np.ndarray:
        """Add ``n`` new clusters (new own directions, same shared direction); return their ids."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = self._phase_rng
        best = rng.integers(0, self.n_routes, size=n)
        return self._add(best, rng)


# -- evaluation ------------------------------------------------------------------------------------
@dataclass
class Report:
    """Per-window results of :func:`evaluate`.

    ``windows`` holds one dict per window: ``end`` (feedbacks so far), ``accuracy`` (greedy argmax
    of ``scores`` equals the best route, on held-out queries), ``cluster_accuracy`` (per cluster
    id), ``reward`` (mean expected reward of the routes actually chosen in the window),
    ``greedy_ratio`` (expected reward of the greedy choice on the held-out queries / their oracle
    reward), ``oracle`` (mean best expected reward for the same queries), ``ratio`` (reward /
    oracle) and ``regret`` (cumulative expected regret). ``to_90`` is the number of feedbacks at the
    end of the first window whose ratio reached 0.9 (None if never).
    """

    windows: list = field(default_factory=list)
    to_90: int | None = None

    def accuracy_on(self, clusters, window: int = -1) -> float:
        """Mean held-out accuracy over ``clusters`` in one window (default: the last)."""
        acc = self.windows[window]["cluster_accuracy"]
        return float(np.mean([acc[int(c)] for c in clusters]))

    def table(self) -> str:
        lines = [
            (
                f"{'feedbacks':>9} {'accuracy':>8} {'reward':>7} {'oracle':>7} {'ratio':>6} "
                f"{'regret':>8}"
            )
        ]
        for w in self.windows:
            lines.append(
                f"{w['end']:>9} {w['accuracy']:>8.3f} {w['reward']:>7.3f} "
                f"{w['oracle']:>7.3f} {w['ratio']:>6.3f} {w['regret']:>8.1f}"
            )
        return "\n".join(lines)


def heldout_accuracy(router, task: RoutingTask, X: np.ndarray, c: np.ndarray):
    """Greedy accuracy of ``router.scores`` on (X, c): overall, per cluster id (dict), and the
    greedy choices' expected reward as a fraction of the oracle's."""
    chosen = np.fromiter(
        (int(np.argmax(router.scores(x))) for x in X), dtype=np.int64, count=len(X)
    )
    hit = chosen == task.best_routes[c]
    per = {int(k): float(hit[c == k].mean()) for k in np.unique(c)}
    greedy_ratio = float(task.P[c, chosen].sum() / task.oracle_rewards[c].sum())
    return float(hit.mean()), per, greedy_ratio


def evaluate(
    router,
    task: RoutingTask,
    n_feedback: int,
    *,
    window: int = 100,
    clusters=None,
    seed: int = 0,
    heldout_per_cluster: int = 50,
    eval_clusters=None,
    regret_start: float = 0.0,
) -> Report:
    """Run ``router`` on a stream of ``n_feedback`` queries from ``clusters`` (default: all).

    Every step: one query, ``route``, a Bernoulli reward, ``feedback``. After every ``window`` steps
    the greedy accuracy is measured on a fixed held-out set (``heldout_per_cluster`` queries of
    every cluster in ``eval_clusters``, default all clusters existing now). Call it once per phase
    with the same router; ``regret_start`` carries cumulative regret over from a previous phase.
    """
    if n_feedback < 1 or window < 1:
        raise ValueError(f"n_feedback and window must be >= 1, got {n_feedback}, {window}")
    stream = np.random.default_rng([seed, 2])
    eval_pool = np.arange(task.n_clusters) if eval_clusters is None else np.asarray(eval_clusters)
    held_rng = np.random.default_rng([seed, 3])
    Xh, ch = task.sample(heldout_per_cluster * len(eval_pool), held_rng, eval_pool)
    X, c = task.sample(n_feedback, stream, clusters)
    report = Report()
    regret = float(regret_start)
    got = np.empty(n_feedback)
    for t in range(n_feedback):
        d = router.route(X[t])
        k = int(d.index)
        router.feedback(d, task.reward(int(c[t]), k, stream))
        got[t] = task.P[c[t], k]
        regret += task.P[c[t]].max() - got[t]
        if (t + 1) % window == 0 or t + 1 == n_feedback:
            lo = (t // window) * window
            reward = float(got[lo : t + 1].mean())
            oracle = float(task.oracle_rewards[c[lo : t + 1]].mean())
            acc, per, greedy_ratio = heldout_accuracy(router, task, Xh, ch)
            report.windows.append(
                {
                    "end": t + 1,
                    "accuracy": acc,
                    "cluster_accuracy": per,
                    "reward": reward,
                    "greedy_ratio": greedy_ratio,
                    "oracle": oracle,
                    "ratio": reward / oracle,
                    "regret": regret,
                }
            )
            if report.to_90 is None and reward >= 0.9 * oracle:
                report.to_90 = t + 1
    return report


# -- baselines (same duck API) ---------------------------------------------------------------------
class RandomRouter:
    """Uniformly random route; scores are uniform (its greedy choice is route 0)."""

    def __init__(self, n_routes: int, seed: int = 0) -> None:
        self.n_routes = n_routes
        self._rng = np.random.default_rng(seed)
        self._p = np.full(n_routes, 1.0 / n_routes)

    def route(self, x) -> Decision:
        return Decision(int(self._rng.integers(self.n_routes)), self._p)

    def feedback(self, decision, quality) -> None:
        pass

    def scores(self, x) -> np.ndarray:
        return self._p.copy()


class FixedRouter:
    """Always one route; ``FixedRouter.globally_best(task)`` picks the best route on average."""

    def __init__(self, n_routes: int, route: int) -> None:
        self._p = np.zeros(n_routes)
        self._p[route] = 1.0
        self.index = int(route)

    @classmethod
    def globally_best(cls, task: RoutingTask) -> FixedRouter:
        return cls(task.n_routes, int(np.argmax(task.P.mean(axis=0))))

    def route(self, x) -> Decision:
        return Decision(self.index, self._p)

    def feedback(self, decision, quality) -> None:
        pass

    def scores(self, x) -> np.ndarray:
        return self._p.copy()


class ClusterOracleThompson:
    """Thompson sampling with Beta(1, 1) priors per (true cluster, route): the learner that knows
    every query's cluster (the nearest of the task's true centres, looked up at each call, so new
    clusters are known on arrival) and only has to learn the rewards. No router can do better
    without knowing the rewards; how fast *this* reaches 90 % of oracle reward is what the task's
    Bernoulli noise allows (``scores`` is a one-hot on the posterior-mean best route).
    """

    def __init__(self, task: RoutingTask, seed: int = 0) -> None:
        self.task, self.n_routes = task, task.n_routes
        self._wins = np.ones((0, task.n_routes))
        self._losses = np.ones((0, task.n_routes))
        self._rng = np.random.default_rng(seed)

    def _cluster(self, x) -> int:
        grow = self.task.n_clusters - len(self._wins)
        if grow > 0:
            self._wins = np.vstack([self._wins, np.ones((grow, self.n_routes))])
            self._losses = np.vstack([self._losses, np.ones((grow, self.n_routes))])
        return int(np.argmax(self.task.centres @ np.asarray(x, dtype=np.float64)))

    def scores(self, x) -> np.ndarray:
        c = self._cluster(x)
        p = np.zeros(self.n_routes)
        p[int(np.argmax(self._wins[c] / (self._wins[c] + self._losses[c])))] = 1.0
        return p

    def route(self, x) -> Decision:
        c = self._cluster(x)
        k = int(np.argmax(self._rng.beta(self._wins[c], self._losses[c])))
        p = np.zeros(self.n_routes)
        p[k] = 1.0
        return Decision(k, p, c)

    def feedback(self, decision, quality) -> None:
        self._wins[decision.context, decision.index] += quality
        self._losses[decision.context, decision.index] += 1.0 - quality


class EpsilonGreedyLinear:
    """Per-route ridge regression of reward on ``[x, 1]``, epsilon-greedy (a classic contextual
    bandit).

    Each route keeps ``A_k^-1`` (Sherman-Morrison, O(d^2) per feedback) and ``b_k``; the estimate is
    ``w_k = A_k^-1 b_k``. ``scores`` is a one-hot on the greedy route.
    """

    def __init__(
        self, dim: int, n_routes: int, epsilon: float = 0.1, ridge: float = 1.0, seed: int = 0
    ) -> None:
        self.n_routes, self.epsilon = n_routes, float(epsilon)
        d = dim + 1
        self._Ainv = np.repeat(np.eye(d)[None] / ridge, n_routes, axis=0)
        self._b = np.zeros((n_routes, d))
        self._w = np.zeros((n_routes, d))
        self._rng = np.random.default_rng(seed)

    def _estimates(self, x) -> np.ndarray:
        return self._w @ np.append(np.asarray(x, dtype=np.float64), 1.0)

    def scores(self, x) -> np.ndarray:
        p = np.zeros(self.n_routes)
        p[int(np.argmax(self._estimates(x)))] = 1.0
        return p

    def route(self, x) -> Decision:
        if self._rng.random() < self.epsilon:
            k = int(self._rng.integers(self.n_routes))
        else:
            k = int(np.argmax(self._estimates(x)))
        p = np.full(self.n_routes, self.epsilon / self.n_routes)
        p[int(np.argmax(self._estimates(x)))] += 1.0 - self.epsilon
        return Decision(k, p, np.append(np.asarray(x, dtype=np.float64), 1.0))

    def feedback(self, decision, quality) -> None:
        k = decision.index
        z = decision.context
        Ai = self._Ainv[k]
        Az = Ai @ z
        Ai -= np.outer(Az, Az) / (1.0 + z @ Az)
        self._b[k] += quality * z
        self._w[k] = Ai @ self._b[k]


# -- the three-phase protocol of the routing benchmark ---------------------------------------------
def run_protocol(
    make_router,
    seed: int,
    *,
    n_base: int = 2500,
    n_change: int = 3000,
    n_new: int = 3000,
    n_changed: int = 3,
    n_added: int = 4,
    task_kwargs=None,
) -> dict:
    """Phase 1: learn the default task; phase 2: the best route changes for ``n_changed`` clusters;
    phase 3: ``n_added`` new clusters arrive (the stream holds only them). ``make_router(task)``
    builds the router under test. Returns the benchmark's metrics (None where never reached):

    acc_2000 (held-out greedy accuracy after 2000 feedbacks), to_90 (feedbacks until a 100-feedback
    window's on-policy reward reached 90 % of oracle), ratio_500 (that ratio in feedbacks 401-500),
    greedy_to_90 (feedbacks until the greedy choice on held-out queries earned 90 % of oracle),
    changed_acc / changed_to_85 / unchanged_keep (phase 2), old_keep / new_acc (phase 3), where a
    keep is accuracy at the end of the phase over accuracy at the end of the previous phase.
    """
    task = RoutingTask(seed=seed, **(task_kwargs or {}))
    router = make_router(task)
    r1 = evaluate(router, task, n_base, seed=seed * 10 + 1)
    by_end = {w["end"]: w for w in r1.windows}
    out = {
        "acc_2000": by_end[2000]["accuracy"] if 2000 in by_end else None,
        "to_90": r1.to_90,
        "ratio_500": by_end[500]["ratio"] if 500 in by_end else None,
        "greedy_to_90": next((w["end"] for w in r1.windows if w["greedy_ratio"] >= 0.9), None),
    }
    before = r1.windows[-1]["cluster_accuracy"]
    changed = task.change_best_routes(n_changed)
    unchanged = [c for c in range(task.n_clusters) if c not in set(changed.tolist())]
    r2 = evaluate(router, task, n_change, seed=seed * 10 + 2)
    out["changed_acc"] = r2.accuracy_on(changed)
    out["changed_to_85"] = next(
        (
            w["end"]
            for w in r2.windows
            if np.mean([w["cluster_accuracy"][int(c)] for c in changed]) >= 0.85
        ),
        None,
    )
    out["unchanged_keep"] = r2.accuracy_on(unchanged) / max(
        np.mean([before[c] for c in unchanged]), 1e-9
    )
    before = r2.windows[-1]["cluster_accuracy"]
    old = list(range(task.n_clusters))
    new = task.add_clusters(n_added)
    r3 = evaluate(router, task, n_new, seed=seed * 10 + 3, clusters=new)
    out["old_keep"] = r3.accuracy_on(old) / max(np.mean([before[c] for c in old]), 1e-9)
    out["new_acc"] = r3.accuracy_on(new)
    return out


#: The sequential-tasks protocol's default tasks: disjoint groups of the task's 8 clusters.
SEQUENTIAL_TASKS = ((0, 1, 2), (3, 4, 5), (6, 7))


def run_sequential(make_router, seed: int, *, tasks=SEQUENTIAL_TASKS, n_per_task: int = 2000,
                   task_kwargs=None) -> dict:
    """Memory of several tasks: the stream holds only the clusters of tasks[0] for n_per_task
    feedbacks, then only those of tasks[1], and so on; nothing announces a switch. Returns
    ``learnt`` (each task's held-out greedy accuracy at the end of its own phase), ``final`` (each
    task's accuracy after the last phase), ``first_keep`` (final / learnt of the first task: what
    is left of it after every later task) and ``final_mean`` (mean of ``final``)."""
    if not tasks:
        raise ValueError("tasks must hold at least one group of clusters")
    task = RoutingTask(seed=seed, **(task_kwargs or {}))
    router = make_router(task)
    reports = [evaluate(router, task, n_per_task, seed=seed * 10 + 1 + i, clusters=list(c))
               for i, c in enumerate(tasks)]
    learnt = [r.accuracy_on(list(c)) for r, c in zip(reports, tasks)]
    final = [reports[-1].accuracy_on(list(c)) for c in tasks]
    return {"learnt": learnt, "final": final, "first_keep": final[0] / max(learnt[0], 1e-9),
            "final_mean": float(np.mean(final))}


#: Targets of the routing benchmark: metric -> (comparison, threshold).
TARGETS = {
    "acc_2000": (">=", 0.90),
    "to_90": ("<=", 500),
    "greedy_to_90": ("<=", 500),
    "changed_acc": (">=", 0.85),
    "changed_to_85": ("<=", 3000),
    "unchanged_keep": (">=", 0.95),
    "old_keep": (">=", 0.95),
    "new_acc": (">=", 0.88),
}


def meets(metric: str, value) -> bool:
    """Whether one protocol value meets its target (None = never reached = no)."""
    op, bound = TARGETS[metric]
    if value is None:
        return False
    return value >= bound if op == ">=" else value <= bound
