"""Background refinement of the pattern bank: PatternStore.refine, refine_bank and the engine's
background cycle (no duplicates, merges, pruning, deferral, oracle queries, bad input)."""

import numpy as np
import pytest

import sona
from sona.bank import REFINE_DEFAULTS, new_bank, refine_bank

D = 64


def clusters(k, seed=0, d=D):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((k, d))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def sample(centres, n, rng, noise=0.8):
    """Queries around the centres: cosine to their centre ~0.78 (noise 0.8 spread over d dims)."""
    t = rng.integers(0, len(centres), n)
    x = centres[t] + noise * rng.standard_normal((n, centres.shape[1])) / np.sqrt(centres.shape[1])
    return x.astype(np.float32), t


def snapshot(bank):
    names = ("centroid", "centroid_sum", "hits", "route_n", "route_s", "baseline", "usage")
    return {n: getattr(bank, n).copy() for n in names} | {"n": bank.n_patterns}


def assert_unchanged(bank, snap):
    assert bank.n_patterns == snap["n"]
    for name, arr in snap.items():
        if name != "n":
            np.testing.assert_array_equal(getattr(bank, name), arr)


def test_refine_finds_planted_clusters_and_repeated_cycles_do_not_duplicate(backend):
    centres = clusters(6)
    rng = np.random.default_rng(1)
    bank = new_bank(D, 4, 64)
    for cycle in range(6):
        X, _ = sample(centres, 500, rng)
        res = refine_bank(bank, X, np.full(500, 0.8, np.float32), k=32, seed=cycle)
        assert res["clustered"] == 500 and res["sampled"] == 256
        assert bank.n_patterns <= 6
        if cycle:
            assert res["created"] == 0
    assert bank.n_patterns == 6
    # each planted centre has its own pattern
    cos = centres @ bank.centroid[:6].T.astype(np.float64)
    assert sorted(np.argmax(cos, axis=1)) == list(range(6))
    assert (cos.max(axis=1) > 0.95).all()


def test_engine_background_cycles_keep_patterns_bounded(backend):
    centres = clusters(5, seed=3)
    rng = np.random.default_rng(2)
    engine = sona.SonaEngine(hidden_dim=D, max_patterns=64, pattern_clusters=16,
                             bank_params={"new_pattern_cos": 0.5})
    counts = []
    for _ in range(5):
        X, t = sample(centres, 300, rng)
        for x, c in zip(X, t):
            tid = engine.start_trajectory(x)
            engine.record_step(tid, int(c) % 4, 0.5, 10.0)
            engine.end_trajectory(tid, 0.9 if c % 2 else 0.4)
        res = engine.run_background_cycle()
        assert res.trajectories == 300 and res.refined == 300
        assert res.patterns == engine.bank.n_patterns
        counts.append(engine.bank.n_patterns)
    assert counts[-1] <= 5 * 2  # online leader clustering may split a little; never grows
    assert counts[-1] <= counts[0]
    d = engine.stats()["last_background_cycle"]
    for key in ("patterns_created", "patterns_updated", "patterns_merged", "patterns_pruned",
                "refined", "deferred"):
        assert key in d


def test_updates_leave_online_statistics_alone():
    centres = clusters(2, seed=5)
    bank = new_bank(D, 3, 8)
    rng = np.random.default_rng(0)
    X, _ = sample(centres, 200, rng)
    refine_bank(bank, X, np.ones(200, np.float32), k=8)
    assert bank.n_patterns == 2
    bank.route_n[:2] = [[1, 2, 3], [4, 5, 6]]
    bank.route_s[:2] = [[0.5, 1, 1.5], [2, 2.5, 3]]
    bank.baseline[:2] = [0.25, 0.75]
    before = snapshot(bank)
    res = refine_bank(bank, sample(centres, 200, rng)[0], np.ones(200, np.float32), k=8)
    assert res["updated"] >= 2 and res["created"] == 0
    for name in ("route_n", "route_s", "baseline", "hits", "usage"):
        np.testing.assert_array_equal(getattr(bank, name), before[name])
    assert not np.array_equal(bank.centroid_sum, before["centroid_sum"])
    np.testing.assert_allclose(np.linalg.norm(bank.centroid[:2], axis=1), 1, atol=1e-5)


