"""sona.BudgetPacer: the cost weight that holds a router's mean cost per query at a budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sona
from sona import evaluation
from sona.budget import MAX_WEIGHT_X_BUDGET
from sona.data import load_routerbench


def _stream(router, pacer, train, rows):
    """Route each row at the pacer's weight, learn the outcome, pace: (quality, cost) per step."""
    q, c = np.empty(len(rows)), np.empty(len(rows))
    for t, i in enumerate(rows):
        d = router.route(train.X[i], cost_weight=pacer.weight)
        q[t], c[t] = train.quality[i, d.index], train.cost[i, d.index]
        router.learn(d.outcome(float(q[t]), cost=float(c[t])))
        pacer.observe(float(c[t]))
    return q, c


def test_real_traffic_spends_the_budget_and_beats_the_models_it_can_afford():
    data = load_routerbench("minilm")
    train = data.subset(data.is_train)
    best = evaluation.best_single(train)
    budget = 0.3 * float(train.cost[:, best].mean())  # 30 % of always-GPT-4
    router = sona.Router(list(train.routes), hidden_dim=train.dim, seed=0)
    pacer = sona.BudgetPacer(budget)
    rows = evaluation.stream_order(train.n_queries, 3000, 0)
    q, c = _stream(router, pacer, train, rows)
    late = slice(1000, None)
    assert c[late].mean() == pytest.approx(budget, rel=0.05)
    assert pacer.queries == 3000 and pacer.mean_cost == pytest.approx(c.mean())
    # every single model within the budget, on the same queries, is at least 3 points worse
    affordable = train.cost[rows[late]].mean(axis=0) <= budget
    assert affordable.any()
    assert q[late].mean() > train.quality[rows[late]][:, affordable].mean(axis=0).max() + 0.03


def test_a_budget_that_never_binds_leaves_routing_as_it_was():
    data = load_routerbench("minilm")
    train = data.subset(data.is_train)
    rows = evaluation.stream_order(train.n_queries, 300, 1)
    paced = sona.Router(list(train.routes), hidden_dim=train.dim, seed=3)
    plain = sona.Router(list(train.routes), hidden_dim=train.dim, seed=3)
    pacer = sona.BudgetPacer(float(train.cost.max()) * 2)
    q, _ = _stream(paced, pacer, train, rows)
    for i, quality in zip(rows, q):
        d = plain.route(train.X[i])
        assert train.quality[i, d.index] == quality
        plain.learn(d.outcome(float(quality), cost=float(train.cost[i, d.index])))
    assert pacer.weight == 0.0


def test_weights_are_free_of_the_cost_unit():
    dollars, cents = sona.BudgetPacer(0.002), sona.BudgetPacer(0.2)
    rng = np.random.default_rng(0)
    for cost in rng.choice([0.0001, 0.0004, 0.005], size=200):
        dollars.observe(cost)
        cents.observe(100 * cost)
        assert cents.weight * 100 == pytest.approx(dollars.weight, rel=1e-9, abs=1e-9)


def test_over_and_under_spending_move_the_weight_by_the_rule():
    p = sona.BudgetPacer(0.01, rate=0.02, weight=5.0)
    p.observe(0.03)  # over: + 0.02 * 0.02 / 1e-4
    assert p.weight == pytest.approx(9.0)
    p.observe(0.0)  # under: - 0.02 * 0.01 / 1e-4
    assert p.weight == pytest.approx(7.0)
    for _ in range(10):
        p.observe(0.0)
    assert p.weight == 0.0  # never negative
    assert p.spent == pytest.approx(0.03) and p.queries == 12


def test_a_pickled_pacer_resumes_where_it_was():
    import pickle

    p = sona.BudgetPacer(0.01, rate=0.05)
    for cost in (0.03, 0.0, 0.02):
        p.observe(cost)
    q = pickle.loads(pickle.dumps(p))
    assert (q.weight, q.queries, q.spent, q.budget, q.rate) == (
        p.weight, p.queries, p.spent, p.budget, p.rate)
    p.observe(0.04)
    q.observe(0.04)
    assert q.weight == p.weight


def test_an_unreachable_budget_caps_the_weight_and_a_raised_one_acts_at_once():
    p = sona.BudgetPacer(1e-6)
    for _ in range(100_000):
        p.observe(0.001)  # every route costs more than the budget
    assert p.weight == p.max_weight == MAX_WEIGHT_X_BUDGET / 1e-6
    p.budget = 0.01  # the ceiling follows the budget
    assert p.weight == MAX_WEIGHT_X_BUDGET / 0.01
    steps = 0
    while p.weight > 0.0:
        p.observe(0.0)
        steps += 1
    assert steps == math.ceil(MAX_WEIGHT_X_BUDGET / p.rate)  # 1 / rate of the ceiling per query


def test_extreme_budgets_keep_the_weight_usable():
    from sona._core import MAX_COST

    router = sona.Router(["a", "b"], hidden_dim=8, seed=0, costs=[1.0, 2.0])
    x = np.ones(8, np.float32)
    tiny = sona.BudgetPacer(1e-300)  # budget**2 underflows; the ceiling is route()'s bound
    tiny.observe(1e30)
    assert tiny.weight == tiny.max_weight == MAX_COST
    assert router.route(x, cost_weight=tiny.weight).route == "a"
    tiny.observe(0.0)
    assert tiny.weight == 0.0
    huge = sona.BudgetPacer(MAX_COST)
    huge.observe(MAX_COST)
    assert huge.weight == 0.0 and huge.max_weight == MAX_WEIGHT_X_BUDGET / MAX_COST


