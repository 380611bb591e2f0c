"""sona.Router: the C policy against its numpy reference, learning from one outcome per query,
and every bad input."""

import numpy as np
import pytest
from policy_reference import PolicyReference

import sona
from sona.params import RAW_NEW_PATTERN_COS
from sona.synthetic import RoutingTask, run_protocol, run_sequential

ROUTES = ["r0", "r1", "r2", "r3"]
RAW_MATCHING = {"centre_patterns": False, "new_pattern_cos": RAW_NEW_PATTERN_COS}


def _twin(d=64, K=4, seed=3, **hp):
    """A Router and the numpy reference starting from the same weights."""
    ref = PolicyReference(d, K, seed=seed, **hp)
    router = sona.Router(ROUTES[:K], hidden_dim=d, seed=seed, **hp)
    p = ref.p
    router.micro.set_weights(p["A_micro"], p["B_micro"].T)
    router.base.set_weights(p["A_base"], p["B_base"].T)
    router._assign("keys", p["keys"])
    return router, ref


def _step_together(router, ref, task, X, clusters, rng, cost=None, cost_weight=lambda i: 0.0,
                   after=lambda: None):
    """Route and learn one stream in a Router and its reference twin, asserting the same route
    and probabilities at every step. cost(cluster, route) is the cost reported with each outcome
    (None: none reported); cost_weight(i) the trade-off of step i; after() runs after each."""
    for i, (x, c) in enumerate(zip(X, clusters)):
        w = cost_weight(i)
        dr, dn = router.route(x, cost_weight=w), ref.route(x, cost_weight=w)
        assert dr.index == dn.index
        np.testing.assert_allclose(dr.probs, dn.probs, rtol=2e-3, atol=2e-4)
        r = float(task.reward(c, dr.index, rng))
        spent = None if cost is None else cost(c, dr.index)
        router.learn(dr.outcome(r, cost=spent))
        ref.feedback(dn, r, spent)
        after()


@pytest.mark.parametrize("hp", [{}, {"explore": 0.1}, {"ewc_every": 50},
                                {"ewc_every": 50, "fisher_every": 1},
                                {"ewc_every": 50, "fisher_every": 7},
                                {"use_prior": False}, {"use_base": False, "learn_keys": False},
                                {"max_patterns": 3},
                                RAW_MATCHING, {**RAW_MATCHING, "max_patterns": 3}])
def test_matches_reference_step_for_step(backend, hp):
    d = 64
    router, ref = _twin(d=d, **hp)
    task = RoutingTask(dim=d, n_clusters=4, n_routes=4, seed=11)
    rng = np.random.default_rng(5)
    X, clusters = task.sample(300, rng)
    _step_together(router, ref, task, X, clusters, rng)
    p = ref.p
    np.testing.assert_allclose(router.micro.A, p["A_micro"], atol=2e-4)
    np.testing.assert_allclose(router.micro.B, p["B_micro"].T, atol=2e-4)
    np.testing.assert_allclose(router.base.B, p["B_base"].T, atol=2e-4)
    np.testing.assert_allclose(router.keys, p["keys"], atol=2e-4)
    np.testing.assert_allclose(router.bias, p["bias"], atol=2e-4)
    assert router.bank.n_patterns == ref.n_patterns
    np.testing.assert_allclose(router.scores(X[0]), ref.scores(X[0]), atol=2e-3)


@pytest.mark.parametrize("d", [37, 45])
def test_matches_reference_at_odd_dimensions(backend, d):
    """Dimensions that are not a multiple of the vector width, and odd pattern counts: the
    kernels' tails and leftover rows (the centred pattern scan takes two dots per row in one
    pass) agree with the reference."""
    router, ref = _twin(d=d, max_patterns=7)
    task = RoutingTask(dim=d, n_clusters=5, n_routes=4, seed=12)
    rng = np.random.default_rng(8)
    X, clusters = task.sample(200, rng)
    counts = set()
    _step_together(router, ref, task, X, clusters, rng,
                   after=lambda: counts.add(router.bank.n_patterns))
    assert router.bank.n_patterns == ref.n_patterns
    assert {1, 2, 3} <= counts  # odd and even pattern counts were scanned


