"""Similarity and optimiser kernels, dispatched to the active backend (AVX2 or scalar).

Inputs are float32 C-contiguous arrays (other real dtypes are copied to float32; NaN/Inf,
non-contiguous arrays and wrong shapes raise). Outputs are float32 and accept out=.
"""

from ._core import (
    adam_step,
    cosine_scores,
    cosine_topk,
    dot_scores,
    fisher_update,
    row_norms,
    sqdist_scores,
    topk,
)

__all__ = [
    "adam_step",
    "cosine_scores",
    "cosine_topk",
    "dot_scores",
    "fisher_update",
    "row_norms",
    "sqdist_scores",
    "topk",
]