def put(bank, rows):
    """Writes patterns directly: rows of (direction, hits, baseline, route_n, route_s, usage)."""
    for j, (v, hits, base, rn, rs, use) in enumerate(rows):
        v = np.asarray(v, np.float64)
        bank.centroid_sum[j] = v * hits
        bank.centroid[j] = v / np.linalg.norm(v)
        bank.hits[j], bank.baseline[j], bank.usage[j] = hits, base, use
        bank.route_n[j], bank.route_s[j] = rn, rs
    bank._set_n_patterns(len(rows))


def test_duplicates_merge_and_indices_stay_compact(backend):
    c = clusters(3, seed=8)
    near = c[0] + 0.05 * clusters(1, seed=9)[0]  # cosine ~0.999 with c[0]
    bank = new_bank(D, 2, 8)
    put(bank, [(c[0], 10, 0.2, [1, 2], [0.5, 1.0], 3),
               (c[1], 4, 0.9, [0, 1], [0, 0.9], 1),
               (c[2], 6, 0.5, [2, 0], [1, 0], 0),
               (near, 30, 0.6, [3, 3], [1.5, 2.0], 5)])
    X, _ = sample(c[:1], 100, np.random.default_rng(0), noise=0.3)
    res = refine_bank(bank, X, np.ones(100, np.float32), k=4)
    assert res["merged"] == 1 and bank.n_patterns == 3
    # pattern 0 absorbed pattern 3 (hits-weighted baseline, summed counts and usage) and the
    # others kept their indices
    assert bank.hits[0] == 40
    assert bank.baseline[0] == pytest.approx((10 * 0.2 + 30 * 0.6) / 40)
    np.testing.assert_allclose(bank.route_n[0], [4, 5])
    np.testing.assert_allclose(bank.route_s[0], [2.0, 3.0])
    assert bank.usage[0] == 8
    assert bank.baseline[1] == pytest.approx(0.9) and bank.baseline[2] == pytest.approx(0.5)
    assert bank.centroid[0] @ c[0] > 0.99
    assert not bank.centroid[3].any() and bank.hits[3] == 0  # the freed row is clean
    # the merged pattern is still found by a query
    assert bank.query(c[0].astype(np.float32), 1)[0].id == 0


def test_merge_moves_the_last_pattern_into_the_hole():
    c = clusters(4, seed=11)
    bank = new_bank(D, 2, 8)
    put(bank, [(c[0], 5, 0.5, [0, 0], [0, 0], 0), (c[0] + 0.01 * c[1], 5, 0.5, [0, 0], [0, 0], 0),
               (c[2], 7, 0.1, [1, 0], [0.1, 0], 0), (c[3], 9, 0.3, [0, 1], [0, 0.3], 0)])
    res = bank.refine(np.asarray(c[:1], np.float32), np.ones(1, np.float32), 1)
    assert res["merged"] == 1 and bank.n_patterns == 3
    assert bank.centroid[1] @ c[3] > 0.999 and bank.hits[1] == 9  # old pattern 3 now at 1
    assert bank.centroid[2] @ c[2] > 0.999


