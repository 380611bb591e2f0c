"""pytest-benchmark: the router's learning step, the engine's trajectory path and pattern queries,
per backend (numpy has no counterpart for these: `sona bench` reports them against the targets).

Run: pytest bench/bench_router.py --benchmark-group-by=group
"""

import itertools

import numpy as np
import pytest

import sona
from sona.synthetic import RoutingTask, evaluate


@pytest.fixture(scope="module")
def trained():
    task = RoutingTask(seed=0)
    router = sona.Router([f"model-{k}" for k in range(4)], hidden_dim=256, seed=0)
    evaluate(router, task, 1000, seed=1)
    X, _ = task.sample(1000, np.random.default_rng(3))
    return router, X


def test_route_and_feedback(benchmark, backend, trained):
    benchmark.group = "Router.route + Router.feedback (d=256, 4 routes)"
    router, X = trained
    xs = itertools.cycle(X)
    route, feedback = router.route, router.feedback

    def step():
        feedback(route(next(xs)), 0.7)

    benchmark(step)
    router.engine.run_background_cycle()


def test_scores(benchmark, backend, trained):
    benchmark.group = "Router.scores (d=256, 4 routes)"
    router, X = trained
    benchmark(router.scores, X[0])


def test_trajectory_with_instant_learning(benchmark, backend):
    benchmark.group = "start + 3 record_step + end (d=256)"
    engine = sona.SonaEngine(hidden_dim=256, trajectory_capacity=1024)
    x = np.random.default_rng(0).standard_normal(256).astype(np.float32)

    def one():
        t = engine.start_trajectory(x)
        engine.record_step(t, 1, 0.5, 100.0)
        engine.record_step(t, 2, 0.6, 120.0)
        engine.record_step(t, 3, 0.7, 90.0)
        engine.end_trajectory(t, 0.8)

    benchmark(one)


def test_query_patterns(benchmark, backend):
    benchmark.group = "query_patterns k=5 over 100 patterns (d=256)"
    engine = sona.SonaEngine(hidden_dim=256, max_patterns=128, pattern_clusters=64)
    M = np.random.default_rng(1).standard_normal((100, 256)).astype(np.float32)
    for row in M:
        engine.learn_from_feedback(sona.LearningSignal(0.5, query_embedding=row))
    benchmark(engine.query_patterns, M[7], 5)
