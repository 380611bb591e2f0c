"""sona.baselines: the online routing baselines of the real-data evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from sona import baselines


def _learn_two_tasks(policy, steps=600, seed=0):
    """Task 0: route 0 pays 0.9, others 0.1; task 1: route 2 pays 0.9. x says the task."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        t = int(rng.integers(2))
        x = np.eye(4)[t]
        k = policy.route(x, t)
        best = 0 if t == 0 else 2
        policy.learn(x, t, k, float(rng.random() < (0.9 if k == best else 0.1)), 0.001 * (k + 1))
    return policy


@pytest.mark.parametrize("make", [
    lambda: baselines.TaskThompson(3, 2, seed=1),
    lambda: baselines.LinUCB(4, 3, seed=1),
    lambda: baselines.EpsilonGreedy(4, 3, seed=1),
], ids=["thompson", "linucb", "eps-greedy"])
def test_learners_find_each_tasks_best_route(make):
    p = _learn_two_tasks(make())
    assert p.greedy(np.eye(4)[[0, 1]], np.array([0, 1])).tolist() == [0, 2]
    # A big enough cost weight sends everything to the cheapest route (route 0, cost 0.001).
    assert p.greedy(np.eye(4)[[0, 1]], np.array([0, 1]), cost_weight=1e4).tolist() == [0, 0]


def test_untried_routes_count_as_the_dearest_seen():
    p = baselines.EpsilonGreedy(2, 3, epsilon=0.0, seed=0)
    x = np.ones(2)
    p.learn(x, 0, 0, 0.5, 0.01)
    p.learn(x, 0, 1, 0.5, 0.002)
    # Equal estimates of routes 0 and 1; route 2 (never tried) must not win on cost.
    assert p.greedy(x[None], np.zeros(1), cost_weight=100.0).tolist() == [1]


def test_random_policy_is_uniform_and_seeded():
    p, q = baselines.RandomPolicy(4, seed=3), baselines.RandomPolicy(4, seed=3)
    draws = [p.route(None, 0) for _ in range(400)]
    assert draws == [q.route(None, 0) for _ in range(400)]
    assert (np.bincount(draws, minlength=4) > 60).all()


def test_thompson_is_blind_to_the_query_and_finds_the_best_route_overall():
    p = _learn_two_tasks(baselines.Thompson(3, seed=1))
    # Route 0 pays 0.9 on task 0 and route 2 on task 1: as good as each other overall, both
    # better than route 1; greedy is one route for every query.
    g = p.greedy(np.eye(4)[[0, 1]], np.array([0, 1])).tolist()
    assert g[0] == g[1] and g[0] in (0, 2)
    q = baselines.Thompson(2, seed=0)
    for _ in range(100):
        q.learn(None, 0, 1, 1.0, 0.5)
        q.learn(None, 0, 0, 0.0, 0.01)
    assert sum(q.route(None, 0) for _ in range(100)) > 95
    assert q.greedy(np.zeros((3, 1)), np.zeros(3, int)).tolist() == [1, 1, 1]
    assert q.greedy(np.zeros((1, 1)), np.zeros(1, int), cost_weight=10.0).tolist() == [0]
    a, b = baselines.Thompson(3, seed=4), baselines.Thompson(3, seed=4)
    assert [a.route(None, 0) for _ in range(50)] == [b.route(None, 0) for _ in range(50)]


def test_task_thompson_starts_each_task_from_the_global_statistics():
    p = baselines.TaskThompson(2, 2, prior_strength=10.0, seed=0)
    for _ in range(200):  # task 0 only: route 1 always right, route 0 never
        p.learn(None, 0, 1, 1.0, 0.0)
        p.learn(None, 0, 0, 0.0, 0.0)
    # Task 1 has no data of its own: the prior carries the global evidence.
    assert p.greedy(np.zeros((1, 1)), np.array([1])).tolist() == [1]
    assert sum(p.route(None, 1) for _ in range(100)) > 95


@pytest.mark.parametrize("call, message", [
    (lambda: baselines.RandomPolicy(1), "n_routes must be an integer >= 2"),
    (lambda: baselines.Thompson(1), "n_routes must be an integer >= 2"),
    (lambda: baselines.TaskThompson(3, 0), "n_tasks must be an integer >= 1"),
    (lambda: baselines.TaskThompson(3, 2, prior_strength=0.0), "prior_strength must be > 0"),
    (lambda: baselines.LinUCB(0, 3), "dim must be an integer >= 1"),
    (lambda: baselines.LinUCB(4, 3, alpha=-1.0), "alpha must be >= 0"),
    (lambda: baselines.LinUCB(4, 3, ridge=0.0), "ridge must be > 0"),
    (lambda: baselines.EpsilonGreedy(4, 3, epsilon=1.5), r"epsilon must be in \[0, 1\]"),
])
def test_bad_construction(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_outcomes_raise_and_change_nothing():
    p = baselines.LinUCB(4, 3, seed=0)
    x = np.ones(4)
    before = p.greedy(np.eye(4), np.zeros(4)).tolist(), p._ridge.b.copy()
    for args, message in [
        ((x, 0, 3, 1.0, 0.0), "route index must be in 0..2"),
        ((x, 0, 0, 1.5, 0.0), r"quality must be in \[0, 1\]"),
        ((x, 0, 0, 1.0, -1.0), "cost must be finite and >= 0"),
        ((np.ones(3), 0, 0, 1.0, 0.0), "x must have 4 features"),
    ]:
        with pytest.raises(ValueError, match=message):
            p.learn(*args)
    assert (p._ridge.b == before[1]).all()
    assert p.greedy(np.eye(4), np.zeros(4)).tolist() == before[0]
    c = baselines.Thompson(3)
    with pytest.raises(ValueError, match="route index must be in 0..2"):
        c.learn(x, 0, 3, 1.0, 0.0)
    assert c.greedy(np.eye(2), np.zeros(2)).tolist() == [0, 0] and c._n.sum() == 0
    t = baselines.TaskThompson(3, 2)
    with pytest.raises(ValueError, match="task must be in 0..1"):
        t.route(x, 2)
    with pytest.raises(ValueError, match="tasks must be in 0..1"):
        t.greedy(np.eye(2), np.array([0, 5]))
    with pytest.raises(ValueError, match="cost_weight must be finite"):
        t.greedy(np.eye(2), np.array([0, 1]), cost_weight=-1.0)

