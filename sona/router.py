"""Router: picks one of several routes (e.g. LLMs) per query embedding and learns from one quality
score per routed query.

    router = sona.Router(["small", "medium", "large"], hidden_dim=384)
    d = router.route(embedding)        # Decision: .route, .index, .probs, .trajectory_id
    router.feedback(d, quality)        # learns now, in microseconds
    router.scores(embedding)           # greedy probabilities, no side effects
    router.add_route("xl")             # the route set can change at run time (retire_route)

The policy (csrc/policy.c) adds two experts: an adapter (the centred query through MicroLoRA and
BaseLoRA against learned unit keys, trained by REINFORCE with a per-pattern baseline, RMSprop and
EWC++) and a pattern prior (Thompson draws from per-pattern, per-route reward statistics kept by
online leader clustering). Why each part is there, and what each contributes, is measured by
bench/bench_routing.py and reported in README.md.

State files (``router.save(path)`` / ``Router.load(path)``) are described in ``Router.save``.
"""

from __future__ import annotations

import os
import time
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from ._core import LEARNT_WINDOW, RouterCore, _snapshot, get_backend
from .bank import (
    BANK_ARRAYS,
    BANK_COST_ARRAYS,
    BANK_DEFAULTS,
    check_bank_arrays,
    check_bank_cost_arrays,
)
from .config import MAX_ROUTES, SonaConfig, _is_int
from .engine import SonaEngine
from .outcome import MAX_DECISION_ID_CHARS, Outcome
from .params import PARAMS, check_params, defaults, implied_params
from .state import (
    F32_MAX,
    MAX_COUNT,
    PathLike,
    check_number,
    check_values,
    check_weights,
    decode_state,
    encode_state,
    read_state,
    unusable,
    write_state,
)

__all__ = ["Router", "POLICY_DEFAULTS", "ROUTER_STATE_VERSION"]

#: Version of the router layout inside a state file (the container has its own format_version).
ROUTER_STATE_VERSION = 9

#: Defaults of the router policy's hyper-parameters (the table, with ranges and docs, is
#: sona.params.ROUTER_PARAMS; csrc/policy.c shows where each enters).
POLICY_DEFAULTS = defaults()


# ---------------------------------------------------------------------------- state file layout

_META_KEYS = frozenset(
    {"router_state_version", "sona_version", "routes", "hidden_dim", "seed", "params",
     "counters", "decisions", "feedbacks", "n_patterns", "retired", "learnt"}
)
_COUNTER_KEYS = {  # what RouterCore._counters() returns: name -> kind
    "n_seen": "u64", "t": "u64", "rng_state": "u64", "rng_inc": "u64",
    "global_baseline": "float", "reward_short": "float", "reward_long": "float",
    "fisher_max": "float", "has_anchor": "bool", "checkpoints": "u64",
    "task_boundaries": "u64", "drifting": "bool", "omega_max": "float", "tasks": "u64",
    "novelty_short": "float", "novelty_long": "float", "ckpt_patterns": "u64",
}  # fmt: skip
# Parameters each version added are in sona.params (Param.since/implied); counters and arrays
# here. Added by router state version 3 (the task memory), with what an older file stands for:
# nothing remembered, no Fisher taken at the last checkpoint.
_V3_COUNTERS = {"omega_max": 0.0, "tasks": 0}
_V3_ARRAYS = ("fisher_ckpt", "omega", "omega_theta")
# Added by version 4 (novelty: boundaries from new queries, memory weighted by novelty).
_V4_COUNTERS = {"novelty_short": 0.0, "novelty_long": 0.0}  # + ckpt_patterns: the file's patterns
# Added by version 5 (the prior shrinks every pattern towards traffic-wide route statistics;
# costs per call): an older file loads with no traffic-wide evidence and unknown costs. Its
# prior_count and ts_scale keep their values, whose meaning changed (pseudo-count towards the
# pattern's baseline then; Thompson noise per 1/sqrt(count) then), so its routing differs.
_V5_ARRAYS = ("global_n", "global_s", "global_q", "route_cost", "cost_n", "shrink")
# Version 6 added only parameters (the drift and novelty EMA rates, hard-coded before) and the
# retired routes; version 7 the decision ids learnt from (the at-most-once window): an older
# file has none of either. Version 8 added only a parameter (centre_patterns: an older file
# loads with it off, as it matched). Version 9 added the per-pattern costs (bank.route_cn,
# bank.route_c): an older file loads with none, every pattern at the routes' traffic-wide costs
# until costs are reported there.
_ROUTER_BANK_ARRAYS = (*BANK_ARRAYS, *BANK_COST_ARRAYS)
_POLICY_ARRAYS = ("keys", "bias", "rms", "fisher", "anchor", *_V3_ARRAYS, "mu", *_V5_ARRAYS)
_U64 = 1 << 64


def _upgrade_lists(meta: Any) -> None:
    """The lists router state versions 6 and 7 added, empty in an older file (in place)."""
    if isinstance(meta, dict) and _is_int(meta.get("router_state_version")):
        for since, key in ((6, "retired"), (7, "learnt")):
            if meta["router_state_version"] < since:
                meta.setdefault(key, [])


def _initial_keys(seed: int, n: int, d: int) -> np.ndarray:
    """The unit keys (n, d) of routes 0..n-1 in a new router: route k's is the same for any
    n > k, so a route added later starts from the key it would have had from the start."""
    keys = np.random.default_rng(seed + 2).standard_normal((n, d))
    return keys / np.linalg.norm(keys, axis=1, keepdims=True)


def _route_names(routes: Any) -> tuple:
    """routes as a tuple of at least 2 unique, non-empty names a state file can hold."""
    if isinstance(routes, (str, bytes)):
        raise TypeError(f"routes must be a list of route names, not one {type(routes).__name__} "
                        f"({routes!r} would become the routes {list(routes)!r})")
    names = tuple(routes)
    if len(names) < 2:
        raise ValueError(f"a router needs at least 2 routes; got {len(names)}")
    if not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"route names must be non-empty strings; got {names!r}")
    for n in names:
        try:
            n.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"route name {n!r} is not valid Unicode text (a lone surrogate?); "
                             "names must be encodable as UTF-8") from None
    if len(set(names)) != len(names):
        raise ValueError(f"route names must be unique; got {names!r}")
    return names


