"""Shared by the benchmark suites: each benchmark that takes `backend` runs once per kernel
backend available here, restoring the previously active backend afterwards."""

import pytest

import sona


@pytest.fixture(params=sona.backends())
def backend(request):
    previous = sona.get_backend()
    sona.set_backend(request.param)
    yield request.param
    sona.set_backend(previous)
