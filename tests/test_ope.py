"""Off-policy evaluation: exact values on hand-made logs, unbiasedness and variance on synthetic
logs whose true value is known, and every bad input."""

import math

import numpy as np
import pytest

import sona
from sona.ope import OPEResult, evaluate

ROUTES = ["a", "b", "c"]
D = 8
# True mean quality of route k at x: 0.5 + W_k . x, linear (so a ridge model can be right) and
# inside [0.1, 0.9] for unit x (|W_k| = 0.4).
_W = np.random.default_rng(123).standard_normal((3, D))
W = 0.4 * _W / np.linalg.norm(_W, axis=1, keepdims=True)
V = np.random.default_rng(7).standard_normal((3, D)) * 2.0


def unit_rows(rng, n):
    X = rng.standard_normal((n, D))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def logging_probs(X, eps=0.3):
    z = X @ V.T
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return (1 - eps) * p + eps / 3


def greedy_best(X):
    return np.eye(3)[np.argmax(X @ W.T, axis=1)]


def synthetic_logs(n, seed, noise="bernoulli"):
    """Outcomes of the logging policy; X as float32 (what Outcome stores). Rewards have mean q:
    0/1 draws ("bernoulli", the hard case) or q +- 0.05 ("low": a reward model can be good)."""
    rng = np.random.default_rng(seed)
    X = unit_rows(rng, n).astype(np.float32)
    P = logging_probs(X.astype(np.float64))
    a = np.array([rng.choice(3, p=p) for p in P])
    q = 0.5 + X.astype(np.float64) @ W.T
    qa = q[np.arange(n), a]
    if noise == "bernoulli":
        r = (rng.random(n) < qa).astype(float)
    else:
        r = qa + rng.uniform(-0.05, 0.05, n)
    logs = [sona.Outcome(X[i], ROUTES[a[i]], P[i, a[i]], r[i]) for i in range(n)]
    return logs, X, q


def true_value(target, X, q):
    return float((target(X) * q).sum(axis=1).mean())


# --------------------------------------------------------------------------- exact values


def hand_logs():
    x = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]]
    return [
        sona.Outcome(x[0], "a", 0.5, 1.0),
        sona.Outcome(x[1], "b", 0.25, 0.0),
        sona.Outcome(x[2], "a", 0.8, 0.5),
        sona.Outcome(x[3], "b", 1.0, 1.0),
    ]


TARGET = np.array([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])


def test_ips_snips_ess_match_the_formulas():
    res = evaluate(hand_logs(), lambda X: TARGET, ["a", "b"])
    w = np.array([0.5 / 0.5, 1.0 / 0.25, 1.0 / 0.8, 0.5 / 1.0])
    r = np.array([1.0, 0.0, 0.5, 1.0])
    assert isinstance(res, OPEResult)
    assert res.ips == pytest.approx((w * r).mean())
    assert res.snips == pytest.approx((w * r).sum() / w.sum())
    assert res.ess == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert res.ips_se == pytest.approx((w * r).std(ddof=1) / 2)
    assert (res.n, res.clip, res.n_clipped) == (4, None, 0)
    assert res.estimates == {"ips": res.ips, "snips": res.snips, "dr": res.dr, "dm": res.dm}


def test_clipping_caps_the_weights_and_counts_them():
    res = evaluate(hand_logs(), TARGET, ["a", "b"], clip=1.1)  # an array target works too
    w = np.array([1.0, 1.1, 1.1, 0.5])
    r = np.array([1.0, 0.0, 0.5, 1.0])
    assert res.ips == pytest.approx((w * r).mean())
    assert (res.clip, res.n_clipped) == (1.1, 2)


