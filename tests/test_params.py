"""sona.params: the one table of the router's hyper-parameters, and what comes from it through the
public API: validation, Router.params (read-only), Router.set_params (live at once, atomic,
saved), the README's table, `sona params`, the numpy reference's defaults."""

import json
import pathlib
import re

import numpy as np
import pytest
from helpers import learned_bytes
from policy_reference import DEFAULTS as REFERENCE_DEFAULTS

import sona
import sona.params
from sona.cli import main
from sona.params import PARAMS, ROUTER_PARAMS, check_params, defaults, implied_params
from sona.router import POLICY_DEFAULTS, ROUTER_STATE_VERSION
from sona.synthetic import RoutingTask

ROUTES = ["r0", "r1", "r2", "r3"]
D = 32
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"

# A valid value other than the default for every live parameter, chosen so that it changes what
# the router learns or decides on _stream() (ewc_memory, ewc_margin and ewc_novelty act at task
# boundaries: _BASE's faster reward means and small margin make them happen on a short stream;
# with seed 2 one of them also folds a task into the memory).
_OTHER = {
    "use_micro": False, "use_base": False, "tau": 0.5, "learn_keys": False, "learn_bias": False,
    "unit_keys": False, "mean_window": 10, "use_prior": False, "tau_prior": 0.05,
    "ts_scale": 2.0, "prior_window": 50.0, "explore": 0.5, "adv_clip": 0.05,
    "global_rate": 0.2, "lr": 0.01, "rms_decay": 0.9, "rms_eps": 1e-2, "weight_clip": 0.01,
    "ewc": False, "ewc_alpha": 0.2, "ewc_lambda": 50.0, "ewc_margin": 0.3, "ewc_every": 7,
    "fisher_every": 1, "ewc_memory": 20.0, "ewc_novelty": 0.05, "reward_short_rate": 0.3,
    "reward_long_rate": 0.05, "novelty_short_rate": 0.5, "novelty_long_rate": 0.1,
}  # fmt: skip
_BASE = {"ewc_every": 20, "ewc_margin": 0.02, "reward_short_rate": 0.1, "reward_long_rate": 0.02}


