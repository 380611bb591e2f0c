"""LearningSignal construction and validation."""

import numpy as np
import pytest

from sona import LearningSignal


def test_from_feedback_keeps_fields():
    s = LearningSignal.from_feedback(True, latency_ms=12.5, quality=0.8, trajectory_id=3)
    assert (s.success, s.latency_ms, s.quality, s.trajectory_id) == (True, 12.5, 0.8, 3)


def test_quality_defaults_from_success():
    assert LearningSignal.from_feedback(True).quality == 1.0
    assert LearningSignal.from_feedback(False).quality == 0.0
    with pytest.raises(ValueError, match="quality or a success"):
        LearningSignal.from_feedback(None)


def test_positive_and_negative():
    assert LearningSignal.positive(5.0).success is True
    assert LearningSignal.positive(5.0).quality == 1.0
    n = LearningSignal.negative(5.0, quality=0.2, trajectory_id=9)
    assert (n.success, n.quality, n.trajectory_id) == (False, 0.2, 9)


def test_embedding_is_a_private_read_only_copy():
    e = np.ones(4)
    s = LearningSignal(0.5, query_embedding=e)
    e[0] = 7.0
    assert s.query_embedding.dtype == np.float32 and s.query_embedding[0] == 1.0
    with pytest.raises(ValueError):
        s.query_embedding[0] = 2.0


class _Traj:
    id = 4
    quality = 0.75
    embedding = np.zeros(3, np.float32)

    class _Step:
        latency_us = 1500.0

    steps = [_Step(), _Step()]


def test_from_trajectory():
    s = LearningSignal.from_trajectory(_Traj())
    assert (s.trajectory_id, s.quality, s.latency_ms) == (4, 0.75, 3.0)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(quality=1.5), ValueError, r"\[0, 1\]"),
        (dict(quality=-0.1), ValueError, r"\[0, 1\]"),
        (dict(quality=float("nan")), ValueError, r"\[0, 1\]"),
        (dict(quality="high"), TypeError, "number"),
        (dict(quality=True), TypeError, "number"),
        (dict(quality=0.5, latency_ms=-1.0), ValueError, "latency_ms"),
        (dict(quality=0.5, latency_ms=float("inf")), ValueError, "latency_ms"),
        (dict(quality=0.5, trajectory_id=-2), ValueError, "trajectory_id"),
        (dict(quality=0.5, success="yes"), TypeError, "success"),
        (dict(quality=0.5, query_embedding=np.array(["a"])), TypeError, "query_embedding"),
        (dict(quality=0.5, query_embedding=np.ones((2, 2))), TypeError, "query_embedding"),
        (dict(quality=0.5, metadata=[1]), TypeError, "metadata"),
    ],
)
def test_invalid_signals(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        LearningSignal(**kwargs)
