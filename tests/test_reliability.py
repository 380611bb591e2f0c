"""Regression tests for the reliability audit (issue 16): each test names the finding it covers
and drives the class-level guard through the public API. Crashes here would take the interpreter
down, so scripts/sanitize.sh runs this file under ASan+UBSan too."""

import contextlib
import faulthandler
import gc
import json
import logging
import os
import pickle
import struct
import sys
import threading

import numpy as np
import pytest

import sona
from sona import kernels
from sona._core import PatternStore, TrajectoryBuffer, TrajectoryStore
from sona.state import StateFileError, decode_state

D = 8


def _router(**kw):
    return sona.Router(["a", "b"], hidden_dim=D, seed=0, **kw)


# ---- 1: closed trajectory buffer ----------------------------------------------------------------

def test_closed_buffer_is_an_error_for_every_user_of_the_store():
    r = _router()
    x = np.ones(D, np.float32)
    d = r.route(x)
    r.engine.store.buffer.close()
    for call in (lambda: r.route(x), lambda: r.feedback(d, 1.0),
                 lambda: r.engine.start_trajectory(x), lambda: r.engine.end_trajectory(1, 0.5),
                 lambda: r.engine.record_step(1, 0, 0.5, 1.0),
                 lambda: r.engine.learn_from_feedback(sona.LearningSignal(0.5, trajectory_id=1)),
                 lambda: r.engine.store.cancel(1), lambda: r.engine.store.evict_expired(),
                 lambda: r.engine.store.start(x)):
        with pytest.raises(ValueError, match="closed"):
            call()
    assert not d.consumed
    assert r.engine.store.open_count >= 0  # the per-process table itself stays readable


# ---- 10: classes built directly, half-constructed or re-initialised ----------------------------

def test_classes_built_without_init_raise_instead_of_crashing():
    with pytest.raises(ValueError, match="query_patterns"):
        _ = sona.Pattern().centroid
    with pytest.raises(ValueError, match="query_patterns"):
        _ = sona.Pattern().route_stats
    with pytest.raises(ValueError, match="route"):
        _ = sona.Decision().probs
    store = TrajectoryStore.__new__(TrajectoryStore)
    assert repr(store) == "TrajectoryStore(uninitialised)"
    for call in (lambda: len(store), lambda: store.cancel(1), lambda: store.start(np.ones(4)),
                 lambda: store.max_open, lambda: store.stats(), lambda: store.evict_expired()):
        with pytest.raises(RuntimeError, match="not initialised"):
            call()
    bank = PatternStore.__new__(PatternStore)
    for call in (lambda: bank.query(np.ones(4), 1), lambda: bank.nearest(np.ones(4)),
                 lambda: bank._set_n_patterns(0)):
        with pytest.raises(RuntimeError, match="not initialised"):
            call()
    core = sona.Router.__new__(sona.Router)
    for call in (lambda: core.route(np.ones(D, np.float32)),
                 lambda: core.scores(np.ones(D, np.float32)),
                 lambda: core._assign("bias", np.zeros(2, np.float32))):
        with pytest.raises(RuntimeError, match="not initialised"):
            call()
    engine = sona.SonaEngine.__new__(sona.SonaEngine)
    with pytest.raises(RuntimeError, match="not initialised"):
        engine.start_trajectory(np.ones(D, np.float32))
    # a Decision made by nobody is refused by feedback, not dereferenced
    with pytest.raises(ValueError, match="another router"):
        _router().feedback(sona.Decision(), 1.0)


def test_reinitialising_live_objects_is_refused():
    r = _router()
    d = r.route(np.ones(D, np.float32))
    with pytest.raises(RuntimeError, match="already initialised"):
        r.__init__(["a", "b", "c", "d"], hidden_dim=4096)
    with pytest.raises(RuntimeError, match="already initialised"):
        sona.MicroLoRA.__init__(r.micro, 4096, 1)
    with pytest.raises(RuntimeError, match="already initialised"):
        PatternStore.__init__(r.bank, 4096, 2, 10, 0.45, 0.999, 10.0, 0.05)
    with pytest.raises(RuntimeError, match="already initialised"):
        sona.SonaEngine.__init__(r.engine, hidden_dim=4096)
    r.feedback(d, 1.0)  # the old decision still fits the router it came from
    assert r.micro.dim == D and r.bank.dim == D and r.feedbacks == 1


# ---- 5: Router <-> Decision cycles are collectable -------------------------------------------