def _stream(router, n=240, seed=0):
    """Route and learn n queries of a task whose best routes change halfway (task boundaries),
    then new clusters (novelty)."""
    task = RoutingTask(dim=D, n_clusters=3, n_routes=len(ROUTES), seed=7)
    rng = np.random.default_rng(seed)
    for half in range(2):
        if half:
            task.change_best_routes(clusters=[0, 1, 2])
            task.add_clusters(2)
        X, clusters = task.sample(n // 2, rng)
        for x, c in zip(X, clusters):
            d = router.route(x)
            router.feedback(d, float(task.reward(c, d.index, rng)))


def _learnt(router):
    """Everything the router learnt or decided, but not its parameters (nor what a loaded
    router counts afresh: its own decisions per route and their exploration share)."""
    stats = {k: v for k, v in router.stats().items()
             if k not in ("params", "backend", "route_decisions", "exploration")}
    arrays = [router.micro.A, router.micro.B, router.base.A, router.base.B, router.keys,
              router.bias, router.rms, router.fisher, router.anchor, router.omega, router.mu,
              router.global_n, router.global_s, router.bank.centroid, router.bank.route_n]
    return json.dumps(stats, sort_keys=True), [np.array(a) for a in arrays]


def _same(a, b):
    return a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


# ------------------------------------------------------------------------------- the table

def test_table_is_consistent():
    assert [p.name for p in ROUTER_PARAMS] == list(PARAMS) and len(PARAMS) == len(ROUTER_PARAMS)
    assert POLICY_DEFAULTS == defaults() == check_params({})
    for p in ROUTER_PARAMS:
        assert p.kind in (bool, int, float) and isinstance(p.default, p.kind), p.name
        assert p.check(p.default) == p.default, p.name
        assert (p.bounds is None) == (p.kind is bool), p.name
        assert p.doc and p.part, p.name
        assert 1 <= p.since <= ROUTER_STATE_VERSION, p.name
        if p.implied is not None:
            assert p.check(p.implied) == p.implied, p.name
    assert set(_OTHER) == {p.name for p in ROUTER_PARAMS if p.live}


def test_reference_defaults_are_the_tables():
    assert REFERENCE_DEFAULTS == defaults()


def test_implied_params_of_older_files():
    assert implied_params(ROUTER_STATE_VERSION) == {}
    assert implied_params(5) == {**{name: PARAMS[name].default for name in (
        "reward_short_rate", "reward_long_rate", "novelty_short_rate", "novelty_long_rate")},
        "centre_patterns": False}
    assert implied_params(2)["ewc_memory"] == 0.0 and implied_params(3)["ewc_novelty"] == 0.0
    assert implied_params(4)["prior_window"] == PARAMS["prior_window"].default
    assert implied_params(7) == {"centre_patterns": False}


@pytest.mark.parametrize("name, value, exc, match", [
    ("reward_short_rate", 0.0, ValueError, r"reward_short_rate must be in \(0, 1\]; got 0.0"),
    ("novelty_long_rate", 1.5, ValueError, r"novelty_long_rate must be in \(0, 1\]; got 1.5"),
    ("rms_decay", 1.0, ValueError, r"rms_decay must be in \[0, 1\); got 1.0"),
    ("lr", float("inf"), ValueError, r"lr must be a finite number; got inf"),
    ("lr", "0.1", ValueError, r"lr must be a finite number; got '0.1'"),
    ("tau", 10**400, ValueError, r"tau must be in \[1e-06, 1e\+06\]"),
    ("base_rank", 65, ValueError, r"base_rank must be an integer in \[1, 64\]; got 65"),
    ("mean_window", 2.0, ValueError, r"mean_window must be an integer in \[1, 4294967295\]"),
    ("use_prior", 0, TypeError, r"use_prior must be a bool; got 0"),
])
def test_bad_values_raise_naming_the_parameter(name, value, exc, match):
    with pytest.raises(exc, match=match):
        sona.Router(ROUTES, hidden_dim=D, **{name: value})
    router = sona.Router(ROUTES, hidden_dim=D)
    with pytest.raises(exc, match=match):
        router.set_params(**{name: value})


def test_numpy_values_are_accepted_and_stored_plain():
    router = sona.Router(ROUTES, hidden_dim=D, tau=np.float32(0.25), ewc_every=np.int64(30),
                         ewc=np.bool_(False))
    assert router.params["tau"] == 0.25 and type(router.params["tau"]) is float
    assert type(router.params["ewc_every"]) is int and router.params["ewc"] is False


# ------------------------------------------------------------------------- Router.params

def test_params_is_read_only():
    router = sona.Router(ROUTES, hidden_dim=D, seed=0)
    with pytest.raises(TypeError):
        router.params["explore"] = 1.0
    with pytest.raises(TypeError):
        del router.params["explore"]
    with pytest.raises(AttributeError):
        router.params = {"explore": 1.0}
    copy = router.stats()["params"]
    copy["explore"] = 1.0  # a snapshot: editing it changes nothing
    assert router.params["explore"] == 0.0 == router.stats()["params"]["explore"]


# --------------------------------------------------------------------- Router.set_params

def test_explore_applies_at_once():
    """A router that learnt to prefer one route routes uniformly from the very next decision
    after set_params(explore=1.0), and greedily again after explore=0."""
    router = sona.Router(ROUTES, hidden_dim=D, seed=0)
    x = np.random.default_rng(0).standard_normal((50, D)).astype(np.float32)
    router.fit(x, np.tile([1.0, 0.0, 0.0, 0.0], (50, 1)))
    before = [router.route(v) for v in x]
    assert np.mean([d.index == 0 for d in before]) > 0.9
    router.set_params(explore=1.0)
    after = [router.route(v) for v in x]
    assert all(np.array_equal(d.probs, np.full(4, 0.25, np.float32)) for d in after)
    assert len({d.index for d in after}) == 4
    router.set_params(explore=0.0)
    assert np.mean([router.route(v).index == 0 for v in x]) > 0.9


def test_tau_changes_scores_at_once():
    router = sona.Router(ROUTES, hidden_dim=D, seed=0, use_prior=False)
    x = np.random.default_rng(1).standard_normal((20, D)).astype(np.float32)
    router.fit(x, np.tile([1.0, 0.2, 0.0, 0.0], (20, 1)))
    sharp = router.scores(x[0])
    router.set_params(tau=100.0)
    flat = router.scores(x[0])
    assert flat.max() - flat.min() < 0.2 * (sharp.max() - sharp.min())


@pytest.mark.parametrize("name", sorted(_OTHER))
def test_every_live_parameter_acts_and_set_params_equals_construction(name, backend):
    """For each live parameter: a router built with a value and one given it by set_params
    before any traffic learn and decide bit for bit alike, and unlike the default."""
    built = sona.Router(ROUTES, hidden_dim=D, seed=3, **{**_BASE, name: _OTHER[name]})
    changed = sona.Router(ROUTES, hidden_dim=D, seed=3, **_BASE)
    default = sona.Router(ROUTES, hidden_dim=D, seed=3, **_BASE)
    changed.set_params(**{name: _OTHER[name]})
    assert changed.params == built.params != default.params
    for router in (built, changed, default):
        _stream(router, seed=2)
    assert default.stats()["ewc_tasks"] >= 1  # the stream reaches the task memory
    assert _same(_learnt(built), _learnt(changed))
    assert not _same(_learnt(built), _learnt(default))
    assert learned_bytes(built) == learned_bytes(changed)


def test_set_params_midway_equals_the_same_change_in_a_copy():
    """A change on a running router: the original and a copy restored from its bytes, changed
    alike, go on identically; the decision routed before the change learns as a logged outcome
    (prepared again under the new parameters)."""
    router = sona.Router(ROUTES, hidden_dim=D, seed=4)
    _stream(router, n=100)
    copy = sona.Router.from_bytes(router.to_bytes())
    x = np.random.default_rng(9).standard_normal(D).astype(np.float32)
    pending = router.route(x)
    twin = copy.route(x)
    assert pending.index == twin.index and pending.prob == twin.prob
    router.set_params(tau=0.6, lr=0.02)
    copy.set_params(tau=0.6, lr=0.02)
    router.feedback(pending, 0.8)
    copy.learn(sona.Outcome(x, twin.route, prob=twin.prob, quality=0.8))
    assert _same(_learnt(router), _learnt(copy))
    unchanged = sona.Router.from_bytes(copy.to_bytes())
    unchanged.set_params(tau=0.15, lr=1e-3)
    y = np.random.default_rng(10).standard_normal(D).astype(np.float32)
    assert not np.array_equal(unchanged.scores(y), router.scores(y))


def test_fixed_parameters_refuse_a_new_value():
    router = sona.Router(ROUTES, hidden_dim=D, seed=0)
    state = router.to_bytes()
    for name in ("micro_rank", "base_rank", "max_patterns", "micro_scale", "new_pattern_cos",
                 "prior_count"):
        other = 1 if name == "micro_rank" else PARAMS[name].kind(PARAMS[name].default * 2)
        if name == "new_pattern_cos":
            other = 0.5
        with pytest.raises(ValueError, match=rf"\['{name}'\] are fixed after construction"):
            router.set_params(**{name: other, "explore": 0.3})
    assert router.to_bytes() == state and router.params["explore"] == 0.0
    router.set_params(base_rank=8, max_patterns=100, explore=0.3)  # the current value: fine
    assert router.params["explore"] == 0.3


def test_bad_set_params_changes_nothing():
    router = sona.Router(ROUTES, hidden_dim=D, seed=0)
    _stream(router, n=40)
    state, params = router.to_bytes(), dict(router.params)
    for bad, exc in (({"explore": 0.5, "tau": -1.0}, ValueError),
                     ({"lr": 0.01, "ewc": "yes"}, TypeError),
                     ({"lr": 0.01, "learning_rate": 0.1}, ValueError)):
        with pytest.raises(exc):
            router.set_params(**bad)
        assert router.to_bytes() == state and dict(router.params) == params
    x = np.ones(D, np.float32)
    copy = sona.Router.from_bytes(state)
    assert router.route(x).index == copy.route(x).index  # same RNG, same parameters


def test_set_params_survives_save_and_load(tmp_path):
    router = sona.Router(ROUTES, hidden_dim=D, seed=5)
    _stream(router, n=60)
    router.set_params(explore=0.2, tau=0.3, reward_short_rate=0.05, ewc_lambda=7.0)
    router.save(tmp_path / "r.sona")
    loaded = sona.Router.load(tmp_path / "r.sona")
    assert loaded.params == router.params and loaded.params["reward_short_rate"] == 0.05
    for r in (router, loaded):
        _stream(r, n=40, seed=2)
    assert learned_bytes(loaded) == learned_bytes(router)


# ------------------------------------------------------------------- docs from the table

@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_readme_table_is_the_generated_one():
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- params table:[^\n]*-->\n(.*?)<!-- end of params table -->", text,
                      flags=re.S)
    assert found, "README.md lost its parameter table markers"
    assert found.group(1) == sona.params.markdown_table()


def test_cli_prints_the_table(capsys):
    assert main(["params", "--markdown"]) == 0
    assert capsys.readouterr().out == sona.params.markdown_table()
    assert main(["params", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(PARAMS)
    assert {r["name"]: r["default"] for r in rows} == defaults()
    assert main(["params"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(PARAMS)
    assert all(("live" if PARAMS[line.split()[0]].live else "fixed") in line for line in lines)

