"""sona.evaluation: the online protocol, the anchors and the metrics, on hand-made routing data
(every expected number worked out by hand) and on the packaged RouterBench subset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sona
from sona import baselines, evaluation
from sona.data import RoutingData, load_routerbench


def _data(quality, cost, task, X=None, is_train=None) -> RoutingData:
    quality = np.asarray(quality, dtype=np.float32)
    n, K = quality.shape
    if X is None:  # unit rows, one direction per task: task t's queries are all alike
        X = np.eye(4, dtype=np.float32)[np.asarray(task)]
    return RoutingData(
        X=np.ascontiguousarray(X, dtype=np.float32), quality=quality,
        cost=np.asarray(cost, dtype=np.float32), task=np.asarray(task, dtype=np.int64),
        task_names=("a", "b"), routes=tuple(f"r{k}" for k in range(K)),
        is_train=np.ones(n, bool) if is_train is None else np.asarray(is_train, bool),
        embedding="hand")


# Route 0: cheap, good on task 0 only; route 1: dear, good everywhere but not best on task 0;
# route 2: cheap, bad. Mean train quality: r0 0.5, r1 0.75, r2 0.125.
TRAIN = _data(
    quality=[[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0],
             [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]],
    cost=[[1, 10, 1]] * 8,
    task=[0, 0, 0, 0, 1, 1, 1, 1])
TEST = _data(quality=[[1, 0, 0], [0, 1, 0], [0, 1, 1]], cost=[[1, 10, 2]] * 3, task=[0, 1, 1],
             is_train=[False] * 3)


def test_anchors_on_hand_made_data():
    assert evaluation.best_single(TRAIN) == 1
    # At 0.05 quality per unit cost, route 1's 0.75 - 0.5 loses to route 0's 0.5 - 0.05.
    assert evaluation.best_single(TRAIN, cost_weight=0.05) == 0
    assert evaluation.task_best(TRAIN).tolist() == [0, 1]
    # Per query the best; among equals (train rows 0 and 2, test row 2) the cheapest.
    assert evaluation.query_oracle(TRAIN).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert evaluation.query_oracle(TEST).tolist() == [0, 1, 2]
    assert evaluation.query_oracle(TEST, cost_weight=0.2).tolist() == [0, 0, 2]
    assert evaluation.single_route_points(TEST) == {
        "r0": (pytest.approx(1 / 3), 1.0), "r1": (pytest.approx(2 / 3), 10.0),
        "r2": (pytest.approx(1 / 3), 2.0)}


def test_fixed_run_scores_choices_on_the_stream_and_the_test_split():
    rows = np.array([0, 4, 1, 5])
    best = evaluation.fixed_run(1, TRAIN, TEST, rows)
    assert best.quality.tolist() == [1, 1, 0, 1] and best.cost.tolist() == [10] * 4
    assert best.heldout_one_pass == (pytest.approx(2 / 3), 10.0)
    task = evaluation.fixed_run(evaluation.task_best(TRAIN), TRAIN, TEST, rows)
    assert task.chosen.tolist() == [0, 1, 0, 1] and task.quality.tolist() == [1, 1, 1, 1]
    assert task.heldout_one_pass == (1.0, pytest.approx(7.0))
    oracle = evaluation.fixed_run(evaluation.query_oracle(TRAIN), TRAIN, TEST, rows,
                                  evaluation.query_oracle(TEST))
    assert oracle.heldout_quality[0] == 1.0
    with pytest.raises(ValueError, match="route index in 0..2"):
        evaluation.fixed_run(3, TRAIN, TEST, rows)
    with pytest.raises(ValueError, match="one per query"):
        evaluation.fixed_run([0, 1, 2], TRAIN, TEST, rows)


def test_knn_picks_k_by_cross_validation_and_routes_by_neighbours():
    rng = np.random.default_rng(0)
    # Two well separated clusters; route 0 is right on task 0's, route 1 on task 1's.
    task = np.repeat([0, 1], 20)
    X = np.eye(4)[task] + 0.05 * rng.standard_normal((40, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    q = np.stack([task == 0, task == 1], axis=1).astype(float)
    train = _data(q, np.ones((40, 2)), task, X=X)
    knn = evaluation.KNN(train, ks=(1, 4, 16, 39), folds=4)
    assert knn.cv_quality[1] == knn.cv_quality[4] == knn.cv_quality[16] == 1.0
    assert knn.cv_quality[39] < 1.0  # 39 neighbours always span both clusters
    assert knn.k == 1  # ties go to the smallest k
    assert knn.choose(np.eye(4)[[0, 1]]).tolist() == [0, 1]
    assert (knn.choose_train() == 1 - q[:, 0]).all()
    with pytest.raises(ValueError, match=r"X must be \(n, 4\)"):
        knn.choose(np.ones(4))
    with pytest.raises(ValueError, match="ks must be"):
        evaluation.KNN(train, ks=())
    with pytest.raises(ValueError, match="folds must be"):
        evaluation.KNN(train, folds=1)


def test_knn_leaves_each_train_query_out_of_its_own_neighbours():
    # Each pair of identical queries disagrees about the best route; with itself among its
    # neighbours (k=1) a query would pick its own best route.
    X = np.eye(4)[[0, 0, 1, 1]]
    q = [[1, 0], [0, 1], [1, 0], [0, 1]]
    train = _data(q, np.ones((4, 2)), [0, 0, 1, 1], X=X)
    knn = evaluation.KNN(train, ks=(1,), folds=2)
    assert knn.choose_train().tolist() == [1, 0, 1, 0]


def test_knn_on_a_log_uses_only_the_known_outcomes():
    # Full information: on task 1 route 1 answers half the queries, route 0 none. The log knows
    # route 1 only where it failed, and route 0 on rows 0, 1, 4, 5 (1, 1, 0, 0): from the log the
    # two tie at 0 on task 1 and the tie goes to route 0, the better mean of its known outcomes.
    X = np.eye(4)[[0, 0, 0, 0, 1, 1, 1, 1]]
    q = np.array([[1, 1], [1, 1], [1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]])
    train = _data(q, np.ones((8, 2)), [0, 0, 0, 0, 1, 1, 1, 1], X=X)
    known = np.zeros((8, 2), bool)
    known[[0, 1, 4, 5], 0] = True
    known[[2, 3, 6, 7], 1] = True
    assert evaluation.KNN(train, ks=(4,), folds=2).choose(np.eye(4)[[0, 1]]).tolist() == [0, 1]
    logged = evaluation.KNN(train, ks=(4,), folds=2, observed=known)
    assert logged.choose(np.eye(4)[[0, 1]]).tolist() == [0, 0]
    # Leave-one-out: a row's own known outcome is not among its neighbours, even where a route
    # has fewer known outcomes than k. Row 0's route 0 is then row 1's 0, below route 1's 0.2
    # (with itself, 0.5 would win).
    q = np.array([[1, 0], [0, 0], [0, 0.4], [0, 0.4]])
    train = _data(q, np.ones((4, 2)), [0, 0, 1, 1], X=np.eye(4)[[0, 0, 1, 1]])
    known = np.array([[1, 0], [1, 1], [0, 1], [0, 1]], bool)
    assert evaluation.KNN(train, ks=(2,), folds=2, observed=known).choose_train()[0] == 1
    # Every outcome known is full information, the same k and the same choices.
    every = evaluation.KNN(TRAIN, ks=(1, 4), folds=2, observed=np.ones((8, 3), bool))
    plain = evaluation.KNN(TRAIN, ks=(1, 4), folds=2)
    assert every.k == plain.k and every.cv_quality == plain.cv_quality
    assert (every.choose(TEST.X, 0.05) == plain.choose(TEST.X, 0.05)).all()
    assert (every.choose_train() == plain.choose_train()).all()


@pytest.mark.parametrize("observed, match", [
    (np.ones((8, 2), bool), r"shape \(8, 3\)"),
    (np.ones((8, 3)), "boolean"),
    (np.eye(3, dtype=bool)[[0, 1, 0, 1, 0, 1, 0, 1]], "every route"),
])
def test_knn_refuses_a_bad_log(observed, match):
    with pytest.raises(ValueError, match=match):
        evaluation.KNN(TRAIN, ks=(1,), folds=2, observed=observed)


def test_uniform_log_knows_one_uniform_route_per_query():
    data = load_routerbench()
    log = evaluation.uniform_log(data, seed=3)
    assert log.shape == data.quality.shape and log.dtype == np.bool_
    assert (log.sum(axis=1) == 1).all()
    assert (log == evaluation.uniform_log(data, seed=3)).all()
    assert (log != evaluation.uniform_log(data, seed=4)).any()
    share = log.mean(axis=0) * len(data.routes)  # each route about 1 / K of the rows
    assert share.min() > 0.8 and share.max() < 1.2


def test_stream_metrics_by_hand():
    q = np.array([1, 1, 0, 0, 1, 0], dtype=float)
    ref = np.array([1, 0, 1, 0, 0, 0], dtype=float)
    m = evaluation.stream_metrics(q, ref, early=4, window=2, burn_in=2)
    assert m["quality_early"] == 0.5 and m["quality_run"] == 0.5
    assert m["vs_ref_early"] == 0.0 and m["vs_ref_run"] == pytest.approx(1 / 6)
    # Windows after the first 2 feedbacks: diffs [-1, 0, 1, 0] -> means -0.5, 0.5, 0.5.
    assert m["worst_window"] == -0.5
    assert evaluation.stream_metrics(q, ref, window=10)["worst_window"] is None
    with pytest.raises(ValueError, match="one non-zero length"):
        evaluation.stream_metrics(q, ref[:3])
    with pytest.raises(ValueError, match="early and window must be >= 1"):
        evaluation.stream_metrics(q, ref, window=0)


def test_curve_shortfall():
    ref = np.array([[0.85, 1.0], [0.9, 2.0]])
    # (0.8 at 1.0) is 0.05 below the reference's 0.85 at 1.0; (0.9 at 3.0) matches its 0.9 at 2.0
    assert evaluation.curve_shortfall([[0.8, 1.0], [0.9, 3.0]], ref) == pytest.approx(0.05)
    assert evaluation.curve_shortfall([[0.95, 2.0]], ref) == pytest.approx(-0.05)  # above it
    assert evaluation.curve_shortfall([[0.1, 0.5]], ref) == 0.0  # cheaper than any of its points
    assert evaluation.curve_shortfall(ref, ref) == 0.0
    for bad in (np.zeros(4), np.zeros((0, 2)), np.zeros((2, 3))):
        with pytest.raises(ValueError, match="must be"):
            evaluation.curve_shortfall(bad, ref)
        with pytest.raises(ValueError, match="must be"):
            evaluation.curve_shortfall(ref, bad)


def test_cheapest_within():
    curve = np.array([[0.90, 5.0], [0.88, 2.0], [0.80, 1.0]])
    assert evaluation.cheapest_within(curve, 0.90, 5.0, share=0.97) == pytest.approx(0.4)
    assert evaluation.cheapest_within(curve, 0.90, 5.0, share=1.0) == 1.0
    assert evaluation.cheapest_within(curve, 1.0, 5.0) is None
    with pytest.raises(ValueError, match="curve must be"):
        evaluation.cheapest_within(curve[:, 0], 0.9, 5.0)
    with pytest.raises(ValueError, match="share must be"):
        evaluation.cheapest_within(curve, 0.9, 5.0, share=1.5)


def test_fixed_curve_follows_the_weights():
    curve = evaluation.fixed_curve(lambda w: evaluation.task_best(TRAIN, w), TEST, [0.0, 100.0])
    assert curve.shape == (2, 2)
    assert curve[0].tolist() == [1.0, pytest.approx(7.0)]  # routes 0 then 1, 1
    assert curve[1].tolist() == [pytest.approx(1 / 3), 1.0]  # cost rules: route 0 everywhere
    with pytest.raises(ValueError, match="cost_weights must be"):
        evaluation.fixed_curve(lambda w: 0, TEST, [-1.0])


def test_stream_order_is_seeded_passes_of_permutations():
    a = evaluation.stream_order(5, 12, seed=3)
    assert len(a) == 12
    assert sorted(a[:5]) == sorted(a[5:10]) == list(range(5))
    assert (a == evaluation.stream_order(5, 12, seed=3)).all()
    assert not (a == evaluation.stream_order(5, 12, seed=4)).all()
    with pytest.raises(ValueError, match="n_train and n_steps must be >= 1"):
        evaluation.stream_order(0, 3, 0)


def test_run_online_records_outcomes_and_checkpoints():
    seen = []
    run = evaluation.run_online(baselines.TaskThompson(3, 2, seed=0), TRAIN, TEST, seed=1,
                                n_steps=20, every=6, cost_weights=[0.0, 100.0],
                                on_step=lambda done, k, q: seen.append((done, k, q)),
                                on_checkpoint=lambda *a: seen.append(a))
    assert run.checkpoints == (6, 8, 12, 18, 20)  # every 6, one pass (8) and the end
    assert run.one_pass == 1 and run.heldout_one_pass is not None
    assert (run.quality == TRAIN.quality[run.rows, run.chosen]).all()
    assert (run.cost == TRAIN.cost[run.rows, run.chosen]).all()
    assert [s[2] for s in seen if len(s) == 3 and s[0] in range(1, 21) and isinstance(s[1], int)
            ][:3] == run.quality[:3].tolist()
    assert run.curve is not None and run.curve.shape == (2, 2)
    assert run.curve[1, 1] <= run.curve[0, 1]  # a cost weight never buys a dearer choice here
    short = evaluation.run_online(baselines.RandomPolicy(3, seed=0), TRAIN, TEST, n_steps=5)
    assert short.one_pass is None and short.heldout_one_pass is None and short.curve is None


def test_run_online_is_deterministic_given_the_seeds():
    data = load_routerbench("wordllama")
    train, test = data.subset(data.is_train), data.subset(~data.is_train)

    def once(seed, stream):
        run = evaluation.run_online(evaluation.sona_policy(train, seed), train, test,
                                    seed=stream, n_steps=400, every=200)
        return run.chosen.tolist(), run.heldout_quality.tolist()

    assert once(0, 0) == once(0, 0)
    assert once(0, 0) != once(0, 1)


class _Bad:
    def route(self, x, task):
        return 7

    def learn(self, *a):
        raise AssertionError("never reached")

    def greedy(self, X, tasks, cost_weight=0.0):
        return np.zeros(len(X), np.int64)


def test_run_online_rejects_bad_arguments():
    p = baselines.RandomPolicy(3)
    with pytest.raises(ValueError, match="n_steps and every must be >= 1"):
        evaluation.run_online(p, TRAIN, TEST, n_steps=0)
    with pytest.raises(ValueError, match="share routes and dimension"):
        two = dataclasses.replace(TEST, quality=TEST.quality[:, :2], cost=TEST.cost[:, :2],
                                  routes=TEST.routes[:2])
        evaluation.run_online(p, TRAIN, two)
    with pytest.raises(ValueError, match="cost_weights must be"):
        evaluation.run_online(p, TRAIN, TEST, cost_weights=[float("nan")])
    with pytest.raises(ValueError, match="the policy chose route 7"):
        evaluation.run_online(_Bad(), TRAIN, TEST, n_steps=3)


def test_sona_policy_learns_only_the_decision_it_routed():
    p = evaluation.sona_policy(TRAIN, seed=0, base_rank=4)
    with pytest.raises(ValueError, match="does not follow a route"):
        p.learn(TRAIN.X[0], 0, 0, 1.0, 1.0)
    k = p.route(TRAIN.X[0], 0)
    with pytest.raises(ValueError, match="does not follow a route"):
        p.learn(TRAIN.X[0], 0, (k + 1) % 3, 1.0, 1.0)
    p.learn(TRAIN.X[0], 0, k, 1.0, 1.0)
    assert p.router.feedbacks == 1
    assert p.greedy(TEST.X, TEST.task).shape == (3,)


def test_sona_policy_greedy_trades_quality_for_cost():
    router = sona.Router(["cheap", "pricey"], hidden_dim=16, seed=0, costs=[0.001, 0.01])
    policy = evaluation.SonaPolicy(router)
    X = np.eye(16, dtype=np.float32)
    for x in X:  # pricey is better by 0.2
        router.learn(sona.Outcome(x, "cheap", prob=0.5, quality=0.6))
        router.learn(sona.Outcome(x, "pricey", prob=0.5, quality=0.8))
    assert (policy.greedy(X, np.zeros(16)) == 1).all()
    assert (policy.greedy(X, np.zeros(16), 100.0) == 0).all()


def test_routerbench_anchors():
    data = load_routerbench("minilm")
    train, test = data.subset(data.is_train), data.subset(~data.is_train)
    assert train.routes[evaluation.best_single(train)] == "gpt-4-1106-preview"
    small = data.without_routes(["gpt-4-1106-preview"])
    strain = small.subset(small.is_train)
    assert strain.routes[evaluation.best_single(strain)] == "zero-one-ai/Yi-34B-Chat"
    # Without GPT-4 the tasks have different best models (the premise).
    assert len(set(evaluation.task_best(strain).tolist())) > 1
    oracle = evaluation.fixed_run(evaluation.query_oracle(train), train, test,
                                  np.arange(train.n_queries), evaluation.query_oracle(test))
    assert oracle.quality.mean() >= train.quality.max(axis=1).mean() - 1e-9

