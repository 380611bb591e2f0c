"""Router.save / Router.load: exact round trips (same decisions, same continued learning) on every
backend, every malformed file refused with StateFileError, atomic saves, and Router.stats()."""

import copy
import json
import os
import pickle

import numpy as np
import pytest
from helpers import learned_bytes

import sona
import sona.state
from sona.params import RAW_NEW_PATTERN_COS
from sona.router import POLICY_DEFAULTS, ROUTER_STATE_VERSION
from sona.state import StateFileError, read_state, write_state
from sona.synthetic import RoutingTask

D, K = 64, 4
ROUTES = ["small", "medium", "large", "xl"]
# ewc_every small so the EWC++ anchor/Fisher state is non-trivial; explore so the RNG matters.
HP = {"ewc_every": 100, "explore": 0.05}


def _arrays(r):
    """Every piece of learned state, by name."""
    out = {
        "micro.A": r.micro.A, "micro.B": r.micro.B, "base.A": r.base.A, "base.B": r.base.B,
    }  # fmt: skip
    for name in ("keys", "bias", "rms", "fisher", "anchor", "mu"):
        out[name] = getattr(r, name)
    for name in ("centroid", "centroid_sum", "hits", "route_n", "route_s", "route_cn", "route_c",
                 "baseline"):
        out["bank." + name] = getattr(r.bank, name)
    return out


def _assert_same_state(a, b):
    xa, xb = _arrays(a), _arrays(b)
    for name in xa:
        assert np.array_equal(xa[name], xb[name]), name
    assert a._counters() == b._counters()
    assert a.bank.n_patterns == b.bank.n_patterns
    assert (a.decisions, a.feedbacks) == (b.decisions, b.feedbacks)


def _cost(cluster, route):
    """A call's cost: a price per route times a length per kind of query."""
    return 1e-3 * (route + 1) * (1 + int(cluster) % 3)


def _train(router, task, n, seed):
    rng = np.random.default_rng(seed)
    X, clusters = task.sample(n, rng)
    for x, c in zip(X, clusters):
        d = router.route(x)
        router.learn(d.outcome(float(task.reward(c, d.index, rng)), cost=_cost(c, d.index)))


@pytest.fixture(scope="module")
def task():
    return RoutingTask(dim=D, n_clusters=6, n_routes=K, seed=21)


@pytest.fixture
def trained(backend, task):
    router = sona.Router(ROUTES, hidden_dim=D, seed=5, **HP)
    _train(router, task, 600, seed=1)
    return router


@pytest.fixture
def saved(trained, tmp_path):
    path = tmp_path / "router.sona"
    trained.save(path)
    return path


def test_round_trip_same_decisions_and_same_learning(trained, saved, task):
    loaded = sona.Router.load(saved)
    assert type(loaded) is sona.Router
    assert loaded.routes == trained.routes and loaded.params == trained.params
    assert trained.bank.n_patterns > 0 and trained._counters()["has_anchor"]
    _assert_same_state(trained, loaded)

    _assert_same_future(trained, loaded, task)


def _assert_same_future(a, b, task, n=400):
    """a and b score alike now, and after routing and learning the same n queries alike."""
    held_out, _ = task.sample(200, np.random.default_rng(99))
    for x in held_out:
        assert np.array_equal(a.scores(x), b.scores(x))
        assert np.array_equal(a.scores(x, cost_weight=30.0), b.scores(x, cost_weight=30.0))

    # Next N decisions: same routes, same probabilities (the Thompson/explore RNG continues);
    # identical feedback then gives identical weights and statistics.
    rng = np.random.default_rng(7)
    X, clusters = task.sample(n, rng)
    for i, (x, c) in enumerate(zip(X, clusters)):
        w = 30.0 * (i % 2)  # every other decision trades quality against cost
        da, db = a.route(x, cost_weight=w), b.route(x, cost_weight=w)
        assert da.index == db.index
        assert np.array_equal(da.probs, db.probs)
        q = float(task.reward(c, da.index, rng))
        a.learn(da.outcome(q, cost=_cost(c, da.index)))
        b.learn(db.outcome(q, cost=_cost(c, db.index)))
    _assert_same_state(a, b)
    for x in held_out[:50]:
        assert np.array_equal(a.scores(x, cost_weight=30.0), b.scores(x, cost_weight=30.0))


