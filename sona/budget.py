"""Spend a budget: the cost weight that holds a router's mean cost per query at a target.

``route(x, cost_weight=w)`` trades quality against cost at a weight ``w`` in quality per unit of
cost; a user usually knows a budget (so much per query) instead. ``BudgetPacer`` finds the weight
online from the costs that outcomes report, by projected dual gradient steps on the budget
constraint (the pacing of budgeted repeated auctions, Balseiro and Gur, 2019):

    w <- clip(w + rate * (cost - budget) / budget**2, 0, MAX_WEIGHT_X_BUDGET / budget)

Over-spending raises the weight, under-spending lowers it; while the budget is not binding the
weight stays 0 and routing is the router's quality-only routing. The steps add up the over- and
under-spending, so the pacer holds the running mean: an over-spend early on (a new router tries
every route first) is paid back by spending less afterwards. Dividing by budget**2 makes the
step free of the cost unit (costs and budget in dollars or in cents give the same decisions).
At ``MAX_WEIGHT_X_BUDGET / budget`` a cost difference of 1 % of the budget outweighs a whole unit
of quality, so routing is cheapest-first there; the cap keeps a budget below every route's cost
from driving the weight without bound, so that raising the budget again takes effect at once (and
the weight stays within route()'s bound on a cost weight, ``sona._core.MAX_COST``).

The router learns as before (its learning does not depend on the weight), so the budget can change
at any time. One pacer per process paces that process's traffic: replicas that each hold the same
budget spend it on average together.

>>> import numpy as np, sona
>>> router = sona.Router(["small", "large"], hidden_dim=8, seed=0, costs=[0.001, 0.01])
>>> pacer = BudgetPacer(budget=0.004)
>>> d = router.route(np.ones(8, np.float32), cost_weight=pacer.weight)
>>> router.learn(d.outcome(1.0, cost=0.01 if d.route == "large" else 0.001))
>>> pacer.observe(0.01)            # over budget: the weight rises
>>> round(pacer.weight, 3), pacer.queries
(3.75, 1)
"""

from __future__ import annotations

import os
from typing import Any

from ._core import MAX_COST
from .checks import real
from .state import MAX_COUNT, PathLike, read_state, unusable, write_state

__all__ = ["BudgetPacer", "MAX_WEIGHT_X_BUDGET"]

#: The weight's ceiling times the budget: at this weight a cost difference of 1 % of the budget
#: outweighs one unit of quality.
MAX_WEIGHT_X_BUDGET = 100.0

_KIND = "budget"  # the kind of sona state file a pacer is saved as
_FIELDS = ("budget", "rate", "weight", "queries", "spent")  # what save() writes, by property


