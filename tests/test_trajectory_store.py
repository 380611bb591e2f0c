"""The trajectory ring (TrajectoryBuffer) and the open-trajectory table (TrajectoryStore).

Stress tests push from threads and from separate processes into one ring while a consumer drains
it, and check that every record arrives exactly once, bit for bit, or is counted as dropped.
"""

import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing import shared_memory

import numpy as np
import pytest
from helpers import OUTSIDE, subprocess_env

from sona._core import (
    TrajectoryBuffer,
    TrajectoryStore,
    UnknownTrajectoryError,
    _f16_bits_to_f32,
    _f32_to_f16_bits,
    _half_impl,
)

DTYPES = ["float32", "float16"]

# ---- records whose whole content is a function of their id -----------------------------------

_TABLE_ROWS = 1021  # prime, so consecutive ids hit different rows


def _table(dim):
    # multiples of 1/64 in [-16, 16): exact in float16, so float16 rings round-trip bit for bit
    j = np.arange(dim, dtype=np.int64)
    r = np.arange(_TABLE_ROWS, dtype=np.int64)[:, None]
    return (((r * 2654435761 + j * 40503) % 2048) - 1024).astype(np.float32) / 64


def _steps(tid, max_steps):
    n = tid % (max_steps + 1)
    return [(tid * 7 + k & 0xFFFFFFFF, float(tid % 1000) + k, float(tid % 333) * 1.5,
             None if k == 1 else k / 4) for k in range(n)]


def _record(buf, table, tid):
    return buf.record(table[tid % _TABLE_ROWS], _steps(tid, buf.max_steps),
                      quality=(tid % 101) / 100, trajectory_id=tid, start_ns=tid * 3,
                      end_ns=tid * 3 + 1)


def _check_batch(batch, table, max_steps):
    """Every record in the batch equals the one derived from its id, bit for bit."""
    ids = batch.ids.astype(np.int64)
    np.testing.assert_array_equal(batch.embeddings, table[ids % _TABLE_ROWS])
    np.testing.assert_array_equal(batch.qualities, ((ids % 101) / 100).astype(np.float32))
    np.testing.assert_array_equal(batch.start_ns, ids * 3)
    np.testing.assert_array_equal(batch.end_ns, ids * 3 + 1)
    n = ids % (max_steps + 1)
    np.testing.assert_array_equal(batch.n_steps, n)
    k = np.arange(max_steps)[None, :]
    valid = k < n[:, None]
    want_nodes = np.where(valid, (ids[:, None] * 7 + k) & 0xFFFFFFFF, 0)
    np.testing.assert_array_equal(batch.nodes, want_nodes)
    np.testing.assert_array_equal(
        batch.scores, np.where(valid, (ids[:, None] % 1000 + k).astype(np.float32), 0))
    np.testing.assert_array_equal(
        batch.latencies_us, np.where(valid, (ids[:, None] % 333 * 1.5).astype(np.float32), 0))
    want_r = np.where(valid, np.where(k == 1, np.nan, k / 4), 0).astype(np.float32)
    np.testing.assert_array_equal(batch.rewards, want_r)  # NaN == NaN for assert_array_equal


# ---- float16 --------------------------------------------------------------------------------


@pytest.fixture(params=["scalar", "f16c"])
def half_impl(request):
    previous = _half_impl()
    got = _half_impl(request.param)
    if got != request.param:
        _half_impl(previous)
        pytest.skip("this CPU has no F16C")
    yield got
    _half_impl(previous)


def test_f16_every_half_widens_exactly(half_impl):
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = _f16_bits_to_f32(h)
    want = h.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    assert np.isnan(got[nan]).all()
    # and narrowing a widened half gives the half back
    np.testing.assert_array_equal(_f32_to_f16_bits(got[~nan]), h[~nan])


def test_f16_narrowing_rounds_to_nearest_even(half_impl):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32)
    # plus the neighbourhood of every half's rounding boundary, and the specials
    h = np.arange(0, 0x7C00, dtype=np.uint32)
    mid = (h.astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32) + (1 << 12))
    edges = np.concatenate([mid - 1, mid, mid + 1, mid + (1 << 13)]).astype(np.uint32)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x477FE000, 0x477FF000, 0x477FEFFF,
                        0x33000000, 0x33000001, 0x337FFFFF, 0x38800000, 0x387FFFFF, 1],
                       np.uint32)
    x = np.concatenate([bits, edges, edges | 0x80000000, special]).view(np.float32)
    got = _f32_to_f16_bits(x)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert ((got[nan] & 0x7C00) == 0x7C00).all() and ((got[nan] & 0x3FF) != 0).all()


