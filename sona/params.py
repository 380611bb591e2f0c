"""The router's hyper-parameters: one declarative table, and everything derived from it.

Each :class:`Param` says what a parameter is (name, kind, default, range, one-line doc), which
part of the policy uses it, whether it may change on a live router (``live``: the C policy
reads it afresh on every route and feedback) or is fixed at construction (it sizes arrays or
belongs to the engine's adapters or pattern bank), and which router state file version
introduced it, with the value an older file stands for. From the table come
:data:`sona.router.POLICY_DEFAULTS`, the validation of ``Router(**params)`` and
``Router.set_params``, the ``params`` of state files and their migration, the C struct's values
(its fields carry the parameters' names: sona/_policy.pxi fills it from the validated dict), the
README's parameter table (``sona params --markdown``) and the numpy reference's defaults.

Adding a hyper-parameter: one line in ``ROUTER_PARAMS`` plus the code that uses it (see
CONTRIBUTING.md). This module is pure Python (and numpy) and imports nothing from ``sona._core``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

__all__ = ["Param", "ROUTER_PARAMS", "PARAMS", "RAW_NEW_PATTERN_COS", "defaults", "check_params",
           "implied_params", "markdown_table"]

Value = Union[bool, int, float]


@dataclass(frozen=True)
class Param:
    """One hyper-parameter of the router policy.

    ``kind`` is ``bool``, ``int`` or ``float``; ``bounds`` is a range in interval notation,
    e.g. ``"(0, 1]"`` (``None`` for a bool); ``since`` is the router state version that
    introduced it and ``implied`` the value a file of an older version stands for (``None``:
    the default, i.e. the older code behaved as the default does).
    """

    name: str
    kind: type
    default: Value
    bounds: str | None
    part: str
    live: bool
    doc: str
    since: int = 1
    implied: Value | None = None

    @property
    def range(self) -> tuple[float, float, bool, bool]:
        """(low, high, low excluded, high excluded), parsed from ``bounds``."""
        if self.bounds is None:
            raise ValueError(f"{self.name} is a bool: it has no range")
        low, high = self.bounds[1:-1].split(",")
        return float(low), float(high), self.bounds[0] == "(", self.bounds[-1] == ")"

    def check(self, v: Any) -> Value:
        """``v`` as a plain bool, int or float; raises TypeError/ValueError naming the
        parameter, what it must be and what came."""
        if self.kind is bool:
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{self.name} must be a bool; got {v!r}")
            return bool(v)
        lo, hi, lo_open, hi_open = self.range
        if self.kind is int:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not lo <= int(v) <= hi:
                raise ValueError(f"{self.name} must be an integer in [{lo:.0f}, {hi:.0f}]; "
                                 f"got {v!r}")
            return int(v)
        real = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
        # an int is finite (and 10**400 would overflow math.isfinite)
        if not real or not (isinstance(v, numbers.Integral) or math.isfinite(v)):
            raise ValueError(f"{self.name} must be a finite number; got {v!r}")
        if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
            raise ValueError(f"{self.name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}"
                             f"{')' if hi_open else ']'}; got {v!r}")
        return float(v)


# Float ranges: inside them every quantity the policy forms in float32 stays far from overflow
# (1/tau and 1/tau_prior <= 1e6 logits, rms_eps**2 a normal float32, steps of at most lr against
# weights clipped to weight_clip); finite values outside (tau=1e-46, lr=1e39, micro_scale=1e39)
# gave NaN within two steps, and a router that could not be saved and loaded back. Integer
# ranges: the ranks SonaConfig allows; periods fit the C struct's uint32.
_U32 = "[1, 4294967295]"

#: new_pattern_cos for the cosine of the raw embeddings (centre_patterns off; the engine's bank,
#: which has no query mean): raw sentence embeddings' same-topic cosine is ~0.5 and cross-topic
#: ~0.3 on the routing benchmark (0.83 / 0.35 within / across tasks on the real data, MiniLM).
RAW_NEW_PATTERN_COS = 0.45

P = Param
#: The table. Order: by part, as the README lists them.
ROUTER_PARAMS: tuple[Param, ...] = (
    P("micro_rank", int, 2, "[1, 2]", "adapter", False,
      "rank of the MicroLoRA tier (the engine's micro_lora_rank)"),
    P("base_rank", int, 8, "[1, 64]", "adapter", False,
      "rank of the BaseLoRA tier: the adapter's capacity to separate routes (use >= routes)"),
    P("micro_scale", float, 1.0, "(0, 1e3]", "adapter", False,
      "output scale of MicroLoRA (the engine's adapter owns it)"),
    P("base_scale", float, 1.0, "(0, 1e3]", "adapter", False,
      "output scale of BaseLoRA (the engine's adapter owns it)"),
    P("use_micro", bool, True, None, "adapter", True, "MicroLoRA enters the adapter's output"),
    P("use_base", bool, True, None, "adapter", True, "BaseLoRA enters the adapter's output"),
    P("tau", float, 0.15, "[1e-6, 1e6]", "adapter", True,
      "adapter temperature: logits = keys . y^ / tau + bias"),
    P("learn_keys", bool, True, None, "adapter", True, "the per-route keys learn"),
    P("learn_bias", bool, True, None, "adapter", True, "the per-route bias learns"),
    P("unit_keys", bool, True, None, "adapter", True, "keys are renormalised after each step"),
    P("mean_window", int, 1000, _U32, "adapter", True,
      "query mean mu: cumulative over this many queries, then an EMA of rate 1/mean_window"),
    P("use_prior", bool, True, None, "prior", True, "the pattern prior enters the logits"),
    # tau_prior 0.003: a 0.01 reward gap is 3.3 logits, so what explores is the Thompson draw
    # (which shrinks with evidence), not a softmax spread over near-equal routes that never does
    P("tau_prior", float, 0.003, "[1e-6, 1e6]", "prior", True,
      "prior logit scale: a 0.01 reward gap is 0.01 / tau_prior logits"),
    P("ts_scale", float, 0.7, "[0, 1e3]", "prior", True,
      "Thompson draws: this many posterior standard deviations (0: the posterior mean)"),
    P("prior_window", float, 10000.0, "[1, 1e9]", "prior", True,
      "feedbacks the traffic-wide route statistics remember (decay 1 - 1/prior_window)",
      since=5),
    P("explore", float, 0.0, "[0, 1]", "exploration", True,
      "epsilon: uniform share mixed into route() (Thompson draws already explore)"),
    P("adv_clip", float, 1.0, "(0, 1e6]", "optimiser", True,
      "bound on |importance weight x advantage| per feedback"),
    P("global_rate", float, 0.01, "[0, 1]", "optimiser", True,
      "EMA rate of the global reward baseline (a new pattern's baseline starts from it)"),
    P("lr", float, 1e-3, "[0, 1]", "optimiser", True, "RMSprop step size"),
    P("rms_decay", float, 0.999, "[0, 1)", "optimiser", True, "RMSprop second-moment decay"),
    P("rms_eps", float, 1e-3, "[1e-12, 1]", "optimiser", True, "RMSprop epsilon"),
    P("weight_clip", float, 4.0, "(0, 1e6]", "optimiser", True,
      "every learned weight stays in [-weight_clip, weight_clip]"),
    P("ewc", bool, True, None, "EWC", True,
      "EWC++: Fisher, checkpoints, task boundaries and the pull towards the anchor"),
    P("ewc_alpha", float, 0.01, "[0, 1]", "EWC", True, "Fisher EMA rate per feedback"),
    P("ewc_lambda", float, 2.0, "[0, 1e6]", "EWC", True,
      "strength of the pull towards the last stable checkpoint"),
    P("ewc_margin", float, 0.1, "[0, 1]", "EWC", True,
      "short reward mean below the long one by more than this: a task boundary"),
    P("ewc_every", int, 500, _U32, "EWC", True, "checkpoint period (feedbacks)"),
    P("fisher_every", int, 4, _U32, "EWC", True,
      "Fisher update and pull on every k-th feedback, k times as strong"),
    P("ewc_memory", float, 1.0, "[0, 1e6]", "EWC", True,
      "lambda of the memory of past tasks (0: remember the last anchor only)",
      since=3, implied=0.0),
    P("ewc_novelty", float, 0.5, "[0, 1]", "EWC", True,
      "novelty rise that is a boundary and remembers a task fully (0: reward drift only)",
      since=4, implied=0.0),
    P("reward_short_rate", float, 0.01, "(0, 1]", "EWC", True,
      "EMA rate of the short reward mean (drift detection)", since=6),
    P("reward_long_rate", float, 0.002, "(0, 1]", "EWC", True,
      "EMA rate of the long reward mean (drift detection)", since=6),
    P("novelty_short_rate", float, 0.05, "(0, 1]", "EWC", True,
      "EMA rate of the short share of novel queries", since=6),
    P("novelty_long_rate", float, 0.002, "(0, 1]", "EWC", True,
      "EMA rate of the long share of novel queries", since=6),
    P("max_patterns", int, 100, "[1, 1000000]", "bank", False,
      "pattern bank capacity (the engine's max_patterns)"),
    # Patterns are matched around the running query mean mu: sentence embeddings share one large
    # direction, so raw cosines of unrelated queries are high (medians across tasks 0.35 / 0.55
    # on the real data, MiniLM / WordLlama; within a task 0.83 / 0.97) and one raw pattern took
    # tasks whose best models differ. Around mu the medians are 0.60 / 0.88 within a task and
    # -0.41 / -0.66 across (simulator: 0.27 within, -0.04 across): 0.2 sits between them on
    # all three. Measured on 80 seeds of the real data and 100 of the simulator (README, "Real
    # traffic"). Without centring use RAW_NEW_PATTERN_COS (what the engine's bank matches by).
    P("new_pattern_cos", float, 0.2, "[-1, 1]", "bank", False,
      "a query joins its nearest pattern at this cosine, else starts a new one"),
    P("centre_patterns", bool, True, None, "bank", False,
      "match queries to patterns by cosine around the running query mean mu, not of the raw "
      f"embeddings (set new_pattern_cos to {RAW_NEW_PATTERN_COS} without it)", since=8,
      implied=False),
    # prior_count: a new kind of query is routed as the whole traffic says until its own
    # outcomes outweigh that.
    # decay 0.999: a pattern remembers ~1000 of its outcomes; at 0.995 (~200) its posterior
    # never narrows enough to stop exploring routes within a few points of the best
    P("decay", float, 0.999, "(0, 1]", "bank", False,
      "per hit of a pattern, its per-route counts and reward sums decay by this"),
    P("prior_count", float, 10.0, "(0, 1e6]", "bank", False,
      "a new pattern's pseudo-count of traffic-wide evidence per route"),
    P("baseline_rate", float, 0.05, "(0, 1]", "bank", False,
      "EMA rate of a pattern's reward baseline once it has 1/rate hits"),
)  # fmt: skip
del P

#: The table by name.
PARAMS: dict[str, Param] = {p.name: p for p in ROUTER_PARAMS}


def defaults() -> dict[str, Any]:
    """Every parameter's default, by name (a new dict).

    >>> defaults()["tau"]
    0.15
    """
    return {p.name: p.default for p in ROUTER_PARAMS}


def check_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` over the defaults, validated, as plain bool/int/float (JSON-serialisable).

    Raises
    ------
    ValueError : an unknown name, an int or float out of its range, a non-finite number.
    TypeError : a bool parameter given something else than a bool.

    >>> check_params({"tau": 0.5})["tau"], check_params({})["ewc_every"]
    (0.5, 500)
    """
    unknown = sorted(set(values) - set(PARAMS))
    if unknown:
        raise ValueError(f"unknown router parameters {unknown}; known: {sorted(PARAMS)}")
    return {p.name: p.check(values.get(p.name, p.default)) for p in ROUTER_PARAMS}


def implied_params(version: int) -> dict[str, Any]:
    """The parameters a router state file of layout ``version`` lacks, with the values its
    router behaved by (what loading fills in).

    >>> implied_params(2)["ewc_memory"], implied_params(7)
    (0.0, {'centre_patterns': False})
    """
    return {p.name: p.default if p.implied is None else p.implied
            for p in ROUTER_PARAMS if version < p.since}


def markdown_table() -> str:
    """The table as Markdown (README.md holds exactly this; ``sona params --markdown``)."""
    rows = ["| parameter | type | default | range | part | at run time | doc |",
            "|---|---|---|---|---|---|---|"]
    for p in ROUTER_PARAMS:
        rows.append(f"| `{p.name}` | {p.kind.__name__} | {p.default!r} | {p.bounds or '-'} | "
                    f"{p.part} | {'live' if p.live else 'fixed'} | {p.doc} |")
    return "\n".join(rows) + "\n"