def _rms_rows_from_v1(v: np.ndarray, n_rows: int, d: int) -> np.ndarray:
    """Router state version 1 kept one RMSprop second moment per weight; version 2 keeps one per
    row: n_rows - 1 rows of d weights (adapters, keys), then the bias as one row. Each is an EMA,
    so the mean of a row's per-weight moments is exactly the row's moment."""
    full = (n_rows - 1) * d
    return np.append(v[:full].reshape(n_rows - 1, d).mean(axis=1),
                     v[full:].mean()).astype(np.float32)


def _upgrade(meta: Any, arrays: dict) -> None:
    """Fills what router state versions 3 to 9 added into an older file (in place; a malformed
    file is left for the checks to refuse): no task memory (before 3), no novelty (before 4), no
    traffic-wide statistics or costs (before 5), no per-pattern costs (before 9), the parameters
    each version added (at the values sona.params.implied_params gives: how the older router
    behaved)."""
    if not (isinstance(meta, dict) and _is_int(meta.get("router_state_version"))):
        return
    version = meta["router_state_version"]
    patterns = meta.get("n_patterns") if _is_int(meta.get("n_patterns")) else 0
    v4_counters = {**_V4_COUNTERS, "ckpt_patterns": patterns}  # all of them familiar
    for since, counters in ((3, _V3_COUNTERS), (4, v4_counters)):
        if version < since and isinstance(meta.get("counters"), dict):
            meta["counters"] = {**counters, **meta["counters"]}
    if isinstance(meta.get("params"), dict):
        meta["params"] = {**implied_params(version), **meta["params"]}
    if version < 3 and "fisher" in arrays:
        for name in _V3_ARRAYS:
            arrays.setdefault(name, np.zeros_like(arrays["fisher"]))
    if version < 5 and "bias" in arrays:
        file_params = meta.get("params")
        prior_count = file_params.get("prior_count") if isinstance(file_params, dict) else None
        if "shrink" not in arrays and isinstance(prior_count, (int, float)) and not isinstance(
                prior_count, bool):  # each pattern starts from the file's prior_count
            arrays["shrink"] = np.full_like(arrays["bias"], prior_count)
        for name in _V5_ARRAYS:
            arrays.setdefault(name, np.zeros_like(arrays["bias"]))
    if version < 9 and "bank.route_n" in arrays:
        for name in BANK_COST_ARRAYS:
            arrays.setdefault("bank." + name, np.zeros_like(arrays["bank.route_n"]))


def _check_meta(fail, meta: Any) -> None:
    """Structure and types of a router file's metadata; calls fail(msg) (which raises)."""
    if not isinstance(meta, dict):
        fail(f"metadata must be a JSON object, got {type(meta).__name__}")
    unknown, missing = sorted(set(meta) - _META_KEYS), sorted(_META_KEYS - set(meta))
    if unknown or missing:
        fail(f"metadata keys do not match this sona's router layout: unknown {unknown}, "
             f"missing {missing}")
    version = meta["router_state_version"]
    if not _is_int(version) or version < 1:
        fail(f"router_state_version must be an integer >= 1, got {version!r}")
    if version > ROUTER_STATE_VERSION:
        fail(f"router layout version {version} is newer than this sona reads "
             f"(<= {ROUTER_STATE_VERSION}); upgrade sona to load it")
    if not isinstance(meta["sona_version"], str):
        fail(f"sona_version must be a string, got {meta['sona_version']!r}")
    routes = meta["routes"]
    if (not isinstance(routes, list) or len(routes) < 2
            or not all(isinstance(n, str) and n for n in routes)
            or len(set(routes)) != len(routes)):
        fail(f"routes must be a list of at least 2 unique non-empty strings, got {routes!r}")
    retired = meta["retired"]
    if (not isinstance(retired, list) or not all(isinstance(n, str) for n in retired)
            or len(set(retired)) != len(retired) or not set(retired) < set(routes)):
        fail(f"retired must be a list of unique names of routes, leaving at least one route "
             f"live, got {retired!r} (routes {routes!r})")
    learnt = meta["learnt"]
    if not isinstance(learnt, list) or len(learnt) > LEARNT_WINDOW:
        size = f" of length {len(learnt)}" if isinstance(learnt, list) else ""
        fail(f"learnt must be a list of at most {LEARNT_WINDOW} decision ids, got "
             f"{type(learnt).__name__}{size}")
    if not all(isinstance(i, str) and i.isascii() and 1 <= len(i) <= MAX_DECISION_ID_CHARS
               for i in learnt) or len(set(learnt)) != len(learnt):
        fail(f"learnt must hold unique decision ids of 1..{MAX_DECISION_ID_CHARS} ASCII "
             f"characters")
    for key in ("hidden_dim", "seed", "decisions", "feedbacks", "n_patterns"):
        v = meta[key]
        low = 1 if key == "hidden_dim" else 0
        if not _is_int(v) or not low <= v < _U64:
            fail(f"{key} must be an integer in [{low}, 2**64), got {v!r}")
    params = meta["params"]
    if not isinstance(params, dict):
        fail(f"params must be a JSON object, got {type(params).__name__}")
    unknown, missing = sorted(set(params) - set(POLICY_DEFAULTS)), sorted(
        set(POLICY_DEFAULTS) - set(params))
    if unknown or missing:
        fail(f"params do not match this sona's router parameters: unknown {unknown}, "
             f"missing {missing}")
    counters = meta["counters"]
    if not isinstance(counters, dict):
        fail(f"counters must be a JSON object, got {type(counters).__name__}")
    unknown, missing = sorted(set(counters) - set(_COUNTER_KEYS)), sorted(
        set(_COUNTER_KEYS) - set(counters))
    if unknown or missing:
        fail(f"counters do not match this sona's router state: unknown {unknown}, "
             f"missing {missing}")
    for key, kind in _COUNTER_KEYS.items():
        v = counters[key]
        ok = (isinstance(v, bool) if kind == "bool"
              else _is_int(v) and 0 <= v < _U64 if kind == "u64"
              else isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v))
        if not ok:
            want = {"bool": "a bool", "u64": "an integer in [0, 2**64)",
                    "float": "a finite number"}[kind]
            fail(f"counters[{key!r}] must be {want}, got {v!r}")