def test_fresh_router_round_trip(backend, tmp_path):
    r = sona.Router(["a", "b"], hidden_dim=8, seed=3)
    r.save(tmp_path / "r.sona")
    loaded = sona.Router.load(tmp_path / "r.sona")
    _assert_same_state(r, loaded)
    assert loaded.decisions == 0 and loaded.bank.n_patterns == 0


def test_save_is_deterministic_and_load_save_is_byte_identical(trained, saved, tmp_path):
    trained.save(tmp_path / "again.sona")
    sona.Router.load(saved).save(tmp_path / "reloaded.sona")
    data = saved.read_bytes()
    assert (tmp_path / "again.sona").read_bytes() == data
    assert (tmp_path / "reloaded.sona").read_bytes() == data


def test_file_layout(trained, saved):
    arrays, meta = read_state(saved, kind="router")
    n, cap = trained.n_parameters, trained.params["max_patterns"]
    assert {k: a.shape for k, a in arrays.items()} == {
        "micro.A": (2, D), "micro.B": (D, 2), "base.A": (8, D), "base.B": (D, 8),
        "keys": (K, D), "bias": (K,), "rms": (2 * 2 + 2 * 8 + K + 1,), "fisher": (n,),
        "anchor": (n,), "fisher_ckpt": (n,), "omega": (n,), "omega_theta": (n,), "mu": (D,),
        "bank.centroid": (cap, D), "bank.centroid_sum": (cap, D), "bank.hits": (cap,),
        "bank.route_n": (cap, K), "bank.route_s": (cap, K), "bank.baseline": (cap,),
        "bank.route_cn": (cap, K), "bank.route_c": (cap, K),
        "global_n": (K,), "global_s": (K,), "global_q": (K,), "route_cost": (K,),
        "cost_n": (K,), "shrink": (K,),
    }  # fmt: skip
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert meta["routes"] == ROUTES and meta["hidden_dim"] == D and meta["seed"] == 5
    assert meta["sona_version"] == sona.__version__ and meta["router_state_version"] == 9
    assert meta["params"] == {**POLICY_DEFAULTS, **HP}
    assert meta["counters"] == trained._counters()
    assert (meta["decisions"], meta["feedbacks"]) == (600, 600)
    assert meta["n_patterns"] == trained.bank.n_patterns
    assert meta["retired"] == []
    assert meta["learnt"] == trained._learnt_ids() and len(meta["learnt"]) == 600


def test_counters_survive_load(trained, saved, task):
    loaded = sona.Router.load(saved)
    assert (loaded.decisions, loaded.feedbacks) == (600, 600)
    x = task.sample(1, np.random.default_rng(0))[0][0]
    d = loaded.route(x)
    assert (loaded.decisions, loaded.feedbacks) == (601, 600)
    loaded.feedback(d, 0.5)
    assert (loaded.decisions, loaded.feedbacks) == (601, 601)
    assert "decisions=601" in repr(loaded)


def test_pending_decisions_are_not_saved(trained, tmp_path, task):
    x = task.sample(1, np.random.default_rng(0))[0][0]
    pending = trained.route(x)
    trained.save(tmp_path / "r.sona")
    loaded = sona.Router.load(tmp_path / "r.sona")
    with pytest.raises(ValueError, match="another router"):
        loaded.feedback(pending, 1.0)
    trained.feedback(pending, 1.0)  # still valid on the router that made it


# ------------------------------------------------------------------------------ bad files


def _rewrite(src, dst, arrays=None, meta=None, kind="router"):
    """Write a checksum-valid router file whose contents were edited (what a buggy or hostile
    writer could produce: the container is fine, the router layout is not)."""
    a0, m0 = read_state(src)
    if arrays:
        a0 = arrays(a0) or a0
    if meta:
        m0 = meta(m0) or m0
    write_state(dst, a0, m0, kind)
    return dst


def _set(mapping, key, value):
    mapping[key] = value


def _pop(mapping, key):
    del mapping[key]


