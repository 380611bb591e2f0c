"""SonaEngine through its public API: trajectories, the instant loop (R1-R4, R6), late feedback,
bad input, patterns, cycles, consolidation, state files and threads."""

import json
import pickle
import threading
import time

import numpy as np
import pytest

import sona
import sona.state
from sona import LearningSignal, SonaEngine, UnknownTrajectoryError
from sona.synthetic import RoutingTask, evaluate

D = 64


def _groups(rng, n=4):
    return rng.standard_normal((n, D)).astype(np.float32)


def _train(engine, groups, qualities, n, rng, noise=0.3):
    for i in range(n):
        g = i % len(groups)
        x = (groups[g] + noise * rng.standard_normal(D)).astype(np.float32)
        tid = engine.start_trajectory(x)
        engine.record_step(tid, node_id=g, score=0.5, latency_us=100.0)
        engine.end_trajectory(tid, qualities[g])


def _gain(engine, x):
    """Relative change of x along itself through MicroLoRA."""
    return float((engine.apply_micro_lora(x) - x) @ x / (x @ x))


def _weights(engine):
    return np.concatenate([engine.micro.A.ravel(), engine.micro.B.ravel()])


def test_single_outcomes_move_the_adapter_in_the_right_direction(backend, rng):
    # R1: one outcome per query, 200 of them; the sign follows quality minus the running baseline
    engine = SonaEngine(hidden_dim=D)
    groups = _groups(rng)
    q = [0.9, 0.1, 0.8, 0.2]
    _train(engine, groups, q, 200, rng)
    gains = [_gain(engine, g) for g in groups]
    assert gains[0] > 1e-3 and gains[2] > 1e-3      # good kinds of query are amplified
    assert gains[1] < -1e-3 and gains[3] < -1e-3    # bad ones are damped
    assert engine.stats()["instant_updates"] == 200


def test_both_factors_change(rng):
    # R2: A and B both receive gradients (B first, then A through B)
    engine = SonaEngine(hidden_dim=D)
    A0, B0 = engine.micro.A.copy(), engine.micro.B.copy()
    _train(engine, _groups(rng), [0.9, 0.1, 0.8, 0.2], 50, rng)
    assert not np.array_equal(engine.micro.A, A0)
    assert not np.array_equal(engine.micro.B, B0)


def test_no_information_moves_nothing(backend, rng):
    # R3: quality equal to the running baseline (0.5 from the start) -> no move at all; a tiny
    # residue is not normalised up into a full step
    groups = _groups(rng)
    informative = SonaEngine(hidden_dim=D)
    _train(informative, groups, [0.9, 0.1, 0.8, 0.2], 200, np.random.default_rng(1))
    moved = np.abs(_weights(informative) - _weights(SonaEngine(hidden_dim=D))).max()
    for q in (0.5, 0.5 + 1e-7):
        flat = SonaEngine(hidden_dim=D)
        w0 = _weights(flat)
        _train(flat, groups, [q] * 4, 200, np.random.default_rng(1))
        assert np.abs(_weights(flat) - w0).max() <= 1e-3 * moved


def test_every_learning_entry_point_changes_state(rng):
    # R4: end_trajectory, learn_from_feedback (open trajectory, late feedback, bare embedding)
    engine = SonaEngine(hidden_dim=D)
    x = rng.standard_normal(D).astype(np.float32)
    before = _weights(engine)
    tid = engine.start_trajectory(x)
    engine.end_trajectory(tid, 1.0)
    after_end = _weights(engine)
    assert not np.array_equal(after_end, before)
    engine.learn_from_feedback(LearningSignal.positive(quality=1.0, trajectory_id=tid))  # late
    after_late = _weights(engine)
    assert not np.array_equal(after_late, after_end)
    assert engine.stats()["late_feedbacks"] == 1
    tid2 = engine.start_trajectory(x)
    engine.learn_from_feedback(LearningSignal.negative(quality=0.0, trajectory_id=tid2))  # open
    after_open = _weights(engine)
    assert not np.array_equal(after_open, after_late)
    engine.learn_from_feedback(LearningSignal(0.0, query_embedding=x))
    assert not np.array_equal(_weights(engine), after_open)
    assert engine.stats()["instant_updates"] == 4


