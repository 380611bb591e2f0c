"""sona.Router: the C policy against its numpy reference, learning from one outcome per query,
and every bad input."""

import numpy as np
import pytest
from policy_reference import PolicyReference

import sona
from sona.synthetic import RoutingTask

ROUTES = ["r0", "r1", "r2", "r3"]


def _twin(d=64, K=4, seed=3, **hp):
    """A Router and the numpy reference starting from the same weights."""
    ref = PolicyReference(d, K, seed=seed, **hp)
    router = sona.Router(ROUTES[:K], hidden_dim=d, seed=seed, **hp)
    p = ref.p
    router.micro.set_weights(p["A_micro"], p["B_micro"].T)
    router.base.set_weights(p["A_base"], p["B_base"].T)
    router._assign("keys", p["keys"])
    return router, ref


@pytest.mark.parametrize("hp", [{}, {"explore": 0.1}, {"ewc_every": 50},
                                {"use_prior": False}, {"use_base": False, "learn_keys": False}])
def test_matches_reference_step_for_step(backend, hp):
    d = 64
    router, ref = _twin(d=d, **hp)
    task = RoutingTask(dim=d, n_clusters=4, n_routes=4, seed=11)
    rng = np.random.default_rng(5)
    X, clusters = task.sample(300, rng)
    for x, c in zip(X, clusters):
        dr, dn = router.route(x), ref.route(x)
        assert dr.index == dn.index
        np.testing.assert_allclose(dr.probs, dn.probs, rtol=2e-3, atol=2e-4)
        r = float(task.reward(c, dr.index, rng))
        router.feedback(dr, r)
        ref.feedback(dn, r)
    p = ref.p
    np.testing.assert_allclose(router.micro.A, p["A_micro"], atol=2e-4)
    np.testing.assert_allclose(router.micro.B, p["B_micro"].T, atol=2e-4)
    np.testing.assert_allclose(router.base.B, p["B_base"].T, atol=2e-4)
    np.testing.assert_allclose(router.keys, p["keys"], atol=2e-4)
    np.testing.assert_allclose(router.bias, p["bias"], atol=2e-4)
    assert router.bank.n_patterns == ref.n_patterns
    np.testing.assert_allclose(router.scores(X[0]), ref.scores(X[0]), atol=2e-3)