def test_full_bank_prunes_lowest_value_untouched_patterns(backend):
    c = clusters(6, seed=12)
    bank = new_bank(D, 2, 4)
    # values hits x baseline: 8, 1.5, 20, 0.4
    put(bank, [(c[0], 10, 0.8, [1, 0], [0.8, 0], 0), (c[1], 3, 0.5, [0, 0], [0, 0], 0),
               (c[2], 40, 0.5, [0, 0], [0, 0], 0), (c[3], 2, 0.2, [0, 0], [0, 0], 0)])
    X, _ = sample(c[4:6], 200, np.random.default_rng(1), noise=0.3)
    res = refine_bank(bank, X, np.ones(200, np.float32), k=2)
    assert res["pruned"] == 2 and res["created"] == 2
    assert bank.n_patterns == bank.capacity == 4
    kept = {int(np.argmax(bank.centroid[:4] @ v)) for v in c[[0, 2]]}
    assert kept == {0, 2}  # the two valuable patterns stay where they were
    new = bank.centroid[[1, 3]] @ c[4:6].T
    assert sorted(np.argmax(new, axis=1)) == [0, 1] and new.max(axis=1).min() > 0.95
    assert (bank.route_n[[1, 3]] == 0).all()  # new patterns start without route statistics
    # again: the bank stays at capacity, nothing duplicates
    X, _ = sample(c[4:6], 200, np.random.default_rng(2), noise=0.3)
    res = refine_bank(bank, X, np.ones(200, np.float32), k=2)
    assert res["created"] == 0 and bank.n_patterns == 4


def test_every_pattern_touched_folds_instead_of_pruning():
    c = clusters(3, seed=13)
    bank = new_bank(D, 2, 1)
    put(bank, [(c[0], 5, 0.5, [0, 0], [0, 0], 0)])
    X = np.asarray(np.concatenate([np.repeat(c[:1], 20, 0), np.repeat(c[1:2], 20, 0)]),
                   np.float32)
    res = bank.refine(X, np.ones(40, np.float32), 2, seed=0)
    assert bank.n_patterns == 1 and res["pruned"] + res["updated"] + res["created"] == 2


def test_query_patterns_matches_numpy_oracle_after_refinement(backend):
    centres = clusters(12, seed=14)
    rng = np.random.default_rng(3)
    engine = sona.SonaEngine(hidden_dim=D, max_patterns=32, pattern_clusters=16)
    for _ in range(3):
        X, _ = sample(centres, 400, rng)
        for x in X:
            engine.learn_from_feedback(sona.LearningSignal(0.7, query_embedding=x))
            tid = engine.start_trajectory(x)
            engine.end_trajectory(tid, 0.7)
        engine.run_background_cycle()
    bank = engine.bank
    n = bank.n_patterns
    C = bank.centroid[:n].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1, atol=1e-5)
    for q in sample(centres, 20, rng)[0]:
        got = engine.query_patterns(q, k=5)
        cos = C @ q / np.linalg.norm(q)
        want = np.argsort(-cos, kind="stable")[:5]
        assert [p.id for p in got] == list(want)
        np.testing.assert_allclose([p.score for p in got], cos[want], atol=1e-5)


def test_small_batches_are_deferred_and_counted_not_dropped():
    engine = sona.SonaEngine(hidden_dim=D, max_patterns=16, pattern_clusters=4)
    engine.refine_params["min_records"] = 10
    x = clusters(1, seed=15)[0].astype(np.float32)
    for _ in range(6):
        engine.end_trajectory(engine.start_trajectory(x), 0.8)
    res = engine.run_background_cycle()
    assert res.trajectories == 6 and res.deferred == 6 and res.refined == 0
    for _ in range(5):
        engine.end_trajectory(engine.start_trajectory(x), 0.8)
    res = engine.run_background_cycle()
    assert res.trajectories == 5 and res.deferred == 0 and res.refined == 11
    res = engine.run_background_cycle()
    assert res.trajectories == 0 and res.refined == 0 and res.deferred == 0


def test_low_quality_queries_do_not_seed_patterns():
    bank = new_bank(D, 2, 8)
    X, _ = sample(clusters(2, seed=16), 100, np.random.default_rng(0))
    res = bank.refine(X, np.full(100, 0.1, np.float32), 4, quality_threshold=0.3)
    assert res["clustered"] == 0 and bank.n_patterns == 0