def test_router_keeping_its_decisions_is_collected():
    import weakref

    refs = []
    for _ in range(5):
        r = _router()
        r.pending = {0: r.route(np.ones(D, np.float32))}  # router -> decision -> router
        refs.append(weakref.ref(r))
        del r
    gc.collect()
    assert all(ref() is None for ref in refs)


# ---- 4: non-native byte order -----------------------------------------------------------------

def test_big_endian_input_is_converted_everywhere():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(D).astype(np.float32)
    xb = x.astype(">f4")
    r = _router()
    assert np.array_equal(r.scores(xb), r.scores(x))
    lora = sona.MicroLoRA(D, 2, seed=1)
    lora.set_weights(lora.A, rng.standard_normal((D, 2)).astype(np.float32))
    assert np.array_equal(lora.forward(xb), lora.forward(x))
    M = rng.standard_normal((5, D)).astype(np.float32)
    assert np.array_equal(kernels.dot_scores(M.astype(">f4"), xb), kernels.dot_scores(M, x))
    e = sona.SonaEngine(hidden_dim=D)
    tid = e.start_trajectory(xb)
    e.end_trajectory(tid, 0.9)
    assert np.isfinite(e.micro.B).all() and np.abs(e.micro.B).max() > 1e-4
    with pytest.raises(TypeError, match="native byte order"):
        lora.forward(x, out=np.empty(D, ">f4"))
    theta = np.zeros(D, np.float32)
    with pytest.raises(TypeError, match="native byte order"):
        kernels.adam_step(theta, np.zeros(D, ">f4"), np.zeros(D, np.float32), x, 1)
    kernels.adam_step(theta, np.zeros(D, np.float32), np.zeros(D, np.float32), xb, 1)
    assert np.array_equal(np.sign(theta), -np.sign(x))


# ---- 9: out= overlapping an input -------------------------------------------------------------

