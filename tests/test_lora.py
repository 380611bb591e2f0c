"""MicroLoRA and BaseLoRA: forward, gradients, updates and boundary checks, on every backend."""

import numpy as np
import pytest
from helpers import SIZES, unaligned

import sona


def _adapter(cls, d, r, rng, scale=1.0):
    a = cls(d, r, seed=3, scale=scale)
    a.set_weights(a.A, rng.standard_normal((d, r)).astype(np.float32))
    return a


def _oracle(a, x):
    A, B = a.A.astype(np.float64), a.B.astype(np.float64)
    x = np.asarray(x, np.float64)
    return x + a.scale * (x @ A.T) @ B.T


def _ranks(d):
    return sorted({r for r in (1, 2, 3, 8, 64) if r <= d})


@pytest.mark.parametrize("d", [s for s in SIZES if s > 0])
def test_forward_matches_oracle_all_ranks(backend, rng, d):
    x = rng.standard_normal(d).astype(np.float32)
    for r in _ranks(d):
        cls = sona.MicroLoRA if r <= 2 else sona.BaseLoRA
        a = _adapter(cls, d, r, rng, scale=0.5)
        tol = 1e-5 * (1 + np.abs(_oracle(a, x)).max()) * (1 + np.sqrt(d))
        np.testing.assert_allclose(a.forward(x), _oracle(a, x), atol=tol)
        np.testing.assert_allclose(a.forward(unaligned(x)), _oracle(a, x), atol=tol)
        X = rng.standard_normal((5, d)).astype(np.float32)
        np.testing.assert_allclose(a.forward(unaligned(X)), _oracle(a, X), atol=tol * 3)


def test_fresh_adapter_is_identity(backend, rng):
    for a in (sona.MicroLoRA(33), sona.BaseLoRA(33, rank=8)):
        x = rng.standard_normal(33).astype(np.float32)
        assert np.array_equal(a.forward(x), x)
        assert not a.B.any()
        np.testing.assert_allclose(a.A @ a.A.T, np.eye(a.rank), atol=1e-5)


def test_forward_out_and_in_place(backend, rng):
    a = _adapter(sona.MicroLoRA, 64, 2, rng)
    x = rng.standard_normal(64).astype(np.float32)
    want = a.forward(x)
    out = np.empty(64, np.float32)
    assert a.forward(x, out=out) is out and np.array_equal(out, want)
    y = x.copy()
    a.forward(y, out=y)  # out may alias x
    np.testing.assert_allclose(y, want, rtol=1e-6)
    X = rng.standard_normal((4, 64)).astype(np.float32)
    outb = np.empty((4, 64), np.float32)
    assert a.forward(X, out=outb) is outb
    np.testing.assert_allclose(outb, _oracle(a, X), atol=1e-4)


def test_backends_agree_on_forward_and_gradient(rng):
    if "avx2" not in sona.backends():
        pytest.skip("AVX2 not available on this machine")
    previous = sona.get_backend()
    results = {}
    try:
        for b in ("scalar", "avx2"):
            sona.set_backend(b)
            r = np.random.default_rng(7)
            a = _adapter(sona.BaseLoRA, 1000, 8, r)
            x = r.standard_normal(1000).astype(np.float32)
            g = r.standard_normal(1000).astype(np.float32)
            a.accumulate_gradient(x, g)
            a.apply_accumulated(1e-3)
            results[b] = (a.forward(x), a.A.copy(), a.B.copy())
    finally:
        sona.set_backend(previous)
    for s, v in zip(results["scalar"], results["avx2"]):
        np.testing.assert_allclose(v, s, rtol=1e-4, atol=1e-4)


def _loss_grads(a, x, g):
    """Exact gradients of L = g·y in float64 (y = x + s B A x)."""
    A, B = a.A.astype(np.float64), a.B.astype(np.float64)
    x, g = x.astype(np.float64), g.astype(np.float64)
    dB = a.scale * np.outer(g, A @ x)         # (d, r)
    dA = a.scale * np.outer(B.T @ g, x)       # (r, d)
    return dA, dB


@pytest.mark.parametrize("d,r", [(1, 1), (9, 2), (33, 1), (64, 2), (65, 8), (1000, 2), (100, 64)])
def test_gradient_step_matches_analytic(backend, rng, d, r):
    cls = sona.MicroLoRA if r <= 2 else sona.BaseLoRA
    a = _adapter(cls, d, r, rng, scale=0.7)
    x = rng.standard_normal(d).astype(np.float32)
    g = rng.standard_normal(d).astype(np.float32)
    dA, dB = _loss_grads(a, x, g)
    A0, B0 = a.A.astype(np.float64), a.B.astype(np.float64)
    a.accumulate_gradient(unaligned(x), unaligned(g), weight=0.5)
    lr = 1e-3
    step = a.apply_accumulated(lr)
    tol = 1e-5 * (1 + np.sqrt(d))
    np.testing.assert_allclose(a.A, A0 - lr * 0.5 * dA, atol=tol)
    np.testing.assert_allclose(a.B, B0 - lr * 0.5 * dB, atol=tol)
    assert step == pytest.approx(lr * 0.5 * np.sqrt((dA**2).sum() + (dB**2).sum()), rel=1e-4)


