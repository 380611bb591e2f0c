"""Similarity kernels (sona.kernels) on every backend against a float64 numpy oracle."""

import numpy as np
import pytest
from helpers import SIZES, unaligned

import sona
from sona import kernels


def _tol(d):
    # float32 accumulation over d terms of magnitude ~1
    return 1e-5 * (1 + np.sqrt(max(d, 1))) * 4


@pytest.mark.parametrize("d", SIZES)
def test_dot_scores_match_oracle(backend, rng, d):
    M = rng.standard_normal((5, d)).astype(np.float32)
    x = rng.standard_normal(d).astype(np.float32)
    want = M.astype(np.float64) @ x.astype(np.float64)
    np.testing.assert_allclose(kernels.dot_scores(M, x), want, atol=_tol(d) * 4, rtol=1e-5)
    np.testing.assert_allclose(kernels.dot_scores(unaligned(M), unaligned(x)), want,
                               atol=_tol(d) * 4, rtol=1e-5)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 8, 9, 100])
def test_dot_scores_row_counts(backend, rng, n):
    M = rng.standard_normal((n, 37)).astype(np.float32)
    x = rng.standard_normal(37).astype(np.float32)
    np.testing.assert_allclose(kernels.dot_scores(M, x), M.astype(np.float64) @ x, atol=1e-4)


@pytest.mark.parametrize("d", SIZES)
def test_cosine_scores_match_oracle(backend, rng, d):
    M = rng.standard_normal((6, d)).astype(np.float32)
    x = rng.standard_normal(d).astype(np.float32)
    if d:
        M[2] = 0.0  # zero row scores 0
    M64, x64 = M.astype(np.float64), x.astype(np.float64)
    norms = np.linalg.norm(M64, axis=1) * np.linalg.norm(x64)
    want = np.divide(M64 @ x64, norms, out=np.zeros(6), where=norms > 0)
    np.testing.assert_allclose(kernels.cosine_scores(M, x), want, atol=1e-5)
    np.testing.assert_allclose(kernels.cosine_scores(unaligned(M), unaligned(x)), want, atol=1e-5)


def test_cosine_of_zero_query_is_zero(backend):
    M = np.ones((3, 16), np.float32)
    assert np.array_equal(kernels.cosine_scores(M, np.zeros(16, np.float32)), np.zeros(3))


@pytest.mark.parametrize("d", SIZES)
def test_sqdist_and_norms_match_oracle(backend, rng, d):
    M = rng.standard_normal((5, d)).astype(np.float32)
    x = rng.standard_normal(d).astype(np.float32)
    want = ((M.astype(np.float64) - x) ** 2).sum(axis=1)
    np.testing.assert_allclose(kernels.sqdist_scores(unaligned(M), unaligned(x)), want,
                               rtol=1e-5, atol=_tol(d))
    np.testing.assert_allclose(kernels.row_norms(unaligned(M)),
                               np.linalg.norm(M.astype(np.float64), axis=1), rtol=1e-5, atol=1e-6)


def test_backends_agree_directly(rng):
    if "avx2" not in sona.backends():
        pytest.skip("AVX2 not available on this machine")
    previous = sona.get_backend()
    M = rng.standard_normal((100, 1000)).astype(np.float32)
    x = rng.standard_normal(1000).astype(np.float32)
    out = {}
    try:
        for b in ("scalar", "avx2"):
            sona.set_backend(b)
            out[b] = [f(M, x) for f in (kernels.dot_scores, kernels.cosine_scores,
                                        kernels.sqdist_scores)] + [kernels.row_norms(M)]
    finally:
        sona.set_backend(previous)
    for s, a in zip(out["scalar"], out["avx2"]):
        np.testing.assert_allclose(a, s, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("n", [0, 1, 5, 17, 100])
@pytest.mark.parametrize("k", [0, 1, 3, 5, 200])
def test_topk_matches_stable_argsort(rng, n, k):
    s = rng.integers(0, 7, n).astype(np.float32)  # many ties
    idx, val = kernels.topk(s, k)
    want = np.argsort(-s, kind="stable")[:k]
    assert idx.dtype == np.int64 and val.dtype == np.float32
    assert np.array_equal(idx, want)
    assert np.array_equal(val, s[want])


def test_topk_ranks_nan_last():
    idx, _ = kernels.topk(np.array([np.nan, 1.0, -np.inf, 2.0], np.float32), 4)
    assert idx.tolist() == [3, 1, 2, 0]


def test_cosine_topk(backend, rng):
    M = rng.standard_normal((100, 256)).astype(np.float32)
    x = M[42] * 3.0
    idx, val = kernels.cosine_topk(M, x, 5)
    assert idx[0] == 42 and abs(val[0] - 1.0) < 1e-5
    cos = kernels.cosine_scores(M, x)
    assert np.array_equal(idx, np.argsort(-cos, kind="stable")[:5])


def test_out_is_filled_and_returned(rng):
    M = rng.standard_normal((4, 9)).astype(np.float32)
    x = rng.standard_normal(9).astype(np.float32)
    out = np.empty(4, np.float32)
    assert kernels.dot_scores(M, x, out=out) is out


@pytest.mark.parametrize(
    "M, x, exc, match",
    [
        (np.ones((3, 4), np.float32), np.ones(5, np.float32), ValueError, r"shape \(4,\)"),
        (np.ones(4, np.float32), np.ones(4, np.float32), ValueError, "2-D"),
        (np.ones((3, 4), np.complex64), np.ones(4, np.float32), TypeError, "complex64"),
        (np.ones((3, 4), np.float32), np.array(["a"] * 4), TypeError, "dtype"),
        (np.ones((3, 8), np.float32)[:, ::2], np.ones(4, np.float32), ValueError, "C-contiguous"),
        (np.full((3, 4), np.nan, np.float32), np.ones(4, np.float32), ValueError, "NaN"),
        (np.ones((3, 4), np.float32), np.array([1, np.inf, 1, 1], np.float32), ValueError, "Inf"),
    ],
)
def test_bad_inputs_raise_clearly(M, x, exc, match):
    with pytest.raises(exc, match=match):
        kernels.dot_scores(M, x)


def test_float64_and_int_inputs_are_converted(rng):
    M = rng.standard_normal((3, 5))
    x = np.arange(5)
    np.testing.assert_allclose(kernels.dot_scores(M, x), M @ x, rtol=1e-5)


@pytest.mark.parametrize(
    "out, exc, match",
    [
        (np.empty(3, np.float64), TypeError, "float32"),
        (np.empty(4, np.float32), ValueError, "shape"),
        ([0.0, 0.0, 0.0], TypeError, "numpy"),
    ],
)
def test_bad_out_raises(out, exc, match):
    with pytest.raises(exc, match=match):
        kernels.dot_scores(np.ones((3, 4), np.float32), np.ones(4, np.float32), out=out)


def test_read_only_out_raises_and_is_untouched():
    out = np.zeros(3, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        kernels.dot_scores(np.ones((3, 4), np.float32), np.ones(4, np.float32), out=out)
    assert not out.any()


def test_topk_rejects_negative_k_and_2d():
    with pytest.raises(ValueError, match="k must be"):
        kernels.topk(np.ones(3, np.float32), -1)
    with pytest.raises(ValueError, match="1-D"):
        kernels.topk(np.ones((3, 3), np.float32), 1)