def _check_loaded_values(fail, meta: dict, arrays: dict) -> None:
    """Values a running router can hold, checked as strictly as construction checks its inputs:
    weights bounded, second moments and Fisher >= 0, reward means in [0, 1], counters that
    cannot wrap; the bank's arrays as check_bank_arrays says."""
    counters = meta["counters"]
    for key in ("global_baseline", "reward_short", "reward_long"):
        check_number(fail, f"counters[{key!r}]", counters[key], 0.0, 1.0)
    for key in ("fisher_max", "omega_max"):
        check_number(fail, f"counters[{key!r}]", counters[key], 0.0, F32_MAX)
    for key, kind in _COUNTER_KEYS.items():
        if kind == "u64" and not key.startswith("rng_"):  # the generator's state spans 2**64
            check_number(fail, f"counters[{key!r}]", counters[key], 0, MAX_COUNT, integer=True)
    for key in ("decisions", "feedbacks"):
        check_number(fail, key, meta[key], 0, MAX_COUNT, integer=True)
    check_weights(fail, arrays, ("micro.A", "micro.B", "base.A", "base.B", "keys", "bias",
                                 "anchor", "mu"))
    for name in ("rms", "fisher", "fisher_ckpt", "omega"):
        check_values(fail, name, arrays[name], 0.0)
    check_bank_arrays(fail, arrays)
    check_bank_cost_arrays(fail, arrays)