def test_activations_give_the_direction(rng):
    engine = SonaEngine(hidden_dim=D)
    x = rng.standard_normal(D).astype(np.float32)
    target = rng.standard_normal(D).astype(np.float32)
    for _ in range(100):
        tid = engine.start_trajectory(x)
        engine.record_step(tid, 0, 1.0, 10.0, activations=target)
        engine.end_trajectory(tid, 1.0 if _ % 2 else 0.9)
    moved = engine.apply_micro_lora(x) - x
    assert moved @ target > 0


def test_adversarial_feedback_keeps_weights_finite(rng):
    # R6: extreme qualities, huge embeddings, repeated identical signals
    engine = SonaEngine(hidden_dim=D)
    big = np.full(D, 1e6, np.float32)
    big[::2] = -1e6
    for i in range(3000):
        x = big if i % 3 == 0 else rng.standard_normal(D).astype(np.float32)
        tid = engine.start_trajectory(x)
        engine.end_trajectory(tid, float(i % 2))
    for arr in (engine.micro.A, engine.micro.B, engine.base.A, engine.base.B):
        assert np.isfinite(arr).all()
    assert np.isfinite(engine.apply_lora(rng.standard_normal(D).astype(np.float32))).all()


def _state(engine):
    return (_weights(engine).copy(), engine.stats())


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda e, t: e.start_trajectory(np.ones(D - 1, np.float32)), ValueError, "shape"),
        (lambda e, t: e.start_trajectory(np.full(D, np.nan, np.float32)), ValueError, "NaN"),
        (lambda e, t: e.start_trajectory(np.full(D, 1e20, np.float32)), ValueError, "magnitude"),
        (lambda e, t: e.start_trajectory(np.array(["a"] * D)), TypeError, "dtype"),
        (lambda e, t: e.end_trajectory(t, 1.5), ValueError, r"\[0, 1\]"),
        (lambda e, t: e.end_trajectory(t, float("nan")), ValueError, r"\[0, 1\]"),
        (lambda e, t: e.end_trajectory(t, "good"), TypeError, "quality"),
        (lambda e, t: e.end_trajectory(t + 1000, 0.5), UnknownTrajectoryError, "not open"),
        (lambda e, t: e.record_step(t + 1000, 0, 0.5, 1.0), UnknownTrajectoryError, "not open"),
        (lambda e, t: e.record_step(t, -1, 0.5, 1.0), ValueError, "node_id"),
        (lambda e, t: e.record_step(t, 0, float("inf"), 1.0), ValueError, "score"),
        (lambda e, t: e.record_step(t, 0, 0.5, -1.0), ValueError, "latency_us"),
        (lambda e, t: e.record_step(t, 0, 0.5, 1.0, activations=np.ones(3)), ValueError,
         "shape"),
        (lambda e, t: e.learn_from_feedback(LearningSignal(0.5)), ValueError, "nothing"),
        (lambda e, t: e.learn_from_feedback(LearningSignal(0.5, trajectory_id=t + 99)),
         UnknownTrajectoryError, "not open"),
        (lambda e, t: e.apply_lora(np.ones(D + 1, np.float32)), ValueError, "shape"),
    ],
)
def test_bad_input_raises_and_changes_nothing(rng, call, exc, match):
    engine = SonaEngine(hidden_dim=D)
    _train(engine, _groups(rng), [0.9, 0.1, 0.8, 0.2], 20, rng)
    tid = engine.start_trajectory(rng.standard_normal(D).astype(np.float32))
    w, st = _state(engine)
    with pytest.raises(exc, match=match):
        call(engine, tid)
    w2, st2 = _state(engine)
    assert np.array_equal(w, w2) and st == st2


def test_ended_trajectory_cannot_end_twice(rng):
    engine = SonaEngine(hidden_dim=D)
    tid = engine.start_trajectory(rng.standard_normal(D).astype(np.float32))
    engine.end_trajectory(tid, 0.7)
    with pytest.raises(UnknownTrajectoryError):
        engine.end_trajectory(tid, 0.7)
    with pytest.raises(UnknownTrajectoryError):
        engine.record_step(tid, 0, 0.1, 1.0)