def _bad_cases():
    f32 = np.float32
    return {
        "keys wider": (lambda a: _set(a, "keys", np.zeros((K, D + 1), f32)), None,
                       r"'keys' has shape \(4, 65\).*needs \(4, 64\)"),
        "micro.A rank": (lambda a: _set(a, "micro.A", np.zeros((3, D), f32)), None,
                         r"'micro.A' has shape"),
        "bank rows": (lambda a: _set(a, "bank.hits", np.zeros(101, f32)), None,
                      r"'bank.hits' has shape \(101,\)"),
        "route stats": (lambda a: _set(a, "bank.route_s", np.zeros((100, K + 1), f32)), None,
                        r"'bank.route_s' has shape"),
        "route costs": (lambda a: _set(a, "bank.route_c", np.zeros((100, K - 1), f32)), None,
                        r"'bank.route_c' has shape"),
        "negative cost": (lambda a: a["bank.route_c"].__setitem__((0, 0), -1.0), None,
                          r"'bank.route_c'"),
        "costs without outcomes": (lambda a: a["bank.route_cn"].__setitem__(
            (0, 0), a["bank.route_n"][0, 0] + 1.0), None, r"counts more costs than"),
        "rms length": (lambda a: _set(a, "rms", a["rms"][:-1].copy()), None,
                       r"'rms' has shape \(24,\).* 25 weight rows"),
        "fisher length": (lambda a: _set(a, "fisher", a["fisher"][:-1].copy()), None,
                          r"'fisher' has shape .* parameters"),
        "v1 rms length": (lambda a: _set(a, "rms", np.zeros(7, f32)),
                          lambda m: _set(m, "router_state_version", 1),
                          r"'rms' has shape \(7,\).* 25 weight rows"),
        "omega length": (lambda a: _set(a, "omega", a["omega"][:-1].copy()), None,
                         r"'omega' has shape .* parameters"),
        "missing array": (lambda a: _pop(a, "fisher"), None, r"missing \['fisher'\]"),
        "v3 without memory": (lambda a: _pop(a, "omega"), None, r"missing \['omega'\]"),
        "unknown array": (lambda a: _set(a, "extra", np.zeros(1, f32)), None,
                          r"unknown \['extra'\]"),
        "float64 array": (lambda a: _set(a, "bias", a["bias"].astype(np.float64)), None,
                          r"'bias' must be float32, got float64"),
        "NaN": (lambda a: a["mu"].__setitem__(0, np.nan), None, r"'mu' contains NaN"),
        "unknown meta": (None, lambda m: _set(m, "colour", "blue"), r"unknown \['colour'\]"),
        "missing meta": (None, lambda m: _pop(m, "seed"), r"missing \['seed'\]"),
        "unknown param": (None, lambda m: _set(m["params"], "lr2", 1.0), r"unknown \['lr2'\]"),
        "missing param": (None, lambda m: _pop(m["params"], "tau"), r"missing \['tau'\]"),
        "unknown counter": (None, lambda m: _set(m["counters"], "x", 1), r"unknown \['x'\]"),
        "missing counter": (None, lambda m: _pop(m["counters"], "rng_state"),
                            r"missing \['rng_state'\]"),
        "rng out of range": (None, lambda m: _set(m["counters"], "rng_state", -1),
                             r"rng_state.*2\*\*64"),
        "bool counter": (None, lambda m: _set(m["counters"], "has_anchor", 1), r"has_anchor"),
        "hidden_dim text": (None, lambda m: _set(m, "hidden_dim", "64"), r"hidden_dim must be"),
        "hidden_dim mismatch": (None, lambda m: _set(m, "hidden_dim", 32),
                                r"'bank.centroid' has shape \(100, 64\).*needs \(100, 32\)"),
        "duplicate routes": (None, lambda m: _set(m, "routes", ["a", "a", "b", "c"]),
                             r"routes must be"),
        "route count": (None, lambda m: _set(m, "routes", ["a", "b", "c"]), r"has shape"),
        "n_patterns": (None, lambda m: _set(m, "n_patterns", 101), r"exceeds max_patterns"),
        "bad param value": (None, lambda m: _set(m["params"], "tau", -1.0),
                            r"invalid router configuration: tau must be in"),
        "bad param type": (None, lambda m: _set(m["params"], "ewc", 1),
                           r"invalid router configuration: ewc must be a bool"),
        "ckpt_patterns": (None, lambda m: _set(m["counters"], "ckpt_patterns", 101),
                          r"ckpt_patterns'\]=101 exceeds max_patterns"),
        "novelty share": (None, lambda m: _set(m["counters"], "novelty_long", 1.5),
                          r"novelty_long'\] must be a share in \[0, 1\]"),
        "negative count": (lambda a: _set(a, "global_n", -np.ones(K, f32)), None,
                           r"'global_n' holds a negative value"),
        "sum above count": (lambda a: _set(a, "global_s", a["global_n"] + 1), None,
                            r"'global_s' exceeds 'global_n'"),
        "retired unknown": (None, lambda m: _set(m, "retired", ["x"]), r"retired must be"),
        "retired all": (None, lambda m: _set(m, "retired", list(m["routes"])),
                        r"retired must be .* at least one route live"),
        "retired twice": (None, lambda m: _set(m, "retired", [m["routes"][0]] * 2),
                          r"retired must be a list of unique"),
        "retired text": (None, lambda m: _set(m, "retired", m["routes"][0]), r"retired must be"),
        "learnt text": (None, lambda m: _set(m, "learnt", "id-1"), r"learnt must be a list"),
        "learnt too many": (None, lambda m: _set(m, "learnt", [f"i{k}" for k in range(70000)]),
                            r"learnt must be a list of at most 65536"),
        "learnt twice": (None, lambda m: _set(m, "learnt", ["i1", "i1"]), r"learnt must hold"),
        "learnt not ids": (None, lambda m: _set(m, "learnt", ["", 3, "é"]), r"learnt must hold"),
        "newer layout": (None, lambda m: _set(m, "router_state_version",
                                              ROUTER_STATE_VERSION + 1), r"newer than this sona"),
    }  # fmt: skip


