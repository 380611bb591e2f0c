"""The one check of a real-number argument that Python-level APIs share.

``real(name, value, low, high)`` is how ``sona.Outcome``, ``sona.ope.evaluate`` and
``sona.BudgetPacer`` check a number a user passes: TypeError when it is not a real number (a
bool, a string or None included), ValueError when it is NaN, infinite or out of range, with a
message naming the argument and the range. Pure Python, imports nothing from sona.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["real"]


def real(name: str, value: Any, low: float, high: float = math.inf,
         low_open: bool = False) -> float:
    """float(value) when it is a finite real number in [low, high] ((low, high] with low_open).

    Raises TypeError for a value that is not a real number (bools are not), ValueError for one
    that is NaN, infinite or out of the range.
    """
    kind = type(value)  # float and int first: the ABC check below costs ~1 us a call
    if kind is not float and kind is not int and (
            isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    above_low = v > low if low_open else v >= low
    if not (math.isfinite(v) and above_low and v <= high):  # NaN fails every comparison
        bracket = "(" if low_open else "["
        hi = "inf)" if math.isinf(high) else f"{high:g}]"
        raise ValueError(f"{name} must be a finite number in {bracket}{low:g}, {hi}; "
                         f"got {value!r}")
    return v
