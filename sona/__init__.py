"""sona: runtime learning for LLM routers, in microseconds, without retraining or forgetting.

The kernels run on the best backend this CPU supports ("avx2" or "scalar"); the environment
variable SONA_BACKEND=auto|scalar|avx2 is read once at import, and set_backend() switches later.
"""

import os as _os

from . import kernels
from ._core import (
    Decision,
    Pattern,
    TrajectoryBuffer,
    TrajectoryStore,
    UnknownTrajectoryError,
    backends,
    cpu_features,
    get_backend,
    set_backend,
    spherical_kmeans,
)
from .config import SonaConfig
from .engine import CycleResult, SonaEngine
from .lora import BaseLoRA, MicroLoRA
from .outcome import Outcome, OutcomeError
from .router import Router
from .signal import LearningSignal
from .state import StateFileError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "backends",
    "cpu_features",
    "get_backend",
    "set_backend",
    "MicroLoRA",
    "BaseLoRA",
    "CycleResult",
    "Decision",
    "Pattern",
    "SonaEngine",
    "TrajectoryBuffer",
    "TrajectoryStore",
    "UnknownTrajectoryError",
    "LearningSignal",
    "Outcome",
    "OutcomeError",
    "Router",
    "SonaConfig",
    "StateFileError",
    "kernels",
    "spherical_kmeans",
]

set_backend(_os.environ.get("SONA_BACKEND", "auto").strip().lower() or "auto")