def _strip_v4(meta):
    """What a version-3 file lacks: the novelty parameter and counters."""
    del meta["params"]["ewc_novelty"]
    for name in ("novelty_short", "novelty_long", "ckpt_patterns"):
        del meta["counters"][name]
    meta["router_state_version"] = 3


def _strip_v3(arrays, meta):
    """What a version-2 file lacks: the task memory's arrays, parameter and counters (and what
    version 4 added)."""
    _strip_v4(meta)
    for name in ("fisher_ckpt", "omega", "omega_theta"):
        del arrays[name]
    del meta["params"]["ewc_memory"]
    del meta["counters"]["omega_max"], meta["counters"]["tasks"]
    meta["router_state_version"] = 2


def test_version_2_file_loads_without_task_memory(trained, saved, tmp_path, task):
    """Version 2 had no memory of past tasks: such a file loads with ewc_memory 0 and an empty
    memory, and decides and learns exactly as the router that wrote it."""
    assert trained.stats()["ewc_tasks"] == 0  # (the fixture's stream has no task switch)
    held = {}
    old = _rewrite(saved, tmp_path / "v2.sona", lambda a: held.setdefault("a", a),
                   lambda m: _strip_v3(held["a"], m))
    assert "omega" not in read_state(old)[0]
    loaded = sona.Router.load(old)
    assert loaded.params["ewc_memory"] == 0.0 and loaded.stats()["ewc_tasks"] == 0
    for name in ("fisher_ckpt", "omega", "omega_theta"):
        assert not getattr(loaded, name).any(), name
    x = task.sample(1, np.random.default_rng(1))[0][0]
    np.testing.assert_array_equal(loaded.scores(x), trained.scores(x))
    loaded.feedback(loaded.route(x), 1.0)  # and it learns on


