"""sona.spherical_kmeans: planted-cluster recovery, determinism, weights, oracles, bad input."""

from math import comb

import numpy as np
import pytest

import sona


def adjusted_rand_index(a, b) -> float:
    """ARI of two labelings (Hubert & Arabie), from the contingency table."""
    a, b = np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(table, (a, b), 1)
    pairs = sum(comb(int(v), 2) for v in table.ravel())
    rows = sum(comb(int(v), 2) for v in table.sum(axis=1))
    cols = sum(comb(int(v), 2) for v in table.sum(axis=0))
    total = comb(len(a), 2)
    expected = rows * cols / total
    top = 0.5 * (rows + cols)
    return 1.0 if top == expected else (pairs - expected) / (top - expected)


def planted(n=600, k=8, d=48, noise=0.15, seed=0, scale=True):
    """n points around k random unit directions (cosine to their centre ~0.9: well separated,
    as random directions in d dims are nearly orthogonal), random norms."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.permutation(np.arange(n) % k)
    X = centres[truth] + noise * rng.standard_normal((n, d)) / np.sqrt(d) * 3
    if scale:  # spherical k-means must ignore the norms
        X *= rng.uniform(0.1, 10.0, (n, 1))
    return X.astype(np.float32), truth, centres


def unit(X):
    X = np.asarray(X, np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_ari_helper():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) < 0
    rng = np.random.default_rng(0)
    assert abs(adjusted_rand_index(rng.integers(0, 5, 2000), rng.integers(0, 5, 2000))) < 0.02


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_planted_clusters(backend, seed):
    X, truth, _ = planted(seed=seed)
    c, labels, inertia = sona.spherical_kmeans(X, 8, seed=seed)
    assert adjusted_rand_index(truth, labels) >= 0.95
    assert c.shape == (8, 48) and c.dtype == np.float32
    assert labels.shape == (600,) and labels.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    assert inertia >= 0


def test_recovers_planted_clusters_weighted_and_large(backend):
    X, truth, _ = planted(n=2000, k=12, d=256, noise=0.3, seed=7)
    w = np.random.default_rng(1).uniform(0.05, 1.0, len(X))
    _, labels, _ = sona.spherical_kmeans(X, 12, weights=w, seed=3)
    assert adjusted_rand_index(truth, labels) >= 0.95


def test_same_seed_same_result_and_backends_agree():
    X, truth, _ = planted(n=500, k=5, d=33, noise=0.3, seed=4)
    results = {}
    for b in sona.backends():
        prev = sona.get_backend()
        sona.set_backend(b)
        try:
            r1 = sona.spherical_kmeans(X, 5, seed=11)
            r2 = sona.spherical_kmeans(X, 5, seed=11)
        finally:
            sona.set_backend(prev)
        np.testing.assert_array_equal(r1[1], r2[1])
        np.testing.assert_array_equal(r1[0], r2[0])
        assert r1[2] == r2[2]
        results[b] = r1
    ref = results["scalar"]
    for c, labels, inertia in results.values():
        np.testing.assert_array_equal(labels, ref[1])
        np.testing.assert_allclose(c, ref[0], atol=1e-5)
        assert inertia == pytest.approx(ref[2], rel=1e-4)


def test_restarts_pick_the_lowest_inertia():
    X, truth, _ = planted(n=600, k=6, noise=0.35, seed=0)
    single = [sona.spherical_kmeans(X, 6, seed=s, n_init=1) for s in range(6)]
    best = sona.spherical_kmeans(X, 6, seed=0, n_init=6)
    assert best[2] <= min(r[2] for r in single) + 1e-3
    assert adjusted_rand_index(truth, best[1]) >= 0.95
    plain = sona.spherical_kmeans(X, 6, seed=0, n_init=1, n_local_trials=1)
    assert plain[0].shape == (6, 48)


def test_different_seeds_draw_different_seeds():
    X = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    labelings = {tuple(sona.spherical_kmeans(X, 8, seed=s, max_iter=0)[1]) for s in range(5)}
    assert len(labelings) > 1


def test_matches_numpy_oracle(backend):
    """Converged: every label is the nearest centroid, each centroid the normalised weighted sum
    of its members, inertia = sum w (2 - 2 cos)."""
    X, _, _ = planted(n=300, k=4, d=20, noise=1.0, seed=5)
    w = np.random.default_rng(2).uniform(0.1, 2.0, len(X))
    c, labels, inertia = sona.spherical_kmeans(X, 4, weights=w, seed=0, max_iter=100)
    Xh = unit(X)
    np.testing.assert_array_equal(labels, np.argmax(Xh @ c.T.astype(np.float64), axis=1))
    for j in range(4):
        s = (w[labels == j, None] * Xh[labels == j]).sum(axis=0)
        np.testing.assert_allclose(c[j], s / np.linalg.norm(s), atol=2e-5)
    oracle = np.sum(w * (2 - 2 * np.sum(Xh * c[labels], axis=1)))
    assert inertia == pytest.approx(oracle, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("d", [1, 7, 8, 9, 17, 65])
def test_odd_dims_and_edge_k(backend, d):
    rng = np.random.default_rng(d)
    X = rng.standard_normal((40, d)).astype(np.float32)
    c, labels, _ = sona.spherical_kmeans(X, 1)
    assert (labels == 0).all()
    np.testing.assert_allclose(c[0], unit(unit(X).sum(axis=0, keepdims=True))[0], atol=1e-5)
    if d > 1:  # k = n: every point its own cluster
        Y = unit(rng.standard_normal((12, d))).astype(np.float32)
        c, labels, inertia = sona.spherical_kmeans(Y, 12, seed=1)
        assert sorted(labels) == list(range(12))
        assert inertia == pytest.approx(0.0, abs=1e-4)


def test_unaligned_view(backend):
    X, truth, _ = planted(n=201, k=3, d=31, noise=0.3, seed=9)
    buf = np.empty(X.size + 1, np.float32)
    view = buf[1:].reshape(X.shape)
    view[...] = X
    _, labels, _ = sona.spherical_kmeans(view, 3, seed=0)
    assert adjusted_rand_index(truth, labels) >= 0.95


def test_weight_pulls_its_centroid(backend):
    rng = np.random.default_rng(3)
    X = unit(np.array([1.0, 0, 0]) + 0.3 * rng.standard_normal((50, 3))).astype(np.float32)
    w = np.ones(50)
    plain = sona.spherical_kmeans(X, 1, weights=w)[0][0]
    heavy = int(np.argmin(X @ plain))  # the member farthest from the unweighted centroid
    w[heavy] = 1000.0
    pulled = sona.spherical_kmeans(X, 1, weights=w)[0][0]
    assert pulled @ X[heavy] > plain @ X[heavy] + 0.05
    assert pulled @ X[heavy] > 0.99


def test_zero_weight_points_are_never_seeds_and_do_not_move_centroids(backend):
    X = np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1], [-1, 0]], np.float32)
    w = np.array([1, 1, 1, 1, 0.0])
    for seed in range(10):
        c, labels, _ = sona.spherical_kmeans(X, 2, weights=w, seed=seed)
        assert labels[0] == labels[1] != labels[2] == labels[3]
        assert max(c[j] @ X[4] for j in range(2)) < 0.0  # no centroid at the weightless point


def test_fewer_distinct_points_than_k_leaves_zero_rows():
    X = np.array([[1, 0], [1, 0], [2, 0], [0, 3]], np.float32)
    c, labels, inertia = sona.spherical_kmeans(X, 4, seed=0)
    assert labels[0] == labels[1] == labels[2] != labels[3]
    norms = np.linalg.norm(c, axis=1)
    assert sorted(np.round(norms, 5)) == [0, 0, 1, 1]
    assert inertia == pytest.approx(0.0, abs=1e-5)


def test_zero_rows_carry_no_weight():
    X = np.array([[0, 0], [1, 0], [1, 0.1], [0, 0]], np.float32)
    c, labels, _ = sona.spherical_kmeans(X, 1)
    np.testing.assert_allclose(c[0], unit(unit(X[1:3]).sum(axis=0, keepdims=True))[0], atol=1e-6)


def test_converts_other_dtypes_and_lists():
    X = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
    for arr in (X, np.array(X), np.array(X, np.float16), (np.array(X) * 10).astype(np.int64)):
        _, labels, _ = sona.spherical_kmeans(arr, 2, seed=0)
        assert labels[0] == labels[1] != labels[2] == labels[3]


def test_releases_the_gil_and_is_thread_safe():
    import threading

    X, truth, _ = planted(n=800, k=4, d=64, noise=0.3, seed=1)
    out = {}

    def work(i):
        out[i] = sona.spherical_kmeans(X, 4, seed=5)[1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for labels in out.values():
        np.testing.assert_array_equal(labels, out[0])


X4 = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)


@pytest.mark.parametrize("args, kwargs, exc, match", [
    (("abc", 1), {}, TypeError, "X must be a float32 array"),
    ((np.array([["a", "b"]]), 1), {}, TypeError, "X must be a float32 array"),
    ((np.ones(4, np.float32), 1), {}, ValueError, r"X must be 2-D"),
    ((np.ones((2, 2, 2), np.float32), 1), {}, ValueError, r"X must be 2-D"),
    ((np.ones((0, 4), np.float32), 1), {}, ValueError, "at least one row"),
    ((np.ones((4, 0), np.float32), 1), {}, ValueError, "at least one row"),
    ((np.array([[1, np.nan]], np.float32), 1), {}, ValueError, "NaN or Inf"),
    ((np.array([[1, np.inf]], np.float64), 1), {}, ValueError, "NaN or Inf"),
    ((np.ones((4, 4), np.float32)[:, ::2], 1), {}, ValueError, "C-contiguous"),
    ((X4, 0), {}, ValueError, r"k must be an integer in 1\.\.4; got 0"),
    ((X4, 5), {}, ValueError, r"k must be an integer in 1\.\.4; got 5"),
    ((X4, -1), {}, ValueError, r"k must be an integer in 1\.\.4; got -1"),
    ((X4, 2.0), {}, TypeError, "k must be an integer; got float"),
    ((X4, True), {}, TypeError, "k must be an integer; got bool"),
    ((X4, None), {}, TypeError, "k must be an integer"),
    ((X4, 2), {"weights": np.ones(3)}, ValueError, r"weights must have shape \(4,\)"),
    ((X4, 2), {"weights": np.ones((4, 1))}, ValueError, r"weights must have shape \(4,\)"),
    ((X4, 2), {"weights": [1, -1, 1, 1]}, ValueError, "weights must be >= 0"),
    ((X4, 2), {"weights": [1, np.nan, 1, 1]}, ValueError, "weights contains NaN"),
    ((X4, 2), {"weights": np.zeros(4)}, ValueError, "positive sum"),
    ((X4, 2), {"weights": ["a"] * 4}, TypeError, "weights must be a float32 array"),
    ((X4, 2), {"seed": -1}, ValueError, "seed must be an integer in 0.."),
    ((X4, 2), {"seed": 2**64}, ValueError, "seed must be an integer in 0.."),
    ((X4, 2), {"seed": 1.5}, TypeError, "seed must be an integer"),
    ((X4, 2), {"max_iter": -1}, ValueError, "max_iter must be an integer in 0.."),
    ((X4, 2), {"max_iter": "5"}, TypeError, "max_iter must be an integer"),
    ((X4, 2), {"n_init": 0}, ValueError, r"n_init must be an integer in 1\.\.1000"),
    ((X4, 2), {"n_local_trials": 0}, ValueError, r"n_local_trials must be an integer in 1\.\.64"),
    ((X4, 2), {"n_local_trials": 65}, ValueError, r"n_local_trials must be an integer in 1\.\.64"),
    ((np.zeros((3, 2), np.float32), 1), {}, ValueError, "no non-zero row"),
    ((np.array([[0, 0], [1, 0]], np.float32), 1), {"weights": [1, 0]}, ValueError,
     "no non-zero row"),
])
def test_bad_input_raises_clearly(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sona.spherical_kmeans(*args, **kwargs)


def test_numpy_integer_arguments_are_accepted():
    c, labels, _ = sona.spherical_kmeans(X4, np.int64(2), seed=np.uint64(3),
                                         max_iter=np.int32(5))
    assert c.shape == (2, 2)
