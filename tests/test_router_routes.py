"""Router.add_route / retire_route at run time, and route_batch: a new route is tried and wins
where it is best, what was learnt stays bit-exact, retired routes are never chosen, decisions
made before a change are learnt correctly, and the route set survives save/load/pickle."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers import learned_bytes

import sona
from sona.config import MAX_ROUTES

D = 16
CENTRES = np.random.default_rng(0).standard_normal((4, D)).astype(np.float32)


def query(rng):
    """A query near one of four fixed centres."""
    return (CENTRES[rng.integers(4)] + 0.1 * rng.standard_normal(D)).astype(np.float32)


def play(router, rng, quality, n):
    """Route and learn n queries (Bernoulli rewards of mean quality[route]); the routes taken."""
    taken = []
    for _ in range(n):
        d = router.route(query(rng))
        router.feedback(d, float(rng.random() < quality[d.route]))
        taken.append(d.route)
    return taken


@pytest.fixture
def trained(backend):
    """Routes a and b after 300 feedbacks (b better); the stream's generator goes on from it."""
    router = sona.Router(["a", "b"], hidden_dim=D, seed=1)
    rng = np.random.default_rng(2)
    play(router, rng, {"a": 0.6, "b": 0.8}, 300)
    return router, rng


def copy(router):
    return sona.Router.from_bytes(router.to_bytes())


# ---------------------------------------------------------------------------- add_route


@pytest.mark.parametrize("new_quality, wins", [(0.95, True), (0.2, False)])
def test_a_new_route_is_tried_and_chosen_where_it_is_best(trained, new_quality, wins):
    router, rng = trained
    assert router.add_route("c") == 2
    quality = {"a": 0.6, "b": 0.8, "c": new_quality}
    taken = play(router, rng, quality, 600)
    assert "c" in taken[:100]  # tried although the others have 300 outcomes behind them
    share = taken[-200:].count("c") / 200
    assert share > 0.8 if wins else share < 0.1


def test_add_route_keeps_everything_learnt_bit_exact(trained):
    router, rng = trained
    before = copy(router)
    X = np.stack([query(rng) for _ in range(20)])
    scores = router.scores(X)
    K, n = 2, router.n_parameters
    router.add_route("c", cost=0.25)
    assert router.routes == ("a", "b", "c") and router.n_parameters == n + D + 1
    # the old routes' probabilities among themselves are unchanged
    assert np.array_equal(router.scores(X, allowed=["a", "b"])[:, :K], scores)
    for name in ("keys", "bias", "global_n", "global_s", "global_q", "route_cost", "cost_n",
                 "shrink"):
        assert np.array_equal(getattr(router, name)[:K], getattr(before, name)), name
    cut = n - K - K * D  # per weight: adapters, then the keys, then the bias
    for name in ("fisher", "anchor", "fisher_ckpt", "omega", "omega_theta"):
        new, old = getattr(router, name), getattr(before, name)
        assert np.array_equal(new[:cut + K * D], old[:cut + K * D]), name
        assert np.array_equal(new[cut + (K + 1) * D:][:K], old[cut + K * D:]), name
    rows = router.rms.size - 1 - (K + 1)
    assert np.array_equal(np.delete(router.rms, rows + K), before.rms)
    for name in ("route_n", "route_s"):
        assert np.array_equal(getattr(router.bank, name)[:, :K], getattr(before.bank, name))
    for name in ("micro", "base"):
        assert np.array_equal(getattr(router, name).A, getattr(before, name).A)
    assert router._counters() == before._counters()


def test_a_new_route_starts_as_in_a_fresh_router(trained):
    router, _ = trained
    router.add_route("c")
    fresh = sona.Router(["a", "b", "c"], hidden_dim=D, seed=1)
    assert np.array_equal(router.keys[2], fresh.keys[2])
    assert router.bias[2] == 0 and router.shrink[2] == fresh.shrink[2]
    assert not router.bank.route_n[:, 2].any() and not router.bank.route_s[:, 2].any()
    s = router.stats()
    assert s["route_quality"]["c"] is None and s["route_cost"]["c"] is None
    assert s["route_feedbacks"]["c"] == 0.0 and s["route_decisions"]["c"] == 0
    router.add_route("d", cost=0.5)
    assert router.stats()["route_cost"]["d"] == 0.5


def test_the_engine_of_a_router_follows_its_routes(trained, tmp_path):
    router, _ = trained
    router.add_route("c")
    assert router.bank.n_routes == 3 and router.engine.config.max_routes == 3
    router.engine.save(tmp_path / "engine.sona")
    loaded = sona.SonaEngine.load(tmp_path / "engine.sona")
    assert np.array_equal(loaded.bank.route_n, router.bank.route_n)


