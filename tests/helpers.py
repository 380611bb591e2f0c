"""Shared test data and helpers (tests/ is on sys.path via pytest's `pythonpath`)."""

import numpy as np

# Sizes that cover empty input, scalar tails, exact multiples of the 8-lane width and a large case.
SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000]



def unaligned(a):
    """A copy of `a` whose data starts 4 bytes past a 32-byte boundary (a[1:] of a fresh buffer)."""
    a = np.asarray(a, dtype=np.float32)
    flat = np.empty(a.size + 1, np.float32)
    flat[1:] = a.ravel()
    view = flat[1:].reshape(a.shape)
    assert view.size == 0 or view.ctypes.data % 8 == 4
    return view


def subprocess_env(**extra):
    """Environment for a child Python that must import the same sona as this process, whatever
    its working directory: the package's parent directory goes first on PYTHONPATH. Run such a
    child with cwd=OUTSIDE, never the repository root, whose source tree (without a built
    extension) would shadow the installed package."""
    import os

    import sona

    root = os.path.dirname(os.path.dirname(os.path.abspath(sona.__file__)))
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


OUTSIDE = __import__("tempfile").gettempdir()


def learned_bytes(router):
    """The router's state bytes without its learnt decision ids: what two routers that learnt
    alike share even when each made its own decisions (a router's decision ids carry a random
    nonce of its own)."""
    from sona.state import decode_state, encode_state

    arrays, meta = decode_state(router.to_bytes(), kind="router")
    del meta["learnt"]
    return encode_state(arrays, meta, "router")
