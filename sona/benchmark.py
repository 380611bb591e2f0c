"""`sona bench`: the performance table of SPEC.md's targets, numpy measured alongside.

Each time is the median over repeats of (time of N back-to-back calls) / N, measured with
time.perf_counter_ns around a tight loop, so it includes the Python call and loop overhead a user
pays. No empty-loop time is subtracted: the numbers are conservative. numpy does the same math in
the same process as the standing baseline, so ratios hold across machines better than times do.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from typing import Callable

import numpy as np

from . import kernels
from ._core import get_backend
from .engine import SonaEngine
from .lora import MicroLoRA
from .router import Router
from .signal import LearningSignal
from .synthetic import RoutingTask, evaluate

__all__ = ["time_call", "run", "format_table"]


def time_call(fn: Callable[..., object], *args, number: int, repeat: int) -> float:
    """Median nanoseconds per call of fn(*args) over `repeat` runs of `number` calls each.

    The calls are made from a loop compiled for this argument count, with fn and the arguments in
    local variables: what a user's own tight loop pays, with no lambda or *args in between.
    """
    names = ", ".join(f"a{i}" for i in range(len(args)))
    src = (f"def _loop(fn, loop{', ' if args else ''}{names}):\n"
           f"    for _ in loop:\n"
           f"        fn({names})\n")
    scope: dict = {}
    exec(compile(src, "<sona.benchmark>", "exec"), scope)
    loop_fn = scope["_loop"]
    fn(*args)  # warm up caches and any lazy initialisation
    per_call = []
    for _ in range(repeat):
        loop = itertools.repeat(None, number)
        t0 = time.perf_counter_ns()
        loop_fn(fn, loop, *args)
        per_call.append((time.perf_counter_ns() - t0) / number)
    return statistics.median(per_call)


def _row(op: str, d: int | None, value: float, target: float | None, numpy_value=None,
         unit: str = "ns") -> dict:
    return {
        "op": op,
        "dim": d,
        "unit": unit,
        "median": round(float(value), 1),
        "target": target,
        "numpy": None if numpy_value is None else round(float(numpy_value), 1),
        "speedup_vs_numpy": None if numpy_value is None else round(numpy_value / value, 1),
        "meets_target": None if target is None else bool(value <= target),
    }


def _lora_rows(d: int, number: int, repeat: int, targets: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    engine = SonaEngine(hidden_dim=d)
    lora = engine.micro
    lora.set_weights(lora.A, rng.standard_normal((d, 2)).astype(np.float32) * 0.01)
    x = rng.standard_normal(d).astype(np.float32)
    g = rng.standard_normal(d).astype(np.float32)
    y = np.empty_like(x)
    A, B, s = lora.A.copy(), lora.B.copy(), np.float32(lora.scale)
    gA, gB = np.zeros_like(A), np.zeros_like(B)
    fwd, apply = lora.forward, engine.apply_micro_lora
    standalone = MicroLoRA(d, 2, seed=0)
    sacc = standalone.accumulate_gradient

    def numpy_forward():
        return x + s * (B @ (A @ x))

    def numpy_gradient():
        gB.__iadd__(s * np.outer(g, A @ x))
        gA.__iadd__(s * np.outer(B.T @ g, x))

    def tgt(v):
        return v if targets else None

    np_fwd = time_call(numpy_forward, number=max(100, number // 8), repeat=repeat)
    np_grad = time_call(numpy_gradient, number=max(100, number // 8), repeat=repeat)
    rows = [
        _row("engine.apply_micro_lora(x, out=y)", d,
             time_call(apply, x, y, number=number, repeat=repeat), tgt(100), np_fwd),
        _row("engine.apply_micro_lora(x) allocating", d,
             time_call(apply, x, number=number, repeat=repeat), tgt(200), np_fwd),
        _row("MicroLoRA.forward(x, out=y)", d,
             time_call(fwd, x, y, number=number, repeat=repeat), tgt(100), np_fwd),
    ]
    rows.append(_row("MicroLoRA.accumulate_gradient", d,
                     time_call(sacc, x, g, number=number, repeat=repeat), tgt(200),
                     np_grad))
    return rows


def _patterns_rows(number: int, repeat: int) -> list[dict]:
    rng = np.random.default_rng(1)
    M = rng.standard_normal((100, 256)).astype(np.float32)
    x = rng.standard_normal(256).astype(np.float32)
    norms = np.linalg.norm(M, axis=1)
    engine = SonaEngine(hidden_dim=256, max_patterns=128, pattern_clusters=64)
    for row in M:  # 100 unrelated queries: 100 patterns
        engine.learn_from_feedback(LearningSignal(0.5, query_embedding=row))
    assert engine.bank.n_patterns == 100
    query = engine.query_patterns

    def numpy_topk():
        c = (M @ x) / (norms * np.linalg.norm(x))
        i = np.argpartition(-c, 5)[:5]
        return i[np.argsort(-c[i])]

    np_ns = time_call(numpy_topk, number=number // 4, repeat=repeat)
    return [
        _row("query_patterns k=5 over 100 patterns", 256,
             time_call(query, x, 5, number=number, repeat=repeat), 2000, np_ns),
        _row("kernels.cosine_topk 5 of 100x256 (validates M)", 256,
             time_call(kernels.cosine_topk, M, x, 5, number=number, repeat=repeat),
             None, np_ns),
    ]


def _trajectory_rows(number: int, repeat: int) -> list[dict]:
    rng = np.random.default_rng(2)
    engine = SonaEngine(hidden_dim=256, trajectory_capacity=1024)
    x = rng.standard_normal(256).astype(np.float32)
    start, step, end = engine.start_trajectory, engine.record_step, engine.end_trajectory

    def one():
        t = start(x)
        step(t, 1, 0.5, 100.0)
        step(t, 2, 0.6, 120.0)
        step(t, 3, 0.7, 90.0)
        end(t, 0.8)

    steps_ns = []  # each timed step goes to a fresh trajectory (a trajectory holds max_steps)
    for _ in range(repeat):
        ids = [start(x) for _ in range(number // 8)]
        t0 = time.perf_counter_ns()
        for t in ids:
            step(t, 1, 0.5, 10.0)
        steps_ns.append((time.perf_counter_ns() - t0) / len(ids))
        for t in ids:
            engine.store.cancel(t)
    rows = [
        _row("record_step", 256, statistics.median(steps_ns), 150),
        _row("start + 3 record_step + end (learns)", 256,
             time_call(one, number=number // 4, repeat=repeat), 1000),
    ]
    f16 = SonaEngine(hidden_dim=256, embedding_dtype="float16").store.buffer
    f32 = engine.store.buffer
    per3_f16 = f16.bytes_per_record - 16 * (f16.max_steps - 3)
    per3_f32 = f32.bytes_per_record - 16 * (f32.max_steps - 3)
    rows += [
        _row("bytes per stored trajectory, float16, 3 steps", 256, _round64(per3_f16), 800,
             unit="B"),
        _row("bytes per stored trajectory, float32, 3 steps", 256, _round64(per3_f32), None,
             unit="B"),
    ]
    return rows


def _round64(n: int) -> int:
    return (n + 63) // 64 * 64


def _router(quick: bool) -> tuple[Router, np.ndarray]:
    task = RoutingTask(seed=0)
    router = Router([f"model-{k}" for k in range(4)], hidden_dim=256, seed=0)
    evaluate(router, task, 300 if quick else 1000, seed=1)
    X, _ = task.sample(1000, np.random.default_rng(3))
    return router, X


def _router_rows(number: int, repeat: int, quick: bool) -> list[dict]:
    router, X = _router(quick)
    route, feedback = router.route, router.feedback
    it = itertools.cycle(X)

    def step():
        feedback(route(next(it)), 0.7)

    rows = [_row("Router.route + Router.feedback, 4 routes", 256,
                 time_call(step, number=number // 4, repeat=repeat), 3000)]
    engine = router.engine
    engine.run_background_cycle()  # start from an empty ring: each timed cycle drains 1000
    cycles = []
    for _ in range(repeat):
        for _ in range(1000):
            step()
        t0 = time.perf_counter_ns()
        res = engine.run_background_cycle()
        cycles.append((time.perf_counter_ns() - t0) / 1e6)
        assert res.trajectories == 1000
    rows.append(_row("background cycle over 1000 trajectories", 256, statistics.median(cycles),
                     3.0, unit="ms"))
    rows.append(_p99_row(router, X, 2000 if quick else 20000))
    return rows


def _latencies(router: Router, X: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(n)
    route, feedback = router.route, router.feedback
    for i in range(n):
        t0 = time.perf_counter_ns()
        d = route(X[i % len(X)])
        out[i] = time.perf_counter_ns() - t0
        feedback(d, 0.7)
    return out


def _p99_row(router: Router, X: np.ndarray, n: int) -> dict:
    idle = np.percentile(_latencies(router, X, n), 99)
    stop = threading.Event()

    def background():
        while not stop.is_set():
            router.engine.run_background_cycle()

    thread = threading.Thread(target=background, daemon=True)
    thread.start()
    try:
        busy = np.percentile(_latencies(router, X, n), 99)
    finally:
        stop.set()
        thread.join()
    return _row("route p99 during background cycles / idle p99", 256, busy / idle, 2.0,
                unit="x")


def run(quick: bool = False) -> dict:
    """Measure every operation; returns {"backend": ..., "rows": [...]} (JSON-serialisable)."""
    number, repeat = (2000, 3) if quick else (20000, 7)
    dims = (256,) if quick else (256, 384, 768, 1024, 4096)
    rows = []
    for d in dims:
        scale = max(1, d // 256)
        rows += _lora_rows(d, max(200, number // scale), repeat, targets=(d == 256))
    rows += _patterns_rows(number // 4, repeat)
    rows += _trajectory_rows(number, repeat)
    rows += _router_rows(number, repeat, quick)
    return {"backend": get_backend(), "rows": rows}


def format_table(result: dict) -> str:
    """A plain-text table of run()'s result."""
    head = (f"{'operation':48} {'d':>5} {'median':>10} {'target':>9} {'numpy':>10} "
            f"{'x numpy':>8}  ok")
    lines = [f"backend: {result['backend']}", head, "-" * len(head)]
    for r in result["rows"]:
        unit = r["unit"]
        digits = 0 if unit in ("ns", "B") else 2

        def fmt(v, unit=unit, digits=digits):
            return f"{v:.{digits}f} {unit}"

        target = "" if r["target"] is None else fmt(r["target"])
        numpy_v = "" if r["numpy"] is None else fmt(r["numpy"])
        ratio = "" if r["speedup_vs_numpy"] is None else f"{r['speedup_vs_numpy']:.1f}x"
        ok = {None: "", True: "yes", False: "NO"}[r["meets_target"]]
        lines.append(f"{r['op']:48} {r['dim'] or '':>5} {fmt(r['median']):>10} {target:>9} "
                     f"{numpy_v:>10} {ratio:>8}  {ok}")
    return "\n".join(lines)