def test_late_feedback_only_while_stored(rng):
    engine = SonaEngine(hidden_dim=D, trajectory_capacity=8)  # late window = 8 trajectories
    first = engine.start_trajectory(rng.standard_normal(D).astype(np.float32))
    engine.end_trajectory(first, 0.7)
    engine.learn_from_feedback(LearningSignal(0.9, trajectory_id=first))
    for _ in range(8):
        t = engine.start_trajectory(rng.standard_normal(D).astype(np.float32))
        engine.end_trajectory(t, 0.5)
    with pytest.raises(UnknownTrajectoryError):  # overwritten: no longer stored
        engine.learn_from_feedback(LearningSignal(0.9, trajectory_id=first))


def test_never_ended_trajectories_are_evicted_and_counted(rng):
    engine = SonaEngine(hidden_dim=D, max_open_trajectories=16)
    x = rng.standard_normal(D).astype(np.float32)
    ids = [engine.start_trajectory(x) for _ in range(1000)]
    st = engine.stats()
    assert st["trajectories_open"] == 16 and st["trajectories_evicted"] == 984
    with pytest.raises(UnknownTrajectoryError):
        engine.end_trajectory(ids[0], 0.5)
    engine.end_trajectory(ids[-1], 0.5)


def test_query_patterns_matches_numpy(backend, rng):
    engine = SonaEngine(hidden_dim=D)
    groups = _groups(rng, 6)
    _train(engine, groups, [0.9, 0.1, 0.8, 0.2, 0.6, 0.4], 120, rng, noise=0.05)
    n = engine.bank.n_patterns
    assert n == 6
    x = groups[2] + 0.1 * rng.standard_normal(D).astype(np.float32)
    C = engine.bank.centroid[:n].astype(np.float64)
    cos = C @ x / (np.linalg.norm(C, axis=1) * np.linalg.norm(x))
    want = np.argsort(-cos, kind="stable")[:3]
    got = engine.query_patterns(x, k=3)
    assert [p.id for p in got] == want.tolist()
    best = got[0]
    assert best.quality == pytest.approx(0.8, abs=0.05)
    assert best.cluster_size == 20 and best.usage_count == 1 and best.best_route == 2
    assert best.route_stats.shape == (engine.bank.n_routes, 2)
    np.testing.assert_allclose(np.linalg.norm(best.centroid), 1.0, rtol=1e-5)
    assert engine.query_patterns(x, k=0) == []
    assert len(engine.query_patterns(x, k=50)) == 6


def test_background_cycle_drains_every_record_and_consolidates(rng):
    engine = SonaEngine(hidden_dim=D)
    _train(engine, _groups(rng), [0.9, 0.1, 0.8, 0.2], 3, rng)  # a small batch is not dropped
    X = rng.standard_normal((50, D)).astype(np.float32)
    before = engine.apply_lora(X)
    res = engine.run_background_cycle()
    assert res.trajectories == 3 and res.consolidated and res.seconds >= 0
    assert not engine.micro.B.any()                      # micro tier reset...
    np.testing.assert_allclose(engine.apply_lora(X), before, atol=1e-4)  # ...function kept
    again = engine.run_background_cycle()
    assert again.trajectories == 0 and not again.consolidated
    st = engine.stats()
    assert st["background_cycles"] == 2 and st["trajectories_drained"] == 3
    json.dumps(st)


def test_consolidation_preserves_routing_decisions():
    task = RoutingTask(seed=0)
    router = sona.Router([f"m{k}" for k in range(4)], hidden_dim=task.dim, seed=0,
                         use_prior=False)
    evaluate(router, task, 1500, seed=1)
    X, _ = task.sample(1000, np.random.default_rng(9))
    before = np.array([np.argmax(router.scores(x)) for x in X])
    assert router.engine.run_background_cycle().consolidated
    after = np.array([np.argmax(router.scores(x)) for x in X])
    assert (before == after).mean() >= 0.99
    evaluate(router, task, 200, seed=2)  # keeps learning after the re-factoring
    assert np.isfinite(router.micro.B).all()


def test_instant_cycle_evicts_expired(rng):
    engine = SonaEngine(hidden_dim=D, open_trajectory_timeout_s=1e-6)
    engine.start_trajectory(rng.standard_normal(D).astype(np.float32))
    res = engine.run_instant_cycle()
    assert res.evicted == 1 and engine.stats()["trajectories_open"] == 0