@pytest.mark.parametrize("hp", [{}, {"explore": 0.1}, RAW_MATCHING, {"max_patterns": 3}])
def test_matches_reference_with_costs(backend, hp):
    """Costs reported with the outcomes (a price per route times a length per kind of query)
    and a cost trade-off on every other decision: the per-pattern costs agree step for step."""
    d = 64
    router, ref = _twin(d=d, **hp)
    task = RoutingTask(dim=d, n_clusters=4, n_routes=4, seed=11)
    rng = np.random.default_rng(6)
    X, clusters = task.sample(300, rng)
    _step_together(router, ref, task, X, clusters, rng,
                   cost=lambda c, k: 1e-3 * (k + 1) * (1 + int(c) % 3),
                   cost_weight=lambda i: 20.0 * (i % 2))
    n = router.bank.n_patterns
    assert n == ref.n_patterns
    np.testing.assert_allclose(router.bank.route_c[:n], ref.pat_c[:n], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(router.bank.route_cn[:n], ref.pat_cn[:n], rtol=1e-5)
    for x in X[:20]:
        np.testing.assert_allclose(router.scores(x, cost_weight=20.0),
                                   ref.scores(x, cost_weight=20.0), atol=2e-3)


def test_matches_reference_when_a_trade_off_rules_routes_out(backend):
    """At cost weight 150 a route costing 1/150 more than the cheapest known one is not tried
    while the routes gather their first outcomes: the reference leaves the same routes out, step
    for step, through the minimum-evidence phase and after it."""
    d = 64
    router, ref = _twin(d=d)
    task = RoutingTask(dim=d, n_clusters=4, n_routes=4, seed=11)
    rng = np.random.default_rng(6)
    X, clusters = task.sample(120, rng)
    _step_together(router, ref, task, X, clusters, rng,
                   cost=lambda c, k: 1e-3 * (k + 1) * (1 + int(c) % 3),
                   cost_weight=lambda i: 150.0 * (i % 3 != 0))
    assert router.feedbacks == 120


@pytest.mark.parametrize("hp", [{}, {"ewc_memory": 4.0, "fisher_every": 1}, {"ewc_novelty": 0.0},
                                {"ewc_novelty": 0.8},
                                {"reward_short_rate": 0.02, "reward_long_rate": 0.004,
                                 "novelty_short_rate": 0.1, "novelty_long_rate": 0.005}])
def test_task_memory_matches_reference_across_task_switches(backend, hp):
    """Task switches of both kinds, unannounced: every best route changes (the same queries now
    want other routes: a reward boundary without novelty, remembered with weight 0 unless
    ewc_novelty is 0), then new clusters arrive alone (a novelty boundary, the old task
    remembered; with ewc_novelty 0.8 a reward boundary there remembers it partly), twice. The
    memory pulls on every Fisher step; C and numpy agree throughout."""
    d = 64
    router, ref = _twin(d=d, ewc_every=50, ewc_margin=0.05, **hp)
    task = RoutingTask(dim=d, n_clusters=2, n_routes=4, seed=3)
    rng = np.random.default_rng(5)
    pool = [0, 1]
    for phase in range(5):
        if phase % 2 == 1:
            task.change_best_routes(clusters=pool)
        elif phase:
            pool = task.add_clusters(3).tolist()
        X, clusters = task.sample(300, rng, clusters=pool)
        for x, c in zip(X, clusters):
            dr, dn = router.route(x), ref.route(x)
            assert dr.index == dn.index
            r = float(task.reward(c, dr.index, rng))
            router.feedback(dr, r)
            ref.feedback(dn, r)
    stats = router.stats()
    # with ewc_novelty 0.8 no boundary may reach the memory on this stream: the prior routes new
    # clusters from the traffic-wide statistics, and the rise stays below 0.8
    assert stats["ewc_tasks"] == ref.tasks >= (0 if hp.get("ewc_novelty") == 0.8 else 1)
    assert stats["task_boundaries"] >= 2
    assert stats["novelty_short"] == pytest.approx(ref.novelty_short, abs=1e-5)
    assert stats["novelty_long"] == pytest.approx(ref.novelty_long, abs=1e-5)
    for name in ("omega", "omega_theta", "fisher_ckpt"):
        want = np.concatenate([a.ravel() for a in getattr(ref, name).values()])
        np.testing.assert_allclose(getattr(router, name), want, rtol=1e-3, atol=1e-4, err_msg=name)
    p = ref.p
    np.testing.assert_allclose(router.micro.A, p["A_micro"], atol=2e-4)
    np.testing.assert_allclose(router.base.B, p["B_base"].T, atol=2e-4)
    np.testing.assert_allclose(router.keys, p["keys"], atol=2e-4)
    np.testing.assert_allclose(router.bias, p["bias"], atol=2e-4)


def _adapter_only_runs(protocol, **hp):
    """protocol(make_router, seed) for seeds 0-19, the adapter alone routing (no pattern prior)."""
    def make(task, seed):
        return sona.Router(ROUTES, hidden_dim=task.dim, seed=seed, use_prior=False, **hp)
    return [protocol(lambda task, s=s: make(task, s), s) for s in range(20)]


def test_task_memory_keeps_earlier_tasks_through_later_ones(backend):
    """Three tasks in a row (disjoint cluster groups, 2000 feedbacks each, no announcement), the
    adapter alone routing: with the memory of past tasks more of the first task survives the two
    later ones than with EWC++ remembering only the last anchor, at no loss over all tasks."""
    def runs(**hp):
        out = _adapter_only_runs(run_sequential, **hp)
        return (np.mean([o["first_keep"] for o in out]), np.mean([o["final_mean"] for o in out]),
                np.mean([o["learnt"][0] for o in out]))

    keep, mean, learnt = runs()
    keep0, mean0, _ = runs(ewc_memory=0.0)
    assert learnt >= 0.95                      # the first task was learnt before it was left
    assert keep >= keep0 + 0.03, (keep, keep0)
    assert mean >= mean0, (mean, mean0)


def test_task_boundary_inferred_on_a_planted_switch_and_not_on_a_stationary_stream():
    # the drift detector reads the reward EMAs; the adapter alone (no pattern prior) learns this
    # 4-cluster task to a reward level (0.69) from which the planted switch is a clear drop (the
    # full router's empirical-Bayes prior holds it at 0.64 here, too close for the margin)
    def run(switch):
        task = RoutingTask(dim=64, n_clusters=4, n_routes=4, seed=2)
        router = sona.Router(ROUTES, hidden_dim=64, seed=0, ewc_every=250, use_prior=False)
        rng = np.random.default_rng(1)
        n = 20_000 if not switch else 6_000
        X, c = task.sample(n, rng)
        for t, (x, ci) in enumerate(zip(X, c)):
            if switch and t == 3_000:
                task.change_best_routes(4)  # every cluster's best route moves: rewards drop
            d = router.route(x)
            router.feedback(d, task.reward(int(ci), d.index, rng))
        return router.stats()

    stationary = run(False)
    assert stationary["task_boundaries"] == 0 and stationary["ewc_checkpoints"] >= 70
    switched = run(True)
    assert switched["task_boundaries"] >= 1
    assert sona.Router(ROUTES, hidden_dim=8).engine.stats()["task_boundaries"] == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_adaptive_memory_keeps_new_query_tasks_and_drops_contradicted_ones(backend, seed):
    """The memory's lambda per task follows the kind of switch. Every best route changing on the
    same queries is a reward boundary with no novelty: nothing is remembered, so the memory
    cannot hold back the new answers. New clusters arriving alone is a novelty boundary (the
    reward alone misses it): the task before is remembered fully. With ewc_novelty 0 (reward
    boundaries only, every task fully) it is the other way round."""
    def run(**hp):
        task = RoutingTask(seed=seed)
        router = sona.Router(ROUTES, hidden_dim=task.dim, seed=seed, **hp)
        rng = np.random.default_rng(seed)
        seen = []
        for phase, n in (("learn", 2500), ("change", 1500), ("new", 1500)):
            pool = task.add_clusters(4) if phase == "new" else None
            if phase == "change":
                task.change_best_routes(task.n_clusters)
            X, c = task.sample(n, rng, clusters=pool)
            for x, ci in zip(X, c):
                d = router.route(x)
                router.feedback(d, task.reward(int(ci), d.index, rng))
            s = router.stats()
            seen.append((s["task_boundaries"], s["ewc_tasks"], bool(router.omega.any())))
        return seen

    learn, change, new = run()
    assert learn == (0, 0, False)
    assert change[0] >= 1 and change[1:] == (0, False)  # reward boundary: nothing remembered
    assert new[0] > change[0] and new[1:] == (1, True)  # novelty: the task before, remembered
    learn, change, new = run(ewc_novelty=0.0)
    assert learn == (0, 0, False)
    assert change[0] >= 1 and change[1] >= 1 and change[2]  # every reward boundary remembers
    assert new == change  # the new clusters alone move no reward mean past the margin


def test_adaptive_memory_retains_more_without_losing_rerouting(backend):
    """The routing benchmark's phases with the adapter alone routing, seeds 0-19: the memory
    weighted by novelty keeps more of the old clusters through the new ones than a fixed lambda
    (ewc_novelty 0), while re-routing the changed clusters no worse and learning the new ones
    about as well. The novelty signal is built on the patterns: matched around the query mean
    (the defaults) it gains +0.021 old_keep here and +0.018 on seeds 20-59; with raw cosines
    +0.053 and +0.083."""
    def means(**hp):
        out = _adapter_only_runs(run_protocol, **hp)
        return {k: float(np.mean([o[k] for o in out]))
                for k in ("changed_acc", "old_keep", "new_acc")}

    adaptive, fixed = means(), means(ewc_novelty=0.0)
    assert adaptive["old_keep"] >= fixed["old_keep"] + 0.01, (adaptive, fixed)
    assert adaptive["changed_acc"] >= fixed["changed_acc"], (adaptive, fixed)
    assert adaptive["new_acc"] >= fixed["new_acc"] - 0.02, (adaptive, fixed)


def _patterns_by_cluster(**hp):
    """Tight clusters whose centres share one large direction (centre cosine 0.9, query to
    centre 0.97, as the real data's tasks: 0.35-0.55 across, 0.83-0.97 within): the pattern each
    query of 600 matched, and its cluster, after 600 learnt."""
    task = RoutingTask(dim=64, n_clusters=4, n_routes=4, centre_cosine=0.9, query_cosine=0.97,
                       seed=2)
    rng = np.random.default_rng(0)
    router = sona.Router(ROUTES, hidden_dim=64, seed=0, **hp)
    X, c = task.sample(1200, rng)
    for x, ci in zip(X[:600], c[:600]):
        d = router.route(x)
        router.feedback(d, task.reward(int(ci), d.index, rng))
    return np.array([router.route(x).pattern for x in X[600:]]), c[600:]


def test_centred_patterns_separate_clusters_that_share_a_direction():
    """Raw cosines of such clusters all exceed new_pattern_cos 0.45, so one pattern takes them
    together; matched around the query mean (the defaults: centre_patterns, threshold 0.2) each
    pattern holds one cluster and every cluster has a pattern."""
    def purity(patterns, clusters):
        return sum(np.bincount(clusters[patterns == j]).max() for j in set(patterns)) / len(
            patterns)

    raw = _patterns_by_cluster(**RAW_MATCHING)
    centred = _patterns_by_cluster()
    assert purity(*raw) < 0.5
    assert purity(*centred) > 0.95 and (centred[0] >= 0).all()
    assert len({int(j) for j in centred[0]}) >= 4


@pytest.mark.parametrize("matching", [{}, RAW_MATCHING])
def test_one_query_repeated_keeps_one_pattern(matching):
    """The same query again joins its pattern: around mu the first repeat sits at mu itself,
    where the pattern also is (no direction around mu to compare, but the same point)."""
    router = sona.Router(ROUTES, hidden_dim=8, seed=0, **matching)
    x = np.linspace(0.5, 1.5, 8).astype(np.float32)
    for _ in range(20):
        d = router.route(x)
        router.feedback(d, 1.0 if d.index == 0 else 0.0)
    assert router.bank.n_patterns == 1 and router.route(x).pattern == 0


def test_centre_patterns_is_fixed_and_a_bool():
    router = sona.Router(ROUTES, hidden_dim=8, seed=0)
    state = router.to_bytes()
    with pytest.raises(ValueError, match=r"\['centre_patterns'\] are fixed after construction"):
        router.set_params(centre_patterns=False)
    with pytest.raises(TypeError, match="centre_patterns must be a bool"):
        sona.Router(ROUTES, hidden_dim=8, centre_patterns=1)
    assert router.to_bytes() == state and router.params["centre_patterns"] is True


def test_fisher_lives_in_the_parameter_space():
    router = sona.Router(ROUTES, hidden_dim=32, seed=0)
    n = router.n_parameters
    assert router.fisher.shape == router.anchor.shape == (n,)
    assert n == 2 * 32 * (router.micro.rank + router.base.rank) + 4 * 32 + 4
    # RMSprop's second moment: one per row of each tensor (the bias is one row)
    assert router.rms.shape == (2 * (router.micro.rank + router.base.rank) + 4 + 1,)
    task = RoutingTask(dim=32, n_clusters=4, n_routes=4, seed=1)
    rng = np.random.default_rng(0)
    for x, c in zip(*task.sample(300, rng)):
        d = router.route(x)
        router.feedback(d, task.reward(int(c), d.index, rng))
    assert (router.fisher > 0).sum() > n // 2  # every tensor's entries get importance


def test_ewc_penalty_pulls_towards_the_anchor():
    def drift(lam):
        task = RoutingTask(dim=32, n_clusters=4, n_routes=4, seed=3)
        router = sona.Router(ROUTES, hidden_dim=32, seed=0, ewc_every=1000, ewc_lambda=lam,
                             use_prior=False)
        rng = np.random.default_rng(1)
        X, c = task.sample(1999, rng)  # one checkpoint (t = 1000), none after the switch
        for t, (x, ci) in enumerate(zip(X, c)):
            if t == 1000:
                task.change_best_routes(4)  # the anchor holds the old task's weights, which
            d = router.route(x)            # the penalty protects while the new task is learnt
            router.feedback(d, task.reward(int(ci), d.index, rng))
        assert router.stats()["has_anchor"]
        theta = np.concatenate([router.micro.A.ravel(), router.micro.B.T.ravel(),
                                router.base.A.ravel(), router.base.B.T.ravel(),
                                router.keys.ravel(), router.bias])
        return float(np.linalg.norm(theta - router.anchor))

    assert drift(50.0) < 0.8 * drift(0.0)


@pytest.mark.parametrize("hp, exc, match", [
    ({"ewc_novelty": -0.1}, ValueError, r"ewc_novelty must be in \[0, 1\]; got -0.1"),
    ({"ewc_novelty": 1.5}, ValueError, r"ewc_novelty must be in \[0, 1\]; got 1.5"),
    ({"ewc_novelty": float("nan")}, ValueError, r"ewc_novelty must be a finite number"),
    ({"ewc_memory": -1.0}, ValueError, r"ewc_memory"),
    ({"tau": 0.0}, ValueError, r"tau must be in \[1e-06, 1e\+06\]; got 0.0"),
    ({"fisher_every": 0}, ValueError, r"fisher_every must be an integer in \[1, "),
    ({"ewc": 1}, TypeError, r"ewc must be a bool"),
    ({"ewc_lambda2": 1.0}, ValueError, r"unknown router parameters \['ewc_lambda2'\]"),
])
def test_bad_hyperparameters_raise_naming_them(hp, exc, match):
    with pytest.raises(exc, match=match):
        sona.Router(ROUTES, hidden_dim=8, **hp)