def test_version_3_file_loads_without_novelty(trained, saved, tmp_path, task):
    """Version 3 inferred boundaries from the reward alone and remembered every task fully: such
    a file loads with ewc_novelty 0, which is exactly that, and decides and learns on."""
    old = _rewrite(saved, tmp_path / "v3.sona", None, _strip_v4)
    assert "ewc_novelty" not in read_state(old)[1]["params"]
    loaded = sona.Router.load(old)
    assert loaded.params["ewc_novelty"] == 0.0
    assert loaded.stats()["novelty_short"] == loaded.stats()["novelty_long"] == 0.0
    for name in ("fisher", "anchor", "omega", "omega_theta", "keys"):
        assert np.array_equal(getattr(loaded, name), getattr(trained, name)), name
    x = task.sample(1, np.random.default_rng(1))[0][0]
    np.testing.assert_array_equal(loaded.scores(x), trained.scores(x))
    assert loaded._counters()["ckpt_patterns"] == trained.bank.n_patterns  # all familiar
    loaded.feedback(loaded.route(x), 1.0)  # and it learns on


def test_version_4_file_loads_without_traffic_wide_statistics(trained, saved, tmp_path, task):
    """Version 4 had no traffic-wide route statistics and no costs: such a file loads with them
    empty (the prior starts from Beta(1, 1) and unknown costs) and learns on."""
    def strip(a):
        for name in ("global_n", "global_s", "global_q", "route_cost", "cost_n", "shrink"):
            del a[name]

    def meta_v4(m):
        del m["params"]["prior_window"]
        m["router_state_version"] = 4

    old = _rewrite(saved, tmp_path / "v4.sona", strip, meta_v4)
    assert "global_n" not in read_state(old)[0]
    loaded = sona.Router.load(old)
    assert loaded.params["prior_window"] == POLICY_DEFAULTS["prior_window"]
    for name in ("global_n", "global_s", "route_cost", "cost_n"):
        assert not getattr(loaded, name).any(), name
    assert np.array_equal(loaded.keys, trained.keys)
    assert (loaded.shrink == loaded.params["prior_count"]).all()
    x = task.sample(1, np.random.default_rng(1))[0][0]
    loaded.feedback(loaded.route(x), 1.0)  # and it learns on
    assert loaded.global_n.sum() == 1.0


def test_version_5_file_loads_with_the_rates_it_had(trained, saved, tmp_path, task):
    """Version 5 hard-coded the drift and novelty EMA rates: such a file loads with the rates it
    ran with (the defaults), and decides and learns exactly as the router that wrote it."""
    rates = ("reward_short_rate", "reward_long_rate", "novelty_short_rate", "novelty_long_rate")

    def meta_v5(m):
        for name in rates:
            del m["params"][name]
        del m["retired"], m["learnt"]
        m["router_state_version"] = 5

    old = _rewrite(saved, tmp_path / "v5.sona", None, meta_v5)
    assert not set(rates) & set(read_state(old)[1]["params"])
    loaded = sona.Router.load(old)
    assert loaded.params == trained.params
    assert {name: loaded.params[name] for name in rates} == {name: POLICY_DEFAULTS[name]
                                                             for name in rates}
    x = task.sample(1, np.random.default_rng(1))[0][0]
    loaded.feedback(loaded.route(x), 1.0)
    trained.feedback(trained.route(x), 1.0)
    assert learned_bytes(loaded) == learned_bytes(trained)


def test_version_6_file_loads_with_no_decision_learnt(trained, saved, tmp_path, task):
    """Version 6 kept no learnt decision ids: such a file loads with an empty window, and is
    otherwise the same router."""
    def meta_v6(m):
        del m["learnt"]
        m["router_state_version"] = 6

    loaded = sona.Router.load(_rewrite(saved, tmp_path / "v6.sona", None, meta_v6))
    assert loaded._learnt_ids() == [] and len(trained._learnt_ids()) == 600
    assert learned_bytes(loaded) == learned_bytes(trained)


def test_version_8_file_loads_with_no_per_pattern_cost(trained, saved, tmp_path, task):
    """Version 8 kept no per-pattern costs: such a file loads with none (every pattern at the
    routes' traffic-wide costs), decides as the router that wrote it without a cost trade-off,
    and learns the costs on."""
    def strip(a):
        del a["bank.route_cn"], a["bank.route_c"]

    old = _rewrite(saved, tmp_path / "v8.sona", strip,
                   lambda m: _set(m, "router_state_version", 8))
    loaded = sona.Router.load(old)
    assert not loaded.bank.route_cn.any() and not loaded.bank.route_c.any()
    assert trained.bank.route_cn.any()
    held_out, clusters = task.sample(50, np.random.default_rng(3))
    assert np.array_equal(loaded.scores(held_out), trained.scores(held_out))
    d = loaded.route(held_out[0])
    loaded.learn(d.outcome(1.0, cost=0.5))
    assert loaded.bank.route_c.sum() == np.float32(0.5)