class BudgetPacer:
    """The cost weight that holds the mean cost per query at ``budget`` (see the module doc).

    Parameters
    ----------
    budget : target mean cost per query, in the unit of the costs that outcomes report (> 0 and
        at most ``MAX_COST``, the bound on a reported cost).
    rate : step size of the weight, in (0, 1]. Measured in units of 1 / budget (a budget's worth
        of cost per unit of quality), the weight moves by rate times the relative over-spend
        (cost / budget - 1) per query: at 0.01, about 100 queries spending twice the budget raise
        it by 1 / budget, a response time in queries whatever the costs and their unit. On
        RouterBench it held the mean cost after 1,000 feedbacks at 91-101 % of the budget on every
        seed (bench/bench_real.py --budgets).
    weight : the starting weight (>= 0; default 0: quality first until the budget binds).

    Attributes: ``weight`` (pass it as ``cost_weight``), ``queries`` and ``spent`` (how many costs
    were observed and their sum), ``mean_cost`` (spent / queries; None before the first).
    ``save(path)`` and ``BudgetPacer.load(path)`` keep all of it in a state file (and it pickles).

    Raises TypeError for a budget, rate or weight that is not a real number, ValueError for one
    that is not finite or out of range.
    """

    def __init__(self, budget: float, rate: float = 0.01, weight: float = 0.0) -> None:
        self._budget = real("budget", budget, 0.0, MAX_COST, low_open=True)
        self._rate = real("rate", rate, 0.0, 1.0, low_open=True)
        self._weight = min(real("weight", weight, 0.0), self.max_weight)
        self._queries = 0
        self._spent = 0.0

    @property
    def budget(self) -> float:
        """Target mean cost per query; setting it takes effect from the next observed cost (the
        weight is kept, within the new ceiling)."""
        return self._budget

    @budget.setter
    def budget(self, value: float) -> None:
        self._budget = real("budget", value, 0.0, MAX_COST, low_open=True)
        self._weight = min(self._weight, self.max_weight)

    @property
    def rate(self) -> float:
        """Step size of the weight, in (0, 1]; settable."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._rate = real("rate", value, 0.0, 1.0, low_open=True)

    @property
    def max_weight(self) -> float:
        """The weight's ceiling, ``MAX_WEIGHT_X_BUDGET / budget`` (at most ``MAX_COST``)."""
        return min(MAX_WEIGHT_X_BUDGET / self._budget, MAX_COST)

    @property
    def weight(self) -> float:
        """The cost weight to route at now (quality per unit of cost)."""
        return self._weight

    @property
    def queries(self) -> int:
        """How many costs were observed."""
        return self._queries

    @property
    def spent(self) -> float:
        """The sum of the observed costs."""
        return self._spent

    @property
    def mean_cost(self) -> float | None:
        """spent / queries; None before the first cost."""
        return self._spent / self._queries if self._queries else None

    def observe(self, cost: float) -> None:
        """One routed query's realised cost (what its outcome reports). Raises TypeError for a
        cost that is not a real number, ValueError for a negative or non-finite one; either way
        nothing changes."""
        c, b = real("cost", cost, 0.0), self._budget
        # (c - b) / b / b, not / (b * b): b * b underflows to 0 for budgets below 1e-154
        step = self._rate * ((c - b) / b) / b
        self._weight = min(max(self._weight + step, 0.0), self.max_weight)
        self._queries += 1
        self._spent += c

    def save(self, path: PathLike) -> None:
        """Write the pacer (budget, rate, weight, queries, spent) to ``path`` atomically: a sona
        state file (:mod:`sona.state`) of kind ``"budget"``, which :meth:`load` resumes exactly.
        Raises OSError when the file system refuses (the previous file is then untouched)."""
        write_state(path, {}, self._fields(), _KIND)

    @classmethod
    def load(cls, path: PathLike) -> BudgetPacer:
        """The pacer saved at ``path``, resuming where it was (the same next weights).

        Raises FileNotFoundError when there is no file, StateFileError for a file that is
        truncated, corrupted, of another kind (a router's, say) or holds values a pacer cannot
        have (every field is checked as the constructor checks it).
        """
        arrays, meta = read_state(path, kind=_KIND)
        fail = unusable(_KIND, f"file {os.fspath(path)!r}")
        names = set(_FIELDS)
        if arrays or not isinstance(meta, dict) or set(meta) != names:
            fail(f"expected no arrays and the fields {sorted(names)}; got arrays "
                 f"{sorted(arrays)} and {sorted(meta) if isinstance(meta, dict) else meta!r}")
        try:
            pacer = cls(meta["budget"], meta["rate"])
            weight, spent = real("weight", meta["weight"], 0.0), real("spent", meta["spent"], 0.0)
        except (TypeError, ValueError) as exc:
            fail(str(exc))
        queries = meta["queries"]
        if isinstance(queries, bool) or not isinstance(queries, int) or not (
                0 <= queries <= MAX_COUNT):
            fail(f"queries must be an integer in [0, {MAX_COUNT}]; got {queries!r}")
        if weight > pacer.max_weight:
            fail(f"weight {weight!r} is above the ceiling {pacer.max_weight!r} of budget "
                 f"{pacer.budget!r}")
        pacer._weight, pacer._queries, pacer._spent = weight, queries, spent
        return pacer

    def _fields(self) -> dict[str, Any]:
        """The pacer's whole state, as save() writes it (sona serve compares it to know whether
        a checkpoint must write the pacer again)."""
        return {name: getattr(self, name) for name in _FIELDS}

    def __repr__(self) -> str:
        return (f"BudgetPacer(budget={self._budget:g}, rate={self._rate:g}, "
                f"weight={self._weight:.6g}, queries={self._queries})")