# ---- TrajectoryBuffer -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_record_and_drain_round_trip(dtype):
    dim, max_steps = 37, 5
    table = _table(dim)
    buf = TrajectoryBuffer(64, dim, max_steps=max_steps, dtype=dtype)
    assert (buf.capacity, buf.dim, buf.max_steps, buf.dtype) == (64, dim, max_steps, dtype)
    assert len(buf) == 0 and buf.dropped_count == 0
    for tid in range(1, 41):
        assert _record(buf, table, tid)
    assert len(buf) == 40 and buf.pushed_count == 40
    a = buf.drain(15)
    b = buf.drain()
    assert len(a) == 15 and len(b) == 25 and len(buf) == 0 and buf.drained_count == 40
    assert list(a.ids) + list(b.ids) == list(range(1, 41))  # one producer: FIFO
    _check_batch(a, table, max_steps)
    _check_batch(b, table, max_steps)
    assert a.embeddings.dtype == np.float32 and a.embeddings.shape == (15, dim)
    assert a.nodes.dtype == np.uint32 and a.ids.dtype == np.uint64


def test_drain_empty_and_zero():
    buf = TrajectoryBuffer(8, 4, max_steps=2)
    for batch in (buf.drain(), buf.drain(0), buf.drain(100)):
        assert len(batch) == 0
        assert batch.embeddings.shape == (0, 4) and batch.nodes.shape == (0, 2)


@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 8])
def test_full_ring_drops_and_counts(capacity):
    table = _table(8)
    buf = TrajectoryBuffer(capacity, 8, max_steps=2)
    stored = [tid for tid in range(1, 3 * capacity + 1) if _record(buf, table, tid)]
    assert stored == list(range(1, capacity + 1))
    assert buf.dropped_count == 2 * capacity and len(buf) == capacity
    assert list(buf.drain().ids) == stored
    assert _record(buf, table, 99)  # room again
    assert list(buf.drain().ids) == [99]


def test_defaults_ids_and_timestamps():
    buf = TrajectoryBuffer(16, 4)
    assert buf.max_steps == 8 and buf.dtype == "float32"
    t0 = time.monotonic_ns()
    assert buf.record(np.ones(4, np.float32), [(1, 0.5, 10.0)], quality=0.5)
    assert buf.record([1, 2, 3, 4], quality=1.0)  # a list is converted (documented copy)
    t1 = time.monotonic_ns()
    batch = buf.drain()
    ids = [int(i) for i in batch.ids]
    assert ids == sorted(ids) and len(set(ids)) == 2 and min(ids) >= 1
    assert (batch.start_ns <= batch.end_ns).all()
    assert (batch.start_ns >= t0).all() and (batch.end_ns <= t1).all()  # CLOCK_MONOTONIC
    assert np.isnan(batch.rewards[0, 0]) and batch.n_steps.tolist() == [1, 0]


def test_bytes_per_record():
    # d=256, 3 steps: 8 (sequence) + 32 (head) + 3 * 16 (steps) + 256 * 2 -> 640 with float16
    assert TrajectoryBuffer(4, 256, max_steps=3, dtype="float16").bytes_per_record == 640
    assert TrajectoryBuffer(4, 256, max_steps=3, dtype="float32").bytes_per_record == 1152
    assert TrajectoryBuffer(4, 256, dtype="float16").bytes_per_record == 704  # max_steps=8
    buf = TrajectoryBuffer(1000, 256, max_steps=3, dtype=np.float16)
    assert buf.nbytes == TrajectoryBuffer.nbytes_for(1000, 256, 3, "float16") == 640 + 1000 * 640
    assert buf.bytes_per_record % 64 == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(capacity=0, dim=4), "capacity must be in 1..4294967296; got 0"),
    (dict(capacity=-1, dim=4), "capacity"),
    (dict(capacity=2**32 + 1, dim=4), "capacity"),
    (dict(capacity=10**15, dim=4), "capacity"),
    (dict(capacity=2**32, dim=4096), "over the 1099511627776-byte limit"),
    (dict(capacity=8, dim=0), "dim must be in 1..1048576; got 0"),
    (dict(capacity=8, dim=2**21), "dim"),
    (dict(capacity=8, dim=4, max_steps=5000), "max_steps must be in 0..4096; got 5000"),
    (dict(capacity=8, dim=4, dtype="int8"), "dtype must be 'float32' or 'float16'"),
    (dict(capacity=8, dim=4, dtype="nonsense"), "dtype"),
])
def test_bad_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrajectoryBuffer(**kwargs)