def test_dr_and_dm_with_a_constant_reward_model():
    # route a always scores 1, route b always 0: every cross-fitted ridge model is exact
    rng = np.random.default_rng(0)
    logs = [sona.Outcome(rng.standard_normal(3), r, 0.5, float(r == "a"))
            for r in ["a", "b"] * 10]
    res = evaluate(logs, lambda X: np.full((len(X), 2), 0.5), ["a", "b"])
    assert res.dm == pytest.approx(0.5) and res.dr == pytest.approx(0.5)
    assert res.dr_se == pytest.approx(0.0, abs=1e-12)  # exact model: no variance left
    assert res.ips == pytest.approx(0.5) and res.ips_se > 0.1


def test_deterministic_logging_evaluates_its_own_policy_exactly():
    logs, X, _ = synthetic_logs(50, seed=1)
    logs = [sona.Outcome(o.embedding, o.route, 1.0, o.quality) for o in logs]
    same = np.eye(3)[[ROUTES.index(o.route) for o in logs]]
    res = evaluate(logs, same, ROUTES)
    mean_q = np.mean([o.quality for o in logs])
    assert res.ips == pytest.approx(mean_q) and res.snips == pytest.approx(mean_q)
    assert res.ess == pytest.approx(50)


def test_target_disjoint_from_the_logs_has_no_ips_information():
    logs = [o for o in hand_logs() if o.route == "a"]
    logs += [sona.Outcome([0.0, 2.0], "a", 0.5, 0.0)]
    res = evaluate(logs, lambda X: np.tile([0.0, 1.0], (len(X), 1)), ["a", "b"])
    assert res.ips == 0.0 and math.isnan(res.snips) and res.ess == 0.0
    assert res.dr == pytest.approx(res.dm)


def test_target_sees_a_copy_of_the_embeddings_and_float32_rows_pass():
    logs, X, _ = synthetic_logs(20, seed=2)

    def scribbling_softmax(Xs):
        z = (Xs @ V.T.astype(np.float32)).astype(np.float32)
        Xs[:] = 0.0
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    first = evaluate(logs, scribbling_softmax, ROUTES)
    assert first == evaluate(logs, scribbling_softmax, ROUTES)
    assert np.array_equal(logs[0].embedding, X[0])


def test_a_router_as_target():
    logs, X, _ = synthetic_logs(30, seed=3)
    router = sona.Router(ROUTES, hidden_dim=D, seed=0)
    res = evaluate(logs, lambda Xs: np.stack([router.scores(x) for x in Xs]), ROUTES)
    assert 0.0 <= res.snips <= 1.0 and res.n == 30


def test_deterministic_given_seed():
    logs, _, _ = synthetic_logs(100, seed=4)
    a = evaluate(logs, greedy_best, ROUTES, seed=5)
    assert a == evaluate(logs, greedy_best, ROUTES, seed=5)
    assert a.dr != evaluate(logs, greedy_best, ROUTES, seed=6).dr  # another split
    assert a.ips == evaluate(logs, greedy_best, ROUTES, seed=6).ips


# --------------------------------------------------------------------------- statistics


def errors_over_seeds(target, seeds=40, n=400, noise="bernoulli", **kw):
    errs = {"ips": [], "snips": [], "dr": [], "dm": []}
    for s in range(seeds):
        logs, X, q = synthetic_logs(n, seed=1000 + s, noise=noise)
        res = evaluate(logs, target, ROUTES, **kw)
        truth = true_value(target, X.astype(np.float64), q)
        for name, v in res.estimates.items():
            errs[name].append(v - truth)
    return {k: np.array(v) for k, v in errs.items()}


@pytest.fixture(scope="module")
def greedy_errors():
    return errors_over_seeds(greedy_best)


@pytest.mark.parametrize("name", ["ips", "dr"])
def test_ips_and_dr_are_unbiased(greedy_errors, name):
    e = greedy_errors[name]
    se = e.std(ddof=1) / math.sqrt(len(e))
    assert abs(e.mean()) < 4 * se + 1e-3, (name, e.mean(), se)
    assert e.std() < 0.1  # n = 400 gives a useful estimate, not just an unbiased one


