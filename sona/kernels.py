"""Similarity kernels over row matrices, dispatched to the active backend (AVX2 or scalar).

Inputs are float32 C-contiguous arrays (other real dtypes are copied to float32; NaN/Inf,
non-contiguous arrays and wrong shapes raise). Outputs are float32 and accept out=.
"""

from ._core import cosine_scores, cosine_topk, dot_scores, row_norms, sqdist_scores, topk

__all__ = ["cosine_scores", "cosine_topk", "dot_scores", "row_norms", "sqdist_scores", "topk"]
