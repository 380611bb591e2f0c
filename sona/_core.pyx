# cython: language_level=3
"""sona._core: the compiled boundary between Python and the C kernels in csrc/.

Each concept lives in its own .pxi, included here so they share one module (one extension, one
kernel table). Arrays are validated once at this boundary (see _validate.pxi); the C side trusts
them.
"""
cimport numpy as cnp

from sona._csona cimport *

cnp.import_array()

# Bumped (with the GIL held) after every change to adapters, pattern banks or router arrays made
# outside a router's own learning step: a Decision's route-time context is reused for learning
# only when neither this nor its router's step count moved since (see RouterCore.feedback).
cdef unsigned long long _state_epoch = 0

include "_validate.pxi"
include "_dispatch.pxi"
include "_score.pxi"
include "_lora.pxi"
include "_optim.pxi"
include "_bank.pxi"
include "_kmeans.pxi"
include "_trajectory.pxi"
include "_policy.pxi"
include "_engine.pxi"
include "_snapshot.pxi"
