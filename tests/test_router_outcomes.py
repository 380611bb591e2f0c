"""Outcomes as the unit of learning: Router.learn / learn_many / fit, exact replay, the
at-most-once rule, the actual sampling probability, cost-aware and masked routing."""

import numpy as np
import pytest

import sona
from sona.synthetic import RoutingTask

ROUTES = ["a", "b", "c", "d"]


def _state(router):
    """Every learned array and counter (not the exploration RNG: only routing advances it)."""
    arrays = {k: v.copy() for k, v in router._state_snapshot()[0].items()}
    counters = {k: v for k, v in router._counters().items() if not k.startswith("rng_")}
    return arrays, counters, router.bank.n_patterns, router.feedbacks


def _assert_same(a, b):
    arrays_a, counters_a, n_a, f_a = a
    arrays_b, counters_b, n_b, f_b = b
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        assert np.array_equal(arrays_a[name], arrays_b[name]), name
    assert counters_a == counters_b
    assert (n_a, f_a) == (n_b, f_b)


def _stream(n=400, seed=0, dim=32):
    task = RoutingTask(dim=dim, n_clusters=4, n_routes=len(ROUTES), seed=seed)
    rng = np.random.default_rng(seed)
    X, clusters = task.sample(n, rng)
    return task, rng, X, clusters


def test_prob_is_the_probability_actually_sampled():
    router = sona.Router(["a", "b"], hidden_dim=8, explore=0.5, seed=0)
    x = np.ones(8, np.float32)
    picks, probs = [], []
    for _ in range(4000):
        d = router.route(x)
        assert d.prob == pytest.approx(float(d.probs[d.index]))
        assert d.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert d.probs.min() >= 0.25 - 1e-6  # explore 0.5 over 2 routes
        picks.append(d.index)
        probs.append(d.probs[1])
    assert np.mean(picks) == pytest.approx(np.mean(probs), abs=0.03)


def test_feedback_is_learn_of_the_outcome(backend):
    task, rng, X, clusters = _stream()
    live = sona.Router(ROUTES, hidden_dim=32, seed=1)
    logged = sona.Router(ROUTES, hidden_dim=32, seed=1)
    for x, c in zip(X, clusters):
        d1, d2 = live.route(x), logged.route(x)
        assert d1.index == d2.index and d1.prob == d2.prob
        r = float(task.reward(c, d1.index, rng))
        live.feedback(d1, r)
        logged.learn(d2.outcome(r))
        assert d1.consumed and d2.consumed
    _assert_same(_state(live), _state(logged))


def test_replay_of_the_outcome_log_is_bit_exact(backend):
    """Decisions routed in batches and learnt out of order, with a background cycle in between:
    replaying the outcomes in the order they were learnt rebuilds the state bit for bit."""
    task, rng, X, clusters = _stream(n=600, seed=2)
    router = sona.Router(ROUTES, hidden_dim=32, seed=3)
    log = []
    for start in range(0, len(X), 6):
        rows = slice(start, start + 6)
        batch = [(router.route(x), c) for x, c in zip(X[rows], clusters[rows])]
        for d, c in reversed(batch):
            o = d.outcome(float(task.reward(c, d.index, rng)), cost=0.001 * (d.index + 1))
            router.learn(o)
            log.append(o.to_bytes())
    replayed = sona.Router(ROUTES, hidden_dim=32, seed=3)
    assert replayed.learn_many(sona.Outcome.from_bytes(b) for b in log) == len(log)
    _assert_same(_state(router), _state(replayed))
    x = X[0]
    assert np.array_equal(router.scores(x), replayed.scores(x))


def test_a_decision_is_learnt_at_most_once():
    router = sona.Router(["a", "b"], hidden_dim=8, seed=0)
    x = np.ones(8, np.float32)
    d = router.route(x)
    o = d.outcome(1.0)
    router.feedback(d, 1.0)
    before = _state(router)
    with pytest.raises(ValueError, match="already learnt"):
        router.learn(o)
    with pytest.raises(ValueError, match="already learnt"):
        router.feedback(d, 0.0)
    d2 = router.route(x)
    router.learn(d2.outcome(0.5))
    assert d2.consumed
    with pytest.raises(ValueError, match="already learnt"):
        router.feedback(d2, 0.5)
    # foreign outcomes with an id: once; without an id: not tracked
    foreign = sona.Outcome(x, "a", prob=0.5, quality=1.0, decision_id="gateway-17")
    router.learn(foreign)
    mid = _state(router)
    with pytest.raises(ValueError, match="already learnt"):
        router.learn(foreign)
    _assert_same(mid, _state(router))
    assert before[3] + 2 == mid[3]