def test_refinement_is_deterministic():
    def run():
        engine = sona.SonaEngine(hidden_dim=D, max_patterns=32, pattern_clusters=8, seed=7)
        rng = np.random.default_rng(0)
        for _ in range(2):
            for x in sample(clusters(4, seed=17), 200, rng)[0]:
                engine.end_trajectory(engine.start_trajectory(x), 0.6)
            engine.run_background_cycle()
        return snapshot(engine.bank)

    a, b = run(), run()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_router_decision_pending_across_a_shrink_is_reclaimed():
    router = sona.Router(["a", "b", "c"], hidden_dim=D, seed=0)
    c = clusters(3, seed=18)
    for v in c:
        router.feedback(router.route(v.astype(np.float32)), 0.5)
    n = router.bank.n_patterns
    d = router.route(c[2].astype(np.float32))
    assert d.pattern == n - 1
    router.bank._set_n_patterns(n - 1)  # as if a merge had removed the last pattern
    router.feedback(d, 1.0)
    assert router.bank.n_patterns == n  # a new pattern, not a write past the end
    assert router.bank.hits[n - 1] == 1


@pytest.mark.parametrize("call, exc, match", [
    (lambda b: b.refine(np.ones((4, D + 1)), np.ones(4), 2), ValueError, r"shape \(n, 64\)"),
    (lambda b: b.refine(np.ones(D), np.ones(1), 2), ValueError, r"shape \(n, 64\)"),
    (lambda b: b.refine(np.full((4, D), np.nan), np.ones(4), 2), ValueError, "NaN or Inf"),
    (lambda b: b.refine(np.ones((4, D)), np.ones(3), 2), ValueError, r"shape \(4,\)"),
    (lambda b: b.refine(np.ones((4, D)), [0.5, 1.5, 0, 0], 2), ValueError, r"in \[0, 1\]"),
    (lambda b: b.refine(np.ones((4, D)), [0.5, np.nan, 0, 0], 2), ValueError, "NaN"),
    (lambda b: b.refine(np.ones((4, D)), np.ones(4), 0), ValueError, "k must be"),
    (lambda b: b.refine(np.ones((4, D)), np.ones(4), 2.5), TypeError, "k must be an integer"),
    (lambda b: b.refine(np.ones((4, D)), np.ones(4), 2, merge_cos=1.5), ValueError,
     "merge_cos"),
    (lambda b: b.refine(np.ones((4, D)), np.ones(4), 2, quality_threshold=-1), ValueError,
     "quality_threshold"),
    (lambda b: b.refine(np.ones((4, D)), np.ones(4), 2, max_points=-1), ValueError,
     "max_points"),
    (lambda b: b.refine(np.ones((4, D)), np.ones(4), 2, max_iter=-1), ValueError, "max_iter"),
    (lambda b: b.refine(np.ones((4, D)), np.ones(4), 2, n_local_trials=0), ValueError,
     "n_local_trials"),
    (lambda b: b.refine("x", np.ones(4), 2), TypeError, "embeddings must be a float32 array"),
    (lambda b: refine_bank(b, np.ones((4, D)), np.ones(4), k=2, bogus=1), ValueError,
     "unknown refine parameters"),
])
def test_bad_input_raises_and_leaves_the_bank_unchanged(call, exc, match):
    bank = new_bank(D, 2, 8)
    X, _ = sample(clusters(2, seed=19), 50, np.random.default_rng(0))
    refine_bank(bank, X, np.ones(50, np.float32), k=4)
    snap = snapshot(bank)
    with pytest.raises(exc, match=match):
        call(bank)
    assert_unchanged(bank, snap)


def test_defaults_are_documented():
    assert set(REFINE_DEFAULTS) == {"min_records", "max_points", "max_iter", "n_local_trials",
                                    "merge_cos"}
