"""Fuzz the Python/C boundary with atheris for a bounded time.

    python scripts/fuzz_boundary.py -max_total_time=60      # needs `pip install atheris`

Every input is turned into arrays of a fuzzed dtype, shape and content (NaN, Inf, huge, tiny,
non-contiguous) and fed to the compiled entry points: LoRA forward/gradient/step, the kernels, the
router, the engine's trajectory API, the state-file decoder (also through Router.from_bytes) and
outcome records (built from fuzzed arrays, then decoded with a fuzzed byte changed). A documented
exception (TypeError, ValueError, KeyError, RuntimeError, StateFileError, OutcomeError) is fine;
anything else, a crash, or a NaN in a weight is a finding (libFuzzer stops and prints the input).
"""

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    import sona
    from sona import kernels
    from sona.state import StateFileError, decode_state

D = 8
EXPECTED = (TypeError, ValueError, KeyError, RuntimeError, StateFileError, OverflowError)
DTYPES = [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex64, object]
SPECIAL = [0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e30, -3e38, 1e-40, 65504.0, 1e6]

LORA = sona.MicroLoRA(D, 2, seed=0)
BASE = sona.BaseLoRA(D, 4, seed=1)
ROUTER = sona.Router(["a", "b", "c"], hidden_dim=D, seed=0)
ENGINE = sona.SonaEngine(hidden_dim=D, max_open_trajectories=64, trajectory_capacity=64)
PENDING: list = []
OPEN: list = []


def _array(fdp: atheris.FuzzedDataProvider):
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    ndim = fdp.ConsumeIntInRange(0, 3)
    shape = tuple(fdp.ConsumeIntInRange(0, 2 * D) if fdp.ConsumeBool() else D
                  for _ in range(ndim))
    n = int(np.prod(shape)) if shape else 1
    vals = [SPECIAL[fdp.ConsumeIntInRange(0, len(SPECIAL) - 1)] if fdp.ConsumeBool()
            else fdp.ConsumeRegularFloat() for _ in range(min(n, 64))]
    vals += [0.5] * (n - len(vals))
    with np.errstate(all="ignore"):
        a = np.array(vals[:n], dtype=np.float64).reshape(shape).astype(dtype)
    if fdp.ConsumeBool() and a.ndim >= 1 and a.shape[-1] > 1:
        a = a[..., ::2]  # non-contiguous
    return a


def _quality(fdp):
    return SPECIAL[fdp.ConsumeIntInRange(0, len(SPECIAL) - 1)] if fdp.ConsumeBool() \
        else fdp.ConsumeProbability()


def _call(fdp):
    op = fdp.ConsumeIntInRange(0, 15)
    a, b = _array(fdp), _array(fdp)
    if op == 0:
        LORA.forward(a)
    elif op == 1:
        LORA.forward(a, out=b)
    elif op == 2:
        LORA.accumulate_gradient(a, b, weight=fdp.ConsumeRegularFloat())
    elif op == 3:
        LORA.apply_accumulated(abs(fdp.ConsumeRegularFloat()))
    elif op == 4:
        BASE.forward(a)
    elif op == 5:
        kernels.cosine_topk(a, b, fdp.ConsumeIntInRange(-1, 10))
    elif op == 6:
        kernels.sqdist_scores(a, b)
    elif op == 7:
        PENDING.append(ROUTER.route(a))
    elif op == 8 and PENDING:
        ROUTER.feedback(PENDING.pop(fdp.ConsumeIntInRange(0, len(PENDING) - 1)), _quality(fdp))
    elif op == 9:
        ROUTER.scores(a)
    elif op == 10:
        OPEN.append(ENGINE.start_trajectory(a))
    elif op == 11 and OPEN:
        ENGINE.record_step(OPEN[-1], fdp.ConsumeIntInRange(-1, 5), fdp.ConsumeRegularFloat(),
                           fdp.ConsumeRegularFloat(), activations=a if fdp.ConsumeBool() else None)
    elif op == 12 and OPEN:
        ENGINE.end_trajectory(OPEN.pop(), _quality(fdp))
    elif op == 13:
        decode_state(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)))
    elif op == 14:
        sona.Router.from_bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)))
    elif op == 15:
        record = bytearray(sona.Outcome(a, "a", _quality(fdp), _quality(fdp)).to_bytes())
        record[fdp.ConsumeIntInRange(0, len(record) - 1)] = fdp.ConsumeIntInRange(0, 255)
        sona.Outcome.from_bytes(bytes(record))


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        try:
            _call(fdp)
        except EXPECTED:
            pass
    for w in (LORA.A, LORA.B, BASE.A, BASE.B, ROUTER.keys, ROUTER.bias, ENGINE.micro.A,
              ENGINE.micro.B):
        if not np.isfinite(w).all():
            raise AssertionError("a weight became NaN/Inf")
    del PENDING[:-32], OPEN[:-32]


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
