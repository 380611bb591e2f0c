"""Adam step and online Fisher kernels (sona.kernels) on every backend against float64 numpy."""

import numpy as np
import pytest
from helpers import SIZES

from sona import kernels


def _adam_oracle(theta, m, v, g, t, lr, b1, b2, eps, gscale, F=None, anchor=None, lam=0.0):
    theta, m, v, g = (a.astype(np.float64) for a in (theta, m, v, g))
    e = gscale * g
    if F is not None:
        e = e + lam * F.astype(np.float64) * (theta - anchor)
    m = b1 * m + (1 - b1) * e
    v = b2 * v + (1 - b2) * e * e
    theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return theta, m, v


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("ewc", [False, True])
def test_adam_matches_oracle(backend, rng, n, ewc):
    theta = rng.standard_normal(n).astype(np.float32)
    m = rng.standard_normal(n).astype(np.float32) * 0.1
    v = rng.random(n).astype(np.float32) * 0.1
    g = rng.standard_normal(n).astype(np.float32)
    F = rng.random(n).astype(np.float32) if ewc else None
    anchor = rng.standard_normal(n).astype(np.float32) if ewc else None
    want = _adam_oracle(theta, m, v, g, 5, 3e-3, 0.9, 0.999, 1e-8, -0.7, F, anchor, 0.5)
    kernels.adam_step(theta, m, v, g, 5, lr=3e-3, gscale=-0.7, fisher=F, anchor=anchor,
                      lam=0.5 if ewc else 0.0)
    for got, exp in zip((theta, m, v), want):
        np.testing.assert_allclose(got, exp, rtol=2e-5, atol=1e-6)


def test_adam_zero_gradient_moves_nothing(backend):
    theta = np.ones(33, np.float32)
    m, v = np.zeros(33, np.float32), np.zeros(33, np.float32)
    kernels.adam_step(theta, m, v, np.zeros(33, np.float32), 1)
    assert (theta == 1).all() and not m.any() and not v.any()


@pytest.mark.parametrize("n", SIZES)
def test_fisher_update_matches_oracle(backend, rng, n):
    F = rng.random(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    want = 0.99 * F.astype(np.float64) + 0.01 * (2.0 * g.astype(np.float64)) ** 2
    kernels.fisher_update(F, g, 0.01, gscale=2.0)
    np.testing.assert_allclose(F, want, rtol=1e-5, atol=1e-7)


def test_optim_bad_inputs():
    th = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="in place"):
        kernels.adam_step(np.zeros(4), np.zeros(4, np.float32), np.zeros(4, np.float32),
                          np.zeros(4, np.float32), 1)
    with pytest.raises(ValueError, match="4 elements"):
        kernels.adam_step(th, np.zeros(3, np.float32), np.zeros(4, np.float32),
                          np.zeros(4, np.float32), 1)
    with pytest.raises(ValueError, match="t must be"):
        kernels.adam_step(th, np.zeros(4, np.float32), np.zeros(4, np.float32),
                          np.zeros(4, np.float32), 0)
    with pytest.raises(ValueError, match="together"):
        kernels.adam_step(th, np.zeros(4, np.float32), np.zeros(4, np.float32),
                          np.zeros(4, np.float32), 1, fisher=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        kernels.fisher_update(th, np.full(4, np.nan, np.float32), 0.1)
    with pytest.raises(ValueError, match="alpha"):
        kernels.fisher_update(th, np.zeros(4, np.float32), 1.5)
    assert not th.any()
