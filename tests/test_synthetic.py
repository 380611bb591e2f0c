"""The simulated routing task: geometry, probabilities, determinism, phases, evaluation driver."""

import numpy as np
import pytest

from sona import synthetic
from sona.synthetic import (
    ClusterOracleThompson,
    EpsilonGreedyLinear,
    FixedRouter,
    RandomRouter,
    RoutingTask,
    evaluate,
)


@pytest.fixture(scope="module")
def task():
    return RoutingTask(seed=0)


def test_defaults_are_not_a_toy(task):
    assert (task.dim, task.n_clusters, task.n_routes) == (256, 8, 4)
    assert task.P.shape == (8, 4) and task.centres.shape == (8, 256)


def test_query_cosine_to_centre_is_about_07(task):
    X, c = task.sample(4000, np.random.default_rng(1))
    cos = np.sum(X * task.centres[c], axis=1)
    assert abs(cos.mean() - 0.7) < 0.02
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)


def test_centres_share_a_direction(task):
    G = task.centres @ task.centres.T
    off = G[~np.eye(8, dtype=bool)]
    assert np.allclose(np.diag(G), 1.0)
    assert 0.5 <= off.min() and off.max() <= 0.6


def test_gap_and_range(task):
    P = np.sort(task.P, axis=1)
    assert np.allclose(P[:, -1] - P[:, -2], 0.20)
    assert P[:, :-1].min() >= 0.25 and P[:, :-1].max() <= 0.55


def test_best_routes_are_spread_over_routes(task):
    assert np.array_equal(np.bincount(task.best_routes, minlength=4), [2, 2, 2, 2])


def test_sample_dtype_layout(task):
    X, c = task.sample(5, np.random.default_rng(0))
    assert X.dtype == np.float32 and X.flags.c_contiguous and X.shape == (5, 256)
    assert c.dtype == np.int64 and c.shape == (5,)
    _, c2 = task.sample(200, np.random.default_rng(0), clusters=[2, 5])
    assert set(np.unique(c2)) == {2, 5}


def test_reward_is_bernoulli_with_p(task):
    rng = np.random.default_rng(3)
    r = np.array([task.reward(0, 1, rng) for _ in range(20000)])
    assert set(np.unique(r)) <= {0.0, 1.0}
    assert abs(r.mean() - task.expected_reward(0, 1)) < 0.015


def test_deterministic_from_seed():
    a, b, c = RoutingTask(seed=7), RoutingTask(seed=7), RoutingTask(seed=8)
    assert np.array_equal(a.centres, b.centres) and np.array_equal(a.P, b.P)
    assert not np.array_equal(a.P, c.P)
    Xa, _ = a.sample(10, np.random.default_rng(1))
    Xb, _ = b.sample(10, np.random.default_rng(1))
    assert np.array_equal(Xa, Xb)
    assert np.array_equal(a.change_best_routes(3), b.change_best_routes(3))
    assert np.array_equal(a.add_clusters(2), b.add_clusters(2))
    assert np.array_equal(a.P, b.P) and np.array_equal(a.centres, b.centres)


def test_change_best_routes_keeps_gap():
    t = RoutingTask(seed=1)
    before = t.best_routes.copy()
    changed = t.change_best_routes(3)
    assert len(changed) == 3
    after = t.best_routes
    assert np.all(before[changed] != after[changed])
    same = np.setdiff1d(np.arange(8), changed)
    assert np.array_equal(before[same], after[same])
    P = np.sort(t.P, axis=1)
    assert np.allclose(P[:, -1] - P[:, -2], 0.20)
    explicit = t.change_best_routes(clusters=[0])
    assert list(explicit) == [0]


def test_add_clusters_geometry():
    t = RoutingTask(seed=2)
    new = t.add_clusters(4)
    assert list(new) == [8, 9, 10, 11] and t.n_clusters == 12 and t.P.shape == (12, 4)
    G = t.centres @ t.centres.T
    assert np.allclose(G[~np.eye(12, dtype=bool)], 0.55)
    P = np.sort(t.P[new], axis=1)
    assert np.allclose(P[:, -1] - P[:, -2], 0.20)


@pytest.mark.parametrize("kwargs", [{"n_clusters": 0}, {"n_routes": 1}, {"high": 0.9},
                                    {"query_cosine": 1.0}, {"dim": 8, "n_clusters": 8}])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        RoutingTask(**kwargs)


def test_evaluate_baselines():
    t = RoutingTask(seed=0)
    rnd = evaluate(RandomRouter(4, seed=0), t, 400, window=100, seed=1)
    fix = evaluate(FixedRouter.globally_best(t), t, 400, window=100, seed=1)
    assert len(rnd.windows) == 4 and rnd.windows[-1]["end"] == 400
    assert rnd.windows[-1]["accuracy"] < 0.5 and fix.windows[-1]["accuracy"] < 0.5
    for r in (rnd, fix):
        assert r.windows[-1]["regret"] > 0 and 0 < r.windows[-1]["ratio"] < 0.9
    assert "accuracy" in rnd.table()


def test_linear_epsilon_greedy_learns():
    t = RoutingTask(seed=0)
    rep = evaluate(EpsilonGreedyLinear(t.dim, t.n_routes, seed=0), t, 1500, window=500, seed=1)
    assert rep.windows[-1]["accuracy"] > 0.6
    assert rep.windows[-1]["ratio"] > rep.windows[0]["ratio"] - 0.05


def test_cluster_oracle_thompson_learns_and_meets_new_clusters():
    t = RoutingTask(seed=0)
    oracle = ClusterOracleThompson(t, seed=0)
    rep = evaluate(oracle, t, 1500, window=500, seed=1)
    assert rep.windows[-1]["accuracy"] >= 0.9
    assert rep.windows[-1]["ratio"] > rep.windows[0]["ratio"]
    new = t.add_clusters(2)  # known on arrival: scored from a fresh Beta(1, 1) row
    X, c = t.sample(50, np.random.default_rng(2), clusters=new)
    assert oracle.scores(X[0]).shape == (4,) and oracle._wins.shape == (10, 4)
    d = oracle.route(X[0])
    oracle.feedback(d, 1.0)
    assert oracle._wins[c[0], d.index] == 2.0 and oracle._losses[c[0], d.index] == 1.0


def test_evaluate_phases_and_per_cluster_accuracy():
    t = RoutingTask(seed=0)
    router = FixedRouter(4, 0)
    new = t.add_clusters(2)
    rep = evaluate(router, t, 100, clusters=new, seed=0)
    assert set(rep.windows[0]["cluster_accuracy"]) == set(range(10))
    expected = float(np.mean(t.best_routes[:8] == 0))
    assert rep.accuracy_on(range(8)) == pytest.approx(expected)


def test_module_does_not_import_the_extension():
    import ast

    with open(synthetic.__file__) as f:
        tree = ast.parse(f.read())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.startswith(("sona", "."))], names