def test_dr_has_lower_variance_when_the_reward_model_is_good():
    e = errors_over_seeds(greedy_best, noise="low")
    assert e["dr"].std() < 0.5 * e["ips"].std()
    assert e["snips"].std() < e["ips"].std()
    se = e["dr"].std(ddof=1) / math.sqrt(len(e["dr"]))
    assert abs(e["dr"].mean()) < 4 * se + 1e-3


def test_unbiased_for_a_stochastic_target():
    def soft(X):
        z = 5 * X @ W.T
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    e = errors_over_seeds(soft, seeds=30)
    for name in ("ips", "dr"):
        se = e[name].std(ddof=1) / math.sqrt(len(e[name]))
        assert abs(e[name].mean()) < 4 * se + 1e-3, name


def test_clipping_bounds_the_weights_at_the_cost_of_bias():
    logs, X, q = synthetic_logs(400, seed=9)
    free = evaluate(logs, greedy_best, ROUTES)
    clipped = evaluate(logs, greedy_best, ROUTES, clip=1.5)
    assert clipped.n_clipped > 0
    assert clipped.ips < free.ips  # weights only shrink and rewards are >= 0
    assert clipped.ess > free.ess * 0.99


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "outcomes, exc, match",
    [
        ([], ValueError, "empty"),
        (None, TypeError, "sequence of sona.Outcome"),
        (sona.Outcome([1.0, 0.0], "a", 1.0, 1.0), TypeError, "sequence of sona.Outcome"),
        ([{"route": "a"}], TypeError, r"outcomes\[0\]"),
        (hand_logs() + ["x"], TypeError, r"outcomes\[4\]"),
        (hand_logs() + [sona.Outcome([1.0, 0.0, 0.0], "a", 1.0, 1.0)], ValueError, "dimension"),
        (hand_logs() + [sona.Outcome([1.0, 0.0], "zzz", 1.0, 1.0)], ValueError, "'zzz'"),
    ],
)
def test_bad_outcomes(outcomes, exc, match):
    with pytest.raises(exc, match=match):
        evaluate(outcomes, lambda X: np.full((len(X), 2), 0.5), ["a", "b"])


@pytest.mark.parametrize(
    "target, exc, match",
    [
        ("greedy", TypeError, "callable"),
        (lambda X: "nope", TypeError, "probabilities"),
        (lambda X: np.full((len(X), 3), 1 / 3), ValueError, r"shape \(n, K\) = \(4, 2\)"),
        (lambda X: np.full(len(X), 0.5), ValueError, "shape"),
        (np.full((3, 2), 0.5), ValueError, "shape"),
        (lambda X: np.tile([1.5, -0.5], (len(X), 1)), ValueError, ">= 0"),
        (lambda X: np.tile([np.nan, 1.0], (len(X), 1)), ValueError, "finite"),
        (lambda X: np.tile([0.5, 0.6], (len(X), 1)), ValueError, "sum to 1"),
    ],
)
def test_bad_targets(target, exc, match):
    with pytest.raises(exc, match=match):
        evaluate(hand_logs(), target, ["a", "b"])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"routes": "ab"}, TypeError, "routes"),
        ({"routes": ["a", ""]}, TypeError, "routes"),
        ({"routes": []}, ValueError, "routes"),
        ({"routes": ["a", "a"]}, ValueError, "unique"),
        ({"clip": 0.0}, ValueError, "clip"),
        ({"clip": math.nan}, ValueError, "clip"),
        ({"clip": "2"}, TypeError, "clip"),
        ({"ridge": 0.0}, ValueError, "ridge"),
        ({"ridge": -1.0}, ValueError, "ridge"),
        ({"folds": 1}, ValueError, "folds"),
        ({"folds": 5}, ValueError, r"folds.*n=4"),
        ({"folds": 2.0}, ValueError, "folds"),
        ({"seed": 0.5}, TypeError, "seed"),
    ],
)
def test_bad_parameters(kwargs, exc, match):
    args = {"routes": ["a", "b"]}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        evaluate(hand_logs(), TARGET, **args)