BUDGET = r"budget must be a finite number in \(0, 1e\+30\]"
RATE = r"rate must be a finite number in \(0, 1\]"


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"budget": 0}, ValueError, BUDGET),
    ({"budget": -1.0}, ValueError, BUDGET),
    ({"budget": math.nan}, ValueError, BUDGET),
    ({"budget": math.inf}, ValueError, BUDGET),
    ({"budget": 2e30}, ValueError, BUDGET),
    ({"budget": True}, TypeError, "budget must be a real number; got bool"),
    ({"budget": "0.1"}, TypeError, "budget must be a real number; got str"),
    ({"budget": None}, TypeError, "budget must be a real number; got NoneType"),
    ({"budget": 1.0, "rate": 0.0}, ValueError, RATE),
    ({"budget": 1.0, "rate": 1.5}, ValueError, RATE),
    ({"budget": 1.0, "rate": "0.1"}, TypeError, "rate must be a real number; got str"),
    ({"budget": 1.0, "weight": -1.0}, ValueError, r"weight must be a finite number in \[0, inf\)"),
    ({"budget": 1.0, "weight": math.inf}, ValueError, r"weight must be a finite number in \[0"),
    ({"budget": 1.0, "weight": [1.0]}, TypeError, "weight must be a real number; got list"),
])
def test_bad_construction(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        sona.BudgetPacer(**kwargs)


def test_bad_inputs_raise_and_change_nothing():
    p = sona.BudgetPacer(0.01, weight=3.0)
    p.observe(0.02)
    before = (p.weight, p.queries, p.spent, p.budget, p.rate)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"cost must be a finite number in \[0, inf\)"):
            p.observe(bad)
    for bad in (None, "0.01", False):
        with pytest.raises(TypeError, match="cost must be a real number"):
            p.observe(bad)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match=BUDGET):
            p.budget = bad
        with pytest.raises(ValueError, match=RATE):
            p.rate = bad
    with pytest.raises(TypeError, match="budget must be a real number"):
        p.budget = "x"
    with pytest.raises(TypeError, match="rate must be a real number"):
        p.rate = "x"
    for name in ("weight", "queries", "spent", "mean_cost", "max_weight"):
        with pytest.raises(AttributeError):
            setattr(p, name, 0)
    assert (p.weight, p.queries, p.spent, p.budget, p.rate) == before
    assert sona.BudgetPacer(1.0).mean_cost is None
    assert repr(p).startswith("BudgetPacer(budget=0.01, rate=0.01, weight=")


def test_a_saved_pacer_resumes_where_it_was(tmp_path):
    p = sona.BudgetPacer(0.01, rate=0.05)
    for cost in (0.03, 0.0, 0.02):
        p.observe(cost)
    path = tmp_path / "pacer.budget"
    p.save(path)
    q = sona.BudgetPacer.load(path)
    assert (q.weight, q.queries, q.spent, q.budget, q.rate) == (
        p.weight, p.queries, p.spent, p.budget, p.rate)
    for cost in (0.04, 0.001, 0.0):
        p.observe(cost)
        q.observe(cost)
        assert q.weight == p.weight
    sona.BudgetPacer(1e-3).save(path)  # replaced atomically
    assert sona.BudgetPacer.load(str(path)).queries == 0


def _write(path, meta, arrays=None):
    from sona.state import write_state

    write_state(path, arrays or {}, meta, "budget")


GOOD = {"budget": 0.01, "rate": 0.01, "weight": 5.0, "queries": 3, "spent": 0.04}


@pytest.mark.parametrize("change, message", [
    ({"weight": 1e9}, "above the ceiling"),
    ({"weight": -1.0}, r"weight must be a finite number in \[0, inf\)"),
    ({"spent": -0.5}, r"spent must be a finite number in \[0, inf\)"),
    ({"budget": 0.0}, "budget must be a finite number"),
    ({"budget": "0.01"}, "budget must be a real number"),
    ({"rate": 2.0}, "rate must be a finite number"),
    ({"queries": -1}, "queries must be an integer"),
    ({"queries": 1.5}, "queries must be an integer"),
    ({"queries": True}, "queries must be an integer"),
    ({"extra": 1}, "expected no arrays and the fields"),
])
def test_a_pacer_file_with_values_no_pacer_can_have_is_refused(tmp_path, change, message):
    path = tmp_path / "p.budget"
    _write(path, {**GOOD, **change})
    with pytest.raises(sona.StateFileError, match=message):
        sona.BudgetPacer.load(path)


def test_files_that_are_not_a_pacer_are_refused(tmp_path):
    path = tmp_path / "p.budget"
    missing = dict(GOOD)
    del missing["spent"]
    _write(path, missing)
    with pytest.raises(sona.StateFileError, match="expected no arrays and the fields"):
        sona.BudgetPacer.load(path)
    _write(path, GOOD, {"w": np.zeros(2, np.float32)})
    with pytest.raises(sona.StateFileError, match="expected no arrays"):
        sona.BudgetPacer.load(path)
    sona.Router(["a", "b"], hidden_dim=8).save(path)
    with pytest.raises(sona.StateFileError, match="wrong kind"):
        sona.BudgetPacer.load(path)
    sona.BudgetPacer(0.01).save(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # a flipped bit in the metadata
    path.write_bytes(bytes(data))
    with pytest.raises(sona.StateFileError):
        sona.BudgetPacer.load(path)
    with pytest.raises(FileNotFoundError):
        sona.BudgetPacer.load(tmp_path / "none.budget")