def test_bad_geometry_types():
    with pytest.raises(TypeError, match="capacity must be an integer; got str"):
        TrajectoryBuffer("8", 4)
    with pytest.raises(TypeError, match="dim must be an integer; got float"):
        TrajectoryBuffer(8, 4.0)
    with pytest.raises(TypeError, match="shared_memory must be"):
        TrajectoryBuffer(8, 4, shared_memory=3.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_records_leave_the_buffer_unchanged(dtype):
    buf = TrajectoryBuffer(8, 4, max_steps=2, dtype=dtype)
    ok = np.ones(4, np.float32)
    bad = [
        (ValueError, "record too large: 3 steps, this buffer holds at most max_steps=2",
         dict(embedding=ok, steps=[(1, 0.0, 1.0)] * 3, quality=0.5)),
        (ValueError, r"embedding must have shape \(4,\); got \(5,\)",
         dict(embedding=np.ones(5, np.float32), quality=0.5)),
        (ValueError, r"embedding must have shape \(4,\); got \(1, 4\)",
         dict(embedding=np.ones((1, 4), np.float32), quality=0.5)),
        (ValueError, "embedding contains NaN or Inf",
         dict(embedding=np.array([0, np.nan, 0, 0], np.float32), quality=0.5)),
        (ValueError, "embedding contains NaN or Inf",
         dict(embedding=np.array([0, 0, -np.inf, 0], np.float32), quality=0.5)),
        (ValueError, "C-contiguous", dict(embedding=np.ones(8, np.float32)[::2], quality=0.5)),
        (TypeError, "embedding must be a float32 array",
         dict(embedding=np.array(["a"] * 4), quality=0.5)),
        (ValueError, r"quality must be in \[0, 1\]; got 1.5", dict(embedding=ok, quality=1.5)),
        (ValueError, "quality", dict(embedding=ok, quality=float("nan"))),
        (ValueError, "step 0 score must be a finite float32 number",
         dict(embedding=ok, steps=[(1, float("nan"), 1.0)], quality=0.5)),
        (ValueError, "step 0 score", dict(embedding=ok, steps=[(1, 1e39, 1.0)], quality=0.5)),
        (ValueError, "step 1 latency_us must be >= 0",
         dict(embedding=ok, steps=[(1, 0.0, 1.0), (1, 0.0, -1.0)], quality=0.5)),
        (ValueError, "step 0 reward", dict(embedding=ok, steps=[(1, 0.0, 1.0, float("inf"))],
                                           quality=0.5)),
        (ValueError, r"step 0 node_id must be an integer in 0..4294967295; got -1",
         dict(embedding=ok, steps=[(-1, 0.0, 1.0)], quality=0.5)),
        (ValueError, "step 0 node_id",
         dict(embedding=ok, steps=[(2**32, 0.0, 1.0)], quality=0.5)),
        (ValueError, "each step must be a tuple",
         dict(embedding=ok, steps=[(1, 0.0)], quality=0.5)),
        (ValueError, "end_ns must be >= start_ns",
         dict(embedding=ok, quality=0.5, start_ns=10, end_ns=5)),
        (ValueError, "trajectory_id", dict(embedding=ok, quality=0.5, trajectory_id=-3)),
    ]
    for exc, match, kwargs in bad:
        with pytest.raises(exc, match=match):
            buf.record(**kwargs)
    assert len(buf) == 0 and buf.pushed_count == 0 and buf.dropped_count == 0


def test_float16_range_is_checked():
    buf = TrajectoryBuffer(8, 4, dtype="float16")
    with pytest.raises(ValueError, match="beyond float16's largest finite value 65504"):
        buf.record(np.array([0, 1e5, 0, 0], np.float32), quality=0.5)
    assert len(buf) == 0
    assert buf.record(np.array([65504, -65504, 6e-8, 0], np.float32), quality=0.5)
    emb = buf.drain().embeddings[0]
    np.testing.assert_array_equal(emb, np.array([65504, -65504, 6e-8, 0], np.float16))
    # float32 buffers take any finite float32
    buf32 = TrajectoryBuffer(8, 4, dtype="float32")
    assert buf32.record(np.array([0, 1e30, 0, 0], np.float32), quality=0.5)


def test_closed_buffer():
    buf = TrajectoryBuffer(8, 4)
    store = TrajectoryStore(buf)
    tid = store.start(np.ones(4, np.float32))
    buf.close()
    buf.close()  # idempotent
    assert buf.closed
    for call in (lambda: len(buf), lambda: buf.drain(), lambda: buf.dropped_count,
                 lambda: buf.record(np.ones(4, np.float32), quality=0.5),
                 lambda: store.start(np.ones(4, np.float32)), lambda: store.end(tid, 0.5)):
        with pytest.raises(ValueError, match="closed"):
            call()


# ---- threads and processes ------------------------------------------------------------------


def _consume(buf, table, seen, stop, errors):
    try:
        while True:
            done = stop.is_set()
            batch = buf.drain(4096)
            if len(batch):
                _check_batch(batch, table, buf.max_steps)
                seen.append(batch.ids.copy())
            elif done:
                return
            else:
                time.sleep(0.0005)
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)