def test_a_router_sharing_its_engine_cannot_add_a_route():
    engine = sona.SonaEngine(hidden_dim=D, max_routes=4)
    a = sona.Router(["a", "b"], engine=engine)
    b = sona.Router(["a", "b", "c"], engine=engine)
    state = a.to_bytes()
    with pytest.raises(ValueError, match="shares its engine with 1 other router"):
        a.add_route("c")
    assert a.to_bytes() == state and b.routes == ("a", "b", "c")


def test_a_router_on_a_larger_engine_uses_its_next_column():
    engine = sona.SonaEngine(hidden_dim=D, max_routes=4)
    router = sona.Router(["a", "b"], engine=engine)
    engine.bank.route_n[:, 2] = 1.0  # whatever the engine recorded for node 2
    router.add_route("c")
    assert engine.bank.n_routes == 4 and not engine.bank.route_n[:, 2].any()


@pytest.mark.parametrize("name, cost, error, match", [
    ("b", None, ValueError, r"route 'b' exists already; routes are \['a', 'b'\]"),
    ("", None, TypeError, "non-empty string"),
    (3, None, TypeError, "non-empty string"),
    ("\ud800", None, ValueError, "not valid Unicode"),
    ("c", -1.0, ValueError, "cost must be a finite number in"),
    ("c", float("nan"), ValueError, "cost must be"),
    ("c", True, TypeError, "cost must be a number or None; got bool"),
    ("c", "1", TypeError, "cost must be a number or None; got str"),
])
def test_bad_add_route_raises_and_changes_nothing(trained, name, cost, error, match):
    router, _ = trained
    state = router.to_bytes()
    with pytest.raises(error, match=match):
        router.add_route(name, cost=cost)
    assert router.to_bytes() == state and router.routes == ("a", "b")


def test_at_most_max_routes():
    router = sona.Router([f"r{i}" for i in range(MAX_ROUTES)], hidden_dim=8, max_patterns=2)
    with pytest.raises(ValueError, match=f"at most {MAX_ROUTES} routes"):
        router.add_route("one more")
    assert len(router.routes) == MAX_ROUTES


# ---------------------------------------------------------------------------- retire_route


def test_a_retired_route_is_never_chosen_again(trained):
    router, rng = trained
    router.retire_route("b")  # the best one
    assert router.retired == ("b",)
    taken = play(router, rng, {"a": 0.6, "b": 0.8}, 300)
    assert set(taken) == {"a"}
    X = np.stack([query(rng) for _ in range(10)])
    assert (router.scores(X)[:, 1] == 0).all() and router.scores(X).shape == (10, 2)
    assert (router.scores(X, allowed=["a", "b"]) == router.scores(X)).all()
    assert {d.route for d in router.route_batch(X, allowed=["a", "b"])} == {"a"}
    with pytest.raises(ValueError, match=r"allowed names no route that can be chosen \(retired"):
        router.route(X[0], allowed=["b"])
    s = router.stats()
    assert s["retired"] == ["b"] and s["routes"] == ["a", "b"]
    for key in ("route_decisions", "route_feedbacks", "route_quality", "route_cost"):
        assert list(s[key]) == ["a"], key


def test_the_learning_policy_leaves_a_retired_route_out(trained):
    """Feedback on the live routes moves neither the retired route's key nor its bias."""
    router, rng = trained
    router.retire_route("b")  # the best: it would hold most of the learning policy's mass
    router.add_route("c")
    key, bias = router.keys[1].copy(), router.bias[1]
    play(router, rng, {"a": 0.6, "c": 0.5}, 200)
    np.testing.assert_allclose(router.keys[1], key, atol=1e-6)  # renormalised, not stepped
    assert router.bias[1] == bias


def test_feedback_on_a_decision_for_a_route_retired_since_is_learnt(trained):
    router, rng = trained
    x = query(rng)
    d = router.route(x, allowed=["b"])
    twin = copy(router)
    router.retire_route("b")
    twin.retire_route("b")
    n = router.global_n[1]
    router.feedback(d, 1.0)
    assert router.global_n[1] > n and router.feedbacks == twin.feedbacks + 1  # (decayed + 1)
    twin.learn(sona.Outcome(x, "b", d.prob, 1.0))  # the same step as from a logged outcome
    assert learned_bytes(router) == learned_bytes(twin)


@pytest.mark.parametrize("change", ["add", "retire"])
def test_a_pending_decision_is_learnt_by_its_route_after_a_change(trained, change):
    router, rng = trained
    x = query(rng)
    d = router.route(x, allowed=["a"])
    twin = copy(router)
    for r in (router, twin):
        if change == "add":
            r.add_route("c")
        else:
            r.retire_route("b")
    router.feedback(d, 0.7)
    twin.learn(sona.Outcome(x, "a", d.prob, 0.7))
    assert learned_bytes(router) == learned_bytes(twin)
    assert d.probs.shape == (2,)  # as it was routed
    with pytest.raises(ValueError, match="already learnt"):
        router.feedback(d, 0.7)


