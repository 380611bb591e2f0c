"""pytest-benchmark: the trajectory path from Python (TrajectoryStore / TrajectoryBuffer), d=256.

Run: pytest bench/bench_trajectory.py --benchmark-group-by=group -s
Per-call medians in ns are printed at the end (-s) and stored in each benchmark's extra_info.

Targets (SPEC.md, issue 5): record_step <= 150 ns, start + 3 record_step + end <= 1 us, drain of
1000 records <= 100 us, memory per stored trajectory (d=256, 3 steps) <= 800 B with float16.
"backend" selects the kernel table (the embedding finiteness pass) and, for float16, the
conversion: scalar = portable branch-free loops, avx2 = F16C.
"""

import os

import numpy as np
import pytest

import sona
from sona._core import TrajectoryBuffer, TrajectoryStore, _half_impl

D = 256
DTYPES = ["float16", "float32"]
SUMMARY = {}


@pytest.fixture(params=sona.backends())
def backend(request):
    previous, previous_half = sona.get_backend(), _half_impl()
    sona.set_backend(request.param)
    _half_impl("f16c" if request.param == "avx2" else "scalar")
    yield request.param
    sona.set_backend(previous)
    _half_impl(previous_half)


@pytest.fixture(scope="module", autouse=True)
def _print_summary():
    yield
    if SUMMARY:
        print("\n\ntrajectory path, d=256, medians:")
        for key, value in sorted(SUMMARY.items()):
            print(f"  {key:<48} {value}")


def _embedding():
    return np.random.default_rng(0).standard_normal(D).astype(np.float32)


def _per_call(benchmark, calls, key):
    median_ns = benchmark.stats.stats.median * 1e9 / calls
    benchmark.extra_info["per_call_median_ns"] = round(median_ns, 1)
    SUMMARY[key] = f"{median_ns:8.1f} ns"


@pytest.mark.parametrize("dtype", DTYPES)
def test_record_step(benchmark, backend, dtype):
    """1000 record_step calls on one open trajectory per round (loop overhead included)."""
    benchmark.group = "record_step (per 1000 calls)"
    buf = TrajectoryBuffer(16, D, max_steps=1000, dtype=dtype)
    store = TrajectoryStore(buf, max_open=16)
    x = _embedding()
    start, step, cancel = store.start, store.record_step, store.cancel
    calls = range(1000)

    def steps_1000():
        tid = start(x)
        for _ in calls:
            step(tid, 7, 0.5, 120.0)
        cancel(tid)

    benchmark.pedantic(steps_1000, rounds=300, iterations=1, warmup_rounds=10)
    _per_call(benchmark, 1000, f"record_step [{dtype}, {backend}]")


@pytest.mark.parametrize("dtype", DTYPES)
def test_start_3_steps_end(benchmark, backend, dtype):
    """A whole trajectory: start(x), 3 record_step, end(q) (pushes into the ring)."""
    benchmark.group = "start + 3 record_step + end"
    rounds, iterations = 100, 1000
    buf = TrajectoryBuffer(rounds * iterations + 4096, D, max_steps=3, dtype=dtype)
    store = TrajectoryStore(buf, max_open=1024)
    x = _embedding()
    start, step, end = store.start, store.record_step, store.end

    def trajectory():
        tid = start(x)
        step(tid, 1, 0.9, 120.0)
        step(tid, 2, 0.5, 80.0)
        step(tid, 3, 0.1, 40.0, 1.0)
        end(tid, 0.75)

    benchmark.pedantic(trajectory, rounds=rounds, iterations=iterations, warmup_rounds=1)
    assert buf.dropped_count == 0  # every end() really pushed a record
    _per_call(benchmark, 1, f"start+3 steps+end [{dtype}, {backend}]")


@pytest.mark.parametrize("dtype", DTYPES)
def test_drain_1000(benchmark, backend, dtype):
    """drain(1000) of complete records (3 steps) into fresh numpy arrays."""
    benchmark.group = "drain 1000"
    buf = TrajectoryBuffer(4096, D, max_steps=3, dtype=dtype)
    store = TrajectoryStore(buf, max_open=1024)
    x = _embedding()

    def fill():
        for _ in range(1000):
            tid = store.start(x)
            for k in range(3):
                store.record_step(tid, k, 0.5, 100.0)
            store.end(tid, 0.5)
        return (), {}

    def drain():
        assert len(buf.drain(1000)) == 1000

    benchmark.pedantic(drain, setup=fill, rounds=200, warmup_rounds=5)
    _per_call(benchmark, 1, f"drain 1000 [{dtype}, {backend}]")
    SUMMARY[f"drain 1000 [{dtype}, {backend}]"] = (
        f"{benchmark.stats.stats.median * 1e6:8.1f} us")


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("dtype", DTYPES)
def test_record_and_memory_per_trajectory(benchmark, dtype):
    """Push of a complete record (3 steps) with TrajectoryBuffer.record; also the memory each
    stored trajectory takes: the slot size, and RSS growth per record over a full buffer."""
    benchmark.group = "record (complete, 3 steps) + bytes per trajectory"
    n = 50_000
    measured = None
    if os.path.exists("/proc/self/statm"):
        before = _rss()
        big = TrajectoryBuffer(n, D, max_steps=3, dtype=dtype)
        store = TrajectoryStore(big, max_open=16)
        x = _embedding()
        for _ in range(n):
            tid = store.start(x)
            for k in range(3):
                store.record_step(tid, k, 0.5, 100.0)
            store.end(tid, 0.5)
        assert len(big) == n
        measured = (_rss() - before) / n
        del store, big
    buf = TrajectoryBuffer(1 << 16, D, max_steps=3, dtype=dtype)
    x = _embedding()
    steps = [(1, 0.9, 120.0), (2, 0.5, 80.0), (3, 0.1, 40.0, 1.0)]

    def record():
        if not buf.record(x, steps, quality=0.75):
            buf.drain()

    benchmark(record)
    benchmark.extra_info["bytes_per_record"] = buf.bytes_per_record
    benchmark.extra_info["rss_bytes_per_record"] = measured
    SUMMARY[f"bytes per trajectory [{dtype}] (slot / RSS)"] = (
        f"{buf.bytes_per_record} B / {measured:.0f} B" if measured else
        f"{buf.bytes_per_record} B")
    _per_call(benchmark, 1, f"record() complete [{dtype}]")
    if dtype == "float16":
        assert buf.bytes_per_record <= 800