def test_at_most_once_outlives_the_decision_object_and_a_reload(tmp_path):
    # the outcome of a decision learnt by feedback() comes back after the Decision is gone,
    # after save/load, from bytes, or through pickle: still refused, nothing changed
    import gc
    import pickle

    router = sona.Router(["a", "b"], hidden_dim=8, seed=0)
    x = np.ones(8, np.float32)
    d = router.route(x)
    by_feedback = d.outcome(1.0)
    router.feedback(d, 1.0)
    del d
    gc.collect()
    by_learn = router.route(x).outcome(0.0)
    router.learn(by_learn)
    foreign = sona.Outcome(x, "a", prob=0.5, quality=1.0, decision_id="gateway-17")
    router.learn(foreign)
    router.save(tmp_path / "r.sona")
    copies = [router, sona.Router.load(tmp_path / "r.sona"),
              sona.Router.from_bytes(router.to_bytes()), pickle.loads(pickle.dumps(router))]
    for copy in copies:
        before = _state(copy)
        for o in (by_feedback, by_learn, foreign):
            with pytest.raises(ValueError, match=f"decision {o.decision_id} was already learnt"):
                copy.learn(o)
        _assert_same(before, _state(copy))
        # and the reloaded copy's own new decisions are learnt as usual
        copy.feedback(copy.route(x), 1.0)
        assert copy.feedbacks == 4
    assert copies[1]._learnt_ids()[:3] == [by_feedback.decision_id, by_learn.decision_id,
                                           "gateway-17"]


def test_the_at_most_once_window_keeps_the_newest_ids():
    from sona._core import LEARNT_WINDOW

    router = sona.Router(["a", "b"], hidden_dim=8, seed=0)
    x = np.ones(8, np.float32)
    first = sona.Outcome(x, "a", prob=0.5, quality=1.0, decision_id="log-0")
    router.learn_many([first] + [sona.Outcome(x, "a", prob=0.5, quality=1.0,
                                              decision_id=f"log-{i}")
                                 for i in range(1, LEARNT_WINDOW + 1)])
    ids = router._learnt_ids()
    assert len(ids) == LEARNT_WINDOW and ids[0] == "log-1" and ids[-1] == f"log-{LEARNT_WINDOW}"
    router.learn(first)  # forgotten: the window holds the newest LEARNT_WINDOW ids
    with pytest.raises(ValueError, match="already learnt"):
        sona.Router.from_bytes(router.to_bytes()).learn(sona.Outcome(
            x, "a", prob=0.5, quality=1.0, decision_id=f"log-{LEARNT_WINDOW}"))


def test_engine_cannot_learn_a_router_decision_twice():
    engine = sona.SonaEngine(hidden_dim=8)
    router = sona.Router(["a", "b"], engine=engine, seed=0)
    d = router.route(np.ones(8, np.float32))
    assert d.trajectory_id is None  # nothing to learn from through the engine while pending
    router.feedback(d, 1.0)
    assert d.trajectory_id is not None
    with pytest.raises(sona.UnknownTrajectoryError):
        engine.learn_from_feedback(sona.LearningSignal.from_feedback(
            True, 10.0, 1.0, trajectory_id=d.trajectory_id))


def test_deterministic_logging_teaches_only_the_logged_route():
    router = sona.Router(["a", "b", "c"], hidden_dim=8, seed=0)
    x = np.ones(8, np.float32)
    for _ in range(20):
        router.learn(sona.Outcome(x, "b", prob=1.0, quality=1.0))
    assert router.global_n[1] > 0 and router.global_n[0] == router.global_n[2] == 0
    assert router.global_s[0] == router.global_s[2] == 0


def test_importance_weight_follows_the_logged_probability():
    """The same outcome logged with a smaller probability moves the adapter more (w = pi/prob,
    before the clip)."""
    x = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    moves = []
    for prob in (1.0, 0.5):
        router = sona.Router(["a", "b"], hidden_dim=16, seed=0, adv_clip=10.0)
        before = router.keys.copy()
        router.learn(sona.Outcome(x, "a", prob=prob, quality=1.0))
        moves.append(np.abs(router.keys - before).sum())
    assert moves[1] > moves[0] > 0