def test_config_and_overrides():
    cfg = sona.SonaConfig.edge_deployment(hidden_dim=32)
    engine = SonaEngine(cfg, seed=3)
    assert engine.config.hidden_dim == 32 and engine.config.seed == 3
    with pytest.raises(TypeError):
        SonaEngine({"hidden_dim": 8})
    with pytest.raises(ValueError, match="embedding_dim"):
        SonaEngine(hidden_dim=16, embedding_dim=8)
    with pytest.raises(ValueError):
        SonaEngine(hidden_dim=16, micro_lora_rank=3)


def test_save_load_round_trip(backend, tmp_path, rng):
    engine = SonaEngine(hidden_dim=D)
    groups = _groups(rng)
    _train(engine, groups, [0.9, 0.1, 0.8, 0.2], 80, rng)
    engine.run_background_cycle()
    _train(engine, groups, [0.9, 0.1, 0.8, 0.2], 20, rng)
    path = tmp_path / "engine.sona"
    engine.save(path)
    loaded = SonaEngine.load(path)
    X = rng.standard_normal((20, D)).astype(np.float32)
    assert np.array_equal(loaded.apply_lora(X), engine.apply_lora(X))
    assert loaded.bank.n_patterns == engine.bank.n_patterns
    for e in (engine, loaded):  # continued learning is identical
        _train(e, groups, [0.9, 0.1, 0.8, 0.2], 40, np.random.default_rng(5))
    assert np.array_equal(_weights(loaded), _weights(engine))
    s1, s2 = engine.stats(), loaded.stats()
    assert s1["instant_updates"] == s2["instant_updates"] and s1["patterns"] == s2["patterns"]


@pytest.mark.parametrize("via", ["bytes", "pickle"])
def test_bytes_and_pickle_round_trip(backend, tmp_path, rng, via):
    engine = SonaEngine(hidden_dim=D)
    groups = _groups(rng)
    _train(engine, groups, [0.9, 0.1, 0.8, 0.2], 80, rng)
    engine.run_background_cycle()
    data = engine.to_bytes()
    engine.save(tmp_path / "e.sona")
    assert data == (tmp_path / "e.sona").read_bytes()
    twin = SonaEngine.from_bytes(data) if via == "bytes" else pickle.loads(pickle.dumps(engine))
    assert type(twin) is SonaEngine and twin.to_bytes() == data
    X = rng.standard_normal((20, D)).astype(np.float32)
    assert np.array_equal(twin.apply_lora(X), engine.apply_lora(X))
    for e in (engine, twin):  # continued learning is identical
        _train(e, groups, [0.9, 0.1, 0.8, 0.2], 40, np.random.default_rng(5))
    assert np.array_equal(_weights(twin), _weights(engine))
    assert twin.to_bytes() == engine.to_bytes()


def test_from_bytes_rejects_router_and_broken_bytes():
    with pytest.raises(sona.StateFileError, match="holds 'router' state"):
        SonaEngine.from_bytes(sona.Router(["a", "b"], hidden_dim=8).to_bytes())
    data = SonaEngine(hidden_dim=8).to_bytes()
    with pytest.raises(sona.StateFileError, match="truncated"):
        SonaEngine.from_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[-3] ^= 0x01
    with pytest.raises(sona.StateFileError, match="checksum"):
        SonaEngine.from_bytes(bytes(flipped))
    arrays, meta = sona.state.decode_state(data)
    meta["n_patterns"] = 10**6
    with pytest.raises(sona.StateFileError, match="cannot load sona engine state from bytes"):
        SonaEngine.from_bytes(sona.state.encode_state(arrays, meta, "engine"))
    with pytest.raises(TypeError, match="needs bytes"):
        SonaEngine.from_bytes("engine")