def test_an_outcome_logged_before_add_route_is_learnt_by_name(trained):
    router, rng = trained
    d = router.route(query(rng), allowed=["b"])
    outcome = d.outcome(0.9)
    router.add_route("c")
    router.learn(outcome)
    assert router.stats()["route_feedbacks"]["c"] == 0.0 and d.consumed


def test_a_retired_name_added_back_starts_over_at_its_index(trained):
    router, rng = trained
    router.retire_route("a")
    router.add_route("c")
    assert router.add_route("a") == 0
    assert router.retired == () and router.routes == ("a", "b", "c")
    fresh = sona.Router(["a", "b"], hidden_dim=D, seed=1)
    assert np.array_equal(router.keys[0], fresh.keys[0])
    assert router.global_n[0] == 0 and not router.bank.route_n[:, 0].any()
    assert "a" in play(router, rng, {"a": 0.95, "b": 0.8, "c": 0.1}, 200)[-50:]


@pytest.mark.parametrize("name, error, match", [
    ("z", ValueError, "unknown route 'z'"),
    (5, ValueError, "route index must be in"),
    (None, TypeError, "route name or index"),
    (True, TypeError, "route name or index"),
])
def test_bad_retire_route_raises_and_changes_nothing(trained, name, error, match):
    router, _ = trained
    state = router.to_bytes()
    with pytest.raises(error, match=match):
        router.retire_route(name)
    assert router.to_bytes() == state


def test_the_last_route_cannot_be_retired_nor_one_twice(trained):
    router, _ = trained
    router.retire_route("a")
    state = router.to_bytes()
    with pytest.raises(ValueError, match="retired already"):
        router.retire_route("a")
    with pytest.raises(ValueError, match="cannot retire 'b': it is the last route"):
        router.retire_route(1)
    assert router.to_bytes() == state


# ---------------------------------------------------------------------------- state


def test_save_load_and_pickle_keep_the_route_set(trained, tmp_path):
    router, rng = trained
    router.add_route("c", cost=0.1)
    router.retire_route("a")
    play(router, rng, {"b": 0.8, "c": 0.9}, 50)
    router.save(tmp_path / "r.sona")
    for other in (sona.Router.load(tmp_path / "r.sona"), pickle.loads(pickle.dumps(router)),
                  copy(router)):
        assert other.routes == ("a", "b", "c") and other.retired == ("a",)
        assert learned_bytes(other) == learned_bytes(router)
        x = query(np.random.default_rng(9))
        assert np.array_equal(other.scores(x), router.scores(x))
        twin = copy(router)  # the same draws from here: the same decisions
        assert [d.route for d in other.route_batch(np.stack([x] * 20))] == [
            d.route for d in twin.route_batch(np.stack([x] * 20))]


# ---------------------------------------------------------------------------- route_batch


@pytest.mark.parametrize("kwargs", [{}, {"cost_weight": 0.5}, {"allowed": ["a"]}])
def test_route_batch_is_route_per_row(trained, kwargs):
    router, rng = trained
    twin = copy(router)
    X = np.stack([query(rng) for _ in range(30)])
    batch = router.route_batch(X.astype(np.float64), **kwargs)
    rows = [twin.route(x, **kwargs) for x in X]
    assert [d.route for d in batch] == [d.route for d in rows]
    assert [d.prob for d in batch] == [d.prob for d in rows]
    assert all(np.array_equal(a.probs, b.probs) for a, b in zip(batch, rows))
    assert learned_bytes(router) == learned_bytes(twin)
    for d, q in zip(batch, np.linspace(0, 1, 30)):
        router.feedback(d, float(q))
    assert router.feedbacks == twin.feedbacks + 30
    assert router.route_batch(np.zeros((0, D), np.float32)) == []


@pytest.mark.parametrize("X, kwargs, error, match", [
    (np.ones(D), {}, ValueError, r"X must have shape \(n, 16\); got \(16,\)"),
    (np.ones((2, D + 1)), {}, ValueError, r"X must have shape \(n, 16\)"),
    (np.array([[0.0] * D, [np.nan] * D]), {}, ValueError, "X contains NaN"),
    (np.ones((2, D)), {"cost_weight": -1.0}, ValueError, "cost_weight"),
    (np.ones((2, D)), {"allowed": ["z"]}, ValueError, "unknown route 'z'"),
    (np.ones((2, D)), {"allowed": []}, ValueError, "allowed names no route"),
])
def test_bad_route_batch_routes_nothing(trained, X, kwargs, error, match):
    router, _ = trained
    state = router.to_bytes()
    with pytest.raises(error, match=match):
        router.route_batch(X, **kwargs)
    assert router.to_bytes() == state