def test_a_decisions_outcome_is_the_record_the_constructor_makes():
    router = sona.Router(ROUTES, hidden_dim=16, seed=0)
    x = np.linspace(-1, 1, 16).astype(np.float32)
    d = router.route(x)
    for kwargs in ({}, {"cost": 0.002}, {"cost": 0, "latency_ms": 35}):
        o = d.outcome(0.75, **kwargs)
        made = sona.Outcome(x, d.route, d.prob, 0.75, decision_id=d.decision_id,
                            timestamp=o.timestamp, **kwargs)
        assert o == made and sona.Outcome.from_bytes(o.to_bytes()) == o
        assert o.embedding.dtype == np.float32 and not o.embedding.flags.writeable
        assert type(o.quality) is float and all(
            v is None or type(v) is float for v in (o.cost, o.latency_ms))
    for bad, exc in (({"quality": float("nan")}, ValueError), ({"quality": 1.5}, ValueError),
                     ({"quality": True}, TypeError), ({"quality": "1"}, TypeError),
                     ({"quality": 0.5, "cost": -1.0}, ValueError),
                     ({"quality": 0.5, "latency_ms": float("inf")}, ValueError)):
        with pytest.raises(exc):
            d.outcome(**bad)
    assert not d.consumed and router.feedbacks == 0


def test_bad_outcomes_change_nothing():
    router = sona.Router(["a", "b"], hidden_dim=8, seed=0)
    x = np.ones(8, np.float32)
    before = _state(router)
    with pytest.raises(ValueError, match="dimension 4"):
        router.learn(sona.Outcome(np.ones(4, np.float32), "a", prob=0.5, quality=1.0))
    with pytest.raises(ValueError, match="unknown route 'z'"):
        router.learn(sona.Outcome(x, "z", prob=0.5, quality=1.0))
    with pytest.raises(TypeError, match="takes a sona.Outcome"):
        router.learn(router.route(x))
    with pytest.raises(ValueError):
        router.learn(sona.Outcome(x * 1e7, "a", prob=0.5, quality=1.0))  # |x_i| > 1e6
    with pytest.raises(ValueError, match="prob"):
        sona.Outcome(x, "a", prob=0.0, quality=1.0)
    with pytest.raises(ValueError, match="quality"):
        sona.Outcome(x, "a", prob=0.5, quality=float("nan"))
    with pytest.raises(ValueError, match="dimension 4"):
        router.learn_many([sona.Outcome(np.ones(4, np.float32), "a", prob=0.5, quality=1.0)])
    _assert_same(before, _state(router))


def test_cost_aware_routing_trades_quality_for_cost():
    router = sona.Router(["cheap", "pricey"], hidden_dim=8, seed=0, costs=[0.001, 0.01])
    x = np.ones(8, np.float32)
    for _ in range(200):  # pricey is better by 0.2
        router.learn(sona.Outcome(x, "cheap", prob=0.5, quality=0.6))
        router.learn(sona.Outcome(x, "pricey", prob=0.5, quality=0.8))
    assert router.scores(x).argmax() == 1
    # pricey's 0.2 of quality costs 0.009 more per call: worth it below cost_weight 22
    assert router.scores(x, cost_weight=10.0).argmax() == 1
    assert router.scores(x, cost_weight=30.0).argmax() == 0
    assert router.route(x, cost_weight=30.0).route == "cheap"
    with pytest.raises(ValueError, match="cost_weight"):
        router.route(x, cost_weight=-1.0)
    with pytest.raises(ValueError, match="cost_weight"):
        router.scores(x, cost_weight=float("inf"))
    with pytest.raises(TypeError, match="cost_weight"):
        router.route(x, cost_weight="1")
    with pytest.raises(ValueError, match="costs must be 2"):
        sona.Router(["a", "b"], hidden_dim=8, costs=[1.0])


