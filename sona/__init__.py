"""sona: runtime learning for LLM routers, in microseconds, without retraining or forgetting.

The kernels run on the best backend this CPU supports ("avx2" or "scalar"); the environment
variable SONA_BACKEND=auto|scalar|avx2 is read once at import, and set_backend() switches later.
"""

import logging as _logging
import os as _os

try:
    from ._core import (
        Decision,
        Pattern,
        TrajectoryBuffer,
        TrajectoryStore,
        UnknownTrajectoryError,
        backends,
        build_info,
        cpu_features,
        get_backend,
        set_backend,
        spherical_kmeans,
    )
except ModuleNotFoundError as _exc:
    # Usually a source checkout on sys.path (the current directory) shadowing the installed
    # package: say so, instead of a bare "No module named 'sona._core'".
    if _exc.name != "sona._core":
        raise
    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"sona._core is not built: the sona package imported from {_here} has no compiled "
        "extension, as in a source tree. Build it there with `python setup.py build_ext "
        "--inplace`, or import sona from outside the source tree to use the installed package.",
        name=_exc.name,
        path=_here,
    ) from _exc

from . import kernels
from .budget import BudgetPacer
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
    "build_info",
    "cpu_features",
    "get_backend",
    "set_backend",
    "MicroLoRA",
    "BaseLoRA",
    "BudgetPacer",
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
_logging.getLogger(__name__).debug(
    "kernel backend %s (usable here: %s; SONA_BACKEND=%r)",
    get_backend(), ", ".join(backends()), _os.environ.get("SONA_BACKEND"),
)
