"""Regression tests for the reliability audit (issue 16): each test names the finding it covers
and drives the class-level guard through the public API. Crashes here would take the interpreter
down, so scripts/sanitize.sh runs this file under ASan+UBSan too."""

import gc
import json
import logging
import os
import pickle
import struct
import threading

import numpy as np
import pytest

import sona
from sona import kernels
from sona._core import LoRAAdapter, PatternStore, TrajectoryBuffer, TrajectoryStore
from sona.state import StateFileError, decode_state, encode_state

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
        sona.Pattern().centroid
    with pytest.raises(ValueError, match="query_patterns"):
        sona.Pattern().route_stats
    with pytest.raises(ValueError, match="route"):
        sona.Decision().probs
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
        PatternStore.__init__(r.bank, 4096, 2, 10)
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

def _shared(capacity=8):
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(create=True, size=TrajectoryBuffer.nbytes_for(
        capacity, D, max_steps=2))
    return block, TrajectoryBuffer(capacity, D, max_steps=2, shared_memory=block)


def test_scribbled_shared_header_raises_on_use():
    for offset, value in ((16, 1 << 30), (20, 9999), (56, 12345), (40, 77)):
        block, buf = _shared()
        try:
            buf.record(np.ones(D, np.float32), quality=0.5)
            hdr = np.ndarray(80, np.uint8, block.buf)
            saved = hdr[offset:offset + 8].copy()
            hdr[offset:offset + 8] = np.frombuffer(struct.pack("<Q", value), np.uint8)
            for call in (lambda: buf.drain(), lambda: len(buf),
                         lambda: buf.record(np.ones(D, np.float32), quality=0.5),
                         lambda: TrajectoryStore(buf)):
                with pytest.raises(ValueError, match="overwritten|inconsistent"):
                    call()
            with pytest.raises(ValueError):
                TrajectoryBuffer.attach(block)
            hdr[offset:offset + 8] = saved
            assert len(buf.drain()) == 1
            del hdr
        finally:
            buf.close()
            block.close()
            block.unlink()


def test_stuck_slots_are_skipped_and_counted():
    block, buf = _shared(capacity=4)
    try:
        words = np.ndarray(block.size // 8, np.uint64, block.buf)
        slot = buf.bytes_per_record // 8
        x = np.ones(D, np.float32)
        assert buf.record(x, quality=0.1)
        words[128 // 8] += 1  # a producer claimed slot 1 and died before publishing it
        for q in (0.2, 0.3):
            assert buf.record(x, quality=q)
        assert [round(float(q), 1) for q in buf.drain().qualities] == [0.1]
        buf.stuck_timeout_s = 0.0
        assert len(buf.drain()) == 0  # the same slot still stuck: skipped now
        assert buf.skipped_count == 1
        assert [round(float(q), 1) for q in buf.drain().qualities] == [0.2, 0.3]
        # a scribbled sequence number makes neither side spin
        words[640 // 8 + 0 * slot] = 2**63 + 5
        assert buf.record(x, quality=0.4) in (True, False)
        buf.drain()
        buf.drain()
        assert buf.skipped_count >= 2
        for _ in range(10):
            buf.record(x, quality=0.5)
            assert len(buf.drain()) <= 1
        assert buf.record(x, quality=0.6) and float(buf.drain().qualities[-1]) == pytest.approx(0.6)
        del words
    finally:
        buf.close()
        block.close()
        block.unlink()