def test_load_reads_a_config_saved_with_the_removed_fields(tmp_path, rng):
    # engine files written while SonaConfig still had ewc_lambda and base_lora_lr carry them in
    # their config; those values never changed the engine, so the file loads as it was saved
    from sona.state import read_state, write_state

    engine = SonaEngine(hidden_dim=D)
    _train(engine, _groups(rng), [0.9, 0.1, 0.8, 0.2], 20, rng)
    engine.save(tmp_path / "new.sona")
    arrays, meta = read_state(tmp_path / "new.sona", "engine")
    meta["config"].update(ewc_lambda=50.0, base_lora_lr=1.0)
    write_state(tmp_path / "old.sona", arrays, meta, "engine")
    loaded = SonaEngine.load(tmp_path / "old.sona")
    assert loaded.config == engine.config
    X = rng.standard_normal((5, D)).astype(np.float32)
    assert np.array_equal(loaded.apply_lora(X), engine.apply_lora(X))


def test_load_rejects_router_and_broken_files(tmp_path):
    router = sona.Router(["a", "b"], hidden_dim=8)
    router.save(tmp_path / "r.sona")
    with pytest.raises(sona.StateFileError):
        SonaEngine.load(tmp_path / "r.sona")
    engine = SonaEngine(hidden_dim=8)
    engine.save(tmp_path / "e.sona")
    data = (tmp_path / "e.sona").read_bytes()
    (tmp_path / "t.sona").write_bytes(data[: len(data) // 2])
    with pytest.raises(sona.StateFileError):
        SonaEngine.load(tmp_path / "t.sona")
    with pytest.raises(FileNotFoundError):
        SonaEngine.load(tmp_path / "missing.sona")


def test_threads_route_and_learn_while_background_runs():
    task = RoutingTask(seed=3, dim=64)
    router = sona.Router([f"m{k}" for k in range(4)], hidden_dim=64, seed=1)
    engine = router.engine
    engine.start_background(0.005)
    errors = []

    def worker(seed):
        try:
            rng = np.random.default_rng(seed)
            X, c = task.sample(500, rng)
            for x, ci in zip(X, c):
                d = router.route(x)
                router.feedback(d, task.reward(int(ci), d.index, rng))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.stop_background()
    engine.run_background_cycle()
    assert not errors
    st = engine.stats()
    assert router.decisions == router.feedbacks == 2000
    assert st["trajectories_ended"] == 2000 and st["trajectories_drained"] == 2000
    assert st["background_cycles"] >= 2


def test_instant_step_is_accumulate_then_apply(backend, rng):
    # the engine's fused instant step equals the public two-call path on the same adapter
    engine = SonaEngine(hidden_dim=D, micro_lora_lr=0.05)
    twin = sona.MicroLoRA(D, 2, seed=0)
    for _ in range(3):  # a few steps, so B is non-zero and A moves too
        twin.set_weights(engine.micro.A, engine.micro.B)
        x = rng.standard_normal(D).astype(np.float32)
        baseline = engine.global_baseline
        tid = engine.start_trajectory(x)
        engine.end_trajectory(tid, 0.95)
        xhat = x / np.linalg.norm(x)
        twin.accumulate_gradient(x, xhat.astype(np.float32), weight=-(0.95 - baseline))
        twin.apply_accumulated(0.05)
        np.testing.assert_allclose(engine.micro.A, twin.A, atol=1e-6)
        np.testing.assert_allclose(engine.micro.B, twin.B, atol=1e-6)


def test_coordinator_checkpoints(tmp_path, rng):
    engine = SonaEngine(hidden_dim=D)
    _train(engine, _groups(rng), [0.9, 0.1, 0.8, 0.2], 40, rng)
    path = tmp_path / "ckpt.sona"
    engine.start_background(0.01, checkpoint_path=path)
    with pytest.raises(RuntimeError, match="already running"):
        engine.start_background(0.01)
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.close()
    assert SonaEngine.load(path).stats()["instant_updates"] == 40
    with pytest.raises(ValueError):
        engine.start_background(0.0)


def test_coordinator_triggers_by_trajectory_count(rng):
    engine = SonaEngine(hidden_dim=D)
    engine.start_background(3600.0, every_n_trajectories=50)
    _train(engine, _groups(rng), [0.9, 0.1, 0.8, 0.2], 60, rng)
    deadline = time.monotonic() + 10
    while engine.stats()["background_cycles"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.stop_background()
    st = engine.stats()
    assert st["background_cycles"] >= 1 and st["trajectories_drained"] >= 50
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="every_n_trajectories"):
            engine.start_background(1.0, every_n_trajectories=bad)
