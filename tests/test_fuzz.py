"""Property tests over the public API (hypothesis): random shapes, dtypes, NaN/Inf, huge values
and random call orders never crash the interpreter, never put NaN in a weight, and a rejected call
changes nothing. Plus a long adversarial feedback run."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sona

D = 16
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.uint8, np.bool_,
                          np.complex64])
shapes = st.one_of(st.just((D,)), st.tuples(st.integers(0, 3), st.just(D)),
                   st.tuples(st.integers(0, 2 * D)), st.tuples(st.integers(1, 3), st.integers(1, 3),
                                                               st.integers(1, 3)))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.0, 1e30, -1e30, 3e38, 1e-40]))


def arrays():
    return st.builds(lambda dt, shape, fill, contiguous: _make(dt, shape, fill, contiguous),
                     dtypes, shapes, floats, st.booleans())


def _make(dtype, shape, fill, contiguous):
    with np.errstate(all="ignore"):
        a = np.full(shape, fill).astype(dtype) if np.dtype(dtype).kind in "fc" else \
            np.full(shape, 1, dtype)
    if not contiguous and a.ndim >= 1 and a.shape[-1] > 1:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    return a


def _router_state(r):
    return [a.copy() for a in (r.micro.A, r.micro.B, r.base.A, r.base.B, r.keys, r.bias, r.mu)] + \
        [r.decisions, r.feedbacks, r.bank.n_patterns]


def _same(a, b):
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))


@SETTINGS
@given(x=arrays())
def test_router_route_any_input(x):
    r = sona.Router(["a", "b", "c"], hidden_dim=D, seed=0)
    before = _router_state(r)
    try:
        d = r.route(x)
    except (TypeError, ValueError):
        assert _same(before, _router_state(r))
        return
    r.feedback(d, 0.5)
    assert all(np.isfinite(a).all() for a in _router_state(r)[:7])


@SETTINGS
@given(x=arrays(), q=st.one_of(floats, st.just(0.5), st.just("x"), st.just(None)))
def test_engine_trajectory_any_input(x, q):
    e = sona.SonaEngine(hidden_dim=D)
    w0 = (e.micro.A.copy(), e.micro.B.copy())
    try:
        tid = e.start_trajectory(x)
    except (TypeError, ValueError):
        assert e.stats()["trajectories_started"] == 0
        return
    try:
        e.end_trajectory(tid, q)
    except (TypeError, ValueError):
        assert np.array_equal(w0[0], e.micro.A) and np.array_equal(w0[1], e.micro.B)
        assert e.stats()["trajectories_open"] == 1
        return
    assert np.isfinite(e.micro.A).all() and np.isfinite(e.micro.B).all()


@SETTINGS
@given(ops=st.lists(st.tuples(st.sampled_from(["route", "feedback", "again", "scores", "cycle",
                                               "bad"]),
                              st.floats(0, 1), st.integers(0, 7)), max_size=40))
def test_random_call_orders(ops):
    r = sona.Router(["a", "b", "c", "d"], hidden_dim=D, seed=1)
    rng = np.random.default_rng(0)
    pending, done = [], []
    for op, q, i in ops:
        x = rng.standard_normal(D).astype(np.float32)
        if op == "route":
            pending.append(r.route(x))
        elif op == "feedback" and pending:
            d = pending.pop(i % len(pending))
            r.feedback(d, q)
            done.append(d)
        elif op == "again" and done:
            before = _router_state(r)
            with pytest.raises(ValueError, match="already"):
                r.feedback(done[i % len(done)], q)
            assert _same(before, _router_state(r))
        elif op == "scores":
            p = r.scores(x)
            assert abs(float(p.sum()) - 1.0) < 1e-4
        elif op == "cycle":
            r.engine.run_background_cycle()
        elif op == "bad":
            before = _router_state(r)
            with pytest.raises((TypeError, ValueError)):
                r.feedback(pending[0] if pending else None, 1.5)
            assert _same(before, _router_state(r))
    assert all(np.isfinite(a).all() for a in _router_state(r)[:7])


def test_million_adversarial_feedbacks_stay_finite_and_bounded():
    # extreme qualities, repeated identical signals, alternating routes, huge embeddings
    r = sona.Router(["a", "b"], hidden_dim=D, seed=2)
    e = sona.SonaEngine(hidden_dim=D)
    xs = [np.full(D, 1e6, np.float32), np.full(D, -1e6, np.float32),
          np.ones(D, np.float32), np.linspace(-1, 1, D).astype(np.float32)]
    for i in range(200_000):
        x = xs[i % 4]
        d = r.route(x)
        r.feedback(d, float(d.index == (i % 2)))
    start, end = e.start_trajectory, e.end_trajectory
    for i in range(1_000_000):
        end(start(xs[i % 4]), float(i % 2))
    clip = r.params["weight_clip"]
    for a in _router_state(r)[:6]:  # every learned weight: finite and within the clip
        assert np.isfinite(a).all() and np.abs(a).max() <= clip
    assert np.abs(r.mu).max() <= 1e6  # the running query mean stays within the inputs' range
    for a in (e.micro.A, e.micro.B):
        assert np.isfinite(a).all()


# ---- state-file loading (issue 16): a file with a valid checksum but fuzzed values --------------

def _saved(kind):
    """(arrays, meta) of a trained router's or engine's state file."""
    import tempfile

    from sona.state import read_state

    r = sona.Router(["a", "b", "c"], hidden_dim=D, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(60):
        r.feedback(r.route(rng.standard_normal(D).astype(np.float32)), float(rng.random()))
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/s.sona"
        (r if kind == "router" else r.engine).save(path)
        return read_state(path)


_STATES = {}
values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**65, 2**65),
                   st.booleans(), st.none(), st.text(max_size=3),
                   st.lists(st.integers(), max_size=2),
                   st.sampled_from([2**63, 2**64 - 1, -1, 1e39, 3.4e38]))


@SETTINGS
@given(kind=st.sampled_from(["router", "engine"]), data=st.data())
def test_state_file_loading_never_yields_a_poisoned_object(kind, data, tmp_path):
    from sona.state import StateFileError, write_state

    if kind not in _STATES:
        _STATES[kind] = _saved(kind)
    arrays, meta = _STATES[kind]
    arrays = {k: v.copy() for k, v in arrays.items()}
    meta = json.loads(json.dumps(meta))
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):  # an array element
            name = data.draw(st.sampled_from(sorted(arrays)))
            a = arrays[name].reshape(-1)
            if a.size:
                i = data.draw(st.integers(0, a.size - 1))
                with np.errstate(all="ignore"):
                    a[i] = np.asarray(data.draw(floats)).astype(a.dtype)
        else:  # a metadata value, at the top level or one level down
            key = data.draw(st.sampled_from(sorted(meta)))
            if isinstance(meta[key], dict) and meta[key] and data.draw(st.booleans()):
                meta[key][data.draw(st.sampled_from(sorted(meta[key])))] = data.draw(values)
            else:
                meta[key] = data.draw(values)
    path = tmp_path / "fuzzed.sona"
    write_state(path, arrays, meta, kind)
    cls = sona.Router if kind == "router" else sona.SonaEngine
    try:
        obj = cls.load(path)
    except StateFileError:
        return
    x = np.ones(D, np.float32)
    if kind == "router":
        for q in (1.0, 0.0, 0.5):
            obj.feedback(obj.route(x), q)
        assert np.isfinite(obj.scores(x)).all()
        weights = [obj.keys, obj.bias, obj.mu]
    else:
        for q in (1.0, 0.0):
            obj.end_trajectory(obj.start_trajectory(x), q)
        assert np.isfinite(obj.apply_lora(x)).all()
        weights = [obj.bank.baseline, obj.bank.route_n]
    for w in weights + [obj.micro.A, obj.micro.B, obj.base.A, obj.base.B]:
        assert np.isfinite(w).all()