def test_costs_are_learnt_per_kind_of_query():
    """A call's cost is a price times the tokens of the query and answer: the same route costs
    ten times more on long queries here. The trade-off then differs between kinds of queries."""
    router = sona.Router(["cheap", "pricey"], hidden_dim=8, seed=0)
    long_q, short_q = np.eye(8, dtype=np.float32)[:2]
    for _ in range(200):
        for x, pricey_cost in ((long_q, 0.02), (short_q, 0.002)):
            router.learn(sona.Outcome(x, "cheap", prob=0.5, quality=0.6, cost=0.001))
            router.learn(sona.Outcome(x, "pricey", prob=0.5, quality=0.8, cost=pricey_cost))
    assert router.bank.n_patterns == 2
    assert router.route_cost[1] == pytest.approx(0.011)
    # pricey's 0.2 of quality costs 0.019 more per call on long queries (worth it below
    # cost_weight 10.5), 0.001 more on short ones (below 200); at its traffic-wide cost per
    # call, 0.011, the break-even would be 20 for both
    for x in (long_q, short_q):
        assert router.scores(x, cost_weight=5.0).argmax() == 1
    assert router.scores(long_q, cost_weight=15.0).argmax() == 0
    assert router.scores(short_q, cost_weight=50.0).argmax() == 1
    assert router.route(long_q, cost_weight=15.0).route == "cheap"


def test_a_trade_off_rules_out_trying_routes_that_cannot_win_it():
    """While routes gather their first outcomes, one that costs 1 / cost_weight or more above the
    cheapest allowed route of known cost is not tried: no quality in [0, 1] could make it rank
    above that one at this weight."""
    x = np.ones(8, np.float32)
    routes = ["cheap", "mid", "dear"]
    router = sona.Router(routes, hidden_dim=8, seed=0, costs=[0.001, 0.01, 0.1])
    # 50 x 0.099 = 4.95 >= 1 rules "dear" out; 50 x 0.009 = 0.45 does not rule "mid" out
    picks = [router.route(x, cost_weight=50.0) for _ in range(30)]
    assert {d.route for d in picks} == {"cheap", "mid"}
    assert all(d.prob == pytest.approx(0.5) for d in picks)
    # without "cheap", "mid" is the cheapest allowed: 50 x 0.09 still rules "dear" out
    d = router.route(x, cost_weight=50.0, allowed=["mid", "dear"])
    assert d.route == "mid" and d.prob == pytest.approx(1.0)
    # at a small weight, or none, "dear" is tried like any route short of evidence
    for w in (5.0, 0.0):
        picks = [router.route(x, cost_weight=w) for _ in range(30)]
        assert {d.route for d in picks} == set(routes)
        assert all(d.prob == pytest.approx(1 / 3) for d in picks)
    # a route whose cost is unknown is never ruled out: its first outcome tells its cost
    blind = sona.Router(routes, hidden_dim=8, seed=0)
    assert {blind.route(x, cost_weight=1e6).route for _ in range(60)} == set(routes)
    blind.learn(sona.Outcome(x, "cheap", prob=1 / 3, quality=1.0, cost=0.001))
    blind.learn(sona.Outcome(x, "dear", prob=1 / 3, quality=1.0, cost=0.1))
    assert "dear" not in {blind.route(x, cost_weight=50.0).route for _ in range(60)}


def test_costs_are_learnt_from_outcomes():
    router = sona.Router(["a", "b"], hidden_dim=8, seed=0, costs=[0.5, 0.5])
    x = np.ones(8, np.float32)
    for c in (1.0, 2.0, 3.0):
        router.learn(sona.Outcome(x, "b", prob=0.5, quality=0.5, cost=c))
    assert router.route_cost[0] == pytest.approx(0.5)
    assert router.route_cost[1] == pytest.approx((0.5 + 1 + 2 + 3) / 4)
    unknown = sona.Router(["a", "b"], hidden_dim=8)
    unknown.learn(sona.Outcome(x, "a", prob=0.5, quality=0.5, cost=0.25))
    assert unknown.route_cost.tolist() == [0.25, 0.0]


def test_allowed_routes():
    router = sona.Router(["a", "b", "c"], hidden_dim=8, explore=0.3, seed=0)
    x = np.ones(8, np.float32)
    for _ in range(50):
        d = router.route(x, allowed=["c"])
        assert d.route == "c" and d.prob == pytest.approx(1.0) and d.probs[:2].tolist() == [0, 0]
        d2 = router.route(x, allowed=("a", 1))
        assert d2.route in ("a", "b") and d2.probs[2] == 0
        router.feedback(d2, 1.0)
    s = router.scores(x, allowed=["b"])
    assert s.tolist() == [0.0, 1.0, 0.0]
    for bad, exc, msg in ((["z"], ValueError, "unknown route"), ([], ValueError, "at least one"),
                          ("ab", TypeError, "collection"), ([5], ValueError, "route index")):
        with pytest.raises(exc, match=msg):
            router.route(x, allowed=bad)


