"""Fuzz the Python/C boundary with atheris for a bounded time.

    python scripts/fuzz_boundary.py -max_total_time=60      # needs `pip install atheris`

Every input is turned into arrays of a fuzzed dtype, shape and content (NaN, Inf, huge, tiny,
non-contiguous) and fed to the compiled entry points: LoRA forward/gradient/step, the kernels, the
router, the engine's trajectory API, the state-file decoder (also through Router.from_bytes),
outcome records (built from fuzzed arrays, then decoded with a fuzzed byte changed) and state-file
loading (a trained router's or engine's file with fuzzed values and a valid checksum). A
documented exception (TypeError, ValueError, KeyError, RuntimeError, StateFileError,
OutcomeError) is fine; anything else, a crash, or a NaN in a weight is a finding (libFuzzer stops
and prints the input).
"""

import atexit
import json
import os
import shutil
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import numpy as np

    import sona
    from sona import kernels
    from sona.state import StateFileError, decode_state, read_state, write_state

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
STATE_DIR = tempfile.mkdtemp(prefix="sona-fuzz-")
atexit.register(shutil.rmtree, STATE_DIR, True)


def _state(kind: str):
    """(arrays, meta) of a trained router's or engine's state file."""
    r = sona.Router(["a", "b", "c"], hidden_dim=D, seed=1)
    rng = np.random.default_rng(1)
    for _ in range(50):
        r.feedback(r.route(rng.standard_normal(D).astype(np.float32)), float(rng.random()))
    path = os.path.join(STATE_DIR, kind + ".sona")
    (r if kind == "router" else r.engine).save(path)
    return read_state(path)


STATES = {kind: _state(kind) for kind in ("router", "engine")}


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
    op = fdp.ConsumeIntInRange(0, 16)
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
    elif op == 16:
        _load_fuzzed_state(fdp)


def _load_fuzzed_state(fdp):
    """A state file whose checksum is valid but whose values are fuzzed: it loads only if the
    object it gives routes and learns with finite weights."""
    kind = "router" if fdp.ConsumeBool() else "engine"
    arrays, meta = STATES[kind]
    arrays = {k: v.copy() for k, v in arrays.items()}
    meta = json.loads(json.dumps(meta))
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        if fdp.ConsumeBool():
            names = sorted(arrays)
            a = arrays[names[fdp.ConsumeIntInRange(0, len(names) - 1)]].reshape(-1)
            if a.size:
                v = SPECIAL[fdp.ConsumeIntInRange(0, len(SPECIAL) - 1)] if fdp.ConsumeBool() \
                    else fdp.ConsumeRegularFloat()
                with np.errstate(all="ignore"):
                    a[fdp.ConsumeIntInRange(0, a.size - 1)] = np.asarray(v).astype(a.dtype)
        else:
            where = meta
            keys = sorted(where)
            key = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
            if isinstance(where[key], dict) and where[key] and fdp.ConsumeBool():
                where = where[key]
                keys = sorted(where)
                key = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
            choice = fdp.ConsumeIntInRange(0, 3)
            where[key] = (fdp.ConsumeInt(9) if choice == 0 else fdp.ConsumeRegularFloat()
                          if choice == 1 else fdp.ConsumeUnicode(4) if choice == 2 else None)
    path = os.path.join(STATE_DIR, "fuzzed.sona")
    try:
        write_state(path, arrays, meta, kind)
    except (TypeError, ValueError):
        return  # not writable as JSON (NaN/Inf): not a file anyone can produce
    obj = (sona.Router if kind == "router" else sona.SonaEngine).load(path)
    x = np.ones(D, np.float32)
    if kind == "router":
        obj.feedback(obj.route(x), 1.0)
        out = obj.scores(x)
    else:
        obj.end_trajectory(obj.start_trajectory(x), 1.0)
        out = obj.apply_lora(x)
    if not (np.isfinite(out).all() and np.isfinite(obj.micro.B).all()):
        raise AssertionError(f"a loaded {kind} state file gave NaN/Inf")


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