def test_out_overlapping_an_input_is_refused_or_exact():
    rng = np.random.default_rng(1)
    e = sona.SonaEngine(hidden_dim=D)
    e.micro.set_weights(e.micro.A, rng.standard_normal((D, 2)).astype(np.float32))
    e.base.set_weights(e.base.A, rng.standard_normal((D, e.base.rank)).astype(np.float32))
    X = rng.standard_normal((3, D)).astype(np.float32)
    want = e.apply_lora(X)
    Y = X.copy()
    assert e.apply_lora(Y, out=Y) is Y
    np.testing.assert_allclose(Y, want, rtol=1e-5, atol=1e-5)
    buf = rng.standard_normal(2 * D + 1).astype(np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        e.apply_micro_lora(buf[:D], out=buf[1:D + 1])
    M = rng.standard_normal((D, D)).astype(np.float32)
    v = rng.standard_normal(D).astype(np.float32)
    for fn in (kernels.dot_scores, kernels.sqdist_scores):
        with pytest.raises(ValueError, match="overlaps"):
            fn(M, v, out=v)
        with pytest.raises(ValueError, match="overlaps"):
            fn(M, v, out=M[0])
    with pytest.raises(ValueError, match="overlaps"):
        kernels.row_norms(M, out=M[2])
    theta = np.zeros(2 * D, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        kernels.adam_step(theta[:D], theta[1:D + 1], np.zeros(D, np.float32), v, 1)


# ---- 13: bool qualities -----------------------------------------------------------------------

@pytest.mark.parametrize("q", [True, np.bool_(False), "0.5", None, float("nan"), 1.5])
def test_quality_is_checked_alike_everywhere(q):
    r = _router()
    x = np.ones(D, np.float32)
    d = r.route(x)
    e = r.engine
    tid = e.start_trajectory(x)
    buf = TrajectoryBuffer(4, D)
    store = TrajectoryStore(buf)
    sid = store.start(x)
    err = TypeError if isinstance(q, (bool, np.bool_, str, type(None))) else ValueError
    for call in (lambda: r.feedback(d, q), lambda: e.end_trajectory(tid, q),
                 lambda: store.end(sid, q), lambda: buf.record(x, quality=q),
                 lambda: sona.LearningSignal(q)):
        with pytest.raises(err, match="quality"):
            call()
    assert not d.consumed and len(buf) == 0 and store.open_count == 1


# ---- 18: shared ring: scribbled header, stuck slots ---------------------------------------------

@contextlib.contextmanager
def _shared(capacity=8):
    """(block, buffer, the block's 64-bit words): a ring in shared memory the test may scribble
    on, closed and unlinked afterwards."""
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(create=True, size=TrajectoryBuffer.nbytes_for(
        capacity, D, max_steps=2))
    buf = TrajectoryBuffer(capacity, D, max_steps=2, shared_memory=block)
    words = np.ndarray(block.size // 8, np.uint64, block.buf)
    try:
        yield block, buf, words
    finally:
        del words
        buf.close()
        block.close()
        block.unlink()


def test_scribbled_shared_header_raises_on_use():
    # header words: dim, max_steps (with dim), slots_offset, slot_size
    for word, value in ((2, 1 << 30), (2, 9999 << 32), (7, 12345), (5, 77)):
        with _shared() as (block, buf, words):
            buf.record(np.ones(D, np.float32), quality=0.5)
            saved = int(words[word])
            words[word] = value
            for call in (TrajectoryBuffer.drain, len, TrajectoryStore, TrajectoryBuffer.new_id):
                with pytest.raises(ValueError, match="overwritten"):
                    call(buf)
            with pytest.raises(ValueError, match="overwritten"):
                buf.record(np.ones(D, np.float32), quality=0.5)
            with pytest.raises(ValueError):
                TrajectoryBuffer.attach(block)
            words[word] = saved
            assert len(buf.drain()) == 1


def _qualities(buf):
    return [round(float(q), 1) for q in buf.drain().qualities]


def test_stuck_slots_are_skipped_and_counted():
    with _shared(capacity=4) as (_, buf, words):
        x = np.ones(D, np.float32)
        assert buf.record(x, quality=0.1)
        words[128 // 8] += 1  # a producer claimed slot 1 and died before publishing it
        for q in (0.2, 0.3):
            assert buf.record(x, quality=q)
        assert _qualities(buf) == [0.1]
        buf.stuck_timeout_s = 0.0
        assert len(buf.drain()) == 0  # the same slot still stuck: skipped now
        assert buf.skipped_count == 1
        assert _qualities(buf) == [0.2, 0.3]
        # a scribbled sequence number (slot 0's) makes neither side spin
        words[640 // 8] = 2**63 + 5
        assert buf.record(x, quality=0.4) in (True, False)
        buf.drain()
        buf.drain()
        assert buf.skipped_count >= 2
        for _ in range(10):
            buf.record(x, quality=0.5)
            assert len(buf.drain()) <= 1
        assert buf.record(x, quality=0.6) and _qualities(buf)[-1] == 0.6


def test_slot_of_a_consumer_killed_mid_drain_is_freed_for_producers():
    with _shared(capacity=4) as (_, buf, words):
        x = np.ones(D, np.float32)
        for q in (0.1, 0.2, 0.3, 0.4):
            assert buf.record(x, quality=q)
        words[256 // 8] += 1  # a consumer claimed record 0 and died before freeing its slot
        assert len(buf.drain()) == 3
        assert not buf.record(x, quality=0.5)  # the ring looks full to producers
        buf.stuck_timeout_s = 0.0
        buf.drain()
        buf.drain()
        assert buf.skipped_count == 1
        assert buf.record(x, quality=0.6)
        assert _qualities(buf) == [0.6]


# ---- 2: save while other threads learn --------------------------------------------------------

def test_engine_and_router_saves_under_concurrent_learning_always_load(tmp_path):
    e = sona.SonaEngine(hidden_dim=16, trajectory_capacity=256)
    r = sona.Router(["s", "m", "l"], engine=e, seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 16)).astype(np.float32)
    stop = threading.Event()

    def learn():
        i = 0
        while not stop.is_set():
            tid = e.start_trajectory(X[i % 64])
            e.end_trajectory(tid, float(i % 5) / 4)
            r.feedback(r.route(X[(i * 7) % 64]), float(i % 3) / 2)
            i += 1

    threads = [threading.Thread(target=learn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(15):
            e.save(tmp_path / "e.sona")
            sona.SonaEngine.load(tmp_path / "e.sona")
            r.save(tmp_path / "r.sona")
            sona.Router.load(tmp_path / "r.sona")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert r.feedbacks > 0


# ---- 3: a router on an engine with more bank routes -------------------------------------------

def test_router_on_an_engine_saves_a_file_it_loads(tmp_path):
    e = sona.SonaEngine(hidden_dim=16, bank_params={"decay": 0.99})
    r = sona.Router(["small", "large"], engine=e)
    x = np.random.default_rng(2).standard_normal(16).astype(np.float32)
    for q in (1.0, 0.0, 1.0):
        r.feedback(r.route(x), q)
    r.save(tmp_path / "r.sona")
    loaded = sona.Router.load(tmp_path / "r.sona")
    assert np.array_equal(loaded.scores(x), r.scores(x))
    assert loaded.bank.params == r.bank.params
    with pytest.raises(ValueError, match="differ"):
        sona.Router(["a", "b"], engine=e, decay=0.5)


# ---- 6, 7, 17: the background coordinator --------------------------------------------------------

@pytest.mark.parametrize("interval, err", [("1", TypeError), (True, TypeError),
                                           (1e300, ValueError), (0.0, ValueError),
                                           (float("nan"), ValueError)])
def test_start_background_checks_the_interval(interval, err):
    e = sona.SonaEngine(hidden_dim=D)
    with pytest.raises(err, match="interval_s"):
        e.start_background(interval)
    assert not e.stats()["background_running"]


def test_start_background_checks_the_checkpoint_path(tmp_path):
    e = sona.SonaEngine(hidden_dim=D)
    with pytest.raises(ValueError, match="existing directory"):
        e.start_background(1.0, checkpoint_path=tmp_path / "missing" / "e.sona")
    with pytest.raises(ValueError, match="existing directory"):
        e.start_background(1.0, checkpoint_path=tmp_path)
    with pytest.raises(TypeError, match="checkpoint_path"):
        e.start_background(1.0, checkpoint_path=3.5)


def _feed(e, n, rng):
    for _ in range(n):
        tid = e.start_trajectory(rng.standard_normal(e.config.hidden_dim).astype(np.float32))
        e.end_trajectory(tid, 0.9)


def test_failed_cycle_keeps_drained_records_and_reports(monkeypatch, caplog):
    rng = np.random.default_rng(3)
    e = sona.SonaEngine(hidden_dim=D)
    _feed(e, 50, rng)
    e.refine_params["max_iter"] = -1  # refused before anything is drained
    with pytest.raises(ValueError, match="max_iter"):
        e.run_background_cycle()
    assert len(e.store.buffer) == 50
    e.refine_params["max_iter"] = 2

    import sona.engine as engine_mod

    real = engine_mod.refine_bank

    def broken(bank, X, q, **kwargs):  # the check of the settings passes, the work fails
        if len(X):
            raise RuntimeError("disk on fire")
        return real(bank, X, q, **kwargs)

    monkeypatch.setattr(engine_mod, "refine_bank", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        e.run_background_cycle()
    assert len(e.store.buffer) == 0 and e.stats()["trajectories_deferred"] == 50
    monkeypatch.undo()
    assert e.run_background_cycle().refined == 50
    assert e.stats()["trajectories_deferred"] == 0

    # in the coordinator: logged on "sona", counted, and the thread keeps running
    e.refine_params["merge_cos"] = 7.0
    _feed(e, 40, rng)
    stopped = threading.Event()
    with caplog.at_level(logging.ERROR, logger="sona"):
        e.start_background(0.01)
        for _ in range(6000):  # a bound for a stuck coordinator, not a timing expectation
            if e.stats()["background_errors"] >= 2:
                break
            stopped.wait(0.01)
        st = e.stats()
        assert st["background_running"] and st["background_errors"] >= 2
        assert "merge_cos" in st["last_background_error"]
        e.refine_params["merge_cos"] = 0.9
        for _ in range(6000):
            if len(e.store.buffer) == 0 and e.stats()["trajectories_deferred"] == 0:
                break
            stopped.wait(0.01)
        e.stop_background()
    assert any("background cycle failed" in rec.message for rec in caplog.records)
    assert len(e.store.buffer) == 0 and e.stats()["trajectories_deferred"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_the_coordinator_runs_leaves_a_usable_child():
    rng = np.random.default_rng(4)
    e = sona.SonaEngine(hidden_dim=D)
    e.refine_params["min_records"] = 1
    e.start_background(0.001)
    try:
        for _ in range(8):
            _feed(e, 20, rng)
            pid = os.fork()
            if pid == 0:  # child: everything must work, nothing may hang
                code = 1
                # a hang becomes exit code 1 with every thread's stack on stderr
                faulthandler.dump_traceback_later(20, exit=True, file=sys.__stderr__)
                try:
                    _feed(e, 5, rng)
                    e.run_background_cycle()
                    e.start_background(0.01)
                    e.stop_background()
                    code = 0 if not e.stats()["background_running"] else 2
                finally:
                    os._exit(code)
            for _ in range(3000):  # a deadlocked child would never exit
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                threading.Event().wait(0.01)
            else:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung")
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        e.stop_background()


# ---- 8, 12, 20: state files ------------------------------------------------------------------

def test_deeply_nested_json_is_a_state_file_error():
    deep = "[" * 100000 + "]" * 100000
    header = json.dumps({"__metadata__": {"format": "sona"}})[:-1] + ', "x": ' + deep + "}"
    raw = header.encode()
    with pytest.raises(StateFileError, match="nested too deeply"):
        decode_state(struct.pack("<Q", len(raw)) + raw)


def _resave(path, edit):
    arrays, meta = sona.state.read_state(path)
    edit(arrays, meta)
    kind = "router" if "routes" in meta else "engine"
    sona.state.write_state(path, arrays, meta, kind)


@pytest.mark.parametrize("edit, match", [
    (lambda a, m: a["bank.hits"].__setitem__(0, -3.0), "bank.hits"),
    (lambda a, m: a["bank.route_n"].__setitem__((0, 0), -1.0), "bank.route_n"),
    (lambda a, m: a["micro.B"].__setitem__((0, 0), 3e38), "micro.B"),
    (lambda a, m: a["bank.baseline"].__setitem__(0, 7.0), "bank.baseline"),
    (lambda a, m: a["bank.centroid"].__setitem__(0, 1.0), "centroid"),
    (lambda a, m: m["counters"].__setitem__("global_baseline", 1e39), "global_baseline"),
    (lambda a, m: m["counters"].__setitem__("n_seen", "many"), "n_seen"),
    (lambda a, m: m["counters"].__setitem__("n_seen", 2**64 - 1), "n_seen"),
])
@pytest.mark.parametrize("kind", ["engine", "router"])
def test_absurd_values_in_a_valid_file_are_refused(tmp_path, kind, edit, match):
    path = tmp_path / "s.sona"
    r = _router()
    x = np.ones(D, np.float32)
    r.feedback(r.route(x), 1.0)
    (r.engine if kind == "engine" else r).save(path)
    _resave(path, edit)
    with pytest.raises(StateFileError, match=match):
        (sona.SonaEngine if kind == "engine" else sona.Router).load(path)


def test_router_file_counters_and_moments_are_checked(tmp_path):
    path = tmp_path / "r.sona"
    r = _router()
    for edit, match in (
            (lambda a, m: a["rms"].__setitem__(0, -1.0), "rms"),
            (lambda a, m: a["keys"].__setitem__((0, 0), 2e6), "keys"),
            (lambda a, m: m["counters"].__setitem__("reward_long", -0.5), "reward_long"),
            (lambda a, m: m.__setitem__("feedbacks", 2**63), "feedbacks")):
        r.save(path)
        _resave(path, edit)
        with pytest.raises(StateFileError, match=match):
            sona.Router.load(path)


def test_orphan_temp_files_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "r.sona"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    orphan = tmp_path / f".r.sona.{int(dead.stdout)}.abc123.tmp"
    orphan.write_bytes(b"x" * 1000)
    mine = tmp_path / f".r.sona.{os.getpid()}.zzz.tmp"  # ours, and no save is writing it
    mine.write_bytes(b"y")
    other = tmp_path / ".other.sona.1.x.tmp"
    other.write_bytes(b"z")
    longer = tmp_path / f".r.sona.7.{int(dead.stdout)}.abc.tmp"  # a save of "r.sona.7"
    longer.write_bytes(b"w")
    _router().save(path)
    assert not orphan.exists() and not mine.exists() and other.exists() and longer.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.sona.1.x.tmp", longer.name,
                                                          "r.sona"]


# ---- 11: hyper-parameters that would overflow float32 --------------------------------------

@pytest.mark.parametrize("hp", [{"rms_eps": 1e-300}, {"tau": 1e-46}, {"lr": 1e39},
                                {"micro_scale": 1e39}, {"tau_prior": 1e-40},
                                {"weight_clip": 1e30}, {"ewc_lambda": 1e39}])
def test_hyperparameters_beyond_float32_safety_are_refused(hp):
    name = next(iter(hp))
    with pytest.raises(ValueError, match=rf"{name} must be in [\[(]"):
        _router(**hp)


def test_engine_scales_beyond_float32_safety_are_refused():
    with pytest.raises(ValueError, match="scale must be a number in"):
        sona.SonaEngine(hidden_dim=D, micro_scale=1e39)
    with pytest.raises(ValueError, match="prior_count"):
        sona.SonaEngine(hidden_dim=D, bank_params={"prior_count": 1e39})


# ---- 14: clear errors ---------------------------------------------------------------------------

def test_errors_name_the_parameter_and_the_value(tmp_path):
    r = _router()
    e = r.engine
    with pytest.raises(ValueError, match="magnitude 1e\\+300, beyond float32"):
        r.route(np.full(D, 1e300))
    with pytest.raises(ValueError, match="mean_window must be an integer in"):
        _router(mean_window=2**40)
    tid = e.start_trajectory(np.ones(D, np.float32))
    with pytest.raises(TypeError, match="score must be a real number; got str"):
        e.record_step(tid, 0, "high", 1.0)
    with pytest.raises(TypeError, match="latency_us must be a real number"):
        e.store.record_step(tid, 0, 0.5, "slow")
    with pytest.raises(TypeError, match="signal must be a sona.LearningSignal"):
        e.learn_from_feedback(None)
    with pytest.raises(TypeError, match="lr must be a real number"):
        r.micro.apply_accumulated("0.1")
    for call, what in ((lambda: kernels.topk(np.ones(3), 2**70), "k must be an integer in"),
                       (lambda: r.bank.query(np.ones(D), "5"), "k must be an integer"),
                       (lambda: sona.MicroLoRA(2**70), "dim must be <="),
                       (lambda: sona.BaseLoRA("8"), "dim must be an integer"),
                       (lambda: kernels.adam_step(np.zeros(2, np.float32), np.zeros(2, np.float32),
                                                  np.zeros(2, np.float32), np.ones(2), 2**40),
                        "t must be an integer in")):
        with pytest.raises((TypeError, ValueError), match=what):
            call()
    r.save(os.fsencode(tmp_path / "bytes.sona"))
    assert sona.Router.load(os.fsencode(tmp_path / "bytes.sona")).routes == ("a", "b")
    # (a Router and a SonaEngine pickle through their state files: to_bytes/from_bytes)
    for obj, hint in ((r.micro, "set_weights"), (r.bank, "save"),
                      (e.store, "buffer"), (r.route(np.ones(D, np.float32)), "outcome")):
        with pytest.raises(TypeError, match=hint):
            pickle.dumps(obj)


# ---- 15: overflow is an error, not a silent Inf -----------------------------------------------

def test_results_beyond_float32_raise_and_steps_stay_finite():
    lora = sona.MicroLoRA(D, 2, seed=0)
    lora.set_weights(lora.A, np.ones((D, 2), np.float32))
    with pytest.raises(ValueError, match="overflows float32"):
        lora.forward(np.full(D, 3.4e38, np.float32))
    M = np.full((3, D), 3e38, np.float32)
    with pytest.raises(ValueError, match="overflows float32"):
        kernels.sqdist_scores(M, -M[0])
    norms = kernels.row_norms(np.full((2, D), 1e20, np.float32))
    np.testing.assert_allclose(norms, 1e20 * np.sqrt(D), rtol=1e-5)
    with pytest.raises(ValueError, match="overflows float32"):
        kernels.row_norms(M)
    theta, m, v = np.ones(D, np.float32), np.zeros(D, np.float32), np.zeros(D, np.float32)
    with pytest.raises(ValueError, match="past float32's range"):
        kernels.adam_step(theta, m, v, np.ones(D, np.float32), 1, lr=1e38, eps=1e-30)
    assert np.array_equal(theta, np.ones(D)) and not m.any() and not v.any()
    with pytest.raises(ValueError, match="weights must sum to at most"):
        sona.spherical_kmeans(np.eye(4, dtype=np.float32), 2, weights=[1e38] * 4)
    lora.accumulate_gradient(np.ones(D, np.float32), np.ones(D, np.float32))
    before = lora.B.copy()
    step = lora.apply_accumulated(1e308)
    assert step == pytest.approx(lora.max_step) and not np.array_equal(lora.B, before)
    assert np.isfinite(lora.B).all()


# ---- 16: route names ------------------------------------------------------------------------

def test_route_names_are_a_list_of_savable_strings(tmp_path):
    with pytest.raises(TypeError, match="not one str"):
        sona.Router("ab", hidden_dim=D)
    with pytest.raises(ValueError, match="surrogate"):
        sona.Router(["a", "b\udc80"], hidden_dim=D)
    sona.Router(["é", "模型"], hidden_dim=D).save(tmp_path / "u.sona")
    assert sona.Router.load(tmp_path / "u.sona").routes == ("é", "模型")