def test_batch_scores_match_single_rows():
    task, rng, X, clusters = _stream(n=50)
    router = sona.Router(ROUTES, hidden_dim=32, seed=0)
    for x, c in zip(X, clusters):
        d = router.route(x)
        router.feedback(d, float(task.reward(c, d.index, rng)))
    batch = router.scores(X[:7], cost_weight=0.0)
    assert batch.shape == (7, 4)
    for i in range(7):
        assert np.array_equal(batch[i], router.scores(X[i]))
    with pytest.raises(ValueError):
        router.scores(np.ones((3, 5), np.float32))


def test_fit_warm_starts_from_a_labelled_set():
    task, rng, X, clusters = _stream(n=800, seed=4)
    Q = np.array([[task.reward(c, k, rng) for k in range(len(ROUTES))] for c in clusters])
    router = sona.Router(ROUTES, hidden_dim=32, seed=0)
    router.fit(X[:600], Q[:600], costs=np.full((600, 4), 0.01))
    assert router.feedbacks == 600 * 4
    best = task.best_routes
    greedy = router.scores(X[600:]).argmax(axis=1)
    assert np.mean(greedy == best[clusters[600:]]) >= 0.9
    assert router.route_cost.tolist() == pytest.approx([0.01] * 4)
    before = _state(router)
    with pytest.raises(ValueError, match="qualities must have shape"):
        router.fit(X[:5], Q[:4])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        router.fit(X[:2], Q[:2] + 2)
    with pytest.raises(ValueError, match="X must have shape"):
        router.fit(X[:2, :5], Q[:2])
    with pytest.raises(ValueError, match="costs must be finite"):
        router.fit(X[:2], Q[:2], costs=-np.ones((2, 4)))
    _assert_same(before, _state(router))


def test_fit_decays_a_pattern_once_per_row_not_per_outcome():
    """A labelled row's K outcomes are one visit of its pattern: with decay 0.9, three rows
    leave each route 1 + 0.9 + 0.81 outcomes of evidence, as three routed queries would leave
    the route that answered them (per outcome it would be 0.9**2 + 0.9**5 ... per route)."""
    router = sona.Router(["a", "b"], hidden_dim=8, seed=0, decay=0.9)
    x = np.ones((3, 8), np.float32)
    router.fit(x, np.array([[1.0, 0.0]] * 3))
    assert router.bank.n_patterns == 1
    np.testing.assert_allclose(router.bank.route_n[0, :2], [2.71, 2.71], rtol=1e-6)
    np.testing.assert_allclose(router.bank.route_s[0, :2], [2.71, 0.0], rtol=1e-6, atol=1e-7)
    assert router.bank.hits[0] == 6  # the baseline still averages every outcome


def test_stats_per_route_and_exploration():
    router = sona.Router(["a", "b", "c"], hidden_dim=8, explore=0.3, seed=0, costs=[1.0, 2.0, 0.0])
    x = np.ones(8, np.float32)
    s = router.stats()
    assert s["route_decisions"] == {"a": 0, "b": 0, "c": 0}
    assert s["route_quality"] == {"a": None, "b": None, "c": None}
    assert s["route_cost"] == {"a": 1.0, "b": 2.0, "c": 0.0}
    for _ in range(400):
        d = router.route(x)
        router.learn(d.outcome(1.0 if d.route == "b" else 0.0, cost=0.5))
    s = router.stats()
    assert sum(s["route_decisions"].values()) == s["decisions"] == 400
    assert s["route_decisions"]["b"] > s["route_decisions"]["a"]
    assert s["route_quality"]["b"] == 1.0 and s["route_quality"]["a"] == 0.0
    assert sum(s["route_feedbacks"].values()) == pytest.approx(400, rel=0.05)  # decayed slowly
    assert 0.0 < s["route_cost"]["b"] < 2.0
    assert 0.05 < s["exploration"] < 0.5  # explore=0.3 over 3 routes: about 0.2 off-greedy
