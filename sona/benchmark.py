"""`sona bench`: per-call timings of the hot operations against the targets in SPEC.md, with
numpy doing the same math in the same process as the standing baseline.

Each figure is the median over repeats of (time of N back-to-back calls) / N, measured with
time.perf_counter_ns around a tight loop, so it includes the Python call and loop overhead a user
pays. No subtraction of an empty-loop baseline is made: the numbers are conservative.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Callable

import numpy as np

from . import kernels
from ._core import get_backend
from .lora import MicroLoRA

__all__ = ["time_call", "run", "format_table"]


def time_call(fn: Callable[[], object], *, number: int, repeat: int) -> float:
    """Median nanoseconds per call of fn() over `repeat` runs of `number` calls each."""
    fn()  # warm up caches and any lazy initialisation
    per_call = []
    for _ in range(repeat):
        loop = itertools.repeat(None, number)
        t0 = time.perf_counter_ns()
        for _ in loop:
            fn()
        per_call.append((time.perf_counter_ns() - t0) / number)
    return statistics.median(per_call)


def _row(op: str, d: int, ns: float, target: float | None, numpy_ns: float | None) -> dict:
    return {
        "op": op,
        "dim": d,
        "median_ns": round(ns, 1),
        "target_ns": target,
        "numpy_ns": None if numpy_ns is None else round(numpy_ns, 1),
        "speedup_vs_numpy": None if numpy_ns is None else round(numpy_ns / ns, 1),
        "meets_target": None if target is None else bool(ns <= target),
    }


def _lora_rows(d: int, number: int, repeat: int, with_targets: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    lora = MicroLoRA(d, 2, seed=0)
    lora.set_weights(lora.A, rng.standard_normal((d, 2)).astype(np.float32) * 0.01)
    x = rng.standard_normal(d).astype(np.float32)
    g = rng.standard_normal(d).astype(np.float32)
    y = np.empty_like(x)
    A, B, s = lora.A.copy(), lora.B.copy(), np.float32(lora.scale)
    fwd, acc = lora.forward, lora.accumulate_gradient
    gA, gB = np.zeros_like(A), np.zeros_like(B)

    def numpy_forward():
        return x + s * (B @ (A @ x))

    def numpy_gradient():
        gB.__iadd__(s * np.outer(g, A @ x))
        gA.__iadd__(s * np.outer(B.T @ g, x))

    def sona_gradient():
        acc(x, g)

    def t(target):
        return target if with_targets else None

    np_fwd = time_call(numpy_forward, number=number // 4, repeat=repeat)
    rows = [
        _row("MicroLoRA.forward(x, out=y)", d, time_call(lambda: fwd(x, y), number=number,
                                                          repeat=repeat), t(100), np_fwd),
        _row("MicroLoRA.forward(x) allocating", d, time_call(lambda: fwd(x), number=number,
                                                              repeat=repeat), t(200), np_fwd),
    ]
    ns = time_call(sona_gradient, number=number, repeat=repeat)
    lora.zero_grad()
    rows.append(_row("MicroLoRA.accumulate_gradient", d, ns, t(200),
                     time_call(numpy_gradient, number=number // 4, repeat=repeat)))
    return rows


def _topk_row(number: int, repeat: int) -> dict:
    rng = np.random.default_rng(1)
    M = rng.standard_normal((100, 256)).astype(np.float32)
    x = rng.standard_normal(256).astype(np.float32)
    norms = np.linalg.norm(M, axis=1)
    topk = kernels.cosine_topk

    def numpy_topk():
        c = (M @ x) / (norms * np.linalg.norm(x))
        i = np.argpartition(-c, 5)[:5]
        return i[np.argsort(-c[i])]

    return _row("cosine top-5 over 100x256", 256,
                time_call(lambda: topk(M, x, 5), number=number, repeat=repeat), 2000,
                time_call(numpy_topk, number=number // 4, repeat=repeat))


def run(quick: bool = False) -> dict:
    """Measure every operation; returns {"backend": ..., "rows": [...]} (JSON-serialisable)."""
    number, repeat = (2000, 5) if quick else (20000, 9)
    dims = (256,) if quick else (256, 384, 768, 1024, 4096)
    rows = []
    for d in dims:
        scale = max(1, d // 256)
        rows += _lora_rows(d, max(200, number // scale), repeat, with_targets=(d == 256))
    rows.append(_topk_row(number // 4, repeat))
    return {"backend": get_backend(), "rows": rows}


def format_table(result: dict) -> str:
    """A plain-text table of run()'s result."""
    head = (f"{'operation':34} {'d':>5} {'median':>10} {'target':>8} {'numpy':>10} "
            f"{'x numpy':>8}  ok")
    lines = [f"backend: {result['backend']}", head, "-" * len(head)]
    for r in result["rows"]:
        target = "" if r["target_ns"] is None else f"{r['target_ns']:g} ns"
        numpy_ns = "" if r["numpy_ns"] is None else f"{r['numpy_ns']:.0f} ns"
        ratio = "" if r["speedup_vs_numpy"] is None else f"{r['speedup_vs_numpy']:.1f}x"
        ok = {None: "", True: "yes", False: "NO"}[r["meets_target"]]
        lines.append(f"{r['op']:34} {r['dim']:>5} {r['median_ns']:>7.0f} ns {target:>8} "
                     f"{numpy_ns:>10} {ratio:>8}  {ok}")
    return "\n".join(lines)
