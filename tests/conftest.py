"""Shared fixtures: every kernel-level test runs once per backend available on this machine."""

import numpy as np
import pytest

import sona


@pytest.fixture(params=sona.backends())
def backend(request):
    """Runs the test on one backend, restoring the previously active backend afterwards."""
    previous = sona.get_backend()
    sona.set_backend(request.param)
    yield request.param
    sona.set_backend(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
