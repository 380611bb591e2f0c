"""pytest-benchmark: MicroLoRA forward/gradient per backend, with numpy doing the same math.

Run: pytest bench/bench_lora.py --benchmark-group-by=group,param:d
"""

import numpy as np
import pytest

import sona

DIMS = [256, 384, 768, 1024, 4096]


def _setup(d):
    rng = np.random.default_rng(0)
    lora = sona.MicroLoRA(d, 2, seed=0)
    lora.set_weights(lora.A, rng.standard_normal((d, 2)).astype(np.float32) * 0.01)
    x = rng.standard_normal(d).astype(np.float32)
    g = rng.standard_normal(d).astype(np.float32)
    return lora, x, g


@pytest.mark.parametrize("d", DIMS)
def test_forward_out(benchmark, backend, d):
    benchmark.group = "forward(x, out=y)"
    lora, x, _ = _setup(d)
    y = np.empty_like(x)
    benchmark(lora.forward, x, y)


@pytest.mark.parametrize("d", DIMS)
def test_forward_alloc(benchmark, backend, d):
    benchmark.group = "forward(x)"
    lora, x, _ = _setup(d)
    benchmark(lora.forward, x)


@pytest.mark.parametrize("d", DIMS)
def test_forward_numpy(benchmark, d):
    benchmark.group = "forward(x)"
    lora, x, _ = _setup(d)
    A, B, s = lora.A.copy(), lora.B.copy(), np.float32(lora.scale)
    benchmark(lambda: x + s * (B @ (A @ x)))


@pytest.mark.parametrize("d", DIMS)
def test_gradient(benchmark, backend, d):
    benchmark.group = "accumulate_gradient"
    lora, x, g = _setup(d)
    benchmark(lora.accumulate_gradient, x, g)


@pytest.mark.parametrize("d", DIMS)
def test_gradient_numpy(benchmark, d):
    benchmark.group = "accumulate_gradient"
    lora, x, g = _setup(d)
    A, B, s = lora.A.copy(), lora.B.copy(), np.float32(lora.scale)
    gA, gB = np.zeros_like(A), np.zeros_like(B)

    def step():
        gB.__iadd__(s * np.outer(g, A @ x))
        gA.__iadd__(s * np.outer(B.T @ g, x))

    benchmark(step)


def test_cosine_top5(benchmark, backend):
    benchmark.group = "cosine top-5 over 100x256"
    rng = np.random.default_rng(1)
    M = rng.standard_normal((100, 256)).astype(np.float32)
    x = rng.standard_normal(256).astype(np.float32)
    benchmark(sona.kernels.cosine_topk, M, x, 5)


def test_cosine_top5_numpy(benchmark):
    benchmark.group = "cosine top-5 over 100x256"
    rng = np.random.default_rng(1)
    M = rng.standard_normal((100, 256)).astype(np.float32)
    x = rng.standard_normal(256).astype(np.float32)
    norms = np.linalg.norm(M, axis=1)

    def top5():
        c = (M @ x) / (norms * np.linalg.norm(x))
        i = np.argpartition(-c, 5)[:5]
        return i[np.argsort(-c[i])]

    benchmark(top5)