def test_version_5_file_loads_with_no_route_retired(trained, saved, tmp_path, task):
    """Version 5 had no retired routes: such a file loads with every route live."""
    def meta_v5(m):
        del m["retired"], m["learnt"]
        for name in ("reward_short_rate", "reward_long_rate", "novelty_short_rate",
                     "novelty_long_rate"):
            del m["params"][name]
        m["router_state_version"] = 5

    old = _rewrite(saved, tmp_path / "v5.sona", None, meta_v5)
    loaded = sona.Router.load(old)
    assert loaded.retired == () and loaded.stats()["retired"] == []
    x = task.sample(1, np.random.default_rng(1))[0][0]
    np.testing.assert_array_equal(loaded.scores(x), trained.scores(x))


def test_version_1_file_loads_with_row_moments(trained, saved, tmp_path, task):
    """Layout version 1 stored RMSprop's second moment per weight; its rows average to version
    2's per-row moments exactly (an EMA of a mean is the mean of the EMAs)."""
    rows = 2 * 2 + 2 * 8 + K  # adapter and key rows of D weights, then the bias (K weights)
    rng = np.random.default_rng(0)
    per_weight = rng.uniform(0.0, 1e-3, rows * D + K).astype(np.float32)

    held = {}

    def as_v1(a):
        a["rms"] = per_weight
        held["a"] = a

    def meta_v1(m):
        _strip_v3(held["a"], m)
        m["router_state_version"] = 1

    old = _rewrite(saved, tmp_path / "v1.sona", as_v1, meta_v1)
    loaded = sona.Router.load(old)
    want = np.append(per_weight[:rows * D].reshape(rows, D).mean(axis=1),
                     per_weight[rows * D:].mean())
    np.testing.assert_allclose(loaded.rms, want, rtol=1e-6)
    for name in ("keys", "fisher", "anchor", "mu"):
        assert np.array_equal(getattr(loaded, name), getattr(trained, name)), name
    x = task.sample(1, np.random.default_rng(1))[0][0]
    loaded.feedback(loaded.route(x), 1.0)  # and it learns on


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_inconsistent_file_raises(case, saved, tmp_path):
    edit_arrays, edit_meta, message = _bad_cases()[case]
    bad = _rewrite(saved, tmp_path / "bad.sona", edit_arrays, edit_meta)
    before = bad.read_bytes()
    with pytest.raises(StateFileError, match=message) as info:
        sona.Router.load(bad)
    assert "cannot load sona router state" in str(info.value) and "bad.sona" in str(info.value)
    assert bad.read_bytes() == before


def test_router_kind_with_other_contents(tmp_path):
    write_state(tmp_path / "x.sona", {}, {"a": 1}, "router")
    with pytest.raises(StateFileError, match=r"unknown \['a'\], missing \['counters'"):
        sona.Router.load(tmp_path / "x.sona")


def test_engine_file_is_refused(saved, tmp_path):
    eng = _rewrite(saved, tmp_path / "engine.sona", kind="engine")
    with pytest.raises(StateFileError, match="holds 'engine' state, expected 'router'"):
        sona.Router.load(eng)