def _assert_exactly_once(seen, total, dropped):
    ids = np.concatenate(seen) if seen else np.empty(0, np.uint64)
    assert len(np.unique(ids)) == len(ids), "a record arrived twice"
    assert ids.min(initial=1) >= 1 and ids.max(initial=1) <= total
    assert len(ids) + dropped == total, (len(ids), dropped, total)
    return len(ids)


@pytest.mark.parametrize("dtype", DTYPES)
def test_four_threads_and_a_consumer(dtype):
    n_threads, per = 4, 100_000
    dim = 16
    table = _table(dim)
    buf = TrajectoryBuffer(2048, dim, max_steps=3, dtype=dtype)
    seen, errors, stop = [], [], threading.Event()
    consumer = threading.Thread(target=_consume, args=(buf, table, seen, stop, errors))
    consumer.start()

    def produce(t):
        record, steps = buf.record, _steps
        for tid in range(1 + t * per, 1 + (t + 1) * per):
            record(table[tid % _TABLE_ROWS], steps(tid, 3), quality=(tid % 101) / 100,
                   trajectory_id=tid, start_ns=tid * 3, end_ns=tid * 3 + 1)

    producers = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    stop.set()
    consumer.join()
    assert not errors, errors
    received = _assert_exactly_once(seen, n_threads * per, buf.dropped_count)
    assert received > 0 and len(buf) == 0
    assert buf.pushed_count == received


_WORKER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[4])
    from sona._core import TrajectoryBuffer
    from test_trajectory_store import _record, _table
    buf = TrajectoryBuffer.attach(sys.argv[1], dtype=sys.argv[5])
    first, count = int(sys.argv[2]), int(sys.argv[3])
    table = _table(buf.dim)
    for tid in range(first, first + count):
        _record(buf, table, tid)
    buf.close()