def test_gradient_matches_finite_differences(rng):
    d, r = 12, 2
    a = _adapter(sona.MicroLoRA, d, r, rng)
    x = rng.standard_normal(d).astype(np.float32)
    g = rng.standard_normal(d).astype(np.float32)
    dA, dB = _loss_grads(a, x, g)
    A, B = a.A.astype(np.float64), a.B.astype(np.float64)

    def loss(A_, B_):
        return g @ (x + a.scale * B_ @ (A_ @ x))

    eps = 1e-6
    for (i, j) in [(0, 0), (1, 5), (0, 11)]:
        Ap = A.copy()
        Ap[i, j] += eps
        assert (loss(Ap, B) - loss(A, B)) / eps == pytest.approx(dA[i, j], rel=1e-4, abs=1e-6)
        Bp = B.copy()
        Bp[j, i] += eps
        assert (loss(A, Bp) - loss(A, B)) / eps == pytest.approx(dB[j, i], rel=1e-4, abs=1e-6)


def test_batch_gradient_is_sum_of_rows(backend, rng):
    a1 = _adapter(sona.MicroLoRA, 40, 2, rng)
    a2 = sona.MicroLoRA(40, 2, seed=3)
    a2.set_weights(a1.A, a1.B)
    X = rng.standard_normal((6, 40)).astype(np.float32)
    G = rng.standard_normal((6, 40)).astype(np.float32)
    a1.accumulate_gradient(X, G)
    for x, g in zip(X, G):
        a2.accumulate_gradient(x, g)
    assert a1.pending == a2.pending == 6
    a1.apply_accumulated(1e-2)
    a2.apply_accumulated(1e-2)
    np.testing.assert_allclose(a1.A, a2.A, atol=1e-6)
    np.testing.assert_allclose(a1.B, a2.B, atol=1e-6)


def test_both_factors_move_from_standard_init(backend, rng):
    a = sona.MicroLoRA(32, 2, seed=1)
    A0 = a.A.copy()
    for _ in range(3):  # B moves first (A's gradient is zero while B is zero), then A
        x = rng.standard_normal(32).astype(np.float32)
        a.accumulate_gradient(x, rng.standard_normal(32).astype(np.float32))
        a.apply_accumulated(0.05)
    assert a.B.any()
    assert not np.array_equal(a.A, A0)


def test_step_is_clipped_to_max_step(rng):
    a = sona.MicroLoRA(16, 2, seed=0, max_step=0.25)
    a.accumulate_gradient(np.full(16, 100.0, np.float32), np.full(16, 100.0, np.float32))
    A0, B0 = a.A.copy(), a.B.copy()
    assert a.apply_accumulated(1.0) == pytest.approx(0.25)
    moved = np.sqrt(((a.A - A0) ** 2).sum() + ((a.B - B0) ** 2).sum())
    assert moved == pytest.approx(0.25, rel=1e-4)


def test_huge_inputs_keep_weights_finite(rng):
    a = sona.MicroLoRA(8, 2, seed=0)
    big = np.full(8, 1e18, np.float32)
    with pytest.raises(ValueError, match="too large"):
        a.accumulate_gradient(big, big, weight=1e6)
    for _ in range(200):
        a.accumulate_gradient(np.full(8, 3e3, np.float32), -np.full(8, 3e3, np.float32))
        a.apply_accumulated(1e3)
    assert np.isfinite(a.A).all() and np.isfinite(a.B).all()


def test_reset_restores_initial_weights(rng):
    a = sona.BaseLoRA(20, rank=4, seed=9)
    A0 = a.A.copy()
    a.accumulate_gradient(np.ones(20, np.float32), np.ones(20, np.float32))
    a.apply_accumulated(0.1)
    a.accumulate_gradient(np.ones(20, np.float32), np.ones(20, np.float32))
    a.reset()
    assert np.array_equal(a.A, A0) and not a.B.any() and a.pending == 0
    assert np.array_equal(sona.BaseLoRA(20, rank=4, seed=9).A, A0)
    assert not np.array_equal(sona.BaseLoRA(20, rank=4, seed=10).A, A0)