class Router(RouterCore):
    """Learns which route serves each kind of query best, from one quality score per query.

    Parameters
    ----------
    routes: the route names (at least 2, unique strings), e.g. model names.
    hidden_dim: the embedding dimension (a SonaEngine of that size is created for the router).
    engine: or an existing SonaEngine to route with: the router then shares its adapters, pattern
        bank and trajectory store (every decision is one of its trajectories), and the engine's
        config fixes the ranks and the bank (passing different values is an error).
    explore: extra uniform exploration mixed into routing (the Thompson prior explores already).
    seed: makes initial weights and every exploration draw reproducible.
    costs: optional cost per call of each route (e.g. US dollars), for route(x, cost_weight=...);
        refined by the costs reported with outcomes (their running mean, the given cost counting
        as the first observation). Without it, costs are learnt from outcomes alone. Reported
        costs are also learnt per pattern (a call costs its price times the tokens of the query
        and answer, and queries of one kind have alike lengths): a route's cost on a pattern is
        the mean of its costs there and one observation of its cost per call scaled by what the
        pattern's calls cost against those routes' costs per call (see csrc/bank.h).
    **params: policy hyper-parameters (sona.params.ROUTER_PARAMS: types, ranges, defaults);
        read them back from ``router.params`` (read-only), change live ones with set_params().

    Raises ValueError for fewer than 2 routes, duplicate or non-string names, a bad dimension or
    a parameter out of range.

    >>> import numpy as np, sona
    >>> router = sona.Router(["small", "large"], hidden_dim=8, seed=0)
    >>> d = router.route(np.ones(8, np.float32))
    >>> router.feedback(d, 1.0)
    >>> d.route in router.routes
    True
    """

    def __init__(self, routes, hidden_dim: int | None = None, *, engine: SonaEngine | None = None,
                 explore: float = 0.0, seed: int = 0, costs=None, **params) -> None:
        names = _route_names(routes)
        if hidden_dim is not None and (isinstance(hidden_dim, bool)
                                       or not isinstance(hidden_dim, (int, np.integer))
                                       or hidden_dim < 1):
            raise ValueError(f"hidden_dim must be an integer >= 1; got {hidden_dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
        K = len(names)
        if engine is None:
            if hidden_dim is None:
                raise ValueError("give hidden_dim, or an engine whose dimension the router uses")
            hp = check_params({**params, "explore": explore})
            engine = SonaEngine(
                SonaConfig(hidden_dim=int(hidden_dim), micro_lora_rank=hp["micro_rank"],
                           base_lora_rank=hp["base_rank"], max_patterns=hp["max_patterns"],
                           pattern_clusters=min(64, hp["max_patterns"]), max_routes=K,
                           seed=int(seed)),
                bank_params={k: hp[k] for k in BANK_DEFAULTS},
                micro_scale=hp["micro_scale"], base_scale=hp["base_scale"])
        else:
            if not isinstance(engine, SonaEngine):
                raise TypeError(f"engine must be a SonaEngine; got {type(engine).__name__}")
            d = engine.config.hidden_dim
            if hidden_dim is not None and hidden_dim != d:
                raise ValueError(f"hidden_dim={hidden_dim} but the engine's is {d}")
            if engine.bank.n_routes < K:
                raise ValueError(f"the engine's pattern bank tracks {engine.bank.n_routes} routes "
                                 f"(SonaConfig.max_routes); this router has {K}")
            # the engine's parts fix these; the router records them, so its file rebuilds them
            shared = {"micro_rank": engine.micro.rank, "base_rank": engine.base.rank,
                      "micro_scale": engine.micro.scale, "base_scale": engine.base.scale,
                      "max_patterns": engine.bank.capacity, **engine.bank.params}
            clash = {k: (params[k], v) for k, v in shared.items()
                     if k in params and np.float32(params[k]) != np.float32(v)}
            if clash:
                raise ValueError(f"parameters fixed by the engine differ: {clash} (given, engine)")
            hp = check_params({**params, **shared, "explore": explore})
        d = engine.config.hidden_dim
        keys = _initial_keys(seed, K, d)
        super().__init__(names, engine.micro, engine.base, engine.bank, keys, hp, seed,
                         engine.store, costs)
        self.engine = engine
        self.micro, self.base, self.bank = engine.micro, engine.base, engine.bank
        engine._routers.add(self)
        self.seed = int(seed)

    @property
    def params(self) -> MappingProxyType:
        """Every hyper-parameter's current value, as a read-only mapping (plain bool/int/float).

        Change live ones with :meth:`set_params`; ``sona params`` (or README.md) lists them all
        with types, ranges and which are fixed after construction.

        >>> import sona
        >>> router = sona.Router(["a", "b"], hidden_dim=8)
        >>> router.params["explore"]
        0.0
        >>> router.params["explore"] = 1.0
        Traceback (most recent call last):
        TypeError: 'mappingproxy' object does not support item assignment
        """
        return MappingProxyType(self._params)

    def set_params(self, **changes: Any) -> None:
        """Change live hyper-parameters (e.g. ``explore``, ``tau``, ``lr``, ``ewc_lambda``); the
        next route or feedback uses them.

        A decision routed before the change learns as a logged outcome does (its context is
        prepared again under the new parameters). save() and to_bytes() write the new values.
        A fixed parameter (ranks, scales, the pattern bank's: ``sona.params.PARAMS[name].live``
        is False) may only be given its current value.

        Raises
        ------
        ValueError : an unknown name, a value out of range, or a new value for a fixed
            parameter.
        TypeError : a bool parameter given something else.
        Nothing changes when it raises: every value is checked before any is applied.

        >>> import numpy as np, sona
        >>> router = sona.Router(["a", "b"], hidden_dim=8, seed=0)
        >>> router.set_params(explore=0.5, lr=0.01)
        >>> router.params["explore"], router.params["lr"]
        (0.5, 0.01)
        """
        hp = check_params({**self._params, **changes})
        fixed = sorted(k for k in changes if not PARAMS[k].live and hp[k] != self._params[k])
        if fixed:
            raise ValueError(f"{fixed} are fixed after construction (they size the router's "
                             f"arrays or belong to its engine); build a new Router to change "
                             f"them. Live parameters: "
                             f"{sorted(p.name for p in PARAMS.values() if p.live)}")
        self._apply_params(hp)

    def index(self, route: str | int) -> int:
        """The index of a route given by name (or index, checked)."""
        if isinstance(route, (int, np.integer)) and not isinstance(route, bool):
            if not 0 <= route < len(self.routes):
                raise ValueError(f"route index must be in 0..{len(self.routes) - 1}; got {route}")
            return int(route)
        try:
            return self.routes.index(route)
        except ValueError:
            raise ValueError(f"unknown route {route!r}; routes are {list(self.routes)}") from None

    # ------------------------------------------------------------------------ route set

    @property
    def retired(self) -> tuple:
        """The names of the routes retired by :meth:`retire_route` (and not added back)."""
        return self._retired_names()

    def add_route(self, name: str, cost: float | None = None) -> int:
        """Add a route at run time; returns its index.

        The route starts as in a fresh router: its key the one a new router would give that
        index, bias 0, no traffic-wide or per-pattern statistics (the prior's posterior for it is
        wide, so Thompson draws try it, and each pattern shrinks it towards the traffic-wide
        prior), ``cost`` per call (None: unknown until outcomes report it, as for a router
        built without costs). Everything learnt for the other routes is kept bit-exactly; their
        probabilities change only by the share the new route takes. A new name is appended
        (index ``len(routes)``: scores() and Decision.probs grow by one column, decisions made
        before keep their shorter probs and are still learnt from). A retired name is
        added back at its old index, starting over as above (outcomes naming it, logged before,
        are then learnt into the new start).

        Parameters: ``name``, a non-empty string not naming a live route; ``cost``, a number in
        [0, 1e30] or None.

        Raises
        ------
        TypeError : ``name`` is not a non-empty string, ``cost`` not a number.
        ValueError : ``name`` names a live route or is not valid Unicode; ``cost`` out of
            range; the router has 1024 routes already; the router shares its engine with
            other routers (their pattern statistics use the same route columns). Nothing
            changes then.

        >>> import numpy as np, sona
        >>> router = sona.Router(["small", "large"], hidden_dim=8, seed=0)
        >>> router.add_route("medium", cost=0.002)
        2
        >>> router.scores(np.ones(8, np.float32)).shape
        (3,)
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a route name must be a non-empty string; got {name!r}")
        revive = name in self.retired
        if not revive:
            if name in self.routes:
                raise ValueError(f"route {name!r} exists already; routes are {list(self.routes)}")
            _route_names((*self.routes, name))  # valid Unicode
            if len(self.routes) >= MAX_ROUTES:
                raise ValueError(f"a router has at most {MAX_ROUTES} routes; this one has "
                                 f"{len(self.routes)} (retired ones included)")
        cost = self._route_cost_arg(cost)
        others = [r for r in self.engine._routers if r is not self]
        if others:
            raise ValueError(f"this router shares its engine with {len(others)} other "
                             f"router(s), whose pattern statistics use the same route columns: "
                             f"a new route cannot start fresh there without changing theirs")
        k = self.routes.index(name) if revive else len(self.routes)
        key = _initial_keys(self.seed, k + 1, self.micro.dim)[k]
        shrink = self.bank.params["prior_count"]
        if revive:
            self._fresh_route(k, key, shrink, cost)
            return k
        if self.bank.n_routes <= k:
            self.bank._grow_routes(k + 1)
            # the engine's file records how many routes its bank tracks
            self.engine.config = self.engine.config.replace(max_routes=k + 1)
        self._append_route(name, key, shrink, cost)
        return k

    def retire_route(self, name: str | int) -> None:
        """Stop choosing a route, from now on: route() never picks it, scores() gives it 0,
        and the learning policy gives it probability 0 (the routes left share the learning).

        The route keeps its index (a tombstone): scores() and Decision.probs keep their shape,
        stats() lists it under ``retired`` and leaves it out of the per-route fields, an
        ``allowed`` list naming it is read without it. Feedback on a decision made before
        (or an outcome naming it) is still learnt: its reward statistics record it and the
        rest learns as from any outcome, but the adapter gets no gradient from it (the
        learning policy's probability of it is 0). Its state is kept in save()/to_bytes().
        :meth:`add_route` with the same name brings it back, starting over. For a route down
        only for a while, pass ``allowed`` to route() instead.

        Raises ValueError for an unknown or already retired route, or the last route that can
        still be chosen; TypeError for a name that is neither str nor int. Nothing changes then.

        >>> import numpy as np, sona
        >>> router = sona.Router(["small", "medium", "large"], hidden_dim=8, seed=0)
        >>> router.retire_route("medium")
        >>> float(router.scores(np.ones(8, np.float32))[1])
        0.0
        """
        if not isinstance(name, (str, int, np.integer)) or isinstance(name, bool):
            raise TypeError(f"route must be a route name or index; got {name!r}")
        k = self.index(name)
        retired = self.retired
        if self.routes[k] in retired:
            raise ValueError(f"route {self.routes[k]!r} is retired already")
        if len(retired) + 1 == len(self.routes):
            raise ValueError(f"cannot retire {self.routes[k]!r}: it is the last route that can "
                             "be chosen")
        self._retire_route(k)

    # ------------------------------------------------------------------------ learning

    def learn(self, outcome: Outcome) -> None:
        """Learn from one outcome: a sona.Outcome from this router's Decision.outcome(), from a
        log of another policy (a static rule, another model, an earlier sona), or from another
        process.

        The learning step is a deterministic function of the router's state and the outcome:
        the same outcomes applied in the same order to routers in the same state give
        bit-identical states (same backend). feedback(decision, q) is exactly
        learn(decision.outcome(q)). The policy gradient is weighted by pi(route | x) / prob
        (importance correction for the logging policy; the weight times the advantage is
        clipped to +-adv_clip). An outcome with prob 1 (a deterministic logging policy) teaches
        only about the logged route: its reward statistics and its logit, never the routes
        that were not tried. Each decision is learnt from at most once (the ids of the last
        65536 decisions learnt from, by feedback() or learn(), are kept, in saved state too;
        outcomes without an id are not tracked).

        Raises ValueError for an outcome whose dimension or route does not match this router,
        or whose decision was already learnt from (here, by feedback() or by learn()); TypeError
        for something that is not an Outcome. Nothing changes then.

        >>> import numpy as np, sona
        >>> router = sona.Router(["small", "large"], hidden_dim=8, seed=0)
        >>> x = np.ones(8, np.float32)
        >>> router.learn(sona.Outcome(x, "large", prob=0.5, quality=1.0, cost=0.01))
        >>> router.feedbacks
        1
        """
        if not isinstance(outcome, Outcome):
            raise TypeError(f"learn() takes a sona.Outcome; got {type(outcome).__name__} "
                            f"(use feedback(decision, quality) for a Decision)")
        if outcome.dim != self.micro.dim:
            raise ValueError(f"outcome embedding has dimension {outcome.dim}; this router's is "
                             f"{self.micro.dim}")
        index = self.index(outcome.route)
        key = self._decision_key(outcome.decision_id)
        cost = float("nan") if outcome.cost is None else outcome.cost
        self._learn_raw(outcome.embedding, index, outcome.prob, outcome.quality, cost, key)

    def learn_many(self, outcomes) -> int:
        """learn() each outcome of an iterable in order; returns how many were learnt.

        Stops at the first bad outcome, raising as learn() does: the ones before it were learnt
        (each learning step is atomic), it and the rest were not."""
        n = 0
        for outcome in outcomes:
            self.learn(outcome)
            n += 1
        return n

    def fit(self, X, qualities, costs=None) -> None:
        """Warm start from a labelled set: every route's quality (and optionally cost) is known
        for each query, as in offline router training sets.

        Learns as if every route had been tried on every query, with no exploration cost: for
        each row i in order, for each route k, learn(Outcome(X[i], k, prob=1, qualities[i, k],
        costs[i, k])), except that the K outcomes of a row are one visit of its pattern (its
        statistics decay once per row, not once per outcome: a pattern remembers as many
        queries as online learning would). Online learning (route/feedback/learn) continues from
        there.

        Parameters: X (n, dim) embeddings; qualities (n, n_routes) in [0, 1]; costs (n,
        n_routes) >= 0, or None. Raises ValueError/TypeError for shapes or values that do not
        fit (checked for every row before anything is learnt).
        """
        K, d = len(self.routes), self.micro.dim
        X = np.asarray(X)
        if X.dtype.kind not in "fiu":
            raise TypeError(f"X must hold real numbers; got dtype {X.dtype}")
        if X.ndim != 2 or X.shape[1] != d:
            raise ValueError(f"X must have shape (n, {d}); got {X.shape}")
        with np.errstate(over="ignore"):
            X = np.ascontiguousarray(X, dtype=np.float32)
        if not (np.isfinite(X).all() and (np.abs(X) <= 1e6).all()):
            raise ValueError("X must be finite with |x_i| <= 1e6")
        Q = np.asarray(qualities, dtype=np.float64)
        if Q.shape != (X.shape[0], K):
            raise ValueError(f"qualities must have shape ({X.shape[0]}, {K}); got {Q.shape}")
        if not (np.isfinite(Q).all() and (Q >= 0).all() and (Q <= 1).all()):
            raise ValueError("qualities must be finite and in [0, 1]")
        C = None
        if costs is not None:
            C = np.asarray(costs, dtype=np.float64)
            if C.shape != Q.shape:
                raise ValueError(f"costs must have shape {Q.shape}; got {C.shape}")
            if not (np.isfinite(C).all() and (C >= 0).all()):
                raise ValueError("costs must be finite and >= 0")
        for i, x in enumerate(X):
            for k in range(K):
                cost = float("nan") if C is None else float(C[i, k])
                self._learn_raw(x, k, 1.0, float(Q[i, k]), cost, None, k == 0)

    def _make_outcome(self, decision, quality, cost, latency_ms) -> Outcome:
        """Decision.outcome(): the record of a decision of this router."""
        return Outcome._of_decision(decision.embedding, decision.route, float(decision.prob),
                                    quality, cost, latency_ms, decision.decision_id, time.time())

    def stats(self) -> dict:
        """A plain, JSON-serialisable snapshot of the router's state and configuration.

        Keys: ``routes``, ``hidden_dim``, ``decisions``, ``feedbacks``, ``n_patterns`` (patterns
        in the bank), ``max_patterns``, ``global_baseline`` (running mean reward across queries),
        ``reward_short`` / ``reward_long`` (the drift detector's fast and slow reward means),
        ``has_anchor`` (an EWC++ checkpoint exists), ``ewc_checkpoints`` (anchors taken),
        ``task_boundaries`` (times the fast reward mean fell below the slow one by more than
        ``ewc_margin``: inferred task switches, after which the previous anchor is kept until a
        checkpoint finds the reward stable again; also when ``novelty_short`` rose above
        ``novelty_long`` by ``ewc_novelty``), ``novelty_short`` / ``novelty_long`` (fast and
        slow shares of feedbacks on novel queries: none of the bank's patterns matched, or one
        created since the last checkpoint), ``ewc_tasks`` (past tasks in the EWC++ memory: each
        boundary with ``ewc_memory`` > 0 adds the task that ended at the last stable checkpoint,
        weighted by the novelty rise over ``ewc_novelty``, capped at 1; a weight of 0, a drop in
        reward on familiar queries only, adds nothing), ``backend``
        (``sona.get_backend()``, the kernels in use now), ``n_parameters`` (learned floats:
        adapters, keys, bias), ``seed`` and ``params`` (every hyper-parameter).

        ``retired``: the routes retired by :meth:`retire_route` (still in ``routes``, which
        lists every route by index). Per route that can be chosen (dicts keyed by route name,
        retired routes left out): ``route_decisions`` (decisions since this router
        was built or loaded), ``route_feedbacks``, ``route_quality`` (outcomes learnt and their
        mean quality over the last ``prior_window`` feedbacks: the traffic-wide statistics the
        prior uses; None before any), ``route_cost`` (cost per call, given or learnt; None while
        unknown); and ``exploration``, the share of recent decisions (moving average over about
        1000) that took another route than the greedy one.

        >>> import json, sona
        >>> s = sona.Router(["a", "b"], hidden_dim=8).stats()
        >>> s["decisions"], s["n_patterns"], bool(json.dumps(s))
        (0, 0, True)
        """
        c = self._counters()
        retired = self.retired
        return {
            "routes": list(self.routes),
            "hidden_dim": int(self.micro.dim),
            "decisions": int(self.decisions),
            "feedbacks": int(self.feedbacks),
            "n_patterns": int(self.bank.n_patterns),
            "max_patterns": int(self.bank.capacity),
            "global_baseline": float(c["global_baseline"]),
            "reward_short": float(c["reward_short"]),
            "reward_long": float(c["reward_long"]),
            "has_anchor": bool(c["has_anchor"]),
            "ewc_checkpoints": int(c["checkpoints"]),
            "task_boundaries": int(c["task_boundaries"]),
            "novelty_short": float(c["novelty_short"]),
            "novelty_long": float(c["novelty_long"]),
            "ewc_tasks": int(c["tasks"]),
            "backend": get_backend(),
            "n_parameters": int(self.n_parameters),
            "seed": int(self.seed),
            "params": dict(self._params),
            "retired": list(retired),
            "route_decisions": {r: int(n) for r, n in zip(self.routes, self.route_decisions)
                                if r not in retired},
            "route_feedbacks": {r: float(n) for r, n in zip(self.routes, self.global_n)
                                if r not in retired},
            "route_quality": {r: float(s / n) if n > 0 else None for r, s, n in
                              zip(self.routes, self.global_s, self.global_n) if r not in retired},
            "route_cost": {r: float(c) if w > 0 else None for r, c, w in
                           zip(self.routes, self.route_cost, self.cost_n) if r not in retired},
            "exploration": float(self.exploration),
        }

    # ------------------------------------------------------------------------ state files

    def _state_snapshot(self) -> tuple[dict, dict, int, int, int, dict, list]:
        """(arrays, counters, decisions, feedbacks, n_patterns, params, learnt decision ids),
        copied in one stretch
        that holds the GIL (sona._core._snapshot): a route, feedback or set_params in another
        thread lands wholly before or wholly after it."""
        live = {
            "micro.A": self.micro.A, "micro.B": self.micro.B,
            "base.A": self.base.A, "base.B": self.base.B,
        }  # fmt: skip
        for name in _POLICY_ARRAYS:
            live[name] = getattr(self, name)
        for name in _ROUTER_BANK_ARRAYS:
            live["bank." + name] = getattr(self.bank, name)
        arrays, scalars = _snapshot(live, (
            self._counters, partial(getattr, self, "decisions"),
            partial(getattr, self, "feedbacks"), partial(getattr, self.bank, "n_patterns"),
            partial(getattr, self, "_params"), self._learnt_ids))
        K = len(self.routes)
        for name in self.bank.ROUTE_ARRAYS:  # an engine's bank may track more routes
            arrays["bank." + name] = arrays["bank." + name][:, :K]
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
        return (arrays, *scalars)

    def save(self, path: PathLike) -> None:
        """Write the router's complete learning state to ``path`` (a safetensors file), atomically.

        A router loaded from the file makes exactly the decisions this one would make next, and
        learns identically from the same feedback (same backend: the avx2 and scalar kernels
        round differently). The file (see :mod:`sona.state`: kind ``"router"``, format version,
        SHA-256 checksum) holds these float32 arrays:

        ``micro.A`` (micro_rank, dim), ``micro.B`` (dim, micro_rank), ``base.A`` (base_rank,
        dim), ``base.B`` (dim, base_rank), ``keys`` (n_routes, dim), ``bias`` (n_routes,),
        ``rms`` (2 micro_rank + 2 base_rank + n_routes + 1,: RMSprop's second moment per weight
        row, the bias one row), ``fisher``, ``anchor``, ``fisher_ckpt`` (the Fisher when the
        anchor was taken), ``omega``, ``omega_theta`` (the memory of past tasks) (n_parameters,:
        EWC++ state), ``mu`` (dim,: running query mean), ``global_n``, ``global_s``,
        ``global_q`` (n_routes,: traffic-wide decayed count, reward sum and squared-reward sum
        per route), ``route_cost``, ``cost_n`` (n_routes,: cost per call and the weight of that
        estimate), ``shrink`` (n_routes,: each pattern's pseudo-count of traffic-wide evidence
        per route, estimated by empirical Bayes), and the whole pattern bank, all
        ``max_patterns`` rows (rows past ``n_patterns`` included, so the file is exact whatever
        they hold):
        ``bank.centroid``, ``bank.centroid_sum`` (max_patterns, dim), ``bank.hits``,
        ``bank.baseline`` (max_patterns,), ``bank.route_n``, ``bank.route_s``, ``bank.route_cn``,
        ``bank.route_c`` (max_patterns, n_routes: per pattern and route, decayed counts and sums
        of outcomes, then of the costs reported with them);

        and JSON metadata: ``router_state_version``, ``sona_version``, ``routes``, ``hidden_dim``,
        ``seed``, ``params`` (every hyper-parameter of sona.params, current values: set_params
        changes included), ``counters`` (n_seen, t, global_baseline,
        reward_short, reward_long, fisher_max, has_anchor, checkpoints, task_boundaries,
        drifting, omega_max, tasks, novelty_short, novelty_long, ckpt_patterns, and the PCG32
        generator's rng_state and rng_inc), ``decisions``, ``feedbacks``, ``n_patterns``,
        ``retired`` (routes retired by retire_route: ``routes`` lists every route by index,
        added ones at the end, retired ones included), ``learnt`` (the ids of the last
        decisions learnt from, by feedback() or learn(), oldest first, at most 65536: a loaded
        router refuses their outcomes as a second learning). Files of versions 1 to 5 load with
        no route retired, files of versions 1 to 6 with no decision id learnt, files of versions
        1 to 8 with no per-pattern cost. Files
        of router state versions 1 and 2 (no task memory) load with ``ewc_memory`` 0 and an empty
        memory; files of versions 1 to 3 load with ``ewc_novelty`` 0 (boundaries from the reward
        alone, every task remembered fully: how they were written); a parameter newer than a
        file loads at the value its writer behaved by (``sona.params.implied_params``).

        Not saved: decisions still waiting for feedback (a Decision belongs to the router that
        made it; the loaded router refuses it), and gradients accumulated on ``micro``/``base``
        through ``accumulate_gradient`` but not yet applied. Safe while other threads route and
        learn: the state is copied in one step that they cannot interleave, then written (the
        checksum covers exactly what is written). A router on a shared engine saves the columns
        of its own routes (the engine's bank may track more).

        Raises OSError when the file system refuses (e.g. the directory does not exist); the
        previous file at ``path``, if any, is then untouched (temp file + fsync + rename).

        >>> import os, tempfile, numpy as np, sona
        >>> router = sona.Router(["small", "large"], hidden_dim=8, seed=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "router.sona")
        >>> router.save(path)
        >>> x = np.ones(8, np.float32)
        >>> bool(np.array_equal(sona.Router.load(path).scores(x), router.scores(x)))
        True
        """
        write_state(path, *self._state(), "router")

    def _state(self) -> tuple[dict, dict]:
        """(arrays, metadata) of the state file: what save() writes and to_bytes() returns."""
        from . import __version__

        arrays, counters, decisions, feedbacks, n_patterns, params, learnt = (
            self._state_snapshot())
        meta = {
            "router_state_version": ROUTER_STATE_VERSION,
            "sona_version": __version__,
            "routes": list(self.routes),
            "hidden_dim": int(self.micro.dim),
            "seed": int(self.seed),
            "params": dict(params),
            "counters": counters,
            "decisions": int(decisions),
            "feedbacks": int(feedbacks),
            "n_patterns": int(n_patterns),
            "retired": list(self.retired),
            "learnt": learnt,
        }
        return arrays, meta

    def to_bytes(self) -> bytes:
        """The router's complete learning state as bytes: exactly the file :meth:`save` writes.

        For shipping a router to another process or keeping it in a database;
        :meth:`from_bytes` restores it (pickling uses the same pair). Equal states give equal
        bytes. What is and is not included is described in :meth:`save`.

        >>> import numpy as np, sona
        >>> router = sona.Router(["small", "large"], hidden_dim=8, seed=0)
        >>> copy = sona.Router.from_bytes(router.to_bytes())
        >>> copy.to_bytes() == router.to_bytes()
        True
        """
        return encode_state(*self._state(), "router")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Router:
        """A router restored from :meth:`to_bytes` (or a state file's contents).

        Checked exactly as :meth:`load` checks a file, and as strictly.

        Raises
        ------
        TypeError : ``data`` is not bytes-like.
        StateFileError : truncated, corrupted, foreign or newer bytes; an engine's state;
            inconsistent or invalid contents. No router is returned.

        >>> import sona
        >>> data = sona.Router(["a", "b"], hidden_dim=8, seed=1).to_bytes()
        >>> sona.Router.from_bytes(data).routes
        ('a', 'b')
        """
        arrays, meta = decode_state(data, kind="router", source="from bytes")
        return cls._from_state(arrays, meta, "from bytes")

    def __reduce__(self) -> tuple:
        # The state file is the one serialised form: pickle carries its bytes.
        return (type(self).from_bytes, (self.to_bytes(),))

    @classmethod
    def load(cls, path: PathLike) -> Router:
        """A router restored from a file written by :meth:`save`, ready to route and learn.

        Everything is checked before a router is returned: the container (checksum, format
        version, kind ``"router"``), the metadata (exactly the keys save() writes, with valid
        types and values), and every array (name set, float32, shape consistent with the
        metadata, finite).

        Raises
        ------
        FileNotFoundError : no file at ``path``.
        StateFileError : truncated, corrupted, foreign or newer file; an engine (or other
            non-router) state file; inconsistent array shapes; unknown or missing metadata
            keys; invalid values. No router is returned, partially built or otherwise.
        """
        arrays, meta = read_state(path, kind="router")
        return cls._from_state(arrays, meta, f"file {os.fspath(path)!r}")

    @classmethod
    def _from_state(cls, arrays: dict, meta: Any, src: str) -> Router:
        """The router held by decoded state (arrays, meta): every check of load()/from_bytes().

        ``src`` names the origin in error messages (a file, or "from bytes").
        """

        fail = unusable("router", src)

        _upgrade(meta, arrays)
        _upgrade_lists(meta)
        _check_meta(fail, meta)
        routes, d, params = meta["routes"], meta["hidden_dim"], meta["params"]
        K = len(routes)
        mr, br, cap = params["micro_rank"], params["base_rank"], params["max_patterns"]
        for key in ("micro_rank", "base_rank", "max_patterns"):
            if not _is_int(params[key]) or params[key] < 1:
                fail(f"params[{key!r}] must be an integer >= 1, got {params[key]!r}")
        expected = {
            "micro.A": (mr, d), "micro.B": (d, mr), "base.A": (br, d), "base.B": (d, br),
            "keys": (K, d), "bias": (K,), "mu": (d,),
            **{name: (K,) for name in _V5_ARRAYS},
            "bank.centroid": (cap, d), "bank.centroid_sum": (cap, d), "bank.hits": (cap,),
            "bank.route_n": (cap, K), "bank.route_s": (cap, K), "bank.baseline": (cap,),
            "bank.route_cn": (cap, K), "bank.route_c": (cap, K),
        }  # fmt: skip
        per_weight = ("fisher", "anchor") + _V3_ARRAYS
        names = set(expected) | {"rms", *per_weight}
        unknown, missing = sorted(set(arrays) - names), sorted(names - set(arrays))
        if unknown or missing:
            fail(f"arrays do not match this sona's router layout: unknown {unknown}, "
                 f"missing {missing}")
        for name, a in sorted(arrays.items()):
            if a.dtype != np.float32:
                fail(f"array {name!r} must be float32, got {a.dtype}")
            if name in expected and a.shape != expected[name]:
                fail(f"array {name!r} has shape {a.shape}, but the metadata (hidden_dim={d}, "
                     f"{K} routes, micro_rank={mr}, base_rank={br}, max_patterns={cap}) needs "
                     f"{expected[name]}")
            if not np.isfinite(a).all():
                fail(f"array {name!r} contains NaN or Inf")
        for name in _V5_ARRAYS:
            if (arrays[name] < 0).any():
                fail(f"array {name!r} holds a negative value: counts, sums and costs are >= 0")
        if not (arrays["shrink"] > 0).all():
            fail("array 'shrink' must hold pseudo-counts > 0")
        for name in ("global_s", "global_q"):
            if (arrays[name] > arrays["global_n"] * (1 + 1e-6) + 1e-6).any():
                fail(f"array {name!r} exceeds 'global_n': a sum of rewards in [0, 1] above "
                     f"its count")
        if meta["n_patterns"] > cap:
            fail(f"n_patterns={meta['n_patterns']} exceeds max_patterns={cap}")
        counters = meta["counters"]
        if counters["ckpt_patterns"] > cap:
            fail(f"counters['ckpt_patterns']={counters['ckpt_patterns']} exceeds "
                 f"max_patterns={cap}")
        for key in ("novelty_short", "novelty_long"):
            if not 0 <= counters[key] <= 1:
                fail(f"counters[{key!r}] must be a share in [0, 1], got {counters[key]!r}")
        _check_loaded_values(fail, meta, arrays)

        # Build a fresh router (sizes already match the arrays, so allocation is bounded by the
        # file), check what only it knows, then fill it. It is returned only if all succeeded.
        seed, hp = meta["seed"], dict(params)
        explore = hp.pop("explore")
        try:
            router = cls(routes, d, explore=explore, seed=seed, **hp)
        except (TypeError, ValueError, OverflowError) as exc:
            fail(f"invalid router configuration: {exc}")
        n, n_rows = router.n_parameters, router.rms.size
        if meta["router_state_version"] == 1 and arrays["rms"].shape == (n,):
            arrays["rms"] = _rms_rows_from_v1(arrays["rms"], n_rows, d)
        for name, size, what in (("rms", n_rows, "weight rows"),
                                 *((w, n, "parameters") for w in per_weight)):
            if arrays[name].shape != (size,):
                fail(f"array {name!r} has shape {arrays[name].shape}, but a router with these "
                     f"dimensions has {size} {what}: needs ({size},)")
        try:
            router.micro.set_weights(arrays["micro.A"], arrays["micro.B"])
            router.base.set_weights(arrays["base.A"], arrays["base.B"])
            for name in _POLICY_ARRAYS:
                router._assign(name, arrays[name])
            for name in _ROUTER_BANK_ARRAYS:
                getattr(router.bank, name)[...] = arrays["bank." + name]
            router.bank._set_n_patterns(meta["n_patterns"])
            router._set_counters(dict(meta["counters"]))
            for name in meta["retired"]:
                router._retire_route(routes.index(name))
            router._set_learnt(meta["learnt"])
        except (TypeError, ValueError, OverflowError) as exc:  # pre-checked; belt and braces
            fail(f"inconsistent state: {exc}")
        router._set_totals(meta["decisions"], meta["feedbacks"])
        return router

    def __repr__(self) -> str:
        return (f"Router(routes={list(self.routes)}, hidden_dim={self.micro.dim}, "
                f"decisions={self.decisions}, feedbacks={self.feedbacks})")