""")


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_processes_and_a_consumer(dtype):
    n_proc, per, dim = 2, 50_000, 16
    table = _table(dim)
    with TrajectoryBuffer(4096, dim, max_steps=3, dtype=dtype, shared_memory=True) as buf:
        assert buf.shm_name
        seen, errors, stop = [], [], threading.Event()
        consumer = threading.Thread(target=_consume, args=(buf, table, seen, stop, errors))
        consumer.start()
        here = os.path.dirname(os.path.abspath(__file__))
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER, buf.shm_name,
                                   str(1 + i * per), str(per), here, dtype],
                                  env=subprocess_env(), cwd=OUTSIDE)
                 for i in range(n_proc)]
        codes = [p.wait(timeout=120) for p in procs]
        stop.set()
        consumer.join()
        assert codes == [0] * n_proc
        assert not errors, errors
        received = _assert_exactly_once(seen, n_proc * per, buf.dropped_count)
        assert received > 0


# ---- shared memory --------------------------------------------------------------------------


def test_attach_shares_one_ring():
    table = _table(8)
    with TrajectoryBuffer(32, 8, max_steps=2, dtype="float16", shared_memory=True) as owner:
        other = TrajectoryBuffer.attach(owner.shm_name, capacity=32, dim=8, max_steps=2,
                                        dtype="float16")
        assert (other.capacity, other.dim, other.max_steps, other.dtype) == (32, 8, 2, "float16")
        assert _record(other, table, 5) and _record(owner, table, 6)
        assert len(owner) == len(other) == 2
        batch = owner.drain()
        assert batch.ids.tolist() == [5, 6]
        _check_batch(batch, table, 2)
        # ids handed out through either handle come from one shared counter
        assert len({owner.new_id(), other.new_id(), owner.new_id()}) == 3
        # pickling attaches by name (how a multiprocessing.Process argument travels)
        clone = pickle.loads(pickle.dumps(owner))
        assert clone.shm_name == owner.shm_name and len(clone) == 0
        clone.close()
        other.close()
        assert not owner.closed and len(owner) == 0


def test_creator_unlinks_attachers_do_not():
    owner = TrajectoryBuffer(8, 4, shared_memory=True)
    name = owner.shm_name
    attached = TrajectoryBuffer.attach(name)
    attached.close()
    TrajectoryBuffer.attach(name).close()  # still there
    owner.close()
    with pytest.raises(FileNotFoundError):
        TrajectoryBuffer.attach(name)


def test_format_inside_a_callers_block():
    need = TrajectoryBuffer.nbytes_for(16, 8, 2, "float32")
    shm = shared_memory.SharedMemory(create=True, size=need)
    try:
        buf = TrajectoryBuffer(16, 8, max_steps=2, shared_memory=shm)
        assert buf.record(np.ones(8, np.float32), quality=0.25)
        again = TrajectoryBuffer.attach(shm)
        assert len(again) == 1
        again.close()
        buf.close()  # the caller owns the block: neither closed nor unlinked
        assert shm.buf is not None and bytes(shm.buf[:8]) == b"SONARING"
        assert TrajectoryBuffer.attach(shm.name).close() is None
        with pytest.raises(ValueError, match="needs"):
            TrajectoryBuffer(17, 8, max_steps=2, shared_memory=shm)
    finally:
        shm.close()
        shm.unlink()


def test_attach_validates_the_header():
    shm = shared_memory.SharedMemory(create=True, size=1 << 16)
    try:
        with pytest.raises(ValueError, match="does not hold a sona TrajectoryBuffer"):
            TrajectoryBuffer.attach(shm.name)
        buf = TrajectoryBuffer(8, 4, max_steps=2, shared_memory=shm)
        with pytest.raises(ValueError, match="dim=4.*expected 5"):
            TrajectoryBuffer.attach(shm.name, dim=5)
        with pytest.raises(ValueError, match="dtype='float32'.*expected 'float16'"):
            TrajectoryBuffer.attach(shm.name, dtype="float16")
        buf.close()
        header = np.ndarray((16,), np.uint32, buffer=shm.buf)
        header[2] += 1  # format version
        with pytest.raises(ValueError, match="another format version"):
            TrajectoryBuffer.attach(shm.name)
        header[2] -= 1
        header[4] += 1000  # dim no longer matches the slot size
        with pytest.raises(ValueError, match="inconsistent"):
            TrajectoryBuffer.attach(shm.name)
        header[4] -= 1000
        header[0] ^= 1  # magic
        with pytest.raises(ValueError, match="bad magic"):
            TrajectoryBuffer.attach(shm.name)
        header[0] ^= 1
        TrajectoryBuffer.attach(shm.name).close()
        del header
    finally:
        shm.close()
        shm.unlink()
    small = shared_memory.SharedMemory(create=True, size=4096)
    try:
        TrajectoryBuffer(1, 4, max_steps=0, shared_memory=small).close()
        hdr = np.ndarray((16,), np.uint64, buffer=small.buf)
        hdr[4] = 10**6  # capacity far beyond the block
        with pytest.raises(ValueError, match="inconsistent|smaller"):
            TrajectoryBuffer.attach(small.name)
        del hdr
    finally:
        small.close()
        small.unlink()


def test_private_buffer_does_not_pickle():
    with pytest.raises(TypeError, match="shared_memory=True"):
        pickle.dumps(TrajectoryBuffer(8, 4))


# ---- TrajectoryStore ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_store_start_steps_end(dtype):
    buf = TrajectoryBuffer(64, 6, max_steps=4, dtype=dtype)
    store = TrajectoryStore(buf, max_open=8, timeout_s=60)
    x = np.linspace(-1, 1, 6).astype(np.float32)
    t0 = time.monotonic_ns()
    tid = store.start(x)
    store.record_step(tid, 3, 0.25, 120.0)
    store.record_step(np.uint64(tid), np.int32(9), 0.5, 80.0, reward=1.0)
    assert store.open_count == 1 and len(store) == 1
    assert store.end(tid, 0.75) is True
    assert store.open_count == 0 and store.ended_count == 1
    b = buf.drain()
    assert b.ids.tolist() == [tid] and b.n_steps.tolist() == [2]
    assert b.nodes[0].tolist() == [3, 9, 0, 0]
    np.testing.assert_array_equal(b.scores[0], [0.25, 0.5, 0, 0])
    np.testing.assert_array_equal(b.latencies_us[0], [120, 80, 0, 0])
    assert np.isnan(b.rewards[0, 0]) and b.rewards[0, 1] == 1.0
    assert b.qualities[0] == np.float32(0.75)
    want = x if dtype == "float32" else x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(b.embeddings[0], want)
    assert t0 <= b.start_ns[0] <= b.end_ns[0] <= time.monotonic_ns()


def test_store_ids_are_unique_and_never_reused():
    buf = TrajectoryBuffer(4096, 4)
    a, b = TrajectoryStore(buf, max_open=4), TrajectoryStore(buf, max_open=4)
    x = np.ones(4, np.float32)
    ids = []
    for _ in range(50):
        ta, tb = a.start(x), b.start(x)
        ids += [ta, tb]
        a.end(ta, 0.5)
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    # an id of the other store is not open here
    with pytest.raises(UnknownTrajectoryError):
        a.end(ids[-1], 0.5)


def test_unknown_ended_and_evicted_ids():
    buf = TrajectoryBuffer(64, 4)
    store = TrajectoryStore(buf, max_open=2)
    x = np.ones(4, np.float32)
    t1, t2 = store.start(x), store.start(x)
    store.end(t2, 0.5)
    for bad in (t2, 0, 12345, 2**64 - 1):  # ended, never issued
        with pytest.raises(UnknownTrajectoryError, match=f"trajectory id {bad} is not open"):
            store.record_step(bad, 1, 0.0, 1.0)
        with pytest.raises(KeyError):
            store.end(bad, 0.5)
        with pytest.raises(ValueError):
            store.cancel(bad)
    t3, t4 = store.start(x), store.start(x)  # table full (t1, t3): t4 evicts t1, the oldest
    assert store.evicted_overflow_count == 1 and store.evicted_count == 1
    with pytest.raises(UnknownTrajectoryError, match="max_open=2"):
        store.end(t1, 0.5)
    assert store.open_count == 2
    store.end(t3, 0.5)
    store.end(t4, 0.5)
    with pytest.raises(ValueError, match=r"trajectory_id must be an integer in 0\.\.\d+; got -1"):
        store.end(-1, 0.5)
    with pytest.raises(TypeError, match="trajectory_id must be an integer; got str"):
        store.end("7", 0.5)
    assert store.stats() == {"open": 0, "started": 4, "ended": 3, "cancelled": 0,
                             "evicted_overflow": 1, "evicted_timeout": 0}


def test_store_bad_input_leaves_state_unchanged():
    buf = TrajectoryBuffer(64, 4, max_steps=2, dtype="float16")
    store = TrajectoryStore(buf, max_open=4)
    x = np.ones(4, np.float32)
    for bad, exc in ((np.ones(3, np.float32), ValueError), (np.full(4, np.nan, np.float32),
                     ValueError), (np.full(4, 1e6, np.float32), ValueError),
                     (np.array(["x"] * 4), TypeError)):
        with pytest.raises(exc):
            store.start(bad)
    assert store.stats()["started"] == 0 and store.open_count == 0
    tid = store.start(x)
    store.record_step(tid, 1, 0.5, 1.0)
    store.record_step(tid, 2, 0.5, 1.0)
    with pytest.raises(ValueError, match=f"trajectory id {tid} already has max_steps=2 steps"):
        store.record_step(tid, 3, 0.5, 1.0)
    for args in ((tid, 1, float("nan"), 1.0), (tid, 1, 0.5, -1.0), (tid, 1, 0.5, float("inf")),
                 (tid, -1, 0.5, 1.0), (tid, 2**32, 0.5, 1.0)):
        with pytest.raises(ValueError):
            store.record_step(*args)
    with pytest.raises(ValueError):
        store.record_step(tid, 1, 0.5, 1.0, reward=float("nan"))
    for q in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match=r"quality must be in \[0, 1\]"):
            store.end(tid, q)
    assert store.open_count == 1 and len(buf) == 0  # still open, nothing pushed
    assert store.end(tid, 1.0)
    b = buf.drain()
    assert b.n_steps.tolist() == [2] and b.nodes[0].tolist() == [1, 2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_open=0), r"max_open must be in 1\.\.16777216; got 0"),
    (dict(max_open=2**24 + 1), "max_open"),
    (dict(timeout_s=0), "timeout_s must be a finite number of seconds > 0"),
    (dict(timeout_s=-1.0), "timeout_s"),
    (dict(timeout_s=float("nan")), "timeout_s"),
    (dict(timeout_s=float("inf")), "timeout_s"),
])
def test_store_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrajectoryStore(TrajectoryBuffer(8, 4), **kwargs)


def test_timeout_evicts_lazily():
    buf = TrajectoryBuffer(64, 4)
    store = TrajectoryStore(buf, max_open=16, timeout_s=0.05)
    x = np.ones(4, np.float32)
    old = [store.start(x) for _ in range(3)]
    time.sleep(0.1)
    with pytest.raises(UnknownTrajectoryError, match="open longer than timeout_s=0.05"):
        store.record_step(old[0], 1, 0.0, 1.0)
    assert store.evicted_timeout_count == 1 and store.open_count == 2
    fresh = store.start(x)  # sweeps the other two
    assert store.evicted_timeout_count == 3 and store.open_count == 1
    assert store.end(fresh, 0.5)
    time.sleep(0.1)
    tid = store.start(x)
    time.sleep(0.1)
    assert store.evict_expired() == 1 and store.open_count == 0
    with pytest.raises(UnknownTrajectoryError):
        store.end(tid, 0.5)
    # no timeout at all
    forever = TrajectoryStore(buf, max_open=4, timeout_s=None)
    tid = forever.start(x)
    assert forever.evict_expired() == 0 and forever.end(tid, 0.5)


def test_end_into_a_full_buffer_is_counted_not_raised():
    buf = TrajectoryBuffer(1, 4)
    store = TrajectoryStore(buf)
    x = np.ones(4, np.float32)
    assert store.end(store.start(x), 0.5) is True
    assert store.end(store.start(x), 0.5) is False
    assert buf.dropped_count == 1 and store.open_count == 0 and store.ended_count == 2


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_a_million_never_ended_trajectories_stay_bounded():
    buf = TrajectoryBuffer(1024, 256, max_steps=3, dtype="float16")
    store = TrajectoryStore(buf, max_open=1000, timeout_s=None)
    x = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    start, step = store.start, store.record_step
    for _ in range(50_000):  # warm up: table and allocator reach their steady state
        step(start(x), 1, 0.5, 10.0)
    before = _rss_bytes()
    for _ in range(950_000):
        step(start(x), 1, 0.5, 10.0)
    grown = _rss_bytes() - before
    assert store.open_count == 1000
    assert store.started_count == 1_000_000
    assert store.evicted_overflow_count == 1_000_000 - 1000
    assert grown < 2 * 2**20, f"RSS grew by {grown} bytes"
    assert store.nbytes < 1000 * 1024  # the whole table, allocated once
    assert len(buf) == 0  # nothing was ended, nothing reached the ring


def test_threads_share_a_store():
    buf = TrajectoryBuffer(1 << 16, 8, max_steps=3)
    store = TrajectoryStore(buf, max_open=64)
    x = np.ones(8, np.float32)

    def work():
        for _ in range(5000):
            tid = store.start(x)
            for k in range(3):
                store.record_step(tid, k, 0.5, 1.0)
            store.end(tid, 0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.ended_count == 20000 and store.open_count == 0
    batch = buf.drain()
    assert len(batch) == 20000 and (batch.n_steps == 3).all()
    assert len(np.unique(batch.ids)) == 20000


def test_docstring_examples():
    import doctest

    from sona import _core

    globs = {"np": np, "TrajectoryBuffer": TrajectoryBuffer, "TrajectoryStore": TrajectoryStore}
    runner = doctest.DocTestRunner()
    for obj in (_core.TrajectoryBuffer, _core.TrajectoryStore):
        for test in doctest.DocTestFinder().find(obj, globs=globs):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 8 and result.failed == 0