def test_weights_are_read_only_views():
    a = sona.MicroLoRA(8)
    with pytest.raises(ValueError):
        a.A[0, 0] = 1.0
    with pytest.raises(ValueError):
        a.B[0, 0] = 1.0


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (sona.MicroLoRA, dict(dim=8, rank=0), r"rank must be in 1\.\.2"),
        (sona.MicroLoRA, dict(dim=8, rank=3), r"rank must be in 1\.\.2"),
        (sona.BaseLoRA, dict(dim=8, rank=9), r"rank must be in 1\.\.8"),
        (sona.BaseLoRA, dict(dim=100, rank=65), r"rank must be in 1\.\.64"),
        (sona.MicroLoRA, dict(dim=0), "dim must be >= 1"),
        (sona.MicroLoRA, dict(dim=8, scale=0.0), "scale"),
        (sona.MicroLoRA, dict(dim=8, max_step=float("nan")), "max_step"),
        (sona.MicroLoRA, dict(dim=8, seed=-1), "seed"),
    ],
)
def test_invalid_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def _state(a):
    return a.A.copy(), a.B.copy(), a.pending


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda a: a.forward(np.ones(7, np.float32)), ValueError, r"shape \(8,\)"),
        (lambda a: a.forward(np.ones((2, 2, 8), np.float32)), ValueError, "shape"),
        (lambda a: a.forward(np.array([np.nan] + [0.0] * 7, np.float32)), ValueError, "NaN"),
        (lambda a: a.forward(np.ones((3, 8))), None, None),
        (lambda a: a.forward(np.ones(16, np.float32)[::2]), ValueError, "C-contiguous"),
        (lambda a: a.forward(np.array(["x"] * 8)), TypeError, "dtype"),
        (lambda a: a.forward(np.ones(8, np.float32), out=np.empty(8)), TypeError, "float32"),
        (lambda a: a.forward(np.ones(8, np.float32), out=np.empty(9, np.float32)), ValueError,
         "shape"),
        (lambda a: a.accumulate_gradient(np.ones(8, np.float32), np.ones(7, np.float32)),
         ValueError, "grad_y"),
        (lambda a: a.accumulate_gradient(np.ones((2, 8), np.float32), np.ones(8, np.float32)),
         ValueError, "same shape"),
        (lambda a: a.accumulate_gradient(np.ones(8, np.float32), np.full(8, np.inf, np.float32)),
         ValueError, "Inf"),
        (lambda a: a.accumulate_gradient(np.ones(8, np.float32), np.ones(8, np.float32),
                                         weight=float("nan")), ValueError, "weight"),
        (lambda a: a.apply_accumulated(1e-3), RuntimeError, "no accumulated gradient"),
        (lambda a: a.set_weights(np.ones((2, 9)), np.zeros((8, 2))), ValueError, r"\(2, 8\)"),
        (lambda a: a.set_weights(np.ones((2, 8)), np.full((8, 2), np.nan)), ValueError, "NaN"),
    ],
)
def test_bad_calls_raise_and_leave_state_unchanged(rng, call, exc, match):
    a = _adapter(sona.MicroLoRA, 8, 2, rng)
    before = _state(a)
    if exc is None:  # float64 batch is converted with a copy, not rejected
        np.testing.assert_allclose(call(a), _oracle(a, np.ones((3, 8))), rtol=1e-5)
        return
    with pytest.raises(exc, match=match):
        call(a)
    after = _state(a)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_nan_single_vector_leaves_out_untouched(backend):
    a = sona.MicroLoRA(16)
    out = np.full(16, 7.0, np.float32)
    x = np.ones(16, np.float32)
    x[15] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        a.forward(x, out=out)
    assert (out == 7.0).all()


def test_batch_nan_names_the_row(backend):
    a = sona.MicroLoRA(16)
    X = np.ones((4, 16), np.float32)
    X[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"x\[2\]"):
        a.forward(X)


def test_negative_lr_rejected_and_pending_kept():
    a = sona.MicroLoRA(8)
    a.accumulate_gradient(np.ones(8, np.float32), np.ones(8, np.float32))
    with pytest.raises(ValueError, match="lr"):
        a.apply_accumulated(-1.0)
    assert a.pending == 1


def test_gradient_refusals_leave_accumulators_untouched(backend):
    fresh = sona.MicroLoRA(16, 2, seed=0)  # B = 0: a NaN in x meets a zero coefficient
    x = np.ones(16, np.float32)
    x[3] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        fresh.accumulate_gradient(x, np.ones(16, np.float32))
    assert fresh.pending == 0
    X = np.ones((4, 16), np.float32)
    X[2] = 1e30  # one row too large: the batch is refused whole
    with pytest.raises(ValueError, match="too large"):
        fresh.accumulate_gradient(X, np.full((4, 16), 1e30, np.float32), weight=1e6)
    assert fresh.pending == 0
    with pytest.raises(RuntimeError, match="no accumulated gradient"):
        fresh.apply_accumulated(0.1)
