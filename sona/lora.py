"""Low-rank adapters: MicroLoRA (rank 1-2, the instant tier) and BaseLoRA (rank up to 64).

Both compute y = x + scale·B(A x) in the C kernels of sona._core. They start as the identity
(standard LoRA init: A has random orthonormal rows drawn from `seed`, B is zero), learn through
accumulate_gradient() / apply_accumulated(), and reset() returns them to that initial state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import LoRAAdapter

__all__ = ["MicroLoRA", "BaseLoRA", "orthonormal_rows"]


def orthonormal_rows(rank: int, dim: int, seed: int) -> np.ndarray:
    """A (rank, dim) float32 matrix with orthonormal rows, deterministic in `seed`."""
    gauss = np.random.default_rng(seed).standard_normal((dim, rank))
    q, r = np.linalg.qr(gauss)
    q = q * np.sign(np.diag(r))  # make the factorisation unique, hence platform-independent
    return np.ascontiguousarray(q.T, dtype=np.float32)


class _SeededLoRA(LoRAAdapter):
    MAX_RANK = 64

    def __init__(self, dim: int, rank: int, *, scale: float = 1.0, seed: int = 0,
                 max_step: float = 1.0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
        super().__init__(dim, rank, scale, max_step, self.MAX_RANK, type(self).__name__)
        self.seed = int(seed)
        self.reset()

    def reset(self) -> None:
        """Back to the initial weights for this seed (identity map) with no pending gradient."""
        self.set_weights(orthonormal_rows(self.rank, self.dim, self.seed),
                         np.zeros((self.dim, self.rank), np.float32))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dim={self.dim}, rank={self.rank}, scale={self.scale:g}, "
                f"seed={self.seed})")


class MicroLoRA(_SeededLoRA):
    """The instant-learning tier: rank 1 or 2, cheap enough to update on every feedback.

    >>> import numpy as np, sona
    >>> lora = sona.MicroLoRA(dim=8, rank=2, seed=0)
    >>> x = np.ones(8, np.float32)
    >>> bool(np.array_equal(lora.forward(x), x))   # a fresh adapter is the identity
    True
    """

    MAX_RANK = 2

    def __init__(self, dim: int, rank: int = 2, **kwargs: Any) -> None:
        super().__init__(dim, rank, **kwargs)


class BaseLoRA(_SeededLoRA):
    """The consolidated tier: rank 1..64, updated by background consolidation or directly."""

    MAX_RANK = 64

    def __init__(self, dim: int, rank: int = 8, **kwargs: Any) -> None:
        super().__init__(dim, rank, **kwargs)
