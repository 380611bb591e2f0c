"""LearningSignal: one piece of feedback about one query, the input of engine.learn_from_feedback().

The reward the engine learns from is `quality` in [0, 1]. A signal names the query it is about
either by `trajectory_id` (a trajectory started on the engine, open or ended but still stored) or
by carrying the `query_embedding` itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._core import _check_quality

__all__ = ["LearningSignal"]


@dataclass(frozen=True)
class LearningSignal:
    """Feedback on one query.

    Parameters
    ----------
    quality: reward in [0, 1] (1 = the answer was as good as it gets).
    success: whether the request succeeded, when known.
    latency_ms: observed latency in milliseconds (>= 0), when known; recorded, not rewarded.
    trajectory_id: the engine trajectory the feedback is about.
    query_embedding: the query itself, for feedback without a trajectory.
    metadata: free-form JSON-serialisable details kept with the signal.

    Raises ValueError/TypeError for a quality outside [0, 1], a negative or non-finite latency, a
    negative trajectory id, or a non-numeric embedding.

    >>> LearningSignal.from_feedback(True, latency_ms=120.0, quality=0.9, trajectory_id=7).quality
    0.9
    """

    quality: float
    success: bool | None = None
    latency_ms: float | None = None
    trajectory_id: int | None = None
    query_embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quality", _check_quality(self.quality))
        if self.success is not None and not isinstance(self.success, (bool, np.bool_)):
            raise TypeError(f"success must be a bool or None; got {type(self.success).__name__}")
        if self.latency_ms is not None:
            lat = float(self.latency_ms)
            if not (math.isfinite(lat) and lat >= 0.0):
                raise ValueError(f"latency_ms must be a finite number >= 0; got {self.latency_ms}")
            object.__setattr__(self, "latency_ms", lat)
        if self.trajectory_id is not None:
            tid = self.trajectory_id
            if isinstance(tid, bool) or not isinstance(tid, (int, np.integer)) or tid < 0:
                raise ValueError(f"trajectory_id must be an integer >= 0; got {tid!r}")
            object.__setattr__(self, "trajectory_id", int(tid))
        if self.query_embedding is not None:
            emb = np.asarray(self.query_embedding)
            if emb.dtype.kind not in "fiu" or emb.ndim != 1:
                raise TypeError(f"query_embedding must be a 1-D real array; got dtype {emb.dtype}, "
                                f"shape {emb.shape}")
            # a private copy: later edits by the caller must not leak into the signal
            emb = np.array(emb, dtype=np.float32)
            emb.flags.writeable = False
            object.__setattr__(self, "query_embedding", emb)
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata must be a dict; got {type(self.metadata).__name__}")

    @classmethod
    def from_feedback(cls, success: bool | None, latency_ms: float | None = None,
                      quality: float | None = None, *, trajectory_id: int | None = None,
                      query_embedding: Any = None, metadata: dict | None = None
                      ) -> LearningSignal:
        """Feedback as an application sees it; without `quality`, success is 1.0 and failure 0.0."""
        if quality is None:
            if success is None:
                raise ValueError("from_feedback needs a quality or a success flag")
            quality = 1.0 if success else 0.0
        return cls(quality, success, latency_ms, trajectory_id, query_embedding, metadata or {})

    @classmethod
    def positive(cls, latency_ms: float | None = None, quality: float = 1.0, **kwargs: Any
                 ) -> LearningSignal:
        """A successful outcome (quality defaults to 1.0)."""
        return cls.from_feedback(True, latency_ms, quality, **kwargs)

    @classmethod
    def negative(cls, latency_ms: float | None = None, quality: float = 0.0, **kwargs: Any
                 ) -> LearningSignal:
        """A failed outcome (quality defaults to 0.0)."""
        return cls.from_feedback(False, latency_ms, quality, **kwargs)

    @classmethod
    def from_trajectory(cls, trajectory: Any) -> LearningSignal:
        """The signal an ended trajectory carries: its id, embedding and final quality."""
        quality = getattr(trajectory, "quality", None)
        if quality is None:
            raise ValueError("trajectory has no quality yet: end it first")
        steps = getattr(trajectory, "steps", ())
        latency_us = sum(float(s.latency_us) for s in steps)
        return cls(quality, None, latency_us / 1000.0, trajectory.id, trajectory.embedding)