def test_foreign_files_are_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(StateFileError, match="not a sona state file"):
        sona.Router.load(tmp_path / "model.safetensors")
    (tmp_path / "notes.txt").write_text("hello, this is not a router\n")
    with pytest.raises(StateFileError):
        sona.Router.load(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        sona.Router.load(tmp_path / "absent.sona")


def test_truncated_and_bitflipped_files_are_refused(saved, tmp_path):
    data = saved.read_bytes()
    (tmp_path / "cut.sona").write_bytes(data[: len(data) // 2])
    with pytest.raises(StateFileError, match="truncated"):
        sona.Router.load(tmp_path / "cut.sona")
    flipped = bytearray(data)
    flipped[-5] ^= 0x10
    (tmp_path / "flip.sona").write_bytes(bytes(flipped))
    with pytest.raises(StateFileError, match="checksum"):
        sona.Router.load(tmp_path / "flip.sona")


# ------------------------------------------------------------------------------ atomic saves


def test_save_into_missing_directory_fails_cleanly(trained, saved, tmp_path):
    before = saved.read_bytes()
    with pytest.raises(FileNotFoundError):
        trained.save(tmp_path / "no-such-dir" / "router.sona")
    assert saved.read_bytes() == before


def test_failed_save_leaves_previous_file_intact(trained, saved, task, monkeypatch):
    before = saved.read_bytes()
    _train(trained, task, 50, seed=3)  # the state now differs from the file

    def refuse(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sona.state.os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        trained.save(saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]  # no temp file left behind
    assert sona.Router.load(saved).feedbacks == 600


# ------------------------------------------------------------------------------ stats


def test_stats(trained, saved):
    s = trained.stats()
    assert json.loads(json.dumps(s)) == s
    assert s["decisions"] == s["feedbacks"] == 600
    assert s["n_patterns"] == trained.bank.n_patterns > 0
    assert s["backend"] == sona.get_backend()
    assert s["n_parameters"] == trained.n_parameters == trained.fisher.size
    assert s["params"] == {**POLICY_DEFAULTS, **HP}
    assert s["global_baseline"] == trained._counters()["global_baseline"]
    assert 0.0 < s["global_baseline"] < 1.0
    assert s["routes"] == ROUTES and s["hidden_dim"] == D
    loaded = sona.Router.load(saved).stats()
    # per-route decisions and the exploration share count this process's routing only
    assert loaded.pop("route_decisions") == dict.fromkeys(ROUTES, 0)
    assert loaded.pop("exploration") == 0.0
    assert loaded == {k: v for k, v in s.items() if k not in ("route_decisions", "exploration")}


def test_numpy_typed_params_are_stored_as_plain_python(backend, tmp_path):
    r = sona.Router(
        ["a", "b"],
        hidden_dim=8,
        ewc=np.bool_(False),
        max_patterns=np.int64(7),
        lr=np.float32(0.5),
        seed=np.int64(2),
    )
    s = r.stats()
    assert json.dumps(s)
    assert s["params"]["ewc"] is False and s["params"]["max_patterns"] == 7
    assert type(s["params"]["lr"]) is float
    r.save(tmp_path / "r.sona")
    loaded = sona.Router.load(tmp_path / "r.sona")
    _assert_same_state(r, loaded)
    assert loaded.stats() == s


# ------------------------------------------------------------------------------ bytes and pickle


def test_bytes_are_the_state_file(trained, saved):
    data = trained.to_bytes()
    assert isinstance(data, bytes) and data == saved.read_bytes()
    assert sona.Router.from_bytes(data).to_bytes() == data


def test_from_bytes_round_trip_same_decisions_and_same_learning(trained, task):
    loaded = sona.Router.from_bytes(bytearray(trained.to_bytes()))
    assert type(loaded) is sona.Router and loaded.params == trained.params
    _assert_same_state(trained, loaded)
    _assert_same_future(trained, loaded, task, n=200)
    # the same learning; each router's decision ids are its own (a random nonce per instance)
    assert learned_bytes(loaded) == learned_bytes(trained)
    assert loaded._learnt_ids()[:600] == trained._learnt_ids()[:600]
    assert not set(loaded._learnt_ids()[600:]) & set(trained._learnt_ids()[600:])
    assert sona.Router.from_bytes(memoryview(loaded.to_bytes())).feedbacks == 800


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(trained, task, protocol):
    loaded = pickle.loads(pickle.dumps(trained, protocol=protocol))
    assert type(loaded) is sona.Router and loaded is not trained
    _assert_same_state(trained, loaded)
    _assert_same_future(trained, loaded, task, n=100)


def test_copies_are_independent(trained, task):
    twin = copy.deepcopy(trained)
    _assert_same_state(trained, twin)
    _train(twin, task, 50, seed=3)
    assert twin.feedbacks == trained.feedbacks + 50
    assert not np.array_equal(twin.micro.B, trained.micro.B)
    assert copy.copy(trained).to_bytes() == trained.to_bytes()


_CHILD = """
import pickle, sys
import numpy as np, sona
backend, router, X = pickle.loads(sys.stdin.buffer.read())
sona.set_backend(backend)  # a new process starts on the default backend
sys.stdout.buffer.write(pickle.dumps(np.stack([router.scores(x) for x in X])))
"""


def test_router_ships_to_another_process(trained, task, backend):
    # a child process outside the repository (its source tree would shadow the installed sona)
    import subprocess
    import sys

    from helpers import OUTSIDE, subprocess_env

    X = task.sample(20, np.random.default_rng(4))[0]
    done = subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps((backend, trained, X)),
                          capture_output=True, cwd=OUTSIDE, env=subprocess_env(), timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert np.array_equal(pickle.loads(done.stdout), np.stack([trained.scores(x) for x in X]))


def test_pending_decisions_do_not_travel(trained, task):
    x = task.sample(1, np.random.default_rng(0))[0][0]
    pending = trained.route(x)
    twin = pickle.loads(pickle.dumps(trained))
    with pytest.raises(ValueError, match="another router"):
        twin.feedback(pending, 1.0)
    trained.feedback(pending, 1.0)


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_inconsistent_bytes_raise_like_files(case, saved):
    edit_arrays, edit_meta, message = _bad_cases()[case]
    arrays, meta = sona.state.decode_state(saved.read_bytes())
    if edit_arrays:
        edit_arrays(arrays)
    if edit_meta:
        edit_meta(meta)
    with pytest.raises(StateFileError, match=message) as info:
        sona.Router.from_bytes(sona.state.encode_state(arrays, meta, "router"))
    assert "cannot load sona router state from bytes" in str(info.value)


def test_corrupted_bytes_are_refused(trained, saved):
    data = trained.to_bytes()
    with pytest.raises(StateFileError, match="truncated"):
        sona.Router.from_bytes(data[: len(data) // 2])
    with pytest.raises(StateFileError, match="truncated"):
        sona.Router.from_bytes(b"")
    flipped = bytearray(data)
    flipped[-5] ^= 0x10
    with pytest.raises(StateFileError, match="checksum"):
        sona.Router.from_bytes(bytes(flipped))
    with pytest.raises(StateFileError, match="trailing"):
        sona.Router.from_bytes(data + b"\0")
    with pytest.raises(StateFileError, match="holds 'engine' state"):
        arrays, meta = sona.state.decode_state(data)
        sona.Router.from_bytes(sona.state.encode_state(arrays, meta, "engine"))
    with pytest.raises(StateFileError, match="not a safetensors file"):
        sona.Router.from_bytes(b"hello, this is not a router\n")
    outcome = sona.Outcome(np.zeros(D, np.float32), "small", 1.0, 1.0).to_bytes()
    with pytest.raises(StateFileError):
        sona.Router.from_bytes(outcome)
    for bad in ("text", None, [1, 2], trained):
        with pytest.raises(TypeError, match="needs bytes"):
            sona.Router.from_bytes(bad)


@pytest.mark.parametrize("matching", [{}, {"centre_patterns": False,
                                          "new_pattern_cos": RAW_NEW_PATTERN_COS}])
def test_pattern_matching_survives_a_round_trip(backend, matching):
    """A router matching patterns around mu (the defaults) or by raw cosines loads with its
    matching and routes alike."""
    task = RoutingTask(dim=16, n_clusters=3, n_routes=3, seed=4)
    rng = np.random.default_rng(2)
    router = sona.Router(["a", "b", "c"], hidden_dim=16, seed=1, **matching)
    X, c = task.sample(200, rng)
    for x, ci in zip(X, c):
        d = router.route(x)
        router.feedback(d, task.reward(int(ci), d.index, rng))
    loaded = sona.Router.from_bytes(router.to_bytes())
    assert loaded.params["centre_patterns"] is matching.get("centre_patterns", True)
    assert loaded.params == router.params
    probe, _ = task.sample(20, rng)
    assert [loaded.route(x).pattern for x in probe] == [router.route(x).pattern for x in probe]
    np.testing.assert_array_equal(loaded.scores(probe), router.scores(probe))
